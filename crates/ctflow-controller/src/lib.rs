//! The CT controller: turns triggers into pipeline runs, hands their jobs to workers,
//! judges the candidates at the gates and moves the registry's aliases.
//!
//! Every decision is first written to the store (a trigger becomes a `Pending` pipeline
//! run before any job is queued; each phase change is a compare-and-set), so a restart
//! resumes from the store: queued jobs are queued again, jobs whose process died are
//! retried or failed, and evaluations are redone idempotently.
//!
//! Tasks of one controller:
//! - `loader`: pipeline files from a folder, hot-reloaded;
//! - `schedules`: cron ticks with catch-up;
//! - `reconcile`: the executor of the pipeline-run state machine
//!   (`ctflow_core::engine` decides admission, job reports, gates, promotion, approvals
//!   and their timeouts, and recovery; this crate reads what a decision needs and applies
//!   its steps).
//!
//! Data and drift triggers are recorded by the watcher (`ctflow-watcher`), which wakes
//! the controller through the bus.
#![forbid(unsafe_code)]

mod leadership;
mod loader;
mod presence;
mod reconcile;
mod schedules;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ctflow_bus::Bus;
use ctflow_metrics::Metrics;
use ctflow_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use leadership::{
    Claim, ElectorGone, Leadership, StoreElection, leadership, run_while_leading,
};
pub use loader::load_pipeline_file;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] ctflow_store::Error),
    #[error(transparent)]
    Bus(#[from] ctflow_bus::Error),
    #[error("cannot read the pipeline file {path}: {message}")]
    PipelineFile { path: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A folder of pipeline files (`*.yaml`, `*.yml`, `*.json`), hot-reloaded.
    pub pipelines_dir: Option<PathBuf>,
    /// Who promotions are recorded as in the registry ledger.
    pub user: String,
    /// How often pipeline definitions are re-read.
    pub reload_interval: Duration,
    /// The workers run in this process (`ctflow up`): a job that was running when the
    /// process started again lost its worker with it. Otherwise (separate workers over
    /// NATS) a running job's worker may well be alive, and the bus delivers the job again
    /// if it is not.
    pub workers_in_process: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            pipelines_dir: None,
            user: "ctflow".into(),
            reload_interval: Duration::from_secs(2),
            workers_in_process: true,
        }
    }
}

/// State shared by the controller's tasks.
pub(crate) struct Shared {
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    pub config: ControllerConfig,
    /// Wakes the reconcile loop (a run was recorded, a job reported).
    pub reconcile: Notify,
    /// Jobs recorded as queued that the bus refused (it was unreachable), sent again at
    /// every reconcile pass; the bus drops a repeat by its message id.
    pub unsent: std::sync::Mutex<std::collections::BTreeMap<String, ctflow_bus::Job>>,
    pub metrics: Arc<Metrics>,
    /// Digests of training data files already read, by path, size, time and inode.
    pub digests: ctflow_data::DigestCache,
}

pub struct Controller {
    shared: Arc<Shared>,
}

impl Controller {
    /// A controller over `store` and `bus`; it reports reconcile passes, step latencies
    /// and errors to `metrics`.
    pub fn new(
        store: Store,
        bus: Arc<dyn Bus>,
        config: ControllerConfig,
        metrics: Arc<Metrics>,
    ) -> Controller {
        Controller {
            shared: Arc::new(Shared {
                store,
                bus,
                config,
                reconcile: Notify::new(),
                unsent: Default::default(),
                metrics,
                digests: ctflow_data::DigestCache::new(),
            }),
        }
    }

    /// Loads the pipeline folder once (so callers can rely on its pipelines existing).
    pub async fn load_pipelines(&self) -> Result<()> {
        loader::Loader::new(self.shared.clone()).scan().await
    }

    /// Runs until `shutdown`. Recovers unfinished pipeline runs first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let shared = self.shared;
        reconcile::recover(&shared).await?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(loader::run(shared.clone(), shutdown.clone()));
        tasks.spawn(schedules::run(shared.clone(), shutdown.clone()));
        tasks.spawn(reconcile::run_events(shared.clone(), shutdown.clone()));
        tasks.spawn(reconcile::run(shared.clone(), shutdown.clone()));
        tasks.spawn(presence::run(shared.store.clone(), shutdown.clone()));
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "a controller task stopped");
                    first_error.get_or_insert(error);
                    shutdown.cancel();
                }
                Err(join) => {
                    tracing::error!(%join, "a controller task panicked");
                    shutdown.cancel();
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Runs the controller whenever `leadership` says this process leads (see
/// [`run_while_leading`]), until `shutdown`.
pub async fn run_when_leading(
    store: Store,
    bus: Arc<dyn Bus>,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    run_while_leading(leadership, shutdown, move |term| {
        let controller =
            Controller::new(store.clone(), bus.clone(), config.clone(), metrics.clone());
        async move {
            if let Err(error) = controller.load_pipelines().await {
                tracing::warn!(%error, "cannot load the pipeline folder");
            }
            match controller.run(term).await {
                Ok(()) => {}
                Err(error) => tracing::error!(%error, "the controller stopped"),
            }
        }
    })
    .await;
}

/// Sleeps for `period` unless shut down first; false on shutdown.
pub(crate) async fn pause(period: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = shutdown.cancelled() => false,
    }
}
