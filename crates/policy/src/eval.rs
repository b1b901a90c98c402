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
use crate::failsafe::Failsafe;
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
        if let Some(family) = palisade_model::proto::family_of_protocol_number(protocol) {
            if family != palisade_model::Family::of(peer) {
                return Err(PolicyError::malformed(
                    "--peer",
                    &peer.to_string(),
                    format!(
                        "{} packets exist only in {}; this packet cannot occur (use --protocol {})",
                        protocol_name(protocol),
                        if family == palisade_model::Family::V4 {
                            "IPv4"
                        } else {
                            "IPv6"
                        },
                        if family == palisade_model::Family::V4 {
                            "icmpv6"
                        } else {
                            "icmp"
                        },
                    ),
                ));
            }
        }
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
/// "policy_index"} | null}`; `matched` is null when no rule matched (default
/// drop), or when a failsafe entry decided: then `"failsafe":
/// "ingress:tcp:22@198.51.100.0/24"` names it (the field is absent otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    /// ACCEPT or DROP.
    #[serde(with = "codec::action")]
    pub action: Action,
    /// The deciding rule; `None` means no rule matched: default drop.
    pub matched: Option<RuleOrigin>,
    /// The node's failsafe entry that accepted the packet before any rule
    /// was looked at ([`crate::failsafe`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe: Option<Failsafe>,
}

impl Verdict {
    /// The verdict for a packet no rule matched.
    pub fn default_drop() -> Verdict {
        Verdict {
            action: Action::Drop,
            matched: None,
            failsafe: None,
        }
    }

    /// The verdict of `rule`.
    pub fn by(rule: &ResolvedRule) -> Verdict {
        Verdict {
            action: rule.action(),
            matched: Some(rule.origin().clone()),
            failsafe: None,
        }
    }
}

impl fmt::Display for Verdict {
    /// `ACCEPT by sg-1a2b3c4d Ingress[2]`, `ACCEPT by failsafe
    /// ingress:tcp:22@198.51.100.0/24`, or `DROP: no rule matched: default drop`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.failsafe, &self.matched) {
            (Some(fs), _) => write!(f, "{} by failsafe {fs}", self.action),
            (None, Some(o)) => write!(f, "{} by {o}", self.action),
            (None, None) => write!(f, "{}: no rule matched: default drop", self.action),
        }
    }
}

/// Evaluates `packet` against the instance's ruleset (its direction's list).
pub fn evaluate(ruleset: &Ruleset, packet: &Packet) -> Verdict {
    first_match(ruleset.rules(packet.direction), packet)
        .map_or_else(Verdict::default_drop, Verdict::by)
}

