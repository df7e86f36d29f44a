//! ctflow's HTTP server: the MLflow tracking REST API (under `/api/` and `/ajax-api/`), the
//! `mlflow-artifacts` proxy, ctflow's own API (`/api/ctflow/v1/`: promotion ledger,
//! pipelines, triggers, pipeline runs, approvals, rollback), `/metrics` (Prometheus),
//! the web dashboard at `/`, `/health` and `/version`.
#![forbid(unsafe_code)]

mod api;
mod artifacts;
pub mod auth;
mod connections;
mod datasets;
pub mod error;
mod feedback;
pub mod gateway;
mod gateway_invoke;
mod graphql;
mod history_json;
mod issues;
pub mod limits;
pub mod online_scoring;
pub mod params;
mod pipelines;
mod promptlab;
mod registry;
mod scorers;
pub mod service;
mod traces;
mod ui;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use ctflow_core::pipeline_run::Phase;
use ctflow_core::validation::normpath;
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_metrics::{HttpLabels, Metrics, OperationLabels, RouteLabels, Snapshot};
use ctflow_store::artifacts::{ArtifactRepository, LocalArtifactStore};
use ctflow_store::object_artifacts::{ObjectStoreArtifacts, ObjectUrl};
use ctflow_store::{Store, StoreOptions};

pub use crate::connections::ClientAddress;
use crate::error::{ApiError, ApiResult};
pub use crate::limits::Limits;

/// Everything `ctflow server` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub backend_store_uri: String,
    /// Explicit root for new experiments' artifact locations; derived when absent.
    pub default_artifact_root: Option<String>,
    /// Where proxied artifacts are stored: a folder, or an object-storage URL
    /// (`s3://bucket/prefix`, `az://container/prefix`, `wasbs://...`).
    pub artifacts_destination: String,
    pub serve_artifacts: bool,
    pub max_connections: u32,
    /// When a committed SQLite write reaches the disk.
    pub durability: ctflow_store::Durability,
    /// `--auth`: users must sign in; what a user holds where no grant says otherwise.
    pub auth: Option<ctflow_core::auth::Permission>,
    /// What one client may ask of the server.
    pub limits: Limits,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub artifacts: Arc<dyn ArtifactRepository>,
    pub serve_artifacts: bool,
    /// Where the artifact repository lives: the canonical folder of a local one, or the
    /// URL of an object store.
    artifact_root: ArtifactRoot,
    /// The operator's `--default-artifact-root`, when it is a local folder outside the
    /// artifacts destination: runs created under it keep their files there (MLflow's
    /// layout without the proxy), and the UI's artifact routes read them from it.
    default_root: Option<(PathBuf, Arc<dyn ArtifactRepository>)>,
    /// Where recorded triggers and approvals wake the controller (absent when no
    /// controller shares this process; it then finds them on its next pass).
    pub bus: Option<Arc<dyn ctflow_bus::Bus>>,
    /// This process's metrics (shared with its workers and watcher under `ctflow up`).
    pub metrics: Arc<Metrics>,
    /// Access control, when the server runs with `--auth`.
    pub auth: Option<Arc<auth::Auth>>,
    pub limits: Arc<Limits>,
    /// The AI gateway's key for sealing secrets.
    pub secrets: Arc<gateway::SecretKeys>,
}

impl axum::extract::FromRef<AppState> for Arc<Limits> {
    fn from_ref(state: &AppState) -> Arc<Limits> {
        state.limits.clone()
    }
}

/// Opens the store with the latency of its operations recorded in `metrics`.
pub async fn open_store(
    options: StoreOptions,
    metrics: &Arc<Metrics>,
) -> Result<Store, ctflow_store::Error> {
    let observed = metrics.clone();
    Ok(Store::open(options)
        .await?
        .with_observer(Arc::new(move |operation, took| {
            observed
                .store_operations
                .get_or_create(&OperationLabels {
                    operation: operation.to_string(),
                })
                .observe(took.as_secs_f64());
        })))
}

#[derive(Clone, Debug)]
enum ArtifactRoot {
    Local(PathBuf),
    Object(String),
}

