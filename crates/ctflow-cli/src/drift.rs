//! `ctflow drift`: compares a current data file with a reference, prints a per-column
//! table (or JSON), and exits with status 3 when the dataset drifted, so it works as a CI
//! step.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use clap::Args;
use ctflow_core::drift::{Binning, Correction, Method};
use ctflow_core::pipeline::DurationSpec;
use ctflow_watcher::reader::{Typing, Window};
use ctflow_watcher::source::{ObjectStores, read_one};
use ctflow_watcher::{DriftOptions, compare, display_number, render_html};

use crate::commands::{print_json, print_table};

/// The exit status when the dataset drifted.
pub const DRIFT_EXIT_CODE: i32 = 3;

#[derive(Args, Debug)]
pub struct DriftArgs {
    /// The reference data: CSV with a header row, or Parquet (.parquet, .pq); a path or
    /// an s3://bucket/key URL.
    #[arg(long)]
    reference: String,
    /// The current data, likewise.
    #[arg(long)]
    current: String,
    /// Judge only the last N rows of the current data.
    #[arg(long, conflicts_with = "time_column")]
    last_rows: Option<usize>,
    /// Judge only the current rows within `--last` of the newest timestamp in this column
    /// (which is then not compared itself).
    #[arg(long, requires = "last")]
    time_column: Option<String>,
    /// The span for `--time-column`, such as 24h or 7d.
    #[arg(long, requires = "time_column", value_parser = DurationSpec::parse)]
    last: Option<DurationSpec>,
    /// One test for every column: ks, chisquare, z, wasserstein, jensenshannon, psi
    /// (default: chosen per column by type, size and distinct values, as Evidently does).
    #[arg(long, value_parser = Method::parse)]
    method: Option<Method>,
    /// The threshold for every column (default: 0.05 for p-values, 0.1 for distances).
    #[arg(long)]
    threshold: Option<f64>,
    /// A per-column override, `COLUMN=METHOD[:THRESHOLD]` (repeatable).
    #[arg(long = "column", value_parser = parse_column_override)]
    columns: Vec<(String, Option<Method>, Option<f64>)>,
    /// Treat these columns as categorical (comma-separated).
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Treat these columns as numeric (comma-separated).
    #[arg(long, value_delimiter = ',')]
    numeric: Vec<String>,
    /// Columns whose drift alone makes the dataset drift (comma-separated).
    #[arg(long, value_delimiter = ',')]
    critical: Vec<String>,
    /// The share of drifted columns that makes the dataset drift.
    #[arg(long, default_value_t = 0.5)]
    drift_share: f64,
    /// Multiple-testing correction of p-value tests: none, bonferroni or fdr.
    #[arg(long, default_value = "none", value_parser = parse_correction)]
    correction: Correction,
    /// PSI bins.
    #[arg(long, default_value_t = 10)]
    bins: usize,
    /// PSI binning: quantiles (of the reference) or sturges (equal width).
    #[arg(long, default_value = "quantiles", value_parser = parse_binning)]
    binning: Binning,
    /// Below this many current rows the verdict is "insufficient data".
    #[arg(long, default_value_t = 0)]
    min_rows: usize,
    /// table, json, or html (a self-contained page with a histogram per column).
    #[arg(long, value_enum, default_value_t = DriftOutput::Table)]
    output: DriftOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriftOutput {
    Table,
    Json,
    Html,
}

fn parse_column_override(raw: &str) -> Result<(String, Option<Method>, Option<f64>), String> {
    let (column, rest) = raw
        .split_once('=')
        .ok_or_else(|| format!("'{raw}' is not COLUMN=METHOD[:THRESHOLD]"))?;
    let (method, threshold) = match rest.split_once(':') {
        Some((m, t)) => (m, Some(t)),
        None => (rest, None),
    };
    let method = if method.is_empty() {
        None
    } else {
        Some(Method::parse(method)?)
    };
    let threshold = threshold
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| format!("'{t}' is not a number"))
        })
        .transpose()?;
    Ok((column.to_string(), method, threshold))
}

fn parse_correction(raw: &str) -> Result<Correction, String> {
    match raw {
        "none" => Ok(Correction::None),
        "bonferroni" => Ok(Correction::Bonferroni),
        "fdr" => Ok(Correction::Fdr),
        other => Err(format!(
            "unknown correction '{other}': use none, bonferroni or fdr"
        )),
    }
}

