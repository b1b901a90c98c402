//! Test fixtures shared by the unit tests: a fleet exercising every kind of
//! rule, and generators of random rule lists and packets for the property
//! tests.

use crate::eval::Packet;
use crate::resolve::{ProtocolMatch, ResolvedRule, RuleOrigin, ServiceMatch};
use palisade_model::{
    Action, AddrRange, Cidr, Direction, Family, Fleet, Peer, PortRange, SecurityGroupId,
};
use proptest::prelude::*;
use std::net::IpAddr;

/// A fleet with two groups bound in order to `ins-node0001`, a referenced
/// group with members of both families, an empty group, templates of
/// every kind, and an instance with no group.
pub const FLEET: &str = r#"
security_groups:
  - id: sg-first001
    policies:
      Ingress:
        - {Protocol: TCP, Port: "23", CidrBlock: 0.0.0.0/0, Action: DROP, PolicyDescription: no telnet}
        - {Protocol: TCP, Port: "22", AddressTemplate: {AddressId: ipm-office01}, Action: ACCEPT}
        - {Protocol: TCP, Port: "8080", SecurityGroupId: sg-web00001, Action: ACCEPT}
        - {Protocol: TCP, Port: "9000", SecurityGroupId: sg-empty001, Action: ACCEPT}
      Egress:
        - {Protocol: TCP, Port: "25", CidrBlock: 0.0.0.0/0, Action: DROP}
  - id: sg-second01
    policies:
      Ingress:
        - {Protocol: TCP, Port: "22-23", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: ICMP, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: ICMPv6, Ipv6CidrBlock: "::/0", Action: ACCEPT}
        - {ServiceTemplate: {ServiceGroupId: ppmg-dns00001}, Ipv6CidrBlock: "2001:db8::/32", Action: ACCEPT}
        - {Protocol: ALL, Port: ALL, CidrBlock: 10.0.0.0/16, Action: ACCEPT}
        - {Protocol: UDP, Port: "53", AddressTemplate: {AddressGroupId: ipmg-v6only01}, Action: ACCEPT}
        - {ServiceTemplate: {ServiceId: ppm-web00001}, CidrBlock: 198.51.100.0/24, Action: DROP}
        - {Protocol: TCP, Port: ALL, CidrBlock: 198.51.100.0/24, Action: ACCEPT}
      Egress:
        - {Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
  - id: sg-web00001
    policies: {}
  - id: sg-empty001
    policies: {}
address_templates:
  - {id: ipm-office01, addresses: [203.0.113.0/24, 192.0.2.10-192.0.2.20]}
  - {id: ipm-v6hosts1, addresses: ["2001:db9::1", "2001:db9:2::/48", "2001:db9:3::1-2001:db9:3::ff"]}
address_template_groups:
  - {id: ipmg-v6only01, templates: [ipm-v6hosts1]}
service_templates:
  - {id: ppm-dns00001, services: ["udp:53", "tcp:53"]}
  - {id: ppm-ping0001, services: ["icmpv6"]}
  - {id: ppm-web00001, services: ["tcp:80,443", "tcp:8000-8100"]}
service_template_groups:
  - {id: ppmg-dns00001, templates: [ppm-dns00001, ppm-ping0001]}
instances:
  - {id: ins-node0001, private_ips: [10.0.0.11, "2001:db8:ff::11"], security_groups: [sg-first001, sg-second01]}
  - {id: ins-web00001, private_ips: [10.1.0.5, "2001:db8:ff::5"], security_groups: [sg-web00001]}
  - {id: ins-web00002, private_ips: [10.1.0.6], security_groups: [sg-web00001]}
  - {id: ins-bare0001, private_ips: [10.0.0.99], security_groups: []}
"#;

/// The fleet of [`FLEET`].
pub fn fleet() -> Fleet {
    Fleet::parse(FLEET).unwrap_or_else(|p| panic!("{p:#?}"))
}

/// An IP address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad ip {s}"))
}

/// A rule packet.
pub fn pkt(direction: Direction, protocol: u8, peer: &str, port: Option<u16>) -> Packet {
    Packet {
        direction,
        protocol,
        peer: ip(peer),
        port,
    }
}

/// `sg-...` as an id.
pub fn sg(id: &str) -> SecurityGroupId {
    id.parse().unwrap_or_else(|_| panic!("bad id {id}"))
}

/// A rule with these sets, at `index` of group `sg-test0001` ingress.
pub fn rule(
    index: usize,
    action: Action,
    services: Vec<ServiceMatch>,
    peers: Vec<AddrRange>,
) -> ResolvedRule {
    let everyone = Cidr::parse_v4("CidrBlock", "0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
    ResolvedRule::from_sets(
        RuleOrigin {
            security_group_id: sg("sg-test0001"),
            direction: Direction::Ingress,
            policy_index: index,
        },
        action,
        services,
        peers,
        Peer::Cidr(everyone),
    )
}

const V4_BASE: u128 = 0x0a00_0000;
const V6_BASE: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0000;

fn base(f: Family) -> u128 {
    match f {
        Family::V4 => V4_BASE,
        Family::V6 => V6_BASE,
    }
}

/// Random address ranges: mostly small ranges near a base address (so that
/// rules overlap), some CIDR blocks, some whole families.
pub fn addr_range() -> impl Strategy<Value = AddrRange> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    (family, 0u8..10, 0u128..64, 0u128..24, 0u8..8).prop_map(|(f, kind, off, len, bits)| {
        let b = base(f);
        let r = match kind {
            0 => Some(AddrRange::everything(f)),
            1 | 2 => {
                // An aligned block of 2^bits addresses.
                let size = 1u128 << bits;
                let lo = b + (off / size) * size;
                AddrRange::new(f, lo, lo + size - 1)
            }
            3 => AddrRange::new(f, 0, off),
            4 => AddrRange::new(f, f.max() - off, f.max()),
            _ => AddrRange::new(f, b + off, b + off + len),
        };
        r.unwrap_or_else(|| AddrRange::everything(f))
    })
}

