//! The pipeline-run state machine, decided apart from done.
//!
//! Each function here takes what the controller observed (a run as stored, a worker's
//! report, the numbers the CT gate needs, a person's answer, the clock) and returns the
//! [`Step`]s to take. The controller applies them in order; every [`Move`] is a
//! compare-and-set on the run's phase, so a step decided from a view that has gone stale
//! (a late report, a second controller, an answer that raced a timeout) changes nothing.
//!
//! The transitions, by the function that decides them:
//!
//! | from | to | decided by | when |
//! |---|---|---|---|
//! | Pending | Queued | [`admit_pending`] | admitted by the concurrency policy, or a retry's backoff is over |
//! | Pending | Skipped | [`admit_pending`] | `Forbid` and another run is active |
//! | Pending | Failed | [`no_snapshot`] | the training data snapshot cannot be taken |
//! | any unfinished | Canceled | [`admit_pending`] | `Replace`: a newer run replaces it |
//! | Queued | Running | [`claim`] | a worker took the job's first delivery, before starting it |
//! | Running | Running | [`claim`] | a later delivery (its first worker died or handed it back) was taken |
//! | Queued, Running | Running | [`on_report`] | the job started (MLflow run) or reported its process |
//! | Queued, Running | Evaluating | [`on_report`] | training succeeded and the pipeline has a model |
//! | Queued, Running | Succeeded | [`on_report`] | training succeeded and there is no model to promote |
//! | Queued, Running | GateFailed | [`on_report`] | a blocking CI check failed |
//! | Queued, Running | Failed | [`on_report`] | timed out, unschedulable, or failed with no retry left |
//! | Queued, Running | Pending | [`on_report`] | failed with a retry left (backoff set) |
//! | Running | Pending, Failed | [`recover`] | the in-process worker died with the controller |
//! | Running | Queued | [`recover`] | the in-process worker died with the controller before the attempt's MLflow run existed |
//! | Evaluating | Succeeded | [`begin_evaluation`], [`judge`] | no model; the candidate already is the champion; CT passed and CD is automatic |
//! | Evaluating | GateFailed | [`begin_evaluation`], [`no_candidate`], [`judge`] | no MLflow run; no candidate version; CT failed (or inconclusive with `fail`) |
//! | Evaluating | Paused | [`judge`] | CT inconclusive with `onInsufficientData: pause` |
//! | Evaluating, Paused | Shadowing | [`judge`], [`answer`] | CT passed (or a person let a paused run go on), the CD gate has a shadow and the model a champion |
//! | Evaluating, Paused | WaitingApproval | [`judge`], [`answer`] | CT passed (or a person let a paused run go on) and CD approval is manual |
//! | Shadowing | Succeeded | [`shadow`] | the shadow passed (or was inconclusive with `pass`) and CD is automatic |
//! | Shadowing | WaitingApproval | [`shadow`] | the shadow passed and CD approval is manual, or it was inconclusive with `pause` |
//! | Shadowing | GateFailed | [`shadow`] | the shadow failed (or was inconclusive with `fail`) |
//! | Paused | Succeeded | [`answer`] | a person let it go on and CD is automatic |
//! | WaitingApproval | Succeeded | [`answer`] | approved: the champion alias moves |
//! | WaitingApproval, Paused | Rejected | [`answer`] | rejected, or no answer before the deadline |
//! | WaitingApproval, Paused | Failed | [`answer`] | approved, but the run has no candidate version |

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::gates::{
    Comparison, GateAction, SameData, Verdict, action_for, evaluate_ct_with, number_text,
};
use crate::job::{CiResult, JobEvent, JobStatus};
use crate::pipeline::{Approval as ApprovalMode, DurationSpec};
use crate::pipeline_run::{
    Admission, Phase, PipelineRun, PipelineRunEvent, PromotionStep, UNFINISHED_PHASES, admit,
};
use crate::shadow::{
    LiveComparison, ShadowCheck, ShadowJudgement, ShadowProgress, ShadowSummary, judge_shadow,
};

/// The phases of a job that a worker has (or is about to have).
const LIVE: [Phase; 2] = [Phase::Queued, Phase::Running];

