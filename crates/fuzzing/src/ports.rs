//! `Ports::parse_field` (the `Port` grammar: `ALL`, `80`, `80,443`,
//! `8000-8100`) on any string. Panic contract (proto.rs): no input panics.
//! Properties: an accepted spec is non-empty, every range has `lo <= hi`,
//! it prints back to a spec that parses to the same value, and the merged
//! ranges cover exactly the ports the spec contains.

use palisade_model::Ports;

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ports) = Ports::parse_field("Port", text) else {
        return;
    };
    if let Ports::List(list) = &ports {
        assert!(!list.is_empty(), "{text:?} parsed to an empty list");
        for r in list {
            assert!(r.lo() <= r.hi(), "{text:?}: range {r} is inverted");
        }
    }
    let printed = ports.to_string();
    let again = Ports::parse_field("Port", &printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, ports, "{text:?} does not survive printing");
    let merged = ports.ranges();
    for w in merged.windows(2) {
        assert!(
            u32::from(w[0].hi()) + 1 < u32::from(w[1].lo()),
            "{text:?}: ranges() not sorted and merged"
        );
    }
    // Spot-check coverage at range edges (a full 65,536-port sweep per input
    // would slow the fuzzer down for little gain).
    for r in &merged {
        for p in [r.lo(), r.hi()] {
            assert!(
                ports.contains(p),
                "{text:?}: ranges() has {p}, contains() not"
            );
        }
        for p in [r.lo().checked_sub(1), r.hi().checked_add(1)]
            .into_iter()
            .flatten()
        {
            if !merged.iter().any(|m| m.contains(p)) && !ports.is_all() {
                assert!(
                    !ports.contains(p),
                    "{text:?}: contains({p}) outside ranges()"
                );
            }
        }
    }
}
