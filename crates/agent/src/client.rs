//! The agent's side of the `palisade` service (version `2026-11-01`,
//! DESIGN.md section 4): TC3-signed `POST /` calls with Tencent's envelope.
//! [`ControlPlane`] is the trait the sync loop uses, so it is tested with a
//! fake; [`HttpControlPlane`] is the real client.

use crate::error::AgentError;
use crate::snapshot::WireRuleset;
use palisade_client::tc3;
use serde_json::{json, Value};
use std::time::Duration;

/// The service name in the credential scope.
pub const SERVICE: &str = "palisade";
/// The API version of the service.
pub const VERSION: &str = "2026-11-01";

/// What the agent reports (`ReportInstanceStatus`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// The instance.
    pub instance_id: String,
    /// The revision whose rules the kernel holds.
    pub applied_revision: u64,
    /// Errors since the last success (empty when healthy).
    pub errors: Vec<String>,
    /// Per-rule counters.
    pub counters: Vec<RuleCounter>,
}

/// One rule's kernel counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounter {
    /// The rule's group.
    pub security_group_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// Its `PolicyIndex`.
    pub policy_index: u64,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl AgentStatus {
    /// The `ReportInstanceStatus` parameters.
    pub fn to_params(&self) -> Value {
        json!({
            "InstanceId": self.instance_id,
            "AppliedRevision": self.applied_revision,
            "Errors": self.errors.iter().map(|e| e.chars().take(2000).collect::<String>()).take(100).collect::<Vec<_>>(),
            "Counters": self.counters.iter().map(|c| json!({
                "SecurityGroupId": c.security_group_id,
                "Direction": c.direction,
                "PolicyIndex": c.policy_index,
                "Packets": c.packets,
                "Bytes": c.bytes,
            })).collect::<Vec<_>>(),
        })
    }
}

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
    ) -> Result<WireRuleset, AgentError>;
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
}

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
        })
    }

    /// Trusts the CA certificates of the PEM file `path` (instead of the
    /// public web roots) for an `https://` server with a private CA or a
    /// self-signed certificate.
    pub fn with_ca_file(
        mut self,
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let io = |message: String| AgentError::Io {
            context: format!("reading CA certificates from {}", path.display()),
            source: std::io::Error::other(message),
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| io(e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| io(e.to_string()))?;
            roots.add(cert).map_err(|e| io(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(io("no certificate in the file".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| io(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        self.http = ureq::AgentBuilder::new()
            .timeout(timeout)
            .tls_config(std::sync::Arc::new(config))
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
        let resp = request
            .send_string(&body)
            .map_err(|e| transport(e.to_string()))?;
        let text = resp
            .into_string()
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| transport(format!("the answer is not JSON: {e}")))?;
        let response = v
            .get("Response")
            .cloned()
            .ok_or_else(|| transport("the answer has no Response".into()))?;
        if let Some(err) = response.get("Error") {
            return Err(AgentError::Api {
                action: action.to_string(),
                code: err
                    .get("Code")
                    .and_then(Value::as_str)
                    .unwrap_or("InternalError")
                    .to_string(),
                message: err
                    .get("Message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        Ok(response)
    }
}

impl ControlPlane for HttpControlPlane {
    fn ruleset(
        &mut self,
        instance_id: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<WireRuleset, AgentError> {
        let mut params = json!({ "InstanceId": instance_id });
        if let Some(after) = after {
            params["AfterRevision"] = json!(after);
            params["WaitSeconds"] = json!(wait.as_secs());
            if let Some(d) = &self.known_digest {
                params["KnownDigest"] = json!(d);
            }
        }
        let r = self.call("DescribeInstanceRuleset", &params)?;
        let rs = r.get("Ruleset").cloned().unwrap_or(Value::Null);
        let wire: WireRuleset =
            serde_json::from_value(rs).map_err(|e| AgentError::BadRuleset(e.to_string()))?;
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
        self.call("ReportInstanceStatus", &status.to_params())
            .map(|_| ())
    }
}
