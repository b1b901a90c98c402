//! `palisade check`, `diff` and `reach` as a user runs them: exit codes,
//! JSON and SARIF shapes, the broken example showing most findings.

mod common;

use common::Server;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("palisade-analyze-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path.to_string_lossy().into_owned()
}

const WEB: &str = "security_groups:
  - id: sg-web00001
    name: web
    policies:
      Ingress:
        - {Protocol: TCP, Port: \"22\", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: TCP, Port: \"443\", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
      Egress:
        - {Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
instances:
  - {id: ins-web00001, private_ips: [10.2.0.5], security_groups: [sg-web00001]}
  - {id: ins-app00001, private_ips: [10.2.0.6], security_groups: [sg-web00001]}
";

#[test]
fn check_broken_example_shows_most_findings_and_exits_1() {
    let o = palisade(&["check", &example("broken-cluster.yaml"), "--output", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let findings = v["findings"].as_array().expect("findings");
    let mut ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    ids.dedup();
    for id in [
        "TKE001", "TKE002", "TKE003", "TKE004", "TKE005", "TKE006", "TKE007", "TKE008", "TKE009",
        "TKE010", "EXP001", "EXP002", "ANO001", "ANO002", "ANO003", "REF001", "REF002", "LIM001",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    for f in findings {
        for key in ["id", "severity", "message", "location", "witness"] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
    }
}

#[test]
fn check_fail_on_sets_the_exit_code() {
    let clean = temp_file(
        "info-only.yaml",
        "security_groups:
  - id: sg-app00001
    policies:
      Ingress:
        - {Protocol: TCP, Port: \"22\", CidrBlock: 203.0.113.0/24, Action: DROP}
        - {Protocol: TCP, Port: ALL, CidrBlock: 203.0.113.0/24, Action: ACCEPT}
instances:
  - {id: ins-app00001, private_ips: [10.3.0.5], security_groups: [sg-app00001]}
",
    );
    let o = palisade(&["check", &clean]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ANO003"));
    let o = palisade(&["check", &clean, "--fail-on", "warning"]);
    assert_eq!(o.status.code(), Some(0));
    let o = palisade(&["check", &clean, "--fail-on", "info"]);
    assert_eq!(o.status.code(), Some(1));
    let web = temp_file("web.yaml", WEB);
    let o = palisade(&["check", &web]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("EXP001"));
    let o = palisade(&["check", &web, "--sensitive-port", "tcp:8080"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn check_unusable_input_exits_2_with_one_clear_error() {
    let bad = temp_file("bad.yaml", "security_groups: [");
    let o = palisade(&["check", &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be analysed"), "{}", stderr(&o));
    let o = palisade(&["check", "/nonexistent/fleet.yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

/// An account is one network: two instances holding one private IP would
/// each be admitted by a rule naming the other's groups, so `check` refuses
/// such a file, naming the line, the address and the instance that holds it.
#[test]
fn check_refuses_a_private_ip_held_by_two_instances() {
    let dup = temp_file(
        "dup.yaml",
        &WEB.replace("private_ips: [10.2.0.6]", "private_ips: [10.2.0.5]"),
    );
    let o = palisade(&["check", &dup]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "line 12: instances[1].private_ips[0]: InvalidParameterValue.Duplicate: \
             private_ips \"10.2.0.5\": already used by ins-web00001"
        ),
        "{err}"
    );
}

#[test]
fn check_sarif_locates_results_in_the_file() {
    let path = example("broken-cluster.yaml");
    let o = palisade(&["check", &path, "--output", "sarif"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("sarif json");
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "palisade");
    let results = run["results"].as_array().unwrap();
    assert!(results.len() > 10);
    for r in results {
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], path.as_str());
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn diff_exit_codes_and_json() {
    let a = temp_file("a.yaml", WEB);
    let same = temp_file("same.yaml", &WEB.replace("\"443\"", "\"443-443\""));
    let o = palisade(&["diff", &a, &same]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("no change in effect"));
    let b = temp_file(
        "b.yaml",
        &WEB.replace(
            "\"22\", CidrBlock: 0.0.0.0/0",
            "\"22\", CidrBlock: 203.0.113.0/24",
        ),
    );
    let o = palisade(&[
        "diff",
        &a,
        &b,
        "--instance",
        "ins-web00001",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["changed"], true);
    let d = &v["instances"].as_array().unwrap()[0];
    assert_eq!(d["instance"], "ins-web00001");
    assert!(d["newly_accepted"].as_array().unwrap().is_empty());
    assert_eq!(d["newly_dropped"][0]["witness"]["port"], 22);
    assert_eq!(v["instances"].as_array().unwrap().len(), 1);
}

/// The human `diff` on a terminal 40 columns wide: protocols by name, and
/// every address whole (a cell wraps at spaces only, never inside an
/// address); the JSON keeps protocol numbers.
#[test]
fn diff_tables_name_protocols_and_keep_addresses_whole() {
    let v6 = "security_groups:
  - id: sg-web00001
    name: web
    policies:
      Ingress:
        - {Protocol: ALL, Port: ALL, Ipv6CidrBlock: \"2001:db8:aaaa:bbbb::/64\", Action: ACCEPT}
instances:
  - {id: ins-web00001, private_ips: [\"2001:db8:ffff:eeee::5\"], security_groups: [sg-web00001]}
";
    let a = temp_file("v6a.yaml", v6);
    let b = temp_file(
        "v6b.yaml",
        &v6.replace("Protocol: ALL, Port: ALL", "Protocol: TCP, Port: \"22\""),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["diff", &a, &b])
        .env("COLUMNS", "40")
        .output()
        .expect("run palisade");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(words.contains(&"2001:db8:aaaa:bbbb::/64"), "{out}");
    assert!(words.contains(&"2001:db8:aaaa:bbbb::"), "a witness: {out}");
    assert!(words.contains(&"TCP"), "{out}");
    assert!(words.contains(&"(UDP,"), "{out}");
    assert!(!words.contains(&"6"), "{out}");
    let o = palisade(&["diff", &a, &b, "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let dropped = v["instances"][0]["newly_dropped"].as_array().expect("list");
    assert!(dropped
        .iter()
        .any(|c| c["box"]["protocols"] == serde_json::json!([6, 6])));
}

#[test]
fn reach_yes_no_and_sets() {
    let f = temp_file("reach.yaml", WEB);
    let o = palisade(&[
        "reach",
        &f,
        "--from",
        "198.51.100.7",
        "--to",
        "ins-web00001",
        "--protocol",
        "tcp",
        "--port",
        "443",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["reachable"], true);
    assert_eq!(v["destination_ingress"]["matched"]["policy_index"], 1);
    let o = palisade(&[
        "reach",
        &f,
        "--from",
        "ins-app00001",
        "--to",
        "ins-web00001",
        "--protocol",
        "tcp",
        "--port",
        "80",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("NOT reachable"));
    let o = palisade(&[
        "reach",
        &f,
        "--from",
        "0.0.0.0/0",
        "--to",
        "ins-web00001",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["allowed"],
        serde_json::json!([{"protocols": "TCP", "ports": "22,443"}])
    );
    let o = palisade(&[
        "reach",
        &f,
        "--from",
        "ins-nothere1",
        "--to",
        "ins-web00001",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ins-nothere1"));
}

#[test]
fn check_and_reach_against_a_running_server() {
    let server = Server::start();
    let web = temp_file("server-web.yaml", WEB);
    let o = server.run(&["apply", &web, "--auto-approve"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // The server's groups and instances, no file.
    let o = server.run(&["check", "--output", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let exp = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "EXP001")
        .expect("EXP001 from the server's state");
    assert_eq!(exp["witness"]["port"], 22);
    assert!(exp["location"]["line"].is_null());
    // The file's clusters against the server's groups.
    let cluster = temp_file(
        "server-cluster.yaml",
        "clusters:\n  - {id: cls-web00001, cluster_cidr: 10.2.0.0/16, container_cidr: 172.20.0.0/16, nodes: [ins-web00001]}\n",
    );
    let o = server.run(&["check", &cluster, "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"TKE001") && ids.contains(&"TKE006"),
        "{ids:?}"
    );
    let o = server.run(&[
        "reach",
        "--from",
        "198.51.100.7",
        "--to",
        "ins-web00001",
        "--protocol",
        "tcp",
        "--port",
        "443",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = palisade(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--server"), "{}", stderr(&o));
}

/// Issue 16, item 8: a rule whose protocol cannot occur with its peer's
/// family (ICMP with an IPv6 peer, ICMPv6 with an IPv4 one, or a group all
/// of whose members are of the other family) is an ANO004 finding and a
/// `validate` warning (still valid, exit 0), and `explain` refuses a packet
/// that cannot exist instead of answering for it.
#[test]
fn impossible_rules_are_found_and_impossible_packets_refused() {
    let fleet = temp_file(
        "impossible.yaml",
        "security_groups:
  - id: sg-imp00001
    policies:
      Ingress:
        - {Protocol: TCP, Port: \"22\", CidrBlock: 198.51.100.0/24, Action: ACCEPT}
        - {Protocol: ICMP, Ipv6CidrBlock: \"2001:db8::/32\", Action: ACCEPT}
      Egress:
        - {Protocol: ICMPv6, CidrBlock: 0.0.0.0/0, Action: DROP}
        - {Protocol: ICMPv6, SecurityGroupId: sg-imp00001, Action: ACCEPT}
        - {Protocol: ICMP, SecurityGroupId: sg-imp00001, Action: ACCEPT}
instances:
  - {id: ins-imp00001, private_ips: [198.18.0.3], security_groups: [sg-imp00001]}
",
    );
    let o = palisade(&["check", &fleet, "--output", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let at: Vec<(String, u64)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "ANO004")
        .map(|f| {
            let r = &f["location"]["rule"];
            (
                r["direction"].as_str().unwrap().to_string(),
                r["policy_index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        at,
        [
            ("ingress".to_string(), 1),
            ("egress".to_string(), 0),
            ("egress".to_string(), 1)
        ],
        "{v:#}"
    );
    let o = palisade(&["validate", &fleet, "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let paths: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "security_groups[0].policies.Ingress[1]",
            "security_groups[0].policies.Egress[0]"
        ]
    );
    let o = palisade(&[
        "explain",
        "--fleet",
        &fleet,
        "--instance",
        "ins-imp00001",
        "--direction",
        "ingress",
        "--protocol",
        "icmp",
        "--peer",
        "2001:db8::1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("cannot occur"), "{}", stderr(&o));
    assert!(
        stdout(&o).is_empty(),
        "no verdict for an impossible packet: {}",
        stdout(&o)
    );
}

/// Issue 18: `check --server` finds a rule that decided nothing over the
/// window (USE001) only when every instance applying it has reported hits
/// since before the window began, and otherwise says on stderr that the
/// window is not covered. The agents' status reports are made directly
/// (as an agent sends them), a window of seconds stands for 30 days (6 s:
/// each `check` must finish within it for the rules used just before it
/// to count as used, also on a loaded machine).
#[test]
fn check_against_a_server_finds_unused_rules_only_where_hits_cover_the_window() {
    let server = Server::start();
    let web = temp_file("server-unused.yaml", WEB);
    let o = server.run(&["apply", &web, "--auto-approve"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let client = server.client();
    // `apply` gives the group a server id.
    let groups = client
        .vpc("DescribeSecurityGroups", &serde_json::json!({}))
        .expect("DescribeSecurityGroups");
    let sg = groups["SecurityGroupSet"][0]["SecurityGroupId"]
        .as_str()
        .expect("a group")
        .to_string();
    // Ingress[0] (TCP 22) and Egress[0] decide packets, Ingress[1] (TCP 443) none.
    let report = |instance: &str, packets: u64| {
        let counter = |dir: &str, i: u64, packets: u64| {
            serde_json::json!({"SecurityGroupId": sg, "Direction": dir,
                "PolicyIndex": i, "Packets": packets, "Bytes": packets * 60})
        };
        client
            .palisade(
                "ReportInstanceStatus",
                &serde_json::json!({"InstanceId": instance, "AppliedRevision": 1,
                    "Counters": [counter("ingress", 0, packets), counter("ingress", 1, 0),
                                 counter("egress", 0, packets)]}),
            )
            .expect("status report");
    };
    let use001 = |window: &str| -> (Vec<String>, String) {
        let o = server.run(&["check", "--output", "json", "--unused-window", window]);
        let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
        let rules = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["id"] == "USE001")
            .map(|f| {
                assert_eq!(f["severity"], "info");
                format!(
                    "{} {}",
                    f["location"]["path"].as_str().unwrap(),
                    f["message"].as_str().unwrap()
                )
            })
            .collect();
        (rules, stderr(&o))
    };
    // Only ins-web00001 reports: the window is not covered (ins-app00001
    // applies the rules and never reported), so nothing is claimed.
    report("ins-web00001", 0);
    std::thread::sleep(std::time::Duration::from_millis(6_100));
    report("ins-web00001", 5);
    let (found, notes) = use001("6s");
    assert!(found.is_empty(), "{found:?}");
    assert!(
        notes.contains(&format!("note: USE001: 1 rule(s) of {sg} not judged"))
            && notes.contains("ins-app00001 has never reported hits"),
        "{notes}"
    );
    // ins-app00001 reports too, but only since now: still not covered.
    report("ins-app00001", 0);
    let (found, notes) = use001("6s");
    assert!(found.is_empty(), "{found:?}");
    assert!(
        notes.contains("ins-app00001 reports hits only since"),
        "{notes}"
    );
    // Once both have reported for longer than the window, the rule that
    // decided nothing is found, and only it.
    std::thread::sleep(std::time::Duration::from_millis(6_100));
    report("ins-web00001", 9);
    report("ins-app00001", 3);
    let (found, notes) = use001("6s");
    assert_eq!(found.len(), 1, "{found:?} {notes}");
    assert!(
        found[0].starts_with(&format!("security_groups[0].policies.Ingress[1] {sg} Ingress[1] decided no packet in the last 6s on any of the 2 instances")),
        "{found:?}"
    );
    assert!(!notes.contains("USE001"), "{notes}");
    // The default window (30 days) is not covered by seconds of reports.
    let (found, notes) = use001("30d");
    assert!(found.is_empty(), "{found:?}");
    assert!(notes.contains("does not cover the last 30d"), "{notes}");
    // The hits answer carries the coverage it was judged on.
    let hits = client
        .palisade(
            "DescribeRuleHits",
            &serde_json::json!({"SecurityGroupId": sg}),
        )
        .expect("DescribeRuleHits");
    let coverage = hits["InstanceCoverageSet"].as_array().unwrap();
    assert_eq!(coverage.len(), 2, "{hits}");
    assert!(coverage
        .iter()
        .all(|c| c["Since"].is_u64() && c["LastReport"].is_u64()));
    assert!(hits["Now"].is_u64());
    let o = server.run(&["check", "--unused-window", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--unused-window"), "{}", stderr(&o));
}
