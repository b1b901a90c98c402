//! `palisade serve`: the control plane (DESIGN.md sections 1, 4-6). It speaks
//! the Tencent Cloud API v3 envelope over HTTP or HTTPS, authenticates every
//! request with TC3-HMAC-SHA256 against per-account credentials, and serves
//! the VPC and CVM security-group actions plus Palisade's own `palisade`
//! service, on top of a [`palisade_store::Store`].
//!
//! Module map: [`serve`] accepts connections under a cap and timeouts;
//! [`tc3`] signs and verifies; [`replay`] is strict mode's memory of
//! signatures; [`http`] is the envelope, body budget, logging and metrics;
//! [`actions`] holds one module per resource family; [`params`] reads
//! request parameters with Tencent's error codes; [`console`] is the web
//! console under `/console`.

#![forbid(unsafe_code)]

pub mod actions;
pub mod console;
pub mod credentials;
pub mod error;
pub mod http;
pub mod metrics;
pub mod params;
pub mod replay;
pub mod serve;
pub mod tc3;
pub mod upgrade;

use palisade_model::limits::Limits;
use palisade_store::{Account, Location, Store, StoreError, StoreExt};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the account `serve` creates on first start.
pub const ADMIN_ACCOUNT: &str = "admin";
/// The file, in the data directory, holding the admin account's credentials.
pub const ADMIN_CREDENTIALS_FILE: &str = "admin-credentials.json";

/// Errors that stop the server from starting or running.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store failed to open or bootstrap.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Binding, TLS or file I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the admin credentials (and of the SQLite database
    /// `palisade.db` when `store` is `None`).
    pub data_dir: PathBuf,
    /// Where the store lives; `None` is `sqlite://DATA_DIR/palisade.db`.
    pub store: Option<Location>,
    /// PEM certificate chain and private key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Quotas.
    pub limits: Limits,
    /// Log one JSON object per line instead of human-readable text.
    pub log_json: bool,
    /// Strict signatures: `x-tc-action` and the body must be signed, and a
    /// write's signature is accepted once (docs/api.md).
    pub strict_signatures: bool,
    /// Most connections open at once ([`serve::DEFAULT_MAX_CONNECTIONS`]);
    /// lowered to fit the open-file limit.
    pub max_connections: usize,
    /// How long flow records are kept, and how many per account.
    pub flow_retention: actions::flows::FlowRetention,
    /// Versions of each group's policy set to keep; `None` keeps the
    /// store's setting (default [`palisade_store::DEFAULT_HISTORY_LIMIT`]).
    pub history_limit: Option<u64>,
}

/// The JSON printed by `palisade account create --output json` and written
/// to `admin-credentials.json`.
pub fn credentials_json(account: &Account) -> serde_json::Value {
    serde_json::json!({
        "AccountId": account.id,
        "SecretId": account.secret_id,
        "SecretKey": account.secret_key,
    })
}

