//! Palisade's own service (`palisade`, version `2026-11-01`): register and
//! deregister instances (nodes), take their agents' status reports (applied
//! revision, per-rule counters, errors), and show an instance's resolved ruleset —
//! its groups' rules in binding order with group references and templates
//! expanded to address sets — together with the store revision it was
//! computed at (resolution is the `policy` crate's). This is what an agent
//! enforces.

use super::bounds::MAX_PRIVATE_IPS;
use super::cvm::check_instance_id;
use super::{map_insert, new_id, now, reply, rules_of, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{bounded_list, Params};
use palisade_model::flow::Enforcement;
use palisade_model::policy::{Direction, PolicySet};
use palisade_model::ErrorCode;
use palisade_model::{
    AddressEntry, AddressTemplate, AddressTemplateGroup, AddressTemplateGroupId, AddressTemplateId,
    Fleet, Instance, InstanceId, SecurityGroup, SecurityGroupId, ServiceEntry, ServiceTemplate,
    ServiceTemplateGroup, ServiceTemplateGroupId, ServiceTemplateId,
};
use palisade_policy::{FleetIndex, ResolvedRule};
use palisade_protocol::service::{
    InstanceRuleset, RuleCounter, MAX_COUNTERS, MAX_ERRORS, MAX_ERROR_CHARS,
};
use palisade_store::{InstanceRecord, Store, StoreExt, TemplateKind, Tx};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewInstance {
    instance_id: Option<String>,
    instance_name: Option<String>,
    private_ip_addresses: Option<Vec<String>>,
}

/// `RegisterInstances`: creates instances (or updates the name, when given,
/// and IPs of ones that exist); ids are generated when absent. An agent
/// credential may only confirm its instance as registered (same addresses,
/// same or no name): anything else is `AuthFailure.UnauthorizedOperation`,
/// decided inside the write transaction against the stored record.
pub fn register(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["Instances"])?;
    let list: Vec<NewInstance> = p.req_typed("Instances")?;
    if list.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueEmpty,
            "Instances must not be empty",
        ));
    }
    if list.len() > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!("Instances: {} instances, at most 100 per call", list.len()),
        ));
    }
    let mut prepared = Vec::new();
    for (n, i) in list.into_iter().enumerate() {
        let id = match i.instance_id.filter(|s| !s.is_empty()) {
            Some(id) => {
                palisade_model::InstanceId::parse_field(
                    &format!("Instances[{n}].InstanceId"),
                    &id,
                )?;
                Some(id)
            }
            None => None,
        };
        let ips = i
            .private_ip_addresses
            .ok_or_else(|| ApiError::missing(&format!("Instances[{n}].PrivateIpAddresses")))?;
        if ips.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueEmpty,
                format!("Instances[{n}].PrivateIpAddresses must not be empty"),
            ));
        }
        bounded_list(
            &format!("Instances[{n}].PrivateIpAddresses"),
            &ips,
            MAX_PRIVATE_IPS,
        )?;
        for ip in &ips {
            ip.parse::<IpAddr>().map_err(|_| {
                ApiError::malformed(
                    &format!("Instances[{n}].PrivateIpAddresses"),
                    ip,
                    "expected an IPv4 or IPv6 address",
                )
            })?;
        }
        let name = i.instance_name;
        if name.as_deref().is_some_and(|n| n.chars().count() > 60) {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueTooLong,
                format!("Instances[{n}].InstanceName: longer than 60 characters"),
            ));
        }
        prepared.push((id, name, ips));
    }
    let ids = ctx.write(|tx| {
        let mut held = Holders::load(tx, ctx.account)?;
        let mut ids = Vec::new();
        for (n, (id, name, ips)) in prepared.into_iter().enumerate() {
            match id
                .as_deref()
                .map(|id| tx.instance(ctx.account, id))
                .transpose()?
                .flatten()
            {
                Some(mut existing) => {
                    // Re-registering unchanged (an agent confirming its
                    // instance) writes nothing, so it wakes no agent.
                    let name = name.unwrap_or_else(|| existing.name.clone());
                    if existing.name != name || existing.private_ips != ips {
                        if let Some(ins) = ctx.agent_of {
                            // The same addresses in another order (as an
                            // agent may read them off its interfaces)
                            // confirm; anything else is a change.
                            if existing.name == name && same_set(&existing.private_ips, &ips) {
                                ids.push(existing.id);
                                continue;
                            }
                            return Err(agent_may_not_change(ins));
                        }
                        held.claim(n, &existing.id, &ips)?;
                        existing.name = name;
                        existing.private_ips = ips;
                        tx.update_instance(ctx.account, &existing)?;
                    }
                    ids.push(existing.id);
                }
                None => {
                    // Not reached with the scope check in front (an agent
                    // names its own instance, which exists while its key
                    // does), and refused all the same.
                    if let Some(ins) = ctx.agent_of {
                        return Err(agent_may_not_change(ins));
                    }
                    let rec = InstanceRecord {
                        id: id.unwrap_or_else(|| new_id("ins-")),
                        name: name.unwrap_or_default(),
                        private_ips: ips,
                        created_time: now(),
                        security_group_ids: Vec::new(),
                    };
                    held.claim(n, &rec.id, &rec.private_ips)?;
                    tx.insert_instance(ctx.account, &rec).map_err(map_insert)?;
                    ids.push(rec.id);
                }
            }
        }
        Ok(ids)
    })?;
    reply(json!({ "InstanceIdSet": ids }))
}

/// Which instance holds each private IP of the account. An account is one
/// network: a group reference admits its members' IPs, so a second instance
/// holding the same IP would be admitted silently by every rule that
/// references the first one's groups.
pub(super) struct Holders(HashMap<IpAddr, String>);

impl Holders {
    pub(super) fn load(tx: &dyn Tx, account: &str) -> Result<Self, ApiError> {
        let mut held = HashMap::new();
        for i in tx.instances(account)? {
            for ip in &i.private_ips {
                // A stored IP that does not parse is reported by every
                // resolution of the account; here it can clash with nothing.
                if let Ok(addr) = ip.parse::<IpAddr>() {
                    held.insert(addr, i.id.clone());
                }
            }
        }
        Ok(Self(held))
    }

