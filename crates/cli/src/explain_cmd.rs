//! `palisade explain`: what an instance's groups do with one packet, and
//! which rule decided (DESIGN.md section 2: groups in binding order, first
//! match, default drop). Exit 0 when the packet is accepted, 1 when dropped,
//! 2 on unusable input.

use crate::output::{print_json, Format};
use anyhow::Context;
use clap::Args;
use palisade_model::{Fleet, InstanceId};
use palisade_policy::eval::first_match_index;
use palisade_policy::failsafe::parse_list;
use palisade_policy::{
    evaluate_with_failsafe, has_ports, resolve_instance, Failsafe, Packet, RuleOrigin,
};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `palisade explain`.
#[derive(Args)]
pub struct ExplainArgs {
    /// The fleet file.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    fleet: Option<PathBuf>,
    /// Explain against what this server holds now (its groups, templates
    /// and instances, read as `palisade export` reads them), e.g.
    /// `http://127.0.0.1:9180`.
    #[arg(long)]
    server: Option<String>,
    /// Credentials JSON (`{"SecretId", "SecretKey"}`) for --server; default:
    /// the TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY variables.
    #[arg(long, requires = "server")]
    credentials: Option<PathBuf>,
    /// PEM file of the CA(s) to trust for an `https://` --server.
    #[arg(long, env = "PALISADE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// The instance whose groups decide (`ins-...`).
    #[arg(long)]
    instance: String,
    /// `ingress` (the peer is the source) or `egress` (the peer is the destination).
    #[arg(long)]
    direction: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `gre`, or an IP protocol number.
    #[arg(long)]
    protocol: String,
    /// The remote address (IPv4 or IPv6).
    #[arg(long)]
    peer: String,
    /// The destination port (ingress) or the peer's port (egress); TCP and UDP only.
    #[arg(long)]
    port: Option<String>,
    /// The node's failsafe entries (as `palisade agent --failsafe`,
    /// repeatable): checked before any rule. With --server and none
    /// given, the entries the instance's agent last reported.
    #[arg(long, value_delimiter = ' ')]
    failsafe: Vec<String>,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// The JSON answer.
#[derive(Serialize)]
struct Explanation {
    action: String,
    matched: Option<RuleOrigin>,
    /// The node's failsafe entry that accepted the packet, when one did
    /// (before any rule was looked at).
    #[serde(skip_serializing_if = "Option::is_none")]
    failsafe: Option<Failsafe>,
    instance_id: String,
    packet: Packet,
    /// The deciding rule as text, when one matched.
    rule: Option<String>,
    /// The deciding rule's group name, when one matched.
    security_group_name: Option<String>,
    /// The instance's groups in binding order (the order they are consulted).
    security_groups: Vec<String>,
    /// How many rules of this direction were looked at, the deciding one included.
    rules_checked: usize,
    /// Rules in this direction in all.
    rules_total: usize,
    /// A sentence saying why.
    reason: String,
}

/// Runs `explain`.
pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let mut failsafe = parse_list("--failsafe", &args.failsafe)?;
    let (text, source) = match (&args.server, &args.fleet) {
        (Some(url), _) => {
            let source = crate::analyze_cmds::FleetSource {
                fleet: None,
                server: Some(url.clone()),
                credentials: args.credentials.clone(),
                ca_cert: args.ca_cert.clone(),
            };
            let client = source.client(url)?;
            let remote = palisade_iac::export(&client)
                .with_context(|| format!("cannot read the fleet from {url}"))?;
            if args.failsafe.is_empty() {
                failsafe = reported_failsafe(&client, &args.instance)?;
            }
            (serde_yaml::to_string(&remote)?, url.clone())
        }
        (None, Some(path)) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, None) => anyhow::bail!("give --fleet FILE or --server URL"),
    };
    let fleet = Fleet::parse(&text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::anyhow!(
            "{source} is not a valid fleet (run `palisade validate`):\n{}",
            lines.join("\n")
        )
    })?;
    let id: InstanceId = InstanceId::parse_field("--instance", &args.instance)?;
    if fleet.instance(&id).is_none() {
        anyhow::bail!(
            "ResourceNotFound: --instance {:?}: no such instance in {}",
            args.instance,
            source
        );
    }
    let packet = Packet::parse(
        &args.direction,
        &args.protocol,
        &args.peer,
        args.port.as_deref(),
    )?;
    let mut notes = Vec::new();
    match (has_ports(packet.protocol), packet.port) {
        (true, None) => anyhow::bail!("--port: required for tcp and udp packets"),
        (false, Some(_)) => notes.push(format!(
            "--port ignored: {} packets have no ports that rules look at",
            palisade_policy::eval::protocol_name(packet.protocol)
        )),
        _ => {}
    }
    let ruleset = resolve_instance(&fleet, &id)?;
    let verdict = evaluate_with_failsafe(&ruleset, &failsafe, &packet);
    let rules = ruleset.rules(packet.direction);
    // A failsafe entry decides before any rule is looked at.
    let index = match verdict.failsafe {
        Some(_) => None,
        None => first_match_index(rules, &packet),
    };
    let decided = index.and_then(|i| rules.get(i));
    let group_name = verdict
        .matched
        .as_ref()
        .and_then(|o| fleet.group(&o.security_group_id))
        .map(|g| g.name.clone());
    let reason = match (&verdict.matched, decided) {
        _ if verdict.failsafe.is_some() => format!(
            "{verdict}: the node's failsafe entry, checked before every rule (palisade agent --failsafe)"
        ),
        (Some(o), Some(rule)) => format!(
            "{} by {} (group {:?}), the first matching rule: {}",
            verdict.action,
            o,
            group_name.clone().unwrap_or_default(),
            rule.policy()
        ),
        _ if ruleset.security_groups.is_empty() => {
            "no rule matched: default drop (the instance has no security group)".to_string()
        }
        _ => format!(
            "no rule matched: default drop ({} {} rule(s) checked in {})",
            rules.len(),
            packet.direction,
            ruleset
                .security_groups
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let answer = Explanation {
        action: verdict.action.to_string(),
        matched: verdict.matched.clone(),
        failsafe: verdict.failsafe.clone(),
        instance_id: id.to_string(),
        packet,
        rule: decided.map(|r| r.policy().to_string()),
        security_group_name: group_name,
        security_groups: ruleset
            .security_groups
            .iter()
            .map(|g| g.to_string())
            .collect(),
        rules_checked: match (&verdict.failsafe, index) {
            (Some(_), _) => 0,
            (None, Some(i)) => i + 1,
            (None, None) => rules.len(),
        },
        rules_total: rules.len(),
        reason,
    };
    match args.output {
        Format::Json => print_json(&answer)?,
        Format::Table => {
            println!(
                "{} {}: {}",
                answer.instance_id, answer.packet, answer.action
            );
            println!("  {}", answer.reason);
            for n in &notes {
                println!("  note: {n}");
            }
        }
    }
    Ok(match verdict.action {
        palisade_model::Action::Accept => ExitCode::SUCCESS,
        palisade_model::Action::Drop => ExitCode::from(1),
    })
}

/// The failsafe entries the instance's agent last reported
/// (`DescribeInstanceStatus`); none when it never reported any.
fn reported_failsafe(
    client: &palisade_client::Client,
    instance: &str,
) -> anyhow::Result<Vec<Failsafe>> {
    let answer = client
        .palisade(
            "DescribeInstanceStatus",
            &serde_json::json!({ "InstanceIds": [instance] }),
        )
        .with_context(|| format!("reading the failsafe entries of {instance}"))?;
    let entries: Vec<String> = answer["InstanceStatusSet"][0]["Failsafe"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(parse_list("Failsafe", &entries)?)
}
