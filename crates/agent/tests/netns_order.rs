//! Order and state in the kernel (DESIGN.md section 2, issue 4): first match
//! across rules and bound groups, replies of node-initiated connections,
//! revoked connections cut while allowed ones are left alone, membership
//! changes as set element updates, and the staged (chunked) load.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::compile::{compile, CompileOptions, Mode};
use palisade_agent::dataplane::Dataplane;
use palisade_agent::nft::MAX_STACKED_DELTAS;
use palisade_agent::Stamping;
use serde_json::json;
use std::time::{Duration, Instant};

fn tcp(port: u16, cidr: &str, action: &str) -> serde_json::Value {
    json!({"Protocol": "TCP", "Port": port.to_string(), "CidrBlock": cidr, "Action": action})
}

fn all(cidr: &str, action: &str) -> serde_json::Value {
    json!({"Protocol": "ALL", "Port": "ALL", "CidrBlock": cidr, "Action": action})
}

fn egress_all() -> serde_json::Value {
    json!([all("0.0.0.0/0", "ACCEPT")])
}

#[test]
fn drop_above_accept_wins() {
    let Some(_s) = start("drop_above_accept_wins") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let snap = ruleset(&[(
        "sg-order001",
        json!({"Ingress": [tcp(8080, "198.18.0.0/24", "DROP"), all("198.18.0.0/24", "ACCEPT")], "Egress": egress_all()}),
    )]);
    load(&lab, "node", "eth0", &snap);
    assert!(
        !peer.tcp(NODE, 8080),
        "DROP at index 0 wins over the ACCEPT below it"
    );
    assert!(peer.tcp(NODE, 9090), "other ports reach the ACCEPT");
    let c = counters(&lab, "node");
    assert!(c["sg-order001 ingress 0"] >= 1);
    assert!(c["sg-order001 ingress 1"] >= 1);
}

#[test]
fn second_group_consulted_only_when_the_first_has_no_match() {
    let Some(_s) = start("second_group_consulted_only_when_the_first_has_no_match") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let snap = ruleset(&[
        (
            "sg-first001",
            json!({"Ingress": [tcp(8080, "0.0.0.0/0", "ACCEPT")], "Egress": egress_all()}),
        ),
        (
            "sg-second01",
            json!({"Ingress": [all("0.0.0.0/0", "DROP")], "Egress": []}),
        ),
    ]);
    load(&lab, "node", "eth0", &snap);
    assert!(peer.tcp(NODE, 8080), "the first group decides 8080");
    assert!(
        !peer.tcp(NODE, 9090),
        "9090: no match in the first group, the second drops"
    );
    let swapped = ruleset(&[
        (
            "sg-first001",
            json!({"Ingress": [tcp(8080, "0.0.0.0/0", "DROP")], "Egress": egress_all()}),
        ),
        (
            "sg-second01",
            json!({"Ingress": [all("0.0.0.0/0", "ACCEPT")], "Egress": []}),
        ),
    ]);
    load(&lab, "node", "eth0", &swapped);
    assert!(!peer.tcp(NODE, 8080));
    assert!(peer.tcp(NODE, 9090));
    let c = counters(&lab, "node");
    assert!(c["sg-second01 ingress 0"] >= 1, "{c:?}");
}

#[test]
fn replies_to_node_initiated_connections_pass_without_ingress_rules() {
    let Some(_s) = start("replies_to_node_initiated_connections_pass_without_ingress_rules") else {
        return;
    };
    let mut lab = pair();
    let mut node = lab.prober("node");
    let mut peer = lab.prober("peer");
    let snap = ruleset(&[(
        "sg-egress01",
        json!({"Ingress": [], "Egress": egress_all()}),
    )]);
    load(&lab, "node", "eth0", &snap);
    assert!(node.tcp(PEER, 8080), "TCP replies pass");
    assert!(node.udp(PEER, 8080), "UDP replies pass");
    assert!(node.ping(PEER), "ICMP echo replies pass");
    assert!(!peer.tcp(NODE, 8080), "but nothing may start from outside");
    assert!(!peer.ping(NODE));
    // And with no egress rule, the node cannot start anything either.
    load(
        &lab,
        "node",
        "eth0",
        &ruleset(&[("sg-none0001", json!({"Ingress": [], "Egress": []}))]),
    );
    assert!(!node.tcp(PEER, 8080));
}

