//! Shared by the hostile-input and security tests: a real server (the
//! production router on a real socket on 127.0.0.1, in this process), a
//! minimal raw HTTP/1.1 client that can send anything (invalid UTF-8,
//! wrong lengths, tampered headers), TC3 signing, a world of resources of
//! every kind per account, and a byte-for-byte snapshot of the database.
//!
//! Why the database comparison is sound: the store is one SQLite
//! connection in WAL mode, kept open for the whole test. A committed
//! transaction always appends frames to `palisade.db-wal` (and a
//! checkpoint, which only follows a commit, rewrites the WAL header with a
//! new salt), so any commit changes the bytes of `palisade.db` or
//! `palisade.db-wal`; reads and rolled-back transactions change neither
//! (`-shm`, the shared-memory index, does change on reads and is not part
//! of the database). The world is seeded through a first connection that
//! is closed before the server starts, which checkpoints everything into
//! `palisade.db` and leaves the WAL empty, so the snapshot is small.
#![allow(dead_code)] // each test file uses part of this module

use palisade_model::Limits;
use palisade_server::actions::{self, Ctx};
use palisade_server::http::{router, AppState, PALISADE_VERSION, TENCENT_VERSION};
use palisade_server::params::Params;
use palisade_server::tc3;
use palisade_store::{Account, SqliteStore, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

/// The valid request of every action, with `$SG1`-style placeholders for
/// the ids of a world's resources (also the fuzz seeds of `actions`).
pub const VALID_REQUESTS: &str = include_str!("../data/valid-requests.json");

/// Raw request headers.
pub type Headers = Vec<(&'static str, Vec<u8>)>;

/// One account's resources: placeholder -> id.
pub type Ids = BTreeMap<String, String>;

/// A running server and its data directory.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    pub dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Seeds one world per `(account name, instance suffix)` through a first
    /// connection, closes it, then serves the same directory.
    pub fn start(accounts: &[(&str, &str)]) -> (Server, Vec<(Account, Ids)>) {
        Self::start_with(accounts, false)
    }

    /// [`Server::start`], with strict signatures when `strict`.
    pub fn start_with(accounts: &[(&str, &str)], strict: bool) -> (Server, Vec<(Account, Ids)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worlds = Vec::new();
        {
            let store = SqliteStore::open_dir(dir.path()).expect("store");
            for (name, suffix) in accounts {
                let account = store.create_account(name).expect("account");
                let ids = seed(&store, &account.id, suffix);
                worlds.push((account, ids));
            }
        }
        let store = Arc::new(SqliteStore::open_dir(dir.path()).expect("reopen"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut state = AppState::new(store.clone(), Limits::default());
        if strict {
            state = state.strict_signatures();
        }
        let app = router(Arc::new(state));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        // The production accept loop (connection cap, timeouts).
        runtime.spawn(palisade_server::serve::serve(
            listener,
            app,
            None,
            palisade_server::serve::DEFAULT_MAX_CONNECTIONS,
            std::future::pending(),
        ));
        let server = Server {
            addr,
            store,
            dir,
            _runtime: runtime,
        };
        (server, worlds)
    }

    /// The `Host` header value clients send.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The database files' bytes (see the module doc).
    pub fn db_bytes(&self) -> DbBytes {
        let read = |suffix: &str| {
            std::fs::read(self.dir.path().join(format!("palisade.db{suffix}"))).unwrap_or_default()
        };
        DbBytes {
            main: read(""),
            wal: read("-wal"),
        }
    }

    /// Sends raw headers and body, returns the parsed answer.
    pub fn raw(&self, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Answer {
        self.try_raw(headers, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::raw`], with no answer within 120 s an error.
    pub fn try_raw(&self, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Result<Answer, String> {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        // A bound, not a timing assertion: a hung server fails the test
        // instead of hanging it.
        s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .expect("timeout");
        let mut req = Vec::new();
        req.extend_from_slice(b"POST / HTTP/1.1\r\n");
        for (k, v) in headers {
            req.extend_from_slice(k.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        s.write_all(&req).expect("write headers");
        // The server may answer (and close) before reading a refused body.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        if let Err(e) = s.read_to_end(&mut out) {
            // A server that answered without reading all of a refused body
            // may reset the connection after its answer.
            let answered = out.windows(4).any(|w| w == b"\r\n\r\n");
            if !(answered && e.kind() == std::io::ErrorKind::ConnectionReset) {
                return Err(format!("no answer within 120 s ({e})"));
            }
        }
        Ok(Answer::parse(&out))
    }

    /// Signs `body` for `action` as `secret_id`/`secret_key` at `ts` and
    /// returns the headers (Content-Type, Host, X-TC-*, Authorization).
    pub fn signed_headers(
        &self,
        cred: (&str, &str),
        action: &str,
        body: &[u8],
        ts: i64,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let service = service_of(action);
        let host = self.host();
        let auth = tc3::authorization(cred.0, cred.1, service, "application/json", &host, body, ts);
        vec![
            ("Host", host.into_bytes()),
            ("Content-Type", b"application/json".to_vec()),
            ("X-TC-Action", action.as_bytes().to_vec()),
            ("X-TC-Version", version_of(service).as_bytes().to_vec()),
            ("X-TC-Timestamp", ts.to_string().into_bytes()),
            ("X-TC-Region", b"ap-guangzhou".to_vec()),
            ("Authorization", auth.into_bytes()),
        ]
    }

    /// A correctly signed call with a raw body.
    pub fn call_raw(&self, cred: (&str, &str), action: &str, body: &[u8]) -> Answer {
        self.try_call_raw(cred, action, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::call_raw`], with no answer an error.
    pub fn try_call_raw(
        &self,
        cred: (&str, &str),
        action: &str,
        body: &[u8],
    ) -> Result<Answer, String> {
        let headers = self.signed_headers(cred, action, body, now());
        self.try_raw(&headers, body)
    }

    /// A correctly signed call.
    pub fn call(&self, cred: (&str, &str), action: &str, body: &Value) -> Answer {
        self.call_raw(cred, action, body.to_string().as_bytes())
    }
}

/// TC3 with `SignedHeaders=content-type;host;x-tc-action` for `service`,
/// the action's value lower-cased as Tencent's documentation describes.
pub fn sign_with_action(
    c: (&str, &str),
    host: &str,
    service: &str,
    action: &str,
    body: &[u8],
    ts: i64,
) -> String {
    use palisade_server::tc3;
    let date = tc3::date_of(ts).expect("a timestamp with a date");
    let signed = "content-type;host;x-tc-action";
    let headers = format!(
        "content-type:application/json\nhost:{host}\nx-tc-action:{}\n",
        action.to_ascii_lowercase()
    );
    let sig = palisade_protocol::tc3::signature(
        "POST",
        headers.as_bytes(),
        signed,
        body,
        ts,
        &date,
        service,
        c.1,
    );
    format!(
        "TC3-HMAC-SHA256 Credential={}/{date}/{service}/tc3_request, SignedHeaders={signed}, Signature={sig}",
        c.0
    )
}

/// The database's bytes.
#[derive(PartialEq, Eq)]
pub struct DbBytes {
    pub main: Vec<u8>,
    pub wal: Vec<u8>,
}

impl std::fmt::Debug for DbBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "db {} bytes, wal {} bytes",
            self.main.len(),
            self.wal.len()
        )
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub json: Option<Value>,
    pub raw_body: Vec<u8>,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Answer {
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..split]).to_string();
        let body = bytes[split + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let mut content_type = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-type") {
                    content_type = Some(v.trim().to_string());
                }
                assert!(
                    !(k.eq_ignore_ascii_case("transfer-encoding")),
                    "chunked answer: {head}"
                );
            }
        }
        Answer {
            status,
            content_type,
            json: serde_json::from_slice(&body).ok(),
            raw_body: body,
        }
    }

    /// `Response.Error.Code`, when the answer is a Tencent error.
    pub fn code(&self) -> Option<&str> {
        self.json.as_ref()?["Response"]["Error"]["Code"].as_str()
    }

    /// `Response`.
    pub fn response(&self) -> &Value {
        self.json.as_ref().map_or(&Value::Null, |j| &j["Response"])
    }

    /// Whether this is a Tencent-shaped answer (HTTP 200, exactly
    /// `application/json`, `{"Response": {..., "RequestId"}}`, and an
    /// error, if any, with a well-formed code and a message).
    pub fn envelope(&self, what: &str) -> Result<(), String> {
        if self.status != 200 {
            return Err(format!("{what}: HTTP {}", self.status));
        }
        if self.content_type.as_deref() != Some("application/json") {
            return Err(format!("{what}: Content-Type {:?}", self.content_type));
        }
        let r = self.response();
        if r["RequestId"].as_str().is_none_or(str::is_empty) {
            return Err(format!(
                "{what}: no RequestId in {}",
                truncate(&String::from_utf8_lossy(&self.raw_body))
            ));
        }
        if let Some(e) = r.get("Error") {
            let code = e["Code"].as_str().unwrap_or_default();
            if !well_formed_code(code) {
                return Err(format!("{what}: code {code:?}"));
            }
            if e["Message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("{what}: no message"));
            }
        }
        Ok(())
    }

    /// The code of a Tencent error other than `InternalError`.
    pub fn error(&self, what: &str) -> Result<String, String> {
        self.envelope(what)?;
        let Some(code) = self.code() else {
            return Err(format!(
                "{what}: expected an error, got {}",
                truncate(&String::from_utf8_lossy(&self.raw_body))
            ));
        };
        if code == "InternalError" {
            return Err(format!(
                "{what}: InternalError: {}",
                self.response()["Error"]["Message"]
            ));
        }
        Ok(code.to_string())
    }

    /// Panics unless [`Answer::envelope`] holds.
    pub fn assert_envelope(&self, what: &str) {
        self.envelope(what).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Panics unless [`Answer::error`] holds; returns the code.
    pub fn assert_error(&self, what: &str) -> String {
        self.error(what).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Panics unless this is a success.
    pub fn assert_ok(&self, what: &str) -> &Value {
        self.assert_envelope(what);
        assert!(
            self.code().is_none(),
            "{what}: {}",
            truncate(&String::from_utf8_lossy(&self.raw_body))
        );
        self.response()
    }
}

/// At most 300 characters of `s`, for messages.
pub fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// `Word` or `Word.Word...`.
pub fn well_formed_code(code: &str) -> bool {
    !code.is_empty()
        && code.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && part.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The service of an action.
pub fn service_of(action: &str) -> &'static str {
    actions::ACTIONS
        .iter()
        .find(|(_, a)| *a == action)
        .map_or("vpc", |(s, _)| *s)
}

/// The API version of a service.
pub fn version_of(service: &str) -> &'static str {
    if service == "palisade" {
        PALISADE_VERSION
    } else {
        TENCENT_VERSION
    }
}