/// Creates the `admin` account if it does not exist and writes its
/// credentials (mode 0600) to `DIR/admin-credentials.json`. Returns the path
/// written, or `None` when the account existed already.
pub fn ensure_admin(store: &dyn Store, data_dir: &Path) -> Result<Option<PathBuf>, ServerError> {
    if store.account_by_name(ADMIN_ACCOUNT)?.is_some() {
        return Ok(None);
    }
    let account = match store.create_account(ADMIN_ACCOUNT) {
        Ok(a) => a,
        // Another server on the same database created it first.
        Err(StoreError::AccountExists(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !data_dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(data_dir).map_err(|source| ServerError::Io {
            context: format!("creating {}", data_dir.display()),
            source,
        })?;
    }
    let path = data_dir.join(ADMIN_CREDENTIALS_FILE);
    let text = format!("{:#}\n", credentials_json(&account));
    write_private(&path, text.as_bytes()).map_err(|source| ServerError::Io {
        context: format!("writing {}", path.display()),
        source,
    })?;
    Ok(Some(path))
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        // An older file keeps its old mode through open(); force 0600.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(data)?;
    f.sync_all()
}

/// Opens the store, bootstraps the admin account and serves until SIGINT or
/// SIGTERM. Builds its own tokio runtime.
pub fn run_blocking(config: Config) -> Result<(), ServerError> {
    init_logging(config.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    runtime.block_on(run(config))
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or as
/// one JSON object per line. Does nothing if a subscriber is already set.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// The async body of [`run_blocking`].
pub async fn run(config: Config) -> Result<(), ServerError> {
    let location = config
        .store
        .clone()
        .unwrap_or_else(|| Location::Sqlite(config.data_dir.join("palisade.db")));
    // Opening PostgreSQL connects synchronously: keep it off the async threads.
    let (store, admin) = {
        let location = location.clone();
        let data_dir = config.data_dir.clone();
        let history_limit = config.history_limit;
        tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
            let store = palisade_store::open(&location)?;
            let admin = ensure_admin(store.as_ref(), &data_dir)?;
            upgrade::run_once(store.as_ref())?;
            if let Some(n) = history_limit {
                let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
                store.write(|tx| tx.set_marker(palisade_store::HISTORY_LIMIT_MARKER, n))?;
            }
            Ok((store, admin))
        })
        .await
        .map_err(|e| ServerError::Io {
            context: "opening the store".into(),
            source: std::io::Error::other(e.to_string()),
        })??
    };
    match &location {
        Location::Sqlite(_) => {
            tracing::info!(store = %location, "store opened (SQLite, WAL, synchronous=FULL)")
        }
        Location::Postgres(_) => tracing::info!(
            store = %location,
            "store opened (PostgreSQL, schema migrated; LISTEN palisade_revision)"
        ),
    }
    match admin {
        Some(path) => tracing::info!(
            path = %path.display(),
            "created account `admin`; its credentials are in this file (mode 0600)"
        ),
        None => tracing::info!(
            path = %config.data_dir.join(ADMIN_CREDENTIALS_FILE).display(),
            "account `admin` exists; its credentials were written to this file on first start"
        ),
    }
    let files = serve::raise_open_file_limit();
    let soft = files.as_ref().map_or(1024, |f| f.soft);
    let max_connections = serve::connection_cap(config.max_connections, soft);
    match &files {
        Ok(f) => tracing::info!(
            before = f.before,
            soft = f.soft,
            hard = f.hard,
            max_connections,
            "open-file limit {} (was {}, hard limit {}): at most {max_connections} connections",
            f.soft,
            f.before,
            f.hard
        ),
        Err(e) => tracing::warn!(
            error = %e,
            max_connections,
            "cannot read or raise the open-file limit: at most {max_connections} connections"
        ),
    }
    // Changes not confirmed by their deadline revert, here or on any
    // server sharing the store (a deadline passed while down: at once).
    tokio::spawn(actions::changes::reap(store.clone(), config.limits));
    let mut state = http::AppState::new(store, config.limits);
    if config.tls.is_some() {
        state = state.tls();
    }
    if config.strict_signatures {
        state = state.strict_signatures();
        tracing::info!(
            capacity = replay::CAPACITY,
            "strict signatures: x-tc-action and the body must be signed; a write's signature \
             is accepted once within its 300 s window (per server)"
        );
    }
    let state = Arc::new(state);
    let app = http::router(state.clone());
    {
        // Flow record retention: once a minute, off the async threads.
        let store = state.store.clone();
        let retention = config.flow_retention;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let store = store.clone();
                let gone = tokio::task::spawn_blocking(move || {
                    actions::flows::expire_once(store.as_ref(), &retention)
                })
                .await
                .unwrap_or(0);
                if gone > 0 {
                    tracing::info!(gone, "flow records expired");
                }
            }
        });
    }
    let shutdown = {
        let state = state.clone();
        async move {
            shutdown_signal().await;
            state.begin_shutdown();
        }
    };
    let listener = listen(config.listen).map_err(|source| ServerError::Io {
        context: format!("binding {}", config.listen),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| ServerError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    let tls = match &config.tls {
        None => None,
        Some((cert, key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|source| ServerError::Io {
                    context: format!(
                        "loading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    ),
                    source,
                })?
                .get_inner(),
        ),
    };
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    tracing::info!(
        listen = %local,
        header_timeout_s = serve::HEADER_TIMEOUT.as_secs(),
        body_timeout_s = http::BODY_TIMEOUT.as_secs(),
        "serving the Tencent-compatible API over {scheme}"
    );
    serve::serve(listener, app, tls, max_connections, shutdown).await;
    Ok(())
}

/// The listening socket's backlog (the kernel caps it at
/// `net.core.somaxconn`). Agents connect in bursts: a fleet starting, or
/// every agent of a stopped server moving to this one. With the usual
/// default of 128, the load test's 500 agents per server overflowed the
/// accept queue: the kernel dropped SYNs (a connect waits a second for its
/// retry) and logged "Possible SYN flooding ... Sending cookies" for the
/// server's port.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] (`SO_REUSEADDR` set, as the
/// standard library does).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Agents connecting at once all wait in the accept queue, even while
    /// the server accepts none of them: with the usual backlog (128) only
    /// 129 would, and the kernel would turn to SYN cookies for the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_agents_waits_in_the_accept_queue() {
        const AGENTS: usize = 300;
        let listener = listen("127.0.0.1:0".parse().expect("an address")).expect("listen");
        let addr = listener.local_addr().expect("bound");
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);

        // A connect the full queue does not answer is retried by the
        // kernel after a second: stop at the first that takes that long.
        let clients = tokio::task::spawn_blocking(move || {
            let mut clients = Vec::new();
            while clients.len() < AGENTS {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(900)) {
                    Ok(c) => clients.push(c),
                    Err(e) => return Err(format!("connect {}: {e}", clients.len() + 1)),
                }
            }
            Ok(clients)
        })
        .await
        .expect("the clients' thread");
        let clients = match clients {
            Ok(c) => c,
            Err(e) if somaxconn < AGENTS => panic!("somaxconn {somaxconn} is too small: {e}"),
            Err(e) => panic!("{e}"),
        };
        let mut accepted = Vec::new();
        while let Ok(Ok((s, _))) =
            tokio::time::timeout(Duration::from_millis(200), listener.accept()).await
        {
            accepted.push(s);
        }
        assert_eq!((clients.len(), accepted.len()), (AGENTS, AGENTS));
    }
}
