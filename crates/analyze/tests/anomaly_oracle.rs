//! A differential test of the anomaly findings: random rule lists over a
//! small universe whose regions each have a representative packet, so a
//! brute-force first-match evaluation of those packets decides exactly
//! whether a rule is covered (ANO001 / ANO002) and whether it shares
//! packets with an earlier rule of the other action (ANO001 / ANO003).

mod common;

use common::rule;
use palisade_analyze::{check_text, CheckId, CheckOptions};
use palisade_model::Direction;
use palisade_policy::eval::first_match_index;
use palisade_policy::{evaluate, resolve_instance, Packet};
use proptest::prelude::*;
use std::collections::HashSet;
use std::net::IpAddr;

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "ALL"];
const PORTS: [&str; 4] = ["22", "80", "22-80", "ALL"];
const CIDRS: [&str; 5] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.1.0/24",
];
const ACTIONS: [&str; 2] = ["ACCEPT", "DROP"];

/// One packet in every region the rules above can tell apart.
fn grid() -> Vec<Packet> {
    let mut out = Vec::new();
    for protocol in [6u8, 17, 1] {
        for peer in ["11.0.0.1", "10.1.0.5", "10.0.2.5", "10.0.0.5", "10.0.1.5"] {
            for port in [0u16, 22, 50, 80, 1000] {
                out.push(Packet {
                    direction: Direction::Ingress,
                    protocol,
                    peer: peer.parse::<IpAddr>().expect("ip"),
                    port: Some(port),
                });
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn anomalies_match_brute_force_first_match(
        rules in prop::collection::vec((0usize..3, 0usize..4, 0usize..5, 0usize..2), 1..8)
    ) {
        let written: Vec<String> = rules
            .iter()
            .map(|&(p, port, c, a)| {
                let port = if PROTOCOLS[p] == "ALL" { "ALL" } else { PORTS[port] };
                rule(PROTOCOLS[p], port, CIDRS[c], ACTIONS[a])
            })
            .collect();
        let mut text = String::from("security_groups:\n  - id: sg-aaaaaaaa\n    policies:\n      Ingress:\n");
        for r in &written {
            text.push_str(&format!("        - {r}\n"));
        }
        text.push_str("instances:\n  - {id: ins-aaaaaaaa, private_ips: [192.0.2.1], security_groups: [sg-aaaaaaaa]}\n");
        let report = check_text(&text, &CheckOptions::default()).expect("check");
        let flagged = |id: CheckId| -> HashSet<usize> {
            report
                .findings
                .iter()
                .filter(|f| f.id == id)
                .filter_map(|f| f.location.rule.as_ref().map(|r| r.policy_index))
                .collect()
        };
        let (a1, a2, a3) = (flagged(CheckId::Ano001), flagged(CheckId::Ano002), flagged(CheckId::Ano003));
        let fleet = palisade_analyze::load(&text).expect("load").fleet;
        let rs = resolve_instance(&fleet, &"ins-aaaaaaaa".parse().expect("id")).expect("resolve");
        let rules = &rs.ingress;
        let grid = grid();
        for (i, r) in rules.iter().enumerate() {
            let mine: Vec<&Packet> = grid
                .iter()
                .filter(|p| r.matches(p.protocol, p.peer, p.port))
                .collect();
            let decides_some = mine.iter().any(|p| first_match_index(rules, p) == Some(i));
            let other_earlier = mine.iter().any(|p| {
                first_match_index(rules, p).is_some_and(|j| j < i)
                    && evaluate(&rs, p).action != r.action()
            });
            let covered = !decides_some;
            prop_assert_eq!(a1.contains(&i), covered && other_earlier, "ANO001 rule {} of {:?}", i, written);
            prop_assert_eq!(a2.contains(&i), covered && !other_earlier, "ANO002 rule {} of {:?}", i, written);
            prop_assert_eq!(a3.contains(&i), !covered && other_earlier, "ANO003 rule {} of {:?}", i, written);
        }
    }
}

fn arb_rules() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((0usize..3, 0usize..4, 0usize..5, 0usize..2), 1..6).prop_map(|rules| {
        rules
            .iter()
            .map(|&(p, port, c, a)| {
                let port = if PROTOCOLS[p] == "ALL" {
                    "ALL"
                } else {
                    PORTS[port]
                };
                rule(PROTOCOLS[p], port, CIDRS[c], ACTIONS[a])
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Across groups: a rule of the second group bound is judged against
    /// the first group's rules, for the packets it decides within its own group.
    #[test]
    fn cross_group_anomalies_match_brute_force(first in arb_rules(), second in arb_rules()) {
        let mut text = String::from("security_groups:\n");
        for (id, rules) in [("sg-aaaaaaaa", &first), ("sg-bbbbbbbb", &second)] {
            text.push_str(&format!("  - id: {id}\n    policies:\n      Ingress:\n"));
            for r in rules {
                text.push_str(&format!("        - {r}\n"));
            }
        }
        text.push_str("instances:\n  - {id: ins-aaaaaaaa, private_ips: [192.0.2.1], security_groups: [sg-aaaaaaaa, sg-bbbbbbbb]}\n");
        let report = check_text(&text, &CheckOptions::default()).expect("check");
        let flagged = |id: CheckId| -> HashSet<usize> {
            report
                .findings
                .iter()
                .filter(|f| f.id == id && f.location.instance.is_some())
                .filter_map(|f| f.location.rule.as_ref())
                .filter(|r| r.security_group_id.as_str() == "sg-bbbbbbbb")
                .map(|r| r.policy_index)
                .collect()
        };
        let (a1, a2, a3) = (flagged(CheckId::Ano001), flagged(CheckId::Ano002), flagged(CheckId::Ano003));
        let fleet = palisade_analyze::load(&text).expect("load").fleet;
        let rs = resolve_instance(&fleet, &"ins-aaaaaaaa".parse().expect("id")).expect("resolve");
        let n1 = first.len();
        let (g1, g2) = rs.ingress.split_at(n1);
        for (i, r) in g2.iter().enumerate() {
            // The packets rule i decides within its own group.
            let own: Vec<&Packet> = grid_packets()
                .iter()
                .filter(|p| first_match_index(g2, p) == Some(i))
                .collect();
            if own.is_empty() {
                continue;
            }
            let covered = own.iter().all(|p| first_match_index(g1, p).is_some());
            let conflict = own.iter().any(|p| {
                first_match_index(g1, p).is_some_and(|j| g1[j].action() != r.action())
            });
            prop_assert_eq!(a1.contains(&i), covered && conflict, "ANO001 {} of {:?} / {:?}", i, first, second);
            prop_assert_eq!(a2.contains(&i), covered && !conflict, "ANO002 {} of {:?} / {:?}", i, first, second);
            prop_assert_eq!(a3.contains(&i), !covered && conflict, "ANO003 {} of {:?} / {:?}", i, first, second);
        }
    }
}

fn grid_packets() -> &'static [Packet] {
    static GRID: std::sync::OnceLock<Vec<Packet>> = std::sync::OnceLock::new();
    GRID.get_or_init(grid)
}
