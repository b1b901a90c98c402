//! Replays every stored fuzz input through its target's properties: the
//! minimised corpus (`fuzz/corpus/<target>/`), the hand-written seeds
//! (`fuzz/seeds/<target>/`) and every input that ever failed
//! (`fuzz/regressions/<target>/`, where `scripts/fuzz.sh` puts new finds).
//! Deterministic: nothing is generated, so this runs in CI while the search
//! for new inputs runs separately (`scripts/fuzz.sh`).

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("readable fuzz directory").path();
            if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_stored_input_holds_its_properties() {
    let mut failures = Vec::new();
    for (target, check) in palisade_fuzzing::TARGETS {
        let files = inputs(target);
        // An empty corpus would make this test pass without checking
        // anything: every target keeps at least one stored input.
        assert!(
            !files.is_empty(),
            "no stored inputs for fuzz target {target}"
        );
        for path in &files {
            let data = std::fs::read(path).expect("readable fuzz input");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
        eprintln!(
            "fuzz target {target}: {} stored inputs replayed",
            files.len()
        );
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}

/// The first input the `cidr` target found that widened a rule (issue 23):
/// `9.9.9.9/3 ` once parsed to 0.0.0.0/3 and printed back as 0.0.0.0/0.
#[test]
fn the_widening_crash_is_kept_as_a_regression() {
    let path = fuzz_dir().join("regressions/cidr/crash-63c918133cefa3c21707361906a0c0c6a0134440");
    let data = std::fs::read(&path).expect("the crash input is stored");
    assert_eq!(data, b"9.9.9.9/3 ");
    palisade_fuzzing::cidr::check(&data);
    palisade_fuzzing::cidr::check(b"9.9.9.9/3");
    palisade_fuzzing::address_entry::check(b"9.9.9.9/3");
}
