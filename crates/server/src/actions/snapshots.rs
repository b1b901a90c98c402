//! Tencent's security-group snapshot actions (VPC, docs/api.md "Snapshot
//! policies"), on top of the kept versions of each group's policy set
//! ([`super::history`]): a snapshot policy (`sspolicy-`) is a stored
//! document naming the groups attached to it; its snapshot files are the
//! versions each attached group was written at since it was attached, within
//! the policy's `KeepTime` and the server's history limit, and none written
//! while the policy was disabled. Nothing goes to object storage: `CosRegion`,
//! `CosBucket` and `CreateNewCos` are kept and shown as given. A file's id
//! names its group and version (`ssfile-<group suffix>v<version>`), so it
//! stays the same for as long as the version is kept. `ResumeSnapshotInstance`
//! writes the file's rules as a new version, validated as any write.

use super::history::{policy_set_json, restore, versions};
use super::{decode_rule, load_group, new_id, now, reply, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{paginate, Params};
use palisade_model::policy::{Direction, Policy};
use palisade_model::ErrorCode;
use palisade_store::{DocKind, Document, GroupVersion, RuleRecord, StoreError, Tag, Tx};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Whether `action` is one of this module's.
pub fn handles(action: &str) -> bool {
    ACTIONS.contains(&action)
}

/// The snapshot actions, all of service `vpc`.
pub const ACTIONS: &[&str] = &[
    "CreateSnapshotPolicies",
    "DescribeSnapshotPolicies",
    "ModifySnapshotPolicies",
    "EnableSnapshotPolicies",
    "DisableSnapshotPolicies",
    "DeleteSnapshotPolicies",
    "AttachSnapshotInstances",
    "DetachSnapshotInstances",
    "DescribeSnapshotAttachedInstances",
    "DescribeSnapshotFiles",
    "DescribeSgSnapshotFileContent",
    "ResumeSnapshotInstance",
];

/// Most snapshot policies per account.
pub const MAX_POLICIES: usize = 100;

/// Runs one snapshot action.
pub fn dispatch(ctx: &Ctx<'_>, action: &str, p: &Params) -> Reply {
    match action {
        "CreateSnapshotPolicies" => create(ctx, p),
        "DescribeSnapshotPolicies" => describe(ctx, p),
        "ModifySnapshotPolicies" => modify(ctx, p),
        "EnableSnapshotPolicies" => enable(ctx, p, true),
        "DisableSnapshotPolicies" => enable(ctx, p, false),
        "DeleteSnapshotPolicies" => delete(ctx, p),
        "AttachSnapshotInstances" => attach(ctx, p, true),
        "DetachSnapshotInstances" => attach(ctx, p, false),
        "DescribeSnapshotAttachedInstances" => attached(ctx, p),
        "DescribeSnapshotFiles" => files(ctx, p),
        "DescribeSgSnapshotFileContent" => content(ctx, p),
        "ResumeSnapshotInstance" => resume(ctx, p),
        _ => Err(ApiError::new(
            ErrorCode::InvalidAction,
            format!("action {action:?} is not a snapshot action"),
        )),
    }
}

/// A snapshot policy as stored and shown (`SnapshotPolicy`), with its
/// attached groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotPolicy {
    snapshot_policy_id: String,
    snapshot_policy_name: String,
    backup_type: String,
    keep_time: u64,
    create_new_cos: bool,
    cos_region: String,
    cos_bucket: String,
    backup_policies: Vec<BackupPolicy>,
    enable: bool,
    create_time: String,
    tag_set: Vec<Tag>,
    /// Not shown: the groups attached, in attach order.
    instances: Vec<Attached>,
    /// Not shown: `[from, to]` times the policy was disabled (`to` empty
    /// while it still is); versions written then have no file.
    disabled: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BackupPolicy {
    backup_day: String,
    backup_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attached {
    instance_id: String,
    instance_region: String,
    instance_name: String,
    attached_version: u64,
}

/// `SnapshotPolicy` as a request sends it (output fields accepted, ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewPolicy {
    snapshot_policy_name: Option<String>,
    backup_type: Option<String>,
    keep_time: Option<u64>,
    create_new_cos: Option<bool>,
    cos_region: Option<String>,
    cos_bucket: Option<String>,
    backup_policies: Option<Vec<BackupPolicy>>,
    enable: Option<bool>,
    #[allow(dead_code)]
    snapshot_policy_id: Option<String>,
    #[allow(dead_code)]
    create_time: Option<String>,
    #[allow(dead_code)]
    tag_set: Option<Vec<Tag>>,
}

/// `BatchModifySnapshotPolicy`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PolicyChange {
    snapshot_policy_id: String,
    snapshot_policy_name: Option<String>,
    backup_policies: Option<Vec<BackupPolicy>>,
    keep_time: Option<u64>,
}

