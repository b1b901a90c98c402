//! TC3-HMAC-SHA256 signing (Tencent API v3): the one implementation that
//! Palisade's clients use to sign and its server uses to verify.
//! [`signature`] is the algorithm; [`authorization`] signs
//! `content-type;host` over a POST of a JSON body, as the Tencent SDKs do;
//! [`signed_headers`], which Palisade's own clients use, also signs
//! `x-tc-action` and a random `x-palisade-nonce`, so a captured request
//! cannot be re-sent as another action and two identical calls differ (what
//! a server with `--strict-signatures` requires; docs/api.md).
//!
//! Canonical header values are the raw values trimmed, as Tencent's
//! signature documentation describes; [`signed_headers`] also lower-cases
//! them, which Tencent's documentation shows and the server accepts too.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm's name, first in the `Authorization` header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The hex signature of a request: `method` (`POST`) on `/` with an empty
/// query, `canonical_headers` (`name:value\n` for each signed header, in
/// `signed_headers` order), the `;`-joined `signed_headers`, the `payload`,
/// at unix time `timestamp` whose UTC date is `date` (`YYYY-MM-DD`), for
/// `service`, keyed by `secret_key`.
#[allow(clippy::too_many_arguments)] // the TC3 inputs, named as the spec names them
pub fn signature(
    method: &str,
    canonical_headers: &[u8],
    signed_headers: &str,
    payload: &[u8],
    timestamp: i64,
    date: &str,
    service: &str,
    secret_key: &str,
) -> String {
    let mut canonical_request = Vec::new();
    canonical_request.extend_from_slice(method.as_bytes());
    canonical_request.extend_from_slice(b"\n/\n\n");
    canonical_request.extend_from_slice(canonical_headers);
    canonical_request.push(b'\n');
    canonical_request.extend_from_slice(signed_headers.as_bytes());
    canonical_request.push(b'\n');
    canonical_request.extend_from_slice(hex::encode(Sha256::digest(payload)).as_bytes());

    let scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(&canonical_request))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// The `Authorization` header value for a POST of `body` with these raw
/// `Content-Type` and `Host` header values, at unix time `timestamp`,
/// signing `content-type;host` as the Tencent SDKs do.
pub fn authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    content_type: &str,
    host: &str,
    body: &[u8],
    timestamp: i64,
) -> String {
    let date = date_of(timestamp).unwrap_or_default();
    let headers = format!(
        "content-type:{}\nhost:{}\n",
        content_type.trim(),
        host.trim()
    );
    let sig = signature(
        "POST",
        headers.as_bytes(),
        "content-type;host",
        body,
        timestamp,
        &date,
        service,
        secret_key,
    );
    format!(
        "{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, SignedHeaders=content-type;host, Signature={sig}"
    )
}

/// The headers of a POST of `body` calling `action`, signed over
/// `content-type;host;x-palisade-nonce;x-tc-action` and the body:
/// `Content-Type`, `Host`, `X-TC-Action`, `X-TC-Timestamp`,
/// `X-Palisade-Nonce` and `Authorization`. `nonce` should be fresh for each
/// call (a random UUID). The canonical values are lower-cased, as Tencent's
/// signature documentation describes.
#[allow(clippy::too_many_arguments)] // one call = one signed request
pub fn signed_headers(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    action: &str,
    host: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> Vec<(&'static str, String)> {
    const SIGNED: &str = "content-type;host;x-palisade-nonce;x-tc-action";
    let content_type = "application/json";
    let date = date_of(timestamp).unwrap_or_default();
    let headers = format!(
        "content-type:{content_type}\nhost:{}\nx-palisade-nonce:{}\nx-tc-action:{}\n",
        host.trim().to_ascii_lowercase(),
        nonce.trim().to_ascii_lowercase(),
        action.trim().to_ascii_lowercase(),
    );
    let sig = signature(
        "POST",
        headers.as_bytes(),
        SIGNED,
        body,
        timestamp,
        &date,
        service,
        secret_key,
    );
    vec![
        ("Content-Type", content_type.to_string()),
        ("Host", host.to_string()),
        ("X-TC-Action", action.to_string()),
        ("X-TC-Timestamp", timestamp.to_string()),
        ("X-Palisade-Nonce", nonce.to_string()),
        (
            "Authorization",
            format!(
                "{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, SignedHeaders={SIGNED}, Signature={sig}"
            ),
        ),
    ]
}

/// The UTC calendar date of a unix timestamp, `YYYY-MM-DD`; `None` outside
/// the dates `time` represents.
pub fn date_of(timestamp: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(timestamp).ok()?;
    let d = t.date();
    Some(format!(
        "{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::Value;

    /// Requests signed by `tencentcloud-sdk-python` (the server's fixture).
    const VECTORS: &str = include_str!("../../server/src/testdata/tc3_sdk_vectors.json");

    #[test]
    fn matches_the_documented_example() {
        // Tencent's published example (API v3 signature documentation):
        // DescribeInstances, cvm, timestamp 1551113065.
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let auth = authorization(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******",
            "Gu5t9xGARNpq86cd98joQYCN3*******",
            "cvm",
            "application/json; charset=utf-8",
            "cvm.tencentcloudapi.com",
            body,
            1551113065,
        );
        assert!(auth.starts_with("TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature="));
        assert_eq!(date_of(0).as_deref(), Some("1970-01-01"));
        assert_eq!(date_of(i64::MAX), None);
    }

    #[test]
    fn reproduces_the_python_sdks_signatures() {
        let vectors: Vec<Value> = serde_json::from_str(VECTORS).unwrap();
        let mut checked = 0;
        for v in &vectors {
            let h = v["headers"].as_object().unwrap();
            let get = |k: &str| {
                h.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.as_str().unwrap())
            };
            let Some(auth) = get("authorization") else {
                continue;
            };
            if get("x-tc-content-sha256").is_some()
                || !auth.contains("SignedHeaders=content-type;host,")
            {
                continue;
            }
            let ours = authorization(
                v["secret_id"].as_str().unwrap(),
                v["secret_key"].as_str().unwrap(),
                v["service"].as_str().unwrap(),
                get("content-type").unwrap(),
                get("host").unwrap(),
                v["body"].as_str().unwrap().as_bytes(),
                get("x-tc-timestamp").unwrap().parse().unwrap(),
            );
            assert_eq!(ours, auth);
            checked += 1;
        }
        assert!(checked >= 2, "only {checked} vectors applied");
    }
}
