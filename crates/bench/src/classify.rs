//! `palisade bench classify` (issue 6 item 4): how fast the classifier
//! ([`palisade_policy::Classifier`]) answers first-match questions on a rule
//! list, against the linear scan ([`palisade_policy::eval::first_match_index`],
//! the oracle), and whether it always gives the oracle's answer.
//!
//! What it does, in order:
//!
//! 1. generates `packets` packets from the rules, deterministically for a
//!    seed ([`generate_packets`]): three in four are built from a random
//!    rule (its range ends, a point inside, or the neighbour just outside,
//!    for the peer and for the port; the rule's protocol, or for `ALL` a
//!    common or random one), one in four are random (IPv6 too when some
//!    rule has IPv6 peers);
//! 2. builds the classifier (`build_ms`) and reports its memory;
//! 3. classifies every packet, `passes` times, in batches
//!    ([`Classifier::classify_batch`], as DPDK's `rte_acl_classify` is
//!    measured) and one by one ([`Classifier::classify`]), and reports the
//!    fastest pass of each as `ns_per_lookup` and `ns_per_lookup_single`
//!    (the machine is shared: the fastest pass is the one least disturbed);
//!    the two must give the same answers;
//! 4. asks the linear scan for the verified packets (all of them, or an
//!    evenly spaced sample: see [`Verify`]), counts the mismatches, and
//!    reports the linear scan's time per packet over them as
//!    `linear_ns_per_lookup`.

use palisade_model::Family;
use palisade_policy::eval::first_match_index;
use palisade_policy::{Classifier, Packet, ProtocolMatch, ResolvedRule};
use serde::Serialize;
use std::hint::black_box;
use std::time::Instant;

/// How many packets the linear scan verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// All of them when that is at most [`AUTO_BUDGET`] rule checks
    /// (rules times packets), otherwise an evenly spaced sample of that many
    /// checks (at least 10,000 packets).
    #[default]
    Auto,
    /// Every packet, however long it takes.
    All,
    /// An evenly spaced sample of this many packets.
    Sample(usize),
}

/// The rule checks (rules x packets) [`Verify::Auto`] allows: about a
/// minute of linear scanning on the 2-core benchmark machine.
pub const AUTO_BUDGET: u64 = 4_000_000_000;

/// The benchmark's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// Packets generated.
    pub packets: usize,
    /// Seed of the packet generator.
    pub seed: u64,
    /// Timed passes of the classifier over all packets (the fastest counts).
    pub passes: usize,
    /// Packets checked against the linear scan.
    pub verify: Verify,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            packets: 1_000_000,
            seed: 1,
            passes: 5,
            verify: Verify::Auto,
        }
    }
}

/// The result, as `--output json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifyReport {
    /// Rules in the list.
    pub rules: usize,
    /// Packets generated and classified.
    pub packets: usize,
    /// Verified packets on which the classifier and the linear scan differ,
    /// plus packets on which the batch and one-by-one answers differ.
    pub mismatches: usize,
    /// Classifier nanoseconds per packet, fastest pass of
    /// [`Classifier::classify_batch`] over all packets (16 side by side).
    pub ns_per_lookup: f64,
    /// The same with [`Classifier::classify`], one packet at a time.
    pub ns_per_lookup_single: f64,
    /// Linear scan nanoseconds per packet, over the verified packets.
    pub linear_ns_per_lookup: f64,
    /// `linear_ns_per_lookup / ns_per_lookup`.
    pub speedup: f64,
    /// Classifier build time, milliseconds.
    pub build_ms: f64,
    /// Heap bytes held by the classifier.
    pub memory_bytes: usize,
    /// Packets checked against (and timed with) the linear scan.
    pub verified: usize,
    /// Whether `verified` is a sample of `packets` rather than all of them.
    pub linear_sample: bool,
    /// Packets some rule matches.
    pub matched: usize,
    /// Timed classifier passes.
    pub passes: usize,
    /// Protocol classes of the classifier.
    pub protocol_classes: usize,
    /// Address intervals, IPv4 and IPv6, over all classes.
    pub intervals: usize,
    /// Distinct port maps.
    pub port_maps: usize,
    /// Packet generator seed.
    pub seed: u64,
    /// Up to five mismatching packets with both answers, for a bug report.
    pub mismatch_examples: Vec<Mismatch>,
}

