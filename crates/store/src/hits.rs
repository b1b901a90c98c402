//! Rule hits and last use (DESIGN.md section 8, "Observe"; issue 18): per
//! rule (group, direction, policy index), the decisions summed over every
//! instance that applies it and the last time it decided, from the
//! per-rule counters agents report. A counter is cumulative for the life of
//! a loaded table, so each report adds what grew since the instance's
//! previous one (a counter lower than before was reset by a reload: all of
//! it is new). Hits are kept across revisions while the rule at that
//! position is unchanged (same digest of its stored text), and start again
//! from zero when it changes. Status, not configuration: no revision bump,
//! no account writer lock.
//!
//! Each instance also has a [`HitCoverage`]: since when its agent has
//! reported counters without a silence longer than the caller's gap. A
//! silence may hide a table reload whose counts never reached the server,
//! so coverage starts again after one; "this rule decided nothing over 30
//! days" is only known where every instance applying it is covered.

use crate::sql::{Param, Sql};
use crate::StoreError;
use std::collections::HashMap;

/// One reported counter, with the digest of the rule it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    /// `sg-...`.
    pub group_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The rule's `PolicyIndex`.
    pub policy_index: u32,
    /// The digest of the rule's stored text at that position.
    pub digest: String,
    /// Packets the rule decided since the table was loaded.
    pub packets: u64,
}

/// What the store knows of one rule's use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHits {
    /// `sg-...`.
    pub group_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The rule's `PolicyIndex`.
    pub policy_index: u32,
    /// The digest of the rule these hits are of.
    pub digest: String,
    /// Decisions summed over every instance, since `since`.
    pub hits: u64,
    /// The last report that saw the rule decide, Unix seconds.
    pub last_used: Option<u64>,
    /// Since when hits of this rule are counted, Unix seconds.
    pub since: u64,
}

/// Since when an instance's hits are known without a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitCoverage {
    /// `ins-...`.
    pub instance_id: String,
    /// The first report of the unbroken run, Unix seconds.
    pub since: u64,
    /// The latest report, Unix seconds.
    pub last_report: u64,
}

