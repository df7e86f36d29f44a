//! Ground truth for served predictions: `POST /api/ctflow/v1/models/{name}/feedback`
//! stores labels by request id (idempotent; a different label for the same row replaces
//! the first), `GET` pages through them in arrival order for the monitor that joins them
//! to the inference log. Whether a request id was ever served is the monitor's call: the
//! server never sees the log.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use ctflow_core::MlflowError;
use ctflow_core::inference::valid_request_id;
use ctflow_core::monitoring::check_label;
use ctflow_store::NewLabel;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::JsonResult;
use crate::error::ApiResult;
use crate::params::Params;

/// The most labels one request may carry.
pub const MAX_LABELS: usize = 10_000;
const DEFAULT_PAGE: i64 = 1000;
const MAX_PAGE: i64 = 10_000;

fn invalid(message: impl Into<String>) -> MlflowError {
    MlflowError::invalid(message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRequest {
    request_id: Value,
    #[serde(default)]
    row: Option<Value>,
    label: Value,
}

#[derive(Deserialize)]
struct FeedbackRequest {
    #[serde(default)]
    labels: Option<Vec<LabelRequest>>,
}

fn new_label(index: usize, label: LabelRequest) -> ApiResult<NewLabel> {
    let at = |message: String| invalid(format!("labels[{index}]: {message}"));
    let request_id = match label.request_id {
        Value::String(id) if valid_request_id(&id) => id,
        other => {
            return Err(at(format!(
                "request_id must be 1 to 128 visible ASCII characters, got {other}"
            ))
            .into());
        }
    };
    let row = match label.row {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| at(format!("row must be a row number of the request, got {n}")))?,
        Some(other) => {
            return Err(at(format!(
                "row must be a row number of the request, got {other}"
            ))
            .into());
        }
    };
    check_label(&label.label).map_err(at)?;
    Ok(NewLabel {
        request_id,
        row,
        label: label.label,
    })
}

/// `POST /api/ctflow/v1/models/{name}/feedback`: `{"labels": [{"request_id", "row"?,
/// "label"}]}`; answers how many were new, resent unchanged, or replaced.
pub async fn send(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> JsonResult {
    let request: FeedbackRequest =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("Invalid feedback: {e}")))?;
    let labels = request
        .labels
        .ok_or_else(|| invalid("Missing value for required parameter 'labels'."))?;
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "at most {MAX_LABELS} labels per request, got {}",
            labels.len()
        ))
        .into());
    }
    let labels = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| new_label(i, label))
        .collect::<ApiResult<Vec<_>>>()?;
    let outcome = state
        .store
        .put_feedback(&name, &labels, ctflow_core::now_ms())
        .await?;
    Ok(Json(outcome).into_response())
}

/// `GET /api/ctflow/v1/models/{name}/feedback?received_after=MS&after=SEQ&max_results=N`:
/// labels in arrival order; `next_after` is there when more may follow.
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> JsonResult {
    let received_after = p.i64("received_after")?.unwrap_or(0);
    let after = p.i64("after")?.unwrap_or(0);
    let max = p.i64("max_results")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&max) {
        return Err(invalid(format!(
            "max_results must be between 1 and {MAX_PAGE}, got {max}"
        ))
        .into());
    }
    let labels = state
        .store
        .list_feedback(
            &name,
            received_after,
            after,
            usize::try_from(max).unwrap_or(0),
        )
        .await?;
    let next = (labels.len() as i64 == max)
        .then(|| labels.last().map(|l| l.seq))
        .flatten();
    let mut body = json!({ "labels": labels });
    if let (Some(next), Some(map)) = (next, body.as_object_mut()) {
        map.insert("next_after".into(), json!(next));
    }
    Ok(Json(body).into_response())
}
