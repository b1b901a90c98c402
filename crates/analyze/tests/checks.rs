//! Every finding id: a fleet that triggers it and a near-identical fleet
//! that does not. The base fleet is a well-formed TKE cluster bound to the
//! seed's node and master groups, which gives no finding at all.

mod common;

use common::*;
use palisade_analyze::{check_text, CheckId, CheckOptions, Severity};

const ANY: &str = "0.0.0.0/0";

fn nodes_with(ingress: Vec<String>) -> Fx {
    Fx::cluster().group("sg-node0001", ingress, egress_all())
}

/// The node rules with row `i` replaced.
fn node_row(i: usize, r: String) -> Vec<String> {
    let mut v = node_rules();
    v[i] = r;
    v
}

#[test]
fn seed_templates_on_a_well_formed_cluster_give_no_error() {
    let report = Fx::cluster().check();
    assert!(
        report.findings.iter().all(|f| f.severity < Severity::Error),
        "{:#?}",
        report.findings
    );
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[test]
fn seed_templates_built_by_the_tke_crate_give_no_error() {
    // The groups exactly as `palisade tke template` builds them.
    let nets = palisade_tke::ClusterNetworks::parse(CLUSTER_CIDR, CONTAINER_CIDR).unwrap();
    let node = palisade_tke::node_template(&nets).unwrap().to_wire();
    let master = palisade_tke::master_template(&nets).unwrap().to_wire();
    let yaml = Fx::cluster().yaml();
    let rest = &yaml[yaml.find("instances:").unwrap()..];
    let text = format!(
        "security_groups:\n  - id: sg-node0001\n    policies: {}\n  - id: sg-mastr001\n    policies: {}\n{}",
        serde_json::to_string(&node).unwrap(),
        serde_json::to_string(&master).unwrap(),
        rest
    );
    let report = check_text(&text, &CheckOptions::default()).unwrap();
    assert!(
        report.findings.iter().all(|f| f.severity < Severity::Error),
        "{:#?}",
        report.findings
    );
}

#[test]
fn tke001_node_must_accept_the_container_cidr() {
    let on = nodes_with(node_row(0, rule("ALL", "ALL", "172.16.0.0/17", "ACCEPT")));
    let got = triggers(CheckId::Tke001, &on, &Fx::cluster());
    assert_eq!(got.len(), 2, "one per node");
    let w = got[0].witness.unwrap();
    assert_eq!(w.peer.to_string(), "172.16.128.1");
    assert_eq!(got[0].location.cluster.as_deref(), Some("cls-demo0001"));
    assert_eq!(got[0].location.instance.as_deref(), Some("ins-node0001"));
    assert!(got[0].location.line.is_some());
    // A DROP above the ACCEPT breaks it too, and the finding points at the DROP.
    let mut drop_first = node_rules();
    drop_first.insert(0, rule("UDP", "53", "172.16.5.0/24", "DROP"));
    let got = triggers(CheckId::Tke001, &nodes_with(drop_first), &Fx::cluster());
    let r = got[0].location.rule.as_ref().unwrap();
    assert_eq!(r.policy_index, 0);
    assert_eq!(got[0].witness.unwrap().protocol, 17);
}

#[test]
fn tke002_node_must_accept_the_cluster_cidr() {
    let on = nodes_with(node_row(1, rule("ALL", "ALL", "10.0.0.0/24", "ACCEPT")));
    triggers(CheckId::Tke002, &on, &Fx::cluster());
}

#[test]
fn tke003_and_tke004_nodeports_from_the_internet_or_nodeport_sources() {
    let on = nodes_with(node_row(2, rule("TCP", "30000-32000", ANY, "ACCEPT")));
    let got = triggers(CheckId::Tke003, &on, &Fx::cluster());
    assert_eq!(got[0].witness.unwrap().port, Some(32001));
    let on = nodes_with(node_row(
        3,
        rule("UDP", "30000-32768", "10.0.0.0/8", "ACCEPT"),
    ));
    triggers(CheckId::Tke004, &on, &Fx::cluster());
    // With nodeport_sources, only those must be allowed.
    let lb = format!("{{id: cls-demo0001, cluster_cidr: {CLUSTER_CIDR}, container_cidr: {CONTAINER_CIDR}, nodes: [ins-node0001, ins-node0002], masters: [ins-mastr001], nodeport_sources: [198.51.100.0/24]}}");
    let mut only_lb = node_rules();
    only_lb[2] = rule("TCP", "30000-32768", "198.51.100.0/24", "ACCEPT");
    only_lb[3] = rule("UDP", "30000-32768", "198.51.100.0/24", "ACCEPT");
    let off = nodes_with(only_lb.clone()).set_cluster(0, &lb);
    let mut wrong_lb = only_lb;
    wrong_lb[2] = rule("TCP", "30000-32768", "198.51.101.0/24", "ACCEPT");
    let on = nodes_with(wrong_lb).set_cluster(0, &lb);
    triggers(CheckId::Tke003, &on, &off);
    assert!(off.findings(CheckId::Tke004).is_empty());
}

#[test]
fn tke005_nodes_share_one_group() {
    let on = Fx::cluster()
        .group("sg-node0002", node_rules(), egress_all())
        .instance("ins-node0002", "10.0.0.12", &["sg-node0002"]);
    let off = Fx::cluster()
        .group("sg-node0002", node_rules(), egress_all())
        .instance("ins-node0002", "10.0.0.12", &["sg-node0002", "sg-node0001"]);
    triggers(CheckId::Tke005, &on, &off);
}

#[test]
fn tke006_no_foreign_instance_in_a_node_group() {
    let on = Fx::cluster().instance("ins-other001", "10.9.0.1", &["sg-node0001"]);
    let off = Fx::cluster()
        .group("sg-other001", vec![], egress_all())
        .instance("ins-other001", "10.9.0.1", &["sg-other001"]);
    let got = triggers(CheckId::Tke006, &on, &off);
    assert_eq!(got[0].location.instance.as_deref(), Some("ins-other001"));
    assert_eq!(got[0].location.group.as_deref(), Some("sg-node0001"));
}

#[test]
fn tke007_node_egress_reaches_the_cluster() {
    let on = Fx::cluster().group(
        "sg-node0001",
        node_rules(),
        vec![rule("TCP", "443", ANY, "ACCEPT")],
    );
    let off = Fx::cluster().group(
        "sg-node0001",
        node_rules(),
        vec![
            rule("ALL", "ALL", CLUSTER_CIDR, "ACCEPT"),
            rule("ALL", "ALL", CONTAINER_CIDR, "ACCEPT"),
        ],
    );
    let got = triggers(CheckId::Tke007, &on, &off);
    assert_eq!(
        got[0].witness.unwrap().direction,
        palisade_model::Direction::Egress
    );
}

#[test]
fn tke008_master_has_every_port_of_the_seeds_table() {
    let mut rows = master_rules();
    rows[3] = rule(
        "TCP",
        "60001,60002,10250,2380,53,17443,50055,443,61678",
        CLUSTER_CIDR,
        "ACCEPT",
    );
    let on = Fx::cluster().group("sg-mastr001", rows, egress_all());
    let got = triggers(CheckId::Tke008, &on, &Fx::cluster());
    assert!(
        got[0].message.contains("TCP 2379 from 10.0.0.0/16"),
        "{}",
        got[0].message
    );
    assert_eq!(got[0].witness.unwrap().port, Some(2379));
}

#[test]
fn tke009_peer_clusters_accept_each_other() {
    let peer = "{id: cls-peer0001, cluster_cidr: 10.1.0.0/16, container_cidr: 172.17.0.0/16, nodes: [ins-peer0001], peers: [cls-demo0001]}";
    let peer_rules = vec![
        rule("ALL", "ALL", "172.17.0.0/16", "ACCEPT"),
        rule("ALL", "ALL", "10.1.0.0/16", "ACCEPT"),
        rule("TCP", "30000-32768", ANY, "ACCEPT"),
        rule("UDP", "30000-32768", ANY, "ACCEPT"),
    ];
    let base = |peer_ingress: Vec<String>, node_ingress: Vec<String>| {
        Fx::cluster()
            .group("sg-node0001", node_ingress, egress_all())
            .group("sg-peer0001", peer_ingress, egress_all())
            .instance("ins-peer0001", "10.1.0.11", &["sg-peer0001"])
            .with_cluster(peer)
    };
    let mut node_ok = node_rules();
    node_ok.push(rule("ALL", "ALL", "172.17.0.0/16", "ACCEPT"));
    node_ok.push(rule("ALL", "ALL", "10.1.0.0/16", "ACCEPT"));
    let mut peer_ok = peer_rules.clone();
    peer_ok.push(rule("ALL", "ALL", CONTAINER_CIDR, "ACCEPT"));
    peer_ok.push(rule("ALL", "ALL", CLUSTER_CIDR, "ACCEPT"));
    let on = base(peer_rules, node_ok.clone());
    let off = base(peer_ok, node_ok);
    let got = triggers(CheckId::Tke009, &on, &off);
    assert!(got
        .iter()
        .all(|f| f.location.instance.as_deref() == Some("ins-peer0001")));
}

#[test]
fn tke010_ssh_sources_reach_port_22() {
    let ssh = format!("{{id: cls-demo0001, cluster_cidr: {CLUSTER_CIDR}, container_cidr: {CONTAINER_CIDR}, nodes: [ins-node0001, ins-node0002], masters: [ins-mastr001], ssh_sources: [203.0.113.0/24]}}");
    let on = Fx::cluster().set_cluster(0, &ssh);
    let mut with_ssh = node_rules();
    with_ssh.push(rule("TCP", "22", "203.0.113.0/24", "ACCEPT"));
    let off = nodes_with(with_ssh).set_cluster(0, &ssh);
    triggers(CheckId::Tke010, &on, &off);
}

fn web(ingress: Vec<String>) -> Fx {
    Fx::empty()
        .group("sg-web00001", ingress, egress_all())
        .instance("ins-web00001", "10.2.0.5", &["sg-web00001"])
}

#[test]
fn exp001_is_order_and_drop_aware() {
    let open = web(vec![rule("TCP", "22", ANY, "ACCEPT")]);
    let dropped_above = web(vec![
        rule("TCP", "22", ANY, "DROP"),
        rule("TCP", "22", ANY, "ACCEPT"),
    ]);
    let got = triggers(CheckId::Exp001, &open, &dropped_above);
    let w = got[0].witness.unwrap();
    assert_eq!((w.protocol, w.port), (6, Some(22)));
    assert_eq!(got[0].location.rule.as_ref().unwrap().policy_index, 0);
    // A DROP below the ACCEPT does not help; one for a few ranges above does not hide it.
    let below = web(vec![
        rule("TCP", "22", ANY, "ACCEPT"),
        rule("TCP", "22", ANY, "DROP"),
    ]);
    assert!(!below.findings(CheckId::Exp001).is_empty());
    let partial = web(vec![
        rule("TCP", "22", "1.0.0.0/8", "DROP"),
        rule("TCP", "22", ANY, "ACCEPT"),
    ]);
    let got = partial.findings(CheckId::Exp001);
    assert!(!got.is_empty());
    assert_eq!(got[0].witness.unwrap().peer.to_string(), "2.0.0.1");
    // An allow-list is not "from 0.0.0.0/0"; IPv6 counts too; so does a group across two.
    assert!(web(vec![rule("TCP", "22", "203.0.113.0/24", "ACCEPT")])
        .findings(CheckId::Exp001)
        .is_empty());
    assert!(!web(vec![rule("TCP", "2379", "::/0", "ACCEPT")])
        .findings(CheckId::Exp001)
        .is_empty());
    let across = Fx::empty()
        .group("sg-drop0001", vec![rule("TCP", "22", ANY, "DROP")], vec![])
        .group(
            "sg-web00001",
            vec![rule("TCP", "ALL", ANY, "ACCEPT")],
            vec![],
        );
    let first =
        across
            .clone()
            .instance("ins-web00001", "10.2.0.5", &["sg-drop0001", "sg-web00001"]);
    let second = across.instance("ins-web00001", "10.2.0.5", &["sg-web00001", "sg-drop0001"]);
    let ssh = |fx: &Fx| {
        fx.findings(CheckId::Exp001)
            .iter()
            .any(|f| f.witness.unwrap().port == Some(22))
    };
    assert!(!ssh(&first), "the DROP group is bound first");
    assert!(ssh(&second), "the ACCEPT group is bound first");
}

#[test]
fn exp001_ports_are_configurable() {
    let fx = web(vec![rule("TCP", "8080", ANY, "ACCEPT")]);
    assert!(fx.findings(CheckId::Exp001).is_empty());
    let opts = CheckOptions {
        sensitive_ports: vec![palisade_analyze::SensitivePort::parse("tcp:8080").unwrap()],
        ..CheckOptions::default()
    };
    let r = check_text(&fx.yaml(), &opts).unwrap();
    assert!(r.findings.iter().any(|f| f.id == CheckId::Exp001));
    assert!(palisade_analyze::SensitivePort::parse("sctp:1").is_err());
    assert!(palisade_analyze::SensitivePort::parse("tcp:0").is_err());
}

#[test]
fn exp002_every_port_open_to_the_internet() {
    let on = web(vec![rule("TCP", "ALL", ANY, "ACCEPT")]);
    let off = web(vec![
        rule("TCP", "40000-40010", ANY, "DROP"),
        rule("TCP", "ALL", ANY, "ACCEPT"),
    ]);
    triggers(CheckId::Exp002, &on, &off);
    let udp = web(vec![rule("ALL", "ALL", ANY, "ACCEPT")]);
    assert_eq!(udp.findings(CheckId::Exp002).len(), 2, "TCP and UDP");
    let split = web(vec![
        rule("TCP", "1-30000", ANY, "ACCEPT"),
        rule("TCP", "30001-65535", ANY, "ACCEPT"),
    ]);
    assert_eq!(split.findings(CheckId::Exp002).len(), 1, "rules together");
}

fn one_group(ingress: Vec<String>) -> Fx {
    Fx::empty().group("sg-app00001", ingress, vec![]).instance(
        "ins-app00001",
        "10.3.0.5",
        &["sg-app00001"],
    )
}

#[test]
fn ano001_shadowed_by_rules_with_the_other_action() {
    let on = one_group(vec![
        rule("TCP", "ALL", "203.0.113.0/24", "DROP"),
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
    ]);
    let off = one_group(vec![
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
        rule("TCP", "ALL", "203.0.113.0/24", "DROP"),
    ]);
    let got = triggers(CheckId::Ano001, &on, &off);
    assert_eq!(got[0].location.rule.as_ref().unwrap().policy_index, 1);
    // Several rules together, one of each action.
    let mixed = one_group(vec![
        rule("TCP", "22", "203.0.113.0/25", "DROP"),
        rule("TCP", "22", "203.0.113.128/25", "ACCEPT"),
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
    ]);
    let got = mixed.findings(CheckId::Ano001);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].location.rule.as_ref().unwrap().policy_index, 2);
}