/// `SnapshotInstance`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct InstanceRef {
    instance_id: String,
    instance_type: String,
    instance_region: String,
    #[allow(dead_code)]
    snapshot_policy_id: Option<String>,
    instance_name: Option<String>,
}

fn create(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPolicies", "Tags"])?;
    let new: Vec<NewPolicy> = p.req_typed("SnapshotPolicies")?;
    if new.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueEmpty,
            "SnapshotPolicies must not be empty",
        ));
    }
    let tags = p.tags()?;
    let mut made = Vec::new();
    for (i, n) in new.into_iter().enumerate() {
        let field = |f: &str| format!("SnapshotPolicies.{i}.{f}");
        let name = n
            .snapshot_policy_name
            .ok_or_else(|| ApiError::missing(&field("SnapshotPolicyName")))?;
        super::check_name(&field("SnapshotPolicyName"), &name, 60)?;
        let backup_type = n
            .backup_type
            .ok_or_else(|| ApiError::missing(&field("BackupType")))?;
        check_backup_type(&field("BackupType"), &backup_type)?;
        let keep_time = n
            .keep_time
            .ok_or_else(|| ApiError::missing(&field("KeepTime")))?;
        check_keep_time(&field("KeepTime"), keep_time)?;
        let backup_policies = n.backup_policies.unwrap_or_default();
        check_backup_policies(&field("BackupPolicies"), &backup_policies)?;
        if backup_type == "time" && backup_policies.is_empty() {
            return Err(ApiError::missing(&field("BackupPolicies")));
        }
        let cos_region = n
            .cos_region
            .ok_or_else(|| ApiError::missing(&field("CosRegion")))?;
        let cos_bucket = n
            .cos_bucket
            .ok_or_else(|| ApiError::missing(&field("CosBucket")))?;
        check_len(&field("CosRegion"), &cos_region, 64)?;
        check_len(&field("CosBucket"), &cos_bucket, 128)?;
        made.push(SnapshotPolicy {
            snapshot_policy_id: new_id("sspolicy-"),
            snapshot_policy_name: name,
            backup_type,
            keep_time,
            create_new_cos: n
                .create_new_cos
                .ok_or_else(|| ApiError::missing(&field("CreateNewCos")))?,
            cos_region,
            cos_bucket,
            backup_policies,
            enable: n.enable.unwrap_or(true),
            create_time: now(),
            tag_set: tags.clone(),
            instances: Vec::new(),
            disabled: Vec::new(),
        });
    }
    ctx.write(|tx| {
        let have = tx.documents(ctx.account, DocKind::SnapshotPolicy)?.len();
        if have + made.len() > MAX_POLICIES {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!("an account holds at most {MAX_POLICIES} snapshot policies; it has {have}"),
            ));
        }
        for m in &mut made {
            if !m.enable {
                m.disabled.push((m.create_time.clone(), String::new()));
            }
            save(tx, ctx.account, m)?;
        }
        Ok(())
    })?;
    let shown: Vec<Value> = made.iter().map(policy_json).collect();
    reply(json!({ "SnapshotPolicies": shown }))
}

fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPolicyIds", "Filters", "Offset", "Limit"])?;
    let ids = p.opt_str_list("SnapshotPolicyIds")?;
    let filters = p.filters(&["snapshot-policy-id", "snapshot-policy-name"])?;
    if ids.is_some() && !filters.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterCoexist,
            "SnapshotPolicyIds and Filters exclude each other",
        ));
    }
    let (offset, limit) = p.page(200)?;
    let mut all = ctx.read(|tx| all_policies(tx, ctx.account))?;
    if let Some(ids) = &ids {
        all.retain(|s| ids.contains(&s.snapshot_policy_id));
    }
    for f in &filters {
        all.retain(|s| match f.name.as_str() {
            "snapshot-policy-id" => f.values.contains(&s.snapshot_policy_id),
            _ => f.values.contains(&s.snapshot_policy_name),
        });
    }
    let total = all.len();
    let set: Vec<Value> = paginate(all, offset, limit)
        .iter()
        .map(policy_json)
        .collect();
    reply(json!({ "SnapshotPolicySet": set, "TotalCount": total }))
}

