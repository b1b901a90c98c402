//! The [`Store`] contract, run against every backend: SQLite always,
//! PostgreSQL when `PALISADE_TEST_PG` names a server whose role may create
//! databases (each test gets a fresh database; `scripts/test.sh` starts a
//! private cluster and sets it). Without it the PostgreSQL half is skipped
//! with a printed reason.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

use palisade_store::{
    DocKind, Document, GroupRecord, InstanceRecord, Location, PgStore, RuleRecord, Store,
    StoreError, StoreExt,
};
use std::sync::Arc;
use std::time::Duration;

struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    /// Opens a second handle on the same database (another process's view).
    reopen: Box<dyn Fn() -> Arc<dyn Store>>,
    _dir: Option<tempfile::TempDir>,
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db").join("palisade.db");
    let loc = Location::Sqlite(path);
    let l2 = loc.clone();
    let mut out = vec![Backend {
        name: "sqlite",
        store: palisade_store::open(&loc).expect("open sqlite"),
        reopen: Box::new(move || palisade_store::open(&l2).expect("reopen sqlite")),
        _dir: Some(dir),
    }];
    if let Some(base) = palisade_testkit::postgres("the PostgreSQL half of the conformance suite") {
        let url = palisade_store::scratch_database(&base).expect("create scratch database");
        let u2 = url.clone();
        out.push(Backend {
            name: "postgres",
            store: Arc::new(PgStore::open(&url).expect("open postgres")),
            reopen: Box::new(move || Arc::new(PgStore::open(&u2).expect("reopen postgres"))),
            _dir: None,
        });
    }
    out
}

fn group(id: &str) -> GroupRecord {
    GroupRecord {
        id: id.into(),
        name: "web".into(),
        description: "d".into(),
        project_id: "0".into(),
        is_default: false,
        created_time: "2026-01-01 00:00:00".into(),
        update_time: "2026-01-01 00:00:00".into(),
        tags: vec![],
        version: 0,
        ingress: vec![],
        egress: vec![],
    }
}

