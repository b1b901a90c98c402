//! Rule actions on a group's policy set: create (insert at `PolicyIndex` or
//! append), delete (by index or by content), modify (replace both lists;
//! `Version: "0"` clears them), replace single rules, and describe (plain or
//! with templates expanded). Every write checks `Version` when given, inside
//! its transaction, and bumps it.

use super::{load_group, now, parse_rules, reply, rules_of, set_rules, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{Filter, Params};
use palisade_model::policy::{parse_version, Direction, Peer, Policy, PolicySet, Service};
use palisade_model::wire;
use palisade_model::ErrorCode;
use palisade_model::SecurityGroupId;
use palisade_policy::{expand_templates, FleetIndex, RuleOrigin};
use palisade_store::{GroupRecord, StoreError, Tx};
use serde_json::json;
use std::collections::HashSet;

fn policy_set(p: &Params, field: &str) -> Result<wire::SecurityGroupPolicySet, ApiError> {
    p.opt_policy_set(field)?
        .ok_or_else(|| ApiError::missing(field))
}

fn check_version(set: &wire::SecurityGroupPolicySet, g: &GroupRecord) -> Result<(), ApiError> {
    if let Some(v) = &set.version {
        let v = parse_version("SecurityGroupPolicySet.Version", v)?;
        if v != g.version {
            return Err(ApiError::new(
                ErrorCode::UnsupportedOperationVersionMismatch,
                format!(
                    "SecurityGroupPolicySet.Version {v}: the current version of {} is {}",
                    g.id, g.version
                ),
            ));
        }
    }
    Ok(())
}

/// The one direction a create/delete/replace call is about.
fn one_direction(
    set: &wire::SecurityGroupPolicySet,
) -> Result<(Direction, &Vec<wire::SecurityGroupPolicy>), ApiError> {
    let ingress = set.ingress.as_ref().filter(|l| !l.is_empty());
    let egress = set.egress.as_ref().filter(|l| !l.is_empty());
    match (ingress, egress) {
        (Some(i), None) => Ok((Direction::Ingress, i)),
        (None, Some(e)) => Ok((Direction::Egress, e)),
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::InvalidParameterCoexist,
            "SecurityGroupPolicySet: Ingress and Egress exclude each other in this action; send one direction per call",
        )),
        (None, None) => Err(ApiError::new(
            ErrorCode::MissingParameter,
            "SecurityGroupPolicySet: give the rules in Ingress or Egress",
        )),
    }
}

fn lists(g: &GroupRecord) -> Result<(Vec<Policy>, Vec<Policy>), ApiError> {
    Ok((
        rules_of(g, Direction::Ingress)?,
        rules_of(g, Direction::Egress)?,
    ))
}

fn save(
    ctx: &Ctx<'_>,
    tx: &mut dyn Tx,
    mut g: GroupRecord,
    ingress: &[Policy],
    egress: &[Policy],
) -> Result<(), ApiError> {
    set_rules(tx, ctx, &mut g, ingress, egress)?;
    g.version += 1;
    g.update_time = now();
    tx.update_group(ctx.account, &g)?;
    Ok(())
}

fn dir_mut<'a>(
    dir: Direction,
    ingress: &'a mut Vec<Policy>,
    egress: &'a mut Vec<Policy>,
) -> &'a mut Vec<Policy> {
    match dir {
        Direction::Ingress => ingress,
        Direction::Egress => egress,
    }
}

fn index_of(i: i64, field: &str) -> Result<usize, ApiError> {
    usize::try_from(i).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidParameterValueRange,
            format!("{field} {i}: must not be negative"),
        )
    })
}

