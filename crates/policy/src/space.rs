//! Header-space algebra (DESIGN.md section 2, used by sections 3 and 7 and
//! by the analysis of `check`, `diff` and `reach`): exact sets of packets
//! over (protocol 0-255, address family and address, port 0-65535), with
//! union, intersection, difference, complement, emptiness, membership, a
//! witness packet, and equality as sets.
//!
//! The port only exists for TCP (6) and UDP (17). For every other protocol
//! a set always spans all ports, so a packet of such a protocol is in a set
//! whatever port it carries, exactly as first-match evaluation ignores it.
//!
//! Representation: a nested, canonical interval map. The protocol axis is
//! split into sorted, disjoint runs, each holding one address set per
//! family; each address axis is split into runs each holding a port set; a
//! port set is a list of sorted, disjoint port ranges. Adjacent runs with
//! equal contents are always merged and empty contents are never stored, so
//! two sets are equal exactly when their representations are (derived
//! `PartialEq` is set equality), and the leaves are disjoint boxes.
//! Operations sweep sorted runs and jump by binary search over the parts
//! of the larger operand that the smaller one does not meet; `union_with`
//! moves the untouched runs of the left operand instead of copying them.

use crate::eval::Packet;
use palisade_model::addr::{ip_to_u128, u128_to_ip};
use palisade_model::{AddrRange, Direction, Family, PortRange};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::ops::Range;

/// A set of packets of one direction (the direction is not part of the set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PacketSet {
    protos: Level<u8, FamilySet>,
}

/// One box of a set: protocols `protocol_lo..=protocol_hi`, the addresses
/// `peers` (one family), the ports `ports`. For protocols other than TCP and
/// UDP the ports are always 0-65535.
///
/// JSON: `{"protocols": [6, 6], "peers": "10.0.0.0/8", "ports": [80, 90]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "BoxRepr", into = "BoxRepr")]
pub struct PacketBox {
    /// First protocol number.
    pub protocol_lo: u8,
    /// Last protocol number.
    pub protocol_hi: u8,
    /// The peer addresses.
    pub peers: AddrRange,
    /// The ports.
    pub ports: PortRange,
}

impl PacketSet {
    /// The empty set.
    pub fn empty() -> PacketSet {
        PacketSet::default()
    }

    /// Every packet of both families.
    pub fn everything() -> PacketSet {
        let mut s = PacketSet::from_box(&PacketBox {
            protocol_lo: 0,
            protocol_hi: u8::MAX,
            peers: AddrRange::everything(Family::V4),
            ports: crate::all_ports(),
        });
        s.union_with(&PacketSet::from_box(&PacketBox {
            protocol_lo: 0,
            protocol_hi: u8::MAX,
            peers: AddrRange::everything(Family::V6),
            ports: crate::all_ports(),
        }));
        s
    }

    /// The packets of a box; the ports are widened to all ports for the
    /// protocols other than TCP and UDP, and an inverted protocol range is empty.
    pub fn from_box(b: &PacketBox) -> PacketSet {
        let ports = PortSet::single(b.ports.lo(), b.ports.hi());
        let mut protos = ProtoPorts::default();
        protos.add(b.protocol_lo, b.protocol_hi, &ports);
        PacketSet::product(&protos, &[b.peers])
    }

    /// The packets of a protocol-and-port set times a list of address ranges.
    fn product(protos: &ProtoPorts, peers: &[AddrRange]) -> PacketSet {
        let mut v4: Vec<(u128, u128)> = Vec::new();
        let mut v6: Vec<(u128, u128)> = Vec::new();
        for r in crate::resolve::merge_addr_ranges(peers.to_vec()) {
            match r.family() {
                Family::V4 => v4.push((r.lo(), r.hi())),
                Family::V6 => v6.push((r.lo(), r.hi())),
            }
        }
        let mut out = Level::default();
        for run in &protos.0.runs {
            let addrs = |list: &[(u128, u128)]| Level {
                runs: list
                    .iter()
                    .map(|&(lo, hi)| Run {
                        lo,
                        hi,
                        val: run.val.clone(),
                    })
                    .collect(),
            };
            let fam = FamilySet {
                v4: addrs(&v4),
                v6: addrs(&v6),
            };
            if !fam.is_empty() {
                push_run(&mut out.runs, run.lo, run.hi, fam);
            }
        }
        PacketSet { protos: out }
    }

    /// Whether the set holds no packet.
    pub fn is_empty(&self) -> bool {
        self.protos.runs.is_empty()
    }

    /// Whether the set holds `packet` (its direction is not looked at; its
    /// port only for TCP and UDP, a missing one counting as 0).
    pub fn contains(&self, packet: &Packet) -> bool {
        self.contains_point(packet.protocol, packet.peer, packet.port)
    }

