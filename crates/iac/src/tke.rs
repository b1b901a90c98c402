//! `palisade tke apply`: the seed's default groups for one cluster, as the
//! fleet the server should hold afterwards: the node group (and, for a
//! self-deployed cluster, the master group) created or brought up to date,
//! and bound to every node and master. A group a fleet file already made
//! for the role (bound to every node, holding the seed's rules) is taken as
//! the cluster's group rather than doubled. It goes through [`crate::plan`]
//! and [`crate::apply`] like any fleet file, so running it twice changes
//! nothing.

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
    let seed = palisade_tke::node_template(&c.networks).map_err(model)?;
    let at = find_group(&file, &c.node_group_name(), &c.nodes, &seed)?;
    let node_id = upsert_group(
        &mut file,
        at,
        &c.node_group_name(),
        "TKE default security group rules for node",
        &node,
    );
    let master_id = if c.masters.is_empty() {
        None
    } else {
        let master = palisade_tke::master_template(&c.networks).map_err(model)?;
        let at = find_group(&file, &c.master_group_name(), &c.masters, &master)?;
        Some(upsert_group(
            &mut file,
            at,
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
        // Nodes that joined by themselves (join tokens) stay listed.
        nodes: still_registered(&file, &kept.nodes, &c.nodes),
        masters: still_registered(&file, &kept.masters, &c.masters),
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

/// `recorded` that are still registered instances of `file`, then the
/// ones of `given` not among them.
fn still_registered(file: &FleetFile, recorded: &[String], given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = recorded
        .iter()
        .filter(|n| file.instances.iter().any(|i| &i.id == *n))
        .cloned()
        .collect();
    for n in given {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// Which group of `file` is the cluster's group of one role: the one named
/// `name` (as `tke apply` creates it); failing that, the one group bound to
/// every one of `instances` whose rules begin with the seed's rules for the
/// role (ignoring descriptions). The second is how a cluster set up from a
/// fleet file, such as examples/tke-cluster.yaml with its `tke-node` group,
/// is recognised: `tke apply` then brings that group up to date instead of
/// adding a second one with the same rules.
fn find_group(
    file: &FleetFile,
    name: &str,
    instances: &[String],
    seed: &PolicySet,
) -> Result<Option<usize>, IacError> {
    if let Some(i) = file.security_groups.iter().position(|g| g.name == name) {
        return Ok(Some(i));
    }
    let bound_to_all = |id: &str| {
        !instances.is_empty()
            && instances.iter().all(|n| {
                file.instances
                    .iter()
                    .any(|i| &i.id == n && i.security_groups.iter().any(|g| g == id))
            })
    };
    let found: Vec<usize> = file
        .security_groups
        .iter()
        .enumerate()
        .filter(|(_, g)| bound_to_all(&g.id) && begins_with_seed(&g.policies, seed))
        .map(|(i, _)| i)
        .collect();
    match found[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(IacError::Unsupported(format!(
            "InvalidParameterValue.Duplicate: groups {} are each bound to {} and hold the seed's rules; rename the one to keep to {name:?} (or unbind the others), then run tke apply again",
            found
                .iter()
                .map(|&i| file.security_groups[i].id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            instances.join(", ")
        ))),
    }
}

/// Whether `set` starts, in each direction, with the rules of `seed`.
fn begins_with_seed(set: &wire::SecurityGroupPolicySet, seed: &PolicySet) -> bool {
    let prefix = |have: &Option<Vec<wire::SecurityGroupPolicy>>, want: &[Policy]| {
        let have = have.as_deref().unwrap_or_default();
        have.len() >= want.len()
            && have.iter().zip(want).all(|(h, w)| {
                Policy::from_wire(h).is_ok_and(|h| {
                    h.service == w.service && h.peer == w.peer && h.action == w.action
                })
            })
    };
    prefix(&set.ingress, &seed.ingress) && prefix(&set.egress, &seed.egress)
}

/// Puts the cluster's group (at index `at` of `file`, or else a new one
/// named `name`) in `file` with these rules; returns its id or, for a new
/// group, its name (a label `plan` resolves). A group found under another
/// name keeps its name and description: it is the file's to choose.
fn upsert_group(
    file: &mut FleetFile,
    at: Option<usize>,
    name: &str,
    description: &str,
    set: &PolicySet,
) -> String {
    let policies = wire::SecurityGroupPolicySet {
        version: None,
        ingress: Some(set.ingress.iter().map(Policy::to_wire_compact).collect()),
        egress: Some(set.egress.iter().map(Policy::to_wire_compact).collect()),
        policy_statistics: None,
    };
    match at.and_then(|i| file.security_groups.get_mut(i)) {
        Some(g) => {
            g.policies = wire::SecurityGroupPolicySet {
                version: g.policies.version.clone(),
                ..policies
            };
            if g.name == name {
                g.description = description.to_string();
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;
    use palisade_model::fleet::InstanceEntry;

    const SEED_INGRESS: &str = r#"
        - {Protocol: ALL, Port: ALL, CidrBlock: 172.16.0.0/16, Action: ACCEPT}
        - {Protocol: ALL, Port: ALL, CidrBlock: 10.0.0.0/16, Action: ACCEPT}
        - {Protocol: TCP, Port: 30000-32768, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: UDP, Port: 30000-32768, CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: ICMP, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}"#;

    fn server(groups: &[(&str, &str, &str)]) -> FleetFile {
        let mut yaml = String::from("security_groups:\n");
        for (id, name, ingress) in groups {
            yaml += &format!(
                "  - id: {id}\n    name: {name}\n    policies:\n      Ingress:{ingress}\n      Egress:\n        - {{Protocol: ALL, Port: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}}\n"
            );
        }
        let mut file: FleetFile = palisade_model::yaml::from_str(&yaml).unwrap();
        let all: Vec<String> = groups.iter().map(|g| g.0.to_string()).collect();
        for n in ["ins-node0001", "ins-node0002"] {
            file.instances.push(InstanceEntry {
                id: n.into(),
                private_ips: vec!["10.0.0.11".into()],
                security_groups: all.clone(),
                ..InstanceEntry::default()
            });
        }
        file
    }

    fn cluster() -> TkeCluster {
        TkeCluster {
            cluster_id: "cls-demo0001".into(),
            networks: ClusterNetworks::parse("10.0.0.0/16", "172.16.0.0/16").unwrap(),
            nodes: vec!["ins-node0001".into(), "ins-node0002".into()],
            masters: vec![],
            ssh_from: vec![],
            peers: vec![],
        }
    }

    #[test]
    fn a_bound_group_with_the_seed_rules_is_the_node_group() {
        let remote = server(&[
            ("sg-ops00001", "ops", " []"),
            ("sg-node0001", "tke-node", SEED_INGRESS),
        ]);
        let (file, _) = desired(&remote, &cluster()).unwrap();
        assert_eq!(file.security_groups.len(), 2);
        let node = &file.security_groups[1];
        assert_eq!(
            (node.id.as_str(), node.name.as_str()),
            ("sg-node0001", "tke-node")
        );
        assert_eq!(node.policies.ingress.as_ref().unwrap().len(), 5);
        assert_eq!(
            file.instances[0].security_groups,
            ["sg-ops00001", "sg-node0001"]
        );
    }

    #[test]
    fn the_tke_name_wins_and_a_group_without_the_seed_rules_is_not_taken() {
        let remote = server(&[
            ("sg-node0001", "tke-node", SEED_INGRESS),
            ("sg-tke00001", "tke-node-cls-demo0001", " []"),
        ]);
        let (file, _) = desired(&remote, &cluster()).unwrap();
        assert_eq!(file.security_groups.len(), 2);
        assert_eq!(
            file.security_groups[1]
                .policies
                .ingress
                .as_ref()
                .unwrap()
                .len(),
            5
        );
        assert_eq!(
            file.security_groups[0]
                .policies
                .ingress
                .as_ref()
                .unwrap()
                .len(),
            5
        );

        let remote = server(&[("sg-ops00001", "ops", " []")]);
        let (file, _) = desired(&remote, &cluster()).unwrap();
        let names: Vec<&str> = file
            .security_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["ops", "tke-node-cls-demo0001"]);
    }

    #[test]
    fn two_bound_groups_with_the_seed_rules_are_an_error_naming_both() {
        let remote = server(&[
            ("sg-node0001", "a", SEED_INGRESS),
            ("sg-node0002", "b", SEED_INGRESS),
        ]);
        let err = desired(&remote, &cluster()).unwrap_err().to_string();
        assert!(err.contains("sg-node0001, sg-node0002"), "{err}");
    }

    #[test]
    fn a_bound_group_with_the_master_seed_rules_is_the_master_group() {
        let mut c = cluster();
        c.masters = vec!["ins-mstr0001".into()];
        let seed = palisade_tke::master_template(&c.networks).unwrap();
        let mut remote = server(&[("sg-node0001", "tke-node", SEED_INGRESS)]);
        remote.security_groups.push(GroupEntry {
            id: "sg-mstr0001".into(),
            name: "masters".into(),
            description: String::new(),
            policies: wire::SecurityGroupPolicySet {
                ingress: Some(seed.ingress.iter().map(Policy::to_wire_compact).collect()),
                egress: Some(seed.egress.iter().map(Policy::to_wire_compact).collect()),
                ..Default::default()
            },
        });
        remote.instances.push(InstanceEntry {
            id: "ins-mstr0001".into(),
            private_ips: vec!["10.0.0.10".into()],
            security_groups: vec!["sg-mstr0001".into()],
            ..InstanceEntry::default()
        });
        let (file, _) = desired(&remote, &c).unwrap();
        let names: Vec<&str> = file
            .security_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["tke-node", "masters"]);
        assert_eq!(file.instances[2].security_groups, ["sg-mstr0001"]);
    }
}
