//! `palisade bench propagate` and `palisade bench api` (issue 6, item 4;
//! DESIGN.md section 4): the control plane under load, on 127.0.0.1 only.
//!
//! Both start the real server (`palisade serve` from the binary named in
//! the options, normally the running `palisade`; a child process on a
//! free port with a temporary data directory and SQLite store, killed and
//! removed on drop, also after an error or Ctrl-C) and talk to it with
//! TC3-signed requests.
//!
//! - `propagate --agents N`: N simulated agents, each the real agent loop
//!   ([`palisade_agent::agent::Agent`]: long-poll `DescribeInstanceRuleset`,
//!   compile, apply, `ReportInstanceStatus`) over an in-memory
//!   [`palisade_agent::FakeDataplane`], one thread each, all bound to one
//!   group. The benchmark then edits the group's rules `--changes` times,
//!   one change at a time; the change-to-applied latency of an agent is the
//!   time from just before the write is sent to the moment its fake
//!   dataplane holds the new revision. p50, p99 and max over every
//!   (change, agent) pair.
//! - `api`: `--clients` threads issue `DescribeSecurityGroupPolicies` for
//!   `--seconds`, then `CreateSecurityGroupPolicies` (one rule per request,
//!   each acknowledged only once the store committed it: SQLite with
//!   `synchronous=FULL`) for `--seconds`; each client writes into its own
//!   account's groups so the quotas (50 groups, 100 rules per direction)
//!   last. The baseline, in the same run, is `GET /metrics`: the same
//!   HTTP stack with no signature check and no store read.

use crate::interrupt::check_interrupt;
use anyhow::{bail, Context};
use palisade_agent::agent::{Agent, AgentConfig, Event};
use palisade_agent::client::HttpControlPlane;
use palisade_agent::compile::CompileOptions;
use palisade_agent::FakeDataplane;
use palisade_client::{Client, Credentials};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What to measure: the options of `palisade bench propagate`.
#[derive(Debug, Clone)]
pub struct PropagateOptions {
    /// The `palisade` binary whose `serve` is benchmarked.
    pub palisade: PathBuf,
    /// Simulated agents (at most 2,000: the instances one group may hold).
    pub agents: usize,
    /// Rule changes, made one at a time.
    pub changes: usize,
    /// Pause after every agent applied a change before the next one, ms.
    pub gap_ms: u64,
    /// Agents send `ReportInstanceStatus` after each change, as real ones do.
    pub reports: bool,
}

/// What to measure: the options of `palisade bench api`.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The `palisade` binary whose `serve` is benchmarked.
    pub palisade: PathBuf,
    /// Seconds per measured call.
    pub seconds: f64,
    /// Concurrent client threads.
    pub clients: usize,
}

/// What `bench propagate` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PropagateReport {
    /// Agents.
    pub agents: usize,
    /// Whether agents sent `ReportInstanceStatus` after each change.
    pub reports: bool,
    /// Changes made.
    pub changes: usize,
    /// (change, agent) pairs that applied the change.
    pub samples: usize,
    /// Pairs that did not within 30 s.
    pub missed: usize,
    /// Change-to-applied latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Time of the write call itself (median), ms.
    pub write_p50_ms: f64,
    /// The target for p99, ms.
    pub target_p99_ms: f64,
}

/// What `bench api` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApiReport {
    /// Client threads.
    pub clients: usize,
    /// Seconds per call.
    pub seconds: f64,
    /// `DescribeSecurityGroupPolicies`.
    pub describe: Rate,
    /// `CreateSecurityGroupPolicies`, durable.
    pub create: Rate,
    /// `GET /metrics`: the transport's ceiling in this run.
    pub baseline_metrics: Rate,
}

/// Requests per second of one call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rate {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests per second.
    pub per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// The propagation benchmark; `log` sees progress lines.
