//! `Policy::from_wire` and `PolicySet::from_wire` on arbitrary JSON: the
//! validation every API rule and fleet rule goes through. No input panics;
//! a rule that validates converts back to wire JSON that validates to the
//! same rule (what the store relies on when it reads rules back).

use palisade_model::{wire, Policy, PolicySet};

/// Checks one input.
pub fn check(data: &[u8]) {
    if let Ok(w) = serde_json::from_slice::<wire::SecurityGroupPolicy>(data) {
        if let Ok(p) = Policy::from_wire(&w) {
            roundtrip(&p);
        }
    }
    if let Ok(w) = serde_json::from_slice::<wire::SecurityGroupPolicySet>(data) {
        if let Ok(set) = PolicySet::from_wire(&w) {
            let back = set.to_wire();
            let again = PolicySet::from_wire(&back)
                .unwrap_or_else(|e| panic!("{set:?} printed back fails: {e}"));
            assert_eq!(again.ingress, set.ingress);
            assert_eq!(again.egress, set.egress);
            let text = serde_json::to_string(&back).expect("wire types serialise");
            let reparsed: wire::SecurityGroupPolicySet =
                serde_json::from_str(&text).expect("own output parses");
            assert_eq!(reparsed, back, "wire JSON does not survive text");
        }
    }
}

fn roundtrip(p: &Policy) {
    for w in [p.to_wire(0), p.to_wire_compact()] {
        let again = Policy::from_wire(&w).unwrap_or_else(|e| panic!("{p:?} as {w:?} fails: {e}"));
        assert!(again.same_rule(p), "{p:?} became {again:?}");
        let text = serde_json::to_string(&w).expect("wire types serialise");
        let reparsed: wire::SecurityGroupPolicy =
            serde_json::from_str(&text).expect("own output parses");
        assert_eq!(reparsed, w, "wire JSON does not survive text");
    }
}
