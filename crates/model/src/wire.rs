//! The Tencent wire types: PascalCase JSON exactly as `tccli` prints it and
//! the SDKs send it. These types accept anything shaped right and validate
//! nothing; `policy::Policy::from_wire` is where validation happens
//! ("parse, don't validate", STYLE.md). Empty strings count as absent, since
//! Tencent prints unused fields as `""`. Numbers are accepted where Tencent's
//! examples send strings and the other way round (`PolicyIndex`, `Port`,
//! `Version`), so that YAML's `Port: 80` works too. The API is stricter, as
//! Tencent's is: [`check_api_types`] refuses a number where Tencent
//! documents a string, before these types see the request.

use serde::{Deserialize, Deserializer, Serialize};

/// `SecurityGroupPolicy`: one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecurityGroupPolicy {
    /// Position in its direction's list, 0 = top.
    #[serde(
        default,
        deserialize_with = "int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_index: Option<i64>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE` or `ALL`.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol: Option<String>,
    /// The port spec (TCP and UDP only).
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<String>,
    /// A service template or group in place of `Protocol` and `Port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_template: Option<ServiceTemplateSpecification>,
    /// An IPv4 CIDR or IP peer.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub cidr_block: Option<String>,
    /// An IPv6 CIDR or IP peer.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_cidr_block: Option<String>,
    /// A security group whose instances are the peer.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_group_id: Option<String>,
    /// An address template or group peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_template: Option<AddressTemplateSpecification>,
    /// `ACCEPT` or `DROP`.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<String>,
    /// Free text, at most 100 characters.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_description: Option<String>,
    /// When the rule last changed (output).
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub modify_time: Option<String>,
    /// Tencent's newer priority field; kept, not used for ordering.
    #[serde(
        default,
        deserialize_with = "int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<i64>,
}

/// `ServiceTemplateSpecification`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceTemplateSpecification {
    /// A `ppm-` id.
    #[serde(default)]
    pub service_id: String,
    /// A `ppmg-` id.
    #[serde(default)]
    pub service_group_id: String,
}

/// `AddressTemplateSpecification`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AddressTemplateSpecification {
    /// An `ipm-` id.
    #[serde(default)]
    pub address_id: String,
    /// An `ipmg-` id.
    #[serde(default)]
    pub address_group_id: String,
}

/// `SecurityGroupPolicySet`: both directions of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecurityGroupPolicySet {
    /// The policy set version, a decimal counter.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    /// Ingress rules in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<SecurityGroupPolicy>>,
    /// Egress rules in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<SecurityGroupPolicy>>,
    /// Output only: rule counts per direction and family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_statistics: Option<PolicyStatistics>,
}

/// `PolicyStatistics` (output only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyStatistics {
    /// Ingress rules with an IPv4 peer.
    #[serde(rename = "IngressIPv4TotalCount", default)]
    pub ingress_ipv4_total_count: u64,
    /// Ingress rules with an IPv6 peer.
    #[serde(rename = "IngressIPv6TotalCount", default)]
    pub ingress_ipv6_total_count: u64,
    /// Egress rules with an IPv4 peer.
    #[serde(rename = "EgressIPv4TotalCount", default)]
    pub egress_ipv4_total_count: u64,
    /// Egress rules with an IPv6 peer.
    #[serde(rename = "EgressIPv6TotalCount", default)]
    pub egress_ipv6_total_count: u64,
}

/// A JSON value of the wrong type in an API request: where, relative to the
/// checked value (`Ingress.2.Port`), and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMismatch {
    /// The dotted path below the checked value (Tencent's style).
    pub path: String,
    /// What the field must be.
    pub expected: &'static str,
}

/// The fields of a rule that take an integer or a string holding one:
/// Tencent's own examples send `PolicyIndex` both ways. Every other scalar
/// field of a rule is a string in Tencent's API.
const INT_OR_STRING: &[&str] = &["PolicyIndex", "Priority"];

