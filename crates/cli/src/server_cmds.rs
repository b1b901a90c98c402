//! `palisade serve` and `palisade account`: thin wrappers over the `server` crate.

use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct ServeArgs {}

#[derive(Subcommand)]
pub enum AccountCommand {}

pub fn serve(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

pub fn account(cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
