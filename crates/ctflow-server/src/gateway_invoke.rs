//! The AI gateway's invocation routes: a chat request to a gateway endpoint goes to the
//! provider of one of the endpoint's models, with that model's secret opened on the server
//! for the call (the caller never holds the provider's key).
//!
//! - `POST /gateway/mlflow/v1/chat/completions`: OpenAI's chat-completions shape, the
//!   endpoint named by `model`. MLflow's judges with a `gateway:/<endpoint>` model call this.
//! - `POST /gateway/<endpoint>/mlflow/invocations`: the same request, the endpoint in the path.
//!
//! ctflow calls providers that speak OpenAI's chat API (see
//! `ctflow_core::gateway_catalog::openai_compatible_base`); the answer is the provider's,
//! unchanged. The endpoint's primary models are tried in order, then its fallbacks, moving
//! on only when a provider is unreachable, rate-limited or failing (429, 5xx).

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_store::{Endpoint, ModelMapping};
use serde_json::{Map, Value};

use crate::AppState;
use crate::api::JsonResult;
use crate::error::ApiResult;

/// How long one provider call may take (judges on long traces answer slowly).
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(300);

/// The client of the gateway's outbound calls (provider calls and the deployments
/// proxy), made once: its connection pool is reused across calls. Each request sets its
/// own time limit.
pub(crate) fn http_client() -> Result<&'static reqwest::Client, MlflowError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().build().map_err(|e| {
        MlflowError::new(
            ErrorCode::InternalError,
            format!("Cannot make an HTTP client: {e}"),
        )
    })?;
    Ok(CLIENT.get_or_init(|| client))
}

fn chat_request(body: &Bytes) -> Result<Map<String, Value>, MlflowError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MlflowError::invalid(format!("Invalid chat payload: not JSON ({e})")))?;
    let Value::Object(request) = value else {
        return Err(MlflowError::invalid(
            "Invalid chat payload: expected a JSON object",
        ));
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err(MlflowError::invalid(
            "Invalid chat payload: 'messages' must be a list of chat messages (ctflow's \
             gateway serves chat endpoints)",
        ));
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(MlflowError::invalid(
            "Streaming responses are not supported by ctflow's gateway; send \"stream\": false",
        ));
    }
    Ok(request)
}

/// `POST /gateway/mlflow/v1/chat/completions`.
pub async fn chat_completions(State(state): State<AppState>, body: Bytes) -> JsonResult {
    let mut request = chat_request(&body)?;
    let endpoint_name = match request.remove("model") {
        Some(Value::String(name)) if !name.is_empty() => name,
        _ => {
            return Err(MlflowError::invalid(
                "Invalid chat payload: 'model' must name a gateway endpoint",
            )
            .into());
        }
    };
    invoke(&state, &endpoint_name, request).await
}

/// `POST /gateway/<endpoint>/mlflow/invocations`.
pub async fn invocations(
    State(state): State<AppState>,
    Path(endpoint_name): Path<String>,
    body: Bytes,
) -> JsonResult {
    let mut request = chat_request(&body)?;
    request.remove("model");
    invoke(&state, &endpoint_name, request).await
}

/// The endpoint's models in the order they are tried: primaries as listed, then
/// fallbacks by their place in line.
fn call_order(endpoint: &Endpoint) -> Vec<&ModelMapping> {
    let mut primaries: Vec<&ModelMapping> = endpoint
        .model_mappings
        .iter()
        .filter(|m| m.linkage_type != "FALLBACK")
        .collect();
    let mut fallbacks: Vec<&ModelMapping> = endpoint
        .model_mappings
        .iter()
        .filter(|m| m.linkage_type == "FALLBACK")
        .collect();
    fallbacks.sort_by_key(|m| m.fallback_order.unwrap_or(i64::MAX));
    primaries.extend(fallbacks);
    primaries
}

/// What one provider call came to.
enum Outcome {
    Answer(Vec<u8>),
    /// Worth trying the next model: unreachable, rate-limited or failing.
    Retry(MlflowError),
}

