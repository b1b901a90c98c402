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

/// Issue 18, "Metrics": the recorder's totals reach the agent's Prometheus
/// endpoint. A real recorder reads the node's log while a few connections
/// are decided (two accepted, two dropped, then a flood past the rate
/// limit); after one interval the scrape shows the decisions seen, the
/// records shipped (as many as the server took), the suppressed count, and
/// a failed shipment as a ship error.
#[test]
fn the_metrics_endpoint_shows_what_the_recorder_saw_suppressed_and_shipped() {
    use palisade_agent::flowlog::{record, RecorderConfig};
    use palisade_agent::metrics::{serve, AgentMetrics};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let Some(_guard) =
        start("the_metrics_endpoint_shows_what_the_recorder_saw_suppressed_and_shipped")
    else {
        return;
    };
    let mut lab = pair();
    load_opts(
        &lab,
        "node",
        &rules(),
        &options(Mode::Linear, Enforcement::Enforce, 20),
    );
    let metrics = Arc::new(AgentMetrics::default());
    let addr = serve("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
    let scrape = || -> std::collections::HashMap<String, u64> {
        ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    };
    assert_eq!(scrape()["palisade_agent_flow_records_seen_total"], 0);
    let config = RecorderConfig {
        instance: "ins-node0001".parse().unwrap(),
        netns: Some(lab.ns("node")),
        group: 7461,
        interval: Duration::from_secs(1),
        max_entries: 1000,
    };
    let revision = AtomicU64::new(1);
    let stop = Arc::new(AtomicBool::new(false));
    // The first shipment fails (no server), the later ones are taken.
    let shipped = Arc::new(Mutex::new((0usize, 0u64)));
    let recorder = {
        let (metrics, stop, shipped) = (metrics.clone(), stop.clone(), shipped.clone());
        std::thread::spawn(move || {
            let ship = |records: &[FlowRecord], _suppressed: u64| {
                let mut s = shipped.lock().unwrap();
                s.0 += 1;
                if s.0 == 1 {
                    return Err(palisade_agent::AgentError::Netlink("no server".into()));
                }
                s.1 += records.len() as u64;
                Ok(records.len() as u64)
            };
            record(&config, &revision, &stop, ship, |s| {
                metrics.set_recorder(&s)
            })
        })
    };
    // The reader is subscribed before the traffic starts.
    std::thread::sleep(Duration::from_millis(500));
    let mut probe = lab.prober("peer");
    for (dst, _) in [(NODE, false), (NODE6, true)] {
        assert!(probe.tcp(dst, 22), "{dst}: 22 is open");
        assert!(!probe.tcp(dst, 8080), "{dst}: 8080 is dropped");
    }
    let ok = eventually(Duration::from_secs(10), || {
        let m = scrape();
        m["palisade_agent_flow_records_seen_total"] >= 4
            && m["palisade_agent_flow_ship_errors_total"] == 1
            && m["palisade_agent_flow_records_shipped_total"] >= 4
    });
    let m = scrape();
    assert!(ok, "{m:?}");
    // A flood past the rate limit (20/s) is counted as suppressed.
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
    let ok = eventually(Duration::from_secs(10), || {
        scrape()["palisade_agent_flow_records_suppressed_total"] >= 100
    });
    stop.store(true, Ordering::Relaxed);
    recorder.join().unwrap().unwrap();
    let m = scrape();
    assert!(ok, "{m:?}");
    let (calls, taken) = *shipped.lock().unwrap();
    assert!(calls >= 2);
    assert_eq!(
        m["palisade_agent_flow_records_shipped_total"], taken,
        "{m:?}"
    );
    assert!(
        m["palisade_agent_flow_records_seen_total"] >= 4 + 10,
        "{m:?}"
    );
    assert_eq!(
        m["palisade_agent_applied_revision"], 0,
        "set by the agent loop, not the recorder"
    );
}
