//! `palisade plan`: what `apply` would do to make a server match a fleet
//! file, and what that does to traffic.
//!
//! Identity: a resource in the file is the server's resource with the same
//! id; failing that, the one with the same name; failing that, a new one,
//! which gets a placeholder id (`sg-new00001`) until the server assigns the
//! real one. Rules and bindings may refer to a group or template by its id
//! in the file or by its name. Resources on the server that the file does
//! not name are kept (and count in the effect) unless `prune` is set.
//!
//! Concurrency: a group's rules are written with a `Version`: the one in the
//! file when it has one (as `export` writes it), else the one read now. If the
//! server's version differs from the file's and the rules must change, the
//! plan carries a conflict and `apply` changes nothing.

use crate::IacError;
use palisade_analyze::diff::{diff, DiffReport};
use palisade_model::fleet::{
    AddressTemplateEntry, AddressTemplateGroupEntry, ClusterEntry, InstanceEntry,
    ServiceTemplateEntry, ServiceTemplateGroupEntry,
};
use palisade_model::locate::LineIndex;
use palisade_model::{wire, AddressEntry, Fleet, FleetFile, Policy, PolicySet, ServiceEntry};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// What `apply` would do, in order, and its effect on traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The steps, in the order `apply` takes them.
    pub steps: Vec<Step>,
    /// Groups whose rules changed on the server since the file's `Version`.
    pub conflicts: Vec<Conflict>,
    /// Newly accepted / newly dropped traffic per instance and direction.
    pub effect: DiffReport,
    /// The server's fleet now, as the effect was computed from it (for
    /// replaying recorded flows against it).
    #[serde(skip)]
    pub before: Fleet,
    /// The fleet after the plan is applied.
    #[serde(skip)]
    pub after: Fleet,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// One change.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    /// `security_group`, `security_group_policies`, `address_template`,
    /// `address_template_group`, `service_template`, `service_template_group`,
    /// `instance`, `instance_binding` or `cluster`.
    pub kind: &'static str,
    /// The resource's id on the server, or its placeholder.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What changes, for people.
    pub detail: String,
    /// The API call.
    #[serde(skip)]
    pub(crate) op: Op,
}

/// A group whose rules would overwrite someone else's edit.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// The group.
    pub security_group_id: String,
    /// The `Version` the file was written against.
    pub file_version: String,
    /// The server's `Version` now.
    pub server_version: String,
}

/// The four template kinds, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateKind {
    Address,
    AddressGroup,
    Service,
    ServiceGroup,
}

impl TemplateKind {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            TemplateKind::Address => "AddressTemplate",
            TemplateKind::AddressGroup => "AddressTemplateGroup",
            TemplateKind::Service => "ServiceTemplate",
            TemplateKind::ServiceGroup => "ServiceTemplateGroup",
        }
    }

    /// The request field holding the entries.
    pub(crate) fn entries_field(self) -> &'static str {
        match self {
            TemplateKind::Address => "Addresses",
            TemplateKind::AddressGroup => "AddressTemplateIds",
            TemplateKind::Service => "Services",
            TemplateKind::ServiceGroup => "ServiceTemplateIds",
        }
    }

    fn kind_name(self) -> &'static str {
        match self {
            TemplateKind::Address => "address_template",
            TemplateKind::AddressGroup => "address_template_group",
            TemplateKind::Service => "service_template",
            TemplateKind::ServiceGroup => "service_template_group",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TemplateKind::Address => "ipm-",
            TemplateKind::AddressGroup => "ipmg-",
            TemplateKind::Service => "ppm-",
            TemplateKind::ServiceGroup => "ppmg-",
        }
    }
}

