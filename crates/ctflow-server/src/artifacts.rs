//! The artifact proxy (`/api/2.0/mlflow-artifacts/...`) and the run-scoped listing
//! (`/api/2.0/mlflow/artifacts/list`). Bytes stream straight between the socket and the
//! repository; nothing is buffered whole in memory.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ctflow_core::entities::FileInfo;
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_store::artifacts::ArtifactRepository;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::AppState;
use crate::api::page;
use crate::error::{ApiError, ApiResult};
use crate::limits::{check_upload_length, limit_upload, upload_failure};
use crate::params::Params;

fn require_serving(state: &AppState) -> ApiResult<()> {
    if state.serve_artifacts {
        Ok(())
    } else {
        Err(MlflowError::new(
            ErrorCode::TemporarilyUnavailable,
            "Artifact proxying is disabled: this server runs with --no-serve-artifacts. Start it with --serve-artifacts to enable it.",
        )
        .into())
    }
}

pub async fn upload(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_serving(&state)?;
    check_upload_length(&headers, &state.limits)?;
    let reader = StreamReader::new(limit_upload(body, state.limits.max_artifact_upload));
    if let Err(error) = state.artifacts.put(&path, Box::pin(reader)).await {
        return Err(upload_failure(&error, &state.limits).unwrap_or_else(|| error.into()));
    }
    Ok(StatusCode::OK.into_response())
}

fn content_type_for(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" | "py" | "yaml" | "yml" | "csv" => "text/plain",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        // Served as text so that an uploaded page cannot run script in the server's origin.
        "html" | "htm" => "text/plain",
        _ => "application/octet-stream",
    }
}

pub async fn download(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    require_serving(&state)?;
    serve_file(state.artifacts.as_ref(), &path).await
}

/// One file of a repository as a download: its type by extension, never sniffed.
async fn serve_file(repository: &dyn ArtifactRepository, path: &str) -> ApiResult<Response> {
    let content = repository.get(path).await?;
    let file_name = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, content_type_for(path).to_string()),
            (header::CONTENT_LENGTH, content.len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        Body::from_stream(ReaderStream::with_capacity(content.reader, 64 * 1024)),
    )
        .into_response())
}

pub async fn list(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    require_serving(&state)?;
    let path = p.str("path")?.unwrap_or_default();
    let files = state.artifacts.list(&path).await?;
    page("files", files, None)
}

