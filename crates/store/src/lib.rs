//! Palisade's persistent state (DESIGN.md section 5): accounts, security
//! groups with their rule lists, address and service templates, instances and
//! their ordered group bindings, and the global revision that agents wait on.
//!
//! The [`Store`] trait is the seam between the API server and a database;
//! it is object-safe, so the server holds an `Arc<dyn Store>` and the backend
//! is chosen at run time. Every API mutation runs as one closure inside
//! [`StoreExt::write`], which is one database transaction: the closure reads
//! (including the policy set `Version`), decides, writes, and either
//! everything commits and the revision goes up by one, or the closure returns
//! an error and nothing changed. Reads run in [`StoreExt::read`] on one
//! consistent snapshot.
//!
//! Records keep rules as Tencent wire JSON ([`serde_json::Value`]) plus the
//! ids each rule references: the store does not interpret rules (that is the
//! `model` crate's job), but it keeps the reference index that answers
//! "who references this group or template" inside the same transaction.
//! Two backends: [`SqliteStore`] (one file, the default) and [`PgStore`]
//! (PostgreSQL, shared by several servers: `SELECT ... FOR UPDATE` on the
//! revision row serialises writers, `LISTEN/NOTIFY` carries the revision).
//! [`open`] picks one from a [`Location`] such as `sqlite:///var/lib/x.db`
//! or `postgres://palisade@db/palisade`.

#![forbid(unsafe_code)]

use palisade_model::flow::{Enforcement, FlowFilter, FlowRecord};
mod changes;
mod flows;
mod hits;
pub use hits::{HitCoverage, RuleCount, RuleHits};
#[macro_use]
mod sql;
mod pg;
mod pool;
mod sqlite;

pub use pg::{PgStore, MIGRATIONS as PG_MIGRATIONS, REVISION_CHANNEL};
pub use sqlite::SqliteStore;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Errors of the store. Every variant is a failure of the storage layer, not
/// of the caller's request: the API maps them to `InternalError`, except
/// [`StoreError::AccountExists`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement.
    #[error("PostgreSQL error: {0}")]
    Postgres(#[source] postgres::Error),
    /// The database cannot be reached (down, restarting, connection lost, or
    /// every pooled connection busy); the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A store location that is neither `sqlite://PATH` nor `postgres://...`.
    #[error("invalid store location {0}")]
    InvalidLocation(String),
    /// The database was migrated by a newer palisade than this one.
    #[error(
        "database schema version {found} is newer than this binary's {known}; upgrade palisade"
    )]
    SchemaTooNew {
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this binary knows.
        known: i64,
    },
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// Creating a data directory or file failed.
    #[error("cannot prepare data directory: {0}")]
    Io(#[from] std::io::Error),
    /// An account with that name exists already.
    #[error("an account named {0:?} already exists")]
    AccountExists(String),
    /// An account name is empty or holds characters other than letters,
    /// digits, `-`, `_` and `.`.
    #[error("invalid account name {0:?}: use 1-64 letters, digits, '-', '_' or '.'")]
    InvalidAccountName(String),
    /// A record with the same id exists already (random id collision).
    #[error("a record with id {0:?} exists already")]
    DuplicateId(String),
    /// The record to update or delete does not exist.
    #[error("record {0:?} not found")]
    NotFound(String),
}

impl From<postgres::Error> for StoreError {
    /// Connection failures (no SQLSTATE), connection exceptions (class 08),
    /// operator intervention such as a shutdown or a database starting up
    /// (class 57) and too many connections (53300) mean the database is
    /// unavailable, which callers report as retryable.
    fn from(e: postgres::Error) -> Self {
        let unavailable = match e.code() {
            None => true,
            Some(c) => {
                let c = c.code();
                c.starts_with("08") || c.starts_with("57") || c == "53300"
            }
        };
        if unavailable || e.is_closed() {
            Self::Unavailable(e.to_string())
        } else {
            Self::Postgres(e)
        }
    }
}

impl StoreError {
    /// Whether the failure is the database being unreachable (retry later)
    /// rather than a fault in the data or the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl std::str::FromStr for Location {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::InvalidLocation(format!(
                    "{s:?}: sqlite:// needs a file path, e.g. sqlite:///var/lib/palisade/palisade.db"
                )));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_string()));
        }
        Err(StoreError::InvalidLocation(format!(
            "{s:?}: use sqlite://PATH or postgres://USER@HOST/DBNAME"
        )))
    }
}

