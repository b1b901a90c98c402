//! The HTTP surface: `POST /` with Tencent's API v3 envelope, `GET /metrics`.
//!
//! Every answer other than `GET /metrics`, success or error, wrong method
//! or path included, is HTTP 200 with `Content-Type: application/json`
//! exactly (the Python SDK ignores errors sent any other way) and a fresh
//! `RequestId`. Each request is logged once with its RequestId, service,
//! action, account and result code; secrets and signatures are never logged.
//!
//! A request is checked in the order that costs an attacker most and the
//! server least: its headers first (Authorization, timestamp, SecretId,
//! strict mode's rules), with no byte of the body read; then the body, read
//! within [`BODY_TIMEOUT`] against a global in-flight budget
//! ([`BODY_BUDGET_BYTES`]); then the signature over it.

use crate::actions::{self, Answer, Ctx};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::params::Params;
use crate::tc3;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use palisade_model::limits::Limits;
use palisade_model::ErrorCode;
use palisade_store::Store;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The bytes of request bodies being read or held by requests at once,
/// across the server. A request whose body would exceed it waits up to
/// [`BUDGET_WAIT`], then is refused with `RequestLimitExceeded`.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bodies up to this size do not count against [`BODY_BUDGET_BYTES`], so a
/// budget held by large bodies never stalls the small requests (describes,
/// agents' polls); the connection cap bounds their total (16 KiB each).
pub const SMALL_BODY_BYTES: usize = 16 * 1024;

/// How long a request waits for its share of [`BODY_BUDGET_BYTES`].
pub const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// How long the body of a request whose headers passed may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A refused request's body up to this size is read and dropped, so that
/// the client, still sending it, reads the answer instead of a reset; a
/// larger one is not read at all.
const REFUSED_DRAIN_BYTES: usize = 64 * 1024;

/// How long the body of a refused request is drained.
const REFUSED_DRAIN_TIME: Duration = Duration::from_secs(5);

/// The API version of the `vpc` and `cvm` services.
pub const TENCENT_VERSION: &str = "2017-03-12";
/// The API version of the `palisade` service.
pub const PALISADE_VERSION: &str = "2026-11-01";
/// The API version of the `sts` service.
pub const STS_VERSION: &str = "2018-08-13";

/// The services served, by the name a credential scope gives them.
const SERVICES: &[&str] = &["vpc", "cvm", "palisade", "sts"];

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Quotas.
    pub limits: Limits,
    /// Request metrics.
    pub metrics: Metrics,
    /// Resolved rulesets shared by the long-polls of a herd.
    pub(crate) rulesets: actions::RulesetCache,
    /// Callers' credentials, valid while their account is unchanged.
    pub(crate) credentials: crate::credentials::CredentialCache,
    /// Served over TLS: the console's cookies are `Secure`.
    pub(crate) console_tls: bool,
    /// Set when the server is shutting down: long-polls answer at once.
    shutting_down: tokio::sync::watch::Sender<bool>,
    /// Bytes of [`BODY_BUDGET_BYTES`] not held by a request.
    body_budget: Arc<Semaphore>,
    /// Strict mode (`--strict-signatures`): the signatures of accepted writes.
    replays: Option<crate::replay::ReplayWindow>,
}

impl AppState {
    /// State over `store`.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            store,
            limits,
            metrics: Metrics::default(),
            rulesets: actions::RulesetCache::default(),
            credentials: crate::credentials::CredentialCache::default(),
            shutting_down: tokio::sync::watch::Sender::new(false),
            body_budget: Arc::new(Semaphore::new(BODY_BUDGET_BYTES)),
            replays: None,
            console_tls: false,
        }
    }

    /// Served over TLS: the console marks its cookies `Secure`.
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.console_tls = true;
        self
    }

    /// Strict signatures (docs/api.md): `x-tc-action` must be signed, the
    /// body must be signed, and a write's signature is accepted once.
    #[must_use]
    pub fn strict_signatures(mut self) -> Self {
        self.replays = Some(crate::replay::ReplayWindow::default());
        self
    }

    /// Whether strict signatures are on.
    pub fn is_strict(&self) -> bool {
        self.replays.is_some()
    }

    /// Ends every pending long-poll (they answer `Changed: false`) so a
    /// graceful shutdown does not wait for them.
    pub fn begin_shutdown(&self) {
        self.shutting_down.send_replace(true);
    }
}

