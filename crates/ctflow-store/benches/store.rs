//! The store's hot operations without HTTP or JSON, on a SQLite file with durable commits
//! (and on PostgreSQL when `CTFLOW_BENCH_PG_URI` names an empty database): log-batch with
//! 1 and 8 writers, single-point logging with 16 writers (group commit), full history and
//! chart sampling of a 100k-point series, and run search over `CTFLOW_BENCH_RUNS` runs
//! (10,000 by default), and the registry's searches over 1000 versions. Prints one JSON
//! object per figure. The files go to a temporary
//! folder under `CTFLOW_BENCH_DIR` when it is set; `CTFLOW_BENCH_ONLY=ingest,history,search,registry`
//! runs some of the parts; `floor` measures SQLite alone writing the same batches (rusqlite),
//! the points alone in the store's 1000-row statements through rusqlite and through sqlx,
//! and the store's share of the floor. `CTFLOW_BENCH_ONLY=growth` grows one store to 10k, 100k and 1M
//! runs (`CTFLOW_BENCH_GROWTH`) and measures the reads at each size.
//!
//! `cargo bench -p ctflow-store --bench store`. Timings belong here, never in tests.

// Bench code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::{Duration, Instant};

use ctflow_core::entities::{KeyValue, ViewType};
use ctflow_core::filter::{
    parse_model_version_filter, parse_registered_model_filter, parse_run_filter, parse_run_order_by,
};
use ctflow_store::{
    BatchMetric, Durability, NewModelVersion, NewRun, RegistrySearch, RunSearch, Store,
    StoreOptions,
};

fn options(uri: &str, durability: Durability) -> StoreOptions {
    StoreOptions {
        backend_store_uri: uri.to_string(),
        default_artifact_root: "mlflow-artifacts:/".into(),
        max_connections: 8,
        durability,
    }
}

fn point(key: String, value: f64, timestamp: i64, step: i64) -> BatchMetric {
    BatchMetric {
        key,
        value,
        timestamp,
        step,
        model_id: None,
        dataset_name: None,
        dataset_digest: None,
    }
}

/// What the REST benchmark's log-batch sends: 10 keys x 100 steps.
fn batch(round: i64) -> Vec<BatchMetric> {
    (0..1000)
        .map(|i| {
            let step = round * 100 + i / 10;
            point(
                format!("k{}", i % 10),
                (i as f64).sin(),
                1_700_000_000_000 + step,
                step,
            )
        })
        .collect()
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index].as_secs_f64() * 1000.0
}

/// The median of `samples`, in milliseconds, as `figure`.
fn report_p50(backend: &str, figure: &str, samples: &mut [Duration]) {
    report(backend, figure, percentile(samples, 0.5), "ms");
}

fn report(backend: &str, figure: &str, value: f64, unit: &str) {
    println!(
        "{}",
        serde_json::json!({"backend": backend, "figure": figure, "value": (value * 100.0).round() / 100.0, "unit": unit})
    );
}

async fn new_run(store: &Store, experiment_id: i64) -> String {
    store
        .create_run(NewRun {
            experiment_id,
            user_id: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .info
        .run_id
}

async fn timed<F: AsyncFnMut()>(reps: usize, mut op: F) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        op().await;
        samples.push(started.elapsed());
    }
    samples
}

