//! `Cidr::parse_any`, `parse_v4` and `parse_v6` on any string. Panic
//! contract (addr.rs): no input panics. Properties: the family-specific
//! parsers agree with `parse_any`, an accepted block prints back to itself,
//! its network address is inside it, its range splits back into exactly
//! this one block, and it never holds an address outside the block the text
//! literally names (issue 23: `9.9.9.9/3 ` was once widened to 0.0.0.0/0).

use palisade_model::addr::ip_to_u128;
use palisade_model::{Cidr, Family};
use std::net::IpAddr;

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let any = Cidr::parse_any("CidrBlock", text);
    let v4 = Cidr::parse_v4("CidrBlock", text);
    let v6 = Cidr::parse_v6("Ipv6CidrBlock", text);
    let Ok(c) = any else {
        assert!(
            v4.is_err() && v6.is_err(),
            "{text:?}: a family parser accepts what parse_any refuses"
        );
        return;
    };
    match c.family() {
        Family::V4 => assert_eq!(v4.ok(), Some(c), "{text:?}: parse_v4 disagrees"),
        Family::V6 => assert_eq!(v6.ok(), Some(c), "{text:?}: parse_v6 disagrees"),
    }
    assert!(
        c.prefix_len() <= c.family().bits(),
        "{text:?}: prefix too long"
    );
    let printed = c.to_string();
    let again = Cidr::parse_any("CidrBlock", &printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, c, "{text:?} does not survive printing");
    assert!(
        c.contains(c.network()),
        "{text:?}: network outside the block"
    );
    let range = c.range();
    assert!(range.lo() <= range.hi());
    // `to_cidrs` writes `/len` even for a bare IP, so compare the blocks.
    let blocks = range.to_cidrs();
    assert_eq!(blocks.len(), 1, "{text:?}: range splits into {blocks:?}");
    assert_eq!(
        blocks[0].range(),
        range,
        "{text:?}: range does not split back"
    );
    // Never wider than written: the written address with the written
    // prefix (all of its bits for a bare IP) bounds the block.
    let (ip_text, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u32>().unwrap_or(0)),
        None => (text, u32::from(c.family().bits())),
    };
    let written: IpAddr = ip_text.parse().expect("an accepted block names an IP");
    let bits = u32::from(c.family().bits());
    let host = c.family().max().checked_shr(len).unwrap_or(0);
    let lo = ip_to_u128(written) & !host & c.family().max();
    assert!(len <= bits, "{text:?}: prefix {len}");
    assert!(
        range.lo() >= lo && range.hi() <= lo | host,
        "{text:?} grew to {c}"
    );
}
