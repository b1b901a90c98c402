//! Verified requests need the caller's secret key: one store lookup per
//! request (one statement), which a herd of long-polling agents would
//! repeat thousands of times a second for keys that never change.
//!
//! [`CredentialCache`] keeps each credential found with the value of its
//! account's key watcher at the time it was read ([`Store::watch_keys`],
//! which rises past that value after any later commit that removed one of
//! the account's credentials, whichever server made it; other writes leave
//! it). An entry is used only while that value has not moved, so a key
//! deleted with its instance stops working as soon as the deletion reaches
//! this server's watchers. A stale entry is checked with one lookup (its
//! account is known, so the watcher is read first); a new one takes two
//! (the first names the account). Unknown SecretIds are never cached: a
//! stranger's guesses cost lookups, not memory.

use palisade_store::{Credential, Store, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most entries held; past it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// Credentials by SecretId, each valid while its account is unchanged.
#[derive(Default)]
pub struct CredentialCache {
    entries: Mutex<HashMap<String, (Credential, u64)>>,
}

impl CredentialCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Credential, u64)>> {
        // A map of finished entries: consistent between statements.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The credential of `secret_id` when the cache holds it and none of its
    /// account's credentials was removed since: no store read, so the caller
    /// may ask from an async task. `None` means "ask [`Self::get`]" (not
    /// cached, stale, or unknown), never "no such key".
    pub fn cached(&self, store: &dyn Store, secret_id: &str) -> Option<Credential> {
        let (c, revision) = self.entries().get(secret_id).cloned()?;
        (*store.watch_keys(&c.account.id).borrow() == revision).then_some(c)
    }

    /// The credential of `secret_id`, from the cache while none of its
    /// account's credentials was removed, otherwise from `store`.
    pub fn get(
        &self,
        store: &dyn Store,
        secret_id: &str,
    ) -> Result<Option<Credential>, StoreError> {
        // The account whose key watcher guards the entry, and the value read
        // before the lookup that fills it: any removal after that read
        // moves the watcher on.
        let (account, watched) = match self.entries().get(secret_id).cloned() {
            Some((c, revision)) => {
                let now = *store.watch_keys(&c.account.id).borrow();
                if now == revision {
                    return Ok(Some(c));
                }
                // Stale: the account is known, so one lookup will do.
                (c.account.id, now)
            }
            None => {
                // New: a first lookup names the account.
                let Some(first) = store.credential(secret_id)? else {
                    return Ok(None);
                };
                let now = *store.watch_keys(&first.account.id).borrow();
                (first.account.id, now)
            }
        };
        let Some(fresh) = store.credential(secret_id)? else {
            self.entries().remove(secret_id);
            return Ok(None);
        };
        let mut entries = self.entries();
        if fresh.account.id == account {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(secret_id.to_string(), (fresh.clone(), watched));
        } else {
            entries.remove(secret_id);
        }
        Ok(Some(fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_store::{InstanceRecord, Location, StoreExt};

    #[test]
    fn a_key_deleted_with_its_instance_stops_working_at_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = palisade_store::open(&Location::Sqlite(dir.path().join("p.db")))
            .unwrap_or_else(|e| panic!("open: {e}"));
        let account = store
            .create_account("ops")
            .unwrap_or_else(|e| panic!("{e}"));
        let instance = InstanceRecord {
            id: "ins-00000001".into(),
            name: "n".into(),
            private_ips: vec!["198.18.0.1".into()],
            created_time: "t".into(),
            security_group_ids: vec![],
        };
        store
            .write(|tx| tx.insert_instance(&account.id, &instance))
            .unwrap_or_else(|e| panic!("{e}"));
        let key = store
            .create_instance_key(&account.id, "ins-00000001")
            .unwrap_or_else(|e| panic!("{e}"));
        let cache = CredentialCache::default();
        for _ in 0..2 {
            let c = cache
                .get(store.as_ref(), &key.secret_id)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("the key is known"));
            assert_eq!(c.instance_scope.as_deref(), Some("ins-00000001"));
        }
        assert_eq!(cache.entries().len(), 1, "the second get was a hit");
        store
            .write(|tx| tx.delete_instance(&account.id, "ins-00000001"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cache
                .get(store.as_ref(), &key.secret_id)
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
        assert!(cache.entries().is_empty());
        // Unknown ids are looked up every time and never kept.
        assert_eq!(
            cache
                .get(store.as_ref(), "AKIDunknown")
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
        assert!(cache.entries().is_empty());
        // The account's own key: kept, and still valid after a commit to
        // another account.
        let other = store
            .create_account("dev")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cache
            .get(store.as_ref(), &account.secret_id)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some());
        store
            .write(|tx| tx.insert_instance(&other.id, &instance))
            .unwrap_or_else(|e| panic!("{e}"));
        let before = cache.entries().get(&account.secret_id).map(|e| e.1);
        assert!(cache
            .get(store.as_ref(), &account.secret_id)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some());
        assert_eq!(cache.entries().get(&account.secret_id).map(|e| e.1), before);
        // An ordinary commit to the key's own account leaves the entry
        // valid; removing a credential of the account (an instance, with
        // its key) makes it stale: the next get looks it up again and keeps
        // it at the new value, so the get after that is a hit.
        let mut second = instance.clone();
        second.id = "ins-00000002".into();
        store
            .write(|tx| tx.insert_instance(&account.id, &second))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Some(*store.watch_keys(&account.id).borrow()), before);
        store
            .write(|tx| tx.delete_instance(&account.id, "ins-00000002"))
            .unwrap_or_else(|e| panic!("{e}"));
        let now = *store.watch_keys(&account.id).borrow();
        assert_ne!(Some(now), before);
        assert!(cache
            .get(store.as_ref(), &account.secret_id)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some());
        assert_eq!(
            cache.entries().get(&account.secret_id).map(|e| e.1),
            Some(now)
        );
    }
}
