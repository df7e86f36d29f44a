//! Training data snapshots: which files a pipeline run trains on, the pure windowing rules
//! that choose them, the immutable record of what was chosen (sizes, times, SHA-256
//! digests, rows, schema) and its forms on the wire: the manifest a training script reads
//! and MLflow's dataset inputs (`runs/log-inputs`).
//!
//! Reading the files is not done here; `ctflow-data` lists, digests and verifies them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use crate::pipeline::DurationSpec;

/// The manifest's format version; a training script may check it.
pub const MANIFEST_VERSION: u32 = 1;
/// The environment variable that names the manifest file in a training job.
pub const MANIFEST_VAR: &str = "CTFLOW_DATA_MANIFEST";
/// The tag on a pipeline run's MLflow run that names its snapshot.
pub const SNAPSHOT_TAG: &str = "ctflow.data.snapshot";

/// A pipeline's training data (`spec.data`): the files every pipeline run trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingData {
    /// Globs of files, relative to the pipeline file (the base data and the folder new
    /// files arrive in). A data trigger's `path` is usually one of them.
    pub paths: Vec<String>,
    /// Which of the matched files (and rows) a run trains on; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DataWindow>,
    /// The MLproject parameter that receives the manifest's path (besides the
    /// `CTFLOW_DATA_MANIFEST` environment variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// Limits on the training data, applied in arrival order (modification time, then path):
/// `lastFiles` and `last` choose files, then `lastRows` keeps the newest rows of those.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataWindow {
    /// Only the newest N files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_files: Option<u32>,
    /// Only files modified within this span of the newest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DurationSpec>,
    /// Only the newest N data rows (the oldest file kept may be cut: its `skip_rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rows: Option<u64>,
}

impl DataWindow {
    /// The problems with the window, as (field, message) pairs.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.last_files == Some(0) {
            problems.push(("lastFiles", "must be at least 1"));
        }
        if self.last.is_some_and(|d| d.0.is_zero()) {
            problems.push(("last", "must be longer than 0s"));
        }
        if self.last_rows == Some(0) {
            problems.push(("lastRows", "must be at least 1"));
        }
        problems
    }
}

/// What is known about a file before it is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// The path as matched (relative to the pipeline's folder when the glob was).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, epoch ms.
    pub modified: i64,
    /// Data rows (header excluded); `None` when the format is not one ctflow counts.
    pub rows: Option<u64>,
}

/// A file the window keeps, and how many of its leading data rows it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The file.
    pub file: FileFacts,
    /// Leading data rows a reader skips (only ever on the oldest file kept).
    pub skip_rows: u64,
}

/// Chooses the training files: sorted in arrival order, then windowed. Without a window
/// every file is kept whole.
pub fn choose(mut files: Vec<FileFacts>, window: Option<&DataWindow>) -> Vec<Chosen> {
    files.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.path.cmp(&b.path))
    });
    files.dedup_by(|a, b| a.path == b.path);
    let window = window.cloned().unwrap_or_default();
    if let Some(n) = window.last_files {
        let keep = usize::try_from(n).unwrap_or(usize::MAX);
        let drop = files.len().saturating_sub(keep);
        files.drain(..drop);
    }
    if let (Some(span), Some(newest)) = (window.last, files.last().map(|f| f.modified)) {
        let span = i64::try_from(span.0.as_millis()).unwrap_or(i64::MAX);
        let oldest = newest.saturating_sub(span);
        files.retain(|f| f.modified >= oldest);
    }
    let mut chosen: Vec<Chosen> = files
        .into_iter()
        .map(|file| Chosen { file, skip_rows: 0 })
        .collect();
    if let Some(limit) = window.last_rows {
        let mut left = limit;
        let mut first_kept = chosen.len();
        for (i, c) in chosen.iter_mut().enumerate().rev() {
            if left == 0 {
                break;
            }
            // A file whose rows are unknown counts as whole: it cannot be cut.
            let rows = c.file.rows.unwrap_or(0);
            if rows > left {
                c.skip_rows = rows - left;
                left = 0;
            } else {
                left -= rows;
            }
            first_kept = i;
        }
        chosen.drain(..first_kept);
    }
    chosen
}

/// One column of the data, with MLflow's column-spec type (`long`, `double`, `string`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name (the CSV header).
    pub name: String,
    /// `long`, `double` or `string`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The narrowest MLflow type that holds every value: `long`, `double`, else `string`.
