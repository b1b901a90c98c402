//! `palisade`: the one binary. Each subcommand lives in its own module and is
//! named by the user's verb (STYLE.md); this file only parses and dispatches.
//! Exit codes: 0 success, 1 a negative answer (problems found, traffic
//! dropped where asked), 2 unusable input or an error.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod agent_cmds;
mod analyze_cmds;
mod bench_cmds;
mod cluster_cmds;
mod explain_cmd;
mod flows_cmd;
mod history_cmds;
mod iac_cmds;
mod output;
mod replay_cmds;
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
    /// Clusters whose nodes join and leave by themselves: join tokens, status, prune.
    #[command(subcommand)]
    Cluster(cluster_cmds::ClusterCommand),
    /// The TKE profile: the seed's default groups.
    #[command(subcommand)]
    Tke(tke_cmd::TkeCommand),
    /// Check a fleet file or a tccli-printed group for every rule violation.
    Validate(validate_cmd::ValidateArgs),
    /// Say what an instance's groups do with a packet, and which rule decided.
    Explain(explain_cmd::ExplainArgs),
    /// Check a fleet for findings.
    Check(analyze_cmds::CheckArgs),
    /// Compare two fleets in effect.
    Diff(analyze_cmds::DiffArgs),
    /// Can traffic get from one place to another?
    Reach(analyze_cmds::ReachArgs),
    /// Enforce an instance's groups in the kernel (nftables), kept in sync with a server.
    Agent(agent_cmds::AgentArgs),
    /// The nftables compiler.
    #[command(subcommand)]
    Nft(agent_cmds::NftCommand),
    /// Write a server's groups, templates and instances as a fleet file.
    Export(iac_cmds::ExportArgs),
    /// Show what `apply` would change on a server, and the effect on traffic.
    Plan(iac_cmds::PlanArgs),
    /// Make a server match a fleet file.
    Apply(iac_cmds::ApplyArgs),
    /// Keep a commit-confirmed change (`apply --confirm-within`) before its deadline.
    Confirm(history_cmds::ConfirmArgs),
    /// A group's kept policy-set versions.
    History(history_cmds::HistoryArgs),
    /// Bring back the rules of a kept version of a group, as a new version.
    Rollback(history_cmds::RollbackArgs),
    /// Benchmarks to run on your own machine and rule sets.
    #[command(subcommand)]
    Bench(bench_cmds::BenchCommand),
    /// A server's flow records: what the nodes' groups decided, and which rule.
    Flows(flows_cmd::FlowsArgs),
    /// Enforce an instance's groups, or only audit them (drops recorded, not made).
    Enforcement(flows_cmd::EnforcementArgs),
    /// A group's rules with their hits over every instance and last use.
    Hits(flows_cmd::HitsArgs),
    /// Least-privilege rules for an instance or group, from its recorded flows.
    Suggest(replay_cmds::SuggestArgs),
}

/// mimalloc instead of glibc's malloc: a describe allocates a few hundred
/// small objects (rows, rules, JSON), and glibc's arena locking and
/// consolidation took a quarter of the server's time (BENCHMARKS.md, "API").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands whose output goes to a terminal or a pipe end quietly when the
    // reader goes away (`palisade check F | head`), as Unix tools do. The
    // long-running server and agent keep Rust's default (SIGPIPE ignored),
    // so a peer closing a socket is an error to handle, not a death.
    if !matches!(cli.command, Command::Serve(_) | Command::Agent(_)) {
        sigpipe::reset();
    }
    let result = match cli.command {
        Command::Serve(args) => server_cmds::serve(args),
        Command::Account(cmd) => server_cmds::account(cmd),
        Command::Cluster(cmd) => cluster_cmds::run(cmd),
        Command::Tke(cmd) => tke_cmd::run(cmd),
        Command::Validate(args) => validate_cmd::run(args),
        Command::Explain(args) => explain_cmd::run(args),
        Command::Check(args) => analyze_cmds::check(args),
        Command::Diff(args) => analyze_cmds::diff(args),
        Command::Reach(args) => analyze_cmds::reach(args),
        Command::Agent(args) => agent_cmds::agent(args),
        Command::Flows(args) => flows_cmd::run(args),
        Command::Enforcement(args) => flows_cmd::enforcement(args),
        Command::Hits(args) => flows_cmd::hits(args),
        Command::Suggest(args) => replay_cmds::suggest(args),
        Command::Nft(cmd) => agent_cmds::nft(cmd),
        Command::Export(args) => iac_cmds::export(args),
        Command::Plan(args) => iac_cmds::plan(args),
        Command::Apply(args) => iac_cmds::apply(args),
        Command::Confirm(args) => history_cmds::confirm(args),
        Command::History(args) => history_cmds::history(args),
        Command::Rollback(args) => history_cmds::rollback(args),
        Command::Bench(cmd) => bench_cmds::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
