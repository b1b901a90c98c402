//! Text forms of the model's values for the JSON this crate sends over the
//! wire (DESIGN.md section 4: resolved rulesets go from the server to the
//! agents and to `DescribeInstanceRuleset`). The model types carry no serde
//! derives, so the shapes are fixed here, once:
//!
//! - an action is `"ACCEPT"` or `"DROP"`, a direction `"ingress"` or `"egress"`;
//! - an address range is a bare IP (`"10.0.0.11"`), a CIDR block
//!   (`"10.0.0.0/16"`) when it is exactly one, or `"first-last"`;
//! - a port list is `"ALL"` (0-65535) or Tencent's grammar (`"80,443,8000-8100"`),
//!   port 0 allowed, `""` for no port at all.
//!
//! Parsing is strict and never panics: unlike a rule's `CidrBlock`,
//! `0.0.0.0/8` here means exactly 0.0.0.0-0.255.255.255, and host bits set
//! are an error, so that printing and parsing round-trip.

use crate::error::PolicyError;
use palisade_model::addr::{ip_to_u128, u128_to_ip};
use palisade_model::{Action, AddrRange, Direction, Family, PortRange};
use serde::{Deserialize, Deserializer, Serializer};
use std::net::IpAddr;

/// Prints an address range in its shortest exact form.
pub fn format_addr_range(r: AddrRange) -> String {
    if r.lo() == r.hi() {
        return u128_to_ip(r.family(), r.lo()).to_string();
    }
    let cidrs = r.to_cidrs();
    match cidrs.as_slice() {
        [one] => format!("{}/{}", one.network(), one.prefix_len()),
        _ => format!(
            "{}-{}",
            u128_to_ip(r.family(), r.lo()),
            u128_to_ip(r.family(), r.hi())
        ),
    }
}

/// Parses an address range: an IP, `ip/len` (network address exactly), or
/// `first-last` of one family with `first <= last`. `field` names the input
/// in errors.
pub fn parse_addr_range(field: &str, text: &str) -> Result<AddrRange, PolicyError> {
    let t = text.trim();
    let ip = |s: &str| -> Result<IpAddr, PolicyError> {
        s.trim()
            .parse::<IpAddr>()
            .map_err(|_| PolicyError::malformed(field, text, "not an IP address, CIDR or range"))
    };
    if let Some((a, b)) = t.split_once('-') {
        let (a, b) = (ip(a)?, ip(b)?);
        if Family::of(a) != Family::of(b) {
            return Err(PolicyError::malformed(
                field,
                text,
                "a range's ends must be of one family",
            ));
        }
        return AddrRange::new(Family::of(a), ip_to_u128(a), ip_to_u128(b))
            .ok_or_else(|| PolicyError::malformed(field, text, "range start is above its end"));
    }
    let Some((a, len)) = t.split_once('/') else {
        return Ok(AddrRange::single(ip(t)?));
    };
    let addr = ip(a)?;
    let family = Family::of(addr);
    let bits = u32::from(family.bits());
    let len: u32 = match len.parse::<u32>() {
        Ok(n) if n <= bits && len.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => {
            return Err(PolicyError::malformed(
                field,
                text,
                format!("prefix length must be 0-{bits}"),
            ))
        }
    };
    // The host bits: all of them for /0, none for a full-length prefix.
    let host = family.max().checked_shr(len).unwrap_or(0);
    let lo = ip_to_u128(addr);
    if lo & host != 0 {
        return Err(PolicyError::malformed(
            field,
            text,
            "host bits are set (write the network address)",
        ));
    }
    AddrRange::new(family, lo, lo | host)
        .ok_or_else(|| PolicyError::malformed(field, text, "not an address range"))
}

/// Prints a port list: `ALL` for 0-65535, else `80,443,8000-8100`.
pub fn format_ports(ports: &[PortRange]) -> String {
    if let [one] = ports {
        if one.lo() == 0 && one.hi() == u16::MAX {
            return "ALL".to_string();
        }
    }
    ports
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a port list: `ALL`, `""` (no port), or ports and ranges 0-65535
/// separated by commas.
pub fn parse_ports(field: &str, text: &str) -> Result<Vec<PortRange>, PolicyError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok(vec![crate::all_ports()]);
    }
    if t.is_empty() {
        return Ok(Vec::new());
    }
    let port = |s: &str| -> Result<u16, PolicyError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PolicyError::malformed(
                field,
                text,
                "expected ALL, a port, lo-hi, or a comma list of them",
            ));
        }
        s.parse::<u16>()
            .map_err(|_| PolicyError::malformed(field, text, "a port is 0-65535"))
    };
    t.split(',')
        .map(|item| match item.split_once('-') {
            None => port(item).map(PortRange::single),
            Some((a, b)) => PortRange::new(port(a)?, port(b)?)
                .ok_or_else(|| PolicyError::malformed(field, text, "range start is above its end")),
        })
        .collect()
}

