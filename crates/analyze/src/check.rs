//! `palisade check`: every finding of a fleet (see [`crate::finding`] and
//! `docs/checks.md`). [`check`] runs on a loaded fleet; [`check_text`] loads
//! a file leniently first, so missing references and exceeded limits come
//! out as `REF002` and `LIM001` findings rather than as a parse failure.

use crate::engine::Engine;
use crate::error::AnalyzeError;
use crate::finding::{Finding, Severity};
use crate::load::{load, Loaded};
use palisade_model::{AddrRange, Family, InstanceId, SecurityGroupId};
use palisade_policy::{PacketBox, PacketSet};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A (protocol, port) that must not be open to the Internet (`EXP001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SensitivePort {
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    /// The port.
    pub port: u16,
}

impl SensitivePort {
    /// Parses `tcp:22`, `udp:3389` or a bare `22` (TCP).
    pub fn parse(text: &str) -> Result<SensitivePort, AnalyzeError> {
        let bad = |why: &str| AnalyzeError::Malformed {
            field: "--sensitive-port".to_string(),
            value: text.to_string(),
            why: why.to_string(),
        };
        let t = text.trim();
        let (proto, port) = match t.split_once(':') {
            Some((p, n)) => (p.trim().to_ascii_lowercase(), n.trim()),
            None => ("tcp".to_string(), t),
        };
        let protocol = match proto.as_str() {
            "tcp" => palisade_policy::TCP,
            "udp" => palisade_policy::UDP,
            _ => return Err(bad("expected tcp:PORT, udp:PORT or PORT")),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be 1-65535"))?;
        Ok(SensitivePort { protocol, port })
    }

    /// What usually listens there, for messages.
    pub fn service(self) -> &'static str {
        match self.port {
            22 => "SSH",
            3389 => "RDP",
            2379 | 2380 => "etcd",
            10250 => "kubelet",
            6443 => "Kubernetes API server",
            _ => "sensitive port",
        }
    }
}

impl fmt::Display for SensitivePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            palisade_policy::eval::protocol_name(self.protocol),
            self.port
        )
    }
}

/// What `check` looks for, beyond the fleet's own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// `EXP001`'s ports: by default TCP 22, 3389, 2379, 2380, 10250, 6443 and UDP 3389.
    pub sensitive_ports: Vec<SensitivePort>,
    /// `LIM001`: rules per direction per group after expanding address and
    /// service templates (Palisade's default: 1,000).
    pub expanded_rules_per_direction: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        let tcp = |port| SensitivePort {
            protocol: palisade_policy::TCP,
            port,
        };
        CheckOptions {
            sensitive_ports: vec![
                tcp(22),
                tcp(3389),
                SensitivePort {
                    protocol: palisade_policy::UDP,
                    port: 3389,
                },
                tcp(2379),
                tcp(2380),
                tcp(10250),
                tcp(6443),
            ],
            expanded_rules_per_direction: 1000,
        }
    }
}

/// The findings of one run. JSON: `{"findings": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every finding, sorted by id, then by line.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether some finding is at or above `fail_on` (the CLI then exits 1).
    pub fn fails(&self, fail_on: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= fail_on)
    }

    /// Adds findings made elsewhere (`USE001` from a server's hits),
    /// keeping the report's order.
    pub fn add(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
        sort(&mut self.findings);
    }

    /// How many findings have each severity: (errors, warnings, infos).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s| self.findings.iter().filter(|f| f.severity == s).count();
        (n(Severity::Error), n(Severity::Warning), n(Severity::Info))
    }
}

/// Loads `text` leniently and checks it.
pub fn check_text(text: &str, options: &CheckOptions) -> Result<Report, AnalyzeError> {
    let loaded = load(text)?;
    check_loaded(&loaded, options)
}

/// Checks a leniently loaded fleet; its `REF002` findings are included.
pub fn check_loaded(loaded: &Loaded, options: &CheckOptions) -> Result<Report, AnalyzeError> {
    let mut findings = loaded.findings.clone();
    findings.extend(run(&loaded.fleet, options, &loaded.placeholders)?);
    sort(&mut findings);
    Ok(Report { findings })
}

/// Every finding of a (valid) fleet.
pub fn check(
    fleet: &palisade_model::Fleet,
    options: &CheckOptions,
) -> Result<Vec<Finding>, AnalyzeError> {
    let mut f = run(fleet, options, &HashSet::new())?;
    sort(&mut f);
    Ok(f)
}

fn run(
    fleet: &palisade_model::Fleet,
    options: &CheckOptions,
    placeholders: &HashSet<String>,
) -> Result<Vec<Finding>, AnalyzeError> {
    let mut engine = Engine::new(fleet)?;
    let mut out = Vec::new();
    crate::tke_checks::run(&mut engine, &mut out);
    crate::exposure::run(&mut engine, options, &mut out);
    crate::anomaly::run(&mut engine, &mut out);
    crate::refs::run(&engine, placeholders, &mut out);
    crate::refs::impossible(&engine, &mut out);
    crate::limits::run(&engine, options, &mut out);
    Ok(out)
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (a.id, a.location.line.unwrap_or(usize::MAX))
            .cmp(&(b.id, b.location.line.unwrap_or(usize::MAX)))
    });
}

