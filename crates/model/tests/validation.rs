//! Every validation rule of DESIGN.md section 2 with a bad value: the code
//! and the field named in the message.

use palisade_model::wire::SecurityGroupPolicy;
use palisade_model::*;

fn rule(json: &str) -> Result<Policy, ModelError> {
    let w: SecurityGroupPolicy = serde_json::from_str(json).expect("wire json");
    Policy::from_wire(&w)
}

#[track_caller]
fn bad(json: &str, code: ErrorCode, field: &str) {
    let err = rule(json).expect_err(json);
    assert_eq!(err.code(), code, "{json}: {err}");
    assert!(
        err.message().contains(field),
        "{json}: {err} should name {field}"
    );
}

#[test]
fn good_rules_in_every_shape() {
    let r = rule(r#"{"Protocol":"tcp","Port":"22","CidrBlock":"203.0.113.0/24","Action":"accept","PolicyDescription":"ssh"}"#).unwrap();
    assert_eq!(r.action, Action::Accept);
    assert_eq!(r.to_string(), "ACCEPT TCP 22 peer 203.0.113.0/24 \"ssh\"");
    let r =
        rule(r#"{"Protocol":"ALL","Port":"ALL","Ipv6CidrBlock":"2001:db8::/32","Action":"DROP"}"#)
            .unwrap();
    assert_eq!(r.peer.family(), Some(Family::V6));
    let r = rule(r#"{"Protocol":"icmp","CidrBlock":"0.0.0.0/0","Action":"ACCEPT"}"#).unwrap();
    assert_eq!(
        r.service,
        Service::Protocol {
            protocol: Protocol::Icmp,
            ports: Ports::All
        }
    );
    rule(r#"{"Protocol":"ICMPv6","Port":"all","Ipv6CidrBlock":"::/0","Action":"ACCEPT"}"#).unwrap();
    rule(r#"{"Protocol":"GRE","SecurityGroupId":"sg-abcdefgh","Action":"ACCEPT"}"#).unwrap();
    rule(r#"{"ServiceTemplate":{"ServiceId":"ppm-abcdefgh"},"AddressTemplate":{"AddressGroupId":"ipmg-abcdefgh"},"Action":"ACCEPT"}"#).unwrap();
    rule(r#"{"ServiceTemplate":{"ServiceId":"","ServiceGroupId":"ppmg-abcdefgh"},"AddressTemplate":{"AddressId":"ipm-abcdefgh","AddressGroupId":""},"Action":"DROP"}"#).unwrap();
    // absent Port means ALL
    let r = rule(r#"{"Protocol":"udp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#).unwrap();
    assert_eq!(
        r.service,
        Service::Protocol {
            protocol: Protocol::Udp,
            ports: Ports::All
        }
    );
}

#[test]
fn round_trips_through_the_wire_shape() {
    let r = rule(
        r#"{"Protocol":"tcp","Port":"80,443,8000-8100","CidrBlock":"192.0.2.1","Action":"accept"}"#,
    )
    .unwrap();
    let w = r.to_wire(3);
    assert_eq!(w.policy_index, Some(3));
    assert_eq!(w.protocol.as_deref(), Some("TCP"));
    assert_eq!(w.cidr_block.as_deref(), Some("192.0.2.1"));
    assert_eq!(w.ipv6_cidr_block.as_deref(), Some(""));
    let json = serde_json::to_value(&w).unwrap();
    assert_eq!(json["ServiceTemplate"]["ServiceId"], "");
    assert_eq!(json["Action"], "ACCEPT");
    let back: SecurityGroupPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(Policy::from_wire(&back).unwrap(), r);
}

#[test]
fn protocol_rules() {
    bad(
        r#"{"Protocol":"sctp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "Protocol \"sctp\"",
    );
    bad(
        r#"{"CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::MissingParameter,
        "Protocol",
    );
    bad(
        r#"{"Protocol":"tcp","ServiceTemplate":{"ServiceId":"ppm-abcdefgh"},"CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "ServiceTemplate",
    );
    bad(
        r#"{"Port":"80","ServiceTemplate":{"ServiceId":"ppm-abcdefgh"},"CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "Port",
    );
    bad(
        r#"{"ServiceTemplate":{"ServiceId":"ppm-abcdefgh","ServiceGroupId":"ppmg-abcdefgh"},"CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "ServiceGroupId",
    );
    bad(
        r#"{"ServiceTemplate":{"ServiceId":"ppm-ABC"},"CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "ServiceTemplate.ServiceId",
    );
    bad(
        r#"{"ServiceTemplate":{"ServiceGroupId":"ppm-abcdefgh"},"CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "ServiceTemplate.ServiceGroupId",
    );
}

#[test]
fn port_rules() {
    let err =
        rule(r#"{"Protocol":"tcp","Port":"80-20","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "InvalidParameterValue.Malformed: Port \"80-20\": range start is above its end"
    );
    bad(
        r#"{"Protocol":"tcp","Port":"0","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueRange,
        "Port \"0\"",
    );
    bad(
        r#"{"Protocol":"udp","Port":"65536","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueRange,
        "Port",
    );
    bad(
        r#"{"Protocol":"tcp","Port":"8o","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "Port \"8o\"",
    );
    bad(
        r#"{"Protocol":"icmp","Port":"8","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValue,
        "Port \"8\"",
    );
    bad(
        r#"{"Protocol":"ALL","Port":"22","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValue,
        "Port",
    );
    bad(
        r#"{"Protocol":"gre","Port":"1-2","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValue,
        "Port",
    );
}

#[test]
fn peer_rules() {
    bad(
        r#"{"Protocol":"tcp","Action":"ACCEPT"}"#,
        ErrorCode::MissingParameter,
        "CidrBlock",
    );
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Ipv6CidrBlock":"::/0","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "CidrBlock and Ipv6CidrBlock",
    );
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","SecurityGroupId":"sg-abcdefgh","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "SecurityGroupId",
    );
    bad(
        r#"{"Protocol":"tcp","SecurityGroupId":"sg-abcdefgh","AddressTemplate":{"AddressId":"ipm-abcdefgh"},"Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "AddressTemplate",
    );
    bad(
        r#"{"Protocol":"tcp","AddressTemplate":{"AddressId":"ipm-abcdefgh","AddressGroupId":"ipmg-abcdefgh"},"Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterCoexist,
        "AddressGroupId",
    );
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"10.0.0.0/40","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "CidrBlock \"10.0.0.0/40\"",
    );
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"10.0.0.300","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "CidrBlock",
    );
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"2001:db8::/32","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "CidrBlock",
    );
    bad(
        r#"{"Protocol":"tcp","Ipv6CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "Ipv6CidrBlock",
    );
    bad(
        r#"{"Protocol":"tcp","Ipv6CidrBlock":"2001:db8::/200","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "Ipv6CidrBlock",
    );
    bad(
        r#"{"Protocol":"tcp","SecurityGroupId":"sg-1","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "SecurityGroupId \"sg-1\"",
    );
    bad(
        r#"{"Protocol":"tcp","AddressTemplate":{"AddressId":"ipmg-abcdefgh"},"Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "AddressTemplate.AddressId",
    );
    bad(
        r#"{"Protocol":"tcp","AddressTemplate":{"AddressGroupId":"ipm-abcdefgh"},"Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "AddressTemplate.AddressGroupId",
    );
    // 0.0.0.0/n (n > 0), however written, is refused, never widened
    // (issue 23; docs/semantics.md)
    for cidr in ["0.0.0.0/16", "9.9.9.9/3", " 10.0.0.0/8"] {
        let body = format!(r#"{{"Protocol":"tcp","CidrBlock":"{cidr}","Action":"ACCEPT"}}"#);
        let err = rule(&body).unwrap_err();
        assert!(err.message().contains("CidrBlock"), "{cidr}: {err}");
    }
    let r = rule(r#"{"Protocol":"tcp","CidrBlock":"0.0.0.0/0","Action":"ACCEPT"}"#).unwrap();
    assert_eq!(r.peer.to_string(), "0.0.0.0/0");
}

#[test]
fn action_description_index_rules() {
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"10.0.0.0/8"}"#,
        ErrorCode::MissingParameter,
        "Action",
    );
    bad(
        r#"{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Action":"ALLOW"}"#,
        ErrorCode::InvalidParameterValueMalformed,
        "Action \"ALLOW\"",
    );
    let long = "x".repeat(256);
    bad(
        &format!(
            r#"{{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT","PolicyDescription":"{long}"}}"#
        ),
        ErrorCode::InvalidParameterValueTooLong,
        "PolicyDescription",
    );
    let ok = "é".repeat(255);
    rule(&format!(r#"{{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT","PolicyDescription":"{ok}"}}"#)).unwrap();
    bad(
        r#"{"PolicyIndex":-1,"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#,
        ErrorCode::InvalidParameterValueRange,
        "PolicyIndex",
    );
}

#[test]
fn policy_sets_locate_errors_and_check_version() {
    let w: wire::SecurityGroupPolicySet = serde_json::from_str(
        r#"{"Version":"x","Ingress":[{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"},
             {"Protocol":"tcp","Port":"80-20","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}]}"#,
    )
    .unwrap();
    let err = PolicySet::from_wire(&w).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParameterValueMalformed);
    assert!(err.message().starts_with("Version"), "{err}");
    let errs = check_policy_set(&w, &Limits::default()).unwrap_err();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[1].0, ".Ingress[1].Port");
    let ok: wire::SecurityGroupPolicySet =
        serde_json::from_str(r#"{"Version":"7","Egress":[]}"#).unwrap();
    let set = PolicySet::from_wire(&ok).unwrap();
    assert_eq!(set.version, Some(7));
    assert_eq!(set.to_wire().version.as_deref(), Some("7"));
}

#[test]
fn limits_per_group() {
    let one = r#"{"Protocol":"tcp","CidrBlock":"10.0.0.0/8","Action":"ACCEPT"}"#;
    let many = [one; 101].join(",");
    let w: wire::SecurityGroupPolicySet =
        serde_json::from_str(&format!(r#"{{"Ingress":[{many}]}}"#)).unwrap();
    let errs = check_policy_set(&w, &Limits::default()).unwrap_err();
    assert_eq!(
        errs[0].1.code(),
        ErrorCode::LimitExceededSecurityGroupPolicySet
    );
    let limits = Limits {
        rules_per_direction: 200,
        ..Limits::default()
    };
    assert!(check_policy_set(&w, &limits).is_ok());

    let refr = r#"{"Protocol":"tcp","SecurityGroupId":"sg-abcdefgh","Action":"ACCEPT"}"#;
    let refs = [refr; 11].join(",");
    let w: wire::SecurityGroupPolicySet =
        serde_json::from_str(&format!(r#"{{"Egress":[{refs}]}}"#)).unwrap();
    let errs = check_policy_set(&w, &Limits::default()).unwrap_err();
    assert_eq!(errs[0].1.code(), ErrorCode::LimitExceeded);
    assert!(errs[0].1.message().contains("11 rules reference"));
}
