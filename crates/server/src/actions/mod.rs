//! Action dispatch and the helpers every action family shares: the request
//! context, converting stored rules to and from the validated model, checking
//! that a rule's references exist in the caller's account, and the
//! per-group limits. Each family lives in its own module.
//!
//! Isolation: every lookup goes through [`Ctx::account`], so another
//! account's resource is indistinguishable from one that does not exist.

mod answer;
pub mod bounds;
pub mod changes;
mod clusters;
mod cvm;
pub mod flows;
mod groups;
mod history;
mod join;
mod palisade;
mod policies;
mod snapshots;
mod templates;

pub use answer::Answer;
pub use join::join as join_cluster;
pub use palisade::{Fill, FillLead, FillWait, RulesetCache, FILL_WAIT};

use crate::error::ApiError;
use crate::params::Params;
use palisade_model::limits::Limits;
use palisade_model::policy::{Direction, Peer, Policy, Service};
use palisade_model::wire;
use palisade_model::ErrorCode;
use palisade_store::{GroupRecord, RuleRecord, Store, StoreError, StoreExt, TemplateKind, Tx};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// What an action runs with.
pub struct Ctx<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The caller's account id; every resource access is scoped by it.
    pub account: &'a str,
    /// Quotas.
    pub limits: &'a Limits,
    /// Resolved rulesets shared between requests.
    pub rulesets: &'a RulesetCache,
    /// The instance the caller's agent credential is scoped to, if it holds
    /// one: `RegisterInstances` may then only confirm that instance's
    /// registration as it stands, never change its addresses (they widen
    /// every rule that references the instance's groups, on other nodes).
    pub agent_of: Option<&'a str>,
}

impl Ctx<'_> {
    /// Runs `f` in one write transaction: on error nothing changes.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, ApiError>) -> Result<T, ApiError> {
        self.store.write(f)
    }

    /// Runs `f` on one read snapshot.
    fn read<T>(&self, f: impl FnOnce(&dyn Tx) -> Result<T, ApiError>) -> Result<T, ApiError> {
        self.store.read(f)
    }
}

/// The fields of a successful response (without `RequestId`).
pub type Reply = Result<Map<String, Value>, ApiError>;