fn modify(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPoliciesInfo"])?;
    let changes: Vec<PolicyChange> = p.req_typed("SnapshotPoliciesInfo")?;
    for (i, c) in changes.iter().enumerate() {
        if let Some(name) = &c.snapshot_policy_name {
            super::check_name(
                &format!("SnapshotPoliciesInfo.{i}.SnapshotPolicyName"),
                name,
                60,
            )?;
        }
        if let Some(k) = c.keep_time {
            check_keep_time(&format!("SnapshotPoliciesInfo.{i}.KeepTime"), k)?;
        }
        if let Some(b) = &c.backup_policies {
            check_backup_policies(&format!("SnapshotPoliciesInfo.{i}.BackupPolicies"), b)?;
        }
    }
    ctx.write(|tx| {
        for c in &changes {
            let mut s = load(tx, ctx.account, "SnapshotPolicyId", &c.snapshot_policy_id)?;
            if let Some(name) = &c.snapshot_policy_name {
                s.snapshot_policy_name = name.clone();
            }
            if let Some(k) = c.keep_time {
                s.keep_time = k;
            }
            if let Some(b) = &c.backup_policies {
                s.backup_policies = b.clone();
            }
            save(tx, ctx.account, &s)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

fn enable(ctx: &Ctx<'_>, p: &Params, on: bool) -> Reply {
    p.allow_only(&["SnapshotPolicyIds"])?;
    let ids = p.req_str_list("SnapshotPolicyIds")?;
    ctx.write(|tx| {
        for id in &ids {
            let mut s = load(tx, ctx.account, "SnapshotPolicyIds", id)?;
            if s.enable == on {
                continue;
            }
            s.enable = on;
            let t = now();
            if on {
                if let Some(last) = s.disabled.last_mut() {
                    last.1 = t;
                }
            } else {
                s.disabled.push((t, String::new()));
            }
            save(tx, ctx.account, &s)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

fn delete(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPolicyIds"])?;
    let ids = p.req_str_list("SnapshotPolicyIds")?;
    ctx.write(|tx| {
        for id in &ids {
            load(tx, ctx.account, "SnapshotPolicyIds", id)?;
            tx.delete_document(ctx.account, DocKind::SnapshotPolicy, id)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

fn attach(ctx: &Ctx<'_>, p: &Params, on: bool) -> Reply {
    p.allow_only(&["SnapshotPolicyId", "Instances"])?;
    let id = p.req_str("SnapshotPolicyId")?;
    let instances: Vec<InstanceRef> = p.req_typed("Instances")?;
    if instances.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueEmpty,
            "Instances must not be empty",
        ));
    }
    for (i, ins) in instances.iter().enumerate() {
        check_len(
            &format!("Instances.{i}.InstanceRegion"),
            &ins.instance_region,
            64,
        )?;
        if let Some(name) = &ins.instance_name {
            check_len(&format!("Instances.{i}.InstanceName"), name, 60)?;
        }
        if ins.instance_type != "securitygroup" {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValue,
                format!(
                    "Instances.{i}.InstanceType {:?}: only securitygroup is supported",
                    ins.instance_type
                ),
            ));
        }
    }
    ctx.write(|tx| {
        let mut s = load(tx, ctx.account, "SnapshotPolicyId", &id)?;
        for (i, ins) in instances.iter().enumerate() {
            let field = format!("Instances.{i}.InstanceId");
            let g = load_group(tx, ctx.account, &field, &ins.instance_id)?;
            let at = s.instances.iter().position(|a| a.instance_id == g.id);
            match (on, at) {
                (true, Some(_)) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameterValueDuplicate,
                        format!("{field} {:?}: already attached to {id}", g.id),
                    ))
                }
                (true, None) => {
                    // The version at attach time is the policy's first file:
                    // make sure the history holds it (a group last written
                    // before history was kept has no entry yet).
                    let kept = tx.group_history(ctx.account, &g.id)?;
                    if kept.last().map(|v| v.version) != Some(g.version) {
                        tx.update_group(ctx.account, &g)?;
                    }
                    s.instances.push(Attached {
                        instance_id: g.id.clone(),
                        instance_region: ins.instance_region.clone(),
                        instance_name: ins.instance_name.clone().unwrap_or_else(|| g.name.clone()),
                        attached_version: g.version,
                    });
                }
                (false, Some(at)) => {
                    s.instances.remove(at);
                }
                (false, None) => {
                    return Err(ApiError::new(
                        ErrorCode::ResourceNotFound,
                        format!("{field} {:?}: not attached to {id}", g.id),
                    ))
                }
            }
        }
        save(tx, ctx.account, &s)
    })?;
    reply(json!({}))
}

fn attached(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPolicyId", "Filters", "Offset", "Limit"])?;
    let id = p.req_str("SnapshotPolicyId")?;
    let filters = p.filters(&["instance-id", "instance-region"])?;
    let (offset, limit) = p.page(200)?;
    let s = ctx.read(|tx| load(tx, ctx.account, "SnapshotPolicyId", &id))?;
    let mut list: Vec<&Attached> = s.instances.iter().collect();
    for f in &filters {
        list.retain(|a| match f.name.as_str() {
            "instance-id" => f.values.contains(&a.instance_id),
            _ => f.values.contains(&a.instance_region),
        });
    }
    let total = list.len();
    let set: Vec<Value> = paginate(list, offset, limit)
        .into_iter()
        .map(|a| {
            json!({
                "InstanceId": a.instance_id,
                "InstanceType": "securitygroup",
                "InstanceRegion": a.instance_region,
                "SnapshotPolicyId": id,
                "InstanceName": a.instance_name,
            })
        })
        .collect();
    reply(json!({ "InstanceSet": set, "TotalCount": total }))
}

fn files(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&[
        "BusinessType",
        "InstanceId",
        "StartDate",
        "EndDate",
        "Offset",
        "Limit",
    ])?;
    check_business_type(&p.req_str("BusinessType")?)?;
    let group = p.req_str("InstanceId")?;
    let start = date(p, "StartDate")?;
    let end = date(p, "EndDate")?;
    let (offset, limit) = p.page(100)?;
    let mut all = ctx.read(|tx| {
        let g = load_group(tx, ctx.account, "InstanceId", &group)?;
        let kept = versions(tx, ctx.account, &g)?;
        let mut out = Vec::new();
        for s in all_policies(tx, ctx.account)? {
            for v in snapshot_versions(&s, &g.id, &kept) {
                out.push((s.snapshot_policy_id.clone(), v.clone()));
            }
        }
        Ok(out)
    })?;
    all.retain(|(_, v)| v.recorded_time >= start && v.recorded_time <= end);
    all.sort_by(|a, b| b.1.version.cmp(&a.1.version).then(a.0.cmp(&b.0)));
    let total = all.len();
    let set: Vec<Value> = paginate(all, offset, limit)
        .into_iter()
        .map(|(policy, v)| {
            json!({
                "SnapshotPolicyId": policy,
                "InstanceId": group,
                "SnapshotFileId": file_id(&group, v.version),
                "BackupTime": v.recorded_time,
                "Operator": ctx.account,
            })
        })
        .collect();
    reply(json!({ "SnapshotFileSet": set, "TotalCount": total }))
}

fn content(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPolicyId", "SnapshotFileId", "SecurityGroupId"])?;
    let policy = p.req_str("SnapshotPolicyId")?;
    let file = p.req_str("SnapshotFileId")?;
    let group = p.req_str("SecurityGroupId")?;
    let (current, v) = ctx.read(|tx| {
        let g = load_group(tx, ctx.account, "SecurityGroupId", &group)?;
        let v = find_file(tx, ctx.account, &policy, &file, &g.id)?;
        Ok((g, v))
    })?;
    reply(json!({
        "InstanceId": group,
        "SnapshotPolicyId": policy,
        "SnapshotFileId": file,
        "BackupTime": v.recorded_time,
        "Operator": ctx.account,
        "OriginalData": flat_rules(&current.ingress, &current.egress)?,
        "BackupData": flat_rules(&v.ingress, &v.egress)?,
        "BackupPolicySet": policy_set_json(v.version, &v.ingress, &v.egress)?,
    }))
}

fn resume(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["SnapshotPolicyId", "SnapshotFileId", "InstanceId"])?;
    let policy = p.req_str("SnapshotPolicyId")?;
    let file = p.req_str("SnapshotFileId")?;
    let group = p.req_str("InstanceId")?;
    ctx.write(|tx| {
        let g = load_group(tx, ctx.account, "InstanceId", &group)?;
        let v = find_file(tx, ctx.account, &policy, &file, &g.id)?;
        restore(ctx, tx, g, &v.ingress, &v.egress)
    })?;
    reply(json!({}))
}

/// The kept version a snapshot file of `policy` names for `group`.
fn find_file(
    tx: &dyn Tx,
    account: &str,
    policy: &str,
    file: &str,
    group: &str,
) -> Result<GroupVersion, ApiError> {
    let s = load(tx, account, "SnapshotPolicyId", policy)?;
    let not_found = || ApiError::not_found("SnapshotFileId", file);
    let version = parse_file_id(file, group).ok_or_else(not_found)?;
    let g = tx
        .group(account, group)?
        .ok_or_else(|| ApiError::not_found("SecurityGroupId", group))?;
    let kept = versions(tx, account, &g)?;
    snapshot_versions(&s, group, &kept)
        .into_iter()
        .find(|v| v.version == version)
        .cloned()
        .ok_or_else(not_found)
}

/// The versions of `group` that are files of `s`: written since it was
/// attached, within `KeepTime`, not while the policy was disabled.
fn snapshot_versions<'a>(
    s: &SnapshotPolicy,
    group: &str,
    kept: &'a [GroupVersion],
) -> Vec<&'a GroupVersion> {
    let Some(a) = s.instances.iter().find(|a| a.instance_id == group) else {
        return Vec::new();
    };
    let oldest = days_ago(s.keep_time);
    kept.iter()
        .filter(|v| v.version >= a.attached_version && v.recorded_time >= oldest)
        .filter(|v| {
            v.version == a.attached_version
                || !s.disabled.iter().any(|(from, to)| {
                    v.recorded_time >= *from && (to.is_empty() || v.recorded_time < *to)
                })
        })
        .collect()
}

