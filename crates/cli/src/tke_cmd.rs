//! `palisade tke template node|master`: the seed's default groups for a
//! cluster's CIDRs, as a table or as the `SecurityGroupPolicySet` JSON that
//! tccli and `CreateSecurityGroupWithPolicies` take.

use crate::output::{print_json, rules_table, Format};
use clap::{Args, Subcommand, ValueEnum};
use palisade_model::{Direction, PolicySet};
use palisade_tke::{ClusterNetworks, Role};
use serde::Serialize;
use std::process::ExitCode;

/// `palisade tke ...`
#[derive(Subcommand)]
pub enum TkeCommand {
    /// Print the seed's default security group for TKE nodes or masters.
    Template(TemplateArgs),
    /// Create or update a cluster's default groups on a server and bind its nodes.
    Apply(Box<crate::iac_cmds::TkeApplyArgs>),
}

/// `palisade tke template`.
#[derive(Args)]
pub struct TemplateArgs {
    /// `node` ("Default security group rules for node") or `master`
    /// ("... for master node in self-deployed cluster").
    role: RoleArg,
    /// CIDR of the container (pod) network.
    #[arg(long)]
    container_cidr: String,
    /// CIDR of the cluster (node) network.
    #[arg(long)]
    cluster_cidr: String,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Node,
    Master,
}

/// Runs a `tke` subcommand.
pub fn run(cmd: TkeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TkeCommand::Template(args) => template(args),
        TkeCommand::Apply(args) => crate::iac_cmds::tke_apply(*args),
    }
}

/// The JSON form: a Tencent `SecurityGroupPolicySet` with both lists.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PolicySetJson {
    ingress: Vec<palisade_model::wire::SecurityGroupPolicy>,
    egress: Vec<palisade_model::wire::SecurityGroupPolicy>,
}

/// `{"Ingress": [...], "Egress": [...]}` with compact rules.
pub fn policy_set_json(set: &PolicySet) -> impl Serialize {
    PolicySetJson {
        ingress: set.ingress.iter().map(|p| p.to_wire_compact()).collect(),
        egress: set.egress.iter().map(|p| p.to_wire_compact()).collect(),
    }
}

fn template(args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let networks = ClusterNetworks::parse(&args.cluster_cidr, &args.container_cidr)?;
    let role = match args.role {
        RoleArg::Node => Role::Node,
        RoleArg::Master => Role::Master,
    };
    let set = palisade_tke::template(role, &networks)?;
    match args.output {
        Format::Json => print_json(&policy_set_json(&set))?,
        Format::Table => {
            let title = match role {
                Role::Node => "Default security group rules for node",
                Role::Master => {
                    "Default security group rules for master node in self-deployed cluster"
                }
            };
            println!(
                "{title} (cluster network {}, container network {})",
                networks.cluster_cidr, networks.container_cidr
            );
            for dir in Direction::BOTH {
                println!(
                    "\n{} rules",
                    match dir {
                        Direction::Ingress => "Inbound",
                        Direction::Egress => "Outbound",
                    }
                );
                println!("{}", rules_table(dir, set.rules(dir)));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
