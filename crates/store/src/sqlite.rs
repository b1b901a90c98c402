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
use crate::pool::{Connector, Pool, Pooled};
use crate::sql::{current_revision, Backend, Param, Row, Sql, Value};
use crate::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

/// A [`Store`] on one SQLite database file: one connection for writes
/// (SQLite has one writer at a time anyway) and a few for reads, which WAL
/// lets run beside it and beside each other, so concurrent describes and
/// long-polls neither queue behind a write nor behind one another.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` for an in-memory database, which only its own connection sees.
    readers: Option<Pool<Readers>>,
    watchers: Watchers,
}

/// Most read connections one store opens.
const READERS: usize = 4;

/// Opens the read connections of a file's [`Pool`].
struct Readers {
    path: std::path::PathBuf,
}

impl Connector for Readers {
    type Conn = Connection;

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(128);
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(conn)
    }
}

/// A read connection of either kind.
enum Reader<'a> {
    Pooled(Pooled<'a, Readers>),
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
CREATE TABLE IF NOT EXISTS instance_enforcement (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, mode TEXT NOT NULL,
    PRIMARY KEY (account_id, instance_id));
CREATE TABLE IF NOT EXISTS flow_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, instance_id TEXT NOT NULL,
    direction TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL, peer_hex TEXT NOT NULL,
    src_port INTEGER NOT NULL, dst_port INTEGER NOT NULL, protocol INTEGER NOT NULL,
    action TEXT NOT NULL, group_id TEXT NOT NULL, policy_index INTEGER NOT NULL,
    revision INTEGER NOT NULL, decisions INTEGER NOT NULL, packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL, start_time INTEGER NOT NULL, end_time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS flow_records_instance
    ON flow_records (account_id, instance_id, start_time);
CREATE INDEX IF NOT EXISTS flow_records_time ON flow_records (account_id, start_time);
CREATE INDEX IF NOT EXISTS flow_records_end ON flow_records (account_id, end_time);
CREATE INDEX IF NOT EXISTS flow_records_instance_end
    ON flow_records (account_id, instance_id, end_time);
CREATE TABLE IF NOT EXISTS rule_counter_last (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, group_id TEXT NOT NULL,
    direction TEXT NOT NULL, policy_index BIGINT NOT NULL, digest TEXT NOT NULL,
    packets BIGINT NOT NULL,
    PRIMARY KEY (account_id, instance_id, group_id, direction, policy_index));
CREATE TABLE IF NOT EXISTS rule_hits (
    account_id TEXT NOT NULL, group_id TEXT NOT NULL, direction TEXT NOT NULL,
    policy_index BIGINT NOT NULL, digest TEXT NOT NULL, hits BIGINT NOT NULL,
    last_used BIGINT NOT NULL, since BIGINT NOT NULL,
    PRIMARY KEY (account_id, group_id, direction, policy_index));
CREATE TABLE IF NOT EXISTS hit_coverage (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, since BIGINT NOT NULL,
    last_report BIGINT NOT NULL, PRIMARY KEY (account_id, instance_id));
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY, account_id TEXT NOT NULL, body TEXT NOT NULL,
    created_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS join_tokens_account ON join_tokens (account_id);
CREATE TABLE IF NOT EXISTS group_versions (
    account_id TEXT NOT NULL, group_id TEXT NOT NULL, version INTEGER NOT NULL,
    ingress TEXT NOT NULL, egress TEXT NOT NULL, recorded_time TEXT NOT NULL,
    PRIMARY KEY (account_id, group_id, version));
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, kind TEXT NOT NULL,
    id TEXT NOT NULL, body TEXT NOT NULL, due INTEGER NOT NULL,
    UNIQUE (account_id, kind, id));
CREATE INDEX IF NOT EXISTS documents_due ON documents (kind, due);
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
        let revision = current_revision(&Sqlite(&conn))?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers: (!in_memory(path)).then(|| {
                let readers = Readers {
                    path: path.to_path_buf(),
                };
                // A reader waits for another to finish: queries are short.
                Pool::new(readers, READERS, std::time::Duration::from_secs(10))
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

impl Backend for SqliteStore {
    const ACCOUNT_ORDER: &'static str = "rowid";
    // A file on this machine, read on its own connections (WAL: a reader
    // never waits for the writer).
    const LOCAL_READS: bool = true;

    fn in_read(
        &self,
        snapshot: bool,
        f: &mut dyn FnMut(&dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.reader()?;
        if !snapshot {
            return f(&Sqlite(&conn));
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&Sqlite(&tx))?;
        tx.commit()?;
        Ok(())
    }

    fn in_write(
        &self,
        f: &mut dyn FnMut(&dyn Sql) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if f(&Sqlite(&tx))? {
            tx.commit()?;
        }
        // Otherwise dropping the transaction rolls it back.
        Ok(())
    }

    fn watchers(&self) -> &Watchers {
        &self.watchers
    }
}

/// A SQLite connection (or transaction) seen through [`Sql`].
struct Sqlite<'a>(&'a Connection);

impl Sqlite<'_> {
    /// The statement for `sql`, its `$N` placeholders written `?N`, from
    /// the connection's cache: parsing SQL was a visible share of a
    /// describe request's time.
    fn statement(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        Ok(self.0.prepare_cached(&sql.replace('$', "?"))?)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Text(s) => s.into(),
            Param::Int(v) => v.into(),
            Param::Bool(b) => b.into(),
        })
    }
}

impl Sql for Sqlite<'_> {
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.statement(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(width);
            for i in 0..width {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(
                        String::from_utf8(t.to_vec())
                            .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))?,
                    ),
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "column {i}: unexpected {:?}",
                            other.data_type()
                        )))
                    }
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let n = self
            .statement(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn lock_account(&self, _account: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn lock_store(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn announce(&self, _revision: u64, _names: &[String]) -> Result<(), StoreError> {
        // Only this process's handles see the file's commits as they
        // happen; another process's are seen when it next reads.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GroupRecord, InstanceRecord, Store, StoreExt};

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
}
