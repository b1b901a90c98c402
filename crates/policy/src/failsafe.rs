//! Failsafe rules: a short, explicit list of flows a node always allows,
//! whatever its security groups say (`palisade agent --failsafe`), so that
//! a mistaken change to a group cannot lock the operators out of the node.
//!
//! One entry is `[ingress:|egress:]SERVICE[@CIDR]`: the direction (ingress
//! when left out), a service as a service template entry writes it (`tcp:22`,
//! `udp:53,5353`, `tcp:8000-8100`, `icmp`, `tcp` for every TCP port, `all`),
//! and the peer block (the source for ingress, the destination for egress).
//! Without `@CIDR` the entry covers every peer of both families: that is
//! what it says, and the documentation tells operators to name a block.
//!
//! A failsafe entry is checked before every group rule and decides
//! `ACCEPT`; it never drops. [`first_match`] is the reference the nft
//! compiler's failsafe lines are tested against, and what `explain` shows
//! as the deciding entry.

use crate::error::PolicyError;
use crate::eval::Packet;
use crate::resolve::ServiceMatch;
use crate::ProtocolMatch;
use palisade_model::template::ServiceEntry;
use palisade_model::{AddrRange, Cidr, Direction, Family};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The most failsafe entries a node takes: the list is meant to be short
/// (a management port or two), and every entry is checked before the
/// groups' rules.
pub const MAX_FAILSAFE: usize = 16;

/// The longest text of one entry.
pub const MAX_FAILSAFE_CHARS: usize = 128;

/// One failsafe entry.
///
/// JSON: its text, `"ingress:tcp:22@198.51.100.0/24"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Failsafe {
    direction: Direction,
    service: ServiceEntry,
    peer: Option<Cidr>,
}

impl Failsafe {
    /// Parses one entry, naming `field` (`--failsafe`) in errors.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, PolicyError> {
        if value.chars().count() > MAX_FAILSAFE_CHARS {
            return Err(PolicyError::malformed(
                field,
                value,
                format!("longer than {MAX_FAILSAFE_CHARS} characters"),
            ));
        }
        if value.chars().any(char::is_whitespace) {
            return Err(PolicyError::malformed(
                field,
                value,
                "must not contain spaces",
            ));
        }
        let lower = value.to_ascii_lowercase();
        let (direction, rest) = if let Some(r) = lower.strip_prefix("ingress:") {
            (Direction::Ingress, r)
        } else if let Some(r) = lower.strip_prefix("egress:") {
            (Direction::Egress, r)
        } else {
            (Direction::Ingress, lower.as_str())
        };
        let (service, peer) = match rest.split_once('@') {
            Some((s, p)) => (s, Some(p)),
            None => (rest, None),
        };
        let service = ServiceEntry::parse_field("SERVICE", service).map_err(|e| {
            PolicyError::malformed(
                field,
                value,
                format!(
                    "{}; expected [ingress:|egress:]SERVICE[@CIDR], e.g. tcp:22@198.51.100.0/24",
                    e.message()
                ),
            )
        })?;
        let peer = peer
            .map(|p| Cidr::parse_any("CIDR", p))
            .transpose()
            .map_err(|e| PolicyError::malformed(field, value, e.message()))?;
        // An entry that can match nothing is a mistake, not a no-op.
        let impossible = match (service.protocol, peer.map(|c| c.family())) {
            (palisade_model::Protocol::Icmp, Some(Family::V6)) => {
                Some("ICMP packets exist only in IPv4 (use icmpv6)")
            }
            (palisade_model::Protocol::Icmpv6, Some(Family::V4)) => {
                Some("ICMPv6 packets exist only in IPv6 (use icmp)")
            }
            _ => None,
        };
        if let Some(why) = impossible {
            return Err(PolicyError::malformed(field, value, why));
        }
        Ok(Self {
            direction,
            service,
            peer,
        })
    }

    /// Ingress or egress.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// What the entry matches, as a rule's service.
    pub fn service(&self) -> ServiceMatch {
        let protocol = ProtocolMatch::of(self.service.protocol);
        let ports = if self.service.protocol.has_ports() {
            self.service.ports.ranges()
        } else {
            vec![crate::all_ports()]
        };
        ServiceMatch { protocol, ports }
    }

    /// The peer block; `None` is every address of both families.
    pub fn peer(&self) -> Option<Cidr> {
        self.peer
    }

    /// The peer addresses matched: the block, or both families whole.
    pub fn peers(&self) -> Vec<AddrRange> {
        match self.peer {
            Some(c) => vec![c.range()],
            None => vec![
                AddrRange::everything(Family::V4),
                AddrRange::everything(Family::V6),
            ],
        }
    }

    /// Whether the entry allows `packet`.
    pub fn matches(&self, packet: &Packet) -> bool {
        packet.direction == self.direction
            && self.service().matches(packet.protocol, packet.port)
            && self.peers().iter().any(|r| r.contains(packet.peer))
    }
}

