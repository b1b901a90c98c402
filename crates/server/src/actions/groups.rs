//! Security group resources: create (with or without rules), clone, modify,
//! delete (refused while referenced or bound), describe with filters and
//! pagination, references, association statistics and limits.

use super::{
    check_name, group_json, load_group, map_insert, new_id, now, parse_group_id, parse_rules,
    reply, set_rules, Ctx, Reply,
};
use crate::error::ApiError;
use crate::params::{bounded_list, paginate, Params};
use palisade_model::policy::Direction;
use palisade_model::wire;
use palisade_model::ErrorCode;
use palisade_store::{GroupRecord, Tx};
use serde_json::{json, Value};

/// Longest `GroupName`.
const MAX_NAME: usize = 60;
/// Longest `GroupDescription`.
const MAX_DESC: usize = 100;

fn project_id(p: &Params) -> Result<String, ApiError> {
    let project = p.opt_str("ProjectId")?.unwrap_or_else(|| "0".to_string());
    if project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::malformed(
            "ProjectId",
            &project,
            "expected a decimal project id",
        ));
    }
    Ok(project)
}

fn description(p: &Params, field: &str) -> Result<Option<String>, ApiError> {
    let d = p.opt_str(field)?;
    if let Some(d) = &d {
        if d.chars().count() > MAX_DESC {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueTooLong,
                format!("{field}: longer than {MAX_DESC} characters"),
            ));
        }
    }
    Ok(d)
}

fn check_group_quota(ctx: &Ctx<'_>, tx: &dyn Tx, project: &str) -> Result<(), ApiError> {
    let n = tx
        .groups(ctx.account)?
        .iter()
        .filter(|g| g.project_id == project)
        .count();
    if n >= ctx.limits.groups_per_project {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!(
                "project {project} has {n} security groups, the limit is {}",
                ctx.limits.groups_per_project
            ),
        ));
    }
    Ok(())
}

