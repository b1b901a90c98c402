//! Resolution (DESIGN.md sections 2 and 4): an instance's bound groups, in
//! binding order, become one ordered rule list per direction in which every
//! reference is expanded. A `SecurityGroupId` peer becomes the private IPs of
//! the instances bound to that group (both families), an address template
//! or template group becomes its entries, a service template or group
//! becomes its protocols and ports. The result, a [`Ruleset`], is what the
//! server sends to agents and what evaluation, connection tracking and the
//! header-space algebra work on: nothing downstream looks anything up.
//!
//! A parsed [`Policy`] still holds names; a [`ResolvedRule`] holds sets.
//! The only way to a `ResolvedRule` is [`resolve`] (or its constructor,
//! which normalises), so a rule with an unexpanded reference cannot be
//! evaluated (the "parsed vs resolved" typestate of STYLE.md).
//!
//! Choices: a reference to a group with no members, or to an empty template,
//! matches nothing (the rule stays in the list, at its index, deciding no
//! packet). A group bound twice to an instance contributes its rules twice.

use crate::codec;
use crate::error::PolicyError;
use palisade_model::{
    Action, AddrRange, AddressEntry, AddressTemplate, AddressTemplateGroup, AddressTemplateGroupId,
    AddressTemplateId, Direction, Family, Fleet, InstanceId, Peer, Policy, PolicySet, PortRange,
    Protocol, SecurityGroupId, Service, ServiceEntry, ServiceTemplate, ServiceTemplateGroup,
    ServiceTemplateGroupId, ServiceTemplateId,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// Read access to what resolution needs: groups, their membership, and
/// templates. The fleet file implements it; the server implements it for a
/// store snapshot.
pub trait Catalog {
    /// The rules of group `id`; `None` when there is no such group.
    fn policies(&self, id: &SecurityGroupId) -> Option<&PolicySet>;

    /// The private IPs (both families) of every instance bound to group `id`.
    /// Only asked for groups whose `policies` exist.
    fn member_ips(&self, id: &SecurityGroupId) -> Vec<IpAddr>;

    /// The address template `id`.
    fn address_template(&self, id: &AddressTemplateId) -> Option<&AddressTemplate>;

    /// The address template group `id`.
    fn address_template_group(&self, id: &AddressTemplateGroupId) -> Option<&AddressTemplateGroup>;

    /// The service template `id`.
    fn service_template(&self, id: &ServiceTemplateId) -> Option<&ServiceTemplate>;

    /// The service template group `id`.
    fn service_template_group(&self, id: &ServiceTemplateGroupId) -> Option<&ServiceTemplateGroup>;
}

impl Catalog for Fleet {
    fn policies(&self, id: &SecurityGroupId) -> Option<&PolicySet> {
        self.group(id).map(|g| &g.policies)
    }

    fn member_ips(&self, id: &SecurityGroupId) -> Vec<IpAddr> {
        self.members(id)
            .flat_map(|i| i.private_ips.iter().copied())
            .collect()
    }

    fn address_template(&self, id: &AddressTemplateId) -> Option<&AddressTemplate> {
        Fleet::address_template(self, id)
    }

    fn address_template_group(&self, id: &AddressTemplateGroupId) -> Option<&AddressTemplateGroup> {
        Fleet::address_template_group(self, id)
    }

    fn service_template(&self, id: &ServiceTemplateId) -> Option<&ServiceTemplate> {
        Fleet::service_template(self, id)
    }

    fn service_template_group(&self, id: &ServiceTemplateGroupId) -> Option<&ServiceTemplateGroup> {
        Fleet::service_template_group(self, id)
    }
}

/// Where a rule comes from: its group, its direction and its `PolicyIndex`.
///
/// JSON: `{"security_group_id": "sg-...", "direction": "ingress", "policy_index": 0}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleOrigin {
    /// The group holding the rule.
    pub security_group_id: SecurityGroupId,
    /// The rule's list.
    #[serde(with = "codec::direction")]
    pub direction: Direction,
    /// The rule's position in its group's list (`PolicyIndex`), 0 first.
    pub policy_index: usize,
}

impl fmt::Display for RuleOrigin {
    /// `sg-1a2b3c4d Ingress[2]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}[{}]",
            self.security_group_id,
            self.direction.wire_name(),
            self.policy_index
        )
    }
}

/// The protocols a service matches: one IP protocol number, or all.
///
/// JSON: `"ALL"` or the number (`6`); names (`"tcp"`) are accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolMatch {
    /// Every protocol number.
    All,
    /// This IP protocol number only.
    Number(u8),
}

impl ProtocolMatch {
    /// The match for a rule's protocol.
    pub fn of(protocol: Protocol) -> Self {
        protocol
            .number()
            .map_or(ProtocolMatch::All, ProtocolMatch::Number)
    }

