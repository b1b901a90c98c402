//! Conntrack-mark stamps that cannot collide (DESIGN.md sections 2 and 3:
//! revoked connections are cut). The compiler ([`crate::compile`]) writes
//! a direction's *generation* into two chains: an accepted flow's `ct mark`
//! field is stamped with it, and an established packet of the original
//! direction whose field equals it skips the rules. That fast path is only
//! safe if the current generation never equals a stamp still held by some
//! conntrack entry: an idle flow stamped long ago with an equal value would
//! skip the re-check for good, and a revoked rule would not cut it.
//!
//! So the generation is not derived from the rules. The [`Stamper`] (agent
//! state) hands out values of a direction's field in a ring: each change
//! of what a direction allows takes the next value (1, 2, ... the field's
//! largest, then 1 again), and before the ring comes back to a value that
//! may still be stamped on a flow, it *clears* the direction's bits in
//! every conntrack entry (the other bits untouched) while the generation
//! in force is the last one issued. After a clear only that value (the
//! ring's *floor*) and 0 can be found in conntrack, so the ring runs once
//! more around to it before the next clear. The floor and the generation
//! are written in the table itself (the comment of the `<dir>_current`
//! compare), so an agent that restarts on a table it loaded reads them
//! back; one that finds no table, or a table it cannot read, clears first.
//!
//! [`Stamping`] wraps a [`Dataplane`] with a [`Stamper`]: every program it
//! loads is stamped, whole-table loads and element deltas alike, and the
//! clears are run around the load. Offline output (`palisade nft compile`,
//! and the first load on a node without a table) carries
//! [`Stamp::offline`]: generation 1, floor the field's largest value.

use crate::compile::{Compiled, Deltas};
use crate::dataplane::{Counter, Dataplane, LiveTable};
use crate::error::AgentError;
use palisade_model::Direction;
use std::collections::BTreeMap;

/// The `ct mark` bits Palisade owns: one contiguous field per direction.
/// Every other bit of the mark belongs to other software (kube-proxy,
/// CNI plugins, `CONNMARK --save-mark` rules) and is never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkBits {
    ingress: u32,
    egress: u32,
}

impl Default for MarkBits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a pair of masks is no [`MarkBits`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkBitsError {
    /// A mask that is not one run of at least two bits.
    #[error("ct mark bits {0:#010x}: a field is one run of at least 2 contiguous bits")]
    NotAField(u32),
    /// The two fields share bits.
    #[error("ct mark bits {0:#010x} and {1:#010x} overlap")]
    Overlap(u32, u32),
    /// Not `INGRESS,EGRESS` in hexadecimal.
    #[error("ct mark bits {0:?}: expected INGRESS_MASK,EGRESS_MASK, e.g. 0x00000fff,0x00fff000")]
    Syntax(String),
}

impl MarkBits {
    /// Ingress in bits 0-11, egress in bits 12-23: 4,095 generations per
    /// direction between clears; bits 24-31 are left to other software.
    pub const DEFAULT: Self = Self {
        ingress: 0x0000_0fff,
        egress: 0x00ff_f000,
    };

    /// Two fields, each a run of at least two contiguous bits, disjoint.
    pub fn new(ingress: u32, egress: u32) -> Result<Self, MarkBitsError> {
        for m in [ingress, egress] {
            let run = m.checked_shr(m.trailing_zeros()).unwrap_or(0);
            if m.count_ones() < 2 || run & run.wrapping_add(1) != 0 {
                return Err(MarkBitsError::NotAField(m));
            }
        }
        if ingress & egress != 0 {
            return Err(MarkBitsError::Overlap(ingress, egress));
        }
        Ok(Self { ingress, egress })
    }

    /// The field of `direction`.
    pub fn mask(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    /// Both fields: every bit Palisade writes.
    pub fn owned(&self) -> u32 {
        self.ingress | self.egress
    }

    /// The largest generation the field of `direction` holds.
    pub fn max_generation(&self, direction: Direction) -> u32 {
        let m = self.mask(direction);
        m >> m.trailing_zeros()
    }

    /// The mark bits of `generation` in the field of `direction`.
    pub fn value(&self, direction: Direction, generation: u32) -> u32 {
        let m = self.mask(direction);
        (generation << m.trailing_zeros()) & m
    }
}

impl std::str::FromStr for MarkBits {
    type Err = MarkBitsError;

    /// `INGRESS_MASK,EGRESS_MASK` in hexadecimal (`0x` optional).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = |t: &str| {
            let t = t.trim();
            let t = t
                .strip_prefix("0x")
                .or_else(|| t.strip_prefix("0X"))
                .unwrap_or(t);
            u32::from_str_radix(t, 16).ok()
        };
        match s.split_once(',').map(|(a, b)| (hex(a), hex(b))) {
            Some((Some(i), Some(e))) => Self::new(i, e),
            _ => Err(MarkBitsError::Syntax(s.to_string())),
        }
    }
}