/// The API calls `apply` makes; ids may be placeholders.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    CreateTemplate {
        kind: TemplateKind,
        placeholder: String,
        name: String,
        entries: Vec<String>,
    },
    ModifyTemplate {
        kind: TemplateKind,
        id: String,
        name: String,
        entries: Vec<String>,
    },
    CreateGroup {
        placeholder: String,
        name: String,
        description: String,
    },
    ModifyGroup {
        id: String,
        name: String,
        description: String,
    },
    SetPolicies {
        id: String,
        version: Option<String>,
        set: wire::SecurityGroupPolicySet,
    },
    Register {
        id: String,
        name: String,
        ips: Vec<String>,
    },
    Bind {
        id: String,
        name: String,
        groups: Vec<String>,
    },
    PutCluster {
        cluster: ClusterEntry,
    },
    DeleteCluster {
        id: String,
    },
    DeleteGroup {
        id: String,
    },
    DeleteTemplate {
        kind: TemplateKind,
        id: String,
    },
    Deregister {
        id: String,
    },
}

/// Plans `desired` against `remote` (as [`crate::export`] reads it).
pub fn plan(desired: &FleetFile, remote: &FleetFile, prune: bool) -> Result<Plan, IacError> {
    let remote_fleet = Fleet::from_file(remote, LineIndex::default())
        .map_err(|p| IacError::Server(format!("the server's state does not validate: {}", p[0])))?;

    // Identities: file label (id or name) -> id on the server or placeholder.
    let groups = Ids::new(
        "security group",
        "sg-",
        desired
            .security_groups
            .iter()
            .map(|g| (g.id.as_str(), g.name.as_str())),
        remote
            .security_groups
            .iter()
            .map(|g| (g.id.as_str(), g.name.as_str())),
    )?;
    let ats = Ids::new(
        "address template",
        TemplateKind::Address.prefix(),
        desired
            .address_templates
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
        remote
            .address_templates
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
    )?;
    let atgs = Ids::new(
        "address template group",
        TemplateKind::AddressGroup.prefix(),
        desired
            .address_template_groups
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
        remote
            .address_template_groups
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
    )?;
    let sts = Ids::new(
        "service template",
        TemplateKind::Service.prefix(),
        desired
            .service_templates
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
        remote
            .service_templates
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
    )?;
    let stgs = Ids::new(
        "service template group",
        TemplateKind::ServiceGroup.prefix(),
        desired
            .service_template_groups
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
        remote
            .service_template_groups
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str())),
    )?;

    // The file with every label replaced by its id.
    let mut mapped = desired.clone();
    for (i, g) in mapped.security_groups.iter_mut().enumerate() {
        g.id = groups.final_ids[i].clone();
        for list in [&mut g.policies.ingress, &mut g.policies.egress]
            .into_iter()
            .flatten()
        {
            for rule in list.iter_mut() {
                if let Some(s) = rule.security_group_id.as_mut() {
                    *s = groups.resolve(s);
                }
                if let Some(t) = rule.address_template.as_mut() {
                    t.address_id = ats.resolve(&t.address_id);
                    t.address_group_id = atgs.resolve(&t.address_group_id);
                }
                if let Some(t) = rule.service_template.as_mut() {
                    t.service_id = sts.resolve(&t.service_id);
                    t.service_group_id = stgs.resolve(&t.service_group_id);
                }
            }
        }
    }
    for (i, t) in mapped.address_templates.iter_mut().enumerate() {
        t.id = ats.final_ids[i].clone();
    }
    for (i, t) in mapped.address_template_groups.iter_mut().enumerate() {
        t.id = atgs.final_ids[i].clone();
        t.templates = t.templates.iter().map(|m| ats.resolve(m)).collect();
    }
    for (i, t) in mapped.service_templates.iter_mut().enumerate() {
        t.id = sts.final_ids[i].clone();
    }
    for (i, t) in mapped.service_template_groups.iter_mut().enumerate() {
        t.id = stgs.final_ids[i].clone();
        t.templates = t.templates.iter().map(|m| sts.resolve(m)).collect();
    }
    for inst in &mut mapped.instances {
        inst.security_groups = inst
            .security_groups
            .iter()
            .map(|g| groups.resolve(g))
            .collect();
    }

    // What the server will hold afterwards: the file, plus (without
    // `prune`) whatever the server has that the file does not name.
    let mut after = mapped.clone();
    if !prune {
        keep_unnamed(
            &mut after.security_groups,
            &remote.security_groups,
            &groups.matched,
            |g| &g.id,
        );
        keep_unnamed(
            &mut after.address_templates,
            &remote.address_templates,
            &ats.matched,
            |t| &t.id,
        );
        keep_unnamed(
            &mut after.address_template_groups,
            &remote.address_template_groups,
            &atgs.matched,
            |t| &t.id,
        );
        keep_unnamed(
            &mut after.service_templates,
            &remote.service_templates,
            &sts.matched,
            |t| &t.id,
        );
        keep_unnamed(
            &mut after.service_template_groups,
            &remote.service_template_groups,
            &stgs.matched,
            |t| &t.id,
        );
        let named: HashSet<String> = mapped.instances.iter().map(|i| i.id.clone()).collect();
        keep_unnamed(&mut after.instances, &remote.instances, &named, |i| &i.id);
        let named: HashSet<String> = mapped.clusters.iter().map(|c| c.id.clone()).collect();
        keep_unnamed(&mut after.clusters, &remote.clusters, &named, |c| &c.id);
    }
    let after_fleet = Fleet::from_file(&after, LineIndex::default()).map_err(IacError::Invalid)?;

    let mut steps = Vec::new();
    let mut conflicts = Vec::new();
    let remote_group = |id: &str| {
        remote_fleet
            .security_groups
            .iter()
            .find(|g| g.id.as_str() == id)
    };

    template_steps(
        &mut steps,
        TemplateKind::Address,
        &mapped.address_templates,
        &remote.address_templates,
        &ats.new,
        |t: &AddressTemplateEntry| (&t.id, &t.name, normalize_addresses(&t.addresses)),
    );
    template_steps(
        &mut steps,
        TemplateKind::Service,
        &mapped.service_templates,
        &remote.service_templates,
        &sts.new,
        |t: &ServiceTemplateEntry| (&t.id, &t.name, normalize_services(&t.services)),
    );
    template_steps(
        &mut steps,
        TemplateKind::AddressGroup,
        &mapped.address_template_groups,
        &remote.address_template_groups,
        &atgs.new,
        |t: &AddressTemplateGroupEntry| (&t.id, &t.name, t.templates.clone()),
    );
    template_steps(
        &mut steps,
        TemplateKind::ServiceGroup,
        &mapped.service_template_groups,
        &remote.service_template_groups,
        &stgs.new,
        |t: &ServiceTemplateGroupEntry| (&t.id, &t.name, t.templates.clone()),
    );

    // Every new group is created before any rules are written, because a
    // rule may reference a group created in the same run (two new groups
    // may even reference each other), and the server refuses a rule whose
    // group does not exist yet. Templates and template groups come before
    // both: a template group only holds templates, and rules hold either.
    let mut fills = Vec::new();
    for (i, g) in mapped.security_groups.iter().enumerate() {
        let wanted = after_fleet
            .group(&g.id.parse().map_err(|e| IacError::Server(format!("{e}")))?)
            .map(|s| s.policies.clone())
            .unwrap_or_default();
        let rules = |set: &PolicySet| -> Vec<wire::SecurityGroupPolicy> {
            set.ingress
                .iter()
                .chain(&set.egress)
                .map(Policy::to_wire_compact)
                .collect()
        };
        let wire_set = wire::SecurityGroupPolicySet {
            version: None,
            ingress: Some(wanted.ingress.iter().map(Policy::to_wire_compact).collect()),
            egress: Some(wanted.egress.iter().map(Policy::to_wire_compact).collect()),
            policy_statistics: None,
        };
        if groups.new[i] {
            steps.push(step(
                "create",
                "security_group",
                &g.id,
                &g.name,
                "new group".into(),
                Op::CreateGroup {
                    placeholder: g.id.clone(),
                    name: g.name.clone(),
                    description: g.description.clone(),
                },
            ));
            if !wanted.ingress.is_empty() || !wanted.egress.is_empty() {
                fills.push(step(
                    "update",
                    "security_group_policies",
                    &g.id,
                    &g.name,
                    format!(
                        "{} ingress and {} egress rules",
                        wanted.ingress.len(),
                        wanted.egress.len()
                    ),
                    Op::SetPolicies {
                        id: g.id.clone(),
                        version: None,
                        set: wire_set,
                    },
                ));
            }
            continue;
        }
        let Some(have) = remote_group(&g.id) else {
            continue;
        };
        if have.name != g.name || have.description != g.description {
            fills.push(step(
                "update",
                "security_group",
                &g.id,
                &g.name,
                format!(
                    "name {:?} -> {:?}, description {:?} -> {:?}",
                    have.name, g.name, have.description, g.description
                ),
                Op::ModifyGroup {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    description: g.description.clone(),
                },
            ));
        }
        if !same_rules(&have.policies, &wanted) {
            let server_version = have.policies.version.unwrap_or(0).to_string();
            let version = g
                .policies
                .version
                .clone()
                .unwrap_or_else(|| server_version.clone());
            if version != server_version {
                conflicts.push(Conflict {
                    security_group_id: g.id.clone(),
                    file_version: version.clone(),
                    server_version,
                });
            }
            let (old, new) = (rules(&have.policies), rules(&wanted));
            fills.push(step(
                "update",
                "security_group_policies",
                &g.id,
                &g.name,
                format!(
                    "{} rule(s) -> {} rule(s) ({} ingress, {} egress)",
                    old.len(),
                    new.len(),
                    wanted.ingress.len(),
                    wanted.egress.len()
                ),
                Op::SetPolicies {
                    id: g.id.clone(),
                    version: Some(version),
                    set: wire_set,
                },
            ));
        }
    }
    steps.extend(fills);

    for inst in &mapped.instances {
        match remote.instances.iter().find(|r| r.id == inst.id) {
            None => {
                steps.push(step(
                    "create",
                    "instance",
                    &inst.id,
                    &inst.name,
                    format!("register with {}", inst.private_ips.join(", ")),
                    Op::Register {
                        id: inst.id.clone(),
                        name: inst.name.clone(),
                        ips: inst.private_ips.clone(),
                    },
                ));
                if !inst.security_groups.is_empty() {
                    steps.push(bind_step(inst, &[]));
                }
            }
            Some(have) => {
                if ip_set(&have.private_ips) != ip_set(&inst.private_ips) {
                    return Err(IacError::Unsupported(format!(
                        "instance {}: private IPs {:?} on the server, {:?} in the file; the API cannot change them in place (DeregisterInstances it, then apply)",
                        inst.id, have.private_ips, inst.private_ips
                    )));
                }
                if have.security_groups != inst.security_groups
                    || (!inst.name.is_empty() && have.name != inst.name)
                {
                    steps.push(bind_step(inst, &have.security_groups));
                }
            }
        }
    }

    for c in &mapped.clusters {
        let want = normalize_cluster(c);
        match remote.clusters.iter().find(|r| r.id == c.id) {
            None => steps.push(step(
                "create",
                "cluster",
                &c.id,
                &c.name,
                format!(
                    "cluster {} / container {}, {} node(s), {} master(s)",
                    want.cluster_cidr,
                    want.container_cidr,
                    want.nodes.len(),
                    want.masters.len()
                ),
                Op::PutCluster { cluster: want },
            )),
            Some(have) if normalize_cluster(have) != want => steps.push(step(
                "update",
                "cluster",
                &c.id,
                &c.name,
                "cluster description changed".into(),
                Op::PutCluster { cluster: want },
            )),
            Some(_) => {}
        }
    }

    if prune {
        let clusters: HashSet<&str> = mapped.clusters.iter().map(|c| c.id.as_str()).collect();
        for r in remote
            .clusters
            .iter()
            .filter(|r| !clusters.contains(r.id.as_str()))
        {
            steps.push(step(
                "delete",
                "cluster",
                &r.id,
                &r.name,
                "not in the file".into(),
                Op::DeleteCluster { id: r.id.clone() },
            ));
        }
        let named: HashSet<&str> = mapped.instances.iter().map(|i| i.id.as_str()).collect();
        for r in remote
            .instances
            .iter()
            .filter(|r| !named.contains(r.id.as_str()))
        {
            steps.push(step(
                "delete",
                "instance",
                &r.id,
                &r.name,
                "deregister".into(),
                Op::Deregister { id: r.id.clone() },
            ));
        }
        for r in remote
            .security_groups
            .iter()
            .filter(|r| !groups.matched.contains(&r.id))
        {
            steps.push(step(
                "delete",
                "security_group",
                &r.id,
                &r.name,
                "not in the file".into(),
                Op::DeleteGroup { id: r.id.clone() },
            ));
        }
        for (kind, ids) in [
            (
                TemplateKind::AddressGroup,
                remote
                    .address_template_groups
                    .iter()
                    .filter(|t| !atgs.matched.contains(&t.id))
                    .map(|t| (t.id.clone(), t.name.clone()))
                    .collect::<Vec<_>>(),
            ),
            (
                TemplateKind::ServiceGroup,
                remote
                    .service_template_groups
                    .iter()
                    .filter(|t| !stgs.matched.contains(&t.id))
                    .map(|t| (t.id.clone(), t.name.clone()))
                    .collect(),
            ),
            (
                TemplateKind::Address,
                remote
                    .address_templates
                    .iter()
                    .filter(|t| !ats.matched.contains(&t.id))
                    .map(|t| (t.id.clone(), t.name.clone()))
                    .collect(),
            ),
            (
                TemplateKind::Service,
                remote
                    .service_templates
                    .iter()
                    .filter(|t| !sts.matched.contains(&t.id))
                    .map(|t| (t.id.clone(), t.name.clone()))
                    .collect(),
            ),
        ] {
            for (id, name) in ids {
                steps.push(step(
                    "delete",
                    kind.kind_name(),
                    &id,
                    &name,
                    "not in the file".into(),
                    Op::DeleteTemplate {
                        kind,
                        id: id.clone(),
                    },
                ));
            }
        }
    }

    let effect =
        diff(&remote_fleet, &after_fleet, None).map_err(|e| IacError::Server(e.to_string()))?;
    Ok(Plan {
        steps,
        conflicts,
        effect,
        before: remote_fleet,
        after: after_fleet,
    })
}

