//! The `service_entry` target: the input and properties are in
//! `palisade_fuzzing::service_entry` (crates/fuzzing), where `cargo test` also
//! replays the stored corpus and every past crash input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| palisade_fuzzing::service_entry::check(data));