/// One direction's stamp: the generation in force, the ring's floor (the
/// value in force at the last clear, which flows may still carry), and a
/// digest of what the direction allows (to tell a change from a reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The generation written into accepted flows' marks (1 to the field's
    /// largest value; 0 is "no stamp").
    pub generation: u32,
    /// The ring's floor: the next generation must not be this one.
    pub floor: u32,
    /// The first 64 bits of the SHA-256 of the direction's compiled rules
    /// and the elements of the sets they use.
    pub rules: u64,
}

impl Stamp {
    /// The stamp of offline output and of the first load on a node with
    /// no table: generation 1 of a ring whose floor is the largest value.
    pub fn offline(rules: u64, bits: &MarkBits, direction: Direction) -> Self {
        Self {
            generation: 1,
            floor: bits.max_generation(direction),
            rules,
        }
    }

    /// The comment of the `<dir>_current` compare, from which a restarted
    /// agent reads the stamp back (at most 128 bytes, nft's limit).
    pub fn comment(&self, direction: Direction, bits: &MarkBits) -> String {
        format!(
            "palisade {} current mask {:#010x} stamp {:#x} floor {:#x} rules {:016x}",
            direction.as_str(),
            bits.mask(direction),
            self.generation,
            self.floor,
            self.rules
        )
    }

    /// Reads [`Stamp::comment`] back; `None` for any other text, another
    /// mask, or values outside the field.
    pub fn parse(comment: &str, direction: Direction, bits: &MarkBits) -> Option<Self> {
        let t: Vec<&str> = comment.split_whitespace().collect();
        let [_, dir, "current", "mask", mask, "stamp", generation, "floor", floor, "rules", rules] =
            t.as_slice()
        else {
            return None;
        };
        let hex = |s: &str| u32::from_str_radix(s.strip_prefix("0x")?, 16).ok();
        let max = bits.max_generation(direction);
        let stamp = Self {
            generation: hex(generation)?,
            floor: hex(floor)?,
            rules: u64::from_str_radix(rules, 16).ok()?,
        };
        let in_field = |v: u32| (1..=max).contains(&v);
        (t[0] == "palisade"
            && *dir == direction.as_str()
            && hex(mask)? == bits.mask(direction)
            && in_field(stamp.generation)
            && in_field(stamp.floor))
        .then_some(stamp)
    }
}

/// What to do for one load: the stamps to put in force and the fields to
/// clear in conntrack before the load (while the old generation is in
/// force) and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampPlan {
    /// Ingress, egress.
    pub stamps: [Stamp; 2],
    /// Mark bits to clear in every conntrack entry before loading.
    pub clear_before: u32,
    /// Mark bits to clear after loading.
    pub clear_after: u32,
}

/// The agent's knowledge of the stamps conntrack may hold, per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamper {
    bits: MarkBits,
    /// Per direction: the stamp in force, or `None` when unknown.
    known: [Option<Stamp>; 2],
    /// Whether a table (which may be stamping unknown values) is loaded.
    table: bool,
}

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

impl Stamper {
    /// Nothing known and no table loaded.
    pub fn new(bits: MarkBits) -> Self {
        Self {
            bits,
            known: [None, None],
            table: false,
        }
    }

