//! Data triggers: new files matching a glob. The folder is watched with inotify (through
//! `notify`); a file counts once it is closed after writing or renamed into place (or
//! has been quiet for a while, for writers that do neither), and files that settle
//! within the trigger's debounce window start one run together. At start-up, and
//! whenever pipelines change, the glob is rescanned, so files that arrived while ctflow
//! was down are caught. The server keeps every file a trigger has seen: each triggers once.
//! A path `s3://bucket/prefix/*.csv` names objects instead; their prefix is listed every
//! poll interval and each new key triggers once, the same way.
//! Each batch is recorded as a pipeline run first (through the server's REST API: the
//! watcher holds no database credentials), then announced on the bus as `DataArrived`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctflow_bus::{Bus, WatchEvent};
use ctflow_client::TrackingClient;
use ctflow_client::ct::Recorded;
use ctflow_core::pipeline::Trigger;
use ctflow_metrics::{Metrics, TriggerLabels};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::source::{DataSource, ObjectStores};
use crate::watch::normalize;
use crate::{Error, Result};

/// Watches the files of every pipeline's `data` triggers.
pub struct DataWatcher {
    client: TrackingClient,
    bus: Arc<dyn Bus>,
    /// How often the pipelines are re-read for new or changed triggers.
    refresh: Duration,
    /// How often object-storage prefixes are listed.
    poll: Duration,
    stores: ObjectStores,
    metrics: Arc<Metrics>,
}

impl DataWatcher {
    pub fn new(client: TrackingClient, bus: Arc<dyn Bus>, refresh: Duration) -> DataWatcher {
        DataWatcher {
            client,
            bus,
            refresh,
            poll: refresh,
            stores: ObjectStores::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts recorded triggers in this process's metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> DataWatcher {
        self.metrics = metrics;
        self
    }

    /// Watches until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        run(Arc::new(self), shutdown).await
    }
}

/// Files that arrive together within this window start one run, unless the trigger says.
const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// A file never reported closed counts after this long without events.
const QUIET_WITHOUT_CLOSE: Duration = Duration::from_secs(1);
const FLUSH_EVERY: Duration = Duration::from_millis(25);

struct Watch {
    pipeline: String,
    index: usize,
    pattern: glob::Pattern,
    pattern_text: String,
    root: PathBuf,
    recursive: bool,
    debounce: Duration,
}

/// A data trigger on object storage, polled.
struct ObjectWatch {
    pipeline: String,
    index: usize,
    source: DataSource,
}

#[derive(Debug)]
struct PendingFile {
    last_event: Instant,
    complete: bool,
}

/// The folder to watch: the pattern's components before the first one with a wildcard.
fn split_pattern(pattern: &Path) -> (PathBuf, bool) {
    let mut root = PathBuf::new();
    let mut rest = 0;
    let mut in_glob = false;
    for component in pattern.components() {
        let text = component.as_os_str().to_string_lossy();
        if !in_glob && !text.contains(['*', '?', '[']) {
            root.push(component);
        } else {
            in_glob = true;
            rest += 1;
        }
    }
    if !in_glob {
        // A plain file path: watch its folder.
        let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
        return (parent, false);
    }
    let recursive = rest > 1 || pattern.to_string_lossy().contains("**");
    (root, recursive)
}

type Watches = (Vec<Watch>, Vec<ObjectWatch>, Vec<(String, i64)>);

async fn build_watches(shared: &DataWatcher) -> Result<Watches> {
    let mut watches = Vec::new();
    let mut object_watches = Vec::new();
    let mut generations = Vec::new();
    for record in shared.client.pipelines().await? {
        generations.push((record.name.clone(), record.generation));
        if record.document.spec.suspend {
            continue;
        }
        for (index, trigger) in record.document.spec.triggers.iter().enumerate() {
            let Trigger::Data(data) = trigger else {
                continue;
            };
            if data.path.contains("://") {
                let base = Path::new(&record.base_dir);
                match DataSource::parse(base, &data.path, &shared.stores) {
                    Ok(source) => object_watches.push(ObjectWatch {
                        pipeline: record.name.clone(),
                        index,
                        source,
                    }),
                    Err(error) => {
                        tracing::warn!(pipeline = record.name, %error, "data trigger skipped")
                    }
                }
                continue;
            }
            let absolute = normalize(&Path::new(&record.base_dir).join(&data.path));
            let pattern_text = absolute.to_string_lossy().to_string();
            let pattern = match glob::Pattern::new(&pattern_text) {
                Ok(p) => p,
                Err(error) => {
                    tracing::warn!(pipeline = record.name, %error, "data trigger skipped: bad glob");
                    continue;
                }
            };
            let (root, recursive) = split_pattern(&absolute);
            watches.push(Watch {
                pipeline: record.name.clone(),
                index,
                pattern,
                pattern_text,
                root,
                recursive,
                debounce: data.debounce.map_or(DEFAULT_DEBOUNCE, |d| d.0),
            });
        }
    }
    Ok((watches, object_watches, generations))
}

