//! The web console's security model through the real router, without a
//! browser (the browser tests are tests/console): the session cookie's
//! attributes, the Content-Security-Policy, sign-in refusals, CSRF and
//! Origin checks on every change, and isolation between accounts; and the
//! pages over what agents report: rule hits, flow records, the enforcement
//! switch, rule tables over more than one page, and findings streamed.

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use palisade_model::Limits;
use palisade_server::console::{call_as, CSP};
use palisade_server::http::{router, AppState};
use palisade_store::{Account, SqliteStore, Store};
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    app: axum::Router,
    state: Arc<AppState>,
    alice: Account,
    bob: Account,
}

fn fixture(tls: bool) -> Fixture {
    fixture_with(tls, Limits::default())
}

fn fixture_with(tls: bool, limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open_dir(dir.path()).expect("store"));
    let alice = store.create_account("alice").expect("account");
    let bob = store.create_account("bob").expect("account");
    let mut state = AppState::new(store, limits);
    if tls {
        state = state.tls();
    }
    let state = Arc::new(state);
    Fixture {
        _dir: dir,
        app: router(state.clone()),
        state,
        alice,
        bob,
    }
}

/// An API action as `who`, in-process (the console's own entry point).
fn api(f: &Fixture, who: &Account, action: &str, params: serde_json::Value) -> serde_json::Value {
    let answer = call_as(&f.state, &who.id, action, params)
        .unwrap_or_else(|e| panic!("{action}: {}: {}", e.code, e.message));
    serde_json::Value::Object(answer)
}

/// A group with `rules` ingress rules (TCP ports 1000, 1001, ...) bound to
/// a new instance: the group's and the instance's ids.
fn bound_group(f: &Fixture, who: &Account, rules: usize) -> (String, String) {
    let set: Vec<_> = (0..rules)
        .map(|i| {
            serde_json::json!({ "Protocol": "TCP", "Port": (1000 + i).to_string(),
                                "CidrBlock": "198.18.0.0/15", "Action": "ACCEPT" })
        })
        .collect();
    let g = api(
        f,
        who,
        "CreateSecurityGroupWithPolicies",
        serde_json::json!({ "GroupName": "web", "GroupDescription": "",
                            "SecurityGroupPolicySet": { "Ingress": set } }),
    );
    let sg = g["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .expect("id")
        .to_string();
    let r = api(
        f,
        who,
        "RegisterInstances",
        serde_json::json!({ "Instances": [{ "PrivateIpAddresses": ["10.0.0.1"] }] }),
    );
    let ins = r["InstanceIdSet"][0].as_str().expect("id").to_string();
    api(
        f,
        who,
        "AssociateSecurityGroups",
        serde_json::json!({ "SecurityGroupIds": [sg], "InstanceIds": [ins] }),
    );
    (sg, ins)
}

/// The text of the element with `id` (up to its first tag's end).
fn by_id<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {page}"));
    let rest = &page[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("next tag") + start;
    &rest[start..end]
}

const HOST: &str = "127.0.0.1:9180";

async fn send(f: &Fixture, req: Request<Body>) -> (Response<Body>, String) {
    let r = f.app.clone().oneshot(req).await.expect("answer");
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.expect("body");
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, HOST)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, cookie: &str, form: &[(&str, &str)], origin: Option<&str>) -> Request<Body> {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut r = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        r = r.header(header::ORIGIN, o);
    }
    r.body(Body::from(body)).expect("request")
}

fn set_cookies(r: &Response<Body>) -> Vec<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect()
}

fn cookie_value(set: &[String], name: &str) -> String {
    set.iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .expect("the cookie is set")
        .to_string()
}

