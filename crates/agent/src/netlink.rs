//! A small nf_tables netlink client for the two questions the agent asks
//! every step, which `nft` can only answer by listing the whole table with
//! every set element (0.5-0.7 s at 100,000 addresses, nft 1.0.6):
//!
//! - [`NfNetlink::generation`]: the ruleset generation, a number the kernel
//!   bumps on every committed nf_tables transaction in the namespace (any
//!   table, anyone's). While it stands still, nobody changed anything.
//! - [`NfNetlink::rule_counters`]: a dump of one table's rules (no set
//!   elements), summed per rule comment.
//!
//! And one conntrack operation, rare but needed before a stamp value is
//! reused ([`crate::stamp`]): [`NfNetlink::clear_ct_marks`] clears some
//! `ct mark` bits in every entry, the others untouched.
//!
//! Programs are still loaded and the table still read for its fingerprint
//! with `nft` ([`crate::nft`]). The socket is opened in the dataplane's
//! network namespace by a short-lived thread that enters it (`setns`), so
//! the agent's own threads never leave theirs.

use crate::dataplane::Counter;
use crate::error::AgentError;
use rustix::net::{
    netlink, recv, send, socket, sockopt, AddressFamily, RecvFlags, SendFlags, SocketType,
};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_MARK: u16 = 8;
const CTA_ZONE: u16 = 18;
const CTA_MARK_MASK: u16 = 21;
const NLA_F_NESTED: u16 = 0x8000;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ENOENT: i32 = 2;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_NEWRULE: u16 = 6;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NFPROTO_INET: u8 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// libnftnl's user-data TLV type of a rule's comment.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

const HEADER: usize = 16;
const NFGENMSG: usize = 4;

/// An `NETLINK_NETFILTER` socket.
#[derive(Debug)]
pub struct NfNetlink {
    fd: OwnedFd,
    seq: u32,
}

impl NfNetlink {
    /// Opens a socket in the current namespace, or in the named one
    /// (`/run/netns/NAME`, as `ip netns` makes).
    pub fn open(netns: Option<&str>) -> Result<Self, AgentError> {
        let fd = in_netns(netns, new_socket)?;
        Ok(Self { fd, seq: 0 })
    }

    /// The nf_tables ruleset generation.
    pub fn generation(&mut self) -> Result<u32, AgentError> {
        let mut id = None;
        self.request(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETGEN,
            NLM_F_REQUEST | NLM_F_ACK,
            0,
            &[],
            |ty, _, body| {
                if ty == NFT_MSG_NEWGEN {
                    id = attrs(body)
                        .find(|(t, _)| *t == NFTA_GEN_ID)
                        .and_then(|(_, v)| Some(u32::from_be_bytes(v.try_into().ok()?)));
                }
            },
        )?;
        id.ok_or_else(|| AgentError::Netlink("no generation id in the answer".into()))
    }

