//! Palisade's own service (`palisade`, version `2026-11-01`, DESIGN.md
//! section 4) as typed values: what an agent asks and reports, and what the
//! server answers. The server encodes these types and the agent decodes the
//! same ones, so the two sides cannot drift apart field by field.
//!
//! A resolved rule crosses the wire as the `policy` crate's
//! [`ResolvedRule`], the type its resolver returns: the server sends what
//! `resolve` gave it, and the agent compiles what it receives, with no
//! translation on either side (`palisade nft compile --fleet` compiles the
//! same type from a fleet file). Unknown fields are ignored on decoding, so
//! a newer server may add some without breaking older agents.

use palisade_policy::resolve::{ResolvedRule, Ruleset};
use palisade_policy::Failsafe;
use serde::{Deserialize, Serialize};

/// The service name in the credential scope.
pub const SERVICE: &str = "palisade";
/// The API version of the service.
pub const VERSION: &str = "2026-11-01";

/// The most `Counters` one `ReportInstanceStatus` may carry.
pub const MAX_COUNTERS: usize = 20_000;
/// The most `Errors` one `ReportInstanceStatus` may carry.
pub const MAX_ERRORS: usize = 100;
/// The longest message of `Errors`, in characters.
pub const MAX_ERROR_CHARS: usize = 2_000;

/// `DescribeInstanceRuleset` parameters: the instance, and for a long poll
/// the revision (or digest) the caller holds and how long to wait for a
/// newer one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RulesetRequest {
    /// The instance (`ins-...`).
    pub instance_id: String,
    /// Answer once the account's revision passes this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_revision: Option<u64>,
    /// The longest wait for that, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    /// The `Digest` of the answer the caller holds: `Changed` is then
    /// exactly whether the content differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_digest: Option<String>,
}

/// The `Ruleset` of a `DescribeInstanceRuleset` answer: the instance's
/// resolved rules of each direction, in first-match order, at a store
/// revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceRuleset {
    /// The instance.
    pub instance_id: String,
    /// The store revision the rules were computed at.
    pub revision: u64,
    /// The instance's groups, in binding order.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// The instance's private IPs as registered.
    #[serde(default)]
    pub private_ip_addresses: Vec<String>,
    /// Ingress rules, highest priority first; one entry per rule.
    #[serde(default)]
    pub ingress: Vec<ResolvedRule>,
    /// Egress rules, highest priority first.
    #[serde(default)]
    pub egress: Vec<ResolvedRule>,
    /// `ENFORCE`, or `AUDIT`: drops become counted, recorded passes.
    /// Absent (an older server) is `ENFORCE`.
    #[serde(default)]
    pub enforcement: palisade_model::flow::Enforcement,
    /// The server's digest of this answer's content: equal digests mean
    /// equal content, whatever the revisions.
    #[serde(default)]
    pub digest: Option<String>,
    /// False when a long poll ended without anything newer than the caller
    /// holds.
    #[serde(default = "yes")]
    pub changed: bool,
}

fn yes() -> bool {
    true
}

impl InstanceRuleset {
    /// The rules as the resolver's [`Ruleset`], what the agent compiles;
    /// an id in `SecurityGroupIds` that does not parse is the error.
    pub fn into_ruleset(self) -> Result<Ruleset, String> {
        let security_groups = self
            .security_group_ids
            .iter()
            .map(|g| g.parse().map_err(|e| format!("SecurityGroupIds: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Ruleset {
            security_groups,
            ingress: self.ingress,
            egress: self.egress,
        })
    }
}

/// `ReportInstanceStatus` parameters: the revision whose rules the kernel
/// holds, per-rule counters, and errors since the last success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InstanceStatus {
    /// The instance.
    pub instance_id: String,
    /// The revision whose rules the kernel holds.
    pub applied_revision: u64,
    /// Errors since the last success (empty when healthy); at most
    /// [`MAX_ERRORS`] of at most [`MAX_ERROR_CHARS`] characters.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Per-rule counters; at most [`MAX_COUNTERS`].
    #[serde(default)]
    pub counters: Vec<RuleCounter>,
    /// The node's failsafe entries (`palisade agent --failsafe`), as the
    /// agent enforces them; at most
    /// [`palisade_policy::failsafe::MAX_FAILSAFE`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failsafe: Vec<Failsafe>,
}

impl InstanceStatus {
    /// The status cut to what the server takes: the first [`MAX_ERRORS`]
    /// errors, each to [`MAX_ERROR_CHARS`] characters.
    pub fn bounded(&self) -> Self {
        Self {
            errors: self
                .errors
                .iter()
                .take(MAX_ERRORS)
                .map(|e| e.chars().take(MAX_ERROR_CHARS).collect())
                .collect(),
            ..self.clone()
        }
    }
}