/// `CreateSecurityGroupPolicies`.
pub fn create(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId", "SecurityGroupPolicySet"])?;
    let id = p.req_str("SecurityGroupId")?;
    let set = policy_set(p, "SecurityGroupPolicySet")?;
    let (dir, wire_list) = one_direction(&set)?;
    let new_rules = parse_rules(Some(wire_list), dir)?;
    let mut indexes: Vec<Option<i64>> = wire_list.iter().map(|w| w.policy_index).collect();
    indexes.dedup();
    if indexes.len() > 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "SecurityGroupPolicySet: every rule of one call must carry the same PolicyIndex (or none)",
        ));
    }
    let at = indexes.first().copied().flatten();
    // Duplicates among the new rules are found before the transaction, and
    // against the group's rules inside it, by hashing: linear in the rules.
    let duplicate = |n: usize, rule: &Policy| {
        ApiError::new(
            ErrorCode::UnsupportedOperationDuplicatePolicy,
            format!(
                "SecurityGroupPolicySet.{}.{n}: the same rule ({rule}) is already in the group",
                dir.wire_name()
            ),
        )
    };
    let mut seen = HashSet::with_capacity(new_rules.len());
    for (n, rule) in new_rules.iter().enumerate() {
        if !seen.insert(rule_key(rule)) {
            return Err(duplicate(n, rule));
        }
    }
    ctx.write(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        check_version(&set, &g)?;
        let (mut ingress, mut egress) = lists(&g)?;
        let list = dir_mut(dir, &mut ingress, &mut egress);
        let total = list.len() + new_rules.len();
        if total > ctx.limits.rules_per_direction {
            return Err(ApiError::new(
                ErrorCode::LimitExceededSecurityGroupPolicySet,
                format!(
                    "{}: {total} rules, the limit is {} per direction",
                    dir.wire_name(),
                    ctx.limits.rules_per_direction
                ),
            ));
        }
        let held: HashSet<_> = list.iter().map(rule_key).collect();
        if let Some((n, rule)) = new_rules
            .iter()
            .enumerate()
            .find(|(_, r)| held.contains(&rule_key(r)))
        {
            return Err(duplicate(n, rule));
        }
        let pos = match at {
            None => list.len(),
            Some(i) => {
                let i = index_of(i, "PolicyIndex")?;
                if i > list.len() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameterValueRange,
                        format!(
                            "PolicyIndex {i}: the {} list has {} rules, so the index must be 0..={}",
                            dir.wire_name(),
                            list.len(),
                            list.len()
                        ),
                    ));
                }
                i
            }
        };
        list.splice(pos..pos, new_rules.iter().cloned());
        save(ctx, tx, g, &ingress, &egress)
    })?;
    reply(json!({}))
}

/// What makes two rules the same rule (their descriptions aside).
fn rule_key(r: &Policy) -> (&Service, &Peer, &palisade_model::policy::Action) {
    (&r.service, &r.peer, &r.action)
}

fn has_content(w: &wire::SecurityGroupPolicy) -> bool {
    let empty_template = |s: &Option<wire::ServiceTemplateSpecification>| {
        s.as_ref()
            .is_none_or(|t| t.service_id.trim().is_empty() && t.service_group_id.trim().is_empty())
    };
    let empty_address = |s: &Option<wire::AddressTemplateSpecification>| {
        s.as_ref()
            .is_none_or(|t| t.address_id.trim().is_empty() && t.address_group_id.trim().is_empty())
    };
    w.protocol.is_some()
        || w.port.is_some()
        || !empty_template(&w.service_template)
        || w.cidr_block.is_some()
        || w.ipv6_cidr_block.is_some()
        || w.security_group_id.is_some()
        || !empty_address(&w.address_template)
        || w.action.is_some()
}

