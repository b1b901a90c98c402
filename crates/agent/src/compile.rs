//! The pure compiler (DESIGN.md section 3): one instance's resolved [`Ruleset`] in,
//! the nft program for table `inet palisade` out. No I/O, so every line is
//! tested without root; the [`crate::dataplane`] loads what this produces.
//!
//! The table has two base chains:
//!
//! - `ingress`, hooked at `prerouting` priority -150 (after conntrack at
//!   -200, before DNAT at -100), for packets arriving on an uplink: it sees
//!   `NodeIP:NodePort` before kube-proxy rewrites it;
//! - `egress`, hooked at `postrouting` priority 150 (after SNAT at 100), for
//!   packets leaving on an uplink, with the addresses they carry on the wire.
//!
//! Each chain runs the baseline (IPv6 ND / RS / RA and link-local MLD
//! accepted, `ct state invalid` dropped, related packets and replies of
//! tracked connections accepted), then the fast path for established flows
//! stamped by the current generation, then every rule in first-match order
//! (a `counter` and `comment "sg-xxxx ingress 3"` on each), then a counted
//! default drop.
//!
//! Revoked connections (DESIGN.md section 2): a rule that accepts a packet
//! stamps the flow's conntrack mark with the direction's *generation*, in
//! the direction's own field of the mark ([`MarkBits`]: bits 0-11 for
//! ingress and 12-23 for egress by default; every other bit is kept, as
//! `ct mark set ct mark and ~FIELD or STAMP`). An established packet in the
//! original direction whose field equals the current generation is
//! accepted at once (one conntrack lookup, one compare); one with another
//! value falls through to the rules again and is either re-stamped (still
//! allowed) or dropped (revoked). Replies are never re-checked, as in the
//! cloud. The generation is written in two one-rule chains per direction
//! only (`<dir>_current`, `<dir>_stamp`; accepting rules `goto
//! <dir>_stamp`), so a membership change rewrites those and not the rule
//! list: its transaction does not grow with the rules.
//!
//! The compiler does not choose the generation: a fast path is only safe
//! if the generation equals no stamp some idle flow still carries, which
//! depends on what was loaded before, so it is the agent's state
//! ([`crate::stamp`]). `compile` hashes what each direction allows (its
//! rules and the contents of the sets they use) into the stamp's `rules`
//! digest, which tells the agent whether a direction changed, and writes
//! [`Stamp::offline`] (generation 1) in the generation chains, so offline
//! output is deterministic; [`Compiled::stamped`] puts the agent's stamps
//! in. The `shape` leaves the stamps out, so the element-update path
//! ([`Compiled::delta_script`]) carries the new stamp with the new
//! elements.
//!
//! Peers that are references become named sets, one per family
//! (`sg_1a2b3c4d_v4`), so that membership changes are element updates: a
//! security group's members a hash set of single addresses, an address
//! template's entries an interval set; literal CIDRs are written inline. Protocols
//! without ports are matched with `meta l4proto`, never `th dport` (which
//! reads an ICMP checksum).

use crate::flowlog::{Tag, SNAPLEN};
use crate::stamp::{MarkBits, Stamp};
use palisade_model::addr::u128_to_ip;
use palisade_model::flow::{Enforcement, Verdict};
use palisade_model::Peer;
use palisade_model::{Action, AddrRange, Direction, Family};
use palisade_policy::{Failsafe, ProtocolMatch, ResolvedRule, Ruleset, ServiceMatch};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

/// The table's family and name.
pub const TABLE: &str = "inet palisade";
/// The ingress base chain's priority: after conntrack (-200), before DNAT (-100).
pub const INGRESS_PRIORITY: i32 = -150;
/// The egress base chain's priority: after SNAT (100).
pub const EGRESS_PRIORITY: i32 = 150;

/// What the compiler needs besides the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// The node's uplink interface names (at least one).
    pub uplinks: Vec<String>,
    /// Linear chains (the default) or verdict maps.
    pub mode: Mode,
    /// In [`Mode::Maps`], a rule whose peer is a reference (a security
    /// group or an address template) of at least this many address ranges
    /// (members, after the resolver merged adjacent ones) stays a rule of
    /// its own that looks its named set up, between the maps of the rules
    /// before and after it ([`HOIST_MIN_PEERS`] by default; 0 keeps every
    /// reference out of the maps).
    pub hoist_min_peers: usize,
    /// The most nft rules plus set and map elements a snapshot may compile
    /// to ([`DEFAULT_MAX_ELEMENTS`] by default): a larger one is refused by
    /// counting, before anything is expanded ([`cost`]).
    pub max_elements: usize,
    /// The `ct mark` bits the stamps live in ([`MarkBits::DEFAULT`]).
    pub marks: MarkBits,
    /// Flow records: every decision is logged to an NFLOG group under a
    /// per-node rate limit ([`crate::flowlog`]); `None` logs nothing.
    pub flow_log: Option<FlowLogOptions>,
    /// `ENFORCE`, or `AUDIT`: drops become counted, logged passes
    /// (`WOULD_DROP`; audit logs with `audit_log` when `flow_log` is
    /// `None`).
    pub enforcement: Enforcement,
    /// Where audit mode logs when `flow_log` is `None`: the group the
    /// agent's recorder reads, whether or not it records every decision.
    pub audit_log: FlowLogOptions,
    /// The node's failsafe entries: accepted before any rule, in both
    /// directions as each entry says ([`palisade_policy::failsafe`]).
    pub failsafe: Vec<Failsafe>,
    /// The uid that owns the agent's own sockets to its servers
    /// ([`crate::control`]): their packets leave whatever the rules say;
    /// `None` exempts nothing.
    pub control_uid: Option<u32>,
}

/// Where and how fast decisions are logged for flow records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLogOptions {
    /// The NFLOG group ([`crate::flowlog::DEFAULT_GROUP`]).
    pub group: u16,
    /// Decisions logged per second on the node, at most; the ones over it
    /// are counted in the table's `flowlog_suppressed` counter.
    pub rate: u32,
    /// How many decisions may be logged at once above the rate.
    pub burst: u32,
}

impl Default for FlowLogOptions {
    fn default() -> Self {
        Self {
            group: crate::flowlog::DEFAULT_GROUP,
            rate: DEFAULT_FLOW_LOG_RATE,
            burst: DEFAULT_FLOW_LOG_RATE,
        }
    }
}

/// The default rate limit of logged decisions per node and second
/// (`palisade agent --flow-log-rate`): a node taking 2,000 new
/// connections a second logs a quarter of them, and the agent's reading
/// and shipping stay a small part of a core (BENCHMARKS.md).
pub const DEFAULT_FLOW_LOG_RATE: u32 = 500;

/// The table's rate limit object of logged decisions.
pub const FLOW_LOG_LIMIT: &str = "flowlog_limit";
/// The table's counter of decisions over the rate limit, not logged.
pub const FLOW_LOG_SUPPRESSED: &str = "flowlog_suppressed";

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            uplinks: Vec::new(),
            mode: Mode::default(),
            hoist_min_peers: HOIST_MIN_PEERS,
            max_elements: DEFAULT_MAX_ELEMENTS,
            marks: MarkBits::DEFAULT,
            flow_log: None,
            enforcement: Enforcement::Enforce,
            audit_log: FlowLogOptions::default(),
            failsafe: Vec::new(),
            control_uid: None,
        }
    }
}

impl CompileOptions {
    /// Where decisions are logged, if anywhere: audit mode always logs.
    pub fn logging(&self) -> Option<FlowLogOptions> {
        match self.enforcement {
            Enforcement::Audit => Some(self.flow_log.unwrap_or(self.audit_log)),
            Enforcement::Enforce => self.flow_log,
        }
    }

    /// The lines that decide a packet a rule (or, for `rule` `None`, the
    /// default drop) of `direction` matched: count it, log it when
    /// logging (within the rate limit; over it, count it as suppressed),
    /// and give the verdict. Every line ends in the verdict, so a packet
    /// goes through exactly one of them and the per-comment counters stay
    /// exact.
    fn decide(
        &self,
        direction: Direction,
        action: Action,
        rule: Option<&ResolvedRule>,
        comment: &str,
    ) -> Vec<String> {
        let stamp = format!("goto {}_stamp", direction.as_str());
        let (verdict, logged) = match (action, self.enforcement) {
            (Action::Accept, _) => (stamp, Verdict::Accept),
            (Action::Drop, Enforcement::Enforce) => ("drop".to_string(), Verdict::Drop),
            (Action::Drop, Enforcement::Audit) => (stamp, Verdict::WouldDrop),
        };
        let Some(log) = self.logging() else {
            return vec![format!("counter {verdict} comment \"{comment}\"")];
        };
        let tag = Tag {
            verdict: logged,
            direction,
            rule: rule.map(|r| {
                let o = r.origin();
                // A policy index is below the per-group rule limit.
                let index = u32::try_from(o.policy_index).unwrap_or(u32::MAX);
                (o.security_group_id.clone(), index)
            }),
        };
        vec![
            format!(
                "limit name \"{FLOW_LOG_LIMIT}\" counter name \"{FLOW_LOG_SUPPRESSED}\" counter {verdict} comment \"{comment}\""
            ),
            format!(
                "counter log prefix \"{}\" group {} snaplen {SNAPLEN} {verdict} comment \"{comment}\"",
                tag.prefix(),
                log.group
            ),
        ]
    }
}

/// The default [`CompileOptions::max_elements`] (`palisade agent
/// --max-elements`). What the server's default limits let one instance's
/// ruleset hold in practice: a security group referenced by a rule stands
/// for up to 2,000 instances (`instances_per_group`), so the 10 references
/// a group may make (`references_per_group`) come to 20,000 addresses at
/// one address per instance, and the 5 groups of an instance to 100,000;
/// the default leaves room for 2.5 times that, for templates (1,000
/// entries each, 100 per template group), second addresses and the rules
/// themselves (500 per direction). It is not the product of every limit:
/// 64 addresses on each of 2,000 instances of 50 referenced groups is 6.4
/// million elements, a size no node is given without raising this.
/// Measured with this default: the agent stays under 256 MiB holding a
/// snapshot at the budget while refusing the largest hostile answer
/// (docs/operations.md).
pub const DEFAULT_MAX_ELEMENTS: usize = 250_000;