/// The router: `POST /`, `GET /metrics` and the web console under
/// `/console` ([`crate::console`]); anything else gets the envelope with
/// `UnsupportedProtocol`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(api).fallback(wrong_method))
        .route("/metrics", get(metrics))
        .fallback(wrong_path)
        .with_state(state.clone())
        .merge(crate::console::router(state))
}

async fn wrong_method(req: Request) -> Response {
    refused(
        ApiError::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "method {} is not served: call the API with POST / and a JSON body",
                req.method()
            ),
        ),
        req.into_body(),
    )
    .await
}

async fn wrong_path(req: Request) -> Response {
    // Echo at most a short, printable part of what the client sent.
    let path: String = req.uri().path().chars().take(100).collect();
    refused(
        ApiError::new(
            ErrorCode::UnsupportedProtocol,
            format!("path {path:?} is not served: call the API with POST / and a JSON body"),
        ),
        req.into_body(),
    )
    .await
}

/// The answer to a request refused before its body was wanted: a small
/// body is drained first (see [`REFUSED_DRAIN_BYTES`]).
async fn refused(error: ApiError, body: Body) -> Response {
    drain(body, REFUSED_DRAIN_BYTES, REFUSED_DRAIN_TIME).await;
    let request_id = new_request_id();
    tracing::info!(
        request_id = %request_id, code = %error.code, message = %error.message,
        "request refused"
    );
    envelope(&request_id, Err(error))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let store = state.store.clone();
    let revision = tokio::task::spawn_blocking(move || store.revision())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(revision),
    )
        .into_response()
}

/// What a finished request logs and counts.
struct Outcome {
    service: String,
    action: String,
    account: String,
    /// The caller's account id (empty before authentication).
    account_id: String,
    result: Result<Answer, ApiError>,
}

/// A fresh `RequestId`: a version-4 UUID from the thread's random
/// generator (`Uuid::new_v4` asks the kernel, one system call a request).
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