/// Rules of both directions in one list, as `OriginalData` and `BackupData`
/// carry them: ingress first, then egress, each with its `PolicyIndex` and,
/// beyond Tencent's fields, its `Direction`.
fn flat_rules(ingress: &[RuleRecord], egress: &[RuleRecord]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (dir, list) in [(Direction::Ingress, ingress), (Direction::Egress, egress)] {
        for (i, r) in list.iter().enumerate() {
            let p: Policy = decode_rule(r)?;
            let mut w = serde_json::to_value(p.to_wire(i)).map_err(ApiError::internal)?;
            if let Some(m) = w.as_object_mut() {
                m.insert("Direction".into(), Value::from(dir.wire_name()));
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn file_id(group: &str, version: u64) -> String {
    format!(
        "ssfile-{}v{version}",
        group.strip_prefix("sg-").unwrap_or(group)
    )
}

fn parse_file_id(file: &str, group: &str) -> Option<u64> {
    let rest = file.strip_prefix("ssfile-")?;
    let (g, v) = rest.rsplit_once('v')?;
    if g != group.strip_prefix("sg-").unwrap_or(group) || v.is_empty() {
        return None;
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn policy_json(s: &SnapshotPolicy) -> Value {
    json!({
        "SnapshotPolicyId": s.snapshot_policy_id,
        "SnapshotPolicyName": s.snapshot_policy_name,
        "BackupType": s.backup_type,
        "KeepTime": s.keep_time,
        "CreateNewCos": s.create_new_cos,
        "CosRegion": s.cos_region,
        "CosBucket": s.cos_bucket,
        "BackupPolicies": s.backup_policies,
        "Enable": s.enable,
        "CreateTime": s.create_time,
        "TagSet": s.tag_set,
    })
}

fn all_policies(tx: &dyn Tx, account: &str) -> Result<Vec<SnapshotPolicy>, ApiError> {
    tx.documents(account, DocKind::SnapshotPolicy)?
        .into_iter()
        .map(decode)
        .collect()
}

fn load(tx: &dyn Tx, account: &str, field: &str, id: &str) -> Result<SnapshotPolicy, ApiError> {
    if !id.starts_with("sspolicy-") {
        return Err(ApiError::malformed(
            field,
            id,
            "expected sspolicy- and 8 letters or digits",
        ));
    }
    tx.document(account, DocKind::SnapshotPolicy, id)?
        .map(decode)
        .transpose()?
        .ok_or_else(|| ApiError::not_found(field, id))
}

fn save(tx: &mut dyn Tx, account: &str, s: &SnapshotPolicy) -> Result<(), ApiError> {
    let body = serde_json::to_value(s).map_err(ApiError::internal)?;
    tx.put_document(
        account,
        &Document {
            kind: DocKind::SnapshotPolicy,
            id: s.snapshot_policy_id.clone(),
            body,
            due: None,
        },
    )?;
    Ok(())
}

fn decode(d: Document) -> Result<SnapshotPolicy, ApiError> {
    serde_json::from_value(d.body).map_err(|e| {
        ApiError::from(StoreError::Corrupt(format!(
            "snapshot policy {}: {e}",
            d.id
        )))
    })
}

/// A free-text field of at most `max` characters.
fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueTooLong,
            format!("{field}: longer than {max} characters"),
        ));
    }
    Ok(())
}

fn check_backup_type(field: &str, t: &str) -> Result<(), ApiError> {
    match t {
        "operate" | "time" => Ok(()),
        _ => Err(ApiError::malformed(field, t, "expected operate or time")),
    }
}

fn check_keep_time(field: &str, k: u64) -> Result<(), ApiError> {
    if (1..=365).contains(&k) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidParameterValueRange,
        format!("{field} {k}: must be 1 to 365 days"),
    ))
}

