//! Live quality of served models: for every pipeline with `monitoring` or a `performance`
//! trigger, the finished files of its inference log are joined with the feedback labels
//! sent for its model (`ctflow_core::monitoring`), the live metrics are logged per served
//! version on a monitoring run (experiment `<pipeline>-monitoring`) and exported on
//! `/metrics`, and a performance trigger whose threshold the champion crossed records a
//! performance event, which starts a pipeline run.
//!
//! Log files are immutable once finished, so each is read once (four columns) and kept
//! while it exists: memory follows the log's retention. Labels are read afresh each pass,
//! those that arrived within the longest window (a label always comes after its
//! prediction, so older ones cannot belong to a prediction in the window).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctflow_client::tracking::{MetricPoint, RunStart};
use ctflow_client::{ClientError, TrackingClient};
use ctflow_core::entities::KeyValue;
use ctflow_core::inference::{LATENCY_MS, PREDICTION, REQUEST_ID, TIMESTAMP, VERSION};
use ctflow_core::monitoring::{
    Joined, Label, LiveMetric, LoggedPrediction, Outcome, PerformanceEvent, PerformanceVerdict,
    join, judge_performance, percentile,
};
use ctflow_core::pipeline::{PerformanceTrigger, PipelineRecord, Trigger};
use ctflow_metrics::{LiveMetricLabels, Metrics, PipelineLabels, TriggerLabels, VersionLabels};
use tokio_util::sync::CancellationToken;

/// How often the monitor looks whether a pipeline is due.
const TICK: Duration = Duration::from_secs(1);
/// A pipeline with performance triggers and no `monitoring` is judged this often.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// What one finished log file holds, read once.
struct LogFile {
    size: u64,
    predictions: Arc<Vec<LoggedPrediction>>,
}

pub struct Monitor {
    client: TrackingClient,
    metrics: Arc<Metrics>,
    user: String,
    /// Finished files by path or object URL.
    files: HashMap<String, LogFile>,
    stores: crate::source::ObjectStores,
    due: HashMap<String, Instant>,
    /// (pipeline, version) -> the monitoring run.
    runs: HashMap<(String, String), String>,
    /// Per pipeline, the versions its gauges were last set for.
    exported: HashMap<String, BTreeSet<String>>,
}

/// Where a pipeline's inference log lies: a folder, or an object-store prefix.
fn log_location(pipeline: &PipelineRecord) -> Option<String> {
    let log = pipeline
        .document
        .spec
        .promotion
        .serving
        .as_ref()?
        .log
        .as_ref()?;
    if log.path.contains("://") {
        Some(log.path.trim_end_matches('/').to_string())
    } else {
        Some(
            Path::new(&pipeline.base_dir)
                .join(&log.path)
                .to_string_lossy()
                .to_string(),
        )
    }
}

