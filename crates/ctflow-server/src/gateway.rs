//! The AI gateway's secrets API (`/api/3.0/mlflow/gateway/secrets/*`): provider keys
//! sealed with a key derived from the passphrase in `MLFLOW_CRYPTO_KEK_PASSPHRASE`.
//! Without that passphrase the server keeps no secrets (MLflow falls back to a built-in
//! passphrase; a key everyone knows protects nothing). Values are never returned, logged or
//! put in an error message: only their masked forms leave the server.

use std::collections::BTreeMap;

use axum::extract::State;
use ctflow_core::secrets::{Kek, PASSPHRASE_ENV, masked, seal};
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_store::NewSecret;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::AppState;
use crate::api::{JsonResult, page, wrap};
use crate::error::ApiResult;
use crate::params::Params;

/// The key-encryption key, derived on first use (600,000 PBKDF2 rounds: once per process).
#[derive(Debug, Default)]
pub struct SecretKeys {
    kek: OnceCell<Option<Kek>>,
}

impl SecretKeys {
    fn passphrase() -> Option<String> {
        std::env::var(PASSPHRASE_ENV)
            .ok()
            .filter(|p| !p.trim().is_empty())
    }

    /// Whether secrets can be kept.
    pub fn available(&self) -> bool {
        Self::passphrase().is_some()
    }

    pub(crate) async fn kek(&self) -> ApiResult<Kek> {
        let kek = self
            .kek
            .get_or_init(|| async {
                let passphrase = Self::passphrase()?;
                if passphrase.chars().count() < 32 {
                    tracing::warn!(
                        variable = PASSPHRASE_ENV,
                        "the gateway secrets passphrase is shorter than 32 characters"
                    );
                }
                tokio::task::spawn_blocking(move || Kek::derive(&passphrase))
                    .await
                    .ok()
            })
            .await;
        kek.clone().ok_or_else(|| {
            MlflowError::new(
                ErrorCode::InvalidParameterValue,
                format!(
                    "This server keeps no secrets: start it with {PASSPHRASE_ENV} set to a passphrase (32 characters or more)"
                ),
            )
            .into()
        })
    }
}

/// The `secret_value` map: names to string values.
fn secret_value(p: &Params) -> ApiResult<BTreeMap<String, String>> {
    match p.get("secret_value") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                // NB: the value itself stays out of the message.
                _ => Err(MlflowError::invalid(format!(
                    "Invalid value for 'secret_value.{k}': expected a string"
                ))
                .into()),
            })
            .collect(),
        Some(_) => Err(MlflowError::invalid(
            "Invalid value for 'secret_value': expected a map of names to strings",
        )
        .into()),
    }
}

fn auth_config(p: &Params) -> ApiResult<Option<Map<String, Value>>> {
    match p.get("auth_config") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(_) => {
            Err(MlflowError::invalid("Invalid value for 'auth_config': expected a map").into())
        }
    }
}

fn user_name(user: &Option<axum::Extension<crate::auth::CurrentUser>>) -> Option<String> {
    user.as_ref().map(|u| u.0.0.username.clone())
}

/// `POST /api/3.0/mlflow/gateway/secrets/create`.
pub async fn create_secret(
    State(state): State<AppState>,
    user: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let name = p.req_str("secret_name")?;
    let value = secret_value(&p)?;
    let kek = state.secrets.kek().await?;
    let secret_id = format!("s-{}", uuid::Uuid::new_v4().simple());
    let new = NewSecret {
        sealed: seal(&kek, &secret_id, &name, &value)?,
        masked_values: masked(&value),
        secret_id,
        secret_name: name,
        provider: p.str("provider")?.filter(|v| !v.is_empty()),
        auth_config: auth_config(&p)?,
        created_by: user_name(&user),
    };
    wrap("secret", state.store.create_secret(&new).await?)
}

/// `GET /api/3.0/mlflow/gateway/secrets/get`.
pub async fn get_secret(State(state): State<AppState>, p: Params) -> JsonResult {
    wrap(
        "secret",
        state.store.get_secret(&p.req_str("secret_id")?).await?,
    )
}

/// `POST /api/3.0/mlflow/gateway/secrets/update`: a new value (and auth settings).
pub async fn update_secret(
    State(state): State<AppState>,
    user: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let secret_id = p.req_str("secret_id")?;
    let value = secret_value(&p)?;
    let name = state.store.get_secret(&secret_id).await?.secret_name;
    let kek = state.secrets.kek().await?;
    let sealed = seal(&kek, &secret_id, &name, &value)?;
    let info = state
        .store
        .update_secret(
            &secret_id,
            &sealed,
            &masked(&value),
            auth_config(&p)?.as_ref(),
            user_name(&user).as_deref(),
        )
        .await?;
    wrap("secret", info)
}

