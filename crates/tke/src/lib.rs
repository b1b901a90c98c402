//! The TKE profile: the seed's ("TKE Security Group Settings") default
//! security groups for nodes and for the masters of a self-deployed cluster,
//! built from a cluster's CIDRs, row for row in the seed's order and with
//! the seed's descriptions (DESIGN.md section 1, `tke`).

use palisade_model::wire::SecurityGroupPolicy as WirePolicy;
use palisade_model::{Cidr, Family, ModelError, Policy, PolicySet};

/// The NodePort range the seed names: "NodePort ranges from 30000 to 32768".
pub const NODE_PORT_RANGE: &str = "30000-32768";

/// The master's API-server ports open to the cluster network, as the seed lists them.
pub const MASTER_PORTS_FROM_CLUSTER: &str = "60001,60002,10250,2380,2379,53,17443,50055,443,61678";

/// The master's API-server ports open to the container network, as the seed lists them.
pub const MASTER_PORTS_FROM_CONTAINER: &str = "60001,60002,10250,2380,2379,53,17443";

/// The seed's descriptions, verbatim.
pub mod descriptions {
    /// Node, container CIDR row.
    pub const NODE_PODS: &str = "Enable the communication between pods in the container network.";
    /// Node, cluster CIDR row.
    pub const NODE_NODES: &str = "Enable the communication between nodes in the cluster network.";
    /// Node, NodePort rows.
    pub const NODE_NODEPORT: &str =
        "Open NodePort to the Internet (Services in LoadBalancer type need to be forwarded through NodePort).";
    /// Node, ICMP row.
    pub const NODE_ICMP: &str =
        "Enable the support for Internet Control Message Protocol (ICMP) and ping operations.";
    /// Master, ICMP row.
    pub const MASTER_ICMP: &str = "Ping operations are supported.";
    /// Master, NodePort rows.
    pub const MASTER_NODEPORT: &str = "It is used to open NodePort to the Internet (Services in LoadBalancer type need to be forwarded through NodePort).";
    /// Master, API-server row from the cluster network.
    pub const MASTER_API_CLUSTER: &str =
        "It is used to open API Server communication to the Internet.";
    /// Master, API-server row from the container network.
    pub const MASTER_API_CONTAINER: &str =
        "It is used to open API Server communication to the internet.";
    /// Master, CoreDNS rows.
    pub const MASTER_DNS: &str = "It is used to open CoreDNS communication to the internet.";
}

/// Which default group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// "Default security group rules for node".
    Node,
    /// "Default security group rules for master node in self-deployed cluster".
    Master,
}

/// A cluster's two networks, as the seed names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterNetworks {
    /// "CIDR of the cluster network": the nodes.
    pub cluster_cidr: Cidr,
    /// "CIDR of the container network": the pods.
    pub container_cidr: Cidr,
}

impl ClusterNetworks {
    /// Parses both CIDRs; errors name the flag (`--cluster-cidr`).
    pub fn parse(cluster_cidr: &str, container_cidr: &str) -> Result<Self, ModelError> {
        Ok(Self {
            cluster_cidr: Cidr::parse_any("--cluster-cidr", cluster_cidr)?,
            container_cidr: Cidr::parse_any("--container-cidr", container_cidr)?,
        })
    }
}

/// The seed's default group for `role`, for a cluster with `networks`.
pub fn template(role: Role, networks: &ClusterNetworks) -> Result<PolicySet, ModelError> {
    match role {
        Role::Node => node_template(networks),
        Role::Master => master_template(networks),
    }
}

/// "Default security group rules for node".
pub fn node_template(n: &ClusterNetworks) -> Result<PolicySet, ModelError> {
    use descriptions::*;
    let ingress = vec![
        rule("ALL", "ALL", n.container_cidr, NODE_PODS)?,
        rule("ALL", "ALL", n.cluster_cidr, NODE_NODES)?,
        rule("TCP", NODE_PORT_RANGE, anywhere(), NODE_NODEPORT)?,
        rule("UDP", NODE_PORT_RANGE, anywhere(), NODE_NODEPORT)?,
        rule("ICMP", "ALL", anywhere(), NODE_ICMP)?,
    ];
    Ok(PolicySet {
        version: None,
        ingress,
        egress: vec![rule("ALL", "ALL", anywhere(), "")?],
    })
}

/// "Default security group rules for master node in self-deployed cluster".
pub fn master_template(n: &ClusterNetworks) -> Result<PolicySet, ModelError> {
    use descriptions::*;
    let (cluster, container) = (n.cluster_cidr, n.container_cidr);
    let ingress = vec![
        rule("ICMP", "ALL", anywhere(), MASTER_ICMP)?,
        rule("TCP", NODE_PORT_RANGE, cluster, MASTER_NODEPORT)?,
        rule("UDP", NODE_PORT_RANGE, cluster, MASTER_NODEPORT)?,
        rule(
            "TCP",
            MASTER_PORTS_FROM_CLUSTER,
            cluster,
            MASTER_API_CLUSTER,
        )?,
        rule(
            "TCP",
            MASTER_PORTS_FROM_CONTAINER,
            container,
            MASTER_API_CONTAINER,
        )?,
        rule("TCP", NODE_PORT_RANGE, container, MASTER_NODEPORT)?,
        rule("UDP", NODE_PORT_RANGE, container, MASTER_NODEPORT)?,
        rule("UDP", "53", container, MASTER_DNS)?,
        rule("UDP", "53", cluster, MASTER_DNS)?,
    ];
    Ok(PolicySet {
        version: None,
        ingress,
        egress: vec![rule("ALL", "ALL", anywhere(), "")?],
    })
}

