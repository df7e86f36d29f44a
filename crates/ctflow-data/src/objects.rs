//! Training data on S3-compatible object storage (`s3://bucket/prefix/*.csv`): listing a
//! glob, digesting objects by streaming them, and checking them again.
//!
//! Object storage is configured as the AWS tools and MLflow configure it: `AWS_*`
//! variables (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL`) and MLflow's
//! `MLFLOW_S3_ENDPOINT_URL` for S3-compatible servers such as MinIO.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::{Content, DataError, Digester, Found, delimiter};

/// Objects digested at once: each is one streaming GET, bound by the network.
pub(crate) const PARALLEL_READS: usize = 8;

/// Object-store clients by bucket, built once and shared by every clone.
#[derive(Debug, Default, Clone)]
pub struct ObjectStores {
    clients: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

impl ObjectStores {
    /// The client for a bucket, configured from the environment on first use.
    pub fn client(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, DataError> {
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

/// A read client for one bucket, configured as the AWS tools and MLflow configure theirs.
fn s3_client(bucket: &str) -> Result<Arc<dyn ObjectStore>, DataError> {
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
        .map_err(|e| DataError::Store {
            location: format!("s3://{bucket}"),
            message: e.to_string(),
        })?;
    Ok(Arc::new(client))
}

/// Splits `bucket/key` of an `s3://` URL.
pub fn split_s3(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

fn has_wildcard(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// An `s3://bucket/key-glob` taken apart: the listing prefix is the key's fixed part,
/// before the first component with a wildcard (a key without any names one object,
/// listed through its folder).
#[derive(Debug)]
pub struct ObjectGlob {
    /// The bucket.
    pub bucket: String,
    /// The prefix to list.
    pub prefix: object_store::path::Path,
    /// The pattern keys must match (`*` stays within one folder).
    pub pattern: glob::Pattern,
}

impl ObjectGlob {
    /// Parses an `s3://` glob; anything else with a scheme is refused.
    pub fn parse(text: &str) -> Result<ObjectGlob, DataError> {
        let Some((bucket, key)) = split_s3(text) else {
            return Err(DataError::Pattern {
                pattern: text.to_string(),
                message: "not a supported location: use a path or s3://bucket/prefix".into(),
            });
        };
        let pattern = glob::Pattern::new(key).map_err(|e| DataError::Pattern {
            pattern: text.to_string(),
            message: e.to_string(),
        })?;
        let components: Vec<&str> = key.split('/').filter(|c| !c.is_empty()).collect();
        let fixed = components.iter().take_while(|c| !has_wildcard(c)).count();
        let fixed = if fixed == components.len() {
            fixed.saturating_sub(1)
        } else {
            fixed
        };
        Ok(ObjectGlob {
            bucket: bucket.to_string(),
            prefix: object_store::path::Path::from(components[..fixed].join("/")),
            pattern,
        })
    }

    /// Whether a listed key matches.
    pub fn matches(&self, key: &str) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        self.pattern.matches_with(key, options)
    }

    /// The matching objects, as the store lists them.
    pub async fn list(&self, client: &dyn ObjectStore) -> Result<Vec<ObjectMeta>, DataError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listed: Vec<ObjectMeta> =
            client
                .list(prefix)
                .try_collect()
                .await
                .map_err(|e| DataError::Store {
                    location: format!("s3://{}/{}", self.bucket, self.prefix),
                    message: e.to_string(),
                })?;
        Ok(listed
            .into_iter()
            .filter(|o| self.matches(o.location.as_ref()))
            .collect())
    }
}

/// What identifies one version of an object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectIdentity {
    size: u64,
    modified_ms: i64,
    e_tag: Option<String>,
}

impl ObjectIdentity {
    fn of(meta: &ObjectMeta) -> ObjectIdentity {
        ObjectIdentity {
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
            e_tag: meta.e_tag.clone(),
        }
    }
}

/// Digests, rows and schemas of objects already read, keyed by URL and identity.
pub(crate) type ObjectCache = Mutex<HashMap<String, (ObjectIdentity, Content)>>;

/// Streams one object through a digester; `None` when there is no such object. With an
/// entity tag the GET must return that version (a rewrite in between is refused, not
/// mixed up with the listing's size and time).
async fn read_object(
    client: &dyn ObjectStore,
    url: &str,
    location: &object_store::path::Path,
    e_tag: Option<&str>,
) -> Result<Option<Content>, DataError> {
    let options = object_store::GetOptions {
        if_match: e_tag.map(str::to_string),
        ..object_store::GetOptions::default()
    };
    let store_error = |e: object_store::Error| DataError::Store {
        location: url.to_string(),
        message: e.to_string(),
    };
    let fetched = match client.get_opts(location, options).await {
        Ok(fetched) => fetched,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(object_store::Error::Precondition { .. }) => {
            return Err(DataError::Changed(format!(
                "training data object {url} was rewritten while the snapshot read it"
            )));
        }
        Err(other) => return Err(store_error(other)),
    };
    let mut digester = Digester::new();
    let mut stream = fetched.into_stream();
    while let Some(chunk) = stream.next().await {
        digester.update(&chunk.map_err(store_error)?);
    }
    Ok(Some(
        digester.finish(delimiter(Path::new(location.as_ref()))),
    ))
}

/// The objects one `s3://` glob matches, digested (or taken from the cache).
pub(crate) async fn found(
    text: &str,
    stores: &ObjectStores,
    cache: Arc<ObjectCache>,
) -> Result<Vec<Found>, DataError> {
    let glob = ObjectGlob::parse(text)?;
    let client = stores.client(&glob.bucket)?;
    let listed = glob.list(client.as_ref()).await?;
    let reads = listed.into_iter().map(|meta| {
        let (client, cache, bucket) = (client.clone(), Arc::clone(&cache), glob.bucket.clone());
        async move {
            let url = format!("s3://{bucket}/{}", meta.location);
            let identity = ObjectIdentity::of(&meta);
            let cached = {
                let entries = cache.lock().unwrap_or_else(|e| e.into_inner());
                entries
                    .get(&url)
                    .filter(|(known, _)| *known == identity)
                    .map(|(_, content)| content.clone())
            };
            let content = match cached {
                Some(content) => content,
                None => {
                    let content = read_object(
                        client.as_ref(),
                        &url,
                        &meta.location,
                        meta.e_tag.as_deref(),
                    )
                    .await?
                    .ok_or_else(|| {
                        DataError::Changed(format!(
                            "training data object {url} was deleted while the snapshot read it"
                        ))
                    })?;
                    cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(url.clone(), (identity.clone(), content.clone()));
                    content
                }
            };
            Ok::<Found, DataError>(Found {
                path: url.clone(),
                uri: url,
                size: identity.size,
                modified: identity.modified_ms,
                e_tag: identity.e_tag,
                content,
            })
        }
    });
    futures::stream::iter(reads)
        .buffered(PARALLEL_READS)
        .try_collect()
        .await
}

fn object_of(
    stores: &ObjectStores,
    uri: &str,
) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path), DataError> {
    let (bucket, key) = split_s3(uri).ok_or_else(|| DataError::Pattern {
        pattern: uri.to_string(),
        message: "not a supported location: use a path or s3://bucket/key".into(),
    })?;
    Ok((stores.client(bucket)?, object_store::path::Path::from(key)))
}

/// Reads an object in full again: its digest now, or `None` when it is gone.
pub(crate) async fn digest_now(
    stores: &ObjectStores,
    uri: &str,
) -> Result<Option<String>, DataError> {
    let (client, location) = object_of(stores, uri)?;
    let content = read_object(client.as_ref(), uri, &location, None).await?;
    Ok(content.map(|c| c.sha256))
}

/// What the store says about an object now, without reading it (`None`: gone).
pub(crate) async fn identity_now(
    stores: &ObjectStores,
    uri: &str,
) -> Result<Option<(u64, Option<String>)>, DataError> {
    let (client, location) = object_of(stores, uri)?;
    match client.head(&location).await {
        Ok(meta) => Ok(Some((meta.size, meta.e_tag))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(DataError::Store {
            location: uri.to_string(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_globs_split_into_bucket_prefix_and_pattern() {
        assert_eq!(split_s3("s3://b/in/x.csv"), Some(("b", "in/x.csv")));
        assert_eq!(split_s3("s3://b"), Some(("b", "")));
        assert_eq!(split_s3("s3:///x"), None);
        let glob = ObjectGlob::parse("s3://bucket/data/in/*.csv").expect("parses");
        assert_eq!(
            (glob.bucket.as_str(), glob.prefix.as_ref()),
            ("bucket", "data/in")
        );
        assert!(glob.matches("data/in/day1.csv"));
        assert!(!glob.matches("data/in/deeper/day1.csv"));
        assert!(!glob.matches("data/in/notes.txt"));
        let one = ObjectGlob::parse("s3://bucket/ref/reference.csv").expect("parses");
        assert_eq!(one.prefix.as_ref(), "ref");
        assert!(one.matches("ref/reference.csv") && !one.matches("ref/reference.csv.bak"));
        let top = ObjectGlob::parse("s3://bucket/*.csv").expect("parses");
        assert_eq!(top.prefix.as_ref(), "");
        assert!(ObjectGlob::parse("gs://bucket/x").is_err());
        assert!(ObjectGlob::parse("s3://bucket/[x").is_err());
    }
}
