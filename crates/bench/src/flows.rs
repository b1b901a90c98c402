//! `palisade bench flows` (issue 18): the server's side of flow records in
//! the real store (SQLite in a temporary directory, or PostgreSQL with
//! `--store`): how fast batched reports are stored (batches of 2,000, what
//! an agent ships at most per call), and how long a filtered read of one
//! instance and one hour takes with that many records stored. The baseline
//! in the same run is the account's newest 100 records with no other
//! filter.

use anyhow::Context;
use palisade_model::flow::{FlowFilter, FlowRecord, RuleRef, Verdict};
use palisade_model::Direction;
use palisade_store::{InstanceRecord, Location, StoreExt};
use serde::Serialize;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct FlowsOptions {
    /// Records stored in all.
    pub records: u64,
    /// Instances they are spread over.
    pub instances: u64,
    /// The store (`None`: SQLite in a temporary directory).
    pub store: Option<Location>,
    /// Reads of each kind (the median counts).
    pub reads: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsReport {
    /// Records stored.
    pub records: u64,
    /// Instances.
    pub instances: u64,
    /// The store, as `--store` spells it.
    pub store: String,
    /// Records stored per second, batches of 2,000.
    pub stored_per_sec: f64,
    /// One instance and one hour, newest 100: median and slowest, ms.
    pub filtered_ms: (f64, f64),
    /// How many records that filter matched.
    pub filtered_matched: u64,
    /// The account's newest 100 with no other filter (the baseline): ms.
    pub unfiltered_ms: (f64, f64),
}

const BATCH: usize = 2_000;
/// The time span the records are spread over: 10 days of seconds.
const SPAN: u64 = 10 * 86_400;
const START: u64 = 1_790_000_000;

/// Runs the benchmark; `log` sees progress lines.
pub fn run(opts: &FlowsOptions, log: &mut dyn FnMut(&str)) -> anyhow::Result<FlowsReport> {
    let dir = tempfile::tempdir()?;
    let location = opts
        .store
        .clone()
        .unwrap_or_else(|| Location::Sqlite(dir.path().join("palisade.db")));
    let store = palisade_store::open(&location).context("opening the store")?;
    let account = store.create_account(&format!("bench-flows-{}", std::process::id()))?;
    let instances: Vec<String> = (0..opts.instances.max(1))
        .map(|i| format!("ins-f{i:07}"))
        .collect();
    store.write(|tx| {
        for (n, id) in instances.iter().enumerate() {
            tx.insert_instance(
                &account.id,
                &InstanceRecord {
                    id: id.clone(),
                    name: id.clone(),
                    private_ips: vec![format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)],
                    created_time: "bench".into(),
                    security_group_ids: vec![],
                },
            )?;
        }
        Ok::<_, palisade_store::StoreError>(())
    })?;
    let per = opts.records / instances.len() as u64;
    let t = Instant::now();
    let mut stored = 0u64;
    let mut last_log = Instant::now();
    let mut seq = 0u64;
    for (n, id) in instances.iter().enumerate() {
        let mut left = per;
        while left > 0 {
            let k = left.min(BATCH as u64);
            let batch: Vec<FlowRecord> = (0..k)
                .map(|_| {
                    seq += 1;
                    record(id, n as u64, seq, opts.records)
                })
                .collect();
            stored += store.put_flow_records(&account.id, id, &batch)?;
            left -= k;
            if last_log.elapsed().as_secs() >= 5 {
                log(&format!("{stored} records stored"));
                last_log = Instant::now();
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    log(&format!("{stored} records in {secs:.1} s"));
    // One instance, the newest hour of its records (the first instance's
    // records come first in the span).
    let end = START + SPAN * per / opts.records.max(1);
    let filter = FlowFilter {
        instance_ids: vec![instances[0].parse()?],
        since: Some(end - 3600),
        until: Some(end),
        ..Default::default()
    };
    let mut matched = 0;
    let filtered = timed(opts.reads, || {
        let (total, _) = store.flow_records(&account.id, &filter, 0, 100)?;
        matched = total;
        Ok(())
    })?;
    let unfiltered = timed(opts.reads, || {
        store.flow_records(&account.id, &FlowFilter::default(), 0, 100)?;
        Ok(())
    })?;
    Ok(FlowsReport {
        records: stored,
        instances: instances.len() as u64,
        store: location.to_string(),
        stored_per_sec: stored as f64 / secs,
        filtered_ms: filtered,
        filtered_matched: matched,
        unfiltered_ms: unfiltered,
    })
}

/// Median and slowest of `n` runs of `f`, ms.
fn timed(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[ms.len() - 1]))
}

/// Record `seq` of `total`, of instance `n`: spread evenly over the span.
fn record(id: &str, n: u64, seq: u64, total: u64) -> FlowRecord {
    let start = START + seq * SPAN / total.max(1);
    let accept = !seq.is_multiple_of(3);
    FlowRecord {
        instance_id: id.parse().expect("a valid instance id"),
        direction: Direction::Ingress,
        src_addr: std::net::Ipv4Addr::from(0xc612_0000 | (seq as u32 & 0xffff)).into(),
        dst_addr: std::net::Ipv4Addr::from(0x0a00_0000 | n as u32).into(),
        src_port: Some(30_000 + (seq % 30_000) as u16),
        dst_port: Some([22, 80, 443][(seq % 3) as usize]),
        protocol: 6,
        action: if accept {
            Verdict::Accept
        } else {
            Verdict::Drop
        },
        rule: accept.then(|| RuleRef {
            security_group_id: "sg-bnch0001".parse().expect("a valid group id"),
            policy_index: (seq % 7) as u32,
            revision: 1,
        }),
        decisions: 1,
        packets: (!accept).then_some(1),
        bytes: (!accept).then_some(60),
        start,
        end: start + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_stores_everything_and_finds_the_hour() {
        let r = run(
            &FlowsOptions {
                records: 6_000,
                instances: 3,
                store: None,
                reads: 3,
            },
            &mut |_| {},
        )
        .expect("bench flows");
        assert_eq!(r.records, 6_000);
        // 2,000 records of the first instance over its share of 10 days.
        assert!(
            r.filtered_matched > 0 && r.filtered_matched < 2_000,
            "{r:?}"
        );
    }
}
