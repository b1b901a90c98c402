//! First match as sets (DESIGN.md sections 2 and 3): the exact set of
//! packets each rule of an ordered list decides (its own box minus
//! everything the rules above it match), and the set the list accepts.
//! Shadowed and redundant rule detection, the semantic diff, reachability
//! and the nft verdict-map compiler all start from here.
//!
//! Invariants (property-tested below): the decided sets are pairwise
//! disjoint, their union is the union of all the rules' boxes, and a packet
//! is in rule i's decided set exactly when first-match evaluation picks
//! rule i for it.

use crate::resolve::ResolvedRule;
use crate::space::{PacketSet, PortSet, ProtoPorts};
use crate::ProtocolMatch;
use palisade_model::Action;

/// Every packet `rule` matches, ignoring the rules above it; built in one
/// pass over the peers (a reference of 100,000 addresses is one product,
/// not 100,000 unions).
pub fn rule_space(rule: &ResolvedRule) -> PacketSet {
    let mut protos = ProtoPorts::default();
    for s in rule.services() {
        let (lo, hi) = match s.protocol {
            ProtocolMatch::All => (0, u8::MAX),
            ProtocolMatch::Number(n) => (n, n),
        };
        protos.add(lo, hi, &PortSet::of(&s.ports));
    }
    protos.times(rule.peers())
}

/// A rule list taken apart: what each rule decides, and the totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decomposition {
    /// For each rule, in order, the packets it decides under first match.
    pub decided: Vec<PacketSet>,
    /// The packets some rule matches (the rest are dropped by default).
    pub matched: PacketSet,
    /// The packets the list accepts.
    pub accepted: PacketSet,
}

impl Decomposition {
    /// The packets the list drops: by a DROP rule or by default.
    pub fn dropped(&self) -> PacketSet {
        self.accepted.complement()
    }

    /// The packets no rule matches (dropped by default).
    pub fn unmatched(&self) -> PacketSet {
        self.matched.complement()
    }
}

/// Takes `rules` (one direction's list, in order) apart; see [`Decomposition`].
pub fn decompose(rules: &[ResolvedRule]) -> Decomposition {
    let mut matched = PacketSet::empty();
    let mut accepted = PacketSet::empty();
    let mut decided = Vec::with_capacity(rules.len());
    for rule in rules {
        let space = rule_space(rule);
        let own = space.difference(&matched);
        matched.union_with(&own);
        if rule.action() == Action::Accept {
            accepted.union_with(&own);
        }
        decided.push(own);
    }
    Decomposition {
        decided,
        matched,
        accepted,
    }
}

/// For each rule, in order, the exact set of packets it decides under first
/// match: its box minus every box above it. The sets are pairwise disjoint.
pub fn decided_sets(rules: &[ResolvedRule]) -> Vec<PacketSet> {
    decompose(rules).decided
}

