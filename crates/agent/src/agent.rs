//! The sync and reconcile loop (DESIGN.md section 4). Each [`Agent::step`]:
//!
//! 1. asks the server for the instance's snapshot (registering the instance
//!    first if the server does not know it) and compiles it;
//! 2. reconciles the kernel with the last good compilation: nothing to do
//!    when the loaded table is the one it loaded (the ruleset generation has
//!    not moved since it read its load back, or else the table's
//!    fingerprint is the same); element
//!    updates when only set or verdict-map elements changed; a whole-table
//!    replace otherwise, including when the table was deleted or edited by
//!    hand;
//! 3. reports the applied revision, counters and last error, when the
//!    server supports it.
//!
//! Fail-static: a server that cannot be reached, or a snapshot that does
//! not compile, leaves the kernel as it is; the agent never deletes the
//! table, not even on exit. A restart ends in the same reconcile: the
//! dataplane is wrapped in [`Stamping`], which reads the stamps in force
//! back from the table, so the same rules keep the same generations and
//! established connections that are still allowed are not disturbed; a
//! change takes the next generation ([`crate::stamp`]).

use crate::client::{AgentStatus, ControlPlane, RuleCounter};
use crate::compile::{compile, CompileOptions, Compiled};
use crate::dataplane::Dataplane;
use crate::error::AgentError;
use crate::stamp::Stamping;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often counters are reported when nothing changes.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The instance this agent enforces.
    pub instance_id: String,
    /// Compiler options (uplinks).
    pub compile: CompileOptions,
    /// Private IPs to register the instance with when the server lacks it.
    pub private_ips: Vec<String>,
    /// Time between steps (at most 1 s for the 2 s restore promise).
    pub interval: Duration,
    /// Whether to send `ReportInstanceStatus` (off for dry runs).
    pub report: bool,
    /// Whether to register the instance when the server lacks it (off for
    /// dry runs, which write nothing to the server either).
    pub register: bool,
    /// Where the last applied ruleset is kept for the next boot
    /// ([`Agent::boot`]); `None` keeps nothing.
    pub boot_state: Option<std::path::PathBuf>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The instance was registered with the server.
    Registered,
    /// A new revision was loaded by replacing the table.
    Replaced {
        /// The revision.
        revision: u64,
    },
    /// A new revision was loaded by set element updates.
    Updated {
        /// The revision.
        revision: u64,
    },
    /// The table was missing or edited and was restored.
    Restored {
        /// The revision restored.
        revision: u64,
    },
    /// The server could not be asked; the kernel keeps its rules.
    ServerUnavailable(String),
    /// The server refused the agent's credentials (`AuthFailure.*`): not
    /// an outage, so retrying as it is will not help until the key is
    /// fixed; the kernel keeps its rules.
    KeyRefused(String),
    /// The server does not know the instance and the agent may not
    /// register it (a dry run).
    NotRegistered(String),
    /// Loading or reading the kernel table failed.
    DataplaneFailed(String),
    /// The snapshot was refused (bad JSON, bad options).
    Rejected(String),
    /// At start there was no table: the last applied ruleset, kept on
    /// disk, was loaded until the server answers ([`Agent::boot`]).
    BootRestored {
        /// Its revision.
        revision: u64,
    },
    /// At start there was no table and no usable kept ruleset (the reason
    /// given): the failsafe entries alone were loaded, over a default drop.
    BootFailsafe(String),
    /// The applied ruleset could not be kept for the next boot.
    NotKept(String),
}

struct Applied {
    revision: u64,
    compiled: Compiled,
    fingerprint: String,
    /// The ruleset generation when the fingerprint was taken, if it held
    /// still during the read.
    generation: Option<u32>,
}

/// One node's agent over a dataplane and a control plane.
pub struct Agent<D: Dataplane, C: ControlPlane> {
    dataplane: Stamping<D>,
    control: C,
    config: AgentConfig,
    desired: Option<(u64, Compiled)>,
    applied: Option<Applied>,
    registered: bool,
    report_supported: bool,
    last_error: String,
    last_report: Option<Instant>,
    /// The fetched ruleset awaiting its load, encoded, to be kept for the
    /// next boot once it is loaded (with [`AgentConfig::boot_state`]).
    to_keep: Option<(u64, Vec<u8>)>,
}

