//! Nodes that join their cluster by themselves (issue 22): join tokens, the
//! `JoinCluster` action a token is good for, an agent leaving, and pruning
//! nodes whose agents went silent.
//!
//! A join token (`jtk-xxxxxxxx.SECRET`) is scoped to one cluster and one
//! role. It can do exactly one thing: register one new instance into its
//! cluster, bound to the cluster's groups for that role in the cluster's
//! order, and hand that instance its own agent key. The server keeps only
//! the SHA-256 of the secret (the secret is 32 random letters and digits,
//! 190 bits: a plain hash cannot be searched back). A token expires, can be
//! revoked, may be limited to a number of uses and to source CIDRs for the
//! node's addresses, and never signs a request: `JoinCluster` carries it in
//! the body of an unsigned request (served over TLS, it is as safe as the
//! TLS), and as a SecretId it is unknown, so no other action can be called
//! with it.
//!
//! The groups a role is bound to: the cluster's recorded
//! `NodeSecurityGroupIds` / `MasterSecurityGroupIds` when set, otherwise the
//! group `tke apply` made for the role (`tke-node-cls-...`,
//! `tke-master-cls-...`). A cluster with neither refuses to join nodes:
//! an instance with no group drops everything.

use super::palisade::Holders;
use super::{map_insert, new_id, now, reply, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{bounded_list, Params};
use palisade_model::{Cidr, ClusterId, ErrorCode, InstanceId};
use palisade_store::{InstanceKey, InstanceRecord, Store, StoreExt, Tx};
use serde_json::{json, Value};
use std::net::IpAddr;

/// A token's lifetime when `TtlSeconds` is absent: one day.
const DEFAULT_TTL_SECONDS: u64 = 24 * 3600;
/// The longest lifetime a token may have: one year.
const MAX_TTL_SECONDS: u64 = 366 * 24 * 3600;
/// Most `AllowedCidrs` of one token.
const MAX_ALLOWED_CIDRS: usize = 100;
/// Most addresses a joining node registers.
const MAX_JOIN_IPS: usize = 16;
/// The parameters of `JoinCluster`.
const JOIN_PARAMS: &[&str] = &[
    "JoinToken",
    "InstanceId",
    "InstanceName",
    "PrivateIpAddresses",
];
/// How long an agent may stay silent before it is stale, by default.
pub const DEFAULT_STALE_SECONDS: u64 = 300;

/// `CreateJoinToken`: `ClusterId`, optional `Role` (`node`, `master`),
/// `TtlSeconds`, `MaxUses`, `AllowedCidrs` -> `JoinTokenId`, `JoinToken`
/// (shown once), `ExpiresTime`.
pub fn create(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ClusterId", "Role", "TtlSeconds", "MaxUses", "AllowedCidrs"])?;
    let cluster = ClusterId::parse_field("ClusterId", &p.req_str("ClusterId")?)?.to_string();
    let role = role(p.opt_str("Role")?.as_deref().unwrap_or("node"))?;
    let ttl = p.opt_uint("TtlSeconds")?.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueRange,
            format!("TtlSeconds {ttl}: expected 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    let max_uses = p.opt_uint("MaxUses")?;
    if max_uses == Some(0) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueRange,
            "MaxUses 0: a token must be usable at least once",
        ));
    }
    let cidrs = p.opt_str_list("AllowedCidrs")?.unwrap_or_default();
    bounded_list("AllowedCidrs", &cidrs, MAX_ALLOWED_CIDRS)?;
    let cidrs = cidrs
        .iter()
        .map(|c| Ok(Cidr::parse_any("AllowedCidrs", c)?.to_string()))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let expires_at = unix_now().saturating_add(ttl);
    let id = new_id("jtk-");
    let secret = palisade_store::random_id("", 32);
    let body = json!({
        "ClusterId": cluster,
        "Role": role,
        "SecretSha256": sha256_hex(&secret),
        "ExpiresAt": expires_at,
        "ExpiresTime": time_string(expires_at),
        "MaxUses": max_uses,
        "Uses": 0,
        "AllowedCidrs": cidrs,
        "Revoked": false,
        "CreatedTime": now(),
    });
    ctx.write(|tx| {
        if tx.cluster(ctx.account, &cluster)?.is_none() {
            return Err(ApiError::not_found("ClusterId", &cluster));
        }
        groups_for(tx, ctx.account, &cluster, role)?;
        tx.put_join_token(ctx.account, &id, &body)?;
        Ok(())
    })?;
    reply(json!({
        "JoinTokenId": id,
        "JoinToken": format!("{id}.{secret}"),
        "ClusterId": cluster,
        "Role": role,
        "ExpiresTime": body["ExpiresTime"],
    }))
}

