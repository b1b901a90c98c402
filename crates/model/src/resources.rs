//! The resources a fleet (or a server) holds besides templates: security
//! groups, instances with their ordered groups, and clusters.

use crate::addr::Cidr;
use crate::ids::{ClusterId, InstanceId, SecurityGroupId};
use crate::policy::PolicySet;
use std::net::IpAddr;

/// A security group and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// `sg-` id.
    pub id: SecurityGroupId,
    /// `SecurityGroupName`.
    pub name: String,
    /// `SecurityGroupDesc`.
    pub description: String,
    /// Both rule lists and the version.
    pub policies: PolicySet,
}

/// An instance (node) and the groups bound to it, in priority order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `ins-` id.
    pub id: InstanceId,
    /// Display name.
    pub name: String,
    /// Private IPs; a group reference to a group bound here stands for these.
    pub private_ips: Vec<IpAddr>,
    /// Bound groups; the first is consulted first.
    pub security_groups: Vec<SecurityGroupId>,
}

/// A Kubernetes cluster as the TKE profile sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `cls-` id.
    pub id: ClusterId,
    /// Display name.
    pub name: String,
    /// The node network (the seed's "cluster network CIDR").
    pub cluster_cidr: Cidr,
    /// The pod network (the seed's "container network CIDR").
    pub container_cidr: Cidr,
    /// Worker nodes.
    pub nodes: Vec<InstanceId>,
    /// Masters of a self-deployed cluster.
    pub masters: Vec<InstanceId>,
    /// Clusters in the same VPC that must reach this one.
    pub peers: Vec<ClusterId>,
    /// Where SSH must be allowed from, if SSH login is required.
    pub ssh_sources: Vec<Cidr>,
    /// Where NodePorts must be reachable from (default 0.0.0.0/0).
    pub nodeport_sources: Vec<Cidr>,
}
