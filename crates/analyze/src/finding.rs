//! Findings: what `palisade check` reports. Every finding has a stable id
//! ([`CheckId`]), a severity, a message saying what is wrong and how to fix
//! it, where it is (cluster, instance, group, rule, and the line in the
//! fleet file), and, when it is about traffic, a witness packet.
//!
//! JSON: `{"id": "EXP001", "severity": "error", "message": "...",
//! "location": {"cluster", "instance", "group", "rule", "path", "line"},
//! "witness": {"direction", "protocol", "peer", "port"} | null}`.

use palisade_policy::{Packet, RuleOrigin};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing breaks.
    Info,
    /// Probably wrong, or against the seed's advice.
    Warning,
    /// Breaks the cluster or exposes it.
    Error,
}

impl Severity {
    /// `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// The SARIF `level`: `note`, `warning` or `error`.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Info => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! check_ids {
    ($($(#[$doc:meta])* $v:ident = $s:literal, $sev:ident, $name:literal, $title:literal;)*) => {
        /// The stable id of a kind of finding; `docs/checks.md` documents each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum CheckId {
            $($(#[$doc])* $v,)*
        }

        impl CheckId {
            /// Every id, in documentation order.
            pub const ALL: &'static [CheckId] = &[$(CheckId::$v,)*];

            /// The id as printed: `TKE001`.
            pub fn as_str(self) -> &'static str {
                match self { $(CheckId::$v => $s,)* }
            }

            /// The severity every finding of this id has.
            pub fn severity(self) -> Severity {
                match self { $(CheckId::$v => Severity::$sev,)* }
            }

            /// A short name in PascalCase (SARIF `name`).
            pub fn name(self) -> &'static str {
                match self { $(CheckId::$v => $name,)* }
            }

            /// One sentence saying what the finding means.
            pub fn title(self) -> &'static str {
                match self { $(CheckId::$v => $title,)* }
            }

            /// Parses `TKE001` (case-insensitively).
            pub fn parse(s: &str) -> Option<CheckId> {
                CheckId::ALL.iter().copied().find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
            }
        }
    };
}

check_ids! {
    /// A node does not accept everything from the container CIDR.
    Tke001 = "TKE001", Error, "NodeRejectsPodNetwork", "A cluster node does not accept all protocols and ports from the cluster's container CIDR (pod traffic forwarded across nodes).";
    /// A node does not accept everything from the cluster CIDR.
    Tke002 = "TKE002", Error, "NodeRejectsNodeNetwork", "A cluster node does not accept all traffic from the cluster CIDR (node to node).";
    /// A node does not accept TCP NodePorts from the load balancer sources.
    Tke003 = "TKE003", Warning, "NodePortTcpClosed", "A cluster node does not accept TCP 30000-32768 from 0.0.0.0/0 (or the cluster's nodeport_sources).";
    /// A node does not accept UDP NodePorts from the load balancer sources.
    Tke004 = "TKE004", Warning, "NodePortUdpClosed", "A cluster node does not accept UDP 30000-32768 from 0.0.0.0/0 (or the cluster's nodeport_sources).";
    /// The nodes share no group.
    Tke005 = "TKE005", Warning, "NodesWithoutCommonGroup", "The nodes of a cluster are not all bound to one common security group.";
    /// A non-cluster instance shares a node group.
    Tke006 = "TKE006", Warning, "ForeignInstanceInNodeGroup", "An instance that is not in the cluster is bound to a security group that a cluster node uses.";
    /// A node's egress blocks the cluster.
    Tke007 = "TKE007", Error, "NodeEgressBlocksCluster", "A node's egress does not allow the cluster CIDR and the container CIDR.";
    /// A master lacks a port of the seed's master table.
    Tke008 = "TKE008", Error, "MasterPortsMissing", "A master of the cluster lacks a port of the seed's master table from the CIDR the seed names.";
    /// Peer clusters do not accept each other.
    Tke009 = "TKE009", Error, "PeerClustersIsolated", "Two clusters declared as peers do not accept each other's container and cluster CIDRs.";
    /// SSH sources declared but SSH closed.
    Tke010 = "TKE010", Warning, "SshSourcesRejected", "The cluster declares ssh_sources and a node does not accept TCP 22 from them.";
    /// A sensitive port is open to the Internet.
    Exp001 = "EXP001", Error, "SensitivePortExposed", "A sensitive port is reachable on an instance from 0.0.0.0/0 or ::/0, after order and DROP rules.";
    /// Every TCP or UDP port is open to the Internet.
    Exp002 = "EXP002", Error, "AllPortsExposed", "All ports of TCP or UDP are reachable on an instance from 0.0.0.0/0 or ::/0.";
    /// A rule is shadowed by rules with the other action.
    Ano001 = "ANO001", Warning, "ShadowedRule", "A rule can never match: earlier rules cover it, and some with the other action (shadowed).";
    /// A rule is covered by rules with its own action.
    Ano002 = "ANO002", Info, "RedundantRule", "A rule can never match: earlier rules with the same action cover it (redundant, safe to remove).";
    /// A rule partly overlaps an earlier rule with the other action.
    Ano003 = "ANO003", Info, "CorrelatedRule", "A rule partly overlaps an earlier rule with the other action (correlated).";
    /// A rule whose protocol cannot occur with its peer's address family.
    Ano004 = "ANO004", Warning, "ImpossibleRule", "A rule can never match: its protocol exists in one address family and its peer is of the other (ICMP with an IPv6 peer, ICMPv6 with an IPv4 peer).";
    /// A reference to something empty.
    Ref001 = "REF001", Warning, "EmptyReference", "A rule references a group with no instances bound or an empty template.";
    /// A reference to something missing.
    Ref002 = "REF002", Error, "MissingReference", "A reference to a group, template, instance or cluster that does not exist.";
    /// A limit is exceeded.
    Lim001 = "LIM001", Error, "LimitExceeded", "A limit is exceeded (rules per direction, groups per instance, references per group, instances per group, rules after template expansion).";
    /// A rule decided nothing over the window (from a server's hits).
    Use001 = "USE001", Info, "UnusedRule", "A rule decided no packet over the window (default 30 days) on any instance applying it, and every such instance reported hits throughout (check --server only).";
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CheckId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown check id {s:?}")))
    }
}