/// The default [`CompileOptions::hoist_min_peers`]. A reference's
/// addresses in a verdict map cost a map update per membership change
/// that grows with the map (nft_pipapo: 3-7 ms at 2,000 elements, 14-49
/// ms at 100,000, BENCHMARKS.md run 8); in a set of their own they cost
/// one element add or delete at any size (about 1 ms), for one more rule
/// per packet, and the maps after the rule become a segment of their own
/// (one more lookup). At 1,000 rules a 1,000-member reference kept out of
/// the maps cost no measurable time per new flow (run 9).
pub const HOIST_MIN_PEERS: usize = 256;

/// Why a snapshot cannot be compiled.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// No uplink interface was given.
    #[error("at least one uplink interface is needed (--uplink)")]
    NoUplink,
    /// An interface name nft would not take or that could break the script.
    #[error(
        "--uplink {0:?}: an interface name is 1-15 characters of letters, digits, and . _ - @ :"
    )]
    BadUplink(String),
    /// The snapshot would compile to more rules and set elements than the
    /// budget: more than the server sends a node within its limits.
    #[error(
        "the ruleset needs {needed} nft rules and set elements, more than the \
         budget of {max} (--max-elements); refused, the loaded rules stay"
    )]
    OverBudget {
        /// What the snapshot needs (saturating).
        needed: u128,
        /// The budget.
        max: usize,
    },
}

/// A named address set of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSet {
    /// The set's name in the table.
    pub name: String,
    /// Its address family.
    pub family: Family,
    /// An interval set (`flags interval`, for templates, whose entries may
    /// be CIDRs and ranges) or a hash set of single addresses (a security
    /// group's members). nft checks an interval set's new elements for
    /// overlaps against every element it holds, reading them all back
    /// first; a hash set's element add costs the same at any size.
    pub interval: bool,
    /// Sorted, disjoint, non-adjacent ranges (single addresses when not
    /// `interval`).
    pub elements: Vec<AddrRange>,
}

impl NamedSet {
    /// The set's `type ...; flags ...;` declaration body.
    pub fn declaration(&self) -> String {
        let ty = set_type(self.family);
        if self.interval {
            format!("type {ty}; flags interval;")
        } else {
            format!("type {ty};")
        }
    }
}

/// One chain: a base chain (`ingress`, `egress`) or, in [`Mode::Maps`], a
/// rule's own chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The chain's name.
    pub name: String,
    /// For a base chain: the hook (`prerouting`, `postrouting`) and priority.
    pub hook: Option<(&'static str, i32)>,
    /// The rules, each a line of nft syntax.
    pub rules: Vec<String>,
}

/// How the rule lists become nft.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// One nft rule per group rule (and family and service), in order: the
    /// reference translation.
    #[default]
    Linear,
    /// Each rule's decided set (the packets it decides under first match,
    /// from the `policy` crate's header-space algebra) becomes elements of
    /// concatenated interval verdict maps (`peer . protocol . port` for TCP
    /// and UDP, `peer . protocol` for the rest) that jump to the rule's own
    /// chain, which counts and decides. One lookup per packet. The peer
    /// comes first because it is the selective field: nft's interval maps
    /// (nft_pipapo) match field by field and carry every element that
    /// matched the fields so far to the next one, so a protocol first would
    /// carry every TCP or UDP element of the list. A rule whose peer is a
    /// large reference stays a rule that looks its set up, between
    /// segments of maps ([`CompileOptions::hoist_min_peers`]).
    Maps,
}

/// A verdict map ([`Mode::Maps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    /// The map's name in the table.
    pub name: String,
    /// Its key type (`ipv4_addr . inet_proto . inet_service`).
    pub key_type: String,
    /// Its elements, `key : jump chain` each.
    pub elements: Vec<String>,
}

impl VerdictMap {
    /// The map's declaration, one line of nft.
    pub fn declaration(&self) -> String {
        let body = if self.elements.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }}", self.elements.join(", "))
        };
        format!(
            "map {} {{ type {} : verdict; flags interval;{body} }}",
            self.name, self.key_type
        )
    }
}

/// The element changes that turn one compiled program into another with
/// the same shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    /// Named set changes, one entry per changed set.
    pub sets: Vec<SetDelta>,
    /// Verdict map changes, one entry per changed map.
    pub maps: Vec<MapDelta>,
}

impl Deltas {
    /// How many elements are added and deleted in all.
    pub fn len(&self) -> usize {
        let sets: usize = self.sets.iter().map(|d| d.add.len() + d.delete.len()).sum();
        let maps: usize = self.maps.iter().map(|d| d.add.len() + d.delete.len()).sum();
        sets + maps
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Adds or removes elements of one verdict map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDelta {
    /// The map.
    pub name: String,
    /// Elements to add (`key : jump chain`).
    pub add: Vec<String>,
    /// Keys to remove.
    pub delete: Vec<String>,
}

/// The key of a verdict map element (`key : jump chain`).
pub fn map_key(element: &str) -> &str {
    element.split(" : ").next().unwrap_or(element)
}

/// The compiled program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The named sets, sorted by name.
    pub sets: Vec<NamedSet>,
    /// Verdict maps ([`Mode::Maps`]).
    pub maps: Vec<VerdictMap>,
    /// Per-rule chains ([`Mode::Maps`]), then `ingress` and `egress`.
    pub chains: Vec<Chain>,
    /// The ingress and egress stamps in the generation chains:
    /// [`Stamp::offline`] as compiled, the agent's with
    /// [`Compiled::stamped`].
    pub stamps: [Stamp; 2],
    /// The `ct mark` bits the stamps live in.
    pub marks: MarkBits,
    /// The rules with stamps and elements left out: two compilations
    /// with equal `shape` differ only in set and map elements.
    pub shape: String,
    /// Where decisions are logged ([`CompileOptions::logging`]).
    pub flow_log: Option<FlowLogOptions>,
}

/// Adds or removes elements of one named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDelta {
    /// The set.
    pub name: String,
    /// Elements to add.
    pub add: Vec<AddrRange>,
    /// Elements to remove.
    pub delete: Vec<AddrRange>,
}

/// Compiles one instance's snapshot.
pub fn compile(snapshot: &Ruleset, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    if opts.uplinks.is_empty() {
        return Err(CompileError::NoUplink);
    }
    for u in &opts.uplinks {
        let ok = !u.is_empty()
            && u.len() <= 15
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b));
        if !ok {
            return Err(CompileError::BadUplink(u.clone()));
        }
    }
    let needed = cost(snapshot, opts);
    if needed > opts.max_elements as u128 {
        return Err(CompileError::OverBudget {
            needed,
            max: opts.max_elements,
        });
    }
    let mut sets: BTreeMap<String, NamedSet> = BTreeMap::new();
    let mut chains = Vec::new();
    let mut rule_chains = Vec::new();
    // The generation chains come first: rules jump to them.
    let mut gen_first = Vec::new();
    let mut maps = Vec::new();
    let mut stamps = [Stamp::offline(0, &opts.marks, Direction::Ingress); 2];
    let mut shape = String::new();
    for (slot, direction) in [Direction::Ingress, Direction::Egress]
        .into_iter()
        .enumerate()
    {
        if opts.mode == Mode::Maps {
            let plan = map_plan(
                snapshot.rules(direction),
                direction,
                opts.hoist_min_peers,
                &mut sets,
            );
            let mut h = Sha256::new();
            h.update(opts.enforcement.as_str().as_bytes());
            h.update(plan.digest_input.as_bytes());
            hash_sets(&mut h, &sets, plan.used_sets);
            stamps[slot] = Stamp::offline(digest64(h), &opts.marks, direction);
            gen_first.extend(gen_chains(direction, stamps[slot], &opts.marks));
            shape.push_str(&plan.shape_input);
            for ((name, action, c), rule) in plan.rule_chains.iter().zip(snapshot.rules(direction))
            {
                rule_chains.push(Chain {
                    name: name.clone(),
                    hook: None,
                    rules: opts.decide(direction, *action, Some(rule), c),
                });
            }
            maps.extend(plan.decls);
            chains.push(build_chain(direction, opts, Body::Lookups(&plan.lookups)));
            continue;
        }
        let mut matchers = Vec::new();
        let mut used_sets = Vec::new();
        // With logging, a decision takes more than one line: each rule's
        // matches go to a chain of its own, as in maps mode.
        let mut gotos = Vec::new();
        for (pos, rule) in snapshot.rules(direction).iter().enumerate() {
            let c = comment(rule, direction);
            let chain = format!("{}_r{pos}", direction.as_str());
            for (m, set) in rule_matchers(rule, direction, &mut sets) {
                if let Some(s) = set {
                    used_sets.push(s);
                }
                gotos.push(format!("{m} goto {chain}"));
                matchers.push((m, rule.action(), c.clone()));
            }
            if opts.logging().is_some() {
                rule_chains.push(Chain {
                    name: chain,
                    hook: None,
                    rules: opts.decide(direction, rule.action(), Some(rule), &c),
                });
            }
        }
        // What this direction allows, hashed: a change takes the next
        // generation ([`crate::stamp::Stamper`]).
        let mut h = Sha256::new();
        h.update(opts.enforcement.as_str().as_bytes());
        for (m, action, c) in &matchers {
            h.update(format!("{m}|{action}|{c}\n").as_bytes());
            let _ = writeln!(shape, "{direction} {m} {action} {c}");
        }
        hash_sets(&mut h, &sets, used_sets);
        stamps[slot] = Stamp::offline(digest64(h), &opts.marks, direction);
        gen_first.extend(gen_chains(direction, stamps[slot], &opts.marks));
        let body = match opts.logging() {
            Some(_) => Body::Lookups(&gotos),
            None => Body::Rules(&matchers),
        };
        chains.push(build_chain(direction, opts, body));
    }
    gen_first.extend(rule_chains);
    gen_first.extend(chains);
    let chains = gen_first;
    // The maps' boxes come from the header-space difference of the rules,
    // which [`cost`] bounds by its inputs only: the result is held to the
    // budget too.
    let built = maps.iter().map(|m| m.elements.len()).sum::<usize>();
    if opts.mode == Mode::Maps && built > opts.max_elements {
        return Err(CompileError::OverBudget {
            needed: built as u128,
            max: opts.max_elements,
        });
    }
    // Logging and the enforcement change chains, not elements: a change
    // of either is a whole-table load.
    let _ = writeln!(
        shape,
        "{:?} {:?} {:?} {:?}",
        opts.logging(),
        opts.enforcement,
        opts.failsafe,
        opts.control_uid
    );
    Ok(Compiled {
        sets: sets.into_values().collect(),
        maps,
        chains,
        stamps,
        marks: opts.marks,
        shape,
        flow_log: opts.logging(),
    })
}