impl Outcome {
    fn unavailable(message: String) -> Outcome {
        Outcome::Retry(MlflowError::new(ErrorCode::TemporarilyUnavailable, message))
    }
}

async fn invoke(state: &AppState, endpoint_name: &str, request: Map<String, Value>) -> JsonResult {
    let endpoint = state.store.endpoint_by_name(endpoint_name).await?;
    let order = call_order(&endpoint);
    if order.is_empty() {
        return Err(MlflowError::invalid(format!(
            "Gateway endpoint '{endpoint_name}' has no models to call"
        ))
        .into());
    }
    let mut last = None;
    for mapping in order {
        match call_model(state, mapping, request.clone()).await? {
            Outcome::Answer(body) => return Ok(crate::api::json_bytes(body)),
            Outcome::Retry(error) => {
                tracing::warn!(
                    endpoint = endpoint_name,
                    model_definition = %mapping.model_definition.name,
                    provider = %mapping.model_definition.provider,
                    error = %error.message,
                    "gateway model call failed; trying the endpoint's next model"
                );
                last = Some(error);
            }
        }
    }
    Err(last
        .unwrap_or_else(|| MlflowError::new(ErrorCode::TemporarilyUnavailable, "no model"))
        .into())
}

async fn call_model(
    state: &AppState,
    mapping: &ModelMapping,
    mut request: Map<String, Value>,
) -> ApiResult<Outcome> {
    let definition = &mapping.model_definition;
    let secret_id = definition.secret_id.as_deref().ok_or_else(|| {
        MlflowError::invalid(format!(
            "Model definition '{}' has no secret (it was deleted)",
            definition.name
        ))
    })?;
    let secret = state.store.sealed_secret(secret_id).await?;
    let kek = state.secrets.kek().await?;
    let values = ctflow_core::secrets::open(&kek, secret_id, &secret.secret_name, &secret.sealed)?;
    let api_base = secret
        .auth_config
        .as_ref()
        .and_then(|c| c.get("api_base"))
        .and_then(Value::as_str);
    let url = ctflow_core::gateway_catalog::chat_completions_url(&definition.provider, api_base)?;
    request.insert("model".into(), Value::String(definition.model_name.clone()));
    let mut call = http_client()?
        .post(&url)
        .timeout(PROVIDER_TIMEOUT)
        .json(&request);
    if let Some(key) = values.get("api_key").filter(|k| !k.is_empty()) {
        call = call.bearer_auth(key);
    }
    let provider = &definition.provider;
    let response = match call.send().await {
        Ok(response) => response,
        // reqwest's error names the URL, never the headers: the key stays out of it.
        Err(e) => {
            return Ok(Outcome::unavailable(format!(
                "The '{provider}' provider could not be reached: {e}"
            )));
        }
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return Ok(Outcome::unavailable(format!(
                "The '{provider}' provider's answer was cut off: {e}"
            )));
        }
    };
    let detail = || String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned();
    if status.is_success() {
        if serde_json::from_slice::<Value>(&body).is_err() {
            return Ok(Outcome::unavailable(format!(
                "The '{provider}' provider answered something other than JSON"
            )));
        }
        return Ok(Outcome::Answer(body.to_vec()));
    }
    let message = format!(
        "The '{provider}' provider answered {}: {}",
        status.as_u16(),
        detail()
    );
    if status.as_u16() == 429 || status.is_server_error() {
        return Ok(Outcome::unavailable(message));
    }
    Err(MlflowError::invalid(message).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_must_be_chat_and_unstreamed() {
        let ok = Bytes::from_static(br#"{"model": "e", "messages": []}"#);
        assert!(chat_request(&ok).is_ok());
        for bad in [
            &br#"[1]"#[..],
            br#"{"input": "x"}"#,
            br#"{"messages": [], "stream": true}"#,
            b"not json",
        ] {
            assert!(chat_request(&Bytes::from_static(bad)).is_err());
        }
    }
}