    /// Whether the set holds the packet (protocol, peer, port); see [`PacketSet::contains`].
    pub fn contains_point(&self, protocol: u8, peer: IpAddr, port: Option<u16>) -> bool {
        let port = if crate::has_ports(protocol) {
            port.unwrap_or(0)
        } else {
            0
        };
        let Some(fam) = self.protos.get(protocol) else {
            return false;
        };
        let addrs = match peer {
            IpAddr::V4(_) => &fam.v4,
            IpAddr::V6(_) => &fam.v6,
        };
        addrs
            .get(ip_to_u128(peer))
            .is_some_and(|ports| ports.get(port).is_some())
    }

    /// The union.
    pub fn union(&self, other: &PacketSet) -> PacketSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// Adds every packet of `other` to `self`, in place.
    pub fn union_with(&mut self, other: &PacketSet) {
        self.protos.union_with(&other.protos);
    }

    /// The intersection.
    pub fn intersection(&self, other: &PacketSet) -> PacketSet {
        PacketSet {
            protos: self.protos.intersect(&other.protos).unwrap_or_default(),
        }
    }

    /// The packets of `self` that are not in `other`.
    pub fn difference(&self, other: &PacketSet) -> PacketSet {
        PacketSet {
            protos: self.protos.subtract(&other.protos).unwrap_or_default(),
        }
    }

    /// Every packet not in `self`.
    pub fn complement(&self) -> PacketSet {
        PacketSet::everything().difference(self)
    }

    /// Whether every packet of `self` is in `other`.
    pub fn is_subset(&self, other: &PacketSet) -> bool {
        self.difference(other).is_empty()
    }

    /// Whether the two sets share a packet.
    pub fn intersects(&self, other: &PacketSet) -> bool {
        !self.intersection(other).is_empty()
    }

