//! `diff` (effect, not text) and `reach` (instances or CIDRs, with or
//! without a protocol), and the SARIF shape of `check`.

mod common;

use common::*;
use palisade_analyze::reach::Endpoint;
use palisade_analyze::{diff, load, reach, CheckOptions, ReachQuery};
use palisade_model::{Action, Fleet, InstanceId};

fn fleet(fx: &Fx) -> Fleet {
    load(&fx.yaml()).expect("fleet loads").fleet
}

fn ins(s: &str) -> InstanceId {
    s.parse().expect("instance id")
}

fn app_db(db_ingress: Vec<String>) -> Fx {
    Fx::empty()
        .group("sg-app00001", vec![], egress_all())
        .group("sg-db000001", db_ingress, vec![])
        .instance("ins-app00001", "10.3.0.5", &["sg-app00001"])
        .instance("ins-db000001", "10.3.0.9", &["sg-db000001"])
}

#[test]
fn identical_effect_is_no_change_even_when_the_text_differs() {
    let a = app_db(vec![
        rule("TCP", "5432", "sg-app00001", "ACCEPT"),
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
    ]);
    // Reordered non-overlapping rules, a port list split in two.
    let b = app_db(vec![
        rule("TCP", "22", "203.0.113.0/25", "ACCEPT"),
        rule("TCP", "22", "203.0.113.128/25", "ACCEPT"),
        rule("TCP", "5432", "sg-app00001", "ACCEPT"),
    ]);
    let r = diff(&fleet(&a), &fleet(&b), None).unwrap();
    assert!(!r.changed, "{r:#?}");
    assert!(r.instances.is_empty());
}

#[test]
fn an_edited_rule_shows_newly_accepted_and_newly_dropped_boxes_with_witnesses() {
    let a = app_db(vec![rule("TCP", "22", "203.0.113.0/24", "ACCEPT")]);
    let b = app_db(vec![rule("TCP", "2222", "203.0.113.0/24", "ACCEPT")]);
    let r = diff(&fleet(&a), &fleet(&b), None).unwrap();
    assert!(r.changed);
    assert_eq!(r.instances.len(), 1);
    let d = &r.instances[0];
    assert_eq!(
        (d.instance.as_str(), d.direction),
        ("ins-db000001", "ingress")
    );
    assert_eq!(d.newly_accepted.len(), 1);
    assert_eq!(d.newly_dropped.len(), 1);
    let acc = &d.newly_accepted[0];
    assert_eq!(acc.witness.port, Some(2222));
    assert_eq!(acc.old.action, Action::Drop);
    assert_eq!(acc.new.action, Action::Accept);
    assert!(acc.new.matched.is_some() && acc.old.matched.is_none());
    let drop = &d.newly_dropped[0];
    assert_eq!(drop.witness.port, Some(22));
    assert_eq!(drop.witness.peer.to_string(), "203.0.113.0");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v["instances"][0]["newly_accepted"][0]["box"]["ports"],
        serde_json::json!([2222, 2222])
    );
    assert_eq!(
        v["instances"][0]["newly_accepted"][0]["box"]["peers"],
        "203.0.113.0/24"
    );
}

#[test]
fn membership_change_with_no_rule_edited_shows_its_effect() {
    let a = app_db(vec![rule("TCP", "5432", "sg-app00001", "ACCEPT")]);
    let b = a
        .clone()
        .instance("ins-app00002", "10.3.0.6", &["sg-app00001"]);
    let r = diff(&fleet(&a), &fleet(&b), Some(&ins("ins-db000001"))).unwrap();
    assert!(r.changed);
    let d = &r.instances[0];
    assert_eq!(d.newly_accepted[0].witness.peer.to_string(), "10.3.0.6");
    assert_eq!(d.newly_accepted[0].witness.port, Some(5432));
    assert!(d.newly_dropped.is_empty());
    // The new instance itself shows as added.
    let all = diff(&fleet(&a), &fleet(&b), None).unwrap();
    assert!(all
        .instances
        .iter()
        .any(|d| d.instance == "ins-app00002" && d.status == "added"));
}

