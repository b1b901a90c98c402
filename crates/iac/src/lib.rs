//! Security groups as code (issue "plan, apply, export"): a fleet file is
//! the source of truth for a server. [`export`] reads a server into a fleet
//! file, [`plan`] compares a file with what the server holds and says what
//! would change and what that does to traffic, [`apply`] makes the calls.
//! [`tke`] builds the seed's default groups for a cluster as a fleet
//! fragment that goes through the same plan and apply.

pub mod apply;
pub mod export;
pub mod plan;
pub mod tke;

pub use apply::{apply, Done};
pub use export::export;
pub use plan::{plan, Conflict, Plan, Step};

use palisade_client::ClientError;
use palisade_model::Problem;

/// What can stop an export, plan or apply.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IacError {
    /// A call to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The file (with what the server keeps) is not a valid fleet.
    #[error("the fleet is invalid:\n{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// Groups were edited on the server since the file's `Version`.
    #[error("UnsupportedOperation.VersionMismatch: {}; nothing was changed (export again, or remove the Version lines to take the server's rules as the base)",
        .0.iter().map(|c| format!("{} changed on the server (file Version {}, server Version {})", c.security_group_id, c.file_version, c.server_version)).collect::<Vec<_>>().join("; "))]
    Conflict(Vec<Conflict>),
    /// A file entry that is not on the server by id matches several server
    /// resources by name, so it is unclear which one it means.
    #[error("InvalidParameterValue.Duplicate: {kind} {name:?} in the file matches {} on the server by name ({}); nothing was changed (give the id in the file, or rename or delete all but one on the server)", .ids.len(), .ids.join(", "))]
    Ambiguous {
        /// `security group`, `address template`, ...
        kind: String,
        /// The name they share.
        name: String,
        /// Their ids on the server.
        ids: Vec<String>,
    },
    /// A change the API cannot make.
    #[error("{0}")]
    Unsupported(String),
    /// The server answered something unexpected.
    #[error("unexpected answer from the server: {0}")]
    Server(String),
    /// A step failed after `done` steps had been carried out.
    #[error("{step} failed after {done} step(s) were applied: {source}")]
    Step {
        /// The failed step.
        step: String,
        /// How many steps were carried out before it.
        done: usize,
        /// Why it failed.
        source: Box<IacError>,
    },
}