pub fn propagate(
    args: &PropagateOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<PropagateReport> {
    if args.agents == 0 || args.agents > 2000 {
        bail!("--agents must be 1-2000 (the instances one group may hold)");
    }
    raise_fd_limit();
    let server = Server::start(&args.palisade)?;
    let admin = server.client()?;
    let r = admin.vpc(
        "CreateSecurityGroupWithPolicies",
        &json!({"GroupName": "bench", "GroupDescription": "bench propagate",
                "SecurityGroupPolicySet": {"Ingress": [rule_json(1)]}}),
    )?;
    let group = r["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .context("no SecurityGroupId")?
        .to_string();
    let mut ids = Vec::new();
    for chunk in (0..args.agents).collect::<Vec<_>>().chunks(100) {
        let list: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"PrivateIpAddresses": [format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256)]}))
            .collect();
        let r = admin.palisade("RegisterInstances", &json!({"Instances": list}))?;
        let new: Vec<String> = r["InstanceIdSet"]
            .as_array()
            .context("no InstanceIdSet")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        admin.cvm(
            "AssociateSecurityGroups",
            &json!({"SecurityGroupIds": [group], "InstanceIds": new}),
        )?;
        ids.extend(new);
    }
    log(&format!(
        "server {} up; {} instances bound to {group}",
        server.url,
        ids.len()
    ));

    // The agents: (agent, revision, when) for every load.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(usize, u64, Instant)>();
    let mut threads = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let control = HttpControlPlane::new(
            &server.url,
            &server.credentials.secret_id,
            &server.credentials.secret_key,
            Duration::from_secs(30),
        )?;
        let config = AgentConfig {
            instance_id: id.clone(),
            compile: CompileOptions {
                uplinks: vec!["eth0".into()],
                ..CompileOptions::default()
            },
            private_ips: vec![],
            interval: Duration::from_secs(1),
            report: args.reports,
            register: true,
            boot_state: None,
        };
        let (stop, tx) = (stop.clone(), tx.clone());
        threads.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut agent = Agent::new(FakeDataplane::new(), control, config);
                    agent.run(&stop, |e| {
                        if let Event::Replaced { revision } | Event::Updated { revision } = e {
                            let _ = tx.send((n, *revision, Instant::now()));
                        }
                    });
                })
                .context("starting an agent thread")?,
        );
    }
    drop(tx);
    let result = measure_propagation(args, &admin, &group, &ids, &rx, log);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result
}

