//! Hostile input, table-driven (issue 8 item 5, DESIGN.md section 6):
//! every action of the server's action table gets malformed requests built
//! from its valid request (`data/valid-requests.json`): bodies that are not
//! JSON objects, invalid JSON and UTF-8, 10,000-deep nesting, an unknown
//! parameter at the top and inside every object, each required parameter
//! missing, every value replaced by each wrong JSON type, numbers out of
//! range, million-character strings and lists of up to a million
//! elements. Each request must get a Tencent error (HTTP 200,
//! `Content-Type: application/json`, `Response.Error.Code`, never
//! `InternalError`) and leave the database byte-for-byte unchanged
//! (`common` explains why comparing `palisade.db` and its WAL is sound);
//! read actions may answer a huge-but-well-typed request successfully. The
//! server must still answer afterwards.

mod common;

use common::{truncate, Answer, Ids, Server};
use palisade_server::actions::ACTIONS;
use serde_json::{json, Value};

/// Required top-level parameters of each action (the rest are optional).
fn required(action: &str) -> &'static [&'static str] {
    match action {
        "CreateSecurityGroup" | "CreateSecurityGroupWithPolicies" => {
            &["GroupName", "GroupDescription"]
        }
        "DeleteSecurityGroup"
        | "ModifySecurityGroupAttribute"
        | "CloneSecurityGroup"
        | "DescribeSecurityGroupPolicies"
        | "DescribeSecurityGroupExpandedPolicies" => &["SecurityGroupId"],
        "CreateSecurityGroupPolicies"
        | "DeleteSecurityGroupPolicies"
        | "ModifySecurityGroupPolicies"
        | "ReplaceSecurityGroupPolicy"
        | "ReplaceSecurityGroupPolicies" => &["SecurityGroupId", "SecurityGroupPolicySet"],
        "DescribeSecurityGroupReferences" | "DescribeSecurityGroupAssociationStatistics" => {
            &["SecurityGroupIds"]
        }
        "CreateAddressTemplate" => &["AddressTemplateName", "Addresses"],
        "DeleteAddressTemplate" | "ModifyAddressTemplateAttribute" => &["AddressTemplateId"],
        "CreateAddressTemplateGroup" => &["AddressTemplateGroupName", "AddressTemplateIds"],
        "DeleteAddressTemplateGroup" | "ModifyAddressTemplateGroupAttribute" => {
            &["AddressTemplateGroupId"]
        }
        "CreateServiceTemplate" => &["ServiceTemplateName", "Services"],
        "DeleteServiceTemplate" | "ModifyServiceTemplateAttribute" => &["ServiceTemplateId"],
        "CreateServiceTemplateGroup" => &["ServiceTemplateGroupName", "ServiceTemplateIds"],
        "DeleteServiceTemplateGroup" | "ModifyServiceTemplateGroupAttribute" => {
            &["ServiceTemplateGroupId"]
        }
        "AssociateSecurityGroups" | "DisassociateSecurityGroups" => {
            &["SecurityGroupIds", "InstanceIds"]
        }
        "ModifyInstancesAttribute" | "DeregisterInstances" => &["InstanceIds"],
        "RegisterInstances" => &["Instances"],
        "DescribeInstanceRuleset" | "ReportInstanceStatus" => &["InstanceId"],
        "RegisterCluster" => &["ClusterCidr", "ContainerCidr"],
        "DeregisterClusters" => &["ClusterIds"],
        "CreateSnapshotPolicies" => &["SnapshotPolicies"],
        "ModifySnapshotPolicies" => &["SnapshotPoliciesInfo"],
        "EnableSnapshotPolicies" | "DisableSnapshotPolicies" | "DeleteSnapshotPolicies" => {
            &["SnapshotPolicyIds"]
        }
        "AttachSnapshotInstances" | "DetachSnapshotInstances" => &["SnapshotPolicyId", "Instances"],
        "DescribeSnapshotAttachedInstances" => &["SnapshotPolicyId"],
        "DescribeSnapshotFiles" => &["BusinessType", "InstanceId", "StartDate", "EndDate"],
        "DescribeSgSnapshotFileContent" => {
            &["SnapshotPolicyId", "SnapshotFileId", "SecurityGroupId"]
        }
        "ResumeSnapshotInstance" => &["SnapshotPolicyId", "SnapshotFileId", "InstanceId"],
        "DescribeSecurityGroupHistory" => &["SecurityGroupId"],
        "RollbackSecurityGroup" => &["SecurityGroupId", "ToVersion"],
        "StartConfirmedChange" => &["ConfirmWithin"],
        "ConfirmChange" => &["ChangeId"],
        "ReportFlowRecords" => &["InstanceId", "FlowRecords"],
        "ModifyInstanceEnforcement" => &["InstanceId", "Enforcement"],
        "DescribeRuleHits" => &["SecurityGroupId"],
        _ => &[],
    }
}

