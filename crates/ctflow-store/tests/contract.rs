//! The store contract: one list of behaviours, run against SQLite and against a real
//! PostgreSQL server. Every case gets an empty database.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::future::Future;
use std::pin::Pin;

use ctflow_core::ErrorCode;
use ctflow_core::entities::{Dataset, KeyValue, ModelOutput, ViewType};
use ctflow_core::filter::{
    parse_experiment_filter, parse_experiment_order_by, parse_logged_model_filter,
    parse_run_filter, parse_run_order_by,
};
use ctflow_core::filter::{
    parse_model_version_filter, parse_model_version_order_by, parse_registered_model_filter,
    parse_registered_model_order_by,
};
use ctflow_core::filter::{parse_trace_filter, parse_trace_order_by};
use ctflow_core::pipeline::PipelineDocument;
use ctflow_core::pipeline_run::Phase;
use ctflow_core::traces::{SpanRecord, TraceInfo, TraceState};
use ctflow_core::trigger::TriggerEvent;
use ctflow_store::{Approval, PipelineRunEvent, PromotionStep, Recorded};
use ctflow_store::{
    BatchMetric, DatasetInputRequest, DatasetSummary, Error, ExperimentSearch, LoggedModelSearch,
    NewLoggedModel, NewRun, RunSearch, RunUpdate, Store, StoreOptions,
};
use ctflow_store::{FeedbackOutcome, NewLabel};
use ctflow_store::{NewModelVersion, RegistrySearch};
use ctflow_store::{TraceDeletion, TraceSearch};

type Case = fn(Store) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |s| Box::pin($name(s)))),*]
    };
}

const CASES: &[(&str, Case)] = cases![
    experiments_lifecycle,
    experiment_search,
    runs_lifecycle,
    params_are_immutable,
    batch_limits_and_validation,
    metrics_history_and_latest,
    overlapping_and_retried_batches_read_as_one_history,
    history_pages_seek_to_the_previous_page_end,
    metric_values_round_trip_exactly,
    sampling_follows_step_order,
    run_search_filters,
    run_search_order_and_pages,
    ordered_walks_match_the_full_sort,
    inputs_and_outputs,
    logged_models,
    concurrent_writers_all_commit,
    a_refused_write_in_a_group_costs_only_itself,
    registered_models_lifecycle,
    model_version_sources,
    aliases_stages_and_ledger,
    registry_search,
    concurrent_version_numbers,
    pipelines_and_trigger_dedupe,
    pipeline_runs_move_by_compare_and_set,
    a_decided_move_is_decided_on_the_locked_run,
    promotion_is_all_or_nothing,
    rollback_follows_the_ledger,
    leases_have_one_holder,
    controllers_report_their_presence,
    users_tokens_and_grants,
    feedback_labels_are_idempotent,
    shadow_numbers_are_kept_per_replica_while_shadowing,
    traces_spans_and_assessments,
    online_scoring_configs,
];

fn code(err: Error) -> ErrorCode {
    match err {
        Error::Mlflow(e) => e.code,
        other => panic!("expected an MLflow error, got {other}"),
    }
}

fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> BatchMetric {
    BatchMetric {
        key: key.into(),
        value,
        timestamp,
        step,
        model_id: None,
        dataset_name: None,
        dataset_digest: None,
    }
}

