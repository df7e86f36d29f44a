//! The HTTP face of errors: MLflow's error JSON with the status its code maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ctflow_core::{ErrorCode, MlflowError};

#[derive(Debug)]
pub struct ApiError {
    error: MlflowError,
    /// Where HTTP has a more exact status than MLflow's table gives the code (a body
    /// over the size limit is 413, a stalled one 408), that status.
    status: Option<StatusCode>,
}

impl ApiError {
    /// An error answered with `status` instead of the one its code maps to. NB: the
    /// client only reads `error_code` and `message`; the status decides whether it retries.
    pub fn with_status(status: StatusCode, error: MlflowError) -> ApiError {
        ApiError {
            error,
            status: Some(status),
        }
    }

    pub fn error(&self) -> &MlflowError {
        &self.error
    }
}

impl From<MlflowError> for ApiError {
    fn from(error: MlflowError) -> Self {
        ApiError {
            error,
            status: None,
        }
    }
}

impl From<ctflow_store::Error> for ApiError {
    fn from(e: ctflow_store::Error) -> Self {
        match e {
            ctflow_store::Error::Mlflow(e) => ApiError::from(e),
            // NB: 503 tells clients to retry later, and the data they sent is not lost
            // on the server's side: nothing of the failed write was committed.
            other if other.is_out_of_space() => {
                tracing::error!(error = %other, "the store is out of space");
                let what = match other {
                    ctflow_store::Error::Io(_) => "the artifact store",
                    _ => "the database",
                };
                ApiError::from(MlflowError::new(
                    ErrorCode::TemporarilyUnavailable,
                    format!("no space left for {what}; the write was not stored: {other}"),
                ))
            }
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the database cannot be reached");
                ApiError::from(MlflowError::new(
                    ErrorCode::TemporarilyUnavailable,
                    format!("the database cannot be reached; try again shortly: {other}"),
                ))
            }
            other => {
                tracing::error!(error = %other, kind = other.kind(), "store failure");
                ApiError::from(MlflowError::new(
                    ErrorCode::InternalError,
                    other.to_string(),
                ))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = serde_json::json!({
            "error_code": code.as_str(),
            "message": self.error.message,
            "error_class": code.error_class(),
        });
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A store lookup whose absence is not an error here (`None`); any other failure is.
pub(crate) fn found<T>(result: ctflow_store::Result<T>) -> ApiResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ctflow_store::Error::Mlflow(e)) if e.code == ErrorCode::ResourceDoesNotExist => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
