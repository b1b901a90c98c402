//! The validated rule model: what a `SecurityGroupPolicy` means once every
//! rule of DESIGN.md section 2 has been checked. `Policy::from_wire` is the
//! only way in from the wire type, and it names the field and the bad value
//! in every error. `Policy::to_wire` prints the full tccli shape back.

use crate::addr::{Cidr, Family};
use crate::error::{ErrorCode, ModelError};
use crate::ids::{
    AddressTemplateGroupId, AddressTemplateId, SecurityGroupId, ServiceTemplateGroupId,
    ServiceTemplateId,
};
use crate::proto::{Ports, Protocol};
use crate::wire;
use std::fmt;

/// The longest `PolicyDescription`, in characters. Tencent's API metadata
/// states no limit; 255 fits the seed's own default-rule descriptions (up to
/// 114 characters). See docs/semantics.md.
pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// The direction of a rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic arriving at the instance; the peer is the source.
    Ingress,
    /// Traffic leaving the instance; the peer is the destination.
    Egress,
}

impl Direction {
    /// Both directions, ingress first.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// Parses `ingress` / `egress`, case-insensitively.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            _ => Err(ModelError::malformed(
                field,
                value,
                "expected ingress or egress",
            )),
        }
    }

    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// `Ingress` or `Egress`, as the wire spells the list.
    pub fn wire_name(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Let the packet (and its connection) through.
    Accept,
    /// Drop it.
    Drop,
}

impl Action {
    /// Parses `ACCEPT` / `DROP`, case-insensitively.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        match value.trim().to_ascii_uppercase().as_str() {
            "ACCEPT" => Ok(Action::Accept),
            "DROP" => Ok(Action::Drop),
            "" => Err(ModelError::missing(field, "must be ACCEPT or DROP")),
            _ => Err(ModelError::malformed(
                field,
                value,
                "expected ACCEPT or DROP",
            )),
        }
    }

    /// `ACCEPT` or `DROP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Drop => "DROP",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What traffic a rule is about: a protocol and ports, or a service template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Service {
    /// `Protocol` and `Port`.
    Protocol {
        /// The protocol.
        protocol: Protocol,
        /// The ports; always `ALL` unless the protocol is TCP or UDP.
        ports: Ports,
    },
    /// A service template (`ppm-`).
    Template(ServiceTemplateId),
    /// A service template group (`ppmg-`).
    TemplateGroup(ServiceTemplateGroupId),
}

/// The one peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An IPv4 CIDR block (`CidrBlock`).
    Cidr(Cidr),
    /// An IPv6 CIDR block (`Ipv6CidrBlock`).
    Ipv6Cidr(Cidr),
    /// The private IPs of the instances bound to a group (`SecurityGroupId`).
    SecurityGroup(SecurityGroupId),
    /// An address template (`AddressTemplate.AddressId`).
    AddressTemplate(AddressTemplateId),
    /// An address template group (`AddressTemplate.AddressGroupId`).
    AddressTemplateGroup(AddressTemplateGroupId),
}

impl Policy {
    /// Why this rule can never match, when its protocol cannot occur with
    /// its literal peer's address family (`Protocol: ICMP` with an
    /// `Ipv6CidrBlock`, ICMPv6 with a `CidrBlock`): such a rule is valid
    /// Tencent input but matches no packet, so an ACCEPT allows nothing and
    /// a DROP protects nothing. `None` for references and service
    /// templates, whose families are known only once resolved.
    pub fn impossible_family(&self) -> Option<String> {
        let Service::Protocol { protocol, .. } = &self.service else {
            return None;
        };
        let (needs, has) = (protocol.family()?, self.peer.family()?);
        (needs != has).then(|| {
            let (field, other) = match needs {
                Family::V4 => ("Ipv6CidrBlock", "ICMPv6"),
                Family::V6 => ("CidrBlock", "ICMP"),
            };
            format!(
                "{protocol} exists only in {} but the peer is the {field} {}: the rule can never \
                 match (for this family use {other})",
                match needs {
                    Family::V4 => "IPv4",
                    Family::V6 => "IPv6",
                },
                self.peer
            )
        })
    }
}

