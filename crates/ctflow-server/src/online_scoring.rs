//! Online scoring: registered judges score an experiment's new traces as they arrive.
//!
//! Every interval the server reads the active online scorers (a sampling rate above zero,
//! a gateway judge; `Store::active_online_scorers`) and, one experiment at a time, starts
//! a Python process (`online_scoring.py`) that runs MLflow's own trace- and
//! session-scoring processors against this server: traces since the experiment's
//! checkpoint tag are sampled, each judge calls its model through this server's AI gateway
//! (`/gateway/mlflow/v1/chat/completions`, which opens the provider key here), the
//! feedback is logged to the trace, and the checkpoint tag moves on. Using MLflow's
//! processors keeps the sampling, the windows, the prompts and the assessments exactly
//! MLflow's; ctflow decides when and for which experiments they run.
//!
//! Under `--auth` a pass signs in as the installation's service user with a token made for
//! it (sent as the Basic password) and deleted after it.
//!
//! A pass that fails (no Python with `mlflow`, a provider down) leaves the checkpoint
//! where it was, so the next pass retries the same traces.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ctflow_store::{OnlineScorer, Store};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The runner the Python process executes.
const RUNNER: &str = include_str!("online_scoring.py");

/// MLflow's switch for its server's background jobs (online scoring among them);
/// ctflow honours it.
pub const JOB_EXECUTION_ENV: &str = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION";

/// Whether `MLFLOW_SERVER_ENABLE_JOB_EXECUTION` leaves background jobs on (its default).
pub fn job_execution_enabled() -> bool {
    std::env::var(JOB_EXECUTION_ENV).map_or(true, |v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    })
}

/// The online scorer's settings.
#[derive(Clone)]
pub struct OnlineScoring {
    /// The tracking store the configurations are read from.
    pub store: Store,
    /// This server as the runner reaches it (`http://127.0.0.1:5000`).
    pub tracking_uri: String,
    /// Under `--auth`, the user the runner acts as: each pass signs in with a token of
    /// its own, made for the pass and deleted after it (expiring soon after, should this
    /// process die mid-pass).
    pub signer: Option<ctflow_store::auth::User>,
    /// This process's name on the per-experiment lease: servers sharing a database take
    /// turns, so one experiment's traces are never judged by two passes at once.
    pub holder: String,
    /// A Python with `mlflow` installed.
    pub python: PathBuf,
    /// Time between passes.
    pub interval: Duration,
    /// The longest one experiment's pass may take before it is stopped.
    pub pass_timeout: Duration,
}

/// How one experiment's pass ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PassOutcome {
    /// The runner finished; its summary line.
    Scored(String),
    /// The runner failed, or could not start; why.
    Failed(String),
    /// Another server's pass holds the experiment's lease.
    Busy,
}

/// The lease an experiment's pass holds: MLflow runs one scoring job per experiment at a time.
fn lease_name(experiment_id: &str) -> String {
    format!("online-scoring/{experiment_id}")
}