/// The absolute folder a local artifact URI (`/x`, `file:///x`) names; `None` for a
/// relative path or any other URI.
fn local_folder(uri: &str) -> Option<PathBuf> {
    let path = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("file:"))
        .unwrap_or(uri);
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    (path.starts_with('/') && !uri.contains('?') && !uri.contains('#'))
        .then(|| PathBuf::from(path.as_ref()))
}

/// Deletes, in the background, what uploads cut off by a crash left behind.
fn sweep_abandoned_uploads(local: LocalArtifactStore) {
    tokio::task::spawn_blocking(move || match local.remove_abandoned_uploads() {
        Ok(removed) => {
            for path in &removed {
                tracing::warn!(path = %path.display(), "removed the partial file of an upload cut off by a crash");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot look for partial uploads"),
    });
}

/// A mutex's guard. NB: a panic elsewhere while it was held leaves plain data behind
/// (counts, maps), still usable, so a poisoned lock is taken as it is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often the object store is swept for uploads cut off by a crash.
const OBJECT_UPLOAD_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Aborts, at start and then every hour, the multipart uploads whose writer died.
fn sweep_abandoned_object_uploads(repository: ObjectStoreArtifacts) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(OBJECT_UPLOAD_SWEEP_INTERVAL);
        loop {
            ticker.tick().await;
            let age = ctflow_store::object_artifacts::ABANDONED_UPLOAD_AGE;
            match repository.abort_abandoned_uploads(age).await {
                Ok(aborted) => {
                    for key in &aborted {
                        tracing::warn!(key, "aborted a multipart upload cut off by a crash");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot look for abandoned uploads"),
            }
        }
    });
}

impl AppState {
    pub async fn open(config: &ServerConfig) -> Result<AppState, ctflow_store::Error> {
        let (artifacts, artifact_root): (Arc<dyn ArtifactRepository>, ArtifactRoot) =
            if ObjectUrl::parse(&config.artifacts_destination).is_some() {
                let repository = ObjectStoreArtifacts::from_url(&config.artifacts_destination)?;
                let url = repository.url().to_string();
                sweep_abandoned_object_uploads(repository.clone());
                (Arc::new(repository), ArtifactRoot::Object(url))
            } else {
                let destination = &config.artifacts_destination;
                let folder = destination.strip_prefix("file://").unwrap_or(destination);
                if folder.contains("://") {
                    return Err(ctflow_store::Error::Config(format!(
                        "unsupported artifacts destination '{destination}': use a folder, \
                         s3://bucket/prefix, az://container/prefix or \
                         wasbs://container@account.blob.core.windows.net/prefix"
                    )));
                }
                let local = LocalArtifactStore::new(folder)?;
                let root = local.root().to_path_buf();
                sweep_abandoned_uploads(local.clone());
                (Arc::new(local), ArtifactRoot::Local(root))
            };
        let default_artifact_root = match (&config.default_artifact_root, &artifact_root) {
            (Some(root), _) => root.clone(),
            (None, _) if config.serve_artifacts => "mlflow-artifacts:/".to_string(),
            (None, ArtifactRoot::Local(root)) => root.display().to_string(),
            (None, ArtifactRoot::Object(url)) => url.clone(),
        };
        let default_root = match (&config.default_artifact_root, &artifact_root) {
            (Some(configured), ArtifactRoot::Local(destination)) => {
                local_folder(configured).filter(|folder| !folder.starts_with(destination))
            }
            (Some(configured), ArtifactRoot::Object(_)) => local_folder(configured),
            (None, _) => None,
        };
        let default_root = match default_root {
            Some(folder) => {
                let local = LocalArtifactStore::new(&folder)?;
                let root = local.root().to_path_buf();
                Some((root, Arc::new(local) as Arc<dyn ArtifactRepository>))
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let store = open_store(
            StoreOptions {
                backend_store_uri: config.backend_store_uri.clone(),
                default_artifact_root,
                max_connections: config.max_connections,
                durability: config.durability,
            },
            &metrics,
        )
        .await?;
        Ok(AppState {
            store,
            artifacts,
            serve_artifacts: config.serve_artifacts,
            artifact_root,
            default_root,
            bus: None,
            metrics,
            auth: config
                .auth
                .map(|default| Arc::new(auth::Auth::new(default))),
            limits: Arc::new(config.limits.clone()),
            secrets: Arc::default(),
        })
    }

    /// The repository holding an artifact URI the server serves, and the path in it:
    /// `mlflow-artifacts:` URIs and what lies under the artifacts destination, or under a
    /// local `--default-artifact-root`. `None` for anything else (the server reads and
    /// writes nowhere else).
    pub fn locate(&self, uri: &str) -> Option<(Arc<dyn ArtifactRepository>, String)> {
        let relative = |rest: &str| {
            ctflow_core::artifact_path::safe_relative_path(rest)
                .ok()
                .map(|p| p.join("/"))
        };
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            return relative(rest.trim_start_matches('/')).map(|p| (self.artifacts.clone(), p));
        }
        if let ArtifactRoot::Object(url) = &self.artifact_root
            && let Some(rest) = uri
                .strip_prefix(url.as_str())
                .and_then(|r| r.strip_prefix('/'))
        {
            return relative(rest).map(|p| (self.artifacts.clone(), p));
        }
        let local = PathBuf::from(normpath(&local_folder(uri)?.to_string_lossy()));
        if let ArtifactRoot::Local(root) = &self.artifact_root
            && let Ok(rest) = local.strip_prefix(root)
        {
            return Some((self.artifacts.clone(), rest.to_string_lossy().into_owned()));
        }
        let (root, repository) = self.default_root.as_ref()?;
        let rest = local.strip_prefix(root).ok()?;
        Some((repository.clone(), rest.to_string_lossy().into_owned()))
    }

    /// An experiment's `artifact_location`, checked and as it is stored. It may not smuggle
    /// `#`, `?` or encoded traversal (the CVE-2023-6909 family). A relative local path is
    /// resolved against the server's working directory, as MLflow does. NB: the server itself only ever reads or writes artifacts under its own
    /// artifact root and a local `--default-artifact-root` ([`AppState::locate`]); a location
    /// elsewhere on its disk is one
    /// that clients write to directly, and that the server refuses to serve.
    pub fn check_artifact_location(&self, location: &str) -> ApiResult<String> {
        let bad = |why: &str| -> ApiError {
            MlflowError::invalid(format!("Invalid artifact_location '{location}': {why}")).into()
        };
        if location.contains('#') || location.contains('?') {
            return Err(bad("'#' and '?' are not allowed"));
        }
        let decoded = percent_encoding::percent_decode_str(location).decode_utf8_lossy();
        let path_part = decoded
            .split_once("://")
            .map(|(_, p)| p)
            .unwrap_or(&decoded);
        if decoded.contains('\0') || path_part.split(['/', '\\']).any(|seg| seg == "..") {
            return Err(bad("path traversal is not allowed"));
        }
        if location.contains(':') || location.starts_with('/') {
            return Ok(location.to_string());
        }
        let absolute = std::env::current_dir()
            .map_err(|e| bad(&e.to_string()))?
            .join(normpath(location));
        Ok(absolute.display().to_string())
    }
}

async fn not_found() -> ApiError {
    MlflowError::new(
        ErrorCode::EndpointNotFound,
        "No API endpoint matches this request path and method.",
    )
    .into()
}

/// Counts and times every request that matched a route, labelled by the route pattern.
async fn track_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Requests no route matched: counted, then MLflow's 404.
async fn unmatched(State(state): State<AppState>, method: axum::http::Method) -> Response {
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.to_string(),
            route: "unmatched".into(),
            status: 404,
        })
        .inc();
    not_found().await.into_response()
}

