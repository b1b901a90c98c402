//! `palisade check`, `palisade diff`, `palisade reach`: the analysis of
//! the `analyze` crate on fleet files (DESIGN.md section 1; the ids and
//! their fixes are in `docs/checks.md`). Exit codes: `check` 0 when nothing
//! at or above `--fail-on` was found, 1 otherwise; `diff` 0 for no change in
//! effect, 1 for any; `reach` 0 when the traffic gets through (with a
//! protocol) or something does (without), 1 otherwise; 2 on unusable input.

use crate::output::Format;
use anyhow::Context;
use clap::{Args, ValueEnum};
use palisade_analyze::check::check_loaded;
use palisade_analyze::{
    diff as semantic_diff, load, reach as reach_query, sarif, CheckOptions, Endpoint, Loaded,
    ReachQuery, SensitivePort, Severity,
};
use palisade_model::InstanceId;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `println!` that does not panic when stdout is closed early (`| head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Prints `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `--output` of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum CheckFormat {
    /// A table for people.
    #[default]
    Table,
    /// `{"findings": [...]}` for scripts.
    Json,
    /// SARIF 2.1.0 for code-scanning tools.
    Sarif,
}

/// `--fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FailOn {
    /// Any finding fails.
    Info,
    /// Warnings and errors fail.
    Warning,
    /// Only errors fail.
    #[default]
    Error,
}

impl From<FailOn> for Severity {
    fn from(f: FailOn) -> Severity {
        match f {
            FailOn::Info => Severity::Info,
            FailOn::Warning => Severity::Warning,
            FailOn::Error => Severity::Error,
        }
    }
}

/// Where a fleet comes from: a file, a running server, or both (the
/// server's groups, templates and instances with the file's clusters and
/// limits, so the TKE checks run against what the server enforces now).
#[derive(Args, Debug, Clone)]
pub struct FleetSource {
    /// The fleet file (YAML or JSON). With --server, only its `clusters`
    /// and `limits` are used.
    pub fleet: Option<PathBuf>,
    /// Read groups, templates and instances from this server instead, e.g.
    /// `http://127.0.0.1:9180`.
    #[arg(long)]
    pub server: Option<String>,
    /// Credentials JSON (`{"SecretId", "SecretKey"}`) for --server; default:
    /// the TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY variables.
    #[arg(long, requires = "server")]
    pub credentials: Option<PathBuf>,
    /// PEM file of the CA(s) to trust for an `https://` --server with a
    /// private CA (default: the public web roots).
    #[arg(long, env = "PALISADE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl FleetSource {
    /// A client of `url` with the source's credentials and CA.
    pub fn client(&self, url: &str) -> anyhow::Result<palisade_client::Client> {
        let credentials = palisade_client::Credentials::load(self.credentials.as_deref())?;
        let client = palisade_client::Client::new(url, credentials)?;
        Ok(match &self.ca_cert {
            Some(ca) => client.with_ca_file(ca)?,
            None => client,
        })
    }
}

/// `palisade check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The fleet: a file, or --server URL.
    #[command(flatten)]
    pub source: FleetSource,
    /// table, json or sarif.
    #[arg(long, value_enum, default_value_t)]
    pub output: CheckFormat,
    /// Exit 1 when a finding of this severity or above is found.
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
    /// A sensitive port for EXP001 (`tcp:22`, `udp:3389`, `22`); repeat it.
    /// Replaces the defaults (TCP 22, 3389, 2379, 2380, 10250, 6443; UDP 3389).
    #[arg(long = "sensitive-port", value_name = "PROTO:PORT")]
    pub sensitive_ports: Vec<String>,
    /// LIM001: rules per direction per group after template expansion.
    #[arg(long, default_value_t = 1000)]
    pub max_expanded_rules: usize,
    /// USE001 (with --server): a rule that decided no packet over this
    /// window (`30d`, `12h`, `90m`), where the server's hit data covers it.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub unused_window: String,
}

