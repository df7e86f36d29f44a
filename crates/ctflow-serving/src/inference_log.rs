//! The inference log: every scored row, written as Parquet files in a folder by one writer
//! thread, off the request path.
//!
//! A request hands its rows over without waiting: the queue holds at most `queue_rows`
//! rows, and rows that do not fit are counted as dropped (`/metrics`, and a warning at
//! most every ten seconds) instead of slowing the prediction down. A file is written under
//! a hidden temporary name (`.<name>.writing`) and renamed into place only once it is complete and synced, so
//! a reader (or a crash, even `kill -9`) never shows a half-written file; the rows of the
//! file still open at a crash are what is lost. Files roll by rows, by age, and when the
//! served model's inputs change shape; files older than the retention are deleted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ctflow_core::inference::{
    ColumnKind, LATENCY_MS, LogLayout, MODEL, PREDICTION, REQUEST_ID, ScoredRequest, TIMESTAMP,
    VERSION,
};
use parquet::arrow::ArrowWriter;
use serde_json::Value;

use crate::metrics::ServingMetrics;

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The folder the files go to (created when missing).
    pub dir: PathBuf,
    /// A file is closed once it holds this many rows.
    pub roll_rows: usize,
    /// A file is closed once its first row is this old.
    pub roll_interval: Duration,
    /// Files older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    /// Rows waiting for the writer at most; more are dropped.
    pub queue_rows: usize,
    /// An object-store prefix (`s3://bucket/prefix`) finished files are uploaded to;
    /// `dir` is then the local spool they are finished in.
    pub upload: Option<String>,
}

impl LogOptions {
    /// Defaults: files of at most 100,000 rows or a minute, kept forever, and a queue of
    /// 100,000 rows.
    pub fn new(dir: PathBuf) -> LogOptions {
        LogOptions {
            dir,
            roll_rows: 100_000,
            roll_interval: Duration::from_secs(60),
            retention: None,
            queue_rows: 100_000,
            upload: None,
        }
    }

