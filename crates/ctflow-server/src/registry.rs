//! The MLflow model-registry REST API, and ctflow's promotion ledger.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use ctflow_core::entities::KeyValue;
use ctflow_core::filter::{
    parse_model_version_filter, parse_model_version_order_by, parse_registered_model_filter,
    parse_registered_model_order_by,
};
use ctflow_core::registry::{
    MAX_MODEL_VERSIONS_SEARCH_RESULTS, MAX_REGISTERED_MODELS_SEARCH_RESULTS, parse_version,
};
use ctflow_core::validation::validate_max_results;

use crate::limits::Limits;
use ctflow_store::{NewModelVersion, RegistrySearch};
use serde_json::json;

use crate::AppState;
use crate::api::{page, wrap};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;

use crate::api::JsonResult;
use axum::response::IntoResponse;

/// Who is acting, for the ledger: the signed-in user on a server with `--auth`; without
/// it, what the client says in `X-Ctflow-User` (the CLI sends the login name), else
/// `anonymous`.
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(crate::auth::CurrentUser(user)) = parts.extensions.get() {
            return Ok(Actor(user.username.clone()));
        }
        let user = parts
            .headers
            .get("x-ctflow-user")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or("anonymous");
        Ok(Actor(user.chars().take(256).collect()))
    }
}

fn version(p: &Params) -> ApiResult<i64> {
    Ok(parse_version(&p.req_str("version")?)?)
}

fn search(
    p: &Params,
    limits: &Limits,
    default_max: i64,
    max: i64,
    model_versions: bool,
) -> ApiResult<RegistrySearch> {
    let max_results = p.i64("max_results")?.unwrap_or(default_max);
    validate_max_results(max_results, max)?;
    let filter = p.str("filter")?.unwrap_or_default();
    let order_by = p.str_list("order_by")?;
    Ok(RegistrySearch {
        filter: if model_versions {
            parse_model_version_filter(&filter)?
        } else {
            parse_registered_model_filter(&filter)?
        },
        order_by: if model_versions {
            parse_model_version_order_by(&order_by)?
        } else {
            parse_registered_model_order_by(&order_by)?
        },
        max_results: limits.page(max_results),
        page_token: p.str("page_token")?,
    })
}

pub async fn create_registered_model(State(state): State<AppState>, p: Params) -> JsonResult {
    let name = p.req_str("name")?;
    let model = state
        .store
        .create_registered_model(
            &name,
            &p.key_values("tags")?,
            p.str("description")?.as_deref(),
        )
        .await?;
    wrap("registered_model", model)
}

pub async fn get_registered_model(State(state): State<AppState>, p: Params) -> JsonResult {
    wrap(
        "registered_model",
        state
            .store
            .get_registered_model(&p.req_str("name")?)
            .await?,
    )
}

pub async fn rename_registered_model(State(state): State<AppState>, p: Params) -> JsonResult {
    let model = state
        .store
        .rename_registered_model(&p.req_str("name")?, &p.req_str("new_name")?)
        .await?;
    wrap("registered_model", model)
}

pub async fn update_registered_model(State(state): State<AppState>, p: Params) -> JsonResult {
    let description = p.str("description")?.unwrap_or_default();
    wrap(
        "registered_model",
        state
            .store
            .update_registered_model(&p.req_str("name")?, &description)
            .await?,
    )
}