#[test]
fn ano002_redundant_under_rules_with_the_same_action() {
    let on = one_group(vec![
        rule("TCP", "22", "203.0.113.0/25", "ACCEPT"),
        rule("TCP", "22", "203.0.113.128/25", "ACCEPT"),
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
    ]);
    let off = one_group(vec![
        rule("TCP", "22", "203.0.113.0/25", "ACCEPT"),
        rule("TCP", "22", "203.0.112.0/25", "ACCEPT"),
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
    ]);
    let got = triggers(CheckId::Ano002, &on, &off);
    assert_eq!(got[0].location.rule.as_ref().unwrap().policy_index, 2);
}

#[test]
fn ano003_correlated_with_an_earlier_rule_of_the_other_action() {
    let on = one_group(vec![
        rule("TCP", "22", "203.0.113.0/24", "DROP"),
        rule("TCP", "ALL", "203.0.113.0/24", "ACCEPT"),
    ]);
    let off = one_group(vec![
        rule("TCP", "22", "198.51.100.0/24", "DROP"),
        rule("TCP", "ALL", "203.0.113.0/24", "ACCEPT"),
    ]);
    let got = triggers(CheckId::Ano003, &on, &off);
    assert_eq!(got[0].witness.unwrap().port, Some(22));
}

#[test]
fn anomalies_across_groups_bound_to_one_instance() {
    let groups = Fx::empty()
        .group(
            "sg-deny0001",
            vec![rule("TCP", "ALL", "203.0.113.0/24", "DROP")],
            vec![],
        )
        .group(
            "sg-allow001",
            vec![rule("TCP", "22", "203.0.113.0/24", "ACCEPT")],
            vec![],
        )
        .group(
            "sg-same0001",
            vec![rule("TCP", "22", "203.0.113.0/24", "DROP")],
            vec![],
        );
    let on = groups
        .clone()
        .instance("ins-app00001", "10.3.0.5", &["sg-deny0001", "sg-allow001"]);
    let off = groups
        .clone()
        .instance("ins-app00001", "10.3.0.5", &["sg-allow001", "sg-deny0001"]);
    let got = triggers(CheckId::Ano001, &on, &off);
    assert_eq!(got[0].location.group.as_deref(), Some("sg-allow001"));
    assert_eq!(got[0].location.instance.as_deref(), Some("ins-app00001"));
    let redundant =
        groups
            .clone()
            .instance("ins-app00001", "10.3.0.5", &["sg-deny0001", "sg-same0001"]);
    let got = triggers(CheckId::Ano002, &redundant, &off);
    assert_eq!(got[0].location.group.as_deref(), Some("sg-same0001"));
    let correlated = groups
        .clone()
        .group(
            "sg-wide0001",
            vec![rule("TCP", "ALL", "203.0.0.0/16", "ACCEPT")],
            vec![],
        )
        .instance("ins-app00001", "10.3.0.5", &["sg-deny0001", "sg-wide0001"]);
    let apart = groups
        .clone()
        .group(
            "sg-else0001",
            vec![rule("TCP", "ALL", "198.51.100.0/24", "ACCEPT")],
            vec![],
        )
        .instance("ins-app00001", "10.3.0.5", &["sg-deny0001", "sg-else0001"]);
    let got = triggers(CheckId::Ano003, &correlated, &apart);
    assert_eq!(got[0].location.group.as_deref(), Some("sg-wide0001"));
}