/// A packet on which the classifier and the linear scan disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The packet.
    pub packet: Packet,
    /// The classifier's answer (rule index).
    pub classifier: Option<usize>,
    /// The linear scan's answer.
    pub linear: Option<usize>,
}

/// A finished run: the report, the packets and the classifier's answers
/// (for exporting them to another classifier).
#[derive(Debug, Clone)]
pub struct ClassifyRun {
    /// The numbers.
    pub report: ClassifyReport,
    /// The packets, in order.
    pub packets: Vec<Packet>,
    /// The classifier's answer for each packet.
    pub answers: Vec<Option<usize>>,
}

/// Runs the benchmark on `rules`; `progress` receives one line per phase
/// (the CLI prints them on stderr).
pub fn run(
    rules: &[ResolvedRule],
    opts: &ClassifyOptions,
    progress: &mut dyn FnMut(&str),
) -> ClassifyRun {
    progress(&format!(
        "generating {} packets from {} rules",
        opts.packets,
        rules.len()
    ));
    let packets = generate_packets(rules, opts.packets, opts.seed);

    progress("building the classifier");
    let t = Instant::now();
    let classifier = Classifier::build(rules);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let stats = classifier.stats();

    let passes = opts.passes.max(1);
    progress(&format!(
        "classifying, {passes} passes one by one and in batches"
    ));
    let mut single: Vec<Option<usize>> = vec![None; packets.len()];
    let mut answers: Vec<Option<usize>> = vec![None; packets.len()];
    let (mut best_single, mut best_batch) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..passes {
        let t = Instant::now();
        for (slot, p) in single.iter_mut().zip(&packets) {
            *slot = classifier.classify(black_box(p));
        }
        black_box(&single);
        best_single = best_single.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        classifier.classify_batch(black_box(&packets), &mut answers);
        black_box(&answers);
        best_batch = best_batch.min(t.elapsed().as_secs_f64());
    }
    let ns_per_lookup = per_packet_ns(best_batch, packets.len());
    let ns_per_lookup_single = per_packet_ns(best_single, packets.len());
    // The two entry points must agree everywhere.
    let batch_differs = single.iter().zip(&answers).filter(|(a, b)| a != b).count();

    let sample = verified_indices(rules.len(), packets.len(), opts.verify);
    let verified = sample.len();
    progress(&format!(
        "checking {verified} packets against the linear scan"
    ));
    let mut mismatches = batch_differs;
    let mut examples = Vec::new();
    let t = Instant::now();
    let mut last_report = Instant::now();
    for (k, &i) in sample.iter().enumerate() {
        let (Some(p), Some(&got)) = (packets.get(i), answers.get(i)) else {
            continue;
        };
        let want = first_match_index(rules, black_box(p));
        if want != got {
            mismatches += 1;
            if examples.len() < 5 {
                examples.push(Mismatch {
                    packet: *p,
                    classifier: got,
                    linear: want,
                });
            }
        }
        if last_report.elapsed().as_secs() >= 5 {
            last_report = Instant::now();
            progress(&format!("  linear scan: {k} of {verified} packets"));
        }
    }
    let linear_ns_per_lookup = per_packet_ns(t.elapsed().as_secs_f64(), verified);

    let report = ClassifyReport {
        rules: rules.len(),
        packets: packets.len(),
        mismatches,
        ns_per_lookup,
        ns_per_lookup_single,
        linear_ns_per_lookup,
        speedup: if ns_per_lookup > 0.0 {
            linear_ns_per_lookup / ns_per_lookup
        } else {
            0.0
        },
        build_ms,
        memory_bytes: stats.memory_bytes,
        verified,
        linear_sample: verified < packets.len(),
        matched: answers.iter().filter(|a| a.is_some()).count(),
        passes,
        protocol_classes: stats.protocol_classes,
        intervals: stats.v4_intervals + stats.v6_intervals,
        port_maps: stats.port_maps,
        seed: opts.seed,
        mismatch_examples: examples,
    };
    ClassifyRun {
        report,
        packets,
        answers,
    }
}