fn is_monitored(pipeline: &PipelineRecord) -> bool {
    let spec = &pipeline.document.spec;
    spec.monitoring.is_some()
        || spec
            .triggers
            .iter()
            .any(|t| matches!(t, Trigger::Performance(_)))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The predictions of one finished log file: request id, the row's place in its request,
/// version, time and prediction. A request's rows are written together, in order.
pub fn read_log_file(path: &Path) -> Result<Vec<LoggedPrediction>, String> {
    read_log(std::fs::File::open(path).map_err(|e| e.to_string())?)
}

/// [`read_log_file`] of a file's bytes however they were read (an object's body).
pub fn read_log<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
) -> Result<Vec<LoggedPrediction>, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
    use arrow_schema::DataType;

    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?;
    let mask = parquet::arrow::ProjectionMask::columns(
        builder.parquet_schema(),
        [REQUEST_ID, TIMESTAMP, VERSION, LATENCY_MS, PREDICTION],
    );
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let mut predictions: Vec<LoggedPrediction> = Vec::new();
    // The last request of the previous batch, to number rows across a batch boundary.
    let mut carried: Option<String> = None;
    // Versions are a handful per file: one shared copy each.
    let mut known_versions: Vec<Arc<str>> = Vec::new();
    let mut row = 0u32;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("no column {name}: not an inference log file"))
        };
        let ids = column(REQUEST_ID)?
            .as_string_opt::<i32>()
            .ok_or("ctflow_request_id is not text")?;
        let times = column(TIMESTAMP)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or("ctflow_timestamp is not a millisecond timestamp")?;
        let versions = column(VERSION)?
            .as_string_opt::<i32>()
            .ok_or("ctflow_version is not text")?;
        let latencies = column(LATENCY_MS)?
            .as_primitive_opt::<Float64Type>()
            .ok_or("ctflow_latency_ms is not a double")?;
        let values = column(PREDICTION)?;
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            let same_request = if i == 0 {
                carried.as_deref() == Some(id)
            } else {
                ids.value(i - 1) == id
            };
            row = if same_request { row + 1 } else { 0 };
            if values.is_null(i) {
                continue;
            }
            let prediction = match values.data_type() {
                DataType::Float64 => Outcome::Number(values.as_primitive::<Float64Type>().value(i)),
                DataType::Int64 => {
                    Outcome::Number(values.as_primitive::<Int64Type>().value(i) as f64)
                }
                DataType::Boolean => {
                    Outcome::Number(f64::from(u8::from(values.as_boolean().value(i))))
                }
                DataType::Utf8 => Outcome::from_text(values.as_string::<i32>().value(i)),
                other => return Err(format!("ctflow_prediction has an unexpected type {other}")),
            };
            predictions.push(LoggedPrediction {
                request_id: id.to_string(),
                row,
                version: shared_version(
                    &mut known_versions,
                    if versions.is_valid(i) {
                        versions.value(i)
                    } else {
                        ""
                    },
                ),
                timestamp_ms: times.value(i),
                prediction,
                latency_ms: latencies.value(i),
            });
        }
        if let Some(last) = batch.num_rows().checked_sub(1) {
            carried = Some(ids.value(last).to_string());
        }
    }
    Ok(predictions)
}

fn shared_version(known: &mut Vec<Arc<str>>, version: &str) -> Arc<str> {
    if let Some(found) = known.iter().find(|v| &***v == version) {
        return Arc::clone(found);
    }
    let new: Arc<str> = Arc::from(version);
    known.push(Arc::clone(&new));
    new
}

/// The finished log files of a folder, as (path, size); hidden files are still written.
async fn listed_files(dir: &Path) -> Vec<(String, u64)> {
    let mut present = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !name.ends_with(".parquet") {
                continue;
            }
            if let Ok(meta) = entry.metadata().await {
                present.push((entry.path().to_string_lossy().to_string(), meta.len()));
            }
        }
    }
    present
}

impl Monitor {
    pub fn new(client: TrackingClient, metrics: Arc<Metrics>) -> Monitor {
        Monitor {
            client,
            metrics,
            user: "ctflow-monitor".into(),
            files: HashMap::new(),
            stores: crate::source::ObjectStores::default(),
            due: HashMap::new(),
            runs: HashMap::new(),
            exported: HashMap::new(),
        }
    }

