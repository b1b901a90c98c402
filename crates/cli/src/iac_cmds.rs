//! `palisade export`, `plan`, `apply` and `tke apply`: a fleet file as the
//! source of truth for a running server (docs/iac.md). Each takes
//! `--server URL` and `--credentials FILE` (the JSON `account create`
//! prints), or `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY`.
//! Exit codes: `plan` 0 nothing to do, 2 changes, 1 error (as
//! `terraform plan -detailed-exitcode`); `apply` and `export` 0, or 2 on
//! any error (as every command's unusable input).

use crate::output::{print_json, table, Format};
use anyhow::Context;
use clap::{Args, ValueEnum};
use palisade_client::{Client, Credentials};
use palisade_iac::tke::TkeCluster;
use palisade_iac::{Done, Plan};
use palisade_model::{Cidr, FleetFile};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the server is and who we are.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The server, e.g. `http://127.0.0.1:9180`.
    #[arg(long)]
    server: String,
    /// Credentials JSON (`{"SecretId", "SecretKey"}`); default: the
    /// TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY variables.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// PEM file of the CA(s) to trust for an `https://` server with a
    /// private CA (default: the public web roots).
    #[arg(long, env = "PALISADE_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let creds = Credentials::load(self.credentials.as_deref())?;
        let client = Client::new(&self.server, creds)?;
        Ok(match &self.ca_cert {
            Some(ca) => client.with_ca_file(ca)?,
            None => client,
        })
    }
}

/// `palisade export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// yaml (default) or json.
    #[arg(long, value_enum, default_value_t)]
    output: ExportFormat,
}

/// The format `export` writes.
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum ExportFormat {
    /// YAML.
    #[default]
    Yaml,
    /// JSON.
    Json,
}

