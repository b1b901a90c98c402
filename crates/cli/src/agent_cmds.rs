//! `palisade agent` (the per-node data plane, DESIGN.md sections 3 and 4)
//! and `palisade nft compile` (the same compiler, offline on a fleet file,
//! so anyone can read and `nft -c -f` a node's program without a server).
//! The work happens in the `palisade-agent` crate; this module parses the
//! options and prints.

use anyhow::Context as _;
use palisade_agent::agent::{Agent, AgentConfig, Event};
use palisade_agent::client::HttpControlPlane;
use palisade_agent::compile::FlowLogOptions;
use palisade_agent::compile::Mode;
use palisade_agent::control::ControlUid;
use palisade_agent::failover::Failover;
use palisade_agent::flowlog::{RecorderConfig, RecorderStats};
use palisade_agent::identity;
use palisade_agent::metrics::AgentMetrics;
use palisade_agent::{compile, CompileOptions, Dataplane, DryRunDataplane, MarkBits, NftDataplane};
use palisade_model::{Fleet, InstanceId};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `palisade agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The server, `http://HOST:PORT` or `https://HOST:PORT`; repeat or
    /// separate with commas to name several servers of one database (the
    /// agent fails over in turn).
    #[arg(long, env = "PALISADE_SERVER", required = true, value_delimiter = ',')]
    server: Vec<String>,
    /// Credentials JSON (`{"SecretId", "SecretKey"}`, mode 0600), as every
    /// other command takes; default: the TENCENTCLOUD_SECRET_ID and
    /// TENCENTCLOUD_SECRET_KEY variables.
    #[arg(long, conflicts_with_all = ["secret_id", "secret_key"])]
    credentials: Option<PathBuf>,
    /// SecretId of the credential (older spelling; prefer --credentials or
    /// TENCENTCLOUD_SECRET_ID).
    #[arg(long, env = "PALISADE_SECRET_ID", requires = "secret_key")]
    secret_id: Option<String>,
    /// SecretKey of the credential (older spelling; never put a key on a
    /// command line: use --credentials or TENCENTCLOUD_SECRET_KEY).
    #[arg(
        long,
        env = "PALISADE_SECRET_KEY",
        hide_env_values = true,
        requires = "secret_id"
    )]
    secret_key: Option<String>,
    /// The instance this node is (`ins-...`). With --join-token: the id to
    /// join as (default: derived from /etc/machine-id).
    #[arg(long, env = "PALISADE_INSTANCE_ID", required_unless_present_any = ["join_token", "leave"])]
    instance_id: Option<String>,
    /// Join the cluster of this join token (a file holding
    /// `jtk-xxxxxxxx.SECRET`) when the state directory holds no identity;
    /// afterwards the node uses only its own key, kept there.
    #[arg(long, env = "PALISADE_JOIN_TOKEN_FILE", value_name = "FILE", conflicts_with_all = ["credentials", "secret_id", "secret_key"])]
    join_token: Option<PathBuf>,
    /// Where a node that joined keeps its identity (identity.json, 0600).
    #[arg(long, env = "PALISADE_STATE_DIR", default_value = "/var/lib/palisade")]
    state_dir: PathBuf,
    /// Deregister the node that joined (its identity in --state-dir) and
    /// remove its key, then exit. The kernel keeps its rules.
    #[arg(long, conflicts_with_all = ["once", "dry_run"])]
    leave: bool,
    /// PEM file of the CA(s) to trust for an `https://` server with a
    /// private CA (default: the public web roots).
    #[arg(long, env = "PALISADE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// The node's uplink interface(s); repeat or separate with commas.
    #[arg(long, required_unless_present = "leave", value_delimiter = ',')]
    uplink: Vec<String>,
    /// Apply inside this network namespace (`ip netns exec NAME`).
    #[arg(long)]
    netns: Option<String>,
    /// Private IPs to register the instance with if the server lacks it
    /// (default: the uplink's global addresses).
    #[arg(long, value_delimiter = ',')]
    private_ip: Vec<String>,
    /// Sync once and exit (0 when the kernel holds the server's revision).
    #[arg(long)]
    once: bool,
    /// Print the nft programs instead of loading them.
    #[arg(long)]
    dry_run: bool,
    /// Compile each rule's decided set into verdict maps instead of a linear chain.
    #[arg(long)]
    maps: bool,
    /// Milliseconds between syncs (at most 1000 keeps the 2 s restore promise).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// The most nft rules plus set elements a ruleset may compile to; a
    /// larger one is refused (counted, not built) and the loaded rules stay.
    #[arg(long, default_value_t = palisade_agent::compile::DEFAULT_MAX_ELEMENTS)]
    max_elements: usize,
    /// The longest server answer read, in bytes; a longer one is refused
    /// unread and the loaded rules stay.
    #[arg(long, default_value_t = palisade_agent::client::DEFAULT_MAX_RESPONSE_BYTES)]
    max_response_bytes: u64,
    /// The `ct mark` bits Palisade owns, `INGRESS_MASK,EGRESS_MASK` (each
    /// a run of contiguous bits, disjoint); every other bit is left to
    /// other software (docs/agent.md).
    #[arg(
        long,
        env = "PALISADE_CT_MARK_BITS",
        default_value = "0x00000fff,0x00fff000"
    )]
    ct_mark_bits: MarkBits,
    /// Record flows: log every decision (within --flow-log-rate) and ship
    /// aggregated records to the server (`palisade flows`); audit mode's
    /// would-be drops are recorded only with it.
    #[arg(long, env = "PALISADE_FLOW_LOG")]
    flow_log: bool,
    /// The NFLOG group decisions are logged to (one reader per group and
    /// network namespace).
    #[arg(long, default_value_t = palisade_agent::flowlog::DEFAULT_GROUP)]
    flow_log_group: u16,
    /// Decisions logged per second on the node, at most; the rest are
    /// counted as suppressed.
    #[arg(long, default_value_t = palisade_agent::compile::DEFAULT_FLOW_LOG_RATE)]
    flow_log_rate: u32,
    /// Seconds over which identical decisions become one record before
    /// they are shipped.
    #[arg(long, default_value_t = 60)]
    flow_interval_secs: u64,
    /// A flow the node always allows, before any group rule:
    /// `[ingress:|egress:]SERVICE[@CIDR]`, e.g. `tcp:22@198.51.100.0/24`
    /// (SSH from a management network); repeat for more (at most 16).
    /// Default: none (docs/agent.md, "Failsafe rules").
    #[arg(long, env = "PALISADE_FAILSAFE", value_delimiter = ' ')]
    failsafe: Vec<String>,
    /// The uid the agent opens its connections to the servers as: the
    /// node's egress rules never drop packets of sockets it owns
    /// (docs/agent.md, "The control plane is exempt"). No account may have it.
    #[arg(long, env = "PALISADE_CONTROL_UID", default_value_t = palisade_agent::control::DEFAULT_CONTROL_UID)]
    control_uid: u32,
    /// Serve the agent's metrics (flow records seen, suppressed, shipped;
    /// applied revision, failed loads) in the Prometheus text format at
    /// `http://ADDR/metrics`, e.g. `127.0.0.1:9469`. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// `palisade nft ...`.
