//! A connection-tracking simulator (DESIGN.md section 2, "Stateful", and
//! section 3): what an instance's firewall does over a sequence of packets
//! and rule changes, modelled on the Linux conntrack the agent relies on,
//! so that the agent's kernel tests can replay the same events and compare.
//!
//! - The first packet of a flow is checked against its direction's rules
//!   (first match, default drop). Accepted, it creates the flow.
//! - Later packets of the flow in the same direction (`Established`) and in
//!   the other direction (`Reply`) pass without a check; the other
//!   direction's rules are never consulted for a reply.
//! - An ICMP or ICMPv6 error that quotes a packet of a tracked flow
//!   (`Related`) passes.
//! - Flows are keyed as conntrack keys them: TCP and UDP by protocol,
//!   addresses and ports; ICMP echo by addresses, identifier and which side
//!   sent the request (an echo reply is only ever a reply); any other
//!   protocol by protocol and addresses.
//! - Invalid, as conntrack marks it and the agent's baseline drops it
//!   (`ct state invalid drop`): an echo reply or an ICMP error that belongs
//!   to no tracked flow, an ICMP error quoting an ICMP error, a packet whose
//!   two addresses are of different families.
//! - A ruleset change applies to new flows at once. Every tracked flow is
//!   re-checked as its first packet: still accepted, it is not disturbed
//!   (its deciding rule is updated); no longer accepted, it is **cut**.
//!
//! Choice (Palisade departs from AWS here, DESIGN.md section 2): by default
//! ([`CutMode::OriginalDirection`], what the agent's kernel ruleset does) a
//! cut flow's next packets in the original direction are dropped, while its
//! replies and related ICMP errors still pass until conntrack forgets the
//! flow. [`CutMode::BothDirections`] is the stricter model the kernel does
//! not implement yet: a cut flow is kept as a tombstone and every later
//! packet of it is dropped, in the original direction *and* in the reply
//! direction, and so are ICMP errors about it. Passing replies would
//! let a server keep streaming to a client whose access was revoked (a UDP
//! stream refreshes its conntrack entry forever); forgetting the flow
//! instead would let a reply be taken for the first packet of a new flow in
//! the other direction, which a permissive egress list would accept,
//! reviving the connection from the other end. The tombstone closes both
//! doors. A later rule change that allows the flow again restores it.
//!
//! [`CutMode::OriginalDirection`] is the literal reading of DESIGN.md
//! section 2 ("its next packets in the original direction are dropped"),
//! which is what a kernel ruleset gives when it re-checks only
//! original-direction packets whose conntrack mark is stale and accepts
//! `ct direction reply` and `ct state related` unconditionally (the agent,
//! docs/agent.md). For TCP that ends the connection (the peer's data and
//! ACKs no longer arrive); a one-way stream of replies (UDP from the
//! instance to a revoked client) keeps flowing until it stops. Differential
//! tests against the kernel use this mode.
//!
//! Flows never time out here (the simulator has no clock); TCP flags and
//! states are not modelled (Linux picks up mid-stream TCP as new by default).

use crate::codec;
use crate::eval::{evaluate, Packet, Verdict};
use crate::resolve::{RuleOrigin, Ruleset};
use palisade_model::{Action, Direction, Family};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A packet at the instance's interface.
///
/// JSON: `{"direction": "ingress", "local": "10.0.0.11", "remote": "203.0.113.7",
/// "transport": {"kind": "tcp", "local_port": 22, "remote_port": 40000}}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SimPacket {
    /// Ingress (arriving) or egress (leaving).
    #[serde(with = "codec::direction")]
    pub direction: Direction,
    /// The instance's address (destination on ingress, source on egress).
    pub local: IpAddr,
    /// The other end's address.
    pub remote: IpAddr,
    /// What the packet carries.
    pub transport: Transport,
}

