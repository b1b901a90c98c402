//! `ServiceEntry::parse_field` (a service template entry: `tcp:80`,
//! `udp:53,5353`, `icmp`) on any string. Panic contract: no input panics.
//! Properties: an accepted entry prints back to itself and only TCP/UDP-like
//! protocols carry ports.

use palisade_model::ServiceEntry;

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entry) = ServiceEntry::parse_field("Services", text) else {
        return;
    };
    if !entry.protocol.has_ports() {
        assert!(
            entry.ports.is_all(),
            "{text:?}: ports on a portless protocol"
        );
    }
    let printed = entry.to_string();
    let again = ServiceEntry::parse_field("Services", &printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, entry, "{text:?} does not survive printing");
}
