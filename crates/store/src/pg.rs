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
use crate::pool::{Connector, Pool, Pooled};
use crate::sql::{current_revision, Backend, Param, Row, Sql, Value};
use crate::StoreError;
use postgres::types::{ToSql, Type};
use postgres::{Client, IsolationLevel, NoTls};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
/// another's. Version 4 adds flow records, each instance's enforcement
/// mode and rule hits. Version 5 keeps each group's previous policy sets
/// (`group_versions`) and the documents of snapshot policies and
/// commit-confirmed changes (`documents`). Version 6 adds the join tokens
/// (`join_tokens`, one JSON body each, the secret only as its hash).
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
    (
        4,
        "
CREATE TABLE instance_enforcement (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, mode TEXT NOT NULL,
    PRIMARY KEY (account_id, instance_id));
CREATE TABLE flow_records (
    seq BIGSERIAL PRIMARY KEY, account_id TEXT NOT NULL, instance_id TEXT NOT NULL,
    direction TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL, peer_hex TEXT NOT NULL,
    src_port BIGINT NOT NULL, dst_port BIGINT NOT NULL, protocol BIGINT NOT NULL,
    action TEXT NOT NULL, group_id TEXT NOT NULL, policy_index BIGINT NOT NULL,
    revision BIGINT NOT NULL, decisions BIGINT NOT NULL, packets BIGINT NOT NULL,
    bytes BIGINT NOT NULL, start_time BIGINT NOT NULL, end_time BIGINT NOT NULL);
CREATE INDEX flow_records_instance ON flow_records (account_id, instance_id, start_time);
CREATE INDEX flow_records_time ON flow_records (account_id, start_time);
CREATE INDEX flow_records_end ON flow_records (account_id, end_time);
CREATE INDEX flow_records_instance_end ON flow_records (account_id, instance_id, end_time);
CREATE TABLE rule_counter_last (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, group_id TEXT NOT NULL,
    direction TEXT NOT NULL, policy_index BIGINT NOT NULL, digest TEXT NOT NULL,
    packets BIGINT NOT NULL,
    PRIMARY KEY (account_id, instance_id, group_id, direction, policy_index));
CREATE TABLE rule_hits (
    account_id TEXT NOT NULL, group_id TEXT NOT NULL, direction TEXT NOT NULL,
    policy_index BIGINT NOT NULL, digest TEXT NOT NULL, hits BIGINT NOT NULL,
    last_used BIGINT NOT NULL, since BIGINT NOT NULL,
    PRIMARY KEY (account_id, group_id, direction, policy_index));
",
    ),
    (
        5,
        "
CREATE TABLE group_versions (
    account_id TEXT NOT NULL, group_id TEXT NOT NULL, version BIGINT NOT NULL,
    ingress TEXT NOT NULL, egress TEXT NOT NULL, recorded_time TEXT NOT NULL,
    PRIMARY KEY (account_id, group_id, version));
CREATE TABLE documents (
    seq BIGSERIAL, account_id TEXT NOT NULL, kind TEXT NOT NULL,
    id TEXT NOT NULL, body TEXT NOT NULL, due BIGINT NOT NULL,
    PRIMARY KEY (account_id, kind, id));
CREATE INDEX documents_due ON documents (kind, due);
",
    ),
    (
        6,
        "
CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY, account_id TEXT NOT NULL, body TEXT NOT NULL,
    created_time TEXT NOT NULL);
CREATE INDEX join_tokens_account ON join_tokens (account_id);
",
    ),
    (
        7,
        "
CREATE TABLE hit_coverage (
    account_id TEXT NOT NULL, instance_id TEXT NOT NULL, since BIGINT NOT NULL,
    last_report BIGINT NOT NULL, PRIMARY KEY (account_id, instance_id));
",
    ),
];

