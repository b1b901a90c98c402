//! TC3 signing for Palisade's clients: the one implementation in
//! `palisade-protocol`, re-exported so callers keep `palisade_client::tc3`.
//! The tests here check it against the server's verifier.

pub use palisade_protocol::tc3::*;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use super::*;

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
}
