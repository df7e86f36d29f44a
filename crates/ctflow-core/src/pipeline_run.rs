//! A pipeline run's life: its phases, and the pure decision of what a new trigger does
//! while other runs of the same pipeline are active (the concurrency policy).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::now_ms;
use crate::pipeline::{ConcurrencyPolicy, TrainingPipelineSpec};
use crate::shadow::ShadowProgress;
use crate::trigger::TriggerEvent;

/// Where a pipeline run is. Terminal phases never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Recorded, waiting for admission (concurrency policy, retry backoff).
    Pending,
    /// Handed to the job queue.
    Queued,
    /// A worker runs the CI checks and the training.
    Running,
    /// The controller evaluates the CT gate and registers the candidate.
    Evaluating,
    /// CD gate: the challenger answers a mirrored copy of the champion's live traffic.
    Shadowing,
    /// CD gate: waiting for a person to approve or reject.
    WaitingApproval,
    /// A gate had insufficient data with `onInsufficientData: pause`.
    Paused,
    /// The champion moved to the candidate (or the pipeline has no model and trained).
    Succeeded,
    /// A gate said no; the champion did not move.
    GateFailed,
    /// A person rejected the promotion, or the approval timed out.
    Rejected,
    /// The job failed after its retries.
    Failed,
    /// Stopped: replaced by a newer run (`Replace`) or canceled.
    Canceled,
    /// Not started: another run was active (`Forbid`).
    Skipped,
}

/// Every phase, in the order a run can pass through them, the terminal ones last.
pub const ALL_PHASES: &[Phase] = &[
    Phase::Pending,
    Phase::Queued,
    Phase::Running,
    Phase::Evaluating,
    Phase::Shadowing,
    Phase::WaitingApproval,
    Phase::Paused,
    Phase::Succeeded,
    Phase::GateFailed,
    Phase::Rejected,
    Phase::Failed,
    Phase::Canceled,
    Phase::Skipped,
];

/// The phases a run can still leave (every phase that is not terminal).
pub const UNFINISHED_PHASES: &[Phase] = &[
    Phase::Pending,
    Phase::Queued,
    Phase::Running,
    Phase::Evaluating,
    Phase::Shadowing,
    Phase::WaitingApproval,
    Phase::Paused,
];

impl Phase {
    /// The phase's name, as the API and the store write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Queued => "Queued",
            Phase::Running => "Running",
            Phase::Evaluating => "Evaluating",
            Phase::Shadowing => "Shadowing",
            Phase::WaitingApproval => "WaitingApproval",
            Phase::Paused => "Paused",
            Phase::Succeeded => "Succeeded",
            Phase::GateFailed => "GateFailed",
            Phase::Rejected => "Rejected",
            Phase::Failed => "Failed",
            Phase::Canceled => "Canceled",
            Phase::Skipped => "Skipped",
        }
    }

    /// Whether the run has ended: a terminal phase never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded
                | Phase::GateFailed
                | Phase::Rejected
                | Phase::Failed
                | Phase::Canceled
                | Phase::Skipped
        )
    }

    /// Counts against the concurrency policy: admitted and not yet ended. A run waiting
    /// in `Pending` has not been admitted.
    pub fn is_active(self) -> bool {
        !self.is_terminal() && self != Phase::Pending
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_PHASES
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown pipeline run phase '{s}'"))
    }
}

/// What to do with the oldest pending run of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Queue its job now.
    Start,
    /// Record it as skipped (`Forbid`).
    Skip,
    /// Leave it pending until the active runs end (`Enqueue`).
    Wait,
    /// Cancel these active runs, then start (`Replace`).
    Replace(Vec<String>),
}

/// The concurrency decision for one pending run, given the ids of the pipeline's active
/// runs. Pending runs are decided oldest first, each seeing the runs admitted before it.
pub fn admit(policy: ConcurrencyPolicy, active: &[String]) -> Admission {
    if active.is_empty() {
        return Admission::Start;
    }
    match policy {
        ConcurrencyPolicy::Allow => Admission::Start,
        ConcurrencyPolicy::Forbid => Admission::Skip,
        ConcurrencyPolicy::Enqueue => Admission::Wait,
        ConcurrencyPolicy::Replace => Admission::Replace(active.to_vec()),
    }
}

