//! A fast first-match classifier (DESIGN.md sections 2 and 7; issue 6 item
//! 3): given one direction's ordered rule list, [`Classifier::classify`]
//! returns the index of the first matching rule, exactly what the linear
//! scan [`crate::eval::first_match_index`] (the oracle) returns, in a time
//! that hardly grows with the number of rules. `explain`, `check`, `diff`,
//! `reach` and replay can use it wherever they evaluate many packets.
//!
//! # Structure
//!
//! The header space is (protocol, family and address, port), and the
//! classifier cuts it in that order:
//!
//! 1. **Protocol classes.** A 256-entry table maps the protocol number to a
//!    class. Every protocol some rule names has its own class; the protocols
//!    no rule names share one class if they carry no ports and one if they
//!    do (TCP or UDP, when no rule names them), since only `ALL` rules can
//!    match them and they all see the same ports.
//! 2. **Address intervals.** Per class and family, the address axis is cut
//!    at every rule range's ends into elementary intervals. On each one the
//!    set of candidate rules is constant, and so is the answer as a function
//!    of the port; adjacent intervals with the same answer are merged. The
//!    interval starts are stored as a static B-tree of 16-key nodes (each
//!    level holds every 16th key of the one below), so a lookup reads one
//!    64-byte node per level: 4 levels for 65,536 IPv4 intervals.
//! 3. **Port maps.** Each interval holds a leaf: either the answer itself
//!    (when it does not depend on the port: every class without ports, and
//!    port maps with one piece), or the index of a port map, a sorted list of
//!    (first port, rule) pieces searched by counting. Port maps are
//!    interned: equal maps are stored once.
//!
//! The build sweeps each class's address axis once, keeping the candidate
//! rules (those with a range covering the current interval) in priority
//! order; the answer on an interval paints the ports with the candidates in
//! order and stops as soon as every port is decided, so rules shadowed on
//! an interval cost nothing there.
//!
//! # Cost
//!
//! Lookup: one table read, `ceil(log16(intervals))` node scans (16
//! comparisons each, branch-free: the keys at or below the address are a
//! prefix of the node, counted by one vector compare and a bit scan) and,
//! for TCP and UDP, a scan of a port map that is usually a handful of
//! pieces: independent of the rule count except through the logarithm.
//! [`Classifier::classify_batch`] walks [`LANES`] IPv4 packets down the
//! tree level by level in lockstep (every class's IPv4 tree is padded to
//! the same depth with single-node levels), so their memory reads overlap;
//! on the ClassBench sets it is about 1.5x faster than one by one (numbers
//! in `BENCHMARKS.md`, "Classifier"). Memory: about 4.3 bytes (IPv4) or 16.3
//! bytes (IPv6) plus a 4-byte leaf per interval, per class, plus the port
//! maps (6 bytes a piece); [`Classifier::memory_bytes`] reports it. Build:
//! O(E log E + sum over intervals of the candidates looked at), where E is
//! the number of range ends; the candidates looked at stop at the first
//! rule that covers all remaining ports.
//!
//! The classifier answers as the oracle does in every corner: an IPv4 peer
//! never matches an IPv6 range, ports count only for TCP and UDP, a TCP or
//! UDP packet without a port is port 0, a rule with no peers or no services
//! matches nothing. The property tests below hold it to the linear scan on
//! random and boundary packets.

use crate::eval::Packet;
use crate::resolve::{ProtocolMatch, ResolvedRule, RuleOrigin, ServiceMatch};
use crate::space::PacketSet;
use palisade_model::{Action, Family, Peer, PortRange};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// A first-match classifier over one direction's rule list; see the
/// module documentation for its structure and cost.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Protocol number -> index into `classes`.
    proto_class: [u16; 256],
    classes: Vec<ClassTables>,
    ports: PortMaps,
    rules: usize,
}

/// Numbers describing a built classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassifierStats {
    /// The rules it was built from.
    pub rules: usize,
    /// Protocol classes (protocols named by some rule, plus the rest).
    pub protocol_classes: usize,
    /// Address intervals over all classes, IPv4.
    pub v4_intervals: usize,
    /// Address intervals over all classes, IPv6.
    pub v6_intervals: usize,
    /// Distinct port maps.
    pub port_maps: usize,
    /// Pieces over all port maps.
    pub port_pieces: usize,
    /// Heap bytes held, as [`Classifier::memory_bytes`].
    pub memory_bytes: usize,
}

