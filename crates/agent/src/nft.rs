//! The real [`Dataplane`]: `nft -f -` for programs (text in), one
//! long-lived `nft -i` for element deltas ([`crate::session`]), and
//! `nft -j list table inet palisade` for reading (JSON out), as kube-proxy's
//! nftables backend does. With a network namespace name, every command runs
//! through `ip netns exec NAME` (no `setns`, so no unsafe code).
//!
//! Atomicity and size: a program of up to [`NftDataplane::chunk`] set
//! elements is one transaction (`add table` / `delete table` / definition).
//! A larger one is staged so that no single netlink batch grows without
//! bound (the kernel answers ENOBUFS to huge ones) while the rule switch
//! stays atomic: the sets are created under alternate names (suffix `_s`)
//! and filled in chunks while the old chains keep filtering, then one last
//! transaction replaces both chains, pointing them at the new sets, and
//! deletes the old sets.

use crate::compile::{Compiled, Deltas, TABLE};
use crate::dataplane::{Counter, Dataplane, LiveTable};
use crate::error::AgentError;
use crate::netlink::NfNetlink;
use crate::session::NftSession;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The default largest number of set elements sent in one transaction
/// (nft 1.0.6 loads 300,000 in one in about 1.5 s here; the limit keeps
/// any one netlink batch bounded).
pub const DEFAULT_CHUNK: usize = 100_000;

/// How many element deltas are applied on top of one whole-table load
/// before the next delta is made a whole-table load instead. Each delta
/// leaves the generation rules it replaced behind the new ones,
/// unreachable ([`Compiled::delta_script`]); a load clears them.
pub const MAX_STACKED_DELTAS: usize = 64;

/// Drives nftables through the `nft` command, and asks nf_tables over
/// netlink for the ruleset generation and the rule counters.
#[derive(Debug)]
pub struct NftDataplane {
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Largest number of set elements per transaction.
    pub chunk: usize,
    /// Deltas applied since the last whole-table load.
    stacked: usize,
    /// The netlink socket, opened on first use.
    netlink: Option<NfNetlink>,
    /// The `nft -i` process that applies deltas, started after a
    /// whole-table load or by the first delta.
    session: Option<NftSession>,
}

impl Clone for NftDataplane {
    /// A dataplane for the same namespace, with its own netlink socket.
    fn clone(&self) -> Self {
        Self {
            netns: self.netns.clone(),
            chunk: self.chunk,
            stacked: self.stacked,
            netlink: None,
            session: None,
        }
    }
}

impl NftDataplane {
    /// A dataplane for the current namespace, or for `netns`.
    pub fn new(netns: Option<String>) -> Self {
        Self {
            netns,
            chunk: DEFAULT_CHUNK,
            stacked: 0,
            netlink: None,
            session: None,
        }
    }

    /// Starts the `nft -i` process that applies deltas, if it is not
    /// running (the first delta starts it otherwise).
    pub fn start_session(&mut self) -> Result<(), AgentError> {
        if self.session.is_none() {
            self.session = Some(NftSession::spawn(self.netns.as_deref())?);
        }
        Ok(())
    }

    /// Runs a delta through the session: `nft -f` would close its netlink
    /// socket on exit and so wait out the grace period of anything the
    /// delta deleted ([`crate::session`]). A script that does not fit a
    /// session line, or finds no session, goes through `nft -f`; a session
    /// that broke is dropped (the next delta starts another) and its error
    /// returned.
    fn load_delta(&mut self, script: &str) -> Result<(), AgentError> {
        if !NftSession::fits(script) {
            return self.load(script);
        }
        // A session that cannot start leaves `nft -f`, slower but whole.
        let _ = self.start_session();
        let Some(session) = self.session.as_mut() else {
            return self.load(script);
        };
        let answer = session.run(script);
        if answer.is_err() {
            self.session = None;
        }
        answer
    }

    /// Runs `ask` on the netlink socket, opening it first if needed; a
    /// socket that failed is dropped, so the next call opens a new one.
    fn netlink<T>(
        &mut self,
        ask: impl FnOnce(&mut NfNetlink) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let socket = match self.netlink.as_mut() {
            Some(s) => s,
            None => self.netlink.insert(NfNetlink::open(self.netns.as_deref())?),
        };
        let answer = ask(socket);
        if answer.is_err() {
            self.netlink = None;
        }
        answer
    }

