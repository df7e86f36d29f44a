//! Training data snapshots: lists the files and objects a pipeline's `spec.data` names
//! (local globs, `s3://bucket/prefix/*.csv` globs), digests them, counts CSV rows and reads
//! their schema, lets the windowing rules of `ctflow_core::data` choose, and checks before
//! training that nothing changed since.
//!
//! Digesting is the expensive part. A [`DigestCache`] keeps each file's digest, rows and
//! schema keyed by path, size, modification time and inode (an object's by URL, size,
//! time and entity tag), so a snapshot re-reads only what is new or was rewritten;
//! verification always re-reads. Local files are read on blocking threads, one per core;
//! objects are streamed, several at once.
#![forbid(unsafe_code)]

mod objects;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

pub use objects::{ObjectGlob, ObjectStores, split_s3};

use ctflow_core::data::{
    Column, DataSnapshot, FileFacts, SnapshotFile, TrainingData, changed_file, choose, infer_kind,
    merge_schemas,
};
use futures::{StreamExt, TryStreamExt};
use sha2::Digest;

/// How much of a file's start is kept for its header and type inference.
const HEAD_BYTES: usize = 64 * 1024;
/// Rows sampled for type inference.
const SAMPLE_ROWS: usize = 200;

/// Why a snapshot could not be taken, or no longer holds.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No file matches the pipeline's data paths.
    #[error("no training data: nothing matches {0}")]
    NoFiles(String),
    /// A path is not a glob.
    #[error("'{pattern}' is not a glob: {message}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read training data file {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The cause, in the message (and not in the error chain, so it is said once).
        cause: std::io::Error,
    },
    /// A file differs from its snapshot (or is gone).
    #[error("{0}")]
    Changed(String),
    /// Object storage could not be listed or read.
    #[error("cannot read training data at {location}: {message}")]
    Store {
        /// The bucket, prefix or object.
        location: String,
        /// What the store said.
        message: String,
    },
    /// The blocking task reading local files did not finish.
    #[error("the training data task failed: {0}")]
    Task(String),
}

/// Whether a data path names object storage rather than the local file system.
fn is_remote(path: &str) -> bool {
    path.contains("://")
}

/// What reading a whole file found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Content {
    sha256: String,
    rows: Option<u64>,
    schema: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    size: u64,
    modified_ns: u128,
    inode: u64,
}

/// Digests, rows and schemas of files and objects already read, keyed by location and
/// identity, and the object-store clients that read them. Clones share all of it.
#[derive(Debug, Default, Clone)]
pub struct DigestCache {
    entries: Arc<Mutex<HashMap<PathBuf, (Identity, Content)>>>,
    objects: Arc<objects::ObjectCache>,
    stores: ObjectStores,
}

impl DigestCache {
    /// An empty cache.
    pub fn new() -> DigestCache {
        DigestCache::default()
    }

    /// The object-store clients, for readers of the same data.
    pub fn stores(&self) -> &ObjectStores {
        &self.stores
    }

    fn get(&self, path: &Path, identity: &Identity) -> Option<Content> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(path)
            .filter(|(known, _)| known == identity)
            .map(|(_, read)| read.clone())
    }

    fn put(&self, path: PathBuf, identity: Identity, read: Content) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, (identity, read));
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |cause| DataError::Io {
        path: path.display().to_string(),
        cause,
    }
}

fn identity(meta: &std::fs::Metadata) -> Identity {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Identity {
        size: meta.len(),
        modified_ns: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
        inode,
    }
}

pub(crate) fn delimiter(path: &Path) -> Option<u8> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("csv") => Some(b','),
        Some(ext) if ext.eq_ignore_ascii_case("tsv") => Some(b'\t'),
        _ => None,
    }
}

/// The header's columns with types inferred from the sampled rows. Quoted fields with
/// delimiters inside are not split correctly; the schema is a description, not a parser.
fn schema_of(head: &[u8], delimiter: u8) -> Vec<Column> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let sep = char::from(delimiter);
    let names: Vec<String> = header
        .split(sep)
        .map(|n| n.trim().trim_matches('"').to_string())
        .collect();
    // The last line of a cut head may be incomplete.
    let complete = if head.len() == HEAD_BYTES {
        text.lines().count().saturating_sub(2)
    } else {
        usize::MAX
    };
    let rows: Vec<Vec<&str>> = lines
        .take(complete.min(SAMPLE_ROWS))
        .map(|line| {
            line.split(sep)
                .map(|v| v.trim().trim_matches('"'))
                .collect()
        })
        .collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Column {
            name,
            kind: infer_kind(rows.iter().filter_map(|r| r.get(i).copied())).to_string(),
        })
        .collect()
}