/// `DeleteSecurityGroupPolicies`: by `PolicyIndex` list or by rule content.
pub fn delete(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId", "SecurityGroupPolicySet"])?;
    let id = p.req_str("SecurityGroupId")?;
    let set = policy_set(p, "SecurityGroupPolicySet")?;
    let (dir, wire_list) = one_direction(&set)?;
    let by_index = wire_list
        .iter()
        .filter(|w| w.policy_index.is_some())
        .count();
    let by_content = wire_list.iter().filter(|w| has_content(w)).count();
    if by_index > 0 && by_content > 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterCoexist,
            "SecurityGroupPolicySet: delete by PolicyIndex or by rule content, not both",
        ));
    }
    if by_index == 0 && by_content < wire_list.len() {
        return Err(ApiError::new(
            ErrorCode::MissingParameter,
            "SecurityGroupPolicySet: each rule to delete needs a PolicyIndex or its content",
        ));
    }
    let targets: Option<Vec<Policy>> = if by_index > 0 {
        None
    } else {
        Some(parse_rules(Some(wire_list), dir)?)
    };
    ctx.write(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        check_version(&set, &g)?;
        let (mut ingress, mut egress) = lists(&g)?;
        let list = dir_mut(dir, &mut ingress, &mut egress);
        let mut remove: HashSet<usize> = HashSet::new();
        match &targets {
            None => {
                for w in wire_list {
                    let i = index_of(w.policy_index.unwrap_or(-1), "PolicyIndex")?;
                    if i >= list.len() {
                        return Err(ApiError::new(
                            ErrorCode::ResourceNotFound,
                            format!(
                                "PolicyIndex {i}: the {} list has {} rules",
                                dir.wire_name(),
                                list.len()
                            ),
                        ));
                    }
                    if !remove.insert(i) {
                        return Err(ApiError::new(
                            ErrorCode::InvalidParameterValueDuplicate,
                            format!("PolicyIndex {i} is given twice"),
                        ));
                    }
                }
            }
            Some(targets) => {
                for (n, t) in targets.iter().enumerate() {
                    let found = list.iter().enumerate().position(|(i, r)| {
                        !remove.contains(&i)
                            && r.service == t.service
                            && r.peer == t.peer
                            && r.action == t.action
                            && (t.description.is_empty() || r.description == t.description)
                    });
                    match found {
                        Some(i) => {
                            remove.insert(i);
                        }
                        None => {
                            return Err(ApiError::new(
                                ErrorCode::ResourceNotFound,
                                format!(
                                    "SecurityGroupPolicySet.{}.{n}: no rule {t} in the group",
                                    dir.wire_name()
                                ),
                            ))
                        }
                    }
                }
            }
        }
        let mut i = 0;
        list.retain(|_| {
            let keep = !remove.contains(&i);
            i += 1;
            keep
        });
        save(ctx, tx, g, &ingress, &egress)
    })?;
    reply(json!({}))
}

/// `ModifySecurityGroupPolicies`: replaces both lists. `Version: "0"` clears
/// every rule (Egress and Ingress are then ignored); any other `Version` must
/// be the current one.
pub fn modify(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId", "SecurityGroupPolicySet", "SortPolicys"])?;
    let id = p.req_str("SecurityGroupId")?;
    let set = policy_set(p, "SecurityGroupPolicySet")?;
    p.opt_bool("SortPolicys")?;
    let clear = match &set.version {
        Some(v) => parse_version("SecurityGroupPolicySet.Version", v)? == 0,
        None => false,
    };
    let (ingress, egress) = if clear {
        (Vec::new(), Vec::new())
    } else {
        (
            parse_rules(set.ingress.as_ref(), Direction::Ingress)?,
            parse_rules(set.egress.as_ref(), Direction::Egress)?,
        )
    };
    ctx.write(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        if !clear {
            check_version(&set, &g)?;
        }
        save(ctx, tx, g, &ingress, &egress)
    })?;
    reply(json!({}))
}

/// `ReplaceSecurityGroupPolicy` (one rule) and `ReplaceSecurityGroupPolicies`.
pub fn replace(ctx: &Ctx<'_>, p: &Params, many: bool) -> Reply {
    let mut known = vec![
        "SecurityGroupId",
        "SecurityGroupPolicySet",
        "OriginalSecurityGroupPolicySet",
    ];
    if many {
        known.push("UpdateType");
    }
    p.allow_only(&known)?;
    let id = p.req_str("SecurityGroupId")?;
    let set = policy_set(p, "SecurityGroupPolicySet")?;
    let original: Option<wire::SecurityGroupPolicySet> =
        p.opt_policy_set("OriginalSecurityGroupPolicySet")?;
    if many {
        match p.opt_str("UpdateType")?.as_deref() {
            None | Some("Policy") | Some("Priority") | Some("Both") => {}
            Some(other) => {
                return Err(ApiError::malformed(
                    "UpdateType",
                    other,
                    "expected Policy, Priority or Both",
                ))
            }
        }
    }
    let (dir, wire_list) = one_direction(&set)?;
    if !many && wire_list.len() != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            "SecurityGroupPolicySet: ReplaceSecurityGroupPolicy replaces exactly one rule",
        ));
    }
    let new_rules = parse_rules(Some(wire_list), dir)?;
    let mut at = Vec::new();
    let mut seen = HashSet::new();
    for w in wire_list {
        let i = w
            .policy_index
            .ok_or_else(|| ApiError::missing("SecurityGroupPolicySet.PolicyIndex"))?;
        let index = index_of(i, "PolicyIndex")?;
        if !seen.insert(index) {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueDuplicate,
                format!(
                    "SecurityGroupPolicySet.PolicyIndex {i}: named twice; replace each rule once"
                ),
            ));
        }
        at.push(index);
    }
    let originals: Option<Vec<Policy>> = match &original {
        None => None,
        Some(o) => {
            let (odir, olist) = one_direction(o)?;
            if odir != dir || olist.len() != wire_list.len() {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    "OriginalSecurityGroupPolicySet must list one original rule per replaced rule, same direction",
                ));
            }
            Some(parse_rules(Some(olist), dir)?)
        }
    };
    ctx.write(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        check_version(&set, &g)?;
        let (mut ingress, mut egress) = lists(&g)?;
        let list = dir_mut(dir, &mut ingress, &mut egress);
        for (n, (&i, rule)) in at.iter().zip(&new_rules).enumerate() {
            let Some(slot) = list.get_mut(i) else {
                return Err(ApiError::new(
                    ErrorCode::ResourceNotFound,
                    format!("PolicyIndex {i}: the {} list has no such rule", dir.wire_name()),
                ));
            };
            if let Some(orig) = originals.as_ref().and_then(|o| o.get(n)) {
                if !(slot.service == orig.service && slot.peer == orig.peer && slot.action == orig.action) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameterValue,
                        format!("OriginalSecurityGroupPolicySet: the rule at PolicyIndex {i} is {slot}, not {orig}"),
                    ));
                }
            }
            *slot = rule.clone();
        }
        save(ctx, tx, g, &ingress, &egress)
    })?;
    reply(json!({}))
}

