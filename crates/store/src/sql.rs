//! The store's logic, written once for both SQL dialects (DESIGN.md
//! section 5): every [`Tx`] method, the revision bump at commit, accounts,
//! credentials and agent status. A backend supplies only what truly differs
//! between SQLite and PostgreSQL, through two small traits:
//!
//! - [`Sql`], one open transaction (or, for single lookups, one connection):
//!   run a statement, take an account's or the store's writer lock, and
//!   announce a commit to other servers. Statements are written once, with
//!   `$1`-style placeholders and SQL both dialects accept (`ON CONFLICT`
//!   upserts, `RETURNING`, multi-row `VALUES`); SQLite's side turns `$N`
//!   into its `?N`.
//! - [`Backend`], a store: open a read or write transaction on a pooled
//!   connection, and the revision watch channels.
//!
//! Rows come back as [`Row`]s of dialect-neutral [`Value`]s, so decoding a
//! record (and reporting a bad stored value as [`StoreError::Corrupt`]) is
//! written once too.

use crate::changes::{committed_names, Watchers};
use crate::{
    random_id, Account, ClusterRecord, Credential, DocKind, Document, GroupRecord, GroupVersion,
    InstanceKey, InstanceRecord, Store, StoreError, StoredPolicies, TemplateKind, TemplateRecord,
    Tx,
};
use palisade_model::flow::{Enforcement, FlowFilter, FlowRecord};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::watch;

/// A statement parameter, borrowed from the record being written.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// A text value.
    Text(&'a str),
    /// A 64-bit integer (`BIGINT` columns in PostgreSQL).
    Int(i64),
    /// A boolean (`BOOLEAN` in PostgreSQL, 0 or 1 in SQLite).
    Bool(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(s: &'a str) -> Self {
        Param::Text(s)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(s: &'a String) -> Self {
        Param::Text(s)
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

/// The parameters of one statement.
macro_rules! params {
    ($($p:expr),* $(,)?) => { &[$(Param::from($p)),*] };
}

mod history;

/// One column of a result row.
#[derive(Debug, Default)]
pub enum Value {
    /// SQL `NULL` (and a column already taken out of its row).
    #[default]
    Null,
    /// An integer or boolean column.
    Int(i64),
    /// A text column.
    Text(String),
}

/// One result row; its getters take the value out, so building a record
/// moves each string instead of copying it.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn take(&mut self, i: usize) -> Value {
        self.0.get_mut(i).map(std::mem::take).unwrap_or_default()
    }

    pub(crate) fn text(&mut self, i: usize) -> Result<String, StoreError> {
        match self.take(i) {
            Value::Text(s) => Ok(s),
            v => Err(StoreError::Corrupt(format!(
                "column {i}: want text, got {v:?}"
            ))),
        }
    }

    pub(crate) fn opt_text(&mut self, i: usize) -> Result<Option<String>, StoreError> {
        match self.take(i) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            v => Err(StoreError::Corrupt(format!(
                "column {i}: want text, got {v:?}"
            ))),
        }
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            v => Err(StoreError::Corrupt(format!(
                "column {i}: want an integer, got {v:?}"
            ))),
        }
    }

    pub(crate) fn count(&self, i: usize) -> Result<u64, StoreError> {
        u64::try_from(self.int(i)?).map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
    }

    fn json<T: serde::de::DeserializeOwned>(&mut self, i: usize) -> Result<T, StoreError> {
        from_json(&self.text(i)?)
    }
}

/// One transaction (or connection) of a dialect: the whole of what differs
/// between SQLite and PostgreSQL below the store's logic.
pub trait Sql {
    /// Runs `sql` (`$1`-style placeholders) and returns its rows.
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Runs a statement and returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// In a write transaction, takes `account`'s writer lock until the end
    /// of the transaction (once; later calls return at once). SQLite has
    /// nothing to do: `BEGIN IMMEDIATE` already holds the database's one
    /// write lock.
    fn lock_account(&self, account: &str) -> Result<(), StoreError>;
    /// Takes the store-wide writer lock (account creation).
    fn lock_store(&self) -> Result<(), StoreError>;
    /// Tells other servers sharing the database that this transaction, once
    /// committed, is `revision` and changed the watcher `names`.
    fn announce(&self, revision: u64, names: &[String]) -> Result<(), StoreError>;
}