/// `GET /metrics`: live instruments plus what the store says now.
/// `GET /ready`: the store answers, and so does the bus when one is configured.
async fn ready(State(state): State<AppState>) -> Response {
    let mut checks: Vec<(&'static str, service::ReadinessCheck)> = Vec::new();
    checks.push(("store", store_check(state.store.clone())));
    if let Some(bus) = state.bus.clone() {
        checks.push(("bus", bus_check(bus)));
    }
    let (ready, body) = service::readiness("server", &checks).await;
    service::readiness_response(ready, body)
}

/// A readiness check that the bus can deliver.
pub fn bus_check(bus: Arc<dyn ctflow_bus::Bus>) -> service::ReadinessCheck {
    Arc::new(move || {
        let connected = bus.connected();
        Box::pin(async move {
            if connected {
                Ok(())
            } else {
                Err("the bus is not connected".to_string())
            }
        })
    })
}

/// How long a readiness probe waits for a busy writer before taking it as able.
const WRITE_PROBE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// A readiness check that the store answers reads and commits a write.
pub fn store_check(store: Store) -> service::ReadinessCheck {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            store.ping().await.map_err(|e| e.to_string())?;
            store
                .check_writable(WRITE_PROBE_PATIENCE)
                .await
                .map_err(|e| match e {
                    ctflow_store::Error::OutOfSpace(_) => e.to_string(),
                    e if e.is_out_of_space() => format!("no space left for the database: {e}"),
                    e => format!("cannot write: {e}"),
                })
        })
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = match state.store.ct_counts().await {
        Ok(counts) => Snapshot {
            queue_depth: counts
                .runs
                .iter()
                .filter(|(_, phase, _)| {
                    [Phase::Pending, Phase::Queued]
                        .iter()
                        .any(|waiting| waiting.as_str() == phase)
                })
                .map(|(_, _, n)| n)
                .sum(),
            pipeline_runs: counts.runs,
            gate_decisions: counts.gates,
            aliases: counts.aliases,
        },
        Err(error) => {
            // The live instruments are still worth scraping.
            tracing::warn!(%error, "cannot read pipeline counts for /metrics");
            Snapshot::default()
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            ctflow_metrics::CONTENT_TYPE,
        )],
        state.metrics.encode(&snapshot),
    )
        .into_response()
}

