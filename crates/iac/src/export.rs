//! `palisade export`: an account's groups, templates, instances and clusters, read
//! through the API, as a fleet file that `validate` accepts and that
//! round-trips through `apply` and `plan`.

use crate::IacError;
use palisade_client::Client;
use palisade_model::fleet::{
    AddressTemplateEntry, AddressTemplateGroupEntry, ClusterEntry, GroupEntry, InstanceEntry,
    ServiceTemplateEntry, ServiceTemplateGroupEntry,
};
use palisade_model::{wire, FleetFile, PolicySet};
use serde_json::{json, Value};

/// Reads everything the credentials' account holds.
pub fn export(client: &Client) -> Result<FleetFile, IacError> {
    let mut file = FleetFile::default();

    for g in client.describe_all(
        "vpc",
        "DescribeSecurityGroups",
        "SecurityGroupSet",
        json!({}),
    )? {
        let id = text(&g, "SecurityGroupId");
        let answer = client.vpc(
            "DescribeSecurityGroupPolicies",
            &json!({ "SecurityGroupId": id }),
        )?;
        let raw: wire::SecurityGroupPolicySet =
            serde_json::from_value(answer["SecurityGroupPolicySet"].clone()).map_err(|e| {
                IacError::Server(format!("DescribeSecurityGroupPolicies {id}: {e}"))
            })?;
        file.security_groups.push(GroupEntry {
            id,
            name: text(&g, "SecurityGroupName"),
            description: text(&g, "SecurityGroupDesc"),
            policies: compact(&raw)?,
        });
    }
    for t in client.describe_all(
        "vpc",
        "DescribeAddressTemplates",
        "AddressTemplateSet",
        json!({}),
    )? {
        file.address_templates.push(AddressTemplateEntry {
            id: text(&t, "AddressTemplateId"),
            name: text(&t, "AddressTemplateName"),
            addresses: strings(&t, "AddressSet"),
        });
    }
    for t in client.describe_all(
        "vpc",
        "DescribeAddressTemplateGroups",
        "AddressTemplateGroupSet",
        json!({}),
    )? {
        file.address_template_groups
            .push(AddressTemplateGroupEntry {
                id: text(&t, "AddressTemplateGroupId"),
                name: text(&t, "AddressTemplateGroupName"),
                templates: strings(&t, "AddressTemplateIdSet"),
            });
    }
    for t in client.describe_all(
        "vpc",
        "DescribeServiceTemplates",
        "ServiceTemplateSet",
        json!({}),
    )? {
        file.service_templates.push(ServiceTemplateEntry {
            id: text(&t, "ServiceTemplateId"),
            name: text(&t, "ServiceTemplateName"),
            services: strings(&t, "ServiceSet"),
        });
    }
    for t in client.describe_all(
        "vpc",
        "DescribeServiceTemplateGroups",
        "ServiceTemplateGroupSet",
        json!({}),
    )? {
        file.service_template_groups
            .push(ServiceTemplateGroupEntry {
                id: text(&t, "ServiceTemplateGroupId"),
                name: text(&t, "ServiceTemplateGroupName"),
                templates: strings(&t, "ServiceTemplateIdSet"),
            });
    }
    for i in client.describe_all("cvm", "DescribeInstances", "InstanceSet", json!({}))? {
        file.instances.push(InstanceEntry {
            id: text(&i, "InstanceId"),
            name: text(&i, "InstanceName"),
            private_ips: strings(&i, "PrivateIpAddresses"),
            security_groups: strings(&i, "SecurityGroupIds"),
        });
    }
    let clusters = client.palisade("DescribeClusters", &json!({}))?;
    for c in clusters["ClusterSet"].as_array().into_iter().flatten() {
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

/// The policy set as a person writes it: compact rules, the `Version`, no
/// statistics.
fn compact(raw: &wire::SecurityGroupPolicySet) -> Result<wire::SecurityGroupPolicySet, IacError> {
    let set = PolicySet::from_wire(raw)
        .map_err(|e| IacError::Server(format!("the server returned an invalid rule: {e}")))?;
    Ok(wire::SecurityGroupPolicySet {
        version: raw.version.clone(),
        ingress: Some(set.ingress.iter().map(|p| p.to_wire_compact()).collect()),
        egress: Some(set.egress.iter().map(|p| p.to_wire_compact()).collect()),
        policy_statistics: None,
    })
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
