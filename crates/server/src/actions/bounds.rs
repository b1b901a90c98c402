//! The bound of every list a request may carry, checked on the raw JSON
//! before an action reads it (docs/api.md, "Limits of a request"). A list
//! longer than its bound is refused at the cost of counting it: nothing is
//! decoded, validated or compared, and no transaction is opened, so one
//! account's oversized request cannot hold the store's writer while
//! another account waits.
//!
//! [`BOUNDS`] names each list by action and path (object keys joined by
//! `.`, lists transparent: `Filters.Values` is the `Values` of every
//! filter). A list the table does not name, wherever it sits, is bounded
//! by [`OTHER_LISTS`]. Parents come before children in the walk, so a
//! list of a million filters is refused before any filter is looked at.

use crate::error::ApiError;
use palisade_model::limits::Limits;
use palisade_model::ErrorCode;
use serde_json::{Map, Value};

/// How a bound is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Max {
    /// A fixed number of items.
    Fixed(usize),
    /// The configured rules per direction of a group
    /// ([`Limits::rules_per_direction`]).
    RulesPerDirection,
    /// The configured groups of one instance ([`Limits::groups_per_instance`]).
    GroupsPerInstance,
}

impl Max {
    /// The number of items allowed under `limits`.
    pub fn items(self, limits: &Limits) -> usize {
        match self {
            Max::Fixed(n) => n,
            Max::RulesPerDirection => limits.rules_per_direction,
            Max::GroupsPerInstance => limits.groups_per_instance,
        }
    }
}

/// One bounded list: the actions it applies to, its path, its bound and the
/// error code of a request over it.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The actions.
    pub actions: &'static [&'static str],
    /// The list's path in the parameters.
    pub path: &'static str,
    /// How many items it may hold.
    pub max: Max,
    /// The Tencent error code of a longer list.
    pub code: ErrorCode,
}

/// Any list [`BOUNDS`] does not name holds at most this many items.
pub const OTHER_LISTS: usize = 100;

const TOO_MANY: ErrorCode = ErrorCode::InvalidParameterValueLimitExceeded;

const WITH_TAGS: &[&str] = &[
    "CreateSecurityGroup",
    "CreateSecurityGroupWithPolicies",
    "CloneSecurityGroup",
    "CreateAddressTemplate",
    "CreateAddressTemplateGroup",
    "CreateServiceTemplate",
    "CreateServiceTemplateGroup",
];
const WITH_FILTERS: &[&str] = &[
    "DescribeSecurityGroups",
    "DescribeSecurityGroupPolicies",
    "DescribeSecurityGroupExpandedPolicies",
    "DescribeAddressTemplates",
    "DescribeAddressTemplateGroups",
    "DescribeServiceTemplates",
    "DescribeServiceTemplateGroups",
    "DescribeInstances",
];
const WITH_RULES: &[&str] = &[
    "CreateSecurityGroupWithPolicies",
    "CreateSecurityGroupPolicies",
    "DeleteSecurityGroupPolicies",
    "ModifySecurityGroupPolicies",
    "ReplaceSecurityGroupPolicy",
    "ReplaceSecurityGroupPolicies",
];
const WITH_ORIGINAL_RULES: &[&str] =
    &["ReplaceSecurityGroupPolicy", "ReplaceSecurityGroupPolicies"];
const WITH_INSTANCE_IDS: &[&str] = &[
    "AssociateSecurityGroups",
    "DisassociateSecurityGroups",
    "ModifyInstancesAttribute",
    "DescribeInstances",
    "DeregisterInstances",
    "DescribeInstanceStatus",
    "DescribeFlowRecords",
];