impl std::fmt::Display for Location {
    /// The location without any password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Opens the store at `location`: a SQLite file (created if needed, mode
/// 0600) or a PostgreSQL database (migrated to this binary's schema).
/// PostgreSQL connects synchronously: call it outside async code (or in
/// `spawn_blocking`).
pub fn open(location: &Location) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(SqliteStore::open_file(path)?),
        Location::Postgres(url) => Arc::new(PgStore::open(url)?),
    })
}

/// An API account: its credentials and the namespace of its resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Stable identifier, `acc-` plus 8 lower-case alphanumerics.
    pub id: String,
    /// Unique human name (`admin` is created by the first `serve`).
    pub name: String,
    /// Tencent-style SecretId (`AKID` plus 32 alphanumerics).
    pub secret_id: String,
    /// The HMAC secret. Never logged.
    pub secret_key: String,
    /// Creation time, `YYYY-MM-DD HH:MM:SS` UTC.
    pub created_time: String,
}

/// A `{Key, Value}` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    /// Tag key.
    #[serde(rename = "Key")]
    pub key: String,
    /// Tag value.
    #[serde(rename = "Value")]
    pub value: String,
}

/// One rule as stored: its wire JSON and the ids it references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The canonical Tencent wire form of the rule (without `PolicyIndex`).
    pub body: serde_json::Value,
    /// Ids of groups and templates this rule references.
    pub refs: Vec<String>,
}

/// A group's policy set as stored ([`Store::group_policies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicies {
    /// The policy set `Version`.
    pub version: u64,
    /// The ingress rules: a JSON list of [`RuleRecord`]s, index 0 first.
    pub ingress: String,
    /// The egress rules, likewise.
    pub egress: String,
}

/// A security group with its policy set.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    /// `sg-xxxxxxxx`.
    pub id: String,
    /// `SecurityGroupName`.
    pub name: String,
    /// `SecurityGroupDesc`.
    pub description: String,
    /// `ProjectId`, a decimal string.
    pub project_id: String,
    /// `IsDefault`.
    pub is_default: bool,
    /// `CreatedTime`.
    pub created_time: String,
    /// `UpdateTime`.
    pub update_time: String,
    /// `TagSet`.
    pub tags: Vec<Tag>,
    /// The policy set `Version`; bumped by every rule change.
    pub version: u64,
    /// Ordered ingress rules, index 0 first.
    pub ingress: Vec<RuleRecord>,
    /// Ordered egress rules, index 0 first.
    pub egress: Vec<RuleRecord>,
}

/// The marker holding how many versions of each group's policy set are
/// kept (set by `palisade serve --history-limit`).
pub const HISTORY_LIMIT_MARKER: &str = "history_limit";

/// Versions kept per group when no limit was set.
pub const DEFAULT_HISTORY_LIMIT: u64 = 100;

/// One kept version of a group's policy set.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupVersion {
    /// The policy set `Version`.
    pub version: u64,
    /// Ordered ingress rules of that version.
    pub ingress: Vec<RuleRecord>,
    /// Ordered egress rules of that version.
    pub egress: Vec<RuleRecord>,
    /// When the version was written (`YYYY-MM-DD HH:MM:SS` UTC).
    pub recorded_time: String,
}

/// What a stored [`Document`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// A Tencent snapshot policy (`sspolicy-`) with its attached groups.
    SnapshotPolicy,
    /// A commit-confirmed change (`chg-`) with what reverting it restores.
    Change,
}

impl DocKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::SnapshotPolicy => "snapshot_policy",
            Self::Change => "change",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "snapshot_policy" => Self::SnapshotPolicy,
            "change" => Self::Change,
            _ => return None,
        })
    }
}

/// A record the store keeps as JSON without interpreting it, optionally
/// with a time at which it falls due (a pending change's deadline).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// What it is.
    pub kind: DocKind,
    /// Its id, unique per account and kind.
    pub id: String,
    /// Its content.
    pub body: serde_json::Value,
    /// Unix seconds at which it falls due, if it does.
    pub due: Option<i64>,
}

/// The four kinds of template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Address template, `ipm-`.
    Address,
    /// Address template group, `ipmg-`.
    AddressGroup,
    /// Service template, `ppm-`.
    Service,
    /// Service template group, `ppmg-`.
    ServiceGroup,
}

