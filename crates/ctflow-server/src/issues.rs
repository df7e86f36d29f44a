//! MLflow 3's issues API: `/api/3.0/mlflow/issues` (create), `issues/{issue_id}` (get,
//! update), `issues/search`.

use axum::extract::{Path, State};
use ctflow_core::MlflowError;
use ctflow_core::filter::parse_issue_filter;
use ctflow_core::ids::parse_experiment_id;
use ctflow_store::{IssueUpdate, NewIssue};
use serde_json::json;

use crate::AppState;
use crate::api::{JsonResult, wrap};
use crate::params::Params;

/// The page size of a search that names none.
const DEFAULT_ISSUES_PER_PAGE: i64 = 100;
/// The most issues one page holds.
const MAX_ISSUES_PER_PAGE: i64 = 1000;

/// `POST /api/3.0/mlflow/issues`.
pub async fn create_issue(State(state): State<AppState>, p: Params) -> JsonResult {
    let new = NewIssue {
        experiment_id: parse_experiment_id(&p.req_str("experiment_id")?)?,
        name: p.req_str("name")?,
        description: p.req_str("description")?,
        status: p.str("status")?,
        severity: p.str("severity")?,
        root_causes: p.str_list("root_causes")?,
        source_run_id: p.str("source_run_id")?.filter(|r| !r.is_empty()),
        categories: p.str_list("categories")?,
        created_by: p.str("created_by")?,
    };
    wrap("issue", state.store.create_issue(&new).await?)
}

/// `GET /api/3.0/mlflow/issues/{issue_id}`.
pub async fn get_issue(State(state): State<AppState>, Path(issue_id): Path<String>) -> JsonResult {
    wrap("issue", state.store.get_issue(&issue_id).await?)
}

/// `PATCH /api/3.0/mlflow/issues/{issue_id}`: name, description, status, severity.
pub async fn update_issue(
    State(state): State<AppState>,
    Path(issue_id): Path<String>,
    p: Params,
) -> JsonResult {
    let body_id = p.req_str("issue_id")?;
    if body_id != issue_id {
        return Err(MlflowError::invalid(format!(
            "The issue_id in the body ('{body_id}') is not the one in the path ('{issue_id}')"
        ))
        .into());
    }
    let non_empty = |name: &str| -> Result<Option<String>, MlflowError> {
        Ok(p.str(name)?.filter(|v| !v.is_empty()))
    };
    let update = IssueUpdate {
        name: non_empty("name")?,
        description: non_empty("description")?,
        status: non_empty("status")?,
        severity: non_empty("severity")?,
    };
    wrap("issue", state.store.update_issue(&issue_id, &update).await?)
}

/// `POST /api/3.0/mlflow/issues/search`: newest first; `next_page_token` is always there,
/// empty after the last page, as MLflow answers.
pub async fn search_issues(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_id = p
        .str("experiment_id")?
        .filter(|id| !id.is_empty())
        .map(|id| parse_experiment_id(&id))
        .transpose()?;
    let max_results = p.i64("max_results")?.unwrap_or(DEFAULT_ISSUES_PER_PAGE);
    if max_results < 1 {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer"
        ))
        .into());
    }
    let filter = parse_issue_filter(&p.str("filter_string")?.unwrap_or_default())?;
    let token = p.str("page_token")?.filter(|t| !t.is_empty());
    let (issues, next) = state
        .store
        .search_issues(
            experiment_id,
            &filter,
            state.limits.page(max_results.min(MAX_ISSUES_PER_PAGE)),
            token.as_deref(),
        )
        .await?;
    let body = json!({"issues": issues, "next_page_token": next.unwrap_or_default()});
    crate::api::to_json(&body)
}
