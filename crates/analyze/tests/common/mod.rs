//! Fleets for the tests: a well-formed TKE cluster built from the seed's
//! templates, and a small builder for near-identical variants.

#![allow(dead_code)]

use palisade_analyze::{check_text, CheckId, CheckOptions, Finding, Report};

pub const CLUSTER_CIDR: &str = "10.0.0.0/16";
pub const CONTAINER_CIDR: &str = "172.16.0.0/16";

/// The seed's node table for the test cluster, row by row.
pub fn node_rules() -> Vec<String> {
    vec![
        rule("ALL", "ALL", CONTAINER_CIDR, "ACCEPT"),
        rule("ALL", "ALL", CLUSTER_CIDR, "ACCEPT"),
        rule("TCP", "30000-32768", "0.0.0.0/0", "ACCEPT"),
        rule("UDP", "30000-32768", "0.0.0.0/0", "ACCEPT"),
        rule("ICMP", "ALL", "0.0.0.0/0", "ACCEPT"),
    ]
}

/// The seed's master table for the test cluster.
pub fn master_rules() -> Vec<String> {
    let (cl, co) = (CLUSTER_CIDR, CONTAINER_CIDR);
    vec![
        rule("ICMP", "ALL", "0.0.0.0/0", "ACCEPT"),
        rule("TCP", "30000-32768", cl, "ACCEPT"),
        rule("UDP", "30000-32768", cl, "ACCEPT"),
        rule(
            "TCP",
            "60001,60002,10250,2380,2379,53,17443,50055,443,61678",
            cl,
            "ACCEPT",
        ),
        rule("TCP", "60001,60002,10250,2380,2379,53,17443", co, "ACCEPT"),
        rule("TCP", "30000-32768", co, "ACCEPT"),
        rule("UDP", "30000-32768", co, "ACCEPT"),
        rule("UDP", "53", co, "ACCEPT"),
        rule("UDP", "53", cl, "ACCEPT"),
    ]
}

pub fn egress_all() -> Vec<String> {
    vec![rule("ALL", "ALL", "0.0.0.0/0", "ACCEPT")]
}

/// A rule in flow YAML; a peer starting with `sg-` is a group reference,
/// with `ipm-` an address template, with `::` or containing `:` IPv6.
pub fn rule(protocol: &str, port: &str, peer: &str, action: &str) -> String {
    let peer = if peer.starts_with("sg-") {
        format!("SecurityGroupId: {peer}")
    } else if peer.starts_with("ipmg-") {
        format!("AddressTemplate: {{AddressGroupId: {peer}}}")
    } else if peer.starts_with("ipm-") {
        format!("AddressTemplate: {{AddressId: {peer}}}")
    } else if peer.contains(':') {
        format!("Ipv6CidrBlock: \"{peer}\"")
    } else {
        format!("CidrBlock: {peer}")
    };
    let service = if protocol.starts_with("ppm-") {
        format!("ServiceTemplate: {{ServiceId: {protocol}}}")
    } else {
        format!("Protocol: {protocol}, Port: \"{port}\"")
    };
    format!("{{{service}, {peer}, Action: {action}}}")
}

/// A fleet being built.
#[derive(Clone)]
pub struct Fx {
    pub groups: Vec<(String, Vec<String>, Vec<String>)>,
    pub instances: Vec<(String, Vec<String>, Vec<String>)>,
    pub clusters: Vec<String>,
    pub extra: String,
}

impl Fx {
    /// The well-formed cluster: two nodes bound to the seed's node group, a
    /// master bound to the seed's master group.
    pub fn cluster() -> Fx {
        Fx {
            groups: vec![
                ("sg-node0001".into(), node_rules(), egress_all()),
                ("sg-mastr001".into(), master_rules(), egress_all()),
            ],
            instances: vec![
                ("ins-node0001".into(), vec!["10.0.0.11".into()], vec!["sg-node0001".into()]),
                ("ins-node0002".into(), vec!["10.0.0.12".into()], vec!["sg-node0001".into()]),
                ("ins-mastr001".into(), vec!["10.0.0.2".into()], vec!["sg-mastr001".into()]),
            ],
            clusters: vec![format!(
                "{{id: cls-demo0001, cluster_cidr: {CLUSTER_CIDR}, container_cidr: {CONTAINER_CIDR}, nodes: [ins-node0001, ins-node0002], masters: [ins-mastr001]}}"
            )],
            extra: String::new(),
        }
    }