fn step(
    action: &'static str,
    kind: &'static str,
    id: &str,
    name: &str,
    detail: String,
    op: Op,
) -> Step {
    Step {
        action,
        kind,
        id: id.to_string(),
        name: name.to_string(),
        detail,
        op,
    }
}

fn bind_step(inst: &InstanceEntry, before: &[String]) -> Step {
    step(
        "update",
        "instance_binding",
        &inst.id,
        &inst.name,
        format!(
            "groups [{}] -> [{}]",
            before.join(", "),
            inst.security_groups.join(", ")
        ),
        Op::Bind {
            id: inst.id.clone(),
            name: inst.name.clone(),
            groups: inst.security_groups.clone(),
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn template_steps<T>(
    steps: &mut Vec<Step>,
    kind: TemplateKind,
    desired: &[T],
    remote: &[T],
    new: &[bool],
    view: impl Fn(&T) -> (&String, &String, Vec<String>),
) {
    for (i, t) in desired.iter().enumerate() {
        let (id, name, entries) = view(t);
        if new.get(i).copied().unwrap_or(false) {
            steps.push(step(
                "create",
                kind.kind_name(),
                id,
                name,
                entries.join(", "),
                Op::CreateTemplate {
                    kind,
                    placeholder: id.clone(),
                    name: name.clone(),
                    entries,
                },
            ));
            continue;
        }
        let Some(have) = remote.iter().find(|r| view(r).0 == id) else {
            continue;
        };
        let (_, have_name, have_entries) = view(have);
        if have_name != name || have_entries != entries {
            steps.push(step(
                "update",
                kind.kind_name(),
                id,
                name,
                format!("[{}] -> [{}]", have_entries.join(", "), entries.join(", ")),
                Op::ModifyTemplate {
                    kind,
                    id: id.clone(),
                    name: name.clone(),
                    entries,
                },
            ));
        }
    }
}

/// Whether two policy sets hold the same rules in the same order.
fn same_rules(a: &PolicySet, b: &PolicySet) -> bool {
    let eq = |x: &[Policy], y: &[Policy]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.same_rule(q))
    };
    eq(&a.ingress, &b.ingress) && eq(&a.egress, &b.egress)
}

fn normalize_addresses(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|a| {
            AddressEntry::parse_field("addresses", a).map_or_else(|_| a.clone(), |e| e.to_string())
        })
        .collect()
}