    /// What a table read back from the kernel tells (`None`: no table).
    pub fn from_live(bits: MarkBits, live: Option<&LiveTable>) -> Self {
        let known = DIRECTIONS.map(|d| {
            let head = live?.heads.get(&format!("{}_current", d.as_str()))?;
            Stamp::parse(head, d, &bits)
        });
        Self {
            bits,
            known,
            table: live.is_some(),
        }
    }

    /// The mark bits this stamper hands out values of.
    pub fn bits(&self) -> MarkBits {
        self.bits
    }

    /// The stamps in force, if known.
    pub fn known(&self) -> [Option<Stamp>; 2] {
        self.known
    }

    /// The stamps for a program whose directions allow what `rules`
    /// digests: unchanged for a direction whose rules are the same, the
    /// ring's next value for one that changed, with the clears that make
    /// the value safe.
    pub fn plan(&self, rules: [u64; 2]) -> StampPlan {
        let mut plan = StampPlan {
            stamps: [Stamp {
                generation: 0,
                floor: 0,
                rules: 0,
            }; 2],
            clear_before: 0,
            clear_after: 0,
        };
        for (i, d) in DIRECTIONS.into_iter().enumerate() {
            let max = self.bits.max_generation(d);
            let mask = self.bits.mask(d);
            let next = |g: u32| if g >= max { 1 } else { g + 1 };
            plan.stamps[i] = match self.known[i] {
                Some(s) if s.rules == rules[i] => s,
                Some(s) if next(s.generation) != s.floor => Stamp {
                    generation: next(s.generation),
                    rules: rules[i],
                    ..s
                },
                // The ring came round: clear while `s.generation` is in
                // force, which only it (and 0) can be found after.
                Some(s) => {
                    plan.clear_before |= mask;
                    Stamp {
                        generation: next(s.generation),
                        floor: s.generation,
                        rules: rules[i],
                    }
                }
                // No table: nothing stamps during the clear.
                None if !self.table => {
                    plan.clear_before |= mask;
                    Stamp::offline(rules[i], &self.bits, d)
                }
                // A table this agent cannot read stamps unknown values
                // during the first clear; the second, with generation 1 in
                // force, leaves only 1 (and 0).
                None => {
                    plan.clear_before |= mask;
                    plan.clear_after |= mask;
                    Stamp {
                        generation: 1,
                        floor: 1,
                        rules: rules[i],
                    }
                }
            };
        }
        plan
    }

    /// Records that `plan` was loaded and its clears done.
    pub fn commit(&mut self, plan: &StampPlan) {
        self.known = plan.stamps.map(Some);
        self.table = true;
    }

    /// Records that the stamps in force, or those conntrack may hold, are
    /// no longer known (a load whose answer may have been lost, a clear
    /// that did not finish): the next plan clears before and after.
    pub fn forget(&mut self) {
        self.known = [None, None];
        self.table = true;
    }
}

/// A [`Dataplane`] that stamps every program it loads ([`Stamper`]) and
/// clears conntrack marks when the ring needs it. On first use it reads
/// the loaded table to learn the stamps in force.
#[derive(Debug)]
pub struct Stamping<D> {
    /// The dataplane programs are loaded into.
    pub inner: D,
    stamper: Option<Stamper>,
}