fn measure_propagation(
    args: &PropagateOptions,
    admin: &Client,
    group: &str,
    ids: &[String],
    rx: &mpsc::Receiver<(usize, u64, Instant)>,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<PropagateReport> {
    let mut latest = vec![0u64; ids.len()];
    let current = |admin: &Client| -> anyhow::Result<u64> {
        let r = admin.palisade("DescribeInstanceRuleset", &json!({"InstanceId": ids[0]}))?;
        r["Ruleset"]["Revision"]
            .as_u64()
            .with_context(|| format!("no Ruleset.Revision in {r}"))
    };
    // Every agent holds the starting revision first.
    let start = current(admin)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while latest.iter().any(|r| *r < start) {
        check_interrupt()?;
        if Instant::now() > deadline {
            bail!(
                "{} of {} agents did not load the first ruleset within 120 s",
                latest.iter().filter(|r| **r < start).count(),
                ids.len()
            );
        }
        if let Ok((n, rev, _)) = rx.recv_timeout(Duration::from_millis(100)) {
            latest[n] = latest[n].max(rev);
        }
    }
    log(&format!("{} agents hold revision {start}", ids.len()));
    let mut latencies = Vec::new();
    let mut writes = Vec::new();
    let mut missed = 0;
    for k in 0..args.changes {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(args.gap_ms));
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        admin.vpc(
            "ModifySecurityGroupPolicies",
            &json!({"SecurityGroupId": group, "SecurityGroupPolicySet": {"Ingress": [rule_json(k as u64 + 2)]}}),
        )?;
        writes.push(t0.elapsed());
        let rev = current(admin)?;
        let mut done = vec![false; ids.len()];
        let mut left = ids.len();
        let deadline = t0 + Duration::from_secs(30);
        while left > 0 && Instant::now() < deadline {
            check_interrupt()?;
            if let Ok((n, r, at)) = rx.recv_timeout(Duration::from_millis(100)) {
                if r >= rev && !done[n] {
                    done[n] = true;
                    left -= 1;
                    latencies.push(at.saturating_duration_since(t0));
                }
            }
        }
        missed += left;
        log(&format!(
            "change {k}: revision {rev}, {} agents applied, {left} missed",
            ids.len() - left
        ));
    }
    latencies.sort();
    writes.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(PropagateReport {
        agents: ids.len(),
        reports: args.reports,
        changes: args.changes,
        samples: latencies.len(),
        missed,
        p50_ms: ms(pct(&latencies, 0.50)),
        p99_ms: ms(pct(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        write_p50_ms: ms(pct(&writes, 0.50)),
        target_p99_ms: 1000.0,
    })
}

/// The API benchmark; `log` sees progress lines.
pub fn api(args: &ApiOptions, log: &mut dyn FnMut(&str)) -> anyhow::Result<ApiReport> {
    let clients = args.clients.max(1);
    raise_fd_limit();
    let server = Server::start(&args.palisade)?;
    let admin = server.client()?;
    let mut set = Vec::new();
    for i in 0..10 {
        set.push(json!({"Protocol": "TCP", "Port": (8000 + i).to_string(), "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}));
    }
    let r = admin.vpc(
        "CreateSecurityGroupWithPolicies",
        &json!({"GroupName": "bench-read", "GroupDescription": "bench api",
                "SecurityGroupPolicySet": {"Ingress": set}}),
    )?;
    let read_group = r["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .context("no SecurityGroupId")?
        .to_string();
    log(&format!("server {} up", server.url));
    let secs = Duration::from_secs_f64(args.seconds.max(0.1));

    // Baseline: the same HTTP stack, no signature, no store.
    let metrics_url = format!("{}/metrics", server.url);
    let baseline = load(clients, secs, |_| {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let url = metrics_url.clone();
        Box::new(move || {
            agent
                .get(&url)
                .call()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })?;
    log(&format!("GET /metrics: {:.0}/s", baseline.per_sec));

    let describe = load(clients, secs, |_| {
        let c = admin.clone();
        let g = read_group.clone();
        Box::new(move || {
            c.vpc(
                "DescribeSecurityGroupPolicies",
                &json!({"SecurityGroupId": g}),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    })?;
    log(&format!(
        "DescribeSecurityGroupPolicies: {:.0}/s",
        describe.per_sec
    ));

    // One account per client, 50 groups each: 10,000 rules of room.
    let mut writers = Vec::new();
    for w in 0..clients {
        check_interrupt()?;
        let creds = server.account(&format!("bench{w}"))?;
        let c = Client::new(&server.url, creds)?;
        let mut groups = Vec::new();
        for g in 0..50 {
            let r = c.vpc(
                "CreateSecurityGroup",
                &json!({"GroupName": format!("w{g}"), "GroupDescription": "bench api"}),
            )?;
            groups.push(
                r["SecurityGroup"]["SecurityGroupId"]
                    .as_str()
                    .context("no SecurityGroupId")?
                    .to_string(),
            );
        }
        writers.push((c, groups));
    }
    let mut writers = writers.into_iter();
    let create = load(clients, secs, |_| {
        let (c, groups) = writers
            .next()
            .unwrap_or_else(|| unreachable!("one writer per client"));
        let mut k = 0usize;
        Box::new(move || {
            // 50 groups x 2 directions x 100 rules, then the quota answers.
            let g = &groups[k % groups.len()];
            let dir = if (k / groups.len()).is_multiple_of(2) {
                "Ingress"
            } else {
                "Egress"
            };
            k += 1;
            c.vpc(
                "CreateSecurityGroupPolicies",
                &json!({"SecurityGroupId": g, "SecurityGroupPolicySet": {dir: [rule_json(k as u64)]}}),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    })?;
    log(&format!(
        "CreateSecurityGroupPolicies: {:.0}/s",
        create.per_sec
    ));
    Ok(ApiReport {
        clients,
        seconds: secs.as_secs_f64(),
        describe,
        create,
        baseline_metrics: baseline,
    })
}

type Call = Box<dyn FnMut() -> Result<(), String> + Send>;

/// Runs `clients` threads calling for `secs`; the rate of successes.
fn load(
    clients: usize,
    secs: Duration,
    mut make: impl FnMut(usize) -> Call,
) -> anyhow::Result<Rate> {
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + secs;
    let mut threads = Vec::new();
    for i in 0..clients {
        let mut call = make(i);
        let (errors, first_error) = (errors.clone(), first_error.clone());
        threads.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            while Instant::now() < deadline && check_interrupt().is_ok() {
                let t = Instant::now();
                match call() {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().unwrap_or_default());
    }
    check_interrupt()?;
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        if let Ok(f) = first_error.lock() {
            eprintln!(
                "{errors} failed requests; the first: {}",
                f.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(Rate {
        ok: lat.len() as u64,
        errors,
        per_sec: lat.len() as f64 / elapsed,
        p50_ms: pct(&lat, 0.50).as_secs_f64() * 1e3,
        p99_ms: pct(&lat, 0.99).as_secs_f64() * 1e3,
    })
}

fn rule_json(port: u64) -> Value {
    json!({"Protocol": "TCP", "Port": port.to_string(), "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"})
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Agents and clients hold a connection each: lift the soft limit on open
/// files to the hard one.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// `palisade serve` as a child process on a free 127.0.0.1 port, with a
/// temporary data directory; killed (and the directory removed) on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    pub(crate) credentials: Credentials,
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Server {
    pub(crate) fn start(exe: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let child = Command::new(exe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            credentials: Credentials {
                secret_id: String::new(),
                secret_key: String::new(),
            },
            dir,
            exe: exe.to_path_buf(),
        };
        let creds = server
            .dir
            .path()
            .join("data")
            .join("admin-credentials.json");
        let t = Instant::now();
        loop {
            check_interrupt()?;
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(server.dir.path().join("serve.log"))
                    .unwrap_or_default();
                bail!("palisade serve exited ({status}): {log}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && creds.exists() {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("palisade serve did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.credentials = Credentials::load(Some(&creds))?;
        Ok(server)
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.url, self.credentials.clone())?)
    }

    /// A new account's credentials (`palisade account create`).
    fn account(&self, name: &str) -> anyhow::Result<Credentials> {
        let out = Command::new(&self.exe)
            .args(["account", "create", name, "--output", "json"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .output()?;
        if !out.status.success() {
            bail!(
                "account create {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The benchmarks themselves need the built `palisade` binary; they run
    // through it in crates/cli/tests/bench_tiny.rs.
    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 0.5), Duration::from_millis(50));
        assert_eq!(pct(&v, 0.99), Duration::from_millis(99));
        assert_eq!(pct(&[], 0.5), Duration::ZERO);
    }
}