/// `DescribeJoinTokens`: optional `ClusterId` -> `JoinTokenSet` (never a
/// secret or its hash), `TotalCount`.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ClusterId"])?;
    let cluster = p
        .opt_str("ClusterId")?
        .map(|c| ClusterId::parse_field("ClusterId", &c).map(|c| c.to_string()))
        .transpose()?;
    let tokens = ctx.read(|tx| Ok(tx.join_tokens(ctx.account)?))?;
    let now = unix_now();
    let set: Vec<Value> = tokens
        .iter()
        .filter(|(_, b)| {
            cluster
                .as_deref()
                .is_none_or(|c| b["ClusterId"].as_str() == Some(c))
        })
        .map(|(id, b)| {
            json!({
                "JoinTokenId": id,
                "ClusterId": b["ClusterId"],
                "Role": b["Role"],
                "State": state(b, now),
                "ExpiresTime": b["ExpiresTime"],
                "MaxUses": b["MaxUses"],
                "Uses": b["Uses"],
                "AllowedCidrs": b["AllowedCidrs"],
                "CreatedTime": b["CreatedTime"],
            })
        })
        .collect();
    reply(json!({ "JoinTokenSet": set, "TotalCount": set.len() }))
}

/// `RevokeJoinToken`: `JoinTokenId` -> the token joins nothing more. Nodes
/// it joined stay (their own keys are theirs).
pub fn revoke(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["JoinTokenId"])?;
    let id = p.req_str("JoinTokenId")?;
    check_token_id("JoinTokenId", &id)?;
    ctx.write(|tx| {
        let mut body = match tx.join_token(&id)? {
            Some((account, body)) if account == ctx.account => body,
            _ => return Err(ApiError::not_found("JoinTokenId", &id)),
        };
        body["Revoked"] = json!(true);
        tx.put_join_token(ctx.account, &id, &body)?;
        Ok(())
    })?;
    reply(json!({}))
}

