//! History bounds, rollback and commit-confirmed reverts through the action
//! code itself (the same `dispatch` the HTTP layer calls), on SQLite: a
//! rollback is a new version with the old rules, a version beyond the
//! history limit is gone, a rollback that would name a deleted template is
//! refused and changes nothing, and an unconfirmed change reverts once its
//! deadline passes while a confirmed one stays.

use palisade_model::limits::Limits;
use palisade_server::actions::{self, changes, Ctx, RulesetCache};
use palisade_server::params::Params;
use palisade_store::{Location, Store, StoreExt, HISTORY_LIMIT_MARKER};
use serde_json::{json, Value};
use std::sync::Arc;

struct World {
    store: Arc<dyn Store>,
    account: String,
    limits: Limits,
    rulesets: RulesetCache,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = palisade_store::open(&Location::Sqlite(dir.path().join("p.db"))).expect("open");
        let account = store.create_account("h").expect("account").id;
        Self {
            store,
            account,
            limits: Limits::default(),
            rulesets: RulesetCache::default(),
            _dir: dir,
        }
    }

    fn call(&self, service: &str, action: &str, body: Value) -> Result<Value, String> {
        let params = Params::from_body(body.to_string().as_bytes()).expect("params");
        let ctx = Ctx {
            store: self.store.as_ref(),
            account: &self.account,
            limits: &self.limits,
            rulesets: &self.rulesets,
            agent_of: None,
        };
        actions::dispatch(&ctx, service, action, &params)
            .map(Value::Object)
            .map_err(|e| e.code.as_str().to_string())
    }

    fn ok(&self, service: &str, action: &str, body: Value) -> Value {
        self.call(service, action, body)
            .unwrap_or_else(|e| panic!("{action}: {e}"))
    }

    fn set_port(&self, sg: &str, port: &str) {
        self.ok(
            "vpc",
            "ModifySecurityGroupPolicies",
            json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [
                {"Protocol": "TCP", "Port": port, "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}}),
        );
    }

    /// `(Version, ingress ports)` of a group.
    fn rules(&self, sg: &str) -> (String, Vec<String>) {
        let s = self.ok(
            "vpc",
            "DescribeSecurityGroupPolicies",
            json!({ "SecurityGroupId": sg }),
        )["SecurityGroupPolicySet"]
            .clone();
        let ports = s["Ingress"]
            .as_array()
            .expect("ingress")
            .iter()
            .map(|r| r["Port"].as_str().unwrap_or_default().to_string())
            .collect();
        (s["Version"].as_str().unwrap_or_default().to_string(), ports)
    }

    fn group(&self) -> String {
        self.ok(
            "vpc",
            "CreateSecurityGroup",
            json!({"GroupName": "g", "GroupDescription": "d"}),
        )["SecurityGroup"]["SecurityGroupId"]
            .as_str()
            .expect("id")
            .to_string()
    }
}

#[test]
fn history_is_bounded_and_a_rollback_is_a_new_version() {
    let w = World::new();
    w.store
        .write(|tx| tx.set_marker(HISTORY_LIMIT_MARKER, 3))
        .expect("limit");
    let sg = w.group();
    for port in ["1", "2", "3", "4"] {
        w.set_port(&sg, port);
    }
    let h = w.ok(
        "palisade",
        "DescribeSecurityGroupHistory",
        json!({ "SecurityGroupId": sg }),
    );
    let versions: Vec<&str> = h["HistorySet"]
        .as_array()
        .expect("set")
        .iter()
        .map(|v| v["Version"].as_str().expect("version"))
        .collect();
    assert_eq!(versions, ["4", "3", "2"]);
    assert_eq!(
        h["HistorySet"][2]["SecurityGroupPolicySet"]["Ingress"][0]["Port"],
        "2"
    );
    // Version 1 fell out of the bound.
    assert_eq!(
        w.call(
            "palisade",
            "RollbackSecurityGroup",
            json!({"SecurityGroupId": sg, "ToVersion": "1"})
        ),
        Err("ResourceNotFound".into())
    );
    let r = w.ok(
        "palisade",
        "RollbackSecurityGroup",
        json!({"SecurityGroupId": sg, "ToVersion": "2"}),
    );
    assert_eq!(
        (r["Version"].as_str(), r["RestoredVersion"].as_str()),
        (Some("5"), Some("2"))
    );
    assert_eq!(w.rules(&sg), ("5".into(), vec!["2".into()]));
    // A stale Version is refused.
    assert_eq!(
        w.call(
            "palisade",
            "RollbackSecurityGroup",
            json!({"SecurityGroupId": sg, "ToVersion": "4", "Version": "4"})
        ),
        Err("UnsupportedOperation.VersionMismatch".into())
    );
}

#[test]
fn a_rollback_naming_a_deleted_template_changes_nothing() {
    let w = World::new();
    let sg = w.group();
    let ipm = w.ok(
        "vpc",
        "CreateAddressTemplate",
        json!({"AddressTemplateName": "a", "Addresses": ["10.1.0.0/16"]}),
    )["AddressTemplate"]["AddressTemplateId"]
        .as_str()
        .expect("id")
        .to_string();
    w.ok(
        "vpc",
        "ModifySecurityGroupPolicies",
        json!({"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [
            {"Protocol": "TCP", "Port": "22", "AddressTemplate": {"AddressId": ipm}, "Action": "ACCEPT"}]}}),
    );
    w.set_port(&sg, "443");
    w.ok(
        "vpc",
        "DeleteAddressTemplate",
        json!({ "AddressTemplateId": ipm }),
    );
    let before = w.rules(&sg);
    assert_eq!(
        w.call(
            "palisade",
            "RollbackSecurityGroup",
            json!({"SecurityGroupId": sg, "ToVersion": "1"})
        ),
        Err("ResourceNotFound".into())
    );
    assert_eq!(w.rules(&sg), before);
}

