//! Flow records (DESIGN.md section 8, "Observe"): what a node's groups
//! decided about the connections it saw. A record is one aggregate of
//! identical decisions over an interval: the same instance, direction,
//! addresses, ports, protocol, verdict and deciding rule. The agent makes
//! them from the kernel's log of decisions, the server stores and serves
//! them, and change impact replays them.
//!
//! Field names follow Tencent's flow-log fields where one exists
//! (`srcaddr`, `dstaddr`, `srcport`, `dstport`, `protocol`, `packets`,
//! `bytes`, `start`, `end`, `action`), spelled in the API's PascalCase.
//! The deciding rule is named the way `explain`, `check` and the nft
//! comments name it: security group, direction, policy index, and the
//! revision the rule belonged to.

use crate::error::ModelError;
use crate::ids::{InstanceId, SecurityGroupId};
use crate::policy::Direction;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What the node did with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// A rule accepted it.
    Accept,
    /// A DROP rule, or the default drop, dropped it.
    Drop,
    /// In audit mode: it passed, but enforcing would have dropped it.
    WouldDrop,
}

impl Verdict {
    /// `ACCEPT`, `DROP` or `WOULD_DROP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
            Verdict::WouldDrop => "WOULD_DROP",
        }
    }

    /// Parses `ACCEPT`, `DROP` or `WOULD_DROP` (case-insensitively; `drop`
    /// as a CLI filter), naming `field` in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        match value.to_ascii_uppercase().replace('-', "_").as_str() {
            "ACCEPT" => Ok(Verdict::Accept),
            "DROP" => Ok(Verdict::Drop),
            "WOULD_DROP" => Ok(Verdict::WouldDrop),
            _ => Err(ModelError::malformed(
                field,
                value,
                "expected ACCEPT, DROP or WOULD_DROP",
            )),
        }
    }
}

/// How an instance's groups are applied (`palisade` service
/// `ModifyInstanceEnforcement`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Enforcement {
    /// Every verdict as the rules say.
    #[default]
    Enforce,
    /// A packet a DROP rule or the default drop would drop passes, is
    /// counted, and is recorded as `WOULD_DROP`; everything else is as
    /// enforced.
    Audit,
}

impl Enforcement {
    /// `ENFORCE` or `AUDIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "ENFORCE",
            Enforcement::Audit => "AUDIT",
        }
    }

    /// Parses `ENFORCE` or `AUDIT` (case-insensitively), naming `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        match value.to_ascii_uppercase().as_str() {
            "ENFORCE" => Ok(Enforcement::Enforce),
            "AUDIT" => Ok(Enforcement::Audit),
            _ => Err(ModelError::malformed(
                field,
                value,
                "expected ENFORCE or AUDIT",
            )),
        }
    }
}

/// The rule that decided, as `explain` and the nft comments name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleRef {
    /// The rule's group.
    pub security_group_id: SecurityGroupId,
    /// The rule's position in its direction's list, from 0.
    pub policy_index: u32,
    /// The store revision of the ruleset the agent had applied when the
    /// rule decided.
    pub revision: u64,
}

/// One aggregated flow record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FlowRecord {
    /// The instance whose groups decided.
    pub instance_id: InstanceId,
    /// `ingress` (the peer is the source) or `egress`.
    #[serde(with = "direction_text")]
    pub direction: Direction,
    /// Tencent's `srcaddr`.
    pub src_addr: IpAddr,
    /// Tencent's `dstaddr`.
    pub dst_addr: IpAddr,
    /// Tencent's `srcport`: TCP, UDP, SCTP and UDP-Lite only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// Tencent's `dstport`: TCP, UDP, SCTP and UDP-Lite only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// Tencent's `protocol`: the IANA protocol number.
    pub protocol: u8,
    /// Tencent's `action`.
    pub action: Verdict,
    /// The deciding rule, or `None` for the default drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// How many decisions (new connections and re-checks) this record
    /// aggregates; 0 for the closing record of a connection that passed,
    /// which carries its packets and bytes.
    pub decisions: u64,
    /// Tencent's `packets`: on a closing record, the connection's packets
    /// both ways; on a DROP record, the dropped packets that were logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Tencent's `bytes`, like `packets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Tencent's `start`: the first decision, Unix seconds.
    pub start: u64,
    /// Tencent's `end`: the last decision or connection end, Unix seconds.
    pub end: u64,
}

