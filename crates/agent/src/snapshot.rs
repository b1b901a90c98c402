//! What the agent enforces: one instance's resolved, ordered rules per
//! direction at a store revision (DESIGN.md section 4). The server resolves
//! every reference; this type only carries sets. Two sources convert into
//! it: the `policy` crate's [`palisade_policy::resolve::Ruleset`] (offline,
//! `palisade nft compile --fleet`) and the server's `DescribeInstanceRuleset`
//! JSON (the running agent). The compiler reads nothing else.
//!
//! A rule keeps the name of its peer when the peer is a reference (a group
//! or an address template): the compiler turns such peers into named nft
//! sets, so that a membership change is an element update, not a new rule.

use crate::error::AgentError;
use palisade_model::{Action, AddrRange, Direction, Peer, PortRange};
use palisade_policy::resolve::{ProtocolMatch, Ruleset};
use serde::Deserialize;

/// One instance's rules at a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The instance these rules are for.
    pub instance_id: String,
    /// The store revision they were computed at (0 when offline).
    pub revision: u64,
    /// Ingress rules, first match first.
    pub ingress: Vec<Rule>,
    /// Egress rules, first match first.
    pub egress: Vec<Rule>,
}

impl Snapshot {
    /// The list of one direction.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// One resolved rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The group the rule belongs to (`sg-...`).
    pub group: String,
    /// Its `PolicyIndex` in that group's list.
    pub index: usize,
    /// ACCEPT or DROP.
    pub action: Action,
    /// The (protocol, ports) pairs it matches; ports count for TCP and UDP only.
    pub services: Vec<ServiceMatch>,
    /// The peer addresses, both families.
    pub peers: Vec<AddrRange>,
    /// The referenced group or template when the peer is a reference.
    pub peer_ref: Option<String>,
}

/// A protocol (None = every protocol) and, for TCP/UDP, destination ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceMatch {
    /// The IP protocol number, or `None` for all.
    pub protocol: Option<u8>,
    /// Destination ports (TCP and UDP only); `0-65535` for all.
    pub ports: Vec<PortRange>,
}

impl ServiceMatch {
    /// A service matching every port of `protocol`.
    pub fn all_ports(protocol: Option<u8>) -> Self {
        Self {
            protocol,
            ports: vec![PortRange::new(0, u16::MAX).unwrap_or(PortRange::single(0))],
        }
    }
}

impl From<&Ruleset> for Snapshot {
    fn from(r: &Ruleset) -> Self {
        let convert = |rules: &[palisade_policy::resolve::ResolvedRule]| {
            rules
                .iter()
                .map(|rule| Rule {
                    group: rule.origin().security_group_id.to_string(),
                    index: rule.origin().policy_index,
                    action: rule.action(),
                    services: rule
                        .services()
                        .iter()
                        .map(|s| ServiceMatch {
                            protocol: match s.protocol {
                                ProtocolMatch::All => None,
                                ProtocolMatch::Number(n) => Some(n),
                            },
                            ports: s.ports.clone(),
                        })
                        .collect(),
                    peers: rule.peers().to_vec(),
                    peer_ref: peer_ref(&rule.policy().peer),
                })
                .collect()
        };
        Snapshot {
            instance_id: String::new(),
            revision: 0,
            ingress: convert(&r.ingress),
            egress: convert(&r.egress),
        }
    }
}

fn peer_ref(peer: &Peer) -> Option<String> {
    match peer {
        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => None,
        Peer::SecurityGroup(id) => Some(id.to_string()),
        Peer::AddressTemplate(id) => Some(id.to_string()),
        Peer::AddressTemplateGroup(id) => Some(id.to_string()),
    }
}

/// The `Ruleset` object of the server's `DescribeInstanceRuleset` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireRuleset {
    /// The instance.
    pub instance_id: String,
    /// The store revision.
    pub revision: u64,
    /// False when a long poll ended without a revision newer than asked for.
    #[serde(default = "yes")]
    pub changed: bool,
    /// Ingress entries (one per rule and service), in order.
    #[serde(default)]
    pub ingress: Vec<WireRule>,
    /// Egress entries, in order.
    #[serde(default)]
    pub egress: Vec<WireRule>,
    /// The server's digest of this answer's content (absent from servers
    /// older than it).
    #[serde(default)]
    pub digest: Option<String>,
}

fn yes() -> bool {
    true
}

