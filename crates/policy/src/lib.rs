//! Palisade's semantics (DESIGN.md section 2), with no HTTP, SQL or nft in
//! sight:
//!
//! - [`mod@resolve`]: an instance's bound groups, in binding order, into one
//!   ordered [`Ruleset`] per direction with every group reference and
//!   template expanded (sections 2 and 4);
//! - [`eval`]: first-match evaluation of a packet to a [`Verdict`] naming
//!   the deciding rule, or default drop ([`failsafe`] entries first);
//! - [`classify`]: a fast first-match classifier held to the linear scan;
//! - [`space`] and [`decide`]: exact packet sets as disjoint boxes, the set
//!   each rule decides under first match, and the set a list accepts.
//!
//! Panic contract: no public function panics on any input.

#![warn(missing_docs)]

pub mod classify;
pub mod codec;
pub mod decide;
pub mod error;
pub mod eval;
pub mod failsafe;
pub mod resolve;
pub mod space;

pub use classify::{Classifier, ClassifierStats};
pub use decide::{accepted, decided_sets, decompose, rule_space, Decomposition};
pub use error::{PolicyError, ResolveError};
pub use eval::{evaluate, evaluate_with_failsafe, first_match, parse_protocol, Packet, Verdict};
pub use failsafe::Failsafe;
pub use resolve::{
    expand_templates, resolve, resolve_instance, Catalog, FleetIndex, ProtocolMatch, ResolvedRule,
    RuleOrigin, Ruleset, ServiceMatch,
};
pub use space::{PacketBox, PacketSet};

/// IP protocol number of TCP.
pub const TCP: u8 = 6;
/// IP protocol number of UDP.
pub const UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const ICMPV6: u8 = 58;
/// IP protocol number of GRE.
pub const GRE: u8 = 47;

/// Whether packets of protocol number `p` carry ports that rules look at
/// (TCP and UDP only).
pub fn has_ports(p: u8) -> bool {
    p == TCP || p == UDP
}

/// The port range 0-65535.
pub(crate) fn all_ports() -> palisade_model::PortRange {
    // 0 <= 65535, so `new` returns Some; the fallback is never taken.
    palisade_model::PortRange::new(0, u16::MAX).unwrap_or(palisade_model::PortRange::single(0))
}

#[cfg(test)]
pub(crate) mod fixtures;
