//! MLflow 3's scorer registry: `/api/3.0/mlflow/scorers/{register,list,versions,get,delete}`.

use axum::extract::State;
use ctflow_core::MlflowError;
use ctflow_core::ids::parse_experiment_id;
use serde_json::json;

use crate::AppState;
use crate::api::{JsonResult, page, wrap};
use crate::params::Params;

fn experiment(p: &Params) -> Result<i64, ctflow_core::MlflowError> {
    parse_experiment_id(&p.req_str("experiment_id")?)
}

/// `POST /api/3.0/mlflow/scorers/register`: a new version of the named scorer.
pub async fn register_scorer(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_id = experiment(&p)?;
    let name = p.req_str("name")?;
    let serialized = p.req_str("serialized_scorer")?;
    let version = state
        .store
        .register_scorer(experiment_id, &name, &serialized)
        .await?;
    let body = json!({
        "version": version.scorer_version,
        "scorer_id": version.scorer_id,
        "experiment_id": experiment_id.to_string(),
        "name": version.scorer_name,
        "serialized_scorer": version.serialized_scorer,
        "creation_time": version.creation_time,
    });
    crate::api::to_json(&body)
}

/// `GET /api/3.0/mlflow/scorers/list`: each scorer's latest version.
pub async fn list_scorers(State(state): State<AppState>, p: Params) -> JsonResult {
    let scorers = state.store.list_scorers(experiment(&p)?).await?;
    page("scorers", scorers, None)
}

/// `GET /api/3.0/mlflow/scorers/versions`: every version of one scorer.
pub async fn list_scorer_versions(State(state): State<AppState>, p: Params) -> JsonResult {
    let versions = state
        .store
        .list_scorer_versions(experiment(&p)?, &p.req_str("name")?)
        .await?;
    page("scorers", versions, None)
}

/// `GET /api/3.0/mlflow/scorers/get`: one version (the latest without `version`).
pub async fn get_scorer(State(state): State<AppState>, p: Params) -> JsonResult {
    let scorer = state
        .store
        .get_scorer(experiment(&p)?, &p.req_str("name")?, p.i64("version")?)
        .await?;
    wrap("scorer", scorer)
}

/// `DELETE /api/3.0/mlflow/scorers/delete`: one version, or the whole scorer.
pub async fn delete_scorer(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_scorer(experiment(&p)?, &p.req_str("name")?, p.i64("version")?)
        .await?;
    crate::api::empty()
}

/// `PUT /api/3.0/mlflow/scorers/online-config`: sets (replaces) how a scorer judges the
/// experiment's new traces.
pub async fn upsert_online_config(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_id = experiment(&p)?;
    let name = p.req_str("name")?;
    let sample_rate = p
        .f64("sample_rate")?
        .ok_or_else(|| MlflowError::missing_param("sample_rate"))?;
    let filter_string = p.str("filter_string")?;
    let config = state
        .store
        .upsert_online_scoring_config(experiment_id, &name, sample_rate, filter_string.as_deref())
        .await?;
    wrap("config", config)
}

/// `GET /api/3.0/mlflow/scorers/online-configs?scorer_ids=...`: the configurations of
/// these scorers.
pub async fn online_configs(
    State(state): State<AppState>,
    visible: Option<axum::Extension<crate::auth::Visibility>>,
    p: Params,
) -> JsonResult {
    let visibility = crate::auth::Visibility::of_request(&state, visible)?;
    let scorer_ids = p.str_list("scorer_ids")?;
    if scorer_ids.is_empty() {
        return Err(MlflowError::missing_param("scorer_ids").into());
    }
    let mut configs = state.store.online_scoring_configs(&scorer_ids).await?;
    configs.retain(|config| visibility.experiment(&config.experiment_id));
    crate::api::to_json(&json!({ "configs": configs }))
}
