//! Flow records from the kernel (DESIGN.md section 8, "Observe"; issue 18).
//!
//! Where a rule decides (a new connection, or an established one re-checked
//! after a change), the compiled program logs the packet to an NFLOG group
//! with a prefix that names the decision ([`Tag`]): the verdict, the
//! direction, and the rule (group and policy index) or the default drop. A
//! named `limit` object in the table bounds how many decisions per second
//! reach the log; the ones over it only bump a named counter, so suppressed
//! decisions are counted, never silently lost.
//!
//! [`FlowLog`] reads two kernel sources over netlink, in the dataplane's
//! namespace: the NFLOG group (the decisions, with the first bytes of each
//! packet for its addresses, ports and protocol) and conntrack's destroy
//! events (the packets and bytes of a connection when it ends, with
//! `nf_conntrack_acct` on). [`Aggregator`] turns both into
//! [`FlowRecord`]s: identical decisions over an interval become one record,
//! and an accepted connection that the agent saw decided gets a second,
//! closing record with its counts when it ends. Both the aggregator's table
//! and the list of open accepted connections are bounded; what does not fit
//! is counted as suppressed.

use crate::error::AgentError;
use crate::netlink::{align, attrs, failed, in_netns, kernel_error, put_attr};
use palisade_model::flow::{FlowRecord, RuleRef, Verdict};
use palisade_model::{Direction, InstanceId, SecurityGroupId};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{
    bind, netlink, recv, send, socket, sockopt, AddressFamily, RecvFlags, SendFlags, SocketType,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// The NFLOG group Palisade's program logs to unless told otherwise.
pub const DEFAULT_GROUP: u16 = 7460;

/// How many bytes of a logged packet the kernel copies: enough for an IPv6
/// header with no extension headers and the transport ports.
pub const SNAPLEN: u32 = 64;

/// What one log prefix says: the verdict, the direction, and the deciding
/// rule (`None`: the default drop).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The verdict the program gave (or, in audit mode, would have).
    pub verdict: Verdict,
    /// The direction of the chain that decided.
    pub direction: Direction,
    /// The group and policy index of the deciding rule.
    pub rule: Option<(SecurityGroupId, u32)>,
}

impl Tag {
    /// The log prefix: `pal A ingress sg-1a2b3c4d 3`, `pal W egress default`.
    /// At most 40 bytes, well inside nft's 127.
    pub fn prefix(&self) -> String {
        let v = match self.verdict {
            Verdict::Accept => 'A',
            Verdict::Drop => 'D',
            Verdict::WouldDrop => 'W',
        };
        let d = self.direction.as_str();
        match &self.rule {
            Some((sg, index)) => format!("pal {v} {d} {sg} {index}"),
            None => format!("pal {v} {d} default"),
        }
    }

    /// Reads a prefix that [`Tag::prefix`] wrote; anything else is `None`
    /// (another program's log in the same group is ignored).
    pub fn parse(prefix: &str) -> Option<Tag> {
        let mut words = prefix.split(' ');
        if words.next()? != "pal" {
            return None;
        }
        let verdict = match words.next()? {
            "A" => Verdict::Accept,
            "D" => Verdict::Drop,
            "W" => Verdict::WouldDrop,
            _ => return None,
        };
        let direction = Direction::parse_field("prefix", words.next()?).ok()?;
        let rule = match words.next()? {
            "default" => None,
            sg => Some((sg.parse().ok()?, words.next()?.parse().ok()?)),
        };
        if words.next().is_some() || (rule.is_none() && verdict == Verdict::Accept) {
            return None;
        }
        Some(Tag {
            verdict,
            direction,
            rule,
        })
    }
}

/// A connection's addresses, ports and protocol, in its original direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IANA protocol number.
    pub protocol: u8,
    /// Source port, for protocols that have ports.
    pub src_port: Option<u16>,
    /// Destination port, for protocols that have ports.
    pub dst_port: Option<u16>,
}

/// One thing the kernel told the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A rule (or the default drop) decided a packet.
    Decision {
        /// What decided.
        tag: Tag,
        /// The packet's connection.
        tuple: Tuple,
        /// The packet's length.
        bytes: u64,
    },
    /// A connection ended, with both directions' packets and bytes.
    Ended {
        /// The connection, as it was first seen.
        tuple: Tuple,
        /// Packets, both directions.
        packets: u64,
        /// Bytes, both directions.
        bytes: u64,
    },
}

