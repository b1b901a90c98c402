//! ClassBench filter sets (`../shared/data/classbench/README.md`) as
//! Palisade rules, and Palisade rules and packets in the formats of DPDK's
//! `dpdk-test-acl` (`--rulesf`, `--tracef`).
//!
//! # The file format
//!
//! One rule a line, highest priority first (first match wins):
//!
//! ```text
//! @<src ip>/<len>  <dst ip>/<len>  <sport lo> : <sport hi>  <dport lo> : <dport hi>  <proto>/<mask>  [<flags>/<mask>]
//! ```
//!
//! Fields are separated by tabs or spaces; numbers are decimal or `0x` hex.
//! Empty lines and lines starting with `#` are skipped (as `dpdk-test-acl`
//! does).
//!
//! # The projection to security-group rules ([`project`])
//!
//! A security-group rule matches a protocol, one peer and a destination
//! port, so rule `i` of the file becomes ingress rule `i` (`ACCEPT`, group
//! `sg-cbench00`, `PolicyIndex` = `i`):
//!
//! - peer: the source prefix, exactly (`0.0.0.0/1` is half the space: the
//!   projection builds the address range itself, it does not go through
//!   the `CidrBlock` parser, for which `0.0.0.0/n` means `0.0.0.0/0`);
//! - protocol: mask `0xFF` is that protocol number, mask `0x00` is `ALL`,
//!   any other mask becomes one service per protocol number it matches;
//! - port: the destination port range, for TCP, UDP and `ALL` (whose ports
//!   count for TCP and UDP packets only); for every other protocol the rule
//!   model has no ports, so the range is dropped (the six sets hold no such
//!   rule with a range other than `0 : 65535`, and no `ALL` rule with one);
//! - dropped: the destination prefix, the source port range and the TCP
//!   flags, which security groups do not match on.
//!
//! The six sets project to 942 (acl1_1k), 857 (fw1_1k), 974 (ipc1_1k),
//! 9,774 (acl1_10k), 9,379 (fw1_10k) and 9,518 (ipc1_10k) rules, one per
//! line; projection keeps every rule at its index, so many become shadowed
//! (their destination prefix told them apart), and the first-match answer
//! is the index into the file.
//!
//! # DPDK's formats ([`DpdkExport`])
//!
//! `dpdk-test-acl` takes five-field ClassBench rules (the flags field is not
//! read) and a trace of `<src> <dst> <sport> <dport> <proto>` lines with
//! addresses as 32-bit numbers; it numbers rules by line, the first line
//! highest. A projected rule is written with destination `0.0.0.0/0` and
//! source ports `0 : 65535`; a rule whose peers are several ranges, or
//! whose services are several, becomes several lines in a row (one per
//! CIDR block of each range, per service, per port range); an `ALL` rule
//! with ports becomes lines for TCP and UDP with those ports and lines for
//! the other 254 protocols (as value/mask blocks) with every port. The
//! line-to-rule map is written alongside, so rte_acl's answers can be
//! checked against the linear scan's. IPv6 peers and packets are left out
//! (the IPv4 mode of `dpdk-test-acl`).

use crate::BenchError;
use palisade_model::{
    Action, AddrRange, Cidr, Direction, Family, Peer, Policy, PortRange, Ports, Protocol,
    SecurityGroupId, Service,
};
use palisade_policy::{Packet, ProtocolMatch, ResolvedRule, RuleOrigin, ServiceMatch};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// One ClassBench rule as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassBenchRule {
    /// 1-based line number in its file.
    pub line: usize,
    /// Source network (host bits cleared) and prefix length.
    pub src: (Ipv4Addr, u8),
    /// Destination network and prefix length.
    pub dst: (Ipv4Addr, u8),
    /// Source port range.
    pub sport: (u16, u16),
    /// Destination port range.
    pub dport: (u16, u16),
    /// Protocol value and mask (mask 0 matches every protocol).
    pub proto: (u8, u8),
}