/// The first 64 bits of a SHA-256.
fn digest64(h: Sha256) -> u64 {
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl Compiled {
    /// The whole table as one `nft -f` transaction that replaces whatever
    /// table `inet palisade` holds (`add` + `delete` + definition, so it
    /// works whether or not the table exists). Packets see the old table or
    /// the new one, never a mix.
    pub fn script(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Palisade: generated by palisade-agent (DESIGN.md section 3); edits are reverted."
        );
        let _ = writeln!(out, "add table {TABLE}");
        let _ = writeln!(out, "delete table {TABLE}");
        let _ = writeln!(out, "table {TABLE} {{");
        let _ = writeln!(
            out,
            "\tcomment \"managed by palisade-agent; generations ingress {:#x} egress {:#x}\"",
            self.stamps[0].generation, self.stamps[1].generation
        );
        if let Some(log) = self.flow_log {
            let _ = writeln!(
                out,
                "\tlimit {FLOW_LOG_LIMIT} {{ rate over {}/second burst {} packets; }}",
                log.rate,
                log.burst.max(1)
            );
            let _ = writeln!(out, "\tcounter {FLOW_LOG_SUPPRESSED} {{ }}");
        }
        for s in &self.sets {
            let _ = writeln!(out, "\tset {} {{", s.name);
            let _ = writeln!(out, "\t\ttype {}", set_type(s.family));
            if s.interval {
                let _ = writeln!(out, "\t\tflags interval");
            }
            if !s.elements.is_empty() {
                let list: Vec<String> = s.elements.iter().map(|e| element(*e)).collect();
                let _ = writeln!(out, "\t\telements = {{ {} }}", list.join(", "));
            }
            let _ = writeln!(out, "\t}}");
        }
        // Rule chains first, then the maps that jump to them, then the
        // base chains that look the maps up.
        for c in self.chains.iter().filter(|c| c.hook.is_none()) {
            write_chain(&mut out, c);
        }
        for m in &self.maps {
            let _ = writeln!(out, "\t{}", m.declaration());
        }
        for c in self.chains.iter().filter(|c| c.hook.is_some()) {
            write_chain(&mut out, c);
        }
        let _ = writeln!(out, "}}");
        out
    }

    /// The digests of what each direction allows (ingress, egress):
    /// equal digests, equal rules and set contents.
    pub fn rules_digests(&self) -> [u64; 2] {
        self.stamps.map(|s| s.rules)
    }

    /// The same program with `stamps` in its generation chains (the
    /// rules digests are the compiler's, whatever `stamps` say).
    pub fn stamped(mut self, stamps: [Stamp; 2]) -> Self {
        for (i, direction) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let stamp = Stamp {
                rules: self.stamps[i].rules,
                ..stamps[i]
            };
            self.stamps[i] = stamp;
            for new in gen_chains(direction, stamp, &self.marks) {
                if let Some(c) = self.chains.iter_mut().find(|c| c.name == new.name) {
                    *c = new;
                }
            }
        }
        self
    }

    /// The number of set elements the table holds.
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// When `self` differs from `old` only in set and map elements: the
    /// element changes, one entry per changed set or map.
    pub fn set_deltas(&self, old: &Compiled) -> Option<Deltas> {
        if self.shape != old.shape
            || self.maps.len() != old.maps.len()
            || self
                .maps
                .iter()
                .zip(&old.maps)
                .any(|(a, b)| a.name != b.name || a.key_type != b.key_type)
            || self.sets.len() != old.sets.len()
            || self
                .sets
                .iter()
                .zip(&old.sets)
                .any(|(a, b)| a.name != b.name || a.family != b.family || a.interval != b.interval)
        {
            return None;
        }
        let mut out = Vec::new();
        for (new, old) in self.sets.iter().zip(&old.sets) {
            let (add, delete) = element_diff(&new.elements, &old.elements);
            if !add.is_empty() || !delete.is_empty() {
                out.push(SetDelta {
                    name: new.name.clone(),
                    add,
                    delete,
                });
            }
        }
        let mut maps = Vec::new();
        for (new, old) in self.maps.iter().zip(&old.maps) {
            // Whole elements: a key whose verdict changed is deleted and
            // added again.
            let (add, gone) = hashed_diff(&new.elements, &old.elements);
            let delete: Vec<String> = gone.iter().map(|e| map_key(e).to_string()).collect();
            if !add.is_empty() || !delete.is_empty() {
                maps.push(MapDelta {
                    name: new.name.clone(),
                    add,
                    delete,
                });
            }
        }
        Some(Deltas { sets: out, maps })
    }

    /// One `nft -f` transaction applying `deltas` and putting the new
    /// generations in force: membership and the stamp change together.
    /// Deletes come first so a range that grew (`a` -> `a-b`) never overlaps.
    ///
    /// The generations are *inserted* at the head of the four generation
    /// chains, ahead of the rules they replace, which stay behind them
    /// unreachable: `<dir>_current` gets its new compare followed by a
    /// `return`, `<dir>_stamp` its new stamp (which ends in `accept`).
    /// Deleting or flushing anything makes the kernel wait out an RCU grace
    /// period (about 10 ms) before `nft` can exit, which adds do not; so a
    /// member joining is adds only. The next whole-table load drops the
    /// unreachable rules (the nft dataplane makes one after
    /// [`crate::nft::MAX_STACKED_DELTAS`] deltas).
    pub fn delta_script(&self, deltas: &Deltas) -> String {
        let mut out = String::new();
        let set_items = |v: &[AddrRange]| v.iter().map(|e| element(*e)).collect::<Vec<_>>();
        for d in &deltas.maps {
            element_line(&mut out, "delete", &d.name, &d.delete);
        }
        for d in &deltas.sets {
            element_line(&mut out, "delete", &d.name, &set_items(&d.delete));
        }
        for d in &deltas.maps {
            element_line(&mut out, "add", &d.name, &d.add);
        }
        for d in &deltas.sets {
            element_line(&mut out, "add", &d.name, &set_items(&d.add));
        }
        // Only the generation chains hold the generation: the rules are
        // the same (equal `shape`), so a membership change costs two small
        // chains, not a rewrite of every rule. Each `insert` goes to the
        // head of its chain, so the last one inserted comes first.
        for c in &self.chains {
            let current = c.name.ends_with("_current");
            if !current && !c.name.ends_with("_stamp") {
                continue;
            }
            if current {
                let _ = writeln!(out, "insert rule {TABLE} {} return", c.name);
            }
            for r in c.rules.iter().rev() {
                let _ = writeln!(out, "insert rule {TABLE} {} {r}", c.name);
            }
        }
        out
    }
}

/// One `add element` / `delete element` line of a delta, none for no items.
fn element_line(out: &mut String, verb: &str, name: &str, items: &[String]) {
    if !items.is_empty() {
        let _ = writeln!(
            out,
            "{verb} element {TABLE} {name} {{ {} }}",
            items.join(", ")
        );
    }
}

/// The items of `new` missing from `old`, and those of `old` missing from
/// `new`, by hashing (any order).
fn hashed_diff<T: Clone + Eq + std::hash::Hash>(new: &[T], old: &[T]) -> (Vec<T>, Vec<T>) {
    let (in_new, in_old): (HashSet<&T>, HashSet<&T>) = (new.iter().collect(), old.iter().collect());
    (
        new.iter()
            .filter(|e| !in_old.contains(e))
            .cloned()
            .collect(),
        old.iter()
            .filter(|e| !in_new.contains(e))
            .cloned()
            .collect(),
    )
}

