//! Address and service templates and their groups (`ipm-`, `ipmg-`, `ppm-`,
//! `ppmg-`): named sets of addresses or services that rules refer to.

use crate::addr::AddressEntry;
use crate::error::ModelError;
use crate::ids::{
    AddressTemplateGroupId, AddressTemplateId, ServiceTemplateGroupId, ServiceTemplateId,
};
use crate::proto::{Ports, Protocol};
use std::fmt;

/// An address template: IPs, CIDRs and ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressTemplate {
    /// `ipm-` id.
    pub id: AddressTemplateId,
    /// Display name.
    pub name: String,
    /// Entries, in the order given.
    pub addresses: Vec<AddressEntry>,
}

/// A group of address templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressTemplateGroup {
    /// `ipmg-` id.
    pub id: AddressTemplateGroupId,
    /// Display name.
    pub name: String,
    /// Member templates.
    pub templates: Vec<AddressTemplateId>,
}

/// A service template: protocols with ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTemplate {
    /// `ppm-` id.
    pub id: ServiceTemplateId,
    /// Display name.
    pub name: String,
    /// Entries, in the order given.
    pub services: Vec<ServiceEntry>,
}

/// A group of service templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTemplateGroup {
    /// `ppmg-` id.
    pub id: ServiceTemplateGroupId,
    /// Display name.
    pub name: String,
    /// Member templates.
    pub templates: Vec<ServiceTemplateId>,
}

/// One entry of a service template: `tcp:80`, `udp:53,5353`,
/// `tcp:8000-8100`, or a protocol alone (`icmp`, `gre`, `tcp` = all ports).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceEntry {
    /// The protocol.
    pub protocol: Protocol,
    /// The ports (`ALL` for protocols without ports).
    pub ports: Ports,
}

impl ServiceEntry {
    /// Parses `proto[:ports]`, naming `field` in errors.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ModelError> {
        let text = value.trim();
        let (proto, ports) = match text.split_once(':') {
            Some((p, ports)) => (p, Some(ports)),
            None => (text, None),
        };
        let protocol = Protocol::parse_field(field, proto).map_err(|_| {
            ModelError::malformed(
                field,
                value,
                "expected PROTOCOL or PROTOCOL:PORTS, e.g. tcp:80, udp:53,5353, icmp",
            )
        })?;
        let ports = match ports {
            None => Ports::All,
            Some(p) => Ports::parse_field(field, p).map_err(|e| {
                ModelError::new(
                    e.code(),
                    format!("{field} {value:?}: {}", strip_field(e.message())),
                )
            })?,
        };
        if !protocol.has_ports() && !ports.is_all() {
            return Err(ModelError::malformed(
                field,
                value,
                format_args!("{protocol} takes no ports"),
            ));
        }
        Ok(ServiceEntry { protocol, ports })
    }
}

impl fmt::Display for ServiceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.protocol.as_str().to_ascii_lowercase();
        if self.ports.is_all() {
            f.write_str(&proto)
        } else {
            write!(f, "{proto}:{}", self.ports)
        }
    }
}

/// `Port "x": why` -> `why`, to re-home a port error under another field.
fn strip_field(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(_, why)| why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn service_entries() {
        let e = ServiceEntry::parse_field("Services", "TCP:8000-8100").unwrap();
        assert_eq!(e.protocol, Protocol::Tcp);
        assert!(e.ports.contains(8050));
        assert_eq!(e.to_string(), "tcp:8000-8100");
        assert_eq!(
            ServiceEntry::parse_field("Services", "udp:53,5353")
                .unwrap()
                .to_string(),
            "udp:53,5353"
        );
        assert_eq!(
            ServiceEntry::parse_field("Services", "icmp").unwrap().ports,
            Ports::All
        );
        assert_eq!(
            ServiceEntry::parse_field("Services", "tcp").unwrap().ports,
            Ports::All
        );
        let err = ServiceEntry::parse_field("Services", "tcp:80-20").unwrap_err();
        assert_eq!(
            err.to_string(),
            "InvalidParameterValue.Malformed: Services \"tcp:80-20\": range start is above its end"
        );
        assert!(ServiceEntry::parse_field("Services", "icmp:8").is_err());
        assert!(ServiceEntry::parse_field("Services", "http:80").is_err());
        assert_eq!(
            ServiceEntry::parse_field("Services", "tcp:0")
                .unwrap_err()
                .code(),
            ErrorCode::InvalidParameterValueRange
        );
    }
}