async fn api(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = new_request_id();
    let (parts, body) = req.into_parts();
    let headers = Arc::new(parts.headers);
    let action = header_str(&headers, "x-tc-action");
    let unattributed = |result| Outcome {
        service: String::new(),
        action: action.clone(),
        account: String::new(),
        account_id: String::new(),
        result,
    };
    // A join token's one action, unsigned (actions/join.rs says why).
    let joining = action == "JoinCluster" && !headers.contains_key(header::AUTHORIZATION);
    // A caller whose credential is cached is admitted here, on the async
    // side: a blocking-pool hop (two thread hand-offs) per request was a
    // visible share of a describe's time. Only a lookup that needs the
    // store goes to the pool, where the same checks run again in full.
    let admitted = if joining {
        Err(ApiError::internal("unreachable: a join is not admitted"))
    } else {
        match admit(&state, &headers, Lookup::Cached) {
            Some(admitted) => admitted,
            None => {
                let (st, h) = (state.clone(), headers.clone());
                tokio::task::spawn_blocking(move || admit(&st, &h, Lookup::Store))
                    .await
                    .unwrap_or_else(|e| {
                        Some(Err(ApiError::internal(format!("request task failed: {e}"))))
                    })
                    .unwrap_or_else(|| Err(ApiError::internal("credential lookup did not run")))
            }
        }
    };
    let read = match admitted {
        Err(_) if joining => Err(join(&state, &headers, body).await),
        Err(e) => {
            drain(body, REFUSED_DRAIN_BYTES, REFUSED_DRAIN_TIME).await;
            Err(Err(e))
        }
        Ok(admitted) => read_body(&state, &headers, body)
            .await
            .map(|body| (admitted, body))
            .map_err(Err),
    };
    let outcome = match read {
        Err(Ok(joined)) => joined,
        Err(Err(e)) => unattributed(Err(e)),
        Ok((admitted, (body, _budget))) => {
            let body = Arc::new(body);
            let method = parts.method.to_string();
            let mut outcome = if runs_inline(&state, &headers) {
                handle(&state, &method, &headers, &body, admitted)
            } else {
                run_handle(&state, &method, &headers, &body, admitted).await
            };
            // Long-poll of DescribeInstanceRuleset: wait here, on the async
            // side, so a waiting agent holds no blocking thread, for a commit
            // that changed the caller's account; then answer afresh (the
            // signature window, 300 s, outlasts any wait). A wake-up that
            // changed nothing for this account (the channel is conservative)
            // goes back to waiting until the deadline.
            if let Some((after, wait)) = long_poll(&outcome, &body) {
                let deadline = tokio::time::Instant::now() + wait;
                let mut rx = state.store.watch_account(&outcome.account_id);
                let mut stop = state.shutting_down.subscribe();
                let mut first = true;
                // What an agent holds, when it says: a wake-up that leaves
                // its content alone is told apart in memory.
                let holds = Params::from_body(&body).ok().and_then(|p| {
                    Some((
                        p.opt_str("InstanceId").ok()??,
                        p.opt_str("KnownDigest").ok()??,
                    ))
                });
                loop {
                    let woke = tokio::select! {
                        r = tokio::time::timeout_at(deadline, async {
                            if first {
                                rx.wait_for(|r| *r > after).await.map(drop)
                            } else {
                                rx.changed().await
                            }
                        }) => matches!(r, Ok(Ok(()))),
                        _ = stop.wait_for(|s| *s) => false,
                    };
                    first = false;
                    // A write wakes its account's whole herd at once: the
                    // first reads the new state, the others wait for it
                    // here, holding no database connection, then answer
                    // from the cache.
                    let seen = *rx.borrow();
                    if woke {
                        match state.rulesets.join_fill(&outcome.account_id, seen) {
                            actions::Fill::Ready => {}
                            actions::Fill::Wait(read) => read.wait(actions::FILL_WAIT).await,
                            actions::Fill::Lead(read) => {
                                let (st, account) = (state.clone(), outcome.account_id.clone());
                                let filled = tokio::task::spawn_blocking(move || {
                                    st.rulesets.fill(st.store.as_ref(), &account, seen)
                                })
                                .await;
                                // A failed read: the answer below reads the
                                // store itself and reports the error.
                                if matches!(filled, Ok(Ok(()))) {
                                    read.done();
                                }
                            }
                        }
                    }
                    // Most of a herd holds content the write left alone:
                    // back to waiting, without an answer built to be
                    // thrown away.
                    if let (true, Some((instance, known))) = (woke, &holds) {
                        if state
                            .rulesets
                            .unchanged(&outcome.account_id, seen, instance, known)
                            == Some(true)
                        {
                            continue;
                        }
                    }
                    outcome = run_again(&state, outcome, &body).await;
                    if !woke || long_poll(&outcome, &body).is_none() {
                        break;
                    }
                }
            }
            outcome
        }
    };
    let elapsed = started.elapsed();
    let code = match &outcome.result {
        Ok(_) => "OK".to_string(),
        Err(e) => e.code.to_string(),
    };
    // Label only known (service, action) pairs, so that arbitrary action
    // names sent by anyone cannot grow the metrics without bound.
    let known = actions::served(&outcome.service, &outcome.action);
    let (service_label, action_label) = if known {
        (outcome.service.as_str(), outcome.action.as_str())
    } else {
        ("unknown", "unknown")
    };
    state
        .metrics
        .observe(service_label, action_label, &code, elapsed.as_secs_f64());
    match &outcome.result {
        Ok(_) => tracing::info!(
            request_id = %request_id, service = %outcome.service, action = %outcome.action,
            account = %outcome.account, code = %code, ms = elapsed.as_millis() as u64, "request"
        ),
        Err(e) => tracing::info!(
            request_id = %request_id, service = %outcome.service, action = %outcome.action,
            account = %outcome.account, code = %code, ms = elapsed.as_millis() as u64,
            message = %e.message, "request failed"
        ),
    }
    envelope(&request_id, outcome.result)
}

/// The actions answered on the async thread that read the request, with
/// no hand-off to the blocking pool: each reads one row by its key (a
/// group's policy set) and is bounded by the per-group rule limits. A hop
/// to the pool and back (two thread wake-ups) cost more than such a read
/// on a local store.
const INLINE_ACTIONS: &[&str] = &["DescribeSecurityGroupPolicies"];

