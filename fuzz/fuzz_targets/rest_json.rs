//! The REST API's request decoding, through the whole router over an in-memory SQLite
//! store: the first byte picks an endpoint, the rest is its JSON body (or its query string
//! for a GET). Any input gets an answer below 500, and every refusal carries MLflow's
//! `error_code`. `$RUN` and `$EXP` in the input become a real run and experiment id, so
//! the fuzzer reaches past the "no such run" checks.
#![no_main]

use std::cell::RefCell;
use std::mem::ManuallyDrop;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use ctflow_server::{AppState, Limits, ServerConfig};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/api/2.0/mlflow/runs/log-batch"),
    ("POST", "/api/2.0/mlflow/runs/create"),
    ("POST", "/api/2.0/mlflow/runs/search"),
    ("POST", "/api/2.0/mlflow/runs/update"),
    ("POST", "/api/2.0/mlflow/runs/log-metric"),
    ("POST", "/api/2.0/mlflow/runs/log-parameter"),
    ("POST", "/api/2.0/mlflow/runs/set-tag"),
    ("POST", "/api/2.0/mlflow/runs/log-inputs"),
    ("POST", "/api/2.0/mlflow/experiments/create"),
    ("POST", "/api/2.0/mlflow/experiments/search"),
    ("POST", "/api/2.0/mlflow/registered-models/create"),
    ("POST", "/api/2.0/mlflow/model-versions/create"),
    ("POST", "/api/2.0/mlflow/registered-models/alias"),
    ("POST", "/api/2.0/mlflow/logged-models"),
    ("POST", "/api/2.0/mlflow/logged-models/search"),
    ("GET", "/api/2.0/mlflow/runs/get"),
    ("GET", "/api/2.0/mlflow/metrics/get-history"),
    ("GET", "/api/2.0/mlflow/experiments/get-by-name"),
    ("GET", "/api/2.0/mlflow/registered-models/search"),
    ("GET", "/api/2.0/mlflow/model-versions/search"),
    ("GET", "/api/2.0/mlflow/artifacts/list"),
    ("PUT", "/api/ctflow/v1/pipelines/fuzz"),
    ("POST", "/api/ctflow/v1/pipelines/fuzz/trigger"),
    ("POST", "/api/3.0/mlflow/traces"),
    ("POST", "/api/3.0/mlflow/traces/search"),
    ("POST", "/api/3.0/mlflow/traces/delete-traces"),
    ("POST", "/api/3.0/mlflow/traces/metrics"),
    ("POST", "/api/3.0/mlflow/traces/calculate-filter-correlation"),
    ("GET", "/api/3.0/mlflow/traces/get"),
    ("POST", "/api/2.0/mlflow/traces"),
    ("POST", "/api/2.0/mlflow/traces/link-to-run"),
];

/// A fresh store every this many inputs, so a long run's memory stays bounded.
const INPUTS_PER_STORE: usize = 20_000;

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: Router,
    run_id: String,
    experiment_id: String,
    inputs: usize,
}

impl Harness {
    fn new() -> Harness {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let artifacts = std::env::temp_dir().join(format!("ctflow-fuzz-{}", std::process::id()));
        let state = runtime
            .block_on(AppState::open(&ServerConfig {
                backend_store_uri: "sqlite:///:memory:".into(),
                default_artifact_root: None,
                artifacts_destination: artifacts.display().to_string(),
                serve_artifacts: true,
                max_connections: 1,
                durability: Default::default(),
                auth: None,
                limits: Limits::default(),
            }))
            .expect("an in-memory store");
        let app = ctflow_server::router(state);
        let mut harness = Harness {
            runtime,
            app,
            run_id: String::new(),
            experiment_id: String::new(),
            inputs: 0,
        };
        let (_, created) = harness.send(
            Method::POST,
            "/api/2.0/mlflow/experiments/create",
            br#"{"name":"fuzz"}"#.to_vec(),
        );
        harness.experiment_id = created["experiment_id"].as_str().unwrap_or("0").to_string();
        let body = format!(r#"{{"experiment_id":"{}"}}"#, harness.experiment_id);
        let (_, run) = harness.send(
            Method::POST,
            "/api/2.0/mlflow/runs/create",
            body.into_bytes(),
        );
        harness.run_id = run["run"]["info"]["run_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        harness
    }

    fn send(&self, method: Method, uri: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a request");
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        })
    }
}

thread_local! {
    // Never dropped: at process exit the thread-locals are torn down in no fixed order,
    // and a runtime dropped after tokio's own context is gone makes a background store
    // task's pooled connection panic in its destructor ("requires a Tokio context"): a
    // crash with no input behind it. The process's exit frees everything anyway.
    static HARNESS: ManuallyDrop<RefCell<Option<Harness>>> =
        const { ManuallyDrop::new(RefCell::new(None)) };
}

fn percent_encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'='
            | b'&'
            | b'+'
            | b'%' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let (method, path) = ENDPOINTS[selector as usize % ENDPOINTS.len()];
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|h| h.inputs >= INPUTS_PER_STORE) {
            *cell = Some(Harness::new());
        }
        let Some(harness) = cell.as_mut() else {
            return;
        };
        harness.inputs += 1;
        let text = String::from_utf8_lossy(rest)
            .replace("$RUN", &harness.run_id)
            .replace("$EXP", &harness.experiment_id);
        let method: Method = method.parse().expect("a method");
        let (status, answer) = if method == Method::GET {
            let uri = format!("{path}?{}", percent_encode_query(&text));
            harness.send(method, &uri, Vec::new())
        } else {
            harness.send(method, path, text.into_bytes())
        };
        assert!(status < 500, "{path} {rest:?} -> {status} {answer}");
        if status >= 400 {
            assert!(
                answer["error_code"].is_string(),
                "{path} {rest:?} -> {status} {answer}"
            );
        }
    });
});