pub fn infer_kind<'a>(values: impl IntoIterator<Item = &'a str>) -> &'static str {
    let mut kind = "long";
    for value in values {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if kind == "long" && value.parse::<i64>().is_ok() {
            continue;
        }
        if value.parse::<f64>().is_ok() {
            kind = "double";
            continue;
        }
        return "string";
    }
    kind
}

/// The schema of several files: columns in first-seen order, a column's type widened
/// (`long` < `double` < `string`) where files disagree.
pub fn merge_schemas(schemas: &[Vec<Column>]) -> Vec<Column> {
    fn rank(kind: &str) -> u8 {
        match kind {
            "long" => 0,
            "double" => 1,
            _ => 2,
        }
    }
    let mut merged: Vec<Column> = Vec::new();
    for column in schemas.iter().flatten() {
        match merged.iter_mut().find(|c| c.name == column.name) {
            Some(known) if rank(&column.kind) > rank(&known.kind) => {
                known.kind = column.kind.clone()
            }
            Some(_) => {}
            None => merged.push(column.clone()),
        }
    }
    merged
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The path as the pipeline names it (relative to the pipeline's folder).
    pub path: String,
    /// Where a reader finds it: an absolute path, or an object-store URI.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, epoch ms.
    pub modified: i64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Data rows (header excluded), when counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Leading data rows the window leaves out.
    #[serde(default)]
    pub skip_rows: u64,
    /// An object's entity tag as the store listed it: object stores report modification
    /// times to the second, so a rewrite is told by its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

impl SnapshotFile {
    /// The rows a reader keeps.
    pub fn kept_rows(&self) -> Option<u64> {
        self.rows.map(|rows| rows.saturating_sub(self.skip_rows))
    }
}

/// An immutable record of the data a pipeline run trains on. Its id is the digest of its
/// files' paths, digests and cuts: the same data always has the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSnapshot {
    /// The manifest format ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The content digest (SHA-256 hex) that identifies the snapshot.
    pub id: String,
    /// The pipeline that recorded it first.
    pub pipeline: String,
    /// When it was recorded, epoch ms.
    pub created: i64,
    /// The files, in arrival order.
    pub files: Vec<SnapshotFile>,
    /// The rows a reader keeps, over every counted file.
    pub rows: u64,
    /// The columns of the counted files.
    pub schema: Vec<Column>,
    /// The window that chose the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DataWindow>,
}

/// The snapshot id of a list of files.
pub fn snapshot_id(files: &[SnapshotFile]) -> String {
    let mut hasher = sha2::Sha256::new();
    for file in files {
        hasher.update(file.path.as_bytes());
        hasher.update([0u8]);
        hasher.update(file.sha256.as_bytes());
        hasher.update([0u8]);
        hasher.update(file.skip_rows.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

impl DataSnapshot {
    /// A snapshot of chosen files.
    pub fn new(
        pipeline: &str,
        files: Vec<SnapshotFile>,
        schema: Vec<Column>,
        window: Option<DataWindow>,
        created: i64,
    ) -> DataSnapshot {
        let rows = files.iter().filter_map(SnapshotFile::kept_rows).sum();
        DataSnapshot {
            version: MANIFEST_VERSION,
            id: snapshot_id(&files),
            pipeline: pipeline.to_string(),
            created,
            files,
            rows,
            schema,
            window,
        }
    }

    /// The short form of the id (MLflow's dataset digest column holds 36 characters).
    pub fn digest(&self) -> &str {
        &self.id[..self.id.len().min(16)]
    }

    /// The snapshot as one MLflow dataset input (`runs/log-inputs`), with its
    /// `mlflow.data.context` tag (`training`, `reference`, `current`, `evaluation`).
    /// The source names the files while they fit in MLflow's 65,535-character column;
    /// past that it counts the rest (`files_omitted`), which the snapshot itself lists.
    pub fn dataset_input(&self, name: &str, context: &str) -> Value {
        let mut listed = Vec::new();
        let mut length = 0;
        for file in &self.files {
            // The quoted URI, its comma, and room for escapes of a few odd characters.
            length += file.uri.len() + 8;
            if length > SOURCE_FILES_BUDGET {
                break;
            }
            listed.push(&file.uri);
        }
        let mut source = json!({
            "uri": format!("ctflow-snapshot:{}", self.id),
            "files": listed,
        });
        let omitted = self.files.len() - listed.len();
        if omitted > 0 {
            source["files_omitted"] = json!(omitted);
        }
        let profile = json!({
            "num_rows": self.rows,
            "num_files": self.files.len(),
            "num_bytes": self.files.iter().map(|f| f.size).sum::<u64>(),
            "snapshot": self.id,
        });
        dataset_input(
            name,
            context,
            self.digest(),
            &source,
            &self.schema,
            &profile,
        )
    }
}

/// How many characters of a dataset input's source the file list may take: MLflow's
/// `source` column holds 65,535, and the rest of the source is short.
const SOURCE_FILES_BUDGET: usize = 60_000;

/// One MLflow dataset input (`runs/log-inputs`): `digest` is cut to MLflow's 36-character
/// column, `source`, `schema` and `profile` are JSON text as MLflow stores them.
pub fn dataset_input(
    name: &str,
    context: &str,
    digest: &str,
    source: &Value,
    schema: &[Column],
    profile: &Value,
) -> Value {
    let columns: Vec<Value> = schema
        .iter()
        .map(|c| json!({"type": c.kind, "name": c.name, "required": true}))
        .collect();
    json!({
        "tags": [{"key": "mlflow.data.context", "value": context}],
        "dataset": {
            "name": name,
            "digest": &digest[..digest.len().min(16)],
            "source_type": "ctflow",
            "source": source.to_string(),
            "schema": json!({ "mlflow_colspec": columns }).to_string(),
            "profile": profile.to_string(),
        }
    })
}

/// How the files of two snapshots differ, by the path the pipeline names them with.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotDiff {
    /// In the second snapshot only.
    pub added: Vec<SnapshotFile>,
    /// In the first snapshot only.
    pub removed: Vec<SnapshotFile>,
    /// In both, with another digest or another window cut: (first, second).
    pub changed: Vec<(SnapshotFile, SnapshotFile)>,
    /// In both, the same.
    pub unchanged: usize,
}

impl SnapshotDiff {
    /// Whether both snapshots hold the same data.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The file-by-file difference from snapshot `a` to snapshot `b`.
pub fn diff_snapshots(a: &DataSnapshot, b: &DataSnapshot) -> SnapshotDiff {
    let mut diff = SnapshotDiff::default();
    for file in &b.files {
        match a.files.iter().find(|f| f.path == file.path) {
            None => diff.added.push(file.clone()),
            Some(old) if old.sha256 != file.sha256 || old.skip_rows != file.skip_rows => {
                diff.changed.push((old.clone(), file.clone()));
            }
            Some(_) => diff.unchanged += 1,
        }
    }
    diff.removed = a
        .files
        .iter()
        .filter(|f| !b.files.iter().any(|n| n.path == f.path))
        .cloned()
        .collect();
    diff
}

/// Why a file no longer matches its snapshot, in a sentence.
pub fn changed_file(file: &SnapshotFile, actual: Option<&str>) -> Option<String> {
    match actual {
        None => Some(format!(
            "training data file {} (snapshot digest {}) is gone",
            file.path,
            short(&file.sha256)
        )),
        Some(actual) if actual != file.sha256 => Some(format!(
            "training data file {} changed after the snapshot: sha256 {} was recorded, {} is there now",
            file.path,
            short(&file.sha256),
            short(actual)
        )),
        Some(_) => None,
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn file(path: &str, modified: i64, rows: Option<u64>) -> FileFacts {
        FileFacts {
            path: path.into(),
            size: 10,
            modified,
            rows,
        }
    }

    fn paths(chosen: &[Chosen]) -> Vec<(&str, u64)> {
        chosen
            .iter()
            .map(|c| (c.file.path.as_str(), c.skip_rows))
            .collect()
    }

    #[test]
    fn without_a_window_every_file_is_kept_in_arrival_order() {
        let files = vec![
            file("b.csv", 2, Some(5)),
            file("base.csv", 1, Some(150)),
            file("a.csv", 2, Some(5)),
        ];
        let chosen = choose(files, None);
        assert_eq!(
            paths(&chosen),
            [("base.csv", 0), ("a.csv", 0), ("b.csv", 0)]
        );
    }

    #[test]
    fn last_files_and_last_span_keep_the_newest() {
        let files = vec![
            file("1.csv", 1_000, Some(1)),
            file("2.csv", 2_000, Some(1)),
            file("3.csv", 90_000, Some(1)),
            file("4.csv", 100_000, Some(1)),
        ];
        let window = DataWindow {
            last_files: Some(3),
            ..DataWindow::default()
        };
        assert_eq!(
            paths(&choose(files.clone(), Some(&window))),
            [("2.csv", 0), ("3.csv", 0), ("4.csv", 0)]
        );
        let window = DataWindow {
            last: Some(DurationSpec(Duration::from_secs(10))),
            ..DataWindow::default()
        };
        assert_eq!(
            paths(&choose(files, Some(&window))),
            [("3.csv", 0), ("4.csv", 0)]
        );
    }

    #[test]
    fn last_rows_cuts_the_oldest_file_kept() {
        let files = vec![
            file("base.csv", 1, Some(150)),
            file("a.csv", 2, Some(30)),
            file("b.csv", 3, Some(20)),
        ];
        let window = DataWindow {
            last_rows: Some(60),
            ..DataWindow::default()
        };
        assert_eq!(
            paths(&choose(files.clone(), Some(&window))),
            [("base.csv", 140), ("a.csv", 0), ("b.csv", 0)]
        );
        let window = DataWindow {
            last_rows: Some(50),
            ..DataWindow::default()
        };
        assert_eq!(
            paths(&choose(files, Some(&window))),
            [("a.csv", 0), ("b.csv", 0)]
        );
    }

    #[test]
    fn types_are_inferred_and_widened() {
        assert_eq!(infer_kind(["1", "2", ""]), "long");
        assert_eq!(infer_kind(["1", "2.5"]), "double");
        assert_eq!(infer_kind(["1", "setosa"]), "string");
        let a = vec![
            Column {
                name: "x".into(),
                kind: "long".into(),
            },
            Column {
                name: "y".into(),
                kind: "string".into(),
            },
        ];
        let b = vec![
            Column {
                name: "x".into(),
                kind: "double".into(),
            },
            Column {
                name: "z".into(),
                kind: "long".into(),
            },
        ];
        let kinds: Vec<(String, String)> = merge_schemas(&[a, b])
            .into_iter()
            .map(|c| (c.name, c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("x".to_string(), "double".to_string()),
                ("y".into(), "string".into()),
                ("z".into(), "long".into())
            ]
        );
    }

    fn snapshot_file(path: &str, sha: &str, skip_rows: u64) -> SnapshotFile {
        SnapshotFile {
            path: path.into(),
            uri: format!("/data/{path}"),
            size: 1,
            modified: 1,
            sha256: sha.into(),
            rows: Some(10),
            skip_rows,
            e_tag: None,
        }
    }

    #[test]
    fn the_id_follows_the_content_not_the_time() {
        let a = DataSnapshot::new("p", vec![snapshot_file("a", "aa", 0)], vec![], None, 1);
        let b = DataSnapshot::new("q", vec![snapshot_file("a", "aa", 0)], vec![], None, 2);
        assert_eq!(a.id, b.id);
        let c = DataSnapshot::new("p", vec![snapshot_file("a", "ab", 0)], vec![], None, 1);
        let d = DataSnapshot::new("p", vec![snapshot_file("a", "aa", 3)], vec![], None, 1);
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id);
        assert_eq!(d.rows, 7);
    }

    #[test]
    fn a_diff_names_added_removed_and_changed_files_by_path() {
        let a = DataSnapshot::new(
            "p",
            vec![
                snapshot_file("base", "b1", 0),
                snapshot_file("old", "o1", 0),
                snapshot_file("cut", "c1", 0),
            ],
            vec![],
            None,
            1,
        );
        let b = DataSnapshot::new(
            "p",
            vec![
                snapshot_file("base", "b1", 0),
                snapshot_file("cut", "c1", 4),
                snapshot_file("new", "n1", 0),
            ],
            vec![],
            None,
            2,
        );
        let diff = diff_snapshots(&a, &b);
        assert_eq!(
            diff.added
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["new"]
        );
        assert_eq!(
            diff.removed
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["old"]
        );
        assert_eq!(diff.changed.len(), 1);
        assert_eq!(
            (diff.changed[0].0.skip_rows, diff.changed[0].1.skip_rows),
            (0, 4)
        );
        assert_eq!(diff.unchanged, 1);
        assert!(!diff.is_empty());
        assert!(diff_snapshots(&a, &a).is_empty());
    }

    #[test]
    fn a_dataset_input_carries_context_digest_and_rows() {
        let snapshot = DataSnapshot::new(
            "p",
            vec![snapshot_file("a", "aa", 0)],
            vec![Column {
                name: "x".into(),
                kind: "double".into(),
            }],
            None,
            1,
        );
        let input = snapshot.dataset_input("p-training", "training");
        assert_eq!(input["tags"][0]["value"], "training");
        assert_eq!(input["dataset"]["digest"], snapshot.digest());
        let profile: Value =
            serde_json::from_str(input["dataset"]["profile"].as_str().unwrap_or("")).unwrap();
        assert_eq!(profile["num_rows"], 10);
        let schema: Value =
            serde_json::from_str(input["dataset"]["schema"].as_str().unwrap_or("")).unwrap();
        assert_eq!(schema["mlflow_colspec"][0]["name"], "x");
    }

    #[test]
    fn a_dataset_source_stays_inside_mlflows_column_and_counts_what_it_leaves_out() {
        let files: Vec<SnapshotFile> = (0..3000)
            .map(|i| snapshot_file(&format!("/data/incoming/batch-{i:05}.csv"), "aa", 0))
            .collect();
        let snapshot = DataSnapshot::new("p", files, Vec::new(), None, 1);
        let input = snapshot.dataset_input("p-training", "training");
        let text = input["dataset"]["source"].as_str().unwrap_or_default();
        assert!(text.len() <= 65_535, "{}", text.len());
        let source: Value = serde_json::from_str(text).unwrap();
        let listed = source["files"].as_array().map_or(0, Vec::len);
        assert!(listed > 1000, "{listed}");
        assert_eq!(source["files_omitted"], 3000 - listed);
        assert_eq!(source["uri"], format!("ctflow-snapshot:{}", snapshot.id));

        let small = DataSnapshot::new("p", vec![snapshot_file("a", "aa", 0)], Vec::new(), None, 1);
        let source: Value = serde_json::from_str(
            small.dataset_input("p", "training")["dataset"]["source"]
                .as_str()
                .unwrap_or_default(),
        )
        .unwrap();
        assert_eq!(source.get("files_omitted"), None);
    }

    #[test]
    fn a_changed_or_missing_file_is_named() {
        let f = snapshot_file("a.csv", "aaaa", 0);
        assert_eq!(changed_file(&f, Some("aaaa")), None);
        assert!(
            changed_file(&f, Some("bbbb"))
                .is_some_and(|m| m.contains("a.csv changed after the snapshot"))
        );
        assert!(changed_file(&f, None).is_some_and(|m| m.contains("is gone")));
    }

    proptest! {
        /// `lastRows` keeps exactly the newest N rows when every file is counted (or all
        /// of them when there are fewer), and only the oldest kept file is ever cut.
        #[test]
        fn last_rows_keeps_exactly_the_newest_rows(
            rows in proptest::collection::vec(0u64..50, 0..8),
            limit in 1u64..200,
        ) {
            let files: Vec<FileFacts> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| file(&format!("{i}.csv"), i as i64, Some(*r)))
                .collect();
            let window = DataWindow { last_rows: Some(limit), ..DataWindow::default() };
            let chosen = choose(files, Some(&window));
            let kept: u64 = chosen.iter().map(|c| c.file.rows.unwrap_or(0) - c.skip_rows).sum();
            prop_assert_eq!(kept, limit.min(rows.iter().sum()));
            for c in chosen.iter().skip(1) {
                prop_assert_eq!(c.skip_rows, 0);
            }
        }

        /// Windows only ever drop files, never reorder or invent them.
        #[test]
        fn windows_keep_a_suffix_of_the_arrival_order(
            times in proptest::collection::vec(0i64..1_000_000, 0..10),
            last_files in proptest::option::of(1u32..12),
            last_secs in proptest::option::of(1u64..1_000),
        ) {
            let files: Vec<FileFacts> = times
                .iter()
                .enumerate()
                .map(|(i, t)| file(&format!("{i}.csv"), *t, None))
                .collect();
            let all = choose(files.clone(), None);
            let window = DataWindow {
                last_files,
                last: last_secs.map(|s| DurationSpec(Duration::from_secs(s))),
                last_rows: None,
            };
            let some = choose(files, Some(&window));
            prop_assert!(some.len() <= all.len());
            let suffix = &all[all.len() - some.len()..];
            prop_assert_eq!(suffix, &some[..]);
        }
    }
}
