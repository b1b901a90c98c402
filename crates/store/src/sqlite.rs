//! The SQLite implementation of [`Store`]: one file, WAL mode, no setup.
//!
//! Durability: `synchronous = FULL`. In WAL mode `NORMAL` already survives a
//! `kill -9` of the server (the WAL is in the OS page cache), but it may lose
//! the last commits on power loss or a kernel crash; `FULL` fsyncs the WAL on
//! every commit, so an acknowledged API write survives both. The cost is one
//! fsync per mutation, which is fine for a control plane.
//!
//! Concurrency: one connection behind a mutex serialises this process's
//! transactions; other processes (`palisade account create` while the server
//! runs) share the file through WAL and a busy timeout. Writes start with
//! `BEGIN IMMEDIATE` so a read-then-write never hits a lock upgrade failure.

use crate::changes::Watchers;
use crate::{
    random_id, Account, ClusterRecord, Credential, GroupRecord, InstanceKey, InstanceRecord,
    RuleRecord, Store, StoreError, TemplateKind, TemplateRecord, Tx,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use tokio::sync::watch;

/// A [`Store`] on one SQLite database file: one connection for writes
/// (SQLite has one writer at a time anyway) and a few for reads, which WAL
/// lets run beside it and beside each other, so concurrent describes and
/// long-polls neither queue behind a write nor behind one another.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` for an in-memory database, which only its own connection sees.
    readers: Option<Readers>,
    watchers: Watchers,
}

/// Most read connections one store opens.
const READERS: usize = 4;

/// Idle read connections, opened on demand up to [`READERS`].
struct Readers {
    path: std::path::PathBuf,
    state: Mutex<(Vec<Connection>, usize)>,
    freed: Condvar,
}

/// A read connection, returned to [`Readers`] on drop.
struct ReadConn<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Set from construction until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for ReadConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        let mut st = self.readers.lock();
        if let Some(c) = self.conn.take() {
            st.0.push(c);
        }
        drop(st);
        self.readers.freed.notify_one();
    }
}

impl Readers {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Connection>, usize)> {
        // A list and a count: consistent between statements.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self) -> Result<ReadConn<'_>, StoreError> {
        let mut st = self.lock();
        loop {
            if let Some(c) = st.0.pop() {
                return Ok(ReadConn {
                    readers: self,
                    conn: Some(c),
                });
            }
            if st.1 < READERS {
                st.1 += 1;
                drop(st);
                return match open_reader(&self.path) {
                    Ok(c) => Ok(ReadConn {
                        readers: self,
                        conn: Some(c),
                    }),
                    Err(e) => {
                        self.lock().1 -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            st = self
                .freed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// A read connection of either kind.
enum Reader<'a> {
    Pooled(ReadConn<'a>),
    Writer(std::sync::MutexGuard<'a, Connection>),
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Reader::Pooled(c) => c,
            Reader::Writer(c) => c,
        }
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        match self {
            Reader::Pooled(c) => c,
            Reader::Writer(c) => c,
        }
    }
}

/// SQLite's in-memory names: a second connection would open another,
/// empty database.
fn in_memory(path: &Path) -> bool {
    let p = path.to_string_lossy();
    p.is_empty() || p == ":memory:" || p.starts_with("file::memory:")
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(128);
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// The current schema, run (idempotently) at every open: it creates a new
/// database directly in the shape of [`SCHEMA_VERSION`] and adds any table
/// an older database lacks; [`migrate`] reshapes the tables that changed.
/// Instances, clusters and the tables keyed by an instance id are keyed by
/// `(account_id, id)`: those ids are chosen by clients, and one account's
/// id must neither block nor reveal another's.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, secret_id TEXT NOT NULL UNIQUE,
    secret_key TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL, project_id TEXT NOT NULL,
    is_default INTEGER NOT NULL, created_time TEXT NOT NULL, update_time TEXT NOT NULL,
    tags TEXT NOT NULL, version INTEGER NOT NULL, ingress TEXT NOT NULL, egress TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS groups_account ON groups (account_id);
CREATE TABLE IF NOT EXISTS templates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    kind TEXT NOT NULL, name TEXT NOT NULL, members TEXT NOT NULL, extra TEXT NOT NULL,
    tags TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS templates_account ON templates (account_id, kind);
CREATE TABLE IF NOT EXISTS refs (account_id TEXT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS refs_to ON refs (account_id, to_id);
CREATE INDEX IF NOT EXISTS refs_from ON refs (from_id);
CREATE TABLE IF NOT EXISTS instances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, account_id TEXT NOT NULL,
    name TEXT NOT NULL, private_ips TEXT NOT NULL, created_time TEXT NOT NULL,
    UNIQUE (account_id, id));
CREATE INDEX IF NOT EXISTS instances_account ON instances (account_id);
CREATE TABLE IF NOT EXISTS bindings (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, position INTEGER NOT NULL,
    group_id TEXT NOT NULL, PRIMARY KEY (account_id, instance_id, position));
CREATE INDEX IF NOT EXISTS bindings_group ON bindings (account_id, group_id);
CREATE TABLE IF NOT EXISTS instance_keys (
    secret_id TEXT PRIMARY KEY, secret_key TEXT NOT NULL, account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS instance_keys_instance ON instance_keys (account_id, instance_id);
CREATE TABLE IF NOT EXISTS clusters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, account_id TEXT NOT NULL,
    body TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL,
    UNIQUE (account_id, id));
CREATE TABLE IF NOT EXISTS account_revisions (
    account_id TEXT PRIMARY KEY, revision INTEGER NOT NULL);
-- An account without a row (from a database older than the table) may have
-- changed at any revision up to now: say so, or a long-poll would miss it.
INSERT OR IGNORE INTO account_revisions (account_id, revision)
    SELECT id, (SELECT value FROM meta WHERE key = 'revision') FROM accounts;
CREATE TABLE IF NOT EXISTS instance_status (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, body TEXT NOT NULL,
    reported_time TEXT NOT NULL, PRIMARY KEY (account_id, instance_id));
";

impl SqliteStore {
    /// Opens (creating if needed) the database `palisade.db` in `data_dir`.
    pub fn open_dir(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_file(&data_dir.join("palisade.db"))
    }

    /// Opens (creating if needed, with a 0700 parent directory) the database
    /// file at `path` and restricts it, its WAL and shared-memory files to
    /// their owner: they hold secret keys.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                restrict_mode(dir, 0o700)?;
            }
        }
        let store = Self::open(path)?;
        // Make sure the WAL and shared-memory files exist, then restrict them.
        store.lock().execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            if p.exists() {
                restrict_mode(&p, 0o600)?;
            }
        }
        Ok(store)
    }

    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Every query goes through `prepare_cached`: parsing SQL was a
        // visible share of a describe request's time.
        conn.set_prepared_statement_cache_capacity(128);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        let revision = read_revision(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers: (!in_memory(path)).then(|| Readers {
                path: path.to_path_buf(),
                state: Mutex::new((Vec::new(), 0)),
                freed: Condvar::new(),
            }),
            watchers: Watchers::new(revision),
        })
    }

    /// A connection to read on: a pooled reader, or the writer's own for an
    /// in-memory database.
    fn reader(&self) -> Result<Reader<'_>, StoreError> {
        match &self.readers {
            Some(r) => r.get().map(Reader::Pooled),
            None => Ok(Reader::Writer(self.lock())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half
        // applied (the rusqlite Transaction rolls back on drop), so a
        // poisoned mutex still guards a consistent connection.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(unix)]
fn restrict_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict_mode(_path: &Path, _mode: u32) -> Result<(), StoreError> {
    Ok(())
}

/// The newest schema version this binary writes. Version 1 is the first
/// released schema; version 2 keys instances, clusters, bindings, instance
/// status and instance keys by account ([`MIGRATION_2`]).
pub const SCHEMA_VERSION: i64 = 2;

/// Version 1 to 2: instance and cluster ids become unique per account, not
/// across the whole store. SQLite cannot change a primary key or a unique
/// constraint in place, so each table is rebuilt (new table, copy, drop,
/// rename, indexes again); `seq` values and the AUTOINCREMENT counters are
/// kept so creation order survives. `instance_keys` keeps its shape and only
/// gets an index that includes the account.
const MIGRATION_2: &str = "
CREATE TABLE instances_v2 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, account_id TEXT NOT NULL,
    name TEXT NOT NULL, private_ips TEXT NOT NULL, created_time TEXT NOT NULL,
    UNIQUE (account_id, id));
INSERT INTO instances_v2 (seq, id, account_id, name, private_ips, created_time)
    SELECT seq, id, account_id, name, private_ips, created_time FROM instances;
DELETE FROM sqlite_sequence WHERE name = 'instances_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'instances_v2', seq FROM sqlite_sequence WHERE name = 'instances';
DROP TABLE instances;
ALTER TABLE instances_v2 RENAME TO instances;
CREATE INDEX instances_account ON instances (account_id);

CREATE TABLE bindings_v2 (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, position INTEGER NOT NULL,
    group_id TEXT NOT NULL, PRIMARY KEY (account_id, instance_id, position));
INSERT INTO bindings_v2 (account_id, instance_id, position, group_id)
    SELECT account_id, instance_id, position, group_id FROM bindings;
DROP TABLE bindings;
ALTER TABLE bindings_v2 RENAME TO bindings;
CREATE INDEX bindings_group ON bindings (account_id, group_id);

DROP INDEX IF EXISTS instance_keys_instance;
CREATE INDEX instance_keys_instance ON instance_keys (account_id, instance_id);

CREATE TABLE clusters_v2 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, account_id TEXT NOT NULL,
    body TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL,
    UNIQUE (account_id, id));
