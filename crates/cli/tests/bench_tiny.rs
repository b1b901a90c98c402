//! CI runs each of `palisade bench dataplane`, `flowlog-agent`, `propagate`, `api`, `console` and `replay` once
//! at a tiny size through the built binary (issue 6: benchmarks are not
//! timed tests; the numbers live in BENCHMARKS.md). Only the shape of the
//! JSON and the absence of errors are checked. `dataplane` and `flowlog-agent` need root and
//! are skipped with the reason otherwise.

#![allow(clippy::unwrap_used)] // a test: a failed step should stop it loudly

use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("bench")
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "palisade bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_replay_runs_tiny() {
    let r = bench(&[
        "replay",
        "--records",
        "3000",
        "--passes",
        "1",
        "--linear-sample",
        "500",
        "--suggest-records",
        "3000",
        "--groups",
        "20",
        "--plan-records",
        "3000",
    ]);
    assert_eq!(r["mismatches"], 0, "{r:#}");
    assert_eq!(r["rules"], 1000);
    assert_eq!(r["suggest_every_flow_accepted"], true);
    assert_eq!(r["plan_records"], 3000);
    assert!(r["plan_peak_rss_mib"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_propagate_runs_tiny() {
    let r = bench(&[
        "propagate",
        "--agents",
        "3",
        "--changes",
        "2",
        "--gap-ms",
        "100",
    ]);
    assert_eq!(r["agents"], 3);
    assert_eq!(r["samples"], 6);
    assert_eq!(r["missed"], 0);
    assert!(r["max_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
}

#[test]
fn bench_api_runs_tiny() {
    let r = bench(&["api", "--seconds", "0.2", "--clients", "2"]);
    for call in ["describe", "create", "baseline_metrics"] {
        assert!(r[call]["ok"].as_u64().unwrap() > 0, "{call}: {r}");
        assert_eq!(r[call]["errors"], 0, "{call}: {r}");
    }
}

#[test]
fn bench_console_runs_tiny() {
    let r = bench(&["console", "--groups", "3", "--rules", "5", "--runs", "2"]);
    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 5, "{r}");
    for p in pages {
        assert!(p["bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(p["max_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
    }
}

#[test]
fn bench_dataplane_runs_tiny() {
    if !palisade_testkit::root("bench_dataplane_runs_tiny") {
        return;
    }
    let r = bench(&[
        "dataplane",
        "--rules",
        "10",
        "--addresses",
        "10",
        "--seconds",
        "0.05",
        "--rounds",
        "1",
    ]);
    for mode in ["linear", "maps"] {
        assert!(r[mode]["skipped"].is_null(), "{mode}: {r}");
        assert!(r[mode]["flows"]["sent"].as_u64().unwrap() > 0);
        assert!(r[mode]["apply_ms"].as_f64().is_some());
    }
    assert_eq!(r["linear"]["change_kind"], "element add");
    assert!(r["none"]["sent"].as_u64().unwrap() > 0);
}

#[test]
fn bench_flowlog_agent_runs_tiny() {
    if !palisade_testkit::root("bench_flowlog_agent_runs_tiny") {
        return;
    }
    let r = bench(&[
        "flowlog-agent",
        "--rate",
        "100",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--flow-interval-secs",
        "1",
    ]);
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{r}");
    assert_eq!(phases[0]["recording"], false);
    assert_eq!(phases[1]["recording"], true);
    for p in phases {
        assert!(p["connections"].as_u64().unwrap() > 50, "{r}");
        assert!(p["agent_cpu_secs"].as_f64().unwrap() >= 0.0);
    }
    let metric = |name: &str| {
        r["agent_metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m[0] == name)
            .and_then(|m| m[1].as_u64())
            .unwrap_or_else(|| panic!("{name} in {r}"))
    };
    assert!(metric("palisade_agent_flow_records_seen_total") > 50, "{r}");
    assert_eq!(
        metric("palisade_agent_flow_records_suppressed_total"),
        0,
        "{r}"
    );
    assert!(metric("palisade_agent_applied_revision") > 0, "{r}");
    let shipped = metric("palisade_agent_flow_records_shipped_total");
    assert!(shipped > 50, "{r}");
    assert_eq!(r["records_stored"].as_u64().unwrap(), shipped, "{r}");
}
