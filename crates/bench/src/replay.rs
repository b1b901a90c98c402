//! `palisade bench replay` (issue 20): the three numbers of change impact
//! and least-privilege proposals, measured side by side in one run.
//!
//! 1. **Replay rate.** One instance bound to 5 groups of 200 rules (1,000
//!    rules: protocols TCP, UDP, ICMP and ALL; single ports, port lists and
//!    ranges; peers from single addresses to /12 blocks inside 10.0.0.0/8;
//!    a quarter DROP). The proposed fleet drops every tenth rule of the
//!    third group. `rate_records` records (three in four from a random
//!    rule's peer range and ports, one in four random) are replayed
//!    through [`Replayer::replay`] (both sides classified with
//!    `policy::Classifier`, verdicts compared, changes tallied), fastest of
//!    `passes` (compiling both sides, `replay_build_secs`, is timed apart).
//!    The baseline is the same replay with the linear first-match
//!    scan (`policy::eval::first_match_index`) on both sides, over an
//!    evenly spaced sample of `linear_sample` records; on those records the
//!    two must agree on every verdict (`mismatches`).
//! 2. **Suggest.** `suggest_records` accepted records of one instance
//!    (peers from 20,000 addresses in four /16 blocks and the 40 members
//!    of a group, 300 ports), through [`Suggester`]: wall time from the
//!    first record to the checked proposal.
//! 3. **Plan with flows.** A fleet of `groups` groups (10 rules each, a
//!    tenth of them group references) and `2 x groups` instances bound to
//!    1-3 groups; the desired file changes 10 groups (their first rule
//!    removed). `palisade_iac::plan` computes the plan offline (as `palisade
//!    plan` does after reading the server), then `plan_records` records in
//!    a JSON Lines file written beforehand are read, parsed, checked and
//!    replayed ([`read_records`] and [`Replayer`], as `plan --flows FILE`
//!    does). Timed from the plan to the report; peak RSS (`VmHWM`, reset
//!    through `/proc/self/clear_refs` before the step) says the memory is
//!    bounded by the fleet and the changes, not the records.

use anyhow::Context;
use palisade_analyze::replay::{read_records, Replayer};
use palisade_analyze::suggest::{Scope, SuggestOptions, Suggester};
use palisade_model::fleet::{GroupEntry, InstanceEntry};
use palisade_model::flow::{FlowRecord, RuleRef, Verdict};
use palisade_model::locate::LineIndex;
use palisade_model::{wire, Direction, Fleet, FleetFile, InstanceId, Limits};
use palisade_policy::eval::first_match_index;
use palisade_policy::{resolve_instance, Packet};
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Records of the rate measurement (held in memory).
    pub rate_records: usize,
    /// Timed passes over them; the fastest counts.
    pub passes: usize,
    /// Records the linear baseline replays (evenly spaced).
    pub linear_sample: usize,
    /// Records of the suggestion.
    pub suggest_records: usize,
    /// Groups of the plan's fleet.
    pub groups: usize,
    /// Records of the plan (streamed from a file).
    pub plan_records: u64,
    /// Seed of the generators.
    pub seed: u64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rate_records: 1_000_000,
            passes: 5,
            linear_sample: 20_000,
            suggest_records: 1_000_000,
            groups: 1_000,
            plan_records: 10_000_000,
            seed: 1,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayBenchReport {
    /// Rules of the replayed instance's list (ingress).
    pub rules: usize,
    /// Records of the rate measurement.
    pub rate_records: usize,
    /// Compiling both sides of the 1,000-rule instance (classifiers and
    /// the set of flipping packets), seconds.
    pub replay_build_secs: f64,
    /// Replay, ns per record (fastest pass).
    pub replay_ns_per_record: f64,
    /// Replay, records per second on one core.
    pub replay_records_per_sec: f64,
    /// Linear baseline, ns per record.
    pub linear_ns_per_record: f64,
    /// Records the baseline replayed.
    pub linear_records: usize,
    /// `linear_ns_per_record / replay_ns_per_record`.
    pub speedup: f64,
    /// Sampled records on which replay and the linear scan disagree.
    pub mismatches: usize,
    /// Records of the rate set whose verdict the change flips.
    pub changed_records: u64,
    /// Records of the suggestion.
    pub suggest_records: usize,
    /// Suggestion wall time, seconds.
    pub suggest_secs: f64,
    /// Rules suggested.
    pub suggest_rules: usize,
    /// Whether they accept every observed flow.
    pub suggest_every_flow_accepted: bool,
    /// Groups of the plan's fleet.
    pub plan_groups: usize,
    /// Instances of the plan's fleet.
    pub plan_instances: usize,
    /// Records of the plan.
    pub plan_records: u64,
    /// Size of the records file, bytes.
    pub plan_file_bytes: u64,
    /// `palisade_iac::plan` (offline), seconds.
    pub plan_secs: f64,
    /// Compiling both sides, seconds.
    pub plan_compile_secs: f64,
    /// Reading, parsing, checking and replaying the records, seconds.
    pub plan_replay_secs: f64,
    /// All three, seconds.
    pub plan_total_secs: f64,
    /// Records per second of the reading and replaying.
    pub plan_records_per_sec: f64,
    /// Peak resident memory during the step, MiB.
    pub plan_peak_rss_mib: f64,
    /// Newly dropped records found.
    pub plan_newly_dropped_records: u64,
}