/// Whether the request runs inline ([`INLINE_ACTIONS`]): only when the
/// store's reads are local ([`Store::local_reads`]); over PostgreSQL every
/// read waits on the network, and goes to the pool. The header only picks
/// the thread: the request is checked and dispatched exactly as on the pool.
fn runs_inline(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(action) = headers.get("x-tc-action") else {
        return false;
    };
    let action = action.as_bytes().trim_ascii();
    state.store.local_reads() && INLINE_ACTIONS.iter().any(|a| a.as_bytes() == action)
}

async fn run_handle(
    state: &Arc<AppState>,
    method: &str,
    headers: &Arc<HeaderMap>,
    body: &Arc<Vec<u8>>,
    admitted: Admitted,
) -> Outcome {
    let (st, method, headers, body) = (
        state.clone(),
        method.to_string(),
        headers.clone(),
        body.clone(),
    );
    match tokio::task::spawn_blocking(move || handle(&st, &method, &headers, &body, admitted)).await
    {
        Ok(o) => o,
        Err(e) => Outcome {
            service: String::new(),
            action: String::new(),
            account: String::new(),
            account_id: String::new(),
            result: Err(ApiError::internal(format!("request task failed: {e}"))),
        },
    }
}

/// `JoinCluster`: the body is read within the same bounds as any request,
/// and the join token inside it is the only credential (no signature).
async fn join(state: &Arc<AppState>, headers: &HeaderMap, body: Body) -> Result<Outcome, ApiError> {
    let (body, _budget) = read_body(state, headers, body).await?;
    let version = header_str(headers, "x-tc-version");
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        if version != PALISADE_VERSION {
            return Err(ApiError::new(
                ErrorCode::NoSuchVersion,
                format!(
                    "JoinCluster is served at palisade version {PALISADE_VERSION}, not {version:?}"
                ),
            ));
        }
        let params = Params::from_body(&body)?;
        actions::join_cluster(st.store.as_ref(), &st.limits, &params)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::internal(format!("request task failed: {e}"))));
    Ok(Outcome {
        service: "palisade".into(),
        action: "JoinCluster".into(),
        account: String::new(),
        account_id: String::new(),
        result: result.map(Answer::Fields),
    })
}

/// Answers a long-poll again after a wake-up: the same action with the
/// same parameters for the same caller, whose signature, credential and
/// scope were checked when the request arrived (at most its `WaitSeconds`
/// before: 5 s for the agent, 50 s at most), so they are not looked up
/// again for every write that wakes it. The instance itself is looked up afresh (a deleted one is not
/// found).
async fn run_again(state: &Arc<AppState>, first: Outcome, body: &Arc<Vec<u8>>) -> Outcome {
    let (st, body) = (state.clone(), body.clone());
    let mut out = Outcome {
        result: Ok(Answer::Fields(Map::new())),
        ..first
    };
    let (service, action, account_id) = (
        out.service.clone(),
        out.action.clone(),
        out.account_id.clone(),
    );
    let result = tokio::task::spawn_blocking(move || {
        let params = Params::from_body(&body)?;
        let ctx = Ctx {
            store: st.store.as_ref(),
            account: &account_id,
            limits: &st.limits,
            rulesets: &st.rulesets,
            // Only `DescribeInstanceRuleset`, a read, is run again.
            agent_of: None,
        };
        actions::dispatch(&ctx, &service, &action, &params).map(Answer::Fields)
    })
    .await;
    out.result = match result {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(format!("request task failed: {e}"))),
    };
    out
}

/// `Some((AfterRevision, WaitSeconds))` when `outcome` is an unchanged
/// `DescribeInstanceRuleset` answer whose request asked to wait.
fn long_poll(outcome: &Outcome, body: &[u8]) -> Option<(u64, std::time::Duration)> {
    if outcome.service != "palisade" || outcome.action != "DescribeInstanceRuleset" {
        return None;
    }
    let fields = outcome.result.as_ref().ok()?.fields()?;
    if fields.get("Ruleset")?.get("Changed")? != &Value::Bool(false) {
        return None;
    }
    let params = Params::from_body(body).ok()?;
    let after = params.opt_uint("AfterRevision").ok()??;
    let wait = params.opt_uint("WaitSeconds").ok()??;
    (wait > 0).then(|| (after, std::time::Duration::from_secs(wait)))
}

