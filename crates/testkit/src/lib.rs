//! What Palisade's tests need from the machine, and what happens when it is
//! missing. A test that needs root (network namespaces, nftables) or a
//! PostgreSQL server asks here first:
//!
//! - where the need is met, it runs;
//! - where it is not, it prints `SKIPPED <test>: <why>` and returns, so a
//!   developer without root or PostgreSQL still runs everything else and
//!   sees exactly what did not run;
//! - unless the run *requires* it: `PALISADE_REQUIRE=root,postgres` (set by
//!   `.ci/run`) turns every such skip into a failure naming the test, so CI
//!   cannot pass with a kernel or PostgreSQL test that silently did nothing.
//!
//! A dev-dependency only; nothing here is shipped.

#![forbid(unsafe_code)]

use std::process::Command;

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root, with `nft`, `ip` and `python3` installed (kernel tests).
    Root,
    /// A PostgreSQL server, named by `PALISADE_TEST_PG`.
    Postgres,
}

impl Need {
    /// The name used in `PALISADE_REQUIRE`.
    pub fn name(self) -> &'static str {
        match self {
            Need::Root => "root",
            Need::Postgres => "postgres",
        }
    }

    /// Whether this run requires the need to be met (`PALISADE_REQUIRE`
    /// lists it, or is `all`).
    pub fn required(self) -> bool {
        std::env::var("PALISADE_REQUIRE").is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n == "all" || n == self.name())
        })
    }
}

/// Reports that `test` cannot run because `why`, or panics when the run
/// requires `need`. The line `SKIPPED <test>: <why> (needs <need>)` goes
/// to stderr (shown by `cargo test -- --nocapture`) and, when
/// `PALISADE_SKIP_LOG` names a file, is appended to it: `scripts/test.sh`
/// lists that file at the end of every run.
pub fn skip(need: Need, test: &str, why: &str) {
    if need.required() {
        panic!(
            "{test} needs {} and PALISADE_REQUIRE requires it, but it cannot run: {why}",
            need.name()
        );
    }
    let line = format!("SKIPPED {test}: {why} (needs {})", need.name());
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("PALISADE_SKIP_LOG") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("cannot append to PALISADE_SKIP_LOG: {e}");
        }
    }
}

/// Why kernel tests cannot run here (`None` when they can): not root, or a
/// tool they drive is missing.
pub fn root_missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
        return Some("not root".into());
    }
    for tool in ["nft", "ip", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Whether `test` may run as root; reports the skip (see [`skip`]) if not.
pub fn root(test: &str) -> bool {
    match root_missing() {
        None => true,
        Some(why) => {
            skip(Need::Root, test, &why);
            false
        }
    }
}

/// The PostgreSQL server URL for `test` (`PALISADE_TEST_PG`); reports the
/// skip (see [`skip`]) and gives `None` when unset.
pub fn postgres(test: &str) -> Option<String> {
    match std::env::var("PALISADE_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                Need::Postgres,
                test,
                "PALISADE_TEST_PG is unset (scripts/test.sh sets it; or scripts/pg-cluster.sh start DIR)",
            );
            None
        }
    }
}

/// The files [`private_ca`] writes.
#[derive(Debug, Clone)]
pub struct PrivateCa {
    /// The CA's certificate (PEM): what a client is told to trust.
    pub ca: std::path::PathBuf,
    /// The server's certificate for `127.0.0.1` (PEM), signed by the CA.
    pub cert: std::path::PathBuf,
    /// The server certificate's private key (PEM).
    pub key: std::path::PathBuf,
}

/// Makes a private CA and a server certificate for `127.0.0.1` signed by it
/// in `dir`, with the `openssl` command, for tests of an `https://` server
/// that clients reach with `--ca-cert`. Panics (naming openssl's output)
/// when openssl is missing or fails: CI installs it.
pub fn private_ca(dir: &std::path::Path) -> PrivateCa {
    let script = r#"set -e
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=palisade-test-ca -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem"#;
    let made = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "openssl could not make the test certificates: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run sh to make the test certificates: {e}"),
    }
    PrivateCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_variable() {
        assert_eq!(Need::Root.name(), "root");
        assert_eq!(Need::Postgres.name(), "postgres");
    }
}