/// The transport part of a [`SimPacket`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transport {
    /// TCP with the instance's port and the other end's port.
    Tcp {
        /// The instance's port.
        local_port: u16,
        /// The other end's port.
        remote_port: u16,
    },
    /// UDP with the instance's port and the other end's port.
    Udp {
        /// The instance's port.
        local_port: u16,
        /// The other end's port.
        remote_port: u16,
    },
    /// An ICMP (IPv4) or ICMPv6 (IPv6) echo request.
    EchoRequest {
        /// The echo identifier.
        id: u16,
    },
    /// An ICMP or ICMPv6 echo reply.
    EchoReply {
        /// The echo identifier.
        id: u16,
    },
    /// An ICMP or ICMPv6 error (destination unreachable, time exceeded, ...)
    /// quoting the packet that caused it, written as that packet was seen
    /// at this instance (its own direction and addresses).
    IcmpError {
        /// The quoted packet.
        quoted: Box<SimPacket>,
    },
    /// Any other protocol (GRE, ...), tracked by protocol and addresses.
    Other {
        /// The IP protocol number.
        protocol: u8,
    },
}

impl SimPacket {
    /// A TCP packet.
    pub fn tcp(
        direction: Direction,
        local: IpAddr,
        local_port: u16,
        remote: IpAddr,
        remote_port: u16,
    ) -> SimPacket {
        SimPacket {
            direction,
            local,
            remote,
            transport: Transport::Tcp {
                local_port,
                remote_port,
            },
        }
    }

    /// A UDP packet.
    pub fn udp(
        direction: Direction,
        local: IpAddr,
        local_port: u16,
        remote: IpAddr,
        remote_port: u16,
    ) -> SimPacket {
        SimPacket {
            direction,
            local,
            remote,
            transport: Transport::Udp {
                local_port,
                remote_port,
            },
        }
    }

    /// An echo request (ping).
    pub fn echo_request(direction: Direction, local: IpAddr, remote: IpAddr, id: u16) -> SimPacket {
        SimPacket {
            direction,
            local,
            remote,
            transport: Transport::EchoRequest { id },
        }
    }

    /// An ICMP error about `quoted`, travelling in `direction` between
    /// `local` and `remote` (a router's address, say).
    pub fn icmp_error(
        direction: Direction,
        local: IpAddr,
        remote: IpAddr,
        quoted: SimPacket,
    ) -> SimPacket {
        SimPacket {
            direction,
            local,
            remote,
            transport: Transport::IcmpError {
                quoted: Box::new(quoted),
            },
        }
    }

    /// A packet of another protocol.
    pub fn other(direction: Direction, protocol: u8, local: IpAddr, remote: IpAddr) -> SimPacket {
        SimPacket {
            direction,
            local,
            remote,
            transport: Transport::Other { protocol },
        }
    }

    /// The answer to this packet: the other direction, same addresses and
    /// ports; an echo request's answer is an echo reply and the other way round.
    /// An ICMP error has no answer and comes back unchanged but turned around.
    pub fn reply(&self) -> SimPacket {
        let transport = match &self.transport {
            Transport::EchoRequest { id } => Transport::EchoReply { id: *id },
            Transport::EchoReply { id } => Transport::EchoRequest { id: *id },
            other => other.clone(),
        };
        SimPacket {
            direction: opposite(self.direction),
            local: self.local,
            remote: self.remote,
            transport,
        }
    }

    /// The IP protocol number: ICMP or ICMPv6 by the remote's family for
    /// echo and errors.
    pub fn protocol(&self) -> u8 {
        match &self.transport {
            Transport::Tcp { .. } => crate::TCP,
            Transport::Udp { .. } => crate::UDP,
            Transport::EchoRequest { .. }
            | Transport::EchoReply { .. }
            | Transport::IcmpError { .. } => match self.remote {
                IpAddr::V4(_) => crate::ICMP,
                IpAddr::V6(_) => crate::ICMPV6,
            },
            Transport::Other { protocol } => *protocol,
        }
    }

    /// The packet as a rule sees it: the peer is the remote end, the port
    /// is the destination port (the local port on ingress, the remote port
    /// on egress) for TCP and UDP.
    pub fn rule_packet(&self) -> Packet {
        let port = match self.transport {
            Transport::Tcp {
                local_port,
                remote_port,
            }
            | Transport::Udp {
                local_port,
                remote_port,
            } => Some(match self.direction {
                Direction::Ingress => local_port,
                Direction::Egress => remote_port,
            }),
            _ => None,
        };
        Packet {
            direction: self.direction,
            protocol: self.protocol(),
            peer: self.remote,
            port,
        }
    }

