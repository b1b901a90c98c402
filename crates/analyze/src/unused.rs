//! `USE001`: rules that decided no packet over a window (DESIGN.md section
//! 8, "Observe"; issue 18), from a server's rule hits (`DescribeRuleHits`).
//!
//! "Decided nothing" is only claimed where it is known: the rule has been
//! counted, unchanged, since before the window began, and every instance
//! bound to its group has had its agent report counters without a gap
//! since before the window began and recently (within
//! [`HIT_COVERAGE_GAP`]). Where that does not hold, the rule is not judged
//! and no finding is made: the caller gets it back as [`Unjudged`], with
//! the reason, to say so. A group bound to no instance is not judged
//! either (nothing applies its rules, so their hits mean nothing).
//! Removing a rule that is in use breaks traffic, so an unknown is never
//! reported as unused.

use crate::finding::{CheckId, Finding, Location};
use palisade_model::{Direction, Fleet, SecurityGroupId};
use palisade_policy::RuleOrigin;
use palisade_protocol::service::{RuleHitsAnswer, HIT_COVERAGE_GAP};

/// The default window: 30 days.
pub const DEFAULT_WINDOW: u64 = 30 * 86_400;

/// What `USE001` found across the groups given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// One `USE001` finding per rule known to have decided nothing.
    pub findings: Vec<Finding>,
    /// Groups with rules that could not be judged, and why.
    pub unjudged: Vec<Unjudged>,
}

/// Rules of a group the hit data does not cover over the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unjudged {
    /// The group.
    pub group: String,
    /// How many of its rules were not judged.
    pub rules: usize,
    /// Why (the first reason found), e.g. `ins-a reports hits only since 2 days ago`.
    pub reason: String,
}

/// `USE001` over `hits` (one `DescribeRuleHits` answer per group) with a
/// window of `window` seconds ending at each answer's `Now` (or `now` for
/// an answer without one). Rules are located in `fleet`; an answer for a
/// group or rule the fleet does not have is passed over.
pub fn unused_rules(fleet: &Fleet, hits: &[RuleHitsAnswer], window: u64, now: u64) -> Usage {
    let mut usage = Usage::default();
    for answer in hits {
        let Ok(group) = answer.security_group_id.parse::<SecurityGroupId>() else {
            continue;
        };
        let Some(index) = fleet.security_groups.iter().position(|g| g.id == group) else {
            continue;
        };
        if answer.instance_coverage_set.is_empty() {
            continue;
        }
        let now = answer.now.unwrap_or(now);
        let start = now.saturating_sub(window);
        let policies = &fleet.security_groups[index].policies;
        let mut unjudged: Option<(usize, String)> = None;
        let mut skip = |reason: String| {
            let u = unjudged.get_or_insert((0, reason));
            u.0 += 1;
        };
        let instance_gap = answer.instance_coverage_set.iter().find_map(|c| {
            let short = match (c.since, c.last_report) {
                (Some(since), Some(last)) if since <= start && last + HIT_COVERAGE_GAP >= now => {
                    return None
                }
                (Some(_), Some(last)) if last + HIT_COVERAGE_GAP < now => {
                    format!(
                        "{} has not reported hits for {}",
                        c.instance_id,
                        span(now - last)
                    )
                }
                (Some(since), _) => format!(
                    "{} reports hits only since {} ago",
                    c.instance_id,
                    span(now.saturating_sub(since))
                ),
                _ => format!("{} has never reported hits", c.instance_id),
            };
            Some(short)
        });
        for hit in &answer.rule_hit_set {
            let direction = match hit.direction.as_str() {
                "ingress" => Direction::Ingress,
                "egress" => Direction::Egress,
                _ => continue,
            };
            let list = match direction {
                Direction::Ingress => &policies.ingress,
                Direction::Egress => &policies.egress,
            };
            let Ok(policy_index) = usize::try_from(hit.policy_index) else {
                continue;
            };
            if policy_index >= list.len() {
                continue;
            }
            if hit.last_used.is_some_and(|t| t >= start) {
                continue;
            }
            if let Some(reason) = &instance_gap {
                skip(reason.clone());
                continue;
            }
            let since = match hit.since {
                Some(s) if s <= start => s,
                Some(s) => {
                    skip(format!(
                        "{} {}[{}] is counted (unchanged) only since {} ago",
                        group,
                        direction.wire_name(),
                        policy_index,
                        span(now.saturating_sub(s))
                    ));
                    continue;
                }
                None => {
                    skip(format!(
                        "no agent has reported {} {}[{}] yet",
                        group,
                        direction.wire_name(),
                        policy_index
                    ));
                    continue;
                }
            };
            let origin = RuleOrigin {
                security_group_id: group.clone(),
                direction,
                policy_index,
            };
            let last = match hit.last_used {
                Some(t) => format!("it last decided one {} ago", span(now.saturating_sub(t))),
                None => format!(
                    "it has decided none since it was first counted {} ago",
                    span(now.saturating_sub(since))
                ),
            };
            let n = answer.instance_coverage_set.len();
            let message = format!(
                "{origin} decided no packet in the last {} on any of the {n} instance{} applying it \
                 (every one reported hits throughout); {last}. Fix: remove it if nothing needs it.",
                span(window),
                if n == 1 { "" } else { "s" },
            );
            usage.findings.push(Finding::new(
                CheckId::Use001,
                message,
                location(fleet, index, origin),
            ));
        }
        if let Some((rules, reason)) = unjudged {
            usage.unjudged.push(Unjudged {
                group: group.to_string(),
                rules,
                reason,
            });
        }
    }
    usage
}

