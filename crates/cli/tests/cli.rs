//! The offline commands as a user runs them: `tke template`, `validate`,
//! `explain`; exit codes, JSON shapes and error lines.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tke-cluster.yaml");
    root.to_string_lossy().into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

#[test]
fn tke_template_node_json_is_the_seeds_table() {
    let o = palisade(&[
        "tke",
        "template",
        "node",
        "--container-cidr",
        "172.16.0.0/16",
        "--cluster-cidr",
        "10.0.0.0/16",
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let ingress = v["Ingress"].as_array().expect("Ingress");
    let rows: Vec<(String, String, String, String)> = ingress
        .iter()
        .map(|r| {
            (
                r["Protocol"].as_str().unwrap().to_string(),
                r["Port"].as_str().unwrap().to_string(),
                r["CidrBlock"].as_str().unwrap().to_string(),
                r["Action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("ALL", "ALL", "172.16.0.0/16"),
        ("ALL", "ALL", "10.0.0.0/16"),
        ("TCP", "30000-32768", "0.0.0.0/0"),
        ("UDP", "30000-32768", "0.0.0.0/0"),
        ("ICMP", "ALL", "0.0.0.0/0"),
    ];
    assert_eq!(rows.len(), want.len());
    for (got, want) in rows.iter().zip(want) {
        assert_eq!(
            (
                got.0.as_str(),
                got.1.as_str(),
                got.2.as_str(),
                got.3.as_str()
            ),
            (want.0, want.1, want.2, "ACCEPT")
        );
    }
    assert_eq!(
        ingress[0]["PolicyDescription"],
        "Enable the communication between pods in the container network."
    );
    let egress = v["Egress"].as_array().expect("Egress");
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0]["CidrBlock"], "0.0.0.0/0");
    assert_eq!(egress[0]["Protocol"], "ALL");
}

#[test]
fn tke_template_master_keeps_the_seeds_port_list() {
    let o = palisade(&[
        "tke",
        "template",
        "master",
        "--container-cidr",
        "172.16.0.0/16",
        "--cluster-cidr",
        "10.0.0.0/16",
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let ingress = v["Ingress"].as_array().expect("Ingress");
    assert_eq!(ingress.len(), 9);
    assert_eq!(
        ingress[3]["Port"],
        "60001,60002,10250,2380,2379,53,17443,50055,443,61678"
    );
    assert_eq!(ingress[3]["CidrBlock"], "10.0.0.0/16");
    assert_eq!(ingress[4]["Port"], "60001,60002,10250,2380,2379,53,17443");
    assert_eq!(ingress[4]["CidrBlock"], "172.16.0.0/16");
}

#[test]
fn tke_template_table_and_bad_cidr() {
    let o = palisade(&[
        "tke",
        "template",
        "master",
        "--container-cidr",
        "172.16.0.0/16",
        "--cluster-cidr",
        "10.0.0.0/16",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("Inbound rules") && out.contains("Outbound rules"));
    assert!(out.contains("Ping operations are supported."));
    let o = palisade(&[
        "tke",
        "template",
        "node",
        "--container-cidr",
        "172.16.0.0/99",
        "--cluster-cidr",
        "10.0.0.0/16",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--container-cidr \"172.16.0.0/99\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_accepts_the_example_and_the_templates_output() {
    let o = palisade(&["validate", &example()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let t = palisade(&[
        "tke",
        "template",
        "node",
        "--container-cidr",
        "172.16.0.0/16",
        "--cluster-cidr",
        "10.0.0.0/16",
        "--output",
        "json",
    ]);
    let f = temp_file("template.json", &stdout(&t));
    let o = palisade(&["validate", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("valid security group policy set"));
}

#[test]
fn validate_reports_one_line_per_problem() {
    let f = temp_file(
        "bad.yaml",
        "security_groups:\n  - id: sg-aaaaaaaa\n    policies:\n      Ingress:\n        - {Protocol: TCP, Port: 80-20, CidrBlock: 10.0.0.0/8, Action: ACCEPT}\n        - {Protocol: TCP, Port: 22, SecurityGroupId: sg-nothere1, Action: ACCEPT}\n",
    );
    let o = palisade(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].ends_with(
        "bad.yaml:5: security_groups[0].policies.Ingress[0].Port: InvalidParameterValue.Malformed: Port \"80-20\": range start is above its end"
    ), "{}", lines[0]);
    assert!(
        lines[1].contains(":6: ") && lines[1].contains("ResourceNotFound"),
        "{}",
        lines[1]
    );

    let o = palisade(&["validate", f.to_str().unwrap(), "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["code"], "InvalidParameterValue.Malformed");
    assert_eq!(v["problems"][0]["line"], 5);
}

#[test]
fn validate_reads_tccli_output() {
    let f = temp_file(
        "group.json",
        r#"{"SecurityGroupPolicySet":{"Version":"2","Ingress":[{"PolicyIndex":0,"Protocol":"TCP","Port":"99999","CidrBlock":"192.0.2.4","Ipv6CidrBlock":"","SecurityGroupId":"","AddressTemplate":{"AddressId":"","AddressGroupId":""},"ServiceTemplate":{"ServiceId":"","ServiceGroupId":""},"Action":"ACCEPT","PolicyDescription":"","ModifyTime":""}],"Egress":[]},"RequestId":"x"}"#,
    );
    let o = palisade(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("SecurityGroupPolicySet.Ingress[0].Port: InvalidParameterValue.Range"),
        "{}",
        stdout(&o)
    );
    let o = palisade(&["validate", "/nonexistent/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"));
}

fn explain(args: &[&str]) -> (Option<i32>, Value) {
    let fleet = example();
    let mut all = vec!["explain", "--fleet", &fleet, "--instance", "ins-node0001"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let o = palisade(&all);
    let v = serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null);
    (o.status.code(), v)
}

#[test]
fn explain_names_the_deciding_rule_across_groups() {
    // the first bound group has no rule for telnet from outside, so the second group's DROP decides
    let (code, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "tcp",
        "--peer",
        "198.51.100.7",
        "--port",
        "23",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(v["action"], "DROP");
    assert_eq!(v["matched"]["security_group_id"], "sg-ops00001");
    assert_eq!(v["matched"]["direction"], "ingress");
    assert_eq!(v["matched"]["policy_index"], 0);

    // the first group decides when it matches; the second is not looked at
    let (code, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "udp",
        "--peer",
        "198.51.100.7",
        "--port",
        "32768",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(v["matched"]["security_group_id"], "sg-node0001");
    assert_eq!(v["matched"]["policy_index"], 3);
    assert_eq!(v["rules_checked"], 4);
    assert_eq!(
        v["security_groups"],
        serde_json::json!(["sg-node0001", "sg-ops00001"])
    );

    // from the cluster network, telnet is accepted by the first group before the DROP
    let (code, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "tcp",
        "--peer",
        "10.0.0.12",
        "--port",
        "23",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(v["matched"]["security_group_id"], "sg-node0001");
    assert_eq!(v["matched"]["policy_index"], 1);

    // address template with an IP range, inside and just outside
    let (_, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "tcp",
        "--peer",
        "192.0.2.20",
        "--port",
        "22",
    ]);
    assert_eq!(v["action"], "ACCEPT");
    assert_eq!(v["matched"]["policy_index"], 1);
    let (code, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "tcp",
        "--peer",
        "192.0.2.21",
        "--port",
        "22",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(v["matched"], Value::Null);
    assert_eq!(v["action"], "DROP");
}

#[test]
fn explain_default_drop_ipv6_and_icmp() {
    let (code, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "icmpv6",
        "--peer",
        "2001:db8::1",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(v["matched"], Value::Null);
    assert!(v["reason"].as_str().unwrap().contains("default drop"));
    let (code, v) = explain(&[
        "--direction",
        "ingress",
        "--protocol",
        "icmp",
        "--peer",
        "203.0.113.50",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(v["matched"]["policy_index"], 4);
    let (code, v) = explain(&[
        "--direction",
        "egress",
        "--protocol",
        "tcp",
        "--peer",
        "2001:db8::1",
        "--port",
        "443",
    ]);
    assert_eq!(code, Some(1), "egress to IPv6 has no rule: {v}");
}

#[test]
fn explain_human_form_and_bad_input() {
    let fleet = example();
    let o = palisade(&[
        "explain",
        "--fleet",
        &fleet,
        "--instance",
        "ins-node0001",
        "--direction",
        "ingress",
        "--protocol",
        "tcp",
        "--peer",
        "203.0.113.9",
        "--port",
        "22",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("sg-ops00001 Ingress[1]") && out.contains("ssh from the office"),
        "{out}"
    );

    for (args, needle) in [
        (
            vec![
                "--direction",
                "sideways",
                "--protocol",
                "tcp",
                "--peer",
                "192.0.2.1",
                "--port",
                "1",
            ],
            "--direction",
        ),
        (
            vec![
                "--direction",
                "ingress",
                "--protocol",
                "tcp",
                "--peer",
                "192.0.2.300",
                "--port",
                "1",
            ],
            "--peer",
        ),
        (
            vec![
                "--direction",
                "ingress",
                "--protocol",
                "tcp",
                "--peer",
                "192.0.2.1",
                "--port",
                "70000",
            ],
            "--port",
        ),
        (
            vec![
                "--direction",
                "ingress",
                "--protocol",
                "tcp",
                "--peer",
                "192.0.2.1",
            ],
            "--port",
        ),
        (
            vec![
                "--direction",
                "ingress",
                "--protocol",
                "bogus",
                "--peer",
                "192.0.2.1",
            ],
            "--protocol",
        ),
    ] {
        let mut all = vec!["explain", "--fleet", &fleet, "--instance", "ins-node0001"];
        all.extend(args);
        let o = palisade(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        assert!(stderr(&o).contains(needle), "{all:?}: {}", stderr(&o));
    }
    let o = palisade(&[
        "explain",
        "--fleet",
        &fleet,
        "--instance",
        "ins-zzzzzzzz",
        "--direction",
        "ingress",
        "--protocol",
        "icmp",
        "--peer",
        "192.0.2.1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ins-zzzzzzzz"));
}

/// Flow logging and audit mode in `nft compile`: off by default; with
/// `--flow-log` every decision logs to the group; `--audit` logs its
/// would-be drops to the group given, with or without `--flow-log`, and
/// drops nothing.
#[test]
fn nft_compile_logs_decisions_only_when_asked_and_audit_drops_nothing() {
    let fleet = example();
    let base = [
        "nft",
        "compile",
        "--fleet",
        &fleet,
        "--instance",
        "ins-node0001",
        "--uplink",
        "eth0",
    ];
    let plain = palisade(&base);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(!stdout(&plain).contains(" log "), "no logging by default");
    let mut args = base.to_vec();
    args.extend(["--flow-log", "--flow-log-group", "99"]);
    let logged = stdout(&palisade(&args));
    assert!(
        logged.contains("group 99") && logged.contains("pal A ingress sg-"),
        "{logged}"
    );
    assert!(
        logged.contains("limit flowlog_limit") && logged.contains("counter flowlog_suppressed")
    );
    let mut args = base.to_vec();
    args.extend(["--audit", "--flow-log-group", "77"]);
    let audit = stdout(&palisade(&args));
    assert!(
        audit.contains("group 77") && audit.contains("pal W ingress default"),
        "{audit}"
    );
    let drops: Vec<&str> = audit.lines().filter(|l| l.contains(" drop ")).collect();
    assert!(
        drops.iter().all(|l| l.contains("ct state invalid")),
        "audit drops nothing but invalid packets: {drops:#?}"
    );
}
