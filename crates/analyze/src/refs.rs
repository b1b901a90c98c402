//! `REF001`: rules that reference something empty: a group no instance is
//! bound to (or whose instances have no private IP), an address template
//! with no address, a service template with no service, or a template
//! group whose templates are all empty. Such a rule matches nothing: on an
//! ACCEPT rule it allows nothing, on a DROP rule it protects nothing.
//! (`REF002`, references to things that do not exist, comes from
//! [`crate::load`].)
//!
//! `ANO004`: rules whose protocol cannot occur with their peer's address
//! family (ICMP with an IPv6 peer, ICMPv6 with an IPv4 one, including a
//! group or template all of whose addresses are of the other family). They
//! too match nothing.

use crate::engine::Engine;
use crate::finding::{CheckId, Finding};
use palisade_model::{Action, Direction, Family, Peer, Service};
use palisade_policy::RuleOrigin;
use std::collections::HashSet;

pub(crate) fn run(e: &Engine<'_>, placeholders: &HashSet<String>, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    let address_empty = |id: &palisade_model::AddressTemplateId| {
        fleet
            .address_template(id)
            .is_some_and(|t| t.addresses.is_empty())
    };
    let service_empty = |id: &palisade_model::ServiceTemplateId| {
        fleet
            .service_template(id)
            .is_some_and(|t| t.services.is_empty())
    };
    for g in &fleet.security_groups {
        for direction in Direction::BOTH {
            for (index, rule) in g.policies.rules(direction).iter().enumerate() {
                let mut empty: Vec<String> = Vec::new();
                match &rule.peer {
                    Peer::SecurityGroup(id) if e.members(id).is_empty() => {
                        empty.push(if e.has_members(id) {
                            format!("group {id}, whose instances have no private IP")
                        } else {
                            format!("group {id}, which no instance is bound to")
                        });
                    }
                    Peer::AddressTemplate(id)
                        if address_empty(id) && !placeholders.contains(id.as_str()) =>
                    {
                        empty.push(format!("address template {id}, which holds no address"));
                    }
                    Peer::AddressTemplateGroup(id) => {
                        if let Some(t) = fleet.address_template_group(id) {
                            if t.templates.iter().all(address_empty) {
                                empty.push(format!(
                                    "address template group {id}, whose templates hold no address"
                                ));
                            }
                        }
                    }
                    _ => {}
                }
                match &rule.service {
                    Service::Template(id)
                        if service_empty(id) && !placeholders.contains(id.as_str()) =>
                    {
                        empty.push(format!("service template {id}, which holds no service"));
                    }
                    Service::TemplateGroup(id) => {
                        if let Some(t) = fleet.service_template_group(id) {
                            if t.templates.iter().all(service_empty) {
                                empty.push(format!(
                                    "service template group {id}, whose templates hold no service"
                                ));
                            }
                        }
                    }
                    _ => {}
                }
                if empty.is_empty() {
                    continue;
                }
                let origin = RuleOrigin {
                    security_group_id: g.id.clone(),
                    direction,
                    policy_index: index,
                };
                let effect = match rule.action {
                    Action::Drop => {
                        "on a DROP rule this protects nothing: the traffic it was meant to stop \
                         falls through to the rules below"
                    }
                    Action::Accept => "on an ACCEPT rule this allows nothing",
                };
                out.push(Finding::new(
                    CheckId::Ref001,
                    format!(
                        "{origin} ({rule}) references {}, so it matches nothing; {effect}. Fix: \
                         bind instances to the group or fill the template, or point the rule at \
                         what you meant",
                        empty.join(" and ")
                    ),
                    e.rule_location(&origin),
                ));
            }
        }
    }
}

pub(crate) fn impossible(e: &Engine<'_>, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    let template_families = |id: &palisade_model::AddressTemplateId| -> Vec<Family> {
        fleet
            .address_template(id)
            .map(|t| t.addresses.iter().map(|a| a.range().family()).collect())
            .unwrap_or_default()
    };
    for g in &fleet.security_groups {
        for direction in Direction::BOTH {
            for (index, rule) in g.policies.rules(direction).iter().enumerate() {
                let why = rule.impossible_family().or_else(|| {
                    let Service::Protocol { protocol, .. } = &rule.service else {
                        return None;
                    };
                    let needs = protocol.family()?;
                    let families: Vec<Family> = match &rule.peer {
                        Peer::SecurityGroup(id) => {
                            e.members(id).iter().map(|ip| Family::of(*ip)).collect()
                        }
                        Peer::AddressTemplate(id) => template_families(id),
                        Peer::AddressTemplateGroup(id) => fleet
                            .address_template_group(id)
                            .map(|t| t.templates.iter().flat_map(template_families).collect())
                            .unwrap_or_default(),
                        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => return None,
                    };
                    // Empty references are REF001's.
                    (!families.is_empty() && !families.contains(&needs)).then(|| {
                        format!(
                            "{protocol} exists only in {} but every address of {} is of the other \
                             family: the rule can never match",
                            if needs == Family::V4 { "IPv4" } else { "IPv6" },
                            rule.peer
                        )
                    })
                });
                let Some(why) = why else {
                    continue;
                };
                let origin = RuleOrigin {
                    security_group_id: g.id.clone(),
                    direction,
                    policy_index: index,
                };
                out.push(Finding::new(
                    CheckId::Ano004,
                    format!(
                        "{origin} ({rule}): {why}; {}. Fix: use the protocol of the peer's family \
                         (ICMP for IPv4, ICMPv6 for IPv6), or the peer you meant",
                        match rule.action {
                            Action::Drop => "on a DROP rule this protects nothing",
                            Action::Accept => "on an ACCEPT rule this allows nothing",
                        }
                    ),
                    e.rule_location(&origin),
                ));
            }
        }
    }
}
