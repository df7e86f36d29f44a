//! Helpers of the tests that talk to a server over real loopback sockets: start one,
//! send raw HTTP/1.1, read MLflow's error JSON back.
#![allow(dead_code)]

use std::time::Duration;

use ctflow_server::{AppState, Limits, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Running {
    pub address: std::net::SocketAddr,
    pub artifacts: tempfile::TempDir,
    pub stop: tokio_util::sync::CancellationToken,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start(limits: Limits) -> Running {
    let artifacts = tempfile::tempdir().unwrap();
    let config = config("sqlite:///:memory:".into(), &artifacts, limits);
    start_with(config, artifacts).await
}

/// A server's configuration over `backend_store_uri`, artifacts under `artifacts`.
pub fn config(
    backend_store_uri: String,
    artifacts: &tempfile::TempDir,
    limits: Limits,
) -> ServerConfig {
    ServerConfig {
        backend_store_uri,
        default_artifact_root: None,
        artifacts_destination: artifacts.path().join("root").display().to_string(),
        serve_artifacts: true,
        max_connections: 2,
        durability: Default::default(),
        auth: None,
        limits,
    }
}

/// Serves `config` on a loopback port until `stop` is cancelled.
pub async fn start_with(config: ServerConfig, artifacts: tempfile::TempDir) -> Running {
    let state = AppState::open(&config).await.unwrap();
    serve_state(state, artifacts).await
}

/// Serves an opened state on a loopback port until `stop` is cancelled.
pub async fn serve_state(state: AppState, artifacts: tempfile::TempDir) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let cancelled = stop.clone();
    let served = tokio::spawn(ctflow_server::serve(listener, state, async move {
        cancelled.cancelled().await
    }));
    Running {
        address,
        artifacts,
        stop,
        served,
    }
}

/// A response read to the end of the connection: status and JSON body (Null if none).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    // A chunked body's framing is stripped by taking the outermost JSON object.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => serde_json::from_str(&body[start..=end]).unwrap(),
        _ => Value::Null,
    };
    Answer { status, body }
}

pub async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answered within 10s")
        .unwrap();
    raw
}

/// Bytes sent on a new connection, and all the server sends back until it closes it.
pub async fn raw_exchange(address: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_all(&mut stream).await
}

/// One request on its own connection, closed after the answer.
pub async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> Answer {
    parse_answer(&raw_exchange(address, request).await)
}

pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request signed in with HTTP Basic as the mlflow client sends it.
pub fn signed(method: &str, path: &str, body: Option<&str>, user: &str, password: &str) -> Vec<u8> {
    use base64::Engine;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Basic {credentials}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn get(path_and_query: &str) -> Vec<u8> {
    format!("GET {path_and_query} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
}

pub fn chunked(method: &str, path: &str, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    request
}

pub fn assert_refused(answer: &Answer, status: u16, code: &str, names: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error_code"], code, "{}", answer.body);
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.contains(names), "{message}");
}

pub async fn create_experiment(address: std::net::SocketAddr, name: &str) -> String {
    let answer = exchange(
        address,
        &post(
            "/api/2.0/mlflow/experiments/create",
            &format!(r#"{{"name":"{name}"}}"#),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["experiment_id"].as_str().unwrap().to_string()
}

/// Stores pipeline `p` with `spec` and one manually triggered run of it, changed by
/// `change` (its phase, say) from Pending; returns the run's id.
pub async fn pipeline_run_in(
    state: &AppState,
    spec: Value,
    change: impl FnOnce(&mut ctflow_core::pipeline_run::PipelineRun),
) -> String {
    use ctflow_core::pipeline_run::Phase;
    let document: ctflow_core::pipeline::PipelineDocument =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ctflow.dev/v1alpha1",
            "kind": "TrainingPipeline",
            "metadata": {"name": "p"},
            "spec": spec,
        }))
        .unwrap();
    state
        .store
        .put_pipeline(&document, "api", "/")
        .await
        .unwrap();
    let event = ctflow_core::trigger::TriggerEvent::new("p", "manual", "k".into());
    let ctflow_store::Recorded::Created(run) = state.store.record_trigger(&event).await.unwrap()
    else {
        panic!("a new key records a run")
    };
    state
        .store
        .modify_pipeline_run(&run.id, &[Phase::Pending], change, None)
        .await
        .unwrap()
        .expect("moved");
    run.id
}