/// `palisade plan`.
#[derive(Args)]
pub struct PlanArgs {
    /// The fleet file.
    fleet: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    /// Also delete what the server has and the file does not name.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    flows: crate::replay_cmds::FlowsFrom,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade apply`.
#[derive(Args)]
pub struct ApplyArgs {
    /// The fleet file.
    fleet: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    /// Apply without asking.
    #[arg(long)]
    auto_approve: bool,
    /// Also delete what the server has and the file does not name.
    #[arg(long)]
    prune: bool,
    /// Revert the change unless `palisade confirm CHANGE_ID` arrives within
    /// this time (e.g. 120s, 5m; at most 24h). The deadline is kept by the
    /// server and survives its restart.
    #[arg(long, value_name = "DURATION", value_parser = crate::history_cmds::parse_window)]
    confirm_within: Option<u64>,
    #[command(flatten)]
    flows: crate::replay_cmds::FlowsFrom,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade tke apply`.
#[derive(Args)]
pub struct TkeApplyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The cluster (`cls-` + 8 lower-case letters or digits).
    #[arg(long)]
    cluster_id: String,
    /// CIDR of the cluster (node) network.
    #[arg(long)]
    cluster_cidr: String,
    /// CIDR of the container (pod) network.
    #[arg(long)]
    container_cidr: String,
    /// Worker nodes, comma-separated `ins-` ids (registered on the server);
    /// none for a cluster whose nodes join by themselves (join tokens).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Masters of a self-deployed cluster, comma-separated.
    #[arg(long, value_delimiter = ',')]
    masters: Vec<String>,
    /// Allow SSH (TCP 22) to the nodes from this CIDR (repeatable).
    #[arg(long)]
    ssh_from: Vec<String>,
    /// A cluster in the same VPC to open this cluster to (repeatable); its
    /// CIDRs are those recorded on the server (by its own `tke apply`).
    #[arg(long)]
    peer_cluster: Vec<String>,
    /// A fleet file declaring peer clusters not recorded on the server.
    #[arg(long)]
    peers_from: Option<PathBuf>,
    /// Revert the change unless `palisade confirm CHANGE_ID` arrives within
    /// this time (e.g. 120s, 5m; at most 24h). The deadline is kept by the
    /// server and survives its restart.
    #[arg(long, value_name = "DURATION", value_parser = crate::history_cmds::parse_window)]
    confirm_within: Option<u64>,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `export`.
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let file = palisade_iac::export(&client)?;
    match args.output {
        ExportFormat::Yaml => print!("{}", serde_yaml::to_string(&file)?),
        ExportFormat::Json => print_json(&file)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `plan`: 0 nothing to do, 2 changes, 1 error. With
/// `--fail-on-break`, 2 when a flow recorded ACCEPT would be dropped and
/// 0 otherwise (the question CI asks), 1 on error.
pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let result = (|| -> anyhow::Result<_> {
        let desired = read_fleet(&args.fleet)?;
        let client = args.server.client()?;
        let remote = palisade_iac::export(&client)?;
        let plan = palisade_iac::plan(&desired, &remote, args.prune)?;
        let replay = args
            .flows
            .replay(&plan.before, &plan.after, Some(&client))?;
        Ok((plan, replay))
    })();
    let (plan, replay) = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    match (&replay, args.output) {
        (Some(r), Format::Json) => print_json(&serde_json::json!({ "plan": plan, "replay": r }))?,
        _ => show_plan(&plan, args.output)?,
    }
    if let (Some(r), Format::Table) = (&replay, args.output) {
        crate::replay_cmds::print_replay(r);
    }
    if !plan.conflicts.is_empty() {
        eprintln!(
            "error: {}",
            palisade_iac::IacError::Conflict(plan.conflicts.clone())
        );
        return Ok(ExitCode::from(1));
    }
    if args.flows.fail_on_break {
        return Ok(if args.flows.fails(replay.as_ref()) {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    Ok(if plan.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Runs `apply`.
pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let desired = read_fleet(&args.fleet)?;
    let client = args.server.client()?;
    let remote = palisade_iac::export(&client)?;
    let plan = palisade_iac::plan(&desired, &remote, args.prune)?;
    // The recorded flows the change would cut, said before anything changes.
    if let Some(r) = args
        .flows
        .replay(&plan.before, &plan.after, Some(&client))?
    {
        if args.output == Format::Table {
            crate::replay_cmds::print_replay(&r);
            println!();
        }
        if r.breaks > 0 {
            eprintln!(
                "warning: this change would drop {} recorded connection(s) that were accepted ({} flow(s))",
                r.breaks,
                r.newly_dropped.iter().filter(|c| c.observed_accepted > 0).count()
            );
        }
        if args.flows.fails(Some(&r)) {
            eprintln!("--fail-on-break: nothing was changed");
            return Ok(ExitCode::from(2));
        }
    }
    run_plan(
        &client,
        &plan,
        args.auto_approve,
        args.output,
        args.confirm_within
            .map(|s| (s, format!("palisade apply {}", args.fleet.display()))),
    )
}

/// Runs `tke apply`.
pub fn tke_apply(args: TkeApplyArgs) -> anyhow::Result<ExitCode> {
    let networks = palisade_tke::ClusterNetworks::parse(&args.cluster_cidr, &args.container_cidr)?;
    palisade_model::ClusterId::parse_field("--cluster-id", &args.cluster_id)?;
    for n in args.nodes.iter().chain(&args.masters) {
        palisade_model::InstanceId::parse_field("--nodes/--masters", n)?;
    }
    let ssh_from = args
        .ssh_from
        .iter()
        .map(|s| Cidr::parse_any("--ssh-from", s))
        .collect::<Result<Vec<_>, _>>()?;
    let client = args.server.client()?;
    let remote = palisade_iac::export(&client)?;
    // A peer's networks: as recorded on the server, else from --peers-from.
    let peers_file: Option<FleetFile> = match &args.peers_from {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                palisade_model::yaml::from_str(&text)
                    .with_context(|| format!("{} is not a fleet file", path.display()))?,
            )
        }
        None => None,
    };
    let mut peers = Vec::new();
    for id in &args.peer_cluster {
        palisade_model::ClusterId::parse_field("--peer-cluster", id)?;
        let c = remote
            .clusters
            .iter()
            .chain(peers_file.iter().flat_map(|f| &f.clusters))
            .find(|c| &c.id == id)
            .with_context(|| {
                format!(
                    "ResourceNotFound: --peer-cluster {id:?}: not recorded on the server (tke apply it first) nor declared in --peers-from"
                )
            })?;
        peers.push((
            id.clone(),
            palisade_tke::ClusterNetworks::parse(&c.cluster_cidr, &c.container_cidr)?,
        ));
    }
    let cluster = TkeCluster {
        cluster_id: args.cluster_id.clone(),
        networks,
        nodes: args.nodes.clone(),
        masters: args.masters.clone(),
        ssh_from,
        peers,
    };
    let (desired, _) = palisade_iac::tke::desired(&remote, &cluster)?;
    let plan = palisade_iac::plan(&desired, &remote, false)?;
    let code = run_plan(
        &client,
        &plan,
        true,
        args.output,
        args.confirm_within
            .map(|s| (s, format!("palisade tke apply {}", args.cluster_id))),
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    // What the server holds now (the cluster recorded with it), checked.
    let after = palisade_iac::export(&client)?;
    let text = serde_yaml::to_string(&after)?;
    let report = palisade_analyze::check::check_text(&text, &Default::default())?;
    let mine: Vec<_> = report
        .findings
        .iter()
        .filter(|f| {
            f.location.cluster.as_deref() == Some(args.cluster_id.as_str())
                || f.location
                    .instance
                    .as_ref()
                    .is_some_and(|i| cluster.nodes.contains(i) || cluster.masters.contains(i))
        })
        .collect();
    let errors = mine
        .iter()
        .filter(|f| f.severity == palisade_analyze::finding::Severity::Error)
        .count();
    if args.output == Format::Table {
        println!(
            "\ncheck of {} after apply: {} finding(s), {errors} error(s)",
            args.cluster_id,
            mine.len()
        );
        for f in &mine {
            println!("  {} {} {}: {}", f.id, f.severity, f.location, f.message);
        }
    } else {
        print_json(&serde_json::json!({ "findings": mine }))?;
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_fleet(path: &Path) -> anyhow::Result<FleetFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    palisade_model::yaml::from_str(&text).map_err(|e| {
        let at = e.line.map(|l| format!(":{l}")).unwrap_or_default();
        anyhow::anyhow!("{}{at}: InvalidParameter: {e}", path.display())
    })
}

fn show_plan(plan: &Plan, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(plan);
    }
    if plan.steps.is_empty() {
        println!("No changes: the server matches the file.");
        return Ok(());
    }
    let mut t = table(&["", "Kind", "Id", "Name", "Change"]);
    for s in &plan.steps {
        let sign = match s.action {
            "create" => "+",
            "delete" => "-",
            _ => "~",
        };
        t.add_row(vec![
            sign.to_string(),
            s.kind.to_string(),
            s.id.clone(),
            s.name.clone(),
            s.detail.clone(),
        ]);
    }
    println!("{}", crate::output::whole_words(t));
    if plan.effect.changed {
        println!("\nEffect on traffic:");
        for d in &plan.effect.instances {
            println!(
                "  {} {} ({}): {} newly accepted packet set(s), {} newly dropped",
                d.instance, d.direction, d.status, d.newly_accepted_boxes, d.newly_dropped_boxes
            );
            for b in d.newly_accepted.iter().take(5) {
                println!("    + {}", b.witness);
            }
            for b in d.newly_dropped.iter().take(5) {
                println!("    - {}", b.witness);
            }
        }
    } else {
        println!("\nNo change in effect on traffic.");
    }
    let (c, u, d) = plan
        .steps
        .iter()
        .fold((0, 0, 0), |(c, u, d), s| match s.action {
            "create" => (c + 1, u, d),
            "delete" => (c, u, d + 1),
            _ => (c, u + 1, d),
        });
    println!("\nPlan: {c} to create, {u} to change, {d} to delete.");
    Ok(())
}

fn run_plan(
    client: &Client,
    plan: &Plan,
    auto_approve: bool,
    format: Format,
    confirm_within: Option<(u64, String)>,
) -> anyhow::Result<ExitCode> {
    if format == Format::Table {
        show_plan(plan, format)?;
    }
    if !plan.conflicts.is_empty() {
        return Err(palisade_iac::IacError::Conflict(plan.conflicts.clone()).into());
    }
    if !plan.is_empty() && !auto_approve {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("refusing to apply without --auto-approve when stdin is not a terminal");
        }
        print!("Apply these changes? Only 'yes' is accepted: ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            println!("Apply cancelled; nothing was changed.");
            return Ok(ExitCode::from(1));
        }
    }
    // Started after the question, so the window is not spent asking; an
    // apply that fails halfway is reverted at the deadline like any other.
    let change = match confirm_within {
        Some((seconds, what)) => Some(crate::history_cmds::start_confirmed(
            client, seconds, &what,
        )?),
        None => None,
    };
    let done = palisade_iac::apply(client, plan, |d: &Done| {
        eprintln!(
            "  {} {} {} ({})",
            d.step.action, d.step.kind, d.server_id, d.step.name
        );
    })?;
    match format {
        Format::Json => print_json(&serde_json::json!({
            "plan": plan, "applied": done, "change": change,
        }))?,
        Format::Table if !done.is_empty() => println!("Apply complete: {} step(s).", done.len()),
        Format::Table => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use palisade_model::fleet::GroupEntry;
    use palisade_model::{wire, FleetFile};

    /// `export` writes with serde_yaml and every reader uses
    /// `palisade_model::yaml`: text that YAML 1.1, 1.2 or either crate could
    /// take for something other than a string must read back as written.
    #[test]
    fn exported_yaml_reads_back_identically() {
        let tricky = [
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "true",
            "False",
            "null",
            "Null",
            "~",
            "",
            "017",
            "0o17",
            "0x1F",
            "0b11",
            "+5",
            "-3",
            "1.5",
            "1e3",
            ".inf",
            ".nan",
            "#x",
            "a: b",
            "- x",
            "'q'",
            "\"d\"",
            " pad ",
            "multi\nline",
            "*alias",
            "&anchor",
            "!tag",
            "%dir",
            "@at",
            "`tick`",
            "{x}",
            "[x]",
            "10:30",
            "2026-12-03",
        ];
        let mut file = FleetFile::default();
        for (i, t) in tricky.iter().enumerate() {
            // Tencent prints an unused field as "", so the wire types read "" as absent.
            let text = (!t.is_empty()).then(|| (*t).to_string());
            let rule = wire::SecurityGroupPolicy {
                port: text.clone(),
                policy_description: text,
                ..Default::default()
            };
            file.security_groups.push(GroupEntry {
                id: format!("sg-{i:08}"),
                name: (*t).to_string(),
                description: (*t).to_string(),
                policies: wire::SecurityGroupPolicySet {
                    ingress: Some(vec![rule]),
                    ..Default::default()
                },
            });
        }
        let text = serde_yaml::to_string(&file).unwrap();
        let back: FleetFile = palisade_model::yaml::from_str(&text).unwrap();
        assert_eq!(back, file, "{text}");
    }
}
