//! `palisade bench flowlog-agent` (issue 18, "Numbers"): what recording and
//! shipping flow records cost the real agent, in CPU, at a given rate of new
//! connections (2,000/s by default), with recording on and off side by side
//! in one run.
//!
//! The lab: a client namespace and two node namespaces, each node joined to
//! the client by its own veth (`eth0` on the node side, the uplink;
//! 198.18.0.0/24 and 198.18.1.0/24). A real `palisade serve` (a child on a
//! free 127.0.0.1 port, temporary SQLite store) holds one group (ingress
//! ACCEPT TCP 5000 from 198.18.0.0/15, egress ACCEPT everything) bound to
//! two instances, and two real `palisade agent` processes (`--netns`) keep
//! it loaded: node 0's without recording, node 1's with `--flow-log`
//! (`--flow-log-rate` high enough that no decision is suppressed, so every
//! connection is recorded: the worst case) and `--metrics-listen`. A TCP
//! listener in each node accepts and closes at once.
//!
//! A round drives `--rate` new TCP connections per second from the client
//! to node 0 for `--seconds`, then the same to node 1 (each connection a
//! new source port, closed with RST by the client so that no port waits in
//! TIME_WAIT), and reads each agent's CPU time (`utime + stime` of
//! `/proc/PID/stat`, and separately what its reaped children, the `nft`
//! runs, used) from the start of its node's traffic until one shipping
//! interval (`--flow-interval-secs`) and a second after its end, so the
//! last shipment of the traffic's records is counted. The CPU time divided by the traffic's seconds is the share of
//! one core the agent needs at that rate, sustained. Both agents run all
//! the time; the off agent's share is what an agent costs anyway (its sync
//! loop), the difference is recording and shipping.
//!
//! Bounded: at most 120 s of traffic per node and round, at most 5 rounds,
//! every wait has a deadline, and Ctrl-C only sets a flag the loops check.
//! Every namespace is named `pfa` + the process id and deleted on drop (also
//! after an error); the children are killed on drop. Traffic stays inside
//! the namespaces (198.18.0.0/15); the agents reach the server on 127.0.0.1.

use crate::control_plane::Server;
use crate::dataplane::in_netns;
use crate::interrupt::{check_interrupt, interrupted};
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FlowlogAgentOptions {
    /// The `palisade` binary (server and agents).
    pub palisade: PathBuf,
    /// New connections per second.
    pub rate: u32,
    /// Seconds of traffic per node and round.
    pub seconds: u64,
    /// Rounds (off then on, each).
    pub rounds: usize,
    /// The recording agent's `--flow-log-rate`.
    pub flow_log_rate: u32,
    /// Both agents' `--flow-interval-secs` (the recording one ships this often).
    pub flow_interval_secs: u64,
}

/// One node's traffic in one round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Whether the node's agent records.
    pub recording: bool,
    /// Connections made.
    pub connections: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Seconds the traffic took.
    pub traffic_secs: f64,
    /// Connections per second achieved.
    pub rate: f64,
    /// Seconds over which CPU time was read (traffic + interval + 1 s).
    pub window_secs: f64,
    /// The agent's own CPU seconds in the window.
    pub agent_cpu_secs: f64,
    /// Its reaped children's CPU seconds (the `nft` it runs).
    pub children_cpu_secs: f64,
    /// Agent CPU seconds per traffic second, in % of one core.
    pub agent_core_pct: f64,
    /// The same with its children.
    pub with_children_core_pct: f64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FlowlogAgentReport {
    /// Target new connections per second.
    pub rate: u32,
    /// Seconds of traffic per node and round.
    pub seconds: u64,
    /// The recording agent's `--flow-log-rate`.
    pub flow_log_rate: u32,
    /// Both agents' `--flow-interval-secs`.
    pub flow_interval_secs: u64,
    /// Every phase, in run order (off, on, off, on, ...).
    pub phases: Vec<Phase>,
    /// Mean agent share of one core, recording off and on (%).
    pub off_core_pct: f64,
    /// With recording.
    pub on_core_pct: f64,
    /// Mean with children, off and on (%).
    pub off_with_children_core_pct: f64,
    /// With recording.
    pub on_with_children_core_pct: f64,
    /// The recording agent's metrics at the end (`palisade_agent_*`).
    pub agent_metrics: Vec<(String, u64)>,
    /// Records of the recording node the server holds at the end.
    pub records_stored: u64,
}

/// The port the nodes listen on.
const PORT: u16 = 5000;

/// Why the benchmark cannot run here (not root, no `nft`/`ip`), if it cannot.
pub fn skip_reason() -> Option<String> {
    crate::dataplane::skip_reason()
}

