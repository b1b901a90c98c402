//! Change impact on observed traffic (DESIGN.md section 8, "Preview";
//! issue 20): every recorded flow is replayed against the rules its
//! instance has now and the rules a change would give it, with `policy`'s
//! classifier (the same first-match semantics as `explain` and the
//! kernel), and the flows whose verdict changes are reported, grouped by
//! instance, direction, peer, protocol, port and the deciding rules.
//!
//! - [`read_records`] streams a records file: the JSON array `palisade
//!   flows --output json` prints, or JSON Lines (one record per line, as
//!   `palisade flows --follow --output json` prints), so ten million
//!   records need not be held at once. A malformed record is an error
//!   naming its line.
//! - [`Replayer`] holds both sides compiled: one classifier per direction
//!   and distinct list of bound groups (instances bound alike share it).
//!   An instance whose resolved rules are the same on both sides cannot
//!   change verdict and is not classified at all. For the others, the
//!   exact set of packets whose verdict flips (accepted by one side only,
//!   from `policy::decide`) is itself made a classifier: one lookup in it
//!   sorts a record out, and only the records inside are classified
//!   against both full lists to name the deciding rules.
//!
//! A flow is *newly dropped* when the current rules accept it and the
//! proposed ones drop it, *newly allowed* the other way round; a newly
//! dropped flow that was recorded `ACCEPT` is a *break* (what
//! `--fail-on-break` fails on). A reordering that changes no verdict
//! reports nothing, since verdicts, not deciding rules, are compared.

use crate::error::AnalyzeError;
use palisade_model::flow::{FlowRecord, Verdict as Observed};
use palisade_model::{Action, Direction, Fleet, InstanceId, SecurityGroupId};
use palisade_policy::{
    decompose, Classifier, FleetIndex, Packet, ResolvedRule, RuleOrigin, Verdict,
};
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::BufRead;
use std::net::IpAddr;

/// Reads flow records from `input`, calling `each` with each record and
/// its 1-based line. The input is a JSON array of records (read whole) or
/// JSON Lines (streamed; blank lines are skipped). Every record must pass
/// [`FlowRecord::check`]. Errors name the line.
pub fn read_records<R: BufRead>(
    mut input: R,
    each: impl FnMut(FlowRecord, usize) -> Result<(), AnalyzeError>,
) -> Result<u64, AnalyzeError> {
    let io = |e: std::io::Error| AnalyzeError::Records {
        line: None,
        message: e.to_string(),
    };
    // The first non-blank byte tells an array from JSON Lines.
    let mut skipped = 0usize;
    let first = loop {
        let buf = input.fill_buf().map_err(io)?;
        let Some(&b) = buf.first() else {
            return Ok(0);
        };
        if b.is_ascii_whitespace() {
            skipped += usize::from(b == b'\n');
            input.consume(1);
            continue;
        }
        break b;
    };
    if first == b'[' {
        let mut text = String::new();
        input.read_to_string(&mut text).map_err(io)?;
        return read_array(&text, skipped, each);
    }
    read_lines(input, skipped, each)
}

/// A parsed block of JSON Lines: its records with their lines, or the
/// first error in it.
type Parsed = Result<Vec<(FlowRecord, usize)>, AnalyzeError>;

/// Bytes per block handed to a parsing thread.
const BLOCK_BYTES: usize = 1 << 20;

