//! The seed's requirements as checks (`TKE001`-`TKE010`). The seed
//! ("TKE Security Group Settings") says what a TKE cluster needs open; each
//! check compares the exact set a node or master accepts, after binding
//! order and DROP rules, with the set the seed requires, and gives a packet
//! that is required but dropped, and the rule that drops it.

use crate::check::{all_traffic, packets};
use crate::engine::{Effect, Engine};
use crate::finding::{CheckId, Finding, Location};
use palisade_model::{Cluster, Direction, Instance, Protocol, Service};
use palisade_policy::{
    codec,
    eval::{protocol_name, protocol_range_name},
    Packet, PacketSet, RuleOrigin,
};
use std::collections::{BTreeMap, HashSet};

const NODE_PORTS: (u16, u16) = (30000, 32768);

pub(crate) fn run(e: &mut Engine<'_>, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    let mut peer_pairs_seen = HashSet::new();
    for (ci, c) in fleet.clusters.iter().enumerate() {
        let cluster_path = format!("clusters[{ci}]");
        let cluster_loc = Location {
            cluster: Some(c.id.to_string()),
            line: fleet.line(&cluster_path),
            path: Some(cluster_path),
            ..Location::default()
        };
        let container = [c.container_cidr.range()];
        let nodes_net = [c.cluster_cidr.range()];
        let nodes: Vec<&Instance> = c.nodes.iter().filter_map(|n| fleet.instance(n)).collect();
        for node in &nodes {
            let eff = e.effect(&node.security_groups);
            let ctx = Ctx {
                e,
                cluster: c,
                node,
            };
            ctx.require(
                out,
                CheckId::Tke001,
                &eff.ingress,
                &all_traffic(&container),
                &format!(
                    "node {} of {} does not accept all traffic from the container CIDR {}: pods \
                     on other nodes reach services through this node (the seed: \"the container \
                     pod network and the cluster node network on the peer node must be open\")",
                    node.id, c.id, c.container_cidr
                ),
                &format!(
                    "add `ALL ALL {} ACCEPT` (the node template's first row) to a group every node \
                     is bound to, above any DROP that covers it",
                    c.container_cidr
                ),
            );
            ctx.require(
                out,
                CheckId::Tke002,
                &eff.ingress,
                &all_traffic(&nodes_net),
                &format!(
                    "node {} of {} does not accept all traffic from the cluster CIDR {} (node to \
                     node)",
                    node.id, c.id, c.cluster_cidr
                ),
                &format!(
                    "add `ALL ALL {} ACCEPT` (the node template's second row) to a group every \
                     node is bound to, above any DROP that covers it",
                    c.cluster_cidr
                ),
            );
            let lb: Vec<_> = if c.nodeport_sources.is_empty() {
                codec::parse_addr_range("lb", "0.0.0.0/0")
                    .ok()
                    .into_iter()
                    .collect()
            } else {
                c.nodeport_sources.iter().map(|s| s.range()).collect()
            };
            let lb_text = if c.nodeport_sources.is_empty() {
                "0.0.0.0/0".to_string()
            } else {
                join(c.nodeport_sources.iter())
            };
            for (id, proto, name) in [
                (CheckId::Tke003, palisade_policy::TCP, "TCP"),
                (CheckId::Tke004, palisade_policy::UDP, "UDP"),
            ] {
                ctx.require(
                    out,
                    id,
                    &eff.ingress,
                    &packets(proto, proto, &lb, NODE_PORTS),
                    &format!(
                        "node {} of {} does not accept {name} 30000-32768 from {lb_text}: load \
                         balancers forward to NodeIP:NodePort (the seed: \"Open ports 30000 to \
                         32768 on nodes to the Internet\")",
                        node.id, c.id
                    ),
                    &format!(
                        "add `{name} 30000-32768 {lb_text} ACCEPT` to the node group, or set the \
                         cluster's nodeport_sources to your load balancer's ranges and allow those"
                    ),
                );
            }
            let egress_required = all_traffic(&[c.cluster_cidr.range(), c.container_cidr.range()]);
            ctx.require(
                out,
                CheckId::Tke007,
                &eff.egress,
                &egress_required,
                &format!(
                    "node {} of {} does not allow egress to the cluster CIDR {} and the container \
                     CIDR {} (the seed: \"To customize outbound rules, you need to open the node \
                     IP range and container IP range\")",
                    node.id, c.id, c.cluster_cidr, c.container_cidr
                ),
                &format!(
                    "add egress `ALL ALL {} ACCEPT` and `ALL ALL {} ACCEPT` above any egress DROP",
                    c.cluster_cidr, c.container_cidr
                ),
            );
            if !c.ssh_sources.is_empty() {
                let src: Vec<_> = c.ssh_sources.iter().map(|s| s.range()).collect();
                let text = join(c.ssh_sources.iter());
                ctx.require(
                    out,
                    CheckId::Tke010,
                    &eff.ingress,
                    &packets(palisade_policy::TCP, palisade_policy::TCP, &src, (22, 22)),
                    &format!(
                        "node {} of {} does not accept TCP 22 from the cluster's ssh_sources {text} \
                         (the seed: \"Open port 22 to the Internet if SSH login is required\")",
                        node.id, c.id
                    ),
                    &format!("add `TCP 22 {text} ACCEPT` to the node group, above any DROP for port 22"),
                );
            }
        }

        // TKE005: one group common to every node.
        if let Some((first, rest)) = nodes.split_first() {
            let common: Vec<_> = first
                .security_groups
                .iter()
                .filter(|g| rest.iter().all(|n| n.security_groups.contains(g)))
                .collect();
            if common.is_empty() {
                let sample: Vec<String> = nodes
                    .iter()
                    .take(4)
                    .map(|n| format!("{} [{}]", n.id, join(n.security_groups.iter())))
                    .collect();
                out.push(Finding::new(
                    CheckId::Tke005,
                    format!(
                        "the nodes of {} are not all bound to one common security group ({}{}); \
                         the seed recommends \"that you bind all CVM instances in one cluster to \
                         the same security group\". Fix: create the node group (`palisade tke \
                         template node`) and bind every node to it",
                        c.id,
                        sample.join(", "),
                        if nodes.len() > 4 { ", ..." } else { "" }
                    ),
                    cluster_loc.clone(),
                ));
            }
        }

        // TKE006: instances outside the cluster in a node group.
        let node_groups: HashSet<_> = nodes
            .iter()
            .flat_map(|n| n.security_groups.iter())
            .collect();
        let members: HashSet<_> = c.nodes.iter().chain(&c.masters).collect();
        for (ii, inst) in fleet.instances.iter().enumerate() {
            if members.contains(&inst.id) {
                continue;
            }
            let shared: Vec<(usize, _)> = inst
                .security_groups
                .iter()
                .enumerate()
                .filter(|(_, g)| node_groups.contains(g))
                .collect();
            let Some((j, g)) = shared.first() else {
                continue;
            };
            let path = format!("instances[{ii}].security_groups[{j}]");
            out.push(Finding::new(
                CheckId::Tke006,
                format!(
                    "{} is not in {} but is bound to {}, which nodes of {} use: the node group's \
                     rules (and any rule referencing it) now cover a machine outside the cluster; \
                     the seed: \"do not add non-clustered CVMs to a security group for a \
                     cluster\". Fix: bind {} to a group of its own",
                    inst.id,
                    c.id,
                    join(shared.iter().map(|(_, g)| g)),
                    c.id,
                    inst.id
                ),
                Location {
                    cluster: Some(c.id.to_string()),
                    instance: Some(inst.id.to_string()),
                    group: Some(g.to_string()),
                    line: fleet.line(&path),
                    path: Some(path),
                    ..Location::default()
                },
            ));
        }

        // TKE008: the seed's master table.
        let nets = palisade_tke::ClusterNetworks {
            cluster_cidr: c.cluster_cidr,
            container_cidr: c.container_cidr,
        };
        if let Ok(template) = palisade_tke::master_template(&nets) {
            for m in c.masters.iter().filter_map(|m| fleet.instance(m)) {
                let eff = e.effect(&m.security_groups);
                let mut missing: Vec<String> = Vec::new();
                let mut witness: Option<Packet> = None;
                for row in &template.ingress {
                    // ICMP is ping support, not a port the cluster needs.
                    if matches!(
                        row.service,
                        Service::Protocol {
                            protocol: Protocol::Icmp,
                            ..
                        }
                    ) {
                        continue;
                    }
                    let Some(space) = row_space(row) else {
                        continue;
                    };
                    let lack = space.difference(&eff.ingress.accepted);
                    if lack.is_empty() {
                        continue;
                    }
                    if witness.is_none() {
                        witness = crate::check::witness(&lack, Direction::Ingress);
                    }
                    missing.push(format!("{} from {}", ports_of(&lack), row.peer));
                }
                if !missing.is_empty() {
                    let mut loc = e.instance_location(&m.id);
                    loc.cluster = Some(c.id.to_string());
                    let decided = witness
                        .as_ref()
                        .map(|w| decided_by(e, &m.security_groups, w))
                        .unwrap_or_default();
                    out.push(
                        Finding::new(
                            CheckId::Tke008,
                            format!(
                                "master {} of {} lacks ports of the seed's master table: {}{}. \
                                 Fix: bind the master to the seed's master group (`palisade tke \
                                 template master --cluster-cidr {} --container-cidr {}`) or add \
                                 the missing rows above any DROP that covers them",
                                m.id,
                                c.id,
                                missing.join("; "),
                                decided,
                                c.cluster_cidr,
                                c.container_cidr
                            ),
                            loc,
                        )
                        .with_witness(witness),
                    );
                }
            }
        }

        // TKE009: peer clusters accept each other.
        for peer_id in &c.peers {
            let Some(peer) = fleet.cluster(peer_id) else {
                continue;
            };
            let key = if c.id <= peer.id {
                (c.id.clone(), peer.id.clone())
            } else {
                (peer.id.clone(), c.id.clone())
            };
            if !peer_pairs_seen.insert(key) {
                continue;
            }
            for (receiver, sender) in [(c, peer), (peer, c)] {
                let required =
                    all_traffic(&[sender.container_cidr.range(), sender.cluster_cidr.range()]);
                for node in receiver.nodes.iter().filter_map(|n| fleet.instance(n)) {
                    let eff = e.effect(&node.security_groups);
                    let ctx = Ctx {
                        e,
                        cluster: receiver,
                        node,
                    };
                    ctx.require(
                        out,
                        CheckId::Tke009,
                        &eff.ingress,
                        &required,
                        &format!(
                            "{} and {} are peers, but node {} of {} does not accept all traffic \
                             from {}'s container CIDR {} and cluster CIDR {} (the seed: \"If \
                             clusters in the same VPC need to communicate with each other, you \
                             must open the container networks and node networks of the \
                             corresponding clusters\")",
                            c.id,
                            peer.id,
                            node.id,
                            receiver.id,
                            sender.id,
                            sender.container_cidr,
                            sender.cluster_cidr
                        ),
                        &format!(
                            "add `ALL ALL {} ACCEPT` and `ALL ALL {} ACCEPT` to {}'s node group",
                            sender.container_cidr, sender.cluster_cidr, receiver.id
                        ),
                    );
                }
            }
        }
    }
}

