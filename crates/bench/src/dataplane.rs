//! `palisade bench dataplane` (issue 6, items 1, 2 and 4; DESIGN.md section
//! 3): what the kernel ruleset costs a new flow, and how long loading and
//! changing it takes, for the same rules compiled both ways (linear chains,
//! the reference; verdict maps, `--maps`).
//!
//! The lab: one client namespace and five node namespaces, each node joined
//! to the client by its own veth (`eth0` on the node side, the uplink): node
//! 0 has no firewall, node 1 the linear program, node 2 the maps program,
//! node 3 a table holding only the probes' accept rule (what a stateful
//! table costs before any rule list: conntrack, the baseline rules), node 4
//! the maps program with flow records on (every decision logged to NFLOG
//! under the rate limit, `--flow-log-rate`, and read by a thread as the
//! agent reads it), so recording's cost is maps' own minus node 2's.
//! Every name starts with `pbd` + the process id; a [`Lab`] guard deletes
//! the namespaces on drop (also after an error, and after Ctrl-C, which
//! only sets a flag the loops check). Addresses: 198.18.0.0/15 on the
//! wire, documentation ranges and 10.0.0.0/8 as rule peers only; nothing
//! routes out.
//!
//! New flows: a thread moved into the client namespace sends UDP probes
//! through a raw socket (`IPPROTO_RAW`, the header written here), each from
//! a new source address and port (198.18.128.0/17 x 60,000 ports), so every
//! probe is a new conntrack entry and a new trip through the rules. The
//! probes match only the last rule of the list (ACCEPT UDP 5353 from
//! 198.18.0.0/15), the worst case of a linear chain. A veth hands the packet
//! to the node's receive path in the sender's own softirq, so the sender's
//! time per probe is the whole path (send, conntrack, the ruleset, routing,
//! UDP delivery to a socket whose buffer is full); the difference to node 0
//! is what the firewall adds. Rounds alternate the nodes (the fastest
//! round of each counts) and the node's `Ip InReceives` confirms the probes
//! arrived. Conntrack is flushed in every node before each node's round,
//! and in the probed node after every [`PROBES_PER_FLUSH`] probes (the
//! flush untimed): the kernel keeps every namespace's entries in one hash
//! table, so without this a probe's conntrack lookups would walk chains
//! that grow with the probes sent so far, to this node and to the others,
//! and the cost of a stateful table would depend on how fast the machine
//! sends. So a probe meets at most that many entries.
//!
//! `--batch B` sends B probes per `sendmmsg` call. With 1 (the default)
//! each probe's receive path runs in a system call of its own, so code
//! that needs the FPU (nft's AVX2 interval map lookup) saves and restores
//! the sender's FPU state once per probe; with 64 that happens once per 64,
//! closer to a NIC's NAPI poll handing the stack many packets per softirq.
//!
//! Apply times: the first load of each program (no table), a replace of the
//! loaded table with itself, and one membership change (an address joining
//! the referenced group, then leaving again), each the agent's
//! `apply_deltas` (which also puts the new generations in force): an
//! element add or delete of the group's set in linear mode, adds and
//! deletes of verdict map elements in maps mode, through the agent's
//! long-lived `nft -i` session (started before the timing, as an agent
//! starts it once). Each `nft` run
//! and each compile is bounded (`--max-load-secs`); what does not finish is
//! reported as skipped, not waited for.

use crate::interrupt::{check_interrupt, interrupted};
use anyhow::{bail, Context};
use palisade_agent::compile::{
    compile, CompileOptions, Compiled, FlowLogOptions, Mode, FLOW_LOG_SUPPRESSED,
};
use palisade_agent::dataplane::Dataplane;
use palisade_agent::flowlog::{Aggregator, Event, FlowLog};
use palisade_agent::NftDataplane;
use palisade_model::{Action, AddrRange, Cidr, Direction, Family, Peer, PortRange};
use palisade_policy::Ruleset;
use palisade_policy::{ProtocolMatch, ResolvedRule, RuleOrigin, ServiceMatch};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What to measure: the options of `palisade bench dataplane`.
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    /// Rules in the ingress list (groups of 100).
    pub rules: usize,
    /// Addresses of the group the first rule references.
    pub addresses: usize,
    /// Seconds of probes per round and node.
    pub seconds: f64,
    /// Rounds (each round probes every node once; the fastest counts).
    pub rounds: usize,
    /// Probes per send call (`sendmmsg`), 1 to 1024.
    pub batch: u16,
    /// Longest a compile or one `nft` load may take before it is given up, s.
    pub max_load_secs: u64,
    /// Node 4's logged decisions per second (the agent's
    /// `--flow-log-rate`; above it decisions are only counted).
    pub flow_log_rate: u32,
}

