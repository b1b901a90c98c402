//! Rule anomalies (`ANO001` shadowed, `ANO002` redundant, `ANO003`
//! correlated), on exact packet sets, within each group and across the
//! groups bound to one instance (the later group's rules come after every
//! rule of the groups bound before it).
//!
//! - A rule is *covered* when the rules above it decide every packet it
//!   matches. If some of those packets are decided with the other action it
//!   is shadowed (its action never takes effect where it was meant to); if
//!   all are decided with its own action it is redundant (removing it
//!   changes nothing).
//! - A rule that is not covered but shares packets with a rule above it of
//!   the other action is correlated: the earlier rule silently overrides
//!   part of it.

use crate::check::{binding_classes, instances_phrase};
use crate::engine::{DirSummary, Engine};
use crate::finding::{CheckId, Finding};
use palisade_model::{Action, Direction, SecurityGroupId};
use palisade_policy::{PacketSet, ResolvedRule};
use std::collections::HashSet;

/// At most this many earlier rules are named in a message.
const NAMED: usize = 3;

pub(crate) fn run(e: &mut Engine<'_>, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    for g in &fleet.security_groups {
        let Some(summary) = e.group(&g.id) else {
            continue;
        };
        for direction in Direction::BOTH {
            within(e, summary.dir(direction), out);
        }
    }
    across(e, out);
}

fn within(e: &Engine<'_>, s: &DirSummary, out: &mut Vec<Finding>) {
    let mut accepted = PacketSet::empty();
    let mut dropped = PacketSet::empty();
    for (i, rule) in s.rules.iter().enumerate() {
        let Some(decided) = s.decided.get(i) else {
            continue;
        };
        let space = &palisade_policy::rule_space(rule);
        let other = match rule.action() {
            Action::Accept => &dropped,
            Action::Drop => &accepted,
        };
        if !space.is_empty() {
            if decided.is_empty() {
                let conflict = space.intersection(other);
                let covering = earlier(s, i, space, None);
                let dir = rule.origin().direction;
                if conflict.is_empty() {
                    let w = crate::check::witness(space, dir);
                    out.push(
                        Finding::new(
                            CheckId::Ano002,
                            format!(
                                "{} ({}) can never match: the rules above it ({}) already {} \
                                 every packet it matches. Fix: remove it (nothing changes), or \
                                 move it above them if it documents intent",
                                rule.origin(),
                                rule.policy(),
                                covering,
                                verb(rule.action())
                            ),
                            e.rule_location(rule.origin()),
                        )
                        .with_witness(w),
                    );
                } else {
                    let w = crate::check::witness(&conflict, dir);
                    let by = earlier(s, i, space, Some(rule.action()));
                    out.push(
                        Finding::new(
                            CheckId::Ano001,
                            format!(
                                "{} ({}) is shadowed: it can never match, because the rules \
                                 above it ({}) decide every packet it matches, some the other \
                                 way: e.g. {} is {} by {}. Fix: move the rule above {}, or \
                                 remove it if the earlier verdict is what you want",
                                rule.origin(),
                                rule.policy(),
                                covering,
                                w.map(|w| w.to_string()).unwrap_or_default(),
                                past(opposite(rule.action())),
                                by,
                                by
                            ),
                            e.rule_location(rule.origin()),
                        )
                        .with_witness(w),
                    );
                }
            } else {
                let overlap = space.intersection(other);
                if !overlap.is_empty() {
                    let w = crate::check::witness(&overlap, rule.origin().direction);
                    let by = earlier(s, i, space, Some(rule.action()));
                    out.push(
                        Finding::new(
                            CheckId::Ano003,
                            format!(
                                "{} ({}) partly overlaps {} above it with the other action: \
                                 those packets (e.g. {}) are {} by the earlier rule, the rest are \
                                 {} by this one. Fix: nothing if intended; otherwise narrow one \
                                 of the rules so they do not overlap",
                                rule.origin(),
                                rule.policy(),
                                by,
                                w.map(|w| w.to_string()).unwrap_or_default(),
                                past(opposite(rule.action())),
                                past(rule.action())
                            ),
                            e.rule_location(rule.origin()),
                        )
                        .with_witness(w),
                    );
                }
            }
        }
        match rule.action() {
            Action::Accept => accepted.union_with(decided),
            Action::Drop => dropped.union_with(decided),
        }
    }
}

