//! Runs an MLflow project's entry point as a tracked run, the way `mlflow run` does: find
//! the project (a folder or a git checkout), build or reuse its environment, create the
//! run, run the CI checks, then the command in its own process group, streaming its output
//! and keeping it as the run's `ctflow-run.log` artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ctflow_bus::CiResult;
use ctflow_core::data::{DataSnapshot, MANIFEST_VAR, SNAPSHOT_TAG};
use ctflow_core::pipeline::CiCheck;
use ctflow_project::{
    Environment, Project, PythonEnvSpec, Source, parse_source, prepare_conda, prepare_virtualenv,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::tracking::RunStart;
use crate::client::{ClientError, TrackingClient};
use ctflow_core::entities::KeyValue;

/// How long a stopped command gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The output of a CI check kept on record.
const CI_TAIL_BYTES: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Project(#[from] ctflow_project::Error),
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Environment(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the command: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{0}")]
    Data(String),
}

/// Which experiment a new run goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExperimentRef {
    Default,
    Id(String),
    /// Created when missing.
    Name(String),
}

/// Everything about one project run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// A local folder (relative to `base_dir`) or a git URI with an optional
    /// `#subdirectory`.
    pub uri: String,
    pub base_dir: PathBuf,
    /// With a git URI: the commit, branch or tag.
    pub version: Option<String>,
    /// Run a local project whose git tree has uncommitted changes.
    pub allow_dirty: bool,
    pub entry_point: String,
    pub params: BTreeMap<String, String>,
    /// `local`, `virtualenv`, `uv` or `conda`.
    pub env_manager: String,
    /// Where built environments are cached.
    pub env_cache: PathBuf,
    pub experiment: ExperimentRef,
    pub run_name: Option<String>,
    /// Attach to this run instead of creating one.
    pub run_id: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Extra environment variables for the checks and the command.
    pub env: Vec<(String, String)>,
    pub ci_checks: Vec<CiCheck>,
    /// Whether a failing check stops the run (false: shadow mode, recorded only).
    pub ci_blocking: bool,
    pub timeout: Option<Duration>,
    pub user: String,
    /// The tracking URI the command logs to.
    pub tracking_uri: String,
    /// `mlflow.project.backend`: `local`, or `kubernetes` for a CT job run as a Job.
    pub backend: String,
    /// The training data snapshot the command reads, when the pipeline names its data.
    pub data: Option<TrainingInput>,
}

/// A training data snapshot as a run's input: its manifest reaches the command (file in
/// `CTFLOW_DATA_MANIFEST`, optionally a parameter), the run logs it as a dataset input,
/// and every file is checked against its digest before the command starts.
#[derive(Debug, Clone)]
pub struct TrainingInput {
    pub snapshot: DataSnapshot,
    /// The dataset's name in MLflow.
    pub dataset_name: String,
    /// Its `mlflow.data.context`: `training`, or `evaluation` for the gate's scoring runs.
    pub context: String,
    /// The project parameter that gets the manifest's path.
    pub parameter: Option<String>,
    /// Every file's digest is checked (a full read) when true; only the recorded size and
    /// time when false, for the evaluation runs that follow a full check in the same job.
    pub full_check: bool,
}

impl TrainingInput {
    /// The training input of a CT job: its data snapshot as the `<pipeline>-training`
    /// dataset, bound to the parameter the pipeline names.
    pub fn of_job(job: &ctflow_bus::Job) -> Option<TrainingInput> {
        let snapshot = job.snapshot.clone()?;
        Some(TrainingInput {
            snapshot,
            dataset_name: format!("{}-training", job.pipeline),
            context: "training".into(),
            parameter: job.spec.data.as_ref().and_then(|d| d.parameter.clone()),
            full_check: true,
        })
    }
}

/// One line of what a run prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Stdout(String),
    Stderr(String),
    /// ctflow's own progress lines (`=== ... ===`).
    Note(String),
}