/// `DELETE /api/3.0/mlflow/gateway/secrets/delete`.
pub async fn delete_secret(State(state): State<AppState>, p: Params) -> JsonResult {
    state.store.delete_secret(&p.req_str("secret_id")?).await?;
    crate::api::empty()
}

/// `GET /api/3.0/mlflow/gateway/secrets/list` (optionally of one `provider`).
pub async fn list_secrets(State(state): State<AppState>, p: Params) -> JsonResult {
    let provider = p.str("provider")?.filter(|v| !v.is_empty());
    page(
        "secrets",
        state.store.list_secrets(provider.as_deref()).await?,
        None,
    )
}

/// `GET /ajax-api/3.0/mlflow/gateway/secrets/config`: whether secrets can be kept.
pub async fn secrets_config(State(state): State<AppState>) -> JsonResult {
    let body = json!({
        "secrets_available": state.secrets.available(),
        "using_default_passphrase": false,
    });
    crate::api::to_json(&body)
}

// ---------------------------------------------------------------- models and endpoints

fn required_text(p: &Params, name: &str) -> ApiResult<String> {
    let value = p.req_str(name)?;
    if value.trim().is_empty() {
        return Err(MlflowError::missing_param(name).into());
    }
    Ok(value)
}

/// `POST /api/3.0/mlflow/gateway/model-definitions/create`.
pub async fn create_model_definition(
    State(state): State<AppState>,
    user: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let definition = state
        .store
        .create_model_definition(
            &required_text(&p, "name")?,
            &required_text(&p, "secret_id")?,
            &required_text(&p, "provider")?,
            &required_text(&p, "model_name")?,
            user_name(&user).as_deref(),
        )
        .await?;
    wrap("model_definition", definition)
}

/// `GET /api/3.0/mlflow/gateway/model-definitions/get`.
pub async fn get_model_definition(State(state): State<AppState>, p: Params) -> JsonResult {
    let id = p.req_str("model_definition_id")?;
    wrap(
        "model_definition",
        state.store.get_model_definition(&id).await?,
    )
}

/// `GET /api/3.0/mlflow/gateway/model-definitions/list`.
pub async fn list_model_definitions(State(state): State<AppState>) -> JsonResult {
    page(
        "model_definitions",
        state.store.list_model_definitions().await?,
        None,
    )
}

/// `POST /api/3.0/mlflow/gateway/model-definitions/update`.
pub async fn update_model_definition(
    State(state): State<AppState>,
    user: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let id = p.req_str("model_definition_id")?;
    let text = |name: &str| -> ApiResult<Option<String>> {
        Ok(p.str(name)?.filter(|v| !v.trim().is_empty()))
    };
    let definition = state
        .store
        .update_model_definition(
            &id,
            text("name")?.as_deref(),
            text("secret_id")?.as_deref(),
            text("provider")?.as_deref(),
            text("model_name")?.as_deref(),
            user_name(&user).as_deref(),
        )
        .await?;
    wrap("model_definition", definition)
}

/// `DELETE /api/3.0/mlflow/gateway/model-definitions/delete`: only one no endpoint uses.
pub async fn delete_model_definition(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_model_definition(&p.req_str("model_definition_id")?)
        .await?;
    crate::api::empty()
}

const LINKAGE_TYPES: &[&str] = &["PRIMARY", "FALLBACK"];
const ROUTING_STRATEGIES: &[&str] = &["REQUEST_BASED_TRAFFIC_SPLIT"];
const FALLBACK_STRATEGIES: &[&str] = &["SEQUENTIAL"];

fn one_of(value: &str, allowed: &[&str], field: &str) -> ApiResult<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(MlflowError::invalid(format!(
            "Invalid {field} '{value}': expected one of {allowed:?}"
        ))
        .into())
    }
}

fn model_config(p: &Params) -> ApiResult<ctflow_store::ModelConfig> {
    let linkage = p.str("linkage_type")?.unwrap_or_else(|| "PRIMARY".into());
    one_of(&linkage, LINKAGE_TYPES, "linkage_type")?;
    let weight = p.f64("weight")?.unwrap_or(1.0);
    if !weight.is_finite() || weight < 0.0 {
        return Err(MlflowError::invalid(format!(
            "Invalid weight {weight}: a model's share of traffic is a number of 0 or more"
        ))
        .into());
    }
    Ok(ctflow_store::ModelConfig {
        model_definition_id: required_text(p, "model_definition_id")?,
        linkage_type: linkage,
        weight,
        fallback_order: p.i64("fallback_order")?,
    })
}