    /// Gives `ips` to instance `id` (the `n`th of the request), releasing the
    /// ones it held before; `InvalidParameterValue.Duplicate` naming the
    /// holder when another instance holds one of them.
    pub(super) fn claim(&mut self, n: usize, id: &str, ips: &[String]) -> Result<(), ApiError> {
        // Checked by `register` before the transaction.
        let addrs: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        for addr in &addrs {
            if let Some(owner) = self.0.get(addr).filter(|owner| *owner != id) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameterValueDuplicate,
                    format!(
                        "Instances[{n}].PrivateIpAddresses: {addr} is already held by \
                         instance {owner} of this account (an account is one network)"
                    ),
                ));
            }
        }
        self.0.retain(|_, owner| owner != id);
        for addr in addrs {
            self.0.insert(addr, id.to_string());
        }
        Ok(())
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let set = |l: &[String]| l.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    a.len() == b.len() && set(a) == set(b)
}

/// An agent credential tried to change its instance's registration: the
/// addresses it would set are admitted by every rule that references the
/// instance's groups, on every node, so only the account's own key may set
/// them.
fn agent_may_not_change(ins: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AuthFailureUnauthorizedOperation,
        format!(
            "this credential belongs to the agent of {ins}: it may confirm the instance's \
             registration as it stands, but changing its name or addresses needs the account's key"
        ),
    )
}

/// `DeregisterInstances`.
pub fn deregister(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceIds"])?;
    let ids = p.req_str_list("InstanceIds")?;
    for id in &ids {
        check_instance_id(id)?;
    }
    ctx.write(|tx| {
        for id in &ids {
            if tx.instance(ctx.account, id)?.is_none() {
                return Err(ApiError::not_found("InstanceIds", id));
            }
            tx.delete_instance(ctx.account, id)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

/// `DescribeInstanceRuleset`: `InstanceId` -> the resolved ordered rules of
/// each direction and the store revision, computed by the `policy` crate's
/// resolution on one read snapshot.
pub fn describe_ruleset(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceId", "AfterRevision", "WaitSeconds", "KnownDigest"])?;
    let id = p.req_str("InstanceId")?;
    check_instance_id(&id)?;
    let after = p.opt_uint("AfterRevision")?;
    let known_digest = p.opt_str("KnownDigest")?;
    let wait = p.opt_uint("WaitSeconds")?.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueRange,
            format!("WaitSeconds {wait}: at most {MAX_WAIT_SECONDS}"),
        ));
    }
    // The global revision and then the account's as this server's
    // watchers know them, read before anything else: a commit to the
    // account after this moment raises `seen`, and as a commit raises its
    // accounts' watchers before the global one, every commit to the
    // account up to `global` is in `seen`.
    let watchers = || {
        let global = *ctx.store.watch_revision().borrow();
        (global, *ctx.store.watch_account(ctx.account).borrow())
    };
    let (mut global, mut seen) = watchers();
    // A poll (`AfterRevision` or `KnownDigest`), when a request has read
    // the account's snapshot in the state its watchers show (`seen`), is
    // answered from memory: a herd woken by a write to its account is
    // answered, changed or not, without a database round trip each.
    // `Revision` is then the later of `global` and `seen`: no commit to the
    // account up to it is missing from the answer. A plain read, and
    // anything not cached, reads the store, so a write through another
    // server is read at once.
    let polling = after.is_some() || known_digest.is_some();
    let cached = if polling {
        match ctx.rulesets.cached(ctx.account, seen, &id)? {
            Some(hit) => Some(hit),
            // Polls arriving between a write and its herd's read join
            // that read instead of each reading the store. A write may
            // land meanwhile: read the watchers again, and join the read
            // of that state too, a few times at most.
            None => {
                let mut hit = None;
                for _ in 0..SETTLE_TRIES {
                    ctx.rulesets.settle(ctx.store, ctx.account, seen);
                    (global, seen) = watchers();
                    hit = ctx.rulesets.cached(ctx.account, seen, &id)?;
                    if hit.is_some() {
                        break;
                    }
                }
                hit
            }
        }
    } else {
        None
    };
    if let Some(cached) = cached {
        let digest = answer_digest(
            &cached.rules,
            &cached.groups,
            &cached.ips,
            cached.enforcement,
        );
        let changed = match &known_digest {
            Some(known) => *known != digest,
            None => after.is_none_or(|a| cached.revision > a),
        };
        return answer(InstanceRuleset {
            instance_id: id,
            revision: seen.max(global),
            security_group_ids: cached.groups,
            private_ip_addresses: cached.ips,
            ingress: cached.rules.ingress.clone(),
            egress: cached.rules.egress.clone(),
            enforcement: cached.enforcement,
            digest: Some(digest),
            changed,
        });
    }
    let out = ctx.read(|tx| {
        let ins = tx
            .instance(ctx.account, &id)?
            .ok_or_else(|| ApiError::not_found("InstanceId", &id))?;
        let revision = tx.revision()?;
        // The ruleset depends on the account's records only: the same at
        // every revision with the same account revision.
        let account_revision = tx.account_revision(ctx.account)?;
        let rules = ctx.rulesets.rules(
            ctx.account,
            account_revision,
            seen,
            &ins.security_group_ids,
            || Snapshot::load(tx, ctx.account),
        )?;
        let enforcement = tx.enforcement(ctx.account, &ins.id)?;
        let digest = answer_digest(
            &rules,
            &ins.security_group_ids,
            &ins.private_ips,
            enforcement,
        );
        // The digest of what the caller holds, when it says, decides
        // `Changed` exactly; otherwise any change to the account does.
        let changed = match &known_digest {
            Some(known) => *known != digest,
            None => after.is_none_or(|a| account_revision > a),
        };
        Ok(InstanceRuleset {
            instance_id: ins.id,
            revision,
            security_group_ids: ins.security_group_ids,
            private_ip_addresses: ins.private_ips,
            ingress: rules.ingress.clone(),
            egress: rules.egress.clone(),
            enforcement,
            digest: Some(digest),
            changed,
        })
    })?;
    answer(out)
}

/// The `{"Ruleset": ...}` reply of `DescribeInstanceRuleset`.
fn answer(ruleset: InstanceRuleset) -> Reply {
    let ruleset = serde_json::to_value(ruleset)
        .map_err(|e| ApiError::internal(format!("serialising a ruleset: {e}")))?;
    reply(json!({ "Ruleset": ruleset }))
}

/// `ReportInstanceStatus`: an agent says which revision it applied, its
/// per-rule counters and its errors. Kept (last report wins) and shown by
/// `DescribeInstanceStatus`; does not bump the store revision.
pub fn report_status(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[
        "InstanceId",
        "AppliedRevision",
        "Counters",
        "Errors",
        "Failsafe",
    ])?;
    let id = p.req_str("InstanceId")?;
    check_instance_id(&id)?;
    let applied = p
        .opt_uint("AppliedRevision")?
        .ok_or_else(|| ApiError::missing("AppliedRevision"))?;
    let counters: Vec<RuleCounter> = p.opt_typed("Counters")?.unwrap_or_default();
    if counters.len() > MAX_COUNTERS {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!(
                "Counters: {} entries, at most {MAX_COUNTERS}",
                counters.len()
            ),
        ));
    }
    let mut counters_json = Vec::with_capacity(counters.len());
    for (n, c) in counters.iter().enumerate() {
        SecurityGroupId::parse_field(
            &format!("Counters[{n}].SecurityGroupId"),
            &c.security_group_id,
        )?;
        let dir = Direction::parse_field(&format!("Counters[{n}].Direction"), &c.direction)?;
        counters_json.push(json!({
            "SecurityGroupId": c.security_group_id,
            "Direction": dir.wire_name(),
            "PolicyIndex": c.policy_index,
            "Packets": c.packets,
            "Bytes": c.bytes,
        }));
    }
    let errors = p.opt_str_list("Errors")?.unwrap_or_default();
    if errors.len() > MAX_ERRORS || errors.iter().any(|e| e.chars().count() > MAX_ERROR_CHARS) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!(
                "Errors: at most {MAX_ERRORS} messages of at most {MAX_ERROR_CHARS} characters"
            ),
        ));
    }
    let failsafe = p.opt_str_list("Failsafe")?.unwrap_or_default();
    let failsafe = palisade_policy::failsafe::parse_list("Failsafe", &failsafe)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameterValue, e.to_string()))?;
    let failsafe: Vec<String> = failsafe.iter().map(ToString::to_string).collect();
    let body = json!({
        "AppliedRevision": applied,
        "Counters": counters_json,
        "Errors": errors,
        "Failsafe": failsafe,
    });
    match ctx.store.put_instance_status(ctx.account, &id, &body) {
        Ok(()) => {}
        Err(palisade_store::StoreError::NotFound(_)) => {
            return Err(ApiError::not_found("InstanceId", &id))
        }
        Err(e) => return Err(e.into()),
    }
    super::flows::record_hits(ctx, &id, &counters)?;
    reply(json!({}))
}