    /// The set as disjoint boxes, sorted by protocol, family, address, port.
    pub fn boxes(&self) -> Vec<PacketBox> {
        let mut out = Vec::new();
        for p in &self.protos.runs {
            for (family, level) in [(Family::V4, &p.val.v4), (Family::V6, &p.val.v6)] {
                for a in &level.runs {
                    let Some(peers) = AddrRange::new(family, a.lo, a.hi) else {
                        continue;
                    };
                    for port in &a.val.runs {
                        if let Some(ports) = PortRange::new(port.lo, port.hi) {
                            out.push(PacketBox {
                                protocol_lo: p.lo,
                                protocol_hi: p.hi,
                                peers,
                                ports,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// How many (protocol, address, port) points of `family` the set
    /// holds, counting one port for a protocol without ports (so an ICMP
    /// rule from one address is 1, TCP to every port from it is 65,536):
    /// the "addresses x ports" size of an exposure, summed over protocols.
    /// A float, since IPv6 sets exceed any integer type (exact for IPv4).
    pub fn volume(&self, family: Family) -> f64 {
        let mut total = 0.0;
        for p in &self.protos.runs {
            let protocols = f64::from(p.hi) - f64::from(p.lo) + 1.0;
            let ported = [crate::TCP, crate::UDP]
                .iter()
                .filter(|n| (p.lo..=p.hi).contains(n))
                .count() as f64;
            let level = match family {
                Family::V4 => &p.val.v4,
                Family::V6 => &p.val.v6,
            };
            for a in &level.runs {
                let addresses = (a.hi - a.lo) as f64 + 1.0;
                let ports: f64 = a
                    .val
                    .runs
                    .iter()
                    .map(|r| f64::from(r.hi) - f64::from(r.lo) + 1.0)
                    .sum();
                total += addresses * (ported * ports + (protocols - ported));
            }
        }
        total
    }

    /// The number of boxes [`PacketSet::boxes`] would return.
    pub fn box_count(&self) -> usize {
        self.protos
            .runs
            .iter()
            .map(|p| {
                [&p.val.v4, &p.val.v6]
                    .iter()
                    .map(|l| l.runs.iter().map(|a| a.val.runs.len()).sum::<usize>())
                    .sum::<usize>()
            })
            .sum()
    }

    /// A packet of the set, in `direction`, or `None` when it is empty. It
    /// prefers TCP, then UDP, ICMP, ICMPv6, GRE, then the lowest protocol;
    /// the lowest address; the lowest port above 0 when there is one.
    pub fn witness(&self, direction: Direction) -> Option<Packet> {
        let preferred = [6u8, 17, 1, 58, 47];
        let protocol = preferred
            .iter()
            .copied()
            .find(|p| self.protos.get(*p).is_some())
            .or_else(|| self.protos.runs.first().map(|r| r.lo))?;
        let fam = self.protos.get(protocol)?;
        let (family, addrs) = if fam.v4.runs.is_empty() {
            (Family::V6, &fam.v6)
        } else {
            (Family::V4, &fam.v4)
        };
        let a = addrs.runs.first()?;
        let port = if crate::has_ports(protocol) {
            let p = a
                .val
                .runs
                .iter()
                .find(|r| r.hi >= 1)
                .map_or_else(|| a.val.runs.first().map_or(0, |r| r.lo), |r| r.lo.max(1));
            Some(p)
        } else {
            None
        };
        Some(Packet {
            direction,
            protocol,
            peer: u128_to_ip(family, a.lo),
            port,
        })
    }
}

/// JSON: the list of disjoint boxes, `[{"protocols": [6, 6], "peers": "10.0.0.0/8", "ports": [80, 80]}, ...]`;
/// any list of boxes (overlapping or not) is accepted on input.
impl Serialize for PacketSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.boxes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PacketSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<PacketBox>::deserialize(d)?.into_iter().collect())
    }
}

impl FromIterator<PacketBox> for PacketSet {
    fn from_iter<I: IntoIterator<Item = PacketBox>>(iter: I) -> Self {
        let mut s = PacketSet::empty();
        for b in iter {
            s.union_with(&PacketSet::from_box(&b));
        }
        s
    }
}

/// Protocol runs each holding a port set: the service part of a rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProtoPorts(Level<u8, PortSet>);

impl ProtoPorts {
    /// Adds protocols `lo..=hi` with `ports` (widened to every port for the
    /// protocols without ports).
    pub(crate) fn add(&mut self, lo: u8, hi: u8, ports: &PortSet) {
        if lo > hi {
            return;
        }
        // The protocol axis cut where ports start and stop counting.
        const SEGMENTS: [(u8, u8, bool); 5] = [
            (0, 5, false),
            (6, 6, true),
            (7, 16, false),
            (17, 17, true),
            (18, 255, false),
        ];
        let full = PortSet::single(0, u16::MAX);
        let mut add = Level::default();
        for (slo, shi, has_ports) in SEGMENTS {
            let (a, b) = (lo.max(slo), hi.min(shi));
            if a > b {
                continue;
            }
            let val = if has_ports { ports } else { &full };
            if !val.is_empty() {
                push_run(&mut add.runs, a, b, val.clone());
            }
        }
        self.0.union_with(&add);
    }

    /// The packets of these services from `peers`.
    pub(crate) fn times(&self, peers: &[AddrRange]) -> PacketSet {
        PacketSet::product(self, peers)
    }
}

/// A set of ports.
pub(crate) type PortSet = Level<u16, ()>;

impl PortSet {
    /// The ports `lo..=hi`.
    pub(crate) fn single(lo: u16, hi: u16) -> PortSet {
        let mut l = Level::default();
        if lo <= hi {
            l.runs.push(Run { lo, hi, val: () });
        }
        l
    }

    /// The ports of `ranges`.
    pub(crate) fn of(ranges: &[PortRange]) -> PortSet {
        let mut l = Level::default();
        for r in palisade_model::proto::merge_ranges(ranges) {
            push_run(&mut l.runs, r.lo(), r.hi(), ());
        }
        l
    }
}

/// The address sets of both families, each mapping addresses to port sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct FamilySet {
    v4: Level<u128, PortSet>,
    v6: Level<u128, PortSet>,
}

impl FamilySet {
    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl Value for FamilySet {
    fn union_with(&mut self, other: &Self) {
        self.v4.union_with(&other.v4);
        self.v6.union_with(&other.v6);
    }

    fn intersect(&self, other: &Self) -> Option<Self> {
        let s = FamilySet {
            v4: self.v4.intersect(&other.v4).unwrap_or_default(),
            v6: self.v6.intersect(&other.v6).unwrap_or_default(),
        };
        (!s.is_empty()).then_some(s)
    }

    fn subtract(&self, other: &Self) -> Option<Self> {
        let s = FamilySet {
            v4: self.v4.subtract(&other.v4).unwrap_or_default(),
            v6: self.v6.subtract(&other.v6).unwrap_or_default(),
        };
        (!s.is_empty()).then_some(s)
    }
}

/// A bound of an interval axis.
pub(crate) trait Key: Copy + Ord + std::fmt::Debug {
    /// The next value, if any.
    fn next(self) -> Option<Self>;
    /// The previous value, if any.
    fn prev(self) -> Option<Self>;
}

macro_rules! key {
    ($t:ty) => {
        impl Key for $t {
            fn next(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn prev(self) -> Option<Self> {
                self.checked_sub(1)
            }
        }
    };
}
key!(u8);
key!(u16);
key!(u128);

/// The contents of a run: a set (the nested axes), never empty when stored.
pub(crate) trait Value: Clone + Eq {
    /// `self |= other`.
    fn union_with(&mut self, other: &Self);
    /// `self & other`, `None` when empty.
    fn intersect(&self, other: &Self) -> Option<Self>;
    /// `self - other`, `None` when empty.
    fn subtract(&self, other: &Self) -> Option<Self>;
}

impl Value for () {
    fn union_with(&mut self, _: &Self) {}
    fn intersect(&self, _: &Self) -> Option<Self> {
        Some(())
    }
    fn subtract(&self, _: &Self) -> Option<Self> {
        None
    }
}

/// The keys `lo..=hi`, all mapped to `val`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Run<K, V> {
    lo: K,
    hi: K,
    val: V,
}

/// A canonical interval map: runs sorted, disjoint, never empty-valued,
/// adjacent runs never holding equal values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Level<K, V> {
    runs: Vec<Run<K, V>>,
}

impl<K, V> Default for Level<K, V> {
    fn default() -> Self {
        Level { runs: Vec::new() }
    }
}

impl<K: Key, V: Value> Level<K, V> {
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The value at `k`.
    fn get(&self, k: K) -> Option<&V> {
        let i = self.runs.partition_point(|r| r.hi < k);
        self.runs.get(i).filter(|r| r.lo <= k).map(|r| &r.val)
    }

    /// The span `first.lo..=last.hi`, if not empty.
    fn span(&self) -> Option<(K, K)> {
        Some((self.runs.first()?.lo, self.runs.last()?.hi))
    }
}

/// The indices of the runs that meet `lo..=hi`.
fn window<K: Key, V>(runs: &[Run<K, V>], lo: K, hi: K) -> Range<usize> {
    let start = runs.partition_point(|r| r.hi < lo);
    let end = runs.partition_point(|r| r.lo <= hi).max(start);
    start..end
}

/// Appends a run, merging it into the last one when adjacent and equal.
fn push_run<K: Key, V: Eq>(runs: &mut Vec<Run<K, V>>, lo: K, hi: K, val: V) {
    if let Some(last) = runs.last_mut() {
        if last.hi.next() == Some(lo) && last.val == val {
            last.hi = hi;
            return;
        }
    }
    runs.push(Run { lo, hi, val });
}

/// Cuts the keys covered by `a` or `b` (both sorted and disjoint) into
/// pieces on which each side is constant, calling `emit(lo, hi, a index,
/// b index)` for each in order. Pieces covered by one side only are left
/// out when `keep` says so, and then the sweep jumps over them by binary
/// search, so that a small operand costs little against a large one.
fn sweep<K: Key, A, B>(
    a: &[Run<K, A>],
    b: &[Run<K, B>],
    keep: Keep,
    mut emit: impl FnMut(K, K, Option<usize>, Option<usize>),
) {
    let (mut i, mut j) = (0usize, 0usize);
    // Every key below `cur` is done; `None` once the top key is done.
    let mut cur: Option<K> = a
        .first()
        .map(|r| r.lo)
        .into_iter()
        .chain(b.first().map(|r| r.lo))
        .min();
    while let Some(c) = cur {
        match (a.get(i), b.get(j)) {
            (None, None) => return,
            (Some(x), None) => {
                if !keep.a_only {
                    return;
                }
                emit(x.lo.max(c), x.hi, Some(i), None);
                i += 1;
                cur = x.hi.next();
            }
            (None, Some(y)) => {
                if !keep.b_only {
                    return;
                }
                emit(y.lo.max(c), y.hi, None, Some(j));
                j += 1;
                cur = y.hi.next();
            }
            (Some(x), Some(y)) => {
                let xs = x.lo.max(c);
                let ys = y.lo.max(c);
                if xs < ys {
                    if !keep.a_only {
                        i += a
                            .get(i..)
                            .map_or(0, |rest| rest.partition_point(|r| r.hi < ys));
                        cur = Some(ys);
                        continue;
                    }
                    // ys > xs, so ys has a predecessor.
                    let end = ys.prev().map_or(x.hi, |p| x.hi.min(p));
                    emit(xs, end, Some(i), None);
                    if end == x.hi {
                        i += 1;
                    }
                    cur = end.next();
                } else if ys < xs {
                    if !keep.b_only {
                        j += b
                            .get(j..)
                            .map_or(0, |rest| rest.partition_point(|r| r.hi < xs));
                        cur = Some(xs);
                        continue;
                    }
                    let end = xs.prev().map_or(y.hi, |p| y.hi.min(p));
                    emit(ys, end, None, Some(j));
                    if end == y.hi {
                        j += 1;
                    }
                    cur = end.next();
                } else {
                    let end = x.hi.min(y.hi);
                    emit(xs, end, Some(i), Some(j));
                    if end == x.hi {
                        i += 1;
                    }
                    if end == y.hi {
                        j += 1;
                    }
                    cur = end.next();
                }
            }
        }
    }
}

/// Which one-sided pieces a sweep must report.
#[derive(Debug, Clone, Copy)]
struct Keep {
    a_only: bool,
    b_only: bool,
}

/// Combines two run lists piecewise with `f`, merging equal neighbours.
fn merge<K: Key, V: Value>(
    a: &[Run<K, V>],
    b: &[Run<K, V>],
    keep: Keep,
    f: impl Fn(Option<&V>, Option<&V>) -> Option<V>,
) -> Vec<Run<K, V>> {
    let mut out = Vec::new();
    sweep(a, b, keep, |lo, hi, i, j| {
        let va = i.and_then(|i| a.get(i)).map(|r| &r.val);
        let vb = j.and_then(|j| b.get(j)).map(|r| &r.val);
        if let Some(v) = f(va, vb) {
            push_run(&mut out, lo, hi, v);
        }
    });
    out
}

impl<K: Key, V: Value> Value for Level<K, V> {
    fn union_with(&mut self, other: &Self) {
        if other.runs.is_empty() {
            return;
        }
        if self.runs.is_empty() {
            self.runs.clone_from(&other.runs);
            return;
        }
        // Cut `other` into clusters whose windows in `self` (the runs they
        // meet or touch) are disjoint; runs of `self` outside every window
        // are moved over untouched.
        let mut clusters: Vec<(Range<usize>, Range<usize>)> = Vec::new();
        for (k, r) in other.runs.iter().enumerate() {
            let w = window(
                &self.runs,
                r.lo.prev().unwrap_or(r.lo),
                r.hi.next().unwrap_or(r.hi),
            );
            match clusters.last_mut() {
                Some((theirs, mine)) if w.start < mine.end => {
                    theirs.end = k + 1;
                    mine.end = mine.end.max(w.end);
                }
                _ => clusters.push((k..k + 1, w)),
            }
        }
        let old = std::mem::take(&mut self.runs);
        let mut out: Vec<Run<K, V>> = Vec::with_capacity(old.len() + other.runs.len());
        let mut rest = old.into_iter();
        let mut pos = 0usize;
        for (theirs, mine) in clusters {
            let untouched = mine.start.saturating_sub(pos);
            let mut moved = rest.by_ref().take(untouched);
            if let Some(first) = moved.next() {
                push_run(&mut out, first.lo, first.hi, first.val);
            }
            out.extend(moved);
            let win: Vec<Run<K, V>> = rest.by_ref().take(mine.len()).collect();
            pos = mine.end.max(pos);
            let Some(their_runs) = other.runs.get(theirs) else {
                continue;
            };
            union_window(&mut out, win, their_runs);
        }
        if let Some(first) = rest.next() {
            push_run(&mut out, first.lo, first.hi, first.val);
        }
        out.extend(rest);
        self.runs = out;
    }

    fn intersect(&self, other: &Self) -> Option<Self> {
        let ((alo, ahi), (blo, bhi)) = (self.span()?, other.span()?);
        let a = self.runs.get(window(&self.runs, blo, bhi))?;
        let b = other.runs.get(window(&other.runs, alo, ahi))?;
        let keep = Keep {
            a_only: false,
            b_only: false,
        };
        let runs = merge(a, b, keep, |x, y| match (x, y) {
            (Some(x), Some(y)) => x.intersect(y),
            _ => None,
        });
        (!runs.is_empty()).then_some(Level { runs })
    }

    fn subtract(&self, other: &Self) -> Option<Self> {
        let (lo, hi) = self.span()?;
        let b = other
            .runs
            .get(window(&other.runs, lo, hi))
            .unwrap_or_default();
        let keep = Keep {
            a_only: true,
            b_only: false,
        };
        let runs = merge(&self.runs, b, keep, |x, y| match (x, y) {
            (Some(x), Some(y)) => x.subtract(y),
            (Some(x), None) => Some(x.clone()),
            _ => None,
        });
        (!runs.is_empty()).then_some(Level { runs })
    }
}

/// Appends to `out` the union of `mine` (runs of the left operand, taken
/// by value) and `theirs`, merging equal neighbours.
fn union_window<K: Key, V: Value>(
    out: &mut Vec<Run<K, V>>,
    mine: Vec<Run<K, V>>,
    theirs: &[Run<K, V>],
) {
    let his: Vec<K> = mine.iter().map(|r| r.hi).collect();
    let spans: Vec<Run<K, ()>> = mine
        .iter()
        .map(|r| Run {
            lo: r.lo,
            hi: r.hi,
            val: (),
        })
        .collect();
    let mut vals: Vec<Option<V>> = mine.into_iter().map(|r| Some(r.val)).collect();
    let keep = Keep {
        a_only: true,
        b_only: true,
    };
    sweep(&spans, theirs, keep, |plo, phi, i, j| {
        // The last piece of a run takes its value; earlier pieces copy it.
        let m = i.and_then(|i| {
            if his.get(i) == Some(&phi) {
                vals.get_mut(i).and_then(Option::take)
            } else {
                vals.get(i).cloned().flatten()
            }
        });
        let t = j.and_then(|j| theirs.get(j)).map(|r| &r.val);
        let v = match (m, t) {
            (Some(mut m), Some(t)) => {
                m.union_with(t);
                m
            }
            (Some(m), None) => m,
            (None, Some(t)) => t.clone(),
            (None, None) => return,
        };
        push_run(out, plo, phi, v);
    });
}

/// The JSON shape of a `PacketBox`.
#[derive(Serialize, Deserialize)]
struct BoxRepr {
    protocols: [u8; 2],
    #[serde(with = "crate::codec::addr_range")]
    peers: AddrRange,
    ports: [u16; 2],
}

impl From<PacketBox> for BoxRepr {
    fn from(b: PacketBox) -> Self {
        BoxRepr {
            protocols: [b.protocol_lo, b.protocol_hi],
            peers: b.peers,
            ports: [b.ports.lo(), b.ports.hi()],
        }
    }
}

impl TryFrom<BoxRepr> for PacketBox {
    type Error = String;

    fn try_from(r: BoxRepr) -> Result<Self, String> {
        if r.protocols[0] > r.protocols[1] {
            return Err("protocols: first above last".to_string());
        }
        let ports = PortRange::new(r.ports[0], r.ports[1])
            .ok_or_else(|| "ports: first above last".to_string())?;
        Ok(PacketBox {
            protocol_lo: r.protocols[0],
            protocol_hi: r.protocols[1],
            peers: r.peers,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{addr_range, packet, pkt, port_range};
    use proptest::prelude::*;

    #[test]
    fn volume_counts_addresses_times_ports_per_protocol() {
        let v4 = |lo: u128, hi: u128| AddrRange::new(Family::V4, lo, hi).unwrap();
        let b = |p: (u8, u8), a: AddrRange, ports: (u16, u16)| PacketBox {
            protocol_lo: p.0,
            protocol_hi: p.1,
            peers: a,
            ports: PortRange::new(ports.0, ports.1).unwrap(),
        };
        // TCP 80-81 from 4 addresses: 8; ICMP from 2: 2 (no ports).
        let s: PacketSet = [
            b((6, 6), v4(0, 3), (80, 81)),
            b((1, 1), v4(10, 11), (0, u16::MAX)),
        ]
        .into_iter()
        .collect();
        assert_eq!(s.volume(Family::V4), 10.0);
        assert_eq!(s.volume(Family::V6), 0.0);
        // Everything from one address: 2 x 65,536 ported + 254 others.
        let all: PacketSet = [b((0, 255), v4(7, 7), (0, u16::MAX))].into_iter().collect();
        assert_eq!(all.volume(Family::V4), 2.0 * 65_536.0 + 254.0);
        assert_eq!(
            PacketSet::everything().volume(Family::V4),
            4_294_967_296.0 * (2.0 * 65_536.0 + 254.0)
        );
    }
    use Direction::Ingress;

    fn bx(plo: u8, phi: u8, peers: &str, plo_port: u16, phi_port: u16) -> PacketBox {
        PacketBox {
            protocol_lo: plo,
            protocol_hi: phi,
            peers: crate::codec::parse_addr_range("t", peers).unwrap(),
            ports: PortRange::new(plo_port, phi_port).unwrap(),
        }
    }

    #[test]
    fn ports_only_count_for_tcp_and_udp() {
        // ICMP "port 80" is every ICMP packet.
        let s = PacketSet::from_box(&bx(1, 1, "10.0.0.0/8", 80, 80));
        assert!(s.contains(&pkt(Ingress, 1, "10.1.2.3", None)));
        assert!(s.contains(&pkt(Ingress, 1, "10.1.2.3", Some(9))));
        assert_eq!(s, PacketSet::from_box(&bx(1, 1, "10.0.0.0/8", 0, 65535)));
        // Protocols 0-255 with port 80: TCP and UDP only on 80, the rest whole.
        let s = PacketSet::from_box(&bx(0, 255, "10.0.0.0/8", 80, 80));
        assert!(s.contains(&pkt(Ingress, 6, "10.0.0.1", Some(80))));
        assert!(!s.contains(&pkt(Ingress, 6, "10.0.0.1", Some(81))));
        assert!(!s.contains(&pkt(Ingress, 17, "10.0.0.1", None)));
        assert!(s.contains(&pkt(Ingress, 47, "10.0.0.1", Some(81))));
        assert_eq!(s.box_count(), 5);
        let boxes = s.boxes();
        assert_eq!((boxes[1].protocol_lo, boxes[1].ports.lo()), (6, 80));
        // All ports of every protocol coalesce into one box.
        let all = PacketSet::from_box(&bx(0, 255, "0.0.0.0/0", 0, 65535));
        assert_eq!(all.box_count(), 1);
        assert_eq!(PacketSet::everything().box_count(), 2);
        assert!(PacketSet::everything().complement().is_empty());
    }

    #[test]
    fn equality_is_set_equality() {
        let halves: PacketSet = [
            bx(6, 6, "10.0.0.0-10.0.0.9", 80, 89),
            bx(6, 6, "10.0.0.10-10.0.0.19", 80, 89),
            bx(6, 6, "10.0.0.0/27", 90, 99),
            bx(6, 6, "10.0.0.5", 85, 95),
        ]
        .into_iter()
        .collect();
        let whole: PacketSet = [
            bx(6, 6, "10.0.0.0-10.0.0.19", 80, 99),
            bx(6, 6, "10.0.0.20-10.0.0.31", 90, 99),
        ]
        .into_iter()
        .collect();
        assert_eq!(halves, whole);
        assert_eq!(halves.box_count(), 2);
        let j = serde_json::to_string(&whole).unwrap();
        assert_eq!(
            j,
            r#"[{"protocols":[6,6],"peers":"10.0.0.0-10.0.0.19","ports":[80,99]},{"protocols":[6,6],"peers":"10.0.0.20-10.0.0.31","ports":[90,99]}]"#
        );
        assert_eq!(serde_json::from_str::<PacketSet>(&j).unwrap(), halves);
    }

    #[test]
    fn families_never_mix() {
        let v4 = PacketSet::from_box(&bx(6, 6, "0.0.0.0/0", 0, 65535));
        assert!(!v4.contains(&pkt(Ingress, 6, "::", Some(1))));
        assert!(!v4.contains(&pkt(Ingress, 6, "::ffff:10.0.0.1", Some(1))));
        let v6 = PacketSet::from_box(&bx(6, 6, "::/0", 0, 65535));
        assert!(v4.intersection(&v6).is_empty());
        assert_eq!(v4.union(&v6).difference(&v6), v4);
    }

    #[test]
    fn witness_is_in_the_set_and_readable() {
        let s = PacketSet::from_box(&bx(0, 255, "192.0.2.0/24", 0, 65535));
        let w = s.witness(Ingress).unwrap();
        assert_eq!(w, pkt(Ingress, 6, "192.0.2.0", Some(1)));
        let s = PacketSet::from_box(&bx(50, 50, "2001:db8::/64", 0, 0));
        assert_eq!(
            s.witness(Ingress).unwrap(),
            pkt(Ingress, 50, "2001:db8::", None)
        );
        let s = PacketSet::from_box(&bx(17, 17, "10.0.0.1", 0, 0));
        assert_eq!(s.witness(Ingress).unwrap().port, Some(0));
        assert!(PacketSet::empty().witness(Ingress).is_none());
    }

    #[test]
    fn box_json_shape() {
        let b = bx(6, 6, "10.0.0.0/8", 80, 90);
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(
            j,
            r#"{"protocols":[6,6],"peers":"10.0.0.0/8","ports":[80,90]}"#
        );
        assert_eq!(serde_json::from_str::<PacketBox>(&j).unwrap(), b);
        assert!(serde_json::from_str::<PacketBox>(
            r#"{"protocols":[7,6],"peers":"10.0.0.0/8","ports":[80,90]}"#
        )
        .is_err());
    }

    fn a_box() -> impl Strategy<Value = PacketBox> {
        (
            crate::fixtures::protocol(),
            0u8..3,
            addr_range(),
            port_range(),
        )
            .prop_map(|(p, w, peers, ports)| PacketBox {
                protocol_lo: p,
                protocol_hi: p.saturating_add(w),
                peers,
                ports,
            })
    }

    fn boxes() -> impl Strategy<Value = Vec<PacketBox>> {
        prop::collection::vec(a_box(), 0..6)
    }

    /// Brute force: is the packet in one of the boxes (ports widened for
    /// protocols without ports)?
    fn in_boxes(bs: &[PacketBox], p: &Packet) -> bool {
        bs.iter().any(|b| {
            (b.protocol_lo..=b.protocol_hi).contains(&p.protocol)
                && b.peers.contains(p.peer)
                && (!crate::has_ports(p.protocol) || b.ports.contains(p.port.unwrap_or(0)))
        })
    }

    fn set(bs: &[PacketBox]) -> PacketSet {
        bs.iter().copied().collect()
    }

    proptest! {
        #![proptest_config(crate::fixtures::cases(200))]

        #[test]
        fn membership_matches_brute_force(bs in boxes(), ps in prop::collection::vec(packet(), 40)) {
            let s = set(&bs);
            for p in &ps {
                prop_assert_eq!(s.contains(p), in_boxes(&bs, p), "{}", p);
            }
            // Box edges and their neighbours.
            for b in &bs {
                for n in [b.peers.lo().wrapping_sub(1), b.peers.lo(), b.peers.hi(), b.peers.hi().wrapping_add(1)] {
                    for proto in [b.protocol_lo, b.protocol_hi, b.protocol_lo.wrapping_sub(1), b.protocol_hi.wrapping_add(1)] {
                        for port in [b.ports.lo(), b.ports.hi(), b.ports.lo().wrapping_sub(1), b.ports.hi().wrapping_add(1)] {
                            let p = Packet {
                                direction: Ingress,
                                protocol: proto,
                                peer: u128_to_ip(b.peers.family(), n & b.peers.family().max()),
                                port: Some(port),
                            };
                            prop_assert_eq!(s.contains(&p), in_boxes(&bs, &p), "{}", p);
                        }
                    }
                }
            }
        }

        #[test]
        fn boxes_are_disjoint_and_rebuild_the_set(bs in boxes(), ps in prop::collection::vec(packet(), 20)) {
            let s = set(&bs);
            let out = s.boxes();
            prop_assert_eq!(out.len(), s.box_count());
            for (i, a) in out.iter().enumerate() {
                // Normalised: protocols without ports span every port.
                let portless = (a.protocol_lo..=a.protocol_hi).any(|p| !crate::has_ports(p));
                prop_assert!(!portless || (a.ports.lo() == 0 && a.ports.hi() == u16::MAX));
                for b in &out[i + 1..] {
                    prop_assert!(PacketSet::from_box(a).intersection(&PacketSet::from_box(b)).is_empty());
                }
            }
            let rebuilt: PacketSet = out.iter().copied().collect();
            prop_assert_eq!(&rebuilt, &s);
            // The same boxes in another order give an equal set.
            let mut rev = bs.clone();
            rev.reverse();
            prop_assert_eq!(set(&rev), s.clone());
            for p in &ps {
                prop_assert_eq!(in_boxes(&out, p), s.contains(p));
            }
            match s.witness(Ingress) {
                Some(w) => prop_assert!(s.contains(&w)),
                None => prop_assert!(s.is_empty()),
            }
        }

        #[test]
        fn set_algebra_laws(a in boxes(), b in boxes(), c in boxes(), ps in prop::collection::vec(packet(), 30)) {
            let (a, b, c) = (set(&a), set(&b), set(&c));
            let u = a.union(&b);
            let i = a.intersection(&b);
            let d = a.difference(&b);
            prop_assert_eq!(&u, &b.union(&a));
            prop_assert_eq!(&i, &b.intersection(&a));
            prop_assert_eq!(&d, &a.intersection(&b.complement()));
            prop_assert_eq!(&d.union(&i), &a);
            prop_assert!(d.intersection(&b).is_empty());
            prop_assert_eq!(&u.complement(), &a.complement().intersection(&b.complement()));
            prop_assert_eq!(&i.complement(), &a.complement().union(&b.complement()));
            prop_assert_eq!(&a.complement().complement(), &a);
            prop_assert!(a.difference(&a).is_empty());
            prop_assert_eq!(&a.union(&a), &a);
            prop_assert_eq!(&a.intersection(&a), &a);
            prop_assert_eq!(a.union(&b.intersection(&c)), u.intersection(&a.union(&c)));
            prop_assert_eq!(a.intersection(&b.union(&c)), i.union(&a.intersection(&c)));
            prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
            prop_assert!(i.is_subset(&a) && a.is_subset(&u));
            prop_assert_eq!(a.intersects(&b), !i.is_empty());
            prop_assert_eq!(a.union(&PacketSet::everything()), PacketSet::everything());
            prop_assert_eq!(a.intersection(&PacketSet::empty()), PacketSet::empty());
            let mut inplace = a.clone();
            inplace.union_with(&b);
            prop_assert_eq!(&inplace, &u);
            for p in &ps {
                prop_assert_eq!(u.contains(p), a.contains(p) || b.contains(p));
                prop_assert_eq!(i.contains(p), a.contains(p) && b.contains(p));
                prop_assert_eq!(d.contains(p), a.contains(p) && !b.contains(p));
                prop_assert_eq!(a.complement().contains(p), !a.contains(p));
            }
            for s in [&u, &i, &d] {
                match s.witness(Ingress) {
                    Some(w) => prop_assert!(s.contains(&w)),
                    None => prop_assert!(s.is_empty()),
                }
            }
        }
    }
}
