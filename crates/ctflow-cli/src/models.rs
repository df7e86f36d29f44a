//! `ctflow models ...`: the registry from the command line, the promotion ledger, and
//! downloading a model by URI.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ctflow_core::registry::{LedgerEntry, ModelVersion, RegisteredModel};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::TrackingClient;
use crate::commands::{print_json, print_table, text, typed};
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
    /// Where a version came from: its run, the data snapshot it trained on (files,
    /// digests, rows), the trigger, the code and the parameters. NAME alone means
    /// NAME@champion.
    Lineage {
        /// NAME, NAME/VERSION or NAME@ALIAS.
        model: String,
    },
    /// What changed between two versions: training data (file by file), parameters,
    /// code and metrics. A and B are version numbers or @ALIAS.
    Diff { name: String, a: String, b: String },
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
    Serve(ServeArgs),
}

/// `ctflow models serve`.
#[derive(Args)]
pub struct ServeArgs {
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
    /// Log every scored row (request id, time, model version, inputs, prediction,
    /// latency) as Parquet files in this folder, or under an object-store prefix
    /// (s3://bucket/prefix: each file is finished in a local spool folder, then uploaded).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    log: Option<String>,
    /// Finish a log file once it holds this many rows.
    #[arg(long, default_value_t = 100_000, requires = "log")]
    log_roll_rows: usize,
    /// Finish a log file once its first row is this old.
    #[arg(long, default_value = "60s", value_parser = crate::services::parse_duration, requires = "log")]
    log_roll_interval: std::time::Duration,
    /// Delete log files older than this (kept when not given).
    #[arg(long, value_parser = crate::services::parse_duration, requires = "log")]
    log_retention: Option<std::time::Duration>,
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
        ModelsCommand::List { filter } => list(&client, filter, args.output).await,
        ModelsCommand::Versions { name } => versions(&client, name, args.output).await,
        ModelsCommand::Alias {
            command:
                AliasCommand::Set {
                    name,
                    alias,
                    version,
                },
        } => set_alias(&client, name, alias, version, args.output).await,
        ModelsCommand::Alias {
            command: AliasCommand::Delete { name, alias },
        } => delete_alias(&client, name, alias, args.output).await,
        ModelsCommand::Stage {
            name,
            version,
            stage,
            archive_existing,
        } => transition_stage(&client, name, version, stage, archive_existing, args.output).await,
        ModelsCommand::Rollback {
            name,
            alias,
            no_stages,
        } => rollback(&client, name, alias, no_stages, args.output).await,
        ModelsCommand::History { name } => history(&client, name, args.output).await,
        ModelsCommand::Lineage { model } => crate::lineage::run(&client, &model, args.output).await,
        ModelsCommand::Diff { name, a, b } => {
            crate::diff::run(&client, &name, &a, &b, args.output).await
        }
        ModelsCommand::Serve(serve_args) => serve(client, serve_args).await,
        ModelsCommand::Download { uri, dest } => {
            download_model(&client, uri, dest, args.output).await
        }
    }
}

