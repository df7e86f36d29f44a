//! The reconcile loop: admission under the concurrency policy, job reports, the CT and CD
//! gates, promotion, approvals and their timeouts; and recovery after a restart.
//!
//! Only this module moves pipeline runs forward (the API records triggers and answers),
//! and every move is a compare-and-set on the run's phase, so a report that arrives
//! late, twice, or for an attempt that was replaced changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ctflow_bus::{CiResult, Job, JobEvent, JobStatus};
use ctflow_core::gates::{Comparison, GateAction, Verdict, action_for, evaluate_ct};
use ctflow_core::now_ms;
use ctflow_core::pipeline::Approval as ApprovalMode;
use ctflow_core::pipeline_run::{Admission, Phase, admit};
use ctflow_store::{NewModelVersion, PipelineRun, PipelineRunEvent, PromotionStep, RunUpdate};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Result, Shared};

/// How often the loop looks even when nothing woke it (retry backoffs, approval timeouts).
const TICK: Duration = Duration::from_millis(500);

use ctflow_core::pipeline_run::UNFINISHED_PHASES as UNFINISHED;

/// Holds a slot of the concurrency policy: admitted and unfinished, including a run
/// waiting out a retry backoff.
fn holds_slot(run: &PipelineRun) -> bool {
    run.phase.is_active() || (run.phase == Phase::Pending && run.attempt > 0)
}

fn job_of(run: &PipelineRun) -> Job {
    Job {
        pipeline_run: run.id.clone(),
        pipeline: run.pipeline.clone(),
        attempt: run.attempt,
        spec: run.spec.clone(),
        base_dir: run.base_dir.clone().into(),
        trigger: run.trigger.clone(),
    }
}