impl<D: Dataplane> Stamping<D> {
    /// Stamps over `inner`; the stamps in force are read from its table
    /// on the first load.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            stamper: None,
        }
    }

    /// The stamper, once the first load made one.
    pub fn stamper(&self) -> Option<&Stamper> {
        self.stamper.as_ref()
    }

    /// The plan for `compiled`, with the clear before the load done, and
    /// the stamped program.
    fn prepare(&mut self, compiled: &Compiled) -> Result<(StampPlan, Compiled), AgentError> {
        let bits = compiled.marks;
        let stamper = match self.stamper.take() {
            Some(s) if s.bits() == bits => s,
            _ => {
                let live = self.inner.read()?;
                Stamper::from_live(bits, live.as_ref())
            }
        };
        let plan = stamper.plan(compiled.rules_digests());
        self.stamper = Some(stamper);
        if plan.clear_before != 0 {
            self.inner.clear_marks(plan.clear_before)?;
        }
        Ok((plan, compiled.clone().stamped(plan.stamps)))
    }

    /// After the load: the clear after it, and the stamper's new state.
    ///
    /// A failed load that would have changed a generation forgets what
    /// is known: the transaction may have been committed with its answer
    /// lost (a broken `nft -i` session), and which of the two generations
    /// flows were stamped with since is unknown, so the next load clears
    /// first (planning on either would reuse the other one after the
    /// ring's next clear). A failed clear after the load likewise.
    fn finish(
        &mut self,
        plan: &StampPlan,
        loaded: Result<(), AgentError>,
    ) -> Result<(), AgentError> {
        if let Err(e) = loaded {
            if let Some(s) = self.stamper.as_mut() {
                if s.known != plan.stamps.map(Some) {
                    s.forget();
                }
            }
            return Err(e);
        }
        if plan.clear_after != 0 {
            if let Err(e) = self.inner.clear_marks(plan.clear_after) {
                if let Some(s) = self.stamper.as_mut() {
                    s.forget();
                }
                return Err(e);
            }
        }
        if let Some(s) = self.stamper.as_mut() {
            s.commit(plan);
        }
        Ok(())
    }
}

impl<D: Dataplane> Dataplane for Stamping<D> {
    fn apply(&mut self, compiled: &Compiled) -> Result<(), AgentError> {
        let (plan, stamped) = self.prepare(compiled)?;
        let loaded = self.inner.apply(&stamped);
        self.finish(&plan, loaded)
    }

    /// The deltas and the new stamps in one transaction: membership and
    /// the stamp change together.
    fn apply_deltas(&mut self, compiled: &Compiled, deltas: &Deltas) -> Result<(), AgentError> {
        let (plan, stamped) = self.prepare(compiled)?;
        let loaded = self.inner.apply_deltas(&stamped, deltas);
        self.finish(&plan, loaded)
    }

    fn read(&mut self) -> Result<Option<LiveTable>, AgentError> {
        self.inner.read()
    }

    fn clear_marks(&mut self, mask: u32) -> Result<usize, AgentError> {
        self.inner.clear_marks(mask)
    }

    fn generation(&mut self) -> Result<Option<u32>, AgentError> {
        self.inner.generation()
    }

