//! Least-privilege proposals from observed traffic (DESIGN.md section 8,
//! "Preview"; issue 20): the ordered rule list that accepts every flow an
//! instance or a group was seen to accept, and as little else as
//! practical, with the proof that it does and how much smaller it is.
//!
//! How the rules are made, per direction, from the distinct (peer,
//! protocol, port) triples of the accepted records in scope:
//!
//! 1. **Group references.** Peers that are members of a group become one
//!    `SecurityGroupId` rule when the observed peers are at least half of
//!    the group's member addresses (greedily, the group covering most
//!    peers first): a group is how a fleet names "these nodes", and the
//!    reference follows membership as nodes come and go.
//! 2. **CIDRs.** Every other peer falls in a bucket of its aggregation
//!    prefix (`aggregate_v4`, default /24; `aggregate_v6`, default /64);
//!    a bucket becomes the longest CIDR covering its observed peers (one
//!    peer stays a single address), never wider than the bucket.
//! 3. **Ports.** Per peer block and protocol, the observed ports, adjacent
//!    ones merged into ranges (`80,443,8000-8002`). A TCP or UDP flow
//!    without a port (or port 0, which no port list can name) makes the
//!    block's ports `ALL`; a protocol Tencent has no name for (not TCP,
//!    UDP, ICMP, ICMPv6 or GRE) can only be allowed as `ALL`, and the
//!    description says so.
//!
//! Every rule is ACCEPT, so their order changes nothing; group references
//! come first, then CIDRs by address. Each rule's description says what
//! it covers (peers, flows, dates seen). Coverage is checked, not assumed:
//! the suggested rules are resolved and every observed flow is classified
//! against them. The exposure (the `volume` of the accepted packet set,
//! addresses x ports per protocol, from the exact set algebra) is compared
//! with the scope's current rules.

use crate::error::AnalyzeError;
use palisade_model::fleet::{GroupEntry, InstanceEntry};
use palisade_model::flow::{FlowRecord, Verdict as Observed};
use palisade_model::proto::merge_ranges;
use palisade_model::{
    wire, Action, Cidr, Direction, Family, Fleet, FleetFile, InstanceId, Peer, Policy, PortRange,
    Ports, Protocol, SecurityGroupId, Service,
};
use palisade_policy::{decompose, Classifier, FleetIndex, PacketSet, ResolvedRule, RuleOrigin};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Whose rules to propose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every accepted flow of this instance: a group to bind it to alone.
    Instance(InstanceId),
    /// Every flow a rule of this group accepted: new rules for the group.
    Group(SecurityGroupId),
}

/// The knobs of [`Suggester`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuggestOptions {
    /// IPv4 peers are aggregated into CIDRs no wider than this prefix.
    pub aggregate_v4: u8,
    /// IPv6 peers are aggregated into CIDRs no wider than this prefix.
    pub aggregate_v6: u8,
    /// Count `WOULD_DROP` records (audit mode) as flows to allow.
    pub include_would_drop: bool,
}

impl Default for SuggestOptions {
    fn default() -> Self {
        SuggestOptions {
            aggregate_v4: 24,
            aggregate_v6: 64,
            include_would_drop: false,
        }
    }
}

/// How often a (peer, protocol, port) was seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    records: u64,
    first: u64,
    last: u64,
}

type FlowKey = (IpAddr, u8, Option<u16>);

/// Collects the records in scope; [`Suggester::finish`] proposes.
#[derive(Debug)]
pub struct Suggester<'f> {
    fleet: &'f Fleet,
    scope: Scope,
    options: SuggestOptions,
    flows: [HashMap<FlowKey, Seen>; 2],
    records: u64,
}