    /// Counters of the rules of table `inet NAME`, summed per rule comment
    /// (empty when there is no such table).
    pub fn rule_counters(&mut self, table: &str) -> Result<BTreeMap<String, Counter>, AgentError> {
        let mut name = table.as_bytes().to_vec();
        name.push(0);
        let mut filter = Vec::new();
        put_attr(&mut filter, NFTA_RULE_TABLE, &name);
        let mut counters: BTreeMap<String, Counter> = BTreeMap::new();
        self.request(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            NFPROTO_INET,
            &filter,
            |ty, _, body| {
                if ty != NFT_MSG_NEWRULE {
                    return;
                }
                let mut comment = String::new();
                let mut counted: Option<Counter> = None;
                for (t, v) in attrs(body) {
                    match t {
                        NFTA_RULE_USERDATA => comment = rule_comment(v).unwrap_or_default(),
                        NFTA_RULE_EXPRESSIONS => {
                            for c in attrs(v)
                                .filter(|(t, _)| *t == NFTA_LIST_ELEM)
                                .filter_map(|(_, e)| counter_expr(e))
                            {
                                let sum = counted.get_or_insert_with(Counter::default);
                                sum.packets += c.packets;
                                sum.bytes += c.bytes;
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(c) = counted {
                    let entry = counters.entry(comment).or_default();
                    entry.packets += c.packets;
                    entry.bytes += c.bytes;
                }
            },
        )?;
        Ok(counters)
    }

    /// Clears the `ct mark` bits of `mask` in every conntrack entry (IPv4
    /// and IPv6, every zone) whose mark has some of them, leaving its other
    /// bits alone: a dump, then one update per such entry carrying
    /// `CTA_MARK` 0 and `CTA_MARK_MASK` `mask`, which the kernel applies as
    /// `mark = (mark & ~mask) ^ 0` under the entry (so a bit another
    /// program sets meanwhile is not undone). Entries that expired between
    /// the dump and their update are skipped. Returns how many were
    /// updated.
    pub fn clear_ct_marks(&mut self, mask: u32) -> Result<usize, AgentError> {
        let mut marked: Vec<(u8, Vec<u8>)> = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.request(
                NFNL_SUBSYS_CTNETLINK,
                IPCTNL_MSG_CT_GET,
                NLM_F_REQUEST | NLM_F_DUMP,
                family,
                &[],
                |ty, family, body| {
                    if ty != IPCTNL_MSG_CT_NEW {
                        return;
                    }
                    let (mut tuple, mut zone, mut mark) = (None, None, 0);
                    for (t, v) in attrs(body) {
                        match t {
                            CTA_TUPLE_ORIG => tuple = Some(v),
                            CTA_ZONE => zone = Some(v),
                            CTA_MARK => {
                                mark = v.try_into().map(u32::from_be_bytes).unwrap_or(0);
                            }
                            _ => {}
                        }
                    }
                    let Some(tuple) = tuple.filter(|_| mark & mask != 0) else {
                        return;
                    };
                    let mut update = Vec::new();
                    put_attr(&mut update, CTA_TUPLE_ORIG | NLA_F_NESTED, tuple);
                    if let Some(z) = zone {
                        put_attr(&mut update, CTA_ZONE, z);
                    }
                    put_attr(&mut update, CTA_MARK, &0u32.to_be_bytes());
                    put_attr(&mut update, CTA_MARK_MASK, &mask.to_be_bytes());
                    marked.push((family, update));
                },
            )?;
        }
        let mut cleared = 0;
        for (family, update) in &marked {
            // No NLM_F_CREATE: an entry that is gone stays gone (ENOENT).
            match self.exchange(
                NFNL_SUBSYS_CTNETLINK,
                IPCTNL_MSG_CT_NEW,
                NLM_F_REQUEST | NLM_F_ACK,
                *family,
                update,
                |_, _, _| {},
            )? {
                0 => cleared += 1,
                e if e == -ENOENT => {}
                e => return Err(kernel_error(e)),
            }
        }
        Ok(cleared)
    }

    /// [`NfNetlink::exchange`], an error answer as an error.
    fn request(
        &mut self,
        subsys: u16,
        msg: u16,
        flags: u16,
        family: u8,
        payload: &[u8],
        each: impl FnMut(u16, u8, &[u8]),
    ) -> Result<(), AgentError> {
        match self.exchange(subsys, msg, flags, family, payload, each)? {
            0 => Ok(()),
            code => Err(kernel_error(code)),
        }
    }

    /// Sends one request to subsystem `subsys` and hands each answer
    /// message's type (the subsystem's message number), family and body
    /// (after the `nfgenmsg`) to `each`, until the dump's end or the
    /// acknowledgement; returns the acknowledgement's code (0, or a
    /// negative errno).
    fn exchange(
        &mut self,
        subsys: u16,
        msg: u16,
        flags: u16,
        family: u8,
        payload: &[u8],
        mut each: impl FnMut(u16, u8, &[u8]),
    ) -> Result<i32, AgentError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = HEADER + NFGENMSG + payload.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&((subsys << 8) | msg).to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[family, 0, 0, 0]);
        out.extend_from_slice(payload);
        send(&self.fd, &out, SendFlags::empty()).map_err(|e| failed("send", e.into()))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let (n, full) = recv(&self.fd, &mut buf[..], RecvFlags::TRUNC)
                .map_err(|e| failed("recv", e.into()))?;
            if full > n {
                return Err(AgentError::Netlink(format!(
                    "answer of {full} bytes truncated to {n}"
                )));
            }
            let mut rest = &buf[..n];
            while rest.len() >= HEADER {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let got = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < HEADER || len > rest.len() {
                    return Err(AgentError::Netlink(format!("bad message length {len}")));
                }
                let body = &rest[HEADER..len];
                rest = &rest[align(len).min(rest.len())..];
                if got != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(0),
                    NLMSG_ERROR => {
                        return match body {
                            [a, b, c, d, ..] => Ok(i32::from_ne_bytes([*a, *b, *c, *d])),
                            _ => Err(AgentError::Netlink("a short error message".into())),
                        };
                    }
                    _ if ty >> 8 == subsys && body.len() >= NFGENMSG => {
                        each(ty & 0xff, body[0], &body[NFGENMSG..]);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Runs `make` (which opens a socket) in the named network namespace
/// (`/run/netns/NAME`), or here for `None`. A socket keeps the namespace
/// it was made in, so only a short-lived thread ever enters another.
pub(crate) fn in_netns(
    netns: Option<&str>,
    make: impl FnOnce() -> Result<OwnedFd, AgentError> + Send,
) -> Result<OwnedFd, AgentError> {
    let Some(name) = netns else {
        return make();
    };
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).map_err(|e| failed(&path, e))?;
            move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| failed(&format!("setns {path}"), e.into()))?;
            make()
        })
        .join()
        .unwrap_or_else(|_| Err(AgentError::Netlink("setns thread panicked".into())))
    })
}