/// Checks the JSON types of a `SecurityGroupPolicySet` as Tencent's API
/// does: `Version` and every scalar rule field other than `PolicyIndex`
/// and `Priority` must be a string (`"Port": 81` is refused, as Tencent
/// refuses it). Fleet files keep the leniency of the wire types (YAML's
/// `Port: 80`); only the server calls this. Shapes the wire types refuse
/// anyway (a list for `Ingress`, an unknown field) are left to them.
pub fn check_api_types(set: &serde_json::Value) -> Result<(), TypeMismatch> {
    use serde_json::Value;
    let Value::Object(set) = set else {
        return Ok(());
    };
    let string = |path: String, v: &Value| match v {
        Value::String(_) | Value::Null => Ok(()),
        _ => Err(TypeMismatch {
            path,
            expected: "a string",
        }),
    };
    if let Some(v) = set.get("Version") {
        string("Version".into(), v)?;
    }
    for dir in ["Ingress", "Egress"] {
        let Some(Value::Array(rules)) = set.get(dir) else {
            continue;
        };
        for (i, rule) in rules.iter().enumerate() {
            let Value::Object(rule) = rule else {
                continue;
            };
            for (field, v) in rule {
                let path = format!("{dir}.{i}.{field}");
                match field.as_str() {
                    f if INT_OR_STRING.contains(&f) => match v {
                        Value::String(_) | Value::Number(_) | Value::Null => {}
                        _ => {
                            return Err(TypeMismatch {
                                path,
                                expected: "an integer or a string",
                            })
                        }
                    },
                    // Objects, checked field by field by their wire types.
                    "ServiceTemplate" | "AddressTemplate" => {}
                    _ => string(path, v)?,
                }
            }
        }
    }
    Ok(())
}

/// Takes an absent value, a string or a number; `""` counts as absent.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Str(String),
        Int(i64),
        UInt(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => None,
        Some(Raw::Str(s)) if s.is_empty() => None,
        Some(Raw::Str(s)) => Some(s),
        Some(Raw::Int(n)) => Some(n.to_string()),
        Some(Raw::UInt(n)) => Some(n.to_string()),
        Some(Raw::Float(n)) => Some(n.to_string()),
        Some(Raw::Bool(b)) => Some(b.to_string()),
    })
}

/// Takes an absent value, an integer, or a string holding one.
fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Str(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Int(n)) => Ok(Some(n)),
        Some(Raw::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Raw::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tccli_output() {
        let json = r#"{"Version":"3","Ingress":[{"PolicyIndex":0,"Protocol":"TCP","Port":"22",
            "ServiceTemplate":{"ServiceId":"","ServiceGroupId":""},"CidrBlock":"203.0.113.0/24",
            "Ipv6CidrBlock":"","SecurityGroupId":"","AddressTemplate":{"AddressId":"","AddressGroupId":""},
            "Action":"ACCEPT","PolicyDescription":"ssh","ModifyTime":"2026-01-01 00:00:00"}],
            "Egress":[],"PolicyStatistics":{"IngressIPv4TotalCount":1,"IngressIPv6TotalCount":0,
            "EgressIPv4TotalCount":0,"EgressIPv6TotalCount":0}}"#;
        let set: SecurityGroupPolicySet = serde_json::from_str(json).unwrap();
        let rule = &set.ingress.as_ref().unwrap()[0];
        assert_eq!(rule.port.as_deref(), Some("22"));
        assert_eq!(rule.ipv6_cidr_block, None);
        assert_eq!(set.version.as_deref(), Some("3"));
    }

    #[test]
    fn accepts_numbers_and_string_indexes() {
        let rule: SecurityGroupPolicy =
            serde_json::from_str(r#"{"PolicyIndex":"2","Port":80,"Protocol":"tcp"}"#).unwrap();
        assert_eq!(rule.policy_index, Some(2));
        assert_eq!(rule.port.as_deref(), Some("80"));
        assert!(serde_json::from_str::<SecurityGroupPolicy>(r#"{"PolicyIndex":"x"}"#).is_err());
    }

    #[test]
    fn the_api_wants_strings_where_tencent_documents_them() {
        let check = |json: &str| check_api_types(&serde_json::from_str(json).unwrap());
        assert_eq!(
            check(r#"{"Ingress":[{"PolicyIndex":0,"Port":"81"},{"PolicyIndex":"1"}]}"#),
            Ok(())
        );
        let err = check(r#"{"Ingress":[{"Port":"80"},{"Port":"80"},{"Port":81}]}"#).unwrap_err();
        assert_eq!(err.path, "Ingress.2.Port");
        assert_eq!(
            check(r#"{"Egress":[{"Action":["ACCEPT"]}]}"#)
                .unwrap_err()
                .path,
            "Egress.0.Action"
        );
        assert_eq!(check(r#"{"Version":3}"#).unwrap_err().path, "Version");
        assert!(check(r#"{"Ingress":[{"PolicyIndex":[1]}]}"#).is_err());
    }

    #[test]
    fn rejects_unknown_fields() {
        let err = serde_json::from_str::<SecurityGroupPolicy>(r#"{"Protocl":"tcp"}"#).unwrap_err();
        assert!(err.to_string().contains("Protocl"));
    }
}
