//! `ctflow models serve`: MLflow's scoring protocol (`POST /invocations`, `GET /ping`,
//! `/health`, `/version`) answered by a Rust front that parses and checks each request
//! against the model's signature (`ctflow_core::scoring`), and a pool of Python worker
//! processes, each holding the model loaded with `mlflow.pyfunc.load_model`, that predict.
#![forbid(unsafe_code)]

pub mod metrics;
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

pub use metrics::ServingMetrics;
pub use pool::{Batching, PythonPool};

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

/// One loaded version of the model: its signature and its workers. A request holds the
/// generation it started on until it ends, so a swap never cuts one off.
pub struct Generation {
    pub info: ModelInfo,
    pub pool: PythonPool,
    /// The registered model version, when served through `models:/`.
    pub version: Option<String>,
    /// Removed with the generation (the downloaded model).
    pub scratch: Option<Scratch>,
}

/// A folder removed when dropped.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The model being served: the current generation, swapped when the alias moves.
pub struct ServedModel {
    current: std::sync::RwLock<Arc<Generation>>,
    pub metrics: Arc<ServingMetrics>,
}

impl ServedModel {
    pub fn new(generation: Generation, metrics: Arc<ServingMetrics>) -> ServedModel {
        metrics.set_version(generation.version.as_deref());
        ServedModel {
            current: std::sync::RwLock::new(Arc::new(generation)),
            metrics,
        }
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Moves new requests to `generation`; requests in flight finish on the old one, whose
    /// workers stop when the last of them is done.
    pub fn swap(&self, generation: Generation) {
        self.metrics.set_version(generation.version.as_deref());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(generation);
    }
}

/// Checks a freshly loaded generation with one prediction before it takes traffic: the
/// model's `serving_input_example.json` when it has one, else a row of zeros (empty
/// strings, false) shaped by the signature. Without either, loading is the check.
pub async fn warm_up(generation: &Generation, dir: &Path) -> std::result::Result<(), String> {
    let example = std::fs::read(dir.join("serving_input_example.json")).ok();
    let data = match example {
        Some(body) => scoring::parse_json(&body).map_err(|e| e.message)?.data,
        None => match scoring::example_data(&generation.info.signature) {
            Some(data) => data,
            None => return Ok(()),
        },
    };
    let payload = scoring::enforce(data, &generation.info.signature).map_err(|e| e.message)?;
    match generation.pool.predict(payload.to_json(None), None).await? {
        Prediction::Predictions(_) => Ok(()),
        Prediction::Failed(message) => Err(message),
    }
}

pub fn router(model: Arc<ServedModel>) -> Router {
    Router::new()
        .route("/ping", get(alive))
        .route("/health", get(alive))
        .route("/version", get(version))
        .route("/metrics", get(metrics_text))
        .route("/invocations", post(invocations))
        .with_state(model)
}

async fn alive() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "\n").into_response()
}

async fn version(State(model): State<Arc<ServedModel>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        model.current().pool.mlflow_version().to_string(),
    )
        .into_response()
}

async fn metrics_text(State(model): State<Arc<ServedModel>>) -> Response {
    match model.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", &e),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

/// The header naming the registered model version that answered.
pub const VERSION_HEADER: &str = "ctflow-model-version";

async fn invocations(
    State(model): State<Arc<ServedModel>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let generation = model.current();
    let (outcome, mut response) = answer(&generation, &headers, &body).await;
    model.metrics.observe(outcome, started.elapsed());
    if let Some(version) = &generation.version
        && let Ok(value) = header::HeaderValue::from_str(version)
    {
        response.headers_mut().insert(VERSION_HEADER, value);
    }
    response
}

async fn answer(
    generation: &Generation,
    headers: &HeaderMap,
    body: &Bytes,
) -> (metrics::Outcome, Response) {
    use metrics::Outcome;
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
        "application/json" => scoring::parse_json(body),
        "text/csv" => scoring::parse_csv(body),
        _ => {
            return (
                Outcome::Refused,
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "This predictor only supports the following content types: Types: ['text/csv', 'application/json']. Got '{content_type}'."
                    ),
                )
                    .into_response(),
            );
        }
    };
    let refused = |e: ScoringError| {
        (
            Outcome::Refused,
            error(StatusCode::BAD_REQUEST, e.code, &e.message),
        )
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => return refused(e),
    };
    let payload = match scoring::enforce(request.data, &generation.info.signature) {
        Ok(payload) => payload,
        Err(e) => return refused(e),
    };
    // NB: requests with params are never batched: params apply to a whole model call.
    let key = request.params.is_none().then(|| payload.batch_key());
    match generation
        .pool
        .predict(payload.to_json(request.params.as_ref()), key)
        .await
    {
        Ok(Prediction::Predictions(predictions)) => (
            Outcome::Ok,
            axum::Json(json!({ "predictions": predictions })).into_response(),
        ),
        Ok(Prediction::Failed(message)) => (
            Outcome::Failed,
            error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("Encountered an unexpected error while evaluating the model: {message}"),
            ),
        ),
        Err(message) => (
            Outcome::Unavailable,
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                &message,
            ),
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
