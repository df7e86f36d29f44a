//! Client commands: experiments and runs.

use anyhow::{Context, Result};
use clap::Subcommand;
use ctflow_core::entities::{Experiment, Run};
use serde_json::{Value, json};

use crate::client::TrackingClient;
use crate::{ClientArgs, OutputFormat};

#[derive(Subcommand)]
pub enum ExperimentsCommand {
    /// Create an experiment.
    Create {
        #[arg(long, short = 'n')]
        experiment_name: String,
        #[arg(long, short = 'l')]
        artifact_location: Option<String>,
    },
    /// List experiments.
    List {
        /// active_only, deleted_only or all.
        #[arg(long, default_value = "active_only")]
        view: String,
    },
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// List the runs of an experiment, newest first (or as --order-by says).
    List {
        /// The experiment whose runs are listed (`ctflow experiments list` shows the ids).
        #[arg(long)]
        experiment_id: String,
        /// Which runs: active_only, deleted_only or all.
        #[arg(long, default_value = "active_only")]
        view: String,
        /// Only the runs this search filter matches, in MLflow's grammar:
        /// "metrics.accuracy > 0.9 and params.C = '0.5'".
        #[arg(long)]
        filter: Option<String>,
        /// Sort by this key, in MLflow's grammar ("metrics.accuracy DESC",
        /// "attributes.start_time"); repeat it for ties.
        #[arg(long = "order-by")]
        order_by: Vec<String>,
    },
    /// Print one run as JSON.
    Describe {
        #[arg(long)]
        run_id: String,
    },
}

/// A time as every table prints it: ISO 8601 in UTC, to the second (`-` for none).
pub(crate) fn time_text(ms: Option<i64>) -> String {
    ms.map(ctflow_core::schedule::logical_time_text)
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

pub(crate) use ctflow_worker::client::text;

/// Pages through a search endpoint until the server returns no token.
async fn search_all(
    client: &TrackingClient,
    endpoint: &str,
    mut body: Value,
    key: &str,
) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    loop {
        let page = client.post(endpoint, &body).await?;
        if let Some(Value::Array(found)) = page.get(key) {
            items.extend(found.iter().cloned());
        }
        match page.get("next_page_token").and_then(Value::as_str) {
            Some(token) if !token.is_empty() => body["page_token"] = json!(token),
            _ => return Ok(items),
        }
    }
}

/// A listing's items as entities, read from the JSON the server sent (which `--output
/// json` prints as it is).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(items: &[Value]) -> Result<Vec<T>> {
    items
        .iter()
        .map(|item| {
            serde_json::from_value(item.clone())
                .context("the server's answer is not the entity it should be")
        })
        .collect()
}

pub async fn experiments(command: ExperimentsCommand, args: &ClientArgs) -> Result<()> {
    let client = crate::client::connect(&args.tracking_uri)?;
    match command {
        ExperimentsCommand::Create {
            experiment_name,
            artifact_location,
        } => {
            let mut body = json!({ "name": experiment_name });
            if let Some(location) = artifact_location {
                body["artifact_location"] = json!(location);
            }
            let response = client
                .post("experiments/create", &body)
                .await
                .context("cannot create the experiment")?;
            let id = text(&response, "experiment_id");
            match args.output {
                OutputFormat::Json => {
                    print_json(&json!({ "experiment_id": id, "name": experiment_name }))?
                }
                OutputFormat::Table => {
                    println!("Created experiment '{experiment_name}' with id {id}")
                }
            }
        }
        ExperimentsCommand::List { view } => {
            let body = json!({ "max_results": 1000, "view_type": view.to_ascii_uppercase() });
            let experiments =
                search_all(&client, "experiments/search", body, "experiments").await?;
            match args.output {
                OutputFormat::Json => print_json(&Value::Array(experiments))?,
                OutputFormat::Table => {
                    let rows: Vec<Vec<String>> = typed::<Experiment>(&experiments)?
                        .into_iter()
                        .map(|e| {
                            vec![
                                e.experiment_id,
                                e.name,
                                e.lifecycle_stage,
                                e.artifact_location,
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "Experiment Id",
                            "Name",
                            "Lifecycle Stage",
                            "Artifact Location",
                        ],
                        &rows,
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn runs(command: RunsCommand, args: &ClientArgs) -> Result<()> {
    let client = crate::client::connect(&args.tracking_uri)?;
    match command {
        RunsCommand::List {
            experiment_id,
            view,
            filter,
            order_by,
        } => {
            let mut body = json!({
                "experiment_ids": [experiment_id],
                "max_results": 1000,
                "run_view_type": view.to_ascii_uppercase(),
            });
            if let Some(filter) = filter {
                body["filter"] = json!(filter);
            }
            if !order_by.is_empty() {
                body["order_by"] = json!(order_by);
            }
            let runs = search_all(&client, "runs/search", body, "runs").await?;
            match args.output {
                OutputFormat::Json => print_json(&Value::Array(runs))?,
                OutputFormat::Table => {
                    let rows: Vec<Vec<String>> = typed::<Run>(&runs)?
                        .into_iter()
                        .map(|r| {
                            vec![
                                r.info.run_id,
                                r.info.run_name,
                                r.info.status,
                                time_text(Some(r.info.start_time)),
                            ]
                        })
                        .collect();
                    print_table(&["Run Id", "Name", "Status", "Start Time (UTC)"], &rows);
                }
            }
        }
        RunsCommand::Describe { run_id } => {
            let response = client.get("runs/get", &[("run_id", run_id)]).await?;
            print_json(response.get("run").unwrap_or(&response))?;
        }
    }
    Ok(())
}