/// What one run measured (the JSON of `--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneReport {
    /// Rules in the list.
    pub rules: usize,
    /// Addresses in the referenced group.
    pub addresses: usize,
    /// Probe rounds.
    pub rounds: usize,
    /// Seconds per round and node.
    pub seconds: f64,
    /// Probes between conntrack flushes: the most entries a probe meets.
    pub probes_per_flush: u64,
    /// Probes per send call.
    pub batch: u16,
    /// No firewall: the baseline.
    pub none: FlowResult,
    /// The table with one rule (the probes' accept rule) in linear mode:
    /// the cost of a stateful table (conntrack, baseline rules) alone.
    pub one_rule: FlowResult,
    /// Linear chains.
    pub linear: ModeResult,
    /// Verdict maps.
    pub maps: ModeResult,
    /// Linear ns added per flow / maps ns added per flow.
    pub linear_over_maps: Option<f64>,
    /// The maps program with flow records on (node 4).
    pub maps_recording: FlowResult,
    /// Its rate limit, decisions logged per second.
    pub flow_log_rate: u32,
    /// Decisions the reader got from NFLOG during the rounds.
    pub recording_logged: u64,
    /// Decisions over the rate limit (the table's suppressed counter).
    pub recording_suppressed: u64,
    /// What recording adds per new flow over maps without it, ns.
    pub recording_ns_added: Option<f64>,
}

/// New-flow measurements of one node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowResult {
    /// New flows (probes) per second, fastest round.
    pub flows_per_sec: f64,
    /// Nanoseconds per probe, fastest round.
    pub ns_per_flow: f64,
    /// Nanoseconds per probe of every round.
    pub ns_per_flow_rounds: Vec<f64>,
    /// Probes sent in all rounds.
    pub sent: u64,
    /// Of those, how many the node's IP layer received (`Ip InReceives`).
    pub received: u64,
}

/// One compiler mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModeResult {
    /// Why the mode was not (fully) measured, if it was not.
    pub skipped: Option<String>,
    /// Set elements (linear) or verdict-map elements (maps).
    pub elements: usize,
    /// Compile time of the whole list, ms.
    pub compile_ms: f64,
    /// First load (no table), ms.
    pub apply_ms: Option<f64>,
    /// Replacing the loaded table by the same program, ms.
    pub replace_ms: Option<f64>,
    /// One address joining the referenced group: compile and delta
    /// (userspace), ms.
    pub change_compile_ms: Option<f64>,
    /// ... and the kernel update, ms.
    pub change_apply_ms: Option<f64>,
    /// How the change was loaded (`element add` to a set, `map element
    /// delta`, or `table replace` when no delta applies).
    pub change_kind: String,
    /// The same address leaving again: the kernel update, ms (an element
    /// delete; in maps mode, deletes and adds of map elements).
    pub leave_apply_ms: Option<f64>,
    /// Reading the table back with `nft -j list table` (what the agent
    /// does once after each load, for the table's fingerprint), ms.
    pub read_ms: Option<f64>,
    /// Asking nf_tables for its ruleset generation over netlink (what the
    /// agent does each idle step instead of a read), ms.
    pub generation_ms: Option<f64>,
    /// Dumping the rule counters over netlink (each status report), ms.
    pub counters_ms: Option<f64>,
    /// New flows through this node.
    pub flows: FlowResult,
    /// Nanoseconds added per new flow over no firewall.
    pub ns_added_per_flow: Option<f64>,
    /// Nanoseconds added per new flow over the one-rule table.
    pub ns_added_over_one_rule: Option<f64>,
}

/// Why the benchmark cannot run here (not root, no `nft`/`ip`), if it cannot.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("root (network namespaces and nftables)".into());
    }
    for tool in ["nft", "ip", "conntrack"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Some(format!("the `{tool}` command"));
        }
    }
    None
}