    /// Whether protocol number `p` is matched.
    pub fn matches(self, p: u8) -> bool {
        match self {
            ProtocolMatch::All => true,
            ProtocolMatch::Number(n) => n == p,
        }
    }

    /// Parses `all`, a protocol name (`tcp`, `udp`, `icmp`, `icmpv6`,
    /// `gre`, a few more) or a number 0-255, case-insensitively.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, PolicyError> {
        if value.trim().eq_ignore_ascii_case("all") {
            return Ok(ProtocolMatch::All);
        }
        crate::eval::parse_protocol(field, value).map(ProtocolMatch::Number)
    }
}

impl fmt::Display for ProtocolMatch {
    /// `ALL`, a known name (`TCP`, `ICMPv6`) or the number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolMatch::All => f.write_str("ALL"),
            ProtocolMatch::Number(n) => f.write_str(&crate::eval::protocol_name(*n)),
        }
    }
}

impl Serialize for ProtocolMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProtocolMatch::All => s.serialize_str("ALL"),
            ProtocolMatch::Number(n) => s.serialize_u8(*n),
        }
    }
}

impl<'de> Deserialize<'de> for ProtocolMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u8),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(ProtocolMatch::Number(n)),
            Repr::Text(t) => {
                ProtocolMatch::parse_field("protocol", &t).map_err(serde::de::Error::custom)
            }
        }
    }
}

/// One (protocol, ports) pair a rule matches. The ports count only for TCP
/// (6) and UDP (17); for every other protocol any packet of the protocol
/// matches whatever `ports` say. A TCP or UDP packet matches when its
/// destination port (ingress) or the peer's port (egress) is in `ports`.
///
/// JSON: `{"protocol": 6, "ports": "80,443"}` (`"ports": "ALL"` for every port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceMatch {
    /// The protocol(s).
    pub protocol: ProtocolMatch,
    /// The ports, sorted and merged; `ALL` is `0-65535`.
    #[serde(with = "codec::ports")]
    pub ports: Vec<PortRange>,
}

impl ServiceMatch {
    /// Whether a packet of `protocol` with destination port `port` matches.
    /// `port` is ignored unless the protocol is TCP or UDP, and a TCP/UDP
    /// packet without a port is taken as port 0 (only `ALL` covers it).
    pub fn matches(&self, protocol: u8, port: Option<u16>) -> bool {
        if !self.protocol.matches(protocol) {
            return false;
        }
        if !crate::has_ports(protocol) {
            return true;
        }
        let port = port.unwrap_or(0);
        self.ports.iter().any(|r| r.contains(port))
    }
}

/// A rule with every reference expanded: its origin, its action, the rule
/// as written (for display), and what it matches as sets. A packet matches
/// when one of `services` and one of `peers` match it.
///
/// JSON: `{"security_group_id", "direction", "policy_index", "action":
/// "ACCEPT"|"DROP", "policy": {tccli fields of the rule}, "services":
/// [{"protocol", "ports"}], "peers": ["10.0.0.0/16", "10.0.1.7", "a-b", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RuleRepr", into = "RuleRepr")]
pub struct ResolvedRule {
    origin: RuleOrigin,
    action: Action,
    policy: Policy,
    services: Vec<ServiceMatch>,
    peers: Vec<AddrRange>,
}

impl ResolvedRule {
    /// A resolved rule; `services` and `peers` are sorted and merged here.
    pub fn new(
        origin: RuleOrigin,
        action: Action,
        policy: Policy,
        services: Vec<ServiceMatch>,
        peers: Vec<AddrRange>,
    ) -> Self {
        Self {
            origin,
            action,
            policy,
            services: normalize_services(services),
            peers: merge_addr_ranges(peers),
        }
    }

    /// A rule given by its sets, for generated rule lists (tests,
    /// benchmarks): written as every protocol from `peer` (the reference
    /// the sets stand for, or a block).
    pub fn from_sets(
        origin: RuleOrigin,
        action: Action,
        services: Vec<ServiceMatch>,
        peers: Vec<AddrRange>,
        peer: Peer,
    ) -> Self {
        let policy = Policy {
            service: Service::Protocol {
                protocol: Protocol::All,
                ports: palisade_model::Ports::All,
            },
            peer,
            action,
            description: String::new(),
            modify_time: None,
            priority: None,
        };
        Self::new(origin, action, policy, services, peers)
    }

    /// The same rule written with peer `peer`, standing for `peers` (a
    /// reference's members as they change, in tests and benchmarks).
    pub fn with_peer(self, peer: Peer, peers: Vec<AddrRange>) -> Self {
        let policy = Policy {
            peer,
            ..self.policy
        };
        Self::new(self.origin, self.action, policy, self.services, peers)
    }

    /// Where the rule comes from.
    pub fn origin(&self) -> &RuleOrigin {
        &self.origin
    }

