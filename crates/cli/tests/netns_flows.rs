//! Flow records and audit mode end to end (issue 18), with the real
//! binaries: `palisade serve` on 127.0.0.1, `palisade agent --flow-log` in
//! the node's namespace (reaching the server over its management link),
//! real TCP connections from a peer namespace over IPv4 and IPv6, and
//! `palisade flows` and `palisade enforcement` as an operator runs them:
//!
//! - a blocked connection appears in `palisade flows --verdict drop` within
//!   5 s, naming the DROP rule that decided or the default drop;
//! - an accepted one names its rule and, after it closes, its packets and
//!   bytes;
//! - in audit mode a connection a DROP rule covers passes and is recorded
//!   `WOULD_DROP` with that rule, and enforcing again drops it;
//! - an agent's key cannot report records for another instance, and a
//!   malformed report is refused with a Tencent error and stores nothing.
//!
//! Root only (skipped with the reason otherwise).

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

#[path = "../../agent/tests/common/mod.rs"]
mod common;
mod mgmt;

use common::*;
use mgmt::Children;
use palisade_agent::client::HttpControlPlane;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

fn api(c: &HttpControlPlane, service: &str, action: &str, params: Value) -> Value {
    try_api(c, service, action, params).unwrap_or_else(|e| panic!("{action}: {e}"))
}

fn try_api(
    c: &HttpControlPlane,
    service: &str,
    action: &str,
    params: Value,
) -> Result<Value, palisade_agent::AgentError> {
    let version = if service == "palisade" {
        "2026-11-01"
    } else {
        "2017-03-12"
    };
    c.call_service(service, version, action, &params)
}

/// `palisade flows ARGS --output json` against the server.
fn flows(url: &str, creds: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(bin())
        .args(["flows", "--server", url, "--credentials"])
        .arg(creds)
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "palisade flows: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(records: &'a [Value], action: &str, port: u16, v6: bool) -> Option<&'a Value> {
    records.iter().find(|r| {
        r["Action"] == action
            && r["DstPort"] == port
            && r["SrcAddr"].as_str().is_some_and(|a| a.contains(':') == v6)
    })
}