/// The two netlink sockets a node's flow records come from.
#[derive(Debug)]
pub struct FlowLog {
    nflog: OwnedFd,
    conntrack: OwnedFd,
    query: OwnedFd,
    group: u16,
    /// The receive buffer, kept: allocating (and zeroing) 64 KiB per read
    /// was a fifth of the recorder's CPU at 2,000 new flows/s.
    buf: Vec<u8>,
}

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// conntrack's multicast groups of updated and destroyed entries
/// (`NFNLGRP_CONNTRACK_UPDATE`, `NFNLGRP_CONNTRACK_DESTROY`).
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// `TCP_CONNTRACK_TIME_WAIT` and `TCP_CONNTRACK_CLOSE`: the connection is
/// over, though conntrack keeps the entry (120 s for TIME_WAIT).
const TCP_OVER: [u8; 2] = [7, 8];
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const HEADER: usize = 16;
const NFGENMSG: usize = 4;

impl FlowLog {
    /// Binds NFLOG group `group` and joins conntrack's destroy events, in
    /// the named namespace (or this one), and turns on conntrack
    /// accounting there so that ended connections carry their counts.
    /// Fails when another process holds the group.
    pub fn open(netns: Option<&str>, group: u16) -> Result<Self, AgentError> {
        let nflog = in_netns(netns, || netlink_socket(0))?;
        let conntrack = in_netns(netns, || {
            netlink_socket(
                (1 << (NFNLGRP_CONNTRACK_UPDATE - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1)),
            )
        })?;
        let query = in_netns(netns, || netlink_socket(0))?;
        let mut cmd = Vec::new();
        put_attr(&mut cmd, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND, 0, 0, 0]);
        configure(&nflog, group, &cmd)?;
        let mut mode = Vec::new();
        let mut m = SNAPLEN.to_be_bytes().to_vec();
        m.extend_from_slice(&[NFULNL_COPY_PACKET, 0, 0, 0]);
        put_attr(&mut mode, NFULA_CFG_MODE, &m[..6]);
        // Hand each decision over at once (the rate limit bounds how many):
        // a short connection's end must not overtake its decision.
        put_attr(&mut mode, NFULA_CFG_TIMEOUT, &10u32.to_be_bytes());
        put_attr(&mut mode, NFULA_CFG_QTHRESH, &1u32.to_be_bytes());
        configure(&nflog, group, &mode)?;
        set_conntrack_acct(netns)?;
        Ok(Self {
            nflog,
            conntrack,
            query,
            group,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// The NFLOG group this log reads.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Waits up to `timeout` for something to read, then returns every
    /// event that is ready (possibly none). A socket that overflowed
    /// (ENOBUFS) lost some events; that is counted in `lost`.
    ///
    /// A connection ends when conntrack destroys its entry, or, for TCP,
    /// when it reaches TIME_WAIT or CLOSE (the entry lingers for minutes):
    /// then its counts are asked for at once, for the connections
    /// `wanted` names (the ones a decision was recorded for).
    pub fn read(
        &mut self,
        timeout: Duration,
        lost: &mut u64,
        wanted: impl Fn(&Tuple) -> bool,
    ) -> Result<Vec<Event>, AgentError> {
        let ts = rustix::fs::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [
            PollFd::new(&self.nflog, PollFlags::IN),
            PollFd::new(&self.conntrack, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(failed("poll", e.into())),
        }
        let ready = [!fds[0].revents().is_empty(), !fds[1].revents().is_empty()];
        let mut events = Vec::new();
        if ready[0] {
            drain(&self.nflog, &mut self.buf, lost, |ty, family, body| {
                if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                    events.extend(decision(family, body));
                }
            })?;
        }
        if ready[1] {
            let mut over = Vec::new();
            let mut unknown = Vec::new();
            // A connection decided in this same read counts as wanted.
            let mut decided: std::collections::HashSet<Tuple> = decided_in(&events);
            let wanted = |t: &Tuple| decided.contains(t) || wanted(t);
            drain(&self.conntrack, &mut self.buf, lost, |ty, family, body| {
                if ty == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE {
                    events.extend(ended(body));
                } else if ty == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
                    if let Some((tuple, raw)) = tcp_over(body) {
                        if wanted(&tuple) {
                            over.push((family, tuple, raw));
                        } else {
                            unknown.push((family, tuple, raw));
                        }
                    }
                }
            })?;
            // A short connection can be decided and over while the
            // conntrack socket is read: its decision is already waiting
            // in the log (the kernel hands each over at once), so read
            // the log again and keep the ends of what it decided. (At
            // 2,000 new connections/s, without this a quarter of the
            // closing records were missing.)
            if !unknown.is_empty() {
                let before = events.len();
                drain(&self.nflog, &mut self.buf, lost, |ty, family, body| {
                    if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                        events.extend(decision(family, body));
                    }
                })?;
                decided.extend(decided_in(&events[before..]));
                over.extend(unknown.into_iter().filter(|(_, t, _)| decided.contains(t)));
            }
            for (family, _, raw) in over {
                // Gone meanwhile: its destroy event carries the counts.
                if let Some(e) = self.counts(family, &raw)? {
                    events.push(e);
                }
            }
            // Decisions first: an end is matched to the decision it follows.
            events.sort_by_key(|e| matches!(e, Event::Ended { .. }));
        }
        Ok(events)
    }

