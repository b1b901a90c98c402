//! Address and service templates and their groups (`ipm-`, `ipmg-`, `ppm-`,
//! `ppmg-`): create, modify, delete (refused with `ResourceInUse` while a
//! rule or a template group uses it) and describe. The four kinds share one
//! implementation driven by a [`Spec`] naming each kind's wire fields.

use super::bounds::MAX_TEMPLATE_ENTRIES;
use super::{check_name, map_insert, new_id, now, reply, Ctx, Reply};
use crate::error::ApiError;
use crate::params::{paginate, Params};
use palisade_model::ErrorCode;
use palisade_model::{AddressEntry, ServiceEntry};
use palisade_store::{Tag, TemplateKind, TemplateRecord, Tx};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// How one kind of template is spelled on the wire.
struct Spec {
    kind: TemplateKind,
    prefix: &'static str,
    id: &'static str,
    name: &'static str,
    /// Request field with the entries (addresses, services or member ids).
    entries: &'static str,
    /// Request field with entries plus descriptions, for plain templates.
    extra: Option<(&'static str, &'static str)>,
    /// Response object name (create reply and set element).
    object: &'static str,
    /// Response set name of Describe.
    set: &'static str,
    /// Response field listing the entries.
    out_entries: &'static str,
    /// Response field with the extra info (or member objects for groups).
    out_extra: &'static str,
    /// For groups: the kind of their members.
    member: Option<TemplateKind>,
    /// Filter names: by name, by id, by entry.
    filters: [&'static str; 3],
}

const ADDRESS: Spec = Spec {
    kind: TemplateKind::Address,
    prefix: "ipm-",
    id: "AddressTemplateId",
    name: "AddressTemplateName",
    entries: "Addresses",
    extra: Some(("AddressesExtra", "Address")),
    object: "AddressTemplate",
    set: "AddressTemplateSet",
    out_entries: "AddressSet",
    out_extra: "AddressExtraSet",
    member: None,
    filters: ["address-template-name", "address-template-id", "address-ip"],
};

const ADDRESS_GROUP: Spec = Spec {
    kind: TemplateKind::AddressGroup,
    prefix: "ipmg-",
    id: "AddressTemplateGroupId",
    name: "AddressTemplateGroupName",
    entries: "AddressTemplateIds",
    extra: None,
    object: "AddressTemplateGroup",
    set: "AddressTemplateGroupSet",
    out_entries: "AddressTemplateIdSet",
    out_extra: "AddressTemplateSet",
    member: Some(TemplateKind::Address),
    filters: [
        "address-template-group-name",
        "address-template-group-id",
        "address-ip",
    ],
};

const SERVICE: Spec = Spec {
    kind: TemplateKind::Service,
    prefix: "ppm-",
    id: "ServiceTemplateId",
    name: "ServiceTemplateName",
    entries: "Services",
    extra: Some(("ServicesExtra", "Service")),
    object: "ServiceTemplate",
    set: "ServiceTemplateSet",
    out_entries: "ServiceSet",
    out_extra: "ServiceExtraSet",
    member: None,
    filters: [
        "service-template-name",
        "service-template-id",
        "service-port",
    ],
};

const SERVICE_GROUP: Spec = Spec {
    kind: TemplateKind::ServiceGroup,
    prefix: "ppmg-",
    id: "ServiceTemplateGroupId",
    name: "ServiceTemplateGroupName",
    entries: "ServiceTemplateIds",
    extra: None,
    object: "ServiceTemplateGroup",
    set: "ServiceTemplateGroupSet",
    out_entries: "ServiceTemplateIdSet",
    out_extra: "ServiceTemplateSet",
    member: Some(TemplateKind::Service),
    filters: [
        "service-template-group-name",
        "service-template-group-id",
        "service-port",
    ],
};

const MAX_NAME: usize = 60;

/// Whether `action` is one of this module's.
pub fn handles(action: &str) -> bool {
    route(action).is_some()
}

fn route(action: &str) -> Option<(&'static Spec, &'static str)> {
    let (verb, rest) = ["Create", "Delete", "Modify", "Describe"]
        .iter()
        .find_map(|v| action.strip_prefix(v).map(|r| (*v, r)))?;
    let spec: &'static Spec = match rest {
        "AddressTemplate" | "AddressTemplates" | "AddressTemplateAttribute" => &ADDRESS,
        "AddressTemplateGroup" | "AddressTemplateGroups" | "AddressTemplateGroupAttribute" => {
            &ADDRESS_GROUP
        }
        "ServiceTemplate" | "ServiceTemplates" | "ServiceTemplateAttribute" => &SERVICE,
        "ServiceTemplateGroup" | "ServiceTemplateGroups" | "ServiceTemplateGroupAttribute" => {
            &SERVICE_GROUP
        }
        _ => return None,
    };
    let ok = match verb {
        "Create" | "Delete" => rest == spec.object,
        "Modify" => rest.strip_suffix("Attribute") == Some(spec.object),
        _ => rest.strip_suffix('s') == Some(spec.object),
    };
    ok.then_some((spec, verb))
}

