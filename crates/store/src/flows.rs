//! Flow records in the store (DESIGN.md section 8, "Observe"; issue 18):
//! written in batches by agents' reports, read with filters and paging,
//! and expired by age and by a per-account cap. Written once over the
//! dialect trait, like the rest of the store's logic.
//!
//! A record's optional numbers (ports, rule, counts) are stored as -1 when
//! absent, since statements bind no NULLs; every stored value is checked on
//! the way out and a bad one is [`StoreError::Corrupt`]. The peer address
//! is also kept as 32 hex digits of its 128-bit value (IPv4 mapped into
//! `::ffff:0:0/96`), so that a CIDR filter is a range over an index.

use crate::sql::{Param, Row, Sql};
use crate::StoreError;
use palisade_model::flow::{FlowFilter, FlowRecord, RuleRef, Verdict};
use palisade_model::{Direction, Family};
use std::net::IpAddr;

/// The columns written and read, in this order.
const COLUMNS: &str = "account_id, instance_id, direction, src, dst, peer_hex, src_port, dst_port, \
     protocol, action, group_id, policy_index, revision, decisions, packets, bytes, start_time, end_time";
const WRITTEN: usize = 18;
/// Rows per INSERT: 18 parameters each stays below SQLite's 32,766.
const ROWS_PER_INSERT: usize = 500;

/// Inserts `records` (already checked) for `account`.
pub fn insert(db: &dyn Sql, account: &str, records: &[FlowRecord]) -> Result<u64, StoreError> {
    let mut stored = 0;
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let owned: Vec<[Owned; WRITTEN]> = chunk.iter().map(|r| row(account, r)).collect();
        let mut sql = format!("INSERT INTO flow_records ({COLUMNS}) VALUES ");
        let mut params = Vec::with_capacity(chunk.len() * WRITTEN);
        for (i, r) in owned.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for (j, v) in r.iter().enumerate() {
                let sep = if j == 0 { "" } else { ", " };
                sql.push_str(&format!("{sep}${}", i * WRITTEN + j + 1));
                params.push(v.param());
            }
            sql.push(')');
        }
        stored += db.execute(&sql, &params)?;
    }
    Ok(stored)
}

/// The records of `account` that pass `filter`, newest first, after
/// skipping `offset`, at most `limit`; and how many pass in all.
pub fn select(
    db: &dyn Sql,
    account: &str,
    filter: &FlowFilter,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<(i64, FlowRecord)>), StoreError> {
    let mut owned: Vec<Owned> = vec![Owned::Text(account.to_string())];
    let mut clauses = vec!["account_id = $1".to_string()];
    if !filter.instance_ids.is_empty() {
        // A short list (the API bounds it): one OR per id.
        let mut ors = Vec::new();
        for id in &filter.instance_ids {
            owned.push(Owned::Text(id.to_string()));
            ors.push(format!("instance_id = ${}", owned.len()));
        }
        clauses.push(format!("({})", ors.join(" OR ")));
    }
    let mut add = |clause: &str, v: Owned| {
        owned.push(v);
        clauses.push(clause.replace('?', &format!("${}", owned.len())));
    };
    if let Some(g) = &filter.security_group_id {
        add("group_id = ?", Owned::Text(g.to_string()));
    }
    if let Some(d) = filter.direction {
        add("direction = ?", Owned::Text(d.as_str().to_string()));
    }
    if let Some(i) = filter.policy_index {
        add("policy_index = ?", Owned::Int(i64::from(i)));
    }
    if let Some(a) = filter.action {
        add("action = ?", Owned::Text(a.as_str().to_string()));
    }
    if let Some(c) = filter.peer {
        let r = c.range();
        let (lo, hi) = match r.family() {
            Family::V4 => (r.lo() | V4_MAPPED, r.hi() | V4_MAPPED),
            Family::V6 => (r.lo(), r.hi()),
        };
        add("peer_hex >= ?", Owned::Text(format!("{lo:032x}")));
        add("peer_hex <= ?", Owned::Text(format!("{hi:032x}")));
    }
    if let Some(p) = filter.port {
        add("dst_port = ?", Owned::Int(i64::from(p)));
    }
    if let Some(p) = filter.protocol {
        add("protocol = ?", Owned::Int(i64::from(p)));
    }
    if let Some(t) = filter.since {
        add("end_time >= ?", Owned::Int(clamp(t)));
    }
    if let Some(t) = filter.until {
        add("start_time <= ?", Owned::Int(clamp(t)));
    }
    let filter_sql = clauses.join(" AND ");
    let params: Vec<Param<'_>> = owned.iter().map(Owned::param).collect();
    let total = db
        .query(
            &format!("SELECT count(*) FROM flow_records WHERE {filter_sql}"),
            &params,
        )?
        .first()
        .map(|r| r.count(0))
        .transpose()?
        .unwrap_or(0);
    let sql = format!(
        "SELECT seq, {COLUMNS} FROM flow_records WHERE {filter_sql} \
         ORDER BY start_time DESC, seq DESC LIMIT {} OFFSET {}",
        limit.min(i64::MAX as u64),
        offset.min(i64::MAX as u64)
    );
    let rows = db.query(&sql, &params)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(record(r)?);
    }
    Ok((total, out))
}

