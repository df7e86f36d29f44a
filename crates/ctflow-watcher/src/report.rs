//! A drift report: every column of the current data tested against the reference, and
//! the dataset verdict.

use std::collections::BTreeMap;

use ctflow_core::drift::{
    Binning, ColumnData, ColumnDrift, ColumnOptions, Correction, DatasetDrift, Method,
    column_drift, dataset_drift,
};
use serde::Serialize;

use crate::reader::{ColumnCounts, Table};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct DriftOptions {
    /// One method for every column (default: Evidently's choice per column).
    pub method: Option<Method>,
    pub threshold: Option<f64>,
    /// Per-column method and threshold overrides.
    pub per_column: BTreeMap<String, (Option<Method>, Option<f64>)>,
    pub bins: usize,
    pub binning: Binning,
    /// The share of drifted columns that makes the dataset drift (Evidently: 0.5).
    pub drift_share: f64,
    pub correction: Correction,
    /// Columns whose drift alone makes the dataset drift.
    pub critical: Vec<String>,
    /// Below this many current rows the verdict is "insufficient data", not drift.
    pub min_rows: usize,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            method: None,
            threshold: None,
            per_column: BTreeMap::new(),
            bins: 10,
            binning: Binning::Quantiles,
            drift_share: 0.5,
            correction: Correction::None,
            critical: Vec::new(),
            min_rows: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedColumn {
    pub column: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub reference_rows: usize,
    pub current_rows: usize,
    /// Fewer current rows than `min_rows`: no column was judged.
    pub insufficient_data: bool,
    pub columns: Vec<ColumnDrift>,
    pub skipped: Vec<SkippedColumn>,
    /// Rows, nulls and infinite values per column, reference then current.
    pub counts: BTreeMap<String, [ColumnCounts; 2]>,
    pub dataset: DatasetDrift,
}

fn counts(table: &Table, name: &str) -> ColumnCounts {
    table.column(name).map_or(
        ColumnCounts {
            rows: 0,
            nulls: 0,
            infinite: 0,
        },
        |c| ColumnCounts {
            rows: table.rows,
            nulls: c.nulls,
            infinite: c.infinite,
        },
    )
}

/// Tests every column of `current` against `reference`.
pub fn compare(reference: &Table, current: &Table, options: &DriftOptions) -> Result<DriftReport> {
    let names = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let (ref_names, cur_names) = (names(reference), names(current));
    let only_ref: Vec<&String> = ref_names
        .iter()
        .filter(|n| !cur_names.contains(n))
        .collect();
    let only_cur: Vec<&String> = cur_names
        .iter()
        .filter(|n| !ref_names.contains(n))
        .collect();
    if !only_ref.is_empty() || !only_cur.is_empty() {
        let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        return Err(Error::Schema(format!(
            "only in the reference: [{}]; only in the current data: [{}]",
            list(&only_ref),
            list(&only_cur)
        )));
    }
    for name in options.per_column.keys().chain(&options.critical) {
        if !ref_names.contains(name) {
            return Err(Error::Options(format!("there is no column '{name}'")));
        }
    }
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    let mut all_counts = BTreeMap::new();
    let insufficient_data = current.rows < options.min_rows;
    for r in &reference.columns {
        let Some(c) = current.column(&r.name) else {
            continue;
        };
        all_counts.insert(
            r.name.clone(),
            [counts(reference, &r.name), counts(current, &r.name)],
        );
        if insufficient_data {
            continue;
        }
        let (rd, cd) = match (&r.data, &c.data) {
            (ColumnData::Numeric(_), ColumnData::Categorical(_))
            | (ColumnData::Categorical(_), ColumnData::Numeric(_)) => {
                return Err(Error::Schema(format!(
                    "column '{}' is {} in the reference and {} in the current data (declare its type to compare it)",
                    r.name,
                    kind(&r.data),
                    kind(&c.data)
                )));
            }
            pair => pair,
        };
        let empty_in = match (rd.is_empty(), cd.is_empty()) {
            (true, true) => Some("both samples"),
            (true, false) => Some("the reference"),
            (false, true) => Some("the current data"),
            (false, false) => None,
        };
        if let Some(which) = empty_in {
            skipped.push(SkippedColumn {
                column: r.name.clone(),
                reason: format!("no usable values in {which} (all null or infinite)"),
            });
            continue;
        }
        let (method, threshold) = options
            .per_column
            .get(&r.name)
            .copied()
            .unwrap_or((None, None));
        let column_options = ColumnOptions {
            method: method.or(options.method),
            threshold: threshold.or(options.threshold),
            bins: options.bins,
            binning: options.binning,
        };
        jobs.push((r.name.as_str(), rd, cd, column_options));
    }
    let mut columns = judge_in_parallel(&jobs)?;
    let dataset = dataset_drift(
        &mut columns,
        options.drift_share,
        options.correction,
        &options.critical,
    );
    Ok(DriftReport {
        reference_rows: reference.rows,
        current_rows: current.rows,
        insufficient_data,
        columns,
        skipped,
        counts: all_counts,
        dataset,
    })
}

type Job<'a> = (&'a str, &'a ColumnData, &'a ColumnData, ColumnOptions);

