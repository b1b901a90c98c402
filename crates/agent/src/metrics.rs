//! The agent's own metrics (issue 18, "Metrics"): what the flow recorder
//! saw, suppressed and shipped, the revision the kernel holds and failed
//! loads, in the Prometheus text format on an optional local endpoint
//! (`palisade agent --metrics-listen 127.0.0.1:9469`, off by default).
//!
//! The endpoint is small on purpose: it answers `GET /metrics` and nothing
//! else, on a thread of its own with a one-thread runtime, at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed unread), each
//! closed after [`CONNECTION_TIMEOUT`], so a scraper cannot hold the agent
//! up or make it grow. It uses hyper, as `palisade serve` does.

use crate::error::AgentError;
use crate::flowlog::RecorderStats;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are closed unread.
pub const MAX_CONNECTIONS: usize = 8;
/// The longest a connection stays open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's counters; every field is read and written without locks.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// The revision whose rules the kernel holds (0 before the first load).
    pub applied_revision: AtomicU64,
    /// Loads of the rules into the kernel that failed.
    pub apply_errors: AtomicU64,
    /// Decisions the recorder read from the kernel's log.
    pub flow_seen: AtomicU64,
    /// Decisions not recorded: over the kernel's rate limit, no room in
    /// the aggregator, or dropped after failed shipping.
    pub flow_suppressed: AtomicU64,
    /// Records the server took.
    pub flow_shipped: AtomicU64,
    /// `ReportFlowRecords` calls that no server took (their records are
    /// kept for the next try, up to the recorder's bound).
    pub flow_ship_errors: AtomicU64,
}

impl AgentMetrics {
    /// Takes the recorder's running totals.
    pub fn set_recorder(&self, s: &RecorderStats) {
        self.flow_seen.store(s.seen, Ordering::Relaxed);
        self.flow_suppressed.store(s.suppressed, Ordering::Relaxed);
        self.flow_shipped.store(s.shipped, Ordering::Relaxed);
        self.flow_ship_errors
            .store(s.ship_errors, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let metrics: [(&str, &str, &str, &AtomicU64); 6] = [
            (
                "palisade_agent_applied_revision",
                "gauge",
                "The revision whose rules the kernel holds (0 before the first load).",
                &self.applied_revision,
            ),
            (
                "palisade_agent_apply_errors_total",
                "counter",
                "Loads of the rules into the kernel that failed.",
                &self.apply_errors,
            ),
            (
                "palisade_agent_flow_records_seen_total",
                "counter",
                "Decisions the flow recorder read from the kernel's log.",
                &self.flow_seen,
            ),
            (
                "palisade_agent_flow_records_suppressed_total",
                "counter",
                "Decisions not recorded: over the node's rate limit, no room in the aggregator, or dropped after failed shipping.",
                &self.flow_suppressed,
            ),
            (
                "palisade_agent_flow_records_shipped_total",
                "counter",
                "Flow records the server took.",
                &self.flow_shipped,
            ),
            (
                "palisade_agent_flow_ship_errors_total",
                "counter",
                "ReportFlowRecords calls that no server took.",
                &self.flow_ship_errors,
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

/// Binds `listen` now (so a taken port is the caller's error) and serves
/// `GET /metrics` from `metrics` on a thread of its own for as long as the
/// process runs. Returns the bound address (`127.0.0.1:0` picks a port).
pub fn serve(listen: SocketAddr, metrics: Arc<AgentMetrics>) -> Result<SocketAddr, AgentError> {
    let io = |context: String| move |source| AgentError::Io { context, source };
    let listener = TcpListener::bind(listen).map_err(io(format!("--metrics-listen {listen}")))?;
    let bound = listener
        .local_addr()
        .map_err(io(format!("--metrics-listen {listen}")))?;
    listener
        .set_nonblocking(true)
        .map_err(io(format!("--metrics-listen {listen}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(io("the metrics endpoint's runtime".into()))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept(listener, metrics)))
        .map_err(io("the metrics endpoint's thread".into()))?;
    Ok(bound)
}

async fn accept(listener: TcpListener, metrics: Arc<AgentMetrics>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        eprintln!("agent: warning: the metrics endpoint cannot listen");
        return;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // Full: the connection is closed unread.
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &metrics)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

fn answer<B>(request: &hyper::Request<B>, metrics: &AgentMetrics) -> hyper::Response<String> {
    let (status, kind, body) =
        if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
            (200, "text/plain; version=0.0.4", metrics.render())
        } else {
            (404, "text/plain", "not found: GET /metrics\n".to_string())
        };
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let m = AgentMetrics::default();
        m.set_recorder(&RecorderStats {
            seen: 7,
            suppressed: 2,
            shipped: 5,
            ship_errors: 1,
        });
        m.applied_revision.store(42, Ordering::Relaxed);
        let text = m.render();
        for line in [
            "palisade_agent_applied_revision 42",
            "palisade_agent_apply_errors_total 0",
            "palisade_agent_flow_records_seen_total 7",
            "palisade_agent_flow_records_suppressed_total 2",
            "palisade_agent_flow_records_shipped_total 5",
            "palisade_agent_flow_ship_errors_total 1",
            "# TYPE palisade_agent_applied_revision gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn serves_get_metrics_and_nothing_else() -> Result<(), Box<dyn std::error::Error>> {
        let m = Arc::new(AgentMetrics::default());
        m.flow_seen.store(3, Ordering::Relaxed);
        let addr = serve("127.0.0.1:0".parse()?, m)?;
        let base = format!("http://{addr}");
        let r = ureq::get(&format!("{base}/metrics")).call()?;
        assert_eq!(r.content_type(), "text/plain");
        assert!(r
            .into_string()?
            .contains("palisade_agent_flow_records_seen_total 3"));
        match ureq::get(&format!("{base}/other")).call() {
            Err(ureq::Error::Status(404, _)) => {}
            other => panic!("{other:?}"),
        }
        match ureq::post(&format!("{base}/metrics")).call() {
            Err(ureq::Error::Status(404, _)) => {}
            other => panic!("{other:?}"),
        }
        // A taken port is the caller's error.
        assert!(serve(addr, Arc::new(AgentMetrics::default())).is_err());
        Ok(())
    }
}
