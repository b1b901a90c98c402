//! The kept versions of a group's policy set and going back to one
//! (docs/api.md, "History and rollback"): `DescribeSecurityGroupHistory`
//! lists them, `RollbackSecurityGroup` writes an old version's rules as a
//! new version. The store records every version as it is written and keeps
//! the newest `--history-limit` of them; a rollback, a snapshot resume and
//! a commit-confirmed revert are ordinary changes made through [`restore`]:
//! the rules are validated again (a template deleted since is
//! `ResourceNotFound`, never a rule quietly widened) and the `Version` goes
//! up by one.

use super::{decode_rule, load_group, now, reply, set_rules, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{paginate, Params};
use palisade_model::policy::{parse_version, Policy, PolicySet};
use palisade_model::ErrorCode;
use palisade_store::{GroupRecord, GroupVersion, RuleRecord, Tx};
use serde_json::{json, Value};

/// `DescribeSecurityGroupHistory`: the kept versions, newest first.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId", "Offset", "Limit"])?;
    let id = p.req_str("SecurityGroupId")?;
    let (offset, limit) = p.page(100)?;
    let (current, versions) = ctx.read(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        Ok((g.version, versions(tx, ctx.account, &g)?))
    })?;
    let total = versions.len();
    let set = versions
        .iter()
        .rev()
        .map(|v| version_json(v, current))
        .collect::<Result<Vec<_>, _>>()?;
    reply(json!({
        "SecurityGroupId": id,
        "Version": current.to_string(),
        "HistorySet": paginate(set, offset, limit),
        "TotalCount": total,
    }))
}

/// `RollbackSecurityGroup`: the rules of `ToVersion` become a new version.
/// `Version`, when given, must be the current one (as for any rule write).
pub fn rollback(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId", "ToVersion", "Version"])?;
    let id = p.req_str("SecurityGroupId")?;
    let to = parse_version("ToVersion", &p.req_str("ToVersion")?)?;
    let expect = p
        .opt_str("Version")?
        .map(|v| parse_version("Version", &v))
        .transpose()?;
    let new = ctx.write(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        if let Some(v) = expect.filter(|v| *v != g.version) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedOperationVersionMismatch,
                format!("Version {v}: the current version of {id} is {}", g.version),
            ));
        }
        let old = versions(tx, ctx.account, &g)?
            .into_iter()
            .find(|v| v.version == to)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ResourceNotFound,
                    format!("ToVersion {to}: {id} keeps no such version (see DescribeSecurityGroupHistory)"),
                )
            })?;
        restore(ctx, tx, g, &old.ingress, &old.egress)
    })?;
    reply(json!({
        "SecurityGroupId": id,
        "Version": new.to_string(),
        "RestoredVersion": to.to_string(),
    }))
}

/// Writes `ingress` and `egress` (stored rules of an earlier version) as
/// `g`'s rules, validated as any write is, with the next `Version`;
/// returns that version.
pub(super) fn restore(
    ctx: &Ctx<'_>,
    tx: &mut dyn Tx,
    mut g: GroupRecord,
    ingress: &[RuleRecord],
    egress: &[RuleRecord],
) -> Result<u64, ApiError> {
    let ingress: Vec<Policy> = ingress.iter().map(decode_rule).collect::<Result<_, _>>()?;
    let egress: Vec<Policy> = egress.iter().map(decode_rule).collect::<Result<_, _>>()?;
    set_rules(tx, ctx, &mut g, &ingress, &egress)?;
    g.version += 1;
    g.update_time = now();
    tx.update_group(ctx.account, &g)?;
    Ok(g.version)
}

/// The kept versions of `g`, oldest first, ending with the current one (a
/// group last written before history was kept has only that).
pub(super) fn versions(
    tx: &dyn Tx,
    account: &str,
    g: &GroupRecord,
) -> Result<Vec<GroupVersion>, ApiError> {
    let mut list = tx.group_history(account, &g.id)?;
    if list.last().map(|v| v.version) != Some(g.version) {
        list.retain(|v| v.version < g.version);
        list.push(GroupVersion {
            version: g.version,
            ingress: g.ingress.clone(),
            egress: g.egress.clone(),
            recorded_time: g.update_time.clone(),
        });
    }
    Ok(list)
}

/// The wire `SecurityGroupPolicySet` of stored rules at `version`.
pub(super) fn policy_set_json(
    version: u64,
    ingress: &[RuleRecord],
    egress: &[RuleRecord],
) -> Result<Value, ApiError> {
    let set = PolicySet {
        version: Some(version),
        ingress: ingress.iter().map(decode_rule).collect::<Result<_, _>>()?,
        egress: egress.iter().map(decode_rule).collect::<Result<_, _>>()?,
    };
    serde_json::to_value(set.to_wire()).map_err(ApiError::internal)
}

fn version_json(v: &GroupVersion, current: u64) -> Result<Value, ApiError> {
    Ok(json!({
        "Version": v.version.to_string(),
        "RecordedTime": v.recorded_time,
        "IsCurrent": v.version == current,
        "SecurityGroupPolicySet": policy_set_json(v.version, &v.ingress, &v.egress)?,
    }))
}
