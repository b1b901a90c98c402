//! No lockout (issue 19, items 1, 2 and 5), with the real binaries:
//! `palisade serve` on 127.0.0.1 and `palisade agent` inside the node's
//! namespace, whose management link (`mgmt`, to the server's relay) is one
//! of its uplinks, so the node's groups filter it like any other.
//!
//! - Bound to a group with no rule at all, the agent still fetches and
//!   applies the next revision (its own sockets are exempt), while another
//!   process on the node cannot reach the server's address and port.
//! - A failsafe entry keeps SSH open from the management address, and only
//!   from there, over IPv4 and IPv6; `DescribeInstanceStatus` lists the
//!   entries and `explain` names the entry that decided.
//! - At boot (no table) with no server to reach, the agent loads the last
//!   applied ruleset it kept on disk; with none kept, the failsafe entries
//!   alone.
//!
//! Root only (skipped with the reason otherwise).

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

#[path = "../../agent/tests/common/mod.rs"]
mod common;
mod mgmt;

use common::*;
use mgmt::{api, Children};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// SSH's failsafe entries: from the management hosts only.
const FAILSAFE: [&str; 2] = ["tcp:22@198.18.0.2/32", "ingress:tcp:22@2001:db8::2/128"];

/// Starts `palisade agent` in the node's namespace, filtering `eth0` and
/// the management link, with the failsafe entries and `state`.
fn agent(lab: &Lab, server: &str, key: &(String, String), state: &Path, log: &Path) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns("node"), bin(), "agent"])
        .args(["--server", server, "--instance-id", "ins-node0001"])
        .args(["--uplink", "eth0,mgmt", "--interval-ms", "200"])
        .arg("--state-dir")
        .arg(state);
    for f in FAILSAFE {
        cmd.args(["--failsafe", f]);
    }
    cmd.env("PALISADE_SECRET_ID", &key.0)
        .env("PALISADE_SECRET_KEY", &key.1)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Whether a process of the node (root, not the agent) can open a TCP