/// A handler that panics (a bug) answers 500 in MLflow's error JSON instead of
/// dropping the connection; the panic is logged.
async fn catch_panics(request: Request, next: Next) -> Response {
    use futures::FutureExt;
    // NB: clones of shared buffers, not copies: this runs on every request.
    let method = request.method().clone();
    let uri = request.uri().clone();
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, path = uri.path(), "a request handler panicked");
            ApiError::from(MlflowError::new(
                ErrorCode::InternalError,
                "The server failed on this request (a bug; its log has the details)",
            ))
            .into_response()
        }
    }
}

async fn log_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    response
}

fn mlflow_routes() -> Router<AppState> {
    use api::*;
    Router::new()
        .route("/2.0/mlflow/experiments/create", post(create_experiment))
        .route(
            "/2.0/mlflow/experiments/search-datasets",
            post(search_datasets),
        )
        .route("/2.0/mlflow/experiments/get", get(get_experiment))
        .route(
            "/2.0/mlflow/experiments/get-by-name",
            get(get_experiment_by_name),
        )
        .route(
            "/2.0/mlflow/experiments/search",
            get(search_experiments).post(search_experiments),
        )
        .route("/2.0/mlflow/experiments/update", post(update_experiment))
        .route("/2.0/mlflow/experiments/delete", post(delete_experiment))
        .route("/2.0/mlflow/experiments/restore", post(restore_experiment))
        .route(
            "/2.0/mlflow/experiments/set-experiment-tag",
            post(set_experiment_tag),
        )
        .route(
            "/2.0/mlflow/experiments/delete-experiment-tag",
            post(delete_experiment_tag),
        )
        .route("/2.0/mlflow/runs/create", post(create_run))
        .route("/2.0/mlflow/runs/get", get(get_run))
        .route("/2.0/mlflow/runs/update", post(update_run))
        .route("/2.0/mlflow/runs/delete", post(delete_run))
        .route("/2.0/mlflow/runs/restore", post(restore_run))
        .route(
            "/2.0/mlflow/runs/search",
            post(search_runs).get(search_runs),
        )
        .route("/2.0/mlflow/runs/log-metric", post(log_metric))
        .route("/2.0/mlflow/runs/log-parameter", post(log_param))
        .route("/2.0/mlflow/runs/set-tag", post(set_tag))
        .route("/2.0/mlflow/runs/delete-tag", post(delete_tag))
        .route("/2.0/mlflow/runs/log-batch", post(log_batch))
        .route("/2.0/mlflow/runs/log-inputs", post(log_inputs))
        .route("/2.0/mlflow/runs/outputs", post(log_outputs))
        .route("/2.0/mlflow/metrics/get-history", get(get_metric_history))
        .route(
            "/2.0/mlflow/metrics/get-history-bulk",
            get(get_metric_history_bulk),
        )
        .route(
            "/2.0/mlflow/metrics/get-history-bulk-interval",
            get(get_metric_history_bulk_interval),
        )
        .route(
            "/2.0/mlflow/artifacts/list",
            get(artifacts::list_run_artifacts),
        )
        .route("/2.0/mlflow/logged-models", post(create_logged_model))
        .route(
            "/2.0/mlflow/logged-models/search",
            post(search_logged_models),
        )
        .route(
            "/2.0/mlflow/logged-models/{model_id}",
            get(get_logged_model)
                .patch(finalize_logged_model)
                .delete(delete_logged_model),
        )
        .route(
            "/2.0/mlflow/logged-models/{model_id}/tags",
            patch(set_logged_model_tags),
        )
        .route(
            "/2.0/mlflow/logged-models/{model_id}/tags/{key}",
            delete(delete_logged_model_tag),
        )
        .route(
            "/2.0/mlflow/logged-models/{model_id}/params",
            post(log_logged_model_params),
        )
        .route(
            "/2.0/mlflow/registered-models/create",
            post(registry::create_registered_model),
        )
        .route(
            "/2.0/mlflow/registered-models/get",
            get(registry::get_registered_model),
        )
        .route(
            "/2.0/mlflow/registered-models/rename",
            post(registry::rename_registered_model),
        )
        .route(
            "/2.0/mlflow/registered-models/update",
            patch(registry::update_registered_model),
        )
        .route(
            "/2.0/mlflow/registered-models/delete",
            delete(registry::delete_registered_model),
        )
        .route(
            "/2.0/mlflow/registered-models/search",
            get(registry::search_registered_models),
        )
        .route(
            "/2.0/mlflow/registered-models/set-tag",
            post(registry::set_registered_model_tag),
        )
        .route(
            "/2.0/mlflow/registered-models/delete-tag",
            delete(registry::delete_registered_model_tag),
        )
        .route(
            "/2.0/mlflow/registered-models/alias",
            post(registry::set_alias)
                .delete(registry::delete_alias)
                .get(registry::get_by_alias),
        )
        .route(
            "/2.0/mlflow/registered-models/get-latest-versions",
            post(registry::get_latest_versions).get(registry::get_latest_versions),
        )
        .route(
            "/2.0/mlflow/model-versions/create",
            post(registry::create_model_version),
        )
        .route(
            "/2.0/mlflow/model-versions/get",
            get(registry::get_model_version),
        )
        .route(
            "/2.0/mlflow/model-versions/update",
            patch(registry::update_model_version),
        )
        .route(
            "/2.0/mlflow/model-versions/delete",
            delete(registry::delete_model_version),
        )
        .route(
            "/2.0/mlflow/model-versions/search",
            get(registry::search_model_versions),
        )
        .route(
            "/2.0/mlflow/model-versions/set-tag",
            post(registry::set_model_version_tag),
        )
        .route(
            "/2.0/mlflow/model-versions/delete-tag",
            delete(registry::delete_model_version_tag),
        )
        .route(
            "/2.0/mlflow/model-versions/transition-stage",
            post(registry::transition_stage),
        )
        .route(
            "/2.0/mlflow/model-versions/get-download-uri",
            get(registry::get_download_uri),
        )
        .route(
            "/ctflow/v1/experiments/run-counts",
            get(registry::run_counts),
        )
        .route("/ctflow/v1/runs/count", post(api::count_runs))
        .route(
            "/ctflow/v1/models/{name}/history",
            get(registry::model_history),
        )
        .route(
            "/ctflow/v1/models/{name}/feedback",
            get(feedback::list).post(feedback::send),
        )
        .route("/ctflow/v1/pipelines", get(pipelines::list))
        .route("/ctflow/v1/events", get(pipelines::events))
        .route(
            "/ctflow/v1/pipelines/{name}",
            get(pipelines::get)
                .put(pipelines::put)
                .delete(pipelines::delete),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/trigger",
            post(pipelines::trigger),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/webhook",
            post(pipelines::webhook),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/drift-events",
            post(pipelines::drift_event),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/performance-events",
            post(pipelines::performance_event),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/data-events",
            post(pipelines::data_event),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/triggers/{index}/seen-files",
            get(pipelines::seen_files).post(pipelines::mark_seen),
        )
        .route(
            "/ctflow/v1/pipelines/{name}/champion-snapshot",
            get(pipelines::champion_snapshot),
        )
        .route("/ctflow/v1/pipelines/{name}/runs", get(pipelines::runs))
        .route("/ctflow/v1/pipeline-runs", get(pipelines::all_runs))
        .route("/ctflow/v1/pipeline-runs/{id}", get(pipelines::describe))
        .route(
            "/ctflow/v1/pipeline-runs/{id}/rerun",
            post(pipelines::rerun),
        )
        .route(
            "/ctflow/v1/pipeline-runs/{id}/shadow",
            post(pipelines::shadow_report),
        )
        .route(
            "/ctflow/v1/pipeline-runs/{id}/claim",
            post(pipelines::claim),
        )
        .route(
            "/ctflow/v1/pipeline-runs/{id}/approve",
            post(pipelines::approve),
        )
        .route(
            "/ctflow/v1/pipeline-runs/{id}/reject",
            post(pipelines::reject),
        )
        .route(
            "/ctflow/v1/models/{name}/rollback",
            post(pipelines::rollback),
        )
        .route("/3.0/mlflow/server-info", get(server_info))
        .route("/2.0/mlflow/users/create", post(auth::create_user))
        .route("/2.0/mlflow/users/get", get(auth::get_user))
        .route("/2.0/mlflow/users/current", get(auth::current_user))
        .route("/2.0/mlflow/users/list", get(auth::list_users))
        .route(
            "/2.0/mlflow/users/update-password",
            patch(auth::update_password),
        )
        .route("/2.0/mlflow/users/update-admin", patch(auth::update_admin))
        .route("/2.0/mlflow/users/delete", delete(auth::delete_user))
        .route(
            "/3.0/mlflow/users/permissions/grant",
            post(auth::grant_permission),
        )
        .route(
            "/3.0/mlflow/users/permissions/revoke",
            post(auth::revoke_permission),
        )
        .route(
            "/3.0/mlflow/users/permissions/get",
            get(auth::get_permission),
        )
        .route(
            "/ctflow/v1/tokens",
            get(auth::list_tokens).post(auth::create_token),
        )
        .route("/ctflow/v1/tokens/{id}", delete(auth::delete_token))
        .route(
            "/ctflow/v1/session",
            get(auth::session)
                .post(auth::sign_in)
                .delete(auth::sign_out),
        )
        .route(
            "/2.0/mlflow/upload-artifact",
            post(artifacts::upload_run_artifact),
        )
        .route(
            "/2.0/mlflow/logged-models/{model_id}/artifacts/files",
            get(artifacts::get_logged_model_artifact),
        )
        .route(
            "/2.0/mlflow/logged-models/{model_id}/artifacts/directories",
            get(artifacts::list_logged_model_artifacts),
        )
        .route(
            "/2.0/mlflow/gateway-proxy",
            get(gateway::gateway_proxy).post(gateway::gateway_proxy),
        )
        .route(
            "/2.0/mlflow/runs/create-promptlab-run",
            post(promptlab::create_promptlab_run),
        )
        .route(
            "/3.0/mlflow/gateway/model-definitions/create",
            post(gateway::create_model_definition),
        )
        .route(
            "/3.0/mlflow/gateway/model-definitions/get",
            get(gateway::get_model_definition),
        )
        .route(
            "/3.0/mlflow/gateway/model-definitions/list",
            get(gateway::list_model_definitions),
        )
        .route(
            "/3.0/mlflow/gateway/model-definitions/update",
            post(gateway::update_model_definition),
        )
        .route(
            "/3.0/mlflow/gateway/model-definitions/delete",
            delete(gateway::delete_model_definition),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/create",
            post(gateway::create_endpoint),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/get",
            get(gateway::get_endpoint),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/list",
            get(gateway::list_endpoints),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/update",
            post(gateway::update_endpoint),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/delete",
            delete(gateway::delete_endpoint),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/models/attach",
            post(gateway::attach_model),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/models/detach",
            post(gateway::detach_model),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/bindings/create",
            post(gateway::create_binding),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/bindings/list",
            get(gateway::list_bindings),
        )
        .route(
            "/3.0/mlflow/gateway/endpoints/bindings/delete",
            delete(gateway::delete_binding),
        )
        .route(
            "/3.0/mlflow/gateway/supported-providers",
            get(gateway::supported_providers),
        )
        .route(
            "/3.0/mlflow/gateway/provider-config",
            get(gateway::provider_config),
        )
        .route(
            "/3.0/mlflow/gateway/secrets/create",
            post(gateway::create_secret),
        )
        .route("/3.0/mlflow/gateway/secrets/get", get(gateway::get_secret))
        .route(
            "/3.0/mlflow/gateway/secrets/update",
            post(gateway::update_secret),
        )
        .route(
            "/3.0/mlflow/gateway/secrets/delete",
            delete(gateway::delete_secret),
        )
        .route(
            "/3.0/mlflow/gateway/secrets/list",
            get(gateway::list_secrets),
        )
        .route(
            "/3.0/mlflow/gateway/secrets/config",
            get(gateway::secrets_config),
        )
        .route(
            "/3.0/mlflow/datasets/create",
            post(datasets::create_dataset),
        )
        .route(
            "/3.0/mlflow/datasets/search",
            post(datasets::search_datasets),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}",
            get(datasets::get_dataset).delete(datasets::delete_dataset),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}/tags",
            patch(datasets::set_dataset_tags),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}/tags/{key}",
            delete(datasets::delete_dataset_tag),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}/records",
            get(datasets::get_records)
                .post(datasets::upsert_records)
                .delete(datasets::delete_records),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}/experiment-ids",
            get(datasets::dataset_experiment_ids),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}/add-experiments",
            post(datasets::add_dataset_to_experiments),
        )
        .route(
            "/3.0/mlflow/datasets/{dataset_id}/remove-experiments",
            post(datasets::remove_dataset_from_experiments),
        )
        .route(
            "/3.0/mlflow/scorers/register",
            post(scorers::register_scorer),
        )
        .route("/3.0/mlflow/scorers/list", get(scorers::list_scorers))
        .route(
            "/3.0/mlflow/scorers/versions",
            get(scorers::list_scorer_versions),
        )
        .route("/3.0/mlflow/scorers/get", get(scorers::get_scorer))
        .route("/3.0/mlflow/scorers/delete", delete(scorers::delete_scorer))
        .route(
            "/3.0/mlflow/scorers/online-config",
            put(scorers::upsert_online_config),
        )
        .route(
            "/3.0/mlflow/scorers/online-configs",
            get(scorers::online_configs),
        )
        .route("/3.0/mlflow/issues", post(issues::create_issue))
        .route("/3.0/mlflow/issues/search", post(issues::search_issues))
        .route(
            "/3.0/mlflow/issues/{issue_id}",
            get(issues::get_issue).patch(issues::update_issue),
        )
        .route("/3.0/mlflow/traces", post(traces::start_trace))
        .route("/3.0/mlflow/traces/get", get(traces::get_trace))
        .route("/3.0/mlflow/traces/batchGet", get(traces::batch_get_traces))
        .route(
            "/3.0/mlflow/traces/batchGetInfos",
            post(traces::batch_get_trace_infos),
        )
        .route("/3.0/mlflow/traces/search", post(traces::search_traces))
        .route(
            "/3.0/mlflow/traces/metrics",
            post(traces::query_trace_metrics),
        )
        .route(
            "/3.0/mlflow/traces/calculate-filter-correlation",
            post(traces::calculate_filter_correlation),
        )
        .route(
            "/3.0/mlflow/traces/delete-traces",
            post(traces::delete_traces),
        )
        .route("/3.0/mlflow/traces/{trace_id}", get(traces::get_trace_info))
        .route(
            "/3.0/mlflow/traces/{trace_id}/tags",
            patch(traces::set_trace_tag).delete(traces::delete_trace_tag),
        )
        .route(
            "/3.0/mlflow/traces/{trace_id}/assessments",
            post(traces::create_assessment),
        )
        .route(
            "/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}",
            get(traces::get_assessment)
                .patch(traces::update_assessment)
                .delete(traces::delete_assessment),
        )
        .route(
            "/2.0/mlflow/traces",
            get(traces::search_traces_v2).post(traces::start_trace_v2),
        )
        .route(
            "/2.0/mlflow/traces/delete-traces",
            post(traces::delete_traces),
        )
        .route(
            "/2.0/mlflow/traces/link-to-run",
            post(traces::link_traces_to_run),
        )
        .route(
            "/2.0/mlflow/traces/{request_id}",
            patch(traces::end_trace_v2),
        )
        .route(
            "/2.0/mlflow/traces/{request_id}/info",
            get(traces::get_trace_info_v2),
        )
        .route(
            "/2.0/mlflow/traces/{request_id}/tags",
            patch(traces::set_trace_tag).delete(traces::delete_trace_tag),
        )
        .route(
            "/2.0/mlflow/get-trace-artifact",
            get(traces::get_trace_artifact),
        )
        .route(
            "/3.0/mlflow/get-trace-artifact",
            get(traces::get_trace_artifact),
        )
        .route("/2.0/mlflow-artifacts/artifacts", get(artifacts::list))
        .route(
            "/2.0/mlflow-artifacts/artifacts/{*path}",
            get(artifacts::download)
                .put(artifacts::upload)
                .delete(artifacts::delete),
        )
}

