//! Errors of the model: every validation failure carries the Tencent error
//! code the API answers with (DESIGN.md section 6) and a message naming the
//! field and the bad value.

use std::fmt;

/// Every Tencent error code Palisade answers with: validation's, and the
/// API server's (which cannot emit a code that is not here).
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
    /// A filter name the action does not know.
    InvalidParameterFilterInvalidKey,
    /// A list holds more values than its bound.
    InvalidParameterValueLimitExceeded,
    /// A parameter the action does not take.
    UnknownParameter,
    /// A group would be bound to more instances than allowed.
    LimitExceededSingleUsgQuota,
    /// The operation is not possible on this resource.
    UnsupportedOperation,
    /// The action does not exist in the service.
    InvalidAction,
    /// The API version is not the service's.
    NoSuchVersion,
    /// A method or path other than `POST /`.
    UnsupportedProtocol,
    /// The request could not be read (its body arrived too slowly).
    InvalidRequest,
    /// The server is at a limit of requests in flight; retry.
    RequestLimitExceeded,
    /// The request body is larger than allowed.
    RequestSizeLimitExceeded,
    /// An instance id names no instance (CVM spelling).
    InvalidInstanceIdNotFound,
    /// An instance id is not well-formed (CVM spelling).
    InvalidInstanceIdMalformed,
    /// A security group id is not well-formed (CVM spelling).
    InvalidSgIdMalformed,
    /// A security group id names no group (CVM spelling).
    InvalidSecurityGroupIdNotFound,
    /// The credential may not do this (an agent key outside its instance).
    AuthFailureUnauthorizedOperation,
    /// The `Authorization` header cannot be parsed or lacks a required part.
    AuthFailureInvalidAuthorization,
    /// The signature does not match (or, in strict mode, was already used).
    AuthFailureSignatureFailure,
    /// `X-TC-Timestamp` is more than 300 s from the server's clock.
    AuthFailureSignatureExpire,
    /// The `SecretId` is not known.
    AuthFailureSecretIdNotFound,
    /// The server failed; the detail is in its log.
    InternalError,
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
            Self::InvalidParameterFilterInvalidKey => "InvalidParameter.FilterInvalidKey",
            Self::InvalidParameterValueLimitExceeded => "InvalidParameterValue.LimitExceeded",
            Self::UnknownParameter => "UnknownParameter",
            Self::LimitExceededSingleUsgQuota => "LimitExceeded.SingleUSGQuota",
            Self::UnsupportedOperation => "UnsupportedOperation",
            Self::InvalidAction => "InvalidAction",
            Self::NoSuchVersion => "NoSuchVersion",
            Self::UnsupportedProtocol => "UnsupportedProtocol",
            Self::InvalidRequest => "InvalidRequest",
            Self::RequestLimitExceeded => "RequestLimitExceeded",
            Self::RequestSizeLimitExceeded => "RequestSizeLimitExceeded",
            Self::InvalidInstanceIdNotFound => "InvalidInstanceId.NotFound",
            Self::InvalidInstanceIdMalformed => "InvalidInstanceId.Malformed",
            Self::InvalidSgIdMalformed => "InvalidSgId.Malformed",
            Self::InvalidSecurityGroupIdNotFound => "InvalidSecurityGroupId.NotFound",
            Self::AuthFailureUnauthorizedOperation => "AuthFailure.UnauthorizedOperation",
            Self::AuthFailureInvalidAuthorization => "AuthFailure.InvalidAuthorization",
            Self::AuthFailureSignatureFailure => "AuthFailure.SignatureFailure",
            Self::AuthFailureSignatureExpire => "AuthFailure.SignatureExpire",
            Self::AuthFailureSecretIdNotFound => "AuthFailure.SecretIdNotFound",
            Self::InternalError => "InternalError",
        }
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
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

impl ModelError {
    /// The same error with its field named below `parent` in Tencent's
    /// dotted style: `Port "x": ...` within `SecurityGroupPolicySet.Ingress.2`
    /// reads `SecurityGroupPolicySet.Ingress.2.Port "x": ...`. For messages
    /// that start with the field's name, as [`Policy::from_wire`]'s do.
    ///
    /// [`Policy::from_wire`]: crate::policy::Policy::from_wire
    pub fn within(self, parent: impl fmt::Display) -> Self {
        Self {
            code: self.code,
            message: format!("{parent}.{}", self.message),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ModelError {}