/// The benchmark; `log` sees progress lines.
pub fn run(
    opts: &FlowlogAgentOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<FlowlogAgentReport> {
    if !(1..=20_000).contains(&opts.rate) {
        bail!("--rate must be 1-20000 connections per second");
    }
    if !(1..=120).contains(&opts.seconds) {
        bail!("--seconds must be 1-120");
    }
    if !(1..=5).contains(&opts.rounds) {
        bail!("--rounds must be 1-5");
    }
    let interval = opts.flow_interval_secs.clamp(1, 60);
    let lab = Lab::new()?;
    let server = Server::start(&opts.palisade)?;
    let admin = server.client()?;
    let r = admin.vpc(
        "CreateSecurityGroupWithPolicies",
        &json!({"GroupName": "bench", "GroupDescription": "bench flowlog-agent",
            "SecurityGroupPolicySet": {
                "Ingress": [{"Protocol": "TCP", "Port": PORT.to_string(), "CidrBlock": "198.18.0.0/15", "Action": "ACCEPT"}],
                "Egress": [{"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]}}),
    )?;
    let group = r["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .context("no SecurityGroupId")?
        .to_string();
    let r = admin.palisade(
        "RegisterInstances",
        &json!({"Instances": [{"PrivateIpAddresses": [node_ip(0).to_string()]},
                              {"PrivateIpAddresses": [node_ip(1).to_string()]}]}),
    )?;
    let ids: Vec<String> = r["InstanceIdSet"]
        .as_array()
        .context("no InstanceIdSet")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if ids.len() != 2 {
        bail!("RegisterInstances answered {r}");
    }
    admin.cvm(
        "AssociateSecurityGroups",
        &json!({"SecurityGroupIds": [group], "InstanceIds": ids}),
    )?;
    let metrics_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let mut agents = Vec::new();
    for (node, id) in ids.iter().enumerate() {
        let mut args = vec![
            "agent".to_string(),
            "--server".into(),
            server.url.clone(),
            "--instance-id".into(),
            id.clone(),
            "--uplink".into(),
            "eth0".into(),
            "--netns".into(),
            lab.node(node),
            "--private-ip".into(),
            node_ip(node).to_string(),
            "--flow-interval-secs".into(),
            interval.to_string(),
        ];
        if node == 1 {
            args.extend([
                "--flow-log".into(),
                "--flow-log-rate".into(),
                opts.flow_log_rate.to_string(),
                "--metrics-listen".into(),
                format!("127.0.0.1:{metrics_port}"),
            ]);
        }
        agents.push(Agent::start(
            &opts.palisade,
            &args,
            &server,
            &dir.path().join(format!("agent{node}.log")),
        )?);
    }
    for (node, agent) in agents.iter_mut().enumerate() {
        agent.wait_loaded(&lab, node)?;
    }
    // The recorder subscribes once the agent runs; give it a moment.
    std::thread::sleep(Duration::from_secs(1));
    if let Some(line) = agents[1].log_line("flow records are off") {
        bail!("the recording agent does not record: {line}");
    }
    log(&format!(
        "lab {}: server {}, agents {} (off) and {} (--flow-log) on {group}",
        lab.prefix,
        server.url,
        agents[0].child.id(),
        agents[1].child.id()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let _listeners = (0..2)
        .map(|n| Listener::start(&lab.node(n), stop.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut phases = Vec::new();
    for round in 0..opts.rounds {
        for (node, agent) in agents.iter().enumerate() {
            check_interrupt()?;
            let before = agent.cpu()?;
            let t = Instant::now();
            let (connections, failed, traffic) =
                drive(&lab.client(), node_ip(node), opts.rate, opts.seconds)?;
            let tail = Duration::from_secs(interval + 1);
            while t.elapsed() < traffic + tail {
                check_interrupt()?;
                std::thread::sleep(Duration::from_millis(50));
            }
            let window = t.elapsed().as_secs_f64();
            let after = agent.cpu()?;
            let secs = traffic.as_secs_f64();
            let own = after.0 - before.0;
            let children = after.1 - before.1;
            let p = Phase {
                recording: node == 1,
                connections,
                failed,
                traffic_secs: secs,
                rate: connections as f64 / secs,
                window_secs: window,
                agent_cpu_secs: own,
                children_cpu_secs: children,
                agent_core_pct: own / secs * 100.0,
                with_children_core_pct: (own + children) / secs * 100.0,
            };
            log(&format!(
                "round {round} recording {}: {connections} connections ({failed} failed) in {secs:.1} s \
                 = {:.0}/s; agent {own:.2} CPU s (+{children:.2} children) over {window:.1} s \
                 = {:.2}% of a core per traffic second ({:.2}% with children)",
                if p.recording { "on " } else { "off" },
                p.rate,
                p.agent_core_pct,
                p.with_children_core_pct
            ));
            phases.push(p);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let agent_metrics = scrape(metrics_port).unwrap_or_default();
    let stored = admin.palisade(
        "DescribeFlowRecords",
        &json!({"InstanceIds": [ids[1]], "Limit": 1}),
    )?;
    let mean = |on: bool, f: fn(&Phase) -> f64| {
        let v: Vec<f64> = phases.iter().filter(|p| p.recording == on).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Ok(FlowlogAgentReport {
        rate: opts.rate,
        seconds: opts.seconds,
        flow_log_rate: opts.flow_log_rate,
        flow_interval_secs: interval,
        off_core_pct: mean(false, |p| p.agent_core_pct),
        on_core_pct: mean(true, |p| p.agent_core_pct),
        off_with_children_core_pct: mean(false, |p| p.with_children_core_pct),
        on_with_children_core_pct: mean(true, |p| p.with_children_core_pct),
        phases,
        agent_metrics,
        records_stored: stored["TotalCount"].as_u64().unwrap_or(0),
    })
}

fn node_ip(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, node as u8, 2)
}

/// Makes `rate` connections per second to `ip`:[`PORT`] for `seconds`
/// from a thread in namespace `ns`, each closed with RST (no TIME_WAIT);
/// (made, failed, how long it took).
fn drive(ns: &str, ip: Ipv4Addr, rate: u32, seconds: u64) -> anyhow::Result<(u64, u64, Duration)> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let to = SocketAddr::V4(SocketAddrV4::new(ip, PORT));
    let total = u64::from(rate) * seconds;
    let handle = std::thread::spawn(move || -> std::io::Result<(u64, u64, Duration)> {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let start = Instant::now();
        let deadline = Duration::from_secs(seconds) * 2 + Duration::from_secs(5);
        let (mut made, mut failed) = (0u64, 0u64);
        for i in 0..total {
            if interrupted() || start.elapsed() > deadline {
                break;
            }
            let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_linger(Some(Duration::ZERO))?;
            match socket.connect_timeout(&to.into(), Duration::from_secs(1)) {
                Ok(()) => made += 1,
                Err(_) => failed += 1,
            }
        }
        Ok((made, failed, start.elapsed()))
    });
    match handle.join() {
        Ok(r) => Ok(r.with_context(|| format!("connections from {ns}"))?),
        Err(_) => bail!("the connecting thread panicked"),
    }
}

/// A TCP listener in a node that accepts and closes, until stopped.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &str, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let listener = in_netns(ns, || {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
            s.listen(4096)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(TcpListener::from(s))
        })??;
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `palisade agent` child; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(exe: &Path, args: &[String], server: &Server, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(exe)
            .args(args)
            .env("TENCENTCLOUD_SECRET_ID", &server.credentials.secret_id)
            .env("TENCENTCLOUD_SECRET_KEY", &server.credentials.secret_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} agent", exe.display()))?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Waits (at most 30 s) until node `node` holds table `inet palisade`.
    fn wait_loaded(&mut self, lab: &Lab, node: usize) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            check_interrupt()?;
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent of node {node} exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.node(node),
                    "nft",
                    "list",
                    "table",
                    "inet",
                    "palisade",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the agent of node {node} loaded nothing within 30 s: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first line of its log containing `text`.
    fn log_line(&self, text: &str) -> Option<String> {
        std::fs::read_to_string(&self.log)
            .ok()?
            .lines()
            .find(|l| l.contains(text))
            .map(str::to_string)
    }

    /// Its CPU seconds so far: (its own utime + stime, its reaped
    /// children's cutime + cstime).
    fn cpu(&self) -> anyhow::Result<(f64, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .context("the agent's /proc/PID/stat")?;
        // Fields after the command name (which may hold spaces), from field 3.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("a /proc/PID/stat without its command")?;
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        // utime, stime, cutime, cstime are fields 14-17: 11-14 after field 3.
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0) as f64;
        let hz = rustix::param::clock_ticks_per_second() as f64;
        Ok(((field(14) + field(15)) / hz, (field(16) + field(17)) / hz))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recording agent's `palisade_agent_*` metrics.
fn scrape(port: u16) -> anyhow::Result<Vec<(String, u64)>> {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()?
        .into_string()?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("palisade_agent_"))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

/// The namespaces: `pfa<pid>c` (the client) and `pfa<pid>n0`, `pfa<pid>n1`;
/// deleted on drop.
struct Lab {
    prefix: String,
    names: Vec<String>,
}

impl Lab {
    fn new() -> anyhow::Result<Self> {
        remove_stale();
        let mut lab = Lab {
            prefix: format!("pfa{}", std::process::id()),
            names: Vec::new(),
        };
        let client = lab.client();
        lab.add(&client)?;
        for node in 0..2 {
            let ns = lab.node(node);
            lab.add(&ns)?;
            let c_if = format!("c{node}");
            sh(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &c_if,
                "netns", &client,
            ])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", node_ip(node)),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&[
                "ip",
                "-n",
                &client,
                "addr",
                "add",
                &format!("198.18.{node}.1/24"),
                "dev",
                &c_if,
            ])?;
            sh(&["ip", "-n", &client, "link", "set", &c_if, "up"])?;
        }
        Ok(lab)
    }

    fn client(&self) -> String {
        format!("{}c", self.prefix)
    }

    fn node(&self, n: usize) -> String {
        format!("{}n{n}", self.prefix)
    }

    fn add(&mut self, ns: &str) -> anyhow::Result<()> {
        sh(&["ip", "netns", "add", ns])?;
        self.names.push(ns.to_string());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
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

/// Deletes `pfa<pid>*` namespaces of processes that no longer run.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("pfa") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
