//! The `check` benchmark at a tiny size, so CI runs it once (the full size
//! is `cargo run --release -p palisade-bench --example bench_check`), and
//! a differential test on the generated fleet: for sampled packets, the
//! engine's composed accepted sets agree with resolving each instance and
//! evaluating linearly, first match.

use palisade_analyze::{check, load, CheckOptions, Engine};
use palisade_bench::check::{generate, naive_baseline, Spec};
use palisade_model::Direction;
use palisade_policy::{evaluate, resolve_instance, Packet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

#[test]
fn check_benchmark_runs_at_a_tiny_size() {
    let text = generate(Spec::tiny());
    let t = Instant::now();
    let loaded = load(&text).expect("generated fleet loads");
    let findings = check(&loaded.fleet, &CheckOptions::default()).expect("check");
    let checked = t.elapsed();
    let t = Instant::now();
    let base = naive_baseline(&loaded.fleet, 4);
    let baseline = t.elapsed();
    println!(
        "tiny: check {checked:?} ({} findings), baseline {baseline:?} ({} packets)",
        findings.len(),
        base.packets
    );
    assert_eq!(base.packets, 40 * 6 * 4);
}

#[test]
fn composed_effects_agree_with_linear_evaluation() {
    let spec = Spec {
        groups: 30,
        rules: 20,
        instances: 120,
        seed: 3,
    };
    let fleet = load(&generate(spec)).expect("loads").fleet;
    let mut engine = Engine::new(&fleet).expect("engine");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut checked = 0;
    for inst in &fleet.instances {
        let rs = resolve_instance(&fleet, &inst.id).expect("resolves");
        let eff = engine.effect(&inst.security_groups);
        for _ in 0..200 {
            let r = next();
            let direction = if r % 4 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let protocol = [6u8, 6, 17, 1, 47][(r >> 8) as usize % 5];
            // Peers mostly where the generated rules point.
            let peer = match (r >> 16) % 4 {
                0 => Ipv4Addr::new(10, (r >> 24) as u8 % 128, (r >> 32) as u8, (r >> 40) as u8),
                1 => Ipv4Addr::from(0x0A80_0001u32 + ((r >> 24) as u32 % 120)),
                2 => Ipv4Addr::new(203, (r >> 24) as u8, (r >> 32) as u8, 9),
                _ => Ipv4Addr::from((r >> 24) as u32),
            };
            let port = match (r >> 48) % 3 {
                0 => [22u16, 53, 80, 443, 5432, 8080][(r >> 52) as usize % 6],
                _ => (r >> 50) as u16,
            };
            let p = Packet {
                direction,
                protocol,
                peer: IpAddr::V4(peer),
                port: Some(port),
            };
            let linear = evaluate(&rs, &p).action == palisade_model::Action::Accept;
            let set = eff.dir(direction).accepted.contains(&p);
            assert_eq!(linear, set, "{} {p}", inst.id);
            // The deciding rule agrees too.
            let by_engine = engine
                .decide(&inst.security_groups, &p)
                .map(|r| r.origin().clone());
            assert_eq!(by_engine, evaluate(&rs, &p).matched, "{} {p}", inst.id);
            checked += 1;
        }
    }
    assert_eq!(checked, 120 * 200);
}
