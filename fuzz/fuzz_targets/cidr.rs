//! The `cidr` target: the input and properties are in
//! `palisade_fuzzing::cidr` (crates/fuzzing), where `cargo test` also
//! replays the stored corpus and every past crash input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| palisade_fuzzing::cidr::check(data));
