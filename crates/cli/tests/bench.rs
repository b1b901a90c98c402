//! `palisade bench classify` as a user runs it, at a tiny size so the
//! benchmark keeps working (CI runs this; timings are never asserted):
//! the shipped ClassBench sample and the examples' fleet, JSON shape, the
//! DPDK export, and clear errors on bad input.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn sample() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../bench/tests/data/sample.classbench")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn classify_on_the_shipped_sample() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("dpdk");
    let o = palisade(&[
        "bench",
        "classify",
        "--rules",
        &sample(),
        "--packets",
        "10000",
        "--passes",
        "1",
        "--output",
        "json",
        "--export-dpdk",
        export.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("bench classify:"),
        "progress goes to stderr: {err}"
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rules"], 39);
    assert_eq!(v["packets"], 10000);
    assert_eq!(v["mismatches"], 0);
    assert_eq!(v["verified"], 10000);
    for key in [
        "ns_per_lookup",
        "linear_ns_per_lookup",
        "build_ms",
        "memory_bytes",
    ] {
        assert!(v[key].is_number(), "{key}: {v}");
    }
    let trace = std::fs::read_to_string(export.join("trace")).unwrap();
    let answers = std::fs::read_to_string(export.join("answers")).unwrap();
    assert_eq!(trace.lines().count(), 10000);
    assert_eq!(answers.lines().count(), 10000);
    let rules = std::fs::read_to_string(export.join("rules.cb")).unwrap();
    let line_rules = std::fs::read_to_string(export.join("line_rules")).unwrap();
    assert_eq!(rules.lines().count(), line_rules.lines().count());

    // The human table.
    let o = palisade(&[
        "bench",
        "classify",
        "--rules",
        &sample(),
        "--packets",
        "1000",
    ]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("mismatches") && out.contains("classifier ns/lookup"),
        "{out}"
    );
}

#[test]
fn classify_on_a_fleet_instance() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        r#"
security_groups:
  - id: sg-bench001
    policies:
      Ingress:
        - {Protocol: TCP, Port: "23", CidrBlock: 0.0.0.0/0, Action: DROP}
        - {Protocol: TCP, Port: "22,80-90", CidrBlock: 10.0.0.0/8, Action: ACCEPT}
        - {Protocol: ICMPv6, Ipv6CidrBlock: "2001:db8::/32", Action: ACCEPT}
        - {Protocol: ALL, Port: ALL, SecurityGroupId: sg-bench001, Action: ACCEPT}
      Egress:
        - {Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
instances:
  - {id: ins-bench001, private_ips: [10.0.0.11, "2001:db8:ff::11"], security_groups: [sg-bench001]}
"#,
    )
    .unwrap();
    let f = fleet.to_str().unwrap();
    for direction in ["ingress", "egress"] {
        let o = palisade(&[
            "bench",
            "classify",
            "--rules",
            f,
            "--instance",
            "ins-bench001",
            "--direction",
            direction,
            "--packets",
            "5000",
            "--passes",
            "1",
            "--output",
            "json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["mismatches"], 0);
        assert_eq!(v["rules"], if direction == "ingress" { 4 } else { 1 });
    }
    // A fleet without --instance, an unknown instance, a bad ClassBench line.
    let o = palisade(&["bench", "classify", "--rules", f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--instance"));
    let o = palisade(&[
        "bench",
        "classify",
        "--rules",
        f,
        "--instance",
        "ins-nothere1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let bad = dir.path().join("bad.cb");
    std::fs::write(
        &bad,
        "@1.2.3.4/40\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\n",
    )
    .unwrap();
    let o = palisade(&["bench", "classify", "--rules", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 1"));
}
