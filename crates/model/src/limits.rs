//! Tencent's default quotas (DESIGN.md section 2), configurable per fleet
//! file or server.

use serde::{Deserialize, Serialize};

/// The limits that validation enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Rules per direction per group.
    pub rules_per_direction: usize,
    /// Groups bound to one instance.
    pub groups_per_instance: usize,
    /// Instances bound to one group.
    pub instances_per_group: usize,
    /// Rules whose peer is a security group, per group.
    pub references_per_group: usize,
    /// Groups per project (account).
    pub groups_per_project: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rules_per_direction: 100,
            groups_per_instance: 5,
            instances_per_group: 2000,
            references_per_group: 10,
            groups_per_project: 50,
        }
    }
}
