//! The agent's memory stays bounded whatever the server answers (issue 15
//! item 4): the real client ([`HttpControlPlane`]) and the real sync loop,
//! with the in-memory dataplane, against a tiny HTTP server on 127.0.0.1
//! that answers `DescribeInstanceRuleset` with hostile rulesets in turn.
//! The process's peak resident size (`VmHWM` of /proc/self/status; this
//! file is its own test binary, with this one test) must stay under
//! [`MAX_RSS_KIB`], and every hostile answer must leave the last good rules
//! loaded.
//!
//! Before the budget, a ruleset naming `10.0.0.0/12` as a group's member
//! became a million set elements per rule (the issue reported a 1 KB
//! answer taking the agent to 803 MiB, a 9.3 MB one past 3 GiB).

use palisade_agent::agent::{Agent, AgentConfig, Event};
use palisade_agent::client::{HttpControlPlane, DEFAULT_MAX_RESPONSE_BYTES};
use palisade_agent::compile::DEFAULT_MAX_ELEMENTS;
use palisade_agent::{CompileOptions, FakeDataplane};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The bound on the agent's peak resident size: 256 MiB.
const MAX_RSS_KIB: u64 = 256 * 1024;

/// One answer of the fake server, written as it is sent (nothing of it is
/// held in memory on the server's side, so the peak is the agent's).
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Revision 1: one rule, a group of three members.
    Good,
    /// 200 rules, each naming its own group whose "member" is 10.0.0.0/12
    /// (a million addresses each once expanded; about 40 KB on the wire).
    WideMembers,
    /// One group of scattered single addresses just under the 8 MiB
    /// answer bound (over the element budget).
    NearlyTooLong,
    /// 40 MiB of rules with no `Content-Length`: read up to the bound only.
    Endless,
    /// A `Content-Length` over the bound: not read at all.
    DeclaredTooLong,
    /// The largest ruleset the budget admits, less a margin for the rules:
    /// one group of scattered single addresses. Loaded.
    AtBudget,
}

const ANSWERS: [Answer; 6] = [
    Answer::Good,
    Answer::WideMembers,
    Answer::Endless,
    Answer::DeclaredTooLong,
    Answer::AtBudget,
    Answer::NearlyTooLong,
];

fn rule(group: usize, member_of: &str) -> String {
    format!(
        r#"{{"security_group_id":"sg-node0001","direction":"ingress","policy_index":{group},"action":"ACCEPT","policy":{{"Protocol":"TCP","Port":"22","SecurityGroupId":"{member_of}","Action":"ACCEPT"}},"services":[{{"protocol":6,"ports":"22"}}],"peers":["#
    )
}

/// The `n`th of a run of scattered single addresses (never adjacent, so
/// they do not merge into ranges).
fn scattered(n: usize) -> String {
    let a = (n as u32) * 2;
    format!("\"10.{}.{}.{}\"", (a >> 16) & 255, (a >> 8) & 255, a & 255)
}

/// Writes a ruleset answer of `rules` (each `(head, members)`).
fn ruleset(
    out: &mut impl Write,
    revision: u64,
    rules: impl Iterator<Item = (String, Box<dyn Iterator<Item = String>>)>,
) -> std::io::Result<()> {
    write!(
        out,
        r#"{{"Response":{{"RequestId":"r","Ruleset":{{"InstanceId":"ins-node0001","Revision":{revision},"Changed":true,"Ingress":["#
    )?;
    for (i, (head, members)) in rules.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(head.as_bytes())?;
        for (j, m) in members.enumerate() {
            if j > 0 {
                out.write_all(b",")?;
            }
            out.write_all(m.as_bytes())?;
        }
        out.write_all(b"]}")?;
    }
    out.write_all(b"],\"Egress\":[]}}}")
}

fn members(n: usize) -> Box<dyn Iterator<Item = String>> {
    Box::new((0..n).map(scattered))
}

