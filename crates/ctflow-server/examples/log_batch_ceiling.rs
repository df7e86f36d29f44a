//! The most a tracking server could do on this machine for the REST benchmark's log-batch
//! scenario: a server that answers the calls the scenario makes (health, create experiment,
//! create run, log-batch) and stores nothing. It reads each request's body whole, as any
//! server must, and then discards it.
//!
//! The benchmark's clients run on the same cores as the server, so their own cost of sending
//! batches caps the rate any server can reach; this measures that cap. It is a measuring
//! tool for `docs/benchmarks.md`, not a server: nothing it is sent is kept.
//!
//! ```text
//! cargo run --release -p ctflow-server --example log_batch_ceiling -- 127.0.0.1:5999
//! python3 ../shared/bench/mlflow_bench.py --url http://127.0.0.1:5999 \
//!     --scenarios log_batch --client-mode process
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};

static RUNS: AtomicU64 = AtomicU64::new(0);

async fn create_experiment(_body: Bytes) -> &'static str {
    r#"{"experiment_id":"1"}"#
}

async fn create_run(_body: Bytes) -> String {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!(r#"{{"run":{{"info":{{"run_id":"{run:032x}","experiment_id":"1"}}}}}}"#)
}

async fn log_batch(body: Bytes) -> &'static str {
    // Reading the body is the part every server pays; keep it observable.
    std::hint::black_box(body.len());
    "{}"
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5999".to_string());
    let api = Router::new()
        .route("/experiments/create", post(create_experiment))
        .route("/runs/create", post(create_run))
        .route("/runs/log-batch", post(log_batch));
    let app = Router::new()
        .route("/health", get(|| async { "OK" }))
        .nest("/api/2.0/mlflow", api);
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await
}
