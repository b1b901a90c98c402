//! The harness of the agent's kernel tests: network namespaces the test
//! creates and always removes (a Drop guard), veth links, a Python helper for
//! TCP / UDP / ICMP traffic, and fleet-file rulesets compiled and loaded
//! through the real `NftDataplane --netns`. Addresses come from
//! 198.18.0.0/15 and the documentation ranges only; nothing routes out.
//!
//! Tests skip (printing `SKIPPED` and the reason) when not root or when
//! `nft` / `ip` / `python3` are missing, and fail instead when the run
//! requires root (`PALISADE_REQUIRE=root`, as `.ci/run` sets; see
//! `palisade_testkit`).

#![allow(dead_code, clippy::unwrap_used)]

use palisade_agent::dataplane::Dataplane;
use palisade_agent::{compile, CompileOptions, NftDataplane, Stamping};
use palisade_model::{Fleet, InstanceId};
use palisade_policy::Ruleset;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const HELPER: &str = include_str!("helper.py");

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    palisade_testkit::root_missing()
}

/// Starts a root test: `None` (after printing why) when it must be skipped;
/// otherwise a guard that runs the kernel tests of one binary one at a time.
pub fn start(test: &str) -> Option<MutexGuard<'static, ()>> {
    if !palisade_testkit::root(test) {
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs a command; panics with its stderr on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique short prefix for names: `pal` + pid + counter (fits IFNAMSIZ).
pub fn unique_prefix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pal{}{}", std::process::id() % 100_000, n)
}

/// A set of namespaces and the processes running in them; all removed on drop.
pub struct Lab {
    pub prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    pub helper: tempfile::NamedTempFile,
}

impl Lab {
    pub fn new() -> Self {
        let mut helper = tempfile::NamedTempFile::new().expect("temp file");
        helper.write_all(HELPER.as_bytes()).expect("write helper");
        Lab {
            prefix: unique_prefix(),
            namespaces: Vec::new(),
            children: Vec::new(),
            helper,
        }
    }

