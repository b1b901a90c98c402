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

/// Every packet `rule` matches, ignoring the rules above it.
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
