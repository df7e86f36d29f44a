//! Artifacts on object storage, through `object_store`, behind the same
//! [`ArtifactRepository`] trait as the local store, so the server proxies them and
//! clients need no cloud credentials:
//!
//! - `s3://bucket/prefix`: configured as the AWS tools and MLflow configure it, `AWS_*`
//!   variables (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL`) and MLflow's
//!   `MLFLOW_S3_ENDPOINT_URL` for S3-compatible servers such as MinIO;
//! - `az://container/prefix`, or MLflow's `wasbs://container@account.blob.core.windows.net/prefix`
//!   (and `abfss://`): `AZURE_*` variables (`AZURE_STORAGE_ACCOUNT_NAME`,
//!   `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_USE_EMULATOR` for Azurite, ...).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctflow_core::MlflowError;
use ctflow_core::artifact_path::safe_relative_path;
use ctflow_core::entities::FileInfo;
use futures::stream::FuturesOrdered;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::artifacts::{ArtifactContent, ArtifactRepository, BoxFuture, ByteReader};
use crate::error::{Error, Result};

/// Upload part size (S3's minimum part is 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at the same time.
const PARTS_IN_FLIGHT: usize = 4;
/// The folder under the prefix where each multipart upload in progress is recorded (its
/// key and upload id), so one whose writer died can be aborted: the object store keeps
/// an unfinished upload's parts, and bills them, until someone aborts it. Never listed
/// or reachable as an artifact.
const UPLOADS_FOLDER: &str = ".ctflow-uploads";
/// How often a running upload rewrites its record.
const UPLOAD_HEARTBEAT: Duration = Duration::from_secs(300);
/// A record not rewritten for this long belongs to a writer that died.
pub const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(1800);

/// A client for one S3 bucket, typed: it also runs multipart uploads by id.
#[cfg(feature = "s3")]
fn s3_store(bucket: &str) -> Result<Arc<object_store::aws::AmazonS3>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    // HTTPS needs a process-wide rustls provider; ring is the one the rest of ctflow
    // uses. Installing fails harmlessly when one is already there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(endpoint) = std::env::var("MLFLOW_S3_ENDPOINT_URL") {
        builder = builder.with_endpoint(endpoint);
    }
    if builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|e| e.starts_with("http://"))
    {
        builder = builder.with_allow_http(true);
    }
    let client = builder
        .build()
        .map_err(|e| Error::Config(format!("cannot use the bucket '{bucket}': {e}")))?;
    Ok(Arc::new(client))
}

/// A client for one S3 bucket.
#[cfg(feature = "s3")]
pub fn s3_client(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    Ok(s3_store(bucket)?)
}

#[cfg(not(feature = "s3"))]
pub fn s3_client(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    Err(Error::Config(format!(
        "s3://{bucket}: this ctflow was built without object-storage support (feature s3)"
    )))
}

/// Splits `<scheme>bucket/prefix` into the bucket and the prefix (no slashes at its ends).
fn split_url<'a>(url: &'a str, scheme: &str) -> Option<(&'a str, &'a str)> {
    let rest = url.strip_prefix(scheme)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, prefix.trim_matches('/')))
}

/// An object-storage location: which service, the bucket (or container and account),
/// and the prefix under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectUrl<'a> {
    S3 {
        bucket: &'a str,
        prefix: &'a str,
    },
    Azure {
        container: &'a str,
        /// From a `wasbs://container@account.blob.core.windows.net` URL.
        account: Option<&'a str>,
        prefix: &'a str,
    },
}

impl<'a> ObjectUrl<'a> {
    /// Reads an object-storage URL; `None` for anything else (a local path).
    pub fn parse(url: &'a str) -> Option<ObjectUrl<'a>> {
        if let Some((bucket, prefix)) = split_url(url, "s3://") {
            return Some(ObjectUrl::S3 { bucket, prefix });
        }
        if let Some((container, prefix)) = split_url(url, "az://") {
            return Some(ObjectUrl::Azure {
                container,
                account: None,
                prefix,
            });
        }
        for scheme in ["wasbs://", "wasb://", "abfss://", "abfs://"] {
            if let Some((authority, prefix)) = split_url(url, scheme) {
                let (container, host) = authority.split_once('@')?;
                let account = host.split_once('.').map_or(host, |(account, _)| account);
                if container.is_empty() || account.is_empty() {
                    return None;
                }
                return Some(ObjectUrl::Azure {
                    container,
                    account: Some(account),
                    prefix,
                });
            }
        }
        None
    }

    fn prefix(&self) -> &'a str {
        match self {
            ObjectUrl::S3 { prefix, .. } | ObjectUrl::Azure { prefix, .. } => prefix,
        }
    }