#[derive(clap::Subcommand)]
pub enum NftCommand {
    /// Print the nft program an instance of a fleet file gets.
    Compile(CompileArgs),
}

/// `palisade nft compile`.
#[derive(clap::Args)]
pub struct CompileArgs {
    /// The fleet file (YAML or JSON).
    #[arg(long)]
    fleet: PathBuf,
    /// The instance (`ins-...`).
    #[arg(long)]
    instance: String,
    /// The node's uplink interface(s); repeat or separate with commas.
    #[arg(long, required = true, value_delimiter = ',')]
    uplink: Vec<String>,
    /// Compile each rule's decided set into verdict maps instead of a linear chain.
    #[arg(long)]
    maps: bool,
    /// The `ct mark` bits Palisade owns (as `palisade agent --ct-mark-bits`).
    #[arg(long, default_value = "0x00000fff,0x00fff000")]
    ct_mark_bits: MarkBits,
    /// Log decisions for flow records (as `palisade agent --flow-log`).
    #[arg(long)]
    flow_log: bool,
    /// As `palisade agent --flow-log-group`.
    #[arg(long, default_value_t = palisade_agent::flowlog::DEFAULT_GROUP)]
    flow_log_group: u16,
    /// As `palisade agent --flow-log-rate`.
    #[arg(long, default_value_t = palisade_agent::compile::DEFAULT_FLOW_LOG_RATE)]
    flow_log_rate: u32,
    /// Compile audit mode (as an instance in `AUDIT`).
    #[arg(long)]
    audit: bool,
    /// As `palisade agent --failsafe` (repeatable).
    #[arg(long, value_delimiter = ' ')]
    failsafe: Vec<String>,
    /// As `palisade agent --control-uid`.
    #[arg(long, default_value_t = palisade_agent::control::DEFAULT_CONTROL_UID)]
    control_uid: u32,
}

