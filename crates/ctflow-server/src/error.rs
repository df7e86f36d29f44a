//! The HTTP face of errors: MLflow's error JSON with the status its code maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ctflow_core::{ErrorCode, MlflowError};

#[derive(Debug)]
pub struct ApiError(pub MlflowError);

impl From<MlflowError> for ApiError {
    fn from(e: MlflowError) -> Self {
        ApiError(e)
    }
}

impl From<ctflow_store::Error> for ApiError {
    fn from(e: ctflow_store::Error) -> Self {
        match e {
            ctflow_store::Error::Mlflow(e) => ApiError(e),
            other => {
                tracing::error!(error = %other, kind = other.kind(), "store failure");
                ApiError(MlflowError::new(
                    ErrorCode::InternalError,
                    other.to_string(),
                ))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error_code": self.0.code.as_str(),
            "message": self.0.message,
            "error_class": self.0.code.error_class(),
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
