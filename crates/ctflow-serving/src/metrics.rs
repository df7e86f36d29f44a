//! The scoring server's `/metrics` (OpenMetrics text): requests by outcome, their latency,
//! the version served, swaps, and how many requests each model call carried.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Predicted.
    Ok,
    /// Refused before the model (400/415: unreadable or not fitting the signature).
    Refused,
    /// The model raised (400).
    Failed,
    /// No worker could answer (503).
    Unavailable,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwapLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadLabels {
    result: &'static str,
}

pub struct ServingMetrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    latency: Histogram,
    version: Gauge<i64, AtomicI64>,
    swaps: Family<SwapLabels, Counter>,
    batch: Histogram,
    log_rows: Family<LogLabels, Counter>,
    log_files: Counter,
    log_uploads: Family<UploadLabels, Counter>,
    shadow_copies: Family<UploadLabels, Counter>,
    shadow_rows: Family<UploadLabels, Counter>,
}

impl Default for ServingMetrics {
    fn default() -> Self {
        ServingMetrics::new()
    }
}

impl ServingMetrics {
    pub fn new() -> ServingMetrics {
        let mut registry = Registry::with_prefix("ctflow_serving");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register("requests", "Scoring requests by outcome", requests.clone());
        // 0.1 ms to about 3 s.
        let latency = Histogram::new(exponential_buckets(0.000_1, 2.0, 15));
        registry.register(
            "request_seconds",
            "Time from request to answer",
            latency.clone(),
        );
        let version = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "model_version",
            "The registered model version served (0 when not served from the registry)",
            version.clone(),
        );
        let swaps = Family::<SwapLabels, Counter>::default();
        registry.register(
            "swaps",
            "Moves to a new model version: ok, or failed (the old one kept serving)",
            swaps.clone(),
        );
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "batch_requests",
            "Requests answered by one model call",
            batch.clone(),
        );
        let log_rows = Family::<LogLabels, Counter>::default();
        registry.register(
            "log_rows",
            "Scored rows for the inference log: written, dropped (the writer fell behind) or failed (it could not write)",
            log_rows.clone(),
        );
        let log_files = Counter::default();
        registry.register(
            "log_files",
            "Inference log files finished and renamed into place",
            log_files.clone(),
        );
        let log_uploads = Family::<UploadLabels, Counter>::default();
        registry.register(
            "log_uploads",
            "Inference log files uploaded to object storage: ok, or failed (kept and tried again)",
            log_uploads.clone(),
        );
        let shadow_copies = Family::<UploadLabels, Counter>::default();
        registry.register(
            "shadow_copies",
            "Requests copied to a shadowing challenger: compared, failed (the challenger refused, raised or did not answer) or dropped (its queue was full)",
            shadow_copies.clone(),
        );
        let shadow_rows = Family::<UploadLabels, Counter>::default();
        registry.register(
            "shadow_rows",
            "Rows the shadowing challenger agreed or disagreed on with the champion",
            shadow_rows.clone(),
        );
        ServingMetrics {
            registry,
            requests,
            latency,
            version,
            swaps,
            batch,
            log_rows,
            log_files,
            log_uploads,
            shadow_copies,
            shadow_rows,
        }
    }

    /// A copy the challenger answered, with its rows and how many it agreed on.
    pub fn shadow_compared(&self, rows: u64, agreed: u64) {
        self.shadow_copies
            .get_or_create(&UploadLabels { result: "compared" })
            .inc();
        self.shadow_rows
            .get_or_create(&UploadLabels { result: "agreed" })
            .inc_by(agreed);
        self.shadow_rows
            .get_or_create(&UploadLabels {
                result: "disagreed",
            })
            .inc_by(rows.saturating_sub(agreed));
    }

    /// A copy the challenger failed on.
    pub fn shadow_failed(&self) {
        self.shadow_copies
            .get_or_create(&UploadLabels { result: "failed" })
            .inc();
    }

    /// A copy dropped by a full queue.
    pub fn shadow_dropped(&self) {
        self.shadow_copies
            .get_or_create(&UploadLabels { result: "dropped" })
            .inc();
    }

    pub fn observe(&self, outcome: Outcome, took: Duration) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label().into(),
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn set_version(&self, version: Option<&str>) {
        self.version
            .set(version.and_then(|v| v.parse().ok()).unwrap_or(0));
    }

    pub fn swapped(&self, ok: bool) {
        self.swaps
            .get_or_create(&SwapLabels {
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    pub fn batched(&self, requests: usize) {
        self.batch.observe(requests as f64);
    }

    fn log_rows(&self, result: &'static str, rows: usize) {
        self.log_rows
            .get_or_create(&LogLabels { result })
            .inc_by(u64::try_from(rows).unwrap_or(u64::MAX));
    }

    pub fn log_written(&self, rows: usize) {
        self.log_rows("written", rows);
    }

    pub fn log_dropped(&self, rows: usize) {
        self.log_rows("dropped", rows);
    }

    pub fn log_failed(&self, rows: usize) {
        self.log_rows("failed", rows);
    }

    pub fn log_file_written(&self) {
        self.log_files.inc();
    }

    pub fn log_uploaded(&self, ok: bool) {
        self.log_uploads
            .get_or_create(&UploadLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    pub fn encode(&self) -> Result<String, String> {
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|e| e.to_string())?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_on_the_grafana_dashboard_and_nothing_else_of_serving() {
        let metrics = ServingMetrics::new();
        metrics.observe(Outcome::Ok, Duration::from_millis(2));
        metrics.set_version(Some("3"));
        metrics.swapped(true);
        metrics.batched(4);
        metrics.log_written(1);
        metrics.log_file_written();
        metrics.log_uploaded(true);
        metrics.shadow_compared(2, 1);
        metrics.shadow_dropped();
        let text = metrics.encode().expect("encodes");
        let declared: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let dashboard = include_str!("../../../charts/ctflow/dashboards/ctflow.json");
        let mut used = std::collections::BTreeSet::new();
        for (at, _) in dashboard.match_indices("ctflow_serving_") {
            let tail = &dashboard[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            used.insert(base);
        }
        let missing: Vec<&&str> = used.difference(&declared).collect();
        assert!(missing.is_empty(), "the dashboard queries {missing:?}");
        let unused: Vec<&&str> = declared.difference(&used).collect();
        assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
    }
}
