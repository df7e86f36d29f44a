//! `ctflow models serve`: MLflow's scoring protocol (`POST /invocations`, `GET /ping`,
//! `/health`, `/version`) answered by a Rust front that parses and checks each request
//! against the model's signature (`ctflow_core::scoring`), and a pool of Python worker
//! processes, each holding the model loaded with `mlflow.pyfunc.load_model`, that predict.
#![forbid(unsafe_code)]

mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctflow_core::scoring::{self, ModelInfo, ScoringError};
use serde_json::{Value, json};

pub use pool::PythonPool;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the model at {path}: {message}")]
    Model { path: String, message: String },
    #[error("{0}")]
    Environment(String),
    #[error("the model workers did not start: {0}")]
    Workers(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads a downloaded model's `MLmodel` file; refuses models without a Python flavor.
pub fn load_model_info(dir: &Path) -> Result<ModelInfo> {
    let path = dir.join("MLmodel");
    let model_error = |message: String| Error::Model {
        path: dir.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| model_error(e.to_string()))?;
    let info = scoring::parse_mlmodel(&text).map_err(model_error)?;
    if !info.pyfunc {
        return Err(model_error(
            "the model has no python_function flavor, so it cannot be served".into(),
        ));
    }
    Ok(info)
}

/// The Python that runs the model: the one on PATH (`local`), or an environment built
/// from the model's `python_env.yaml` (`virtualenv`, `uv`) in `cache`.
pub fn model_python(dir: &Path, env_manager: &str, cache: &Path) -> Result<PathBuf> {
    match env_manager {
        "local" => Ok(PathBuf::from("python3")),
        "virtualenv" | "uv" => {
            let spec = ctflow_project::PythonEnvSpec::load(&dir.join("python_env.yaml"))
                .map_err(|e| Error::Environment(e.to_string()))?;
            let prepared = ctflow_project::prepare_virtualenv(&spec, cache, true)
                .map_err(|e| Error::Environment(e.to_string()))?;
            Ok(prepared.bin.join("python"))
        }
        other => Err(Error::Environment(format!(
            "unknown env manager '{other}': use local, virtualenv or uv"
        ))),
    }
}

/// A model being served.
pub struct ServedModel {
    pub info: ModelInfo,
    pub pool: PythonPool,
}

pub fn router(model: Arc<ServedModel>) -> Router {
    Router::new()
        .route("/ping", get(alive))
        .route("/health", get(alive))
        .route("/version", get(version))
        .route("/invocations", post(invocations))
        .with_state(model)
}

async fn alive() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "\n").into_response()
}

async fn version(State(model): State<Arc<ServedModel>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        model.pool.mlflow_version().to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

fn refused(e: ScoringError) -> Response {
    error(StatusCode::BAD_REQUEST, e.code, &e.message)
}

async fn invocations(
    State(model): State<Arc<ServedModel>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let parsed = match mime.as_str() {
        "application/json" => scoring::parse_json(&body),
        "text/csv" => scoring::parse_csv(&body),
        _ => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "This predictor only supports the following content types: Types: ['text/csv', 'application/json']. Got '{content_type}'."
                ),
            )
                .into_response();
        }
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => return refused(e),
    };
    let payload = match scoring::enforce(request.data, &model.info.signature) {
        Ok(payload) => payload,
        Err(e) => return refused(e),
    };
    match model
        .pool
        .predict(payload.to_json(request.params.as_ref()))
        .await
    {
        Ok(Prediction::Predictions(predictions)) => {
            axum::Json(json!({ "predictions": predictions })).into_response()
        }
        Ok(Prediction::Failed(message)) => error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("Encountered an unexpected error while evaluating the model: {message}"),
        ),
        Err(message) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            &message,
        ),
    }
}

/// A worker's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Predictions(Value),
    /// The model raised; the message names the exception.
    Failed(String),
}