impl Classifier {
    /// Builds the classifier for `rules` (one direction's list, highest
    /// priority first).
    pub fn build(rules: &[ResolvedRule]) -> Classifier {
        let (proto_class, reps) = protocol_classes(rules);
        let mut ports = PortMaps::default();
        let mut interned: HashMap<Vec<(u16, u32)>, u32> = HashMap::new();
        let mut classes = Vec::with_capacity(reps.len());
        for &p in &reps {
            // Each rule's ports for this class, `None` when it does not match it.
            let rule_ports: Vec<Option<Vec<(u16, u16)>>> =
                rules.iter().map(|r| ports_for(r, p)).collect();
            let mut leaf_of = |map| ports.leaf_of(map, &mut interned);
            let v4 = sweep_family::<u32>(rules, &rule_ports, Family::V4, &mut leaf_of);
            let v6 = sweep_family::<u128>(rules, &rule_ports, Family::V6, &mut leaf_of);
            let tables = ClassTables {
                v4: AddrIndex::new(&v4),
                v6: AddrIndex::new(&v6),
            };
            classes.push(tables);
        }
        // Every IPv4 tree gets the same depth, so a batch walks its lanes
        // level by level in lockstep (see `classify_batch`).
        let depth = classes
            .iter()
            .map(|c| c.v4.offsets.len())
            .max()
            .unwrap_or(1);
        for c in &mut classes {
            c.v4.deepen(depth);
        }
        Classifier {
            proto_class,
            classes,
            ports,
            rules: rules.len(),
        }
    }

    /// A classifier that answers `Some(_)` exactly for the packets of
    /// `set` (the index of the box of [`PacketSet::boxes`] holding it), so
    /// that membership in an exact set is tested at classifier speed: how
    /// replay finds the few recorded flows a change can affect.
    /// `origin` is written on its rules (they are not shown to anyone).
    pub fn of_set(set: &PacketSet, origin: &RuleOrigin) -> Classifier {
        let rules: Vec<ResolvedRule> = set
            .boxes()
            .into_iter()
            .map(|b| {
                let services = (b.protocol_lo..=b.protocol_hi)
                    .map(|p| ServiceMatch {
                        protocol: ProtocolMatch::Number(p),
                        ports: vec![b.ports],
                    })
                    .collect();
                ResolvedRule::from_sets(
                    origin.clone(),
                    Action::Accept,
                    services,
                    vec![b.peers],
                    Peer::SecurityGroup(origin.security_group_id.clone()),
                )
            })
            .collect();
        Classifier::build(&rules)
    }

    /// The index of the first rule matching `packet` (its direction is not
    /// looked at), as [`crate::eval::first_match_index`] would say.
    #[inline]
    pub fn classify(&self, packet: &Packet) -> Option<usize> {
        self.lookup(packet.protocol, packet.peer, packet.port)
    }

    /// The index of the first rule matching the packet (protocol, peer,
    /// port); the port counts for TCP and UDP only, a missing one as 0.
    #[inline]
    pub fn lookup(&self, protocol: u8, peer: IpAddr, port: Option<u16>) -> Option<usize> {
        let class = self
            .classes
            .get(usize::from(self.proto_class[usize::from(protocol)]))?;
        let leaf = match peer {
            IpAddr::V4(a) => class.v4.find(u32::from(a)),
            IpAddr::V6(a) => class.v6.find(u128::from(a)),
        };
        let port = if crate::has_ports(protocol) {
            port.unwrap_or(0)
        } else {
            0
        };
        self.ports.resolve(leaf, port)
    }

    /// Classifies `packets` into `out` (as many as the shorter of the two
    /// holds), as [`Classifier::classify`] would one by one. IPv4 packets
    /// are looked up [`LANES`] at a time, level by level, so that the
    /// memory reads of different packets overlap instead of waiting for
    /// each other: the way batch classifiers (DPDK's `rte_acl_classify`)
    /// are used and measured.
    pub fn classify_batch(&self, packets: &[Packet], out: &mut [Option<usize>]) {
        for (ps, os) in packets.chunks(LANES).zip(out.chunks_mut(LANES)) {
            self.batch(ps, os);
        }
    }