/// The benchmark; `log` sees progress lines.
pub fn run(args: &DataplaneOptions, log: &mut dyn FnMut(&str)) -> anyhow::Result<DataplaneReport> {
    if args.rules < 2 {
        bail!("--rules must be at least 2");
    }
    let limit = Duration::from_secs(args.max_load_secs.max(1));
    let snap = snapshot(args.rules, args.addresses, false);
    let changed = snapshot(args.rules, args.addresses, true);
    let lab = Lab::new()?;
    log(&format!(
        "lab {}: client + 4 nodes; {} rules, {} referenced addresses",
        lab.prefix, args.rules, args.addresses
    ));
    let mut linear = ModeResult::default();
    let mut maps = ModeResult::default();
    for (mode, res, node) in [(Mode::Linear, &mut linear, 1), (Mode::Maps, &mut maps, 2)] {
        check_interrupt()?;
        if let Err(e) = load_mode(&lab, node, mode, &snap, &changed, limit, res, log) {
            log(&format!("{mode:?}: {e:#}"));
            res.skipped = Some(format!("{e:#}"));
        }
    }
    let one = snapshot_one_rule();
    let (c, _) = compile_bounded(&one, Mode::Linear, limit)?;
    NftDataplane::new(Some(lab.node(3))).apply(&c)?;
    let recording = CompileOptions {
        uplinks: vec!["eth0".into()],
        mode: Mode::Maps,
        flow_log: Some(FlowLogOptions {
            rate: args.flow_log_rate,
            burst: args.flow_log_rate,
            ..FlowLogOptions::default()
        }),
        ..Default::default()
    };
    let mut recorder = None;
    match compile_with(&snap, &recording, limit) {
        Ok((c, _)) => {
            apply_bounded(&NftDataplane::new(Some(lab.node(4))), &c, Mode::Maps, limit)?;
            recorder = Some(Recorder::start(&lab.node(4))?);
        }
        Err(e) => log(&format!("maps with recording: {e:#}")),
    }
    // Probe rounds, nodes interleaved so load from others hits all alike.
    let mut none = FlowResult::default();
    let mut one_rule = FlowResult::default();
    let mut maps_recording = FlowResult::default();
    let nodes: Vec<usize> = [0, 3]
        .into_iter()
        .chain((linear.skipped.is_none() || linear.apply_ms.is_some()).then_some(1))
        .chain((maps.skipped.is_none() || maps.apply_ms.is_some()).then_some(2))
        .chain(recorder.is_some().then_some(4))
        .collect();
    let socket = lab.sender()?;
    let mut next = 0u64;
    for round in 0..args.rounds.max(1) {
        for &node in &nodes {
            check_interrupt()?;
            // Every node's entries go, not only this one's (see the module
            // comment), then batches of at most PROBES_PER_FLUSH probes.
            for &n in &nodes {
                lab.exec(&lab.node(n), &["conntrack", "-F"]).ok();
            }
            let before = lab.in_receives(node)?;
            let (mut sent, mut elapsed) = (0u64, Duration::ZERO);
            while elapsed.as_secs_f64() < args.seconds {
                if sent > 0 {
                    lab.exec(&lab.node(node), &["conntrack", "-F"]).ok();
                }
                let left = args.seconds - elapsed.as_secs_f64();
                let (s, e) = probe(
                    &socket,
                    node,
                    &mut next,
                    left,
                    PROBES_PER_FLUSH,
                    usize::from(args.batch),
                )?;
                sent += s;
                elapsed += e;
            }
            // Let the softirq backlog drain before reading the counter.
            std::thread::sleep(Duration::from_millis(20));
            let received = lab.in_receives(node)?.saturating_sub(before);
            let ns = elapsed.as_nanos() as f64 / sent.max(1) as f64;
            log(&format!(
                "round {round} node {node}: {sent} probes, {ns:.0} ns each, {received} received"
            ));
            let f = match node {
                0 => &mut none,
                3 => &mut one_rule,
                1 => &mut linear.flows,
                4 => &mut maps_recording,
                _ => &mut maps.flows,
            };
            f.ns_per_flow_rounds.push(ns);
            f.sent += sent;
            f.received += received;
        }
    }
    let recording_logged = recorder.map_or(0, Recorder::stop);
    let recording_suppressed = suppressed(&lab, 4).unwrap_or(0);
    for f in [
        &mut none,
        &mut one_rule,
        &mut linear.flows,
        &mut maps.flows,
        &mut maps_recording,
    ] {
        if let Some(best) = f.ns_per_flow_rounds.iter().copied().reduce(f64::min) {
            f.ns_per_flow = best;
            f.flows_per_sec = 1e9 / best;
        }
    }
    for m in [&mut linear, &mut maps] {
        if m.flows.ns_per_flow > 0.0 {
            m.ns_added_per_flow = Some(m.flows.ns_per_flow - none.ns_per_flow);
            m.ns_added_over_one_rule = Some(m.flows.ns_per_flow - one_rule.ns_per_flow);
        }
    }
    let linear_over_maps = match (linear.ns_added_per_flow, maps.ns_added_per_flow) {
        (Some(l), Some(m)) if m > 0.0 => Some(l / m),
        _ => None,
    };
    let recording_ns_added = (maps_recording.ns_per_flow > 0.0 && maps.flows.ns_per_flow > 0.0)
        .then_some(maps_recording.ns_per_flow - maps.flows.ns_per_flow);
    Ok(DataplaneReport {
        rules: args.rules,
        addresses: args.addresses,
        rounds: args.rounds.max(1),
        seconds: args.seconds,
        probes_per_flush: PROBES_PER_FLUSH,
        batch: args.batch,
        none,
        one_rule,
        linear,
        maps,
        linear_over_maps,
        maps_recording,
        flow_log_rate: args.flow_log_rate,
        recording_logged,
        recording_suppressed,
        recording_ns_added,
    })
}

