//! The properties Palisade's fuzz targets check (STYLE.md: the smoltcp
//! panic contract, held by a fuzz target per parser), one module per
//! target, each with `check(data: &[u8])`: it returns for inputs that do not
//! apply and panics when a property fails.
//!
//! They live here, in the main workspace, rather than in the libFuzzer
//! binaries of `fuzz/`, so that two runners share them:
//!
//! - `scripts/fuzz.sh` builds the targets in `fuzz/` (each a one-line call
//!   into this crate) and searches for new failing inputs, outside CI;
//! - `cargo test` (so CI) replays every stored input through the same
//!   functions (`tests/replay.rs`): the corpus in `fuzz/corpus/`, the seeds
//!   in `fuzz/seeds/` and every past failure in `fuzz/regressions/`. A
//!   replay is deterministic: it never searches, so an unrelated change
//!   cannot fail on a fuzzer's lucky find.

#![forbid(unsafe_code)]
// A fuzz property is an assertion: panicking is how a target reports.
#![allow(clippy::unwrap_used)]

pub mod actions;
pub mod address_entry;
pub mod cidr;
pub mod fleet;
pub mod policy_wire;
pub mod ports;
pub mod service_entry;
pub mod tc3;
pub mod world;

/// A target's check: returns, or panics naming the property that failed.
pub type Check = fn(&[u8]);

/// Every target, by the name of its binary in `fuzz/` and of its folders
/// under `fuzz/corpus/`, `fuzz/seeds/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("actions", actions::check),
    ("address_entry", address_entry::check),
    ("cidr", cidr::check),
    ("fleet", fleet::check),
    ("policy_wire", policy_wire::check),
    ("ports", ports::check),
    ("service_entry", service_entry::check),
    ("tc3", tc3::check),
];