/// Receives a run's output and milestones as they happen.
pub trait Observer: Send + Sync {
    fn line(&self, line: Line);
    /// The MLflow run exists.
    fn started(&self, _run_id: &str) {}
    /// The entry point's command runs as this process group.
    fn process(&self, _pid: u32) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Canceled,
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub experiment_id: String,
    /// `FINISHED`, `FAILED` or `KILLED`, as recorded on the run.
    pub status: &'static str,
    pub exit_code: Option<i32>,
    pub stopped: Option<StopReason>,
    pub ci: Vec<CiResult>,
    /// A blocking CI check failed, so the command did not run.
    pub ci_failed: bool,
    /// A training data file differs from its snapshot, so the command did not run: why.
    pub data_changed: Option<String>,
    pub command: String,
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

pub(crate) type GitInfo = Option<(String, Option<String>)>;

/// A git checkout made for one run, removed when the run ends.
struct Checkout(Option<PathBuf>);

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A manifest file written for one run, removed when the run ends.
struct ManifestFile(PathBuf);

impl ManifestFile {
    fn write(snapshot: &DataSnapshot) -> Result<ManifestFile, ExecError> {
        let dir = std::env::temp_dir().join("ctflow-manifests");
        let path = dir.join(format!("{}-{}.json", snapshot.digest(), uuid_like()));
        let text = serde_json::to_vec_pretty(snapshot)
            .map_err(|e| ExecError::Data(format!("cannot write the data manifest: {e}")))?;
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&path, text))
            .map_err(|e| {
                ExecError::Data(format!(
                    "cannot write the data manifest {}: {e}",
                    path.display()
                ))
            })?;
        Ok(ManifestFile(path))
    }
}

