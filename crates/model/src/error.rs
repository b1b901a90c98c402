//! Errors of the model: every validation failure carries the Tencent error
//! code the API answers with (DESIGN.md section 6) and a message naming the
//! field and the bad value.

use std::fmt;

/// The Tencent error codes that validation can produce.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A parameter is wrong in a way no more specific code covers.
    InvalidParameter,
    /// Two parameters that exclude each other were both given.
    InvalidParameterCoexist,
    /// A value is not acceptable.
    InvalidParameterValue,
    /// A list holds the same value twice.
    InvalidParameterValueDuplicate,
    /// A value that must not be empty is empty.
    InvalidParameterValueEmpty,
    /// A value does not follow its grammar.
    InvalidParameterValueMalformed,
    /// A number is out of its range.
    InvalidParameterValueRange,
    /// A string is longer than allowed.
    InvalidParameterValueTooLong,
    /// A required parameter is missing.
    MissingParameter,
    /// A limit is exceeded.
    LimitExceeded,
    /// The rules per direction of a group exceed their limit.
    LimitExceededSecurityGroupPolicySet,
    /// An instance would be bound to more groups than allowed.
    LimitExceededAssociateUsgLimitExceeded,
    /// A referenced resource does not exist.
    ResourceNotFound,
    /// A resource is still in use by another.
    ResourceInUse,
    /// The same rule is already present.
    UnsupportedOperationDuplicatePolicy,
    /// The policy set `Version` given is not the current one.
    UnsupportedOperationVersionMismatch,
}

impl ErrorCode {
    /// The code exactly as Tencent spells it on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidParameter => "InvalidParameter",
            Self::InvalidParameterCoexist => "InvalidParameter.Coexist",
            Self::InvalidParameterValue => "InvalidParameterValue",
            Self::InvalidParameterValueDuplicate => "InvalidParameterValue.Duplicate",
            Self::InvalidParameterValueEmpty => "InvalidParameterValue.Empty",
            Self::InvalidParameterValueMalformed => "InvalidParameterValue.Malformed",
            Self::InvalidParameterValueRange => "InvalidParameterValue.Range",
            Self::InvalidParameterValueTooLong => "InvalidParameterValue.TooLong",
            Self::MissingParameter => "MissingParameter",
            Self::LimitExceeded => "LimitExceeded",
            Self::LimitExceededSecurityGroupPolicySet => "LimitExceeded.SecurityGroupPolicySet",
            Self::LimitExceededAssociateUsgLimitExceeded => {
                "LimitExceeded.AssociateUSGLimitExceeded"
            }
            Self::ResourceNotFound => "ResourceNotFound",
            Self::ResourceInUse => "ResourceInUse",
            Self::UnsupportedOperationDuplicatePolicy => "UnsupportedOperation.DuplicatePolicy",
            Self::UnsupportedOperationVersionMismatch => "UnsupportedOperation.VersionMismatch",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validation failure: a Tencent code and a message that names the field
/// and the bad value, e.g. `Port "80-20": range start is above its end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    code: ErrorCode,
    message: String,
}

impl ModelError {
    /// A new error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A `InvalidParameterValue.Malformed` error about `field` holding `value`.
    pub fn malformed(field: &str, value: &str, why: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::InvalidParameterValueMalformed,
            format!("{field} {value:?}: {why}"),
        )
    }

    /// A `MissingParameter` error about `field`.
    pub fn missing(field: &str, why: impl fmt::Display) -> Self {
        Self::new(ErrorCode::MissingParameter, format!("{field}: {why}"))
    }

    /// The Tencent code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message without the code.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `prefix` (a location such as
    /// `SecurityGroupPolicySet.Ingress[2]`) put before the message.
    pub fn at(self, prefix: impl fmt::Display) -> Self {
        Self {
            code: self.code,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ModelError {}