    /// The options for a destination: a folder, or an object-store prefix whose files
    /// are finished in a local spool folder first (`log_upload::spool_for`).
    pub fn for_destination(destination: &str) -> LogOptions {
        if destination.contains("://") {
            let mut options = LogOptions::new(crate::log_upload::spool_for(destination));
            options.upload = Some(destination.to_string());
            options
        } else {
            LogOptions::new(PathBuf::from(destination))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot write the inference log in {dir}: {message}")]
    Io { dir: String, message: String },
}

enum Message {
    Rows(ScoredRequest),
    /// Close the open file and stop.
    Close,
}

/// The handle requests log through; cheap to share.
pub struct InferenceLog {
    sender: Sender<Message>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    metrics: Arc<ServingMetrics>,
    last_warning_ms: AtomicI64,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The most requests one pass of the writer takes from the queue.
const MAX_REQUESTS_PER_PASS: usize = 4096;

/// Files are named `<first row's time, ms>-<writer>-<sequence>.parquet`: they sort by
/// time, and several servers (each a random writer id) can share a folder.
pub(crate) const SUFFIX: &str = ".parquet";
/// The open file is `.<name>.writing`: hidden, and matched by no `*.parquet` glob.
const IN_PROGRESS: &str = ".writing";

impl InferenceLog {
    /// Opens the folder (removing what a crashed writer left half-written there) and
    /// starts the writer thread.
    pub fn start(
        options: LogOptions,
        metrics: Arc<ServingMetrics>,
    ) -> Result<InferenceLog, LogError> {
        let io_error = |e: std::io::Error| LogError::Io {
            dir: options.dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&options.dir).map_err(io_error)?;
        remove_leftovers(&options.dir).map_err(io_error)?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut writer = Writer {
            options: options.clone(),
            queued: Arc::clone(&queued),
            metrics: Arc::clone(&metrics),
            open: None,
            writer_id: ctflow_core::ids::new_run_id()[..8].to_string(),
            sequence: 0,
            last_sweep: None,
        };
        let thread = std::thread::Builder::new()
            .name("inference-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_error)?;
        tracing::info!(dir = %options.dir.display(), "inference log open");
        Ok(InferenceLog {
            sender,
            queued,
            capacity: options.queue_rows,
            metrics,
            last_warning_ms: AtomicI64::new(i64::MIN),
            writer: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Hands a request's rows to the writer, or counts them as dropped when the queue is
    /// full. Never blocks on the writer.
    pub fn record(&self, scored: ScoredRequest) {
        let rows = scored.rows.len();
        let before = self.queued.fetch_add(rows, Ordering::AcqRel);
        let sent =
            before + rows <= self.capacity && self.sender.send(Message::Rows(scored)).is_ok();
        if !sent {
            self.queued.fetch_sub(rows, Ordering::AcqRel);
            self.metrics.log_dropped(rows);
            let now = ctflow_core::now_ms();
            let last = self.last_warning_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 10_000
                && self
                    .last_warning_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    rows,
                    queued = before,
                    "the inference log falls behind: rows dropped (see ctflow_serving_log_rows_total)"
                );
            }
        }
    }

    /// Writes what is queued, closes the open file and stops the writer.
    pub fn close(&self) {
        let _ = self.sender.send(Message::Close);
        let thread = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the inference log writer panicked");
        }
    }
}

impl Drop for InferenceLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes files a writer was still writing when its process died: they have no footer
/// and cannot be read.
fn remove_leftovers(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.ends_with(IN_PROGRESS) {
            tracing::warn!(file = %entry.path().display(), "removing a log file a stopped writer left unfinished");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

struct OpenFile {
    layout: LogLayout,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    temporary: PathBuf,
    name: String,
    opened: Instant,
    rows: usize,
}

struct Writer {
    options: LogOptions,
    queued: Arc<AtomicUsize>,
    metrics: Arc<ServingMetrics>,
    open: Option<OpenFile>,
    /// Tells this writer's files from other servers' in a shared folder (pods all run
    /// as process 1).
    writer_id: String,
    sequence: u64,
    last_sweep: Option<Instant>,
}

impl Writer {
    fn run(&mut self, receiver: Receiver<Message>) {
        self.sweep();
        loop {
            let wait = match &self.open {
                Some(open) => self
                    .options
                    .roll_interval
                    .saturating_sub(open.opened.elapsed()),
                None => Duration::from_secs(60),
            };
            match receiver.recv_timeout(wait) {
                Ok(Message::Rows(scored)) => {
                    // Whatever else is waiting goes into the same batches: one Parquet
                    // write per many requests, not one per request.
                    let mut waiting = vec![scored];
                    let mut closing = false;
                    while waiting.len() < MAX_REQUESTS_PER_PASS {
                        match receiver.try_recv() {
                            Ok(Message::Rows(more)) => waiting.push(more),
                            Ok(Message::Close) => {
                                closing = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_all(waiting);
                    if closing {
                        self.roll();
                        return;
                    }
                }
                Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                    self.roll();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self
                .open
                .as_ref()
                .is_some_and(|open| open.opened.elapsed() >= self.options.roll_interval)
            {
                self.roll();
            }
            self.sweep();
        }
    }

    /// Writes requests in arrival order, as few batches as their layouts and the files'
    /// row limits allow.
    fn write_all(&mut self, requests: Vec<ScoredRequest>) {
        let mut rest = &requests[..];
        while let Some(first) = rest.first() {
            let room = self
                .open
                .as_ref()
                .filter(|open| open.layout == first.layout)
                .map_or(self.options.roll_rows, |open| {
                    self.options.roll_rows.saturating_sub(open.rows)
                });
            // Requests of the first one's layout, while they fit the file (at least one).
            let mut take = 1;
            let mut rows = first.rows.len();
            while let Some(next) = rest.get(take)
                && next.layout == first.layout
                && rows + next.rows.len() <= room
            {
                rows += next.rows.len();
                take += 1;
            }
            let (group, later) = rest.split_at(take);
            if let Err(message) = self.write(group) {
                self.metrics.log_failed(rows);
                tracing::error!(dir = %self.options.dir.display(), message, "cannot write to the inference log");
            }
            self.queued.fetch_sub(rows, Ordering::AcqRel);
            rest = later;
        }
    }

    /// Writes requests of one layout as one batch.
    fn write(&mut self, group: &[ScoredRequest]) -> Result<(), String> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.layout != first.layout)
        {
            self.roll();
        }
        if self.open.is_none() {
            self.open = Some(self.open_file(first)?);
        }
        let Some(open) = self.open.as_mut() else {
            return Err("no file is open".into());
        };
        let batch = to_batch(&open.schema, group)?;
        open.writer.write(&batch).map_err(|e| e.to_string())?;
        open.rows += batch.num_rows();
        self.metrics.log_written(batch.num_rows());
        if open.rows >= self.options.roll_rows {
            self.roll();
        }
        Ok(())
    }

    fn open_file(&mut self, first: &ScoredRequest) -> Result<OpenFile, String> {
        self.sequence += 1;
        let name = format!(
            "{:013}-{}-{:06}{SUFFIX}",
            first.timestamp_ms, self.writer_id, self.sequence
        );
        let temporary = self.options.dir.join(format!(".{name}{IN_PROGRESS}"));
        let file = File::create(&temporary).map_err(|e| e.to_string())?;
        let schema = schema_of(&first.layout);
        let writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(writer_properties()))
            .map_err(|e| e.to_string())?;
        Ok(OpenFile {
            layout: first.layout.clone(),
            schema,
            writer,
            temporary,
            name,
            opened: Instant::now(),
            rows: 0,
        })
    }

    /// Finishes the open file (footer, sync) and renames it into place.
    fn roll(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let finished = open
            .writer
            .into_inner()
            .and_then(|file| file.sync_all().map_err(parquet::errors::ParquetError::from))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                std::fs::rename(&open.temporary, self.options.dir.join(&open.name))
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| sync_dir(&self.options.dir).map_err(|e| e.to_string()));
        match finished {
            Ok(()) => {
                self.metrics.log_file_written();
                tracing::debug!(
                    file = open.name,
                    rows = open.rows,
                    "inference log file written"
                );
            }
            Err(message) => {
                self.metrics.log_failed(open.rows);
                tracing::error!(
                    file = open.name,
                    message,
                    "cannot finish an inference log file"
                );
                let _ = std::fs::remove_file(&open.temporary);
            }
        }
    }

    /// Deletes files past the retention, at most once a minute.
    fn sweep(&mut self) {
        let Some(retention) = self.options.retention else {
            return;
        };
        if self
            .last_sweep
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60).min(retention))
        {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let cutoff = ctflow_core::now_ms()
            .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let Ok(entries) = std::fs::read_dir(&self.options.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(started) = log_file_time(&name) else {
                continue;
            };
            // The file's last row is at most a roll interval after its first.
            let interval = i64::try_from(self.options.roll_interval.as_millis()).unwrap_or(0);
            if started.saturating_add(interval) < cutoff {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = name, "inference log file past retention deleted")
                    }
                    Err(e) => {
                        tracing::warn!(file = name, error = %e, "cannot delete an old inference log file")
                    }
                }
            }
        }
    }
}

/// The first row's time of a finished log file, from its name.
pub(crate) fn log_file_time(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (time, _) = stem.split_once('-')?;
    time.parse().ok()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn data_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Double => DataType::Float64,
        ColumnKind::Long => DataType::Int64,
        ColumnKind::Bool => DataType::Boolean,
        ColumnKind::Text => DataType::Utf8,
    }
}

/// Writes requests to one Parquet file as the log lays them out, in batches of 4096
/// requests, with no queue, thread or renaming: the baseline the log's benchmark
/// measures the writer thread against.
pub fn write_plain(path: &Path, requests: &[ScoredRequest]) -> Result<(), String> {
    let Some(first) = requests.first() else {
        return Ok(());
    };
    let schema = schema_of(&first.layout);
    let file = File::create(path).map_err(|e| e.to_string())?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(writer_properties()))
        .map_err(|e| e.to_string())?;
    for chunk in requests.chunks(MAX_REQUESTS_PER_PASS) {
        writer
            .write(&to_batch(&schema, chunk)?)
            .map_err(|e| e.to_string())?;
    }
    writer.close().map(|_| ()).map_err(|e| e.to_string())
}

