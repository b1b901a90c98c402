//! The `Dataplane` trait: everything that needs root sits behind it
//! (DESIGN.md section 1, the kube-proxy / knftables split of STYLE.md). The
//! sync and reconcile logic of [`crate::agent`] is written against the
//! trait and tested with [`FakeDataplane`]; [`crate::nft::NftDataplane`] is
//! the real one.

use crate::compile::{map_key, Compiled, Deltas};
use crate::error::AgentError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A rule counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What the kernel holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    /// A hash of the table's definition with counters and handles left out:
    /// it changes when anyone edits the table.
    pub fingerprint: String,
    /// Counters summed per rule comment (`sg-1a2b3c4d ingress 3`,
    /// `palisade ingress default drop`, ...).
    pub counters: BTreeMap<String, Counter>,
    /// The comment of each chain's first rule that has one, by chain name:
    /// `ingress_current` and `egress_current` state the stamps in force
    /// ([`crate::stamp::Stamp::comment`]).
    pub heads: BTreeMap<String, String>,
}

/// Loads compiled rulesets into a packet filter and reads them back.
pub trait Dataplane {
    /// Replaces the whole table with `compiled`, atomically for the rules:
    /// packets see the old rule list or the new one.
    fn apply(&mut self, compiled: &Compiled) -> Result<(), AgentError>;

    /// Applies element changes of named sets and verdict maps and puts
    /// `compiled`'s generations in force, in one transaction. `compiled`
    /// must differ from what is loaded only in elements (see
    /// [`Compiled::set_deltas`]).
    fn apply_deltas(&mut self, compiled: &Compiled, deltas: &Deltas) -> Result<(), AgentError>;

    /// Reads the table, or `None` when there is none.
    fn read(&mut self) -> Result<Option<LiveTable>, AgentError>;

    /// Clears the `ct mark` bits of `mask` in every conntrack entry,
    /// leaving the other bits as they are; returns how many entries had
    /// some of them set ([`crate::stamp`]: before a stamp value is reused).
    fn clear_marks(&mut self, mask: u32) -> Result<usize, AgentError>;

    /// The packet filter's ruleset generation: a number that changes on
    /// every committed change to any table. `None` when this dataplane
    /// cannot tell; the agent then reads the table every step.
    fn generation(&mut self) -> Result<Option<u32>, AgentError> {
        Ok(None)
    }

    /// Rule counters summed per comment (empty when there is no table).
    fn counters(&mut self) -> Result<BTreeMap<String, Counter>, AgentError> {
        Ok(self.read()?.map(|t| t.counters).unwrap_or_default())
    }
}

/// An in-memory dataplane for tests: it holds the last program, lets a test
/// delete or edit it "by hand", and records what was done.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    /// The loaded program (sets updated by deltas), if any.
    pub table: Option<Compiled>,
    /// Set when the table was edited behind the agent's back.
    pub tampered: bool,
    /// Counters to report.
    pub counters: BTreeMap<String, Counter>,
    /// One entry per operation: `apply`, `deltas N`.
    pub log: Vec<String>,
    /// When set, the next operation fails with this message.
    pub fail_next: Option<String>,
    /// The ruleset generation, bumped by every change (`None`: the fake
    /// does not tell, as a dataplane without one).
    pub generation: Option<u32>,
    /// How many times the table was read.
    pub reads: usize,
    /// The masks of the `ct mark` clears asked for, in order.
    pub clears: Vec<u32>,
    /// When set, clears fail (conntrack unreachable).
    pub fail_clears: bool,
}

impl FakeDataplane {
    /// An empty kernel that tells its ruleset generation.
    pub fn new() -> Self {
        Self {
            generation: Some(0),
            ..Self::default()
        }
    }

    /// Simulates `nft delete table inet palisade`.
    pub fn delete_table(&mut self) {
        self.table = None;
        self.commit();
    }

    /// Simulates someone adding a rule by hand.
    pub fn tamper(&mut self) {
        self.tampered = true;
        self.commit();
    }

    /// Simulates a change to another table (the generation moves, this
    /// table stays).
    pub fn commit(&mut self) {
        if let Some(g) = self.generation.as_mut() {
            *g = g.wrapping_add(1);
        }
    }

    fn check_failure(&mut self) -> Result<(), AgentError> {
        match self.fail_next.take() {
            Some(msg) => Err(AgentError::Nft {
                command: "fake".into(),
                stderr: msg,
            }),
            None => Ok(()),
        }
    }
}

