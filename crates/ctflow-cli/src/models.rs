//! `ctflow models ...`: the registry from the command line, the promotion ledger, and
//! downloading a model by URI.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::client::TrackingClient;
use crate::commands::{print_json, print_table, text};
use crate::{ClientArgs, OutputFormat};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List registered models.
    List {
        /// A registry filter, e.g. "name LIKE 'iris%'".
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// List the versions of a registered model.
    Versions { name: String },
    /// Point an alias at a version, or remove it.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Move a version to a stage (None, Staging, Production, Archived).
    Stage {
        name: String,
        version: String,
        stage: String,
        /// Archive the versions currently in the target stage.
        #[arg(long)]
        archive_existing: bool,
    },
    /// The promotion ledger: every alias move and stage transition of a model.
    History { name: String },
    /// Move `champion` (or another alias) back to its previous version, per the ledger.
    Rollback {
        name: String,
        #[arg(long, default_value = "champion")]
        alias: String,
        /// Leave stages as they are (by default the restored version becomes
        /// Production and the one rolled back from Archived).
        #[arg(long)]
        no_stages: bool,
    },
    /// Download a model's artifacts: models:/name/version, models:/name@alias,
    /// models:/name/stage, models:/m-<id> or runs:/<run>/path.
    Download { uri: String, dest: PathBuf },
    /// Serve a model with MLflow's scoring protocol: POST /invocations (dataframe_split,
    /// dataframe_records, instances, inputs as JSON, or CSV), GET /ping, /health, /version.
    Serve {
        /// models:/name@alias, models:/name/version, models:/m-<id>, runs:/<run>/path, or
        /// a local folder holding an MLmodel file.
        #[arg(short = 'm', long = "model-uri")]
        model_uri: String,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(short, long, default_value_t = 5000)]
        port: u16,
        /// Python processes predicting in parallel, each with the model loaded.
        #[arg(short, long, default_value_t = 1)]
        workers: usize,
        /// `local` (the python3 on PATH) or `virtualenv` / `uv` (the model's
        /// python_env.yaml, built once and cached under $CTFLOW_ENV_DIR).
        #[arg(long, default_value = "local")]
        env_manager: String,
        /// Serving `models:/name@alias`: how often the alias is looked up; when it moves,
        /// the new version is loaded and warmed up before it takes traffic.
        #[arg(long, default_value = "10s", value_parser = crate::services::parse_duration)]
        follow_interval: std::time::Duration,
        /// Most concurrent requests a worker answers with one model call (1: none).
        #[arg(long, default_value_t = 32)]
        max_batch: usize,
        /// How long a worker waits for more requests to join a model call (0: it takes
        /// only those already waiting).
        #[arg(long, default_value = "0s", value_parser = crate::services::parse_duration)]
        batch_wait: std::time::Duration,
        /// Serving `models:/name@alias` before the alias exists: listen at once and answer
        /// 503 (so a readiness probe holds traffic) until it points at a version.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum AliasCommand {
    Set {
        name: String,
        alias: String,
        version: String,
    },
    Delete {
        name: String,
        alias: String,
    },
}

