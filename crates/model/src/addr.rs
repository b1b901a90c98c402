//! Addresses: IPv4 and IPv6 CIDR blocks (a bare IP is a /32 or /128), and
//! address-template entries (an IP, a CIDR or an inclusive range `a-b`).
//! Every address set is, underneath, an inclusive range of integers within
//! one family: that is the form `policy` computes with.
//!
//! Semantic choices (docs/semantics.md): a CIDR with host bits set
//! (`10.0.0.5/24`) is taken as its network (`10.0.0.0/24`), as the Tencent
//! console does. An IPv4 block whose network is `0.0.0.0` with a prefix of 1
//! to 32 bits (`0.0.0.0/8`, and so `9.9.9.9/3`) is refused: Tencent reads
//! any `0.0.0.0/n` as `0.0.0.0/0`, so taking it literally would give the
//! same text two meanings, and widening it would make a rule mean more than
//! its author wrote. `::/n` is taken literally (Tencent documents no such
//! reading for IPv6). Whatever is accepted prints back to a text that parses
//! to the same block.
//!
//! Forms are strict: no whitespace anywhere, no sign, no leading zero in a
//! prefix length (`/08`), as Rust's address parser already refuses
//! `010.0.0.1`.
//!
//! Panic contract: no function here panics on any input string.

use crate::error::{ErrorCode, ModelError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The number of bits of an address.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The largest address, as an integer.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// `ip` as an integer within its family.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `n` of `family`; `n` is truncated to the family's width.
pub fn u128_to_ip(family: Family, n: u128) -> IpAddr {
    match family {
        // Truncation is intended: callers pass values within the family.
        Family::V4 => IpAddr::V4(Ipv4Addr::from((n & u128::from(u32::MAX)) as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    family: Family,
    lo: u128,
    hi: u128,
}

impl AddrRange {
    /// The range `lo..=hi` of `family`; `None` if empty or out of the family.
    pub fn new(family: Family, lo: u128, hi: u128) -> Option<Self> {
        (lo <= hi && hi <= family.max()).then_some(Self { family, lo, hi })
    }

    /// The one address `ip`.
    pub fn single(ip: IpAddr) -> Self {
        let n = ip_to_u128(ip);
        Self {
            family: Family::of(ip),
            lo: n,
            hi: n,
        }
    }

    /// Every address of `family`.
    pub fn everything(family: Family) -> Self {
        Self {
            family,
            lo: 0,
            hi: family.max(),
        }
    }

    /// The family.
    pub fn family(self) -> Family {
        self.family
    }

    /// The first address, as an integer.
    pub fn lo(self) -> u128 {
        self.lo
    }

    /// The last address, as an integer.
    pub fn hi(self) -> u128 {
        self.hi
    }

    /// Whether `ip` is in the range.
    pub fn contains(self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.lo..=self.hi).contains(&ip_to_u128(ip))
    }

    /// The range as the shortest list of CIDR blocks covering it exactly.
    pub fn to_cidrs(self) -> Vec<Cidr> {
        let bits = u32::from(self.family.bits());
        let mut out = Vec::new();
        let mut lo = self.lo;
        loop {
            // The largest aligned block that starts at `lo` and stays within `hi`.
            let mut size_bits = if lo == 0 {
                bits
            } else {
                lo.trailing_zeros().min(bits)
            };
            while size_bits > 0 {
                let last = if size_bits >= 128 {
                    u128::MAX
                } else {
                    lo + ((1u128 << size_bits) - 1)
                };
                if last <= self.hi && last >= lo {
                    break;
                }
                size_bits -= 1;
            }
            // size_bits <= bits <= 128, so the prefix fits in a u8.
            let len = (bits - size_bits) as u8;
            out.push(Cidr {
                family: self.family,
                addr: lo,
                len,
                bare: false,
            });
            let last = if size_bits >= 128 {
                u128::MAX
            } else {
                lo + ((1u128 << size_bits) - 1)
            };
            if last >= self.hi {
                break;
            }
            lo = last + 1;
        }
        out
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs = self.to_cidrs();
        if cidrs.len() == 1 {
            write!(f, "{}", cidrs[0])
        } else {
            write!(
                f,
                "{}-{}",
                u128_to_ip(self.family, self.lo),
                u128_to_ip(self.family, self.hi)
            )
        }
    }
}

/// A CIDR block (network address and prefix length); `bare` remembers that
/// it was written as a plain IP so that it prints back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    family: Family,
    addr: u128,
    len: u8,
    bare: bool,
}

impl Cidr {
    /// Parses an IPv4 CIDR or bare IP, for the `CidrBlock` field.
    pub fn parse_v4(field: &str, value: &str) -> Result<Self, ModelError> {
        let cidr = Self::parse_any(field, value)?;
        if cidr.family != Family::V4 {
            return Err(ModelError::malformed(
                field,
                value,
                "not an IPv4 CIDR (IPv6 goes in Ipv6CidrBlock)",
            ));
        }
        Ok(cidr)
    }

    /// Parses an IPv6 CIDR or bare IP, for the `Ipv6CidrBlock` field.
    pub fn parse_v6(field: &str, value: &str) -> Result<Self, ModelError> {
        let cidr = Self::parse_any(field, value)?;
        if cidr.family != Family::V6 {
            return Err(ModelError::malformed(
                field,
                value,
                "not an IPv6 CIDR (IPv4 goes in CidrBlock)",
            ));
        }
        Ok(cidr)
    }

    /// Parses a CIDR or bare IP of either family.
    pub fn parse_any(field: &str, value: &str) -> Result<Self, ModelError> {
        check_no_whitespace(field, value)?;
        let (ip_text, len_text) = match value.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (value, None),
        };
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| ModelError::malformed(field, value, "not an IP address or CIDR block"))?;
        let family = Family::of(ip);
        let len = match len_text {
            None => family.bits(),
            Some(l) => parse_prefix_len(l, family).ok_or_else(|| {
                ModelError::malformed(
                    field,
                    value,
                    format_args!(
                        "prefix length must be 0-{} without a leading zero",
                        family.bits()
                    ),
                )
            })?,
        };
        let addr = ip_to_u128(ip) & prefix_mask(family, len);
        if family == Family::V4 && addr == 0 && len_text.is_some() && len > 0 {
            return Err(ModelError::new(
                ErrorCode::InvalidParameterValue,
                format!(
                    "{field} {value:?}: its network is 0.0.0.0/{len}, which Tencent reads as \
                     0.0.0.0/0 (every IPv4 address); write 0.0.0.0/0 for every address, or \
                     a range in an address template for this block"
                ),
            ));
        }
        Ok(Cidr {
            family,
            addr,
            len,
            bare: len_text.is_none(),
        })
    }

    /// The family.
    pub fn family(self) -> Family {
        self.family
    }

    /// The prefix length.
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// The network address.
    pub fn network(self) -> IpAddr {
        u128_to_ip(self.family, self.addr)
    }

    /// The addresses of the block.
    pub fn range(self) -> AddrRange {
        let host = !prefix_mask(self.family, self.len) & self.family.max();
        AddrRange {
            family: self.family,
            lo: self.addr,
            hi: self.addr | host,
        }
    }

    /// Whether `ip` is in the block.
    pub fn contains(self, ip: IpAddr) -> bool {
        self.range().contains(ip)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bare && self.len == self.family.bits() {
            write!(f, "{}", self.network())
        } else {
            write!(f, "{}/{}", self.network(), self.len)
        }
    }
}