/// Records a batch of new files as one pipeline run of trigger `index`, then announces it.
async fn record(shared: &DataWatcher, pipeline: &str, index: usize, files: Vec<String>) {
    if files.is_empty() {
        return;
    }
    let count = files.len();
    let pipeline_run = match shared.client.record_data(pipeline, index, &files).await {
        Ok(Some(Recorded::Created(run))) => {
            tracing::info!(
                pipeline,
                pipeline_run = run,
                files = count,
                "new data recorded"
            );
            shared
                .metrics
                .triggers
                .get_or_create(&TriggerLabels {
                    pipeline: pipeline.to_string(),
                    kind: "data".into(),
                })
                .inc();
            Some(run)
        }
        Ok(Some(Recorded::Duplicate(_))) => None,
        // Every file had been seen already.
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, pipeline, "cannot record new data");
            return;
        }
    };
    let announced = shared
        .bus
        .publish(WatchEvent::DataArrived {
            pipeline: pipeline.to_string(),
            trigger_index: index,
            files,
            pipeline_run,
        })
        .await;
    if let Err(error) = announced {
        tracing::warn!(%error, pipeline, "cannot announce new data");
    }
}

/// Records the objects under a polled prefix that the trigger has not seen yet.
async fn poll(shared: &DataWatcher, watch: &ObjectWatch) {
    let listed = match watch.source.list().await {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!(%error, pipeline = watch.pipeline, "cannot list the data objects");
            return;
        }
    };
    let seen = match shared.client.seen_files(&watch.pipeline, watch.index).await {
        Ok(seen) => seen,
        Err(error) => {
            tracing::warn!(%error, "cannot read the data cursor");
            return;
        }
    };
    let files: Vec<String> = listed
        .into_iter()
        .map(|f| f.name)
        .filter(|name| !seen.contains(name))
        .collect();
    record(shared, &watch.pipeline, watch.index, files).await;
}

/// Records every matching file the trigger has not seen yet.
async fn rescan(shared: &DataWatcher, watch: &Watch) {
    let seen = match shared.client.seen_files(&watch.pipeline, watch.index).await {
        Ok(seen) => seen,
        Err(error) => {
            tracing::warn!(%error, "cannot read the data cursor");
            return;
        }
    };
    let mut files = Vec::new();
    if let Ok(paths) = glob::glob(&watch.pattern_text) {
        for path in paths.flatten() {
            let text = path.to_string_lossy().to_string();
            if path.is_file() && !seen.contains(&text) {
                files.push(text);
            }
        }
    }
    record(shared, &watch.pipeline, watch.index, files).await;
}

fn signals_complete(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            | EventKind::Modify(ModifyKind::Name(RenameMode::Both))
    )
}

fn is_write(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Create(_) | EventKind::Modify(_)) || signals_complete(kind)
}

