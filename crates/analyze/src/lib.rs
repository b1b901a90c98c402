//! Palisade's analysis (DESIGN.md section 1, `analyze`): what no cloud
//! gives its users, proof before a change ships that a fleet's security
//! groups do what the seed says a TKE cluster needs, and nothing more.
//!
//! - [`check`]: findings with stable ids (`TKE001`-`TKE010`, `EXP001`,
//!   `EXP002`, `ANO001`-`ANO004`, `REF001`, `REF002`, `LIM001`, and from a
//!   server's rule hits `USE001`), each with a
//!   severity, a location in the fleet file and, where it is about traffic,
//!   a witness packet. Every traffic finding works on the exact packet sets
//!   of the `policy` crate, so it is order-aware, DROP-aware, and template-
//!   and reference-aware.
//! - [`load`]: reads a fleet file leniently, so that a file with missing
//!   references or exceeded limits still gets findings (`REF002`, `LIM001`)
//!   instead of only a parse error.
//! - [`diff`]: what changes in effect between two fleets, per instance and
//!   direction, as boxes of packets newly accepted or newly dropped.
//! - [`reach`]: whether traffic from one instance or CIDR gets to another.
//! - [`replay`]: recorded flows replayed against the current and a
//!   proposed fleet: which observed connections a change breaks or opens.
//! - [`suggest`]: least-privilege rules that accept every observed flow
//!   of an instance or group, with their coverage and exposure.
//! - [`sarif`]: findings as SARIF 2.1.0.
//! - [`unused`]: `USE001`, rules that decided nothing over a window, from
//!   a server's rule hits where they cover the window.
//!
//! Panic contract: no public function panics on any input.

#![warn(missing_docs)]

pub mod check;
pub mod diff;
pub mod engine;
pub mod error;
pub mod finding;
pub mod load;
pub mod reach;
pub mod replay;
pub mod sarif;
pub mod suggest;
pub mod unused;

mod anomaly;
mod exposure;
mod limits;
mod refs;
mod tke_checks;

#[cfg(test)]
mod testing;

pub use check::{check, check_text, CheckOptions, Report, SensitivePort};
pub use diff::{diff, DiffReport};
pub use engine::Engine;
pub use error::{AnalyzeError, LoadError};
pub use finding::{CheckId, Finding, Location, Severity};
pub use load::{load, Loaded};
pub use reach::{reach, Endpoint, ReachQuery, ReachReport};
pub use replay::{read_records, ReplayReport, Replayer};