INSERT INTO clusters_v2 (seq, id, account_id, body, created_time, updated_time)
    SELECT seq, id, account_id, body, created_time, updated_time FROM clusters;
DELETE FROM sqlite_sequence WHERE name = 'clusters_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'clusters_v2', seq FROM sqlite_sequence WHERE name = 'clusters';
DROP TABLE clusters;
ALTER TABLE clusters_v2 RENAME TO clusters;

CREATE TABLE instance_status_v2 (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, body TEXT NOT NULL,
    reported_time TEXT NOT NULL, PRIMARY KEY (account_id, instance_id));
INSERT INTO instance_status_v2 (account_id, instance_id, body, reported_time)
    SELECT account_id, instance_id, body, reported_time FROM instance_status;
DROP TABLE instance_status;
ALTER TABLE instance_status_v2 RENAME TO instance_status;
";

/// Brings the database to [`SCHEMA_VERSION`] in one transaction (so a
/// second process opening the file at the same moment waits, then finds it
/// migrated) and records every version in `schema_migrations`, as the
/// PostgreSQL store does. A new database is created directly in the current
/// shape; a database from a newer binary is refused before anything is
/// touched. A database without `schema_migrations` rows but with tables
/// predates the version table and is version 1.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let fresh: bool = tx.prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')")?.query_row([], |r| r.get(0))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);",
    )?;
    let recorded: Option<i64> = tx
        .prepare_cached("SELECT max(version) FROM schema_migrations")?
        .query_row([], |r| r.get(0))?;
    let version = match recorded {
        Some(v) => v,
        None if fresh => SCHEMA_VERSION,
        None => 1,
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    // First, so that every table the migration copies exists (tables added
    // to version 1 over time were created by `SCHEMA` at open).
    tx.execute_batch(SCHEMA)?;
    if version < 2 {
        tx.execute_batch(MIGRATION_2)?;
    }
    for v in 1..=SCHEMA_VERSION {
        tx.prepare_cached("INSERT OR IGNORE INTO schema_migrations (version, applied_at) VALUES (?1, datetime('now'))")?.execute([v])?;
    }
    tx.commit()?;
    Ok(())
}

fn read_revision(conn: &Connection) -> Result<u64, StoreError> {
    let v: i64 = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'revision'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(v).unwrap_or(0))
}

impl Store for SqliteStore {
    fn read_dyn(&self, f: &mut dyn FnMut(&dyn Tx)) -> Result<(), StoreError> {
        let mut conn = self.reader()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let t = SqliteTx {
            tx: &tx,
            touched: BTreeSet::new(),
            keys: BTreeSet::new(),
        };
        f(&t);
        tx.commit()?;
        Ok(())
    }

