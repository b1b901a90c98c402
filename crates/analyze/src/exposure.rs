//! The exposure audit (`EXP001`, `EXP002`): what an instance really accepts
//! from the Internet, after binding order and DROP rules.
//!
//! "Reachable from 0.0.0.0/0 or ::/0" is measured, not pattern-matched: a
//! (protocol, port) is exposed when the instance accepts it from at least
//! half of the public unicast space of a family (IPv4 without the private,
//! shared, loopback, link-local, multicast and reserved blocks; IPv6's
//! 2000::/3). An ACCEPT from 0.0.0.0/0 with a few blocked ranges above it
//! still counts; an allow-list of office networks does not; a DROP from
//! 0.0.0.0/0 above the ACCEPT hides it entirely.

use crate::check::{binding_classes, instances_phrase, packets, public_ranges, size, CheckOptions};
use crate::engine::Engine;
use crate::finding::{CheckId, Finding};
use palisade_model::{AddrRange, Direction, Family};
use palisade_policy::{PacketSet, TCP, UDP};

pub(crate) fn run(e: &mut Engine<'_>, options: &CheckOptions, out: &mut Vec<Finding>) {
    let fleet = e.fleet();
    let public: Vec<(Family, Vec<AddrRange>, u128)> = [Family::V4, Family::V6]
        .into_iter()
        .map(|f| {
            let r = public_ranges(f);
            let n = size(r.iter().copied());
            (f, r, n)
        })
        .collect();
    for (groups, instances) in binding_classes(fleet) {
        if groups.is_empty() {
            continue;
        }
        let eff = e.effect(&groups);
        let accepted = &eff.ingress.accepted;
        if accepted.is_empty() {
            continue;
        }
        let who = instances_phrase(&instances);
        for sp in &options.sensitive_ports {
            for (family, ranges, total) in &public {
                let open = accepted.intersection(&packets(
                    sp.protocol,
                    sp.protocol,
                    ranges,
                    (sp.port, sp.port),
                ));
                let n = size(open.boxes().into_iter().map(|b| b.peers));
                if n == 0 || n.saturating_mul(2) < *total {
                    continue;
                }
                let Some(w) = crate::check::witness(&open, Direction::Ingress) else {
                    continue;
                };
                let any = if *family == Family::V4 {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                };
                let rule = e.decide(&groups, &w);
                let mut loc = match rule {
                    Some(r) => e.rule_location(r.origin()),
                    None => e.group_location(&groups[0]),
                };
                loc.instance = instances.first().map(|i| i.to_string());
                let by = rule
                    .map(|r| format!("{} ({})", r.origin(), r.policy()))
                    .unwrap_or_default();
                out.push(
                    Finding::new(
                        CheckId::Exp001,
                        format!(
                            "{sp} ({}) on {who} is reachable from {any}: {by} accepts e.g. {w}. \
                             Fix: narrow that rule's source to the networks that need it (an \
                             address template of admin ranges), or put a DROP for {sp} from {any} \
                             above it",
                            sp.service()
                        ),
                        loc,
                    )
                    .with_witness(Some(w)),
                );
                break;
            }
        }
        for proto in [TCP, UDP] {
            for (family, ranges, total) in &public {
                let open = accepted.intersection(&packets(proto, proto, ranges, (1, u16::MAX)));
                let full = fully_open(&open);
                if full.is_empty() || size(full.iter().copied()).saturating_mul(2) < *total {
                    continue;
                }
                let Some(w) = crate::check::witness(&open, Direction::Ingress) else {
                    continue;
                };
                let any = if *family == Family::V4 {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                };
                let name = palisade_policy::eval::protocol_name(proto);
                let rule = e.decide(&groups, &w);
                let mut loc = match rule {
                    Some(r) => e.rule_location(r.origin()),
                    None => e.group_location(&groups[0]),
                };
                loc.instance = instances.first().map(|i| i.to_string());
                let by = rule
                    .map(|r| format!("{} ({})", r.origin(), r.policy()))
                    .unwrap_or_default();
                out.push(
                    Finding::new(
                        CheckId::Exp002,
                        format!(
                            "every {name} port of {who} is reachable from {any} (e.g. {w}, \
                             accepted by {by}). Fix: allow only the ports the instance serves \
                             (for a TKE node, {name} 30000-32768 for NodePorts), from the \
                             sources that need them"
                        ),
                        loc,
                    )
                    .with_witness(Some(w)),
                );
                break;
            }
        }
    }
}

/// The address ranges of `set` (one protocol) that accept every port 1-65535.
fn fully_open(set: &PacketSet) -> Vec<AddrRange> {
    let mut out = Vec::new();
    let boxes = set.boxes();
    let mut i = 0;
    while i < boxes.len() {
        let peers = boxes[i].peers;
        let mut next: u32 = 1;
        let mut j = i;
        while j < boxes.len() && boxes[j].peers == peers {
            let p = boxes[j].ports;
            if u32::from(p.lo()) <= next {
                next = next.max(u32::from(p.hi()) + 1);
            }
            j += 1;
        }
        if next > u32::from(u16::MAX) {
            out.push(peers);
        }
        i = j;
    }
    out
}
