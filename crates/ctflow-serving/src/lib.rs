//! `ctflow models serve`: MLflow's scoring protocol (`POST /invocations`, `GET /ping`,
//! `/health`, `/version`) answered by a Rust front that parses and checks each request
//! against the model's signature (`ctflow_core::scoring`), and a pool of Python worker
//! processes, each holding the model loaded with `mlflow.pyfunc.load_model`, that predict.
//! Served by alias, a new version is loaded beside the serving one and swapped in; and
//! [`supervise`] keeps one scoring server per pipeline that names a serving target (the
//! CD hand-off of `ctflow up`).
#![forbid(unsafe_code)]

pub mod inference_log;
mod log_upload;
pub mod metrics;
mod pool;
mod shadow;
mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctflow_core::inference::{REQUEST_ID_HEADER, ScoredRequest, valid_request_id};
use ctflow_core::scoring::{self, ModelInfo, Payload, ScoringError};
use serde_json::{Value, json};

pub use inference_log::{InferenceLog, LogError, LogOptions};
pub use log_upload::spool_for;
pub use metrics::ServingMetrics;
pub use pool::{Batching, Priority, PythonPool};
pub use supervisor::{ServeError, ServeOptions, serve, supervise};

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
                .map_err(environment_error)?;
            let prepared = ctflow_project::prepare_virtualenv(&spec, cache, true)
                .map_err(environment_error)?;
            Ok(prepared.bin.join("python"))
        }
        other => Err(Error::Environment(format!(
            "unknown env manager '{other}': use local, virtualenv or uv"
        ))),
    }
}