#[test]
fn ref001_empty_group_or_template() {
    let base = Fx::empty()
        .group(
            "sg-app00001",
            vec![rule("TCP", "5432", "sg-db000001", "DROP")],
            vec![],
        )
        .group("sg-db000001", vec![], vec![])
        .instance("ins-app00001", "10.3.0.5", &["sg-app00001"]);
    let off = base
        .clone()
        .instance("ins-db000001", "10.3.0.9", &["sg-db000001"]);
    let got = triggers(CheckId::Ref001, &base, &off);
    assert!(
        got[0].message.contains("protects nothing"),
        "{}",
        got[0].message
    );
    let tmpl = |addrs: &str| {
        Fx::empty()
            .group(
                "sg-app00001",
                vec![rule("TCP", "22", "ipm-admins01", "ACCEPT")],
                vec![],
            )
            .instance("ins-app00001", "10.3.0.5", &["sg-app00001"])
            .extra(&format!(
                "address_templates:\n  - {{id: ipm-admins01, addresses: [{addrs}]}}\n"
            ))
    };
    triggers(CheckId::Ref001, &tmpl(""), &tmpl("203.0.113.0/24"));
}

#[test]
fn ref002_missing_references_are_findings_and_the_rest_is_still_checked() {
    let on = Fx::empty()
        .group(
            "sg-app00001",
            vec![
                rule("TCP", "5432", "sg-nothere1", "ACCEPT"),
                rule("TCP", "22", ANY, "ACCEPT"),
            ],
            vec![],
        )
        .instance("ins-app00001", "10.3.0.5", &["sg-app00001", "sg-gone0001"]);
    let off = Fx::empty()
        .group(
            "sg-app00001",
            vec![
                rule("TCP", "5432", "sg-app00001", "ACCEPT"),
                rule("TCP", "22", ANY, "ACCEPT"),
            ],
            vec![],
        )
        .instance("ins-app00001", "10.3.0.5", &["sg-app00001"]);
    let got = triggers(CheckId::Ref002, &on, &off);
    assert_eq!(got.len(), 2);
    let rule_ref = got.iter().find(|f| f.location.rule.is_some()).unwrap();
    assert_eq!(rule_ref.location.rule.as_ref().unwrap().policy_index, 0);
    assert!(rule_ref.location.line.is_some());
    assert!(got
        .iter()
        .any(|f| f.location.instance.as_deref() == Some("ins-app00001")));
    // The rest of the file is still analysed.
    assert!(!on.findings(CheckId::Exp001).is_empty());
    // The placeholder is not reported as an empty template.
    assert!(on.findings(CheckId::Ref001).is_empty());
}

