//! The crate's one error type. Every variant says what was being done and
//! why it failed, so the agent's log line and its status report are enough
//! to act on.

use crate::compile::CompileError;

/// Everything the agent can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The rules cannot be compiled (bad options).
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// `nft` (or `ip netns exec`) could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `nft` ran and refused the request.
    #[error("{command} failed: {stderr}")]
    Nft {
        /// The command line.
        command: String,
        /// What nft printed.
        stderr: String,
    },
    /// `nft -j` printed something this crate does not understand.
    #[error("reading the nft JSON listing: {0}")]
    NftJson(String),
    /// A netlink request to nf_tables failed.
    #[error("nf_tables netlink: {0}")]
    Netlink(String),
    /// The server's ruleset does not convert.
    #[error("the server's ruleset is malformed: {0}")]
    BadRuleset(String),
    /// The server answered with a Tencent error.
    #[error("{action}: {code}: {message}")]
    Api {
        /// The action called.
        action: String,
        /// The Tencent error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The server could not be reached or answered something not JSON.
    #[error("{action}: {message}")]
    Transport {
        /// The action called.
        action: String,
        /// What went wrong.
        message: String,
    },
    /// A file or other local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl AgentError {
    /// The Tencent error code of an `Api` error.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            AgentError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
