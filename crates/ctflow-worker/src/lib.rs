//! ctflow's worker side: a small MLflow REST client, the project runner (`ctflow run` and
//! CT jobs share it), and the local worker pool of `ctflow up`.
#![forbid(unsafe_code)]

pub use ctflow_client as client;
mod evaluate;
pub mod execute;
mod orphans;
mod pool;
pub mod runner;

pub use evaluate::evaluate_candidate;
pub use orphans::reap_orphans;
pub use pool::{PoolConfig, WorkerPool, discover_gpus};
pub use runner::{JobRunner, RunnerReport, TrackedRun};
