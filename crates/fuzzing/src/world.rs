//! The `actions` target's world: a small world of resources in a
//! fresh in-memory store (one of every kind, referencing each other), the
//! placeholders that let a fuzz input name them, and the input format.
//!
//! Input format of `actions`: up to [`MAX_CALLS`] calls separated by NUL
//! bytes; each call is `Action\nBODY`, where `Action` is any action name
//! (unknown names exercise `InvalidAction`) and `BODY` the raw request body.
//! `$SG1`, `$SG2`, `$IPM`, `$IPMG`, `$PPM`, `$PPMG`, `$INS` and `$CLS` in a
//! body are replaced by the ids of the world's resources, so a seed can name
//! them although generated ids differ from run to run.

use palisade_model::Limits;
use palisade_server::actions::{self, Ctx};
use palisade_server::error::ApiError;
use palisade_server::params::Params;
use palisade_store::{SqliteStore, Store};
use serde_json::{json, Map, Value};

/// At most this many calls per input.
pub const MAX_CALLS: usize = 8;

/// A store with one account and one resource of every kind.
pub struct World {
    /// The store (in memory).
    pub store: SqliteStore,
    /// The account's id.
    pub account: String,
    /// Limits in force.
    pub limits: Limits,
    /// Placeholder -> id.
    pub ids: Vec<(&'static str, String)>,
}

/// The instance id the world registers (instances take chosen ids).
pub const INSTANCE: &str = "ins-fuzz0001";
/// The cluster id the world registers.
pub const CLUSTER: &str = "cls-fuzz0001";

impl World {
    /// Builds the world. Panics only if the server refuses a valid request,
    /// which is itself a finding.
    pub fn new() -> World {
        let store = SqliteStore::open(std::path::Path::new(":memory:")).expect("in-memory store");
        let account = store.create_account("fuzz").expect("account").id;
        let mut w = World {
            store,
            account,
            limits: Limits::default(),
            ids: Vec::new(),
        };
        let ipm = w.must("vpc", "CreateAddressTemplate", json!({
            "AddressTemplateName": "a", "Addresses": ["10.0.0.1", "10.1.0.0/16", "10.2.0.1-10.2.0.9"]
        }))["AddressTemplate"]["AddressTemplateId"].clone();
        let ipmg = w.must(
            "vpc",
            "CreateAddressTemplateGroup",
            json!({
                "AddressTemplateGroupName": "ag", "AddressTemplateIds": [ipm]
            }),
        )["AddressTemplateGroup"]["AddressTemplateGroupId"]
            .clone();
        let ppm = w.must(
            "vpc",
            "CreateServiceTemplate",
            json!({
                "ServiceTemplateName": "s", "Services": ["tcp:80", "udp:53,5353", "icmp"]
            }),
        )["ServiceTemplate"]["ServiceTemplateId"]
            .clone();
        let ppmg = w.must(
            "vpc",
            "CreateServiceTemplateGroup",
            json!({
                "ServiceTemplateGroupName": "sg", "ServiceTemplateIds": [ppm]
            }),
        )["ServiceTemplateGroup"]["ServiceTemplateGroupId"]
            .clone();
        let sg2 = w.must(
            "vpc",
            "CreateSecurityGroup",
            json!({
                "GroupName": "peer", "GroupDescription": "d"
            }),
        )["SecurityGroup"]["SecurityGroupId"]
            .clone();
        let sg1 = w.must("vpc", "CreateSecurityGroupWithPolicies", json!({
            "GroupName": "web", "GroupDescription": "d",
            "SecurityGroupPolicySet": {
                "Ingress": [
                    {"Protocol": "TCP", "Port": "22,80-90", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
                    {"Protocol": "UDP", "Port": "ALL", "Ipv6CidrBlock": "fd00::/8", "Action": "DROP"},
                    {"Protocol": "ALL", "SecurityGroupId": sg2, "Action": "ACCEPT"},
                    {"ServiceTemplate": {"ServiceId": ppm}, "AddressTemplate": {"AddressId": ipm}, "Action": "ACCEPT"},
                    {"ServiceTemplate": {"ServiceGroupId": ppmg}, "AddressTemplate": {"AddressGroupId": ipmg}, "Action": "DROP"}
                ],
                "Egress": [{"Protocol": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
            }
        }))["SecurityGroup"]["SecurityGroupId"].clone();
        w.must("palisade", "RegisterInstances", json!({
            "Instances": [{"InstanceId": INSTANCE, "InstanceName": "n1", "PrivateIpAddresses": ["10.0.0.5"]}]
        }));
        w.must(
            "cvm",
            "AssociateSecurityGroups",
            json!({
                "SecurityGroupIds": [sg1], "InstanceIds": [INSTANCE]
            }),
        );
        w.must("palisade", "RegisterCluster", json!({
            "ClusterId": CLUSTER, "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.16.0.0/16",
            "Nodes": [INSTANCE]
        }));
        let text = |v: Value| v.as_str().expect("id is a string").to_string();
        w.ids = vec![
            ("$SG1", text(sg1)),
            ("$SG2", text(sg2)),
            ("$IPMG", text(ipmg)),
            ("$IPM", text(ipm)),
            ("$PPMG", text(ppmg)),
            ("$PPM", text(ppm)),
            ("$INS", INSTANCE.to_string()),
            ("$CLS", CLUSTER.to_string()),
        ];
        w
    }

    fn must(&self, service: &str, action: &str, body: Value) -> Value {
        let body = body.to_string();
        match self.call(service, action, body.as_bytes()) {
            Ok(m) => Value::Object(m),
            Err(e) => panic!("world setup: {action} {body}: {e}"),
        }
    }

    /// Runs one action with the raw `body` as the request parameters, as the
    /// HTTP layer does after authentication.
    pub fn call(
        &self,
        service: &str,
        action: &str,
        body: &[u8],
    ) -> Result<Map<String, Value>, ApiError> {
        let params = Params::from_body(body)?;
        let ctx = Ctx {
            store: &self.store,
            account: &self.account,
            limits: &self.limits,
            rulesets: &actions::RulesetCache::default(),
            agent_of: None,
        };
        actions::dispatch(&ctx, service, action, &params)
    }

    /// `body` with the placeholders replaced (longest names first).
    pub fn substitute(&self, body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        for (name, id) in &self.ids {
            out = replace(&out, name.as_bytes(), id.as_bytes());
        }
        out
    }

    /// The store's revision.
    pub fn revision(&self) -> u64 {
        self.store.revision().expect("revision")
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// The service serving `action`, if it is one.
pub fn service_of(action: &str) -> Option<&'static str> {
    actions::ACTIONS
        .iter()
        .find(|(_, a)| *a == action)
        .map(|(s, _)| *s)
}

/// Splits a fuzz input into `(action, body)` calls.
pub fn calls(data: &[u8]) -> Vec<(String, &[u8])> {
    data.split(|b| *b == 0)
        .take(MAX_CALLS)
        .filter_map(|call| {
            let nl = call.iter().position(|b| *b == b'\n')?;
            let action = std::str::from_utf8(&call[..nl]).ok()?;
            Some((action.to_string(), &call[nl + 1..]))
        })
        .collect()
}

/// Whether `code` is spelled like a Tencent error code (`Word` or
/// `Word.Word...`, ASCII letters and digits).
pub fn well_formed_code(code: &str) -> bool {
    !code.is_empty()
        && code.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && part.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
