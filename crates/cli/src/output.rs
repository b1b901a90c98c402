//! Output helpers shared by the commands: the `--output` choice and the
//! human tables (every table has a `--output json` twin).

use clap::ValueEnum;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ColumnConstraint, ContentArrangement, Table, Width};
use palisade_model::{Direction, Policy};
use serde::Serialize;

/// `--output table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A new table with Palisade's look, as wide as the terminal, or as
/// `COLUMNS` says when that is set (a pipe has no width of its own).
/// Print it through [`whole_words`].
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    if let Some(width) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
    {
        t.set_width(width);
    }
    t
}

/// `t`, with every column at least as wide as its longest word, so that
/// cells wrap only at spaces. comfy-table cuts a word longer than its
/// column anywhere, and an address or CIDR cut in two reads as two
/// different ones; a table wider than the terminal is the lesser harm.
pub fn whole_words(mut t: Table) -> Table {
    let mut widest: Vec<usize> = Vec::new();
    for row in t.header().into_iter().chain(t.row_iter()) {
        for (i, cell) in row.cell_iter().enumerate() {
            let longest = cell
                .content()
                .split_whitespace()
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(0);
            if widest.len() <= i {
                widest.resize(i + 1, 0);
            }
            widest[i] = widest[i].max(longest);
        }
    }
    for (column, longest) in t.column_iter_mut().zip(widest) {
        let width = u16::try_from(longest)
            .unwrap_or(u16::MAX)
            .saturating_add(column.padding_width());
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(width)));
    }
    t
}

/// One direction's rules as a table: index, protocol, port, peer, action, description.
pub fn rules_table(direction: Direction, rules: &[Policy]) -> Table {
    let peer = match direction {
        Direction::Ingress => "Source",
        Direction::Egress => "Destination",
    };
    let mut t = table(&["#", "Protocol", "Port", peer, "Action", "Description"]);
    for (i, rule) in rules.iter().enumerate() {
        let w = rule.to_wire_compact();
        let service = match (&w.protocol, &w.service_template) {
            (Some(p), _) => (p.clone(), w.port.clone().unwrap_or_else(|| "ALL".into())),
            (None, Some(s)) => {
                let id = if s.service_id.is_empty() {
                    &s.service_group_id
                } else {
                    &s.service_id
                };
                ("template".into(), id.clone())
            }
            (None, None) => (String::new(), String::new()),
        };
        t.add_row(vec![
            i.to_string(),
            service.0,
            service.1,
            rule.peer.to_string(),
            rule.action.to_string(),
            rule.description.clone(),
        ]);
    }
    whole_words(t)
}