/// One rule's kernel counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RuleCounter {
    /// The rule's group.
    pub security_group_id: String,
    /// `ingress` or `egress` (any case on input).
    pub direction: String,
    /// Its `PolicyIndex`.
    pub policy_index: u64,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Seconds without a counter report after which an instance's hit coverage
/// starts again: a silence may hide a table reload whose counts never
/// reached the server. Agents report every few seconds.
pub const HIT_COVERAGE_GAP: u64 = 600;

/// `DescribeRuleHits` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RuleHitsRequest {
    /// The group (`sg-...`).
    pub security_group_id: String,
}

/// `DescribeRuleHits` answer: each rule of the group in order with its
/// hits, and how far back every instance bound to the group has reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleHitsAnswer {
    /// The group.
    pub security_group_id: String,
    /// One entry per rule, ingress first, each list in order.
    #[serde(default)]
    pub rule_hit_set: Vec<RuleHit>,
    /// One entry per instance bound to the group, in registration order.
    #[serde(default)]
    pub instance_coverage_set: Vec<InstanceHitCoverage>,
    /// The server's clock when it answered, Unix seconds (absent from an
    /// older server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<u64>,
}

/// One rule's hits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleHit {
    /// `ingress` or `egress`.
    pub direction: String,
    /// The rule's `PolicyIndex`.
    pub policy_index: u64,
    /// Decisions summed over every instance applying the rule, since `Since`.
    pub hits: u64,
    /// The last report that saw the rule decide, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// Since when this rule (unchanged) has been counted, Unix seconds;
    /// absent when no agent has reported it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// How far back an instance's counters are known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceHitCoverage {
    /// The instance.
    pub instance_id: String,
    /// The first report of its agent's unbroken run of reports (no silence
    /// over [`HIT_COVERAGE_GAP`]), Unix seconds; absent when it never reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Its latest report, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ruleset_answer_round_trips_and_tolerates_what_it_must() -> Result<(), String> {
        let text = r#"{"InstanceId":"ins-1","Revision":7,"SecurityGroupIds":["sg-abcdefgh"],
          "Ingress":[{"security_group_id":"sg-abcdefgh","direction":"ingress","policy_index":0,
            "action":"ACCEPT","policy":{"Protocol":"TCP","Port":"22","CidrBlock":"198.51.100.0/24","Action":"ACCEPT"},
            "services":[{"protocol":6,"ports":"22"}],"peers":["198.51.100.0/24"]}],
          "SomethingNewer": 1}"#;
        let answer: InstanceRuleset = serde_json::from_str(text).map_err(|e| e.to_string())?;
        assert!(answer.changed, "absent Changed means changed");
        assert_eq!(answer.digest, None);
        assert!(answer.egress.is_empty());
        assert_eq!(answer.ingress[0].origin().policy_index, 0);
        let ruleset = answer.clone().into_ruleset()?;
        assert_eq!(ruleset.security_groups[0].as_str(), "sg-abcdefgh");
        assert_eq!(ruleset.ingress, answer.ingress);
        let again: InstanceRuleset =
            serde_json::from_value(serde_json::to_value(&answer).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        assert_eq!(again, answer);
        // A rule that does not parse fails the whole answer.
        let bad = text.replace("\"ports\":\"22\"", "\"ports\":\"x\"");
        assert!(serde_json::from_str::<InstanceRuleset>(&bad).is_err());
        Ok(())
    }

    #[test]
    fn a_status_report_is_bounded_and_refuses_unknown_fields() {
        let status = InstanceStatus {
            instance_id: "ins-1".into(),
            applied_revision: 3,
            errors: vec!["e".repeat(MAX_ERROR_CHARS + 5); MAX_ERRORS + 1],
            counters: vec![RuleCounter::default()],
            failsafe: Vec::new(),
        };
        let b = status.bounded();
        assert_eq!(b.errors.len(), MAX_ERRORS);
        assert!(b
            .errors
            .iter()
            .all(|e| e.chars().count() == MAX_ERROR_CHARS));
        let v = serde_json::to_value(&b).unwrap_or_default();
        assert_eq!(v["AppliedRevision"], 3);
        assert_eq!(v["Counters"][0]["PolicyIndex"], 0);
        let extra = serde_json::json!({"SecurityGroupId": "sg-1", "Direction": "ingress",
            "PolicyIndex": 0, "Packets": 0, "Bytes": 0, "Extra": 1});
        assert!(serde_json::from_value::<RuleCounter>(extra).is_err());
    }
}