/// The MLflow release whose REST API this server implements: `/version` answers it, since
/// MLflow's clients switch features on by the server's version (span logging needs
/// 3.4). ctflow's own version rides along in [`CTFLOW_VERSION_HEADER`] and `server-info`.
pub const MLFLOW_API_LEVEL: &str = "3.17.2";

/// The response header that carries ctflow's own version.
pub const CTFLOW_VERSION_HEADER: &str = "x-ctflow-version";

async fn version() -> Response {
    (
        [(CTFLOW_VERSION_HEADER, env!("CARGO_PKG_VERSION"))],
        MLFLOW_API_LEVEL,
    )
        .into_response()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let api = mlflow_routes();
    Router::new()
        .nest("/api", api.clone())
        .nest("/ajax-api", api)
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route("/v1/traces", post(traces::export_spans))
        .route(
            "/gateway/mlflow/v1/chat/completions",
            post(gateway_invoke::chat_completions),
        )
        .route(
            "/gateway/{endpoint_name}/mlflow/invocations",
            post(gateway_invoke::invocations),
        )
        .route("/get-artifact", get(artifacts::get_run_artifact))
        .route("/graphql", get(graphql::handle).post(graphql::handle))
        .route(
            "/model-versions/get-artifact",
            get(artifacts::get_model_version_artifact),
        )
        // NB: MLflow's Flask app merges repeated slashes; its UI and tests send this form.
        .route(
            "//model-versions/get-artifact",
            get(artifacts::get_model_version_artifact),
        )
        .route("/metrics", get(metrics))
        .route("/", get(ui::index))
        .route("/static/app.js", get(ui::app_js))
        .route("/static/app.css", get(ui::app_css))
        .route("/static/uplot.min.js", get(ui::uplot_js))
        .route("/static/uplot.min.css", get(ui::uplot_css))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            track_requests,
        ))
        .fallback(unmatched)
        .layer(DefaultBodyLimit::max(state.limits.max_request_body))
        .layer(middleware::from_fn_with_state(
            state.limits.clone(),
            limits::stalled_bodies,
        ))
        .layer(middleware::from_fn(catch_panics))
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and closes the store.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let limits = state.limits.clone();
    let result = connections::serve(listener, router(state), &limits, shutdown).await;
    store.close().await;
    result
}