    /// The key of the flow this packet belongs to, or `None` for an ICMP
    /// error (which belongs to the flow it quotes).
    pub fn flow_key(&self) -> Option<FlowKey> {
        let ids = match self.transport {
            Transport::Tcp {
                local_port,
                remote_port,
            }
            | Transport::Udp {
                local_port,
                remote_port,
            } => FlowIds::Ports {
                local: local_port,
                remote: remote_port,
            },
            Transport::EchoRequest { id } => FlowIds::Echo {
                id,
                requests: self.direction,
            },
            Transport::EchoReply { id } => FlowIds::Echo {
                id,
                requests: opposite(self.direction),
            },
            Transport::IcmpError { .. } => return None,
            Transport::Other { .. } => FlowIds::None,
        };
        Some(FlowKey {
            protocol: self.protocol(),
            local: self.local,
            remote: self.remote,
            ids,
        })
    }
}

/// What identifies a flow, from the instance's side.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    /// The IP protocol number.
    pub protocol: u8,
    /// The instance's address.
    pub local: IpAddr,
    /// The other end's address.
    pub remote: IpAddr,
    /// Ports or echo identifier.
    pub ids: FlowIds,
}

/// The part of a flow key beyond protocol and addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FlowIds {
    /// TCP and UDP: the instance's port and the other end's port.
    Ports {
        /// The instance's port.
        local: u16,
        /// The other end's port.
        remote: u16,
    },
    /// ICMP echo: the identifier and the direction the requests travel in.
    Echo {
        /// The echo identifier.
        id: u16,
        /// The direction of the requests (the flow's original direction).
        #[serde(with = "codec::direction")]
        requests: Direction,
    },
    /// Other protocols: nothing beyond the addresses.
    None,
}

/// A tracked flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Its key.
    pub key: FlowKey,
    /// The direction of its first packet.
    #[serde(with = "codec::direction")]
    pub original: Direction,
    /// Its first packet as the rules saw it.
    pub first: Packet,
    /// The rule that accepts it (under the ruleset in force).
    pub accepted_by: RuleOrigin,
    /// Whether a rule change cut it.
    pub cut: bool,
}

/// Why a packet passed or was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The first packet of a flow, checked against its direction's rules.
    New {
        /// The rules' verdict (the deciding rule, or default drop).
        verdict: Verdict,
    },
    /// A later packet of a tracked flow, in its original direction.
    Established,
    /// A packet of a tracked flow in the other direction.
    Reply,
    /// An ICMP error about a tracked flow.
    Related,
    /// A packet of (or an ICMP error about) a flow a rule change cut.
    Cut,
    /// A packet conntrack would call invalid.
    Invalid {
        /// Why.
        why: String,
    },
}

/// The fate of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// ACCEPT or DROP.
    #[serde(with = "codec::action")]
    pub action: Action,
    /// Why.
    #[serde(flatten)]
    pub reason: Reason,
}

/// One input of the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A packet at the interface.
    Packet {
        /// The packet.
        packet: SimPacket,
    },
    /// The instance's ruleset is replaced (a rule, membership or template changed).
    ReplaceRuleset {
        /// The new ruleset.
        ruleset: Ruleset,
    },
}

/// What a ruleset change did to the tracked flows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    /// Flows cut by the change.
    pub cut: Vec<FlowKey>,
    /// Cut flows the change allows again.
    pub restored: Vec<FlowKey>,
}

/// The simulator's answer to one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The fate of a packet.
    Packet {
        /// The decision.
        decision: Decision,
    },
    /// The effect of a ruleset change.
    Replaced {
        /// The flows touched.
        replaced: Replaced,
    },
}

/// What happens to the packets of a flow a rule change cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutMode {
    /// Every packet of the flow, either way, and ICMP errors about it, is
    /// dropped (stricter than the kernel ruleset today).
    BothDirections,
    /// Only packets in the flow's original direction are dropped; replies
    /// and related ICMP errors still pass (Palisade's semantics, as enforced).
    #[default]
    OriginalDirection,
}