async fn list(client: &TrackingClient, filter: String, output: OutputFormat) -> Result<()> {
    let models = search_all_get(
        client,
        "registered-models/search",
        vec![("filter", filter), ("max_results", "1000".into())],
        "registered_models",
    )
    .await?;
    if output == OutputFormat::Json {
        return print_json(&Value::Array(models));
    }
    let rows: Vec<Vec<String>> = typed::<RegisteredModel>(&models)?
        .into_iter()
        .map(|m| {
            let latest = m
                .latest_versions
                .iter()
                .map(|v| v.version.as_str())
                .max_by_key(|v| v.parse::<i64>().unwrap_or(0))
                .unwrap_or_default()
                .to_string();
            let aliases: Vec<String> = m
                .aliases
                .iter()
                .map(|a| format!("{}={}", a.alias, a.version))
                .collect();
            vec![
                m.name,
                latest,
                aliases.join(","),
                m.description.unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["Name", "Latest Version", "Aliases", "Description"], &rows);
    Ok(())
}

async fn versions(client: &TrackingClient, name: String, output: OutputFormat) -> Result<()> {
    let versions = search_all_get(
        client,
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
    if output == OutputFormat::Json {
        return print_json(&Value::Array(versions));
    }
    let aliases = typed::<RegisteredModel>(std::slice::from_ref(&model["registered_model"]))?
        .pop()
        .map(|m| m.aliases)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = typed::<ModelVersion>(&versions)?
        .into_iter()
        .map(|v| {
            let on_it: Vec<&str> = aliases
                .iter()
                .filter(|a| a.version == v.version)
                .map(|a| a.alias.as_str())
                .collect();
            vec![
                v.version.clone(),
                v.current_stage,
                on_it.join(","),
                v.run_id,
                v.source,
            ]
        })
        .collect();
    print_table(&["Version", "Stage", "Aliases", "Run Id", "Source"], &rows);
    Ok(())
}

async fn set_alias(
    client: &TrackingClient,
    name: String,
    alias: String,
    version: String,
    output: OutputFormat,
) -> Result<()> {
    client
        .post(
            "registered-models/alias",
            &json!({ "name": name, "alias": alias, "version": version }),
        )
        .await?;
    match output {
        OutputFormat::Json => {
            print_json(&json!({ "name": name, "alias": alias, "version": version }))?
        }
        OutputFormat::Table => {
            println!("Alias '{alias}' of '{name}' now points at version {version}")
        }
    }
    Ok(())
}

async fn delete_alias(
    client: &TrackingClient,
    name: String,
    alias: String,
    output: OutputFormat,
) -> Result<()> {
    client
        .delete(
            "registered-models/alias",
            &json!({ "name": name, "alias": alias }),
        )
        .await?;
    match output {
        OutputFormat::Json => {
            print_json(&json!({ "name": name, "alias": alias, "deleted": true }))?
        }
        OutputFormat::Table => println!("Deleted alias '{alias}' of '{name}'"),
    }
    Ok(())
}

async fn transition_stage(
    client: &TrackingClient,
    name: String,
    version: String,
    stage: String,
    archive_existing: bool,
    output: OutputFormat,
) -> Result<()> {
    let response = client
        .post(
            "model-versions/transition-stage",
            &json!({ "name": name, "version": version, "stage": stage, "archive_existing_versions": archive_existing }),
        )
        .await?;
    match output {
        OutputFormat::Json => print_json(&response["model_version"])?,
        OutputFormat::Table => {
            let moved = typed::<ModelVersion>(std::slice::from_ref(&response["model_version"]))?;
            println!(
                "Version {version} of '{name}' is now in stage {}",
                moved
                    .first()
                    .map(|v| v.current_stage.as_str())
                    .unwrap_or_default()
            )
        }
    }
    Ok(())
}

async fn rollback(
    client: &TrackingClient,
    name: String,
    alias: String,
    no_stages: bool,
    output: OutputFormat,
) -> Result<()> {
    let path = format!(
        "/api/ctflow/v1/models/{}/rollback",
        percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
    );
    let body = serde_json::json!({ "alias": alias, "stages": !no_stages });
    let moved = client
        .send_path(reqwest::Method::POST, &path, &body)
        .await?;
    if output == OutputFormat::Json {
        return print_json(&moved);
    }
    println!(
        "{name}@{alias}: version {} -> version {}",
        text(&moved, "from_version"),
        text(&moved, "to_version")
    );
    Ok(())
}

async fn history(client: &TrackingClient, name: String, output: OutputFormat) -> Result<()> {
    let path = format!(
        "/api/ctflow/v1/models/{}/history",
        percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
    );
    let history = client.get_path(&path, &[]).await?;
    let entries = history["entries"].as_array().cloned().unwrap_or_default();
    if output == OutputFormat::Json {
        return print_json(&Value::Array(entries));
    }
    let rows: Vec<Vec<String>> = typed::<LedgerEntry>(&entries)?
        .into_iter()
        .map(|e| {
            let shown = |value: &Option<String>| value.clone().unwrap_or_default();
            let change = match e.action.as_str() {
                "alias_set" => format!(
                    "@{}: {} -> {}",
                    shown(&e.alias),
                    or_dash(shown(&e.from_version)),
                    shown(&e.to_version)
                ),
                "alias_deleted" => {
                    format!("@{}: {} -> -", shown(&e.alias), shown(&e.from_version))
                }
                "stage_transition" => format!(
                    "v{}: {} -> {}",
                    shown(&e.to_version),
                    shown(&e.from_stage),
                    shown(&e.to_stage)
                ),
                _ => format!("v{}", shown(&e.to_version)),
            };
            vec![
                crate::commands::time_text(Some(e.timestamp)),
                e.action,
                change,
                e.user,
                e.comment.unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["Time (UTC)", "Action", "Change", "User", "Comment"],
        &rows,
    );
    Ok(())
}

async fn serve(client: TrackingClient, serve_args: ServeArgs) -> Result<()> {
    let ServeArgs {
        model_uri,
        host,
        port,
        workers,
        env_manager,
        follow_interval,
        max_batch,
        batch_wait,
        wait,
        log,
        log_roll_rows,
        log_roll_interval,
        log_retention,
    } = serve_args;
    if log_roll_rows == 0 {
        anyhow::bail!("--log-roll-rows must be at least 1");
    }
    if let Some(destination) = log.as_deref() {
        ctflow_core::inference::check_log_destination(destination)
            .map_err(|message| anyhow::anyhow!("--log: {message}"))?;
    }
    let log = log.map(|destination| {
        let mut options = ctflow_serving::LogOptions::for_destination(&destination);
        options.roll_rows = log_roll_rows;
        options.roll_interval = log_roll_interval.max(std::time::Duration::from_millis(100));
        options.retention = log_retention;
        options
    });
    let options = ctflow_serving::ServeOptions {
        workers,
        env_manager,
        env_cache: ctflow_project::default_env_cache(),
        follow_interval,
        batching: ctflow_serving::Batching {
            max_batch: max_batch.max(1),
            wait: batch_wait,
        },
        metrics: std::sync::Arc::new(ctflow_serving::ServingMetrics::new()),
        log,
        priority: ctflow_serving::Priority::Normal,
    };
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    println!("Serving {model_uri} on http://{}", listener.local_addr()?);
    ctflow_serving::serve(
        client,
        &model_uri,
        listener,
        options,
        wait,
        crate::shutdown_signal(),
    )
    .await?;
    Ok(())
}

async fn download_model(
    client: &TrackingClient,
    uri: String,
    dest: PathBuf,
    output: OutputFormat,
) -> Result<()> {
    let artifact_uri = client.resolve_artifact_uri(&uri).await?;
    let files = download(client, &artifact_uri, &dest).await?;
    match output {
        OutputFormat::Json => print_json(
            &json!({ "uri": uri, "artifact_uri": artifact_uri, "dest": dest, "files": files }),
        )?,
        OutputFormat::Table => {
            println!("Downloaded {files} files of {uri} to {}", dest.display())
        }
    }
    Ok(())
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// Downloads every file of an artifact URI under `dest`, with a progress bar.
async fn download(client: &TrackingClient, artifact_uri: &str, dest: &Path) -> Result<usize> {
    let files = client.files_to_download(artifact_uri).await?;
    let bar = ProgressBar::new(files.iter().map(|f| f.size).sum());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    client
        .download_files(artifact_uri, &files, dest, &mut |path, bytes| {
            if bytes == 0 {
                bar.set_message(path.to_string());
            }
            bar.inc(bytes);
        })
        .await?;
    bar.finish_and_clear();
    Ok(files.len())
}