const PORTS: [u16; 10] = [0, 1, 22, 23, 53, 80, 443, 1000, 65534, 65535];

/// Random port ranges near interesting ports.
pub fn port_range() -> impl Strategy<Value = PortRange> {
    (0usize..PORTS.len(), 0u16..4, any::<bool>(), any::<u16>()).prop_map(|(i, w, rnd, r)| {
        let lo = if rnd { r } else { PORTS[i] };
        PortRange::new(lo, lo.saturating_add(w)).unwrap_or(PortRange::single(lo))
    })
}

/// Random protocol numbers, mostly the ones rules name.
pub fn protocol() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(6u8),
        3 => Just(17u8),
        2 => Just(1u8),
        2 => Just(58u8),
        1 => Just(47u8),
        1 => Just(5u8),
        1 => Just(7u8),
        1 => Just(16u8),
        1 => Just(18u8),
        1 => any::<u8>(),
    ]
}

/// A random service: a protocol (or ALL) with random ports.
pub fn service() -> impl Strategy<Value = ServiceMatch> {
    let proto =
        prop_oneof![1 => Just(ProtocolMatch::All), 5 => protocol().prop_map(ProtocolMatch::Number)];
    (
        proto,
        prop::collection::vec(port_range(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(protocol, ports, all)| ServiceMatch {
            protocol,
            ports: if all { vec![crate::all_ports()] } else { ports },
        })
}

/// A random rule list of up to `max` rules.
pub fn rules(max: usize) -> impl Strategy<Value = Vec<ResolvedRule>> {
    let one = (
        any::<bool>(),
        prop::collection::vec(service(), 0..3),
        prop::collection::vec(addr_range(), 0..4),
    );
    prop::collection::vec(one, 0..max).prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, (accept, services, peers))| {
                let action = if accept { Action::Accept } else { Action::Drop };
                rule(i, action, services, peers)
            })
            .collect()
    })
}

/// A random packet near the base addresses and interesting ports.
pub fn packet() -> impl Strategy<Value = Packet> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    (
        protocol(),
        family,
        0u128..96,
        any::<bool>(),
        any::<u128>(),
        prop::option::of(prop_oneof![
            (0usize..PORTS.len()).prop_map(|i| PORTS[i]),
            any::<u16>()
        ]),
    )
        .prop_map(|(protocol, f, off, far, rnd, port)| {
            let n = if far { rnd & f.max() } else { base(f) + off };
            Packet {
                direction: Direction::Ingress,
                protocol,
                peer: palisade_model::addr::u128_to_ip(f, n),
                port,
            }
        })
}

/// Packets on and around every edge of every rule: range ends and their
/// neighbours, ports 0 and 65535, neighbouring protocols, and the same
/// number in the other family.
pub fn boundary_packets(rules: &[ResolvedRule]) -> Vec<Packet> {
    let mut addrs: Vec<(Family, u128)> = vec![(Family::V4, 0), (Family::V6, 0)];
    let mut ports: Vec<u16> = vec![0, 1, 65535];
    let mut protos: Vec<u8> = vec![0, 1, 6, 17, 58, 255];
    for r in rules {
        for p in r.peers() {
            for n in [
                p.lo().wrapping_sub(1),
                p.lo(),
                p.hi(),
                p.hi().wrapping_add(1),
            ] {
                let n = n & p.family().max();
                addrs.push((p.family(), n));
                let other = match p.family() {
                    Family::V4 => Family::V6,
                    Family::V6 => Family::V4,
                };
                addrs.push((other, n & other.max()));
            }
        }
        for s in r.services() {
            if let ProtocolMatch::Number(n) = s.protocol {
                protos.extend([n.wrapping_sub(1), n, n.wrapping_add(1)]);
            }
            for p in &s.ports {
                ports.extend([
                    p.lo().wrapping_sub(1),
                    p.lo(),
                    p.hi(),
                    p.hi().wrapping_add(1),
                ]);
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    ports.sort();
    ports.dedup();
    protos.sort();
    protos.dedup();
    let mut out = Vec::new();
    let mut k = 0usize;
    for &(f, n) in &addrs {
        let peer = palisade_model::addr::u128_to_ip(f, n);
        let mut push = |protocol, port| {
            out.push(Packet {
                direction: Direction::Ingress,
                protocol,
                peer,
                port,
            })
        };
        for &protocol in &protos {
            push(protocol, None);
            k += 1;
            push(protocol, ports.get(k % ports.len()).copied());
        }
        for protocol in [crate::TCP, crate::UDP] {
            for &p in &ports {
                push(protocol, Some(p));
            }
        }
    }
    out
}

/// A proptest configuration with `default` cases, or `PROPTEST_CASES`
/// when set (for long runs: `PROPTEST_CASES=5000 cargo test --release`).
pub fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}