/// `30d`, `36h`, `90m`, `45s`: the largest unit that divides `seconds`
/// exactly, or for a span that is not a whole number of minutes, whole
/// days or hours rounded down.
pub fn span(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 && (s % 86_400 == 0 || s % 3600 != 0) => format!("{}d", s / 86_400),
        s if s >= 3600 && (s % 3600 == 0 || s % 60 != 0) => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn location(fleet: &Fleet, index: usize, origin: RuleOrigin) -> Location {
    let path = format!(
        "security_groups[{index}].policies.{}[{}]",
        origin.direction.wire_name(),
        origin.policy_index
    );
    Location {
        group: Some(origin.security_group_id.to_string()),
        line: fleet.line(&path),
        rule: Some(origin),
        path: Some(path),
        ..Location::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_protocol::service::{InstanceHitCoverage, RuleHit};

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn fleet() -> Fleet {
        let text = "security_groups:
  - id: sg-use00001
    policies:
      Ingress:
        - {Protocol: TCP, Port: '22', CidrBlock: 198.51.100.0/24, Action: ACCEPT}
        - {Protocol: TCP, Port: '80', CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: UDP, Port: '53', CidrBlock: 0.0.0.0/0, Action: ACCEPT}
      Egress:
        - {Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
instances:
  - {id: ins-use00001, private_ips: [10.0.0.1], security_groups: [sg-use00001]}
  - {id: ins-use00002, private_ips: [10.0.0.2], security_groups: [sg-use00001]}
";
        crate::load::load(text).map(|l| l.fleet).unwrap_or_default()
    }

    fn hit(dir: &str, i: u64, hits: u64, last: Option<u64>, since: Option<u64>) -> RuleHit {
        RuleHit {
            direction: dir.into(),
            policy_index: i,
            hits,
            last_used: last,
            since,
        }
    }

    fn covered(id: &str, since: u64) -> InstanceHitCoverage {
        InstanceHitCoverage {
            instance_id: id.into(),
            since: Some(since),
            last_report: Some(NOW - 5),
        }
    }

    fn answer(coverage: Vec<InstanceHitCoverage>) -> RuleHitsAnswer {
        RuleHitsAnswer {
            security_group_id: "sg-use00001".into(),
            rule_hit_set: vec![
                // Used yesterday.
                hit("ingress", 0, 9, Some(NOW - DAY), Some(NOW - 90 * DAY)),
                // Used 40 days ago, not since.
                hit("ingress", 1, 3, Some(NOW - 40 * DAY), Some(NOW - 90 * DAY)),
                // Never used, counted for 60 days.
                hit("ingress", 2, 0, None, Some(NOW - 60 * DAY)),
                // Never used, but changed 10 days ago.
                hit("egress", 0, 0, None, Some(NOW - 10 * DAY)),
            ],
            instance_coverage_set: coverage,
            now: Some(NOW),
        }
    }

    #[test]
    fn covered_rules_without_hits_in_the_window_are_found() {
        let fleet = fleet();
        assert_eq!(fleet.security_groups.len(), 1);
        let a = answer(vec![
            covered("ins-use00001", NOW - 31 * DAY),
            covered("ins-use00002", NOW - 45 * DAY),
        ]);
        let u = unused_rules(&fleet, &[a], DEFAULT_WINDOW, 0);
        let found: Vec<String> = u
            .findings
            .iter()
            .map(|f| {
                f.location
                    .rule
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(found, ["sg-use00001 Ingress[1]", "sg-use00001 Ingress[2]"]);
        assert!(u.findings.iter().all(|f| f.id == CheckId::Use001));
        assert!(
            u.findings[0].message.contains("last 30d"),
            "{}",
            u.findings[0].message
        );
        assert!(
            u.findings[0].message.contains("40d ago"),
            "{}",
            u.findings[0].message
        );
        assert_eq!(
            u.findings[1].location.path.as_deref(),
            Some("security_groups[0].policies.Ingress[2]")
        );
        // The egress rule changed within the window: not judged, and said so.
        assert_eq!(u.unjudged.len(), 1);
        assert_eq!(u.unjudged[0].rules, 1);
        assert!(
            u.unjudged[0].reason.contains("Egress[0]"),
            "{:?}",
            u.unjudged
        );
        // A shorter window finds the rule used 40 days ago in use, and
        // judges the egress rule.
        let a = answer(vec![covered("ins-use00001", NOW - 31 * DAY)]);
        let u = unused_rules(&fleet, &[a], 7 * DAY, 0);
        assert_eq!(u.findings.len(), 3, "{:#?}", u.findings);
        assert!(u.unjudged.is_empty());
    }

    #[test]
    fn an_instance_not_covered_over_the_window_means_no_finding() {
        let fleet = fleet();
        // One instance reports only since 20 days ago.
        let a = answer(vec![
            covered("ins-use00001", NOW - 45 * DAY),
            covered("ins-use00002", NOW - 20 * DAY),
        ]);
        let u = unused_rules(&fleet, &[a], DEFAULT_WINDOW, 0);
        assert!(u.findings.is_empty(), "{:#?}", u.findings);
        assert_eq!(u.unjudged.len(), 1);
        assert_eq!(u.unjudged[0].rules, 3, "the rule used yesterday is judged");
        assert_eq!(
            u.unjudged[0].reason,
            "ins-use00002 reports hits only since 20d ago"
        );
        // One never reported.
        let mut silent = covered("ins-use00002", 0);
        silent.since = None;
        silent.last_report = None;
        let a = answer(vec![covered("ins-use00001", NOW - 45 * DAY), silent]);
        let u = unused_rules(&fleet, &[a], DEFAULT_WINDOW, 0);
        assert!(u.findings.is_empty());
        assert!(u.unjudged[0].reason.contains("never reported"));
        // One stopped reporting an hour ago.
        let mut stale = covered("ins-use00002", NOW - 45 * DAY);
        stale.last_report = Some(NOW - 3600);
        let a = answer(vec![covered("ins-use00001", NOW - 45 * DAY), stale]);
        let u = unused_rules(&fleet, &[a], DEFAULT_WINDOW, 0);
        assert!(u.findings.is_empty());
        assert_eq!(
            u.unjudged[0].reason,
            "ins-use00002 has not reported hits for 1h"
        );
        // A group bound to no instance is not judged at all.
        let u = unused_rules(&fleet, &[answer(vec![])], DEFAULT_WINDOW, 0);
        assert_eq!(u, Usage::default());
        // A rule the fleet does not have (the group changed between the
        // two reads) is passed over.
        let mut a = answer(vec![covered("ins-use00001", NOW - 45 * DAY)]);
        a.rule_hit_set = vec![hit("ingress", 7, 0, None, Some(NOW - 90 * DAY))];
        assert_eq!(
            unused_rules(&fleet, &[a], DEFAULT_WINDOW, 0),
            Usage::default()
        );
    }

    #[test]
    fn spans_read_as_the_largest_exact_unit() {
        assert_eq!(span(30 * DAY), "30d");
        assert_eq!(span(36 * 3600), "36h");
        assert_eq!(span(90 * 60), "90m");
        assert_eq!(span(45), "45s");
        assert_eq!(span(40 * DAY + 17), "40d");
    }
}
