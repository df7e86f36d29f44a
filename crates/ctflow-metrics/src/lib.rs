//! ctflow's Prometheus metrics. One [`Metrics`] per process holds the live instruments
//! (HTTP traffic, jobs and workers, drift checks); the server adds what it reads from the
//! store at scrape time ([`Snapshot`]: pipeline runs by phase, gate decisions, queue depth,
//! model aliases), so those numbers survive restarts and agree across replicas.
//!
//! `/metrics` is OpenMetrics text (`application/openmetrics-text`), which Prometheus scrapes.
#![forbid(unsafe_code)]

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route pattern (`/api/2.0/mlflow/runs/get`), never the raw path, so the label
    /// set stays small; `unmatched` for unknown paths.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The store method: search_runs, log_batch, create_run, ...
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub pipeline: String,
    /// succeeded, failed, ci_failed, canceled, timed_out, unschedulable.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftCheckLabels {
    pub pipeline: String,
    /// drift, no_drift or error.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColumnLabels {
    pub pipeline: String,
    pub column: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LiveMetricLabels {
    pub pipeline: String,
    /// The served model version the predictions came from.
    pub version: String,
    /// accuracy, f1, rmse or mae.
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub pipeline: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub pipeline: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerStepLabels {
    /// `move`, `promote`, `record`, `requeue`, `fail_mlflow_run`.
    pub step: String,
    /// The phase a move goes to; empty for the other steps.
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerErrorLabels {
    /// `store`, `store_unavailable`, `bus`, `pipeline_file`.
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn job_histogram() -> Histogram {
    // 1 s to about 9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The live instruments of one process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub store_operations: HistogramFamily<OperationLabels>,
    pub jobs: HistogramFamily<JobLabels>,
    pub workers: Gauge,
    pub workers_busy: Gauge,
    pub triggers: Family<TriggerLabels, Counter>,
    pub drift_checks: Family<DriftCheckLabels, Counter>,
    pub drift_score: Family<ColumnLabels, Gauge<f64, AtomicU64>>,
    pub drift_share: Family<PipelineLabels, Gauge<f64, AtomicU64>>,
    pub live_metric: Family<LiveMetricLabels, Gauge<f64, AtomicU64>>,
    pub live_labelled: Family<VersionLabels, Gauge>,
    pub live_predictions: Family<VersionLabels, Gauge>,
    pub feedback_unmatched: Family<PipelineLabels, Gauge>,
    pub controller_passes: Counter,
    pub controller_steps: HistogramFamily<ControllerStepLabels>,
    pub controller_errors: Family<ControllerErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ctflow");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let store_operations: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Store operation latency by operation",
            store_operations.clone(),
        );
        let jobs: HistogramFamily<JobLabels> = Family::new_with_constructor(job_histogram);
        registry.register(
            "job_duration_seconds",
            "CT job durations on this process's workers, by pipeline and outcome",
            jobs.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers", "Workers in this process's pool", workers.clone());
        let workers_busy = Gauge::default();
        registry.register(
            "workers_busy",
            "Workers running a job now",
            workers_busy.clone(),
        );
        let triggers = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "watch_triggers",
            "Data, drift and performance triggers this process's watcher recorded",
            triggers.clone(),
        );
        let drift_checks = Family::<DriftCheckLabels, Counter>::default();
        registry.register(
            "drift_checks",
            "Drift checks by pipeline and result",
            drift_checks.clone(),
        );
        let drift_score = Family::<ColumnLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "drift_score",
            "The latest drift statistic per pipeline and column (a p-value for ks, chisquare and z)",
            drift_score.clone(),
        );
        let drift_share = Family::<PipelineLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "drift_share",
            "The share of drifted columns in the latest drift check",
            drift_share.clone(),
        );
        let live_metric = Family::<LiveMetricLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "live_metric",
            "Live quality per pipeline, served version and metric, over the monitoring window",
            live_metric.clone(),
        );
        let live_labelled = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "live_labelled_predictions",
            "Predictions in the monitoring window that have a feedback label, per served version",
            live_labelled.clone(),
        );
        let live_predictions = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "live_predictions",
            "Logged predictions in the monitoring window, per served version",
            live_predictions.clone(),
        );
        let feedback_unmatched = Family::<PipelineLabels, Gauge>::default();
        registry.register(
            "feedback_unmatched_labels",
            "Labels received within the monitoring window whose request id is in no logged prediction",
            feedback_unmatched.clone(),
        );
        let controller_passes = Counter::default();
        registry.register(
            "controller_reconcile_passes",
            "Reconcile passes over the unfinished pipeline runs",
            controller_passes.clone(),
        );
        let controller_steps: HistogramFamily<ControllerStepLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "controller_step_duration_seconds",
            "How long the controller took to apply a decided step, by step and target phase",
            controller_steps.clone(),
        );
        let controller_errors = Family::<ControllerErrorLabels, Counter>::default();
        registry.register(
            "controller_errors",
            "Controller passes, steps and job reports that failed, by kind",
            controller_errors.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            store_operations,
            jobs,
            workers,
            workers_busy,
            triggers,
            drift_checks,
            drift_score,
            drift_share,
            live_metric,
            live_labelled,
            live_predictions,
            feedback_unmatched,
            controller_passes,
            controller_steps,
            controller_errors,
        }
    }

    /// The live instruments and the snapshot, as OpenMetrics text.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        let scraped = snapshot.registry();
        // NB: writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scraped);
        let _ = encode_eof(&mut out);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    pipeline: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    pipeline: String,
    gate: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AliasLabels {
    model: String,
    alias: String,
}