/// Every action served, by service, for `docs/api.md` and `InvalidAction`.
pub const ACTIONS: &[(&str, &str)] = &[
    ("vpc", "CreateSecurityGroup"),
    ("vpc", "CreateSecurityGroupWithPolicies"),
    ("vpc", "DeleteSecurityGroup"),
    ("vpc", "ModifySecurityGroupAttribute"),
    ("vpc", "CloneSecurityGroup"),
    ("vpc", "DescribeSecurityGroups"),
    ("vpc", "CreateSecurityGroupPolicies"),
    ("vpc", "DeleteSecurityGroupPolicies"),
    ("vpc", "ModifySecurityGroupPolicies"),
    ("vpc", "ReplaceSecurityGroupPolicy"),
    ("vpc", "ReplaceSecurityGroupPolicies"),
    ("vpc", "DescribeSecurityGroupPolicies"),
    ("vpc", "DescribeSecurityGroupExpandedPolicies"),
    ("vpc", "DescribeSecurityGroupReferences"),
    ("vpc", "DescribeSecurityGroupAssociationStatistics"),
    ("vpc", "DescribeSecurityGroupLimits"),
    ("vpc", "CreateAddressTemplate"),
    ("vpc", "DeleteAddressTemplate"),
    ("vpc", "ModifyAddressTemplateAttribute"),
    ("vpc", "DescribeAddressTemplates"),
    ("vpc", "CreateAddressTemplateGroup"),
    ("vpc", "DeleteAddressTemplateGroup"),
    ("vpc", "ModifyAddressTemplateGroupAttribute"),
    ("vpc", "DescribeAddressTemplateGroups"),
    ("vpc", "CreateServiceTemplate"),
    ("vpc", "DeleteServiceTemplate"),
    ("vpc", "ModifyServiceTemplateAttribute"),
    ("vpc", "DescribeServiceTemplates"),
    ("vpc", "CreateServiceTemplateGroup"),
    ("vpc", "DeleteServiceTemplateGroup"),
    ("vpc", "ModifyServiceTemplateGroupAttribute"),
    ("vpc", "DescribeServiceTemplateGroups"),
    ("vpc", "CreateSnapshotPolicies"),
    ("vpc", "DescribeSnapshotPolicies"),
    ("vpc", "ModifySnapshotPolicies"),
    ("vpc", "EnableSnapshotPolicies"),
    ("vpc", "DisableSnapshotPolicies"),
    ("vpc", "DeleteSnapshotPolicies"),
    ("vpc", "AttachSnapshotInstances"),
    ("vpc", "DetachSnapshotInstances"),
    ("vpc", "DescribeSnapshotAttachedInstances"),
    ("vpc", "DescribeSnapshotFiles"),
    ("vpc", "DescribeSgSnapshotFileContent"),
    ("vpc", "ResumeSnapshotInstance"),
    ("cvm", "AssociateSecurityGroups"),
    ("cvm", "DisassociateSecurityGroups"),
    ("cvm", "ModifyInstancesAttribute"),
    ("cvm", "DescribeInstances"),
    ("palisade", "RegisterInstances"),
    ("palisade", "DeregisterInstances"),
    ("palisade", "DescribeInstanceRuleset"),
    ("palisade", "ReportInstanceStatus"),
    ("palisade", "DescribeInstanceStatus"),
    ("palisade", "RegisterCluster"),
    ("palisade", "DeregisterClusters"),
    ("palisade", "DescribeClusters"),
    ("palisade", "ReportFlowRecords"),
    ("palisade", "DescribeFlowRecords"),
    ("palisade", "ModifyInstanceEnforcement"),
    ("palisade", "DescribeRuleHits"),
    ("palisade", "CreateJoinToken"),
    ("palisade", "DescribeJoinTokens"),
    ("palisade", "RevokeJoinToken"),
    ("palisade", "JoinCluster"),
    ("palisade", "LeaveCluster"),
    ("palisade", "PruneCluster"),
    ("palisade", "DescribeSecurityGroupHistory"),
    ("palisade", "RollbackSecurityGroup"),
    ("palisade", "StartConfirmedChange"),
    ("palisade", "ConfirmChange"),
    ("palisade", "DescribeConfirmedChanges"),
];

/// The actions of Tencent's STS (version `2018-08-13`) served: tools that
/// hard-wire Tencent's endpoint names ask who they are before anything else.
pub const STS_ACTIONS: &[&str] = &["GetCallerIdentity"];

/// Whether `action` of `service` is served.
pub fn served(service: &str, action: &str) -> bool {
    ACTIONS.iter().any(|(s, a)| *s == service && *a == action)
        || (service == "sts" && STS_ACTIONS.contains(&action))
}

/// The one service that serves `action`, if exactly one does. Each action
/// name is served by one service today; a name two services came to share
/// would answer `None` here rather than pick one.
pub fn service_of(action: &str) -> Option<&'static str> {
    let mut services = ACTIONS
        .iter()
        .filter(|(_, a)| *a == action)
        .map(|(s, _)| *s)
        .chain(STS_ACTIONS.iter().filter(|a| **a == action).map(|_| "sts"));
    let first = services.next()?;
    services.next().is_none().then_some(first)
}

/// Runs one action for the HTTP API: as [`dispatch`], but the describes
/// on the hot path encode their answer straight from typed values
/// ([`Answer::Encoded`]); every other action's fields come as a map.
pub fn answer(ctx: &Ctx<'_>, service: &str, action: &str, p: &Params) -> Result<Answer, ApiError> {
    match (service, action) {
        ("vpc", "DescribeSecurityGroupPolicies") => {
            bounds::check(action, p.raw(), ctx.limits)?;
            let set = policies::describe_set(ctx, p, false)?;
            Answer::one("SecurityGroupPolicySet", &answer::PolicySet(&set))
                .map_err(ApiError::internal)
        }
        _ => dispatch(ctx, service, action, p).map(Answer::Fields),
    }
}