/// connection to `host:port` within 1.5 s.
fn node_connects(lab: &Lab, host: &str, port: u16) -> bool {
    let script = format!(
        "import socket\ns=socket.socket()\ns.settimeout(1.5)\n\
         try:\n    s.connect(('{host}',{port}))\n    print('connected')\n\
         except OSError:\n    print('blocked')"
    );
    lab.exec("node", &["python3", "-c", &script]).trim() == "connected"
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_agent_is_never_cut_off_failsafe_keeps_ssh_and_a_boot_fails_safe() {
    let Some(_serial) = start("the_agent_is_never_cut_off") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let mut children = Children(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let (port, url) = mgmt::serve(bin(), dir.path(), &mut children);
    let c = mgmt::admin(&url, dir.path());
    mgmt::connect(&mut lab, port, dir.path(), &mut children);
    let mut ctl = lab.prober("ctl");
    let server_host = "198.18.1.2";
    assert!(
        node_connects(&lab, server_host, 9180),
        "before any rule, the node reaches the relay"
    );

    // A group with no rule at all, in either direction.
    let sg = api(
        &c,
        "vpc",
        "CreateSecurityGroup",
        json!({"GroupName": "nothing", "GroupDescription": "no rule at all"}),
    );
    let sg = sg["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        &c,
        "palisade",
        "RegisterInstances",
        json!({"Instances": [{"InstanceId": "ins-node0001", "PrivateIpAddresses": [NODE, NODE6]}]}),
    );
    api(
        &c,
        "cvm",
        "AssociateSecurityGroups",
        json!({"SecurityGroupIds": [sg], "InstanceIds": ["ins-node0001"]}),
    );
    let key = mgmt::instance_key(bin(), dir.path(), "ins-node0001");
    let state = dir.path().join("state");
    let log_path = dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let running = agent(&lab, mgmt::SERVER_IN_CTL, &key, &state, &log_path);

    // The agent applied the group and reports it, failsafe entries included.
    let status = || {
        api(
            &c,
            "palisade",
            "DescribeInstanceStatus",
            json!({"InstanceIds": ["ins-node0001"]}),
        )
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            let s = status();
            s["InstanceStatusSet"][0]["AppliedRevision"] == s["Revision"]
                && s["InstanceStatusSet"][0]["Failsafe"]
                    == json!([
                        "ingress:tcp:22@198.18.0.2/32",
                        "ingress:tcp:22@2001:db8::2/128"
                    ])
        }),
        "{:#}\n{}",
        status(),
        log()
    );
    // Nothing passes but the failsafe entries, and only from their blocks.
    assert!(peer.tcp(NODE, 22), "SSH from the management address");
    assert!(!peer.tcp(NODE, 9090), "no rule: dropped");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.3 {NODE} 22 1.0")), "fail");
    assert_eq!(peer.cmd(&format!("tcp 2001:db8::2 {NODE6} 22 1.0")), "ok");
    assert_eq!(
        peer.cmd(&format!("tcp 2001:db8:1::5 {NODE6} 22 1.0")),
        "fail"
    );
    assert!(
        !ctl.tcp("198.18.1.1", 22),
        "SSH over mgmt is not from the block"
    );
    // Another process on the node cannot use the agent's way out.
    assert!(!node_connects(&lab, server_host, 9180), "{}", log());

    // `explain` names the failsafe entry that decides, from the server's
    // report of the node, and the default drop outside its block.
    let creds = dir.path().join("data").join("admin-credentials.json");
    let explain = |peer_ip: &str| -> Value {
        let out = Command::new(bin())
            .args(["explain", "--server", &url, "--credentials"])
            .arg(&creds)
            .args(["--instance", "ins-node0001", "--direction", "ingress"])
            .args(["--protocol", "tcp", "--peer", peer_ip, "--port", "22"])
            .args(["--output", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let by_failsafe = explain("198.18.0.2");
    assert_eq!(by_failsafe["action"], "ACCEPT", "{by_failsafe:#}");
    assert_eq!(by_failsafe["failsafe"], "ingress:tcp:22@198.18.0.2/32");
    let outside = explain("198.18.0.3");
    assert_eq!(outside["action"], "DROP", "{outside:#}");
    assert!(outside.get("failsafe").is_none());

    // The agent fetches and applies the next revision through the filter.
    api(
        &c,
        "vpc",
        "CreateSecurityGroupPolicies",
        json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [
            {"Protocol": "TCP", "Port": "9090", "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"}
        ]}}),
    );
    assert!(
        eventually(Duration::from_secs(10), || peer.tcp(NODE, 9090)),
        "the next revision arrived: {}",
        log()
    );
    assert!(!node_connects(&lab, server_host, 9180));
    stop(running);

    // A reboot (no table) with no server to reach: the kept revision.
    let nowhere = "http://198.18.1.2:9";
    lab.exec("node", &["nft", "delete", "table", "inet", "palisade"]);
    assert!(peer.tcp(NODE, 8080), "no table: open");
    let booted = agent(&lab, nowhere, &key, &state, &log_path);
    assert!(
        eventually(Duration::from_secs(10), || !peer.tcp(NODE, 8080)),
        "{}",
        log()
    );
    assert!(peer.tcp(NODE, 9090), "the kept rule: {}", log());
    assert!(peer.tcp(NODE, 22));
    assert!(
        log().contains("loaded the last applied revision"),
        "{}",
        log()
    );
    stop(booted);

    // Nothing kept: the failsafe entries only.
    lab.exec("node", &["nft", "delete", "table", "inet", "palisade"]);
    for f in std::fs::read_dir(&state).unwrap() {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ruleset-")
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    let bare = agent(&lab, nowhere, &key, &state, &log_path);
    assert!(
        eventually(Duration::from_secs(10), || !peer.tcp(NODE, 9090)),
        "{}",
        log()
    );
    assert!(peer.tcp(NODE, 22), "failsafe: {}", log());
    assert!(!peer.tcp(NODE, 8080));
    assert!(log().contains("failsafe entries only"), "{}", log());
    stop(bare);
}
