//! One-time passes over stored data at start-up, for what this version
//! reads more strictly than the versions that stored it (issue 23 and the
//! strict forms of issue 15; docs/operations.md, "Upgrading stored data").
//!
//! Three kinds of stored value, three outcomes:
//!
//! - **Widened blocks (reported, left alone).** Earlier versions stored a
//!   rule's `CidrBlock` whose network was `0.0.0.0` with any prefix
//!   (`0.0.0.0/8`, and so `9.9.9.9/3`, `10.0.0.0/1`) as `0.0.0.0/0`. Rules
//!   are stored in canonical form, so what the user wrote is lost and a
//!   widened block cannot be told from a real `0.0.0.0/0`: every stored
//!   `0.0.0.0/0` is named, and only the operator can say what it meant.
//! - **Same meaning, stricter spelling (rewritten).** A port list that names
//!   a port twice (`80,80`, stored as given) or a template entry with
//!   whitespace inside (`192.0.2.1 - 192.0.2.9`, `tcp: 80`) is refused on
//!   input now; stored, it is rewritten to the canonical spelling of the
//!   same ports and addresses (`80`, `192.0.2.1-192.0.2.9`, `tcp:80`), so
//!   the stored meaning does not change and the data stays readable. The
//!   policy set `Version` is kept: no rule's meaning changed.
//! - **Unreadable (reported, left alone).** Address template entries are
//!   stored as written, so one written `9.9.9.9/3` is still `9.9.9.9/3`:
//!   earlier versions read it as `0.0.0.0/0`, this one refuses it. It is
//!   named with the reason; until it is corrected, the account's rulesets
//!   cannot be resolved (the store is corrupt for this version, never read
//!   as something else), and agents keep the rules they have.
//!
//! The pass runs once per store, at the first start of a version with it,
//! and records that it ran with a store marker; a store created by such a
//! version has nothing to find and is marked at its first start.

use palisade_model::proto::merge_ranges;
use palisade_model::{AddressEntry, Ports, ServiceEntry};
use palisade_store::{Store, StoreError, StoreExt, TemplateKind};

/// The store marker that records that the pass ran.
pub const MARKER: &str = "upgrade:strict-forms";

/// The block that may stand for a wider-than-written one.
const WIDE: &str = "0.0.0.0/0";

/// What the pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Stored `0.0.0.0/0` blocks an earlier version may have widened.
    pub widened: Vec<Finding>,
    /// Values rewritten to the canonical spelling of the same meaning.
    pub rewritten: Vec<Finding>,
    /// Values this version cannot read, left as they are.
    pub unreadable: Vec<Finding>,
}

/// One stored value the pass looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The account's name.
    pub account: String,
    /// The group (`sg-`) or template (`ipm-`, `ppm-`).
    pub resource: String,
    /// Where in it: `Ingress.3` (a rule's direction and `PolicyIndex`) or
    /// `Addresses.1` / `Services.1` (a template entry).
    pub location: String,
    /// What was stored.
    pub was: String,
    /// What is stored now, or why it cannot be read.
    pub now: String,
}

