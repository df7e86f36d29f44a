//! `ctflow run`: runs an MLflow project's entry point as a tracked run, the way
//! `mlflow run` does, on any MLflow-compatible tracking server.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ctflow_bus::Job;
use ctflow_worker::client::TrackingClient;
use ctflow_worker::evaluate_candidate;
use ctflow_worker::execute::{
    ExperimentRef, Line, Observer, RunRequest, TrainingInput, default_env_cache, execute,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::commands::print_json;
use crate::{ClientArgs, OutputFormat};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The project: a local folder, or a git repository URI (`https://`, `ssh://`, `git@`,
    /// `file://`, `git+...`) with an optional `#subdirectory`.
    pub uri: String,
    /// With a git URI: the commit, branch or tag to check out.
    #[arg(long)]
    pub version: Option<String>,
    /// Run a local project even when its git working tree has uncommitted changes (the run
    /// then records a commit that is not what ran).
    #[arg(long)]
    pub allow_dirty: bool,
    /// Entry point name, or a .py / .sh file of the project.
    #[arg(short = 'e', long, default_value = "main")]
    pub entry_point: String,
    /// A parameter, `-P name=value` (repeatable).
    #[arg(short = 'P', long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[arg(long, env = "MLFLOW_EXPERIMENT_NAME", conflicts_with = "experiment_id")]
    pub experiment_name: Option<String>,
    #[arg(long, env = "MLFLOW_EXPERIMENT_ID")]
    pub experiment_id: Option<String>,
    #[arg(long)]
    pub run_name: Option<String>,
    /// Attach to an existing run instead of creating one.
    #[arg(long, env = "MLFLOW_RUN_ID")]
    pub run_id: Option<String>,
    /// CI checks to run before the entry point, as JSON: `[{"name": "tests", "run":
    /// "pytest -q"}]`; a failing one stops the run (CT jobs on Kubernetes pass their
    /// pipeline's checks this way).
    #[arg(long, env = "CTFLOW_CI_CHECKS", value_parser = parse_ci_checks)]
    pub ci_checks: Option<CiChecks>,
    /// Record failing CI checks without stopping the run (a pipeline's `ci.dryRun`).
    #[arg(long, env = "CTFLOW_CI_SHADOW")]
    pub ci_shadow: bool,
    /// Which environment runs the command: `local` (the python on PATH), `virtualenv` or
    /// `uv` (python_env.yaml, built with uv when it is on PATH, else python -m venv + pip),
    /// or `conda` (conda.yaml, needs conda on PATH); built environments are cached
    /// by their spec under $CTFLOW_ENV_DIR (default ~/.cache/ctflow/envs).
    #[arg(long, default_value = "local")]
    pub env_manager: String,
    /// The CT pipeline run this run trains for (a Kubernetes Job's pod passes it): its
    /// recorded data snapshot is checked, handed to the command as CTFLOW_DATA_MANIFEST
    /// and logged as the run's training dataset, and after training the pipeline's
    /// evaluation step scores the candidate and the champion on it.
    #[arg(long, value_name = "ID")]
    pub pipeline_run: Option<String>,
}

/// The CI checks of `--ci-checks`.
#[derive(Debug, Clone)]
pub struct CiChecks(pub Vec<ctflow_core::pipeline::CiCheck>);

fn parse_ci_checks(raw: &str) -> Result<CiChecks, String> {
    serde_json::from_str(raw)
        .map(CiChecks)
        .map_err(|e| format!("not a JSON list of {{\"name\", \"run\"}} checks: {e}"))
}

pub(crate) fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{raw}' is not of the form name=value")),
    }
}

async fn interrupted() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                "SIGTERM"
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { s = ctrl_c => s, s = term => s }
}

/// Prints the run's output as it comes. With --output json the command's stdout goes to
/// stderr, so stdout stays parseable.
struct Terminal {
    json_output: bool,
}

