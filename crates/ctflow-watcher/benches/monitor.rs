//! The monitor's cost per pass, on 1,000,000 logged predictions in 10 inference-log files
//! and 200,000 feedback labels: reading the files' five columns into predictions, against
//! the Parquet reader alone decoding the same columns (the baseline); and joining labels
//! to predictions with accuracy, macro F1 and latency percentiles, against a bare hash
//! join of the same keys. Prints the best of 5 runs in seconds and the ratios, as JSON.
//! `cargo bench -p ctflow-watcher --bench monitor`.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use ctflow_core::monitoring::{Label, LiveMetric, LoggedPrediction, Outcome, join, percentile};
use ctflow_watcher::read_log_file;

const FILES: usize = 10;
const ROWS_PER_FILE: usize = 100_000;
const LABELS: usize = 200_000;

fn write_files(dir: &Path) -> Vec<PathBuf> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ctflow_request_id", DataType::Utf8, false),
        Field::new(
            "ctflow_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("ctflow_model", DataType::Utf8, false),
        Field::new("ctflow_version", DataType::Utf8, true),
        Field::new("ctflow_latency_ms", DataType::Float64, false),
        Field::new("ctflow_prediction", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
    ]));
    (0..FILES)
        .map(|f| {
            let ids: Vec<String> = (0..ROWS_PER_FILE)
                .map(|i| format!("req-{f}-{i:08}"))
                .collect();
            let n = ROWS_PER_FILE;
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(ids)),
                    Arc::new(
                        TimestampMillisecondArray::from(
                            (0..n as i64).map(|i| 1_000 + i).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from(vec!["iris"; n])),
                    Arc::new(StringArray::from(vec![if f < 5 { "1" } else { "2" }; n])),
                    Arc::new(Float64Array::from(
                        (0..n).map(|i| (i % 97) as f64 / 10.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(
                        (0..n as i64).map(|i| i % 3).collect::<Vec<_>>(),
                    )),
                    Arc::new(Float64Array::from(
                        (0..n).map(|i| i as f64).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap();
            let path = dir.join(format!("{f:013}-bench-{f:06}.parquet"));
            let mut writer = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&path).unwrap(),
                schema.clone(),
                None,
            )
            .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            path
        })
        .collect()
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        let out = f();
        best = best.min(started.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.unwrap())
}

/// The baseline: the Parquet reader decoding the same five columns, nothing built.
fn decode_only(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let mask = parquet::arrow::ProjectionMask::columns(
        builder.parquet_schema(),
        [
            "ctflow_request_id",
            "ctflow_timestamp",
            "ctflow_version",
            "ctflow_latency_ms",
            "ctflow_prediction",
        ],
    );
    builder
        .with_projection(mask)
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path());
    let (decode_s, rows) = best_of(5, || files.iter().map(|f| decode_only(f)).sum::<usize>());
    assert_eq!(rows, FILES * ROWS_PER_FILE);
    let (read_s, predictions) = best_of(5, || {
        files
            .iter()
            .flat_map(|f| read_log_file(f).unwrap())
            .collect::<Vec<LoggedPrediction>>()
    });
    assert_eq!(predictions.len(), rows);
    // Every fifth prediction labelled; every tenth label wrong.
    let labels: Vec<Label> = predictions
        .iter()
        .step_by(FILES * ROWS_PER_FILE / LABELS)
        .enumerate()
        .map(|(i, p)| Label {
            request_id: p.request_id.clone(),
            row: p.row,
            label: if i % 10 == 0 {
                Outcome::Number(9.0)
            } else {
                p.prediction.clone()
            },
        })
        .collect();
    let (join_s, accuracy) = best_of(5, || {
        let joined = join(&predictions, &labels, 0, i64::MAX);
        let mut out = Vec::new();
        for (version, pairs) in &joined.pairs {
            out.push((
                version.clone(),
                LiveMetric::Accuracy.score(pairs),
                LiveMetric::F1.score(pairs),
            ));
            percentile(&joined.latencies[version], 99.0).unwrap();
        }
        out
    });
    assert!(
        accuracy
            .iter()
            .all(|(_, a, _)| a.is_some_and(|a| (a - 0.9).abs() < 1e-9)),
        "{accuracy:?}"
    );
    let (hash_s, matched) = best_of(5, || {
        let by_id: HashMap<(&str, u32), &LoggedPrediction> = predictions
            .iter()
            .map(|p| ((p.request_id.as_str(), p.row), p))
            .collect();
        labels
            .iter()
            .filter(|l| by_id.contains_key(&(l.request_id.as_str(), l.row)))
            .count()
    });
    assert_eq!(matched, LABELS);
    println!(
        "{}",
        serde_json::json!({
            "predictions": rows,
            "labels": LABELS,
            "read_seconds": read_s,
            "read_rows_per_second": rows as f64 / read_s,
            "parquet_decode_seconds": decode_s,
            "read_vs_decode": read_s / decode_s,
            "join_and_metrics_seconds": join_s,
            "bare_hash_join_seconds": hash_s,
            "join_vs_bare_hash_join": join_s / hash_s,
        })
    );
}
