//! Conntrack-mark stamps in the kernel (issue 16, item 3; DESIGN.md
//! section 2: a change cuts the connections it no longer allows, and only
//! those): an idle connection survives many unrelated changes, each of
//! which makes its next packet go through the rules again, and is cut by
//! the change that revokes it, also when the generation ring has come
//! round to the value the connection was stamped with; and the `ct mark`
//! bits that are not Palisade's survive its stamping and its clears.
//!
//! The ring is made small (3-bit fields, generations 1-7) so that tens of
//! changes wrap it several times and every wrap clears conntrack.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::compile::{compile, CompileOptions};
use palisade_agent::dataplane::Dataplane;
use palisade_agent::{MarkBits, NftDataplane, Stamping};
use palisade_policy::Ruleset;
use serde_json::json;

/// Bits 0-2 for ingress, 4-6 for egress.
fn narrow() -> MarkBits {
    MarkBits::new(0x0000_0007, 0x0000_0070).unwrap()
}

/// Bits another program uses, outside both layouts.
const FOREIGN: u32 = 0xa500_0000;

/// Ingress allows TCP 8080 from the peers (rule 0) when `allow`, and TCP
/// to an unused port chosen by `filler` (an unrelated rule that changes).
fn rules(allow: bool, filler: u16) -> Ruleset {
    let mut ingress = Vec::new();
    if allow {
        ingress.push(json!({"Protocol": "TCP", "Port": "8080", "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"}));
    }
    ingress.push(json!({"Protocol": "TCP", "Port": (20000 + filler).to_string(), "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"}));
    ruleset(&[("sg-stamp001", json!({"Ingress": ingress, "Egress": []}))])
}

fn options(marks: MarkBits) -> CompileOptions {
    CompileOptions {
        uplinks: vec!["eth0".into()],
        marks,
        ..Default::default()
    }
}

fn ingress_generation<D: Dataplane>(dp: &Stamping<D>) -> u32 {
    dp.stamper().unwrap().known()[0].unwrap().generation
}

/// Packets of the original direction that went through rule 0.
fn rule0(lab: &Lab) -> u64 {
    counters(lab, "node")
        .get("sg-stamp001 ingress 0")
        .copied()
        .unwrap_or(0)
}

/// Another program's table: it sets [`FOREIGN`] on a new connection to
/// 8080 before Palisade's chain sees it, and counts the connection's later
/// packets that still carry those bits after Palisade's chain.
fn foreign_table(lab: &Lab) {
    let script = format!(
        "table inet other {{
\tchain before {{ type filter hook prerouting priority -180; policy accept;
\t\tiifname \"eth0\" tcp dport 8080 ct state new ct mark set ct mark or {FOREIGN:#010x}
\t}}
\tchain after {{ type filter hook prerouting priority -100; policy accept;
\t\tiifname \"eth0\" tcp dport 8080 ct direction original ct state established ct mark and 0xff000000 == {FOREIGN:#010x} counter
\t}}
}}
"
    );
    let path = lab.helper.path().with_extension("other.nft");
    std::fs::write(&path, script).unwrap();
    lab.exec("node", &["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
}

/// Packets the other program's `after` chain counted.
fn foreign_seen(lab: &Lab) -> u64 {
    let listing = lab.exec("node", &["nft", "list", "chain", "inet", "other", "after"]);
    listing
        .split("packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {listing}"))
}

#[test]
fn an_idle_connection_survives_many_changes_and_is_cut_by_its_revocation() {
    let Some(_s) = start("an_idle_connection_survives_many_changes_and_is_cut_by_its_revocation")
    else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let opts = options(narrow());
    let mut dp = Stamping::new(lab.dataplane("node"));
    dp.apply(&compile(&rules(true, 0), &opts).unwrap()).unwrap();
    assert_eq!(peer.cmd(&format!("open k - {NODE} 8080 1.0")), "ok");
    let mut generations = vec![ingress_generation(&dp)];
    let mut sends = 0;
    for change in 1..=40u16 {
        // Every tenth change is made by a new agent (a restart), which
        // reads the stamps in force back from the table.
        if change % 10 == 0 {
            dp = Stamping::new(lab.dataplane("node"));
        }
        dp.apply(&compile(&rules(true, change), &opts).unwrap())
            .unwrap();
        generations.push(ingress_generation(&dp));
        // Idle across up to three changes (and so across ring wraps).
        if change % 3 != 0 {
            continue;
        }
        let before = rule0(&lab);
        assert_eq!(
            peer.cmd("send k 1.0"),
            "ok",
            "change {change}: an unrelated change keeps the connection"
        );
        let rechecked = rule0(&lab);
        assert!(
            rechecked > before,
            "change {change}: its next packet went through the rules again"
        );
        assert_eq!(peer.cmd("send k 1.0"), "ok");
        assert_eq!(
            rule0(&lab),
            rechecked,
            "change {change}: re-stamped, the packets after it take the fast path"
        );
        // The peer acknowledges the last echo late (delayed ACK, up to
        // 200 ms). That ACK is a packet of the connection too: arriving
        // after the next changes, it would go through the rules and
        // re-stamp the connection with the newest generation before the
        // next check reads its counter, and that check's packet would then
        // take the fast path. Let it arrive now, within this generation.
        std::thread::sleep(std::time::Duration::from_millis(400));
        sends += 1;
    }
    assert_eq!(sends, 13);
    // Each change took the next value of the 3-bit ring: it wrapped.
    for w in generations.windows(2) {
        assert_eq!(w[1], w[0] % 7 + 1, "{generations:?}");
    }
    dp.apply(&compile(&rules(false, 40), &opts).unwrap())
        .unwrap();
    assert_eq!(
        peer.cmd("send k 1.0"),
        "fail",
        "the change that revokes it cuts it"
    );
}