/// `DescribeSecurityGroupPolicies` and `DescribeSecurityGroupExpandedPolicies`.
pub fn describe(ctx: &Ctx<'_>, p: &Params, expanded: bool) -> Reply {
    let set = describe_set(ctx, p, expanded)?;
    let out = serde_json::to_value(set).map_err(ApiError::internal)?;
    reply(json!({ "SecurityGroupPolicySet": out }))
}

/// The `SecurityGroupPolicySet` that [`describe`] answers.
pub(super) fn describe_set(
    ctx: &Ctx<'_>,
    p: &Params,
    expanded: bool,
) -> Result<wire::SecurityGroupPolicySet, ApiError> {
    p.allow_only(&["SecurityGroupId", "Filters"])?;
    let id = p.req_str("SecurityGroupId")?;
    let filters = p.filters(&[
        "security-group-id",
        "ip",
        "address-module",
        "service-module",
        "protocol-type",
        "port",
        "poly",
        "direction",
        "description",
    ])?;
    let (set, catalog) = if expanded {
        ctx.read(|tx| {
            let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
            let set = PolicySet {
                version: Some(g.version),
                ingress: rules_of(&g, Direction::Ingress)?,
                egress: rules_of(&g, Direction::Egress)?,
            };
            Ok::<_, ApiError>((
                set,
                Some(super::palisade::template_catalog(tx, ctx.account)?),
            ))
        })?
    } else {
        // The policy set alone, in one statement, its rules decoded from
        // the stored text straight into the model (no snapshot needed, no
        // JSON tree built): the common describe.
        super::parse_group_id("SecurityGroupId", &id)?;
        let stored = ctx
            .store
            .group_policies(ctx.account, &id)?
            .ok_or_else(|| ApiError::not_found("SecurityGroupId", &id))?;
        let set = PolicySet {
            version: Some(stored.version),
            ingress: super::decode_stored_rules(&stored.ingress)?,
            egress: super::decode_stored_rules(&stored.egress)?,
        };
        (set, None)
    };
    expand_and_filter(&id, &set, catalog.as_ref(), &filters)
}

/// The wire form of `set`, of group `id`, each rule expanded by `catalog`
/// when given and kept only if it passes every filter.
fn expand_and_filter(
    id: &str,
    set: &PolicySet,
    catalog: Option<&FleetIndex>,
    filters: &[Filter],
) -> Result<wire::SecurityGroupPolicySet, ApiError> {
    let mut wire = set.to_wire();
    if catalog.is_some() || !filters.is_empty() {
        let group = SecurityGroupId::parse_field("SecurityGroupId", id)?;
        for dir in Direction::BOTH {
            let mut out = Vec::new();
            for (index, rule) in set.rules(dir).iter().enumerate() {
                let variants = match catalog {
                    Some(catalog) => {
                        let origin = RuleOrigin {
                            security_group_id: group.clone(),
                            direction: dir,
                            policy_index: index,
                        };
                        expand_templates(catalog, &origin, rule).map_err(|e| {
                            // The store keeps references whole (a
                            // referenced template cannot be deleted): a
                            // missing one is corrupt data, never an empty
                            // list that would hide what the rule says.
                            ApiError::from(StoreError::Corrupt(e.to_string()))
                        })?
                    }
                    None => vec![rule.clone()],
                };
                out.extend(
                    variants
                        .iter()
                        .filter(|r| {
                            filters
                                .iter()
                                .all(|f| f.values.iter().any(|v| matches(&f.name, v, dir, r)))
                        })
                        .map(|r| r.to_wire(index)),
                );
            }
            match dir {
                Direction::Ingress => wire.ingress = Some(out),
                Direction::Egress => wire.egress = Some(out),
            }
        }
    }
    Ok(wire)
}

