//! Prints a generated fleet (see `palisade_bench::check`):
//! `cargo run --release -p palisade-bench --example gen_fleet -- GROUPS RULES INSTANCES [SEED] > fleet.yaml`
//! (defaults: the issue's 1000 100 10000).

use palisade_bench::check::{generate, Spec};
use std::io::Write as _;

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
        seed: args.get(3).map_or(d.seed, |s| *s as u64),
    };
    let _ = std::io::stdout().write_all(generate(spec).as_bytes());
}