    /// ACCEPT or DROP.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The rule as written in its group.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The (protocol, ports) pairs matched, one per protocol, sorted.
    pub fn services(&self) -> &[ServiceMatch] {
        &self.services
    }

    /// The peer addresses matched, sorted (IPv4 first) and merged.
    pub fn peers(&self) -> &[AddrRange] {
        &self.peers
    }

    /// Whether the peer `ip` is one of the rule's peers (an IPv4 address
    /// never matches an IPv6 range and the other way round).
    pub fn matches_peer(&self, ip: IpAddr) -> bool {
        let probe = AddrRange::single(ip);
        // Peers are sorted by (family, lo) and disjoint: the candidate is the
        // last range starting at or before `ip`.
        let i = self
            .peers
            .partition_point(|r| (r.family(), r.lo()) <= (probe.family(), probe.lo()));
        i > 0 && self.peers[i - 1].contains(ip)
    }

    /// Whether a packet with this protocol, peer and destination port
    /// matches (see [`ServiceMatch::matches`] for the port).
    pub fn matches(&self, protocol: u8, peer: IpAddr, port: Option<u16>) -> bool {
        self.services.iter().any(|s| s.matches(protocol, port)) && self.matches_peer(peer)
    }
}

/// An instance's effective rules: its groups' lists concatenated in binding
/// order, per direction. A packet no rule matches is dropped.
///
/// JSON: `{"security_groups": ["sg-..."], "ingress": [rule...], "egress": [rule...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// The groups, in binding order.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupId>,
    /// Ingress rules, highest priority first.
    #[serde(default)]
    pub ingress: Vec<ResolvedRule>,
    /// Egress rules, highest priority first.
    #[serde(default)]
    pub egress: Vec<ResolvedRule>,
}

impl Ruleset {
    /// The list of one direction.
    pub fn rules(&self, direction: Direction) -> &[ResolvedRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The rule with this origin (to show the rule behind a verdict).
    pub fn rule(&self, origin: &RuleOrigin) -> Option<&ResolvedRule> {
        self.rules(origin.direction)
            .iter()
            .find(|r| r.origin() == origin)
    }
}

/// The one [`Catalog`] with hash-map lookups and membership computed once,
/// for resolving many instances (the fleet's own lookups scan lists):
/// built from a fleet file ([`FleetIndex::new`]), or from the objects the
/// server reads from a store snapshot ([`FleetIndex::from`] a [`Fleet`] of
/// them).
#[derive(Debug, Clone, Default)]
pub struct FleetIndex {
    groups: HashMap<SecurityGroupId, PolicySet>,
    members: HashMap<SecurityGroupId, Vec<IpAddr>>,
    address_templates: HashMap<AddressTemplateId, AddressTemplate>,
    address_template_groups: HashMap<AddressTemplateGroupId, AddressTemplateGroup>,
    service_templates: HashMap<ServiceTemplateId, ServiceTemplate>,
    service_template_groups: HashMap<ServiceTemplateGroupId, ServiceTemplateGroup>,
}

impl FleetIndex {
    /// Indexes `fleet` (its groups, instances and templates; copied).
    pub fn new(fleet: &Fleet) -> Self {
        Self::from(Fleet {
            security_groups: fleet.security_groups.clone(),
            address_templates: fleet.address_templates.clone(),
            address_template_groups: fleet.address_template_groups.clone(),
            service_templates: fleet.service_templates.clone(),
            service_template_groups: fleet.service_template_groups.clone(),
            instances: fleet.instances.clone(),
            ..Fleet::default()
        })
    }

    /// The private IPs (both families) of the instances bound to group `id`.
    pub fn members(&self, id: &SecurityGroupId) -> &[IpAddr] {
        self.members.get(id).map_or(&[], Vec::as_slice)
    }

    /// Whether any instance is bound to group `id`.
    pub fn has_members(&self, id: &SecurityGroupId) -> bool {
        self.members.contains_key(id)
    }
}

impl From<Fleet> for FleetIndex {
    /// Indexes the groups, instances and templates of `fleet` (clusters and
    /// limits play no part in resolution).
    fn from(fleet: Fleet) -> Self {
        let mut members: HashMap<SecurityGroupId, Vec<IpAddr>> = HashMap::new();
        for i in fleet.instances {
            for g in i.security_groups {
                members.entry(g).or_default().extend(&i.private_ips);
            }
        }
        FleetIndex {
            groups: fleet
                .security_groups
                .into_iter()
                .map(|g| (g.id, g.policies))
                .collect(),
            members,
            address_templates: fleet
                .address_templates
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            address_template_groups: fleet
                .address_template_groups
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            service_templates: fleet
                .service_templates
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            service_template_groups: fleet
                .service_template_groups
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
        }
    }
}

impl Catalog for FleetIndex {
    fn policies(&self, id: &SecurityGroupId) -> Option<&PolicySet> {
        self.groups.get(id)
    }

