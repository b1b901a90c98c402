//! Flow records and audit mode in Palisade's own service (DESIGN.md section
//! 8, "Observe" and "Preview"; issue 18):
//!
//! - `ReportFlowRecords`: an agent ships its node's records in batches;
//!   an agent credential may report only for its own instance, and a batch
//!   is checked whole before anything is stored (one bad record stores
//!   nothing).
//! - `DescribeFlowRecords`: the account's records, filtered and paged,
//!   newest first.
//! - `ModifyInstanceEnforcement`: `ENFORCE` or `AUDIT` for an instance; a
//!   change like any other (agents are woken and recompile atomically).
//!
//! Records are kept for a retention period and up to a cap per account
//! ([`FlowRetention`]), the oldest going first, counted in the metrics.

use super::cvm::check_instance_id;
use super::{reply, Ctx, Reply};
use crate::error::ApiError;
use crate::params::Params;
use palisade_model::flow::{Enforcement, FlowFilter, FlowRecord, Verdict};
use palisade_model::{Cidr, Direction, ErrorCode, InstanceId, SecurityGroupId};
use palisade_protocol::service::{
    InstanceHitCoverage, RuleCounter, RuleHit, RuleHitsAnswer, RuleHitsRequest, HIT_COVERAGE_GAP,
};
use palisade_store::{RuleCount, Store, StoreError, StoreExt};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most records one report may carry (the agent sends fewer).
pub const MAX_REPORTED: usize = 10_000;
/// The most records one `DescribeFlowRecords` answers.
pub const MAX_LIMIT: u64 = 1_000;
/// The most instance ids one `DescribeFlowRecords` filters on.
pub const MAX_INSTANCE_IDS: usize = 100;

/// How long records are kept and how many per account, at most.
#[derive(Debug, Clone, Copy)]
pub struct FlowRetention {
    /// Records that ended longer ago than this go.
    pub max_age: Duration,
    /// Beyond this many records in an account, the oldest go.
    pub max_records: u64,
}

impl Default for FlowRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 86_400),
            max_records: 1_000_000,
        }
    }
}

/// Flow-record counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// Records agents reported and the server stored.
    pub stored: AtomicU64,
    /// Decisions agents reported as suppressed (over their node's rate
    /// limit or their table's room).
    pub suppressed: AtomicU64,
    /// Records deleted by retention.
    pub expired: AtomicU64,
}

/// The process's flow metrics.
pub static METRICS: FlowMetrics = FlowMetrics {
    stored: AtomicU64::new(0),
    suppressed: AtomicU64::new(0),
    expired: AtomicU64::new(0),
};

/// `ReportFlowRecords`: `InstanceId`, `FlowRecords` (each a record as
/// `DescribeFlowRecords` answers it, of that instance), `Suppressed` (how
/// many decisions the node counted but did not record since its last
/// report). Answers `Stored`.
pub fn report(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceId", "FlowRecords", "Suppressed"])?;
    let id = p.req_str("InstanceId")?;
    check_instance_id(&id)?;
    let suppressed = p.opt_uint("Suppressed")?.unwrap_or(0);
    let records: Vec<FlowRecord> = p.req_typed("FlowRecords")?;
    if records.len() > MAX_REPORTED {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!(
                "FlowRecords: {} records, at most {MAX_REPORTED} per report",
                records.len()
            ),
        ));
    }
    for (n, r) in records.iter().enumerate() {
        if r.instance_id.as_str() != id {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValue,
                format!(
                    "FlowRecords.{n}.InstanceId {:?}: a report carries records of its InstanceId {id:?} only",
                    r.instance_id.as_str()
                ),
            ));
        }
        r.check()
            .map_err(|e| ApiError::from(e.within(format_args!("FlowRecords.{n}"))))?;
    }
    let stored = match ctx.store.put_flow_records(ctx.account, &id, &records) {
        Ok(n) => n,
        Err(StoreError::NotFound(_)) => return Err(ApiError::not_found("InstanceId", &id)),
        Err(e) => return Err(e.into()),
    };
    METRICS.stored.fetch_add(stored, Ordering::Relaxed);
    METRICS.suppressed.fetch_add(suppressed, Ordering::Relaxed);
    reply(json!({ "Stored": stored }))
}

