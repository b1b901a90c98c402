//! The seed's cluster, packet for packet (issue 4, DESIGN.md section 3): two
//! nodes with routed pod CIDRs behind a `cbr0` bridge, a client standing for
//! the Internet and the load balancer, and a kube-proxy-like DNAT with
//! masquerade on each node sending a NodePort to a pod on the *other* node.
//! Both nodes get the seed's default node group (from the `tke` crate),
//! compiled and loaded through `NftDataplane` with `--netns`.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::compile::Mode;
use palisade_policy::Ruleset;
use serde_json::{json, Value};

const CLUSTER_CIDR: &str = "198.18.0.0/24";
const CONTAINER_CIDR: &str = "198.19.0.0/16";
const NODE1: &str = "198.18.0.11";
const NODE2: &str = "198.18.0.12";
const POD1A: &str = "198.19.1.10";
const POD1B: &str = "198.19.1.11";
const POD2: &str = "198.19.2.10";
const CLIENT: &str = "203.0.113.10";
const NODE_PORT: u16 = 30080;
const POD_PORT: u16 = 8080;

fn node_group() -> Value {
    let nets = palisade_tke::ClusterNetworks::parse(CLUSTER_CIDR, CONTAINER_CIDR).unwrap();
    serde_json::to_value(palisade_tke::node_template(&nets).unwrap().to_wire()).unwrap()
}

fn seed_snapshot(edit: impl FnOnce(&mut Value)) -> Ruleset {
    let mut g = node_group();
    edit(&mut g);
    ruleset(&[("sg-node0001", g)])
}

/// Builds the cluster; returns the lab.
fn cluster() -> Lab {
    let mut lab = Lab::new();
    for ns in ["lan", "client", "node1", "node2", "pod1a", "pod1b", "pod2"] {
        lab.add_ns(ns);
    }
    // The VPC: a bridge in `lan`, which also routes to the client.
    lab.exec("lan", &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.exec("lan", &["ip", "link", "set", "br0", "up"]);
    lab.addr("lan", "br0", "198.18.0.1/24");
    for (node, port, ip) in [("node1", "n1", NODE1), ("node2", "n2", NODE2)] {
        lab.link("lan", port, node, "eth0");
        lab.exec("lan", &["ip", "link", "set", port, "master", "br0"]);
        lab.addr(node, "eth0", &format!("{ip}/24"));
        lab.route(node, &["default", "via", "198.18.0.1"]);
    }
    lab.link("lan", "c", "client", "eth0");
    lab.addr("lan", "c", "203.0.113.1/24");
    lab.addr("client", "eth0", &format!("{CLIENT}/24"));
    lab.route("client", &["default", "via", "203.0.113.1"]);
    lab.route("lan", &["198.19.1.0/24", "via", NODE1]);
    lab.route("lan", &["198.19.2.0/24", "via", NODE2]);
    // Pods behind cbr0 on each node; routed pod CIDRs between the nodes.
    for (node, cidr_gw, pods, other_cidr, other_node) in [
        (
            "node1",
            "198.19.1.1/24",
            vec![("pod1a", "vp1a", POD1A), ("pod1b", "vp1b", POD1B)],
            "198.19.2.0/24",
            NODE2,
        ),
        (
            "node2",
            "198.19.2.1/24",
            vec![("pod2", "vp2", POD2)],
            "198.19.1.0/24",
            NODE1,
        ),
    ] {
        lab.exec(node, &["ip", "link", "add", "cbr0", "type", "bridge"]);
        lab.exec(node, &["ip", "link", "set", "cbr0", "up"]);
        lab.addr(node, "cbr0", cidr_gw);
        let gw = cidr_gw.split('/').next().unwrap();
        for (pod, port, ip) in pods {
            lab.link(node, port, pod, "eth0");
            lab.exec(node, &["ip", "link", "set", port, "master", "cbr0"]);
            lab.addr(pod, "eth0", &format!("{ip}/24"));
            lab.route(pod, &["default", "via", gw]);
        }
        lab.route(node, &[other_cidr, "via", other_node]);
    }
    // kube-proxy: NodePort -> the pod on the other node, masqueraded.
    for (node, target) in [("node1", POD2), ("node2", POD1A)] {
        let rules = format!(
            "table ip kubeproxy {{
               chain pre {{ type nat hook prerouting priority dstnat; policy accept;
                 fib daddr type local tcp dport {NODE_PORT} dnat to {target}:{POD_PORT}
                 fib daddr type local udp dport {NODE_PORT} dnat to {target}:{POD_PORT}
               }}
               chain post {{ type nat hook postrouting priority srcnat; policy accept;
                 ct status dnat oifname \"eth0\" masquerade
               }}
             }}"
        );
        let ns = lab.ns(node);
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    for ns in ["pod1a", "pod1b", "pod2"] {
        lab.serve(ns, &[POD_PORT]);
    }
    lab.serve("node1", &[22, POD_PORT]);
    lab
}

#[test]
fn seed_cluster_node_group_enforced_packet_for_packet() {
    seed_cluster(
        Mode::Linear,
        "seed_cluster_node_group_enforced_packet_for_packet",
    );
}

#[test]
fn seed_cluster_with_verdict_maps() {
    seed_cluster(Mode::Maps, "seed_cluster_with_verdict_maps");
}

