//! The fleet file: YAML (or JSON) describing what a server would hold:
//! security groups with their `SecurityGroupPolicySet` exactly as tccli
//! prints it, templates, instances with their ordered groups, clusters.
//! `Fleet::parse` validates everything at once and reports every problem
//! with its place in the file; a `Fleet` that exists is consistent (every
//! reference resolves, every limit holds).

use crate::addr::AddressEntry;
use crate::addr::Cidr;
use crate::error::{ErrorCode, ModelError};
use crate::ids::{
    AddressTemplateGroupId, AddressTemplateId, ClusterId, InstanceId, SecurityGroupId,
    ServiceTemplateGroupId, ServiceTemplateId,
};
use crate::limits::Limits;
use crate::locate::LineIndex;
use crate::policy::{Direction, Peer, PolicySet, Service};
use crate::resources::{Cluster, Instance, SecurityGroup};
use crate::template::{
    AddressTemplate, AddressTemplateGroup, ServiceEntry, ServiceTemplate, ServiceTemplateGroup,
};
use crate::wire;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

/// The file as written: names and shapes, nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Security groups.
    #[serde(default)]
    pub security_groups: Vec<GroupEntry>,
    /// Address templates.
    #[serde(default)]
    pub address_templates: Vec<AddressTemplateEntry>,
    /// Address template groups.
    #[serde(default)]
    pub address_template_groups: Vec<AddressTemplateGroupEntry>,
    /// Service templates.
    #[serde(default)]
    pub service_templates: Vec<ServiceTemplateEntry>,
    /// Service template groups.
    #[serde(default)]
    pub service_template_groups: Vec<ServiceTemplateGroupEntry>,
    /// Instances and their ordered groups.
    #[serde(default)]
    pub instances: Vec<InstanceEntry>,
    /// Clusters.
    #[serde(default)]
    pub clusters: Vec<ClusterEntry>,
    /// Limits to enforce instead of Tencent's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// A group as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// `sg-` id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The rules, as tccli prints a `SecurityGroupPolicySet` but without
    /// empty fields.
    #[serde(default, serialize_with = "without_empty_fields")]
    pub policies: wire::SecurityGroupPolicySet,
}

/// Writes a policy set without empty fields (`Ipv6CidrBlock: ''`, the unused
/// half of an `AddressTemplate`): in a rule an empty field is an absent one,
/// and a person reading an exported file should see only what the rule says.
/// The API answers keep them, as Tencent's do.
fn without_empty_fields<S: serde::Serializer>(
    set: &wire::SecurityGroupPolicySet,
    s: S,
) -> Result<S::Ok, S::Error> {
    // `serde_yaml::Value` keeps the fields in their order.
    let mut v = serde_yaml::to_value(set).map_err(serde::ser::Error::custom)?;
    prune_empty(&mut v);
    v.serialize(s)
}

fn prune_empty(v: &mut serde_yaml::Value) {
    use serde_yaml::Value;
    match v {
        Value::Mapping(m) => {
            for (_, x) in m.iter_mut() {
                prune_empty(x);
            }
            m.retain(|_, x| match x {
                Value::String(s) => !s.is_empty(),
                Value::Mapping(inner) => !inner.is_empty(),
                _ => true,
            });
        }
        Value::Sequence(list) => list.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

/// An address template as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressTemplateEntry {
    /// `ipm-` id.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// IPs, CIDRs, ranges.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// An address template group as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressTemplateGroupEntry {
    /// `ipmg-` id.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `ipm-` ids.
    #[serde(default)]
    pub templates: Vec<String>,
}

/// A service template as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTemplateEntry {
    /// `ppm-` id.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `tcp:80`, `udp:53,5353`, ...
    #[serde(default)]
    pub services: Vec<String>,
}

/// A service template group as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTemplateGroupEntry {
    /// `ppmg-` id.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `ppm-` ids.
    #[serde(default)]
    pub templates: Vec<String>,
}

/// An instance as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEntry {
    /// `ins-` id.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Private IPs.
    #[serde(default)]
    pub private_ips: Vec<String>,
    /// Bound groups; binding order is priority.
    #[serde(default)]
    pub security_groups: Vec<String>,
}