    fn counters(&mut self) -> Result<BTreeMap<String, Counter>, AgentError> {
        self.inner.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn narrow() -> MarkBits {
        MarkBits::new(0x7, 0x70).unwrap()
    }

    #[test]
    fn mark_bits_are_two_disjoint_contiguous_fields() {
        let b = MarkBits::DEFAULT;
        assert_eq!(b.owned(), 0x00ff_ffff);
        assert_eq!(b.max_generation(Direction::Ingress), 0xfff);
        assert_eq!(b.value(Direction::Egress, 3), 0x3000);
        assert_eq!("0x00000fff,0x00fff000".parse::<MarkBits>(), Ok(b));
        assert_eq!("f0,f00".parse::<MarkBits>(), MarkBits::new(0xf0, 0xf00));
        for bad in [
            "0x1,0x6",
            "0x5,0x30",
            "0xff,0xf0",
            "0xff",
            "zz,0x30",
            "0,0x30",
        ] {
            assert!(bad.parse::<MarkBits>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stamp_reads_back_from_its_comment() {
        let b = MarkBits::DEFAULT;
        let s = Stamp {
            generation: 0x2a,
            floor: 0xfff,
            rules: 0x0123_4567_89ab_cdef,
        };
        let c = s.comment(Direction::Egress, &b);
        assert_eq!(
            c,
            "palisade egress current mask 0x00fff000 stamp 0x2a floor 0xfff rules 0123456789abcdef"
        );
        assert!(c.len() <= 128);
        assert_eq!(Stamp::parse(&c, Direction::Egress, &b), Some(s));
        assert_eq!(Stamp::parse(&c, Direction::Ingress, &b), None);
        assert_eq!(Stamp::parse(&c, Direction::Egress, &narrow()), None);
        // The previous agent's compare (a 16-bit hash) is not a stamp.
        assert_eq!(
            Stamp::parse("palisade egress current", Direction::Egress, &b),
            None
        );
    }

    #[test]
    fn unchanged_rules_keep_their_stamp_and_a_change_takes_the_next() {
        let mut st = Stamper::new(MarkBits::DEFAULT);
        let p = st.plan([10, 20]);
        assert_eq!(p.clear_before, 0x00ff_ffff, "no table: clear first");
        assert_eq!(
            p.stamps[0],
            Stamp::offline(10, &MarkBits::DEFAULT, Direction::Ingress)
        );
        st.commit(&p);
        let again = st.plan([10, 20]);
        assert_eq!((again.stamps, again.clear_before), (p.stamps, 0));
        let changed = st.plan([11, 20]);
        assert_eq!(changed.stamps[0].generation, 2);
        assert_eq!(changed.stamps[1], p.stamps[1], "egress keeps its stamp");
        assert_eq!((changed.clear_before, changed.clear_after), (0, 0));
    }

    #[test]
    fn the_ring_clears_before_a_value_comes_back() {
        // Ingress field of 3 bits: generations 1-7.
        let bits = narrow();
        let mut st = Stamper::new(bits);
        let first = st.plan([0, 0]);
        st.commit(&first);
        assert_eq!((first.stamps[0].generation, first.stamps[0].floor), (1, 7));
        let mut gens = vec![1];
        let mut clears = Vec::new();
        for n in 1..20u64 {
            let p = st.plan([n, 0]);
            if p.clear_before != 0 {
                clears.push((n, p.clear_before, p.stamps[0]));
            }
            st.commit(&p);
            gens.push(p.stamps[0].generation);
        }
        // 1..6 from the first floor (7); at 7 == floor the ring is full:
        // clear (with 6 in force), floor 6, next 7.
        assert_eq!(&gens[..8], &[1, 2, 3, 4, 5, 6, 7, 1]);
        assert_eq!(
            clears[0].0, 6,
            "the change to the floor's value clears first"
        );
        assert_eq!(clears[0].1, 0x7, "only the ingress field");
        assert_eq!((clears[0].2.generation, clears[0].2.floor), (7, 6));
        // The stamp at max: the next wraps to 1 without a clear (1 was
        // issued before the last clear, which wiped it).
        assert!(clears.iter().all(|c| c.1 == 0x7));
    }

    /// The collision path: a model of conntrack (the stamps entries may
    /// hold, per value) run through many changes, clears and restarts;
    /// a new generation never equals a stamp that may be present.
    #[test]
    fn a_new_generation_never_equals_a_stamp_conntrack_may_hold() {
        let bits = narrow();
        let mut st = Stamper::new(bits);
        // Values possibly present in the ingress field of some entry.
        let mut present: BTreeSet<u32> = BTreeSet::new();
        let mut current: Option<u32> = None;
        let mut foreign = false;
        let mut clears = 0;
        for n in 0..500u64 {
            // Every 37 changes the agent restarts on the table it loaded
            // (its stamps read back), every 101 a foreign table appears.
            if n % 37 == 36 {
                let comment = st.known()[0].unwrap().comment(Direction::Ingress, &bits);
                let live = LiveTable {
                    heads: [("ingress_current".to_string(), comment)].into(),
                    ..Default::default()
                };
                st = Stamper::from_live(bits, Some(&live));
            }
            if n % 101 == 100 {
                st = Stamper::from_live(bits, Some(&LiveTable::default()));
                foreign = true; // it stamps anything
                present.extend(1..=7);
            }
            let p = st.plan([n, 0]);
            if p.clear_before & 0x7 != 0 {
                clears += 1;
                // Packets keep being stamped with the value in force.
                present.clear();
                match foreign {
                    true => present.extend(1..=7),
                    false => present.extend(current),
                }
            }
            let g = p.stamps[0].generation;
            assert!(
                p.clear_after & 0x7 != 0 || !present.contains(&g),
                "change {n}: generation {g} may be stamped on an idle flow ({present:?})"
            );
            if p.clear_after & 0x7 != 0 {
                present.clear();
            }
            st.commit(&p);
            current = Some(g);
            foreign = false;
            present.insert(g);
        }
        assert!(clears >= 500 / 7, "the ring wrapped many times: {clears}");
    }

    /// A program whose ingress allows TCP `port` from anywhere.
    fn program(port: u16) -> Compiled {
        use palisade_model::{Cidr, Family, Peer};
        use palisade_policy::{ProtocolMatch, ResolvedRule, RuleOrigin, ServiceMatch};
        let rule = ResolvedRule::from_sets(
            RuleOrigin {
                security_group_id: "sg-aaaaaaaa".parse().unwrap(),
                direction: palisade_model::Direction::Ingress,
                policy_index: 0,
            },
            palisade_model::Action::Accept,
            vec![ServiceMatch {
                protocol: ProtocolMatch::Number(6),
                ports: vec![palisade_model::PortRange::single(port)],
            }],
            vec![palisade_model::AddrRange::everything(Family::V4)],
            Peer::Cidr(Cidr::parse_v4("t", "0.0.0.0/0").unwrap()),
        );
        let snapshot = palisade_policy::Ruleset {
            ingress: vec![rule],
            ..Default::default()
        };
        let opts = crate::compile::CompileOptions {
            uplinks: vec!["eth0".into()],
            ..Default::default()
        };
        crate::compile::compile(&snapshot, &opts).unwrap()
    }

    #[test]
    fn a_failed_load_that_changed_a_generation_clears_before_the_next() {
        let mut dp = Stamping::new(crate::dataplane::FakeDataplane::new());
        dp.apply(&program(22)).unwrap();
        dp.apply(&program(23)).unwrap();
        assert_eq!(dp.inner.clears, [0x00ff_ffff], "once, on the empty node");
        // The same program failing to load again: nothing to forget.
        dp.inner.fail_next = Some("boom".into());
        assert!(dp.apply(&program(23)).is_err());
        assert_eq!(dp.stamper().unwrap().known()[0].unwrap().generation, 2);
        // A change failing: generation 2 or 3 may be in force.
        dp.inner.fail_next = Some("boom".into());
        assert!(dp.apply(&program(24)).is_err());
        dp.apply(&program(24)).unwrap();
        assert_eq!(dp.inner.clears[1..], [0x00ff_ffff, 0x00ff_ffff]);
        let table = dp.inner.table.as_ref().unwrap();
        assert_eq!(table.stamps.map(|s| s.generation), [1, 1]);
    }

    #[test]
    fn a_table_it_cannot_read_is_cleared_before_and_after_the_load() {
        let st = Stamper::from_live(MarkBits::DEFAULT, Some(&LiveTable::default()));
        let p = st.plan([1, 2]);
        assert_eq!(p.clear_before, 0x00ff_ffff);
        assert_eq!(p.clear_after, 0x00ff_ffff);
        assert_eq!((p.stamps[1].generation, p.stamps[1].floor), (1, 1));
        // A known table with a changed ingress only: nothing cleared.
        let mut st = st;
        st.commit(&p);
        let live = LiveTable {
            heads: DIRECTIONS
                .into_iter()
                .zip(p.stamps)
                .map(|(d, s)| {
                    (
                        format!("{}_current", d.as_str()),
                        s.comment(d, &MarkBits::DEFAULT),
                    )
                })
                .collect(),
            ..Default::default()
        };
        let back = Stamper::from_live(MarkBits::DEFAULT, Some(&live));
        assert_eq!(back.known(), st.known(), "a restart reads the stamps back");
        let q = back.plan([5, 2]);
        assert_eq!((q.clear_before, q.clear_after), (0, 0));
        assert_eq!(q.stamps[0].generation, 2);
        assert_eq!(q.stamps[1], p.stamps[1]);
    }
}