/// Reads the body of a request whose headers passed: refused unread when
/// its declared length is over [`MAX_BODY_BYTES`] (and drained, up to
/// [`DRAIN_LIMIT`], so the client reads the answer), read within
/// [`BODY_TIMEOUT`], and, past [`SMALL_BODY_BYTES`], only with its share of
/// [`BODY_BUDGET_BYTES`], which the returned permit holds until the request
/// is answered.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), ApiError> {
    use futures_util::StreamExt;
    let too_large = || {
        ApiError::new(
            ErrorCode::RequestSizeLimitExceeded,
            format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(body, DRAIN_LIMIT, BODY_TIMEOUT).await;
        return Err(too_large());
    }
    // At most MAX_BODY_BYTES, checked above.
    let declared = declared.map(|n| n as usize);
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let take = |n: usize| {
        let budget = state.body_budget.clone();
        async move {
            // n <= MAX_BODY_BYTES, far below u32::MAX.
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            match tokio::time::timeout(BUDGET_WAIT, budget.acquire_many_owned(n)).await {
                Ok(Ok(p)) => Ok(p),
                _ => Err(ApiError::new(
                    ErrorCode::RequestLimitExceeded,
                    format!(
                        "the server is reading {BODY_BUDGET_BYTES} bytes of request bodies \
                         already; retry shortly"
                    ),
                )),
            }
        }
    };
    if let Some(n) = declared.filter(|n| *n > SMALL_BODY_BYTES) {
        permit = Some(take(n).await?);
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("the request body could not be read: {e}"),
                ))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let total = buf.len().saturating_add(chunk.len());
        if total > MAX_BODY_BYTES {
            drop(buf);
            drain_stream(stream, total, DRAIN_LIMIT, BODY_TIMEOUT).await;
            return Err(too_large());
        }
        // A body of unknown length (chunked) takes its share as it comes.
        if declared.is_none() && total > SMALL_BODY_BYTES {
            let more = take(total - buf.len().max(SMALL_BODY_BYTES)).await?;
            match &mut permit {
                Some(p) => p.merge(more),
                None => permit = Some(more),
            }
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, permit))
}

/// Reads and drops up to `limit` bytes of `body` for at most `time`.
async fn drain(body: Body, limit: usize, time: Duration) {
    drain_stream(body.into_data_stream(), 0, limit, time).await;
}

/// [`drain`] of a stream of which `total` bytes were read already.
async fn drain_stream(
    mut stream: axum::body::BodyDataStream,
    mut total: usize,
    limit: usize,
    time: Duration,
) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(time, async {
        while let Some(Ok(chunk)) = stream.next().await {
            total = total.saturating_add(chunk.len());
            if total > limit {
                break;
            }
        }
    })
    .await;
}

/// How much of an oversized body is read and dropped before giving up.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

fn header_str(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A request whose headers passed: who it claims to come from, before the
/// signature over the body is checked.
struct Admitted {
    pending: tc3::Pending,
    credential: palisade_store::Credential,
}

/// Where [`admit`] may look a caller's credential up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Only in the credential cache (no store read: safe on the async side).
    Cached,
    /// In the cache, then the store (blocking).
    Store,
}

