//! Where a CT job's command runs. By default the worker runs it as a local process
//! (`execute`); a `JobRunner` runs it elsewhere (a Kubernetes Job, in `ctflow-kube`)
//! while the pool keeps everything around it: taking and settling the delivery, the
//! checks against the server, the MLflow run, the report.

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use ctflow_bus::{Job, JobStatus};

use crate::client::TrackingClient;
use crate::execute::RunRequest;

/// The MLflow run the pool created for a job.
#[derive(Debug, Clone)]
pub struct TrackedRun {
    pub run_id: String,
    pub experiment_id: String,
    pub artifact_uri: String,
}

/// How a job ended, as the runner saw it. The runner ends the MLflow run if its command
/// could not (it never started, or was stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerReport {
    pub status: JobStatus,
    pub message: String,
}

pub trait JobRunner: Send + Sync + 'static {
    /// `mlflow.project.backend` of the runs it starts.
    fn backend(&self) -> &'static str;

    /// Whether the pool's own GPUs matter (false when the cluster schedules them).
    fn uses_local_gpus(&self) -> bool {
        false
    }

    /// Runs the job's command for `run` until it ends or `stop` fires (cancel, timeout
    /// or the worker's shutdown).
    fn run<'a>(
        &'a self,
        job: &'a Job,
        request: &'a RunRequest,
        run: &'a TrackedRun,
        client: &'a TrackingClient,
        stop: CancellationToken,
    ) -> BoxFuture<'a, RunnerReport>;
}
