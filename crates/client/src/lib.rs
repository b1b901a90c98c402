//! A client of Palisade's Tencent-compatible API, for the commands that talk
//! to a server (`export`, `plan`, `apply`, `tke apply`): TC3-HMAC-SHA256
//! signing (`palisade_protocol::tc3`, shared with the server), credentials from
//! a file (the JSON `palisade account create` prints) or from
//! `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY` as tccli reads them,
//! and Tencent's error envelope turned into [`ClientError::Api`].

pub mod tc3;

use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The API version of a service: `vpc` and `cvm` are Tencent's
/// `2017-03-12`, `palisade` is Palisade's own `2026-11-01`.
pub fn version_of(service: &str) -> &'static str {
    match service {
        "palisade" => "2026-11-01",
        _ => "2017-03-12",
    }
}

/// What can go wrong talking to the server.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Tencent error.
    #[error("{code}: {message} (RequestId {request_id})")]
    Api {
        /// The Tencent error code, e.g. `UnsupportedOperation.VersionMismatch`.
        code: String,
        /// The server's message.
        message: String,
        /// The request's id.
        request_id: String,
    },
    /// The server could not be reached or answered something that is not the API.
    #[error("cannot talk to {url}: {why}")]
    Transport {
        /// The server URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// No usable credentials.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A CA certificate file that cannot be used.
    #[error("CA certificates in {path}: {why}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A TLS configuration that trusts exactly the CA certificates of the PEM
/// file `path` (instead of the public web roots), for an `https://` server
/// with a private CA or a self-signed certificate. Shared by the CLI's
/// client and the agent (`--ca-cert`).
pub fn tls_config_from_ca_file(
    path: &Path,
) -> Result<std::sync::Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |why: String| ClientError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

impl ClientError {
    /// The Tencent error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A SecretId and SecretKey.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    /// `SecretId`.
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    /// `SecretKey`.
    #[serde(rename = "SecretKey")]
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    // The key never appears in logs or error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `file` (the JSON of `palisade account create --output json`)
    /// when given, else `TENCENTCLOUD_SECRET_ID` and `TENCENTCLOUD_SECRET_KEY`.
    pub fn load(file: Option<&Path>) -> Result<Credentials, ClientError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ClientError::Credentials(format!("cannot read {}: {e}", path.display()))
            })?;
            return serde_json::from_str(&text).map_err(|e| {
                ClientError::Credentials(format!(
                    "{}: expected {{\"SecretId\": ..., \"SecretKey\": ...}}: {e}",
                    path.display()
                ))
            });
        }
        let id = std::env::var("TENCENTCLOUD_SECRET_ID").unwrap_or_default();
        let key = std::env::var("TENCENTCLOUD_SECRET_KEY").unwrap_or_default();
        if id.is_empty() || key.is_empty() {
            return Err(ClientError::Credentials(
                "give --credentials FILE or set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY"
                    .to_string(),
            ));
        }
        Ok(Credentials {
            secret_id: id,
            secret_key: key,
        })
    }
}