fn writer_properties() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::default(),
        ))
        .build()
}

/// An input's column name: its own, unless a log column has it (then `input_` + it).
fn input_column_name(name: &str) -> String {
    if ctflow_core::inference::LOG_COLUMNS.contains(&name) {
        format!("input_{name}")
    } else {
        name.to_string()
    }
}

/// The log columns first, then the model's inputs.
fn schema_of(layout: &LogLayout) -> SchemaRef {
    let mut fields = vec![
        Field::new(REQUEST_ID, DataType::Utf8, false),
        Field::new(
            TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(MODEL, DataType::Utf8, false),
        Field::new(VERSION, DataType::Utf8, true),
        Field::new(LATENCY_MS, DataType::Float64, false),
        Field::new(PREDICTION, data_type(layout.prediction), true),
    ];
    for (name, kind) in &layout.inputs {
        fields.push(Field::new(input_column_name(name), data_type(*kind), true));
    }
    Arc::new(Schema::new(fields))
}

fn column(kind: ColumnKind, values: impl Iterator<Item = Option<Value>>) -> ArrayRef {
    match kind {
        ColumnKind::Double => {
            let mut builder = Float64Builder::new();
            for value in values {
                builder.append_option(value.and_then(|v| v.as_f64()));
            }
            Arc::new(builder.finish())
        }
        ColumnKind::Long => {
            let mut builder = Int64Builder::new();
            for value in values {
                builder.append_option(value.and_then(|v| v.as_i64()));
            }
            Arc::new(builder.finish())
        }
        ColumnKind::Bool => {
            let mut builder = BooleanBuilder::new();
            for value in values {
                builder.append_option(value.and_then(|v| v.as_bool()));
            }
            Arc::new(builder.finish())
        }
        ColumnKind::Text => {
            let mut builder = StringBuilder::new();
            for value in values {
                match value {
                    None | Some(Value::Null) => builder.append_null(),
                    Some(Value::String(text)) => builder.append_value(text),
                    Some(other) => builder.append_value(other.to_string()),
                }
            }
            Arc::new(builder.finish())
        }
    }
}

/// Requests of one layout as one record batch, a row per scored row.
fn to_batch(schema: &SchemaRef, group: &[ScoredRequest]) -> Result<RecordBatch, String> {
    let Some(first) = group.first() else {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    };
    let mut ids = StringBuilder::new();
    let mut timestamps = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut models = StringBuilder::new();
    let mut versions = StringBuilder::new();
    let mut latencies = Float64Builder::new();
    for scored in group {
        for _ in 0..scored.rows.len() {
            ids.append_value(&scored.request_id);
            timestamps.append_value(scored.timestamp_ms);
            models.append_value(&scored.model);
            versions.append_option(scored.version.as_deref());
            latencies.append_value(scored.latency_ms);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(timestamps.finish()),
        Arc::new(models.finish()),
        Arc::new(versions.finish()),
        Arc::new(latencies.finish()),
        column(
            first.layout.prediction,
            group
                .iter()
                .flat_map(|s| s.predictions.iter().cloned().map(Some)),
        ),
    ];
    for (i, (_, kind)) in first.layout.inputs.iter().enumerate() {
        columns.push(column(
            *kind,
            group
                .iter()
                .flat_map(|s| s.rows.iter().map(move |row| row.get(i).cloned())),
        ));
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
    use ctflow_core::scoring::Payload;
    use serde_json::json;

    use super::*;

    fn request(id: &str, xs: &[f64], answer: Value) -> ScoredRequest {
        let payload = Payload::Frame {
            columns: vec!["x".into()],
            rows: xs.iter().map(|x| vec![json!(x)]).collect(),
            dtypes: [("x".to_string(), "float64".to_string())].into(),
        };
        ScoredRequest::new(
            id.into(),
            1_700_000_000_000,
            "iris".into(),
            Some("2".into()),
            1.5,
            payload,
            &answer,
        )
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("the log folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        let file = File::open(path).expect("a log file");
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("a Parquet file")
            .build()
            .expect("a reader")
            .collect::<Result<Vec<_>, _>>()
            .expect("readable batches")
    }

    #[test]
    fn rows_are_written_as_parquet_and_appear_only_when_the_file_is_finished() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(ServingMetrics::new());
        let log = InferenceLog::start(LogOptions::new(dir.path().into()), Arc::clone(&metrics))
            .expect("the log starts");
        log.record(request("a", &[1.0, 2.0], json!([0, 1])));
        log.record(request("b", &[3.0], json!([2])));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !metrics
            .encode()
            .expect("metrics")
            .contains(r#"ctflow_serving_log_rows_total{result="written"} 3"#)
        {
            assert!(Instant::now() < deadline, "the rows were not written");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Still open: only the hidden in-progress file is there.
        let open = files(dir.path());
        assert!(
            open.len() == 1 && open[0].ends_with(IN_PROGRESS),
            "{open:?}"
        );
        log.close();
        let done = files(dir.path());
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(done[0].starts_with("1700000000000-") && done[0].ends_with(".parquet"));
        let batches = read(&dir.path().join(&done[0]));
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 3);
        let batch = &batches[0];
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                REQUEST_ID, TIMESTAMP, MODEL, VERSION, LATENCY_MS, PREDICTION, "x"
            ]
        );
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "a");
        assert_eq!(
            batch
                .column(1)
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            1_700_000_000_000
        );
        assert_eq!(batch.column(3).as_string::<i32>().value(0), "2");
        assert_eq!(batch.column(5).as_primitive::<Int64Type>().value(1), 1);
        assert_eq!(batch.column(6).as_primitive::<Float64Type>().value(1), 2.0);
        assert!(
            metrics
                .encode()
                .expect("metrics")
                .contains("ctflow_serving_log_files_total 1")
        );
    }

    #[test]
    fn files_roll_by_rows_and_when_the_inputs_change_shape() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = LogOptions::new(dir.path().into());
        options.roll_rows = 2;
        let log = InferenceLog::start(options, Arc::new(ServingMetrics::new())).expect("starts");
        for id in ["a", "b", "c"] {
            log.record(request(id, &[1.0], json!([0])));
        }
        // Another prediction type: another layout.
        log.record(request("d", &[1.0], json!(["setosa"])));
        log.close();
        let done = files(dir.path());
        let rows: Vec<usize> = done
            .iter()
            .map(|name| {
                read(&dir.path().join(name))
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum()
            })
            .collect();
        assert_eq!(rows, [2, 1, 1], "{done:?}");
    }

    #[test]
    fn a_full_queue_drops_rows_and_counts_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = LogOptions::new(dir.path().into());
        options.queue_rows = 2;
        let metrics = Arc::new(ServingMetrics::new());
        let log = InferenceLog::start(options, Arc::clone(&metrics)).expect("starts");
        log.record(request("big", &[1.0, 2.0, 3.0], json!([0, 0, 0])));
        let text = metrics.encode().expect("metrics");
        assert!(
            text.contains(r#"ctflow_serving_log_rows_total{result="dropped"} 3"#),
            "{text}"
        );
        log.close();
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn leftovers_of_a_crash_and_files_past_retention_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = "0000000001000-1-000001.parquet";
        let recent = format!("{:013}-1-000002.parquet", ctflow_core::now_ms());
        for name in [
            old,
            recent.as_str(),
            ".0000000002000-1-000003.parquet.writing",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let mut options = LogOptions::new(dir.path().into());
        options.retention = Some(Duration::from_secs(3600));
        let log = InferenceLog::start(options, Arc::new(ServingMetrics::new())).expect("starts");
        log.close();
        assert_eq!(files(dir.path()), [recent, "notes.txt".to_string()]);
    }

    #[test]
    fn an_input_named_like_a_log_column_is_renamed() {
        let layout = LogLayout {
            inputs: vec![(MODEL.to_string(), ColumnKind::Text)],
            prediction: ColumnKind::Double,
        };
        let schema = schema_of(&layout);
        assert_eq!(schema.field(6).name(), &format!("input_{MODEL}"));
    }
}