    /// Runs `nft ARGS`, with `stdin` piped in when given; returns stdout.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, AgentError> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), "nft"]);
                c
            }
            None => Command::new("nft"),
        };
        cmd.args(args);
        let command = format!(
            "{}nft {}",
            self.netns
                .as_ref()
                .map(|n| format!("ip netns exec {n} "))
                .unwrap_or_default(),
            args.join(" ")
        );
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| AgentError::Spawn {
            command: command.clone(),
            source,
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|source| AgentError::Spawn {
                    command: command.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| AgentError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(AgentError::Nft {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads one program (one transaction).
    pub fn load(&self, script: &str) -> Result<(), AgentError> {
        self.run(&["-f", "-"], Some(script)).map(|_| ())
    }

    /// The table's JSON listing, or `None` when there is no table.
    pub fn list_json(&self) -> Result<Option<Value>, AgentError> {
        match self.run(&["-j", "list", "table", "inet", "palisade"], None) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| AgentError::NftJson(e.to_string())),
            Err(AgentError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn apply_staged(&self, compiled: &Compiled) -> Result<(), AgentError> {
        let live = self.list_json()?;
        let (live_sets, live_maps, live_chains) = live.as_ref().map(names).unwrap_or_default();
        let suffix = if live_sets.iter().any(|s| s.ends_with("_s")) {
            ""
        } else {
            "_s"
        };
        let mut staged = compiled.clone();
        for set in &mut staged.sets {
            let new = format!("{}{suffix}", set.name);
            for chain in &mut staged.chains {
                for r in &mut chain.rules {
                    *r = r.replace(&format!("@{} ", set.name), &format!("@{new} "));
                }
            }
            set.name = new;
        }
        // 1. The new sets, empty, next to the live chains.
        let mut prep = format!("add table {TABLE}\n");
        for s in &staged.sets {
            let _ = writeln!(
                prep,
                "add set {TABLE} {} {{ {} }}\nflush set {TABLE} {}",
                s.name,
                s.declaration(),
                s.name
            );
        }
        self.load(&prep)?;
        // 2. Their elements, at most `chunk` per transaction (several sets
        // share one when they fit: each `nft` run re-reads the table).
        let chunk = self.chunk.max(1);
        let mut batch = String::new();
        let mut in_batch = 0;
        for s in &staged.sets {
            for part in s.elements.chunks(chunk) {
                if in_batch + part.len() > chunk && in_batch > 0 {
                    self.load(&batch)?;
                    batch.clear();
                    in_batch = 0;
                }
                let list: Vec<String> = part.iter().map(|e| crate::compile::element(*e)).collect();
                let _ = writeln!(
                    batch,
                    "add element {TABLE} {} {{ {} }}",
                    s.name,
                    list.join(", ")
                );
                in_batch += part.len();
            }
        }
        if in_batch > 0 {
            self.load(&batch)?;
        }
        // 3. One transaction: the chains switch to the new sets; old sets
        // go. Rules are flushed before the maps they look up are deleted,
        // and maps before the chains they jump to.
        let mut fin = String::new();
        for c in &live_chains {
            let _ = writeln!(fin, "flush chain {TABLE} {c}");
        }
        for m in &live_maps {
            let _ = writeln!(fin, "delete map {TABLE} {m}");
        }
        for c in &live_chains {
            let _ = writeln!(fin, "delete chain {TABLE} {c}");
        }
        for s in &live_sets {
            if !staged.sets.iter().any(|n| &n.name == s) {
                let _ = writeln!(fin, "delete set {TABLE} {s}");
            }
        }
        let _ = writeln!(fin, "table {TABLE} {{");
        for c in staged.chains.iter().filter(|c| c.hook.is_none()) {
            crate::compile::write_chain(&mut fin, c);
        }
        for m in &staged.maps {
            let _ = writeln!(fin, "\t{}", m.declaration());
        }
        for c in staged.chains.iter().filter(|c| c.hook.is_some()) {
            crate::compile::write_chain(&mut fin, c);
        }
        let _ = writeln!(fin, "}}");
        self.load(&fin)
    }
}

impl Dataplane for NftDataplane {
    fn apply(&mut self, compiled: &Compiled) -> Result<(), AgentError> {
        let loaded = if compiled.element_count() <= self.chunk {
            self.load(&compiled.script())
        } else {
            // A table someone broke by hand (a chain we cannot delete,
            // say): replace it whole in one (large) transaction, which
            // stays atomic.
            self.apply_staged(compiled)
                .or_else(|_| self.load(&compiled.script()))
        };
        if loaded.is_ok() {
            self.stacked = 0;
            // Ready for the deltas that follow; without it, the first
            // delta starts it (or goes through `nft -f`).
            let _ = self.start_session();
        }
        loaded
    }

    fn apply_deltas(&mut self, compiled: &Compiled, deltas: &Deltas) -> Result<(), AgentError> {
        if deltas.len() > self.chunk || self.stacked >= MAX_STACKED_DELTAS {
            return self.apply(compiled);
        }
        self.load_delta(&compiled.delta_script(deltas))?;
        self.stacked += 1;
        Ok(())
    }

    fn read(&mut self) -> Result<Option<LiveTable>, AgentError> {
        let Some(json) = self.list_json()? else {
            return Ok(None);
        };
        Ok(Some(live_table(&json)))
    }

    fn generation(&mut self) -> Result<Option<u32>, AgentError> {
        self.netlink(NfNetlink::generation).map(Some)
    }

    /// Over conntrack's netlink (a dump, then one masked update per entry
    /// that has some of the bits), in the dataplane's namespace.
    fn clear_marks(&mut self, mask: u32) -> Result<usize, AgentError> {
        self.netlink(|n| n.clear_ct_marks(mask))
    }

    /// From a netlink dump of the table's rules, which leaves set elements
    /// out (a `nft` listing reads them all); from the listing if netlink
    /// fails.
    fn counters(&mut self) -> Result<BTreeMap<String, Counter>, AgentError> {
        let name = TABLE.rsplit(' ').next().unwrap_or(TABLE);
        match self.netlink(|n| n.rule_counters(name)) {
            Ok(c) => Ok(c),
            Err(_) => Ok(self.read()?.map(|t| t.counters).unwrap_or_default()),
        }
    }
}

/// Counters per comment and a fingerprint of the definition.
pub fn live_table(json: &Value) -> LiveTable {
    let mut counters: BTreeMap<String, Counter> = BTreeMap::new();
    let mut heads: BTreeMap<String, String> = BTreeMap::new();
    let items = json
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut normalized = Vec::new();
    for mut item in items {
        if item.get("metainfo").is_some() {
            continue;
        }
        if let Some(rule) = item.get("rule") {
            let comment = rule
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // Rules are listed in chain order: the first one with a
            // comment is the chain's head.
            if let Some(chain) = rule.get("chain").and_then(Value::as_str) {
                if !comment.is_empty() && !heads.contains_key(chain) {
                    heads.insert(chain.to_string(), comment.clone());
                }
            }
            for e in rule
                .get("expr")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(c) = e.get("counter") {
                    let entry = counters.entry(comment.clone()).or_default();
                    entry.packets += c.get("packets").and_then(Value::as_u64).unwrap_or(0);
                    entry.bytes += c.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                }
            }
        }
        strip(&mut item);
        normalized.push(item);
    }
    let text = serde_json::to_string(&normalized).unwrap_or_default();
    LiveTable {
        fingerprint: hex::encode(Sha256::digest(text.as_bytes())),
        counters,
        heads,
    }
}

/// Removes what changes without anyone editing the table: handles and
/// counter values.
fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            if let Some(Value::Object(c)) = map.get_mut("counter") {
                c.remove("packets");
                c.remove("bytes");
            }
            for (_, child) in map.iter_mut() {
                strip(child);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(strip),
        _ => {}
    }
}

/// The set, map and chain names of a listing.
fn names(json: &Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut sets = Vec::new();
    let mut maps = Vec::new();
    let mut chains = Vec::new();
    for item in json
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = item.pointer("/set/name").and_then(Value::as_str) {
            sets.push(n.to_string());
        }
        if let Some(n) = item.pointer("/map/name").and_then(Value::as_str) {
            maps.push(n.to_string());
        }
        if let Some(n) = item.pointer("/chain/name").and_then(Value::as_str) {
            chains.push(n.to_string());
        }
    }
    (sets, maps, chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_per_comment_and_fingerprint_ignores_them() {
        let mk = |p: u64| {
            serde_json::json!({"nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {"table": {"family": "inet", "name": "palisade", "handle": 4}},
                {"rule": {"chain": "ingress", "handle": 12, "comment": "sg-a ingress 0",
                  "expr": [{"counter": {"packets": p, "bytes": 10 * p}}, {"accept": null}]}},
                {"rule": {"chain": "ingress", "handle": 13, "comment": "sg-a ingress 0",
                  "expr": [{"counter": {"packets": 1, "bytes": 1}}, {"accept": null}]}}
            ]})
        };
        let a = live_table(&mk(5));
        let b = live_table(&mk(7));
        assert_eq!(
            a.counters["sg-a ingress 0"],
            Counter {
                packets: 6,
                bytes: 51
            }
        );
        assert_eq!(a.fingerprint, b.fingerprint);
        let mut edited = mk(5);
        edited["nftables"][2]["rule"]["expr"][1] = serde_json::json!({"drop": null});
        assert_ne!(live_table(&edited).fingerprint, a.fingerprint);
        assert_eq!(live_table(&serde_json::json!({})).counters.len(), 0);
    }
}
