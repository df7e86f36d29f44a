//! The job queue between the controller and the workers, behind one trait.
//!
//! The controller records a pipeline run before it queues its job, so a job lost from a
//! queue is recovered from the store; the bus itself only has to deliver. Jobs and job
//! reports come as [`Delivery`]s that the taker settles: done once its work is recorded,
//! handed back when it cannot finish, kept alive while it works. Two implementations:
//! in-process channels for `ctflow up` ([`MemoryBus`]) and NATS JetStream for the
//! distributed services ([`NatsBus`]).
#![forbid(unsafe_code)]

mod cancels;
mod memory;
mod nats;

use std::path::PathBuf;

use ctflow_core::pipeline::TrainingPipelineSpec;
use ctflow_core::trigger::{DriftEvent, TriggerEvent};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use ctflow_core::job::{CiResult, JobEvent, JobStatus};
pub use memory::MemoryBus;
pub use nats::{NatsBus, NatsConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bus is closed")]
    Closed,
    #[error("NATS: {0}")]
    Nats(String),
    #[error("invalid bus setting: {0}")]
    Config(String),
}

/// How a taker settles one delivery.
pub trait Lease: Send + Sync {
    /// Work goes on: do not hand the delivery to anyone else yet.
    fn keep_alive(&self) -> BoxFuture<'_, Result<()>>;
    /// The work is finished and its outcome recorded: never deliver it again.
    fn done(&self) -> BoxFuture<'_, Result<()>>;
    /// The taker cannot finish it: deliver it again, to anyone, after `delay`.
    fn hand_back(&self, delay: std::time::Duration) -> BoxFuture<'_, Result<()>>;
}

/// A job or a report as taken from the bus, with the handle that settles it.
pub struct Delivery<T> {
    pub item: T,
    /// 1 for the first delivery; more when an earlier taker died or handed it back.
    pub delivered: u64,
    /// Earlier takers started it as often as the bus allows: do not start it again,
    /// record it as failed.
    pub exhausted: bool,
    pub lease: Box<dyn Lease>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("item", &self.item)
            .field("delivered", &self.delivered)
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One attempt of a pipeline run: everything a worker needs, so it never reads the
/// controller's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub pipeline_run: String,
    pub pipeline: String,
    pub attempt: i64,
    pub spec: TrainingPipelineSpec,
    /// The folder relative paths of the spec resolve against.
    pub base_dir: PathBuf,
    pub trigger: TriggerEvent,
    /// The id of the training data snapshot the job reads, when the pipeline names its
    /// data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// That snapshot (its manifest), when it fits in a bus message beside the rest of the
    /// job; a worker reads a bigger one from the server by the pipeline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<ctflow_core::data::DataSnapshot>,
}

impl Job {
    /// The job of `run`'s current attempt. `snapshot` is the run's data snapshot when the
    /// job should carry it; a job without it names it by id and is completed with
    /// [`Job::complete_snapshot`].
    pub fn for_run(
        run: &ctflow_core::pipeline_run::PipelineRun,
        snapshot: Option<ctflow_core::data::DataSnapshot>,
    ) -> Job {
        Job {
            pipeline_run: run.id.clone(),
            pipeline: run.pipeline.clone(),
            attempt: run.attempt,
            spec: run.spec.clone(),
            base_dir: run.base_dir.clone().into(),
            trigger: run.trigger.clone(),
            snapshot_id: run.snapshot_id.clone(),
            snapshot,
        }
    }

    /// Completes a job whose data snapshot did not travel with it from the server's
    /// record of its pipeline run; a snapshot the server does not have (or a different
    /// one) is an error, so the job fails rather than train on something else.
    pub fn complete_snapshot(
        &mut self,
        recorded: Option<ctflow_core::data::DataSnapshot>,
    ) -> std::result::Result<(), String> {
        let Some(id) = &self.snapshot_id else {
            return Ok(());
        };
        if self.snapshot.is_some() {
            return Ok(());
        }
        match recorded {
            Some(snapshot) if &snapshot.id == id => {
                self.snapshot = Some(snapshot);
                Ok(())
            }
            Some(other) => Err(format!(
                "the job trains on data snapshot {id}, but its pipeline run records {}",
                other.id
            )),
            None => Err(format!(
                "the job trains on data snapshot {id}, which the server does not have"
            )),
        }
    }
}

/// Above this many bytes of JSON a snapshot travels by id, not inside the job: NATS
/// refuses messages over its `max_payload` (1 MiB by default) and a snapshot of thousands
/// of files is bigger than that.
pub const INLINE_SNAPSHOT_BYTES: usize = 256 * 1024;

/// What the data watcher saw. The trigger it fired (if any) is recorded in the store
/// before the event is published, so an event lost in transit loses nothing: the
/// controller also finds the pipeline run in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// New files matched a `data` trigger.
    DataArrived {
        pipeline: String,
        trigger_index: usize,
        files: Vec<String>,
        /// The pipeline run the files started (none when the trigger was a duplicate).
        pipeline_run: Option<String>,
    },
    /// A `drift` trigger's check found the dataset drifted.
    DriftDetected {
        event: DriftEvent,
        /// The tracking run that holds the check's metrics and reports.
        check_run: String,
        pipeline_run: Option<String>,
    },
}