/// Names the rules above `i` that decide packets of `space` (with the
/// action other than `not`, when given): `sg-x Ingress[0], sg-x Ingress[2]`.
fn earlier(s: &DirSummary, i: usize, space: &PacketSet, not: Option<Action>) -> String {
    let mut names = Vec::new();
    let mut more = false;
    for j in 0..i {
        let (Some(r), Some(d)) = (s.rules.get(j), s.decided.get(j)) else {
            continue;
        };
        if not == Some(r.action()) || d.is_empty() || !d.intersects(space) {
            continue;
        }
        if names.len() == NAMED {
            more = true;
            break;
        }
        names.push(r.origin().to_string());
    }
    let mut text = names.join(", ");
    if more {
        text.push_str(" and more");
    }
    if text.is_empty() {
        "earlier rules".to_string()
    } else {
        text
    }
}

fn across(e: &mut Engine<'_>, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    let mut seen: HashSet<Vec<SecurityGroupId>> = HashSet::new();
    for (groups, instances) in binding_classes(fleet) {
        for t in 1..groups.len() {
            let key = groups[..=t].to_vec();
            if !seen.insert(key) {
                continue;
            }
            let before = e.effect(&groups[..t]);
            let Some(g) = e.group(&groups[t]) else {
                continue;
            };
            for direction in Direction::BOTH {
                let prefix = before.dir(direction);
                if prefix.matched.is_empty() {
                    continue;
                }
                let s = g.dir(direction);
                let mut dropped: Option<PacketSet> = None;
                for (i, rule) in s.rules.iter().enumerate() {
                    let Some(decided) = s.decided.get(i) else {
                        continue;
                    };
                    if decided.is_empty() || !decided.intersects(&prefix.matched) {
                        continue;
                    }
                    let other = match rule.action() {
                        Action::Accept => &*dropped.get_or_insert_with(|| prefix.dropped_by_rule()),
                        Action::Drop => &prefix.accepted,
                    };
                    let conflict = decided.intersection(other);
                    let covered = decided.is_subset(&prefix.matched);
                    let id = match (covered, conflict.is_empty()) {
                        (true, false) => CheckId::Ano001,
                        (true, true) => CheckId::Ano002,
                        (false, false) => CheckId::Ano003,
                        (false, true) => continue,
                    };
                    let w = if conflict.is_empty() {
                        crate::check::witness(decided, direction)
                    } else {
                        crate::check::witness(&conflict, direction)
                    };
                    let by = w
                        .as_ref()
                        .and_then(|w| e.decide(&groups[..t], w))
                        .map(describe)
                        .unwrap_or_else(|| "earlier groups".to_string());
                    let on = format!(
                        "on {} (groups bound in the order {})",
                        instances_phrase(&instances),
                        groups
                            .iter()
                            .map(|g| g.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let ws = w.map(|w| w.to_string()).unwrap_or_default();
                    let message = match id {
                        CheckId::Ano001 => format!(
                            "{} ({}) is shadowed {on}: the groups bound before {} decide every \
                             packet it matches, and {by} {} some of them (e.g. {ws}). Fix: move \
                             the rule into an earlier group, change the binding order, or remove \
                             the rule",
                            rule.origin(),
                            rule.policy(),
                            groups[t],
                            verb(opposite(rule.action()))
                        ),
                        CheckId::Ano002 => format!(
                            "{} ({}) is redundant {on}: the groups bound before {} already {} \
                             every packet it matches (e.g. {ws} by {by}). Fix: nothing for \
                             these instances; remove the rule if every instance of {} is bound \
                             like this",
                            rule.origin(),
                            rule.policy(),
                            groups[t],
                            verb(rule.action()),
                            groups[t]
                        ),
                        _ => format!(
                            "{} ({}) partly overlaps {by} in a group bound before it {on}: those \
                             packets (e.g. {ws}) are {} there. Fix: nothing if intended; \
                             otherwise narrow one of the rules or change the binding order",
                            rule.origin(),
                            rule.policy(),
                            past(opposite(rule.action()))
                        ),
                    };
                    let mut loc = e.rule_location(rule.origin());
                    loc.instance = instances.first().map(|i| i.to_string());
                    out.push(Finding::new(id, message, loc).with_witness(w));
                }
            }
        }
    }
}

fn describe(r: &ResolvedRule) -> String {
    format!("{} ({})", r.origin(), r.policy())
}

fn opposite(a: Action) -> Action {
    match a {
        Action::Accept => Action::Drop,
        Action::Drop => Action::Accept,
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Drop => "drop",
    }
}

fn past(a: Action) -> &'static str {
    match a {
        Action::Accept => "accepted",
        Action::Drop => "dropped",
    }
}