fn normalize_services(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| {
            ServiceEntry::parse_field("services", s).map_or_else(|_| s.clone(), |e| e.to_string())
        })
        .collect()
}

/// A cluster with its CIDRs in canonical form, for comparison and writing.
fn normalize_cluster(c: &ClusterEntry) -> ClusterEntry {
    let cidr = |s: &String| {
        palisade_model::Cidr::parse_any("cidr", s).map_or_else(|_| s.clone(), |c| c.to_string())
    };
    ClusterEntry {
        cluster_cidr: cidr(&c.cluster_cidr),
        container_cidr: cidr(&c.container_cidr),
        ssh_sources: c.ssh_sources.iter().map(cidr).collect(),
        nodeport_sources: c.nodeport_sources.iter().map(cidr).collect(),
        ..c.clone()
    }
}

fn ip_set(list: &[String]) -> HashSet<IpAddr> {
    list.iter().filter_map(|s| s.trim().parse().ok()).collect()
}

fn keep_unnamed<T: Clone>(
    into: &mut Vec<T>,
    remote: &[T],
    named: &HashSet<String>,
    id: impl Fn(&T) -> &String,
) {
    into.extend(remote.iter().filter(|r| !named.contains(id(r))).cloned());
}

/// Matching of one kind of resource between file and server.
struct Ids {
    /// Per file entry: its id on the server, or a placeholder.
    final_ids: Vec<String>,
    /// Per file entry: whether it is to be created.
    new: Vec<bool>,
    /// Server ids the file names.
    matched: HashSet<String>,
    /// File label (id or unique name) -> final id.
    labels: HashMap<String, String>,
}