/// Runs `palisade agent`.
pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let failsafe = palisade_policy::failsafe::parse_list("--failsafe", &args.failsafe)?;
    let control_uid = ControlUid::new(args.control_uid);
    if !args.dry_run {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        palisade_agent::control::check_unused(args.control_uid, &passwd)
            .map_err(anyhow::Error::msg)?;
    }
    let private_ips = if args.private_ip.is_empty() {
        // Only needed to register an instance the server lacks: a missing
        // uplink is not fatal here (it may appear later).
        let mut ips = Vec::new();
        for u in &args.uplink {
            match palisade_agent::host::uplink_addresses(args.netns.as_deref(), u) {
                Ok(found) => ips.extend(found),
                Err(e) => eprintln!("agent: cannot read the addresses of --uplink {u}: {e}"),
            }
        }
        ips
    } else {
        args.private_ip.clone()
    };
    let timeout = Duration::from_secs(10);
    if args.leave {
        return leave(&args);
    }
    let (instance_id, credentials) = if let Some(token) = &args.join_token {
        let id = joined(&args, token, &private_ips)?;
        let credentials = palisade_client::Credentials {
            secret_id: id.secret_id,
            secret_key: id.secret_key,
        };
        (id.instance_id, credentials)
    } else {
        // The older --secret-id/--secret-key (or PALISADE_SECRET_*) first, then
        // --credentials FILE, then TENCENTCLOUD_SECRET_ID/KEY: one way for
        // every command (palisade_client::Credentials::load).
        let credentials = match (&args.secret_id, &args.secret_key) {
            (Some(id), Some(key)) => palisade_client::Credentials {
                secret_id: id.clone(),
                secret_key: key.clone(),
            },
            _ => palisade_client::Credentials::load(args.credentials.as_deref())?,
        };
        let id = args
            .instance_id
            .clone()
            .context("--instance-id is required without --join-token")?;
        (id, credentials)
    };
    let control = Failover::new(
        args.server
            .iter()
            .map(|s| {
                let c = HttpControlPlane::new(
                    s,
                    &credentials.secret_id,
                    &credentials.secret_key,
                    timeout,
                )?
                .with_max_response_bytes(args.max_response_bytes)
                .with_control_uid(control_uid);
                match &args.ca_cert {
                    Some(ca) => c.with_ca_file(ca, timeout),
                    None => Ok(c),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    );
    let flow_log = FlowLogOptions {
        group: args.flow_log_group,
        rate: args.flow_log_rate,
        burst: args.flow_log_rate,
    };
    let config = AgentConfig {
        instance_id: instance_id.clone(),
        compile: CompileOptions {
            uplinks: args.uplink.clone(),
            mode: mode(args.maps),
            max_elements: args.max_elements,
            marks: args.ct_mark_bits,
            flow_log: args.flow_log.then_some(flow_log),
            audit_log: flow_log,
            failsafe,
            control_uid: Some(args.control_uid),
            ..Default::default()
        },
        private_ips,
        interval: Duration::from_millis(args.interval_ms.clamp(50, 60_000)),
        // A dry run writes nothing anywhere: it loads nothing, so it has
        // nothing to report, and it leaves an unknown instance unknown.
        report: !args.dry_run,
        register: !args.dry_run,
        // What the node holds at its next boot until a server answers:
        // kept by the long-running agent only (docs/agent.md, "At boot").
        boot_state: (!args.dry_run && !args.once).then(|| {
            let netns = args
                .netns
                .as_deref()
                .map(|n| format!("@{n}"))
                .unwrap_or_default();
            args.state_dir
                .join(format!("ruleset-{instance_id}{netns}.json"))
        }),
    };
    let log = Log {
        dry_run: args.dry_run,
    };
    let metrics = Arc::new(AgentMetrics::default());
    if let Some(listen) = args.metrics_listen {
        let bound = palisade_agent::metrics::serve(listen, metrics.clone())?;
        eprintln!("agent: metrics at http://{bound}/metrics");
    }
    if args.dry_run {
        return run(
            Agent::new(DryRunDataplane::new(), control, config),
            args.once,
            log,
            &metrics,
        );
    }
    // The recorder subscribes to every conntrack update of the node: only
    // when asked for (audit mode's would-be drops are counted by the rules'
    // counters either way, and recorded with --flow-log).
    if !args.once && args.flow_log {
        let recorder = RecorderConfig {
            instance: InstanceId::parse_field("--instance-id", &instance_id)?,
            netns: args.netns.clone(),
            group: args.flow_log_group,
            interval: Duration::from_secs(args.flow_interval_secs.clamp(1, 3600)),
            max_entries: 100_000,
        };
        let shippers = args
            .server
            .iter()
            .map(|s| {
                let c = HttpControlPlane::new(
                    s,
                    &credentials.secret_id,
                    &credentials.secret_key,
                    timeout,
                )?
                .with_control_uid(control_uid);
                match &args.ca_cert {
                    Some(ca) => c.with_ca_file(ca, timeout),
                    None => Ok(c),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        spawn_recorder(recorder, shippers, metrics.clone());
    }
    run(
        Agent::new(NftDataplane::new(args.netns.clone()), control, config),
        args.once,
        log,
        &metrics,
    )
}

/// Starts the flow recorder on a thread of its own: it reads the node's
/// decisions for as long as the agent runs and ships records to the first
/// server that takes them. A recorder that cannot start (another program
/// holds the NFLOG group) says so; the agent goes on enforcing.
fn spawn_recorder(
    config: RecorderConfig,
    servers: Vec<HttpControlPlane>,
    metrics: Arc<AgentMetrics>,
) {
    std::thread::spawn(move || {
        let stop = AtomicBool::new(false);
        let instance = config.instance.to_string();
        let ship = |records: &[palisade_model::flow::FlowRecord], suppressed: u64| {
            let params = serde_json::json!({
                "InstanceId": instance,
                "FlowRecords": records,
                "Suppressed": suppressed,
            });
            let mut last = None;
            for s in &servers {
                match s.call("ReportFlowRecords", &params) {
                    Ok(v) => return Ok(v["Stored"].as_u64().unwrap_or(0)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| palisade_agent::AgentError::Netlink("no server".into())))
        };
        let mut reported = RecorderStats::default();
        let revision = &metrics.applied_revision;
        let result = palisade_agent::flowlog::record(&config, revision, &stop, ship, |s| {
            metrics.set_recorder(&s);
            if s.suppressed > reported.suppressed {
                eprintln!(
                    "agent: flow records: {} decisions seen, {} shipped, {} suppressed so far",
                    s.seen, s.shipped, s.suppressed
                );
            }
            reported = s;
        });
        if let Err(e) = result {
            eprintln!("agent: warning: flow records are off: {e}");
        }
    });
}

/// The identity of a node started with `--join-token`: the one stored in
/// `--state-dir`, or a new one from joining with the token (tried on each
/// server in turn until one answers).
fn joined(
    args: &AgentArgs,
    token: &std::path::Path,
    ips: &[String],
) -> anyhow::Result<identity::Identity> {
    if let Some(id) = identity::load(&args.state_dir)? {
        if let Some(asked) = args.instance_id.as_ref().filter(|i| **i != id.instance_id) {
            anyhow::bail!(
                "--instance-id {asked}: this node joined as {} (its identity is in {}); \
                 run `palisade agent --leave` first to join again",
                id.instance_id,
                identity::path(&args.state_dir).display()
            );
        }
        eprintln!(
            "agent: instance {} of cluster {} (identity in {})",
            id.instance_id,
            id.cluster_id,
            args.state_dir.display()
        );
        return Ok(id);
    }
    if args.dry_run {
        anyhow::bail!(
            "{}: no identity, and a dry run does not join (joining registers the node)",
            identity::path(&args.state_dir).display()
        );
    }
    let text = std::fs::read_to_string(token)
        .with_context(|| format!("reading the join token {}", token.display()))?;
    let instance = match &args.instance_id {
        Some(i) => InstanceId::parse_field("--instance-id", i)?.to_string(),
        None => identity::machine_instance_id()?,
    };
    if ips.is_empty() {
        anyhow::bail!(
            "--uplink {}: no address to join with (give --private-ip)",
            args.uplink.join(",")
        );
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut last = None;
    for server in &args.server {
        let client = palisade_client::Client::anonymous(server)?;
        let client = match &args.ca_cert {
            Some(ca) => client.with_ca_file(ca)?,
            None => client,
        };
        // As the control uid, like every call to the servers: a node that
        // joins again after a reboot may hold its last rules already.
        let (joined, _) = ControlUid::new(args.control_uid)
            .run(|| identity::join(&client, &text, &instance, name.trim(), ips));
        match joined {
            Ok(id) => {
                identity::save(&args.state_dir, &id)?;
                eprintln!(
                    "agent: joined cluster {} as instance {} (identity kept in {})",
                    id.cluster_id,
                    id.instance_id,
                    identity::path(&args.state_dir).display()
                );
                return Ok(id);
            }
            // The server refused: another server of the same database
            // would refuse alike.
            Err(e @ palisade_agent::AgentError::Api { .. }) => {
                return Err(anyhow::Error::new(e).context("joining the cluster"))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || anyhow::anyhow!("no --server to join"),
        |e| anyhow::Error::new(e).context("joining the cluster"),
    ))
}

/// `palisade agent --leave`.
fn leave(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let Some(id) = identity::load(&args.state_dir)? else {
        anyhow::bail!(
            "{}: no identity; this node did not join with a token (nothing to leave)",
            identity::path(&args.state_dir).display()
        );
    };
    let credentials = palisade_client::Credentials {
        secret_id: id.secret_id.clone(),
        secret_key: id.secret_key.clone(),
    };
    let mut last = None;
    for server in &args.server {
        let client = palisade_client::Client::new(server, credentials.clone())?;
        let client = match &args.ca_cert {
            Some(ca) => client.with_ca_file(ca)?,
            None => client,
        };
        let (left, _) = ControlUid::new(args.control_uid).run(|| identity::leave(&client, &id));
        match left {
            Ok(()) => {
                last = None;
                break;
            }
            // Keys die with their instance: an unknown key means the
            // instance was already deregistered (pruned, say).
            Err(e) if e.api_code() == Some("AuthFailure.SecretIdNotFound") => {
                eprintln!(
                    "agent: the server no longer knows this node's key: instance {} was already deregistered",
                    id.instance_id
                );
                last = None;
                break;
            }
            Err(e @ palisade_agent::AgentError::Api { .. }) => {
                last = Some(e);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(anyhow::Error::new(e).context("leaving the cluster (the identity is kept)"));
    }
    identity::remove(&args.state_dir)?;
    eprintln!(
        "agent: instance {} left cluster {}; its key is removed",
        id.instance_id, id.cluster_id
    );
    Ok(ExitCode::SUCCESS)
}

/// The exit code of `palisade agent --once` when the server refused the
/// agent's key (`AuthFailure.*`): distinct from 2 (the server could not be
/// reached, or the rules could not be loaded), so a script or a service
/// manager can tell a key to fix from an outage to wait out.
pub const KEY_REFUSED: u8 = 3;

fn run<D: Dataplane>(
    mut agent: Agent<D, Failover<HttpControlPlane>>,
    once: bool,
    log: Log,
    metrics: &AgentMetrics,
) -> anyhow::Result<ExitCode> {
    if once {
        let events = agent.step();
        let mut failed = false;
        for e in &events {
            failed |= matches!(
                e,
                Event::ServerUnavailable(_)
                    | Event::KeyRefused(_)
                    | Event::NotRegistered(_)
                    | Event::DataplaneFailed(_)
                    | Event::Rejected(_)
            );
            log.event(e);
        }
        if events.iter().any(|e| matches!(e, Event::KeyRefused(_))) {
            return Ok(ExitCode::from(KEY_REFUSED));
        }
        return Ok(if failed || agent.applied_revision().is_none() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    if !log.dry_run {
        for e in agent.boot() {
            log.event(&e);
        }
    }
    // Runs until killed; the kernel keeps the rules after that (fail-static).
    // A failure repeated every step is logged once, until something else happens.
    let stop = AtomicBool::new(false);
    let mut last = String::new();
    agent.run(&stop, |e| {
        if let Event::Replaced { revision: r }
        | Event::Updated { revision: r }
        | Event::Restored { revision: r } = e
        {
            metrics.applied_revision.store(*r, Ordering::Relaxed);
        }
        if let Event::DataplaneFailed(_) = e {
            metrics.apply_errors.fetch_add(1, Ordering::Relaxed);
        }
        let failure = matches!(
            e,
            Event::ServerUnavailable(_)
                | Event::KeyRefused(_)
                | Event::NotRegistered(_)
                | Event::DataplaneFailed(_)
                | Event::Rejected(_)
        );
        let text = format!("{e:?}");
        if !failure || text != last {
            log.event(e);
        }
        last = if failure { text } else { String::new() };
    });
    Ok(ExitCode::SUCCESS)
}

/// How events are printed: a dry run says what it would load.
#[derive(Clone, Copy)]
struct Log {
    dry_run: bool,
}

impl Log {
    fn event(self, e: &Event) {
        let load = if self.dry_run { "would load" } else { "loaded" };
        match e {
            Event::Registered => eprintln!("agent: registered the instance with the server"),
            Event::Replaced { revision } => eprintln!("agent: {load} revision {revision}"),
            Event::Updated { revision } => {
                eprintln!("agent: {load} revision {revision} (set elements only)")
            }
            Event::Restored { revision } if self.dry_run => {
                eprintln!("agent: would load revision {revision} (restoring the table)")
            }
            Event::Restored { revision } => eprintln!(
                "agent: table inet palisade was missing or edited; restored revision {revision}"
            ),
            Event::ServerUnavailable(m) => {
                eprintln!("agent: warning: server unavailable, keeping the rules: {m}")
            }
            Event::KeyRefused(m) => eprintln!(
                "agent: error: the server refused this agent's key: {m} (check --secret-id and --secret-key; the kernel keeps its rules)"
            ),
            Event::NotRegistered(m) => eprintln!(
                "agent: error: the server does not know this instance, and a dry run does not register it: {m}"
            ),
            Event::DataplaneFailed(m) => eprintln!("agent: loading the rules failed: {m}"),
            Event::Rejected(m) => {
                eprintln!("agent: error: snapshot refused, keeping the rules: {m}")
            }
            Event::BootRestored { revision } => eprintln!(
                "agent: no table at start: loaded the last applied revision {revision} (kept on disk) until a server answers"
            ),
            Event::BootFailsafe(why) => eprintln!(
                "agent: no table at start and no kept ruleset ({why}): loaded the failsafe entries only, everything else on the uplinks is dropped until a server answers"
            ),
            Event::NotKept(m) => {
                eprintln!("agent: warning: the applied rules are not kept for the next boot: {m}")
            }
        }
    }
}

fn mode(maps: bool) -> Mode {
    if maps {
        Mode::Maps
    } else {
        Mode::Linear
    }
}

/// Runs `palisade nft ...`.
pub fn nft(cmd: NftCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NftCommand::Compile(args) => {
            let text = std::fs::read_to_string(&args.fleet)
                .with_context(|| format!("cannot read {}", args.fleet.display()))?;
            let fleet = match Fleet::parse(&text) {
                Ok(f) => f,
                Err(problems) => {
                    for p in problems {
                        eprintln!("{}: {p}", args.fleet.display());
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let id = InstanceId::parse_field("--instance", &args.instance)?;
            let ruleset = palisade_policy::resolve_instance(&fleet, &id)?;
            let log = FlowLogOptions {
                group: args.flow_log_group,
                rate: args.flow_log_rate,
                burst: args.flow_log_rate,
            };
            let compiled = compile(
                &ruleset,
                &CompileOptions {
                    uplinks: args.uplink,
                    mode: mode(args.maps),
                    marks: args.ct_mark_bits,
                    flow_log: args.flow_log.then_some(log),
                    audit_log: log,
                    enforcement: if args.audit {
                        palisade_model::flow::Enforcement::Audit
                    } else {
                        palisade_model::flow::Enforcement::Enforce
                    },
                    failsafe: palisade_policy::failsafe::parse_list("--failsafe", &args.failsafe)?,
                    control_uid: Some(args.control_uid),
                    ..Default::default()
                },
            )?;
            print!("{}", compiled.script());
            Ok(ExitCode::SUCCESS)
        }
    }
}
