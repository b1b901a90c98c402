//! Palisade's data plane (DESIGN.md sections 3 and 4): the agent that makes
//! one node's security groups real in the kernel.
//!
//! - [`compile`]: the pure compiler from an instance's resolved ruleset
//!   (`policy`'s `Ruleset`, as the server sends it) to the nft program of
//!   table `inet palisade` (hooks, baseline, first-match order, counters,
//!   named sets, conntrack-mark generation chains for revoked connections);
//! - [`stamp`]: the generations themselves, handed out by the agent so that
//!   none equals a stamp an idle flow still carries, and the `ct mark` bits
//!   Palisade owns;
//! - [`dataplane`]: the `Dataplane` trait and an in-memory fake;
//! - [`nft`]: the `nft` implementation (optionally inside a network namespace);
//! - [`netlink`]: the ruleset generation and rule counters straight from
//!   nf_tables, without listing set elements;
//! - [`session`]: one long-lived `nft -i` for element deltas, so a delta
//!   that deletes does not wait out a grace period;
//! - [`client`]: the TC3-signed calls (signed by `palisade_client::tc3`) to the server's `palisade` service;
//! - [`failover`]: several servers (one PostgreSQL database), tried in turn;
//! - [`agent`]: the sync and reconcile loop;
//! - [`identity`]: a node that joined with a token: its instance and key in the state directory;
//! - [`metrics`]: the agent's counters (flow records seen, suppressed, shipped; applied
//!   revision, failed loads) on an optional Prometheus text endpoint.

#![forbid(unsafe_code)]

pub mod agent;
pub mod client;
pub mod compile;
pub mod control;
pub mod dataplane;
pub mod error;
pub mod failover;
pub mod flowlog;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod netlink;
pub mod nft;
pub mod session;
pub mod stamp;

pub use compile::{compile, CompileOptions, Compiled};
pub use dataplane::{Counter, Dataplane, DryRunDataplane, FakeDataplane, LiveTable};
pub use error::AgentError;
pub use nft::NftDataplane;
pub use stamp::{MarkBits, Stamping};
