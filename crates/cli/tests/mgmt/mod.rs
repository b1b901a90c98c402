//! A management path for kernel tests where `palisade agent` runs inside a
//! node's network namespace and `palisade serve` on 127.0.0.1 outside it:
//! the node reaches the server over a link of its own (`mgmt`, to a `ctl`
//! namespace) whose relay forwards to the server through a Unix socket, so
//! no traffic leaves the namespaces the test creates and 127.0.0.1.

#![allow(dead_code, clippy::unwrap_used)] // test harness: a failed setup step should stop loudly

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Forwards TCP connections on `HOST PORT` to the Unix socket `PATH`.
const RELAY: &str = r#"
import socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(64)
print("ready", flush=True)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect(path)
    except OSError:
        c.close()
        continue
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"#;

/// Processes killed (and reaped) on drop, before the namespaces go.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The address the node reaches the server at, once [`connect`] ran.
pub const SERVER_IN_CTL: &str = "http://198.18.1.2:9180";

/// Links namespace `node` to a new `ctl` namespace (`mgmt`,
/// 198.18.1.1/30 - 198.18.1.2/30) and starts a relay in `ctl` on
/// 198.18.1.2:9180 that reaches `127.0.0.1:port` through a Unix socket in
/// `dir`. The relay is added to `children`.
pub fn connect(lab: &mut super::common::Lab, port: u16, dir: &Path, children: &mut Children) {
    lab.add_ns("ctl");
    lab.link("node", "mgmt", "ctl", "mgmt");
    lab.addr("node", "mgmt", "198.18.1.1/30");
    lab.addr("ctl", "mgmt", "198.18.1.2/30");
    let sock = dir.join("api.sock");
    unix_to_tcp(&sock, port);
    let relay_py = dir.join("relay.py");
    std::fs::write(&relay_py, RELAY).unwrap();
    let mut relay = Command::new("ip")
        .args(["netns", "exec", &lab.ns("ctl"), "python3"])
        .arg(&relay_py)
        .args(["198.18.1.2", "9180"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    children.0.push(relay);
    assert_eq!(line.trim(), "ready");
}

/// Accepts on the Unix socket `path` and forwards each connection to
/// `127.0.0.1:port` (the host side of the relay; threads end with the test).
pub fn unix_to_tcp(path: &Path, port: u16) {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(u) = conn else { continue };
            let Ok(t) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let (mut u2, mut t2) = (u.try_clone().unwrap(), t.try_clone().unwrap());
            let (mut u, mut t) = (u, t);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut u, &mut t);
                let _ = t.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut t2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

/// A `palisade serve` of `bin` on a free port of 127.0.0.1 with its data in
/// `dir/data`, added to `children`; its URL once it answers.
pub fn serve(bin: &str, dir: &Path, children: &mut Children) -> (u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    children.0.push(
        Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "palisade serve did not start: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (port, format!("http://127.0.0.1:{port}"))
}

/// Calls `action` of `service` with the client, panicking with the error.
pub fn api(
    c: &palisade_agent::client::HttpControlPlane,
    service: &str,
    action: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let version = if service == "palisade" {
        "2026-11-01"
    } else {
        "2017-03-12"
    };
    c.call_service(service, version, action, &params)
        .unwrap_or_else(|e| panic!("{action}: {e}"))
}

/// The account's admin client of the server whose data is in `dir/data`.
pub fn admin(url: &str, dir: &Path) -> palisade_agent::client::HttpControlPlane {
    let creds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("data").join("admin-credentials.json")).unwrap(),
    )
    .unwrap();
    palisade_agent::client::HttpControlPlane::new(
        url,
        creds["SecretId"].as_str().unwrap(),
        creds["SecretKey"].as_str().unwrap(),
        std::time::Duration::from_secs(10),
    )
    .unwrap()
}

/// A key of `instance` only (`palisade account instance-key`), as the
/// `(SecretId, SecretKey)` an agent runs with.
pub fn instance_key(bin: &str, dir: &Path, instance: &str) -> (String, String) {
    let out = Command::new(bin)
        .args(["account", "instance-key", "--instance", instance])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        key["SecretId"].as_str().unwrap().to_string(),
        key["SecretKey"].as_str().unwrap().to_string(),
    )
}
