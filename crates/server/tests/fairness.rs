//! One account's oversized writes must not hold up another's (issue 15
//! item 2): a real server on 127.0.0.1, account A sending near-10 MB
//! writes that are refused by their list bounds (`actions::bounds`) while
//! account B makes single-rule writes, each timed. The B writes that
//! overlap a hostile request take at most [`MAX_DELAY`] longer than B's
//! median write with no hostile traffic (at the 99th percentile). Before
//! the bounds were checked ahead of the transaction, the issue reported
//! such requests holding the writer for 8.8 s (64,000 rules), 10.2 s
//! (120,000 template entries) or 15.5 s (100,000 groups), and B waiting as
//! long.
//!
//! Bounded: A sends [`HOSTILE_REQUESTS`] requests, B stops when A is done
//! or after [`GIVE_UP`].

mod common;

use common::Server;
use palisade_store::Account;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most a hostile request may add to B's write.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// Hostile requests A sends (each kind in turn).
const HOSTILE_REQUESTS: usize = 9;
/// B's writes without hostile traffic, for the baseline.
const BASELINE_WRITES: usize = 200;
/// The test ends by then whatever happens.
const GIVE_UP: Duration = Duration::from_secs(120);
/// Just under the server's 10 MiB body limit.
const BODY_BYTES: usize = 10 * 1024 * 1024 - 4096;

fn cred(a: &Account) -> (&str, &str) {
    (a.secret_id.as_str(), a.secret_key.as_str())
}

/// A JSON body of about [`BODY_BYTES`]: `head`, then items from `item(i)`
/// comma-separated, then `tail`.
fn body(head: &str, item: impl Fn(usize) -> String, tail: &str) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    let mut i = 0;
    while out.len() + tail.len() + 64 < BODY_BYTES {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item(i).as_bytes());
        i += 1;
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