/// The first entry of `list` that allows `packet`.
pub fn first_match<'a>(list: &'a [Failsafe], packet: &Packet) -> Option<&'a Failsafe> {
    list.iter().find(|f| f.matches(packet))
}

/// Parses a whole list (`--failsafe`, repeated), refusing more than
/// [`MAX_FAILSAFE`] entries and any entry twice.
pub fn parse_list(field: &str, values: &[String]) -> Result<Vec<Failsafe>, PolicyError> {
    if values.len() > MAX_FAILSAFE {
        return Err(PolicyError::malformed(
            field,
            &values.join(" "),
            format!("at most {MAX_FAILSAFE} entries"),
        ));
    }
    let mut out: Vec<Failsafe> = Vec::with_capacity(values.len());
    for v in values {
        let f = Failsafe::parse_field(field, v)?;
        if out.contains(&f) {
            return Err(PolicyError::malformed(field, v, "given twice"));
        }
        out.push(f);
    }
    Ok(out)
}

impl fmt::Display for Failsafe {
    /// `ingress:tcp:22@198.51.100.0/24`; `egress:udp:53` (every peer).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.direction.as_str(), self.service)?;
        if let Some(p) = self.peer {
            write!(f, "@{p}")?;
        }
        Ok(())
    }
}

impl FromStr for Failsafe {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_field("--failsafe", s)
    }
}

impl Serialize for Failsafe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Failsafe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_field("Failsafe", &text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(direction: Direction, protocol: u8, peer: &str, port: Option<u16>) -> Packet {
        Packet {
            direction,
            protocol,
            peer: peer.parse().expect("a test address"),
            port,
        }
    }

    #[test]
    fn an_entry_prints_back_as_it_parses() {
        for (text, canonical) in [
            ("tcp:22@198.51.100.0/24", "ingress:tcp:22@198.51.100.0/24"),
            (
                "INGRESS:TCP:22,2222@2001:db8::/32",
                "ingress:tcp:22,2222@2001:db8::/32",
            ),
            ("egress:udp:53@192.0.2.53", "egress:udp:53@192.0.2.53"),
            ("icmp", "ingress:icmp"),
            ("tcp", "ingress:tcp"),
        ] {
            let f = Failsafe::parse_field("--failsafe", text).expect(text);
            assert_eq!(f.to_string(), canonical);
            assert_eq!(
                Failsafe::parse_field("--failsafe", canonical).expect(canonical),
                f
            );
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_field() {
        for bad in [
            "",
            "tcp:22@",
            "tcp:99999",
            "smtp:25",
            "tcp:22@198.51.100.0/33",
            "icmp:8",
            "both:tcp:22",
            "tcp:22@0.0.0.0/8",
            "tcp:22 @198.51.100.0/24",
            "icmp@2001:db8::/32",
            "icmpv6@192.0.2.0/24",
        ] {
            let e = Failsafe::parse_field("--failsafe", bad).expect_err(bad);
            assert!(e.to_string().contains("--failsafe"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..=MAX_FAILSAFE)
            .map(|p| format!("tcp:{}", p + 1))
            .collect();
        assert!(parse_list("--failsafe", &many).is_err());
        let twice = vec!["tcp:22".to_string(), "ingress:TCP:22".to_string()];
        assert!(parse_list("--failsafe", &twice).is_err());
    }

    #[test]
    fn an_entry_matches_its_direction_service_and_block_only() {
        let f = Failsafe::parse_field("--failsafe", "tcp:22@198.51.100.0/24").expect("valid");
        assert!(f.matches(&packet(Direction::Ingress, 6, "198.51.100.9", Some(22))));
        assert!(!f.matches(&packet(Direction::Ingress, 6, "203.0.113.9", Some(22))));
        assert!(!f.matches(&packet(Direction::Ingress, 6, "198.51.100.9", Some(23))));
        assert!(!f.matches(&packet(Direction::Ingress, 17, "198.51.100.9", Some(22))));
        assert!(!f.matches(&packet(Direction::Egress, 6, "198.51.100.9", Some(22))));
        assert!(!f.matches(&packet(Direction::Ingress, 6, "2001:db8::9", Some(22))));
        let any = Failsafe::parse_field("--failsafe", "egress:udp:53").expect("valid");
        assert!(any.matches(&packet(Direction::Egress, 17, "2001:db8::53", Some(53))));
        assert!(any.matches(&packet(Direction::Egress, 17, "192.0.2.53", Some(53))));
        let list = [f.clone(), any.clone()];
        assert_eq!(
            first_match(
                &list,
                &packet(Direction::Egress, 17, "192.0.2.53", Some(53))
            ),
            Some(&any)
        );
    }
}