fn seconds(d: Duration) -> String {
    ctflow_core::pipeline::DurationSpec(d).to_string()
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    loop {
        if let Err(error) = reconcile_once(&shared).await {
            tracing::warn!(%error, "reconcile pass failed; retrying");
        }
        tokio::select! {
            _ = shared.reconcile.notified() => {}
            _ = shared.bus.controller_woken() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

pub(crate) async fn run_events(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    loop {
        let event = tokio::select! {
            event = shared.bus.next_event() => event,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(delivery) = event else {
            return Ok(());
        };
        let settled = match handle_job_event(&shared, delivery.item).await {
            Ok(()) => delivery.lease.done().await,
            // A report about a pipeline run that no longer exists can never be recorded.
            Err(crate::Error::Store(ctflow_store::Error::Mlflow(error))) => {
                tracing::warn!(%error, "a job report that cannot be recorded; dropped");
                delivery.lease.done().await
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record a job report yet; it comes again");
                delivery.lease.hand_back(Duration::from_secs(1)).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "cannot settle a job report");
        }
        shared.reconcile.notify_one();
    }
}

/// One pass over every unfinished pipeline run.
pub(crate) async fn reconcile_once(shared: &Shared) -> Result<()> {
    resend(shared).await;
    let mut runs = shared
        .store
        .list_pipeline_runs(None, UNFINISHED, 100_000)
        .await?;
    runs.reverse(); // oldest first
    let mut by_pipeline: BTreeMap<String, Vec<PipelineRun>> = BTreeMap::new();
    for run in runs {
        by_pipeline
            .entry(run.pipeline.clone())
            .or_default()
            .push(run);
    }
    let now = now_ms();
    for (_, runs) in by_pipeline {
        let mut holding: Vec<String> = runs
            .iter()
            .filter(|r| holds_slot(r))
            .map(|r| r.id.clone())
            .collect();
        for run in runs.iter().filter(|r| r.phase == Phase::Pending) {
            // A retry waits out its backoff; a first attempt never has one.
            if run.attempt > 0 && run.not_before.is_some_and(|t| t > now) {
                continue;
            }
            if run.attempt > 0 {
                start(shared, run).await?;
                continue;
            }
            let others: Vec<String> = holding
                .iter()
                .filter(|id| **id != run.id)
                .cloned()
                .collect();
            match admit(run.spec.concurrency_policy, &others) {
                Admission::Start => {
                    start(shared, run).await?;
                    holding.push(run.id.clone());
                }
                Admission::Skip => {
                    let decision = format!(
                        "not started: pipeline run {} was still active (concurrencyPolicy Forbid)",
                        others.join(", ")
                    );
                    conclude(shared, &run.id, &[Phase::Pending], Phase::Skipped, decision).await?;
                }
                Admission::Wait => break,
                Admission::Replace(ids) => {
                    for id in &ids {
                        cancel(
                            shared,
                            id,
                            &format!(
                                "replaced by pipeline run {} (concurrencyPolicy Replace)",
                                run.id
                            ),
                        )
                        .await?;
                    }
                    holding.retain(|id| !ids.contains(id));
                    start(shared, run).await?;
                    holding.push(run.id.clone());
                }
            }
        }
        for run in &runs {
            match run.phase {
                Phase::Evaluating => {
                    if let Err(error) = evaluate(shared, run).await {
                        tracing::warn!(%error, pipeline_run = run.id, "evaluation failed; will retry");
                    }
                }
                Phase::WaitingApproval | Phase::Paused => answer(shared, run, now).await?,
                _ => {}
            }
        }
    }
    Ok(())
}

async fn start(shared: &Shared, run: &PipelineRun) -> Result<()> {
    let now = now_ms();
    let next_attempt = run.attempt + 1;
    let changed = shared
        .store
        .modify_pipeline_run(
            &run.id,
            &[Phase::Pending],
            |r| {
                r.phase = Phase::Queued;
                r.attempt = next_attempt;
                r.not_before = None;
                r.worker_pid = None;
                r.start_time.get_or_insert(now);
            },
            Some(PipelineRunEvent::new(
                "attempt",
                format!("attempt {next_attempt} queued"),
            )),
        )
        .await?;
    // NB: the run is recorded as Queued before the job exists anywhere else; if the
    // process dies in between, recovery queues it again.
    if let Some(run) = changed {
        send(shared, job_of(&run)).await;
    }
    Ok(())
}

/// Queues a job, keeping it for the next pass when the bus cannot take it now.
async fn send(shared: &Shared, job: Job) {
    let id = job.pipeline_run.clone();
    if let Err(error) = shared.bus.enqueue(job.clone()).await {
        tracing::warn!(%error, pipeline_run = id, "cannot queue a job yet; trying again");
        shared
            .unsent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, job);
    }
}

/// Sends the jobs the bus refused earlier.
async fn resend(shared: &Shared) {
    let jobs: Vec<Job> =
        std::mem::take(&mut *shared.unsent.lock().unwrap_or_else(|e| e.into_inner()))
            .into_values()
            .collect();
    for job in jobs {
        send(shared, job).await;
    }
}

async fn cancel(shared: &Shared, id: &str, why: &str) -> Result<()> {
    let why = why.to_string();
    let changed = shared
        .store
        .modify_pipeline_run(
            id,
            UNFINISHED,
            |r| {
                r.phase = Phase::Canceled;
                r.decision = Some(why);
            },
            None,
        )
        .await?;
    if changed.is_some() {
        shared.bus.cancel(id).await?;
    }
    Ok(())
}

/// Ends a pipeline run in `phase` with a decision, if it is still in one of `from`.
async fn conclude(
    shared: &Shared,
    id: &str,
    from: &[Phase],
    phase: Phase,
    decision: String,
) -> Result<()> {
    shared
        .store
        .modify_pipeline_run(
            id,
            from,
            |r| {
                r.phase = phase;
                r.decision = Some(decision);
            },
            None,
        )
        .await?;
    Ok(())
}

fn ci_event(ci: &[CiResult], dry_run: bool) -> PipelineRunEvent {
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
    PipelineRunEvent::gate(
        "ci",
        if passed { "pass" } else { "fail" },
        message,
        json!({ "checks": ci, "dryRun": dry_run }),
    )
}

/// Applies the retry policy after a failed attempt.
async fn retry_or_fail(
    shared: &Shared,
    run: &PipelineRun,
    from: &[Phase],
    message: &str,
    run_id: Option<String>,
) -> Result<()> {
    let retry = &run.spec.retry;
    let attempt = run.attempt;
    let retries_used = (attempt - 1).max(0) as u32;
    let now = now_ms();
    if retries_used < retry.limit {
        let delay = retry.delay(retries_used + 1);
        let note = format!(
            "attempt {attempt} failed: {message}; retrying in {}",
            seconds(delay)
        );
        shared
            .store
            .modify_pipeline_run(
                &run.id,
                from,
                |r| {
                    r.phase = Phase::Pending;
                    r.not_before = Some(now + delay.as_millis() as i64);
                    r.worker_pid = None;
                    if run_id.is_some() {
                        r.run_id = run_id;
                    }
                },
                Some(PipelineRunEvent::new("attempt", note)),
            )
            .await?;
    } else {
        let total = retry.limit + 1;
        let decision = format!("{message} (attempt {attempt} of {total})");
        shared
            .store
            .modify_pipeline_run(
                &run.id,
                from,
                |r| {
                    r.phase = Phase::Failed;
                    r.decision = Some(decision);
                    r.worker_pid = None;
                    if run_id.is_some() {
                        r.run_id = run_id;
                    }
                },
                None,
            )
            .await?;
    }
    Ok(())
}

pub(crate) async fn handle_job_event(shared: &Shared, event: JobEvent) -> Result<()> {
    let store = &shared.store;
    let run = store.get_pipeline_run(event.pipeline_run()).await?;
    let live = [Phase::Queued, Phase::Running];
    match event {
        JobEvent::Started {
            attempt, run_id, ..
        } if attempt == run.attempt => {
            let note = format!("attempt {attempt}: MLflow run {run_id}");
            store
                .modify_pipeline_run(
                    &run.id,
                    &live,
                    |r| {
                        r.phase = Phase::Running;
                        r.run_id = Some(run_id);
                    },
                    Some(PipelineRunEvent::new("attempt", note)),
                )
                .await?;
        }
        JobEvent::Process { attempt, pid, .. } if attempt == run.attempt => {
            store
                .modify_pipeline_run(
                    &run.id,
                    &live,
                    |r| {
                        r.phase = Phase::Running;
                        r.worker_pid = Some(i64::from(pid));
                    },
                    None,
                )
                .await?;
        }
        JobEvent::Finished {
            attempt,
            status,
            run_id,
            message,
            ci,
            ..
        } if attempt == run.attempt => {
            if !live.contains(&run.phase) {
                return Ok(());
            }
            if !ci.is_empty() {
                store
                    .add_pipeline_run_event(&run.id, &ci_event(&ci, run.spec.gates.ci.dry_run))
                    .await?;
            }
            let finish = |phase: Phase, decision: Option<String>| {
                let run_id = run_id.clone();
                move |r: &mut PipelineRun| {
                    r.phase = phase;
                    r.decision = decision;
                    r.worker_pid = None;
                    if run_id.is_some() {
                        r.run_id = run_id;
                    }
                }
            };
            match status {
                JobStatus::Succeeded if run.spec.model.is_none() => {
                    let decision = "trained; the pipeline has no model to promote".to_string();
                    store
                        .modify_pipeline_run(
                            &run.id,
                            &live,
                            finish(Phase::Succeeded, Some(decision)),
                            None,
                        )
                        .await?;
                }
                JobStatus::Succeeded => {
                    store
                        .modify_pipeline_run(&run.id, &live, finish(Phase::Evaluating, None), None)
                        .await?;
                }
                JobStatus::CiFailed => {
                    store
                        .modify_pipeline_run(
                            &run.id,
                            &live,
                            finish(Phase::GateFailed, Some(message)),
                            None,
                        )
                        .await?;
                }
                JobStatus::TimedOut | JobStatus::Unschedulable => {
                    store
                        .modify_pipeline_run(
                            &run.id,
                            &live,
                            finish(Phase::Failed, Some(message)),
                            None,
                        )
                        .await?;
                }
                JobStatus::Failed => retry_or_fail(shared, &run, &live, &message, run_id).await?,
                JobStatus::Canceled => {
                    // Either the controller canceled it (already recorded) or the worker
                    // pool is shutting down: recovery picks the run up at the next start.
                    tracing::info!(pipeline_run = run.id, message, "job stopped");
                }
            }
        }
        stale => tracing::debug!(
            ?stale,
            current_attempt = run.attempt,
            "report for an earlier attempt ignored"
        ),
    }
    Ok(())
}

/// Finds the candidate version: one the training script registered from this run, else
/// a version ctflow registers from the run's logged model.
async fn candidate_version(
    shared: &Shared,
    model: &str,
    logged_model: &str,
    run_id: &str,
    pipeline: &str,
) -> Result<Option<i64>> {
    let store = &shared.store;
    if let Some(version) = store.version_of_run(model, run_id).await? {
        return Ok(Some(version));
    }
    let Some(model_id) = store.logged_model_of_run(run_id, logged_model).await? else {
        return Ok(None);
    };
    if store.get_registered_model(model).await.is_err()
        && let Err(error) = store.create_registered_model(model, &[], None).await
    {
        // Someone else may have created it in between.
        if store.get_registered_model(model).await.is_err() {
            return Err(error.into());
        }
    }
    let created = store
        .create_model_version(NewModelVersion {
            name: model.to_string(),
            source: format!("models:/{model_id}"),
            run_id: Some(run_id.to_string()),
            model_id: Some(model_id),
            tags: Vec::new(),
            description: Some(format!("registered by ctflow pipeline {pipeline}")),
            run_link: None,
            user: shared.config.user.clone(),
        })
        .await?;
    Ok(created.version.parse().ok())
}

fn describe_failure(comparisons: &[Comparison]) -> String {
    let parts: Vec<String> = comparisons
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| {
            let value = c
                .candidate
                .map_or("missing".to_string(), |v| format!("{v}"));
            match (c.verdict, c.required) {
                (Verdict::Fail, Some(required)) => format!(
                    "{} = {value}, needs {} {required} ({})",
                    c.metric, c.operator, c.check
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

struct Champion {
    version: i64,
    run_id: String,
}

async fn current_champion(shared: &Shared, model: &str, alias: &str) -> Option<Champion> {
    let version = shared
        .store
        .get_model_version_by_alias(model, alias)
        .await
        .ok()?;
    Some(Champion {
        version: version.version.parse().ok()?,
        run_id: version.run_id,
    })
}

async fn evaluate(shared: &Shared, run: &PipelineRun) -> Result<()> {
    let store = &shared.store;
    let from = [Phase::Evaluating];
    let Some(model) = &run.spec.model else {
        let decision = "trained; the pipeline has no model to promote".to_string();
        return conclude(shared, &run.id, &from, Phase::Succeeded, decision).await;
    };
    let Some(run_id) = run.run_id.clone() else {
        let decision = "the job recorded no MLflow run".to_string();
        return conclude(shared, &run.id, &from, Phase::GateFailed, decision).await;
    };
    let Some(version) = candidate_version(
        shared,
        &model.name,
        &model.logged_model,
        &run_id,
        &run.pipeline,
    )
    .await?
    else {
        let decision = format!(
            "run {run_id} registered no version of '{}' and logged no model named '{}'",
            model.name, model.logged_model
        );
        return conclude(shared, &run.id, &from, Phase::GateFailed, decision).await;
    };
    let promotion = &run.spec.promotion;
    let champion = current_champion(shared, &model.name, &promotion.champion_alias).await;
    if champion.as_ref().is_some_and(|c| c.version == version) {
        store
            .modify_pipeline_run(
                &run.id,
                &from,
                |r| {
                    r.phase = Phase::Succeeded;
                    r.model_version = Some(version);
                    r.decision = Some(format!("version {version} is already the champion"));
                },
                None,
            )
            .await?;
        return Ok(());
    }
    let candidate_metrics = store.run_latest_metrics(&run_id).await?;
    let champion_metrics = match &champion {
        Some(c) if !c.run_id.is_empty() => Some(store.run_latest_metrics(&c.run_id).await?),
        Some(_) => Some(HashMap::new()),
        None => None,
    };
    let ct = &run.spec.gates.ct;
    let evaluation = evaluate_ct(&ct.metrics, &candidate_metrics, champion_metrics.as_ref());
    let action = action_for(evaluation.verdict, ct.on_insufficient_data, ct.dry_run);
    let verdict_text = match evaluation.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    };
    let mut message = match (evaluation.verdict, &champion) {
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
    let gate_event = PipelineRunEvent::gate(
        "ct",
        verdict_text,
        message.clone(),
        json!({
            "candidate": {"version": version, "run_id": run_id},
            "champion": champion.as_ref().map(|c| json!({"version": c.version, "run_id": c.run_id})),
            "comparisons": evaluation.comparisons,
            "onInsufficientData": ct.on_insufficient_data,
            "dryRun": ct.dry_run,
        }),
    );
    match action {
        GateAction::Stop => {
            store
                .modify_pipeline_run(
                    &run.id,
                    &from,
                    |r| {
                        r.phase = Phase::GateFailed;
                        r.model_version = Some(version);
                        r.decision = Some(format!("CT gate: {message}"));
                    },
                    Some(gate_event),
                )
                .await?;
        }
        GateAction::Pause => {
            let deadline = now_ms() + run.spec.gates.cd.timeout.0.as_millis() as i64;
            store
                .modify_pipeline_run(
                    &run.id,
                    &from,
                    wait_for_person(Phase::Paused, version, deadline),
                    Some(gate_event),
                )
                .await?;
        }
        GateAction::Proceed => {
            store.add_pipeline_run_event(&run.id, &gate_event).await?;
            after_ct(shared, run, &from, version, champion.map(|c| c.version)).await?;
        }
    }
    Ok(())
}

/// Parks a run until a person answers or the deadline passes.
fn wait_for_person(phase: Phase, version: i64, deadline: i64) -> impl FnOnce(&mut PipelineRun) {
    move |r| {
        r.phase = phase;
        r.model_version = Some(version);
        r.approval_deadline = Some(deadline);
        r.approval = None;
    }
}

fn step(
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

/// After CT passed: the candidate becomes the challenger, then the champion at once
/// (`cd.approval: auto`) or after a person approves (`manual`).
async fn after_ct(
    shared: &Shared,
    run: &PipelineRun,
    from: &[Phase],
    version: i64,
    previous: Option<i64>,
) -> Result<()> {
    let Some(model) = &run.spec.model else {
        return Ok(());
    };
    let promotion = &run.spec.promotion;
    let cd = &run.spec.gates.cd;
    let user = shared.config.user.clone();
    let challenger = step(
        run,
        &model.name,
        version,
        &promotion.challenger_alias,
        "Staging",
        &user,
    );
    if cd.approval == ApprovalMode::Manual && !cd.dry_run {
        let deadline = now_ms() + cd.timeout.0.as_millis() as i64;
        let event = PipelineRunEvent::gate(
            "cd",
            "waiting",
            format!(
                "version {version} is the challenger; waiting for approval (timeout {})",
                cd.timeout
            ),
            json!({"approval": "manual", "deadline": deadline}),
        );
        shared
            .store
            .promote_pipeline_run(
                &run.id,
                from,
                &[challenger],
                wait_for_person(Phase::WaitingApproval, version, deadline),
                Some(event),
            )
            .await?;
        return Ok(());
    }
    let champion = step(
        run,
        &model.name,
        version,
        &promotion.champion_alias,
        "Production",
        &user,
    );
    let message = if cd.approval == ApprovalMode::Manual {
        "dry run: would have waited for approval; promoted".to_string()
    } else {
        "automatic promotion".to_string()
    };
    let event = PipelineRunEvent::gate(
        "cd",
        "pass",
        message,
        json!({"approval": cd.approval, "dryRun": cd.dry_run}),
    );
    let decision = match previous {
        Some(p) => format!("version {version} is the champion (was version {p})"),
        None => format!("version {version} is the first champion"),
    };
    shared
        .store
        .promote_pipeline_run(
            &run.id,
            from,
            &[challenger, champion],
            |r| {
                r.phase = Phase::Succeeded;
                r.model_version = Some(version);
                r.decision = Some(decision);
                r.approval = None;
            },
            Some(event),
        )
        .await?;
    Ok(())
}

/// Acts on a person's answer to a waiting run, or on its approval deadline.
async fn answer(shared: &Shared, run: &PipelineRun, now: i64) -> Result<()> {
    let from = [run.phase];
    match (&run.approval, run.model_version, &run.spec.model) {
        (Some(approval), Some(version), Some(model)) if approval.approved => {
            if run.phase == Phase::Paused {
                let previous =
                    current_champion(shared, &model.name, &run.spec.promotion.champion_alias)
                        .await
                        .map(|c| c.version);
                return after_ct(shared, run, &from, version, previous).await;
            }
            let previous =
                current_champion(shared, &model.name, &run.spec.promotion.champion_alias)
                    .await
                    .map(|c| c.version);
            let champion = step(
                run,
                &model.name,
                version,
                &run.spec.promotion.champion_alias,
                "Production",
                &approval.user,
            );
            let decision = match previous {
                Some(p) => format!(
                    "approved by {}; version {version} is the champion (was version {p})",
                    approval.user
                ),
                None => format!(
                    "approved by {}; version {version} is the first champion",
                    approval.user
                ),
            };
            shared
                .store
                .promote_pipeline_run(
                    &run.id,
                    &from,
                    &[champion],
                    |r| {
                        r.phase = Phase::Succeeded;
                        r.decision = Some(decision);
                        r.approval = None;
                    },
                    None,
                )
                .await?;
        }
        (Some(approval), _, _) => {
            let verb = if approval.approved {
                "approved"
            } else {
                "rejected"
            };
            let decision = format!("{verb} by {}", approval.user);
            shared
                .store
                .modify_pipeline_run(
                    &run.id,
                    &from,
                    |r| {
                        r.phase = if verb == "approved" {
                            Phase::Failed
                        } else {
                            Phase::Rejected
                        };
                        r.decision = Some(if verb == "approved" {
                            format!("{decision}, but the run has no candidate version")
                        } else {
                            decision
                        });
                        r.approval = None;
                    },
                    None,
                )
                .await?;
        }
        (None, _, _) if run.approval_deadline.is_some_and(|d| d <= now) => {
            let decision = "no answer before the approval timeout".to_string();
            conclude(shared, &run.id, &from, Phase::Rejected, decision).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Processes whose environment names this pipeline run (the job's command and its
/// children), found through /proc.
fn processes_of(pipeline_run: &str) -> Vec<u32> {
    let needle = format!("CTFLOW_PIPELINE_RUN_ID={pipeline_run}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Resumes unfinished pipeline runs after a start: jobs queued in memory are queued
/// again; a job whose worker died has its processes stopped, its MLflow run marked
/// failed, and goes through the retry policy.
pub(crate) async fn recover(shared: &Shared) -> Result<()> {
    let store = &shared.store;
    let mut runs = store
        .list_pipeline_runs(None, &[Phase::Queued, Phase::Running], 100_000)
        .await?;
    runs.reverse();
    for run in runs {
        match run.phase {
            Phase::Queued => {
                store
                    .add_pipeline_run_event(
                        &run.id,
                        &PipelineRunEvent::new(
                            "attempt",
                            format!("attempt {} queued again after a restart", run.attempt),
                        ),
                    )
                    .await?;
                send(shared, job_of(&run)).await;
            }
            // A separate worker may still run it; if it died, the bus delivers the job
            // again and that worker fails the dead attempt's MLflow run.
            Phase::Running if !shared.config.workers_in_process => {}
            Phase::Running => {
                let orphans = processes_of(&run.id);
                for pid in &orphans {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                if !orphans.is_empty() {
                    tracing::warn!(
                        pipeline_run = run.id,
                        processes = orphans.len(),
                        "stopped the processes of a job whose worker died"
                    );
                }
                if let Some(run_id) = &run.run_id
                    && let Ok(info) = store.get_run_info(run_id).await
                    && info.status == "RUNNING"
                {
                    store
                        .update_run(
                            run_id,
                            RunUpdate {
                                status: Some("FAILED".into()),
                                end_time: Some(now_ms()),
                                run_name: None,
                            },
                        )
                        .await?;
                }
                let message = format!(
                    "the worker stopped during attempt {} (ctflow restarted)",
                    run.attempt
                );
                retry_or_fail(shared, &run, &[Phase::Running], &message, None).await?;
            }
            _ => {}
        }
    }
    Ok(())
}