fn prefix_mask(family: Family, len: u8) -> u128 {
    let bits = u32::from(family.bits());
    let len = u32::from(len).min(bits);
    if len == 0 {
        0
    } else {
        let ones = family.max();
        // Shift within the family width; len >= 1 so the shift is < 128.
        (ones << (bits - len)) & ones
    }
}

/// A prefix length as written after `/`: decimal digits only, no leading
/// zero (`/08` is refused: some tools read it as octal), at most the
/// family's width.
fn parse_prefix_len(text: &str, family: Family) -> Option<u8> {
    let digits_only =
        !text.is_empty() && text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse::<u8>().ok().filter(|n| *n <= family.bits())
}

/// Refuses any whitespace in an address value: a trailing newline or an
/// inner space is a sign of a mangled value, and what is stored must print
/// back to exactly what parses.
fn check_no_whitespace(field: &str, value: &str) -> Result<(), ModelError> {
    if value.chars().any(char::is_whitespace) {
        return Err(ModelError::malformed(
            field,
            value,
            "must not contain spaces or line breaks",
        ));
    }
    Ok(())
}

/// One entry of an address template: an IP, a CIDR, or a range `a-b` of one
/// family with `a <= b`. It prints back as it was given (canonicalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressEntry {
    /// An IP or a CIDR block.
    Cidr(Cidr),
    /// An inclusive range written `a-b`.
    Range(AddrRange),
}

impl AddressEntry {
    /// Parses an entry, naming `field` in errors.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        check_no_whitespace(field, value)?;
        if let Some((a, b)) = value.split_once('-') {
            let parse_ip = |t: &str| -> Result<IpAddr, ModelError> {
                t.parse().map_err(|_| {
                    ModelError::malformed(field, value, format_args!("{t:?} is not an IP address"))
                })
            };
            let (lo, hi) = (parse_ip(a)?, parse_ip(b)?);
            if Family::of(lo) != Family::of(hi) {
                return Err(ModelError::malformed(
                    field,
                    value,
                    "range mixes IPv4 and IPv6",
                ));
            }
            let range = AddrRange::new(Family::of(lo), ip_to_u128(lo), ip_to_u128(hi)).ok_or_else(
                || ModelError::malformed(field, value, "range start is above its end"),
            )?;
            return Ok(AddressEntry::Range(range));
        }
        Cidr::parse_any(field, value).map(AddressEntry::Cidr)
    }

    /// The addresses of the entry.
    pub fn range(self) -> AddrRange {
        match self {
            AddressEntry::Cidr(c) => c.range(),
            AddressEntry::Range(r) => r,
        }
    }
}