impl Ids {
    /// Matches file entries to server ones: every entry whose id the server
    /// has first, then the rest by name. Two server resources of the same
    /// name that an entry could mean are an error rather than a guess (a
    /// guess would change one and leave the other, or create a third).
    fn new<'a>(
        kind: &str,
        prefix: &str,
        desired: impl Iterator<Item = (&'a str, &'a str)>,
        remote: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<Ids, IacError> {
        let desired: Vec<(&str, &str)> = desired.collect();
        let mut name_count: HashMap<&str, usize> = HashMap::new();
        for (_, n) in &desired {
            *name_count.entry(n).or_default() += 1;
        }
        let mut ids = Ids {
            final_ids: Vec::new(),
            new: Vec::new(),
            matched: HashSet::new(),
            labels: HashMap::new(),
        };
        let by_id: Vec<Option<&str>> = desired
            .iter()
            .map(|(id, _)| {
                (!id.is_empty())
                    .then(|| remote.clone().find(|(r, _)| r == id).map(|(r, _)| r))
                    .flatten()
            })
            .collect();
        ids.matched
            .extend(by_id.iter().flatten().map(|r| r.to_string()));
        let mut placeholders = 0;
        for ((id, name), by_id) in desired.iter().zip(by_id) {
            let found = match by_id {
                Some(r) => Some(r),
                None if name.is_empty() => None,
                None => {
                    let same: Vec<&str> = remote
                        .clone()
                        .filter(|(r, n)| n == name && !ids.matched.contains(*r))
                        .map(|(r, _)| r)
                        .collect();
                    if same.len() > 1 {
                        return Err(IacError::Ambiguous {
                            kind: kind.to_string(),
                            name: name.to_string(),
                            ids: same.iter().map(|r| r.to_string()).collect(),
                        });
                    }
                    same.first().copied()
                }
            };
            let final_id = match found {
                Some(r) => {
                    ids.matched.insert(r.to_string());
                    ids.new.push(false);
                    r.to_string()
                }
                None => {
                    placeholders += 1;
                    ids.new.push(true);
                    format!("{prefix}new{placeholders:05}")
                }
            };
            if !id.is_empty() {
                ids.labels.insert(id.to_string(), final_id.clone());
            }
            if !name.is_empty() && name_count.get(name) == Some(&1) {
                ids.labels
                    .entry(name.to_string())
                    .or_insert_with(|| final_id.clone());
            }
            ids.final_ids.push(final_id);
        }
        Ok(ids)
    }