async fn run(shared: Arc<DataWatcher>, shutdown: CancellationToken) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    })
    .map_err(|e| Error::Watch(e.to_string()))?;
    let mut watches: Vec<Watch> = Vec::new();
    let mut object_watches: Vec<ObjectWatch> = Vec::new();
    let mut generations = Vec::new();
    let mut watched: HashSet<(PathBuf, bool)> = HashSet::new();
    let mut warned: HashSet<PathBuf> = HashSet::new();
    let mut pending: HashMap<(usize, PathBuf), PendingFile> = HashMap::new();
    let mut refresh = tokio::time::interval(shared.refresh);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut object_poll = tokio::time::interval(shared.poll);
    object_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = refresh.tick() => {
                let (fresh, fresh_objects, fresh_generations) = match build_watches(&shared).await {
                    Ok(built) => built,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the data triggers");
                        continue;
                    }
                };
                object_watches = fresh_objects;
                let unwatched: Vec<_> = watched.iter().filter(|(root, _)| !root.exists()).cloned().collect();
                for gone in unwatched {
                    watched.remove(&gone);
                }
                let all_watched = fresh.iter().all(|w| watched.contains(&(w.root.clone(), w.recursive)));
                let missing_roots_still_missing = fresh
                    .iter()
                    .filter(|w| !watched.contains(&(w.root.clone(), w.recursive)))
                    .all(|w| !w.root.exists());
                if fresh_generations == generations && (all_watched || missing_roots_still_missing) {
                    continue;
                }
                generations = fresh_generations;
                watches = fresh;
                pending.clear();
                let wanted: HashSet<(PathBuf, bool)> = watches.iter().map(|w| (w.root.clone(), w.recursive)).collect();
                for old in watched.difference(&wanted).cloned().collect::<Vec<_>>() {
                    let _ = watcher.unwatch(&old.0);
                    watched.remove(&old);
                }
                for (root, recursive) in wanted {
                    if watched.contains(&(root.clone(), recursive)) {
                        continue;
                    }
                    let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
                    match watcher.watch(&root, mode) {
                        Ok(()) => {
                            warned.remove(&root);
                            watched.insert((root, recursive));
                        }
                        Err(error) => {
                            if warned.insert(root.clone()) {
                                tracing::warn!(%error, folder = %root.display(), "cannot watch the data folder yet; retrying until it exists");
                            }
                        }
                    }
                }
                for watch in &watches {
                    rescan(&shared, watch).await;
                }
            }
            _ = object_poll.tick(), if !object_watches.is_empty() => {
                for watch in &object_watches {
                    poll(&shared, watch).await;
                }
            }
            Some(event) = rx.recv() => {
                if !is_write(&event.kind) {
                    continue;
                }
                let complete = signals_complete(&event.kind);
                for path in &event.paths {
                    for (i, watch) in watches.iter().enumerate() {
                        if watch.pattern.matches_path(path) {
                            let entry = pending.entry((i, path.clone())).or_insert(PendingFile {
                                last_event: Instant::now(),
                                complete: false,
                            });
                            entry.last_event = Instant::now();
                            entry.complete |= complete;
                        }
                    }
                }
            }
            _ = flush.tick(), if !pending.is_empty() => {
                let settled: HashSet<(usize, PathBuf)> = pending
                    .iter()
                    .filter(|((i, _), file)| {
                        watches.get(*i).is_none_or(|watch| {
                            let quiet = file.last_event.elapsed();
                            (file.complete && quiet >= watch.debounce) || quiet >= QUIET_WITHOUT_CLOSE
                        })
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                // A watch flushes only when none of its files is still settling, so a
                // burst of files becomes one run.
                let busy: HashSet<usize> = pending
                    .keys()
                    .filter(|key| !settled.contains(*key))
                    .map(|(i, _)| *i)
                    .collect();
                let mut batches: HashMap<usize, BTreeSet<String>> = HashMap::new();
                for key in settled {
                    if busy.contains(&key.0) {
                        continue;
                    }
                    pending.remove(&key);
                    // A temporary file that was renamed away is gone by now.
                    if key.1.is_file() {
                        batches.entry(key.0).or_default().insert(key.1.to_string_lossy().to_string());
                    }
                }
                for (i, files) in batches {
                    if let Some(watch) = watches.get(i) {
                        record(&shared, &watch.pipeline, watch.index, files.into_iter().collect()).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_recursion() {
        assert_eq!(
            split_pattern(Path::new("/d/in/*.csv")),
            (PathBuf::from("/d/in"), false)
        );
        assert_eq!(
            split_pattern(Path::new("/d/in/**/*.csv")),
            (PathBuf::from("/d/in"), true)
        );
        assert_eq!(
            split_pattern(Path::new("/d/*/x.csv")),
            (PathBuf::from("/d"), true)
        );
        assert_eq!(
            split_pattern(Path::new("/d/in/x.csv")),
            (PathBuf::from("/d/in"), false)
        );
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
