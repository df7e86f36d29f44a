//! MLflow 3's evaluation datasets API: `/api/3.0/mlflow/datasets/*` (create, get, delete,
//! search, tags, records, experiment links).

use axum::Extension;
use axum::extract::{Path, State};
use ctflow_core::MlflowError;
use ctflow_core::eval_datasets::{parse_dataset_filter, parse_dataset_order_by, parse_records};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::api::{JsonResult, empty, to_json};
use crate::auth::Visibility;
use crate::error::ApiResult;
use crate::params::Params;

/// A search's page size when it names none (MLflow's default).
const DEFAULT_DATASETS_PER_PAGE: i64 = 1000;
/// A records page's size when it names none.
const DEFAULT_RECORDS_PER_PAGE: i64 = 1000;

/// `tags` as MLflow's client sends them (a JSON map as text), or as a map.
fn tags(p: &Params) -> ApiResult<Map<String, Value>> {
    match p.get("tags") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(Value::String(text)) if text.is_empty() => Ok(Map::new()),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| {
            MlflowError::invalid(format!("Invalid 'tags': expected a JSON map ({e})")).into()
        }),
        Some(other) => Err(MlflowError::invalid(format!(
            "Invalid 'tags': expected a JSON map, got {other}"
        ))
        .into()),
    }
}

/// `POST /api/3.0/mlflow/datasets/create`.
pub async fn create_dataset(State(state): State<AppState>, p: Params) -> JsonResult {
    let ids = p.experiment_ids("experiment_ids")?;
    let dataset = state
        .store
        .create_dataset(&p.req_str("name")?, tags(&p)?, &ids)
        .await?;
    to_json(&json!({ "dataset": dataset.to_json(Some(&ids)) }))
}

/// `GET /api/3.0/mlflow/datasets/{dataset_id}`.
pub async fn get_dataset(State(state): State<AppState>, Path(id): Path<String>) -> JsonResult {
    let dataset = state.store.get_dataset(&id).await?;
    to_json(&json!({ "dataset": dataset.to_json(None) }))
}

/// `DELETE /api/3.0/mlflow/datasets/{dataset_id}`.
pub async fn delete_dataset(State(state): State<AppState>, Path(id): Path<String>) -> JsonResult {
    state.store.delete_dataset(&id).await?;
    empty()
}

/// `POST /api/3.0/mlflow/datasets/search`. Under `--auth`, a dataset is listed when the
/// caller may read every experiment it is linked to (an unlinked one: admins only).
pub async fn search_datasets(
    State(state): State<AppState>,
    visibility: Option<Extension<Visibility>>,
    p: Params,
) -> JsonResult {
    let visibility = Visibility::of_request(&state, visibility)?;
    let max_results = p.i64("max_results")?.unwrap_or(DEFAULT_DATASETS_PER_PAGE);
    if max_results < 1 {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer"
        ))
        .into());
    }
    let filter = parse_dataset_filter(&p.str("filter_string")?.unwrap_or_default())?;
    let order = parse_dataset_order_by(&p.str_list("order_by")?)?;
    let token = p.str("page_token")?.filter(|t| !t.is_empty());
    let (datasets, next) = state
        .store
        .search_datasets(
            &p.experiment_ids("experiment_ids")?,
            &filter,
            &order,
            state.limits.page(max_results),
            token.as_deref(),
        )
        .await?;
    let links = if visibility.is_everything() {
        Default::default()
    } else {
        let ids: Vec<String> = datasets.iter().map(|d| d.dataset_id.clone()).collect();
        state.store.datasets_experiments(&ids).await?
    };
    let readable = |id: &str| {
        visibility.is_everything()
            || links.get(id).is_some_and(|linked| {
                linked
                    .iter()
                    .all(|experiment| visibility.experiment(&experiment.to_string()))
            })
    };
    let listed: Vec<Value> = datasets
        .iter()
        .filter(|d| readable(&d.dataset_id))
        .map(|d| d.to_json(None))
        .collect();
    let mut answer = Map::new();
    if !listed.is_empty() {
        answer.insert("datasets".into(), Value::Array(listed));
    }
    if let Some(next) = next {
        answer.insert("next_page_token".into(), json!(next));
    }
    to_json(&Value::Object(answer))
}

/// `PATCH /api/3.0/mlflow/datasets/{dataset_id}/tags`: merged into the dataset's tags.
pub async fn set_dataset_tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    state.store.set_dataset_tags(&id, tags(&p)?).await?;
    empty()
}

/// `DELETE /api/3.0/mlflow/datasets/{dataset_id}/tags/{key}`.
pub async fn delete_dataset_tag(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> JsonResult {
    state.store.delete_dataset_tag(&id, &key).await?;
    empty()
}

/// `GET /api/3.0/mlflow/datasets/{dataset_id}/experiment-ids`.
pub async fn dataset_experiment_ids(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> JsonResult {
    let ids: Vec<String> = state
        .store
        .dataset_experiment_ids(&id)
        .await?
        .iter()
        .map(i64::to_string)
        .collect();
    to_json(&if ids.is_empty() {
        json!({})
    } else {
        json!({ "experiment_ids": ids })
    })
}

/// `POST /api/3.0/mlflow/datasets/{dataset_id}/add-experiments`.
pub async fn add_dataset_to_experiments(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    link_experiments(&state, &id, &p, true).await
}

/// `POST /api/3.0/mlflow/datasets/{dataset_id}/remove-experiments`.
pub async fn remove_dataset_from_experiments(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    link_experiments(&state, &id, &p, false).await
}

async fn link_experiments(state: &AppState, id: &str, p: &Params, linked: bool) -> JsonResult {
    let dataset = state
        .store
        .link_dataset_experiments(id, &p.experiment_ids("experiment_ids")?, linked)
        .await?;
    to_json(&json!({ "dataset": dataset.to_json(None) }))
}

/// `POST /api/3.0/mlflow/datasets/{dataset_id}/records`: `records` is a JSON list as text.
pub async fn upsert_records(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    let records = parse_records(&p.req_str("records")?)?;
    let counts = state.store.upsert_dataset_records(&id, &records).await?;
    to_json(&json!({"inserted_count": counts.inserted, "updated_count": counts.updated}))
}

/// `GET /api/3.0/mlflow/datasets/{dataset_id}/records`: a page, as JSON text.
pub async fn get_records(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    let max_results = p.i64("max_results")?.unwrap_or(DEFAULT_RECORDS_PER_PAGE);
    if max_results < 1 {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer"
        ))
        .into());
    }
    let token = p.str("page_token")?.filter(|t| !t.is_empty());
    let (records, next) = state
        .store
        .dataset_records(&id, state.limits.page(max_results), token.as_deref())
        .await?;
    let mut answer = json!({ "records": ctflow_core::pyjson::dumps(&Value::Array(records)) });
    if let Some(next) = next {
        answer["next_page_token"] = json!(next);
    }
    to_json(&answer)
}

/// `DELETE /api/3.0/mlflow/datasets/{dataset_id}/records`.
pub async fn delete_records(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    let ids = p.str_list("dataset_record_ids")?;
    let deleted = state.store.delete_dataset_records(&id, &ids).await?;
    to_json(&json!({ "deleted_count": deleted }))
}