#[test]
fn removed_rule_cuts_its_established_connection_and_spares_the_others() {
    let Some(_s) = start("removed_rule_cuts_its_established_connection_and_spares_the_others")
    else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let both = ruleset(&[(
        "sg-cut00001",
        json!({"Ingress": [tcp(8080, "198.18.0.0/24", "ACCEPT"), tcp(9090, "198.18.0.0/24", "ACCEPT")], "Egress": []}),
    )]);
    load(&lab, "node", "eth0", &both);
    assert_eq!(peer.cmd(&format!("open a - {NODE} 8080 1.0")), "ok");
    assert_eq!(peer.cmd(&format!("open b - {NODE} 9090 1.0")), "ok");
    for _ in 0..3 {
        assert_eq!(peer.cmd("send a 1.0"), "ok");
        assert_eq!(peer.cmd("send b 1.0"), "ok");
    }
    // Re-loading the same rules (an agent restart) disturbs nothing.
    load(&lab, "node", "eth0", &both);
    assert_eq!(peer.cmd("send a 1.0"), "ok", "same rules, same generation");
    assert_eq!(peer.cmd("send b 1.0"), "ok");

    let only_9090 = ruleset(&[(
        "sg-cut00001",
        json!({"Ingress": [tcp(9090, "198.18.0.0/24", "ACCEPT")], "Egress": []}),
    )]);
    let t = Instant::now();
    load(&lab, "node", "eth0", &only_9090);
    assert_eq!(
        peer.cmd("send a 1.0"),
        "fail",
        "the revoked connection is cut"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "cut within 2 s");
    assert_eq!(
        peer.cmd("send b 1.0"),
        "ok",
        "the still-allowed connection is untouched"
    );
    assert_eq!(peer.cmd("send b 1.0"), "ok");
}

#[test]
fn group_reference_membership_changes_are_element_updates() {
    let Some(_s) = start("group_reference_membership_changes_are_element_updates") else {
        return;
    };
    membership_changes(Mode::Linear, usize::MAX, "set", "sg_peers001_v4");
}

#[test]
fn group_reference_membership_changes_are_map_element_updates() {
    let Some(_s) = start("group_reference_membership_changes_are_map_element_updates") else {
        return;
    };
    membership_changes(Mode::Maps, usize::MAX, "map", "ingress_v4_tcp");
}

#[test]
fn maps_mode_keeps_a_large_reference_in_its_set() {
    let Some(_s) = start("maps_mode_keeps_a_large_reference_in_its_set") else {
        return;
    };
    // Every reference counts as large here.
    membership_changes(Mode::Maps, 0, "set", "sg_peers001_v4");
}

/// A member joins, leaves, and comes and goes many times more, each time
/// as an element delta (of the group's set, or of the verdict map in maps
/// mode unless the reference is hoisted); connections follow. `kind` and
/// `listed` name the set or map whose elements change.
fn membership_changes(mode: Mode, hoist_min_peers: usize, kind: &str, listed: &str) {
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let snap_with = |members: &[&str]| {
        let mut s = ruleset(&[(
            "sg-web00001",
            json!({"Ingress": [tcp(8080, "198.18.0.0/24", "ACCEPT")], "Egress": []}),
        )]);
        // The same rule as a reference to sg-peers001 with these members.
        let members = members
            .iter()
            .map(|m| palisade_policy::codec::parse_addr_range("t", m).unwrap())
            .collect();
        let group = palisade_model::Peer::SecurityGroup("sg-peers001".parse().unwrap());
        s.ingress[0] = s.ingress[0].clone().with_peer(group, members);
        s
    };
    let opts = CompileOptions {
        uplinks: vec!["eth0".into()],
        mode,
        hoist_min_peers,
        ..Default::default()
    };
    let c1 = compile(&snap_with(&["198.18.0.3"]), &opts).unwrap();
    // The agent's stamps: each change takes the next generation.
    let mut dp = Stamping::new(lab.dataplane("node"));
    dp.apply(&c1).unwrap();
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 1.0")), "ok");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.4 {NODE} 8080 1.0")), "fail");
    assert_eq!(
        peer.cmd(&format!("open k 198.18.0.3 {NODE} 8080 1.0")),
        "ok"
    );

    // .4 joins: one element add.
    let c2 = compile(&snap_with(&["198.18.0.3", "198.18.0.4"]), &opts).unwrap();
    let d = c2.set_deltas(&c1).unwrap();
    dp.apply_deltas(&c2, &d).unwrap();
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.4 {NODE} 8080 1.0")), "ok");
    assert_eq!(
        peer.cmd("send k 1.0"),
        "ok",
        ".3 still a member: its connection lives"
    );

    // .3 leaves: its established connection is cut, .4 keeps working.
    let c3 = compile(&snap_with(&["198.18.0.4"]), &opts).unwrap();
    let d = c3.set_deltas(&c2).unwrap();
    dp.apply_deltas(&c3, &d).unwrap();
    assert_eq!(
        peer.cmd("send k 1.0"),
        "fail",
        "a removed member's connection is cut"
    );
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 1.0")), "fail");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.4 {NODE} 8080 1.0")), "ok");
    let listing = lab.exec("node", &["nft", "list", kind, "inet", "palisade", listed]);
    assert!(
        listing.contains("198.18.0.4") && !listing.contains("198.18.0.3"),
        "{listing}"
    );
    // The netlink view agrees with nft's listing: the rule counters are the
    // same, and the ruleset generation holds across reads and moves with a
    // load.
    let listed_counters = dp.read().unwrap().unwrap().counters;
    let netlink_counters = dp.counters().unwrap();
    assert_eq!(netlink_counters, listed_counters);
    assert!(
        netlink_counters["sg-web00001 ingress 0"].packets > 0,
        "{netlink_counters:?}"
    );
    let g = dp
        .generation()
        .unwrap()
        .expect("nf_tables tells its generation");
    dp.read().unwrap();
    assert_eq!(dp.generation().unwrap(), Some(g), "a read commits nothing");
    let d = c2.set_deltas(&c3).unwrap();
    dp.apply_deltas(&c2, &d).unwrap();
    assert_ne!(dp.generation().unwrap(), Some(g), "a load moves it");
    let d = c3.set_deltas(&c2).unwrap();
    dp.apply_deltas(&c3, &d).unwrap();
    // Each delta put its generation ahead of the one it replaced.
    let compares = |lab: &Lab| {
        lab.exec(
            "node",
            &[
                "nft",
                "list",
                "chain",
                "inet",
                "palisade",
                "ingress_current",
            ],
        )
        .matches("palisade ingress current")
        .count()
    };
    assert_eq!(compares(&lab), 5, "the first load's and four deltas'");

    // Many more changes: the stacked generation rules are cleared by a
    // whole-table load every MAX_STACKED_DELTAS deltas, and the verdicts
    // stay right throughout.
    let mut last = c3;
    for i in 0..MAX_STACKED_DELTAS + 4 {
        let members: &[&str] = if i % 2 == 0 {
            &["198.18.0.4", "198.18.0.5"]
        } else {
            &["198.18.0.4"]
        };
        let next = compile(&snap_with(members), &opts).unwrap();
        let d = next.set_deltas(&last).unwrap();
        dp.apply_deltas(&next, &d).unwrap();
        last = next;
        assert!(compares(&lab) <= MAX_STACKED_DELTAS + 1);
    }
    assert!(compares(&lab) < 10, "a whole-table load cleared them");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.5 {NODE} 8080 1.0")), "fail");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.4 {NODE} 8080 1.0")), "ok");
}