struct Ctx<'a, 'f> {
    e: &'a Engine<'f>,
    cluster: &'a Cluster,
    node: &'a Instance,
}

impl Ctx<'_, '_> {
    /// Reports `id` when `required` is not inside what `effect` accepts.
    fn require(
        &self,
        out: &mut Vec<Finding>,
        id: CheckId,
        effect: &Effect,
        required: &PacketSet,
        what: &str,
        fix: &str,
    ) {
        let lack = required.difference(&effect.accepted);
        let Some(witness) = crate::check::witness(&lack, direction_of(id)) else {
            return;
        };
        let rule = self.e.decide(&self.node.security_groups, &witness);
        let mut loc = match rule {
            Some(r) => {
                let mut l = self.e.rule_location(r.origin());
                l.instance = Some(self.node.id.to_string());
                l
            }
            None => self.e.instance_location(&self.node.id),
        };
        loc.cluster = Some(self.cluster.id.to_string());
        let decided = decided_by(self.e, &self.node.security_groups, &witness);
        out.push(
            Finding::new(id, format!("{what}{decided}. Fix: {fix}"), loc)
                .with_witness(Some(witness)),
        );
    }
}

fn direction_of(id: CheckId) -> Direction {
    if id == CheckId::Tke007 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// `: e.g. ingress TCP 10.0.0.0 port 1 is dropped by sg-x Ingress[0]`.
pub(crate) fn decided_by(
    e: &Engine<'_>,
    groups: &[palisade_model::SecurityGroupId],
    witness: &Packet,
) -> String {
    match e.decide(groups, witness) {
        Some(r) => format!(
            ": e.g. {witness} is dropped by {} ({})",
            r.origin(),
            r.policy()
        ),
        None if groups.is_empty() => {
            format!(": e.g. {witness} is dropped by default (no security group is bound)")
        }
        None => format!(": e.g. {witness} is dropped by default (no rule matches it)"),
    }
}

/// The packets of one template row.
fn row_space(row: &palisade_model::Policy) -> Option<PacketSet> {
    let origin = RuleOrigin {
        security_group_id: "sg-tkemastr".parse().ok()?,
        direction: Direction::Ingress,
        policy_index: 0,
    };
    let empty = palisade_model::Fleet::default();
    palisade_policy::resolve::resolve_policy(&empty, origin, row)
        .ok()
        .map(|r| palisade_policy::rule_space(&r))
}

/// `TCP 2379-2380,10250` for the protocols and ports of a set.
fn ports_of(set: &PacketSet) -> String {
    let mut by_proto: BTreeMap<(u8, u8), Vec<palisade_model::PortRange>> = BTreeMap::new();
    for b in set.boxes() {
        by_proto
            .entry((b.protocol_lo, b.protocol_hi))
            .or_default()
            .push(b.ports);
    }
    by_proto
        .into_iter()
        .map(|((lo, hi), ports)| {
            let name = if lo == hi {
                protocol_name(lo)
            } else {
                format!("protocols {}", protocol_range_name(lo, hi))
            };
            let merged = palisade_model::proto::merge_ranges(&ports);
            if palisade_policy::has_ports(lo) && lo == hi {
                format!("{name} {}", codec::format_ports(&merged))
            } else {
                name
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