fn instance(id: &str, groups: &[&str]) -> InstanceRecord {
    InstanceRecord {
        id: id.into(),
        name: "n".into(),
        private_ips: vec!["10.0.0.1".into()],
        created_time: "t".into(),
        security_group_ids: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// Bumps the group's Version only if it is still `expected` (what every
/// policy action does with the client's `Version`).
fn bump_if(store: &dyn Store, expected: u64, name: &str) -> Result<(), StoreError> {
    store.write(|tx| {
        let mut g = tx.group("a", "sg-00000001")?.expect("exists");
        if g.version != expected {
            return Err(StoreError::NotFound("version mismatch".into()));
        }
        g.version += 1;
        g.name = name.into();
        tx.update_group("a", &g)
    })
}

#[test]
fn failed_write_changes_nothing_and_keeps_revision() {
    for b in backends() {
        let store = &b.store;
        store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        assert_eq!(store.revision().expect("rev"), 1, "{}", b.name);
        let err: Result<(), StoreError> = store.write(|tx| {
            let mut g = tx.group("a", "sg-00000001")?.expect("exists");
            g.version += 1;
            g.name = "changed".into();
            tx.update_group("a", &g)?;
            tx.insert_group("a", &group("sg-00000002"))?;
            Err(StoreError::NotFound(
                "simulated failure after writes".into(),
            ))
        });
        assert!(err.is_err());
        assert_eq!(store.revision().expect("rev"), 1, "{}", b.name);
        let g = store
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!((g.name.as_str(), g.version), ("web", 0), "{}", b.name);
        assert!(store
            .read(|tx| tx.group("a", "sg-00000002"))
            .expect("read")
            .is_none());
        // A duplicate id inside a transaction is refused, and nothing lands.
        assert!(matches!(
            store.write(|tx| tx.insert_group("b", &group("sg-00000001"))),
            Err(StoreError::DuplicateId(_))
        ));
    }
}

/// Store-wide markers (one-time start-up tasks, such as the server's
/// report of blocks an earlier version widened): absent until set, kept
/// across handles and reopening, never the revision, and a set marker does
/// not bump the revision (agents have nothing to fetch).
/// Every write of a group keeps its version; only the newest
/// `history_limit` versions stay, and deleting the group forgets them.
#[test]
fn group_history_is_kept_bounded_and_dies_with_its_group() {
    for b in backends() {
        let store = &b.store;
        let acc = store.create_account("hist").expect("account").id;
        store
            .write(|tx| tx.set_marker(palisade_store::HISTORY_LIMIT_MARKER, 3))
            .expect("limit");
        let mut g = group("sg-hist0001");
        store.write(|tx| tx.insert_group(&acc, &g)).expect("insert");
        for v in 1..=5u64 {
            g.version = v;
            g.ingress = vec![RuleRecord {
                body: serde_json::json!({ "Port": v.to_string() }),
                refs: vec![],
            }];
            g.update_time = format!("2026-01-01 00:00:0{v}");
            store.write(|tx| tx.update_group(&acc, &g)).expect("update");
        }
        // An attribute-only write keeps the same version once.
        g.name = "renamed".into();
        store.write(|tx| tx.update_group(&acc, &g)).expect("rename");
        let h = (b.reopen)()
            .read(|tx| tx.group_history(&acc, "sg-hist0001"))
            .expect("history");
        let versions: Vec<u64> = h.iter().map(|v| v.version).collect();
        assert_eq!(versions, vec![3, 4, 5], "{}", b.name);
        assert_eq!(h[0].ingress[0].body["Port"], "3", "{}", b.name);
        assert_eq!(h[2].recorded_time, "2026-01-01 00:00:05", "{}", b.name);
        // Other accounts see none of it.
        let other = store.create_account("hist2").expect("account").id;
        assert!(store
            .read(|tx| tx.group_history(&other, "sg-hist0001"))
            .expect("history")
            .is_empty());
        store
            .write(|tx| tx.delete_group(&acc, "sg-hist0001"))
            .expect("delete");
        assert!(store
            .read(|tx| tx.group_history(&acc, "sg-hist0001"))
            .expect("history")
            .is_empty());
    }
}

/// Documents round-trip per account and kind, and the due ones of every
/// account are found by time.
#[test]
fn documents_round_trip_and_fall_due() {
    for b in backends() {
        let store = &b.store;
        let a = store.create_account("docs-a").expect("account").id;
        let c = store.create_account("docs-c").expect("account").id;
        let before = store.revision().expect("rev");
        let doc = |id: &str, due| Document {
            kind: DocKind::Change,
            id: id.into(),
            body: serde_json::json!({ "State": "PENDING" }),
            due,
        };
        store
            .write(|tx| {
                tx.put_document(&a, &doc("chg-1", Some(100)))?;
                tx.put_document(&a, &doc("chg-2", Some(300)))?;
                tx.put_document(&c, &doc("chg-3", Some(200)))?;
                tx.put_document(&c, &doc("chg-4", None))
            })
            .expect("put");
        assert_eq!(store.revision().expect("rev"), before, "{}", b.name);
        let due = store
            .read(|tx| tx.documents_due(DocKind::Change, 250))
            .expect("due");
        assert_eq!(
            due,
            vec![
                (a.clone(), "chg-1".to_string()),
                (c.clone(), "chg-3".to_string())
            ],
            "{}",
            b.name
        );
        let again = (b.reopen)();
        assert_eq!(
            again
                .read(|tx| tx.document(&a, DocKind::Change, "chg-2"))
                .expect("get"),
            Some(doc("chg-2", Some(300)))
        );
        assert!(again
            .read(|tx| tx.document(&c, DocKind::Change, "chg-2"))
            .expect("get")
            .is_none());
        assert!(again
            .read(|tx| tx.documents(&a, DocKind::SnapshotPolicy))
            .expect("list")
            .is_empty());
        store
            .write(|tx| tx.put_document(&a, &doc("chg-1", None)))
            .expect("settle");
        store
            .write(|tx| tx.delete_document(&a, DocKind::Change, "chg-2"))
            .expect("delete");
        let left: Vec<String> = store
            .read(|tx| tx.documents(&a, DocKind::Change))
            .expect("list")
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(left, vec!["chg-1"], "{}", b.name);
        assert!(matches!(
            store.write(|tx| tx.delete_document(&a, DocKind::Change, "chg-2")),
            Err(StoreError::NotFound(_))
        ));
    }
}

#[test]
fn markers_are_kept_and_do_not_bump_the_revision() {
    for b in backends() {
        let store = &b.store;
        let before = store.revision().expect("rev");
        assert_eq!(
            store.read(|tx| tx.marker("report:x")).expect("read"),
            None,
            "{}",
            b.name
        );
        store.write(|tx| tx.set_marker("report:x", 1)).expect("set");
        store
            .write(|tx| tx.set_marker("report:x", 2))
            .expect("set again");
        assert_eq!(store.revision().expect("rev"), before, "{}", b.name);
        let again = (b.reopen)();
        assert_eq!(
            again.read(|tx| tx.marker("report:x")).expect("read"),
            Some(2),
            "{}",
            b.name
        );
        assert_eq!(
            again.read(|tx| tx.marker("report:y")).expect("read"),
            None,
            "{}",
            b.name
        );
        // A failed write sets nothing.
        let failed: Result<(), StoreError> = store.write(|tx| {
            tx.set_marker("report:y", 1)?;
            Err(StoreError::NotFound("simulated".into()))
        });
        assert!(failed.is_err());
        assert_eq!(
            store.read(|tx| tx.marker("report:y")).expect("read"),
            None,
            "{}",
            b.name
        );
    }
}

#[test]
fn stale_version_is_refused_through_another_handle() {
    for b in backends() {
        b.store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        let other = (b.reopen)();
        assert!(bump_if(other.as_ref(), 0, "through other").is_ok());
        assert!(
            bump_if(b.store.as_ref(), 0, "stale").is_err(),
            "{}: a write with the old Version must fail",
            b.name
        );
        let g = b
            .store
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!(
            (g.version, g.name.as_str()),
            (1, "through other"),
            "{}",
            b.name
        );
        assert_eq!(b.store.revision().expect("rev"), 2, "{}", b.name);
    }
}

#[test]
fn racing_writers_on_two_handles_one_version_one_wins() {
    for b in backends() {
        b.store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        let handles = [b.store.clone(), (b.reopen)()];
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = handles[i % 2].clone();
                std::thread::spawn(move || bump_if(store.as_ref(), 0, &format!("writer {i}")))
            })
            .collect();
        let wins = threads
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(Result::is_ok)
            .count();
        assert_eq!(wins, 1, "{}", b.name);
        assert_eq!(b.store.revision().expect("rev"), 2, "{}", b.name);
    }
}