#[test]
fn large_sets_load_in_chunks_with_an_atomic_switch() {
    let Some(_s) = start("large_sets_load_in_chunks_with_an_atomic_switch") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let members: Vec<String> = (0..300)
        .map(|i| format!("198.19.{}.{}", 100 + i / 100, (i % 100) * 2 + 1))
        .collect();
    let snap_with = |extra: &str| {
        let mut s = ruleset(&[(
            "sg-big00001",
            json!({"Ingress": [tcp(8080, "198.18.0.0/24", "ACCEPT")], "Egress": []}),
        )]);
        let members = members
            .iter()
            .map(String::as_str)
            .chain([extra])
            .map(|m| palisade_policy::codec::parse_addr_range("t", m).unwrap())
            .collect();
        let group = palisade_model::Peer::SecurityGroup("sg-many0001".parse().unwrap());
        s.ingress[0] = s.ingress[0].clone().with_peer(group, members);
        s
    };
    let opts = CompileOptions {
        uplinks: vec!["eth0".into()],
        ..Default::default()
    };
    let mut dp = Stamping::new(lab.dataplane("node"));
    dp.inner.chunk = 50;
    dp.apply(&compile(&snap_with("198.18.0.3"), &opts).unwrap())
        .unwrap();
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 1.0")), "ok");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.4 {NODE} 8080 1.0")), "fail");
    let listing = lab.exec("node", &["nft", "list", "table", "inet", "palisade"]);
    assert!(
        listing.contains("set sg_many0001_v4_s "),
        "staged under the alternate name"
    );
    // A second staged load swaps to the other set names.
    dp.apply(&compile(&snap_with("198.18.0.4"), &opts).unwrap())
        .unwrap();
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.4 {NODE} 8080 1.0")), "ok");
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 1.0")), "fail");
    let listing = lab.exec("node", &["nft", "list", "table", "inet", "palisade"]);
    assert_eq!(
        listing.matches("\tset ").count(),
        2,
        "old sets deleted: {listing}"
    );
    // And a normal load after that replaces everything.
    dp.inner.chunk = 100_000;
    dp.apply(&compile(&snap_with("198.18.0.3"), &opts).unwrap())
        .unwrap();
    assert_eq!(peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 1.0")), "ok");
}
