//! The acceptance figure of the exhaustion issue, against a real server in
//! its own process on 127.0.0.1: with 2,000 idle sockets, 1,000 slowloris
//! connections and 100 stalled 10 MiB bodies open at once, a signed
//! describe answers within 1 s and the server's RSS (from /proc) stays
//! under 256 MiB. The timing bound is here only because the issue states it
//! as the acceptance figure; on the 2-core test machine the describe takes
//! a few milliseconds (docs/operations.md has the measured figures).
//!
//! The server is this test binary run again with `EXHAUSTION_SERVER` set
//! (so `harness = false`): it goes through `palisade_server::run_blocking`,
//! the same path as `palisade serve`, and starts with a soft open-file limit
//! of 1,024, so it must raise its own limit to hold the connections.
//!
//! The stalled bodies carry a real SecretId and timestamp with a wrong
//! signature: they pass the header checks, so the server reads them, and
//! only the body budget keeps 100 x 9.5 MiB out of memory. A body with no
//! credentials is checked separately: it is refused before a byte of it is
//! sent. The test bounds itself: a watchdog ends it (and the server) after
//! 150 s.

use palisade_server::tc3;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDLE: usize = 2_000;
const SLOWLORIS: usize = 1_000;
const STALLED: usize = 100;
const DECLARED: usize = 10 * 1024 * 1024;
const SENT: usize = DECLARED - DECLARED / 20; // 9.5 MiB
const RSS_LIMIT_KIB: u64 = 256 * 1024;
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