fn endpoint_spec(
    p: &Params,
    user: &Option<axum::Extension<crate::auth::CurrentUser>>,
) -> ApiResult<ctflow_store::EndpointSpec> {
    let configs = match p.get("model_configs") {
        None | Some(Value::Null) => None,
        Some(_) => Some(
            p.objects("model_configs")?
                .iter()
                .map(model_config)
                .collect::<ApiResult<Vec<_>>>()?,
        ),
    };
    let routing = p.str("routing_strategy")?.filter(|v| !v.is_empty());
    if let Some(routing) = &routing {
        one_of(routing, ROUTING_STRATEGIES, "routing_strategy")?;
    }
    let fallback = match p.object("fallback_config")? {
        Some(config) => {
            if let Some(strategy) = config.str("strategy")? {
                one_of(&strategy, FALLBACK_STRATEGIES, "fallback_config.strategy")?;
            }
            if config.i64("max_attempts")?.is_some_and(|n| n < 1) {
                return Err(MlflowError::invalid(
                    "Invalid fallback_config.max_attempts: at least 1",
                )
                .into());
            }
            Some(Value::Object(config.0))
        }
        None => None,
    };
    Ok(ctflow_store::EndpointSpec {
        name: p.str("name")?,
        model_configs: configs,
        routing_strategy: routing,
        fallback_config: fallback,
        usage_tracking: p.bool("usage_tracking")?,
        user: user_name(user),
    })
}

/// `POST /api/3.0/mlflow/gateway/endpoints/create`.
pub async fn create_endpoint(
    State(state): State<AppState>,
    user: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let spec = endpoint_spec(&p, &user)?;
    wrap("endpoint", state.store.create_endpoint(&spec).await?)
}

/// `GET /api/3.0/mlflow/gateway/endpoints/get`.
pub async fn get_endpoint(State(state): State<AppState>, p: Params) -> JsonResult {
    wrap(
        "endpoint",
        state.store.get_endpoint(&p.req_str("endpoint_id")?).await?,
    )
}

/// `GET /api/3.0/mlflow/gateway/endpoints/list`.
pub async fn list_endpoints(State(state): State<AppState>) -> JsonResult {
    page("endpoints", state.store.list_endpoints().await?, None)
}

/// `POST /api/3.0/mlflow/gateway/endpoints/update`.
pub async fn update_endpoint(
    State(state): State<AppState>,
    user: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let id = p.req_str("endpoint_id")?;
    let spec = endpoint_spec(&p, &user)?;
    wrap("endpoint", state.store.update_endpoint(&id, &spec).await?)
}

/// `DELETE /api/3.0/mlflow/gateway/endpoints/delete`.
pub async fn delete_endpoint(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_endpoint(&p.req_str("endpoint_id")?)
        .await?;
    crate::api::empty()
}

/// `POST /api/3.0/mlflow/gateway/endpoints/models/attach`.
pub async fn attach_model(State(state): State<AppState>, p: Params) -> JsonResult {
    let endpoint_id = p.req_str("endpoint_id")?;
    let config = p
        .object("model_config")?
        .ok_or_else(|| MlflowError::missing_param("model_config"))?;
    let mapping = state
        .store
        .attach_model(&endpoint_id, &model_config(&config)?)
        .await?;
    wrap("mapping", mapping)
}

/// `POST /api/3.0/mlflow/gateway/endpoints/models/detach`.
pub async fn detach_model(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .detach_model(
            &p.req_str("endpoint_id")?,
            &p.req_str("model_definition_id")?,
        )
        .await?;
    crate::api::empty()
}

/// `POST /api/3.0/mlflow/gateway/endpoints/bindings/create`.
pub async fn create_binding(State(state): State<AppState>, p: Params) -> JsonResult {
    let binding = state
        .store
        .create_binding(
            &p.req_str("endpoint_id")?,
            &required_text(&p, "resource_type")?,
            &required_text(&p, "resource_id")?,
        )
        .await?;
    wrap("binding", binding)
}

/// `GET /api/3.0/mlflow/gateway/endpoints/bindings/list`.
pub async fn list_bindings(State(state): State<AppState>, p: Params) -> JsonResult {
    let text =
        |name: &str| -> ApiResult<Option<String>> { Ok(p.str(name)?.filter(|v| !v.is_empty())) };
    let bindings = state
        .store
        .list_bindings(
            text("endpoint_id")?.as_deref(),
            text("resource_type")?.as_deref(),
            text("resource_id")?.as_deref(),
        )
        .await?;
    page("bindings", bindings, None)
}