/// Read-modify-write increments through two handles, in two accounts at
/// once: none is lost (each account's writes are serialised, whatever the
/// handle), and every commit gets its own revision.
#[test]
fn concurrent_increments_in_two_accounts_lose_nothing() {
    const THREADS_PER_ACCOUNT: usize = 4;
    const INCREMENTS: u64 = 25;
    for b in backends() {
        for account in ["a", "b"] {
            b.store
                .write(|tx| tx.insert_group(account, &group(&format!("sg-0000000{account}"))))
                .expect("insert");
        }
        let handles = [b.store.clone(), (b.reopen)()];
        let threads: Vec<_> = (0..THREADS_PER_ACCOUNT * 2)
            .map(|i| {
                let store = handles[i % 2].clone();
                let account = if i < THREADS_PER_ACCOUNT { "a" } else { "b" };
                std::thread::spawn(move || {
                    for _ in 0..INCREMENTS {
                        store
                            .write(|tx| {
                                let id = format!("sg-0000000{account}");
                                let mut g = tx.group(account, &id)?.expect("exists");
                                g.version += 1;
                                tx.update_group(account, &g)
                            })
                            .expect("increment");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let per_account = THREADS_PER_ACCOUNT as u64 * INCREMENTS;
        for account in ["a", "b"] {
            let g = b
                .store
                .read(|tx| tx.group(account, &format!("sg-0000000{account}")))
                .expect("read")
                .expect("exists");
            assert_eq!(g.version, per_account, "{} {account}", b.name);
        }
        assert_eq!(
            b.store.revision().expect("rev"),
            2 + 2 * per_account,
            "{}",
            b.name
        );
    }
}

#[test]
fn accounts_are_unique_isolated_and_seen_by_other_handles() {
    for b in backends() {
        let other = (b.reopen)();
        let acc = other.create_account("alice").expect("create");
        assert!(acc.secret_id.starts_with("AKID") && acc.secret_id.len() == 36);
        assert!(matches!(
            b.store.create_account("alice"),
            Err(StoreError::AccountExists(_))
        ));
        assert!(b.store.create_account("bad name").is_err());
        assert_eq!(
            b.store
                .account_by_secret_id(&acc.secret_id)
                .expect("lookup"),
            Some(acc.clone()),
            "{}",
            b.name
        );
        assert_eq!(
            b.store.account_by_name("alice").expect("lookup"),
            Some(acc.clone())
        );
        assert_eq!(b.store.accounts().expect("list"), vec![acc.clone()]);
        let cred = b
            .store
            .credential(&acc.secret_id)
            .expect("lookup")
            .expect("found");
        assert_eq!(cred.instance_scope, None);
        assert!(b.store.credential("AKIDnope").expect("lookup").is_none());
    }
}

#[test]
fn references_bindings_and_group_deletion() {
    for b in backends() {
        let store = &b.store;
        let mut referrer = group("sg-00000002");
        referrer.ingress.push(RuleRecord {
            body: serde_json::json!({"SecurityGroupId": "sg-00000001"}),
            refs: vec!["sg-00000001".into()],
        });
        store
            .write(|tx| {
                tx.insert_group("a", &group("sg-00000001"))?;
                tx.insert_group("a", &referrer)?;
                tx.insert_group("a", &group("sg-00000003"))?;
                tx.insert_instance(
                    "a",
                    &instance(
                        "ins-00000001",
                        &["sg-00000003", "sg-00000001", "sg-00000002"],
                    ),
                )
            })
            .expect("setup");
        assert!(store
            .read(|tx| tx.group("b", "sg-00000001"))
            .expect("read")
            .is_none());
        assert!(store
            .write(|tx| tx.delete_group("b", "sg-00000001"))
            .is_err());
        assert_eq!(
            store
                .read(|tx| tx.referrers("a", "sg-00000001"))
                .expect("refs"),
            vec!["sg-00000002".to_string()],
            "{}",
            b.name
        );
        store
            .write(|tx| tx.delete_group("a", "sg-00000002"))
            .expect("delete");
        assert!(store
            .read(|tx| tx.referrers("a", "sg-00000001"))
            .expect("refs")
            .is_empty());
        let ins = store
            .read(|tx| tx.instance("a", "ins-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!(
            ins.security_group_ids,
            vec!["sg-00000003", "sg-00000001"],
            "{}",
            b.name
        );
        assert_eq!(
            store
                .read(|tx| tx.group_instances("a", "sg-00000001"))
                .expect("read"),
            vec!["ins-00000001"]
        );
        let names: Vec<String> = store
            .read(|tx| tx.groups("a"))
            .expect("list")
            .into_iter()
            .map(|g| g.id)
            .collect();
        assert_eq!(names, vec!["sg-00000001", "sg-00000003"], "{}", b.name);
    }
}

#[test]
fn templates_round_trip_and_group_members_are_references() {
    use palisade_store::{TemplateKind, TemplateRecord};
    for b in backends() {
        let t = |id: &str, kind, members: &[&str]| TemplateRecord {
            id: id.into(),
            kind,
            name: id.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            extra: serde_json::json!([{"Address": "10.0.0.0/8", "Description": "x"}]),
            tags: vec![palisade_store::Tag {
                key: "k".into(),
                value: "v".into(),
            }],
            created_time: "t0".into(),
            updated_time: "t0".into(),
        };
        let addr = t("ipm-00000001", TemplateKind::Address, &["10.0.0.0/8"]);
        let grp = t(
            "ipmg-00000001",
            TemplateKind::AddressGroup,
            &["ipm-00000001"],
        );
        b.store
            .write(|tx| {
                tx.insert_template("a", &addr)?;
                tx.insert_template("a", &grp)
            })
            .expect("insert");
        let got = b
            .store
            .read(|tx| tx.template("a", "ipm-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!(got, addr, "{}", b.name);
        assert_eq!(
            b.store
                .read(|tx| tx.templates("a", TemplateKind::AddressGroup))
                .expect("list"),
            vec![grp.clone()]
        );
        // Kinds and accounts one after another in one snapshot (PostgreSQL
        // reads an account's templates once per read transaction), and a
        // write transaction sees its own insert.
        let svc = t("ppm-00000001", TemplateKind::Service, &["tcp:22"]);
        let other = t("ipm-00000002", TemplateKind::Address, &["10.1.0.0/16"]);
        b.store
            .write(|tx| {
                tx.insert_template("b", &other)?;
                assert_eq!(tx.templates("a", TemplateKind::Service)?, vec![]);
                tx.insert_template("a", &svc)?;
                assert_eq!(tx.templates("a", TemplateKind::Service)?, vec![svc.clone()]);
                Ok::<_, StoreError>(())
            })
            .expect("insert more");
        let listed = b
            .store
            .read(|tx| {
                Ok::<_, StoreError>([
                    tx.templates("a", TemplateKind::Address)?,
                    tx.templates("a", TemplateKind::AddressGroup)?,
                    tx.templates("b", TemplateKind::Address)?,
                    tx.templates("a", TemplateKind::Service)?,
                    tx.templates("a", TemplateKind::ServiceGroup)?,
                ])
            })
            .expect("list kinds");
        assert_eq!(
            listed,
            [
                vec![addr.clone()],
                vec![grp.clone()],
                vec![other],
                vec![svc],
                vec![]
            ],
            "{}",
            b.name
        );
        assert_eq!(
            b.store
                .read(|tx| tx.referrers("a", "ipm-00000001"))
                .expect("refs"),
            vec!["ipmg-00000001".to_string()]
        );
        b.store
            .write(|tx| tx.delete_template("a", "ipmg-00000001"))
            .expect("delete");
        assert!(b
            .store
            .read(|tx| tx.referrers("a", "ipm-00000001"))
            .expect("refs")
            .is_empty());
    }
}

#[test]
fn instance_keys_status_and_clusters() {
    use palisade_store::ClusterRecord;
    for b in backends() {
        let store = &b.store;
        let acc = store.create_account("ops").expect("account");
        assert!(store.create_instance_key(&acc.id, "ins-00000001").is_err());
        store
            .write(|tx| tx.insert_instance(&acc.id, &instance("ins-00000001", &[])))
            .expect("insert");
        let key = store
            .create_instance_key(&acc.id, "ins-00000001")
            .expect("key");
        let cred = store
            .credential(&key.secret_id)
            .expect("lookup")
            .expect("found");
        assert_eq!(cred.instance_scope.as_deref(), Some("ins-00000001"));
        assert_eq!(cred.secret_key, key.secret_key);
        let rev = store.revision().expect("rev");
        store
            .put_instance_status(&acc.id, "ins-00000001", &serde_json::json!({"a": 1}))
            .expect("status");
        store
            .put_instance_status(&acc.id, "ins-00000001", &serde_json::json!({"a": 2}))
            .expect("status again");
        assert!(matches!(
            store.put_instance_status(&acc.id, "ins-00000002", &serde_json::json!({})),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.revision().expect("rev"), rev, "status is not config");
        let st = store.instance_statuses(&acc.id).expect("statuses");
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].1, serde_json::json!({"a": 2}), "{}", b.name);
        store
            .write(|tx| tx.delete_instance(&acc.id, "ins-00000001"))
            .expect("delete");
        assert!(store.credential(&key.secret_id).expect("lookup").is_none());
        assert!(store.instance_statuses(&acc.id).expect("st").is_empty());

        let c = ClusterRecord {
            id: "cls-00000001".into(),
            body: serde_json::json!({"ClusterCidr": "10.0.0.0/16"}),
            created_time: "t0".into(),
            updated_time: "t0".into(),
        };
        store.write(|tx| tx.put_cluster("a", &c)).expect("put");
        let mut c2 = c.clone();
        c2.body = serde_json::json!({"ClusterCidr": "10.1.0.0/16"});
        c2.updated_time = "t1".into();
        store.write(|tx| tx.put_cluster("a", &c2)).expect("update");
        let got = store.read(|tx| tx.clusters("a")).expect("list");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body["ClusterCidr"], "10.1.0.0/16");
        assert_eq!(got[0].created_time, "t0", "{}", b.name);
        store
            .write(|tx| tx.put_cluster("b", &c))
            .expect("another account's cluster of the same id");
        store
            .write(|tx| tx.delete_cluster("a", "cls-00000001"))
            .expect("delete");
        assert!(store
            .write(|tx| tx.delete_cluster("a", "cls-00000001"))
            .is_err());
    }
}

/// Join tokens (issue 22): found by id whichever account holds them,
/// listed per account, replaced in place; an agent key made in the same
/// transaction as its instance works at once and dies with it.
#[test]
fn join_tokens_and_keys_made_with_their_instance() {
    use palisade_store::InstanceKey;
    for b in backends() {
        let store = &b.store;
        let acc = store.create_account("ops").expect("account");
        let other = store.create_account("dev").expect("account");
        let body = serde_json::json!({"ClusterId": "cls-00000001", "Uses": 0});
        store
            .write(|tx| tx.put_join_token(&acc.id, "jtk-00000001", &body))
            .expect("put");
        let rev = store.revision().expect("rev");
        let mut used = body.clone();
        used["Uses"] = serde_json::json!(1);
        store
            .write(|tx| tx.put_join_token(&acc.id, "jtk-00000001", &used))
            .expect("replace");
        assert_eq!(store.revision().expect("rev"), rev, "tokens are not config");
        let found = (b.reopen)()
            .read(|tx| tx.join_token("jtk-00000001"))
            .expect("read")
            .expect("found through another handle");
        assert_eq!(found, (acc.id.clone(), used.clone()), "{}", b.name);
        assert_eq!(
            store.read(|tx| tx.join_tokens(&acc.id)).expect("list"),
            vec![("jtk-00000001".to_string(), used)]
        );
        assert!(store
            .read(|tx| tx.join_tokens(&other.id))
            .expect("list")
            .is_empty());
        assert_eq!(
            store
                .read(|tx| tx.join_token("jtk-00000002"))
                .expect("none"),
            None
        );
        let key = InstanceKey {
            account_id: acc.id.clone(),
            instance_id: "ins-00000001".into(),
            secret_id: palisade_store::random_secret("AKID", 32),
            secret_key: palisade_store::random_secret("", 32),
        };
        store
            .write(|tx| {
                tx.insert_instance(&acc.id, &instance("ins-00000001", &[]))?;
                tx.insert_instance_key(&key)
            })
            .expect("instance and key");
        let cred = store
            .credential(&key.secret_id)
            .expect("lookup")
            .expect("found");
        assert_eq!(cred.instance_scope.as_deref(), Some("ins-00000001"));
        assert_eq!(cred.secret_key, key.secret_key);
        store
            .write(|tx| tx.delete_instance(&acc.id, "ins-00000001"))
            .expect("delete");
        assert!(store.credential(&key.secret_id).expect("lookup").is_none());
    }
}

/// Instance and cluster ids are chosen by clients, so they are unique per
/// account: two accounts holding the same id each see, bind, key, report
/// and delete only their own.
#[test]
fn instance_and_cluster_ids_are_per_account() {
    use palisade_store::ClusterRecord;
    for b in backends() {
        let store = &b.store;
        let (a, o) = (
            store.create_account("alice").expect("account"),
            store.create_account("olga").expect("account"),
        );
        let (a, o) = (a.id.as_str(), o.id.as_str());
        store
            .write(|tx| {
                tx.insert_group(a, &group("sg-0000000a"))?;
                tx.insert_group(o, &group("sg-0000000b"))?;
                tx.insert_instance(a, &instance("ins-00000001", &["sg-0000000a"]))?;
                tx.insert_instance(o, &instance("ins-00000001", &["sg-0000000b"]))
            })
            .expect("same instance id in two accounts");
        assert!(
            matches!(
                store.write(|tx| tx.insert_instance(a, &instance("ins-00000001", &[]))),
                Err(StoreError::DuplicateId(_))
            ),
            "{}: still unique within an account",
            b.name
        );
        let bound = |acc: &str| {
            store
                .read(|tx| tx.instance(acc, "ins-00000001"))
                .expect("read")
                .expect("exists")
                .security_group_ids
        };
        assert_eq!(bound(a), ["sg-0000000a"], "{}", b.name);
        assert_eq!(bound(o), ["sg-0000000b"], "{}", b.name);
        let listed = store.read(|tx| tx.instances(a)).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].security_group_ids, ["sg-0000000a"], "{}", b.name);
        assert_eq!(
            store
                .read(|tx| tx.group_instances(o, "sg-0000000b"))
                .expect("read"),
            ["ins-00000001"]
        );

        // Rebinding one account's instance leaves the other's alone.
        store
            .write(|tx| {
                let mut i = tx.instance(a, "ins-00000001")?.expect("exists");
                i.security_group_ids.clear();
                i.name = "renamed".into();
                tx.update_instance(a, &i)
            })
            .expect("update");
        assert!(bound(a).is_empty());
        assert_eq!(bound(o), ["sg-0000000b"], "{}", b.name);

        // Keys and status resolve within their account.
        let ka = store.create_instance_key(a, "ins-00000001").expect("key");
        let ko = store.create_instance_key(o, "ins-00000001").expect("key");
        let ca = store.credential(&ka.secret_id).expect("lookup").expect("a");
        assert_eq!(ca.account.id, a);
        assert_eq!(ca.instance_scope.as_deref(), Some("ins-00000001"));
        store
            .put_instance_status(a, "ins-00000001", &serde_json::json!({"who": "a"}))
            .expect("status");
        store
            .put_instance_status(o, "ins-00000001", &serde_json::json!({"who": "o"}))
            .expect("status");
        let st = store.instance_statuses(a).expect("statuses");
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].1, serde_json::json!({"who": "a"}), "{}", b.name);

        // Deleting one account's instance takes its bindings, key and
        // status, not the other account's.
        store
            .write(|tx| tx.delete_instance(a, "ins-00000001"))
            .expect("delete");
        assert!(store.credential(&ka.secret_id).expect("lookup").is_none());
        let co = store.credential(&ko.secret_id).expect("lookup").expect("o");
        assert_eq!(co.account.id, o, "{}", b.name);
        assert!(store.instance_statuses(a).expect("st").is_empty());
        assert_eq!(store.instance_statuses(o).expect("st").len(), 1);
        assert_eq!(bound(o), ["sg-0000000b"], "{}", b.name);

        // Clusters likewise.
        let cluster = |cidr: &str| ClusterRecord {
            id: "cls-00000001".into(),
            body: serde_json::json!({ "ClusterCidr": cidr }),
            created_time: "t".into(),
            updated_time: "t".into(),
        };
        store
            .write(|tx| tx.put_cluster(a, &cluster("10.1.0.0/16")))
            .expect("a's");
        store
            .write(|tx| tx.put_cluster(o, &cluster("10.2.0.0/16")))
            .expect("o's");
        let cidr = |acc: &str| {
            store
                .read(|tx| tx.clusters(acc))
                .expect("list")
                .iter()
                .map(|c| c.body["ClusterCidr"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(cidr(a), ["10.1.0.0/16"], "{}", b.name);
        assert_eq!(cidr(o), ["10.2.0.0/16"], "{}", b.name);
        store
            .write(|tx| tx.delete_cluster(a, "cls-00000001"))
            .expect("delete");
        assert!(cidr(a).is_empty());
        assert_eq!(cidr(o), ["10.2.0.0/16"], "{}", b.name);
    }
}

#[test]
fn committed_data_survives_reopen() {
    for b in backends() {
        b.store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        let again = (b.reopen)();
        assert_eq!(again.revision().expect("rev"), 1, "{}", b.name);
        assert!(again
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .is_some());
    }
}

/// The revision watch of one handle sees commits made through another:
/// in-process for SQLite's own writes, `LISTEN/NOTIFY` across handles for
/// PostgreSQL (the way several servers wake each other's long-polls).
#[test]
fn revision_watchers_see_commits() {
    for b in backends() {
        let mut rx = b.store.watch_revision();
        b.store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        assert_eq!(*rx.borrow_and_update(), 1);
        b.store
            .write(|tx| tx.group("a", "sg-00000001").map(|_| ()))
            .expect("noop");
        assert_eq!(b.store.revision().expect("rev"), 1, "no-op keeps revision");
        if b.name != "postgres" {
            continue;
        }
        let other = (b.reopen)();
        bump_if(other.as_ref(), 0, "elsewhere").expect("write through the other handle");
        let rt = timer_runtime();
        let woke = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|r| *r >= 2)).await
        });
        assert!(
            woke.is_ok(),
            "a commit through another handle wakes this one within 1 s"
        );
    }
}

/// Each account has its own last-changed revision and watch: a commit to
/// one account raises that account's, not another's, through this handle
/// and, for PostgreSQL, through another (the `NOTIFY` names the accounts).
#[test]
fn account_revisions_and_watchers_follow_only_their_account() {
    for b in backends() {
        let rt = timer_runtime();
        b.store
            .write(|tx| tx.insert_group("a", &group("sg-0000000a")))
            .expect("insert a");
        let mut rx_a = b.store.watch_account("a");
        let mut rx_b = b.store.watch_account("b");
        rx_a.borrow_and_update();
        rx_b.borrow_and_update();
        b.store
            .write(|tx| tx.insert_group("b", &group("sg-0000000b")))
            .expect("insert b");
        let (ra, rb, global) = b
            .store
            .read(|tx| {
                Ok::<_, StoreError>((
                    tx.account_revision("a")?,
                    tx.account_revision("b")?,
                    tx.revision()?,
                ))
            })
            .expect("read");
        assert_eq!((ra, rb, global), (1, 2, 2), "{}", b.name);
        assert_eq!(tx_none(&*b.store), 0, "{}: never-written account", b.name);
        assert!(rx_b.has_changed().expect("open"), "{}", b.name);
        assert_eq!(*rx_b.borrow_and_update(), 2);
        assert!(!rx_a.has_changed().expect("open"), "{}: a woke", b.name);
        if b.name != "postgres" {
            continue;
        }
        let other = (b.reopen)();
        other
            .write(|tx| tx.insert_group("a", &group("sg-0000000c")))
            .expect("insert a elsewhere");
        let woke = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), rx_a.wait_for(|r| *r >= 3)).await
        });
        assert!(woke.is_ok(), "a commit to a elsewhere wakes a within 1 s");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!rx_b.has_changed().expect("open"), "b stays asleep");
    }
}