/// Every phase change the state machine makes, as (from, to). A move that keeps the phase
/// (a job reporting its process while Running) is not listed. The table in the module
/// documentation and in docs/architecture.md is this list, grouped.
pub const TRANSITIONS: &[(Phase, Phase)] = &[
    (Phase::Pending, Phase::Queued),
    (Phase::Pending, Phase::Skipped),
    (Phase::Pending, Phase::Canceled),
    (Phase::Pending, Phase::Failed),
    (Phase::Queued, Phase::Running),
    (Phase::Queued, Phase::Evaluating),
    (Phase::Queued, Phase::Succeeded),
    (Phase::Queued, Phase::GateFailed),
    (Phase::Queued, Phase::Failed),
    (Phase::Queued, Phase::Pending),
    (Phase::Queued, Phase::Canceled),
    (Phase::Running, Phase::Evaluating),
    (Phase::Running, Phase::Succeeded),
    (Phase::Running, Phase::GateFailed),
    (Phase::Running, Phase::Failed),
    (Phase::Running, Phase::Pending),
    (Phase::Running, Phase::Canceled),
    (Phase::Running, Phase::Queued),
    (Phase::Evaluating, Phase::Succeeded),
    (Phase::Evaluating, Phase::GateFailed),
    (Phase::Evaluating, Phase::Paused),
    (Phase::Evaluating, Phase::WaitingApproval),
    (Phase::Evaluating, Phase::Canceled),
    (Phase::Evaluating, Phase::Shadowing),
    (Phase::Paused, Phase::Shadowing),
    (Phase::Shadowing, Phase::Succeeded),
    (Phase::Shadowing, Phase::WaitingApproval),
    (Phase::Shadowing, Phase::GateFailed),
    (Phase::Shadowing, Phase::Canceled),
    (Phase::Paused, Phase::WaitingApproval),
    (Phase::Paused, Phase::Succeeded),
    (Phase::Paused, Phase::Rejected),
    (Phase::Paused, Phase::Failed),
    (Phase::Paused, Phase::Canceled),
    (Phase::WaitingApproval, Phase::Succeeded),
    (Phase::WaitingApproval, Phase::Rejected),
    (Phase::WaitingApproval, Phase::Failed),
    (Phase::WaitingApproval, Phase::Canceled),
];

/// One thing the controller does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Moves a run, if it is still in one of `from`.
    Move(Move),
    /// Adds to a run's history without moving it.
    Record {
        /// The pipeline run's id.
        run: String,
        /// The history entry.
        event: PipelineRunEvent,
    },
    /// Before a run's first attempt, when its pipeline names its data: records the
    /// training data snapshot, or, for a run that starts with one (a rerun), checks that
    /// every file of it is unchanged. Comes right before the start.
    TakeSnapshot {
        /// The pipeline run's id.
        run: String,
    },
    /// Queues the run's current attempt again (its job was only in the old process's
    /// memory).
    Requeue {
        /// The pipeline run's id.
        run: String,
    },
    /// Marks an attempt's MLflow run FAILED if it still says RUNNING (its worker died).
    FailMlflowRun {
        /// The attempt's MLflow run.
        run_id: String,
    },
}

/// A compare-and-set on a run's phase, with what else changes in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The pipeline run's id.
    pub run: String,
    /// The phases the run must still be in; otherwise nothing happens.
    pub from: Vec<Phase>,
    /// The phase it moves to.
    pub to: Phase,
    /// The other fields it sets.
    pub changes: Vec<Change>,
    /// Registry aliases and stages moved in the same transaction.
    pub promotions: Vec<PromotionStep>,
    /// The history entry written with the move.
    pub event: Option<PipelineRunEvent>,
    /// Done only when the move happened.
    pub then: Option<Effect>,
}

/// A field of the run set by a [`Move`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The attempt now under way.
    Attempt(i64),
    /// When a retry may start (epoch ms); `None` clears the backoff.
    NotBefore(Option<i64>),
    /// The MLflow run of the latest attempt.
    RunId(String),
    /// The candidate model version.
    ModelVersion(i64),
    /// Why the run is where it is, in a sentence (`None` clears it).
    Decision(Option<String>),
    /// The process group of the job's command (`None`: no process any more).
    WorkerPid(Option<i64>),
    /// When a waiting run is rejected without an answer (epoch ms).
    ApprovalDeadline(i64),
    /// Forgets a person's answer (acted on, or stale from an earlier wait).
    ClearApproval,
    /// The start time, unless the run already has one.
    StartTime(i64),
    /// Begins a shadow comparison at this time (epoch ms) against this champion version,
    /// with no replica's numbers yet.
    StartShadow {
        /// When it began.
        started: i64,
        /// The champion it shadows.
        champion: i64,
    },
}

/// What follows a move that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Hand the run's job to the workers (the run is recorded as Queued first).
    QueueJob,
    /// Tell the job's worker to stop it.
    StopJob,
}

impl Move {
    fn new(run: &PipelineRun, from: &[Phase], to: Phase) -> Move {
        Move {
            run: run.id.clone(),
            from: from.to_vec(),
            to,
            changes: Vec::new(),
            promotions: Vec::new(),
            event: None,
            then: None,
        }
    }

    fn set(mut self, change: Change) -> Move {
        self.changes.push(change);
        self
    }

    fn decide(self, decision: impl Into<String>) -> Move {
        self.set(Change::Decision(Some(decision.into())))
    }

    fn record(mut self, event: PipelineRunEvent) -> Move {
        self.event = Some(event);
        self
    }

    /// Applies the move to a run read inside the transaction (its phase already checked).
    pub fn apply(&self, run: &mut PipelineRun) {
        run.phase = self.to;
        for change in &self.changes {
            match change {
                Change::Attempt(attempt) => run.attempt = *attempt,
                Change::NotBefore(at) => run.not_before = *at,
                Change::RunId(id) => run.run_id = Some(id.clone()),
                Change::ModelVersion(version) => run.model_version = Some(*version),
                Change::Decision(decision) => run.decision = decision.clone(),
                Change::WorkerPid(pid) => run.worker_pid = *pid,
                Change::ApprovalDeadline(at) => run.approval_deadline = Some(*at),
                Change::ClearApproval => run.approval = None,
                Change::StartTime(at) => {
                    run.start_time.get_or_insert(*at);
                }
                Change::StartShadow { started, champion } => {
                    run.shadow = Some(ShadowProgress {
                        started: *started,
                        champion: Some(*champion),
                        replicas: Default::default(),
                    });
                }
            }
        }
    }
}