fn check_backup_policies(field: &str, list: &[BackupPolicy]) -> Result<(), ApiError> {
    const DAYS: &[&str] = &[
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    for (i, b) in list.iter().enumerate() {
        if !DAYS.contains(&b.backup_day.as_str()) {
            return Err(ApiError::malformed(
                &format!("{field}.{i}.BackupDay"),
                &b.backup_day,
                "expected monday to sunday",
            ));
        }
        if !is_clock(&b.backup_time) {
            return Err(ApiError::malformed(
                &format!("{field}.{i}.BackupTime"),
                &b.backup_time,
                "expected HH:mm:ss",
            ));
        }
    }
    Ok(())
}

fn check_business_type(t: &str) -> Result<(), ApiError> {
    if t == "securitygroup" {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidParameterValue,
        format!("BusinessType {t:?}: only securitygroup is supported"),
    ))
}

/// A `YYYY-MM-DD HH:MM:SS` parameter, checked and returned as sent (the
/// stored times have the same form, so they compare as strings).
fn date(p: &Params, field: &str) -> Result<String, ApiError> {
    let s = p.req_str(field)?;
    let ok = match s.split_once(' ') {
        Some((d, t)) => is_day(d) && is_clock(t),
        None => false,
    };
    if !ok {
        return Err(ApiError::malformed(
            field,
            &s,
            "expected YYYY-MM-DD HH:MM:SS",
        ));
    }
    Ok(s)
}