/// SQLite's own rate for what a log-batch stores, the floor under ctflow's ingest: the same
/// 1000-point batches written to the same schema (a fresh database the store migrated), one
/// transaction each (the points, then the ten series' latest values), the statements
/// prepared once and driven from Rust through SQLite's C interface, with the store's
/// file pragmas. No HTTP, no JSON, no checks: only SQLite.
fn sqlite_floor(file: &std::path::Path, batches: i64) -> f64 {
    let db = floor_connection(file);
    let run = "f".repeat(32);
    for key in 0..10 {
        db.execute(
            "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits, series_id) \
             VALUES (?1, ?2, 0, 0, 0, 0, 0, ?3)",
            rusqlite::params![run, format!("k{key}"), 1_000_000 + key],
        )
        .unwrap();
    }
    // The statements' arguments (the blocks included) are made before the clock starts.
    let work: Vec<Vec<BatchMetric>> = (0..batches).map(batch).collect();
    let blocks: Vec<Vec<BlockRow>> = work.iter().map(|p| block_rows(1_000_000, p)).collect();
    let mut insert = db
        .prepare(
            "INSERT INTO metric_blocks (series_id, first_step, last_step, points) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .unwrap();
    let mut latest = db
        .prepare(
            "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits, series_id) \
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7) ON CONFLICT (run_uuid, key) DO UPDATE SET \
             value = excluded.value, timestamp = excluded.timestamp, step = excluded.step, value_bits = excluded.value_bits",
        )
        .unwrap();
    let started = Instant::now();
    for (points, blocks) in work.iter().zip(&blocks) {
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        for (series, first, last, blob) in blocks {
            insert
                .execute(rusqlite::params![series, first, last, blob])
                .unwrap();
        }
        for m in &points[points.len() - 10..] {
            latest
                .execute(rusqlite::params![
                    run,
                    m.key,
                    m.value,
                    m.timestamp,
                    m.step,
                    m.value.to_bits() as i64,
                    point_columns(1_000_000, m)[0]
                ])
                .unwrap();
        }
        db.execute_batch("COMMIT").unwrap();
    }
    batches as f64 * 1000.0 / started.elapsed().as_secs_f64()
}

/// The store's file pragmas that bear on writing points.
const FLOOR_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -16384;";

fn floor_connection(file: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(file).unwrap();
    db.execute_batch(FLOOR_PRAGMAS).unwrap();
    db
}

/// A block row: series, first step, last step, the points packed as the store packs them
/// (per point, big-endian: step, timestamp, value key, NaN flag; see `point_blocks`).
type BlockRow = (i64, i64, i64, Vec<u8>);

/// A batch's blocks, one per series, as the store makes them; series numbered from
/// `series_base`.
fn block_rows(series_base: i64, points: &[BatchMetric]) -> Vec<BlockRow> {
    let mut columns: Vec<[i64; 5]> = points
        .iter()
        .map(|m| point_columns(series_base, m))
        .collect();
    columns.sort_unstable_by_key(|&[series, timestamp, step, value_key, is_nan]| {
        (series, step, timestamp, value_key, is_nan)
    });
    columns
        .chunk_by(|a, b| a[0] == b[0])
        .map(|block| {
            let mut blob = Vec::with_capacity(block.len() * 25);
            for &[_, timestamp, step, value_key, is_nan] in block {
                blob.extend_from_slice(&step.to_be_bytes());
                blob.extend_from_slice(&timestamp.to_be_bytes());
                blob.extend_from_slice(&value_key.to_be_bytes());
                blob.push(u8::from(is_nan != 0));
            }
            (block[0][0], block[0][2], block[block.len() - 1][2], blob)
        })
        .collect()
}

/// The store's points statement for a batch of ten series: one `INSERT` of ten blocks.
fn ten_block_insert() -> String {
    format!(
        "INSERT INTO metric_blocks (series_id, first_step, last_step, points) VALUES {}",
        ["(?, ?, ?, ?)"; 10].join(", ")
    )
}

/// A point's five integer columns, its series numbered from `series_base`.
fn point_columns(series_base: i64, m: &BatchMetric) -> [i64; 5] {
    let bits = m.value.to_bits() as i64;
    let value_key = if bits < 0 { !bits | i64::MIN } else { bits };
    let series = series_base + i64::from(m.key.as_bytes()[1] - b'0');
    [series, m.timestamp, m.step, value_key, 0]
}

/// The same batches' points (no latest values) as the store sends them, one ten-block
/// statement a batch, prepared once, the blocks packed on the clock as the store packs
/// them: SQLite alone, and the packing.
fn sqlite_block_statements(file: &std::path::Path, batches: i64) -> f64 {
    let db = floor_connection(file);
    let work: Vec<Vec<BatchMetric>> = (0..batches).map(batch).collect();
    let mut insert = db.prepare(&ten_block_insert()).unwrap();
    let started = Instant::now();
    for points in &work {
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        let blocks = block_rows(2_000_000, points);
        let columns = blocks.iter().flat_map(|(series, first, last, blob)| {
            [
                rusqlite::types::Value::Integer(*series),
                rusqlite::types::Value::Integer(*first),
                rusqlite::types::Value::Integer(*last),
                rusqlite::types::Value::Blob(blob.clone()),
            ]
        });
        assert_eq!(
            insert.execute(rusqlite::params_from_iter(columns)).unwrap(),
            10
        );
        db.execute_batch("COMMIT").unwrap();
    }
    batches as f64 * 1000.0 / started.elapsed().as_secs_f64()
}

/// The same statements as [`sqlite_block_statements`], bound and run through sqlx's `Any`
/// driver on one connection (the store's writer on PostgreSQL and in memory).
async fn sqlx_block_statements(uri: &str, batches: i64) -> f64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, FLOOR_PRAGMAS)
                    .await
                    .map(|_| ())
            })
        })
        .connect(uri)
        .await
        .unwrap();
    let sql = ten_block_insert();
    let work: Vec<Vec<BatchMetric>> = (0..batches).map(batch).collect();
    let started = Instant::now();
    for points in &work {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for (series, first, last, blob) in block_rows(3_000_000, points) {
            insert = insert.bind(series).bind(first).bind(last).bind(blob);
        }
        assert_eq!(insert.execute(&mut *tx).await.unwrap().rows_affected(), 10);
        tx.commit().await.unwrap();
    }
    let rate = batches as f64 * 1000.0 / started.elapsed().as_secs_f64();
    pool.close().await;
    rate
}

