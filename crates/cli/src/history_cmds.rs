//! `palisade history`, `rollback` and `confirm`: a group's kept versions,
//! going back to one (as a new version), and keeping a commit-confirmed
//! change (docs/cli.md). `--confirm-within` of `apply` and `tke apply`
//! starts the change through [`start_confirmed`].

use crate::iac_cmds::ServerArgs;
use crate::output::{print_json, table, whole_words, Format};
use anyhow::Context;
use clap::Args;
use palisade_client::Client;
use serde_json::{json, Value};
use std::process::ExitCode;

/// `palisade history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// The group (`sg-...`).
    security_group_id: String,
    #[command(flatten)]
    server: ServerArgs,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade rollback`.
#[derive(Args)]
pub struct RollbackArgs {
    /// The group (`sg-...`).
    security_group_id: String,
    /// The kept version whose rules come back (as a new version).
    #[arg(long, value_name = "N")]
    to_version: u64,
    #[command(flatten)]
    server: ServerArgs,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `palisade confirm`.
#[derive(Args)]
pub struct ConfirmArgs {
    /// The change to keep (`chg-...`, printed by `apply --confirm-within`).
    change_id: String,
    #[command(flatten)]
    server: ServerArgs,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `history`.
pub fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let answer = client.palisade(
        "DescribeSecurityGroupHistory",
        &json!({ "SecurityGroupId": args.security_group_id, "Limit": 100 }),
    )?;
    if args.output == Format::Json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["Version", "Recorded", "Ingress", "Egress", ""]);
    for v in answer["HistorySet"].as_array().into_iter().flatten() {
        let set = &v["SecurityGroupPolicySet"];
        let count = |dir: &str| set[dir].as_array().map_or(0, Vec::len).to_string();
        t.add_row(vec![
            str_of(&v["Version"]),
            str_of(&v["RecordedTime"]),
            count("Ingress"),
            count("Egress"),
            if v["IsCurrent"] == true {
                "current".into()
            } else {
                String::new()
            },
        ]);
    }
    println!("{}", whole_words(t));
    println!(
        "{} version(s) kept of {}",
        answer["TotalCount"], args.security_group_id
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `rollback`.
pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let answer = client.palisade(
        "RollbackSecurityGroup",
        &json!({
            "SecurityGroupId": args.security_group_id,
            "ToVersion": args.to_version.to_string(),
        }),
    )?;
    match args.output {
        Format::Json => print_json(&answer)?,
        Format::Table => println!(
            "{}: the rules of version {} are now version {}",
            args.security_group_id,
            args.to_version,
            str_of(&answer["Version"])
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `confirm`.
pub fn confirm(args: ConfirmArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let answer = client.palisade("ConfirmChange", &json!({ "ChangeId": args.change_id }))?;
    match args.output {
        Format::Json => print_json(&answer)?,
        Format::Table => println!("{}: confirmed; it stays", args.change_id),
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts a commit-confirmed change of `seconds` before an apply and says
/// how to keep it (on stderr: stdout is the apply's own output).
pub fn start_confirmed(client: &Client, seconds: u64, what: &str) -> anyhow::Result<Value> {
    let answer = client
        .palisade(
            "StartConfirmedChange",
            &json!({ "ConfirmWithin": seconds, "Description": what }),
        )
        .context("starting the commit-confirmed change")?;
    eprintln!(
        "change {} reverts at {} UTC unless confirmed: palisade confirm {} --server ...",
        str_of(&answer["ChangeId"]),
        str_of(&answer["Deadline"]),
        str_of(&answer["ChangeId"])
    );
    Ok(answer)
}

/// Parses `--confirm-within`: seconds, or a number with `s`, `m` or `h`.
pub fn parse_window(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 120s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    if secs == 0 || secs > 86_400 {
        return Err(format!("{s:?}: must be 1 s to 24 h"));
    }
    Ok(secs)
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn windows_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_window("120s"), Ok(120));
        assert_eq!(parse_window("120"), Ok(120));
        assert_eq!(parse_window("2m"), Ok(120));
        assert_eq!(parse_window("1h"), Ok(3600));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("25h").is_err());
        assert!(parse_window("2d").is_err());
        assert!(parse_window("s").is_err());
    }
}