    /// Observes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.pass().await {
                tracing::warn!(%error, "the monitor cannot read the pipelines; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Observes every monitored pipeline that is due.
    pub async fn pass(&mut self) -> Result<(), ClientError> {
        let pipelines = self.client.pipelines().await?;
        let now = Instant::now();
        for pipeline in &pipelines {
            if pipeline.document.spec.suspend || !is_monitored(pipeline) {
                continue;
            }
            if self.due.get(&pipeline.name).is_some_and(|due| *due > now) {
                continue;
            }
            let interval = pipeline
                .document
                .spec
                .monitoring
                .as_ref()
                .map_or(DEFAULT_INTERVAL, |m| m.interval.0);
            self.due.insert(pipeline.name.clone(), now + interval);
            if let Err(error) = self.observe(pipeline).await {
                tracing::warn!(pipeline = pipeline.name, %error, "live metrics failed");
            }
        }
        self.due
            .retain(|name, _| pipelines.iter().any(|p| &p.name == name));
        Ok(())
    }

    /// Reads the finished log files of a location (folder or object prefix) that are new
    /// or changed, forgets deleted ones, and returns what every finished file holds.
    async fn predictions(&mut self, location: &str) -> Vec<Arc<Vec<LoggedPrediction>>> {
        let objects = location.contains("://");
        let present = if objects {
            self.listed_objects(location).await
        } else {
            listed_files(Path::new(location)).await
        };
        let root = format!("{location}/");
        self.files
            .retain(|key, _| !key.starts_with(&root) || present.iter().any(|(p, _)| p == key));
        let mut out = Vec::with_capacity(present.len());
        for (key, size) in present {
            if let Some(file) = self.files.get(&key).filter(|f| f.size == size) {
                out.push(Arc::clone(&file.predictions));
                continue;
            }
            let read = if objects {
                self.read_object(&key).await
            } else {
                let path = PathBuf::from(&key);
                tokio::task::spawn_blocking(move || read_log_file(&path))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            };
            match read {
                Ok(predictions) => {
                    let predictions = Arc::new(predictions);
                    out.push(Arc::clone(&predictions));
                    self.files.insert(key, LogFile { size, predictions });
                }
                Err(message) => {
                    tracing::warn!(file = key, message, "cannot read an inference log file")
                }
            }
        }
        out
    }

    /// The finished log objects under an `s3://bucket/prefix`, as (URL, size).
    async fn listed_objects(&self, location: &str) -> Vec<(String, u64)> {
        let listed = async {
            let glob = ctflow_data::ObjectGlob::parse(&format!("{location}/*.parquet"))
                .map_err(|e| e.to_string())?;
            let client = self
                .stores
                .client(&glob.bucket)
                .map_err(|e| e.to_string())?;
            let objects = glob
                .list(client.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                objects
                    .into_iter()
                    .map(|o| (format!("s3://{}/{}", glob.bucket, o.location), o.size))
                    .collect(),
            )
        };
        match listed.await {
            Ok(objects) => objects,
            Err(message) => {
                tracing::warn!(location, message, "cannot list the inference log");
                Vec::new()
            }
        }
    }

    async fn read_object(&self, url: &str) -> Result<Vec<LoggedPrediction>, String> {
        use object_store::ObjectStoreExt;
        let (bucket, key) = ctflow_data::split_s3(url).ok_or("not an s3:// URL")?;
        let client = self.stores.client(bucket).map_err(|e| e.to_string())?;
        let body = client
            .get(&object_store::path::Path::from(key))
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || read_log(body))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }

    async fn observe(&mut self, pipeline: &PipelineRecord) -> Result<(), crate::Error> {
        let spec = &pipeline.document.spec;
        let (Some(model), Some(location)) = (spec.model.as_ref(), log_location(pipeline)) else {
            return Ok(());
        };
        let files = self.predictions(&location).await;
        let predictions = || files.iter().flat_map(|f| f.iter());
        let longest = spec
            .triggers
            .iter()
            .filter_map(|t| match t {
                Trigger::Performance(p) => Some(p.window.0),
                _ => None,
            })
            .chain(spec.monitoring.as_ref().map(|m| m.window.0))
            .max()
            .unwrap_or_default();
        let now = ctflow_core::now_ms();
        let received = match self
            .client
            .feedback_since(&model.name, now.saturating_sub(millis(longest)))
            .await
        {
            Ok(received) => received,
            // The model is not registered yet (nothing trained): no labels either.
            Err(ClientError::Api { status: 404, .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let labels: Vec<Label> = received
            .into_iter()
            .map(|l| Label {
                request_id: l.request_id,
                row: l.row,
                label: Outcome::from_json(&l.label),
            })
            .collect();

        // One join per window length: the monitoring window and the triggers' are
        // usually the same.
        let mut joins: HashMap<i64, Joined> = HashMap::new();
        if let Some(monitoring) = &spec.monitoring {
            let window = millis(monitoring.window.0);
            let joined = joins
                .entry(window)
                .or_insert_with(|| join(predictions(), &labels, now - window, now));
            let metrics: Vec<LiveMetric> = monitoring
                .metrics
                .iter()
                .filter_map(|m| LiveMetric::parse(m).ok())
                .collect();
            self.export(&pipeline.name, &metrics, joined);
            self.log_live_metrics(pipeline, &metrics, joined, now)
                .await?;
        }

        let performance: Vec<(usize, &PerformanceTrigger)> = spec
            .triggers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t {
                Trigger::Performance(p) => Some((i, p)),
                _ => None,
            })
            .collect();
        if performance.is_empty() {
            return Ok(());
        }
        let champion = match self
            .client
            .alias_version(&model.name, &spec.promotion.champion_alias)
            .await
        {
            Ok(version) => version,
            // No champion yet: nothing is served to judge.
            Err(ClientError::Api { status: 404, .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for (index, trigger) in performance {
            let Ok(metric) = LiveMetric::parse(&trigger.metric) else {
                continue;
            };
            let window = millis(trigger.window.0);
            let joined = joins
                .entry(window)
                .or_insert_with(|| join(predictions(), &labels, now - window, now));
            let pairs = joined.pairs.get(&champion).map_or(&[][..], |p| &p[..]);
            let verdict = judge_performance(
                metric,
                trigger.below,
                trigger.above,
                u64::from(trigger.min_labels),
                pairs,
            );
            let PerformanceVerdict::Degraded { value } = verdict else {
                tracing::debug!(
                    pipeline = pipeline.name,
                    trigger = index,
                    ?verdict,
                    "live quality holds"
                );
                continue;
            };
            let event = PerformanceEvent {
                pipeline: pipeline.name.clone(),
                trigger_index: index,
                metric: metric.as_str().into(),
                value,
                below: trigger.below,
                above: trigger.above,
                version: champion.clone(),
                labels: pairs.len() as u64,
                window_ms: window,
                detected_at: now,
            };
            let run = self
                .runs
                .get(&(pipeline.name.clone(), champion.clone()))
                .cloned();
            match self
                .client
                .record_performance(&event, run.as_deref())
                .await?
            {
                ctflow_client::ct::Recorded::Created(id) => {
                    self.metrics
                        .triggers
                        .get_or_create(&TriggerLabels {
                            pipeline: pipeline.name.clone(),
                            kind: "performance".into(),
                        })
                        .inc();
                    tracing::info!(
                        pipeline = pipeline.name,
                        pipeline_run = id,
                        version = champion,
                        metric = metric.as_str(),
                        value,
                        labels = pairs.len(),
                        "live quality fell: retraining"
                    );
                }
                ctflow_client::ct::Recorded::Duplicate(_) => {}
            }
        }
        Ok(())
    }

    /// Sets the gauges of one pipeline, and removes those of versions gone from the window.
    fn export(&mut self, pipeline: &str, metrics: &[LiveMetric], joined: &Joined) {
        let versions: BTreeSet<String> = joined
            .predictions
            .keys()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        let before = self.exported.insert(pipeline.to_string(), versions.clone());
        for gone in before.iter().flatten().filter(|v| !versions.contains(*v)) {
            let labels = VersionLabels {
                pipeline: pipeline.into(),
                version: gone.clone(),
            };
            self.metrics.live_labelled.remove(&labels);
            self.metrics.live_predictions.remove(&labels);
            for metric in metrics {
                self.metrics.live_metric.remove(&LiveMetricLabels {
                    pipeline: pipeline.into(),
                    version: gone.clone(),
                    metric: metric.as_str().into(),
                });
            }
        }
        for version in &versions {
            let labels = VersionLabels {
                pipeline: pipeline.into(),
                version: version.clone(),
            };
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.metrics
                .live_labelled
                .get_or_create(&labels)
                .set(count(joined.labelled(version)));
            self.metrics
                .live_predictions
                .get_or_create(&labels)
                .set(count(joined.predictions.get(version).copied().unwrap_or(0)));
            let pairs = joined.pairs.get(version).map_or(&[][..], |p| &p[..]);
            for metric in metrics {
                let labels = LiveMetricLabels {
                    pipeline: pipeline.into(),
                    version: version.clone(),
                    metric: metric.as_str().into(),
                };
                match metric.score(pairs) {
                    Some(value) => {
                        self.metrics.live_metric.get_or_create(&labels).set(value);
                    }
                    None => {
                        self.metrics.live_metric.remove(&labels);
                    }
                }
            }
        }
        self.metrics
            .feedback_unmatched
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.into(),
            })
            .set(i64::try_from(joined.unmatched).unwrap_or(i64::MAX));
    }

    /// Logs the window's numbers on each served version's monitoring run.
    async fn log_live_metrics(
        &mut self,
        pipeline: &PipelineRecord,
        metrics: &[LiveMetric],
        joined: &Joined,
        now: i64,
    ) -> Result<(), ClientError> {
        let versions: Vec<&String> = joined
            .predictions
            .keys()
            .filter(|v| !v.is_empty())
            .collect();
        for version in versions {
            let run = self.monitoring_run(pipeline, version).await?;
            let point = |key: String, value: f64| MetricPoint {
                key,
                value,
                timestamp: now,
                step: now / 1000,
            };
            let pairs = joined.pairs.get(version).map_or(&[][..], |p| &p[..]);
            let mut points = vec![
                point(
                    "live_predictions".into(),
                    joined.predictions.get(version).copied().unwrap_or(0) as f64,
                ),
                point("live_labelled".into(), pairs.len() as f64),
                point("feedback_unmatched".into(), joined.unmatched as f64),
            ];
            let latencies = joined.latencies.get(version).map_or(&[][..], |l| &l[..]);
            points.push(point("live_requests".into(), latencies.len() as f64));
            for (key, q) in [("live_latency_p50_ms", 50.0), ("live_latency_p99_ms", 99.0)] {
                if let Some(value) = percentile(latencies, q) {
                    points.push(point(key.into(), value));
                }
            }
            for metric in metrics {
                if let Some(value) = metric.score(pairs) {
                    points.push(point(format!("live_{}", metric.as_str()), value));
                }
            }
            self.client.log_metrics(&run, &points).await?;
        }
        Ok(())
    }

    /// The monitoring run of a served version: found by its tags after a restart, else
    /// created (it stays RUNNING while the version is watched).
    async fn monitoring_run(
        &mut self,
        pipeline: &PipelineRecord,
        version: &str,
    ) -> Result<String, ClientError> {
        let key = (pipeline.name.clone(), version.to_string());
        if let Some(run) = self.runs.get(&key) {
            return Ok(run.clone());
        }
        let experiment_id = self
            .client
            .experiment_id(&format!("{}-monitoring", pipeline.name))
            .await?;
        let found = self
            .client
            .post(
                "runs/search",
                &serde_json::json!({
                    "experiment_ids": [experiment_id],
                    "filter": format!(
                        "tags.`ctflow.monitoring.version` = '{version}' and tags.`ctflow.pipeline` = '{}'",
                        pipeline.name
                    ),
                    "max_results": 1,
                }),
            )
            .await?;
        let existing = found
            .pointer("/runs/0/info/run_id")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let run = match existing {
            Some(run) => run,
            None => {
                let model = pipeline
                    .document
                    .spec
                    .model
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                self.client
                    .create_run(&RunStart {
                        experiment_id,
                        run_name: Some(format!("live-{model}-v{version}")),
                        user_id: Some(self.user.clone()),
                        start_time: ctflow_core::now_ms(),
                        tags: vec![
                            KeyValue::new("ctflow.pipeline", &pipeline.name),
                            KeyValue::new("ctflow.monitoring.model", &model),
                            KeyValue::new("ctflow.monitoring.version", version),
                            KeyValue::new("mlflow.user", &self.user),
                        ],
                    })
                    .await?
                    .info
                    .run_id
            }
        };
        self.runs.insert(key, run.clone());
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_file_reads_back_with_row_numbers() {
        // Written by the serving crate's writer in its own tests; here a file made with
        // the same schema through arrow directly.
        use arrow_array::{
            Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
        };
        use arrow_schema::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new(REQUEST_ID, DataType::Utf8, false),
            Field::new(
                TIMESTAMP,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("ctflow_model", DataType::Utf8, false),
            Field::new(VERSION, DataType::Utf8, true),
            Field::new("ctflow_latency_ms", DataType::Float64, false),
            Field::new(PREDICTION, DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "a", "b"])),
                Arc::new(TimestampMillisecondArray::from(vec![5, 5, 7]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec!["m", "m", "m"])),
                Arc::new(StringArray::from(vec![Some("1"), Some("1"), None])),
                Arc::new(Float64Array::from(vec![1.0, 1.0, 2.0])),
                Arc::new(Int64Array::from(vec![Some(2), None, Some(0)])),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema,
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let read = read_log_file(&path).unwrap();
        let seen: Vec<(&str, u32, &str, i64, Option<f64>)> = read
            .iter()
            .map(|p| {
                (
                    p.request_id.as_str(),
                    p.row,
                    &*p.version,
                    p.timestamp_ms,
                    p.prediction.number(),
                )
            })
            .collect();
        // The null prediction of row 1 is left out; b starts again at row 0.
        assert_eq!(
            seen,
            vec![("a", 0, "1", 5, Some(2.0)), ("b", 0, "", 7, Some(0.0))]
        );
        assert!(read_log_file(&dir.path().join("missing.parquet")).is_err());
    }
}