/// A [`Store`] on a PostgreSQL database shared by any number of servers.
pub struct PgStore {
    pool: Arc<Pool<PgConnector>>,
    writes: Pool<PgConnector>,
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
        let writes = Pool::new(
            PgConnector {
                config: config.clone(),
            },
            WRITE_POOL_SIZE,
            POOL_WAIT,
        );
        let pool = Arc::new(Pool::new(PgConnector { config }, POOL_SIZE, POOL_WAIT));
        {
            let mut conn = pool.get()?;
            migrate(&mut conn.client)?;
        }
        let revision = {
            let mut conn = pool.get()?;
            read_revision(&mut conn.client)?
        };
        let watchers = Arc::new(Watchers::new(revision));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let pool = pool.clone();
            let watchers = watchers.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("palisade-pg-listen".into())
                .spawn(move || listen(&pool.connector().config, &watchers, &stop))?;
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
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A `postgres::Client` runs a runtime of its own and panics when
        // dropped inside an async one, where the server drops its store:
        // close the write pool's idle connections on a plain thread. (The
        // read pool is shared with the listener thread, which drops it.)
        let idle = self.writes.take_idle();
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

/// Takes an account's writer lock: a transaction-scoped advisory lock in
/// the key space 0x50414c53 ("PALS"), keyed by `hashtext(account)`.
const LOCK_ACCOUNT: &str = "SELECT pg_advisory_xact_lock(1346456659, hashtext($1))";

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
        .map(|r| r.try_get(0))
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

/// A connection's prepared statements by SQL text. `Client::query` with
/// a string prepares the statement first, one more round trip per query;
/// a statement prepared once per connection and kept halves that.
/// (Prepared statements live as long as the connection, so the cache
/// travels with it through the pool.)
type Statements = std::collections::HashMap<String, postgres::Statement>;

/// An idle connection older than this is checked before use.
const VALIDATE_AFTER: Duration = Duration::from_secs(1);

/// Opens PostgreSQL connections for a [`Pool`].
struct PgConnector {
    config: postgres::Config,
}

/// A pooled connection and its prepared statements.
struct PgConnection {
    client: Client,
    stmts: Statements,
}

impl Connector for PgConnector {
    type Conn = PgConnection;

    fn connect(&self) -> Result<PgConnection, StoreError> {
        Ok(PgConnection {
            client: self.config.connect(NoTls)?,
            stmts: Statements::new(),
        })
    }

    /// An idle connection may have died with a database restart; a round
    /// trip of an empty query tells, before any work is sent on it. A
    /// connection busy a moment ago is trusted (a failure on it drops the
    /// whole idle list, see [`Connector::broken`]).
    fn usable(&self, c: &mut PgConnection, idle: Duration) -> bool {
        !c.client.is_closed()
            && (idle < VALIDATE_AFTER || c.client.is_valid(Duration::from_secs(2)).is_ok())
    }

    fn broken(&self, c: &PgConnection) -> bool {
        c.client.is_closed()
    }
}

/// A pooled connection's client and statement cache, borrowed together.
fn parts<'c>(conn: &'c mut Pooled<'_, PgConnector>) -> (&'c mut Client, &'c mut Statements) {
    let c = &mut **conn;
    (&mut c.client, &mut c.stmts)
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

/// A connection of the pool: inside a transaction, or statement by statement.
enum PgConn<'a> {
    Tx(postgres::Transaction<'a>),
    Plain(&'a mut Client),
}

/// A PostgreSQL transaction (or connection) seen through [`Sql`]. The
/// `RefCell`s let `&self` run queries (the driver needs `&mut`); no borrow
/// outlives one call.
struct PgSql<'a> {
    conn: RefCell<PgConn<'a>>,
    stmts: RefCell<&'a mut Statements>,
    /// The accounts whose writer lock this transaction holds.
    locked: RefCell<BTreeSet<String>>,
}

impl<'a> PgSql<'a> {
    fn new(conn: PgConn<'a>, stmts: &'a mut Statements) -> Self {
        Self {
            conn: RefCell::new(conn),
            stmts: RefCell::new(stmts),
            locked: RefCell::new(BTreeSet::new()),
        }
    }

    fn commit(self) -> Result<(), StoreError> {
        if let PgConn::Tx(tx) = self.conn.into_inner() {
            tx.commit()?;
        }
        Ok(())
    }

