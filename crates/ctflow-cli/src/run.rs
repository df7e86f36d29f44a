//! `ctflow run`: runs an MLflow project's entry point as a tracked run, the way
//! `mlflow run` does, on any MLflow-compatible tracking server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ctflow_project::{
    Environment, Project, PythonEnvSpec, Source, parse_source, prepare_conda, prepare_virtualenv,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::client::TrackingClient;
use crate::commands::{print_json, text};
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
    #[arg(long)]
    pub run_id: Option<String>,
    /// Which environment runs the command: `local` (the python on PATH), `virtualenv` or
    /// `uv` (python_env.yaml, built with uv when it is on PATH, else python -m venv + pip),
    /// or `conda` (conda.yaml, needs conda on PATH); built environments are cached
    /// by their spec under $CTFLOW_ENV_DIR (default ~/.cache/ctflow/envs).
    #[arg(long, default_value = "local")]
    pub env_manager: String,
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{raw}' is not of the form name=value")),
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn experiment_id(client: &TrackingClient, args: &RunArgs) -> Result<String> {
    if let Some(id) = &args.experiment_id {
        return Ok(id.clone());
    }
    let Some(name) = &args.experiment_name else {
        return Ok("0".into());
    };
    match client
        .get(
            "experiments/get-by-name",
            &[("experiment_name", name.clone())],
        )
        .await
    {
        Ok(found) => Ok(text(&found["experiment"], "experiment_id")),
        Err(e) if e.to_string().contains("RESOURCE_DOES_NOT_EXIST") => {
            let created = client
                .post("experiments/create", &json!({ "name": name }))
                .await?;
            Ok(text(&created, "experiment_id"))
        }
        Err(e) => Err(e),
    }
}

/// Stops the child's whole process group: SIGTERM, then SIGKILL after a grace period.
async fn stop_group(pgid: u32, child: &mut tokio::process::Child) {
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{pgid}")])
            .status();
    };
    signal("-TERM");
    if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        signal("-KILL");
        let _ = child.wait().await;
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

type GitInfo = Option<(String, Option<String>)>;

/// A git checkout made for one run, removed when the run ends.
struct Checkout(Option<PathBuf>);

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Finds the project folder: a local folder as it is (refusing a dirty git tree unless
/// --allow-dirty), or a fresh clone of a git repository at --version, which `checkout`
/// removes when it is dropped.
fn resolve_source(args: &RunArgs, checkout: &mut Checkout) -> Result<(PathBuf, String, GitInfo)> {
    match parse_source(&args.uri).map_err(|e| anyhow!(e))? {
        Source::Local(path) => {
            if args.version.is_some() {
                bail!("--version needs a git repository URI, not the local folder '{path}'");
            }
            let dir = std::fs::canonicalize(&path)
                .with_context(|| format!("no project folder at '{path}'"))?;
            let commit = git(&dir, &["rev-parse", "HEAD"]);
            if commit.is_some() && !args.allow_dirty {
                let dirty = git(&dir, &["status", "--porcelain", "--", "."]);
                if let Some(changes) = dirty {
                    bail!(
                        "the project's git working tree has uncommitted changes, so the recorded commit would not be what ran:\n{changes}\ncommit them, or pass --allow-dirty"
                    );
                }
            }
            let info = commit.map(|c| (c, git(&dir, &["remote", "get-url", "origin"])));
            let name = dir.display().to_string();
            Ok((dir, name, info))
        }
        Source::Git { repo, subdirectory } => {
            let root = std::env::temp_dir().join(format!(
                "ctflow-checkout-{}-{}",
                std::process::id(),
                ctflow_core::now_ms()
            ));
            checkout.0 = Some(root.clone());
            let status = std::process::Command::new("git")
                .args(["clone", "--quiet", &repo])
                .arg(&root)
                .status()
                .context("cannot run git")?;
            if !status.success() {
                bail!("git clone of '{repo}' failed");
            }
            if let Some(version) = &args.version {
                let status = std::process::Command::new("git")
                    .arg("-C")
                    .arg(&root)
                    .args(["checkout", "--quiet", version])
                    .status()
                    .context("cannot run git")?;
                if !status.success() {
                    bail!("cannot check out version '{version}' of '{repo}'");
                }
            }
            let commit = git(&root, &["rev-parse", "HEAD"])
                .ok_or_else(|| anyhow!("the clone of '{repo}' has no commit"))?;
            let dir = match &subdirectory {
                Some(sub) => root.join(sub),
                None => root.clone(),
            };
            if !dir.is_dir() {
                bail!(
                    "'{repo}' has no folder '{}'",
                    subdirectory.unwrap_or_default()
                );
            }
            let name = match &subdirectory {
                Some(sub) => format!("{repo}#{sub}"),
                None => repo.clone(),
            };
            Ok((dir, name, Some((commit, Some(repo)))))
        }
    }
}

fn env_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CTFLOW_ENV_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("ctflow").join("envs")
}

