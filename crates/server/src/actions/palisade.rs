//! Palisade's own service (`palisade`, version `2026-11-01`): register and
//! deregister instances (nodes), and show an instance's resolved ruleset —
//! its groups' rules in binding order with group references and templates
//! expanded to address sets — together with the store revision it was
//! computed at. This is what an agent enforces.

use super::cvm::check_instance_id;
use super::{map_insert, new_id, now, reply, rules_of, Ctx, Reply};
use crate::error::ApiError;
use crate::params::Params;
use palisade_model::policy::{Direction, Peer, Policy, Service};
use palisade_model::{AddressEntry, Family, ServiceEntry};
use palisade_store::{InstanceRecord, TemplateKind, Tx};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewInstance {
    instance_id: Option<String>,
    instance_name: Option<String>,
    private_ip_addresses: Option<Vec<String>>,
}

/// `RegisterInstances`: creates instances (or updates the name and IPs of
/// ones that exist); ids are generated when absent.
pub fn register(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["Instances"])?;
    let list: Vec<NewInstance> = p.req_typed("Instances")?;
    if list.is_empty() {
        return Err(ApiError::new(
            "InvalidParameterValue.Empty",
            "Instances must not be empty",
        ));
    }
    if list.len() > 100 {
        return Err(ApiError::new(
            "InvalidParameterValue.LimitExceeded",
            format!("Instances: {} instances, at most 100 per call", list.len()),
        ));
    }
    let mut prepared = Vec::new();
    for (n, i) in list.into_iter().enumerate() {
        let id = match i.instance_id.filter(|s| !s.is_empty()) {
            Some(id) => {
                palisade_model::InstanceId::parse_field(
                    &format!("Instances[{n}].InstanceId"),
                    &id,
                )?;
                Some(id)
            }
            None => None,
        };
        let ips = i
            .private_ip_addresses
            .ok_or_else(|| ApiError::missing(&format!("Instances[{n}].PrivateIpAddresses")))?;
        if ips.is_empty() {
            return Err(ApiError::new(
                "InvalidParameterValue.Empty",
                format!("Instances[{n}].PrivateIpAddresses must not be empty"),
            ));
        }
        for ip in &ips {
            ip.parse::<IpAddr>().map_err(|_| {
                ApiError::malformed(
                    &format!("Instances[{n}].PrivateIpAddresses"),
                    ip,
                    "expected an IPv4 or IPv6 address",
                )
            })?;
        }
        let name = i.instance_name.unwrap_or_default();
        if name.chars().count() > 60 {
            return Err(ApiError::new(
                "InvalidParameterValue.TooLong",
                format!("Instances[{n}].InstanceName: longer than 60 characters"),
            ));
        }
        prepared.push((id, name, ips));
    }
    let ids = ctx.write(|tx| {
        let mut ids = Vec::new();
        for (id, name, ips) in prepared {
            match id
                .as_deref()
                .map(|id| tx.instance(ctx.account, id))
                .transpose()?
                .flatten()
            {
                Some(mut existing) => {
                    existing.name = name;
                    existing.private_ips = ips;
                    tx.update_instance(ctx.account, &existing)?;
                    ids.push(existing.id);
                }
                None => {
                    let rec = InstanceRecord {
                        id: id.unwrap_or_else(|| new_id("ins-")),
                        name,
                        private_ips: ips,
                        created_time: now(),
                        security_group_ids: Vec::new(),
                    };
                    tx.insert_instance(ctx.account, &rec).map_err(map_insert)?;
                    ids.push(rec.id);
                }
            }
        }
        Ok(ids)
    })?;
    reply(json!({ "InstanceIdSet": ids }))
}

/// `DeregisterInstances`.
pub fn deregister(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceIds"])?;
    let ids = p.req_str_list("InstanceIds")?;
    for id in &ids {
        check_instance_id(id)?;
    }
    ctx.write(|tx| {
        for id in &ids {
            if tx.instance(ctx.account, id)?.is_none() {
                return Err(ApiError::not_found("InstanceIds", id));
            }
            tx.delete_instance(ctx.account, id)?;
        }
        Ok(())
    })?;
    reply(json!({}))
}

