//! The PostgreSQL implementation of [`Store`] (DESIGN.md section 5): several
//! `palisade serve` processes share one database and behave as one server.
//!
//! Writes: a write transaction takes an account's writer lock (a
//! transaction-scoped advisory lock keyed by the account) before it first
//! reads or changes that account. Writes to one account are therefore
//! serialised across all processes, so the closure's reads (the policy set
//! `Version` above all) see every write to the account committed before
//! it, in any process, and a stale `Version` is refused whichever server
//! the other write went through; writes to different accounts run side by
//! side. A transaction that changed something ends with one statement
//! ([`BUMP_REVISION`]) that bumps the global revision, which locks its row
//! until the commit (so commits follow revision order), records it in
//! `account_revisions` for each account it changed, and sends `NOTIFY
//! palisade_revision, '<revision> <account> ...'` inside the same
//! transaction, so the notification goes out exactly when the commit does.
//! Each connection keeps its prepared statements, so a query costs one
//! round trip, not two.
//! Reads run in `REPEATABLE READ READ ONLY` transactions: one snapshot.
//!
//! Wake-ups: one listener thread per process holds a connection that
//! `LISTEN`s on `palisade_revision` and feeds the watch channels (global and
//! per account), so agents long-polling on any server wake when any server
//! commits a change to their account. When the listener's connection breaks
//! it reconnects (once a second), reads the current revision and wakes every
//! waiter, so a notification missed while disconnected is not lost.
//!
//! Schema: versioned migrations in [`MIGRATIONS`], applied at open inside
//! one transaction under an advisory lock (several servers may start at
//! once) and recorded in `schema_migrations`. A database migrated by a newer
//! binary is refused rather than misread.
//!
//! Connections: two small pools, one for reads and one kept for writes (a
//! herd of long-poll reads never delays a write); a connection that broke (the database
//! restarted) is dropped and a new one opened on next use, so a server rides
//! out a database restart without being restarted itself. While the database
//! is unreachable every store call fails with [`StoreError::Unavailable`].

use crate::changes::Watchers;
use crate::{
    random_id, Account, ClusterRecord, Credential, GroupRecord, InstanceKey, InstanceRecord,
    RuleRecord, Store, StoreError, TemplateKind, TemplateRecord, Tx,
};
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, NoTls, Row};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The notification channel carrying each new revision.
pub const REVISION_CHANNEL: &str = "palisade_revision";

/// Most connections one process opens for reads (the listener's not
/// counted).
const POOL_SIZE: usize = 16;
/// Connections kept for write transactions, so that a herd of long-poll
/// reads never queues a write behind it.
const WRITE_POOL_SIZE: usize = 4;
/// How long a caller waits for a free connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An arbitrary constant naming the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x5041_4c49_5341_4445; // "PALISADE"

/// The schema, one entry per version, applied in order and never edited
/// once released (add a new version instead). `migrate` applies every
/// listed version the database lacks, so the list need not be contiguous.
///
/// Version 2 records, per account, the revision of the last commit that
/// changed it (`account_revisions`, for long-polls that wait on their
/// account only). Version 3 keys instances, clusters, bindings and instance status by
/// `(account_id, id)` (and indexes instance keys by account): those ids are
/// chosen by clients, and one account's id must neither block nor reveal
/// another's.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE accounts (
    seq BIGSERIAL, id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, secret_id TEXT NOT NULL UNIQUE,
    secret_key TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE TABLE groups (
    seq BIGSERIAL, id TEXT PRIMARY KEY, account_id TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL, project_id TEXT NOT NULL,
    is_default BOOLEAN NOT NULL, created_time TEXT NOT NULL, update_time TEXT NOT NULL,
    tags TEXT NOT NULL, version BIGINT NOT NULL, ingress TEXT NOT NULL, egress TEXT NOT NULL);
CREATE INDEX groups_account ON groups (account_id, seq);
CREATE TABLE templates (
    seq BIGSERIAL, id TEXT PRIMARY KEY, account_id TEXT NOT NULL,
    kind TEXT NOT NULL, name TEXT NOT NULL, members TEXT NOT NULL, extra TEXT NOT NULL,
    tags TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL);