/// The checks that need no body (see the module doc): the action is named,
/// the Authorization header, timestamp and SecretId hold, and in strict
/// mode `x-tc-action` and the body are signed. `None` only with
/// [`Lookup::Cached`], when the SecretId is not in the cache: run it again
/// with [`Lookup::Store`] (never an answer of "no such key").
fn admit(state: &AppState, headers: &HeaderMap, how: Lookup) -> Option<Result<Admitted, ApiError>> {
    if header_str(headers, "x-tc-action").is_empty() {
        return Some(Err(ApiError::missing("X-TC-Action")));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut credential = None;
    let mut lookup_error = None;
    let mut not_cached = false;
    let lookup = |secret_id: &str| {
        let found = match how {
            Lookup::Store => state.credentials.get(state.store.as_ref(), secret_id),
            Lookup::Cached => {
                let hit = state.credentials.cached(state.store.as_ref(), secret_id);
                not_cached = hit.is_none();
                Ok(hit)
            }
        };
        match found {
            Ok(Some(c)) => {
                let key = c.secret_key.clone();
                credential = Some(c);
                Some(key)
            }
            Ok(None) => None,
            Err(e) => {
                lookup_error = Some(e);
                None
            }
        }
    };
    let pending = tc3::check_headers(|name| headers.get(name).map(|v| v.as_bytes()), now, lookup);
    if not_cached {
        return None;
    }
    Some(admit_checked(state, pending, credential, lookup_error))
}

/// The rest of [`admit`], once the credential lookup ran.
fn admit_checked(
    state: &AppState,
    pending: Result<tc3::Pending, tc3::AuthError>,
    credential: Option<palisade_store::Credential>,
    lookup_error: Option<palisade_store::StoreError>,
) -> Result<Admitted, ApiError> {
    // A store that cannot be read is the server's fault, not a bad key.
    if let Some(e) = lookup_error {
        return Err(ApiError::from(e));
    }
    let pending = pending.map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    if state.is_strict() {
        if !pending.signs("x-tc-action") {
            return Err(ApiError::new(
                ErrorCode::AuthFailureInvalidAuthorization,
                "this server requires strict signatures: SignedHeaders must include \
                 x-tc-action (e.g. content-type;host;x-tc-action)",
            ));
        }
        if pending.unsigned_payload() {
            return Err(ApiError::new(
                ErrorCode::AuthFailureInvalidAuthorization,
                "this server requires strict signatures: the body must be signed \
                 (X-TC-Content-SHA256: UNSIGNED-PAYLOAD is refused)",
            ));
        }
    }
    let credential =
        credential.ok_or_else(|| ApiError::internal("admitted request without credential"))?;
    Ok(Admitted {
        pending,
        credential,
    })
}

fn handle(
    state: &AppState,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
    admitted: Admitted,
) -> Outcome {
    let mut out = Outcome {
        service: String::new(),
        action: header_str(headers, "x-tc-action"),
        account: String::new(),
        account_id: String::new(),
        result: Ok(Answer::Fields(Map::new())),
    };
    out.result = (|| {
        let Admitted {
            pending,
            credential,
        } = admitted;
        let verified = pending
            .verify(method, |name| headers.get(name).map(|v| v.as_bytes()), body)
            .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
        if let Some(replays) = &state.replays {
            if !out.action.starts_with("Describe") {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                match replays.admit(&verified.signature, verified.timestamp, now) {
                    crate::replay::Admission::Fresh => {}
                    crate::replay::Admission::Replayed => {
                        return Err(ApiError::new(
                            ErrorCode::AuthFailureSignatureFailure,
                            "this signature was already used for a write within its 300 s \
                             window (strict signatures refuse replays): sign the request anew",
                        ))
                    }
                    crate::replay::Admission::Full => {
                        return Err(ApiError::new(
                            ErrorCode::RequestLimitExceeded,
                            format!(
                                "this server remembers {} write signatures of the last 300 s \
                                 and is full; retry shortly",
                                crate::replay::CAPACITY
                            ),
                        ))
                    }
                }
            }
        }
        let account = &credential.account;
        out.account_id = account.id.clone();
        out.account = match &credential.instance_scope {
            None => account.name.clone(),
            Some(ins) => format!("{}/{ins}", account.name),
        };
        let service = service_of(&verified.service, &out.action)?;
        out.service = service.to_string();
        let expected = match service {
            "palisade" => PALISADE_VERSION,
            "sts" => STS_VERSION,
            _ => TENCENT_VERSION,
        };
        let version = header_str(headers, "x-tc-version");
        if version.is_empty() {
            return Err(ApiError::missing("X-TC-Version"));
        }
        if version != expected {
            return Err(ApiError::new(
                ErrorCode::NoSuchVersion,
                format!("version {version:?} of service {service} does not exist; use {expected}"),
            ));
        }
        let params = Params::from_body(body)?;
        if let Some(ins) = &credential.instance_scope {
            check_scope(ins, service, &out.action, &params)?;
        }
        let ctx = Ctx {
            store: state.store.as_ref(),
            account: &account.id,
            limits: &state.limits,
            rulesets: &state.rulesets,
            agent_of: credential.instance_scope.as_deref(),
        };
        actions::answer(&ctx, service, &out.action, &params)
    })();
    out
}

/// The service a verified request is for. A credential scope that names a
/// served service decides it, exactly as signed. Any other scope is what an
/// SDK that takes the service from the endpoint's first label signs when the
/// endpoint is an address (the Node.js SDK signs `127` for `127.0.0.1:9180`):
/// the action then decides, when exactly one service serves it.
///
/// What the signature covers is unchanged by this: the scope as signed, and
/// `X-TC-Action` only when it is among the signed headers (strict mode
/// requires it). Without it, a signed scope of `vpc` already lets whoever
/// holds the request change the action within `vpc`; a scope naming no
/// served service lets them change it to any action, of any service, that
/// the same body and key answer. docs/api.md says so.
fn service_of(scope: &str, action: &str) -> Result<&'static str, ApiError> {
    if let Some(s) = SERVICES.iter().find(|s| **s == scope) {
        return Ok(s);
    }
    actions::service_of(action).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidAction,
            format!(
                "service {scope:?} of the credential scope is not served here (vpc, cvm, \
                 palisade, sts), and action {action:?} is not served by exactly one of them"
            ),
        )
    })
}