/// Builds or reuses the project's environment; returns the folder to put first on PATH.
async fn prepare_environment(project: &Project, manager: &str) -> Result<Option<PathBuf>> {
    let cache = env_cache_dir();
    let environment = project.environment.clone();
    let manager_name = manager.to_string();
    let job: Box<dyn FnOnce() -> ctflow_project::Result<ctflow_project::PreparedEnv> + Send> =
        match manager {
            "local" => return Ok(None),
            "virtualenv" | "uv" => {
                let spec = match &environment {
                    Environment::Python(path) => {
                        PythonEnvSpec::load(path).map_err(|e| anyhow!(e))?
                    }
                    Environment::None => PythonEnvSpec {
                        python: None,
                        build_dependencies: Vec::new(),
                        dependencies: Vec::new(),
                    },
                    Environment::Conda(_) => {
                        bail!("the project describes a conda environment; use --env-manager conda")
                    }
                    Environment::Docker { image } => {
                        bail!(
                            "the project runs in the docker image {image}; docker environments are not available yet"
                        )
                    }
                };
                // Both managers build with uv when it is on PATH (it can fetch the requested
                // Python), else with python3 -m venv and pip.
                let use_uv = true;
                let cache = cache.clone();
                Box::new(move || prepare_virtualenv(&spec, &cache, use_uv))
            }
            "conda" => {
                let Environment::Conda(conda_yaml) = environment else {
                    bail!("--env-manager conda needs a project with conda_env (conda.yaml)");
                };
                let cache = cache.clone();
                Box::new(move || prepare_conda(&conda_yaml, &cache))
            }
            other => bail!("unknown --env-manager '{other}': use local, virtualenv, uv or conda"),
        };
    eprintln!(
        "=== Preparing the {manager_name} environment (cache {}) ===",
        cache.display()
    );
    let prepared = tokio::task::spawn_blocking(job)
        .await
        .context("the environment builder stopped")?
        .map_err(|e| anyhow!(e))?;
    if prepared.created {
        eprintln!(
            "=== Created the environment at {} ===",
            prepared.root.display()
        );
    } else {
        eprintln!(
            "=== Reusing the cached environment at {} ===",
            prepared.root.display()
        );
    }
    Ok(Some(prepared.bin))
}

