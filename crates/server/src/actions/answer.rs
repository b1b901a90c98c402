//! Answers encoded straight from typed values. Most actions return their
//! fields as a `serde_json` map ([`super::Reply`]), which the envelope then
//! serializes; the hot describes instead encode their typed answer once,
//! to bytes, with no intermediate map of `Value`s ([`Answer::Encoded`]).
//!
//! The bytes are the same as the map path gives: `serde_json`'s map (no
//! `preserve_order`) writes an object's names in byte order, so every
//! encoder here writes its names in that order too, and skips the fields
//! the derived `Serialize` skips. Each destructures its struct without
//! `..`, so a field added to a wire type fails to compile here until it is
//! encoded; the tests compare both paths byte for byte.

use palisade_model::wire;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// A successful answer, without `RequestId`.
#[derive(Debug)]
pub enum Answer {
    /// Fields as a JSON map.
    Fields(Map<String, Value>),
    /// Fields already encoded: `(name, JSON text)` in byte order of the
    /// names, none of them `RequestId`.
    Encoded(Vec<(&'static str, Vec<u8>)>),
}

impl Answer {
    /// The answer of one field, `value` encoded.
    pub fn one<T: Serialize>(name: &'static str, value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::Encoded(vec![(name, serde_json::to_vec(value)?)]))
    }

    /// The fields as a map (what the in-process callers and the long-poll
    /// check read).
    pub fn fields(&self) -> Option<&Map<String, Value>> {
        match self {
            Self::Fields(m) => Some(m),
            Self::Encoded(_) => None,
        }
    }

    /// `{"Response":{...,"RequestId":...}}`, names in byte order, as
    /// `serde_json::to_vec(&json!({"Response": fields + RequestId}))` gives.
    pub fn envelope(self, request_id: &str) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Fields(mut m) => {
                m.insert("RequestId".into(), Value::String(request_id.to_string()));
                let mut out = Vec::with_capacity(256);
                out.extend_from_slice(b"{\"Response\":");
                serde_json::to_writer(&mut out, &m)?;
                out.push(b'}');
                Ok(out)
            }
            Self::Encoded(fields) => {
                let id = serde_json::to_vec(request_id)?;
                let len = fields
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>();
                let mut out = Vec::with_capacity(len + id.len() + 32);
                out.extend_from_slice(b"{\"Response\":{");
                let mut id = Some(id);
                let mut first = true;
                let mut field = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                    out.extend_from_slice(value);
                };
                for (name, value) in &fields {
                    if *name > "RequestId" {
                        if let Some(id) = id.take() {
                            field(&mut out, "RequestId", &id);
                        }
                    }
                    field(&mut out, name, value);
                }
                if let Some(id) = id.take() {
                    field(&mut out, "RequestId", &id);
                }
                out.extend_from_slice(b"}}");
                Ok(out)
            }
        }
    }
}

/// `SecurityGroupPolicySet`, names in byte order.
pub struct PolicySet<'a>(pub &'a wire::SecurityGroupPolicySet);

impl Serialize for PolicySet<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire::SecurityGroupPolicySet {
            version,
            ingress,
            egress,
            policy_statistics,
        } = self.0;
        let mut m = s.serialize_map(None)?;
        if let Some(v) = egress {
            m.serialize_entry("Egress", &Policies(v))?;
        }
        if let Some(v) = ingress {
            m.serialize_entry("Ingress", &Policies(v))?;
        }
        if let Some(v) = policy_statistics {
            let wire::PolicyStatistics {
                ingress_ipv4_total_count,
                ingress_ipv6_total_count,
                egress_ipv4_total_count,
                egress_ipv6_total_count,
            } = v;
            m.serialize_entry(
                "PolicyStatistics",
                &[
                    ("EgressIPv4TotalCount", egress_ipv4_total_count),
                    ("EgressIPv6TotalCount", egress_ipv6_total_count),
                    ("IngressIPv4TotalCount", ingress_ipv4_total_count),
                    ("IngressIPv6TotalCount", ingress_ipv6_total_count),
                ]
                .into_iter()
                .collect::<Sorted<'_, u64>>(),
            )?;
        }
        if let Some(v) = version {
            m.serialize_entry("Version", v)?;
        }
        m.end()
    }
}

