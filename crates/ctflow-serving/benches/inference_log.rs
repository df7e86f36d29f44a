//! What the inference log costs: the time a request spends handing its rows over
//! (`record`), and the rows per second the writer thread sustains, next to the Parquet
//! writer's own rate for the same rows written as one batch.
//!
//!     cargo bench -p ctflow-serving --bench inference_log
//!
//! `LOG_BENCH_REQUESTS` (default 200,000) single-row requests shaped like the iris model's
//! (four float inputs, an integer prediction). Prints one JSON object.
// A benchmark's setup failing is a failed run: panicking says where.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::time::Instant;

use ctflow_core::inference::ScoredRequest;
use ctflow_core::scoring::Payload;
use ctflow_serving::{InferenceLog, LogOptions, ServingMetrics};
use serde_json::json;

fn requests(count: usize) -> Vec<ScoredRequest> {
    let columns: Vec<String> = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let dtypes = columns
        .iter()
        .map(|c| (c.clone(), "float64".to_string()))
        .collect();
    (0..count)
        .map(|i| {
            let x = (i % 97) as f64 / 10.0;
            let payload = Payload::Frame {
                columns: columns.clone(),
                rows: vec![vec![
                    json!(x),
                    json!(x + 1.0),
                    json!(x + 2.0),
                    json!(x + 3.0),
                ]],
                dtypes: std::collections::BTreeMap::clone(&dtypes),
            };
            ScoredRequest::new(
                format!("{i:032x}"),
                1_700_000_000_000 + i as i64,
                "iris".into(),
                Some("3".into()),
                1.25,
                payload,
                &json!([i % 3]),
            )
        })
        .collect()
}

fn main() {
    let count: usize = std::env::var("LOG_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");

    // The Parquet writer alone: the same rows through one writer, one batch per 4096 rows.
    let reference = requests(count);
    let started = Instant::now();
    ctflow_serving::inference_log::write_plain(&dir.path().join("plain.parquet"), &reference)
        .expect("written");
    let plain_s = started.elapsed().as_secs_f64();

    // The log: requests hand their rows over, the writer thread writes and finishes files.
    let log_dir = dir.path().join("log");
    let mut options = LogOptions::new(log_dir.clone());
    options.queue_rows = count;
    let metrics = Arc::new(ServingMetrics::new());
    let log = InferenceLog::start(options, Arc::clone(&metrics)).expect("the log starts");
    let batch = requests(count);
    let started = Instant::now();
    for scored in batch {
        log.record(scored);
    }
    let record_s = started.elapsed().as_secs_f64();
    log.close();
    let log_s = started.elapsed().as_secs_f64();
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(&format!(
            "ctflow_serving_log_rows_total{{result=\"written\"}} {count}"
        )),
        "{text}"
    );
    let files = std::fs::read_dir(&log_dir).expect("the log folder").count();
    let report = json!({
        "requests": count,
        "record_ns_per_request": record_s * 1e9 / count as f64,
        "log_rows_per_s": count as f64 / log_s,
        "parquet_writer_rows_per_s": count as f64 / plain_s,
        "log_over_writer": plain_s / log_s,
        "files": files,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