fn serve(answer: Answer, revision: u64, s: &mut TcpStream) -> std::io::Result<()> {
    let header = |len: Option<u64>| {
        let mut h = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            .to_string();
        if let Some(n) = len {
            h.push_str(&format!("Content-Length: {n}\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    let mut w = std::io::BufWriter::new(s);
    match answer {
        Answer::Good => {
            w.write_all(header(None).as_bytes())?;
            ruleset(
                &mut w,
                revision,
                std::iter::once((rule(0, "sg-peer0001"), members(3))),
            )?;
        }
        Answer::WideMembers => {
            w.write_all(header(None).as_bytes())?;
            ruleset(
                &mut w,
                revision,
                (0..200).map(|g| {
                    let wide: Box<dyn Iterator<Item = String>> =
                        Box::new(std::iter::once("\"10.0.0.0/12\"".to_string()));
                    (rule(g, &format!("sg-wide{g:04}")), wide)
                }),
            )?;
        }
        Answer::NearlyTooLong => {
            w.write_all(header(None).as_bytes())?;
            ruleset(
                &mut w,
                revision,
                std::iter::once((rule(0, "sg-peer0001"), members(570_000))),
            )?;
        }
        Answer::Endless => {
            w.write_all(header(None).as_bytes())?;
            // Cut off by the client: the write fails when it hangs up.
            let n = (40 << 20) / 14;
            let _ = ruleset(
                &mut w,
                revision,
                std::iter::once((rule(0, "sg-peer0001"), members(n))),
            );
            return Ok(());
        }
        Answer::DeclaredTooLong => {
            w.write_all(header(Some(DEFAULT_MAX_RESPONSE_BYTES + 1)).as_bytes())?;
            let _ = w.write_all(b"{\"Response\":");
            return Ok(());
        }
        Answer::AtBudget => {
            w.write_all(header(None).as_bytes())?;
            ruleset(
                &mut w,
                revision,
                std::iter::once((rule(0, "sg-peer0001"), members(DEFAULT_MAX_ELEMENTS - 100))),
            )?;
        }
    }
    w.flush()
}

/// Answers each `DescribeInstanceRuleset` with the next of [`ANSWERS`]
/// (revision = its position + 1) and anything else with an empty success.
fn fake_server(listener: TcpListener) {
    let mut next = 0;
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut reader = BufReader::new(s.try_clone().expect("clone"));
        let (mut action, mut length) = (String::new(), 0usize);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("x-tc-action:") {
                action = v.trim().to_string();
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        if action == "describeinstanceruleset" && next < ANSWERS.len() {
            let _ = serve(ANSWERS[next], next as u64 + 1, &mut s);
            next += 1;
        } else {
            let ok = r#"{"Response":{"RequestId":"r"}}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ok}",
                ok.len()
            );
        }
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn the_agents_memory_stays_bounded_whatever_the_server_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || fake_server(listener));
    let control = HttpControlPlane::new(
        &format!("http://{addr}"),
        "AKIDtest",
        "secret",
        Duration::from_secs(60),
    )
    .expect("client");
    let mut agent = Agent::new(
        FakeDataplane::new(),
        control,
        AgentConfig {
            instance_id: "ins-node0001".into(),
            compile: CompileOptions {
                uplinks: vec!["eth0".into()],
                ..Default::default()
            },
            private_ips: Vec::new(),
            interval: Duration::from_secs(1),
            report: true,
            register: true,
            boot_state: None,
        },
    );
    let before = peak_rss_kib();
    let mut loaded = 0;
    for (n, answer) in ANSWERS.iter().enumerate() {
        let events = agent.step();
        let revision = n as u64 + 1;
        match answer {
            Answer::Good | Answer::AtBudget => {
                assert!(
                    events.contains(&Event::Replaced { revision })
                        || events.contains(&Event::Updated { revision }),
                    "{answer:?}: {events:?}"
                );
                assert_eq!(agent.applied_revision(), Some(revision), "{answer:?}");
                loaded = revision;
            }
            Answer::WideMembers | Answer::NearlyTooLong => {
                assert!(
                    events
                        .iter()
                        .any(|e| matches!(e, Event::Rejected(m) if m.contains("--max-elements"))),
                    "{answer:?}: {events:?}"
                );
                assert_eq!(agent.applied_revision(), Some(loaded), "{answer:?} kept");
            }
            Answer::Endless | Answer::DeclaredTooLong => {
                assert!(
                    events.iter().any(|e| matches!(e,
                        Event::ServerUnavailable(m) if m.contains("--max-response-bytes"))),
                    "{answer:?}: {events:?}"
                );
                assert_eq!(agent.applied_revision(), Some(loaded), "{answer:?} kept");
            }
        }
        eprintln!("after {answer:?}: peak RSS {} MiB", peak_rss_kib() / 1024);
    }
    let peak = peak_rss_kib();
    eprintln!(
        "peak RSS {} MiB (before the first answer {} MiB)",
        peak / 1024,
        before / 1024
    );
    assert!(
        peak < MAX_RSS_KIB,
        "the agent reached {peak} KiB, more than {MAX_RSS_KIB}"
    );
}