impl<D: Dataplane, C: ControlPlane> Agent<D, C> {
    /// A new agent; nothing happens until [`Agent::step`].
    pub fn new(dataplane: D, control: C, config: AgentConfig) -> Self {
        Self {
            dataplane: Stamping::new(dataplane),
            control,
            report_supported: config.report,
            config,
            desired: None,
            applied: None,
            registered: false,
            last_error: String::new(),
            last_report: None,
            to_keep: None,
        }
    }

    /// What a node holds before its agent has reached a server: when the
    /// kernel has a table already (the agent restarted), it stays
    /// (fail-static). When there is none (the node booted), the last
    /// applied ruleset kept in [`AgentConfig::boot_state`] is compiled with
    /// today's options and loaded; without a usable one, an empty ruleset
    /// is: the failsafe entries and the agent's own connections pass, and
    /// everything else on the uplinks is dropped (fail-safe). Either way
    /// the first answer of a server replaces it.
    pub fn boot(&mut self) -> Vec<Event> {
        match self.dataplane.read() {
            Ok(Some(_)) => return Vec::new(),
            Ok(None) => {}
            Err(e) => return vec![Event::DataplaneFailed(e.to_string())],
        }
        let kept = match &self.config.boot_state {
            None => Err("no state directory".to_string()),
            Some(path) => kept_ruleset(path, &self.config.instance_id),
        };
        let restored = kept.and_then(|wire| {
            let revision = wire.revision;
            let opts = CompileOptions {
                enforcement: wire.enforcement,
                ..self.config.compile.clone()
            };
            let ruleset = wire.into_ruleset().map_err(|e| e.to_string())?;
            let compiled = compile(&ruleset, &opts).map_err(|e| e.to_string())?;
            self.dataplane.apply(&compiled).map_err(|e| e.to_string())?;
            Ok(revision)
        });
        let why = match restored {
            Ok(revision) => return vec![Event::BootRestored { revision }],
            Err(why) => why,
        };
        let failsafe = compile(&palisade_policy::Ruleset::default(), &self.config.compile)
            .map_err(AgentError::from)
            .and_then(|c| self.dataplane.apply(&c));
        match failsafe {
            Ok(()) => vec![Event::BootFailsafe(why)],
            Err(e) => vec![Event::DataplaneFailed(e.to_string())],
        }
    }

    /// The dataplane (for tests).
    pub fn dataplane(&mut self) -> &mut D {
        &mut self.dataplane.inner
    }

    /// The control plane (for tests).
    pub fn control(&mut self) -> &mut C {
        &mut self.control
    }

