//! The web console (docs/console.md): server-rendered HTML under `/console`,
//! on the API's own listener and TLS. Nothing is fetched from elsewhere: the
//! one stylesheet is compiled in, and the pages use no script.
//!
//! Security model: an account signs in with its SecretId and SecretKey (an
//! agent's instance-scoped credential is refused); the server keeps the
//! session and hands the browser a random token in a cookie that is
//! `HttpOnly`, `SameSite=Strict`, `Path=/console` and, under TLS, `Secure`.
//! A session ends on sign-out, after [`IDLE`] without a request, after
//! [`LIFETIME`], or as soon as its credential is removed or rotated. Every
//! change is a `POST` carrying the session's CSRF token (compared in
//! constant time) and, when the browser sends `Origin`, from this origin.
//! Every answer carries a strict Content-Security-Policy.
//!
//! Every read and change calls [`crate::actions::dispatch`] in-process with
//! the session's account, exactly as the API does for a signed request: the
//! console has no access path of its own, so it has the API's isolation.

mod fleet;
mod html;
mod pages;
mod session;

use crate::actions::{self, Ctx};
use crate::error::ApiError;
use crate::http::AppState;
use crate::params::Params;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{Map, Value};
use session::{Session, Sessions};
use std::sync::Arc;
use std::time::Duration;

pub use pages::render_for_bench;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// The largest form accepted: the API's small-body size, so that forms,
/// like small API requests, need no share of the body budget (the largest
/// console form, a rule change's preview, is under 2 KiB).
const MAX_FORM_BYTES: usize = crate::http::SMALL_BODY_BYTES;
/// The session cookie.
const COOKIE: &str = "palisade_session";
/// The sign-in form's own token cookie (sign-in has no session yet).
const SIGNIN_COOKIE: &str = "palisade_signin";

/// Every console answer's Content-Security-Policy: the page's own
/// stylesheet, no script at all, forms posting only here, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console.css");

/// The console's state: the API's state and the sessions.
pub struct Console {
    app: Arc<AppState>,
    sessions: Sessions,
}

/// The routes under `/console`.
pub fn router(app: Arc<AppState>) -> Router {
    let console = Arc::new(Console {
        app,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/{*rest}", get(handle).post(handle))
        .with_state(console)
}

async fn home() -> Response {
    secured(redirect("/console/groups"))
}

/// A parsed form or query string, in order.
#[derive(Debug, Default, Clone)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }
}

/// Who is asking: the session's account and the request's inputs.
pub struct Caller<'a> {
    console: &'a Console,
    /// The signed-in session (a copy).
    pub session: Session,
    /// The session token (to set a flash message).
    token: String,
}

impl Caller<'_> {
    /// Runs an API action as the session's account: the same entry point
    /// (`actions::dispatch`) as a signed API request.
    pub fn call(&self, action: &str, params: Value) -> Result<Map<String, Value>, ApiError> {
        call_as(&self.console.app, &self.session.account_id, action, params)
    }

    /// A message shown once on the next page.
    pub fn flash(&self, message: impl Into<String>) {
        self.console.sessions.flash(&self.token, message.into());
    }
}

/// Runs `action` (its service found from its name) as `account`.
pub fn call_as(
    app: &AppState,
    account: &str,
    action: &str,
    params: Value,
) -> Result<Map<String, Value>, ApiError> {
    let service = actions::service_of(action)
        .ok_or_else(|| ApiError::internal(format!("the console called unknown action {action}")))?;
    let body = serde_json::to_vec(&params).map_err(ApiError::internal)?;
    let params = Params::from_body(&body)?;
    let ctx = Ctx {
        store: app.store.as_ref(),
        account,
        limits: &app.limits,
        rulesets: &app.rulesets,
        agent_of: None,
    };
    let result = actions::dispatch(&ctx, service, action, &params);
    if !action.starts_with("Describe") {
        match &result {
            Ok(_) => tracing::info!(account, action, code = "OK", "console change"),
            Err(e) => tracing::info!(
                account, action, code = %e.code, message = %e.message, "console change failed"
            ),
        }
    }
    result
}

/// What a page handler answers.
pub enum Answer {
    /// A page with a status.
    Page(StatusCode, html::Page),
    /// See other (after a change).
    Redirect(String),
    /// A page sent while it is made (a long operation showing progress).
    Stream(Streamed),
}

/// A page whose body is made while it is sent (status 200): its start
/// (the layout and `page.body`) goes out at once, then each piece `job`
/// hands its sender, as it comes; the sender answers `false` once the
/// browser has gone, and the job should then stop.
pub struct Streamed {
    /// The title, navigation and the body's first part.
    pub page: html::Page,
    /// Makes the rest of the body.
    pub job: Job,
}

