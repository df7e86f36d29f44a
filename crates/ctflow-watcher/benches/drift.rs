//! 1,000,000 rows x 20 numeric columns, reference against current, every column with its
//! default test (normalised Wasserstein at this size, after the default-method check), as
//! `ctflow drift` computes it. Prints the best of 5 runs in seconds, as JSON.
//! `cargo bench -p ctflow-watcher --bench drift`; `bench/drift_scipy.py` is the numpy/scipy
//! side of the comparison.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Instant;

use ctflow_core::drift::ColumnData;
use ctflow_watcher::reader::{Column, Table};
use ctflow_watcher::{DriftOptions, compare};

const ROWS: usize = 1_000_000;
const COLUMNS: usize = 20;

/// Irwin-Hall(4) values from a 32-bit LCG: roughly normal, deterministic.
fn column(seed: u64, shift: f64) -> Vec<f64> {
    let mut x = seed;
    let mut next = || {
        x = (1_664_525 * x + 1_013_904_223) & 0xFFFF_FFFF;
        (x >> 8) as f64 / 16_777_216.0
    };
    (0..ROWS)
        .map(|_| next() + next() + next() + next() - 2.0 + shift)
        .collect()
}

fn table(seed: u64, shift: f64) -> Table {
    Table {
        rows: ROWS,
        columns: (0..COLUMNS)
            .map(|i| Column {
                name: format!("c{i}"),
                data: ColumnData::Numeric(column(
                    seed * 100 + i as u64,
                    if i % 2 == 0 { shift } else { 0.0 },
                )),
                nulls: 0,
                infinite: 0,
            })
            .collect(),
    }
}

fn main() {
    let reference = table(1, 0.0);
    let current = table(2, 0.05);
    let mut best = f64::INFINITY;
    let mut drifted = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let report = compare(&reference, &current, &DriftOptions::default()).expect("comparable");
        best = best.min(started.elapsed().as_secs_f64());
        drifted = report.dataset.drifted_columns;
    }
    println!(
        "{{\"rows\": {ROWS}, \"columns\": {COLUMNS}, \"threads\": {}, \"best_of_5_s\": {best:.4}, \"drifted_columns\": {drifted}}}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}