impl<'f> Suggester<'f> {
    /// A suggester for `scope` in `fleet`; the instance or group must exist.
    pub fn new(
        fleet: &'f Fleet,
        scope: Scope,
        options: SuggestOptions,
    ) -> Result<Suggester<'f>, AnalyzeError> {
        let ok = match &scope {
            Scope::Instance(id) => fleet.instance(id).is_some(),
            Scope::Group(id) => fleet.group(id).is_some(),
        };
        if !ok {
            let (what, id) = match &scope {
                Scope::Instance(id) => ("--instance", id.to_string()),
                Scope::Group(id) => ("--group", id.to_string()),
            };
            return Err(AnalyzeError::Malformed {
                field: what.to_string(),
                value: id,
                why: "ResourceNotFound: not in the fleet".to_string(),
            });
        }
        for p in [options.aggregate_v4, options.aggregate_v6] {
            if p == 0 {
                return Err(AnalyzeError::Malformed {
                    field: "--aggregate".to_string(),
                    value: "0".to_string(),
                    why: "a prefix of at least 1 (0 would allow every address)".to_string(),
                });
            }
        }
        if options.aggregate_v4 > 32 || options.aggregate_v6 > 128 {
            return Err(AnalyzeError::Malformed {
                field: "--aggregate-v4/--aggregate-v6".to_string(),
                value: format!("{}/{}", options.aggregate_v4, options.aggregate_v6),
                why: "at most 32 for IPv4 and 128 for IPv6".to_string(),
            });
        }
        Ok(Suggester {
            fleet,
            scope,
            options,
            flows: [HashMap::new(), HashMap::new()],
            records: 0,
        })
    }

    /// Takes one record, if it is an accepted flow of the scope.
    pub fn add(&mut self, r: &FlowRecord) {
        let passed = r.action == Observed::Accept
            || (self.options.include_would_drop && r.action == Observed::WouldDrop);
        let mine = match &self.scope {
            Scope::Instance(id) => &r.instance_id == id,
            Scope::Group(id) => r.rule.as_ref().is_some_and(|x| &x.security_group_id == id),
        };
        if !passed || !mine {
            return;
        }
        self.records += 1;
        let port = if palisade_policy::has_ports(r.protocol) {
            Some(r.service_port().unwrap_or(0))
        } else {
            None
        };
        let key = (r.peer(), r.protocol, port);
        let s = self.flows[dir_index(r.direction)]
            .entry(key)
            .or_insert(Seen {
                records: 0,
                first: u64::MAX,
                last: 0,
            });
        s.records += 1;
        s.first = s.first.min(r.start);
        s.last = s.last.max(r.end);
    }

    /// The proposal.
    pub fn finish(self) -> Result<Suggestion, AnalyzeError> {
        let catalog = FleetIndex::new(self.fleet);
        // Member address -> groups it belongs to, and each group's size.
        let mut groups_of: HashMap<IpAddr, Vec<SecurityGroupId>> = HashMap::new();
        let mut size: HashMap<SecurityGroupId, usize> = HashMap::new();
        for i in &self.fleet.instances {
            for g in &i.security_groups {
                *size.entry(g.clone()).or_default() += i.private_ips.len();
                for ip in &i.private_ips {
                    groups_of.entry(*ip).or_default().push(g.clone());
                }
            }
        }
        let origin_group = match &self.scope {
            Scope::Group(g) => g.clone(),
            Scope::Instance(_) => SUGGESTED.parse().map_err(|e: palisade_model::ModelError| {
                AnalyzeError::Malformed {
                    field: "group".into(),
                    value: SUGGESTED.into(),
                    why: e.to_string(),
                }
            })?,
        };
        let current = match &self.scope {
            Scope::Instance(id) => palisade_policy::resolve_instance(self.fleet, id)?,
            Scope::Group(g) => palisade_policy::resolve(&catalog, std::slice::from_ref(g))?,
        };
        let mut directions = Vec::new();
        let mut wire_lists: [Vec<wire::SecurityGroupPolicy>; 2] = [Vec::new(), Vec::new()];
        for d in Direction::BOTH {
            let flows = &self.flows[dir_index(d)];
            let policies = propose(flows, &groups_of, &size, self.options);
            let resolved: Vec<ResolvedRule> = policies
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    palisade_policy::resolve::resolve_policy(
                        &catalog,
                        RuleOrigin {
                            security_group_id: origin_group.clone(),
                            direction: d,
                            policy_index: i,
                        },
                        p,
                    )
                })
                .collect::<Result<_, _>>()?;
            let classifier = Classifier::build(&resolved);
            let uncovered: Vec<UncoveredFlow> = flows
                .keys()
                .filter(|(peer, proto, port)| {
                    classifier
                        .lookup(*proto, *peer, *port)
                        .and_then(|i| resolved.get(i))
                        .is_none_or(|r| r.action() != Action::Accept)
                })
                .map(|&(peer, protocol, port)| UncoveredFlow {
                    peer,
                    protocol,
                    port,
                })
                .collect();
            let before = decompose(current.rules(d)).accepted;
            let after = decompose(&resolved).accepted;
            directions.push(DirectionSuggestion {
                direction: d.as_str(),
                flows: flows.len(),
                records: flows.values().map(|s| s.records).sum(),
                rules: policies.iter().map(Policy::to_wire_compact).collect(),
                covered: flows.len() - uncovered.len(),
                uncovered,
                exposure: Exposure::of(&before, &after),
            });
            wire_lists[dir_index(d)] = policies.iter().map(Policy::to_wire_compact).collect();
        }
        let [ingress, egress] = wire_lists;
        let policies = wire::SecurityGroupPolicySet {
            ingress: Some(ingress),
            egress: Some(egress),
            ..Default::default()
        };
        let mut fragment = FleetFile::default();
        match &self.scope {
            Scope::Group(g) => {
                let group = self.fleet.group(g);
                fragment.security_groups.push(GroupEntry {
                    id: g.to_string(),
                    name: group.map(|x| x.name.clone()).unwrap_or_default(),
                    description: group.map(|x| x.description.clone()).unwrap_or_default(),
                    policies,
                });
            }
            Scope::Instance(id) => {
                let name = format!("suggested-{id}");
                fragment.security_groups.push(GroupEntry {
                    id: String::new(),
                    name: name.clone(),
                    description: format!("least privilege for {id}, from its flow records"),
                    policies,
                });
                if let Some(i) = self.fleet.instance(id) {
                    fragment.instances.push(InstanceEntry {
                        id: id.to_string(),
                        name: i.name.clone(),
                        private_ips: i.private_ips.iter().map(|a| a.to_string()).collect(),
                        security_groups: vec![name],
                    });
                }
            }
        }
        let covered = directions.iter().all(|d| d.uncovered.is_empty());
        Ok(Suggestion {
            scope: match &self.scope {
                Scope::Instance(id) => format!("instance {id}"),
                Scope::Group(g) => format!("group {g}"),
            },
            records: self.records,
            every_flow_accepted: covered,
            directions,
            fragment,
        })
    }
}