/// Parses a ClassBench file.
pub fn parse(text: &str) -> Result<Vec<ClassBenchRule>, BenchError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        out.push(parse_line(line, t)?);
    }
    Ok(out)
}

/// Whether `text` looks like a ClassBench file (its first rule line starts
/// with `@`).
pub fn looks_like_classbench(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with('@'))
}

/// The ingress rules of a ClassBench list (see the module documentation).
pub fn project(rules: &[ClassBenchRule]) -> Vec<ResolvedRule> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| project_one(i, r))
        .collect()
}

/// Rules and packets in `dpdk-test-acl`'s formats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpdkExport {
    /// The `--rulesf` file.
    pub rules: String,
    /// For each line of `rules`, the index of the rule it comes from.
    pub rule_of_line: Vec<usize>,
    /// The `--tracef` file (IPv4 packets only).
    pub trace: String,
    /// The number of lines in `trace`.
    pub trace_len: usize,
    /// IPv6 peer ranges left out.
    pub skipped_v6_ranges: usize,
}

impl DpdkExport {
    /// Writes `rules` and `packets` (their IPv4 ones) in DPDK's formats.
    pub fn new(rules: &[ResolvedRule], packets: &[Packet]) -> DpdkExport {
        let mut out = DpdkExport::default();
        for (i, rule) in rules.iter().enumerate() {
            for peer in rule.peers() {
                if peer.family() != Family::V4 {
                    out.skipped_v6_ranges += 1;
                    continue;
                }
                for cidr in range_prefixes(peer.lo(), peer.hi()) {
                    for s in rule.services() {
                        for (proto, ports) in dpdk_services(s) {
                            let _ = writeln!(
                                out.rules,
                                "@{}/{}\t0.0.0.0/0\t0 : 65535\t{} : {}\t0x{:02x}/0x{:02x}",
                                Ipv4Addr::from(cidr.0),
                                cidr.1,
                                ports.0,
                                ports.1,
                                proto.0,
                                proto.1
                            );
                            out.rule_of_line.push(i);
                        }
                    }
                }
            }
        }
        for p in packets {
            if let IpAddr::V4(a) = p.peer {
                let port = if palisade_policy::has_ports(p.protocol) {
                    p.port.unwrap_or(0)
                } else {
                    0
                };
                let _ = writeln!(out.trace, "{} 0 0 {} {}", u32::from(a), port, p.protocol);
                out.trace_len += 1;
            }
        }
        out
    }
}

fn parse_line(line: usize, t: &str) -> Result<ClassBenchRule, BenchError> {
    let err = |message: String| BenchError::ClassBench { line, message };
    let body = t
        .strip_prefix('@')
        .ok_or_else(|| err("a rule line starts with '@'".into()))?;
    let f: Vec<&str> = body.split_whitespace().collect();
    if f.len() < 9 {
        return Err(err(format!(
            "expected `@src/len dst/len sport_lo : sport_hi dport_lo : dport_hi proto/mask`, got {} fields",
            f.len()
        )));
    }
    let prefix = |s: &str, what: &str| -> Result<(Ipv4Addr, u8), BenchError> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| err(format!("{what} {s:?}: expected address/length")))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| err(format!("{what} {s:?}: not an IPv4 address")))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| err(format!("{what} {s:?}: prefix length must be 0-32")))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
    };
    let range = |lo: &str, colon: &str, hi: &str, what: &str| -> Result<(u16, u16), BenchError> {
        if colon != ":" {
            return Err(err(format!("{what}: expected `lo : hi`")));
        }
        let lo = number(lo).and_then(|v| u16::try_from(v).ok());
        let hi = number(hi).and_then(|v| u16::try_from(v).ok());
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
            _ => Err(err(format!(
                "{what}: expected two ports 0-65535, low first"
            ))),
        }
    };
    let (pv, pm) = f[8]
        .split_once('/')
        .ok_or_else(|| err(format!("protocol {:?}: expected value/mask", f[8])))?;
    let byte = |s: &str| number(s).and_then(|v| u8::try_from(v).ok());
    let proto = match (byte(pv), byte(pm)) {
        (Some(v), Some(m)) => (v & m, m),
        _ => return Err(err(format!("protocol {:?}: expected two bytes", f[8]))),
    };
    Ok(ClassBenchRule {
        line,
        src: prefix(f[0], "source")?,
        dst: prefix(f[1], "destination")?,
        sport: range(f[2], f[3], f[4], "source ports")?,
        dport: range(f[5], f[6], f[7], "destination ports")?,
        proto,
    })
}

