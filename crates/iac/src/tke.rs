//! `palisade tke apply`: the seed's default groups for one cluster, as the
//! fleet the server should hold afterwards: the node group (and, for a
//! self-deployed cluster, the master group) created or brought up to date,
//! and bound to every node and master. It goes through [`crate::plan`] and
//! [`crate::apply`] like any fleet file, so running it twice changes nothing.

use crate::IacError;
use palisade_model::fleet::{ClusterEntry, GroupEntry};
use palisade_model::{wire, Cidr, FleetFile, Policy, PolicySet};
use palisade_tke::ClusterNetworks;

/// What `tke apply` is asked to set up.
#[derive(Debug, Clone)]
pub struct TkeCluster {
    /// `cls-...`.
    pub cluster_id: String,
    /// The cluster (node) network and the container (pod) network.
    pub networks: ClusterNetworks,
    /// Worker nodes (`ins-...`), registered on the server.
    pub nodes: Vec<String>,
    /// Masters of a self-deployed cluster.
    pub masters: Vec<String>,
    /// "Open port 22 to the Internet if SSH login is required": from these.
    pub ssh_from: Vec<Cidr>,
    /// Clusters in the same VPC that must reach this one, with their networks.
    pub peers: Vec<(String, ClusterNetworks)>,
}

impl TkeCluster {
    /// The node group's name.
    pub fn node_group_name(&self) -> String {
        format!("tke-node-{}", self.cluster_id)
    }

    /// The master group's name.
    pub fn master_group_name(&self) -> String {
        format!("tke-master-{}", self.cluster_id)
    }
}

/// The fleet the server should hold: `remote` with the cluster's groups
/// added or replaced and bound, and the cluster recorded. Also returns the
/// cluster entry.
pub fn desired(remote: &FleetFile, c: &TkeCluster) -> Result<(FleetFile, ClusterEntry), IacError> {
    let mut file = remote.clone();
    let model = |e: palisade_model::ModelError| IacError::Unsupported(e.to_string());
    let mut node = palisade_tke::node_template(&c.networks).map_err(model)?;
    for cidr in &c.ssh_from {
        node.ingress
            .push(accept("TCP", "22", *cidr, "SSH login (tke apply --ssh-from)").map_err(model)?);
    }
    for (peer, n) in &c.peers {
        for cidr in [n.container_cidr, n.cluster_cidr] {
            node.ingress.push(
                accept(
                    "ALL",
                    "ALL",
                    cidr,
                    &format!("Peer cluster {peer} in the same VPC"),
                )
                .map_err(model)?,
            );
        }
    }
    let node_id = upsert_group(
        &mut file,
        &c.node_group_name(),
        "TKE default security group rules for node",
        &node,
    );
    let master_id = if c.masters.is_empty() {
        None
    } else {
        let master = palisade_tke::master_template(&c.networks).map_err(model)?;
        Some(upsert_group(
            &mut file,
            &c.master_group_name(),
            "TKE default security group rules for master node in self-deployed cluster",
            &master,
        ))
    };
    for (list, group) in [
        (&c.nodes, Some(node_id.clone())),
        (&c.masters, master_id.clone()),
    ] {
        let Some(group) = group else { continue };
        for id in list {
            let inst = file.instances.iter_mut().find(|i| &i.id == id).ok_or_else(|| {
                IacError::Unsupported(format!(
                    "ResourceNotFound: instance {id} is not registered on the server (RegisterInstances it, or start its agent, first)"
                ))
            })?;
            if !inst.security_groups.contains(&group) {
                inst.security_groups.push(group.clone());
            }
        }
    }
    // Recorded on the server so that `check` and `export` know the cluster;
    // a name and NodePort sources set elsewhere are kept.
    let existing = file.clusters.iter().position(|k| k.id == c.cluster_id);
    let kept = existing
        .map(|i| file.clusters[i].clone())
        .unwrap_or_default();
    let cluster = ClusterEntry {
        id: c.cluster_id.clone(),
        name: kept.name,
        cluster_cidr: c.networks.cluster_cidr.to_string(),
        container_cidr: c.networks.container_cidr.to_string(),
        nodes: c.nodes.clone(),
        masters: c.masters.clone(),
        peers: c.peers.iter().map(|(id, _)| id.clone()).collect(),
        ssh_sources: c.ssh_from.iter().map(|s| s.to_string()).collect(),
        nodeport_sources: kept.nodeport_sources,
    };
    match existing {
        Some(i) => file.clusters[i] = cluster.clone(),
        None => file.clusters.push(cluster.clone()),
    }
    Ok((file, cluster))
}

/// Puts the group named `name` in `file` with these rules, keeping its id
/// when it exists; returns the id or, for a new group, its name (a label
/// `plan` resolves).
fn upsert_group(file: &mut FleetFile, name: &str, description: &str, set: &PolicySet) -> String {
    let policies = wire::SecurityGroupPolicySet {
        version: None,
        ingress: Some(set.ingress.iter().map(Policy::to_wire_compact).collect()),
        egress: Some(set.egress.iter().map(Policy::to_wire_compact).collect()),
        policy_statistics: None,
    };
    match file.security_groups.iter_mut().find(|g| g.name == name) {
        Some(g) => {
            g.policies = wire::SecurityGroupPolicySet {
                version: g.policies.version.clone(),
                ..policies
            };
            g.description = description.to_string();
            g.id.clone()
        }
        None => {
            file.security_groups.push(GroupEntry {
                id: String::new(),
                name: name.to_string(),
                description: description.to_string(),
                policies,
            });
            name.to_string()
        }
    }
}

fn accept(
    protocol: &str,
    port: &str,
    peer: Cidr,
    description: &str,
) -> Result<Policy, palisade_model::ModelError> {
    let text = peer.to_string();
    let (cidr_block, ipv6_cidr_block) = match peer.family() {
        palisade_model::Family::V4 => (Some(text), None),
        palisade_model::Family::V6 => (None, Some(text)),
    };
    Policy::from_wire(&wire::SecurityGroupPolicy {
        protocol: Some(protocol.to_string()),
        port: Some(port.to_string()),
        cidr_block,
        ipv6_cidr_block,
        action: Some("ACCEPT".to_string()),
        policy_description: Some(description.to_string()),
        ..wire::SecurityGroupPolicy::default()
    })
}