/// Adds `instance_id`'s report to the hits of its rules, and carries its
/// coverage on (or starts it again at `now` after more than `gap` seconds
/// of silence).
pub fn record(
    db: &dyn Sql,
    account: &str,
    instance_id: &str,
    counts: &[RuleCount],
    now: u64,
    gap: u64,
) -> Result<(), StoreError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    db.execute(
        "INSERT INTO hit_coverage (account_id, instance_id, since, last_report)
         VALUES ($1, $2, $3, $3)
         ON CONFLICT (account_id, instance_id) DO UPDATE SET
           since = CASE WHEN excluded.last_report - hit_coverage.last_report > $4
                        OR excluded.last_report < hit_coverage.last_report
                   THEN excluded.since ELSE hit_coverage.since END,
           last_report = excluded.last_report",
        &[
            Param::Text(account),
            Param::Text(instance_id),
            Param::Int(now),
            Param::Int(i64::try_from(gap).unwrap_or(i64::MAX)),
        ],
    )?;
    // The previous counter of the same rule (a counter of another rule
    // at that position counted something else).
    let mut previous: HashMap<(String, String, i64, String), i64> = HashMap::new();
    for mut r in db.query(
        "SELECT group_id, direction, policy_index, digest, packets FROM rule_counter_last
         WHERE account_id = $1 AND instance_id = $2",
        &[Param::Text(account), Param::Text(instance_id)],
    )? {
        let key = (r.text(0)?, r.text(1)?, r.int(2)?, r.text(3)?);
        previous.insert(key, r.int(4)?);
    }
    db.execute(
        "DELETE FROM rule_counter_last WHERE account_id = $1 AND instance_id = $2",
        &[Param::Text(account), Param::Text(instance_id)],
    )?;
    for chunk in counts.chunks(500) {
        let mut last = String::from(
            "INSERT INTO rule_counter_last (account_id, instance_id, group_id, direction, policy_index, digest, packets) VALUES ",
        );
        let mut hits = String::from(
            "INSERT INTO rule_hits (account_id, group_id, direction, policy_index, digest, hits, last_used, since) VALUES ",
        );
        let owned: Vec<(i64, i64, i64)> = chunk
            .iter()
            .map(|c| {
                let packets = i64::try_from(c.packets).unwrap_or(i64::MAX);
                let before = previous
                    .get(&(
                        c.group_id.clone(),
                        c.direction.clone(),
                        i64::from(c.policy_index),
                        c.digest.clone(),
                    ))
                    .copied();
                let delta = match before {
                    Some(b) if b <= packets => packets - b,
                    _ => packets,
                };
                (packets, delta, if delta > 0 { now } else { -1 })
            })
            .collect();
        let mut p_last: Vec<Param<'_>> = Vec::new();
        let mut p_hits: Vec<Param<'_>> = Vec::new();
        for (i, (c, (packets, delta, used))) in chunk.iter().zip(&owned).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let b = i * 7;
            last.push_str(&format!(
                "{sep}(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
            p_last.extend([
                Param::Text(account),
                Param::Text(instance_id),
                Param::Text(&c.group_id),
                Param::Text(&c.direction),
                Param::Int(i64::from(c.policy_index)),
                Param::Text(&c.digest),
                Param::Int(*packets),
            ]);
            let b = i * 8;
            hits.push_str(&format!(
                "{sep}(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8
            ));
            p_hits.extend([
                Param::Text(account),
                Param::Text(&c.group_id),
                Param::Text(&c.direction),
                Param::Int(i64::from(c.policy_index)),
                Param::Text(&c.digest),
                Param::Int(*delta),
                Param::Int(*used),
                Param::Int(now),
            ]);
        }
        hits.push_str(
            " ON CONFLICT (account_id, group_id, direction, policy_index) DO UPDATE SET
               hits = CASE WHEN rule_hits.digest = excluded.digest
                      THEN rule_hits.hits + excluded.hits ELSE excluded.hits END,
               last_used = CASE WHEN excluded.last_used >= 0 THEN excluded.last_used
                           WHEN rule_hits.digest = excluded.digest THEN rule_hits.last_used
                           ELSE -1 END,
               since = CASE WHEN rule_hits.digest = excluded.digest
                       THEN rule_hits.since ELSE excluded.since END,
               digest = excluded.digest",
        );
        if !chunk.is_empty() {
            db.execute(&last, &p_last)?;
            db.execute(&hits, &p_hits)?;
        }
    }
    Ok(())
}

/// The coverage of those of `instance_ids` that ever reported.
pub fn coverage(
    db: &dyn Sql,
    account: &str,
    instance_ids: &[String],
) -> Result<Vec<HitCoverage>, StoreError> {
    let mut out = Vec::new();
    for chunk in instance_ids.chunks(500) {
        let mut sql = String::from(
            "SELECT instance_id, since, last_report FROM hit_coverage
             WHERE account_id = $1 AND instance_id IN (",
        );
        let mut params = vec![Param::Text(account)];
        for (i, id) in chunk.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            sql.push_str(&format!("{sep}${}", i + 2));
            params.push(Param::Text(id));
        }
        sql.push_str(") ORDER BY instance_id");
        for mut r in db.query(&sql, &params)? {
            out.push(HitCoverage {
                instance_id: r.text(0)?,
                since: r.count(1)?,
                last_report: r.count(2)?,
            });
        }
    }
    Ok(out)
}

/// The hits of `group_id`'s rules.
pub fn of_group(db: &dyn Sql, account: &str, group_id: &str) -> Result<Vec<RuleHits>, StoreError> {
    db.query(
        "SELECT group_id, direction, policy_index, digest, hits, last_used, since FROM rule_hits
         WHERE account_id = $1 AND group_id = $2 ORDER BY direction, policy_index",
        &[Param::Text(account), Param::Text(group_id)],
    )?
    .into_iter()
    .map(|mut r| {
        let bad = |what: &str| StoreError::Corrupt(format!("rule hits: {what}"));
        Ok(RuleHits {
            group_id: r.text(0)?,
            direction: r.text(1)?,
            policy_index: u32::try_from(r.int(2)?).map_err(|_| bad("policy index"))?,
            digest: r.text(3)?,
            hits: r.count(4)?,
            last_used: match r.int(5)? {
                -1 => None,
                v => Some(u64::try_from(v).map_err(|_| bad("last use"))?),
            },
            since: r.count(6)?,
        })
    })
    .collect()
}
