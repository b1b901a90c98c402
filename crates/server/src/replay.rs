//! Strict mode's memory of the writes it has accepted (docs/api.md,
//! "What the signature covers").
//!
//! TC3 has no nonce: a captured request verifies again, unchanged, until
//! its `X-TC-Timestamp` is 300 s old. In strict mode the server remembers the
//! signature of every write it accepted until that moment and refuses the
//! same signature a second time. The memory is per server process and
//! bounded: [`CAPACITY`] signatures (17 MiB when full, measured); when it is full of
//! signatures still inside their window, writes are refused with
//! `RequestLimitExceeded` rather than let a replay through.

use crate::tc3::MAX_CLOCK_SKEW_SECS;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

/// Most signatures remembered at once: 873 writes a second sustained over
/// the 300 s window. Each costs about 67 bytes (a 16-byte key in a hash set
/// and in a heap ordered by expiry): filling the window raised a test
/// process's RSS by 17,084 KiB.
pub const CAPACITY: usize = 262_144;

/// What [`ReplayWindow::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// First use of this signature: remembered until it expires.
    Fresh,
    /// The signature was used before, inside its window.
    Replayed,
    /// The memory is full of signatures still inside their window.
    Full,
}

/// The signatures of accepted writes, until their timestamps leave the
/// 300 s window.
pub struct ReplayWindow {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<u128>,
    /// `(last second the signature is valid, key)`, earliest first.
    expiry: BinaryHeap<Reverse<(i64, u128)>>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl ReplayWindow {
    /// A window remembering at most `capacity` signatures.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Admits `signature` (hex, as verified) of a request stamped
    /// `timestamp`, at server time `now`.
    pub fn admit(&self, signature: &str, timestamp: i64, now: i64) -> Admission {
        // 128 bits of an HMAC-SHA256 the caller cannot forge: two different
        // requests share them with negligible probability.
        let key = signature
            .get(..32)
            .and_then(|h| u128::from_str_radix(h, 16).ok())
            .unwrap_or_default();
        // The set and heap are changed together under the lock, so a
        // poisoned lock still holds a consistent pair.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(Reverse((until, old))) = inner.expiry.peek().copied() {
            if until >= now {
                break;
            }
            inner.expiry.pop();
            inner.seen.remove(&old);
        }
        if inner.seen.contains(&key) {
            return Admission::Replayed;
        }
        if inner.seen.len() >= self.capacity {
            return Admission::Full;
        }
        inner.seen.insert(key);
        inner.expiry.push(Reverse((
            timestamp.saturating_add(MAX_CLOCK_SKEW_SECS),
            key,
        )));
        Admission::Fresh
    }

    /// Signatures remembered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seen
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_signature_is_refused_until_its_window_ends() {
        let w = ReplayWindow::default();
        assert_eq!(w.admit(A, 1000, 1000), Admission::Fresh);
        assert_eq!(w.admit(A, 1000, 1001), Admission::Replayed);
        assert_eq!(w.admit(B, 1000, 1001), Admission::Fresh);
        // Still valid at 1300 (the verifier accepts |now - ts| <= 300).
        assert_eq!(w.admit(A, 1000, 1300), Admission::Replayed);
        // At 1301 the verifier refuses it as expired; the memory forgets it.
        assert_eq!(w.admit(B, 1000, 1301), Admission::Fresh);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_future_timestamp_is_remembered_until_it_expires() {
        let w = ReplayWindow::default();
        assert_eq!(w.admit(A, 1300, 1000), Admission::Fresh);
        assert_eq!(w.admit(A, 1300, 1599), Admission::Replayed);
        assert_eq!(w.admit(B, 0, 1601), Admission::Fresh);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_full_window_refuses_instead_of_forgetting() {
        let w = ReplayWindow::with_capacity(1);
        assert_eq!(w.admit(A, 1000, 1000), Admission::Fresh);
        assert_eq!(w.admit(B, 1000, 1000), Admission::Full);
        assert_eq!(w.admit(A, 1000, 1000), Admission::Replayed);
        assert_eq!(w.admit(B, 1000, 1301), Admission::Fresh);
    }
}
