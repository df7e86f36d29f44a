//! The worker pool: N workers take jobs from the bus and run them as processes.
//! GPUs are a resource of the pool: a job that asks for some gets its own through
//! `CUDA_VISIBLE_DEVICES` and waits until enough are free.
//!
//! A job is settled on the bus only after its report is: a worker that dies mid-job
//! leaves it to be delivered again, and the next worker marks the dead attempt's MLflow
//! run failed before it starts over. Before it runs a job, a worker asks the server
//! whether the pipeline run still wants that attempt, so a duplicate or stale delivery
//! never trains twice.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctflow_bus::{Bus, CiResult, Delivery, Job, JobEvent, JobStatus, Lease};
use ctflow_client::ct::{DescribedRun, JobClaim};
use ctflow_core::gpu::{GpuPool, parse_nvidia_smi_indices};
use ctflow_core::pipeline_run::PipelineRun;
use ctflow_core::schedule::logical_time_text;
use ctflow_metrics::{JobLabels, Metrics};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::TrackingClient;
use crate::execute::{
    ExperimentRef, Line, Observer, RunRequest, StopReason, TrainingInput, create_run, execute,
};
use crate::runner::{JobRunner, TrackedRun};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    /// The tracking server the jobs log to.
    pub tracking_uri: String,
    /// Each attempt's output goes to `<logs_dir>/<pipeline run>-<attempt>.log`.
    pub logs_dir: PathBuf,
    pub env_cache: PathBuf,
    /// The GPU indices this pool hands out.
    pub gpus: Vec<u32>,
    /// Who the runs are recorded as.
    pub user: String,
    /// On shutdown, running jobs get this long to finish before they are stopped and
    /// handed back to the bus for another worker.
    pub shutdown_grace: Duration,
    /// How often one attempt may be started by workers that then died (their runs are
    /// tagged `ctflow.worker_lost`); the next delivery records the attempt as failed.
    pub max_starts: u32,
    /// A token the pool signs in with and hands its jobs as `MLFLOW_TRACKING_TOKEN`
    /// (`ctflow up --auth`); without one the environment's credentials are used.
    pub tracking_token: Option<String>,
}

/// How often processes left by dead workers are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(2);
/// A job the server could not be asked about comes back after this long.
const HAND_BACK_DELAY: Duration = Duration::from_secs(1);

/// The run tag that holds a finished job's outcome (status, message, CI results).
const OUTCOME_TAG: &str = "ctflow.outcome";
/// MLflow's limit on a tag value.
const OUTCOME_TAG_LIMIT: usize = 8000;

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordedOutcome {
    status: JobStatus,
    message: String,
    ci: Vec<CiResult>,
}

/// What became of the earlier deliveries of a job.
enum Earlier {
    /// One finished it; this is its report.
    Finished(JobEvent),
    /// None finished it; this many of its runs were lost with their workers.
    Lost(u32),
}

/// What becomes of a delivery.
enum Outcome {
    /// Report this to the controller, then settle the delivery.
    Report(JobEvent),
    /// Not finished here: another worker takes it.
    HandBack(String),
    /// Stale or duplicate: settle it without running or reporting.
    Drop,
    /// Another worker runs it: neither settle nor hand back this delivery. The other
    /// worker's lease keeps the job and settles it; if that worker died, the job comes
    /// back as a redelivery, which takes it over. Settling it here would lose the job
    /// with that worker; handing it back would start it again beside a live one.
    Leave(String),
}

