//! The feedback API (labels for served predictions) and performance events, driven by
//! the typed client the CLI and the monitor use, against a real server on a loopback port.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ctflow_client::TrackingClient;
use ctflow_client::ct::{FeedbackLabel, FeedbackOutcome, Recorded};
use ctflow_core::monitoring::PerformanceEvent;
use serde_json::{Value, json};

mod support;

const PIPELINE: &str = "served";
const MODEL: &str = "served-model";

async fn started() -> (support::Running, TrackingClient) {
    let running = support::start(ctflow_server::Limits::default()).await;
    let client = TrackingClient::new(&format!("http://{}", running.address), "tester").unwrap();
    client
        .post("registered-models/create", &json!({ "name": MODEL }))
        .await
        .unwrap();
    let document = json!({
        "apiVersion": "ctflow.dev/v1alpha1",
        "kind": "TrainingPipeline",
        "metadata": {"name": PIPELINE},
        "spec": {
            "project": {"uri": ".", "envManager": "local"},
            "model": {"name": MODEL},
            "triggers": [
                {"schedule": {"cron": "0 3 * * *"}},
                {"performance": {"metric": "accuracy", "below": 0.9, "window": "1h", "minLabels": 10}},
            ],
            "promotion": {"serving": {"port": 5001, "log": {"path": "log"}}},
        },
    });
    client
        .send_path(
            ctflow_client::Method::PUT,
            &format!("/api/ctflow/v1/pipelines/{PIPELINE}?base_dir=/data"),
            &document,
        )
        .await
        .unwrap();
    (running, client)
}

fn label(id: &str, row: u32, value: Value) -> FeedbackLabel {
    FeedbackLabel {
        request_id: id.into(),
        row,
        label: value,
    }
}

fn refused<T: std::fmt::Debug>(
    result: Result<T, ctflow_client::ClientError>,
) -> (String, u16, String) {
    match result {
        Err(ctflow_client::ClientError::Api {
            code,
            status,
            message,
        }) => (code, status, message),
        other => panic!("not an MLflow error: {other:?}"),
    }
}

#[tokio::test]
async fn labels_are_stored_once_and_read_back_in_arrival_order() {
    let (_running, client) = started().await;
    let labels = vec![
        label("a", 0, json!(1)),
        label("a", 1, json!("setosa")),
        label("b", 0, json!(true)),
    ];
    assert_eq!(
        client.send_feedback(MODEL, &labels).await.unwrap(),
        FeedbackOutcome {
            stored: 3,
            unchanged: 0,
            replaced: 0
        }
    );
    let fixed = vec![label("a", 0, json!(1)), label("b", 0, json!(false))];
    assert_eq!(
        client.send_feedback(MODEL, &fixed).await.unwrap(),
        FeedbackOutcome {
            stored: 0,
            unchanged: 1,
            replaced: 1
        }
    );
    let read = client.feedback_since(MODEL, 0).await.unwrap();
    let seen: Vec<(&str, u32, &Value)> = read
        .iter()
        .map(|l| (l.request_id.as_str(), l.row, &l.label))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a", 0, &json!(1)),
            ("a", 1, &json!("setosa")),
            ("b", 0, &json!(false))
        ]
    );
    // More than one page: the client follows next_after.
    let many: Vec<FeedbackLabel> = (0..10_000)
        .map(|i| label(&format!("r{i}"), 0, json!(i % 3)))
        .collect();
    assert_eq!(
        client.send_feedback(MODEL, &many).await.unwrap().stored,
        10_000
    );
    assert_eq!(client.feedback_since(MODEL, 0).await.unwrap().len(), 10_003);
    let later = client
        .feedback_since(MODEL, ctflow_core::now_ms() + 60_000)
        .await
        .unwrap();
    assert!(later.is_empty());
}

