//! The drift loop: for every pipeline's `drift` trigger, when current files arrive that
//! have not been judged yet, the trigger's window of current data (the new files, the
//! last N rows, or a time span) is compared with the reference, and the check is recorded
//! as a tracking run in the experiment `<pipeline>-drift` (per-column metrics, the JSON
//! and HTML reports as artifacts). A dataset drift records a drift trigger event, which
//! starts a pipeline run, and is then announced on the bus as `DriftDetected`. Everything
//! is recorded through the tracking server's REST API, as a worker records its runs.
//!
//! Files are polled (every `interval`), which works the same on local disks and network
//! mounts. A file counts once it has not changed for `settle`. Fewer current rows than
//! `minRows` is "insufficient data": the files wait for more to arrive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ctflow_bus::{Bus, WatchEvent};
use ctflow_client::ct::{ChampionSnapshot, Recorded};
use ctflow_client::tracking::{MetricPoint, RunStart};
use ctflow_client::{ClientError, TrackingClient};
use ctflow_core::data::DataSnapshot;
use ctflow_core::entities::KeyValue;
use ctflow_core::pipeline::PipelineRecord;
use ctflow_core::pipeline::{
    CHAMPION_REFERENCE, DriftCurrent, DriftTrigger, Trigger, drift_method,
};
use ctflow_core::trigger::DriftEvent;
use ctflow_metrics::{ColumnLabels, DriftCheckLabels, Metrics, PipelineLabels, TriggerLabels};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::reader::{RawTable, Table, Typing, Window};
use crate::source::{DataSource, ObjectStores, read_one};
use crate::{DriftOptions, DriftReport, compare};

#[derive(Clone)]
pub struct WatcherConfig {
    pub interval: Duration,
    /// How long a file must be unchanged before it is read.
    pub settle: Duration,
    pub user: String,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            interval: Duration::from_secs(2),
            settle: Duration::from_millis(500),
            user: "ctflow-watcher".into(),
        }
    }
}

pub struct Watcher {
    client: TrackingClient,
    bus: Arc<dyn Bus>,
    config: WatcherConfig,
    stores: ObjectStores,
    metrics: Arc<Metrics>,
}

pub(crate) fn normalize(path: &Path) -> PathBuf {
    PathBuf::from(ctflow_core::validation::normpath(&path.to_string_lossy()))
}

