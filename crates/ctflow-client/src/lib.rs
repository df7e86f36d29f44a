//! A client of ctflow's REST APIs: MLflow's tracking API and ctflow's own
//! `/api/ctflow/v1`, for the services that talk to the server instead of the database
//! (workers, the watcher, the CLI). The untyped calls (`get`, `post`, ...) return the
//! JSON; the typed ones ([`ct`], [`tracking`]) return ctflow-core's entities.
#![forbid(unsafe_code)]

pub mod ct;
pub mod models;
pub mod tracking;

/// The HTTP method of [`TrackingClient::send_path`].
pub use reqwest::Method;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tracking URI '{0}' is not an http(s) URL; set --tracking-uri or MLFLOW_TRACKING_URI")]
    NotHttp(String),
    /// The server did not answer. The message ends with what to do; the cause is its
    /// innermost reason (`Connection refused`), said once.
    #[error(
        "cannot reach the tracking server at {base} ({reason}): is it running? Start one with `ctflow server` (or `ctflow up`), or point --tracking-uri / MLFLOW_TRACKING_URI at yours"
    )]
    Unreachable { base: String, reason: String },
    /// MLflow's error JSON: `error_code`, the HTTP status and `message`.
    #[error("{code} {status}: {message}")]
    Api {
        code: String,
        status: u16,
        message: String,
    },
    #[error("{endpoint} failed with HTTP {status}: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// A success whose body is not what the endpoint answers.
    #[error("unexpected answer from {endpoint}: {message}")]
    Decode { endpoint: String, message: String },
    /// A model URI that names nothing downloadable.
    #[error("{0}")]
    Model(String),
    /// The cause is in the message (and not in the error chain, so it is said once).
    #[error("cannot write {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
}

impl ClientError {
    /// The MLflow error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The `Authorization` header the mlflow client would send, from its environment.
fn authorization_from_env() -> Option<String> {
    use base64::Engine;
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(token) = set("MLFLOW_TRACKING_TOKEN") {
        return Some(format!("Bearer {token}"));
    }
    let username = set("MLFLOW_TRACKING_USERNAME")?;
    let password = set("MLFLOW_TRACKING_PASSWORD").unwrap_or_default();
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    Some(format!("Basic {pair}"))
}

#[derive(Clone)]
pub struct TrackingClient {
    base: String,
    http: reqwest::Client,
}

/// The last cause of an error chain (`Connection refused`, `operation timed out`): the
/// outer layers of a reqwest error repeat the URL and "error sending request".
fn innermost_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    // The OS error's code adds nothing for a person.
    match text.split_once(" (os error") {
        Some((reason, _)) => reason.to_string(),
        None => text,
    }
}

impl TrackingClient {
    /// A client that tells the server who acts (`X-Ctflow-User`, recorded in the
    /// registry ledger when the server does not authenticate) and, like the mlflow
    /// client, signs in with `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME` /
    /// `MLFLOW_TRACKING_PASSWORD` when they are set.
    pub fn new(tracking_uri: &str, user: &str) -> ClientResult<Self> {
        Self::with_authorization(tracking_uri, user, authorization_from_env())
    }

    /// A client that signs in with this bearer token instead of the environment's
    /// credentials.
    pub fn with_token(tracking_uri: &str, user: &str, token: &str) -> ClientResult<Self> {
        Self::with_authorization(tracking_uri, user, Some(format!("Bearer {token}")))
    }

    fn with_authorization(
        tracking_uri: &str,
        user: &str,
        authorization: Option<String>,
    ) -> ClientResult<Self> {
        let base = tracking_uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::NotHttp(tracking_uri.to_string()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(user) {
            headers.insert("x-ctflow-user", value);
        }
        if let Some(value) = authorization
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&value)
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // HTTPS tracking servers: reqwest's rustls needs a process-wide provider; ring
        // is the one ctflow builds with. Installing fails harmlessly when one is there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(ClientError::Build)?;
        Ok(TrackingClient { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            base: self.base.clone(),
            reason: innermost_reason(&error),
        }
    }

    async fn handle(&self, endpoint: &str, response: reqwest::Response) -> ClientResult<Value> {
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(if body.is_null() {
                Value::Object(Default::default())
            } else {
                body
            });
        }
        match (body.get("error_code"), body.get("message")) {
            (Some(code), Some(message)) => Err(ClientError::Api {
                code: code.as_str().unwrap_or("ERROR").to_string(),
                status: status.as_u16(),
                message: message.as_str().unwrap_or_default().to_string(),
            }),
            _ => Err(ClientError::Http {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                body: text,
            }),
        }
    }

    /// A GET on an MLflow endpoint (`runs/get`).
    pub async fn get(&self, endpoint: &str, query: &[(&str, String)]) -> ClientResult<Value> {
        self.get_path(&format!("/api/2.0/mlflow/{endpoint}"), query)
            .await
    }

    /// A GET on any path of the server (ctflow's own API).
    pub async fn get_path(&self, path: &str, query: &[(&str, String)]) -> ClientResult<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.handle(path, response).await
    }

    /// A POST on an MLflow endpoint (`runs/create`).
    pub async fn post(&self, endpoint: &str, body: &Value) -> ClientResult<Value> {
        self.send_path(
            reqwest::Method::POST,
            &format!("/api/2.0/mlflow/{endpoint}"),
            body,
        )
        .await
    }

    pub async fn delete(&self, endpoint: &str, body: &Value) -> ClientResult<Value> {
        self.send_path(
            reqwest::Method::DELETE,
            &format!("/api/2.0/mlflow/{endpoint}"),
            body,
        )
        .await
    }

    /// A request with a JSON body on any path of the server.
    pub async fn send_path(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> ClientResult<Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.handle(path, response).await
    }

    /// Uploads a text file into a run's artifacts through the server's artifact proxy.
    /// Returns false when the run's artifacts are not served by the server.
    pub async fn put_artifact(
        &self,
        artifact_uri: &str,
        path: &str,
        body: String,
    ) -> ClientResult<bool> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Ok(false);
        };
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}",
            self.base,
            root.trim_matches('/')
        );
        let response = self
            .http
            .put(&url)
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.handle(path, response).await.map(|_| true)
    }
}

/// A string field of a JSON object, empty when absent.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}