/// What a case must get.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Any Tencent error code but `InternalError`.
    Error,
    /// Exactly this code.
    Code(&'static str),
    /// An error, or (for read actions only) a success.
    ErrorOrRead,
}

struct Case {
    name: String,
    body: Vec<u8>,
    expect: Expect,
}

/// A step in a JSON path.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    First,
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &mut v[k.as_str()],
        Step::First => &mut v[0],
    })
}

fn show(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => format!(".{k}"),
            Step::First => "[0]".into(),
        })
        .collect()
}

/// Every node below the root (the first element of each list stands for
/// the list's elements).
fn nodes(v: &Value, path: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                path.push(Step::Key(k.clone()));
                out.push((path.clone(), child.clone()));
                nodes(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                path.push(Step::First);
                out.push((path.clone(), first.clone()));
                nodes(first, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

const NUM: &str = "@@NUMBER@@";

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// The malformed cases of one action.
fn cases(action: &str, valid: &Value) -> Vec<Case> {
    let mut out = Vec::new();
    let mut raw = |name: &str, body: Vec<u8>, expect: Expect| {
        out.push(Case {
            name: name.to_string(),
            body,
            expect,
        })
    };
    let invalid_parameter = Expect::Code("InvalidParameter");
    for (name, body) in [
        ("array body", b"[]".to_vec()),
        ("number body", b"1".to_vec()),
        ("string body", b"\"x\"".to_vec()),
        ("null body", b"null".to_vec()),
        ("true body", b"true".to_vec()),
        ("truncated JSON", b"{\"A\":".to_vec()),
        ("trailing garbage", b"{} x".to_vec()),
        ("byte order mark", b"\xEF\xBB\xBF{}".to_vec()),
        ("invalid UTF-8 bytes", b"\xff\xfe\xfd".to_vec()),
        (
            "invalid UTF-8 in a string",
            b"{\"GroupName\": \"\xc3\x28\"}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"GroupName": "\ud800"}"#.to_vec(),
        ),
        ("NUL byte", b"{\0}".to_vec()),
        ("10,000 nested arrays", deep(10_000).into_bytes()),
        (
            "10,000 nested arrays in a parameter",
            format!("{{\"X\": {}}}", deep(10_000)).into_bytes(),
        ),
        (
            "10,000 nested objects",
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes(),
        ),
    ] {
        raw(name, body, invalid_parameter);
    }
    let text = |v: &Value| v.to_string().into_bytes();
    let mut with_unknown = valid.clone();
    with_unknown["PalisadeNoSuchParameter"] = json!(1);
    raw(
        "unknown top-level parameter",
        text(&with_unknown),
        Expect::Code("UnknownParameter"),
    );
    for name in required(action) {
        let mut v = valid.clone();
        v.as_object_mut().expect("object").remove(*name);
        raw(
            &format!("missing {name}"),
            text(&v),
            Expect::Code("MissingParameter"),
        );
        let mut v = valid.clone();
        v[*name] = Value::Null;
        raw(
            &format!("{name}: null"),
            text(&v),
            Expect::Code("MissingParameter"),
        );
    }

    let mut all = Vec::new();
    nodes(valid, &mut Vec::new(), &mut all);
    for (path, node) in all {
        let top = path.len() == 1;
        // Huge values at full size (a million characters or elements) for
        // top-level parameters; nested ones get sizes past every limit
        // (10,000 characters, 1,000 elements), which keeps the test quick.
        let p = show(&path);
        let mut put = |what: &str, new: Value, expect: Expect| {
            let mut v = valid.clone();
            *at(&mut v, &path) = new;
            out.push(Case {
                name: format!("{p}: {what}"),
                body: v.to_string().into_bytes(),
                expect,
            });
        };
        let wrong: Vec<(&str, Value)> = match &node {
            // Numbers are taken as strings (Tencent's clients send both).
            // Nested strings (rule fields, filter values) take any scalar
            // on purpose (YAML fleet files write `Port: 80`, `yes`).
            Value::String(_) if top => vec![
                ("object", json!({"x": 1})),
                ("list", json!([1])),
                ("bool", json!(true)),
            ],
            Value::String(_) => vec![("object", json!({"x": 1})), ("list", json!([1]))],
            Value::Number(_) => vec![
                ("object", json!({"x": 1})),
                ("list", json!([1])),
                ("bool", json!(true)),
                ("text", json!("ten")),
                ("negative", json!(-1)),
                ("fraction", json!(1.5)),
                ("1e300", json!(1e300)),
            ],
            Value::Bool(_) => vec![
                ("text", json!("yes")),
                ("number", json!(1)),
                ("list", json!([true])),
            ],
            Value::Array(_) => vec![
                ("text", json!("x")),
                ("object", json!({"x": 1})),
                ("number", json!(7)),
                ("bool", json!(true)),
            ],
            Value::Object(_) => vec![
                ("text", json!("x")),
                ("list", json!([{}])),
                ("number", json!(7)),
                ("bool", json!(true)),
            ],
            Value::Null => vec![],
        };
        for (what, new) in wrong {
            put(&format!("wrong type ({what})"), new, Expect::Error);
        }
        match &node {
            Value::Object(m) => {
                let mut m = m.clone();
                m.insert("PalisadeNoSuchParameter".into(), json!(1));
                put("unknown nested parameter", Value::Object(m), Expect::Error);
            }
            Value::String(_) => {
                let n = if top { 1_000_000 } else { 10_000 };
                put(
                    &format!("{n} characters"),
                    Value::String("a".repeat(n)),
                    Expect::ErrorOrRead,
                );
            }
            Value::Array(items) => {
                // As many copies of the first element as fit in 9 MB (up
                // to a million): past every count limit.
                let elem = items.first().cloned().unwrap_or(json!("a"));
                let size = elem.to_string().len() + 1;
                let n = if top {
                    (9_000_000 / size).min(1_000_000)
                } else {
                    1_000
                };
                put(
                    &format!("{n} elements"),
                    Value::Array(vec![elem; n]),
                    Expect::ErrorOrRead,
                );
                if top {
                    put(
                        "a million wrong elements",
                        Value::Array(vec![json!(0); 1_000_000]),
                        Expect::Error,
                    );
                }
            }
            Value::Number(_) => {
                for big in [
                    "18446744073709551616",
                    "1e400",
                    "-9223372036854775809",
                    "99999999999999999999999999999999",
                ] {
                    let mut v = valid.clone();
                    *at(&mut v, &path) = json!(NUM);
                    let body = v.to_string().replace(&format!("\"{NUM}\""), big);
                    out.push(Case {
                        name: format!("{p}: number {big}"),
                        body: body.into_bytes(),
                        expect: Expect::Error,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn check(action: &str, case: &Case, answer: &Answer) -> Result<(), String> {
    let what = format!("{action} / {}", case.name);
    let read = action.starts_with("Describe");
    match case.expect {
        Expect::Code(code) => {
            let got = answer.error(&what)?;
            if got != code {
                return Err(format!(
                    "{what}: {got} ({}), expected {code}",
                    answer.response()["Error"]["Message"]
                ));
            }
            Ok(())
        }
        Expect::Error => answer.error(&what).map(drop),
        Expect::ErrorOrRead if read && answer.code().is_none() => answer.envelope(&what),
        Expect::ErrorOrRead => answer.error(&what).map(drop),
    }
}

#[test]
fn every_action_refuses_malformed_requests_and_changes_nothing() {
    let (server, worlds) = Server::start(&[("admin", "host")]);
    let (account, ids): &(palisade_store::Account, Ids) = &worlds[0];
    let cred = (account.secret_id.as_str(), account.secret_key.as_str());
    let valid = common::valid_requests(ids);
    let mut before = server.db_bytes();
    let mut failures = Vec::new();
    let mut count = 0;
    for (_, action) in ACTIONS {
        for case in cases(action, &valid[*action]) {
            count += 1;
            let started = std::time::Instant::now();
            let answer = match server.try_call_raw(cred, action, &case.body) {
                Ok(a) => a,
                Err(e) => {
                    failures.push(format!("{action} / {}: {e}", case.name));
                    continue;
                }
            };
            // Reported, not asserted: slow answers point at quadratic work.
            let took = started.elapsed();
            if took > std::time::Duration::from_secs(2) {
                eprintln!("slow: {action} / {}: {took:?}", case.name);
            }
            if let Err(e) = check(action, &case, &answer) {
                failures.push(truncate(&e));
            }
            let after = server.db_bytes();
            if after != before {
                failures.push(format!(
                    "{action} / {}: the database changed; answer {}",
                    case.name,
                    truncate(&String::from_utf8_lossy(&answer.raw_body))
                ));
                before = after;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Still alive, and still serving the same data.
    let r = server.call(cred, "DescribeSecurityGroups", &json!({}));
    assert_eq!(r.assert_ok("alive")["TotalCount"], 2);
    assert!(count > 1_000, "only {count} cases");
}

#[test]
fn envelope_level_garbage_gets_tencent_errors() {
    let (server, worlds) = Server::start(&[("admin", "host")]);
    let account = &worlds[0].0;
    let cred = (account.secret_id.as_str(), account.secret_key.as_str());
    let before = server.db_bytes();
    let body = br#"{"GroupName": "g", "GroupDescription": "d"}"#;
    let good = server.signed_headers(cred, "CreateSecurityGroup", body, common::now());
    let without = |name: &str| -> Vec<(&str, Vec<u8>)> {
        good.iter().filter(|(k, _)| *k != name).cloned().collect()
    };
    let replaced = |name: &'static str, value: &[u8]| -> Vec<(&str, Vec<u8>)> {
        let mut h = without(name);
        h.push((name, value.to_vec()));
        h
    };
    let cases: Vec<(&str, common::Headers, Vec<u8>, &str)> = vec![
        (
            "no X-TC-Action",
            without("X-TC-Action"),
            body.to_vec(),
            "MissingParameter",
        ),
        (
            "no Authorization",
            without("Authorization"),
            body.to_vec(),
            "AuthFailure.InvalidAuthorization",
        ),
        (
            "no X-TC-Timestamp",
            without("X-TC-Timestamp"),
            body.to_vec(),
            "AuthFailure.InvalidAuthorization",
        ),
        (
            "no X-TC-Version",
            without("X-TC-Version"),
            body.to_vec(),
            "MissingParameter",
        ),
        (
            "unknown version",
            replaced("X-TC-Version", b"1999-01-01"),
            body.to_vec(),
            "NoSuchVersion",
        ),
        (
            "unknown action",
            replaced("X-TC-Action", b"DropAllTables"),
            body.to_vec(),
            "AuthFailure.SignatureFailure",
        ),
        (
            "non-UTF-8 Authorization",
            replaced("Authorization", b"TC3-HMAC-SHA256 \xff\xfe"),
            body.to_vec(),
            "AuthFailure.InvalidAuthorization",
        ),
        (
            "non-UTF-8 action",
            replaced("X-TC-Action", b"Create\xffGroup"),
            body.to_vec(),
            "AuthFailure.SignatureFailure",
        ),
        (
            "timestamp i64::MIN",
            replaced("X-TC-Timestamp", b"-9223372036854775808"),
            body.to_vec(),
            "AuthFailure.SignatureExpire",
        ),
        (
            "timestamp i64::MAX",
            replaced("X-TC-Timestamp", b"9223372036854775807"),
            body.to_vec(),
            "AuthFailure.SignatureExpire",
        ),
        (
            "timestamp past i64",
            replaced("X-TC-Timestamp", b"99999999999999999999"),
            body.to_vec(),
            "AuthFailure.InvalidAuthorization",
        ),
        (
            "a megabyte of Authorization",
            replaced("Authorization", &vec![b'A'; 60_000]),
            body.to_vec(),
            "AuthFailure.InvalidAuthorization",
        ),
    ];
    for (name, headers, body, code) in cases {
        let a = server.raw(&headers, &body);
        let got = a.assert_error(name);
        // The action header is not signed by Tencent's clients (SignedHeaders
        // = content-type;host), so an unknown or garbled action is only
        // noticed after the signature passed: then InvalidAction.
        let ok = got == code
            || (code == "AuthFailure.SignatureFailure" && got == "InvalidAction")
            || (name == "non-UTF-8 action" && got == "MissingParameter");
        assert!(ok, "{name}: got {got}, expected {code}");
    }
    // An 11 MB body: refused before it is parsed.
    let big = vec![b' '; 11 * 1024 * 1024];
    let headers = server.signed_headers(cred, "DescribeSecurityGroups", &big, common::now());
    let a = server.raw(&headers, &big);
    assert_eq!(a.assert_error("11 MB body"), "RequestSizeLimitExceeded");
    assert_eq!(server.db_bytes(), before, "the database changed");
    let r = server.call(cred, "DescribeSecurityGroups", &json!({}));
    r.assert_ok("alive");
}
