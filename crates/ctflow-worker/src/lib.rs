//! ctflow's worker side: a small MLflow REST client, the project runner (`ctflow run` and
//! CT jobs share it), and the local worker pool of `ctflow up`.
#![forbid(unsafe_code)]

pub mod client;
pub mod execute;
mod pool;

pub use pool::{PoolConfig, WorkerPool, discover_gpus};
