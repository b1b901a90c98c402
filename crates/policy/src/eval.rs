//! First-match evaluation (DESIGN.md section 2): a packet, seen from the
//! instance (its direction, IP protocol number, peer address and the
//! destination port for ingress / the peer's port for egress), against an
//! ordered rule list. The first rule that matches decides; a packet that
//! no rule matches is dropped ("no rule matched: default drop").
//!
//! Ports count only for TCP and UDP; for every other protocol the packet's
//! port is ignored, and a TCP or UDP packet given without a port is taken as
//! port 0, which only an `ALL` rule covers. An IPv4 peer never matches an
//! IPv6 rule and the other way round. This linear scan is the reference the
//! header-space algebra ([`crate::space`]) and any faster classifier are
//! tested against.

use crate::codec;
use crate::error::PolicyError;
use crate::resolve::{ResolvedRule, RuleOrigin, Ruleset};
use palisade_model::{Action, Direction};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// A packet as a rule sees it.
///
/// JSON: `{"direction": "ingress", "protocol": 6, "peer": "203.0.113.7", "port": 22}`
/// (`port` null or absent when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Packet {
    /// Ingress (arriving; the peer is the source) or egress (leaving; the
    /// peer is the destination).
    #[serde(with = "codec::direction")]
    pub direction: Direction,
    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 47 GRE, ...).
    pub protocol: u8,
    /// The remote address.
    pub peer: IpAddr,
    /// The destination port (ingress) or the peer's port (egress); only
    /// looked at for TCP and UDP.
    #[serde(default)]
    pub port: Option<u16>,
}

impl Packet {
    /// Parses the CLI's description of a packet: `direction` is
    /// `ingress`/`egress`, `protocol` a name or number (see
    /// [`parse_protocol`]), `peer` an IPv4 or IPv6 address, `port` 0-65535.
    /// Errors name the option (`--protocol`, ...) and the value.
    pub fn parse(
        direction: &str,
        protocol: &str,
        peer: &str,
        port: Option<&str>,
    ) -> Result<Packet, PolicyError> {
        let direction = Direction::parse_field("--direction", direction).map_err(|_| {
            PolicyError::malformed("--direction", direction, "expected ingress or egress")
        })?;
        let protocol = parse_protocol("--protocol", protocol)?;
        let peer = peer.trim().parse::<IpAddr>().map_err(|_| {
            PolicyError::malformed("--peer", peer, "expected an IPv4 or IPv6 address")
        })?;
        let port = port.map(|p| parse_port("--port", p)).transpose()?;
        Ok(Packet {
            direction,
            protocol,
            peer,
            port,
        })
    }

    /// The same packet with the port as evaluation sees it: `None` for
    /// protocols without ports, `Some(0)` for a TCP/UDP packet without one.
    pub fn normalized(self) -> Packet {
        Packet {
            port: if crate::has_ports(self.protocol) {
                Some(self.port.unwrap_or(0))
            } else {
                None
            },
            ..self
        }
    }
}

impl fmt::Display for Packet {
    /// `ingress TCP 203.0.113.7 port 22`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.direction,
            protocol_name(self.protocol),
            self.peer
        )?;
        match self.port {
            Some(p) if crate::has_ports(self.protocol) => write!(f, " port {p}"),
            _ => Ok(()),
        }
    }
}

/// What happens to a packet, and which rule decided.
///
/// JSON: `{"action": "ACCEPT"|"DROP", "matched": {"security_group_id", "direction",
/// "policy_index"} | null}`; `matched` is null when no rule matched (default drop).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    /// ACCEPT or DROP.
    #[serde(with = "codec::action")]
    pub action: Action,
    /// The deciding rule; `None` means no rule matched: default drop.
    pub matched: Option<RuleOrigin>,
}

impl Verdict {
    /// The verdict for a packet no rule matched.
    pub fn default_drop() -> Verdict {
        Verdict {
            action: Action::Drop,
            matched: None,
        }
    }
}

impl fmt::Display for Verdict {
    /// `ACCEPT by sg-1a2b3c4d Ingress[2]` or `DROP: no rule matched: default drop`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.matched {
            Some(o) => write!(f, "{} by {o}", self.action),
            None => write!(f, "{}: no rule matched: default drop", self.action),
        }
    }
}

/// Evaluates `packet` against the instance's ruleset (its direction's list).
pub fn evaluate(ruleset: &Ruleset, packet: &Packet) -> Verdict {
    match first_match(ruleset.rules(packet.direction), packet) {
        Some(rule) => Verdict {
            action: rule.action(),
            matched: Some(rule.origin().clone()),
        },
        None => Verdict::default_drop(),
    }
}

/// The first rule of `rules` that matches `packet` (whose direction is not
/// looked at: `rules` is taken to be the list of its direction), with its
/// position in `rules`.
pub fn first_match_index(rules: &[ResolvedRule], packet: &Packet) -> Option<usize> {
    rules
        .iter()
        .position(|r| r.matches(packet.protocol, packet.peer, packet.port))
}

/// The first rule of `rules` that matches `packet` (see [`first_match_index`]).
pub fn first_match<'a>(rules: &'a [ResolvedRule], packet: &Packet) -> Option<&'a ResolvedRule> {
    first_match_index(rules, packet).and_then(|i| rules.get(i))
}

/// Parses a protocol for a packet: `tcp`, `udp`, `icmp`, `icmpv6` (or
/// `ipv6-icmp`), `gre`, `esp`, `ah`, `sctp`, or a number 0-255,
/// case-insensitively. `all` is not a packet's protocol and is refused.
pub fn parse_protocol(field: &str, value: &str) -> Result<u8, PolicyError> {
    let t = value.trim().to_ascii_lowercase();
    let n = match t.as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "sctp" => 132,
        "all" => {
            return Err(PolicyError::malformed(
                field,
                value,
                "a packet has one protocol: tcp, udp, icmp, icmpv6, gre or a number 0-255",
            ))
        }
        _ if !t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse::<u8>()
            .map_err(|_| PolicyError::malformed(field, value, "a protocol number is 0-255"))?,
        _ => {
            return Err(PolicyError::malformed(
                field,
                value,
                "expected tcp, udp, icmp, icmpv6, gre or a number 0-255",
            ))
        }
    };
    Ok(n)
}

/// The name of protocol number `n` as Tencent spells it (`TCP`, `ICMPv6`),
/// or the number.
pub fn protocol_name(n: u8) -> String {
    match n {
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        1 => "ICMP".to_string(),
        58 => "ICMPv6".to_string(),
        47 => "GRE".to_string(),
        other => other.to_string(),
    }
}

/// Parses a port 0-65535.
pub fn parse_port(field: &str, value: &str) -> Result<u16, PolicyError> {
    let t = value.trim();
    if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PolicyError::malformed(
            field,
            value,
            "expected a port 0-65535",
        ));
    }
    t.parse::<u16>()
        .map_err(|_| PolicyError::malformed(field, value, "expected a port 0-65535"))
}