async fn search_all_get(
    client: &TrackingClient,
    endpoint: &str,
    mut query: Vec<(&str, String)>,
    key: &str,
) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    loop {
        let page = client.get(endpoint, &query).await?;
        if let Some(Value::Array(found)) = page.get(key) {
            items.extend(found.iter().cloned());
        }
        match page.get("next_page_token").and_then(Value::as_str) {
            Some(token) if !token.is_empty() => {
                query.retain(|(k, _)| *k != "page_token");
                query.push(("page_token", token.to_string()));
            }
            _ => return Ok(items),
        }
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

pub async fn run(command: ModelsCommand, args: &ClientArgs) -> Result<()> {
    let client = crate::client::connect(&args.tracking_uri)?;
    match command {
        ModelsCommand::List { filter } => {
            let models = search_all_get(
                &client,
                "registered-models/search",
                vec![("filter", filter), ("max_results", "1000".into())],
                "registered_models",
            )
            .await?;
            if args.output == OutputFormat::Json {
                return print_json(&Value::Array(models));
            }
            let rows: Vec<Vec<String>> = models
                .iter()
                .map(|m| {
                    let latest = m["latest_versions"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|v| v["version"].as_str())
                                .max_by_key(|v| v.parse::<i64>().unwrap_or(0))
                                .unwrap_or("")
                                .to_string()
                        })
                        .unwrap_or_default();
                    let aliases = m["aliases"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|a| format!("{}={}", text(a, "alias"), text(a, "version")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![text(m, "name"), latest, aliases, text(m, "description")]
                })
                .collect();
            print_table(&["Name", "Latest Version", "Aliases", "Description"], &rows);
        }
        ModelsCommand::Versions { name } => {
            let versions = search_all_get(
                &client,
                "model-versions/search",
                vec![
                    ("filter", format!("name = {}", quote(&name))),
                    ("order_by", "version_number DESC".into()),
                    ("max_results", "10000".into()),
                ],
                "model_versions",
            )
            .await?;
            let model = client
                .get("registered-models/get", &[("name", name.clone())])
                .await?;
            let aliases = model["registered_model"]["aliases"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if args.output == OutputFormat::Json {
                return print_json(&Value::Array(versions));
            }
            let rows: Vec<Vec<String>> = versions
                .iter()
                .map(|v| {
                    let version = text(v, "version");
                    let on_it: Vec<String> = aliases
                        .iter()
                        .filter(|a| text(a, "version") == version)
                        .map(|a| text(a, "alias"))
                        .collect();
                    vec![
                        version,
                        text(v, "current_stage"),
                        on_it.join(","),
                        text(v, "run_id"),
                        text(v, "source"),
                    ]
                })
                .collect();
            print_table(&["Version", "Stage", "Aliases", "Run Id", "Source"], &rows);
        }
        ModelsCommand::Alias {
            command:
                AliasCommand::Set {
                    name,
                    alias,
                    version,
                },
        } => {
            client
                .post(
                    "registered-models/alias",
                    &json!({ "name": name, "alias": alias, "version": version }),
                )
                .await?;
            match args.output {
                OutputFormat::Json => {
                    print_json(&json!({ "name": name, "alias": alias, "version": version }))?
                }
                OutputFormat::Table => {
                    println!("Alias '{alias}' of '{name}' now points at version {version}")
                }
            }
        }
        ModelsCommand::Alias {
            command: AliasCommand::Delete { name, alias },
        } => {
            client
                .delete(
                    "registered-models/alias",
                    &json!({ "name": name, "alias": alias }),
                )
                .await?;
            match args.output {
                OutputFormat::Json => {
                    print_json(&json!({ "name": name, "alias": alias, "deleted": true }))?
                }
                OutputFormat::Table => println!("Deleted alias '{alias}' of '{name}'"),
            }
        }
        ModelsCommand::Stage {
            name,
            version,
            stage,
            archive_existing,
        } => {
            let response = client
                .post(
                    "model-versions/transition-stage",
                    &json!({ "name": name, "version": version, "stage": stage, "archive_existing_versions": archive_existing }),
                )
                .await?;
            match args.output {
                OutputFormat::Json => print_json(&response["model_version"])?,
                OutputFormat::Table => println!(
                    "Version {version} of '{name}' is now in stage {}",
                    text(&response["model_version"], "current_stage")
                ),
            }
        }
        ModelsCommand::Rollback {
            name,
            alias,
            no_stages,
        } => {
            let path = format!(
                "/api/ctflow/v1/models/{}/rollback",
                percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
            );
            let body = serde_json::json!({ "alias": alias, "stages": !no_stages });
            let moved = client
                .send_path(reqwest::Method::POST, &path, &body)
                .await?;
            if args.output == OutputFormat::Json {
                return print_json(&moved);
            }
            println!(
                "{name}@{alias}: version {} -> version {}",
                text(&moved, "from_version"),
                text(&moved, "to_version")
            );
        }
        ModelsCommand::History { name } => {
            let path = format!(
                "/api/ctflow/v1/models/{}/history",
                percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
            );
            let history = client.get_path(&path, &[]).await?;
            let entries = history["entries"].as_array().cloned().unwrap_or_default();
            if args.output == OutputFormat::Json {
                return print_json(&Value::Array(entries));
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let change = match text(e, "action").as_str() {
                        "alias_set" => format!(
                            "@{}: {} -> {}",
                            text(e, "alias"),
                            or_dash(text(e, "from_version")),
                            text(e, "to_version")
                        ),
                        "alias_deleted" => {
                            format!("@{}: {} -> -", text(e, "alias"), text(e, "from_version"))
                        }
                        "stage_transition" => format!(
                            "v{}: {} -> {}",
                            text(e, "to_version"),
                            text(e, "from_stage"),
                            text(e, "to_stage")
                        ),
                        _ => format!("v{}", text(e, "to_version")),
                    };
                    vec![
                        text(e, "timestamp"),
                        text(e, "action"),
                        change,
                        text(e, "user"),
                        text(e, "comment"),
                    ]
                })
                .collect();
            print_table(&["Time (ms)", "Action", "Change", "User", "Comment"], &rows);
        }
        ModelsCommand::Serve {
            model_uri,
            host,
            port,
            workers,
            env_manager,
            follow_interval,
            max_batch,
            batch_wait,
            wait,
        } => {
            let options = crate::serve::ServeOptions {
                workers,
                env_manager,
                follow_interval,
                batching: ctflow_serving::Batching {
                    max_batch: max_batch.max(1),
                    wait: batch_wait,
                },
                metrics: std::sync::Arc::new(ctflow_serving::ServingMetrics::new()),
            };
            let listener = tokio::net::TcpListener::bind((host, port))
                .await
                .with_context(|| format!("cannot listen on {host}:{port}"))?;
            println!("Serving {model_uri} on http://{}", listener.local_addr()?);
            crate::serve::serve(
                client,
                &model_uri,
                listener,
                options,
                wait,
                crate::shutdown_signal(),
            )
            .await?
        }
        ModelsCommand::Download { uri, dest } => {
            let artifact_uri = resolve_artifact_uri(&client, &uri).await?;
            let files = download(&client, &artifact_uri, &dest).await?;
            match args.output {
                OutputFormat::Json => print_json(
                    &json!({ "uri": uri, "artifact_uri": artifact_uri, "dest": dest, "files": files }),
                )?,
                OutputFormat::Table => {
                    println!("Downloaded {files} files of {uri} to {}", dest.display())
                }
            }
        }
    }
    Ok(())
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// Resolves a model URI to the artifact URI holding its files, as the MLflow client does.
pub(crate) async fn resolve_artifact_uri(client: &TrackingClient, uri: &str) -> Result<String> {
    if let Some(rest) = uri.strip_prefix("runs:/") {
        let (run_id, path) = rest
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((rest, ""));
        let run = client
            .get("runs/get", &[("run_id", run_id.to_string())])
            .await?;
        let root = text(&run["run"]["info"], "artifact_uri");
        return Ok(if path.is_empty() {
            root
        } else {
            format!("{root}/{path}")
        });
    }
    let parsed = ctflow_core::registry::parse_model_uri(uri).map_err(|e| anyhow!(e.message))?;
    use ctflow_core::registry::ModelUri;
    let (name, version) = match parsed {
        ModelUri::LoggedModel(id) => {
            let model = client
                .get_path(&format!("/api/2.0/mlflow/logged-models/{id}"), &[])
                .await?;
            return Ok(text(&model["model"]["info"], "artifact_uri"));
        }
        ModelUri::Version { name, version } => (name, version.to_string()),
        ModelUri::Alias { name, alias } => {
            let found = client
                .get(
                    "registered-models/alias",
                    &[("name", name.clone()), ("alias", alias)],
                )
                .await?;
            (name, text(&found["model_version"], "version"))
        }
        ModelUri::Stage { name, stage } => {
            let latest = client
                .post(
                    "registered-models/get-latest-versions",
                    &json!({ "name": name, "stages": [stage] }),
                )
                .await?;
            let version = latest["model_versions"]
                .as_array()
                .and_then(|v| v.first())
                .map(|v| text(v, "version"));
            (
                name.clone(),
                version.ok_or_else(|| anyhow!("no version of '{name}' is in stage {stage}"))?,
            )
        }
        ModelUri::Latest { name } => {
            let latest = client
                .post(
                    "registered-models/get-latest-versions",
                    &json!({ "name": name }),
                )
                .await?;
            let version = latest["model_versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["version"].as_str()?.parse::<i64>().ok())
                .max();
            (
                name.clone(),
                version
                    .ok_or_else(|| anyhow!("'{name}' has no versions"))?
                    .to_string(),
            )
        }
    };
    let found = client
        .get(
            "model-versions/get-download-uri",
            &[("name", name), ("version", version)],
        )
        .await?;
    let artifact_uri = text(&found, "artifact_uri");
    if artifact_uri.starts_with("models:/") || artifact_uri.starts_with("runs:/") {
        return Box::pin(resolve_artifact_uri(client, &artifact_uri)).await;
    }
    Ok(artifact_uri)
}

/// Lists `mlflow-artifacts` folders recursively and downloads every file under `dest`.
pub(crate) async fn download(
    client: &TrackingClient,
    artifact_uri: &str,
    dest: &Path,
) -> Result<usize> {
    let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
        bail!(
            "cannot download '{artifact_uri}': only artifacts served by the tracking server (mlflow-artifacts:) are supported"
        );
    };
    let root = root
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    let mut files: Vec<(String, u64)> = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let path = if rel.is_empty() {
            root.clone()
        } else {
            format!("{root}/{rel}")
        };
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts", client.base());
        let listing: Value = client
            .http()
            .get(&url)
            .query(&[("path", path)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for entry in listing["files"].as_array().into_iter().flatten() {
            let name = text(entry, "path");
            if name.is_empty() || name.contains('/') || name == ".." {
                bail!("the server listed an unsafe artifact name '{name}'");
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry["is_dir"].as_bool().unwrap_or(false) {
                pending.push(child);
            } else {
                files.push((child, entry["file_size"].as_u64().unwrap_or(0)));
            }
        }
    }
    if files.is_empty() {
        bail!("nothing to download at '{artifact_uri}'");
    }
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for (rel, _) in &files {
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let encoded: Vec<String> = format!("{root}/{rel}")
            .split('/')
            .map(|part| {
                percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            client.base(),
            encoded.join("/")
        );
        let response = client.http().get(&url).send().await?.error_for_status()?;
        let mut file = tokio::fs::File::create(&target)
            .await
            .with_context(|| format!("cannot write {}", target.display()))?;
        let mut stream = response.bytes_stream();
        bar.set_message(rel.clone());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        file.flush().await?;
    }
    bar.finish_and_clear();
    Ok(files.len())
}