async fn ingest(backend: &str, store: &Store) {
    let experiment = store
        .create_experiment("ingest", None, &[])
        .await
        .unwrap()
        .parse::<i64>()
        .unwrap();
    for (writers, batches) in [(1usize, 40i64), (8, 10)] {
        let runs =
            futures::future::join_all((0..writers).map(|_| new_run(store, experiment))).await;
        let started = Instant::now();
        let tasks = runs.into_iter().map(|run| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..batches {
                    store
                        .log_batch(&run, batch(round), vec![], vec![])
                        .await
                        .unwrap();
                }
            })
        });
        for task in futures::future::join_all(tasks).await {
            task.unwrap();
        }
        let points = writers as f64 * batches as f64 * 1000.0;
        report(
            backend,
            &format!("log_batch_{writers}_writers"),
            points / started.elapsed().as_secs_f64(),
            "points/s",
        );
    }
    for writers in [1usize, 16] {
        let run = new_run(store, experiment).await;
        let per_writer = 200i64;
        let started = Instant::now();
        let tasks = (0..writers).map(|w| {
            let (store, run) = (store.clone(), run.clone());
            tokio::spawn(async move {
                for step in 0..per_writer {
                    store
                        .log_metric(&run, point(format!("w{w}"), step as f64, step, step))
                        .await
                        .unwrap();
                }
            })
        });
        for task in futures::future::join_all(tasks).await {
            task.unwrap();
        }
        report(
            backend,
            &format!("log_metric_{writers}_writers"),
            writers as f64 * per_writer as f64 / started.elapsed().as_secs_f64(),
            "points/s",
        );
    }
}

/// A run holding one 100k-point series under `key`, logged in 1000-point batches.
async fn series_run(store: &Store, experiment: i64, key: &str) -> String {
    let run = new_run(store, experiment).await;
    for round in 0..100i64 {
        let points = (0..1000)
            .map(|i| {
                let step = round * 1000 + i;
                point(
                    key.into(),
                    1.0 / (1.0 + step as f64),
                    1_700_000_000_000 + step,
                    step,
                )
            })
            .collect();
        store.log_batch(&run, points, vec![], vec![]).await.unwrap();
    }
    run
}