CREATE INDEX templates_account ON templates (account_id, kind, seq);
CREATE TABLE refs (account_id TEXT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL);
CREATE INDEX refs_to ON refs (account_id, to_id);
CREATE INDEX refs_from ON refs (from_id);
CREATE TABLE instances (
    seq BIGSERIAL, id TEXT PRIMARY KEY, account_id TEXT NOT NULL,
    name TEXT NOT NULL, private_ips TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE INDEX instances_account ON instances (account_id, seq);
CREATE TABLE bindings (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, position BIGINT NOT NULL,
    group_id TEXT NOT NULL, PRIMARY KEY (instance_id, position));
CREATE INDEX bindings_group ON bindings (account_id, group_id);
CREATE TABLE instance_keys (
    secret_id TEXT PRIMARY KEY, secret_key TEXT NOT NULL, account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL, created_time TEXT NOT NULL);
CREATE INDEX instance_keys_instance ON instance_keys (instance_id);
CREATE TABLE clusters (
    seq BIGSERIAL, id TEXT PRIMARY KEY, account_id TEXT NOT NULL,
    body TEXT NOT NULL, created_time TEXT NOT NULL, updated_time TEXT NOT NULL);
CREATE TABLE instance_status (
    instance_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, body TEXT NOT NULL,
    reported_time TEXT NOT NULL);
",
    ),
    (
        2,
        "
CREATE TABLE account_revisions (account_id TEXT PRIMARY KEY, revision BIGINT NOT NULL);
-- Every existing account may have changed at any revision up to now.
INSERT INTO account_revisions (account_id, revision)
    SELECT a.id, m.value FROM accounts a, meta m WHERE m.key = 'revision';
",
    ),
    (
        3,
        "
ALTER TABLE instances DROP CONSTRAINT instances_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE bindings DROP CONSTRAINT bindings_pkey,
    ADD PRIMARY KEY (account_id, instance_id, position);
DROP INDEX instance_keys_instance;
CREATE INDEX instance_keys_instance ON instance_keys (account_id, instance_id);
ALTER TABLE clusters DROP CONSTRAINT clusters_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE instance_status DROP CONSTRAINT instance_status_pkey,
    ADD PRIMARY KEY (account_id, instance_id);
",
    ),
];

