//! The REST API the watcher service records through (data and drift events, the files
//! each trigger has seen, its drift-check runs), driven by the typed client the watcher
//! uses, against a real server on a loopback port.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use ctflow_client::TrackingClient;
use ctflow_client::ct::Recorded;
use ctflow_client::tracking::{MetricPoint, RunStart};
use ctflow_core::entities::KeyValue;
use ctflow_core::trigger::DriftEvent;
use serde_json::json;

mod support;

const PIPELINE: &str = "watched";

async fn with_pipeline() -> (support::Running, TrackingClient) {
    let running = support::start(ctflow_server::Limits::default()).await;
    let client =
        TrackingClient::new(&format!("http://{}", running.address), "ctflow-watcher").unwrap();
    let document = json!({
        "apiVersion": "ctflow.dev/v1alpha1",
        "kind": "TrainingPipeline",
        "metadata": {"name": PIPELINE},
        "spec": {
            "project": {"uri": ".", "envManager": "local"},
            "triggers": [
                {"data": {"path": "incoming/*.csv"}},
                {"drift": {"reference": "ref.csv", "current": "current/*.csv"}},
                {"schedule": {"cron": "0 3 * * *"}},
            ],
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

fn names(files: &[&str]) -> Vec<String> {
    files.iter().map(|f| f.to_string()).collect()
}

fn set(files: &[&str]) -> BTreeSet<String> {
    files.iter().map(|f| f.to_string()).collect()
}

#[tokio::test]
async fn data_events_record_each_file_once() {
    let (_running, client) = with_pipeline().await;
    let pipelines = client.pipelines().await.unwrap();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(
        (pipelines[0].name.as_str(), pipelines[0].base_dir.as_str()),
        (PIPELINE, "/data")
    );
    assert!(client.seen_files(PIPELINE, 0).await.unwrap().is_empty());

    let first = client
        .record_data(
            PIPELINE,
            0,
            &names(&["/data/incoming/a.csv", "/data/incoming/b.csv"]),
        )
        .await
        .unwrap();
    let Some(Recorded::Created(run)) = first else {
        panic!("a new run: {first:?}");
    };
    // Files seen before start nothing; new ones among them start one run of the new ones.
    let again = client
        .record_data(PIPELINE, 0, &names(&["/data/incoming/a.csv"]))
        .await
        .unwrap();
    assert_eq!(again, None);
    let more = client
        .record_data(
            PIPELINE,
            0,
            &names(&["/data/incoming/b.csv", "/data/incoming/c.csv"]),
        )
        .await
        .unwrap();
    assert!(
        matches!(more, Some(Recorded::Created(ref id)) if *id != run),
        "{more:?}"
    );
    assert_eq!(
        client.seen_files(PIPELINE, 0).await.unwrap(),
        set(&[
            "/data/incoming/a.csv",
            "/data/incoming/b.csv",
            "/data/incoming/c.csv"
        ])
    );
    let described = client
        .get_path(&format!("/api/ctflow/v1/pipeline-runs/{run}"), &[])
        .await
        .unwrap();
    assert_eq!(described["pipeline_run"]["trigger"]["kind"], "data");
    assert_eq!(
        described["pipeline_run"]["trigger"]["files"],
        json!(["/data/incoming/a.csv", "/data/incoming/b.csv"])
    );
}

#[tokio::test]
async fn a_drift_event_carries_its_files_and_check_run() {
    let (_running, client) = with_pipeline().await;
    let event = DriftEvent {
        pipeline: PIPELINE.into(),
        trigger_index: 1,
        method: "ks".into(),
        statistic: 0.5,
        threshold: 0.5,
        features: Default::default(),
        rows: 100,
        snapshot: "sha256:0123456789abcdef0123456789abcdef".into(),
        detected_at: 1,
        reference: Some("champion v1 (snapshot 0123)".into()),
    };
    let files = names(&["/data/current/1.csv"]);
    let Recorded::Created(run) = client
        .record_drift(&event, &files, "check-run-1")
        .await
        .unwrap()
    else {
        panic!("a new run");
    };
    // The same snapshot again is the same event.
    assert_eq!(
        client
            .record_drift(&event, &files, "check-run-1")
            .await
            .unwrap(),
        Recorded::Duplicate(run.clone())
    );
    let described = client
        .get_path(&format!("/api/ctflow/v1/pipeline-runs/{run}"), &[])
        .await
        .unwrap();
    let trigger = &described["pipeline_run"]["trigger"];
    assert_eq!(trigger["kind"], "drift");
    assert_eq!(trigger["files"], json!(["/data/current/1.csv"]));
    assert_eq!(trigger["tags"]["drift.check_run"], "check-run-1");

    // Judged files are marked seen on the drift trigger's own set.
    client.mark_seen(PIPELINE, 1, &files).await.unwrap();
    assert_eq!(
        client.seen_files(PIPELINE, 1).await.unwrap(),
        set(&["/data/current/1.csv"])
    );
    assert!(client.seen_files(PIPELINE, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_watch_requests_get_mlflow_errors() {
    let (_running, client) = with_pipeline().await;
    let invalid = |result: Result<_, ctflow_client::ClientError>| match result {
        Err(ctflow_client::ClientError::Api {
            code,
            status,
            message,
        }) => {
            assert_eq!((code.as_str(), status), ("INVALID_PARAMETER_VALUE", 400));
            message
        }
        other => panic!("not a 400: {other:?}"),
    };
    let message = invalid(client.seen_files(PIPELINE, 7).await.map(|_| ()));
    assert!(
        message.contains("no data or drift trigger at index 7"),
        "{message}"
    );
    let message = invalid(client.seen_files(PIPELINE, 2).await.map(|_| ()));
    assert!(
        message.contains("schedule trigger, which watches no files"),
        "{message}"
    );
    let message = invalid(
        client
            .record_data(PIPELINE, 1, &names(&["x"]))
            .await
            .map(|_| ()),
    );
    assert!(message.contains("no data trigger at index 1"), "{message}");
    let message = invalid(client.record_data(PIPELINE, 0, &[]).await.map(|_| ()));
    assert!(message.contains("at least one file"), "{message}");
    let message = invalid(
        client
            .send_path(
                ctflow_client::Method::POST,
                &format!("/api/ctflow/v1/pipelines/{PIPELINE}/triggers/x/seen-files"),
                &json!({"files": []}),
            )
            .await
            .map(|_| ()),
    );
    assert!(message.contains("'x' is not a trigger index"), "{message}");
    let message = invalid(
        client
            .send_path(
                ctflow_client::Method::POST,
                &format!("/api/ctflow/v1/pipelines/{PIPELINE}/data-events"),
                &json!({"trigger_index": 0, "files": "a.csv"}),
            )
            .await
            .map(|_| ()),
    );
    assert!(message.contains("files must be a list"), "{message}");
    match client.seen_files("missing", 0).await {
        Err(e) => assert_eq!(e.code(), Some("RESOURCE_DOES_NOT_EXIST")),
        Ok(files) => panic!("a missing pipeline has no files: {files:?}"),
    }
}

#[tokio::test]
async fn a_service_records_its_own_runs() {
    let (_running, client) = with_pipeline().await;
    let experiment = client.experiment_id("watched-drift").await.unwrap();
    assert_eq!(
        client.experiment_id("watched-drift").await.unwrap(),
        experiment
    );
    let run = client
        .create_run(&RunStart {
            experiment_id: experiment,
            run_name: Some("drift-check-1".into()),
            user_id: None,
            start_time: 5,
            tags: vec![KeyValue::new("ctflow.pipeline", PIPELINE)],
        })
        .await
        .unwrap()
        .info;
    let points: Vec<MetricPoint> = (0..1500)
        .map(|i| MetricPoint {
            key: format!("m{}", i % 3),
            value: if i == 0 { f64::NAN } else { i as f64 },
            timestamp: 5,
            step: i,
        })
        .collect();
    client.log_metrics(&run.run_id, &points).await.unwrap();
    assert!(
        client
            .put_artifact(&run.artifact_uri, "report.json", "{}".into())
            .await
            .unwrap()
    );
    client.end_run(&run.run_id, "FINISHED", 6).await.unwrap();
    let got = client.get_run(&run.run_id).await.unwrap();
    assert_eq!(got.info.status, "FINISHED");
    assert_eq!(got.info.run_name, "drift-check-1");
    assert!(
        got.data
            .tags
            .contains(&KeyValue::new("ctflow.pipeline", PIPELINE))
    );
    let history = client
        .get(
            "metrics/get-history",
            &[
                ("run_id", run.run_id.clone()),
                ("metric_key", "m0".into()),
                ("max_results", "1000".into()),
            ],
        )
        .await
        .unwrap();
    let values = history["metrics"].as_array().unwrap();
    assert_eq!(values.len(), 500);
    assert_eq!(values[0]["value"], "NaN");
}
