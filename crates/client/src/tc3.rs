//! TC3-HMAC-SHA256 request signing, client side. [`authorization`] signs
//! `content-type;host` over a POST of a JSON body, as the Tencent SDKs do;
//! [`signed_headers`], which Palisade's own clients use, also signs
//! `x-tc-action` and a random `x-palisade-nonce`, so a captured request cannot
//! be re-sent as another action and two identical calls differ (what a
//! server with `--strict-signatures` requires; docs/api.md). The server's
//! verifier is the other half; the server's tests check that the two agree.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The `Authorization` header value for a POST of `body` with these raw
/// `Content-Type` and `Host` header values, at unix time `timestamp`.
pub fn authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    content_type: &str,
    host: &str,
    body: &[u8],
    timestamp: i64,
) -> String {
    let date = date_of(timestamp);
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{}",
        content_type.trim(),
        host.trim(),
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
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
    let date = date_of(timestamp);
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\nx-palisade-nonce:{}\nx-tc-action:{}\n\n{SIGNED}\n{}",
        content_type,
        host.trim().to_ascii_lowercase(),
        nonce.trim().to_ascii_lowercase(),
        action.trim().to_ascii_lowercase(),
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    vec![
        ("Content-Type", content_type.to_string()),
        ("Host", host.to_string()),
        ("X-TC-Action", action.to_string()),
        ("X-TC-Timestamp", timestamp.to_string()),
        ("X-Palisade-Nonce", nonce.to_string()),
        (
            "Authorization",
            format!(
                "{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={SIGNED}, Signature={signature}"
            ),
        ),
    ]
}

/// `YYYY-MM-DD` (UTC) of a unix time; the epoch's date when out of range.
pub fn date_of(timestamp: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(timestamp)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
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
        assert_eq!(date_of(0), "1970-01-01");
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

    #[test]
    fn headers_signing_the_action_verify_on_the_server() {
        let body = br#"{"GroupName":"web"}"#;
        let headers = signed_headers(
            "AKIDx",
            "key",
            "vpc",
            "CreateSecurityGroup",
            "Pal.Example:9180",
            body,
            1_790_000_000,
            "3f1e0c4e-0d6b-4a51-9b8e-2f6c1f0a7d11",
        );
        let verify = |headers: &[(&str, String)]| {
            palisade_server::tc3::verify(
                "POST",
                |name| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.as_bytes())
                },
                body,
                1_790_000_000,
                |_| Some("key".to_string()),
            )
        };
        let checked = palisade_server::tc3::check_headers(
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_bytes())
            },
            1_790_000_000,
            |_| Some("key".to_string()),
        )
        .unwrap();
        assert!(checked.signs("x-tc-action") && checked.signs("x-palisade-nonce"));
        assert_eq!(verify(&headers).unwrap().service, "vpc");
        for (name, value) in [
            ("X-TC-Action", "DeleteSecurityGroup"),
            ("X-Palisade-Nonce", "another"),
        ] {
            let mut swapped = headers.clone();
            swapped.iter_mut().find(|(k, _)| *k == name).unwrap().1 = value.to_string();
            assert_eq!(
                verify(&swapped),
                Err(palisade_server::tc3::AuthError::SignatureFailure),
                "{name}"
            );
        }
    }

    #[test]
    fn agrees_with_the_servers_verifier_side() {
        for (ts, body) in [
            (1_790_000_000i64, &b"{}"[..]),
            (1_551_113_065, br#"{"InstanceId":"ins-node0001"}"#),
        ] {
            let ours = authorization(
                "AKIDx",
                "key",
                "palisade",
                "application/json",
                "127.0.0.1:8080",
                body,
                ts,
            );
            let theirs = palisade_server::tc3::sign(
                "AKIDx",
                "key",
                "palisade",
                "application/json",
                "127.0.0.1:8080",
                body,
                ts,
            );
            assert_eq!(ours, theirs);
        }
    }
}