fn event(now: i64, kind: &str, message: impl Into<String>) -> PipelineRunEvent {
    PipelineRunEvent {
        timestamp: now,
        ..PipelineRunEvent::new(kind, message)
    }
}

fn gate_event(
    now: i64,
    gate: &str,
    result: &str,
    message: impl Into<String>,
    detail: Value,
) -> PipelineRunEvent {
    PipelineRunEvent {
        timestamp: now,
        ..PipelineRunEvent::gate(gate, result, message, detail)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Holds a slot of the concurrency policy: admitted and unfinished, including a run
/// waiting out a retry backoff.
pub fn holds_slot(run: &PipelineRun) -> bool {
    run.phase.is_active() || (run.phase == Phase::Pending && run.attempt > 0)
}

/// The steps that start a run's next attempt: its data snapshot first when it needs one.
fn start(run: &PipelineRun, now: i64, steps: &mut Vec<Step>) {
    if run.spec.data.is_some() && (run.snapshot_id.is_none() || run.attempt == 0) {
        steps.push(Step::TakeSnapshot {
            run: run.id.clone(),
        });
    }
    let next = run.attempt + 1;
    steps.push(Step::Move(Move {
        then: Some(Effect::QueueJob),
        ..Move::new(run, &[Phase::Pending], Phase::Queued)
            .set(Change::Attempt(next))
            .set(Change::NotBefore(None))
            .set(Change::WorkerPid(None))
            .set(Change::StartTime(now))
            .record(event(now, "attempt", format!("attempt {next} queued")))
    }));
}

/// A run whose training data snapshot could not be taken, or whose recorded snapshot no
/// longer matches its files, fails before any attempt: there is nothing it could train on
/// that would be on record.
pub fn no_snapshot(run: &PipelineRun, reason: &str) -> Move {
    let decision = if run.snapshot_id.is_some() {
        format!("cannot train on the recorded data snapshot again: {reason}")
    } else {
        format!("cannot snapshot the training data: {reason}")
    };
    Move::new(run, &[Phase::Pending], Phase::Failed).decide(decision)
}

/// Admission for one pipeline: `runs` are its unfinished runs, oldest first. Retries
/// whose backoff is over start; first attempts are admitted by the concurrency policy,
/// each seeing the runs admitted before it.
pub fn admit_pending(runs: &[PipelineRun], now: i64) -> Vec<Step> {
    let mut holding: Vec<&str> = runs
        .iter()
        .filter(|r| holds_slot(r))
        .map(|r| r.id.as_str())
        .collect();
    let mut steps = Vec::new();
    for run in runs.iter().filter(|r| r.phase == Phase::Pending) {
        if run.attempt > 0 {
            // A retry keeps its slot; it waits out its backoff and nothing else.
            if run.not_before.is_none_or(|t| t <= now) {
                start(run, now, &mut steps);
            }
            continue;
        }
        let others: Vec<String> = holding
            .iter()
            .filter(|id| **id != run.id)
            .map(|id| id.to_string())
            .collect();
        match admit(run.spec.concurrency_policy, &others) {
            Admission::Start => {
                start(run, now, &mut steps);
                holding.push(&run.id);
            }
            Admission::Skip => {
                let decision = format!(
                    "not started: pipeline run {} was still active (concurrencyPolicy Forbid)",
                    others.join(", ")
                );
                steps.push(Step::Move(
                    Move::new(run, &[Phase::Pending], Phase::Skipped).decide(decision),
                ));
            }
            Admission::Wait => break,
            Admission::Replace(ids) => {
                for id in &ids {
                    steps.push(Step::Move(Move {
                        run: id.clone(),
                        from: UNFINISHED_PHASES.to_vec(),
                        to: Phase::Canceled,
                        changes: vec![Change::Decision(Some(format!(
                            "replaced by pipeline run {} (concurrencyPolicy Replace)",
                            run.id
                        )))],
                        promotions: Vec::new(),
                        event: None,
                        then: Some(Effect::StopJob),
                    }));
                }
                holding.retain(|id| !ids.iter().any(|replaced| replaced == id));
                start(run, now, &mut steps);
                holding.push(&run.id);
            }
        }
    }
    steps
}

/// The retry policy after a failed attempt: back to Pending with a backoff while retries
/// are left, else Failed.
pub fn after_failure(
    run: &PipelineRun,
    from: &[Phase],
    message: &str,
    run_id: Option<String>,
    now: i64,
) -> Move {
    let retry = &run.spec.retry;
    let attempt = run.attempt;
    let retries_used = u32::try_from((attempt - 1).max(0)).unwrap_or(u32::MAX);
    let with_run_id = |mv: Move| match &run_id {
        Some(id) => mv.set(Change::RunId(id.clone())),
        None => mv,
    };
    if retries_used < retry.limit {
        let delay = retry.delay(retries_used + 1);
        let note = format!(
            "attempt {attempt} failed: {message}; retrying in {}",
            DurationSpec(delay)
        );
        with_run_id(
            Move::new(run, from, Phase::Pending)
                .set(Change::NotBefore(Some(now.saturating_add(millis(delay)))))
                .set(Change::WorkerPid(None))
                .record(event(now, "attempt", note)),
        )
    } else {
        let total = retry.limit.saturating_add(1);
        with_run_id(
            Move::new(run, from, Phase::Failed)
                .decide(format!("{message} (attempt {attempt} of {total})"))
                .set(Change::WorkerPid(None)),
        )
    }
}

/// The history entry for a job's CI checks.
pub fn ci_event(ci: &[CiResult], dry_run: bool, now: i64) -> PipelineRunEvent {
    let passed = ci.iter().all(|c| c.passed);
    let mut message = if passed {
        format!("{} CI check(s) passed", ci.len())
    } else {
        let failed: Vec<String> = ci
            .iter()
            .filter(|c| !c.passed)
            .map(|c| match c.exit_code {
                Some(code) => format!("'{}' exited with {code}", c.name),
                None => format!("'{}' was stopped", c.name),
            })
            .collect();
        format!("CI failed: {}", failed.join(", "))
    };
    if dry_run && !passed {
        message.push_str(" (dry run: not blocking)");
    }
    gate_event(
        now,
        "ci",
        if passed { "pass" } else { "fail" },
        message,
        json!({ "checks": ci, "dryRun": dry_run }),
    )
}

/// Why a worker may not start a delivered job (see [`claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Another worker runs this attempt and may still be alive: its delivery is the
    /// one that settles the job (or, if that worker died, comes back as a redelivery).
    RunningElsewhere {
        /// The attempt the other worker runs.
        attempt: i64,
    },
    /// The run no longer waits for this attempt: why.
    Stale(String),
}

impl std::fmt::Display for ClaimRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimRefused::RunningElsewhere { attempt } => {
                write!(f, "attempt {attempt} is already running on another worker")
            }
            ClaimRefused::Stale(why) => f.write_str(why),
        }
    }
}

