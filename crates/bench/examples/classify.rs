//! `cargo run --release -p palisade-bench --example classify -- FILE [PACKETS] [VERIFY]`:
//! the classifier benchmark on a ClassBench file without the CLI (JSON on
//! stdout, progress on stderr). `palisade bench classify` is the same run.

use palisade_bench::{classbench, classify, ClassifyOptions, Verify};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .ok_or("usage: classify FILE [PACKETS] [VERIFY]")?;
    let packets = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let verify = match args.next().as_deref() {
        None | Some("auto") => Verify::Auto,
        Some("all") => Verify::All,
        Some(n) => Verify::Sample(n.parse()?),
    };
    let text = std::fs::read_to_string(&file)?;
    let rules = classbench::project(&classbench::parse(&text)?);
    let opts = ClassifyOptions {
        packets,
        verify,
        ..ClassifyOptions::default()
    };
    let run = classify::run(&rules, &opts, &mut |l| eprintln!("{l}"));
    println!("{}", serde_json::to_string_pretty(&run.report)?);
    Ok(())
}
