//! Lenient loading of a fleet file for analysis. `Fleet::parse` refuses a
//! file with a missing reference or an exceeded limit, as the API would;
//! `check` must still report on such a file. So:
//!
//! 1. the text is read as a raw `FleetFile` (a syntax error is unusable input);
//! 2. it is validated with every limit lifted (limits are checked by
//!    `LIM001` against the file's real limits, see [`crate::limits`]);
//! 3. each `ResourceNotFound` problem becomes a `REF002` finding, and the
//!    file is repaired where the reference sits: a rule's missing peer or
//!    service becomes an empty placeholder template (the rule keeps its
//!    `PolicyIndex` and matches nothing, as resolution treats an empty
//!    reference), a binding, cluster member or template-group entry that
//!    names nothing is dropped;
//! 4. any other problem (a malformed rule, a duplicate id) leaves nothing
//!    sound to analyse and is a [`LoadError`].

use crate::error::LoadError;
use crate::finding::{CheckId, Finding, Location};
use palisade_model::locate::LineIndex;
use palisade_model::wire::{AddressTemplateSpecification, ServiceTemplateSpecification};
use palisade_model::{Direction, ErrorCode, Fleet, FleetFile, Limits, Problem, SecurityGroupId};
use palisade_policy::RuleOrigin;
use std::collections::HashSet;

/// A fleet ready for analysis, with what loading found.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The fleet, repaired where references were missing; `limits` are the file's.
    pub fleet: Fleet,
    /// `REF002` findings for the references that were missing.
    pub findings: Vec<Finding>,
    /// Ids of the empty templates put in place of missing references
    /// (not reported as `REF001`).
    pub placeholders: HashSet<String>,
}

/// Reads `text` (YAML or JSON) leniently; see the module documentation.
pub fn load(text: &str) -> Result<Loaded, LoadError> {
    let syntax = |e: palisade_model::YamlError| LoadError::Syntax {
        line: e.line,
        message: e.message,
    };
    let doc = palisade_model::yaml::parse(text).map_err(syntax)?;
    let file: FleetFile = palisade_model::yaml::from_document(&doc).map_err(syntax)?;
    load_file(file, doc.lines)
}

/// [`load`] for an already-read file; `lines` locates findings.
pub fn load_file(file: FleetFile, lines: LineIndex) -> Result<Loaded, LoadError> {
    let limits = file.limits.unwrap_or_default();
    let mut relaxed = file.clone();
    relaxed.limits = Some(Limits {
        rules_per_direction: usize::MAX,
        groups_per_instance: usize::MAX,
        instances_per_group: usize::MAX,
        references_per_group: usize::MAX,
        groups_per_project: usize::MAX,
    });
    let mut findings = Vec::new();
    let mut placeholders = HashSet::new();
    // One repair pass fixes every reference the first validation reported;
    // the second must then succeed. A third is never needed; the bound keeps
    // a surprise from looping.
    for _ in 0..3 {
        let problems = match Fleet::from_file(&relaxed, lines.clone()) {
            Ok(mut fleet) => {
                fleet.limits = limits;
                return Ok(Loaded {
                    fleet,
                    findings,
                    placeholders,
                });
            }
            Err(problems) => problems,
        };
        let (missing, fatal): (Vec<Problem>, Vec<Problem>) = problems
            .into_iter()
            .partition(|p| p.error.code() == ErrorCode::ResourceNotFound);
        if !fatal.is_empty() {
            return Err(LoadError::Invalid { problems: fatal });
        }
        let mut repair = Repair::new(&relaxed);
        for p in &missing {
            findings.push(ref002(&file, p));
            repair.note(&p.path);
        }
        if !repair.apply(&mut relaxed, &mut placeholders) {
            return Err(LoadError::Invalid { problems: missing });
        }
    }
    Err(LoadError::Invalid {
        problems: Vec::new(),
    })
}

