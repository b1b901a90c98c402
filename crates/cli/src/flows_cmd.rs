//! `palisade flows` (issue 18): a server's flow records, filtered, as a
//! table or as the JSON `DescribeFlowRecords` answers (one object per
//! record, so `palisade flows --output json > flows.json` is a records
//! file), and `palisade enforcement` to switch an instance between
//! `ENFORCE` and `AUDIT`.

use crate::iac_cmds::ServerArgs;
use crate::output::{print_json, table, Format};
use clap::Args;
use palisade_model::flow::{parse_duration, Enforcement, FlowRecord, Verdict};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `palisade flows`.
#[derive(Args)]
pub struct FlowsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only this instance (repeat for several).
    #[arg(long)]
    instance: Vec<String>,
    /// Only records decided by a rule of this group.
    #[arg(long)]
    group: Option<String>,
    /// Only this rule's records: its policy index (with --group and
    /// --direction).
    #[arg(long)]
    policy_index: Option<u32>,
    /// Only ingress or egress.
    #[arg(long)]
    direction: Option<String>,
    /// Only this verdict: accept, drop or would-drop.
    #[arg(long)]
    verdict: Option<String>,
    /// Only peers inside this CIDR.
    #[arg(long)]
    peer: Option<String>,
    /// Only this destination port.
    #[arg(long)]
    port: Option<u16>,
    /// Only this protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    protocol: Option<String>,
    /// Only records of the last DURATION (30s, 15m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    since: String,
    /// At most this many records (newest first).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Keep printing new records as they arrive (every 2 s) until stopped.
    #[arg(long)]
    follow: bool,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `palisade flows`.
pub fn run(args: FlowsArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let since = parse_duration("--since", &args.since)?;
    let mut params = json!({ "StartTime": now().saturating_sub(since.as_secs()) });
    let p = params
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("params"))?;
    if !args.instance.is_empty() {
        p.insert("InstanceIds".into(), json!(args.instance));
    }
    if let Some(g) = &args.group {
        p.insert("SecurityGroupId".into(), json!(g));
    }
    if let Some(i) = args.policy_index {
        p.insert("PolicyIndex".into(), json!(i));
    }
    if let Some(d) = &args.direction {
        p.insert("Direction".into(), json!(d));
    }
    if let Some(v) = &args.verdict {
        p.insert(
            "Action".into(),
            json!(Verdict::parse_field("--verdict", v)?.as_str()),
        );
    }
    if let Some(c) = &args.peer {
        p.insert("PeerCidr".into(), json!(c));
    }
    if let Some(port) = args.port {
        p.insert("Port".into(), json!(port));
    }
    if let Some(proto) = &args.protocol {
        p.insert("Protocol".into(), json!(protocol_number(proto)?));
    }
    let limit = args.limit.clamp(1, 1_000);
    p.insert("Limit".into(), json!(limit));
    let mut newest = 0i64;
    let mut first = true;
    loop {
        let answer = client.palisade("DescribeFlowRecords", &params)?;
        let set = answer["FlowRecordSet"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let fresh: Vec<Value> = set
            .into_iter()
            .filter(|r| r["RecordId"].as_i64().is_some_and(|id| id > newest))
            .collect();
        newest = fresh
            .iter()
            .filter_map(|r| r["RecordId"].as_i64())
            .fold(newest, i64::max);
        // Oldest first on a terminal, as a log reads.
        let mut records: Vec<(Value, FlowRecord)> = Vec::with_capacity(fresh.len());
        for mut v in fresh {
            let id = v.as_object_mut().and_then(|m| m.remove("RecordId"));
            let r: FlowRecord = serde_json::from_value(v)?;
            records.push((id.unwrap_or(Value::Null), r));
        }
        records.reverse();
        match args.output {
            Format::Json if !args.follow => {
                let list: Vec<&FlowRecord> = records.iter().map(|(_, r)| r).collect();
                print_json(&list)?;
            }
            Format::Json => {
                for (_, r) in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
            }
            Format::Table => print_table(&records, first, &answer),
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        first = false;
        std::thread::sleep(Duration::from_secs(2));
        if let Some(p) = params.as_object_mut() {
            p.insert(
                "StartTime".into(),
                json!(now().saturating_sub(since.as_secs())),
            );
        }
    }
}

fn print_table(records: &[(Value, FlowRecord)], first: bool, answer: &Value) {
    if records.is_empty() {
        if first {
            println!("no flow records");
        }
        return;
    }
    let mut t = table(&[
        "start",
        "end",
        "instance",
        "dir",
        "source",
        "destination",
        "proto",
        "verdict",
        "rule",
        "decisions",
        "packets",
        "bytes",
    ]);
    for (_, r) in records {
        let addr = |ip: std::net::IpAddr, port: Option<u16>| match (ip, port) {
            (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        let rule = r.rule.as_ref().map_or("default drop".to_string(), |x| {
            format!(
                "{} {} {} (rev {})",
                x.security_group_id,
                r.direction.as_str(),
                x.policy_index,
                x.revision
            )
        });
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        t.add_row(vec![
            time(r.start),
            time(r.end),
            r.instance_id.to_string(),
            r.direction.as_str().to_string(),
            addr(r.src_addr, r.src_port),
            addr(r.dst_addr, r.dst_port),
            r.protocol.to_string(),
            r.action.as_str().to_string(),
            rule,
            r.decisions.to_string(),
            opt(r.packets),
            opt(r.bytes),
        ]);
    }
    println!("{t}");
    if first {
        if let Some(total) = answer["TotalCount"].as_u64() {
            if total > records.len() as u64 {
                println!(
                    "{} of {total} records (newest; raise --limit for more)",
                    records.len()
                );
            }
        }
    }
}

/// `HH:MM:SS` of a Unix time, UTC.
fn time(t: u64) -> String {
    let s = t % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn protocol_number(text: &str) -> anyhow::Result<u8> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        n => n.parse().map_err(|_| {
            anyhow::anyhow!(
                "--protocol {text:?}: expected tcp, udp, icmp, icmpv6 or a number 0-255"
            )
        })?,
    })
}

/// `palisade enforcement`.
#[derive(Args)]
pub struct EnforcementArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The instance (`ins-...`).
    instance: String,
    /// enforce or audit.
    mode: String,
}

