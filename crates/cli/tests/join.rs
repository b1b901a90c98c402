//! Join tokens against a real `palisade serve` on 127.0.0.1 (issue 22):
//! `palisade cluster join-token create|list|revoke`, the unsigned
//! `JoinCluster` a token is good for, and every refusal (expired, revoked,
//! used up, addresses outside the allowed CIDRs, another cluster) leaving
//! the server exactly as it was. A token cannot sign any other action.
//! The kernel side (agents in network namespaces) is `netns_join.rs`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::Server;
use palisade_client::{Client, Credentials};
use serde_json::{json, Value};

/// A cluster `cls` set up by `tke apply` with no nodes (they join by
/// themselves); returns its node group's id.
fn cluster(s: &Server, cls: &str) -> String {
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        cls,
        "--cluster-cidr",
        "198.18.0.0/24",
        "--container-cidr",
        "198.19.0.0/16",
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let groups = s
        .client()
        .vpc("DescribeSecurityGroups", &json!({}))
        .unwrap();
    groups["SecurityGroupSet"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["SecurityGroupName"] == json!(format!("tke-node-{cls}")))
        .unwrap()["SecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `palisade cluster join-token create ARGS` -> the token printed.
fn token(s: &Server, args: &[&str]) -> String {
    let mut all = vec!["cluster", "join-token", "create"];
    all.extend_from_slice(args);
    let o = s.run(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn join(s: &Server, token: &str, id: &str, ip: &str) -> Result<Value, (String, String)> {
    Client::anonymous(&s.url)
        .unwrap()
        .palisade(
            "JoinCluster",
            &json!({ "JoinToken": token, "InstanceId": id, "PrivateIpAddresses": [ip] }),
        )
        .map_err(|e| match e {
            palisade_client::ClientError::Api { code, message, .. } => (code, message),
            other => (String::new(), other.to_string()),
        })
}

/// What a refused join must leave alone.
fn state(s: &Server) -> Value {
    let c = s.client();
    json!([
        c.cvm("DescribeInstances", &json!({})).unwrap()["InstanceSet"],
        c.palisade("DescribeClusters", &json!({})).unwrap()["ClusterSet"],
        c.palisade("DescribeJoinTokens", &json!({})).unwrap()["JoinTokenSet"],
    ])
}

#[test]
fn a_token_joins_nodes_into_its_cluster_bound_to_the_node_group() {
    let s = Server::start();
    let group = cluster(&s, "cls-aaaaaaaa");
    cluster(&s, "cls-bbbbbbbb");
    let t = token(
        &s,
        &[
            "--cluster-id",
            "cls-aaaaaaaa",
            "--max-uses",
            "2",
            "--allowed-cidrs",
            "198.18.0.0/24",
        ],
    );
    assert!(t.starts_with("jtk-") && t.contains('.'), "{t}");
    let a = join(&s, &t, "ins-node0001", "198.18.0.11").unwrap();
    assert_eq!(a["ClusterId"], "cls-aaaaaaaa");
    assert_eq!(a["SecurityGroupIds"], json!([group]));
    assert!(a["SecretId"].as_str().unwrap().starts_with("AKID"));
    join(&s, &t, "ins-node0002", "198.18.0.12").unwrap();
    let c = s.client();
    let ins = c
        .cvm(
            "DescribeInstances",
            &json!({ "InstanceIds": ["ins-node0001"] }),
        )
        .unwrap();
    assert_eq!(
        ins["InstanceSet"][0]["SecurityGroupIds"],
        json!([group]),
        "{ins}"
    );
    let cls = c
        .palisade(
            "DescribeClusters",
            &json!({ "ClusterIds": ["cls-aaaaaaaa"] }),
        )
        .unwrap();
    assert_eq!(
        cls["ClusterSet"][0]["Nodes"],
        json!(["ins-node0001", "ins-node0002"])
    );
    // `tke apply` again (no --nodes: the nodes join by themselves) keeps
    // the joined nodes listed and bound, and the recorded groups.
    let o = s.run(&[
        "tke",
        "apply",
        "--cluster-id",
        "cls-aaaaaaaa",
        "--cluster-cidr",
        "198.18.0.0/24",
        "--container-cidr",
        "198.19.0.0/16",
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let cls = c
        .palisade(
            "DescribeClusters",
            &json!({ "ClusterIds": ["cls-aaaaaaaa"] }),
        )
        .unwrap();
    assert_eq!(
        cls["ClusterSet"][0]["Nodes"],
        json!(["ins-node0001", "ins-node0002"])
    );
    // The node's own key reads its own ruleset, and nothing else.
    let own = Client::new(
        &s.url,
        Credentials {
            secret_id: a["SecretId"].as_str().unwrap().into(),
            secret_key: a["SecretKey"].as_str().unwrap().into(),
        },
    )
    .unwrap();
    own.palisade(
        "DescribeInstanceRuleset",
        &json!({ "InstanceId": "ins-node0001" }),
    )
    .unwrap();
    assert!(own.vpc("DescribeSecurityGroups", &json!({})).is_err());
    // Used up: the third join is refused and changes nothing.
    let before = state(&s);
    let (code, msg) = join(&s, &t, "ins-node0003", "198.18.0.13").unwrap_err();
    assert_eq!(code, "AuthFailure.UnauthorizedOperation");
    assert!(msg.contains("used up (2 of 2 uses)"), "{msg}");
    assert_eq!(state(&s), before);
    // The list shows the token used up, never its secret or hash.
    let o = s.run(&["cluster", "join-token", "list", "--output", "json"]);
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listed.contains("\"UsedUp\""), "{listed}");
    let secret = t.split_once('.').unwrap().1;
    assert!(!listed.contains(secret) && !listed.contains("Sha256"));
    // A restart of the same machine without its identity: the id is taken.
    let t2 = token(&s, &["--cluster-id", "cls-aaaaaaaa"]);
    let (code, msg) = join(&s, &t2, "ins-node0001", "198.18.0.21").unwrap_err();
    assert_eq!(code, "InvalidParameterValue.Duplicate", "{msg}");
}

#[test]
fn refused_tokens_register_nothing() {
    let s = Server::start();
    cluster(&s, "cls-aaaaaaaa");
    cluster(&s, "cls-bbbbbbbb");
    let refused = |t: &str, ip: &str, says: &str| {
        let before = state(&s);
        let (code, msg) = join(&s, t, "ins-node0001", ip).unwrap_err();
        assert_eq!(code, "AuthFailure.UnauthorizedOperation", "{msg}");
        assert!(msg.contains(says), "{msg} lacks {says:?}");
        assert!(msg.contains("nothing was registered"), "{msg}");
        assert_eq!(state(&s), before);
    };
    // Outside the allowed CIDRs.
    let t = token(
        &s,
        &[
            "--cluster-id",
            "cls-aaaaaaaa",
            "--allowed-cidrs",
            "198.18.0.0/28",
        ],
    );
    refused(&t, "198.18.0.99", "outside the token's allowed CIDRs");
    // Revoked.
    let id = t.split_once('.').unwrap().0.to_string();
    let o = s.run(&["cluster", "join-token", "revoke", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    refused(&t, "198.18.0.11", "revoked");
    // Expired.
    let t = token(&s, &["--cluster-id", "cls-aaaaaaaa", "--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(&t, "198.18.0.11", "expired at");
    // A wrong secret is refused as an unknown token.
    let t = token(&s, &["--cluster-id", "cls-aaaaaaaa"]);
    let (id, _) = t.split_once('.').unwrap();
    refused(
        &format!("{id}.wrongwrongwrongwrongwrongwrong12"),
        "198.18.0.11",
        "unknown token or wrong secret",
    );
    // A token for cls-aaaaaaaa cannot join cls-bbbbbbbb: a join names no
    // cluster of its own.
    let e = Client::anonymous(&s.url)
        .unwrap()
        .palisade(
            "JoinCluster",
            &json!({ "JoinToken": t, "InstanceId": "ins-node0001",
                     "PrivateIpAddresses": ["198.18.0.11"], "ClusterId": "cls-bbbbbbbb" }),
        )
        .unwrap_err();
    assert_eq!(e.code(), Some("UnknownParameter"), "{e}");
    let a = join(&s, &t, "ins-node0001", "198.18.0.11").unwrap();
    assert_eq!(a["ClusterId"], "cls-aaaaaaaa");
    // A cluster without groups for the role cannot have tokens.
    s.client()
        .palisade(
            "RegisterCluster",
            &json!({ "ClusterId": "cls-cccccccc", "ClusterCidr": "198.18.0.0/24", "ContainerCidr": "198.19.0.0/16" }),
        )
        .unwrap();
    let o = s.run(&[
        "cluster",
        "join-token",
        "create",
        "--cluster-id",
        "cls-cccccccc",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no groups for role node"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_join_token_calls_no_other_action() {
    let s = Server::start();
    cluster(&s, "cls-aaaaaaaa");
    let t = token(&s, &["--cluster-id", "cls-aaaaaaaa"]);
    let (id, secret) = t.split_once('.').unwrap();
    // As a signing key it is unknown, for every action.
    let signed = Client::new(
        &s.url,
        Credentials {
            secret_id: id.into(),
            secret_key: secret.into(),
        },
    )
    .unwrap();
    for (service, action) in [
        ("vpc", "DescribeSecurityGroups"),
        ("palisade", "RegisterInstances"),
        ("palisade", "JoinCluster"),
        ("palisade", "DescribeJoinTokens"),
    ] {
        let e = signed.call(service, action, &json!({})).unwrap_err();
        assert_eq!(
            e.code(),
            Some("AuthFailure.SecretIdNotFound"),
            "{action}: {e}"
        );
    }
    // Unsigned, only JoinCluster is served.
    let anon = Client::anonymous(&s.url).unwrap();
    for (service, action) in [
        ("vpc", "DescribeSecurityGroups"),
        ("palisade", "RegisterInstances"),
        ("palisade", "CreateJoinToken"),
    ] {
        let e = anon
            .call(service, action, &json!({ "JoinToken": t }))
            .unwrap_err();
        assert!(
            e.code().unwrap_or("").starts_with("AuthFailure"),
            "{action}: {e}"
        );
    }
    // A signed JoinCluster (an account key) is not a join.
    let e = s
        .client()
        .palisade(
            "JoinCluster",
            &json!({ "JoinToken": t, "InstanceId": "ins-node0001", "PrivateIpAddresses": ["198.18.0.11"] }),
        )
        .unwrap_err();
    assert_eq!(e.code(), Some("UnsupportedOperation"), "{e}");
    assert_eq!(
        s.client().cvm("DescribeInstances", &json!({})).unwrap()["TotalCount"],
        0
    );
}