/// A store on one SQL dialect. Every [`Backend`] is a [`Store`]: the
/// implementation below is the one for both.
pub trait Backend: Send + Sync + 'static {
    /// The `ORDER BY` expression that lists accounts in creation order.
    const ACCOUNT_ORDER: &'static str;

    /// Reads are local (no network round trip): see [`Store::local_reads`].
    const LOCAL_READS: bool = false;

    /// Runs `f` on a read connection: inside one read-only snapshot
    /// transaction when `snapshot`, else statement by statement (a single
    /// lookup needs no snapshot and saves the round trips of one).
    fn in_read(
        &self,
        snapshot: bool,
        f: &mut dyn FnMut(&dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs `f` in one write transaction, committed when it returns
    /// `Ok(true)` and rolled back otherwise.
    fn in_write(
        &self,
        f: &mut dyn FnMut(&dyn Sql) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;

    /// This store's revision watch channels.
    fn watchers(&self) -> &Watchers;
}

/// Runs `f` on a read connection of `b` and returns its result.
fn read<B: Backend, T>(
    b: &B,
    snapshot: bool,
    f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut f = Some(f);
    let mut out = None;
    b.in_read(snapshot, &mut |db| {
        if let Some(f) = f.take() {
            out = Some(f(db)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Corrupt("read did not run".into()))
}

/// Runs `f` in a write transaction of `b`, committed when it returns `Ok`.
fn write<B: Backend, T>(
    b: &B,
    f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut f = Some(f);
    let mut out = None;
    b.in_write(&mut |db| {
        if let Some(f) = f.take() {
            out = Some(f(db)?);
        }
        Ok(true)
    })?;
    out.ok_or_else(|| StoreError::Corrupt("write did not run".into()))
}

/// The global revision as `db` sees it.
pub fn current_revision(db: &dyn Sql) -> Result<u64, StoreError> {
    one(db.query("SELECT value FROM meta WHERE key = 'revision'", &[])?)?.count(0)
}

/// The only row of a result that must have one.
fn one(rows: Vec<Row>) -> Result<Row, StoreError> {
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt("a row that must exist is missing".into()))
}

impl<B: Backend> Store for B {
    fn read_dyn(&self, f: &mut dyn FnMut(&dyn Tx)) -> Result<(), StoreError> {
        self.in_read(true, &mut |db| {
            f(&SqlTx::new(db, false));
            Ok(())
        })
    }

    fn write_dyn(&self, f: &mut dyn FnMut(&mut dyn Tx) -> bool) -> Result<(), StoreError> {
        let mut committed = None;
        self.in_write(&mut |db| {
            let mut t = SqlTx::new(db, true);
            if !f(&mut t) {
                return Ok(false);
            }
            if !t.touched.is_empty() {
                let names = committed_names(&t.touched, &t.keys);
                let rev = bump_revision(db, &t.touched)?;
                db.announce(rev, &names)?;
                committed = Some((rev, names));
            }
            Ok(true)
        })?;
        if let Some((rev, names)) = committed {
            self.watchers().committed(rev, &names);
        }
        Ok(())
    }

    fn revision(&self) -> Result<u64, StoreError> {
        read(self, false, current_revision)
    }

    fn local_reads(&self) -> bool {
        B::LOCAL_READS
    }

    fn group_policies(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<StoredPolicies>, StoreError> {
        read(self, false, |db| {
            let rows = db.query(
                "SELECT version, ingress, egress FROM groups WHERE account_id = $1 AND id = $2",
                params![account, id],
            )?;
            let Some(mut r) = rows.into_iter().next() else {
                return Ok(None);
            };
            Ok(Some(StoredPolicies {
                version: r.count(0)?,
                ingress: r.text(1)?,
                egress: r.text(2)?,
            }))
        })
    }

    fn watch_revision(&self) -> watch::Receiver<u64> {
        self.watchers().global()
    }

    fn watch_account(&self, account: &str) -> watch::Receiver<u64> {
        self.watchers().account(account)
    }

    fn watch_keys(&self, account: &str) -> watch::Receiver<u64> {
        self.watchers().keys(account)
    }

    fn create_account(&self, name: &str) -> Result<Account, StoreError> {
        crate::check_account_name(name)?;
        write(self, |db| {
            db.lock_store()?;
            if !db
                .query("SELECT id FROM accounts WHERE name = $1", params![name])?
                .is_empty()
            {
                return Err(StoreError::AccountExists(name.to_string()));
            }
            let a = Account {
                id: random_id("acc-", 8),
                name: name.to_string(),
                secret_id: crate::random_alnum("AKID", 32),
                secret_key: crate::random_alnum("", 32),
                created_time: crate::now_string(),
            };
            db.execute(
                "INSERT INTO accounts (id, name, secret_id, secret_key, created_time) VALUES ($1, $2, $3, $4, $5)",
                params![&a.id, &a.name, &a.secret_id, &a.secret_key, &a.created_time],
            )?;
            Ok(a)
        })
    }

    fn account_by_secret_id(&self, secret_id: &str) -> Result<Option<Account>, StoreError> {
        read(self, false, |db| account_where(db, "secret_id", secret_id))
    }

    fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        read(self, false, |db| account_where(db, "name", name))
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY {}",
            B::ACCOUNT_ORDER
        );
        read(self, false, |db| {
            db.query(&sql, &[])?
                .into_iter()
                .map(account_from_row)
                .collect()
        })
    }

    fn create_instance_key(
        &self,
        account_id: &str,
        instance_id: &str,
    ) -> Result<InstanceKey, StoreError> {
        write(self, |db| {
            db.lock_account(account_id)?;
            if !instance_exists(db, account_id, instance_id)? {
                return Err(StoreError::NotFound(instance_id.to_string()));
            }
            let key = InstanceKey {
                account_id: account_id.to_string(),
                instance_id: instance_id.to_string(),
                secret_id: crate::random_alnum("AKID", 32),
                secret_key: crate::random_alnum("", 32),
            };
            db.execute(
                "INSERT INTO instance_keys (secret_id, secret_key, account_id, instance_id, created_time) VALUES ($1, $2, $3, $4, $5)",
                params![&key.secret_id, &key.secret_key, &key.account_id, &key.instance_id, &crate::now_string()],
            )?;
            Ok(key)
        })
    }

    fn credential(&self, secret_id: &str) -> Result<Option<Credential>, StoreError> {
        // One statement: an account's own key, or an instance key whose
        // instance still exists, looked up within the key's account (the
        // same instance id may exist in other accounts).
        const CREDENTIAL: &str = "SELECT a.id, a.name, a.secret_id, a.secret_key, a.created_time,
                CAST(NULL AS TEXT), CAST(NULL AS TEXT)
             FROM accounts a WHERE a.secret_id = $1
             UNION ALL
             SELECT a.id, a.name, a.secret_id, a.secret_key, a.created_time,
                k.secret_key, k.instance_id
             FROM instance_keys k
             JOIN instances i ON i.account_id = k.account_id AND i.id = k.instance_id
             JOIN accounts a ON a.id = k.account_id
             WHERE k.secret_id = $1
             LIMIT 1";
        let Some(mut row) = read(self, false, |db| db.query(CREDENTIAL, params![secret_id]))?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let scope = (row.opt_text(5)?, row.opt_text(6)?);
        let account = account_from_row(row)?;
        Ok(Some(match scope {
            (Some(secret_key), Some(instance_id)) => Credential {
                account,
                secret_key,
                instance_scope: Some(instance_id),
            },
            _ => Credential {
                secret_key: account.secret_key.clone(),
                account,
                instance_scope: None,
            },
        }))
    }

    fn put_instance_status(
        &self,
        account: &str,
        instance_id: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        // Status is not configuration: no writer lock, no revision bump. The
        // upsert only lands if the instance exists at that moment.
        let body = to_json(status)?;
        let n = write(self, |db| {
            db.execute(
                "INSERT INTO instance_status (instance_id, account_id, body, reported_time)
                 SELECT id, account_id, $3, $4 FROM instances WHERE account_id = $1 AND id = $2
                 ON CONFLICT (account_id, instance_id) DO UPDATE SET body = excluded.body, reported_time = excluded.reported_time",
                params![account, instance_id, &body, &crate::now_string()],
            )
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(instance_id.to_string()));
        }
        Ok(())
    }

    fn put_flow_records(
        &self,
        account: &str,
        instance_id: &str,
        records: &[FlowRecord],
    ) -> Result<u64, StoreError> {
        write(self, |db| {
            let exists = db.query(
                "SELECT 1 FROM instances WHERE account_id = $1 AND id = $2",
                params![account, instance_id],
            )?;
            if exists.is_empty() {
                return Err(StoreError::NotFound(instance_id.to_string()));
            }
            crate::flows::insert(db, account, records)
        })
    }

    fn flow_records(
        &self,
        account: &str,
        filter: &FlowFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<(i64, FlowRecord)>), StoreError> {
        read(self, true, |db| {
            crate::flows::select(db, account, filter, offset, limit)
        })
    }

    fn record_rule_hits(
        &self,
        account: &str,
        instance_id: &str,
        counts: &[crate::RuleCount],
        now: u64,
        gap: u64,
    ) -> Result<(), StoreError> {
        write(self, |db| {
            crate::hits::record(db, account, instance_id, counts, now, gap)
        })
    }

    fn hit_coverage(
        &self,
        account: &str,
        instance_ids: &[String],
    ) -> Result<Vec<crate::HitCoverage>, StoreError> {
        read(self, false, |db| {
            crate::hits::coverage(db, account, instance_ids)
        })
    }

    fn rule_hits(&self, account: &str, group_id: &str) -> Result<Vec<crate::RuleHits>, StoreError> {
        read(self, false, |db| {
            crate::hits::of_group(db, account, group_id)
        })
    }

    fn expire_flow_records(
        &self,
        account: &str,
        before: u64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        write(self, |db| crate::flows::expire(db, account, before, keep))
    }

    fn instance_statuses(
        &self,
        account: &str,
    ) -> Result<Vec<(String, serde_json::Value, String)>, StoreError> {
        read(self, false, |db| {
            db.query(
                "SELECT instance_id, body, reported_time FROM instance_status WHERE account_id = $1 ORDER BY instance_id",
                params![account],
            )?
            .into_iter()
            .map(|mut r| Ok((r.text(0)?, r.json(1)?, r.text(2)?)))
            .collect()
        })
    }
}

/// Ends a write transaction that changed `touched`: bumps the global
/// revision (which holds its row's lock until the commit, so commits follow
/// revision order) and records it for each changed account.
fn bump_revision(db: &dyn Sql, touched: &BTreeSet<String>) -> Result<u64, StoreError> {
    let rev = one(db.query(
        "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
        &[],
    )?)?;
    let mut sql = String::from("INSERT INTO account_revisions (account_id, revision) VALUES ");
    let mut params = vec![Param::Int(rev.int(0)?)];
    for (i, account) in touched.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        sql.push_str(&format!("{sep}(${}, $1)", i + 2));
        params.push(Param::Text(account));
    }
    sql.push_str(" ON CONFLICT (account_id) DO UPDATE SET revision = excluded.revision");
    db.execute(&sql, &params)?;
    rev.count(0)
}

const ACCOUNT_COLUMNS: &str = "id, name, secret_id, secret_key, created_time";

fn account_from_row(mut r: Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.text(0)?,
        name: r.text(1)?,
        secret_id: r.text(2)?,
        secret_key: r.text(3)?,
        created_time: r.text(4)?,
    })
}

