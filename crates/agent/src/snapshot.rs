//! What the agent enforces: one instance's resolved, ordered rules per
//! direction at a store revision (DESIGN.md section 4), as the compiler
//! reads them. The rules are the `policy` resolver's
//! [`ResolvedRule`]s, whether they come from a fleet file (`palisade nft
//! compile --fleet`) or from the server's `DescribeInstanceRuleset` answer
//! (the running agent, [`InstanceRuleset`], which carries the same type):
//! both go through the one conversion below, so the two build the same
//! program from the same state.
//!
//! A rule keeps the name of its peer when the peer is a reference (a group
//! or an address template): the compiler turns such peers into named nft
//! sets, so that a membership change is an element update, not a new rule.

use palisade_model::{Action, AddrRange, Direction, Peer, PortRange};
use palisade_policy::resolve::{ProtocolMatch, ResolvedRule, Ruleset};
use palisade_protocol::service::InstanceRuleset;

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
        Snapshot {
            instance_id: String::new(),
            revision: 0,
            ingress: rules(&r.ingress),
            egress: rules(&r.egress),
        }
    }
}

impl From<&InstanceRuleset> for Snapshot {
    fn from(r: &InstanceRuleset) -> Self {
        Snapshot {
            instance_id: r.instance_id.clone(),
            revision: r.revision,
            ingress: rules(&r.ingress),
            egress: rules(&r.egress),
        }
    }
}

fn rules(rules: &[ResolvedRule]) -> Vec<Rule> {
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
}

fn peer_ref(peer: &Peer) -> Option<String> {
    match peer {
        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => None,
        Peer::SecurityGroup(id) => Some(id.to_string()),
        Peer::AddressTemplate(id) => Some(id.to_string()),
        Peer::AddressTemplateGroup(id) => Some(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answer_converts_rule_for_rule() {
        let json = r#"{"InstanceId":"ins-1","Revision":7,"SecurityGroupIds":["sg-aaaaaaaa"],
          "Ingress":[{"security_group_id":"sg-aaaaaaaa","direction":"ingress","policy_index":0,"action":"ACCEPT",
             "policy":{"Protocol":"TCP","Port":"22,30000-32768","CidrBlock":"198.51.100.0/24","Action":"ACCEPT"},
             "services":[{"protocol":6,"ports":"22,30000-32768"}],"peers":["198.51.100.0/24"]},
            {"security_group_id":"sg-aaaaaaaa","direction":"ingress","policy_index":1,"action":"drop",
             "policy":{"Protocol":"ALL","SecurityGroupId":"sg-bbbbbbbb","Action":"DROP"},
             "services":[{"protocol":"ALL","ports":"ALL"}],"peers":["198.18.0.1","198.18.0.2","2001:db8::1"]}],
          "Egress":[]}"#;
        let w: InstanceRuleset = serde_json::from_str(json).unwrap();
        let s = Snapshot::from(&w);
        assert_eq!((s.instance_id.as_str(), s.revision), ("ins-1", 7));
        assert_eq!(s.ingress.len(), 2);
        assert_eq!(s.ingress[0].services[0].protocol, Some(6));
        assert_eq!(s.ingress[0].services[0].ports.len(), 2);
        assert_eq!(s.ingress[1].services[0].protocol, None);
        assert_eq!(s.ingress[1].peer_ref.as_deref(), Some("sg-bbbbbbbb"));
        assert_eq!(
            s.ingress[1].peers.len(),
            2,
            "198.18.0.1-2 merge, plus one v6"
        );
        assert_eq!(s.ingress[1].action, Action::Drop);
    }
}