/// `JoinCluster`, the one action a join token is good for, called without
/// a signature: `JoinToken`, `InstanceId`, optional `InstanceName`,
/// `PrivateIpAddresses` -> the new instance, its cluster and groups, and
/// its agent key (`SecretId`, `SecretKey`). Every refusal registers
/// nothing and uses nothing of the token.
pub fn join(store: &dyn Store, limits: &palisade_model::limits::Limits, p: &Params) -> Reply {
    p.allow_only(JOIN_PARAMS)?;
    let token = p.req_str("JoinToken")?;
    let (token_id, secret) = token.split_once('.').ok_or_else(|| {
        ApiError::new(
            ErrorCode::AuthFailureUnauthorizedOperation,
            "JoinToken: expected jtk-xxxxxxxx.SECRET as `palisade cluster join-token create` prints it",
        )
    })?;
    check_token_id("JoinToken", token_id)?;
    let instance = InstanceId::parse_field("InstanceId", &p.req_str("InstanceId")?)?.to_string();
    let name = p.opt_str("InstanceName")?.unwrap_or_default();
    if name.chars().count() > 60 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueTooLong,
            format!("InstanceName {name:?}: longer than 60 characters"),
        ));
    }
    let ips = p.req_str_list("PrivateIpAddresses")?;
    if ips.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueEmpty,
            "PrivateIpAddresses must not be empty (the node's uplink has no address?)",
        ));
    }
    bounded_list("PrivateIpAddresses", &ips, MAX_JOIN_IPS)?;
    let addrs = ips
        .iter()
        .map(|ip| {
            ip.parse::<IpAddr>().map_err(|_| {
                ApiError::malformed("PrivateIpAddresses", ip, "expected an IPv4 or IPv6 address")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refused = |why: String| {
        ApiError::new(
            ErrorCode::AuthFailureUnauthorizedOperation,
            format!("join token {token_id}: {why}; nothing was registered"),
        )
    };
    let genuine = |found: Option<(String, Value)>| match found {
        Some((account, body))
            if body["SecretSha256"]
                .as_str()
                .is_some_and(|h| same(h, &sha256_hex(secret))) =>
        {
            Ok((account, body))
        }
        // An unknown id and a wrong secret answer alike.
        _ => Err(refused("unknown token or wrong secret".into())),
    };
    // Anyone may send this request: a token that is not genuine is turned
    // away on a read, so guesses never take the writer.
    genuine(store.read(|tx| Ok::<_, ApiError>(tx.join_token(token_id)?))?)?;
    store.write(|tx| {
        // Read again under the account's lock: its state and uses now.
        let (account, mut body) = genuine(tx.join_token(token_id)?)?;
        let now = unix_now();
        match state(&body, now) {
            "Active" => {}
            "Revoked" => return Err(refused("revoked".into())),
            "Expired" => {
                return Err(refused(format!(
                    "expired at {} UTC",
                    body["ExpiresTime"].as_str().unwrap_or("?")
                )))
            }
            _ => {
                return Err(refused(format!(
                    "used up ({} of {} uses)",
                    body["Uses"], body["MaxUses"]
                )))
            }
        }
        let allowed = body["AllowedCidrs"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|c| {
                        c.as_str()
                            .and_then(|c| Cidr::parse_any("AllowedCidrs", c).ok())
                            .ok_or_else(|| {
                                ApiError::from(palisade_store::StoreError::Corrupt(format!(
                                    "join token {token_id}: bad AllowedCidrs entry {c}"
                                )))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        if !allowed.is_empty() {
            if let Some(a) = addrs.iter().find(|a| !allowed.iter().any(|c| c.contains(**a))) {
                return Err(refused(format!(
                    "address {a} is outside the token's allowed CIDRs ({})",
                    allowed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let cluster_id = body["ClusterId"]
            .as_str()
            .ok_or_else(|| ApiError::internal("join token without ClusterId"))?
            .to_string();
        let role = role(body["Role"].as_str().unwrap_or("node"))?;
        let Some(mut cluster) = tx.cluster(&account, &cluster_id)? else {
            return Err(refused(format!("its cluster {cluster_id} no longer exists")));
        };
        if tx.instance(&account, &instance)?.is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueDuplicate,
                format!(
                    "InstanceId {instance}: already registered; a node rejoins only after it \
                     left (palisade agent --leave, or palisade cluster prune); nothing was registered"
                ),
            ));
        }
        let groups = groups_for(tx, &account, &cluster_id, role)?;
        if groups.len() > limits.groups_per_instance {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "cluster {cluster_id} names {} groups for role {role}, the limit is {} per instance",
                    groups.len(),
                    limits.groups_per_instance
                ),
            ));
        }
        for g in &groups {
            if tx.group_instances(&account, g)?.len() >= limits.instances_per_group {
                return Err(ApiError::new(
                    ErrorCode::LimitExceededAssociateUsgLimitExceeded,
                    format!(
                        "group {g} is bound to {} instances already",
                        limits.instances_per_group
                    ),
                ));
            }
        }
        let mut held = Holders::load(tx, &account)?;
        held.claim(0, &instance, &ips)?;
        let rec = InstanceRecord {
            id: instance.clone(),
            name: name.clone(),
            private_ips: ips.clone(),
            created_time: super::now(),
            security_group_ids: groups.clone(),
        };
        tx.insert_instance(&account, &rec).map_err(map_insert)?;
        let list = if role == "master" { "Masters" } else { "Nodes" };
        if let Some(m) = cluster.body.as_object_mut() {
            let entry = m.entry(list).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(json!(instance));
            }
        }
        cluster.updated_time = super::now();
        tx.put_cluster(&account, &cluster)?;
        body["Uses"] = json!(body["Uses"].as_u64().unwrap_or(0).saturating_add(1));
        tx.put_join_token(&account, token_id, &body)?;
        let key = InstanceKey {
            account_id: account.clone(),
            instance_id: instance.clone(),
            secret_id: palisade_store::random_secret("AKID", 32),
            secret_key: palisade_store::random_secret("", 32),
        };
        tx.insert_instance_key(&key)?;
        reply(json!({
            "InstanceId": instance,
            "ClusterId": cluster_id,
            "Role": role,
            "SecurityGroupIds": groups,
            "SecretId": key.secret_id,
            "SecretKey": key.secret_key,
        }))
    })
}

/// `JoinCluster` in a signed request: only a join token calls it,
/// unsigned (`http::join`); a signed caller already has an account and
/// registers instances itself. Its parameters are checked all the same,
/// so a misspelt one is named.
pub fn signed(p: &Params) -> Reply {
    p.allow_only(JOIN_PARAMS)?;
    Err(ApiError::new(
        ErrorCode::UnsupportedOperation,
        "JoinCluster takes a join token in an unsigned request; signed callers use RegisterInstances",
    ))
}

/// `LeaveCluster` (an agent's own key): `InstanceId` -> the instance is
/// deregistered (with its key) and taken off its clusters' lists.
pub fn leave(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceId"])?;
    let id = InstanceId::parse_field("InstanceId", &p.req_str("InstanceId")?)?.to_string();
    ctx.write(|tx| {
        if tx.instance(ctx.account, &id)?.is_none() {
            return Err(ApiError::not_found("InstanceId", &id));
        }
        remove_instance(tx, ctx.account, &id)
    })?;
    reply(json!({ "InstanceId": id }))
}

/// `PruneCluster`: `ClusterId`, optional `StaleSeconds` (default 300) ->
/// deregisters the cluster's nodes and masters whose agents have not
/// reported for that long (or, never having reported, were registered that
/// long ago); `InstanceIdSet` lists them.
pub fn prune(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ClusterId", "StaleSeconds"])?;
    let cluster = ClusterId::parse_field("ClusterId", &p.req_str("ClusterId")?)?.to_string();
    let stale = p.opt_uint("StaleSeconds")?.unwrap_or(DEFAULT_STALE_SECONDS);
    let reports = ctx.store.instance_statuses(ctx.account)?;
    let now = unix_now();
    let gone = ctx.write(|tx| {
        let Some(c) = tx.cluster(ctx.account, &cluster)? else {
            return Err(ApiError::not_found("ClusterId", &cluster));
        };
        let mut gone = Vec::new();
        for id in members(&c.body) {
            let Some(ins) = tx.instance(ctx.account, &id)? else {
                continue;
            };
            let last = reports
                .iter()
                .find(|(i, _, _)| *i == id)
                .map_or(ins.created_time.as_str(), |(_, _, t)| t.as_str());
            if is_stale(last, now, stale) {
                remove_instance(tx, ctx.account, &id)?;
                gone.push(id);
            }
        }
        Ok(gone)
    })?;
    reply(json!({ "InstanceIdSet": gone, "ClusterId": cluster }))
}

/// Whether an agent last heard of at `time` (`YYYY-MM-DD HH:MM:SS` UTC)
/// is stale at `now` after `stale` seconds. A time that does not parse is
/// stale: it cannot show the agent is alive.
pub fn is_stale(time: &str, now: u64, stale: u64) -> bool {
    parse_time(time).is_none_or(|t| now.saturating_sub(t) >= stale)
}

fn parse_time(text: &str) -> Option<u64> {
    // `YYYY-MM-DD HH:MM:SS`, as the store writes it.
    let (date, clock) = text.split_once(' ')?;
    let mut d = date.splitn(3, '-').map(|n| n.parse::<i32>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.splitn(3, ':').map(|n| n.parse::<u8>().ok());
    let (h, mi, se) = (c.next()??, c.next()??, c.next()??);
    let month = time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let date = time::Date::from_calendar_date(y, month, u8::try_from(da).ok()?).ok()?;
    let t = date.with_hms(h, mi, se).ok()?.assume_utc();
    u64::try_from(t.unix_timestamp()).ok()
}

/// The nodes and masters a cluster lists.
fn members(body: &Value) -> Vec<String> {
    ["Nodes", "Masters"]
        .iter()
        .filter_map(|k| body[*k].as_array())
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Deletes an instance (its bindings, key and status die with it) and
/// takes it off the lists of every cluster that names it.
fn remove_instance(tx: &mut dyn Tx, account: &str, id: &str) -> Result<(), ApiError> {
    tx.delete_instance(account, id)?;
    for mut c in tx.clusters(account)? {
        let mut changed = false;
        for k in ["Nodes", "Masters"] {
            if let Some(list) = c.body.get_mut(k).and_then(Value::as_array_mut) {
                let before = list.len();
                list.retain(|v| v.as_str() != Some(id));
                changed |= list.len() != before;
            }
        }
        if changed {
            c.updated_time = super::now();
            tx.put_cluster(account, &c)?;
        }
    }
    Ok(())
}

/// The groups an instance of `role` in `cluster` is bound to, in order.
fn groups_for(
    tx: &dyn Tx,
    account: &str,
    cluster: &str,
    role: &'static str,
) -> Result<Vec<String>, ApiError> {
    let Some(c) = tx.cluster(account, cluster)? else {
        return Err(ApiError::not_found("ClusterId", cluster));
    };
    let field = if role == "master" {
        "MasterSecurityGroupIds"
    } else {
        "NodeSecurityGroupIds"
    };
    let recorded: Vec<String> = c.body[field]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !recorded.is_empty() {
        for g in &recorded {
            if tx.group(account, g)?.is_none() {
                return Err(ApiError::new(
                    ErrorCode::ResourceNotFound,
                    format!("cluster {cluster}: {field} names group {g}, which does not exist"),
                ));
            }
        }
        return Ok(recorded);
    }
    let name = format!("tke-{role}-{cluster}");
    let made: Vec<String> = tx
        .groups(account)?
        .into_iter()
        .filter(|g| g.name == name)
        .map(|g| g.id)
        .collect();
    match made.as_slice() {
        [one] => Ok(vec![one.clone()]),
        [] => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "cluster {cluster} has no groups for role {role}: run `palisade tke apply` for it \
                 (it makes {name}), or record {field} with RegisterCluster; a node bound to no \
                 group would drop everything"
            ),
        )),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "cluster {cluster}: {} groups are named {name}; record the ones to bind as {field} \
                 with RegisterCluster",
                made.len()
            ),
        )),
    }
}

fn role(text: &str) -> Result<&'static str, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "node" => Ok("node"),
        "master" => Ok("master"),
        _ => Err(ApiError::malformed("Role", text, "expected node or master")),
    }
}