/// Runs a template action.
pub fn dispatch(ctx: &Ctx<'_>, action: &str, p: &Params) -> Reply {
    let Some((spec, verb)) = route(action) else {
        return Err(ApiError::new(
            ErrorCode::InvalidAction,
            format!("action {action:?} does not exist"),
        ));
    };
    match verb {
        "Create" => create(ctx, spec, p),
        "Delete" => delete(ctx, spec, p),
        "Modify" => modify(ctx, spec, p),
        _ => describe(ctx, spec, p),
    }
}

/// The entries and their descriptions from `Addresses`/`AddressesExtra` (or
/// the service / member-id equivalents), validated.
fn read_entries(spec: &Spec, p: &Params) -> Result<Option<(Vec<String>, Value)>, ApiError> {
    let mut entries = p.opt_str_list(spec.entries)?;
    let mut extra = Vec::new();
    if let Some((field, key)) = spec.extra {
        if let Some(items) = p.opt_typed::<Vec<Map<String, Value>>>(field)? {
            for item in items {
                for k in item.keys() {
                    if k != key && k != "Description" {
                        return Err(ApiError::new(
                            ErrorCode::UnknownParameter,
                            format!("{field}: the parameter `{k}` is not recognized"),
                        ));
                    }
                }
                let value = item
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::missing(&format!("{field}.{key}")))?
                    .to_string();
                let desc = item
                    .get("Description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                entries.get_or_insert_with(Vec::new).push(value.clone());
                extra.push(json!({ key: value, "Description": desc }));
            }
        }
    }
    let Some(entries) = entries else {
        return Ok(None);
    };
    // `Addresses` and `AddressesExtra` are each bounded before this
    // (`bounds`); together they must be too.
    if entries.len() > MAX_TEMPLATE_ENTRIES {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!(
                "{}: {} entries in all, at most {MAX_TEMPLATE_ENTRIES}",
                spec.entries,
                entries.len()
            ),
        ));
    }
    let entries: Vec<String> = entries.iter().map(|e| e.trim().to_string()).collect();
    let mut seen = HashSet::with_capacity(entries.len());
    for e in &entries {
        if !seen.insert(e.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueDuplicate,
                format!("{} {e:?} is given twice", spec.entries),
            ));
        }
        match spec.kind {
            TemplateKind::Address => {
                AddressEntry::parse_field(spec.entries, e)?;
            }
            TemplateKind::Service => {
                ServiceEntry::parse_field(spec.entries, e)?;
            }
            TemplateKind::AddressGroup => {
                palisade_model::AddressTemplateId::parse_field(spec.entries, e)?;
            }
            TemplateKind::ServiceGroup => {
                palisade_model::ServiceTemplateId::parse_field(spec.entries, e)?;
            }
        }
    }
    Ok(Some((entries, Value::Array(extra))))
}

fn check_members(
    ctx: &Ctx<'_>,
    tx: &dyn Tx,
    spec: &Spec,
    members: &[String],
) -> Result<(), ApiError> {
    let Some(kind) = spec.member else {
        return Ok(());
    };
    for m in members {
        match tx.template(ctx.account, m)? {
            Some(t) if t.kind == kind => {}
            _ => return Err(ApiError::not_found(spec.entries, m)),
        }
    }
    Ok(())
}

fn load(ctx: &Ctx<'_>, tx: &dyn Tx, spec: &Spec, id: &str) -> Result<TemplateRecord, ApiError> {
    match spec.kind {
        TemplateKind::Address => {
            palisade_model::AddressTemplateId::parse_field(spec.id, id)?;
        }
        TemplateKind::AddressGroup => {
            palisade_model::AddressTemplateGroupId::parse_field(spec.id, id)?;
        }
        TemplateKind::Service => {
            palisade_model::ServiceTemplateId::parse_field(spec.id, id)?;
        }
        TemplateKind::ServiceGroup => {
            palisade_model::ServiceTemplateGroupId::parse_field(spec.id, id)?;
        }
    }
    match tx.template(ctx.account, id)? {
        Some(t) if t.kind == spec.kind => Ok(t),
        _ => Err(ApiError::not_found(spec.id, id)),
    }
}