/// The id the rules of an instance's proposal carry while they are checked.
const SUGGESTED: &str = "sg-suggest0";

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// A peer block and what was seen from it.
struct Block {
    peer: Peer,
    what: String,
    services: BTreeMap<u8, BTreeSet<u16>>,
    /// Protocols seen without a nameable port (port 0): ports `ALL`.
    any_port: BTreeSet<u8>,
    records: u64,
    first: u64,
    last: u64,
}

impl Block {
    fn new(peer: Peer, what: String) -> Block {
        Block {
            peer,
            what,
            services: BTreeMap::new(),
            any_port: BTreeSet::new(),
            records: 0,
            first: u64::MAX,
            last: 0,
        }
    }

    fn add(&mut self, protocol: u8, port: Option<u16>, seen: &Seen) {
        let ports = self.services.entry(protocol).or_default();
        match port {
            Some(0) => {
                self.any_port.insert(protocol);
            }
            Some(p) => {
                ports.insert(p);
            }
            None => {}
        }
        self.records += seen.records;
        self.first = self.first.min(seen.first);
        self.last = self.last.max(seen.last);
    }
}

/// The rules of one direction; see the module documentation.
fn propose(
    flows: &HashMap<FlowKey, Seen>,
    groups_of: &HashMap<IpAddr, Vec<SecurityGroupId>>,
    size: &HashMap<SecurityGroupId, usize>,
    options: SuggestOptions,
) -> Vec<Policy> {
    let peers: BTreeSet<IpAddr> = flows.keys().map(|k| k.0).collect();
    // 1. Group references, greedily.
    let mut remaining = peers.clone();
    let mut by_group: Vec<(SecurityGroupId, BTreeSet<IpAddr>)> = Vec::new();
    loop {
        let mut cover: BTreeMap<&SecurityGroupId, BTreeSet<IpAddr>> = BTreeMap::new();
        for ip in &remaining {
            for g in groups_of.get(ip).into_iter().flatten() {
                cover.entry(g).or_default().insert(*ip);
            }
        }
        let best = cover
            .into_iter()
            .filter(|(g, c)| c.len() * 2 >= size.get(*g).copied().unwrap_or(usize::MAX))
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)));
        let Some((g, c)) = best else {
            break;
        };
        for ip in &c {
            remaining.remove(ip);
        }
        by_group.push((g.clone(), c));
    }
    let mut block_of: HashMap<IpAddr, usize> = HashMap::new();
    let mut blocks: Vec<Block> = Vec::new();
    for (g, members) in by_group {
        for ip in &members {
            block_of.insert(*ip, blocks.len());
        }
        let what = format!("{} member peer(s) of {g}", members.len());
        blocks.push(Block::new(Peer::SecurityGroup(g), what));
    }
    // 2. CIDRs per aggregation bucket.
    let mut buckets: BTreeMap<(Family, u128), Vec<IpAddr>> = BTreeMap::new();
    for ip in &remaining {
        let family = Family::of(*ip);
        let bits = match family {
            Family::V4 => options.aggregate_v4,
            Family::V6 => options.aggregate_v6,
        };
        let n = palisade_model::addr::ip_to_u128(*ip);
        buckets
            .entry((family, n & prefix_mask(family, bits)))
            .or_default()
            .push(*ip);
    }
    for ((family, _), ips) in buckets {
        let nums: Vec<u128> = ips
            .iter()
            .map(|ip| palisade_model::addr::ip_to_u128(*ip))
            .collect();
        let (lo, hi) = (
            nums.iter().copied().min().unwrap_or(0),
            nums.iter().copied().max().unwrap_or(0),
        );
        let total = family.bits();
        // The longest prefix whose block holds both ends.
        let common = u32::from(total) - (lo ^ hi).checked_ilog2().map_or(0, |b| b + 1);
        let bits = u8::try_from(common).unwrap_or(total);
        let network = lo & prefix_mask(family, bits);
        let ip = palisade_model::addr::u128_to_ip(family, network);
        // A single address is written bare, as people write it.
        let text = if bits == total {
            ip.to_string()
        } else {
            format!("{ip}/{bits}")
        };
        let cidr = match Cidr::parse_any("peer", &text) {
            Ok(c) => c,
            // Made from a valid address and prefix: never taken.
            Err(_) => continue,
        };
        let peer = match family {
            Family::V4 => Peer::Cidr(cidr),
            Family::V6 => Peer::Ipv6Cidr(cidr),
        };
        for ip in &ips {
            block_of.insert(*ip, blocks.len());
        }
        let what = if ips.len() == 1 {
            "1 peer".to_string()
        } else {
            format!("{} peers", ips.len())
        };
        blocks.push(Block::new(peer, what));
    }
    for (key, seen) in flows {
        if let Some(b) = block_of.get(&key.0).and_then(|&i| blocks.get_mut(i)) {
            b.add(key.1, key.2, seen);
        }
    }
    // 3. One rule per block and protocol.
    let mut out = Vec::new();
    for b in &blocks {
        for (&proto, ports) in &b.services {
            let (protocol, note) = match proto {
                6 => (Protocol::Tcp, ""),
                17 => (Protocol::Udp, ""),
                1 => (Protocol::Icmp, ""),
                58 => (Protocol::Icmpv6, ""),
                47 => (Protocol::Gre, ""),
                _ => (Protocol::All, " (protocol has no Tencent name: ALL)"),
            };
            let ports = if matches!(protocol, Protocol::Tcp | Protocol::Udp)
                && !b.any_port.contains(&proto)
                && !ports.is_empty()
            {
                let ranges: Vec<PortRange> = ports.iter().map(|&p| PortRange::single(p)).collect();
                Ports::List(merge_ranges(&ranges))
            } else {
                Ports::All
            };
            let proto_text = if note.is_empty() {
                String::new()
            } else {
                format!(" proto {proto}{note}")
            };
            let description = format!(
                "observed: {}, {} record(s) {}..{}{proto_text}",
                b.what,
                b.records,
                date(b.first),
                date(b.last)
            );
            out.push(Policy {
                service: Service::Protocol { protocol, ports },
                peer: b.peer.clone(),
                action: Action::Accept,
                description,
                modify_time: None,
                priority: None,
            });
        }
    }
    out
}