    /// Asks conntrack for the entry of the original tuple `raw` (the
    /// attribute's value as an event carried it): its end with counts, or
    /// `None` when it is gone.
    fn counts(&mut self, family: u8, raw: &[u8]) -> Result<Option<Event>, AgentError> {
        let mut payload = Vec::new();
        put_attr(&mut payload, CTA_TUPLE_ORIG | 0x8000, raw);
        let len = HEADER + NFGENMSG + payload.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
        out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        out.extend_from_slice(&2u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[family, 0, 0, 0]);
        out.extend_from_slice(&payload);
        send(&self.query, &out, SendFlags::empty()).map_err(|e| failed("send", e.into()))?;
        let buf = &mut self.buf;
        let mut found = None;
        loop {
            let n = recv(&self.query, &mut buf[..], RecvFlags::empty())
                .map_err(|e| failed("recv conntrack entry", e.into()))?
                .0;
            let mut rest = &buf[..n.min(buf.len())];
            while rest.len() >= HEADER {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < HEADER || len > rest.len() {
                    return Err(AgentError::Netlink(format!("bad message length {len}")));
                }
                let body = &rest[HEADER..len];
                if ty == NLMSG_ERROR {
                    return Ok(found);
                }
                if body.len() >= NFGENMSG {
                    found = ended(&body[NFGENMSG..]);
                }
                rest = &rest[align(len).min(rest.len())..];
            }
        }
    }
}

/// Turns identical decisions into records, and remembers the connections
/// that passed until they end. Both tables are bounded.
#[derive(Debug)]
pub struct Aggregator {
    instance: InstanceId,
    max_entries: usize,
    pending: HashMap<(Tag, Tuple), Pending>,
    open: HashMap<Tuple, Opened>,
    closed: Vec<FlowRecord>,
    /// Decisions that found no room in the table, since the agent started.
    pub suppressed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    decisions: u64,
    bytes: u64,
    start: u64,
    end: u64,
    revision: u64,
}

#[derive(Debug, Clone)]
struct Opened {
    tag: Tag,
    start: u64,
    revision: u64,
}

/// How long a passed connection is remembered without an end event (one
/// lost when the event socket overflowed, or a connection that lives on).
const OPEN_FOR: u64 = 24 * 3600;

impl Aggregator {
    /// An aggregator for `instance`'s records, keeping at most
    /// `max_entries` pending records and as many open connections.
    pub fn new(instance: InstanceId, max_entries: usize) -> Self {
        Self {
            instance,
            max_entries,
            pending: HashMap::new(),
            open: HashMap::new(),
            closed: Vec::new(),
            suppressed: 0,
        }
    }

    /// Whether a decision was recorded for this connection and it has not
    /// ended yet.
    pub fn is_open(&self, tuple: &Tuple) -> bool {
        self.open.contains_key(tuple)
    }