impl WatchEvent {
    /// The dedupe key of the trigger the event reports (with its pipeline), so a watcher
    /// that reports the same thing twice publishes it once.
    pub fn dedupe_key(&self) -> String {
        match self {
            WatchEvent::DataArrived {
                pipeline,
                trigger_index,
                files,
                ..
            } => {
                let trigger =
                    ctflow_core::trigger::data_event(pipeline, *trigger_index, files.clone());
                format!("{pipeline}/{}", trigger.dedupe_key)
            }
            WatchEvent::DriftDetected { event, .. } => {
                let trigger = event.clone().into_trigger();
                format!("{}/{}", event.pipeline, trigger.dedupe_key)
            }
        }
    }
}

/// The job queue and the signals around it.
pub trait Bus: Send + Sync + 'static {
    /// Queues a job for some worker.
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<()>>;
    /// The next job for a worker; `None` once the bus is closed.
    fn next_job(&self) -> BoxFuture<'_, Option<Delivery<Job>>>;
    /// How often a worker must keep a job's lease alive; `None`: leases never expire.
    fn keep_alive_interval(&self) -> Option<std::time::Duration>;
    /// A worker's report to the controller.
    fn report(&self, event: JobEvent) -> BoxFuture<'_, Result<()>>;
    /// The next report, for the controller, settled once it is recorded; `None` once the
    /// bus is closed.
    fn next_event(&self) -> BoxFuture<'_, Option<Delivery<JobEvent>>>;
    /// Asks whichever worker runs this pipeline run to stop it.
    fn cancel(&self, pipeline_run: &str) -> BoxFuture<'_, Result<()>>;
    /// A token that fires when the pipeline run is canceled (at once if it already was).
    fn cancellation(&self, pipeline_run: &str) -> CancellationToken;
    /// Forgets a finished job's cancellation state.
    fn forget(&self, pipeline_run: &str);
    /// Tells the controller that something was recorded for it (a trigger, an approval).
    fn wake_controller(&self);
    /// Resolves at the next wake-up.
    fn controller_woken(&self) -> BoxFuture<'_, ()>;
    /// Announces a watch event to every subscriber and wakes the controller.
    fn publish(&self, event: WatchEvent) -> BoxFuture<'_, Result<()>>;
    /// Every watch event published from now on (a slow subscriber misses the oldest).
    fn subscribe(&self) -> BoxStream<'static, WatchEvent>;
    /// Whether the bus can deliver now (for readiness probes).
    fn connected(&self) -> bool;
    /// Stops delivering; waiting calls return `None`.
    fn close(&self);
    /// After `close`: hands back any job that reached this process after its takers
    /// stopped waiting, so another worker gets it now rather than when its lease ends.
    fn drain(&self) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctflow_core::data::DataSnapshot;

    fn job() -> Job {
        Job {
            pipeline_run: "r".into(),
            pipeline: "p".into(),
            attempt: 1,
            spec: serde_json::from_value(serde_json::json!({"project": {"uri": "."}}))
                .expect("valid spec"),
            base_dir: ".".into(),
            trigger: TriggerEvent::new("p", "manual", "k".into()),
            snapshot_id: None,
            snapshot: None,
        }
    }

    fn snapshot(id: &str) -> DataSnapshot {
        DataSnapshot {
            version: 1,
            id: id.into(),
            pipeline: "p".into(),
            created: 0,
            files: Vec::new(),
            rows: 0,
            schema: Vec::new(),
            window: None,
        }
    }

    #[test]
    fn a_snapshot_left_out_of_the_job_comes_from_the_pipeline_run_or_fails_it() {
        let mut small = job();
        small.snapshot_id = Some("a".into());
        small.snapshot = Some(snapshot("a"));
        assert_eq!(small.complete_snapshot(None), Ok(()));
        assert_eq!(small.snapshot, Some(snapshot("a")));

        let mut big = job();
        big.snapshot_id = Some("a".into());
        assert_eq!(big.complete_snapshot(Some(snapshot("a"))), Ok(()));
        assert_eq!(big.snapshot, Some(snapshot("a")));

        let mut other = job();
        other.snapshot_id = Some("a".into());
        let why = other
            .complete_snapshot(Some(snapshot("b")))
            .expect_err("a different one");
        assert!(why.contains("records b"), "{why}");
        let why = other
            .complete_snapshot(None)
            .expect_err("none on the server");
        assert!(why.contains("does not have"), "{why}");
        assert_eq!(other.snapshot, None);

        let mut none = job();
        assert_eq!(none.complete_snapshot(Some(snapshot("a"))), Ok(()));
        assert_eq!(none.snapshot, None, "a job without data gets none");
    }
}
