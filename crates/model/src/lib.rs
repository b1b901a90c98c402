//! The Palisade model: security groups and their rules as Tencent defines
//! them (DESIGN.md sections 1, 2 and 6). Two layers: `wire` holds the JSON
//! exactly as tccli prints it; the validated types (`Policy`, `PolicySet`,
//! templates, `Fleet`) can only be made by conversion, which checks every
//! rule of DESIGN.md section 2 and answers with the Tencent error code and a
//! message naming the field and the bad value. No I/O happens here.

pub mod addr;
pub mod error;
pub mod fleet;
pub mod flow;
pub mod ids;
pub mod limits;
pub mod locate;
pub mod policy;
pub mod proto;
pub mod resources;
pub mod template;
pub mod wire;
pub mod yaml;

pub use addr::{AddrRange, AddressEntry, Cidr, Family};
pub use error::{ErrorCode, ModelError};
pub use fleet::{check_policy_set, Fleet, FleetFile, Problem};
pub use ids::{
    AddressTemplateGroupId, AddressTemplateId, ClusterId, InstanceId, SecurityGroupId,
    ServiceTemplateGroupId, ServiceTemplateId,
};
pub use limits::Limits;
pub use policy::{Action, Direction, Peer, Policy, PolicySet, Service};
pub use proto::{PortRange, Ports, Protocol};
pub use resources::{Cluster, Instance, SecurityGroup};
pub use template::{
    AddressTemplate, AddressTemplateGroup, ServiceEntry, ServiceTemplate, ServiceTemplateGroup,
};
pub use yaml::YamlError;