impl FlowRecord {
    /// The checks every record must pass before it is stored: a consistent
    /// family, time and ports only for protocols that have them, and a
    /// rule for every verdict but the default drop's.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.src_addr.is_ipv4() != self.dst_addr.is_ipv4() {
            return Err(ModelError::malformed(
                "DstAddr",
                &self.dst_addr.to_string(),
                "the source and destination addresses are of different families",
            ));
        }
        if self.end < self.start {
            return Err(ModelError::malformed(
                "End",
                &self.end.to_string(),
                "before Start",
            ));
        }
        let ported = matches!(self.protocol, 6 | 17 | 132 | 136);
        if !ported && (self.src_port.is_some() || self.dst_port.is_some()) {
            return Err(ModelError::malformed(
                "DstPort",
                &self.protocol.to_string(),
                "a port on a protocol without ports",
            ));
        }
        let closing =
            self.packets.is_some() && self.bytes.is_some() && self.action != Verdict::Drop;
        if self.decisions == 0 && !closing {
            return Err(ModelError::malformed(
                "Decisions",
                "0",
                "only the closing record of a passed connection (with Packets and Bytes) has no decisions",
            ));
        }
        if self.action == Verdict::Accept && self.rule.is_none() {
            return Err(ModelError::malformed(
                "Rule",
                "",
                "an ACCEPT record names the rule that accepted",
            ));
        }
        Ok(())
    }

    /// The peer's address: the source of an ingress flow, the destination
    /// of an egress one.
    pub fn peer(&self) -> IpAddr {
        match self.direction {
            Direction::Ingress => self.src_addr,
            Direction::Egress => self.dst_addr,
        }
    }

    /// The port a rule's service matches: the destination port (ingress
    /// and egress rules both match the destination port).
    pub fn service_port(&self) -> Option<u16> {
        self.dst_port
    }
}

/// Which records a query wants (`DescribeFlowRecords`, `palisade flows`);
/// every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Only these instances (empty: all of the account's).
    pub instance_ids: Vec<InstanceId>,
    /// Only records decided by a rule of this group.
    pub security_group_id: Option<SecurityGroupId>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only this policy index (with `security_group_id`: one rule).
    pub policy_index: Option<u32>,
    /// Only this verdict.
    pub action: Option<Verdict>,
    /// Only peers inside this block.
    pub peer: Option<crate::addr::Cidr>,
    /// Only this destination port.
    pub port: Option<u16>,
    /// Only this protocol number.
    pub protocol: Option<u8>,
    /// Only records that end at or after this time (Unix seconds).
    pub since: Option<u64>,
    /// Only records that start at or before this time (Unix seconds).
    pub until: Option<u64>,
}

impl FlowFilter {
    /// Whether `r` passes the filter: the reference the store's queries
    /// are tested against.
    pub fn matches(&self, r: &FlowRecord) -> bool {
        let rule = r.rule.as_ref();
        (self.instance_ids.is_empty() || self.instance_ids.contains(&r.instance_id))
            && self
                .security_group_id
                .as_ref()
                .is_none_or(|g| rule.is_some_and(|x| &x.security_group_id == g))
            && self.direction.is_none_or(|d| d == r.direction)
            && self
                .policy_index
                .is_none_or(|i| rule.is_some_and(|x| x.policy_index == i))
            && self.action.is_none_or(|a| a == r.action)
            && self.peer.is_none_or(|c| c.contains(r.peer()))
            && self.port.is_none_or(|p| r.dst_port == Some(p))
            && self.protocol.is_none_or(|p| p == r.protocol)
            && self.since.is_none_or(|t| r.end >= t)
            && self.until.is_none_or(|t| r.start <= t)
    }
}

/// Reads a duration such as `30s`, `15m`, `1h`, `7d` (or a bare number of
/// seconds), as `--since` and `--retention` take them.
pub fn parse_duration(field: &str, value: &str) -> Result<std::time::Duration, ModelError> {
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = digits.parse().map_err(|_| {
        ModelError::malformed(
            field,
            value,
            "expected a duration such as 30s, 15m, 1h or 7d",
        )
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(ModelError::malformed(
                field,
                value,
                "expected a duration such as 30s, 15m, 1h or 7d",
            ))
        }
    };
    n.checked_mul(scale)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| ModelError::malformed(field, value, "longer than 100 years"))
}