/// `DELETE /api/3.0/mlflow/gateway/endpoints/bindings/delete`.
pub async fn delete_binding(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_binding(
            &p.req_str("endpoint_id")?,
            &p.req_str("resource_type")?,
            &p.req_str("resource_id")?,
        )
        .await?;
    crate::api::empty()
}

/// `GET /ajax-api/3.0/mlflow/gateway/supported-providers`.
pub async fn supported_providers() -> JsonResult {
    let body = json!({ "providers": ctflow_core::gateway_catalog::PROVIDERS });
    crate::api::to_json(&body)
}

/// `GET /ajax-api/3.0/mlflow/gateway/provider-config?provider=`.
pub async fn provider_config(p: Params) -> JsonResult {
    let provider = p
        .str("provider")?
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| MlflowError::invalid("Provider parameter is required"))?;
    crate::api::to_json(&ctflow_core::gateway_catalog::provider_config(&provider))
}

// ---------------------------------------------------------------- the deployments proxy

/// The environment variable naming the deployments server the UI's gateway calls go to.
pub const DEPLOYMENTS_TARGET_ENV: &str = "MLFLOW_DEPLOYMENTS_TARGET";

/// MLflow's rule for what the proxy forwards: `GET api/2.0/endpoints`, `POST
/// gateway/<endpoint>/invocations`. ctflow also keeps the endpoint name to one plain path
/// segment, so the proxy reaches nothing else on the target.
fn check_gateway_path(method: &str, path: Option<&str>) -> ApiResult<String> {
    let path = path.filter(|p| !p.is_empty()).ok_or_else(|| {
        MlflowError::invalid("Deployments proxy request must specify a gateway_path.")
    })?;
    let trimmed = path.trim_matches('/');
    let valid = match method {
        "GET" => trimmed == "api/2.0/endpoints",
        _ => match trimmed.split('/').collect::<Vec<_>>().as_slice() {
            ["gateway", name, "invocations"] => {
                !name.is_empty()
                    && *name != "."
                    && *name != ".."
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            }
            _ => false,
        },
    };
    if valid {
        Ok(trimmed.to_string())
    } else {
        Err(
            MlflowError::invalid(format!("Invalid gateway_path: {path} for method: {method}"))
                .into(),
        )
    }
}

/// `GET|POST /ajax-api/2.0/mlflow/gateway-proxy`: the UI's calls to the deployments server
/// in `MLFLOW_DEPLOYMENTS_TARGET` (an empty endpoint list without one, as MLflow answers).
pub async fn gateway_proxy(method: axum::http::Method, p: Params) -> JsonResult {
    let Some(target) = std::env::var(DEPLOYMENTS_TARGET_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    else {
        return Ok(crate::api::json_bytes(br#"{"endpoints": []}"#.to_vec()));
    };
    let path = check_gateway_path(method.as_str(), p.str("gateway_path")?.as_deref())?;
    let url = format!("{}/{path}", target.trim_end_matches('/'));
    let client = crate::gateway_invoke::http_client()?;
    let request = if method == axum::http::Method::GET {
        client.get(&url)
    } else {
        client
            .post(&url)
            .json(p.get("json_data").unwrap_or(&Value::Null))
    }
    .timeout(std::time::Duration::from_secs(120));
    let unavailable = |e: reqwest::Error| {
        MlflowError::new(
            ErrorCode::TemporarilyUnavailable,
            format!("Deployments proxy request to {DEPLOYMENTS_TARGET_ENV} failed: {e}"),
        )
    };
    let response = request.send().await.map_err(unavailable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unavailable)?;
    if status.is_success() {
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            MlflowError::new(
                ErrorCode::TemporarilyUnavailable,
                format!("The deployments server's answer is not JSON: {e}"),
            )
        })?;
        return Ok(crate::api::json_bytes(body.to_vec()));
    }
    let code = if status.is_client_error() {
        ErrorCode::InvalidParameterValue
    } else {
        ErrorCode::TemporarilyUnavailable
    };
    Err(MlflowError::new(
        code,
        format!(
            "Deployments proxy request failed with error code {}. Error message: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        ),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_forwards_only_mlflows_two_paths() {
        assert!(check_gateway_path("GET", Some("/api/2.0/endpoints/")).is_ok());
        assert!(check_gateway_path("POST", Some("gateway/chat-1/invocations")).is_ok());
        for (method, path) in [
            ("GET", "hello/world"),
            ("POST", "foo/bar"),
            ("POST", "gateway/../invocations"),
            ("POST", "gateway/a?b/invocations"),
            ("POST", "gateway/a/b/invocations"),
        ] {
            assert!(
                check_gateway_path(method, Some(path)).is_err(),
                "{method} {path}"
            );
        }
        assert!(check_gateway_path("POST", None).is_err());
    }
}
