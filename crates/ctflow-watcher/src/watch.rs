//! The watching loop: for every pipeline's `drift` trigger, the current files that have
//! not been judged yet are read together, compared with the reference, and the check is
//! recorded as a tracking run in the experiment `<pipeline>-drift` (per-column metrics,
//! the JSON report as an artifact). A dataset drift records a drift trigger event, which
//! starts a pipeline run.
//!
//! Files are polled (every `interval`), which works the same on local disks and network
//! mounts. A file counts once it has not changed for `settle`. Fewer current rows than
//! `minRows` is "insufficient data": the files wait for more to arrive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ctflow_bus::Bus;
use ctflow_core::drift::{ColumnData, Method};
use ctflow_core::entities::KeyValue;
use ctflow_core::pipeline::{DriftTrigger, Trigger};
use ctflow_core::trigger::DriftEvent;
use ctflow_store::artifacts::ArtifactRepository;
use ctflow_store::{BatchMetric, NewRun, PipelineRecord, Recorded, RunUpdate, Store};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::reader::{Table, Typing, read_table};
use crate::{DriftOptions, DriftReport, compare};

/// Maps a run's artifact URI to a path in the artifact repository, when it lives there.
pub type ArtifactPath = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

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
    store: Store,
    bus: Arc<dyn Bus>,
    artifacts: Arc<dyn ArtifactRepository>,
    artifact_path: ArtifactPath,
    config: WatcherConfig,
}

