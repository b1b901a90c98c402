//! The HTTPS path gets the same protections as plain HTTP: the accept loop
//! of `palisade serve` with a certificate, on 127.0.0.1. A connection that
//! never starts its handshake is closed after the handshake timeout; the
//! connection cap holds TLS clients in the backlog; a request without
//! credentials is refused before its body is sent; a wrong method gets the
//! envelope. Needs the `openssl` command for the certificate; says it
//! skipped without it.

use palisade_model::Limits;
use palisade_server::http::{router, AppState};
use palisade_server::serve::{self, TLS_HANDSHAKE_TIMEOUT};
use palisade_store::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const CAP: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gets_the_same_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = palisade_testkit::private_ca(dir.path());
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&certs.cert, &certs.key)
        .await
        .expect("certificate")
        .get_inner();
    let store = Arc::new(SqliteStore::open_dir(dir.path()).expect("store"));
    let app = router(Arc::new(AppState::new(store, Limits::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve::serve(
        listener,
        app,
        Some(tls),
        CAP,
        std::future::pending(),
    ));

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca).expect("ca"))
        .expect("root");
    let client = tokio_rustls::TlsConnector::from(Arc::new(
        tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let connect = || {
        let (client, name) = (client.clone(), name.clone());
        async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            client.connect(name, tcp).await
        }
    };

    // Over TLS: a wrong method gets the envelope, and a request with no
    // credentials declaring 10 MiB is answered before its body is sent.
    let mut s = connect().await.expect("handshake");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_all(&mut s).await;
    assert!(
        answer.starts_with("HTTP/1.1 200")
            && answer.contains("content-type: application/json")
            && answer.contains("UnsupportedProtocol"),
        "{answer}"
    );
    let mut s = connect().await.expect("handshake");
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          X-TC-Action: CreateSecurityGroup\r\nContent-Length: 10485760\r\n\r\n",
    )
    .await
    .expect("write");
    let answer = read_all(&mut s).await;
    assert!(
        answer.contains("AuthFailure.InvalidAuthorization"),
        "{answer}"
    );

    // The cap: with CAP connections held (no handshake), a TLS client waits
    // in the backlog; when one closes, it gets through.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = tokio::spawn(connect());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !waiting.is_finished(),
        "a client got past the connection cap"
    );
    drop(held.pop());
    let got_through = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting client got no slot when one was freed")
        .expect("task");
    let mut s = got_through.expect("handshake");
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    assert!(read_all(&mut s).await.contains("UnsupportedProtocol"));

    // A connection that never starts its handshake is closed after the
    // handshake timeout (the two still held were opened before).
    let started = Instant::now();
    for mut idle in held {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT + Duration::from_secs(5),
            idle.read(&mut b),
        )
        .await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection was not closed within {:?}",
            TLS_HANDSHAKE_TIMEOUT + Duration::from_secs(5)
        );
    }
    assert!(started.elapsed() <= TLS_HANDSHAKE_TIMEOUT + Duration::from_secs(5));
}

async fn read_all(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}