impl TemplateKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::AddressGroup => "address_group",
            Self::Service => "service",
            Self::ServiceGroup => "service_group",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "address" => Self::Address,
            "address_group" => Self::AddressGroup,
            "service" => Self::Service,
            "service_group" => Self::ServiceGroup,
            _ => return None,
        })
    }
}

/// An address or service template or template group.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRecord {
    /// `ipm-`, `ipmg-`, `ppm-` or `ppmg-` id.
    pub id: String,
    /// Which kind.
    pub kind: TemplateKind,
    /// Display name.
    pub name: String,
    /// Entries: addresses or services for templates, member ids for groups.
    pub members: Vec<String>,
    /// Optional per-entry extra info (wire JSON), as given.
    pub extra: serde_json::Value,
    /// `TagSet`.
    pub tags: Vec<Tag>,
    /// `CreatedTime`.
    pub created_time: String,
    /// `UpdatedTime`.
    pub updated_time: String,
}

/// An instance (node) and its ordered bound groups.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// `ins-xxxxxxxx`.
    pub id: String,
    /// `InstanceName`.
    pub name: String,
    /// Private IPs, in the order registered.
    pub private_ips: Vec<String>,
    /// `CreatedTime`.
    pub created_time: String,
    /// Bound groups, binding order (index 0 evaluated first).
    pub security_group_ids: Vec<String>,
}

/// A cluster (the TKE profile's view: networks, nodes, masters, peers), kept
/// as its wire JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRecord {
    /// `cls-xxxxxxxx`.
    pub id: String,
    /// The cluster as the API shows it (without `ClusterId`).
    pub body: serde_json::Value,
    /// `CreatedTime`.
    pub created_time: String,
    /// `UpdatedTime`.
    pub updated_time: String,
}

/// The operations available inside one transaction. Every resource is scoped
/// by `account`: a record of another account is invisible (reads give `None`
/// or leave it out, writes give [`StoreError::NotFound`]). Instance and
/// cluster ids, chosen by clients, are unique per account: two accounts may
/// each hold `ins-1` without either noticing the other.
pub trait Tx {
    /// The store revision as of this transaction's snapshot.
    fn revision(&self) -> Result<u64, StoreError>;

    /// The revision of the last commit, as of this snapshot, that changed
    /// `account`'s records (0 if none did): an instance's ruleset can only
    /// have changed since revision N if this is above N.
    fn account_revision(&self, account: &str) -> Result<u64, StoreError>;

    /// One group.
    fn group(&self, account: &str, id: &str) -> Result<Option<GroupRecord>, StoreError>;
    /// All groups of the account, in creation order.
    fn groups(&self, account: &str) -> Result<Vec<GroupRecord>, StoreError>;
    /// Inserts a new group (id must be unused).
    fn insert_group(&mut self, account: &str, group: &GroupRecord) -> Result<(), StoreError>;
    /// Replaces an existing group (attributes and rules) and its references.
    fn update_group(&mut self, account: &str, group: &GroupRecord) -> Result<(), StoreError>;
    /// Deletes a group, its references and its instance bindings.
    fn delete_group(&mut self, account: &str, id: &str) -> Result<(), StoreError>;

    /// Ids of the groups and template groups whose rules or members reference `id`.
    fn referrers(&self, account: &str, id: &str) -> Result<Vec<String>, StoreError>;

    /// One template of any kind.
    fn template(&self, account: &str, id: &str) -> Result<Option<TemplateRecord>, StoreError>;
    /// All templates of one kind, in creation order.
    fn templates(
        &self,
        account: &str,
        kind: TemplateKind,
    ) -> Result<Vec<TemplateRecord>, StoreError>;
    /// Inserts a new template (a group's members are recorded as references).
    fn insert_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError>;
    /// Replaces an existing template.
    fn update_template(&mut self, account: &str, t: &TemplateRecord) -> Result<(), StoreError>;
    /// Deletes a template.
    fn delete_template(&mut self, account: &str, id: &str) -> Result<(), StoreError>;