/// The elements of `new` missing from `old`, and those of `old` missing
/// from `new`. Sets are kept sorted, so this is one merge pass (a set of
/// 100,000 members costs about a millisecond for one member joining); an
/// unsorted list falls back to hashing.
fn element_diff(new: &[AddrRange], old: &[AddrRange]) -> (Vec<AddrRange>, Vec<AddrRange>) {
    let key = |r: &AddrRange| (r.lo(), r.hi());
    let sorted = |v: &[AddrRange]| v.windows(2).all(|w| key(&w[0]) < key(&w[1]));
    if !sorted(new) || !sorted(old) {
        return hashed_diff(new, old);
    }
    let (mut add, mut delete) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < new.len() && j < old.len() {
        match key(&new[i]).cmp(&key(&old[j])) {
            std::cmp::Ordering::Less => {
                add.push(new[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                delete.push(old[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    add.extend_from_slice(&new[i..]);
    delete.extend_from_slice(&old[j..]);
    (add, delete)
}

/// Writes one chain definition, indented for a table block.
pub fn write_chain(out: &mut String, c: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", c.name);
    if let Some((hook, priority)) = c.hook {
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority {priority}; policy accept;"
        );
    }
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{r}");
    }
    let _ = writeln!(out, "\t}}");
}

/// A rule's counter key and comment: `sg-1a2b3c4d ingress 3`.
pub fn comment(rule: &ResolvedRule, direction: Direction) -> String {
    format!(
        "{} {} {}",
        sanitize_comment(rule.origin().security_group_id.as_str()),
        direction.as_str(),
        rule.origin().policy_index
    )
}

/// The comment of a baseline rule, e.g. `palisade ingress default drop`.
pub fn baseline_comment(direction: Direction, what: &str) -> String {
    format!("palisade {} {what}", direction.as_str())
}

/// An address range as an nft set element or value: `198.51.100.7`,
/// `198.51.100.0/24` or `198.51.100.7-198.51.100.9`.
pub fn element(r: AddrRange) -> String {
    palisade_policy::codec::format_addr_range(r)
}

fn set_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

fn sanitize_comment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c))
        .take(64)
        .collect()
}

/// Most addresses a security group's set holds one by one; a group whose
/// members add up to more (only possible with absurd member lists) is an
/// interval set.
const MAX_HASH_SET_ADDRESSES: u128 = 1 << 20;

/// The named set of a rule's reference. A security group's members are
/// instances' single addresses: a hash set, each address an element (the
/// resolver merges adjacent addresses into ranges; they are split again
/// here), so a member joining is one element add whatever the set's size.
/// An address template or template group, whose entries may be CIDRs and
/// ranges, is an interval set.
fn reference_set(
    name: String,
    family: Family,
    rule: &ResolvedRule,
    peers: &[AddrRange],
) -> NamedSet {
    if reference_layout(rule, peers.iter()).0 {
        return NamedSet {
            name,
            family,
            interval: true,
            elements: peers.to_vec(),
        };
    }
    let elements = peers
        .iter()
        .flat_map(|p| (p.lo()..=p.hi()).filter_map(move |a| AddrRange::new(family, a, a)))
        .collect();
    NamedSet {
        name,
        family,
        interval: false,
        elements,
    }
}

/// Whether a reference's set is an interval set, and how many elements it
/// holds: a security group's addresses one by one (up to
/// [`MAX_HASH_SET_ADDRESSES`]), anything else its ranges. Counted, not
/// built, so [`cost`] and [`reference_set`] agree.
fn reference_layout<'a>(
    rule: &ResolvedRule,
    peers: impl Iterator<Item = &'a AddrRange>,
) -> (bool, u128) {
    let group = peer_ref(rule).is_some_and(|r| r.to_ascii_lowercase().starts_with("sg-"));
    let (ranges, addresses) = peers.fold((0u128, 0u128), |(n, a), p| {
        (n + 1, a.saturating_add((p.hi() - p.lo()).saturating_add(1)))
    });
    if !group || addresses > MAX_HASH_SET_ADDRESSES {
        (true, ranges)
    } else {
        (false, addresses)
    }
}

/// What `snapshot` costs once compiled with `opts`, counted without
/// building it: nft rules (one per rule, family and service), the elements
/// of each named set (once per set, a security group's addresses one by
/// one), inline peer lists (once per rule and service) and, in
/// [`Mode::Maps`], each rule's peers times its port ranges. A snapshot the
/// server could send within its limits costs at most
/// [`DEFAULT_MAX_ELEMENTS`]; a hostile one (a group "member" of
/// `10.0.0.0/12`, a million addresses) is refused by this count before a
/// single element is made.
pub fn cost(snapshot: &Ruleset, opts: &CompileOptions) -> u128 {
    let mut total = 0u128;
    let mut named = std::collections::HashSet::new();
    for direction in [Direction::Ingress, Direction::Egress] {
        for rule in snapshot.rules(direction) {
            let services = rule.services().len() as u128;
            let hoisted = hoisted(rule, opts.hoist_min_peers);
            for family in [Family::V4, Family::V6] {
                let peers = || rule.peers().iter().filter(move |r| r.family() == family);
                let ranges = peers().count() as u128;
                let set = peer_ref(rule).and_then(|r| set_name(r, family));
                total = total.saturating_add(services);
                total = total.saturating_add(match set {
                    Some(name) => {
                        if named.insert(name) {
                            reference_layout(rule, peers()).1
                        } else {
                            0
                        }
                    }
                    None => ranges.saturating_mul(services),
                });
                if opts.mode == Mode::Maps && !hoisted {
                    let ports: u128 = rule
                        .services()
                        .iter()
                        .map(|s| s.ports.len().max(1) as u128)
                        .sum();
                    total = total.saturating_add(ranges.max(1).saturating_mul(ports));
                }
            }
        }
    }
    total
}

/// The group or template a rule's peer names, when it is a reference: it
/// becomes a named set, so a membership change is an element update.
fn peer_ref(rule: &ResolvedRule) -> Option<&str> {
    match &rule.policy().peer {
        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => None,
        Peer::SecurityGroup(id) => Some(id.as_str()),
        Peer::AddressTemplate(id) => Some(id.as_str()),
        Peer::AddressTemplateGroup(id) => Some(id.as_str()),
    }
}

/// Whether a rule of [`Mode::Maps`] stays a rule of its own that looks up
/// its reference's named set, instead of elements in the verdict maps.
fn hoisted(rule: &ResolvedRule, hoist_min_peers: usize) -> bool {
    peer_ref(rule).is_some() && rule.peers().len() >= hoist_min_peers
}

fn set_name(peer_ref: &str, family: Family) -> Option<String> {
    let base: String = peer_ref
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let fam = match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    };
    Some(format!("{base}_{fam}"))
}

/// The nft match expressions of a rule (one per family and service), each
/// with the named set it uses, if any.
fn rule_matchers(
    rule: &ResolvedRule,
    direction: Direction,
    sets: &mut BTreeMap<String, NamedSet>,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let peers: Vec<AddrRange> = rule
            .peers()
            .iter()
            .filter(|r| r.family() == family)
            .copied()
            .collect();
        let (prefix, field) = addr_field(family, direction);
        let named = peer_ref(rule).and_then(|r| set_name(r, family));
        let (peer_match, set) = match named {
            // A reference: always a named set, even when empty today, so a
            // member joining later is one element add.
            Some(name) => {
                sets.entry(name.clone())
                    .or_insert_with(|| reference_set(name.clone(), family, rule, &peers));
                (format!("{prefix} {field} @{name}"), Some(name))
            }
            None => match literal_peer_match(family, direction, &peers) {
                Some(m) => (m, None),
                None => continue,
            },
        };
        for service in rule.services() {
            let Some(l4) = service_match(service) else {
                continue;
            };
            let m = if l4.is_empty() {
                peer_match.clone()
            } else if set.is_some() {
                // The compares before the set lookup: most packets fail
                // them and skip the lookup.
                format!("{l4} {peer_match}")
            } else {
                format!("{peer_match} {l4}")
            };
            out.push((m, set.clone()));
        }
    }
    out
}

/// The match of literal peers of one family: `None` when there are none,
/// the family alone when they are all of it.
fn literal_peer_match(family: Family, direction: Direction, peers: &[AddrRange]) -> Option<String> {
    let (prefix, field) = addr_field(family, direction);
    if peers.is_empty() {
        return None;
    }
    if peers == [AddrRange::everything(family)] {
        return Some(match family {
            Family::V4 => "meta nfproto ipv4".to_string(),
            Family::V6 => "meta nfproto ipv6".to_string(),
        });
    }
    let list: Vec<String> = peers.iter().map(|e| element(*e)).collect();
    let value = if list.len() == 1 {
        list.join("")
    } else {
        format!("{{ {} }}", list.join(", "))
    };
    Some(format!("{prefix} {field} {value}"))
}

/// The address field a rule's peer is: the source of ingress packets, the
/// destination of egress ones.
fn addr_field(family: Family, direction: Direction) -> (&'static str, &'static str) {
    match (family, direction) {
        (Family::V4, Direction::Ingress) => ("ip", "saddr"),
        (Family::V4, Direction::Egress) => ("ip", "daddr"),
        (Family::V6, Direction::Ingress) => ("ip6", "saddr"),
        (Family::V6, Direction::Egress) => ("ip6", "daddr"),
    }
}

/// The nft matches of a failsafe entry, one per family it covers.
fn failsafe_matchers(f: &Failsafe) -> Vec<String> {
    let Some(l4) = service_match(&f.service()) else {
        return Vec::new();
    };
    let all = f.peers();
    let proto = f.service().protocol;
    [Family::V4, Family::V6]
        .into_iter()
        // ICMP exists only in IPv4 and ICMPv6 only in IPv6: no line that
        // can match nothing.
        .filter(|family| {
            !matches!(
                (proto, family),
                (ProtocolMatch::Number(palisade_policy::ICMP), Family::V6)
                    | (ProtocolMatch::Number(palisade_policy::ICMPV6), Family::V4)
            )
        })
        .filter_map(|family| {
            let peers: Vec<AddrRange> = all
                .iter()
                .filter(|r| r.family() == family)
                .copied()
                .collect();
            let m = literal_peer_match(family, f.direction(), &peers)?;
            Some(if l4.is_empty() {
                m
            } else {
                format!("{m} {l4}")
            })
        })
        .collect()
}

/// The transport part of a match; `None` when the service matches nothing
/// (TCP or UDP with no port); empty when it matches every protocol.
fn service_match(s: &ServiceMatch) -> Option<String> {
    let ProtocolMatch::Number(proto) = s.protocol else {
        return Some(String::new());
    };
    let name = match proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "ipv6-icmp",
        47 => "gre",
        _ => "",
    };
    let l4 = if name.is_empty() {
        format!("meta l4proto {proto}")
    } else {
        format!("meta l4proto {name}")
    };
    if proto != 6 && proto != 17 {
        return Some(l4);
    }
    let ports = palisade_model::proto::merge_ranges(&s.ports);
    if ports.is_empty() {
        return None;
    }
    if ports.len() == 1 && ports[0].lo() == 0 && ports[0].hi() == u16::MAX {
        return Some(l4);
    }
    let list: Vec<String> = ports
        .iter()
        .map(|r| {
            if r.lo() == r.hi() {
                r.lo().to_string()
            } else {
                format!("{}-{}", r.lo(), r.hi())
            }
        })
        .collect();
    let value = if list.len() == 1 {
        list.join("")
    } else {
        format!("{{ {} }}", list.join(", "))
    };
    Some(format!("{name} dport {value}"))
}

