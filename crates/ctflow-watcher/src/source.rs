//! Where watched data lives: local files matched by a glob, or objects under an
//! S3-compatible prefix (`s3://bucket/incoming/*.csv`), which are polled.
//!
//! Object storage is configured as the AWS tools and MLflow configure it: `AWS_*`
//! variables (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL`) and MLflow's
//! `MLFLOW_S3_ENDPOINT_URL` for S3-compatible servers such as MinIO.

use std::path::Path;
use std::sync::Arc;

pub use ctflow_data::ObjectStores;
use ctflow_data::{DataError, ObjectGlob, split_s3};
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

fn source_error(error: DataError) -> Error {
    Error::Source(error.to_string())
}

/// A glob of data files or objects.
pub enum DataSource {
    Local {
        pattern: String,
    },
    Object {
        glob: ObjectGlob,
        client: Arc<dyn ObjectStore>,
    },
}

impl DataSource {
    /// A local path (relative paths resolve against `base`) or an `s3://bucket/key` glob.
    pub fn parse(base: &Path, text: &str, stores: &ObjectStores) -> Result<DataSource, Error> {
        if text.contains("://") {
            let glob = ObjectGlob::parse(text).map_err(source_error)?;
            let client = stores.client(&glob.bucket).map_err(source_error)?;
            return Ok(DataSource::Object { glob, client });
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
            DataSource::Object { glob, client } => glob
                .list(client.as_ref())
                .await
                .map_err(source_error)?
                .into_iter()
                .map(|o| DataFile {
                    name: format!("s3://{}/{}", glob.bucket, o.location),
                    age_ms: now.saturating_sub(o.last_modified.timestamp_millis()),
                })
                .collect(),
        };
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Reads one file this source listed.
    pub async fn read(&self, name: &str) -> Result<RawTable, Error> {
        match self {
            DataSource::Local { .. } => read_raw(Path::new(name)),
            DataSource::Object { glob, client } => {
                let bucket = &glob.bucket;
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
        Some((bucket, key)) => {
            let client = stores.client(bucket).map_err(source_error)?;
            read_object(client.as_ref(), text, key).await
        }
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
    fn paths_and_s3_globs_are_told_apart() {
        let stores = ObjectStores::default();
        let parse = |text: &str| DataSource::parse(Path::new("/base"), text, &stores);
        match parse("s3://bucket/data/in/*.csv").expect("parses") {
            DataSource::Object { glob, .. } => {
                assert_eq!(glob.prefix.as_ref(), "data/in");
                assert!(glob.matches("data/in/day1.csv"));
            }
            DataSource::Local { .. } => panic!("an object source"),
        }
        match parse("in/../data/*.csv").expect("parses") {
            DataSource::Local { pattern } => assert_eq!(pattern, "/base/data/*.csv"),
            DataSource::Object { .. } => panic!("a local source"),
        }
        assert!(parse("gs://bucket/x").is_err());
    }
}
