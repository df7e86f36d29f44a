//! Where watched data lives: local files matched by a glob, or objects under an
//! S3-compatible prefix (`s3://bucket/incoming/*.csv`), which are polled.
//!
//! Object storage is configured as the AWS tools and MLflow configure it: `AWS_*`
//! variables (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL`) and MLflow's
//! `MLFLOW_S3_ENDPOINT_URL` for S3-compatible servers such as MinIO.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::Error;
use crate::reader::{RawTable, read_raw, read_raw_bytes};
use crate::watch::normalize;

/// One data file or object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// The local path, or the object's `s3://bucket/key` URL.
    pub name: String,
    /// Milliseconds since it was last written.
    pub age_ms: i64,
}

/// Object-store clients by bucket, built once.
#[derive(Default, Clone)]
pub struct ObjectStores {
    clients: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

impl ObjectStores {
    fn client(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, Error> {
        // NB: the map only caches clients; a poisoned lock still holds valid ones.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(bucket) {
            return Ok(client.clone());
        }
        let client = s3_client(bucket)?;
        clients.insert(bucket.to_string(), client.clone());
        Ok(client)
    }
}

/// A read client for one bucket, configured from the environment as the AWS tools and
/// MLflow configure theirs (`AWS_*`; `MLFLOW_S3_ENDPOINT_URL` for S3-compatible servers).
fn s3_client(bucket: &str) -> Result<Arc<dyn ObjectStore>, Error> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    // HTTPS needs a process-wide rustls provider (ring, as everywhere in ctflow);
    // installing one where one is set already changes nothing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(endpoint) = std::env::var("MLFLOW_S3_ENDPOINT_URL") {
        builder = builder.with_endpoint(endpoint);
    }
    let plain_http = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let client = builder
        .with_allow_http(plain_http)
        .build()
        .map_err(|e| Error::Source(format!("cannot read the bucket '{bucket}': {e}")))?;
    Ok(Arc::new(client))
}

/// A glob of data files or objects.
pub enum DataSource {
    Local {
        pattern: String,
    },
    Object {
        bucket: String,
        client: Arc<dyn ObjectStore>,
        /// The key's fixed part, before the first component with a wildcard.
        prefix: object_store::path::Path,
        pattern: glob::Pattern,
    },
}