/// Runs the benchmark; `log` sees progress lines.
pub fn run(opts: &ReplayOptions, log: &mut dyn FnMut(&str)) -> anyhow::Result<ReplayBenchReport> {
    let mut rng = Rng(opts.seed | 1);
    // 3 first, while the process is small, so its peak RSS is its own.
    log("plan: generating the fleet and the records file");
    let plan = plan_step(opts, &mut rng, log)?;
    log("replay rate: 1,000 rules");
    let rate = rate_step(opts, &mut rng)?;
    log("suggest");
    let (suggest_secs, suggest_rules, covered) = suggest_step(opts, &mut rng)?;
    Ok(ReplayBenchReport {
        suggest_records: opts.suggest_records,
        suggest_secs,
        suggest_rules,
        suggest_every_flow_accepted: covered,
        ..merge(rate, plan)
    })
}

fn merge(rate: ReplayBenchReport, plan: ReplayBenchReport) -> ReplayBenchReport {
    ReplayBenchReport {
        plan_groups: plan.plan_groups,
        plan_instances: plan.plan_instances,
        plan_records: plan.plan_records,
        plan_file_bytes: plan.plan_file_bytes,
        plan_secs: plan.plan_secs,
        plan_compile_secs: plan.plan_compile_secs,
        plan_replay_secs: plan.plan_replay_secs,
        plan_total_secs: plan.plan_total_secs,
        plan_records_per_sec: plan.plan_records_per_sec,
        plan_peak_rss_mib: plan.plan_peak_rss_mib,
        plan_newly_dropped_records: plan.plan_newly_dropped_records,
        ..rate
    }
}

/// A small xorshift generator: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A rule as the wire writes it.
fn rule(protocol: &str, port: &str, peer: Peer, action: &str) -> wire::SecurityGroupPolicy {
    let mut w = wire::SecurityGroupPolicy {
        protocol: Some(protocol.to_string()),
        port: Some(port.to_string()),
        action: Some(action.to_string()),
        ..Default::default()
    };
    match peer {
        Peer::Cidr(c) => w.cidr_block = Some(c),
        Peer::Group(g) => w.security_group_id = Some(g),
    }
    w
}

enum Peer {
    Cidr(String),
    Group(String),
}

/// A random rule inside 10.0.0.0/8 (see the module documentation).
fn random_rule(rng: &mut Rng) -> wire::SecurityGroupPolicy {
    let (protocol, port) = match rng.below(8) {
        0 => ("ALL", "ALL".to_string()),
        1 => ("ICMP", "ALL".to_string()),
        2 | 3 => ("UDP", format!("{}", 1 + rng.below(2000))),
        _ => {
            let p = 1 + rng.below(2000);
            let port = match rng.below(4) {
                0 => format!("{p}"),
                1 => format!("{p},{}", p + 1000),
                2 => format!("{p}-{}", p + rng.below(200)),
                _ => "ALL".to_string(),
            };
            ("TCP", port)
        }
    };
    let bits = [32, 32, 28, 24, 24, 20, 16, 12][rng.below(8) as usize];
    let addr = 0x0a00_0000u32 | (rng.next() as u32 & 0x00ff_ffff);
    let mask = if bits == 32 {
        u32::MAX
    } else {
        !(u32::MAX >> bits)
    };
    let cidr = format!("{}/{bits}", Ipv4Addr::from(addr & mask));
    let action = if rng.below(4) == 0 { "DROP" } else { "ACCEPT" };
    rule(protocol, &port, Peer::Cidr(cidr), action)
}

