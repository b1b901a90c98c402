//! Connections: the accept loop of `palisade serve`, the same for HTTP and
//! HTTPS, with the limits that keep a client without credentials from
//! exhausting the server (docs/api.md, "Connections and timeouts").
//!
//! - At most `max_connections` connections at once (a semaphore taken
//!   *before* `accept`): past it, new connections wait in the kernel's
//!   listen backlog instead of costing a file descriptor, so the server
//!   never meets `EMFILE`.
//! - The TLS handshake must finish within [`TLS_HANDSHAKE_TIMEOUT`].
//! - A request head must arrive within [`HEADER_TIMEOUT`] of the server
//!   starting to wait for it. hyper starts that timer when it waits for a
//!   head, before the first byte, so it is also the idle timeout of a new
//!   or kept-alive connection, and a client trickling bytes is cut at the
//!   same moment as one sending nothing.
//! - A head is at most [`MAX_HEAD_BYTES`] (hyper answers 431 past it), and
//!   a connection's read buffer stops growing there (`max_buf_size`).
//! - HTTP/1.1 only (the SDKs, tccli, ureq all speak it; TLS offers only
//!   `http/1.1` in ALPN).
//!
//! The body timeout and budget are the request handler's ([`crate::http`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a connection may take to deliver a whole request head, counted
/// from when the server starts waiting for it (so also the idle timeout).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// File descriptors kept for everything but client connections (the
/// listener, database files or connections, logs).
pub const RESERVED_FILES: u64 = 256;

/// How long a graceful shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The open-file limit before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most an unprivileged process may raise to).
    pub hard: u64,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, which
/// needs no privilege.
pub fn raise_open_file_limit() -> std::io::Result<OpenFiles> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    Ok(OpenFiles { before, soft, hard })
}

/// The connection cap: `requested`, but never more than the open-file
/// limit leaves after [`RESERVED_FILES`].
pub fn connection_cap(requested: usize, soft_limit: u64) -> usize {
    let room = usize::try_from(soft_limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    requested.min(room).max(1)
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes, then lets open requests finish for up to 5 s.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let tls = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let mut last_full_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_full_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections,
                        "connection cap reached: new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS pass as the server frees
                    // resources; a connection reset before accept is the
                    // client's. Either way, go on after a pause that keeps
                    // a persistent error from spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = watcher.watch(http.serve_connection(io, service)).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = watcher.watch(http.serve_connection(io, service)).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_servers_own_files() {
        assert_eq!(connection_cap(8192, 1024), 768);
        assert_eq!(connection_cap(8192, 1_048_576), 8192);
        assert_eq!(connection_cap(8192, 10), 1);
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let files = raise_open_file_limit().expect("getrlimit");
        #[cfg(target_os = "linux")]
        assert_eq!(files.soft, files.hard);
        assert_eq!(
            rlimit::Resource::NOFILE.get_soft().expect("getrlimit"),
            files.soft
        );
        assert!(files.soft >= files.before);
    }
}