/// Deletes `account`'s records that ended before `before`, then the
/// oldest beyond `keep` records; returns how many went.
pub fn expire(db: &dyn Sql, account: &str, before: u64, keep: u64) -> Result<u64, StoreError> {
    let mut gone = db.execute(
        "DELETE FROM flow_records WHERE account_id = $1 AND end_time < $2",
        &[Param::Text(account), Param::Int(clamp(before))],
    )?;
    let cut = db.query(
        "SELECT seq FROM flow_records WHERE account_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2",
        &[Param::Text(account), Param::Int(clamp(keep))],
    )?;
    if let Some(r) = cut.first() {
        gone += db.execute(
            "DELETE FROM flow_records WHERE account_id = $1 AND seq <= $2",
            &[Param::Text(account), Param::Int(r.int(0)?)],
        )?;
    }
    Ok(gone)
}

/// `::ffff:0:0`: where an IPv4 address sits among 128-bit values.
const V4_MAPPED: u128 = 0xffff_0000_0000;

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn peer_hex(ip: IpAddr) -> String {
    let v = match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)) | V4_MAPPED,
        IpAddr::V6(a) => u128::from(a),
    };
    format!("{v:032x}")
}

/// A statement parameter that owns its text.
enum Owned {
    Text(String),
    Int(i64),
}

impl Owned {
    fn param(&self) -> Param<'_> {
        match self {
            Owned::Text(s) => Param::Text(s),
            Owned::Int(v) => Param::Int(*v),
        }
    }
}

fn opt(v: Option<u64>) -> Owned {
    Owned::Int(v.map_or(-1, clamp))
}

fn row(account: &str, r: &FlowRecord) -> [Owned; WRITTEN] {
    let rule = r.rule.as_ref();
    [
        Owned::Text(account.to_string()),
        Owned::Text(r.instance_id.to_string()),
        Owned::Text(r.direction.as_str().to_string()),
        Owned::Text(r.src_addr.to_string()),
        Owned::Text(r.dst_addr.to_string()),
        Owned::Text(peer_hex(r.peer())),
        opt(r.src_port.map(u64::from)),
        opt(r.dst_port.map(u64::from)),
        Owned::Int(i64::from(r.protocol)),
        Owned::Text(r.action.as_str().to_string()),
        Owned::Text(rule.map_or(String::new(), |x| x.security_group_id.to_string())),
        opt(rule.map(|x| u64::from(x.policy_index))),
        opt(rule.map(|x| x.revision)),
        Owned::Int(clamp(r.decisions)),
        opt(r.packets),
        opt(r.bytes),
        Owned::Int(clamp(r.start)),
        Owned::Int(clamp(r.end)),
    ]
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("flow record {what}: {e}"))
}

/// A stored record: `(seq, record)`.
fn record(mut r: Row) -> Result<(i64, FlowRecord), StoreError> {
    let seq = r.int(0)?;
    let num = |r: &Row, i: usize| -> Result<Option<u64>, StoreError> {
        match r.int(i)? {
            -1 => Ok(None),
            v => u64::try_from(v).map(Some).map_err(|e| corrupt("number", e)),
        }
    };
    let small = |v: Option<u64>, what: &str| -> Result<Option<u16>, StoreError> {
        v.map(|p| u16::try_from(p).map_err(|e| corrupt(what, e)))
            .transpose()
    };
    let instance_id = r.text(2)?.parse().map_err(|e| corrupt("instance", e))?;
    let direction =
        Direction::parse_field("direction", &r.text(3)?).map_err(|e| corrupt("direction", e))?;
    let src_addr = r.text(4)?.parse().map_err(|e| corrupt("source", e))?;
    let dst_addr = r.text(5)?.parse().map_err(|e| corrupt("destination", e))?;
    let src_port = small(num(&r, 7)?, "source port")?;
    let dst_port = small(num(&r, 8)?, "destination port")?;
    let protocol = u8::try_from(r.int(9)?).map_err(|e| corrupt("protocol", e))?;
    let action = Verdict::parse_field("action", &r.text(10)?).map_err(|e| corrupt("action", e))?;
    let group = r.text(11)?;
    let index = num(&r, 12)?;
    let revision = num(&r, 13)?;
    let rule = match (group.is_empty(), index, revision) {
        (true, None, None) => None,
        (false, Some(i), Some(revision)) => Some(RuleRef {
            security_group_id: group.parse().map_err(|e| corrupt("group", e))?,
            policy_index: u32::try_from(i).map_err(|e| corrupt("policy index", e))?,
            revision,
        }),
        _ => return Err(corrupt("rule", "partly missing")),
    };
    let record = FlowRecord {
        instance_id,
        direction,
        src_addr,
        dst_addr,
        src_port,
        dst_port,
        protocol,
        action,
        rule,
        decisions: num(&r, 14)?.ok_or_else(|| corrupt("decisions", "missing"))?,
        packets: num(&r, 15)?,
        bytes: num(&r, 16)?,
        start: num(&r, 17)?.ok_or_else(|| corrupt("start", "missing"))?,
        end: num(&r, 18)?.ok_or_else(|| corrupt("end", "missing"))?,
    };
    record.check().map_err(|e| corrupt("check", e))?;
    Ok((seq, record))
}