/// Whether the worker holding the `delivered`-th delivery of `attempt` may start it, and
/// the move that records it took the job. Decided on the run as read inside the move's
/// transaction, so of two workers handed the same job at once (a bus that lost its
/// delivery counts redelivers a job as new) exactly one starts it. A first delivery
/// needs the run queued; a later one (its first worker died or handed it back) may find
/// it running and takes it over.
pub fn claim(
    run: &PipelineRun,
    attempt: i64,
    delivered: u64,
    worker: &str,
    now: i64,
) -> Result<Move, ClaimRefused> {
    if run.attempt != attempt {
        return Err(ClaimRefused::Stale(format!(
            "attempt {attempt} is not the run's current attempt ({})",
            run.attempt
        )));
    }
    match run.phase {
        Phase::Queued => Ok(Move::new(run, &[Phase::Queued], Phase::Running).record(event(
            now,
            "attempt",
            format!("attempt {attempt} taken by worker {worker}"),
        ))),
        Phase::Running if delivered > 1 => {
            Ok(Move::new(run, &[Phase::Running], Phase::Running).record(event(
                now,
                "attempt",
                format!(
                    "attempt {attempt} taken over by worker {worker} (delivery {delivered}): the worker before it stopped"
                ),
            )))
        }
        Phase::Running => Err(ClaimRefused::RunningElsewhere { attempt }),
        phase => Err(ClaimRefused::Stale(format!(
            "the run is {phase}; it no longer waits for a worker"
        ))),
    }
}

/// What a worker's report does to the run it is about. A report for an earlier attempt,
/// or one that arrives after the run moved on, changes nothing.
pub fn on_report(run: &PipelineRun, report: &JobEvent, now: i64) -> Vec<Step> {
    match report {
        JobEvent::Started {
            attempt, run_id, ..
        } if *attempt == run.attempt => {
            let note = format!("attempt {attempt}: MLflow run {run_id}");
            vec![Step::Move(
                Move::new(run, &LIVE, Phase::Running)
                    .set(Change::RunId(run_id.clone()))
                    .record(event(now, "attempt", note)),
            )]
        }
        JobEvent::Process { attempt, pid, .. } if *attempt == run.attempt => {
            vec![Step::Move(
                Move::new(run, &LIVE, Phase::Running).set(Change::WorkerPid(Some(i64::from(*pid)))),
            )]
        }
        JobEvent::Finished {
            attempt,
            status,
            run_id,
            message,
            ci,
            ..
        } if *attempt == run.attempt && LIVE.contains(&run.phase) => {
            let mut steps = Vec::new();
            if !ci.is_empty() {
                steps.push(Step::Record {
                    run: run.id.clone(),
                    event: ci_event(ci, run.spec.gates.ci.dry_run, now),
                });
            }
            let finish = |phase: Phase, decision: Option<String>| {
                let mv = Move::new(run, &LIVE, phase)
                    .set(Change::Decision(decision))
                    .set(Change::WorkerPid(None));
                match run_id {
                    Some(id) => mv.set(Change::RunId(id.clone())),
                    None => mv,
                }
            };
            let finished = match status {
                JobStatus::Succeeded if run.spec.model.is_none() => Some(finish(
                    Phase::Succeeded,
                    Some("trained; the pipeline has no model to promote".into()),
                )),
                JobStatus::Succeeded => Some(finish(Phase::Evaluating, None)),
                JobStatus::CiFailed => Some(finish(Phase::GateFailed, Some(message.clone()))),
                JobStatus::TimedOut | JobStatus::Unschedulable => {
                    Some(finish(Phase::Failed, Some(message.clone())))
                }
                JobStatus::Failed => Some(after_failure(run, &LIVE, message, run_id.clone(), now)),
                // Either the controller canceled it (already recorded) or the worker pool
                // is shutting down: recovery picks the run up at the next start.
                JobStatus::Canceled => None,
            };
            steps.extend(finished.map(Step::Move));
            steps
        }
        _ => Vec::new(),
    }
}