/// `DescribeFlowRecords`: filters `InstanceIds`, `SecurityGroupId`,
/// `Direction`, `PolicyIndex`, `Action`, `PeerCidr`, `Port`, `Protocol`
/// (a number), `StartTime` and `EndTime` (Unix seconds: records that
/// overlap the window); paging `Offset`, `Limit` (default 100, at most
/// 1,000). Answers `FlowRecordSet` (newest first, each with its
/// `RecordId`) and `TotalCount`.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[
        "InstanceIds",
        "SecurityGroupId",
        "Direction",
        "PolicyIndex",
        "Action",
        "PeerCidr",
        "Port",
        "Protocol",
        "StartTime",
        "EndTime",
        "Offset",
        "Limit",
    ])?;
    let mut filter = FlowFilter::default();
    if let Some(ids) = p.opt_str_list("InstanceIds")? {
        if ids.len() > MAX_INSTANCE_IDS {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueLimitExceeded,
                format!("InstanceIds: {} ids, at most {MAX_INSTANCE_IDS}", ids.len()),
            ));
        }
        for (n, id) in ids.iter().enumerate() {
            filter
                .instance_ids
                .push(InstanceId::parse_field(&format!("InstanceIds.{n}"), id)?);
        }
    }
    if let Some(g) = p.opt_str("SecurityGroupId")? {
        filter.security_group_id = Some(SecurityGroupId::parse_field("SecurityGroupId", &g)?);
    }
    if let Some(d) = p.opt_str("Direction")? {
        filter.direction = Some(Direction::parse_field("Direction", &d)?);
    }
    if let Some(i) = p.opt_uint("PolicyIndex")? {
        filter.policy_index = Some(u32::try_from(i).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameterValueRange,
                format!("PolicyIndex {i}: out of range"),
            )
        })?);
    }
    if let Some(a) = p.opt_str("Action")? {
        filter.action = Some(Verdict::parse_field("Action", &a)?);
    }
    if let Some(c) = p.opt_str("PeerCidr")? {
        filter.peer = Some(Cidr::parse_any("PeerCidr", &c)?);
    }
    if let Some(port) = p.opt_uint("Port")? {
        filter.port = Some(u16::try_from(port).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameterValueRange,
                format!("Port {port}: not a port (0-65535)"),
            )
        })?);
    }
    if let Some(proto) = p.opt_uint("Protocol")? {
        filter.protocol = Some(u8::try_from(proto).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameterValueRange,
                format!("Protocol {proto}: not a protocol number (0-255)"),
            )
        })?);
    }
    filter.since = p.opt_uint("StartTime")?;
    filter.until = p.opt_uint("EndTime")?;
    let offset = p.opt_uint("Offset")?.unwrap_or(0);
    let limit = p.opt_uint("Limit")?.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueRange,
            format!("Limit {limit}: between 1 and {MAX_LIMIT}"),
        ));
    }
    let (total, page) = ctx
        .store
        .flow_records(ctx.account, &filter, offset, limit)?;
    let mut set = Vec::with_capacity(page.len());
    for (seq, r) in page {
        let mut v = serde_json::to_value(&r).map_err(ApiError::internal)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("RecordId".into(), json!(seq));
        }
        set.push(v);
    }
    reply(json!({ "FlowRecordSet": set, "TotalCount": total }))
}

/// `ModifyInstanceEnforcement`: `InstanceId`, `Enforcement` (`ENFORCE` or
/// `AUDIT`). Agent credentials may not call it.
pub fn modify_enforcement(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceId", "Enforcement"])?;
    let id = p.req_str("InstanceId")?;
    check_instance_id(&id)?;
    let mode = Enforcement::parse_field("Enforcement", &p.req_str("Enforcement")?)?;
    match ctx
        .store
        .write(|tx| tx.set_enforcement(ctx.account, &id, mode))
    {
        Ok(()) => reply(json!({})),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found("InstanceId", &id)),
        Err(e) => Err(e.into()),
    }
}

