//! The scale-out load test (issue 8, item 4): two `palisade serve`
//! processes on one PostgreSQL database, simulated agents long-polling
//! `DescribeInstanceRuleset` (half on each server, as a load balancer would
//! spread them), and writers changing rules at a fixed rate through both
//! servers. Every request must succeed; every agent must end on the last
//! change of its group; the change-to-applied latency (from the moment a
//! write is sent to the moment an agent holds a ruleset containing it) is
//! reported as p50 / p99 / max.
//!
//! In the suite it runs tiny (20 agents, 20 writes/s, 5 s). The full run of
//! BENCHMARKS.md ("Scale-out"):
//!
//! ```text
//! ulimit -n 65536
//! PALISADE_LOAD_AGENTS=1000 PALISADE_LOAD_WRITES=200 PALISADE_LOAD_SECS=60 \
//!   PALISADE_TEST_PG=postgres://... cargo test --release -p palisade \
//!   --test load_scaleout -- --nocapture
//! ```
//!
//! Skipped (with the reason) without `PALISADE_TEST_PG`: several servers
//! need PostgreSQL. The servers log at `RUST_LOG=warn` unless
//! `PALISADE_LOAD_RUST_LOG` says otherwise; when a request fails the test
//! prints when and on which server the first and last failures came, and
//! the end of both logs. Every run prints how the kernel's TCP reset and
//! listen-queue counters moved (whole machine).

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

use palisade_agent::client::{ControlPlane, HttpControlPlane};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an agent's long-poll waits (the agent's CLI uses at most 5 s).
const WAIT: Duration = Duration::from_secs(5);
/// Instances per account (the server resolves one account's snapshot).
const PER_ACCOUNT: usize = 100;
/// Groups per account; each instance is bound to one.
const GROUPS_PER_ACCOUNT: usize = 5;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn call(c: &HttpControlPlane, service: &str, action: &str, params: Value) -> Value {
    let version = if service == "palisade" {
        "2026-11-01"
    } else {
        "2017-03-12"
    };
    c.call_service(service, version, action, &params)
        .unwrap_or_else(|e| panic!("{action}: {e}"))
}

fn client(url: &str, creds: &Value) -> HttpControlPlane {
    HttpControlPlane::new(
        url,
        creds["SecretId"].as_str().unwrap(),
        creds["SecretKey"].as_str().unwrap(),
        WAIT + Duration::from_secs(20),
    )
    .unwrap()
}

/// The kernel's counters of TCP resets, aborts and listen-queue drops
/// (`/proc/net/snmp`, `/proc/net/netstat`), by name.
fn tcp_counters() -> std::collections::BTreeMap<String, i64> {
    const NAMES: &[&str] = &[
        "OutRsts",
        "EstabResets",
        "AttemptFails",
        "ListenOverflows",
        "ListenDrops",
        "TCPAbortOnData",
        "TCPAbortOnClose",
        "TCPAbortOnMemory",
        "TCPAbortOnTimeout",
        "TCPAbortOnLinger",
        "TCPBacklogDrop",
        "TCPReqQFullDrop",
        "SyncookiesSent",
    ];
    let mut out = std::collections::BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // Pairs of lines: "Tcp: Name ..." then "Tcp: 1 ...".
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let prefix = names.split_whitespace().next().unwrap_or_default();
            if prefix != "Tcp:" && prefix != "TcpExt:" {
                continue;
            }
            for (k, v) in names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
            {
                if NAMES.contains(&k) {
                    out.insert(k.to_string(), v.parse().unwrap_or(0));
                }
            }
        }
    }
    out
}

/// The port of the rule a group's `seq`-th write sets (its marker).
fn marker_port(seq: u64) -> u64 {
    1 + seq
}

struct Group {
    id: String,
    account: usize,
    /// When each write was sent; index `seq - 1`.
    sent: Mutex<Vec<Instant>>,
}

