//! What a worker reports about a job: the wire messages of the job bus's event stream,
//! and the input of the pipeline-run state machine (`crate::engine`).

use serde::{Deserialize, Serialize};

/// One CI check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiResult {
    /// The check's name in the pipeline (`gates.ci.checks[].name`, else its command).
    pub name: String,
    /// The shell command that ran.
    pub command: String,
    /// `None` when the check was stopped (timeout, cancellation) before it exited.
    pub exit_code: Option<i32>,
    /// Whether it exited with 0.
    pub passed: bool,
    /// The end of the check's output.
    pub output_tail: String,
    /// How long it ran.
    pub duration_ms: i64,
}

/// How a job's attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Training finished with exit code 0.
    Succeeded,
    /// Training (or preparing it) failed; retryable.
    Failed,
    /// A blocking CI check failed: training did not run.
    CiFailed,
    /// Stopped on the controller's request.
    Canceled,
    /// Stopped after the spec's timeout.
    TimedOut,
    /// Can never run on this worker pool (e.g. it asks for GPUs the machine lacks).
    Unschedulable,
}

impl JobStatus {
    /// The status as a metric label.
    pub fn as_label(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::CiFailed => "ci_failed",
            JobStatus::Canceled => "canceled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Unschedulable => "unschedulable",
        }
    }
}

/// What a worker reports about a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The MLflow run exists; training may start.
    Started {
        /// The pipeline run the job belongs to.
        pipeline_run: String,
        /// Which attempt of it (a report for an earlier one changes nothing).
        attempt: i64,
        /// The attempt's MLflow run.
        run_id: String,
    },
    /// The training command runs as this process group.
    Process {
        /// The pipeline run the job belongs to.
        pipeline_run: String,
        /// Which attempt of it.
        attempt: i64,
        /// The process group id.
        pid: u32,
    },
    /// The attempt ended.
    Finished {
        /// The pipeline run the job belongs to.
        pipeline_run: String,
        /// Which attempt of it.
        attempt: i64,
        /// How it ended.
        status: JobStatus,
        /// The attempt's MLflow run, when it got that far.
        run_id: Option<String>,
        /// Why it ended so, in a sentence.
        message: String,
        /// The CI checks that ran before training.
        ci: Vec<CiResult>,
    },
}

impl JobEvent {
    /// The pipeline run the report is about.
    pub fn pipeline_run(&self) -> &str {
        match self {
            JobEvent::Started { pipeline_run, .. }
            | JobEvent::Process { pipeline_run, .. }
            | JobEvent::Finished { pipeline_run, .. } => pipeline_run,
        }
    }
}