/// The first part of judging a run whose training succeeded.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// Nothing to judge: the run ends here.
    Decided(Box<Move>),
    /// Find (or register) the version of `model` that the MLflow run produced, then
    /// [`judge`] it (or [`no_candidate`]).
    FindCandidate {
        /// The registered model the candidate is a version of.
        model: String,
        /// The logged model ctflow registers when the script registered none.
        logged_model: String,
        /// The MLflow run that trained it.
        run_id: String,
    },
}

/// What judging a run that trained starts with: an end at once (no model, no MLflow run),
/// or the candidate to find.
pub fn begin_evaluation(run: &PipelineRun) -> Evaluation {
    let from = [Phase::Evaluating];
    let Some(model) = &run.spec.model else {
        return Evaluation::Decided(Box::new(
            Move::new(run, &from, Phase::Succeeded)
                .decide("trained; the pipeline has no model to promote"),
        ));
    };
    let Some(run_id) = &run.run_id else {
        return Evaluation::Decided(Box::new(
            Move::new(run, &from, Phase::GateFailed).decide("the job recorded no MLflow run"),
        ));
    };
    Evaluation::FindCandidate {
        model: model.name.clone(),
        logged_model: model.logged_model.clone(),
        run_id: run_id.clone(),
    }
}

/// The MLflow run produced no version of the model.
pub fn no_candidate(run: &PipelineRun, run_id: &str) -> Move {
    let (name, logged) = run
        .spec
        .model
        .as_ref()
        .map_or(("", ""), |m| (m.name.as_str(), m.logged_model.as_str()));
    Move::new(run, &[Phase::Evaluating], Phase::GateFailed).decide(format!(
        "run {run_id} registered no version of '{name}' and logged no model named '{logged}'"
    ))
}

/// The model's champion when the candidate is judged, with its run's latest metrics
/// (empty when the version has no run).
#[derive(Debug, Clone, PartialEq)]
pub struct Champion {
    /// Its version number.
    pub version: i64,
    /// The MLflow run that trained it (empty when the version has none).
    pub run_id: String,
    /// That run's latest metrics.
    pub metrics: HashMap<String, f64>,
}

/// What the CT gate compares.
#[derive(Debug, Clone, PartialEq)]
pub struct GateInputs {
    /// The candidate model version.
    pub version: i64,
    /// The MLflow run that trained it.
    pub run_id: String,
    /// The latest metrics of that run.
    pub metrics: HashMap<String, f64>,
    /// The model's champion, if it has one.
    pub champion: Option<Champion>,
    /// Both models scored on the same data, when the gate has an evaluation step.
    pub same_data: Option<SameData>,
}

fn describe_failure(comparisons: &[Comparison]) -> String {
    let parts: Vec<String> = comparisons
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| {
            let value = c.candidate.map_or("missing".to_string(), number_text);
            match (c.verdict, c.required) {
                (Verdict::Fail, Some(required)) => format!(
                    "{} = {value}, needs {} {} ({})",
                    c.metric,
                    c.operator,
                    number_text(required),
                    c.check
                ),
                _ => format!(
                    "{}: {}",
                    c.metric,
                    c.note.clone().unwrap_or_else(|| "inconclusive".into())
                ),
            }
        })
        .collect();
    parts.join("; ")
}

