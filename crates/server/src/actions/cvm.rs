//! CVM instance actions on security groups: associate (append to each
//! instance's ordered list), disassociate, `ModifyInstancesAttribute` with
//! `SecurityGroups` (replace the whole ordered list) and `DescribeInstances`.
//! CVM spells its errors differently from VPC (`InvalidInstanceId.*`,
//! `InvalidSecurityGroupId.NotFound`, `InvalidSgId.Malformed`).

use super::{now, reply, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{paginate, Params};
use palisade_model::ErrorCode;
use palisade_store::{InstanceRecord, Tx};
use serde_json::{json, Value};
use std::collections::HashSet;

const MAX_INSTANCES_PER_CALL: usize = 100;

fn instance_ids(p: &Params) -> Result<Vec<String>, ApiError> {
    let mut ids = p.req_str_list("InstanceIds")?;
    if ids.len() > MAX_INSTANCES_PER_CALL {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!(
                "InstanceIds: {} ids, at most {MAX_INSTANCES_PER_CALL}",
                ids.len()
            ),
        ));
    }
    for id in &ids {
        check_instance_id(id)?;
    }
    let mut seen = HashSet::with_capacity(ids.len());
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}

/// Checks an `ins-` id with CVM's error code.
pub(super) fn check_instance_id(id: &str) -> Result<(), ApiError> {
    palisade_model::InstanceId::parse_field("InstanceIds", id)
        .map(|_| ())
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidInstanceIdMalformed,
                e.message().to_string(),
            )
        })
}

fn check_group(tx: &dyn Tx, account: &str, field: &str, id: &str) -> Result<(), ApiError> {
    palisade_model::SecurityGroupId::parse_field(field, id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidSgIdMalformed, e.message().to_string()))?;
    if tx.group(account, id)?.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidSecurityGroupIdNotFound,
            format!("{field} {id:?}: no such security group"),
        ));
    }
    Ok(())
}

fn load_instance(tx: &dyn Tx, account: &str, id: &str) -> Result<InstanceRecord, ApiError> {
    tx.instance(account, id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidInstanceIdNotFound,
            format!("InstanceIds {id:?}: no such instance (register it with the palisade service's RegisterInstances)"),
        )
    })
}

fn check_group_lists(
    ctx: &Ctx<'_>,
    tx: &dyn Tx,
    changed: &[InstanceRecord],
) -> Result<(), ApiError> {
    for ins in changed {
        if ins.security_group_ids.len() > ctx.limits.groups_per_instance {
            return Err(ApiError::new(
                ErrorCode::LimitExceededAssociateUsgLimitExceeded,
                format!(
                    "instance {} would have {} security groups, the limit is {}",
                    ins.id,
                    ins.security_group_ids.len(),
                    ctx.limits.groups_per_instance
                ),
            ));
        }
    }
    let mut groups: Vec<&String> = changed.iter().flat_map(|i| &i.security_group_ids).collect();
    groups.sort();
    groups.dedup();
    for g in groups {
        let mut members = tx.group_instances(ctx.account, g)?;
        for ins in changed {
            members.retain(|m| m != &ins.id);
            if ins.security_group_ids.contains(g) {
                members.push(ins.id.clone());
            }
        }
        if members.len() > ctx.limits.instances_per_group {
            return Err(ApiError::new(
                ErrorCode::LimitExceededSingleUsgQuota,
                format!(
                    "security group {g} would be bound to {} instances, the limit is {}",
                    members.len(),
                    ctx.limits.instances_per_group
                ),
            ));
        }
    }
    Ok(())
}

fn one_group(p: &Params) -> Result<String, ApiError> {
    let groups = p.req_str_list("SecurityGroupIds")?;
    if groups.len() != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            "SecurityGroupIds: this action takes exactly one security group",
        ));
    }
    Ok(groups[0].clone())
}