/// Columns are independent: they are judged on all cores, in the order given.
fn judge_in_parallel(jobs: &[Job<'_>]) -> Result<Vec<ColumnDrift>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    let chunk = jobs.len().div_ceil(threads).max(1);
    let judge = |part: &[Job<'_>]| -> Result<Vec<ColumnDrift>> {
        part.iter()
            .map(|(name, r, c, options)| {
                column_drift(name, r, c, options).map_err(|cause| Error::Column {
                    column: name.to_string(),
                    cause,
                })
            })
            .collect()
    };
    let results: Vec<Result<Vec<ColumnDrift>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| scope.spawn(move || judge(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Options("a drift computation panicked".into())))
            })
            .collect()
    });
    let mut columns = Vec::with_capacity(jobs.len());
    for part in results {
        columns.extend(part?);
    }
    Ok(columns)
}

fn kind(data: &ColumnData) -> &'static str {
    match data {
        ColumnData::Numeric(_) => "numeric",
        ColumnData::Categorical(_) => "categorical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Column;

    fn table(columns: Vec<(&str, ColumnData)>) -> Table {
        let rows = columns.first().map_or(0, |(_, d)| d.len());
        Table {
            rows,
            columns: columns
                .into_iter()
                .map(|(name, data)| Column {
                    name: name.into(),
                    data,
                    nulls: 0,
                    infinite: 0,
                })
                .collect(),
        }
    }

    fn numbers(n: usize, shift: f64) -> ColumnData {
        ColumnData::Numeric((0..n).map(|i| (i % 50) as f64 + shift).collect())
    }

    #[test]
    fn a_million_distinct_categories_are_compared_not_refused() {
        // An id-like column: every value distinct, half of the current ones unseen. It is
        // judged like any categorical column (Jensen-Shannon at this size) and drifts.
        let ids = |from: usize| {
            ColumnData::Categorical((from..from + 1_000_000).map(|i| format!("k{i}")).collect())
        };
        let reference = table(vec![("id", ids(0))]);
        let current = table(vec![("id", ids(500_000))]);
        let report = compare(&reference, &current, &DriftOptions::default()).expect("comparable");
        let id = &report.columns[0];
        assert_eq!(id.method, Method::JensenShannon);
        assert!(id.drifted && id.statistic > 0.5, "{id:?}");
    }

    #[test]
    fn drifted_and_stable_columns() {
        let reference = table(vec![("a", numbers(300, 0.0)), ("b", numbers(300, 0.0))]);
        let current = table(vec![("a", numbers(300, 30.0)), ("b", numbers(300, 0.0))]);
        let report = compare(&reference, &current, &DriftOptions::default()).expect("comparable");
        assert_eq!(report.columns.len(), 2);
        assert!(report.columns[0].drifted && !report.columns[1].drifted);
        assert!(report.dataset.drifted, "half the columns drifted");
        let strict = DriftOptions {
            drift_share: 0.75,
            ..DriftOptions::default()
        };
        assert!(
            !compare(&reference, &current, &strict)
                .expect("comparable")
                .dataset
                .drifted
        );
        let critical = DriftOptions {
            drift_share: 0.75,
            critical: vec!["a".into()],
            ..DriftOptions::default()
        };
        assert!(
            compare(&reference, &current, &critical)
                .expect("comparable")
                .dataset
                .drifted
        );
        let few = DriftOptions {
            min_rows: 1000,
            ..DriftOptions::default()
        };
        let insufficient = compare(&reference, &current, &few).expect("comparable");
        assert!(
            insufficient.insufficient_data
                && !insufficient.dataset.drifted
                && insufficient.columns.is_empty()
        );
    }

    #[test]
    fn mismatches_are_errors_and_empty_columns_are_skipped() {
        let reference = table(vec![("a", numbers(10, 0.0)), ("b", numbers(10, 0.0))]);
        let current = table(vec![("a", numbers(10, 0.0)), ("c", numbers(10, 0.0))]);
        let err = compare(&reference, &current, &DriftOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only in the reference: [b]")
                && err.contains("only in the current data: [c]"),
            "{err}"
        );
        let typed = table(vec![("a", ColumnData::Categorical(vec!["x".into()]))]);
        let err = compare(
            &table(vec![("a", numbers(10, 0.0))]),
            &typed,
            &DriftOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("numeric in the reference and categorical")
        );
        let empty = table(vec![("a", ColumnData::Numeric(vec![]))]);
        let report = compare(
            &table(vec![("a", numbers(10, 0.0))]),
            &empty,
            &DriftOptions::default(),
        )
        .expect("comparable");
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].reason.contains("all null"));
    }
}