impl Drop for ManifestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Finds the project folder: a local folder as it is (refusing a dirty git tree unless
/// allowed), or a fresh clone of a git repository at `version`.
fn resolve_source(
    request: &RunRequest,
    checkout: &mut Checkout,
) -> Result<(PathBuf, String, GitInfo), ExecError> {
    let source_error = |m: String| ExecError::Source(m);
    match parse_source(&request.uri)? {
        Source::Local(path) => {
            if request.version.is_some() {
                return Err(source_error(format!(
                    "a version needs a git repository URI, not the local folder '{path}'"
                )));
            }
            let dir = std::fs::canonicalize(request.base_dir.join(&path))
                .map_err(|e| source_error(format!("no project folder at '{path}': {e}")))?;
            let commit = git(&dir, &["rev-parse", "HEAD"]);
            if commit.is_some() && !request.allow_dirty {
                let dirty = git(&dir, &["status", "--porcelain", "--", "."]);
                if let Some(changes) = dirty {
                    return Err(source_error(format!(
                        "the project's git working tree has uncommitted changes, so the recorded commit would not be what ran:\n{changes}\ncommit them, or allow a dirty tree (--allow-dirty)"
                    )));
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
                uuid_like()
            ));
            checkout.0 = Some(root.clone());
            let status = std::process::Command::new("git")
                .args(["clone", "--quiet", &repo])
                .arg(&root)
                .status()
                .map_err(|e| source_error(format!("cannot run git: {e}")))?;
            if !status.success() {
                return Err(source_error(format!("git clone of '{repo}' failed")));
            }
            if let Some(version) = &request.version {
                let status = std::process::Command::new("git")
                    .arg("-C")
                    .arg(&root)
                    .args(["checkout", "--quiet", version])
                    .status()
                    .map_err(|e| source_error(format!("cannot run git: {e}")))?;
                if !status.success() {
                    return Err(source_error(format!(
                        "cannot check out version '{version}' of '{repo}'"
                    )));
                }
            }
            let commit = git(&root, &["rev-parse", "HEAD"])
                .ok_or_else(|| source_error(format!("the clone of '{repo}' has no commit")))?;
            let dir = match &subdirectory {
                Some(sub) => root.join(sub),
                None => root.clone(),
            };
            if !dir.is_dir() {
                return Err(source_error(format!(
                    "'{repo}' has no folder '{}'",
                    subdirectory.unwrap_or_default()
                )));
            }
            let name = match &subdirectory {
                Some(sub) => format!("{repo}#{sub}"),
                None => repo.clone(),
            };
            Ok((dir, name, Some((commit, Some(repo)))))
        }
    }
}

/// Unique enough for a scratch folder name: time and a per-process counter.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        ctflow_core::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub use ctflow_project::default_env_cache;

/// Builds or reuses the project's environment; returns the folder to put first on PATH.
async fn prepare_environment(
    project: &Project,
    manager: &str,
    cache: &Path,
    observer: &dyn Observer,
) -> Result<Option<PathBuf>, ExecError> {
    let environment = project.environment.clone();
    let cache = cache.to_path_buf();
    let env_error = |m: String| ExecError::Environment(m);
    let job: Box<dyn FnOnce() -> ctflow_project::Result<ctflow_project::PreparedEnv> + Send> =
        match manager {
            "local" => return Ok(None),
            "virtualenv" | "uv" => {
                let spec = match &environment {
                    Environment::Python(path) => PythonEnvSpec::load(path)?,
                    Environment::None => PythonEnvSpec {
                        python: None,
                        build_dependencies: Vec::new(),
                        dependencies: Vec::new(),
                    },
                    Environment::Conda(_) => {
                        return Err(env_error(
                            "the project describes a conda environment; use the conda env manager"
                                .into(),
                        ));
                    }
                    Environment::Docker { image } => {
                        return Err(env_error(format!(
                            "the project runs in the docker image {image}; docker environments are not available yet"
                        )));
                    }
                };
                let cache = cache.clone();
                // Both managers build with uv when it is on PATH (it can fetch the
                // requested Python), else with python3 -m venv and pip.
                Box::new(move || prepare_virtualenv(&spec, &cache, true))
            }
            "conda" => {
                let Environment::Conda(conda_yaml) = environment else {
                    return Err(env_error(
                        "the conda env manager needs a project with conda_env (conda.yaml)".into(),
                    ));
                };
                let cache = cache.clone();
                Box::new(move || prepare_conda(&conda_yaml, &cache))
            }
            other => {
                return Err(env_error(format!(
                    "unknown env manager '{other}': use local, virtualenv, uv or conda"
                )));
            }
        };
    observer.line(Line::Note(format!(
        "=== Preparing the {manager} environment (cache {}) ===",
        cache.display()
    )));
    let prepared = tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| env_error(format!("the environment builder stopped: {e}")))??;
    observer.line(Line::Note(if prepared.created {
        format!(
            "=== Created the environment at {} ===",
            prepared.root.display()
        )
    } else {
        format!(
            "=== Reusing the cached environment at {} ===",
            prepared.root.display()
        )
    }));
    Ok(Some(prepared.bin))
}

async fn experiment_id(
    client: &TrackingClient,
    experiment: &ExperimentRef,
) -> Result<String, ClientError> {
    match experiment {
        ExperimentRef::Default => Ok("0".into()),
        ExperimentRef::Id(id) => Ok(id.clone()),
        ExperimentRef::Name(name) => client.experiment_id(name).await,
    }
}

/// Stops a process group: SIGTERM, then SIGKILL after a grace period.
pub async fn stop_group(pgid: u32, child: &mut tokio::process::Child) {
    signal_group(pgid, "-TERM");
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        signal_group(pgid, "-KILL");
        let _ = child.wait().await;
    }
}

/// Sends a signal to a whole process group (`-TERM`, `-KILL`).
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Where a command runs: folder, PATH with the environment first, MLflow variables.
struct CommandEnv<'a> {
    dir: &'a Path,
    env_bin: Option<&'a Path>,
    vars: Vec<(String, String)>,
}