/// `DescribeInstanceStatus`: `InstanceIds` (optional) -> `InstanceStatusSet`
/// with each instance's last report and the current store revision, so a
/// lagging agent shows as `AppliedRevision < Revision`.
pub fn describe_status(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceIds", "StaleSeconds"])?;
    let ids = p.opt_str_list("InstanceIds")?;
    let stale_after = p
        .opt_uint("StaleSeconds")?
        .unwrap_or(super::join::DEFAULT_STALE_SECONDS);
    let unix_now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    if let Some(ids) = &ids {
        for id in ids {
            check_instance_id(id)?;
        }
    }
    let (revision, instances, modes) = ctx.read(|tx| {
        Ok((
            tx.revision()?,
            tx.instances(ctx.account)?,
            tx.enforcements(ctx.account)?,
        ))
    })?;
    let reports = ctx.store.instance_statuses(ctx.account)?;
    let mut set = Vec::new();
    for ins in instances {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&ins.id)) {
            continue;
        }
        let report = reports.iter().find(|(id, _, _)| id == &ins.id);
        let (body, time) = match report {
            Some((_, body, time)) => (body.clone(), time.clone()),
            None => (
                json!({ "AppliedRevision": 0, "Counters": [], "Errors": [] }),
                String::new(),
            ),
        };
        // Silent for StaleSeconds: since its last report, or since it was
        // registered when it never reported.
        let last = if report.is_some() {
            &time
        } else {
            &ins.created_time
        };
        set.push(json!({
            "InstanceId": ins.id,
            "Stale": super::join::is_stale(last, unix_now, stale_after),
            "Reported": report.is_some(),
            "ReportedTime": time,
            "AppliedRevision": body["AppliedRevision"],
            "Counters": body["Counters"],
            "Errors": body["Errors"],
            // Reports from before failsafe entries existed have none.
            "Failsafe": body.get("Failsafe").cloned().unwrap_or_else(|| json!([])),
            "Enforcement": modes
                .iter()
                .find(|(id, _)| *id == ins.id)
                .map_or(Enforcement::Enforce, |(_, m)| *m)
                .as_str(),
        }));
    }
    if let Some(ids) = &ids {
        for id in ids {
            if !set.iter().any(|s| s["InstanceId"] == json!(id)) {
                return Err(ApiError::not_found("InstanceIds", id));
            }
        }
    }
    reply(json!({ "InstanceStatusSet": set, "Revision": revision }))
}

/// The longest long-poll `DescribeInstanceRuleset` accepts; below the SDKs'
/// default 60 s request timeout. The wait itself happens in the HTTP layer
/// (`http::long_poll`), off the blocking threads.
const MAX_WAIT_SECONDS: u64 = 50;

/// The resolved rules of one ordered list of groups.
pub struct Rules {
    ingress: Vec<ResolvedRule>,
    egress: Vec<ResolvedRule>,
    /// SHA-256 of the two lists' JSON.
    digest: [u8; 32],
}