/// The valid requests, by action, placeholders replaced by `ids`.
pub fn valid_requests(ids: &Ids) -> BTreeMap<String, Value> {
    let mut text = VALID_REQUESTS.to_string();
    // Longest placeholders first: `$IPMG` before `$IPM`.
    let mut names: Vec<&String> = ids.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        text = text.replace(name.as_str(), &ids[name]);
    }
    let all: BTreeMap<String, Value> = serde_json::from_str(&text).expect("valid-requests.json");
    for (_, action) in actions::ACTIONS {
        assert!(
            all.contains_key(*action),
            "valid-requests.json lacks {action}"
        );
    }
    all
}

/// Creates one resource of every kind in `account` (instance and cluster
/// ids end in `suffix`, 4 characters, since those ids are chosen by the
/// client) and returns their ids by placeholder.
pub fn seed(store: &SqliteStore, account: &str, suffix: &str) -> Ids {
    let limits = Limits::default();
    let call = |service: &str, action: &str, body: Value| -> Value {
        let params = Params::from_body(body.to_string().as_bytes()).expect("params");
        let ctx = Ctx {
            store,
            account,
            limits: &limits,
            rulesets: &palisade_server::actions::RulesetCache::default(),
            agent_of: None,
        };
        match actions::dispatch(&ctx, service, action, &params) {
            Ok(m) => Value::Object(m),
            Err(e) => panic!("seeding {action} {body}: {e}"),
        }
    };
    let id = |v: &Value| v.as_str().expect("id").to_string();
    let ipm = id(&call(
        "vpc",
        "CreateAddressTemplate",
        json!({
            "AddressTemplateName": "a", "Addresses": ["10.0.0.1", "10.1.0.0/16", "10.2.0.1-10.2.0.9"]
        }),
    )["AddressTemplate"]["AddressTemplateId"]);
    let ipmg = id(&call(
        "vpc",
        "CreateAddressTemplateGroup",
        json!({
            "AddressTemplateGroupName": "ag", "AddressTemplateIds": [ipm]
        }),
    )["AddressTemplateGroup"]["AddressTemplateGroupId"]);
    let ppm = id(&call(
        "vpc",
        "CreateServiceTemplate",
        json!({
            "ServiceTemplateName": "s", "Services": ["tcp:80", "udp:53,5353", "icmp"]
        }),
    )["ServiceTemplate"]["ServiceTemplateId"]);
    let ppmg = id(&call(
        "vpc",
        "CreateServiceTemplateGroup",
        json!({
            "ServiceTemplateGroupName": "sg", "ServiceTemplateIds": [ppm]
        }),
    )["ServiceTemplateGroup"]["ServiceTemplateGroupId"]);
    let sg2 = id(&call(
        "vpc",
        "CreateSecurityGroup",
        json!({
            "GroupName": "peer", "GroupDescription": "d"
        }),
    )["SecurityGroup"]["SecurityGroupId"]);
    let sg1 = id(&call(
        "vpc",
        "CreateSecurityGroupWithPolicies",
        json!({
            "GroupName": "web", "GroupDescription": "d", "Tags": [{"Key": "env", "Value": "prod"}],
            "SecurityGroupPolicySet": {
                "Ingress": [
                    {"Protocol": "TCP", "Port": "22,80-90", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"},
                    {"Protocol": "UDP", "Port": "ALL", "Ipv6CidrBlock": "fd00::/8", "Action": "DROP"},
                    {"Protocol": "ALL", "SecurityGroupId": sg2, "Action": "ACCEPT"},
                    {"ServiceTemplate": {"ServiceId": ppm}, "AddressTemplate": {"AddressId": ipm}, "Action": "ACCEPT"},
                    {"ServiceTemplate": {"ServiceGroupId": ppmg}, "AddressTemplate": {"AddressGroupId": ipmg}, "Action": "DROP"}
                ],
                "Egress": [{"Protocol": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
            }
        }),
    )["SecurityGroup"]["SecurityGroupId"]);
    let ins = format!("ins-{suffix}0001");
    let ins2 = format!("ins-{suffix}0002");
    let cls = format!("cls-{suffix}0001");
    call(
        "palisade",
        "RegisterInstances",
        json!({"Instances": [
            {"InstanceId": ins, "InstanceName": "n1", "PrivateIpAddresses": ["10.0.0.5"]},
            {"InstanceId": ins2, "InstanceName": "n2", "PrivateIpAddresses": ["10.0.0.7"]}
        ]}),
    );
    call(
        "cvm",
        "AssociateSecurityGroups",
        json!({"SecurityGroupIds": [sg1], "InstanceIds": [ins, ins2]}),
    );
    call(
        "palisade",
        "ReportInstanceStatus",
        json!({"InstanceId": ins, "AppliedRevision": 1}),
    );
    call(
        "palisade",
        "RegisterCluster",
        json!({
            "ClusterId": cls, "ClusterCidr": "10.0.0.0/16", "ContainerCidr": "172.16.0.0/16", "Nodes": [ins],
            "NodeSecurityGroupIds": [sg1]
        }),
    );
    let jtk = id(&call("palisade", "CreateJoinToken", json!({ "ClusterId": cls }))["JoinTokenId"]);
    // A snapshot policy with $SG1 attached (its file: $SG1's version at
    // attach) and a pending commit-confirmed change.
    let ssp = id(&call(
        "vpc",
        "CreateSnapshotPolicies",
        json!({"SnapshotPolicies": [{
            "SnapshotPolicyName": "p", "BackupType": "operate", "KeepTime": 30,
            "CreateNewCos": false, "CosRegion": "ap-guangzhou", "CosBucket": "b"}]}),
    )["SnapshotPolicies"][0]["SnapshotPolicyId"]);
    call(
        "vpc",
        "AttachSnapshotInstances",
        json!({"SnapshotPolicyId": ssp, "Instances": [
            {"InstanceId": sg1, "InstanceType": "securitygroup", "InstanceRegion": "ap-guangzhou"}]}),
    );
    let ssfile = id(&call(
        "vpc",
        "DescribeSnapshotFiles",
        json!({"BusinessType": "securitygroup", "InstanceId": sg1,
            "StartDate": "2000-01-01 00:00:00", "EndDate": "2999-12-31 23:59:59"}),
    )["SnapshotFileSet"][0]["SnapshotFileId"]);
    let chg = id(&call(
        "palisade",
        "StartConfirmedChange",
        json!({"ConfirmWithin": 86400}),
    )["ChangeId"]);
    [
        ("$SSFILE", ssfile),
        ("$SSP", ssp),
        ("$CHG", chg),
        ("$SG1", sg1),
        ("$SG2", sg2),
        ("$IPMG", ipmg),
        ("$IPM", ipm),
        ("$PPMG", ppmg),
        ("$PPM", ppm),
        ("$INS2", ins2),
        ("$INS", ins),
        ("$CLS", cls),
        ("$JTK", jtk),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