/// JSON Lines, parsed by a thread per core (parsing is most of the cost:
/// about a microsecond a record, against tens of nanoseconds to replay it)
/// and handed to `each` in file order. At most two blocks per thread are
/// in flight and their buffers are reused, so memory stays a few MiB
/// whatever the file's size.
fn read_lines<R: BufRead>(
    mut input: R,
    skipped: usize,
    mut each: impl FnMut(FlowRecord, usize) -> Result<(), AnalyzeError>,
) -> Result<u64, AnalyzeError> {
    let io = |e: std::io::Error| AnalyzeError::Records {
        line: None,
        message: e.to_string(),
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 8);
    // (sequence, first line, buffer, bytes of whole lines in it)
    type Job = (u64, usize, Vec<u8>, usize);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, Parsed, Vec<u8>)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || loop {
                // A poisoned lock means another parser panicked: stop.
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                let Ok((seq, first, block, end)) = job else {
                    return;
                };
                let parsed = parse_block(block.get(..end).unwrap_or_default(), first);
                if tx.send((seq, parsed, block)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let (mut line, mut sent, mut next, mut count) = (skipped + 1, 0u64, 0u64, 0u64);
        let mut eof = false;
        let mut carry: Vec<u8> = Vec::new();
        let mut free: Vec<Vec<u8>> = Vec::new();
        let mut pending: std::collections::BTreeMap<u64, Parsed> = Default::default();
        loop {
            while !eof && sent - next < 2 * workers as u64 {
                let mut block = free.pop().unwrap_or_default();
                block.clear();
                block.append(&mut carry);
                // Whole lines only: read up to the block size, then cut
                // after the last newline (a longer line grows the block).
                let end = loop {
                    let filled = block.len();
                    let want = BLOCK_BYTES.max(filled * 2);
                    block.resize(want, 0);
                    let n = read_full(&mut input, block.get_mut(filled..).unwrap_or_default())
                        .map_err(io)?;
                    block.truncate(filled + n);
                    if n < want - filled {
                        eof = true;
                        break block.len();
                    }
                    if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
                        break i + 1;
                    }
                };
                carry.extend_from_slice(block.get(end..).unwrap_or_default());
                if end == 0 {
                    break;
                }
                let lines = block
                    .get(..end)
                    .unwrap_or_default()
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                if job_tx.send((sent, line, block, end)).is_err() {
                    break;
                }
                line += lines;
                sent += 1;
            }
            if next == sent {
                drop(job_tx);
                return Ok(count);
            }
            let Ok((seq, parsed, buffer)) = done_rx.recv() else {
                drop(job_tx);
                return Ok(count);
            };
            free.push(buffer);
            pending.insert(seq, parsed);
            while let Some(parsed) = pending.remove(&next) {
                for (record, n) in parsed? {
                    each(record, n)?;
                    count += 1;
                }
                next += 1;
            }
        }
    })
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full<R: std::io::Read>(input: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The records of a block of JSON Lines whose first line is `first`.
fn parse_block(block: &[u8], first: usize) -> Parsed {
    let mut out = Vec::with_capacity(block.len() / 256);
    for (i, text) in block.split(|&b| b == b'\n').enumerate() {
        let text = text.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let line = first + i;
        let record: FlowRecord =
            serde_json::from_slice(text).map_err(|e| AnalyzeError::Records {
                line: Some(line),
                message: format!("not a flow record: {e}"),
            })?;
        out.push((checked(record, line)?, line));
    }
    Ok(out)
}

/// A JSON array of records; lines are counted up to each element.
fn read_array(
    text: &str,
    skipped: usize,
    mut each: impl FnMut(FlowRecord, usize) -> Result<(), AnalyzeError>,
) -> Result<u64, AnalyzeError> {
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(text).map_err(|e| AnalyzeError::Records {
            line: Some(skipped + e.line()),
            message: format!("not a JSON array of flow records: {e}"),
        })?;
    let (mut line, mut seen) = (skipped + 1, 0usize);
    let mut count = 0;
    for raw in items {
        // `raw` borrows from `text`: its offset gives its line.
        let at = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        line += text
            .get(seen..at)
            .map_or(0, |s| s.bytes().filter(|&b| b == b'\n').count());
        seen = at.max(seen);
        let record = parse_record(raw.get(), line)?;
        each(record, line)?;
        count += 1;
    }
    Ok(count)
}

fn parse_record(text: &str, line: usize) -> Result<FlowRecord, AnalyzeError> {
    let record: FlowRecord = serde_json::from_str(text).map_err(|e| AnalyzeError::Records {
        line: Some(line + e.line().saturating_sub(1)),
        message: format!("not a flow record: {e}"),
    })?;
    checked(record, line)
}

fn checked(record: FlowRecord, line: usize) -> Result<FlowRecord, AnalyzeError> {
    record.check().map_err(|e| AnalyzeError::Records {
        line: Some(line),
        message: format!("not a usable flow record: {e}"),
    })?;
    Ok(record)
}

/// The packet a record's first decision was about, as `explain` takes it.
pub fn packet_of(r: &FlowRecord) -> Packet {
    Packet {
        direction: r.direction,
        protocol: r.protocol,
        peer: r.peer(),
        port: r.service_port(),
    }
}

/// One direction's list, compiled.
#[derive(Debug)]
struct List {
    classifier: Classifier,
    rules: Vec<(RuleOrigin, Action)>,
}

impl List {
    fn new(rules: &[ResolvedRule]) -> List {
        List {
            classifier: Classifier::build(rules),
            rules: rules
                .iter()
                .map(|r| (r.origin().clone(), r.action()))
                .collect(),
        }
    }

    /// The index of the deciding rule and whether it accepts.
    #[inline]
    fn decide(&self, protocol: u8, peer: IpAddr, port: Option<u16>) -> (u32, bool) {
        match self.classifier.lookup(protocol, peer, port) {
            Some(i) => (
                // Fewer than 2^32 rules in any list.
                u32::try_from(i).unwrap_or(NONE),
                self.rules.get(i).is_some_and(|r| r.1 == Action::Accept),
            ),
            None => (NONE, false),
        }
    }

    fn verdict(&self, index: u32) -> Verdict {
        match self.rules.get(index as usize) {
            Some((origin, action)) => Verdict {
                action: *action,
                matched: Some(origin.clone()),
                failsafe: None,
            },
            None => Verdict::default_drop(),
        }
    }
}

/// "No rule": the default drop.
const NONE: u32 = u32::MAX;

/// Both directions of one distinct binding list.
#[derive(Debug)]
struct Compiled {
    ingress: List,
    egress: List,
}

impl Compiled {
    fn dir(&self, d: Direction) -> &List {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// An instance's lists on both sides (`None`: not in that fleet, so it
/// drops everything) and whether they can differ at all.
#[derive(Debug, Clone, Copy)]
struct Sides {
    index: u32,
    before: u32,
    after: u32,
    same: bool,
    /// With `!same`: the index of the pair's [`Changed`].
    pair: u32,
}

/// Per direction, the packets whose verdict differs between the two sides
/// of a pair of lists (accepted by exactly one), as a classifier over the
/// exact set: a record outside it cannot change verdict, so most records
/// cost one lookup in a small structure instead of two in the full ones.
#[derive(Debug)]
struct Changed {
    ingress: Classifier,
    egress: Classifier,
}

/// The change of one flow, grouped as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    instance: u32,
    direction: Direction,
    protocol: u8,
    peer: IpAddr,
    port: Option<u16>,
    before: u32,
    after: u32,
    newly_dropped: bool,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    records: u64,
    decisions: u64,
    observed_accepted: u64,
    first: u64,
    last: u64,
}

/// Both fleets compiled for replay, and the tallies so far.
#[derive(Debug)]
pub struct Replayer {
    instances: HashMap<InstanceId, Sides, BuildHasherDefault<IdHasher>>,
    names: Vec<InstanceId>,
    lists: Vec<Compiled>,
    changed: Vec<Changed>,
    changes: HashMap<Key, Tally>,
    records: u64,
    unknown: u64,
    unchanged: u64,
}

/// The list index of an absent instance: no groups, drops everything.
const EMPTY: u32 = 0;

impl Replayer {
    /// Compiles every instance of `before` (the current rules) and
    /// `after` (the proposed ones). An instance in only one of them has
    /// no rules in the other (everything dropped).
    pub fn new(before: &Fleet, after: &Fleet) -> Result<Replayer, AnalyzeError> {
        let mut b = Builder {
            lists: vec![Compiled {
                ingress: List::new(&[]),
                egress: List::new(&[]),
            }],
            resolved: vec![Default::default()],
            index_of: HashMap::new(),
        };
        let (cb, ca) = (FleetIndex::new(before), FleetIndex::new(after));
        let by_id = |f: &'_ Fleet| -> HashMap<InstanceId, Vec<SecurityGroupId>> {
            f.instances
                .iter()
                .map(|i| (i.id.clone(), i.security_groups.clone()))
                .collect()
        };
        let (ib, ia) = (by_id(before), by_id(after));
        let mut instances: HashMap<InstanceId, Sides, BuildHasherDefault<IdHasher>> =
            HashMap::default();
        let mut names = Vec::new();
        let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
        let mut changed: Vec<Changed> = Vec::new();
        let origin = |direction| -> Result<RuleOrigin, AnalyzeError> {
            Ok(RuleOrigin {
                security_group_id: "sg-00000000".parse().map_err(
                    |e: palisade_model::ModelError| AnalyzeError::Malformed {
                        field: "origin".into(),
                        value: "sg-00000000".into(),
                        why: e.to_string(),
                    },
                )?,
                direction,
                policy_index: 0,
            })
        };
        let (oi, oe) = (origin(Direction::Ingress)?, origin(Direction::Egress)?);
        for inst in before.instances.iter().chain(&after.instances) {
            if instances.contains_key(&inst.id) {
                continue;
            }
            let bi = b.compile(false, ib.get(&inst.id), &cb)?;
            let ai = b.compile(true, ia.get(&inst.id), &ca)?;
            let rules = |n: u32| b.resolved.get(n as usize).map(|r| (&r.ingress, &r.egress));
            let same = rules(bi) == rules(ai);
            let mut pair = 0;
            if !same {
                let next = u32::try_from(changed.len()).unwrap_or(u32::MAX);
                pair = *pairs.entry((bi, ai)).or_insert(next);
                if pair == next {
                    let flips = |d: Direction| {
                        let side = |n: u32| {
                            b.resolved
                                .get(n as usize)
                                .map(|r| decompose(r.rules(d)).accepted)
                                .unwrap_or_default()
                        };
                        let (x, y) = (side(bi), side(ai));
                        x.difference(&y).union(&y.difference(&x))
                    };
                    changed.push(Changed {
                        ingress: Classifier::of_set(&flips(Direction::Ingress), &oi),
                        egress: Classifier::of_set(&flips(Direction::Egress), &oe),
                    });
                }
            }
            let index = u32::try_from(names.len()).unwrap_or(u32::MAX);
            names.push(inst.id.clone());
            instances.insert(
                inst.id.clone(),
                Sides {
                    index,
                    before: bi,
                    after: ai,
                    same,
                    pair,
                },
            );
        }
        let lists = b.lists;
        Ok(Replayer {
            instances,
            names,
            lists,
            changed,
            changes: HashMap::new(),
            records: 0,
            unknown: 0,
            unchanged: 0,
        })
    }

    /// What the current and the proposed rules do with the record's flow,
    /// and which rule decided on each side (`None` for an instance in
    /// neither fleet).
    pub fn verdicts(&self, r: &FlowRecord) -> Option<(Verdict, Verdict)> {
        let s = self.instances.get(&r.instance_id)?;
        let (peer, port) = (r.peer(), r.service_port());
        let side = |list: u32| {
            let l = self.lists.get(list as usize)?.dir(r.direction);
            Some(l.verdict(l.decide(r.protocol, peer, port).0))
        };
        Some((side(s.before)?, side(s.after)?))
    }

    /// Replays one record.
    #[inline]
    pub fn replay(&mut self, r: &FlowRecord) {
        self.records += 1;
        let Some(&s) = self.instances.get(&r.instance_id) else {
            self.unknown += 1;
            return;
        };
        if s.same {
            self.unchanged += 1;
            return;
        }
        let (peer, port) = (r.peer(), r.service_port());
        let flips = self.changed.get(s.pair as usize).and_then(|c| {
            match r.direction {
                Direction::Ingress => &c.ingress,
                Direction::Egress => &c.egress,
            }
            .lookup(r.protocol, peer, port)
        });
        if flips.is_none() {
            return;
        }
        // The rare path: the flow's verdict flips; name both rules.
        let (Some(before), Some(after)) = (
            self.lists.get(s.before as usize),
            self.lists.get(s.after as usize),
        ) else {
            return;
        };
        let (bi, b_acc) = before.dir(r.direction).decide(r.protocol, peer, port);
        let observed_accept = r.action == Observed::Accept;
        let (ai, a_acc) = after.dir(r.direction).decide(r.protocol, peer, port);
        if a_acc == b_acc {
            return;
        }
        let key = Key {
            instance: s.index,
            direction: r.direction,
            protocol: r.protocol,
            peer,
            port: if palisade_policy::has_ports(r.protocol) {
                port
            } else {
                None
            },
            before: bi,
            after: ai,
            newly_dropped: b_acc,
        };
        let t = self.changes.entry(key).or_insert(Tally {
            records: 0,
            decisions: 0,
            observed_accepted: 0,
            first: u64::MAX,
            last: 0,
        });
        t.records += 1;
        t.decisions += r.decisions;
        t.observed_accepted += u64::from(observed_accept);
        t.first = t.first.min(r.start);
        t.last = t.last.max(r.end);
    }

    /// The report of everything replayed so far.
    pub fn report(&self) -> ReplayReport {
        let mut dropped = Vec::new();
        let mut allowed = Vec::new();
        for (k, t) in &self.changes {
            let (Some(s), Some(name)) = (
                self.names
                    .get(k.instance as usize)
                    .and_then(|n| self.instances.get(n)),
                self.names.get(k.instance as usize),
            ) else {
                continue;
            };
            let verdict = |list: u32, i: u32| {
                self.lists
                    .get(list as usize)
                    .map_or_else(Verdict::default_drop, |l| l.dir(k.direction).verdict(i))
            };
            let change = FlowChange {
                instance: name.to_string(),
                direction: k.direction.as_str(),
                protocol: k.protocol,
                peer: k.peer,
                port: k.port,
                before: verdict(s.before, k.before),
                after: verdict(s.after, k.after),
                records: t.records,
                decisions: t.decisions,
                observed_accepted: t.observed_accepted,
                first_seen: t.first,
                last_seen: t.last,
            };
            if k.newly_dropped {
                dropped.push(change);
            } else {
                allowed.push(change);
            }
        }
        let order = |a: &FlowChange, b: &FlowChange| {
            (
                &a.instance,
                a.direction,
                std::cmp::Reverse(a.records),
                a.peer,
                a.port,
            )
                .cmp(&(
                    &b.instance,
                    b.direction,
                    std::cmp::Reverse(b.records),
                    b.peer,
                    b.port,
                ))
        };
        dropped.sort_by(order);
        allowed.sort_by(order);
        let sum = |l: &[FlowChange], f: fn(&FlowChange) -> u64| l.iter().map(f).sum::<u64>();
        let mut report = ReplayReport {
            summary: String::new(),
            records: self.records,
            unknown_instance_records: self.unknown,
            unchanged_instance_records: self.unchanged,
            newly_dropped_records: sum(&dropped, |c| c.records),
            newly_allowed_records: sum(&allowed, |c| c.records),
            breaks: sum(&dropped, |c| c.observed_accepted),
            newly_dropped: dropped,
            newly_allowed: allowed,
        };
        report.summary = report.summary_line();
        report
    }
}

/// A hasher for instance ids, which are short ASCII strings an operator
/// does not choose against us here (the records file is the operator's
/// own): FNV-1a over 8-byte words, about 5 ns for an `ins-` id against
/// about 20 for the default SipHash, which is a fifth of a replay.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        for &b in chunks.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h ^ (h >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Compiles each distinct (side, binding list) once.
struct Builder {
    lists: Vec<Compiled>,
    resolved: Vec<palisade_policy::Ruleset>,
    index_of: HashMap<(bool, Vec<SecurityGroupId>), u32>,
}

impl Builder {
    fn compile(
        &mut self,
        side: bool,
        groups: Option<&Vec<SecurityGroupId>>,
        catalog: &FleetIndex,
    ) -> Result<u32, AnalyzeError> {
        let Some(groups) = groups else {
            return Ok(EMPTY);
        };
        let key = (side, groups.clone());
        if let Some(&n) = self.index_of.get(&key) {
            return Ok(n);
        }
        let rs = palisade_policy::resolve(catalog, groups)?;
        self.lists.push(Compiled {
            ingress: List::new(&rs.ingress),
            egress: List::new(&rs.egress),
        });
        self.resolved.push(rs);
        // Fewer than 2^32 distinct binding lists.
        let n = u32::try_from(self.lists.len() - 1).unwrap_or(EMPTY);
        self.index_of.insert(key, n);
        Ok(n)
    }
}

/// What replaying a set of records found. JSON as the fields are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// One line saying it all.
    pub summary: String,
    /// Records replayed.
    pub records: u64,
    /// Records of instances in neither fleet (not replayed).
    pub unknown_instance_records: u64,
    /// Records of instances whose rules the change leaves as they are.
    pub unchanged_instance_records: u64,
    /// Records of newly dropped flows.
    pub newly_dropped_records: u64,
    /// Records of newly allowed flows.
    pub newly_allowed_records: u64,
    /// Newly dropped records that were recorded `ACCEPT`: connections
    /// that worked and would stop working.
    pub breaks: u64,
    /// Flows the current rules accept and the proposed ones drop.
    pub newly_dropped: Vec<FlowChange>,
    /// Flows the current rules drop and the proposed ones accept.
    pub newly_allowed: Vec<FlowChange>,
}