/// A thread reading node 4's flow log the way the agent does (events
/// into an aggregator, flushed every second) until stopped.
struct Recorder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Recorder {
    fn start(ns: &str) -> anyhow::Result<Self> {
        let mut log = FlowLog::open(Some(ns), FlowLogOptions::default().group)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let instance = "ins-bench001".parse().expect("a valid instance id");
            let mut agg = Aggregator::new(instance, 100_000);
            let (mut logged, mut lost) = (0u64, 0u64);
            let mut last = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let read = log.read(Duration::from_millis(100), &mut lost, |t| agg.is_open(t));
                let read = match read {
                    Ok(events) => events,
                    Err(e) => {
                        eprintln!("bench dataplane: the flow log reader stops: {e}");
                        break;
                    }
                };
                for e in read {
                    if matches!(e, Event::Decision { .. }) {
                        logged += 1;
                    }
                    agg.add(e, 0, 1);
                }
                if last.elapsed() >= Duration::from_secs(1) {
                    agg.flush(0);
                    last = Instant::now();
                }
            }
            logged
        });
        Ok(Self { stop, thread })
    }

    /// Stops the thread; the decisions it read.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The packets of node `n`'s suppressed-decisions counter.
fn suppressed(lab: &Lab, n: usize) -> anyhow::Result<u64> {
    let out = lab.exec(
        &lab.node(n),
        &[
            "nft",
            "list",
            "counter",
            "inet",
            "palisade",
            FLOW_LOG_SUPPRESSED,
        ],
    )?;
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .context("no packets in the counter")?
        .parse()
        .context("the counter's packets")
}