/// Runs `check`.
pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (loaded, name) = read_source(&args.source)?;
    let mut options = CheckOptions {
        expanded_rules_per_direction: args.max_expanded_rules,
        ..CheckOptions::default()
    };
    if !args.sensitive_ports.is_empty() {
        options.sensitive_ports = args
            .sensitive_ports
            .iter()
            .map(|s| SensitivePort::parse(s))
            .collect::<Result<_, _>>()?;
    }
    let mut report = check_loaded(&loaded, &options)?;
    if let Some(url) = &args.source.server {
        let window =
            palisade_model::flow::parse_duration("--unused-window", &args.unused_window)?.as_secs();
        if window == 0 {
            anyhow::bail!(
                "--unused-window {:?}: give a window longer than 0",
                args.unused_window
            );
        }
        let usage = unused_rules(&args.source, url, &loaded, window)?;
        report.add(usage.findings);
        note_unjudged(&usage.unjudged, window);
    }
    match args.output {
        CheckFormat::Json => print_json(&report)?,
        CheckFormat::Sarif => print_json(&sarif::to_sarif(&report.findings, &name))?,
        CheckFormat::Table => {
            if !report.findings.is_empty() {
                let mut t = table(&["ID", "Severity", "Where", "Finding"]);
                for f in &report.findings {
                    let mut text = f.message.clone();
                    if let Some(w) = &f.witness {
                        text.push_str(&format!("\nwitness: {w}"));
                    }
                    t.add_row(vec![
                        f.id.to_string(),
                        f.severity.to_string(),
                        f.location.to_string(),
                        text,
                    ]);
                }
                say!("{}", crate::output::whole_words(t));
            }
            let (e, w, i) = report.counts();
            say!("{name}: {e} error(s), {w} warning(s), {i} info");
        }
    }
    Ok(if report.fails(args.fail_on.into()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// USE001 for every group of a server's fleet: each group's
/// `DescribeRuleHits`, judged over `window` seconds.
fn unused_rules(
    source: &FleetSource,
    url: &str,
    loaded: &Loaded,
    window: u64,
) -> anyhow::Result<palisade_analyze::unused::Usage> {
    let client = source.client(url)?;
    let mut answers = Vec::with_capacity(loaded.fleet.security_groups.len());
    for g in &loaded.fleet.security_groups {
        let request = palisade_protocol::service::RuleHitsRequest {
            security_group_id: g.id.to_string(),
        };
        let value = client
            .palisade("DescribeRuleHits", &serde_json::to_value(&request)?)
            .with_context(|| format!("cannot read the rule hits of {} from {url}", g.id))?;
        let answer: palisade_protocol::service::RuleHitsAnswer = serde_json::from_value(value)
            .with_context(|| format!("DescribeRuleHits of {}: unexpected answer", g.id))?;
        answers.push(answer);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(palisade_analyze::unused::unused_rules(
        &loaded.fleet,
        &answers,
        window,
        now,
    ))
}

/// Says on stderr which groups' rules USE001 could not judge, and why
/// (at most 10 groups, then a count).
fn note_unjudged(unjudged: &[palisade_analyze::unused::Unjudged], window: u64) {
    const SHOWN: usize = 10;
    let span = palisade_analyze::unused::span(window);
    for u in unjudged.iter().take(SHOWN) {
        eprintln!(
            "note: USE001: {} rule(s) of {} not judged: hit data does not cover the last {span} ({})",
            u.rules, u.group, u.reason
        );
    }
    if unjudged.len() > SHOWN {
        eprintln!(
            "note: USE001: and {} more group(s) not judged",
            unjudged.len() - SHOWN
        );
    }
}

/// `palisade diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The fleet file before the change.
    pub old: PathBuf,
    /// The fleet file after the change.
    pub new: PathBuf,
    /// Only this instance (`ins-...`).
    #[arg(long)]
    pub instance: Option<String>,
    #[command(flatten)]
    pub flows: crate::replay_cmds::FlowsFrom,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// Runs `diff`.
pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = read_fleet(&args.old)?;
    let new = read_fleet(&args.new)?;
    note_missing(&args.old, &old);
    note_missing(&args.new, &new);
    let instance = args
        .instance
        .as_deref()
        .map(|s| InstanceId::parse_field("--instance", s))
        .transpose()?;
    let report = semantic_diff(&old.fleet, &new.fleet, instance.as_ref())?;
    let replay = args.flows.replay(&old.fleet, &new.fleet, None)?;
    match args.output {
        Format::Json => match &replay {
            Some(r) => print_json(&serde_json::json!({ "diff": report, "replay": r }))?,
            None => print_json(&report)?,
        },
        Format::Table => {
            if !report.changed {
                say!("no change in effect");
            }
            for d in &report.instances {
                say!(
                    "{} {} ({}): groups [{}] -> [{}]",
                    d.instance,
                    d.direction,
                    d.status,
                    d.old_groups.join(", "),
                    d.new_groups.join(", ")
                );
                let mut t = table(&[
                    "Change",
                    "Protocols",
                    "Peers",
                    "Ports",
                    "Witness",
                    "Old",
                    "New",
                ]);
                for (kind, list) in [
                    ("+ accepted", &d.newly_accepted),
                    ("- dropped", &d.newly_dropped),
                ] {
                    for c in list {
                        let b = &c.packets;
                        let protos = palisade_policy::eval::protocol_range_name(
                            b.protocol_lo,
                            b.protocol_hi,
                        );
                        t.add_row(vec![
                            kind.to_string(),
                            protos,
                            palisade_policy::codec::format_addr_range(b.peers),
                            palisade_policy::codec::format_ports(&[b.ports]),
                            c.witness.to_string(),
                            c.old.to_string(),
                            c.new.to_string(),
                        ]);
                    }
                }
                say!("{}", crate::output::whole_words(t));
                let shown = d.newly_accepted.len() + d.newly_dropped.len();
                let all = d.newly_accepted_boxes + d.newly_dropped_boxes;
                if shown < all {
                    say!("  ({shown} of {all} packet sets shown; --output json lists the counts)");
                }
            }
            if let Some(r) = &replay {
                crate::replay_cmds::print_replay(r);
            }
        }
    }
    if args.flows.fails(replay.as_ref()) {
        return Ok(ExitCode::from(2));
    }
    Ok(if report.changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `palisade reach`.
#[derive(Args, Debug)]
pub struct ReachArgs {
    /// The fleet: a file, or --server URL.
    #[command(flatten)]
    pub source: FleetSource,
    /// The source: an instance (`ins-...`), an IP, a CIDR or a first-last range.
    #[arg(long)]
    pub from: String,
    /// The destination: an instance, an IP, a CIDR or a range.
    #[arg(long)]
    pub to: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `gre` or a number; omit it for everything that gets through.
    #[arg(long)]
    pub protocol: Option<String>,
    /// The destination port (TCP and UDP).
    #[arg(long)]
    pub port: Option<u16>,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// Runs `reach`.
pub fn reach(args: ReachArgs) -> anyhow::Result<ExitCode> {
    let (loaded, name) = read_source(&args.source)?;
    note_missing(Path::new(&name), &loaded);
    let fleet = &loaded.fleet;
    if args.port.is_some() && args.protocol.is_none() {
        anyhow::bail!("--port: give --protocol too (tcp or udp)");
    }
    let protocol = args
        .protocol
        .as_deref()
        .map(|p| palisade_policy::parse_protocol("--protocol", p))
        .transpose()?;
    let query = ReachQuery {
        from: Endpoint::parse(fleet, "--from", &args.from)?,
        to: Endpoint::parse(fleet, "--to", &args.to)?,
        protocol,
        port: args.port,
    };
    let report = reach_query(fleet, &query)?;
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Table => {
            let what = match (report.protocol, report.port) {
                (Some(p), Some(port)) if palisade_policy::has_ports(p) => {
                    format!("{} {port}", palisade_policy::eval::protocol_name(p))
                }
                (Some(p), _) => palisade_policy::eval::protocol_name(p),
                (None, _) => "traffic".to_string(),
            };
            match report.reachable {
                Some(ok) => {
                    say!(
                        "{} -> {} {what}: {}",
                        report.from.id,
                        report.to.id,
                        if ok { "reachable" } else { "NOT reachable" }
                    );
                    for (side, d) in [
                        ("source egress", &report.source_egress),
                        ("destination ingress", &report.destination_ingress),
                    ] {
                        match d {
                            Some(d) => say!(
                                "  {side}: {} {}",
                                d.action,
                                match (&d.matched, &d.rule) {
                                    (Some(o), Some(r)) => format!("by {o} ({r}) for {}", d.packet),
                                    _ =>
                                        format!("(no rule matched: default drop) for {}", d.packet),
                                }
                            ),
                            None => say!("  {side}: no rules (addresses outside the fleet)"),
                        }
                    }
                }
                None => {
                    let allowed = report.allowed.clone().unwrap_or_default();
                    if allowed.is_empty() {
                        say!(
                            "{} -> {}: nothing gets through",
                            report.from.id,
                            report.to.id
                        );
                    } else {
                        say!("{} -> {}: what gets through", report.from.id, report.to.id);
                        let mut t = table(&["Protocols", "Ports"]);
                        for a in &allowed {
                            t.add_row(vec![a.protocols.clone(), a.ports.clone()]);
                        }
                        say!("{}", crate::output::whole_words(t));
                    }
                }
            }
        }
    }
    let ok = match report.reachable {
        Some(ok) => ok,
        None => report.allowed.as_ref().is_some_and(|a| !a.is_empty()),
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The shared table, at most 140 columns wide when stdout is not a
/// terminal (a pipe or a file has no width, and long messages must wrap).
fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = crate::output::table(header);
    if t.width().is_none() {
        t.set_width(140);
    }
    t
}

/// Reads the fleet of `source`, and a name for it (the path or the URL).
/// Findings on a server's fleet have paths (in `palisade export` order)
/// but no lines.
pub(crate) fn read_source(source: &FleetSource) -> anyhow::Result<(Loaded, String)> {
    let Some(url) = &source.server else {
        let Some(path) = &source.fleet else {
            anyhow::bail!("give a fleet file, or --server URL (with --credentials FILE)");
        };
        return Ok((read_fleet(path)?, path.display().to_string()));
    };
    let client = source.client(url)?;
    let mut remote = palisade_iac::export(&client)
        .with_context(|| format!("cannot read the fleet from {url}"))?;
    if let Some(path) = &source.fleet {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let local: palisade_model::FleetFile = palisade_model::yaml::from_str(&text)
            .with_context(|| format!("{} is not a fleet file", path.display()))?;
        remote.clusters = local.clusters;
        if local.limits.is_some() {
            remote.limits = local.limits;
        }
    }
    let loaded = palisade_analyze::load::load_file(remote, Default::default())
        .with_context(|| format!("the fleet of {url} cannot be analysed"))?;
    Ok((loaded, url.clone()))
}

/// Reads and leniently loads a fleet file (missing references and exceeded
/// limits do not stop analysis; anything else is unusable input).
fn read_fleet(path: &Path) -> anyhow::Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    load(&text).with_context(|| format!("{} cannot be analysed", path.display()))
}

fn note_missing(path: &Path, loaded: &Loaded) {
    if !loaded.findings.is_empty() {
        eprintln!(
            "note: {}: {} missing reference(s) are analysed as matching nothing (see `palisade check`)",
            path.display(),
            loaded.findings.len()
        );
    }
}