fn group(id: String, rules: Vec<wire::SecurityGroupPolicy>) -> GroupEntry {
    GroupEntry {
        id: id.clone(),
        name: id,
        description: String::new(),
        policies: wire::SecurityGroupPolicySet {
            ingress: Some(rules),
            egress: Some(vec![rule(
                "ALL",
                "ALL",
                Peer::Cidr("0.0.0.0/0".into()),
                "ACCEPT",
            )]),
            ..Default::default()
        },
    }
}

fn limits() -> Limits {
    Limits {
        rules_per_direction: 10_000,
        groups_per_instance: 10,
        instances_per_group: 1_000_000,
        references_per_group: 10_000,
        groups_per_project: 1_000_000,
    }
}

fn fleet(file: &FleetFile) -> anyhow::Result<Fleet> {
    Fleet::from_file(file, LineIndex::default()).map_err(|p| {
        anyhow::anyhow!(
            "generated fleet does not validate: {}",
            p.first().map(|x| x.to_string()).unwrap_or_default()
        )
    })
}

/// A record of `instance` from `peer` to `port` (ingress, accepted by `rule`).
fn record(
    instance: &InstanceId,
    rule: &RuleRef,
    protocol: u8,
    peer: IpAddr,
    port: u16,
    t: u64,
) -> FlowRecord {
    let ported = matches!(protocol, 6 | 17);
    FlowRecord {
        instance_id: instance.clone(),
        direction: Direction::Ingress,
        src_addr: peer,
        dst_addr: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
        src_port: ported.then_some(40_000),
        dst_port: ported.then_some(port),
        protocol,
        action: Verdict::Accept,
        rule: Some(rule.clone()),
        decisions: 1,
        packets: None,
        bytes: None,
        start: t,
        end: t + 30,
    }
}

fn rule_ref() -> anyhow::Result<RuleRef> {
    Ok(RuleRef {
        security_group_id: "sg-b0000000".parse()?,
        policy_index: 0,
        revision: 1,
    })
}

/// A record that hits a random rule of `rules` (or, one in four, random).
fn record_for(
    rng: &mut Rng,
    instance: &InstanceId,
    by: &RuleRef,
    rules: &[wire::SecurityGroupPolicy],
) -> FlowRecord {
    let t = 1_790_000_000 + rng.below(7 * 86_400);
    let pick = rules.get(rng.below(rules.len() as u64) as usize);
    if rng.below(4) == 0 || pick.is_none() {
        let proto = [6u8, 6, 17, 1][rng.below(4) as usize];
        let peer = IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000u32 | rng.next() as u32 & 0x00ff_ffff,
        ));
        return record(instance, by, proto, peer, 1 + rng.below(3000) as u16, t);
    }
    let Some(r) = pick else {
        return record(
            instance,
            by,
            6,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            80,
            t,
        );
    };
    let proto = match r.protocol.as_deref() {
        Some("UDP") => 17,
        Some("ICMP") => 1,
        Some("ALL") => [6u8, 17, 1][rng.below(3) as usize],
        _ => 6,
    };
    let cidr = r.cidr_block.as_deref().unwrap_or("10.0.0.0/8");
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let net: u32 = net.parse::<Ipv4Addr>().map_or(0x0a00_0000, u32::from);
    let bits: u32 = bits.parse().unwrap_or(32);
    let span = if bits >= 32 { 0 } else { u32::MAX >> bits };
    let peer = IpAddr::V4(Ipv4Addr::from(net | (rng.next() as u32 & span)));
    let port = r
        .port
        .as_deref()
        .and_then(|p| p.split([',', '-']).next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(1 + rng.below(3000) as u16);
    record(instance, by, proto, peer, port, t)
}