/// Serde for `Action` as `"ACCEPT"` / `"DROP"` (any case on input).
pub mod action {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(a: &Action, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_str())
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
        let text = String::deserialize(d)?;
        Action::parse_field("action", &text).map_err(serde::de::Error::custom)
    }
}

/// Serde for `Direction` as `"ingress"` / `"egress"` (any case on input).
pub mod direction {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        let text = String::deserialize(d)?;
        Direction::parse_field("direction", &text).map_err(serde::de::Error::custom)
    }
}

/// Serde for a list of `AddrRange` as strings.
pub mod addr_ranges {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Serializes.
    pub fn serialize<S: Serializer>(v: &[AddrRange], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for r in v {
            seq.serialize_element(&format_addr_range(*r))?;
        }
        seq.end()
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AddrRange>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|t| parse_addr_range("peers", t).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Serde for one `AddrRange` as a string.
pub mod addr_range {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(r: &AddrRange, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_addr_range(*r))
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AddrRange, D::Error> {
        let text = String::deserialize(d)?;
        parse_addr_range("peers", &text).map_err(serde::de::Error::custom)
    }
}

/// Serde for a port list as Tencent's grammar string.
pub mod ports {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(v: &[PortRange], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ports(v))
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortRange>, D::Error> {
        let text = String::deserialize(d)?;
        parse_ports("ports", &text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_ranges_round_trip() {
        for text in [
            "10.0.0.11",
            "10.0.0.0/16",
            "0.0.0.0/8",
            "0.0.0.0/0",
            "192.0.2.10-192.0.2.20",
            "2001:db8::/32",
            "::/0",
            "::1",
            "2001:db8::1-2001:db8::ff",
        ] {
            let r = parse_addr_range("f", text).unwrap();
            assert_eq!(format_addr_range(r), text);
        }
        assert_eq!(
            parse_addr_range("f", "0.0.0.0/8").unwrap().hi(),
            0x00ff_ffff
        );
        for (full, bare) in [
            ("10.0.0.1/32", "10.0.0.1"),
            ("2001:db8::1/128", "2001:db8::1"),
        ] {
            let r = parse_addr_range("f", full).unwrap();
            assert_eq!(format_addr_range(r), bare);
        }
        assert!(parse_addr_range("f", "2001:db8::1/129").is_err());
        for bad in [
            "10.0.0.1/24",
            "10.0.0.0/33",
            "x",
            "",
            "10.0.0.2-10.0.0.1",
            "10.0.0.1-::1",
            "10.0.0.0/+8",
            "10.0.0.0/",
        ] {
            assert!(parse_addr_range("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_round_trip() {
        for text in ["ALL", "80", "0,80,443,8000-8100", ""] {
            let p = parse_ports("f", text).unwrap();
            assert_eq!(format_ports(&p), text);
        }
        for bad in ["65536", "x", "5-1", "1,,2", "-1"] {
            assert!(parse_ports("f", bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// The panic contract: parsers answer every string with a value or an error.
        #[test]
        fn parsers_never_panic(text in ".{0,40}", a in "[0-9a-fA-F:./ -]{0,40}") {
            for t in [&text, &a] {
                let _ = parse_addr_range("f", t);
                let _ = parse_ports("f", t);
                let _ = crate::eval::parse_protocol("f", t);
                let _ = crate::eval::parse_port("f", t);
                let _ = crate::eval::Packet::parse(t, t, t, Some(t));
                let _ = crate::resolve::ProtocolMatch::parse_field("f", t);
                let _ = serde_json::from_str::<crate::resolve::Ruleset>(t);
            }
        }

        /// Whatever parses, prints back to text that parses to the same value.
        #[test]
        fn addr_ranges_print_and_parse_back(lo in proptest::prelude::any::<u128>(), w in proptest::prelude::any::<u128>(), v6 in proptest::prelude::any::<bool>()) {
            let f = if v6 { Family::V6 } else { Family::V4 };
            let lo = lo & f.max();
            let hi = lo.saturating_add(w % 1_000_000).min(f.max());
            let r = AddrRange::new(f, lo, hi).unwrap();
            proptest::prop_assert_eq!(parse_addr_range("f", &format_addr_range(r)).unwrap(), r);
        }
    }
}