/// Finds local GPUs with `nvidia-smi`; none when it is missing or finds none.
pub fn discover_gpus() -> Vec<u32> {
    match std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index", "--format=csv,noheader"])
        .output()
    {
        Ok(output) if output.status.success() => {
            parse_nvidia_smi_indices(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// Settles a reported job, trying again for a while: a lost ack means the job comes
/// back (and is then reported again from its run's recorded outcome).
async fn settle(lease: &dyn Lease, job: &Job) {
    let mut tries = 0;
    loop {
        match lease.done().await {
            Ok(()) => return,
            Err(error) if tries < 20 => {
                tries += 1;
                tracing::debug!(%error, tries, "cannot settle a finished job yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                tracing::warn!(%error, pipeline_run = job.pipeline_run, "cannot settle a finished job; it comes again and is reported from its recorded outcome");
                return;
            }
        }
    }
}

fn finished(
    job: &Job,
    status: JobStatus,
    run_id: Option<String>,
    message: String,
    ci: Vec<CiResult>,
) -> JobEvent {
    JobEvent::Finished {
        pipeline_run: job.pipeline_run.clone(),
        attempt: job.attempt,
        status,
        run_id,
        message,
        ci,
    }
}

struct Gpus {
    pool: Mutex<GpuPool>,
    freed: Notify,
}

impl Gpus {
    fn lock(&self) -> std::sync::MutexGuard<'_, GpuPool> {
        // NB: GpuPool's methods leave it consistent even if a holder panicked.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct WorkerPool {
    bus: Arc<dyn Bus>,
    client: TrackingClient,
    config: PoolConfig,
    gpus: Arc<Gpus>,
    metrics: Arc<Metrics>,
    /// Written into each job's environment (see `orphans`).
    identity: String,
    /// The installation its jobs are marked with (`orphans::installation_id`).
    installation: String,
    /// Host and pid, the `ctflow.worker` tag of the runs this pool starts.
    name: String,
    /// Runs the jobs' commands elsewhere (a Kubernetes Job); `None`: local processes.
    runner: Option<Arc<dyn JobRunner>>,
}

/// Writes a job's output to its log file and reports milestones to the controller.
struct JobObserver {
    bus: Arc<dyn Bus>,
    job: Job,
    log: Mutex<Option<std::fs::File>>,
}

impl JobObserver {
    fn send(&self, event: JobEvent) {
        let bus = self.bus.clone();
        tokio::spawn(async move {
            if let Err(error) = bus.report(event).await {
                tracing::warn!(%error, "cannot report to the controller");
            }
        });
    }
}

impl Observer for JobObserver {
    fn line(&self, line: Line) {
        let text = match &line {
            Line::Stdout(t) | Line::Stderr(t) | Line::Note(t) => t,
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = log.as_mut() {
            let _ = writeln!(file, "{text}");
        }
    }

    fn started(&self, run_id: &str) {
        self.send(JobEvent::Started {
            pipeline_run: self.job.pipeline_run.clone(),
            attempt: self.job.attempt,
            run_id: run_id.to_string(),
        });
    }

    fn process(&self, pid: u32) {
        self.send(JobEvent::Process {
            pipeline_run: self.job.pipeline_run.clone(),
            attempt: self.job.attempt,
            pid,
        });
    }
}

impl WorkerPool {
    pub fn new(
        bus: Arc<dyn Bus>,
        config: PoolConfig,
    ) -> Result<WorkerPool, crate::client::ClientError> {
        let client = match &config.tracking_token {
            Some(token) => TrackingClient::with_token(&config.tracking_uri, &config.user, token)?,
            None => TrackingClient::new(&config.tracking_uri, &config.user)?,
        };
        let installation = crate::orphans::installation_id(&config.tracking_uri);
        let gpus = Arc::new(Gpus {
            pool: Mutex::new(GpuPool::new(config.gpus.iter().copied())),
            freed: Notify::new(),
        });
        Ok(WorkerPool {
            bus,
            client,
            config,
            gpus,
            metrics: Arc::new(Metrics::new()),
            identity: crate::orphans::worker_identity(),
            installation,
            name: ctflow_core::process_name(),
            runner: None,
        })
    }

    /// Runs the jobs' commands with `runner` instead of as local processes.
    pub fn with_runner(mut self, runner: Arc<dyn JobRunner>) -> WorkerPool {
        self.runner = Some(runner);
        self
    }

    /// Reports job durations and busy workers to this process's metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> WorkerPool {
        self.metrics = metrics;
        self
    }

    /// Runs the workers until `shutdown`; jobs in flight get the grace period to finish,
    /// then are stopped and handed back.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut workers = tokio::task::JoinSet::new();
        let count = this.config.workers.max(1);
        this.metrics
            .workers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        {
            let shutdown = shutdown.clone();
            let installation = this.installation.clone();
            workers.spawn(async move {
                loop {
                    let installation = installation.clone();
                    let orphans = tokio::task::spawn_blocking(move || {
                        crate::orphans::reap_orphans(&installation)
                    })
                    .await
                    .unwrap_or_default();
                    if !orphans.is_empty() {
                        tracing::warn!(
                            stopped = orphans.len(),
                            "stopped job processes whose worker died"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(REAP_INTERVAL) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            });
        }
        for worker in 0..count {
            let this = this.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move {
                loop {
                    let delivery = tokio::select! {
                        delivery = this.bus.next_job() => delivery,
                        _ = shutdown.cancelled() => None,
                    };
                    let Some(delivery) = delivery else { break };
                    tracing::info!(
                        worker,
                        pipeline_run = delivery.item.pipeline_run,
                        attempt = delivery.item.attempt,
                        delivered = delivery.delivered,
                        "job taken"
                    );
                    this.take(delivery, &shutdown).await;
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    /// Runs one delivery and settles it.
    async fn take(&self, delivery: Delivery<Job>, shutdown: &CancellationToken) {
        let Delivery {
            item: mut job,
            delivered,
            exhausted,
            lease,
        } = delivery;
        let lease: Arc<dyn Lease> = Arc::from(lease);
        let outcome = match self.pipeline_run(&job).await {
            Ok(Some(described)) => match job.complete_snapshot(described.data_snapshot) {
                Ok(()) => {
                    self.decide(
                        &job,
                        &described.pipeline_run,
                        delivered,
                        exhausted,
                        &lease,
                        shutdown,
                    )
                    .await
                }
                Err(why) => {
                    Outcome::Report(finished(&job, JobStatus::Failed, None, why, Vec::new()))
                }
            },
            Ok(None) => Outcome::Drop,
            Err(error) => Outcome::HandBack(format!("cannot ask the server about it: {error}")),
        };
        self.bus.forget(&job.pipeline_run);
        match outcome {
            Outcome::Report(event) => match self.report(&event).await {
                // NB: settled only once the report is stored, so a worker dying in
                // between leaves the job to be delivered again, never lost.
                Ok(()) => settle(lease.as_ref(), &job).await,
                Err(error) => {
                    tracing::error!(%error, pipeline_run = job.pipeline_run, "cannot report a finished job; it will be delivered again");
                }
            },
            Outcome::Drop => {
                tracing::info!(
                    pipeline_run = job.pipeline_run,
                    attempt = job.attempt,
                    delivered,
                    "the pipeline run no longer wants this attempt; dropped"
                );
                if let Err(error) = lease.done().await {
                    tracing::warn!(%error, "cannot settle a stale job");
                }
            }
            Outcome::Leave(why) => {
                tracing::warn!(
                    pipeline_run = job.pipeline_run,
                    attempt = job.attempt,
                    delivered,
                    why,
                    "a job another worker runs was delivered again as new; left to that worker"
                );
            }
            Outcome::HandBack(why) => {
                tracing::info!(
                    pipeline_run = job.pipeline_run,
                    attempt = job.attempt,
                    why,
                    "job handed back"
                );
                if let Err(error) = lease.hand_back(HAND_BACK_DELAY).await {
                    tracing::warn!(%error, "cannot hand a job back; it returns when its lease ends");
                }
            }
        }
    }

    async fn report(&self, event: &JobEvent) -> Result<(), ctflow_bus::Error> {
        self.record_outcome(event).await;
        self.bus.report(event.clone()).await
    }

    /// Runs a job with its lease kept alive, counting it in the metrics.
    async fn run_delivered(
        &self,
        job: &Job,
        lease: Arc<dyn Lease>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let keep_alive = self.keep_alive(lease);
        self.metrics.workers_busy.inc();
        let started = std::time::Instant::now();
        let outcome = self.run_job(job, shutdown).await;
        self.metrics.workers_busy.dec();
        if let Some(task) = keep_alive {
            task.abort();
        }
        if let Outcome::Report(JobEvent::Finished { status, .. }) = &outcome {
            self.metrics
                .jobs
                .get_or_create(&JobLabels {
                    pipeline: job.pipeline.clone(),
                    status: status.as_label().into(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        outcome
    }

    /// Keeps a job's lease while it runs, where the bus needs that.
    fn keep_alive(&self, lease: Arc<dyn Lease>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.bus.keep_alive_interval()?;
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = lease.keep_alive().await {
                    tracing::warn!(%error, "cannot renew a job's lease");
                }
            }
        }))
    }

    /// The pipeline run as the server has it; `None` when it no longer exists.
    async fn pipeline_run(
        &self,
        job: &Job,
    ) -> Result<Option<DescribedRun>, crate::client::ClientError> {
        match self.client.describe_run(&job.pipeline_run).await {
            Ok(described) => Ok(Some(described)),
            Err(error) if error.code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// What to do with a delivery, given its pipeline run.
    async fn decide(
        &self,
        job: &Job,
        run: &PipelineRun,
        delivered: u64,
        exhausted: bool,
        lease: &Arc<dyn Lease>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let failed = |message: String| {
            Outcome::Report(finished(job, JobStatus::Failed, None, message, Vec::new()))
        };
        let lost = if delivered > 1 {
            match self.earlier_deliveries(job, run, delivered).await {
                // NB: its worker finished it and stored the outcome on the run, but the
                // settling ack was lost: report that outcome again (the bus drops the
                // repeat by its id) instead of training twice.
                Earlier::Finished(event) => return Outcome::Report(event),
                Earlier::Lost(lost) => lost,
            }
        } else {
            0
        };
        if exhausted {
            return failed(format!(
                "attempt {} was delivered {delivered} times, the bus's limit, without finishing",
                job.attempt
            ));
        }
        // NB: claimed through the server, not judged from `run` as read above: a bus that
        // lost its delivery counts hands a running job to a second worker as new, and both
        // would have read it queued.
        match self
            .client
            .claim_job(&job.pipeline_run, job.attempt, delivered, &self.name)
            .await
        {
            Ok(JobClaim::Taken) => {}
            Ok(JobClaim::RunningElsewhere(why)) => return Outcome::Leave(why),
            Ok(JobClaim::Stale(why)) => {
                tracing::info!(
                    pipeline_run = job.pipeline_run,
                    attempt = job.attempt,
                    delivered,
                    why,
                    "claim refused"
                );
                return Outcome::Drop;
            }
            Err(error) => {
                return Outcome::HandBack(format!("cannot claim it from the server: {error}"));
            }
        }
        if lost >= self.config.max_starts.max(1) {
            return failed(format!(
                "attempt {} was started {lost} time(s) by workers that died before finishing it",
                job.attempt
            ));
        }
        self.run_delivered(job, lease.clone(), shutdown).await
    }

    /// After a redelivery, what became of the earlier ones: finished with an outcome on
    /// record, or lost with their worker (a run still RUNNING is marked FAILED and tagged
    /// `ctflow.worker_lost`), counting this attempt's runs lost that way.
    async fn earlier_deliveries(&self, job: &Job, run: &PipelineRun, delivered: u64) -> Earlier {
        match self.try_earlier_deliveries(job, run, delivered).await {
            Ok(earlier) => earlier,
            Err(error) => {
                tracing::warn!(%error, pipeline_run = job.pipeline_run, "cannot check the runs of earlier deliveries");
                Earlier::Lost(0)
            }
        }
    }

    async fn try_earlier_deliveries(
        &self,
        job: &Job,
        pipeline_run: &PipelineRun,
        delivered: u64,
    ) -> Result<Earlier, crate::client::ClientError> {
        let Some(run_id) = pipeline_run.run_id.as_deref() else {
            return Ok(Earlier::Lost(0));
        };
        let run = self.client.get_run(run_id).await?;
        if run.tag("ctflow.attempt") == Some(job.attempt.to_string().as_str()) {
            if run.info.status == "RUNNING" {
                self.client
                    .post(
                        "runs/set-tag",
                        &serde_json::json!({
                            "run_id": run_id,
                            "key": "ctflow.worker_lost",
                            "value": format!("its worker stopped; the job was delivered again (delivery {delivered})"),
                        }),
                    )
                    .await?;
                self.client
                    .post(
                        "runs/update",
                        &serde_json::json!({
                            "run_id": run_id,
                            "status": "FAILED",
                            "end_time": ctflow_core::now_ms(),
                        }),
                    )
                    .await?;
                tracing::warn!(
                    pipeline_run = job.pipeline_run,
                    run_id,
                    "marked the run of a dead worker FAILED"
                );
            } else if let Some(outcome) = run
                .tag(OUTCOME_TAG)
                .and_then(|text| serde_json::from_str::<RecordedOutcome>(text).ok())
            {
                return Ok(Earlier::Finished(finished(
                    job,
                    outcome.status,
                    Some(run_id.to_string()),
                    outcome.message,
                    outcome.ci,
                )));
            }
        }
        let experiment_id = &run.info.experiment_id;
        let filter = format!(
            "tags.\"ctflow.pipeline_run\" = '{}' and tags.\"ctflow.attempt\" = '{}' and tags.\"ctflow.worker_lost\" LIKE '%'",
            job.pipeline_run, job.attempt
        );
        let found = self
            .client
            .post(
                "runs/search",
                &serde_json::json!({
                    "experiment_ids": [experiment_id],
                    "filter": filter,
                    "max_results": 1000,
                }),
            )
            .await?;
        let lost = found["runs"].as_array().map_or(0, |runs| runs.len());
        Ok(Earlier::Lost(u32::try_from(lost).unwrap_or(u32::MAX)))
    }

    /// Records a finished job's outcome on its run before it is reported, so a worker that
    /// gets the job again (the settling ack was lost) reports it instead of training twice.
    async fn record_outcome(&self, event: &JobEvent) {
        let JobEvent::Finished {
            status,
            run_id: Some(run_id),
            message,
            ci,
            ..
        } = event
        else {
            return;
        };
        let mut outcome = RecordedOutcome {
            status: *status,
            message: message.clone(),
            ci: ci.clone(),
        };
        let mut text = serde_json::to_string(&outcome).unwrap_or_default();
        if text.len() > OUTCOME_TAG_LIMIT {
            for check in &mut outcome.ci {
                check.output_tail.clear();
            }
            text = serde_json::to_string(&outcome).unwrap_or_default();
        }
        if text.is_empty() || text.len() > OUTCOME_TAG_LIMIT {
            return;
        }
        let recorded = self
            .client
            .post(
                "runs/set-tag",
                &serde_json::json!({"run_id": run_id, "key": OUTCOME_TAG, "value": text}),
            )
            .await;
        if let Err(error) = recorded {
            tracing::warn!(%error, run_id, "cannot record a job's outcome on its run");
        }
    }

    async fn run_job(&self, job: &Job, shutdown: &CancellationToken) -> Outcome {
        let finished = |status, run_id, message: String, ci| {
            Outcome::Report(finished(job, status, run_id, message, ci))
        };
        // NB: a runner that schedules on a cluster asks it for the GPUs instead.
        let wanted = if self.runner.as_ref().is_some_and(|r| !r.uses_local_gpus()) {
            0
        } else {
            job.spec.resources.gpu
        };
        if let Err(error) = self.gpus.lock().check(wanted) {
            return finished(
                JobStatus::Unschedulable,
                None,
                error.to_string(),
                Vec::new(),
            );
        }
        let cancel = self.bus.cancellation(&job.pipeline_run);
        let stop = CancellationToken::new();
        let gpus = loop {
            // Register for the wake-up before looking, so a release in between is seen.
            let freed = self.gpus.freed.notified();
            if let Ok(Some(gpus)) = self.gpus.lock().acquire(wanted) {
                break gpus;
            }
            tokio::select! {
                _ = freed => {}
                _ = cancel.cancelled() => {
                    return finished(JobStatus::Canceled, None, "canceled while waiting for GPUs".into(), Vec::new());
                }
                _ = shutdown.cancelled() => {
                    return Outcome::HandBack("the worker stopped while it waited for GPUs".into());
                }
            }
        };
        let grace = self.config.shutdown_grace;
        let stopper = {
            let (stop, cancel, shutdown) = (stop.clone(), cancel.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = async {
                        shutdown.cancelled().await;
                        tokio::time::sleep(grace).await;
                    } => {}
                }
                stop.cancel();
            })
        };
        let event = self.execute_job(job, &gpus, stop).await;
        stopper.abort();
        self.gpus.lock().release(&gpus);
        self.gpus.freed.notify_waiters();
        let stopped_for_shutdown = matches!(
            &event,
            JobEvent::Finished {
                status: JobStatus::Canceled,
                ..
            }
        ) && shutdown.is_cancelled()
            && !cancel.is_cancelled();
        if stopped_for_shutdown {
            Outcome::HandBack(format!(
                "the worker stopped and the job did not finish within {}s",
                grace.as_secs()
            ))
        } else {
            Outcome::Report(event)
        }
    }

    fn request(&self, job: &Job, gpus: &[u32]) -> RunRequest {
        let spec = &job.spec;
        let mut params = spec.project.parameters.clone();
        params.extend(job.trigger.parameters.clone());
        let mut tags = vec![
            ("ctflow.pipeline".to_string(), job.pipeline.clone()),
            ("ctflow.pipeline_run".to_string(), job.pipeline_run.clone()),
            ("ctflow.trigger".to_string(), job.trigger.kind.clone()),
            ("ctflow.attempt".to_string(), job.attempt.to_string()),
            ("ctflow.worker".to_string(), self.name.clone()),
        ];
        let mut env = vec![
            ("CTFLOW_PIPELINE".to_string(), job.pipeline.clone()),
            (
                "CTFLOW_PIPELINE_RUN_ID".to_string(),
                job.pipeline_run.clone(),
            ),
            ("CTFLOW_TRIGGER".to_string(), job.trigger.kind.clone()),
            (
                crate::orphans::WORKER_VAR.to_string(),
                self.identity.clone(),
            ),
            (
                crate::orphans::INSTALLATION_VAR.to_string(),
                self.installation.clone(),
            ),
        ];
        if let Some(ms) = job.trigger.logical_time {
            let logical = logical_time_text(ms);
            tags.push(("ctflow.logical_time".into(), logical.clone()));
            env.push(("CTFLOW_LOGICAL_TIME".into(), logical));
        }
        if !job.trigger.files.is_empty() {
            let files = job.trigger.files.join("\n");
            let mut tag = files.replace('\n', ",");
            if tag.len() > 8000 {
                tag.truncate(tag.floor_char_boundary(8000));
            }
            tags.push(("ctflow.trigger.files".into(), tag));
            env.push(("CTFLOW_TRIGGER_FILES".into(), files));
        }
        for (key, value) in &job.trigger.tags {
            tags.push((format!("ctflow.{key}"), value.clone()));
        }
        if let Some(user) = &job.trigger.user {
            tags.push(("ctflow.trigger.user".into(), user.clone()));
        }
        // A job sees only its own GPUs; a CPU job on a GPU machine sees none.
        if !gpus.is_empty() || !self.config.gpus.is_empty() {
            let list: Vec<String> = gpus.iter().map(|g| g.to_string()).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), list.join(",")));
        }
        if let Some(token) = &self.config.tracking_token {
            // NB: the mlflow client prefers a username and password to a token; blank
            // ones from the worker's own environment must not win.
            env.push(("MLFLOW_TRACKING_TOKEN".into(), token.clone()));
            env.push(("MLFLOW_TRACKING_USERNAME".into(), String::new()));
            env.push(("MLFLOW_TRACKING_PASSWORD".into(), String::new()));
        }
        // Pipeline-run ids are ASCII hex, so a byte slice is a char slice.
        let id = &job.pipeline_run;
        let short = &id[id.len().saturating_sub(6)..];
        RunRequest {
            uri: spec.project.uri.clone(),
            base_dir: job.base_dir.clone(),
            version: spec.project.version.clone(),
            // NB: the pipeline's folder is often a checkout being edited; its commit is
            // recorded, dirty or not.
            allow_dirty: true,
            entry_point: spec.project.entry_point.clone(),
            params,
            env_manager: spec.project.env_manager.clone(),
            env_cache: self.config.env_cache.clone(),
            experiment: ExperimentRef::Name(spec.experiment_name(&job.pipeline)),
            run_name: Some(format!("{}-{short}-{}", job.pipeline, job.attempt)),
            run_id: None,
            tags,
            env,
            ci_checks: spec.gates.ci.checks.clone(),
            ci_blocking: !spec.gates.ci.dry_run,
            timeout: spec.timeout.map(|t| t.0),
            user: self.config.user.clone(),
            tracking_uri: self.config.tracking_uri.clone(),
            backend: self
                .runner
                .as_ref()
                .map_or("local", |r| r.backend())
                .to_string(),
            data: TrainingInput::of_job(job),
        }
    }

    async fn execute_job(&self, job: &Job, gpus: &[u32], stop: CancellationToken) -> JobEvent {
        let request = self.request(job, gpus);
        if let Some(runner) = &self.runner {
            return self
                .run_elsewhere(runner.as_ref(), job, &request, stop)
                .await;
        }
        let log_path = self
            .config
            .logs_dir
            .join(format!("{}-{}.log", job.pipeline_run, job.attempt));
        let log = std::fs::create_dir_all(&self.config.logs_dir)
            .and_then(|_| std::fs::File::create(&log_path))
            .map_err(|error| tracing::warn!(%error, path = %log_path.display(), "cannot write the job log"))
            .ok();
        let observer = JobObserver {
            bus: self.bus.clone(),
            job: job.clone(),
            log: Mutex::new(log),
        };
        let stop_for_evaluation = stop.clone();
        let (status, run_id, message, ci) = match execute(&self.client, &request, &observer, stop)
            .await
        {
            Ok(report) => {
                let (status, message) = match (report.stopped, report.ci_failed, report.exit_code) {
                    _ if report.data_changed.is_some() && report.stopped.is_none() => (
                        JobStatus::Failed,
                        report.data_changed.clone().unwrap_or_default(),
                    ),
                    (Some(StopReason::Canceled), _, _) => {
                        (JobStatus::Canceled, "stopped on request".to_string())
                    }
                    (Some(StopReason::TimedOut), _, _) => (
                        JobStatus::TimedOut,
                        format!(
                            "stopped after the timeout of {}",
                            job.spec.timeout.map(|t| t.to_string()).unwrap_or_default()
                        ),
                    ),
                    (None, true, _) => {
                        let failed: Vec<&str> = report
                            .ci
                            .iter()
                            .filter(|c| !c.passed)
                            .map(|c| c.name.as_str())
                            .collect();
                        (
                            JobStatus::CiFailed,
                            format!("CI check(s) failed: {}", failed.join(", ")),
                        )
                    }
                    (None, false, Some(0)) => {
                        (JobStatus::Succeeded, "training finished".to_string())
                    }
                    (None, false, code) => (
                        JobStatus::Failed,
                        format!(
                            "the command exited with {}",
                            code.map_or("a signal".to_string(), |c| c.to_string())
                        ),
                    ),
                };
                (status, Some(report.run_id), message, report.ci)
            }
            Err(error) => (JobStatus::Failed, None, error.to_string(), Vec::new()),
        };
        // The gate's evaluation step: both models scored on this run's data.
        let (status, message) = match (&status, &run_id) {
            (JobStatus::Succeeded, Some(training_run)) => {
                match crate::evaluate::evaluate_candidate(
                    &self.client,
                    job,
                    &request,
                    training_run,
                    &observer,
                    stop_for_evaluation,
                )
                .await
                {
                    Ok(()) => (status, message),
                    Err(reason) => (JobStatus::Failed, format!("evaluation failed: {reason}")),
                }
            }
            _ => (status, message),
        };
        observer.line(Line::Note(format!("=== {status:?}: {message} ===")));
        finished(job, status, run_id, message, ci)
    }
}

impl WorkerPool {
    /// A job whose command a runner runs: the pool creates the MLflow run and reports
    /// it started, the runner does the rest.
    async fn run_elsewhere(
        &self,
        runner: &dyn JobRunner,
        job: &Job,
        request: &RunRequest,
        stop: CancellationToken,
    ) -> JobEvent {
        let source = match &request.version {
            Some(version) => format!("{}@{version}", request.uri),
            None => request.uri.clone(),
        };
        let created = create_run(&self.client, request, &source, &request.entry_point, &None).await;
        let (run_id, experiment_id, artifact_uri) = match created {
            Ok(run) => run,
            Err(error) => {
                return finished(job, JobStatus::Failed, None, error.to_string(), Vec::new());
            }
        };
        let observer = JobObserver {
            bus: self.bus.clone(),
            job: job.clone(),
            log: Mutex::new(None),
        };
        observer.started(&run_id);
        let run = TrackedRun {
            run_id: run_id.clone(),
            experiment_id,
            artifact_uri,
        };
        let report = runner.run(job, request, &run, &self.client, stop).await;
        tracing::info!(pipeline_run = job.pipeline_run, run_id, status = ?report.status, message = report.message, "job ended");
        finished(job, report.status, Some(run_id), report.message, Vec::new())
    }
}