/// The full history of a 100k-point series and its chart sampling at each of `picks`.
async fn series_reads(
    backend: &str,
    store: &Store,
    run: &str,
    key: &str,
    prefix: &str,
    picks: &[i64],
) {
    let mut full = timed(10, async || {
        let (points, _) = store
            .get_metric_history_points(run, key, None, None)
            .await
            .unwrap();
        assert_eq!(points.len(), 100_000);
    })
    .await;
    report_p50(backend, &format!("{prefix}history_100k_p50"), &mut full);
    // The same read with the key put into every point (what GraphQL and bulk reads get).
    let mut keyed = timed(10, async || {
        let (points, _) = store
            .get_metric_history(run, key, None, None)
            .await
            .unwrap();
        assert_eq!(points.len(), 100_000);
    })
    .await;
    report_p50(
        backend,
        &format!("{prefix}history_100k_keyed_p50"),
        &mut keyed,
    );
    // As the mlflow client reads it: pages of 25k (the server's default page cap), each
    // found from the previous page's token. The last page alone shows whether a deep page
    // costs more than the first.
    let mut last_page = Vec::new();
    let mut paged = timed(10, async || {
        let (mut token, mut points) = (None::<String>, 0);
        loop {
            let started = Instant::now();
            let (page, next) = store
                .get_metric_history_points(run, key, Some(25_000), token.as_deref())
                .await
                .unwrap();
            points += page.len();
            if next.is_none() {
                last_page.push(started.elapsed());
                break;
            }
            token = next;
        }
        assert_eq!(points, 100_000);
    })
    .await;
    report_p50(
        backend,
        &format!("{prefix}history_100k_in_pages_of_25k_p50"),
        &mut paged,
    );
    report_p50(
        backend,
        &format!("{prefix}history_100k_last_page_of_25k_p50"),
        &mut last_page,
    );
    let runs = [run.to_string()];
    for &max_results in picks {
        let mut sampled = timed(20, async || {
            let points = store
                .get_metric_history_bulk_interval(&runs, key, None, None, max_results)
                .await
                .unwrap();
            assert_eq!(points.len(), max_results as usize);
        })
        .await;
        report_p50(
            backend,
            &format!("{prefix}bulk_interval_{max_results}_of_100k_p50"),
            &mut sampled,
        );
    }
}

async fn history(backend: &str, store: &Store) {
    let experiment = store
        .create_experiment("history", None, &[])
        .await
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let run = series_run(store, experiment, "loss").await;
    series_reads(backend, store, &run, "loss", "", &[320, 2500]).await;
}

/// A run as search finds them: a parameter (ten values) and two single-point metrics
/// drawn from `i`, plus an 8-step `loss` curve when `curve` (ten points a run).
async fn search_run(store: &Store, experiment: i64, i: u64, curve: bool) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let run = new_run(store, experiment).await;
    let mut metrics = vec![
        point("m1".into(), (x % 10_000) as f64 / 10_000.0, 1, 0),
        point("m2".into(), (x % 777) as f64, 1, 0),
    ];
    if curve {
        metrics.extend((0..8).map(|step| point("loss".into(), 1.0 / (1.0 + step as f64), 1, step)));
    }
    let params = vec![ctflow_core::entities::KeyValue::new(
        "p1",
        format!("v{}", i % 10),
    )];
    store
        .log_batch(&run, metrics, params, vec![])
        .await
        .unwrap();
}

/// The search shapes measured: (figure, filter, order).
const SEARCH_SHAPES: [(&str, &str, &str); 3] = [
    (
        "filtered_ordered",
        "metrics.m1 > 0.5 and params.p1 = 'v3'",
        "metrics.m1 DESC",
    ),
    (
        "metric_range_ordered",
        "metrics.m1 > 0.9",
        "metrics.m1 DESC",
    ),
    ("unfiltered", "", ""),
];

/// Each search shape's first page, `reps` times; figures `{prefix}{shape}{suffix}`, each
/// followed by its plan when `with_plan`.
async fn search_reads(
    backend: &str,
    store: &Store,
    experiment: i64,
    reps: usize,
    (prefix, suffix): (&str, &str),
    with_plan: bool,
) {
    for (figure, filter, order) in SEARCH_SHAPES {
        let request = RunSearch {
            experiment_ids: vec![experiment],
            filter: parse_run_filter(filter).unwrap(),
            view: ViewType::ActiveOnly,
            max_results: 100,
            order_by: parse_run_order_by(&[order.to_string()]).unwrap(),
            page_token: None,
        };
        let mut samples = timed(reps, async || {
            let (page, _) = store.search_runs(&request).await.unwrap();
            assert!(!page.is_empty());
        })
        .await;
        report(
            backend,
            &format!("{prefix}{figure}{suffix}"),
            percentile(&mut samples, 0.5),
            "ms",
        );
        if with_plan {
            // The plan beside the figure, so a slower number can be told from a new plan.
            let plan = store.explain_run_search(&request).await.unwrap();
            println!(
                "{}",
                serde_json::json!({"backend": backend, "plan": format!("search_{figure}"), "steps": plan})
            );
        }
    }
}