/// What follows the baseline in a base chain.
enum Body<'a> {
    /// Linear rules: (match, action, comment).
    Rules(&'a [(String, Action, String)]),
    /// Verdict map lookups.
    Lookups(&'a [String]),
}

/// The conntrack stamp-and-accept, or drop, of a rule of `direction`.
/// A rule's verdict. Accepting rules go to the direction's one stamp chain
/// ([`gen_chains`]), so the generation is written in two small chains and a
/// membership change rewrites those, not every rule.
fn verdict(direction: Direction, action: Action) -> String {
    match action {
        Action::Accept => format!("goto {}_stamp", direction.as_str()),
        Action::Drop => "drop".to_string(),
    }
}

/// The two chains holding a direction's generation: `<dir>_current`
/// (established packets of the original direction stamped with it are
/// accepted; its comment states the stamp, for an agent that restarts)
/// and `<dir>_stamp` (an accepted packet's flow is stamped: the
/// direction's field is set, every other bit of the mark kept).
fn gen_chains(direction: Direction, stamp: Stamp, marks: &MarkBits) -> [Chain; 2] {
    let mask = marks.mask(direction);
    let keep = !mask;
    let value = marks.value(direction, stamp.generation);
    let dir = direction.as_str();
    [
        Chain {
            name: format!("{dir}_current"),
            hook: None,
            rules: vec![format!(
                "ct mark and {mask:#010x} == {value:#010x} counter accept comment \"{}\"",
                stamp.comment(direction, marks)
            )],
        },
        Chain {
            name: format!("{dir}_stamp"),
            hook: None,
            rules: vec![format!(
                "ct mark set ct mark and {keep:#010x} or {value:#010x} accept"
            )],
        },
    ]
}

fn build_chain(direction: Direction, opts: &CompileOptions, body: Body<'_>) -> Chain {
    let uplinks = &opts.uplinks;
    let (name, hook, priority, ifname) = match direction {
        Direction::Ingress => ("ingress", "prerouting", INGRESS_PRIORITY, "iifname"),
        Direction::Egress => ("egress", "postrouting", EGRESS_PRIORITY, "oifname"),
    };
    let bc = |what: &str| baseline_comment(direction, what);
    let ifaces: Vec<String> = uplinks.iter().map(|u| format!("\"{u}\"")).collect();
    let mut rules = vec![
        format!("{ifname} != {{ {} }} return", ifaces.join(", ")),
        format!(
            "icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }} counter accept comment \"{}\"",
            bc("nd")
        ),
        // Multicast listener reports and queries stay on the link (source
        // link-local or `::`, hop limit 1). A switch that snoops MLD
        // forwards solicited-node multicast only to ports that reported
        // it, so dropping them would break neighbour discovery (RFC 4890).
        format!(
            "ip6 saddr {{ ::, fe80::/10 }} icmpv6 type {{ mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }} counter accept comment \"{}\"",
            bc("mld")
        ),
        format!("ct state invalid counter drop comment \"{}\"", bc("invalid")),
        format!("ct state related counter accept comment \"{}\"", bc("related")),
        format!(
            "ct direction reply ct state established counter accept comment \"{}\"",
            bc("reply")
        ),
    ];
    // The agent's own packets to its servers, then the failsafe entries:
    // before the rules and before the fast path, so that no rule, and no
    // change of the rules, ever decides them.
    if let (Direction::Egress, Some(uid)) = (direction, opts.control_uid) {
        rules.push(format!(
            "meta skuid {uid} counter accept comment \"{}\"",
            bc("control plane")
        ));
    }
    for (i, f) in opts.failsafe.iter().enumerate() {
        if f.direction() == direction {
            for m in failsafe_matchers(f) {
                rules.push(format!(
                    "{m} counter accept comment \"{}\"",
                    bc(&format!("failsafe {i}"))
                ));
            }
        }
    }
    rules.push(format!(
        "ct direction original ct state established jump {}_current",
        direction.as_str()
    ));
    match body {
        Body::Rules(matchers) => {
            for (m, action, c) in matchers {
                let v = verdict(direction, *action);
                rules.push(format!("{m} counter {v} comment \"{c}\""));
            }
        }
        Body::Lookups(lookups) => rules.extend(lookups.iter().cloned()),
    }
    rules.extend(opts.decide(direction, Action::Drop, None, &bc("default drop")));
    Chain {
        name: name.to_string(),
        hook: Some((hook, priority)),
        rules,
    }
}

/// The verdict maps of one direction ([`Mode::Maps`]).
#[derive(Default)]
struct MapPlan {
    /// The maps.
    decls: Vec<VerdictMap>,
    /// The base chain's lookups, and the hoisted rules between them.
    lookups: Vec<String>,
    /// Per rule: its chain, action and comment.
    rule_chains: Vec<(String, Action, String)>,
    /// The named sets the hoisted rules look up.
    used_sets: Vec<String>,
    /// Everything the direction's generation depends on but those sets'
    /// elements.
    digest_input: String,
    /// The same without the maps' elements.
    shape_input: String,
}

fn map_plan(
    rules: &[ResolvedRule],
    direction: Direction,
    hoist_min_peers: usize,
    sets: &mut BTreeMap<String, NamedSet>,
) -> MapPlan {
    let dir = direction.as_str();
    let mut plan = MapPlan::default();
    // The rules since the last hoisted one are one segment of maps. Packets
    // that reach a segment were decided by no rule before it, so its rules
    // are decided among themselves.
    let (mut start, mut seg_no) = (0, 0);
    for (pos, rule) in rules.iter().enumerate() {
        let chain = format!("{dir}_r{pos}");
        let c = comment(rule, direction);
        let _ = writeln!(plan.digest_input, "{chain} {} {c}", rule.action());
        let _ = writeln!(plan.shape_input, "{chain} {} {c}", rule.action());
        plan.rule_chains.push((chain.clone(), rule.action(), c));
        if hoisted(rule, hoist_min_peers) {
            segment_maps(
                &mut plan,
                direction,
                seg_no,
                start,
                &rules[start..pos],
                false,
            );
            (start, seg_no) = (pos + 1, seg_no + 1);
            for (m, set) in rule_matchers(rule, direction, sets) {
                let line = format!("{m} jump {chain}");
                let _ = writeln!(plan.digest_input, "{line}");
                let _ = writeln!(plan.shape_input, "{line}");
                plan.lookups.push(line);
                plan.used_sets.extend(set);
            }
        }
    }
    // A direction with no rules in the maps at all still gets its six
    // (empty) maps, so the table keeps its shape as rules come and go.
    segment_maps(
        &mut plan,
        direction,
        seg_no,
        start,
        &rules[start..],
        seg_no == 0,
    );
    plan
}

/// The maps of one segment of [`map_plan`], `rules` (the rules from
/// position `start`), when it has rules or `always`: each rule's decided
/// set (`policy`'s decomposition, within the segment) as elements jumping
/// to the rule's chain. Six maps: a family each; TCP and UDP keyed by
/// address and port, the other protocols by address and protocol. A map
/// per transport protocol, not one keyed by protocol too: a packet's
/// lookup meets half the elements and one field fewer (the lookup's cost
/// grows with both), and the protocol is one compare before it. Segment
/// 0's maps have plain names (`ingress_v4_tcp`); later ones are numbered
/// (`ingress_v4_tcp_1`).
fn segment_maps(
    plan: &mut MapPlan,
    direction: Direction,
    seg_no: usize,
    start: usize,
    rules: &[ResolvedRule],
    always: bool,
) {
    if rules.is_empty() && !always {
        return;
    }
    let dir = direction.as_str();
    // [family][TCP, UDP, other protocols] -> elements
    let mut elements: [[Vec<String>; 3]; 2] = Default::default();
    for (i, decided) in palisade_policy::decided_sets(rules).iter().enumerate() {
        let chain = format!("{dir}_r{}", start + i);
        for b in decided.boxes() {
            let fam = usize::from(b.peers.family() == Family::V6);
            let addr = element(b.peers);
            for (kind, p) in [6u8, 17].into_iter().enumerate() {
                if b.protocol_lo <= p && p <= b.protocol_hi {
                    elements[fam][kind].push(format!(
                        "{addr} . {} : jump {chain}",
                        range_text(u32::from(b.ports.lo()), u32::from(b.ports.hi()))
                    ));
                }
            }
            let mut lo = u32::from(b.protocol_lo);
            let hi = u32::from(b.protocol_hi);
            for cut in [6u32, 17, 256] {
                if lo > hi {
                    break;
                }
                let end = hi.min(cut.saturating_sub(1));
                if lo <= end {
                    elements[fam][2]
                        .push(format!("{addr} . {} : jump {chain}", range_text(lo, end)));
                }
                lo = lo.max(cut + 1);
            }
        }
    }
    let number = if seg_no == 0 {
        String::new()
    } else {
        format!("_{seg_no}")
    };
    for (fam, (nfproto, addr_type, field)) in
        [("ipv4", "ipv4_addr", "ip"), ("ipv6", "ipv6_addr", "ip6")]
            .into_iter()
            .enumerate()
    {
        let peer = match direction {
            Direction::Ingress => format!("{field} saddr"),
            Direction::Egress => format!("{field} daddr"),
        };
        let fam_tag = if fam == 0 { "v4" } else { "v6" };
        for (kind, (suffix, ty, key, guard)) in [
            (
                "tcp",
                "{A} . inet_service",
                "{P} . th dport",
                "meta l4proto tcp ",
            ),
            (
                "udp",
                "{A} . inet_service",
                "{P} . th dport",
                "meta l4proto udp ",
            ),
            ("other", "{A} . inet_proto", "{P} . meta l4proto", ""),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{dir}_{fam_tag}_{suffix}{number}");
            let ty = ty.replace("{A}", addr_type);
            let key = key.replace("{P}", &peer);
            let map = VerdictMap {
                name,
                key_type: ty,
                elements: std::mem::take(&mut elements[fam][kind]),
            };
            let _ = writeln!(plan.digest_input, "{}", map.declaration());
            let _ = writeln!(plan.shape_input, "map {} {}", map.name, map.key_type);
            plan.lookups.push(format!(
                "meta nfproto {nfproto} {guard}{key} vmap @{}",
                map.name
            ));
            plan.decls.push(map);
        }
    }
}

/// Feeds the elements of the named sets a direction uses to its
/// generation's hash.
fn hash_sets(h: &mut Sha256, sets: &BTreeMap<String, NamedSet>, mut used: Vec<String>) {
    used.sort();
    used.dedup();
    for name in &used {
        if let Some(s) = sets.get(name) {
            h.update(name.as_bytes());
            for e in &s.elements {
                h.update(format!(" {}", element(*e)).as_bytes());
            }
            h.update(b"\n");
        }
    }
}

fn range_text(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// The IP of a range's first address (for tests and messages).
pub fn first_ip(r: AddrRange) -> std::net::IpAddr {
    u128_to_ip(r.family(), r.lo())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Cidr, PortRange};
    use palisade_policy::codec::parse_addr_range;
    use palisade_policy::Failsafe;
    use palisade_policy::RuleOrigin;

    fn rule(
        group: &str,
        index: usize,
        action: Action,
        proto: Option<u8>,
        ports: &[(u16, u16)],
        peers: &[&str],
    ) -> ResolvedRule {
        let ports = if ports.is_empty() {
            vec![PortRange::new(0, u16::MAX).unwrap()]
        } else {
            ports
                .iter()
                .map(|(a, b)| PortRange::new(*a, *b).unwrap())
                .collect()
        };
        ResolvedRule::from_sets(
            RuleOrigin {
                security_group_id: group.parse().unwrap(),
                direction: Direction::Ingress,
                policy_index: index,
            },
            action,
            vec![ServiceMatch {
                protocol: proto.map_or(ProtocolMatch::All, ProtocolMatch::Number),
                ports,
            }],
            peers
                .iter()
                .map(|p| parse_addr_range("t", p).unwrap())
                .collect(),
            Peer::Cidr(Cidr::parse_v4("t", "0.0.0.0/0").unwrap()),
        )
    }

    fn opts() -> CompileOptions {
        CompileOptions {
            uplinks: vec!["eth0".into()],
            ..Default::default()
        }
    }

    fn snapshot_of(ingress: Vec<ResolvedRule>) -> Ruleset {
        Ruleset {
            security_groups: Vec::new(),
            ingress,
            egress: Vec::new(),
        }
    }

    /// `r` with its peer written as a reference to `name`.
    fn referencing(r: ResolvedRule, name: &str) -> ResolvedRule {
        let peer = match name.split('-').next() {
            Some("sg") => Peer::SecurityGroup(name.parse().unwrap()),
            Some("ipmg") => Peer::AddressTemplateGroup(name.parse().unwrap()),
            _ => Peer::AddressTemplate(name.parse().unwrap()),
        };
        let peers = r.peers().to_vec();
        r.with_peer(peer, peers)
    }

    /// `r` with these peers.
    fn with_peers(r: ResolvedRule, peers: Vec<AddrRange>) -> ResolvedRule {
        let peer = r.policy().peer.clone();
        r.with_peer(peer, peers)
    }

    /// The count agrees with what compiling builds, a shared set is counted
    /// once, and a snapshot over the budget is refused before anything is
    /// expanded.
    /// The agent's own packets and the failsafe entries are accepted
    /// before the fast path and every rule, each in its direction, in both
    /// modes; the control exemption is an egress match on the socket's
    /// owner only.
    #[test]
    fn control_plane_and_failsafe_lines_come_before_the_rules() {
        let failsafe = [
            "tcp:22@198.51.100.0/24",
            "ingress:icmpv6@2001:db8::/32",
            "egress:udp:53",
        ]
        .map(|t| Failsafe::parse_field("--failsafe", t).expect("valid"))
        .to_vec();
        for mode in [Mode::Linear, Mode::Maps] {
            let o = CompileOptions {
                mode,
                failsafe: failsafe.clone(),
                control_uid: Some(4242),
                ..opts()
            };
            let c = compile(&seed_node(), &o).expect("compiles");
            let chain = |name: &str| {
                c.chains
                    .iter()
                    .find(|ch| ch.name == name)
                    .expect("chain")
                    .rules
                    .clone()
            };
            let (ingress, egress) = (chain("ingress"), chain("egress"));
            let at = |rules: &[String], needle: &str| {
                rules
                    .iter()
                    .position(|r| r.contains(needle))
                    .unwrap_or_else(|| panic!("{needle} in {rules:#?}"))
            };
            let fast = |rules: &[String]| at(rules, "jump ");
            assert!(at(&egress, "meta skuid 4242 counter accept") < fast(&egress));
            assert!(!ingress.iter().any(|r| r.contains("skuid")));
            assert!(
                at(
                    &ingress,
                    "ip saddr 198.51.100.0/24 tcp dport 22 counter accept"
                ) < fast(&ingress)
            );
            assert!(
                at(
                    &ingress,
                    "ip6 saddr 2001:db8::/32 meta l4proto ipv6-icmp counter accept"
                ) < fast(&ingress)
            );
            assert!(!ingress.iter().any(|r| r.contains("udp dport 53")));
            assert!(at(&egress, "meta nfproto ipv4 udp dport 53 counter accept") < fast(&egress));
            assert!(at(&egress, "meta nfproto ipv6 udp dport 53 counter accept") < fast(&egress));
            // A change of the entries is a whole-table load, never an
            // element update.
            let fewer = compile(
                &seed_node(),
                &CompileOptions {
                    failsafe: Vec::new(),
                    ..o.clone()
                },
            )
            .expect("compiles");
            assert!(fewer.set_deltas(&c).is_none());
        }
    }

    #[test]
    fn the_budget_counts_what_compiling_builds() {
        let tcp = Some(6);
        let group = referencing(
            rule(
                "sg-aaaaaaaa",
                0,
                Action::Accept,
                tcp,
                &[(22, 22)],
                &["10.1.0.0/24"],
            ),
            "sg-bbbbbbbb",
        );
        let template = referencing(
            rule(
                "sg-aaaaaaaa",
                1,
                Action::Accept,
                tcp,
                &[(80, 80)],
                &["10.2.0.0/16", "10.4.0.1-10.4.0.9"],
            ),
            "ipm-cccccccc",
        );
        let inline = rule(
            "sg-aaaaaaaa",
            2,
            Action::Drop,
            None,
            &[],
            &["192.0.2.0/24", "2001:db8::/32"],
        );
        let again = referencing(
            rule(
                "sg-aaaaaaaa",
                3,
                Action::Drop,
                tcp,
                &[(443, 443)],
                &["10.1.0.0/24"],
            ),
            "sg-bbbbbbbb",
        );
        let snap = snapshot_of(vec![group, template, inline, again]);
        // Rules: 4 rules x 2 families x 1 service. Sets: sg-b's 256
        // addresses one by one (v4; its v6 set is empty), ipm-c's 2 ranges;
        // sg-bbbbbbbb again: nothing more. Inline: 1 range per family.
        assert_eq!(cost(&snap, &opts()), 8 + 256 + 2 + 2);
        let c = compile(&snap, &opts()).expect("compiles");
        assert_eq!(c.element_count(), 256 + 2);
        let exact = CompileOptions {
            max_elements: 268,
            ..opts()
        };
        assert!(compile(&snap, &exact).is_ok(), "at the budget");
        let under = CompileOptions {
            max_elements: 267,
            ..opts()
        };
        assert_eq!(
            compile(&snap, &under),
            Err(CompileError::OverBudget {
                needed: 268,
                max: 267
            })
        );

        // Hostile: 100 groups each "holding" 10.0.0.0/12, 100 million
        // addresses in all. Refused by counting: compiling would first
        // build the sets, so a quick answer shows nothing was expanded.
        let wide: Vec<ResolvedRule> = (0..100)
            .map(|i| {
                referencing(
                    rule(
                        "sg-aaaaaaaa",
                        i,
                        Action::Accept,
                        tcp,
                        &[(22, 22)],
                        &["10.0.0.0/12"],
                    ),
                    &format!("sg-w{i:07}"),
                )
            })
            .collect();
        let snap = snapshot_of(wide);
        assert_eq!(cost(&snap, &opts()), 200 + 100 * (1 << 20));
        let started = std::time::Instant::now();
        assert!(matches!(
            compile(&snap, &opts()),
            Err(CompileError::OverBudget { needed, max: DEFAULT_MAX_ELEMENTS })
                if needed == 200 + 100 * (1 << 20)
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    fn seed_node() -> Ruleset {
        Ruleset {
            security_groups: Vec::new(),
            ingress: vec![
                rule(
                    "sg-node0001",
                    0,
                    Action::Accept,
                    None,
                    &[],
                    &["198.19.0.0/16"],
                ),
                rule(
                    "sg-node0001",
                    1,
                    Action::Accept,
                    None,
                    &[],
                    &["198.18.0.0/16"],
                ),
                rule(
                    "sg-node0001",
                    2,
                    Action::Accept,
                    Some(6),
                    &[(30000, 32768)],
                    &["0.0.0.0/0"],
                ),
                rule(
                    "sg-node0001",
                    3,
                    Action::Accept,
                    Some(17),
                    &[(30000, 32768)],
                    &["0.0.0.0/0"],
                ),
                rule(
                    "sg-node0001",
                    4,
                    Action::Accept,
                    Some(1),
                    &[],
                    &["0.0.0.0/0"],
                ),
            ],
            egress: vec![rule(
                "sg-node0001",
                0,
                Action::Accept,
                None,
                &[],
                &["0.0.0.0/0"],
            )],
        }
    }

    fn chain<'a>(c: &'a Compiled, name: &str) -> &'a Chain {
        c.chains.iter().find(|ch| ch.name == name).unwrap()
    }

    #[test]
    fn seed_node_group_compiles_to_the_expected_rules() {
        let c = compile(&seed_node(), &opts()).unwrap();
        let ingress = chain(&c, "ingress");
        assert_eq!(ingress.hook, Some(("prerouting", -150)));
        assert_eq!(ingress.rules[0], "iifname != { \"eth0\" } return");
        assert_eq!(c.stamps[0].generation, 1, "offline output: generation 1");
        let body: Vec<&str> = ingress.rules[7..].iter().map(String::as_str).collect();
        let acc = "goto ingress_stamp";
        assert_eq!(
            chain(&c, "ingress_stamp").rules,
            vec!["ct mark set ct mark and 0xfffff000 or 0x00000001 accept".to_string()]
        );
        assert_eq!(
            body,
            vec![
                format!("ip saddr 198.19.0.0/16 counter {acc} comment \"sg-node0001 ingress 0\""),
                format!("ip saddr 198.18.0.0/16 counter {acc} comment \"sg-node0001 ingress 1\""),
                format!("meta nfproto ipv4 tcp dport 30000-32768 counter {acc} comment \"sg-node0001 ingress 2\""),
                format!("meta nfproto ipv4 udp dport 30000-32768 counter {acc} comment \"sg-node0001 ingress 3\""),
                format!("meta nfproto ipv4 meta l4proto icmp counter {acc} comment \"sg-node0001 ingress 4\""),
                "counter drop comment \"palisade ingress default drop\"".to_string(),
            ]
        );
        let egress = chain(&c, "egress");
        assert_eq!(egress.hook, Some(("postrouting", 150)));
        assert!(egress.rules[0].starts_with("oifname != "));
        assert!(egress.rules[7].ends_with("goto egress_stamp comment \"sg-node0001 egress 0\""));
        assert_eq!(
            chain(&c, "egress_stamp").rules,
            ["ct mark set ct mark and 0xff000fff or 0x00001000 accept"],
            "the egress field, every other bit kept"
        );
        assert!(chain(&c, "egress_current").rules[0].starts_with(
            "ct mark and 0x00fff000 == 0x00001000 counter accept comment \"palisade egress current mask 0x00fff000 stamp 0x1 floor 0xfff rules "
        ));
        assert!(c.script().contains(
            "add table inet palisade\ndelete table inet palisade\ntable inet palisade {"
        ));
    }

    #[test]
    fn maps_mode_puts_decided_sets_in_verdict_maps() {
        let o = CompileOptions {
            mode: Mode::Maps,
            ..opts()
        };
        let c = compile(&seed_node(), &o).unwrap();
        let text = c.script();
        assert!(text.contains("map ingress_v4_tcp { type ipv4_addr . inet_service : verdict; flags interval; elements = {"));
        assert!(text.contains("map ingress_v4_udp { type ipv4_addr . inet_service : verdict; flags interval; elements = {"));
        assert!(text.contains("map ingress_v4_other { type ipv4_addr . inet_proto : verdict; flags interval; elements = {"));
        // Rule 2 (TCP NodePorts from anywhere) decides what rules 0 and 1 left.
        assert!(
            text.contains("0.0.0.0-198.17.255.255 . 30000-32768 : jump ingress_r2"),
            "{text}"
        );
        assert!(text.contains("198.20.0.0-255.255.255.255 . 30000-32768 : jump ingress_r2"));
        // ALL from the pod CIDR: every protocol, split around TCP and UDP.
        let elements =
            |name: &str| -> &[String] { &c.maps.iter().find(|m| m.name == name).unwrap().elements };
        for name in ["ingress_v4_tcp", "ingress_v4_udp"] {
            assert!(elements(name).contains(&"198.19.0.0/16 . 0-65535 : jump ingress_r0".into()));
        }
        // NodePorts are TCP: nothing of rule 2 in the UDP map.
        assert!(elements("ingress_v4_udp")
            .iter()
            .all(|e| !e.ends_with("ingress_r2")));
        assert!(text.contains("198.19.0.0/16 . 0-5 : jump ingress_r0"));
        assert!(text.contains("198.19.0.0/16 . 7-16 : jump ingress_r0"));
        assert!(text.contains("198.19.0.0/16 . 18-255 : jump ingress_r0"));
        assert!(text.contains(
            "meta nfproto ipv4 meta l4proto tcp ip saddr . th dport vmap @ingress_v4_tcp"
        ));
        assert!(text.contains(
            "meta nfproto ipv4 meta l4proto udp ip saddr . th dport vmap @ingress_v4_udp"
        ));
        assert!(text.contains("meta nfproto ipv4 ip saddr . meta l4proto vmap @ingress_v4_other"));
        assert!(text.contains("ip daddr . meta l4proto vmap @egress_v4_other"));
        let r2 = c.chains.iter().find(|ch| ch.name == "ingress_r2").unwrap();
        assert_eq!(r2.hook, None);
        assert!(r2.rules[0].ends_with("goto ingress_stamp comment \"sg-node0001 ingress 2\""));
        assert_eq!(c, compile(&seed_node(), &o).unwrap(), "deterministic");
        assert_eq!(c.stamps.map(|s| s.generation), [1, 1]);
    }

    #[test]
    fn baseline_comes_first_in_order() {
        let c = compile(&Ruleset::default(), &opts()).unwrap();
        let r = &chain(&c, "ingress").rules;
        assert!(r[1].starts_with("icmpv6 type { nd-neighbor-solicit"));
        assert!(r[2].starts_with("ip6 saddr { ::, fe80::/10 } icmpv6 type { mld-listener-query"));
        assert!(r[3].starts_with("ct state invalid counter drop"));
        assert!(r[4].starts_with("ct state related"));
        assert!(r[5].starts_with("ct direction reply ct state established"));
        assert_eq!(
            r[6],
            "ct direction original ct state established jump ingress_current"
        );
        assert!(chain(&c, "ingress_current").rules[0].contains("ct mark and 0x00000fff =="));
        assert_eq!(r.len(), 8, "no rules: baseline then default drop");
    }

    #[test]
    fn protocols_without_ports_never_use_th_dport() {
        let s = Ruleset {
            ingress: vec![
                rule(
                    "sg-aaaaaaaa",
                    0,
                    Action::Drop,
                    Some(1),
                    &[],
                    &["192.0.2.0/24"],
                ),
                rule(
                    "sg-aaaaaaaa",
                    1,
                    Action::Accept,
                    Some(58),
                    &[],
                    &["2001:db8::/32"],
                ),
                rule(
                    "sg-aaaaaaaa",
                    2,
                    Action::Accept,
                    Some(47),
                    &[],
                    &["192.0.2.1", "2001:db8::1"],
                ),
                rule(
                    "sg-aaaaaaaa",
                    3,
                    Action::Accept,
                    Some(6),
                    &[(22, 22), (80, 80), (8000, 8100)],
                    &["192.0.2.1"],
                ),
            ],
            ..Default::default()
        };
        let c = compile(&s, &opts()).unwrap();
        let text = c.script();
        assert!(!text.contains("th dport"));
        assert!(text.contains(
            "ip saddr 192.0.2.0/24 meta l4proto icmp counter drop comment \"sg-aaaaaaaa ingress 0\""
        ));
        assert!(text.contains("ip6 saddr 2001:db8::/32 meta l4proto ipv6-icmp counter"));
        assert!(text.contains("ip saddr 192.0.2.1 meta l4proto gre counter"));
        assert!(text.contains("ip6 saddr 2001:db8::1 meta l4proto gre counter"));
        assert!(text.contains("ip saddr 192.0.2.1 tcp dport { 22, 80, 8000-8100 } counter"));
    }

    #[test]
    fn references_become_named_sets_and_deltas() {
        let r = referencing(
            rule(
                "sg-aaaaaaaa",
                0,
                Action::Accept,
                None,
                &[],
                &["198.18.0.1", "198.18.0.5"],
            ),
            "sg-bbbbbbbb",
        );
        let s1 = Ruleset {
            ingress: vec![r.clone()],
            egress: vec![r.clone()],
            ..Default::default()
        };
        let c1 = compile(&s1, &opts()).unwrap();
        assert_eq!(c1.sets.len(), 2);
        assert_eq!(c1.sets[0].name, "sg_bbbbbbbb_v4");
        assert_eq!(c1.sets[1].name, "sg_bbbbbbbb_v6");
        assert!(c1.sets[1].elements.is_empty());
        let text = c1.script();
        assert!(text.contains("ip saddr @sg_bbbbbbbb_v4"));
        assert!(text.contains("ip6 saddr @sg_bbbbbbbb_v6"));
        assert!(text.contains("ip daddr @sg_bbbbbbbb_v4"));
        assert!(text.contains("elements = { 198.18.0.1, 198.18.0.5 }"));

        let r = with_peers(
            r,
            vec![
                parse_addr_range("t", "198.18.0.1").unwrap(),
                parse_addr_range("t", "2001:db8::7").unwrap(),
            ],
        );
        let s2 = Ruleset {
            ingress: vec![r.clone()],
            egress: vec![r],
            ..Default::default()
        };
        let c2 = compile(&s2, &opts()).unwrap();
        assert_ne!(
            c1.rules_digests()[0],
            c2.rules_digests()[0],
            "a membership change is a change of what ingress allows"
        );
        let d = c2.set_deltas(&c1).unwrap();
        assert_eq!(d.sets.len(), 2);
        let script = c2.delta_script(&d);
        assert!(script.starts_with("delete element inet palisade sg_bbbbbbbb_v4 { 198.18.0.5 }\nadd element inet palisade sg_bbbbbbbb_v6 { 2001:db8::7 }\ninsert rule inet palisade ingress_current return\ninsert rule inet palisade ingress_current ct mark and 0x00000fff == "));
        assert!(!script.contains("flush"), "adds only: {script}");
        assert!(
            crate::session::NftSession::fits(&script),
            "a delta goes through the agent's nft session: {script}"
        );
        assert!(
            !script.contains("flush chain inet palisade ingress\n"),
            "the rules are not rewritten"
        );
        // A different rule list is no delta.
        assert!(compile(&seed_node(), &opts())
            .unwrap()
            .set_deltas(&c1)
            .is_none());
    }

    #[test]
    fn group_members_are_a_hash_set_and_templates_an_interval_set() {
        let by_group = referencing(
            rule(
                "sg-aaaaaaaa",
                0,
                Action::Accept,
                None,
                &[],
                &["198.18.0.1-198.18.0.3"],
            ),
            "sg-bbbbbbbb",
        );
        let by_template = referencing(
            rule(
                "sg-aaaaaaaa",
                1,
                Action::Accept,
                None,
                &[],
                &["192.0.2.0/24"],
            ),
            "ipm-office01",
        );
        let s = Ruleset {
            ingress: vec![by_group.clone(), by_template],
            ..Default::default()
        };
        let c = compile(&s, &opts()).unwrap();
        let group = c.sets.iter().find(|s| s.name == "sg_bbbbbbbb_v4").unwrap();
        assert!(!group.interval);
        assert_eq!(group.declaration(), "type ipv4_addr;");
        // The resolver's merged range is split into the members again.
        let members: Vec<String> = group.elements.iter().map(|e| element(*e)).collect();
        assert_eq!(members, ["198.18.0.1", "198.18.0.2", "198.18.0.3"]);
        let template = c.sets.iter().find(|s| s.name == "ipm_office01_v4").unwrap();
        assert!(template.interval);
        assert_eq!(template.declaration(), "type ipv4_addr; flags interval;");
        let text = c.script();
        assert!(text.contains("set sg_bbbbbbbb_v4 {\n\t\ttype ipv4_addr\n\t\telements = {"));
        assert!(text.contains("set ipm_office01_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n"));
        // A member joining is an element add to the hash set.
        let by_group = with_peers(
            by_group,
            vec![parse_addr_range("t", "198.18.0.1-198.18.0.4").unwrap()],
        );
        let s2 = Ruleset {
            ingress: vec![by_group, s.ingress[1].clone()],
            ..Default::default()
        };
        let d = compile(&s2, &opts()).unwrap().set_deltas(&c).unwrap();
        assert_eq!(d.sets.len(), 1);
        assert_eq!(d.sets[0].name, "sg_bbbbbbbb_v4");
        assert_eq!(element(d.sets[0].add[0]), "198.18.0.4");
        assert!(d.sets[0].delete.is_empty());
    }

    #[test]
    fn element_diff_merges_sorted_lists_and_hashes_unsorted_ones() {
        let r = |t: &str| parse_addr_range("t", t).unwrap();
        let old = [r("198.18.0.1"), r("198.18.0.3"), r("198.18.0.9")];
        let new = [
            r("198.18.0.1"),
            r("198.18.0.4"),
            r("198.18.0.9"),
            r("198.18.1.0/24"),
        ];
        let (add, delete) = element_diff(&new, &old);
        assert_eq!(add, [r("198.18.0.4"), r("198.18.1.0/24")]);
        assert_eq!(delete, [r("198.18.0.3")]);
        let shuffled = [r("198.18.0.9"), r("198.18.0.1"), r("198.18.0.4")];
        let (add, delete) = element_diff(&shuffled, &old);
        assert_eq!(add, [r("198.18.0.4")]);
        assert_eq!(delete, [r("198.18.0.3")]);
        assert_eq!(element_diff(&old, &old), (vec![], vec![]));
    }

    #[test]
    fn large_references_stay_rules_of_their_own_between_map_segments() {
        let snap = |members: &[&str]| {
            let narrow = rule(
                "sg-aaaaaaaa",
                0,
                Action::Accept,
                Some(6),
                &[(22, 22)],
                &["198.18.1.0/24"],
            );
            let by_group = referencing(
                rule(
                    "sg-aaaaaaaa",
                    1,
                    Action::Accept,
                    Some(6),
                    &[(80, 80)],
                    members,
                ),
                "sg-bbbbbbbb",
            );
            let wide = rule(
                "sg-aaaaaaaa",
                2,
                Action::Drop,
                None,
                &[],
                &["198.18.0.0/16"],
            );
            Ruleset {
                ingress: vec![narrow, by_group, wide],
                ..Default::default()
            }
        };
        let hoisting = CompileOptions {
            mode: Mode::Maps,
            hoist_min_peers: 2,
            ..opts()
        };
        let c1 = compile(&snap(&["198.18.0.1", "198.18.0.3"]), &hoisting).unwrap();
        let ingress = chain(&c1, "ingress");
        let at = |needle: &str| {
            ingress
                .rules
                .iter()
                .position(|r| r.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {:#?}", ingress.rules))
        };
        // Segment 0 (rule 0), the reference looking its set up, segment 1
        // (rule 2): in list order.
        let hoisted = at("tcp dport 80 ip saddr @sg_bbbbbbbb_v4 jump ingress_r1");
        assert!(at("vmap @ingress_v4_tcp") < hoisted);
        assert!(hoisted < at("vmap @ingress_v4_tcp_1"));
        let map = |c: &Compiled, name: &str| -> Vec<String> {
            c.maps
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .elements
                .clone()
        };
        assert_eq!(
            map(&c1, "ingress_v4_tcp"),
            ["198.18.1.0/24 . 22 : jump ingress_r0"]
        );
        assert!(map(&c1, "ingress_v4_udp").is_empty());
        // Packets reaching segment 1 were decided by no earlier rule: its
        // rule is not cut around rule 0's or the members' addresses.
        for name in ["ingress_v4_tcp_1", "ingress_v4_udp_1"] {
            assert_eq!(
                map(&c1, name),
                ["198.18.0.0/16 . 0-65535 : jump ingress_r2"]
            );
        }
        assert!(c1
            .sets
            .iter()
            .any(|s| s.name == "sg_bbbbbbbb_v4" && s.elements.len() == 2));
        // A member joining is one element of the group's set: no map changes,
        // a new digest.
        let c2 = compile(
            &snap(&["198.18.0.1", "198.18.0.3", "198.18.0.5"]),
            &hoisting,
        )
        .unwrap();
        assert_ne!(c1.rules_digests(), c2.rules_digests());
        let d = c2.set_deltas(&c1).expect("same shape: a delta");
        assert!(d.maps.is_empty(), "{d:?}");
        assert_eq!(d.sets.len(), 1);
        assert_eq!(element(d.sets[0].add[0]), "198.18.0.5");
        // Under the threshold the reference is in the maps, as before.
        let c3 = compile(
            &snap(&["198.18.0.1"]),
            &CompileOptions {
                mode: Mode::Maps,
                ..opts()
            },
        )
        .unwrap();
        assert!(c3.sets.is_empty());
        assert!(c3.maps.iter().all(|m| !m.name.ends_with("_1")));
        assert!(
            map(&c3, "ingress_v4_tcp").contains(&"198.18.0.1 . 80 : jump ingress_r1".to_string())
        );
        // Crossing it changes the table's shape: a whole-table load.
        assert!(c1.set_deltas(&c3).is_none());
    }

    #[test]
    fn maps_mode_membership_changes_are_map_element_deltas() {
        let o = CompileOptions {
            mode: Mode::Maps,
            ..opts()
        };
        let snap = |members: &str| {
            let by_group = referencing(
                rule(
                    "sg-aaaaaaaa",
                    0,
                    Action::Accept,
                    Some(6),
                    &[(22, 22)],
                    &[members],
                ),
                "sg-bbbbbbbb",
            );
            // A later rule whose decided set the group's members cut.
            let wide = rule(
                "sg-aaaaaaaa",
                1,
                Action::Drop,
                None,
                &[],
                &["198.18.0.0/24"],
            );
            Ruleset {
                ingress: vec![by_group, wide],
                ..Default::default()
            }
        };
        let c1 = compile(&snap("198.18.0.1"), &o).unwrap();
        let c2 = compile(&snap("198.18.0.1-198.18.0.2"), &o).unwrap();
        assert_ne!(c1.rules_digests(), c2.rules_digests());
        let d = c2.set_deltas(&c1).expect("same shape: a delta");
        assert!(d.sets.is_empty());
        let ports = d.maps.iter().find(|m| m.name == "ingress_v4_tcp").unwrap();
        // The member's TCP 22 joins rule 0; rule 1's pieces around it change.
        assert!(ports
            .add
            .contains(&"198.18.0.1-198.18.0.2 . 22 : jump ingress_r0".to_string()));
        assert!(ports.delete.contains(&"198.18.0.1 . 22".to_string()));
        let script = c2.delta_script(&d);
        let first_add = script.find("add element").unwrap();
        assert!(
            script.find("delete element").unwrap() < first_add,
            "deletes first"
        );
        assert!(!script.contains("flush"));
        assert!(crate::session::NftSession::fits(&script), "{script}");
        // Applying the delta to the old map gives the new one.
        let mut map = c1
            .maps
            .iter()
            .find(|m| m.name == "ingress_v4_tcp")
            .unwrap()
            .clone();
        map.elements
            .retain(|e| !ports.delete.iter().any(|k| k == map_key(e)));
        map.elements.extend(ports.add.iter().cloned());
        map.elements.sort();
        let mut want = c2
            .maps
            .iter()
            .find(|m| m.name == "ingress_v4_tcp")
            .unwrap()
            .elements
            .clone();
        want.sort();
        assert_eq!(map.elements, want);
        // A different rule list is no delta.
        let mut other = snap("198.18.0.1");
        other.ingress.pop();
        assert!(compile(&other, &o).unwrap().set_deltas(&c1).is_none());
    }

    #[test]
    fn same_rules_same_generation() {
        let a = compile(&seed_node(), &opts()).unwrap();
        let b = compile(&seed_node(), &opts()).unwrap();
        assert_eq!(a, b);
        let mut changed = seed_node();
        changed.ingress.remove(0);
        let c = compile(&changed, &opts()).unwrap();
        assert_ne!(a.rules_digests()[0], c.rules_digests()[0]);
        assert_eq!(
            a.rules_digests()[1],
            c.rules_digests()[1],
            "egress unchanged keeps its digest (and so its stamp)"
        );
    }

    #[test]
    fn bad_uplinks_are_refused() {
        for bad in ["", "eth0\" accept", "a very long interface name", "eth 0"] {
            let o = CompileOptions {
                uplinks: vec![bad.into()],
                ..Default::default()
            };
            assert!(compile(&Ruleset::default(), &o).is_err(), "{bad}");
        }
        let o = CompileOptions::default();
        assert_eq!(
            compile(&Ruleset::default(), &o),
            Err(CompileError::NoUplink)
        );
    }

    #[test]
    fn empty_port_list_and_empty_peers_compile_to_no_rule() {
        let s = Ruleset {
            ingress: vec![
                {
                    let r = rule(
                        "sg-aaaaaaaa",
                        0,
                        Action::Accept,
                        Some(6),
                        &[],
                        &["192.0.2.1"],
                    );
                    let no_ports = ServiceMatch {
                        protocol: ProtocolMatch::Number(6),
                        ports: vec![],
                    };
                    let peer = r.policy().peer.clone();
                    ResolvedRule::from_sets(
                        r.origin().clone(),
                        r.action(),
                        vec![no_ports],
                        r.peers().to_vec(),
                        peer,
                    )
                },
                rule("sg-aaaaaaaa", 1, Action::Accept, None, &[], &[]),
            ],
            ..Default::default()
        };
        let c = compile(&s, &opts()).unwrap();
        assert_eq!(chain(&c, "ingress").rules.len(), 8);
    }
}
