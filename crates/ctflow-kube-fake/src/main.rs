//! `ctflow-kube-fake`: serves the FAKE Kubernetes API server on a loopback port for tests
//! that drive the real `ctflow` binary (`KUBECONFIG` points at it), and writes that
//! kubeconfig. Two test hooks beside the API: `PUT /fake/logs/{namespace}/{pod}` sets
//! what a pod's log answers, `GET /fake/requests` lists the requests answered.
//!
//! Usage: ctflow-kube-fake KUBECONFIG_PATH [PORT]

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use ctflow_kube_fake::FakeApiServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(kubeconfig) = args.next() else {
        eprintln!("usage: ctflow-kube-fake KUBECONFIG_PATH [PORT]");
        std::process::exit(2);
    };
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let fake = FakeApiServer::new();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let address = listener.local_addr()?;
    std::fs::write(&kubeconfig, FakeApiServer::kubeconfig(address, "default"))?;
    let hooks = axum::Router::new()
        .route("/fake/logs/{namespace}/{pod}", put(set_log))
        .route("/fake/requests", get(requests))
        .with_state(fake.clone());
    let app = hooks.merge(fake.router());
    println!("fake Kubernetes API server on http://{address}");
    axum::serve(listener, app).await
}

async fn set_log(
    State(fake): State<FakeApiServer>,
    Path((namespace, pod)): Path<(String, String)>,
    body: Bytes,
) -> &'static str {
    fake.set_log(&namespace, &pod, &String::from_utf8_lossy(&body));
    "ok"
}

async fn requests(State(fake): State<FakeApiServer>) -> axum::Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = fake
        .requests()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "method": r.method, "path": r.path, "query": r.query,
                "content_type": r.content_type, "status": r.status,
            })
        })
        .collect();
    axum::Json(serde_json::Value::Array(list))
}