/// Runs `palisade enforcement INSTANCE MODE`.
pub fn enforcement(args: EnforcementArgs) -> anyhow::Result<ExitCode> {
    let mode = Enforcement::parse_field("MODE", &args.mode)?;
    let client = args.server.client()?;
    client.palisade(
        "ModifyInstanceEnforcement",
        &json!({ "InstanceId": args.instance, "Enforcement": mode.as_str() }),
    )?;
    println!("{}: {}", args.instance, mode.as_str());
    Ok(ExitCode::SUCCESS)
}

/// `palisade hits`.
#[derive(Args)]
pub struct HitsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The group (`sg-...`).
    group: String,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `palisade hits SG`: each rule of the group in order, with its hits
/// summed over every instance and its last use.
pub fn hits(args: HitsArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let hits = client.palisade(
        "DescribeRuleHits",
        &json!({ "SecurityGroupId": args.group }),
    )?;
    if args.output == Format::Json {
        print_json(&hits)?;
        return Ok(ExitCode::SUCCESS);
    }
    let policies = client.vpc(
        "DescribeSecurityGroupPolicies",
        &json!({ "SecurityGroupId": args.group }),
    )?;
    let set = &policies["SecurityGroupPolicySet"];
    let mut t = table(&[
        "direction",
        "index",
        "rule",
        "hits",
        "last used",
        "counted since",
    ]);
    for h in hits["RuleHitSet"].as_array().into_iter().flatten() {
        let dir = h["Direction"].as_str().unwrap_or_default();
        let i = h["PolicyIndex"].as_u64().unwrap_or(0) as usize;
        let list = if dir == "ingress" {
            &set["Ingress"]
        } else {
            &set["Egress"]
        };
        let rule = &list[i];
        let text = format!(
            "{} {} {} {}",
            rule["Action"].as_str().unwrap_or_default(),
            rule["Protocol"].as_str().unwrap_or_default(),
            rule["Port"].as_str().unwrap_or_default(),
            ["CidrBlock", "Ipv6CidrBlock", "SecurityGroupId"]
                .iter()
                .find_map(|k| rule[k].as_str().filter(|v| !v.is_empty()))
                .unwrap_or("(template)")
        );
        let when = |k: &str| {
            h[k].as_u64()
                .map_or("-".to_string(), |t| format!("{} ago", ago(t)))
        };
        t.add_row(vec![
            dir.to_string(),
            i.to_string(),
            text,
            h["Hits"].as_u64().unwrap_or(0).to_string(),
            when("LastUsed"),
            when("Since"),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// `3d 4h`, `12m`, `40s` since Unix time `t`.
fn ago(t: u64) -> String {
    let s = now().saturating_sub(t);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}