/// Counts in blocks of 255 with a byte-sized sum, which the compiler turns into vector
/// code: as fast as the digest instead of taking as long again.
fn count_newlines(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|block| {
            u64::from(
                block
                    .iter()
                    .fold(0u8, |count, &b| count + u8::from(b == b'\n')),
            )
        })
        .sum()
}

/// `work` on every item, on as many threads as the machine has, results in item order.
/// Digests are bound by the CPU once the data is in the page cache, or by a disk that
/// serves parallel reads faster, so one thread per core is what a snapshot can use.
fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            break mine;
                        };
                        mine.push((i, work(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

/// One pass over a file's bytes: its SHA-256, its newlines and its first bytes.
pub(crate) struct Digester {
    hasher: sha2::Sha256,
    head: Vec<u8>,
    newlines: u64,
    last: Option<u8>,
}

impl Digester {
    pub(crate) fn new() -> Digester {
        Digester {
            hasher: sha2::Sha256::new(),
            head: Vec::new(),
            newlines: 0,
            last: None,
        }
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };
        self.hasher.update(chunk);
        self.newlines += count_newlines(chunk);
        self.last = Some(last);
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }

    /// The digest, and for CSV/TSV (a `delimiter`) the data rows and schema.
    pub(crate) fn finish(self, delimiter: Option<u8>) -> Content {
        let sha256 = hex::encode(self.hasher.finalize());
        let Some(delimiter) = delimiter else {
            return Content {
                sha256,
                rows: None,
                schema: Vec::new(),
            };
        };
        let lines = self.newlines + u64::from(self.last.is_some_and(|b| b != b'\n'));
        Content {
            sha256,
            rows: Some(lines.saturating_sub(1)),
            schema: schema_of(&self.head, delimiter),
        }
    }
}

/// Reads a file once: its SHA-256, and for CSV/TSV its data rows and schema.
fn read_file(path: &Path) -> Result<Content, DataError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut digester = Digester::new();
    loop {
        let n = file.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        digester.update(&buffer[..n]);
    }
    Ok(digester.finish(delimiter(path)))
}

fn epoch_ms(identity: &Identity) -> i64 {
    i64::try_from(identity.modified_ns / 1_000_000).unwrap_or(i64::MAX)
}

/// The local files matching the patterns (relative ones resolved against `base_dir`).
fn matches(base_dir: &Path, patterns: &[String]) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut found = Vec::new();
    for pattern in patterns {
        let absolute = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            base_dir.join(pattern)
        };
        let text = absolute.to_string_lossy().to_string();
        let paths = glob::glob(&text).map_err(|e| DataError::Pattern {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        for path in paths.flatten() {
            if !path.is_file() {
                continue;
            }
            let shown = path
                .strip_prefix(base_dir)
                .map_or_else(|_| path.clone(), Path::to_path_buf)
                .to_string_lossy()
                .to_string();
            found.push((shown, path));
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// One file or object a snapshot may hold, read (or known from the cache).
pub(crate) struct Found {
    pub(crate) path: String,
    pub(crate) uri: String,
    pub(crate) size: u64,
    pub(crate) modified: i64,
    pub(crate) e_tag: Option<String>,
    pub(crate) content: Content,
}

/// The local files the patterns match, digested on one thread per core (or taken from
/// the cache). Blocking: it reads whole files.
fn local_files(
    base_dir: &Path,
    patterns: &[String],
    cache: &DigestCache,
) -> Result<Vec<Found>, DataError> {
    let mut known = Vec::new();
    for (shown, path) in matches(base_dir, patterns)? {
        let meta = std::fs::metadata(&path).map_err(io_error(&path))?;
        let identity = identity(&meta);
        let cached = cache.get(&path, &identity);
        known.push((shown, path, identity, cached));
    }
    let unread: Vec<&PathBuf> = known
        .iter()
        .filter(|(_, _, _, cached)| cached.is_none())
        .map(|(_, path, _, _)| path)
        .collect();
    let mut fresh = in_parallel(&unread, |path| read_file(path)).into_iter();
    let mut found = Vec::with_capacity(known.len());
    for (shown, path, identity, cached) in known {
        let content = match cached {
            Some(content) => content,
            None => {
                let content = fresh.next().ok_or_else(|| DataError::Io {
                    path: path.display().to_string(),
                    cause: std::io::Error::other("the file was not read"),
                })??;
                cache.put(path.clone(), identity.clone(), content.clone());
                content
            }
        };
        found.push(Found {
            path: shown,
            uri: path.to_string_lossy().to_string(),
            size: identity.size,
            modified: epoch_ms(&identity),
            e_tag: None,
            content,
        });
    }
    Ok(found)
}

/// Records a snapshot of a pipeline's training data as it is now: local files (relative
/// paths resolved against `base_dir`) and objects under `s3://` globs.
pub async fn take(
    pipeline: &str,
    base_dir: &Path,
    data: &TrainingData,
    cache: &DigestCache,
    now: i64,
) -> Result<DataSnapshot, DataError> {
    let (remote, local): (Vec<String>, Vec<String>) =
        data.paths.iter().cloned().partition(|p| is_remote(p));
    let mut found = Vec::new();
    if !local.is_empty() {
        let (base_dir, shared) = (base_dir.to_path_buf(), cache.clone());
        // Digests read whole files: off the async threads.
        found = tokio::task::spawn_blocking(move || local_files(&base_dir, &local, &shared))
            .await
            .map_err(|e| DataError::Task(e.to_string()))??;
    }
    for pattern in &remote {
        found.extend(objects::found(pattern, &cache.stores, Arc::clone(&cache.objects)).await?);
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.dedup_by(|a, b| a.path == b.path);
    if found.is_empty() {
        return Err(DataError::NoFiles(data.paths.join(", ")));
    }
    let facts = found
        .iter()
        .map(|f| FileFacts {
            path: f.path.clone(),
            size: f.size,
            modified: f.modified,
            rows: f.content.rows,
        })
        .collect();
    let mut read: HashMap<String, Found> = found.into_iter().map(|f| (f.path.clone(), f)).collect();
    let chosen = choose(facts, data.window.as_ref());
    let mut schemas = Vec::new();
    let mut files = Vec::new();
    for c in chosen {
        let Some(found) = read.remove(&c.file.path) else {
            continue;
        };
        if !found.content.schema.is_empty() {
            schemas.push(found.content.schema);
        }
        files.push(SnapshotFile {
            path: c.file.path,
            uri: found.uri,
            size: c.file.size,
            modified: c.file.modified,
            sha256: found.content.sha256,
            rows: found.content.rows,
            skip_rows: c.skip_rows,
            e_tag: found.e_tag,
        });
    }
    Ok(DataSnapshot::new(
        pipeline,
        files,
        merge_schemas(&schemas),
        data.window.clone(),
        now,
    ))
}

fn recorded_facts_changed(
    snapshot: &DataSnapshot,
    file: &SnapshotFile,
    recorded: &str,
    now: &str,
) -> DataError {
    DataError::Changed(format!(
        "data file {} changed after snapshot {}: {recorded} were recorded, {now} are there now",
        file.path,
        snapshot.digest(),
    ))
}

/// Checks every file of a snapshot against its recorded size and modification time (an
/// object's size and entity tag) without reading it: the cheap check for a reader about
/// to read the files anyway.
pub async fn check_recorded_facts(
    snapshot: &DataSnapshot,
    stores: &ObjectStores,
) -> Result<(), DataError> {
    for file in &snapshot.files {
        if is_remote(&file.uri) {
            let Some((size, e_tag)) = objects::identity_now(stores, &file.uri).await? else {
                return Err(DataError::Changed(
                    changed_file(file, None).unwrap_or_default(),
                ));
            };
            let tag_changed = file.e_tag.is_some() && e_tag != file.e_tag;
            if size != file.size || tag_changed {
                let tag = |t: &Option<String>| t.clone().unwrap_or_else(|| "none".into());
                return Err(recorded_facts_changed(
                    snapshot,
                    file,
                    &format!("size {} and entity tag {}", file.size, tag(&file.e_tag)),
                    &format!("{size} and {}", tag(&e_tag)),
                ));
            }
            continue;
        }
        let path = Path::new(&file.uri);
        let meta = std::fs::metadata(path).map_err(io_error(path))?;
        let now = identity(&meta);
        if now.size != file.size || epoch_ms(&now) != file.modified {
            return Err(recorded_facts_changed(
                snapshot,
                file,
                &format!("size {} and time {}", file.size, file.modified),
                &format!("{} and {}", now.size, epoch_ms(&now)),
            ));
        }
    }
    Ok(())
}

/// Digests every local file of a snapshot again, one thread per core; `None` where a
/// file is gone. Blocking.
fn local_digests(files: &[SnapshotFile]) -> Result<Vec<Option<String>>, DataError> {
    in_parallel(files, |file| match read_file(Path::new(&file.uri)) {
        Ok(read) => Ok(Some(read.sha256)),
        Err(DataError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(other) => Err(other),
    })
    .into_iter()
    .collect()
}

/// Checks every file and object of a snapshot against its recorded digest, reading each
/// in full. The error names the first changed file in the snapshot's order.
pub async fn verify(snapshot: &DataSnapshot, stores: &ObjectStores) -> Result<(), DataError> {
    let (remote, local): (Vec<SnapshotFile>, Vec<SnapshotFile>) = snapshot
        .files
        .iter()
        .cloned()
        .partition(|f| is_remote(&f.uri));
    let local_now = {
        let local = local.clone();
        tokio::task::spawn_blocking(move || local_digests(&local))
    };
    // Owned futures: a stream of futures borrowing from a closure's argument is not Send
    // for every lifetime, which the worker's spawned tasks need.
    let uris: Vec<String> = remote.iter().map(|file| file.uri.clone()).collect();
    let remote_now: Vec<Option<String>> = futures::stream::iter(uris.into_iter().map(|uri| {
        let stores = stores.clone();
        async move { objects::digest_now(&stores, &uri).await }
    }))
    .buffered(objects::PARALLEL_READS)
    .try_collect()
    .await?;
    let local_now = local_now
        .await
        .map_err(|e| DataError::Task(e.to_string()))??;
    let now: HashMap<&str, Option<String>> = local
        .iter()
        .zip(local_now)
        .chain(remote.iter().zip(remote_now))
        .map(|(file, digest)| (file.uri.as_str(), digest))
        .collect();
    for file in &snapshot.files {
        let actual = now.get(file.uri.as_str()).cloned().flatten();
        if let Some(reason) = changed_file(file, actual.as_deref()) {
            return Err(DataError::Changed(reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use ctflow_core::data::DataWindow;

    use super::*;

    fn data(paths: &[&str]) -> TrainingData {
        TrainingData {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            window: None,
            parameter: None,
        }
    }

    #[test]
    fn newlines_are_counted_across_block_edges() {
        for length in [0usize, 1, 254, 255, 256, 1000, 70_000] {
            let text: Vec<u8> = (0..length)
                .map(|i| {
                    if i % 3 == 0 || i % 254 == 0 {
                        b'\n'
                    } else {
                        b'x'
                    }
                })
                .collect();
            let naive = text.iter().filter(|b| **b == b'\n').count() as u64;
            assert_eq!(count_newlines(&text), naive, "{length} bytes");
        }
        assert_eq!(count_newlines(&[b'\n'; 1000]), 1000);
    }

    #[test]
    fn parallel_work_keeps_the_item_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            in_parallel(&items, |i| i * 2),
            (0..1000).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert!(in_parallel(&Vec::<u32>::new(), |i| *i).is_empty());
    }

    #[tokio::test]
    async fn verification_names_the_first_changed_file_in_snapshot_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i:02}.csv")), format!("a\n{i}\n"))
                .expect("write");
        }
        let snapshot = take("p", dir.path(), &data(&["*.csv"]), &DigestCache::new(), 1)
            .await
            .expect("snapshot");
        verify(&snapshot, &ObjectStores::default())
            .await
            .expect("nothing changed");
        std::fs::write(dir.path().join("f15.csv"), "a\nchanged\n").expect("write");
        std::fs::remove_file(dir.path().join("f07.csv")).expect("remove");
        let error = verify(&snapshot, &ObjectStores::default())
            .await
            .expect_err("changed")
            .to_string();
        assert!(error.contains("f07.csv"), "{error}");
    }

    #[tokio::test]
    async fn a_snapshot_lists_digests_rows_and_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("base.csv"), "a,b,label\n1,2.5,x\n3,4,y\n").expect("write");
        std::fs::create_dir(dir.path().join("incoming")).expect("mkdir");
        std::fs::write(dir.path().join("incoming/new.csv"), "a,b,label\n5,6,z").expect("write");
        std::fs::write(dir.path().join("incoming/notes.txt"), "ignored").expect("write");
        let cache = DigestCache::new();
        let snapshot = take(
            "p",
            dir.path(),
            &data(&["base.csv", "incoming/*.csv"]),
            &cache,
            7,
        )
        .await
        .expect("snapshot");
        let paths: Vec<&str> = snapshot.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths.len(), 2);
        assert!(paths.contains(&"base.csv") && paths.contains(&"incoming/new.csv"));
        assert_eq!(snapshot.rows, 3);
        let kinds: Vec<(&str, &str)> = snapshot
            .schema
            .iter()
            .map(|c| (c.name.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(kinds, [("a", "long"), ("b", "double"), ("label", "string")]);
        let expected = hex::encode(sha2::Sha256::digest(b"a,b,label\n5,6,z"));
        let new = snapshot
            .files
            .iter()
            .find(|f| f.path == "incoming/new.csv")
            .expect("the new file");
        assert_eq!(new.sha256, expected);
        verify(&snapshot, &ObjectStores::default())
            .await
            .expect("nothing changed");
        check_recorded_facts(&snapshot, &ObjectStores::default())
            .await
            .expect("nothing changed");

        // Same data, same id; a rewritten file is read again and changes it.
        let again = take(
            "p",
            dir.path(),
            &data(&["base.csv", "incoming/*.csv"]),
            &cache,
            8,
        )
        .await
        .expect("snapshot");
        assert_eq!(again.id, snapshot.id);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("incoming/new.csv"))
            .expect("open");
        file.write_all(b"\n7,8,w\n").expect("append");
        drop(file);
        let quick = check_recorded_facts(&snapshot, &ObjectStores::default())
            .await
            .expect_err("the size changed");
        assert!(
            quick
                .to_string()
                .contains("data file incoming/new.csv changed after snapshot"),
            "{quick}"
        );
        let error = verify(&snapshot, &ObjectStores::default())
            .await
            .expect_err("the file changed");
        assert!(
            error
                .to_string()
                .contains("incoming/new.csv changed after the snapshot"),
            "{error}"
        );
        let changed = take(
            "p",
            dir.path(),
            &data(&["base.csv", "incoming/*.csv"]),
            &cache,
            9,
        )
        .await
        .expect("snapshot");
        assert_ne!(changed.id, snapshot.id);
        assert_eq!(changed.rows, 4);

        std::fs::remove_file(dir.path().join("base.csv")).expect("remove");
        assert!(
            verify(&changed, &ObjectStores::default())
                .await
                .is_err_and(|e| e.to_string().contains("base.csv"))
        );
        assert!(
            check_recorded_facts(&changed, &ObjectStores::default())
                .await
                .is_err_and(|e| e.to_string().contains("base.csv"))
        );
    }

    #[tokio::test]
    async fn nothing_to_train_on_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = take("p", dir.path(), &data(&["*.csv"]), &DigestCache::new(), 1)
            .await
            .expect_err("no files");
        assert!(matches!(error, DataError::NoFiles(_)));
    }

    #[tokio::test]
    async fn windows_apply_to_the_files_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.csv"), "x\n1\n2\n3\n").expect("write");
        let mut spec = data(&["*.csv"]);
        spec.window = Some(DataWindow {
            last_rows: Some(2),
            ..DataWindow::default()
        });
        let snapshot = take("p", dir.path(), &spec, &DigestCache::new(), 1)
            .await
            .expect("snapshot");
        assert_eq!(snapshot.files[0].skip_rows, 1);
        assert_eq!(snapshot.rows, 2);
    }
}