    /// The full name of namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Creates namespace `short` with loopback up and forwarding on.
    pub fn add_ns(&mut self, short: &str) -> String {
        let name = self.ns(short);
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        self.exec(short, &["ip", "link", "set", "lo", "up"]);
        for key in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            self.exec(short, &["sysctl", "-qw", key]);
        }
        name
    }

    /// Runs a command inside namespace `short`.
    pub fn exec(&self, short: &str, args: &[&str]) -> String {
        let ns = self.ns(short);
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
    pub fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        sh(&[
            "ip", "-n", &na, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
            &nb,
        ]);
        sh(&["ip", "-n", &na, "link", "set", a_if, "up"]);
        sh(&["ip", "-n", &nb, "link", "set", b_if, "up"]);
    }

    /// Adds an address (IPv6 without DAD).
    pub fn addr(&self, ns: &str, iface: &str, cidr: &str) {
        if cidr.contains(':') {
            self.exec(ns, &["ip", "addr", "add", cidr, "dev", iface, "nodad"]);
        } else {
            self.exec(ns, &["ip", "addr", "add", cidr, "dev", iface]);
        }
    }

    /// Adds a route.
    pub fn route(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["ip", "route", "add"];
        if args.first().is_some_and(|a| a.contains(':')) {
            full = vec!["ip", "-6", "route", "add"];
        }
        full.extend_from_slice(args);
        self.exec(ns, &full);
    }

    /// Starts TCP+UDP echo servers on `ports` in `ns`; waits until ready.
    pub fn serve(&mut self, ns: &str, ports: &[u16]) {
        let name = self.ns(ns);
        let path = self.helper.path().to_string_lossy().into_owned();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &name, "python3", &path, "serve"]);
        for p in ports {
            cmd.arg(p.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn helper");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "echo server in {ns} did not start");
        self.children.push(child);
    }

    /// A probe process in `ns`.
    pub fn prober(&mut self, ns: &str) -> Prober {
        let name = self.ns(ns);
        let path = self.helper.path().to_string_lossy().into_owned();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &name, "python3", &path, "probe"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn prober");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        self.children.push(child);
        Prober { stdin, stdout }
    }

    /// The `NftDataplane` of namespace `short`.
    pub fn dataplane(&self, short: &str) -> NftDataplane {
        NftDataplane::new(Some(self.ns(short)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Talks to a helper in probe mode.
pub struct Prober {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Prober {
    /// Sends one command, returns the answer line.
    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to prober");
        self.stdin.flush().expect("flush");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("read from prober");
        answer.trim().to_string()
    }

    /// TCP connect + echo within `timeout` seconds.
    pub fn tcp(&mut self, dst: &str, port: u16) -> bool {
        self.cmd(&format!("tcp - {dst} {port} 1.0")) == "ok"
    }

    /// UDP echo.
    pub fn udp(&mut self, dst: &str, port: u16) -> bool {
        self.cmd(&format!("udp - {dst} {port} 1.0")) == "ok"
    }

    /// ICMP echo.
    pub fn ping(&mut self, dst: &str) -> bool {
        self.cmd(&format!("icmp - {dst} 1.0")) == "ok"
    }
}

/// A fleet with `groups` (id, JSON of the policy set) bound in this order
/// to one instance `ins-node0001`: the instance's resolved ruleset, what the
/// compiler takes and the evaluator checks.
pub fn ruleset(groups: &[(&str, serde_json::Value)]) -> Ruleset {
    let fleet = serde_json::json!({
        "security_groups": groups.iter().map(|(id, p)| serde_json::json!({"id": id, "name": id, "policies": p})).collect::<Vec<_>>(),
        "instances": [{"id": "ins-node0001", "name": "node", "private_ips": ["198.18.0.11"],
                        "security_groups": groups.iter().map(|(id, _)| *id).collect::<Vec<_>>()}],
    });
    let fleet = Fleet::parse(&fleet.to_string()).unwrap_or_else(|p| panic!("fleet: {p:?}"));
    let id = InstanceId::parse_field("t", "ins-node0001").expect("id");
    palisade_policy::resolve_instance(&fleet, &id).expect("resolve")
}

/// Compiles and loads `snapshot` into namespace `ns` with uplink `uplink`.
pub fn load(lab: &Lab, ns: &str, uplink: &str, snapshot: &Ruleset) {
    load_mode(
        lab,
        ns,
        uplink,
        snapshot,
        palisade_agent::compile::Mode::Linear,
    );
}

/// [`load`] with a compile mode.
pub fn load_mode(
    lab: &Lab,
    ns: &str,
    uplink: &str,
    snapshot: &Ruleset,
    mode: palisade_agent::compile::Mode,
) {
    load_opts(
        lab,
        ns,
        snapshot,
        &CompileOptions {
            uplinks: vec![uplink.to_string()],
            mode,
            ..Default::default()
        },
    );
}

/// [`load`] with compile options. Stamped as an agent that restarts
/// before each load would: the stamps in force read back from the table,
/// the next generation for a direction whose rules changed.
pub fn load_opts(lab: &Lab, ns: &str, snapshot: &Ruleset, opts: &CompileOptions) {
    let compiled = compile(snapshot, opts).expect("compile");
    if let Err(e) = Stamping::new(lab.dataplane(ns)).apply(&compiled) {
        panic!("load: {e}\n{}", compiled.script());
    }
}

/// Counters per rule comment in namespace `ns`.
pub fn counters(lab: &Lab, ns: &str) -> BTreeMap<String, u64> {
    lab.dataplane(ns)
        .read()
        .expect("read")
        .map(|t| {
            t.counters
                .into_iter()
                .map(|(k, v)| (k, v.packets))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits up to `limit` for `f` to hold.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node's address in [`pair`].
pub const NODE: &str = "198.18.0.11";
/// The node's IPv6 address in [`pair`].
pub const NODE6: &str = "2001:db8::11";
/// The peer's main address in [`pair`].
pub const PEER: &str = "198.18.0.2";
/// Extra peer addresses: other documentation / benchmark ranges, routed.
pub const PEER_POOL_V4: [&str; 10] = [
    "198.18.0.2",
    "198.18.0.3",
    "198.18.0.4",
    "192.0.2.1",
    "192.0.2.130",
    "198.51.100.7",
    "198.51.100.200",
    "203.0.113.5",
    "198.19.3.4",
    "198.19.200.1",
];
/// Extra IPv6 peer addresses.
pub const PEER_POOL_V6: [&str; 4] = [
    "2001:db8::2",
    "2001:db8:1::5",
    "2001:db8:ff::1",
    "2001:db8:ff::80",
];

/// Two namespaces, `node` (uplink `eth0`) and `peer`, on one link; the
/// peer holds every pool address and the node routes them to it.
pub fn pair() -> Lab {
    let mut lab = Lab::new();
    lab.add_ns("node");
    lab.add_ns("peer");
    lab.link("node", "eth0", "peer", "eth0");
    lab.addr("node", "eth0", &format!("{NODE}/24"));
    lab.addr("node", "eth0", &format!("{NODE6}/64"));
    lab.addr("peer", "eth0", &format!("{PEER}/24"));
    lab.addr("peer", "eth0", "2001:db8::2/64");
    for a in PEER_POOL_V4.iter().skip(1) {
        if a.starts_with("198.18.0.") {
            lab.addr("peer", "eth0", &format!("{a}/24"));
        } else {
            lab.addr("peer", "eth0", &format!("{a}/32"));
            lab.route("node", &[&format!("{a}/32"), "via", PEER]);
        }
    }
    for a in PEER_POOL_V6.iter().skip(1) {
        lab.addr("peer", "eth0", &format!("{a}/128"));
        lab.route("node", &[&format!("{a}/128"), "via", "2001:db8::2"]);
    }
    lab.route("peer", &["default", "via", NODE]);
    lab.route("peer", &["2001:db8::/32", "via", NODE6]);
    lab.serve("node", &[22, 80, 8080, 9090]);
    lab.serve("peer", &[22, 80, 8080, 9090]);
    lab
}