/// The connection tracker of one instance.
#[derive(Debug, Clone, Default)]
pub struct Conntrack {
    ruleset: Ruleset,
    flows: BTreeMap<FlowKey, Flow>,
    cut_mode: CutMode,
}

impl Conntrack {
    /// A tracker with no flows under `ruleset`, cutting revoked flows in
    /// their original direction (as the kernel does).
    pub fn new(ruleset: Ruleset) -> Conntrack {
        Conntrack::with_cut_mode(ruleset, CutMode::default())
    }

    /// A tracker with no flows under `ruleset` that treats cut flows as `cut_mode` says.
    pub fn with_cut_mode(ruleset: Ruleset, cut_mode: CutMode) -> Conntrack {
        Conntrack {
            ruleset,
            flows: BTreeMap::new(),
            cut_mode,
        }
    }

    /// The ruleset in force.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The tracked flows (cut ones included), in key order.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// The flow with `key`.
    pub fn flow(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key)
    }

    /// Runs every event in order; one step per event.
    pub fn run(&mut self, events: &[Event]) -> Vec<Step> {
        events
            .iter()
            .map(|e| match e {
                Event::Packet { packet } => Step::Packet {
                    decision: self.packet(packet),
                },
                Event::ReplaceRuleset { ruleset } => Step::Replaced {
                    replaced: self.replace_ruleset(ruleset.clone()),
                },
            })
            .collect()
    }

    /// Decides one packet, tracking the flow it starts.
    pub fn packet(&mut self, p: &SimPacket) -> Decision {
        if Family::of(p.local) != Family::of(p.remote) {
            return invalid("local and remote addresses are of different families");
        }
        if let Transport::IcmpError { quoted } = &p.transport {
            return self.icmp_error(quoted);
        }
        let Some(key) = p.flow_key() else {
            return invalid("no flow key");
        };
        if let Some(flow) = self.flows.get(&key) {
            let original = p.direction == flow.original;
            if flow.cut && (original || self.cut_mode == CutMode::BothDirections) {
                return drop(Reason::Cut);
            }
            return accept(if original {
                Reason::Established
            } else {
                Reason::Reply
            });
        }
        if matches!(p.transport, Transport::EchoReply { .. }) {
            return invalid("an echo reply to no tracked request");
        }
        let first = p.rule_packet();
        let verdict = evaluate(&self.ruleset, &first);
        if let (Action::Accept, Some(origin)) = (verdict.action, &verdict.matched) {
            self.flows.insert(
                key.clone(),
                Flow {
                    key,
                    original: p.direction,
                    first,
                    accepted_by: origin.clone(),
                    cut: false,
                },
            );
        }
        Decision {
            action: verdict.action,
            reason: Reason::New { verdict },
        }
    }

    /// Puts `ruleset` in force: new flows are checked against it at once,
    /// tracked flows it no longer accepts are cut, cut flows it accepts
    /// again are restored, the others are not disturbed.
    pub fn replace_ruleset(&mut self, ruleset: Ruleset) -> Replaced {
        self.ruleset = ruleset;
        let mut out = Replaced::default();
        for flow in self.flows.values_mut() {
            let verdict = evaluate(&self.ruleset, &flow.first);
            match (verdict.action, verdict.matched) {
                (Action::Accept, Some(origin)) => {
                    flow.accepted_by = origin;
                    if flow.cut {
                        flow.cut = false;
                        out.restored.push(flow.key.clone());
                    }
                }
                _ => {
                    if !flow.cut {
                        flow.cut = true;
                        out.cut.push(flow.key.clone());
                    }
                }
            }
        }
        out
    }

    fn icmp_error(&self, quoted: &SimPacket) -> Decision {
        if matches!(quoted.transport, Transport::IcmpError { .. }) {
            return invalid("an ICMP error about an ICMP error");
        }
        let flow = quoted.flow_key().and_then(|k| self.flows.get(&k));
        match flow {
            Some(f) if f.cut && self.cut_mode == CutMode::BothDirections => drop(Reason::Cut),
            Some(_) => accept(Reason::Related),
            None => invalid("an ICMP error about no tracked flow"),
        }
    }
}

fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn accept(reason: Reason) -> Decision {
    Decision {
        action: Action::Accept,
        reason,
    }
}