/// What the store says at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// (pipeline, phase, count)
    pub pipeline_runs: Vec<(String, String, i64)>,
    /// (pipeline, gate, result, count)
    pub gate_decisions: Vec<(String, String, String, i64)>,
    /// (model, alias, version)
    pub aliases: Vec<(String, String, i64)>,
    /// Pipeline runs waiting for a worker (Pending or Queued).
    pub queue_depth: i64,
}

impl Snapshot {
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("ctflow");
        let runs = Family::<PhaseLabels, Gauge>::default();
        for (pipeline, phase, count) in &self.pipeline_runs {
            runs.get_or_create(&PhaseLabels {
                pipeline: pipeline.clone(),
                phase: phase.clone(),
            })
            .set(*count);
        }
        registry.register(
            "pipeline_runs",
            "Pipeline runs by pipeline and phase (terminal phases only grow)",
            runs,
        );
        let gates = Family::<GateLabels, Gauge>::default();
        for (pipeline, gate, result, count) in &self.gate_decisions {
            gates
                .get_or_create(&GateLabels {
                    pipeline: pipeline.clone(),
                    gate: gate.clone(),
                    result: result.clone(),
                })
                .set(*count);
        }
        registry.register(
            "gate_decisions",
            "Gate decisions by pipeline, gate and result",
            gates,
        );
        let aliases = Family::<AliasLabels, Gauge>::default();
        for (model, alias, version) in &self.aliases {
            aliases
                .get_or_create(&AliasLabels {
                    model: model.clone(),
                    alias: alias.clone(),
                })
                .set(*version);
        }
        registry.register(
            "model_alias_version",
            "The model version each registry alias points at (champion, challenger, ...)",
            aliases,
        );
        let queue = Gauge::<i64>::default();
        queue.set(self.queue_depth);
        registry.register("queue_depth", "Pipeline runs waiting for a worker", queue);
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family with one sample (empty families are left out of the exposition).
    fn populated() -> String {
        let metrics = Metrics::new();
        let route = RouteLabels {
            method: "GET".into(),
            route: "/metrics".into(),
        };
        metrics.http_duration.get_or_create(&route).observe(0.001);
        metrics
            .store_operations
            .get_or_create(&OperationLabels {
                operation: "search_runs".into(),
            })
            .observe(0.002);
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: "GET".into(),
                route: "/metrics".into(),
                status: 200,
            })
            .inc();
        let job = JobLabels {
            pipeline: "p".into(),
            status: "succeeded".into(),
        };
        metrics.jobs.get_or_create(&job).observe(3.0);
        metrics.workers.set(2);
        metrics.workers_busy.set(1);
        let pipeline = PipelineLabels {
            pipeline: "p".into(),
        };
        metrics.drift_share.get_or_create(&pipeline).set(0.5);
        metrics
            .triggers
            .get_or_create(&TriggerLabels {
                pipeline: "p".into(),
                kind: "data".into(),
            })
            .inc();
        metrics
            .drift_checks
            .get_or_create(&DriftCheckLabels {
                pipeline: "p".into(),
                result: "drift".into(),
            })
            .inc();
        metrics
            .drift_score
            .get_or_create(&ColumnLabels {
                pipeline: "p".into(),
                column: "x".into(),
                method: "psi".into(),
            })
            .set(0.3);
        let version = VersionLabels {
            pipeline: "p".into(),
            version: "1".into(),
        };
        metrics.live_labelled.get_or_create(&version).set(10);
        metrics.live_predictions.get_or_create(&version).set(20);
        metrics
            .live_metric
            .get_or_create(&LiveMetricLabels {
                pipeline: "p".into(),
                version: "1".into(),
                metric: "accuracy".into(),
            })
            .set(0.9);
        metrics.feedback_unmatched.get_or_create(&pipeline).set(1);
        metrics.controller_passes.inc();
        metrics
            .controller_steps
            .get_or_create(&ControllerStepLabels {
                step: "move".into(),
                phase: "Queued".into(),
            })
            .observe(0.01);
        metrics
            .controller_errors
            .get_or_create(&ControllerErrorLabels {
                kind: "store".into(),
            })
            .inc();
        metrics.encode(&Snapshot {
            pipeline_runs: vec![("p".into(), "Succeeded".into(), 1)],
            gate_decisions: vec![("p".into(), "ct".into(), "pass".into(), 1)],
            aliases: vec![("m".into(), "champion".into(), 1)],
            queue_depth: 0,
        })
    }

    /// The words `ctflow_...` in `text`, without a sample suffix.
    fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("ctflow_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(base.to_string());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let exposition = populated();
        let declared: std::collections::BTreeSet<String> = exposition
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let dashboard = include_str!("../../../charts/ctflow/dashboards/ctflow.json");
        // The scoring servers' families are checked by ctflow-serving's own test.
        let mut used = metric_names(dashboard);
        used.retain(|name| !name.starts_with("ctflow_serving_"));
        let missing: Vec<&String> = used.difference(&declared).collect();
        assert!(missing.is_empty(), "the dashboard queries {missing:?}");
        // And every exported family is on the dashboard.
        let unused: Vec<&String> = declared.difference(&used).collect();
        assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
    }

    #[test]
    fn live_and_scraped_metrics_in_one_exposition() {
        let metrics = Metrics::new();
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: "GET".into(),
                route: "/api/2.0/mlflow/runs/get".into(),
                status: 200,
            })
            .inc();
        metrics
            .drift_score
            .get_or_create(&ColumnLabels {
                pipeline: "iris".into(),
                column: "x".into(),
                method: "psi".into(),
            })
            .set(0.25);
        let text = metrics.encode(&Snapshot {
            pipeline_runs: vec![("iris".into(), "Succeeded".into(), 3)],
            gate_decisions: vec![("iris".into(), "ct".into(), "pass".into(), 2)],
            aliases: vec![("iris-model".into(), "champion".into(), 4)],
            queue_depth: 1,
        });
        for line in [
            r#"ctflow_http_requests_total{method="GET",route="/api/2.0/mlflow/runs/get",status="200"} 1"#,
            r#"ctflow_drift_score{pipeline="iris",column="x",method="psi"} 0.25"#,
            r#"ctflow_pipeline_runs{pipeline="iris",phase="Succeeded"} 3"#,
            r#"ctflow_gate_decisions{pipeline="iris",gate="ct",result="pass"} 2"#,
            r#"ctflow_model_alias_version{model="iris-model",alias="champion"} 4"#,
            "ctflow_queue_depth 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
