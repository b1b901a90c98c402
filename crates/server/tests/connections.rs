//! Per-request limits of the HTTP layer against a real server on
//! 127.0.0.1: the request head's size, the body's arrival time, and the
//! body size refused before the body arrives. (The connection cap, head and
//! idle timeouts under load are in `exhaustion.rs` and `tls_limits.rs`.)

mod common;

use common::{now, Server};
use palisade_server::http::BODY_TIMEOUT;
use palisade_server::serve::MAX_HEAD_BYTES;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn status_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn a_head_over_64_kib_is_refused() {
    let (server, _) = Server::start(&[]);
    for (size, expect) in [
        (MAX_HEAD_BYTES - 1024, "HTTP/1.1 200"),
        (MAX_HEAD_BYTES + 1024, "HTTP/1.1 431"),
    ] {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        );
        s.write_all(head.as_bytes()).expect("write");
        let answer = status_line(&mut s);
        assert!(answer.starts_with(expect), "{size}: {answer:.100}");
    }
}

#[test]
fn a_body_that_stalls_is_cut_after_the_body_timeout() {
    let (server, worlds) = Server::start(&[("alice", "aaaa")]);
    let a = &worlds[0].0;
    // Headers that pass (real SecretId, fresh timestamp); the body stalls.
    let headers = server.signed_headers(
        (&a.secret_id, &a.secret_key),
        "CreateSecurityGroup",
        b"{}",
        now(),
    );
    let mut s = TcpStream::connect(server.addr).expect("connect");
    let mut head = b"POST / HTTP/1.1\r\n".to_vec();
    for (k, v) in &headers {
        head.extend_from_slice(format!("{k}: ").as_bytes());
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Content-Length: 100\r\n\r\n{\"GroupName\"");
    s.write_all(&head).expect("write");
    let started = Instant::now();
    let answer = status_line(&mut s);
    let took = started.elapsed();
    assert!(answer.contains("\"InvalidRequest\""), "{answer}");
    assert!(
        took >= BODY_TIMEOUT - Duration::from_secs(1)
            && took < BODY_TIMEOUT + Duration::from_secs(30),
        "answered after {took:?}"
    );
}

#[test]
fn a_declared_body_over_10_mib_is_refused_before_it_arrives() {
    let (server, worlds) = Server::start(&[("alice", "aaaa")]);
    let a = &worlds[0].0;
    let headers = server.signed_headers(
        (&a.secret_id, &a.secret_key),
        "CreateSecurityGroup",
        b"{}",
        now(),
    );
    let mut s = TcpStream::connect(server.addr).expect("connect");
    let mut head = b"POST / HTTP/1.1\r\n".to_vec();
    for (k, v) in &headers {
        head.extend_from_slice(format!("{k}: ").as_bytes());
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", 10 * 1024 * 1024 + 1).as_bytes());
    s.write_all(&head).expect("write");
    // No body byte sent: the server is draining it, so shut our side to
    // let it finish, then read the answer.
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let answer = status_line(&mut s);
    assert!(answer.contains("\"RequestSizeLimitExceeded\""), "{answer}");
}