#[test]
fn flow_records_name_the_deciding_rule_and_audit_mode_records_would_drop() {
    let Some(_serial) = start("flow_records_name_the_deciding_rule") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let mut children = Children(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let (port, url) = mgmt::serve(bin(), dir.path(), &mut children);
    let creds_path = dir.path().join("data").join("admin-credentials.json");
    let c = mgmt::admin(&url, dir.path());
    mgmt::connect(&mut lab, port, dir.path(), &mut children);

    let web = api(
        &c,
        "vpc",
        "CreateSecurityGroupWithPolicies",
        json!({"GroupName": "web", "GroupDescription": "node", "SecurityGroupPolicySet": {
            "Ingress": [
                {"Protocol": "TCP", "Port": "9090", "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"},
                {"Protocol": "TCP", "Port": "9090", "Ipv6CidrBlock": "2001:db8::/64", "Action": "ACCEPT"},
                {"Protocol": "TCP", "Port": "8080", "CidrBlock": "198.18.0.0/24", "Action": "DROP"},
                {"Protocol": "TCP", "Port": "8080", "Ipv6CidrBlock": "2001:db8::/64", "Action": "DROP"}
            ],
            "Egress": [
                {"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"},
                {"Protocol": "ALL", "Port": "ALL", "Ipv6CidrBlock": "::/0", "Action": "ACCEPT"}
            ]
        }}),
    );
    let web = web["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        &c,
        "palisade",
        "RegisterInstances",
        json!({"Instances": [
            {"InstanceId": "ins-node0001", "PrivateIpAddresses": [NODE, NODE6]},
            {"InstanceId": "ins-other001", "PrivateIpAddresses": ["198.18.0.99"]}
        ]}),
    );
    api(
        &c,
        "cvm",
        "AssociateSecurityGroups",
        json!({"SecurityGroupIds": [web], "InstanceIds": ["ins-node0001"]}),
    );
    let key = mgmt::instance_key(bin(), dir.path(), "ins-node0001");
    let agent_log = dir.path().join("agent.log");
    children.0.push(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("node"), bin(), "agent"])
            .args(["--server", mgmt::SERVER_IN_CTL])
            .args(["--instance-id", "ins-node0001", "--uplink", "eth0"])
            .args(["--flow-log", "--flow-interval-secs", "1"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("PALISADE_SECRET_ID", &key.0)
            .env("PALISADE_SECRET_KEY", &key.1)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(15), || {
            peer.cmd(&format!("tcp - {NODE} 9090 0.3")) == "ok"
                && peer.cmd(&format!("tcp - {NODE} 22 0.3")) == "fail"
        }),
        "first sync: {}",
        log()
    );

    for (dst, v6) in [(NODE, false), (NODE6, true)] {
        let blocked_at = Instant::now();
        assert!(peer.tcp(dst, 9090), "{dst} 9090 is open");
        assert!(!peer.tcp(dst, 8080), "{dst} 8080 meets the DROP rule");
        assert!(!peer.tcp(dst, 22), "{dst} 22 meets the default drop");
        let mut records = Vec::new();
        let seen = eventually(Duration::from_secs(5), || {
            records = flows(&url, &creds_path, &["--verdict", "drop", "--since", "1h"]);
            find(&records, "DROP", 8080, v6).is_some() && find(&records, "DROP", 22, v6).is_some()
        });
        assert!(
            seen,
            "{dst}: drops not listed within 5 s: {records:#?}\n{}",
            log()
        );
        eprintln!(
            "{dst}: drops listed {:?} after the attempts",
            blocked_at.elapsed()
        );
        let rule = &find(&records, "DROP", 8080, v6).unwrap()["Rule"];
        assert_eq!(rule["SecurityGroupId"], web.as_str());
        assert_eq!(rule["PolicyIndex"], 2 + u64::from(v6));
        assert!(rule["Revision"].as_u64().unwrap() > 0);
        let default = find(&records, "DROP", 22, v6).unwrap();
        assert!(default.get("Rule").is_none(), "the default drop: {default}");
        assert_eq!(default["InstanceId"], "ins-node0001");
        assert_eq!(default["Direction"], "ingress");
        // The accepted one: its rule, and once closed its counts.
        let mut accepted = Vec::new();
        let closed = eventually(Duration::from_secs(10), || {
            accepted = flows(
                &url,
                &creds_path,
                &["--verdict", "accept", "--port", "9090"],
            );
            accepted.iter().any(|r| {
                r["Decisions"] == 0 && r["SrcAddr"].as_str().is_some_and(|a| a.contains(':') == v6)
            })
        });
        assert!(closed, "{dst}: no closing record: {accepted:#?}\n{}", log());
        let close = accepted
            .iter()
            .find(|r| {
                r["Decisions"] == 0 && r["SrcAddr"].as_str().is_some_and(|a| a.contains(':') == v6)
            })
            .unwrap();
        assert_eq!(close["Rule"]["PolicyIndex"], u64::from(v6));
        assert!(close["Packets"].as_u64().unwrap() >= 4, "{close}");
        assert!(close["Bytes"].as_u64().unwrap() > 100, "{close}");
    }

    // Rule hits: the accepting rules decided, the DROP rules too; shown
    // by `palisade hits`.
    let mut hits = Value::Null;
    let counted = eventually(Duration::from_secs(20), || {
        hits = api(
            &c,
            "palisade",
            "DescribeRuleHits",
            json!({"SecurityGroupId": web}),
        );
        hits["RuleHitSet"].as_array().is_some_and(|s| {
            s.iter()
                .filter(|h| h["Direction"] == "ingress")
                .all(|h| h["Hits"].as_u64() > Some(0))
        })
    });
    assert!(counted, "rule hits: {hits:#}\n{}", log());
    assert!(hits["RuleHitSet"][0]["LastUsed"].as_u64().is_some());
    let out = Command::new(bin())
        .args(["hits", "--server", &url, "--credentials"])
        .arg(&creds_path)
        .arg(&web)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("ACCEPT TCP 9090 198.18.0.0/24"),
        "{table}"
    );

    // Audit mode: the DROP rule's connection passes, recorded WOULD_DROP.
    let out = Command::new(bin())
        .args(["enforcement", "--server", &url, "--credentials"])
        .arg(&creds_path)
        .args(["ins-node0001", "audit"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = api(
        &c,
        "palisade",
        "DescribeInstanceStatus",
        json!({"InstanceIds": ["ins-node0001"]}),
    );
    assert_eq!(status["InstanceStatusSet"][0]["Enforcement"], "AUDIT");
    assert!(
        eventually(Duration::from_secs(10), || peer.tcp(NODE, 8080)),
        "audit mode did not pass 8080: {}",
        log()
    );
    assert!(peer.tcp(NODE6, 8080), "audit passes IPv6 too");
    let mut records = Vec::new();
    let seen = eventually(Duration::from_secs(5), || {
        records = flows(&url, &creds_path, &["--verdict", "would-drop"]);
        find(&records, "WOULD_DROP", 8080, false).is_some()
            && find(&records, "WOULD_DROP", 8080, true).is_some()
    });
    assert!(seen, "no WOULD_DROP: {records:#?}");
    assert_eq!(
        find(&records, "WOULD_DROP", 8080, false).unwrap()["Rule"]["PolicyIndex"],
        2
    );
    api(
        &c,
        "palisade",
        "ModifyInstanceEnforcement",
        json!({"InstanceId": "ins-node0001", "Enforcement": "ENFORCE"}),
    );
    assert!(
        eventually(Duration::from_secs(10), || !peer.tcp(NODE, 8080)),
        "enforcing again did not drop 8080"
    );

    // The agent's key: its own instance only; a bad batch stores nothing.
    let agent = HttpControlPlane::new(&url, &key.0, &key.1, Duration::from_secs(10)).unwrap();
    let record = json!({
        "InstanceId": "ins-other001", "Direction": "ingress", "SrcAddr": "198.18.0.2",
        "DstAddr": "198.18.0.99", "SrcPort": 1, "DstPort": 2, "Protocol": 6, "Action": "DROP",
        "Decisions": 1, "Start": 1, "End": 2
    });
    let refused = try_api(
        &agent,
        "palisade",
        "ReportFlowRecords",
        json!({"InstanceId": "ins-other001", "FlowRecords": [record]}),
    );
    assert_eq!(
        refused.unwrap_err().api_code(),
        Some("AuthFailure.UnauthorizedOperation")
    );
    let mut good = record.clone();
    good["InstanceId"] = json!("ins-node0001");
    let mut bad = good.clone();
    bad["Protocol"] = json!(1); // ICMP with ports
    let malformed = try_api(
        &agent,
        "palisade",
        "ReportFlowRecords",
        json!({"InstanceId": "ins-node0001", "FlowRecords": [good, bad]}),
    );
    let e = malformed.unwrap_err();
    assert!(
        e.api_code()
            .is_some_and(|c| c.starts_with("InvalidParameterValue")),
        "{e}"
    );
    // The good record of the batch (the only one that starts at 1) is not
    // stored either.
    let stored = api(&c, "palisade", "DescribeFlowRecords", json!({"EndTime": 1}));
    assert_eq!(stored["TotalCount"], 0, "a refused batch stores nothing");
}