impl fmt::Display for AddressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressEntry::Cidr(c) => write!(f, "{c}"),
            AddressEntry::Range(r) => write!(
                f,
                "{}-{}",
                u128_to_ip(r.family, r.lo),
                u128_to_ip(r.family, r.hi)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_cidrs() {
        let c = Cidr::parse_v4("CidrBlock", "10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.1")) && !c.contains(ip("11.0.0.0")));
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let bare = Cidr::parse_v4("CidrBlock", "192.0.2.7").unwrap();
        assert_eq!(bare.to_string(), "192.0.2.7");
        assert_eq!(bare.prefix_len(), 32);
        // host bits are masked off
        assert_eq!(
            Cidr::parse_v4("CidrBlock", "10.0.0.5/24")
                .unwrap()
                .to_string(),
            "10.0.0.0/24"
        );
        // 0.0.0.0/0 is every IPv4 address, and only IPv4
        let any = Cidr::parse_v4("CidrBlock", "0.0.0.0/0").unwrap();
        assert_eq!(any.to_string(), "0.0.0.0/0");
        assert!(any.contains(ip("203.0.113.9")));
        assert!(!any.contains(ip("2001:db8::1")));
        // a bare 0.0.0.0 is that one address
        let zero = Cidr::parse_v4("CidrBlock", "0.0.0.0").unwrap();
        assert_eq!(
            (zero.to_string().as_str(), zero.prefix_len()),
            ("0.0.0.0", 32)
        );
    }

    /// Issue 23: a short prefix whose network masks to 0.0.0.0 used to be
    /// widened to 0.0.0.0/0 (`9.9.9.9/3` for TCP 22 opened SSH to the whole
    /// Internet). Every 0.0.0.0/n with n > 0 is refused now, however it was
    /// written; nothing is ever stored wider than written.
    #[test]
    fn zero_network_with_a_prefix_is_refused_not_widened() {
        for text in [
            "9.9.9.9/3",
            "10.0.0.0/1",
            "1.2.3.4/7",
            "127.255.255.255/1",
            "0.0.0.0/8",
            "0.0.0.0/1",
            "0.0.0.0/32",
        ] {
            let err = Cidr::parse_v4("CidrBlock", text).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidParameterValue, "{text}");
            assert!(err.message().contains("0.0.0.0/0"), "{text}: {err}");
            assert!(
                AddressEntry::parse_field("Addresses", text).is_err(),
                "{text}"
            );
        }
        // The fuzz crash input (fuzz/regressions/cidr): refused for its
        // trailing space before the network is even looked at.
        let err = Cidr::parse_any("CidrBlock", "9.9.9.9/3 ").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParameterValueMalformed);
        // Blocks that merely start low are kept exactly.
        let c = Cidr::parse_v4("CidrBlock", "128.0.0.0/1").unwrap();
        assert_eq!(c.to_string(), "128.0.0.0/1");
        assert!(!c.contains(ip("9.9.9.9")));
        let c = Cidr::parse_v4("CidrBlock", "9.9.9.9/8").unwrap();
        assert_eq!(c.to_string(), "9.0.0.0/8");
        // IPv6 is literal: ::/1 is half the space, not all of it.
        let half = Cidr::parse_v6("Ipv6CidrBlock", "::/1").unwrap();
        assert_eq!(half.to_string(), "::/1");
        assert!(!half.contains(ip("8000::1")) && half.contains(ip("2001:db8::1")));
        let masked = Cidr::parse_v6("Ipv6CidrBlock", "2001:db8::/1").unwrap();
        assert_eq!(masked.to_string(), "::/1");
    }

    #[test]
    fn strict_forms() {
        for bad in [
            "10.0.0.0/08",
            "10.0.0.0/008",
            "10.0.0.0/8\n",
            " 10.0.0.0/8",
            "10.0.0.0 /8",
            "10.0.0.0/ 8",
            "10.0.0.0/+8",
            "010.0.0.0/8",
            "10.0.0.1\t",
            "2001:db8::/032",
        ] {
            let err = Cidr::parse_any("CidrBlock", bad).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::InvalidParameterValueMalformed,
                "{bad:?}"
            );
        }
        for bad in [
            "192.0.2.1 - 192.0.2.9",
            "192.0.2.1-192.0.2.9\n",
            " 192.0.2.1",
        ] {
            assert!(
                AddressEntry::parse_field("Addresses", bad).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            Cidr::parse_any("c", "10.0.0.0/0").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(Cidr::parse_any("c", "::/0").unwrap().to_string(), "::/0");
    }

    proptest::proptest! {
        /// Issue 23: every accepted block prints to a text that parses back
        /// to the same block, and holds no address outside the block the
        /// text literally names (the written address under the written
        /// prefix, or the one address of a bare IP).
        #[test]
        fn accepted_blocks_round_trip_and_never_grow(
            n in proptest::prelude::any::<u128>(),
            v6 in proptest::prelude::any::<bool>(),
            len in 0u8..=128,
            bare in proptest::prelude::any::<bool>(),
            low in 0u8..=3,
        ) {
            let family = if v6 { Family::V6 } else { Family::V4 };
            let len = len % (family.bits() + 1);
            // Bias towards small addresses, where 0.0.0.0/n lives.
            let n = (n & family.max()) >> (u32::from(low) * 8);
            let ip = u128_to_ip(family, n);
            let text = if bare { ip.to_string() } else { format!("{ip}/{len}") };
            let Ok(c) = Cidr::parse_any("CidrBlock", &text) else {
                return Ok(());
            };
            let again = Cidr::parse_any("CidrBlock", &c.to_string());
            proptest::prop_assert_eq!(again.as_ref().ok(), Some(&c), "{} -> {}", text, c);
            let written_len = if bare { family.bits() } else { len };
            let mask = prefix_mask(family, written_len);
            let written = AddrRange::new(family, n & mask, (n & mask) | (!mask & family.max()));
            let written = written.expect("a block is a range");
            proptest::prop_assert!(
                c.range().lo() >= written.lo() && c.range().hi() <= written.hi(),
                "{} grew to {}", text, c
            );
            let entry = AddressEntry::parse_field("Addresses", &text);
            proptest::prop_assert_eq!(entry.ok().map(|e| e.range()), Some(c.range()));
        }
    }

    #[test]
    fn v6_cidrs() {
        let c = Cidr::parse_v6("Ipv6CidrBlock", "2001:DB8::/32").unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert_eq!(c.to_string(), "2001:db8::/32");
        let all = Cidr::parse_v6("Ipv6CidrBlock", "::/0").unwrap();
        assert_eq!(all.range(), AddrRange::everything(Family::V6));
    }

    #[test]
    fn cidr_errors() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "x",
            "",
            "10.0.0.0/8/8",
            "256.0.0.0",
        ] {
            let err = Cidr::parse_v4("CidrBlock", bad).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::InvalidParameterValueMalformed,
                "{bad}"
            );
            assert!(err.message().starts_with("CidrBlock "));
        }
        assert!(Cidr::parse_v4("CidrBlock", "2001:db8::/32").is_err());
        assert!(Cidr::parse_v6("Ipv6CidrBlock", "10.0.0.0/8").is_err());
        assert!(Cidr::parse_v6("Ipv6CidrBlock", "2001:db8::/129").is_err());
    }

    #[test]
    fn template_entries() {
        let r = AddressEntry::parse_field("Addresses", "192.0.2.10-192.0.2.20").unwrap();
        assert!(r.range().contains(ip("192.0.2.10")) && r.range().contains(ip("192.0.2.20")));
        assert!(!r.range().contains(ip("192.0.2.21")));
        assert_eq!(r.to_string(), "192.0.2.10-192.0.2.20");
        let v6 = AddressEntry::parse_field("Addresses", "2001:db8::1-2001:db8::ff").unwrap();
        assert!(v6.range().contains(ip("2001:db8::80")));
        assert!(AddressEntry::parse_field("Addresses", "192.0.2.20-192.0.2.10").is_err());
        assert!(AddressEntry::parse_field("Addresses", "192.0.2.1-2001:db8::1").is_err());
        assert!(AddressEntry::parse_field("Addresses", "192.0.2.1-").is_err());
        assert!(AddressEntry::parse_field("Addresses", "203.0.113.0/24").is_ok());
    }

    #[test]
    fn ranges_to_cidrs() {
        let r = AddressEntry::parse_field("a", "192.0.2.10-192.0.2.20")
            .unwrap()
            .range();
        let c: Vec<String> = r.to_cidrs().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            c,
            vec![
                "192.0.2.10/31",
                "192.0.2.12/30",
                "192.0.2.16/30",
                "192.0.2.20/32"
            ]
        );
        assert_eq!(AddrRange::everything(Family::V4).to_cidrs().len(), 1);
        assert_eq!(
            AddrRange::everything(Family::V6).to_cidrs()[0].to_string(),
            "::/0"
        );
    }
}
