//! Console sessions, kept in the server's memory: a random 256-bit token
//! (the cookie) names a session holding the account, a digest of the key it
//! signed in with, its CSRF token and its times. A server restart ends
//! every session (each server of a shared store keeps its own).

use super::{IDLE, LIFETIME};
use crate::http::AppState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use subtle::ConstantTimeEq;

/// The most sessions kept at once; past it, the oldest is ended.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account acted for.
    pub account_id: String,
    /// Its name, shown in the header.
    pub account_name: String,
    /// The SecretId signed in with.
    secret_id: String,
    /// SHA-256 of the SecretKey signed in with: a rotated key ends the session.
    key_digest: [u8; 32],
    /// The token every form must carry.
    pub csrf: String,
    created: Instant,
    last: Instant,
    flash: Option<String>,
}

/// The sessions of this server.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Constant-time equality of two tokens (an empty one never matches).
pub fn token_eq(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Session {
    /// A session of `account` that no browser holds, for rendering pages
    /// in a benchmark.
    pub(super) fn for_bench(account: &str) -> Session {
        let now = Instant::now();
        Session {
            account_id: account.to_string(),
            account_name: account.to_string(),
            secret_id: String::new(),
            key_digest: [0; 32],
            csrf: random_token(),
            created: now,
            last: now,
            flash: None,
        }
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (every
        // change is one insert or remove).
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signs in with `secret_id` and `secret_key`: the new session's token,
    /// or why not.
    pub fn create(
        &self,
        app: &AppState,
        secret_id: &str,
        secret_key: &str,
    ) -> Result<String, String> {
        const WRONG: &str = "Wrong SecretId or SecretKey.";
        if secret_id.is_empty() || secret_key.is_empty() {
            return Err("Give the account's SecretId and SecretKey.".into());
        }
        let credential = app
            .credentials
            .get(app.store.as_ref(), secret_id)
            .map_err(|e| format!("The store cannot be read: {e}"))?
            .ok_or_else(|| WRONG.to_string())?;
        if !bool::from(
            credential
                .secret_key
                .as_bytes()
                .ct_eq(secret_key.as_bytes()),
        ) {
            return Err(WRONG.into());
        }
        if credential.instance_scope.is_some() {
            return Err(
                "This is an agent's credential (scoped to one instance): sign in with an \
                 account's SecretId and SecretKey."
                    .into(),
            );
        }
        let token = random_token();
        let now = Instant::now();
        let session = Session {
            account_id: credential.account.id.clone(),
            account_name: credential.account.name.clone(),
            secret_id: secret_id.to_string(),
            key_digest: digest(secret_key),
            csrf: random_token(),
            created: now,
            last: now,
            flash: None,
        };
        let mut map = self.lock();
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(token.clone(), session);
        tracing::info!(account = %credential.account.name, "console sign-in");
        Ok(token)
    }

    /// The live session of `token`, its idle time reset; `None` (and the
    /// session ended) when it expired or its credential is gone or changed.
    pub fn check(&self, app: &AppState, token: &str) -> Option<Session> {
        if token.is_empty() {
            return None;
        }
        let now = Instant::now();
        let session = {
            let mut map = self.lock();
            let s = map.get_mut(token)?;
            if !alive(s, now) {
                map.remove(token);
                return None;
            }
            s.last = now;
            s.clone()
        };
        let valid = matches!(
            app.credentials.get(app.store.as_ref(), &session.secret_id),
            Ok(Some(c)) if c.instance_scope.is_none()
                && c.account.id == session.account_id
                && bool::from(digest(&c.secret_key).ct_eq(&session.key_digest))
        );
        if !valid {
            self.remove(token);
            return None;
        }
        Some(session)
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Sets the message shown once on the session's next page.
    pub fn flash(&self, token: &str, message: String) {
        if let Some(s) = self.lock().get_mut(token) {
            s.flash = Some(message);
        }
    }

    /// Takes the message set by [`Sessions::flash`].
    pub fn take_flash(&self, token: &str) -> Option<String> {
        self.lock().get_mut(token).and_then(|s| s.flash.take())
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last) < IDLE && now.duration_since(s.created) < LIFETIME
}