#[test]
fn agents_long_polling_two_servers_while_rules_change() {
    let Some(base) =
        palisade_testkit::postgres("agents_long_polling_two_servers_while_rules_change")
    else {
        return;
    };
    let agents = env_num("PALISADE_LOAD_AGENTS", 20) as usize;
    let rate = env_num("PALISADE_LOAD_WRITES", 20);
    let secs = env_num("PALISADE_LOAD_SECS", 5);
    let url = palisade_store::scratch_database(&base).unwrap();
    let bin = env!("CARGO_BIN_EXE_palisade");
    let dir = tempfile::tempdir().unwrap();

    // Two servers on one database.
    let mut servers = Servers(Vec::new());
    let mut endpoints = Vec::new();
    for name in ["a", "b"] {
        let port = free_port();
        let log = std::fs::File::create(dir.path().join(format!("serve-{name}.log"))).unwrap();
        servers.0.push(
            Command::new(bin)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(dir.path().join(name))
                .args(["--store", &url])
                .env(
                    "RUST_LOG",
                    std::env::var("PALISADE_LOAD_RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "serve {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        endpoints.push(format!("http://127.0.0.1:{port}"));
    }

    // Accounts of up to PER_ACCOUNT instances, each bound to one of the
    // account's groups.
    let accounts = agents.div_ceil(PER_ACCOUNT).max(1);
    let mut creds = Vec::new();
    let mut groups: Vec<Arc<Group>> = Vec::new();
    let mut instances = Vec::new(); // (account, instance id, group index)
    for a in 0..accounts {
        let out = Command::new(bin)
            .args(["account", "create", &format!("load{a}"), "--store", &url])
            .args(["--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cr: Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = client(&endpoints[0], &cr);
        let first = groups.len();
        for g in 0..GROUPS_PER_ACCOUNT {
            let r = call(
                &c,
                "vpc",
                "CreateSecurityGroupWithPolicies",
                json!({"GroupName": format!("g{g}"), "GroupDescription": "load",
                       "SecurityGroupPolicySet": {"Ingress": [
                           {"Protocol": "TCP", "Port": marker_port(0).to_string(), "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}}),
            );
            groups.push(Arc::new(Group {
                id: r["SecurityGroup"]["SecurityGroupId"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                account: a,
                sent: Mutex::new(Vec::new()),
            }));
        }
        let n = PER_ACCOUNT.min(agents - a * PER_ACCOUNT);
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"PrivateIpAddresses": [format!("10.{}.{}.{}", a / 250, a % 250, i + 1)]}))
            .collect();
        let ids = call(
            &c,
            "palisade",
            "RegisterInstances",
            json!({"Instances": list}),
        );
        let ids: Vec<String> = ids["InstanceIdSet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for (i, id) in ids.into_iter().enumerate() {
            let g = first + i % GROUPS_PER_ACCOUNT;
            instances.push((a, id, g));
        }
        for (g, group) in groups.iter().enumerate().skip(first) {
            let members: Vec<&String> = instances
                .iter()
                .filter(|(acc, _, gi)| *acc == a && *gi == g)
                .map(|(_, id, _)| id)
                .collect();
            call(
                &c,
                "cvm",
                "AssociateSecurityGroups",
                json!({"SecurityGroupIds": [group.id], "InstanceIds": members}),
            );
        }
        creds.push(cr);
    }

    // The agents.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let requests = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..instances.len()).map(|_| AtomicU64::new(0)).collect());
    let mut threads = Vec::new();
    let t0 = Instant::now();
    let tcp_before = tcp_counters();
    for (n, (a, id, g)) in instances.iter().cloned().enumerate() {
        let server = ["a", "b"][n % 2];
        let mut c = client(&endpoints[n % 2], &creds[a]);
        let (stop, failures, requests, latencies, seen) = (
            stop.clone(),
            failures.clone(),
            requests.clone(),
            latencies.clone(),
            seen.clone(),
        );
        let group = groups[g].clone();
        threads.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut after = None;
                    while !stop.load(Ordering::Relaxed) {
                        requests.fetch_add(1, Ordering::Relaxed);
                        let rs = match c.ruleset(&id, after, WAIT) {
                            Ok(rs) => rs,
                            Err(e) => {
                                failures.lock().unwrap().push(format!(
                                    "{:.3} s, server {server}, {id}: {e}",
                                    t0.elapsed().as_secs_f64()
                                ));
                                std::thread::sleep(Duration::from_millis(200));
                                continue;
                            }
                        };
                        let now = Instant::now();
                        after = Some(rs.revision);
                        if !rs.changed {
                            continue;
                        }
                        let port = rs
                            .ingress
                            .first()
                            .and_then(|r| r.services().first())
                            .and_then(|s| s.ports.first())
                            .map(|p| u64::from(p.lo()))
                            .unwrap_or(1);
                        let applied = port - 1;
                        let before = seen[n].swap(
                            applied.max(seen[n].load(Ordering::Relaxed)),
                            Ordering::Relaxed,
                        );
                        if applied > before {
                            let sent = group.sent.lock().unwrap();
                            let mut l = latencies.lock().unwrap();
                            for s in before + 1..=applied {
                                if let Some(t) = sent.get(s as usize - 1) {
                                    l.push(now.saturating_duration_since(*t));
                                }
                            }
                        }
                    }
                })
                .unwrap(),
        );
    }
    // Let every agent reach its first long-poll.
    let t = Instant::now();
    while requests.load(Ordering::Relaxed) < 2 * instances.len() as u64
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    // The writers: one per group slice, each at its share of the rate,
    // alternating servers; a group is written by one writer only, in order.
    let writers = groups.len().clamp(1, 64);
    let per_writer = rate as f64 / writers as f64;
    let writes = Arc::new(AtomicU64::new(0));
    let write_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let write_times = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut wthreads = Vec::new();
    for w in 0..writers {
        let mine: Vec<Arc<Group>> = groups.iter().skip(w).step_by(writers).cloned().collect();
        let clients: Vec<Vec<HttpControlPlane>> = (0..accounts)
            .map(|a| endpoints.iter().map(|e| client(e, &creds[a])).collect())
            .collect();
        let (writes, write_failures, write_times) =
            (writes.clone(), write_failures.clone(), write_times.clone());
        wthreads.push(std::thread::spawn(move || {
            let mut k = 0u64;
            loop {
                let due = started + Duration::from_secs_f64(k as f64 / per_writer);
                // Bounded in time: a server slower than the rate gets fewer
                // writes (the achieved rate is reported), not a longer run.
                if due >= deadline || Instant::now() >= deadline {
                    break;
                }
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let g = &mine[k as usize % mine.len()];
                let c = &clients[g.account][k as usize % 2];
                let seq = {
                    let mut sent = g.sent.lock().unwrap();
                    sent.push(Instant::now());
                    sent.len() as u64
                };
                let call_started = Instant::now();
                let r = c.call_service(
                    "vpc",
                    "2017-03-12",
                    "ModifySecurityGroupPolicies",
                    &json!({"SecurityGroupId": g.id, "SecurityGroupPolicySet": {"Ingress": [
                        {"Protocol": "TCP", "Port": marker_port(seq).to_string(), "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}}),
                );
                write_times.lock().unwrap().push(call_started.elapsed());
                match r {
                    Ok(_) => {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => write_failures.lock().unwrap().push(format!("{}: {e}", g.id)),
                }
                k += 1;
            }
        }));
    }
    for t in wthreads {
        t.join().unwrap();
    }
    let write_time = started.elapsed();

    // Every agent ends on its group's last write (bounded wait).
    let t = Instant::now();
    let caught_up = || {
        instances.iter().enumerate().all(|(n, (_, _, g))| {
            seen[n].load(Ordering::Relaxed) == groups[*g].sent.lock().unwrap().len() as u64
        })
    };
    while !caught_up() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let converged = caught_up();
    stop.store(true, Ordering::Relaxed);
    // Wake the last long-polls with one more write rather than wait them out.
    let c = client(&endpoints[0], &creds[0]);
    call(
        &c,
        "vpc",
        "ModifySecurityGroupAttribute",
        json!({"SecurityGroupId": groups[0].id, "GroupDescription": "done"}),
    );
    for t in threads {
        t.join().unwrap();
    }

    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pct_of = |l: &[Duration], p: f64| -> Duration {
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    };
    let pct = |p: f64| pct_of(&l, p);
    let mut wt = write_times.lock().unwrap().clone();
    wt.sort();
    let done = writes.load(Ordering::Relaxed);
    eprintln!(
        "scale-out: {agents} agents on 2 servers, {done} writes in {:.1} s ({:.0}/s), {} ruleset requests, \
         {} change-to-applied samples: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; failed requests: {} agent, {} write; \
         {writers} writers, each waiting for its write: write call p50 {:.1} ms, p99 {:.1} ms",
        write_time.as_secs_f64(),
        done as f64 / write_time.as_secs_f64(),
        requests.load(Ordering::Relaxed),
        l.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        l.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        failures.lock().unwrap().len(),
        write_failures.lock().unwrap().len(),
        pct_of(&wt, 0.50).as_secs_f64() * 1e3,
        pct_of(&wt, 0.99).as_secs_f64() * 1e3,
    );
    // The kernel's TCP counters over the run, whole machine (other
    // processes count too): resets and listen-queue drops, if any, say
    // which side ended a failed connection and how.
    let tcp_after = tcp_counters();
    let moved: Vec<String> = tcp_after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - tcp_before.get(k).copied().unwrap_or(0);
            (d != 0).then(|| format!("{k} +{d}"))
        })
        .collect();
    eprintln!(
        "kernel TCP counters during the run (whole machine): {}",
        if moved.is_empty() {
            format!("none of {} moved", tcp_after.len())
        } else {
            moved.join(", ")
        }
    );
    let f = failures.lock().unwrap();
    if !f.is_empty() || !write_failures.lock().unwrap().is_empty() {
        for name in ["a", "b"] {
            let on: Vec<&String> = f
                .iter()
                .filter(|e| e.contains(&format!("server {name},")))
                .collect();
            if let (Some(first), Some(last)) = (on.first(), on.last()) {
                eprintln!(
                    "--- {} failed agent requests on server {name}; first: {first}; last: {last}",
                    on.len()
                );
            }
        }
        // What the servers said, for the failures below.
        for name in ["a", "b"] {
            let log = std::fs::read_to_string(dir.path().join(format!("serve-{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- serve {name}, last lines of its log:");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    assert!(
        f.is_empty(),
        "failed agent requests: {:?}",
        &f[..f.len().min(5)]
    );
    let wf = write_failures.lock().unwrap();
    assert!(wf.is_empty(), "failed writes: {:?}", &wf[..wf.len().min(5)]);
    assert!(
        converged,
        "some agents did not end on their group's last write"
    );
    assert!(done > 0 && !l.is_empty());
}
