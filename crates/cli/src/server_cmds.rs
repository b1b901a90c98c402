//! `palisade serve` and `palisade account`: thin wrappers over the `server`
//! and `store` crates.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use palisade_store::{Location, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// `palisade serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9180")]
    listen: SocketAddr,
    /// Directory of admin-credentials.json (and of the SQLite database
    /// palisade.db unless --store names another store).
    #[arg(long, default_value = "./palisade-data")]
    data_dir: PathBuf,
    /// The store: sqlite://PATH (a database file) or
    /// postgres://USER:PASSWORD@HOST:PORT/DBNAME (shared by several servers).
    /// Default: sqlite://DATA_DIR/palisade.db.
    #[arg(long, value_name = "URL")]
    store: Option<Location>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Require x-tc-action and the body to be signed, and accept a write's
    /// signature only once within its 300 s window (per server). The
    /// Tencent SDKs and tccli do not sign x-tc-action: their calls are
    /// refused; `palisade`'s own client and agent do.
    #[arg(long, env = "PALISADE_STRICT_SIGNATURES")]
    strict_signatures: bool,
    /// Most client connections open at once (lowered to fit the open-file
    /// limit, which the server raises to its hard limit at start).
    #[arg(long, default_value_t = palisade_server::serve::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,
    /// Versions of each group's policy set to keep (`palisade history`,
    /// rollback, snapshot files); older ones are dropped as new ones are
    /// written. Default: what the store was last told, else 100.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    history_limit: Option<u64>,
    /// How long flow records are kept (30s, 15m, 1h, 7d).
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = duration)]
    flow_retention: std::time::Duration,
    /// The most flow records kept per account; beyond it the oldest go.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    flow_records_max: u64,
}

/// A `--flow-retention` value.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    palisade_model::flow::parse_duration("--flow-retention", text).map_err(|e| e.to_string())
}

/// How `serve` writes its log.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `palisade account ...`.
#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account and print its credentials (works while the server runs).
    Create(AccountCreateArgs),
    /// List accounts (names, ids and SecretIds; never secret keys).
    List(AccountListArgs),
    /// Create a credential for one instance's agent: it may only read that
    /// instance's ruleset.
    InstanceKey(InstanceKeyArgs),
}

/// `palisade account instance-key`.
#[derive(Args)]
pub struct InstanceKeyArgs {
    /// The account that owns the instance.
    #[arg(long, default_value = "admin")]
    account: String,
    /// The instance (`ins-...`, registered with RegisterInstances).
    #[arg(long)]
    instance: String,
    /// The server's data directory (its SQLite database, unless --store).
    #[arg(long, default_value = "./palisade-data")]
    data_dir: PathBuf,
    /// The server's store (sqlite://PATH or postgres://...), as given to
    /// `serve --store`.
    #[arg(long, value_name = "URL")]
    store: Option<Location>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `palisade account create`.
#[derive(Args)]
pub struct AccountCreateArgs {
    /// Unique account name: letters, digits, '-', '_' or '.'.
    name: String,
    /// The server's data directory (its SQLite database, unless --store).
    #[arg(long, default_value = "./palisade-data")]
    data_dir: PathBuf,
    /// The server's store (sqlite://PATH or postgres://...), as given to
    /// `serve --store`.
    #[arg(long, value_name = "URL")]
    store: Option<Location>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `palisade account list`.
#[derive(Args)]
pub struct AccountListArgs {
    /// The server's data directory (its SQLite database, unless --store).
    #[arg(long, default_value = "./palisade-data")]
    data_dir: PathBuf,
    /// The server's store (sqlite://PATH or postgres://...), as given to
    /// `serve --store`.
    #[arg(long, value_name = "URL")]
    store: Option<Location>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// How to print results.
#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// Human-readable lines.
    Text,
    /// JSON.
    Json,
}

/// Opens the store named by `--store`, or the SQLite database of `--data-dir`.
fn open_store(
    store: Option<Location>,
    data_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let location = store.unwrap_or_else(|| Location::Sqlite(data_dir.join("palisade.db")));
    palisade_store::open(&location).with_context(|| format!("opening the store {location}"))
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = palisade_server::Config {
        listen: args.listen,
        data_dir: args.data_dir,
        store: args.store,
        tls: args.tls_cert.zip(args.tls_key),
        limits: palisade_model::Limits::default(),
        log_json: args.log_format == LogFormat::Json,
        strict_signatures: args.strict_signatures,
        max_connections: args.max_connections,
        flow_retention: palisade_server::actions::flows::FlowRetention {
            max_age: args.flow_retention,
            max_records: args.flow_records_max,
        },
        history_limit: args.history_limit,
    };
    palisade_server::run_blocking(config).context("palisade serve")?;
    Ok(ExitCode::SUCCESS)
}

/// Account management on the data directory's database.
pub fn account(cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AccountCommand::Create(a) => {
            let store = open_store(a.store, &a.data_dir)?;
            let acc = store
                .create_account(&a.name)
                .with_context(|| format!("creating account {:?}", a.name))?;
            match a.output {
                Output::Json => println!("{}", palisade_server::credentials_json(&acc)),
                Output::Text => {
                    println!("AccountId: {}", acc.id);
                    println!("SecretId:  {}", acc.secret_id);
                    println!("SecretKey: {}", acc.secret_key);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountCommand::InstanceKey(a) => {
            let store = open_store(a.store, &a.data_dir)?;
            let owner = store
                .account_by_name(&a.account)?
                .with_context(|| format!("no account named {:?}", a.account))?;
            let key = store
                .create_instance_key(&owner.id, &a.instance)
                .with_context(|| {
                    format!(
                        "instance {:?} is not registered in account {:?}",
                        a.instance, a.account
                    )
                })?;
            match a.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "AccountId": key.account_id,
                        "InstanceId": key.instance_id,
                        "SecretId": key.secret_id,
                        "SecretKey": key.secret_key,
                    })
                ),
                Output::Text => {
                    println!("AccountId:  {}", key.account_id);
                    println!("InstanceId: {}", key.instance_id);
                    println!("SecretId:   {}", key.secret_id);
                    println!("SecretKey:  {}", key.secret_key);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AccountCommand::List(a) => {
            let store = open_store(a.store, &a.data_dir)?;
            let accounts = store.accounts()?;
            match a.output {
                Output::Json => {
                    let list: Vec<_> = accounts
                        .iter()
                        .map(|a| {
                            serde_json::json!({
                                "AccountId": a.id,
                                "Name": a.name,
                                "SecretId": a.secret_id,
                                "CreatedTime": a.created_time,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    for a in accounts {
                        println!("{}\t{}\t{}\t{}", a.name, a.id, a.secret_id, a.created_time);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