/// Evaluates `packet` on a node with these failsafe entries: the first
/// entry that allows it accepts it, before any rule; otherwise the ruleset
/// decides ([`evaluate`]).
pub fn evaluate_with_failsafe(
    ruleset: &Ruleset,
    failsafe: &[Failsafe],
    packet: &Packet,
) -> Verdict {
    match crate::failsafe::first_match(failsafe, packet) {
        Some(fs) => Verdict {
            action: Action::Accept,
            matched: None,
            failsafe: Some(fs.clone()),
        },
        None => evaluate(ruleset, packet),
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

/// How a person reads the protocols `lo..=hi`: `TCP` for one, `ALL` for
/// every one, and a range as its numbers with the named protocols it holds,
/// `7-255 (UDP, GRE, ICMPv6, ...)`, since most numbers have no name here.
pub fn protocol_range_name(lo: u8, hi: u8) -> String {
    if lo == hi {
        return protocol_name(lo);
    }
    if (lo, hi) == (0, u8::MAX) {
        return "ALL".to_string();
    }
    let named: Vec<String> = [1, 6, 17, 47, 58]
        .into_iter()
        .filter(|n| (lo..=hi).contains(n))
        .map(protocol_name)
        .collect();
    if named.is_empty() {
        format!("{lo}-{hi}")
    } else {
        format!("{lo}-{hi} ({}, ...)", named.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{fleet, pkt, sg};
    use crate::resolve::resolve_instance;
    use palisade_model::Direction::{Egress, Ingress};

    fn node() -> Ruleset {
        resolve_instance(&fleet(), &"ins-node0001".parse().unwrap()).unwrap()
    }

    /// The verdict as `(action, group, direction, index)`.
    fn check(rs: &Ruleset, p: Packet) -> (Action, Option<(String, Direction, usize)>) {
        let v = evaluate(rs, &p);
        (
            v.action,
            v.matched
                .map(|o| (o.security_group_id.to_string(), o.direction, o.policy_index)),
        )
    }

    fn by(
        action: Action,
        group: &str,
        d: Direction,
        i: usize,
    ) -> (Action, Option<(String, Direction, usize)>) {
        (action, Some((group.to_string(), d, i)))
    }

    const DEFAULT_DROP: (Action, Option<(String, Direction, usize)>) = (Action::Drop, None);
    use Action::{Accept, Drop};

    #[test]
    fn protocols_read_as_names() {
        assert_eq!(protocol_range_name(6, 6), "TCP");
        assert_eq!(protocol_range_name(0, 255), "ALL");
        assert_eq!(protocol_range_name(7, 16), "7-16");
        assert_eq!(protocol_range_name(0, 5), "0-5 (ICMP, ...)");
        assert_eq!(protocol_range_name(7, 255), "7-255 (UDP, GRE, ICMPv6, ...)");
    }

    #[test]
    fn first_match_across_groups_in_binding_order() {
        let rs = node();
        assert_eq!(
            rs.security_groups,
            vec![sg("sg-first001"), sg("sg-second01")]
        );
        // sg-second01 accepts TCP 22-23 from anywhere, but sg-first001 is
        // bound first and drops 23.
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "198.18.0.1", Some(23))),
            by(Drop, "sg-first001", Ingress, 0)
        );
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "198.18.0.1", Some(22))),
            by(Accept, "sg-second01", Ingress, 0)
        );
        // Within a group, position 0 first: a DROP above an ACCEPT wins.
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "198.51.100.9", Some(443))),
            by(Drop, "sg-second01", Ingress, 6)
        );
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "198.51.100.9", Some(444))),
            by(Accept, "sg-second01", Ingress, 7)
        );
        // Egress: the first group's DROP for 25, then the second's ACCEPT ALL.
        assert_eq!(
            check(&rs, pkt(Egress, 6, "192.0.2.1", Some(25))),
            by(Drop, "sg-first001", Egress, 0)
        );
        assert_eq!(
            check(&rs, pkt(Egress, 6, "192.0.2.1", Some(443))),
            by(Accept, "sg-second01", Egress, 0)
        );
    }

    #[test]
    fn default_drop_and_empty_instances() {
        let rs = node();
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "198.18.0.1", Some(80))),
            DEFAULT_DROP
        );
        // IPv6 egress: the only egress ACCEPT is for 0.0.0.0/0.
        assert_eq!(
            check(&rs, pkt(Egress, 6, "2001:db8::1", Some(443))),
            DEFAULT_DROP
        );
        let f = fleet();
        for id in ["ins-bare0001", "ins-web00001"] {
            let rs = resolve_instance(&f, &id.parse().unwrap()).unwrap();
            assert!(rs.ingress.is_empty() && rs.egress.is_empty(), "{id}");
            for d in Direction::BOTH {
                for p in [
                    pkt(d, 6, "10.0.0.1", Some(22)),
                    pkt(d, 1, "0.0.0.0", None),
                    pkt(d, 58, "::1", None),
                    pkt(d, 255, "203.0.113.1", Some(0)),
                ] {
                    assert_eq!(evaluate(&rs, &p), Verdict::default_drop(), "{id} {p}");
                }
            }
        }
        assert_eq!(
            Verdict::default_drop().to_string(),
            "DROP: no rule matched: default drop"
        );
    }

    #[test]
    fn group_references_match_members_of_both_families() {
        let rs = node();
        for member in ["10.1.0.5", "10.1.0.6", "2001:db8:ff::5"] {
            assert_eq!(
                check(&rs, pkt(Ingress, 6, member, Some(8080))),
                by(Accept, "sg-first001", Ingress, 2),
                "{member}"
            );
        }
        // Not a member, and outside every other rule.
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "10.1.0.7", Some(8080))),
            DEFAULT_DROP
        );
        // The member's address on another port is not this rule's.
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "10.1.0.5", Some(8081))),
            DEFAULT_DROP
        );
        // A reference to a group with no members matches nothing: 9000 from
        // 10.0.5.5 falls through to the ALL rule for 10.0.0.0/16.
        let empty = &rs.ingress[3];
        assert!(empty.peers().is_empty());
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "10.0.5.5", Some(9000))),
            by(Accept, "sg-second01", Ingress, 4)
        );
    }

    #[test]
    fn address_templates_with_cidrs_and_ranges() {
        let rs = node();
        for (peer, expect) in [
            ("203.0.113.0", by(Accept, "sg-first001", Ingress, 1)),
            ("203.0.113.255", by(Accept, "sg-first001", Ingress, 1)),
            ("192.0.2.10", by(Accept, "sg-first001", Ingress, 1)),
            ("192.0.2.20", by(Accept, "sg-first001", Ingress, 1)),
            // Outside the range: the second group's TCP 22-23 rule.
            ("192.0.2.9", by(Accept, "sg-second01", Ingress, 0)),
            ("192.0.2.21", by(Accept, "sg-second01", Ingress, 0)),
        ] {
            assert_eq!(
                check(&rs, pkt(Ingress, 6, peer, Some(22))),
                expect,
                "{peer}"
            );
        }
        // An address template group of IPv6 entries (an IP, a CIDR, a range).
        for (peer, hit) in [
            ("2001:db9::1", true),
            ("2001:db9::2", false),
            ("2001:db9:2:ffff::1", true),
            ("2001:db9:3::1", true),
            ("2001:db9:3::ff", true),
            ("2001:db9:3::100", false),
            ("2001:db9:3::", false),
        ] {
            let expect = if hit {
                by(Accept, "sg-second01", Ingress, 5)
            } else {
                DEFAULT_DROP
            };
            assert_eq!(
                check(&rs, pkt(Ingress, 17, peer, Some(53))),
                expect,
                "{peer}"
            );
        }
    }

    #[test]
    fn ipv6_and_family_separation() {
        let rs = node();
        // The ICMP (v4) rule does not match an IPv6 peer even with protocol 1...
        assert_eq!(
            check(&rs, pkt(Ingress, 1, "2001:db9::1", None)),
            DEFAULT_DROP
        );
        // ...and the ::/0 ICMPv6 rule does not match an IPv4 peer.
        assert_eq!(
            check(&rs, pkt(Ingress, 58, "198.18.0.1", None)),
            DEFAULT_DROP
        );
        assert_eq!(
            check(&rs, pkt(Ingress, 58, "2001:db9::1", None)),
            by(Accept, "sg-second01", Ingress, 2)
        );
        // 0.0.0.0/0 TCP 22-23 does not cover an IPv6 source.
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "2001:db9::1", Some(22))),
            DEFAULT_DROP
        );
        // The v4-mapped address ::ffff:10.0.0.1 is IPv6, not 10.0.0.1.
        assert_eq!(
            check(&rs, pkt(Ingress, 47, "::ffff:10.0.0.1", None)),
            DEFAULT_DROP
        );
    }

    #[test]
    fn icmp_with_and_without_ports() {
        let rs = node();
        for port in [None, Some(0), Some(8), Some(65535)] {
            assert_eq!(
                check(&rs, pkt(Ingress, 1, "8.8.8.8", port)),
                by(Accept, "sg-second01", Ingress, 1),
                "{port:?}"
            );
        }
        // A TCP packet without a port is port 0: only ALL rules cover it.
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "198.18.0.1", None)),
            DEFAULT_DROP
        );
        assert_eq!(
            check(&rs, pkt(Ingress, 6, "10.0.3.3", None)),
            by(Accept, "sg-second01", Ingress, 4)
        );
    }

    #[test]
    fn protocol_all_matches_every_protocol_number() {
        let rs = node();
        for proto in [0u8, 2, 6, 17, 47, 50, 132, 255] {
            assert_eq!(
                check(&rs, pkt(Ingress, proto, "10.0.200.1", Some(12345))),
                by(Accept, "sg-second01", Ingress, 4),
                "{proto}"
            );
            assert_eq!(
                check(&rs, pkt(Ingress, proto, "10.1.0.1", Some(12345))),
                DEFAULT_DROP,
                "{proto}"
            );
        }
    }

    #[test]
    fn service_templates_and_groups() {
        let rs = node();
        let expect = by(Accept, "sg-second01", Ingress, 3);
        assert_eq!(
            check(&rs, pkt(Ingress, 17, "2001:db8::9", Some(53))),
            expect
        );
        assert_eq!(check(&rs, pkt(Ingress, 6, "2001:db8::9", Some(53))), expect);
        // The ICMPv6 rule above already takes ICMPv6.
        assert_eq!(
            check(&rs, pkt(Ingress, 58, "2001:db8::9", None)),
            by(Accept, "sg-second01", Ingress, 2)
        );
        assert_eq!(
            check(&rs, pkt(Ingress, 17, "2001:db8::9", Some(54))),
            DEFAULT_DROP
        );
        // The service template of the DROP rule: tcp:80,443 and tcp:8000-8100.
        for (port, idx) in [(80, 6), (443, 6), (8000, 6), (8100, 6), (8101, 7), (79, 7)] {
            assert_eq!(
                check(&rs, pkt(Ingress, 6, "198.51.100.1", Some(port)))
                    .1
                    .map(|m| m.2),
                Some(idx),
                "{port}"
            );
        }
        assert_eq!(
            check(&rs, pkt(Ingress, 17, "198.51.100.1", Some(80))),
            DEFAULT_DROP
        );
    }

    #[test]
    fn verdict_json_shape() {
        let rs = node();
        let v = evaluate(&rs, &pkt(Ingress, 6, "198.18.0.1", Some(23)));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"action":"DROP","matched":{"security_group_id":"sg-first001","direction":"ingress","policy_index":0}}"#
        );
        let none = serde_json::to_string(&Verdict::default_drop()).unwrap();
        assert_eq!(none, r#"{"action":"DROP","matched":null}"#);
        let back: Verdict = serde_json::from_str(&none).unwrap();
        assert_eq!(back, Verdict::default_drop());
        assert_eq!(v.to_string(), "DROP by sg-first001 Ingress[0]");
    }

    #[test]
    fn packets_parse_from_cli_text() {
        let p = Packet::parse("Ingress", "TCP", "203.0.113.7", Some("22")).unwrap();
        assert_eq!(p, pkt(Ingress, 6, "203.0.113.7", Some(22)));
        assert_eq!(p.to_string(), "ingress TCP 203.0.113.7 port 22");
        let p = Packet::parse("egress", "icmpv6", "2001:db8::1", None).unwrap();
        assert_eq!((p.protocol, p.port), (58, None));
        assert_eq!(
            Packet::parse("egress", "132", "::1", None)
                .unwrap()
                .protocol,
            132
        );
        for (d, proto, peer, port, field) in [
            ("sideways", "tcp", "10.0.0.1", None, "--direction"),
            ("ingress", "all", "10.0.0.1", None, "--protocol"),
            ("ingress", "256", "10.0.0.1", None, "--protocol"),
            ("ingress", "tcpx", "10.0.0.1", None, "--protocol"),
            ("ingress", "", "10.0.0.1", None, "--protocol"),
            ("ingress", "tcp", "10.0.0.0/8", None, "--peer"),
            ("ingress", "tcp", "10.0.0.1", Some("65536"), "--port"),
            ("ingress", "tcp", "10.0.0.1", Some("-1"), "--port"),
            ("ingress", "tcp", "10.0.0.1", Some(""), "--port"),
            // a packet that cannot exist: ICMP over IPv6, ICMPv6 over IPv4
            ("ingress", "icmp", "2001:db8::1", None, "cannot occur"),
            ("egress", "1", "::1", None, "cannot occur"),
            ("ingress", "icmpv6", "192.0.2.1", None, "cannot occur"),
        ] {
            let e = Packet::parse(d, proto, peer, port).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let p: Packet = serde_json::from_str(
            r#"{"direction":"egress","protocol":17,"peer":"192.0.2.1","port":53}"#,
        )
        .unwrap();
        assert_eq!(p, pkt(Egress, 17, "192.0.2.1", Some(53)));
        assert_eq!(pkt(Ingress, 1, "10.0.0.1", Some(5)).normalized().port, None);
        assert_eq!(pkt(Ingress, 6, "10.0.0.1", None).normalized().port, Some(0));
    }
}
