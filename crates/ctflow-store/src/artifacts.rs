//! Artifact storage behind one trait. The local-disk implementation is the default; object
//! stores implement the same trait.
//!
//! Every path handed to a repository is relative to its root and is checked by
//! [`ctflow_core::artifact_path::safe_relative_path`]; the local repository additionally
//! refuses to follow symbolic links, so nothing inside the root can point outside it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use ctflow_core::MlflowError;
use ctflow_core::artifact_path::safe_relative_path;
use ctflow_core::entities::FileInfo;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::error::{Error, Result};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;

/// What a download hands back: the bytes and their length.
pub struct ArtifactContent {
    pub reader: ByteReader,
    pub len: u64,
}

pub trait ArtifactRepository: Send + Sync {
    /// Writes `path` from `body`, creating parent folders; replaces an existing file.
    fn put<'a>(&'a self, path: &'a str, body: ByteReader) -> BoxFuture<'a, Result<u64>>;
    /// Opens a file for reading. A folder or a missing file is an error.
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ArtifactContent>>;
    /// Lists the immediate children of a folder, sorted by name; a missing folder or a
    /// file lists as empty.
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<FileInfo>>>;
    /// Deletes a file or a folder tree.
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Artifacts in a folder on local disk.
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    root: PathBuf,
}

fn invalid_path() -> Error {
    Error::Mlflow(MlflowError::invalid("Invalid path"))
}

/// A path the local file system cannot hold (too long as a whole) is the client's
/// mistake, not the server's.
fn unusable_name(error: Error) -> Error {
    match error {
        Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidFilename => Error::Mlflow(
            MlflowError::invalid("Invalid path: too long for the artifact store's file system"),
        ),
        other => other,
    }
}

/// The name an upload in progress writes to before its rename: `.NAME.upload-<uuid>`.
fn partial_upload_name(name: &str) -> String {
    format!(".{name}.upload-{}", uuid::Uuid::new_v4().simple())
}