/// MLflow metric keys allow letters, digits, `_ - . /` and spaces.
fn metric_key(column: &str) -> String {
    column
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "_-. /".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn window_of(trigger: &DriftTrigger) -> Window {
    match &trigger.window {
        None => Window::All,
        Some(w) => match (w.last_rows, &w.time_column, &w.last) {
            (Some(rows), _, _) => Window::LastRows(usize::try_from(rows).unwrap_or(usize::MAX)),
            (None, Some(column), Some(last)) => Window::Time {
                column: column.clone(),
                span_ms: i64::try_from(last.0.as_millis()).unwrap_or(i64::MAX),
            },
            // Validation refuses the other shapes.
            _ => Window::All,
        },
    }
}

fn options_of(trigger: &DriftTrigger) -> DriftOptions {
    let method = |text: &str| drift_method(text).ok().flatten();
    DriftOptions {
        method: method(&trigger.method),
        threshold: trigger.threshold,
        per_column: trigger
            .columns
            .iter()
            .map(|(name, o)| {
                (
                    name.clone(),
                    (o.method.as_deref().and_then(method), o.threshold),
                )
            })
            .collect(),
        drift_share: trigger.drift_share,
        correction: trigger.correction,
        critical: trigger.critical.clone(),
        min_rows: usize::try_from(trigger.min_rows).unwrap_or(usize::MAX),
        ..DriftOptions::default()
    }
}

/// What a check compares the current data with.
enum ReferenceSource {
    /// A file (or glob) the trigger names.
    File(String),
    /// The training snapshot of the model's champion (`reference: champion`).
    Champion(Box<ChampionSnapshot>),
}

impl ReferenceSource {
    /// How the check run and the drift event name it.
    fn label(&self) -> String {
        match self {
            ReferenceSource::File(path) => path.clone(),
            ReferenceSource::Champion(c) => format!(
                "{} version {} ({}), training snapshot {}",
                c.model,
                c.version,
                c.alias,
                c.snapshot.digest()
            ),
        }
    }

    /// The check run's tags that say what it compared with.
    fn tags(&self) -> Vec<KeyValue> {
        match self {
            ReferenceSource::File(path) => vec![KeyValue::new("ctflow.drift.reference", path)],
            ReferenceSource::Champion(c) => vec![
                KeyValue::new("ctflow.drift.reference", CHAMPION_REFERENCE),
                KeyValue::new("ctflow.drift.reference_snapshot", &c.snapshot.id),
                KeyValue::new("ctflow.drift.reference_version", &c.version),
                KeyValue::new("ctflow.drift.reference_run", &c.run_id),
            ],
        }
    }

    async fn read(&self, base: &Path, stores: &ObjectStores) -> Result<RawTable, crate::Error> {
        match self {
            ReferenceSource::File(path) => read_one(base, path, stores).await,
            ReferenceSource::Champion(c) => read_snapshot(&c.snapshot, stores).await,
        }
    }
}

/// Reads the files of a training snapshot as its manifest describes them (the rows a
/// window cut are left out). A local file whose size or modification time differs from
/// the record is refused: it is no longer what the champion learned from.
async fn read_snapshot(
    snapshot: &DataSnapshot,
    stores: &ObjectStores,
) -> Result<RawTable, crate::Error> {
    ctflow_data::check_recorded_facts(snapshot, stores)
        .await
        .map_err(|e| crate::Error::Read {
            path: format!("the champion's training data ({})", snapshot.digest()),
            message: e.to_string(),
        })?;
    let mut table: Option<RawTable> = None;
    for file in &snapshot.files {
        let mut part = read_one(Path::new("/"), &file.uri, stores).await?;
        part.skip_first(usize::try_from(file.skip_rows).unwrap_or(usize::MAX));
        match &mut table {
            None => table = Some(part),
            Some(table) => table.append(part)?,
        }
    }
    table.ok_or_else(|| {
        crate::Error::Options("the champion's training snapshot has no files".into())
    })
}

/// The finished files of the inference log of the pipeline named `served` (or serving the
/// model of that name).
fn served_log_glob(pipelines: &[PipelineRecord], served: &str) -> Option<String> {
    pipelines.iter().find_map(|p| {
        let spec = &p.document.spec;
        let named = p.name == served || spec.model.as_ref().is_some_and(|m| m.name == served);
        let log = spec.promotion.serving.as_ref()?.log.as_ref()?;
        named.then(|| {
            if log.path.contains("://") {
                format!("{}/*.parquet", log.path.trim_end_matches('/'))
            } else {
                Path::new(&p.base_dir)
                    .join(&log.path)
                    .join("*.parquet")
                    .to_string_lossy()
                    .to_string()
            }
        })
    })
}

/// The data of one check, typed, with the MLflow dataset inputs that record it.
struct Prepared {
    reference: Table,
    current: Table,
    /// The current files that contributed rows.
    files: Vec<String>,
    datasets: Vec<serde_json::Value>,
}

/// Reads the reference and the current files, applies the window and types both.
async fn prepare(
    pipeline: &PipelineRecord,
    source: &DataSource,
    candidates: &[String],
    window: &Window,
    trigger: &DriftTrigger,
    reference_source: &ReferenceSource,
    stores: &ObjectStores,
) -> Result<Prepared, crate::Error> {
    let typing = Typing {
        categorical: trigger.categorical.iter().cloned().collect(),
        numeric: trigger.numeric.iter().cloned().collect(),
    };
    // For the last N rows only the newest files are needed.
    let mut tables: Vec<(String, RawTable)> = Vec::new();
    let mut rows = 0;
    for file in candidates.iter().rev() {
        if let Window::LastRows(wanted) = window
            && rows >= *wanted
        {
            break;
        }
        let table = source.read(file).await?;
        rows += table.rows;
        tables.push((file.clone(), table));
    }
    tables.reverse();
    let files: Vec<String> = tables.iter().map(|(f, _)| f.clone()).collect();
    let mut tables = tables.into_iter().map(|(_, t)| t);
    let Some(mut current) = tables.next() else {
        return Err(crate::Error::Options("no current data".into()));
    };
    for table in tables {
        current.append(table)?;
    }
    window.apply(&mut current)?;
    let mut reference = reference_source
        .read(Path::new(&pipeline.base_dir), stores)
        .await?;
    if trigger.served().is_some() {
        // An inference log holds the model's inputs beside the request's own columns, and
        // the reference (training data) holds labels the requests do not: what the model
        // was sent is compared with what it learned from, column by column.
        for name in ctflow_core::inference::LOG_COLUMNS {
            current.drop_column(name);
        }
        for name in reference.names().to_vec() {
            if !current.names().contains(&name) {
                reference.drop_column(&name);
            }
        }
    }
    let pipeline = &pipeline.name;
    if let Window::Time { column, .. } = window {
        reference.drop_column(column);
    }
    if !trigger.features.is_empty() {
        for name in reference.names().to_vec() {
            if !trigger.features.contains(&name) {
                reference.drop_column(&name);
                current.drop_column(&name);
            }
        }
    }
    let reference_dataset = match reference_source {
        ReferenceSource::Champion(c) => c
            .snapshot
            .dataset_input(&format!("{pipeline}-reference"), "reference"),
        ReferenceSource::File(path) => table_dataset(
            &format!("{pipeline}-reference"),
            "reference",
            &reference,
            std::slice::from_ref(path),
        ),
    };
    let datasets = vec![
        reference_dataset,
        table_dataset(&format!("{pipeline}-current"), "current", &current, &files),
    ];
    let typed = |raw: RawTable, path: String| {
        raw.into_table(&typing)
            .map_err(|message| crate::Error::Read { path, message })
    };
    Ok(Prepared {
        reference: typed(reference, reference_source.label())?,
        current: typed(current, files.join(", "))?,
        files,
        datasets,
    })
}

/// Data read for a check as an MLflow dataset input: its digest is over the rows as
/// compared (after the window).
fn table_dataset(
    name: &str,
    context: &str,
    table: &RawTable,
    files: &[String],
) -> serde_json::Value {
    let source = serde_json::json!({ "files": files });
    let profile = serde_json::json!({ "num_rows": table.rows, "num_files": files.len() });
    ctflow_core::data::dataset_input(
        name,
        context,
        &table.digest(),
        &source,
        &table.schema(),
        &profile,
    )
}

impl Watcher {
    pub fn new(client: TrackingClient, bus: Arc<dyn Bus>, config: WatcherConfig) -> Watcher {
        Watcher {
            client,
            bus,
            config,
            stores: ObjectStores::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Reports checks and drift scores to this process's metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Watcher {
        self.metrics = metrics;
        self
    }

    /// Checks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.check_all().await {
                tracing::warn!(%error, "drift checks failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass over every drift trigger.
    pub async fn check_all(&self) -> Result<(), ClientError> {
        let pipelines = self.client.pipelines().await?;
        for pipeline in &pipelines {
            if pipeline.document.spec.suspend {
                continue;
            }
            for (index, trigger) in pipeline.document.spec.triggers.iter().enumerate() {
                if let Trigger::Drift(drift) = trigger
                    && let Err(error) = self.check(pipeline, &pipelines, index, drift).await
                {
                    tracing::warn!(pipeline = pipeline.name, trigger = index, %error, "drift check failed");
                }
            }
        }
        Ok(())
    }

    async fn check(
        &self,
        pipeline: &PipelineRecord,
        pipelines: &[PipelineRecord],
        index: usize,
        trigger: &DriftTrigger,
    ) -> Result<(), ClientError> {
        let base = Path::new(&pipeline.base_dir);
        let current = match &trigger.current {
            DriftCurrent::Files(glob) => glob.clone(),
            DriftCurrent::Served(served) => match served_log_glob(pipelines, &served.served) {
                Some(glob) => glob,
                None => {
                    tracing::warn!(
                        pipeline = pipeline.name,
                        served = served.served,
                        "drift trigger skipped: no pipeline of that name (or model) has promotion.serving.log"
                    );
                    return Ok(());
                }
            },
        };
        let source = match DataSource::parse(base, &current, &self.stores) {
            Ok(source) => source,
            Err(error) => {
                tracing::warn!(pipeline = pipeline.name, %error, "drift trigger skipped");
                return Ok(());
            }
        };
        let listed = match source.list().await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(pipeline = pipeline.name, %error, "cannot list the current data");
                return Ok(());
            }
        };
        let seen = self.client.seen_files(&pipeline.name, index).await?;
        // A local file counts once it has not changed for `settle`; an object is
        // complete once listed.
        let settle_ms = i64::try_from(self.config.settle.as_millis()).unwrap_or(i64::MAX);
        let settled: Vec<String> = listed
            .into_iter()
            .filter(|f| source.is_object() || f.age_ms >= settle_ms)
            .map(|f| f.name)
            .collect();
        let new: Vec<String> = settled
            .iter()
            .filter(|f| !seen.contains(*f))
            .cloned()
            .collect();
        tracing::debug!(
            pipeline = pipeline.name,
            trigger = index,
            current,
            settled = settled.len(),
            new = new.len(),
            "current data listed"
        );
        if new.is_empty() {
            return Ok(());
        }
        let reference_source = if trigger.references_champion() {
            match self.client.champion_snapshot(&pipeline.name).await? {
                Some(champion) => ReferenceSource::Champion(Box::new(champion)),
                None => {
                    // Nothing has been learned yet: these files are the first model's data.
                    tracing::info!(
                        pipeline = pipeline.name,
                        files = new.len(),
                        "no champion trained on a recorded snapshot yet; new files are not judged"
                    );
                    return self.client.mark_seen(&pipeline.name, index, &new).await;
                }
            }
        } else {
            ReferenceSource::File(trigger.reference.clone())
        };
        let window = window_of(trigger);
        // A window looks at every file the glob matches; otherwise only the new ones.
        let candidates = if window == Window::All {
            &new
        } else {
            &settled
        };
        let prepared = prepare(
            pipeline,
            &source,
            candidates,
            &window,
            trigger,
            &reference_source,
            &self.stores,
        )
        .await;
        let Prepared {
            reference,
            current,
            files,
            datasets,
        } = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                return self
                    .give_up(pipeline, index, &new, &reference_source, error)
                    .await;
            }
        };
        if (current.rows as u64) < trigger.min_rows {
            tracing::debug!(
                pipeline = pipeline.name,
                rows = current.rows,
                min_rows = trigger.min_rows,
                "insufficient data for a drift check; waiting for more"
            );
            return Ok(());
        }
        let report = match compare(&reference, &current, &options_of(trigger)) {
            Ok(report) => report,
            Err(error) => {
                return self
                    .give_up(pipeline, index, &new, &reference_source, error)
                    .await;
            }
        };
        let check_run = self
            .record(
                pipeline,
                &files,
                &reference_source,
                &datasets,
                Ok((&report, &reference, &current)),
            )
            .await?;
        self.observe(&pipeline.name, &report);
        if report.dataset.drifted {
            let mut hasher = sha2::Sha256::new();
            for f in &new {
                hasher.update(f.as_bytes());
                hasher.update([0u8]);
            }
            let event = DriftEvent {
                pipeline: pipeline.name.clone(),
                trigger_index: index,
                method: trigger.method.clone(),
                statistic: report.dataset.share,
                threshold: report.dataset.drift_share,
                features: report
                    .columns
                    .iter()
                    .map(|c| (c.column.clone(), c.statistic))
                    .collect(),
                rows: current.rows as u64,
                snapshot: format!("sha256:{}", &hex::encode(hasher.finalize())[..32]),
                detected_at: ctflow_core::now_ms(),
                reference: Some(reference_source.label()),
            };
            let pipeline_run = match self.client.record_drift(&event, &new, &check_run).await? {
                Recorded::Created(run) => {
                    tracing::info!(
                        pipeline = pipeline.name,
                        pipeline_run = run,
                        "drift detected; retraining"
                    );
                    self.metrics
                        .triggers
                        .get_or_create(&TriggerLabels {
                            pipeline: pipeline.name.clone(),
                            kind: "drift".into(),
                        })
                        .inc();
                    Some(run)
                }
                Recorded::Duplicate(id) => {
                    tracing::debug!(pipeline_run = id, "drift already recorded");
                    None
                }
            };
            let announced = self
                .bus
                .publish(WatchEvent::DriftDetected {
                    event,
                    check_run,
                    pipeline_run,
                })
                .await;
            if let Err(error) = announced {
                tracing::warn!(%error, pipeline = pipeline.name, "cannot announce the drift");
            }
        }
        self.client.mark_seen(&pipeline.name, index, &new).await
    }

    fn observe(&self, pipeline: &str, report: &DriftReport) {
        let result = if report.dataset.drifted {
            "drift"
        } else {
            "no_drift"
        };
        self.metrics
            .drift_checks
            .get_or_create(&DriftCheckLabels {
                pipeline: pipeline.to_string(),
                result: result.into(),
            })
            .inc();
        self.metrics
            .drift_share
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.to_string(),
            })
            .set(report.dataset.share);
        for column in &report.columns {
            self.metrics
                .drift_score
                .get_or_create(&ColumnLabels {
                    pipeline: pipeline.to_string(),
                    column: column.column.clone(),
                    method: column.method.as_str().into(),
                })
                .set(column.p_value.unwrap_or(column.statistic));
        }
    }

    /// Data that cannot be read or compared is recorded (a failed check run says why)
    /// and not looked at again.
    async fn give_up(
        &self,
        pipeline: &PipelineRecord,
        index: usize,
        files: &[String],
        reference: &ReferenceSource,
        error: crate::Error,
    ) -> Result<(), ClientError> {
        tracing::warn!(pipeline = pipeline.name, trigger = index, %error, "drift check failed; recorded as a failed check run");
        self.record(pipeline, files, reference, &[], Err(error.to_string()))
            .await?;
        self.metrics
            .drift_checks
            .get_or_create(&DriftCheckLabels {
                pipeline: pipeline.name.clone(),
                result: "error".into(),
            })
            .inc();
        self.client.mark_seen(&pipeline.name, index, files).await
    }

    /// Records a check as a tracking run in `<pipeline>-drift`, with what it compared
    /// (tags, and the reference and current data as MLflow dataset inputs); returns its
    /// run id.
    async fn record(
        &self,
        pipeline: &PipelineRecord,
        files: &[String],
        reference: &ReferenceSource,
        datasets: &[serde_json::Value],
        report: Result<(&DriftReport, &Table, &Table), String>,
    ) -> Result<String, ClientError> {
        let experiment_id = self
            .client
            .experiment_id(&format!("{}-drift", pipeline.name))
            .await?;
        // The tags go in with the run, so nobody sees a check without its verdict.
        let mut tags = vec![
            KeyValue::new("ctflow.pipeline", &pipeline.name),
            KeyValue::new(
                "ctflow.drift.files",
                files.join(",").chars().take(8000).collect::<String>(),
            ),
            KeyValue::new("mlflow.user", &self.config.user),
        ];
        tags.extend(reference.tags());
        match &report {
            Err(message) => tags.push(KeyValue::new(
                "ctflow.drift.error",
                message.chars().take(8000).collect::<String>(),
            )),
            Ok((report, _, _)) => tags.push(KeyValue::new(
                "ctflow.drift.dataset_drift",
                if report.dataset.drifted {
                    "true"
                } else {
                    "false"
                },
            )),
        }
        let now = ctflow_core::now_ms();
        let run = self
            .client
            .create_run(&RunStart {
                experiment_id,
                run_name: Some(format!("drift-check-{now}")),
                user_id: Some(self.config.user.clone()),
                start_time: now,
                tags,
            })
            .await?
            .info;
        if !datasets.is_empty() {
            self.client
                .post(
                    "runs/log-inputs",
                    &serde_json::json!({ "run_id": run.run_id, "datasets": datasets }),
                )
                .await?;
        }
        let status = match report {
            Err(_) => "FAILED",
            Ok((report, reference, current)) => {
                let metric = |key: String, value: f64| MetricPoint {
                    key,
                    value,
                    timestamp: now,
                    step: 0,
                };
                let mut metrics = vec![
                    metric("drift.share".into(), report.dataset.share),
                    metric(
                        "drift.drifted_columns".into(),
                        report.dataset.drifted_columns as f64,
                    ),
                    metric("drift.current_rows".into(), report.current_rows as f64),
                ];
                for c in &report.columns {
                    let key = metric_key(&c.column);
                    metrics.push(metric(format!("{key}.statistic"), c.statistic));
                    if let Some(p) = c.p_value {
                        metrics.push(metric(format!("{key}.p_value"), p));
                    }
                    metrics.push(metric(
                        format!("{key}.drifted"),
                        if c.drifted { 1.0 } else { 0.0 },
                    ));
                }
                self.client.log_metrics(&run.run_id, &metrics).await?;
                let title = format!("Drift check of {}", pipeline.name);
                let json = serde_json::to_string_pretty(report).unwrap_or_default();
                let html = crate::render_html(report, reference, current, &title);
                for (name, body) in [("drift_report.json", json), ("drift_report.html", html)] {
                    let stored = self
                        .client
                        .put_artifact(&run.artifact_uri, name, body)
                        .await?;
                    if !stored {
                        tracing::warn!(
                            pipeline = pipeline.name,
                            artifact_uri = run.artifact_uri,
                            "the drift report is not stored: the server does not serve this run's artifacts (--serve-artifacts)"
                        );
                    }
                }
                "FINISHED"
            }
        };
        self.client
            .end_run(&run.run_id, status, ctflow_core::now_ms())
            .await?;
        Ok(run.run_id)
    }
}

