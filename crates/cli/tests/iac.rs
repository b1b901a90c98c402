//! `export`, `plan`, `apply` and `tke apply` against a real `palisade
//! serve` on 127.0.0.1: the round trip, plans of changed files with their
//! effect, Version conflicts that change nothing, and `tke apply` twice.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Server, BIN};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tke-cluster.yaml")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn export_apply_plan_round_trip() {
    let a = Server::start();
    let ex = example();
    let ex = ex.to_str().unwrap();
    let o = a.run(&["plan", ex]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = a.run(&["apply", ex, "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = a.run(&["plan", ex]);
    assert_eq!(o.status.code(), Some(0), "re-plan: {}", text(&o));
    let o = a.run(&["apply", ex, "--auto-approve"]);
    assert!(text(&o).contains("No changes"), "{}", text(&o));

    // export is valid, and applies to an empty server with nothing left to do
    let exported = a.export();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "exported.yaml", &exported);
    let v = Command::new(BIN)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v));
    let b = Server::start();
    let o = b.run(&["apply", file.to_str().unwrap(), "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = b.run(&["plan", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let instances = b.client().cvm("DescribeInstances", &json!({})).unwrap();
    assert_eq!(instances["TotalCount"], 2);
    let groups = &instances["InstanceSet"][0]["SecurityGroupIds"];
    assert_eq!(groups.as_array().unwrap().len(), 2);
}

#[test]
fn plan_lists_exactly_the_changes_and_their_effect() {
    let s = Server::start();
    let ex = example();
    assert!(s
        .run(&["apply", ex.to_str().unwrap(), "--auto-approve"])
        .status
        .success());
    let exported = s.export();
    // open telnet instead of dropping it: one rule list changes
    let changed = exported.replacen("Action: DROP", "Action: ACCEPT", 1);
    assert_ne!(changed, exported);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "changed.yaml", &changed);
    let o = s.run(&["plan", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{plan:#}");
    assert_eq!(steps[0]["kind"], "security_group_policies");
    assert_eq!(steps[0]["name"], "ops");
    let effect = plan["effect"]["instances"].as_array().unwrap();
    assert_eq!(effect.len(), 2, "both nodes, ingress only: {plan:#}");
    for e in effect {
        assert_eq!(e["direction"], "ingress");
        assert_eq!(e["newly_dropped_boxes"], 0);
        let w = &e["newly_accepted"][0]["witness"];
        assert_eq!(w["protocol"], 6);
        assert_eq!(w["port"], 23);
    }
    // The human form names the protocol and says what changed in words.
    let o = s.run(&["plan", file.to_str().unwrap()]);
    let out = text(&o);
    assert!(
        out.contains("3 newly accepted packet set(s), 0 newly dropped"),
        "{out}"
    );
    assert!(out.contains("+ ingress TCP "), "{out}");
    assert!(!out.to_lowercase().contains("box"), "{out}");
}

#[test]
fn a_concurrent_edit_stops_apply_and_changes_nothing() {
    let s = Server::start();
    let ex = example();
    assert!(s
        .run(&["apply", ex.to_str().unwrap(), "--auto-approve"])
        .status
        .success());
    let exported = s.export();
    // someone adds a rule to the ops group meanwhile
    let client = s.client();
    let groups = client.vpc("DescribeSecurityGroups", &json!({})).unwrap();
    let ops = groups["SecurityGroupSet"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["SecurityGroupName"] == "ops")
        .unwrap()["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    client
        .vpc(
            "CreateSecurityGroupPolicies",
            &json!({"SecurityGroupId": ops, "SecurityGroupPolicySet": {"Ingress": [
                {"Protocol": "TCP", "Port": "8080", "CidrBlock": "198.51.100.0/24", "Action": "ACCEPT"}]}}),
        )
        .unwrap();
    let before = s.export();
    let changed = exported.replacen("Action: DROP", "Action: ACCEPT", 1);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "stale.yaml", &changed);
    let o = s.run(&["apply", file.to_str().unwrap(), "--auto-approve"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("UnsupportedOperation.VersionMismatch"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains(&ops), "{}", text(&o));
    assert_eq!(s.export(), before, "nothing changed");
    let o = s.run(&["plan", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn tke_apply_twice_and_check_is_clean() {
    let s = Server::start();
    s.client()
        .palisade(
            "RegisterInstances",
            &json!({"Instances": [
                {"InstanceId": "ins-node0001", "PrivateIpAddresses": ["198.18.0.11"]},
                {"InstanceId": "ins-node0002", "PrivateIpAddresses": ["198.18.0.12"]},
                {"InstanceId": "ins-mstr0001", "PrivateIpAddresses": ["198.18.0.10"]}]}),
        )
        .unwrap();
    let args = [
        "tke",
        "apply",
        "--cluster-id",
        "cls-demo0001",
        "--cluster-cidr",
        "198.18.0.0/16",
        "--container-cidr",
        "172.16.0.0/16",
        "--nodes",
        "ins-node0001,ins-node0002",
        "--masters",
        "ins-mstr0001",
        "--ssh-from",
        "203.0.113.0/24",
    ];
    let o = s.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 error(s)"), "{}", text(&o));
    let after_first = s.export();
    let o = s.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("No changes"), "{}", text(&o));
    assert_eq!(s.export(), after_first);
    let file: Value = palisade_model::yaml::from_str(&after_first).unwrap();
    let names: Vec<&str> = file["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["tke-node-cls-demo0001", "tke-master-cls-demo0001"]
    );
    let node = &file["security_groups"][0]["policies"]["Ingress"];
    assert_eq!(node.as_array().unwrap().len(), 6, "5 seed rows + SSH");
    assert_eq!(node[5]["Port"], "22");
    assert_eq!(node[5]["CidrBlock"], "203.0.113.0/24");
    // a bad flag changes nothing
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        "cls-demo0001",
        "--cluster-cidr",
        "198.18.0.0/99",
        "--container-cidr",
        "172.16.0.0/16",
        "--nodes",
        "ins-node0001",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--cluster-cidr"), "{}", text(&o));
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        "cls-demo0001",
        "--cluster-cidr",
        "198.18.0.0/16",
        "--container-cidr",
        "172.16.0.0/16",
        "--nodes",
        "ins-zzzzzzzz",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("ins-zzzzzzzz"), "{}", text(&o));
    assert_eq!(s.export(), after_first);
}

/// `tke apply --confirm-within` left unconfirmed: at the deadline the
/// cluster's groups (which reference each other) are deleted and the nodes'
/// bindings are back; `confirm` afterwards exits 2. Confirmed, it stays.
#[test]
fn tke_apply_confirm_within_reverts_unless_confirmed() {
    let s = Server::start();
    s.client()
        .palisade(
            "RegisterInstances",
            &json!({"Instances": [
                {"InstanceId": "ins-node0001", "PrivateIpAddresses": ["198.18.0.11"]},
                {"InstanceId": "ins-mstr0001", "PrivateIpAddresses": ["198.18.0.10"]}]}),
        )
        .unwrap();
    let before = s.export();
    let args = [
        "tke",
        "apply",
        "--cluster-id",
        "cls-conf0001",
        "--cluster-cidr",
        "198.18.0.0/16",
        "--container-cidr",
        "172.16.0.0/16",
        "--nodes",
        "ins-node0001",
        "--masters",
        "ins-mstr0001",
        "--confirm-within",
        "1s",
    ];
    let o = s.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let change = out
        .split_whitespace()
        .find(|w| w.starts_with("chg-"))
        .unwrap_or_else(|| panic!("no change id in {out}"))
        .to_string();
    assert!(s.export().contains("tke-node-cls-conf0001"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.export().contains("tke-node-cls-conf0001") {
        assert!(Instant::now() < deadline, "not reverted: {}", s.export());
        std::thread::sleep(Duration::from_millis(200));
    }
    let file: Value = palisade_model::yaml::from_str(&s.export()).unwrap();
    let old: Value = palisade_model::yaml::from_str(&before).unwrap();
    assert_eq!(file["security_groups"], old["security_groups"]);
    assert_eq!(file["instances"], old["instances"]);
    let o = s.run(&["confirm", &change]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("UnsupportedOperation"), "{}", text(&o));

    let mut confirmed = args.to_vec();
    confirmed.pop();
    confirmed.push("1m");
    let o = s.run(&confirmed);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let change = out
        .split_whitespace()
        .find(|w| w.starts_with("chg-"))
        .unwrap()
        .to_string();
    let o = s.run(&["confirm", &change]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(s.export().contains("tke-node-cls-conf0001"));
}

#[test]
fn tke_apply_records_the_cluster_and_opens_peer_clusters() {
    let s = Server::start();
    s.client()
        .palisade(
            "RegisterInstances",
            &json!({"Instances": [
                {"InstanceId": "ins-aaaa0001", "PrivateIpAddresses": ["198.18.1.11"]},
                {"InstanceId": "ins-bbbb0001", "PrivateIpAddresses": ["198.19.1.11"]}]}),
        )
        .unwrap();
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        "cls-aaaaaaaa",
        "--cluster-cidr",
        "198.18.0.0/16",
        "--container-cidr",
        "172.16.0.0/16",
        "--nodes",
        "ins-aaaa0001",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let exported: Value = palisade_model::yaml::from_str(&s.export()).unwrap();
    assert_eq!(exported["clusters"][0]["id"], "cls-aaaaaaaa");
    assert_eq!(exported["clusters"][0]["container_cidr"], "172.16.0.0/16");
    // the peer's CIDRs come from the server's record of it
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        "cls-bbbbbbbb",
        "--cluster-cidr",
        "198.19.0.0/16",
        "--container-cidr",
        "172.17.0.0/16",
        "--nodes",
        "ins-bbbb0001",
        "--peer-cluster",
        "cls-aaaaaaaa",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let exported: Value = palisade_model::yaml::from_str(&s.export()).unwrap();
    let group = exported["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "tke-node-cls-bbbbbbbb")
        .unwrap();
    let peers: Vec<&str> = group["policies"]["Ingress"]
        .as_array()
        .unwrap()
        .iter()
        .skip(5)
        .map(|r| r["CidrBlock"].as_str().unwrap())
        .collect();
    assert_eq!(peers, vec!["172.16.0.0/16", "198.18.0.0/16"]);
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        "cls-cccccccc",
        "--cluster-cidr",
        "198.19.0.0/16",
        "--container-cidr",
        "172.17.0.0/16",
        "--nodes",
        "ins-bbbb0001",
        "--peer-cluster",
        "cls-zzzzzzzz",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cls-zzzzzzzz"), "{}", text(&o));
}

#[test]
fn prune_deletes_what_the_file_does_not_name() {
    let s = Server::start();
    let ex = example();
    assert!(s
        .run(&["apply", ex.to_str().unwrap(), "--auto-approve"])
        .status
        .success());
    let client = s.client();
    client
        .vpc(
            "CreateSecurityGroup",
            &json!({"GroupName": "stray", "GroupDescription": "made by hand"}),
        )
        .unwrap();
    // without --prune the stray group stays and nothing is to do
    let o = s.run(&["plan", ex.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = s.run(&["plan", ex.to_str().unwrap(), "--prune", "--output", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["steps"].as_array().unwrap().len(), 1, "{plan:#}");
    assert_eq!(plan["steps"][0]["action"], "delete");
    assert_eq!(plan["steps"][0]["name"], "stray");
    let o = s.run(&["apply", ex.to_str().unwrap(), "--prune", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let groups = client.vpc("DescribeSecurityGroups", &json!({})).unwrap();
    assert_eq!(groups["TotalCount"], 2);
}

/// A fleet file of one group and one instance with `cidrs` as its ingress
/// SSH sources, and `entries` as an address template's addresses.
fn ssh_fleet(cidrs: &[&str], entries: &[&str]) -> String {
    let rules: String = cidrs
        .iter()
        .map(|c| {
            format!(
                "        - {{Protocol: TCP, Port: \"22\", CidrBlock: \"{c}\", Action: ACCEPT}}\n"
            )
        })
        .collect();
    let addrs: Vec<String> = entries.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "security_groups:\n  - id: sg-ssh00001\n    name: ssh\n    policies:\n      Ingress:\n{rules}      Egress: []\n\
         address_templates:\n  - id: ipm-addr0001\n    name: a\n    addresses: [{}]\n\
         instances:\n  - {{id: ins-node0001, name: n, private_ips: [198.18.0.11], security_groups: [sg-ssh00001]}}\n",
        addrs.join(", ")
    )
}

/// Issue 23 on the fleet-file paths: a block whose network masks to
/// 0.0.0.0 (`9.9.9.9/3`) once became 0.0.0.0/0 when served (and `explain`
/// on the exported file accepted 200.1.1.1) while `nft compile` of the same
/// file wrote 0.0.0.0/3. Now every path refuses it, and a file of blocks
/// that only start low goes through apply, export and apply again exactly.
#[test]
fn zero_network_blocks_are_refused_everywhere_and_nothing_widens_on_the_way_round() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start();
    for (rules, entries) in [
        (&["9.9.9.9/3"][..], &["192.0.2.1"][..]),
        (&["198.51.100.0/24"][..], &["10.0.0.0/1"][..]),
    ] {
        let file = write(dir.path(), "bad.yaml", &ssh_fleet(rules, entries));
        let file = file.to_str().unwrap();
        for args in [
            vec!["validate", file],
            vec![
                "nft",
                "compile",
                "--fleet",
                file,
                "--instance",
                "ins-node0001",
                "--uplink",
                "eth0",
            ],
        ] {
            let o = Command::new(BIN).args(&args).output().unwrap();
            assert!(!o.status.success(), "{args:?} accepted it: {}", text(&o));
            assert!(text(&o).contains("0.0.0.0/0"), "{args:?}: {}", text(&o));
        }
        let o = s.run(&["apply", file, "--auto-approve"]);
        assert!(!o.status.success(), "apply accepted it: {}", text(&o));
    }
    let groups = s
        .client()
        .vpc("DescribeSecurityGroups", &json!({}))
        .unwrap();
    assert_eq!(groups["TotalCount"], 0, "a refused file changed the server");

    let written = ["128.0.0.0/1", "9.9.9.9/8", "0.0.0.0/0", "203.0.113.7"];
    let file = write(
        dir.path(),
        "good.yaml",
        &ssh_fleet(&written, &["0.0.0.0-31.255.255.255", "64.0.0.0/2"]),
    );
    let o = s.run(&["apply", file.to_str().unwrap(), "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let exported = s.export();
    for block in [
        "128.0.0.0/1",
        "9.0.0.0/8",
        "0.0.0.0/0",
        "203.0.113.7",
        "0.0.0.0-31.255.255.255",
        "64.0.0.0/2",
    ] {
        assert!(exported.contains(block), "{block} missing from {exported}");
    }
    let again = write(dir.path(), "exported.yaml", &exported);
    let b = Server::start();
    let o = b.run(&["apply", again.to_str().unwrap(), "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    // Server-chosen ids differ; everything else must be the same.
    let without_ids = |text: &str| -> String {
        let mut out = text.to_string();
        for prefix in ["sg-", "ipm-"] {
            while let Some(at) = out.find(prefix) {
                let end = (at + prefix.len() + 8).min(out.len());
                out.replace_range(at..end, "ID");
            }
        }
        out
    };
    assert_eq!(
        without_ids(&b.export()),
        without_ids(&exported),
        "export, apply, export changed a block"
    );
    // The exported file means what the original did, rule by rule:
    // 128.0.0.0/1 (rule 0) admits 200.1.1.1 only, 9.0.0.0/8 (rule 1) 9.1.2.3,
    // and only 0.0.0.0/0 (rule 2) admits 1.2.3.4.
    let explain = |fleet: &Path, peer: &str| {
        let o = Command::new(BIN)
            .args(["explain", "--fleet"])
            .arg(fleet)
            .args([
                "--instance",
                "ins-node0001",
                "--direction",
                "ingress",
                "--protocol",
                "tcp",
                "--port",
                "22",
                "--peer",
                peer,
                "--output",
                "json",
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
        v["matched"]["policy_index"].clone()
    };
    for peer in ["200.1.1.1", "9.1.2.3", "1.2.3.4"] {
        assert_eq!(explain(&file, peer), explain(&again, peer), "{peer}");
    }
    assert_eq!(explain(&again, "9.1.2.3"), json!(1));
    assert_eq!(explain(&again, "200.1.1.1"), json!(0));
    assert_eq!(explain(&again, "1.2.3.4"), json!(2));
}

#[test]
fn a_name_two_server_templates_share_stops_plan_and_apply() {
    let s = Server::start();
    let client = s.client();
    let mut ids = Vec::new();
    for cidr in ["203.0.113.0/24", "198.51.100.0/24"] {
        let a = client
            .vpc(
                "CreateAddressTemplate",
                &json!({"AddressTemplateName": "office", "Addresses": [cidr]}),
            )
            .unwrap();
        ids.push(
            a["AddressTemplate"]["AddressTemplateId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "office.yaml",
        "address_templates:\n  - {id: ipm-file0001, name: office, addresses: [192.0.2.0/24]}\n",
    );
    let before = s.export();
    // plan's error code is 1 (0 and 2 say whether there are changes);
    // apply's is 2, as for any unusable input.
    for (verb, code) in [(&["plan"][..], 1), (&["apply", "--auto-approve"][..], 2)] {
        let mut args = verb.to_vec();
        args.insert(1, file.to_str().unwrap());
        let o = s.run(&args);
        assert_eq!(o.status.code(), Some(code), "{verb:?}: {}", text(&o));
        let t = text(&o);
        assert!(t.contains("InvalidParameterValue.Duplicate"), "{t}");
        assert!(t.contains(&format!("{}, {}", ids[0], ids[1])), "{t}");
    }
    assert_eq!(s.export(), before, "nothing was created");
}

/// Two new groups whose rules reference each other, a template group of
/// templates created in the same run, rules and a binding naming them all:
/// one `apply` on an empty server does it, and a second finds nothing.
#[test]
fn one_apply_creates_groups_and_templates_that_reference_each_other() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cycle.yaml",
        r#"security_groups:
  - id: sg-groupa01
    name: a
    policies:
      Ingress:
        - {Protocol: TCP, Port: "80", SecurityGroupId: b, Action: ACCEPT}
        - {AddressTemplate: {AddressGroupId: offices}, ServiceTemplate: {ServiceGroupId: admin}, Action: ACCEPT}
      Egress: []
  - id: sg-groupb01
    name: b
    policies:
      Ingress:
        - {Protocol: TCP, Port: "5432", SecurityGroupId: a, Action: ACCEPT}
      Egress: []
address_templates:
  - {id: ipm-office01, name: office-1, addresses: [203.0.113.0/24]}
  - {id: ipm-office02, name: office-2, addresses: [198.51.100.0/24]}
address_template_groups:
  - {id: ipmg-offices1, name: offices, templates: [office-1, office-2]}
service_templates:
  - {id: ppm-ssh00001, name: ssh, services: ["tcp:22"]}
service_template_groups:
  - {id: ppmg-admin001, name: admin, templates: [ssh]}
instances:
  - {id: ins-cyc00001, private_ips: [10.0.0.11], security_groups: [a, b]}
"#,
    );
    let f = file.to_str().unwrap();
    let o = s.run(&["apply", f, "--auto-approve", "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let applied: Value = serde_json::from_slice(&o.stdout).unwrap();
    let order: Vec<String> = applied["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["action"].as_str().unwrap(),
                d["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "create address_template",
            "create address_template",
            "create service_template",
            "create address_template_group",
            "create service_template_group",
            "create security_group",
            "create security_group",
            "update security_group_policies",
            "update security_group_policies",
            "create instance",
            "update instance_binding",
        ]
    );
    let o = s.run(&["plan", f]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The references point at the ids the server assigned, and no field is
    // written empty (`AddressId: ''` beside the `AddressGroupId`).
    let yaml = s.export();
    assert!(!yaml.contains("''") && !yaml.contains("\"\""), "{yaml}");
    assert!(!yaml.contains("AddressId"), "{yaml}");
    let exported: Value = palisade_model::yaml::from_str(&yaml).unwrap();
    let id = |list: &str, name: &str| {
        exported[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (id("security_groups", "a"), id("security_groups", "b"));
    let groups = exported["security_groups"].as_array().unwrap();
    assert_eq!(groups[0]["policies"]["Ingress"][0]["SecurityGroupId"], b);
    assert_eq!(groups[1]["policies"]["Ingress"][0]["SecurityGroupId"], a);
    assert_eq!(
        groups[0]["policies"]["Ingress"][1]["AddressTemplate"]["AddressGroupId"],
        id("address_template_groups", "offices")
    );
    let offices = &exported["address_template_groups"][0]["templates"];
    assert_eq!(
        offices,
        &json!([
            id("address_templates", "office-1"),
            id("address_templates", "office-2")
        ])
    );
    assert_eq!(exported["instances"][0]["security_groups"], json!([a, b]));
}

/// README.md's "Against a running server", in order: apply the example,
/// then `tke apply` for its cluster. The example's `tke-node` group is the
/// cluster's node group, so `tke apply` brings it up to date instead of
/// adding an equal second group, and `check` finds nothing it did not find
/// before.
#[test]
fn the_readme_sequence_leaves_one_node_group() {
    let s = Server::start();
    let ex = example();
    let o = s.run(&["apply", ex.to_str().unwrap(), "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let check = |s: &Server| {
        let o = s.run(&["check", "--output", "json"]);
        assert!(o.status.code().is_some(), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("check --output json");
        v["findings"].clone()
    };
    let before = check(&s);
    let tke = [
        "tke",
        "apply",
        "--cluster-id",
        "cls-demo0001",
        "--cluster-cidr",
        "10.0.0.0/16",
        "--container-cidr",
        "172.16.0.0/16",
        "--nodes",
        "ins-node0001,ins-node0002",
    ];
    let o = s.run(&tke);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("No changes"), "{}", text(&o));
    let exported: Value = palisade_model::yaml::from_str(&s.export()).unwrap();
    let names: Vec<&str> = exported["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops", "tke-node"]);
    assert_eq!(check(&s), before);

    // With SSH opened, the same group gains the rule; still no second group.
    let mut with_ssh = tke.to_vec();
    with_ssh.extend(["--ssh-from", "203.0.113.0/24"]);
    let o = s.run(&with_ssh);
    assert!(o.status.success(), "{}", text(&o));
    let exported: Value = palisade_model::yaml::from_str(&s.export()).unwrap();
    let groups = exported["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{exported:#}");
    assert_eq!(groups[1]["name"], "tke-node");
    assert_eq!(groups[1]["policies"]["Ingress"][5]["Port"], "22");
    let o = s.run(&with_ssh);
    assert!(text(&o).contains("No changes"), "{}", text(&o));
}

/// Issue 17, item 3: every command that talks to a server takes
/// `--ca-cert` (and `PALISADE_CA_CERT`) for an `https://` server with a
/// private CA, as the agent does, and `explain` reads a server too. Each
/// command works with the CA and fails without it (the certificate's issuer
/// is unknown to the public web roots). Needs `openssl` for the certificates.
#[test]
fn every_server_command_takes_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = palisade_testkit::private_ca(dir.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let creds = data.join("admin-credentials.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !creds.exists() || std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://{listen}");
    let ca = certs.ca.clone();
    let ex = example();
    let run = |args: &[&str], with_ca: bool| -> Output {
        let mut c = Command::new(BIN);
        c.args(args)
            .args(["--server", &url, "--credentials"])
            .arg(&creds)
            .env_remove("PALISADE_CA_CERT")
            .stdin(Stdio::null());
        if with_ca {
            c.arg("--ca-cert").arg(&ca);
        }
        c.output().unwrap()
    };
    let explain = [
        "explain",
        "--instance",
        "ins-node0001",
        "--direction",
        "ingress",
        "--protocol",
        "tcp",
        "--peer",
        "198.51.100.7",
        "--port",
        "30080",
    ];
    let reach = [
        "reach",
        "--from",
        "ins-node0001",
        "--to",
        "ins-node0002",
        "--protocol",
        "tcp",
        "--port",
        "22",
    ];
    let commands: [&[&str]; 6] = [
        &["apply", ex.to_str().unwrap(), "--auto-approve"],
        &["plan", ex.to_str().unwrap()],
        &["export"],
        &["check"],
        &reach,
        &explain,
    ];
    for args in commands {
        let o = run(args, false);
        assert!(
            !o.status.success(),
            "{args:?} trusted an unknown CA: {}",
            text(&o)
        );
        assert!(
            text(&o).to_ascii_lowercase().contains("certificate"),
            "{args:?} failed for another reason: {}",
            text(&o)
        );
        let o = run(args, true);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{args:?} with --ca-cert: {}",
            text(&o)
        );
    }
    // The variable works as the flag does.
    let o = Command::new(BIN)
        .args(["export", "--server", &url, "--credentials"])
        .arg(&creds)
        .env("PALISADE_CA_CERT", &ca)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&explain, true);
    assert!(
        text(&o).contains("ACCEPT"),
        "NodePort 30080 is open: {}",
        text(&o)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 16, item 1: the program the live agent would load
/// (`agent --dry-run`, from the server's `DescribeInstanceRuleset`) is,
/// byte for byte, what `nft compile --fleet` makes of the same state
/// (`palisade export` of the server), for every instance, in both modes:
/// fleets with every peer kind (IPv4 and IPv6 blocks, group references
/// with members of both families, address templates and template groups)
/// and every service kind (protocols, service templates and groups), in
/// both directions; again after members join a referenced group.
#[test]
fn the_agent_loads_byte_for_byte_what_nft_compile_makes_of_the_export() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "every-kind.yaml",
        r#"security_groups:
  - id: sg-node0001
    name: node
    policies:
      Ingress:
        - {Protocol: TCP, Port: "23", CidrBlock: 0.0.0.0/0, Action: DROP, PolicyDescription: no telnet}
        - {Protocol: TCP, Port: "22", AddressTemplate: {AddressId: office}, Action: ACCEPT}
        - {Protocol: TCP, Port: "8080,9000-9100", SecurityGroupId: web, Action: ACCEPT}
        - {Protocol: UDP, Port: "53", SecurityGroupId: empty, Action: ACCEPT}
        - {Protocol: ICMP, Port: ALL, CidrBlock: 198.18.0.0/15, Action: ACCEPT}
        - {Protocol: ICMPv6, Ipv6CidrBlock: "::/0", Action: ACCEPT}
        - {ServiceTemplate: {ServiceGroupId: dns}, Ipv6CidrBlock: "2001:db8::/32", Action: ACCEPT}
        - {Protocol: UDP, Port: "500-600", AddressTemplate: {AddressGroupId: v6only}, Action: DROP}
        - {ServiceTemplate: {ServiceId: web}, CidrBlock: 198.51.100.0/24, Action: DROP}
        - {Protocol: GRE, CidrBlock: 10.0.0.0/8, Action: ACCEPT}
        - {Protocol: ALL, Port: ALL, CidrBlock: 10.0.0.0/16, Action: ACCEPT}
      Egress:
        - {Protocol: TCP, Port: "25", Ipv6CidrBlock: "::/0", Action: DROP}
        - {Protocol: TCP, Port: "5432", SecurityGroupId: web, Action: ACCEPT}
        - {ServiceTemplate: {ServiceId: web}, AddressTemplate: {AddressGroupId: v6only}, Action: ACCEPT}
        - {Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
  - id: sg-web00001
    name: web
    policies:
      Ingress:
        - {Protocol: TCP, Port: "80,443", SecurityGroupId: node, Action: ACCEPT}
        - {ServiceTemplate: {ServiceGroupId: dns}, AddressTemplate: {AddressId: office}, Action: ACCEPT}
      Egress:
        - {Protocol: ALL, Port: ALL, Ipv6CidrBlock: "::/0", Action: ACCEPT}
  - id: sg-empty001
    name: empty
    policies: {}
address_templates:
  - {id: ipm-office01, name: office, addresses: [203.0.113.0/24, 192.0.2.10-192.0.2.20, "2001:db8:1::/48"]}
  - {id: ipm-v6hosts1, name: v6hosts, addresses: ["2001:db9::1", "2001:db9:3::1-2001:db9:3::ff"]}
address_template_groups:
  - {id: ipmg-v6only01, name: v6only, templates: [v6hosts]}
service_templates:
  - {id: ppm-dns00001, name: dns, services: ["udp:53", "tcp:53"]}
  - {id: ppm-ping0001, name: ping, services: ["icmpv6"]}
  - {id: ppm-web00001, name: web, services: ["tcp:80,443", "tcp:8000-8100"]}
service_template_groups:
  - {id: ppmg-dns00001, name: dns, templates: [dns, ping]}
instances:
  - {id: ins-node0001, private_ips: [198.18.0.11, "2001:db8:ff::11"], security_groups: [node, web]}
  - {id: ins-web00001, private_ips: [198.18.1.5, "2001:db8:ff::5"], security_groups: [web]}
  - {id: ins-web00002, private_ips: [198.18.1.6], security_groups: [web, node]}
  - {id: ins-bare0001, private_ips: [198.18.0.99], security_groups: []}
"#,
    );
    let o = s.run(&["apply", file.to_str().unwrap(), "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    let same_programs = |round: &str, instances: &[&str]| {
        let exported = write(dir.path(), "exported.yaml", &s.export());
        for &instance in instances {
            for mode in [&[][..], &["--maps"][..]] {
                let args = ["--uplink", "eth0"];
                let agent = s.run(
                    &[
                        &["agent", "--once", "--dry-run", "--instance-id", instance][..],
                        &args,
                        mode,
                    ]
                    .concat(),
                );
                assert!(agent.status.success(), "{}", text(&agent));
                let offline = Command::new(BIN)
                    .args(["nft", "compile", "--fleet"])
                    .arg(&exported)
                    .args([&["--instance", instance][..], &args, mode].concat())
                    .output()
                    .unwrap();
                assert!(offline.status.success(), "{}", text(&offline));
                let program = String::from_utf8(agent.stdout).unwrap();
                assert!(program.contains("table inet palisade"), "{program}");
                assert_eq!(
                    program,
                    String::from_utf8(offline.stdout).unwrap(),
                    "{round}: {instance} {mode:?}: the agent's program differs from nft compile's"
                );
            }
        }
        exported
    };
    let exported = std::fs::read_to_string(same_programs(
        "as applied",
        &[
            "ins-node0001",
            "ins-web00001",
            "ins-web00002",
            "ins-bare0001",
        ],
    ))
    .unwrap();
    // Not a vacuous comparison: the node's program matches peers of both
    // families, from blocks, from members and from templates.
    let node_program = || {
        let o = Command::new(BIN)
            .args(["nft", "compile", "--fleet"])
            .arg(dir.path().join("exported.yaml"))
            .args(["--instance", "ins-node0001", "--uplink", "eth0"])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let node = node_program();
    for expected in [
        "198.18.1.5",
        "2001:db8:ff::5",
        "2001:db9:3::1-2001:db9:3::ff",
        "192.0.2.10-192.0.2.20",
        "ip6 saddr 2001:db8::/32 meta l4proto ipv6-icmp",
        "meta l4proto gre",
    ] {
        assert!(node.contains(expected), "{expected} missing from {node}");
    }
    assert!(exported.contains("ins-bare0001"), "{exported}");

    // Members join and leave a referenced group: both sides follow.
    let client = s.client();
    client
        .palisade(
            "RegisterInstances",
            &json!({"Instances": [{"InstanceId": "ins-web00003",
                "PrivateIpAddresses": ["198.18.1.7", "2001:db8:ff::7"]}]}),
        )
        .unwrap();
    let web = palisade_model::yaml::from_str::<Value>(&exported).unwrap()["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "web")
        .unwrap()["id"]
        .clone();
    client
        .cvm(
            "AssociateSecurityGroups",
            &json!({"SecurityGroupIds": [web], "InstanceIds": ["ins-web00003"]}),
        )
        .unwrap();
    client
        .palisade(
            "DeregisterInstances",
            &json!({"InstanceIds": ["ins-web00002"]}),
        )
        .unwrap();
    same_programs(
        "after members changed",
        &[
            "ins-node0001",
            "ins-web00001",
            "ins-web00003",
            "ins-bare0001",
        ],
    );
}