fn new_socket() -> Result<OwnedFd, AgentError> {
    let fd = socket(
        AddressFamily::NETLINK,
        SocketType::RAW,
        Some(netlink::NETFILTER),
    )
    .map_err(|e| failed("socket(NETLINK_NETFILTER)", e.into()))?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(Duration::from_secs(5)))
        .map_err(|e| failed("SO_RCVTIMEO", e.into()))?;
    Ok(fd)
}

pub(crate) fn kernel_error(code: i32) -> AgentError {
    AgentError::Netlink(format!(
        "the kernel answered: {}",
        std::io::Error::from_raw_os_error(-code)
    ))
}

pub(crate) fn failed(what: &str, e: std::io::Error) -> AgentError {
    AgentError::Netlink(format!("{what}: {e}"))
}

pub(crate) fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute.
pub(crate) fn put_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + align(len) - len, 0);
}

/// The attributes in `data`: type (without the nested and byte-order
/// flags) and value. Stops at the first malformed one.
pub(crate) fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((ty, value))
    })
}

/// The counter of one `NFTA_LIST_ELEM` expression, if it is a counter.
fn counter_expr(expr: &[u8]) -> Option<Counter> {
    let mut name = None;
    let mut data = None;
    for (t, v) in attrs(expr) {
        match t {
            NFTA_EXPR_NAME => name = Some(v),
            NFTA_EXPR_DATA => data = Some(v),
            _ => {}
        }
    }
    if name? != b"counter\0" {
        return None;
    }
    let mut c = Counter::default();
    for (t, v) in attrs(data?) {
        let n = u64::from_be_bytes(v.try_into().ok()?);
        match t {
            NFTA_COUNTER_BYTES => c.bytes = n,
            NFTA_COUNTER_PACKETS => c.packets = n,
            _ => {}
        }
    }
    Some(c)
}

/// A rule's comment from libnftnl's user data (type, length, value
/// records; the comment NUL-terminated).
fn rule_comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        udata = &udata[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(parts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, v) in parts {
            put_attr(&mut out, *t, v);
        }
        out
    }

    #[test]
    fn attributes_round_trip_with_padding_and_flags() {
        let mut data = Vec::new();
        put_attr(&mut data, 1, b"abc");
        put_attr(&mut data, 0x8000 | 2, &[1, 2, 3, 4]);
        let got: Vec<_> = attrs(&data).collect();
        assert_eq!(got, vec![(1, &b"abc"[..]), (2, &[1u8, 2, 3, 4][..])]);
        // A length past the end stops the walk instead of reading beyond.
        let mut bad = data.clone();
        bad[0] = 200;
        assert_eq!(attrs(&bad).count(), 0);
    }

    #[test]
    fn a_counter_expression_is_read_and_others_are_not() {
        let counter = nested(&[
            (NFTA_EXPR_NAME, b"counter\0".to_vec()),
            (
                NFTA_EXPR_DATA,
                nested(&[
                    (NFTA_COUNTER_BYTES, 1234u64.to_be_bytes().to_vec()),
                    (NFTA_COUNTER_PACKETS, 7u64.to_be_bytes().to_vec()),
                ]),
            ),
        ]);
        assert_eq!(
            counter_expr(&counter),
            Some(Counter {
                packets: 7,
                bytes: 1234
            })
        );
        let lookup = nested(&[(NFTA_EXPR_NAME, b"lookup\0".to_vec())]);
        assert_eq!(counter_expr(&lookup), None);
    }

    #[test]
    fn the_comment_is_found_among_user_data_records() {
        let mut udata = vec![5, 2, 0xaa, 0xbb];
        let text = b"sg-1a2b3c4d ingress 3\0";
        udata.push(NFTNL_UDATA_RULE_COMMENT);
        udata.push(text.len() as u8);
        udata.extend_from_slice(text);
        assert_eq!(
            rule_comment(&udata).as_deref(),
            Some("sg-1a2b3c4d ingress 3")
        );
        assert_eq!(rule_comment(&[0, 40, 1]), None);
    }
}
