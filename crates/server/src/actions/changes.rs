//! Commit-confirmed changes (docs/api.md, "Commit-confirmed changes";
//! docs/operations.md): `StartConfirmedChange` records, in the store, the
//! account's groups (attributes and rules) and every instance's ordered
//! bindings, with a deadline; whatever is written afterwards is part of the
//! change. `ConfirmChange` before the deadline keeps it. Otherwise the
//! change is reverted: every recorded group whose rules or attributes
//! differ gets them back as a new `Version` (a deleted one is created again
//! under its id), every instance gets its bindings back, and the groups made
//! during the window are deleted unless an instance binds one or a group
//! that stays references it. The revert is one ordinary write transaction, recorded in the
//! change (`DescribeConfirmedChanges`) and in each group's history.
//!
//! The deadline lives in the store ([`DocKind::Change`] with a due time),
//! not in a timer: every server's reaper ([`reap`]) looks once a second for
//! changes past their deadline, so a server killed or restarted inside the
//! window reverts at the deadline (or as soon as it starts, if the deadline
//! has passed), and with several servers on one database the first to look
//! reverts while the others find the change settled. Templates, clusters
//! and instance registrations are not part of a change.

use super::history::restore;
use super::{reply, Ctx, Reply, RulesetCache};
use crate::error::ApiError;
use crate::params::Params;
use palisade_model::limits::Limits;
use palisade_model::ErrorCode;
use palisade_store::{
    DocKind, Document, GroupRecord, RuleRecord, Store, StoreError, StoreExt, Tag, Tx,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The longest window a change may ask for (one day).
pub const MAX_CONFIRM_WITHIN: u64 = 86_400;

/// How often each server looks for changes past their deadline.
pub const REAP_EVERY: Duration = Duration::from_secs(1);

/// `StartConfirmedChange`: records what a revert restores and the deadline.
pub fn start(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ConfirmWithin", "Description"])?;
    let within = p
        .opt_uint("ConfirmWithin")?
        .ok_or_else(|| ApiError::missing("ConfirmWithin"))?;
    if within == 0 || within > MAX_CONFIRM_WITHIN {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueRange,
            format!("ConfirmWithin {within}: must be 1 to {MAX_CONFIRM_WITHIN} seconds"),
        ));
    }
    let description = p.opt_str("Description")?.unwrap_or_default();
    if description.chars().count() > 255 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueTooLong,
            "Description: longer than 255 characters",
        ));
    }
    let change = ctx.write(|tx| {
        if let Some(pending) = pending(tx, ctx.account)? {
            return Err(ApiError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "change {} is pending until {}: confirm it (or let it revert) before starting another",
                    pending.change_id, pending.deadline
                ),
            ));
        }
        let now = unix_now();
        let deadline = now.saturating_add(i64::try_from(within).unwrap_or(i64::MAX));
        let change = Change {
            change_id: super::new_id("chg-"),
            state: State::Pending,
            description: description.clone(),
            created_time: super::now(),
            confirm_within: within,
            deadline: time_string(deadline),
            deadline_unix: deadline,
            settled_time: String::new(),
            reverted: Vec::new(),
            problems: Vec::new(),
            before: Before {
                groups: tx
                    .groups(ctx.account)?
                    .into_iter()
                    .map(SavedGroup::from)
                    .collect(),
                instances: tx
                    .instances(ctx.account)?
                    .into_iter()
                    .map(|i| SavedBinding {
                        instance_id: i.id,
                        security_group_ids: i.security_group_ids,
                    })
                    .collect(),
            },
        };
        save(tx, ctx.account, &change)?;
        Ok(change)
    })?;
    reply(json!({
        "ChangeId": change.change_id,
        "Deadline": change.deadline,
        "ConfirmWithin": within,
    }))
}

/// `ConfirmChange`: keeps a pending change. After its deadline it is an
/// error, and the change is (or has just been) reverted.
pub fn confirm(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ChangeId"])?;
    let id = p.req_str("ChangeId")?;
    let change = ctx.write(|tx| {
        let mut change = load(tx, ctx.account, &id)?;
        if change.state == State::Pending {
            if unix_now() >= change.deadline_unix {
                revert(ctx, tx, &mut change)?;
            } else {
                change.state = State::Confirmed;
                change.settled_time = super::now();
            }
            save(tx, ctx.account, &change)?;
        }
        Ok(change)
    })?;
    match change.state {
        State::Reverted => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "ChangeId {id:?}: its deadline {} passed before confirmation; the change was reverted at {}",
                change.deadline, change.settled_time
            ),
        )),
        _ => reply(json!({ "ChangeId": id, "State": change.state })),
    }
}

