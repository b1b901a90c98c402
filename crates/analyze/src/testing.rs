//! Fixtures of the replay and suggestion tests: small random rule lists
//! written as a fleet file (one node bound to one group, and a "peers"
//! group whose two members sit inside the address pool), and random flow
//! records of that node over a pool of addresses and ports that lands on
//! and around the rules' edges.

#![allow(clippy::unwrap_used)] // test fixtures

use palisade_model::flow::{FlowRecord, RuleRef, Verdict};
use palisade_model::Direction;
use proptest::prelude::*;

/// One rule as a fleet file writes it.
#[derive(Debug, Clone)]
pub struct TestRule {
    pub action: &'static str,
    pub protocol: &'static str,
    pub port: &'static str,
    pub peer: &'static str,
    pub egress: bool,
}

impl TestRule {
    pub fn new(
        action: &'static str,
        protocol: &'static str,
        port: &'static str,
        peer: &'static str,
    ) -> Self {
        TestRule {
            action,
            protocol,
            port,
            peer,
            egress: false,
        }
    }

    fn yaml(&self) -> String {
        let peer = if self.peer.starts_with("sg-") {
            format!("SecurityGroupId: {}", self.peer)
        } else if self.peer.contains(':') {
            format!("Ipv6CidrBlock: \"{}\"", self.peer)
        } else {
            format!("CidrBlock: {}", self.peer)
        };
        format!(
            "        - {{Protocol: {}, Port: \"{}\", {peer}, Action: {}}}\n",
            self.protocol, self.port, self.action
        )
    }
}

/// The peers' pool, both families, nested blocks and single addresses.
pub const PEERS: [&str; 8] = [
    "198.18.0.0/24",
    "198.18.0.0/28",
    "198.18.0.5",
    "198.18.1.0/24",
    "0.0.0.0/0",
    "2001:db8::/64",
    "::/0",
    "sg-peers001",
];
/// Addresses flows come from.
pub const ADDRS: [&str; 9] = [
    "198.18.0.5",
    "198.18.0.6",
    "198.18.0.17",
    "198.18.1.9",
    "198.18.2.1",
    "203.0.113.9",
    "2001:db8::5",
    "2001:db8:1::5",
    "198.18.0.20",
];

pub fn rule() -> impl Strategy<Value = TestRule> {
    (
        prop::sample::select(vec!["ACCEPT", "DROP"]),
        prop::sample::select(vec!["TCP", "UDP", "ICMP", "ALL"]),
        prop::sample::select(vec!["22", "80,443", "80-90", "53", "ALL"]),
        prop::sample::select(PEERS.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(action, protocol, port, peer, egress)| TestRule {
            action,
            protocol,
            port: if matches!(protocol, "TCP" | "UDP") {
                port
            } else {
                "ALL"
            },
            peer,
            egress,
        })
}

pub fn rules_strategy(n: usize) -> impl Strategy<Value = Vec<TestRule>> {
    prop::collection::vec(rule(), 0..n)
}

/// A fleet: `ins-node0001` bound to `sg-aaaaaaaa` holding `rules`, and
/// `ins-peer0001`/`ins-peer0002` (198.18.0.6, 198.18.0.17, 2001:db8::5)
/// bound to `sg-peers001`, which has no rules.
pub fn fleet_yaml(rules: &[TestRule]) -> String {
    let mut y = String::from(
        "security_groups:\n  - id: sg-aaaaaaaa\n    name: node\n    policies:\n      Ingress:\n",
    );
    let (eg, ing): (Vec<&TestRule>, Vec<&TestRule>) = rules.iter().partition(|r| r.egress);
    if ing.is_empty() {
        y = y.replace("      Ingress:\n", "      Ingress: []\n");
    }
    for r in &ing {
        y.push_str(&r.yaml());
    }
    if eg.is_empty() {
        y.push_str("      Egress: []\n");
    } else {
        y.push_str("      Egress:\n");
        for r in &eg {
            y.push_str(&r.yaml());
        }
    }
    y.push_str("  - id: sg-peers001\n    name: peers\n    policies: {Ingress: [], Egress: []}\n");
    y.push_str("instances:\n");
    y.push_str("  - {id: ins-node0001, name: node, private_ips: [198.18.5.1], security_groups: [sg-aaaaaaaa]}\n");
    y.push_str("  - {id: ins-peer0001, name: p1, private_ips: [198.18.0.6, 2001:db8::5], security_groups: [sg-peers001]}\n");
    y.push_str("  - {id: ins-peer0002, name: p2, private_ips: [198.18.0.17], security_groups: [sg-peers001]}\n");
    y
}

/// A record of `instance` (accepted by `sg-aaaaaaaa` Ingress[0], which
/// matters only where the recorded rule is looked at).
pub fn record(
    instance: &str,
    direction: Direction,
    protocol: u8,
    peer: &str,
    port: Option<u16>,
) -> FlowRecord {
    let peer: std::net::IpAddr = peer.parse().unwrap();
    let local: std::net::IpAddr = if peer.is_ipv4() {
        "198.18.5.1".parse().unwrap()
    } else {
        "2001:db8:5::1".parse().unwrap()
    };
    let (src, dst) = match direction {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    let ported = matches!(protocol, 6 | 17);
    FlowRecord {
        instance_id: instance.parse().unwrap(),
        direction,
        src_addr: src,
        dst_addr: dst,
        src_port: if ported { Some(40000) } else { None },
        dst_port: if ported { port } else { None },
        protocol,
        action: Verdict::Accept,
        rule: Some(RuleRef {
            security_group_id: "sg-aaaaaaaa".parse().unwrap(),
            policy_index: 0,
            revision: 1,
        }),
        decisions: 1,
        packets: None,
        bytes: None,
        start: 1_700_000_000,
        end: 1_700_000_060,
    }
}

/// A random record of `ins-node0001` over the address and port pools.
pub fn flow() -> impl Strategy<Value = FlowRecord> {
    (
        any::<bool>(),
        prop::sample::select(vec![6u8, 17, 1, 58, 47]),
        prop::sample::select(ADDRS.to_vec()),
        prop::sample::select(vec![22u16, 23, 53, 80, 85, 90, 91, 443, 8080]),
        any::<bool>(),
    )
        .prop_map(|(egress, mut protocol, peer, port, accepted)| {
            let v6 = peer.contains(':');
            // ICMP and ICMPv6 exist in their own family only.
            if (protocol == 1 && v6) || (protocol == 58 && !v6) {
                protocol = 6;
            }
            let d = if egress {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let mut r = record("ins-node0001", d, protocol, peer, Some(port));
            if !accepted {
                r.action = Verdict::Drop;
                r.rule = None;
            }
            r
        })
}
