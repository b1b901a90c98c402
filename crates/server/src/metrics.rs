//! Prometheus text metrics for `GET /metrics`: requests by service, action and
//! result code, a request latency histogram, and the store revision.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Request counters and latency histogram.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, String), u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Records one finished request; `code` is `OK` on success.
    pub fn observe(&self, service: &str, action: &str, code: &str, seconds: f64) {
        let mut m = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.requests
            .entry((service.to_string(), action.to_string(), code.to_string()))
            .or_default() += 1;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                m.buckets[i] += 1;
            }
        }
        m.count += 1;
        m.sum += seconds;
    }

    /// The exposition text.
    pub fn render(&self, revision: u64) -> String {
        let m = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        out.push_str(
            "# HELP palisade_api_requests_total API requests by service, action and result code.\n",
        );
        out.push_str("# TYPE palisade_api_requests_total counter\n");
        for ((service, action, code), n) in &m.requests {
            let _ = writeln!(
                out,
                "palisade_api_requests_total{{service=\"{}\",action=\"{}\",code=\"{}\"}} {n}",
                escape(service),
                escape(action),
                escape(code)
            );
        }
        out.push_str("# HELP palisade_api_request_duration_seconds API request latency.\n");
        out.push_str("# TYPE palisade_api_request_duration_seconds histogram\n");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "palisade_api_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
                m.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "palisade_api_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.count
        );
        let _ = writeln!(out, "palisade_api_request_duration_seconds_sum {}", m.sum);
        let _ = writeln!(
            out,
            "palisade_api_request_duration_seconds_count {}",
            m.count
        );
        out.push_str("# HELP palisade_store_revision The store's global revision.\n");
        out.push_str("# TYPE palisade_store_revision gauge\n");
        let _ = writeln!(out, "palisade_store_revision {revision}");
        let flows = &crate::actions::flows::METRICS;
        for (name, help, v) in [
            (
                "stored",
                "Flow records agents reported and this server stored.",
                &flows.stored,
            ),
            (
                "suppressed",
                "Decisions agents counted but did not record (rate limit, room).",
                &flows.suppressed,
            ),
            (
                "expired",
                "Flow records deleted by retention (age or per-account cap).",
                &flows.expired,
            ),
        ] {
            let _ = writeln!(out, "# HELP palisade_flow_records_{name}_total {help}");
            let _ = writeln!(out, "# TYPE palisade_flow_records_{name}_total counter");
            let n = v.load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(out, "palisade_flow_records_{name}_total {n}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_revision() {
        let m = Metrics::default();
        m.observe("vpc", "CreateSecurityGroup", "OK", 0.002);
        m.observe("vpc", "CreateSecurityGroup", "OK", 0.3);
        let text = m.render(7);
        assert!(text.contains(
            "palisade_api_requests_total{service=\"vpc\",action=\"CreateSecurityGroup\",code=\"OK\"} 2"
        ));
        assert!(text.contains("palisade_api_request_duration_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("palisade_api_request_duration_seconds_count 2"));
        assert!(text.contains("palisade_store_revision 7"));
    }
}