/// What an agent credential (scoped to instance `ins`) may do: read that
/// instance's ruleset, report its status, and confirm (re-register) it.
fn check_scope(ins: &str, service: &str, action: &str, params: &Params) -> Result<(), ApiError> {
    let own = service == "palisade"
        && match action {
            "DescribeInstanceRuleset"
            | "ReportInstanceStatus"
            | "ReportFlowRecords"
            | "LeaveCluster" => params.opt_str("InstanceId")?.as_deref() == Some(ins),
            "RegisterInstances" => params
                .opt_typed::<Vec<serde_json::Map<String, Value>>>("Instances")?
                .is_some_and(|list| {
                    list.len() == 1
                        && list[0].get("InstanceId").and_then(Value::as_str) == Some(ins)
                }),
            _ => false,
        };
    if own {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::AuthFailureUnauthorizedOperation,
            format!(
                "this credential belongs to the agent of {ins}: it may only call palisade \
                 DescribeInstanceRuleset, ReportInstanceStatus, ReportFlowRecords, \
                 RegisterInstances or LeaveCluster for {ins}"
            ),
        ))
    }
}

fn envelope(request_id: &str, result: Result<Answer, ApiError>) -> Response {
    let answer = result.unwrap_or_else(|e| {
        let mut m = Map::new();
        m.insert(
            "Error".into(),
            serde_json::json!({"Code": e.code.as_str(), "Message": e.message}),
        );
        Answer::Fields(m)
    });
    let body = answer.envelope(request_id).unwrap_or_else(|e| {
        // Encoding JSON into memory fails only on a map key that is not a
        // string, which no answer has; still, answer in the envelope.
        let error = serde_json::json!({"Response": {
            "Error": {"Code": ErrorCode::InternalError.as_str(), "Message": format!("encoding the answer: {e}")},
            "RequestId": request_id,
        }});
        error.to_string().into_bytes()
    });
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_scope_decides_the_service_as_signed() {
        assert_eq!(service_of("vpc", "DescribeInstances").ok(), Some("vpc"));
        assert_eq!(service_of("sts", "GetCallerIdentity").ok(), Some("sts"));
        assert_eq!(
            service_of("palisade", "GetCallerIdentity").ok(),
            Some("palisade")
        );
    }

    #[test]
    fn another_scope_takes_the_one_service_of_the_action() {
        for (service, action) in actions::ACTIONS {
            assert_eq!(service_of("127", action).ok(), Some(*service), "{action}");
        }
        assert_eq!(service_of("127", "GetCallerIdentity").ok(), Some("sts"));
        let err = service_of("127", "RunInstances").expect_err("no service serves it");
        assert_eq!(err.code, ErrorCode::InvalidAction);
    }
}
