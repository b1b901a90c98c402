//! Palisade's benchmarks as a library (issue 6, `BENCHMARKS.md`), kept out
//! of the CLI so that they are tested without it and CI runs each one at a
//! tiny size:
//!
//! - [`classbench`]: ClassBench filter sets read and projected to ingress
//!   security-group rules, and written back out in the rule and trace
//!   formats of DPDK's `dpdk-test-acl` (the external anchor);
//! - [`classify`]: `palisade bench classify`: packets generated from a rule
//!   list, the fast classifier ([`palisade_policy::Classifier`]) checked
//!   against the linear scan on every (or a documented sample of) packet,
//!   and both timed;
//! - [`check`]: the `check` benchmark's generator of large fleets and its
//!   naive baseline (`--example bench_check`, `--example gen_fleet`);
//! - [`dataplane`]: `palisade bench dataplane`: the kernel's new-flow
//!   cost and apply times in a lab of network namespaces (root);
//! - [`control_plane`]: `palisade bench propagate` and `bench api`: a real
//!   server under simulated agents and signed clients;
//! - [`console`]: `palisade bench console`: the web console's groups list
//!   and group page, rendered in-process over a large account;
//! - [`flowlog_agent`]: `palisade bench flowlog-agent`: the real agent's
//!   CPU with flow recording on and off at a rate of new connections, in
//!   network namespaces (root);
//! - [`replay`]: `palisade bench replay`: recorded flows replayed against a
//!   change (against the linear scan), `suggest`, and `plan --flows` at
//!   ten million records;
//! - [`interrupt`]: Ctrl-C as a flag, so the labs and servers are removed.
//!
//! The CLI (`crates/cli/src/bench_cmds.rs`) only parses options and prints
//! these reports; the raw sockets, namespaces and load generators, and the
//! dependencies they need, stay here, out of the shipped product crates.
//!
//! Panic contract: no public function panics on any input. The harnesses
//! (`dataplane`, `control_plane`) return `anyhow` errors: they drive
//! external commands and a child server, and their errors are only ever
//! printed.

#![warn(missing_docs)]

pub mod check;
pub mod classbench;
pub mod classify;
pub mod console;
pub mod control_plane;
pub mod dataplane;
pub mod flowlog_agent;
pub mod flows;
pub mod interrupt;
pub mod replay;

pub use classbench::{ClassBenchRule, DpdkExport};
pub use classify::{ClassifyOptions, ClassifyReport, ClassifyRun, Verify};

/// Errors of the benchmarks' inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A ClassBench line that does not parse.
    #[error("line {line}: {message}")]
    ClassBench {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}