fn account_where(db: &dyn Sql, column: &str, value: &str) -> Result<Option<Account>, StoreError> {
    // `column` is a literal chosen by this file, never user input.
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {column} = $1");
    db.query(&sql, params![value])?
        .into_iter()
        .next()
        .map(account_from_row)
        .transpose()
}

fn instance_exists(db: &dyn Sql, account: &str, id: &str) -> Result<bool, StoreError> {
    Ok(!db
        .query(
            "SELECT id FROM instances WHERE account_id = $1 AND id = $2",
            params![account, id],
        )?
        .is_empty())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One transaction seen through [`Tx`], on either dialect.
struct SqlTx<'a> {
    db: &'a dyn Sql,
    /// A write transaction takes each account's lock before it first reads
    /// or changes the account; a read transaction takes none.
    writing: bool,
    /// The accounts this transaction changed.
    touched: BTreeSet<String>,
    /// The accounts whose credentials this transaction removed.
    keys: BTreeSet<String>,
    /// In a read transaction (one snapshot): every template of the last
    /// account whose templates were asked for, in creation order, so that
    /// the four kinds a ruleset resolution asks for cost one query.
    templates: RefCell<Option<(String, Vec<TemplateRecord>)>>,
}

const GROUP_COLUMNS: &str = "id, name, description, project_id, is_default, created_time, update_time, tags, version, ingress, egress";
const TEMPLATE_COLUMNS: &str = "id, kind, name, members, extra, tags, created_time, updated_time";
const CLUSTER_COLUMNS: &str = "id, body, created_time, updated_time";
const INSTANCE_COLUMNS: &str = "id, name, private_ips, created_time";