#[test]
fn key_watchers_rise_only_when_a_credential_goes() {
    for b in backends() {
        let rt = timer_runtime();
        let acc = b.store.create_account("keys").expect("account");
        for id in ["ins-00000001", "ins-00000002"] {
            b.store
                .write(|tx| tx.insert_instance(&acc.id, &instance(id, &[])))
                .expect("instance");
        }
        let key = b
            .store
            .create_instance_key(&acc.id, "ins-00000001")
            .expect("key");
        let mut keys = b.store.watch_keys(&acc.id);
        let mut account = b.store.watch_account(&acc.id);
        keys.borrow_and_update();
        account.borrow_and_update();
        // An ordinary write to the account moves the account, not its keys.
        b.store
            .write(|tx| tx.insert_group(&acc.id, &group("sg-0000000a")))
            .expect("group");
        assert!(account.has_changed().expect("open"), "{}", b.name);
        assert!(!keys.has_changed().expect("open"), "{}: keys woke", b.name);
        // Deleting an instance takes its key: the keys move.
        b.store
            .write(|tx| tx.delete_instance(&acc.id, "ins-00000002"))
            .expect("delete");
        assert!(keys.has_changed().expect("open"), "{}", b.name);
        assert!(b
            .store
            .credential(&key.secret_id)
            .expect("lookup")
            .is_some());
        if b.name != "postgres" {
            continue;
        }
        // Through another server: its deletion reaches this one's keys.
        keys.borrow_and_update();
        let seen = *keys.borrow();
        let other = (b.reopen)();
        other
            .write(|tx| tx.insert_group(&acc.id, &group("sg-0000000b")))
            .expect("group elsewhere");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!keys.has_changed().expect("open"), "keys stay");
        other
            .write(|tx| tx.delete_instance(&acc.id, "ins-00000001"))
            .expect("delete elsewhere");
        let woke = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), keys.wait_for(|r| *r > seen)).await
        });
        assert!(
            woke.is_ok(),
            "a key removed elsewhere moves keys within 1 s"
        );
        assert!(b
            .store
            .credential(&key.secret_id)
            .expect("lookup")
            .is_none());
    }
}

