//! An agent cut off from its server (issue 8, item 3), with the real
//! binaries: `palisade serve` on 127.0.0.1 and `palisade agent` inside the
//! node's network namespace, reaching the server over a management link of
//! its own (`mgmt`, to a `ctl` namespace whose relay forwards to the server
//! through a Unix socket, so no traffic leaves the namespaces the test
//! creates and 127.0.0.1). The management link goes down for 10 s while the
//! rules change: the kernel keeps enforcing the old rules all along, and
//! once the link is back the new rules are enforced within 2 s.
//!
//! Root only (skipped with the reason otherwise); uses the agent crate's
//! namespace harness.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

#[path = "../../agent/tests/common/mod.rs"]
mod common;
mod mgmt;

use common::*;
use mgmt::{api, Children};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

#[test]
fn agent_cut_off_for_10_s_keeps_its_rules_and_converges_within_2_s_of_reconnecting() {
    let Some(_serial) = start("agent_cut_off_for_10_s") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let mut children = Children(Vec::new());
    let dir = tempfile::tempdir().unwrap();

    // The server, on 127.0.0.1 in this namespace.
    let (port, url) = mgmt::serve(bin(), dir.path(), &mut children);
    let c = mgmt::admin(&url, dir.path());

    // The management path: node --mgmt--> ctl relay --unix--> server.
    mgmt::connect(&mut lab, port, dir.path(), &mut children);

    let rule = |port: &str| json!({"Protocol": "TCP", "Port": port, "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"});
    let web = api(
        &c,
        "vpc",
        "CreateSecurityGroupWithPolicies",
        json!({"GroupName": "web", "GroupDescription": "node", "SecurityGroupPolicySet": {
            "Ingress": [rule("9090")],
            "Egress": [{"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
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
        json!({"Instances": [{"InstanceId": "ins-node0001", "PrivateIpAddresses": [NODE]}]}),
    );
    api(
        &c,
        "cvm",
        "AssociateSecurityGroups",
        json!({"SecurityGroupIds": [web], "InstanceIds": ["ins-node0001"]}),
    );
    let key = mgmt::instance_key(bin(), dir.path(), "ins-node0001");

    // The agent, in the node's namespace, with the CLI defaults.
    let agent_log = dir.path().join("agent.log");
    children.0.push(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("node"), bin(), "agent"])
            .args(["--server", mgmt::SERVER_IN_CTL])
            .args(["--instance-id", "ins-node0001", "--uplink", "eth0"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("PALISADE_SECRET_ID", &key.0)
            .env("PALISADE_SECRET_KEY", &key.1)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut enforces = |open: u16, closed: u16| {
        peer.cmd(&format!("tcp - {NODE} {open} 0.3")) == "ok"
            && peer.cmd(&format!("tcp - {NODE} {closed} 0.3")) == "fail"
    };
    assert!(
        eventually(Duration::from_secs(15), || enforces(9090, 22)),
        "first sync: {}",
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );

    // Cut the management link; change the rules while it is down.
    lab.exec("node", &["ip", "link", "set", "mgmt", "down"]);
    let cut = Instant::now();
    let s = api(
        &c,
        "vpc",
        "DescribeSecurityGroupPolicies",
        json!({"SecurityGroupId": web}),
    );
    let version = s["SecurityGroupPolicySet"]["Version"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        &c,
        "vpc",
        "ModifySecurityGroupPolicies",
        json!({"SecurityGroupId": web, "SecurityGroupPolicySet": {
            "Version": version, "Ingress": [rule("22")],
            "Egress": [{"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
        }}),
    );
    // For the 10 s of the cut the kernel holds the old rules.
    let mut checks = 0;
    while cut.elapsed() < Duration::from_secs(10) {
        assert!(
            enforces(9090, 22),
            "the rules changed while the agent was cut off"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(checks >= 5);

    // Link back: the new rules within 2 s.
    lab.exec("node", &["ip", "link", "set", "mgmt", "up"]);
    let back = Instant::now();
    let converged = eventually(Duration::from_secs(2), || enforces(22, 9090));
    eprintln!("converged {:?} after the link came back", back.elapsed());
    assert!(
        converged,
        "not converged within 2 s of reconnecting: {}",
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
}