/// The packets the list accepts: the union of the ACCEPT rules' decided sets.
pub fn accepted(rules: &[ResolvedRule]) -> PacketSet {
    decompose(rules).accepted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{first_match_index, Packet};
    use crate::fixtures::{boundary_packets, packet, rules};
    use proptest::prelude::*;

    /// The decided set holding `p`, by scanning them all (at most one may).
    fn deciding(d: &Decomposition, p: &Packet) -> Result<Option<usize>, String> {
        let hits: Vec<usize> = (0..d.decided.len())
            .filter(|&i| d.decided[i].contains(p))
            .collect();
        match hits.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(format!("{p} is decided by several rules: {many:?}")),
        }
    }

    fn agree(rules: &[ResolvedRule], d: &Decomposition, p: &Packet) -> Result<(), TestCaseError> {
        let expect = first_match_index(rules, p);
        let got = deciding(d, p).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got, expect, "{}", p);
        let accepts = expect.is_some_and(|i| rules[i].action() == Action::Accept);
        prop_assert_eq!(d.accepted.contains(p), accepts, "{}", p);
        prop_assert_eq!(d.matched.contains(p), expect.is_some(), "{}", p);
        Ok(())
    }

    proptest! {
        #![proptest_config(crate::fixtures::cases(128))]

        #[test]
        fn sets_agree_with_first_match_on_random_packets(
            rules in rules(16),
            ps in prop::collection::vec(packet(), 200),
        ) {
            let d = decompose(&rules);
            for p in &ps {
                agree(&rules, &d, p)?;
            }
        }

        #[test]
        fn sets_agree_with_first_match_on_boundary_packets(rules in rules(8)) {
            let d = decompose(&rules);
            for p in boundary_packets(&rules) {
                agree(&rules, &d, &p)?;
            }
        }

        #[test]
        fn decided_sets_partition_the_union_of_the_boxes(rules in rules(12)) {
            let d = decompose(&rules);
            prop_assert_eq!(d.decided.len(), rules.len());
            let mut all = PacketSet::empty();
            for r in &rules {
                all.union_with(&rule_space(r));
            }
            let mut union = PacketSet::empty();
            for (i, s) in d.decided.iter().enumerate() {
                prop_assert!(s.is_subset(&rule_space(&rules[i])));
                for t in &d.decided[i + 1..] {
                    prop_assert!(!s.intersects(t));
                }
                union.union_with(s);
            }
            prop_assert_eq!(&union, &all);
            prop_assert_eq!(&d.matched, &all);
            let mut acc = PacketSet::empty();
            for (i, s) in d.decided.iter().enumerate() {
                if rules[i].action() == Action::Accept {
                    acc.union_with(s);
                }
            }
            prop_assert_eq!(&acc, &d.accepted);
            prop_assert_eq!(&accepted(&rules), &d.accepted);
            prop_assert_eq!(&decided_sets(&rules), &d.decided);
            prop_assert_eq!(d.dropped().union(&d.accepted), PacketSet::everything());
            prop_assert!(d.unmatched().is_subset(&d.dropped()));
            // Each non-empty decided set's witness is decided by that rule.
            for (i, s) in d.decided.iter().enumerate() {
                if let Some(w) = s.witness(palisade_model::Direction::Ingress) {
                    prop_assert_eq!(first_match_index(&rules, &w), Some(i));
                }
            }
        }
    }

    /// A list like a big real one: 1,000 rules over 3,000 peer ranges
    /// (group memberships of single addresses, CIDRs, template ranges, both
    /// families), a handful of protocols and ports.
    fn big_list(n: usize) -> Vec<ResolvedRule> {
        use crate::resolve::{ProtocolMatch, ServiceMatch};
        use palisade_model::{AddrRange, Family, PortRange};
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..n)
            .map(|i| {
                let proto = match next() % 6 {
                    0 => ProtocolMatch::All,
                    1 => ProtocolMatch::Number(17),
                    2 => ProtocolMatch::Number(1),
                    _ => ProtocolMatch::Number(6),
                };
                let port = (next() % 2000) as u16 + 1;
                let ports = match next() % 4 {
                    0 => vec![crate::all_ports()],
                    1 => vec![PortRange::new(30000, 32768).unwrap()],
                    _ => vec![PortRange::single(port), PortRange::single(port + 1000)],
                };
                let peers: Vec<AddrRange> = (0..3)
                    .map(|_| {
                        let x = next();
                        if x % 5 == 0 {
                            let lo = 0x2001_0db8_u128 << 96 | u128::from(x % 100_000);
                            AddrRange::new(Family::V6, lo, lo + u128::from(x % 7)).unwrap()
                        } else {
                            let lo = 0x0a00_0000 + u128::from(x % 1_000_000);
                            let len = if x % 3 == 0 { x % 4096 } else { 0 };
                            AddrRange::new(Family::V4, lo, lo + u128::from(len)).unwrap()
                        }
                    })
                    .collect();
                let action = if next() % 4 == 0 {
                    Action::Drop
                } else {
                    Action::Accept
                };
                crate::fixtures::rule(
                    i,
                    action,
                    vec![ServiceMatch {
                        protocol: proto,
                        ports,
                    }],
                    peers,
                )
            })
            .collect()
    }

    #[test]
    fn a_thousand_rules_decompose_quickly() {
        // Debug builds are ~20x slower than release; the release timing is
        // in `a_thousand_rules_timing` (run with --release --ignored).
        let rules = big_list(300);
        let t = std::time::Instant::now();
        let d = decompose(&rules);
        let elapsed = t.elapsed();
        assert_eq!(d.decided.len(), 300);
        assert!(elapsed.as_secs() < 20, "{elapsed:?}");
    }

    #[test]
    #[ignore = "timing; run with --release -- --ignored --nocapture"]
    fn a_thousand_rules_timing() {
        let rules = big_list(1000);
        let t = std::time::Instant::now();
        let d = decompose(&rules);
        let elapsed = t.elapsed();
        let boxes: usize = d.decided.iter().map(PacketSet::box_count).sum();
        println!(
            "decompose 1000 rules / 3000 peer ranges: {elapsed:?}, {boxes} decided boxes, accepted {} boxes",
            d.accepted.box_count()
        );
        assert!(elapsed.as_millis() < 1000, "{elapsed:?}");
    }

    #[test]
    #[ignore = "timing; run with --release -- --ignored --nocapture"]
    fn fragmented_lists_timing() {
        use crate::resolve::{ProtocolMatch, ServiceMatch};
        use palisade_model::{AddrRange, Family, PortRange};
        let mut seed: u64 = 42;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Every rule: 10 scattered ports on TCP and UDP, 8 scattered peers
        // (a 2,000-member group is the extreme at the end).
        let mut rules: Vec<ResolvedRule> = (0..1000)
            .map(|i| {
                let ports: Vec<PortRange> = (0..10)
                    .map(|_| PortRange::single((next() % 65535) as u16 + 1))
                    .collect();
                let services = vec![
                    ServiceMatch {
                        protocol: ProtocolMatch::Number(6),
                        ports: ports.clone(),
                    },
                    ServiceMatch {
                        protocol: ProtocolMatch::Number(17),
                        ports,
                    },
                ];
                let peers: Vec<AddrRange> = (0..8)
                    .map(|_| {
                        let lo = (0x0a00_0000 + u128::from(next() % 0x00ff_ffff)) & !0xff;
                        AddrRange::new(Family::V4, lo, lo + 255).unwrap()
                    })
                    .collect();
                let action = if next() % 3 == 0 {
                    Action::Drop
                } else {
                    Action::Accept
                };
                crate::fixtures::rule(i, action, services, peers)
            })
            .collect();
        let members: Vec<AddrRange> = (0..2000)
            .map(|_| {
                let n = 0x0a00_0000 + u128::from(next() % 0x00ff_ffff);
                AddrRange::new(Family::V4, n, n).unwrap()
            })
            .collect();
        rules.push(crate::fixtures::rule(
            1000,
            Action::Accept,
            vec![ServiceMatch {
                protocol: ProtocolMatch::All,
                ports: vec![crate::all_ports()],
            }],
            members,
        ));
        let t = std::time::Instant::now();
        let d = decompose(&rules);
        let elapsed = t.elapsed();
        let boxes: usize = d.decided.iter().map(PacketSet::box_count).sum();
        println!(
            "decompose 1001 fragmented rules (10,000 peer ranges, 20,000 ports): {elapsed:?}, {boxes} decided boxes, accepted {} boxes",
            d.accepted.box_count()
        );
        assert!(elapsed.as_millis() < 1000, "{elapsed:?}");
    }
}