/// A decimal or `0x` hexadecimal number.
fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn project_one(index: usize, r: &ClassBenchRule) -> ResolvedRule {
    let (net, len) = r.src;
    let lo = u128::from(u32::from(net));
    let size = 1u128 << (32 - u32::from(len));
    let peer = AddrRange::new(Family::V4, lo, lo + size - 1)
        .unwrap_or_else(|| AddrRange::everything(Family::V4));
    let dport = PortRange::new(r.dport.0, r.dport.1).unwrap_or(PortRange::single(r.dport.0));
    let protocols: Vec<ProtocolMatch> = match r.proto.1 {
        0 => vec![ProtocolMatch::All],
        0xFF => vec![ProtocolMatch::Number(r.proto.0)],
        m => (0..=u8::MAX)
            .filter(|p| p & m == r.proto.0)
            .map(ProtocolMatch::Number)
            .collect(),
    };
    let services = protocols
        .iter()
        .map(|&protocol| ServiceMatch {
            protocol,
            ports: vec![dport],
        })
        .collect();
    ResolvedRule::new(
        RuleOrigin {
            security_group_id: group(),
            direction: Direction::Ingress,
            policy_index: index,
        },
        Action::Accept,
        written(r, &protocols, dport),
        services,
        vec![peer],
    )
}

/// The group every projected rule is said to come from.
fn group() -> SecurityGroupId {
    // A valid id: "sg-" and eight lowercase letters or digits.
    "sg-cbench00"
        .parse()
        .unwrap_or_else(|_| unreachable!("sg-cbench00 is a valid id"))
}

/// The rule as it would be written (for display; the sets are exact).
fn written(r: &ClassBenchRule, protocols: &[ProtocolMatch], dport: PortRange) -> Policy {
    let protocol = match protocols {
        [ProtocolMatch::Number(6)] => Protocol::Tcp,
        [ProtocolMatch::Number(17)] => Protocol::Udp,
        [ProtocolMatch::Number(1)] => Protocol::Icmp,
        [ProtocolMatch::Number(47)] => Protocol::Gre,
        [ProtocolMatch::Number(58)] => Protocol::Icmpv6,
        _ => Protocol::All,
    };
    let ports = if protocol.has_ports() && dport != PortRange::new(0, u16::MAX).unwrap_or(dport) {
        Ports::List(vec![dport])
    } else {
        Ports::All
    };
    let cidr = Cidr::parse_v4("CidrBlock", &format!("{}/{}", r.src.0, r.src.1))
        .or_else(|_| Cidr::parse_v4("CidrBlock", "0.0.0.0/0"));
    let peer = match cidr {
        Ok(c) => Peer::Cidr(c),
        Err(_) => unreachable!("0.0.0.0/0 parses"),
    };
    Policy {
        service: Service::Protocol { protocol, ports },
        peer,
        action: Action::Accept,
        description: format!("classbench line {}", r.line),
        modify_time: None,
        priority: None,
    }
}