#[cfg(test)]
mod tests {
    use ctflow_core::pipeline::PipelineDocument;

    use super::*;

    fn record(name: &str, spec: &str) -> PipelineRecord {
        let yaml = format!(
            "apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: {{ name: {name} }}\nspec:\n{spec}"
        );
        PipelineRecord {
            name: name.into(),
            document: PipelineDocument::from_yaml(&yaml).expect("a pipeline"),
            source: "api".into(),
            base_dir: format!("/pipelines/{name}"),
            generation: 1,
            creation_time: 0,
            last_updated_time: 0,
        }
    }

    #[test]
    fn a_served_current_is_the_finished_files_of_that_pipelines_log() {
        let pipelines = [
            record("plain", "  project: { uri: . }\n"),
            record(
                "iris",
                "  project: { uri: . }\n  model: { name: iris-classifier }\n  promotion:\n    serving: { port: 5001, log: { path: served } }\n",
            ),
        ];
        let glob = Some("/pipelines/iris/served/*.parquet".to_string());
        assert_eq!(served_log_glob(&pipelines, "iris"), glob);
        assert_eq!(served_log_glob(&pipelines, "iris-classifier"), glob);
        assert_eq!(served_log_glob(&pipelines, "plain"), None);
        assert_eq!(served_log_glob(&pipelines, "nothing"), None);
        let uploaded = [record(
            "up",
            "  project: { uri: . }\n  model: { name: up-model }\n  promotion:\n    serving: { port: 5001, log: { path: \"s3://logs/iris/\" } }\n",
        )];
        assert_eq!(
            served_log_glob(&uploaded, "up"),
            Some("s3://logs/iris/*.parquet".to_string())
        );
    }
}