    fn write_dyn(&self, f: &mut dyn FnMut(&mut dyn Tx) -> bool) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut t = SqliteTx {
            tx: &tx,
            touched: BTreeSet::new(),
            keys: BTreeSet::new(),
        };
        if !f(&mut t) {
            // Dropping the transaction rolls it back.
            return Ok(());
        }
        let touched = std::mem::take(&mut t.touched);
        let names = crate::changes::committed_names(&touched, &t.keys);
        let mut new_revision = None;
        if !touched.is_empty() {
            tx.prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'revision'")?
                .execute([])?;
            let rev = read_revision(&tx)?;
            let stored = i64::try_from(rev).map_err(|_| StoreError::Corrupt("revision".into()))?;
            for account in &touched {
                tx.prepare_cached(
                    "INSERT INTO account_revisions (account_id, revision) VALUES (?1, ?2)
                     ON CONFLICT (account_id) DO UPDATE SET revision = excluded.revision",
                )?
                .execute(params![account, stored])?;
            }
            new_revision = Some(rev);
        }
        tx.commit()?;
        if let Some(rev) = new_revision {
            self.watchers.committed(rev, &names);
        }
        Ok(())
    }

    fn revision(&self) -> Result<u64, StoreError> {
        read_revision(&*self.reader()?)
    }

    fn watch_revision(&self) -> watch::Receiver<u64> {
        self.watchers.global()
    }

    fn watch_account(&self, account: &str) -> watch::Receiver<u64> {
        self.watchers.account(account)
    }

    fn watch_keys(&self, account: &str) -> watch::Receiver<u64> {
        self.watchers.keys(account)
    }

    fn create_account(&self, name: &str) -> Result<Account, StoreError> {
        crate::check_account_name(name)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: Option<String> = tx
            .prepare_cached("SELECT id FROM accounts WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::AccountExists(name.to_string()));
        }
        let account = Account {
            id: random_id("acc-", 8),
            name: name.to_string(),
            secret_id: crate::random_alnum("AKID", 32),
            secret_key: crate::random_alnum("", 32),
            created_time: crate::now_string(),
        };
        tx.prepare_cached("INSERT INTO accounts (id, name, secret_id, secret_key, created_time) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![account.id, account.name, account.secret_id, account.secret_key, account.created_time])?;
        tx.commit()?;
        Ok(account)
    }

    fn account_by_secret_id(&self, secret_id: &str) -> Result<Option<Account>, StoreError> {
        account_where(&*self.reader()?, "secret_id", secret_id)
    }

    fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        account_where(&*self.reader()?, "name", name)
    }

    fn create_instance_key(
        &self,
        account_id: &str,
        instance_id: &str,
    ) -> Result<InstanceKey, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: Option<String> = tx
            .prepare_cached("SELECT id FROM instances WHERE account_id = ?1 AND id = ?2")?
            .query_row([account_id, instance_id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound(instance_id.to_string()));
        }
        let key = InstanceKey {
            account_id: account_id.to_string(),
            instance_id: instance_id.to_string(),
            secret_id: crate::random_alnum("AKID", 32),
            secret_key: crate::random_alnum("", 32),
        };
        tx.prepare_cached("INSERT INTO instance_keys (secret_id, secret_key, account_id, instance_id, created_time) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![key.secret_id, key.secret_key, key.account_id, key.instance_id, crate::now_string()])?;
        tx.commit()?;
        Ok(key)
    }

    fn credential(&self, secret_id: &str) -> Result<Option<Credential>, StoreError> {
        let conn = self.reader()?;
        if let Some(account) = account_where(&conn, "secret_id", secret_id)? {
            let secret_key = account.secret_key.clone();
            return Ok(Some(Credential {
                account,
                secret_key,
                instance_scope: None,
            }));
        }
        // The key's instance is looked up within the key's account: the same
        // instance id may exist in other accounts.
        let key: Option<(String, String, String)> = conn
            .prepare_cached(
                "SELECT k.secret_key, k.account_id, k.instance_id FROM instance_keys k
                 JOIN instances i ON i.account_id = k.account_id AND i.id = k.instance_id
                 WHERE k.secret_id = ?1",
            )?
            .query_row([secret_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((secret_key, account_id, instance_id)) = key else {
            return Ok(None);
        };
        let Some(account) = account_where(&conn, "id", &account_id)? else {
            return Ok(None);
        };
        Ok(Some(Credential {
            account,
            secret_key,
            instance_scope: Some(instance_id),
        }))
    }

    fn put_instance_status(
        &self,
        account: &str,
        instance_id: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: Option<String> = tx
            .prepare_cached("SELECT id FROM instances WHERE account_id = ?1 AND id = ?2")?
            .query_row([account, instance_id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound(instance_id.to_string()));
        }
        tx.prepare_cached("INSERT INTO instance_status (instance_id, account_id, body, reported_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account_id, instance_id) DO UPDATE SET body = excluded.body, reported_time = excluded.reported_time")?.execute(params![instance_id, account, to_json(status)?, crate::now_string()])?;
        tx.commit()?;
        Ok(())
    }

    fn instance_statuses(
        &self,
        account: &str,
    ) -> Result<Vec<(String, serde_json::Value, String)>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT instance_id, body, reported_time FROM instance_status WHERE account_id = ?1 ORDER BY instance_id")?;
        let rows = stmt.query_map([account], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body, time) = row?;
            out.push((id, from_json(&body)?, time));
        }
        Ok(out)
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, secret_id, secret_key, created_time FROM accounts ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], account_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        secret_id: r.get(2)?,
        secret_key: r.get(3)?,
        created_time: r.get(4)?,
    })
}

fn account_where(
    conn: &Connection,
    column: &str,
    value: &str,
) -> Result<Option<Account>, StoreError> {
    // `column` is a literal chosen by this file, never user input.
    let sql = format!(
        "SELECT id, name, secret_id, secret_key, created_time FROM accounts WHERE {column} = ?1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], account_row)
        .optional()?)
}

struct SqliteTx<'a> {
    tx: &'a Transaction<'a>,
    /// The accounts this transaction changed.
    touched: BTreeSet<String>,
    /// The accounts whose credentials this transaction removed.
    keys: BTreeSet<String>,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

