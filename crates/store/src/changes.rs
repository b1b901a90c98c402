//! Who waits for what: the global revision and, per account, the revision
//! of the last commit that changed that account.
//!
//! An agent long-polls for its instance's ruleset, which depends only on its
//! own account's records. Waking it on every commit of every account makes
//! one write cost as many answers as there are agents; waking it only when
//! its account changed makes a write cost the answers of that account's
//! agents. Both backends feed [`Watchers`] after each commit (PostgreSQL
//! also from other servers' `NOTIFY`s, whose payload names the accounts).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// The watcher name of `account`'s credentials (no account id holds `#`),
/// named in commits and notifications beside the account itself.
pub(crate) fn keys_name(account: &str) -> String {
    format!("{account}#keys")
}

/// The names a commit that changed `touched` and removed credentials of
/// `keys` raises.
pub(crate) fn committed_names(
    touched: &std::collections::BTreeSet<String>,
    keys: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    touched
        .iter()
        .cloned()
        .chain(keys.iter().map(|a| keys_name(a)))
        .collect()
}

/// The revision watch channels of one store.
pub struct Watchers {
    global: watch::Sender<u64>,
    accounts: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Watchers {
    /// Channels starting at `revision`.
    pub(crate) fn new(revision: u64) -> Self {
        Self {
            global: watch::Sender::new(revision),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // A map of channels: consistent between statements.
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver of the global revision.
    pub(crate) fn global(&self) -> watch::Receiver<u64> {
        self.global.subscribe()
    }

    /// A receiver whose value rises past N when a commit newer than N
    /// changed `account`. A channel made now starts at the global revision
    /// (the account may have changed at any revision up to it), so a waiter
    /// can at worst wake once too early, never miss a change.
    pub(crate) fn account(&self, account: &str) -> watch::Receiver<u64> {
        let mut map = self.accounts();
        if let Some(tx) = map.get(account) {
            return tx.subscribe();
        }
        let tx = watch::Sender::new(*self.global.borrow());
        let rx = tx.subscribe();
        map.insert(account.to_string(), tx);
        rx
    }

    /// A receiver whose value rises past N when a commit newer than N
    /// removed a credential of `account` (an instance key, with its
    /// instance). Fed like an account's, under [`keys_name`].
    pub(crate) fn keys(&self, account: &str) -> watch::Receiver<u64> {
        self.account(&keys_name(account))
    }

    /// Commit `revision` changed `accounts` (names from [`keys_name`] for
    /// removed credentials).
    pub(crate) fn committed<S: AsRef<str>>(&self, revision: u64, accounts: &[S]) {
        {
            let map = self.accounts();
            for a in accounts {
                if let Some(tx) = map.get(a.as_ref()) {
                    raise(tx, revision);
                }
            }
        }
        raise(&self.global, revision);
    }

    /// The store is at `revision` but which accounts changed is unknown
    /// (a listener reconnected, a notification without accounts): wake
    /// every waiter, who will look again.
    pub(crate) fn everything(&self, revision: u64) {
        // Not skipped when the global revision is already there: this
        // process's own commits may have raised it past commits of other
        // servers that named accounts nobody heard.
        for tx in self.accounts().values() {
            raise(tx, revision);
        }
        raise(&self.global, revision);
    }
}

fn raise(tx: &watch::Sender<u64>, rev: u64) {
    tx.send_if_modified(|cur| {
        if rev > *cur {
            *cur = rev;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_changed_accounts_waiters_see_a_commit() {
        let w = Watchers::new(5);
        let a = w.account("acc-a");
        let b = w.account("acc-b");
        assert_eq!((*a.borrow(), *b.borrow()), (5, 5));
        w.committed(6, &["acc-a"]);
        assert_eq!((*a.borrow(), *b.borrow()), (6, 5));
        assert_eq!(*w.global().borrow(), 6);
        // A channel made later starts at the global revision.
        assert_eq!(*w.account("acc-c").borrow(), 6);
        w.everything(9);
        assert_eq!((*a.borrow(), *b.borrow()), (9, 9));
        // A catch-up at the global revision still raises accounts behind it.
        w.committed(10, &["acc-a"]);
        w.everything(10);
        assert_eq!(*b.borrow(), 10);
        // Never backwards.
        w.committed(7, &["acc-a"]);
        w.everything(8);
        assert_eq!((*a.borrow(), *w.global().borrow()), (10, 10));
    }
}