fn matches(filter: &str, value: &str, dir: Direction, r: &Policy) -> bool {
    let w = r.to_wire(0);
    let eq = |a: &Option<String>| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(value));
    match filter {
        "security-group-id" => eq(&w.security_group_id),
        "ip" => match &r.peer {
            Peer::Cidr(c) | Peer::Ipv6Cidr(c) => {
                c.to_string() == value
                    || value
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| c.contains(ip))
            }
            _ => false,
        },
        "address-module" => w
            .address_template
            .as_ref()
            .is_some_and(|t| t.address_id == value || t.address_group_id == value),
        "service-module" => w
            .service_template
            .as_ref()
            .is_some_and(|t| t.service_id == value || t.service_group_id == value),
        "protocol-type" => eq(&w.protocol),
        "port" => match &r.service {
            Service::Protocol { protocol, ports } => {
                eq(&w.port)
                    || (protocol.has_ports()
                        && value.parse::<u16>().is_ok_and(|n| ports.contains(n)))
            }
            _ => false,
        },
        "poly" => eq(&w.action),
        "direction" => matches!(
            (dir, value.to_ascii_lowercase().as_str()),
            (Direction::Ingress, "ingress" | "inbound")
                | (Direction::Egress, "egress" | "outbound")
        ),
        "description" => r.description.contains(value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_store::{SqliteStore, Store, StoreExt, TemplateKind};

    /// A rule whose template the store does not hold expands to an
    /// `InternalError` (corrupt data), not to an empty list that would hide
    /// what the rule says; a held template expands to its addresses.
    #[test]
    fn expanding_a_missing_template_is_corrupt_not_empty() -> Result<(), ApiError> {
        let store = SqliteStore::open(std::path::Path::new(":memory:"))?;
        let account = store.create_account("a")?.id;
        let rule = |id: &str| -> Result<Policy, ApiError> {
            let w: palisade_model::wire::SecurityGroupPolicy = serde_json::from_value(json!({
                "Protocol": "TCP", "Port": "22", "AddressTemplate": {"AddressId": id}, "Action": "ACCEPT"
            }))
            .map_err(ApiError::internal)?;
            Ok(Policy::from_wire(&w)?)
        };
        let expand = |rule: &Policy| {
            let origin = RuleOrigin {
                security_group_id: SecurityGroupId::parse_field("t", "sg-00000001")?,
                direction: Direction::Ingress,
                policy_index: 0,
            };
            let catalog =
                store.read(|tx| super::super::palisade::template_catalog(tx, &account))?;
            expand_templates(&catalog, &origin, rule)
                .map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))
        };
        let missing = rule("ipm-missing1")?;
        let err = expand(&missing).expect_err("a missing template is an error");
        assert_eq!(err.code, "InternalError");
        store.write(|tx| {
            tx.insert_template(
                &account,
                &palisade_store::TemplateRecord {
                    id: "ipm-present1".into(),
                    kind: TemplateKind::Address,
                    name: "t".into(),
                    members: vec!["192.0.2.0/25".into(), "2001:db8::1".into()],
                    extra: json!(null),
                    tags: vec![],
                    created_time: "2026-01-01 00:00:00".into(),
                    updated_time: "2026-01-01 00:00:00".into(),
                },
            )
        })?;
        let present = rule("ipm-present1")?;
        let rules = expand(&present)?;
        let peers: Vec<String> = rules.iter().map(|r| r.peer.to_string()).collect();
        assert_eq!(peers, ["192.0.2.0/25", "2001:db8::1/128"]);
        Ok(())
    }
}
