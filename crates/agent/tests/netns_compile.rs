//! `palisade nft compile`'s output is a program nft accepts: the shipped
//! example fleet, every instance, checked with `nft -c -f` (root, in a
//! scratch namespace) and loaded for real.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::{compile, CompileOptions};
use palisade_model::Fleet;
use std::io::Write;
use std::process::{Command, Stdio};

fn nft_in(ns: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_fleet_programs_pass_nft_check_and_load() {
    let Some(_s) = start("example_fleet_programs_pass_nft_check_and_load") else {
        return;
    };
    let mut lab = Lab::new();
    let ns = lab.add_ns("scratch");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/tke-cluster.yaml"
    );
    let fleet = Fleet::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    for id in ["ins-node0001", "ins-node0002"] {
        let id = palisade_model::InstanceId::parse_field("t", id).unwrap();
        let rs = palisade_policy::resolve_instance(&fleet, &id).unwrap();
        let opts = CompileOptions {
            uplinks: vec!["eth0".into(), "bond0.100".into()],
            ..Default::default()
        };
        let script = compile(&rs, &opts).unwrap().script();
        let (ok, err) = nft_in(&ns, &["-c", "-f", "-"], &script);
        assert!(ok, "nft -c refused the program of {id}: {err}\n{script}");
        let (ok, err) = nft_in(&ns, &["-f", "-"], &script);
        assert!(ok, "nft -f refused the program of {id}: {err}");
        let listing = lab.exec("scratch", &["nft", "list", "table", "inet", "palisade"]);
        assert!(
            listing.contains("comment \"sg-ops00001 ingress 1\""),
            "{listing}"
        );
        assert!(
            listing.contains("hook prerouting priority mangle"),
            "-150 is nft's `mangle`"
        );
    }
}
