//! A pipeline run's life: its phases, and the pure decision of what a new trigger does
//! while other runs of the same pipeline are active (the concurrency policy).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pipeline::ConcurrencyPolicy;

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

pub const ALL_PHASES: &[Phase] = &[
    Phase::Pending,
    Phase::Queued,
    Phase::Running,
    Phase::Evaluating,
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
    Phase::WaitingApproval,
    Phase::Paused,
];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Queued => "Queued",
            Phase::Running => "Running",
            Phase::Evaluating => "Evaluating",
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