fn seed_cluster(mode: Mode, name: &str) {
    let Some(_serial) = start(name) else {
        return;
    };
    let load = |lab: &Lab, ns: &str, uplink: &str, s: &Ruleset| load_mode(lab, ns, uplink, s, mode);
    let mut lab = cluster();
    let mut client = lab.prober("client");
    let mut pod1a = lab.prober("pod1a");
    // Before any group: everything flows (sanity of the lab itself).
    assert!(
        client.tcp(NODE1, NODE_PORT),
        "lab: NodePort without filtering"
    );
    assert!(
        pod1a.tcp(POD2, POD_PORT),
        "lab: pod to pod without filtering"
    );

    let full = seed_snapshot(|_| {});
    load(&lab, "node1", "eth0", &full);
    load(&lab, "node2", "eth0", &full);
    let before1 = counters(&lab, "node1");
    let before2 = counters(&lab, "node2");

    // The NodePort works from the client over TCP and UDP, through both nodes.
    assert!(
        client.tcp(NODE1, NODE_PORT),
        "NodePort TCP via node1 -> pod on node2"
    );
    assert!(
        client.udp(NODE1, NODE_PORT),
        "NodePort UDP via node1 -> pod on node2"
    );
    assert!(
        client.tcp(NODE2, NODE_PORT),
        "NodePort TCP via node2 -> pod on node1"
    );
    assert!(
        client.udp(NODE2, NODE_PORT),
        "NodePort UDP via node2 -> pod on node1"
    );
    // Cross-node pod to pod, ping, and SSH dropped.
    assert!(pod1a.tcp(POD2, POD_PORT), "cross-node pod to pod");
    assert!(pod1a.udp(POD2, POD_PORT), "cross-node pod to pod UDP");
    assert!(client.ping(NODE1), "ping node1");
    assert!(client.ping(NODE2), "ping node2");
    assert!(
        !client.tcp(NODE1, 22),
        "SSH from the client must be dropped"
    );

    // The kernel's own counters say which rule decided (OPTE-style deltas).
    let after1 = counters(&lab, "node1");
    let after2 = counters(&lab, "node2");
    let delta =
        |a: &std::collections::BTreeMap<String, u64>,
         b: &std::collections::BTreeMap<String, u64>,
         k: &str| { a.get(k).copied().unwrap_or(0) - b.get(k).copied().unwrap_or(0) };
    assert!(
        delta(&after1, &before1, "sg-node0001 ingress 2") >= 1,
        "TCP NodePort rule on node1: {after1:?}"
    );
    assert!(
        delta(&after1, &before1, "sg-node0001 ingress 3") >= 1,
        "UDP NodePort rule on node1"
    );
    assert!(
        delta(&after1, &before1, "sg-node0001 ingress 4") >= 1,
        "ICMP rule on node1"
    );
    assert!(
        delta(&after1, &before1, "palisade ingress default drop") >= 1,
        "SSH hit the default drop"
    );
    assert!(
        delta(&after2, &before2, "sg-node0001 ingress 1") >= 1,
        "masqueraded NodePort via the cluster-CIDR rule on node2: {after2:?}"
    );
    assert!(
        delta(&after2, &before2, "sg-node0001 ingress 0") >= 1,
        "pod to pod via the container-CIDR rule on node2"
    );
    assert!(
        delta(&after1, &before1, "sg-node0001 egress 0") >= 1,
        "egress allow-all on node1"
    );

    // Without the container-CIDR rule: cross-node pod traffic fails, same node works.
    let no_pods = seed_snapshot(|g| {
        g["Ingress"].as_array_mut().unwrap().remove(0);
    });
    load(&lab, "node1", "eth0", &no_pods);
    load(&lab, "node2", "eth0", &no_pods);
    assert!(
        !pod1a.tcp(POD2, POD_PORT),
        "cross-node pod to pod must fail without the container-CIDR rule"
    );
    assert!(
        pod1a.tcp(POD1B, POD_PORT),
        "same-node pod to pod still works"
    );
    assert!(
        client.tcp(NODE1, NODE_PORT),
        "NodePort still works (cluster-CIDR rule)"
    );

    // Without the cluster-CIDR rule: the NodePort path through the other node fails.
    let no_nodes = seed_snapshot(|g| {
        g["Ingress"].as_array_mut().unwrap().remove(1);
    });
    load(&lab, "node1", "eth0", &no_nodes);
    load(&lab, "node2", "eth0", &no_nodes);
    assert!(
        !client.tcp(NODE1, NODE_PORT),
        "NodePort via node1 to node2's pod must fail without the cluster-CIDR rule"
    );
    assert!(!client.udp(NODE1, NODE_PORT), "UDP too");
    assert!(
        pod1a.tcp(POD2, POD_PORT),
        "pod to pod works again (container-CIDR rule back)"
    );

    // Add TCP 22 from the client: SSH connects.
    let ssh = seed_snapshot(|g| {
        g["Ingress"].as_array_mut().unwrap().push(json!({
            "Protocol": "TCP", "Port": "22", "CidrBlock": format!("{CLIENT}/32"), "Action": "ACCEPT"
        }));
    });
    load(&lab, "node1", "eth0", &ssh);
    assert!(
        client.tcp(NODE1, 22),
        "SSH from the client after adding TCP 22"
    );
}