impl OnlineScoring {
    /// Passes every interval until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = &mut shutdown => return,
                _ = self.pass() => {}
            }
        }
    }

    /// One pass over every experiment with active online scorers.
    pub async fn pass(&self) -> Vec<(String, PassOutcome)> {
        let scorers = match self.store.active_online_scorers().await {
            Ok(scorers) => scorers,
            Err(error) => {
                tracing::warn!(%error, "online scoring: cannot read the scorers' configurations");
                return Vec::new();
            }
        };
        let mut by_experiment: BTreeMap<String, Vec<OnlineScorer>> = BTreeMap::new();
        for scorer in scorers {
            by_experiment
                .entry(scorer.online_config.experiment_id.clone())
                .or_default()
                .push(scorer);
        }
        let mut outcomes = Vec::with_capacity(by_experiment.len());
        for (experiment_id, scorers) in by_experiment {
            let outcome = self.leased_pass(&experiment_id, &scorers).await;
            match &outcome {
                PassOutcome::Scored(summary) => {
                    tracing::debug!(experiment_id, summary, "online scoring pass done")
                }
                PassOutcome::Failed(error) => {
                    tracing::warn!(experiment_id, error, "online scoring pass failed")
                }
                PassOutcome::Busy => {
                    tracing::debug!(experiment_id, "online scoring: another server's pass runs")
                }
            }
            outcomes.push((experiment_id, outcome));
        }
        outcomes
    }

    async fn leased_pass(&self, experiment_id: &str, scorers: &[OnlineScorer]) -> PassOutcome {
        let lease = lease_name(experiment_id);
        let ttl = self.pass_timeout + Duration::from_secs(60);
        match self.store.acquire_lease(&lease, &self.holder, ttl).await {
            Ok(Some(_)) => {}
            Ok(None) => return PassOutcome::Busy,
            Err(error) => return PassOutcome::Failed(format!("cannot take the lease: {error}")),
        }
        let token = match self.pass_token(ttl).await {
            Ok(token) => token,
            Err(error) => {
                let _ = self.store.release_lease(&lease, &self.holder).await;
                return PassOutcome::Failed(error);
            }
        };
        let outcome = self
            .score_experiment(experiment_id, scorers, token.as_ref().map(|t| t.0.as_str()))
            .await;
        if let Some((_, hash)) = &token
            && let Err(error) = self.store.delete_token_by_hash(hash).await
        {
            tracing::warn!(%error, "online scoring: cannot delete the pass's token (it expires on its own)");
        }
        if let Err(error) = self.store.release_lease(&lease, &self.holder).await {
            tracing::warn!(%error, "online scoring: cannot release the lease (it runs out on its own)");
        }
        outcome
    }

    /// A token for one pass (and its hash, to delete it), under `--auth`.
    async fn pass_token(&self, ttl: Duration) -> Result<Option<(String, String)>, String> {
        let Some(user) = &self.signer else {
            return Ok(None);
        };
        let (token, hash) = crate::auth::new_token().map_err(|e| e.message)?;
        let expires =
            ctflow_core::now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        self.store
            .create_token(user.id, "online scoring pass", &hash, Some(expires))
            .await
            .map_err(|e| format!("cannot make the pass's token: {e}"))?;
        Ok(Some((token, hash)))
    }

    async fn score_experiment(
        &self,
        experiment_id: &str,
        scorers: &[OnlineScorer],
        token: Option<&str>,
    ) -> PassOutcome {
        let input = json!({"experiment_id": experiment_id, "online_scorers": scorers});
        let mut command = tokio::process::Command::new(&self.python);
        command
            .arg("-c")
            .arg(RUNNER)
            .env("MLFLOW_TRACKING_URI", &self.tracking_uri)
            .env("MLFLOW_GATEWAY_URI", &self.tracking_uri)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // HTTP Basic with the token as the password: MLflow's gateway calls send only
        // Basic (from these two variables), and ctflow accepts a user's own token there.
        command.env_remove("MLFLOW_TRACKING_TOKEN");
        match (token, &self.signer) {
            (Some(token), Some(user)) => command
                .env("MLFLOW_TRACKING_USERNAME", &user.username)
                .env("MLFLOW_TRACKING_PASSWORD", token),
            _ => command
                .env_remove("MLFLOW_TRACKING_USERNAME")
                .env_remove("MLFLOW_TRACKING_PASSWORD"),
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return PassOutcome::Failed(format!("cannot start {}: {e}", self.python.display()));
            }
        };
        // NB: a runner that exits before reading its input (Python without mlflow, say)
        // breaks the pipe; its exit status and stderr, below, say why better than EPIPE.
        let mut unread = false;
        if let Some(mut stdin) = child.stdin.take() {
            let written = stdin.write_all(input.to_string().as_bytes()).await;
            drop(stdin);
            match written {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => unread = true,
                Err(e) => {
                    return PassOutcome::Failed(format!("cannot hand the scorers to Python: {e}"));
                }
                Ok(()) => {}
            }
        }
        let output = match tokio::time::timeout(self.pass_timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return PassOutcome::Failed(format!("the runner failed: {e}")),
            Err(_) => {
                return PassOutcome::Failed(format!(
                    "the pass took longer than {}s and was stopped",
                    self.pass_timeout.as_secs()
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && unread {
            PassOutcome::Failed("the runner exited without reading the scorers".to_string())
        } else if output.status.success() {
            PassOutcome::Scored(stdout.lines().last().unwrap_or_default().to_string())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            PassOutcome::Failed(format!(
                "the runner exited with {}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        }
    }
}
