//! `palisade apply`: the API calls a person would make to carry out a
//! [`Plan`], in its order. New resources' placeholder ids are replaced by
//! the ids the server assigns as they are created. Every rule write carries
//! the group's `Version`, so an edit made elsewhere in the meantime stops
//! the apply (`UnsupportedOperation.VersionMismatch`) instead of being
//! overwritten; conflicts the plan already saw stop it before any call.

use crate::plan::{Op, Plan, Step};
use crate::IacError;
use palisade_client::Client;
use serde_json::{json, Value};
use std::collections::HashMap;

/// One carried-out step: what it was and the id it ended with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Done {
    /// The step.
    #[serde(flatten)]
    pub step: Step,
    /// The resource's id on the server (for created ones, the new id).
    pub server_id: String,
}

/// Carries out `plan`; `progress` is told each step as it completes.
pub fn apply(
    client: &Client,
    plan: &Plan,
    mut progress: impl FnMut(&Done),
) -> Result<Vec<Done>, IacError> {
    if !plan.conflicts.is_empty() {
        return Err(IacError::Conflict(plan.conflicts.clone()));
    }
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut done = Vec::new();
    for step in &plan.steps {
        let server_id = run(client, &step.op, &mut ids).map_err(|e| IacError::Step {
            step: format!("{} {} {}", step.action, step.kind, step.id),
            done: done.len(),
            source: Box::new(e),
        })?;
        let d = Done {
            step: step.clone(),
            server_id,
        };
        progress(&d);
        done.push(d);
    }
    Ok(done)
}

fn run(client: &Client, op: &Op, ids: &mut HashMap<String, String>) -> Result<String, IacError> {
    let real = |ids: &HashMap<String, String>, id: &str| {
        ids.get(id).cloned().unwrap_or_else(|| id.to_string())
    };
    match op {
        Op::CreateTemplate {
            kind,
            placeholder,
            name,
            entries,
        } => {
            let entries: Vec<String> = entries.iter().map(|e| real(ids, e)).collect();
            let noun = kind.noun();
            let answer = client.vpc(
                &format!("Create{noun}"),
                &json!({ format!("{noun}Name"): name, kind.entries_field(): entries }),
            )?;
            let id = answer[noun][format!("{noun}Id")]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if id.is_empty() {
                return Err(IacError::Server(format!(
                    "Create{noun} returned no {noun}Id"
                )));
            }
            ids.insert(placeholder.clone(), id.clone());
            Ok(id)
        }
        Op::ModifyTemplate {
            kind,
            id,
            name,
            entries,
        } => {
            let entries: Vec<String> = entries.iter().map(|e| real(ids, e)).collect();
            let noun = kind.noun();
            client.vpc(
                &format!("Modify{noun}Attribute"),
                &json!({ format!("{noun}Id"): id, format!("{noun}Name"): name, kind.entries_field(): entries }),
            )?;
            Ok(id.clone())
        }
        Op::CreateGroup {
            placeholder,
            name,
            description,
        } => {
            let answer = client.vpc(
                "CreateSecurityGroup",
                &json!({ "GroupName": name, "GroupDescription": description }),
            )?;
            let id = answer["SecurityGroup"]["SecurityGroupId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if id.is_empty() {
                return Err(IacError::Server(
                    "CreateSecurityGroup returned no SecurityGroupId".into(),
                ));
            }
            ids.insert(placeholder.clone(), id.clone());
            Ok(id)
        }
        Op::ModifyGroup {
            id,
            name,
            description,
        } => {
            client.vpc(
                "ModifySecurityGroupAttribute",
                &json!({ "SecurityGroupId": id, "GroupName": name, "GroupDescription": description }),
            )?;
            Ok(id.clone())
        }
        Op::SetPolicies { id, version, set } => {
            let id = real(ids, id);
            let mut set = serde_json::to_value(set).map_err(|e| IacError::Server(e.to_string()))?;
            replace_ids(&mut set, ids);
            if let (Some(v), Some(m)) = (version, set.as_object_mut()) {
                m.insert("Version".into(), Value::from(v.clone()));
            }
            client.vpc(
                "ModifySecurityGroupPolicies",
                &json!({ "SecurityGroupId": id, "SecurityGroupPolicySet": set }),
            )?;
            Ok(id)
        }
        Op::Register { id, name, ips } => {
            let mut one = json!({ "InstanceId": id, "PrivateIpAddresses": ips });
            if !name.is_empty() {
                one["InstanceName"] = Value::from(name.clone());
            }
            client.palisade("RegisterInstances", &json!({ "Instances": [one] }))?;
            Ok(id.clone())
        }
        Op::Bind { id, name, groups } => {
            let groups: Vec<String> = groups.iter().map(|g| real(ids, g)).collect();
            let mut params = json!({ "InstanceIds": [id], "SecurityGroups": groups });
            if !name.is_empty() {
                params["InstanceName"] = Value::from(name.clone());
            }
            client.cvm("ModifyInstancesAttribute", &params)?;
            Ok(id.clone())
        }
        Op::PutCluster { cluster: c } => {
            client.palisade(
                "RegisterCluster",
                &json!({
                    "ClusterId": c.id, "ClusterName": c.name, "ClusterCidr": c.cluster_cidr,
                    "ContainerCidr": c.container_cidr, "Nodes": c.nodes, "Masters": c.masters,
                    "PeerClusters": c.peers, "SshSources": c.ssh_sources,
                    "NodePortSources": c.nodeport_sources,
                }),
            )?;
            Ok(c.id.clone())
        }
        Op::DeleteCluster { id } => {
            client.palisade("DeregisterClusters", &json!({ "ClusterIds": [id] }))?;
            Ok(id.clone())
        }
        Op::DeleteGroup { id } => {
            client.vpc("DeleteSecurityGroup", &json!({ "SecurityGroupId": id }))?;
            Ok(id.clone())
        }
        Op::DeleteTemplate { kind, id } => {
            let noun = kind.noun();
            client.vpc(
                &format!("Delete{noun}"),
                &json!({ format!("{noun}Id"): id }),
            )?;
            Ok(id.clone())
        }
        Op::Deregister { id } => {
            client.palisade("DeregisterInstances", &json!({ "InstanceIds": [id] }))?;
            Ok(id.clone())
        }
    }
}

/// Replaces every string that is a placeholder with its real id.
fn replace_ids(v: &mut Value, ids: &HashMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(r) = ids.get(s.as_str()) {
                *s = r.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_ids(x, ids)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_ids(x, ids)),
        _ => {}
    }
}