/// Splits `bucket/key` of an `s3://` URL.
fn split_s3(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

fn has_wildcard(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

impl DataSource {
    /// A local path (relative paths resolve against `base`) or an `s3://bucket/key` glob.
    pub fn parse(base: &Path, text: &str, stores: &ObjectStores) -> Result<DataSource, Error> {
        if text.contains("://") {
            let Some((bucket, key)) = split_s3(text) else {
                return Err(Error::Source(format!(
                    "'{text}' is not a supported location: use a path or s3://bucket/prefix"
                )));
            };
            let pattern = glob::Pattern::new(key)
                .map_err(|e| Error::Source(format!("'{text}' is not a valid glob: {e}")))?;
            let fixed: Vec<&str> = key
                .split('/')
                .take_while(|c| !has_wildcard(c))
                .filter(|c| !c.is_empty())
                .collect();
            // A key without wildcards names one object: its folder is the prefix.
            let fixed = if fixed.len() == key.split('/').filter(|c| !c.is_empty()).count() {
                &fixed[..fixed.len().saturating_sub(1)]
            } else {
                &fixed[..]
            };
            return Ok(DataSource::Object {
                bucket: bucket.to_string(),
                client: stores.client(bucket)?,
                prefix: object_store::path::Path::from(fixed.join("/")),
                pattern,
            });
        }
        Ok(DataSource::Local {
            pattern: normalize(&base.join(text)).to_string_lossy().to_string(),
        })
    }

    pub fn is_object(&self) -> bool {
        matches!(self, DataSource::Object { .. })
    }

    /// The matching files, in name order.
    pub async fn list(&self) -> Result<Vec<DataFile>, Error> {
        let now = ctflow_core::now_ms();
        let mut files = match self {
            DataSource::Local { pattern } => {
                let paths = glob::glob(pattern)
                    .map_err(|e| Error::Source(format!("'{pattern}' is not a valid glob: {e}")))?;
                paths
                    .flatten()
                    .filter_map(|p| {
                        let meta = p.metadata().ok().filter(|m| m.is_file())?;
                        let modified = meta
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                        Some(DataFile {
                            name: p.to_string_lossy().to_string(),
                            age_ms: now.saturating_sub(modified),
                        })
                    })
                    .collect::<Vec<_>>()
            }
            DataSource::Object {
                bucket,
                client,
                prefix,
                pattern,
            } => {
                let options = glob::MatchOptions {
                    require_literal_separator: true,
                    ..glob::MatchOptions::new()
                };
                let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
                let objects: Vec<object_store::ObjectMeta> = client
                    .list(prefix)
                    .try_collect()
                    .await
                    .map_err(|e| Error::Source(format!("cannot list s3://{bucket}: {e}")))?;
                objects
                    .into_iter()
                    .filter(|o| pattern.matches_with(o.location.as_ref(), options))
                    .map(|o| DataFile {
                        name: format!("s3://{bucket}/{}", o.location),
                        age_ms: now.saturating_sub(o.last_modified.timestamp_millis()),
                    })
                    .collect()
            }
        };
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Reads one file this source listed.
    pub async fn read(&self, name: &str) -> Result<RawTable, Error> {
        match self {
            DataSource::Local { .. } => read_raw(Path::new(name)),
            DataSource::Object { bucket, client, .. } => {
                let key = split_s3(name)
                    .filter(|(b, _)| b == bucket)
                    .map(|(_, key)| key)
                    .ok_or_else(|| Error::Source(format!("{name} is not in s3://{bucket}")))?;
                read_object(client.as_ref(), name, key).await
            }
        }
    }
}

async fn read_object(client: &dyn ObjectStore, name: &str, key: &str) -> Result<RawTable, Error> {
    use object_store::ObjectStoreExt;
    let location = object_store::path::Path::from(key);
    let fetched = client.get(&location).await;
    let bytes = match fetched {
        Ok(result) => result.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(|e| Error::Read {
        path: name.to_string(),
        message: e.to_string(),
    })?;
    read_raw_bytes(bytes, name)
}

/// Reads one data file named by a path (relative to `base`) or an `s3://` URL.
pub async fn read_one(base: &Path, text: &str, stores: &ObjectStores) -> Result<RawTable, Error> {
    match split_s3(text) {
        Some((bucket, key)) => read_object(stores.client(bucket)?.as_ref(), text, key).await,
        None if text.contains("://") => Err(Error::Source(format!(
            "'{text}' is not a supported location: use a path or s3://bucket/key"
        ))),
        None => read_raw(&normalize(&base.join(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_prefix_and_pattern() {
        assert_eq!(split_s3("s3://b/in/x.csv"), Some(("b", "in/x.csv")));
        assert_eq!(split_s3("s3://b"), Some(("b", "")));
        assert_eq!(split_s3("s3:///x"), None);
        let stores = ObjectStores::default();
        let parse = |text: &str| DataSource::parse(Path::new("/base"), text, &stores);
        match parse("s3://bucket/data/in/*.csv").expect("parses") {
            DataSource::Object {
                prefix, pattern, ..
            } => {
                assert_eq!(prefix.as_ref(), "data/in");
                assert!(pattern.matches("data/in/day1.csv"));
            }
            DataSource::Local { .. } => panic!("an object source"),
        }
        match parse("s3://bucket/ref/reference.csv").expect("parses") {
            DataSource::Object { prefix, .. } => assert_eq!(prefix.as_ref(), "ref"),
            DataSource::Local { .. } => panic!("an object source"),
        }
        match parse("in/../data/*.csv").expect("parses") {
            DataSource::Local { pattern } => assert_eq!(pattern, "/base/data/*.csv"),
            DataSource::Object { .. } => panic!("a local source"),
        }
        assert!(parse("gs://bucket/x").is_err());
    }
}