/// `n` packets generated from `rules` (see the module documentation),
/// the same for the same seed.
pub fn generate_packets(rules: &[ResolvedRule], n: usize, seed: u64) -> Vec<Packet> {
    let mut rng = SplitMix(seed);
    let has_v6 = rules
        .iter()
        .any(|r| r.peers().iter().any(|p| p.family() == Family::V6));
    (0..n)
        .map(|_| {
            let from_rule = rng.below(4) != 0;
            let rule = rules.get(rng.below(rules.len() as u64) as usize);
            match rule {
                Some(r) if from_rule && !r.peers().is_empty() && !r.services().is_empty() => {
                    packet_near(r, &mut rng)
                }
                _ => random_packet(has_v6, &mut rng),
            }
        })
        .collect()
}

/// The indices of the packets the linear scan checks.
fn verified_indices(rules: usize, packets: usize, verify: Verify) -> Vec<usize> {
    let want = match verify {
        Verify::All => packets,
        Verify::Sample(n) => n.min(packets),
        Verify::Auto => {
            let per_packet = rules.max(1) as u64;
            let fits = usize::try_from(AUTO_BUDGET / per_packet).unwrap_or(usize::MAX);
            fits.max(10_000).min(packets)
        }
    };
    if want == 0 {
        return Vec::new();
    }
    // Evenly spaced: packet k * packets / want for k < want.
    (0..want)
        .map(|k| ((k as u128 * packets as u128) / want as u128) as usize)
        .collect()
}

fn per_packet_ns(secs: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        secs * 1e9 / n as f64
    }
}

/// Common protocols, for `ALL` rules and random packets.
const PROTOCOLS: [u8; 8] = [6, 6, 17, 17, 1, 58, 47, 50];

/// A packet near rule `r`, which has peers and services (indices below
/// are `below(len)` of non-empty lists, so in bounds).
fn packet_near(r: &ResolvedRule, rng: &mut SplitMix) -> Packet {
    let peers = r.peers();
    let range = peers[rng.below(peers.len() as u64) as usize];
    let family = range.family();
    let n = point(range.lo(), range.hi(), family.max(), rng);
    let services = r.services();
    let s = &services[rng.below(services.len() as u64) as usize];
    let protocol = match s.protocol {
        ProtocolMatch::Number(p) => match rng.below(16) {
            0 => p.wrapping_add(1),
            1 => p.wrapping_sub(1),
            _ => p,
        },
        ProtocolMatch::All => pick_protocol(rng),
    };
    let port = if palisade_policy::has_ports(protocol) && !s.ports.is_empty() {
        let pr = s.ports[rng.below(s.ports.len() as u64) as usize];
        match rng.below(32) {
            0 => None,
            _ => Some(point(u128::from(pr.lo()), u128::from(pr.hi()), 65535, rng) as u16),
        }
    } else if rng.below(2) == 0 {
        None
    } else {
        Some(rng.next() as u16)
    };
    Packet {
        direction: palisade_model::Direction::Ingress,
        protocol,
        peer: palisade_model::addr::u128_to_ip(family, n),
        port,
    }
}

fn random_packet(has_v6: bool, rng: &mut SplitMix) -> Packet {
    let protocol = pick_protocol(rng);
    let family = if has_v6 && rng.below(4) == 0 {
        Family::V6
    } else {
        Family::V4
    };
    let n = (u128::from(rng.next()) << 64 | u128::from(rng.next())) & family.max();
    let port = match rng.below(64) {
        0 => None,
        _ => Some(rng.next() as u16),
    };
    Packet {
        direction: palisade_model::Direction::Ingress,
        protocol,
        peer: palisade_model::addr::u128_to_ip(family, n),
        port,
    }
}

fn pick_protocol(rng: &mut SplitMix) -> u8 {
    match rng.below(10) {
        0 => rng.next() as u8,
        k => PROTOCOLS[(k as usize) % PROTOCOLS.len()],
    }
}