#[test]
fn lim001_limits_are_findings() {
    let limits = "limits: {rules_per_direction: 2, groups_per_instance: 1}\n";
    let three = one_group(vec![
        rule("TCP", "80", ANY, "ACCEPT"),
        rule("TCP", "443", ANY, "ACCEPT"),
        rule("TCP", "8443", ANY, "ACCEPT"),
    ])
    .extra(limits);
    let two = one_group(vec![
        rule("TCP", "80", ANY, "ACCEPT"),
        rule("TCP", "443,8443", ANY, "ACCEPT"),
    ])
    .extra(limits);
    let got = triggers(CheckId::Lim001, &three, &two);
    assert!(
        got[0].message.contains("3 ingress rules"),
        "{}",
        got[0].message
    );
    let bound_twice = two.clone().group("sg-more0001", vec![], vec![]).instance(
        "ins-app00001",
        "10.3.0.5",
        &["sg-app00001", "sg-more0001"],
    );
    assert!(!bound_twice.findings(CheckId::Lim001).is_empty());
    // Template expansion.
    let big: Vec<String> = (0..30).map(|i| format!("10.9.{i}.0/24")).collect();
    let expanded = one_group(vec![rule("TCP", "80", "ipm-big00001", "ACCEPT")]).extra(&format!(
        "address_templates:\n  - {{id: ipm-big00001, addresses: [{}]}}\n",
        big.join(", ")
    ));
    let opts = CheckOptions {
        expanded_rules_per_direction: 20,
        ..CheckOptions::default()
    };
    let r = check_text(&expanded.yaml(), &opts).unwrap();
    assert!(r
        .findings
        .iter()
        .any(|f| f.id == CheckId::Lim001 && f.message.contains("30 entries")));
    assert!(expanded.findings(CheckId::Lim001).is_empty());
}