/// `YYYY-MM-DD` with a month 01-12 and a day 01-31.
fn is_day(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [y, m, d] => {
            y.len() == 4
                && y.bytes().all(|b| b.is_ascii_digit())
                && two_digits(m).is_some_and(|m| (1..=12).contains(&m))
                && two_digits(d).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    }
}

/// `HH:MM:SS` on a 24-hour clock.
fn is_clock(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [h, m, sec] => {
            two_digits(h).is_some_and(|h| h < 24)
                && two_digits(m).is_some_and(|m| m < 60)
                && two_digits(sec).is_some_and(|s| s < 60)
        }
        _ => false,
    }
}

fn two_digits(s: &str) -> Option<u8> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The time `days` days ago, as stored times are written.
fn days_ago(days: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let secs = i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    (time::OffsetDateTime::now_utc() - time::Duration::seconds(secs))
        .format(&fmt)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_name_their_group_and_version() {
        let id = file_id("sg-ab1v2cde", 17);
        assert_eq!(id, "ssfile-ab1v2cdev17");
        assert_eq!(parse_file_id(&id, "sg-ab1v2cde"), Some(17));
        assert_eq!(parse_file_id(&id, "sg-other000"), None);
        assert_eq!(parse_file_id("ssfile-ab1v2cdev", "sg-ab1v2cde"), None);
        assert_eq!(parse_file_id("ssfile-ab1v2cdev1x", "sg-ab1v2cde"), None);
        assert_eq!(parse_file_id("nope", "sg-ab1v2cde"), None);
    }

    #[test]
    fn dates_and_clocks_are_checked() {
        assert!(is_clock("23:59:59") && is_clock("00:00:00"));
        assert!(!is_clock("24:00:00") && !is_clock("1:00:00") && !is_clock("12:00"));
        assert!(is_day("2026-12-03") && !is_day("2026-13-01") && !is_day("26-12-03"));
    }
}