impl ReplayReport {
    fn summary_line(&self) -> String {
        let mut s = format!(
            "replayed {} record(s): {} flow(s) ({} record(s)) newly dropped, {} of them recorded ACCEPT (would break); {} flow(s) ({} record(s)) newly allowed",
            self.records,
            self.newly_dropped.len(),
            self.newly_dropped_records,
            self.breaks,
            self.newly_allowed.len(),
            self.newly_allowed_records
        );
        if self.unknown_instance_records > 0 {
            s.push_str(&format!(
                "; {} record(s) of instances in neither fleet skipped",
                self.unknown_instance_records
            ));
        }
        s
    }
}

/// One flow whose verdict changes, with how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowChange {
    /// The instance whose rules decide.
    pub instance: String,
    /// `ingress` (the peer is the source) or `egress`.
    pub direction: &'static str,
    /// The IP protocol number.
    pub protocol: u8,
    /// The remote address.
    pub peer: IpAddr,
    /// The destination port (TCP and UDP).
    pub port: Option<u16>,
    /// The current verdict and the rule that decides it.
    pub before: Verdict,
    /// The proposed verdict and its rule.
    pub after: Verdict,
    /// Records of this flow.
    pub records: u64,
    /// Decisions they aggregate.
    pub decisions: u64,
    /// Of the records, those recorded `ACCEPT`.
    pub observed_accepted: u64,
    /// The earliest record's start, Unix seconds.
    pub first_seen: u64,
    /// The latest record's end, Unix seconds.
    pub last_seen: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;
    use crate::testing::{fleet_yaml, record, rules_strategy};
    use palisade_policy::evaluate;
    use proptest::prelude::*;

    fn records_text(rs: &[FlowRecord]) -> String {
        rs.iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn reads_arrays_and_json_lines_and_names_the_bad_line() {
        let a = record(
            "ins-node0001",
            Direction::Ingress,
            6,
            "198.18.0.2",
            Some(22),
        );
        let b = record("ins-node0001", Direction::Egress, 17, "192.0.2.1", Some(53));
        let lines = records_text(&[a.clone(), b.clone()]);
        let mut got = Vec::new();
        let n = read_records(format!("\n{lines}\n\n").as_bytes(), |r, line| {
            got.push((r, line));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(got, vec![(a.clone(), 2), (b.clone(), 3)]);
        let array = serde_json::to_string_pretty(&vec![a.clone(), b.clone()]).unwrap();
        let mut got = Vec::new();
        read_records(array.as_bytes(), |r, line| {
            got.push((r, line));
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (a.clone(), 2));
        assert!(got[1].1 > 10, "{got:?}");
        assert_eq!(read_records(&b"  \n"[..], |_, _| Ok(())).unwrap(), 0);
        // A bad field on line 3, a record that fails its checks on line 2.
        let bad = format!(
            "{}\n{}\n{{\"Bogus\": 1}}\n",
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&a).unwrap()
        );
        let e = read_records(bad.as_bytes(), |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let mut icmp = a.clone();
        icmp.protocol = 1;
        let bad = format!(
            "{}\n{}\n",
            records_text(std::slice::from_ref(&a)),
            records_text(&[icmp])
        );
        let e = read_records(bad.as_bytes(), |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(e.to_string().contains("port"), "{e}");
        let e = read_records(&b"[{\"InstanceId\": 3}]"[..], |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = read_records(&b"[\n1,\n"[..], |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Replay agrees with `explain` (resolution then first-match
        /// evaluation) on every flow, on both sides, and reports exactly
        /// the flows whose action changes.
        #[test]
        fn replay_agrees_with_explain(
            old in rules_strategy(12),
            new in rules_strategy(12),
            flows in prop::collection::vec(crate::testing::flow(), 1..120),
        ) {
            let before = Fleet::parse(&fleet_yaml(&old)).unwrap();
            let after = Fleet::parse(&fleet_yaml(&new)).unwrap();
            let mut rp = Replayer::new(&before, &after).unwrap();
            let mut changed = 0u64;
            for r in &flows {
                let p = packet_of(r);
                let eb = evaluate(&palisade_policy::resolve_instance(&before, &r.instance_id).unwrap(), &p);
                let ea = evaluate(&palisade_policy::resolve_instance(&after, &r.instance_id).unwrap(), &p);
                let (vb, va) = rp.verdicts(r).unwrap();
                prop_assert_eq!(&vb, &eb, "{}", p);
                prop_assert_eq!(&va, &ea, "{}", p);
                changed += u64::from(eb.action != ea.action);
                rp.replay(r);
            }
            let report = rp.report();
            prop_assert_eq!(report.newly_dropped_records + report.newly_allowed_records, changed);
            prop_assert_eq!(report.records, flows.len() as u64);
        }

        /// Reordering an all-ACCEPT list changes no verdict: nothing is
        /// reported, whatever the records.
        #[test]
        fn a_reordering_that_changes_no_decision_reports_nothing(
            old in rules_strategy(12),
            seed in any::<u64>(),
            flows in prop::collection::vec(crate::testing::flow(), 1..120),
        ) {
            let accept: Vec<_> = old
                .into_iter()
                .map(|mut r| { r.action = "ACCEPT"; r })
                .collect();
            let mut shuffled = accept.clone();
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let before = Fleet::parse(&fleet_yaml(&accept)).unwrap();
            let after = Fleet::parse(&fleet_yaml(&shuffled)).unwrap();
            let mut rp = Replayer::new(&before, &after).unwrap();
            for r in &flows {
                rp.replay(r);
            }
            let report = rp.report();
            prop_assert!(report.newly_dropped.is_empty() && report.newly_allowed.is_empty(), "{:?}", report);
            prop_assert_eq!(report.breaks, 0);
        }
    }

    #[test]
    fn a_cut_flow_is_named_with_its_counts_and_rules() {
        use crate::testing::TestRule;
        let old = vec![
            TestRule::new("ACCEPT", "TCP", "22", "198.18.0.0/24"),
            TestRule::new("ACCEPT", "TCP", "80", "0.0.0.0/0"),
        ];
        let new = vec![TestRule::new("ACCEPT", "TCP", "80", "0.0.0.0/0")];
        let before = Fleet::parse(&fleet_yaml(&old)).unwrap();
        let after = Fleet::parse(&fleet_yaml(&new)).unwrap();
        let mut rp = Replayer::new(&before, &after).unwrap();
        let mut r = record(
            "ins-node0001",
            Direction::Ingress,
            6,
            "198.18.0.2",
            Some(22),
        );
        rp.replay(&r);
        r.start += 100;
        r.end += 100;
        rp.replay(&r);
        rp.replay(&record(
            "ins-node0001",
            Direction::Ingress,
            6,
            "198.18.0.2",
            Some(80),
        ));
        rp.replay(&record(
            "ins-gone0001",
            Direction::Ingress,
            6,
            "198.18.0.2",
            Some(80),
        ));
        let report = rp.report();
        assert_eq!(report.records, 4);
        assert_eq!(report.unknown_instance_records, 1);
        assert_eq!(report.breaks, 2);
        assert_eq!(report.newly_dropped.len(), 1);
        let c = &report.newly_dropped[0];
        assert_eq!((c.port, c.records, c.decisions), (Some(22), 2, 2));
        assert_eq!((c.first_seen, c.last_seen), (1_700_000_000, 1_700_000_160));
        assert_eq!(c.before.matched.as_ref().unwrap().policy_index, 0);
        assert_eq!(c.after, Verdict::default_drop());
        assert!(
            report
                .summary
                .contains("1 flow(s) (2 record(s)) newly dropped"),
            "{}",
            report.summary
        );
    }
}