/// A runtime for waiting on watchers with a timeout.
fn timer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn tx_none(store: &dyn Store) -> u64 {
    store
        .read(|tx| tx.account_revision("nobody"))
        .expect("read")
}

/// A PostgreSQL database migrated by the binary before instance and cluster
/// ids became per account (every migration before 3, as released) keeps
/// its data when a newer binary opens it, and takes the new keys.
#[test]
fn postgres_database_before_migration_3_keeps_its_data() {
    let Some(base) =
        palisade_testkit::postgres("postgres_database_before_migration_3_keeps_its_data")
    else {
        return;
    };
    let url = palisade_store::scratch_database(&base).expect("scratch database");
    {
        let mut old = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        old.batch_execute(
            "CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .expect("migrations table");
        for (version, sql) in palisade_store::PG_MIGRATIONS {
            if *version >= 3 {
                continue;
            }
            old.batch_execute(sql).expect("old migration");
            old.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .expect("record");
        }
        old.batch_execute(
            r#"
UPDATE meta SET value = 7 WHERE key = 'revision';
INSERT INTO accounts (id, name, secret_id, secret_key, created_time)
    VALUES ('acc-a', 'alice', 'AKIDa', 'ka', 't'), ('acc-b', 'bob', 'AKIDb', 'kb', 't');
INSERT INTO groups (id, account_id, name, description, project_id, is_default, created_time,
    update_time, tags, version, ingress, egress)
    VALUES ('sg-00000001', 'acc-a', 'web', 'd', '0', false, 't', 't', '[]', 3, '[]', '[]'),
           ('sg-00000002', 'acc-a', 'db', 'd', '0', false, 't', 't', '[]', 0, '[]', '[]');
INSERT INTO instances (id, account_id, name, private_ips, created_time)
    VALUES ('ins-00000002', 'acc-a', 'second-registered', '["10.0.0.2"]', 't1'),
           ('ins-00000001', 'acc-a', 'first-id', '["10.0.0.1"]', 't2');
INSERT INTO bindings VALUES ('acc-a', 'ins-00000001', 0, 'sg-00000002'),
                            ('acc-a', 'ins-00000001', 1, 'sg-00000001');
INSERT INTO instance_keys VALUES ('AKIDagent', 'kagent', 'acc-a', 'ins-00000001', 't');
INSERT INTO instance_status VALUES ('ins-00000001', 'acc-a', '{"AppliedRevision":7}', 't4');
INSERT INTO clusters (id, account_id, body, created_time, updated_time)
    VALUES ('cls-00000001', 'acc-a', '{"ClusterCidr":"10.0.0.0/16"}', 't5', 't6');
"#,
        )
        .expect("old data");
    }
    let store = PgStore::open(&url).expect("open migrates");
    assert_eq!(store.revision().expect("rev"), 7);
    let ins = store.read(|tx| tx.instances("acc-a")).expect("instances");
    let ids: Vec<&str> = ins.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["ins-00000002", "ins-00000001"], "creation order kept");
    assert_eq!(ins[1].security_group_ids, ["sg-00000002", "sg-00000001"]);
    let cred = store
        .credential("AKIDagent")
        .expect("lookup")
        .expect("agent key survives");
    assert_eq!(cred.account.id, "acc-a");
    assert_eq!(cred.instance_scope.as_deref(), Some("ins-00000001"));
    let st = store.instance_statuses("acc-a").expect("status");
    assert_eq!(st[0].1, serde_json::json!({"AppliedRevision": 7}));
    let c = store
        .read(|tx| tx.cluster("acc-a", "cls-00000001"))
        .expect("read")
        .expect("cluster survives");
    assert_eq!(c.body["ClusterCidr"], "10.0.0.0/16");

    store
        .write(|tx| {
            tx.insert_instance("acc-b", &instance("ins-00000001", &[]))?;
            tx.put_cluster("acc-b", &c)
        })
        .expect("same ids in another account");
    store
        .put_instance_status("acc-b", "ins-00000001", &serde_json::json!({}))
        .expect("b's status");
    assert_eq!(
        store.instance_statuses("acc-a").expect("status")[0].1,
        serde_json::json!({"AppliedRevision": 7})
    );
    drop(store);
    // Opening again migrates nothing more.
    let again = PgStore::open(&url).expect("reopen");
    assert_eq!(
        again.read(|tx| tx.instances("acc-b")).expect("read").len(),
        1
    );
}