/// Instances grouped by their binding list (groups in order), in file order.
pub(crate) fn binding_classes(
    fleet: &palisade_model::Fleet,
) -> Vec<(Vec<SecurityGroupId>, Vec<InstanceId>)> {
    let mut index: HashMap<&[SecurityGroupId], usize> = HashMap::new();
    let mut out: Vec<(Vec<SecurityGroupId>, Vec<InstanceId>)> = Vec::new();
    for inst in &fleet.instances {
        match index.get(inst.security_groups.as_slice()) {
            Some(&i) => out[i].1.push(inst.id.clone()),
            None => {
                index.insert(inst.security_groups.as_slice(), out.len());
                out.push((inst.security_groups.clone(), vec![inst.id.clone()]));
            }
        }
    }
    out
}

/// `ins-a` or `ins-a (and 3 other instances bound to the same groups in the same order)`.
pub(crate) fn instances_phrase(instances: &[InstanceId]) -> String {
    match instances {
        [] => "no instance".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!(
            "{first} (and {} other instance{} bound to the same groups in the same order)",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

/// Every packet of protocols `lo..=hi`, ports `ports`, from/to `peers`.
pub(crate) fn packets(lo: u8, hi: u8, peers: &[AddrRange], ports: (u16, u16)) -> PacketSet {
    let mut s = PacketSet::empty();
    let Some(ports) = palisade_model::PortRange::new(ports.0, ports.1) else {
        return s;
    };
    for p in peers {
        s.union_with(&PacketSet::from_box(&PacketBox {
            protocol_lo: lo,
            protocol_hi: hi,
            peers: *p,
            ports,
        }));
    }
    s
}

/// Every packet from/to `peers`, all protocols and ports.
pub(crate) fn all_traffic(peers: &[AddrRange]) -> PacketSet {
    packets(0, u8::MAX, peers, (0, u16::MAX))
}

/// The public unicast space of a family: IPv4 without the private, shared,
/// loopback, link-local, multicast and reserved blocks; IPv6's 2000::/3.
pub(crate) fn public_ranges(family: Family) -> Vec<AddrRange> {
    let r = |a: &str| {
        palisade_policy::codec::parse_addr_range("public", a)
            .ok()
            .into_iter()
    };
    match family {
        Family::V6 => r("2000::/3").collect(),
        Family::V4 => {
            let all = PacketSet::from_box(&PacketBox {
                protocol_lo: 0,
                protocol_hi: 0,
                peers: AddrRange::everything(Family::V4),
                ports: palisade_model::PortRange::single(0),
            });
            let mut special = PacketSet::empty();
            for b in [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "224.0.0.0/4",
                "240.0.0.0/4",
            ] {
                for peers in r(b) {
                    special.union_with(&PacketSet::from_box(&PacketBox {
                        protocol_lo: 0,
                        protocol_hi: 0,
                        peers,
                        ports: palisade_model::PortRange::single(0),
                    }));
                }
            }
            all.difference(&special)
                .boxes()
                .into_iter()
                .map(|b| b.peers)
                .collect()
        }
    }
}

/// A packet of `set` for a finding: from the public address space when the
/// set has one there (a "from the Internet" witness reads better as 1.0.0.1
/// than as 0.0.0.0), and a host address rather than a network address
/// when the set holds the next address too.
pub(crate) fn witness(
    set: &PacketSet,
    direction: palisade_model::Direction,
) -> Option<palisade_policy::Packet> {
    static PUBLIC: std::sync::OnceLock<PacketSet> = std::sync::OnceLock::new();
    let public = PUBLIC.get_or_init(|| {
        let mut ranges = public_ranges(Family::V4);
        ranges.extend(public_ranges(Family::V6));
        all_traffic(&ranges)
    });
    let w = set
        .intersection(public)
        .witness(direction)
        .or_else(|| set.witness(direction))?;
    let next = match w.peer {
        std::net::IpAddr::V4(a) => u32::from(a)
            .checked_add(1)
            .map(|n| std::net::IpAddr::V4(n.into())),
        std::net::IpAddr::V6(a) => u128::from(a)
            .checked_add(1)
            .map(|n| std::net::IpAddr::V6(n.into())),
    };
    let host = next
        .map(|peer| palisade_policy::Packet { peer, ..w })
        .filter(|p| set.contains(p));
    Some(host.unwrap_or(w))
}

/// The number of addresses in `ranges`.
pub(crate) fn size(ranges: impl IntoIterator<Item = AddrRange>) -> u128 {
    ranges
        .into_iter()
        .map(|r| (r.hi() - r.lo()).saturating_add(1))
        .fold(0u128, u128::saturating_add)
}