    /// Takes in one event, seen at `now` (Unix seconds), when the agent had
    /// applied `revision`.
    pub fn add(&mut self, event: Event, now: u64, revision: u64) {
        match event {
            Event::Decision { tag, tuple, bytes } => {
                if tag.verdict != Verdict::Drop && self.open.len() < self.max_entries {
                    let opened = Opened {
                        tag: tag.clone(),
                        start: now,
                        revision,
                    };
                    self.open.entry(tuple).or_insert(opened);
                }
                let full = self.pending.len() >= self.max_entries;
                match self.pending.get_mut(&(tag.clone(), tuple)) {
                    Some(p) => {
                        p.decisions += 1;
                        p.bytes += bytes;
                        p.end = now;
                    }
                    None if full => self.suppressed += 1,
                    None => {
                        let p = Pending {
                            decisions: 1,
                            bytes,
                            start: now,
                            end: now,
                            revision,
                        };
                        self.pending.insert((tag, tuple), p);
                    }
                }
            }
            Event::Ended {
                tuple,
                packets,
                bytes,
            } => {
                let Some(o) = self.open.remove(&tuple) else {
                    return;
                };
                let mut r = self.record(&o.tag, &tuple, o.revision, 0, o.start, now);
                r.packets = Some(packets);
                r.bytes = Some(bytes);
                self.closed.push(r);
            }
        }
    }

    /// The records of the interval that ends at `now`: one per distinct
    /// decision, then the closing records of connections that ended.
    pub fn flush(&mut self, now: u64) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = Vec::with_capacity(self.pending.len() + self.closed.len());
        for ((tag, tuple), p) in std::mem::take(&mut self.pending) {
            let mut r = self.record(&tag, &tuple, p.revision, p.decisions, p.start, p.end);
            if tag.verdict == Verdict::Drop {
                // Every logged packet of a dropped flow was dropped.
                r.packets = Some(p.decisions);
                r.bytes = Some(p.bytes);
            }
            out.push(r);
        }
        out.append(&mut self.closed);
        self.open.retain(|_, o| o.start + OPEN_FOR > now);
        out.sort_by_key(|r| (r.start, r.end));
        out
    }

    fn record(
        &self,
        tag: &Tag,
        tuple: &Tuple,
        revision: u64,
        decisions: u64,
        start: u64,
        end: u64,
    ) -> FlowRecord {
        FlowRecord {
            instance_id: self.instance.clone(),
            direction: tag.direction,
            src_addr: tuple.src,
            dst_addr: tuple.dst,
            src_port: tuple.src_port,
            dst_port: tuple.dst_port,
            protocol: tuple.protocol,
            action: tag.verdict,
            rule: tag.rule.as_ref().map(|(sg, index)| RuleRef {
                security_group_id: sg.clone(),
                policy_index: *index,
                revision,
            }),
            decisions,
            packets: None,
            bytes: None,
            start,
            end,
        }
    }
}

/// How a node's recorder runs ([`record`]).
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The instance the records are of.
    pub instance: InstanceId,
    /// The dataplane's namespace (`None`: this one).
    pub netns: Option<String>,
    /// The NFLOG group the program logs to.
    pub group: u16,
    /// How long identical decisions are aggregated before shipping.
    pub interval: Duration,
    /// The most pending records (and open connections) held; the most
    /// records kept for a later try when shipping fails.
    pub max_entries: usize,
}

/// What the recorder did, for the agent's log and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Decisions read from the kernel.
    pub seen: u64,
    /// Decisions not recorded: over the kernel's rate limit, no room in
    /// the aggregator, or dropped after failed shipping.
    pub suppressed: u64,
    /// Records the server took.
    pub shipped: u64,
    /// Batches no server took (their records are kept for the next try,
    /// up to the recorder's bound).
    pub ship_errors: u64,
}

