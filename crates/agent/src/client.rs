//! The agent's side of the `palisade` service (version `2026-11-01`,
//! DESIGN.md section 4): TC3-signed `POST /` calls with Tencent's envelope.
//! [`ControlPlane`] is the trait the sync loop uses, so it is tested with a
//! fake; [`HttpControlPlane`] is the real client.

use crate::control::ControlUid;
use crate::error::AgentError;
use palisade_client::tc3;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use palisade_protocol::service::{
    InstanceRuleset, InstanceStatus as AgentStatus, RuleCounter, RulesetRequest, SERVICE, VERSION,
};

/// The calls the agent makes.
pub trait ControlPlane {
    /// The instance's resolved ruleset (`DescribeInstanceRuleset`). With
    /// `after`, the server may hold the answer up to `wait` until its
    /// revision passes `after` (long poll).
    fn ruleset(
        &mut self,
        instance_id: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<InstanceRuleset, AgentError>;
    /// Creates the instance with these private IPs (`RegisterInstances`).
    fn register(&mut self, instance_id: &str, private_ips: &[String]) -> Result<(), AgentError>;
    /// Reports the applied revision, counters and errors (`ReportInstanceStatus`).
    fn report(&mut self, status: &AgentStatus) -> Result<(), AgentError>;
}

/// A TC3-signing HTTP(S) client of one server.
pub struct HttpControlPlane {
    endpoint: String,
    host: String,
    secret_id: String,
    secret_key: String,
    http: ureq::Agent,
    /// The `Digest` of the last ruleset this server answered: sent back as
    /// `KnownDigest`, so a long poll only ends early when the rules differ
    /// from what the agent holds.
    known_digest: Option<String>,
    /// The longest answer read ([`DEFAULT_MAX_RESPONSE_BYTES`] by default).
    max_response_bytes: u64,
    /// The uid the connections are opened as ([`crate::control`]).
    control: ControlUid,
    /// Whether a refused switch to the control uid was reported already.
    control_warned: AtomicBool,
}

/// The longest answer the agent reads by default (`palisade agent
/// --max-response-bytes`): 8 MiB. A `DescribeInstanceRuleset` answer at
/// the compile budget ([`crate::compile::DEFAULT_MAX_ELEMENTS`]) of single
/// IPv4 addresses, each listed once, is about 3.5 MB (14 bytes with quotes
/// and comma); the rest is room for IPv6 addresses and lists that several
/// rules repeat. A longer answer is refused unread, whatever the server
/// (or anyone on the path of a plain-HTTP connection) sends.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

impl HttpControlPlane {
    /// A client of `endpoint` (`http://HOST:PORT` or `https://...`).
    pub fn new(
        endpoint: &str,
        secret_id: &str,
        secret_key: &str,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .ok_or_else(|| AgentError::Transport {
                action: "--server".into(),
                message: format!("{endpoint:?}: expected http://HOST:PORT or https://HOST:PORT"),
            })?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        if host.is_empty() {
            return Err(AgentError::Transport {
                action: "--server".into(),
                message: format!("{endpoint:?}: no host"),
            });
        }
        Ok(Self {
            endpoint,
            host,
            secret_id: secret_id.to_string(),
            secret_key: secret_key.to_string(),
            http: ureq::AgentBuilder::new().timeout(timeout).build(),
            known_digest: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            control: ControlUid::none(),
            control_warned: AtomicBool::new(false),
        })
    }

    /// Opens the connections as `control` ([`crate::control`]), so that the
    /// node's groups never cut the agent off from this server.
    pub fn with_control_uid(mut self, control: ControlUid) -> Self {
        self.control = control;
        self
    }