fn anywhere() -> Cidr {
    // A constant that always parses; `parse_v4` cannot fail on it.
    Cidr::parse_v4("CidrBlock", "0.0.0.0/0").unwrap_or_else(|_| unreachable!())
}

fn rule(protocol: &str, port: &str, peer: Cidr, description: &str) -> Result<Policy, ModelError> {
    let text = peer.to_string();
    let (cidr_block, ipv6_cidr_block) = match peer.family() {
        Family::V4 => (Some(text), None),
        Family::V6 => (None, Some(text)),
    };
    Policy::from_wire(&WirePolicy {
        protocol: Some(protocol.to_string()),
        port: Some(port.to_string()),
        cidr_block,
        ipv6_cidr_block,
        action: Some("ACCEPT".to_string()),
        policy_description: (!description.is_empty()).then(|| description.to_string()),
        ..WirePolicy::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> ClusterNetworks {
        ClusterNetworks::parse("10.0.0.0/16", "172.16.0.0/16").unwrap()
    }

    /// (protocol, port, peer, description) of each row.
    fn rows(rules: &[Policy]) -> Vec<(String, String, String, String, String)> {
        rules
            .iter()
            .map(|p| {
                let w = p.to_wire_compact();
                (
                    w.protocol.unwrap_or_default(),
                    w.port.unwrap_or_default(),
                    w.cidr_block.unwrap_or_default(),
                    w.action.unwrap_or_default(),
                    w.policy_description.unwrap_or_default(),
                )
            })
            .collect()
    }

    fn row(p: &str, port: &str, peer: &str, d: &str) -> (String, String, String, String, String) {
        (
            p.into(),
            port.into(),
            peer.into(),
            "ACCEPT".into(),
            d.into(),
        )
    }

    #[test]
    fn node_template_is_the_seeds_table_row_by_row() {
        use descriptions::*;
        let set = node_template(&nets()).unwrap();
        assert_eq!(
            rows(&set.ingress),
            vec![
                row("ALL", "ALL", "172.16.0.0/16", NODE_PODS),
                row("ALL", "ALL", "10.0.0.0/16", NODE_NODES),
                row("TCP", "30000-32768", "0.0.0.0/0", NODE_NODEPORT),
                row("UDP", "30000-32768", "0.0.0.0/0", NODE_NODEPORT),
                row("ICMP", "ALL", "0.0.0.0/0", NODE_ICMP),
            ]
        );
        assert_eq!(rows(&set.egress), vec![row("ALL", "ALL", "0.0.0.0/0", "")]);
    }

    #[test]
    fn master_template_is_the_seeds_table_row_by_row() {
        use descriptions::*;
        let set = master_template(&nets()).unwrap();
        let (cl, co) = ("10.0.0.0/16", "172.16.0.0/16");
        assert_eq!(
            rows(&set.ingress),
            vec![
                row("ICMP", "ALL", "0.0.0.0/0", MASTER_ICMP),
                row("TCP", "30000-32768", cl, MASTER_NODEPORT),
                row("UDP", "30000-32768", cl, MASTER_NODEPORT),
                row(
                    "TCP",
                    "60001,60002,10250,2380,2379,53,17443,50055,443,61678",
                    cl,
                    MASTER_API_CLUSTER
                ),
                row(
                    "TCP",
                    "60001,60002,10250,2380,2379,53,17443",
                    co,
                    MASTER_API_CONTAINER
                ),
                row("TCP", "30000-32768", co, MASTER_NODEPORT),
                row("UDP", "30000-32768", co, MASTER_NODEPORT),
                row("UDP", "53", co, MASTER_DNS),
                row("UDP", "53", cl, MASTER_DNS),
            ]
        );
        assert_eq!(rows(&set.egress), vec![row("ALL", "ALL", "0.0.0.0/0", "")]);
    }

    #[test]
    fn descriptions_are_verbatim_from_the_seed() {
        let seed = include_str!("../tests/seed.txt");
        for d in [
            descriptions::NODE_PODS,
            descriptions::NODE_NODES,
            descriptions::NODE_NODEPORT,
            descriptions::NODE_ICMP,
            descriptions::MASTER_ICMP,
            descriptions::MASTER_NODEPORT,
            descriptions::MASTER_API_CLUSTER,
            descriptions::MASTER_API_CONTAINER,
            descriptions::MASTER_DNS,
        ] {
            assert!(seed.contains(d), "{d:?} is not in the seed");
        }
        assert!(seed.contains("60001, 60002, 10250, 2380, 2379, 53, 17443,50055, 443, 61678"));
        assert!(seed.contains("60001, 60002, 10250, 2380, 2379, 53, 17443\n"));
    }

    #[test]
    fn bad_cidrs_are_errors_naming_the_flag() {
        let err = ClusterNetworks::parse("10.0.0.0/33", "172.16.0.0/16").unwrap_err();
        assert!(
            err.to_string().contains("--cluster-cidr \"10.0.0.0/33\""),
            "{err}"
        );
        let err = ClusterNetworks::parse("10.0.0.0/16", "pods").unwrap_err();
        assert!(
            err.to_string().contains("--container-cidr \"pods\""),
            "{err}"
        );
    }

    #[test]
    fn ipv6_networks_use_ipv6_cidr_block() {
        let n = ClusterNetworks::parse("10.0.0.0/16", "2001:db8:42::/56").unwrap();
        let set = node_template(&n).unwrap();
        let w = set.ingress[0].to_wire_compact();
        assert_eq!(w.ipv6_cidr_block.as_deref(), Some("2001:db8:42::/56"));
        assert_eq!(w.cidr_block, None);
    }
}