fn group_from_row(mut r: Row) -> Result<GroupRecord, StoreError> {
    Ok(GroupRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        description: r.text(2)?,
        project_id: r.text(3)?,
        is_default: r.int(4)? != 0,
        created_time: r.text(5)?,
        update_time: r.text(6)?,
        tags: r.json(7)?,
        version: r.count(8)?,
        ingress: r.json(9)?,
        egress: r.json(10)?,
    })
}

fn template_from_row(mut r: Row) -> Result<TemplateRecord, StoreError> {
    let kind = r.text(1)?;
    Ok(TemplateRecord {
        id: r.text(0)?,
        kind: TemplateKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("template kind {kind:?}")))?,
        name: r.text(2)?,
        members: r.json(3)?,
        extra: r.json(4)?,
        tags: r.json(5)?,
        created_time: r.text(6)?,
        updated_time: r.text(7)?,
    })
}

fn cluster_from_row(mut r: Row) -> Result<ClusterRecord, StoreError> {
    Ok(ClusterRecord {
        id: r.text(0)?,
        body: r.json(1)?,
        created_time: r.text(2)?,
        updated_time: r.text(3)?,
    })
}

fn instance_from_row(
    mut r: Row,
    security_group_ids: Vec<String>,
) -> Result<InstanceRecord, StoreError> {
    Ok(InstanceRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        private_ips: r.json(2)?,
        created_time: r.text(3)?,
        security_group_ids,
    })
}

