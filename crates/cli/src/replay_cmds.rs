//! Recorded flows put to work (issue 20; docs/replay.md): the `--flows`
//! option of `plan`, `diff` and `apply`, which replays observed flows
//! against the current and the proposed rules (`palisade_analyze::replay`)
//! and names the connections a change would cut, and `palisade suggest`,
//! which proposes least-privilege rules from the same records
//! (`palisade_analyze::suggest`).
//!
//! A SOURCE of records is a file (the JSON array `palisade flows --output
//! json` prints, or JSON Lines; `-` for stdin), `server` (the command's own
//! `--server`), or a server URL; a server's records are read with
//! `DescribeFlowRecords`, 1,000 a page, over the last `--since`.

use crate::output::{print_json, table};
use anyhow::Context;
use clap::{Args, ValueEnum};
use palisade_analyze::replay::{read_records, FlowChange, ReplayReport, Replayer};
use palisade_analyze::suggest::{Scope, SuggestOptions, Suggester, Suggestion};
use palisade_client::{Client, Credentials};
use palisade_model::flow::{parse_duration, FlowRecord};
use palisade_model::{Fleet, InstanceId, SecurityGroupId};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// `--flows` and its companions, for `plan`, `diff` and `apply`.
#[derive(Args, Clone, Debug, Default)]
pub struct FlowsFrom {
    /// Replay recorded flows against the current and the proposed rules:
    /// a records file (JSON array or JSON Lines; `-` for stdin), `server`
    /// (this command's --server) or a server URL.
    #[arg(long, value_name = "SOURCE")]
    pub flows: Option<String>,
    /// With a server SOURCE: records of the last DURATION (30s, 15m, 1h, 7d).
    #[arg(long, default_value = "7d", requires = "flows")]
    pub since: String,
    /// Credentials JSON for a server URL SOURCE (default: the
    /// TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY variables).
    #[arg(long, requires = "flows")]
    pub flows_credentials: Option<PathBuf>,
    /// Exit 2 when any flow recorded ACCEPT would be dropped.
    #[arg(long, requires = "flows")]
    pub fail_on_break: bool,
}

impl FlowsFrom {
    /// Replays the records against `before` and `after`; `server` is the
    /// command's own server, for `--flows server`.
    pub fn replay(
        &self,
        before: &Fleet,
        after: &Fleet,
        server: Option<&Client>,
    ) -> anyhow::Result<Option<ReplayReport>> {
        let Some(source) = &self.flows else {
            return Ok(None);
        };
        let mut replayer = Replayer::new(before, after)?;
        let src = Source::parse(source, &self.since, self.flows_credentials.as_ref(), server)?;
        src.for_each(&json!({}), |r| replayer.replay(r))?;
        Ok(Some(replayer.report()))
    }

    /// Whether `report` fails the run: `--fail-on-break` and a break.
    pub fn fails(&self, report: Option<&ReplayReport>) -> bool {
        self.fail_on_break && report.is_some_and(|r| r.breaks > 0)
    }
}

/// Where records come from.
enum Source<'a> {
    File(String),
    Server(Server<'a>, u64),
}

/// The command's own client, or one made for a URL SOURCE.
enum Server<'a> {
    Own(&'a Client),
    Other(Box<Client>),
}

impl Server<'_> {
    fn client(&self) -> &Client {
        match self {
            Server::Own(c) => c,
            Server::Other(c) => c,
        }
    }
}

impl<'a> Source<'a> {
    fn parse(
        text: &str,
        since: &str,
        credentials: Option<&PathBuf>,
        server: Option<&'a Client>,
    ) -> anyhow::Result<Source<'a>> {
        let window = || parse_duration("--since", since).map(|d| d.as_secs());
        if text == "server" {
            let client = server.context(
                "--flows server: this command has no --server (give a records file or a URL)",
            )?;
            return Ok(Source::Server(Server::Own(client), window()?));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            let creds = Credentials::load(credentials.map(PathBuf::as_path))?;
            let client = Client::new(text, creds)?;
            return Ok(Source::Server(Server::Other(Box::new(client)), window()?));
        }
        Ok(Source::File(text.to_string()))
    }

    /// Calls `each` with every record; `filter` adds `DescribeFlowRecords`
    /// filters for a server (a file's records are all passed).
    fn for_each(&self, filter: &Value, mut each: impl FnMut(&FlowRecord)) -> anyhow::Result<u64> {
        match self {
            Source::File(path) => {
                let name = if path == "-" { "stdin" } else { path.as_str() };
                let n = if path == "-" {
                    read_records(std::io::stdin().lock(), |r, _| {
                        each(&r);
                        Ok(())
                    })
                } else {
                    let f =
                        std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
                    read_records(std::io::BufReader::with_capacity(1 << 20, f), |r, _| {
                        each(&r);
                        Ok(())
                    })
                };
                n.with_context(|| name.to_string())
            }
            Source::Server(server, since) => fetch(server.client(), *since, filter, each),
        }
    }
}