/// Compiles and loads one mode into its node and times the membership change.
#[allow(clippy::too_many_arguments)]
fn load_mode(
    lab: &Lab,
    node: usize,
    mode: Mode,
    snap: &Ruleset,
    changed: &Ruleset,
    limit: Duration,
    res: &mut ModeResult,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let (compiled, ms) = compile_bounded(snap, mode, limit)?;
    res.compile_ms = ms;
    // Set elements (linear mode; references kept out of the maps in maps
    // mode) and verdict map elements.
    res.elements = compiled.element_count()
        + compiled
            .maps
            .iter()
            .map(|m| m.elements.len())
            .sum::<usize>();
    log(&format!(
        "{mode:?}: compiled in {ms:.0} ms, {} elements",
        res.elements
    ));
    let ns = lab.node(node);
    let mut dp = NftDataplane::new(Some(ns.clone()));
    let t = Instant::now();
    apply_bounded(&dp, &compiled, mode, limit)?;
    res.apply_ms = Some(ms_since(t));
    let t = Instant::now();
    apply_bounded(&dp, &compiled, mode, limit)?;
    res.replace_ms = Some(ms_since(t));
    log(&format!(
        "{mode:?}: apply {:.0} ms, replace {:.0} ms",
        res.apply_ms.unwrap_or_default(),
        res.replace_ms.unwrap_or_default()
    ));
    check_interrupt()?;
    let (after, ms) = compile_bounded(changed, mode, limit)?;
    // The delta is computed in userspace, with the compile; the kernel
    // time is the load alone.
    let t = Instant::now();
    let join = after.set_deltas(&compiled);
    let leave = compiled.set_deltas(&after);
    let ms = ms + ms_since(t);
    res.change_compile_ms = Some(ms);
    // The kernel frees a replaced table after an RCU grace period, in a
    // work queue that the next `nft` to exit waits for. The agent reads
    // the table after every load, which absorbs that wait; so does this.
    let _ = dp.read();
    // The agent keeps one `nft -i` session for deltas for its lifetime;
    // its start is not part of a change.
    dp.start_session()?;
    let t = Instant::now();
    match &join {
        Some(deltas) => {
            res.change_kind = if deltas.maps.is_empty() {
                "element add".into()
            } else {
                "map element delta".into()
            };
            dp.apply_deltas(&after, deltas)?;
        }
        None => {
            res.change_kind = "table replace".into();
            apply_bounded(&dp, &after, mode, limit)?;
        }
    }
    res.change_apply_ms = Some(ms_since(t));
    log(&format!(
        "{mode:?}: one member joins: compile and delta {ms:.1} ms, {} {:.1} ms",
        res.change_kind,
        res.change_apply_ms.unwrap_or_default()
    ));
    // And leaves again: a delete makes the kernel wait out an RCU grace
    // period before a netlink socket that made it can close; the session
    // stays open, so the wait is off this path.
    let t = Instant::now();
    match &leave {
        Some(deltas) => dp.apply_deltas(&compiled, deltas)?,
        None => apply_bounded(&dp, &compiled, mode, limit)?,
    }
    res.leave_apply_ms = Some(ms_since(t));
    log(&format!(
        "{mode:?}: the member leaves: {:.1} ms",
        res.leave_apply_ms.unwrap_or_default()
    ));
    // The agent's own checks at this size: the read it does after a load,
    // and what replaced the read in idle steps and status reports. The
    // read also keeps probes from meeting a stale generation: the table
    // stays as changed (the new member is outside the probes' addresses).
    let t = Instant::now();
    dp.read()?;
    res.read_ms = Some(ms_since(t));
    let t = Instant::now();
    for _ in 0..CHECKS {
        dp.generation()?;
    }
    res.generation_ms = Some(ms_since(t) / CHECKS as f64);
    let t = Instant::now();
    for _ in 0..CHECKS {
        dp.counters()?;
    }
    res.counters_ms = Some(ms_since(t) / CHECKS as f64);
    log(&format!(
        "{mode:?}: table read {:.1} ms, generation {:.3} ms, counters {:.2} ms",
        res.read_ms.unwrap_or_default(),
        res.generation_ms.unwrap_or_default(),
        res.counters_ms.unwrap_or_default()
    ));
    Ok(())
}

