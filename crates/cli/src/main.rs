//! `palisade`: the one binary. Each subcommand lives in its own module and is
//! named by the user's verb (STYLE.md); this file only parses and dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod server_cmds;

#[derive(Parser)]
#[command(name = "palisade", version, about = "Self-hosted security groups, Tencent-compatible")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the Tencent-compatible security-group API.
    Serve(server_cmds::ServeArgs),
    /// Manage API accounts (works while the server runs).
    #[command(subcommand)]
    Account(server_cmds::AccountCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => server_cmds::serve(args),
        Command::Account(cmd) => server_cmds::account(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