#[test]
fn ano004_protocol_and_peer_family_exclude_each_other() {
    let with = |ingress: Vec<String>| {
        Fx::empty()
            .group("sg-app00001", ingress, vec![])
            .group("sg-db000001", vec![], vec![])
            .instance("ins-app00001", "10.3.0.5", &["sg-app00001"])
            .instance("ins-db000001", "10.3.0.9", &["sg-db000001"])
    };
    for (on, off) in [
        (
            rule("ICMP", "ALL", "2001:db8::/32", "ACCEPT"),
            rule("ICMPv6", "ALL", "2001:db8::/32", "ACCEPT"),
        ),
        (
            rule("ICMPv6", "ALL", "10.0.0.0/8", "DROP"),
            rule("ICMP", "ALL", "10.0.0.0/8", "DROP"),
        ),
        // every member of the referenced group is IPv4
        (
            rule("ICMPv6", "ALL", "sg-db000001", "ACCEPT"),
            rule("ICMP", "ALL", "sg-db000001", "ACCEPT"),
        ),
    ] {
        let got = triggers(CheckId::Ano004, &with(vec![on.clone()]), &with(vec![off]));
        assert!(
            got[0].message.contains("can never match"),
            "{on}: {}",
            got[0].message
        );
    }
}

#[test]
fn use001_comes_from_covered_hits_and_never_from_a_file() {
    use palisade_analyze::unused::{unused_rules, DEFAULT_WINDOW};
    use palisade_protocol::service::{InstanceHitCoverage, RuleHit, RuleHitsAnswer};
    let fx = nodes_with(node_rules());
    assert!(
        fx.findings(CheckId::Use001).is_empty(),
        "a file has no hits"
    );
    let fleet = palisade_analyze::load(&fx.yaml()).unwrap().fleet;
    let now = 2_000_000_000;
    let answer = |coverage_since: u64| RuleHitsAnswer {
        security_group_id: "sg-node0001".into(),
        rule_hit_set: vec![RuleHit {
            direction: "ingress".into(),
            policy_index: 0,
            hits: 0,
            last_used: None,
            since: Some(now - 2 * DEFAULT_WINDOW),
        }],
        instance_coverage_set: fleet
            .instances
            .iter()
            .filter(|i| {
                i.security_groups
                    .iter()
                    .any(|g| g.as_str() == "sg-node0001")
            })
            .map(|i| InstanceHitCoverage {
                instance_id: i.id.to_string(),
                since: Some(coverage_since),
                last_report: Some(now),
            })
            .collect(),
        now: Some(now),
    };
    let covered = unused_rules(&fleet, &[answer(now - DEFAULT_WINDOW)], DEFAULT_WINDOW, now);
    assert_eq!(covered.findings.len(), 1, "{covered:#?}");
    let f = &covered.findings[0];
    assert_eq!((f.id, f.severity), (CheckId::Use001, Severity::Info));
    assert!(f.message.contains("Fix"), "{}", f.message);
    assert!(f.location.line.is_some(), "a rule of the file has its line");
    let short = unused_rules(
        &fleet,
        &[answer(now - DEFAULT_WINDOW + 1)],
        DEFAULT_WINDOW,
        now,
    );
    assert!(short.findings.is_empty());
    assert_eq!(short.unjudged.len(), 1);
}