/// Signs in; returns the session cookie header and the page's CSRF token.
async fn sign_in(f: &Fixture, who: &Account) -> (String, String, Vec<String>) {
    let (r, _) = send(f, get("/console/signin", "")).await;
    let token = cookie_value(&set_cookies(&r), "palisade_signin");
    let (r, _) = send(
        f,
        post(
            "/console/signin",
            &format!("palisade_signin={token}"),
            &[
                ("csrf", &token),
                ("secret_id", &who.secret_id),
                ("secret_key", &who.secret_key),
            ],
            Some(&format!("http://{HOST}")),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = set_cookies(&r);
    let cookie = format!(
        "palisade_session={}",
        cookie_value(&set, "palisade_session")
    );
    let (r, page) = send(f, get("/console/groups", &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK, "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form with the token")
        .to_string();
    (cookie, csrf, set)
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_secure_under_tls() {
    let f = fixture(false);
    let (_, _, set) = sign_in(&f, &f.alice).await;
    let session = set
        .iter()
        .find(|c| c.starts_with("palisade_session="))
        .expect("session cookie");
    assert!(session.contains("; HttpOnly"), "{session}");
    assert!(session.contains("; SameSite=Strict"), "{session}");
    assert!(session.contains("; Path=/console"), "{session}");
    assert!(!session.contains("Secure"), "{session}");
    let f = fixture(true);
    let (_, _, set) = sign_in(&f, &f.alice).await;
    assert!(set
        .iter()
        .all(|c| c.ends_with("; Secure") || c.contains("; Secure;")));
}

#[tokio::test]
async fn every_answer_has_the_strict_policy_and_pages_need_a_session() {
    let f = fixture(false);
    for path in [
        "/console/groups",
        "/console/signin",
        "/console/static/console.css",
    ] {
        let (r, _) = send(&f, get(path, "")).await;
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
    assert!(CSP.contains("default-src 'none'") && !CSP.contains("script-src"));
    let (r, _) = send(&f, get("/console/groups", "palisade_session=forged")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/console/signin");
}

#[tokio::test]
async fn a_wrong_key_or_a_sign_in_without_its_token_is_refused() {
    let f = fixture(false);
    let (r, _) = send(&f, get("/console/signin", "")).await;
    let token = cookie_value(&set_cookies(&r), "palisade_signin");
    let wrong = format!("{}x", f.alice.secret_key);
    let (r, page) = send(
        &f,
        post(
            "/console/signin",
            &format!("palisade_signin={token}"),
            &[
                ("csrf", &token),
                ("secret_id", &f.alice.secret_id),
                ("secret_key", &wrong),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(page.contains("Wrong SecretId or SecretKey"));
    // Without the sign-in cookie (a form posted from another site).
    let (r, _) = send(
        &f,
        post(
            "/console/signin",
            "",
            &[
                ("csrf", &token),
                ("secret_id", &f.alice.secret_id),
                ("secret_key", &f.alice.secret_key),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_change_needs_the_token_and_this_origin() {
    let f = fixture(false);
    let (cookie, csrf, _) = sign_in(&f, &f.alice).await;
    fn form(token: &str) -> Vec<(&str, &str)> {
        vec![("name", "g1"), ("description", "d"), ("csrf", token)]
    }
    let own = format!("http://{HOST}");
    for (token, origin) in [
        ("", Some(own.as_str())),
        ("guess", Some(own.as_str())),
        (csrf.as_str(), Some("http://evil.example")),
        (csrf.as_str(), Some("null")),
    ] {
        let (r, page) = send(
            &f,
            post("/console/groups/create", &cookie, &form(token), origin),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{token} {origin:?}");
        assert!(page.contains("nothing was changed"), "{page}");
    }
    // No session at all: refused too.
    let (r, _) = send(&f, post("/console/groups/create", "", &form(&csrf), None)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, page) = send(&f, get("/console/groups", &cookie)).await;
    assert!(page.contains("No security groups."), "nothing was created");
    // With both, the group is made.
    let (r, _) = send(
        &f,
        post("/console/groups/create", &cookie, &form(&csrf), Some(&own)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, page) = send(&f, get("/console/groups", &cookie)).await;
    assert!(page.contains(">g1</a>"), "{page}");
}

#[tokio::test]
async fn another_account_sees_none_of_the_groups_and_sign_out_ends_the_session() {
    let f = fixture(false);
    let (alice, csrf, _) = sign_in(&f, &f.alice).await;
    let (r, _) = send(
        &f,
        post(
            "/console/groups/create",
            &alice,
            &[("name", "secret"), ("description", ""), ("csrf", &csrf)],
            None,
        ),
    )
    .await;
    let to = r.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_string();
    let (bob, bob_csrf, _) = sign_in(&f, &f.bob).await;
    let (_, page) = send(&f, get("/console/groups", &bob)).await;
    assert!(page.contains("No security groups.") && !page.contains("secret"));
    let (r, page) = send(&f, get(&to, &bob)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "{page}");
    let id = to.trim_start_matches("/console/groups/");
    let (r, _) = send(
        &f,
        post(&format!("{to}/delete"), &bob, &[("csrf", &bob_csrf)], None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, page) = send(&f, get(&to, &alice)).await;
    assert!(page.contains(id), "alice's group is still there");
    // Sign-out needs the token, then ends the session.
    let (r, _) = send(&f, post("/console/signout", &alice, &[], None)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (r, _) = send(
        &f,
        post("/console/signout", &alice, &[("csrf", &csrf)], None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (r, _) = send(&f, get("/console/groups", &alice)).await;
    assert_eq!(r.headers()[header::LOCATION], "/console/signin");
}

#[tokio::test]
async fn a_form_over_16_kib_is_refused() {
    let f = fixture(false);
    let (cookie, csrf, _) = sign_in(&f, &f.alice).await;
    let big = "x".repeat(20 * 1024);
    let (r, page) = send(
        &f,
        post(
            "/console/groups/create",
            &cookie,
            &[("name", "g"), ("description", &big), ("csrf", &csrf)],
            None,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{page}");
}

#[tokio::test]
async fn a_groups_rules_show_their_hits_and_last_use() {
    let f = fixture(false);
    let (sg, ins) = bound_group(&f, &f.alice, 3);
    let (cookie, _, _) = sign_in(&f, &f.alice).await;
    let (_, page) = send(&f, get(&format!("/console/groups/{sg}"), &cookie)).await;
    assert_eq!(
        page.matches("<td class=\"last-used\">never</td>").count(),
        3
    );
    // The agent's report (ReportInstanceStatus) of its kernel counters.
    api(
        &f,
        &f.alice,
        "ReportInstanceStatus",
        serde_json::json!({ "InstanceId": ins, "AppliedRevision": 1, "Counters": [
            { "SecurityGroupId": sg, "Direction": "ingress", "PolicyIndex": 1,
              "Packets": 42, "Bytes": 4200 } ] }),
    );
    let (r, page) = send(&f, get(&format!("/console/groups/{sg}"), &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let row = page
        .split("<tr id=\"ingress-1\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("rule 1's row");
    assert!(row.contains(">42</a></td>"), "{row}");
    assert!(row.contains(" UTC</td>"), "{row}");
    assert!(row.contains("/console/flows?group="), "{row}");
    assert_eq!(
        page.matches("<td class=\"last-used\">never</td>").count(),
        2
    );
    // A rule changed in place starts again from 0.
    api(
        &f,
        &f.alice,
        "ReplaceSecurityGroupPolicy",
        serde_json::json!({ "SecurityGroupId": sg, "SecurityGroupPolicySet": { "Ingress": [
            { "PolicyIndex": 1, "Protocol": "TCP", "Port": "8080",
              "CidrBlock": "198.18.0.0/15", "Action": "ACCEPT" } ] } }),
    );
    let (_, page) = send(&f, get(&format!("/console/groups/{sg}"), &cookie)).await;
    assert_eq!(
        page.matches("<td class=\"last-used\">never</td>").count(),
        3
    );
    assert!(!page.contains(">42</a>"), "{page}");
    // Bob sees neither the group nor its hits.
    let (bob, _, _) = sign_in(&f, &f.bob).await;
    let (r, page) = send(&f, get(&format!("/console/groups/{sg}"), &bob)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!page.contains(">42<"));
}

#[tokio::test]
async fn the_flows_page_filters_and_pages_the_accounts_records() {
    let f = fixture(false);
    let (sg, ins) = bound_group(&f, &f.alice, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let records: Vec<_> = (0..70u64)
        .map(|i| {
            let mut r = serde_json::json!({
                "InstanceId": ins, "Direction": "ingress", "SrcAddr": format!("198.51.100.{i}"),
                "DstAddr": "10.0.0.1", "SrcPort": 40000 + i, "DstPort": 1000, "Protocol": 6,
                "Action": "ACCEPT", "Decisions": 1, "Start": now - i, "End": now - i,
                "Rule": { "SecurityGroupId": sg, "PolicyIndex": 0, "Revision": 1 } });
            if i % 2 == 1 {
                r["Action"] = "DROP".into();
                r["DstPort"] = 23.into();
                r.as_object_mut().expect("object").remove("Rule");
            }
            r
        })
        .collect();
    api(
        &f,
        &f.alice,
        "ReportFlowRecords",
        serde_json::json!({ "InstanceId": ins, "FlowRecords": records }),
    );
    let (cookie, _, _) = sign_in(&f, &f.alice).await;
    let (r, page) = send(&f, get("/console/flows", &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK, "{page}");
    assert_eq!(by_id(&page, "page-at"), "Page 1 of 2 (70 in all)");
    assert_eq!(page.matches("<td class=\"verdict\">").count(), 50);
    assert!(page.contains("rel=\"next\""), "{page}");
    let (_, page) = send(&f, get("/console/flows?since=1h&page=2", &cookie)).await;
    assert_eq!(by_id(&page, "page-at"), "Page 2 of 2 (70 in all)");
    assert_eq!(page.matches("<td class=\"verdict\">").count(), 20);
    assert!(page.contains("198.51.100.69:40069"), "the oldest last");
    let (_, page) = send(
        &f,
        get(
            "/console/flows?verdict=DROP&port=23&protocol=tcp&peer=198.51.100.0%2F27",
            &cookie,
        ),
    )
    .await;
    assert_eq!(by_id(&page, "page-at"), "Page 1 of 1 (16 in all)");
    assert_eq!(page.matches("<td class=\"verdict\">DROP</td>").count(), 16);
    assert_eq!(page.matches("default drop").count(), 16);
    let (_, page) = send(
        &f,
        get(
            &format!("/console/flows?group={sg}&index=0&direction=ingress"),
            &cookie,
        ),
    )
    .await;
    assert_eq!(by_id(&page, "page-at"), "Page 1 of 1 (35 in all)");
    let (r, page) = send(&f, get("/console/flows?port=99999", &cookie)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("role=\"alert\""), "{page}");
    let (bob, _, _) = sign_in(&f, &f.bob).await;
    let (_, page) = send(&f, get("/console/flows?since=", &bob)).await;
    assert_eq!(by_id(&page, "page-at"), "Page 1 of 1 (0 in all)");
}

#[tokio::test]
async fn the_enforcement_switch_needs_the_token_and_its_own_account() {
    let f = fixture(false);
    let (_, ins) = bound_group(&f, &f.alice, 1);
    let (cookie, csrf, _) = sign_in(&f, &f.alice).await;
    let path = format!("/console/instances/{ins}");
    let (_, page) = send(&f, get(&path, &cookie)).await;
    assert_eq!(by_id(&page, "enforcement"), "ENFORCE");
    let switch = format!("{path}/enforcement");
    fn form(token: &str) -> Vec<(&str, &str)> {
        vec![("mode", "AUDIT"), ("seen", "ENFORCE"), ("csrf", token)]
    }
    let mode = |f: &Fixture| {
        api(
            f,
            &f.alice,
            "DescribeInstanceStatus",
            serde_json::json!({ "InstanceIds": [ins] }),
        )["InstanceStatusSet"][0]["Enforcement"]
            .clone()
    };
    let (r, _) = send(&f, post(&switch, &cookie, &form("guess"), None)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(mode(&f), "ENFORCE");
    let (bob, bob_csrf, _) = sign_in(&f, &f.bob).await;
    let (r, _) = send(&f, post(&switch, &bob, &form(&bob_csrf), None)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(mode(&f), "ENFORCE");
    let (r, _) = send(&f, post(&switch, &cookie, &form(&csrf), None)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(mode(&f), "AUDIT");
    let (_, page) = send(&f, get(&path, &cookie)).await;
    assert_eq!(by_id(&page, "enforcement"), "AUDIT");
    assert!(page.contains("now AUDIT"), "the flash message");
    // The same form again is stale: the mode is no longer ENFORCE.
    let (r, page) = send(&f, post(&switch, &cookie, &form(&csrf), None)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "{page}");
    assert_eq!(mode(&f), "AUDIT");
}

#[tokio::test]
async fn a_rule_table_longer_than_a_page_is_paged() {
    let limits = Limits {
        rules_per_direction: 250,
        ..Limits::default()
    };
    let f = fixture_with(false, limits);
    let (sg, _) = bound_group(&f, &f.alice, 230);
    let (cookie, _, _) = sign_in(&f, &f.alice).await;
    let path = format!("/console/groups/{sg}");
    let (_, page) = send(&f, get(&path, &cookie)).await;
    assert_eq!(by_id(&page, "ingress_page-at"), "Page 1 of 3 (230 in all)");
    assert!(page.contains("<tr id=\"ingress-99\">") && !page.contains("<tr id=\"ingress-100\">"));
    assert!(page.contains("aria-label=\"Pages of ingress rules\""));
    assert!(
        !page.contains("egress_page-at"),
        "one page of egress rules: no pager"
    );
    let (r, page) = send(&f, get(&format!("{path}?ingress_page=3"), &cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(by_id(&page, "ingress_page-at"), "Page 3 of 3 (230 in all)");
    assert!(page.contains("<tr id=\"ingress-200\">") && page.contains("<tr id=\"ingress-229\">"));
    assert!(!page.contains("<tr id=\"ingress-199\">"));
    // Rule 200's controls name its index in the whole list.
    assert!(page.contains("aria-label=\"Move ingress rule 200 up\""));
    assert!(
        page.contains(&format!(
            "href=\"/console/groups/{sg}?egress_page=&amp;ingress_page=2\" rel=\"prev\""
        )),
        "{page}"
    );
}

#[tokio::test]
async fn findings_are_streamed_with_their_progress() {
    let f = fixture(false);
    bound_group(&f, &f.alice, 2);
    let (cookie, _, _) = sign_in(&f, &f.alice).await;
    let r = f
        .app
        .clone()
        .oneshot(get("/console/findings", &cookie))
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
    let mut body = r.into_body().into_data_stream();
    let mut pieces = Vec::new();
    while let Some(data) = futures_util::StreamExt::next(&mut body).await {
        pieces.push(String::from_utf8_lossy(&data.expect("data")).into_owned());
    }
    assert!(pieces.len() > 3, "sent in pieces: {pieces:?}");
    assert!(
        pieces[0].contains("<h1>Findings</h1>"),
        "the page starts at once"
    );
    assert!(pieces
        .iter()
        .any(|p| p.contains("Working&hellip; Reading the security groups.")));
    let page = pieces.concat();
    assert!(by_id(&page, "done").starts_with("Done in "), "{page}");
    assert!(page.contains("id=\"counts\""), "{page}");
    assert!(page.ends_with("</html>\n"));
}