/// `DescribeConfirmedChanges`: the account's changes, newest first.
pub fn describe(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["ChangeIds", "Offset", "Limit"])?;
    let ids = p.opt_str_list("ChangeIds")?;
    let (offset, limit) = p.page(100)?;
    let mut all = ctx.read(|tx| {
        tx.documents(ctx.account, DocKind::Change)?
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()
    })?;
    if let Some(ids) = &ids {
        for id in ids {
            if !all.iter().any(|c| &c.change_id == id) {
                return Err(ApiError::not_found("ChangeIds", id));
            }
        }
        all.retain(|c| ids.contains(&c.change_id));
    }
    all.reverse();
    let total = all.len();
    let set: Vec<_> = crate::params::paginate(all, offset, limit)
        .into_iter()
        .map(|c| {
            json!({
                "ChangeId": c.change_id,
                "State": c.state,
                "Description": c.description,
                "CreatedTime": c.created_time,
                "ConfirmWithin": c.confirm_within,
                "Deadline": c.deadline,
                "SettledTime": c.settled_time,
                "Reverted": c.reverted,
                "Problems": c.problems,
            })
        })
        .collect();
    reply(json!({ "ChangeSet": set, "TotalCount": total }))
}

/// Reverts, once a [`REAP_EVERY`], every change of any account whose
/// deadline has passed. Runs for the life of the server.
pub async fn reap(store: Arc<dyn Store>, limits: Limits) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let done = tokio::task::spawn_blocking(move || revert_due(store.as_ref(), &limits)).await;
        match done {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(reverted = n, "reverted unconfirmed changes"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e.message, "reverting unconfirmed changes failed; retrying")
            }
            Err(e) => tracing::warn!(error = %e, "the change reaper task failed; retrying"),
        }
    }
}

/// Reverts every pending change past its deadline; returns how many.
pub fn revert_due(store: &dyn Store, limits: &Limits) -> Result<usize, ApiError> {
    let due = store.read(|tx| Ok::<_, ApiError>(tx.documents_due(DocKind::Change, unix_now())?))?;
    let rulesets = RulesetCache::default();
    let mut n = 0;
    for (account, id) in due {
        let ctx = Ctx {
            store,
            account: &account,
            limits,
            rulesets: &rulesets,
            agent_of: None,
        };
        // Another server may have settled it since the read: look again
        // inside the write, under the account's lock.
        let reverted = ctx.write(|tx| {
            let mut change = load(tx, &account, &id)?;
            if change.state != State::Pending || unix_now() < change.deadline_unix {
                return Ok(false);
            }
            revert(&ctx, tx, &mut change)?;
            save(tx, &account, &change)?;
            Ok(true)
        })?;
        if reverted {
            tracing::info!(account = %account, change = %id, "change not confirmed by its deadline: reverted");
            n += 1;
        }
    }
    Ok(n)
}

/// A change as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Change {
    change_id: String,
    state: State,
    description: String,
    created_time: String,
    confirm_within: u64,
    deadline: String,
    deadline_unix: i64,
    /// When it was confirmed or reverted (empty while pending).
    settled_time: String,
    reverted: Vec<Reverted>,
    /// What the revert could not restore, and why.
    problems: Vec<String>,
    before: Before,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum State {
    Pending,
    Confirmed,
    Reverted,
}

/// What the account held when the change started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Before {
    groups: Vec<SavedGroup>,
    instances: Vec<SavedBinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedGroup {
    security_group_id: String,
    name: String,
    description: String,
    project_id: String,
    is_default: bool,
    created_time: String,
    tags: Vec<Tag>,
    version: u64,
    ingress: Vec<RuleRecord>,
    egress: Vec<RuleRecord>,
}

