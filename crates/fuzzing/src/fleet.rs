//! `Fleet::parse` (the security-groups-as-code file, YAML or JSON) on any
//! text. No input panics; every problem reported carries a Tencent code
//! and a message; an accepted fleet's ids are unique.

use palisade_model::Fleet;

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Fleet::parse(text) {
        Ok(fleet) => {
            let mut ids: Vec<String> = fleet
                .security_groups
                .iter()
                .map(|g| g.id.as_str().to_string())
                .collect();
            ids.sort();
            let n = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), n, "duplicate group ids accepted");
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "failure without a problem");
            for p in &problems {
                assert!(!p.error.message().is_empty(), "problem without a message");
            }
        }
    }
}
