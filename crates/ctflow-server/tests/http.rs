//! HTTP-level behaviour of the server: MLflow's error shapes, request decoding, and the
//! artifact-path rules that close MLflow's path-traversal CVE family.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ctflow_server::AppState;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod support;

struct TestServer {
    app: Router,
    artifacts: tempfile::TempDir,
}

async fn server() -> TestServer {
    let artifacts = tempfile::tempdir().unwrap();
    let config = support::config(
        "sqlite:///:memory:".into(),
        &artifacts,
        ctflow_server::Limits::default(),
    );
    let state = AppState::open(&config).await.unwrap();
    TestServer {
        app: ctflow_server::router(state),
        artifacts,
    }
}

impl TestServer {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    async fn json(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, bytes) = match body {
            Some(b) => {
                self.send(
                    method,
                    uri,
                    Body::from(b.to_string()),
                    Some("application/json"),
                )
                .await
            }
            None => self.send(method, uri, Body::empty(), None).await,
        };
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn run_id(&self) -> (String, String) {
        let (_, body) = self
            .json(
                Method::POST,
                "/api/2.0/mlflow/runs/create",
                Some(json!({"experiment_id": "0"})),
            )
            .await;
        let info = &body["run"]["info"];
        (
            info["run_id"].as_str().unwrap().to_string(),
            info["artifact_uri"].as_str().unwrap().to_string(),
        )
    }
}