    /// Reads answers of at most `bytes` bytes; longer ones are an error.
    pub fn with_max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Trusts the CA certificates of the PEM file `path` (instead of the
    /// public web roots) for an `https://` server with a private CA or a
    /// self-signed certificate.
    pub fn with_ca_file(
        mut self,
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        let config =
            palisade_client::tls_config_from_ca_file(path).map_err(|e| AgentError::Io {
                context: format!("reading CA certificates from {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
        self.http = ureq::AgentBuilder::new()
            .timeout(timeout)
            .tls_config(config)
            .build();
        Ok(self)
    }

    /// Calls `action` of the `palisade` service; returns the `Response` object.
    pub fn call(&self, action: &str, params: &Value) -> Result<Value, AgentError> {
        self.call_service(SERVICE, VERSION, action, params)
    }

    /// Calls `action` of any service (`vpc`, `cvm` at `2017-03-12`, ...).
    pub fn call_service(
        &self,
        service: &str,
        version: &str,
        action: &str,
        params: &Value,
    ) -> Result<Value, AgentError> {
        let text = self.post(service, version, action, params)?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| AgentError::Transport {
            action: action.to_string(),
            message: format!("the answer is not JSON: {e}"),
        })?;
        let response = v.get("Response").ok_or_else(|| AgentError::Transport {
            action: action.to_string(),
            message: "the answer has no Response".into(),
        })?;
        if let Some(err) = response.get("Error") {
            return Err(api_error(
                action,
                err.get("Code").and_then(Value::as_str),
                err.get("Message").and_then(Value::as_str),
            ));
        }
        Ok(response.clone())
    }

    /// Sends one signed call and reads its answer, at most
    /// `max_response_bytes` of it.
    fn post(
        &self,
        service: &str,
        version: &str,
        action: &str,
        params: &Value,
    ) -> Result<Vec<u8>, AgentError> {
        let body = params.to_string();
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let transport = |message: String| AgentError::Transport {
            action: action.to_string(),
            message,
        };
        let nonce = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .http
            .post(&format!("{}/", self.endpoint))
            .set("X-TC-Version", version)
            .set("X-TC-Region", "ap-guangzhou");
        for (name, value) in tc3::signed_headers(
            &self.secret_id,
            &self.secret_key,
            service,
            action,
            &self.host,
            body.as_bytes(),
            ts,
            &nonce,
        ) {
            request = request.set(name, &value);
        }
        // The connection (and the name lookup) is made inside `send_string`.
        let (sent, switch) = self
            .control
            .run(|| request.send_string(&body).map_err(|e| e.to_string()));
        if let Some(e) = switch {
            if !self.control_warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "agent: warning: cannot open server connections as the control uid \
                     (needs CAP_SETUID): the node's groups may cut this agent off: {e}"
                );
            }
        }
        let resp = sent.map_err(transport)?;
        let max = self.max_response_bytes;
        let too_long = || {
            transport(format!(
                "the answer is longer than {max} bytes (--max-response-bytes); not read"
            ))
        };
        let declared = resp
            .header("Content-Length")
            .and_then(|n| n.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(too_long());
        }
        // Sized once when the length is known: growing by doubling would
        // hold up to twice the answer while it is read.
        let mut text = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
        std::io::Read::read_to_end(
            &mut std::io::Read::take(resp.into_reader(), max.saturating_add(1)),
            &mut text,
        )
        .map_err(|e| transport(format!("reading the answer: {e}")))?;
        if text.len() as u64 > max {
            return Err(too_long());
        }
        Ok(text)
    }
}

fn api_error(action: &str, code: Option<&str>, message: Option<&str>) -> AgentError {
    AgentError::Api {
        action: action.to_string(),
        code: code.unwrap_or("InternalError").to_string(),
        message: message.unwrap_or_default().to_string(),
    }
}

/// The `DescribeInstanceRuleset` answer, decoded straight from the bytes
/// into the typed ruleset (no JSON tree held beside it).
#[derive(serde::Deserialize)]
struct RulesetAnswer {
    #[serde(rename = "Response")]
    response: RulesetResponse,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RulesetResponse {
    #[serde(default)]
    error: Option<AnswerError>,
    #[serde(default)]
    ruleset: Option<InstanceRuleset>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AnswerError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Decodes a `DescribeInstanceRuleset` answer.
pub fn decode_ruleset(text: &[u8]) -> Result<InstanceRuleset, AgentError> {
    const ACTION: &str = "DescribeInstanceRuleset";
    let answer: RulesetAnswer = serde_json::from_slice(text).map_err(|e| match e.classify() {
        // Not JSON at all: the server (or the path to it) is broken, as
        // for any other action, and the next server is tried.
        serde_json::error::Category::Data => AgentError::BadRuleset(e.to_string()),
        _ => AgentError::Transport {
            action: ACTION.into(),
            message: format!("the answer is not JSON: {e}"),
        },
    })?;
    if let Some(err) = answer.response.error {
        return Err(api_error(
            ACTION,
            err.code.as_deref(),
            err.message.as_deref(),
        ));
    }
    answer
        .response
        .ruleset
        .ok_or_else(|| AgentError::BadRuleset("the answer has no Ruleset".into()))
}

impl ControlPlane for HttpControlPlane {
    fn ruleset(
        &mut self,
        instance_id: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<InstanceRuleset, AgentError> {
        let request = RulesetRequest {
            instance_id: instance_id.to_string(),
            after_revision: after,
            wait_seconds: after.map(|_| wait.as_secs()),
            known_digest: after.and(self.known_digest.clone()),
        };
        let params = serde_json::to_value(&request).map_err(|e| AgentError::Transport {
            action: "DescribeInstanceRuleset".into(),
            message: e.to_string(),
        })?;
        let text = self.post(SERVICE, VERSION, "DescribeInstanceRuleset", &params)?;
        let wire = decode_ruleset(&text)?;
        self.known_digest.clone_from(&wire.digest);
        Ok(wire)
    }

    fn register(&mut self, instance_id: &str, private_ips: &[String]) -> Result<(), AgentError> {
        self.call(
            "RegisterInstances",
            &json!({ "Instances": [{ "InstanceId": instance_id, "PrivateIpAddresses": private_ips }] }),
        )
        .map(|_| ())
    }

    fn report(&mut self, status: &AgentStatus) -> Result<(), AgentError> {
        let params = serde_json::to_value(status.bounded()).map_err(|e| AgentError::Transport {
            action: "ReportInstanceStatus".into(),
            message: e.to_string(),
        })?;
        self.call("ReportInstanceStatus", &params).map(|_| ())
    }
}
