//! The claim a worker makes on a job before starting it, against a real server on a
//! loopback port over a SQLite file, through the typed client the worker pool uses.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ctflow_client::TrackingClient;
use ctflow_client::ct::JobClaim;
use ctflow_core::pipeline_run::Phase;
use ctflow_server::{AppState, ServerConfig};
use serde_json::json;

mod support;

/// A server whose store (a SQLite file) holds one pipeline run, moved to `phase` at
/// attempt 1.
async fn with_run(phase: Phase) -> (support::Running, TrackingClient, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let config: ServerConfig = support::config(
        format!("sqlite:///{}", dir.path().join("ctflow.db").display()),
        &artifacts,
        ctflow_server::Limits::default(),
    );
    let state = AppState::open(&config).await.unwrap();
    let run = support::pipeline_run_in(&state, json!({"project": {"uri": "."}}), |r| {
        r.phase = phase;
        r.attempt = 1;
    })
    .await;
    let running = support::serve_state(state, artifacts).await;
    let client = TrackingClient::new(&format!("http://{}", running.address), "tester").unwrap();
    (running, client, run, dir)
}

#[tokio::test]
async fn of_workers_handed_the_same_job_as_new_exactly_one_starts_it() {
    let (_running, client, id, _dir) = with_run(Phase::Queued).await;
    let claims = (0..8).map(|worker| {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .claim_job(&id, 1, 1, &format!("host:{worker}"))
                .await
                .unwrap()
        })
    });
    let mut taken = 0;
    for claim in claims {
        match claim.await.unwrap() {
            JobClaim::Taken => taken += 1,
            JobClaim::RunningElsewhere(why) => {
                assert_eq!(why, "attempt 1 is already running on another worker")
            }
            stale @ JobClaim::Stale(_) => panic!("{stale:?}"),
        }
    }
    assert_eq!(taken, 1);
    let described = client.describe_run(&id).await.unwrap();
    assert_eq!(described.pipeline_run.phase, Phase::Running);
    let notes: Vec<&str> = described
        .events
        .iter()
        .filter(|e| e.message.contains("taken by worker"))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
}

#[tokio::test]
async fn a_redelivery_takes_a_running_job_over_and_a_stale_one_is_refused() {
    let (_running, client, id, _dir) = with_run(Phase::Running).await;
    assert_eq!(
        client.claim_job(&id, 1, 1, "host:2").await.unwrap(),
        JobClaim::RunningElsewhere("attempt 1 is already running on another worker".into())
    );
    assert_eq!(
        client.claim_job(&id, 1, 2, "host:2").await.unwrap(),
        JobClaim::Taken
    );
    let described = client.describe_run(&id).await.unwrap();
    assert_eq!(described.pipeline_run.phase, Phase::Running);
    assert!(described.events.iter().any(|e| {
        e.message
            .contains("attempt 1 taken over by worker host:2 (delivery 2)")
    }));
    assert_eq!(
        client.claim_job(&id, 0, 3, "host:3").await.unwrap(),
        JobClaim::Stale("attempt 0 is not the run's current attempt (1)".into())
    );

    let (_running, client, id, _dir) = with_run(Phase::Canceled).await;
    assert_eq!(
        client.claim_job(&id, 1, 2, "host:2").await.unwrap(),
        JobClaim::Stale("the run is Canceled; it no longer waits for a worker".into())
    );
}

#[tokio::test]
async fn a_malformed_claim_is_a_clear_400_and_changes_nothing() {
    let (running, client, id, _dir) = with_run(Phase::Queued).await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/api/ctflow/v1/pipeline-runs/{id}/claim",
        running.address
    );
    for (body, says) in [
        (
            json!({"attempt": 1, "delivered": 1, "worker": " "}),
            "worker must name",
        ),
        (
            json!({"attempt": 1, "delivered": 0, "worker": "w"}),
            "delivered counts",
        ),
        (
            json!({"attempt": 1, "worker": "w"}),
            "missing field `delivered`",
        ),
        (
            json!({"attempt": 1, "delivered": 1, "worker": "w", "x": 1}),
            "unknown field",
        ),
    ] {
        let answer = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{body}");
        let error: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(error["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let missing = format!(
        "http://{}/api/ctflow/v1/pipeline-runs/nope/claim",
        running.address
    );
    let answer = http
        .post(&missing)
        .json(&json!({"attempt": 1, "delivered": 1, "worker": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let error: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(error["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let described = client.describe_run(&id).await.unwrap();
    assert_eq!(described.pipeline_run.phase, Phase::Queued);
}
