//! Security tests (issue 8 item 6) against a real server on 127.0.0.1:
//! the 300 s signature window, tampering with a signed request, isolation
//! between accounts, and what an agent's instance-scoped credential may do.
//! Every refused request must also leave the database byte-for-byte
//! unchanged (see `common` for why that comparison is sound).

mod common;

use common::{now, Ids, Server};
use palisade_server::actions::ACTIONS;
use palisade_store::{Account, Store, StoreError, StoreExt};
use serde_json::{json, Value};

fn cred(a: &Account) -> (&str, &str) {
    (a.secret_id.as_str(), a.secret_key.as_str())
}

fn set(headers: &mut Vec<(&'static str, Vec<u8>)>, name: &'static str, value: Vec<u8>) {
    headers.retain(|(k, _)| *k != name);
    headers.push((name, value));
}

#[test]
fn expired_and_tampered_requests_are_refused() {
    let (server, worlds) = Server::start(&[("admin", "aaaa"), ("other", "bbbb")]);
    let (a, b) = (&worlds[0].0, &worlds[1].0);
    let before = server.db_bytes();
    let action = "CreateSecurityGroup";
    let body = br#"{"GroupName": "g", "GroupDescription": "d"}"#;

    // Replays: a request signed more than 300 s ago (or ahead) is refused.
    for age in [301, 3_600, 86_400 * 30, -301] {
        let h = server.signed_headers(cred(a), action, body, now() - age);
        let r = server.raw(&h, body);
        assert_eq!(
            r.assert_error("old"),
            "AuthFailure.SignatureExpire",
            "age {age}"
        );
    }

    let ts = now();
    let good = server.signed_headers(cred(a), action, body, ts);
    let mut cases: Vec<(&str, common::Headers, Vec<u8>)> = Vec::new();
    cases.push((
        "body",
        good.clone(),
        br#"{"GroupName": "h", "GroupDescription": "d"}"#.to_vec(),
    ));
    cases.push((
        "body plus a space",
        good.clone(),
        [&body[..], b" "].concat(),
    ));
    let mut h = good.clone();
    set(&mut h, "X-TC-Content-SHA256", b"UNSIGNED-PAYLOAD".to_vec());
    cases.push(("body with UNSIGNED-PAYLOAD added", h, b"{}".to_vec()));
    let mut h = good.clone();
    set(&mut h, "Host", b"127.0.0.1:1".to_vec());
    cases.push(("Host", h, body.to_vec()));
    let mut h = good.clone();
    set(
        &mut h,
        "Content-Type",
        b"application/json; charset=utf-8".to_vec(),
    );
    cases.push(("Content-Type", h, body.to_vec()));
    let mut h = good.clone();
    set(&mut h, "X-TC-Timestamp", (ts - 1).to_string().into_bytes());
    cases.push(("X-TC-Timestamp", h, body.to_vec()));
    let auth = String::from_utf8(
        good.iter()
            .find(|(k, _)| *k == "Authorization")
            .expect("auth")
            .1
            .clone(),
    )
    .expect("utf-8");
    let tamper = |f: &dyn Fn(&str) -> String| {
        let mut h = good.clone();
        set(&mut h, "Authorization", f(&auth).into_bytes());
        h
    };
    // Last hex digit of the signature changed.
    cases.push((
        "Authorization signature",
        tamper(&|s| {
            let mut s = s.to_string();
            let last = s.pop().expect("digit");
            s.push(if last == '0' { '1' } else { '0' });
            s
        }),
        body.to_vec(),
    ));
    cases.push((
        "Authorization SecretId (another account's)",
        tamper(&|s| s.replace(&a.secret_id, &b.secret_id)),
        body.to_vec(),
    ));
    cases.push((
        "Authorization service",
        tamper(&|s| s.replace("/vpc/", "/cvm/")),
        body.to_vec(),
    ));
    cases.push((
        "Authorization SignedHeaders",
        tamper(&|s| {
            s.replace(
                "SignedHeaders=content-type;host",
                "SignedHeaders=content-type;host;x-tc-region",
            )
        }),
        body.to_vec(),
    ));
    for (what, headers, body) in cases {
        let r = server.raw(&headers, &body);
        assert_eq!(
            r.assert_error(what),
            "AuthFailure.SignatureFailure",
            "{what}"
        );
    }
    assert_eq!(
        server.db_bytes(),
        before,
        "a refused request changed the database"
    );

    // The untampered request still works (the cases above refused only
    // because of what was changed).
    server.raw(&good, body).assert_ok("untampered");

    // A client that signs X-TC-Action too is protected against the action
    // being swapped (Tencent's SDKs sign only content-type;host, so for
    // them the action header is unauthenticated: see the report).
    let body = format!(r#"{{"SecurityGroupId": "{}"}}"#, worlds[0].1["$SG2"]);
    let ts = now();
    let host = server.host();
    let before = server.db_bytes();
    let mut h = server.signed_headers(
        cred(a),
        "DescribeSecurityGroupPolicies",
        body.as_bytes(),
        ts,
    );
    set(
        &mut h,
        "Authorization",
        common::sign_with_action(
            cred(a),
            &host,
            "vpc",
            "DescribeSecurityGroupPolicies",
            body.as_bytes(),
            ts,
        )
        .into_bytes(),
    );
    server.raw(&h, body.as_bytes()).assert_ok("action signed");
    set(&mut h, "X-TC-Action", b"DeleteSecurityGroup".to_vec());
    assert_eq!(
        server
            .raw(&h, body.as_bytes())
            .assert_error("swapped action"),
        "AuthFailure.SignatureFailure"
    );
    assert_eq!(server.db_bytes(), before);
}

/// Fake ids shaped like `ids`, unique per `n`, that exist nowhere.
fn fake_ids(ids: &Ids, n: usize) -> Ids {
    ids.iter()
        .map(|(k, v)| {
            let (prefix, _) = v.split_once('-').expect("prefixed id");
            (k.clone(), format!("{prefix}-zz{n:02}{}", &v[v.len() - 4..]))
        })
        .collect()
}

/// The answer with RequestId dropped and ids replaced by placeholders.
fn normalise(r: &Value, ids: &Ids) -> String {
    let mut r = r.clone();
    if let Some(m) = r.as_object_mut() {
        m.remove("RequestId");
    }
    let mut text = r.to_string();
    for (k, v) in ids {
        text = text.replace(v.as_str(), k);
    }
    text
}

/// Requests of the cross-account table: each action's valid request, with
/// the create-style ones pointed at the other account's resources.
fn cross_requests(ids: &Ids) -> std::collections::BTreeMap<String, Value> {
    let mut all = common::valid_requests(ids);
    all.insert(
        "RegisterInstances".into(),
        json!({"Instances": [{"InstanceId": ids["$INS"], "PrivateIpAddresses": ["10.9.9.9"]}]}),
    );
    all.insert(
        "ReportInstanceStatus".into(),
        json!({"InstanceId": ids["$INS"], "AppliedRevision": 1}),
    );
    all.insert(
        "CreateSecurityGroupWithPolicies".into(),
        json!({"GroupName": "g", "GroupDescription": "d", "SecurityGroupPolicySet": {"Ingress": [
            {"Protocol": "ALL", "SecurityGroupId": ids["$SG1"], "Action": "ACCEPT"}]}}),
    );
    all.insert(
        "RegisterCluster".into(),
        json!({"ClusterId": ids["$CLS"], "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.16.0.0/16"}),
    );
    all.insert(
        "CloneSecurityGroup".into(),
        json!({"SecurityGroupId": ids["$SG1"]}),
    );
    all
}

/// Actions that create a record under an id the client chooses (instance
/// and cluster ids are unique per account): naming another account's id
/// registers a record of the caller's own, exactly as an id that exists
/// nowhere does. The database changes, but the other account's records
/// must not.
fn registers_own_id(action: &str) -> bool {
    matches!(action, "RegisterInstances" | "RegisterCluster")
}

/// Everything of `account` an action of another account could disturb.
fn records_of(server: &Server, account: &str) -> String {
    let records = server
        .store
        .read(|tx| {
            Ok::<_, StoreError>(format!(
                "{:?}\n{:?}\n{:?}",
                tx.groups(account)?,
                tx.instances(account)?,
                tx.clusters(account)?
            ))
        })
        .expect("read");
    let statuses = server.store.instance_statuses(account).expect("statuses");
    format!("{records}\n{statuses:?}")
}

/// Every action of account `other` naming `admin`'s resources (groups,
/// templates, instances, clusters) answers as if they did not exist, and
/// leaves the database unchanged, or for [`registers_own_id`] actions,
/// `admin`'s records unchanged.
#[test]
fn another_accounts_resources_look_like_they_do_not_exist() {
    let (server, worlds) = Server::start(&[("admin", "aaaa"), ("other", "bbbb")]);
    let (a, a_ids, b) = (&worlds[0].0, &worlds[0].1, &worlds[1].0);
    let theirs = cross_requests(a_ids);
    let mut failures = Vec::new();
    let mut tried = 0;
    for (n, (_, action)) in ACTIONS.iter().enumerate() {
        let req = &theirs[*action];
        let text = req.to_string();
        if !a_ids.values().any(|id| text.contains(id.as_str())) {
            continue; // names no resource of the other account
        }
        tried += 1;
        let before = server.db_bytes();
        let theirs_before = records_of(&server, &a.id);
        let r = server.call(cred(b), action, req);
        if let Err(e) = r.envelope(action) {
            failures.push(e);
            continue;
        }
        if registers_own_id(action) {
            if records_of(&server, &a.id) != theirs_before {
                failures.push(format!(
                    "{action}: another account's request changed this account's records"
                ));
            }
        } else if server.db_bytes() != before {
            failures.push(format!(
                "{action}: another account's request changed the database"
            ));
        }
        // Later requests (the same one naming fresh ids, Deregister*) must
        // again find nothing of `other`'s: remove what it registered, the
        // more so as an account's instances may not share an address.
        let (undo, field, key) = match *action {
            "RegisterInstances" => ("DeregisterInstances", "InstanceIds", "$INS"),
            _ => ("DeregisterClusters", "ClusterIds", "$CLS"),
        };
        let undo = |ids: &dyn Fn(&str) -> String| {
            if registers_own_id(action) {
                server
                    .call(cred(b), undo, &json!({ field: [ids(key)] }))
                    .assert_ok(undo);
            }
        };
        undo(&|k| a_ids[k].clone());
        // The same request naming ids that exist nowhere.
        let fake = fake_ids(a_ids, n);
        let mut text_fake = text.clone();
        for (k, v) in a_ids {
            text_fake = text_fake.replace(v.as_str(), &fake[k]);
        }
        let r2 = server.call(
            cred(b),
            action,
            &serde_json::from_str(&text_fake).expect("json"),
        );
        let (got, want) = (
            normalise(r.response(), a_ids),
            normalise(r2.response(), &fake),
        );
        if got != want {
            failures.push(format!(
                "{action}: foreign ids answer {}\n    no-such ids answer {}",
                common::truncate(&got),
                common::truncate(&want)
            ));
        }
        undo(&|k| fake[k].clone());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(tried >= 30, "only {tried} actions name a resource");
}

#[test]
fn an_agent_credential_reads_only_its_own_instance() {
    let (server, worlds) = Server::start(&[("admin", "aaaa"), ("other", "bbbb")]);
    let (a, a_ids) = (&worlds[0].0, &worlds[0].1);
    let b_ids = &worlds[1].1;
    let key = server
        .store
        .create_instance_key(&a.id, &a_ids["$INS"])
        .expect("agent key");
    let agent = (key.secret_id.as_str(), key.secret_key.as_str());
    // Two addresses, so that a confirmation may list them in another order.
    server
        .call(
            cred(a),
            "RegisterInstances",
            &json!({"Instances": [{"InstanceId": a_ids["$INS"],
                "PrivateIpAddresses": ["10.0.0.5", "10.0.0.6"]}]}),
        )
        .assert_ok("two addresses");
    let own = json!({"InstanceId": a_ids["$INS"]});
    let r = server.call(agent, "DescribeInstanceRuleset", &own);
    assert_eq!(
        r.assert_ok("own ruleset")["Ruleset"]["InstanceId"],
        a_ids["$INS"]
    );
    server
        .call(
            agent,
            "ReportInstanceStatus",
            &json!({"InstanceId": a_ids["$INS"], "AppliedRevision": 1}),
        )
        .assert_ok("own status");

    let before = server.db_bytes();
    let refused = |action: &str, body: &Value| {
        let r = server.call(agent, action, body);
        let code = r.assert_error(action);
        assert_eq!(code, "AuthFailure.UnauthorizedOperation", "{action} {body}");
        assert!(
            !r.raw_body.windows(7).any(|w| w == b"Ingress"),
            "{action}: a refusal carries rules"
        );
    };
    refused(
        "DescribeInstanceRuleset",
        &json!({"InstanceId": a_ids["$INS2"]}),
    );
    refused(
        "DescribeInstanceRuleset",
        &json!({"InstanceId": b_ids["$INS"]}),
    );
    refused("DescribeInstanceRuleset", &json!({}));
    refused(
        "ReportInstanceStatus",
        &json!({"InstanceId": a_ids["$INS2"]}),
    );
    refused(
        "RegisterInstances",
        &json!({"Instances": [
        {"InstanceId": a_ids["$INS2"], "PrivateIpAddresses": ["10.0.0.5"]}]}),
    );
    refused(
        "RegisterInstances",
        &json!({"Instances": [
        {"InstanceId": a_ids["$INS"], "PrivateIpAddresses": ["10.0.0.5"]},
        {"InstanceId": a_ids["$INS2"], "PrivateIpAddresses": ["10.0.0.7"]}]}),
    );
    // Its own instance: confirming the registration as it stands works;
    // new addresses (they would widen every rule that references the
    // instance's groups, on other nodes) or a new name need the account's key.
    let registered = server
        .call(
            cred(a),
            "DescribeInstances",
            &json!({"InstanceIds": [a_ids["$INS"]]}),
        )
        .assert_ok("describe")["InstanceSet"][0]["PrivateIpAddresses"]
        .clone();
    let confirm = json!({"Instances": [
        {"InstanceId": a_ids["$INS"], "PrivateIpAddresses": registered}]});
    let before_confirm = server.db_bytes();
    server
        .call(agent, "RegisterInstances", &confirm)
        .assert_ok("confirm");
    let mut reordered = registered.as_array().expect("ips").clone();
    reordered.reverse();
    server
        .call(
            agent,
            "RegisterInstances",
            &json!({"Instances": [{"InstanceId": a_ids["$INS"], "PrivateIpAddresses": reordered}]}),
        )
        .assert_ok("confirm in another order");
    assert_eq!(server.db_bytes(), before_confirm, "a confirmation wrote");
    let mut widened = registered.as_array().expect("ips").clone();
    widened.push(json!("203.0.113.66"));
    refused(
        "RegisterInstances",
        &json!({"Instances": [{"InstanceId": a_ids["$INS"], "PrivateIpAddresses": widened}]}),
    );
    refused(
        "RegisterInstances",
        &json!({"Instances": [{"InstanceId": a_ids["$INS"], "PrivateIpAddresses": ["203.0.113.66"]}]}),
    );
    refused(
        "RegisterInstances",
        &json!({"Instances": [{"InstanceId": a_ids["$INS"], "InstanceName": "renamed",
            "PrivateIpAddresses": registered}]}),
    );
    // Every other action, with a valid request of the agent's own account.
    let valid = common::valid_requests(a_ids);
    for (_, action) in ACTIONS {
        if matches!(
            *action,
            "DescribeInstanceRuleset"
                | "ReportInstanceStatus"
                | "ReportFlowRecords"
                | "RegisterInstances"
                | "LeaveCluster"
        ) {
            continue;
        }
        refused(action, &valid[*action]);
    }
    // An agent leaves as itself only, and reports flow records of its own
    // instance only.
    refused("LeaveCluster", &json!({"InstanceId": a_ids["$INS2"]}));
    let mut other = valid["ReportFlowRecords"].clone();
    other["InstanceId"] = json!(a_ids["$INS2"]);
    other["FlowRecords"][0]["InstanceId"] = json!(a_ids["$INS2"]);
    refused("ReportFlowRecords", &other);
    assert_eq!(server.db_bytes(), before, "an agent changed the database");
    // The account's key changes them, and the agent confirms the new ones.
    let moved = json!({"Instances": [
        {"InstanceId": a_ids["$INS"], "PrivateIpAddresses": ["203.0.113.66"]}]});
    server
        .call(cred(a), "RegisterInstances", &moved)
        .assert_ok("account key moves the instance");
    server
        .call(agent, "RegisterInstances", &moved)
        .assert_ok("agent confirms the new address");

    // Deregistering the instance revokes its agent's credential.
    let admin = cred(a);
    server
        .call(
            admin,
            "DeregisterInstances",
            &json!({"InstanceIds": [a_ids["$INS"]]}),
        )
        .assert_ok("deregister");
    let r = server.call(agent, "DescribeInstanceRuleset", &own);
    assert_eq!(r.assert_error("revoked"), "AuthFailure.SecretIdNotFound");
}

/// Two accounts registering the same instance and cluster ids (both worlds
/// are seeded with `ins-same0001`, `ins-same0002` and `cls-same0001`) each
/// see, bind, change and delete only their own, and an agent key of one
/// account's instance reads and reports only that instance.
#[test]
fn two_accounts_with_the_same_instance_and_cluster_ids_each_see_their_own() {
    let (server, worlds) = Server::start(&[("admin", "same"), ("other", "same")]);
    let ((a, a_ids), (b, b_ids)) = (&worlds[0], &worlds[1]);
    let ins = a_ids["$INS"].clone();
    let cls = a_ids["$CLS"].clone();
    assert_eq!((&ins, &cls), (&b_ids["$INS"], &b_ids["$CLS"]));
    assert_ne!(a_ids["$SG1"], b_ids["$SG1"]);

    let bound = |who: &Account, via: &str| -> Value {
        let (action, body) = match via {
            "DescribeInstances" => ("DescribeInstances", json!({"InstanceIds": [ins]})),
            _ => ("DescribeInstanceRuleset", json!({"InstanceId": ins})),
        };
        let r = server.call(cred(who), action, &body);
        let r = r.assert_ok(action);
        match via {
            "DescribeInstances" => {
                assert_eq!(r["TotalCount"], 1, "{}: {r}", who.name);
                r["InstanceSet"][0]["SecurityGroupIds"].clone()
            }
            _ => r["Ruleset"]["SecurityGroupIds"].clone(),
        }
    };
    for via in ["DescribeInstances", "DescribeInstanceRuleset"] {
        assert_eq!(bound(a, via), json!([a_ids["$SG1"]]), "{via}");
        assert_eq!(bound(b, via), json!([b_ids["$SG1"]]), "{via}");
    }
    let clusters = |who: &Account| -> Value {
        server
            .call(cred(who), "DescribeClusters", &json!({}))
            .assert_ok("DescribeClusters")["ClusterSet"]
            .clone()
    };
    assert_eq!(clusters(a).as_array().map(Vec::len), Some(1));
    assert_eq!(clusters(a)[0]["ClusterId"], json!(cls));

    // Binding in one account leaves the other's instance as it was.
    server
        .call(
            cred(a),
            "AssociateSecurityGroups",
            &json!({"SecurityGroupIds": [a_ids["$SG2"]], "InstanceIds": [ins]}),
        )
        .assert_ok("associate");
    for via in ["DescribeInstances", "DescribeInstanceRuleset"] {
        assert_eq!(
            bound(a, via),
            json!([a_ids["$SG1"], a_ids["$SG2"]]),
            "{via}"
        );
        assert_eq!(bound(b, via), json!([b_ids["$SG1"]]), "{via}");
    }
    // Re-registering one account's cluster changes only that one.
    let b_cluster = clusters(b);
    server
        .call(
            cred(a),
            "RegisterCluster",
            &json!({"ClusterId": cls, "ClusterCidr": "10.7.0.0/16", "ContainerCidr": "172.17.0.0/16"}),
        )
        .assert_ok("re-register");
    assert_eq!(clusters(a)[0]["ClusterCidr"], "10.7.0.0/16");
    assert_eq!(clusters(b), b_cluster);

    // An agent key of admin's instance reads and reports admin's instance.
    let key = server
        .store
        .create_instance_key(&a.id, &ins)
        .expect("agent key");
    let agent = (key.secret_id.as_str(), key.secret_key.as_str());
    let r = server.call(
        agent,
        "DescribeInstanceRuleset",
        &json!({"InstanceId": ins}),
    );
    assert_eq!(
        r.assert_ok("agent ruleset")["Ruleset"]["SecurityGroupIds"],
        json!([a_ids["$SG1"], a_ids["$SG2"]])
    );
    server
        .call(
            agent,
            "ReportInstanceStatus",
            &json!({"InstanceId": ins, "AppliedRevision": 42}),
        )
        .assert_ok("agent report");
    let applied = |who: &Account| {
        server
            .call(
                cred(who),
                "DescribeInstanceStatus",
                &json!({"InstanceIds": [ins]}),
            )
            .assert_ok("status")["InstanceStatusSet"][0]["AppliedRevision"]
            .clone()
    };
    assert_eq!(applied(a), 42);
    assert_eq!(applied(b), 1, "other's report (from its seed) untouched");

    // Deregistering in one account leaves the other's instance, cluster and
    // agent key alone.
    let b_key = server
        .store
        .create_instance_key(&b.id, &ins)
        .expect("other's agent key");
    server
        .call(
            cred(a),
            "DeregisterInstances",
            &json!({"InstanceIds": [ins]}),
        )
        .assert_ok("deregister");
    server
        .call(cred(a), "DeregisterClusters", &json!({"ClusterIds": [cls]}))
        .assert_ok("deregister cluster");
    let r = server.call(
        agent,
        "DescribeInstanceRuleset",
        &json!({"InstanceId": ins}),
    );
    assert_eq!(r.assert_error("revoked"), "AuthFailure.SecretIdNotFound");
    let b_agent = (b_key.secret_id.as_str(), b_key.secret_key.as_str());
    let r = server.call(
        b_agent,
        "DescribeInstanceRuleset",
        &json!({"InstanceId": ins}),
    );
    assert_eq!(
        r.assert_ok("other's agent")["Ruleset"]["SecurityGroupIds"],
        json!([b_ids["$SG1"]])
    );
    assert_eq!(bound(b, "DescribeInstances"), json!([b_ids["$SG1"]]));
    assert_eq!(clusters(b), b_cluster);
    assert_eq!(clusters(a), json!([]));
}