/// Whether a file name is an upload's name before its rename. Such files are never
/// listed, served, written or deleted through the API.
fn is_partial_upload(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".upload-")
            .is_some_and(|(_, id)| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn no_such_artifact(path: &str) -> Error {
    Error::Mlflow(MlflowError::not_found(format!(
        "No such artifact: '{path}'"
    )))
}

impl LocalArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        Ok(LocalArtifactStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes the partial files of uploads whose writer is gone (a process killed
    /// mid-upload), returning their paths. NB: a writer holds an exclusive lock on its
    /// partial file until the rename, and the kernel drops it when the process dies, so
    /// an upload still running in this or another process is left alone.
    pub fn remove_abandoned_uploads(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let mut folders = vec![self.root.clone()];
        while let Some(folder) = folders.pop() {
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let file_type = entry.file_type()?;
                if file_type.is_dir() {
                    folders.push(entry.path());
                    continue;
                }
                let abandoned = file_type.is_file()
                    && entry.file_name().to_str().is_some_and(is_partial_upload);
                if !abandoned {
                    continue;
                }
                let path = entry.path();
                let file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if file.try_lock().is_ok() {
                    std::fs::remove_file(&path)?;
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }

    /// Resolves a relative path under the root, refusing traversal and any symbolic link
    /// on the way (the last component included).
    async fn resolve(&self, path: &str) -> Result<PathBuf> {
        let parts = safe_relative_path(path).map_err(Error::Mlflow)?;
        if parts.iter().any(|part| is_partial_upload(part)) {
            return Err(no_such_artifact(path));
        }
        let mut full = self.root.clone();
        for part in parts {
            full.push(part);
            match tokio::fs::symlink_metadata(&full).await {
                Ok(meta) if meta.file_type().is_symlink() => return Err(invalid_path()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(full)
    }
}

impl ArtifactRepository for LocalArtifactStore {
    fn put<'a>(&'a self, path: &'a str, mut body: ByteReader) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            async move {
                let full = self.resolve(path).await?;
                if full == self.root {
                    return Err(invalid_path());
                }
                let parent = full.parent().ok_or_else(invalid_path)?;
                tokio::fs::create_dir_all(parent).await?;
                if tokio::fs::metadata(&full).await.is_ok_and(|m| m.is_dir()) {
                    return Err(Error::Mlflow(MlflowError::invalid(format!(
                        "Cannot write '{path}': a folder of that name exists"
                    ))));
                }
                // Write beside the target and rename, so a reader never sees half a file and a
                // failed upload leaves the old content.
                let tmp = parent.join(partial_upload_name(
                    full.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("artifact"),
                ));
                let result = async {
                    // The lock tells `remove_abandoned_uploads` this upload is alive.
                    let created = tmp.clone();
                    let file = tokio::task::spawn_blocking(move || {
                        let file = std::fs::File::create(&created)?;
                        file.lock()?;
                        Ok::<_, std::io::Error>(file)
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    let file = tokio::fs::File::from_std(file);
                    // NB: every tokio file write is a trip to the blocking pool; a large buffer
                    // keeps a 100 MB upload to a few hundred of them.
                    let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
                    let written = tokio::io::copy(&mut body, &mut writer).await?;
                    writer.flush().await?;
                    let file = writer.into_inner();
                    file.sync_all().await?;
                    drop(file);
                    tokio::fs::rename(&tmp, &full).await?;
                    Ok::<u64, std::io::Error>(written)
                }
                .await;
                if result.is_err() {
                    let _ = tokio::fs::remove_file(&tmp).await;
                }
                Ok(result?)
            }
            .await
            .map_err(unusable_name)
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ArtifactContent>> {
        Box::pin(async move {
            async move {
                let full = self.resolve(path).await?;
                let meta = match tokio::fs::metadata(&full).await {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(no_such_artifact(path));
                    }
                    Err(e) => return Err(e.into()),
                };
                if meta.is_dir() {
                    return Err(Error::Mlflow(MlflowError::invalid(format!(
                        "'{path}' is a directory, not a file"
                    ))));
                }
                let file = tokio::fs::File::open(&full).await?;
                Ok(ArtifactContent {
                    reader: Box::pin(file),
                    len: meta.len(),
                })
            }
            .await
            .map_err(unusable_name)
        })
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<FileInfo>>> {
        Box::pin(async move {
            async move {
                let full = self.resolve(path).await?;
                let mut dir = match tokio::fs::read_dir(&full).await {
                    Ok(dir) => dir,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) =>
                    {
                        return Ok(Vec::new());
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut files = Vec::new();
                while let Some(entry) = dir.next_entry().await? {
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if is_partial_upload(&name) {
                        continue;
                    }
                    let file_type = entry.file_type().await?;
                    if file_type.is_symlink() {
                        continue;
                    }
                    if file_type.is_dir() {
                        files.push(FileInfo {
                            path: name,
                            is_dir: true,
                            file_size: None,
                        });
                    } else {
                        let len = entry.metadata().await?.len();
                        files.push(FileInfo {
                            path: name,
                            is_dir: false,
                            file_size: Some(len as i64),
                        });
                    }
                }
                files.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(files)
            }
            .await
            .map_err(unusable_name)
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            async move {
                let full = self.resolve(path).await?;
                if full == self.root {
                    return Err(invalid_path());
                }
                match tokio::fs::metadata(&full).await {
                    Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(&full).await?,
                    Ok(_) => tokio::fs::remove_file(&full).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(no_such_artifact(path));
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            }
            .await
            .map_err(unusable_name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn body(data: &'static [u8]) -> ByteReader {
        Box::pin(data)
    }

    #[tokio::test]
    async fn partial_uploads_are_hidden_and_abandoned_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(dir.path()).unwrap();
        store.put("1/run/model.pkl", body(b"whole")).await.unwrap();
        let folder = store.root().join("1/run");
        // One left by a writer that died, one whose writer (this test) still holds it.
        let abandoned = format!(".model.pkl.upload-{}", uuid::Uuid::new_v4().simple());
        let running = format!(".data.csv.upload-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(folder.join(&abandoned), b"half").unwrap();
        std::fs::write(folder.join(&running), b"half").unwrap();
        let held = std::fs::File::open(folder.join(&running)).unwrap();
        held.lock().unwrap();

        let listed: Vec<String> = store
            .list("1/run")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(listed, ["model.pkl"]);
        for name in [&abandoned, &running] {
            let path = format!("1/run/{name}");
            let error = store.get(&path).await.err().expect("not served");
            assert!(error.to_string().contains("No such artifact"), "{error}");
            assert!(store.delete(&path).await.is_err());
            assert!(store.put(&path, body(b"x")).await.is_err());
        }

        let removed = store.remove_abandoned_uploads().unwrap();
        assert_eq!(removed, [folder.join(&abandoned)]);
        assert!(
            folder.join(&running).exists(),
            "an upload in progress is kept"
        );
        drop(held);
        assert_eq!(
            store.remove_abandoned_uploads().unwrap(),
            [folder.join(&running)]
        );
        // A name that merely looks alike is an ordinary artifact.
        store
            .put("1/run/.notes.upload-draft", body(b"mine"))
            .await
            .unwrap();
        assert!(store.remove_abandoned_uploads().unwrap().is_empty());
        assert_eq!(store.list("1/run").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(dir.path()).unwrap();
        assert_eq!(
            store
                .put("1/r/artifacts/a/b.txt", body(b"hello"))
                .await
                .unwrap(),
            5
        );
        let mut content = store.get("1/r/artifacts/a/b.txt").await.unwrap();
        let mut s = String::new();
        content.reader.read_to_string(&mut s).await.unwrap();
        assert_eq!((s.as_str(), content.len), ("hello", 5));
        let listing = store.list("1/r/artifacts").await.unwrap();
        assert_eq!(
            listing,
            vec![FileInfo {
                path: "a".into(),
                is_dir: true,
                file_size: None
            }]
        );
        assert!(
            store
                .list("1/r/artifacts/a/b.txt")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.list("nowhere").await.unwrap().is_empty());
        store.delete("1/r/artifacts/a").await.unwrap();
        assert!(store.list("1/r/artifacts").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn paths_too_long_for_the_file_system_are_client_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(dir.path()).unwrap();
        // Every name fits, the whole does not (Linux's PATH_MAX is 4096).
        let long = vec!["n".repeat(250); 20].join("/");
        for error in [
            store.list(&long).await.err(),
            store.put(&long, body(b"x")).await.err(),
            store.get(&long).await.err(),
        ] {
            match error {
                Some(Error::Mlflow(e)) => {
                    assert_eq!(e.code, ctflow_core::ErrorCode::InvalidParameterValue)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn refuses_traversal_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let store = LocalArtifactStore::new(dir.path().join("root")).unwrap();
        std::os::unix::fs::symlink(outside.path(), store.root().join("link")).unwrap();
        for path in [
            "../x",
            "/etc/passwd",
            "link/secret",
            "a/../../x",
            "%2e%2e/x",
        ] {
            let err = store.get(path).await.err().expect(path);
            assert!(
                matches!(err, Error::Mlflow(ref e) if e.message == "Invalid path"),
                "{path}: {err}"
            );
            assert!(store.put(path, body(b"x")).await.is_err(), "{path}");
            assert!(store.list(path).await.is_err(), "{path}");
        }
        assert!(
            store
                .list("")
                .await
                .unwrap()
                .iter()
                .all(|f| f.path != "link")
        );
    }

    #[tokio::test]
    async fn missing_files_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(dir.path()).unwrap();
        let err = store.get("nope.txt").await.err().unwrap();
        assert!(
            matches!(err, Error::Mlflow(ref e) if e.code == ctflow_core::ErrorCode::ResourceDoesNotExist)
        );
    }
}