/// Random flow records of two instances, IPv4 and IPv6, every verdict.
fn flow_records(n: usize, seed: u64) -> Vec<palisade_model::flow::FlowRecord> {
    use palisade_model::flow::{FlowRecord, RuleRef, Verdict};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let v6 = rng.gen_bool(0.3);
            let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                (
                    format!("2001:db8::{:x}", rng.gen_range(1..40))
                        .parse()
                        .unwrap(),
                    "2001:db8::11".parse().unwrap(),
                )
            } else {
                (
                    format!("198.18.{}.{}", rng.gen_range(0..3), rng.gen_range(1..40))
                        .parse()
                        .unwrap(),
                    "198.18.0.11".parse().unwrap(),
                )
            };
            let action = [Verdict::Accept, Verdict::Drop, Verdict::WouldDrop][rng.gen_range(0..3)];
            let rule = (action == Verdict::Accept || rng.gen_bool(0.5)).then(|| RuleRef {
                security_group_id: ["sg-00000001", "sg-00000002"][rng.gen_range(0..2)]
                    .parse()
                    .unwrap(),
                policy_index: rng.gen_range(0..4),
                revision: rng.gen_range(1..5),
            });
            let protocol = [6u8, 17, 1][rng.gen_range(0..3)];
            let ported = protocol != 1;
            let start = 1_000 + rng.gen_range(0..1_000);
            let ingress = rng.gen_bool(0.5);
            FlowRecord {
                instance_id: ["ins-00000001", "ins-00000002"][i % 2].parse().unwrap(),
                direction: if ingress {
                    palisade_model::Direction::Ingress
                } else {
                    palisade_model::Direction::Egress
                },
                src_addr: if ingress { src } else { dst },
                dst_addr: if ingress { dst } else { src },
                src_port: ported.then(|| rng.gen_range(30_000..40_000)),
                dst_port: ported.then(|| [22u16, 80, 443][rng.gen_range(0..3)]),
                protocol,
                action,
                rule,
                decisions: rng.gen_range(1..5),
                packets: (action == Verdict::Drop).then_some(3),
                bytes: (action == Verdict::Drop).then_some(180),
                start,
                end: start + rng.gen_range(0..100),
            }
        })
        .collect()
}