/// Pages through `DescribeFlowRecords` over the last `since` seconds.
/// The window's end is fixed at the start, and records are told apart by
/// `RecordId`, so records arriving meanwhile neither repeat nor shift pages.
fn fetch(
    client: &Client,
    since: u64,
    filter: &Value,
    mut each: impl FnMut(&FlowRecord),
) -> anyhow::Result<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut params = filter.clone();
    let p = params
        .as_object_mut()
        .context("DescribeFlowRecords filter")?;
    p.insert("StartTime".into(), json!(now.saturating_sub(since)));
    p.insert("EndTime".into(), json!(now));
    p.insert("Limit".into(), json!(1000));
    let mut seen: HashSet<i64> = HashSet::new();
    let mut offset = 0u64;
    loop {
        if let Some(p) = params.as_object_mut() {
            p.insert("Offset".into(), json!(offset));
        }
        let answer = client.palisade("DescribeFlowRecords", &params)?;
        let page = answer["FlowRecordSet"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        for mut v in page {
            let id = v
                .as_object_mut()
                .and_then(|m| m.remove("RecordId"))
                .and_then(|x| x.as_i64());
            if id.is_some_and(|id| !seen.insert(id)) {
                continue;
            }
            let r: FlowRecord = serde_json::from_value(v)
                .context("DescribeFlowRecords answered a record that does not parse")?;
            each(&r);
        }
        if answer["TotalCount"].as_u64().is_some_and(|t| offset >= t) {
            break;
        }
    }
    Ok(seen.len() as u64)
}

/// Prints a replay report as a table (the summary line last) or JSON.
pub fn print_replay(report: &ReplayReport) {
    for (title, list) in [
        ("Observed flows newly dropped", &report.newly_dropped),
        ("Observed flows newly allowed", &report.newly_allowed),
    ] {
        if list.is_empty() {
            continue;
        }
        println!("\n{title}:");
        let mut t = table(&[
            "Instance",
            "Dir",
            "Proto",
            "Peer",
            "Port",
            "Now",
            "After the change",
            "Records",
            "Seen ACCEPT",
            "First seen",
            "Last seen",
        ]);
        for c in list.iter().take(SHOWN) {
            t.add_row(row(c));
        }
        println!("{}", crate::output::whole_words(t));
        if list.len() > SHOWN {
            println!(
                "  ({SHOWN} of {} flows shown; --output json lists all)",
                list.len()
            );
        }
    }
    println!("\n{}", report.summary);
}

/// Rows of each kind a table shows.
const SHOWN: usize = 50;