/// Adds a status report's per-rule counters to the rules' hits: each
/// counter with the digest of the rule now at its position (a counter of a
/// position the group no longer has is left out).
pub fn record_hits(
    ctx: &Ctx<'_>,
    instance: &str,
    counters: &[RuleCounter],
) -> Result<(), ApiError> {
    if counters.is_empty() {
        return Ok(());
    }
    let groups: BTreeSet<&str> = counters
        .iter()
        .map(|c| c.security_group_id.as_str())
        .collect();
    let digests = ctx.read(|tx| {
        let mut out = HashMap::new();
        for g in groups {
            if let Some(rec) = tx.group(ctx.account, g)? {
                for (dir, list) in [("ingress", &rec.ingress), ("egress", &rec.egress)] {
                    for (i, r) in list.iter().enumerate() {
                        out.insert((g.to_string(), dir, i as u64), rule_digest(&r.body));
                    }
                }
            }
        }
        Ok(out)
    })?;
    let counts: Vec<RuleCount> = counters
        .iter()
        .filter_map(|c| {
            let dir = if c.direction.eq_ignore_ascii_case("ingress") {
                "ingress"
            } else {
                "egress"
            };
            let digest = digests.get(&(c.security_group_id.clone(), dir, c.policy_index))?;
            Some(RuleCount {
                group_id: c.security_group_id.clone(),
                direction: dir.to_string(),
                policy_index: u32::try_from(c.policy_index).ok()?,
                digest: digest.clone(),
                packets: c.packets,
            })
        })
        .collect();
    ctx.store
        .record_rule_hits(ctx.account, instance, &counts, unix_now(), HIT_COVERAGE_GAP)?;
    Ok(())
}

/// `DescribeRuleHits`: `SecurityGroupId` -> `RuleHitSet`, one entry per
/// rule of the group in order (`Direction`, `PolicyIndex`, `Hits`, and
/// when known `LastUsed` and `Since`, Unix seconds): the decisions summed
/// over every instance applying the rule since `Since`, kept across
/// revisions while the rule is unchanged. `InstanceCoverageSet` says, for
/// every instance bound to the group, since when its agent has reported
/// counters without a gap (`Since`, absent if never) and its last report
/// (`LastReport`); `Now` is the server's clock. Together they tell whether
/// "no hits since T" is known for every instance applying the rule.
pub fn describe_hits(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId"])?;
    let request = RuleHitsRequest {
        security_group_id: p.req_str("SecurityGroupId")?,
    };
    let id = &request.security_group_id;
    let (group, instances) = ctx.read(|tx| {
        let group = super::load_group(tx, ctx.account, "SecurityGroupId", id)?;
        let instances = tx.group_instances(ctx.account, id)?;
        Ok((group, instances))
    })?;
    let hits = ctx.store.rule_hits(ctx.account, id)?;
    let coverage = ctx.store.hit_coverage(ctx.account, &instances)?;
    let mut answer = RuleHitsAnswer {
        security_group_id: id.clone(),
        now: Some(unix_now()),
        ..RuleHitsAnswer::default()
    };
    for (dir, list) in [("ingress", &group.ingress), ("egress", &group.egress)] {
        for (i, r) in list.iter().enumerate() {
            let digest = rule_digest(&r.body);
            let known = hits
                .iter()
                .find(|h| h.direction == dir && h.policy_index as usize == i && h.digest == digest);
            answer.rule_hit_set.push(RuleHit {
                direction: dir.to_string(),
                policy_index: i as u64,
                hits: known.map_or(0, |h| h.hits),
                last_used: known.and_then(|h| h.last_used),
                since: known.map(|h| h.since),
            });
        }
    }
    for instance in instances {
        let known = coverage.iter().find(|c| c.instance_id == instance);
        answer.instance_coverage_set.push(InstanceHitCoverage {
            since: known.map(|c| c.since),
            last_report: known.map(|c| c.last_report),
            instance_id: instance,
        });
    }
    reply(serde_json::to_value(&answer).map_err(ApiError::internal)?)
}

/// A rule's identity for hits: the digest of its stored text.
fn rule_digest(body: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let text = body.to_string();
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Applies `retention` to every account once: records older than the
/// period go, then each account's oldest beyond the cap. Returns how many
/// went; a store error is logged and the next round tries again.
pub fn expire_once(store: &dyn Store, retention: &FlowRetention) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = now.saturating_sub(retention.max_age.as_secs());
    let accounts = match store.accounts() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("flow record retention: listing accounts: {e}");
            return 0;
        }
    };
    let mut gone = 0;
    for a in accounts {
        match store.expire_flow_records(&a.id, before, retention.max_records) {
            Ok(n) => gone += n,
            Err(e) => tracing::warn!("flow record retention in {}: {e}", a.name),
        }
    }
    METRICS.expired.fetch_add(gone, Ordering::Relaxed);
    gone
}
