//! Strict signatures (`palisade serve --strict-signatures`) against a real
//! server on 127.0.0.1: what the Tencent SDKs sign (`content-type;host`) is
//! refused, a request that signs `x-tc-action` is accepted once, and a
//! replayed write or a swapped action is refused with a Tencent code and
//! leaves the database byte for byte as it was. The default mode is checked
//! beside it: the same replay goes through there (what the docs say).

mod common;

use common::{now, sign_with_action, Server};
use palisade_store::Account;
use serde_json::json;

fn cred(a: &Account) -> (&str, &str) {
    (&a.secret_id, &a.secret_key)
}

/// Headers for `action` signed over `content-type;host;x-tc-action`.
fn strict_headers(
    server: &Server,
    a: &Account,
    action: &str,
    body: &[u8],
    ts: i64,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut h = server.signed_headers(cred(a), action, body, ts);
    let auth = sign_with_action(
        cred(a),
        &server.host(),
        common::service_of(action),
        action,
        body,
        ts,
    );
    h.retain(|(k, _)| *k != "Authorization");
    h.push(("Authorization", auth.into_bytes()));
    h
}

fn set(headers: &mut [(&'static str, Vec<u8>)], name: &str, value: &[u8]) {
    for (k, v) in headers.iter_mut() {
        if k.eq_ignore_ascii_case(name) {
            *v = value.to_vec();
        }
    }
}

#[test]
fn strict_mode_refuses_what_the_sdks_sign_and_replays() {
    let (server, worlds) = Server::start_with(&[("alice", "aaaa")], true);
    let (a, ids) = &worlds[0];
    let sg = &ids["$SG2"];

    // What the SDKs sign: refused before anything is read or written.
    let before = server.db_bytes();
    let r = server.call(
        cred(a),
        "CreateSecurityGroup",
        &json!({"GroupName": "sdk", "GroupDescription": "d"}),
    );
    assert_eq!(
        r.assert_error("sdk-style"),
        "AuthFailure.InvalidAuthorization"
    );
    assert!(r.response()["Error"]["Message"]
        .as_str()
        .is_some_and(|m| m.contains("x-tc-action")));
    let r = server.call(cred(a), "DescribeSecurityGroups", &json!({}));
    assert_eq!(
        r.assert_error("sdk-style read"),
        "AuthFailure.InvalidAuthorization"
    );
    assert_eq!(server.db_bytes(), before, "a refused request wrote");

    // Signing x-tc-action: accepted once.
    let rule = json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [
        {"Protocol": "TCP", "Port": "443", "CidrBlock": "10.9.0.0/16", "Action": "ACCEPT"}
    ]}})
    .to_string();
    let ts = now();
    let create = strict_headers(
        &server,
        a,
        "CreateSecurityGroupPolicies",
        rule.as_bytes(),
        ts,
    );
    server
        .raw(&create, rule.as_bytes())
        .assert_ok("first create");
    let after_create = server.db_bytes();

    // The same bytes again: a replay.
    let r = server.raw(&create, rule.as_bytes());
    assert_eq!(
        r.assert_error("replayed write"),
        "AuthFailure.SignatureFailure"
    );
    assert!(r.response()["Error"]["Message"]
        .as_str()
        .is_some_and(|m| m.contains("already used")));

    // The captured create re-sent as a delete of the same rule.
    let mut swapped = create.clone();
    set(&mut swapped, "X-TC-Action", b"DeleteSecurityGroupPolicies");
    let r = server.raw(&swapped, rule.as_bytes());
    assert_eq!(
        r.assert_error("swapped action"),
        "AuthFailure.SignatureFailure"
    );
    assert_eq!(server.db_bytes(), after_create, "a refused request wrote");

    // The body unsigned (X-TC-Content-SHA256: UNSIGNED-PAYLOAD): refused.
    let mut unsigned = strict_headers(&server, a, "CreateSecurityGroupPolicies", b"x", ts);
    unsigned.push(("X-TC-Content-SHA256", b"UNSIGNED-PAYLOAD".to_vec()));
    let r = server.raw(&unsigned, rule.as_bytes());
    assert_eq!(
        r.assert_error("unsigned payload"),
        "AuthFailure.InvalidAuthorization"
    );
    assert_eq!(server.db_bytes(), after_create, "a refused request wrote");

    // Reads may repeat: the same signed describe twice.
    let body = json!({"SecurityGroupId": sg}).to_string();
    let describe = strict_headers(
        &server,
        a,
        "DescribeSecurityGroupPolicies",
        body.as_bytes(),
        now(),
    );
    for _ in 0..2 {
        let r = server.raw(&describe, body.as_bytes());
        let ingress = r.assert_ok("describe")["SecurityGroupPolicySet"]["Ingress"].clone();
        assert_eq!(ingress.as_array().map(Vec::len), Some(1), "{ingress}");
    }

    // The delete, signed as itself, works.
    let ts = now();
    let delete = strict_headers(
        &server,
        a,
        "DeleteSecurityGroupPolicies",
        rule.as_bytes(),
        ts,
    );
    server.raw(&delete, rule.as_bytes()).assert_ok("delete");
}

#[test]
fn the_default_mode_accepts_what_the_sdks_sign_and_replays() {
    let (server, worlds) = Server::start(&[("alice", "aaaa")]);
    let (a, ids) = &worlds[0];
    let rule = json!({"SecurityGroupId": ids["$SG2"], "SecurityGroupPolicySet": {"Ingress": [
        {"Protocol": "TCP", "Port": "443", "CidrBlock": "10.9.0.0/16", "Action": "ACCEPT"}
    ]}})
    .to_string();
    let create = server.signed_headers(
        cred(a),
        "CreateSecurityGroupPolicies",
        rule.as_bytes(),
        now(),
    );
    server
        .raw(&create, rule.as_bytes())
        .assert_ok("sdk-style create");
    // Without strict mode a replay inside the window is executed again
    // (here refused only by the rule's own duplicate check), and an
    // unsigned action can be swapped: docs/api.md says so.
    let r = server.raw(&create, rule.as_bytes());
    assert_eq!(
        r.assert_error("replay"),
        "UnsupportedOperation.DuplicatePolicy"
    );
    let mut swapped = create.clone();
    set(&mut swapped, "X-TC-Action", b"DeleteSecurityGroupPolicies");
    server
        .raw(&swapped, rule.as_bytes())
        .assert_ok("swapped action, default mode");
}