/// `CreateSecurityGroup` and `CreateSecurityGroupWithPolicies`.
pub fn create(ctx: &Ctx<'_>, p: &Params, with_policies: bool) -> Reply {
    let mut known = vec!["GroupName", "GroupDescription", "ProjectId", "Tags"];
    if with_policies {
        known.push("SecurityGroupPolicySet");
    }
    p.allow_only(&known)?;
    let name = p.req_str("GroupName")?;
    check_name("GroupName", &name, MAX_NAME)?;
    let desc =
        description(p, "GroupDescription")?.ok_or_else(|| ApiError::missing("GroupDescription"))?;
    let project = project_id(p)?;
    let tags = p.tags()?;
    let set: Option<wire::SecurityGroupPolicySet> = if with_policies {
        p.opt_policy_set("SecurityGroupPolicySet")?
    } else {
        None
    };
    let ingress = parse_rules(
        set.as_ref().and_then(|s| s.ingress.as_ref()),
        Direction::Ingress,
    )?;
    let egress = parse_rules(
        set.as_ref().and_then(|s| s.egress.as_ref()),
        Direction::Egress,
    )?;
    let group = ctx.write(|tx| {
        check_group_quota(ctx, tx, &project)?;
        let time = now();
        let mut g = GroupRecord {
            id: new_id("sg-"),
            name,
            description: desc,
            project_id: project.clone(),
            is_default: false,
            created_time: time.clone(),
            update_time: time,
            tags,
            version: 0,
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        set_rules(tx, ctx, &mut g, &ingress, &egress)?;
        if !g.ingress.is_empty() || !g.egress.is_empty() {
            g.version = 1;
        }
        tx.insert_group(ctx.account, &g).map_err(map_insert)?;
        Ok(g)
    })?;
    reply(json!({ "SecurityGroup": group_json(&group) }))
}

/// `DeleteSecurityGroup`: refused with `ResourceInUse` while another group's
/// rule references it or an instance is bound to it.
pub fn delete(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId"])?;
    let id = p.req_str("SecurityGroupId")?;
    ctx.write(|tx| {
        load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        // Both reasons at once, so one answer says everything to undo.
        let referrers = tx.referrers(ctx.account, &id)?;
        let bound = tx.group_instances(ctx.account, &id)?;
        let mut uses = Vec::new();
        if !referrers.is_empty() {
            uses.push(format!(
                "referenced by the rules of {}",
                referrers.join(", ")
            ));
        }
        if !bound.is_empty() {
            uses.push(format!("bound to instances {}", bound.join(", ")));
        }
        if !uses.is_empty() {
            return Err(ApiError::new(
                ErrorCode::ResourceInUse,
                format!("SecurityGroupId {id:?} is {}", uses.join(" and ")),
            ));
        }
        tx.delete_group(ctx.account, &id)?;
        Ok(())
    })?;
    reply(json!({}))
}

/// `ModifySecurityGroupAttribute`.
pub fn modify_attribute(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupId", "GroupName", "GroupDescription"])?;
    let id = p.req_str("SecurityGroupId")?;
    let name = p.opt_str("GroupName")?;
    if let Some(n) = &name {
        check_name("GroupName", n, MAX_NAME)?;
    }
    let desc = description(p, "GroupDescription")?;
    ctx.write(|tx| {
        let mut g = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        if let Some(n) = name {
            g.name = n;
        }
        if let Some(d) = desc {
            g.description = d;
        }
        g.update_time = now();
        tx.update_group(ctx.account, &g)?;
        Ok(())
    })?;
    reply(json!({}))
}

/// `CloneSecurityGroup`: a new group with the source's rules.
pub fn clone(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[
        "SecurityGroupId",
        "GroupName",
        "GroupDescription",
        "ProjectId",
        "RemoteRegion",
        "Tags",
        "IsCloneTags",
    ])?;
    let id = p.req_str("SecurityGroupId")?;
    if p.has("RemoteRegion") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            "RemoteRegion: Palisade has one region; clone within it",
        ));
    }
    let name = p.opt_str("GroupName")?;
    if let Some(n) = &name {
        check_name("GroupName", n, MAX_NAME)?;
    }
    let desc = description(p, "GroupDescription")?;
    let project = p.opt_str("ProjectId")?;
    if let Some(pr) = &project {
        if pr.is_empty() || !pr.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::malformed(
                "ProjectId",
                pr,
                "expected a decimal project id",
            ));
        }
    }
    let tags = p.tags()?;
    let clone_tags = p.opt_bool("IsCloneTags")?.unwrap_or(false);
    let group = ctx.write(|tx| {
        let src = load_group(tx, ctx.account, "SecurityGroupId", &id)?;
        let project = project.unwrap_or_else(|| src.project_id.clone());
        check_group_quota(ctx, tx, &project)?;
        let time = now();
        let mut all_tags = if clone_tags {
            src.tags.clone()
        } else {
            Vec::new()
        };
        all_tags.extend(tags);
        let g = GroupRecord {
            id: new_id("sg-"),
            name: name.unwrap_or_else(|| src.name.clone()),
            description: desc.unwrap_or_else(|| src.description.clone()),
            project_id: project,
            is_default: false,
            created_time: time.clone(),
            update_time: time,
            tags: all_tags,
            version: if src.ingress.is_empty() && src.egress.is_empty() {
                0
            } else {
                1
            },
            ingress: src.ingress.clone(),
            egress: src.egress.clone(),
        };
        tx.insert_group(ctx.account, &g).map_err(map_insert)?;
        Ok(g)
    })?;
    reply(json!({ "SecurityGroup": group_json(&group) }))
}