/// The (protocol value/mask, port range) lines for one service.
fn dpdk_services(s: &ServiceMatch) -> Vec<((u8, u8), (u16, u16))> {
    let mut out = Vec::new();
    let ranges: Vec<(u16, u16)> = s.ports.iter().map(|r| (r.lo(), r.hi())).collect();
    match s.protocol {
        ProtocolMatch::Number(n) if palisade_policy::has_ports(n) => {
            for &r in &ranges {
                out.push(((n, 0xFF), r));
            }
        }
        ProtocolMatch::Number(n) => out.push(((n, 0xFF), (0, u16::MAX))),
        ProtocolMatch::All if ranges == [(0, u16::MAX)] => out.push(((0, 0), (0, u16::MAX))),
        ProtocolMatch::All => {
            for n in [palisade_policy::TCP, palisade_policy::UDP] {
                for &r in &ranges {
                    out.push(((n, 0xFF), r));
                }
            }
            // Every protocol but 6 and 17, as value/mask blocks, all ports.
            for (lo, len) in range_prefixes_u8(&[(0, 5), (7, 16), (18, 255)]) {
                let mask = u8::MAX.checked_shl(8 - u32::from(len)).unwrap_or(0);
                out.push(((lo, mask), (0, u16::MAX)));
            }
        }
    }
    out
}

/// The CIDR blocks `(network, length)` exactly covering `lo..=hi` (IPv4).
fn range_prefixes(lo: u128, hi: u128) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u64, hi as u64);
    while lo <= hi {
        // The largest aligned block starting at `lo` that fits.
        let mut size: u64 = if lo == 0 {
            1 << 32
        } else {
            lo & lo.wrapping_neg()
        };
        while size > 1 && lo + size - 1 > hi {
            size >>= 1;
        }
        let len = 32 - size.trailing_zeros().min(32);
        out.push((lo as u32, len as u8));
        lo += size;
    }
    out
}