    /// One instance with its bindings.
    fn instance(&self, account: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError>;
    /// All instances of the account, in creation order.
    fn instances(&self, account: &str) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Inserts a new instance with its bindings (an id the account already
    /// uses gives [`StoreError::DuplicateId`]).
    fn insert_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError>;
    /// Replaces an instance's attributes and its whole ordered binding list.
    fn update_instance(&mut self, account: &str, i: &InstanceRecord) -> Result<(), StoreError>;
    /// Deletes an instance and its bindings.
    fn delete_instance(&mut self, account: &str, id: &str) -> Result<(), StoreError>;
    /// Ids of the instances bound to a group.
    fn group_instances(&self, account: &str, group_id: &str) -> Result<Vec<String>, StoreError>;

    /// One cluster.
    fn cluster(&self, account: &str, id: &str) -> Result<Option<ClusterRecord>, StoreError>;
    /// All clusters of the account, in creation order.
    fn clusters(&self, account: &str) -> Result<Vec<ClusterRecord>, StoreError>;
    /// Inserts or replaces a cluster of the account (an id the account uses
    /// for another kind of record gives [`StoreError::DuplicateId`]; other
    /// accounts' clusters are never looked at).
    fn put_cluster(&mut self, account: &str, c: &ClusterRecord) -> Result<(), StoreError>;
    /// Deletes a cluster.
    fn delete_cluster(&mut self, account: &str, id: &str) -> Result<(), StoreError>;

    /// How an instance's groups are applied (`ENFORCE` when never set).
    fn enforcement(&self, account: &str, instance_id: &str) -> Result<Enforcement, StoreError>;
    /// Every instance of the account whose mode was ever set, with it.
    fn enforcements(&self, account: &str) -> Result<Vec<(String, Enforcement)>, StoreError>;
    /// Sets it; a change, so agents are woken to recompile.
    fn set_enforcement(
        &mut self,
        account: &str,
        instance_id: &str,
        mode: Enforcement,
    ) -> Result<(), StoreError>;
    /// A join token by its id, whichever account issued it: `(account,
    /// body)`. The id names the account; the caller checks the secret
    /// (its hash is in the body) before it acts for that account.
    fn join_token(&self, id: &str) -> Result<Option<(String, serde_json::Value)>, StoreError>;
    /// The join tokens of an account, oldest first: `(id, body)`.
    fn join_tokens(&self, account: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError>;
    /// Creates or replaces a join token of `account`.
    fn put_join_token(
        &mut self,
        account: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Stores an agent credential for an instance of `account` created in
    /// this transaction ([`Store::create_instance_key`] runs its own).
    fn insert_instance_key(&mut self, key: &InstanceKey) -> Result<(), StoreError>;
    /// The kept versions of a group's policy set, oldest first; the write
    /// that made the current version recorded it too. At most the history
    /// limit ([`HISTORY_LIMIT_MARKER`]) of the newest versions are kept.
    fn group_history(&self, account: &str, group_id: &str)
        -> Result<Vec<GroupVersion>, StoreError>;

    /// One stored document of the account.
    fn document(
        &self,
        account: &str,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Document>, StoreError>;
    /// The account's documents of one kind, in creation order.
    fn documents(&self, account: &str, kind: DocKind) -> Result<Vec<Document>, StoreError>;
    /// Inserts or replaces a document. Documents are not rules: writing one
    /// does not wake agents.
    fn put_document(&mut self, account: &str, doc: &Document) -> Result<(), StoreError>;
    /// Deletes a document ([`StoreError::NotFound`] if there is none).
    fn delete_document(&mut self, account: &str, kind: DocKind, id: &str)
        -> Result<(), StoreError>;
    /// `(account, id)` of every document of `kind`, of any account, whose
    /// `due` time is at or before `now` (unix seconds), earliest first.
    fn documents_due(&self, kind: DocKind, now: i64) -> Result<Vec<(String, String)>, StoreError>;

    /// A store-wide marker, such as a one-time start-up task that ran
    /// (`None` if never set). Names other than `revision` only.
    fn marker(&self, name: &str) -> Result<Option<i64>, StoreError>;
    /// Sets a store-wide marker.
    fn set_marker(&mut self, name: &str, value: i64) -> Result<(), StoreError>;
}

/// A transactional store. Object-safe, so a server can hold an
/// `Arc<dyn Store>` and pick the backend at run time (SQLite today,
/// PostgreSQL next); the generic, typed entry points are in [`StoreExt`].
pub trait Store: Send + Sync + 'static {
    /// Runs `f` on one consistent read snapshot.
    fn read_dyn(&self, f: &mut dyn FnMut(&dyn Tx)) -> Result<(), StoreError>;

    /// Runs `f` in one write transaction and commits it when `f` returns
    /// `true` (durably, bumping the global revision by one if anything
    /// changed); when `f` returns `false` nothing is written.
    fn write_dyn(&self, f: &mut dyn FnMut(&mut dyn Tx) -> bool) -> Result<(), StoreError>;

    /// The current global revision.
    fn revision(&self) -> Result<u64, StoreError>;

    /// A receiver that sees every revision this process commits, for agents
    /// that wait for "a snapshot newer than N".
    fn watch_revision(&self) -> watch::Receiver<u64>;

    /// A receiver whose value rises above N when a commit newer than N
    /// changed `account` (in this process or, for a shared database, in
    /// any): a long-poll for one instance waits on its account only. It may
    /// rise without a change to the account (it starts at the global
    /// revision), never stay below one.
    fn watch_account(&self, account: &str) -> watch::Receiver<u64>;

    /// A receiver whose value rises above N when a commit newer than N
    /// removed a credential of `account` (an instance key, with its
    /// instance), in this process or any; like [`Store::watch_account`] it
    /// may rise without one, never stay below one. Accounts' own keys never
    /// change. A credential read while this showed N is still valid while
    /// it shows N.
    fn watch_keys(&self, account: &str) -> watch::Receiver<u64>;

    /// Creates an account with fresh credentials.
    fn create_account(&self, name: &str) -> Result<Account, StoreError>;
    /// The account owning `secret_id`, if any.
    fn account_by_secret_id(&self, secret_id: &str) -> Result<Option<Account>, StoreError>;
    /// The account named `name`, if any.
    fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError>;
    /// All accounts (without their secret keys being used by the caller).
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// Creates a credential for an agent: it acts for `account_id` and may
    /// only read the ruleset of `instance_id`, which must be an instance of
    /// that account ([`StoreError::NotFound`] otherwise).
    fn create_instance_key(
        &self,
        account_id: &str,
        instance_id: &str,
    ) -> Result<InstanceKey, StoreError>;

    /// Resolves a SecretId to whoever holds it: an account, or an agent
    /// credential scoped to one instance.
    fn credential(&self, secret_id: &str) -> Result<Option<Credential>, StoreError>;

    /// Whether a single-row read is local and short (SQLite: a file on
    /// this machine, tens of microseconds), so a server may run one on its
    /// async threads instead of handing it to a blocking pool; `false` when
    /// reads cross a network (PostgreSQL).
    fn local_reads(&self) -> bool;

    /// Group `id` of `account`, only its policy set: the version and each
    /// direction's stored rules ([`RuleRecord`]s) as their JSON text, in one
    /// statement (no snapshot transaction), for a caller that decodes them
    /// straight into its own types. `None` when the account has no such
    /// group.
    fn group_policies(&self, account: &str, id: &str)
        -> Result<Option<StoredPolicies>, StoreError>;

    /// Records what an instance's agent last reported (applied revision,
    /// counters, errors) as opaque JSON. Status is not configuration: it
    /// does not bump the revision (agents waiting on it are not woken).
    /// [`StoreError::NotFound`] when the account has no such instance.
    fn put_instance_status(
        &self,
        account: &str,
        instance_id: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// The last report of every instance of the account that has one:
    /// `(instance id, report, time received)`.
    fn instance_statuses(
        &self,
        account: &str,
    ) -> Result<Vec<(String, serde_json::Value, String)>, StoreError>;

    /// Stores flow records of one of `account`'s instances, already
    /// checked, in one transaction; [`StoreError::NotFound`] when the
    /// account has no such instance (nothing is stored). Records are not
    /// configuration: no revision bump.
    fn put_flow_records(
        &self,
        account: &str,
        instance_id: &str,
        records: &[FlowRecord],
    ) -> Result<u64, StoreError>;

    /// `account`'s records that pass `filter`, newest first, after
    /// `offset`, at most `limit`, each with its sequence number; and how
    /// many pass in all.
    fn flow_records(
        &self,
        account: &str,
        filter: &FlowFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<(i64, FlowRecord)>), StoreError>;

    /// Adds an instance's reported rule counters to its rules' hits
    /// ([`RuleHits`]): what grew since its previous report. The instance's
    /// [`HitCoverage`] runs on from its previous report, or starts again
    /// at `now` when that report is more than `gap` seconds old.
    fn record_rule_hits(
        &self,
        account: &str,
        instance_id: &str,
        counts: &[RuleCount],
        now: u64,
        gap: u64,
    ) -> Result<(), StoreError>;

    /// Since when each of `instance_ids` has reported counters without a
    /// gap, and its last report; an instance that never reported is absent.
    fn hit_coverage(
        &self,
        account: &str,
        instance_ids: &[String],
    ) -> Result<Vec<HitCoverage>, StoreError>;

    /// The hits of a group's rules, as recorded (the caller compares each
    /// digest with the rule now at that position).
    fn rule_hits(&self, account: &str, group_id: &str) -> Result<Vec<RuleHits>, StoreError>;

    /// Deletes `account`'s records that ended before `before` (Unix
    /// seconds), then its oldest beyond `keep`; how many went.
    fn expire_flow_records(&self, account: &str, before: u64, keep: u64)
        -> Result<u64, StoreError>;
}

/// Typed transactions over any [`Store`]: each API action's
/// read-check-write sequence runs inside one transaction whatever the backend.
pub trait StoreExt: Store {
    /// Runs `f` on a consistent read snapshot.
    fn read<T, E>(&self, f: impl FnOnce(&dyn Tx) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut f = Some(f);
        let mut out = None;
        self.read_dyn(&mut |tx| {
            if let Some(f) = f.take() {
                out = Some(f(tx));
            }
        })?;
        out.unwrap_or_else(
            || Err(StoreError::Corrupt("read transaction did not run".into()).into()),
        )
    }

    /// Runs `f` in one write transaction. If `f` returns `Ok` the transaction
    /// commits durably (and, if anything changed, the global revision goes up
    /// by one); if it returns `Err`, nothing is written.
    fn write<T, E>(&self, f: impl FnOnce(&mut dyn Tx) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut f = Some(f);
        let mut out = None;
        self.write_dyn(&mut |tx| match f.take() {
            Some(f) => {
                let r = f(tx);
                let commit = r.is_ok();
                out = Some(r);
                commit
            }
            None => false,
        })?;
        out.unwrap_or_else(|| {
            Err(StoreError::Corrupt("write transaction did not run".into()).into())
        })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// A credential scoped to one instance, for that instance's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceKey {
    /// The account the instance belongs to.
    pub account_id: String,
    /// The only instance this credential may read.
    pub instance_id: String,
    /// `AKID` plus 32 alphanumerics.
    pub secret_id: String,
    /// The HMAC secret. Never logged.
    pub secret_key: String,
}

/// Whoever holds a SecretId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The account acted for.
    pub account: Account,
    /// The secret key of this SecretId (the account's own, or the agent key's).
    pub secret_key: String,
    /// `Some(instance)` for an agent credential: it may read that instance's
    /// ruleset and nothing else.
    pub instance_scope: Option<String>,
}

/// `prefix` followed by `n` random lower-case alphanumerics.
pub fn random_id(prefix: &str, n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + n);
    s.push_str(prefix);
    for _ in 0..n {
        s.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    s
}

/// Checks an account name: 1-64 letters, digits, `-`, `_` or `.`.
fn check_account_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidAccountName(name.to_string()))
    }
}

/// `prefix` and `n` random letters and digits, for secrets made outside
/// the store (an agent key created inside a larger transaction).
pub fn random_secret(prefix: &str, n: usize) -> String {
    random_alnum(prefix, n)
}

/// `prefix` and `n` random letters and digits, for secrets.
fn random_alnum(prefix: &str, n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // thread_rng is a CSPRNG (ChaCha, reseeded from the OS), fit for secrets.
    let mut rng = rand::thread_rng();
    let mut s = String::from(prefix);
    for _ in 0..n {
        s.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    s
}

/// The current UTC time as Tencent prints it, `YYYY-MM-DD HH:MM:SS`.
pub fn now_string() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| String::from("1970-01-01 00:00:00"))
}

/// Creates an empty database named `palisade_<random>` on the server of
/// `base_url` (whose role must have `CREATEDB`) and returns its URL, for
/// tests that each need a database of their own.
pub fn scratch_database(base_url: &str) -> Result<String, StoreError> {
    let config: postgres::Config = base_url
        .parse()
        .map_err(|e: postgres::Error| StoreError::InvalidLocation(format!("{e}")))?;
    let mut client = config.connect(postgres::NoTls)?;
    let name = random_id("palisade_", 12);
    // `name` is lower-case letters, digits and `_`: a plain identifier.
    client.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let (head, query) = match base_url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base_url, String::new()),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    Ok(format!("{base}/{name}{query}"))
}