/// A list of rules.
struct Policies<'a>(&'a [wire::SecurityGroupPolicy]);

impl Serialize for Policies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            seq.serialize_element(&Policy(p))?;
        }
        seq.end()
    }
}

/// `SecurityGroupPolicy`, names in byte order.
pub struct Policy<'a>(pub &'a wire::SecurityGroupPolicy);

impl Serialize for Policy<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire::SecurityGroupPolicy {
            policy_index,
            protocol,
            port,
            service_template,
            cidr_block,
            ipv6_cidr_block,
            security_group_id,
            address_template,
            action,
            policy_description,
            modify_time,
            priority,
        } = self.0;
        let mut m = s.serialize_map(None)?;
        if let Some(v) = action {
            m.serialize_entry("Action", v)?;
        }
        if let Some(v) = address_template {
            let wire::AddressTemplateSpecification {
                address_id,
                address_group_id,
            } = v;
            m.serialize_entry(
                "AddressTemplate",
                &[
                    ("AddressGroupId", address_group_id),
                    ("AddressId", address_id),
                ]
                .into_iter()
                .collect::<Sorted<'_, String>>(),
            )?;
        }
        if let Some(v) = cidr_block {
            m.serialize_entry("CidrBlock", v)?;
        }
        if let Some(v) = ipv6_cidr_block {
            m.serialize_entry("Ipv6CidrBlock", v)?;
        }
        if let Some(v) = modify_time {
            m.serialize_entry("ModifyTime", v)?;
        }
        if let Some(v) = policy_description {
            m.serialize_entry("PolicyDescription", v)?;
        }
        if let Some(v) = policy_index {
            m.serialize_entry("PolicyIndex", v)?;
        }
        if let Some(v) = port {
            m.serialize_entry("Port", v)?;
        }
        if let Some(v) = priority {
            m.serialize_entry("Priority", v)?;
        }
        if let Some(v) = protocol {
            m.serialize_entry("Protocol", v)?;
        }
        if let Some(v) = security_group_id {
            m.serialize_entry("SecurityGroupId", v)?;
        }
        if let Some(v) = service_template {
            let wire::ServiceTemplateSpecification {
                service_id,
                service_group_id,
            } = v;
            m.serialize_entry(
                "ServiceTemplate",
                &[
                    ("ServiceGroupId", service_group_id),
                    ("ServiceId", service_id),
                ]
                .into_iter()
                .collect::<Sorted<'_, String>>(),
            )?;
        }
        m.end()
    }
}

/// A small object whose names the caller listed in byte order.
struct Sorted<'a, T>(Vec<(&'static str, &'a T)>);

impl<'a, T> FromIterator<(&'static str, &'a T)> for Sorted<'a, T> {
    fn from_iter<I: IntoIterator<Item = (&'static str, &'a T)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<T: Serialize> Serialize for Sorted<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            m.serialize_entry(name, value)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_rule(i: i64) -> wire::SecurityGroupPolicy {
        wire::SecurityGroupPolicy {
            policy_index: Some(i),
            protocol: Some("TCP".into()),
            port: Some("80,443".into()),
            service_template: Some(wire::ServiceTemplateSpecification {
                service_id: "ppm-00000001".into(),
                service_group_id: "ppmg-00000001".into(),
            }),
            cidr_block: Some("10.0.0.0/8".into()),
            ipv6_cidr_block: Some("2001:db8::/32".into()),
            security_group_id: Some("sg-00000001".into()),
            address_template: Some(wire::AddressTemplateSpecification {
                address_id: "ipm-00000001".into(),
                address_group_id: "ipmg-00000001".into(),
            }),
            action: Some("ACCEPT".into()),
            policy_description: Some("quote \" and \u{e9}".into()),
            modify_time: Some("2026-12-03 17:00:00".into()),
            priority: Some(7),
        }
    }

    /// The map path: what the envelope wrote before encoded answers.
    fn via_map(fields: Map<String, Value>, request_id: &str) -> Vec<u8> {
        let mut m = fields;
        m.insert("RequestId".into(), Value::String(request_id.into()));
        json!({ "Response": m }).to_string().into_bytes()
    }