fn row(c: &FlowChange) -> Vec<String> {
    let verdict = |v: &palisade_policy::Verdict| match &v.matched {
        Some(o) => format!("{} by {o}", v.action),
        None => "DROP (default)".to_string(),
    };
    vec![
        c.instance.clone(),
        c.direction.to_string(),
        palisade_policy::eval::protocol_name(c.protocol),
        c.peer.to_string(),
        c.port.map_or("-".to_string(), |p| p.to_string()),
        verdict(&c.before),
        verdict(&c.after),
        c.records.to_string(),
        c.observed_accepted.to_string(),
        timestamp(c.first_seen),
        timestamp(c.last_seen),
    ]
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn timestamp(t: u64) -> String {
    let s = t % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        palisade_analyze::suggest::date(t),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `palisade suggest`.
#[derive(Args)]
pub struct SuggestArgs {
    /// The fleet: a file, or --server URL.
    #[command(flatten)]
    source: crate::analyze_cmds::FleetSource,
    /// Propose a group for this instance alone (`ins-...`).
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    instance: Option<String>,
    /// Propose new rules for this group (`sg-...`), from the flows its rules accepted.
    #[arg(long)]
    group: Option<String>,
    /// The records: a file (JSON array or JSON Lines; `-` for stdin),
    /// `server` (the --server), or a server URL.
    #[arg(long, value_name = "SOURCE")]
    flows: String,
    /// With a server SOURCE: records of the last DURATION.
    #[arg(long, default_value = "7d")]
    since: String,
    /// Credentials JSON for a server URL SOURCE.
    #[arg(long)]
    flows_credentials: Option<PathBuf>,
    /// Aggregate IPv4 peers into CIDRs no wider than this prefix (32: exact).
    #[arg(long, alias = "max-prefix", default_value_t = 24)]
    aggregate_v4: u8,
    /// Aggregate IPv6 peers into CIDRs no wider than this prefix (128: exact).
    #[arg(long, default_value_t = 64)]
    aggregate_v6: u8,
    /// Also allow the flows recorded WOULD_DROP (audit mode).
    #[arg(long)]
    include_would_drop: bool,
    /// table (report and fragment), yaml (the fragment only, for `plan`
    /// and `apply`) or json (everything).
    #[arg(long, value_enum, default_value_t)]
    output: SuggestFormat,
}

/// `--output` of `suggest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SuggestFormat {
    /// The report and the fragment, for people.
    #[default]
    Table,
    /// The fleet fragment only.
    Yaml,
    /// Everything.
    Json,
}

/// Runs `suggest`: exit 0 when the proposal accepts every observed flow,
/// 1 when it does not (a bug to report), 2 on unusable input.
pub fn suggest(args: SuggestArgs) -> anyhow::Result<ExitCode> {
    let (loaded, _) = crate::analyze_cmds::read_source(&args.source)?;
    let fleet = &loaded.fleet;
    let scope = match (&args.instance, &args.group) {
        (Some(i), _) => Scope::Instance(InstanceId::parse_field("--instance", i)?),
        (None, Some(g)) => Scope::Group(SecurityGroupId::parse_field("--group", g)?),
        (None, None) => anyhow::bail!("give --instance or --group"),
    };
    let filter = match &scope {
        Scope::Instance(i) => json!({ "InstanceIds": [i.to_string()] }),
        Scope::Group(g) => json!({ "SecurityGroupId": g.to_string() }),
    };
    let options = SuggestOptions {
        aggregate_v4: args.aggregate_v4,
        aggregate_v6: args.aggregate_v6,
        include_would_drop: args.include_would_drop,
    };
    let mut suggester = Suggester::new(fleet, scope, options)?;
    let client = match &args.source.server {
        Some(url) => Some(args.source.client(url)?),
        None => None,
    };
    let src = Source::parse(
        &args.flows,
        &args.since,
        args.flows_credentials.as_ref(),
        client.as_ref(),
    )?;
    src.for_each(&filter, |r| suggester.add(r))?;
    let s = suggester.finish()?;
    match args.output {
        SuggestFormat::Json => print_json(&s)?,
        SuggestFormat::Yaml => {
            print!("{}", serde_yaml::to_string(&s.fragment)?);
            eprintln!("{}", summary(&s));
        }
        SuggestFormat::Table => {
            print!("{}", report(&s));
            println!("\nFleet fragment (`palisade suggest ... --output yaml > f.yaml`, then `palisade plan f.yaml`):\n");
            print!("{}", serde_yaml::to_string(&s.fragment)?);
        }
    }
    Ok(if s.every_flow_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summary(s: &Suggestion) -> String {
    let rules: usize = s.directions.iter().map(|d| d.rules.len()).sum();
    let flows: usize = s.directions.iter().map(|d| d.flows).sum();
    format!(
        "{}: {rules} rule(s) from {} accepted record(s) ({flows} distinct flows); every observed flow accepted: {}",
        s.scope,
        s.records,
        if s.every_flow_accepted { "yes" } else { "NO" }
    )
}

fn report(s: &Suggestion) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{}\n", summary(s));
    for d in &s.directions {
        let e = &d.exposure;
        let _ = writeln!(
            out,
            "\n{}: {} rule(s) for {} flow(s) ({} record(s)), {} accepted",
            d.direction,
            d.rules.len(),
            d.flows,
            d.records,
            d.covered
        );
        let _ = writeln!(
            out,
            "  exposed (addresses x ports): IPv4 {} now -> {} suggested ({}), IPv6 {} -> {} ({})",
            big(e.current_v4),
            big(e.suggested_v4),
            ratio(e.current_v4, e.suggested_v4),
            big(e.current_v6),
            big(e.suggested_v6),
            ratio(e.current_v6, e.suggested_v6)
        );
        if !e.suggested_within_current {
            let _ = writeln!(
                out,
                "  note: the suggestion accepts some packets the current rules drop (flows recorded in audit mode, or rules changed since)"
            );
        }
        if d.flows == 0 {
            let _ = writeln!(
                out,
                "  note: no {} flow observed, so the suggestion accepts nothing in this direction",
                d.direction
            );
        }
        for u in &d.uncovered {
            let _ = writeln!(
                out,
                "  NOT accepted: {} {} port {:?}",
                palisade_policy::eval::protocol_name(u.protocol),
                u.peer,
                u.port
            );
        }
    }
    out
}

/// A count as people read it: exact below a million, else in powers of ten.
fn big(x: f64) -> String {
    if x < 1e6 {
        format!("{x:.0}")
    } else {
        format!("{x:.3e}")
    }
}

/// How many times smaller the suggestion is.
fn ratio(now: f64, suggested: f64) -> String {
    match (now > 0.0, suggested > 0.0) {
        (true, true) => format!("{:.3e}x smaller", now / suggested),
        (true, false) => "none left".to_string(),
        (false, true) => "was none".to_string(),
        (false, false) => "none either way".to_string(),
    }
}