#[test]
fn flow_records_filter_like_the_reference_page_and_expire() {
    use palisade_model::flow::{FlowFilter, Verdict};
    use palisade_model::Cidr;
    for b in backends() {
        let store = &b.store;
        let acc = store.create_account("flows").expect("account");
        let other = store.create_account("other").expect("account");
        store
            .write(|tx| {
                tx.insert_instance(&acc.id, &instance("ins-00000001", &[]))?;
                tx.insert_instance(&acc.id, &instance("ins-00000002", &[]))
            })
            .expect("instances");
        let records = flow_records(1_200, 7);
        let rev = store.revision().expect("rev");
        for ins in ["ins-00000001", "ins-00000002"] {
            let mine: Vec<_> = records
                .iter()
                .filter(|r| r.instance_id.as_str() == ins)
                .cloned()
                .collect();
            let n = store.put_flow_records(&acc.id, ins, &mine).expect("put");
            assert_eq!(n, mine.len() as u64, "{}", b.name);
        }
        assert_eq!(store.revision().expect("rev"), rev, "records bump nothing");
        // Another account's instance of the same id takes nothing.
        assert!(matches!(
            store.put_flow_records(&other.id, "ins-00000001", &records[..1]),
            Err(StoreError::NotFound(_))
        ));
        let filters = [
            FlowFilter::default(),
            FlowFilter {
                instance_ids: vec!["ins-00000002".parse().unwrap()],
                action: Some(Verdict::Drop),
                ..Default::default()
            },
            FlowFilter {
                security_group_id: Some("sg-00000001".parse().unwrap()),
                policy_index: Some(2),
                direction: Some(palisade_model::Direction::Ingress),
                ..Default::default()
            },
            FlowFilter {
                peer: Some(Cidr::parse_any("p", "198.18.1.0/24").unwrap()),
                port: Some(22),
                protocol: Some(6),
                ..Default::default()
            },
            FlowFilter {
                peer: Some(Cidr::parse_any("p", "2001:db8::/120").unwrap()),
                since: Some(1_500),
                until: Some(1_700),
                ..Default::default()
            },
        ];
        for f in &filters {
            let mut want: Vec<_> = records.iter().filter(|r| f.matches(r)).cloned().collect();
            want.sort_by_key(|r| std::cmp::Reverse(r.start));
            let (total, page) = store.flow_records(&acc.id, f, 0, 5_000).expect("select");
            assert_eq!(total, want.len() as u64, "{} {f:?}", b.name);
            let mut got: Vec<_> = page.into_iter().map(|(_, r)| r).collect();
            // Newest first; the same records (order within a second aside).
            assert!(got.windows(2).all(|w| w[0].start >= w[1].start));
            let key = |r: &palisade_model::flow::FlowRecord| serde_json::to_string(r).unwrap();
            got.sort_by_key(key);
            want.sort_by_key(key);
            assert_eq!(got, want, "{} {f:?}", b.name);
            // Paging: a window of the same order.
            let (_, window) = store.flow_records(&acc.id, f, 3, 4).expect("page");
            assert!(window.len() <= 4);
        }
        let (none, _) = store
            .flow_records(&other.id, &FlowFilter::default(), 0, 10)
            .expect("other");
        assert_eq!(none, 0, "accounts see only their own records");
        // Expiry: by age, then by count, oldest first.
        let before = records.iter().filter(|r| r.end < 1_300).count() as u64;
        let gone = store
            .expire_flow_records(&acc.id, 1_300, 1_000_000)
            .expect("expire");
        assert_eq!(gone, before, "{}", b.name);
        let gone = store.expire_flow_records(&acc.id, 0, 100).expect("cap");
        let (left, _) = store
            .flow_records(&acc.id, &FlowFilter::default(), 0, 1)
            .expect("count");
        assert_eq!(left, 100, "{} ({gone} went)", b.name);
    }
}