fn drop(reason: Reason) -> Decision {
    Decision {
        action: Action::Drop,
        reason,
    }
}

fn invalid(why: &str) -> Decision {
    drop(Reason::Invalid {
        why: why.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The both-ways model; most tests below were written for it.
    fn strict(ruleset: Ruleset) -> Conntrack {
        Conntrack::with_cut_mode(ruleset, CutMode::BothDirections)
    }

    #[test]
    fn the_default_cuts_the_original_direction_as_the_kernel_does() {
        assert_eq!(CutMode::default(), CutMode::OriginalDirection);
    }
    use crate::fixtures::{ip, sg};
    use crate::resolve::resolve;
    use palisade_model::Fleet;
    use Direction::{Egress, Ingress};

    const FLEET: &str = r#"
security_groups:
  - id: sg-host0001
    policies:
      Ingress:
        - {Protocol: TCP, Port: "22", CidrBlock: 203.0.113.0/24, Action: ACCEPT}
        - {Protocol: UDP, Port: "53", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: GRE, CidrBlock: 198.51.100.1, Action: ACCEPT}
      Egress:
        - {Protocol: UDP, Port: "123", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
        - {Protocol: ICMPv6, Ipv6CidrBlock: "::/0", Action: ACCEPT}
        - {Protocol: TCP, Port: "443", CidrBlock: 0.0.0.0/0, Action: ACCEPT}
instances:
  - {id: ins-host0001, private_ips: [10.0.0.11], security_groups: [sg-host0001]}
"#;

    fn fleet() -> Fleet {
        Fleet::parse(FLEET).unwrap()
    }

    fn ruleset(f: &Fleet) -> Ruleset {
        resolve(f, &[sg("sg-host0001")]).unwrap()
    }

    /// The ruleset with ingress rule `i` removed.
    fn without_ingress(i: usize) -> Ruleset {
        let mut f = fleet();
        f.security_groups[0].policies.ingress.remove(i);
        ruleset(&f)
    }

    const LOCAL: &str = "10.0.0.11";

    fn ssh(direction: Direction, client: &str, client_port: u16) -> SimPacket {
        SimPacket::tcp(direction, ip(LOCAL), 22, ip(client), client_port)
    }

    fn reason(d: &Decision) -> &Reason {
        &d.reason
    }

    #[test]
    fn first_packet_is_checked_and_replies_pass_unchecked() {
        let mut ct = strict(ruleset(&fleet()));
        let syn = ssh(Ingress, "203.0.113.5", 40000);
        let d = ct.packet(&syn);
        assert_eq!(d.action, Action::Accept);
        assert!(
            matches!(reason(&d), Reason::New { verdict } if verdict.matched.as_ref().unwrap().policy_index == 0)
        );
        // Egress has no rule for TCP from port 22 to 203.0.113.5:40000: the
        // reply passes anyway, without a look at the egress list.
        let reply = ct.packet(&syn.reply());
        assert_eq!(
            (reply.action, reply.reason),
            (Action::Accept, Reason::Reply)
        );
        let again = ct.packet(&syn);
        assert_eq!(
            (again.action, again.reason),
            (Action::Accept, Reason::Established)
        );
        // The same egress packet with no flow behind it is checked and dropped.
        let lone = ct.packet(&ssh(Egress, "203.0.113.5", 40001));
        assert_eq!(lone.action, Action::Drop);
        assert_eq!(
            lone.reason,
            Reason::New {
                verdict: Verdict::default_drop()
            }
        );
        // A client outside 203.0.113.0/24 is refused and no flow is made.
        assert_eq!(
            ct.packet(&ssh(Ingress, "192.0.2.1", 40000)).action,
            Action::Drop
        );
        assert_eq!(
            ct.packet(&ssh(Egress, "192.0.2.1", 40000)).action,
            Action::Drop
        );
        assert_eq!(ct.flows().count(), 1);
        // Egress-initiated flows: replies come in although ingress has no rule.
        let ntp = SimPacket::udp(Egress, ip(LOCAL), 50123, ip("192.0.2.123"), 123);
        assert_eq!(ct.packet(&ntp).action, Action::Accept);
        assert_eq!(ct.packet(&ntp.reply()).reason, Reason::Reply);
        // Other protocols are tracked by addresses.
        let gre = SimPacket::other(Ingress, 47, ip(LOCAL), ip("198.51.100.1"));
        assert_eq!(ct.packet(&gre).action, Action::Accept);
        assert_eq!(ct.packet(&gre.reply()).reason, Reason::Reply);
        let gre2 = SimPacket::other(Egress, 47, ip(LOCAL), ip("198.51.100.2"));
        assert_eq!(ct.packet(&gre2).action, Action::Drop);
    }

    #[test]
    fn echo_is_tracked_by_identifier_and_requester() {
        let mut ct = strict(ruleset(&fleet()));
        let local6 = ip("2001:db8::11");
        let ping = SimPacket::echo_request(Egress, local6, ip("2001:db8::1"), 7);
        assert_eq!(ping.protocol(), crate::ICMPV6);
        assert_eq!(ct.packet(&ping).action, Action::Accept);
        assert_eq!(ct.packet(&ping.reply()).reason, Reason::Reply);
        // A reply with another identifier belongs to nothing: invalid.
        let stray = SimPacket::echo_request(Egress, local6, ip("2001:db8::1"), 8).reply();
        assert!(matches!(ct.packet(&stray).reason, Reason::Invalid { .. }));
        // A request from the other side is a new flow, checked on ingress.
        let theirs = SimPacket::echo_request(Ingress, local6, ip("2001:db8::1"), 7);
        assert_eq!(ct.packet(&theirs).action, Action::Drop);
        // IPv4 ping out: no egress rule for ICMP.
        let ping4 = SimPacket::echo_request(Egress, ip(LOCAL), ip("192.0.2.1"), 1);
        assert_eq!(ping4.protocol(), crate::ICMP);
        assert_eq!(ct.packet(&ping4).action, Action::Drop);
    }

    #[test]
    fn related_icmp_errors_pass() {
        let mut ct = strict(ruleset(&fleet()));
        let ntp = SimPacket::udp(Egress, ip(LOCAL), 50123, ip("192.0.2.123"), 123);
        ct.packet(&ntp);
        // A router says the NTP server is unreachable: no ingress rule
        // allows ICMP, but the error is related to a tracked flow.
        let err = SimPacket::icmp_error(Ingress, ip(LOCAL), ip("198.18.0.1"), ntp.clone());
        assert_eq!(ct.packet(&err).reason, Reason::Related);
        // The error quoting the reply direction is related too.
        let err2 = SimPacket::icmp_error(Ingress, ip(LOCAL), ip("198.18.0.1"), ntp.reply());
        assert_eq!(ct.packet(&err2).reason, Reason::Related);
        // Our own error about an accepted inbound packet goes out.
        let dns = SimPacket::udp(Ingress, ip(LOCAL), 53, ip("192.0.2.9"), 5353);
        ct.packet(&dns);
        let unreachable = SimPacket::icmp_error(Egress, ip(LOCAL), ip("192.0.2.9"), dns);
        assert_eq!(ct.packet(&unreachable).action, Action::Accept);
        // An error about no tracked flow, or about an error, is invalid.
        let other = SimPacket::udp(Egress, ip(LOCAL), 50124, ip("192.0.2.123"), 123);
        let bogus = SimPacket::icmp_error(Ingress, ip(LOCAL), ip("198.18.0.1"), other);
        assert!(matches!(ct.packet(&bogus).reason, Reason::Invalid { .. }));
        let nested = SimPacket::icmp_error(Ingress, ip(LOCAL), ip("198.18.0.1"), err);
        assert!(matches!(ct.packet(&nested).reason, Reason::Invalid { .. }));
        // Mixed families are invalid.
        let mixed = SimPacket::udp(Egress, ip(LOCAL), 1, ip("2001:db8::1"), 123);
        assert!(matches!(ct.packet(&mixed).reason, Reason::Invalid { .. }));
    }

    #[test]
    fn a_rule_change_cuts_revoked_flows_and_leaves_the_others() {
        let mut ct = strict(ruleset(&fleet()));
        let ssh_a = ssh(Ingress, "203.0.113.5", 40000);
        let dns = SimPacket::udp(Ingress, ip(LOCAL), 53, ip("192.0.2.9"), 5353);
        let https = SimPacket::tcp(Egress, ip(LOCAL), 41000, ip("192.0.2.80"), 443);
        for p in [&ssh_a, &dns, &https] {
            assert_eq!(ct.packet(p).action, Action::Accept);
        }
        // Remove the SSH rule.
        let replaced = ct.replace_ruleset(without_ingress(0));
        assert_eq!(replaced.cut, vec![ssh_a.flow_key().unwrap()]);
        assert!(replaced.restored.is_empty());
        // The cut flow: original direction dropped, replies dropped, errors dropped.
        assert_eq!(
            (ct.packet(&ssh_a).action, ct.packet(&ssh_a).reason),
            (Action::Drop, Reason::Cut)
        );
        assert_eq!(ct.packet(&ssh_a.reply()).reason, Reason::Cut);
        let err = SimPacket::icmp_error(Egress, ip(LOCAL), ip("203.0.113.5"), ssh_a.clone());
        assert_eq!(ct.packet(&err).action, Action::Drop);
        // New SSH connections are refused at once.
        assert_eq!(
            ct.packet(&ssh(Ingress, "203.0.113.6", 40000)).action,
            Action::Drop
        );
        // Still-allowed flows are not disturbed, their index moved up by one.
        assert_eq!(ct.packet(&dns).reason, Reason::Established);
        assert_eq!(ct.packet(&dns.reply()).reason, Reason::Reply);
        assert_eq!(ct.packet(&https.reply()).reason, Reason::Reply);
        let dns_flow = ct.flow(&dns.flow_key().unwrap()).unwrap();
        assert_eq!(
            (dns_flow.cut, dns_flow.accepted_by.policy_index),
            (false, 0)
        );
        // Putting the rule back restores the flow.
        let replaced = ct.replace_ruleset(ruleset(&fleet()));
        assert_eq!(replaced.restored, vec![ssh_a.flow_key().unwrap()]);
        assert!(replaced.cut.is_empty());
        assert_eq!(ct.packet(&ssh_a).reason, Reason::Established);
        assert_eq!(ct.packet(&ssh_a.reply()).reason, Reason::Reply);
        // An empty ruleset cuts everything.
        let replaced = ct.replace_ruleset(Ruleset::default());
        assert_eq!(replaced.cut.len(), 3);
        assert!(ct.flows().all(|f| f.cut));
    }

    #[test]
    fn a_cut_flow_does_not_come_back_through_the_other_direction() {
        // Egress allows everything; revoke ingress SSH. Without the tombstone
        // the server's next segment would open a new egress flow and the
        // client's packets would pass as its replies.
        let mut f = fleet();
        f.security_groups[0].policies.egress = Fleet::parse(
            "security_groups: [{id: sg-aaaaaaaa, policies: {Egress: [{Protocol: ALL, CidrBlock: 0.0.0.0/0, Action: ACCEPT}]}}]",
        )
        .unwrap()
        .security_groups[0]
            .policies
            .egress
            .clone();
        let mut ct = strict(ruleset(&f));
        let syn = ssh(Ingress, "203.0.113.5", 40000);
        ct.packet(&syn);
        f.security_groups[0].policies.ingress.remove(0);
        ct.replace_ruleset(ruleset(&f));
        assert_eq!(ct.packet(&syn.reply()).action, Action::Drop);
        assert_eq!(ct.packet(&syn).action, Action::Drop);
    }

    #[test]
    fn original_direction_mode_lets_replies_of_cut_flows_pass() {
        let mut ct = Conntrack::with_cut_mode(ruleset(&fleet()), CutMode::OriginalDirection);
        let syn = ssh(Ingress, "203.0.113.5", 40000);
        let dns = SimPacket::udp(Ingress, ip(LOCAL), 53, ip("192.0.2.9"), 5353);
        ct.packet(&syn);
        ct.packet(&dns);
        let replaced = ct.replace_ruleset(without_ingress(0));
        assert_eq!(replaced.cut, vec![syn.flow_key().unwrap()]);
        assert_eq!(ct.packet(&syn).reason, Reason::Cut);
        assert_eq!(ct.packet(&syn.reply()).reason, Reason::Reply);
        let err = SimPacket::icmp_error(Egress, ip(LOCAL), ip("203.0.113.5"), syn.clone());
        assert_eq!(ct.packet(&err).reason, Reason::Related);
        assert_eq!(ct.packet(&dns).reason, Reason::Established);
    }

    #[test]
    fn events_replay_from_json() {
        let syn = ssh(Ingress, "203.0.113.5", 40000);
        let events = vec![
            Event::Packet {
                packet: syn.clone(),
            },
            Event::Packet {
                packet: syn.reply(),
            },
            Event::ReplaceRuleset {
                ruleset: without_ingress(0),
            },
            Event::Packet {
                packet: syn.clone(),
            },
        ];
        let text = serde_json::to_string(&events).unwrap();
        let back: Vec<Event> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, events);
        let steps = strict(ruleset(&fleet())).run(&back);
        let v = serde_json::to_value(&steps).unwrap();
        assert_eq!(v[0]["decision"]["action"], "ACCEPT");
        assert_eq!(v[0]["decision"]["reason"], "new");
        assert_eq!(v[0]["decision"]["verdict"]["matched"]["policy_index"], 0);
        assert_eq!(v[1]["decision"]["reason"], "reply");
        assert_eq!(v[2]["step"], "replaced");
        assert_eq!(v[2]["replaced"]["cut"][0]["ids"]["kind"], "ports");
        assert_eq!(
            v[3]["decision"],
            serde_json::json!({"action": "DROP", "reason": "cut"})
        );
        let p = serde_json::to_value(&syn).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"direction": "ingress", "local": "10.0.0.11", "remote": "203.0.113.5",
                "transport": {"kind": "tcp", "local_port": 22, "remote_port": 40000}})
        );
    }

    mod properties {
        use super::*;
        use crate::eval::evaluate;
        use crate::fixtures::{packet, rules};
        use crate::resolve::ResolvedRule;
        use proptest::prelude::*;

        fn to_sim(p: &crate::eval::Packet) -> SimPacket {
            let local = match p.peer {
                IpAddr::V4(_) => ip("10.255.255.254"),
                IpAddr::V6(_) => ip("2001:db8:ffff::fe"),
            };
            let port = p.port.unwrap_or(0);
            match p.protocol {
                crate::TCP => SimPacket::tcp(p.direction, local, port, p.peer, 33333),
                crate::UDP => SimPacket::udp(p.direction, local, port, p.peer, 33333),
                n => SimPacket::other(p.direction, n, local, p.peer),
            }
        }

        proptest! {
            #![proptest_config(crate::fixtures::cases(64))]

            /// New flows get the evaluator's verdict; after a change, a flow is
            /// cut exactly when the new rules refuse its first packet.
            #[test]
            fn tracker_agrees_with_the_evaluator(
                before in rules(8),
                after in rules(8),
                ps in prop::collection::vec(packet(), 30),
            ) {
                let rs = |rules: Vec<ResolvedRule>| Ruleset { ingress: rules, ..Ruleset::default() };
                let (before, after) = (rs(before), rs(after));
                let mut ct = strict(before.clone());
                for p in &ps {
                    let sim = to_sim(p);
                    let fresh = ct.flow(&sim.flow_key().unwrap()).is_none();
                    let d = ct.packet(&sim);
                    if fresh {
                        prop_assert_eq!(d.action, evaluate(&before, &sim.rule_packet()).action);
                    } else {
                        prop_assert_eq!(d.action, Action::Accept);
                    }
                }
                let tracked: Vec<Flow> = ct.flows().cloned().collect();
                let replaced = ct.replace_ruleset(after.clone());
                for f in &tracked {
                    let refused = evaluate(&after, &f.first).action == Action::Drop;
                    prop_assert_eq!(replaced.cut.contains(&f.key), refused);
                    let sim = ps.iter().map(to_sim).find(|s| s.flow_key().as_ref() == Some(&f.key));
                    if let Some(sim) = sim {
                        let expect = if refused { Action::Drop } else { Action::Accept };
                        prop_assert_eq!(ct.packet(&sim).action, expect);
                        prop_assert_eq!(ct.packet(&sim.reply()).action, expect);
                    }
                }
            }
        }
    }
}
