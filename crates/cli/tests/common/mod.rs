//! The harness the CLI's tests share: a real `palisade serve` on a free
//! 127.0.0.1 port with its own data directory (killed on drop), and the
//! `palisade` commands run against it with its admin credentials.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it

use palisade_client::{Client, Credentials};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// A server on a free loopback port with its own data directory; killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server and waits until it takes connections.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start palisade serve");
        let server = Server {
            child,
            url: format!("http://{listen}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.credentials().exists() || std::net::TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The admin credentials file the server wrote.
    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("admin-credentials.json")
    }

    /// The admin key.
    pub fn key(&self) -> Credentials {
        Credentials::load(Some(&self.credentials())).unwrap()
    }

    /// An API client with the admin key.
    pub fn client(&self) -> Client {
        Client::new(&self.url, self.key()).unwrap()
    }

    /// `palisade ARGS --server URL --credentials FILE`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--server", &self.url, "--credentials"])
            .arg(self.credentials())
            .stdin(Stdio::null())
            .output()
            .expect("run palisade")
    }

    /// `palisade export` of the server.
    pub fn export(&self) -> String {
        let o = self.run(&["export"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