fn normalize(path: &Path) -> PathBuf {
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

fn merge(tables: Vec<Table>) -> Result<Table, crate::Error> {
    let mut iter = tables.into_iter();
    let Some(mut merged) = iter.next() else {
        return Err(crate::Error::Options("no current data".into()));
    };
    for table in iter {
        let names: Vec<&str> = merged.columns.iter().map(|c| c.name.as_str()).collect();
        let other: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        if names != other {
            return Err(crate::Error::Schema(format!(
                "the current files have different columns: [{}] and [{}]",
                names.join(", "),
                other.join(", ")
            )));
        }
        merged.rows += table.rows;
        for (into, from) in merged.columns.iter_mut().zip(table.columns) {
            into.nulls += from.nulls;
            into.infinite += from.infinite;
            match (&mut into.data, from.data) {
                (ColumnData::Numeric(a), ColumnData::Numeric(b)) => a.extend(b),
                (ColumnData::Categorical(a), ColumnData::Categorical(b)) => a.extend(b),
                (ColumnData::Numeric(a), ColumnData::Categorical(b)) => {
                    let mut text: Vec<String> = a.iter().map(|v| v.to_string()).collect();
                    text.extend(b);
                    into.data = ColumnData::Categorical(text);
                }
                (ColumnData::Categorical(a), ColumnData::Numeric(b)) => {
                    a.extend(b.iter().map(|v| v.to_string()));
                }
            }
        }
    }
    Ok(merged)
}

impl Watcher {
    pub fn new(
        store: Store,
        bus: Arc<dyn Bus>,
        artifacts: Arc<dyn ArtifactRepository>,
        artifact_path: ArtifactPath,
        config: WatcherConfig,
    ) -> Watcher {
        Watcher {
            store,
            bus,
            artifacts,
            artifact_path,
            config,
        }
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
    pub async fn check_all(&self) -> Result<(), ctflow_store::Error> {
        for pipeline in self.store.list_pipelines().await? {
            if pipeline.document.spec.suspend {
                continue;
            }
            for (index, trigger) in pipeline.document.spec.triggers.iter().enumerate() {
                if let Trigger::Drift(drift) = trigger
                    && let Err(error) = self.check(&pipeline, index, drift).await
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
        index: usize,
        trigger: &DriftTrigger,
    ) -> Result<(), ctflow_store::Error> {
        let base = Path::new(&pipeline.base_dir);
        let key = format!("drift/{index}/{}", trigger.current);
        let pattern = normalize(&base.join(&trigger.current))
            .to_string_lossy()
            .to_string();
        let seen = self.store.seen_files(&pipeline.name, &key).await?;
        let now = SystemTime::now();
        let mut files: Vec<String> = glob::glob(&pattern)
            .map(|paths| {
                paths
                    .flatten()
                    .filter(|p| {
                        p.metadata().is_ok_and(|m| {
                            m.is_file()
                                && m.modified()
                                    .ok()
                                    .and_then(|t| now.duration_since(t).ok())
                                    .is_some_and(|age| age >= self.config.settle)
                        })
                    })
                    .map(|p| p.to_string_lossy().to_string())
                    .filter(|p| !seen.contains(p))
                    .collect()
            })
            .unwrap_or_default();
        if files.is_empty() {
            return Ok(());
        }
        files.sort();
        let reference_path = normalize(&base.join(&trigger.reference));
        let typing = Typing::default();
        let outcome = (|| -> Result<(Table, Table), crate::Error> {
            let reference = read_table(&reference_path, &typing)?;
            let tables = files
                .iter()
                .map(|f| read_table(Path::new(f), &typing))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((reference, merge(tables)?))
        })();
        let (reference, mut current) = match outcome {
            Ok(pair) => pair,
            Err(error) => return self.give_up(pipeline, &key, &files, error).await,
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
        let mut reference = reference;
        if !trigger.features.is_empty() {
            reference
                .columns
                .retain(|c| trigger.features.contains(&c.name));
            current
                .columns
                .retain(|c| trigger.features.contains(&c.name));
        }
        let method = Method::parse(&trigger.method).ok();
        let options = DriftOptions {
            method,
            threshold: Some(trigger.threshold),
            ..DriftOptions::default()
        };
        let report = match compare(&reference, &current, &options) {
            Ok(report) => report,
            Err(error) => return self.give_up(pipeline, &key, &files, error).await,
        };
        let check_run = self
            .record(pipeline, &files, Ok((&report, &reference, &current)))
            .await?;
        if report.dataset.drifted {
            let mut hasher = sha2::Sha256::new();
            for f in &files {
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
            };
            let mut trigger_event = event.into_trigger();
            trigger_event.files = files.clone();
            trigger_event
                .tags
                .insert("drift.check_run".into(), check_run);
            match self.store.record_trigger(&trigger_event).await? {
                Recorded::Created(run) => {
                    tracing::info!(
                        pipeline = pipeline.name,
                        pipeline_run = run.id,
                        "drift detected; retraining"
                    );
                    self.bus.wake_controller();
                }
                Recorded::Duplicate(id) => {
                    tracing::debug!(pipeline_run = id, "drift already recorded")
                }
            }
        }
        self.store
            .mark_files_seen(&pipeline.name, &key, &files)
            .await
    }

    /// Data that cannot be read or compared is recorded (a failed check run says why)
    /// and not looked at again.
    async fn give_up(
        &self,
        pipeline: &PipelineRecord,
        key: &str,
        files: &[String],
        error: crate::Error,
    ) -> Result<(), ctflow_store::Error> {
        self.record(pipeline, files, Err(error.to_string())).await?;
        self.store.mark_files_seen(&pipeline.name, key, files).await
    }

    /// Records a check as a tracking run in `<pipeline>-drift`; returns its run id.
    async fn record(
        &self,
        pipeline: &PipelineRecord,
        files: &[String],
        report: Result<(&DriftReport, &Table, &Table), String>,
    ) -> Result<String, ctflow_store::Error> {
        let experiment = format!("{}-drift", pipeline.name);
        let experiment_id = match self.store.get_experiment_by_name(&experiment).await {
            Ok(found) => found.experiment_id,
            Err(_) => match self.store.create_experiment(&experiment, None, &[]).await {
                Ok(id) => id,
                Err(_) => {
                    self.store
                        .get_experiment_by_name(&experiment)
                        .await?
                        .experiment_id
                }
            },
        };
        // The tags go in with the run, so nobody sees a check without its verdict.
        let mut tags = vec![
            KeyValue::new("ctflow.pipeline", &pipeline.name),
            KeyValue::new(
                "ctflow.drift.files",
                files.join(",").chars().take(8000).collect::<String>(),
            ),
            KeyValue::new("mlflow.user", &self.config.user),
        ];
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
            .store
            .create_run(NewRun {
                experiment_id: experiment_id.parse().unwrap_or_default(),
                user_id: self.config.user.clone(),
                start_time: Some(now),
                run_name: Some(format!("drift-check-{now}")),
                tags,
            })
            .await?;
        let run_id = run.info.run_id.clone();
        let status = match report {
            Err(_) => "FAILED",
            Ok((report, reference, current)) => {
                let metric = |key: String, value: f64| BatchMetric {
                    key,
                    value,
                    timestamp: now,
                    step: 0,
                    model_id: None,
                    dataset_name: None,
                    dataset_digest: None,
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
                for chunk in metrics.chunks(1000) {
                    self.store
                        .log_batch(&run_id, chunk.to_vec(), Vec::new(), Vec::new())
                        .await?;
                }
                if let Some(root) = (self.artifact_path)(&run.info.artifact_uri) {
                    let title = format!("Drift check of {}", pipeline.name);
                    let json = serde_json::to_vec_pretty(report).unwrap_or_default();
                    let html = crate::render_html(report, reference, current, &title).into_bytes();
                    for (name, body) in [("drift_report.json", json), ("drift_report.html", html)] {
                        let reader: ctflow_store::artifacts::ByteReader =
                            Box::pin(std::io::Cursor::new(body));
                        self.artifacts
                            .put(&format!("{root}/{name}"), reader)
                            .await?;
                    }
                }
                "FINISHED"
            }
        };
        self.store
            .update_run(
                &run_id,
                RunUpdate {
                    status: Some(status.into()),
                    end_time: Some(ctflow_core::now_ms()),
                    run_name: None,
                },
            )
            .await?;
        Ok(run_id)
    }
}
