//! Facts about the node the agent reads from the system: the addresses of
//! its uplink, which it registers as the instance's private IPs when none
//! are given (`ip -j addr show dev IFACE`, inside the namespace if any).

use crate::error::AgentError;
use serde_json::Value;
use std::process::Command;

/// The global-scope IPv4 and IPv6 addresses of `iface`.
pub fn uplink_addresses(netns: Option<&str>, iface: &str) -> Result<Vec<String>, AgentError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["netns", "exec", ns, "ip"]);
    }
    cmd.args(["-j", "addr", "show", "dev", iface]);
    let command = format!("ip -j addr show dev {iface}");
    let out = cmd.output().map_err(|source| AgentError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(AgentError::Nft {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| AgentError::Io {
        context: "reading `ip -j addr` output".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(parse_addresses(&v))
}

fn parse_addresses(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let scope = a.get("scope").and_then(Value::as_str).unwrap_or_default();
            if let (Some(local), "global") = (a.get("local").and_then(Value::as_str), scope) {
                out.push(local.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_addresses_only() {
        let v = serde_json::json!([{"ifname": "eth0", "addr_info": [
            {"family": "inet", "local": "198.18.0.11", "prefixlen": 24, "scope": "global"},
            {"family": "inet6", "local": "2001:db8::11", "prefixlen": 64, "scope": "global"},
            {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]}]);
        assert_eq!(parse_addresses(&v), vec!["198.18.0.11", "2001:db8::11"]);
    }
}