/// `Active`, `Revoked`, `Expired` or `UsedUp`.
fn state(body: &Value, now: u64) -> &'static str {
    if body["Revoked"].as_bool() != Some(false) {
        "Revoked"
    } else if body["ExpiresAt"].as_u64().is_none_or(|t| now >= t) {
        "Expired"
    } else if body["MaxUses"]
        .as_u64()
        .is_some_and(|m| body["Uses"].as_u64().is_none_or(|u| u >= m))
    {
        "UsedUp"
    } else {
        "Active"
    }
}

fn check_token_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 12
        && id.starts_with("jtk-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::malformed(field, id, "expected jtk-xxxxxxxx"))
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two hashes in constant time.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn unix_now() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

fn time_string(unix: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_states_and_staleness() {
        let body = |revoked: bool, expires: u64, max: Option<u64>, uses: u64| json!({"Revoked": revoked, "ExpiresAt": expires, "MaxUses": max, "Uses": uses});
        assert_eq!(state(&body(false, 100, None, 7), 50), "Active");
        assert_eq!(state(&body(true, 100, None, 0), 50), "Revoked");
        assert_eq!(state(&body(false, 100, None, 0), 100), "Expired");
        assert_eq!(state(&body(false, 100, Some(2), 2), 50), "UsedUp");
        assert_eq!(state(&body(false, 100, Some(2), 1), 50), "Active");
        assert_eq!(
            state(&json!({}), 50),
            "Revoked",
            "a broken body joins nothing"
        );
        let t = parse_time("2026-12-03 17:00:00").unwrap_or(0);
        assert!(t > 0);
        assert!(!is_stale("2026-12-03 17:00:00", t + 59, 60));
        assert!(is_stale("2026-12-03 17:00:00", t + 60, 60));
        assert!(is_stale("garbage", t, 60));
        assert_eq!(time_string(t), "2026-12-03 17:00:00");
        assert!(check_token_id("f", "jtk-abcd1234").is_ok());
        assert!(check_token_id("f", "jtk-ABCD1234").is_err());
        assert!(same(&sha256_hex("x"), &sha256_hex("x")));
        assert!(!same(&sha256_hex("x"), &sha256_hex("y")));
    }
}