const GROUP_COLUMNS: &str = "id, name, description, project_id, is_default, created_time, update_time, tags, version, ingress, egress";

type GroupRow = (
    String,
    String,
    String,
    String,
    bool,
    String,
    String,
    String,
    i64,
    String,
    String,
);

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn group_from_row(row: GroupRow) -> Result<GroupRecord, StoreError> {
    let (
        id,
        name,
        description,
        project_id,
        is_default,
        created_time,
        update_time,
        tags,
        version,
        ingress,
        egress,
    ) = row;
    Ok(GroupRecord {
        id,
        name,
        description,
        project_id,
        is_default,
        created_time,
        update_time,
        tags: from_json(&tags)?,
        version: u64::try_from(version).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ingress: from_json(&ingress)?,
        egress: from_json(&egress)?,
    })
}

fn cluster_from_row(row: (String, String, String, String)) -> Result<ClusterRecord, StoreError> {
    let (id, body, created_time, updated_time) = row;
    Ok(ClusterRecord {
        id,
        body: from_json(&body)?,
        created_time,
        updated_time,
    })
}

fn group_refs(group: &GroupRecord) -> Vec<String> {
    let mut refs: Vec<String> = group
        .ingress
        .iter()
        .chain(group.egress.iter())
        .flat_map(|r: &RuleRecord| r.refs.iter().cloned())
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

const TEMPLATE_COLUMNS: &str = "id, kind, name, members, extra, tags, created_time, updated_time";

type TemplateRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn template_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn template_from_row(row: TemplateRow) -> Result<TemplateRecord, StoreError> {
    let (id, kind, name, members, extra, tags, created_time, updated_time) = row;
    let kind = match kind.as_str() {
        "address" => TemplateKind::Address,
        "address_group" => TemplateKind::AddressGroup,
        "service" => TemplateKind::Service,
        "service_group" => TemplateKind::ServiceGroup,
        other => return Err(StoreError::Corrupt(format!("template kind {other:?}"))),
    };
    Ok(TemplateRecord {
        id,
        kind,
        name,
        members: from_json(&members)?,
        extra: from_json(&extra)?,
        tags: from_json(&tags)?,
        created_time,
        updated_time,
    })
}

impl SqliteTx<'_> {
    fn set_refs(&self, account: &str, from: &str, refs: &[String]) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("DELETE FROM refs WHERE from_id = ?1")?
            .execute([from])?;
        for to in refs {
            self.tx
                .prepare_cached(
                    "INSERT INTO refs (account_id, from_id, to_id) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![account, from, to])?;
        }
        Ok(())
    }

    fn bindings(&self, account: &str, instance_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT group_id FROM bindings WHERE account_id = ?1 AND instance_id = ?2 ORDER BY position")?;
        let rows = stmt.query_map([account, instance_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_bindings(&self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("DELETE FROM bindings WHERE account_id = ?1 AND instance_id = ?2")?
            .execute([account, &i.id])?;
        for (pos, g) in i.security_group_ids.iter().enumerate() {
            self.tx.prepare_cached("INSERT INTO bindings (account_id, instance_id, position, group_id) VALUES (?1, ?2, ?3, ?4)")?.execute(params![account, i.id, i64::try_from(pos).unwrap_or(i64::MAX), g])?;
        }
        Ok(())
    }

    fn instance_from_row(
        &self,
        account: &str,
        row: (String, String, String, String),
    ) -> Result<InstanceRecord, StoreError> {
        let (id, name, ips, created_time) = row;
        let security_group_ids = self.bindings(account, &id)?;
        Ok(InstanceRecord {
            id,
            name,
            private_ips: from_json(&ips)?,
            created_time,
            security_group_ids,
        })
    }

    /// Whether `id` names a record `account` could collide with: a group or
    /// template of any account (their random ids are unique store-wide), or
    /// an instance or cluster of this account (their ids are chosen by
    /// clients and unique per account, so other accounts' are not looked at:
    /// that would reveal them).
    fn id_taken(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let n: i64 = self.tx.prepare_cached("SELECT (SELECT count(*) FROM groups WHERE id = ?2) + (SELECT count(*) FROM templates WHERE id = ?2) + (SELECT count(*) FROM instances WHERE account_id = ?1 AND id = ?2) + (SELECT count(*) FROM clusters WHERE account_id = ?1 AND id = ?2)")?.query_row([account, id], |r| r.get(0))?;
        Ok(n > 0)
    }
}

impl Tx for SqliteTx<'_> {
    fn revision(&self) -> Result<u64, StoreError> {
        read_revision(self.tx)
    }

    fn account_revision(&self, account: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .tx
            .prepare_cached("SELECT revision FROM account_revisions WHERE account_id = ?1")?
            .query_row([account], |r| r.get(0))
            .optional()?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    fn group(&self, account: &str, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = ?1 AND id = ?2");
        let row = self
            .tx
            .prepare_cached(&sql)?
            .query_row([account, id], group_row)
            .optional()?;
        row.map(group_from_row).transpose()
    }

    fn groups(&self, account: &str) -> Result<Vec<GroupRecord>, StoreError> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = ?1 ORDER BY seq");
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let rows = stmt.query_map([account], group_row)?;
        rows.map(|r| group_from_row(r?)).collect()
    }

    fn insert_group(&mut self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        if self.id_taken(account, &g.id)? {
            return Err(StoreError::DuplicateId(g.id.clone()));
        }
        self.tx.prepare_cached("INSERT INTO groups (id, account_id, name, description, project_id, is_default, created_time, update_time, tags, version, ingress, egress) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")?.execute(params![
                g.id, account, g.name, g.description, g.project_id, g.is_default, g.created_time,
                g.update_time, to_json(&g.tags)?, i64::try_from(g.version).unwrap_or(i64::MAX),
                to_json(&g.ingress)?, to_json(&g.egress)?
            ])?;
        self.set_refs(account, &g.id, &group_refs(g))?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn update_group(&mut self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        let n = self.tx.prepare_cached("UPDATE groups SET name = ?3, description = ?4, project_id = ?5, is_default = ?6, update_time = ?7, tags = ?8, version = ?9, ingress = ?10, egress = ?11 WHERE account_id = ?1 AND id = ?2")?.execute(params![
                account, g.id, g.name, g.description, g.project_id, g.is_default, g.update_time,
                to_json(&g.tags)?, i64::try_from(g.version).unwrap_or(i64::MAX),
                to_json(&g.ingress)?, to_json(&g.egress)?
            ])?;
        if n == 0 {
            return Err(StoreError::NotFound(g.id.clone()));
        }
        self.set_refs(account, &g.id, &group_refs(g))?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_group(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM groups WHERE account_id = ?1 AND id = ?2")?
            .execute([account, id])?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.tx
            .prepare_cached("DELETE FROM refs WHERE from_id = ?1")?
            .execute([id])?;
        // Removing a group from instances keeps the remaining order.
        let instances: Vec<String> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT DISTINCT instance_id FROM bindings WHERE account_id = ?1 AND group_id = ?2",
            )?;
            let rows = stmt.query_map([account, id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for ins in instances {
            if let Some(mut rec) = self.instance(account, &ins)? {
                rec.security_group_ids.retain(|g| g != id);
                self.set_bindings(account, &rec)?;
            }
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn referrers(&self, account: &str, id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT DISTINCT from_id FROM refs WHERE account_id = ?1 AND to_id = ?2 AND from_id != ?2 ORDER BY from_id")?;
        let rows = stmt.query_map([account, id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn template(&self, account: &str, id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        let sql =
            format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = ?1 AND id = ?2");
        let row = self
            .tx
            .prepare_cached(&sql)?
            .query_row([account, id], template_row)
            .optional()?;
        row.map(template_from_row).transpose()
    }

    fn templates(
        &self,
        account: &str,
        kind: TemplateKind,
    ) -> Result<Vec<TemplateRecord>, StoreError> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = ?1 AND kind = ?2 ORDER BY seq"
        );
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let rows = stmt.query_map([account, kind.as_str()], template_row)?;
        rows.map(|r| template_from_row(r?)).collect()
    }

    fn insert_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError> {
        if self.id_taken(account, &t.id)? {
            return Err(StoreError::DuplicateId(t.id.clone()));
        }
        self.tx.prepare_cached("INSERT INTO templates (id, account_id, kind, name, members, extra, tags, created_time, updated_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?.execute(params![
                t.id, account, t.kind.as_str(), t.name, to_json(&t.members)?, to_json(&t.extra)?,
                to_json(&t.tags)?, t.created_time, t.updated_time
            ])?;
        if matches!(
            t.kind,
            TemplateKind::AddressGroup | TemplateKind::ServiceGroup
        ) {
            self.set_refs(account, &t.id, &t.members)?;
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn update_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError> {
        let n = self.tx.prepare_cached("UPDATE templates SET name = ?3, members = ?4, extra = ?5, tags = ?6, updated_time = ?7 WHERE account_id = ?1 AND id = ?2")?.execute(params![
                account, t.id, t.name, to_json(&t.members)?, to_json(&t.extra)?, to_json(&t.tags)?,
                t.updated_time
            ])?;
        if n == 0 {
            return Err(StoreError::NotFound(t.id.clone()));
        }
        if matches!(
            t.kind,
            TemplateKind::AddressGroup | TemplateKind::ServiceGroup
        ) {
            self.set_refs(account, &t.id, &t.members)?;
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_template(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM templates WHERE account_id = ?1 AND id = ?2")?
            .execute([account, id])?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.tx
            .prepare_cached("DELETE FROM refs WHERE from_id = ?1")?
            .execute([id])?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn instance(&self, account: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row = self
            .tx
            .prepare_cached("SELECT id, name, private_ips, created_time FROM instances WHERE account_id = ?1 AND id = ?2")?.query_row([account, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        row.map(|r| self.instance_from_row(account, r)).transpose()
    }

    fn instances(&self, account: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows: Vec<(String, String, String, String)> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT id, name, private_ips, created_time FROM instances WHERE account_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([account], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|r| self.instance_from_row(account, r))
            .collect()
    }

    fn insert_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        if self.id_taken(account, &i.id)? {
            return Err(StoreError::DuplicateId(i.id.clone()));
        }
        self.tx.prepare_cached("INSERT INTO instances (id, account_id, name, private_ips, created_time) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![i.id, account, i.name, to_json(&i.private_ips)?, i.created_time])?;
        self.set_bindings(account, i)?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn update_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        let n = self.tx.prepare_cached("UPDATE instances SET name = ?3, private_ips = ?4 WHERE account_id = ?1 AND id = ?2")?.execute(params![account, i.id, i.name, to_json(&i.private_ips)?])?;
        if n == 0 {
            return Err(StoreError::NotFound(i.id.clone()));
        }
        self.set_bindings(account, i)?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_instance(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM instances WHERE account_id = ?1 AND id = ?2")?
            .execute([account, id])?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        // A deregistered instance's bindings, agent credentials and status
        // die with it (only this account's: another may hold the same id).
        for sql in [
            "DELETE FROM bindings WHERE account_id = ?1 AND instance_id = ?2",
            "DELETE FROM instance_keys WHERE account_id = ?1 AND instance_id = ?2",
            "DELETE FROM instance_status WHERE account_id = ?1 AND instance_id = ?2",
        ] {
            self.tx.prepare_cached(sql)?.execute([account, id])?;
        }
        self.touched.insert(account.to_string());
        self.keys.insert(account.to_string());
        Ok(())
    }

    fn group_instances(&self, account: &str, group_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT DISTINCT b.instance_id FROM bindings b JOIN instances i ON i.account_id = b.account_id AND i.id = b.instance_id WHERE b.account_id = ?1 AND b.group_id = ?2 ORDER BY i.seq")?;
        let rows = stmt.query_map([account, group_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn cluster(&self, account: &str, id: &str) -> Result<Option<ClusterRecord>, StoreError> {
        let row: Option<(String, String, String, String)> = self
            .tx
            .prepare_cached("SELECT id, body, created_time, updated_time FROM clusters WHERE account_id = ?1 AND id = ?2")?.query_row([account, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        row.map(cluster_from_row).transpose()
    }

    fn clusters(&self, account: &str) -> Result<Vec<ClusterRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, body, created_time, updated_time FROM clusters WHERE account_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([account], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.map(|r| cluster_from_row(r?)).collect()
    }

    fn put_cluster(&mut self, account: &str, c: &ClusterRecord) -> Result<(), StoreError> {
        if self.cluster(account, &c.id)?.is_some() {
            self.tx.prepare_cached("UPDATE clusters SET body = ?3, updated_time = ?4 WHERE account_id = ?1 AND id = ?2")?.execute(params![account, c.id, to_json(&c.body)?, c.updated_time])?;
        } else {
            if self.id_taken(account, &c.id)? {
                return Err(StoreError::DuplicateId(c.id.clone()));
            }
            self.tx.prepare_cached("INSERT INTO clusters (id, account_id, body, created_time, updated_time) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(params![c.id, account, to_json(&c.body)?, c.created_time, c.updated_time])?;
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_cluster(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM clusters WHERE account_id = ?1 AND id = ?2")?
            .execute([account, id])?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn marker(&self, name: &str) -> Result<Option<i64>, StoreError> {
        debug_assert_ne!(name, "revision");
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    fn set_marker(&mut self, name: &str, value: i64) -> Result<(), StoreError> {
        debug_assert_ne!(name, "revision");
        self.tx
            .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
            .execute(rusqlite::params![name, value])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreExt;

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

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_dir(dir.path()).expect("open");
        (dir, store)
    }

    #[test]
    fn failed_write_changes_nothing_and_keeps_revision() {
        let (_dir, store) = open();
        store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        assert_eq!(store.revision().expect("rev"), 1);
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
        assert_eq!(store.revision().expect("rev"), 1);
        let g = store
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!(g.name, "web");
        assert_eq!(g.version, 0);
        assert!(store
            .read(|tx| tx.group("a", "sg-00000002"))
            .expect("read")
            .is_none());
    }

    #[test]
    fn version_check_inside_transaction_rejects_stale_writer() {
        let (_dir, store) = open();
        store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        // Two writers both read version 0; the second must see the first's bump.
        let bump = |expected: u64| -> Result<(), StoreError> {
            store.write(|tx| {
                let mut g = tx.group("a", "sg-00000001")?.expect("exists");
                if g.version != expected {
                    return Err(StoreError::NotFound("version mismatch".into()));
                }
                g.version += 1;
                tx.update_group("a", &g)
            })
        };
        assert!(bump(0).is_ok());
        assert!(bump(0).is_err());
        let g = store
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!(g.version, 1);
        assert_eq!(store.revision().expect("rev"), 2);
    }

    #[test]
    fn racing_writers_with_one_version_one_wins() {
        let (_dir, store) = open();
        store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        let store = std::sync::Arc::new(store);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.write(|tx| {
                        let mut g = tx.group("a", "sg-00000001")?.expect("exists");
                        if g.version != 0 {
                            return Err(StoreError::NotFound("version mismatch".into()));
                        }
                        g.version += 1;
                        g.name = format!("writer {i}");
                        tx.update_group("a", &g)
                    })
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(Result::is_ok)
            .count();
        assert_eq!(wins, 1);
        assert_eq!(store.revision().expect("rev"), 2);
    }

    #[test]
    fn a_second_process_sees_commits_and_can_write_alongside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = SqliteStore::open_dir(dir.path()).expect("open");
        let cli = SqliteStore::open_dir(dir.path()).expect("open again");
        let acc = cli.create_account("bob").expect("create");
        assert_eq!(
            server.account_by_secret_id(&acc.secret_id).expect("lookup"),
            Some(acc)
        );
        server
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        assert!(cli
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .is_some());
    }

    #[test]
    fn accounts_are_isolated_and_references_are_indexed() {
        let (_dir, store) = open();
        let mut referrer = group("sg-00000002");
        referrer.ingress.push(RuleRecord {
            body: serde_json::json!({"SecurityGroupId": "sg-00000001"}),
            refs: vec!["sg-00000001".into()],
        });
        store
            .write(|tx| {
                tx.insert_group("a", &group("sg-00000001"))?;
                tx.insert_group("a", &referrer)
            })
            .expect("insert");
        assert!(store
            .read(|tx| tx.group("b", "sg-00000001"))
            .expect("read")
            .is_none());
        assert!(store
            .write(|tx| tx.delete_group("b", "sg-00000001"))
            .is_err());
        let refs = store
            .read(|tx| tx.referrers("a", "sg-00000001"))
            .expect("refs");
        assert_eq!(refs, vec!["sg-00000002".to_string()]);
        store
            .write(|tx| tx.delete_group("a", "sg-00000002"))
            .expect("delete");
        let refs = store
            .read(|tx| tx.referrers("a", "sg-00000001"))
            .expect("refs");
        assert!(refs.is_empty());
    }

    #[test]
    fn bindings_keep_order_and_deleting_a_group_unbinds_it() {
        let (_dir, store) = open();
        store
            .write(|tx| {
                for id in ["sg-00000001", "sg-00000002", "sg-00000003"] {
                    tx.insert_group("a", &group(id))?;
                }
                tx.insert_instance(
                    "a",
                    &InstanceRecord {
                        id: "ins-00000001".into(),
                        name: "n1".into(),
                        private_ips: vec!["10.0.0.1".into()],
                        created_time: "t".into(),
                        security_group_ids: vec![
                            "sg-00000003".into(),
                            "sg-00000001".into(),
                            "sg-00000002".into(),
                        ],
                    },
                )
            })
            .expect("setup");
        store
            .write(|tx| tx.delete_group("a", "sg-00000001"))
            .expect("delete");
        let ins = store
            .read(|tx| tx.instance("a", "ins-00000001"))
            .expect("read")
            .expect("exists");
        assert_eq!(ins.security_group_ids, vec!["sg-00000003", "sg-00000002"]);
        assert_eq!(
            store
                .read(|tx| tx.group_instances("a", "sg-00000002"))
                .expect("read"),
            vec!["ins-00000001"]
        );
    }

    #[test]
    fn committed_data_survives_reopen_and_accounts_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open_dir(dir.path()).expect("open");
            store
                .write(|tx| tx.insert_group("a", &group("sg-00000001")))
                .expect("insert");
            let acc = store.create_account("alice").expect("create");
            assert!(acc.secret_id.starts_with("AKID") && acc.secret_id.len() == 36);
            assert!(matches!(
                store.create_account("alice"),
                Err(StoreError::AccountExists(_))
            ));
            assert!(store.create_account("bad name").is_err());
        }
        let store = SqliteStore::open_dir(dir.path()).expect("reopen");
        assert_eq!(store.revision().expect("rev"), 1);
        assert!(store
            .read(|tx| tx.group("a", "sg-00000001"))
            .expect("read")
            .is_some());
        assert!(store.account_by_name("alice").expect("lookup").is_some());
    }

    #[test]
    fn instance_keys_are_scoped_and_die_with_their_instance() {
        let (_dir, store) = open();
        let acc = store.create_account("ops").expect("account");
        assert!(store.create_instance_key(&acc.id, "ins-00000001").is_err());
        let ins = InstanceRecord {
            id: "ins-00000001".into(),
            name: "n".into(),
            private_ips: vec!["10.0.0.1".into()],
            created_time: "t".into(),
            security_group_ids: vec![],
        };
        store
            .write(|tx| tx.insert_instance(&acc.id, &ins))
            .expect("insert");
        let key = store
            .create_instance_key(&acc.id, "ins-00000001")
            .expect("key");
        let cred = store
            .credential(&key.secret_id)
            .expect("lookup")
            .expect("found");
        assert_eq!(cred.account.id, acc.id);
        assert_eq!(cred.secret_key, key.secret_key);
        assert_eq!(cred.instance_scope.as_deref(), Some("ins-00000001"));
        let own = store
            .credential(&acc.secret_id)
            .expect("lookup")
            .expect("found");
        assert_eq!(own.instance_scope, None);
        store
            .write(|tx| tx.delete_instance(&acc.id, "ins-00000001"))
            .expect("delete");
        assert!(store.credential(&key.secret_id).expect("lookup").is_none());
    }

    #[test]
    fn clusters_upsert_delete_and_isolation() {
        let (_dir, store) = open();
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
        assert_eq!(got[0].created_time, "t0");
        assert!(store
            .read(|tx| tx.cluster("b", "cls-00000001"))
            .expect("read")
            .is_none());
        // Cluster ids are per account: b may use a's id for a cluster of its own.
        store.write(|tx| tx.put_cluster("b", &c)).expect("b's own");
        store
            .write(|tx| tx.delete_cluster("a", "cls-00000001"))
            .expect("delete");
        assert!(store
            .write(|tx| tx.delete_cluster("a", "cls-00000001"))
            .is_err());
        let b_own = store
            .read(|tx| tx.cluster("b", "cls-00000001"))
            .expect("read")
            .expect("b's survives a's deletion");
        assert_eq!(b_own.body["ClusterCidr"], "10.0.0.0/16");
    }

    /// The version-1 schema as released, before instance and cluster ids
    /// became per account (frozen here: the test opens a database made by
    /// an old binary).
    const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, secret_id TEXT NOT NULL UNIQUE,
    secret_key TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL, project_id TEXT NOT NULL,
    is_default INTEGER NOT NULL, created_time TEXT NOT NULL, update_time TEXT NOT NULL,
    tags TEXT NOT NULL, version INTEGER NOT NULL, ingress TEXT NOT NULL, egress TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS groups_account ON groups (account_id);
CREATE TABLE IF NOT EXISTS templates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    kind TEXT NOT NULL, name TEXT NOT NULL, members TEXT NOT NULL, extra TEXT NOT NULL,
    tags TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS templates_account ON templates (account_id, kind);
CREATE TABLE IF NOT EXISTS refs (account_id TEXT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS refs_to ON refs (account_id, to_id);
CREATE INDEX IF NOT EXISTS refs_from ON refs (from_id);
CREATE TABLE IF NOT EXISTS instances (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    name TEXT NOT NULL, private_ips TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS instances_account ON instances (account_id);
CREATE TABLE IF NOT EXISTS bindings (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, position INTEGER NOT NULL,
    group_id TEXT NOT NULL, PRIMARY KEY (instance_id, position));
CREATE INDEX IF NOT EXISTS bindings_group ON bindings (account_id, group_id);
CREATE TABLE IF NOT EXISTS instance_keys (
    secret_id TEXT PRIMARY KEY, secret_key TEXT NOT NULL, account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS instance_keys_instance ON instance_keys (instance_id);
CREATE TABLE IF NOT EXISTS clusters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL,
    body TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instance_status (
    instance_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, body TEXT NOT NULL,
    reported_time TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);
INSERT OR IGNORE INTO schema_migrations (version, applied_at) VALUES (1, datetime('now'));
";

    /// A version-1 database with one account's instances (one deleted, so
    /// the AUTOINCREMENT counter is ahead of the rows), bindings, an agent
    /// key, a status report and a cluster.
    const DATA_V1: &str = "
UPDATE meta SET value = 7 WHERE key = 'revision';
INSERT INTO accounts VALUES ('acc-a', 'alice', 'AKIDa', 'ka', 't');
INSERT INTO accounts VALUES ('acc-b', 'bob', 'AKIDb', 'kb', 't');
INSERT INTO groups (id, account_id, name, description, project_id, is_default, created_time,
    update_time, tags, version, ingress, egress)
    VALUES ('sg-00000001', 'acc-a', 'web', 'd', '0', 0, 't', 't', '[]', 3, '[]', '[]'),
           ('sg-00000002', 'acc-a', 'db', 'd', '0', 0, 't', 't', '[]', 0, '[]', '[]');
INSERT INTO instances (id, account_id, name, private_ips, created_time)
    VALUES ('ins-00000002', 'acc-a', 'second-registered', '[\"10.0.0.2\"]', 't1'),
           ('ins-00000001', 'acc-a', 'first-id', '[\"10.0.0.1\"]', 't2'),
           ('ins-00000009', 'acc-a', 'gone', '[\"10.0.0.9\"]', 't3');
DELETE FROM instances WHERE id = 'ins-00000009';
INSERT INTO bindings VALUES ('acc-a', 'ins-00000001', 0, 'sg-00000002'),
                            ('acc-a', 'ins-00000001', 1, 'sg-00000001');
INSERT INTO instance_keys VALUES ('AKIDagent', 'kagent', 'acc-a', 'ins-00000001', 't');
INSERT INTO instance_status VALUES ('ins-00000001', 'acc-a', '{\"AppliedRevision\":7}', 't4');
INSERT INTO clusters (id, account_id, body, created_time, updated_time)
    VALUES ('cls-00000001', 'acc-a', '{\"ClusterCidr\":\"10.0.0.0/16\"}', 't5', 't6');
";

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("palisade.db");
        {
            let old = Connection::open(&path).expect("create v1");
            old.execute_batch(SCHEMA_V1).expect("v1 schema");
            old.execute_batch(DATA_V1).expect("v1 data");
        }
        let store = SqliteStore::open(&path).expect("open migrates");
        let versions: Vec<i64> = {
            let conn = store.lock();
            let mut stmt = conn
                .prepare("SELECT version FROM schema_migrations ORDER BY version")
                .expect("prepare");
            let rows = stmt.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<Result<_, _>>().expect("rows")
        };
        assert_eq!(versions, vec![1, SCHEMA_VERSION]);
        assert_eq!(store.revision().expect("rev"), 7);

        let ins = store.read(|tx| tx.instances("acc-a")).expect("instances");
        let ids: Vec<&str> = ins.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["ins-00000002", "ins-00000001"], "creation order kept");
        assert_eq!(ins[1].name, "first-id");
        assert_eq!(ins[1].private_ips, ["10.0.0.1"]);
        assert_eq!(ins[1].security_group_ids, ["sg-00000002", "sg-00000001"]);
        assert_eq!(
            store
                .read(|tx| tx.group_instances("acc-a", "sg-00000001"))
                .expect("bound"),
            ["ins-00000001"]
        );
        let cred = store
            .credential("AKIDagent")
            .expect("lookup")
            .expect("agent key survives");
        assert_eq!(cred.account.id, "acc-a");
        assert_eq!(cred.instance_scope.as_deref(), Some("ins-00000001"));
        let st = store.instance_statuses("acc-a").expect("status");
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].1, serde_json::json!({"AppliedRevision": 7}));
        let c = store
            .read(|tx| tx.cluster("acc-a", "cls-00000001"))
            .expect("read")
            .expect("cluster survives");
        assert_eq!(c.body["ClusterCidr"], "10.0.0.0/16");
        assert_eq!(
            (c.created_time.as_str(), c.updated_time.as_str()),
            ("t5", "t6")
        );

        // The new keys: another account may now use the same ids.
        let mine = InstanceRecord {
            id: "ins-00000001".into(),
            name: "bob's".into(),
            private_ips: vec!["10.9.0.1".into()],
            created_time: "t".into(),
            security_group_ids: vec![],
        };
        store
            .write(|tx| {
                tx.insert_instance("acc-b", &mine)?;
                tx.put_cluster("acc-b", &c)
            })
            .expect("same ids in another account");
        assert!(matches!(
            store.write(|tx| tx.insert_instance("acc-a", &mine)),
            Err(StoreError::DuplicateId(_))
        ));
        // The AUTOINCREMENT counter survived the rebuild: a new instance
        // sorts after every earlier one, deleted ones included.
        let mut later = mine.clone();
        later.id = "ins-00000003".into();
        store
            .write(|tx| tx.insert_instance("acc-a", &later))
            .expect("insert");
        let seq: i64 = store
            .lock()
            .query_row(
                "SELECT seq FROM instances WHERE account_id = 'acc-a' AND id = 'ins-00000003'",
                [],
                |r| r.get(0),
            )
            .expect("seq");
        assert!(seq > 3, "seq {seq} reuses a deleted instance's");
        drop(store);

        // Opening again migrates nothing more.
        let again = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            again.read(|tx| tx.instances("acc-a")).expect("read").len(),
            3
        );
        assert_eq!(
            again.read(|tx| tx.instances("acc-b")).expect("read").len(),
            1
        );
    }

    #[test]
    fn a_database_from_a_newer_binary_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("palisade.db");
        {
            let old = Connection::open(&path).expect("create v1");
            old.execute_batch(SCHEMA_V1).expect("v1 schema");
            old.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 't')",
                [SCHEMA_VERSION + 1],
            )
            .expect("newer");
        }
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaTooNew { .. })
        ));
        let conn = Connection::open(&path).expect("open raw");
        let pk: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'instance_status'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert!(pk.contains("instance_id TEXT PRIMARY KEY"), "{pk}");
    }

    #[test]
    fn an_in_memory_store_reads_what_it_wrote() {
        let store = SqliteStore::open(Path::new(":memory:")).expect("open");
        let account = store.create_account("mem").expect("account");
        store
            .write(|tx| tx.insert_group(&account.id, &group("sg-00000001")))
            .expect("insert");
        let found = store
            .read(|tx| tx.group(&account.id, "sg-00000001"))
            .expect("read");
        assert!(found.is_some());
        assert!(store
            .credential(&account.secret_id)
            .expect("cred")
            .is_some());
    }

    #[test]
    fn accounts_without_a_recorded_revision_get_the_current_one_at_open() {
        let (dir, store) = open();
        let account = store.create_account("old").expect("account");
        store
            .write(|tx| tx.insert_group(&account.id, &group("sg-00000001")))
            .expect("insert");
        store
            .write(|tx| tx.insert_group("other", &group("sg-00000002")))
            .expect("insert");
        // As a database from before the table would be.
        store
            .lock()
            .execute("DELETE FROM account_revisions", [])
            .expect("forget");
        drop(store);
        let store = SqliteStore::open_dir(dir.path()).expect("reopen");
        let rev = store
            .read(|tx| tx.account_revision(&account.id))
            .expect("read");
        assert_eq!(rev, 2, "the global revision at open, not 0");
    }

    #[test]
    fn revision_watchers_see_commits() {
        let (_dir, store) = open();
        let rx = store.watch_revision();
        store
            .write(|tx| tx.insert_group("a", &group("sg-00000001")))
            .expect("insert");
        assert_eq!(*rx.borrow(), 1);
        // A read-only write transaction does not bump the revision.
        store
            .write(|tx| tx.group("a", "sg-00000001").map(|_| ()))
            .expect("noop");
        assert_eq!(store.revision().expect("rev"), 1);
    }
}
