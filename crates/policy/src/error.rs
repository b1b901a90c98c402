//! The one error type of the crate: what can go wrong resolving a group
//! list against a catalog (a reference to something that does not exist)
//! and parsing the packet descriptions the CLI passes in. Every message
//! names the thing and the bad value.

use crate::resolve::RuleOrigin;

/// Everything the `policy` crate can fail with.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// An instance lists a group the catalog does not hold.
    #[error("ResourceNotFound: security group {id:?} is bound but does not exist")]
    UnknownBoundGroup {
        /// The missing group.
        id: String,
    },
    /// A rule's `SecurityGroupId` peer names a group the catalog does not hold.
    #[error("ResourceNotFound: {origin}: SecurityGroupId {id:?} does not exist")]
    UnknownReferencedGroup {
        /// The rule with the reference.
        origin: RuleOrigin,
        /// The missing group.
        id: String,
    },
    /// A rule (or an address template group) names an address template that does not exist.
    #[error("ResourceNotFound: {origin}: address template {id:?} does not exist")]
    UnknownAddressTemplate {
        /// The rule with the reference.
        origin: RuleOrigin,
        /// The missing template.
        id: String,
    },
    /// A rule names an address template group that does not exist.
    #[error("ResourceNotFound: {origin}: address template group {id:?} does not exist")]
    UnknownAddressTemplateGroup {
        /// The rule with the reference.
        origin: RuleOrigin,
        /// The missing template group.
        id: String,
    },
    /// A rule (or a service template group) names a service template that does not exist.
    #[error("ResourceNotFound: {origin}: service template {id:?} does not exist")]
    UnknownServiceTemplate {
        /// The rule with the reference.
        origin: RuleOrigin,
        /// The missing template.
        id: String,
    },
    /// A rule names a service template group that does not exist.
    #[error("ResourceNotFound: {origin}: service template group {id:?} does not exist")]
    UnknownServiceTemplateGroup {
        /// The rule with the reference.
        origin: RuleOrigin,
        /// The missing template group.
        id: String,
    },
    /// The fleet holds no instance with this id.
    #[error("ResourceNotFound: instance {id:?} does not exist")]
    UnknownInstance {
        /// The missing instance.
        id: String,
    },
    /// A value given for a packet or a set does not parse.
    #[error("InvalidParameterValue.Malformed: {field} {value:?}: {why}")]
    Malformed {
        /// The field or option, e.g. `--protocol`.
        field: String,
        /// The value as given.
        value: String,
        /// What was expected.
        why: String,
    },
}

impl PolicyError {
    /// A `Malformed` error about `field` holding `value`.
    pub fn malformed(field: &str, value: &str, why: impl Into<String>) -> Self {
        PolicyError::Malformed {
            field: field.to_string(),
            value: value.to_string(),
            why: why.into(),
        }
    }
}

/// The errors of [`crate::resolve::resolve`]: the crate's one error type.
pub type ResolveError = PolicyError;
