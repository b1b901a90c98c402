//! Clusters in Palisade's own service: what the TKE profile knows about a
//! Kubernetes cluster (node and pod networks, nodes, masters, peer clusters,
//! SSH and NodePort sources), recorded so that tools such as `tke apply`,
//! `export` and `check --server` share one description. The fields are the
//! fleet file's `clusters` entries in PascalCase.

use super::cvm::check_instance_id;
use super::{map_insert, new_id, now, reply, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{bounded_list, Params};
use palisade_model::ErrorCode;
use palisade_model::{Cidr, ClusterId};
use palisade_store::ClusterRecord;
use serde_json::{json, Map, Value};

/// Most nodes in one cluster (TKE's own largest cluster size).
const MAX_NODES: usize = 5_000;
/// Most masters, peer clusters and source CIDRs in one cluster.
const MAX_SMALL_LIST: usize = 100;

fn cidrs(p: &Params, field: &str) -> Result<Vec<String>, ApiError> {
    let list = p.opt_str_list(field)?.unwrap_or_default();
    bounded_list(field, &list, MAX_SMALL_LIST)?;
    list.iter()
        .map(|c| Ok(Cidr::parse_any(field, c)?.to_string()))
        .collect()
}

fn cluster_json(c: &ClusterRecord) -> Value {
    let mut m = Map::new();
    m.insert("ClusterId".into(), json!(c.id));
    if let Value::Object(body) = &c.body {
        m.extend(body.clone());
    }
    m.insert("CreatedTime".into(), json!(c.created_time));
    m.insert("UpdatedTime".into(), json!(c.updated_time));
    Value::Object(m)
}

/// `RegisterCluster`: creates a cluster (id generated when absent) or
/// replaces the description of one that exists. Nodes and masters must be
/// registered instances of the account. `NodeSecurityGroupIds` and
/// `MasterSecurityGroupIds` (groups of the account, in binding order) are
/// what a node joining with a token is bound to; absent, those recorded
/// before are kept.
pub fn register(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[
        "ClusterId",
        "ClusterName",
        "ClusterCidr",
        "ContainerCidr",
        "Nodes",
        "Masters",
        "PeerClusters",
        "SshSources",
        "NodePortSources",
        "NodeSecurityGroupIds",
        "MasterSecurityGroupIds",
    ])?;
    let id = match p.opt_str("ClusterId")?.filter(|s| !s.is_empty()) {
        Some(id) => ClusterId::parse_field("ClusterId", &id)?.to_string(),
        None => new_id("cls-"),
    };
    let name = p.opt_str("ClusterName")?.unwrap_or_default();
    if name.chars().count() > 60 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueTooLong,
            format!("ClusterName {name:?}: longer than 60 characters"),
        ));
    }
    let cluster_cidr = Cidr::parse_any("ClusterCidr", &p.req_str("ClusterCidr")?)?.to_string();
    let container_cidr =
        Cidr::parse_any("ContainerCidr", &p.req_str("ContainerCidr")?)?.to_string();
    let nodes = p.opt_str_list("Nodes")?.unwrap_or_default();
    bounded_list("Nodes", &nodes, MAX_NODES)?;
    let masters = p.opt_str_list("Masters")?.unwrap_or_default();
    bounded_list("Masters", &masters, MAX_SMALL_LIST)?;
    for i in nodes.iter().chain(&masters) {
        check_instance_id(i)?;
    }
    let peers = p.opt_str_list("PeerClusters")?.unwrap_or_default();
    bounded_list("PeerClusters", &peers, MAX_SMALL_LIST)?;
    for c in &peers {
        ClusterId::parse_field("PeerClusters", c)?;
    }
    let mut role_groups = Vec::new();
    for field in ["NodeSecurityGroupIds", "MasterSecurityGroupIds"] {
        let list = p.opt_str_list(field)?.unwrap_or_default();
        bounded_list(field, &list, 5)?;
        for g in &list {
            super::parse_group_id(field, g)?;
        }
        role_groups.push(list);
    }
    let body = json!({
        "ClusterName": name,
        "ClusterCidr": cluster_cidr,
        "ContainerCidr": container_cidr,
        "Nodes": nodes,
        "Masters": masters,
        "PeerClusters": peers,
        "SshSources": cidrs(p, "SshSources")?,
        "NodePortSources": cidrs(p, "NodePortSources")?,
    });
    let mut body = body;
    for (field, list) in ["NodeSecurityGroupIds", "MasterSecurityGroupIds"]
        .iter()
        .zip(&role_groups)
    {
        // Absent unless recorded: descriptions made before stay as they were.
        if !list.is_empty() {
            body[*field] = json!(list);
        }
    }
    ctx.write(|tx| {
        for i in nodes.iter().chain(&masters) {
            if tx.instance(ctx.account, i)?.is_none() {
                return Err(ApiError::new(
                    ErrorCode::InvalidInstanceIdNotFound,
                    format!("instance {i:?} is not registered"),
                ));
            }
        }
        for g in role_groups.iter().flatten() {
            if tx.group(ctx.account, g)?.is_none() {
                return Err(ApiError::not_found("SecurityGroupId", g));
            }
        }
        let time = now();
        let existing = tx.cluster(ctx.account, &id)?;
        let mut body = body;
        // The groups joining nodes get are not in a fleet file: `apply` and
        // `tke apply`, which register the cluster from one, keep them.
        for field in ["NodeSecurityGroupIds", "MasterSecurityGroupIds"] {
            if !p.has(field) {
                if let Some(kept) = existing.as_ref().and_then(|c| c.body.get(field)) {
                    body[field] = kept.clone();
                }
            }
        }
        let created_time = existing.map_or_else(|| time.clone(), |c| c.created_time);
        let rec = ClusterRecord {
            id: id.clone(),
            body,
            created_time,
            updated_time: time,
        };
        tx.put_cluster(ctx.account, &rec).map_err(map_insert)
    })?;
    reply(json!({ "ClusterId": id }))
}

/// `DeregisterClusters`: `ClusterIds` -> removes them (instances stay).
pub fn deregister(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ClusterIds"])?;
    let ids = p.req_str_list("ClusterIds")?;
    for id in &ids {
        ClusterId::parse_field("ClusterIds", id)?;
    }
    ctx.write(|tx| {
        for id in &ids {
            if tx.cluster(ctx.account, id)?.is_none() {
                return Err(ApiError::not_found("ClusterIds", id));
            }
            tx.delete_cluster(ctx.account, id)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

/// `DescribeClusters`: optional `ClusterIds` -> `ClusterSet`, `TotalCount`.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ClusterIds"])?;
    let ids = p.opt_str_list("ClusterIds")?;
    let mut all = ctx.read(|tx| Ok(tx.clusters(ctx.account)?))?;
    if let Some(ids) = &ids {
        for id in ids {
            ClusterId::parse_field("ClusterIds", id)?;
            if !all.iter().any(|c| &c.id == id) {
                return Err(ApiError::not_found("ClusterIds", id));
            }
        }
        all.retain(|c| ids.contains(&c.id));
    }
    let set: Vec<Value> = all.iter().map(cluster_json).collect();
    reply(json!({ "ClusterSet": set, "TotalCount": set.len() }))
}
