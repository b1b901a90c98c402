//! The web console's security model through the real router, without a
//! browser (the browser tests are tests/console): the session cookie's
//! attributes, the Content-Security-Policy, sign-in refusals, CSRF and
//! Origin checks on every change, and isolation between accounts.

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use palisade_model::Limits;
use palisade_server::console::CSP;
use palisade_server::http::{router, AppState};
use palisade_store::{Account, SqliteStore, Store};
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    app: axum::Router,
    alice: Account,
    bob: Account,
}

fn fixture(tls: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open_dir(dir.path()).expect("store"));
    let alice = store.create_account("alice").expect("account");
    let bob = store.create_account("bob").expect("account");
    let mut state = AppState::new(store, Limits::default());
    if tls {
        state = state.tls();
    }
    Fixture {
        _dir: dir,
        app: router(Arc::new(state)),
        alice,
        bob,
    }
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