fn group_refs(group: &GroupRecord) -> Vec<String> {
    let mut refs: Vec<String> = group
        .ingress
        .iter()
        .chain(group.egress.iter())
        .flat_map(|r| r.refs.iter().cloned())
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

fn is_group_kind(kind: TemplateKind) -> bool {
    matches!(
        kind,
        TemplateKind::AddressGroup | TemplateKind::ServiceGroup
    )
}

/// `INSERT INTO {head} VALUES ($1, $2, $3), ($1, $2, $4), ...`: one row per
/// item, each the two shared parameters and the item's own.
fn insert_rows<'p>(
    head: &str,
    shared: [Param<'p>; 2],
    items: &'p [String],
) -> (String, Vec<Param<'p>>) {
    let mut sql = format!("INSERT INTO {head} VALUES ");
    let mut params = shared.to_vec();
    for (i, item) in items.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        sql.push_str(&format!("{sep}($1, $2, ${})", i + 3));
        params.push(Param::Text(item));
    }
    (sql, params)
}

impl<'a> SqlTx<'a> {
    fn new(db: &'a dyn Sql, writing: bool) -> Self {
        Self {
            db,
            writing,
            touched: BTreeSet::new(),
            keys: BTreeSet::new(),
            templates: RefCell::new(None),
        }
    }

    /// In a write transaction: takes `account`'s writer lock. Every [`Tx`]
    /// method calls this before it reads or writes the account, so all that
    /// a write transaction sees of an account was read under the account's
    /// lock: writes to one account are serialised across all servers (a
    /// stale `Version` is refused whichever server the other write went
    /// through), while writes to different accounts proceed side by side
    /// until their commits.
    fn lock(&self, account: &str) -> Result<(), StoreError> {
        if self.writing {
            self.db.lock_account(account)?;
        }
        Ok(())
    }

    fn changed(&mut self, account: &str) {
        self.touched.insert(account.to_string());
    }

    /// The record of the first row of `sql`, if any.
    fn first<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        record: fn(Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.db
            .query(sql, params)?
            .into_iter()
            .next()
            .map(record)
            .transpose()
    }

    /// The records of every row of `sql`.
    fn all<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        record: fn(Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.db
            .query(sql, params)?
            .into_iter()
            .map(record)
            .collect()
    }

    fn strings(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<String>, StoreError> {
        self.db
            .query(sql, params)?
            .into_iter()
            .map(|mut r| r.text(0))
            .collect()
    }

    fn set_refs(&self, account: &str, from: &str, refs: &[String]) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM refs WHERE from_id = $1", params![from])?;
        if !refs.is_empty() {
            let (sql, params) = insert_rows(
                "refs (account_id, from_id, to_id)",
                [account.into(), from.into()],
                refs,
            );
            self.db.execute(&sql, &params)?;
        }
        Ok(())
    }

    fn bindings(&self, account: &str, instance_id: &str) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT group_id FROM bindings WHERE account_id = $1 AND instance_id = $2 ORDER BY position",
            params![account, instance_id],
        )
    }

    fn set_bindings(&self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.db.execute(
            "DELETE FROM bindings WHERE account_id = $1 AND instance_id = $2",
            params![account, &i.id],
        )?;
        for (pos, g) in i.security_group_ids.iter().enumerate() {
            self.db.execute(
                "INSERT INTO bindings (account_id, instance_id, position, group_id) VALUES ($1, $2, $3, $4)",
                params![account, &i.id, i64::try_from(pos).unwrap_or(i64::MAX), g],
            )?;
        }
        Ok(())
    }

    /// Whether `id` names a record `account` could collide with: a group or
    /// template of any account (their random ids are unique store-wide), or
    /// an instance or cluster of this account (their ids are chosen by
    /// clients and unique per account, so other accounts' are not looked at:
    /// that would reveal them).
    fn id_taken(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let rows = self.db.query(
            "SELECT 1 FROM groups WHERE id = $2 UNION ALL SELECT 1 FROM templates WHERE id = $2
             UNION ALL SELECT 1 FROM instances WHERE account_id = $1 AND id = $2
             UNION ALL SELECT 1 FROM clusters WHERE account_id = $1 AND id = $2",
            params![account, id],
        )?;
        Ok(!rows.is_empty())
    }

    fn check_new_id(&self, account: &str, id: &str) -> Result<(), StoreError> {
        if self.id_taken(account, id)? {
            return Err(StoreError::DuplicateId(id.to_string()));
        }
        Ok(())
    }

    /// Runs a `DELETE ... WHERE account_id = $1 AND id = $2`;
    /// [`StoreError::NotFound`] when it removed nothing.
    fn delete_one(&self, table: &str, account: &str, id: &str) -> Result<(), StoreError> {
        // `table` is a literal chosen by this file, never user input.
        let sql = format!("DELETE FROM {table} WHERE account_id = $1 AND id = $2");
        if self.db.execute(&sql, params![account, id])? == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    fn found(n: u64, id: &str) -> Result<(), StoreError> {
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }
}