/// Runs one action. Every list of the request is held to its bound first
/// ([`bounds`]), before the action decodes anything or opens a transaction.
pub fn dispatch(ctx: &Ctx<'_>, service: &str, action: &str, p: &Params) -> Reply {
    bounds::check(action, p.raw(), ctx.limits)?;
    match (service, action) {
        ("vpc", "CreateSecurityGroup") => groups::create(ctx, p, false),
        ("vpc", "CreateSecurityGroupWithPolicies") => groups::create(ctx, p, true),
        ("vpc", "DeleteSecurityGroup") => groups::delete(ctx, p),
        ("vpc", "ModifySecurityGroupAttribute") => groups::modify_attribute(ctx, p),
        ("vpc", "CloneSecurityGroup") => groups::clone(ctx, p),
        ("vpc", "DescribeSecurityGroups") => groups::describe(ctx, p),
        ("vpc", "DescribeSecurityGroupReferences") => groups::references(ctx, p),
        ("vpc", "DescribeSecurityGroupAssociationStatistics") => groups::statistics(ctx, p),
        ("vpc", "DescribeSecurityGroupLimits") => groups::limits(ctx, p),
        ("vpc", "CreateSecurityGroupPolicies") => policies::create(ctx, p),
        ("vpc", "DeleteSecurityGroupPolicies") => policies::delete(ctx, p),
        ("vpc", "ModifySecurityGroupPolicies") => policies::modify(ctx, p),
        ("vpc", "ReplaceSecurityGroupPolicy") => policies::replace(ctx, p, false),
        ("vpc", "ReplaceSecurityGroupPolicies") => policies::replace(ctx, p, true),
        ("vpc", "DescribeSecurityGroupPolicies") => policies::describe(ctx, p, false),
        ("vpc", "DescribeSecurityGroupExpandedPolicies") => policies::describe(ctx, p, true),
        ("vpc", a) if templates::handles(a) => templates::dispatch(ctx, a, p),
        ("vpc", a) if snapshots::handles(a) => snapshots::dispatch(ctx, a, p),
        ("cvm", "AssociateSecurityGroups") => cvm::associate(ctx, p),
        ("cvm", "DisassociateSecurityGroups") => cvm::disassociate(ctx, p),
        ("cvm", "ModifyInstancesAttribute") => cvm::modify_attribute(ctx, p),
        ("cvm", "DescribeInstances") => cvm::describe(ctx, p),
        ("palisade", "RegisterInstances") => palisade::register(ctx, p),
        ("palisade", "DeregisterInstances") => palisade::deregister(ctx, p),
        ("palisade", "DescribeInstanceRuleset") => palisade::describe_ruleset(ctx, p),
        ("palisade", "ReportInstanceStatus") => palisade::report_status(ctx, p),
        ("palisade", "DescribeInstanceStatus") => palisade::describe_status(ctx, p),
        ("palisade", "RegisterCluster") => clusters::register(ctx, p),
        ("palisade", "DeregisterClusters") => clusters::deregister(ctx, p),
        ("palisade", "DescribeClusters") => clusters::describe(ctx, p),
        ("palisade", "ReportFlowRecords") => flows::report(ctx, p),
        ("palisade", "DescribeFlowRecords") => flows::describe(ctx, p),
        ("palisade", "ModifyInstanceEnforcement") => flows::modify_enforcement(ctx, p),
        ("palisade", "DescribeRuleHits") => flows::describe_hits(ctx, p),
        ("palisade", "CreateJoinToken") => join::create(ctx, p),
        ("palisade", "DescribeJoinTokens") => join::describe(ctx, p),
        ("palisade", "RevokeJoinToken") => join::revoke(ctx, p),
        ("palisade", "JoinCluster") => join::signed(p),
        ("palisade", "LeaveCluster") => join::leave(ctx, p),
        ("palisade", "PruneCluster") => join::prune(ctx, p),
        ("palisade", "DescribeSecurityGroupHistory") => history::describe(ctx, p),
        ("palisade", "RollbackSecurityGroup") => history::rollback(ctx, p),
        ("palisade", "StartConfirmedChange") => changes::start(ctx, p),
        ("palisade", "ConfirmChange") => changes::confirm(ctx, p),
        ("palisade", "DescribeConfirmedChanges") => changes::describe(ctx, p),
        ("sts", "GetCallerIdentity") => caller_identity(ctx),
        _ => Err(ApiError::new(
            ErrorCode::InvalidAction,
            format!("action {action:?} of service {service:?} does not exist or is not supported by Palisade"),
        )),
    }
}

