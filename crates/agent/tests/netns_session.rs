//! The `nft -i` session that applies deltas (`palisade_agent::session`),
//! against the kernel in a namespace of its own: a transaction applies
//! whole, one that nft refuses changes nothing and says why, and the
//! session goes on after either; a session in a namespace that is gone
//! reports an error instead of hanging.

mod common;

use common::{sh, start, Lab};
use palisade_agent::session::NftSession;
use palisade_agent::AgentError;

fn listed(lab: &Lab) -> String {
    lab.exec("n", &["nft", "list", "table", "inet", "palisade"])
}

#[test]
fn a_session_applies_whole_transactions_and_refuses_bad_ones_whole() {
    let Some(_serial) = start("a_session_applies_whole_transactions_and_refuses_bad_ones_whole")
    else {
        return;
    };
    let mut lab = Lab::new();
    let ns = lab.add_ns("n");
    lab.exec(
        "n",
        &[
            "nft",
            "add table inet palisade; add set inet palisade s { type ipv4_addr; }; add chain inet palisade c",
        ],
    );
    let mut session = NftSession::spawn(Some(&ns)).unwrap();

    // Several commands, one transaction.
    session
        .run("add element inet palisade s { 198.18.0.1, 198.18.0.2 }\ninsert rule inet palisade c counter accept comment \"g 1\"\n")
        .unwrap();
    let t = listed(&lab);
    assert!(t.contains("198.18.0.1") && t.contains("198.18.0.2"), "{t}");
    assert!(t.contains("comment \"g 1\""), "{t}");

    // A delete of an element that is not there fails the whole line: the
    // add before it is not applied either.
    let err = session
        .run("add element inet palisade s { 198.18.0.3 }\ndelete element inet palisade s { 198.18.0.9 }\n")
        .unwrap_err();
    match &err {
        AgentError::Nft { stderr, .. } => {
            assert!(stderr.contains("Error"), "{stderr}");
            assert!(stderr.contains("198.18.0.9"), "{stderr}");
        }
        other => panic!("expected nft's refusal, got {other}"),
    }
    assert!(!listed(&lab).contains("198.18.0.3"));

    // The same session goes on: a delete (the case it exists for) and an
    // add in one transaction.
    session
        .run("delete element inet palisade s { 198.18.0.1 }\nadd element inet palisade s { 198.18.0.4 }\n")
        .unwrap();
    let t = listed(&lab);
    assert!(!t.contains("198.18.0.1"), "{t}");
    assert!(t.contains("198.18.0.4"), "{t}");

    // Commands the session cannot carry on one line are refused by `fits`
    // (the dataplane sends them through `nft -f`).
    assert!(!NftSession::fits(
        "add rule inet palisade c accept; flush ruleset"
    ));

    // A session whose namespace is gone answers with an error.
    drop(session);
    drop(lab);
    let mut orphan = NftSession::spawn(Some(&ns));
    if let Ok(s) = orphan.as_mut() {
        assert!(s.run("add element inet palisade s { 198.18.0.5 }").is_err());
    }
    // Nothing of the namespace remains.
    assert!(!sh(&["ip", "netns", "list"]).contains(&ns));
}
