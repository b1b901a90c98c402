//! `diff --flows`, `plan --flows`, `apply --flows` and `suggest` as a user
//! runs them (issue 20): a change that cuts a recorded connection names
//! it and fails with `--fail-on-break`, `apply` then changes nothing, a
//! malformed records file names its line, and a suggestion's fragment is
//! taken by `plan` and covers every recorded flow.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Server, BIN};
use serde_json::{json, Value};
use std::process::{Command, Output};

const OLD: &str = r#"security_groups:
  - id: sg-web00001
    name: web
    policies:
      Ingress:
        - {Protocol: TCP, Port: "22", CidrBlock: 198.18.0.0/24, Action: ACCEPT, PolicyDescription: ssh from ops}
        - {Protocol: TCP, Port: "80,443", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: TCP, Port: "5432", SecurityGroupId: sg-app00001, Action: ACCEPT}
      Egress:
        - {Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
  - id: sg-app00001
    name: app
    policies: {Ingress: [], Egress: []}
instances:
  - {id: ins-web00001, name: web-1, private_ips: [198.18.1.10], security_groups: [sg-web00001]}
  - {id: ins-app00001, name: app-1, private_ips: [198.18.2.11], security_groups: [sg-app00001]}
  - {id: ins-app00002, name: app-2, private_ips: [198.18.2.12], security_groups: [sg-app00001]}
"#;

fn record(src: &str, port: u16, action: &str, index: Option<u32>, start: u64) -> Value {
    let mut r = json!({
        "InstanceId": "ins-web00001", "Direction": "ingress", "SrcAddr": src,
        "DstAddr": "198.18.1.10", "SrcPort": 40000, "DstPort": port, "Protocol": 6,
        "Action": action, "Decisions": 1, "Start": start, "End": start + 30
    });
    if let Some(i) = index {
        r["Rule"] = json!({"SecurityGroupId": "sg-web00001", "PolicyIndex": i, "Revision": 7});
    }
    r
}

fn records() -> Vec<Value> {
    vec![
        record("198.18.0.5", 22, "ACCEPT", Some(0), 1_764_720_000),
        record("198.18.0.40", 22, "ACCEPT", Some(0), 1_764_723_600),
        record("198.18.0.40", 22, "ACCEPT", Some(0), 1_764_810_000),
        record("203.0.113.7", 443, "ACCEPT", Some(1), 1_764_720_000),
        record("198.18.2.11", 5432, "ACCEPT", Some(2), 1_764_720_000),
        record("198.18.2.12", 5432, "ACCEPT", Some(2), 1_764_720_000),
        record("192.0.2.9", 3389, "DROP", None, 1_764_720_000),
    ]
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let f = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("old.yaml", OLD);
        // The change: SSH only from 198.18.0.0/28, which cuts 198.18.0.40.
        f.write(
            "new.yaml",
            &OLD.replace("CidrBlock: 198.18.0.0/24", "CidrBlock: 198.18.0.0/28"),
        );
        f.write(
            "flows.json",
            &serde_json::to_string_pretty(&records()).unwrap(),
        );
        let lines: Vec<String> = records().iter().map(|r| r.to_string()).collect();
        f.write("flows.jsonl", &(lines.join("\n") + "\n"));
        f
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

fn palisade(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn diff_with_flows_names_the_cut_connection_and_fails_on_break() {
    let f = Files::new();
    for src in ["flows.json", "flows.jsonl"] {
        let o = palisade(&[
            "diff",
            &f.path("old.yaml"),
            &f.path("new.yaml"),
            "--flows",
            &f.path(src),
            "--output",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let r = &v["replay"];
        assert_eq!(r["records"], 7);
        assert_eq!(r["breaks"], 2);
        assert_eq!(r["newly_allowed"], json!([]));
        let dropped = r["newly_dropped"].as_array().unwrap();
        assert_eq!(dropped.len(), 1, "{r:#}");
        let c = &dropped[0];
        assert_eq!(c["peer"], "198.18.0.40");
        assert_eq!(c["port"], 22);
        assert_eq!(c["records"], 2);
        assert_eq!(c["first_seen"], 1_764_723_600);
        assert_eq!(c["last_seen"], 1_764_810_030);
        assert_eq!(c["before"]["matched"]["policy_index"], 0);
        assert_eq!(c["after"]["action"], "DROP");
        assert!(v["diff"]["changed"].as_bool().unwrap());
    }
    let o = palisade(&[
        "diff",
        &f.path("old.yaml"),
        &f.path("new.yaml"),
        "--flows",
        &f.path("flows.jsonl"),
        "--fail-on-break",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o.stdout);
    assert!(out.contains("198.18.0.40"), "{out}");
    assert!(
        out.contains("1 flow(s) (2 record(s)) newly dropped, 2 of them recorded ACCEPT"),
        "{out}"
    );
    // A change that breaks nothing passes --fail-on-break (exit 1: changed).
    f.write(
        "ok.yaml",
        &OLD.replace("CidrBlock: 198.18.0.0/24", "CidrBlock: 198.18.0.0/23"),
    );
    let o = palisade(&[
        "diff",
        &f.path("old.yaml"),
        &f.path("ok.yaml"),
        "--flows",
        &f.path("flows.json"),
        "--fail-on-break",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
}

#[test]
fn malformed_records_name_their_line() {
    let f = Files::new();
    let mut lines: Vec<String> = records().iter().map(|r| r.to_string()).collect();
    lines[3] = lines[3].replace("\"Protocol\":6", "\"Protocol\":1");
    f.write("bad.jsonl", &lines.join("\n"));
    f.write("worse.jsonl", "{\"InstanceId\": \"ins-web00001\"}\n");
    for (file, line) in [("bad.jsonl", "line 4"), ("worse.jsonl", "line 1")] {
        let o = palisade(&[
            "diff",
            &f.path("old.yaml"),
            &f.path("new.yaml"),
            "--flows",
            &f.path(file),
        ]);
        assert_eq!(o.status.code(), Some(2));
        let e = text(&o.stderr);
        assert!(e.contains(line) && e.contains(file), "{e}");
    }
}

#[test]
fn suggest_covers_every_flow_and_its_fragment_is_a_fleet_file() {
    let f = Files::new();
    let o = palisade(&[
        "suggest",
        &f.path("old.yaml"),
        "--instance",
        "ins-web00001",
        "--flows",
        &f.path("flows.jsonl"),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["every_flow_accepted"], true);
    let ingress = &v["directions"][0];
    let rules = ingress["rules"].as_array().unwrap();
    assert_eq!(rules[0]["SecurityGroupId"], "sg-app00001", "{rules:#?}");
    assert_eq!(rules[1]["CidrBlock"], "198.18.0.0/26");
    assert!(ingress["exposure"]["suggested_v4"].as_f64().unwrap() < 100.0);
    // --group: the flows the group's rules accepted; YAML fragment.
    let o = palisade(&[
        "suggest",
        &f.path("old.yaml"),
        "--group",
        "sg-web00001",
        "--flows",
        &f.path("flows.json"),
        "--aggregate-v4",
        "32",
        "--output",
        "yaml",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let y = text(&o.stdout);
    assert!(
        y.contains("id: sg-web00001") && y.contains("198.18.0.40"),
        "{y}"
    );
    assert!(text(&o.stderr).contains("every observed flow accepted: yes"));
    let fragment: palisade_model::FleetFile = palisade_model::yaml::from_str(&y).unwrap();
    assert_eq!(fragment.security_groups.len(), 1);
}

#[test]
fn plan_and_apply_with_flows_against_a_server() {
    let f = Files::new();
    let s = Server::start();
    let o = s.run(&["apply", &f.path("old.yaml"), "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = s.run(&[
        "plan",
        &f.path("new.yaml"),
        "--flows",
        &f.path("flows.jsonl"),
        "--fail-on-break",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("198.18.0.40"),
        "{}",
        text(&o.stdout)
    );
    let o = s.run(&[
        "plan",
        &f.path("new.yaml"),
        "--flows",
        &f.path("flows.jsonl"),
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["replay"]["breaks"], 2);
    assert!(!v["plan"]["steps"].as_array().unwrap().is_empty());
    // apply --fail-on-break refuses and changes nothing.
    let before = s.export();
    let o = s.run(&[
        "apply",
        &f.path("new.yaml"),
        "--auto-approve",
        "--flows",
        &f.path("flows.jsonl"),
        "--fail-on-break",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("would drop 2 recorded connection(s)"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(s.export(), before);
    // A harmless change passes the gate: exit 0.
    f.write(
        "ok.yaml",
        &OLD.replace("CidrBlock: 198.18.0.0/24", "CidrBlock: 198.18.0.0/23"),
    );
    let o = s.run(&[
        "plan",
        &f.path("ok.yaml"),
        "--flows",
        &f.path("flows.json"),
        "--fail-on-break",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // A suggestion read from the server is a fragment `plan` and `apply`
    // take, and it cuts no recorded flow.
    let o = s.run(&[
        "suggest",
        "--instance",
        "ins-web00001",
        "--flows",
        &f.path("flows.jsonl"),
        "--output",
        "yaml",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    f.write("fragment.yaml", &text(&o.stdout));
    let o = s.run(&[
        "plan",
        &f.path("fragment.yaml"),
        "--flows",
        &f.path("flows.jsonl"),
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["replay"]["breaks"], 0, "{:#}", v["replay"]);
    let o = s.run(&[
        "apply",
        &f.path("fragment.yaml"),
        "--auto-approve",
        "--flows",
        &f.path("flows.jsonl"),
        "--fail-on-break",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(s.export().contains("suggested-ins-web00001"));
}