/// STS `GetCallerIdentity`: the caller's account, in the fields of
/// Tencent's answer for a root account (a Palisade account has no sub-users).
/// Tencent's account ids are numbers; Palisade's are `acc-` ids.
fn caller_identity(ctx: &Ctx<'_>) -> Reply {
    let id = ctx.account;
    reply(json!({
        "Arn": format!("qcs::cam::uin/{id}:uin/{id}"),
        "AccountId": id,
        "UserId": id,
        "PrincipalId": id,
        "Type": "RootAccount",
    }))
}

fn reply(pairs: Value) -> Reply {
    match pairs {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::internal(format!(
            "reply is not an object: {other}"
        ))),
    }
}

/// A fresh id: `prefix` and 8 lower-case alphanumerics.
fn new_id(prefix: &str) -> String {
    palisade_store::random_id(prefix, 8)
}

fn now() -> String {
    palisade_store::now_string()
}

/// The `SecurityGroup` wire object.
fn group_json(g: &GroupRecord) -> Value {
    json!({
        "SecurityGroupId": g.id,
        "SecurityGroupName": g.name,
        "SecurityGroupDesc": g.description,
        "ProjectId": g.project_id,
        "IsDefault": g.is_default,
        "CreatedTime": g.created_time,
        "UpdateTime": g.update_time,
        "TagSet": g.tags,
    })
}

/// Parses an `sg-` id from `field` (VPC spelling of errors).
fn parse_group_id(field: &str, id: &str) -> Result<String, ApiError> {
    palisade_model::ids::SecurityGroupId::parse_field(field, id)?;
    Ok(id.to_string())
}

/// Loads a group of the caller's account or fails with `ResourceNotFound`.
fn load_group(tx: &dyn Tx, account: &str, field: &str, id: &str) -> Result<GroupRecord, ApiError> {
    parse_group_id(field, id)?;
    tx.group(account, id)?
        .ok_or_else(|| ApiError::not_found(field, id))
}

/// The stored rules of one direction, validated back into the model.
fn rules_of(g: &GroupRecord, dir: Direction) -> Result<Vec<Policy>, ApiError> {
    let list = match dir {
        Direction::Ingress => &g.ingress,
        Direction::Egress => &g.egress,
    };
    list.iter().map(decode_rule).collect()
}

fn decode_rule(r: &RuleRecord) -> Result<Policy, ApiError> {
    let w = wire::SecurityGroupPolicy::deserialize(&r.body)
        .map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))?;
    Policy::from_wire(&w).map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))
}

/// Rules stored as the JSON text of a list of [`RuleRecord`]s
/// ([`palisade_store::StoredPolicies`]), decoded straight into the model:
/// what [`rules_of`] gives for a [`GroupRecord`], without building a JSON
/// tree first. Bad stored data is [`StoreError::Corrupt`].
fn decode_stored_rules(text: &str) -> Result<Vec<Policy>, ApiError> {
    /// A [`RuleRecord`] whose references are not needed.
    #[derive(Deserialize)]
    struct Stored {
        body: wire::SecurityGroupPolicy,
        #[serde(rename = "refs")]
        _refs: Vec<serde::de::IgnoredAny>,
    }
    let corrupt = |e: String| ApiError::from(StoreError::Corrupt(e));
    let list: Vec<Stored> = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    list.iter()
        .map(|r| Policy::from_wire(&r.body).map_err(|e| corrupt(e.to_string())))
        .collect()
}

/// The stored form of a validated rule: its wire JSON and its references.
fn encode_rule(p: &Policy) -> Result<RuleRecord, ApiError> {
    let mut w = p.to_wire(0);
    w.policy_index = None;
    let body = serde_json::to_value(&w).map_err(ApiError::internal)?;
    let mut refs = Vec::new();
    match &p.peer {
        Peer::SecurityGroup(id) => refs.push(id.to_string()),
        Peer::AddressTemplate(id) => refs.push(id.to_string()),
        Peer::AddressTemplateGroup(id) => refs.push(id.to_string()),
        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => {}
    }
    match &p.service {
        Service::Template(id) => refs.push(id.to_string()),
        Service::TemplateGroup(id) => refs.push(id.to_string()),
        Service::Protocol { .. } => {}
    }
    Ok(RuleRecord { body, refs })
}

