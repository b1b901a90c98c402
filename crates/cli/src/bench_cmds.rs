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
//! The other subcommands live beside it: `bench dataplane` (root; kernel
//! new-flow rates and apply times, `bench_dataplane.rs`), `bench propagate`
//! (change-to-applied over N agents) and `bench api` (signed requests per
//! second), both in `bench_server.rs`.

use crate::output::{print_json, table, Format};
use anyhow::Context;
use clap::{Args, Subcommand};
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
    Dataplane(crate::bench_dataplane::DataplaneArgs),
    /// A server and N simulated agents: change-to-applied latency.
    Propagate(crate::bench_server::PropagateArgs),
    /// Signed requests per second: DescribeSecurityGroupPolicies and
    /// CreateSecurityGroupPolicies.
    Api(crate::bench_server::ApiArgs),
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

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Classify(args) => classify_cmd(args),
        BenchCommand::Dataplane(args) => crate::bench_dataplane::dataplane_cmd(args),
        BenchCommand::Propagate(args) => crate::bench_server::propagate_cmd(args),
        BenchCommand::Api(args) => crate::bench_server::api_cmd(args),
    }
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
