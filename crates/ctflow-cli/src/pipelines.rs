//! `ctflow pipelines ...`: pipelines, their runs, triggers and approvals, through the
//! server's `/api/ctflow/v1/` API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use ctflow_core::pipeline::PipelineDocument;
use ctflow_core::pipeline_run::Phase;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::client::TrackingClient;
use crate::commands::{print_json, print_table, text};
use crate::{ClientArgs, OutputFormat};

#[derive(Subcommand)]
pub enum PipelinesCommand {
    /// List pipelines.
    List,
    /// Create or replace a pipeline from a YAML file (paths in it are relative to the file).
    Apply { file: PathBuf },
    /// Delete a pipeline (its runs stay as history).
    Delete { name: String },
    /// Start a pipeline run now.
    Trigger {
        name: String,
        /// A project parameter for this run, `-P name=value` (repeatable).
        #[arg(short = 'P', long = "param", value_parser = crate::run::parse_param)]
        params: Vec<(String, String)>,
        /// An idempotency key: the same key never starts a second run.
        #[arg(long)]
        key: Option<String>,
        /// Wait until the pipeline run ends and print its decision.
        #[arg(long)]
        wait: bool,
    },
    /// List pipeline runs, newest first (of one pipeline, or all).
    Runs {
        name: Option<String>,
        /// Only runs in this phase (Pending, Running, WaitingApproval, Succeeded, ...).
        #[arg(long)]
        phase: Option<String>,
        #[arg(long, default_value_t = 50)]
        max_results: i64,
    },
    /// A pipeline run: trigger, attempts, gates with their numbers, decision.
    Describe { id: String },
    /// Approve the promotion a pipeline run waits for.
    Approve {
        id: String,
        /// Who approves (recorded in the history and the registry ledger).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject the promotion a pipeline run waits for.
    Reject {
        id: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        comment: Option<String>,
    },
}

fn segment(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn time_text(ms: &Value) -> String {
    ms.as_i64()
        .map(ctflow_core::schedule::logical_time_text)
        .unwrap_or_else(|| "-".into())
}

fn duration_text(run: &Value) -> String {
    match (run["start_time"].as_i64(), run["end_time"].as_i64()) {
        (Some(start), Some(end)) => format!("{:.1}s", (end - start) as f64 / 1000.0),
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

fn trigger_text(run: &Value) -> String {
    let trigger = &run["trigger"];
    let kind = text(trigger, "kind");
    match kind.as_str() {
        "schedule" => format!("schedule {}", time_text(&trigger["logical_time"])),
        "data" => format!(
            "data ({} file(s))",
            trigger["files"].as_array().map_or(0, Vec::len)
        ),
        "manual" => format!("manual by {}", text(trigger, "user")),
        _ => kind,
    }
}

fn print_runs(runs: &[Value]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                text(r, "id"),
                text(r, "pipeline"),
                trigger_text(r),
                text(r, "phase"),
                text(r, "attempt"),
                text(r, "model_version"),
                duration_text(r),
                text(r, "decision"),
            ]
        })
        .collect();
    print_table(
        &[
            "Id", "Pipeline", "Trigger", "Phase", "Attempt", "Version", "Duration", "Decision",
        ],
        &rows,
    );
}

/// Polls a pipeline run until it ends (or waits for a person), showing its phase.
pub async fn follow(client: &TrackingClient, id: &str, show_progress: bool) -> Result<Value> {
    let bar = if show_progress {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let path = format!("/api/ctflow/v1/pipeline-runs/{}", segment(id));
    loop {
        let described = client.get_path(&path, &[]).await?;
        let run = &described["pipeline_run"];
        let phase = text(run, "phase");
        if let Some(bar) = &bar {
            let last = described["events"]
                .as_array()
                .and_then(|e| e.last())
                .map(|e| text(e, "message"))
                .unwrap_or_default();
            bar.set_message(format!("{phase}: {last}"));
        }
        // Ended, or waiting for a person: either way nothing more happens by itself.
        let settled = phase
            .parse::<Phase>()
            .is_ok_and(|p| p.is_terminal() || matches!(p, Phase::WaitingApproval | Phase::Paused));
        if settled {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(described);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_described(described: &Value) {
    let run = &described["pipeline_run"];
    println!(
        "Pipeline run {} of {}",
        text(run, "id"),
        text(run, "pipeline")
    );
    println!("  trigger:   {}", trigger_text(run));
    let trigger = &run["trigger"];
    if let Some(files) = trigger["files"].as_array() {
        for file in files {
            println!("             {}", file.as_str().unwrap_or_default());
        }
    }
    if let Some(params) = trigger["parameters"].as_object().filter(|p| !p.is_empty()) {
        let list: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!("  params:    {}", list.join(" "));
    }
    println!("  phase:     {}", text(run, "phase"));
    println!("  attempt:   {}", text(run, "attempt"));
    if !text(run, "run_id").is_empty() {
        println!("  MLflow run {}", text(run, "run_id"));
    }
    if !text(run, "model_version").is_empty() {
        println!("  candidate: version {}", text(run, "model_version"));
    }
    println!("  duration:  {}", duration_text(run));
    if !text(run, "decision").is_empty() {
        println!("  decision:  {}", text(run, "decision"));
    }
    println!("History:");
    for event in described["events"].as_array().cloned().unwrap_or_default() {
        let gate = text(&event, "gate");
        let label = if gate.is_empty() {
            text(&event, "kind")
        } else {
            format!("gate {gate} [{}]", text(&event, "result"))
        };
        println!(
            "  {}  {label}: {}",
            time_text(&event["timestamp"]),
            text(&event, "message")
        );
        if gate == "ct" {
            for c in event["detail"]["comparisons"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let champion = if c["champion"].is_null() {
                    String::new()
                } else {
                    format!(", champion {}", c["champion"])
                };
                let required = if c["required"].is_null() {
                    text(&c, "note")
                } else {
                    format!("required {} {}", text(&c, "operator"), c["required"])
                };
                println!(
                    "      {} {}: candidate {}{champion}, {required} -> {}",
                    text(&c, "metric"),
                    text(&c, "check"),
                    c["candidate"],
                    text(&c, "verdict")
                );
            }
        }
    }
}

pub async fn run(command: PipelinesCommand, args: &ClientArgs) -> Result<()> {
    let client = crate::client::connect(&args.tracking_uri)?;
    let json_output = args.output == OutputFormat::Json;
    match command {
        PipelinesCommand::List => {
            let listed = client.get_path("/api/ctflow/v1/pipelines", &[]).await?;
            let pipelines = listed["pipelines"].as_array().cloned().unwrap_or_default();
            if json_output {
                return print_json(&Value::Array(pipelines));
            }
            let rows: Vec<Vec<String>> = pipelines
                .iter()
                .map(|p| {
                    let spec = &p["document"]["spec"];
                    let triggers: Vec<String> = spec["triggers"]
                        .as_array()
                        .map(|t| {
                            t.iter()
                                .filter_map(|t| t.as_object()?.keys().next().cloned())
                                .collect()
                        })
                        .unwrap_or_default();
                    vec![
                        text(p, "name"),
                        text(&spec["model"], "name"),
                        triggers.join(","),
                        text(spec, "concurrencyPolicy"),
                        text(p, "source"),
                        text(p, "generation"),
                    ]
                })
                .collect();
            print_table(
                &[
                    "Name",
                    "Model",
                    "Triggers",
                    "Concurrency",
                    "Source",
                    "Generation",
                ],
                &rows,
            );
        }
        PipelinesCommand::Apply { file } => {
            let text_content = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let document = PipelineDocument::from_yaml(&text_content).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                anyhow!(
                    "{} is not a valid pipeline:\n{}",
                    file.display(),
                    lines.join("\n")
                )
            })?;
            let base_dir = std::fs::canonicalize(&file)?
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let path = format!(
                "/api/ctflow/v1/pipelines/{}?base_dir={}",
                segment(&document.metadata.name),
                segment(&base_dir)
            );
            let stored = client
                .send_path(
                    reqwest::Method::PUT,
                    &path,
                    &serde_json::to_value(&document)?,
                )
                .await?;
            if json_output {
                return print_json(&stored);
            }
            println!(
                "pipeline {} applied (generation {})",
                document.metadata.name,
                text(&stored["pipeline"], "generation")
            );
        }
        PipelinesCommand::Delete { name } => {
            client
                .send_path(
                    reqwest::Method::DELETE,
                    &format!("/api/ctflow/v1/pipelines/{}", segment(&name)),
                    &json!({}),
                )
                .await?;
            if !json_output {
                println!("pipeline {name} deleted");
            }
        }
        PipelinesCommand::Trigger {
            name,
            params,
            key,
            wait,
        } => {
            let parameters: serde_json::Map<String, Value> = params
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let mut body = json!({ "parameters": parameters });
            if let Some(key) = key {
                body["key"] = json!(key);
            }
            let path = format!("/api/ctflow/v1/pipelines/{}/trigger", segment(&name));
            let recorded = client
                .send_path(reqwest::Method::POST, &path, &body)
                .await?;
            let id = text(&recorded["pipeline_run"], "id");
            if recorded["duplicate"].as_bool() == Some(true) {
                eprintln!("this key was used before: pipeline run {id}");
            }
            if !wait {
                if json_output {
                    return print_json(&recorded);
                }
                println!("{id}");
                return Ok(());
            }
            let described = follow(&client, &id, !json_output).await?;
            if json_output {
                print_json(&described)?;
            } else {
                print_described(&described);
            }
            let phase = text(&described["pipeline_run"], "phase");
            if !["Succeeded", "WaitingApproval", "Paused"].contains(&phase.as_str()) {
                bail!(
                    "pipeline run {id} ended {phase}: {}",
                    text(&described["pipeline_run"], "decision")
                );
            }
        }
        PipelinesCommand::Runs {
            name,
            phase,
            max_results,
        } => {
            let path = match &name {
                Some(name) => format!("/api/ctflow/v1/pipelines/{}/runs", segment(name)),
                None => "/api/ctflow/v1/pipeline-runs".into(),
            };
            let mut query = vec![("max_results", max_results.to_string())];
            if let Some(phase) = phase {
                query.push(("phase", phase));
            }
            let listed = client.get_path(&path, &query).await?;
            let runs = listed["pipeline_runs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if json_output {
                return print_json(&Value::Array(runs));
            }
            print_runs(&runs);
        }
        PipelinesCommand::Describe { id } => {
            let described = client
                .get_path(
                    &format!("/api/ctflow/v1/pipeline-runs/{}", segment(&id)),
                    &[],
                )
                .await?;
            if json_output {
                return print_json(&described);
            }
            print_described(&described);
        }
        PipelinesCommand::Approve { id, user, comment } => {
            answer(&client, &id, "approve", user, comment, json_output).await?;
        }
        PipelinesCommand::Reject { id, user, comment } => {
            answer(&client, &id, "reject", user, comment, json_output).await?;
        }
    }
    Ok(())
}

async fn answer(
    client: &TrackingClient,
    id: &str,
    verb: &str,
    user: Option<String>,
    comment: Option<String>,
    json_output: bool,
) -> Result<()> {
    let mut body = json!({});
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    if let Some(comment) = comment {
        body["comment"] = json!(comment);
    }
    let path = format!("/api/ctflow/v1/pipeline-runs/{}/{verb}", segment(id));
    let answered = client
        .send_path(reqwest::Method::POST, &path, &body)
        .await?;
    if json_output {
        return print_json(&answered);
    }
    println!("pipeline run {id}: {verb} recorded; the controller acts on it");
    Ok(())
}