/// The builder's message without its project wording: here the model is built for.
fn environment_error(error: ctflow_project::Error) -> Error {
    let message = match error {
        ctflow_project::Error::Io(message) | ctflow_project::Error::Spec(message) => message,
        other => other.to_string(),
    };
    Error::Environment(format!("cannot build the model's environment: {message}"))
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

/// The model being served: the current generation, swapped when the alias moves. It is
/// empty while the alias it follows points nowhere yet (`--wait`): every endpoint but
/// `/metrics` then answers 503, so a readiness probe holds traffic back.
pub struct ServedModel {
    current: std::sync::RwLock<Option<Arc<Generation>>>,
    /// What an empty server tells its callers it waits for.
    waiting_for: String,
    pub metrics: Arc<ServingMetrics>,
    /// Where scored rows are logged, with the model name they are logged under.
    log: Option<(Arc<InferenceLog>, String)>,
    /// The challenger a copy of each answered request goes to, while one shadows.
    shadow: std::sync::RwLock<Option<Arc<shadow::Shadow>>>,
}

impl ServedModel {
    pub fn new(generation: Generation, metrics: Arc<ServingMetrics>) -> ServedModel {
        metrics.set_version(generation.version.as_deref());
        ServedModel {
            current: std::sync::RwLock::new(Some(Arc::new(generation))),
            waiting_for: String::new(),
            metrics,
            log: None,
            shadow: std::sync::RwLock::new(None),
        }
    }

    /// Logs every scored row to `log` under the model name `model`.
    pub fn with_log(mut self, log: Arc<InferenceLog>, model: String) -> ServedModel {
        self.log = Some((log, model));
        self
    }

    /// A server with nothing loaded yet; `waiting_for` says what it waits for.
    pub fn waiting(waiting_for: String, metrics: Arc<ServingMetrics>) -> ServedModel {
        ServedModel {
            current: std::sync::RwLock::new(None),
            waiting_for,
            metrics,
            log: None,
            shadow: std::sync::RwLock::new(None),
        }
    }

    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The registered version answering now, when served from the registry.
    pub fn serving_version(&self) -> Option<String> {
        self.current().and_then(|g| g.version.clone())
    }

    fn shadow(&self) -> Option<Arc<shadow::Shadow>> {
        self.shadow
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts mirroring to a challenger, or stops (`None`; its workers stop when the last
    /// copy in flight is answered).
    fn set_shadow(&self, shadow: Option<Arc<shadow::Shadow>>) {
        *self.shadow.write().unwrap_or_else(|e| e.into_inner()) = shadow;
    }

    /// Moves new requests to `generation`; requests in flight finish on the old one, whose
    /// workers stop when the last of them is done.
    pub fn swap(&self, generation: Generation) {
        self.metrics.set_version(generation.version.as_deref());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(generation));
    }

    fn not_loaded(&self) -> Response {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            &format!("no model is loaded yet: {}", self.waiting_for),
        )
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

async fn alive(State(model): State<Arc<ServedModel>>) -> Response {
    if model.current().is_none() {
        return model.not_loaded();
    }
    ([(header::CONTENT_TYPE, "application/json")], "\n").into_response()
}

async fn version(State(model): State<Arc<ServedModel>>) -> Response {
    let Some(generation) = model.current() else {
        return model.not_loaded();
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        generation.pool.mlflow_version().to_string(),
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

/// The client's request id when it sent a usable one, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| valid_request_id(id))
        .map_or_else(ctflow_core::ids::new_run_id, str::to_string)
}

async fn invocations(
    State(model): State<Arc<ServedModel>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let arrived_ms = ctflow_core::now_ms();
    let request_id = request_id(&headers);
    let mut response = match model.current() {
        None => {
            model
                .metrics
                .observe(metrics::Outcome::Unavailable, started.elapsed());
            model.not_loaded()
        }
        Some(generation) => {
            let shadow = model.shadow();
            let keep = model.log.is_some() || shadow.is_some();
            let (outcome, mut response, scored) = answer(&generation, &headers, &body, keep).await;
            let took = started.elapsed();
            model.metrics.observe(outcome, took);
            if let (Some(shadow), Some((_, predictions))) = (&shadow, &scored) {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                shadow.offer(
                    &request_id,
                    body.clone(),
                    &mime_of(content_type),
                    predictions,
                    took,
                );
            }
            if let (Some((log, name)), Some((payload, predictions))) = (&model.log, scored) {
                log.record(ScoredRequest::new(
                    request_id.clone(),
                    arrived_ms,
                    name.clone(),
                    generation.version.clone(),
                    took.as_secs_f64() * 1000.0,
                    payload,
                    &predictions,
                ));
            }
            if let Some(version) = &generation.version
                && let Ok(value) = header::HeaderValue::from_str(version)
            {
                response.headers_mut().insert(VERSION_HEADER, value);
            }
            response
        }
    };
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A content type without its parameters, lower case.
fn mime_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// What a scored request leaves for the log: the model's input and its answer.
type Scored = Option<(Payload, Value)>;

async fn answer(
    generation: &Generation,
    headers: &HeaderMap,
    body: &Bytes,
    keep: bool,
) -> (metrics::Outcome, Response, Scored) {
    use metrics::Outcome;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = mime_of(content_type);
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
                None,
            );
        }
    };
    let refused = |e: ScoringError| {
        (
            Outcome::Refused,
            error(StatusCode::BAD_REQUEST, e.code, &e.message),
            None,
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
        Ok(Prediction::Predictions(predictions)) => {
            let kept = keep.then(|| predictions.clone());
            (
                Outcome::Ok,
                axum::Json(json!({ "predictions": predictions })).into_response(),
                kept.map(|predictions| (payload, predictions)),
            )
        }
        Ok(Prediction::Failed(message)) => (
            Outcome::Failed,
            error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("Encountered an unexpected error while evaluating the model: {message}"),
            ),
            None,
        ),
        Err(message) => (
            Outcome::Unavailable,
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                &message,
            ),
            None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call_raw(app: &Router, request: Request<Body>) -> (StatusCode, Bytes) {
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, body)
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let (status, body) = call_raw(app, request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_server_waiting_for_its_alias_answers_503_but_its_metrics() {
        let metrics = Arc::new(ServingMetrics::new());
        let served = Arc::new(ServedModel::waiting(
            "iris@champion has no version".into(),
            metrics,
        ));
        let app = router(served);
        for path in ["/ping", "/health", "/version"] {
            let request = Request::get(path).body(Body::empty()).expect("a request");
            let (status, body) = call(&app, request).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE", "{path}");
        }
        let request = Request::post("/invocations")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"inputs": [[1.0]]}"#))
            .expect("a request");
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["message"],
            "no model is loaded yet: iris@champion has no version"
        );
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("a request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let text = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains(r#"ctflow_serving_requests_total{outcome="unavailable"} 1"#),
            "{text}"
        );
    }
}
