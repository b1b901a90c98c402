//! `palisade cluster ...`: nodes that join and leave a cluster by
//! themselves (docs/agent.md, "Adding and removing a node"): join tokens,
//! the cluster's nodes with their agents' last reports, and pruning the
//! nodes whose agents went silent. Thin calls of the `palisade` service
//! actions (`CreateJoinToken`, `DescribeJoinTokens`, `RevokeJoinToken`,
//! `DescribeClusters`, `DescribeInstanceStatus`, `PruneCluster`).

use crate::iac_cmds::ServerArgs;
use crate::output::{print_json, table, whole_words, Format};
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::process::ExitCode;

/// `palisade cluster ...`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Join tokens: a node holding one joins the cluster by itself.
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// The cluster's nodes and masters, with their agents' last reports
    /// (stale: silent for longer than --stale).
    Status(StatusArgs),
    /// Deregister the cluster's nodes whose agents have been silent for
    /// --stale, so group references stop admitting their addresses.
    Prune(PruneArgs),
}

/// `palisade cluster join-token ...`.
#[derive(Subcommand)]
pub enum JoinTokenCommand {
    /// Create a token (printed once; the server keeps only its hash).
    Create(CreateArgs),
    /// List the tokens (never their secrets).
    List(ListArgs),
    /// Revoke a token: it joins nothing more (nodes it joined stay).
    Revoke(RevokeArgs),
}

/// A node's role in its cluster.
#[derive(Clone, Copy, ValueEnum)]
enum Role {
    /// A worker node.
    Node,
    /// A master of a self-deployed cluster.
    Master,
}

/// `palisade cluster join-token create`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The cluster (`cls-...`, recorded on the server).
    #[arg(long)]
    cluster_id: String,
    /// The role of the nodes that join with it.
    #[arg(long, value_enum, default_value = "node")]
    role: Role,
    /// How long the token works: `90s`, `30m`, `24h`, `7d`.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: u64,
    /// How many nodes may join with it (default: any number until it expires).
    #[arg(long)]
    max_uses: Option<u64>,
    /// Nodes may join only with addresses inside these CIDRs.
    #[arg(long, value_delimiter = ',')]
    allowed_cidrs: Vec<String>,
    /// `table` prints the token alone (for a file); `json` the whole answer.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade cluster join-token list`.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only this cluster's tokens.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Output.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade cluster join-token revoke`.
#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The token (`jtk-...`).
    token_id: String,
}

/// `palisade cluster status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The cluster (`cls-...`).
    cluster_id: String,
    /// An agent silent for this long is stale: `90s`, `5m`, `1h`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    stale: u64,
    /// Output.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade cluster prune`.
#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The cluster (`cls-...`).
    cluster_id: String,
    /// Deregister nodes whose agents have been silent this long: `1h`.
    #[arg(long, value_parser = parse_duration)]
    stale: u64,
    /// Output.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `palisade cluster ...`.
pub fn run(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCommand::JoinToken(JoinTokenCommand::Create(a)) => create(a),
        ClusterCommand::JoinToken(JoinTokenCommand::List(a)) => list(a),
        ClusterCommand::JoinToken(JoinTokenCommand::Revoke(a)) => {
            a.server
                .client()?
                .palisade("RevokeJoinToken", &json!({ "JoinTokenId": a.token_id }))?;
            eprintln!("revoked {}", a.token_id);
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Status(a) => status(a),
        ClusterCommand::Prune(a) => prune(a),
    }
}

fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let mut params = json!({
        "ClusterId": a.cluster_id,
        "Role": match a.role { Role::Node => "node", Role::Master => "master" },
        "TtlSeconds": a.ttl,
    });
    if let Some(n) = a.max_uses {
        params["MaxUses"] = json!(n);
    }
    if !a.allowed_cidrs.is_empty() {
        params["AllowedCidrs"] = json!(a.allowed_cidrs);
    }
    let answer = a.server.client()?.palisade("CreateJoinToken", &params)?;
    match a.output {
        Format::Json => print_json(&answer)?,
        Format::Table => {
            // The token alone on stdout, for `> token`; the rest on stderr.
            println!(
                "{}",
                answer["JoinToken"]
                    .as_str()
                    .context("the answer has no JoinToken")?
            );
            eprintln!(
                "join token {} for cluster {} ({}), expires {} UTC",
                text(&answer["JoinTokenId"]),
                text(&answer["ClusterId"]),
                text(&answer["Role"]),
                text(&answer["ExpiresTime"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let mut params = json!({});
    if let Some(c) = &a.cluster_id {
        params["ClusterId"] = json!(c);
    }
    let answer = a.server.client()?.palisade("DescribeJoinTokens", &params)?;
    let set = answer["JoinTokenSet"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match a.output {
        Format::Json => print_json(&set)?,
        Format::Table => {
            let mut t = table(&[
                "JoinTokenId",
                "ClusterId",
                "Role",
                "State",
                "Uses",
                "ExpiresTime",
                "AllowedCidrs",
            ]);
            for tok in &set {
                let uses = match tok["MaxUses"].as_u64() {
                    Some(m) => format!("{}/{m}", tok["Uses"]),
                    None => tok["Uses"].to_string(),
                };
                t.add_row(vec![
                    text(&tok["JoinTokenId"]),
                    text(&tok["ClusterId"]),
                    text(&tok["Role"]),
                    text(&tok["State"]),
                    uses,
                    text(&tok["ExpiresTime"]),
                    list_text(&tok["AllowedCidrs"]),
                ]);
            }
            println!("{}", whole_words(t));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = a.server.client()?;
    let clusters = client.palisade(
        "DescribeClusters",
        &json!({ "ClusterIds": [a.cluster_id.clone()] }),
    )?;
    let cluster = &clusters["ClusterSet"][0];
    let mut members: Vec<(String, &str)> = Vec::new();
    for (field, role) in [("Nodes", "node"), ("Masters", "master")] {
        for id in cluster[field].as_array().into_iter().flatten() {
            if let Some(id) = id.as_str() {
                members.push((id.to_string(), role));
            }
        }
    }
    let statuses = client.palisade(
        "DescribeInstanceStatus",
        &json!({ "StaleSeconds": a.stale }),
    )?;
    let by_id = |id: &str| {
        statuses["InstanceStatusSet"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["InstanceId"].as_str() == Some(id))
            .cloned()
    };
    let rows: Vec<Value> = members
        .iter()
        .map(|(id, role)| match by_id(id) {
            Some(s) => json!({
                "InstanceId": id, "Role": role, "Registered": true,
                "Stale": s["Stale"], "Reported": s["Reported"],
                "ReportedTime": s["ReportedTime"], "AppliedRevision": s["AppliedRevision"],
                "Errors": s["Errors"],
            }),
            None => json!({ "InstanceId": id, "Role": role, "Registered": false, "Stale": true }),
        })
        .collect();
    match a.output {
        Format::Json => print_json(&json!({
            "ClusterId": a.cluster_id,
            "Revision": statuses["Revision"],
            "StaleSeconds": a.stale,
            "Nodes": rows,
        }))?,
        Format::Table => {
            let mut t = table(&["InstanceId", "Role", "State", "ReportedTime", "Applied"]);
            for r in &rows {
                let state = if r["Registered"] == json!(false) {
                    "not registered"
                } else if r["Stale"] == json!(true) {
                    "stale"
                } else if r["Errors"].as_array().is_some_and(|e| !e.is_empty()) {
                    "errors"
                } else {
                    "ok"
                };
                t.add_row(vec![
                    text(&r["InstanceId"]),
                    text(&r["Role"]),
                    state.to_string(),
                    text(&r["ReportedTime"]),
                    r["AppliedRevision"].to_string(),
                ]);
            }
            println!("{}", whole_words(t));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let answer = a.server.client()?.palisade(
        "PruneCluster",
        &json!({ "ClusterId": a.cluster_id, "StaleSeconds": a.stale }),
    )?;
    match a.output {
        Format::Json => print_json(&answer)?,
        Format::Table => {
            let gone = answer["InstanceIdSet"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if gone.is_empty() {
                println!("No stale node in {}.", a.cluster_id);
            }
            for id in gone {
                println!("deregistered {}", text(&id));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds of `90s`, `30m`, `24h`, `7d` (or a bare number of seconds).
fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 90s, 30m, 24h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too long"))
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn list_text(v: &Value) -> String {
    v.as_array()
        .map(|l| l.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
