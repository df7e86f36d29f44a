//! The AI gateway's secrets API (`/api/3.0/mlflow/gateway/secrets/*`): provider keys
//! sealed with a key derived from the passphrase in `MLFLOW_CRYPTO_KEK_PASSPHRASE`.
//! Without that passphrase the server keeps no secrets (MLflow falls back to a built-in
//! passphrase; a key everyone knows protects nothing). Values are never returned, logged or
//! put in an error message: only their masked forms leave the server.

use std::collections::BTreeMap;
use std::sync::Arc;

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

    async fn kek(&self) -> ApiResult<Kek> {
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
    let name = state.store.secret_name(&secret_id).await?;
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
    Ok(crate::api::json_bytes(b"{}".to_vec()))
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
    serde_json::to_vec(&body)
        .map(crate::api::json_bytes)
        .map_err(crate::api::internal)
}

/// A shared handle for [`AppState`].
pub fn keys() -> Arc<SecretKeys> {
    Arc::new(SecretKeys::default())
}