/// The CT gate on a candidate version, and what follows it: stop, pause for a person, or
/// go on to the CD gate. `user` is who automatic promotions are recorded as.
pub fn judge(run: &PipelineRun, inputs: &GateInputs, user: &str, now: i64) -> Vec<Step> {
    let from = [Phase::Evaluating];
    let version = inputs.version;
    let champion = inputs.champion.as_ref();
    if champion.is_some_and(|c| c.version == version) {
        return vec![Step::Move(
            Move::new(run, &from, Phase::Succeeded)
                .set(Change::ModelVersion(version))
                .decide(format!("version {version} is already the champion")),
        )];
    }
    let ct = &run.spec.gates.ct;
    let evaluation = evaluate_ct_with(
        &ct.metrics,
        &inputs.metrics,
        champion.map(|c| &c.metrics),
        inputs.same_data.as_ref(),
    );
    let action = action_for(evaluation.verdict, ct.on_insufficient_data, ct.dry_run);
    let verdict = match evaluation.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    };
    let mut message = match (evaluation.verdict, champion) {
        (Verdict::Pass, Some(c)) => format!(
            "version {version} passed against champion version {}",
            c.version
        ),
        (Verdict::Pass, None) => {
            format!("version {version} passed (no champion yet: thresholds only)")
        }
        _ => describe_failure(&evaluation.comparisons),
    };
    if ct.dry_run && evaluation.verdict != Verdict::Pass {
        message.push_str(" (dry run: not blocking)");
    }
    let recorded = gate_event(
        now,
        "ct",
        verdict,
        message.clone(),
        json!({
            "candidate": {"version": version, "run_id": inputs.run_id},
            "champion": champion.map(|c| json!({"version": c.version, "run_id": c.run_id})),
            "comparisons": evaluation.comparisons,
            "sameData": inputs.same_data.as_ref().map(|s| &s.snapshot),
            "onInsufficientData": ct.on_insufficient_data,
            "dryRun": ct.dry_run,
        }),
    );
    match action {
        GateAction::Stop => vec![Step::Move(
            Move::new(run, &from, Phase::GateFailed)
                .set(Change::ModelVersion(version))
                .decide(format!("CT gate: {message}"))
                .record(recorded),
        )],
        GateAction::Pause => {
            let deadline = now.saturating_add(millis(run.spec.gates.cd.timeout.0));
            vec![Step::Move(
                wait_for_person(run, &from, Phase::Paused, version, deadline).record(recorded),
            )]
        }
        GateAction::Proceed => {
            let mut steps = vec![Step::Record {
                run: run.id.clone(),
                event: recorded,
            }];
            steps.extend(
                after_ct(run, &from, version, champion.map(|c| c.version), user, now)
                    .map(Step::Move),
            );
            steps
        }
    }
}

/// Parks a run until a person answers or the deadline passes.
fn wait_for_person(
    run: &PipelineRun,
    from: &[Phase],
    phase: Phase,
    version: i64,
    deadline: i64,
) -> Move {
    Move::new(run, from, phase)
        .set(Change::ModelVersion(version))
        .set(Change::ApprovalDeadline(deadline))
        .set(Change::ClearApproval)
}

fn promotion(
    run: &PipelineRun,
    model: &str,
    version: i64,
    alias: &str,
    stage: &str,
    user: &str,
) -> PromotionStep {
    PromotionStep {
        model: model.to_string(),
        version,
        alias: alias.to_string(),
        stage: run.spec.promotion.stages.then(|| stage.to_string()),
        user: user.to_string(),
        comment: format!("pipeline {} run {}", run.pipeline, run.id),
    }
}

/// After CT passed: the candidate becomes the challenger; with a shadow in the CD gate and
/// a champion to shadow, it answers mirrored traffic first (see [`shadow`]); else the CD
/// decision follows at once.
fn after_ct(
    run: &PipelineRun,
    from: &[Phase],
    version: i64,
    previous: Option<i64>,
    user: &str,
    now: i64,
) -> Option<Move> {
    let model = run.spec.model.as_ref()?;
    let cd = &run.spec.gates.cd;
    let challenger = promotion(
        run,
        &model.name,
        version,
        &run.spec.promotion.challenger_alias,
        "Staging",
        user,
    );
    if let (Some(shadow), Some(champion), false) = (&cd.shadow, previous, cd.dry_run) {
        let shadowing = gate_event(
            now,
            "cd",
            "waiting",
            format!(
                "version {version} is the challenger; shadowing champion version {champion} on \
                 live traffic ({} requests, timeout {})",
                shadow.requests, shadow.timeout
            ),
            json!({"shadow": shadow, "champion": champion}),
        );
        let deadline = now.saturating_add(millis(shadow.timeout.0));
        let mut mv = Move::new(run, from, Phase::Shadowing)
            .set(Change::ModelVersion(version))
            .set(Change::ApprovalDeadline(deadline))
            .set(Change::ClearApproval)
            .set(Change::StartShadow {
                started: now,
                champion,
            })
            .record(shadowing);
        mv.promotions = vec![challenger];
        return Some(mv);
    }
    cd_decision(run, from, version, previous, Some(challenger), user, now)
}