fn parse_binning(raw: &str) -> Result<Binning, String> {
    match raw {
        "quantiles" => Ok(Binning::Quantiles),
        "sturges" => Ok(Binning::Sturges),
        other => Err(format!(
            "unknown binning '{other}': use quantiles or sturges"
        )),
    }
}

/// Runs the comparison; returns whether the dataset drifted.
pub async fn run(args: DriftArgs) -> Result<bool> {
    let typing = Typing {
        categorical: args.categorical.iter().cloned().collect(),
        numeric: args.numeric.iter().cloned().collect(),
    };
    let stores = ObjectStores::default();
    let here = Path::new(".");
    let mut reference = read_one(here, &args.reference, &stores).await?;
    let mut current = read_one(here, &args.current, &stores).await?;
    let window = match (args.last_rows, &args.time_column, args.last) {
        (Some(rows), _, _) => Window::LastRows(rows),
        (None, Some(column), Some(last)) => Window::Time {
            column: column.clone(),
            span_ms: i64::try_from(last.0.as_millis()).unwrap_or(i64::MAX),
        },
        _ => Window::All,
    };
    window.apply(&mut current)?;
    if let Window::Time { column, .. } = &window {
        reference.drop_column(column);
    }
    let reference = reference
        .into_table(&typing)
        .map_err(|e| anyhow!("{}: {e}", args.reference))?;
    let current = current
        .into_table(&typing)
        .map_err(|e| anyhow!("{}: {e}", args.current))?;
    let per_column: BTreeMap<String, (Option<Method>, Option<f64>)> = args
        .columns
        .into_iter()
        .map(|(c, m, t)| (c, (m, t)))
        .collect();
    if !(0.0..=1.0).contains(&args.drift_share) {
        return Err(anyhow!("--drift-share must be between 0 and 1"));
    }
    let options = DriftOptions {
        method: args.method,
        threshold: args.threshold,
        per_column,
        bins: args.bins.max(1),
        binning: args.binning,
        drift_share: args.drift_share,
        correction: args.correction,
        critical: args.critical,
        min_rows: args.min_rows,
    };
    let report = compare(&reference, &current, &options)?;
    match args.output {
        DriftOutput::Json => {
            print_json(&serde_json::to_value(&report)?)?;
            return Ok(report.dataset.drifted);
        }
        DriftOutput::Html => {
            let title = format!("Drift of {} against {}", args.current, args.reference);
            print!("{}", render_html(&report, &reference, &current, &title));
            return Ok(report.dataset.drifted);
        }
        DriftOutput::Table => {}
    }
    let rows: Vec<Vec<String>> = report
        .columns
        .iter()
        .map(|c| {
            let nulls = report
                .counts
                .get(&c.column)
                .map(|[r, cur]| format!("{}/{}", r.nulls + r.infinite, cur.nulls + cur.infinite))
                .unwrap_or_default();
            vec![
                c.column.clone(),
                c.kind.clone(),
                c.method.as_str().into(),
                display_number(c.statistic),
                c.p_value.map(display_number).unwrap_or_else(|| "-".into()),
                display_number(c.threshold),
                nulls,
                if c.drifted {
                    "DRIFT".into()
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "Column",
            "Type",
            "Method",
            "Statistic",
            "p-value",
            "Threshold",
            "Left out (ref/cur)",
            "Verdict",
        ],
        &rows,
    );
    for skipped in &report.skipped {
        println!("{}: skipped, {}", skipped.column, skipped.reason);
    }
    let d = &report.dataset;
    if report.insufficient_data {
        println!(
            "Insufficient data: {} current rows, fewer than --min-rows {}",
            report.current_rows, options.min_rows
        );
    } else {
        println!(
            "{} of {} columns drifted ({:.0}%, dataset drift at {:.0}%){}: {}",
            d.drifted_columns,
            d.columns,
            d.share * 100.0,
            d.drift_share * 100.0,
            if d.critical_drifted.is_empty() {
                String::new()
            } else {
                format!(
                    "; critical columns drifted: {}",
                    d.critical_drifted.join(", ")
                )
            },
            if d.drifted {
                "DATASET DRIFT"
            } else {
                "no dataset drift"
            }
        );
    }
    Ok(d.drifted)
}