impl From<GroupRecord> for SavedGroup {
    fn from(g: GroupRecord) -> Self {
        Self {
            security_group_id: g.id,
            name: g.name,
            description: g.description,
            project_id: g.project_id,
            is_default: g.is_default,
            created_time: g.created_time,
            tags: g.tags,
            version: g.version,
            ingress: g.ingress,
            egress: g.egress,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedBinding {
    instance_id: String,
    security_group_ids: Vec<String>,
}

/// One thing the revert did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reverted {
    /// `SecurityGroupId` or `InstanceId`.
    resource_id: String,
    /// `RULES_RESTORED`, `ATTRIBUTES_RESTORED`, `GROUP_RECREATED`,
    /// `GROUP_DELETED` or `BINDINGS_RESTORED`.
    action: String,
    /// The group's new `Version` (empty for instances and deletions).
    version: String,
}

/// Puts back what `change` recorded, inside the caller's transaction, and
/// marks it reverted. A group that cannot be restored (its rules name a
/// template deleted since) is left as it is and named in `Problems`:
/// the revert never writes a rule it could not validate.
fn revert(ctx: &Ctx<'_>, tx: &mut dyn Tx, change: &mut Change) -> Result<(), ApiError> {
    let account = ctx.account;
    let mut done = Vec::new();
    let mut problems = Vec::new();
    let before_ids: HashSet<&str> = change
        .before
        .groups
        .iter()
        .map(|g| g.security_group_id.as_str())
        .collect();
    // Groups deleted in the window come back first (empty), so that the
    // rules restored next may reference them.
    for saved in &change.before.groups {
        if tx.group(account, &saved.security_group_id)?.is_none() {
            let g = GroupRecord {
                id: saved.security_group_id.clone(),
                name: saved.name.clone(),
                description: saved.description.clone(),
                project_id: saved.project_id.clone(),
                is_default: saved.is_default,
                created_time: saved.created_time.clone(),
                update_time: super::now(),
                tags: saved.tags.clone(),
                version: saved.version,
                ingress: Vec::new(),
                egress: Vec::new(),
            };
            tx.insert_group(account, &g)?;
            done.push(reverted(&g.id, "GROUP_RECREATED", ""));
        }
    }
    for saved in &change.before.groups {
        let Some(mut g) = tx.group(account, &saved.security_group_id)? else {
            continue;
        };
        if (&g.name, &g.description, &g.tags) != (&saved.name, &saved.description, &saved.tags) {
            g.name = saved.name.clone();
            g.description = saved.description.clone();
            g.tags = saved.tags.clone();
            g.update_time = super::now();
            tx.update_group(account, &g)?;
            done.push(reverted(&g.id, "ATTRIBUTES_RESTORED", ""));
        }
        if g.ingress == saved.ingress && g.egress == saved.egress {
            continue;
        }
        let id = g.id.clone();
        match restore(ctx, tx, g, &saved.ingress, &saved.egress) {
            Ok(v) => done.push(reverted(&id, "RULES_RESTORED", &v.to_string())),
            Err(e) if e.code == ErrorCode::InternalError => return Err(e),
            Err(e) => problems.push(format!("{id}: rules not restored: {}", e.message)),
        }
    }
    for saved in &change.before.instances {
        let Some(mut ins) = tx.instance(account, &saved.instance_id)? else {
            continue;
        };
        let mut groups = Vec::new();
        for g in &saved.security_group_ids {
            if tx.group(account, g)?.is_some() {
                groups.push(g.clone());
            }
        }
        if ins.security_group_ids != groups {
            ins.security_group_ids = groups;
            tx.update_instance(account, &ins)?;
            done.push(reverted(&ins.id, "BINDINGS_RESTORED", ""));
        }
    }
    // Groups made in the window, unless bound or referenced by a group
    // that stays (groups made together may reference each other, as a TKE
    // cluster's node and master groups do: they go together).
    let mut doomed = Vec::new();
    for g in tx.groups(account)? {
        if !before_ids.contains(g.id.as_str()) && tx.group_instances(account, &g.id)?.is_empty() {
            doomed.push(g.id);
        }
    }
    loop {
        let mut keep = Vec::new();
        for id in &doomed {
            if tx
                .referrers(account, id)?
                .iter()
                .any(|r| !doomed.contains(r))
            {
                keep.push(id.clone());
            }
        }
        if keep.is_empty() {
            break;
        }
        doomed.retain(|id| !keep.contains(id));
    }
    for id in &doomed {
        tx.delete_group(account, id)?;
        done.push(reverted(id, "GROUP_DELETED", ""));
    }
    for g in tx.groups(account)? {
        if !before_ids.contains(g.id.as_str()) {
            problems.push(format!(
                "{}: made during the change and still referenced or bound; kept",
                g.id
            ));
        }
    }
    change.state = State::Reverted;
    change.settled_time = super::now();
    change.reverted = done;
    change.problems = problems;
    Ok(())
}

fn reverted(id: &str, action: &str, version: &str) -> Reverted {
    Reverted {
        resource_id: id.to_string(),
        action: action.to_string(),
        version: version.to_string(),
    }
}

/// The account's pending change, if any.
fn pending(tx: &dyn Tx, account: &str) -> Result<Option<Change>, ApiError> {
    for d in tx.documents(account, DocKind::Change)? {
        let c = decode(d)?;
        if c.state == State::Pending {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn load(tx: &dyn Tx, account: &str, id: &str) -> Result<Change, ApiError> {
    if !id.starts_with("chg-") {
        return Err(ApiError::malformed(
            "ChangeId",
            id,
            "expected chg- and 8 letters or digits",
        ));
    }
    tx.document(account, DocKind::Change, id)?
        .map(decode)
        .transpose()?
        .ok_or_else(|| ApiError::not_found("ChangeId", id))
}

fn save(tx: &mut dyn Tx, account: &str, c: &Change) -> Result<(), ApiError> {
    let body = serde_json::to_value(c).map_err(ApiError::internal)?;
    tx.put_document(
        account,
        &Document {
            kind: DocKind::Change,
            id: c.change_id.clone(),
            body,
            due: (c.state == State::Pending).then_some(c.deadline_unix),
        },
    )?;
    Ok(())
}

fn decode(d: Document) -> Result<Change, ApiError> {
    serde_json::from_value(d.body)
        .map_err(|e| ApiError::from(StoreError::Corrupt(format!("change {}: {e}", d.id))))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix seconds as Tencent prints times, `YYYY-MM-DD HH:MM:SS` UTC.
fn time_string(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}