/// Checks that every group and template a rule names exists in the account
/// (`self_id` may reference itself).
fn check_refs(tx: &dyn Tx, account: &str, self_id: &str, p: &Policy) -> Result<(), ApiError> {
    let template = |id: &str, kind: TemplateKind, field: &str| -> Result<(), ApiError> {
        match tx.template(account, id)? {
            Some(t) if t.kind == kind => Ok(()),
            _ => Err(ApiError::not_found(field, id)),
        }
    };
    match &p.peer {
        Peer::SecurityGroup(id) => {
            if id.as_str() != self_id && tx.group(account, id.as_str())?.is_none() {
                return Err(ApiError::not_found("SecurityGroupId", id.as_str()));
            }
        }
        Peer::AddressTemplate(id) => {
            template(
                id.as_str(),
                TemplateKind::Address,
                "AddressTemplate.AddressId",
            )?;
        }
        Peer::AddressTemplateGroup(id) => template(
            id.as_str(),
            TemplateKind::AddressGroup,
            "AddressTemplate.AddressGroupId",
        )?,
        Peer::Cidr(_) | Peer::Ipv6Cidr(_) => {}
    }
    match &p.service {
        Service::Template(id) => {
            template(
                id.as_str(),
                TemplateKind::Service,
                "ServiceTemplate.ServiceId",
            )?;
        }
        Service::TemplateGroup(id) => template(
            id.as_str(),
            TemplateKind::ServiceGroup,
            "ServiceTemplate.ServiceGroupId",
        )?,
        Service::Protocol { .. } => {}
    }
    Ok(())
}

/// Validates the references and limits of a group's complete new rule lists
/// and stores them in `g` (the caller bumps the version and writes).
fn set_rules(
    tx: &dyn Tx,
    ctx: &Ctx<'_>,
    g: &mut GroupRecord,
    ingress: &[Policy],
    egress: &[Policy],
) -> Result<(), ApiError> {
    for (dir, list) in [(Direction::Ingress, ingress), (Direction::Egress, egress)] {
        if list.len() > ctx.limits.rules_per_direction {
            return Err(ApiError::new(
                ErrorCode::LimitExceededSecurityGroupPolicySet,
                format!(
                    "{}: {} rules, the limit is {} per direction",
                    dir.wire_name(),
                    list.len(),
                    ctx.limits.rules_per_direction
                ),
            ));
        }
    }
    let group_refs = ingress
        .iter()
        .chain(egress)
        .filter(|p| matches!(p.peer, Peer::SecurityGroup(_)))
        .count();
    if group_refs > ctx.limits.references_per_group {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!(
                "{group_refs} rules reference security groups, the limit is {} per group",
                ctx.limits.references_per_group
            ),
        ));
    }
    for p in ingress.iter().chain(egress) {
        check_refs(tx, ctx.account, &g.id, p)?;
    }
    g.ingress = ingress.iter().map(encode_rule).collect::<Result<_, _>>()?;
    g.egress = egress.iter().map(encode_rule).collect::<Result<_, _>>()?;
    Ok(())
}

/// Stamps `ModifyTime` on rules that come in new.
fn stamp(mut p: Policy, time: &str) -> Policy {
    p.modify_time = Some(time.to_string());
    p
}

/// Validated rules of one wire list, with `ModifyTime` set to now.
fn parse_rules(
    list: Option<&Vec<wire::SecurityGroupPolicy>>,
    dir: Direction,
) -> Result<Vec<Policy>, ApiError> {
    let time = now();
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| {
            Policy::from_wire(w).map(|p| stamp(p, &time)).map_err(|e| {
                ApiError::from(e.within(format_args!(
                    "SecurityGroupPolicySet.{}.{i}",
                    dir.wire_name()
                )))
            })
        })
        .collect()
}

/// Keys accepted by every template-family action with name filters etc.
fn check_name(field: &str, name: &str, max: usize) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueEmpty,
            format!("{field} must not be empty"),
        ));
    }
    if name.chars().count() > max {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueTooLong,
            format!("{field} {name:?}: longer than {max} characters"),
        ));
    }
    Ok(())
}

/// Maps a random-id collision to a retryable error and other store errors to
/// `InternalError`.
fn map_insert(e: StoreError) -> ApiError {
    match e {
        StoreError::DuplicateId(id) => ApiError::new(
            ErrorCode::InvalidParameterValueDuplicate,
            format!("id {id:?} is already in use"),
        ),
        other => ApiError::from(other),
    }
}