    /// A client for the bucket or container, configured from the environment.
    pub fn client(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            ObjectUrl::S3 { bucket, .. } => s3_client(bucket),
            ObjectUrl::Azure {
                container, account, ..
            } => azure_client(container, *account),
        }
    }
}

#[cfg(feature = "azure")]
fn azure_client(container: &str, account: Option<&str>) -> Result<Arc<dyn ObjectStore>> {
    use object_store::azure::MicrosoftAzureBuilder;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
    if let Some(account) = account {
        builder = builder.with_account(account);
    }
    let client = builder
        .build()
        .map_err(|e| Error::Config(format!("cannot use the container '{container}': {e}")))?;
    Ok(Arc::new(client))
}

#[cfg(not(feature = "azure"))]
fn azure_client(container: &str, _account: Option<&str>) -> Result<Arc<dyn ObjectStore>> {
    Err(Error::Config(format!(
        "{container}: this ctflow was built without Azure Blob Storage support (feature azure)"
    )))
}

/// Artifacts under a prefix of an object store.
#[derive(Clone)]
pub struct ObjectStoreArtifacts {
    client: Arc<dyn ObjectStore>,
    /// The same store's multipart uploads by id, where ctflow records them to abort those
    /// a crash cut off (S3). Without it (Azure, which drops uncommitted blocks itself
    /// after a week) large objects go up through `WriteMultipart`.
    uploads: Option<Arc<dyn MultipartStore>>,
    /// The prefix's parts, already checked.
    prefix: Vec<String>,
    url: String,
}

fn store_error(error: object_store::Error) -> Error {
    Error::Io(std::io::Error::other(error.to_string()))
}

fn no_such_artifact(path: &str) -> Error {
    Error::Mlflow(MlflowError::not_found(format!(
        "No such artifact: '{path}'"
    )))
}

impl ObjectStoreArtifacts {
    /// Artifacts under `prefix` (a relative path; empty for the bucket's root).
    pub fn new(client: Arc<dyn ObjectStore>, prefix: &str, url: String) -> Result<Self> {
        let prefix = if prefix.is_empty() {
            Vec::new()
        } else {
            safe_relative_path(prefix).map_err(|e| {
                Error::Config(format!("bad artifact prefix '{prefix}': {}", e.message))
            })?
        };
        Ok(ObjectStoreArtifacts {
            client,
            uploads: None,
            prefix,
            url,
        })
    }

    /// Runs multipart uploads through `uploads` (the same store as the client), each
    /// recorded until it completes or is aborted.
    pub fn with_recorded_uploads(mut self, uploads: Arc<dyn MultipartStore>) -> Self {
        self.uploads = Some(uploads);
        self
    }

