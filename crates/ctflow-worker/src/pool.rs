//! The local worker pool: N workers take jobs from the bus and run them as processes.
//! GPUs are a resource of the pool: a job that asks for some gets its own through
//! `CUDA_VISIBLE_DEVICES` and waits until enough are free.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ctflow_bus::{Bus, CiResult, Job, JobEvent, JobStatus};
use ctflow_core::gpu::{GpuPool, parse_nvidia_smi_indices};
use ctflow_core::schedule::logical_time_text;
use ctflow_metrics::{JobLabels, Metrics};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::TrackingClient;
use crate::execute::{ExperimentRef, Line, Observer, RunRequest, StopReason, execute};

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
        let client = TrackingClient::new(&config.tracking_uri, &config.user)?;
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
        })
    }

    /// Reports job durations and busy workers to this process's metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> WorkerPool {
        self.metrics = metrics;
        self
    }

    /// Runs the workers until `shutdown`; jobs in flight are stopped.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut workers = tokio::task::JoinSet::new();
        let count = this.config.workers.max(1);
        this.metrics
            .workers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        for worker in 0..count {
            let this = this.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move {
                loop {
                    let job = tokio::select! {
                        job = this.bus.next_job() => job,
                        _ = shutdown.cancelled() => None,
                    };
                    let Some(job) = job else { break };
                    tracing::info!(
                        worker,
                        pipeline_run = job.pipeline_run,
                        attempt = job.attempt,
                        "job taken"
                    );
                    this.metrics.workers_busy.inc();
                    let started = std::time::Instant::now();
                    let event = this.run_job(&job, &shutdown).await;
                    this.metrics.workers_busy.dec();
                    if let JobEvent::Finished { status, .. } = &event {
                        this.metrics
                            .jobs
                            .get_or_create(&JobLabels {
                                pipeline: job.pipeline.clone(),
                                status: status.as_label().into(),
                            })
                            .observe(started.elapsed().as_secs_f64());
                    }
                    this.bus.forget(&job.pipeline_run);
                    if let Err(error) = this.bus.report(event).await {
                        tracing::warn!(%error, "cannot report a finished job");
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    async fn run_job(&self, job: &Job, shutdown: &CancellationToken) -> JobEvent {
        let finished =
            |status, run_id, message: String, ci| finished(job, status, run_id, message, ci);
        let wanted = job.spec.resources.gpu;
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
                    return finished(JobStatus::Canceled, None, "the worker stopped".into(), Vec::new());
                }
            }
        };
        let stopper = {
            let (stop, cancel, shutdown) = (stop.clone(), cancel.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
                stop.cancel();
            })
        };
        let event = self.execute_job(job, &gpus, stop).await;
        stopper.abort();
        self.gpus.lock().release(&gpus);
        self.gpus.freed.notify_waiters();
        event
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
        ];
        let mut env = vec![
            ("CTFLOW_PIPELINE".to_string(), job.pipeline.clone()),
            (
                "CTFLOW_PIPELINE_RUN_ID".to_string(),
                job.pipeline_run.clone(),
            ),
            ("CTFLOW_TRIGGER".to_string(), job.trigger.kind.clone()),
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
        }
    }

    async fn execute_job(&self, job: &Job, gpus: &[u32], stop: CancellationToken) -> JobEvent {
        let request = self.request(job, gpus);
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
        let (status, run_id, message, ci) = match execute(&self.client, &request, &observer, stop)
            .await
        {
            Ok(report) => {
                let (status, message) = match (report.stopped, report.ci_failed, report.exit_code) {
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
        observer.line(Line::Note(format!("=== {status:?}: {message} ===")));
        finished(job, status, run_id, message, ci)
    }
}