    /// One batch of at most [`LANES`] packets.
    #[inline]
    fn batch(&self, ps: &[Packet], out: &mut [Option<usize>]) {
        let mut lanes: [Option<(&AddrIndex<u32>, u32)>; LANES] = [None; LANES];
        let mut pos = [0usize; LANES];
        for ((lane, p), o) in lanes.iter_mut().zip(ps).zip(out.iter_mut()) {
            let class = self
                .classes
                .get(usize::from(self.proto_class[usize::from(p.protocol)]));
            match (p.peer, class) {
                (IpAddr::V4(a), Some(c)) if u32::from(a) != u32::MAX => {
                    *lane = Some((&c.v4, u32::from(a)));
                }
                _ => *o = self.classify(p),
            }
        }
        let depth = self.classes.first().map_or(0, |c| c.v4.offsets.len());
        for d in 0..depth {
            for (lane, pos) in lanes.iter().zip(pos.iter_mut()) {
                if let Some((index, x)) = lane {
                    *pos = index.step(d, *pos, *x);
                }
            }
        }
        for (((lane, pos), p), o) in lanes.iter().zip(&pos).zip(ps).zip(out.iter_mut()) {
            if let Some((index, _)) = lane {
                let leaf = index.leaves.get(*pos).copied().unwrap_or(NO_MATCH);
                let port = if crate::has_ports(p.protocol) {
                    p.port.unwrap_or(0)
                } else {
                    0
                };
                *o = self.ports.resolve(leaf, port);
            }
        }
    }

    /// The number of rules it was built from.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Heap bytes held by the lookup structures (allocated capacity).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Classifier>()
            + self.classes.capacity() * std::mem::size_of::<ClassTables>()
            + self
                .classes
                .iter()
                .map(|c| c.v4.memory_bytes() + c.v6.memory_bytes())
                .sum::<usize>()
            + self.ports.memory_bytes()
    }

    /// Sizes of the structure.
    pub fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            rules: self.rules,
            protocol_classes: self.classes.len(),
            v4_intervals: self.classes.iter().map(|c| c.v4.leaves.len()).sum(),
            v6_intervals: self.classes.iter().map(|c| c.v6.leaves.len()).sum(),
            port_maps: self.ports.spans.len(),
            port_pieces: self.ports.starts.len(),
            memory_bytes: self.memory_bytes(),
        }
    }
}

/// A leaf with this bit set holds the answer itself in the other bits;
/// otherwise it is the index of a port map.
const DIRECT: u32 = 1 << 31;
/// The answer "no rule matches".
const NO_MATCH: u32 = DIRECT - 1;
/// Packets a batch looks up side by side (see [`Classifier::classify_batch`]).
pub const LANES: usize = 16;
/// Port maps longer than this are binary-searched instead of counted.
const PORT_SCAN_MAX: usize = 16;
/// Keys per node of the address B-tree (64 bytes of IPv4 keys).
const NODE: usize = 16;

/// The tables of one protocol class.
#[derive(Debug, Clone, Default)]
struct ClassTables {
    v4: AddrIndex<u32>,
    v6: AddrIndex<u128>,
}

/// An address axis cut into intervals, each holding a leaf, searched as a
/// static B-tree stored level by level in `keys`: the bottom level holds
/// the interval starts (the first is 0), each level above holds every
/// `NODE`-th key of the one below, up to a level that fits in one node.
/// Every level is padded with `MAX` to whole nodes; `offsets` says where
/// each level starts, top first.
#[derive(Debug, Clone)]
struct AddrIndex<K> {
    keys: Vec<K>,
    offsets: Vec<usize>,
    leaves: Vec<u32>,
    /// Levels added on top by `deepen`, which a lone lookup skips.
    padding: usize,
}

impl<K: AddrKey> Default for AddrIndex<K> {
    fn default() -> Self {
        AddrIndex::new(&[(K::ZERO, NO_MATCH)])
    }
}