    /// `s3://bucket/prefix`, `az://container/prefix` (or `wasbs://`, `abfss://`).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = ObjectUrl::parse(url).ok_or_else(|| {
            Error::Config(format!(
                "'{url}' is not an object-storage URL (s3://, az://, wasbs://, abfss://)"
            ))
        })?;
        let url = url.trim_end_matches('/').to_string();
        match parsed {
            #[cfg(feature = "s3")]
            ObjectUrl::S3 { bucket, prefix } => {
                let store = s3_store(bucket)?;
                Ok(ObjectStoreArtifacts::new(store.clone(), prefix, url)?
                    .with_recorded_uploads(store))
            }
            _ => ObjectStoreArtifacts::new(parsed.client()?, parsed.prefix(), url),
        }
    }

    /// The URL artifacts are stored under.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object key of a relative artifact path, checked like every other path.
    fn location(&self, path: &str) -> Result<ObjectPath> {
        let parts = safe_relative_path(path).map_err(Error::Mlflow)?;
        if parts.first().is_some_and(|first| first == UPLOADS_FOLDER) {
            return Err(no_such_artifact(path));
        }
        Ok(ObjectPath::from_iter(
            self.prefix
                .iter()
                .map(String::as_str)
                .chain(parts.iter().map(String::as_str)),
        ))
    }

    /// Where the records of uploads in progress live.
    fn uploads_folder(&self) -> ObjectPath {
        ObjectPath::from_iter(
            self.prefix
                .iter()
                .map(String::as_str)
                .chain(std::iter::once(UPLOADS_FOLDER)),
        )
    }

    /// Starts a recorded multipart upload to `location`: its id, and its record's key.
    async fn begin_upload(
        &self,
        uploads: &Arc<dyn MultipartStore>,
        location: &ObjectPath,
    ) -> Result<(MultipartId, ObjectPath, PutPayload)> {
        let id = uploads
            .create_multipart(location)
            .await
            .map_err(store_error)?;
        let record_key = self
            .uploads_folder()
            .join(uuid::Uuid::new_v4().simple().to_string());
        let record = PutPayload::from(
            serde_json::json!({"key": location.as_ref(), "upload_id": id}).to_string(),
        );
        if let Err(error) = self.client.put(&record_key, record.clone()).await {
            let _ = uploads.abort_multipart(location, &id).await;
            return Err(store_error(error));
        }
        Ok((id, record_key, record))
    }

    /// Uploads `first` and the rest of `body` as a recorded multipart upload, at most
    /// `PARTS_IN_FLIGHT` parts at a time. NB: the object becomes visible only when the
    /// upload completes, so a reader never sees half of it and a failed upload leaves the
    /// old one.
    async fn put_recorded(
        &self,
        uploads: &Arc<dyn MultipartStore>,
        location: &ObjectPath,
        first: Vec<u8>,
        body: &mut ByteReader,
    ) -> Result<u64> {
        let (id, record_key, record) = self.begin_upload(uploads, location).await?;
        let mut written = 0u64;
        let sent: Result<Vec<PartId>> = async {
            let mut in_flight = FuturesOrdered::new();
            let mut parts: Vec<PartId> = Vec::new();
            let mut chunk = first;
            let mut recorded_at = Instant::now();
            for index in 0.. {
                if chunk.is_empty() {
                    break;
                }
                let last = chunk.len() < PART_SIZE;
                written += chunk.len() as u64;
                if in_flight.len() >= PARTS_IN_FLIGHT
                    && let Some(done) = in_flight.next().await
                {
                    let done: object_store::Result<PartId> = done;
                    parts.push(done.map_err(store_error)?);
                }
                in_flight.push_back(uploads.put_part(
                    location,
                    &id,
                    index,
                    PutPayload::from(chunk),
                ));
                if recorded_at.elapsed() >= UPLOAD_HEARTBEAT {
                    // The record's age tells the sweep this writer is alive.
                    self.client
                        .put(&record_key, record.clone())
                        .await
                        .map_err(store_error)?;
                    recorded_at = Instant::now();
                }
                if last {
                    break;
                }
                chunk = Vec::with_capacity(PART_SIZE);
                (&mut *body)
                    .take(PART_SIZE as u64)
                    .read_to_end(&mut chunk)
                    .await?;
            }
            while let Some(done) = in_flight.next().await {
                parts.push(done.map_err(store_error)?);
            }
            Ok(parts)
        }
        .await;
        let finished = match sent {
            Ok(parts) => uploads
                .complete_multipart(location, &id, parts)
                .await
                .map(|_| written)
                .map_err(store_error),
            Err(error) => Err(error),
        };
        if finished.is_err()
            && let Err(abort) = uploads.abort_multipart(location, &id).await
        {
            // NB: the record stays, so the sweep tries again.
            tracing::warn!(%abort, key = %location, "cannot abort a failed artifact upload");
            return finished;
        }
        if let Err(error) = self.client.delete(&record_key).await {
            tracing::warn!(%error, key = %record_key, "cannot delete an upload's record");
        }
        finished
    }

    /// Aborts the multipart uploads whose record was not rewritten for `age` (their
    /// writer died mid-upload) and deletes their records; returns their object keys.
    pub async fn abort_abandoned_uploads(&self, age: Duration) -> Result<Vec<String>> {
        let Some(uploads) = &self.uploads else {
            return Ok(Vec::new());
        };
        let folder = self.uploads_folder();
        let records: Vec<object_store::ObjectMeta> = self
            .client
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(store_error)?;
        let now = ctflow_core::now_ms();
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let mut aborted = Vec::new();
        for record in records {
            if now.saturating_sub(record.last_modified.timestamp_millis()) < age_ms {
                continue;
            }
            let bytes = match self.client.get(&record.location).await {
                Ok(found) => found.bytes().await.map_err(store_error)?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(error) => return Err(store_error(error)),
            };
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let (Some(key), Some(id)) = (parsed["key"].as_str(), parsed["upload_id"].as_str()) {
                let key = ObjectPath::from(key);
                match uploads.abort_multipart(&key, &id.to_string()).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(store_error(error)),
                }
                aborted.push(key.to_string());
            }
            match self.client.delete(&record.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        Ok(aborted)
    }
}