fn assert_error(status: StatusCode, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_routes_and_bad_bodies_use_the_mlflow_error_shape() {
    let s = server().await;
    let (status, body) = s
        .json(Method::GET, "/api/2.0/mlflow/no-such-endpoint", None)
        .await;
    assert_error(status, &body, 404, "ENDPOINT_NOT_FOUND");
    // The watch-event stream needs the CT engine's bus, which `ctflow server` lacks.
    let (status, body) = s.json(Method::GET, "/api/ctflow/v1/events", None).await;
    assert_error(status, &body, 501, "NOT_IMPLEMENTED");
    let (status, bytes) = s
        .send(
            Method::POST,
            "/api/2.0/mlflow/runs/log-metric",
            Body::from("not json"),
            Some("application/json"),
        )
        .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    let (status, bytes) = s
        .send(
            Method::POST,
            "/api/2.0/mlflow/experiments/create",
            Body::from("name=x"),
            Some("text/plain"),
        )
        .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/experiments/create",
            Some(json!({"name": 5})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    let (status, body) = s.json(Method::GET, "/api/2.0/mlflow/runs/get", None).await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    let (status, body) = s
        .json(
            Method::GET,
            "/api/2.0/mlflow/experiments/get?experiment_id=abc",
            None,
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/search",
            Some(json!({"experiment_ids": ["0"], "filter": "metrics.a > 1 OR metrics.b > 1"})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/search",
            Some(json!({"experiment_ids": ["0"], "max_results": 50001})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn requests_decode_like_mlflow() {
    let s = server().await;
    let (status, body) = s
        .json(
            Method::POST,
            "/ajax-api/2.0/mlflow/experiments/create",
            Some(json!({"name": "a b"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .json(
            Method::GET,
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=a+b",
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["experiment"]["name"].as_str()),
        (200, Some("a b"))
    );
    let (run_id, _) = s.run_id().await;
    let (status, _) = s
        .json(Method::POST, "/api/2.0/mlflow/runs/log-metric", Some(json!({"run_uuid": run_id, "key": "k", "value": "NaN", "timestamp": "12", "step": "2"})))
        .await;
    assert_eq!(status, 200);
    let (_, body) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
            None,
        )
        .await;
    assert_eq!(
        body["run"]["data"]["metrics"][0],
        json!({"key": "k", "value": "NaN", "timestamp": 12, "step": 2})
    );
    assert_eq!(body["run"]["outputs"], json!({}));
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/search",
            Some(json!({"experiment_ids": ["1"]})),
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    let (status, _) = s.send(Method::GET, "/health", Body::empty(), None).await;
    assert_eq!(status, 200);
}

/// log-batch reads a well-formed body straight into its typed form and anything else the
/// generic way: both must store the same thing, and refusals keep MLflow's wording.
#[tokio::test]
async fn log_batch_reads_plain_and_protobuf_json_alike() {
    let s = server().await;
    let (plain, _) = s.run_id().await;
    let (protobuf, _) = s.run_id().await;
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/log-batch",
            Some(json!({"run_id": plain, "metrics": [
                {"key": "k", "value": 1.5, "timestamp": 12, "step": 2},
                {"key": "k", "value": 2.5, "timestamp": 13, "step": 3, "model_id": ""}
            ], "params": [{"key": "p", "value": "x"}], "tags": [{"key": "t"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The same batch in protobuf JSON (strings for numbers, a list for the run id).
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/log-batch",
            Some(json!({"run_id": [protobuf], "metrics": [
                {"key": "k", "value": "1.5", "timestamp": "12", "step": "2"},
                {"key": "k", "value": 2.5, "timestamp": 13.0, "step": 3}
            ], "params": [{"key": "p", "value": "x"}], "tags": [{"key": "t", "value": null}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut seen = Vec::new();
    for run in [&plain, &protobuf] {
        let (_, history) = s
            .json(
                Method::GET,
                &format!("/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key=k"),
                None,
            )
            .await;
        let (_, got) = s
            .json(
                Method::GET,
                &format!("/api/2.0/mlflow/runs/get?run_id={run}"),
                None,
            )
            .await;
        let tags: Vec<Value> = got["run"]["data"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["key"] != "mlflow.runName")
            .cloned()
            .collect();
        seen.push((history, got["run"]["data"]["params"].clone(), tags));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[0].0["metrics"],
        json!([
            {"key": "k", "value": 1.5, "timestamp": 12, "step": 2},
            {"key": "k", "value": 2.5, "timestamp": 13, "step": 3}
        ])
    );
    // A metric without its timestamp: named by its place, as MLflow does.
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/log-batch",
            Some(json!({"run_id": plain, "metrics": [
                {"key": "k", "value": 1.0, "timestamp": 1},
                {"key": "k", "value": 1.0}
            ]})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("'metrics[1].timestamp'"),
        "{body}"
    );
    let (status, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/log-batch",
            Some(json!({"metrics": [{"key": "k", "value": 1.0, "timestamp": 1}]})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    assert!(
        body["message"].as_str().unwrap().contains("run_id"),
        "{body}"
    );
}

#[tokio::test]
async fn artifacts_round_trip_through_the_proxy() {
    let s = server().await;
    let (run_id, uri) = s.run_id().await;
    let base = uri.strip_prefix("mlflow-artifacts:/").unwrap();
    let put = format!("/api/2.0/mlflow-artifacts/artifacts/{base}/dir/with%20space+plus.txt");
    let (status, _) = s
        .send(Method::PUT, &put, Body::from("hello"), Some("text/plain"))
        .await;
    assert_eq!(status, 200);
    let (status, bytes) = s.send(Method::GET, &put, Body::empty(), None).await;
    assert_eq!(
        (status.as_u16(), bytes.as_slice()),
        (200, b"hello".as_slice())
    );
    let (_, listing) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow-artifacts/artifacts?path={base}%2Fdir"),
            None,
        )
        .await;
    assert_eq!(
        listing,
        json!({"files": [{"path": "with space+plus.txt", "is_dir": false, "file_size": 5}]})
    );
    let (_, listing) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}"),
            None,
        )
        .await;
    assert_eq!(listing["files"], json!([{"path": "dir", "is_dir": true}]));
    let (_, listing) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=dir"),
            None,
        )
        .await;
    assert_eq!(listing["files"][0]["path"], "dir/with space+plus.txt");
    let (status, body) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{base}/missing.txt"),
            None,
        )
        .await;
    assert_error(status, &body, 404, "RESOURCE_DOES_NOT_EXIST");
    let (_, listing) = s
        .json(
            Method::GET,
            "/api/2.0/mlflow-artifacts/artifacts?path=nothing%2Fhere",
            None,
        )
        .await;
    assert_eq!(listing, json!({}));
}

/// Each path is one of the published MLflow traversal/LFI patterns.
#[tokio::test]
async fn artifact_paths_never_leave_the_root() {
    let s = server().await;
    std::fs::write(s.artifacts.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(
        s.artifacts.path(),
        s.artifacts.path().join("root").join("escape"),
    )
    .unwrap();
    let (run_id, _) = s.run_id().await;
    let downloads = [
        "/api/2.0/mlflow-artifacts/artifacts/../secret.txt",
        "/api/2.0/mlflow-artifacts/artifacts/%2e%2e/secret.txt",
        "/api/2.0/mlflow-artifacts/artifacts/%2E%2E%2Fsecret.txt",
        "/api/2.0/mlflow-artifacts/artifacts/a/..%2f..%2fsecret.txt",
        "/api/2.0/mlflow-artifacts/artifacts/%252e%252e/secret.txt",
        "/api/2.0/mlflow-artifacts/artifacts/%2Fetc%2Fpasswd",
        "/api/2.0/mlflow-artifacts/artifacts/escape/secret.txt",
        "/api/2.0/mlflow-artifacts/artifacts/a%5C..%5C..%5Csecret.txt",
    ];
    for uri in downloads {
        let (status, bytes) = s.send(Method::GET, uri, Body::empty(), None).await;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
        let (status, _) = s.send(Method::PUT, uri, Body::from("x"), None).await;
        assert_eq!(status, 400, "PUT {uri}");
        let (status, _) = s.send(Method::DELETE, uri, Body::empty(), None).await;
        assert_eq!(status, 400, "DELETE {uri}");
    }
    for query in ["..", "..%2F..", "%2Fetc", "escape", "a%2F..%2F..%2F"] {
        let (status, body) = s
            .json(
                Method::GET,
                &format!("/api/2.0/mlflow-artifacts/artifacts?path={query}"),
                None,
            )
            .await;
        assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
        if query != "escape" {
            let (status, body) = s
                .json(
                    Method::GET,
                    &format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={query}"),
                    None,
                )
                .await;
            assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
        }
    }
    assert_eq!(
        std::fs::read_to_string(s.artifacts.path().join("secret.txt")).unwrap(),
        "outside"
    );
}

#[tokio::test]
async fn experiment_artifact_locations_cannot_point_outside() {
    let s = server().await;
    for location in [
        "../outside",
        "mlflow-artifacts:/../x",
        "mlflow-artifacts:/x#/../../etc",
        "mlflow-artifacts:/x?y=../../z",
        "s3://bucket/%2e%2e/x",
        "file:///tmp/%2e%2e/etc",
        "http://host/a/../../b",
    ] {
        let (status, body) = s
            .json(
                Method::POST,
                "/api/2.0/mlflow/experiments/create",
                Some(json!({"name": location, "artifact_location": location})),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    }
    let inside = s.artifacts.path().join("root").join("custom");
    for (name, location) in [
        ("ok1", "mlflow-artifacts:/custom".to_string()),
        ("ok2", "s3://bucket/prefix".into()),
        ("ok3", inside.display().to_string()),
    ] {
        let (status, body) = s
            .json(
                Method::POST,
                "/api/2.0/mlflow/experiments/create",
                Some(json!({"name": name, "artifact_location": location})),
            )
            .await;
        assert_eq!(status, 200, "{location}: {body}");
    }
    // A run under an object-store location lists with a clear error, not a server failure.
    let (_, body) = s
        .json(
            Method::GET,
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ok2",
            None,
        )
        .await;
    let exp = body["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, body) = s
        .json(
            Method::POST,
            "/api/2.0/mlflow/runs/create",
            Some(json!({"experiment_id": exp})),
        )
        .await;
    let run_id = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (status, body) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}"),
            None,
        )
        .await;
    assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    // A local location outside the artifact root is MLflow's to accept (a relative one
    // resolved against the server's working directory), but the server never reads or
    // writes there: its runs' artifacts are not served.
    let cwd = std::env::current_dir().unwrap();
    for (name, location, stored) in [
        ("etc", "file:///etc".to_string(), "file:///etc".to_string()),
        (
            "relative",
            "my_location".to_string(),
            cwd.join("my_location").display().to_string(),
        ),
    ] {
        let (status, body) = s
            .json(
                Method::POST,
                "/api/2.0/mlflow/experiments/create",
                Some(json!({"name": name, "artifact_location": location})),
            )
            .await;
        assert_eq!(status, 200, "{location}: {body}");
        let exp = body["experiment_id"].as_str().unwrap().to_string();
        let (_, body) = s
            .json(
                Method::GET,
                &format!("/api/2.0/mlflow/experiments/get?experiment_id={exp}"),
                None,
            )
            .await;
        assert_eq!(body["experiment"]["artifact_location"], stored.as_str());
        let (_, body) = s
            .json(
                Method::POST,
                "/api/2.0/mlflow/runs/create",
                Some(json!({"experiment_id": exp})),
            )
            .await;
        let run_id = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
        for path in [
            format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}"),
            format!("/get-artifact?run_id={run_id}&path=passwd"),
        ] {
            let (status, body) = s.json(Method::GET, &path, None).await;
            assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
        }
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let s = server().await;
    let (run_id, _) = s.run_id().await;
    let (status, _) = s
        .json(
            Method::GET,
            &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.json(Method::GET, "/api/2.0/mlflow/no-such-endpoint", None)
        .await;
    let (status, bytes) = s.send(Method::GET, "/metrics", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    for line in [
        r#"ctflow_http_requests_total{method="GET",route="/api/2.0/mlflow/runs/get",status="200"} 1"#,
        r#"ctflow_http_requests_total{method="POST",route="/api/2.0/mlflow/runs/create",status="200"} 1"#,
        r#"ctflow_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"ctflow_http_request_duration_seconds_count{method="GET",route="/api/2.0/mlflow/runs/get"} 1"#,
        "ctflow_queue_depth 0",
        r#"ctflow_store_operation_duration_seconds_count{operation="get_run"} 1"#,
        r#"ctflow_store_operation_duration_seconds_count{operation="create_run"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // The run id is in the path's query, never in a label.
    assert!(!text.contains(&run_id));
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary() {
    let s = server().await;
    let app = s.app.clone();
    let response = app
        .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-eval"));
    let page = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains(r#"<script src="/static/app.js">"#));
    for (path, kind) in [
        ("/static/app.js", "text/javascript"),
        ("/static/uplot.min.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/uplot.min.css", "text/css"),
    ] {
        let response = s
            .app
            .clone()
            .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
}

/// Each published MLflow local-file-inclusion exploit, replayed request by request
/// (docs/security.md lists them): every step that would plant a local path is refused,
/// and the file-serving endpoints they ended at do not exist here.
#[tokio::test]
async fn published_mlflow_file_inclusion_exploits_are_refused() {
    let s = server().await;
    let (run_id, _) = s.run_id().await;
    let (status, _) = s
        .json(
            Method::POST,
            "/ajax-api/2.0/mlflow/registered-models/create",
            Some(json!({"name": "poc"})),
        )
        .await;
    assert_eq!(status, 200);
    // CVE-2023-1177 (a version whose source is a local path), CVE-2023-6977 (the
    // `//proc/self/root` spelling that passed `is_local_uri`), CVE-2024-1483 (`file:///etc/`
    // with `#` instead of `?`), and relative and encoded spellings of the same.
    for source in [
        "file:///etc/",
        "/etc/",
        "file://./",
        "//proc/self/root",
        "file:///etc/#",
        "file:///tmp/#/../../etc/",
        "mlflow-artifacts:/0/%2e%2e/%2e%2e/etc",
        "./../../etc",
    ] {
        for body in [
            json!({"name": "poc", "source": source, "run_id": run_id}),
            json!({"name": "poc", "source": source}),
        ] {
            let (status, answer) = s
                .json(
                    Method::POST,
                    "/ajax-api/2.0/mlflow/model-versions/create",
                    Some(body.clone()),
                )
                .await;
            assert_error(status, &answer, 400, "INVALID_PARAMETER_VALUE");
        }
    }
    // CVE-2023-6909, CVE-2024-3848 and CVE-2024-1483: an artifact location that hides a
    // path in a fragment or query.
    for location in [
        "http:///#/../../../../../../../../etc/",
        "http://localhost/#/../../../etc/",
        "file:///tmp#/../../etc",
        "s3://bucket/x?/../../etc",
        "dbfs:/../../etc",
    ] {
        let (status, body) = s
            .json(
                Method::POST,
                "/ajax-api/2.0/mlflow/experiments/create",
                Some(json!({"name": format!("poc {location}"), "artifact_location": location})),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_PARAMETER_VALUE");
    }
    // CVE-2024-8859: MLflow read a `dbfs:/` location from the local disk. Here it is a
    // remote location like any other: listing a run there reads no local file.
    let (status, body) = s
        .json(
            Method::POST,
            "/ajax-api/2.0/mlflow/experiments/create",
            Some(json!({"name": "poc dbfs", "artifact_location": "dbfs:/"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let experiment_id = body["experiment_id"].as_str().unwrap().to_string();
    let (_, body) = s
        .json(
            Method::POST,
            "/ajax-api/2.0/mlflow/runs/create",
            Some(json!({"experiment_id": experiment_id})),
        )
        .await;
    let dbfs_run = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    for path in ["", "etc", "../etc"] {
        let (status, body) = s
            .json(
                Method::GET,
                &format!("/api/2.0/mlflow/artifacts/list?run_id={dbfs_run}&path={path}"),
                None,
            )
            .await;
        assert_ne!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains("passwd"), "{body}");
    }
    // MLflow issue #7166 and CVE-2023-1177 read files through the UI's routes that serve
    // paths; ctflow's check the path first and read only under the artifact root.
    for (uri, expected) in [
        ("/get-artifact?path=../../../../etc/passwd&run_uuid=x", 400),
        (
            "/model-versions/get-artifact?path=../../etc/passwd&name=poc&version=1",
            400,
        ),
        (
            "/model-versions/get-artifact?path=passwd&name=poc&version=1",
            404,
        ),
        (
            &format!("/get-artifact?path=passwd&run_uuid={dbfs_run}"),
            400,
        ),
        ("/ajax-api/2.0/mlflow/get-trace-artifact?request_id=x", 404),
    ] {
        let (status, body) = s.send(Method::GET, uri, Body::empty(), None).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, expected, "{uri}: {body}");
        assert!(!body.contains("root:"), "{body}");
    }
}

/// Any JSON a client may send to the main write and search endpoints gets an answer
/// below 500: the REST decoding turns every wrong shape into MLflow's error JSON.
#[test]
fn any_json_body_gets_a_client_error_or_success() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let s = runtime.block_on(server());
    let (run_id, _) = runtime.block_on(s.run_id());
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        Just(Value::from(run_id.clone())),
        Just(Value::from("NaN")),
    ];
    let json = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "run_id",
                    "experiment_id",
                    "experiment_ids",
                    "metrics",
                    "params",
                    "tags",
                    "key",
                    "value",
                    "timestamp",
                    "step",
                    "name",
                    "filter",
                    "max_results",
                    "order_by",
                    "page_token",
                    "source",
                    "version",
                    "artifact_location",
                ])
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let endpoints = [
        "/api/2.0/mlflow/runs/log-batch",
        "/api/2.0/mlflow/runs/create",
        "/api/2.0/mlflow/runs/search",
        "/api/2.0/mlflow/experiments/create",
        "/api/2.0/mlflow/experiments/search",
        "/api/2.0/mlflow/model-versions/create",
        "/api/2.0/mlflow/logged-models/search",
    ];
    // CTFLOW_FUZZ_CASES runs longer than the suite's 64 cases per endpoint.
    let cases = std::env::var("CTFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        ..Default::default()
    });
    for endpoint in endpoints {
        runner
            .run(&json, |body| {
                let (status, answer) =
                    runtime.block_on(s.json(Method::POST, endpoint, Some(body.clone())));
                prop_assert!(
                    status.as_u16() < 500,
                    "{endpoint} {body} -> {status} {answer}"
                );
                if !status.is_success() {
                    prop_assert!(
                        answer["error_code"].is_string(),
                        "{endpoint} {body} -> {answer}"
                    );
                }
                Ok(())
            })
            .unwrap_or_else(|failure| panic!("{failure}"));
    }
}

/// An OTLP/JSON export of `spans` spans of trace `trace_hex` (the first one the root).
fn otlp_json(trace_hex: &str, spans: u8) -> String {
    let spans: Vec<Value> = (1..=spans)
        .map(|i| {
            let mut span = json!({
                "traceId": trace_hex, "spanId": format!("{i:016x}"), "name": format!("s{i}"),
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
                "status": {"code": 1}
            });
            if i > 1 {
                span["parentSpanId"] = json!(format!("{:016x}", 1));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).to_string()
}

#[tokio::test]
async fn trace_routes_refuse_bad_input_with_mlflows_errors() {
    let s = server().await;
    let export = |body: String, experiment: Option<&str>, content_type: &str| {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/traces")
            .header("content-type", content_type.to_string());
        if let Some(id) = experiment {
            request = request.header("x-mlflow-experiment-id", id);
        }
        let app = s.app.clone();
        async move {
            let response = app
                .oneshot(request.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let trace_hex = "0123456789abcdef0123456789abcdef";
    let (status, body) = export(otlp_json(trace_hex, 1), None, "application/json").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("x-mlflow-experiment-id")
    );
    let (status, _) = export(otlp_json(trace_hex, 1), Some("424242"), "application/json").await;
    assert_eq!(status, 404);
    let (status, body) = export("\u{ff}garbage".into(), Some("0"), "application/x-protobuf").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
    let (status, body) = export(otlp_json(trace_hex, 1), Some("0"), "application/json").await;
    assert_eq!(status, 200, "{body}");

    // The client's report says two spans; one arrived: not whole yet (after MLflow's waits).
    let report = |trace_id: &str, state: &str, time: &str| {
        json!({"trace": {"trace_info": {"trace_id": trace_id,
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}},
            "request_time": time, "execution_duration": "0.100s", "state": state,
            "trace_metadata": {"mlflow.trace.sizeStats": "{\"num_spans\": 2}"}}}})
    };
    let trace_id = format!("tr-{trace_hex}");
    let (status, body) = s
        .json(
            Method::POST,
            "/api/3.0/mlflow/traces",
            Some(report(&trace_id, "OK", "2023-11-14T22:13:20Z")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let get = format!("/api/3.0/mlflow/traces/get?trace_id={trace_id}");
    let (status, body) = s.json(Method::GET, &get, None).await;
    assert_error(status, &body, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not fully exported")
    );
    let (status, body) = s
        .json(Method::GET, &format!("{get}&allow_partial=true"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["trace"]["spans"].as_array().unwrap().len(), 1);

    for (method, uri, payload, code) in [
        (
            "POST",
            "/api/3.0/mlflow/traces",
            json!({}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces",
            report("tr-a/../b", "OK", "2023-11-14T22:13:20Z"),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces",
            report("tr-x", "DONE", "2023-11-14T22:13:20Z"),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces",
            report("tr-x", "OK", "yesterday"),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces/search",
            json!({"locations": [{"mlflow_experiment": {"experiment_id": "0"}}], "max_results": 501}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces/search",
            json!({"locations": [{"mlflow_experiment": {"experiment_id": "0"}}], "filter": "feedback.x = 'y'"}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/traces/delete-traces",
            json!({"experiment_id": "0"}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/traces/delete-traces",
            json!({"experiment_id": "0", "max_timestamp_millis": 1, "request_ids": ["a"]}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "PATCH",
            "/api/2.0/mlflow/traces/tr-missing/tags",
            json!({"key": "k", "value": "v"}),
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces/tr-missing/assessments",
            json!({"assessment": {"assessment_name": "q", "feedback": {"value": 1}}}),
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "POST",
            &format!("/api/3.0/mlflow/traces/{trace_id}/assessments"),
            json!({"assessment": {"assessment_name": "q"}}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces/calculate-filter-correlation",
            json!({"experiment_ids": ["0"], "filter_string1": "invalid.filter = 'x'", "filter_string2": "status = 'OK'"}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces/metrics",
            json!({"experiment_ids": ["0"], "view_type": "SPANS", "metric_name": "trace_count"}),
            "INVALID_PARAMETER_VALUE",
        ),
    ] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = s.json(method, uri, Some(payload)).await;
        let expected = if code == "RESOURCE_DOES_NOT_EXIST" {
            404
        } else {
            400
        };
        assert_error(status, &body, expected, code);
    }
    let (status, body) = s
        .json(Method::GET, "/ajax-api/2.0/mlflow/get-trace-artifact", None)
        .await;
    assert_error(status, &body, 400, "BAD_REQUEST");
}