/// `DescribeSecurityGroups`.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[
        "SecurityGroupIds",
        "Filters",
        "Offset",
        "Limit",
        "OrderField",
        "OrderDirection",
    ])?;
    let ids = p.opt_str_list("SecurityGroupIds")?;
    let filters = p.filters(&[
        "security-group-id",
        "security-group-name",
        "project-id",
        "tag-key",
        "tag:",
        "is-default",
    ])?;
    if ids.is_some() && !filters.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterCoexist,
            "SecurityGroupIds and Filters exclude each other",
        ));
    }
    if let Some(ids) = &ids {
        if ids.len() > 100 {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueLimitExceeded,
                format!("SecurityGroupIds: {} ids, at most 100", ids.len()),
            ));
        }
        for id in ids {
            parse_group_id("SecurityGroupIds", id)?;
        }
    }
    let (offset, limit) = p.page(100)?;
    let order_field = p.opt_str("OrderField")?;
    let desc = match p
        .opt_str("OrderDirection")?
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(ApiError::malformed(
                "OrderDirection",
                other,
                "expected ASC or DESC",
            ))
        }
    };
    let mut groups = ctx.read(|tx| Ok(tx.groups(ctx.account)?))?;
    if let Some(ids) = &ids {
        for id in ids {
            if !groups.iter().any(|g| &g.id == id) {
                return Err(ApiError::not_found("SecurityGroupIds", id));
            }
        }
        groups.retain(|g| ids.contains(&g.id));
    }
    for f in &filters {
        groups.retain(|g| {
            f.values.iter().any(|v| match f.name.as_str() {
                "security-group-id" => &g.id == v,
                "security-group-name" => g.name.contains(v.as_str()),
                "project-id" => &g.project_id == v,
                "tag-key" => g.tags.iter().any(|t| &t.key == v),
                "is-default" => g.is_default.to_string() == v.to_ascii_lowercase(),
                name => {
                    let key = name.trim_start_matches("tag:");
                    g.tags.iter().any(|t| t.key == key && &t.value == v)
                }
            })
        });
    }
    match order_field.as_deref() {
        None => {}
        Some("CreatedTime") => groups.sort_by(|a, b| a.created_time.cmp(&b.created_time)),
        Some("UpdateTime") => groups.sort_by(|a, b| a.update_time.cmp(&b.update_time)),
        Some("SecurityGroupName") => groups.sort_by(|a, b| a.name.cmp(&b.name)),
        Some(other) => {
            return Err(ApiError::malformed(
                "OrderField",
                other,
                "expected CreatedTime, UpdateTime or SecurityGroupName",
            ))
        }
    }
    if desc {
        groups.reverse();
    }
    let total = groups.len();
    let page: Vec<Value> = paginate(groups, offset, limit)
        .iter()
        .map(group_json)
        .collect();
    reply(json!({ "SecurityGroupSet": page, "TotalCount": total }))
}

fn existing_ids(ctx: &Ctx<'_>, tx: &dyn Tx, p: &Params) -> Result<Vec<String>, ApiError> {
    let ids = p.req_str_list("SecurityGroupIds")?;
    bounded_list("SecurityGroupIds", &ids, 100)?;
    for id in &ids {
        load_group(tx, ctx.account, "SecurityGroupIds", id)?;
    }
    Ok(ids)
}

/// `DescribeSecurityGroupReferences`.
pub fn references(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupIds"])?;
    let set = ctx.read(|tx| {
        let mut out = Vec::new();
        for id in existing_ids(ctx, tx, p)? {
            let refs: Vec<String> = tx
                .referrers(ctx.account, &id)?
                .into_iter()
                .filter(|r| r.starts_with("sg-"))
                .collect();
            out.push(json!({ "SecurityGroupId": id, "ReferredSecurityGroupIds": refs }));
        }
        Ok(out)
    })?;
    reply(json!({ "ReferredSecurityGroupSet": set }))
}

/// `DescribeSecurityGroupAssociationStatistics`.
pub fn statistics(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SecurityGroupIds"])?;
    let set = ctx.read(|tx| {
        let mut out = Vec::new();
        for id in existing_ids(ctx, tx, p)? {
            let cvm = tx.group_instances(ctx.account, &id)?.len();
            let sg = tx
                .referrers(ctx.account, &id)?
                .iter()
                .filter(|r| r.starts_with("sg-"))
                .count();
            out.push(json!({
                "SecurityGroupId": id,
                "CVM": cvm,
                "CDB": 0,
                "ENI": 0,
                "SG": sg,
                "CLB": 0,
                "InstanceStatistics": [{ "InstanceType": "CVM", "InstanceCount": cvm }],
                "TotalCount": cvm,
            }));
        }
        Ok(out)
    })?;
    reply(json!({ "SecurityGroupAssociationStatisticsSet": set }))
}

/// `DescribeSecurityGroupLimits`.
pub fn limits(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[])?;
    let l = ctx.limits;
    reply(json!({
        "SecurityGroupLimitSet": {
            "SecurityGroupLimit": l.groups_per_project,
            "SecurityGroupPolicyLimit": l.rules_per_direction,
            "ReferedSecurityGroupLimit": l.references_per_group,
            "SecurityGroupInstanceLimit": l.instances_per_group,
            "InstanceSecurityGroupLimit": l.groups_per_instance,
            "SecurityGroupExtendedPolicyLimit": 0,
            "SecurityGroupReferedCvmAndEniLimit": l.instances_per_group,
            "SecurityGroupReferedSvcLimit": 0,
        }
    }))
}