/// Runs a node's recorder until `stop`: reads decisions and connection
/// ends, aggregates them, and every `interval` hands the records (with the
/// decisions suppressed since the last batch) to `ship`. `revision` is the
/// revision the agent has applied, read when a decision arrives. Records
/// that could not be shipped are kept for the next batch, up to
/// `max_entries`; the rest are counted as suppressed, never silently lost.
/// `on_stats` gets the running totals whenever they change (at most every
/// read, 200 ms).
pub fn record(
    config: &RecorderConfig,
    revision: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
    mut ship: impl FnMut(&[FlowRecord], u64) -> Result<u64, AgentError>,
    mut on_stats: impl FnMut(RecorderStats),
) -> Result<(), AgentError> {
    use std::sync::atomic::Ordering;
    let mut log = FlowLog::open(config.netns.as_deref(), config.group)?;
    let mut agg = Aggregator::new(config.instance.clone(), config.max_entries);
    let mut stats = RecorderStats::default();
    let (mut lost, mut kernel_seen) = (0u64, suppressed_counter(config.netns.as_deref()));
    let mut unsent: Vec<FlowRecord> = Vec::new();
    let mut unsent_suppressed = 0u64;
    let mut last = std::time::Instant::now();
    let mut reported = stats;
    let mut last_read = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if stats != reported {
            reported = stats;
            on_stats(stats);
        }
        // Reads come in batches, at most one per READ_GAP: waking up for
        // every event cost more than the events themselves.
        if let Some(wait) = READ_GAP.checked_sub(last_read.elapsed()) {
            std::thread::sleep(wait);
        }
        last_read = std::time::Instant::now();
        let events = log.read(Duration::from_millis(200), &mut lost, |t| agg.is_open(t))?;
        let now = unix_now();
        for e in events {
            if matches!(e, Event::Decision { .. }) {
                stats.seen += 1;
            }
            agg.add(e, now, revision.load(Ordering::Relaxed));
        }
        if last.elapsed() < config.interval {
            continue;
        }
        last = std::time::Instant::now();
        // The kernel's count of decisions over the rate limit: a table
        // replaced since starts it again from zero.
        let counted = suppressed_counter(config.netns.as_deref());
        let kernel = if counted >= kernel_seen {
            counted - kernel_seen
        } else {
            counted
        };
        kernel_seen = counted;
        let fresh = kernel + std::mem::take(&mut agg.suppressed) + std::mem::take(&mut lost);
        unsent_suppressed += fresh;
        stats.suppressed += fresh;
        unsent.extend(agg.flush(now));
        if unsent.is_empty() && unsent_suppressed == 0 {
            continue;
        }
        let mut shipped_all = true;
        for batch in unsent.chunks(SHIP_BATCH) {
            match ship(batch, std::mem::take(&mut unsent_suppressed)) {
                Ok(n) => stats.shipped += n,
                Err(_) => {
                    stats.ship_errors += 1;
                    shipped_all = false;
                    break;
                }
            }
        }
        if shipped_all {
            unsent.clear();
        } else {
            let drop = unsent.len().saturating_sub(config.max_entries);
            if drop > 0 {
                unsent.drain(..drop);
                unsent_suppressed += drop as u64;
                stats.suppressed += drop as u64;
            }
        }
    }
    if stats != reported {
        on_stats(stats);
    }
    Ok(())
}

/// The connections `events` decided.
fn decided_in(events: &[Event]) -> std::collections::HashSet<Tuple> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Decision { tuple, .. } => Some(*tuple),
            Event::Ended { .. } => None,
        })
        .collect()
}

/// Records per `ReportFlowRecords` call.
const SHIP_BATCH: usize = 2_000;

/// The shortest time between two reads of the kernel's sockets (their
/// buffers, 4 MiB each, hold far more than this much of the rate limit's
/// decisions).
const READ_GAP: Duration = Duration::from_millis(10);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The packets of the table's `flowlog_suppressed` counter (0 when the
/// table or the counter is missing).
fn suppressed_counter(netns: Option<&str>) -> u64 {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => std::process::Command::new("nft"),
    };
    let out = cmd
        .args([
            "list",
            "counter",
            "inet",
            "palisade",
            crate::compile::FLOW_LOG_SUPPRESSED,
        ])
        .output();
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whether `protocol` has ports in its first four bytes (TCP, UDP, SCTP,
/// UDP-Lite), as the rules' port matches assume.
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132 | 136)
}

/// The tuple of a packet that starts with its IP header (`family` is the
/// nfgenmsg's: 2 or 10). `None` for anything too short or not IP.
pub fn packet_tuple(family: u8, packet: &[u8]) -> Option<Tuple> {
    let (src, dst, protocol, rest): (IpAddr, IpAddr, u8, &[u8]) = match family {
        2 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            if packet.first()? >> 4 != 4 || ihl < 20 {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            let fragment_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            let rest = if fragment_offset == 0 {
                packet.get(ihl..).unwrap_or_default()
            } else {
                &[]
            };
            (
                Ipv4Addr::from(src).into(),
                Ipv4Addr::from(dst).into(),
                *packet.get(9)?,
                rest,
            )
        }
        10 => {
            if packet.first()? >> 4 != 6 {
                return None;
            }
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                *packet.get(6)?,
                packet.get(40..).unwrap_or_default(),
            )
        }
        _ => return None,
    };
    let (src_port, dst_port) = match rest {
        [a, b, c, d, ..] if has_ports(protocol) => (
            Some(u16::from_be_bytes([*a, *b])),
            Some(u16::from_be_bytes([*c, *d])),
        ),
        _ => (None, None),
    };
    Some(Tuple {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
    })
}

