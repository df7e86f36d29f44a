//! The inference log on object storage: the writer finishes files in a local spool folder
//! as usual (hidden while written, renamed when complete), and this task uploads each
//! finished file to `s3://bucket/prefix/<name>` and deletes it locally once the object
//! is there. An object appears whole or not at all, so readers never see part of a file.
//! Files left in the spool by a stopped server are uploaded by the next one on the same
//! destination; an upload that fails is retried every pass, the file kept meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::Digest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::inference_log::{SUFFIX, log_file_time};
use crate::metrics::ServingMetrics;

/// How often the spool is looked at when no file was announced.
const PASS: Duration = Duration::from_secs(1);
/// How long a stopping server keeps trying to upload what is left.
const FINAL_PASS: Duration = Duration::from_secs(60);

/// The local folder a destination's files are finished in before they are uploaded:
/// stable per destination, so a restarted server finds what its predecessor left.
pub fn spool_for(destination: &str) -> PathBuf {
    let digest = hex::encode(sha2::Sha256::digest(destination.as_bytes()));
    std::env::temp_dir()
        .join("ctflow-inference-log")
        .join(&digest[..16])
}

/// Uploads a spool folder's finished files until stopped.
pub struct Uploader {
    wake: Arc<Notify>,
    stop: tokio_util::sync::CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Target {
    spool: PathBuf,
    destination: String,
    client: Arc<dyn ObjectStore>,
    prefix: String,
    retention: Option<Duration>,
    roll_interval: Duration,
    metrics: Arc<ServingMetrics>,
}

impl Uploader {
    /// Starts uploading `spool`'s finished files to `destination` (`s3://bucket/prefix`).
    pub fn start(
        spool: &Path,
        destination: &str,
        retention: Option<Duration>,
        roll_interval: Duration,
        metrics: Arc<ServingMetrics>,
    ) -> Result<Uploader, String> {
        let (bucket, prefix) = ctflow_data::split_s3(destination)
            .ok_or_else(|| format!("'{destination}' is not an s3://bucket/prefix destination"))?;
        let client = ctflow_data::ObjectStores::default()
            .client(bucket)
            .map_err(|e| e.to_string())?;
        let target = Target {
            spool: spool.to_path_buf(),
            destination: destination.trim_end_matches('/').to_string(),
            client,
            prefix: prefix.trim_matches('/').to_string(),
            retention,
            roll_interval,
            metrics,
        };
        let wake = Arc::new(Notify::new());
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(target, Arc::clone(&wake), stop.clone()));
        tracing::info!(destination, spool = %spool.display(), "inference log uploads to object storage");
        Ok(Uploader { wake, stop, task })
    }

    /// Uploads whatever is finished now, then stops (after at most a minute of trying).
    pub async fn finish(self) {
        self.stop.cancel();
        self.wake.notify_one();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the inference log uploader failed");
        }
    }
}

impl Target {
    fn key(&self, name: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// The spool's finished files, oldest first.
    fn finished(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.spool) else {
            return Vec::new();
        };
        let mut files: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                (!name.starts_with('.') && name.ends_with(SUFFIX)).then(|| (name, entry.path()))
            })
            .collect();
        files.sort();
        files
    }

    /// Uploads every finished file; stops at the first failure (tried again next pass).
    async fn upload_all(&self) -> bool {
        for (name, path) in self.finished() {
            let bytes = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a finished log file");
                    return false;
                }
            };
            match self
                .client
                .put(&self.key(&name), PutPayload::from(bytes))
                .await
            {
                Ok(_) => {
                    self.metrics.log_uploaded(true);
                    if let Err(e) = tokio::fs::remove_file(&path).await {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove an uploaded log file");
                    }
                    tracing::debug!(
                        object = format!("{}/{name}", self.destination),
                        "inference log file uploaded"
                    );
                }
                Err(e) => {
                    self.metrics.log_uploaded(false);
                    tracing::warn!(destination = self.destination, file = name, error = %e, "cannot upload an inference log file; it stays in the spool and is tried again");
                    return false;
                }
            }
        }
        true
    }

    /// Deletes objects past the retention (by the time in their names).
    async fn sweep(&self) {
        let Some(retention) = self.retention else {
            return;
        };
        let cutoff = ctflow_core::now_ms()
            .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let interval = i64::try_from(self.roll_interval.as_millis()).unwrap_or(0);
        let prefix =
            (!self.prefix.is_empty()).then(|| object_store::path::Path::from(self.prefix.as_str()));
        let listed: Result<Vec<object_store::ObjectMeta>, _> =
            self.client.list(prefix.as_ref()).try_collect().await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(destination = self.destination, error = %e, "cannot list the inference log for retention");
                return;
            }
        };
        for object in listed {
            let Some(name) = object.location.filename() else {
                continue;
            };
            if log_file_time(name).is_some_and(|t| t.saturating_add(interval) < cutoff) {
                match self.client.delete(&object.location).await {
                    Ok(()) => {
                        tracing::info!(object = %object.location, "inference log object past retention deleted")
                    }
                    Err(e) => {
                        tracing::warn!(object = %object.location, error = %e, "cannot delete an old inference log object")
                    }
                }
            }
        }
    }
}

async fn run(target: Target, wake: Arc<Notify>, stop: tokio_util::sync::CancellationToken) {
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        target.upload_all().await;
        if last_sweep.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            last_sweep = Some(tokio::time::Instant::now());
            target.sweep().await;
        }
        if stop.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(PASS) => {}
        }
    }
    // Stopping: the writer has finished its last file; upload what is left.
    let deadline = tokio::time::Instant::now() + FINAL_PASS;
    while !target.upload_all().await {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                spool = %target.spool.display(),
                "inference log files could not be uploaded before stopping; the next server on this destination uploads them"
            );
            return;
        }
        tokio::time::sleep(PASS).await;
    }
}