fn rate_step(opts: &ReplayOptions, rng: &mut Rng) -> anyhow::Result<ReplayBenchReport> {
    let instance = "ins-b0000001";
    let groups: Vec<GroupEntry> = (0..5)
        .map(|g| {
            group(
                format!("sg-b000000{g}"),
                (0..200).map(|_| random_rule(rng)).collect(),
            )
        })
        .collect();
    let all_rules: Vec<wire::SecurityGroupPolicy> = groups
        .iter()
        .flat_map(|g| g.policies.ingress.clone().unwrap_or_default())
        .collect();
    let before_file = FleetFile {
        security_groups: groups.clone(),
        instances: vec![InstanceEntry {
            id: instance.into(),
            name: instance.into(),
            private_ips: vec!["10.255.0.1".into()],
            security_groups: groups.iter().map(|g| g.id.clone()).collect(),
        }],
        limits: Some(limits()),
        ..Default::default()
    };
    let mut after_file = before_file.clone();
    if let Some(list) = after_file
        .security_groups
        .get_mut(2)
        .and_then(|g| g.policies.ingress.as_mut())
    {
        let kept: Vec<_> = list
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 != 0)
            .map(|(_, r)| r.clone())
            .collect();
        *list = kept;
    }
    let (before, after) = (fleet(&before_file)?, fleet(&after_file)?);
    let (id, by): (InstanceId, RuleRef) = (instance.parse()?, rule_ref()?);
    let records: Vec<FlowRecord> = (0..opts.rate_records)
        .map(|_| record_for(rng, &id, &by, &all_rules))
        .collect();
    let mut best = f64::INFINITY;
    let mut changed = 0;
    let t = Instant::now();
    let built = Replayer::new(&before, &after)?;
    let build_secs = t.elapsed().as_secs_f64();
    drop(built);
    for _ in 0..opts.passes.max(1) {
        let mut rp = Replayer::new(&before, &after)?;
        let t = Instant::now();
        for r in &records {
            rp.replay(r);
        }
        let secs = t.elapsed().as_secs_f64();
        best = best.min(secs);
        let report = rp.report();
        changed = report.newly_dropped_records + report.newly_allowed_records;
    }
    let replay_ns = best * 1e9 / records.len().max(1) as f64;
    // The baseline: the same replay, first match by linear scan.
    let rb = resolve_instance(&before, &instance.parse()?)?;
    let ra = resolve_instance(&after, &instance.parse()?)?;
    let rules = rb.ingress.len();
    let step = (records.len() / opts.linear_sample.max(1)).max(1);
    let sample: Vec<&FlowRecord> = records.iter().step_by(step).collect();
    let rp = Replayer::new(&before, &after)?;
    let mut linear_changed = 0u64;
    let t = Instant::now();
    for r in &sample {
        let p = Packet {
            direction: r.direction,
            protocol: r.protocol,
            peer: r.peer(),
            port: r.service_port(),
        };
        let accepts = |rs: &palisade_policy::Ruleset| {
            first_match_index(rs.rules(p.direction), &p)
                .and_then(|i| rs.rules(p.direction).get(i))
                .is_some_and(|x| x.action() == palisade_model::Action::Accept)
        };
        linear_changed += u64::from(std::hint::black_box(accepts(&rb) != accepts(&ra)));
    }
    let linear_ns = t.elapsed().as_secs_f64() * 1e9 / sample.len().max(1) as f64;
    std::hint::black_box(linear_changed);
    let mut mismatches = 0;
    for r in &sample {
        let p = Packet {
            direction: r.direction,
            protocol: r.protocol,
            peer: r.peer(),
            port: r.service_port(),
        };
        let (vb, va) = rp.verdicts(r).context("instance")?;
        let linear = |rs: &palisade_policy::Ruleset| {
            first_match_index(rs.rules(p.direction), &p)
                .and_then(|i| rs.rules(p.direction).get(i))
                .map(|x| x.origin().clone())
        };
        if vb.matched != linear(&rb) || va.matched != linear(&ra) {
            mismatches += 1;
        }
    }
    Ok(ReplayBenchReport {
        rules,
        replay_build_secs: build_secs,
        rate_records: records.len(),
        replay_ns_per_record: replay_ns,
        replay_records_per_sec: 1e9 / replay_ns,
        linear_ns_per_record: linear_ns,
        linear_records: sample.len(),
        speedup: linear_ns / replay_ns,
        mismatches,
        changed_records: changed,
        suggest_records: 0,
        suggest_secs: 0.0,
        suggest_rules: 0,
        suggest_every_flow_accepted: false,
        plan_groups: 0,
        plan_instances: 0,
        plan_records: 0,
        plan_file_bytes: 0,
        plan_secs: 0.0,
        plan_compile_secs: 0.0,
        plan_replay_secs: 0.0,
        plan_total_secs: 0.0,
        plan_records_per_sec: 0.0,
        plan_peak_rss_mib: 0.0,
        plan_newly_dropped_records: 0,
    })
}

