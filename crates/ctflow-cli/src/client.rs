//! A minimal MLflow REST client for the CLI's commands.

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

pub struct TrackingClient {
    base: String,
    http: reqwest::Client,
}

impl TrackingClient {
    pub fn new(tracking_uri: &str) -> Result<Self> {
        let base = tracking_uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "tracking URI '{tracking_uri}' is not an http(s) URL; set --tracking-uri or MLFLOW_TRACKING_URI"
            );
        }
        // The ledger records who moved an alias or a stage; until authentication exists
        // the CLI says who it runs as.
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&user) {
            headers.insert("x-ctflow-user", value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()?;
        Ok(TrackingClient { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn handle(&self, endpoint: &str, response: reqwest::Response) -> Result<Value> {
        let status = response.status();
        let text = response.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(if body.is_null() {
                Value::Object(Default::default())
            } else {
                body
            });
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
        self.get_url(
            &format!("{}/api/2.0/mlflow/{endpoint}", self.base),
            endpoint,
            query,
        )
        .await
    }

    /// A GET on any path of the server (for ctflow's own API).
    pub async fn get_path(&self, path: &str) -> Result<Value> {
        self.get_url(&format!("{}{path}", self.base), path, &[])
            .await
    }

    async fn get_url(&self, url: &str, endpoint: &str, query: &[(&str, String)]) -> Result<Value> {
        let response = self
            .http
            .get(url)
            .query(query)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the tracking server at {}: {e}", self.base))?;
        self.handle(endpoint, response).await
    }

    pub async fn post(&self, endpoint: &str, body: &Value) -> Result<Value> {
        self.send(reqwest::Method::POST, endpoint, body).await
    }

    pub async fn delete(&self, endpoint: &str, body: &Value) -> Result<Value> {
        self.send(reqwest::Method::DELETE, endpoint, body).await
    }

    async fn send(&self, method: reqwest::Method, endpoint: &str, body: &Value) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let response = self
            .http
            .request(method, &url)
            .json(body)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the tracking server at {}: {e}", self.base))?;
        self.handle(endpoint, response).await
    }
}