async fn new_run(store: &Store, experiment_id: i64, name: &str) -> String {
    store
        .create_run(NewRun {
            experiment_id,
            user_id: "tester".into(),
            run_name: Some(name.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .info
        .run_id
}

fn run_search(
    experiment_id: i64,
    filter: &str,
    order_by: &[&str],
    max_results: i64,
    page_token: Option<String>,
) -> RunSearch {
    RunSearch {
        experiment_ids: vec![experiment_id],
        filter: parse_run_filter(filter).unwrap(),
        view: ViewType::ActiveOnly,
        max_results,
        order_by: parse_run_order_by(&order_by.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap(),
        page_token,
    }
}

async fn names(store: &Store, search: &RunSearch) -> Vec<String> {
    store
        .search_runs(search)
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|r| r.info.run_name)
        .collect()
}

async fn experiments_lifecycle(store: Store) {
    let default = store.get_experiment(0).await.unwrap();
    assert_eq!(
        (default.name.as_str(), default.artifact_location.as_str()),
        ("Default", "mlflow-artifacts:/0")
    );

    let id = store
        .create_experiment("exp", None, &[KeyValue::new("team", "ml")])
        .await
        .unwrap();
    assert_eq!(id, "1");
    let exp = store.get_experiment_by_name("exp").await.unwrap();
    assert_eq!(exp.artifact_location, "mlflow-artifacts:/1");
    assert_eq!(exp.tags, vec![KeyValue::new("team", "ml")]);
    assert_eq!(
        code(store.create_experiment("exp", None, &[]).await.unwrap_err()),
        ErrorCode::ResourceAlreadyExists
    );
    assert_eq!(
        code(store.get_experiment(99).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        code(store.get_experiment_by_name("nope").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        code(store.create_experiment(" ", None, &[]).await.unwrap_err()),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(
            store
                .create_experiment(&"x".repeat(501), None, &[])
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    store.rename_experiment(1, "renamed").await.unwrap();
    assert_eq!(store.get_experiment(1).await.unwrap().name, "renamed");
    store
        .create_experiment("other", Some("mlflow-artifacts:/custom"), &[])
        .await
        .unwrap();
    assert_eq!(
        code(store.rename_experiment(1, "other").await.unwrap_err()),
        ErrorCode::ResourceAlreadyExists
    );

    store.set_experiment_tag(1, "team", "data").await.unwrap();
    store.set_experiment_tag(1, "k2", "v2").await.unwrap();
    assert_eq!(store.get_experiment(1).await.unwrap().tags.len(), 2);
    store.delete_experiment_tag(1, "k2").await.unwrap();
    assert_eq!(
        code(store.delete_experiment_tag(1, "k2").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        code(
            store
                .set_experiment_tag(1, "v", &"x".repeat(20001))
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    let run = new_run(&store, 1, "r").await;
    store.delete_experiment(1).await.unwrap();
    assert_eq!(
        store.get_experiment(1).await.unwrap().lifecycle_stage,
        "deleted"
    );
    assert_eq!(
        store.get_run(&run).await.unwrap().info.lifecycle_stage,
        "deleted"
    );
    assert_eq!(
        code(
            store
                .create_run(NewRun {
                    experiment_id: 1,
                    ..Default::default()
                })
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(
            store
                .create_experiment("renamed", None, &[])
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceAlreadyExists
    );
    store.restore_experiment(1).await.unwrap();
    assert_eq!(
        store.get_run(&run).await.unwrap().info.lifecycle_stage,
        "active"
    );
    assert_eq!(
        code(store.delete_experiment(0).await.unwrap_err()),
        ErrorCode::InvalidParameterValue
    );
}

async fn experiment_search(store: Store) {
    for name in ["alpha", "beta", "gamma"] {
        store
            .create_experiment(
                name,
                None,
                &[KeyValue::new(
                    "kind",
                    if name == "beta" { "x" } else { "y" },
                )],
            )
            .await
            .unwrap();
    }
    store.delete_experiment(3).await.unwrap();
    let search = |filter: &str, order: &[&str], view, max_results, page_token| ExperimentSearch {
        view,
        filter: parse_experiment_filter(filter).unwrap(),
        order_by: parse_experiment_order_by(
            &order.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        max_results,
        page_token,
    };
    let names = |r: (Vec<ctflow_core::entities::Experiment>, Option<String>)| {
        r.0.into_iter().map(|e| e.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            store
                .search_experiments(&search("", &["name ASC"], ViewType::ActiveOnly, 100, None))
                .await
                .unwrap()
        ),
        ["Default", "alpha", "beta"]
    );
    assert_eq!(
        names(
            store
                .search_experiments(&search("", &[], ViewType::DeletedOnly, 100, None))
                .await
                .unwrap()
        ),
        ["gamma"]
    );
    assert_eq!(
        names(
            store
                .search_experiments(&search(
                    "tags.kind = 'y'",
                    &["name"],
                    ViewType::All,
                    100,
                    None
                ))
                .await
                .unwrap()
        ),
        ["alpha", "gamma"]
    );
    assert_eq!(
        names(
            store
                .search_experiments(&search(
                    "name ILIKE 'AL%'",
                    &[],
                    ViewType::ActiveOnly,
                    100,
                    None
                ))
                .await
                .unwrap()
        ),
        ["alpha"]
    );
    assert_eq!(
        names(
            store
                .search_experiments(&search(
                    "name LIKE 'AL%'",
                    &[],
                    ViewType::ActiveOnly,
                    100,
                    None
                ))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    let (first, token) = store
        .search_experiments(&search("", &["name DESC"], ViewType::All, 2, None))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let token = token.expect("a next page");
    let (second, token) = store
        .search_experiments(&search("", &["name DESC"], ViewType::All, 2, Some(token)))
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "Default"]
    );
    assert!(token.is_none());
}

async fn runs_lifecycle(store: Store) {
    let run = store
        .create_run(NewRun {
            experiment_id: 0,
            user_id: "alice".into(),
            start_time: Some(1000),
            run_name: None,
            tags: vec![KeyValue::new("mlflow.source.name", "train.py")],
        })
        .await
        .unwrap();
    assert_eq!(run.info.run_id.len(), 32);
    assert_eq!(run.info.status, "RUNNING");
    assert_eq!(
        run.info.artifact_uri,
        format!("mlflow-artifacts:/0/{}/artifacts", run.info.run_id)
    );
    assert!(
        run.data
            .tags
            .iter()
            .any(|t| t.key == "mlflow.runName" && t.value == run.info.run_name)
    );
    let id = run.info.run_id;

    let info = store
        .update_run(
            &id,
            RunUpdate {
                status: Some("FINISHED".into()),
                end_time: Some(2000),
                run_name: Some("renamed".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (info.status.as_str(), info.end_time, info.run_name.as_str()),
        ("FINISHED", Some(2000), "renamed")
    );
    store.set_tag(&id, "mlflow.runName", "again").await.unwrap();
    let got = store.get_run(&id).await.unwrap();
    assert_eq!(got.info.run_name, "again");
    assert!(
        got.data
            .tags
            .contains(&KeyValue::new("mlflow.runName", "again"))
    );
    assert_eq!(
        code(
            store
                .update_run(
                    &id,
                    RunUpdate {
                        status: Some("BOGUS".into()),
                        ..Default::default()
                    }
                )
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    store.set_tag(&id, "t", "1").await.unwrap();
    store.set_tag(&id, "t", "2").await.unwrap();
    store.set_tag(&id, "long", &"v".repeat(9000)).await.unwrap();
    let got = store.get_run(&id).await.unwrap();
    assert!(got.data.tags.contains(&KeyValue::new("t", "2")));
    assert_eq!(
        got.data
            .tags
            .iter()
            .find(|t| t.key == "long")
            .unwrap()
            .value
            .len(),
        8000
    );
    store.delete_tag(&id, "t").await.unwrap();
    assert_eq!(
        code(store.delete_tag(&id, "t").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );

    store.delete_run(&id).await.unwrap();
    assert_eq!(
        store.get_run(&id).await.unwrap().info.lifecycle_stage,
        "deleted"
    );
    assert_eq!(
        code(store.set_tag(&id, "x", "y").await.unwrap_err()),
        ErrorCode::InvalidParameterValue
    );
    store.restore_run(&id).await.unwrap();
    store.set_tag(&id, "x", "y").await.unwrap();
    assert_eq!(
        code(store.get_run("0123").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        code(store.delete_run("0123").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );

    let clash = store
        .create_run(NewRun {
            run_name: Some("a".into()),
            tags: vec![KeyValue::new("mlflow.runName", "b")],
            ..Default::default()
        })
        .await;
    assert_eq!(code(clash.unwrap_err()), ErrorCode::InvalidParameterValue);
}

async fn params_are_immutable(store: Store) {
    let id = new_run(&store, 0, "p").await;
    store.log_param(&id, "a", "1").await.unwrap();
    store.log_param(&id, "a", "1").await.unwrap();
    let err = store.log_param(&id, "a", "2").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Changing param values is not allowed"),
        "{err}"
    );
    let err = store
        .log_batch(&id, vec![], vec![KeyValue::new("a", "3")], vec![])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("'old_value': '1', 'new_value': '3'"),
        "{err}"
    );
    let err = store
        .log_batch(
            &id,
            vec![],
            vec![KeyValue::new("d", "1"), KeyValue::new("d", "1")],
            vec![],
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Duplicate parameter keys"),
        "{err}"
    );
    store
        .log_batch(
            &id,
            vec![],
            vec![
                KeyValue::new("a", "1"),
                KeyValue::new("b", "x".repeat(7000)),
            ],
            vec![],
        )
        .await
        .unwrap();
    let run = store.get_run(&id).await.unwrap();
    assert_eq!(run.data.params.len(), 2);
    assert_eq!(
        run.data
            .params
            .iter()
            .find(|p| p.key == "b")
            .unwrap()
            .value
            .len(),
        6000
    );
}

async fn batch_limits_and_validation(store: Store) {
    let id = new_run(&store, 0, "limits").await;
    let many: Vec<BatchMetric> = (0..1001).map(|i| metric("m", i as f64, i, i)).collect();
    assert_eq!(
        code(
            store
                .log_batch(&id, many, vec![], vec![])
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );
    let params: Vec<KeyValue> = (0..101)
        .map(|i| KeyValue::new(format!("p{i}"), "v"))
        .collect();
    assert_eq!(
        code(
            store
                .log_batch(&id, vec![], params, vec![])
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );
    for bad in ["bad key!", "../x", "/abs", "a//b", ""] {
        assert_eq!(
            code(
                store
                    .log_metric(&id, metric(bad, 1.0, 1, 0))
                    .await
                    .unwrap_err()
            ),
            ErrorCode::InvalidParameterValue,
            "{bad}"
        );
    }
    // A failed batch leaves nothing behind.
    let err = store
        .log_batch(
            &id,
            vec![metric("ok", 1.0, 1, 0)],
            vec![KeyValue::new("bad key!", "v")],
            vec![],
        )
        .await;
    assert!(err.is_err());
    assert!(store.get_run(&id).await.unwrap().data.metrics.is_empty());
    let full: Vec<BatchMetric> = (0..1000).map(|i| metric("m", i as f64, i, i)).collect();
    store.log_batch(&id, full, vec![], vec![]).await.unwrap();
    assert_eq!(
        store
            .get_metric_history(&id, "m", None, None)
            .await
            .unwrap()
            .0
            .len(),
        1000
    );
}

async fn metrics_history_and_latest(store: Store) {
    let id = new_run(&store, 0, "metrics").await;
    store
        .log_metric(&id, metric("loss", 3.0, 10, 0))
        .await
        .unwrap();
    store
        .log_metric(&id, metric("loss", 2.0, 20, 1))
        .await
        .unwrap();
    store
        .log_metric(&id, metric("loss", 9.0, 5, 0))
        .await
        .unwrap();
    store
        .log_metric(&id, metric("loss", 2.0, 20, 1))
        .await
        .unwrap(); // exact duplicate: deduplicated
    store
        .log_metric(&id, metric("nan", f64::NAN, 1, 0))
        .await
        .unwrap();
    store
        .log_metric(&id, metric("inf", f64::INFINITY, 1, 0))
        .await
        .unwrap();
    store
        .log_metric(&id, metric("ninf", f64::NEG_INFINITY, 1, 0))
        .await
        .unwrap();
    let run = store.get_run(&id).await.unwrap();
    let latest = |k: &str| {
        run.data
            .metrics
            .iter()
            .find(|m| m.key == k)
            .unwrap()
            .clone()
    };
    assert_eq!((latest("loss").value, latest("loss").step), (2.0, 1));
    assert!(latest("nan").value.is_nan());
    assert_eq!(latest("inf").value, f64::MAX);
    assert_eq!(latest("ninf").value, f64::MIN);

    let (history, token) = store
        .get_metric_history(&id, "loss", None, None)
        .await
        .unwrap();
    assert_eq!(
        history
            .iter()
            .map(|p| (p.timestamp, p.value))
            .collect::<Vec<_>>(),
        [(5, 9.0), (10, 3.0), (20, 2.0)]
    );
    assert!(token.is_none());
    let (page1, token) = store
        .get_metric_history(&id, "loss", Some(2), None)
        .await
        .unwrap();
    assert_eq!(page1.len(), 2);
    let (page2, token2) = store
        .get_metric_history(&id, "loss", Some(2), token.as_deref())
        .await
        .unwrap();
    assert_eq!((page2.len(), token2), (1, None));
    assert_eq!(
        code(
            store
                .get_metric_history("missing", "loss", None, None)
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    assert!(
        store
            .get_metric_history(&id, "none", None, None)
            .await
            .unwrap()
            .0
            .is_empty()
    );

    let steps: Vec<BatchMetric> = (0..100)
        .map(|i| metric("curve", i as f64, 100 + i, i))
        .collect();
    store.log_batch(&id, steps, vec![], vec![]).await.unwrap();
    let sampled = store
        .get_metric_history_bulk_interval(std::slice::from_ref(&id), "curve", None, None, 5)
        .await
        .unwrap();
    // MLflow 3.17's sampling: five NTILE buckets of twenty rows, the first of each, the
    // last row in place of the last pick.
    assert_eq!(
        sampled.iter().map(|(_, p)| p.step).collect::<Vec<_>>(),
        [0, 20, 40, 60, 99]
    );
    let ranged = store
        .get_metric_history_bulk_interval(&[id], "curve", Some(10), Some(12), 320)
        .await
        .unwrap();
    assert_eq!(ranged.len(), 3);
}

/// Points are stored a block per series per write: batches whose steps overlap, a batch
/// sent twice (a client's retry) and points at negative steps must read back as one
/// history without repeats, in MLflow's order, whole, paged and sampled alike.
async fn overlapping_and_retried_batches_read_as_one_history(store: Store) {
    let id = new_run(&store, 0, "blocks").await;
    let batch = |steps: std::ops::Range<i64>, timestamp: i64| -> Vec<BatchMetric> {
        steps
            .map(|step| metric("b", (step as f64) / 7.0, timestamp + step, step))
            .collect()
    };
    let first = batch(0..50, 1000);
    let overlapping = batch(25..75, 2000);
    let negative = batch(-10..-3, 500);
    for points in [&first, &overlapping, &first, &negative, &overlapping] {
        store
            .log_batch(&id, points.clone(), vec![], vec![])
            .await
            .unwrap();
    }
    // What the old point-per-row key kept: each distinct point once.
    let mut expected: Vec<(i64, i64, u64)> = first
        .iter()
        .chain(&overlapping)
        .chain(&negative)
        .map(|m| (m.timestamp, m.step, m.value.to_bits()))
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(expected.len(), 50 + 50 + 7);
    let read = |points: &[ctflow_core::entities::MetricPoint]| -> Vec<(i64, i64, u64)> {
        points
            .iter()
            .map(|p| (p.timestamp, p.step, p.value.to_bits()))
            .collect()
    };
    let (whole, token) = store
        .get_metric_history(&id, "b", None, None)
        .await
        .unwrap();
    assert_eq!((read(&whole), token), (expected.clone(), None));
    let pages = every_history_page(&store, &id, "b", 9).await;
    assert!(pages.iter().all(|page| page.len() <= 9));
    assert_eq!(read(&pages.concat()), expected);
    // Sampling counts each distinct point once, in step order: steps 30..=40 hold 22.
    let sampled = store
        .get_metric_history_bulk_interval(std::slice::from_ref(&id), "b", Some(30), Some(40), 100)
        .await
        .unwrap();
    assert_eq!(sampled.len(), 22);
    let steps: Vec<i64> = sampled.iter().map(|(_, p)| p.step).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    let sampled = store
        .get_metric_history_bulk_interval(&[id], "b", None, None, 4)
        .await
        .unwrap();
    assert_eq!(
        sampled
            .iter()
            .map(|(_, p)| p.step)
            .collect::<Vec<_>>()
            .first(),
        Some(&-10)
    );
    assert_eq!(sampled.last().map(|(_, p)| p.step), Some(74));

    // An ascending series of 300 one-point writes (300 blocks): its pages are read a
    // slice of blocks at a time, and a page longer than one slice takes two.
    let id = new_run(&store, 0, "many-blocks").await;
    for step in 0..300 {
        store
            .log_metric(&id, metric("s", step as f64, 10_000 + step, step))
            .await
            .unwrap();
    }
    let pages = every_history_page(&store, &id, "s", 280).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [280, 20]);
    assert_eq!(
        pages.concat().iter().map(|p| p.step).collect::<Vec<_>>(),
        (0..300).collect::<Vec<i64>>()
    );
}

/// A metric's history read page by page to the end, `max` points a page.
async fn every_history_page(
    store: &Store,
    run_id: &str,
    key: &str,
    max: i64,
) -> Vec<Vec<ctflow_core::entities::MetricPoint>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (page, next) = store
            .get_metric_history(run_id, key, Some(max), token.as_deref())
            .await
            .unwrap();
        pages.push(page);
        match next {
            Some(next) => token = Some(next),
            None => return pages,
        }
    }
}

/// A history page as (step, timestamp, value bits), and the next page's token.
type HistoryPage = (Vec<(i64, i64, u64)>, Option<String>);

async fn history_page(
    store: &Store,
    run: &str,
    max: Option<i64>,
    token: Option<&str>,
) -> HistoryPage {
    let (page, next) = store
        .get_metric_history(run, "m", max, token)
        .await
        .unwrap();
    let points = page
        .iter()
        .map(|p| (p.step, p.timestamp, p.value.to_bits()))
        .collect();
    (points, next)
}

/// Every page of a history, one after the other with `max_results`.
async fn history_pages(store: &Store, run: &str, max: i64) -> Vec<(i64, i64, u64)> {
    let mut points = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (page, next) = history_page(store, run, Some(max), token.as_deref()).await;
        assert!(page.len() as i64 <= max);
        points.extend(page);
        match next {
            Some(next) => token = Some(next),
            None => return points,
        }
    }
}

/// A history whose steps ascend is paged by the key of each page's last point (the token's
/// `after`), not by counting off the points before it: the pages join up exactly, a point
/// logged after the end while paging shows up once at the end, and a token with only an
/// offset (MLflow's) or a series that stops ascending between pages falls back to the
/// offset.
async fn history_pages_seek_to_the_previous_page_end(store: Store) {
    use ctflow_core::page_token;
    let id = new_run(&store, 0, "paging").await;
    let values = [f64::NAN, -2.5, 0.0, -0.0, 1e300, 7.25, f64::MIN_POSITIVE];
    let points: Vec<BatchMetric> = (0..200)
        .map(|i| {
            metric(
                "m",
                values[i as usize % values.len()],
                1_000 + i / 3,
                i * 10,
            )
        })
        .collect();
    store.log_batch(&id, points, vec![], vec![]).await.unwrap();
    let (full, _) = history_page(&store, &id, None, None).await;
    assert_eq!(full.len(), 200);
    for max in [1, 7, 199, 200, 500] {
        assert_eq!(
            history_pages(&store, &id, max).await,
            full,
            "pages of {max}"
        );
    }

    let (first, token) = history_page(&store, &id, Some(7), None).await;
    let token = token.unwrap();
    let start = page_token::decode_start(Some(&token)).unwrap();
    assert_eq!(start.offset, 7);
    let (step, timestamp, _) = first[6];
    assert_eq!(
        start.after.as_deref().map(|key| (key[0], key[1])),
        Some((step, timestamp))
    );
    // MLflow's token, an offset alone, finds the same page.
    let mlflow_token = page_token::encode(7);
    let (by_offset, _) = history_page(&store, &id, Some(7), Some(&mlflow_token)).await;
    assert_eq!(by_offset, full[7..14]);

    // A point logged past the end while paging: the next page starts where the last ended.
    store
        .log_metric(&id, metric("m", 4.0, 5_000, 5_000))
        .await
        .unwrap();
    let (second, _) = history_page(&store, &id, Some(7), Some(&token)).await;
    assert_eq!(second, full[7..14]);

    // A point logged out of order: the series is sorted when read, and a token with a key
    // counts off its offset in that order.
    store
        .log_metric(&id, metric("m", 3.0, 1, 15))
        .await
        .unwrap();
    let (now, _) = history_page(&store, &id, None, None).await;
    assert_eq!(now.len(), 202);
    assert_eq!(now[0], (15, 1, 3.0f64.to_bits()));
    let (third, _) = history_page(&store, &id, Some(7), Some(&token)).await;
    assert_eq!(third, now[7..14]);
    assert_eq!(history_pages(&store, &id, 7).await, now);
}

/// The points are kept in history order (timestamp first); sampling numbers them in step
/// order. A point logged late with an early timestamp sorts differently in the two.
async fn sampling_follows_step_order(store: Store) {
    let id = new_run(&store, 0, "sampling").await;
    let mut points: Vec<BatchMetric> = (0..23)
        .map(|step| metric("curve", step as f64 / 10.0, 100 + step, step))
        .collect();
    points.push(metric("curve", -7.5, 1, 5));
    store.log_batch(&id, points, vec![], vec![]).await.unwrap();
    // 24 rows in five NTILE buckets (5, 5, 5, 5, 4): starts at rows 0, 5, 10, 15, 20 of
    // the step order, the last row (step 22) in place of the last start.
    let sampled = store
        .get_metric_history_bulk_interval(std::slice::from_ref(&id), "curve", None, None, 5)
        .await
        .unwrap();
    assert_eq!(
        sampled
            .iter()
            .map(|(_, p)| (p.step, p.timestamp, p.value))
            .collect::<Vec<_>>(),
        [
            (0, 100, 0.0),
            (5, 1, -7.5),
            (9, 109, 0.9),
            (14, 114, 1.4),
            (22, 122, 2.2)
        ]
    );
    // The history itself stays in timestamp order.
    let (history, _) = store
        .get_metric_history(&id, "curve", None, None)
        .await
        .unwrap();
    assert_eq!((history[0].step, history[0].timestamp), (5, 1));
    assert_eq!(history.len(), 24);
    // Fewer rows than buckets: all of them; an empty range: none.
    let all = store
        .get_metric_history_bulk_interval(std::slice::from_ref(&id), "curve", Some(3), Some(6), 320)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|(_, p)| p.step).collect::<Vec<_>>(),
        [3, 4, 5, 5, 6]
    );
    let none = store
        .get_metric_history_bulk_interval(std::slice::from_ref(&id), "curve", Some(500), None, 320)
        .await
        .unwrap();
    assert!(none.is_empty());
    // One bucket: the last row alone, as MLflow answers.
    let one = store
        .get_metric_history_bulk_interval(std::slice::from_ref(&id), "curve", None, None, 1)
        .await
        .unwrap();
    assert_eq!(one.iter().map(|(_, p)| p.step).collect::<Vec<_>>(), [22]);

    // Every step once, in order: the picks come from the count alone (same buckets as above).
    let dense: Vec<BatchMetric> = (0..24)
        .map(|step| metric("dense", step as f64 / 10.0, 100 + step, step))
        .collect();
    // A step missing: the steps are read.
    let gapped: Vec<BatchMetric> = (0..11)
        .filter(|step| *step != 4)
        .map(|step| metric("gapped", step as f64, 100 + step, step))
        .collect();
    store
        .log_batch(&id, [dense, gapped].concat(), vec![], vec![])
        .await
        .unwrap();
    assert_eq!(
        sample_of(&store, &id, "dense", None, None, 5).await,
        [
            (0, 100, 0.0),
            (5, 105, 0.5),
            (10, 110, 1.0),
            (15, 115, 1.5),
            (23, 123, 2.3)
        ]
    );
    // Seven rows (steps 3 to 9) in three buckets (3, 2, 2): rows 0 and 3, then the last.
    let steps = |points: Vec<(i64, i64, f64)>| points.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(
        steps(sample_of(&store, &id, "dense", Some(3), Some(9), 3).await),
        [3, 6, 9]
    );
    assert_eq!(
        steps(sample_of(&store, &id, "dense", Some(3), Some(9), 320).await),
        [3, 4, 5, 6, 7, 8, 9]
    );
    // Ten rows in three buckets (4, 3, 3): rows 0 and 4 (step 5), then the last.
    assert_eq!(
        steps(sample_of(&store, &id, "gapped", None, None, 3).await),
        [0, 5, 10]
    );
}

async fn sample_of(
    store: &Store,
    id: &str,
    key: &str,
    start: Option<i64>,
    end: Option<i64>,
    buckets: i64,
) -> Vec<(i64, i64, f64)> {
    store
        .get_metric_history_bulk_interval(&[id.to_string()], key, start, end, buckets)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, p)| (p.step, p.timestamp, p.value))
        .collect()
}

async fn metric_values_round_trip_exactly(store: Store) {
    let id = new_run(&store, 0, "exact").await;
    let mut values = vec![
        0.1,
        1.0 / 3.0,
        -0.0,
        5e-324,
        1e-300,
        1.7976931348623157e308,
        -2.5e-8,
        123_456_789.123_456_78,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while values.len() < 3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            values.push(f);
        }
    }
    for (chunk_index, chunk) in values.chunks(1000).enumerate() {
        let metrics = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| metric("exact", *v, (chunk_index * 1000 + i) as i64, 0))
            .collect();
        store.log_batch(&id, metrics, vec![], vec![]).await.unwrap();
    }
    let (history, _) = store
        .get_metric_history(&id, "exact", None, None)
        .await
        .unwrap();
    assert_eq!(history.len(), values.len());
    for (point, expected) in history.iter().zip(&values) {
        assert_eq!(
            point.value.to_bits(),
            expected.to_bits(),
            "{expected:e} came back as {:e}",
            point.value
        );
    }
    let (page, _) = store
        .get_metric_history(
            &id,
            "exact",
            Some(10),
            Some(&ctflow_core::page_token::encode(2990)),
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|p| p.timestamp).collect::<Vec<_>>(),
        (2990..3000).collect::<Vec<_>>()
    );
}

/// The four runs of the recorded c_search scenario and the results the real server gave.
async fn run_search_filters(store: Store) {
    let exp: i64 = store
        .create_experiment("search", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    for (i, (c, acc)) in [("0.05", 0.9), ("1.0", 0.7), ("0.05", 0.4), ("0.5", 0.95)]
        .iter()
        .enumerate()
    {
        let id = new_run(&store, exp, &format!("r{i}")).await;
        store
            .log_batch(
                &id,
                vec![metric("accuracy", *acc, 1, 0)],
                vec![KeyValue::new("C", *c)],
                vec![KeyValue::new(
                    "group",
                    if i % 2 == 0 { "even" } else { "odd" },
                )],
            )
            .await
            .unwrap();
    }
    let q = |f: &str| run_search(exp, f, &["attributes.run_name ASC"], 100, None);
    assert_eq!(
        names(&store, &q("metrics.accuracy > 0.5 and params.C = '0.05'")).await,
        ["r0"]
    );
    assert_eq!(names(&store, &q("tags.group = 'even'")).await, ["r0", "r2"]);
    assert_eq!(
        names(&store, &q("tags.`mlflow.runName` ILIKE 'R1'")).await,
        ["r1"]
    );
    assert_eq!(
        names(&store, &q("params.C LIKE '0.%'")).await,
        ["r0", "r2", "r3"]
    );
    assert_eq!(names(&store, &q("params.C != '0.05'")).await, ["r1", "r3"]);
    assert!(names(&store, &q("tags.group IS NULL")).await.is_empty());
    assert_eq!(names(&store, &q("tags.nothing IS NULL")).await.len(), 4);
    assert_eq!(names(&store, &q("params.C IS NOT NULL")).await.len(), 4);
    assert_eq!(
        names(
            &store,
            &q("attribute.user_id = 'tester' and run.status != 'FAILED'")
        )
        .await
        .len(),
        4
    );
    assert_eq!(
        names(&store, &q("attributes.start_time > 0")).await.len(),
        4
    );
    assert_eq!(
        names(&store, &q("attributes.run_id NOT IN ('x')"))
            .await
            .len(),
        4
    );
    assert_eq!(
        names(&store, &q("metrics.accuracy <= 0.7")).await,
        ["r1", "r2"]
    );
    assert_eq!(names(&store, &q("metrics.missing > 0")).await.len(), 0);
    let first = store
        .search_runs(&q(""))
        .await
        .unwrap()
        .0
        .remove(0)
        .info
        .run_id;
    assert_eq!(
        names(
            &store,
            &q(&format!("attributes.run_id IN ('{first}', 'zz')"))
        )
        .await,
        ["r0"]
    );
    assert_eq!(
        names(
            &store,
            &q("attributes.run_name LIKE 'r%' and metrics.accuracy >= 0.9")
        )
        .await,
        ["r0", "r3"]
    );
    // The count matches what the pages hold in all, whatever the page size.
    for filter in [
        "",
        "metrics.accuracy > 0.5",
        "tags.group = 'even'",
        "params.C = 'none'",
    ] {
        let all = names(&store, &q(filter)).await.len() as i64;
        let small = run_search(exp, filter, &[], 1, None);
        assert_eq!(store.count_runs(&small).await.unwrap(), all, "{filter}");
    }
    assert_eq!(
        store
            .count_runs(&run_search(exp + 1000, "", &[], 1, None))
            .await
            .unwrap(),
        0
    );
}

async fn run_search_order_and_pages(store: Store) {
    let exp: i64 = store
        .create_experiment("order", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    for (name, value) in [
        ("a", Some(0.5)),
        ("b", None),
        ("c", Some(f64::NAN)),
        ("d", Some(0.9)),
        ("e", Some(0.1)),
    ] {
        let id = store
            .create_run(NewRun {
                experiment_id: exp,
                run_name: Some(name.into()),
                start_time: Some(name.as_bytes()[0] as i64),
                ..Default::default()
            })
            .await
            .unwrap()
            .info
            .run_id;
        if let Some(v) = value {
            store.log_metric(&id, metric("m", v, 1, 0)).await.unwrap();
        }
    }
    assert_eq!(
        names(&store, &run_search(exp, "", &["metrics.m DESC"], 100, None)).await,
        ["d", "a", "e", "c", "b"]
    );
    assert_eq!(
        names(&store, &run_search(exp, "", &["metrics.m ASC"], 100, None)).await,
        ["e", "a", "d", "c", "b"]
    );
    assert_eq!(
        names(&store, &run_search(exp, "", &[], 100, None)).await,
        ["e", "d", "c", "b", "a"]
    );
    // A NaN metric satisfies `!=` and no other comparison (MLflow's SQL store; IEEE).
    for (filter, found) in [
        ("metrics.m != 0.5", vec!["e", "d", "c"]),
        ("metrics.m < 0.2", vec!["e"]),
        ("metrics.m = 0", vec![]),
        ("metrics.m >= 0", vec!["e", "d", "a"]),
    ] {
        assert_eq!(
            names(&store, &run_search(exp, filter, &[], 100, None)).await,
            found,
            "{filter}"
        );
    }
    assert_eq!(
        names(
            &store,
            &run_search(exp, "", &["attributes.start_time ASC"], 100, None)
        )
        .await,
        ["a", "b", "c", "d", "e"]
    );

    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let (runs, next) = store
            .search_runs(&run_search(exp, "", &["metrics.m DESC"], 2, token.clone()))
            .await
            .unwrap();
        seen.extend(runs.into_iter().map(|r| r.info.run_name));
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, ["d", "a", "e", "c", "b"]);
    let err = store
        .search_runs(&run_search(exp, "", &[], 2, Some("not base64!".into())))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidParameterValue);

    let mut deleted = run_search(exp, "", &[], 100, None);
    let victim = store
        .search_runs(&deleted)
        .await
        .unwrap()
        .0
        .remove(0)
        .info
        .run_id;
    store.delete_run(&victim).await.unwrap();
    deleted.view = ViewType::DeletedOnly;
    assert_eq!(names(&store, &deleted).await, ["e"]);
    deleted.view = ViewType::All;
    assert_eq!(names(&store, &deleted).await.len(), 5);
}

/// A search ordered by a metric its filter bounds, with more narrowing, is first tried
/// as a walk of the metric's index; every page must be the one a full sort gives: a
/// walk that reads every candidate, one that fills the page early, one whose page ends
/// in a tie with the walk's last entry, one that finds too few (both fall back).
async fn ordered_walks_match_the_full_sort(store: Store) {
    let exp: i64 = store
        .create_experiment("walks", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    // (name, m, flat, p): m has 50 values, 60 runs each; p is 'a' for every 7th run,
    // 'rare' for three runs with small m.
    let mut runs = Vec::new();
    for i in 0..3000i64 {
        let m = (i % 50) as f64 / 50.0;
        let p = if i == 7 || i == 57 || i == 107 {
            "rare"
        } else if i % 7 == 0 {
            "a"
        } else {
            "b"
        };
        let name = format!("run-{i:04}");
        let id = store
            .create_run(NewRun {
                experiment_id: exp,
                user_id: "u".into(),
                start_time: Some(1_000 + i),
                run_name: Some(name.clone()),
                tags: vec![],
            })
            .await
            .unwrap()
            .info
            .run_id;
        store
            .log_batch(
                &id,
                vec![metric("m", m, 1, 0), metric("flat", 1.0, 1, 0)],
                vec![KeyValue::new("p", p)],
                vec![],
            )
            .await
            .unwrap();
        runs.push((name, i, m, p));
    }
    // The full sort, computed here: value, then newest first.
    let expected = |keep: &dyn Fn(f64, &str) -> bool, value: &dyn Fn(i64, f64) -> f64| {
        let mut matched: Vec<&(String, i64, f64, &str)> =
            runs.iter().filter(|(_, _, m, p)| keep(*m, p)).collect();
        matched.sort_by(|a, b| {
            value(b.1, b.2)
                .partial_cmp(&value(a.1, a.2))
                .unwrap()
                .then(b.1.cmp(&a.1))
        });
        matched.into_iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    };
    let by_m = |_: i64, m: f64| m;
    let cases: [(&str, &str, Vec<String>); 4] = [
        // More candidates than the walk reads; the page fills well before its edge.
        (
            "metrics.m >= 0.0 and params.p = 'a'",
            "metrics.m DESC",
            expected(&|_, p| p == "a", &by_m),
        ),
        // Every candidate read (fewer than the walk's budget).
        (
            "metrics.m > 0.7 and params.p = 'b'",
            "metrics.m DESC",
            expected(&|m, p| m > 0.7 && p == "b", &by_m),
        ),
        // Too few matches among the entries read: the planned search answers.
        (
            "metrics.m >= 0.0 and params.p = 'rare'",
            "metrics.m DESC",
            expected(&|_, p| p == "rare", &by_m),
        ),
        // Every value tied: the page ends on the walk's last value, so it is not trusted.
        (
            "metrics.flat > 0 and params.p = 'b'",
            "metrics.flat DESC",
            expected(&|_, p| p == "b", &|_, _| 1.0),
        ),
    ];
    for (filter, order, all) in cases {
        let mut seen = Vec::new();
        let mut token = None;
        for _ in 0..3 {
            let (page, next) = store
                .search_runs(&run_search(exp, filter, &[order], 100, token))
                .await
                .unwrap();
            seen.extend(page.into_iter().map(|r| r.info.run_name));
            token = next;
            if token.is_none() {
                break;
            }
        }
        let want = all.len().min(300);
        assert_eq!(seen, all[..want].to_vec(), "{filter} / {order}");
    }
    // Ascending walks stop at the other end.
    let (page, _) = store
        .search_runs(&run_search(
            exp,
            "metrics.m <= 0.5 and params.p = 'a'",
            &["metrics.m ASC"],
            50,
            None,
        ))
        .await
        .unwrap();
    let mut asc = expected(&|m, p| m <= 0.5 && p == "a", &|_, m| -m);
    asc.truncate(50);
    assert_eq!(
        page.into_iter()
            .map(|r| r.info.run_name)
            .collect::<Vec<_>>(),
        asc
    );
}

async fn inputs_and_outputs(store: Store) {
    let id = new_run(&store, 0, "io").await;
    let dataset = Dataset {
        name: "iris".into(),
        digest: "abc123".into(),
        source_type: "local".into(),
        source: "{\"uri\": \"/data/iris.csv\"}".into(),
        schema: Some("{}".into()),
        profile: None,
    };
    let input = DatasetInputRequest {
        dataset,
        tags: vec![KeyValue::new("mlflow.data.context", "train")],
    };
    store
        .log_inputs(&id, vec![input.clone()], vec![])
        .await
        .unwrap();
    store.log_inputs(&id, vec![input], vec![]).await.unwrap();
    store
        .log_outputs(
            &id,
            vec![ModelOutput {
                model_id: "m-1".into(),
                step: 3,
            }],
        )
        .await
        .unwrap();
    // MLflow's UI lists an experiment's datasets with the context they were used in; one
    // without a context tag lists with none.
    let untagged = DatasetInputRequest {
        dataset: Dataset {
            name: "holdout".into(),
            digest: "def".into(),
            source_type: "local".into(),
            source: "{}".into(),
            schema: None,
            profile: None,
        },
        tags: vec![],
    };
    store.log_inputs(&id, vec![untagged], vec![]).await.unwrap();
    assert_eq!(
        store.search_dataset_summaries(&[0, 42]).await.unwrap(),
        vec![
            DatasetSummary {
                experiment_id: "0".into(),
                name: "holdout".into(),
                digest: "def".into(),
                context: None,
            },
            DatasetSummary {
                experiment_id: "0".into(),
                name: "iris".into(),
                digest: "abc123".into(),
                context: Some("train".into()),
            },
        ]
    );
    assert!(
        store
            .search_dataset_summaries(&[42])
            .await
            .unwrap()
            .is_empty()
    );
    let run = store.get_run(&id).await.unwrap();
    assert_eq!(run.inputs.dataset_inputs.len(), 2);
    assert_eq!(
        run.inputs
            .dataset_inputs
            .iter()
            .find(|input| input.dataset.name == "iris")
            .unwrap()
            .tags,
        vec![KeyValue::new("mlflow.data.context", "train")]
    );
    assert_eq!(
        run.outputs.unwrap().model_outputs,
        vec![ModelOutput {
            model_id: "m-1".into(),
            step: 3
        }]
    );
    // A search page reads each run whole, as a get does: params, tags, latest metrics,
    // datasets with their tags, models in and out (on a SQLite file, read on SQLite's own
    // interface; elsewhere through the pool).
    store
        .log_inputs(&id, vec![], vec!["m-0".into(), "m-00".into()])
        .await
        .unwrap();
    store
        .log_batch(
            &id,
            vec![metric("b", 2.0, 5, 1), metric("a", f64::NAN, 5, 0)],
            vec![KeyValue::new("lr", "0.1"), KeyValue::new("depth", "3")],
            vec![KeyValue::new("team", "x")],
        )
        .await
        .unwrap();
    let other = new_run(&store, 0, "other").await;
    let whole = store.get_run(&id).await.unwrap();
    assert_eq!(
        whole
            .inputs
            .model_inputs
            .iter()
            .map(|m| m.model_id.as_str())
            .collect::<Vec<_>>(),
        ["m-0", "m-00"]
    );
    assert_eq!(
        whole
            .data
            .params
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["depth", "lr"]
    );
    assert_eq!(whole.data.metrics.len(), 2);
    assert!(whole.data.metrics[0].value.is_nan());
    assert_eq!(whole.data.metrics[1].value, 2.0);
    let (page, _) = store
        .search_runs(&run_search(0, "", &["attributes.run_name ASC"], 10, None))
        .await
        .unwrap();
    let page_run = |run_id: &str| {
        page.iter()
            .find(|run| run.info.run_id == run_id)
            .cloned()
            .unwrap()
    };
    let from_page = page_run(&id);
    assert_eq!(format!("{from_page:?}"), format!("{whole:?}"));
    assert_eq!(
        format!("{:?}", page_run(&other)),
        format!("{:?}", store.get_run(&other).await.unwrap())
    );
    assert_eq!(
        page.iter()
            .map(|run| run.info.run_name.as_str())
            .collect::<Vec<_>>(),
        ["io", "other"]
    );

    let mut search = run_search(
        0,
        "datasets.context = 'train' and datasets.name IN ('iris')",
        &[],
        10,
        None,
    );
    assert_eq!(names(&store, &search).await, ["io"]);
    search.filter = parse_run_filter("datasets.digest = 'other'").unwrap();
    assert!(names(&store, &search).await.is_empty());
}

async fn logged_models(store: Store) {
    let run = new_run(&store, 0, "model-run").await;
    let model = store
        .create_logged_model(NewLoggedModel {
            experiment_id: 0,
            name: Some("iris_model".into()),
            source_run_id: Some(run.clone()),
            params: vec![KeyValue::new("C", "0.1")],
            tags: vec![KeyValue::new("mlflow.user", "tester")],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = model.info.model_id.clone();
    assert!(id.starts_with("m-"));
    assert_eq!(model.info.status, "LOGGED_MODEL_PENDING");
    assert_eq!(
        model.info.artifact_uri,
        format!("mlflow-artifacts:/0/models/{id}/artifacts")
    );
    let mut linked = metric("accuracy", 0.97, 5, 0);
    linked.model_id = Some(id.clone());
    store
        .log_batch(&run, vec![linked], vec![], vec![])
        .await
        .unwrap();
    assert_eq!(
        store
            .finalize_logged_model(&id, "LOGGED_MODEL_READY")
            .await
            .unwrap()
            .info
            .status,
        "LOGGED_MODEL_READY"
    );
    store
        .set_logged_model_tags(&id, &[KeyValue::new("mlflow.modelVersions", "[]")])
        .await
        .unwrap();
    store
        .log_logged_model_params(&id, &[KeyValue::new("D", "2")])
        .await
        .unwrap();
    let got = store.get_logged_model(&id).await.unwrap();
    assert_eq!(got.data.metrics.len(), 1);
    assert_eq!(got.data.metrics[0].run_id.as_deref(), Some(run.as_str()));
    assert_eq!(got.data.params.len(), 2);
    assert_eq!(got.info.tags.len(), 2);

    let search = |filter: &str| LoggedModelSearch {
        experiment_ids: vec![0],
        filter: parse_logged_model_filter(filter).unwrap(),
        datasets: vec![],
        order_by: vec![],
        max_results: 10,
        page_token: None,
    };
    // `datasets` keeps the models with metrics on one of them (by name, and digest when
    // given); a metric clause then counts only those datasets' metrics.
    let mut on_eval = metric("loss", 0.2, 6, 0);
    on_eval.model_id = Some(id.clone());
    on_eval.dataset_name = Some("eval".into());
    on_eval.dataset_digest = Some("d1".into());
    store
        .log_batch(&run, vec![on_eval], vec![], vec![])
        .await
        .unwrap();
    let on = |filter: &str, datasets: Vec<(&str, Option<&str>)>| {
        let mut request = search(filter);
        request.datasets = datasets
            .into_iter()
            .map(|(n, d)| (n.to_string(), d.map(str::to_string)))
            .collect();
        request
    };
    for (filter, datasets, found) in [
        ("", vec![("eval", Some("d1"))], 1),
        ("", vec![("eval", None)], 1),
        ("", vec![("eval", Some("d2"))], 0),
        ("", vec![("train", None), ("eval", None)], 1),
        ("metrics.loss < 1", vec![("eval", None)], 1),
        ("metrics.accuracy > 0.9", vec![("eval", None)], 0),
    ] {
        assert_eq!(
            store
                .search_logged_models(&on(filter, datasets.clone()))
                .await
                .unwrap()
                .0
                .len(),
            found,
            "{filter} {datasets:?}"
        );
    }
    assert_eq!(
        store
            .search_logged_models(&search("name = 'iris_model'"))
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    assert!(
        store
            .search_logged_models(&search("name = 'plots'"))
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        store
            .search_logged_models(&search("metrics.accuracy > 0.9 and params.C = '0.1'"))
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    store
        .delete_logged_model_tag(&id, "mlflow.modelVersions")
        .await
        .unwrap();
    store.delete_logged_model(&id).await.unwrap();
    assert_eq!(
        code(store.get_logged_model(&id).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        code(
            store
                .finalize_logged_model("m-nope", "LOGGED_MODEL_READY")
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
}

async fn concurrent_writers_all_commit(store: Store) {
    let id = new_run(&store, 0, "busy").await;
    let mut tasks = Vec::new();
    for worker in 0..16i64 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..10i64 {
                let metrics = (0..50)
                    .map(|i| {
                        metric(
                            &format!("w{worker}"),
                            i as f64,
                            batch * 100 + i,
                            batch * 100 + i,
                        )
                    })
                    .collect();
                store.log_batch(&id, metrics, vec![], vec![]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for worker in 0..16 {
        let (points, _) = store
            .get_metric_history(&id, &format!("w{worker}"), None, None)
            .await
            .unwrap();
        assert_eq!(points.len(), 500);
    }
}

/// Writes that queue together share a transaction: the refused ones (a deleted run, a
/// changed parameter) must fail alone and take nothing of the others with them.
async fn a_refused_write_in_a_group_costs_only_itself(store: Store) {
    let live = new_run(&store, 0, "live").await;
    let gone = new_run(&store, 0, "gone").await;
    store.delete_run(&gone).await.unwrap();
    store.log_param(&live, "fixed", "1").await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..48i64 {
        let store = store.clone();
        let (live, gone) = (live.clone(), gone.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("k{writer}");
            match writer % 3 {
                0 => store
                    .log_batch(
                        &live,
                        vec![metric(&key, writer as f64, writer, 0)],
                        vec![],
                        vec![],
                    )
                    .await
                    .map(|()| true),
                1 => store
                    .log_batch(&gone, vec![metric(&key, 1.0, 1, 0)], vec![], vec![])
                    .await
                    .map(|()| true)
                    .or_else(|e| match code(e) {
                        ErrorCode::InvalidParameterValue => Ok(false),
                        other => panic!("a deleted run's write answered {other:?}"),
                    }),
                _ => store
                    .log_batch(
                        &live,
                        vec![metric(&key, 1.0, 1, 0)],
                        vec![KeyValue::new("fixed", format!("{writer}"))],
                        vec![],
                    )
                    .await
                    .map(|()| true)
                    .or_else(|e| match code(e) {
                        ErrorCode::InvalidParameterValue => Ok(false),
                        other => panic!("a changed parameter answered {other:?}"),
                    }),
            }
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    for (writer, committed) in answers.into_iter().enumerate() {
        assert_eq!(committed, writer % 3 == 0, "writer {writer}");
    }
    let run = store.get_run(&live).await.unwrap();
    let keys: Vec<&str> = run.data.metrics.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys.len(), 16, "{keys:?}");
    assert!(keys.iter().all(|k| k[1..].parse::<i64>().unwrap() % 3 == 0));
    assert_eq!(run.data.params.len(), 1);
    assert!(store.get_run(&gone).await.unwrap().data.metrics.is_empty());
}

async fn registered_models_lifecycle(store: Store) {
    let model = store
        .create_registered_model("iris", &[KeyValue::new("owner", "ml")], Some("first"))
        .await
        .unwrap();
    assert_eq!(
        (model.name.as_str(), model.description.as_deref()),
        ("iris", Some("first"))
    );
    assert_eq!(
        code(
            store
                .create_registered_model("iris", &[], None)
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceAlreadyExists
    );
    for bad in ["", "a/b", "a:b"] {
        assert_eq!(
            code(
                store
                    .create_registered_model(bad, &[], None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::InvalidParameterValue,
            "{bad}"
        );
    }
    assert_eq!(
        code(store.get_registered_model("nope").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    let updated = store
        .update_registered_model("iris", "second")
        .await
        .unwrap();
    assert_eq!(updated.description.as_deref(), Some("second"));
    store
        .set_registered_model_tag("iris", &KeyValue::new("task", "cls"))
        .await
        .unwrap();
    store
        .delete_registered_model_tag("iris", "owner")
        .await
        .unwrap();
    assert_eq!(
        code(
            store
                .delete_registered_model_tag("iris", "owner")
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        store.get_registered_model("iris").await.unwrap().tags,
        vec![KeyValue::new("task", "cls")]
    );

    let run = new_run(&store, 0, "train").await;
    let v1 = store
        .create_model_version(NewModelVersion {
            name: "iris".into(),
            source: format!("runs:/{run}/model"),
            run_id: Some(run.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            v1.version.as_str(),
            v1.status.as_str(),
            v1.current_stage.as_str()
        ),
        ("1", "READY", "None")
    );
    store
        .set_registered_model_alias("iris", "champion", 1, "alice")
        .await
        .unwrap();
    let renamed = store
        .rename_registered_model("iris", "iris-v2")
        .await
        .unwrap();
    assert_eq!(renamed.aliases[0].alias, "champion");
    assert_eq!(
        store
            .get_model_version_by_alias("iris-v2", "champion")
            .await
            .unwrap()
            .version,
        "1"
    );
    assert_eq!(
        code(store.get_registered_model("iris").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(store.registry_ledger("iris-v2").await.unwrap().len(), 2);
    store
        .create_registered_model("other", &[], None)
        .await
        .unwrap();
    assert_eq!(
        code(
            store
                .rename_registered_model("iris-v2", "other")
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceAlreadyExists
    );
    store.delete_registered_model("iris-v2").await.unwrap();
    assert_eq!(
        code(store.get_model_version("iris-v2", 1).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
}

async fn model_version_sources(store: Store) {
    store.create_registered_model("m", &[], None).await.unwrap();
    let run = store
        .get_run(&new_run(&store, 0, "src").await)
        .await
        .unwrap()
        .info;
    let model = store
        .create_logged_model(NewLoggedModel {
            experiment_id: 0,
            name: Some("model".into()),
            source_run_id: Some(run.run_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mid = model.info.model_id.clone();
    let version = |source: String, run_id: Option<&str>, model_id: Option<&str>| NewModelVersion {
        name: "m".into(),
        source,
        run_id: run_id.map(str::to_string),
        model_id: model_id.map(str::to_string),
        ..Default::default()
    };
    let rid = run.run_id.as_str();
    let v = store
        .create_model_version(version(format!("models:/{mid}"), Some(rid), Some(&mid)))
        .await
        .unwrap();
    assert_eq!(v.run_id, rid);
    assert_eq!(
        store.get_model_version_download_uri("m", 1).await.unwrap(),
        model.info.artifact_uri
    );
    let tags = store.get_logged_model(&mid).await.unwrap().info.tags;
    assert!(
        tags.iter()
            .any(|t| t.key == "mlflow.modelVersions"
                && t.value == r#"[{"name": "m", "version": 1}]"#),
        "{tags:?}"
    );
    let v = store
        .create_model_version(version(
            format!("{}/model", run.artifact_uri),
            Some(rid),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(v.version, "2");
    let v = store
        .create_model_version(version("models:/m/1".into(), None, None))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_model_version_download_uri("m", v.version.parse().unwrap())
            .await
            .unwrap(),
        model.info.artifact_uri
    );
    let rejected = [
        version(model.info.artifact_uri.clone(), None, None),
        version(model.info.artifact_uri.clone(), Some(rid), None),
        version(format!("runs:/{rid}/model"), None, None),
        version(format!("runs:/{rid}/model"), Some("other"), None),
        version("file:///etc/passwd".into(), Some(rid), None),
        version("/etc".into(), Some(rid), None),
        version(format!("{}/../../etc", run.artifact_uri), Some(rid), None),
        version(
            format!("{}/%2e%2e/%2e%2e/x", run.artifact_uri),
            Some(rid),
            None,
        ),
        version(format!("{}/model#frag", run.artifact_uri), Some(rid), None),
        version(
            format!("{}/model?x=../../y", run.artifact_uri),
            Some(rid),
            None,
        ),
        version(format!("{}2/model", run.artifact_uri), Some(rid), None),
        version(format!("models:/{mid}"), Some(rid), Some("m-other")),
    ];
    for request in rejected {
        let source = request.source.clone();
        assert_eq!(
            code(store.create_model_version(request).await.unwrap_err()),
            ErrorCode::InvalidParameterValue,
            "{source}"
        );
    }
    assert_eq!(
        code(
            store
                .create_model_version(NewModelVersion {
                    name: "ghost".into(),
                    source: "models:/m/1".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    // MLflow 3.17's boundary: a `runs:/` source only has to name the request's run (which
    // it does not look up), object-store URIs need no run, and `models:/<name>@<alias>`
    // copies the version the alias points at, stored as `models:/<name>/<version>`.
    let accepted = store
        .create_model_version(version("runs:/ghost/model".into(), Some("ghost"), None))
        .await
        .unwrap();
    assert_eq!(accepted.run_id, "ghost");
    let accepted = store
        .create_model_version(version("s3://bucket/models/m".into(), None, None))
        .await
        .unwrap();
    assert_eq!(accepted.source, "s3://bucket/models/m");
    store
        .set_registered_model_alias("m", "champion", 1, "")
        .await
        .unwrap();
    let copied = store
        .create_model_version(version("models:/m@champion".into(), None, None))
        .await
        .unwrap();
    assert_eq!(copied.source, "models:/m/1");
    assert_eq!(copied.run_id, rid);
    let mismatch = store
        .create_model_version(version("models:/m@champion".into(), Some("other"), None))
        .await
        .unwrap_err();
    assert_eq!(code(mismatch), ErrorCode::InvalidParameterValue);
}

async fn aliases_stages_and_ledger(store: Store) {
    store.create_registered_model("m", &[], None).await.unwrap();
    let run = new_run(&store, 0, "r").await;
    for _ in 0..4 {
        store
            .create_model_version(NewModelVersion {
                name: "m".into(),
                source: format!("runs:/{run}/model"),
                run_id: Some(run.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for bad in ["latest", "LATEST", "v2", "bad alias", ""] {
        assert_eq!(
            code(
                store
                    .set_registered_model_alias("m", bad, 1, "u")
                    .await
                    .unwrap_err()
            ),
            ErrorCode::InvalidParameterValue,
            "{bad}"
        );
    }
    assert_eq!(
        code(
            store
                .set_registered_model_alias("m", "champion", 99, "u")
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    store
        .set_registered_model_alias("m", "champion", 1, "alice")
        .await
        .unwrap();
    store
        .set_registered_model_alias("m", "champion", 2, "bob")
        .await
        .unwrap();
    let v2 = store
        .get_model_version_by_alias("m", "champion")
        .await
        .unwrap();
    assert_eq!(
        (v2.version.as_str(), v2.aliases.clone()),
        ("2", vec!["champion".to_string()])
    );
    assert_eq!(
        code(
            store
                .get_model_version_by_alias("m", "nope")
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    store
        .transition_model_version_stage("m", 1, "production", false, "alice")
        .await
        .unwrap();
    store
        .transition_model_version_stage("m", 3, "Staging", false, "alice")
        .await
        .unwrap();
    let v2 = store
        .transition_model_version_stage("m", 2, "Production", true, "carol")
        .await
        .unwrap();
    assert_eq!(v2.current_stage, "Production");
    assert_eq!(
        store.get_model_version("m", 1).await.unwrap().current_stage,
        "Archived"
    );
    assert_eq!(
        code(
            store
                .transition_model_version_stage("m", 2, "Bogus", false, "x")
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    let latest = store.get_latest_versions("m", &[]).await.unwrap();
    let stages: Vec<(String, String)> = latest
        .iter()
        .map(|v| (v.current_stage.clone(), v.version.clone()))
        .collect();
    assert_eq!(
        stages,
        [
            ("Archived".into(), "1".into()),
            ("Production".into(), "2".into()),
            ("Staging".into(), "3".into()),
            ("None".into(), "4".into())
        ]
    );
    let prod = store
        .get_latest_versions("m", &["production".into()])
        .await
        .unwrap();
    assert_eq!(prod.len(), 1);
    let model = store.get_registered_model("m").await.unwrap();
    assert_eq!(model.latest_versions.len(), 4);
    assert!(model.latest_versions.iter().all(|v| v.aliases.is_empty()));

    store.delete_model_version("m", 2, "dave").await.unwrap();
    assert_eq!(
        code(store.get_model_version("m", 2).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert!(
        store
            .get_registered_model("m")
            .await
            .unwrap()
            .aliases
            .is_empty()
    );
    let v5 = store
        .create_model_version(NewModelVersion {
            name: "m".into(),
            source: format!("runs:/{run}/model"),
            run_id: Some(run.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(v5.version, "5", "numbers are never reused");

    store
        .set_registered_model_alias("m", "challenger", 5, "erin")
        .await
        .unwrap();
    store
        .delete_registered_model_alias("m", "challenger", "erin")
        .await
        .unwrap();
    assert_eq!(
        code(
            store
                .delete_registered_model_alias("m", "challenger", "erin")
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );

    let ledger = store.registry_ledger("m").await.unwrap();
    type Move<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );
    let moves: Vec<Move> = ledger
        .iter()
        .filter(|e| e.action.starts_with("alias"))
        .map(|e| {
            (
                e.action.as_str(),
                e.alias.as_deref(),
                e.from_version.as_deref(),
                e.to_version.as_deref(),
                e.user.as_str(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("alias_set", Some("champion"), None, Some("1"), "alice"),
            ("alias_set", Some("champion"), Some("1"), Some("2"), "bob"),
            ("alias_deleted", Some("champion"), Some("2"), None, "dave"),
            ("alias_set", Some("challenger"), None, Some("5"), "erin"),
            ("alias_deleted", Some("challenger"), Some("5"), None, "erin"),
        ]
    );
    let archived = ledger
        .iter()
        .find(|e| e.to_stage.as_deref() == Some("Archived"))
        .unwrap();
    assert_eq!(
        (archived.to_version.as_deref(), archived.user.as_str()),
        (Some("1"), "carol")
    );
    assert!(ledger.windows(2).all(|w| w[0].id < w[1].id));

    store
        .set_model_version_tag("m", 1, &KeyValue::new("validated", "true"))
        .await
        .unwrap();
    assert_eq!(
        store.get_model_version("m", 1).await.unwrap().tags,
        vec![KeyValue::new("validated", "true")]
    );
    store
        .delete_model_version_tag("m", 1, "validated")
        .await
        .unwrap();
    assert_eq!(
        code(
            store
                .delete_model_version_tag("m", 1, "validated")
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    let updated = store
        .update_model_version("m", 1, "described")
        .await
        .unwrap();
    assert_eq!(updated.description, "described");
}

async fn registry_search(store: Store) {
    let run = new_run(&store, 0, "r").await;
    for (name, versions) in [("alpha", 3), ("beta", 2), ("gamma", 1)] {
        store
            .create_registered_model(
                name,
                &[KeyValue::new(
                    "team",
                    if name == "beta" { "b" } else { "a" },
                )],
                None,
            )
            .await
            .unwrap();
        for _ in 0..versions {
            store
                .create_model_version(NewModelVersion {
                    name: name.into(),
                    source: format!("runs:/{run}/model"),
                    run_id: Some(run.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    store
        .set_registered_model_tag("gamma", &KeyValue::new("mlflow.prompt.is_prompt", "true"))
        .await
        .unwrap();
    let models = |filter: &str, order: &[&str], max_results: i64, page_token: Option<String>| {
        RegistrySearch {
            filter: parse_registered_model_filter(filter).unwrap(),
            order_by: parse_registered_model_order_by(
                &order.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
            max_results,
            page_token,
        }
    };
    let names = |r: (Vec<ctflow_core::registry::RegisteredModel>, Option<String>)| {
        r.0.into_iter().map(|m| m.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            store
                .search_registered_models(&models(
                    "tag.`mlflow.prompt.is_prompt` != 'true'",
                    &[],
                    100,
                    None
                ))
                .await
                .unwrap()
        ),
        ["alpha", "beta"]
    );
    assert_eq!(
        names(
            store
                .search_registered_models(&models(
                    "name LIKE 'a%' AND tags.`mlflow.prompt.is_prompt` != 'true'",
                    &[],
                    100,
                    None
                ))
                .await
                .unwrap()
        ),
        ["alpha"]
    );
    assert_eq!(
        names(
            store
                .search_registered_models(&models("tags.team = 'a'", &["name DESC"], 100, None))
                .await
                .unwrap()
        ),
        ["gamma", "alpha"]
    );
    assert_eq!(
        names(
            store
                .search_registered_models(&models("name IN ('beta', 'zeta')", &[], 100, None))
                .await
                .unwrap()
        ),
        ["beta"]
    );
    let (page, token) = store
        .search_registered_models(&models("", &[], 2, None))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(
        names(
            store
                .search_registered_models(&models("", &[], 2, token))
                .await
                .unwrap()
        ),
        ["gamma"]
    );

    let versions = |filter: &str, order: &[&str]| RegistrySearch {
        filter: parse_model_version_filter(filter).unwrap(),
        order_by: parse_model_version_order_by(
            &order.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        max_results: 100,
        page_token: None,
    };
    let found = |r: (Vec<ctflow_core::registry::ModelVersion>, Option<String>)| {
        r.0.into_iter()
            .map(|v| format!("{}/{}", v.name, v.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found(
            store
                .search_model_versions(&versions("name = 'alpha'", &["version_number DESC"]))
                .await
                .unwrap()
        ),
        ["alpha/3", "alpha/2", "alpha/1"]
    );
    assert_eq!(
        found(
            store
                .search_model_versions(&versions(
                    "name = 'alpha' and version_number > 1",
                    &["version_number ASC"]
                ))
                .await
                .unwrap()
        ),
        ["alpha/2", "alpha/3"]
    );
    assert_eq!(
        store
            .search_model_versions(&versions(&format!("run_id = '{run}'"), &[]))
            .await
            .unwrap()
            .0
            .len(),
        6
    );
    assert_eq!(
        store
            .search_model_versions(&versions(
                &format!("source_path = 'runs:/{run}/model' and name IN ('beta')"),
                &[]
            ))
            .await
            .unwrap()
            .0
            .len(),
        2
    );
    store
        .set_model_version_tag("beta", 2, &KeyValue::new("validated", "true"))
        .await
        .unwrap();
    assert_eq!(
        found(
            store
                .search_model_versions(&versions("tags.validated = 'true'", &[]))
                .await
                .unwrap()
        ),
        ["beta/2"]
    );
    store.delete_model_version("alpha", 3, "u").await.unwrap();
    assert_eq!(
        store
            .search_model_versions(&versions("name LIKE 'alp%'", &[]))
            .await
            .unwrap()
            .0
            .len(),
        2
    );
    // A model's latest version in a stage is its highest live one.
    let alpha = store.get_registered_model("alpha").await.unwrap();
    assert_eq!(
        alpha
            .latest_versions
            .iter()
            .map(|v| (v.current_stage.as_str(), v.version.as_str()))
            .collect::<Vec<_>>(),
        [("None", "2")]
    );
    let (models, _) = store
        .search_registered_models(&RegistrySearch {
            filter: parse_registered_model_filter("name LIKE '%a'").unwrap(),
            order_by: Vec::new(),
            max_results: 10,
            page_token: None,
        })
        .await
        .unwrap();
    assert_eq!(
        models
            .iter()
            .map(|m| (
                m.name.as_str(),
                m.latest_versions
                    .iter()
                    .map(|v| v.version.as_str())
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>(),
        [
            ("alpha", vec!["2"]),
            ("beta", vec!["2"]),
            ("gamma", vec!["1"])
        ]
    );
    // MLflow's LIKE is case-sensitive, ILIKE not; a page carries each version's tags.
    assert!(
        store
            .search_model_versions(&versions("name LIKE 'ALP%'", &[]))
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let (page, _) = store
        .search_model_versions(&versions("name ILIKE 'BET%'", &["version_number ASC"]))
        .await
        .unwrap();
    assert_eq!(
        page.iter()
            .map(|v| (v.version.as_str(), v.tags.clone()))
            .collect::<Vec<_>>(),
        [
            ("1", vec![]),
            ("2", vec![KeyValue::new("validated", "true")])
        ]
    );
}

async fn concurrent_version_numbers(store: Store) {
    store
        .create_registered_model("race", &[], None)
        .await
        .unwrap();
    let run = new_run(&store, 0, "r").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let store = store.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_model_version(NewModelVersion {
                    name: "race".into(),
                    source: format!("runs:/{run}/model"),
                    run_id: Some(run),
                    ..Default::default()
                })
                .await
                .unwrap()
                .version
                .parse::<i64>()
                .unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>());
}

fn pipeline_document(name: &str, extra: serde_json::Value) -> PipelineDocument {
    let mut spec = serde_json::json!({"project": {"uri": "."}, "model": {"name": "m"}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn pipelines_and_trigger_dedupe(store: Store) {
    let doc = pipeline_document("p", serde_json::json!({}));
    let first = store.put_pipeline(&doc, "api", "/base").await.unwrap();
    assert_eq!(first.generation, 1);
    // The same document again is no change; an edit is a new generation.
    assert_eq!(
        store
            .put_pipeline(&doc, "api", "/base")
            .await
            .unwrap()
            .generation,
        1
    );
    let edited = pipeline_document("p", serde_json::json!({"concurrencyPolicy": "Allow"}));
    assert_eq!(
        store
            .put_pipeline(&edited, "api", "/base")
            .await
            .unwrap()
            .generation,
        2
    );
    let mut invalid = doc.clone();
    invalid.metadata.name = "Bad Name".into();
    assert_eq!(
        code(store.put_pipeline(&invalid, "api", "/").await.unwrap_err()),
        ErrorCode::InvalidParameterValue
    );

    let event = TriggerEvent::new("p", "manual", "manual:k1".into());
    let Recorded::Created(run) = store.record_trigger(&event).await.unwrap() else {
        panic!("a new key records a run")
    };
    assert_eq!(run.phase, Phase::Pending);
    assert_eq!(run.base_dir, "/base");
    let Recorded::Duplicate(same) = store.record_trigger(&event).await.unwrap() else {
        panic!("a seen key records nothing")
    };
    assert_eq!(same, run.id);
    let missing = TriggerEvent::new("nope", "manual", "manual:x".into());
    assert_eq!(
        code(store.record_trigger(&missing).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    let suspended = pipeline_document("s", serde_json::json!({"suspend": true}));
    store.put_pipeline(&suspended, "api", "/").await.unwrap();
    let event = TriggerEvent::new("s", "manual", "manual:y".into());
    assert_eq!(
        code(store.record_trigger(&event).await.unwrap_err()),
        ErrorCode::InvalidParameterValue
    );

    // Data triggers: each file once, across events.
    let batch =
        ctflow_core::trigger::data_event("p", 0, vec!["/d/a.csv".into(), "/d/b.csv".into()]);
    assert!(matches!(
        store.record_data_trigger(&batch, "data/0").await.unwrap(),
        Some(Recorded::Created(_))
    ));
    let overlap =
        ctflow_core::trigger::data_event("p", 0, vec!["/d/b.csv".into(), "/d/c.csv".into()]);
    let Some(Recorded::Created(run)) = store.record_data_trigger(&overlap, "data/0").await.unwrap()
    else {
        panic!("the new file records a run")
    };
    assert_eq!(run.trigger.files, vec!["/d/c.csv"]);
    assert!(
        store
            .record_data_trigger(&overlap, "data/0")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.seen_files("p", "data/0").await.unwrap().len(), 3);

    // Schedule ticks move the cursor in the same transaction.
    let tick = |t: i64| {
        let mut e = TriggerEvent::new("p", "schedule", format!("schedule:0:{t}"));
        e.logical_time = Some(t);
        e
    };
    let created = store
        .record_schedule_ticks("p", "s0", &[tick(60_000), tick(120_000)], 120_000)
        .await
        .unwrap();
    assert_eq!(created.len(), 2);
    let again = store
        .record_schedule_ticks("p", "s0", &[tick(120_000)], 120_000)
        .await
        .unwrap();
    assert!(again.is_empty(), "a tick is recorded once");
    assert_eq!(
        store.schedule_cursor("p", "s0").await.unwrap(),
        Some(120_000)
    );
    let runs = store
        .list_pipeline_runs(Some("p"), &[Phase::Pending], 100)
        .await
        .unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs.windows(2).all(|w| w[0].id > w[1].id), "newest first");

    store.delete_pipeline("p").await.unwrap();
    assert_eq!(
        code(store.get_pipeline("p").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(store.schedule_cursor("p", "s0").await.unwrap(), None);
    assert_eq!(
        store
            .list_pipeline_runs(Some("p"), &[], 100)
            .await
            .unwrap()
            .len(),
        5,
        "runs stay as history"
    );
}

/// Pipeline `p` (no spec beyond its project) with one manually triggered, Pending run.
async fn one_pipeline_run(store: &Store) -> ctflow_core::pipeline_run::PipelineRun {
    store
        .put_pipeline(&pipeline_document("p", serde_json::json!({})), "api", "/")
        .await
        .unwrap();
    let Recorded::Created(run) = store
        .record_trigger(&TriggerEvent::new("p", "manual", "k".into()))
        .await
        .unwrap()
    else {
        panic!("created")
    };
    *run
}

/// Eight workers claim one queued job at once: each claim is decided on the run as read
/// inside its own transaction, so exactly one starts it and the others see it running.
async fn a_decided_move_is_decided_on_the_locked_run(store: Store) {
    let run = one_pipeline_run(&store).await;
    store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Pending],
            |r| {
                r.phase = Phase::Queued;
                r.attempt = 1;
            },
            None,
        )
        .await
        .unwrap()
        .expect("moved");
    let claims = (0..8).map(|worker| {
        let store = store.clone();
        let id = run.id.clone();
        tokio::spawn(async move {
            store
                .decide_pipeline_run(&id, |r| {
                    ctflow_core::engine::claim(r, 1, 1, &format!("w{worker}"), 1)
                })
                .await
                .unwrap()
        })
    });
    let decided = futures::future::join_all(claims).await;
    let taken: Vec<_> = decided
        .into_iter()
        .map(|d| d.unwrap())
        .filter_map(Result::ok)
        .collect();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].phase, Phase::Running);
    let claimed = store
        .pipeline_run_events(&run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.message.contains("taken by worker"))
        .count();
    assert_eq!(claimed, 1);
    // A refusal changes nothing: neither the run nor its history.
    let before = store.get_pipeline_run(&run.id).await.unwrap();
    let history = store.pipeline_run_events(&run.id).await.unwrap().len();
    let refused = store
        .decide_pipeline_run(&run.id, |r| ctflow_core::engine::claim(r, 1, 1, "w9", 2))
        .await
        .unwrap();
    assert!(refused.is_err());
    let after = store.get_pipeline_run(&run.id).await.unwrap();
    assert_eq!(
        (after.phase, after.last_updated_time),
        (before.phase, before.last_updated_time)
    );
    assert_eq!(
        store.pipeline_run_events(&run.id).await.unwrap().len(),
        history
    );
}

async fn pipeline_runs_move_by_compare_and_set(store: Store) {
    let run = one_pipeline_run(&store).await;
    let queued = store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Pending],
            |r| {
                r.phase = Phase::Queued;
                r.attempt = 1;
            },
            Some(PipelineRunEvent::new("attempt", "attempt 1 queued")),
        )
        .await
        .unwrap()
        .expect("moved");
    assert_eq!((queued.phase, queued.attempt), (Phase::Queued, 1));
    // A second actor expecting Pending loses and changes nothing.
    let lost = store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Pending],
            |r| r.phase = Phase::Skipped,
            None,
        )
        .await
        .unwrap();
    assert!(lost.is_none());
    let approval = Approval {
        approved: true,
        user: "alice".into(),
    };
    let ended = store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Queued],
            |r| {
                r.phase = Phase::Failed;
                r.decision = Some("boom".into());
                r.approval = Some(approval.clone());
            },
            None,
        )
        .await
        .unwrap()
        .expect("moved");
    assert!(ended.end_time.is_some(), "a terminal phase stamps the end");
    let read = store.get_pipeline_run(&run.id).await.unwrap();
    assert_eq!(read.approval, Some(approval));
    let events: Vec<String> = store
        .pipeline_run_events(&run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(
        events,
        vec![
            "manual trigger recorded",
            "attempt 1 queued",
            "Pending -> Queued",
            "Queued -> Failed: boom"
        ]
    );
    assert_eq!(
        code(store.get_pipeline_run("nope").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
}

async fn registered_versions(store: &Store, model: &str, n: usize) -> String {
    store
        .create_registered_model(model, &[], None)
        .await
        .unwrap();
    let run = new_run(store, 0, "r").await;
    for _ in 0..n {
        store
            .create_model_version(NewModelVersion {
                name: model.into(),
                source: format!("runs:/{run}/model"),
                run_id: Some(run.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    run
}

fn promotion(model: &str, version: i64, alias: &str, stage: &str) -> PromotionStep {
    PromotionStep {
        model: model.into(),
        version,
        alias: alias.into(),
        stage: Some(stage.into()),
        user: "ctflow".into(),
        comment: "pipeline p".into(),
    }
}

async fn promotion_is_all_or_nothing(store: Store) {
    let run = registered_versions(&store, "m", 2).await;
    assert_eq!(store.version_of_run("m", &run).await.unwrap(), Some(2));
    let pr = one_pipeline_run(&store).await;
    store
        .modify_pipeline_run(
            &pr.id,
            &[Phase::Pending],
            |r| r.phase = Phase::Evaluating,
            None,
        )
        .await
        .unwrap();
    // A step that cannot be made (version 9 does not exist) undoes the steps before it
    // and leaves the run where it was.
    let failed = store
        .promote_pipeline_run(
            &pr.id,
            &[Phase::Evaluating],
            &[
                promotion("m", 1, "champion", "Production"),
                promotion("m", 9, "challenger", "Staging"),
            ],
            |r| r.phase = Phase::Succeeded,
            None,
        )
        .await;
    assert_eq!(code(failed.unwrap_err()), ErrorCode::ResourceDoesNotExist);
    assert!(
        store
            .get_model_version_by_alias("m", "champion")
            .await
            .is_err()
    );
    assert_eq!(
        store.get_model_version("m", 1).await.unwrap().current_stage,
        "None"
    );
    assert_eq!(
        store.get_pipeline_run(&pr.id).await.unwrap().phase,
        Phase::Evaluating
    );
    assert!(
        store
            .registry_ledger("m")
            .await
            .unwrap()
            .iter()
            .all(|e| e.action == "version_created")
    );
    // A run that already moved on promotes nothing either.
    let stale = store
        .promote_pipeline_run(
            &pr.id,
            &[Phase::WaitingApproval],
            &[promotion("m", 1, "champion", "Production")],
            |r| r.phase = Phase::Succeeded,
            None,
        )
        .await
        .unwrap();
    assert!(stale.is_none());
    assert!(
        store
            .get_model_version_by_alias("m", "champion")
            .await
            .is_err()
    );
    let done = store
        .promote_pipeline_run(
            &pr.id,
            &[Phase::Evaluating],
            &[
                promotion("m", 2, "challenger", "Staging"),
                promotion("m", 2, "champion", "Production"),
            ],
            |r| r.phase = Phase::Succeeded,
            None,
        )
        .await
        .unwrap()
        .expect("promoted");
    assert_eq!(done.phase, Phase::Succeeded);
    assert_eq!(
        store
            .get_model_version_by_alias("m", "champion")
            .await
            .unwrap()
            .version,
        "2"
    );
    assert_eq!(
        store.get_model_version("m", 2).await.unwrap().current_stage,
        "Production"
    );
    // What the metrics endpoint counts.
    store
        .modify_pipeline_run(
            &pr.id,
            &[Phase::Succeeded],
            |_| {},
            Some(ctflow_store::PipelineRunEvent::gate(
                "ct",
                "pass",
                "accuracy 0.97 >= 0.9",
                serde_json::json!({}),
            )),
        )
        .await
        .unwrap();
    let counts = store.ct_counts().await.unwrap();
    assert_eq!(counts.runs, vec![("p".into(), "Succeeded".into(), 1)]);
    assert_eq!(
        counts.gates,
        vec![("p".into(), "ct".into(), "pass".into(), 1)]
    );
    assert!(counts.aliases.contains(&("m".into(), "champion".into(), 2)));
}

async fn rollback_follows_the_ledger(store: Store) {
    registered_versions(&store, "m", 3).await;
    assert_eq!(
        code(
            store
                .rollback_alias("m", "champion", true, "u")
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );
    for v in 1..=3 {
        store
            .set_registered_model_alias("m", "champion", v, "u")
            .await
            .unwrap();
        store
            .transition_model_version_stage("m", v, "Production", true, "u")
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .rollback_alias("m", "champion", true, "ops")
            .await
            .unwrap(),
        (3, 2)
    );
    assert_eq!(
        store.get_model_version("m", 2).await.unwrap().current_stage,
        "Production"
    );
    assert_eq!(
        store.get_model_version("m", 3).await.unwrap().current_stage,
        "Archived"
    );
    // Rolling back again goes one further back, not back and forth.
    assert_eq!(
        store
            .rollback_alias("m", "champion", false, "ops")
            .await
            .unwrap(),
        (2, 1)
    );
    assert_eq!(
        store
            .get_model_version_by_alias("m", "champion")
            .await
            .unwrap()
            .version,
        "1"
    );
    assert_eq!(
        code(
            store
                .rollback_alias("m", "champion", false, "ops")
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );
    let last = store
        .registry_ledger("m")
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.action == "alias_set")
        .unwrap();
    assert_eq!(
        (last.user.as_str(), last.comment.as_deref()),
        ("ops", Some("rollback of champion from version 2"))
    );
}

async fn controllers_report_their_presence(store: Store) {
    use ctflow_store::CONTROLLER_ROLE;
    use std::time::Duration;
    assert!(store.present(CONTROLLER_ROLE).await.expect("db").is_empty());
    let long = Duration::from_secs(60);
    for holder in ["host-2", "host-1"] {
        store
            .report_presence(CONTROLLER_ROLE, holder, long)
            .await
            .expect("db");
    }
    // Renewing is no second presence; the election's own lease is not a presence.
    store
        .report_presence(CONTROLLER_ROLE, "host-1", long)
        .await
        .expect("db");
    store
        .acquire_lease(CONTROLLER_ROLE, "host-3", long)
        .await
        .expect("db");
    assert_eq!(
        store.present(CONTROLLER_ROLE).await.expect("db"),
        ["host-1", "host-2"]
    );
    store
        .end_presence(CONTROLLER_ROLE, "host-2")
        .await
        .expect("db");
    assert_eq!(
        store.present(CONTROLLER_ROLE).await.expect("db"),
        ["host-1"]
    );
    // A presence that ran out (a controller that died) is no longer counted.
    store
        .report_presence("watcher", "w", Duration::from_millis(1))
        .await
        .expect("db");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.present("watcher").await.expect("db").is_empty());
}

async fn leases_have_one_holder(store: Store) {
    use std::time::Duration;
    let long = Duration::from_secs(60);
    assert_eq!(
        store
            .acquire_lease("controller", "a", long)
            .await
            .expect("db"),
        Some(1)
    );
    // Someone else cannot take a lease that has not ended; its holder renews it.
    assert_eq!(
        store
            .acquire_lease("controller", "b", long)
            .await
            .expect("db"),
        None
    );
    assert_eq!(
        store
            .acquire_lease("controller", "a", long)
            .await
            .expect("db"),
        Some(1)
    );
    let held = store
        .lease("controller")
        .await
        .expect("db")
        .expect("a lease");
    assert_eq!(held.holder, "a");
    // An ended lease goes to the next taker, with a new generation.
    store.release_lease("controller", "a").await.expect("db");
    assert_eq!(
        store
            .acquire_lease("controller", "b", long)
            .await
            .expect("db"),
        Some(2)
    );
    assert_eq!(
        store
            .acquire_lease("controller", "a", long)
            .await
            .expect("db"),
        None
    );
    // Releasing someone else's lease changes nothing.
    store.release_lease("controller", "a").await.expect("db");
    assert_eq!(
        store
            .lease("controller")
            .await
            .expect("db")
            .expect("a lease")
            .holder,
        "b"
    );
    // A lease that ran out is free too.
    assert_eq!(
        store
            .acquire_lease("short", "a", Duration::from_millis(1))
            .await
            .expect("db"),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        store.acquire_lease("short", "b", long).await.expect("db"),
        Some(2)
    );
    // Many at once: exactly one wins.
    let takers = (0..8).map(|i| {
        let store = store.clone();
        async move { store.acquire_lease("race", &format!("t{i}"), long).await }
    });
    let won = futures::future::join_all(takers)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(won, 1);
}

fn otlp_span(trace: u8, span: u8, parent: Option<u8>, start_ms: u64, end_ms: u64) -> SpanRecord {
    use ctflow_core::traces::otlp::{IncomingSpan, StatusCode};
    use ctflow_core::traces::value::AttrValue;
    SpanRecord::from_otlp(&IncomingSpan {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span-{span}"),
        start_time_unix_nano: start_ms * 1_000_000,
        end_time_unix_nano: end_ms * 1_000_000,
        attributes: vec![
            (
                "mlflow.spanInputs".into(),
                AttrValue::Map(vec![("q".into(), AttrValue::Int(i64::from(span)))]),
            ),
            ("note".into(), AttrValue::Str(format!("needle-{trace}"))),
        ],
        events: Vec::new(),
        links: Vec::new(),
        status: if span == 9 {
            StatusCode::Error
        } else {
            StatusCode::Ok
        },
        status_message: String::new(),
    })
}

fn report(
    trace_id: &str,
    experiment_id: i64,
    request_time: i64,
    tags: &[(&str, &str)],
) -> TraceInfo {
    TraceInfo {
        trace_id: trace_id.into(),
        experiment_id,
        request_time,
        execution_duration: Some(40),
        state: TraceState::Ok,
        client_request_id: None,
        request_preview: None,
        response_preview: Some("reported".into()),
        metadata: [(
            "mlflow.trace.sizeStats".to_string(),
            r#"{"num_spans": 2}"#.to_string(),
        )]
        .into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        assessments: Vec::new(),
    }
}

/// Online scoring configurations: one per scorer (an update replaces it, with a new id),
/// MLflow's checks on the rate, filter and judge model, and the active scorers the online
/// scorer runs (rate above zero, a gateway judge, latest version, active experiment).
async fn online_scoring_configs(store: Store) {
    let exp: i64 = store
        .create_experiment("judged", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    let gateway = r#"{"instructions_judge_pydantic_data": {"model": "gateway:/judge", "instructions": "Is {{ outputs }} polite?"}}"#;
    let judge = store.register_scorer(exp, "polite", gateway).await.unwrap();
    let plain = store
        .register_scorer(exp, "custom", r#"{"call_source": "return 1"}"#)
        .await
        .unwrap();

    let first = store
        .upsert_online_scoring_config(exp, "polite", 0.5, Some("status = 'OK'"))
        .await
        .unwrap();
    assert_eq!(first.scorer_id, judge.scorer_id);
    assert_eq!(first.experiment_id, exp.to_string());
    assert_eq!(first.filter_string.as_deref(), Some("status = 'OK'"));
    let second = store
        .upsert_online_scoring_config(exp, "polite", 0.8, None)
        .await
        .unwrap();
    assert_ne!(
        first.online_scoring_config_id,
        second.online_scoring_config_id
    );
    let ids = vec![
        judge.scorer_id.clone(),
        plain.scorer_id.clone(),
        "nope".to_string(),
    ];
    assert_eq!(
        store.online_scoring_configs(&ids).await.unwrap(),
        vec![second.clone()]
    );

    for (name, rate, filter, expected) in [
        ("polite", 1.5, None, ErrorCode::InvalidParameterValue),
        (
            "polite",
            0.5,
            Some("status = "),
            ErrorCode::InvalidParameterValue,
        ),
        ("custom", 0.5, None, ErrorCode::InvalidParameterValue),
        ("missing", 0.5, None, ErrorCode::ResourceDoesNotExist),
    ] {
        let err = store
            .upsert_online_scoring_config(exp, name, rate, filter)
            .await
            .unwrap_err();
        assert_eq!(code(err), expected, "{name} {rate} {filter:?}");
    }
    // A rate of zero switches a scorer off, whatever its judge.
    store
        .upsert_online_scoring_config(exp, "custom", 0.0, None)
        .await
        .unwrap();

    let active = store.active_online_scorers().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].name, "polite");
    assert_eq!(active[0].scorer_version, 1);
    assert_eq!(active[0].online_config, second);
    // A new version that is not a gateway judge leaves the configuration idle.
    store
        .register_scorer(exp, "polite", r#"{"call_source": "x"}"#)
        .await
        .unwrap();
    assert!(store.active_online_scorers().await.unwrap().is_empty());
    store.register_scorer(exp, "polite", gateway).await.unwrap();
    assert_eq!(
        store.active_online_scorers().await.unwrap()[0].scorer_version,
        3
    );
    // A deleted experiment's scorers rest; deleting a scorer deletes its configuration.
    store.delete_experiment(exp).await.unwrap();
    assert!(store.active_online_scorers().await.unwrap().is_empty());
    store.restore_experiment(exp).await.unwrap();
    store.delete_scorer(exp, "polite", None).await.unwrap();
    let left: Vec<String> = store
        .online_scoring_configs(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.scorer_id)
        .collect();
    assert_eq!(left, vec![plain.scorer_id.clone()]);
}

async fn traces_spans_and_assessments(store: Store) {
    let exp: i64 = store
        .create_experiment("traces", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    let other: i64 = store
        .create_experiment("other", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    let first = format!("tr-{}", "01".repeat(16));
    let second = format!("tr-{}", "02".repeat(16));

    // Spans first: the record follows from them, then the report overwrites its times.
    store
        .log_spans(exp, &[otlp_span(1, 1, None, 1_000, 1_100)])
        .await
        .unwrap();
    let info = store.get_trace_info(&first).await.unwrap();
    assert_eq!(
        (info.request_time, info.execution_duration),
        (1_000, Some(100))
    );
    assert_eq!(info.state, TraceState::Ok);
    assert_eq!(info.request_preview.as_deref(), Some(r#"{"q": 1}"#));
    assert_eq!(info.tags["mlflow.trace.spansLocation"], "TRACKING_STORE");
    assert_eq!(
        info.tags["mlflow.artifactLocation"],
        format!("mlflow-artifacts:/{exp}/traces/{first}/artifacts")
    );
    let reported = store
        .start_trace(&report(&first, exp, 990, &[("env", "prod")]))
        .await
        .unwrap();
    assert_eq!(
        (reported.request_time, reported.execution_duration),
        (990, Some(40))
    );
    assert_eq!(reported.request_preview.as_deref(), Some(r#"{"q": 1}"#));
    assert_eq!(reported.metadata["mlflow.trace.infoFinalized"], "true");
    // A late child span does not move a reported trace's times.
    store
        .log_spans(exp, &[otlp_span(1, 2, Some(1), 1_050, 5_000)])
        .await
        .unwrap();
    let info = store.get_trace_info(&first).await.unwrap();
    assert_eq!(
        (info.request_time, info.execution_duration),
        (990, Some(40))
    );
    let spans = store
        .trace_spans(std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(spans[&first].len(), 2);
    assert!(
        spans[&first][0].contains("\"name\":\"span-1\""),
        "root first: {}",
        spans[&first][0]
    );

    // The report first, spans after; an error root span; a trace in another experiment.
    store
        .start_trace(&report(&second, exp, 2_000, &[("env", "dev")]))
        .await
        .unwrap();
    store
        .log_spans(exp, &[otlp_span(2, 9, None, 2_000, 2_010)])
        .await
        .unwrap();
    assert_eq!(
        store.get_trace_info(&second).await.unwrap().state,
        TraceState::Ok
    );
    assert_eq!(
        code(
            store
                .log_spans(other, &[otlp_span(2, 3, Some(9), 2_001, 2_002)])
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(
            store
                .start_trace(&report(&second, other, 2_000, &[]))
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    let search = |filter: &str, order: &[&str], max: i64, token: Option<String>| TraceSearch {
        experiment_ids: vec![exp],
        filter: parse_trace_filter(filter).unwrap(),
        order_by: parse_trace_order_by(&order.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .unwrap(),
        max_results: max,
        page_token: token,
    };
    let ids = async |s: TraceSearch| -> (Vec<String>, Option<String>) {
        let (infos, next) = store.search_traces(&s).await.unwrap();
        (infos.into_iter().map(|i| i.trace_id).collect(), next)
    };
    assert_eq!(
        ids(search("", &[], 10, None)).await.0,
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        ids(search("tags.env = 'prod'", &[], 10, None)).await.0,
        vec![first.clone()]
    );
    assert_eq!(
        ids(search("trace.text LIKE '%needle-2%'", &[], 10, None))
            .await
            .0,
        vec![second.clone()]
    );
    assert_eq!(
        ids(search("span.name = 'span-2'", &[], 10, None)).await.0,
        vec![first.clone()]
    );
    assert_eq!(
        ids(search("timestamp_ms > 1000", &[], 10, None)).await.0,
        vec![second.clone()]
    );
    assert_eq!(
        ids(search(
            "metadata.`mlflow.trace.infoFinalized` = 'true'",
            &[],
            10,
            None
        ))
        .await
        .0
        .len(),
        2
    );
    let (page, next) = ids(search("", &["timestamp ASC"], 1, None)).await;
    assert_eq!(page, vec![first.clone()]);
    assert_eq!(
        ids(search("", &["timestamp ASC"], 1, next)).await,
        (vec![second.clone()], None)
    );
    assert_eq!(
        store
            .count_traces(&[exp], &parse_trace_filter("tags.env != 'prod'").unwrap())
            .await
            .unwrap(),
        1
    );

    // Links to runs, found by `run_id`.
    let run = new_run(&store, exp, "r").await;
    store
        .link_traces_to_run(std::slice::from_ref(&second), &run)
        .await
        .unwrap();
    store
        .link_traces_to_run(std::slice::from_ref(&second), &run)
        .await
        .unwrap();
    assert_eq!(
        ids(search(&format!("run_id = '{run}'"), &[], 10, None))
            .await
            .0,
        vec![second.clone()]
    );

    // Tags: the server's own cannot be moved.
    store.set_trace_tag(&first, "k", "v").await.unwrap();
    store.delete_trace_tag(&first, "k").await.unwrap();
    assert_eq!(
        code(store.delete_trace_tag(&first, "k").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        code(
            store
                .set_trace_tag(&first, "mlflow.artifactLocation", "/etc")
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParameterValue
    );

    // Assessments: an override makes the original invalid until the override goes.
    let fields = |name: &str, extra: serde_json::Value| {
        let mut value = serde_json::json!({"assessment_name": name, "feedback": {"value": 4}});
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ctflow_core::traces::validate_new_assessment(&value).unwrap()
    };
    let original = store
        .create_assessment(&first, fields("quality", serde_json::json!({})))
        .await
        .unwrap();
    let original_id = original["assessment_id"].as_str().unwrap().to_string();
    let correction = store
        .create_assessment(
            &first,
            fields("quality", serde_json::json!({"overrides": original_id})),
        )
        .await
        .unwrap();
    let correction_id = correction["assessment_id"].as_str().unwrap().to_string();
    assert_eq!(
        store.get_assessment(&first, &original_id).await.unwrap()["valid"],
        false
    );
    let updated = store
        .update_assessment(
            &first,
            &correction_id,
            &serde_json::json!({"rationale": "why"}),
            "rationale",
        )
        .await
        .unwrap();
    assert_eq!(updated["rationale"], "why");
    store
        .delete_assessment(&first, &correction_id)
        .await
        .unwrap();
    assert_eq!(
        store.get_assessment(&first, &original_id).await.unwrap()["valid"],
        true
    );
    assert_eq!(
        code(
            store
                .get_assessment(&first, &correction_id)
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    assert_eq!(
        store
            .get_trace_info(&first)
            .await
            .unwrap()
            .assessments
            .len(),
        1
    );

    // Deletes take everything of the trace with them; the oldest go first.
    assert_eq!(
        store
            .delete_traces(
                exp,
                &TraceDeletion::Before {
                    max_timestamp_ms: i64::MAX,
                    max_traces: Some(1)
                }
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        code(store.get_trace_info(&first).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    assert!(
        store
            .trace_spans(std::slice::from_ref(&first))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .delete_traces(exp, &TraceDeletion::Ids(vec![second.clone()]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(ids(search("", &[], 10, None)).await.0, Vec::<String>::new());
}

async fn run_all(mut open: impl AsyncFnMut(&str) -> Store) {
    let mut failures = Vec::new();
    for (name, case) in CASES {
        let store = open(name).await;
        let result = tokio::spawn(case(store.clone())).await;
        store.close().await;
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

fn options(uri: String) -> StoreOptions {
    StoreOptions {
        backend_store_uri: uri,
        default_artifact_root: "mlflow-artifacts:/".into(),
        max_connections: 4,
        durability: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run_all(async |name| {
        let uri = format!("sqlite:///{}/{name}.db", dir.path().display());
        Store::open(options(uri)).await.unwrap()
    })
    .await;
}

/// An in-memory SQLite store writes runs and reads histories through sqlx, where a file
/// does both on SQLite's own interface: the same cases hold on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_sqlite_in_memory() {
    run_all(async |_| {
        Store::open(options("sqlite:///:memory:".into()))
            .await
            .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_postgres() {
    let pg = support::TempPostgres::start();
    run_all(async |name| {
        Store::open(options(pg.create_database(name)))
            .await
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn sqlite_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}/durable.db", dir.path().display());
    let store = Store::open(options(uri.clone())).await.unwrap();
    let id = new_run(&store, 0, "durable").await;
    store.log_metric(&id, metric("m", 1.0, 1, 0)).await.unwrap();
    drop(store);
    let reopened = Store::open(options(uri)).await.unwrap();
    assert_eq!(reopened.get_run(&id).await.unwrap().data.metrics.len(), 1);
}

#[tokio::test]
async fn a_database_in_a_missing_absolute_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo").join("deeper");
    let uri = format!("sqlite:///{}/ctflow.db", missing.display());
    let Err(error) = Store::open(options(uri)).await else {
        panic!("a database in a folder that is not there was opened");
    };
    assert!(
        error
            .to_string()
            .contains("does not exist: create it first"),
        "{error}"
    );
    assert!(!dir.path().join("typo").exists(), "no folder is made");
}

/// Separate processes on one SQLite file (here: two stores, each with its own writer):
/// read-then-write transactions must wait for the other writer, not fail with
/// SQLITE_BUSY_SNAPSHOT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_shared_by_two_writers_loses_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}/shared.db", dir.path().display());
    let first = Store::open(options(uri.clone())).await.unwrap();
    let second = Store::open(options(uri)).await.unwrap();
    let doc = pipeline_document("shared", serde_json::json!({"concurrencyPolicy": "Allow"}));
    first.put_pipeline(&doc, "api", "/base").await.unwrap();
    let writers = [first.clone(), second.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            tokio::spawn(async move {
                for i in 0..40 {
                    let event = TriggerEvent::new("shared", "manual", format!("manual:{w}-{i}"));
                    let Recorded::Created(run) = store.record_trigger(&event).await? else {
                        panic!("a new key records a run");
                    };
                    store
                        .modify_pipeline_run(
                            &run.id,
                            &[Phase::Pending],
                            |r| r.phase = Phase::Queued,
                            Some(PipelineRunEvent::new("attempt", "queued")),
                        )
                        .await?;
                }
                Ok::<(), ctflow_store::Error>(())
            })
        });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap().expect("every write commits");
    }
    let queued = first
        .list_pipeline_runs(Some("shared"), &[Phase::Queued], 1000)
        .await
        .unwrap();
    assert_eq!(queued.len(), 80);
}

async fn users_tokens_and_grants(store: Store) {
    use ctflow_core::auth::Permission;
    use ctflow_store::auth::{EXPERIMENT, REGISTERED_MODEL};
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = store.create_user("alice", "hash-a", false).await.unwrap();
    let admin = store.create_user("root", "hash-r", true).await.unwrap();
    assert!(admin.is_admin && !alice.is_admin);
    assert_eq!(
        code(
            store
                .create_user("alice", "other", false)
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceAlreadyExists
    );
    let (found, hash) = store.user_with_hash("alice").await.unwrap().unwrap();
    assert_eq!((found, hash.as_str()), (alice.clone(), "hash-a"));
    store.set_password_hash("alice", "hash-b").await.unwrap();
    store.set_admin("alice", true).await.unwrap();
    assert!(store.get_user("alice").await.unwrap().is_admin);
    store.set_admin("alice", false).await.unwrap();
    assert_eq!(
        code(store.set_password_hash("nobody", "h").await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist
    );
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "root"]);

    // Tokens: found by their hash until they expire or are deleted.
    let kept = store
        .create_token(alice.id, "ci", "h1", None)
        .await
        .unwrap();
    store
        .create_token(alice.id, "old", "h2", Some(ctflow_core::now_ms() - 1))
        .await
        .unwrap();
    assert_eq!(
        store.user_by_token("h1").await.unwrap().map(|u| u.id),
        Some(alice.id)
    );
    assert_eq!(store.user_by_token("h2").await.unwrap(), None, "expired");
    assert_eq!(store.list_tokens(alice.id).await.unwrap().len(), 2);
    assert_eq!(
        code(store.delete_token(admin.id, kept.id).await.unwrap_err()),
        ErrorCode::ResourceDoesNotExist,
        "only the owner deletes a token"
    );
    store.delete_token(alice.id, kept.id).await.unwrap();
    assert_eq!(store.user_by_token("h1").await.unwrap(), None);
    // A dashboard session ends by its token, whoever asks.
    store
        .create_token(alice.id, "dashboard session", "h3", None)
        .await
        .unwrap();
    assert!(store.delete_token_by_hash("h3").await.unwrap());
    assert!(!store.delete_token_by_hash("h3").await.unwrap());
    assert_eq!(store.user_by_token("h3").await.unwrap(), None);

    // Grants: one per user and resource, replaced, renamed, dropped.
    store
        .grant(EXPERIMENT, "7", alice.id, Permission::Read)
        .await
        .unwrap();
    store
        .grant(EXPERIMENT, "7", alice.id, Permission::Edit)
        .await
        .unwrap();
    store
        .grant(REGISTERED_MODEL, "iris", alice.id, Permission::Manage)
        .await
        .unwrap();
    assert_eq!(
        store.granted(EXPERIMENT, "7", alice.id).await.unwrap(),
        Some(Permission::Edit)
    );
    assert_eq!(
        store.granted(EXPERIMENT, "8", alice.id).await.unwrap(),
        None
    );
    store
        .rename_grants(REGISTERED_MODEL, "iris", "iris-v2")
        .await
        .unwrap();
    let models = store.grants_of(alice.id, REGISTERED_MODEL).await.unwrap();
    assert_eq!(models.get("iris-v2"), Some(&Permission::Manage));
    assert_eq!(models.len(), 1);
    store
        .drop_grants(REGISTERED_MODEL, "iris-v2")
        .await
        .unwrap();
    assert!(
        store
            .grants_of(alice.id, REGISTERED_MODEL)
            .await
            .unwrap()
            .is_empty()
    );
    store.revoke(EXPERIMENT, "7", alice.id).await.unwrap();
    assert_eq!(
        store.granted(EXPERIMENT, "7", alice.id).await.unwrap(),
        None
    );

    // Deleting a user takes their tokens and grants along.
    store
        .grant(EXPERIMENT, "9", alice.id, Permission::Read)
        .await
        .unwrap();
    store
        .create_token(alice.id, "again", "h3", None)
        .await
        .unwrap();
    store.delete_user("alice").await.unwrap();
    assert_eq!(store.user_by_token("h3").await.unwrap(), None);
    assert!(
        store
            .grants_of(alice.id, EXPERIMENT)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count_users().await.unwrap(), 1);
}

async fn feedback_labels_are_idempotent(store: Store) {
    let label = |id: &str, row: u32, value: serde_json::Value| NewLabel {
        request_id: id.into(),
        row,
        label: value,
    };
    assert_eq!(
        code(
            store
                .put_feedback("nobody", &[label("a", 0, 1.into())], 10)
                .await
                .unwrap_err()
        ),
        ErrorCode::ResourceDoesNotExist
    );
    store
        .create_registered_model("iris", &[], None)
        .await
        .unwrap();
    let first = vec![
        label("a", 0, 1.into()),
        label("a", 1, "setosa".into()),
        label("b", 0, true.into()),
    ];
    let outcome = store.put_feedback("iris", &first, 10).await.unwrap();
    assert_eq!(
        outcome,
        FeedbackOutcome {
            stored: 3,
            unchanged: 0,
            replaced: 0
        }
    );
    // The same labels again change nothing; a different one replaces.
    let again = vec![label("a", 0, 1.into()), label("a", 1, "virginica".into())];
    let outcome = store.put_feedback("iris", &again, 20).await.unwrap();
    assert_eq!(
        outcome,
        FeedbackOutcome {
            stored: 0,
            unchanged: 1,
            replaced: 1
        }
    );
    let all = store.list_feedback("iris", 0, 0, 100).await.unwrap();
    let seen: Vec<(&str, u32, &serde_json::Value, i64)> = all
        .iter()
        .map(|l| (l.request_id.as_str(), l.row, &l.label, l.received_time))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a", 0, &serde_json::json!(1), 10),
            ("a", 1, &serde_json::json!("virginica"), 20),
            ("b", 0, &serde_json::json!(true), 10),
        ]
    );
    // Paging by arrival order, and only what arrived since a time.
    let page = store.list_feedback("iris", 0, all[0].seq, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].request_id, "a");
    assert_eq!(page[0].row, 1);
    let recent = store.list_feedback("iris", 15, 0, 100).await.unwrap();
    assert_eq!(recent.len(), 1);
    // The labels follow a rename and go with a deleted model.
    store
        .rename_registered_model("iris", "iris-2")
        .await
        .unwrap();
    assert_eq!(
        store
            .list_feedback("iris-2", 0, 0, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    store.delete_registered_model("iris-2").await.unwrap();
    store
        .create_registered_model("iris-2", &[], None)
        .await
        .unwrap();
    assert!(
        store
            .list_feedback("iris-2", 0, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn shadow_numbers_are_kept_per_replica_while_shadowing(store: Store) {
    use ctflow_core::shadow::{ShadowProgress, ShadowTally};
    store
        .put_pipeline(&pipeline_document("p", serde_json::json!({})), "api", "/")
        .await
        .unwrap();
    let Recorded::Created(run) = store
        .record_trigger(&TriggerEvent::new("p", "manual", "shadow".into()))
        .await
        .unwrap()
    else {
        panic!("created")
    };
    let tally = |requests: u64| ShadowTally {
        requests,
        rows: requests,
        agreed_rows: requests,
        champion_p99_ms: Some(2.5),
        ..ShadowTally::default()
    };
    // Not shadowing yet: nothing is recorded.
    assert!(
        store
            .record_shadow(&run.id, "pod-a", tally(1), &[])
            .await
            .unwrap()
            .is_none()
    );
    store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Pending],
            |r| {
                r.phase = Phase::Shadowing;
                r.shadow = Some(ShadowProgress {
                    started: 7,
                    champion: Some(1),
                    ..ShadowProgress::default()
                });
            },
            None,
        )
        .await
        .unwrap()
        .expect("moved");
    let kept = ctflow_core::shadow::prediction_rows(
        "req-1",
        &serde_json::json!([0, 1]),
        &serde_json::json!([0, 2]),
    );
    for (replica, requests) in [("pod-a", 5), ("pod-b", 3), ("pod-a", 9)] {
        store
            .record_shadow(&run.id, replica, tally(requests), &kept)
            .await
            .unwrap()
            .expect("shadowing");
    }
    let read = store.get_pipeline_run(&run.id).await.unwrap();
    let progress = read.shadow.expect("shadow numbers");
    assert_eq!((progress.started, progress.champion), (7, Some(1)));
    assert_eq!(progress.replicas.len(), 2);
    assert_eq!(
        progress.replicas["pod-a"].requests, 9,
        "the latest report wins"
    );
    assert_eq!(progress.replicas["pod-a"].champion_p99_ms, Some(2.5));
    assert!(progress.replicas["pod-b"].updated > 0);
    assert_eq!(progress.summary().requests, 12);
    // Rows sent again are kept once.
    assert_eq!(store.shadow_predictions(&run.id).await.unwrap(), kept);
    // Once the gate decided, a late report changes nothing.
    store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Shadowing],
            |r| r.phase = Phase::GateFailed,
            None,
        )
        .await
        .unwrap()
        .expect("moved");
    assert!(
        store
            .record_shadow(&run.id, "pod-a", tally(100), &kept)
            .await
            .unwrap()
            .is_none()
    );
    let read = store.get_pipeline_run(&run.id).await.unwrap();
    assert_eq!(read.shadow.map(|s| s.replicas["pod-a"].requests), Some(9));
}

/// A store written before the narrow metric table (schema version 15): its metrics must
/// come through migration 16 unchanged, and logging must carry on. The old schema is
/// built from the migration files of that release and its rows are written as that
/// release wrote them (value, NaN flag, exact bits, the optional model and dataset).
async fn metrics_survive_the_narrow_table_migration(uri: String) {
    use sqlx::Executor;
    const OLD_SQLITE: [&str; 15] = [
        include_str!("../migrations/sqlite/0001_tracking.sql"),
        include_str!("../migrations/sqlite/0002_registry.sql"),
        include_str!("../migrations/sqlite/0003_pipelines.sql"),
        include_str!("../migrations/sqlite/0004_leases.sql"),
        include_str!("../migrations/sqlite/0005_auth.sql"),
        include_str!("../migrations/sqlite/0006_write_probe.sql"),
        include_str!("../migrations/sqlite/0007_data_snapshots.sql"),
        include_str!("../migrations/sqlite/0008_feedback.sql"),
        include_str!("../migrations/sqlite/0009_shadow.sql"),
        include_str!("../migrations/sqlite/0010_traces.sql"),
        include_str!("../migrations/sqlite/0011_issues.sql"),
        include_str!("../migrations/sqlite/0012_scorers.sql"),
        include_str!("../migrations/sqlite/0013_evaluation_datasets.sql"),
        include_str!("../migrations/sqlite/0014_gateway_secrets.sql"),
        include_str!("../migrations/sqlite/0015_gateway_endpoints.sql"),
    ];
    const OLD_POSTGRES: [&str; 15] = [
        include_str!("../migrations/postgres/0001_tracking.sql"),
        include_str!("../migrations/postgres/0002_registry.sql"),
        include_str!("../migrations/postgres/0003_pipelines.sql"),
        include_str!("../migrations/postgres/0004_leases.sql"),
        include_str!("../migrations/postgres/0005_auth.sql"),
        include_str!("../migrations/postgres/0006_write_probe.sql"),
        include_str!("../migrations/postgres/0007_data_snapshots.sql"),
        include_str!("../migrations/postgres/0008_feedback.sql"),
        include_str!("../migrations/postgres/0009_shadow.sql"),
        include_str!("../migrations/postgres/0010_traces.sql"),
        include_str!("../migrations/postgres/0011_issues.sql"),
        include_str!("../migrations/postgres/0012_scorers.sql"),
        include_str!("../migrations/postgres/0013_evaluation_datasets.sql"),
        include_str!("../migrations/postgres/0014_gateway_secrets.sql"),
        include_str!("../migrations/postgres/0015_gateway_endpoints.sql"),
    ];
    sqlx::any::install_default_drivers();
    let sqlite = uri.starts_with("sqlite:");
    let pool = sqlx::AnyPool::connect(&if sqlite {
        format!("{}?mode=rwc", uri.replacen("sqlite:///", "sqlite://", 1))
    } else {
        uri.clone()
    })
    .await
    .unwrap();
    pool.execute(
        "CREATE TABLE ctflow_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .unwrap();
    for (i, sql) in (if sqlite { OLD_SQLITE } else { OLD_POSTGRES })
        .iter()
        .enumerate()
    {
        pool.execute(*sql).await.unwrap();
        sqlx::query("INSERT INTO ctflow_migrations (version, applied_at) VALUES ($1, 0)")
            .bind(i as i64 + 1)
            .execute(&pool)
            .await
            .unwrap();
    }
    for run in ["run-a", "run-b"] {
        sqlx::query(
            "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, artifact_uri, lifecycle_stage) \
             VALUES ($1, $1, 0, 'u', 'RUNNING', 1, 'mlflow-artifacts:/0/x/artifacts', 'active')",
        )
        .bind(run)
        .execute(&pool)
        .await
        .unwrap();
    }
    // (run, key, timestamp, step, value, model id): what the old release stored.
    type OldPoint<'a> = (&'a str, &'a str, i64, i64, f64, Option<&'a str>);
    let old: Vec<OldPoint> = vec![
        ("run-a", "loss", 10, 0, 0.5, None),
        ("run-a", "loss", 10, 0, -2.0, None),
        ("run-a", "loss", 10, 0, f64::NAN, None),
        ("run-a", "loss", 20, 1, -0.25, None),
        ("run-a", "loss", 30, 2, f64::MAX, None),
        ("run-a", "acc", 40, 3, 0.875, Some("m-1")),
        ("run-b", "loss", 5, 0, 1.0 / 3.0, None),
    ];
    for (run, key, timestamp, step, value, model) in &old {
        let (stored, is_nan, bits) = if value.is_nan() {
            (0.0, 1, f64::NAN.to_bits() as i64)
        } else {
            (*value, 0, value.to_bits() as i64)
        };
        sqlx::query(
            "INSERT INTO metrics (run_uuid, key, timestamp, step, value, is_nan, value_bits, model_id, dataset_name, dataset_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
        )
        .bind(*run)
        .bind(*key)
        .bind(*timestamp)
        .bind(*step)
        .bind(stored)
        .bind(is_nan)
        .bind(bits)
        .bind(model.map(str::to_string))
        .execute(&pool)
        .await
        .unwrap();
    }
    for (run, key, timestamp, step, value) in [
        ("run-a", "loss", 30, 2, f64::MAX),
        ("run-a", "acc", 40, 3, 0.875),
        ("run-b", "loss", 5, 0, 1.0 / 3.0),
    ] {
        sqlx::query(
            "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits) \
             VALUES ($1, $2, $3, 0, $4, $5, $6)",
        )
        .bind(run)
        .bind(key)
        .bind(value)
        .bind(timestamp)
        .bind(step)
        .bind(value.to_bits() as i64)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = Store::open(options(uri)).await.unwrap();
    let history = |run: &'static str, key: &'static str| {
        let store = store.clone();
        async move {
            let (points, _) = store
                .get_metric_history(run, key, None, None)
                .await
                .unwrap();
            points
                .iter()
                .map(|p| (p.timestamp, p.step, p.value.to_bits()))
                .collect::<Vec<_>>()
        }
    };
    // MLflow's history order: timestamp, step, value (a NaN counting as 0).
    assert_eq!(
        history("run-a", "loss").await,
        [
            (10, 0, (-2.0f64).to_bits()),
            (10, 0, f64::NAN.to_bits()),
            (10, 0, 0.5f64.to_bits()),
            (20, 1, (-0.25f64).to_bits()),
            (30, 2, f64::MAX.to_bits()),
        ]
    );
    assert_eq!(history("run-a", "acc").await, [(40, 3, 0.875f64.to_bits())]);
    assert_eq!(
        history("run-b", "loss").await,
        [(5, 0, (1.0f64 / 3.0).to_bits())]
    );
    // Logging carries on: into an old series, and into new ones after the old ids.
    store
        .log_batch(
            "run-b",
            vec![metric("loss", 0.25, 6, 1), metric("fresh", 1.5, 6, 1)],
            vec![],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(history("run-b", "loss").await.len(), 2);
    assert_eq!(history("run-b", "fresh").await, [(6, 1, 1.5f64.to_bits())]);
    assert_eq!(history("run-a", "loss").await.len(), 5);
    let latest = store.get_run("run-b").await.unwrap().data.metrics;
    assert_eq!(
        latest
            .iter()
            .map(|m| (m.key.as_str(), m.value))
            .collect::<Vec<_>>(),
        [("fresh", 1.5), ("loss", 0.25)]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_survive_the_narrow_table_migration_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    metrics_survive_the_narrow_table_migration(format!(
        "sqlite:///{}/old.db",
        dir.path().display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_survive_the_narrow_table_migration_postgres() {
    let pg = support::TempPostgres::start();
    metrics_survive_the_narrow_table_migration(pg.create_database("old_schema")).await;
}

/// PostgreSQL's autovacuum analyses a table a minute or more after a tenth of it changed:
/// until then a store filled in a burst is searched with the planner's defaults (a
/// filtered, ordered search over 10k fresh runs took 338 ms with them, 3.4 ms after
/// ANALYZE). The store analyses its search tables itself as the runs double, as on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_search_statistics_follow_a_burst_of_runs() {
    let pg = support::TempPostgres::start();
    let uri = pg.create_database("statistics");
    let store = Store::open(options(uri.clone())).await.unwrap();
    let experiment: i64 = store
        .create_experiment("burst", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..150 {
        new_run(&store, experiment, &format!("r{i}")).await;
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&uri).await.unwrap();
    let analysed = "SELECT count(*) FROM pg_stat_user_tables \
                    WHERE relname IN ('runs', 'latest_metrics', 'params', 'tags') \
                    AND last_analyze IS NOT NULL";
    // NB: the live-row count the store reads reaches the statistics view within a few
    // seconds of the inserts; autovacuum's own passes show as last_autoanalyze instead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let tables: i64 = sqlx::query_scalar(analysed).fetch_one(&pool).await.unwrap();
        if tables == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the search tables were not analysed after 150 runs ({tables} of 4)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    pool.close().await;
    store.close().await;
}

/// The plans SQLite picks for the common search shapes over an experiment of several
/// thousand runs, read with EXPLAIN QUERY PLAN: none of them may walk every run of the
/// experiment or sort the matches in a temporary b-tree when an index gives the order.
/// (PostgreSQL plans by cost and picks sequential scans on tables this small, so its plans
/// are not pinned here; the benchmarks measure it at 10k and more runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_search_shapes_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}/plans.db", dir.path().display());
    let store = Store::open(StoreOptions {
        durability: ctflow_store::Durability::Relaxed,
        ..options(uri)
    })
    .await
    .unwrap();
    let experiment: i64 = store
        .create_experiment("plans", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    let other: i64 = store
        .create_experiment("other", None, &[])
        .await
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..3000i64 {
        let id = new_run(&store, if i % 3 == 0 { other } else { experiment }, "r").await;
        store
            .log_batch(
                &id,
                vec![
                    metric("m1", (i * 7919 % 1000) as f64 / 1000.0, 1, 0),
                    metric("m2", i as f64, 1, 0),
                ],
                vec![KeyValue::new("p1", format!("v{}", i % 10))],
                vec![],
            )
            .await
            .unwrap();
    }
    store.refresh_statistics().await.unwrap();
    let plan = async |filter: &str, order: &str| {
        let search = RunSearch {
            experiment_ids: vec![experiment],
            filter: parse_run_filter(filter).unwrap(),
            view: ViewType::ActiveOnly,
            max_results: 100,
            order_by: parse_run_order_by(&[order.to_string()]).unwrap(),
            page_token: None,
        };
        let lines = store.explain_run_search(&search).await.unwrap();
        eprintln!("{filter} / {order}:\n  {}", lines.join("\n  "));
        lines
    };
    const BY_EXPERIMENT: &str = "SEARCH r USING INDEX runs_by_experiment (experiment_id=?)";
    const BY_PARAM: &str = "SEARCH f0 USING COVERING INDEX params_by_key (key=? AND value=?)";
    // (filter, order, how the plan may start). A parameter equality alone may also walk
    // the experiment's runs newest first and stop at the page: both are cheap.
    let shapes = [
        // A range ordered by its metric, narrowed further: the ordered walk of the
        // metric's index, tried first (its fallback starts from the parameter).
        (
            "metrics.m1 > 0.5 and params.p1 = 'v3'",
            "metrics.m1 DESC",
            &["CO-ROUTINE f0"][..],
        ),
        (
            "metrics.m1 > 0.9",
            "metrics.m1 DESC",
            &[
                "SEARCH f0 USING COVERING INDEX latest_metrics_by_key (key=? AND is_nan=? AND value>?)",
            ][..],
        ),
        ("params.p1 = 'v3'", "", &[BY_PARAM, BY_EXPERIMENT][..]),
        ("", "", &[BY_EXPERIMENT][..]),
        ("", "attributes.start_time ASC", &[BY_EXPERIMENT][..]),
    ];
    for (filter, order, starts) in shapes {
        let lines = plan(filter, order).await;
        assert!(
            lines
                .first()
                .is_some_and(|first| starts.contains(&first.as_str())),
            "{filter} / {order}: {lines:#?}"
        );
        // NB: `SCAN f0` reads the walk's co-routine, its bounded entries.
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("SCAN ") && l != "SCAN f0"),
            "{filter} / {order} scans a whole table: {lines:#?}"
        );
    }
    let walk = plan("metrics.m1 > 0.5 and params.p1 = 'v3'", "metrics.m1 DESC").await;
    assert_eq!(
        walk.get(1).map(String::as_str),
        Some(
            "SEARCH w USING COVERING INDEX latest_metrics_by_key (key=? AND is_nan=? AND value>?)"
        ),
        "{walk:#?}"
    );
    // A metric range ordered by that metric reads the (key, value) index in order and
    // stops at the page: only ties are sorted, never every match.
    let ranged = plan("metrics.m1 > 0.9", "metrics.m1 DESC").await;
    assert!(
        !ranged.iter().any(|l| l == "USE TEMP B-TREE FOR ORDER BY"),
        "{ranged:#?}"
    );
    // The default order (newest first) comes from the index: the first page stops early.
    let unfiltered = plan("", "").await;
    assert!(
        !unfiltered.iter().any(|l| l.contains("TEMP B-TREE")),
        "{unfiltered:#?}"
    );
    store.close().await;
}
