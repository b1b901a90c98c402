//! The agent end to end (issue 4): a real `palisade serve` router on
//! 127.0.0.1, real TC3-signed calls, and the real sync loop loading nft in a
//! namespace. Group-reference membership follows binding within 2 s; a
//! table deleted or edited by hand is restored within 2 s; killing the agent
//! or stopping the server leaves the rules in place (fail-static); a
//! restarted agent converges without disturbing allowed connections; the
//! applied revision and counters are visible through the API.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

mod common;

use common::*;
use palisade_agent::agent::{Agent, AgentConfig};
use palisade_agent::client::HttpControlPlane;
use palisade_agent::CompileOptions;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct TestServer {
    url: String,
    creds: (String, String),
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(dir: &Path, port: u16) -> TestServer {
        let store = palisade_store::SqliteStore::open_dir(dir).unwrap();
        palisade_server::ensure_admin(&store, dir).unwrap();
        let creds: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(palisade_server::ADMIN_CREDENTIALS_FILE)).unwrap(),
        )
        .unwrap();
        let state = Arc::new(palisade_server::http::AppState::new(
            Arc::new(store),
            palisade_model::Limits::default(),
        ));
        let app = palisade_server::http::router(state);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        TestServer {
            url,
            creds: (
                creds["SecretId"].as_str().unwrap().to_string(),
                creds["SecretKey"].as_str().unwrap().to_string(),
            ),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn client(&self) -> HttpControlPlane {
        HttpControlPlane::new(
            &self.url,
            &self.creds.0,
            &self.creds.1,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct RunningAgent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunningAgent {
    fn start(lab: &Lab, server: &TestServer, key: &(String, String)) -> RunningAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let dp = lab.dataplane("node");
        let cp =
            HttpControlPlane::new(&server.url, &key.0, &key.1, Duration::from_secs(10)).unwrap();
        let thread = std::thread::spawn(move || {
            let mut agent = Agent::new(
                dp,
                cp,
                AgentConfig {
                    instance_id: "ins-node0001".into(),
                    compile: CompileOptions {
                        uplinks: vec!["eth0".into()],
                        ..Default::default()
                    },
                    private_ips: vec![NODE.into()],
                    // The CLI default: a 1 s long poll per step.
                    interval: Duration::from_millis(1000),
                    report: true,
                    register: true,
                    boot_state: None,
                },
            );
            agent.run(&s, |e| eprintln!("agent: {e:?}"));
        });
        RunningAgent {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the loop as a kill would: nothing runs after it, no cleanup.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn api(c: &HttpControlPlane, service: &str, action: &str, params: Value) -> Value {
    let version = if service == "palisade" {
        "2026-11-01"
    } else {
        "2017-03-12"
    };
    c.call_service(service, version, action, &params)
        .unwrap_or_else(|e| panic!("{action}: {e}"))
}

fn within(limit: Duration, what: &str, f: impl FnMut() -> bool) {
    let t = Instant::now();
    assert!(eventually(limit, f), "{what}: not within {limit:?}");
    eprintln!("{what}: {:?}", t.elapsed());
}

#[test]
fn agent_with_a_real_server_enforces_restores_and_fails_static() {
    let Some(_s) = start("agent_with_a_real_server_enforces_restores_and_fails_static") else {
        return;
    };
    let mut lab = pair();
    let mut peer = lab.prober("peer");
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), 0);
    let c = server.client();

    let peers = api(
        &c,
        "vpc",
        "CreateSecurityGroup",
        json!({"GroupName": "peers", "GroupDescription": "clients"}),
    );
    let peers = peers["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let web = api(
        &c,
        "vpc",
        "CreateSecurityGroupWithPolicies",
        json!({"GroupName": "web", "GroupDescription": "node", "SecurityGroupPolicySet": {
            "Ingress": [
                {"Protocol": "TCP", "Port": "8080", "SecurityGroupId": peers, "Action": "ACCEPT"},
                {"Protocol": "TCP", "Port": "9090", "CidrBlock": "198.18.0.0/24", "Action": "ACCEPT"}
            ],
            "Egress": [{"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
        }}),
    );
    let web = web["SecurityGroup"]["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        &c,
        "palisade",
        "RegisterInstances",
        json!({"Instances": [
            {"InstanceId": "ins-node0001", "PrivateIpAddresses": [NODE]},
            {"InstanceId": "ins-peer0001", "PrivateIpAddresses": ["198.18.0.3"]}
        ]}),
    );
    api(
        &c,
        "cvm",
        "AssociateSecurityGroups",
        json!({"SecurityGroupIds": [web], "InstanceIds": ["ins-node0001"]}),
    );

    // The agent runs with a key scoped to its own instance.
    let key = {
        use palisade_store::Store;
        let store = palisade_store::SqliteStore::open_dir(dir.path()).unwrap();
        let admin = store
            .account_by_name(palisade_server::ADMIN_ACCOUNT)
            .unwrap()
            .unwrap();
        let k = store
            .create_instance_key(&admin.id, "ins-node0001")
            .unwrap();
        (k.secret_id, k.secret_key)
    };
    let scoped =
        HttpControlPlane::new(&server.url, &key.0, &key.1, Duration::from_secs(10)).unwrap();
    assert!(
        scoped
            .call(
                "DescribeInstanceRuleset",
                &json!({"InstanceId": "ins-peer0001"})
            )
            .is_err(),
        "an instance key reads only its own instance"
    );

    let mut agent = RunningAgent::start(&lab, &server, &key);
    within(Duration::from_secs(5), "first sync applied", || {
        peer.cmd(&format!("tcp - {NODE} 9090 0.3")) == "ok"
            && peer.cmd(&format!("tcp - {NODE} 22 0.3")) == "fail"
    });
    assert_eq!(
        peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 0.3")),
        "fail",
        "not yet a member of {peers}"
    );

    // Group reference: binding admits the instance's IP within 2 s; unbinding stops it.
    api(
        &c,
        "cvm",
        "AssociateSecurityGroups",
        json!({"SecurityGroupIds": [peers], "InstanceIds": ["ins-peer0001"]}),
    );
    within(
        Duration::from_secs(2),
        "newly bound instance admitted",
        || peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 0.2")) == "ok",
    );
    assert_eq!(
        peer.cmd(&format!("open ref 198.18.0.3 {NODE} 8080 1.0")),
        "ok"
    );
    api(
        &c,
        "cvm",
        "DisassociateSecurityGroups",
        json!({"SecurityGroupIds": [peers], "InstanceIds": ["ins-peer0001"]}),
    );
    within(
        Duration::from_secs(2),
        "unbound instance no longer admitted",
        || peer.cmd(&format!("tcp 198.18.0.3 {NODE} 8080 0.2")) == "fail",
    );
    assert_eq!(
        peer.cmd("send ref 0.5"),
        "fail",
        "its established connection is cut too"
    );

    // The applied revision and the kernel's counters are visible through the API.
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 9090 1.0")), "ok");
    within(Duration::from_secs(12), "status reported", || {
        let st = api(
            &c,
            "palisade",
            "DescribeInstanceStatus",
            json!({"InstanceIds": ["ins-node0001"]}),
        );
        let s = &st["InstanceStatusSet"][0];
        s["Reported"] == json!(true)
            && s["AppliedRevision"].as_u64().unwrap_or(0) > 0
            && s["Counters"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["SecurityGroupId"] == json!(web)
                        && c["PolicyIndex"] == json!(1)
                        && c["Packets"].as_u64().unwrap_or(0) > 0
                })
            })
    });

    // Deleted by hand: restored within 2 s.
    lab.exec("node", &["nft", "delete", "table", "inet", "palisade"]);
    within(Duration::from_secs(2), "deleted table restored", || {
        lab.dataplane("node").list_json().ok().flatten().is_some()
    });
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 22 0.3")), "fail");
    // Edited by hand: restored within 2 s.
    lab.exec(
        "node",
        &[
            "nft", "insert", "rule", "inet", "palisade", "ingress", "tcp", "dport", "22", "accept",
        ],
    );
    assert_eq!(
        peer.cmd(&format!("tcp - {NODE} 22 0.3")),
        "ok",
        "the hand edit took effect"
    );
    within(Duration::from_secs(2), "edited table restored", || {
        peer.cmd(&format!("tcp - {NODE} 22 0.2")) == "fail"
    });

    // Kill the agent: rules stay, traffic unchanged.
    assert_eq!(peer.cmd(&format!("open k - {NODE} 9090 1.0")), "ok");
    agent.kill();
    assert!(
        lab.dataplane("node").list_json().unwrap().is_some(),
        "fail-static: table kept"
    );
    assert_eq!(peer.cmd("send k 1.0"), "ok");
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 9090 0.5")), "ok");
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 22 0.3")), "fail");

    // A restarted agent converges without disturbing the allowed connection.
    let mut agent = RunningAgent::start(&lab, &server, &key);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        peer.cmd("send k 1.0"),
        "ok",
        "restart disturbs no allowed connection"
    );

    // Stop the server: rules stay, and the agent still restores a deleted table.
    let port = server.port();
    server.stop();
    assert_eq!(peer.cmd("send k 1.0"), "ok");
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 22 0.3")), "fail");
    lab.exec("node", &["nft", "delete", "table", "inet", "palisade"]);
    within(
        Duration::from_secs(2),
        "restored with the server down",
        || lab.dataplane("node").list_json().ok().flatten().is_some(),
    );
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 22 0.3")), "fail");
    assert_eq!(peer.cmd(&format!("tcp - {NODE} 9090 0.5")), "ok");

    // The server comes back on the same store: the agent picks up changes again.
    let server = TestServer::start(dir.path(), port);
    let c = server.client();
    api(
        &c,
        "vpc",
        "CreateSecurityGroupPolicies",
        json!({"SecurityGroupId": web, "SecurityGroupPolicySet": {
        "Ingress": [{"Protocol": "TCP", "Port": "22", "CidrBlock": "198.18.0.2/32", "Action": "ACCEPT"}]}}),
    );
    within(
        Duration::from_secs(5),
        "change after the server's return applied",
        || peer.cmd(&format!("tcp - {NODE} 22 0.2")) == "ok",
    );
    agent.kill();
}
