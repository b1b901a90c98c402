//! Protocols and port specifications, with the port grammar of DESIGN.md
//! section 2: `ALL`, a port, `lo-hi`, or a comma list of ports and ranges,
//! each port in 1..=65535 and `lo <= hi`. Input is case-insensitive; output
//! uses Tencent's canonical upper case.
//!
//! Panic contract (as smoltcp's wire module states it): no function here
//! panics on any input string.

use crate::error::{ErrorCode, ModelError};
use std::fmt;

/// A rule's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// GRE (47).
    Gre,
    /// Every protocol.
    All,
}

impl Protocol {
    /// Every protocol value, in Tencent's documentation order.
    pub const EVERY: [Protocol; 6] = [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Icmp,
        Protocol::Icmpv6,
        Protocol::Gre,
        Protocol::All,
    ];

    /// Parses a protocol name, case-insensitively, naming `field` in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        let p = match value.trim().to_ascii_uppercase().as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "ICMP" => Protocol::Icmp,
            "ICMPV6" => Protocol::Icmpv6,
            "GRE" => Protocol::Gre,
            "ALL" => Protocol::All,
            "" => return Err(ModelError::missing(field, "must not be empty")),
            _ => {
                return Err(ModelError::malformed(
                    field,
                    value,
                    "expected one of TCP, UDP, ICMP, ICMPV6, GRE, ALL",
                ))
            }
        };
        Ok(p)
    }

    /// The canonical spelling (`TCP`, `ICMPv6`, ...) as Tencent prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
            Protocol::Gre => "GRE",
            Protocol::All => "ALL",
        }
    }

    /// The IP protocol number, or `None` for `ALL`.
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
            Protocol::Icmpv6 => Some(58),
            Protocol::Gre => Some(47),
            Protocol::All => None,
        }
    }

    /// The one address family this protocol exists in: ICMP only in IPv4,
    /// ICMPv6 only in IPv6; `None` for the protocols of both.
    pub fn family(self) -> Option<crate::Family> {
        family_of_protocol_number(self.number()?)
    }

    /// Whether rules of this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one address family IP protocol `number` exists in (1, ICMP: IPv4;
/// 58, ICMPv6: IPv6), or `None` when it exists in both.
pub fn family_of_protocol_number(number: u8) -> Option<crate::Family> {
    match number {
        1 => Some(crate::Family::V4),
        58 => Some(crate::Family::V6),
        _ => None,
    }
}

/// An inclusive range of ports, `lo <= hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// The range `lo..=hi`; `None` when `lo > hi`.
    pub fn new(lo: u16, hi: u16) -> Option<Self> {
        (lo <= hi).then_some(Self { lo, hi })
    }

    /// One port.
    pub fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    /// The first port.
    pub fn lo(self) -> u16 {
        self.lo
    }

    /// The last port.
    pub fn hi(self) -> u16 {
        self.hi
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A port specification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Every port (`ALL`).
    All,
    /// The listed ports and ranges, in the order given (never empty).
    List(Vec<PortRange>),
}