fn suggest_step(opts: &ReplayOptions, rng: &mut Rng) -> anyhow::Result<(f64, usize, bool)> {
    let instance = "ins-b0000002";
    let mut file = FleetFile {
        security_groups: vec![
            group(
                "sg-b0000010".into(),
                vec![rule("ALL", "ALL", Peer::Cidr("0.0.0.0/0".into()), "ACCEPT")],
            ),
            group("sg-b0000011".into(), vec![]),
        ],
        instances: vec![InstanceEntry {
            id: instance.into(),
            name: instance.into(),
            private_ips: vec!["10.255.0.2".into()],
            security_groups: vec!["sg-b0000010".into()],
        }],
        limits: Some(limits()),
        ..Default::default()
    };
    let members: Vec<IpAddr> = (0..40)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 200, 0, 10 + i)))
        .collect();
    for (i, ip) in members.iter().enumerate() {
        file.instances.push(InstanceEntry {
            id: format!("ins-m{i:07}"),
            name: String::new(),
            private_ips: vec![ip.to_string()],
            security_groups: vec!["sg-b0000011".into()],
        });
    }
    let fleet = fleet(&file)?;
    let peers: Vec<IpAddr> = (0..20_000u32)
        .map(|i| {
            let block = [0x0a01_0000u32, 0x0a05_0000, 0x0a09_0000, 0xc612_0000][(i % 4) as usize];
            IpAddr::V4(Ipv4Addr::from(block | (rng.next() as u32 & 0xffff)))
        })
        .chain(members.iter().copied())
        .collect();
    let ports: Vec<u16> = (0..300).map(|_| 1 + rng.below(40_000) as u16).collect();
    let (id, by): (InstanceId, RuleRef) = (instance.parse()?, rule_ref()?);
    let records: Vec<FlowRecord> = (0..opts.suggest_records)
        .map(|_| {
            let peer = peers[rng.below(peers.len() as u64) as usize];
            let port = ports[rng.below(ports.len() as u64) as usize];
            let proto = if rng.below(10) == 0 { 17 } else { 6 };
            record(
                &id,
                &by,
                proto,
                peer,
                port,
                1_790_000_000 + rng.below(86_400),
            )
        })
        .collect();
    let t = Instant::now();
    let mut s = Suggester::new(
        &fleet,
        Scope::Instance(instance.parse()?),
        SuggestOptions::default(),
    )?;
    for r in &records {
        s.add(r);
    }
    let sug = s.finish()?;
    let secs = t.elapsed().as_secs_f64();
    let rules = sug.directions.iter().map(|d| d.rules.len()).sum();
    Ok((secs, rules, sug.every_flow_accepted))
}