/// The work of a [`Streamed`] page.
pub type Job = Box<dyn FnOnce(&Caller<'_>, &mut dyn FnMut(String) -> bool) + Send>;

/// What the page worker hands the async handler.
enum Reply {
    /// A whole answer (boxed: it is far larger than a receiver).
    Done(Box<(Answer, Session, Option<String>)>),
    /// A streamed page's pieces.
    Stream(tokio::sync::mpsc::Receiver<String>),
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The headers every console answer carries.
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(r: &mut Response, name: &str, value: &str, max_age: Option<u64>, secure: bool) {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Whether the request's `Origin`, when sent, is this server (the `Host`
/// the browser addressed). `Origin: null` (a sandboxed or opaque origin)
/// is refused; the pages' `Referrer-Policy: same-origin` keeps browsers
/// sending the real origin on the console's own forms.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    !host.is_empty() && origin_host == Some(host)
}

fn refuse(status: StatusCode, title: &str, text: &str) -> Response {
    secured(html_response(status, html::bare(title, text)))
}

async fn handle(State(console): State<Arc<Console>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix("/console/")
        .unwrap_or_default()
        .to_string();
    let query = Form::parse(parts.uri.query().unwrap_or_default().as_bytes());
    let post = parts.method == Method::POST;
    if path == "static/console.css" {
        let mut r = (StatusCode::OK, CSS).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
        return secured(r);
    }
    let form = if post {
        if !same_origin(&parts.headers) {
            return refuse(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was sent from another site: nothing was changed.",
            );
        }
        let read = tokio::time::timeout(
            crate::http::BODY_TIMEOUT,
            axum::body::to_bytes(body, MAX_FORM_BYTES),
        )
        .await;
        match read {
            Ok(Ok(b)) => Form::parse(&b),
            _ => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Refused",
                    "The form is too large or did not arrive in time: nothing was changed.",
                )
            }
        }
    } else {
        Form::default()
    };
    let secure = console.app.console_tls;
    if path == "signin" {
        return signin(&console, &parts.headers, post, &form, secure).await;
    }
    let token = cookie(&parts.headers, COOKIE).unwrap_or_default();
    let session = {
        let c = console.clone();
        let t = token.clone();
        tokio::task::spawn_blocking(move || c.sessions.check(&c.app, &t))
            .await
            .ok()
            .flatten()
    };
    let Some(session) = session else {
        if post {
            return refuse(
                StatusCode::FORBIDDEN,
                "Not signed in",
                "There is no session for this request (it ended, or the form came from \
                 another site): nothing was changed. Sign in again at /console/signin.",
            );
        }
        return secured(redirect("/console/signin"));
    };
    if post {
        if !session::token_eq(form.get("csrf"), &session.csrf) {
            return refuse(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's CSRF token is missing or wrong: nothing was changed. \
                 Reload the page and try again.",
            );
        }
        if path == "signout" {
            console.sessions.remove(&token);
            let mut r = redirect("/console/signin");
            set_cookie(&mut r, COOKIE, "", Some(0), secure);
            return secured(r);
        }
    }
    let c = console.clone();
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    let worker = tokio::task::spawn_blocking(move || {
        let caller = Caller {
            console: &c,
            session,
            token,
        };
        let answer = pages::route(&caller, &path, post, &query, &form);
        // A change's message waits for the page its redirect leads to.
        let flash = match answer {
            Answer::Page(..) | Answer::Stream(_) => c.sessions.take_flash(&caller.token),
            Answer::Redirect(_) => None,
        };
        let Answer::Stream(streamed) = answer else {
            let _ = reply_tx.send(Reply::Done(Box::new((
                answer,
                caller.session.clone(),
                flash,
            ))));
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if reply_tx.send(Reply::Stream(rx)).is_err() {
            return;
        }
        let mut send = |piece: String| tx.blocking_send(piece).is_ok();
        let start = html::layout_start(&streamed.page, &caller.session, flash.as_deref());
        if send(start + &streamed.page.body) {
            (streamed.job)(&caller, &mut send);
            send(html::LAYOUT_END.to_string());
        }
    });
    let reply = reply_rx.await.map(|r| match r {
        Reply::Done(done) => Ok(*done),
        Reply::Stream(rx) => Err(rx),
    });
    match reply {
        Ok(Ok((Answer::Redirect(to), _, _))) => secured(redirect(&to)),
        Ok(Ok((Answer::Page(status, page), session, flash))) => secured(html_response(
            status,
            html::layout(&page, &session, flash.as_deref()),
        )),
        Ok(Err(rx)) => {
            let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|piece| (Ok::<_, std::convert::Infallible>(piece), rx))
            });
            let mut r = axum::body::Body::from_stream(pieces).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            secured(r)
        }
        _ => {
            let why = match worker.await {
                Err(e) => e.to_string(),
                Ok(()) => "no answer".to_string(),
            };
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                &format!("the page failed: {why}"),
            )
        }
    }
}

async fn signin(
    console: &Arc<Console>,
    headers: &HeaderMap,
    post: bool,
    form: &Form,
    secure: bool,
) -> Response {
    if !post {
        let token = session::random_token();
        let mut r = html_response(StatusCode::OK, html::signin_page(&token, None));
        set_cookie(&mut r, SIGNIN_COOKIE, &token, Some(600), secure);
        return secured(r);
    }
    let expected = cookie(headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::token_eq(form.get("csrf"), &expected) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Refused",
            "The sign-in form's token is missing or wrong (the form is older than 10 \
             minutes, or came from another site). Open /console/signin again.",
        );
    }
    let (id, key) = (form.get("secret_id").to_string(), form.get("secret_key"));
    let key = key.to_string();
    let c = console.clone();
    let made = tokio::task::spawn_blocking(move || c.sessions.create(&c.app, &id, &key))
        .await
        .unwrap_or_else(|e| Err(format!("the sign-in failed: {e}")));
    match made {
        Ok(token) => {
            let mut r = redirect("/console/groups");
            set_cookie(&mut r, COOKIE, &token, None, secure);
            set_cookie(&mut r, SIGNIN_COOKIE, "", Some(0), secure);
            secured(r)
        }
        Err(message) => {
            let token = session::random_token();
            let mut r = html_response(
                StatusCode::UNAUTHORIZED,
                html::signin_page(&token, Some(&message)),
            );
            set_cookie(&mut r, SIGNIN_COOKIE, &token, Some(600), secure);
            secured(r)
        }
    }
}