/// One resolved entry of the server's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireRule {
    /// The group.
    pub security_group_id: String,
    /// Position in the group's list.
    pub policy_index: usize,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE`, `ALL`.
    pub protocol: String,
    /// `ALL` or Tencent's port grammar.
    #[serde(default)]
    pub port: Option<String>,
    /// `ACCEPT` or `DROP`.
    pub action: String,
    /// The rule's peer as written (which reference, if any).
    #[serde(default)]
    pub peer: Option<WirePeer>,
    /// Expanded IPv4 peers.
    #[serde(default)]
    pub cidr_blocks: Vec<String>,
    /// Expanded IPv6 peers.
    #[serde(default)]
    pub ipv6_cidr_blocks: Vec<String>,
}

/// The peer as written in the rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WirePeer {
    /// A referenced group.
    #[serde(default)]
    pub security_group_id: Option<String>,
    /// A referenced address template or template group.
    #[serde(default)]
    pub address_template: Option<WireAddressTemplate>,
}

/// `AddressTemplate` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireAddressTemplate {
    /// `ipm-...`.
    #[serde(default)]
    pub address_id: Option<String>,
    /// `ipmg-...`.
    #[serde(default)]
    pub address_group_id: Option<String>,
}

impl TryFrom<&WireRuleset> for Snapshot {
    type Error = AgentError;

    fn try_from(w: &WireRuleset) -> Result<Self, AgentError> {
        let convert = |list: &[WireRule], dir: &str| -> Result<Vec<Rule>, AgentError> {
            list.iter()
                .enumerate()
                .map(|(n, r)| {
                    wire_rule(r).map_err(|why| AgentError::BadRuleset(format!("{dir}[{n}]: {why}")))
                })
                .collect()
        };
        Ok(Snapshot {
            instance_id: w.instance_id.clone(),
            revision: w.revision,
            ingress: convert(&w.ingress, "Ingress")?,
            egress: convert(&w.egress, "Egress")?,
        })
    }
}

fn wire_rule(r: &WireRule) -> Result<Rule, String> {
    let protocol =
        match ProtocolMatch::parse_field("Protocol", &r.protocol).map_err(|e| e.to_string())? {
            ProtocolMatch::All => None,
            ProtocolMatch::Number(n) => Some(n),
        };
    let service = match protocol {
        Some(n) if palisade_policy::has_ports(n) => ServiceMatch {
            protocol,
            ports: palisade_policy::codec::parse_ports("Port", r.port.as_deref().unwrap_or("ALL"))
                .map_err(|e| e.to_string())?,
        },
        _ => ServiceMatch::all_ports(protocol),
    };
    let action = Action::parse_field("Action", &r.action).map_err(|e| e.to_string())?;
    let mut peers = Vec::new();
    for text in r.cidr_blocks.iter().chain(&r.ipv6_cidr_blocks) {
        peers.push(
            palisade_policy::codec::parse_addr_range("CidrBlocks", text)
                .map_err(|e| e.to_string())?,
        );
    }
    let peer_ref = r.peer.as_ref().and_then(|p| {
        p.security_group_id
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                p.address_template.as_ref().and_then(|t| {
                    t.address_id
                        .clone()
                        .filter(|s| !s.is_empty())
                        .or_else(|| t.address_group_id.clone().filter(|s| !s.is_empty()))
                })
            })
    });
    Ok(Rule {
        group: r.security_group_id.clone(),
        index: r.policy_index,
        action,
        services: vec![service],
        peers: palisade_policy::resolve::merge_addr_ranges(peers),
        peer_ref,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_json_converts() {
        let json = r#"{"InstanceId":"ins-1","Revision":7,"SecurityGroupIds":["sg-a"],
          "Ingress":[{"SecurityGroupId":"sg-a","PolicyIndex":0,"Protocol":"TCP","Port":"22,30000-32768",
             "Action":"ACCEPT","Peer":{"CidrBlock":"198.51.100.0/24"},"CidrBlocks":["198.51.100.0/24"],"Ipv6CidrBlocks":[]},
            {"SecurityGroupId":"sg-a","PolicyIndex":1,"Protocol":"ICMP","Port":"ALL","Action":"drop",
             "Peer":{"SecurityGroupId":"sg-b"},"CidrBlocks":["198.18.0.1","198.18.0.2"],"Ipv6CidrBlocks":["2001:db8::1"]}],
          "Egress":[]}"#;
        let w: WireRuleset = serde_json::from_str(json).unwrap();
        let s = Snapshot::try_from(&w).unwrap();
        assert_eq!(s.revision, 7);
        assert_eq!(s.ingress.len(), 2);
        assert_eq!(s.ingress[0].services[0].protocol, Some(6));
        assert_eq!(s.ingress[0].services[0].ports.len(), 2);
        assert_eq!(s.ingress[1].peer_ref.as_deref(), Some("sg-b"));
        assert_eq!(
            s.ingress[1].peers.len(),
            2,
            "198.18.0.1-2 merge, plus one v6"
        );
        assert_eq!(s.ingress[1].action, Action::Drop);
    }

    #[test]
    fn bad_server_json_is_an_error() {
        let json = r#"{"InstanceId":"ins-1","Revision":7,
          "Ingress":[{"SecurityGroupId":"sg-a","PolicyIndex":0,"Protocol":"NOPE","Port":"ALL",
             "Action":"ACCEPT","CidrBlocks":[]}]}"#;
        let w: WireRuleset = serde_json::from_str(json).unwrap();
        assert!(Snapshot::try_from(&w).is_err());
    }
}
