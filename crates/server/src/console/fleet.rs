//! The session account's fleet, read through the API's `Describe*` actions
//! in-process (as `palisade export` reads it over HTTP), for the findings,
//! reachability and change-preview pages.

use super::Caller;
use crate::error::ApiError;
use palisade_model::fleet::{
    AddressTemplateEntry, AddressTemplateGroupEntry, ClusterEntry, GroupEntry, InstanceEntry,
    ServiceTemplateEntry, ServiceTemplateGroupEntry,
};
use palisade_model::{wire, FleetFile, PolicySet};
use serde_json::{json, Value};

/// Every item of a paginated `Describe*` action.
pub fn describe_all(
    caller: &Caller<'_>,
    action: &str,
    set: &str,
    numeric_paging: bool,
) -> Result<Vec<Value>, ApiError> {
    const PAGE: usize = 100;
    let mut out = Vec::new();
    loop {
        let (offset, limit) = if numeric_paging {
            (json!(out.len()), json!(PAGE))
        } else {
            (json!(out.len().to_string()), json!(PAGE.to_string()))
        };
        let page = caller.call(action, json!({ "Offset": offset, "Limit": limit }))?;
        let items = page
            .get(set)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let total = page.get("TotalCount").and_then(Value::as_u64).unwrap_or(0);
        let got = items.len();
        out.extend(items);
        if got == 0 || out.len() as u64 >= total {
            return Ok(out);
        }
    }
}

/// A group's rules as the fleet file holds them (compact, with `Version`).
pub fn compact(
    raw: &wire::SecurityGroupPolicySet,
) -> Result<wire::SecurityGroupPolicySet, ApiError> {
    let set =
        PolicySet::from_wire(raw).map_err(|e| ApiError::internal(format!("stored rule: {e}")))?;
    Ok(wire::SecurityGroupPolicySet {
        version: raw.version.clone(),
        ingress: Some(set.ingress.iter().map(|p| p.to_wire_compact()).collect()),
        egress: Some(set.egress.iter().map(|p| p.to_wire_compact()).collect()),
        policy_statistics: None,
    })
}

/// How often [`export`] reports while reading groups' rules.
const PROGRESS_EVERY: usize = 100;

/// The account's groups, templates, instances and clusters, saying how far
/// the reading got to `progress` (as a sentence) every [`PROGRESS_EVERY`]
/// groups and between kinds of resources; stops with an error when
/// `progress` answers `false` (nobody is listening any more).
pub fn export(
    caller: &Caller<'_>,
    progress: &mut dyn FnMut(&str) -> bool,
) -> Result<FleetFile, ApiError> {
    let mut file = FleetFile::default();
    let mut say = |text: &str| {
        if progress(text) {
            Ok(())
        } else {
            Err(ApiError::internal("the browser went away"))
        }
    };
    say("Reading the security groups.")?;
    let groups = describe_all(caller, "DescribeSecurityGroups", "SecurityGroupSet", false)?;
    let count = groups.len();
    for (n, g) in groups.into_iter().enumerate() {
        if n % PROGRESS_EVERY == 0 && n > 0 {
            say(&format!(
                "Read the rules of {n} of {count} security groups."
            ))?;
        }
        let id = text(&g, "SecurityGroupId");
        let answer = caller.call(
            "DescribeSecurityGroupPolicies",
            json!({ "SecurityGroupId": id }),
        )?;
        let raw: wire::SecurityGroupPolicySet = serde_json::from_value(
            answer
                .get("SecurityGroupPolicySet")
                .cloned()
                .unwrap_or_default(),
        )
        .map_err(ApiError::internal)?;
        file.security_groups.push(GroupEntry {
            id,
            name: text(&g, "SecurityGroupName"),
            description: text(&g, "SecurityGroupDesc"),
            policies: compact(&raw)?,
        });
    }
    say(&format!(
        "Read the rules of {count} security groups; reading templates, instances and clusters."
    ))?;
    for t in describe_all(
        caller,
        "DescribeAddressTemplates",
        "AddressTemplateSet",
        false,
    )? {
        file.address_templates.push(AddressTemplateEntry {
            id: text(&t, "AddressTemplateId"),
            name: text(&t, "AddressTemplateName"),
            addresses: strings(&t, "AddressSet"),
        });
    }
    for t in describe_all(
        caller,
        "DescribeAddressTemplateGroups",
        "AddressTemplateGroupSet",
        false,
    )? {
        file.address_template_groups
            .push(AddressTemplateGroupEntry {
                id: text(&t, "AddressTemplateGroupId"),
                name: text(&t, "AddressTemplateGroupName"),
                templates: strings(&t, "AddressTemplateIdSet"),
            });
    }
    for t in describe_all(
        caller,
        "DescribeServiceTemplates",
        "ServiceTemplateSet",
        false,
    )? {
        file.service_templates.push(ServiceTemplateEntry {
            id: text(&t, "ServiceTemplateId"),
            name: text(&t, "ServiceTemplateName"),
            services: strings(&t, "ServiceSet"),
        });
    }
    for t in describe_all(
        caller,
        "DescribeServiceTemplateGroups",
        "ServiceTemplateGroupSet",
        false,
    )? {
        file.service_template_groups
            .push(ServiceTemplateGroupEntry {
                id: text(&t, "ServiceTemplateGroupId"),
                name: text(&t, "ServiceTemplateGroupName"),
                templates: strings(&t, "ServiceTemplateIdSet"),
            });
    }
    for i in describe_all(caller, "DescribeInstances", "InstanceSet", true)? {
        file.instances.push(InstanceEntry {
            id: text(&i, "InstanceId"),
            name: text(&i, "InstanceName"),
            private_ips: strings(&i, "PrivateIpAddresses"),
            security_groups: strings(&i, "SecurityGroupIds"),
        });
    }
    let clusters = caller.call("DescribeClusters", json!({}))?;
    for c in clusters
        .get("ClusterSet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        file.clusters.push(ClusterEntry {
            id: text(c, "ClusterId"),
            name: text(c, "ClusterName"),
            cluster_cidr: text(c, "ClusterCidr"),
            container_cidr: text(c, "ContainerCidr"),
            nodes: strings(c, "Nodes"),
            masters: strings(c, "Masters"),
            peers: strings(c, "PeerClusters"),
            ssh_sources: strings(c, "SshSources"),
            nodeport_sources: strings(c, "NodePortSources"),
        });
    }
    Ok(file)
}

/// A string field, empty when absent.
pub fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A list-of-strings field, empty when absent.
pub fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