impl<K: AddrKey> AddrIndex<K> {
    /// From intervals `(start, leaf)` sorted by start, the first at 0.
    fn new(intervals: &[(K, u32)]) -> AddrIndex<K> {
        let mut leaves: Vec<u32> = intervals.iter().map(|&(_, l)| l).collect();
        let mut level: Vec<K> = intervals.iter().map(|&(k, _)| k).collect();
        if level.is_empty() {
            level.push(K::ZERO);
            leaves.push(NO_MATCH);
        }
        let mut levels = Vec::new();
        loop {
            let above: Vec<K> = level.iter().step_by(NODE).copied().collect();
            let done = level.len() <= NODE;
            let padded = level.len().div_ceil(NODE) * NODE;
            level.resize(padded, K::MAX);
            levels.push(level);
            if done {
                break;
            }
            level = above;
        }
        let mut keys = Vec::with_capacity(levels.iter().map(Vec::len).sum());
        let mut offsets = Vec::with_capacity(levels.len());
        for l in levels.iter().rev() {
            offsets.push(keys.len());
            keys.extend_from_slice(l);
        }
        AddrIndex {
            keys,
            offsets,
            leaves,
            padding: 0,
        }
    }

    /// The leaf of the interval holding `x`.
    #[inline]
    fn find(&self, x: K) -> u32 {
        if x == K::MAX {
            // The last interval; below MAX, padding keys never count.
            return self.leaves.last().copied().unwrap_or(NO_MATCH);
        }
        // At every level, `pos` is the index of the last key <= x (the
        // first key of every level is 0 <= x); its children are the node
        // at `pos * NODE` of the level below.
        let mut pos = 0usize;
        for d in self.padding..self.offsets.len() {
            pos = self.step(d, pos, x);
        }
        self.leaves.get(pos).copied().unwrap_or(NO_MATCH)
    }

    /// One level of the search for `x < MAX`: from the position `pos` at
    /// level `d - 1` (0 above the top) to the position at level `d`.
    #[inline]
    fn step(&self, d: usize, pos: usize, x: K) -> usize {
        let base = self.offsets.get(d).copied().unwrap_or(0) + pos * NODE;
        let Some(node) = self
            .keys
            .get(base..base + NODE)
            .and_then(|n| <&[K; NODE]>::try_from(n).ok())
        else {
            return 0;
        };
        // Keys are sorted, so the keys <= x are a prefix of the node: the
        // count is the number of trailing ones of the comparison mask
        // (which compiles to one vector compare and a bit scan).
        let mut mask = 0u32;
        for (i, &k) in node.iter().enumerate() {
            mask |= u32::from(k <= x) << i;
        }
        let count = (!mask).trailing_zeros() as usize;
        pos * NODE + count.saturating_sub(1)
    }

    /// Adds single-node levels on top until the tree is `depth` levels
    /// deep; each holds the key 0 and padding, so it leads to node 0.
    fn deepen(&mut self, depth: usize) {
        let extra = depth.saturating_sub(self.offsets.len());
        if extra == 0 {
            return;
        }
        let mut keys = Vec::with_capacity(extra * NODE + self.keys.len());
        for _ in 0..extra {
            keys.push(K::ZERO);
            keys.resize(keys.len() + NODE - 1, K::MAX);
        }
        let shift = extra * NODE;
        keys.extend_from_slice(&self.keys);
        let offsets = (0..extra)
            .map(|i| i * NODE)
            .chain(self.offsets.iter().map(|o| o + shift))
            .collect();
        self.keys = keys;
        self.offsets = offsets;
        self.padding += extra;
    }

    fn memory_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<K>()
            + self.offsets.capacity() * std::mem::size_of::<usize>()
            + self.leaves.capacity() * 4
    }
}

/// An address as a search key.
trait AddrKey: Copy + Ord + std::fmt::Debug {
    const ZERO: Self;
    const MAX: Self;
    /// The key of `n`, an address of the key's family.
    fn of(n: u128) -> Self;
}

