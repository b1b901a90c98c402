//! `palisade reach`: can traffic get from SRC to DST? Each side is an
//! instance (its private IPs, and its groups decide: the source's egress,
//! the destination's ingress) or a CIDR / IP / range (no rules of its own).
//!
//! With a protocol and port, the answer is yes or no for every source
//! address to every destination address of the same family, with the
//! deciding rule on each side for one concrete packet (a blocked one when
//! the answer is no). Without, the answer is every (protocol, port range)
//! that gets through from every source address to every destination
//! address. Replies are not checked: the groups are stateful.

use crate::check::packets;
use crate::engine::{Engine, ListEffect};
use crate::error::AnalyzeError;
use palisade_model::addr::u128_to_ip;
use palisade_model::{AddrRange, AddressEntry, Direction, Family, Fleet, InstanceId};
use palisade_policy::{
    codec,
    eval::{protocol_name, protocol_range_name},
    Packet, PacketBox, PacketSet, RuleOrigin,
};
use serde::Serialize;
use std::net::IpAddr;
use std::rc::Rc;

/// One side of the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An instance of the fleet.
    Instance(InstanceId),
    /// Addresses outside the fleet's rules.
    Addresses(AddrRange),
}

impl Endpoint {
    /// Parses `ins-...` (which must exist in `fleet`) or an IP, CIDR or
    /// `first-last` range; `field` (`--from`, `--to`) names it in errors.
    pub fn parse(fleet: &Fleet, field: &str, text: &str) -> Result<Endpoint, AnalyzeError> {
        let t = text.trim();
        if t.starts_with("ins-") {
            let id = InstanceId::parse_field(field, t).map_err(|e| AnalyzeError::Malformed {
                field: field.to_string(),
                value: text.to_string(),
                why: e.message().to_string(),
            })?;
            if fleet.instance(&id).is_none() {
                return Err(AnalyzeError::UnknownInstance {
                    what: field.to_string(),
                    id: t.to_string(),
                });
            }
            return Ok(Endpoint::Instance(id));
        }
        AddressEntry::parse_field(field, t)
            .map(|a| Endpoint::Addresses(a.range()))
            .map_err(|_| AnalyzeError::Malformed {
                field: field.to_string(),
                value: text.to_string(),
                why: "expected an instance id (ins-...), an IP, a CIDR or a first-last range"
                    .to_string(),
            })
    }
}

/// The question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachQuery {
    /// Where the traffic starts.
    pub from: Endpoint,
    /// Where it goes.
    pub to: Endpoint,
    /// IP protocol number; with `port` (TCP/UDP) a yes/no question.
    pub protocol: Option<u8>,
    /// Destination port.
    pub port: Option<u16>,
}

/// One side as the answer shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    /// `instance` or `addresses`.
    pub kind: &'static str,
    /// The instance id, or the addresses as written.
    pub id: String,
    /// The addresses taken into account.
    pub addresses: Vec<String>,
}

/// The verdict of one side's groups on the examined packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `ACCEPT` or `DROP`.
    pub action: &'static str,
    /// The deciding rule; null for default drop.
    pub matched: Option<RuleOrigin>,
    /// The deciding rule as text.
    pub rule: Option<String>,
    /// The packet as this side sees it (egress: the peer is the destination).
    pub packet: Packet,
}

/// (protocols, ports) that get through: a row for TCP, one for UDP, one
/// for the other protocols (which have no ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// `TCP`, `UDP`, `ALL`, `ALL but TCP and UDP`, or other protocols by
    /// name, or by number range with the named ones it holds:
    /// `ICMP, GRE`, `0-5 (ICMP, ...), 7-16`.
    pub protocols: String,
    /// `ALL`, or port ranges `22,80-90` (TCP/UDP only).
    pub ports: String,
}

/// The answer. JSON: `{"from", "to", "protocol", "port", "reachable",
/// "source_egress", "destination_ingress", "allowed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReachReport {
    /// The source.
    pub from: Side,
    /// The destination.
    pub to: Side,
    /// The protocol asked about.
    pub protocol: Option<u8>,
    /// The port asked about.
    pub port: Option<u16>,
    /// With a protocol: whether it gets through for every address pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// With a protocol: the source's egress verdict (null for addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_egress: Option<Decision>,
    /// With a protocol: the destination's ingress verdict (null for addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_ingress: Option<Decision>,
    /// Without a protocol: everything that gets through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Allowed>>,
}