#[test]
fn every_id_is_covered_by_a_test_above() {
    // Keeps this file honest when an id is added.
    let text = include_str!("checks.rs").to_ascii_uppercase();
    for id in CheckId::ALL {
        assert!(text.contains(id.as_str()), "{id} has no test");
    }
}

#[test]
fn unusable_input_is_an_error_not_a_panic() {
    for bad in [
        "",
        "[",
        "security_groups: 5",
        "security_groups:\n  - id: nope\n",
        "\u{0}\u{1}",
        "instances:\n  - {id: ins-aaaaaaaa, private_ips: [not-an-ip]}\n",
    ] {
        let _ = check_text(bad, &CheckOptions::default());
    }
    assert!(check_text("[", &CheckOptions::default()).is_err());
}

#[test]
fn json_shape_is_findings_with_id_severity_message_location_witness() {
    let fx = Fx::empty()
        .group(
            "sg-web00001",
            vec![rule("TCP", "22", ANY, "ACCEPT")],
            vec![],
        )
        .instance("ins-web00001", "10.2.0.5", &["sg-web00001"]);
    let v = serde_json::to_value(fx.check()).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["id"], "EXP001");
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap().contains("Fix:"));
    assert_eq!(
        f["location"],
        serde_json::json!({
            "cluster": null, "instance": "ins-web00001", "group": "sg-web00001",
            "rule": {"security_group_id": "sg-web00001", "direction": "ingress", "policy_index": 0},
            "path": "security_groups[0].policies.Ingress[0]", "line": 5
        })
    );
    assert_eq!(
        f["witness"],
        serde_json::json!({"direction": "ingress", "protocol": 6, "peer": "1.0.0.1", "port": 22})
    );
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    const BROKEN: &str = include_str!("../../../examples/broken-cluster.yaml");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any line of the broken example removed, or any byte range cut:
        /// findings or an error, never a panic.
        #[test]
        fn mangled_files_never_panic(line in 0usize..200, cut in 0usize..8000, len in 0usize..40) {
            let lines: Vec<&str> = BROKEN.lines().collect();
            let without: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != line % lines.len())
                .map(|(_, l)| *l)
                .collect();
            let _ = check_text(&without.join("\n"), &CheckOptions::default());
            let bytes = BROKEN.as_bytes();
            let a = cut % bytes.len();
            let b = (a + len).min(bytes.len());
            let mangled = String::from_utf8_lossy(&[&bytes[..a], &bytes[b..]].concat()).into_owned();
            let _ = check_text(&mangled, &CheckOptions::default());
        }
    }
}