impl ArtifactRepository for ObjectStoreArtifacts {
    fn put<'a>(&'a self, path: &'a str, mut body: ByteReader) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let location = self.location(path)?;
            if safe_relative_path(path).map_err(Error::Mlflow)?.is_empty() {
                return Err(Error::Mlflow(MlflowError::invalid("Invalid path")));
            }
            // An object smaller than one part goes up in one request.
            let mut first = Vec::with_capacity(PART_SIZE.min(1 << 20));
            (&mut body)
                .take(PART_SIZE as u64)
                .read_to_end(&mut first)
                .await?;
            if first.len() < PART_SIZE {
                let written = first.len() as u64;
                self.client
                    .put(&location, PutPayload::from(first))
                    .await
                    .map_err(store_error)?;
                return Ok(written);
            }
            if let Some(uploads) = &self.uploads {
                return self
                    .put_recorded(uploads, &location, first, &mut body)
                    .await;
            }
            // NB: a multipart upload becomes visible only when completed, so a reader
            // never sees half an object and a failed upload leaves the old one.
            let upload = self
                .client
                .put_multipart(&location)
                .await
                .map_err(store_error)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut written = first.len() as u64;
            writer.write(&first);
            drop(first);
            let mut buffer = vec![0u8; 1 << 20];
            let copied: Result<()> = async {
                loop {
                    let n = body.read(&mut buffer).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(store_error)?;
                    writer.write(&buffer[..n]);
                    written += n as u64;
                }
            }
            .await;
            match copied {
                Ok(()) => {
                    writer.finish().await.map_err(store_error)?;
                    Ok(written)
                }
                Err(error) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(%abort, path, "cannot abort a failed artifact upload");
                    }
                    Err(error)
                }
            }
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ArtifactContent>> {
        Box::pin(async move {
            let location = self.location(path)?;
            let result = match self.client.get(&location).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(no_such_artifact(path));
                }
                Err(error) => return Err(store_error(error)),
            };
            let len = result.meta.size;
            let stream = result
                .into_stream()
                .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
            Ok(ArtifactContent {
                reader: Box::pin(tokio_util::io::StreamReader::new(stream)),
                len,
            })
        })
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<FileInfo>>> {
        Box::pin(async move {
            let location = self.location(path)?;
            let at_root = safe_relative_path(path).map_err(Error::Mlflow)?.is_empty();
            let prefix = (!location.as_ref().is_empty()).then_some(&location);
            let listed = self
                .client
                .list_with_delimiter(prefix)
                .await
                .map_err(store_error)?;
            let mut files: Vec<FileInfo> = listed
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .filter(|name| !(at_root && name == UPLOADS_FOLDER))
                .map(|name| FileInfo {
                    path: name,
                    is_dir: true,
                    file_size: None,
                })
                .chain(listed.objects.iter().filter_map(|object| {
                    object.location.filename().map(|name| FileInfo {
                        path: name.to_string(),
                        is_dir: false,
                        file_size: Some(i64::try_from(object.size).unwrap_or(i64::MAX)),
                    })
                }))
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(files)
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let location = self.location(path)?;
            if safe_relative_path(path).map_err(Error::Mlflow)?.is_empty() {
                return Err(Error::Mlflow(MlflowError::invalid("Invalid path")));
            }
            // A folder is every object under it; a file is the one object.
            let under: Vec<ObjectPath> = self
                .client
                .list(Some(&location))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
                .map_err(store_error)?;
            let exists = match self.client.head(&location).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(error) => return Err(store_error(error)),
            };
            if under.is_empty() && !exists {
                return Err(no_such_artifact(path));
            }
            for object in under.iter().chain(exists.then_some(&location)) {
                match self.client.delete(object).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(store_error(error)),
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn body(data: &'static [u8]) -> ByteReader {
        Box::pin(data)
    }

    async fn read_all(repo: &ObjectStoreArtifacts, path: &str) -> Vec<u8> {
        let mut content = repo.get(path).await.expect("exists");
        let mut bytes = Vec::new();
        content
            .reader
            .read_to_end(&mut bytes)
            .await
            .expect("readable");
        assert_eq!(bytes.len() as u64, content.len);
        bytes
    }

    #[tokio::test]
    async fn put_get_list_delete_under_a_prefix() {
        let client: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let repo = ObjectStoreArtifacts::new(
            client.clone(),
            "root/mlartifacts",
            "s3://b/root/mlartifacts".into(),
        )
        .expect("valid prefix");
        assert_eq!(
            repo.put("1/run/artifacts/model/MLmodel", body(b"flavors: {}"))
                .await
                .expect("put"),
            11
        );
        repo.put("1/run/artifacts/metrics.json", body(b"{}"))
            .await
            .expect("put");
        // Stored under the prefix.
        assert!(
            client
                .head(&ObjectPath::from(
                    "root/mlartifacts/1/run/artifacts/metrics.json"
                ))
                .await
                .is_ok()
        );
        assert_eq!(
            read_all(&repo, "1/run/artifacts/model/MLmodel").await,
            b"flavors: {}"
        );
        let listed = repo.list("1/run/artifacts").await.expect("list");
        let names: Vec<(&str, bool)> = listed.iter().map(|f| (f.path.as_str(), f.is_dir)).collect();
        assert_eq!(names, vec![("metrics.json", false), ("model", true)]);
        assert_eq!(listed[0].file_size, Some(2));
        assert!(repo.list("1/none").await.expect("list").is_empty());
        // Replacing keeps one object.
        repo.put("1/run/artifacts/metrics.json", body(b"{\"a\":1}"))
            .await
            .expect("put");
        assert_eq!(
            read_all(&repo, "1/run/artifacts/metrics.json").await,
            b"{\"a\":1}"
        );
        repo.delete("1/run/artifacts/model")
            .await
            .expect("folder deleted");
        assert!(repo.get("1/run/artifacts/model/MLmodel").await.is_err());
        let missing = repo
            .delete("1/run/artifacts/model")
            .await
            .expect_err("gone");
        assert!(
            matches!(missing, Error::Mlflow(e) if e.code == ctflow_core::ErrorCode::ResourceDoesNotExist)
        );
    }

    /// A repository over one in-memory store, with recorded multipart uploads or not.
    fn in_memory(recorded: bool) -> (ObjectStoreArtifacts, Arc<InMemory>) {
        let store = Arc::new(InMemory::new());
        let repo =
            ObjectStoreArtifacts::new(store.clone(), "p", "s3://b/p".into()).expect("prefix");
        let repo = match recorded {
            true => repo.with_recorded_uploads(store.clone()),
            false => repo,
        };
        (repo, store)
    }

    async fn records(store: &InMemory) -> Vec<ObjectPath> {
        store
            .list(Some(&ObjectPath::from("p/.ctflow-uploads")))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .expect("listed")
    }

    #[tokio::test]
    async fn objects_larger_than_a_part_go_up_in_parts() {
        for recorded in [false, true] {
            let (repo, store) = in_memory(recorded);
            large_objects_round_trip(&repo).await;
            assert!(
                records(&store).await.is_empty(),
                "finished uploads leave no record"
            );
        }
    }

    #[tokio::test]
    async fn uploads_cut_off_by_a_crash_are_aborted_and_never_shown() {
        let (repo, store) = in_memory(true);
        // A writer that died after starting: its upload and record stay behind.
        let location = ObjectPath::from("p/1/run/artifacts/model.bin");
        let uploads: Arc<dyn MultipartStore> = store.clone();
        let (id, _, _) = repo
            .begin_upload(&uploads, &location)
            .await
            .expect("started");
        uploads
            .put_part(&location, &id, 0, PutPayload::from(vec![1u8; 16]))
            .await
            .expect("a part went up");
        assert_eq!(records(&store).await.len(), 1);

        // The record is hidden from the artifact API.
        let root: Vec<String> = repo
            .list("")
            .await
            .expect("list")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert!(!root.iter().any(|name| name == UPLOADS_FOLDER), "{root:?}");
        assert!(repo.get(".ctflow-uploads").await.is_err());
        assert!(repo.list(".ctflow-uploads").await.is_err());
        assert!(repo.put(".ctflow-uploads/x", body(b"x")).await.is_err());

        // A recent record may be a live writer's; an old one is aborted.
        let fresh = repo
            .abort_abandoned_uploads(Duration::from_secs(3600))
            .await
            .expect("swept");
        assert!(fresh.is_empty());
        let aborted = repo
            .abort_abandoned_uploads(Duration::ZERO)
            .await
            .expect("swept");
        assert_eq!(aborted, ["p/1/run/artifacts/model.bin"]);
        assert!(records(&store).await.is_empty());
        let gone = uploads
            .put_part(&location, &id, 1, PutPayload::from(vec![2u8; 16]))
            .await;
        assert!(gone.is_err(), "the upload was aborted");
        assert!(
            repo.get("1/run/artifacts/model.bin").await.is_err(),
            "nothing was completed"
        );
    }

    async fn large_objects_round_trip(repo: &ObjectStoreArtifacts) {
        let big: Vec<u8> = (0..PART_SIZE * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let leaked: &'static [u8] = Box::leak(big.clone().into_boxed_slice());
        assert_eq!(
            repo.put("model/weights.bin", body(leaked))
                .await
                .expect("put"),
            big.len() as u64
        );
        assert_eq!(read_all(repo, "model/weights.bin").await, big);
        // Exactly one part's worth goes up as a multipart upload too.
        let exact: &'static [u8] = Box::leak(vec![7u8; PART_SIZE].into_boxed_slice());
        repo.put("model/exact.bin", body(exact)).await.expect("put");
        assert_eq!(read_all(repo, "model/exact.bin").await.len(), PART_SIZE);
    }

    #[tokio::test]
    async fn paths_cannot_leave_the_prefix() {
        let client: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let repo = ObjectStoreArtifacts::new(client, "p", "s3://b/p".into()).expect("prefix");
        for bad in ["../x", "a/../../x", "/etc/passwd", "a\\b", "%2e%2e/x"] {
            assert!(repo.put(bad, body(b"x")).await.is_err(), "{bad}");
            assert!(repo.get(bad).await.is_err(), "{bad}");
            assert!(repo.delete(bad).await.is_err(), "{bad}");
        }
        assert!(repo.delete("").await.is_err(), "the root cannot be deleted");
        assert!(ObjectStoreArtifacts::new(Arc::new(InMemory::new()), "../up", "x".into()).is_err());
        assert_eq!(
            ObjectUrl::parse("s3://bucket/a/b/"),
            Some(ObjectUrl::S3 {
                bucket: "bucket",
                prefix: "a/b"
            })
        );
        assert_eq!(
            ObjectUrl::parse("s3://bucket"),
            Some(ObjectUrl::S3 {
                bucket: "bucket",
                prefix: ""
            })
        );
        assert_eq!(ObjectUrl::parse("s3:///x"), None);
        assert_eq!(ObjectUrl::parse("/local"), None);
        // Google Cloud Storage is not supported: a gs:// URL is not taken for a folder.
        assert_eq!(ObjectUrl::parse("gs://models/ml/"), None);
        assert_eq!(
            ObjectUrl::parse("wasbs://artifacts@acct.blob.core.windows.net/mlflow"),
            Some(ObjectUrl::Azure {
                container: "artifacts",
                account: Some("acct"),
                prefix: "mlflow"
            })
        );
        assert_eq!(
            ObjectUrl::parse("az://artifacts"),
            Some(ObjectUrl::Azure {
                container: "artifacts",
                account: None,
                prefix: ""
            })
        );
        assert_eq!(ObjectUrl::parse("wasbs://nocontainer/x"), None);
        assert_eq!(ObjectUrl::parse("ctflow-data/artifacts"), None);
        assert_eq!(ObjectUrl::parse("file:///tmp/x"), None);
    }
}
