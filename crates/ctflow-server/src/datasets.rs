//! MLflow 3's evaluation datasets API: `/api/3.0/mlflow/datasets/*` (create, get, delete,
//! search, tags, records, experiment links).

use axum::Extension;
use axum::extract::{Path, State};
use ctflow_core::MlflowError;
use ctflow_core::eval_datasets::{parse_dataset_filter, parse_dataset_order_by, parse_records};
use ctflow_core::ids::parse_experiment_id;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::api::{JsonResult, json_bytes};
use crate::auth::Visibility;
use crate::error::ApiResult;
use crate::params::Params;

/// A search's page size when it names none (MLflow's default).
const DEFAULT_DATASETS_PER_PAGE: i64 = 1000;
/// A records page's size when it names none.
const DEFAULT_RECORDS_PER_PAGE: i64 = 1000;

fn body(value: &Value) -> JsonResult {
    serde_json::to_vec(value)
        .map(json_bytes)
        .map_err(crate::api::internal)
}

fn experiment_ids(p: &Params) -> ApiResult<Vec<i64>> {
    p.str_list("experiment_ids")?
        .iter()
        .map(|id| Ok(parse_experiment_id(id)?))
        .collect()
}

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
    let ids = experiment_ids(&p)?;
    let dataset = state
        .store
        .create_dataset(&p.req_str("name")?, tags(&p)?, &ids)
        .await?;
    body(&json!({ "dataset": dataset.to_json(Some(&ids)) }))
}

/// `GET /api/3.0/mlflow/datasets/{dataset_id}`.
pub async fn get_dataset(State(state): State<AppState>, Path(id): Path<String>) -> JsonResult {
    let dataset = state.store.get_dataset(&id).await?;
    body(&json!({ "dataset": dataset.to_json(None) }))
}

/// `DELETE /api/3.0/mlflow/datasets/{dataset_id}`.
pub async fn delete_dataset(State(state): State<AppState>, Path(id): Path<String>) -> JsonResult {
    state.store.delete_dataset(&id).await?;
    body(&json!({}))
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
            &experiment_ids(&p)?,
            &filter,
            &order,
            state.limits.page(max_results),
            token.as_deref(),
        )
        .await?;
    let mut listed = Vec::with_capacity(datasets.len());
    for dataset in datasets {
        if !visibility.is_everything() {
            let linked = state
                .store
                .dataset_experiment_ids(&dataset.dataset_id)
                .await?;
            let readable = !linked.is_empty()
                && linked
                    .iter()
                    .all(|id| visibility.experiment(&id.to_string()));
            if !readable {
                continue;
            }
        }
        listed.push(dataset.to_json(None));
    }
    let mut answer = Map::new();
    if !listed.is_empty() {
        answer.insert("datasets".into(), Value::Array(listed));
    }
    if let Some(next) = next {
        answer.insert("next_page_token".into(), json!(next));
    }
    body(&Value::Object(answer))
}

/// `PATCH /api/3.0/mlflow/datasets/{dataset_id}/tags`: merged into the dataset's tags.
pub async fn set_dataset_tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    state.store.set_dataset_tags(&id, tags(&p)?).await?;
    body(&json!({}))
}

/// `DELETE /api/3.0/mlflow/datasets/{dataset_id}/tags/{key}`.
pub async fn delete_dataset_tag(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> JsonResult {
    state.store.delete_dataset_tag(&id, &key).await?;
    body(&json!({}))
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
    body(&if ids.is_empty() {
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
    let dataset = state
        .store
        .link_dataset_experiments(&id, &experiment_ids(&p)?, true)
        .await?;
    body(&json!({ "dataset": dataset.to_json(None) }))
}

/// `POST /api/3.0/mlflow/datasets/{dataset_id}/remove-experiments`.
pub async fn remove_dataset_from_experiments(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    let dataset = state
        .store
        .link_dataset_experiments(&id, &experiment_ids(&p)?, false)
        .await?;
    body(&json!({ "dataset": dataset.to_json(None) }))
}

/// `POST /api/3.0/mlflow/datasets/{dataset_id}/records`: `records` is a JSON list as text.
pub async fn upsert_records(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    let records = parse_records(&p.req_str("records")?)?;
    let counts = state.store.upsert_dataset_records(&id, &records).await?;
    body(&json!({"inserted_count": counts.inserted, "updated_count": counts.updated}))
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
    let mut answer = json!({ "records": ctflow_store::python_json(&Value::Array(records)) });
    if let Some(next) = next {
        answer["next_page_token"] = json!(next);
    }
    body(&answer)
}

/// `DELETE /api/3.0/mlflow/datasets/{dataset_id}/records`.
pub async fn delete_records(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> JsonResult {
    let ids = p.str_list("dataset_record_ids")?;
    let deleted = state.store.delete_dataset_records(&id, &ids).await?;
    body(&json!({ "deleted_count": deleted }))
}
