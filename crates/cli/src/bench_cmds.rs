//! `palisade bench`: benchmarks users run on their own machine and rule
//! sets (issue 6; numbers in `BENCHMARKS.md`). This module parses the
//! options and prints; the benchmarks themselves live in `palisade-bench`.
//!
//! `palisade bench classify --rules FILE [--packets N] [--output json]`:
//! FILE is a ClassBench file (recognised by its `@` lines, projected to
//! ingress rules as `palisade_bench::classbench` documents) or a fleet
//! file, in which case `--instance ins-...` names the instance whose
//! resolved rules are used and `--direction` picks its ingress (default)
//! or egress list. Exit 0 when the classifier agrees with the linear scan
//! on every verified packet, 1 on any mismatch, 2 on unusable input.
//!
//! The other subcommands measure in `palisade-bench` too and are printed
//! here: `bench dataplane` (root; kernel new-flow rates and apply times,
//! `palisade_bench::dataplane`), `bench propagate` (change-to-applied over
//! N agents) and `bench api` (signed requests per second), both
//! `palisade_bench::control_plane`, run against this binary's `serve`; and
//! `bench console` (the web console's pages, `palisade_bench::console`).

use crate::output::{print_json, table, Format};
use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_bench::control_plane::{self, ApiOptions, PropagateOptions};
use palisade_bench::dataplane::{self, DataplaneOptions, DataplaneReport, ModeResult};
use palisade_bench::interrupt::catch_interrupt;
use palisade_bench::{classbench, classify, ClassifyOptions, DpdkExport, Verify};
use palisade_model::{Direction, Fleet, InstanceId};
use palisade_policy::{resolve_instance, ResolvedRule};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `palisade bench ...`.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time the first-match classifier against the linear scan on a rule
    /// set, checking that they agree.
    Classify(ClassifyArgs),
    /// (root) New flows per second through no firewall, linear chains and
    /// verdict maps in network namespaces; apply and membership-change times.
    Dataplane(DataplaneArgs),
    /// A server and N simulated agents: change-to-applied latency.
    Propagate(PropagateArgs),
    /// Signed requests per second: DescribeSecurityGroupPolicies and
    /// CreateSecurityGroupPolicies.
    Api(ApiArgs),
    /// The web console's server time: the groups list with many groups and
    /// a group page with many rules, rendered in-process (issue 21).
    Console(ConsoleArgs),
    /// Flow records in the store: batched reports stored per second, and
    /// a filtered read of one instance and one hour (issue 18).
    Flows(FlowsArgs),
    /// (root) The real agent's CPU with flow recording on and off, side by
    /// side, at a rate of new TCP connections in network namespaces (issue 18).
    FlowlogAgent(FlowlogAgentArgs),
    /// Recorded flows replayed against a change (vs the linear scan),
    /// `suggest` over 1M records, `plan --flows` over 10M (issue 20).
    Replay(ReplayArgs),
}

