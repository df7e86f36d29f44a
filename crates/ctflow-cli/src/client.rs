//! A minimal MLflow REST client for the CLI's commands.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

pub struct TrackingClient {
    base: String,
    http: reqwest::Client,
}

impl TrackingClient {
    pub fn new(tracking_uri: &str) -> Result<Self> {
        let base = tracking_uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("tracking URI '{tracking_uri}' is not an http(s) URL; set --tracking-uri or MLFLOW_TRACKING_URI");
        }
        Ok(TrackingClient { base, http: reqwest::Client::new() })
    }

    async fn handle(&self, endpoint: &str, response: reqwest::Response) -> Result<Value> {
        let status = response.status();
        let text = response.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(if body.is_null() { Value::Object(Default::default()) } else { body });
        }
        match (body.get("error_code"), body.get("message")) {
            (Some(code), Some(message)) => Err(anyhow!(
                "{} {}: {}",
                code.as_str().unwrap_or("ERROR"),
                status.as_u16(),
                message.as_str().unwrap_or_default()
            )),
            _ => Err(anyhow!("{endpoint} failed with HTTP {status}: {text}")),
        }
    }

    pub async fn get(&self, endpoint: &str, query: &[(&str, String)]) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the tracking server at {}: {e}", self.base))?;
        self.handle(endpoint, response).await
    }

    pub async fn post(&self, endpoint: &str, body: &Value) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the tracking server at {}: {e}", self.base))?;
        self.handle(endpoint, response).await
    }
}
