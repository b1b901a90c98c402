//! `palisade agent` as a newcomer first runs it, against a real `palisade
//! serve` on 127.0.0.1: a dry run writes nothing to the server, and a key
//! the server refuses is said to be refused (with its own exit code), not
//! taken for a server that is down.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{Server, BIN};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Everything the server holds that an agent could write: the instances
/// with their status reports, and the revision.
fn state(s: &Server) -> Value {
    s.client()
        .palisade("DescribeInstanceStatus", &json!({}))
        .unwrap()
}

/// `palisade agent --once` against `s` with `args`, signing with `key`.
fn agent(s: &Server, key: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["agent", "--once", "--server", &s.url])
        .args(["--instance-id", "ins-node0001", "--uplink", "eth0"])
        .args(["--private-ip", "198.18.0.11"])
        .args(args)
        .env("PALISADE_SECRET_ID", s.key().secret_id)
        .env("PALISADE_SECRET_KEY", key)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade agent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_dry_run_writes_nothing_to_the_server() {
    let s = Server::start();
    let key = s.key().secret_key;
    let before = state(&s);
    // An instance the server does not know stays unknown.
    let o = agent(&s, &key, &["--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a dry run does not register it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(state(&s), before, "the dry run registered the instance");
    // A known instance: the program is printed, "would load" is said, and
    // no status is reported.
    s.client()
        .palisade(
            "RegisterInstances",
            &json!({ "Instances": [{ "InstanceId": "ins-node0001", "PrivateIpAddresses": ["198.18.0.11"] }] }),
        )
        .unwrap();
    let before = state(&s);
    let o = agent(&s, &key, &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("table inet palisade"),
        "the program is printed"
    );
    assert!(stderr(&o).contains("would load revision"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("loaded"), "{}", stderr(&o));
    assert_eq!(state(&s), before, "the dry run reported a status");
    assert_eq!(before["InstanceStatusSet"][0]["Reported"], false);
}

#[test]
fn a_refused_key_is_an_authorization_error_with_its_own_exit_code() {
    let s = Server::start();
    let o = agent(&s, "not-the-key", &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("the server refused this agent's key")
            && err.contains("AuthFailure.SignatureFailure"),
        "{err}"
    );
    assert!(!err.contains("server unavailable"), "{err}");
    // A long-running agent keeps retrying, and says so once.
    let mut agent = Command::new(BIN)
        .args([
            "agent",
            "--server",
            &s.url,
            "--dry-run",
            "--interval-ms",
            "100",
        ])
        .args(["--instance-id", "ins-node0001", "--uplink", "eth0"])
        .args(["--private-ip", "198.18.0.11"])
        .env("PALISADE_SECRET_ID", s.key().secret_id)
        .env("PALISADE_SECRET_KEY", "not-the-key")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.try_wait().unwrap().is_none(), "the agent gave up");
    agent.kill().unwrap();
    let out = agent.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("the server refused this agent's key").count(),
        1,
        "{err}"
    );
}

/// Issue 17, item 4: the agent takes its credentials as every command does:
/// `--credentials FILE` or the TENCENTCLOUD_SECRET_ID/KEY variables, besides
/// the older --secret-id/--secret-key (PALISADE_SECRET_*).
#[test]
fn the_agent_takes_credentials_as_every_command_does() {
    let s = Server::start();
    s.client()
        .palisade(
            "RegisterInstances",
            &json!({ "Instances": [{ "InstanceId": "ins-node0001", "PrivateIpAddresses": ["198.18.0.11"] }] }),
        )
        .unwrap();
    let file = s.credentials();
    let base = |c: &mut Command| {
        c.args(["agent", "--once", "--dry-run", "--server", &s.url])
            .args(["--instance-id", "ins-node0001", "--uplink", "eth0"])
            .env_remove("PALISADE_SECRET_ID")
            .env_remove("PALISADE_SECRET_KEY")
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .stdin(Stdio::null());
    };
    let mut with_file = Command::new(BIN);
    base(&mut with_file);
    let o = with_file.arg("--credentials").arg(&file).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "--credentials: {}", stderr(&o));
    let mut with_env = Command::new(BIN);
    base(&mut with_env);
    let o = with_env
        .env("TENCENTCLOUD_SECRET_ID", s.key().secret_id)
        .env("TENCENTCLOUD_SECRET_KEY", s.key().secret_key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "TENCENTCLOUD_*: {}", stderr(&o));
    let mut with_nothing = Command::new(BIN);
    base(&mut with_nothing);
    let o = with_nothing.output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--credentials"), "{}", stderr(&o));
}