    /// The revision the kernel holds, if the agent loaded one.
    pub fn applied_revision(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.revision)
    }

    /// The compiled program the agent wants loaded, as compiled (with
    /// [`crate::stamp::Stamp::offline`]; the loaded one carries the
    /// agent's stamps).
    pub fn desired(&self) -> Option<&Compiled> {
        self.desired.as_ref().map(|(_, c)| c)
    }

    /// Fetches, compiles, reconciles and reports once.
    pub fn step(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.sync(&mut events);
        self.reconcile(&mut events);
        self.report(&events);
        events
    }

    /// Steps until `stop` is set, at least `interval` apart (a long poll
    /// of the server takes up to `interval` itself); `on_event` sees each
    /// event.
    pub fn run(&mut self, stop: &AtomicBool, mut on_event: impl FnMut(&Event)) {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            for e in self.step() {
                on_event(&e);
            }
            let spent = started.elapsed();
            if spent < self.config.interval {
                std::thread::sleep(self.config.interval - spent);
            }
        }
    }

    fn sync(&mut self, events: &mut Vec<Event>) {
        let wire = match self.fetch(events) {
            Ok(w) => w,
            Err(e) => {
                self.last_error = e.to_string();
                let code = e.api_code().unwrap_or_default();
                events.push(if code.starts_with("AuthFailure") {
                    Event::KeyRefused(e.to_string())
                } else if matches!(e, AgentError::BadRuleset(_)) {
                    Event::Rejected(e.to_string())
                } else if code.starts_with("ResourceNotFound") && !self.config.register {
                    Event::NotRegistered(e.to_string())
                } else {
                    Event::ServerUnavailable(e.to_string())
                });
                return;
            }
        };
        if self
            .desired
            .as_ref()
            .is_some_and(|(rev, _)| *rev == wire.revision)
        {
            return;
        }
        let revision = wire.revision;
        let encoded = self
            .config
            .boot_state
            .as_ref()
            .and_then(|_| serde_json::to_vec(&wire).ok());
        // The server says whether the instance is enforced or audited.
        let opts = CompileOptions {
            enforcement: wire.enforcement,
            ..self.config.compile.clone()
        };
        let compiled = wire
            .into_ruleset()
            .map_err(AgentError::BadRuleset)
            .and_then(|r| compile(&r, &opts).map_err(AgentError::from));
        match compiled {
            Ok(c) => {
                self.desired = Some((revision, c));
                self.to_keep = encoded.map(|bytes| (revision, bytes));
            }
            Err(e) => {
                self.last_error = e.to_string();
                events.push(Event::Rejected(e.to_string()));
            }
        }
    }

    fn fetch(
        &mut self,
        events: &mut Vec<Event>,
    ) -> Result<palisade_protocol::service::InstanceRuleset, AgentError> {
        let after = self.desired.as_ref().map(|(rev, _)| *rev);
        // A long poll of whole seconds within the interval (none below 1 s),
        // at most 5 s for the HTTP timeout and the server's limit; `run`
        // sleeps out the rest of a longer interval.
        let wait = Duration::from_secs(self.config.interval.as_secs().min(5));
        match self.control.ruleset(&self.config.instance_id, after, wait) {
            Err(e)
                if !self.registered
                    && e.api_code()
                        .is_some_and(|c| c.starts_with("ResourceNotFound")) =>
            {
                if !self.config.register || self.config.private_ips.is_empty() {
                    return Err(e);
                }
                self.control
                    .register(&self.config.instance_id, &self.config.private_ips)?;
                self.registered = true;
                events.push(Event::Registered);
                self.control.ruleset(&self.config.instance_id, None, wait)
            }
            other => {
                if other.is_ok() {
                    self.registered = true;
                }
                other
            }
        }
    }

    fn reconcile(&mut self, events: &mut Vec<Event>) {
        let Some((revision, desired)) = self.desired.clone() else {
            return;
        };
        // The ruleset generation has not moved since the agent's own load
        // was read back: nobody committed anything, so the table is the one
        // it loaded, and the (at large sizes costly) read is skipped.
        let generation = self.dataplane.generation().ok().flatten();
        let unmoved = matches!(
            (&self.applied, generation),
            (Some(a), Some(g)) if a.generation == Some(g)
        );
        let intact = unmoved || {
            let live = match self.dataplane.read() {
                Ok(l) => l,
                Err(e) => {
                    self.last_error = e.to_string();
                    events.push(Event::DataplaneFailed(e.to_string()));
                    return;
                }
            };
            let intact = match (&self.applied, &live) {
                (Some(a), Some(l)) => a.fingerprint == l.fingerprint,
                _ => false,
            };
            // Someone changed another table: remember the new generation,
            // if it held still across the read.
            if intact && generation.is_some() {
                let after = self.dataplane.generation().ok().flatten();
                if let Some(a) = self.applied.as_mut() {
                    a.generation = generation.filter(|_| after == generation);
                }
            }
            intact
        };
        let result = match &self.applied {
            Some(a) if intact && a.compiled == desired => return,
            Some(a) if intact => match desired.set_deltas(&a.compiled) {
                Some(deltas) => self
                    .dataplane
                    .apply_deltas(&desired, &deltas)
                    .or_else(|_| self.dataplane.apply(&desired))
                    .map(|()| Event::Updated { revision }),
                None => self
                    .dataplane
                    .apply(&desired)
                    .map(|()| Event::Replaced { revision }),
            },
            Some(a) if a.compiled == desired => self
                .dataplane
                .apply(&desired)
                .map(|()| Event::Restored { revision }),
            _ => self
                .dataplane
                .apply(&desired)
                .map(|()| Event::Replaced { revision }),
        };
        let event = match result {
            Ok(ev) => ev,
            Err(e) => {
                self.last_error = e.to_string();
                events.push(Event::DataplaneFailed(e.to_string()));
                return;
            }
        };
        // Read back what was loaded, for its fingerprint, between two looks
        // at the generation: when they agree, nothing else was committed
        // during the read.
        let before = self.dataplane.generation().ok().flatten();
        match self.dataplane.read() {
            Ok(Some(l)) => {
                let after = self.dataplane.generation().ok().flatten();
                self.applied = Some(Applied {
                    revision,
                    compiled: desired,
                    fingerprint: l.fingerprint,
                    generation: before.filter(|_| after == before),
                });
                self.last_error.clear();
                events.push(event);
                self.keep(revision, events);
            }
            Ok(None) => {
                self.applied = None;
                events.push(Event::DataplaneFailed(
                    "the table vanished right after loading".into(),
                ));
            }
            Err(e) => {
                self.applied = None;
                events.push(Event::DataplaneFailed(e.to_string()));
            }
        }
    }

    /// Writes the ruleset of `revision`, just loaded, for the next boot.
    fn keep(&mut self, revision: u64, events: &mut Vec<Event>) {
        let Some(path) = &self.config.boot_state else {
            return;
        };
        let Some((_, bytes)) = self.to_keep.take_if(|(kept, _)| *kept == revision) else {
            return;
        };
        let (dir, name) = (path.parent(), path.file_name().and_then(|n| n.to_str()));
        let (Some(dir), Some(name)) = (dir, name) else {
            return;
        };
        if let Err(e) = crate::identity::write_private(dir, name, &bytes) {
            events.push(Event::NotKept(e.to_string()));
        }
    }

    fn report(&mut self, events: &[Event]) {
        if !self.report_supported {
            return;
        }
        let due = match self.last_report {
            None => true,
            Some(t) => t.elapsed() >= REPORT_EVERY,
        };
        if events.is_empty() && !due {
            return;
        }
        let Some(applied_revision) = self.applied_revision() else {
            return;
        };
        let counters = match self.dataplane.counters() {
            Ok(c) => c
                .into_iter()
                .filter_map(|(comment, c)| {
                    let mut parts = comment.split(' ');
                    let (Some(group), Some(direction), Some(index), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return None;
                    };
                    if !group.starts_with("sg-") {
                        return None;
                    }
                    Some(RuleCounter {
                        security_group_id: group.to_string(),
                        direction: direction.to_string(),
                        policy_index: index.parse().ok()?,
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let status = AgentStatus {
            instance_id: self.config.instance_id.clone(),
            applied_revision,
            errors: if self.last_error.is_empty() {
                Vec::new()
            } else {
                vec![self.last_error.clone()]
            },
            counters,
            failsafe: self.config.compile.failsafe.clone(),
        };
        self.last_report = Some(Instant::now());
        if let Err(e) = self.control.report(&status) {
            // A server without the action: stop asking.
            if e.api_code()
                .is_some_and(|c| c == "InvalidAction" || c.starts_with("InvalidAction"))
            {
                self.report_supported = false;
            }
        }
    }
}

/// The ruleset kept at `path` for `instance`, or why there is none to use.
fn kept_ruleset(
    path: &std::path::Path,
    instance: &str,
) -> Result<palisade_protocol::service::InstanceRuleset, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let wire: palisade_protocol::service::InstanceRuleset = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a kept ruleset: {e}", path.display()))?;
    if wire.instance_id != instance {
        return Err(format!(
            "{}: kept for instance {}, not {instance}",
            path.display(),
            wire.instance_id
        ));
    }
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AgentStatus;
    use crate::dataplane::FakeDataplane;
    use palisade_policy::Failsafe;
    use palisade_protocol::service::InstanceRuleset;

    #[derive(Default)]
    struct FakeServer {
        ruleset: Option<InstanceRuleset>,
        down: bool,
        /// The Tencent code every call fails with, if any.
        refuse: Option<&'static str>,
        registered: Vec<String>,
        reports: Vec<AgentStatus>,
        /// Answer with a rule whose protocol does not parse.
        garbled: bool,
    }

    impl ControlPlane for FakeServer {
        fn ruleset(
            &mut self,
            id: &str,
            _after: Option<u64>,
            _wait: Duration,
        ) -> Result<InstanceRuleset, AgentError> {
            if let Some(code) = self.refuse {
                return Err(AgentError::Api {
                    action: "DescribeInstanceRuleset".into(),
                    code: code.into(),
                    message: "the key is refused".into(),
                });
            }
            if self.down {
                return Err(AgentError::Transport {
                    action: "DescribeInstanceRuleset".into(),
                    message: "connection refused".into(),
                });
            }
            if self.garbled {
                let rule = r#"{"security_group_id":"sg-aaaaaaaa","direction":"ingress",
                    "policy_index":0,"action":"ACCEPT","policy":{"Protocol":"TCP","Port":"22",
                    "CidrBlock":"198.18.0.0/15","Action":"ACCEPT"},
                    "services":[{"protocol":"NOPE","ports":"22"}],"peers":[]}"#;
                let answer = format!(
                    r#"{{"Response":{{"Ruleset":{{"InstanceId":"{id}","Revision":3,"Ingress":[{rule}]}}}}}}"#
                );
                return crate::client::decode_ruleset(answer.as_bytes());
            }
            match &self.ruleset {
                Some(r) => Ok(r.clone()),
                None => Err(AgentError::Api {
                    action: "DescribeInstanceRuleset".into(),
                    code: "ResourceNotFound".into(),
                    message: id.to_string(),
                }),
            }
        }
        fn register(&mut self, id: &str, _ips: &[String]) -> Result<(), AgentError> {
            self.registered.push(id.into());
            self.ruleset = Some(ruleset(1, &[]));
            Ok(())
        }
        fn report(&mut self, s: &AgentStatus) -> Result<(), AgentError> {
            self.reports.push(s.clone());
            Ok(())
        }
    }

    fn ruleset(revision: u64, members: &[&str]) -> InstanceRuleset {
        ruleset_on_port(revision, members, 22)
    }

    fn ruleset_on_port(revision: u64, members: &[&str], port: u16) -> InstanceRuleset {
        serde_json::from_value(serde_json::json!({
            "InstanceId": "ins-node0001",
            "Revision": revision,
            "Ingress": [{"security_group_id": "sg-aaaaaaaa", "direction": "ingress",
                "policy_index": 0, "action": "ACCEPT",
                "policy": {"Protocol": "TCP", "Port": port.to_string(),
                           "SecurityGroupId": "sg-bbbbbbbb", "Action": "ACCEPT"},
                "services": [{"protocol": 6, "ports": port.to_string()}], "peers": members}],
        }))
        .expect("a well-formed answer")
    }

    fn agent(server: FakeServer) -> Agent<FakeDataplane, FakeServer> {
        agent_on(FakeDataplane::new(), server)
    }

    fn agent_on(dp: FakeDataplane, server: FakeServer) -> Agent<FakeDataplane, FakeServer> {
        Agent::new(
            dp,
            server,
            AgentConfig {
                instance_id: "ins-node0001".into(),
                compile: CompileOptions {
                    uplinks: vec!["eth0".into()],
                    ..Default::default()
                },
                private_ips: vec!["198.18.0.11".into()],
                interval: Duration::from_millis(10),
                report: true,
                register: true,
                boot_state: None,
            },
        )
    }

    #[test]
    fn registers_then_applies_then_idles() {
        let mut a = agent(FakeServer::default());
        let ev = a.step();
        assert_eq!(ev, vec![Event::Registered, Event::Replaced { revision: 1 }]);
        assert_eq!(a.control().registered, vec!["ins-node0001".to_string()]);
        assert!(a.step().is_empty());
        assert_eq!(a.dataplane().log, vec!["apply".to_string()]);
        assert_eq!(a.control().reports[0].applied_revision, 1);
    }

    /// A dry run (`palisade agent --dry-run`) neither registers the
    /// instance nor reports its status: it writes nothing to the server.
    #[test]
    fn a_dry_run_writes_nothing_to_the_server() {
        let mut a = agent(FakeServer::default());
        a.config.register = false;
        a.report_supported = false;
        let ev = a.step();
        assert!(
            matches!(ev.as_slice(), [Event::NotRegistered(e)] if e.contains("ResourceNotFound")),
            "{ev:?}"
        );
        assert!(a.control().registered.is_empty(), "not registered");
        a.control().ruleset = Some(ruleset(2, &[]));
        assert_eq!(a.step(), vec![Event::Replaced { revision: 2 }]);
        assert!(a.control().registered.is_empty());
        assert!(a.control().reports.is_empty(), "no status report");
    }

    #[test]
    fn membership_change_is_an_element_update_and_rules_change_a_replace() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &["198.18.0.1"])),
            ..Default::default()
        });
        a.step();
        a.control().ruleset = Some(ruleset(3, &["198.18.0.1", "198.18.0.9"]));
        assert_eq!(a.step(), vec![Event::Updated { revision: 3 }]);
        let set = &a.dataplane().table.as_ref().unwrap().sets[0];
        assert_eq!(set.elements.len(), 2);
        a.control().ruleset = Some(ruleset_on_port(4, &["198.18.0.1"], 23));
        assert_eq!(a.step(), vec![Event::Replaced { revision: 4 }]);
        assert_eq!(a.dataplane().log, vec!["apply", "deltas 1", "apply"]);
    }

    /// The generations in force (ingress, egress).
    fn generations(a: &mut Agent<FakeDataplane, FakeServer>) -> [u32; 2] {
        let table = a.dataplane().table.as_ref().unwrap();
        table.stamps.map(|s| s.generation)
    }

    #[test]
    fn stamps_follow_changes_and_are_read_back_on_a_restart() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &["198.18.0.1"])),
            ..Default::default()
        });
        a.step();
        // A node without a table: its bits cleared once, then generation 1,
        // the program `palisade nft compile` prints (and `--dry-run`).
        assert_eq!(a.dataplane().clears, vec![0x00ff_ffff]);
        assert_eq!(generations(&mut a), [1, 1]);
        let offline = a.desired().unwrap().script();
        assert_eq!(a.dataplane().table.as_ref().unwrap().script(), offline);
        // A member joining: an element update with the next ingress
        // generation; egress did not change.
        a.control().ruleset = Some(ruleset(3, &["198.18.0.1", "198.18.0.9"]));
        assert_eq!(a.step(), vec![Event::Updated { revision: 3 }]);
        assert_eq!(generations(&mut a), [2, 1]);
        // A restart over the same kernel: the stamps are read back, the
        // same rules keep them, nothing is cleared.
        let kernel = std::mem::take(a.dataplane());
        let mut b = agent_on(
            kernel,
            FakeServer {
                ruleset: Some(ruleset(3, &["198.18.0.1", "198.18.0.9"])),
                ..Default::default()
            },
        );
        assert_eq!(b.step(), vec![Event::Replaced { revision: 3 }]);
        assert_eq!(generations(&mut b), [2, 1]);
        assert_eq!(b.dataplane().clears, vec![0x00ff_ffff]);
        b.control().ruleset = Some(ruleset(4, &["198.18.0.9"]));
        assert_eq!(b.step(), vec![Event::Updated { revision: 4 }]);
        assert_eq!(generations(&mut b), [3, 1]);
        // A table the agent cannot read its stamps from: cleared before
        // and after the load.
        b.dataplane().table.as_mut().unwrap().chains.clear();
        let kernel = std::mem::take(b.dataplane());
        let mut c = agent_on(
            kernel,
            FakeServer {
                ruleset: Some(ruleset(4, &["198.18.0.9"])),
                ..Default::default()
            },
        );
        c.step();
        assert_eq!(c.dataplane().clears[1..], [0x00ff_ffff, 0x00ff_ffff]);
        assert_eq!(generations(&mut c), [1, 1]);
    }

    #[test]
    fn a_failed_clear_loads_nothing() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.dataplane().fail_clears = true;
        assert!(
            matches!(a.step().as_slice(), [Event::DataplaneFailed(e)] if e.contains("conntrack"))
        );
        assert!(a.dataplane().table.is_none(), "no stamp without its clear");
        a.dataplane().fail_clears = false;
        assert_eq!(a.step(), vec![Event::Replaced { revision: 2 }]);
        assert_eq!(a.dataplane().clears, vec![0x00ff_ffff]);
    }

    #[test]
    fn deleted_or_edited_table_is_restored() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.step();
        a.dataplane().delete_table();
        assert_eq!(a.step(), vec![Event::Restored { revision: 2 }]);
        a.dataplane().tamper();
        assert_eq!(a.step(), vec![Event::Restored { revision: 2 }]);
        assert!(a.step().is_empty());
    }

    #[test]
    fn idle_steps_skip_the_read_while_the_generation_holds() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &["198.18.0.1"])),
            ..Default::default()
        });
        a.step();
        let reads = a.dataplane().reads;
        for _ in 0..5 {
            assert!(a.step().is_empty());
        }
        assert_eq!(a.dataplane().reads, reads, "no read while nothing moved");
        // A change to another table moves the generation: one read finds
        // this table intact, and the steps after it skip the read again.
        a.dataplane().commit();
        assert!(a.step().is_empty());
        assert_eq!(a.dataplane().reads, reads + 1);
        assert!(a.step().is_empty());
        assert_eq!(a.dataplane().reads, reads + 1);
        assert_eq!(a.dataplane().log, vec!["apply".to_string()]);
        // An element update is read back once, for its fingerprint.
        a.control().ruleset = Some(ruleset(3, &["198.18.0.1", "198.18.0.2"]));
        assert_eq!(a.step(), vec![Event::Updated { revision: 3 }]);
        assert_eq!(a.dataplane().reads, reads + 2);
        // An edit after it is still seen and undone.
        a.dataplane().tamper();
        assert_eq!(a.step(), vec![Event::Restored { revision: 3 }]);
    }

    #[test]
    fn without_a_generation_every_step_reads_and_edits_are_restored() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.dataplane().generation = None;
        a.step();
        let reads = a.dataplane().reads;
        assert!(a.step().is_empty());
        assert_eq!(a.dataplane().reads, reads + 1);
        a.dataplane().tamper();
        assert_eq!(a.step(), vec![Event::Restored { revision: 2 }]);
        a.dataplane().delete_table();
        assert_eq!(a.step(), vec![Event::Restored { revision: 2 }]);
    }

    #[test]
    fn server_down_is_fail_static() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.step();
        a.control().down = true;
        let ev = a.step();
        assert!(matches!(ev.as_slice(), [Event::ServerUnavailable(_)]));
        assert!(a.dataplane().table.is_some(), "rules stay");
        // And the kernel is still reconciled with the last good snapshot.
        a.dataplane().delete_table();
        let ev = a.step();
        assert!(ev.contains(&Event::Restored { revision: 2 }));
    }

    /// At boot with no table: the last applied ruleset kept on disk is
    /// loaded before any server answers; without one, the failsafe
    /// entries alone over a default drop. A table already there (the agent
    /// restarted) stays as it is.
    #[test]
    fn a_boot_loads_the_kept_ruleset_or_the_failsafe_entries_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = dir.path().join("state").join("ruleset-ins-node0001.json");
        let with_state = |a: &mut Agent<FakeDataplane, FakeServer>| {
            a.config.boot_state = Some(kept.clone());
            a.config.compile.failsafe =
                vec![Failsafe::parse_field("--failsafe", "tcp:22@198.51.100.0/24").expect("valid")];
        };
        // First start, server down, nothing kept: failsafe only.
        let mut a = agent(FakeServer {
            down: true,
            ..Default::default()
        });
        with_state(&mut a);
        let ev = a.boot();
        assert!(matches!(ev.as_slice(), [Event::BootFailsafe(_)]), "{ev:?}");
        let script = a.dataplane().table.as_ref().expect("loaded").script();
        assert!(
            script.contains("ip saddr 198.51.100.0/24 tcp dport 22 counter accept"),
            "{script}"
        );
        assert!(!script.contains("sg-"), "no group rule: {script}");
        // The server answers: its revision is loaded and kept.
        a.control().down = false;
        a.control().ruleset = Some(ruleset(4, &["198.18.0.12"]));
        assert!(a.step().contains(&Event::Replaced { revision: 4 }));
        assert!(kept.exists(), "kept for the next boot");
        // A restarted agent over a live table changes nothing at boot.
        let table = a.dataplane().table.clone();
        let mut again = agent_on(
            FakeDataplane {
                table: table.clone(),
                ..FakeDataplane::new()
            },
            FakeServer {
                down: true,
                ..Default::default()
            },
        );
        with_state(&mut again);
        assert!(again.boot().is_empty());
        assert!(again.dataplane().log.is_empty());
        // A reboot (no table), server down: the kept revision 4 is loaded.
        let mut rebooted = agent(FakeServer {
            down: true,
            ..Default::default()
        });
        with_state(&mut rebooted);
        assert_eq!(rebooted.boot(), vec![Event::BootRestored { revision: 4 }]);
        let script = rebooted
            .dataplane()
            .table
            .as_ref()
            .expect("loaded")
            .script();
        assert!(script.contains("198.18.0.12"), "{script}");
        // A kept file of another instance, or garbled, is not loaded.
        std::fs::write(&kept, b"{not json").expect("write");
        let mut garbled = agent(FakeServer {
            down: true,
            ..Default::default()
        });
        with_state(&mut garbled);
        assert!(
            matches!(garbled.boot().as_slice(), [Event::BootFailsafe(why)] if why.contains("not a kept ruleset"))
        );
    }

    /// A refused key is not an outage: it is named as such, every step
    /// while it lasts, and the kernel keeps its rules.
    #[test]
    fn a_refused_key_is_not_a_server_outage() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.step();
        for code in [
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.SignatureFailure",
        ] {
            a.control().refuse = Some(code);
            let ev = a.step();
            assert!(
                matches!(ev.as_slice(), [Event::KeyRefused(e)] if e.contains(code)),
                "{ev:?}"
            );
            assert_eq!(a.applied_revision(), Some(2), "the rules stay");
        }
        a.control().refuse = None;
        assert!(a.step().is_empty());
    }

    #[test]
    fn dataplane_failure_is_retried() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.dataplane().fail_next = Some("boom".into());
        assert!(matches!(a.step().as_slice(), [Event::DataplaneFailed(_)]));
        assert_eq!(a.step(), vec![Event::Replaced { revision: 2 }]);
    }

    #[test]
    fn bad_snapshot_keeps_the_old_rules() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &[])),
            ..Default::default()
        });
        a.step();
        a.control().garbled = true;
        assert!(matches!(a.step().as_slice(), [Event::Rejected(_)]));
        assert_eq!(a.applied_revision(), Some(2));
    }

    /// A group "member" of 10.0.0.0/12 would be a million hash-set
    /// elements: the budget refuses it by counting, the loaded rules stay,
    /// and the refusal is reported to the server.
    #[test]
    fn a_ruleset_over_the_budget_is_refused_and_reported() {
        let mut a = agent(FakeServer {
            ruleset: Some(ruleset(2, &["198.18.0.5"])),
            ..Default::default()
        });
        a.step();
        let loaded = a.dataplane().table.clone();
        let applies = a.dataplane().log.len();
        a.control().ruleset = Some(ruleset(3, &["10.0.0.0/12"]));
        let events = a.step();
        let [Event::Rejected(why)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert!(
            why.contains("1048578") && why.contains("--max-elements"),
            "{why}"
        );
        assert_eq!(a.applied_revision(), Some(2));
        assert_eq!(a.dataplane().table, loaded, "the loaded rules stay");
        assert_eq!(a.dataplane().log.len(), applies, "nothing was loaded");
        let report = a.control().reports.last().expect("a report").clone();
        assert_eq!(report.applied_revision, 2);
        assert!(
            report.errors.iter().any(|e| e.contains("--max-elements")),
            "{report:?}"
        );
        // Within a budget raised for it, the same ruleset loads.
        a.config.compile.max_elements = 1 << 21;
        a.step();
        assert_eq!(a.applied_revision(), Some(3));
    }
}