/// `DescribeInstanceRuleset`: `InstanceId` -> the resolved ordered rules of
/// each direction and the store revision.
pub fn describe_ruleset(ctx: &Ctx<'_>, p: &Params) -> Reply {
    p.allow_only(&["InstanceId"])?;
    let id = p.req_str("InstanceId")?;
    check_instance_id(&id)?;
    let out = ctx.read(|tx| {
        let ins = tx
            .instance(ctx.account, &id)?
            .ok_or_else(|| ApiError::not_found("InstanceId", &id))?;
        let revision = tx.revision()?;
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        for gid in &ins.security_group_ids {
            let Some(g) = tx.group(ctx.account, gid)? else {
                continue;
            };
            for dir in Direction::BOTH {
                for (index, rule) in rules_of(&g, dir)?.iter().enumerate() {
                    let resolved = resolve(tx, ctx.account, gid, index, rule)?;
                    match dir {
                        Direction::Ingress => ingress.extend(resolved),
                        Direction::Egress => egress.extend(resolved),
                    }
                }
            }
        }
        Ok(json!({
            "InstanceId": ins.id,
            "Revision": revision,
            "SecurityGroupIds": ins.security_group_ids,
            "PrivateIpAddresses": ins.private_ips,
            "Ingress": ingress,
            "Egress": egress,
        }))
    })?;
    reply(json!({ "Ruleset": out }))
}

fn members(
    tx: &dyn Tx,
    account: &str,
    id: &str,
    kind: TemplateKind,
) -> Result<Vec<String>, ApiError> {
    Ok(tx
        .template(account, id)?
        .filter(|t| t.kind == kind)
        .map(|t| t.members)
        .unwrap_or_default())
}

/// One resolved entry per service of the rule, each with the full address set.
fn resolve(
    tx: &dyn Tx,
    account: &str,
    group: &str,
    index: usize,
    rule: &Policy,
) -> Result<Vec<Value>, ApiError> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut push_entry = |text: &str| -> Result<(), ApiError> {
        let e = AddressEntry::parse_field("Addresses", text)?;
        for c in e.range().to_cidrs() {
            match c.family() {
                Family::V4 => v4.push(c.to_string()),
                Family::V6 => v6.push(c.to_string()),
            }
        }
        Ok(())
    };
    match &rule.peer {
        Peer::Cidr(c) | Peer::Ipv6Cidr(c) => push_entry(&c.to_string())?,
        Peer::SecurityGroup(g) => {
            for ins in tx.group_instances(account, g.as_str())? {
                if let Some(i) = tx.instance(account, &ins)? {
                    for ip in &i.private_ips {
                        push_entry(ip)?;
                    }
                }
            }
        }
        Peer::AddressTemplate(t) => {
            for a in members(tx, account, t.as_str(), TemplateKind::Address)? {
                push_entry(&a)?;
            }
        }
        Peer::AddressTemplateGroup(t) => {
            for m in members(tx, account, t.as_str(), TemplateKind::AddressGroup)? {
                for a in members(tx, account, &m, TemplateKind::Address)? {
                    push_entry(&a)?;
                }
            }
        }
    }
    let services: Vec<(String, String)> = match &rule.service {
        Service::Protocol { protocol, ports } => {
            vec![(protocol.as_str().to_string(), ports.to_string())]
        }
        Service::Template(t) => {
            service_entries(&members(tx, account, t.as_str(), TemplateKind::Service)?)?
        }
        Service::TemplateGroup(t) => {
            let mut all = Vec::new();
            for m in members(tx, account, t.as_str(), TemplateKind::ServiceGroup)? {
                all.extend(service_entries(&members(
                    tx,
                    account,
                    &m,
                    TemplateKind::Service,
                )?)?);
            }
            all
        }
    };
    let wire = rule.to_wire(index);
    Ok(services
        .into_iter()
        .map(|(protocol, port)| {
            json!({
                "SecurityGroupId": group,
                "PolicyIndex": index,
                "Protocol": protocol,
                "Port": port,
                "Action": rule.action.as_str(),
                "Peer": peer_json(&wire),
                "CidrBlocks": v4,
                "Ipv6CidrBlocks": v6,
                "PolicyDescription": rule.description,
            })
        })
        .collect())
}

fn service_entries(list: &[String]) -> Result<Vec<(String, String)>, ApiError> {
    list.iter()
        .map(|s| {
            let e = ServiceEntry::parse_field("Services", s)?;
            Ok((e.protocol.as_str().to_string(), e.ports.to_string()))
        })
        .collect()
}

fn peer_json(w: &palisade_model::wire::SecurityGroupPolicy) -> Value {
    json!({
        "CidrBlock": w.cidr_block,
        "Ipv6CidrBlock": w.ipv6_cidr_block,
        "SecurityGroupId": w.security_group_id,
        "AddressTemplate": w.address_template,
    })
}
