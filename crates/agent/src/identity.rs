//! A node's identity when it joined its cluster by itself (issue 22):
//! the instance id, the agent key the server handed it, and the cluster,
//! kept in `identity.json` in the agent's state directory (mode 0600, in a
//! 0700 directory). The join token is used once, when no identity is
//! stored; from then on the agent uses only its own key, so a restart
//! finds the same instance, and `--leave` deregisters it and removes the
//! file.
//!
//! The instance id is stable for the machine: `ins-` and 8 characters
//! derived from SHA-256 of the machine id (`/etc/machine-id`), unless one
//! is given.

use crate::error::AgentError;
use palisade_client::{Client, ClientError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file in the state directory.
pub const IDENTITY_FILE: &str = "identity.json";

/// What the server handed a node that joined.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Identity {
    /// The node's instance.
    pub instance_id: String,
    /// The cluster it joined.
    pub cluster_id: String,
    /// Its agent key's SecretId.
    pub secret_id: String,
    /// Its agent key's SecretKey. Never logged.
    pub secret_key: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("instance_id", &self.instance_id)
            .field("cluster_id", &self.cluster_id)
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

/// The identity file of `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY_FILE)
}

/// The stored identity, if the node joined before.
pub fn load(state_dir: &Path) -> Result<Option<Identity>, AgentError> {
    let p = path(state_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AgentError::Io {
                context: format!("reading {}", p.display()),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| AgentError::Io {
            context: format!("reading {}", p.display()),
            source: std::io::Error::other(e.to_string()),
        })
}

/// Stores `id` in `state_dir` (created 0700 if missing) as a 0600 file,
/// written whole to a temporary file and renamed, so a crash leaves the
/// old file or the new one.
pub fn save(state_dir: &Path, id: &Identity) -> Result<(), AgentError> {
    let text = serde_json::to_string_pretty(id).map_err(|e| AgentError::Io {
        context: "encoding the identity".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_private(state_dir, IDENTITY_FILE, text.as_bytes())
}

/// Writes `bytes` to the file `name` of `state_dir` (created 0700 if
/// missing), mode 0600, whole: to a temporary file, synced, then renamed
/// over the old one, so a crash leaves the old file or the new one.
pub fn write_private(state_dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |context: String| move |source| AgentError::Io { context, source };
    if !state_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io(format!("creating {}", state_dir.display())))?;
    }
    let final_path = state_dir.join(name);
    let tmp = state_dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &final_path).map_err(io(format!("writing {}", final_path.display())))
}

/// Removes the identity file (absent is fine).
pub fn remove(state_dir: &Path) -> Result<(), AgentError> {
    let p = path(state_dir);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::Io {
            context: format!("removing {}", p.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The instance id of a machine whose machine id is `machine_id`: `ins-`
/// and the first 8 characters of its SHA-256, in the id alphabet.
pub fn instance_id_for(machine_id: &str) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let digest = Sha256::digest(format!("palisade-instance:{}", machine_id.trim()).as_bytes());
    let mut id = String::from("ins-");
    for b in digest.iter().take(8) {
        id.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
    }
    id
}

/// This machine's instance id, from `/etc/machine-id` (or D-Bus's copy).
pub fn machine_instance_id() -> Result<String, AgentError> {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(text) = std::fs::read_to_string(p) {
            if !text.trim().is_empty() {
                return Ok(instance_id_for(&text));
            }
        }
    }
    Err(AgentError::Io {
        context: "reading /etc/machine-id for a stable instance id (or give --instance-id)".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// Joins the cluster of `token` as `instance_id` with `ips` (one unsigned
/// `JoinCluster`) and returns the identity to store.
pub fn join(
    client: &Client,
    token: &str,
    instance_id: &str,
    name: &str,
    ips: &[String],
) -> Result<Identity, AgentError> {
    let mut params = json!({
        "JoinToken": token.trim(),
        "InstanceId": instance_id,
        "PrivateIpAddresses": ips,
    });
    if !name.is_empty() {
        params["InstanceName"] = json!(name);
    }
    let answer = client
        .palisade("JoinCluster", &params)
        .map_err(|e| client_error("JoinCluster", e))?;
    let field = |k: &str| {
        answer[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AgentError::Transport {
                action: "JoinCluster".into(),
                message: format!("the answer has no {k}"),
            })
    };
    Ok(Identity {
        instance_id: field("InstanceId")?,
        cluster_id: field("ClusterId")?,
        secret_id: field("SecretId")?,
        secret_key: field("SecretKey")?,
    })
}

/// Deregisters the node (`LeaveCluster` with its own key); `client` must
/// sign with the identity's key.
pub fn leave(client: &Client, id: &Identity) -> Result<(), AgentError> {
    client
        .palisade("LeaveCluster", &json!({ "InstanceId": id.instance_id }))
        .map(drop)
        .map_err(|e| client_error("LeaveCluster", e))
}

fn client_error(action: &str, e: ClientError) -> AgentError {
    match e {
        ClientError::Api { code, message, .. } => AgentError::Api {
            action: action.into(),
            code,
            message,
        },
        other => AgentError::Transport {
            action: action.into(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_identity_is_stored_private_and_the_id_is_stable() {
        let a = instance_id_for("0123456789abcdef0123456789abcdef\n");
        assert_eq!(a, instance_id_for("0123456789abcdef0123456789abcdef"));
        assert_ne!(a, instance_id_for("fedcba9876543210fedcba9876543210"));
        assert!(
            palisade_model::InstanceId::parse_field("id", &a).is_ok(),
            "{a}"
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("state");
        assert_eq!(load(&state).unwrap_or_else(|e| panic!("{e}")), None);
        let id = Identity {
            instance_id: a,
            cluster_id: "cls-abcdefgh".into(),
            secret_id: "AKIDx".into(),
            secret_key: "k".into(),
        };
        save(&state, &id).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&path(&state)), 0o600);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(load(&state).unwrap_or_else(|e| panic!("{e}")), Some(id));
        assert!(!format!("{:?}", load(&state)).contains("\"k\""));
        remove(&state).unwrap_or_else(|e| panic!("{e}"));
        remove(&state).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&state).unwrap_or_else(|e| panic!("{e}")), None);
    }
}
