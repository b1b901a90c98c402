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
//! Choice (docs: Palisade departs from AWS here, DESIGN.md section 2): a cut
//! flow is kept as a tombstone and every later packet of it is dropped, in
//! the original direction *and* in the reply direction, and so are ICMP
//! errors about it. Dropping the flow's entry instead would let a reply be
//! taken for the first packet of a new flow in the other direction, which a
//! permissive egress list would accept, reviving the connection from the
//! other end; the tombstone closes that door. A later rule change that
//! allows the flow again restores it. Flows never time out here (the
//! simulator has no clock); TCP flags and states are not modelled (Linux
//! picks up mid-stream TCP as new by default).

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

/// The connection tracker of one instance.
#[derive(Debug, Clone, Default)]
pub struct Conntrack {
    ruleset: Ruleset,
    flows: BTreeMap<FlowKey, Flow>,
}

impl Conntrack {
    /// A tracker with no flows under `ruleset`.
    pub fn new(ruleset: Ruleset) -> Conntrack {
        Conntrack {
            ruleset,
            flows: BTreeMap::new(),
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
            if flow.cut {
                return drop(Reason::Cut);
            }
            let reason = if p.direction == flow.original {
                Reason::Established
            } else {
                Reason::Reply
            };
            return accept(reason);
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
            Some(f) if f.cut => drop(Reason::Cut),
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
