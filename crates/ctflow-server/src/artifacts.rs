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
use serde_json::{Value, json};
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
    let content = state.artifacts.get(&path).await?;
    let file_name = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, content_type_for(&path).to_string()),
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
    let Some(base) = state.repository_path(&run.artifact_uri) else {
        return Err(MlflowError::invalid(format!(
            "The artifacts of this run live at '{}', which this server does not serve.",
            run.artifact_uri
        ))
        .into());
    };
    let dir = if rel.is_empty() {
        base
    } else {
        format!("{base}/{rel}")
    };
    let files: Vec<FileInfo> = state
        .artifacts
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