    fn member_ips(&self, id: &SecurityGroupId) -> Vec<IpAddr> {
        self.members(id).to_vec()
    }

    fn address_template(&self, id: &AddressTemplateId) -> Option<&AddressTemplate> {
        self.address_templates.get(id)
    }

    fn address_template_group(&self, id: &AddressTemplateGroupId) -> Option<&AddressTemplateGroup> {
        self.address_template_groups.get(id)
    }

    fn service_template(&self, id: &ServiceTemplateId) -> Option<&ServiceTemplate> {
        self.service_templates.get(id)
    }

    fn service_template_group(&self, id: &ServiceTemplateGroupId) -> Option<&ServiceTemplateGroup> {
        self.service_template_groups.get(id)
    }
}

/// Resolves the groups `groups` (binding order) into one ruleset. Fails on
/// a bound group, referenced group or template that the catalog lacks.
pub fn resolve<C: Catalog + ?Sized>(
    catalog: &C,
    groups: &[SecurityGroupId],
) -> Result<Ruleset, PolicyError> {
    let mut set = Ruleset {
        security_groups: groups.to_vec(),
        ..Ruleset::default()
    };
    for gid in groups {
        let policies = catalog
            .policies(gid)
            .ok_or_else(|| PolicyError::UnknownBoundGroup {
                id: gid.to_string(),
            })?;
        for direction in Direction::BOTH {
            for (index, policy) in policies.rules(direction).iter().enumerate() {
                let origin = RuleOrigin {
                    security_group_id: gid.clone(),
                    direction,
                    policy_index: index,
                };
                let rule = resolve_policy(catalog, origin, policy)?;
                match direction {
                    Direction::Ingress => set.ingress.push(rule),
                    Direction::Egress => set.egress.push(rule),
                }
            }
        }
    }
    Ok(set)
}

/// Resolves one rule of group `origin.security_group_id`.
pub fn resolve_policy<C: Catalog + ?Sized>(
    catalog: &C,
    origin: RuleOrigin,
    policy: &Policy,
) -> Result<ResolvedRule, PolicyError> {
    let services = resolve_service(catalog, &origin, &policy.service)?;
    let peers = resolve_peer(catalog, &origin, &policy.peer)?;
    Ok(ResolvedRule::new(
        origin,
        policy.action,
        policy.clone(),
        services,
        peers,
    ))
}

/// Resolves the groups bound to fleet instance `id`.
pub fn resolve_instance(fleet: &Fleet, id: &InstanceId) -> Result<Ruleset, PolicyError> {
    let instance = fleet
        .instance(id)
        .ok_or_else(|| PolicyError::UnknownInstance { id: id.to_string() })?;
    resolve(fleet, &instance.security_groups)
}

/// A rule as Tencent's `DescribeSecurityGroupExpandedPolicies` shows it:
/// one written rule per address (each entry's CIDR blocks) and per service
/// entry of the templates it names, in the templates' order; any other peer
/// or service as written (a group reference stays a reference). The
/// templates are looked up as [`resolve`] looks them up: a missing one is
/// the same error, never an empty list.
pub fn expand_templates<C: Catalog + ?Sized>(
    catalog: &C,
    origin: &RuleOrigin,
    policy: &Policy,
) -> Result<Vec<Policy>, PolicyError> {
    let peers: Vec<Peer> = match &policy.peer {
        Peer::AddressTemplate(_) | Peer::AddressTemplateGroup(_) => {
            address_entries(catalog, origin, &policy.peer)?
                .into_iter()
                .flat_map(|e| e.range().to_cidrs())
                .map(|c| match c.family() {
                    Family::V4 => Peer::Cidr(c),
                    Family::V6 => Peer::Ipv6Cidr(c),
                })
                .collect()
        }
        peer => vec![peer.clone()],
    };
    let services: Vec<Service> = match &policy.service {
        Service::Protocol { .. } => vec![policy.service.clone()],
        service => service_entries(catalog, origin, service)?
            .into_iter()
            .map(|e| Service::Protocol {
                protocol: e.protocol,
                ports: e.ports.clone(),
            })
            .collect(),
    };
    Ok(peers
        .iter()
        .flat_map(|peer| {
            services.iter().map(move |service| Policy {
                peer: peer.clone(),
                service: service.clone(),
                ..policy.clone()
            })
        })
        .collect())
}

fn resolve_service<C: Catalog + ?Sized>(
    catalog: &C,
    origin: &RuleOrigin,
    service: &Service,
) -> Result<Vec<ServiceMatch>, PolicyError> {
    let entry = |protocol: Protocol, ports: &palisade_model::Ports| ServiceMatch {
        protocol: ProtocolMatch::of(protocol),
        ports: if protocol.has_ports() {
            ports.ranges()
        } else {
            vec![crate::all_ports()]
        },
    };
    if let Service::Protocol { protocol, ports } = service {
        return Ok(vec![entry(*protocol, ports)]);
    }
    Ok(service_entries(catalog, origin, service)?
        .into_iter()
        .map(|e| entry(e.protocol, &e.ports))
        .collect())
}

/// The entries of the service template or template group `service` names,
/// in order (none for a protocol and ports).
fn service_entries<'c, C: Catalog + ?Sized>(
    catalog: &'c C,
    origin: &RuleOrigin,
    service: &Service,
) -> Result<Vec<&'c ServiceEntry>, PolicyError> {
    let template = |id: &ServiceTemplateId| {
        catalog
            .service_template(id)
            .map(|t| t.services.iter())
            .ok_or_else(|| PolicyError::UnknownServiceTemplate {
                origin: origin.clone(),
                id: id.to_string(),
            })
    };
    match service {
        Service::Protocol { .. } => Ok(Vec::new()),
        Service::Template(id) => Ok(template(id)?.collect()),
        Service::TemplateGroup(gid) => {
            let group = catalog.service_template_group(gid).ok_or_else(|| {
                PolicyError::UnknownServiceTemplateGroup {
                    origin: origin.clone(),
                    id: gid.to_string(),
                }
            })?;
            let mut out = Vec::new();
            for id in &group.templates {
                out.extend(template(id)?);
            }
            Ok(out)
        }
    }
}

