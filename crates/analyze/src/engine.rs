//! The analysis engine: every group resolved once, each direction taken
//! apart into the exact set every rule decides (`policy::decide`), and the
//! effect of an ordered list of bound groups composed from the groups'
//! summaries instead of re-evaluating the concatenated list:
//!
//! ```text
//! matched(A ++ B)  = matched(A) ∪ matched(B)
//! accepted(A ++ B) = accepted(A) ∪ (accepted(B) − matched(A))
//! ```
//!
//! Instances bound to the same groups in the same order share one effect,
//! and effects of every prefix are memoised, so a fleet of 10,000
//! instances costs as many compositions as it has distinct binding lists.

use crate::error::AnalyzeError;
use crate::finding::Location;
use palisade_model::{Direction, Fleet, InstanceId, SecurityGroupId};
use palisade_policy::{
    decompose, first_match, Decomposition, FleetIndex, Packet, PacketSet, ResolvedRule, RuleOrigin,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

/// One direction of one group taken apart.
#[derive(Debug, Clone, Default)]
pub struct DirSummary {
    /// The resolved rules, in order.
    pub rules: Vec<ResolvedRule>,
    /// Each rule's decided packets under first match within the group.
    pub decided: Vec<PacketSet>,
    /// The packets some rule of the group matches.
    pub matched: PacketSet,
    /// The packets the group accepts (alone).
    pub accepted: PacketSet,
}

/// Both directions of one group.
#[derive(Debug, Clone, Default)]
pub struct GroupSummary {
    /// Ingress.
    pub ingress: DirSummary,
    /// Egress.
    pub egress: DirSummary,
}

impl GroupSummary {
    /// The summary of `direction`.
    pub fn dir(&self, direction: Direction) -> &DirSummary {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What an ordered list of groups does in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// Packets some rule matches.
    pub matched: PacketSet,
    /// Packets accepted.
    pub accepted: PacketSet,
}

impl Effect {
    /// Packets dropped by a DROP rule (not by default).
    pub fn dropped_by_rule(&self) -> PacketSet {
        self.matched.difference(&self.accepted)
    }
}

/// Both directions of an ordered list of groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEffect {
    /// Ingress.
    pub ingress: Effect,
    /// Egress.
    pub egress: Effect,
}

impl ListEffect {
    /// The effect of `direction`.
    pub fn dir(&self, direction: Direction) -> &Effect {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A fleet prepared for analysis; see the module documentation.
pub struct Engine<'f> {
    fleet: &'f Fleet,
    groups: HashMap<SecurityGroupId, GroupSummary>,
    effects: HashMap<Vec<SecurityGroupId>, Rc<ListEffect>>,
    instance_index: HashMap<InstanceId, usize>,
    group_index: HashMap<SecurityGroupId, usize>,
    catalog: FleetIndex,
}

impl<'f> Engine<'f> {
    /// Resolves and takes apart every group of `fleet`.
    pub fn new(fleet: &'f Fleet) -> Result<Engine<'f>, AnalyzeError> {
        let catalog = FleetIndex::new(fleet);
        let mut groups = HashMap::new();
        for g in &fleet.security_groups {
            let rs = palisade_policy::resolve(&catalog, std::slice::from_ref(&g.id))?;
            groups.insert(
                g.id.clone(),
                GroupSummary {
                    ingress: summarize(rs.ingress),
                    egress: summarize(rs.egress),
                },
            );
        }
        Ok(Engine {
            fleet,
            groups,
            effects: HashMap::new(),
            instance_index: fleet
                .instances
                .iter()
                .enumerate()
                .map(|(i, x)| (x.id.clone(), i))
                .collect(),
            group_index: fleet
                .security_groups
                .iter()
                .enumerate()
                .map(|(i, x)| (x.id.clone(), i))
                .collect(),
            catalog,
        })
    }

    /// The fleet.
    pub fn fleet(&self) -> &'f Fleet {
        self.fleet
    }

    /// The summary of group `id`.
    pub fn group(&self, id: &SecurityGroupId) -> Option<&GroupSummary> {
        self.groups.get(id)
    }

    /// The private IPs of the instances bound to group `id`.
    pub fn members(&self, id: &SecurityGroupId) -> &[IpAddr] {
        self.catalog.members(id)
    }

    /// Whether any instance is bound to group `id`.
    pub fn has_members(&self, id: &SecurityGroupId) -> bool {
        self.catalog.has_members(id)
    }

    /// The effect of `groups` bound in this order (memoised, prefixes too).
    pub fn effect(&mut self, groups: &[SecurityGroupId]) -> Rc<ListEffect> {
        if let Some(e) = self.effects.get(groups) {
            return Rc::clone(e);
        }
        let Some((last, prefix)) = groups.split_last() else {
            return Rc::new(ListEffect::default());
        };
        let before = self.effect(prefix);
        let e = match self.groups.get(last) {
            Some(g) => ListEffect {
                ingress: compose(&before.ingress, &g.ingress),
                egress: compose(&before.egress, &g.egress),
            },
            None => (*before).clone(),
        };
        let e = Rc::new(e);
        self.effects.insert(groups.to_vec(), Rc::clone(&e));
        e
    }

    /// The effect of instance `id`'s groups; `None` when there is no such instance.
    pub fn instance_effect(&mut self, id: &InstanceId) -> Option<Rc<ListEffect>> {
        let groups = self.fleet.instance(id)?.security_groups.clone();
        Some(self.effect(&groups))
    }

    /// The rule that decides `packet` for `groups` bound in this order
    /// (first match), or `None` for default drop.
    pub fn decide(&self, groups: &[SecurityGroupId], packet: &Packet) -> Option<&ResolvedRule> {
        groups.iter().find_map(|g| {
            self.groups
                .get(g)
                .and_then(|s| first_match(&s.dir(packet.direction).rules, packet))
        })
    }

    /// The location of a rule: its group, the rule, its line.
    pub fn rule_location(&self, origin: &RuleOrigin) -> Location {
        let path = self.group_index.get(&origin.security_group_id).map(|i| {
            format!(
                "security_groups[{i}].policies.{}[{}]",
                origin.direction.wire_name(),
                origin.policy_index
            )
        });
        Location {
            group: Some(origin.security_group_id.to_string()),
            rule: Some(origin.clone()),
            line: path.as_deref().and_then(|p| self.fleet.line(p)),
            path,
            ..Location::default()
        }
    }

    /// The location of a group.
    pub fn group_location(&self, id: &SecurityGroupId) -> Location {
        let path = self
            .group_index
            .get(id)
            .map(|i| format!("security_groups[{i}]"));
        Location {
            group: Some(id.to_string()),
            line: path.as_deref().and_then(|p| self.fleet.line(p)),
            path,
            ..Location::default()
        }
    }

    /// The location of an instance.
    pub fn instance_location(&self, id: &InstanceId) -> Location {
        let path = self
            .instance_index
            .get(id)
            .map(|i| format!("instances[{i}]"));
        Location {
            instance: Some(id.to_string()),
            line: path.as_deref().and_then(|p| self.fleet.line(p)),
            path,
            ..Location::default()
        }
    }

    /// The position of group `id` in the file.
    pub fn group_position(&self, id: &SecurityGroupId) -> Option<usize> {
        self.group_index.get(id).copied()
    }

    /// The position of instance `id` in the file.
    pub fn instance_position(&self, id: &InstanceId) -> Option<usize> {
        self.instance_index.get(id).copied()
    }
}

/// `A ++ B` from the effect of `A` and the summary of `B`.
fn compose(before: &Effect, group: &DirSummary) -> Effect {
    if before.matched.is_empty() {
        return Effect {
            matched: group.matched.clone(),
            accepted: group.accepted.clone(),
        };
    }
    let mut accepted = before.accepted.clone();
    accepted.union_with(&group.accepted.difference(&before.matched));
    Effect {
        matched: before.matched.union(&group.matched),
        accepted,
    }
}

/// Takes one direction of one group apart (`policy`'s decomposition).
pub fn summarize(rules: Vec<ResolvedRule>) -> DirSummary {
    let Decomposition {
        decided,
        matched,
        accepted,
    } = decompose(&rules);
    DirSummary {
        rules,
        decided,
        matched,
        accepted,
    }
}