/// Runs the pass unless it already ran (`None` then), and marks the store.
/// Everything happens in one write transaction.
pub fn scan_once(store: &dyn Store) -> Result<Option<Report>, StoreError> {
    // Every start after the first: one read, no writer lock, no account list.
    if store.read(|tx| tx.marker(MARKER))?.is_some() {
        return Ok(None);
    }
    let accounts = store.accounts()?;
    store.write(|tx| {
        if tx.marker(MARKER)?.is_some() {
            return Ok(None);
        }
        let mut report = Report::default();
        for account in &accounts {
            let finding = |resource: &str, location: String, was: &str, now: String| Finding {
                account: account.name.clone(),
                resource: resource.to_string(),
                location,
                was: was.to_string(),
                now,
            };
            for mut g in tx.groups(&account.id)? {
                let mut changed = false;
                for (direction, rules) in [("Ingress", &mut g.ingress), ("Egress", &mut g.egress)] {
                    for (index, rule) in rules.iter_mut().enumerate() {
                        let at = format!("{direction}.{index}");
                        if rule.body.get("CidrBlock").and_then(|v| v.as_str()) == Some(WIDE) {
                            report
                                .widened
                                .push(finding(&g.id, at.clone(), WIDE, WIDE.into()));
                        }
                        let Some(port) = rule.body.get("Port").and_then(|v| v.as_str()) else {
                            continue;
                        };
                        if Ports::parse_field("Port", port).is_ok() {
                            continue;
                        }
                        let was = port.to_string();
                        match canonical_ports(port) {
                            Some(now) => {
                                rule.body["Port"] = now.clone().into();
                                report.rewritten.push(finding(&g.id, at, &was, now));
                                changed = true;
                            }
                            None => report.unreadable.push(finding(
                                &g.id,
                                at,
                                &was,
                                "not a port list".into(),
                            )),
                        }
                    }
                }
                if changed {
                    tx.update_group(&account.id, &g)?;
                }
            }
            for (kind, field) in [
                (TemplateKind::Address, "Addresses"),
                (TemplateKind::Service, "Services"),
            ] {
                for mut t in tx.templates(&account.id, kind)? {
                    let mut changed = false;
                    for (index, entry) in t.members.iter_mut().enumerate() {
                        let at = format!("{field}.{index}");
                        let strict = match kind {
                            TemplateKind::Address => {
                                AddressEntry::parse_field(field, entry).map(|_| ())
                            }
                            _ => ServiceEntry::parse_field(field, entry).map(|_| ()),
                        };
                        let Err(why) = strict else {
                            continue;
                        };
                        let rewritten = match kind {
                            TemplateKind::Address => canonical_address(entry),
                            _ => canonical_service(entry),
                        };
                        let was = entry.clone();
                        match rewritten {
                            Some(now) => {
                                *entry = now.clone();
                                report.rewritten.push(finding(&t.id, at, &was, now));
                                changed = true;
                            }
                            None => report.unreadable.push(finding(
                                &t.id,
                                at,
                                &was,
                                why.message().to_string(),
                            )),
                        }
                    }
                    if changed {
                        tx.update_template(&account.id, &t)?;
                    }
                }
            }
        }
        tx.set_marker(MARKER, 1)?;
        Ok(Some(report))
    })
}

/// Runs [`scan_once`] and logs what it found and did, one line per value.
pub fn run_once(store: &dyn Store) -> Result<(), StoreError> {
    let Some(report) = scan_once(store)? else {
        return Ok(());
    };
    for f in &report.widened {
        tracing::warn!(
            account = %f.account,
            resource = %f.resource,
            location = %f.location,
            "stored as 0.0.0.0/0 by a version that widened any 0.0.0.0/n (and blocks such as \
             9.9.9.9/3) to 0.0.0.0/0: check that this block means every IPv4 address \
             (docs/operations.md)"
        );
    }
    for f in &report.rewritten {
        tracing::info!(
            account = %f.account,
            resource = %f.resource,
            location = %f.location,
            was = %f.was,
            now = %f.now,
            "rewrote a stored value in the canonical spelling of the same meaning"
        );
    }
    for f in &report.unreadable {
        tracing::error!(
            account = %f.account,
            resource = %f.resource,
            location = %f.location,
            value = %f.was,
            why = %f.now,
            "a stored value this version refuses: correct it (docs/operations.md); until then \
             this account's rulesets cannot be resolved and its agents keep their rules"
        );
    }
    tracing::info!(
        widened = report.widened.len(),
        rewritten = report.rewritten.len(),
        unreadable = report.unreadable.len(),
        "checked the stored rules and templates once against this version's strict forms"
    );
    Ok(())
}

/// The canonical spelling of a port list that names ports twice or holds
/// whitespace (`80, 80` -> `80`); `None` when it is not a port list at all.
fn canonical_ports(text: &str) -> Option<String> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.eq_ignore_ascii_case("ALL") {
        return Some(Ports::All.to_string());
    }
    let mut ranges = Vec::new();
    for item in text.split(',') {
        match Ports::parse_field("Port", item).ok()? {
            Ports::List(list) => ranges.extend(list),
            Ports::All => return None,
        }
    }
    let merged = Ports::List(merge_ranges(&ranges)).to_string();
    Ports::parse_field("Port", &merged).ok().map(|_| merged)
}

/// An address entry without its whitespace, if that is all it lacked.
fn canonical_address(text: &str) -> Option<String> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    AddressEntry::parse_field("Addresses", &text)
        .ok()
        .map(|_| text)
}

