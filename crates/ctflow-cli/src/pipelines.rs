//! `ctflow pipelines ...`: pipelines, their runs, triggers and approvals, through the
//! server's `/api/ctflow/v1/` API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use ctflow_client::ct::{DescribedRun, Recorded};
use ctflow_core::gates::{Comparison, Verdict};
use ctflow_core::pipeline::{PipelineDocument, PipelineRecord};
use ctflow_core::pipeline_run::{Phase, PipelineRun};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::client::TrackingClient;
use crate::commands::{print_json, print_table, time_text};
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
    /// Run an earlier pipeline run again: the same spec, parameters and training data
    /// snapshot (and commit, for a git project). Refused when a file of the snapshot is
    /// gone or changed.
    Rerun {
        id: String,
        /// Wait until the new run ends and print its decision.
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

fn or_empty<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn duration_text(run: &PipelineRun) -> String {
    match (run.start_time, run.end_time) {
        (Some(start), Some(end)) => format!("{:.1}s", (end - start) as f64 / 1000.0),
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

fn trigger_text(run: &PipelineRun) -> String {
    let trigger = &run.trigger;
    match trigger.kind.as_str() {
        "schedule" => format!("schedule {}", time_text(trigger.logical_time)),
        "data" => format!("data ({} file(s))", trigger.files.len()),
        "manual" => format!("manual by {}", or_empty(trigger.user.as_deref())),
        "rerun" => format!(
            "rerun of {}",
            trigger.detail["rerun_of"].as_str().unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

fn print_runs(runs: &[PipelineRun]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                trigger_text(r),
                r.phase.to_string(),
                r.attempt.to_string(),
                or_empty(r.model_version),
                duration_text(r),
                or_empty(r.decision.as_deref()),
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

/// A run followed with `--wait` succeeded, or passed its gates and waits for a person.
fn ended_well(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Succeeded | Phase::WaitingApproval | Phase::Paused
    )
}

/// Polls a pipeline run until it ends (or waits for a person), showing its phase.
pub async fn follow(
    client: &TrackingClient,
    id: &str,
    show_progress: bool,
) -> Result<DescribedRun> {
    let bar = if show_progress {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    loop {
        let described = client.describe_run(id).await?;
        let phase = described.pipeline_run.phase;
        if let Some(bar) = &bar {
            let last = described
                .events
                .last()
                .map(|e| e.message.as_str())
                .unwrap_or_default();
            let shadow = described.pipeline_run.shadow.as_ref().map(|s| s.summary());
            match (phase, shadow) {
                (Phase::Shadowing, Some(shadow)) => bar.set_message(format!(
                    "{phase}: {} requests compared with the champion, {} errors",
                    shadow.requests, shadow.errors
                )),
                _ => bar.set_message(format!("{phase}: {last}")),
            }
        }
        // Ended, or waiting for a person: either way nothing more happens by itself.
        if phase.is_terminal() || matches!(phase, Phase::WaitingApproval | Phase::Paused) {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(described);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A number as the server's JSON wrote it (`null` when absent).
fn number_text(value: Option<f64>) -> String {
    value.map_or_else(|| "missing".into(), ctflow_core::gates::number_text)
}

fn print_comparisons(detail: &Value) {
    let comparisons: Vec<Comparison> =
        serde_json::from_value(detail["comparisons"].clone()).unwrap_or_default();
    for c in comparisons {
        let champion = match c.champion {
            Some(v) => format!(", champion {}", number_text(Some(v))),
            None => String::new(),
        };
        let required = match c.required {
            Some(v) => format!("required {} {}", c.operator, number_text(Some(v))),
            None => or_empty(c.note.as_deref()),
        };
        let verdict = match c.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        };
        let basis = c.basis.map(|b| format!(" [{b}]")).unwrap_or_default();
        println!(
            "      {} {}{basis}: candidate {}{champion}, {required} -> {verdict}",
            c.metric,
            c.check,
            number_text(c.candidate)
        );
    }
}

fn print_described(described: &DescribedRun) {
    let run = &described.pipeline_run;
    println!("Pipeline run {} of {}", run.id, run.pipeline);
    println!("  trigger:   {}", trigger_text(run));
    for file in &run.trigger.files {
        println!("             {file}");
    }
    if !run.trigger.parameters.is_empty() {
        let list: Vec<String> = run
            .trigger
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  params:    {}", list.join(" "));
    }
    if let Some(snapshot) = &described.data_snapshot {
        println!(
            "  data:      snapshot {} ({} files, {} rows)",
            snapshot.id,
            snapshot.files.len(),
            snapshot.rows
        );
    }
    println!("  phase:     {}", run.phase);
    println!("  attempt:   {}", run.attempt);
    if let Some(run_id) = &run.run_id {
        println!("  MLflow run {run_id}");
    }
    if let Some(version) = run.model_version {
        println!("  candidate: version {version}");
    }
    println!("  duration:  {}", duration_text(run));
    if let Some(decision) = &run.decision {
        println!("  decision:  {decision}");
    }
    println!("History:");
    for event in &described.events {
        let label = match (&event.gate, &event.result) {
            (Some(gate), result) => format!("gate {gate} [{}]", or_empty(result.as_deref())),
            (None, _) => event.kind.clone(),
        };
        println!(
            "  {}  {label}: {}",
            time_text(Some(event.timestamp)),
            event.message
        );
        if event.gate.as_deref() == Some("ct") {
            print_comparisons(&event.detail);
        }
    }
}

pub async fn run(command: PipelinesCommand, args: &ClientArgs) -> Result<()> {
    let client = crate::client::connect(&args.tracking_uri)?;
    let json_output = args.output == OutputFormat::Json;
    match command {
        PipelinesCommand::List => list(&client, json_output).await,
        PipelinesCommand::Apply { file } => apply(&client, file, json_output).await,
        PipelinesCommand::Delete { name } => delete(&client, name, json_output).await,
        PipelinesCommand::Trigger {
            name,
            params,
            key,
            wait,
        } => trigger(&client, name, params, key, wait, json_output).await,
        PipelinesCommand::Rerun { id, wait } => rerun(&client, id, wait, json_output).await,
        PipelinesCommand::Runs {
            name,
            phase,
            max_results,
        } => runs(&client, name, phase, max_results, json_output).await,
        PipelinesCommand::Describe { id } => describe(&client, id, json_output).await,
        PipelinesCommand::Approve { id, user, comment } => {
            answer(&client, &id, "approve", user, comment, json_output).await
        }
        PipelinesCommand::Reject { id, user, comment } => {
            answer(&client, &id, "reject", user, comment, json_output).await
        }
    }
}

async fn list(client: &TrackingClient, json_output: bool) -> Result<()> {
    if json_output {
        // The server's JSON as it is (with each pipeline's next scheduled run).
        let listed = client.get_path("/api/ctflow/v1/pipelines", &[]).await?;
        return print_json(&listed["pipelines"]);
    }
    let rows: Vec<Vec<String>> = client
        .pipelines()
        .await?
        .into_iter()
        .map(|p| {
            let spec = &p.document.spec;
            let triggers: Vec<&str> = spec.triggers.iter().map(|t| t.kind()).collect();
            vec![
                p.name.clone(),
                or_empty(spec.model.as_ref().map(|m| m.name.as_str())),
                triggers.join(","),
                serde_json::to_value(spec.concurrency_policy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                p.source.clone(),
                p.generation.to_string(),
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
    Ok(())
}

async fn apply(client: &TrackingClient, file: PathBuf, json_output: bool) -> Result<()> {
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
    let record: PipelineRecord = serde_json::from_value(stored["pipeline"].clone())
        .context("the server's answer holds no pipeline")?;
    println!(
        "pipeline {} applied (generation {})",
        record.name, record.generation
    );
    Ok(())
}

async fn delete(client: &TrackingClient, name: String, json_output: bool) -> Result<()> {
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
    Ok(())
}

async fn trigger(
    client: &TrackingClient,
    name: String,
    params: Vec<(String, String)>,
    key: Option<String>,
    wait: bool,
    json_output: bool,
) -> Result<()> {
    let parameters: serde_json::Map<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut body = json!({ "parameters": parameters });
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    let path = format!("/api/ctflow/v1/pipelines/{}/trigger", segment(&name));
    let recorded = match client.send_path(reqwest::Method::POST, &path, &body).await {
        Err(ctflow_client::ClientError::Api { status: 404, .. }) => {
            anyhow::bail!(
                "there is no pipeline '{name}' on {}; `ctflow pipelines list` shows the pipelines there are",
                client.base()
            )
        }
        answer => answer?,
    };
    let id = match Recorded::from_answer(&recorded)? {
        Recorded::Created(id) => id,
        Recorded::Duplicate(id) => {
            eprintln!("this key was used before: pipeline run {id}");
            id
        }
    };
    if recorded["controller_running"] == Value::Bool(false) {
        eprintln!(
            "no controller is running against {}: pipeline run {id} waits in Pending until one \
             starts (`ctflow up` runs one with the server; beside `ctflow server`, run `ctflow \
             controller` and `ctflow worker`)",
            client.base()
        );
    }
    if !wait {
        if json_output {
            return print_json(&recorded);
        }
        println!("{id}");
        return Ok(());
    }
    let described = follow(client, &id, !json_output).await?;
    if json_output {
        print_json(&serde_json::to_value(&described)?)?;
    } else {
        print_described(&described);
    }
    let run = &described.pipeline_run;
    if !ended_well(run.phase) {
        bail!(
            "pipeline run {id} ended {}: {}",
            run.phase,
            or_empty(run.decision.as_deref())
        );
    }
    Ok(())
}

/// How long a rerun waits to see its snapshot checked before it reports the run as
/// recorded (the controller admits within a reconcile pass; a busy pipeline queues it).
const RERUN_ADMISSION_WAIT: Duration = Duration::from_secs(15);

async fn rerun(client: &TrackingClient, id: String, wait: bool, json_output: bool) -> Result<()> {
    let path = format!("/api/ctflow/v1/pipeline-runs/{}/rerun", segment(&id));
    let recorded = client
        .send_path(reqwest::Method::POST, &path, &json!({}))
        .await?;
    let new_id = match Recorded::from_answer(&recorded)? {
        Recorded::Created(new_id) | Recorded::Duplicate(new_id) => new_id,
    };
    let described = if wait {
        follow(client, &new_id, !json_output).await?
    } else {
        // The controller checks the snapshot's files before admitting the run: wait
        // for that verdict, so a changed file is refused here.
        let deadline = tokio::time::Instant::now() + RERUN_ADMISSION_WAIT;
        loop {
            let described = client.describe_run(&new_id).await?;
            let run = &described.pipeline_run;
            if run.phase != Phase::Pending
                || run.attempt > 0
                || tokio::time::Instant::now() >= deadline
            {
                break described;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let run = &described.pipeline_run;
    let refused = run.phase == Phase::Failed && run.attempt == 0;
    if json_output {
        print_json(&serde_json::to_value(&described)?)?;
    } else if wait {
        print_described(&described);
    } else if !refused {
        println!("{new_id}  rerun of {id}: {}", run.phase);
    }
    if refused || (wait && !ended_well(run.phase)) {
        bail!(
            "rerun {new_id} of pipeline run {id} ended {}: {}",
            run.phase,
            or_empty(run.decision.as_deref())
        );
    }
    Ok(())
}

async fn runs(
    client: &TrackingClient,
    name: Option<String>,
    phase: Option<String>,
    max_results: i64,
    json_output: bool,
) -> Result<()> {
    let runs = client
        .pipeline_runs(name.as_deref(), phase.as_deref(), max_results)
        .await?;
    if json_output {
        return print_json(&serde_json::to_value(&runs)?);
    }
    print_runs(&runs);
    Ok(())
}

async fn describe(client: &TrackingClient, id: String, json_output: bool) -> Result<()> {
    let described = client.describe_run(&id).await?;
    if json_output {
        return print_json(&serde_json::to_value(&described)?);
    }
    print_described(&described);
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