async fn search(backend: &str, uri: &str, runs: usize) {
    // Filling the store is not what is measured: relaxed commits, then a reopen.
    let experiment = {
        let store = Store::open(options(uri, Durability::Relaxed))
            .await
            .unwrap();
        let experiment = store
            .create_experiment("search", None, &[])
            .await
            .unwrap()
            .parse::<i64>()
            .unwrap();
        for i in 0..runs as u64 {
            search_run(&store, experiment, i, false).await;
        }
        store.close().await;
        experiment
    };
    let store = Store::open(options(uri, Durability::Full)).await.unwrap();
    // The store analyses a grown table in the background at start-up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let suffix = format!("_{runs}_runs_p50");
    search_reads(backend, &store, experiment, 30, ("search_", &suffix), true).await;
    store.close().await;
}

/// Read latency as the store grows: one experiment grown to each of
/// `CTFLOW_BENCH_GROWTH` runs (10k, 100k, 1M by default; ten points a run, beside one
/// 100k-point series), and at each size the search shapes, the 100k-point history and its
/// chart sampling. The store refreshes its statistics itself, as a running server's does,
/// so the plans are the ones a server would use.
async fn growth(backend: &str, uri: &str) {
    let sizes: Vec<u64> = std::env::var("CTFLOW_BENCH_GROWTH")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let store = Store::open(options(uri, Durability::Relaxed))
        .await
        .unwrap();
    let experiment = store
        .create_experiment("growth", None, &[])
        .await
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let series = series_run(&store, experiment, "curve").await;
    let mut made: u64 = 0;
    let started = Instant::now();
    for target in sizes {
        while made < target {
            let chunk = (target - made).min(10_000);
            // Four writers, as a few clients would create runs.
            futures::future::join_all((0..4u64).map(|w| {
                let store = &store;
                async move {
                    let mut i = made + w;
                    while i < made + chunk {
                        search_run(store, experiment, i, true).await;
                        i += 4;
                    }
                }
            }))
            .await;
            made += chunk;
        }
        // The store's own statistics refresh (checked every 2 s, on each doubling of the
        // runs up to 250k) catches up, as it has on a running server.
        tokio::time::sleep(Duration::from_secs(3)).await;
        report(
            backend,
            &format!("growth_{made}_runs_built_after"),
            started.elapsed().as_secs_f64(),
            "s",
        );
        let prefix = format!("growth_{made}_runs_");
        search_reads(
            backend,
            &store,
            experiment,
            20,
            (&format!("{prefix}search_"), "_p50"),
            false,
        )
        .await;
        series_reads(backend, &store, &series, "curve", &prefix, &[320]).await;
    }
    store.close().await;
}