/// A point of `lo..=hi`: an end, inside, or just outside (within `0..=max`).
fn point(lo: u128, hi: u128, max: u128, rng: &mut SplitMix) -> u128 {
    match rng.below(6) {
        0 => lo,
        1 => hi,
        2 => lo.checked_sub(1).unwrap_or(lo),
        3 => {
            if hi < max {
                hi + 1
            } else {
                hi
            }
        }
        _ => {
            let span = hi - lo;
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            lo + if span == u128::MAX { r } else { r % (span + 1) }
        }
    }
}

/// SplitMix64: small, fast, and the same sequence everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classbench;

    const SAMPLE: &str = include_str!("../tests/data/sample.classbench");

    #[test]
    fn a_tiny_run_on_the_sample_has_no_mismatches() {
        let rules = classbench::project(&classbench::parse(SAMPLE).unwrap());
        let opts = ClassifyOptions {
            packets: 10_000,
            passes: 1,
            ..ClassifyOptions::default()
        };
        let mut lines = Vec::new();
        let run = run(&rules, &opts, &mut |l| lines.push(l.to_string()));
        let r = &run.report;
        assert_eq!(r.rules, 39);
        assert_eq!(r.packets, 10_000);
        assert_eq!(r.verified, 10_000);
        assert!(!r.linear_sample);
        assert_eq!(r.mismatches, 0, "{:?}", r.mismatch_examples);
        assert!(r.matched > 1000 && r.matched <= 10_000, "{}", r.matched);
        assert!(r.memory_bytes > 0);
        assert_eq!(run.answers.len(), 10_000);
        assert!(!lines.is_empty());
        let json = serde_json::to_value(r).unwrap();
        for key in [
            "rules",
            "packets",
            "mismatches",
            "ns_per_lookup",
            "linear_ns_per_lookup",
            "build_ms",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn packets_are_deterministic_and_hit_rules() {
        let rules = classbench::project(&classbench::parse(SAMPLE).unwrap());
        let a = generate_packets(&rules, 500, 7);
        assert_eq!(a, generate_packets(&rules, 500, 7));
        assert_ne!(a, generate_packets(&rules, 500, 8));
        assert!(generate_packets(&[], 10, 1).len() == 10);
    }

    #[test]
    fn samples_are_spread_and_bounded() {
        assert_eq!(verified_indices(10, 5, Verify::All), vec![0, 1, 2, 3, 4]);
        assert_eq!(verified_indices(10, 10, Verify::Sample(2)), vec![0, 5]);
        assert_eq!(verified_indices(10, 0, Verify::Auto), Vec::<usize>::new());
        let big = verified_indices(4_000_000, 1_000_000, Verify::Auto);
        assert_eq!(big.len(), 10_000);
        assert_eq!(
            verified_indices(10_000, 1_000_000, Verify::Auto).len(),
            400_000
        );
    }

    /// The six sets of `../shared/data/classbench`, when present (CI's
    /// checkout has them beside the repository), at a small size.
    #[test]
    fn the_shared_classbench_sets_have_no_mismatches() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/classbench");
        if !dir.is_dir() {
            println!("skipped: {} is absent", dir.display());
            return;
        }
        for (name, count) in [
            ("acl1_1k", 942),
            ("fw1_1k", 857),
            ("ipc1_1k", 974),
            ("acl1_10k", 9774),
            ("fw1_10k", 9379),
            ("ipc1_10k", 9518),
        ] {
            let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
                println!("skipped {name}: unreadable");
                continue;
            };
            let rules = classbench::project(&classbench::parse(&text).unwrap());
            assert_eq!(rules.len(), count, "{name}");
            let opts = ClassifyOptions {
                packets: 3_000,
                passes: 1,
                verify: Verify::All,
                seed: 3,
            };
            let run = run(&rules, &opts, &mut |_| {});
            assert_eq!(
                run.report.mismatches, 0,
                "{name}: {:?}",
                run.report.mismatch_examples
            );
        }
    }
}