impl Tx for SqlTx<'_> {
    fn revision(&self) -> Result<u64, StoreError> {
        current_revision(self.db)
    }

    fn account_revision(&self, account: &str) -> Result<u64, StoreError> {
        self.lock(account)?;
        match self
            .db
            .query(
                "SELECT revision FROM account_revisions WHERE account_id = $1",
                params![account],
            )?
            .first()
        {
            Some(row) => row.count(0),
            None => Ok(0),
        }
    }

    fn group(&self, account: &str, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.lock(account)?;
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = $1 AND id = $2");
        self.first(&sql, params![account, id], group_from_row)
    }

    fn groups(&self, account: &str) -> Result<Vec<GroupRecord>, StoreError> {
        self.lock(account)?;
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = $1 ORDER BY seq");
        self.all(&sql, params![account], group_from_row)
    }

    fn insert_group(&mut self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        self.check_new_id(account, &g.id)?;
        self.db.execute(
            "INSERT INTO groups (id, account_id, name, description, project_id, is_default, created_time, update_time, tags, version, ingress, egress) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            params![
                &g.id, account, &g.name, &g.description, &g.project_id, g.is_default,
                &g.created_time, &g.update_time, &to_json(&g.tags)?, to_i64(g.version),
                &to_json(&g.ingress)?, &to_json(&g.egress)?,
            ],
        )?;
        self.set_refs(account, &g.id, &group_refs(g))?;
        self.record_version(account, g)?;
        self.changed(account);
        Ok(())
    }

    fn update_group(&mut self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.db.execute(
            "UPDATE groups SET name = $3, description = $4, project_id = $5, is_default = $6, update_time = $7, tags = $8, version = $9, ingress = $10, egress = $11 WHERE account_id = $1 AND id = $2",
            params![
                account, &g.id, &g.name, &g.description, &g.project_id, g.is_default,
                &g.update_time, &to_json(&g.tags)?, to_i64(g.version),
                &to_json(&g.ingress)?, &to_json(&g.egress)?,
            ],
        )?;
        Self::found(n, &g.id)?;
        self.set_refs(account, &g.id, &group_refs(g))?;
        self.record_version(account, g)?;
        self.changed(account);
        Ok(())
    }

    fn delete_group(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        self.delete_one("groups", account, id)?;
        self.db
            .execute("DELETE FROM refs WHERE from_id = $1", params![id])?;
        self.forget_versions(account, id)?;
        let instances = self.strings(
            "SELECT DISTINCT instance_id FROM bindings WHERE account_id = $1 AND group_id = $2",
            params![account, id],
        )?;
        // Removing a group from instances keeps the remaining order.
        for ins in instances {
            if let Some(mut rec) = self.instance(account, &ins)? {
                rec.security_group_ids.retain(|g| g != id);
                self.set_bindings(account, &rec)?;
            }
        }
        self.changed(account);
        Ok(())
    }

    fn referrers(&self, account: &str, id: &str) -> Result<Vec<String>, StoreError> {
        self.lock(account)?;
        self.strings(
            "SELECT DISTINCT from_id FROM refs WHERE account_id = $1 AND to_id = $2 AND from_id <> $2 ORDER BY from_id",
            params![account, id],
        )
    }

    fn template(&self, account: &str, id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        self.lock(account)?;
        let sql =
            format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = $1 AND id = $2");
        self.first(&sql, params![account, id], template_from_row)
    }

    fn templates(
        &self,
        account: &str,
        kind: TemplateKind,
    ) -> Result<Vec<TemplateRecord>, StoreError> {
        self.lock(account)?;
        if self.writing {
            // A write transaction may change templates between two calls.
            let sql = format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = $1 AND kind = $2 ORDER BY seq"
            );
            return self.all(&sql, params![account, kind.as_str()], template_from_row);
        }
        let mut cache = self.templates.borrow_mut();
        if cache.as_ref().is_none_or(|(a, _)| a != account) {
            let sql = format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = $1 ORDER BY seq"
            );
            let all = self.all(&sql, params![account], template_from_row)?;
            *cache = Some((account.to_string(), all));
        }
        Ok(cache
            .as_ref()
            .map(|(_, all)| all.iter().filter(|t| t.kind == kind).cloned().collect())
            .unwrap_or_default())
    }

    fn insert_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        self.check_new_id(account, &t.id)?;
        self.db.execute(
            "INSERT INTO templates (id, account_id, kind, name, members, extra, tags, created_time, updated_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            params![
                &t.id, account, t.kind.as_str(), &t.name, &to_json(&t.members)?,
                &to_json(&t.extra)?, &to_json(&t.tags)?, &t.created_time, &t.updated_time,
            ],
        )?;
        if is_group_kind(t.kind) {
            self.set_refs(account, &t.id, &t.members)?;
        }
        self.changed(account);
        Ok(())
    }

    fn update_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.db.execute(
            "UPDATE templates SET name = $3, members = $4, extra = $5, tags = $6, updated_time = $7 WHERE account_id = $1 AND id = $2",
            params![
                account, &t.id, &t.name, &to_json(&t.members)?, &to_json(&t.extra)?,
                &to_json(&t.tags)?, &t.updated_time,
            ],
        )?;
        Self::found(n, &t.id)?;
        if is_group_kind(t.kind) {
            self.set_refs(account, &t.id, &t.members)?;
        }
        self.changed(account);
        Ok(())
    }

    fn delete_template(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        self.delete_one("templates", account, id)?;
        self.db
            .execute("DELETE FROM refs WHERE from_id = $1", params![id])?;
        self.changed(account);
        Ok(())
    }

    fn instance(&self, account: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.lock(account)?;
        let sql =
            format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE account_id = $1 AND id = $2");
        let Some(row) = self
            .db
            .query(&sql, params![account, id])?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        instance_from_row(row, self.bindings(account, id)?).map(Some)
    }

    fn instances(&self, account: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.lock(account)?;
        // Two queries for all instances and their ordered bindings, however
        // many instances: every agent's ruleset request reads them all.
        let mut bound: HashMap<String, Vec<String>> = HashMap::new();
        for mut r in self.db.query(
            "SELECT instance_id, group_id FROM bindings WHERE account_id = $1 ORDER BY instance_id, position",
            params![account],
        )? {
            bound.entry(r.text(0)?).or_default().push(r.text(1)?);
        }
        let sql =
            format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE account_id = $1 ORDER BY seq");
        self.db
            .query(&sql, params![account])?
            .into_iter()
            .map(|r| {
                let groups = match &r.0.first() {
                    Some(Value::Text(id)) => bound.remove(id).unwrap_or_default(),
                    _ => Vec::new(),
                };
                instance_from_row(r, groups)
            })
            .collect()
    }

    fn insert_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        self.check_new_id(account, &i.id)?;
        self.db.execute(
            "INSERT INTO instances (id, account_id, name, private_ips, created_time) VALUES ($1, $2, $3, $4, $5)",
            params![&i.id, account, &i.name, &to_json(&i.private_ips)?, &i.created_time],
        )?;
        self.set_bindings(account, i)?;
        self.changed(account);
        Ok(())
    }

    fn update_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.db.execute(
            "UPDATE instances SET name = $3, private_ips = $4 WHERE account_id = $1 AND id = $2",
            params![account, &i.id, &i.name, &to_json(&i.private_ips)?],
        )?;
        Self::found(n, &i.id)?;
        self.set_bindings(account, i)?;
        self.changed(account);
        Ok(())
    }

    fn delete_instance(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        self.delete_one("instances", account, id)?;
        // A deregistered instance's bindings, agent credentials and status
        // die with it (only this account's: another may hold the same id).
        for table in [
            "bindings",
            "instance_keys",
            "instance_status",
            "instance_enforcement",
            "rule_counter_last",
            "hit_coverage",
        ] {
            let sql = format!("DELETE FROM {table} WHERE account_id = $1 AND instance_id = $2");
            self.db.execute(&sql, params![account, id])?;
        }
        self.changed(account);
        self.keys.insert(account.to_string());
        Ok(())
    }

    fn group_instances(&self, account: &str, group_id: &str) -> Result<Vec<String>, StoreError> {
        self.lock(account)?;
        self.strings(
            "SELECT b.instance_id FROM bindings b JOIN instances i ON i.account_id = b.account_id AND i.id = b.instance_id
             WHERE b.account_id = $1 AND b.group_id = $2 GROUP BY b.instance_id ORDER BY min(i.seq)",
            params![account, group_id],
        )
    }

    fn cluster(&self, account: &str, id: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.lock(account)?;
        let sql =
            format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE account_id = $1 AND id = $2");
        self.first(&sql, params![account, id], cluster_from_row)
    }

    fn clusters(&self, account: &str) -> Result<Vec<ClusterRecord>, StoreError> {
        self.lock(account)?;
        let sql =
            format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE account_id = $1 ORDER BY seq");
        self.all(&sql, params![account], cluster_from_row)
    }

    fn put_cluster(&mut self, account: &str, c: &ClusterRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        if self.cluster(account, &c.id)?.is_some() {
            self.db.execute(
                "UPDATE clusters SET body = $3, updated_time = $4 WHERE account_id = $1 AND id = $2",
                params![account, &c.id, &to_json(&c.body)?, &c.updated_time],
            )?;
        } else {
            self.check_new_id(account, &c.id)?;
            self.db.execute(
                "INSERT INTO clusters (id, account_id, body, created_time, updated_time) VALUES ($1, $2, $3, $4, $5)",
                params![&c.id, account, &to_json(&c.body)?, &c.created_time, &c.updated_time],
            )?;
        }
        self.changed(account);
        Ok(())
    }

    fn delete_cluster(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        self.delete_one("clusters", account, id)?;
        self.changed(account);
        Ok(())
    }

    fn enforcement(&self, account: &str, instance_id: &str) -> Result<Enforcement, StoreError> {
        self.lock(account)?;
        let rows = self.db.query(
            "SELECT mode FROM instance_enforcement WHERE account_id = $1 AND instance_id = $2",
            params![account, instance_id],
        )?;
        match rows.into_iter().next() {
            None => Ok(Enforcement::Enforce),
            Some(mut r) => {
                let mode = r.text(0)?;
                Enforcement::parse_field("mode", &mode)
                    .map_err(|e| StoreError::Corrupt(format!("enforcement of {instance_id}: {e}")))
            }
        }
    }

    fn enforcements(&self, account: &str) -> Result<Vec<(String, Enforcement)>, StoreError> {
        self.lock(account)?;
        let rows = self.db.query(
            "SELECT instance_id, mode FROM instance_enforcement WHERE account_id = $1",
            params![account],
        )?;
        rows.into_iter()
            .map(|mut r| {
                let id = r.text(0)?;
                let mode = Enforcement::parse_field("mode", &r.text(1)?)
                    .map_err(|e| StoreError::Corrupt(format!("enforcement of {id}: {e}")))?;
                Ok((id, mode))
            })
            .collect()
    }

    fn set_enforcement(
        &mut self,
        account: &str,
        instance_id: &str,
        mode: Enforcement,
    ) -> Result<(), StoreError> {
        self.lock(account)?;
        if self.instance(account, instance_id)?.is_none() {
            return Err(StoreError::NotFound(instance_id.to_string()));
        }
        self.db.execute(
            "INSERT INTO instance_enforcement (account_id, instance_id, mode) VALUES ($1, $2, $3)
             ON CONFLICT (account_id, instance_id) DO UPDATE SET mode = excluded.mode",
            params![account, instance_id, mode.as_str()],
        )?;
        self.changed(account);
        Ok(())
    }

    fn join_token(&self, id: &str) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        let Some(mut r) = self
            .db
            .query(
                "SELECT account_id FROM join_tokens WHERE id = $1",
                params![id],
            )?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let account = r.text(0)?;
        // Locked before the read that counts: a use is read and written
        // under the account's lock, so two joins cannot share the last use.
        self.lock(&account)?;
        let Some(mut r) = self
            .db
            .query(
                "SELECT body FROM join_tokens WHERE account_id = $1 AND id = $2",
                params![&account, id],
            )?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        Ok(Some((account, r.json(0)?)))
    }

    fn join_tokens(&self, account: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.lock(account)?;
        self.db
            .query(
                "SELECT id, body FROM join_tokens WHERE account_id = $1 ORDER BY created_time, id",
                params![account],
            )?
            .into_iter()
            .map(|mut r| Ok((r.text(0)?, r.json(1)?)))
            .collect()
    }

    fn put_join_token(
        &mut self,
        account: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.db.execute(
            "UPDATE join_tokens SET body = $3 WHERE account_id = $1 AND id = $2",
            params![account, id, &to_json(body)?],
        )?;
        if n == 0 {
            self.db.execute(
                "INSERT INTO join_tokens (id, account_id, body, created_time) VALUES ($1, $2, $3, $4)",
                params![id, account, &to_json(body)?, &crate::now_string()],
            )?;
        }
        // Not configuration that agents hold: the revision stays.
        Ok(())
    }

    fn insert_instance_key(&mut self, key: &InstanceKey) -> Result<(), StoreError> {
        self.lock(&key.account_id)?;
        self.db.execute(
            "INSERT INTO instance_keys (secret_id, secret_key, account_id, instance_id, created_time) VALUES ($1, $2, $3, $4, $5)",
            params![&key.secret_id, &key.secret_key, &key.account_id, &key.instance_id, &crate::now_string()],
        )?;
        Ok(())
    }

    fn group_history(
        &self,
        account: &str,
        group_id: &str,
    ) -> Result<Vec<GroupVersion>, StoreError> {
        self.history(account, group_id)
    }

    fn document(
        &self,
        account: &str,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        self.get_document(account, kind, id)
    }

    fn documents(&self, account: &str, kind: DocKind) -> Result<Vec<Document>, StoreError> {
        self.list_documents(account, kind)
    }

    fn put_document(&mut self, account: &str, doc: &Document) -> Result<(), StoreError> {
        self.store_document(account, doc)
    }

    fn delete_document(
        &mut self,
        account: &str,
        kind: DocKind,
        id: &str,
    ) -> Result<(), StoreError> {
        self.remove_document(account, kind, id)
    }

    fn documents_due(&self, kind: DocKind, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.due(kind, now)
    }

    fn marker(&self, name: &str) -> Result<Option<i64>, StoreError> {
        debug_assert_ne!(name, "revision");
        self.db
            .query("SELECT value FROM meta WHERE key = $1", params![name])?
            .first()
            .map(|r| r.int(0))
            .transpose()
    }

    fn set_marker(&mut self, name: &str, value: i64) -> Result<(), StoreError> {
        debug_assert_ne!(name, "revision");
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }
}