    /// The prepared statement for `sql`, from the connection's cache.
    fn statement(&self, sql: &str) -> Result<postgres::Statement, StoreError> {
        let mut stmts = self.stmts.borrow_mut();
        match &mut *self.conn.borrow_mut() {
            PgConn::Tx(tx) => prepared(tx, &mut stmts, sql),
            PgConn::Plain(c) => prepared(*c, &mut stmts, sql),
        }
    }
}

fn pg_params<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| -> &(dyn ToSql + Sync) {
            match p {
                Param::Text(s) => s,
                Param::Int(v) => v,
                Param::Bool(b) => b,
            }
        })
        .collect()
}

/// A result row as dialect-neutral values, by column type.
fn pg_row(r: &postgres::Row) -> Result<Row, StoreError> {
    fn get<'r, T: postgres::types::FromSql<'r>>(
        r: &'r postgres::Row,
        i: usize,
        f: impl FnOnce(T) -> Value,
    ) -> Result<Value, StoreError> {
        r.try_get::<_, Option<T>>(i)
            .map(|v| v.map_or(Value::Null, f))
            .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
    }
    (0..r.len())
        .map(|i| match *r.columns()[i].type_() {
            Type::BOOL => get(r, i, |b: bool| Value::Int(i64::from(b))),
            Type::INT8 => get(r, i, Value::Int),
            Type::INT4 => get(r, i, |v: i32| Value::Int(i64::from(v))),
            _ => get(r, i, Value::Text),
        })
        .collect::<Result<_, _>>()
        .map(Row)
}

impl Sql for PgSql<'_> {
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql)?;
        let params = pg_params(params);
        let rows = match &mut *self.conn.borrow_mut() {
            PgConn::Tx(tx) => tx.query(&st, &params)?,
            PgConn::Plain(c) => c.query(&st, &params)?,
        };
        rows.iter().map(pg_row).collect()
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        let params = pg_params(params);
        Ok(match &mut *self.conn.borrow_mut() {
            PgConn::Tx(tx) => tx.execute(&st, &params)?,
            PgConn::Plain(c) => c.execute(&st, &params)?,
        })
    }

    fn lock_account(&self, account: &str) -> Result<(), StoreError> {
        if self.locked.borrow().contains(account) {
            return Ok(());
        }
        self.execute(LOCK_ACCOUNT, &[Param::Text(account)])?;
        self.locked.borrow_mut().insert(account.to_string());
        Ok(())
    }

    /// The revision row: account creation takes it; a [`Tx`] write takes it
    /// only at its end, when it bumps the revision.
    fn lock_store(&self) -> Result<(), StoreError> {
        self.query(
            "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE",
            &[],
        )?;
        Ok(())
    }

    /// `NOTIFY palisade_revision, '<revision> <account> ...'` inside the
    /// transaction: it goes out exactly when the commit does.
    fn announce(&self, revision: u64, names: &[String]) -> Result<(), StoreError> {
        let payload = format!("{revision}{}", notify_accounts(names));
        self.execute(
            "SELECT pg_notify($1, $2)",
            &[Param::Text(REVISION_CHANNEL), Param::Text(&payload)],
        )?;
        Ok(())
    }
}

impl Backend for PgStore {
    const ACCOUNT_ORDER: &'static str = "seq";

    fn in_read(
        &self,
        snapshot: bool,
        f: &mut dyn FnMut(&dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let (client, stmts) = parts(&mut conn);
        if !snapshot {
            return f(&PgSql::new(PgConn::Plain(client), stmts));
        }
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let sql = PgSql::new(PgConn::Tx(tx), stmts);
        f(&sql)?;
        sql.commit()
    }

    fn in_write(
        &self,
        f: &mut dyn FnMut(&dyn Sql) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.writes.get()?;
        let (client, stmts) = parts(&mut conn);
        let sql = PgSql::new(PgConn::Tx(client.transaction()?), stmts);
        if f(&sql)? {
            sql.commit()?;
        }
        // Otherwise dropping the transaction rolls it back.
        Ok(())
    }

    fn watchers(&self) -> &Watchers {
        &self.watchers
    }
}

/// The global revision, read on a connection outside the pools.
fn read_revision(client: &mut Client) -> Result<u64, StoreError> {
    current_revision(&PgSql::new(PgConn::Plain(client), &mut Statements::new()))
}