/// Every bounded list, in the order docs/api.md shows them.
pub const BOUNDS: &[Bound] = &[
    Bound {
        actions: WITH_TAGS,
        path: "Tags",
        max: Max::Fixed(crate::params::MAX_TAGS),
        code: TOO_MANY,
    },
    Bound {
        actions: WITH_FILTERS,
        path: "Filters",
        max: Max::Fixed(10),
        code: TOO_MANY,
    },
    Bound {
        actions: WITH_FILTERS,
        path: "Filters.Values",
        max: Max::Fixed(5),
        code: TOO_MANY,
    },
    Bound {
        actions: WITH_RULES,
        path: "SecurityGroupPolicySet.Ingress",
        max: Max::RulesPerDirection,
        code: ErrorCode::LimitExceededSecurityGroupPolicySet,
    },
    Bound {
        actions: WITH_RULES,
        path: "SecurityGroupPolicySet.Egress",
        max: Max::RulesPerDirection,
        code: ErrorCode::LimitExceededSecurityGroupPolicySet,
    },
    Bound {
        actions: WITH_ORIGINAL_RULES,
        path: "OriginalSecurityGroupPolicySet.Ingress",
        max: Max::RulesPerDirection,
        code: ErrorCode::LimitExceededSecurityGroupPolicySet,
    },
    Bound {
        actions: WITH_ORIGINAL_RULES,
        path: "OriginalSecurityGroupPolicySet.Egress",
        max: Max::RulesPerDirection,
        code: ErrorCode::LimitExceededSecurityGroupPolicySet,
    },
    Bound {
        actions: &[
            "DescribeSecurityGroups",
            "DescribeSecurityGroupReferences",
            "DescribeSecurityGroupAssociationStatistics",
        ],
        path: "SecurityGroupIds",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["AssociateSecurityGroups", "DisassociateSecurityGroups"],
        path: "SecurityGroupIds",
        max: Max::Fixed(1),
        code: TOO_MANY,
    },
    Bound {
        actions: &["ModifyInstancesAttribute"],
        path: "SecurityGroups",
        max: Max::GroupsPerInstance,
        code: ErrorCode::LimitExceededAssociateUsgLimitExceeded,
    },
    Bound {
        actions: WITH_INSTANCE_IDS,
        path: "InstanceIds",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["CreateAddressTemplate", "ModifyAddressTemplateAttribute"],
        path: "Addresses",
        max: Max::Fixed(MAX_TEMPLATE_ENTRIES),
        code: TOO_MANY,
    },
    Bound {
        actions: &["CreateAddressTemplate", "ModifyAddressTemplateAttribute"],
        path: "AddressesExtra",
        max: Max::Fixed(MAX_TEMPLATE_ENTRIES),
        code: TOO_MANY,
    },
    Bound {
        actions: &["CreateServiceTemplate", "ModifyServiceTemplateAttribute"],
        path: "Services",
        max: Max::Fixed(MAX_TEMPLATE_ENTRIES),
        code: TOO_MANY,
    },
    Bound {
        actions: &["CreateServiceTemplate", "ModifyServiceTemplateAttribute"],
        path: "ServicesExtra",
        max: Max::Fixed(MAX_TEMPLATE_ENTRIES),
        code: TOO_MANY,
    },
    Bound {
        actions: &[
            "CreateAddressTemplateGroup",
            "ModifyAddressTemplateGroupAttribute",
        ],
        path: "AddressTemplateIds",
        max: Max::Fixed(MAX_GROUP_MEMBERS),
        code: TOO_MANY,
    },
    Bound {
        actions: &[
            "CreateServiceTemplateGroup",
            "ModifyServiceTemplateGroupAttribute",
        ],
        path: "ServiceTemplateIds",
        max: Max::Fixed(MAX_GROUP_MEMBERS),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterInstances"],
        path: "Instances",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterInstances"],
        path: "Instances.PrivateIpAddresses",
        max: Max::Fixed(MAX_PRIVATE_IPS),
        code: TOO_MANY,
    },
    Bound {
        actions: &["ReportInstanceStatus"],
        path: "Counters",
        max: Max::Fixed(20_000),
        code: TOO_MANY,
    },
    Bound {
        actions: &["ReportFlowRecords"],
        path: "FlowRecords",
        max: Max::Fixed(super::flows::MAX_REPORTED),
        code: TOO_MANY,
    },
    Bound {
        actions: &["ReportInstanceStatus"],
        path: "Failsafe",
        max: Max::Fixed(palisade_policy::failsafe::MAX_FAILSAFE),
        code: TOO_MANY,
    },
    Bound {
        actions: &["ReportInstanceStatus"],
        path: "Errors",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterCluster"],
        path: "Nodes",
        max: Max::Fixed(5_000),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterCluster"],
        path: "Masters",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterCluster"],
        path: "PeerClusters",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterCluster"],
        path: "SshSources",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["RegisterCluster"],
        path: "NodePortSources",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
    Bound {
        actions: &["DeregisterClusters", "DescribeClusters"],
        path: "ClusterIds",
        max: Max::Fixed(100),
        code: TOO_MANY,
    },
];

/// Most entries of one address or service template (`Addresses` and
/// `AddressesExtra` together; the same for services). Palisade's choice:
/// Tencent's console quota is lower, and a template is one nft interval set
/// on every node that uses it.
pub const MAX_TEMPLATE_ENTRIES: usize = 1_000;
/// Most templates in one template group.
pub const MAX_GROUP_MEMBERS: usize = 100;
/// Most private addresses one instance registers (a node with several
/// interfaces and secondary addresses stays far below it).
pub const MAX_PRIVATE_IPS: usize = 64;

/// Refuses the first list of `params` longer than its bound for `action`.
pub fn check(action: &str, params: &Map<String, Value>, limits: &Limits) -> Result<(), ApiError> {
    let mut path = String::new();
    for (key, value) in params {
        path.clear();
        path.push_str(key);
        walk(action, value, &mut path, limits)?;
    }
    Ok(())
}

/// The bound of the list at `path` of `action`: the table's, or
/// [`OTHER_LISTS`] with `InvalidParameterValue.LimitExceeded`.
pub fn bound_of(action: &str, path: &str, limits: &Limits) -> (usize, ErrorCode) {
    BOUNDS
        .iter()
        .find(|b| b.path == path && b.actions.contains(&action))
        .map_or((OTHER_LISTS, TOO_MANY), |b| (b.max.items(limits), b.code))
}

fn walk(action: &str, value: &Value, path: &mut String, limits: &Limits) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => {
            let (max, code) = bound_of(action, path, limits);
            if items.len() > max {
                return Err(ApiError::new(
                    code,
                    format!("{path}: {} items, at most {max}", items.len()),
                ));
            }
            for item in items {
                walk(action, item, path, limits)?;
            }
        }
        Value::Object(fields) => {
            let len = path.len();
            for (key, v) in fields {
                path.truncate(len);
                path.push('.');
                path.push_str(key);
                walk(action, v, path, limits)?;
            }
            path.truncate(len);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(action: &str, params: Value) -> Option<ErrorCode> {
        let Value::Object(map) = params else {
            panic!("an object")
        };
        check(action, &map, &Limits::default())
            .err()
            .map(|e| e.code)
    }

    fn list(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(format!("x{i}"))).collect()
    }

    #[test]
    fn each_bound_refuses_one_item_more() {
        let limits = Limits::default();
        for b in BOUNDS {
            let max = b.max.items(&limits);
            for action in b.actions {
                // The list at its path, inside one object per level.
                let build = |n: usize| {
                    let mut v = Value::Array(list(n));
                    for key in b.path.rsplit('.') {
                        v = json!({ key: v });
                    }
                    v
                };
                assert_eq!(code(action, build(max)), None, "{action} {}", b.path);
                assert_eq!(
                    code(action, build(max + 1)),
                    Some(b.code),
                    "{action} {}",
                    b.path
                );
            }
        }
    }

    #[test]
    fn nested_lists_are_bounded_inside_each_item() {
        let filters = |values: usize| json!({"Filters": [{"Name": "a", "Values": list(1)}, {"Name": "b", "Values": list(values)}]});
        assert_eq!(code("DescribeSecurityGroups", filters(5)), None);
        assert_eq!(code("DescribeSecurityGroups", filters(6)), Some(TOO_MANY));
        let ips = |n: usize| json!({"Instances": [{"InstanceId": "ins-1", "PrivateIpAddresses": list(n)}]});
        assert_eq!(code("RegisterInstances", ips(64)), None);
        assert_eq!(code("RegisterInstances", ips(65)), Some(TOO_MANY));
    }

    #[test]
    fn a_list_the_table_does_not_name_has_the_default_bound() {
        let p = |n: usize| json!({"Unexpected": {"Deep": [list(n)]}});
        assert_eq!(code("CreateSecurityGroup", p(OTHER_LISTS)), None);
        assert_eq!(
            code("CreateSecurityGroup", p(OTHER_LISTS + 1)),
            Some(TOO_MANY)
        );
        // A bound of one action does not leak to another.
        let tags = json!({"Tags": list(OTHER_LISTS + 1)});
        assert_eq!(code("DeleteSecurityGroup", tags), Some(TOO_MANY));
    }

    #[test]
    fn the_rule_lists_follow_the_configured_limit() {
        let limits = Limits {
            rules_per_direction: 3,
            ..Limits::default()
        };
        let Value::Object(map) = json!({"SecurityGroupPolicySet": {"Ingress": list(4)}}) else {
            unreachable!()
        };
        let err = check("CreateSecurityGroupPolicies", &map, &limits).expect_err("4 > 3");
        assert_eq!(err.code, "LimitExceeded.SecurityGroupPolicySet");
    }

    /// docs/api.md lists every bound of the table with its code, so the
    /// documentation cannot drift from the code.
    #[test]
    fn the_api_document_lists_every_bound() {
        let doc = include_str!("../../../../docs/api.md");
        let limits = Limits::default();
        for b in BOUNDS {
            let bound = match b.max {
                Max::Fixed(n) => group_digits(n),
                Max::RulesPerDirection => {
                    format!("rules per direction ({})", limits.rules_per_direction)
                }
                Max::GroupsPerInstance => {
                    format!("groups per instance ({})", limits.groups_per_instance)
                }
            };
            let row = format!("| `{}` | {bound} | `{}` |", b.path, b.code);
            let line = doc
                .lines()
                .find(|l| l.ends_with(&row))
                .unwrap_or_else(|| panic!("docs/api.md has no row ending {row:?}"));
            let listed: Vec<&str> = line
                .trim_start_matches("| ")
                .split(" | ")
                .next()
                .unwrap_or_default()
                .split(", ")
                .collect();
            assert_eq!(listed, b.actions, "docs/api.md, the actions of {row}");
        }
        let other = format!("any other list | {} |", group_digits(OTHER_LISTS));
        assert!(doc.contains(&other), "docs/api.md: {other:?}");
    }

    fn group_digits(n: usize) -> String {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
}