/// How many generation queries and counter dumps are averaged.
const CHECKS: usize = 20;

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Compiles in a thread and gives up after `limit` (the thread is left to
/// finish on its own; the process ends soon after a benchmark anyway).
fn compile_bounded(snap: &Ruleset, mode: Mode, limit: Duration) -> anyhow::Result<(Compiled, f64)> {
    let opts = CompileOptions {
        uplinks: vec!["eth0".into()],
        mode,
        ..Default::default()
    };
    compile_with(snap, &opts, limit)
}

/// [`compile_bounded`] with any options.
fn compile_with(
    snap: &Ruleset,
    opts: &CompileOptions,
    limit: Duration,
) -> anyhow::Result<(Compiled, f64)> {
    let (tx, rx) = mpsc::channel();
    let (snap, opts) = (snap.clone(), opts.clone());
    std::thread::spawn(move || {
        let t = Instant::now();
        let c = compile(&snap, &opts);
        let _ = tx.send(c.map(|c| (c, ms_since(t))));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => Ok(r?),
        Err(_) => bail!("compile took more than {} s; given up", limit.as_secs()),
    }
}

/// Loads a whole program: the agent's own `apply` for linear mode (staged
/// above 100,000 set elements); for maps mode one `nft -f` killed at `limit`.
fn apply_bounded(
    dp: &NftDataplane,
    compiled: &Compiled,
    mode: Mode,
    limit: Duration,
) -> anyhow::Result<()> {
    if mode == Mode::Linear {
        let mut dp = dp.clone();
        return Ok(dp.apply(compiled)?);
    }
    let ns = dp.netns.clone().unwrap_or_default();
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), compiled.script())?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns, "nft", "-f"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let out = child.wait_with_output()?;
            bail!(
                "nft -f failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if t.elapsed() > limit || interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "nft -f did not finish in {} s ({} map elements); given up",
                limit.as_secs(),
                compiled
                    .maps
                    .iter()
                    .map(|m| m.elements.len())
                    .sum::<usize>()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The rule list: `rules` ingress rules in groups of 100. Rule 0 accepts
/// TCP 22 from a referenced group of `addresses` single addresses spread
/// over 10.0.0.0/8 (one more joins when `joined`); the middle rules accept
/// or drop TCP/UDP ports from documentation-range peers; the last accepts
/// UDP 5353 from 198.18.0.0/15, which the probes match.
pub fn snapshot(rules: usize, addresses: usize, joined: bool) -> Ruleset {
    let v4 = |a: Ipv4Addr| u128::from(u32::from(a));
    let single = |a: u128| AddrRange::new(Family::V4, a, a).expect("a single address is a range");
    let base = v4(Ipv4Addr::new(10, 0, 0, 1));
    let mut members: Vec<AddrRange> = (0..addresses as u128)
        .map(|k| single(base + 3 * k))
        .collect();
    if joined {
        members.push(single(v4(Ipv4Addr::new(10, 255, 255, 254))));
    }
    let pools = [
        v4(Ipv4Addr::new(192, 0, 2, 0)),
        v4(Ipv4Addr::new(198, 51, 100, 0)),
        v4(Ipv4Addr::new(203, 0, 113, 0)),
    ];
    let port = |lo: u16, hi: u16| PortRange::new(lo, hi).unwrap_or(PortRange::single(lo));
    let mut ingress = Vec::with_capacity(rules);
    for j in 0..rules {
        let (action, protocol, ports, peers, peer_ref) = if j == 0 {
            (
                Action::Accept,
                6,
                port(22, 22),
                members.clone(),
                Some(Peer::SecurityGroup(id("sg-members1"))),
            )
        } else if j + 1 == rules {
            let lo = v4(Ipv4Addr::new(198, 18, 0, 0));
            let r = AddrRange::new(Family::V4, lo, lo + (1 << 17) - 1).expect("lo <= hi");
            (Action::Accept, 17, port(5353, 5353), vec![r], None)
        } else {
            let peer = pools[j % 3] + (j / 3 % 256) as u128;
            let p = 1000 + (j / 768) as u16 * 7 + (j % 5) as u16;
            let action = if j % 10 == 9 {
                Action::Drop
            } else {
                Action::Accept
            };
            let proto = if j % 2 == 0 { 6 } else { 17 };
            (action, proto, port(p, p + 2), vec![single(peer)], None)
        };
        // The rule as written: the members' group, or a block standing for
        // the peers (the compiler looks only at the sets and references).
        let peer = peer_ref.unwrap_or_else(|| {
            // "0.0.0.0/0" is a well-formed IPv4 block.
            Peer::Cidr(Cidr::parse_v4("CidrBlock", "0.0.0.0/0").expect("a valid block"))
        });
        ingress.push(ResolvedRule::from_sets(
            RuleOrigin {
                security_group_id: id(&format!("sg-b{:07}", j / 100)),
                direction: Direction::Ingress,
                policy_index: j % 100,
            },
            action,
            vec![ServiceMatch {
                protocol: ProtocolMatch::Number(protocol),
                ports: vec![ports],
            }],
            peers,
            peer,
        ));
    }
    Ruleset {
        security_groups: Vec::new(),
        ingress,
        egress: vec![],
    }
}

/// A group id of the bench's own making.
fn id(text: &str) -> palisade_model::SecurityGroupId {
    // Every id made here is `sg-` and 8 lower-case alphanumerics.
    text.parse().expect("a well-formed group id")
}

/// The probes' accept rule alone.
fn snapshot_one_rule() -> Ruleset {
    let mut s = snapshot(2, 0, false);
    s.ingress.remove(0);
    s
}

/// The most conntrack entries a probe meets: the probed node's table is
/// flushed after this many probes.
pub const PROBES_PER_FLUSH: u64 = 16_384;

/// Sends probes to node `node` for `seconds` or `max` probes, whichever
/// comes first, `batch` per `sendmmsg` call; returns (probes, time).
fn probe(
    socket: &socket2::Socket,
    node: usize,
    next: &mut u64,
    seconds: f64,
    max: u64,
    batch: usize,
) -> anyhow::Result<(u64, Duration)> {
    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
    use std::io::IoSlice;
    let dst = Ipv4Addr::new(198, 18, node as u8, 2);
    let to = SocketAddrV4::new(dst, 0);
    // Built once: the loop below is what is timed.
    let (to_one, to_many) = (
        socket2::SockAddr::from(to),
        rustix::net::SocketAddrAny::from(to),
    );
    let mut template = [0u8; 28];
    template[0] = 0x45;
    template[2..4].copy_from_slice(&28u16.to_be_bytes());
    template[8] = 64;
    template[9] = 17;
    template[16..20].copy_from_slice(&dst.octets());
    template[22..24].copy_from_slice(&5353u16.to_be_bytes());
    template[24..26].copy_from_slice(&8u16.to_be_bytes());
    let mut pkts = vec![template; batch.max(1)];
    let src_base = u32::from(Ipv4Addr::new(198, 18, 128, 0));
    let deadline = Duration::from_secs_f64(seconds.max(0.01));
    let t = Instant::now();
    let mut sent = 0u64;
    loop {
        // 64 probes between clock reads, in calls of `batch`.
        let mut round = 0;
        while round < 64 {
            for pkt in pkts.iter_mut() {
                let n = *next;
                *next += 1;
                let src = src_base + ((n / 60_000) % 32_768) as u32;
                let sport = 1024 + (n % 60_000) as u16;
                pkt[12..16].copy_from_slice(&src.to_be_bytes());
                pkt[20..22].copy_from_slice(&sport.to_be_bytes());
            }
            if pkts.len() == 1 {
                socket
                    .send_to(&pkts[0], &to_one)
                    .context("sending a probe")?;
            } else {
                let iovs: Vec<[IoSlice<'_>; 1]> =
                    pkts.iter().map(|p| [IoSlice::new(&p[..])]).collect();
                let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..pkts.len())
                    .map(|_| SendAncillaryBuffer::default())
                    .collect();
                let mut msgs: Vec<MMsgHdr<'_>> = iovs
                    .iter()
                    .zip(controls.iter_mut())
                    .map(|(iov, control)| MMsgHdr::new_with_addr(&to_many, iov, control))
                    .collect();
                let mut done = 0;
                while done < msgs.len() {
                    done += sendmmsg(socket, &mut msgs[done..], SendFlags::empty())
                        .context("sending probes")?;
                }
            }
            sent += pkts.len() as u64;
            round += pkts.len();
        }
        if t.elapsed() >= deadline || sent >= max {
            return Ok((sent, t.elapsed()));
        }
    }
}

/// Node namespaces: none, linear, maps, one rule, maps with recording.
const NODES: usize = 5;

/// The namespaces; deleted on drop.
struct Lab {
    prefix: String,
    names: Vec<String>,
    /// UDP sockets bound in the nodes, never read (their buffers fill, and
    /// later probes are dropped at the socket, the same for every node).
    _listeners: Vec<std::net::UdpSocket>,
}

impl Lab {
    fn new() -> anyhow::Result<Self> {
        remove_stale();
        let mut lab = Lab {
            prefix: format!("pbd{}", std::process::id()),
            names: Vec::new(),
            _listeners: Vec::new(),
        };
        let client = lab.client();
        lab.add(&client)?;
        for node in 0..NODES {
            let ns = lab.node(node);
            lab.add(&ns)?;
            for key in [
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ] {
                lab.exec(&ns, &["sysctl", "-qw", key])?;
            }
            let c_if = format!("c{node}");
            run_cmd(&[
                "ip", "-n", &client, "link", "add", &c_if, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            lab.exec(
                &client,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.{node}.1/24"),
                    "dev",
                    &c_if,
                ],
            )?;
            lab.exec(
                &ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.{node}.2/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            lab.exec(&client, &["ip", "link", "set", &c_if, "up"])?;
            lab.exec(&ns, &["ip", "link", "set", "eth0", "up"])?;
            let bind = SocketAddrV4::new(Ipv4Addr::new(198, 18, node as u8, 2), 5353);
            let sock = in_netns(&ns, move || std::net::UdpSocket::bind(bind))??;
            lab._listeners.push(sock);
        }
        Ok(lab)
    }

    fn client(&self) -> String {
        format!("{}c", self.prefix)
    }

    fn node(&self, n: usize) -> String {
        format!("{}n{n}", self.prefix)
    }

    fn add(&mut self, name: &str) -> anyhow::Result<()> {
        run_cmd(&["ip", "netns", "add", name])?;
        self.names.push(name.to_string());
        self.exec(name, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn exec(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run_cmd(&full)
    }

    /// The raw socket in the client namespace, after a warm-up that
    /// resolves the nodes' MAC addresses.
    fn sender(&self) -> anyhow::Result<socket2::Socket> {
        let socket = in_netns(&self.client(), || {
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(255)),
            )
        })??;
        for node in 0..NODES {
            let to = socket2::SockAddr::from(SocketAddrV4::new(
                Ipv4Addr::new(198, 18, node as u8, 2),
                0,
            ));
            let mut pkt = [0u8; 28];
            pkt[0] = 0x45;
            pkt[2..4].copy_from_slice(&28u16.to_be_bytes());
            pkt[8] = 64;
            pkt[9] = 17;
            pkt[12..16].copy_from_slice(&[198, 18, node as u8, 1]);
            pkt[16..20].copy_from_slice(&[198, 18, node as u8, 2]);
            pkt[20..22].copy_from_slice(&9u16.to_be_bytes());
            pkt[22..24].copy_from_slice(&9u16.to_be_bytes());
            pkt[24..26].copy_from_slice(&8u16.to_be_bytes());
            socket.send_to(&pkt, &to).context("warm-up probe")?;
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(socket)
    }

    /// The node's `Ip InReceives` counter.
    fn in_receives(&self, node: usize) -> anyhow::Result<u64> {
        let snmp = self.exec(&self.node(node), &["cat", "/proc/net/snmp"])?;
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (Some(head), Some(vals)) = (ip.next(), ip.next()) else {
            bail!("no Ip: lines in /proc/net/snmp");
        };
        let i = head
            .split_whitespace()
            .position(|h| h == "InReceives")
            .context("no InReceives")?;
        Ok(vals
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Deletes `pbd<pid>*` namespaces of processes that no longer run (a run
/// killed with SIGKILL cannot clean up after itself).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("pbd") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `f` on a thread moved into namespace `ns` (sockets it creates stay
/// in that namespace).
pub(crate) fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let handle = std::thread::spawn(move || -> std::io::Result<T> {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        Ok(f())
    });
    match handle.join() {
        Ok(r) => Ok(r.with_context(|| format!("entering namespace {ns}"))?),
        Err(_) => bail!("the thread in namespace {ns} panicked"),
    }
}

fn run_cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the benchmark once at a tiny size (root only; no timed checks).
    #[test]
    fn dataplane_bench_runs_tiny() {
        if let Some(why) = skip_reason() {
            eprintln!("skipping dataplane_bench_runs_tiny: needs {why}");
            return;
        }
        let args = DataplaneOptions {
            rules: 10,
            addresses: 10,
            seconds: 0.05,
            rounds: 1,
            batch: 8,
            max_load_secs: 60,
            flow_log_rate: 5,
        };
        let r = run(&args, &mut |l| eprintln!("{l}")).expect("bench dataplane");
        assert!(r.linear.skipped.is_none() && r.maps.skipped.is_none());
        assert!(r.none.sent > 0 && r.linear.flows.sent > 0 && r.maps.flows.sent > 0);
        assert_eq!(r.linear.change_kind, "element add");
        assert!(r.linear.leave_apply_ms.is_some() && r.maps.leave_apply_ms.is_some());
        assert!(r.linear.generation_ms.is_some() && r.maps.counters_ms.is_some());
        // The probes reached the nodes (a few may be in flight), sent 8
        // per call.
        assert!(r.linear.flows.received * 2 >= r.linear.flows.sent);
        assert!(r.maps.flows.received * 2 >= r.maps.flows.sent);
        assert_eq!((r.batch, r.maps.flows.sent % 8), (8, 0));
        // Recording ran: within the limit some decisions were read, the
        // rest counted.
        assert!(r.maps_recording.sent > 0 && r.recording_logged > 0);
        assert!(r.recording_logged + r.recording_suppressed >= r.maps_recording.received / 2);
    }

    #[test]
    fn snapshot_has_the_shape_described() {
        let s = snapshot(5, 3, false);
        assert_eq!(s.ingress.len(), 5);
        assert_eq!(s.ingress[0].peers().len(), 3);
        assert_eq!(snapshot(5, 3, true).ingress[0].peers().len(), 4);
        assert_eq!(
            s.ingress[4].services()[0].protocol,
            ProtocolMatch::Number(17)
        );
    }
}