/// A [`Store`] on a PostgreSQL database shared by any number of servers.
pub struct PgStore {
    pool: Arc<Pool>,
    writes: Pool,
    watchers: Arc<Watchers>,
    stop: Arc<AtomicBool>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/dbname`, or
    /// any form `tokio-postgres` accepts), applies pending migrations and
    /// starts the `LISTEN` thread.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::InvalidLocation(format!("{url:?}: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("palisade");
        let writes = Pool::new(config.clone(), WRITE_POOL_SIZE);
        let pool = Arc::new(Pool::new(config, POOL_SIZE));
        {
            let mut conn = pool.get()?;
            migrate(&mut conn)?;
        }
        let revision = {
            let mut conn = pool.get()?;
            read_revision(&mut *conn)?
        };
        let watchers = Arc::new(Watchers::new(revision));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let pool = pool.clone();
            let watchers = watchers.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("palisade-pg-listen".into())
                .spawn(move || listen(&pool.config, &watchers, &stop))?;
        }
        Ok(Self {
            pool,
            writes,
            watchers,
            stop,
        })
    }

    /// The highest migration version this binary knows.
    pub fn schema_version() -> i32 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    /// A write outside the [`Tx`] world, holding `account`'s writer lock
    /// (an instance key) or, for `None`, the global one (an account).
    fn write_tx<T>(
        &self,
        account: Option<&str>,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writes.get()?;
        let mut tx = conn.transaction()?;
        match account {
            Some(account) => {
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[&ACCOUNT_LOCK_SPACE, &account],
                )?;
            }
            None => lock_writers(&mut tx)?,
        }
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A `postgres::Client` runs a runtime of its own and panics when
        // dropped inside an async one, where the server drops its store:
        // close the write pool's idle connections on a plain thread. (The
        // read pool is shared with the listener thread, which drops it.)
        let idle = std::mem::take(&mut self.writes.state().idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// What follows the revision in the `NOTIFY` payload of a commit that
/// changed `accounts` (`"<rev> <account> ..."`): `" <account> ..."`, or
/// nothing when the accounts would not fit (PostgreSQL caps a payload below
/// 8,000 bytes; listeners then wake every waiter).
fn notify_accounts(accounts: &[String]) -> String {
    let mut out = String::new();
    for a in accounts {
        out.push(' ');
        out.push_str(a);
    }
    // A revision is at most 20 digits.
    if out.len() + 20 <= NOTIFY_PAYLOAD_MAX {
        out
    } else {
        String::new()
    }
}

/// The end of a write transaction that changed something, in one round
/// trip: bump the revision (which locks its row until the commit, so
/// commits follow revision order across all servers), record it for each
/// changed account (`$1`), and notify `$2` with `"<rev>$3"`.
const BUMP_REVISION: &str =
    "WITH r AS (UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value),
     a AS (INSERT INTO account_revisions (account_id, revision)
           SELECT acc, r.value FROM r, unnest($1::text[]) AS acc
           ON CONFLICT (account_id) DO UPDATE SET revision = excluded.revision)
SELECT value, pg_notify($2, value::text || $3) FROM r";

/// The advisory-lock key space of the per-account writer locks (the
/// second key is `hashtext(account)`); "PALS".
const ACCOUNT_LOCK_SPACE: i32 = 0x5041_4c53;

/// Keeps a payload well below PostgreSQL's 8,000-byte limit.
const NOTIFY_PAYLOAD_MAX: usize = 7_000;

/// Feeds one notification to the watchers.
fn notified(watchers: &Watchers, payload: &str) {
    let mut words = payload.split(' ');
    let Some(Ok(rev)) = words.next().map(str::parse::<u64>) else {
        return;
    };
    let accounts: Vec<&str> = words.filter(|w| !w.is_empty()).collect();
    if accounts.is_empty() {
        watchers.everything(rev);
    } else {
        watchers.committed(rev, &accounts);
    }
}

/// Takes the global writer lock: the revision row. Account creation takes
/// it; a [`Tx`] write takes it only at its end ([`BUMP_REVISION`]).
fn lock_writers(tx: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.query_one(
        "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE",
        &[],
    )?;
    Ok(())
}

fn read_revision(c: &mut impl postgres::GenericClient) -> Result<u64, StoreError> {
    let row = c.query_one("SELECT value FROM meta WHERE key = 'revision'", &[])?;
    let v: i64 = col(&row, 0)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Applies every migration the database lacks, in one transaction, under an
/// advisory lock so concurrently starting servers migrate once.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // `CREATE TABLE IF NOT EXISTS` would otherwise log a NOTICE every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_, _>>()?;
    let known = PgStore::schema_version();
    if let Some(&newest) = applied.last() {
        if newest > known {
            return Err(StoreError::SchemaTooNew {
                found: i64::from(newest),
                known: i64::from(known),
            });
        }
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The listener thread: `LISTEN`, forward each notified revision to the
/// watch channel; reconnect and catch up after any break.
fn listen(config: &postgres::Config, watchers: &Watchers, stop: &AtomicBool) {
    let mut logged_down = false;
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                if !logged_down {
                    tracing::warn!(error = %e, "revision listener cannot reach PostgreSQL; retrying every second");
                }
                logged_down = true;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let ready = client
            .batch_execute(&format!("LISTEN {REVISION_CHANNEL}"))
            .map_err(StoreError::from)
            .and_then(|()| read_revision(&mut client));
        match ready {
            // Commits made while disconnected named accounts nobody heard.
            Ok(rev) => watchers.everything(rev),
            Err(_) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        if logged_down {
            tracing::info!("revision listener reconnected to PostgreSQL");
            logged_down = false;
        }
        // Wake once a second only to notice `stop`; no query is sent.
        'conn: while !stop.load(Ordering::Relaxed) {
            {
                let mut notes = client.notifications();
                let mut it = notes.timeout_iter(Duration::from_secs(1));
                loop {
                    match postgres::fallible_iterator::FallibleIterator::next(&mut it) {
                        Ok(Some(n)) => notified(watchers, n.payload()),
                        Ok(None) => break,
                        Err(_) => break 'conn,
                    }
                }
            }
            if client.is_closed() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal blocking connection pool: at most `size` connections, broken
/// ones dropped on return.
struct Pool {
    config: postgres::Config,
    size: usize,
    idle: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    /// Idle connections and when each was returned.
    idle: Vec<(Client, Statements, std::time::Instant)>,
    in_use: usize,
}

/// A connection's prepared statements by SQL text. `Client::query` with
/// a string prepares the statement first, one more round trip per query;
/// a statement prepared once per connection and kept halves that.
/// (Prepared statements live as long as the connection, so the cache
/// travels with it through the pool.)
type Statements = std::collections::HashMap<String, postgres::Statement>;

/// An idle connection older than this is checked before use.
const VALIDATE_AFTER: Duration = Duration::from_secs(1);

impl Pool {
    fn new(config: postgres::Config, size: usize) -> Self {
        Self {
            config,
            size,
            idle: Mutex::new(PoolState {
                idle: Vec::new(),
                in_use: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state is a list and a counter, consistent between statements.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self) -> Result<Conn<'_>, StoreError> {
        let mut st = self.state();
        let deadline = std::time::Instant::now() + POOL_WAIT;
        while st.idle.is_empty() && st.in_use >= self.size {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(
                    "no free database connection within 10 s".into(),
                ));
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        st.in_use += 1;
        let mut reused = st.idle.pop();
        drop(st);
        // An idle connection may have died with a database restart; a
        // round trip of an empty query tells, before any work is sent on it.
        // A connection busy a moment ago is trusted (a failure on it drops
        // the whole idle list, see `release`). One dead connection means the
        // others are likely dead too.
        if let Some((c, _, since)) = &mut reused {
            let stale =
                since.elapsed() >= VALIDATE_AFTER && c.is_valid(Duration::from_secs(2)).is_err();
            if c.is_closed() || stale {
                reused = None;
                self.state().idle.clear();
            }
        }
        let client = match reused {
            Some((c, stmts, _)) => Ok((c, stmts)),
            None => self
                .config
                .connect(NoTls)
                .map(|c| (c, Statements::new()))
                .map_err(StoreError::from),
        };
        match client {
            Ok((client, stmts)) => Ok(Conn {
                pool: self,
                client: Some(client),
                stmts,
            }),
            Err(e) => {
                self.release(None);
                Err(e)
            }
        }
    }

    fn release(&self, client: Option<(Client, Statements)>) {
        let mut st = self.state();
        st.in_use = st.in_use.saturating_sub(1);
        if let Some((c, stmts)) = client {
            if c.is_closed() {
                // The database went away: the idle ones are likely dead too.
                st.idle.clear();
            } else {
                st.idle.push((c, stmts, std::time::Instant::now()));
            }
        }
        drop(st);
        self.freed.notify_one();
    }
}

/// A pooled connection, returned to the pool on drop.
struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    stmts: Statements,
}

impl Conn<'_> {
    /// The client and its statement cache, borrowed together.
    fn parts(&mut self) -> (&mut Client, &mut Statements) {
        let client = self.client.as_mut().unwrap_or_else(|| unreachable!());
        (client, &mut self.stmts)
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // `client` is `Some` from creation until drop.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let stmts = std::mem::take(&mut self.stmts);
        self.pool.release(self.client.take().map(|c| (c, stmts)));
    }
}

/// A typed column, as a store error rather than a panic on a mismatch.
fn col<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
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

impl Store for PgStore {
    fn read_dyn(&self, f: &mut dyn FnMut(&dyn Tx)) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let (client, stmts) = conn.parts();
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let t = PgTx::new(tx, stmts, false);
        f(&t);
        t.tx.into_inner().commit()?;
        Ok(())
    }

    fn write_dyn(&self, f: &mut dyn FnMut(&mut dyn Tx) -> bool) -> Result<(), StoreError> {
        let mut conn = self.writes.get()?;
        let (client, stmts) = conn.parts();
        let tx = client.transaction()?;
        let mut t = PgTx::new(tx, stmts, true);
        if !f(&mut t) {
            // Dropping the transaction rolls it back.
            return Ok(());
        }
        let names = crate::changes::committed_names(&t.touched, &t.keys);
        let touched: Vec<String> = std::mem::take(&mut t.touched).into_iter().collect();
        let mut new_revision = None;
        if !touched.is_empty() {
            let rows = t.query(
                BUMP_REVISION,
                &[&touched, &REVISION_CHANNEL, &notify_accounts(&names)],
            )?;
            let row = rows
                .first()
                .ok_or_else(|| StoreError::Corrupt("the revision row is missing".into()))?;
            let rev: i64 = col(row, 0)?;
            new_revision = Some(u64::try_from(rev).unwrap_or(0));
        }
        t.tx.into_inner().commit()?;
        if let Some(rev) = new_revision {
            self.watchers.committed(rev, &names);
        }
        Ok(())
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        read_revision(&mut *conn)
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
        self.write_tx(None, |tx| {
            if !tx
                .query("SELECT id FROM accounts WHERE name = $1", &[&name])?
                .is_empty()
            {
                return Err(StoreError::AccountExists(name.to_string()));
            }
            let account = Account {
                id: random_id("acc-", 8),
                name: name.to_string(),
                secret_id: crate::random_alnum("AKID", 32),
                secret_key: crate::random_alnum("", 32),
                created_time: crate::now_string(),
            };
            tx.execute(
                "INSERT INTO accounts (id, name, secret_id, secret_key, created_time) VALUES ($1, $2, $3, $4, $5)",
                &[&account.id, &account.name, &account.secret_id, &account.secret_key, &account.created_time],
            )?;
            Ok(account)
        })
    }

    fn account_by_secret_id(&self, secret_id: &str) -> Result<Option<Account>, StoreError> {
        account_where(&mut *self.pool.get()?, "secret_id", secret_id)
    }

    fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        account_where(&mut *self.pool.get()?, "name", name)
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut conn = self.pool.get()?;
        conn.query(
            "SELECT id, name, secret_id, secret_key, created_time FROM accounts ORDER BY seq",
            &[],
        )?
        .iter()
        .map(account_row)
        .collect()
    }

    fn create_instance_key(
        &self,
        account_id: &str,
        instance_id: &str,
    ) -> Result<InstanceKey, StoreError> {
        self.write_tx(Some(account_id), |tx| {
            if tx
                .query(
                    "SELECT id FROM instances WHERE account_id = $1 AND id = $2",
                    &[&account_id, &instance_id],
                )?
                .is_empty()
            {
                return Err(StoreError::NotFound(instance_id.to_string()));
            }
            let key = InstanceKey {
                account_id: account_id.to_string(),
                instance_id: instance_id.to_string(),
                secret_id: crate::random_alnum("AKID", 32),
                secret_key: crate::random_alnum("", 32),
            };
            tx.execute(
                "INSERT INTO instance_keys (secret_id, secret_key, account_id, instance_id, created_time) VALUES ($1, $2, $3, $4, $5)",
                &[&key.secret_id, &key.secret_key, &key.account_id, &key.instance_id, &crate::now_string()],
            )?;
            Ok(key)
        })
    }

    fn credential(&self, secret_id: &str) -> Result<Option<Credential>, StoreError> {
        // One prepared statement, one round trip: an account's own key, or
        // an instance key whose instance still exists, looked up within the
        // key's account (the same instance id may exist in other accounts).
        const CREDENTIAL: &str = "SELECT a.id, a.name, a.secret_id, a.secret_key, a.created_time,
                NULL::text, NULL::text
             FROM accounts a WHERE a.secret_id = $1
             UNION ALL
             SELECT a.id, a.name, a.secret_id, a.secret_key, a.created_time,
                k.secret_key, k.instance_id
             FROM instance_keys k
             JOIN instances i ON i.account_id = k.account_id AND i.id = k.instance_id
             JOIN accounts a ON a.id = k.account_id
             WHERE k.secret_id = $1
             LIMIT 1";
        let mut conn = self.pool.get()?;
        let (client, stmts) = conn.parts();
        let statement = prepared(client, stmts, CREDENTIAL)?;
        let rows = client.query(&statement, &[&secret_id])?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let account = account_row(row)?;
        let key: Option<String> = col(row, 5)?;
        let instance: Option<String> = col(row, 6)?;
        Ok(Some(match (key, instance) {
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
        let mut conn = self.pool.get()?;
        let n = conn.execute(
            "INSERT INTO instance_status (instance_id, account_id, body, reported_time)
             SELECT id, account_id, $3, $4 FROM instances WHERE account_id = $1 AND id = $2
             ON CONFLICT (account_id, instance_id) DO UPDATE SET body = excluded.body, reported_time = excluded.reported_time",
            &[&account, &instance_id, &to_json(status)?, &crate::now_string()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(instance_id.to_string()));
        }
        Ok(())
    }

    fn instance_statuses(
        &self,
        account: &str,
    ) -> Result<Vec<(String, serde_json::Value, String)>, StoreError> {
        let mut conn = self.pool.get()?;
        conn.query(
            "SELECT instance_id, body, reported_time FROM instance_status WHERE account_id = $1 ORDER BY instance_id",
            &[&account],
        )?
        .iter()
        .map(|r| {
            let body: String = col(r, 1)?;
            Ok((col(r, 0)?, from_json(&body)?, col(r, 2)?))
        })
        .collect()
    }
}

fn account_row(r: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: col(r, 0)?,
        name: col(r, 1)?,
        secret_id: col(r, 2)?,
        secret_key: col(r, 3)?,
        created_time: col(r, 4)?,
    })
}

fn account_where(c: &mut Client, column: &str, value: &str) -> Result<Option<Account>, StoreError> {
    // `column` is a literal chosen by this file, never user input.
    let sql = format!(
        "SELECT id, name, secret_id, secret_key, created_time FROM accounts WHERE {column} = $1"
    );
    c.query(&sql, &[&value])?
        .first()
        .map(account_row)
        .transpose()
}

/// The prepared statement for `sql` on a connection (or a transaction on
/// it), from that connection's cache.
fn prepared(
    client: &mut impl postgres::GenericClient,
    stmts: &mut Statements,
    sql: &str,
) -> Result<postgres::Statement, StoreError> {
    if let Some(st) = stmts.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql)?;
    stmts.insert(sql.to_string(), st.clone());
    Ok(st)
}

/// One transaction seen through [`Tx`]. The `RefCell` lets `&self` reads
/// run queries (the driver needs `&mut`); no borrow outlives one call.
struct PgTx<'a> {
    tx: RefCell<postgres::Transaction<'a>>,
    stmts: RefCell<&'a mut Statements>,
    /// A write transaction takes each account's lock before it first
    /// touches the account; a read transaction takes none.
    writing: bool,
    /// The accounts whose lock this transaction holds.
    locked: RefCell<BTreeSet<String>>,
    /// The accounts this transaction changed.
    touched: BTreeSet<String>,
    /// The accounts whose credentials this transaction removed.
    keys: BTreeSet<String>,
    /// In a read transaction (one snapshot): every template of the last
    /// account whose templates were asked for, in `seq` order, so that
    /// the four kinds a ruleset resolution asks for cost one round trip.
    templates: RefCell<Option<(String, Vec<TemplateRecord>)>>,
}

impl<'a> PgTx<'a> {
    fn new(tx: postgres::Transaction<'a>, stmts: &'a mut Statements, writing: bool) -> Self {
        Self {
            tx: RefCell::new(tx),
            stmts: RefCell::new(stmts),
            writing,
            locked: RefCell::new(BTreeSet::new()),
            touched: BTreeSet::new(),
            keys: BTreeSet::new(),
            templates: RefCell::new(None),
        }
    }

    /// The prepared statement for `sql`, from the connection's cache.
    fn statement(&self, sql: &str) -> Result<postgres::Statement, StoreError> {
        prepared(
            &mut *self.tx.borrow_mut(),
            &mut self.stmts.borrow_mut(),
            sql,
        )
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql)?;
        Ok(self.tx.borrow_mut().query(&st, params)?)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        Ok(self.tx.borrow_mut().execute(&st, params)?)
    }

    /// In a write transaction: takes `account`'s writer lock, once. Every
    /// [`Tx`] method calls this before it reads or writes the account, so
    /// all that a write transaction sees of an account was read under the
    /// account's lock: writes to one account are serialised across all
    /// servers (a stale `Version` is refused whichever server the other
    /// write went through), while writes to different accounts proceed side
    /// by side until their commits.
    fn lock(&self, account: &str) -> Result<(), StoreError> {
        if !self.writing || self.locked.borrow().contains(account) {
            return Ok(());
        }
        self.query(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&ACCOUNT_LOCK_SPACE, &account],
        )?;
        self.locked.borrow_mut().insert(account.to_string());
        Ok(())
    }

    fn set_refs(&self, account: &str, from: &str, refs: &[String]) -> Result<(), StoreError> {
        self.execute("DELETE FROM refs WHERE from_id = $1", &[&from])?;
        if !refs.is_empty() {
            self.execute(
                "INSERT INTO refs (account_id, from_id, to_id) SELECT $1, $2, unnest($3::text[])",
                &[&account, &from, &refs],
            )?;
        }
        Ok(())
    }

    fn bindings(&self, account: &str, instance_id: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT group_id FROM bindings WHERE account_id = $1 AND instance_id = $2 ORDER BY position",
            &[&account, &instance_id],
        )?
        .iter()
        .map(|r| col(r, 0))
        .collect()
    }

    fn set_bindings(&self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM bindings WHERE account_id = $1 AND instance_id = $2",
            &[&account, &i.id],
        )?;
        if !i.security_group_ids.is_empty() {
            self.execute(
                "INSERT INTO bindings (account_id, instance_id, position, group_id)
                 SELECT $1, $2, g.ord - 1, g.id FROM unnest($3::text[]) WITH ORDINALITY AS g(id, ord)",
                &[&account, &i.id, &i.security_group_ids],
            )?;
        }
        Ok(())
    }

    fn instance_from_row(&self, account: &str, r: &Row) -> Result<InstanceRecord, StoreError> {
        let id: String = col(r, 0)?;
        let ips: String = col(r, 2)?;
        let security_group_ids = self.bindings(account, &id)?;
        Ok(InstanceRecord {
            id,
            name: col(r, 1)?,
            private_ips: from_json(&ips)?,
            created_time: col(r, 3)?,
            security_group_ids,
        })
    }

    /// Whether `id` names a record `account` could collide with: a group or
    /// template of any account (their random ids are unique store-wide), or
    /// an instance or cluster of this account (their ids are chosen by
    /// clients and unique per account, so other accounts' are not looked at:
    /// that would reveal them).
    fn id_taken(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let rows = self.query(
            "SELECT 1 FROM groups WHERE id = $2 UNION ALL SELECT 1 FROM templates WHERE id = $2
             UNION ALL SELECT 1 FROM instances WHERE account_id = $1 AND id = $2
             UNION ALL SELECT 1 FROM clusters WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?;
        Ok(!rows.is_empty())
    }
}

const GROUP_COLUMNS: &str = "id, name, description, project_id, is_default, created_time, update_time, tags, version, ingress, egress";

fn group_from_row(r: &Row) -> Result<GroupRecord, StoreError> {
    let tags: String = col(r, 7)?;
    let version: i64 = col(r, 8)?;
    let ingress: String = col(r, 9)?;
    let egress: String = col(r, 10)?;
    Ok(GroupRecord {
        id: col(r, 0)?,
        name: col(r, 1)?,
        description: col(r, 2)?,
        project_id: col(r, 3)?,
        is_default: col(r, 4)?,
        created_time: col(r, 5)?,
        update_time: col(r, 6)?,
        tags: from_json(&tags)?,
        version: u64::try_from(version).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ingress: from_json(&ingress)?,
        egress: from_json(&egress)?,
    })
}

const TEMPLATE_COLUMNS: &str = "id, kind, name, members, extra, tags, created_time, updated_time";

fn template_from_row(r: &Row) -> Result<TemplateRecord, StoreError> {
    let kind: String = col(r, 1)?;
    let kind = TemplateKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("template kind {kind:?}")))?;
    let members: String = col(r, 3)?;
    let extra: String = col(r, 4)?;
    let tags: String = col(r, 5)?;
    Ok(TemplateRecord {
        id: col(r, 0)?,
        kind,
        name: col(r, 2)?,
        members: from_json(&members)?,
        extra: from_json(&extra)?,
        tags: from_json(&tags)?,
        created_time: col(r, 6)?,
        updated_time: col(r, 7)?,
    })
}

fn cluster_from_row(r: &Row) -> Result<ClusterRecord, StoreError> {
    let body: String = col(r, 1)?;
    Ok(ClusterRecord {
        id: col(r, 0)?,
        body: from_json(&body)?,
        created_time: col(r, 2)?,
        updated_time: col(r, 3)?,
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

fn is_group_kind(kind: TemplateKind) -> bool {
    matches!(
        kind,
        TemplateKind::AddressGroup | TemplateKind::ServiceGroup
    )
}

impl Tx for PgTx<'_> {
    fn revision(&self) -> Result<u64, StoreError> {
        read_revision(&mut *self.tx.borrow_mut())
    }

    fn account_revision(&self, account: &str) -> Result<u64, StoreError> {
        self.lock(account)?;
        let rows = self.query(
            "SELECT revision FROM account_revisions WHERE account_id = $1",
            &[&account],
        )?;
        match rows.first() {
            Some(row) => {
                let v: i64 = col(row, 0)?;
                Ok(u64::try_from(v).unwrap_or(0))
            }
            None => Ok(0),
        }
    }

    fn group(&self, account: &str, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.lock(account)?;
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = $1 AND id = $2");
        self.query(&sql, &[&account, &id])?
            .first()
            .map(group_from_row)
            .transpose()
    }

    fn groups(&self, account: &str) -> Result<Vec<GroupRecord>, StoreError> {
        self.lock(account)?;
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = $1 ORDER BY seq");
        self.query(&sql, &[&account])?
            .iter()
            .map(group_from_row)
            .collect()
    }

    fn insert_group(&mut self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        if self.id_taken(account, &g.id)? {
            return Err(StoreError::DuplicateId(g.id.clone()));
        }
        self.execute(
            "INSERT INTO groups (id, account_id, name, description, project_id, is_default, created_time, update_time, tags, version, ingress, egress) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &g.id, &account, &g.name, &g.description, &g.project_id, &g.is_default,
                &g.created_time, &g.update_time, &to_json(&g.tags)?, &to_i64(g.version),
                &to_json(&g.ingress)?, &to_json(&g.egress)?,
            ],
        )?;
        self.set_refs(account, &g.id, &group_refs(g))?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn update_group(&mut self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "UPDATE groups SET name = $3, description = $4, project_id = $5, is_default = $6, update_time = $7, tags = $8, version = $9, ingress = $10, egress = $11 WHERE account_id = $1 AND id = $2",
            &[
                &account, &g.id, &g.name, &g.description, &g.project_id, &g.is_default,
                &g.update_time, &to_json(&g.tags)?, &to_i64(g.version),
                &to_json(&g.ingress)?, &to_json(&g.egress)?,
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(g.id.clone()));
        }
        self.set_refs(account, &g.id, &group_refs(g))?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_group(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "DELETE FROM groups WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.execute("DELETE FROM refs WHERE from_id = $1", &[&id])?;
        let instances: Vec<String> = self
            .query(
                "SELECT DISTINCT instance_id FROM bindings WHERE account_id = $1 AND group_id = $2",
                &[&account, &id],
            )?
            .iter()
            .map(|r| col(r, 0))
            .collect::<Result<_, _>>()?;
        // Removing a group from instances keeps the remaining order.
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
        self.lock(account)?;
        self.query(
            "SELECT DISTINCT from_id FROM refs WHERE account_id = $1 AND to_id = $2 AND from_id <> $2 ORDER BY from_id",
            &[&account, &id],
        )?
        .iter()
        .map(|r| col(r, 0))
        .collect()
    }

    fn template(&self, account: &str, id: &str) -> Result<Option<TemplateRecord>, StoreError> {
        self.lock(account)?;
        let sql =
            format!("SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = $1 AND id = $2");
        self.query(&sql, &[&account, &id])?
            .first()
            .map(template_from_row)
            .transpose()
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
            return self
                .query(&sql, &[&account, &kind.as_str()])?
                .iter()
                .map(template_from_row)
                .collect();
        }
        let mut cache = self.templates.borrow_mut();
        if cache.as_ref().is_none_or(|(a, _)| a != account) {
            let sql = format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE account_id = $1 ORDER BY seq"
            );
            let all = self
                .query(&sql, &[&account])?
                .iter()
                .map(template_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            *cache = Some((account.to_string(), all));
        }
        Ok(cache
            .as_ref()
            .map(|(_, all)| all.iter().filter(|t| t.kind == kind).cloned().collect())
            .unwrap_or_default())
    }

    fn insert_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        if self.id_taken(account, &t.id)? {
            return Err(StoreError::DuplicateId(t.id.clone()));
        }
        self.execute(
            "INSERT INTO templates (id, account_id, kind, name, members, extra, tags, created_time, updated_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &t.id, &account, &t.kind.as_str(), &t.name, &to_json(&t.members)?,
                &to_json(&t.extra)?, &to_json(&t.tags)?, &t.created_time, &t.updated_time,
            ],
        )?;
        if is_group_kind(t.kind) {
            self.set_refs(account, &t.id, &t.members)?;
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn update_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "UPDATE templates SET name = $3, members = $4, extra = $5, tags = $6, updated_time = $7 WHERE account_id = $1 AND id = $2",
            &[
                &account, &t.id, &t.name, &to_json(&t.members)?, &to_json(&t.extra)?,
                &to_json(&t.tags)?, &t.updated_time,
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(t.id.clone()));
        }
        if is_group_kind(t.kind) {
            self.set_refs(account, &t.id, &t.members)?;
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_template(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "DELETE FROM templates WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.execute("DELETE FROM refs WHERE from_id = $1", &[&id])?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn instance(&self, account: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.lock(account)?;
        let rows = self.query(
            "SELECT id, name, private_ips, created_time FROM instances WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?;
        rows.first()
            .map(|r| self.instance_from_row(account, r))
            .transpose()
    }

    fn instances(&self, account: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.lock(account)?;
        // One round trip for all instances and their ordered bindings: every
        // agent's ruleset request reads the whole account.
        let rows = self.query(
            "SELECT i.id, i.name, i.private_ips, i.created_time,
                    coalesce(array_agg(b.group_id ORDER BY b.position)
                             FILTER (WHERE b.group_id IS NOT NULL), '{}')
             FROM instances i
             LEFT JOIN bindings b ON b.account_id = i.account_id AND b.instance_id = i.id
             WHERE i.account_id = $1 GROUP BY i.account_id, i.id ORDER BY i.seq",
            &[&account],
        )?;
        rows.iter()
            .map(|r| {
                let ips: String = col(r, 2)?;
                Ok(InstanceRecord {
                    id: col(r, 0)?,
                    name: col(r, 1)?,
                    private_ips: from_json(&ips)?,
                    created_time: col(r, 3)?,
                    security_group_ids: col(r, 4)?,
                })
            })
            .collect()
    }

    fn insert_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        if self.id_taken(account, &i.id)? {
            return Err(StoreError::DuplicateId(i.id.clone()));
        }
        self.execute(
            "INSERT INTO instances (id, account_id, name, private_ips, created_time) VALUES ($1, $2, $3, $4, $5)",
            &[&i.id, &account, &i.name, &to_json(&i.private_ips)?, &i.created_time],
        )?;
        self.set_bindings(account, i)?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn update_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "UPDATE instances SET name = $3, private_ips = $4 WHERE account_id = $1 AND id = $2",
            &[&account, &i.id, &i.name, &to_json(&i.private_ips)?],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(i.id.clone()));
        }
        self.set_bindings(account, i)?;
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_instance(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "DELETE FROM instances WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        // A deregistered instance's bindings, agent credentials and status
        // die with it (only this account's: another may hold the same id).
        for sql in [
            "DELETE FROM bindings WHERE account_id = $1 AND instance_id = $2",
            "DELETE FROM instance_keys WHERE account_id = $1 AND instance_id = $2",
            "DELETE FROM instance_status WHERE account_id = $1 AND instance_id = $2",
        ] {
            self.execute(sql, &[&account, &id])?;
        }
        self.touched.insert(account.to_string());
        self.keys.insert(account.to_string());
        Ok(())
    }

    fn group_instances(&self, account: &str, group_id: &str) -> Result<Vec<String>, StoreError> {
        self.lock(account)?;
        self.query(
            "SELECT b.instance_id FROM bindings b JOIN instances i ON i.account_id = b.account_id AND i.id = b.instance_id
             WHERE b.account_id = $1 AND b.group_id = $2 GROUP BY b.instance_id ORDER BY min(i.seq)",
            &[&account, &group_id],
        )?
        .iter()
        .map(|r| col(r, 0))
        .collect()
    }

    fn cluster(&self, account: &str, id: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.lock(account)?;
        self.query(
            "SELECT id, body, created_time, updated_time FROM clusters WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?
        .first()
        .map(cluster_from_row)
        .transpose()
    }

    fn clusters(&self, account: &str) -> Result<Vec<ClusterRecord>, StoreError> {
        self.lock(account)?;
        self.query(
            "SELECT id, body, created_time, updated_time FROM clusters WHERE account_id = $1 ORDER BY seq",
            &[&account],
        )?
        .iter()
        .map(cluster_from_row)
        .collect()
    }

    fn put_cluster(&mut self, account: &str, c: &ClusterRecord) -> Result<(), StoreError> {
        self.lock(account)?;
        if self.cluster(account, &c.id)?.is_some() {
            self.execute(
                "UPDATE clusters SET body = $3, updated_time = $4 WHERE account_id = $1 AND id = $2",
                &[&account, &c.id, &to_json(&c.body)?, &c.updated_time],
            )?;
        } else {
            if self.id_taken(account, &c.id)? {
                return Err(StoreError::DuplicateId(c.id.clone()));
            }
            self.execute(
                "INSERT INTO clusters (id, account_id, body, created_time, updated_time) VALUES ($1, $2, $3, $4, $5)",
                &[&c.id, &account, &to_json(&c.body)?, &c.created_time, &c.updated_time],
            )?;
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn delete_cluster(&mut self, account: &str, id: &str) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.execute(
            "DELETE FROM clusters WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.touched.insert(account.to_string());
        Ok(())
    }

    fn marker(&self, name: &str) -> Result<Option<i64>, StoreError> {
        debug_assert_ne!(name, "revision");
        let rows = self.query("SELECT value FROM meta WHERE key = $1", &[&name])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn set_marker(&mut self, name: &str, value: i64) -> Result<(), StoreError> {
        debug_assert_ne!(name, "revision");
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value],
        )?;
        Ok(())
    }
}