/// The mask keeping the first `bits` bits of a `family` address.
fn prefix_mask(family: Family, bits: u8) -> u128 {
    let total = u32::from(family.bits());
    let bits = u32::from(bits).min(total);
    if bits == 0 {
        return 0;
    }
    family.max() & !family.max().checked_shr(bits).unwrap_or(0)
}

/// `YYYY-MM-DD` of a Unix time (UTC), by the days-from-civil inverse.
pub fn date(t: u64) -> String {
    let z = (t / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proposal for one scope.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    /// `instance ins-...` or `group sg-...`.
    pub scope: String,
    /// Accepted records of the scope it was built from.
    pub records: u64,
    /// Whether the suggested rules accept every observed flow (both directions).
    pub every_flow_accepted: bool,
    /// Per direction: the rules, coverage and exposure.
    pub directions: Vec<DirectionSuggestion>,
    /// The rules as a fleet file fragment that `plan` and `apply` take.
    pub fragment: FleetFile,
}

/// The proposal for one direction.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionSuggestion {
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// Distinct (peer, protocol, port) flows observed.
    pub flows: usize,
    /// Records of them.
    pub records: u64,
    /// The suggested rules, in order (tccli fields).
    pub rules: Vec<wire::SecurityGroupPolicy>,
    /// Flows the suggested rules accept.
    pub covered: usize,
    /// Flows they do not (none, unless something is wrong).
    pub uncovered: Vec<UncoveredFlow>,
    /// The accepted space now and suggested.
    pub exposure: Exposure,
}

