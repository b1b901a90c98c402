//! `LIM001`: the fleet's limits (its `limits:` block, else Tencent's
//! defaults; DESIGN.md section 2) checked as findings rather than as parse
//! failures, so every excess in a file is reported at once: rules per
//! direction per group, references to groups per group, instances per
//! group, groups per instance, and rules per direction after expanding
//! address and service templates (Palisade's limit, `CheckOptions`).

use crate::check::CheckOptions;
use crate::engine::Engine;
use crate::finding::{CheckId, Finding, Location};
use palisade_model::{Direction, Peer, Service};
use std::collections::HashMap;

pub(crate) fn run(e: &Engine<'_>, options: &CheckOptions, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    let limits = fleet.limits;
    let at = |path: String, group: Option<String>, instance: Option<String>| Location {
        group,
        instance,
        line: fleet.line(&path),
        path: Some(path),
        ..Location::default()
    };
    let mut bound: HashMap<&palisade_model::SecurityGroupId, usize> = HashMap::new();
    for inst in &fleet.instances {
        for g in &inst.security_groups {
            *bound.entry(g).or_default() += 1;
        }
    }
    for (gi, g) in fleet.security_groups.iter().enumerate() {
        let gp = format!("security_groups[{gi}]");
        for direction in Direction::BOTH {
            let rules = g.policies.rules(direction);
            let path = format!("{gp}.policies.{}", direction.wire_name());
            if rules.len() > limits.rules_per_direction {
                out.push(Finding::new(
                    CheckId::Lim001,
                    format!(
                        "{} has {} {direction} rules; the limit is {} per direction \
                         (LimitExceeded.SecurityGroupPolicySet). Fix: merge rules (port lists, \
                         address templates) or split the group",
                        g.id,
                        rules.len(),
                        limits.rules_per_direction
                    ),
                    at(path.clone(), Some(g.id.to_string()), None),
                ));
            }
            let expanded: usize = rules
                .iter()
                .map(|r| {
                    let addrs = match &r.peer {
                        Peer::AddressTemplate(id) => fleet
                            .address_template(id)
                            .map_or(1, |t| t.addresses.len().max(1)),
                        Peer::AddressTemplateGroup(id) => {
                            fleet.address_template_group(id).map_or(1, |t| {
                                t.templates
                                    .iter()
                                    .filter_map(|i| fleet.address_template(i))
                                    .map(|t| t.addresses.len())
                                    .sum::<usize>()
                                    .max(1)
                            })
                        }
                        _ => 1,
                    };
                    let services = match &r.service {
                        Service::Template(id) => fleet
                            .service_template(id)
                            .map_or(1, |t| t.services.len().max(1)),
                        Service::TemplateGroup(id) => {
                            fleet.service_template_group(id).map_or(1, |t| {
                                t.templates
                                    .iter()
                                    .filter_map(|i| fleet.service_template(i))
                                    .map(|t| t.services.len())
                                    .sum::<usize>()
                                    .max(1)
                            })
                        }
                        Service::Protocol { .. } => 1,
                    };
                    addrs.saturating_mul(services)
                })
                .fold(0usize, usize::saturating_add);
            if expanded > options.expanded_rules_per_direction {
                out.push(Finding::new(
                    CheckId::Lim001,
                    format!(
                        "{}'s {direction} rules expand to {expanded} entries once address and \
                         service templates are expanded; the limit is {}. Fix: use fewer or \
                         smaller templates, or split the group",
                        g.id, options.expanded_rules_per_direction
                    ),
                    at(path, Some(g.id.to_string()), None),
                ));
            }
        }
        let references = g
            .policies
            .ingress
            .iter()
            .chain(&g.policies.egress)
            .filter(|p| matches!(p.peer, Peer::SecurityGroup(_)))
            .count();
        if references > limits.references_per_group {
            out.push(Finding::new(
                CheckId::Lim001,
                format!(
                    "{} has {references} rules referencing security groups; the limit is {} per \
                     group. Fix: reference fewer groups (an address template can list fixed \
                     addresses)",
                    g.id, limits.references_per_group
                ),
                at(format!("{gp}.policies"), Some(g.id.to_string()), None),
            ));
        }
        let n = bound.get(&g.id).copied().unwrap_or(0);
        if n > limits.instances_per_group {
            out.push(Finding::new(
                CheckId::Lim001,
                format!(
                    "{} is bound to {n} instances; the limit is {} per group. Fix: split the \
                     instances over several groups with the same rules",
                    g.id, limits.instances_per_group
                ),
                at(format!("{gp}.id"), Some(g.id.to_string()), None),
            ));
        }
    }
    for (ii, inst) in fleet.instances.iter().enumerate() {
        if inst.security_groups.len() > limits.groups_per_instance {
            out.push(Finding::new(
                CheckId::Lim001,
                format!(
                    "{} is bound to {} groups; the limit is {} per instance \
                     (LimitExceeded.AssociateUSGLimitExceeded). Fix: merge groups",
                    inst.id,
                    inst.security_groups.len(),
                    limits.groups_per_instance
                ),
                at(
                    format!("instances[{ii}].security_groups"),
                    None,
                    Some(inst.id.to_string()),
                ),
            ));
        }
    }
}
