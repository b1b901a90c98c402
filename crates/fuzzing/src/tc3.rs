//! The TC3-HMAC-SHA256 `Authorization` parser and verifier on hostile
//! headers, plus a differential check: whatever `sign` produces verifies,
//! and changing the body, the Host or the timestamp afterwards fails with
//! `AuthFailure.SignatureFailure`. No input panics (including timestamps
//! and clocks at the ends of i64).

use arbitrary::{Arbitrary, Unstructured};
use palisade_server::tc3::{self, AuthError};
use std::collections::HashMap;

#[derive(Arbitrary, Debug)]
struct Input {
    authorization: String,
    timestamp: String,
    /// When set, `X-TC-Timestamp` is this number (reaches the ends of i64).
    timestamp_num: Option<i64>,
    host: String,
    content_type: String,
    extra: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    now: i64,
    near_now: bool,
    secret_id: String,
    secret_key: String,
    service: String,
    signed_at: u32,
    flip: u16,
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Ok(a) = tc3::parse_authorization(&input.authorization) {
        assert_eq!(a.signature.len(), 64);
        assert!(a
            .signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        let names: Vec<&str> = a.signed_headers.split(';').collect();
        assert!(names.contains(&"host") && names.contains(&"content-type"));
        assert!(!a.secret_id.is_empty() && !a.service.is_empty());
    }

    // Arbitrary headers against a server clock anywhere in i64.
    let mut headers: HashMap<String, Vec<u8>> = input
        .extra
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.insert(
        "authorization".into(),
        input.authorization.clone().into_bytes(),
    );
    let timestamp = match input.timestamp_num {
        Some(n) => n.to_string(),
        None => input.timestamp.clone(),
    };
    headers.insert("x-tc-timestamp".into(), timestamp.clone().into_bytes());
    headers.insert("host".into(), input.host.clone().into_bytes());
    headers.insert(
        "content-type".into(),
        input.content_type.clone().into_bytes(),
    );
    let now = if input.near_now {
        timestamp.trim().parse::<i64>().unwrap_or(input.now)
    } else {
        input.now
    };
    let _ = tc3::verify(
        "POST",
        |n| headers.get(n).map(Vec::as_slice),
        &input.body,
        now,
        |_| Some(input.secret_key.clone()),
    );

    // Differential: sign, then verify, then tamper.
    let clean = |s: &str| -> String { s.chars().filter(char::is_ascii_alphanumeric).collect() };
    let (id, service) = (clean(&input.secret_id), clean(&input.service));
    if id.is_empty() || service.is_empty() {
        return;
    }
    // Header values as an HTTP stack delivers them: visible ASCII, trimmed.
    let value = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect::<String>()
            .trim()
            .to_string()
    };
    let (host, ctype) = (value(&input.host), value(&input.content_type));
    let mut ts = 1_000_000_000 + i64::from(input.signed_at);
    if (ts + 1) % 86_400 == 0 {
        // ts + 1 would start a new day: a date mismatch, not a bad signature.
        ts -= 1;
    }
    let auth = tc3::authorization(
        &id,
        &input.secret_key,
        &service,
        &ctype,
        &host,
        &input.body,
        ts,
    );
    let mut h: HashMap<&str, Vec<u8>> = HashMap::new();
    h.insert("authorization", auth.into_bytes());
    h.insert("x-tc-timestamp", ts.to_string().into_bytes());
    h.insert("host", host.clone().into_bytes());
    h.insert("content-type", ctype.into_bytes());
    let key = input.secret_key.clone();
    let run = |h: &HashMap<&str, Vec<u8>>, body: &[u8]| {
        tc3::verify(
            "POST",
            |n| h.get(n).map(Vec::as_slice),
            body,
            ts,
            |i| (i == id).then(|| key.clone()),
        )
    };
    let ok = run(&h, &input.body).unwrap_or_else(|e| panic!("own signature refused: {e}"));
    assert_eq!(
        (ok.secret_id.as_str(), ok.service.as_str()),
        (id.as_str(), service.as_str())
    );

    let mut body = input.body.clone();
    if body.is_empty() {
        body.push(b'x');
    } else {
        let i = usize::from(input.flip) % body.len();
        body[i] ^= 1 << (input.flip % 8);
    }
    assert_eq!(
        run(&h, &body),
        Err(AuthError::SignatureFailure),
        "tampered body accepted"
    );

    let mut tampered = h.clone();
    tampered.insert("host", format!("{host}x").into_bytes());
    assert_eq!(
        run(&tampered, &input.body),
        Err(AuthError::SignatureFailure),
        "tampered host accepted"
    );

    let mut tampered = h.clone();
    tampered.insert("x-tc-timestamp", (ts + 1).to_string().into_bytes());
    assert_eq!(
        run(&tampered, &input.body),
        Err(AuthError::SignatureFailure),
        "tampered timestamp accepted"
    );
}