#[test]
fn binding_order_and_template_content_changes_show() {
    let groups = Fx::empty()
        .group(
            "sg-deny0001",
            vec![rule("TCP", "22", "0.0.0.0/0", "DROP")],
            vec![],
        )
        .group(
            "sg-allow001",
            vec![rule("TCP", "22", "ipm-admins01", "ACCEPT")],
            vec![],
        );
    let tmpl =
        |a: &str| format!("address_templates:\n  - {{id: ipm-admins01, addresses: [{a}]}}\n");
    let a = groups
        .clone()
        .instance("ins-app00001", "10.3.0.5", &["sg-deny0001", "sg-allow001"])
        .extra(&tmpl("203.0.113.0/24"));
    let b = groups
        .clone()
        .instance("ins-app00001", "10.3.0.5", &["sg-allow001", "sg-deny0001"])
        .extra(&tmpl("203.0.113.0/24"));
    let r = diff(&fleet(&a), &fleet(&b), None).unwrap();
    assert!(r.changed);
    assert_eq!(
        r.instances[0].newly_accepted[0].witness.peer.to_string(),
        "203.0.113.0"
    );
    let c = groups
        .instance("ins-app00001", "10.3.0.5", &["sg-allow001", "sg-deny0001"])
        .extra(&tmpl("203.0.113.0/25"));
    let r = diff(&fleet(&b), &fleet(&c), None).unwrap();
    assert_eq!(
        r.instances[0].newly_dropped[0].witness.peer.to_string(),
        "203.0.113.128"
    );
    assert!(diff(&fleet(&b), &fleet(&c), Some(&ins("ins-nothere1"))).is_err());
}

fn q(f: &Fleet, from: &str, to: &str, protocol: Option<u8>, port: Option<u16>) -> ReachQuery {
    ReachQuery {
        from: Endpoint::parse(f, "--from", from).expect("--from"),
        to: Endpoint::parse(f, "--to", to).expect("--to"),
        protocol,
        port,
    }
}

#[test]
fn reach_between_instances_names_the_deciding_rule_on_each_side() {
    let f = fleet(&app_db(vec![rule("TCP", "5432", "sg-app00001", "ACCEPT")]));
    let r = reach(
        &f,
        &q(&f, "ins-app00001", "ins-db000001", Some(6), Some(5432)),
    )
    .unwrap();
    assert_eq!(r.reachable, Some(true));
    let src = r.source_egress.as_ref().unwrap();
    assert_eq!(src.action, "ACCEPT");
    assert_eq!(
        src.matched.as_ref().unwrap().security_group_id.as_str(),
        "sg-app00001"
    );
    let dst = r.destination_ingress.as_ref().unwrap();
    assert_eq!(
        dst.matched.as_ref().unwrap().to_string(),
        "sg-db000001 Ingress[0]"
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["reachable"], true);

    let r = reach(
        &f,
        &q(&f, "ins-app00001", "ins-db000001", Some(6), Some(22)),
    )
    .unwrap();
    assert_eq!(r.reachable, Some(false));
    let dst = r.destination_ingress.unwrap();
    assert_eq!(dst.action, "DROP");
    assert!(dst.matched.is_none());
}

#[test]
fn reach_blocked_by_the_source_egress() {
    let fx = app_db(vec![rule("TCP", "5432", "sg-app00001", "ACCEPT")]).group(
        "sg-app00001",
        vec![],
        vec![
            rule("TCP", "5432", "10.3.0.0/24", "DROP"),
            rule("ALL", "ALL", "0.0.0.0/0", "ACCEPT"),
        ],
    );
    let f = fleet(&fx);
    let r = reach(
        &f,
        &q(&f, "ins-app00001", "ins-db000001", Some(6), Some(5432)),
    )
    .unwrap();
    assert_eq!(r.reachable, Some(false));
    let src = r.source_egress.unwrap();
    assert_eq!(src.action, "DROP");
    assert_eq!(src.matched.unwrap().policy_index, 0);
}

