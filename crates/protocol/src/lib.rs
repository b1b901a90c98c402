//! The wire protocol that Palisade's server, CLI client and agent share
//! (STYLE.md: one set of protocol code used by every side, as OPTE's
//! `opte-api`): [`tc3`], the TC3-HMAC-SHA256 signature of Tencent's API v3,
//! computed by one function whether a request is being signed (the client,
//! the agent) or checked (the server's verifier); and [`service`], the typed
//! requests and answers of Palisade's own service (`palisade`), whose
//! resolved rules are the `policy` crate's own type.

#![forbid(unsafe_code)]

pub mod service;
pub mod tc3;