impl CommandEnv<'_> {
    fn command(&self, shell_command: &str) -> Result<tokio::process::Command, ExecError> {
        let mut command = tokio::process::Command::new("sh");
        if let Some(bin) = self.env_bin {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(
                std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
            )
            .map_err(|e| ExecError::Environment(format!("cannot build PATH: {e}")))?;
            command
                .env("PATH", joined)
                .env("VIRTUAL_ENV", bin.parent().unwrap_or(bin));
        }
        command
            .arg("-c")
            .arg(shell_command)
            .current_dir(self.dir)
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Ok(command)
    }
}

/// How a supervised command ended.
struct Ended {
    exit_code: Option<i32>,
    stopped: Option<StopReason>,
    output: String,
}

/// Runs a command to its end, a stop request or the deadline, streaming its lines.
async fn supervise(
    mut command: tokio::process::Command,
    observer: &dyn Observer,
    stop: &CancellationToken,
    deadline: Option<Instant>,
    report_pid: bool,
) -> Result<Ended, ExecError> {
    let mut child = command.spawn().map_err(ExecError::Spawn)?;
    let Some(pgid) = child.id() else {
        let status = child.wait().await.map_err(ExecError::Spawn)?;
        return Ok(Ended {
            exit_code: status.code(),
            stopped: None,
            output: String::new(),
        });
    };
    if report_pid {
        observer.process(pgid);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, String)>();
    let streams: [(bool, Option<Box<dyn AsyncRead + Send + Unpin>>); 2] = [
        (
            false,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ),
        (
            true,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ),
    ];
    for (is_err, stream) in streams {
        let Some(stream) = stream else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((is_err, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut output = String::new();
    let sleep_until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until);
    let mut stopped = None;
    let mut exit = None;
    let mut streams_open = true;
    while exit.is_none() || streams_open {
        tokio::select! {
            line = rx.recv(), if streams_open => match line {
                Some((is_err, line)) => {
                    output.push_str(&line);
                    output.push('\n');
                    observer.line(if is_err { Line::Stderr(line) } else { Line::Stdout(line) });
                }
                None => streams_open = false,
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.ok().and_then(|s| s.code()));
                // Grandchildren may keep the pipes open; stop waiting for them soon.
                if streams_open {
                    let rest = tokio::time::timeout(Duration::from_millis(500), async {
                        while let Some((is_err, line)) = rx.recv().await {
                            output.push_str(&line);
                            output.push('\n');
                            observer.line(if is_err { Line::Stderr(line) } else { Line::Stdout(line) });
                        }
                    });
                    let _ = rest.await;
                    streams_open = false;
                }
            },
            _ = stop.cancelled(), if exit.is_none() && stopped.is_none() => {
                stopped = Some(StopReason::Canceled);
                stop_group(pgid, &mut child).await;
            },
            _ = &mut sleep_until, if exit.is_none() && stopped.is_none() => {
                stopped = Some(StopReason::TimedOut);
                stop_group(pgid, &mut child).await;
            },
        }
    }
    Ok(Ended {
        exit_code: exit.flatten(),
        stopped,
        output,
    })
}

fn tail(text: &str, bytes: usize) -> String {
    if text.len() <= bytes {
        return text.to_string();
    }
    let mut start = text.len() - bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Creates the tracked run of a project run, with MLflow's project tags and the request's
/// own; returns (run id, experiment id, artifact URI).
pub(crate) async fn create_run(
    client: &TrackingClient,
    request: &RunRequest,
    source_name: &str,
    entry_name: &str,
    git_info: &GitInfo,
) -> Result<(String, String, String), ExecError> {
    let experiment_id = experiment_id(client, &request.experiment).await?;
    let mut tags = vec![
        KeyValue::new("mlflow.user", &request.user),
        KeyValue::new("mlflow.source.name", source_name),
        KeyValue::new("mlflow.source.type", "PROJECT"),
        KeyValue::new("mlflow.project.entryPoint", entry_name),
        KeyValue::new("mlflow.project.backend", &request.backend),
    ];
    if request.env_manager != "local" {
        tags.push(KeyValue::new("mlflow.project.env", &request.env_manager));
    }
    if let Some((commit, repo_url)) = git_info {
        tags.push(KeyValue::new("mlflow.source.git.commit", commit));
        if let Some(url) = repo_url {
            tags.push(KeyValue::new("mlflow.source.git.repoURL", url));
        }
    }
    for (key, value) in &request.tags {
        tags.push(KeyValue::new(key, value));
    }
    let run = client
        .create_run(&RunStart {
            experiment_id: experiment_id.clone(),
            run_name: request.run_name.clone(),
            user_id: Some(request.user.clone()),
            start_time: ctflow_core::now_ms(),
            tags,
        })
        .await?;
    Ok((run.info.run_id, experiment_id, run.info.artifact_uri))
}

/// Runs the project as a tracked run. Errors before the run exists come back as
/// `Err`; once it exists, failures are recorded on it and reported in the `RunReport`.
pub async fn execute(
    client: &TrackingClient,
    request: &RunRequest,
    observer: &dyn Observer,
    stop: CancellationToken,
) -> Result<RunReport, ExecError> {
    let started_at = Instant::now();
    let deadline = request.timeout.map(|t| started_at + t);
    let mut checkout = Checkout(None);
    let (project_dir, source_name, git_info) = resolve_source(request, &mut checkout)?;
    let project = Project::load(&project_dir)?;
    let entry = project.entry_point(&request.entry_point)?;
    let manifest = match &request.data {
        Some(data) => Some(ManifestFile::write(&data.snapshot)?),
        None => None,
    };
    let mut params = request.params.clone();
    if let (Some(data), Some(manifest)) = (&request.data, &manifest)
        && let Some(parameter) = &data.parameter
    {
        params.insert(parameter.clone(), manifest.0.to_string_lossy().to_string());
    }
    let rendered = entry.render(&params, &request.base_dir)?;
    let env_bin =
        prepare_environment(&project, &request.env_manager, &request.env_cache, observer).await?;

    let (run_id, experiment_id, artifact_uri) = match &request.run_id {
        Some(run_id) => {
            let info = client.get_run(run_id).await?.info;
            (run_id.clone(), info.experiment_id, info.artifact_uri)
        }
        None => create_run(client, request, &source_name, &entry.name, &git_info).await?,
    };
    observer.started(&run_id);
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
    let mut vars = vec![
        ("MLFLOW_RUN_ID".to_string(), run_id.clone()),
        (
            "MLFLOW_TRACKING_URI".to_string(),
            request.tracking_uri.clone(),
        ),
        ("MLFLOW_EXPERIMENT_ID".to_string(), experiment_id.clone()),
    ];
    if let (Some(data), Some(manifest)) = (&request.data, &manifest) {
        vars.push((
            MANIFEST_VAR.to_string(),
            manifest.0.to_string_lossy().to_string(),
        ));
        log_training_input(client, &run_id, data).await?;
    }
    vars.extend(request.env.iter().cloned());
    let command_env = CommandEnv {
        dir: &project.dir,
        env_bin: env_bin.as_deref(),
        vars,
    };

    let mut log = String::new();
    let mut ci = Vec::new();
    let mut ci_failed = false;
    let mut stopped = None;
    for (i, check) in request.ci_checks.iter().enumerate() {
        let name = check
            .name
            .clone()
            .unwrap_or_else(|| format!("check-{}", i + 1));
        let note = format!("=== CI check '{name}': {} ===", check.run);
        observer.line(Line::Note(note.clone()));
        log.push_str(&note);
        log.push('\n');
        let check_started = Instant::now();
        let ended = supervise(
            command_env.command(&check.run)?,
            observer,
            &stop,
            deadline,
            false,
        )
        .await?;
        log.push_str(&ended.output);
        let passed = ended.stopped.is_none() && ended.exit_code == Some(0);
        ci.push(CiResult {
            name: name.clone(),
            command: check.run.clone(),
            exit_code: ended.exit_code,
            passed,
            output_tail: tail(&ended.output, CI_TAIL_BYTES),
            duration_ms: check_started.elapsed().as_millis() as i64,
        });
        if ended.stopped.is_some() {
            stopped = ended.stopped;
            break;
        }
        if !passed && request.ci_blocking {
            ci_failed = true;
            break;
        }
    }
    if !ci.is_empty() {
        let verdict = if ci.iter().all(|c| c.passed) {
            "passed"
        } else {
            "failed"
        };
        client
            .post(
                "runs/set-tag",
                &json!({"run_id": run_id, "key": "ctflow.ci", "value": verdict}),
            )
            .await?;
    }

    let mut data_changed = None;
    if let Some(data) = request
        .data
        .as_ref()
        .filter(|_| stopped.is_none() && !ci_failed)
    {
        let stores = ctflow_data::ObjectStores::default();
        let checked = if data.full_check {
            ctflow_data::verify(&data.snapshot, &stores).await
        } else {
            ctflow_data::check_recorded_facts(&data.snapshot, &stores).await
        };
        match checked {
            Ok(()) => {
                let note = format!(
                    "=== Training data: snapshot {} ({} files, {} rows) checked ===",
                    data.snapshot.digest(),
                    data.snapshot.files.len(),
                    data.snapshot.rows
                );
                observer.line(Line::Note(note.clone()));
                log.push_str(&note);
                log.push('\n');
            }
            Err(error) => {
                let note = format!("=== Training data: {error}; not training ===");
                observer.line(Line::Note(note.clone()));
                log.push_str(&note);
                log.push('\n');
                data_changed = Some(error.to_string());
            }
        }
    }

    let mut exit_code = None;
    if stopped.is_none() && !ci_failed && data_changed.is_none() {
        tracing::info!(
            run_id,
            command = rendered.command,
            "starting the entry point"
        );
        let note = format!(
            "=== Running command '{}' in run {run_id} ===",
            rendered.command
        );
        observer.line(Line::Note(note.clone()));
        log.push_str(&note);
        log.push('\n');
        let ended = supervise(
            command_env.command(&rendered.command)?,
            observer,
            &stop,
            deadline,
            true,
        )
        .await?;
        log.push_str(&ended.output);
        exit_code = ended.exit_code;
        stopped = ended.stopped;
    }
    let status = match (stopped, ci_failed, exit_code) {
        (Some(_), _, _) => "KILLED",
        (None, false, Some(0)) => "FINISHED",
        _ => "FAILED",
    };
    match client
        .put_artifact(&artifact_uri, "ctflow-run.log", log)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            artifact_uri,
            "the run's output is not stored: its artifacts are not served by the tracking server"
        ),
        Err(error) => tracing::warn!(%error, "cannot store the run's output as an artifact"),
    }
    client
        .post(
            "runs/update",
            &json!({ "run_id": run_id, "status": status, "end_time": ctflow_core::now_ms() }),
        )
        .await?;
    Ok(RunReport {
        run_id,
        experiment_id,
        status,
        exit_code,
        stopped,
        ci,
        ci_failed,
        data_changed,
        command: rendered.command,
    })
}

/// Logs a data snapshot on the run the MLflow way (a dataset input with its context) and
/// tags the run with the snapshot's id.
async fn log_training_input(
    client: &TrackingClient,
    run_id: &str,
    data: &TrainingInput,
) -> Result<(), ExecError> {
    client
        .post(
            "runs/log-inputs",
            &json!({
                "run_id": run_id,
                "datasets": [data.snapshot.dataset_input(&data.dataset_name, &data.context)],
            }),
        )
        .await?;
    client
        .post(
            "runs/set-tag",
            &json!({"run_id": run_id, "key": SNAPSHOT_TAG, "value": data.snapshot.id}),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_end_on_a_char_boundary() {
        assert_eq!(tail("short", 10), "short");
        let text = "é".repeat(10);
        let t = tail(&text, 5);
        assert!(t.starts_with("..."));
        assert!(t.len() <= 3 + 6);
    }
}
