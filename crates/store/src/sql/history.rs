//! Kept versions of every group's policy set and the account's stored
//! documents (snapshot policies, commit-confirmed changes), written once for
//! both SQL dialects like the rest of `sql.rs`.
//!
//! Every write of a group records the version it writes in `group_versions`
//! (an attribute-only change rewrites the same version with the same rules),
//! and drops the versions older than the history limit: the newest
//! [`crate::DEFAULT_HISTORY_LIMIT`] unless the store-wide marker
//! [`crate::HISTORY_LIMIT_MARKER`] says otherwise. History dies with its group.

use super::{from_json, to_i64, to_json, Param, Row, SqlTx};
use crate::{DocKind, Document, GroupRecord, GroupVersion, StoreError};

impl SqlTx<'_> {
    /// Records `g`'s policy set as its version and prunes older versions.
    pub(super) fn record_version(&self, account: &str, g: &GroupRecord) -> Result<(), StoreError> {
        let keep = self.history_limit()?;
        self.db.execute(
            "INSERT INTO group_versions (account_id, group_id, version, ingress, egress, recorded_time) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (account_id, group_id, version) DO UPDATE SET ingress = excluded.ingress, egress = excluded.egress",
            params![
                account, &g.id, to_i64(g.version), &to_json(&g.ingress)?, &to_json(&g.egress)?,
                &g.update_time,
            ],
        )?;
        let oldest_kept = to_i64(g.version.saturating_sub(keep.saturating_sub(1)));
        self.db.execute(
            "DELETE FROM group_versions WHERE account_id = $1 AND group_id = $2 AND version < $3",
            params![account, &g.id, oldest_kept],
        )?;
        Ok(())
    }

    /// Forgets every kept version of a deleted group.
    pub(super) fn forget_versions(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.db.execute(
            "DELETE FROM group_versions WHERE account_id = $1 AND group_id = $2",
            params![account, id],
        )?;
        Ok(())
    }

    fn history_limit(&self) -> Result<u64, StoreError> {
        let rows = self.db.query(
            "SELECT value FROM meta WHERE key = $1",
            params![crate::HISTORY_LIMIT_MARKER],
        )?;
        match rows.first() {
            Some(r) => Ok(r.count(0)?.max(1)),
            None => Ok(crate::DEFAULT_HISTORY_LIMIT),
        }
    }

    pub(super) fn history(
        &self,
        account: &str,
        group_id: &str,
    ) -> Result<Vec<GroupVersion>, StoreError> {
        self.lock(account)?;
        self.all(
            "SELECT version, ingress, egress, recorded_time FROM group_versions
             WHERE account_id = $1 AND group_id = $2 ORDER BY version",
            params![account, group_id],
            version_from_row,
        )
    }

    pub(super) fn get_document(
        &self,
        account: &str,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        self.lock(account)?;
        self.first(
            "SELECT kind, id, body, due FROM documents WHERE account_id = $1 AND kind = $2 AND id = $3",
            params![account, kind.as_str(), id],
            document_from_row,
        )
    }

    pub(super) fn list_documents(
        &self,
        account: &str,
        kind: DocKind,
    ) -> Result<Vec<Document>, StoreError> {
        self.lock(account)?;
        self.all(
            "SELECT kind, id, body, due FROM documents WHERE account_id = $1 AND kind = $2 ORDER BY seq",
            params![account, kind.as_str()],
            document_from_row,
        )
    }

    pub(super) fn store_document(&self, account: &str, d: &Document) -> Result<(), StoreError> {
        self.lock(account)?;
        self.db.execute(
            "INSERT INTO documents (account_id, kind, id, body, due) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id, kind, id) DO UPDATE SET body = excluded.body, due = excluded.due",
            params![
                account, d.kind.as_str(), &d.id, &to_json(&d.body)?, d.due.unwrap_or(0),
            ],
        )?;
        Ok(())
    }

    pub(super) fn remove_document(
        &self,
        account: &str,
        kind: DocKind,
        id: &str,
    ) -> Result<(), StoreError> {
        self.lock(account)?;
        let n = self.db.execute(
            "DELETE FROM documents WHERE account_id = $1 AND kind = $2 AND id = $3",
            params![account, kind.as_str(), id],
        )?;
        Self::found(n, id)
    }

    pub(super) fn due(&self, kind: DocKind, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.db
            .query(
                "SELECT account_id, id FROM documents WHERE kind = $1 AND due > 0 AND due <= $2 ORDER BY due",
                params![kind.as_str(), now],
            )?
            .into_iter()
            .map(|mut r| Ok((r.text(0)?, r.text(1)?)))
            .collect()
    }
}

fn version_from_row(mut r: Row) -> Result<GroupVersion, StoreError> {
    Ok(GroupVersion {
        version: r.count(0)?,
        ingress: r.json(1)?,
        egress: r.json(2)?,
        recorded_time: r.text(3)?,
    })
}

fn document_from_row(mut r: Row) -> Result<Document, StoreError> {
    let kind = r.text(0)?;
    let due = r.int(3)?;
    Ok(Document {
        kind: DocKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("document kind {kind:?}")))?,
        id: r.text(1)?,
        body: from_json(&r.text(2)?)?,
        due: (due > 0).then_some(due),
    })
}