/// Where a finding is: as much of cluster, instance, group and rule as
/// applies, and the place in the fleet file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The cluster (`cls-...`).
    pub cluster: Option<String>,
    /// The instance (`ins-...`).
    pub instance: Option<String>,
    /// The security group (`sg-...`).
    pub group: Option<String>,
    /// The rule: group, direction, `PolicyIndex`.
    pub rule: Option<RuleOrigin>,
    /// The path in the fleet file, e.g. `security_groups[2].policies.Ingress[0]`.
    pub path: Option<String>,
    /// The 1-based line of `path` in the fleet file.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    /// `line 12: cls-demo0001 ins-node0001 sg-ops00001 Ingress[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(l) = self.line {
            parts.push(format!("line {l}:"));
        }
        if let Some(c) = &self.cluster {
            parts.push(c.clone());
        }
        if let Some(i) = &self.instance {
            parts.push(i.clone());
        }
        match (&self.rule, &self.group) {
            (Some(r), _) => parts.push(r.to_string()),
            (None, Some(g)) => parts.push(g.clone()),
            (None, None) => {}
        }
        f.write_str(&parts.join(" "))
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The stable id.
    pub id: CheckId,
    /// The id's severity.
    pub severity: Severity,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Where.
    pub location: Location,
    /// A packet showing the problem, when it is about traffic.
    pub witness: Option<Packet>,
}

impl Finding {
    /// A finding of `id` (its severity is the id's).
    pub fn new(id: CheckId, message: impl Into<String>, location: Location) -> Finding {
        Finding {
            id,
            severity: id.severity(),
            message: message.into(),
            location,
            witness: None,
        }
    }

    /// The same finding with a witness packet.
    pub fn with_witness(mut self, witness: Option<Packet>) -> Finding {
        self.witness = witness;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_parse_back_and_have_severities() {
        let mut seen = std::collections::HashSet::new();
        for id in CheckId::ALL {
            assert!(seen.insert(id.as_str()));
            assert_eq!(CheckId::parse(id.as_str()), Some(*id));
            assert_eq!(
                serde_json::to_value(id).ok(),
                Some(serde_json::json!(id.as_str()))
            );
        }
        assert_eq!(CheckId::ALL.len(), 20);
        assert_eq!(CheckId::Exp001.severity(), Severity::Error);
        assert_eq!(CheckId::Ano002.severity(), Severity::Info);
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
    }
}