    /// No cluster: just groups and instances.
    pub fn empty() -> Fx {
        Fx {
            groups: Vec::new(),
            instances: Vec::new(),
            clusters: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn group(mut self, id: &str, ingress: Vec<String>, egress: Vec<String>) -> Fx {
        self.groups.retain(|g| g.0 != id);
        self.groups.push((id.into(), ingress, egress));
        self
    }

    pub fn instance(mut self, id: &str, ip: &str, groups: &[&str]) -> Fx {
        self.instances.retain(|g| g.0 != id);
        self.instances.push((
            id.into(),
            vec![ip.into()],
            groups.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    pub fn with_cluster(mut self, yaml_flow: &str) -> Fx {
        self.clusters.push(yaml_flow.into());
        self
    }

    pub fn set_cluster(mut self, i: usize, yaml_flow: &str) -> Fx {
        self.clusters[i] = yaml_flow.into();
        self
    }

    pub fn extra(mut self, yaml: &str) -> Fx {
        self.extra.push_str(yaml);
        self
    }

    pub fn yaml(&self) -> String {
        let mut s = String::from("security_groups:\n");
        for (id, ing, eg) in &self.groups {
            s.push_str(&format!("  - id: {id}\n    policies:\n      Ingress:\n"));
            if ing.is_empty() {
                s.push_str("        []\n");
            }
            for r in ing {
                s.push_str(&format!("        - {r}\n"));
            }
            s.push_str("      Egress:\n");
            if eg.is_empty() {
                s.push_str("        []\n");
            }
            for r in eg {
                s.push_str(&format!("        - {r}\n"));
            }
        }
        s.push_str("instances:\n");
        if self.instances.is_empty() {
            s.push_str("  []\n");
        }
        for (id, ips, groups) in &self.instances {
            s.push_str(&format!(
                "  - {{id: {id}, private_ips: [{}], security_groups: [{}]}}\n",
                ips.join(", "),
                groups.join(", ")
            ));
        }
        if !self.clusters.is_empty() {
            s.push_str("clusters:\n");
            for c in &self.clusters {
                s.push_str(&format!("  - {c}\n"));
            }
        }
        s.push_str(&self.extra);
        s
    }

    pub fn check(&self) -> Report {
        let text = self.yaml();
        check_text(&text, &CheckOptions::default())
            .unwrap_or_else(|e| panic!("check failed: {e}\n{text}"))
    }

    /// The findings with `id`.
    pub fn findings(&self, id: CheckId) -> Vec<Finding> {
        self.check()
            .findings
            .into_iter()
            .filter(|f| f.id == id)
            .collect()
    }
}

/// Asserts that `on` raises `id` and `off` does not; returns `on`'s findings of `id`.
pub fn triggers(id: CheckId, on: &Fx, off: &Fx) -> Vec<Finding> {
    let got = on.findings(id);
    assert!(
        !got.is_empty(),
        "{id} not raised; findings: {:#?}\n{}",
        on.check().findings,
        on.yaml()
    );
    let none = off.findings(id);
    assert!(
        none.is_empty(),
        "{id} raised on the near-identical fleet: {none:#?}\n{}",
        off.yaml()
    );
    for f in &got {
        assert_eq!(f.severity, id.severity());
        assert!(!f.message.is_empty());
        assert!(
            f.message.contains("Fix") || f.message.contains("fix") || f.id == CheckId::Ref002,
            "{}",
            f.message
        );
    }
    got
}
