//! The API's error type: a Tencent error code and a message, answered as
//! `{"Response":{"Error":{"Code","Message"},"RequestId"}}` with HTTP 200
//! (DESIGN.md section 6). Every failure of a request ends up here.

use palisade_model::error::ModelError;
use palisade_model::ErrorCode;
use palisade_store::StoreError;

/// A Tencent-style API error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The code (one of [`ErrorCode`]: the server cannot answer with a code
    /// that is not there); on the wire as Tencent spells it.
    pub code: ErrorCode,
    /// A message naming the field and the bad value.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `MissingParameter` for `field`.
    pub fn missing(field: &str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("the request is missing required parameter `{field}`"),
        )
    }

    /// `InvalidParameterValue.Malformed` for `field` holding `value`.
    pub fn malformed(field: &str, value: &str, why: &str) -> Self {
        Self::new(
            ErrorCode::InvalidParameterValueMalformed,
            format!("{field} {value:?}: {why}"),
        )
    }

    /// `ResourceNotFound` for an id (also used for other accounts' resources).
    pub fn not_found(field: &str, id: &str) -> Self {
        Self::new(
            ErrorCode::ResourceNotFound,
            format!("{field} {id:?}: no such resource"),
        )
    }

    /// `InternalError`; the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "an internal error occurred; see the server log",
        )
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        Self::new(e.code(), e.message().to_string())
    }
}

impl From<StoreError> for ApiError {
    /// A store failure is `InternalError`; when the database is unreachable
    /// the message says so (the client may retry) and the log line is a
    /// warning naming the cause.
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "store unavailable");
            return Self::new(
                ErrorCode::InternalError,
                "the database is unavailable; retry shortly",
            );
        }
        Self::internal(e)
    }
}