impl Dataplane for FakeDataplane {
    fn apply(&mut self, compiled: &Compiled) -> Result<(), AgentError> {
        self.check_failure()?;
        self.table = Some(compiled.clone());
        self.tampered = false;
        self.commit();
        self.log.push("apply".into());
        Ok(())
    }

    fn apply_deltas(&mut self, compiled: &Compiled, deltas: &Deltas) -> Result<(), AgentError> {
        self.check_failure()?;
        let Some(table) = self.table.as_mut() else {
            return Err(AgentError::Nft {
                command: "fake".into(),
                stderr: "No such file or directory: table inet palisade".into(),
            });
        };
        for d in &deltas.sets {
            let Some(set) = table.sets.iter_mut().find(|s| s.name == d.name) else {
                return Err(AgentError::Nft {
                    command: "fake".into(),
                    stderr: format!("no set {}", d.name),
                });
            };
            set.elements.retain(|e| !d.delete.contains(e));
            set.elements.extend(d.add.iter().copied());
            set.elements.sort();
        }
        for d in &deltas.maps {
            let Some(map) = table.maps.iter_mut().find(|m| m.name == d.name) else {
                return Err(AgentError::Nft {
                    command: "fake".into(),
                    stderr: format!("no map {}", d.name),
                });
            };
            map.elements
                .retain(|e| !d.delete.iter().any(|k| k == map_key(e)));
            map.elements.extend(d.add.iter().cloned());
            map.elements.sort();
        }
        table.chains = compiled.chains.clone();
        table.stamps = compiled.stamps;
        self.commit();
        self.log
            .push(format!("deltas {}", deltas.sets.len() + deltas.maps.len()));
        Ok(())
    }

    fn read(&mut self) -> Result<Option<LiveTable>, AgentError> {
        self.check_failure()?;
        self.reads += 1;
        Ok(self.table.as_ref().map(|t| {
            let mut h = Sha256::new();
            h.update(t.script().as_bytes());
            if self.tampered {
                h.update(b"tampered");
            }
            let heads = t
                .chains
                .iter()
                .filter_map(|c| {
                    let (_, comment) = c.rules.iter().find_map(|r| r.split_once(" comment \""))?;
                    Some((c.name.clone(), comment.trim_end_matches('"').to_string()))
                })
                .collect();
            LiveTable {
                fingerprint: hex::encode(h.finalize()),
                counters: self.counters.clone(),
                heads,
            }
        }))
    }

    fn clear_marks(&mut self, mask: u32) -> Result<usize, AgentError> {
        self.check_failure()?;
        if self.fail_clears {
            return Err(AgentError::Netlink("conntrack: permission denied".into()));
        }
        self.clears.push(mask);
        Ok(0)
    }

    fn generation(&mut self) -> Result<Option<u32>, AgentError> {
        Ok(self.generation)
    }

    fn counters(&mut self) -> Result<BTreeMap<String, Counter>, AgentError> {
        self.check_failure()?;
        Ok(match self.table {
            Some(_) => self.counters.clone(),
            None => BTreeMap::new(),
        })
    }
}

/// `--dry-run`: prints each program it is asked to load to standard output,
/// exactly as it would be loaded (each opens with its `# Palisade` comment
/// line), and loads nothing. It reports back what it "loaded", so a running agent
/// prints once per change, not once per second.
#[derive(Debug, Default)]
pub struct DryRunDataplane {
    inner: FakeDataplane,
}

impl DryRunDataplane {
    /// A dry run.
    pub fn new() -> Self {
        Self {
            inner: FakeDataplane::new(),
        }
    }
}

impl Dataplane for DryRunDataplane {
    fn apply(&mut self, compiled: &Compiled) -> Result<(), AgentError> {
        print!("{}", compiled.script());
        self.inner.apply(compiled)
    }

    fn apply_deltas(&mut self, compiled: &Compiled, deltas: &Deltas) -> Result<(), AgentError> {
        print!("{}", compiled.delta_script(deltas));
        self.inner.apply_deltas(compiled, deltas)
    }

    fn read(&mut self) -> Result<Option<LiveTable>, AgentError> {
        self.inner.read()
    }

    /// Nothing was loaded, so nothing was stamped.
    fn clear_marks(&mut self, _mask: u32) -> Result<usize, AgentError> {
        Ok(0)
    }

    fn generation(&mut self) -> Result<Option<u32>, AgentError> {
        self.inner.generation()
    }
}