/// A cluster as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    /// `cls-` id.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Node network CIDR.
    pub cluster_cidr: String,
    /// Pod network CIDR.
    pub container_cidr: String,
    /// Node instance ids.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Master instance ids (self-deployed clusters).
    #[serde(default)]
    pub masters: Vec<String>,
    /// Peer clusters in the same VPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Where SSH must be allowed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_sources: Vec<String>,
    /// Where NodePorts must be reachable from (default 0.0.0.0/0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodeport_sources: Vec<String>,
}

/// One problem found in a file: where, and what (with its Tencent code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path inside the document, e.g. `security_groups[0].policies.Ingress[2]`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub error: ModelError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.error)
    }
}

/// A validated fleet: every id well-formed and unique, every reference
/// resolvable, every limit respected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Groups, in file order.
    pub security_groups: Vec<SecurityGroup>,
    /// Address templates.
    pub address_templates: Vec<AddressTemplate>,
    /// Address template groups.
    pub address_template_groups: Vec<AddressTemplateGroup>,
    /// Service templates.
    pub service_templates: Vec<ServiceTemplate>,
    /// Service template groups.
    pub service_template_groups: Vec<ServiceTemplateGroup>,
    /// Instances.
    pub instances: Vec<Instance>,
    /// Clusters.
    pub clusters: Vec<Cluster>,
    /// The limits in force.
    pub limits: Limits,
    /// Where each object sits in the file (path -> line), for findings.
    pub lines: LineIndex,
}

impl Fleet {
    /// Parses and validates a fleet file's text (YAML or JSON). On failure,
    /// every problem found, each with its path and line.
    pub fn parse(text: &str) -> Result<Fleet, Vec<Problem>> {
        let syntax = |e: crate::YamlError| {
            vec![Problem {
                path: String::new(),
                line: e.line,
                error: ModelError::new(ErrorCode::InvalidParameter, e.message),
            }]
        };
        let doc = crate::yaml::parse(text).map_err(syntax)?;
        let file: FleetFile = crate::yaml::from_document(&doc).map_err(syntax)?;
        Fleet::from_file(&file, doc.lines)
    }

    /// Validates an already-read file; `lines` locates problems.
    pub fn from_file(file: &FleetFile, lines: LineIndex) -> Result<Fleet, Vec<Problem>> {
        let mut v = Validator {
            lines: &lines,
            problems: Vec::new(),
        };
        let fleet = v.fleet(file);
        if v.problems.is_empty() {
            Ok(Fleet { lines, ..fleet })
        } else {
            Err(v.problems)
        }
    }

    /// The group with `id`.
    pub fn group(&self, id: &SecurityGroupId) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| &g.id == id)
    }

    /// The instance with `id`.
    pub fn instance(&self, id: &InstanceId) -> Option<&Instance> {
        self.instances.iter().find(|i| &i.id == id)
    }

    /// The address template with `id`.
    pub fn address_template(&self, id: &AddressTemplateId) -> Option<&AddressTemplate> {
        self.address_templates.iter().find(|t| &t.id == id)
    }

    /// The address template group with `id`.
    pub fn address_template_group(
        &self,
        id: &AddressTemplateGroupId,
    ) -> Option<&AddressTemplateGroup> {
        self.address_template_groups.iter().find(|t| &t.id == id)
    }

    /// The service template with `id`.
    pub fn service_template(&self, id: &ServiceTemplateId) -> Option<&ServiceTemplate> {
        self.service_templates.iter().find(|t| &t.id == id)
    }

    /// The service template group with `id`.
    pub fn service_template_group(
        &self,
        id: &ServiceTemplateGroupId,
    ) -> Option<&ServiceTemplateGroup> {
        self.service_template_groups.iter().find(|t| &t.id == id)
    }

    /// The cluster with `id`.
    pub fn cluster(&self, id: &ClusterId) -> Option<&Cluster> {
        self.clusters.iter().find(|c| &c.id == id)
    }

    /// The instances bound to group `id`, in file order.
    pub fn members(&self, id: &SecurityGroupId) -> impl Iterator<Item = &Instance> {
        let id = id.clone();
        self.instances
            .iter()
            .filter(move |i| i.security_groups.contains(&id))
    }

    /// The line where `path` starts in the file, if known.
    pub fn line(&self, path: &str) -> Option<usize> {
        self.lines.line(path)
    }

    /// The path of group `id` in the file (`security_groups[N]`).
    pub fn group_path(&self, id: &SecurityGroupId) -> Option<String> {
        self.security_groups
            .iter()
            .position(|g| &g.id == id)
            .map(|i| format!("security_groups[{i}]"))
    }
}

