//! Models through the registry and the artifact proxy: a model URI resolved to the
//! artifacts that hold it, as the MLflow client resolves it, and those artifacts
//! downloaded.

use std::path::Path;

use ctflow_core::registry::{ModelUri, parse_model_uri};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::ct::decode;
use crate::{ClientError, ClientResult, TrackingClient};

/// One file under an artifact URI: its path below it and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    pub path: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    files: Vec<ListedFile>,
}

#[derive(Deserialize)]
struct ListedFile {
    #[serde(default)]
    path: String,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    file_size: Option<u64>,
}

#[derive(Deserialize)]
struct VersionRef {
    version: String,
}

fn model_error(message: impl Into<String>) -> ClientError {
    ClientError::Model(message.into())
}

fn encoded(path: &str) -> String {
    path.split('/')
        .map(|part| {
            percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl TrackingClient {
    /// The version an alias of a registered model points at.
    pub async fn alias_version(&self, name: &str, alias: &str) -> ClientResult<String> {
        #[derive(Deserialize)]
        struct Body {
            model_version: VersionRef,
        }
        let found = self
            .get(
                "registered-models/alias",
                &[("name", name.to_string()), ("alias", alias.to_string())],
            )
            .await?;
        let found: Body = decode("registered-models/alias", found)?;
        Ok(found.model_version.version)
    }

    /// The artifact URI holding a model (`models:/name/version`, `models:/name@alias`,
    /// `models:/name/stage`, `models:/name/latest`, `models:/m-<id>`, `runs:/<run>/path`).
    pub async fn resolve_artifact_uri(&self, uri: &str) -> ClientResult<String> {
        if let Some(rest) = uri.strip_prefix("runs:/") {
            let (run_id, path) = rest
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or((rest, ""));
            let root = self.get_run(run_id).await?.info.artifact_uri;
            return Ok(if path.is_empty() {
                root
            } else {
                format!("{root}/{path}")
            });
        }
        let (name, version) = match parse_model_uri(uri).map_err(|e| model_error(e.message))? {
            ModelUri::LoggedModel(id) => {
                let path = format!("/api/2.0/mlflow/logged-models/{id}");
                let model = self.get_path(&path, &[]).await?;
                return model["model"]["info"]["artifact_uri"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| model_error(format!("logged model {id} has no artifact URI")));
            }
            ModelUri::Version { name, version } => (name, version.to_string()),
            ModelUri::Alias { name, alias } => {
                let version = self.alias_version(&name, &alias).await?;
                (name, version)
            }
            ModelUri::Stage { name, stage } => {
                let version = self
                    .latest_versions(&name, Some(&stage))
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        model_error(format!("no version of '{name}' is in stage {stage}"))
                    })?;
                (name, version.to_string())
            }
            ModelUri::Latest { name } => {
                let version = self
                    .latest_versions(&name, None)
                    .await?
                    .into_iter()
                    .max()
                    .ok_or_else(|| model_error(format!("'{name}' has no versions")))?;
                (name, version.to_string())
            }
        };
        #[derive(Deserialize)]
        struct Download {
            artifact_uri: String,
        }
        let found = self
            .get(
                "model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        let artifact_uri =
            decode::<Download>("model-versions/get-download-uri", found)?.artifact_uri;
        if artifact_uri.starts_with("models:/") || artifact_uri.starts_with("runs:/") {
            return Box::pin(self.resolve_artifact_uri(&artifact_uri)).await;
        }
        Ok(artifact_uri)
    }

    /// The latest version numbers of a model (per stage, or in one stage).
    async fn latest_versions(&self, name: &str, stage: Option<&str>) -> ClientResult<Vec<i64>> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            model_versions: Vec<VersionRef>,
        }
        let body = match stage {
            Some(stage) => json!({ "name": name, "stages": [stage] }),
            None => json!({ "name": name }),
        };
        let endpoint = "registered-models/get-latest-versions";
        let latest: Body = decode(endpoint, self.post(endpoint, &body).await?)?;
        Ok(latest
            .model_versions
            .iter()
            .filter_map(|v| v.version.parse().ok())
            .collect())
    }

    /// The root below `mlflow-artifacts:` of an artifact URI the server proxies.
    fn proxied_root(artifact_uri: &str) -> ClientResult<String> {
        let root = artifact_uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
            model_error(format!(
                "cannot download '{artifact_uri}': only artifacts served by the tracking server (mlflow-artifacts:) are supported"
            ))
        })?;
        Ok(root.trim_matches('/').to_string())
    }

    /// Every file under an artifact URI the server proxies, listed folder by folder.
    pub async fn artifact_files(&self, artifact_uri: &str) -> ClientResult<Vec<ArtifactFile>> {
        let root = Self::proxied_root(artifact_uri)?;
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(relative) = pending.pop() {
            let path = if relative.is_empty() {
                root.clone()
            } else {
                format!("{root}/{relative}")
            };
            let endpoint = "/api/2.0/mlflow-artifacts/artifacts";
            let listing: Listing =
                decode(endpoint, self.get_path(endpoint, &[("path", path)]).await?)?;
            for entry in listing.files {
                let name = entry.path;
                if name.is_empty() || name.contains('/') || name == ".." || name == "." {
                    return Err(model_error(format!(
                        "the server listed an unsafe artifact name '{name}'"
                    )));
                }
                let child = if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                };
                if entry.is_dir {
                    pending.push(child);
                } else {
                    files.push(ArtifactFile {
                        path: child,
                        size: entry.file_size.unwrap_or(0),
                    });
                }
            }
        }
        Ok(files)
    }

    /// Downloads one file under an artifact URI to `target`; `progress` hears of every
    /// chunk's size as it is written.
    pub async fn download_artifact(
        &self,
        artifact_uri: &str,
        file: &str,
        target: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> ClientResult<()> {
        let root = Self::proxied_root(artifact_uri)?;
        let io = |cause: std::io::Error| ClientError::Io {
            path: target.display().to_string(),
            cause,
        };
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            self.base(),
            encoded(&format!("{root}/{file}"))
        );
        let response = self
            .http()
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            // The error JSON (or the body) of the refusal, as for any other request.
            let endpoint = format!("artifacts/{file}");
            let refused = self.handle(&endpoint, response).await.err();
            return Err(refused.unwrap_or(ClientError::Http {
                endpoint,
                status: status.as_u16(),
                body: String::new(),
            }));
        }
        let mut out = tokio::fs::File::create(target).await.map_err(io)?;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            out.write_all(&chunk).await.map_err(io)?;
            progress(chunk.len() as u64);
        }
        out.flush().await.map_err(io)?;
        Ok(())
    }

    /// The files under an artifact URI, refusing one that holds none.
    pub async fn files_to_download(&self, artifact_uri: &str) -> ClientResult<Vec<ArtifactFile>> {
        let files = self.artifact_files(artifact_uri).await?;
        if files.is_empty() {
            return Err(model_error(format!(
                "nothing to download at '{artifact_uri}'"
            )));
        }
        Ok(files)
    }

    /// Downloads `files` (listed under `artifact_uri`) into `dest`; `progress` hears of
    /// each file's path and of every chunk's size.
    pub async fn download_files(
        &self,
        artifact_uri: &str,
        files: &[ArtifactFile],
        dest: &Path,
        progress: &mut (dyn FnMut(&str, u64) + Send),
    ) -> ClientResult<()> {
        for file in files {
            progress(&file.path, 0);
            self.download_artifact(
                artifact_uri,
                &file.path,
                &dest.join(&file.path),
                &mut |bytes| progress(&file.path, bytes),
            )
            .await?;
        }
        Ok(())
    }

    /// Downloads every file under an artifact URI into `dest`; how many there were.
    pub async fn download_artifacts(&self, artifact_uri: &str, dest: &Path) -> ClientResult<usize> {
        let files = self.files_to_download(artifact_uri).await?;
        self.download_files(artifact_uri, &files, dest, &mut |_, _| {})
            .await?;
        Ok(files.len())
    }
}