/// `AssociateSecurityGroups`: appends the group to each instance's list.
pub fn associate(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupIds", "InstanceIds"])?;
    let group = one_group(p)?;
    let ids = instance_ids(p)?;
    ctx.write(|tx| {
        check_group(tx, ctx.account, "SecurityGroupIds", &group)?;
        let mut changed = Vec::new();
        for id in &ids {
            let mut ins = load_instance(tx, ctx.account, id)?;
            if !ins.security_group_ids.contains(&group) {
                ins.security_group_ids.push(group.clone());
                changed.push(ins);
            }
        }
        check_group_lists(ctx, tx, &changed)?;
        for ins in &changed {
            tx.update_instance(ctx.account, ins)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

/// `DisassociateSecurityGroups`: removes the group, keeping the others' order.
pub fn disassociate(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupIds", "InstanceIds"])?;
    let group = one_group(p)?;
    let ids = instance_ids(p)?;
    ctx.write(|tx| {
        check_group(tx, ctx.account, "SecurityGroupIds", &group)?;
        for id in &ids {
            let mut ins = load_instance(tx, ctx.account, id)?;
            if !ins.security_group_ids.contains(&group) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameterValue,
                    format!("instance {id} is not bound to security group {group}"),
                ));
            }
            ins.security_group_ids.retain(|g| g != &group);
            tx.update_instance(ctx.account, &ins)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

/// `ModifyInstancesAttribute`: `InstanceName` and `SecurityGroups` (the
/// whole ordered list). Other attributes are CVM-only and refused.
pub fn modify_attribute(ctx: &Ctx<'_>, p: &Params) -> Reply {
    const UNSUPPORTED: [&str; 8] = [
        "UserData",
        "CamRoleName",
        "HostName",
        "DisableApiTermination",
        "CamRoleType",
        "AutoReboot",
        "EnableJumboFrame",
        "ProjectId",
    ];
    let mut known = vec!["InstanceIds", "InstanceName", "SecurityGroups"];
    known.extend(UNSUPPORTED);
    p.allow_only(&known)?;
    if let Some(f) = UNSUPPORTED.iter().find(|f| p.has(f)) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!("{f}: Palisade manages security groups and names only"),
        ));
    }
    let ids = instance_ids(p)?;
    let name = p.opt_str("InstanceName")?;
    let groups = p.opt_str_list("SecurityGroups")?;
    if name.is_none() && groups.is_none() {
        return Err(ApiError::missing("SecurityGroups"));
    }
    if let Some(n) = &name {
        if n.chars().count() > 60 {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueTooLong,
                format!("InstanceName {n:?}: longer than 60 characters"),
            ));
        }
    }
    if let Some(gs) = &groups {
        let mut seen = HashSet::with_capacity(gs.len());
        for g in gs {
            if !seen.insert(g.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameterValueDuplicate,
                    format!("SecurityGroups: {g} is given twice"),
                ));
            }
        }
    }
    ctx.write(|tx| {
        if let Some(gs) = &groups {
            for g in gs {
                check_group(tx, ctx.account, "SecurityGroups", g)?;
            }
        }
        let mut changed = Vec::new();
        for id in &ids {
            let mut ins = load_instance(tx, ctx.account, id)?;
            if let Some(n) = &name {
                ins.name = n.clone();
            }
            if let Some(gs) = &groups {
                ins.security_group_ids = gs.clone();
            }
            changed.push(ins);
        }
        check_group_lists(ctx, tx, &changed)?;
        for ins in &changed {
            tx.update_instance(ctx.account, ins)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

/// The CVM `Instance` object (the fields Palisade knows).
pub(super) fn instance_json(i: &InstanceRecord) -> Value {
    json!({
        "InstanceId": i.id,
        "InstanceName": i.name,
        "PrivateIpAddresses": i.private_ips,
        "PublicIpAddresses": [],
        "SecurityGroupIds": i.security_group_ids,
        "CreatedTime": i.created_time,
        "InstanceState": "RUNNING",
        "Tags": [],
    })
}

/// `DescribeInstances`.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceIds", "Filters", "Offset", "Limit"])?;
    let ids = p.opt_str_list("InstanceIds")?;
    let filters = p.filters(&[
        "instance-id",
        "instance-name",
        "private-ip-address",
        "security-group-id",
    ])?;
    if ids.is_some() && !filters.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterCoexist,
            "InstanceIds and Filters exclude each other",
        ));
    }
    if let Some(ids) = &ids {
        if ids.len() > MAX_INSTANCES_PER_CALL {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueLimitExceeded,
                format!(
                    "InstanceIds: {} ids, at most {MAX_INSTANCES_PER_CALL}",
                    ids.len()
                ),
            ));
        }
        for id in ids {
            check_instance_id(id)?;
        }
    }
    let (offset, limit) = p.page(100)?;
    let mut all = ctx.read(|tx| Ok(tx.instances(ctx.account)?))?;
    if let Some(ids) = &ids {
        all.retain(|i| ids.contains(&i.id));
    }
    for f in &filters {
        all.retain(|i| {
            f.values.iter().any(|v| match f.name.as_str() {
                "instance-id" => &i.id == v,
                "instance-name" => i.name.contains(v.as_str()),
                "private-ip-address" => i.private_ips.contains(v),
                _ => i.security_group_ids.contains(v),
            })
        });
    }
    let total = all.len();
    let page: Vec<Value> = paginate(all, offset, limit)
        .iter()
        .map(instance_json)
        .collect();
    let _ = now;
    reply(json!({ "InstanceSet": page, "TotalCount": total }))
}