fn create(ctx: &Ctx<'_>, spec: &Spec, p: &Params) -> Reply {
    let mut known = vec![spec.name, spec.entries, "Tags"];
    if let Some((f, _)) = spec.extra {
        known.push(f);
    }
    p.allow_only(&known)?;
    let name = p.req_str(spec.name)?;
    check_name(spec.name, &name, MAX_NAME)?;
    let (members, extra) = read_entries(spec, p)?.ok_or_else(|| ApiError::missing(spec.entries))?;
    if members.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueEmpty,
            format!("{} must not be empty", spec.entries),
        ));
    }
    let tags: Vec<Tag> = p.tags()?;
    let rec = ctx.write(|tx| {
        check_members(ctx, tx, spec, &members)?;
        let time = now();
        let t = TemplateRecord {
            id: new_id(spec.prefix),
            kind: spec.kind,
            name,
            members,
            extra,
            tags,
            created_time: time.clone(),
            updated_time: time,
        };
        tx.insert_template(ctx.account, &t).map_err(map_insert)?;
        Ok(t)
    })?;
    let obj = ctx.read(|tx| object_json(ctx, tx, spec, &rec))?;
    let mut m = Map::new();
    m.insert(spec.object.to_string(), obj);
    Ok(m)
}

fn delete(ctx: &Ctx<'_>, spec: &Spec, p: &Params) -> Reply {
    p.allow_only(&[spec.id])?;
    let id = p.req_str(spec.id)?;
    ctx.write(|tx| {
        load(ctx, tx, spec, &id)?;
        let users = tx.referrers(ctx.account, &id)?;
        if !users.is_empty() {
            return Err(ApiError::new(
                ErrorCode::ResourceInUse,
                format!("{} {id:?} is in use by {}", spec.id, users.join(", ")),
            ));
        }
        tx.delete_template(ctx.account, &id)?;
        Ok(())
    })?;
    reply(json!({}))
}

fn modify(ctx: &Ctx<'_>, spec: &Spec, p: &Params) -> Reply {
    let mut known = vec![spec.id, spec.name, spec.entries];
    if let Some((f, _)) = spec.extra {
        known.push(f);
    }
    p.allow_only(&known)?;
    let id = p.req_str(spec.id)?;
    let name = p.opt_str(spec.name)?;
    if let Some(n) = &name {
        check_name(spec.name, n, MAX_NAME)?;
    }
    let entries = read_entries(spec, p)?;
    if let Some((m, _)) = &entries {
        if m.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueEmpty,
                format!("{} must not be empty", spec.entries),
            ));
        }
    }
    ctx.write(|tx| {
        let mut t = load(ctx, tx, spec, &id)?;
        if let Some(n) = name {
            t.name = n;
        }
        if let Some((members, extra)) = entries {
            check_members(ctx, tx, spec, &members)?;
            t.members = members;
            t.extra = extra;
        }
        t.updated_time = now();
        tx.update_template(ctx.account, &t)?;
        Ok(())
    })?;
    reply(json!({}))
}