impl AddrKey for u32 {
    const ZERO: Self = 0;
    const MAX: Self = u32::MAX;
    fn of(n: u128) -> Self {
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

impl AddrKey for u128 {
    const ZERO: Self = 0;
    const MAX: Self = u128::MAX;
    fn of(n: u128) -> Self {
        n
    }
}

/// Interned port maps: map `i` is the pieces `spans[i]` of `starts` (first
/// port of each piece, sorted, the first 0) and `answers` (the rule, or
/// [`NO_MATCH`]).
#[derive(Debug, Clone, Default)]
struct PortMaps {
    spans: Vec<(u32, u32)>,
    starts: Vec<u16>,
    answers: Vec<u32>,
}

impl PortMaps {
    /// The leaf for a port map given as sorted pieces `(first port, answer)`.
    fn leaf_of(
        &mut self,
        map: Vec<(u16, u32)>,
        interned: &mut HashMap<Vec<(u16, u32)>, u32>,
    ) -> u32 {
        if let [(_, answer)] = map.as_slice() {
            return DIRECT | answer;
        }
        if let Some(&id) = interned.get(&map) {
            return id;
        }
        // Port maps are at most 65,536 pieces and fewer than 2^31 maps
        // exist before memory runs out, so these conversions hold.
        let id = u32::try_from(self.spans.len()).unwrap_or(NO_MATCH);
        let off = u32::try_from(self.starts.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(map.len()).unwrap_or(0);
        self.spans.push((off, len));
        for &(s, a) in &map {
            self.starts.push(s);
            self.answers.push(a);
        }
        interned.insert(map, id);
        id
    }

    /// The answer of `leaf` at `port`.
    #[inline]
    fn resolve(&self, leaf: u32, port: u16) -> Option<usize> {
        let answer = if leaf & DIRECT != 0 {
            leaf & !DIRECT
        } else {
            let &(off, len) = self.spans.get(leaf as usize)?;
            let (off, len) = (off as usize, len as usize);
            let starts = self.starts.get(off..off + len)?;
            let i = if len <= PORT_SCAN_MAX {
                starts.iter().filter(|&&s| s <= port).count()
            } else {
                starts.partition_point(|&s| s <= port)
            };
            *self.answers.get(off + i.saturating_sub(1))?
        };
        (answer != NO_MATCH).then_some(answer as usize)
    }

    fn memory_bytes(&self) -> usize {
        self.spans.capacity() * 8 + self.starts.capacity() * 2 + self.answers.capacity() * 4
    }
}

/// The protocol table and one representative protocol per class.
fn protocol_classes(rules: &[ResolvedRule]) -> ([u16; 256], Vec<u8>) {
    let mut named = [false; 256];
    for r in rules {
        for s in r.services() {
            if let ProtocolMatch::Number(n) = s.protocol {
                named[usize::from(n)] = true;
            }
        }
    }
    let mut table = [0u16; 256];
    let mut reps: Vec<u8> = Vec::new();
    // Index of the shared class of unnamed protocols without / with ports.
    let mut shared: [Option<u16>; 2] = [None, None];
    for p in 0..=u8::MAX {
        let class = if named[usize::from(p)] {
            None
        } else {
            shared[usize::from(crate::has_ports(p))]
        };
        let class = class.unwrap_or_else(|| {
            // At most 256 classes: the index fits in u16.
            let c = reps.len() as u16;
            reps.push(p);
            if !named[usize::from(p)] {
                shared[usize::from(crate::has_ports(p))] = Some(c);
            }
            c
        });
        table[usize::from(p)] = class;
    }
    (table, reps)
}

/// The ports on which `rule` matches packets of protocol `p`, merged and
/// sorted; every port for a protocol without ports; `None` when it matches
/// no packet of `p`.
fn ports_for(rule: &ResolvedRule, p: u8) -> Option<Vec<(u16, u16)>> {
    let mut any = false;
    let mut ranges: Vec<PortRange> = Vec::new();
    for s in rule.services() {
        if s.protocol.matches(p) {
            any = true;
            ranges.extend_from_slice(&s.ports);
        }
    }
    if !any {
        return None;
    }
    if !crate::has_ports(p) {
        return Some(vec![(0, u16::MAX)]);
    }
    let merged: Vec<(u16, u16)> = palisade_model::proto::merge_ranges(&ranges)
        .into_iter()
        .map(|r| (r.lo(), r.hi()))
        .collect();
    (!merged.is_empty()).then_some(merged)
}

/// Sweeps the address axis of `family` for one class: returns the
/// intervals `(start, leaf)`, the first at 0, adjacent ones with equal
/// leaves merged. `leaf_of` turns a port map into a leaf.
fn sweep_family<K: AddrKey>(
    rules: &[ResolvedRule],
    rule_ports: &[Option<Vec<(u16, u16)>>],
    family: Family,
    leaf_of: &mut dyn FnMut(Vec<(u16, u32)>) -> u32,
) -> Vec<(K, u32)> {
    // (position, rule, entering?): a rule enters at each range's start and
    // leaves after its end. A rule's ranges are disjoint and not adjacent
    // (merged), so it is never entered twice.
    let mut events: Vec<(u128, u32, bool)> = Vec::new();
    for (i, (r, ports)) in rules.iter().zip(rule_ports).enumerate() {
        if ports.is_none() {
            continue;
        }
        // Fewer than 2^31 rules (see `NO_MATCH`).
        let i = u32::try_from(i).unwrap_or(NO_MATCH);
        for range in r.peers().iter().filter(|a| a.family() == family) {
            events.push((range.lo(), i, true));
            if range.hi() < family.max() {
                events.push((range.hi() + 1, i, false));
            }
        }
    }
    events.sort_unstable();
    let mut out: Vec<(K, u32)> = Vec::new();
    let mut active: BTreeSet<u32> = BTreeSet::new();
    let push = |out: &mut Vec<(K, u32)>, at: u128, leaf: u32| {
        if out.last().is_some_and(|&(_, l)| l == leaf) {
            return;
        }
        out.push((K::of(at), leaf));
    };
    if !matches!(events.first(), Some(e) if e.0 == 0) {
        push(&mut out, 0, DIRECT | NO_MATCH);
    }
    let mut k = 0;
    while let Some(&(at, _, _)) = events.get(k) {
        while let Some(&(pos, rule, enter)) = events.get(k) {
            if pos != at {
                break;
            }
            if enter {
                active.insert(rule);
            } else {
                active.remove(&rule);
            }
            k += 1;
        }
        let map = paint_ports(active.iter().filter_map(|&i| {
            let ports = rule_ports.get(i as usize)?.as_deref()?;
            Some((i, ports))
        }));
        let leaf = leaf_of(map);
        push(&mut out, at, leaf);
    }
    out
}

/// The port map of candidates given in priority order: each port goes to
/// the first candidate whose ports hold it. Returns sorted pieces
/// `(first port, answer)` covering 0-65535, equal neighbours merged.
fn paint_ports<'a>(candidates: impl Iterator<Item = (u32, &'a [(u16, u16)])>) -> Vec<(u16, u32)> {
    // Ports no candidate has taken yet, sorted, as inclusive u32 bounds.
    let mut open: Vec<(u32, u32)> = vec![(0, u32::from(u16::MAX))];
    let mut pieces: Vec<(u32, u32, u32)> = Vec::new();
    for (rule, ports) in candidates {
        if open.is_empty() {
            break;
        }
        // Each of the candidate's (sorted, disjoint) ranges takes the open
        // segments it meets, found by binary search, so a candidate costs
        // what it takes, not the length of `open`.
        for &(plo, phi) in ports {
            let (plo, phi) = (u32::from(plo), u32::from(phi));
            let start = open.partition_point(|&(_, hi)| hi < plo);
            let end = open.partition_point(|&(lo, _)| lo <= phi).max(start);
            if start == end {
                continue;
            }
            let mut rest: Vec<(u32, u32)> = Vec::with_capacity(2);
            for &(olo, ohi) in open.get(start..end).unwrap_or(&[]) {
                let (a, b) = (olo.max(plo), ohi.min(phi));
                if olo < a {
                    rest.push((olo, a - 1));
                }
                pieces.push((a, b, rule));
                if b < ohi {
                    rest.push((b + 1, ohi));
                }
            }
            open.splice(start..end, rest);
        }
    }
    for (lo, hi) in open {
        pieces.push((lo, hi, NO_MATCH));
    }
    pieces.sort_unstable();
    let mut map: Vec<(u16, u32)> = Vec::with_capacity(pieces.len());
    for (lo, _, answer) in pieces {
        if map.last().is_some_and(|&(_, a)| a == answer) {
            continue;
        }
        // Pieces lie within 0-65535.
        map.push((u16::try_from(lo).unwrap_or(u16::MAX), answer));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::first_match_index;
    use crate::fixtures::{boundary_packets, packet, rule, rules};
    use palisade_model::{AddrRange, Direction};
    use proptest::prelude::*;

    fn agree(rules: &[ResolvedRule], c: &Classifier, p: &Packet) -> Result<(), TestCaseError> {
        prop_assert_eq!(c.classify(p), first_match_index(rules, p), "{}", p);
        Ok(())
    }

    proptest! {
        #![proptest_config(crate::fixtures::cases(256))]

        #[test]
        fn agrees_with_the_linear_scan_on_random_packets(
            rules in rules(24),
            ps in prop::collection::vec(packet(), 300),
        ) {
            let c = Classifier::build(&rules);
            prop_assert_eq!(c.rules(), rules.len());
            for p in &ps {
                agree(&rules, &c, p)?;
            }
            // The batch gives the same answers, whatever the batch length.
            let one: Vec<Option<usize>> = ps.iter().map(|p| c.classify(p)).collect();
            let mut many = vec![Some(usize::MAX); ps.len()];
            c.classify_batch(&ps, &mut many);
            prop_assert_eq!(&many, &one);
            let cut = ps.len() / 3;
            let mut some = vec![Some(usize::MAX); cut];
            c.classify_batch(&ps, &mut some);
            prop_assert_eq!(&some[..], &one[..cut]);
        }

        #[test]
        fn agrees_with_the_linear_scan_on_boundary_packets(rules in rules(10)) {
            let c = Classifier::build(&rules);
            let ps = boundary_packets(&rules);
            for p in &ps {
                agree(&rules, &c, p)?;
            }
            let mut many = vec![None; ps.len()];
            c.classify_batch(&ps, &mut many);
            for (p, got) in ps.iter().zip(&many) {
                prop_assert_eq!(*got, first_match_index(&rules, p), "{}", p);
            }
        }

        #[test]
        fn agrees_on_any_packet_at_all(
            rules in rules(12),
            ps in prop::collection::vec(
                (any::<u8>(), any::<bool>(), any::<u128>(), any::<Option<u16>>()), 200),
        ) {
            let c = Classifier::build(&rules);
            for (protocol, v6, n, port) in ps {
                let family = if v6 { Family::V6 } else { Family::V4 };
                let p = Packet {
                    direction: Direction::Egress,
                    protocol,
                    peer: palisade_model::addr::u128_to_ip(family, n & family.max()),
                    port,
                };
                agree(&rules, &c, &p)?;
            }
        }

        #[test]
        fn a_set_classifier_answers_membership(
            rules in rules(12),
            ps in prop::collection::vec(packet(), 200),
        ) {
            let set = crate::decide::accepted(&rules);
            let origin = RuleOrigin {
                security_group_id: "sg-00000000".parse().unwrap(),
                direction: Direction::Ingress,
                policy_index: 0,
            };
            let c = Classifier::of_set(&set, &origin);
            for p in ps.iter().chain(&boundary_packets(&rules)) {
                prop_assert_eq!(c.classify(p).is_some(), set.contains(p), "{}", p);
            }
        }

        #[test]
        fn the_b_tree_finds_the_last_start_at_or_below(
            mut starts in prop::collection::btree_set(any::<u32>(), 0..2000),
            probes in prop::collection::vec(any::<u32>(), 100),
        ) {
            starts.insert(0);
            let intervals: Vec<(u32, u32)> =
                starts.iter().enumerate().map(|(i, &s)| (s, i as u32)).collect();
            let idx = AddrIndex::new(&intervals);
            let keys: Vec<u32> = starts.iter().copied().collect();
            for x in probes.into_iter().chain([0, u32::MAX]).chain(keys.iter().copied()) {
                let expect = keys.partition_point(|&k| k <= x) - 1;
                prop_assert_eq!(idx.find(x), expect as u32);
            }
        }
    }

    fn svc(protocol: ProtocolMatch, ports: &[(u16, u16)]) -> ServiceMatch {
        ServiceMatch {
            protocol,
            ports: ports
                .iter()
                .map(|&(a, b)| PortRange::new(a, b).unwrap())
                .collect(),
        }
    }

    fn v4(lo: &str, hi: &str) -> AddrRange {
        let ip = |s: &str| u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()));
        AddrRange::new(Family::V4, ip(lo), ip(hi)).unwrap()
    }

