//! ctflow's domain: MLflow-compatible entities, identifiers, validation rules and the
//! search-filter grammar, the pipeline spec, schedules, gates and concurrency decisions. Pure logic only: no I/O, no async runtime.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod artifact_path;
pub mod auth;
pub mod byte_size;
pub mod data;
pub mod drift;
pub mod engine;
pub mod entities;
pub mod error;
pub mod eval_datasets;
pub mod filter;
pub mod gates;
pub mod gateway_catalog;
pub mod gpu;
pub mod ids;
pub mod inference;
pub mod job;
pub mod kolmogorov;
pub mod model_source;
pub mod monitoring;
pub mod online_scoring;
pub mod page_token;
pub mod pipeline;
pub mod pipeline_run;
pub mod pyjson;
pub mod registry;
pub mod schedule;
pub mod scoring;
pub mod secrets;
pub mod shadow;
pub mod throttle;
pub mod traces;
pub mod trigger;
pub mod validation;

pub use error::{ErrorCode, MlflowError, Result};

/// `<host>-<pid>`: this process, as workers tag the runs they ran and services name
/// themselves in leases.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Milliseconds since the Unix epoch, the unit of every MLflow timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