pub async fn run(args: RunArgs, client_args: &ClientArgs) -> Result<()> {
    let mut checkout = Checkout(None);
    let (project_dir, source_name, git_info) = resolve_source(&args, &mut checkout)?;
    let project = Project::load(&project_dir).map_err(|e| anyhow!("{}: {e}", args.uri))?;
    let entry = project
        .entry_point(&args.entry_point)
        .map_err(|e| anyhow!(e))?;
    let given: BTreeMap<String, String> = args.params.iter().cloned().collect();
    let cwd = std::env::current_dir()?;
    let rendered = entry.render(&given, &cwd).map_err(|e| anyhow!(e))?;
    let env_bin = prepare_environment(&project, &args.env_manager).await?;

    let client = TrackingClient::new(&client_args.tracking_uri)?;
    let (run_id, experiment_id, artifact_uri) = match &args.run_id {
        Some(run_id) => {
            let run = client
                .get("runs/get", &[("run_id", run_id.clone())])
                .await?;
            let info = &run["run"]["info"];
            (
                run_id.clone(),
                text(info, "experiment_id"),
                text(info, "artifact_uri"),
            )
        }
        None => {
            let experiment_id = experiment_id(&client, &args).await?;
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let mut tags = vec![
                json!({"key": "mlflow.user", "value": user}),
                json!({"key": "mlflow.source.name", "value": source_name}),
                json!({"key": "mlflow.source.type", "value": "PROJECT"}),
                json!({"key": "mlflow.project.entryPoint", "value": entry.name}),
                json!({"key": "mlflow.project.backend", "value": "local"}),
            ];
            if args.env_manager != "local" {
                tags.push(json!({"key": "mlflow.project.env", "value": args.env_manager}));
            }
            if let Some((commit, repo_url)) = &git_info {
                tags.push(json!({"key": "mlflow.source.git.commit", "value": commit}));
                if let Some(url) = repo_url {
                    tags.push(json!({"key": "mlflow.source.git.repoURL", "value": url}));
                }
            }
            let mut body = json!({
                "experiment_id": experiment_id,
                "user_id": user,
                "start_time": ctflow_core::now_ms(),
                "tags": tags,
            });
            if let Some(name) = &args.run_name {
                body["run_name"] = json!(name);
            }
            let run = client.post("runs/create", &body).await?;
            let info = &run["run"]["info"];
            (
                text(info, "run_id"),
                experiment_id,
                text(info, "artifact_uri"),
            )
        }
    };
    let params: Vec<Value> = rendered
        .parameters
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    for chunk in params.chunks(100) {
        client
            .post(
                "runs/log-batch",
                &json!({ "run_id": run_id, "params": chunk }),
            )
            .await?;
    }
    tracing::info!(
        run_id,
        command = rendered.command,
        "starting the entry point"
    );
    eprintln!(
        "=== Running command '{}' in run {run_id} ===",
        rendered.command
    );

    let mut command = tokio::process::Command::new("sh");
    if let Some(bin) = &env_bin {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined =
            std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)))?;
        command
            .env("PATH", joined)
            .env("VIRTUAL_ENV", bin.parent().unwrap_or(bin));
    }
    let mut child = command
        .arg("-c")
        .arg(&rendered.command)
        .current_dir(&project.dir)
        .env("MLFLOW_RUN_ID", &run_id)
        .env("MLFLOW_TRACKING_URI", &client_args.tracking_uri)
        .env("MLFLOW_EXPERIMENT_ID", &experiment_id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("cannot start the entry point's command")?;
    let pgid = child
        .id()
        .ok_or_else(|| anyhow!("the command exited before it could be tracked"))?;

    // Both streams go to the terminal as they come and into one log kept as an artifact.
    // With --output json the child's stdout goes to stderr, so stdout stays parseable.
    let json_output = client_args.output == OutputFormat::Json;
    let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<(bool, String)>();
    for (is_err, stream) in [
        (
            false,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            true,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(stream) = stream else { continue };
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((is_err, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(lines_tx);
    let collector = tokio::spawn(async move {
        let mut log = String::new();
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        while let Some((is_err, line)) = lines_rx.recv().await {
            let out = format!("{line}\n");
            let _ = if is_err || json_output {
                stderr.write_all(out.as_bytes()).await
            } else {
                stdout.write_all(out.as_bytes()).await
            };
            log.push_str(&out);
        }
        log
    });

    let (status, killed_by) = tokio::select! {
        status = child.wait() => (status.ok(), None),
        signal = interrupted() => {
            stop_group(pgid, &mut child).await;
            (None, Some(signal))
        }
    };
    let log = collector.await.unwrap_or_default();
    let exit_code = status.and_then(|s| s.code());
    let run_status = match (killed_by, exit_code) {
        (Some(_), _) => "KILLED",
        (None, Some(0)) => "FINISHED",
        _ => "FAILED",
    };
    if let Some(path) = artifact_uri.strip_prefix("mlflow-artifacts:") {
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/ctflow-run.log",
            client.base(),
            path.trim_matches('/')
        );
        if let Err(error) = client
            .http()
            .put(&url)
            .body(log)
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            tracing::warn!(%error, "cannot store the run's output as an artifact");
        }
    } else {
        tracing::warn!(
            artifact_uri,
            "the run's output is not stored: its artifacts are not served by the tracking server"
        );
    }
    client
        .post(
            "runs/update",
            &json!({ "run_id": run_id, "status": run_status, "end_time": ctflow_core::now_ms() }),
        )
        .await?;
    match client_args.output {
        OutputFormat::Json => print_json(&json!({
            "run_id": run_id, "experiment_id": experiment_id, "status": run_status,
            "exit_code": exit_code, "command": rendered.command,
        }))?,
        OutputFormat::Table => eprintln!("=== Run {run_id} {run_status} ==="),
    }
    match run_status {
        "FINISHED" => Ok(()),
        "KILLED" => bail!(
            "run {run_id} was stopped by {}",
            killed_by.unwrap_or("a signal")
        ),
        _ => bail!(
            "run {run_id} failed: the command exited with {}",
            exit_code.map_or("a signal".to_string(), |c| c.to_string())
        ),
    }
}
