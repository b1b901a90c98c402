//! The agent's client reaches an HTTPS `palisade serve` whose certificate
//! comes from a private CA (`--ca-cert`), and refuses it without that CA.
//! Needs the `openssl` command to make the certificate (CI installs it).

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

use palisade_agent::client::HttpControlPlane;
use serde_json::json;
use std::time::Duration;

#[test]
fn https_server_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    let palisade_testkit::PrivateCa { ca, cert, key } = palisade_testkit::private_ca(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = palisade_server::Config {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        data_dir: dir.path().join("data"),
        store: None,
        tls: Some((cert.clone(), key)),
        limits: palisade_model::Limits::default(),
        log_json: false,
        strict_signatures: false,
        max_connections: palisade_server::serve::DEFAULT_MAX_CONNECTIONS,
        flow_retention: Default::default(),
        history_limit: None,
    };
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let data_dir = config.data_dir.clone();
    // The server runs until the test process ends.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(palisade_server::run(config));
    });
    let creds_file = data_dir.join(palisade_server::ADMIN_CREDENTIALS_FILE);
    let start = std::time::Instant::now();
    while !creds_file.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds_file).unwrap()).unwrap();
    let (id, secret) = (
        creds["SecretId"].as_str().unwrap(),
        creds["SecretKey"].as_str().unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let timeout = Duration::from_secs(5);
    let call = |c: &HttpControlPlane| {
        c.call(
            "DescribeInstanceRuleset",
            &json!({"InstanceId": "ins-none0001"}),
        )
    };
    // With the CA: a signed call goes through (and the server says the instance does not exist).
    let trusting = HttpControlPlane::new(&url, id, secret, timeout)
        .unwrap()
        .with_ca_file(&ca, timeout)
        .unwrap();
    let mut answer = call(&trusting);
    while answer.as_ref().is_err_and(|e| e.api_code().is_none())
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
        answer = call(&trusting);
    }
    let err = answer.unwrap_err();
    assert!(
        err.api_code()
            .is_some_and(|c| c.starts_with("ResourceNotFound")),
        "{err}"
    );
    // Without it: the certificate is refused.
    let plain = HttpControlPlane::new(&url, id, secret, timeout).unwrap();
    let err = call(&plain).unwrap_err();
    assert!(
        err.api_code().is_none(),
        "a TLS failure, not an API answer: {err}"
    );
    // A file with no certificate is an error, not an empty trust store.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(HttpControlPlane::new(&url, id, secret, timeout)
        .unwrap()
        .with_ca_file(&empty, timeout)
        .is_err());
}
