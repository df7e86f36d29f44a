//! The shadow report endpoint a serving replica posts its running totals to, against a
//! real server on a loopback port, through the typed client the scoring server uses.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ctflow_client::TrackingClient;
use ctflow_core::pipeline_run::Phase;
use ctflow_core::shadow::{ShadowProgress, ShadowTally};
use ctflow_server::{AppState, ServerConfig};
use serde_json::json;

mod support;

fn tally(requests: u64) -> ShadowTally {
    ShadowTally {
        requests,
        rows: requests,
        agreed_rows: requests,
        champion_p99_ms: Some(3.0),
        challenger_p99_ms: Some(4.0),
        ..ShadowTally::default()
    }
}

/// A server whose store holds one pipeline run, moved to `phase`.
async fn with_run(phase: Phase) -> (support::Running, TrackingClient, String) {
    let artifacts = tempfile::tempdir().unwrap();
    let config: ServerConfig = support::config(
        "sqlite:///:memory:".into(),
        &artifacts,
        ctflow_server::Limits::default(),
    );
    let state = AppState::open(&config).await.unwrap();
    let run = support::pipeline_run_in(
        &state,
        json!({
            "project": {"uri": "."},
            "model": {"name": "m"},
            "gates": {"cd": {"shadow": {"requests": 10}}},
        }),
        |r| {
            r.phase = phase;
            r.shadow = Some(ShadowProgress {
                started: 1,
                champion: Some(1),
                ..ShadowProgress::default()
            });
        },
    )
    .await;
    let running = support::serve_state(state, artifacts).await;
    let client = TrackingClient::new(&format!("http://{}", running.address), "tester").unwrap();
    (running, client, run)
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
async fn each_replica_keeps_its_latest_numbers_on_a_shadowing_run() {
    let (_running, client, id) = with_run(Phase::Shadowing).await;
    assert!(
        client
            .record_shadow(&id, "pod-a:1", &tally(4), &[])
            .await
            .unwrap()
    );
    assert!(
        client
            .record_shadow(&id, "pod-b:1", &tally(2), &[])
            .await
            .unwrap()
    );
    assert!(
        client
            .record_shadow(&id, "pod-a:1", &tally(7), &[])
            .await
            .unwrap()
    );
    let described = client.describe_run(&id).await.unwrap();
    let shadow = described.pipeline_run.shadow.expect("recorded");
    assert_eq!(shadow.replicas.len(), 2);
    assert_eq!(shadow.summary().requests, 9);
    assert_eq!(shadow.summary().latency_ratio, Some(4.0 / 3.0));
}

#[tokio::test]
async fn mirrored_rows_are_kept_for_labels_once_each() {
    let (_running, client, id) = with_run(Phase::Shadowing).await;
    let rows = ctflow_core::shadow::prediction_rows("req-7", &json!([0, 1]), &json!([1, 1]));
    for _ in 0..2 {
        assert!(
            client
                .record_shadow(&id, "pod", &tally(1), &rows)
                .await
                .unwrap()
        );
    }
    let too_many: Vec<_> = (0..10_001)
        .map(|i| ctflow_core::shadow::ShadowPrediction {
            request_id: format!("r{i}"),
            row: 0,
            champion: json!(0),
            challenger: json!(0),
        })
        .collect();
    let (code, status, message) =
        refused(client.record_shadow(&id, "pod", &tally(1), &too_many).await);
    assert_eq!((code.as_str(), status), ("INVALID_PARAMETER_VALUE", 400));
    assert!(message.contains("at most 10000 predictions"), "{message}");
}

#[tokio::test]
async fn a_run_that_no_longer_shadows_keeps_nothing_and_says_so() {
    let (_running, client, id) = with_run(Phase::GateFailed).await;
    assert!(
        !client
            .record_shadow(&id, "pod-a:1", &tally(4), &[])
            .await
            .unwrap()
    );
    let described = client.describe_run(&id).await.unwrap();
    assert!(described.pipeline_run.shadow.unwrap().replicas.is_empty());
    let (code, status, _) = refused(
        client
            .record_shadow("0123456789abcdef", "pod", &tally(1), &[])
            .await,
    );
    assert_eq!((code.as_str(), status), ("RESOURCE_DOES_NOT_EXIST", 404));
}

#[tokio::test]
async fn bad_reports_get_mlflow_errors() {
    let (_running, client, id) = with_run(Phase::Shadowing).await;
    let path = format!("/api/ctflow/v1/pipeline-runs/{id}/shadow");
    let cases = [
        (
            json!({"replica": "", "tally": tally(1)}),
            "replica must name",
        ),
        (
            json!({"replica": "a\nb", "tally": tally(1)}),
            "replica must name",
        ),
        (
            json!({"replica": "x".repeat(300), "tally": tally(1)}),
            "replica must name",
        ),
        (
            json!({"replica": "pod", "tally": {"requests": 1, "rows": 1, "agreed_rows": 2, "errors": 0, "dropped": 0}}),
            "agreed_rows (2) cannot exceed rows (1)",
        ),
        (
            json!({"replica": "pod", "tally": {"requests": -1, "rows": 1, "agreed_rows": 0, "errors": 0, "dropped": 0}}),
            "Invalid shadow report",
        ),
        (json!({"replica": "pod"}), "Invalid shadow report"),
        (
            json!({"replica": "pod", "tally": tally(1), "extra": 1}),
            "unknown field",
        ),
    ];
    for (body, expected) in cases {
        let (code, status, message) = refused(
            client
                .send_path(ctflow_client::Method::POST, &path, &body)
                .await,
        );
        assert_eq!(
            (code.as_str(), status),
            ("INVALID_PARAMETER_VALUE", 400),
            "{body}"
        );
        assert!(message.contains(expected), "{message} for {body}");
    }
    // Nothing of that was kept.
    let described = client.describe_run(&id).await.unwrap();
    assert!(described.pipeline_run.shadow.unwrap().replicas.is_empty());
}