/// `palisade bench flowlog-agent`.
#[derive(Args, Debug, Clone)]
pub struct FlowlogAgentArgs {
    /// New TCP connections per second to each node.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Seconds of traffic per node and round (1-120).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Rounds, each recording off then on (1-5).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// The recording agent's --flow-log-rate (above --rate: every
    /// connection is recorded).
    #[arg(long, default_value_t = 4000)]
    pub flow_log_rate: u32,
    /// Both agents' --flow-interval-secs (how often records are shipped).
    #[arg(long, default_value_t = 5)]
    pub flow_interval_secs: u64,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// `palisade bench replay`.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Records of the replay-rate measurement (held in memory).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Timed passes over them (the fastest counts).
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
    /// Records the linear-scan baseline replays.
    #[arg(long, default_value_t = 20_000)]
    pub linear_sample: usize,
    /// Records of the suggestion.
    #[arg(long, default_value_t = 1_000_000)]
    pub suggest_records: usize,
    /// Groups of the plan's fleet (twice as many instances).
    #[arg(long, default_value_t = 1_000)]
    pub groups: usize,
    /// Records of `plan --flows` (written to a temporary JSON Lines file first).
    #[arg(long, default_value_t = 10_000_000)]
    pub plan_records: u64,
    /// Seed of the generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// `palisade bench flows`.
#[derive(Args, Debug, Clone)]
pub struct FlowsArgs {
    /// Records to store.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Instances they are spread over.
    #[arg(long, default_value_t = 100)]
    pub instances: u64,
    /// The store (default: SQLite in a temporary directory).
    #[arg(long)]
    pub store: Option<palisade_store::Location>,
    /// Reads of each kind.
    #[arg(long, default_value_t = 20)]
    pub reads: usize,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// `palisade bench console`.
#[derive(Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// Security groups in the account.
    #[arg(long, default_value_t = 1000)]
    pub groups: usize,
    /// Ingress rules of the measured group (the default limit is 100).
    #[arg(long, default_value_t = 100)]
    pub rules: usize,
    /// Renders of each page.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// `palisade bench classify`.
#[derive(Args)]
pub struct ClassifyArgs {
    /// A ClassBench file, or a fleet file together with `--instance`.
    #[arg(long)]
    rules: PathBuf,
    /// With a fleet file: the instance (`ins-...`) whose resolved rules to use.
    #[arg(long)]
    instance: Option<String>,
    /// With a fleet file: `ingress` or `egress`.
    #[arg(long, default_value = "ingress")]
    direction: String,
    /// Packets to generate from the rules (plus random ones).
    #[arg(long, default_value_t = 1_000_000)]
    packets: usize,
    /// Packets checked against the linear scan: `auto` (all of them when that
    /// takes about a minute or less, else an evenly spaced sample), `all`,
    /// or a number.
    #[arg(long, default_value = "auto")]
    verify: String,
    /// Timed passes of the classifier over the packets (the fastest counts).
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Seed of the packet generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the rules and packets for DPDK's `dpdk-test-acl` into this
    /// directory: `rules.cb` (`--rulesf`), `trace` (`--tracef`),
    /// `line_rules` (the rule of each line of `rules.cb`) and `answers`
    /// (Palisade's answer for each trace line, -1 for none).
    #[arg(long)]
    export_dpdk: Option<PathBuf>,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade bench dataplane`.
#[derive(Args, Debug, Clone)]
pub struct DataplaneArgs {
    /// Rules in the ingress list (groups of 100).
    #[arg(long, default_value_t = 1000)]
    pub rules: usize,
    /// Addresses of the group the first rule references.
    #[arg(long, default_value_t = 10_000)]
    pub addresses: usize,
    /// Seconds of probes per round and node.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Rounds (each round probes every node once; the fastest counts).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Probes per send call (`sendmmsg`): 1 puts every probe's whole
    /// path in a system call of its own; 64 is how a NIC's NAPI poll
    /// hands packets to the stack, many per softirq.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
    /// Longest a compile or one `nft` load may take before it is given up.
    #[arg(long, default_value_t = 120)]
    pub max_load_secs: u64,
    /// Node 4 (maps with flow records): decisions logged per second, the
    /// agent's `--flow-log-rate`.
    #[arg(long, default_value_t = palisade_agent::compile::DEFAULT_FLOW_LOG_RATE)]
    pub flow_log_rate: u32,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// `palisade bench propagate`.
#[derive(Args, Debug, Clone)]
pub struct PropagateArgs {
    /// Simulated agents (at most 2,000: the instances one group may hold).
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Rule changes, made one at a time.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Pause after every agent applied a change before the next one, ms.
    /// An agent steps at most once a second (it sleeps out the rest of its
    /// 1 s interval after applying), so a gap under ~1 s measures that
    /// sleep; the default leaves every agent back in its long poll.
    #[arg(long, default_value_t = 1500)]
    pub gap_ms: u64,
    /// Agents do not send `ReportInstanceStatus` (by default they do, as
    /// real agents: one durable store write per agent after each change).
    #[arg(long)]
    pub no_report: bool,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// `palisade bench api`.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Seconds per measured call.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    pub output: Format,
}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Classify(args) => classify_cmd(args),
        BenchCommand::Dataplane(args) => dataplane_cmd(args),
        BenchCommand::Propagate(args) => propagate_cmd(args),
        BenchCommand::Api(args) => api_cmd(args),
        BenchCommand::Console(args) => console_cmd(args),
        BenchCommand::Flows(args) => flows_cmd(args),
        BenchCommand::FlowlogAgent(args) => flowlog_agent_cmd(args),
        BenchCommand::Replay(args) => replay_cmd(args),
    }
}

/// Runs `palisade bench dataplane`.
fn dataplane_cmd(args: DataplaneArgs) -> anyhow::Result<ExitCode> {
    if let Some(why) = dataplane::skip_reason() {
        anyhow::bail!("bench dataplane needs {why}");
    }
    catch_interrupt();
    let opts = DataplaneOptions {
        rules: args.rules,
        addresses: args.addresses,
        seconds: args.seconds,
        rounds: args.rounds,
        batch: args.batch,
        max_load_secs: args.max_load_secs,
        flow_log_rate: args.flow_log_rate,
    };
    let r = dataplane::run(&opts, &mut |l| eprintln!("bench dataplane: {l}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => print_dataplane(&r),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_dataplane(r: &DataplaneReport) {
    println!(
        "{} rules, {} referenced addresses; {} rounds of {} s, {} probes per send call, \
         conntrack flushed every {} probes",
        r.rules, r.addresses, r.rounds, r.seconds, r.batch, r.probes_per_flush
    );
    let mut t = table(&["", "no firewall", "linear", "maps"]);
    let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    let row = |name: &str, n: String, l: String, m: String| vec![name.to_string(), n, l, m];
    t.add_row(row(
        "new flows/s",
        format!(
            "{:.0} (one-rule table: {:.0})",
            r.none.flows_per_sec, r.one_rule.flows_per_sec
        ),
        format!("{:.0}", r.linear.flows.flows_per_sec),
        format!("{:.0}", r.maps.flows.flows_per_sec),
    ));
    t.add_row(row(
        "ns per new flow",
        format!("{:.0}", r.none.ns_per_flow),
        format!("{:.0}", r.linear.flows.ns_per_flow),
        format!("{:.0}", r.maps.flows.ns_per_flow),
    ));
    // The rows measured per mode: name, field, decimals.
    type Field = fn(&ModeResult) -> Option<f64>;
    let rows_before: [(&str, Field, usize); 6] = [
        ("ns added per new flow", |m| m.ns_added_per_flow, 0),
        (
            "ns added over the one-rule table",
            |m| m.ns_added_over_one_rule,
            0,
        ),
        ("elements", |m| Some(m.elements as f64), 0),
        ("compile ms", |m| Some(m.compile_ms), 0),
        ("apply ms", |m| m.apply_ms, 0),
        ("replace ms", |m| m.replace_ms, 0),
    ];
    let rows_after: [(&str, Field, usize); 4] = [
        ("member leaves ms (kernel)", |m| m.leave_apply_ms, 1),
        ("table read ms (nft -j, after a load)", |m| m.read_ms, 1),
        ("generation ms (netlink, idle step)", |m| m.generation_ms, 3),
        ("counters ms (netlink, status report)", |m| m.counters_ms, 2),
    ];
    let per_mode = |t: &mut comfy_table::Table, rows: &[(&str, Field, usize)]| {
        for (name, field, d) in rows {
            t.add_row(row(
                name,
                "-".into(),
                opt(field(&r.linear), *d),
                opt(field(&r.maps), *d),
            ));
        }
    };
    per_mode(&mut t, &rows_before);
    let change = |m: &ModeResult| format!("{} ({})", opt(m.change_apply_ms, 1), m.change_kind);
    t.add_row(row(
        "membership change ms (kernel)",
        "-".into(),
        change(&r.linear),
        change(&r.maps),
    ));
    per_mode(&mut t, &rows_after);
    println!("{t}");
    if let Some(x) = r.linear_over_maps {
        println!("linear adds {x:.1}x what maps add per new flow");
    }
    if let Some(ns) = r.recording_ns_added {
        println!(
            "flow records on (maps, {} logged/s at most): {:.0} ns per new flow, {ns:.0} ns over maps without; {} decisions logged, {} over the limit counted",
            r.flow_log_rate, r.maps_recording.ns_per_flow, r.recording_logged, r.recording_suppressed
        );
    }
    for (name, m) in [("linear", &r.linear), ("maps", &r.maps)] {
        if let Some(s) = &m.skipped {
            println!("{name}: {s}");
        }
    }
}

/// Runs `palisade bench propagate`.
fn propagate_cmd(args: PropagateArgs) -> anyhow::Result<ExitCode> {
    catch_interrupt();
    let opts = PropagateOptions {
        palisade: std::env::current_exe().context("cannot find the palisade binary")?,
        agents: args.agents,
        changes: args.changes,
        gap_ms: args.gap_ms,
        reports: !args.no_report,
    };
    let r = control_plane::propagate(&opts, &mut |l| eprintln!("bench propagate: {l}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => {
            let mut t = table(&["", "value"]);
            for (k, v) in [
                ("agents", r.agents.to_string()),
                ("changes", r.changes.to_string()),
                ("samples (missed)", format!("{} ({})", r.samples, r.missed)),
                ("change-to-applied p50 ms", format!("{:.1}", r.p50_ms)),
                ("p99 ms", format!("{:.1}", r.p99_ms)),
                ("max ms", format!("{:.1}", r.max_ms)),
                ("write call p50 ms", format!("{:.1}", r.write_p50_ms)),
                (
                    "p99 / target (1 s)",
                    format!("{:.2}", r.p99_ms / r.target_p99_ms),
                ),
            ] {
                t.add_row(vec![k.to_string(), v]);
            }
            println!("{t}");
        }
    }
    Ok(if r.missed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `palisade bench api`.
fn api_cmd(args: ApiArgs) -> anyhow::Result<ExitCode> {
    catch_interrupt();
    let opts = ApiOptions {
        palisade: std::env::current_exe().context("cannot find the palisade binary")?,
        seconds: args.seconds,
        clients: args.clients,
    };
    let r = control_plane::api(&opts, &mut |l| eprintln!("bench api: {l}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => {
            let mut t = table(&["call", "requests/s", "p50 ms", "p99 ms", "errors"]);
            for (k, v) in [
                ("DescribeSecurityGroupPolicies", &r.describe),
                ("CreateSecurityGroupPolicies (durable)", &r.create),
                ("baseline: GET /metrics", &r.baseline_metrics),
            ] {
                t.add_row(vec![
                    k.to_string(),
                    format!("{:.0}", v.per_sec),
                    format!("{:.2}", v.p50_ms),
                    format!("{:.2}", v.p99_ms),
                    v.errors.to_string(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `palisade bench console`.
fn flows_cmd(args: FlowsArgs) -> anyhow::Result<ExitCode> {
    let opts = palisade_bench::flows::FlowsOptions {
        records: args.records,
        instances: args.instances,
        store: args.store,
        reads: args.reads,
    };
    let r = palisade_bench::flows::run(&opts, &mut |l| eprintln!("bench flows: {l}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => {
            println!(
                "{} records over {} instances in {}",
                r.records, r.instances, r.store
            );
            println!(
                "stored: {:.0} records/s (batches of 2,000)",
                r.stored_per_sec
            );
            println!(
                "one instance, one hour ({} records), newest 100: median {:.2} ms, slowest {:.2} ms",
                r.filtered_matched, r.filtered_ms.0, r.filtered_ms.1
            );
            println!(
                "baseline, the account's newest 100: median {:.2} ms, slowest {:.2} ms",
                r.unfiltered_ms.0, r.unfiltered_ms.1
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn flowlog_agent_cmd(args: FlowlogAgentArgs) -> anyhow::Result<ExitCode> {
    use palisade_bench::flowlog_agent;
    if let Some(why) = flowlog_agent::skip_reason() {
        anyhow::bail!("bench flowlog-agent needs {why}");
    }
    catch_interrupt();
    let opts = flowlog_agent::FlowlogAgentOptions {
        palisade: std::env::current_exe().context("cannot find the palisade binary")?,
        rate: args.rate,
        seconds: args.seconds,
        rounds: args.rounds,
        flow_log_rate: args.flow_log_rate,
        flow_interval_secs: args.flow_interval_secs,
    };
    let r = flowlog_agent::run(&opts, &mut |l| eprintln!("bench flowlog-agent: {l}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => {
            println!(
                "{} new TCP connections/s for {} s per node and round; recording agent: \
                 --flow-log-rate {}, records shipped every {} s",
                r.rate, r.seconds, r.flow_log_rate, r.flow_interval_secs
            );
            let mut t = table(&[
                "recording",
                "connections/s",
                "failed",
                "agent CPU s",
                "children CPU s",
                "% of a core",
                "with children",
            ]);
            for p in &r.phases {
                t.add_row(vec![
                    if p.recording { "on" } else { "off" }.to_string(),
                    format!("{:.0}", p.rate),
                    p.failed.to_string(),
                    format!("{:.2}", p.agent_cpu_secs),
                    format!("{:.2}", p.children_cpu_secs),
                    format!("{:.2}", p.agent_core_pct),
                    format!("{:.2}", p.with_children_core_pct),
                ]);
            }
            println!("{t}");
            println!(
                "mean % of a core: off {:.2} ({:.2} with children), on {:.2} ({:.2}); \
                 recording and shipping add {:.2} ({:.2})",
                r.off_core_pct,
                r.off_with_children_core_pct,
                r.on_core_pct,
                r.on_with_children_core_pct,
                r.on_core_pct - r.off_core_pct,
                r.on_with_children_core_pct - r.off_with_children_core_pct
            );
            for (k, v) in &r.agent_metrics {
                println!("{k} {v}");
            }
            println!("records of the recording node stored: {}", r.records_stored);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn console_cmd(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let opts = palisade_bench::console::ConsoleOptions {
        groups: args.groups,
        rules: args.rules,
        runs: args.runs,
    };
    let r = palisade_bench::console::run(&opts, &mut |l| eprintln!("bench console: {l}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => {
            println!(
                "{} groups; the group page has {} ingress rules; {} renders each",
                r.groups, r.rules, r.runs
            );
            let mut t = table(&["page", "bytes", "p50 ms", "p90 ms", "max ms"]);
            for p in &r.pages {
                t.add_row(vec![
                    p.page.clone(),
                    p.bytes.to_string(),
                    format!("{:.2}", p.p50_ms),
                    format!("{:.2}", p.p90_ms),
                    format!("{:.2}", p.max_ms),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn classify_cmd(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&args)?;
    let verify = parse_verify(&args.verify)?;
    let opts = ClassifyOptions {
        packets: args.packets,
        seed: args.seed,
        passes: args.passes,
        verify,
    };
    let run = classify::run(&rules, &opts, &mut |line| {
        eprintln!("bench classify: {line}")
    });
    if let Some(dir) = &args.export_dpdk {
        export(dir, &rules, &run)?;
    }
    let r = &run.report;
    match args.output {
        Format::Json => print_json(r)?,
        Format::Table => {
            let mut t = table(&["", "value"]);
            let rows: [(&str, String); 12] = [
                ("rules", r.rules.to_string()),
                ("packets", r.packets.to_string()),
                (
                    "verified against the linear scan",
                    format!(
                        "{}{}",
                        r.verified,
                        if r.linear_sample { " (sample)" } else { "" }
                    ),
                ),
                ("mismatches", r.mismatches.to_string()),
                (
                    "classifier ns/lookup (batch)",
                    format!("{:.1}", r.ns_per_lookup),
                ),
                (
                    "classifier ns/lookup (one by one)",
                    format!("{:.1}", r.ns_per_lookup_single),
                ),
                ("linear ns/lookup", format!("{:.1}", r.linear_ns_per_lookup)),
                ("speedup", format!("{:.0}x", r.speedup)),
                ("build ms", format!("{:.1}", r.build_ms)),
                (
                    "memory",
                    format!("{:.1} KiB", r.memory_bytes as f64 / 1024.0),
                ),
                (
                    "structure",
                    format!(
                        "{} protocol classes, {} intervals, {} port maps",
                        r.protocol_classes, r.intervals, r.port_maps
                    ),
                ),
                ("packets matched by a rule", r.matched.to_string()),
            ];
            for (k, v) in rows {
                t.add_row(vec![k.to_string(), v]);
            }
            println!("{t}");
            for m in &r.mismatch_examples {
                println!(
                    "mismatch: {}: classifier {:?}, linear scan {:?}",
                    m.packet, m.classifier, m.linear
                );
            }
        }
    }
    Ok(if r.mismatches > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The rules of `--rules`: a ClassBench file projected, or a fleet
/// instance's resolved list.
fn load_rules(args: &ClassifyArgs) -> anyhow::Result<Vec<ResolvedRule>> {
    let path = &args.rules;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --rules {}", path.display()))?;
    if classbench::looks_like_classbench(&text) {
        if args.instance.is_some() {
            anyhow::bail!(
                "--instance: {} is a ClassBench file; --instance is for fleet files",
                path.display()
            );
        }
        let parsed = classbench::parse(&text)
            .with_context(|| format!("--rules {}: not a valid ClassBench file", path.display()))?;
        return Ok(classbench::project(&parsed));
    }
    let Some(instance) = &args.instance else {
        anyhow::bail!(
            "--rules {}: not a ClassBench file (no `@` rule lines); for a fleet file, name the instance with --instance ins-...",
            path.display()
        );
    };
    let fleet = Fleet::parse(&text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::anyhow!(
            "--rules {} is neither a ClassBench file nor a valid fleet file (run `palisade validate`):\n{}",
            path.display(),
            lines.join("\n")
        )
    })?;
    let id = InstanceId::parse_field("--instance", instance)?;
    if fleet.instance(&id).is_none() {
        anyhow::bail!(
            "ResourceNotFound: --instance {instance:?}: no such instance in {}",
            path.display()
        );
    }
    let direction = Direction::parse_field("--direction", &args.direction).map_err(|_| {
        anyhow::anyhow!(
            "--direction {:?}: expected ingress or egress",
            args.direction
        )
    })?;
    let ruleset = resolve_instance(&fleet, &id)?;
    Ok(ruleset.rules(direction).to_vec())
}

fn parse_verify(v: &str) -> anyhow::Result<Verify> {
    match v.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Verify::Auto),
        "all" => Ok(Verify::All),
        n => n.parse::<usize>().map(Verify::Sample).map_err(|_| {
            anyhow::anyhow!("--verify {v:?}: expected auto, all or a number of packets")
        }),
    }
}

fn export(dir: &Path, rules: &[ResolvedRule], run: &classify::ClassifyRun) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--export-dpdk: cannot create {}", dir.display()))?;
    let x = DpdkExport::new(rules, &run.packets);
    let mut line_rules = String::new();
    for i in &x.rule_of_line {
        let _ = writeln!(line_rules, "{i}");
    }
    let mut answers = String::new();
    for (p, a) in run.packets.iter().zip(&run.answers) {
        if p.peer.is_ipv4() {
            match a {
                Some(i) => {
                    let _ = writeln!(answers, "{i}");
                }
                None => answers.push_str("-1\n"),
            }
        }
    }
    for (name, body) in [
        ("rules.cb", &x.rules),
        ("trace", &x.trace),
        ("line_rules", &line_rules),
        ("answers", &answers),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body)
            .with_context(|| format!("--export-dpdk: cannot write {}", path.display()))?;
    }
    if x.skipped_v6_ranges > 0 {
        eprintln!(
            "bench classify: --export-dpdk: {} IPv6 peer ranges left out (dpdk-test-acl's IPv4 mode)",
            x.skipped_v6_ranges
        );
    }
    eprintln!(
        "bench classify: wrote {} rule lines and {} trace lines to {}",
        x.rule_of_line.len(),
        x.trace_len,
        dir.display()
    );
    Ok(())
}

fn replay_cmd(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    use palisade_bench::replay::{run, ReplayOptions};
    let opts = ReplayOptions {
        rate_records: args.records,
        passes: args.passes,
        linear_sample: args.linear_sample,
        suggest_records: args.suggest_records,
        groups: args.groups,
        plan_records: args.plan_records,
        seed: args.seed,
    };
    let r = run(&opts, &mut |line| eprintln!("{line}"))?;
    match args.output {
        Format::Json => print_json(&r)?,
        Format::Table => {
            let mut t = table(&["measure", "value"]);
            let rows: Vec<(&str, String)> = vec![
                ("rules (one instance)", r.rules.to_string()),
                (
                    "replay: compile both sides, s",
                    format!("{:.3}", r.replay_build_secs),
                ),
                (
                    "replay ns/record (fastest pass)",
                    format!("{:.1}", r.replay_ns_per_record),
                ),
                (
                    "replay records/s (one core)",
                    format!("{:.0}", r.replay_records_per_sec),
                ),
                (
                    "linear scan ns/record",
                    format!("{:.1}", r.linear_ns_per_record),
                ),
                ("speedup vs linear", format!("{:.0}x", r.speedup)),
                (
                    "mismatches (of sampled)",
                    format!("{} (of {})", r.mismatches, r.linear_records),
                ),
                (
                    "suggest: records, seconds",
                    format!("{}, {:.2}", r.suggest_records, r.suggest_secs),
                ),
                (
                    "suggest: rules, every flow accepted",
                    format!("{}, {}", r.suggest_rules, r.suggest_every_flow_accepted),
                ),
                (
                    "plan --flows: groups, instances",
                    format!("{}, {}", r.plan_groups, r.plan_instances),
                ),
                (
                    "plan --flows: records (file MiB)",
                    format!(
                        "{} ({:.0})",
                        r.plan_records,
                        r.plan_file_bytes as f64 / 1048576.0
                    ),
                ),
                (
                    "plan --flows: plan + compile + replay s",
                    format!(
                        "{:.2} + {:.2} + {:.2} = {:.2}",
                        r.plan_secs, r.plan_compile_secs, r.plan_replay_secs, r.plan_total_secs
                    ),
                ),
                (
                    "plan --flows: records/s read and replayed",
                    format!("{:.0}", r.plan_records_per_sec),
                ),
                (
                    "plan --flows: peak RSS MiB",
                    format!("{:.1}", r.plan_peak_rss_mib),
                ),
            ];
            for (k, v) in rows {
                t.add_row(vec![k.to_string(), v]);
            }
            println!("{t}");
        }
    }
    Ok(if r.mismatches == 0 && r.suggest_every_flow_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