    /// The id a label stands for; other text is kept (an id on the server).
    fn resolve(&self, label: &str) -> String {
        self.labels
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;

    fn fleet(yaml: &str) -> FleetFile {
        palisade_model::yaml::from_str(yaml).unwrap()
    }

    const TWO_OFFICES: &str = "
address_templates:
  - {id: ipm-aaaa0001, name: office, addresses: [203.0.113.0/24]}
  - {id: ipm-aaaa0002, name: office, addresses: [198.51.100.0/24]}
";

    #[test]
    fn a_name_two_server_templates_share_is_ambiguous() {
        let file = fleet(
            "address_templates:\n  - {id: ipm-file0001, name: office, addresses: [192.0.2.0/24]}\n",
        );
        let err = plan(&file, &fleet(TWO_OFFICES), false).unwrap_err();
        let IacError::Ambiguous { kind, name, ids } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (kind.as_str(), name.as_str()),
            ("address template", "office")
        );
        assert_eq!(ids, &["ipm-aaaa0001", "ipm-aaaa0002"]);
        assert!(
            err.to_string().contains("ipm-aaaa0001, ipm-aaaa0002"),
            "{err}"
        );
    }

    #[test]
    fn an_id_settles_it_and_the_other_name_then_matches_once() {
        // The second entry has its server id; the first (whose id is the
        // file's own) can then only mean the other.
        let file = fleet(
            "address_templates:
  - {id: ipm-file0001, name: office, addresses: [203.0.113.0/24]}
  - {id: ipm-aaaa0002, name: office, addresses: [198.51.100.0/24]}
",
        );
        let p = plan(&file, &fleet(TWO_OFFICES), false).unwrap();
        assert!(p.is_empty(), "{:?}", p.steps);
    }

    #[test]
    fn a_name_two_server_groups_share_is_ambiguous() {
        let remote = fleet(
            "security_groups:
  - {id: sg-aaaa0001, name: web, policies: {Ingress: [], Egress: []}}
  - {id: sg-aaaa0002, name: web, policies: {Ingress: [], Egress: []}}
",
        );
        let file = fleet("security_groups:\n  - {id: sg-file0001, name: web, policies: {Ingress: [], Egress: []}}\n");
        let err = plan(&file, &remote, false).unwrap_err();
        assert!(
            matches!(&err, IacError::Ambiguous { kind, ids, .. } if kind == "security group" && ids == &["sg-aaaa0001", "sg-aaaa0002"]),
            "{err}"
        );
    }
}