impl Peer {
    /// The family of a literal peer; `None` for references, which may hold both.
    pub fn family(&self) -> Option<Family> {
        match self {
            Peer::Cidr(_) => Some(Family::V4),
            Peer::Ipv6Cidr(_) => Some(Family::V6),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(c) | Peer::Ipv6Cidr(c) => write!(f, "{c}"),
            Peer::SecurityGroup(id) => write!(f, "{id}"),
            Peer::AddressTemplate(id) => write!(f, "{id}"),
            Peer::AddressTemplateGroup(id) => write!(f, "{id}"),
        }
    }
}

/// A validated rule. Its `PolicyIndex` is its position in its list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Protocol and ports, or a service template.
    pub service: Service,
    /// The peer.
    pub peer: Peer,
    /// ACCEPT or DROP.
    pub action: Action,
    /// `PolicyDescription` (may be empty).
    pub description: String,
    /// `ModifyTime`, kept as given.
    pub modify_time: Option<String>,
    /// Tencent's `Priority`, kept as given.
    pub priority: Option<i64>,
}

impl Policy {
    /// Validates a wire rule. Errors name the field and carry the Tencent code.
    pub fn from_wire(w: &wire::SecurityGroupPolicy) -> Result<Self, ModelError> {
        let template = w.service_template.as_ref().and_then(|t| {
            let sid = non_empty(&t.service_id);
            let gid = non_empty(&t.service_group_id);
            (sid.is_some() || gid.is_some()).then_some((sid, gid))
        });
        let service = match (template, &w.protocol) {
            (Some(_), Some(_)) => {
                return Err(coexist("Protocol and ServiceTemplate exclude each other"))
            }
            (Some(_), None) if w.port.is_some() => {
                return Err(coexist("Port and ServiceTemplate exclude each other"))
            }
            (Some((Some(_), Some(_))), None) => return Err(coexist(
                "ServiceTemplate.ServiceId and ServiceTemplate.ServiceGroupId exclude each other",
            )),
            (Some((Some(id), None)), None) => Service::Template(ServiceTemplateId::parse_field(
                "ServiceTemplate.ServiceId",
                id,
            )?),
            (Some((None, Some(id))), None) => Service::TemplateGroup(
                ServiceTemplateGroupId::parse_field("ServiceTemplate.ServiceGroupId", id)?,
            ),
            (Some((None, None)), None) | (None, None) => {
                return Err(ModelError::missing(
                    "Protocol",
                    "a rule needs Protocol (with Port) or ServiceTemplate",
                ))
            }
            (None, Some(p)) => {
                let protocol = Protocol::parse_field("Protocol", p)?;
                let ports = match &w.port {
                    None => Ports::All,
                    Some(text) => Ports::parse_field("Port", text)?,
                };
                if !protocol.has_ports() && !ports.is_all() {
                    return Err(ModelError::new(
                        ErrorCode::InvalidParameterValue,
                        format!(
                            "Port {:?}: {protocol} rules take no ports (use ALL or leave Port out)",
                            w.port.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                Service::Protocol { protocol, ports }
            }
        };

        let address = w.address_template.as_ref().and_then(|t| {
            let aid = non_empty(&t.address_id);
            let gid = non_empty(&t.address_group_id);
            (aid.is_some() || gid.is_some()).then_some((aid, gid))
        });
        let mut peers: Vec<&str> = Vec::new();
        if w.cidr_block.is_some() {
            peers.push("CidrBlock");
        }
        if w.ipv6_cidr_block.is_some() {
            peers.push("Ipv6CidrBlock");
        }
        if w.security_group_id.is_some() {
            peers.push("SecurityGroupId");
        }
        if address.is_some() {
            peers.push("AddressTemplate");
        }
        if peers.len() > 1 {
            return Err(coexist(&format!(
                "{} exclude each other: a rule has exactly one peer",
                peers.join(" and ")
            )));
        }
        let peer = if let Some(c) = &w.cidr_block {
            Peer::Cidr(Cidr::parse_v4("CidrBlock", c)?)
        } else if let Some(c) = &w.ipv6_cidr_block {
            Peer::Ipv6Cidr(Cidr::parse_v6("Ipv6CidrBlock", c)?)
        } else if let Some(id) = &w.security_group_id {
            Peer::SecurityGroup(SecurityGroupId::parse_field("SecurityGroupId", id)?)
        } else {
            match address {
                Some((Some(_), Some(_))) => {
                    return Err(coexist(
                        "AddressTemplate.AddressId and AddressTemplate.AddressGroupId exclude each other",
                    ))
                }
                Some((Some(id), None)) => Peer::AddressTemplate(AddressTemplateId::parse_field(
                    "AddressTemplate.AddressId",
                    id,
                )?),
                Some((None, Some(id))) => Peer::AddressTemplateGroup(
                    AddressTemplateGroupId::parse_field("AddressTemplate.AddressGroupId", id)?,
                ),
                _ => {
                    return Err(ModelError::missing(
                        "CidrBlock",
                        "a rule needs one peer: CidrBlock, Ipv6CidrBlock, SecurityGroupId or AddressTemplate",
                    ))
                }
            }
        };

        let action = match &w.action {
            Some(a) => Action::parse_field("Action", a)?,
            None => return Err(ModelError::missing("Action", "must be ACCEPT or DROP")),
        };
        let description = w.policy_description.clone().unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ModelError::new(
                ErrorCode::InvalidParameterValueTooLong,
                format!(
                    "PolicyDescription {:?}: longer than {MAX_DESCRIPTION_CHARS} characters",
                    truncate(&description, 30)
                ),
            ));
        }
        if let Some(i) = w.policy_index {
            if i < 0 {
                return Err(ModelError::new(
                    ErrorCode::InvalidParameterValueRange,
                    format!("PolicyIndex \"{i}\": must not be negative"),
                ));
            }
        }
        Ok(Policy {
            service,
            peer,
            action,
            description,
            modify_time: w.modify_time.clone(),
            priority: w.priority,
        })
    }

    /// The full wire shape as tccli prints it (unused fields as `""`).
    pub fn to_wire(&self, index: usize) -> wire::SecurityGroupPolicy {
        let mut w = wire::SecurityGroupPolicy {
            policy_index: i64::try_from(index).ok(),
            protocol: Some(String::new()),
            port: Some(String::new()),
            service_template: Some(wire::ServiceTemplateSpecification::default()),
            cidr_block: Some(String::new()),
            ipv6_cidr_block: Some(String::new()),
            security_group_id: Some(String::new()),
            address_template: Some(wire::AddressTemplateSpecification::default()),
            action: Some(self.action.as_str().to_string()),
            policy_description: Some(self.description.clone()),
            modify_time: Some(self.modify_time.clone().unwrap_or_default()),
            priority: self.priority,
        };
        match &self.service {
            Service::Protocol { protocol, ports } => {
                w.protocol = Some(protocol.as_str().to_string());
                w.port = Some(ports.to_string());
            }
            Service::Template(id) => {
                w.service_template = Some(wire::ServiceTemplateSpecification {
                    service_id: id.to_string(),
                    service_group_id: String::new(),
                })
            }
            Service::TemplateGroup(id) => {
                w.service_template = Some(wire::ServiceTemplateSpecification {
                    service_id: String::new(),
                    service_group_id: id.to_string(),
                })
            }
        }
        match &self.peer {
            Peer::Cidr(c) => w.cidr_block = Some(c.to_string()),
            Peer::Ipv6Cidr(c) => w.ipv6_cidr_block = Some(c.to_string()),
            Peer::SecurityGroup(id) => w.security_group_id = Some(id.to_string()),
            Peer::AddressTemplate(id) => {
                w.address_template = Some(wire::AddressTemplateSpecification {
                    address_id: id.to_string(),
                    address_group_id: String::new(),
                })
            }
            Peer::AddressTemplateGroup(id) => {
                w.address_template = Some(wire::AddressTemplateSpecification {
                    address_id: String::new(),
                    address_group_id: id.to_string(),
                })
            }
        }
        w
    }

    /// The wire shape with only the fields in use and no `PolicyIndex`: what
    /// a person passes to `CreateSecurityGroupPolicies` or writes in a fleet file.
    pub fn to_wire_compact(&self) -> wire::SecurityGroupPolicy {
        let full = self.to_wire(0);
        let keep = |s: Option<String>| s.filter(|v| !v.is_empty());
        wire::SecurityGroupPolicy {
            policy_index: None,
            protocol: keep(full.protocol),
            port: keep(full.port),
            service_template: full
                .service_template
                .filter(|t| !t.service_id.is_empty() || !t.service_group_id.is_empty()),
            cidr_block: keep(full.cidr_block),
            ipv6_cidr_block: keep(full.ipv6_cidr_block),
            security_group_id: keep(full.security_group_id),
            address_template: full
                .address_template
                .filter(|t| !t.address_id.is_empty() || !t.address_group_id.is_empty()),
            action: full.action,
            policy_description: keep(full.policy_description),
            modify_time: None,
            priority: None,
        }
    }

    /// Whether two rules are the same rule (the fields that decide traffic
    /// and the description), as delete-by-content and duplicate checks compare.
    pub fn same_rule(&self, other: &Policy) -> bool {
        self.service == other.service
            && self.peer == other.peer
            && self.action == other.action
            && self.description == other.description
    }
}

impl fmt::Display for Policy {
    /// One line, e.g. `ACCEPT TCP 22 from 203.0.113.0/24 "ssh"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.action)?;
        match &self.service {
            Service::Protocol { protocol, ports } => write!(f, "{protocol} {ports}")?,
            Service::Template(id) => write!(f, "service {id}")?,
            Service::TemplateGroup(id) => write!(f, "service {id}")?,
        }
        write!(f, " peer {}", self.peer)?;
        if !self.description.is_empty() {
            write!(f, " {:?}", self.description)?;
        }
        Ok(())
    }
}

/// A validated `SecurityGroupPolicySet`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// The `Version`, when given.
    pub version: Option<u64>,
    /// Ingress rules, position 0 first.
    pub ingress: Vec<Policy>,
    /// Egress rules, position 0 first.
    pub egress: Vec<Policy>,
}

