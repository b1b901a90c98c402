//! The HTTP envelope end to end inside one process: requests signed with
//! [`palisade_server::tc3::authorization`] go through the real router and store, and
//! the answers are checked for HTTP 200, the exact `Content-Type`, and that a
//! failing mutation leaves the store (and its revision) unchanged.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use palisade_model::Limits;
use palisade_server::http::{router, AppState};
use palisade_server::tc3;
use palisade_store::{Account, SqliteStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    app: axum::Router,
    account: Account,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open_dir(dir.path()).expect("store"));
    let account = store.create_account("admin").expect("account");
    let app = router(Arc::new(AppState::new(store.clone(), Limits::default())));
    Fixture {
        _dir: dir,
        store,
        app,
        account,
    }
}

async fn call(
    f: &Fixture,
    service: &str,
    version: &str,
    action: &str,
    body: Value,
) -> (StatusCode, String, Value) {
    let body = body.to_string();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let host = "127.0.0.1:9180";
    let auth = tc3::authorization(
        &f.account.secret_id,
        &f.account.secret_key,
        service,
        "application/json",
        host,
        body.as_bytes(),
        ts,
    );
    let req = Request::post("/")
        .header("content-type", "application/json")
        .header("host", host)
        .header("x-tc-action", action)
        .header("x-tc-version", version)
        .header("x-tc-timestamp", ts.to_string())
        .header("authorization", auth)
        .body(Body::from(body))
        .expect("request");
    let resp = f.app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    (status, ctype, v["Response"].clone())
}

#[tokio::test]
async fn success_and_error_envelopes() {
    let f = fixture();
    let (status, ctype, r) = call(
        &f,
        "vpc",
        "2017-03-12",
        "CreateSecurityGroup",
        json!({"GroupName": "web", "GroupDescription": "d"}),
    )
    .await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/json")
    );
    assert!(r["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .is_some_and(|s| s.starts_with("sg-")));
    assert!(r["RequestId"].as_str().is_some_and(|s| s.len() == 36));

    let (status, ctype, r) = call(&f, "vpc", "2017-03-12", "Nope", json!({})).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/json")
    );
    assert_eq!(r["Error"]["Code"], "InvalidAction");
    let (_, _, r) = call(&f, "cvm", "2099-01-01", "DescribeInstances", json!({})).await;
    assert_eq!(r["Error"]["Code"], "NoSuchVersion");
}

#[tokio::test]
async fn failing_mutation_changes_nothing() {
    let f = fixture();
    let (_, _, r) = call(
        &f,
        "vpc",
        "2017-03-12",
        "CreateSecurityGroup",
        json!({"GroupName": "web", "GroupDescription": "d"}),
    )
    .await;
    let sg = r["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .expect("id")
        .to_string();
    let revision = f.store.revision().expect("revision");
    // The first rule is fine, the second is not: the whole call fails.
    let (_, _, r) = call(
        &f,
        "vpc",
        "2017-03-12",
        "CreateSecurityGroupPolicies",
        json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [
            {"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
            {"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "SecurityGroupId": sg, "Action": "ACCEPT"}
        ]}}),
    )
    .await;
    assert_eq!(r["Error"]["Code"], "InvalidParameter.Coexist");
    assert_eq!(f.store.revision().expect("revision"), revision);
    let (_, _, r) = call(
        &f,
        "vpc",
        "2017-03-12",
        "DescribeSecurityGroupPolicies",
        json!({"SecurityGroupId": sg}),
    )
    .await;
    assert_eq!(r["SecurityGroupPolicySet"]["Version"], "0");
    assert_eq!(r["SecurityGroupPolicySet"]["Ingress"], json!([]));
}