/// One execution of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRun {
    /// Its id (32 hex digits).
    pub id: String,
    /// The pipeline it is a run of.
    pub pipeline: String,
    /// The event that started it.
    pub trigger: TriggerEvent,
    /// Where it is.
    pub phase: Phase,
    /// Attempts started so far.
    pub attempt: i64,
    /// A retry waits until this time (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// The MLflow run of the latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The candidate model version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<i64>,
    /// Why the run ended the way it did, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The process group of the job's command while it runs (a worker's report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_pid: Option<i64>,
    /// While it waits for a person: when it is rejected without an answer (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_deadline: Option<i64>,
    /// The shadow comparison with the champion, once the run has shadowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowProgress>,
    /// A person's answer the controller has not acted on yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// When it was recorded (epoch ms).
    pub creation_time: i64,
    /// When its first attempt was queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// When it reached a terminal phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// When it last changed.
    pub last_updated_time: i64,
    /// The spec the run was recorded with (later edits of the pipeline do not change it).
    pub spec: TrainingPipelineSpec,
    /// A folder on the controller's machine: not shown outside it.
    #[serde(skip)]
    pub base_dir: String,
    /// The training data snapshot (`crate::data::DataSnapshot`) it trains on, recorded
    /// before its first attempt when the pipeline names its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// One entry of a pipeline run's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRunEvent {
    /// When it happened (epoch ms).
    pub timestamp: i64,
    /// `phase`, `attempt`, `data`, `gate`, `approval`, `log`.
    pub kind: String,
    /// For a gate entry: `ci`, `ct` or `cd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// For a gate entry: `pass`, `fail`, `inconclusive` or `waiting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// What happened, in a sentence.
    pub message: String,
    /// The numbers behind it (a gate's comparisons, CI results), when there are any.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl PipelineRunEvent {
    /// An entry of this kind, stamped now.
    pub fn new(kind: &str, message: impl Into<String>) -> PipelineRunEvent {
        PipelineRunEvent {
            timestamp: now_ms(),
            kind: kind.to_string(),
            gate: None,
            result: None,
            message: message.into(),
            detail: Value::Null,
        }
    }

    /// A gate's entry: its result, a sentence and the numbers behind it.
    pub fn gate(gate: &str, result: &str, message: impl Into<String>, detail: Value) -> Self {
        PipelineRunEvent {
            gate: Some(gate.to_string()),
            result: Some(result.to_string()),
            detail,
            ..PipelineRunEvent::new("gate", message)
        }
    }
}

/// A person's approval or rejection of a waiting pipeline run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Approved, or rejected.
    pub approved: bool,
    /// Who answered.
    pub user: String,
}

/// An alias/stage move made together with a pipeline run's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionStep {
    /// The registered model.
    pub model: String,
    /// The version the alias moves to.
    pub version: i64,
    /// The alias that moves.
    pub alias: String,
    /// The stage to move the version to, archiving others in it.
    pub stage: Option<String>,
    /// Who the ledger records the move as.
    pub user: String,
    /// The ledger entry's comment (which pipeline run moved it).
    pub comment: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phases_round_trip_and_classify() {
        for phase in ALL_PHASES {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(*phase));
        }
        assert!("Done".parse::<Phase>().is_err());
        assert!(!Phase::Pending.is_active());
        assert!(Phase::WaitingApproval.is_active());
        assert!(!Phase::Skipped.is_active());
        let unfinished: Vec<Phase> = ALL_PHASES
            .iter()
            .copied()
            .filter(|p| !p.is_terminal())
            .collect();
        assert_eq!(unfinished, UNFINISHED_PHASES);
    }

    #[test]
    fn policies() {
        let active = vec!["a".to_string()];
        assert_eq!(admit(ConcurrencyPolicy::Forbid, &[]), Admission::Start);
        assert_eq!(admit(ConcurrencyPolicy::Allow, &active), Admission::Start);
        assert_eq!(admit(ConcurrencyPolicy::Forbid, &active), Admission::Skip);
        assert_eq!(admit(ConcurrencyPolicy::Enqueue, &active), Admission::Wait);
        assert_eq!(
            admit(ConcurrencyPolicy::Replace, &active),
            Admission::Replace(active.clone())
        );
    }

    /// Simulates a storm of triggers decided one after another.
    fn storm(policy: ConcurrencyPolicy, triggers: usize) -> (usize, usize, usize) {
        let mut active: Vec<String> = Vec::new();
        let (mut started, mut skipped, mut canceled) = (0, 0, 0);
        for i in 0..triggers {
            match admit(policy, &active) {
                Admission::Start => {
                    started += 1;
                    active.push(i.to_string());
                }
                Admission::Skip => skipped += 1,
                Admission::Wait => {}
                Admission::Replace(ids) => {
                    canceled += ids.len();
                    active.retain(|a| !ids.contains(a));
                    started += 1;
                    active.push(i.to_string());
                }
            }
        }
        (started, skipped, canceled)
    }

    proptest! {
        #[test]
        fn storms(n in 1usize..200) {
            prop_assert_eq!(storm(ConcurrencyPolicy::Forbid, n), (1, n - 1, 0));
            prop_assert_eq!(storm(ConcurrencyPolicy::Replace, n), (n, 0, n - 1));
            prop_assert_eq!(storm(ConcurrencyPolicy::Allow, n), (n, 0, 0));
            prop_assert_eq!(storm(ConcurrencyPolicy::Enqueue, n), (1, 0, 0));
        }
    }
}
