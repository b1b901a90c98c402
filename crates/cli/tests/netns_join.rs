//! Nodes that join their cluster by themselves, in the kernel (issue 22):
//! a real `palisade serve` on 127.0.0.1 and two `palisade agent
//! --join-token` processes, each enforcing inside its node's network
//! namespace (`--netns`). Both join with one token and are bound to the
//! cluster's node group, whose rule admits the group itself on TCP 8080:
//! each node then reaches the other on 8080 and nothing else does. A
//! restarted agent keeps its instance; `--leave` and `cluster prune` take
//! a node's address out of the other node's sets.
//!
//! Root only (skipped with the reason otherwise); uses the agent crate's
//! namespace harness.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;
#[path = "../../agent/tests/common/mod.rs"]
mod lab;

use common::{Server, BIN};
use lab::{eventually, Lab, Prober};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const CLS: &str = "cls-join0001";
const NODE1: &str = "198.18.0.11";
const NODE2: &str = "198.18.0.12";
const LAN: &str = "198.18.0.1";

/// An agent process, killed (and reaped) on drop.
struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node joined with `token` and enforcing in namespace `ns`.
fn start_agent(s: &Server, lab: &Lab, ns: &str, token: &Path, state: &Path, id: &str) -> AgentProc {
    let log = state.with_extension("log");
    AgentProc(
        Command::new(BIN)
            .args(["agent", "--server", &s.url, "--uplink", "eth0"])
            .args(["--netns", &lab.ns(ns), "--interval-ms", "200"])
            .arg("--join-token")
            .arg(token)
            .arg("--state-dir")
            .arg(state)
            .args(["--instance-id", id])
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn log(state: &Path) -> String {
    std::fs::read_to_string(state.with_extension("log")).unwrap_or_default()
}

fn leave(s: &Server, state: &Path) -> Output {
    Command::new(BIN)
        .args(["agent", "--leave", "--server", &s.url])
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The registered instances, sorted (nodes that join at once register in
/// either order).
fn instances(s: &Server) -> Vec<String> {
    let mut ids: Vec<String> = s.client().cvm("DescribeInstances", &json!({})).unwrap()
        ["InstanceSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `from` reaches `to` on TCP `port` (one short try).
fn reaches(p: &mut Prober, to: &str, port: u16) -> bool {
    p.cmd(&format!("tcp - {to} {port} 0.3")) == "ok"
}

#[test]
fn nodes_join_with_one_token_and_admit_each_other_until_they_leave() {
    let Some(_guard) =
        lab::start("nodes_join_with_one_token_and_admit_each_other_until_they_leave")
    else {
        return;
    };
    let mut lab = Lab::new();
    for ns in ["lan", "node1", "node2"] {
        lab.add_ns(ns);
    }
    lab.exec("lan", &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.exec("lan", &["ip", "link", "set", "br0", "up"]);
    lab.addr("lan", "br0", &format!("{LAN}/24"));
    for (node, port, ip) in [("node1", "n1", NODE1), ("node2", "n2", NODE2)] {
        lab.link("lan", port, node, "eth0");
        lab.exec("lan", &["ip", "link", "set", port, "master", "br0"]);
        lab.addr(node, "eth0", &format!("{ip}/24"));
        lab.serve(node, &[8080, 9090]);
    }
    let mut p1 = lab.prober("node1");
    let mut p2 = lab.prober("node2");
    let mut lan = lab.prober("lan");

    // The cluster and its node group: members reach each other on 8080.
    let s = Server::start();
    let c = s.client();
    let g = c
        .vpc(
            "CreateSecurityGroup",
            &json!({ "GroupName": format!("tke-node-{CLS}"), "GroupDescription": "nodes" }),
        )
        .unwrap()["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    for set in [
        json!({ "Ingress": [{ "Protocol": "TCP", "Port": "8080", "SecurityGroupId": g, "Action": "ACCEPT" }] }),
        json!({ "Egress": [{ "Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT" }] }),
    ] {
        c.vpc(
            "CreateSecurityGroupPolicies",
            &json!({ "SecurityGroupId": g, "SecurityGroupPolicySet": set }),
        )
        .unwrap();
    }
    c.palisade(
        "RegisterCluster",
        &json!({ "ClusterId": CLS, "ClusterCidr": "198.18.0.0/24", "ContainerCidr": "198.19.0.0/16" }),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = s.run(&[
        "cluster",
        "join-token",
        "create",
        "--cluster-id",
        CLS,
        "--allowed-cidrs",
        "198.18.0.0/24",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = dir.path().join("token");
    std::fs::write(&token, &o.stdout).unwrap();
    let state1: PathBuf = dir.path().join("node1");
    let state2: PathBuf = dir.path().join("node2");

    // Both join with the one token.
    let a1 = start_agent(&s, &lab, "node1", &token, &state1, "ins-node0001");
    let a2 = start_agent(&s, &lab, "node2", &token, &state2, "ins-node0002");
    let enforced = |p1: &mut Prober, p2: &mut Prober, lan: &mut Prober| {
        reaches(p1, NODE2, 8080)
            && reaches(p2, NODE1, 8080)
            && !reaches(p1, NODE2, 9090)
            && !reaches(lan, NODE1, 8080)
            && !reaches(lan, NODE2, 8080)
    };
    assert!(
        eventually(Duration::from_secs(20), || enforced(
            &mut p1, &mut p2, &mut lan
        )),
        "node1: {}\nnode2: {}",
        log(&state1),
        log(&state2)
    );
    let cls = c
        .palisade("DescribeClusters", &json!({ "ClusterIds": [CLS] }))
        .unwrap();
    // The two joined at once: either may come first.
    let mut nodes: Vec<String> =
        serde_json::from_value(cls["ClusterSet"][0]["Nodes"].clone()).unwrap();
    nodes.sort();
    assert_eq!(nodes, ["ins-node0001", "ins-node0002"]);
    for id in ["ins-node0001", "ins-node0002"] {
        let i = c
            .cvm("DescribeInstances", &json!({ "InstanceIds": [id] }))
            .unwrap();
        assert_eq!(i["InstanceSet"][0]["SecurityGroupIds"], json!([g]));
    }
    let identity = std::fs::read_to_string(state1.join("identity.json")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state1.join("identity.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A restarted agent keeps its instance (no second join, same key).
    drop(a1);
    let a1 = start_agent(&s, &lab, "node1", &token, &state1, "ins-node0001");
    assert!(
        eventually(Duration::from_secs(10), || log(&state1)
            .contains("instance ins-node0001 of cluster")),
        "{}",
        log(&state1)
    );
    assert_eq!(
        std::fs::read_to_string(state1.join("identity.json")).unwrap(),
        identity
    );
    assert_eq!(instances(&s), ["ins-node0001", "ins-node0002"]);
    let tokens = c.palisade("DescribeJoinTokens", &json!({})).unwrap();
    assert_eq!(tokens["JoinTokenSet"][0]["Uses"], 2);
    assert!(eventually(Duration::from_secs(10), || enforced(
        &mut p1, &mut p2, &mut lan
    )));

    // --leave: node2 stops admitting node1.
    drop(a1);
    let o = leave(&s, &state1);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!state1.join("identity.json").exists());
    assert_eq!(instances(&s), ["ins-node0002"]);
    assert!(
        eventually(Duration::from_secs(5), || !reaches(&mut p1, NODE2, 8080)),
        "node2 still admits node1 after it left: {}",
        log(&state2)
    );

    // Join again, then go silent: prune takes node1 out of node2's sets.
    let a1 = start_agent(&s, &lab, "node1", &token, &state1, "ins-node0001");
    assert!(
        eventually(Duration::from_secs(20), || enforced(
            &mut p1, &mut p2, &mut lan
        )),
        "{}",
        log(&state1)
    );
    drop(a1);
    std::thread::sleep(Duration::from_secs(9));
    let o = s.run(&[
        "cluster", "status", CLS, "--stale", "8s", "--output", "json",
    ]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    let stale: Vec<&Value> = status["Nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["Stale"] == json!(true))
        .collect();
    assert_eq!(stale.len(), 1, "{status}");
    assert_eq!(stale[0]["InstanceId"], "ins-node0001");
    let o = s.run(&["cluster", "prune", CLS, "--stale", "8s", "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pruned: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pruned["InstanceIdSet"], json!(["ins-node0001"]));
    assert_eq!(instances(&s), ["ins-node0002"]);
    assert!(
        eventually(Duration::from_secs(5), || !reaches(&mut p1, NODE2, 8080)),
        "node2 still admits node1 after the prune: {}",
        log(&state2)
    );
    // The pruned node's agent learns it on --leave: its key is gone.
    let o = leave(&s, &state1);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(a2);
}