mod direction_text {
    use crate::policy::Direction;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        let text = String::deserialize(d)?;
        Direction::parse_field("Direction", &text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FlowRecord {
        FlowRecord {
            instance_id: "ins-node0001".parse().unwrap(),
            direction: Direction::Ingress,
            src_addr: "198.18.0.2".parse().unwrap(),
            dst_addr: "198.18.0.1".parse().unwrap(),
            src_port: Some(40000),
            dst_port: Some(22),
            protocol: 6,
            action: Verdict::Accept,
            rule: Some(RuleRef {
                security_group_id: "sg-1a2b3c4d".parse().unwrap(),
                policy_index: 3,
                revision: 17,
            }),
            decisions: 2,
            packets: Some(10),
            bytes: Some(900),
            start: 1_700_000_000,
            end: 1_700_000_060,
        }
    }

    #[test]
    fn a_record_round_trips_through_json_with_tencent_like_names() {
        let r = record();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"SrcAddr\":\"198.18.0.2\""), "{text}");
        assert!(text.contains("\"Action\":\"ACCEPT\""), "{text}");
        assert!(text.contains("\"Direction\":\"ingress\""), "{text}");
        assert!(text.contains("\"PolicyIndex\":3"), "{text}");
        let back: FlowRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        r.check().unwrap();
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let mut r = record();
        r.dst_addr = "2001:db8::1".parse().unwrap();
        assert!(r.check().is_err());
        let mut r = record();
        r.protocol = 1;
        assert!(r.check().is_err(), "ICMP has no ports");
        let mut r = record();
        r.rule = None;
        assert!(r.check().is_err(), "an accept names its rule");
        r.action = Verdict::Drop;
        r.check().unwrap();
        let mut r = record();
        r.end = r.start - 1;
        assert!(r.check().is_err());
        assert!(serde_json::from_str::<FlowRecord>(r#"{"Bogus":1}"#).is_err());
    }

    #[test]
    fn filters_hold_every_field_that_is_set() {
        let r = record();
        assert!(FlowFilter::default().matches(&r));
        let sg: SecurityGroupId = "sg-1a2b3c4d".parse().unwrap();
        let f = FlowFilter {
            instance_ids: vec![r.instance_id.clone()],
            security_group_id: Some(sg.clone()),
            direction: Some(Direction::Ingress),
            policy_index: Some(3),
            action: Some(Verdict::Accept),
            peer: Some(crate::addr::Cidr::parse_any("p", "198.18.0.0/24").unwrap()),
            port: Some(22),
            protocol: Some(6),
            since: Some(r.end),
            until: Some(r.start),
        };
        assert!(f.matches(&r));
        for miss in [
            FlowFilter {
                policy_index: Some(4),
                ..f.clone()
            },
            FlowFilter {
                action: Some(Verdict::Drop),
                ..f.clone()
            },
            FlowFilter {
                peer: Some(crate::addr::Cidr::parse_any("p", "198.18.1.0/24").unwrap()),
                ..f.clone()
            },
            FlowFilter {
                port: Some(23),
                ..f.clone()
            },
            FlowFilter {
                since: Some(r.end + 1),
                ..f.clone()
            },
            FlowFilter {
                until: Some(r.start - 1),
                ..f.clone()
            },
            FlowFilter {
                direction: Some(Direction::Egress),
                ..f.clone()
            },
        ] {
            assert!(!miss.matches(&r), "{miss:?}");
        }
        let mut default_drop = r.clone();
        default_drop.rule = None;
        assert!(!f.matches(&default_drop), "a group filter wants a rule");
    }

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("d", "90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("d", "15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("d", "1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("d", "7d").unwrap().as_secs(), 604_800);
        for bad in ["", "h", "1x", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_parse_as_the_cli_writes_them() {
        assert_eq!(Verdict::parse_field("v", "drop").unwrap(), Verdict::Drop);
        assert_eq!(
            Verdict::parse_field("v", "would-drop").unwrap(),
            Verdict::WouldDrop
        );
        assert!(Verdict::parse_field("v", "reject").is_err());
    }
}