/// The location of a path in the raw file: the group, rule, instance or
/// cluster it is under, and its line.
pub(crate) fn raw_location(file: &FleetFile, path: &str, line: Option<usize>) -> Location {
    let segs = segments(path);
    let mut loc = Location {
        path: Some(path.to_string()),
        line,
        ..Location::default()
    };
    match segs.as_slice() {
        [("security_groups", Some(i)), rest @ ..] => {
            let gid = file.security_groups.get(*i).map(|g| g.id.clone());
            if let (Some(g), [("policies", None), (dir, Some(j)), ..]) = (&gid, rest) {
                let direction = match *dir {
                    "Ingress" => Some(Direction::Ingress),
                    "Egress" => Some(Direction::Egress),
                    _ => None,
                };
                if let (Some(direction), Ok(id)) = (direction, g.parse::<SecurityGroupId>()) {
                    loc.rule = Some(RuleOrigin {
                        security_group_id: id,
                        direction,
                        policy_index: *j,
                    });
                }
            }
            loc.group = gid;
        }
        [("instances", Some(i)), ..] => {
            loc.instance = file.instances.get(*i).map(|x| x.id.clone());
        }
        [("clusters", Some(i)), ..] => {
            loc.cluster = file.clusters.get(*i).map(|x| x.id.clone());
        }
        _ => {}
    }
    loc
}

/// `a.b[3].c` -> `[("a", None), ("b", Some(3)), ("c", None)]`.
pub(crate) fn segments(path: &str) -> Vec<(&str, Option<usize>)> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (s, None),
        })
        .collect()
}

fn ref002(file: &FleetFile, p: &Problem) -> Finding {
    let loc = raw_location(file, &p.path, p.line);
    let what = p.error.message();
    let segs = segments(&p.path);
    let fix = match segs.as_slice() {
        [("security_groups", _), ("policies", _), _, (field, _)] => format!(
            "the rule's {field} names it, so Tencent would refuse the rule (ResourceNotFound); \
             Palisade analyses the rule as matching nothing. Fix: declare it in the file or point \
             the rule at one that exists"
        ),
        [("instances", _), ("security_groups", _)] => "the instance is bound to it (it is \
             analysed with its other groups). Fix: declare the group or remove the binding"
            .to_string(),
        [("clusters", _), (field, _)] => format!(
            "the cluster lists it in {field} (it is analysed without it). Fix: declare it or \
             remove it from the list"
        ),
        _ => "it is analysed without it. Fix: declare it or remove the reference".to_string(),
    };
    Finding::new(CheckId::Ref002, format!("{what}: {fix}"), loc)
}

/// The repairs one validation pass asks for.
struct Repair {
    /// (group index, direction, rule index, which part: peer or service).
    rules: Vec<(usize, Direction, usize, bool)>,
    /// (list path, index) of entries to drop.
    drops: Vec<(u8, usize, usize)>,
    address_placeholder: String,
    service_placeholder: String,
}

impl Repair {
    fn new(file: &FleetFile) -> Repair {
        let taken: HashSet<&str> = file
            .address_templates
            .iter()
            .map(|t| t.id.as_str())
            .chain(file.service_templates.iter().map(|t| t.id.as_str()))
            .collect();
        let free = |prefix: &str| {
            (0..1000u32)
                .map(|n| format!("{prefix}missing{}", n % 10))
                .chain((0..1000u32).map(|n| format!("{prefix}miss{n:04}")))
                .find(|id| !taken.contains(id.as_str()))
                .unwrap_or_else(|| format!("{prefix}zzzzzzzz"))
        };
        Repair {
            rules: Vec::new(),
            drops: Vec::new(),
            address_placeholder: free("ipm-"),
            service_placeholder: free("ppm-"),
        }
    }

    fn note(&mut self, path: &str) {
        match segments(path).as_slice() {
            [("security_groups", Some(g)), ("policies", None), (dir, Some(r)), (field, None)] => {
                let direction = match *dir {
                    "Ingress" => Direction::Ingress,
                    _ => Direction::Egress,
                };
                let service = *field == "ServiceTemplate";
                self.rules.push((*g, direction, *r, service));
            }
            [(list, Some(i)), (field, Some(j))] => {
                let kind = match (*list, *field) {
                    ("instances", "security_groups") => 0,
                    ("clusters", "nodes") => 1,
                    ("clusters", "masters") => 2,
                    ("clusters", "peers") => 3,
                    ("address_template_groups", "templates") => 4,
                    ("service_template_groups", "templates") => 5,
                    _ => return,
                };
                self.drops.push((kind, *i, *j));
            }
            _ => {}
        }
    }