/// The CD gate's approval step: the champion at once (`cd.approval: auto`, or a manual
/// approval in dry run) or after a person approves. `challenger` is set when the
/// candidate is not the challenger yet.
fn cd_decision(
    run: &PipelineRun,
    from: &[Phase],
    version: i64,
    previous: Option<i64>,
    challenger: Option<PromotionStep>,
    user: &str,
    now: i64,
) -> Option<Move> {
    let model = run.spec.model.as_ref()?;
    let aliases = &run.spec.promotion;
    let cd = &run.spec.gates.cd;
    if cd.approval == ApprovalMode::Manual && !cd.dry_run {
        let deadline = now.saturating_add(millis(cd.timeout.0));
        let waiting = gate_event(
            now,
            "cd",
            "waiting",
            format!(
                "version {version} is the challenger; waiting for approval (timeout {})",
                cd.timeout
            ),
            json!({"approval": "manual", "deadline": deadline}),
        );
        let mut mv =
            wait_for_person(run, from, Phase::WaitingApproval, version, deadline).record(waiting);
        mv.promotions = challenger.into_iter().collect();
        return Some(mv);
    }
    let champion = promotion(
        run,
        &model.name,
        version,
        &aliases.champion_alias,
        "Production",
        user,
    );
    let message = if cd.approval == ApprovalMode::Manual {
        "dry run: would have waited for approval; promoted"
    } else {
        "automatic promotion"
    };
    let passed = gate_event(
        now,
        "cd",
        "pass",
        message,
        json!({"approval": cd.approval, "dryRun": cd.dry_run}),
    );
    let decision = match previous {
        Some(p) => format!("version {version} is the champion (was version {p})"),
        None => format!("version {version} is the first champion"),
    };
    let mut mv = Move::new(run, from, Phase::Succeeded)
        .set(Change::ModelVersion(version))
        .decide(decision)
        .set(Change::ClearApproval)
        .record(passed);
    mv.promotions = challenger.into_iter().chain([champion]).collect();
    Some(mv)
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A shadow verdict in a sentence: the numbers for a pass, what fell short otherwise.
fn describe_shadow(
    verdict: Verdict,
    checks: &[ShadowCheck],
    summary: &ShadowSummary,
    wanted: u64,
) -> String {
    let compared = format!(
        "{} requests ({} rows) compared, {} errors, {} dropped",
        summary.requests, summary.rows, summary.errors, summary.dropped
    );
    let shown = |c: &ShadowCheck| {
        let value = c.value.map_or("nothing measured".to_string(), |v| {
            match c.criterion.as_str() {
                "agreement" => percent(v),
                "errors" => format!("{v:.0}"),
                _ => number_text(v),
            }
        });
        match c.required {
            Some(required) if c.criterion == "agreement" => {
                format!(
                    "{} {value}, needs {} {}",
                    c.criterion,
                    c.operator,
                    percent(required)
                )
            }
            Some(required) => format!(
                "{} {value}, needs {} {}",
                c.criterion,
                c.operator,
                number_text(required)
            ),
            None => format!("{} {value} ({})", c.criterion, c.operator),
        }
    };
    match verdict {
        Verdict::Pass => {
            let numbers: Vec<String> = checks.iter().map(shown).collect();
            format!("shadow passed: {compared}; {}", numbers.join("; "))
        }
        Verdict::Fail => {
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| c.verdict == Verdict::Fail)
                .map(shown)
                .collect();
            format!("shadow failed: {}; {compared}", failed.join("; "))
        }
        Verdict::Inconclusive if summary.requests < wanted => {
            let why = summary
                .load_error
                .as_ref()
                .map(|e| format!(" (the challenger did not load: {e})"))
                .unwrap_or_default();
            format!(
                "shadow inconclusive: {} of {wanted} requests compared before the timeout{why}; {compared}",
                summary.requests
            )
        }
        Verdict::Inconclusive => {
            let missing: Vec<String> = checks
                .iter()
                .filter(|c| c.verdict == Verdict::Inconclusive)
                .map(shown)
                .collect();
            format!("shadow inconclusive: {}; {compared}", missing.join("; "))
        }
    }
}

/// The shadow gate on a shadowing run, from the serving replicas' numbers recorded on it
/// and the clock: nothing while it waits for traffic; else the verdict, recorded with its
/// numbers, and what follows it (the CD decision, a stop, or a person when the data was
/// insufficient with `pause`). `champion` is the model's champion version now; `live`, the
/// gate's live metrics of both models on the labelled mirrored rows (see
/// [`crate::shadow::compare_live`]).
pub fn shadow(
    run: &PipelineRun,
    champion: Option<i64>,
    live: &[LiveComparison],
    user: &str,
    now: i64,
) -> Vec<Step> {
    let from = [Phase::Shadowing];
    if run.phase != Phase::Shadowing {
        return Vec::new();
    }
    let Some(version) = run.model_version else {
        return vec![Step::Move(
            Move::new(run, &from, Phase::GateFailed).decide("the shadowing run has no candidate"),
        )];
    };
    let cd = &run.spec.gates.cd;
    let Some(gate) = &cd.shadow else {
        // The spec a run keeps never changes, so this is a run recorded by another version.
        return cd_decision(run, &from, version, champion, None, user, now)
            .map(Step::Move)
            .into_iter()
            .collect();
    };
    let progress = run.shadow.clone().unwrap_or_else(|| ShadowProgress {
        started: run.last_updated_time,
        ..ShadowProgress::default()
    });
    let ShadowJudgement::Decided {
        verdict,
        checks,
        summary,
    } = judge_shadow(gate, &progress, live, now)
    else {
        return Vec::new();
    };
    let message = describe_shadow(verdict, &checks, &summary, gate.requests);
    let result = match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    };
    let recorded = gate_event(
        now,
        "cd",
        result,
        message.clone(),
        json!({
            "shadow": {
                "candidate": version,
                "champion": progress.champion,
                "summary": summary,
                "checks": checks,
                "live": live,
                "replicas": progress.replicas,
                "started": progress.started,
                "onInsufficientData": gate.on_insufficient_data,
            }
        }),
    );
    match action_for(verdict, gate.on_insufficient_data, false) {
        GateAction::Stop => vec![Step::Move(
            Move::new(run, &from, Phase::GateFailed)
                .decide(format!("CD gate: {message}"))
                .record(recorded),
        )],
        GateAction::Pause => {
            let deadline = now.saturating_add(millis(cd.timeout.0));
            vec![Step::Move(
                wait_for_person(run, &from, Phase::WaitingApproval, version, deadline)
                    .record(recorded),
            )]
        }
        GateAction::Proceed => {
            let mut steps = vec![Step::Record {
                run: run.id.clone(),
                event: recorded,
            }];
            steps.extend(
                cd_decision(run, &from, version, champion, None, user, now).map(Step::Move),
            );
            steps
        }
    }
}