/// The collision path: a connection is stamped, goes idle, its rule is
/// revoked, and the ring comes round to the value it was stamped with.
/// With a stamp derived from the rules (or a counter that wraps without
/// a clear) its next packet would take the fast path; the clear before
/// the value came back makes it go through the rules, which drop it.
#[test]
fn a_generation_that_comes_round_again_does_not_reopen_a_revoked_connection() {
    let Some(_s) =
        start("a_generation_that_comes_round_again_does_not_reopen_a_revoked_connection")
    else {
        return;
    };
    assert_eq!(come_round(true), "fail", "the revoked connection stays cut");
    // The control: the same steps without the clears reopen it, so the
    // test above would see a stamp that collides.
    assert_eq!(come_round(false), "ok", "without clears it fails open");
}

/// Stamps a connection, revokes it, changes rules until the generation
/// is the connection's stamp again, and sends on it: `ok` or `fail`.
fn come_round(clears: bool) -> String {
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let opts = options(narrow());
    let mut dp = Stamping::new(NoClear {
        inner: lab.dataplane("node"),
        clears,
    });
    dp.apply(&compile(&rules(true, 0), &opts).unwrap()).unwrap();
    assert_eq!(peer.cmd(&format!("open k - {NODE} 8080 1.0")), "ok");
    let stamped = ingress_generation(&dp);
    dp.apply(&compile(&rules(false, 0), &opts).unwrap())
        .unwrap();
    let mut changes = 0;
    for filler in 1..=20u16 {
        dp.apply(&compile(&rules(false, filler), &opts).unwrap())
            .unwrap();
        changes += 1;
        if ingress_generation(&dp) == stamped {
            break;
        }
    }
    assert_eq!(
        ingress_generation(&dp),
        stamped,
        "the ring came round to the connection's stamp in {changes} changes"
    );
    peer.cmd("send k 1.0")
}

/// A dataplane whose clears can be turned off (the control above).
struct NoClear {
    inner: NftDataplane,
    clears: bool,
}

impl Dataplane for NoClear {
    fn apply(&mut self, c: &palisade_agent::Compiled) -> Result<(), palisade_agent::AgentError> {
        self.inner.apply(c)
    }
    fn apply_deltas(
        &mut self,
        c: &palisade_agent::Compiled,
        d: &palisade_agent::compile::Deltas,
    ) -> Result<(), palisade_agent::AgentError> {
        self.inner.apply_deltas(c, d)
    }
    fn read(&mut self) -> Result<Option<palisade_agent::LiveTable>, palisade_agent::AgentError> {
        self.inner.read()
    }
    fn clear_marks(&mut self, mask: u32) -> Result<usize, palisade_agent::AgentError> {
        match self.clears {
            true => self.inner.clear_marks(mask),
            false => Ok(0),
        }
    }
}

#[test]
fn bits_of_the_mark_that_are_not_palisades_survive_stamps_and_clears() {
    let Some(_s) = start("bits_of_the_mark_that_are_not_palisades_survive_stamps_and_clears")
    else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    foreign_table(&lab);
    for (marks, changes) in [(MarkBits::default(), 3u16), (narrow(), 9)] {
        let opts = options(marks);
        let mut dp = Stamping::new(lab.dataplane("node"));
        dp.apply(&compile(&rules(true, 0), &opts).unwrap()).unwrap();
        assert_eq!(peer.cmd(&format!("open k - {NODE} 8080 1.0")), "ok");
        let seen = foreign_seen(&lab);
        for change in 1..=changes {
            dp.apply(&compile(&rules(true, change), &opts).unwrap())
                .unwrap();
            // Re-checked and re-stamped: Palisade's field is rewritten.
            assert_eq!(peer.cmd("send k 1.0"), "ok");
        }
        // A clear of Palisade's bits (as on a wrap or a start) and, with
        // the narrow fields, the wraps themselves.
        let cleared = dp.clear_marks(marks.owned()).unwrap();
        assert!(cleared >= 1, "the connection carried a stamp");
        assert_eq!(peer.cmd("send k 1.0"), "ok");
        assert!(
            foreign_seen(&lab) > seen,
            "{marks:?}: the other program's bits are still on the connection"
        );
        // Every packet of the connection after the first carried them.
        let after = foreign_seen(&lab);
        assert_eq!(peer.cmd("send k 1.0"), "ok");
        assert!(foreign_seen(&lab) > after);
        if let Some(marks_now) = conntrack_marks(&lab) {
            assert!(
                !marks_now.is_empty() && marks_now.iter().all(|m| m & 0xff00_0000 == FOREIGN),
                "{marks_now:x?}"
            );
        }
        lab.exec("node", &["nft", "delete", "table", "inet", "palisade"]);
    }
}

/// The marks of the node's TCP 8080 connections, when the `conntrack`
/// tool is installed (an extra look; the counters above are the test).
fn conntrack_marks(lab: &Lab) -> Option<Vec<u32>> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("node"),
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--dport",
            "8080",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.split_whitespace()
            .filter_map(|w| w.strip_prefix("mark="))
            .filter_map(|n| n.parse().ok())
            .collect(),
    )
}