/// A service entry (`proto:ports`) without whitespace and with each port
/// once, if that is all it lacked.
fn canonical_service(text: &str) -> Option<String> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let text = match text.split_once(':') {
        Some((proto, ports)) => format!("{proto}:{}", canonical_ports(ports)?),
        None => text,
    };
    ServiceEntry::parse_field("Services", &text)
        .ok()
        .map(|_| text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_store::{GroupRecord, RuleRecord, SqliteStore, TemplateRecord};
    use serde_json::json;

    fn rule(port: &str, cidr: &str) -> RuleRecord {
        RuleRecord {
            body: json!({"Protocol": "TCP", "Port": port, "CidrBlock": cidr, "Action": "ACCEPT"}),
            refs: vec![],
        }
    }

    fn template(id: &str, kind: TemplateKind, members: &[&str]) -> TemplateRecord {
        TemplateRecord {
            id: id.into(),
            kind,
            name: "t".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            extra: json!(null),
            tags: vec![],
            created_time: "2026-01-01 00:00:00".into(),
            updated_time: "2026-01-01 00:00:00".into(),
        }
    }

    fn at(list: &[Finding]) -> Vec<(&str, &str, &str, &str)> {
        list.iter()
            .map(|f| {
                (
                    f.resource.as_str(),
                    f.location.as_str(),
                    f.was.as_str(),
                    f.now.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn reports_widened_rewrites_same_meaning_and_leaves_unreadable_once() -> Result<(), StoreError>
    {
        let store = SqliteStore::open(std::path::Path::new(":memory:"))?;
        let account = store.create_account("ops")?;
        let group = GroupRecord {
            id: "sg-aaaaaaaa".into(),
            name: "web".into(),
            description: String::new(),
            project_id: "0".into(),
            is_default: false,
            created_time: "2026-01-01 00:00:00".into(),
            update_time: "2026-01-01 00:00:00".into(),
            tags: vec![],
            version: 3,
            ingress: vec![rule("22", "10.0.0.0/8"), rule("80,80,443", "0.0.0.0/0")],
            egress: vec![rule("ALL", "0.0.0.0/0")],
        };
        store.write(|tx| {
            tx.insert_group(&account.id, &group)?;
            tx.insert_template(
                &account.id,
                &template(
                    "ipm-aaaaaaaa",
                    TemplateKind::Address,
                    &[
                        "192.0.2.1",
                        "0.0.0.0/0",
                        "192.0.2.5 - 192.0.2.9",
                        "9.9.9.9/3",
                    ],
                ),
            )?;
            tx.insert_template(
                &account.id,
                &template(
                    "ppm-aaaaaaaa",
                    TemplateKind::Service,
                    &["tcp: 80, 80", "udp:53"],
                ),
            )
        })?;
        let report = scan_once(&store)?.expect("the first start scans");
        assert_eq!(
            at(&report.widened),
            [
                ("sg-aaaaaaaa", "Ingress.1", WIDE, WIDE),
                ("sg-aaaaaaaa", "Egress.0", WIDE, WIDE)
            ]
        );
        assert_eq!(
            at(&report.rewritten),
            [
                ("sg-aaaaaaaa", "Ingress.1", "80,80,443", "80,443"),
                (
                    "ipm-aaaaaaaa",
                    "Addresses.2",
                    "192.0.2.5 - 192.0.2.9",
                    "192.0.2.5-192.0.2.9"
                ),
                ("ppm-aaaaaaaa", "Services.0", "tcp: 80, 80", "tcp:80"),
            ]
        );
        assert_eq!(report.unreadable.len(), 1);
        let bad = &report.unreadable[0];
        assert_eq!(
            (bad.resource.as_str(), bad.was.as_str()),
            ("ipm-aaaaaaaa", "9.9.9.9/3")
        );
        assert!(bad.now.contains("0.0.0.0/0"), "{}", bad.now);
        // Rewritten in place, same Version; the unreadable entry is kept.
        let g = store
            .read(|tx| tx.group(&account.id, "sg-aaaaaaaa"))?
            .expect("group");
        assert_eq!(g.version, 3);
        assert_eq!(g.ingress[1].body["Port"], "80,443");
        let t = store.read(|tx| tx.template(&account.id, "ipm-aaaaaaaa"))?;
        let members = t.expect("template").members;
        assert_eq!(members[2], "192.0.2.5-192.0.2.9");
        assert_eq!(members[3], "9.9.9.9/3");
        // Later starts do nothing.
        assert_eq!(scan_once(&store)?, None);
        Ok(())
    }

    #[test]
    fn canonical_forms_keep_the_meaning() {
        assert_eq!(canonical_ports("80, 80").as_deref(), Some("80"));
        assert_eq!(canonical_ports("70-90,80").as_deref(), Some("70-90"));
        assert_eq!(canonical_ports(" all ").as_deref(), Some("ALL"));
        assert_eq!(canonical_ports("80,http"), None);
        assert_eq!(canonical_address("10.0.0.0/1"), None);
        assert_eq!(canonical_service("icmp").as_deref(), Some("icmp"));
    }
}