/// Answers `query` on `fleet`.
pub fn reach(fleet: &Fleet, query: &ReachQuery) -> Result<ReachReport, AnalyzeError> {
    let mut e = Engine::new(fleet)?;
    let from = resolve_side(&mut e, &query.from, "--from")?;
    let to = resolve_side(&mut e, &query.to, "--to")?;
    let families: Vec<Family> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| from.has(*f) && to.has(*f))
        .collect();
    if families.is_empty() {
        return Err(AnalyzeError::Malformed {
            field: "--to".to_string(),
            value: to.side.id.clone(),
            why: format!(
                "{} and {} have no address family in common",
                from.side.id, to.side.id
            ),
        });
    }
    let mut report = ReachReport {
        from: from.side.clone(),
        to: to.side.clone(),
        protocol: query.protocol,
        port: query.port,
        reachable: None,
        source_egress: None,
        destination_ingress: None,
        allowed: None,
    };
    match query.protocol {
        Some(proto) => {
            let port = if palisade_policy::has_ports(proto) {
                query.port.ok_or_else(|| AnalyzeError::Malformed {
                    field: "--port".to_string(),
                    value: String::new(),
                    why: format!("required with {}", protocol_name(proto)),
                })?
            } else {
                0
            };
            // The first blocked pair, else the first pair.
            let mut pick: Option<(IpAddr, IpAddr)> = None;
            let mut ok = true;
            for f in &families {
                let (s, d) = (from.ranges(*f), to.ranges(*f));
                let first = (first_ip(&s), first_ip(&d));
                if let Some(eff) = &from.effect {
                    let need = packets(proto, proto, &d, (port, port));
                    if let Some(w) = need
                        .difference(&eff.egress.accepted)
                        .witness(Direction::Egress)
                    {
                        ok = false;
                        if let Some(si) = first.0 {
                            pick = Some((si, w.peer));
                        }
                        break;
                    }
                }
                if let Some(eff) = &to.effect {
                    let need = packets(proto, proto, &s, (port, port));
                    if let Some(w) = need
                        .difference(&eff.ingress.accepted)
                        .witness(Direction::Ingress)
                    {
                        ok = false;
                        if let Some(di) = first.1 {
                            pick = Some((w.peer, di));
                        }
                        break;
                    }
                }
                if pick.is_none() {
                    if let (Some(a), Some(b)) = first {
                        pick = Some((a, b));
                    }
                }
            }
            report.reachable = Some(ok);
            if let Some((s, d)) = pick {
                let port = palisade_policy::has_ports(proto).then_some(port);
                if let Endpoint::Instance(id) = &query.from {
                    report.source_egress = Some(decision(
                        &e,
                        fleet,
                        id,
                        Packet {
                            direction: Direction::Egress,
                            protocol: proto,
                            peer: d,
                            port,
                        },
                    ));
                }
                if let Endpoint::Instance(id) = &query.to {
                    report.destination_ingress = Some(decision(
                        &e,
                        fleet,
                        id,
                        Packet {
                            direction: Direction::Ingress,
                            protocol: proto,
                            peer: s,
                            port,
                        },
                    ));
                }
            }
        }
        None => {
            let plane = packets(0, u8::MAX, &[origin()], (0, u16::MAX));
            let mut allowed = plane.clone();
            for f in &families {
                let (s, d) = (from.ranges(*f), to.ranges(*f));
                if let Some(eff) = &from.effect {
                    let missing =
                        packets(0, u8::MAX, &d, (0, u16::MAX)).difference(&eff.egress.accepted);
                    allowed = allowed.difference(&project(&missing));
                }
                if let Some(eff) = &to.effect {
                    let missing =
                        packets(0, u8::MAX, &s, (0, u16::MAX)).difference(&eff.ingress.accepted);
                    allowed = allowed.difference(&project(&missing));
                }
            }
            report.reachable = None;
            report.allowed = Some(describe(&allowed));
        }
    }
    Ok(report)
}

struct Resolved {
    side: Side,
    addresses: Vec<AddrRange>,
    effect: Option<Rc<ListEffect>>,
}

impl Resolved {
    fn has(&self, f: Family) -> bool {
        self.addresses.iter().any(|a| a.family() == f)
    }

    fn ranges(&self, f: Family) -> Vec<AddrRange> {
        self.addresses
            .iter()
            .copied()
            .filter(|a| a.family() == f)
            .collect()
    }
}

