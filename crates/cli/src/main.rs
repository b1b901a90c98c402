//! `palisade`: the one binary. Each subcommand lives in its own module and is
//! named by the user's verb (STYLE.md); this file only parses and dispatches.
//! Exit codes: 0 success, 1 a negative answer (problems found, traffic
//! dropped where asked), 2 unusable input or an error.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod explain_cmd;
mod output;
mod server_cmds;
mod tke_cmd;
mod validate_cmd;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Self-hosted security groups, Tencent-compatible"
)]
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
    /// The TKE profile: the seed's default groups.
    #[command(subcommand)]
    Tke(tke_cmd::TkeCommand),
    /// Check a fleet file or a tccli-printed group for every rule violation.
    Validate(validate_cmd::ValidateArgs),
    /// Say what an instance's groups do with a packet, and which rule decided.
    Explain(explain_cmd::ExplainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => server_cmds::serve(args),
        Command::Account(cmd) => server_cmds::account(cmd),
        Command::Tke(cmd) => tke_cmd::run(cmd),
        Command::Validate(args) => validate_cmd::run(args),
        Command::Explain(args) => explain_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