#[tokio::test]
async fn bad_feedback_gets_mlflow_errors_and_stores_nothing() {
    let (_running, client) = started().await;
    let path = format!("/api/ctflow/v1/models/{MODEL}/feedback");
    let post = |body: Value| {
        let client = client.clone();
        let path = path.clone();
        async move {
            client
                .send_path(ctflow_client::Method::POST, &path, &body)
                .await
        }
    };
    let cases = [
        (json!({}), "labels"),
        (json!({"labels": "x"}), "Invalid feedback"),
        (
            json!({"labels": [{"request_id": "ok", "label": 1}, {"request_id": "has space", "label": 1}]}),
            "labels[1]: request_id",
        ),
        (
            json!({"labels": [{"request_id": "ok", "label": null}]}),
            "labels[0]: a label is",
        ),
        (
            json!({"labels": [{"request_id": "ok", "label": {"a": 1}}]}),
            "labels[0]: a label is",
        ),
        (
            json!({"labels": [{"request_id": "ok", "row": -1, "label": 1}]}),
            "labels[0]: row",
        ),
        (
            json!({"labels": [{"request_id": "ok", "label": 1, "extra": 2}]}),
            "Invalid feedback",
        ),
    ];
    for (body, expected) in cases {
        let (code, status, message) = refused(post(body.clone()).await);
        assert_eq!(
            (code.as_str(), status),
            ("INVALID_PARAMETER_VALUE", 400),
            "{body}"
        );
        assert!(message.contains(expected), "{body}: {message}");
    }
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"request_id": format!("r{i}"), "label": 1}))
        .collect();
    let (_, status, message) = refused(post(json!({ "labels": too_many })).await);
    assert_eq!(status, 400);
    assert!(message.contains("at most 10000 labels"), "{message}");
    assert!(client.feedback_since(MODEL, 0).await.unwrap().is_empty());
    let (code, status, _) = refused(
        client
            .send_feedback("no-such-model", &[label("a", 0, json!(1))])
            .await,
    );
    assert_eq!((code.as_str(), status), ("RESOURCE_DOES_NOT_EXIST", 404));
    let (_, status, _) = refused(client.get_path(&path, &[("max_results", "0".into())]).await);
    assert_eq!(status, 400);
}

fn event(index: usize, value: f64) -> PerformanceEvent {
    PerformanceEvent {
        pipeline: PIPELINE.into(),
        trigger_index: index,
        metric: "accuracy".into(),
        value,
        below: Some(0.9),
        above: None,
        version: "3".into(),
        labels: 12,
        window_ms: 3_600_000,
        detected_at: ctflow_core::now_ms(),
    }
}

#[tokio::test]
async fn a_performance_event_starts_one_run_per_version_and_window() {
    let (_running, client) = started().await;
    let first = client
        .record_performance(&event(1, 0.5), Some("run-1"))
        .await
        .unwrap();
    let Recorded::Created(run) = first else {
        panic!("a new run: {first:?}");
    };
    // Judged again in the same stretch of time: the same run.
    let again = client
        .record_performance(&event(1, 0.4), None)
        .await
        .unwrap();
    assert_eq!(again, Recorded::Duplicate(run.clone()));
    let described = client.describe_run(&run).await.unwrap();
    let trigger = serde_json::to_value(&described.pipeline_run.trigger).unwrap();
    assert_eq!(trigger["kind"], "performance");
    assert_eq!(trigger["tags"]["performance.monitoring_run"], "run-1");
    assert_eq!(trigger["detail"]["value"], 0.5);
    assert_eq!(trigger["detail"]["version"], "3");

    for (bad, expected) in [
        (event(0, 0.5), "no performance trigger at index 0"),
        (event(1, 0.95), "crosses no threshold"),
        (
            PerformanceEvent {
                metric: "auc".into(),
                ..event(1, 0.5)
            },
            "not a live metric",
        ),
    ] {
        let (code, status, message) = refused(client.record_performance(&bad, None).await);
        assert_eq!((code.as_str(), status), ("INVALID_PARAMETER_VALUE", 400));
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn a_pipeline_document_that_does_not_fit_names_its_field() {
    let (_running, client) = started().await;
    let document = json!({
        "apiVersion": "ctflow.dev/v1alpha1",
        "kind": "TrainingPipeline",
        "metadata": {"name": "bad"},
        "spec": {
            "project": {"uri": "."},
            "gates": {"ct": {"metrics": [{"metric": "accuracy", "treshold": 0.9}]}},
        },
    });
    let (code, status, message) = refused(
        client
            .send_path(
                ctflow_client::Method::PUT,
                "/api/ctflow/v1/pipelines/bad?base_dir=/data",
                &document,
            )
            .await,
    );
    assert_eq!((code.as_str(), status), ("INVALID_PARAMETER_VALUE", 400));
    assert!(
        message.starts_with(
            "Invalid pipeline document: spec.gates.ct.metrics[0].treshold: unknown field 'treshold': did you mean 'threshold'?"
        ),
        "{message}"
    );
}