/// The registry's reads at the REST benchmark's size: 10 models of 100 versions, a tag on
/// each version and an alias on each model. Figures: a LIKE over all 1000 versions, one
/// model's 100 versions, the 10 models' search (each with its latest versions), one
/// model's get.
async fn registry(backend: &str, store: &Store) {
    let experiment = store
        .create_experiment("registry", None, &[])
        .await
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let run = new_run(store, experiment).await;
    for model in 0..10 {
        let name = format!("bench-model-{model}");
        store
            .create_registered_model(&name, &[], None)
            .await
            .unwrap();
        for version in 1..=100 {
            store
                .create_model_version(NewModelVersion {
                    name: name.clone(),
                    source: format!("runs:/{run}/model"),
                    run_id: Some(run.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let tag = KeyValue::new("validated", if version % 2 == 0 { "yes" } else { "no" });
            store
                .set_model_version_tag(&name, version, &tag)
                .await
                .unwrap();
        }
        store
            .set_registered_model_alias(&name, "champion", 50, "bench")
            .await
            .unwrap();
    }
    let versions = |filter: &str| RegistrySearch {
        filter: parse_model_version_filter(filter).unwrap(),
        order_by: Vec::new(),
        max_results: 10_000,
        page_token: None,
    };
    for (figure, filter, expected) in [
        (
            "registry_search_versions_like_1000_p50",
            "name LIKE 'bench-model-%'",
            1000,
        ),
        (
            "registry_search_versions_by_name_100_p50",
            "name = 'bench-model-3'",
            100,
        ),
    ] {
        let search = versions(filter);
        let mut samples = timed(30, async || {
            let (page, _) = store.search_model_versions(&search).await.unwrap();
            assert_eq!(page.len(), expected);
        })
        .await;
        report(backend, figure, percentile(&mut samples, 0.5), "ms");
    }
    let models = RegistrySearch {
        filter: parse_registered_model_filter("name LIKE 'bench-model-%'").unwrap(),
        order_by: Vec::new(),
        max_results: 100,
        page_token: None,
    };
    let mut samples = timed(30, async || {
        let (page, _) = store.search_registered_models(&models).await.unwrap();
        assert_eq!(page.len(), 10);
    })
    .await;
    report(
        backend,
        "registry_search_models_10_p50",
        percentile(&mut samples, 0.5),
        "ms",
    );
    let mut samples = timed(30, async || {
        let model = store.get_registered_model("bench-model-3").await.unwrap();
        assert_eq!(model.latest_versions.len(), 1);
    })
    .await;
    report(
        backend,
        "registry_get_model_p50",
        percentile(&mut samples, 0.5),
        "ms",
    );
}

/// Whether `part` is to run: `CTFLOW_BENCH_ONLY=ingest,history,search,registry,growth` picks some
/// (growth, which builds a million runs, only when named).
fn wanted(part: &str) -> bool {
    std::env::var("CTFLOW_BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p == part))
}

async fn bench(backend: &str, uri: &str, search_uri: &str, runs: usize) {
    let store = Store::open(options(uri, Durability::Full)).await.unwrap();
    if wanted("ingest") {
        ingest(backend, &store).await;
    }
    if wanted("floor")
        && let Some(file) = uri.strip_prefix("sqlite://")
    {
        // The floor's own database, migrated by the store and then left to SQLite alone.
        let floor_file = std::path::Path::new(file).with_extension("floor.db");
        let floor_uri = format!("sqlite://{}", floor_file.display());
        Store::open(options(&floor_uri, Durability::Full))
            .await
            .unwrap()
            .close()
            .await;
        let floor = tokio::task::spawn_blocking(move || sqlite_floor(&floor_file, 200))
            .await
            .unwrap();
        report(backend, "sqlite_floor_log_batch", floor, "points/s");
        // Where the store's time goes between SQLite and itself: its statement shape in
        // SQLite alone, then the same statements through sqlx.
        let floor_file = std::path::Path::new(file).with_extension("floor.db");
        let shaped = tokio::task::spawn_blocking(move || sqlite_block_statements(&floor_file, 200))
            .await
            .unwrap();
        report(
            backend,
            "sqlite_points_in_ten_block_statements",
            shaped,
            "points/s",
        );
        let through_sqlx = sqlx_block_statements(&floor_uri, 200).await;
        report(
            backend,
            "sqlx_points_in_ten_block_statements",
            through_sqlx,
            "points/s",
        );
        // ctflow's side of the same comparison, right after it: 200 batches, one writer.
        let experiment = store
            .create_experiment("floor", None, &[])
            .await
            .unwrap()
            .parse::<i64>()
            .unwrap();
        let run = new_run(&store, experiment).await;
        let started = Instant::now();
        for round in 0..200 {
            store
                .log_batch(&run, batch(round), vec![], vec![])
                .await
                .unwrap();
        }
        let ctflow = 200_000.0 / started.elapsed().as_secs_f64();
        report(backend, "store_log_batch_beside_floor", ctflow, "points/s");
        report(backend, "store_share_of_floor", ctflow / floor, "ratio");
    }
    if wanted("history") {
        history(backend, &store).await;
    }
    if wanted("registry") {
        registry(backend, &store).await;
    }
    store.close().await;
    if wanted("search") {
        search(backend, search_uri, runs).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = std::env::var("CTFLOW_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    // CTFLOW_BENCH_DIR=/dev/shm takes the disk out: what is left is the CPU's share.
    let dir = match std::env::var("CTFLOW_BENCH_DIR") {
        Ok(parent) => tempfile::tempdir_in(parent).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let file = |name: &str| format!("sqlite:///{}/{name}.db", dir.path().display());
    bench("sqlite", &file("ops"), &file("search"), runs).await;
    if std::env::var("CTFLOW_BENCH_ONLY").is_ok_and(|only| only.split(',').any(|p| p == "growth")) {
        growth("sqlite", &file("growth")).await;
    }
    if let Ok(uri) = std::env::var("CTFLOW_BENCH_PG_URI") {
        // One database for both parts: search uses its own experiment.
        bench("postgres", &uri, &uri, runs).await;
    }
}
