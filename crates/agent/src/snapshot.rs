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

use palisade_model::{Direction, Peer};
use palisade_policy::resolve::{ResolvedRule, Ruleset};
use palisade_protocol::service::InstanceRuleset;

/// One instance's rules at a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The instance these rules are for.
    pub instance_id: String,
    /// The store revision they were computed at (0 when offline).
    pub revision: u64,
    /// Ingress rules, first match first.
    pub ingress: Vec<ResolvedRule>,
    /// Egress rules, first match first.
    pub egress: Vec<ResolvedRule>,
}

impl Snapshot {
    /// The list of one direction.
    pub fn rules(&self, direction: Direction) -> &[ResolvedRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

impl From<Ruleset> for Snapshot {
    fn from(r: Ruleset) -> Self {
        Snapshot {
            instance_id: String::new(),
            revision: 0,
            ingress: r.ingress,
            egress: r.egress,
        }
    }
}

impl From<InstanceRuleset> for Snapshot {
    fn from(r: InstanceRuleset) -> Self {
        Snapshot {
            instance_id: r.instance_id,
            revision: r.revision,
            ingress: r.ingress,
            egress: r.egress,
        }
    }
}

/// The group or template a rule's peer names, when it is a reference: the
/// compiler makes it a named set.
pub fn peer_ref(rule: &ResolvedRule) -> Option<&str> {
    match &rule.policy().peer {
        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => None,
        Peer::SecurityGroup(id) => Some(id.as_str()),
        Peer::AddressTemplate(id) => Some(id.as_str()),
        Peer::AddressTemplateGroup(id) => Some(id.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answer_is_the_snapshot_rule_for_rule() {
        let json = r#"{"InstanceId":"ins-1","Revision":7,"SecurityGroupIds":["sg-aaaaaaaa"],
          "Ingress":[{"security_group_id":"sg-aaaaaaaa","direction":"ingress","policy_index":0,"action":"ACCEPT",
             "policy":{"Protocol":"TCP","Port":"22,30000-32768","CidrBlock":"198.51.100.0/24","Action":"ACCEPT"},
             "services":[{"protocol":6,"ports":"22,30000-32768"}],"peers":["198.51.100.0/24"]},
            {"security_group_id":"sg-aaaaaaaa","direction":"ingress","policy_index":1,"action":"drop",
             "policy":{"Protocol":"ALL","SecurityGroupId":"sg-bbbbbbbb","Action":"DROP"},
             "services":[{"protocol":"ALL","ports":"ALL"}],"peers":["198.18.0.1","198.18.0.2","2001:db8::1"]}],
          "Egress":[]}"#;
        let w: InstanceRuleset = serde_json::from_str(json).unwrap();
        let s = Snapshot::from(w);
        assert_eq!((s.instance_id.as_str(), s.revision), ("ins-1", 7));
        assert_eq!(s.rules(Direction::Ingress).len(), 2);
        assert_eq!(peer_ref(&s.ingress[0]), None);
        assert_eq!(peer_ref(&s.ingress[1]), Some("sg-bbbbbbbb"));
        assert_eq!(
            s.ingress[1].peers().len(),
            2,
            "198.18.0.1-2 merge, plus one v6"
        );
    }
}