fn main() {
    if let Ok(spec) = std::env::var("EXHAUSTION_SERVER") {
        serve(&spec);
        return;
    }
    // A watchdog: the test ends by itself whatever happens below.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(150));
        eprintln!("exhaustion: watchdog fired after 150 s");
        std::process::exit(2);
    });
    let started = Instant::now();
    exhaustion();
    println!(
        "test exhaustion ... ok ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// The server process: `palisade serve` on `ADDR` with data in `DIR`.
fn serve(spec: &str) {
    let (addr, dir) = spec.split_once('|').expect("ADDR|DIR");
    let config = palisade_server::Config {
        listen: addr.parse().expect("address"),
        data_dir: PathBuf::from(dir),
        store: None,
        tls: None,
        limits: palisade_model::Limits::default(),
        log_json: false,
        strict_signatures: false,
        max_connections: palisade_server::serve::DEFAULT_MAX_CONNECTIONS,
        flow_retention: Default::default(),
        history_limit: None,
    };
    if let Err(e) = palisade_server::run_blocking(config) {
        eprintln!("server: {e}");
        std::process::exit(1);
    }
}

/// Kills the server when the test ends, passing or not.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exhaustion() {
    // The server starts with 1,024 open files, as under a default shell.
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    let needed = (IDLE + SLOWLORIS + STALLED) as u64 + 500;
    assert!(
        hard >= needed,
        "the hard open-file limit {hard} is below the {needed} this test needs (ulimit -Hn)"
    );
    rlimit::Resource::NOFILE
        .set(1024.min(hard), hard)
        .expect("setrlimit");
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let log = dir.path().join("server.log");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .env(
            "EXHAUSTION_SERVER",
            format!("{addr}|{}", dir.path().join("data").display()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the server");
    let server = ServerProcess(child);
    let pid = server.0.id();
    // The clients may hold as many files as the hard limit allows.
    rlimit::increase_nofile_limit(hard).expect("raise the test's own limit");

    let creds = wait_for_credentials(&dir.path().join("data"));
    let call = || describe(addr, &creds);
    // The credentials are written before the server listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut ok, mut first) = call();
    while !ok && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        (ok, first) = call();
    }
    assert!(ok, "the server does not answer a signed describe");
    let limit_line = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        limit_line.contains("open-file limit") && limit_line.contains("(was 1024"),
        "the server did not say it raised its open-file limit:\n{limit_line}"
    );
    let rss_idle = rss_kib(pid);
    println!("server RSS at rest: {} KiB; describe {first:?}", rss_idle);

    // Credentials are checked before a body is read: an unsigned 10 MiB
    // request is answered before any of its body is sent.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-TC-Action: CreateSecurityGroup\r\nContent-Length: {DECLARED}\r\n\r\n"
    )
    .expect("head");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("AuthFailure.InvalidAuthorization"),
        "an unsigned body was not refused before it was sent: {answer}"
    );
    drop(s);

    // The attack, all open at once.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).expect("idle connect"));
    }
    let mut slow = Vec::with_capacity(SLOWLORIS);
    for i in 0..SLOWLORIS {
        let mut s = TcpStream::connect(addr).expect("slowloris connect");
        write!(s, "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Slow-{i}: ").expect("partial head");
        slow.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let body = Arc::new(vec![b' '; SENT]);
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let (stop, body, creds) = (stop.clone(), body.clone(), creds.clone());
        stalled.push(std::thread::spawn(move || {
            let Ok(mut s) = TcpStream::connect(addr) else {
                return;
            };
            let ts = now();
            // A real SecretId and timestamp, a signature that will not match.
            let auth = tc3::authorization(
                &creds.0,
                "not-the-key",
                "vpc",
                "application/json",
                "h",
                b"",
                ts,
            );
            let head = format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 X-TC-Action: CreateSecurityGroup\r\nX-TC-Version: 2017-03-12\r\n\
                 X-TC-Timestamp: {ts}\r\nAuthorization: {auth}\r\n\
                 Content-Length: {DECLARED}\r\n\r\n"
            );
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = s.write_all(head.as_bytes());
            let mut sent = 0;
            while sent < SENT && !stop.load(Ordering::Relaxed) {
                match s.write(&body[sent..]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            // Stall: hold the connection with the last 0.5 MiB unsent.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    // Let the server take every connection and the bodies flow in.
    std::thread::sleep(Duration::from_secs(3));

    let mut peak = rss_kib(pid);
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (ok, took) = call();
        assert!(ok, "a signed describe failed under attack");
        slowest = slowest.max(took);
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    let open_idle = idle.iter().filter(|s| still_open(s)).count();
    let open_slow = slow.iter().filter(|s| still_open(s)).count();
    println!(
        "under attack: {open_idle}/{IDLE} idle and {open_slow}/{SLOWLORIS} slowloris \
         connections open, {STALLED} stalled bodies; slowest of 10 describes {slowest:?}; \
         server RSS peak {peak} KiB ({} MiB)",
        peak / 1024
    );
    // The attack held: the connections were open while the describes ran.
    assert_eq!(
        open_idle, IDLE,
        "idle connections were closed during the test"
    );
    assert_eq!(
        open_slow, SLOWLORIS,
        "slowloris connections were closed early"
    );
    assert!(
        slowest < ANSWER_WITHIN,
        "a signed describe took {slowest:?} under attack"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "server RSS reached {peak} KiB under attack"
    );

    // The header timeout closes the idle and slowloris connections.
    let deadline = Instant::now() + palisade_server::serve::HEADER_TIMEOUT + Duration::from_secs(5);
    let mut closed_after = None;
    while Instant::now() < deadline {
        if idle.iter().chain(&slow).all(|s| !still_open(s)) {
            closed_after = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        closed_after.is_some(),
        "idle connections outlived the header timeout"
    );
    stop.store(true, Ordering::Relaxed);
    for t in stalled {
        let _ = t.join();
    }
    let (ok, took) = call();
    assert!(ok, "the server does not answer after the attack");
    println!(
        "after the attack: describe {took:?}, server RSS {} KiB",
        rss_kib(pid)
    );
}

/// Whether the server still holds `s` open (a read would block).
fn still_open(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    open
}

fn wait_for_credentials(data: &Path) -> (String, String) {
    let file = data.join(palisade_server::ADMIN_CREDENTIALS_FILE);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let (Some(id), Some(key)) = (v["SecretId"].as_str(), v["SecretKey"].as_str()) {
                    return (id.to_string(), key.to_string());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server wrote no credentials within 30 s");
}

/// A signed `DescribeSecurityGroups` on a new connection: whether it
/// succeeded, and how long it took from connect to the whole answer.
fn describe(addr: SocketAddr, creds: &(String, String)) -> (bool, Duration) {
    let started = Instant::now();
    let body = b"{}";
    let host = addr.to_string();
    let ts = now();
    let auth = tc3::authorization(
        &creds.0,
        &creds.1,
        "vpc",
        "application/json",
        &host,
        body,
        ts,
    );
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else {
        return (false, started.elapsed());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         X-TC-Action: DescribeSecurityGroups\r\nX-TC-Version: 2017-03-12\r\n\
         X-TC-Timestamp: {ts}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (false, started.elapsed());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out);
    let ok = text.starts_with("HTTP/1.1 200")
        && text.contains("\"SecurityGroupSet\"")
        && !text.contains("\"Error\"");
    (ok, took)
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .expect("VmRSS of the server")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
