//! `AddressEntry::parse_field` (an address template entry: IP, CIDR or
//! range `a-b`) on any string. Panic contract: no input panics. Properties:
//! an accepted entry prints back to itself and the CIDR blocks of its range
//! tile the range exactly (sorted, adjacent, no gaps, no overlap).

use palisade_model::AddressEntry;

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entry) = AddressEntry::parse_field("Addresses", text) else {
        return;
    };
    let printed = entry.to_string();
    let again = AddressEntry::parse_field("Addresses", &printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(
        again.range(),
        entry.range(),
        "{text:?} does not survive printing"
    );
    let range = entry.range();
    assert!(range.lo() <= range.hi(), "{text:?}: inverted range");
    let blocks = range.to_cidrs();
    assert!(!blocks.is_empty(), "{text:?}: no blocks");
    assert!(blocks.len() <= 2 * 128, "{text:?}: {} blocks", blocks.len());
    assert_eq!(blocks[0].range().lo(), range.lo(), "{text:?}: first block");
    assert_eq!(
        blocks[blocks.len() - 1].range().hi(),
        range.hi(),
        "{text:?}: last block"
    );
    for w in blocks.windows(2) {
        assert_eq!(
            w[0].range().hi().checked_add(1),
            Some(w[1].range().lo()),
            "{text:?}: blocks {} and {} do not touch",
            w[0],
            w[1]
        );
    }
}
