//! The drift side of ctflow: reading data and judging current data against a reference.
//!
//! This crate has the readers and the per-dataset drift report that `ctflow drift` prints;
//! the statistics themselves are pure functions in `ctflow_core::drift`.
#![forbid(unsafe_code)]

mod data;
mod html;
mod monitor;
pub mod reader;
mod report;
pub mod source;
mod watch;

pub use data::DataWatcher;
pub use html::{display_number, render_html};
pub use monitor::{Monitor, read_log_file};
pub use report::{DriftOptions, DriftReport, SkippedColumn, compare};
pub use watch::{Watcher, WatcherConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("the reference and current data have different columns: {0}")]
    Schema(String),
    /// The cause is in the message, and kept out of the error chain so that the CLI's
    /// `Error: ...` line says it once.
    #[error("column '{column}': {cause}")]
    Column {
        column: String,
        cause: ctflow_core::drift::DriftError,
    },
    #[error("{0}")]
    Options(String),
    #[error("cannot watch files: {0}")]
    Watch(String),
    #[error("{0}")]
    Source(String),
    /// The server did not take a report or answer a question.
    #[error(transparent)]
    Server(#[from] ctflow_client::ClientError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
