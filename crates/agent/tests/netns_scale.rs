//! Scale (run with `cargo test -p palisade-agent --test netns_scale -- --ignored --nocapture`):
//! Tencent's limits at their largest for one node: 5 groups x 100 ingress
//! rules, a fifth of them referencing groups of 2,000 members (in maps
//! mode also 100). Prints compile, load and read times; asserts only that
//! they load.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::compile::{compile, CompileOptions, Mode};
use palisade_agent::dataplane::Dataplane;
use palisade_model::{Action, AddrRange, Cidr, Direction, Family, Peer, PortRange};
use palisade_policy::Ruleset;
use palisade_policy::{ProtocolMatch, ResolvedRule, RuleOrigin, ServiceMatch};
use std::time::Instant;

fn big_snapshot(members: u128) -> Ruleset {
    let mut ingress = Vec::new();
    for g in 0..5u32 {
        for i in 0..100u32 {
            let n = g * 100 + i;
            let (peers, peer) = if i % 5 == 0 {
                // 2,000 members: single addresses spread over 198.18.0.0/15.
                let base = u128::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)));
                let members = (0..members)
                    .map(|k| {
                        let a = base + (k * 61 + u128::from(n)) % 131_072;
                        AddrRange::new(Family::V4, a, a).unwrap()
                    })
                    .collect();
                (
                    palisade_policy::resolve::merge_addr_ranges(members),
                    Peer::SecurityGroup(format!("sg-ref{n:05}").parse().unwrap()),
                )
            } else {
                let a = u128::from(u32::from(std::net::Ipv4Addr::new(203, 0, 113, 0)))
                    + u128::from(n % 256);
                (
                    vec![AddrRange::new(Family::V4, a, a).unwrap()],
                    Peer::Cidr(Cidr::parse_v4("t", "203.0.113.0/24").unwrap()),
                )
            };
            ingress.push(ResolvedRule::from_sets(
                RuleOrigin {
                    security_group_id: format!("sg-scale{g:03}").parse().unwrap(),
                    direction: Direction::Ingress,
                    policy_index: i as usize,
                },
                if i % 7 == 3 {
                    Action::Drop
                } else {
                    Action::Accept
                },
                vec![ServiceMatch {
                    protocol: ProtocolMatch::Number(6),
                    ports: vec![
                        PortRange::new(1000 + (n as u16 % 500), 1100 + (n as u16 % 500)).unwrap(),
                    ],
                }],
                peers,
                peer,
            ));
        }
    }
    Ruleset {
        security_groups: Vec::new(),
        ingress,
        egress: vec![],
    }
}

#[test]
#[ignore = "a measurement, not a check; run with --ignored"]
fn largest_node_ruleset_compiles_and_loads() {
    let Some(_s) = start("largest_node_ruleset_compiles_and_loads") else {
        return;
    };
    let mut lab = Lab::new();
    lab.add_ns("scale");
    for (mode, members, chunk) in [
        (Mode::Linear, 2000, palisade_agent::nft::DEFAULT_CHUNK),
        (Mode::Linear, 2000, 300_000),
        (Mode::Maps, 100, palisade_agent::nft::DEFAULT_CHUNK),
        (Mode::Maps, 2000, palisade_agent::nft::DEFAULT_CHUNK),
    ] {
        let snap = big_snapshot(members);
        let t = Instant::now();
        let c = compile(
            &snap,
            &CompileOptions {
                uplinks: vec!["eth0".into()],
                mode,
                ..Default::default()
            },
        )
        .unwrap();
        let compiled = t.elapsed();
        let script = c.script();
        let t = Instant::now();
        let mut dp = lab.dataplane("scale");
        dp.chunk = chunk;
        dp.apply(&c).unwrap();
        let loaded = t.elapsed();
        let t = Instant::now();
        let live = lab.dataplane("scale").read().unwrap().unwrap();
        let read = t.elapsed();
        eprintln!(
            "{mode:?}, {members} members per reference, chunk {chunk}: {} rules, {} set elements, script {} KiB: compile {compiled:?}, load {loaded:?}, read {read:?}, {} counters",
            snap.ingress.len(),
            c.element_count(),
            script.len() / 1024,
            live.counters.len()
        );
    }
}