impl Ports {
    /// Parses the port grammar, naming `field` in errors.
    ///
    /// Strict: no whitespace, no leading zero (`080`), and no port twice
    /// (`80,80`, `80,70-90`: `InvalidParameterValue.Duplicate`), so that a
    /// spec prints back exactly as accepted.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        if value.eq_ignore_ascii_case("ALL") {
            return Ok(Ports::All);
        }
        if value.is_empty() {
            return Err(ModelError::new(
                ErrorCode::InvalidParameterValueEmpty,
                format!("{field} {value:?}: must not be empty"),
            ));
        }
        if value.chars().any(char::is_whitespace) {
            return Err(ModelError::malformed(
                field,
                value,
                "must not contain spaces or line breaks",
            ));
        }
        let mut list = Vec::new();
        for item in value.split(',') {
            list.push(parse_range(field, value, item)?);
        }
        let mut sorted = list.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[1].lo <= w[0].hi) {
            return Err(ModelError::new(
                ErrorCode::InvalidParameterValueDuplicate,
                format!(
                    "{field} {value:?}: {} and {} overlap; name each port once",
                    w[0], w[1]
                ),
            ));
        }
        Ok(Ports::List(list))
    }

    /// The ranges this spec covers, sorted and merged; `ALL` is `0-65535`
    /// (a packet may carry port 0 even though a rule cannot name it).
    pub fn ranges(&self) -> Vec<PortRange> {
        match self {
            Ports::All => vec![PortRange {
                lo: 0,
                hi: u16::MAX,
            }],
            Ports::List(list) => merge_ranges(list),
        }
    }

    /// Whether `port` is covered.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::All => true,
            Ports::List(list) => list.iter().any(|r| r.contains(port)),
        }
    }

    /// Whether this is `ALL`.
    pub fn is_all(&self) -> bool {
        matches!(self, Ports::All)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::All => f.write_str("ALL"),
            Ports::List(list) => {
                for (i, r) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
        }
    }
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn merge_ranges(list: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = list.to_vec();
    sorted.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

fn parse_range(field: &str, whole: &str, item: &str) -> Result<PortRange, ModelError> {
    if item.is_empty() {
        return Err(ModelError::malformed(
            field,
            whole,
            "empty item in the list",
        ));
    }
    match item.split_once('-') {
        None => parse_port(field, whole, item).map(PortRange::single),
        Some((lo, hi)) => {
            let lo = parse_port(field, whole, lo)?;
            let hi = parse_port(field, whole, hi)?;
            PortRange::new(lo, hi)
                .ok_or_else(|| ModelError::malformed(field, whole, "range start is above its end"))
        }
    }
}

fn parse_port(field: &str, whole: &str, text: &str) -> Result<u16, ModelError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(ModelError::malformed(
            field,
            whole,
            format_args!("{text:?} is not a port number (expected ALL, 80, 80-90 or 80,443)"),
        ));
    }
    match text.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(ModelError::new(
            ErrorCode::InvalidParameterValueRange,
            format!("{field} {whole:?}: port {text} is outside 1-65535"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_case_insensitively() {
        assert_eq!(
            Protocol::parse_field("Protocol", "tcp").unwrap(),
            Protocol::Tcp
        );
        assert_eq!(
            Protocol::parse_field("Protocol", "IcmpV6").unwrap(),
            Protocol::Icmpv6
        );
        assert_eq!(
            Protocol::parse_field("Protocol", "all").unwrap(),
            Protocol::All
        );
        let err = Protocol::parse_field("Protocol", "sctp").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParameterValueMalformed);
        assert!(err.to_string().contains("Protocol \"sctp\""));
        assert_eq!(
            Protocol::parse_field("Protocol", "").unwrap_err().code(),
            ErrorCode::MissingParameter
        );
    }

    #[test]
    fn port_grammar() {
        assert_eq!(Ports::parse_field("Port", "all").unwrap(), Ports::All);
        assert_eq!(Ports::parse_field("Port", "80").unwrap().to_string(), "80");
        assert_eq!(
            Ports::parse_field("Port", "80,443,8000-8100")
                .unwrap()
                .to_string(),
            "80,443,8000-8100"
        );
        assert_eq!(
            Ports::parse_field("Port", "1-65535").unwrap().to_string(),
            "1-65535"
        );
        let p = Ports::parse_field("Port", "30000-32768").unwrap();
        assert!(p.contains(30000) && p.contains(32768) && !p.contains(32769));
    }

    #[test]
    fn port_grammar_errors_name_field_and_value() {
        let err = Ports::parse_field("Port", "80-20").unwrap_err();
        assert_eq!(
            err.to_string(),
            "InvalidParameterValue.Malformed: Port \"80-20\": range start is above its end"
        );
        for (bad, code) in [
            ("0", ErrorCode::InvalidParameterValueRange),
            ("65536", ErrorCode::InvalidParameterValueRange),
            (
                "99999999999999999999",
                ErrorCode::InvalidParameterValueRange,
            ),
            ("", ErrorCode::InvalidParameterValueEmpty),
            ("80,", ErrorCode::InvalidParameterValueMalformed),
            (",80", ErrorCode::InvalidParameterValueMalformed),
            ("http", ErrorCode::InvalidParameterValueMalformed),
            ("-5", ErrorCode::InvalidParameterValueMalformed),
            ("5-", ErrorCode::InvalidParameterValueMalformed),
            ("1-2-3", ErrorCode::InvalidParameterValueMalformed),
            ("+80", ErrorCode::InvalidParameterValueMalformed),
            ("80 443", ErrorCode::InvalidParameterValueMalformed),
            // strict forms (issue 15): no whitespace, no leading zero, no
            // port twice
            (" 80", ErrorCode::InvalidParameterValueMalformed),
            ("80\n", ErrorCode::InvalidParameterValueMalformed),
            ("30000 - 32768", ErrorCode::InvalidParameterValueMalformed),
            (" all ", ErrorCode::InvalidParameterValueMalformed),
            ("080", ErrorCode::InvalidParameterValueMalformed),
            ("80-090", ErrorCode::InvalidParameterValueMalformed),
            ("80,80", ErrorCode::InvalidParameterValueDuplicate),
            ("80,70-90", ErrorCode::InvalidParameterValueDuplicate),
            ("1-10,10-20", ErrorCode::InvalidParameterValueDuplicate),
        ] {
            let err = Ports::parse_field("Port", bad).unwrap_err();
            assert_eq!(err.code(), code, "{bad:?}: {err}");
            assert!(err.message().starts_with("Port "), "{err}");
        }
    }

    #[test]
    fn ranges_merge() {
        let p = Ports::parse_field("Port", "90-100,80,81-85,86").unwrap();
        let r: Vec<String> = p.ranges().iter().map(|r| r.to_string()).collect();
        assert_eq!(r, vec!["80-86", "90-100"]);
        assert_eq!(Ports::All.ranges(), vec![PortRange::new(0, 65535).unwrap()]);
    }
}