impl PolicySet {
    /// Validates a wire policy set; errors are located as `Ingress[2]: ...`.
    pub fn from_wire(w: &wire::SecurityGroupPolicySet) -> Result<Self, ModelError> {
        let version = w
            .version
            .as_deref()
            .map(|v| parse_version("Version", v))
            .transpose()?;
        let convert = |dir: Direction, list: &Option<Vec<wire::SecurityGroupPolicy>>| {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| {
                    Policy::from_wire(p).map_err(|e| e.at(format_args!("{}[{i}]", dir.wire_name())))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(PolicySet {
            version,
            ingress: convert(Direction::Ingress, &w.ingress)?,
            egress: convert(Direction::Egress, &w.egress)?,
        })
    }

    /// The list of one direction.
    pub fn rules(&self, direction: Direction) -> &[Policy] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The wire shape with every rule in full, `Version` and statistics.
    pub fn to_wire(&self) -> wire::SecurityGroupPolicySet {
        let list = |rules: &[Policy]| {
            rules
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i))
                .collect()
        };
        let count = |rules: &[Policy], fam: Family| {
            rules
                .iter()
                .filter(|p| p.peer.family() == Some(fam))
                .count() as u64
        };
        wire::SecurityGroupPolicySet {
            version: Some(self.version.unwrap_or(0).to_string()),
            ingress: Some(list(&self.ingress)),
            egress: Some(list(&self.egress)),
            policy_statistics: Some(wire::PolicyStatistics {
                ingress_ipv4_total_count: count(&self.ingress, Family::V4),
                ingress_ipv6_total_count: count(&self.ingress, Family::V6),
                egress_ipv4_total_count: count(&self.egress, Family::V4),
                egress_ipv6_total_count: count(&self.egress, Family::V6),
            }),
        }
    }
}

/// Parses a policy-set `Version`: a decimal counter.
pub fn parse_version(field: &str, value: &str) -> Result<u64, ModelError> {
    let t = value.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ModelError::malformed(
            field,
            value,
            "expected a decimal number",
        ));
    }
    t.parse()
        .map_err(|_| ModelError::malformed(field, value, "number too large"))
}

fn non_empty(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

fn coexist(what: &str) -> ModelError {
    ModelError::new(ErrorCode::InvalidParameterCoexist, what)
}

fn truncate(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push_str("...");
    }
    out
}