/// The value/length blocks exactly covering the byte ranges given.
fn range_prefixes_u8(ranges: &[(u8, u8)]) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    for &(lo, hi) in ranges {
        let (mut lo, hi) = (u16::from(lo), u16::from(hi));
        while lo <= hi {
            let mut size: u16 = if lo == 0 { 256 } else { lo & lo.wrapping_neg() };
            while size > 1 && lo + size - 1 > hi {
                size >>= 1;
            }
            out.push((lo as u8, (8 - size.trailing_zeros().min(8)) as u8));
            lo += size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::eval::first_match_index;

    const SAMPLE: &str = include_str!("../tests/data/sample.classbench");

    #[test]
    fn parses_and_projects_the_sample() {
        let rules = parse(SAMPLE).unwrap();
        assert_eq!(rules.len(), 39);
        assert!(looks_like_classbench(SAMPLE));
        assert!(!looks_like_classbench("security_groups: []\n"));
        let first = rules[0];
        assert_eq!(first.line, 3);
        assert_eq!(first.src, ("176.19.181.33".parse().unwrap(), 32));
        assert_eq!(first.dport, (1550, 1550));
        assert_eq!(first.proto, (6, 0xFF));
        let projected = project(&rules);
        assert_eq!(projected.len(), rules.len());
        let r = &projected[0];
        assert_eq!(r.origin().policy_index, 0);
        assert_eq!(
            r.policy().to_string(),
            "ACCEPT TCP 1550 peer 176.19.181.33/32 \"classbench line 3\""
        );
        let p = |proto, peer: &str, port| Packet {
            direction: Direction::Ingress,
            protocol: proto,
            peer: peer.parse().unwrap(),
            port,
        };
        assert_eq!(
            first_match_index(&projected, &p(6, "176.19.181.33", Some(1550))),
            Some(0)
        );
        // 0.0.0.0/1 is half the space, not all of it.
        let half = rules.iter().position(|r| r.src.1 == 1).unwrap();
        assert_eq!(projected[half].peers()[0].hi(), 0x7fff_ffff);
    }

    #[test]
    fn bad_lines_name_their_line() {
        for bad in [
            "@1.2.3.4/33\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF",
            "@1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t80 : 79\t0x06/0xFF",
            "@1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t80 - 81\t0x06/0xFF",
            "@1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t80 : 81\t0x106/0xFF",
            "@1.2.3.4/32\t0.0.0.0/0\t0 : 65535",
            "1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t80 : 81\t6/255",
            "@x/32\t0.0.0.0/0\t0 : 65535\t80 : 81\t6/255",
        ] {
            let e = parse(&format!("# c\n{bad}\n")).unwrap_err();
            assert!(e.to_string().starts_with("line 2: "), "{e}");
        }
        let ok = parse("@1.2.3.255/24 0.0.0.0/0 0 : 65535 80 : 81 6/255\n").unwrap();
        assert_eq!(ok[0].src.0, "1.2.3.0".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn odd_protocol_masks_become_one_service_per_protocol() {
        let r = parse("@0.0.0.0/0 0.0.0.0/0 0 : 65535 80 : 80 0x06/0xFE\n").unwrap();
        let p = project(&r);
        let protos: Vec<String> = p[0]
            .services()
            .iter()
            .map(|s| s.protocol.to_string())
            .collect();
        assert_eq!(protos, ["TCP", "7"]);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "[@0-9./: \\tx#\\na-fA-F]{0,200}") {
            if let Ok(rules) = parse(&text) {
                let projected = project(&rules);
                let _ = DpdkExport::new(&projected, &[]);
            }
        }

        #[test]
        fn well_formed_lines_project_and_export(
            a in proptest::prelude::any::<u32>(), len in 0u8..=40,
            ports in proptest::prelude::any::<(u16, u16)>(),
            proto in proptest::prelude::any::<(u8, u8)>(),
        ) {
            let line = format!(
                "@{}/{len}\t0.0.0.0/0\t0 : 65535\t{} : {}\t{}/{}\n",
                Ipv4Addr::from(a), ports.0, ports.1, proto.0, proto.1
            );
            let Ok(rules) = parse(&line) else {
                proptest::prop_assert!(len > 32 || ports.0 > ports.1);
                return Ok(());
            };
            let projected = project(&rules);
            proptest::prop_assert_eq!(projected.len(), 1);
            let x = DpdkExport::new(&projected, &[]);
            proptest::prop_assert_eq!(x.rules.lines().count(), x.rule_of_line.len());
        }
    }

    #[test]
    fn prefixes_cover_ranges_exactly() {
        assert_eq!(range_prefixes(0, 0xffff_ffff), vec![(0, 0)]);
        assert_eq!(range_prefixes(1, 2), vec![(1, 32), (2, 32)]);
        assert_eq!(range_prefixes(4, 11), vec![(4, 30), (8, 30)]);
        assert_eq!(
            range_prefixes(0xffff_ffff, 0xffff_ffff),
            vec![(0xffff_ffff, 32)]
        );
        let blocks = range_prefixes_u8(&[(0, 5), (7, 16), (18, 255)]);
        let covered: usize = blocks.iter().map(|&(_, l)| 1usize << (8 - l)).sum();
        assert_eq!(covered, 254);
    }

    #[test]
    fn dpdk_export_maps_lines_to_rules() {
        let rules = project(&parse(SAMPLE).unwrap());
        let packets = vec![Packet {
            direction: Direction::Ingress,
            protocol: 6,
            peer: "176.19.181.33".parse().unwrap(),
            port: Some(1550),
        }];
        let x = DpdkExport::new(&rules, &packets);
        assert_eq!(x.rules.lines().count(), x.rule_of_line.len());
        assert_eq!(x.rule_of_line.len(), rules.len());
        assert!(x
            .rules
            .starts_with("@176.19.181.33/32\t0.0.0.0/0\t0 : 65535\t1550 : 1550\t0x06/0xff\n"));
        assert_eq!(
            x.trace,
            format!(
                "{} 0 0 1550 6\n",
                u32::from(Ipv4Addr::new(176, 19, 181, 33))
            )
        );
        // An ALL rule with ports splits into TCP, UDP and the other 254 protocols.
        let all = parse("@10.0.0.0/8 0.0.0.0/0 0 : 65535 80 : 80 0/0\n").unwrap();
        let x = DpdkExport::new(&project(&all), &[]);
        assert!(x.rules.contains("0x06/0xff") && x.rules.contains("0x11/0xff"));
        assert!(x.rule_of_line.iter().all(|&i| i == 0));
    }
}