impl Observer for Terminal {
    fn line(&self, line: Line) {
        use std::io::Write;
        match line {
            Line::Stdout(text) if !self.json_output => {
                let _ = writeln!(std::io::stdout(), "{text}");
            }
            Line::Stdout(text) | Line::Stderr(text) | Line::Note(text) => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }
}

pub async fn run(args: RunArgs, client_args: &ClientArgs) -> Result<()> {
    let client = crate::client::connect(&client_args.tracking_uri)?;
    let experiment = match (&args.experiment_id, &args.experiment_name) {
        (Some(id), _) => ExperimentRef::Id(id.clone()),
        (None, Some(name)) => ExperimentRef::Name(name.clone()),
        (None, None) => ExperimentRef::Default,
    };
    let pipeline_job = match &args.pipeline_run {
        Some(id) => Some(pipeline_job(&client, id).await?),
        None => None,
    };
    let request = RunRequest {
        uri: args.uri.clone(),
        base_dir: std::env::current_dir()?,
        version: args.version.clone(),
        allow_dirty: args.allow_dirty,
        entry_point: args.entry_point.clone(),
        params: args.params.iter().cloned().collect::<BTreeMap<_, _>>(),
        env_manager: args.env_manager.clone(),
        env_cache: default_env_cache(),
        experiment,
        run_name: args.run_name.clone(),
        run_id: args.run_id.clone(),
        tags: Vec::new(),
        env: Vec::new(),
        ci_checks: args.ci_checks.clone().map(|c| c.0).unwrap_or_default(),
        ci_blocking: !args.ci_shadow,
        timeout: None,
        user: crate::client::current_user(),
        tracking_uri: client_args.tracking_uri.clone(),
        backend: "local".into(),
        data: pipeline_job.as_ref().and_then(TrainingInput::of_job),
    };
    let stop = CancellationToken::new();
    let signal = Arc::new(std::sync::Mutex::new(None));
    let watcher = {
        let (stop, signal) = (stop.clone(), signal.clone());
        tokio::spawn(async move {
            let name = interrupted().await;
            *signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
            stop.cancel();
        })
    };
    let observer = Terminal {
        json_output: client_args.output == OutputFormat::Json,
    };
    let report = execute(&client, &request, &observer, stop.clone())
        .await
        .map_err(|e| anyhow!("{}: {e}", args.uri))?;
    let evaluation = match (&pipeline_job, report.status) {
        (Some(job), "FINISHED") => {
            evaluate_candidate(&client, job, &request, &report.run_id, &observer, stop)
                .await
                .err()
        }
        _ => None,
    };
    watcher.abort();
    let run_id = &report.run_id;
    match client_args.output {
        OutputFormat::Json => print_json(&json!({
            "run_id": run_id, "experiment_id": report.experiment_id, "status": report.status,
            "exit_code": report.exit_code, "command": report.command,
        }))?,
        OutputFormat::Table => eprintln!("=== Run {run_id} {} ===", report.status),
    }
    if let Some(changed) = &report.data_changed {
        bail!("run {run_id} did not train: {changed}");
    }
    if report.ci_failed {
        bail!("run {run_id} stopped: a CI check failed");
    }
    match report.status {
        "FINISHED" => match evaluation {
            Some(reason) => bail!("run {run_id} trained, but its evaluation failed: {reason}"),
            None => Ok(()),
        },
        "KILLED" => {
            let by = signal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or("a signal");
            bail!("run {run_id} was stopped by {by}")
        }
        _ => bail!(
            "run {run_id} failed: the command exited with {}",
            report
                .exit_code
                .map_or("a signal".to_string(), |c| c.to_string())
        ),
    }
}

/// The job a run trains for when it works for a CT pipeline run, from the server's record
/// of that run, with its data snapshot (the training input and the evaluation's data).
async fn pipeline_job(client: &TrackingClient, id: &str) -> Result<Job> {
    let described = client
        .describe_run(id)
        .await
        .map_err(|e| anyhow!("pipeline run {id}: {e}"))?;
    let mut job = Job::for_run(&described.pipeline_run, None);
    job.complete_snapshot(described.data_snapshot)
        .map_err(|why| anyhow!("pipeline run {id}: {why}"))?;
    Ok(job)
}