pub async fn delete_registered_model(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_registered_model(&p.req_str("name")?)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn search_registered_models(State(state): State<AppState>, p: Params) -> JsonResult {
    let request = search(
        &p,
        &state.limits,
        100,
        MAX_REGISTERED_MODELS_SEARCH_RESULTS,
        false,
    )?;
    let (models, next) = state.store.search_registered_models(&request).await?;
    page("registered_models", models, next)
}

pub async fn set_registered_model_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    let tag = KeyValue::new(p.req_str("key")?, p.str("value")?.unwrap_or_default());
    state
        .store
        .set_registered_model_tag(&p.req_str("name")?, &tag)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn delete_registered_model_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_registered_model_tag(&p.req_str("name")?, &p.req_str("key")?)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn set_alias(State(state): State<AppState>, actor: Actor, p: Params) -> JsonResult {
    let name = p.req_str("name")?;
    let alias = p.req_str("alias")?;
    state
        .store
        .set_registered_model_alias(&name, &alias, version(&p)?, &actor.0)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn delete_alias(State(state): State<AppState>, actor: Actor, p: Params) -> JsonResult {
    state
        .store
        .delete_registered_model_alias(&p.req_str("name")?, &p.req_str("alias")?, &actor.0)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn get_by_alias(State(state): State<AppState>, p: Params) -> JsonResult {
    let v = state
        .store
        .get_model_version_by_alias(&p.req_str("name")?, &p.req_str("alias")?)
        .await?;
    wrap("model_version", v)
}

pub async fn get_latest_versions(State(state): State<AppState>, p: Params) -> JsonResult {
    let versions = state
        .store
        .get_latest_versions(&p.req_str("name")?, &p.str_list("stages")?)
        .await?;
    page("model_versions", versions, None)
}

pub async fn create_model_version(
    State(state): State<AppState>,
    actor: Actor,
    p: Params,
) -> JsonResult {
    let v = state
        .store
        .create_model_version(NewModelVersion {
            name: p.req_str("name")?,
            source: p.req_str("source")?,
            run_id: p.str("run_id")?,
            model_id: p.str("model_id")?,
            tags: p.key_values("tags")?,
            description: p.str("description")?,
            run_link: p.str("run_link")?,
            user: actor.0,
        })
        .await?;
    wrap("model_version", v)
}

pub async fn get_model_version(State(state): State<AppState>, p: Params) -> JsonResult {
    wrap(
        "model_version",
        state
            .store
            .get_model_version(&p.req_str("name")?, version(&p)?)
            .await?,
    )
}

pub async fn update_model_version(State(state): State<AppState>, p: Params) -> JsonResult {
    let description = p.str("description")?.unwrap_or_default();
    wrap(
        "model_version",
        state
            .store
            .update_model_version(&p.req_str("name")?, version(&p)?, &description)
            .await?,
    )
}

pub async fn delete_model_version(
    State(state): State<AppState>,
    actor: Actor,
    p: Params,
) -> JsonResult {
    state
        .store
        .delete_model_version(&p.req_str("name")?, version(&p)?, &actor.0)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn search_model_versions(State(state): State<AppState>, p: Params) -> JsonResult {
    let request = search(
        &p,
        &state.limits,
        10_000,
        MAX_MODEL_VERSIONS_SEARCH_RESULTS,
        true,
    )?;
    let (versions, next) = state.store.search_model_versions(&request).await?;
    page("model_versions", versions, next)
}

pub async fn set_model_version_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    let tag = KeyValue::new(p.req_str("key")?, p.str("value")?.unwrap_or_default());
    state
        .store
        .set_model_version_tag(&p.req_str("name")?, version(&p)?, &tag)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn delete_model_version_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_model_version_tag(&p.req_str("name")?, version(&p)?, &p.req_str("key")?)
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn transition_stage(
    State(state): State<AppState>,
    actor: Actor,
    p: Params,
) -> JsonResult {
    let v = state
        .store
        .transition_model_version_stage(
            &p.req_str("name")?,
            version(&p)?,
            &p.req_str("stage")?,
            p.bool("archive_existing_versions")?.unwrap_or(false),
            &actor.0,
        )
        .await?;
    wrap("model_version", v)
}

pub async fn get_download_uri(State(state): State<AppState>, p: Params) -> JsonResult {
    let uri = state
        .store
        .get_model_version_download_uri(&p.req_str("name")?, version(&p)?)
        .await?;
    Ok(Json(json!({ "artifact_uri": uri })).into_response())
}

/// `GET /api/ctflow/v1/experiments/run-counts`: active runs per experiment id, for the
/// dashboard's experiment list (MLflow's experiment search has no counts).
pub async fn run_counts(
    State(state): State<AppState>,
    visibility: Option<axum::Extension<crate::auth::Visibility>>,
) -> JsonResult {
    let visibility = crate::auth::Visibility::of_request(&state, visibility)?;
    let counts: serde_json::Map<String, serde_json::Value> = state
        .store
        .run_counts()
        .await?
        .into_iter()
        .filter(|(id, _)| visibility.experiment(&id.to_string()))
        .map(|(id, n)| (id.to_string(), json!(n)))
        .collect();
    Ok(Json(json!({ "counts": counts })).into_response())
}

/// `GET /api/ctflow/v1/models/{name}/history`: the promotion ledger, oldest first.
pub async fn model_history(State(state): State<AppState>, Path(name): Path<String>) -> JsonResult {
    let entries = state.store.registry_ledger(&name).await?;
    Ok(Json(json!({ "name": name, "entries": entries })).into_response())
}