fn resolve_peer<C: Catalog + ?Sized>(
    catalog: &C,
    origin: &RuleOrigin,
    peer: &Peer,
) -> Result<Vec<AddrRange>, PolicyError> {
    match peer {
        Peer::Cidr(c) | Peer::Ipv6Cidr(c) => Ok(vec![c.range()]),
        Peer::SecurityGroup(id) => {
            if catalog.policies(id).is_none() {
                return Err(PolicyError::UnknownReferencedGroup {
                    origin: origin.clone(),
                    id: id.to_string(),
                });
            }
            Ok(catalog
                .member_ips(id)
                .into_iter()
                .map(AddrRange::single)
                .collect())
        }
        Peer::AddressTemplate(_) | Peer::AddressTemplateGroup(_) => {
            Ok(address_entries(catalog, origin, peer)?
                .into_iter()
                .map(|e| e.range())
                .collect())
        }
    }
}

/// The entries of the address template or template group `peer` names, in
/// order (none for any other peer).
fn address_entries<'c, C: Catalog + ?Sized>(
    catalog: &'c C,
    origin: &RuleOrigin,
    peer: &Peer,
) -> Result<Vec<&'c AddressEntry>, PolicyError> {
    let template = |id: &AddressTemplateId| {
        catalog
            .address_template(id)
            .map(|t| t.addresses.iter())
            .ok_or_else(|| PolicyError::UnknownAddressTemplate {
                origin: origin.clone(),
                id: id.to_string(),
            })
    };
    match peer {
        Peer::AddressTemplate(id) => Ok(template(id)?.collect()),
        Peer::AddressTemplateGroup(gid) => {
            let group = catalog.address_template_group(gid).ok_or_else(|| {
                PolicyError::UnknownAddressTemplateGroup {
                    origin: origin.clone(),
                    id: gid.to_string(),
                }
            })?;
            let mut out = Vec::new();
            for id in &group.templates {
                out.extend(template(id)?);
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Sorts address ranges (IPv4 first) and merges overlapping or adjacent ones.
pub fn merge_addr_ranges(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort();
    let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = out.last_mut() {
            if last.family() == r.family() && r.lo() <= last.hi().saturating_add(1) {
                if r.hi() > last.hi() {
                    if let Some(m) = AddrRange::new(r.family(), last.lo(), r.hi()) {
                        *last = m;
                    }
                }
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// One entry per protocol, sorted, ports merged.
fn normalize_services(mut services: Vec<ServiceMatch>) -> Vec<ServiceMatch> {
    services.sort_by_key(|s| s.protocol);
    let mut out: Vec<ServiceMatch> = Vec::with_capacity(services.len());
    for s in services {
        match out.last_mut() {
            Some(last) if last.protocol == s.protocol => last.ports.extend(s.ports),
            _ => out.push(s),
        }
    }
    for s in &mut out {
        s.ports = match s.protocol {
            // Ports mean nothing to this protocol: show that it takes them all.
            ProtocolMatch::Number(n) if !crate::has_ports(n) => vec![crate::all_ports()],
            _ => palisade_model::proto::merge_ranges(&s.ports),
        };
    }
    out
}

/// The JSON shape of a `ResolvedRule`.
#[derive(Serialize, Deserialize)]
struct RuleRepr {
    #[serde(flatten)]
    origin: RuleOrigin,
    #[serde(with = "codec::action")]
    action: Action,
    policy: palisade_model::wire::SecurityGroupPolicy,
    services: Vec<ServiceMatch>,
    #[serde(with = "codec::addr_ranges")]
    peers: Vec<AddrRange>,
}

impl From<ResolvedRule> for RuleRepr {
    fn from(r: ResolvedRule) -> Self {
        RuleRepr {
            policy: r.policy.to_wire_compact(),
            origin: r.origin,
            action: r.action,
            services: r.services,
            peers: r.peers,
        }
    }
}

impl TryFrom<RuleRepr> for ResolvedRule {
    type Error = String;

    fn try_from(r: RuleRepr) -> Result<Self, String> {
        let policy = Policy::from_wire(&r.policy).map_err(|e| format!("policy: {e}"))?;
        Ok(ResolvedRule::new(
            r.origin, r.action, policy, r.services, r.peers,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{fleet, sg};

    fn node() -> Ruleset {
        resolve_instance(&fleet(), &"ins-node0001".parse().unwrap()).unwrap()
    }

    #[test]
    fn concatenates_groups_in_binding_order_with_origins() {
        let rs = node();
        let origins: Vec<String> = rs.ingress.iter().map(|r| r.origin().to_string()).collect();
        assert_eq!(origins[0], "sg-first001 Ingress[0]");
        assert_eq!(origins[3], "sg-first001 Ingress[3]");
        assert_eq!(origins[4], "sg-second01 Ingress[0]");
        assert_eq!(rs.ingress.len(), 4 + 8);
        assert_eq!(rs.egress.len(), 2);
        assert!(rs
            .egress
            .iter()
            .all(|r| r.origin().direction == Direction::Egress));
        // The rule behind a verdict, for display.
        let origin = &rs.ingress[1].origin().clone();
        assert_eq!(
            rs.rule(origin).unwrap().policy().to_string(),
            "ACCEPT TCP 22 peer ipm-office01"
        );
        // The catalog works as a trait object too (the server's store snapshot).
        let dynamic: &dyn Catalog = &fleet();
        assert_eq!(resolve(dynamic, &rs.security_groups).unwrap(), rs);
        // The index agrees with the plain fleet.
        let f = fleet();
        let index = FleetIndex::new(&f);
        for i in &f.instances {
            let plain = resolve(&f, &i.security_groups).unwrap();
            assert_eq!(resolve(&index, &i.security_groups).unwrap(), plain);
        }
        assert!(resolve(&index, &[sg("sg-nothere1")]).is_err());
        // Binding order is the order given, not the file's.
        let swapped = resolve(&fleet(), &[sg("sg-second01"), sg("sg-first001")]).unwrap();
        assert_eq!(
            swapped.ingress[0].origin().security_group_id,
            sg("sg-second01")
        );
    }

    #[test]
    fn expands_references_and_templates_into_sets() {
        let rs = node();
        let peers = |i: usize| -> Vec<String> {
            rs.ingress[i]
                .peers()
                .iter()
                .map(|r| codec::format_addr_range(*r))
                .collect()
        };
        assert_eq!(peers(0), vec!["0.0.0.0/0"]);
        assert_eq!(peers(1), vec!["192.0.2.10-192.0.2.20", "203.0.113.0/24"]);
        // Members of sg-web00001, both families, IPv4 first, adjacent merged.
        assert_eq!(peers(2), vec!["10.1.0.5-10.1.0.6", "2001:db8:ff::5"]);
        assert!(peers(3).is_empty());
        assert_eq!(
            peers(9),
            vec![
                "2001:db9::1",
                "2001:db9:2::/48",
                "2001:db9:3::1-2001:db9:3::ff"
            ]
        );
        let services = |i: usize| -> Vec<String> {
            rs.ingress[i]
                .services()
                .iter()
                .map(|s| format!("{} {}", s.protocol, codec::format_ports(&s.ports)))
                .collect()
        };
        assert_eq!(services(0), vec!["TCP 23"]);
        // A service template group: tcp:53, udp:53, icmpv6, sorted by number.
        assert_eq!(services(7), vec!["TCP 53", "UDP 53", "ICMPv6 ALL"]);
        assert_eq!(services(8), vec!["ALL ALL"]);
        // tcp:80,443 and tcp:8000-8100 from one template merge into one entry.
        assert_eq!(services(10), vec!["TCP 80,443,8000-8100"]);
        // ICMP with Port ALL: every port (ports do not count for ICMP).
        assert_eq!(services(5), vec!["ICMP ALL"]);
    }

    #[test]
    fn membership_changes_show_in_the_next_resolution() {
        let mut f = fleet();
        let before = resolve(&f, &[sg("sg-first001")]).unwrap();
        f.instances[2].private_ips.push("10.1.0.7".parse().unwrap());
        f.instances[3].security_groups.push(sg("sg-empty001"));
        let after = resolve(&f, &[sg("sg-first001")]).unwrap();
        assert_eq!(
            codec::format_addr_range(after.ingress[2].peers()[0]),
            "10.1.0.5-10.1.0.7"
        );
        assert_ne!(before, after);
        assert_eq!(
            after.ingress[3].peers(),
            &[AddrRange::single("10.0.0.99".parse().unwrap())]
        );
    }

    #[test]
    fn missing_things_are_errors_naming_them() {
        let f = fleet();
        let e = resolve(&f, &[sg("sg-nothere1")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ResourceNotFound: security group \"sg-nothere1\" is bound but does not exist"
        );
        let e = resolve_instance(&f, &"ins-nothere1".parse().unwrap()).unwrap_err();
        assert!(matches!(e, PolicyError::UnknownInstance { .. }));
        // A fleet is consistent by construction; break it by hand.
        let mut g = f.clone();
        g.security_groups.retain(|s| s.id.as_str() != "sg-web00001");
        let e = resolve(&g, &[sg("sg-first001")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ResourceNotFound: sg-first001 Ingress[2]: SecurityGroupId \"sg-web00001\" does not exist"
        );
        let mut g = f.clone();
        g.address_templates.clear();
        let e = resolve(&g, &[sg("sg-first001")]).unwrap_err();
        assert!(
            matches!(e, PolicyError::UnknownAddressTemplate { .. }),
            "{e}"
        );
        let e = resolve(&g, &[sg("sg-second01")]).unwrap_err();
        assert!(
            matches!(e, PolicyError::UnknownAddressTemplate { .. }),
            "{e}"
        );
        let mut g = f.clone();
        g.address_template_groups.clear();
        let e = resolve(&g, &[sg("sg-second01")]).unwrap_err();
        assert!(
            matches!(e, PolicyError::UnknownAddressTemplateGroup { .. }),
            "{e}"
        );
        let mut g = f.clone();
        g.service_templates.clear();
        let e = resolve(&g, &[sg("sg-second01")]).unwrap_err();
        assert!(
            matches!(e, PolicyError::UnknownServiceTemplate { .. }),
            "{e}"
        );
        let mut g = f;
        g.service_template_groups.clear();
        let e = resolve(&g, &[sg("sg-second01")]).unwrap_err();
        assert!(
            matches!(e, PolicyError::UnknownServiceTemplateGroup { .. }),
            "{e}"
        );
    }

    #[test]
    fn expanding_templates_writes_one_rule_per_address_and_service() {
        let f = fleet();
        let origin = |g: &str, i: usize| RuleOrigin {
            security_group_id: sg(g),
            direction: Direction::Ingress,
            policy_index: i,
        };
        let expanded = |g: &str, i: usize| -> Vec<String> {
            let policy = &f.group(&sg(g)).unwrap().policies.ingress[i];
            expand_templates(&f, &origin(g, i), policy)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // An address template: each entry's CIDR blocks, in order.
        assert_eq!(
            expanded("sg-first001", 1),
            [
                "ACCEPT TCP 22 peer 203.0.113.0/24",
                "ACCEPT TCP 22 peer 192.0.2.10/31",
                "ACCEPT TCP 22 peer 192.0.2.12/30",
                "ACCEPT TCP 22 peer 192.0.2.16/30",
                "ACCEPT TCP 22 peer 192.0.2.20/32",
            ]
        );
        // A service template group: each entry of each template.
        assert_eq!(
            expanded("sg-second01", 3),
            [
                "ACCEPT UDP 53 peer 2001:db8::/32",
                "ACCEPT TCP 53 peer 2001:db8::/32",
                "ACCEPT ICMPv6 ALL peer 2001:db8::/32",
            ]
        );
        // A group reference stays as written.
        assert_eq!(
            expanded("sg-first001", 2),
            ["ACCEPT TCP 8080 peer sg-web00001"]
        );
        // A missing template is the resolver's error, not an empty list.
        let mut g = f.clone();
        g.address_templates.clear();
        let policy = &f.group(&sg("sg-first001")).unwrap().policies.ingress[1];
        assert!(matches!(
            expand_templates(&g, &origin("sg-first001", 1), policy),
            Err(PolicyError::UnknownAddressTemplate { .. })
        ));
    }

    #[test]
    fn empty_templates_match_nothing() {
        let mut f = fleet();
        f.address_templates[0].addresses.clear();
        f.service_templates[2].services.clear();
        let rs = resolve(&f, &[sg("sg-first001"), sg("sg-second01")]).unwrap();
        assert!(rs.ingress[1].peers().is_empty());
        assert!(rs.ingress[10].services().is_empty());
        let p = crate::fixtures::pkt(Direction::Ingress, 6, "203.0.113.1", Some(22));
        // Falls through to sg-second01's TCP 22-23 rule.
        assert_eq!(
            crate::eval::evaluate(&rs, &p).matched.unwrap().to_string(),
            "sg-second01 Ingress[0]"
        );
    }

    #[test]
    fn json_shape_is_stable_and_round_trips() {
        let rs = node();
        let v: serde_json::Value = serde_json::to_value(&rs).unwrap();
        assert_eq!(
            v["security_groups"],
            serde_json::json!(["sg-first001", "sg-second01"])
        );
        assert_eq!(
            v["ingress"][0],
            serde_json::json!({
                "security_group_id": "sg-first001",
                "direction": "ingress",
                "policy_index": 0,
                "action": "DROP",
                "policy": {"Protocol": "TCP", "Port": "23", "CidrBlock": "0.0.0.0/0",
                           "Action": "DROP", "PolicyDescription": "no telnet"},
                "services": [{"protocol": 6, "ports": "23"}],
                "peers": ["0.0.0.0/0"]
            })
        );
        assert_eq!(
            v["ingress"][8]["services"],
            serde_json::json!([{"protocol": "ALL", "ports": "ALL"}])
        );
        assert_eq!(
            v["ingress"][2]["peers"],
            serde_json::json!(["10.1.0.5-10.1.0.6", "2001:db8:ff::5"])
        );
        let text = serde_json::to_string(&rs).unwrap();
        let back: Ruleset = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rs);
        // Input is normalised and names are accepted for protocols.
        let rule: ResolvedRule = serde_json::from_value(serde_json::json!({
            "security_group_id": "sg-abcdefgh", "direction": "Egress", "policy_index": 2,
            "action": "accept", "policy": {"Protocol": "udp", "Port": "53", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
            "services": [{"protocol": "udp", "ports": "54,53"}, {"protocol": 17, "ports": "1000"}],
            "peers": ["10.0.0.1", "10.0.0.0"]
        }))
        .unwrap();
        assert_eq!(codec::format_ports(&rule.services()[0].ports), "53-54,1000");
        assert_eq!(rule.services().len(), 1);
        assert_eq!(codec::format_addr_range(rule.peers()[0]), "10.0.0.0/31");
        // Ports on a protocol without ports are shown as ALL (they never count).
        let rule: ResolvedRule = serde_json::from_value(serde_json::json!({
            "security_group_id": "sg-abcdefgh", "direction": "ingress", "policy_index": 0,
            "action": "DROP", "policy": {"Protocol": "icmp", "CidrBlock": "10.0.0.0/8", "Action": "DROP"},
            "services": [{"protocol": "icmp", "ports": "80"}], "peers": []
        }))
        .unwrap();
        assert_eq!(codec::format_ports(&rule.services()[0].ports), "ALL");
        let empty: Ruleset = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Ruleset::default());
        for bad in [
            serde_json::json!({"security_group_id": "sg-abcdefgh", "direction": "up", "policy_index": 0,
                "action": "ACCEPT", "policy": {}, "services": [], "peers": []}),
            serde_json::json!({"security_group_id": "sg-abcdefgh", "direction": "ingress", "policy_index": 0,
                "action": "ACCEPT", "policy": {"Protocol": "tcp", "CidrBlock": "x", "Action": "ACCEPT"},
                "services": [], "peers": []}),
            serde_json::json!({"security_group_id": "sg-abcdefgh", "direction": "ingress", "policy_index": 0,
                "action": "ACCEPT", "policy": {"Protocol": "tcp", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
                "services": [{"protocol": 300, "ports": "ALL"}], "peers": []}),
            serde_json::json!({"security_group_id": "sg-abcdefgh", "direction": "ingress", "policy_index": 0,
                "action": "ACCEPT", "policy": {"Protocol": "tcp", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
                "services": [], "peers": ["10.0.0.1/8"]}),
        ] {
            assert!(serde_json::from_value::<ResolvedRule>(bad).is_err());
        }
    }

    #[test]
    fn protocol_match_parses_names_numbers_and_all() {
        assert_eq!(
            ProtocolMatch::parse_field("p", "ALL").unwrap(),
            ProtocolMatch::All
        );
        assert_eq!(
            ProtocolMatch::parse_field("p", "gre").unwrap(),
            ProtocolMatch::Number(47)
        );
        assert_eq!(
            ProtocolMatch::parse_field("p", "0").unwrap(),
            ProtocolMatch::Number(0)
        );
        assert!(ProtocolMatch::parse_field("p", "999").is_err());
        assert!(ProtocolMatch::of(Protocol::All).matches(200));
        assert!(!ProtocolMatch::of(Protocol::Tcp).matches(17));
    }
}
