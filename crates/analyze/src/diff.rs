//! `palisade diff`: what changes in effect between two fleets, not in text.
//! For every instance (or one) and direction, the packets the new fleet
//! accepts that the old one dropped, and the other way round, as disjoint
//! (protocol, peer range, port range) boxes, each with a witness packet and
//! the rule that decided it before and after. Because it compares accepted
//! sets, a change of group membership (a `SecurityGroupId` peer's
//! addresses), of binding order or of template content shows up even when
//! no rule was edited, and a reordering that changes nothing shows nothing.

use crate::engine::{Engine, ListEffect};
use crate::error::AnalyzeError;
use palisade_model::{Direction, Fleet, InstanceId, SecurityGroupId};
use palisade_policy::{Packet, PacketBox, PacketSet, Verdict};
use serde::Serialize;
use std::collections::HashMap;
use std::rc::Rc;

/// At most this many boxes are listed per instance, direction and kind;
/// the counts are always complete.
pub const MAX_BOXES: usize = 100;

/// The answer of `diff`. JSON: `{"changed": bool, "instances": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    /// Whether anything changes in effect.
    pub changed: bool,
    /// One entry per instance and direction whose effect changes.
    pub instances: Vec<InstanceDiff>,
}

/// The change of one instance in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceDiff {
    /// The instance.
    pub instance: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// `changed`, `added` (only in NEW) or `removed` (only in OLD).
    pub status: &'static str,
    /// Its groups in OLD, in binding order (empty when absent).
    pub old_groups: Vec<String>,
    /// Its groups in NEW, in binding order.
    pub new_groups: Vec<String>,
    /// Packets NEW accepts and OLD dropped.
    pub newly_accepted: Vec<BoxChange>,
    /// How many boxes `newly_accepted` has in all (it lists at most [`MAX_BOXES`]).
    pub newly_accepted_boxes: usize,
    /// Packets OLD accepted and NEW drops.
    pub newly_dropped: Vec<BoxChange>,
    /// How many boxes `newly_dropped` has in all.
    pub newly_dropped_boxes: usize,
}

/// One box of changed packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxChange {
    /// The box: `{"protocols": [6, 6], "peers": "10.0.0.0/8", "ports": [80, 90]}`.
    #[serde(rename = "box")]
    pub packets: PacketBox,
    /// A packet of the box.
    pub witness: Packet,
    /// What OLD did with the witness, and which rule decided.
    pub old: Verdict,
    /// What NEW does with it.
    pub new: Verdict,
}

/// Compares `old` and `new` for every instance, or only `instance`.
pub fn diff(
    old: &Fleet,
    new: &Fleet,
    instance: Option<&InstanceId>,
) -> Result<DiffReport, AnalyzeError> {
    if let Some(id) = instance {
        if old.instance(id).is_none() && new.instance(id).is_none() {
            return Err(AnalyzeError::UnknownInstance {
                what: "--instance".to_string(),
                id: id.to_string(),
            });
        }
    }
    let mut eo = Engine::new(old)?;
    let mut en = Engine::new(new)?;
    let mut ids: Vec<&InstanceId> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in old.instances.iter().chain(&new.instances) {
        if (instance.is_none() || instance == Some(&i.id)) && seen.insert(&i.id) {
            ids.push(&i.id);
        }
    }
    type Key = (Option<Vec<SecurityGroupId>>, Option<Vec<SecurityGroupId>>);
    /// Per direction: the listed boxes and counts newly accepted, then newly dropped.
    type Listed = [(Vec<BoxChange>, usize, Vec<BoxChange>, usize); 2];
    let mut cache: HashMap<Key, Option<Rc<Listed>>> = HashMap::new();
    let mut report = DiffReport::default();
    for id in ids {
        let go = old.instance(id).map(|i| i.security_groups.clone());
        let gn = new.instance(id).map(|i| i.security_groups.clone());
        let key = (go.clone(), gn.clone());
        let changes = match cache.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = if same_groups(&eo, &en, go.as_deref(), gn.as_deref()) {
                    None
                } else {
                    let a = effect_of(&mut eo, go.as_deref());
                    let b = effect_of(&mut en, gn.as_deref());
                    let listed = Direction::BOTH.map(|d| {
                        let (x, y) = (&a.dir(d).accepted, &b.dir(d).accepted);
                        let (acc, drop) = (y.difference(x), x.difference(y));
                        let list = |set: &PacketSet| -> Vec<BoxChange> {
                            set.boxes()
                                .into_iter()
                                .take(MAX_BOXES)
                                .filter_map(|b| {
                                    let witness = PacketSet::from_box(&b).witness(d)?;
                                    Some(BoxChange {
                                        packets: b,
                                        witness,
                                        old: verdict(&eo, go.as_deref(), &witness),
                                        new: verdict(&en, gn.as_deref(), &witness),
                                    })
                                })
                                .collect()
                        };
                        (list(&acc), acc.box_count(), list(&drop), drop.box_count())
                    });
                    Some(Rc::new(listed))
                };
                cache.insert(key, c.clone());
                c
            }
        };
        let Some(changes) = changes else {
            continue;
        };
        for (k, direction) in Direction::BOTH.into_iter().enumerate() {
            let (acc, acc_n, drop, drop_n) = &changes[k];
            if *acc_n == 0 && *drop_n == 0 {
                continue;
            }
            report.instances.push(InstanceDiff {
                instance: id.to_string(),
                direction: direction.as_str(),
                status: match (&go, &gn) {
                    (None, Some(_)) => "added",
                    (Some(_), None) => "removed",
                    _ => "changed",
                },
                old_groups: names(go.as_deref()),
                new_groups: names(gn.as_deref()),
                newly_accepted: acc.clone(),
                newly_accepted_boxes: *acc_n,
                newly_dropped: drop.clone(),
                newly_dropped_boxes: *drop_n,
            });
        }
    }
    report.changed = !report.instances.is_empty();
    Ok(report)
}

/// Whether both lists name the same groups in the same order and each of
/// them matches and accepts the same packets in both fleets (then the
/// effect is the same without composing it; sets compare in constant
/// representation, see `policy::space`).
fn same_groups(
    eo: &Engine<'_>,
    en: &Engine<'_>,
    go: Option<&[SecurityGroupId]>,
    gn: Option<&[SecurityGroupId]>,
) -> bool {
    let (Some(go), Some(gn)) = (go, gn) else {
        return false;
    };
    go == gn
        && go.iter().all(|g| match (eo.group(g), en.group(g)) {
            (Some(a), Some(b)) => Direction::BOTH.iter().all(|d| {
                let (x, y) = (a.dir(*d), b.dir(*d));
                x.matched == y.matched && x.accepted == y.accepted
            }),
            _ => false,
        })
}

fn effect_of(e: &mut Engine<'_>, groups: Option<&[SecurityGroupId]>) -> Rc<ListEffect> {
    match groups {
        Some(g) => e.effect(g),
        None => Rc::new(ListEffect::default()),
    }
}

fn verdict(e: &Engine<'_>, groups: Option<&[SecurityGroupId]>, p: &Packet) -> Verdict {
    groups
        .and_then(|g| e.decide(g, p))
        .map_or_else(Verdict::default_drop, Verdict::by)
}

fn names(groups: Option<&[SecurityGroupId]>) -> Vec<String> {
    groups
        .unwrap_or_default()
        .iter()
        .map(|g| g.to_string())
        .collect()
}