pub async fn delete(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> ApiResult<Json<Value>> {
    require_serving(&state)?;
    state.artifacts.delete(&path).await?;
    Ok(Json(json!({})))
}

/// `artifacts/list` for a run: paths relative to the run's artifact root.
pub async fn list_run_artifacts(
    State(state): State<AppState>,
    p: Params,
) -> ApiResult<Json<Value>> {
    let run = state.store.get_run_info(&p.run_id()?).await?;
    let rel = p.str("path")?.unwrap_or_default();
    let rel = rel.trim_end_matches('/').to_string();
    ctflow_core::artifact_path::safe_relative_path(&rel).map_err(ApiError::from)?;
    let Some((repository, base)) = state.locate(&run.artifact_uri) else {
        return Err(MlflowError::invalid(format!(
            "The artifacts of this run live at '{}', which this server does not serve.",
            run.artifact_uri
        ))
        .into());
    };
    let dir = join(&base, &rel);
    let files: Vec<FileInfo> = repository
        .list(&dir)
        .await?
        .into_iter()
        .map(|f| FileInfo {
            path: if rel.is_empty() {
                f.path
            } else {
                format!("{rel}/{}", f.path)
            },
            ..f
        })
        .collect();
    let mut body = json!({ "root_uri": run.artifact_uri });
    if !files.is_empty() {
        body["files"] = serde_json::to_value(files).map_err(crate::api::internal)?;
    }
    Ok(Json(body))
}

fn join(base: &str, relative: &str) -> String {
    match (base.is_empty(), relative.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => relative.to_string(),
        (false, false) => format!("{base}/{relative}"),
    }
}

/// A request's relative artifact path, its parts once checked (`Invalid path` for one that
/// climbs). NB: checked before any lookup, so a bad path is a 400 whatever it names.
fn relative_parts(relative: &str) -> ApiResult<Vec<String>> {
    Ok(ctflow_core::artifact_path::safe_relative_path(relative)?)
}

/// The repository and path of checked `parts` under a run's or model's artifact URI,
/// refusing a location this server does not serve.
pub(crate) fn located(
    state: &AppState,
    root_uri: &str,
    parts: &[String],
) -> ApiResult<(Arc<dyn ArtifactRepository>, String)> {
    let Some((repository, base)) = state.locate(root_uri) else {
        return Err(MlflowError::invalid(format!(
            "The artifacts at '{root_uri}' are not stored where this server serves them."
        ))
        .into());
    };
    Ok((repository, join(&base, &parts.join("/"))))
}

/// A model version's files: its storage location, with `runs:/<id>/<name>/<path>` read as
/// MLflow 3 reads it: under the run's logged model of that name when there is one (where
/// `log_model` puts the files), else under the run's own artifacts.
async fn version_root(state: &AppState, name: &str, version: &str) -> ApiResult<String> {
    let version = ctflow_core::registry::parse_version(version)?;
    let location = state
        .store
        .get_model_version_download_uri(name, version)
        .await?;
    let Some(rest) = location.strip_prefix("runs:/") else {
        return Ok(location);
    };
    let rest = rest.trim_start_matches('/');
    let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (first, below) = path.split_once('/').unwrap_or((path, ""));
    if !first.is_empty()
        && let Some(model_id) = state.store.logged_model_of_run(run_id, first).await?
    {
        let model = state.store.get_logged_model(&model_id).await?;
        return Ok(join(model.info.artifact_uri.trim_end_matches('/'), below));
    }
    let run = state.store.get_run_info(run_id).await?;
    Ok(join(run.artifact_uri.trim_end_matches('/'), path))
}

/// `GET /get-artifact?run_id=&path=` (also `run_uuid`; MLflow's UI): one file of a run.
pub async fn get_run_artifact(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let run_id = match p.str("run_id")?.filter(|r| !r.is_empty()) {
        Some(run_id) => run_id,
        None => p.req_str("run_uuid")?,
    };
    let relative = p.req_str("path")?;
    let parts = relative_parts(&relative)?;
    let run = state.store.get_run_info(&run_id).await?;
    let (repository, path) = located(&state, &run.artifact_uri, &parts)?;
    serve_file(repository.as_ref(), &path).await
}

/// `GET /model-versions/get-artifact?name=&version=&path=` (MLflow's UI).
pub async fn get_model_version_artifact(
    State(state): State<AppState>,
    p: Params,
) -> ApiResult<Response> {
    let name = p.req_str("name")?;
    let version = p.req_str("version")?;
    let relative = p.req_str("path")?;
    let parts = relative_parts(&relative)?;
    let root = version_root(&state, &name, &version).await?;
    let (repository, path) = located(&state, &root, &parts)?;
    serve_file(repository.as_ref(), &path).await
}

/// `POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=&path=` (MLflow's UI): the request
/// body becomes that file of the run.
pub async fn upload_run_artifact(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let run_id = query
        .get("run_uuid")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| MlflowError::invalid("Request must specify run_uuid."))?;
    let relative = query
        .get("path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| MlflowError::invalid("Request must specify path."))?;
    let parts = relative_parts(relative)?;
    check_upload_length(&headers, &state.limits)?;
    let data = axum::body::to_bytes(body, state.limits.max_artifact_upload as usize)
        .await
        .map_err(|_| {
            MlflowError::invalid(format!(
                "The file is larger than this server accepts ({} bytes).",
                state.limits.max_artifact_upload
            ))
        })?;
    if data.is_empty() {
        return Err(MlflowError::invalid("Request must specify data.").into());
    }
    let run = state.store.get_run_info(run_id).await?;
    let (repository, path) = located(&state, &run.artifact_uri, &parts)?;
    let reader = std::io::Cursor::new(data);
    repository.put(&path, Box::pin(reader)).await?;
    Ok(Json(json!({})).into_response())
}

/// `GET /ajax-api/2.0/mlflow/logged-models/{id}/artifacts/files?artifact_file_path=`.
pub async fn get_logged_model_artifact(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let relative = p.req_str("artifact_file_path")?;
    let parts = relative_parts(&relative)?;
    let model = state.store.get_logged_model(&model_id).await?;
    let (repository, path) = located(&state, &model.info.artifact_uri, &parts)?;
    serve_file(repository.as_ref(), &path).await
}

/// `GET /ajax-api/2.0/mlflow/logged-models/{id}/artifacts/directories?artifact_directory_path=`:
/// one folder of a logged model, paths relative to the model's root.
pub async fn list_logged_model_artifacts(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    p: Params,
) -> ApiResult<Response> {
    let relative = p.str("artifact_directory_path")?.unwrap_or_default();
    let relative = relative.trim_end_matches('/').to_string();
    let parts = relative_parts(&relative)?;
    let model = state.store.get_logged_model(&model_id).await?;
    let (repository, dir) = located(&state, &model.info.artifact_uri, &parts)?;
    let files: Vec<FileInfo> = repository
        .list(&dir)
        .await?
        .into_iter()
        .map(|f| FileInfo {
            path: if relative.is_empty() {
                f.path
            } else {
                format!("{relative}/{}", f.path)
            },
            ..f
        })
        .collect();
    let mut body = json!({ "root_uri": model.info.artifact_uri });
    if !files.is_empty() {
        body["files"] = serde_json::to_value(files).map_err(crate::api::internal)?;
    }
    Ok(Json(body).into_response())
}