/// An observed flow the suggestion does not accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UncoveredFlow {
    /// The remote address.
    pub peer: IpAddr,
    /// The IP protocol number.
    pub protocol: u8,
    /// The destination port.
    pub port: Option<u16>,
}

/// The size of what a direction accepts, as
/// [`PacketSet::volume`] counts it (addresses x ports, per protocol).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Exposure {
    /// IPv4 points the current rules accept.
    pub current_v4: f64,
    /// IPv4 points the suggested rules accept.
    pub suggested_v4: f64,
    /// IPv6 points the current rules accept.
    pub current_v6: f64,
    /// IPv6 points the suggested rules accept.
    pub suggested_v6: f64,
    /// Whether the suggested set is a subset of the current one (it need
    /// not be: a flow the current rules drop may be observed in audit mode).
    pub suggested_within_current: bool,
}

impl Exposure {
    fn of(current: &PacketSet, suggested: &PacketSet) -> Exposure {
        Exposure {
            current_v4: current.volume(Family::V4),
            suggested_v4: suggested.volume(Family::V4),
            current_v6: current.volume(Family::V6),
            suggested_v6: suggested.volume(Family::V6),
            suggested_within_current: suggested.is_subset(current),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;
    use crate::testing::{fleet_yaml, rules_strategy};
    use proptest::prelude::*;

    #[test]
    fn dates_read_as_calendar_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_700_000_000), "2023-11-14");
        assert_eq!(date(951_782_400), "2000-02-29");
    }

    #[test]
    fn members_become_a_reference_and_the_rest_cidrs_and_ranges() {
        let fleet = Fleet::parse(&fleet_yaml(&[])).unwrap();
        let mut s = Suggester::new(
            &fleet,
            Scope::Instance("ins-node0001".parse().unwrap()),
            SuggestOptions::default(),
        )
        .unwrap();
        let rec = |peer: &str, port: u16| {
            crate::testing::record("ins-node0001", Direction::Ingress, 6, peer, Some(port))
        };
        for (peer, port) in [
            ("198.18.0.6", 22),
            ("198.18.0.17", 22),
            ("203.0.113.9", 80),
            ("203.0.113.10", 81),
            ("203.0.113.10", 82),
            ("192.0.2.1", 443),
        ] {
            s.add(&rec(peer, port));
        }
        let sug = s.finish().unwrap();
        assert!(sug.every_flow_accepted);
        let rules = &sug.directions[0].rules;
        let peers: Vec<String> = rules
            .iter()
            .map(|r| {
                r.security_group_id
                    .clone()
                    .or(r.cidr_block.clone())
                    .unwrap()
            })
            .collect();
        assert_eq!(peers, vec!["sg-peers001", "192.0.2.1", "203.0.113.8/30"]);
        assert_eq!(rules[2].port.as_deref(), Some("80-82"));
        assert!(rules[0]
            .policy_description
            .as_deref()
            .unwrap()
            .contains("2 member peer(s) of sg-peers001"));
        assert_eq!(
            sug.fragment.instances[0].security_groups,
            vec!["suggested-ins-node0001"]
        );
        // The fragment reads back as a fleet file.
        let text = serde_json::to_string(&sug.fragment).unwrap();
        let _: FleetFile = palisade_model::yaml::from_str(&text).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Every suggested rule list accepts every flow it was built from,
        /// whatever the aggregation, for both scopes.
        #[test]
        fn suggestions_accept_every_flow_they_were_built_from(
            rules in rules_strategy(8),
            flows in prop::collection::vec(crate::testing::flow(), 1..150),
            v4 in 1u8..=32,
            v6 in 1u8..=128,
            group in any::<bool>(),
        ) {
            let fleet = Fleet::parse(&fleet_yaml(&rules)).unwrap();
            let scope = if group {
                Scope::Group("sg-aaaaaaaa".parse().unwrap())
            } else {
                Scope::Instance("ins-node0001".parse().unwrap())
            };
            let options = SuggestOptions { aggregate_v4: v4, aggregate_v6: v6, include_would_drop: false };
            let mut s = Suggester::new(&fleet, scope, options).unwrap();
            for r in &flows {
                s.add(r);
            }
            let sug = s.finish().unwrap();
            prop_assert!(sug.every_flow_accepted, "{:?}", sug.directions);
            // Checked independently: the rules resolved and evaluated linearly.
            let catalog = FleetIndex::new(&fleet);
            for (k, d) in Direction::BOTH.into_iter().enumerate() {
                let rules: Vec<ResolvedRule> = sug.directions[k].rules.iter().enumerate().map(|(i, w)| {
                    let p = Policy::from_wire(w).unwrap();
                    palisade_policy::resolve::resolve_policy(&catalog, RuleOrigin {
                        security_group_id: SUGGESTED.parse().unwrap(), direction: d, policy_index: i }, &p).unwrap()
                }).collect();
                for r in flows.iter().filter(|r| r.direction == d && r.action == Observed::Accept) {
                    let p = crate::replay::packet_of(r);
                    let i = palisade_policy::eval::first_match_index(&rules, &p);
                    prop_assert!(i.is_some(), "{} not accepted by {:?}", p, sug.directions[k].rules);
                }
            }
        }
    }
}
