//! Errors a newcomer meets, as Tencent words them, through a real server on
//! 127.0.0.1: a JSON value of the wrong type is `InvalidParameter` naming the
//! field; a problem in one rule names the rule's position in Tencent's dotted
//! style (`SecurityGroupPolicySet.Ingress.2.Port`); a group both referenced
//! and bound names every use in one `ResourceInUse`. Each refused request
//! leaves the database byte for byte as it was.

mod common;

use common::Server;
use serde_json::{json, Value};

fn rule(port: Value) -> Value {
    json!({"Protocol": "TCP", "Port": port, "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"})
}

/// The third of three ingress rules is `third`.
fn third_rule_is(sg: &str, third: Value) -> Value {
    json!({
        "SecurityGroupId": sg,
        "SecurityGroupPolicySet": {"Ingress": [rule(json!("1001")), rule(json!("1002")), third]}
    })
}

#[test]
fn wrong_json_types_are_invalid_parameter_naming_the_field() {
    let (server, worlds) = Server::start(&[("alice", "aaaa")]);
    let (a, ids) = &worlds[0];
    let cred = (a.secret_id.as_str(), a.secret_key.as_str());
    let sg = &ids["$SG2"];
    let before = server.db_bytes();
    let cases = [
        (
            "CreateSecurityGroup",
            json!({"GroupName": 123, "GroupDescription": "d"}),
            "GroupName",
        ),
        (
            "CreateSecurityGroup",
            json!({"GroupName": ["g"], "GroupDescription": "d"}),
            "GroupName",
        ),
        (
            "CreateSecurityGroupPolicies",
            third_rule_is(sg, rule(json!(81))),
            "SecurityGroupPolicySet.Ingress.2.Port",
        ),
        (
            "CreateSecurityGroupPolicies",
            third_rule_is(sg, rule(json!(["81"]))),
            "SecurityGroupPolicySet.Ingress.2.Port",
        ),
        (
            "CreateSecurityGroupPolicies",
            third_rule_is(
                sg,
                json!({"Protocol": "TCP", "Port": "1003", "CidrBlock": "10.0.0.0/8", "Action": true}),
            ),
            "SecurityGroupPolicySet.Ingress.2.Action",
        ),
        (
            "CreateSecurityGroupWithPolicies",
            json!({"GroupName": "g", "GroupDescription": "d",
                   "SecurityGroupPolicySet": {"Egress": [rule(json!(443))]}}),
            "SecurityGroupPolicySet.Egress.0.Port",
        ),
        (
            "CreateSecurityGroupPolicies",
            json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Version": 0, "Ingress": [rule(json!("1"))]}}),
            "SecurityGroupPolicySet.Version",
        ),
        (
            "CreateSecurityGroupPolicies",
            json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [rule(json!("1")), {"AddressTemplate": {"AddressId": 5}}]}}),
            "SecurityGroupPolicySet.Ingress.1.AddressTemplate.AddressId",
        ),
    ];
    for (action, body, field) in cases {
        let r = server.call(cred, action, &body);
        let what = format!("{action} {body}");
        assert_eq!(r.assert_error(&what), "InvalidParameter", "{what}");
        let msg = r.response()["Error"]["Message"]
            .as_str()
            .unwrap_or_default();
        assert!(msg.starts_with(field), "{what}: {msg}");
    }
    assert_eq!(server.db_bytes(), before, "a refused request wrote");
    // PolicyIndex is taken as an integer or a string, as Tencent's examples send both.
    for index in [json!(0), json!("0")] {
        let mut r = rule(json!(if index.is_string() { "2001" } else { "2000" }));
        r["PolicyIndex"] = index;
        let body = json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [r]}});
        server
            .call(cred, "CreateSecurityGroupPolicies", &body)
            .assert_ok("PolicyIndex");
    }
}

#[test]
fn errors_about_a_rule_name_its_position() {
    let (server, worlds) = Server::start(&[("alice", "aaaa")]);
    let (a, ids) = &worlds[0];
    let cred = (a.secret_id.as_str(), a.secret_key.as_str());
    let sg = &ids["$SG2"];
    let before = server.db_bytes();
    let mut unknown = rule(json!("1003"));
    unknown["Foo"] = json!("x");
    let cases = [
        (
            third_rule_is(sg, unknown),
            "UnknownParameter",
            "SecurityGroupPolicySet.Ingress.2.Foo",
        ),
        (
            third_rule_is(sg, rule(json!("99999"))),
            "InvalidParameterValue.Range",
            "SecurityGroupPolicySet.Ingress.2.Port",
        ),
        (
            third_rule_is(
                sg,
                json!({"Protocol": "TCP", "Port": "1003", "CidrBlock": "10.0.0.0/33", "Action": "ACCEPT"}),
            ),
            "InvalidParameterValue.Malformed",
            "SecurityGroupPolicySet.Ingress.2.CidrBlock",
        ),
        (
            third_rule_is(sg, rule(json!("1001"))),
            "UnsupportedOperation.DuplicatePolicy",
            "SecurityGroupPolicySet.Ingress.2",
        ),
    ];
    for (body, code, field) in cases {
        let r = server.call(cred, "CreateSecurityGroupPolicies", &body);
        let what = body.to_string();
        assert_eq!(r.assert_error(&what), code, "{what}: {}", r.response());
        let msg = r.response()["Error"]["Message"]
            .as_str()
            .unwrap_or_default();
        assert!(msg.starts_with(field), "{what}: {msg}");
    }
    assert_eq!(server.db_bytes(), before, "a refused request wrote");
}

#[test]
fn deleting_a_group_in_use_names_every_use() {
    let (server, worlds) = Server::start(&[("alice", "aaaa")]);
    let (a, ids) = &worlds[0];
    let cred = (a.secret_id.as_str(), a.secret_key.as_str());
    let create = |name: &str| {
        server
            .call(
                cred,
                "CreateSecurityGroup",
                &json!({"GroupName": name, "GroupDescription": "d"}),
            )
            .assert_ok("create")["SecurityGroup"]["SecurityGroupId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let target = create("target");
    let referrer = create("referrer");
    server
        .call(
            cred,
            "CreateSecurityGroupPolicies",
            &json!({"SecurityGroupId": referrer, "SecurityGroupPolicySet": {"Ingress": [
                {"Protocol": "TCP", "Port": "22", "SecurityGroupId": target, "Action": "ACCEPT"}]}}),
        )
        .assert_ok("reference");
    let ins = &ids["$INS"];
    server
        .call(
            cred,
            "AssociateSecurityGroups",
            &json!({"SecurityGroupIds": [target], "InstanceIds": [ins]}),
        )
        .assert_ok("bind");
    let before = server.db_bytes();
    let r = server.call(
        cred,
        "DeleteSecurityGroup",
        &json!({"SecurityGroupId": target}),
    );
    assert_eq!(r.assert_error("delete"), "ResourceInUse");
    let msg = r.response()["Error"]["Message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains(&format!("referenced by the rules of {referrer}"))
            && msg.contains(&format!("bound to instances {ins}")),
        "{msg}"
    );
    assert_eq!(server.db_bytes(), before);
}
