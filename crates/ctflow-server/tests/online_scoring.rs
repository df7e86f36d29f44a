//! The online scorer's passes when its Python cannot run them: each experiment's pass is
//! reported failed with the reason, and nothing is scored or moved. (A pass that scores
//! runs MLflow's own processors: tests/e2e/test_online_scoring.py, with the real client.)

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ctflow_server::online_scoring::{OnlineScoring, PassOutcome};
use ctflow_store::{Store, StoreOptions};

async fn store_with_a_started_judge(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(StoreOptions {
        backend_store_uri: format!("sqlite:///{}/ctflow.db", dir.path().display()),
        default_artifact_root: "mlflow-artifacts:/".into(),
        max_connections: 2,
        durability: Default::default(),
    })
    .await
    .unwrap();
    let exp: i64 = store
        .create_experiment("judged", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    store
        .register_scorer(
            exp,
            "polite",
            r#"{"instructions_judge_pydantic_data": {"model": "gateway:/judge"}}"#,
        )
        .await
        .unwrap();
    store
        .upsert_online_scoring_config(exp, "polite", 1.0, None)
        .await
        .unwrap();
    store
}

fn scorer(store: Store, python: &str) -> OnlineScoring {
    OnlineScoring {
        store,
        tracking_uri: "http://127.0.0.1:9".into(),
        signer: None,
        holder: "test".into(),
        python: python.into(),
        interval: Duration::from_millis(50),
        pass_timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn a_pass_that_cannot_run_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_a_started_judge(&dir).await;

    let missing = scorer(store.clone(), "/nonexistent/python3").pass().await;
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].0, "1");
    match &missing[0].1 {
        PassOutcome::Failed(why) => {
            assert!(why.contains("cannot start /nonexistent/python3"), "{why}")
        }
        other => panic!("{other:?}"),
    }

    // A program that exits non-zero stands in for a Python without mlflow.
    let failing = scorer(store.clone(), "false").pass().await;
    match &failing[0].1 {
        PassOutcome::Failed(why) => assert!(why.contains("the runner exited with"), "{why}"),
        other => panic!("{other:?}"),
    }
    let tags = store.get_experiment(1).await.unwrap().tags;
    assert!(
        tags.iter()
            .all(|t| !t.key.starts_with("mlflow.latestOnlineScoring"))
    );
}

#[tokio::test]
async fn the_scorer_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_a_started_judge(&dir).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let running =
        tokio::spawn(scorer(store, "false").run(async move { stopped.cancelled().await }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stopped")
        .unwrap();
}

#[tokio::test]
async fn servers_sharing_a_database_take_turns_and_passes_leave_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_a_started_judge(&dir).await;
    // Another server's pass over experiment 1 is under way.
    store
        .acquire_lease("online-scoring/1", "other-server", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("free");
    let busy = scorer(store.clone(), "false").pass().await;
    assert_eq!(busy, vec![("1".to_string(), PassOutcome::Busy)]);
    store
        .release_lease("online-scoring/1", "other-server")
        .await
        .unwrap();

    // Under --auth a pass signs in with a token of its own, gone when the pass ends.
    let user = store
        .create_user("ctflow-services", "x", true)
        .await
        .unwrap();
    let mut signed = scorer(store.clone(), "false");
    signed.signer = Some(user.clone());
    let outcomes = signed.pass().await;
    assert!(
        matches!(outcomes[0].1, PassOutcome::Failed(_)),
        "{outcomes:?}"
    );
    assert!(store.list_tokens(user.id).await.unwrap().is_empty());
    // The lease was handed back: another server may take the next pass at once.
    assert!(
        store
            .acquire_lease("online-scoring/1", "other-server", Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );
}