struct Validator<'a> {
    lines: &'a LineIndex,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn report(&mut self, path: String, error: ModelError) {
        let line = self.lines.line(&path);
        self.problems.push(Problem { path, line, error });
    }

    fn ok<T>(&mut self, path: impl Fn() -> String, r: Result<T, ModelError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.report(path(), e);
                None
            }
        }
    }

    fn unique<T: Eq + std::hash::Hash + Clone + fmt::Display>(
        &mut self,
        seen: &mut HashSet<T>,
        id: &T,
        path: String,
    ) {
        if !seen.insert(id.clone()) {
            self.report(
                path,
                ModelError::new(
                    ErrorCode::InvalidParameterValueDuplicate,
                    format!("id {:?}: declared twice", id.to_string()),
                ),
            );
        }
    }

    fn fleet(&mut self, f: &FleetFile) -> Fleet {
        let limits = f.limits.unwrap_or_default();

        let mut address_templates = Vec::new();
        let mut seen = HashSet::new();
        for (i, t) in f.address_templates.iter().enumerate() {
            let p = format!("address_templates[{i}]");
            let id = self.ok(
                || format!("{p}.id"),
                AddressTemplateId::parse_field("id", &t.id),
            );
            let mut addresses = Vec::new();
            for (j, a) in t.addresses.iter().enumerate() {
                if let Some(e) = self.ok(
                    || format!("{p}.addresses[{j}]"),
                    AddressEntry::parse_field("addresses", a),
                ) {
                    addresses.push(e);
                }
            }
            if let Some(id) = id {
                self.unique(&mut seen, &id, format!("{p}.id"));
                address_templates.push(AddressTemplate {
                    id,
                    name: t.name.clone(),
                    addresses,
                });
            }
        }

        let mut address_template_groups = Vec::new();
        let mut seen = HashSet::new();
        for (i, g) in f.address_template_groups.iter().enumerate() {
            let p = format!("address_template_groups[{i}]");
            let id = self.ok(
                || format!("{p}.id"),
                AddressTemplateGroupId::parse_field("id", &g.id),
            );
            let mut templates = Vec::new();
            for (j, t) in g.templates.iter().enumerate() {
                let tp = || format!("{p}.templates[{j}]");
                if let Some(tid) = self.ok(tp, AddressTemplateId::parse_field("templates", t)) {
                    if !address_templates
                        .iter()
                        .any(|a: &AddressTemplate| a.id == tid)
                    {
                        self.report(tp(), not_found("address template", tid.as_str()));
                    }
                    templates.push(tid);
                }
            }
            if let Some(id) = id {
                self.unique(&mut seen, &id, format!("{p}.id"));
                address_template_groups.push(AddressTemplateGroup {
                    id,
                    name: g.name.clone(),
                    templates,
                });
            }
        }

        let mut service_templates = Vec::new();
        let mut seen = HashSet::new();
        for (i, t) in f.service_templates.iter().enumerate() {
            let p = format!("service_templates[{i}]");
            let id = self.ok(
                || format!("{p}.id"),
                ServiceTemplateId::parse_field("id", &t.id),
            );
            let mut services = Vec::new();
            for (j, s) in t.services.iter().enumerate() {
                if let Some(e) = self.ok(
                    || format!("{p}.services[{j}]"),
                    ServiceEntry::parse_field("services", s),
                ) {
                    services.push(e);
                }
            }
            if let Some(id) = id {
                self.unique(&mut seen, &id, format!("{p}.id"));
                service_templates.push(ServiceTemplate {
                    id,
                    name: t.name.clone(),
                    services,
                });
            }
        }

        let mut service_template_groups = Vec::new();
        let mut seen = HashSet::new();
        for (i, g) in f.service_template_groups.iter().enumerate() {
            let p = format!("service_template_groups[{i}]");
            let id = self.ok(
                || format!("{p}.id"),
                ServiceTemplateGroupId::parse_field("id", &g.id),
            );
            let mut templates = Vec::new();
            for (j, t) in g.templates.iter().enumerate() {
                let tp = || format!("{p}.templates[{j}]");
                if let Some(tid) = self.ok(tp, ServiceTemplateId::parse_field("templates", t)) {
                    if !service_templates
                        .iter()
                        .any(|s: &ServiceTemplate| s.id == tid)
                    {
                        self.report(tp(), not_found("service template", tid.as_str()));
                    }
                    templates.push(tid);
                }
            }
            if let Some(id) = id {
                self.unique(&mut seen, &id, format!("{p}.id"));
                service_template_groups.push(ServiceTemplateGroup {
                    id,
                    name: g.name.clone(),
                    templates,
                });
            }
        }

        let group_ids: HashSet<String> = f.security_groups.iter().map(|g| g.id.clone()).collect();
        let mut security_groups = Vec::new();
        let mut seen = HashSet::new();
        for (i, g) in f.security_groups.iter().enumerate() {
            let p = format!("security_groups[{i}]");
            let id = self.ok(
                || format!("{p}.id"),
                SecurityGroupId::parse_field("id", &g.id),
            );
            // References of the valid rules are checked even when others are bad.
            let (policies, policies_ok) = self.policy_set(&p, &g.policies, &limits);
            self.references(
                &p,
                &g.policies,
                &group_ids,
                &address_templates,
                &address_template_groups,
                &service_templates,
                &service_template_groups,
            );
            if let (Some(id), true) = (id, policies_ok) {
                self.unique(&mut seen, &id, format!("{p}.id"));
                security_groups.push(SecurityGroup {
                    id,
                    name: g.name.clone(),
                    description: g.description.clone(),
                    policies,
                });
            }
        }

        let mut instances: Vec<Instance> = Vec::new();
        let mut seen = HashSet::new();
        let mut ip_owner: HashMap<IpAddr, String> = HashMap::new();
        let mut per_group: HashMap<String, usize> = HashMap::new();
        for (i, inst) in f.instances.iter().enumerate() {
            let p = format!("instances[{i}]");
            let id = self.ok(
                || format!("{p}.id"),
                InstanceId::parse_field("id", &inst.id),
            );
            let mut private_ips = Vec::new();
            for (j, ip) in inst.private_ips.iter().enumerate() {
                let ipp = format!("{p}.private_ips[{j}]");
                match ip.trim().parse::<IpAddr>() {
                    Ok(addr) => {
                        if let Some(owner) = ip_owner.insert(addr, inst.id.clone()) {
                            self.report(
                                ipp,
                                ModelError::new(
                                    ErrorCode::InvalidParameterValueDuplicate,
                                    format!("private_ips {ip:?}: already used by {owner}"),
                                ),
                            );
                        }
                        private_ips.push(addr);
                    }
                    Err(_) => self.report(
                        ipp,
                        ModelError::malformed("private_ips", ip, "not an IP address"),
                    ),
                }
            }
            let mut bound = Vec::new();
            for (j, g) in inst.security_groups.iter().enumerate() {
                let gp = || format!("{p}.security_groups[{j}]");
                if let Some(gid) = self.ok(gp, SecurityGroupId::parse_field("security_groups", g)) {
                    if !group_ids.contains(g) {
                        self.report(gp(), not_found("security group", g));
                    } else if bound.contains(&gid) {
                        self.report(
                            gp(),
                            ModelError::new(
                                ErrorCode::InvalidParameterValueDuplicate,
                                format!("security_groups {g:?}: bound twice"),
                            ),
                        );
                        continue;
                    }
                    *per_group.entry(g.clone()).or_default() += 1;
                    bound.push(gid);
                }
            }
            if bound.len() > limits.groups_per_instance {
                self.report(
                    format!("{p}.security_groups"),
                    ModelError::new(
                        ErrorCode::LimitExceededAssociateUsgLimitExceeded,
                        format!(
                            "security_groups: {} groups bound, the limit is {}",
                            bound.len(),
                            limits.groups_per_instance
                        ),
                    ),
                );
            }
            if let Some(id) = id {
                self.unique(&mut seen, &id, format!("{p}.id"));
                instances.push(Instance {
                    id,
                    name: inst.name.clone(),
                    private_ips,
                    security_groups: bound,
                });
            }
        }
        for (i, g) in f.security_groups.iter().enumerate() {
            let n = per_group.get(&g.id).copied().unwrap_or(0);
            if n > limits.instances_per_group {
                self.report(
                    format!("security_groups[{i}].id"),
                    ModelError::new(
                        ErrorCode::LimitExceeded,
                        format!(
                            "id {:?}: bound to {n} instances, the limit is {}",
                            g.id, limits.instances_per_group
                        ),
                    ),
                );
            }
        }

        let cluster_ids: HashSet<String> = f.clusters.iter().map(|c| c.id.clone()).collect();
        let instance_ids: HashSet<String> = f.instances.iter().map(|i| i.id.clone()).collect();
        let mut clusters = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in f.clusters.iter().enumerate() {
            let p = format!("clusters[{i}]");
            let id = self.ok(|| format!("{p}.id"), ClusterId::parse_field("id", &c.id));
            let cluster_cidr = self.ok(
                || format!("{p}.cluster_cidr"),
                Cidr::parse_any("cluster_cidr", &c.cluster_cidr),
            );
            let container_cidr = self.ok(
                || format!("{p}.container_cidr"),
                Cidr::parse_any("container_cidr", &c.container_cidr),
            );
            let members = |field: &str, list: &[String], v: &mut Self| {
                let mut out = Vec::new();
                for (j, n) in list.iter().enumerate() {
                    let np = || format!("{p}.{field}[{j}]");
                    if let Some(nid) = v.ok(np, InstanceId::parse_field(field, n)) {
                        if !instance_ids.contains(n) {
                            v.report(np(), not_found("instance", n));
                        }
                        out.push(nid);
                    }
                }
                out
            };
            let nodes = members("nodes", &c.nodes, self);
            let masters = members("masters", &c.masters, self);
            let mut peers = Vec::new();
            for (j, n) in c.peers.iter().enumerate() {
                let np = || format!("{p}.peers[{j}]");
                if let Some(pid) = self.ok(np, ClusterId::parse_field("peers", n)) {
                    if !cluster_ids.contains(n) {
                        self.report(np(), not_found("cluster", n));
                    }
                    peers.push(pid);
                }
            }
            let cidrs = |field: &str, list: &[String], v: &mut Self| {
                list.iter()
                    .enumerate()
                    .filter_map(|(j, s)| {
                        v.ok(|| format!("{p}.{field}[{j}]"), Cidr::parse_any(field, s))
                    })
                    .collect::<Vec<_>>()
            };
            let ssh_sources = cidrs("ssh_sources", &c.ssh_sources, self);
            let nodeport_sources = cidrs("nodeport_sources", &c.nodeport_sources, self);
            if let (Some(id), Some(cluster_cidr), Some(container_cidr)) =
                (id, cluster_cidr, container_cidr)
            {
                self.unique(&mut seen, &id, format!("{p}.id"));
                clusters.push(Cluster {
                    id,
                    name: c.name.clone(),
                    cluster_cidr,
                    container_cidr,
                    nodes,
                    masters,
                    peers,
                    ssh_sources,
                    nodeport_sources,
                });
            }
        }

        Fleet {
            security_groups,
            address_templates,
            address_template_groups,
            service_templates,
            service_template_groups,
            instances,
            clusters,
            limits,
            lines: LineIndex::default(),
        }
    }

    fn policy_set(
        &mut self,
        p: &str,
        w: &wire::SecurityGroupPolicySet,
        limits: &Limits,
    ) -> (PolicySet, bool) {
        let (set, errors) = check_policy_set_partial(w, limits);
        let ok = errors.is_empty();
        for (sub, e) in errors {
            self.report(format!("{p}.policies{sub}"), e);
        }
        (set, ok)
    }

    #[allow(clippy::too_many_arguments)]
    fn references(
        &mut self,
        p: &str,
        set: &wire::SecurityGroupPolicySet,
        groups: &HashSet<String>,
        ats: &[AddressTemplate],
        atgs: &[AddressTemplateGroup],
        sts: &[ServiceTemplate],
        stgs: &[ServiceTemplateGroup],
    ) {
        for dir in Direction::BOTH {
            let list = match dir {
                Direction::Ingress => &set.ingress,
                Direction::Egress => &set.egress,
            };
            // Positions are those of the file; invalid rules were reported already.
            let valid = list
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, w)| crate::policy::Policy::from_wire(w).ok().map(|p| (i, p)));
            for (i, rule) in valid {
                let rule = &rule;
                let rp = format!("{p}.policies.{}[{i}]", dir.wire_name());
                match &rule.peer {
                    Peer::SecurityGroup(id) if !groups.contains(id.as_str()) => self.report(
                        format!("{rp}.SecurityGroupId"),
                        not_found("security group", id.as_str()),
                    ),
                    Peer::AddressTemplate(id) if !ats.iter().any(|t| &t.id == id) => self.report(
                        format!("{rp}.AddressTemplate"),
                        not_found("address template", id.as_str()),
                    ),
                    Peer::AddressTemplateGroup(id) if !atgs.iter().any(|t| &t.id == id) => self
                        .report(
                            format!("{rp}.AddressTemplate"),
                            not_found("address template group", id.as_str()),
                        ),
                    _ => {}
                }
                match &rule.service {
                    Service::Template(id) if !sts.iter().any(|t| &t.id == id) => self.report(
                        format!("{rp}.ServiceTemplate"),
                        not_found("service template", id.as_str()),
                    ),
                    Service::TemplateGroup(id) if !stgs.iter().any(|t| &t.id == id) => self.report(
                        format!("{rp}.ServiceTemplate"),
                        not_found("service template group", id.as_str()),
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// Validates a policy set against the per-group limits. Errors come with a
/// sub-path such as `.Ingress[2]` (or `` for the whole set); every bad rule
/// is reported, not just the first.
pub fn check_policy_set(
    w: &wire::SecurityGroupPolicySet,
    limits: &Limits,
) -> Result<PolicySet, Vec<(String, ModelError)>> {
    let (set, errors) = check_policy_set_partial(w, limits);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// The valid rules of `w`, and the problems of the others.
fn check_policy_set_partial(
    w: &wire::SecurityGroupPolicySet,
    limits: &Limits,
) -> (PolicySet, Vec<(String, ModelError)>) {
    let mut errors = Vec::new();
    let mut set = PolicySet::default();
    if let Some(v) = &w.version {
        match crate::policy::parse_version("Version", v) {
            Ok(n) => set.version = Some(n),
            Err(e) => errors.push((".Version".to_string(), e)),
        }
    }
    for dir in Direction::BOTH {
        let list = match dir {
            Direction::Ingress => &w.ingress,
            Direction::Egress => &w.egress,
        };
        let list = list.as_deref().unwrap_or_default();
        if list.len() > limits.rules_per_direction {
            errors.push((
                format!(".{}", dir.wire_name()),
                ModelError::new(
                    ErrorCode::LimitExceededSecurityGroupPolicySet,
                    format!(
                        "{}: {} rules, the limit is {} per direction",
                        dir.wire_name(),
                        list.len(),
                        limits.rules_per_direction
                    ),
                ),
            ));
        }
        for (i, rule) in list.iter().enumerate() {
            match crate::policy::Policy::from_wire(rule) {
                Ok(p) => match dir {
                    Direction::Ingress => set.ingress.push(p),
                    Direction::Egress => set.egress.push(p),
                },
                Err(e) => {
                    let field = e
                        .message()
                        .split([' ', ':'])
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let sub = if field.is_empty() {
                        format!(".{}[{i}]", dir.wire_name())
                    } else {
                        format!(".{}[{i}].{field}", dir.wire_name())
                    };
                    errors.push((sub, e));
                }
            }
        }
    }
    let references = set
        .ingress
        .iter()
        .chain(&set.egress)
        .filter(|p| matches!(p.peer, Peer::SecurityGroup(_)))
        .count();
    if references > limits.references_per_group {
        errors.push((
            String::new(),
            ModelError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "SecurityGroupId: {references} rules reference security groups, the limit is {} per group",
                    limits.references_per_group
                ),
            ),
        ));
    }
    (set, errors)
}

fn not_found(kind: &str, id: &str) -> ModelError {
    ModelError::new(
        ErrorCode::ResourceNotFound,
        format!("{kind} {id:?} is not declared in this file"),
    )
}