fn plan_step(
    opts: &ReplayOptions,
    rng: &mut Rng,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<ReplayBenchReport> {
    let n = opts.groups.max(1);
    let instances = 2 * n;
    let inst_ip = |i: usize| format!("10.{}.{}.{}", 128 + (i >> 16 & 63), i >> 8 & 255, i & 255);
    let groups: Vec<GroupEntry> = (0..n)
        .map(|g| {
            let rules = (0..10)
                .map(|k| {
                    if k == 9 {
                        rule(
                            "TCP",
                            "8080",
                            Peer::Group(format!("sg-p{:07}", (g + 1) % n)),
                            "ACCEPT",
                        )
                    } else {
                        random_rule(rng)
                    }
                })
                .collect();
            group(format!("sg-p{g:07}"), rules)
        })
        .collect();
    let mut bindings: Vec<Vec<usize>> = Vec::with_capacity(instances);
    let remote = FleetFile {
        security_groups: groups.clone(),
        instances: (0..instances)
            .map(|i| {
                let k = 1 + rng.below(3) as usize;
                let mut gs: Vec<usize> = (0..k).map(|_| rng.below(n as u64) as usize).collect();
                gs.sort_unstable();
                gs.dedup();
                bindings.push(gs.clone());
                InstanceEntry {
                    id: format!("ins-p{i:07}"),
                    name: String::new(),
                    private_ips: vec![inst_ip(i)],
                    security_groups: gs.iter().map(|g| format!("sg-p{g:07}")).collect(),
                }
            })
            .collect(),
        limits: Some(limits()),
        ..Default::default()
    };
    let mut desired = remote.clone();
    for g in desired
        .security_groups
        .iter_mut()
        .step_by((n / 10).max(1))
        .take(10)
    {
        if let Some(list) = g.policies.ingress.as_mut() {
            if !list.is_empty() {
                list.remove(0);
            }
        }
    }
    // The records file, written before the clock starts.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("flows.jsonl");
    let by = rule_ref()?;
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        for k in 0..opts.plan_records {
            let i = rng.below(instances as u64) as usize;
            let gs = bindings.get(i).cloned().unwrap_or_default();
            let g = gs
                .get(rng.below(gs.len() as u64) as usize)
                .copied()
                .unwrap_or(0);
            let rules = groups
                .get(g)
                .and_then(|x| x.policies.ingress.clone())
                .unwrap_or_default();
            let cidr_rules: Vec<_> = rules
                .into_iter()
                .filter(|r| r.cidr_block.is_some())
                .collect();
            let id: InstanceId = format!("ins-p{i:07}").parse()?;
            let r = record_for(rng, &id, &by, &cidr_rules);
            serde_json::to_writer(&mut out, &r)?;
            out.write_all(b"\n")?;
            if k > 0 && k % 2_000_000 == 0 {
                log(&format!("  {k} records written"));
            }
        }
        out.flush()?;
    }
    let file_bytes = std::fs::metadata(&path)?.len();
    log("plan: timing");
    reset_peak_rss();
    let t = Instant::now();
    let plan = palisade_iac::plan(&desired, &remote, false)?;
    let plan_secs = t.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut rp = Replayer::new(&plan.before, &plan.after)?;
    let compile_secs = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    read_records(input, |r, _| {
        rp.replay(&r);
        Ok(())
    })?;
    let report = rp.report();
    let replay_secs = t2.elapsed().as_secs_f64();
    let total = t.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    Ok(ReplayBenchReport {
        rules: 0,
        replay_build_secs: 0.0,
        rate_records: 0,
        replay_ns_per_record: 0.0,
        replay_records_per_sec: 0.0,
        linear_ns_per_record: 0.0,
        linear_records: 0,
        speedup: 0.0,
        mismatches: 0,
        changed_records: 0,
        suggest_records: 0,
        suggest_secs: 0.0,
        suggest_rules: 0,
        suggest_every_flow_accepted: false,
        plan_groups: n,
        plan_instances: instances,
        plan_records: report.records,
        plan_file_bytes: file_bytes,
        plan_secs,
        plan_compile_secs: compile_secs,
        plan_replay_secs: replay_secs,
        plan_total_secs: total,
        plan_records_per_sec: report.records as f64 / replay_secs,
        plan_peak_rss_mib: rss,
        plan_newly_dropped_records: report.newly_dropped_records,
    })
}

/// Resets the kernel's peak-RSS mark of this process (Linux 4.0+); a
/// failure leaves the peak since start, which only overstates it.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, MiB (0 when unreadable).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;

    #[test]
    fn a_tiny_run_agrees_with_the_linear_scan_and_covers_every_flow() {
        let opts = ReplayOptions {
            rate_records: 5_000,
            passes: 1,
            linear_sample: 1_000,
            suggest_records: 5_000,
            groups: 20,
            plan_records: 5_000,
            seed: 7,
        };
        let r = run(&opts, &mut |_| {}).unwrap();
        assert_eq!(r.mismatches, 0, "{r:?}");
        assert_eq!(r.rules, 1000);
        assert!(r.changed_records > 0, "{r:?}");
        assert!(r.suggest_every_flow_accepted, "{r:?}");
        assert_eq!(r.plan_records, 5_000);
        assert!(r.plan_newly_dropped_records > 0, "{r:?}");
    }
}
