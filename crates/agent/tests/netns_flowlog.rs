//! Flow records from the kernel (issue 18): the compiled program logs each
//! decision to NFLOG with the deciding rule, [`FlowLog`] reads them (and
//! conntrack's ends) in the node's namespace, and the aggregator makes
//! records. In both modes and families: an accepted connection names its
//! rule and, once closed, its packets and bytes; a blocked one names the
//! default drop or its DROP rule; in audit mode a connection a DROP rule
//! covers passes and is recorded `WOULD_DROP` with that rule; a flood
//! beyond the rate limit gives bounded records and a non-zero suppressed
//! count.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::compile::{CompileOptions, FlowLogOptions, Mode, FLOW_LOG_SUPPRESSED};
use palisade_agent::flowlog::{Aggregator, FlowLog};
use palisade_model::flow::{Enforcement, FlowRecord, Verdict};
use serde_json::json;
use std::time::{Duration, Instant};

const GROUP: &str = "sg-flow0001";

fn rules() -> palisade_policy::Ruleset {
    ruleset(&[(
        GROUP,
        json!({
            "Ingress": [
                {"Protocol": "TCP", "Port": "22", "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"},
                {"Protocol": "TCP", "Port": "22", "Ipv6CidrBlock": "2001:db8::/64", "Action": "ACCEPT"},
                {"Protocol": "TCP", "Port": "8080", "CidrBlock": "0.0.0.0/0", "Action": "DROP"},
                {"Protocol": "TCP", "Port": "8080", "Ipv6CidrBlock": "::/0", "Action": "DROP"}
            ],
            "Egress": [
                {"Protocol": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"},
                {"Protocol": "ALL", "Ipv6CidrBlock": "::/0", "Action": "ACCEPT"}
            ]
        }),
    )])
}

fn options(mode: Mode, enforcement: Enforcement, rate: u32) -> CompileOptions {
    CompileOptions {
        uplinks: vec!["eth0".into()],
        mode,
        enforcement,
        flow_log: Some(FlowLogOptions {
            group: 7461,
            rate,
            burst: rate,
        }),
        ..Default::default()
    }
}

/// Reads the log for up to `limit` or until `done` holds for the records
/// so far; flushes the aggregator every read.
fn collect(
    log: &mut FlowLog,
    agg: &mut Aggregator,
    limit: Duration,
    mut done: impl FnMut(&[FlowRecord]) -> bool,
) -> Vec<FlowRecord> {
    let mut records = Vec::new();
    let mut lost = 0;
    let start = Instant::now();
    while start.elapsed() < limit {
        let events = log
            .read(Duration::from_millis(100), &mut lost, |t| agg.is_open(t))
            .unwrap();
        for e in events {
            agg.add(e, now(), 1);
        }
        records.extend(agg.flush(now()));
        if done(&records) {
            break;
        }
    }
    records
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn find(
    records: &[FlowRecord],
    action: Verdict,
    dst_port: u16,
    v6: bool,
    closing: bool,
) -> Option<&FlowRecord> {
    records.iter().find(|r| {
        r.action == action
            && r.dst_port == Some(dst_port)
            && r.src_addr.is_ipv6() == v6
            && (r.decisions == 0) == closing
    })
}

#[test]
fn decisions_become_records_in_both_modes_and_families() {
    let Some(_guard) = start("decisions_become_records_in_both_modes_and_families") else {
        return;
    };
    for mode in [Mode::Linear, Mode::Maps] {
        let mut lab = pair();
        load_opts(
            &lab,
            "node",
            &rules(),
            &options(mode, Enforcement::Enforce, 500),
        );
        let mut log = FlowLog::open(Some(&lab.ns("node")), 7461).unwrap();
        let mut agg = Aggregator::new("ins-node0001".parse().unwrap(), 1000);
        let mut probe = lab.prober("peer");
        for (dst, v6) in [(NODE, false), (NODE6, true)] {
            assert!(probe.tcp(dst, 22), "{mode:?} {dst}: 22 is open");
            assert!(!probe.tcp(dst, 8080), "{mode:?} {dst}: 8080 is dropped");
            assert!(
                !probe.tcp(dst, 9090),
                "{mode:?} {dst}: 9090 meets the default drop"
            );
            let records = collect(&mut log, &mut agg, Duration::from_secs(5), |r| {
                find(r, Verdict::Accept, 22, v6, true).is_some()
                    && find(r, Verdict::Drop, 8080, v6, false).is_some()
                    && find(r, Verdict::Drop, 9090, v6, false).is_some()
            });
            let what = format!("{mode:?} {dst}: {records:#?}");
            let accepted = find(&records, Verdict::Accept, 22, v6, false).expect(&what);
            let rule = accepted.rule.as_ref().expect(&what);
            assert_eq!(rule.security_group_id.as_str(), GROUP);
            assert_eq!(rule.policy_index, u32::from(v6), "{what}");
            assert_eq!(accepted.direction, palisade_model::Direction::Ingress);
            assert_eq!(accepted.dst_addr.to_string(), dst);
            let closed = find(&records, Verdict::Accept, 22, v6, true).expect(&what);
            assert!(closed.packets.unwrap() >= 4, "{what}");
            assert!(closed.bytes.unwrap() > 100, "{what}");
            let dropped = find(&records, Verdict::Drop, 8080, v6, false).expect(&what);
            assert_eq!(
                dropped.rule.as_ref().unwrap().policy_index,
                2 + u32::from(v6)
            );
            let default = find(&records, Verdict::Drop, 9090, v6, false).expect(&what);
            assert_eq!(default.rule, None, "{what}");
            for r in &records {
                r.check().unwrap();
            }
        }
        drop(log);
        drop(lab);
    }
}

#[test]
fn audit_mode_passes_what_a_drop_rule_covers_and_records_would_drop() {
    let Some(_guard) = start("audit_mode_passes_what_a_drop_rule_covers_and_records_would_drop")
    else {
        return;
    };
    for mode in [Mode::Linear, Mode::Maps] {
        let mut lab = pair();
        load_opts(
            &lab,
            "node",
            &rules(),
            &options(mode, Enforcement::Audit, 500),
        );
        let mut log = FlowLog::open(Some(&lab.ns("node")), 7461).unwrap();
        let mut agg = Aggregator::new("ins-node0001".parse().unwrap(), 1000);
        let mut probe = lab.prober("peer");
        for (dst, v6) in [(NODE, false), (NODE6, true)] {
            assert!(probe.tcp(dst, 8080), "{mode:?} {dst}: audit passes 8080");
            assert!(
                probe.tcp(dst, 9090),
                "{mode:?} {dst}: audit passes the default drop"
            );
            let records = collect(&mut log, &mut agg, Duration::from_secs(5), |r| {
                find(r, Verdict::WouldDrop, 8080, v6, false).is_some()
                    && find(r, Verdict::WouldDrop, 9090, v6, false).is_some()
            });
            let what = format!("{mode:?} {dst}: {records:#?}");
            let w = find(&records, Verdict::WouldDrop, 8080, v6, false).expect(&what);
            assert_eq!(w.rule.as_ref().unwrap().policy_index, 2 + u32::from(v6));
            let d = find(&records, Verdict::WouldDrop, 9090, v6, false).expect(&what);
            assert_eq!(d.rule, None);
            assert!(!records.iter().any(|r| r.action == Verdict::Drop), "{what}");
        }
        // Back to enforcing: the same connection is dropped again.
        load_opts(
            &lab,
            "node",
            &rules(),
            &options(mode, Enforcement::Enforce, 500),
        );
        assert!(!probe.tcp(NODE, 8080), "{mode:?}: enforced again");
        drop(log);
    }
}

#[test]
fn a_flood_past_the_rate_limit_gives_bounded_records_and_counts_the_rest() {
    let Some(_guard) =
        start("a_flood_past_the_rate_limit_gives_bounded_records_and_counts_the_rest")
    else {
        return;
    };
    let lab = pair();
    load_opts(
        &lab,
        "node",
        &rules(),
        &options(Mode::Linear, Enforcement::Enforce, 5),
    );
    let mut log = FlowLog::open(Some(&lab.ns("node")), 7461).unwrap();
    let mut agg = Aggregator::new("ins-node0001".parse().unwrap(), 1000);
    // 200 blocked connection attempts from distinct source ports, at once.
    lab.exec(
        "peer",
        &[
            "python3",
            "-c",
            &format!(
                "import socket\nfor i in range(200):\n s=socket.socket(); s.setblocking(False)\n try: s.connect(('{NODE}', 9090))\n except BlockingIOError: pass\n s.close()"
            ),
        ],
    );
    let records = collect(&mut log, &mut agg, Duration::from_secs(2), |_| false);
    let logged: u64 = records.iter().map(|r| r.decisions).sum();
    assert!(logged > 0, "some decisions are logged");
    assert!(
        logged <= 20,
        "at most rate + burst (+1 s) logged, got {logged}"
    );
    let listing = lab.exec(
        "node",
        &[
            "nft",
            "list",
            "counter",
            "inet",
            "palisade",
            FLOW_LOG_SUPPRESSED,
        ],
    );
    let suppressed: u64 = listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(suppressed >= 150, "{listing}");
    // Every attempt was decided once (a closed socket sends no retry).
    assert!(
        logged + suppressed >= 200,
        "every decision is logged or counted"
    );
}