    #[test]
    fn a_policy_set_encodes_as_its_map_does() {
        let empty = wire::SecurityGroupPolicy::default();
        let sparse = wire::SecurityGroupPolicy {
            protocol: Some("ALL".into()),
            action: Some("DROP".into()),
            ..Default::default()
        };
        let sets = [
            wire::SecurityGroupPolicySet::default(),
            wire::SecurityGroupPolicySet {
                version: Some("12".into()),
                ingress: Some(vec![full_rule(0), sparse.clone(), empty.clone()]),
                egress: Some(vec![]),
                policy_statistics: Some(wire::PolicyStatistics {
                    ingress_ipv4_total_count: 1,
                    ingress_ipv6_total_count: 2,
                    egress_ipv4_total_count: 3,
                    egress_ipv6_total_count: 4,
                }),
            },
            wire::SecurityGroupPolicySet {
                version: Some("0".into()),
                ingress: None,
                egress: Some(vec![full_rule(3), sparse]),
                policy_statistics: None,
            },
        ];
        for set in &sets {
            let mut fields = Map::new();
            fields.insert(
                "SecurityGroupPolicySet".into(),
                serde_json::to_value(set).expect("encodes"),
            );
            let want = via_map(fields, "r-1");
            let got = Answer::one("SecurityGroupPolicySet", &PolicySet(set))
                .and_then(|a| a.envelope("r-1"))
                .expect("encodes");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn stored_rules_decode_as_a_group_record_gives_them() {
        use palisade_model::policy::{Direction, Policy};
        let rules: Vec<Policy> = [
            json!({"Protocol": "TCP", "Port": "22,80-90", "CidrBlock": "10.0.0.0/8",
                   "Action": "ACCEPT", "PolicyDescription": "ssh", "ModifyTime": "t"}),
            json!({"Protocol": "ALL", "SecurityGroupId": "sg-00000001", "Action": "DROP"}),
            json!({"ServiceTemplate": {"ServiceId": "ppm-00000001"},
                   "AddressTemplate": {"AddressGroupId": "ipmg-00000001"}, "Action": "ACCEPT"}),
            json!({"Protocol": "ICMPv6", "Ipv6CidrBlock": "2001:db8::/32", "Action": "ACCEPT"}),
        ]
        .iter()
        .map(|v| {
            let w: wire::SecurityGroupPolicy = serde_json::from_value(v.clone()).expect("wire");
            Policy::from_wire(&w).expect("valid")
        })
        .collect();
        let records: Vec<_> = rules
            .iter()
            .map(|p| super::super::encode_rule(p).expect("encodes"))
            .collect();
        let text = serde_json::to_string(&records).expect("encodes");
        let group = palisade_store::GroupRecord {
            id: "sg-00000002".into(),
            name: String::new(),
            description: String::new(),
            project_id: "0".into(),
            is_default: false,
            created_time: String::new(),
            update_time: String::new(),
            tags: vec![],
            version: 3,
            ingress: records,
            egress: vec![],
        };
        let want = super::super::rules_of(&group, Direction::Ingress).expect("decodes");
        assert_eq!(
            super::super::decode_stored_rules(&text).expect("decodes"),
            want
        );
        assert_eq!(want, rules);
        assert!(
            super::super::decode_stored_rules("[{\"body\": {\"Bogus\": 1}, \"refs\": []}]")
                .is_err()
        );
        assert!(super::super::decode_stored_rules("{}").is_err());
    }

    #[test]
    fn request_id_takes_its_place_among_the_names() {
        let fields = [
            ("AddressSet", "[1]"),
            ("TotalCount", "2"),
            ("Zeta", "\"z\""),
        ];
        for n in 0..=fields.len() {
            let encoded = Answer::Encoded(
                fields[..n]
                    .iter()
                    .map(|(k, v)| (*k, v.as_bytes().to_vec()))
                    .collect(),
            );
            let map: Map<String, Value> = fields[..n]
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::from_str(v).expect("json")))
                .collect();
            assert_eq!(
                encoded.envelope("id\"1").expect("encodes"),
                via_map(map.clone(), "id\"1")
            );
            assert_eq!(
                Answer::Fields(map.clone())
                    .envelope("id\"1")
                    .expect("encodes"),
                via_map(map, "id\"1")
            );
        }
    }
}