/// The `Digest` of a `DescribeInstanceRuleset` answer: SHA-256 over the
/// rules and the instance's own fields, hex, first 128 bits. Equal digests
/// mean equal content, whatever the revisions.
fn answer_digest(
    rules: &Rules,
    groups: &[String],
    ips: &[String],
    enforcement: Enforcement,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(rules.digest);
    h.update(enforcement.as_str().as_bytes());
    for list in [groups, ips] {
        h.update((list.len() as u64).to_le_bytes());
        for item in list {
            h.update((item.len() as u64).to_le_bytes());
            h.update(item.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// Resolved rulesets shared by the requests of a herd: when one write wakes
/// every agent of an account, the account's snapshot is read once and each
/// distinct list of bound groups resolved once, instead of once per agent.
/// Keyed by the account revision ([`Tx::account_revision`]), which changes
/// with every commit that changes the account, so an entry is never stale;
/// only the newest revision of each account is kept.
///
/// A herd woken together would still all miss the cache at the new state
/// and each read the store; [`RulesetCache::join_fill`] lets the first one
/// read while the others wait for it, outside any transaction.
#[derive(Default)]
pub struct RulesetCache {
    accounts: Mutex<HashMap<String, Arc<AccountRules>>>,
    /// Per account, the watcher value a request is filling the cache for,
    /// and whether it is done (the sender is dropped if it fails).
    fills: Mutex<HashMap<String, (u64, FillWait)>>,
}

/// How a poll at a new account state goes on.
pub enum Fill {
    /// The cache holds that state: answer now.
    Ready,
    /// Another request is reading it: wait for it, then answer.
    Wait(FillWait),
    /// Read it ([`RulesetCache::fill`]), then say [`FillLead::done`]; a
    /// lead dropped without gives up, and its waiters go on.
    Lead(FillLead),
}

/// Whether a read in flight has ended (done or given up), for waiters on
/// blocking threads; tasks wait on the channel.
type Finished = Arc<(Mutex<bool>, std::sync::Condvar)>;

/// The waiting side of a read in flight ([`Fill::Wait`]).
#[derive(Clone)]
pub struct FillWait {
    done: watch::Receiver<bool>,
    finished: Finished,
}

impl FillWait {
    /// In a task: until the read is done or given up, at most `limit`.
    pub async fn wait(mut self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.done.wait_for(|d| *d)).await;
    }

    /// On a blocking thread: the same.
    pub fn wait_blocking(&self, limit: std::time::Duration) {
        let (flag, cv) = &*self.finished;
        let _ = cv.wait_timeout_while(locked(flag), limit, |ended| !*ended);
    }

    /// Whether the read has ended.
    pub fn ended(&self) -> bool {
        *locked(&self.finished.0)
    }
}

/// The reading side of a read in flight ([`Fill::Lead`]).
pub struct FillLead {
    done: watch::Sender<bool>,
    finished: Finished,
}

impl FillLead {
    /// The cache holds the state: the waiters answer from it.
    pub fn done(self) {
        let _ = self.done.send(true);
    }
}

impl Drop for FillLead {
    fn drop(&mut self) {
        let (flag, cv) = &*self.finished;
        *locked(flag) = true;
        cv.notify_all();
    }
}

struct AccountRules {
    revision: u64,
    /// The highest watcher value (`Store::watch_account`) known to show
    /// this same account state: a request that read `seen` before its
    /// transaction found `revision <= seen`, so no commit to the account
    /// came between them.
    current_at: std::sync::atomic::AtomicU64,
    /// Filled by the first request; the others wait for it. Only a
    /// request inside its read transaction fills it, so the filler never
    /// waits for a database connection that a waiter holds.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    by_groups: Mutex<HashMap<Vec<String>, Arc<Rules>>>,
}

/// What [`RulesetCache::cached`] knows of one instance.
struct CachedAnswer {
    /// The account revision of the snapshot.
    revision: u64,
    enforcement: Enforcement,
    groups: Vec<String>,
    ips: Vec<String>,
    rules: Arc<Rules>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Caches: a panic mid-update leaves at worst a missing entry.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RulesetCache {
    /// The entry and snapshot of `account` in the state its watchers show
    /// as `seen`, when a request has read it. Never waits for a snapshot
    /// being read: its reader holds a database connection, and answers
    /// from here are only a shortcut.
    fn current(&self, account: &str, seen: u64) -> Option<(Arc<AccountRules>, Arc<Snapshot>)> {
        use std::sync::atomic::Ordering;
        let entry = locked(&self.accounts).get(account).cloned()?;
        if entry.revision != seen && entry.current_at.load(Ordering::Relaxed) != seen {
            return None;
        }
        let snapshot = entry.snapshot.try_lock().ok()?.clone()?;
        Some((entry, snapshot))
    }

    /// For a long-poll woken when `account`'s watchers show `seen`: answer
    /// now, wait for the request reading that state, or be that request.
    pub fn join_fill(&self, account: &str, seen: u64) -> Fill {
        if self.current(account, seen).is_some() {
            return Fill::Ready;
        }
        let mut fills = locked(&self.fills);
        if let Some((at, read)) = fills.get(account) {
            // In flight: at that state or a later one, and not ended.
            if *at >= seen && !read.ended() {
                return Fill::Wait(read.clone());
            }
        }
        let (tx, rx) = watch::channel(false);
        let finished = Finished::default();
        let read = FillWait {
            done: rx,
            finished: finished.clone(),
        };
        fills.insert(account.to_string(), (seen, read));
        Fill::Lead(FillLead { done: tx, finished })
    }

    /// Whether `instance`'s answer in `account` at watcher value `seen`
    /// has digest `known`, from what is already read and resolved; `None`
    /// when that would take a store read or a resolution.
    pub fn unchanged(&self, account: &str, seen: u64, instance: &str, known: &str) -> Option<bool> {
        let (entry, snapshot) = self.current(account, seen)?;
        let (groups, ips) = snapshot.instances.get(instance)?;
        let rules = locked(&entry.by_groups).get(groups)?.clone();
        Some(answer_digest(&rules, groups, ips, snapshot.enforcement(instance)) == known)
    }

    /// The instance's groups, addresses and rules in `account` in the
    /// state its watchers show (`seen`), when a request has already read
    /// the snapshot of that state; `None` otherwise (or when the instance
    /// is not in it): the caller then reads the store itself.
    fn cached(
        &self,
        account: &str,
        seen: u64,
        instance: &str,
    ) -> Result<Option<CachedAnswer>, ApiError> {
        let Some((entry, snapshot)) = self.current(account, seen) else {
            return Ok(None);
        };
        let Some((groups, ips)) = snapshot.instances.get(instance).cloned() else {
            return Ok(None);
        };
        let rules = entry.rules(seen, &groups, || Ok(snapshot.clone()))?;
        Ok(Some(CachedAnswer {
            revision: entry.revision,
            enforcement: snapshot.enforcement(instance),
            groups,
            ips,
            rules,
        }))
    }

    /// The resolved rules of `groups` in `account` at `revision`; `load`
    /// reads the account's snapshot at that revision when no request has.
    /// `seen` is the account's watcher value read before the transaction
    /// that found `revision`.
    fn rules(
        &self,
        account: &str,
        revision: u64,
        seen: u64,
        groups: &[String],
        load: impl FnOnce() -> Result<Snapshot, ApiError>,
    ) -> Result<Arc<Rules>, ApiError> {
        self.entry(account, revision)
            .rules(seen, groups, || load().map(Arc::new))
    }

    /// The entry of `account` at `revision`, made the account's entry
    /// unless a newer one is there (a reader behind it is served, not
    /// cached).
    fn entry(&self, account: &str, revision: u64) -> Arc<AccountRules> {
        let mut map = locked(&self.accounts);
        match map.get(account) {
            Some(e) if e.revision == revision => e.clone(),
            Some(e) if e.revision > revision => Arc::new(AccountRules::new(revision)),
            _ => {
                let e = Arc::new(AccountRules::new(revision));
                map.insert(account.to_string(), e.clone());
                e
            }
        }
    }

    /// Reads `account`'s snapshot in one read transaction into the cache,
    /// as the state of watcher value `seen` (read before this call) when
    /// no commit came between, and resolves each distinct list of bound
    /// groups in it: the herd that waits for this answers from memory,
    /// [`RulesetCache::unchanged`] included.
    pub fn fill(&self, store: &dyn Store, account: &str, seen: u64) -> Result<(), ApiError> {
        let (entry, snapshot) = store.read(|tx| {
            let revision = tx.account_revision(account)?;
            let entry = self.entry(account, revision);
            let snapshot = entry.snapshot(seen, || Snapshot::load(tx, account).map(Arc::new))?;
            Ok::<_, ApiError>((entry, snapshot))
        })?;
        let lists: std::collections::HashSet<&Vec<String>> = snapshot
            .instances
            .values()
            .map(|(groups, _)| groups)
            .collect();
        for groups in lists {
            entry.rules(seen, groups, || Ok(snapshot.clone()))?;
        }
        Ok(())
    }

    /// For a poll that found nothing cached at `seen`, on a blocking
    /// thread: make the cache hold that state with one store read per
    /// herd: read it, or wait (at most [`FILL_WAIT`], holding no database
    /// connection) for the request already reading it. A failed read is
    /// left to the caller's own store read, which reports the error.
    fn settle(&self, store: &dyn Store, account: &str, seen: u64) {
        match self.join_fill(account, seen) {
            Fill::Ready => {}
            Fill::Wait(read) => read.wait_blocking(FILL_WAIT),
            Fill::Lead(read) => {
                if self.fill(store, account, seen).is_ok() {
                    read.done();
                }
            }
        }
    }
}

/// How many account states a poll that finds nothing cached joins the
/// read of before it reads the store itself.
const SETTLE_TRIES: usize = 3;

/// How long a poll waits for the request of its herd that reads the new
/// state before it reads the store itself.
pub const FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl AccountRules {
    /// The resolved rules of `groups` in this account state; `load` gives
    /// the snapshot when no request has read it yet.
    fn rules(
        &self,
        seen: u64,
        groups: &[String],
        load: impl FnOnce() -> Result<Arc<Snapshot>, ApiError>,
    ) -> Result<Arc<Rules>, ApiError> {
        if let Some(r) = locked(&self.by_groups).get(groups) {
            self.seen_at(seen);
            return Ok(r.clone());
        }
        let snapshot = self.snapshot(seen, load)?;
        let ids = groups
            .iter()
            .map(|g| SecurityGroupId::parse_field("SecurityGroupIds", g))
            .collect::<Result<Vec<_>, _>>()?;
        let palisade_policy::Ruleset {
            ingress, egress, ..
        } = palisade_policy::resolve(&snapshot.catalog, &ids)
            .map_err(|e| ApiError::internal(format!("resolving {groups:?}: {e}")))?;
        let digest = {
            use sha2::{Digest, Sha256};
            let text = serde_json::to_vec(&(&ingress, &egress))
                .map_err(|e| ApiError::internal(format!("serialising rules: {e}")))?;
            Sha256::digest(&text).into()
        };
        let rules = Arc::new(Rules {
            ingress,
            egress,
            digest,
        });
        locked(&self.by_groups).insert(groups.to_vec(), rules.clone());
        Ok(rules)
    }

    /// Records that watcher value `seen`, read before a transaction that
    /// found this revision, shows this state.
    fn seen_at(&self, seen: u64) {
        if seen >= self.revision {
            self.current_at
                .fetch_max(seen, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// This state's snapshot; `load` reads it when no request has.
    fn snapshot(
        &self,
        seen: u64,
        load: impl FnOnce() -> Result<Arc<Snapshot>, ApiError>,
    ) -> Result<Arc<Snapshot>, ApiError> {
        self.seen_at(seen);
        let mut slot = locked(&self.snapshot);
        match &*slot {
            Some(s) => Ok(s.clone()),
            None => {
                let s = load()?;
                *slot = Some(s.clone());
                Ok(s)
            }
        }
    }

    fn new(revision: u64) -> Self {
        Self {
            revision,
            current_at: std::sync::atomic::AtomicU64::new(revision),
            snapshot: Mutex::new(None),
            by_groups: Mutex::new(HashMap::new()),
        }
    }
}

/// Everything resolution may look up, read from one store snapshot of an
/// account: the account's objects in `policy`'s one catalog.
#[derive(Default)]
struct Snapshot {
    /// Each instance's ordered groups and its addresses, by id.
    instances: HashMap<String, (Vec<String>, Vec<String>)>,
    /// The instances in audit mode.
    audit: std::collections::HashSet<String>,
    catalog: FleetIndex,
}

impl Snapshot {
    fn enforcement(&self, instance: &str) -> Enforcement {
        if self.audit.contains(instance) {
            Enforcement::Audit
        } else {
            Enforcement::Enforce
        }
    }

    /// Every stored value is parsed again; one that does not parse is
    /// `Corrupt` (an `InternalError`), never skipped: skipping a member
    /// address of a group that a DROP rule references would fail open.
    fn load(tx: &dyn Tx, account: &str) -> Result<Self, ApiError> {
        let corrupt = corrupt(account);
        let mut fleet = Fleet::default();
        for g in tx.groups(account)? {
            let policies = PolicySet {
                version: Some(g.version),
                ingress: rules_of(&g, Direction::Ingress)?,
                egress: rules_of(&g, Direction::Egress)?,
            };
            fleet.security_groups.push(SecurityGroup {
                id: SecurityGroupId::parse_field("SecurityGroupId", &g.id).map_err(corrupt)?,
                name: g.name,
                description: g.description,
                policies,
            });
        }
        let mut instances = HashMap::new();
        for i in tx.instances(account)? {
            let private_ips = i
                .private_ips
                .iter()
                .map(|ip| {
                    ip.parse().map_err(|_| {
                        corrupt(palisade_model::ModelError::malformed(
                            "PrivateIpAddresses",
                            ip,
                            format_args!("of instance {}", i.id),
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            fleet.instances.push(Instance {
                id: InstanceId::parse_field("InstanceId", &i.id).map_err(corrupt)?,
                name: i.name,
                private_ips,
                security_groups: parsed(&i.security_group_ids, |v| {
                    SecurityGroupId::parse_field("SecurityGroupIds", v)
                })
                .map_err(corrupt)?,
            });
            instances.insert(i.id, (i.security_group_ids, i.private_ips));
        }
        load_templates(tx, account, &mut fleet)?;
        let audit = tx
            .enforcements(account)?
            .into_iter()
            .filter(|(_, m)| *m == Enforcement::Audit)
            .map(|(id, _)| id)
            .collect();
        Ok(Snapshot {
            instances,
            audit,
            catalog: FleetIndex::from(fleet),
        })
    }
}

/// The templates of `account` as `policy`'s catalog: what the
/// expanded-policies action expands with.
pub(super) fn template_catalog(tx: &dyn Tx, account: &str) -> Result<FleetIndex, ApiError> {
    let mut fleet = Fleet::default();
    load_templates(tx, account, &mut fleet)?;
    Ok(FleetIndex::from(fleet))
}

/// Reads the four kinds of templates of `account` into `fleet`.
fn load_templates(tx: &dyn Tx, account: &str, fleet: &mut Fleet) -> Result<(), ApiError> {
    let corrupt = corrupt(account);
    for t in tx.templates(account, TemplateKind::Address)? {
        fleet.address_templates.push(AddressTemplate {
            id: AddressTemplateId::parse_field("AddressTemplateId", &t.id).map_err(corrupt)?,
            addresses: parsed(&t.members, |v| AddressEntry::parse_field("Addresses", v))
                .map_err(corrupt)?,
            name: t.name,
        });
    }
    for t in tx.templates(account, TemplateKind::AddressGroup)? {
        fleet.address_template_groups.push(AddressTemplateGroup {
            id: AddressTemplateGroupId::parse_field("AddressTemplateGroupId", &t.id)
                .map_err(corrupt)?,
            templates: parsed(&t.members, |v| {
                AddressTemplateId::parse_field("AddressTemplateIds", v)
            })
            .map_err(corrupt)?,
            name: t.name,
        });
    }
    for t in tx.templates(account, TemplateKind::Service)? {
        fleet.service_templates.push(ServiceTemplate {
            id: ServiceTemplateId::parse_field("ServiceTemplateId", &t.id).map_err(corrupt)?,
            services: parsed(&t.members, |v| ServiceEntry::parse_field("Services", v))
                .map_err(corrupt)?,
            name: t.name,
        });
    }
    for t in tx.templates(account, TemplateKind::ServiceGroup)? {
        fleet.service_template_groups.push(ServiceTemplateGroup {
            id: ServiceTemplateGroupId::parse_field("ServiceTemplateGroupId", &t.id)
                .map_err(corrupt)?,
            templates: parsed(&t.members, |v| {
                ServiceTemplateId::parse_field("ServiceTemplateIds", v)
            })
            .map_err(corrupt)?,
            name: t.name,
        });
    }
    Ok(())
}

/// A stored value of `account` that does not parse: `Corrupt`.
fn corrupt(account: &str) -> impl Fn(palisade_model::ModelError) -> ApiError + Copy + '_ {
    move |e| {
        ApiError::from(palisade_store::StoreError::Corrupt(format!(
            "stored data of account {account} does not parse: {e}"
        )))
    }
}

/// Each stored entry of `list` parsed by `parse` (ids, addresses,
/// services); the first that does not parse is the error.
fn parsed<T>(
    list: &[String],
    parse: impl Fn(&str) -> Result<T, palisade_model::ModelError>,
) -> Result<Vec<T>, palisade_model::ModelError> {
    list.iter().map(|v| parse(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A stored member address that does not parse fails the whole load
    /// (`InternalError`), where it used to be skipped: a DROP rule that
    /// references the group would have let that member through.
    #[test]
    fn a_member_address_that_does_not_parse_is_corrupt_not_skipped() -> Result<(), ApiError> {
        use palisade_store::{InstanceRecord, SqliteStore, Store, StoreExt};
        let store = SqliteStore::open(std::path::Path::new(":memory:"))?;
        let account = store.create_account("a")?.id;
        let instance = |id: &str, ip: &str| InstanceRecord {
            id: id.into(),
            name: "n".into(),
            private_ips: vec![ip.into()],
            created_time: "2026-01-01 00:00:00".into(),
            security_group_ids: vec![],
        };
        store.write(|tx| tx.insert_instance(&account, &instance("ins-00000001", "198.18.0.1")))?;
        assert!(store.read(|tx| Snapshot::load(tx, &account)).is_ok());
        store.write(|tx| tx.insert_instance(&account, &instance("ins-00000002", "198.18.0.x")))?;
        let err = store
            .read(|tx| Snapshot::load(tx, &account))
            .err()
            .expect("a corrupt address fails the load");
        assert_eq!(err.code, "InternalError");
        Ok(())
    }

    fn one_instance() -> Result<Snapshot, ApiError> {
        let mut s = Snapshot::default();
        s.instances.insert(
            "ins-00000001".into(),
            (vec!["sg-00000001".into()], vec!["198.18.0.1".into()]),
        );
        s.catalog = FleetIndex::from(Fleet {
            security_groups: vec![SecurityGroup {
                id: SecurityGroupId::parse_field("t", "sg-00000001")?,
                name: "g".into(),
                description: String::new(),
                policies: PolicySet::default(),
            }],
            ..Fleet::default()
        });
        Ok(s)
    }

    #[test]
    fn cached_answers_only_for_the_state_they_were_read_at() -> Result<(), ApiError> {
        let cache = RulesetCache::default();
        let ips = |hit: Option<CachedAnswer>| hit.map(|h| h.ips);
        let expected = Some(vec!["198.18.0.1".to_string()]);
        assert!(
            cache.cached("acc", 7, "ins-00000001")?.is_none(),
            "nothing read yet"
        );
        // A request saw the watchers at 9 and then read account revision 7:
        // no commit to the account came between, so 7 and 9 show one state.
        let groups = vec!["sg-00000001".to_string()];
        cache.rules("acc", 7, 9, &groups, one_instance)?;
        for seen in [7, 9] {
            assert_eq!(
                ips(cache.cached("acc", seen, "ins-00000001")?),
                expected,
                "at {seen}"
            );
        }
        // Any other watcher value (a later commit) or instance is a miss.
        assert!(cache.cached("acc", 8, "ins-00000001")?.is_none());
        assert!(cache.cached("acc", 10, "ins-00000001")?.is_none());
        assert!(cache.cached("acc", 9, "ins-00000002")?.is_none());
        assert!(cache.cached("other", 9, "ins-00000001")?.is_none());
        // A reader that saw less than it read proves nothing about other
        // values.
        cache.rules("acc2", 7, 5, &groups, one_instance)?;
        assert!(cache.cached("acc2", 7, "ins-00000001")?.is_some());
        assert!(cache.cached("acc2", 5, "ins-00000001")?.is_none());
        Ok(())
    }

    #[test]
    fn a_woken_herd_has_one_reader_and_the_rest_wait_for_it() -> Result<(), ApiError> {
        let cache = RulesetCache::default();
        let groups = vec!["sg-00000001".to_string()];
        let Fill::Lead(first) = cache.join_fill("acc", 9) else {
            panic!("the first of the herd reads");
        };
        let Fill::Wait(waiting) = cache.join_fill("acc", 9) else {
            panic!("the second waits for it");
        };
        assert!(!waiting.ended());
        // The reader fills the cache at 9 and says so.
        cache.rules("acc", 7, 9, &groups, one_instance)?;
        first.done();
        assert!(waiting.ended());
        assert!(matches!(cache.join_fill("acc", 9), Fill::Ready));
        // A later state has a reader of its own; one that gives up (its
        // sender dropped, nothing filled) hands the read to the next.
        let Fill::Lead(second) = cache.join_fill("acc", 11) else {
            panic!("a new state, a new reader");
        };
        assert!(matches!(cache.join_fill("acc", 11), Fill::Wait(_)));
        drop(second);
        assert!(matches!(cache.join_fill("acc", 11), Fill::Lead(_)));
        // Accounts do not wait for each other.
        assert!(matches!(cache.join_fill("other", 11), Fill::Lead(_)));
        Ok(())
    }

    /// A poll that finds nothing cached at its account's state joins the
    /// read of that state: it leads it when no request does (and answers
    /// from the cache it filled), and waits for the request that leads it
    /// otherwise, then answers what that request read.
    #[test]
    fn a_poll_that_finds_nothing_cached_joins_the_read_of_its_state(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::actions::{dispatch, ACTIONS};
        use palisade_store::{SqliteStore, Store};
        use serde_json::Map;
        use std::time::Duration;
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open_dir(dir.path())?;
        let account = store.create_account("a")?.id;
        let (cache, limits) = (RulesetCache::default(), palisade_model::Limits::default());
        let ctx = Ctx {
            store: &store,
            account: &account,
            limits: &limits,
            rulesets: &cache,
            agent_of: None,
        };
        let call = |action: &str, params: Value| -> Result<Map<String, Value>, ApiError> {
            let service = ACTIONS
                .iter()
                .find(|(_, a)| *a == action)
                .map_or("", |(s, _)| *s);
            dispatch(
                &ctx,
                service,
                action,
                &Params::from_body(params.to_string().as_bytes())?,
            )
        };
        let rule = |port: u16| {
            json!({"Ingress": [{"Protocol": "TCP", "Port": port.to_string(),
                                                   "CidrBlock": "198.18.0.0/15", "Action": "ACCEPT"}]})
        };
        let group = call(
            "CreateSecurityGroupWithPolicies",
            json!({"GroupName": "g",
            "GroupDescription": "d", "SecurityGroupPolicySet": rule(22)}),
        )?["SecurityGroup"]["SecurityGroupId"]
            .clone();
        let ins = call(
            "RegisterInstances",
            json!({"Instances": [{"PrivateIpAddresses": ["198.18.0.1"]}]}),
        )?["InstanceIdSet"][0]
            .clone();
        call(
            "AssociateSecurityGroups",
            json!({"SecurityGroupIds": [group], "InstanceIds": [ins]}),
        )?;
        let seen = || *store.watch_account(&account).borrow();
        let port =
            |answer: &Map<String, Value>| answer["Ruleset"]["Ingress"][0]["policy"]["Port"].clone();
        let poll = json!({"InstanceId": ins, "AfterRevision": 0});

        // Nothing cached and nobody reading: the poll reads, into the cache.
        assert!(cache.current(&account, seen()).is_none());
        assert_eq!(port(&call("DescribeInstanceRuleset", poll.clone())?), "22");
        assert!(cache.current(&account, seen()).is_some());

        // A write; another request leads the read of the new state. The
        // poll waits for it.
        call(
            "ModifySecurityGroupPolicies",
            json!({"SecurityGroupId": group,
            "SecurityGroupPolicySet": rule(443)}),
        )?;
        let at = seen();
        let Fill::Lead(lead) = cache.join_fill(&account, at) else {
            panic!("nobody reads the new state yet");
        };
        std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
            let waiting = s.spawn(|| call("DescribeInstanceRuleset", poll.clone()));
            std::thread::sleep(Duration::from_millis(300));
            assert!(!waiting.is_finished(), "the poll waits for the read");
            cache.fill(&store, &account, at)?;
            lead.done();
            let answer = waiting.join().map_err(|_| "the poll panicked")??;
            assert_eq!(port(&answer), "443");
            assert_eq!(answer["Ruleset"]["Revision"], json!(at));
            Ok(())
        })?;
        Ok(())
    }

    #[test]
    fn unchanged_is_told_from_memory_only() -> Result<(), ApiError> {
        let cache = RulesetCache::default();
        let groups = vec!["sg-00000001".to_string()];
        let ips = vec!["198.18.0.1".to_string()];
        assert_eq!(cache.unchanged("acc", 9, "ins-00000001", "x"), None);
        let rules = cache.rules("acc", 7, 9, &groups, one_instance)?;
        let digest = answer_digest(&rules, &groups, &ips, Enforcement::Enforce);
        assert_eq!(
            cache.unchanged("acc", 9, "ins-00000001", &digest),
            Some(true)
        );
        assert_eq!(
            cache.unchanged("acc", 7, "ins-00000001", &digest),
            Some(true)
        );
        assert_eq!(
            cache.unchanged("acc", 9, "ins-00000001", "0123"),
            Some(false)
        );
        // A later state, another instance: not known without a read.
        assert_eq!(cache.unchanged("acc", 10, "ins-00000001", &digest), None);
        assert_eq!(cache.unchanged("acc", 9, "ins-00000002", &digest), None);
        Ok(())
    }

    /// An account is one network: a private IP held by one instance cannot
    /// be registered to another (in a later call, in the same call, or by
    /// changing an instance's addresses), and an instance may keep or move
    /// its own. Nothing is written by a refused call.
    #[test]
    fn a_private_ip_is_held_by_one_instance_of_an_account() -> Result<(), Box<dyn std::error::Error>>
    {
        use crate::actions::dispatch;
        use palisade_store::{SqliteStore, Store};
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open_dir(dir.path())?;
        let account = store.create_account("a")?.id;
        let other = store.create_account("b")?.id;
        let (cache, limits) = (RulesetCache::default(), palisade_model::Limits::default());
        let register = |account: &str, instances: Value| {
            let ctx = Ctx {
                store: &store,
                account,
                limits: &limits,
                rulesets: &cache,
                agent_of: None,
            };
            let params = json!({ "Instances": instances }).to_string();
            dispatch(
                &ctx,
                "palisade",
                "RegisterInstances",
                &Params::from_body(params.as_bytes())?,
            )
        };
        let refused = |r: Result<_, ApiError>| match r {
            Err(e) => (e.code.as_str().to_string(), e.message),
            Ok(v) => panic!("accepted: {v:?}"),
        };
        register(
            &account,
            json!([{"InstanceId": "ins-00000001", "PrivateIpAddresses": ["10.0.0.1", "fd00::1"]}]),
        )?;
        let (code, msg) = refused(register(
            &account,
            json!([{"InstanceId": "ins-00000002", "PrivateIpAddresses": ["10.0.0.2", "10.0.0.1"]}]),
        ));
        assert_eq!(code, "InvalidParameterValue.Duplicate");
        assert_eq!(
            msg,
            "Instances[0].PrivateIpAddresses: 10.0.0.1 is already held by instance \
             ins-00000001 of this account (an account is one network)"
        );
        // The same address spelled another way is the same address.
        let (_, msg) = refused(register(
            &account,
            json!([{"InstanceId": "ins-00000002", "PrivateIpAddresses": ["fd00:0::1"]}]),
        ));
        assert!(
            msg.contains("fd00::1 is already held by instance ins-00000001"),
            "{msg}"
        );
        // Two new instances of one call.
        let (_, msg) = refused(register(
            &account,
            json!([{"PrivateIpAddresses": ["10.0.0.3"]},
                   {"InstanceId": "ins-00000003", "PrivateIpAddresses": ["10.0.0.3"]}]),
        ));
        assert!(
            msg.starts_with("Instances[1].PrivateIpAddresses: 10.0.0.3"),
            "{msg}"
        );
        let held = store.read(|tx| tx.instances(&account))?;
        assert_eq!(held.len(), 1, "a refused call writes nothing");
        // Re-registering keeps, and moving frees, an instance's own addresses.
        register(
            &account,
            json!([{"InstanceId": "ins-00000001", "PrivateIpAddresses": ["10.0.0.9", "10.0.0.1"]}]),
        )?;
        register(
            &account,
            json!([{"InstanceId": "ins-00000001", "PrivateIpAddresses": ["10.0.0.9"]},
                   {"InstanceId": "ins-00000002", "PrivateIpAddresses": ["10.0.0.1"]}]),
        )?;
        // Another account is another network.
        register(
            &other,
            json!([{"InstanceId": "ins-00000011", "PrivateIpAddresses": ["10.0.0.1"]}]),
        )?;
        Ok(())
    }
}