/// Whether [`answer`] needs the model's current champion: the `(model, alias)` to look up.
pub fn answer_needs_champion(run: &PipelineRun) -> Option<(&str, &str)> {
    let model = run.spec.model.as_ref()?;
    let approved = run.approval.as_ref().is_some_and(|a| a.approved);
    (approved && run.model_version.is_some()).then_some((
        model.name.as_str(),
        run.spec.promotion.champion_alias.as_str(),
    ))
}

/// Acts on a person's answer to a waiting or paused run, or on its deadline. `champion`
/// is the model's champion version now (see [`answer_needs_champion`]).
pub fn answer(run: &PipelineRun, champion: Option<i64>, user: &str, now: i64) -> Option<Move> {
    if !matches!(run.phase, Phase::WaitingApproval | Phase::Paused) {
        return None;
    }
    let from = [run.phase];
    match (&run.approval, run.model_version, &run.spec.model) {
        (Some(approval), Some(version), Some(model)) if approval.approved => {
            if run.phase == Phase::Paused {
                // Letting a paused run go on is the CT gate's pass: CD comes next.
                return after_ct(run, &from, version, champion, user, now);
            }
            let decision = match champion {
                Some(p) => format!(
                    "approved by {}; version {version} is the champion (was version {p})",
                    approval.user
                ),
                None => format!(
                    "approved by {}; version {version} is the first champion",
                    approval.user
                ),
            };
            let mut mv = Move::new(run, &from, Phase::Succeeded)
                .decide(decision)
                .set(Change::ClearApproval);
            mv.promotions = vec![promotion(
                run,
                &model.name,
                version,
                &run.spec.promotion.champion_alias,
                "Production",
                &approval.user,
            )];
            Some(mv)
        }
        (Some(approval), _, _) if approval.approved => Some(
            Move::new(run, &from, Phase::Failed)
                .decide(format!(
                    "approved by {}, but the run has no candidate version",
                    approval.user
                ))
                .set(Change::ClearApproval),
        ),
        (Some(approval), _, _) => Some(
            Move::new(run, &from, Phase::Rejected)
                .decide(format!("rejected by {}", approval.user))
                .set(Change::ClearApproval),
        ),
        (None, _, _) if run.approval_deadline.is_some_and(|d| d <= now) => Some(
            Move::new(run, &from, Phase::Rejected).decide("no answer before the approval timeout"),
        ),
        _ => None,
    }
}

/// What a starting controller does with a run it finds unfinished. A queued job lived only
/// in the old process's memory, so it is queued again. A running job's worker died with
/// the old process when workers run in it (`workers_in_process`); separate workers may
/// still run theirs, and the bus hands a job whose worker died to another.
pub fn recover(run: &PipelineRun, workers_in_process: bool, now: i64) -> Vec<Step> {
    match run.phase {
        Phase::Queued => vec![
            Step::Record {
                run: run.id.clone(),
                event: event(
                    now,
                    "attempt",
                    format!("attempt {} queued again after a restart", run.attempt),
                ),
            },
            Step::Requeue {
                run: run.id.clone(),
            },
        ],
        // NB: claimed, but its worker died with the process before the attempt's MLflow
        // run existed (building the environment, say): nothing ran, so the attempt is
        // queued again rather than counted as failed.
        Phase::Running if workers_in_process && run.run_id.is_none() => {
            vec![Step::Move(Move {
                then: Some(Effect::QueueJob),
                ..Move::new(run, &[Phase::Running], Phase::Queued)
                    .set(Change::WorkerPid(None))
                    .record(event(
                        now,
                        "attempt",
                        format!(
                            "attempt {} queued again after a restart: its worker had not started it",
                            run.attempt
                        ),
                    ))
            })]
        }
        Phase::Running if workers_in_process => {
            let mut steps: Vec<Step> = run
                .run_id
                .iter()
                .map(|run_id| Step::FailMlflowRun {
                    run_id: run_id.clone(),
                })
                .collect();
            let message = format!(
                "the worker stopped during attempt {} (ctflow restarted)",
                run.attempt
            );
            steps.push(Step::Move(after_failure(
                run,
                &[Phase::Running],
                &message,
                None,
                now,
            )));
            steps
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