fn addr(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

#[test]
fn a_hostile_write_delays_another_accounts_write_by_at_most_100_ms() {
    let (server, worlds) = Server::start(&[("hostile", "hhhh"), ("victim", "vvvv")]);
    let ((a, a_ids), (b, _)) = (&worlds[0], &worlds[1]);
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "CreateSecurityGroupPolicies",
            body(
                &format!(
                    r#"{{"SecurityGroupId":"{}","SecurityGroupPolicySet":{{"Ingress":["#,
                    a_ids["$SG1"]
                ),
                |i| {
                    format!(
                        r#"{{"Protocol":"TCP","Port":"80","CidrBlock":"{}","Action":"ACCEPT"}}"#,
                        addr(i)
                    )
                },
                "]}}",
            ),
            "LimitExceeded.SecurityGroupPolicySet",
        ),
        (
            "CreateAddressTemplate",
            body(
                r#"{"AddressTemplateName":"big","Addresses":["#,
                |i| format!("\"{}\"", addr(i)),
                "]}",
            ),
            "InvalidParameterValue.LimitExceeded",
        ),
        (
            "ModifyInstancesAttribute",
            body(
                &format!(
                    r#"{{"InstanceIds":["{}"],"SecurityGroups":["#,
                    a_ids["$INS"]
                ),
                |i| format!("\"sg-{i:08x}\""),
                "]}",
            ),
            "LimitExceeded.AssociateUSGLimitExceeded",
        ),
    ];
    // Signed ahead: hashing 10 MB is the client's work, not the server's,
    // and would only compete with the victim for the CPU here.
    let hostile: Vec<_> = hostile
        .into_iter()
        .map(|(action, bytes, code)| {
            assert!(bytes.len() > 9 * 1024 * 1024, "{action}: {}", bytes.len());
            serde_json::from_slice::<Value>(&bytes).expect("hostile bodies are valid JSON");
            let headers = server.signed_headers(cred(a), action, &bytes, common::now());
            (action, headers, bytes, code)
        })
        .collect();

    // B's group and one write: a rule added, then the same rule deleted.
    let victim = cred(b);
    let group = server
        .call(
            victim,
            "CreateSecurityGroup",
            &json!({"GroupName": "victim", "GroupDescription": "timed"}),
        )
        .assert_ok("victim group")["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .expect("id")
        .to_string();
    let mut n = 0u32;
    let mut write = || -> Duration {
        n += 1;
        let (action, rule) = if n % 2 == 1 {
            ("CreateSecurityGroupPolicies", n / 2)
        } else {
            ("DeleteSecurityGroupPolicies", (n - 1) / 2)
        };
        let cidr = format!("198.18.{}.{}/32", (rule >> 8) & 255, rule & 255);
        let req = json!({"SecurityGroupId": group, "SecurityGroupPolicySet": {"Ingress": [
            {"Protocol": "TCP", "Port": "443", "CidrBlock": cidr, "Action": "ACCEPT"}]}});
        let started = Instant::now();
        server.call(victim, action, &req).assert_ok(action);
        started.elapsed()
    };
    let mut baseline: Vec<Duration> = (0..BASELINE_WRITES).map(|_| write()).collect();
    baseline.sort();
    let median = baseline[baseline.len() / 2];

    // A's requests, each recorded with when it was in flight.
    let in_flight: Mutex<Vec<(Instant, Instant)>> = Mutex::new(Vec::new());
    let hostile_busy = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let mut overlapping = Vec::new();
    let deadline = Instant::now() + GIVE_UP;
    std::thread::scope(|s| {
        s.spawn(|| {
            for (action, headers, bytes, code) in hostile.iter().cycle().take(HOSTILE_REQUESTS) {
                let started = Instant::now();
                hostile_busy.store(true, Ordering::SeqCst);
                let answer = server.raw(headers, bytes);
                hostile_busy.store(false, Ordering::SeqCst);
                in_flight
                    .lock()
                    .expect("lock")
                    .push((started, Instant::now()));
                assert_eq!(answer.assert_error(action), *code, "{action}");
            }
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
            if !hostile_busy.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let started = Instant::now();
            let took = write();
            overlapping.push((started, took));
        }
    });
    let in_flight = in_flight.into_inner().expect("lock");
    // Only the writes that started while a hostile request was in flight.
    overlapping.retain(|(started, _)| {
        in_flight
            .iter()
            .any(|(from, to)| from <= started && started <= to)
    });
    let mut took: Vec<Duration> = overlapping.iter().map(|(_, t)| *t).collect();
    took.sort();
    let pct = |v: &[Duration], p: usize| v.get(v.len() * p / 100).copied().unwrap_or_default();
    let hostile_each: Vec<u128> = in_flight
        .iter()
        .map(|(from, to)| (*to - *from).as_millis())
        .collect();
    eprintln!(
        "victim write alone: median {median:?}, p99 {:?}, worst {:?}; {} writes during hostile \
         requests (each in flight {hostile_each:?} ms): median {:?}, p99 {:?}, worst {:?}",
        pct(&baseline, 99),
        baseline.last().copied().unwrap_or_default(),
        took.len(),
        pct(&took, 50),
        pct(&took, 99),
        took.last().copied().unwrap_or_default(),
    );
    assert_eq!(
        in_flight.len(),
        HOSTILE_REQUESTS,
        "the hostile requests ran"
    );
    assert!(
        took.len() >= 100,
        "only {} victim writes overlapped a hostile request",
        took.len()
    );
    // The 99th percentile, not the maximum: on a shared machine a write
    // now and then waits for the CPU or a WAL fsync whatever else runs (the
    // worst of the writes alone is of the same order). A writer held by a
    // hostile request would hold up most overlapping writes for its whole
    // time in flight (about a second each here).
    let p99 = pct(&took, 99);
    assert!(
        p99 <= median + MAX_DELAY,
        "victim writes during hostile requests: p99 {p99:?}, {median:?} alone"
    );
}
