//! MLflow's error vocabulary: the `error_code` strings the client branches on and the HTTP
//! status each one maps to.

use std::fmt;

/// The `error_code` values ctflow emits, spelled exactly as MLflow's protobuf enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A value the request gave is not allowed (400).
    InvalidParameterValue,
    /// The request cannot be read at all (400).
    BadRequest,
    /// A name is taken (400, as MLflow answers it).
    ResourceAlreadyExists,
    /// What the request names does not exist (404).
    ResourceDoesNotExist,
    /// No such endpoint (404).
    EndpointNotFound,
    /// Signed in, but not allowed to (403).
    PermissionDenied,
    /// Not signed in, or with wrong credentials (401).
    Unauthenticated,
    /// ctflow's fault (500).
    InternalError,
    /// An MLflow endpoint ctflow does not serve (501).
    NotImplemented,
    /// Try again later: the database is unreachable or full, or a queue is (503).
    TemporarilyUnavailable,
    /// Too many attempts; try again after `Retry-After` (429).
    RequestLimitExceeded,
}

impl ErrorCode {
    /// The code as MLflow's JSON spells it (`RESOURCE_DOES_NOT_EXIST`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ErrorCode::ResourceDoesNotExist => "RESOURCE_DOES_NOT_EXIST",
            ErrorCode::EndpointNotFound => "ENDPOINT_NOT_FOUND",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
            ErrorCode::RequestLimitExceeded => "REQUEST_LIMIT_EXCEEDED",
        }
    }

    /// The HTTP status MLflow's server uses for this code. NB: RESOURCE_ALREADY_EXISTS is
    /// 400, not 409, and the client relies on it.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidParameterValue
            | ErrorCode::BadRequest
            | ErrorCode::ResourceAlreadyExists => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::ResourceDoesNotExist | ErrorCode::EndpointNotFound => 404,
            ErrorCode::InternalError => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::TemporarilyUnavailable => 503,
            ErrorCode::RequestLimitExceeded => 429,
        }
    }

    /// MLflow 3's coarse `error_class` extra.
    pub fn error_class(self) -> &'static str {
        match self {
            ErrorCode::ResourceDoesNotExist | ErrorCode::EndpointNotFound => "RESOURCE_NOT_FOUND",
            ErrorCode::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ErrorCode::InvalidParameterValue | ErrorCode::BadRequest => "INVALID_PARAMETER_VALUE",
            ErrorCode::PermissionDenied | ErrorCode::Unauthenticated => "PERMISSION_DENIED",
            _ => "INTERNAL_ERROR",
        }
    }
}

/// A user-facing error with MLflow's code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowError {
    /// What kind of error: decides the HTTP status.
    pub code: ErrorCode,
    /// What went wrong, for the person who sent the request.
    pub message: String,
}

impl MlflowError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        MlflowError {
            code,
            message: message.into(),
        }
    }
    /// `INVALID_PARAMETER_VALUE`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }
    /// `RESOURCE_DOES_NOT_EXIST`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceDoesNotExist, message)
    }
    /// `RESOURCE_ALREADY_EXISTS`.
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceAlreadyExists, message)
    }
    /// MLflow's message for a required parameter that is missing.
    pub fn missing_param(name: &str) -> Self {
        Self::invalid(format!(
            "Missing value for required parameter '{name}'. See the API docs for more information about request parameters."
        ))
    }
}

impl fmt::Display for MlflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for MlflowError {}

/// A result whose error is MLflow's.
pub type Result<T, E = MlflowError> = std::result::Result<T, E>;