#[test]
fn reach_without_a_protocol_lists_what_gets_through() {
    let f = fleet(&app_db(vec![
        rule("TCP", "5432", "0.0.0.0/0", "ACCEPT"),
        rule("TCP", "22", "203.0.113.0/24", "ACCEPT"),
        rule("ICMP", "ALL", "0.0.0.0/0", "ACCEPT"),
    ]));
    let r = reach(&f, &q(&f, "203.0.113.0/24", "ins-db000001", None, None)).unwrap();
    let got: Vec<(String, String)> = r
        .allowed
        .unwrap()
        .into_iter()
        .map(|a| (a.protocols, a.ports))
        .collect();
    assert_eq!(
        got,
        vec![
            ("TCP".to_string(), "22,5432".to_string()),
            ("ICMP".to_string(), "ALL".to_string())
        ]
    );
    assert!(r.reachable.is_none());
    // From a wider range, only what every address may send.
    let r = reach(&f, &q(&f, "0.0.0.0/0", "ins-db000001", None, None)).unwrap();
    assert_eq!(r.allowed.unwrap().len(), 2);
    // Between instances of one open group: everything but one port.
    let open = fleet(
        &Fx::empty()
            .group(
                "sg-open0001",
                vec![
                    rule("TCP", "23", "0.0.0.0/0", "DROP"),
                    rule("ALL", "ALL", "10.0.0.0/8", "ACCEPT"),
                ],
                egress_all(),
            )
            .instance("ins-aaaaaaaa", "10.0.0.1", &["sg-open0001"])
            .instance("ins-bbbbbbbb", "10.0.0.2", &["sg-open0001"]),
    );
    let r = reach(&open, &q(&open, "ins-aaaaaaaa", "ins-bbbbbbbb", None, None)).unwrap();
    let got: Vec<(String, String)> = r
        .allowed
        .unwrap()
        .into_iter()
        .map(|a| (a.protocols, a.ports))
        .collect();
    assert_eq!(
        got,
        vec![
            ("TCP".to_string(), "0-22,24-65535".to_string()),
            ("UDP".to_string(), "ALL".to_string()),
            ("ALL but TCP and UDP".to_string(), "ALL".to_string())
        ]
    );
    let r = reach(&open, &q(&open, "10.0.0.0/8", "10.1.0.0/16", None, None)).unwrap();
    assert_eq!(r.allowed.unwrap()[0].protocols, "ALL");
    assert!(Endpoint::parse(&f, "--from", "ins-nothere1").is_err());
    assert!(Endpoint::parse(&f, "--from", "nonsense").is_err());
}

#[test]
fn sarif_has_the_required_structure_and_locates_results() {
    let fx = Fx::empty()
        .group(
            "sg-web00001",
            vec![rule("TCP", "22", "0.0.0.0/0", "ACCEPT")],
            vec![],
        )
        .instance("ins-web00001", "10.2.0.5", &["sg-web00001"]);
    let report = palisade_analyze::check_text(&fx.yaml(), &CheckOptions::default()).unwrap();
    let s = palisade_analyze::sarif::to_sarif(&report.findings, "fleet.yaml");
    assert_eq!(s["version"], "2.1.0");
    assert!(s["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &s["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "palisade");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), palisade_analyze::CheckId::ALL.len());
    for r in rules {
        assert!(r["id"].is_string() && r["shortDescription"]["text"].is_string());
    }
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        let id = r["ruleId"].as_str().unwrap();
        assert_eq!(rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"], id);
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
        assert!(!r["message"]["text"].as_str().unwrap().is_empty());
        let pl = &r["locations"][0]["physicalLocation"];
        assert_eq!(pl["artifactLocation"]["uri"], "fleet.yaml");
        assert!(pl["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let exp = results.iter().find(|r| r["ruleId"] == "EXP001").unwrap();
    // The rule's line in the file.
    let line = exp["locations"][0]["physicalLocation"]["region"]["startLine"]
        .as_u64()
        .unwrap();
    let text = fx.yaml();
    let at = text.lines().nth(line as usize - 1).unwrap();
    assert!(at.contains("Port: \"22\""), "{at}");
}