#[test]
fn enforcement_defaults_to_enforce_and_a_change_bumps_the_revision() {
    use palisade_model::flow::Enforcement;
    for b in backends() {
        let store = &b.store;
        let acc = store.create_account("audit").expect("account");
        store
            .write(|tx| tx.insert_instance(&acc.id, &instance("ins-00000001", &[])))
            .expect("instance");
        let mode = store
            .read(|tx| tx.enforcement(&acc.id, "ins-00000001"))
            .expect("read");
        assert_eq!(mode, Enforcement::Enforce);
        let rev = store.revision().expect("rev");
        store
            .write(|tx| tx.set_enforcement(&acc.id, "ins-00000001", Enforcement::Audit))
            .expect("set");
        assert!(store.revision().expect("rev") > rev, "{}", b.name);
        let mode = store
            .read(|tx| tx.enforcement(&acc.id, "ins-00000001"))
            .expect("read");
        assert_eq!(mode, Enforcement::Audit);
        let missing =
            store.write(|tx| tx.set_enforcement(&acc.id, "ins-00000009", Enforcement::Audit));
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{}",
            b.name
        );
        // Deregistering forgets it.
        store
            .write(|tx| {
                tx.delete_instance(&acc.id, "ins-00000001")?;
                tx.insert_instance(&acc.id, &instance("ins-00000001", &[]))
            })
            .expect("again");
        let mode = store
            .read(|tx| tx.enforcement(&acc.id, "ins-00000001"))
            .expect("read");
        assert_eq!(mode, Enforcement::Enforce, "{}", b.name);
    }
}

#[test]
fn group_policies_is_the_policy_set_of_the_callers_group_only() {
    for b in backends() {
        let store = &b.store;
        let mut g = group("sg-00000001");
        g.version = 7;
        g.ingress.push(RuleRecord {
            body: serde_json::json!({"SecurityGroupId": "sg-00000001", "Action": "ACCEPT"}),
            refs: vec!["sg-00000001".into()],
        });
        store.write(|tx| tx.insert_group("a", &g)).expect("setup");
        let got = store
            .group_policies("a", "sg-00000001")
            .expect("read")
            .expect("the group exists");
        assert_eq!(got.version, 7, "{}", b.name);
        let ingress: Vec<RuleRecord> = serde_json::from_str(&got.ingress).expect("json");
        let egress: Vec<RuleRecord> = serde_json::from_str(&got.egress).expect("json");
        assert_eq!((ingress, egress), (g.ingress.clone(), vec![]), "{}", b.name);
        assert_eq!(
            store.group_policies("b", "sg-00000001").expect("read"),
            None,
            "{}: another account's group is not found",
            b.name
        );
        assert_eq!(
            store.group_policies("a", "sg-00000009").expect("read"),
            None
        );
        assert_eq!(store.local_reads(), b.name == "sqlite", "{}", b.name);
    }
}

#[test]
fn hit_coverage_runs_on_restarts_after_a_gap_and_dies_with_its_instance() {
    use palisade_store::{HitCoverage, RuleCount};
    for b in backends() {
        let store = &b.store;
        let acc = store.create_account("coverage").expect("account");
        let other = store.create_account("other").expect("account");
        store
            .write(|tx| {
                tx.insert_instance(&acc.id, &instance("ins-00000001", &[]))?;
                tx.insert_instance(&acc.id, &instance("ins-00000002", &[]))
            })
            .expect("instances");
        let counts = [RuleCount {
            group_id: "sg-00000001".into(),
            direction: "ingress".into(),
            policy_index: 0,
            digest: "d".into(),
            packets: 1,
        }];
        let ids = ["ins-00000001".to_string(), "ins-00000002".to_string()];
        let cov = |account: &str| store.hit_coverage(account, &ids).expect("coverage");
        let one = |since, last_report| HitCoverage {
            instance_id: "ins-00000001".into(),
            since,
            last_report,
        };
        for (now, since) in [(1_000, 1_000), (1_005, 1_000), (1_600, 1_000)] {
            store
                .record_rule_hits(&acc.id, "ins-00000001", &counts, now, 600)
                .expect("record");
            assert_eq!(cov(&acc.id), [one(since, now)], "{} at {now}", b.name);
        }
        // More than the gap of silence: coverage starts again.
        store
            .record_rule_hits(&acc.id, "ins-00000001", &counts, 2_201, 600)
            .expect("record");
        assert_eq!(cov(&acc.id), [one(2_201, 2_201)], "{}", b.name);
        // A clock that went back restarts it too.
        store
            .record_rule_hits(&acc.id, "ins-00000001", &counts, 2_100, 600)
            .expect("record");
        assert_eq!(cov(&acc.id), [one(2_100, 2_100)], "{}", b.name);
        // Per account; an instance that never reported is absent.
        assert!(cov(&other.id).is_empty(), "{}", b.name);
        // Deregistering forgets it.
        store
            .write(|tx| tx.delete_instance(&acc.id, "ins-00000001"))
            .expect("delete");
        assert!(cov(&acc.id).is_empty(), "{}", b.name);
    }
}