/// A signed-request client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    host: String,
    credentials: Credentials,
    region: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the server at `url` (`http://127.0.0.1:9180` or `https://...`).
    pub fn new(url: &str, credentials: Credentials) -> Result<Client, ClientError> {
        let trimmed = url.trim_end_matches('/');
        let host = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| ClientError::Transport {
                url: url.to_string(),
                why: "expected http://HOST:PORT or https://HOST:PORT".to_string(),
            })?
            .to_string();
        Ok(Client {
            url: format!("{trimmed}/"),
            host,
            credentials,
            region: "ap-guangzhou".to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        })
    }

    /// A client that signs nothing, for the one unsigned call: a node's
    /// `JoinCluster`, whose credential is the join token in its body.
    pub fn anonymous(url: &str) -> Result<Client, ClientError> {
        Self::new(
            url,
            Credentials {
                secret_id: String::new(),
                secret_key: String::new(),
            },
        )
    }

    /// The same client trusting exactly the CA certificates of the PEM file
    /// `path` for an `https://` server ([`tls_config_from_ca_file`]).
    pub fn with_ca_file(mut self, path: &Path) -> Result<Client, ClientError> {
        self.agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .tls_config(tls_config_from_ca_file(path)?)
            .build();
        Ok(self)
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `action` of `service` with `params`; the `Response` object
    /// without its `RequestId` on success.
    pub fn call(&self, service: &str, action: &str, params: &Value) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(params).map_err(|e| self.transport(e))?;
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let nonce = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .agent
            .post(&self.url)
            .set("X-TC-Version", version_of(service))
            .set("X-TC-Region", &self.region)
            .set("X-TC-Language", "en-US");
        if self.credentials.secret_id.is_empty() {
            // Anonymous: the action is named in the header a signature
            // would otherwise carry.
            request = request
                .set("X-TC-Action", action)
                .set("Content-Type", "application/json");
        } else {
            for (name, value) in tc3::signed_headers(
                &self.credentials.secret_id,
                &self.credentials.secret_key,
                service,
                action,
                &self.host,
                &body,
                timestamp,
                &nonce,
            ) {
                request = request.set(name, &value);
            }
        }
        let response = request.send_bytes(&body);
        let response = match response {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => {
                return Err(self.transport(format!("HTTP status {code}")))
            }
            Err(e) => return Err(self.transport(e)),
        };
        let value: Value = response.into_json().map_err(|e| self.transport(e))?;
        let mut inner = match value {
            Value::Object(mut m) => m.remove("Response").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        if !inner.is_object() {
            return Err(self.transport("the answer has no Response object"));
        }
        let request_id = inner["RequestId"].as_str().unwrap_or_default().to_string();
        if let Some(err) = inner.get("Error") {
            return Err(ClientError::Api {
                code: err["Code"].as_str().unwrap_or_default().to_string(),
                message: err["Message"].as_str().unwrap_or_default().to_string(),
                request_id,
            });
        }
        if let Some(m) = inner.as_object_mut() {
            m.remove("RequestId");
        }
        Ok(inner)
    }

    /// Calls a `vpc` action.
    pub fn vpc(&self, action: &str, params: &Value) -> Result<Value, ClientError> {
        self.call("vpc", action, params)
    }

    /// Calls a `cvm` action.
    pub fn cvm(&self, action: &str, params: &Value) -> Result<Value, ClientError> {
        self.call("cvm", action, params)
    }

    /// Calls a `palisade` action.
    pub fn palisade(&self, action: &str, params: &Value) -> Result<Value, ClientError> {
        self.call("palisade", action, params)
    }

    /// Calls a paginated `Describe*` action (string `Offset`/`Limit`, as
    /// Tencent's VPC API takes them) and gathers every item of `set_field`.
    pub fn describe_all(
        &self,
        service: &str,
        action: &str,
        set_field: &str,
        mut params: Value,
    ) -> Result<Vec<Value>, ClientError> {
        const PAGE: u64 = 100;
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            if let Some(m) = params.as_object_mut() {
                let (o, l) = if service == "vpc" {
                    (
                        Value::from(offset.to_string()),
                        Value::from(PAGE.to_string()),
                    )
                } else {
                    (Value::from(offset), Value::from(PAGE))
                };
                m.insert("Offset".into(), o);
                m.insert("Limit".into(), l);
            }
            let page = self.call(service, action, &params)?;
            let items = page[set_field].as_array().cloned().unwrap_or_default();
            let total = page["TotalCount"].as_u64().unwrap_or(0);
            let got = items.len() as u64;
            out.extend(items);
            offset += got;
            if got == 0 || offset >= total {
                return Ok(out);
            }
        }
    }

    fn transport(&self, why: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            url: self.url.clone(),
            why: why.to_string(),
        }
    }
}