fn resolve_side(e: &mut Engine<'_>, ep: &Endpoint, field: &str) -> Result<Resolved, AnalyzeError> {
    match ep {
        Endpoint::Addresses(r) => Ok(Resolved {
            side: Side {
                kind: "addresses",
                id: codec::format_addr_range(*r),
                addresses: vec![codec::format_addr_range(*r)],
            },
            addresses: vec![*r],
            effect: None,
        }),
        Endpoint::Instance(id) => {
            let inst = e
                .fleet()
                .instance(id)
                .ok_or_else(|| AnalyzeError::UnknownInstance {
                    what: field.to_string(),
                    id: id.to_string(),
                })?;
            if inst.private_ips.is_empty() {
                return Err(AnalyzeError::Malformed {
                    field: field.to_string(),
                    value: id.to_string(),
                    why: "the instance has no private IP".to_string(),
                });
            }
            let groups = inst.security_groups.clone();
            let addresses: Vec<AddrRange> = inst
                .private_ips
                .iter()
                .map(|ip| AddrRange::single(*ip))
                .collect();
            Ok(Resolved {
                side: Side {
                    kind: "instance",
                    id: id.to_string(),
                    addresses: inst.private_ips.iter().map(|i| i.to_string()).collect(),
                },
                addresses,
                effect: Some(e.effect(&groups)),
            })
        }
    }
}

fn decision(e: &Engine<'_>, fleet: &Fleet, id: &InstanceId, packet: Packet) -> Decision {
    let groups = fleet
        .instance(id)
        .map(|i| i.security_groups.as_slice())
        .unwrap_or_default();
    match e.decide(groups, &packet) {
        Some(r) => Decision {
            action: r.action().as_str(),
            matched: Some(r.origin().clone()),
            rule: Some(r.policy().to_string()),
            packet,
        },
        None => Decision {
            action: "DROP",
            matched: None,
            rule: None,
            packet,
        },
    }
}

fn first_ip(ranges: &[AddrRange]) -> Option<IpAddr> {
    ranges.first().map(|r| u128_to_ip(r.family(), r.lo()))
}

/// The one address the (protocol, port) plane is drawn on.
fn origin() -> AddrRange {
    AddrRange::single(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// The (protocol, port) pairs of `set`, whatever the peer.
fn project(set: &PacketSet) -> PacketSet {
    set.boxes()
        .into_iter()
        .map(|b| PacketBox {
            peers: origin(),
            ..b
        })
        .collect()
}

/// A protocol number known to be at most 255.
fn narrow(n: u16) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn describe(set: &PacketSet) -> Vec<Allowed> {
    use palisade_model::PortRange;
    let (tcp, udp) = (palisade_policy::TCP, palisade_policy::UDP);
    let mut ports: [Vec<PortRange>; 2] = [Vec::new(), Vec::new()];
    let mut others: Vec<(u8, u8)> = Vec::new();
    for b in set.boxes() {
        let (lo, hi) = (b.protocol_lo, b.protocol_hi);
        for (i, p) in [tcp, udp].into_iter().enumerate() {
            if (lo..=hi).contains(&p) {
                ports[i].push(b.ports);
            }
        }
        // The protocols of the box other than TCP and UDP (their ports are all).
        let mut from = u16::from(lo);
        for cut in [u16::from(tcp), u16::from(udp)] {
            if from <= cut && cut <= u16::from(hi) {
                if cut > from {
                    others.push((narrow(from), narrow(cut - 1)));
                }
                from = cut + 1;
            }
        }
        if from <= u16::from(hi) {
            others.push((narrow(from), hi));
        }
    }
    others.sort_unstable();
    others.dedup();
    let mut merged: Vec<(u8, u8)> = Vec::new();
    for (lo, hi) in others {
        match merged.last_mut() {
            Some(last) if u16::from(lo) <= u16::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let full = |p: &[PortRange]| {
        let m = palisade_model::proto::merge_ranges(p);
        m.len() == 1 && m[0].lo() == 0 && m[0].hi() == u16::MAX
    };
    let rest_all = merged == [(0, 5), (7, 16), (18, 255)];
    if rest_all && full(&ports[0]) && full(&ports[1]) {
        return vec![Allowed {
            protocols: "ALL".to_string(),
            ports: "ALL".to_string(),
        }];
    }
    let mut out = Vec::new();
    for (i, p) in [tcp, udp].into_iter().enumerate() {
        if !ports[i].is_empty() {
            out.push(Allowed {
                protocols: protocol_name(p),
                ports: codec::format_ports(&palisade_model::proto::merge_ranges(&ports[i])),
            });
        }
    }
    if rest_all {
        out.push(Allowed {
            protocols: "ALL but TCP and UDP".to_string(),
            ports: "ALL".to_string(),
        });
    } else if !merged.is_empty() {
        let names: Vec<String> = merged
            .iter()
            .map(|&(lo, hi)| protocol_range_name(lo, hi))
            .collect();
        out.push(Allowed {
            protocols: names.join(", "),
            ports: "ALL".to_string(),
        });
    }
    out
}