    /// Applies the repairs; false when there was nothing to do.
    fn apply(mut self, f: &mut FleetFile, placeholders: &mut HashSet<String>) -> bool {
        if self.rules.is_empty() && self.drops.is_empty() {
            return false;
        }
        let (mut need_addr, mut need_svc) = (false, false);
        for &(g, dir, r, service) in &self.rules {
            let Some(group) = f.security_groups.get_mut(g) else {
                continue;
            };
            let list = match dir {
                Direction::Ingress => &mut group.policies.ingress,
                Direction::Egress => &mut group.policies.egress,
            };
            let Some(rule) = list.as_mut().and_then(|l| l.get_mut(r)) else {
                continue;
            };
            if service {
                rule.protocol = None;
                rule.port = None;
                rule.service_template = Some(ServiceTemplateSpecification {
                    service_id: self.service_placeholder.clone(),
                    service_group_id: String::new(),
                });
                need_svc = true;
            } else {
                rule.cidr_block = None;
                rule.ipv6_cidr_block = None;
                rule.security_group_id = None;
                rule.address_template = Some(AddressTemplateSpecification {
                    address_id: self.address_placeholder.clone(),
                    address_group_id: String::new(),
                });
                need_addr = true;
            }
        }
        // Highest index first, so earlier indices stay valid.
        self.drops.sort_by(|a, b| b.cmp(a));
        self.drops.dedup();
        for (kind, i, j) in &self.drops {
            let list: Option<&mut Vec<String>> = match kind {
                0 => f.instances.get_mut(*i).map(|x| &mut x.security_groups),
                1 => f.clusters.get_mut(*i).map(|x| &mut x.nodes),
                2 => f.clusters.get_mut(*i).map(|x| &mut x.masters),
                3 => f.clusters.get_mut(*i).map(|x| &mut x.peers),
                4 => f
                    .address_template_groups
                    .get_mut(*i)
                    .map(|x| &mut x.templates),
                _ => f
                    .service_template_groups
                    .get_mut(*i)
                    .map(|x| &mut x.templates),
            };
            if let Some(list) = list {
                if *j < list.len() {
                    list.remove(*j);
                }
            }
        }
        if need_addr && !placeholders.contains(&self.address_placeholder) {
            f.address_templates
                .push(palisade_model::fleet::AddressTemplateEntry {
                    id: self.address_placeholder.clone(),
                    ..Default::default()
                });
            placeholders.insert(self.address_placeholder);
        }
        if need_svc && !placeholders.contains(&self.service_placeholder) {
            f.service_templates
                .push(palisade_model::fleet::ServiceTemplateEntry {
                    id: self.service_placeholder.clone(),
                    ..Default::default()
                });
            placeholders.insert(self.service_placeholder);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_segments() {
        assert_eq!(
            segments("security_groups[3].policies.Ingress[2].SecurityGroupId"),
            vec![
                ("security_groups", Some(3)),
                ("policies", None),
                ("Ingress", Some(2)),
                ("SecurityGroupId", None)
            ]
        );
        assert!(segments("").is_empty());
    }

    #[test]
    fn syntax_errors_are_unusable_input() {
        assert!(matches!(
            load("a: [").unwrap_err(),
            LoadError::Syntax { .. }
        ));
        assert!(matches!(
            load("nonsense: 1").unwrap_err(),
            LoadError::Syntax { .. }
        ));
        let bad_rule = "security_groups:\n  - id: sg-aaaaaaaa\n    policies:\n      Ingress:\n        - {Protocol: TCP, Port: \"99999\", CidrBlock: 0.0.0.0/0, Action: ACCEPT}\n";
        assert!(matches!(
            load(bad_rule).unwrap_err(),
            LoadError::Invalid { .. }
        ));
    }
}