    #[test]
    fn corners_of_the_rule_model() {
        use ProtocolMatch::{All, Number};
        let rules = vec![
            // ALL with no ports: matches every portless protocol, no TCP/UDP.
            rule(
                0,
                Action::Drop,
                vec![svc(All, &[])],
                vec![v4("10.0.0.0", "10.0.0.255")],
            ),
            // Several services, several peers of both families.
            rule(
                1,
                Action::Accept,
                vec![
                    svc(Number(6), &[(22, 22)]),
                    svc(All, &[(80, 80)]),
                    svc(Number(1), &[]),
                ],
                vec![
                    v4("10.0.0.0", "10.255.255.255"),
                    AddrRange::everything(Family::V6),
                    v4("255.255.255.255", "255.255.255.255"),
                ],
            ),
            // No peers, no services: matches nothing.
            rule(2, Action::Accept, vec![svc(All, &[(0, 65535)])], vec![]),
            rule(
                3,
                Action::Accept,
                vec![],
                vec![AddrRange::everything(Family::V4)],
            ),
            rule(
                4,
                Action::Accept,
                vec![svc(Number(17), &[(0, 0), (65535, 65535)])],
                vec![AddrRange::everything(Family::V4)],
            ),
        ];
        let c = Classifier::build(&rules);
        let ask = |proto: u8, peer: &str, port: Option<u16>| {
            let p = crate::fixtures::pkt(Direction::Ingress, proto, peer, port);
            let got = c.classify(&p);
            assert_eq!(got, first_match_index(&rules, &p), "{p}");
            got
        };
        assert_eq!(ask(1, "10.0.0.7", Some(5)), Some(0));
        assert_eq!(ask(47, "10.0.0.7", None), Some(0));
        assert_eq!(ask(6, "10.0.0.7", Some(22)), Some(1));
        assert_eq!(ask(6, "10.0.0.7", Some(23)), None);
        assert_eq!(ask(17, "10.0.0.7", Some(80)), Some(1));
        assert_eq!(ask(1, "10.1.0.7", None), Some(1));
        assert_eq!(ask(47, "10.1.0.7", None), Some(1));
        assert_eq!(ask(47, "11.0.0.1", None), None);
        assert_eq!(ask(6, "::1", Some(80)), Some(1));
        assert_eq!(ask(6, "255.255.255.255", Some(22)), Some(1));
        assert_eq!(ask(17, "1.2.3.4", None), Some(4));
        assert_eq!(ask(17, "1.2.3.4", Some(65535)), Some(4));
        assert_eq!(ask(17, "1.2.3.4", Some(1)), None);
        assert_eq!(ask(6, "::ffff:10.0.0.1", Some(22)), Some(1));
        let s = c.stats();
        assert!(s.memory_bytes > 0 && s.protocol_classes == 4, "{s:?}");
        // An empty list matches nothing.
        let empty = Classifier::build(&[]);
        assert_eq!(empty.lookup(6, "10.0.0.1".parse().unwrap(), Some(1)), None);
        assert_eq!(empty.lookup(0, "::".parse().unwrap(), None), None);
    }

    #[test]
    fn paints_ports_in_priority_order() {
        let a: &[(u16, u16)] = &[(10, 20), (30, 40)];
        let b: &[(u16, u16)] = &[(0, 15), (35, 65535)];
        let map = paint_ports([(0u32, a), (1u32, b)].into_iter());
        assert_eq!(map, vec![(0, 1), (10, 0), (21, NO_MATCH), (30, 0), (41, 1)]);
        assert_eq!(paint_ports(std::iter::empty()), vec![(0, NO_MATCH)]);
    }
}
