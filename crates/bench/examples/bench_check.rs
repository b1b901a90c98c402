//! The `check` benchmark of `BENCHMARKS.md`: generates a fleet, then times,
//! in one process, parsing, `check`, and the naive baseline (per-instance
//! resolution and linear evaluation of sampled packets).
//! `cargo run --release -p palisade-bench --example bench_check -- [GROUPS RULES INSTANCES]`

use palisade_analyze::{check, diff, load, CheckOptions};
use palisade_bench::check::{generate, naive_baseline, Spec};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let d = Spec::issue();
    let spec = Spec {
        groups: args.first().copied().unwrap_or(d.groups),
        rules: args.get(1).copied().unwrap_or(d.rules),
        instances: args.get(2).copied().unwrap_or(d.instances),
        seed: d.seed,
    };
    let samples = args.get(3).copied().unwrap_or(16);
    let t = Instant::now();
    let text = generate(spec);
    let gen = t.elapsed();
    let t = Instant::now();
    let loaded = match load(&text) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("generated fleet does not load: {e}");
            std::process::exit(2);
        }
    };
    let parse = t.elapsed();
    let t = Instant::now();
    let findings = match check(&loaded.fleet, &CheckOptions::default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("check failed: {e}");
            std::process::exit(2);
        }
    };
    let checked = t.elapsed();
    let t = Instant::now();
    let base = naive_baseline(&loaded.fleet, samples);
    let baseline = t.elapsed();
    let exp = findings
        .iter()
        .filter(|f| f.id == palisade_analyze::CheckId::Exp001)
        .count();
    println!(
        "fleet: {} groups x {} rules, {} instances ({} bytes of YAML, generated in {:.2?})",
        spec.groups,
        spec.rules,
        spec.instances,
        text.len(),
        gen
    );
    println!("parse + validate (lenient load): {parse:.2?}");
    println!(
        "check (every id, exact sets): {checked:.2?}, {} findings ({} EXP001)",
        findings.len(),
        exp
    );
    println!(
        "baseline (resolve each instance, {} sampled packets linearly: {} evaluated, {} instances flagged): {baseline:.2?}",
        samples * 6,
        base.packets,
        base.exposed_instances
    );
    println!(
        "ratio check / baseline: {:.2}",
        checked.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
    // diff: the same fleet with the first ACCEPT of the base group sg-g0000000
    // (bound to a tenth of the instances) turned into a DROP.
    let changed = text.replacen("Action: ACCEPT", "Action: DROP", 1);
    let t = Instant::now();
    let (Ok(a), Ok(b)) = (load(&text), load(&changed)) else {
        eprintln!("diff fleets do not load");
        std::process::exit(2);
    };
    let loads = t.elapsed();
    let t = Instant::now();
    match diff(&a.fleet, &b.fleet, None) {
        Ok(r) => println!(
            "diff (one rule edited): {:.2?} after loading both in {loads:.2?}; {} instance-directions changed",
            t.elapsed(),
            r.instances.len()
        ),
        Err(e) => eprintln!("diff failed: {e}"),
    }
}