fn describe(ctx: &Ctx<'_>, spec: &Spec, p: &Params) -> Reply {
    p.allow_only(&[
        "Filters",
        "Offset",
        "Limit",
        "NeedMemberInfo",
        "OrderField",
        "OrderDirection",
        "MemberOrderField",
        "MemberOrderDirection",
    ])?;
    let [by_name, by_id, by_entry] = spec.filters;
    let filters = p.filters(&[by_name, by_id, by_entry, "tag-key", "tag:"])?;
    let (offset, limit) = p.page(1000)?;
    p.opt_bool("NeedMemberInfo")?;
    let desc = matches!(
        p.opt_str("OrderDirection")?.as_deref(),
        Some("DESC" | "desc")
    );
    let (total, page) = ctx.read(|tx| {
        let mut all = tx.templates(ctx.account, spec.kind)?;
        for f in &filters {
            let mut keep = Vec::new();
            for t in all {
                let mut hit = false;
                for v in &f.values {
                    hit |= match f.name.as_str() {
                        n if n == by_name => t.name.contains(v.as_str()),
                        n if n == by_id => &t.id == v,
                        n if n == by_entry => entry_matches(ctx, tx, spec, &t, v)?,
                        "tag-key" => t.tags.iter().any(|tag| &tag.key == v),
                        n => {
                            let key = n.trim_start_matches("tag:");
                            t.tags.iter().any(|tag| tag.key == key && &tag.value == v)
                        }
                    };
                }
                if hit {
                    keep.push(t);
                }
            }
            all = keep;
        }
        if desc {
            all.reverse();
        }
        let total = all.len();
        let page = paginate(all, offset, limit)
            .iter()
            .map(|t| object_json(ctx, tx, spec, t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((total, page))
    })?;
    let mut m = Map::new();
    m.insert("TotalCount".into(), json!(total));
    m.insert(spec.set.into(), Value::Array(page));
    Ok(m)
}

fn entry_matches(
    ctx: &Ctx<'_>,
    tx: &dyn Tx,
    spec: &Spec,
    t: &TemplateRecord,
    v: &str,
) -> Result<bool, ApiError> {
    let direct = |members: &[String], kind: TemplateKind| -> bool {
        members.iter().any(|m| {
            m == v
                || (kind == TemplateKind::Address
                    && AddressEntry::parse_field("", m).is_ok_and(|e| {
                        v.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| e.range().contains(ip))
                    }))
                || (kind == TemplateKind::Service
                    && ServiceEntry::parse_field("", m)
                        .is_ok_and(|e| v.parse::<u16>().is_ok_and(|n| e.ports.contains(n))))
        })
    };
    match spec.member {
        None => Ok(direct(&t.members, spec.kind)),
        Some(kind) => {
            for m in &t.members {
                if let Some(member) = tx.template(ctx.account, m)? {
                    if direct(&member.members, kind) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
    }
}

fn object_json(
    ctx: &Ctx<'_>,
    tx: &dyn Tx,
    spec: &Spec,
    t: &TemplateRecord,
) -> Result<Value, ApiError> {
    let mut m = Map::new();
    m.insert(spec.id.into(), json!(t.id));
    m.insert(spec.name.into(), json!(t.name));
    m.insert(spec.out_entries.into(), json!(t.members));
    m.insert("CreatedTime".into(), json!(t.created_time));
    m.insert("UpdatedTime".into(), json!(t.updated_time));
    m.insert("TagSet".into(), json!(t.tags));
    let extra = match spec.kind {
        TemplateKind::Address | TemplateKind::Service => {
            let key = spec.extra.map(|(_, k)| k).unwrap_or_default();
            let described: &[Value] = t.extra.as_array().map(Vec::as_slice).unwrap_or_default();
            t.members
                .iter()
                .map(|e| {
                    let desc = described
                        .iter()
                        .find(|x| x.get(key).and_then(Value::as_str) == Some(e.as_str()))
                        .and_then(|x| x.get("Description").and_then(Value::as_str))
                        .unwrap_or_default();
                    json!({ key: e, "Description": desc, "UpdatedTime": t.updated_time })
                })
                .collect::<Vec<_>>()
        }
        TemplateKind::AddressGroup => {
            let mut items = Vec::new();
            for id in &t.members {
                if let Some(member) = tx.template(ctx.account, id)? {
                    items.push(json!({
                        "AddressTemplateId": member.id,
                        "AddressTemplateName": member.name,
                        "From": "",
                        "To": "",
                        "Description": "",
                        "UpdatedTime": member.updated_time,
                    }));
                }
            }
            items
        }
        TemplateKind::ServiceGroup => {
            let mut items = Vec::new();
            for id in &t.members {
                if let Some(member) = tx.template(ctx.account, id)? {
                    items.push(object_json(ctx, tx, &SERVICE, &member)?);
                }
            }
            items
        }
    };
    m.insert(spec.out_extra.into(), Value::Array(extra));
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_template_action_and_nothing_else() {
        let cases = [
            ("CreateAddressTemplate", TemplateKind::Address, "Create"),
            (
                "DescribeAddressTemplates",
                TemplateKind::Address,
                "Describe",
            ),
            (
                "ModifyAddressTemplateAttribute",
                TemplateKind::Address,
                "Modify",
            ),
            (
                "DeleteAddressTemplateGroup",
                TemplateKind::AddressGroup,
                "Delete",
            ),
            (
                "DescribeAddressTemplateGroups",
                TemplateKind::AddressGroup,
                "Describe",
            ),
            (
                "ModifyServiceTemplateGroupAttribute",
                TemplateKind::ServiceGroup,
                "Modify",
            ),
            ("CreateServiceTemplate", TemplateKind::Service, "Create"),
        ];
        for (action, kind, verb) in cases {
            let (spec, v) = route(action).expect(action);
            assert_eq!((spec.kind, v), (kind, verb), "{action}");
        }
        for action in [
            "CreateAddressTemplates",
            "DescribeAddressTemplate",
            "ModifyAddressTemplate",
            "DescribeAddressTemplateInstances",
            "DescribeServiceTemplateGroupInstances",
            "CreateDefaultSecurityGroup",
        ] {
            assert!(route(action).is_none(), "{action}");
        }
    }
}
