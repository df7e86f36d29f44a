//! Pipeline files from a folder: loaded at start, re-read when they change, removed from
//! the store when their file goes away. A file that does not parse or validate is
//! reported and the pipeline keeps its previous definition.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ctflow_core::pipeline::PipelineDocument;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, Shared, pause};

const FILE_SOURCE: &str = "file:";

/// Reads and validates one pipeline file (YAML or JSON).
pub fn load_pipeline_file(path: &Path) -> Result<PipelineDocument> {
    let file_error = |message: String| Error::PipelineFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    PipelineDocument::from_yaml(&text).map_err(|errors| {
        // One log line: a parser's multi-line snippet is folded into it.
        let lines: Vec<String> = errors
            .iter()
            .map(|e| {
                e.to_string()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        file_error(lines.join("; "))
    })
}

fn is_pipeline_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

pub(crate) struct Loader {
    shared: Arc<Shared>,
    fingerprints: HashMap<PathBuf, (SystemTime, u64)>,
}

impl Loader {
    pub(crate) fn new(shared: Arc<Shared>) -> Loader {
        Loader {
            shared,
            fingerprints: HashMap::new(),
        }
    }

    /// One pass over the folder.
    pub(crate) async fn scan(&mut self) -> Result<()> {
        let Some(dir) = self.shared.config.pipelines_dir.clone() else {
            return Ok(());
        };
        let dir = std::fs::canonicalize(&dir).map_err(|e| Error::PipelineFile {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut present = HashMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::PipelineFile {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !is_pipeline_file(&path) {
                continue;
            }
            if let Ok(meta) = entry.metadata()
                && meta.is_file()
            {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                present.insert(path, (modified, meta.len()));
            }
        }
        let store = &self.shared.store;
        for (path, fingerprint) in &present {
            if self.fingerprints.get(path) == Some(fingerprint) {
                continue;
            }
            self.fingerprints.insert(path.clone(), *fingerprint);
            let source = format!("{FILE_SOURCE}{}", path.display());
            let document = match load_pipeline_file(path) {
                Ok(document) => document,
                Err(error) => {
                    let loaded_before = store
                        .list_pipelines()
                        .await?
                        .into_iter()
                        .any(|p| p.source == source);
                    if loaded_before {
                        tracing::warn!(%error, "pipeline file skipped; the pipeline keeps its previous definition");
                    } else {
                        tracing::warn!(%error, "pipeline file skipped; nothing is loaded from it until it is fixed");
                    }
                    continue;
                }
            };
            let name = document.metadata.name.clone();
            let existing = store.get_pipeline(&name).await.ok();
            if let Some(existing) = &existing
                && existing.source != source
                && existing
                    .source
                    .strip_prefix(FILE_SOURCE)
                    .is_some_and(|other| present.contains_key(Path::new(other)))
            {
                tracing::warn!(pipeline = name, file = %path.display(), other = existing.source,
                    "two pipeline files define the same pipeline; keeping the first");
                continue;
            }
            let base_dir = path.parent().unwrap_or(&dir).display().to_string();
            match store.put_pipeline(&document, &source, &base_dir).await {
                // Another scanner of the same folder (or a restart) stored this already.
                Ok(record)
                    if existing.as_ref().is_some_and(|e| {
                        e.generation == record.generation && e.source == source
                    }) =>
                {
                    tracing::debug!(pipeline = name, file = %path.display(), "pipeline unchanged")
                }
                Ok(record) => {
                    tracing::info!(pipeline = name, generation = record.generation, file = %path.display(), "pipeline loaded")
                }
                Err(error) => tracing::warn!(%error, file = %path.display(), "pipeline not stored"),
            }
        }
        self.fingerprints
            .retain(|path, _| present.contains_key(path));
        for record in store.list_pipelines().await? {
            let Some(file) = record.source.strip_prefix(FILE_SOURCE) else {
                continue;
            };
            let file = Path::new(file);
            if file.parent() == Some(dir.as_path()) && !present.contains_key(file) {
                store.delete_pipeline(&record.name).await?;
                tracing::info!(pipeline = record.name, file = %file.display(), "pipeline file removed; pipeline deleted");
            }
        }
        Ok(())
    }
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    let interval = shared.config.reload_interval;
    let mut loader = Loader::new(shared);
    loop {
        if let Err(error) = loader.scan().await {
            tracing::warn!(%error, "cannot read the pipelines folder");
        }
        if !pause(interval, &shutdown).await {
            return Ok(());
        }
    }
}