/// The decision in one NFLOG packet message, if it is Palisade's.
fn decision(family: u8, body: &[u8]) -> Option<Event> {
    let (mut prefix, mut payload) = (None, None);
    for (t, v) in attrs(body) {
        match t {
            NFULA_PREFIX => prefix = Some(v.split(|b| *b == 0).next().unwrap_or_default()),
            NFULA_PAYLOAD => payload = Some(v),
            _ => {}
        }
    }
    let tag = Tag::parse(std::str::from_utf8(prefix?).ok()?)?;
    let payload = payload?;
    let bytes = match family {
        2 => u64::from(u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?])),
        _ => 40 + u64::from(u16::from_be_bytes([*payload.get(4)?, *payload.get(5)?])),
    };
    Some(Event::Decision {
        tag,
        tuple: packet_tuple(family, payload)?,
        bytes,
    })
}

/// The end of a connection in one conntrack destroy event.
fn ended(body: &[u8]) -> Option<Event> {
    let (mut tuple, mut packets, mut bytes) = (None, 0u64, 0u64);
    for (t, v) in attrs(body) {
        match t {
            CTA_TUPLE_ORIG => tuple = ct_tuple(v),
            CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY => {
                for (ct, cv) in attrs(v) {
                    let n = u64::from_be_bytes(cv.try_into().ok()?);
                    match ct {
                        CTA_COUNTERS_PACKETS => packets += n,
                        CTA_COUNTERS_BYTES => bytes += n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Event::Ended {
        tuple: tuple?,
        packets,
        bytes,
    })
}

/// A TCP connection that an update event says is over, with its original
/// tuple's raw attribute.
fn tcp_over(body: &[u8]) -> Option<(Tuple, Vec<u8>)> {
    let (mut raw, mut over) = (None, false);
    for (t, v) in attrs(body) {
        match t {
            CTA_TUPLE_ORIG => raw = Some(v),
            CTA_PROTOINFO => {
                over = attrs(v)
                    .filter(|(t, _)| *t == CTA_PROTOINFO_TCP)
                    .flat_map(|(_, tcp)| attrs(tcp))
                    .any(|(t, s)| {
                        t == CTA_PROTOINFO_TCP_STATE
                            && s.first().is_some_and(|s| TCP_OVER.contains(s))
                    });
            }
            _ => {}
        }
    }
    let raw = raw.filter(|_| over)?;
    Some((ct_tuple(raw)?, raw.to_vec()))
}

fn ct_tuple(nested: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut src_port, mut dst_port) = (None, None);
    for (t, v) in attrs(nested) {
        match t {
            CTA_TUPLE_IP => {
                for (it, iv) in attrs(v) {
                    let ip = match it {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                            IpAddr::from(<[u8; 4]>::try_from(iv).ok()?)
                        }
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                            IpAddr::from(<[u8; 16]>::try_from(iv).ok()?)
                        }
                        _ => continue,
                    };
                    if matches!(it, CTA_IP_V4_SRC | CTA_IP_V6_SRC) {
                        src = Some(ip);
                    } else {
                        dst = Some(ip);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (pt, pv) in attrs(v) {
                    match pt {
                        CTA_PROTO_NUM => protocol = pv.first().copied(),
                        CTA_PROTO_SRC_PORT => {
                            src_port = Some(u16::from_be_bytes(pv.try_into().ok()?));
                        }
                        CTA_PROTO_DST_PORT => {
                            dst_port = Some(u16::from_be_bytes(pv.try_into().ok()?));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let protocol = protocol?;
    let ported = has_ports(protocol);
    Some(Tuple {
        src: src?,
        dst: dst?,
        protocol,
        src_port: src_port.filter(|_| ported),
        dst_port: dst_port.filter(|_| ported),
    })
}

/// A netlink-netfilter socket joined to the multicast `groups`, with a
/// receive buffer large enough for bursts between two reads.
fn netlink_socket(groups: u32) -> Result<OwnedFd, AgentError> {
    let fd = socket(
        AddressFamily::NETLINK,
        SocketType::RAW,
        Some(netlink::NETFILTER),
    )
    .map_err(|e| failed("socket(NETLINK_NETFILTER)", e.into()))?;
    bind(&fd, &SocketAddrNetlink::new(0, groups)).map_err(|e| failed("bind", e.into()))?;
    // Best effort: a smaller buffer only overflows sooner, and overflows
    // are counted.
    let _ = sockopt::set_socket_recv_buffer_size(&fd, 4 << 20);
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(Duration::from_secs(5)))
        .map_err(|e| failed("SO_RCVTIMEO", e.into()))?;
    Ok(fd)
}

/// Sends one NFLOG configuration message for `group` and waits for its
/// acknowledgement.
fn configure(fd: &OwnedFd, group: u16, payload: &[u8]) -> Result<(), AgentError> {
    let len = HEADER + NFGENMSG + payload.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(0); // AF_UNSPEC
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(payload);
    send(fd, &out, SendFlags::empty()).map_err(|e| failed("send", e.into()))?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = recv(fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| failed("recv NFLOG configuration answer", e.into()))?
            .0;
        let mut rest = &buf[..n];
        while rest.len() >= HEADER {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < HEADER || len > rest.len() {
                return Err(AgentError::Netlink(format!("bad message length {len}")));
            }
            if ty == NLMSG_ERROR {
                let code = match &rest[HEADER..len] {
                    [a, b, c, d, ..] => i32::from_ne_bytes([*a, *b, *c, *d]),
                    _ => return Err(AgentError::Netlink("a short error message".into())),
                };
                return match code {
                    0 => Ok(()),
                    // EBUSY: another listener holds the group.
                    -16 => Err(AgentError::Netlink(format!(
                        "NFLOG group {group} is taken by another program (choose another with --flow-log-group)"
                    ))),
                    code => Err(kernel_error(code)),
                };
            }
            rest = &rest[align(len).min(rest.len())..];
        }
    }
}

/// Reads every message waiting on `fd` without blocking and hands each
/// one's type, family and body to `each`. An overflowed socket (ENOBUFS)
/// bumps `lost` and goes on.
fn drain(
    fd: &OwnedFd,
    buf: &mut [u8],
    lost: &mut u64,
    mut each: impl FnMut(u16, u8, &[u8]),
) -> Result<(), AgentError> {
    loop {
        let n = match recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Err(rustix::io::Errno::NOBUFS) => {
                *lost += 1;
                continue;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(failed("recv", e.into())),
        };
        let mut rest = &buf[..n];
        while rest.len() >= HEADER + NFGENMSG {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < HEADER + NFGENMSG || len > rest.len() {
                break;
            }
            each(ty, rest[HEADER], &rest[HEADER + NFGENMSG..len]);
            rest = &rest[align(len).min(rest.len())..];
        }
    }
}

/// Turns on conntrack accounting (packets and bytes per entry) in the
/// namespace, so that destroy events carry counts.
fn set_conntrack_acct(netns: Option<&str>) -> Result<(), AgentError> {
    let path = "/proc/sys/net/netfilter/nf_conntrack_acct";
    let write = || std::fs::write(path, "1").map_err(|e| failed(path, e));
    match netns {
        None => write(),
        Some(name) => {
            let ns = format!("/run/netns/{name}");
            std::thread::scope(|s| {
                s.spawn(|| {
                    let f = std::fs::File::open(&ns).map_err(|e| failed(&ns, e))?;
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&f),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| failed(&format!("setns {ns}"), e.into()))?;
                    write()
                })
                .join()
                .unwrap_or_else(|_| Err(AgentError::Netlink("setns thread panicked".into())))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(verdict: Verdict, rule: Option<(&str, u32)>) -> Tag {
        Tag {
            verdict,
            direction: Direction::Ingress,
            rule: rule.map(|(sg, i)| (sg.parse().unwrap(), i)),
        }
    }

    #[test]
    fn prefixes_round_trip_and_foreign_ones_are_ignored() {
        for t in [
            tag(Verdict::Accept, Some(("sg-1a2b3c4d", 3))),
            tag(Verdict::Drop, None),
            tag(Verdict::WouldDrop, Some(("sg-1a2b3c4d", 0))),
        ] {
            let p = t.prefix();
            assert!(p.len() <= 40, "{p}");
            assert_eq!(Tag::parse(&p), Some(t));
        }
        for bad in [
            "",
            "pal",
            "pal A ingress default",
            "pal X ingress default",
            "pal D sideways default",
            "pal D ingress sg-1a2b3c4d",
            "pal D ingress sg-1a2b3c4d x",
            "pal D ingress default extra",
            "iptables: DROP",
        ] {
            assert_eq!(Tag::parse(bad), None, "{bad}");
        }
    }

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn packet_tuples_are_read_from_ip_headers_and_short_ones_refused() {
        let p = ipv4_tcp([198, 18, 0, 2], [198, 18, 0, 1], 40000, 22);
        let t = packet_tuple(2, &p).unwrap();
        assert_eq!(t.src, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (t.protocol, t.src_port, t.dst_port),
            (6, Some(40000), Some(22))
        );
        // ICMP has no ports; a truncated header is no tuple.
        let mut icmp = p.clone();
        icmp[9] = 1;
        assert_eq!(packet_tuple(2, &icmp).unwrap().dst_port, None);
        for n in 0..20 {
            assert_eq!(packet_tuple(2, &p[..n]), None);
        }
        assert_eq!(packet_tuple(10, &p), None, "an IPv4 header as IPv6");
        let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 17, 64];
        v6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x9c, 0x40, 0, 53]);
        let t = packet_tuple(10, &v6).unwrap();
        assert_eq!(
            (t.protocol, t.src_port, t.dst_port),
            (17, Some(40000), Some(53))
        );
    }

    fn tuple(sport: u16) -> Tuple {
        packet_tuple(2, &ipv4_tcp([198, 18, 0, 2], [198, 18, 0, 1], sport, 22)).unwrap()
    }

    #[test]
    fn identical_decisions_make_one_record_and_ends_close_accepted_flows() {
        let mut a = Aggregator::new("ins-node0001".parse().unwrap(), 100);
        let drop = tag(Verdict::Drop, None);
        let accept = tag(Verdict::Accept, Some(("sg-1a2b3c4d", 1)));
        for now in [10, 11, 12] {
            let e = Event::Decision {
                tag: drop.clone(),
                tuple: tuple(1),
                bytes: 60,
            };
            a.add(e, now, 5);
        }
        let e = Event::Decision {
            tag: accept.clone(),
            tuple: tuple(2),
            bytes: 60,
        };
        a.add(e, 13, 5);
        let records = a.flush(14);
        assert_eq!(records.len(), 2);
        let d = &records[0];
        assert_eq!(
            (d.action, d.decisions, d.packets, d.bytes),
            (Verdict::Drop, 3, Some(3), Some(180))
        );
        assert_eq!((d.start, d.end, d.rule.clone()), (10, 12, None));
        let acc = &records[1];
        assert_eq!((acc.action, acc.packets), (Verdict::Accept, None));
        assert_eq!(acc.rule.as_ref().unwrap().policy_index, 1);
        assert_eq!(acc.rule.as_ref().unwrap().revision, 5);
        for r in &records {
            r.check().unwrap();
        }
        // The accepted connection ends: a closing record with its counts.
        let end = Event::Ended {
            tuple: tuple(2),
            packets: 12,
            bytes: 3456,
        };
        a.add(end.clone(), 20, 6);
        let closing = a.flush(21);
        assert_eq!(closing.len(), 1);
        let c = &closing[0];
        assert_eq!((c.decisions, c.packets, c.bytes), (0, Some(12), Some(3456)));
        assert_eq!((c.start, c.end, c.action), (13, 20, Verdict::Accept));
        c.check().unwrap();
        // An end nobody decided (or a second one) makes nothing.
        a.add(end, 22, 6);
        assert!(a.flush(23).is_empty());
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_hold() {
        let mut a = Aggregator::new("ins-node0001".parse().unwrap(), 2);
        for sport in 0..5 {
            let e = Event::Decision {
                tag: tag(Verdict::Drop, None),
                tuple: tuple(sport),
                bytes: 60,
            };
            a.add(e, 1, 1);
        }
        assert_eq!(a.suppressed, 3);
        assert_eq!(a.flush(2).len(), 2);
    }
}