#[test]
fn an_unconfirmed_change_reverts_after_its_deadline_and_a_confirmed_one_stays() {
    let w = World::new();
    let sg = w.group();
    w.set_port(&sg, "22");
    let kept = w.ok(
        "palisade",
        "StartConfirmedChange",
        json!({"ConfirmWithin": 1}),
    )["ChangeId"]
        .as_str()
        .expect("id")
        .to_string();
    w.set_port(&sg, "80");
    assert_eq!(
        w.ok("palisade", "ConfirmChange", json!({ "ChangeId": kept }))["State"],
        "CONFIRMED"
    );
    let id = w.ok(
        "palisade",
        "StartConfirmedChange",
        json!({"ConfirmWithin": 1}),
    )["ChangeId"]
        .as_str()
        .expect("id")
        .to_string();
    w.set_port(&sg, "443");
    // Before the deadline nothing is due.
    assert_eq!(
        changes::revert_due(w.store.as_ref(), &w.limits).ok(),
        Some(0)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        changes::revert_due(w.store.as_ref(), &w.limits).ok(),
        Some(1)
    );
    // Reverted to the confirmed change's rules, as a new version.
    assert_eq!(w.rules(&sg), ("4".into(), vec!["80".into()]));
    assert_eq!(
        changes::revert_due(w.store.as_ref(), &w.limits).ok(),
        Some(0)
    );
    assert_eq!(
        w.call("palisade", "ConfirmChange", json!({ "ChangeId": id })),
        Err("UnsupportedOperation".into())
    );
    let set = w.ok("palisade", "DescribeConfirmedChanges", json!({}))["ChangeSet"].clone();
    assert_eq!(set[0]["ChangeId"], id.as_str());
    assert_eq!(set[0]["State"], "REVERTED");
    assert_eq!(set[1]["State"], "CONFIRMED");
}
