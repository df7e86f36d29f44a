//! The reconcile loop: the executor of the pipeline-run state machine.
//!
//! What happens to a run is decided in `ctflow_core::engine` (pure functions of the run as
//! stored, a job report, the gate's numbers, a person's answer and the clock). This module
//! reads what those decisions need, applies the steps they return and keeps the loop
//! going: every move is a compare-and-set on the run's phase, so a step decided from a
//! view that went stale (a late report, a duplicate, an attempt that was replaced)
//! changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctflow_bus::{Job, JobEvent};
use ctflow_core::engine::{self, Champion, Effect, Evaluation, GateInputs, Step};
use ctflow_core::gates::SameData;
use ctflow_core::monitoring::{LiveMetric, Outcome};
use ctflow_core::now_ms;
use ctflow_core::pipeline::evaluation_tags;
use ctflow_core::pipeline_run::{Phase, UNFINISHED_PHASES};
use ctflow_core::shadow::{LiveComparison, compare_live, live_metrics_needed};
use ctflow_metrics::{ControllerErrorLabels, ControllerStepLabels};
use ctflow_store::{NewModelVersion, PipelineRun, RunUpdate};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, Shared};

/// How often the loop looks even when nothing woke it (retry backoffs, approval timeouts).
const TICK: Duration = Duration::from_millis(500);

/// The job of a run's current attempt, with its training data snapshot inside when that
/// fits in a bus message (else the worker reads it from the server by its id).
async fn job_of(shared: &Shared, run: &PipelineRun) -> Result<Job> {
    let snapshot = match &run.snapshot_id {
        Some(id) => Some(shared.store.get_data_snapshot(id).await?),
        None => None,
    };
    let snapshot = snapshot.filter(|snapshot| {
        serde_json::to_vec(snapshot)
            .is_ok_and(|json| json.len() <= ctflow_bus::INLINE_SNAPSHOT_BYTES)
    });
    Ok(Job::for_run(run, snapshot))
}

/// Takes and records a pending run's training data snapshot, or fails the run with the
/// reason when there is nothing (readable) to train on.
async fn take_snapshot(shared: &Shared, id: &str) -> Result<()> {
    let run = shared.store.get_pipeline_run(id).await?;
    let Some(data) = run.spec.data.clone() else {
        return Ok(());
    };
    let reason = match &run.snapshot_id {
        None => {
            let base_dir = std::path::Path::new(&run.base_dir);
            let taken =
                ctflow_data::take(&run.pipeline, base_dir, &data, &shared.digests, now_ms()).await;
            match taken {
                Ok(snapshot) => {
                    tracing::info!(
                        pipeline_run = id,
                        snapshot = snapshot.id,
                        files = snapshot.files.len(),
                        rows = snapshot.rows,
                        "training data snapshot recorded"
                    );
                    shared.store.record_data_snapshot(id, &snapshot).await?;
                    return Ok(());
                }
                Err(error) => error.to_string(),
            }
        }
        // A run that starts with a snapshot (a rerun) trains on it only if every file is
        // still what was recorded.
        Some(snapshot_id) if run.attempt == 0 => {
            let snapshot = shared.store.get_data_snapshot(snapshot_id).await?;
            match ctflow_data::verify(&snapshot, shared.digests.stores()).await {
                Ok(()) => return Ok(()),
                Err(error) => error.to_string(),
            }
        }
        Some(_) => return Ok(()),
    };
    tracing::warn!(
        reason,
        pipeline_run = id,
        "the training data cannot be recorded or no longer matches its snapshot"
    );
    Box::pin(apply(
        shared,
        Step::Move(engine::no_snapshot(&run, &reason)),
    ))
    .await
}

fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Store(e) if e.is_unavailable() || e.is_out_of_space() => "store_unavailable",
        Error::Store(_) => "store",
        Error::Bus(_) => "bus",
        Error::PipelineFile { .. } => "pipeline_file",
    }
}

fn count_error(shared: &Shared, error: &Error) {
    shared
        .metrics
        .controller_errors
        .get_or_create(&ControllerErrorLabels {
            kind: error_kind(error).to_string(),
        })
        .inc();
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    loop {
        shared.metrics.controller_passes.inc();
        if let Err(error) = reconcile_once(&shared).await {
            count_error(&shared, &error);
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
                count_error(&shared, &error);
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
        .list_pipeline_runs(None, UNFINISHED_PHASES, 100_000)
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
    for runs in by_pipeline.values() {
        apply_all(shared, engine::admit_pending(runs, now)).await?;
        for run in runs {
            match run.phase {
                Phase::Evaluating => {
                    if let Err(error) = evaluate(shared, run).await {
                        count_error(shared, &error);
                        tracing::warn!(%error, pipeline_run = run.id, "evaluation failed; will retry");
                    }
                }
                Phase::WaitingApproval | Phase::Paused => answer(shared, run, now).await?,
                Phase::Shadowing => {
                    if let Err(error) = shadow(shared, run, now).await {
                        count_error(shared, &error);
                        tracing::warn!(%error, pipeline_run = run.id, "cannot judge the shadow yet; will retry");
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

async fn apply_all(shared: &Shared, steps: Vec<Step>) -> Result<()> {
    for step in steps {
        apply(shared, step).await?;
    }
    Ok(())
}

/// Applies one decided step.
async fn apply(shared: &Shared, step: Step) -> Result<()> {
    let started = Instant::now();
    let store = &shared.store;
    let (label, phase) = match &step {
        Step::Move(m) if m.promotions.is_empty() => ("move", m.to.as_str()),
        Step::Move(m) => ("promote", m.to.as_str()),
        Step::Record { .. } => ("record", ""),
        Step::Requeue { .. } => ("requeue", ""),
        Step::FailMlflowRun { .. } => ("fail_mlflow_run", ""),
        Step::TakeSnapshot { .. } => ("take_snapshot", ""),
    };
    match step {
        Step::Move(m) => {
            let moved = if m.promotions.is_empty() {
                store
                    .modify_pipeline_run(&m.run, &m.from, |r| m.apply(r), m.event.clone())
                    .await?
            } else {
                store
                    .promote_pipeline_run(
                        &m.run,
                        &m.from,
                        &m.promotions,
                        |r| m.apply(r),
                        m.event.clone(),
                    )
                    .await?
            };
            match (moved, m.then) {
                // NB: the run is recorded as Queued before the job exists anywhere else;
                // if the process dies in between, recovery queues it again.
                (Some(run), Some(Effect::QueueJob)) => {
                    send(shared, job_of(shared, &run).await?).await
                }
                (Some(run), Some(Effect::StopJob)) => shared.bus.cancel(&run.id).await?,
                (Some(_), None) => {}
                (None, _) => tracing::debug!(
                    pipeline_run = m.run,
                    to = %m.to,
                    "the run had moved on; step not taken"
                ),
            }
        }
        Step::Record { run, event } => store.add_pipeline_run_event(&run, &event).await?,
        Step::Requeue { run } => {
            let run = store.get_pipeline_run(&run).await?;
            send(shared, job_of(shared, &run).await?).await;
        }
        Step::TakeSnapshot { run } => take_snapshot(shared, &run).await?,
        Step::FailMlflowRun { run_id } => {
            if let Ok(info) = store.get_run_info(&run_id).await
                && info.status == "RUNNING"
            {
                store
                    .update_run(
                        &run_id,
                        RunUpdate {
                            status: Some("FAILED".into()),
                            end_time: Some(now_ms()),
                            run_name: None,
                        },
                    )
                    .await?;
            }
        }
    }
    shared
        .metrics
        .controller_steps
        .get_or_create(&ControllerStepLabels {
            step: label.to_string(),
            phase: phase.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
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

pub(crate) async fn handle_job_event(shared: &Shared, event: JobEvent) -> Result<()> {
    let run = shared.store.get_pipeline_run(event.pipeline_run()).await?;
    let steps = engine::on_report(&run, &event, now_ms());
    if steps.is_empty() {
        tracing::debug!(
            ?event,
            phase = %run.phase,
            current_attempt = run.attempt,
            "job report changes nothing"
        );
    }
    apply_all(shared, steps).await
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

/// The version the model's champion alias points at, and the run that trained it.
async fn champion_of(shared: &Shared, model: &str, alias: &str) -> Option<(i64, String)> {
    let version = shared
        .store
        .get_model_version_by_alias(model, alias)
        .await
        .ok()?;
    Some((version.version.parse().ok()?, version.run_id))
}

/// The model's champion now, with its run's latest metrics.
async fn current_champion(shared: &Shared, model: &str, alias: &str) -> Result<Option<Champion>> {
    let Some((version, run_id)) = champion_of(shared, model, alias).await else {
        return Ok(None);
    };
    let metrics = if run_id.is_empty() {
        HashMap::new()
    } else {
        shared.store.run_latest_metrics(&run_id).await?
    };
    Ok(Some(Champion {
        version,
        run_id,
        metrics,
    }))
}

/// What the gate's evaluation step measured for this candidate and the champion, read
/// from the tags the worker set on the training run; `None` when the gate has no
/// evaluation step.
async fn same_data(
    shared: &Shared,
    run: &PipelineRun,
    run_id: &str,
    champion: Option<&Champion>,
) -> Result<Option<SameData>> {
    if run.spec.gates.ct.evaluation.is_none() {
        return Ok(None);
    }
    let training = shared.store.get_run(run_id).await?;
    let tag = |key: &str| training.tag(key).map(str::to_string);
    let snapshot = tag(evaluation_tags::SNAPSHOT).unwrap_or_default();
    let Some(candidate_run) = tag(evaluation_tags::CANDIDATE_RUN) else {
        return Ok(Some(SameData {
            snapshot,
            candidate: HashMap::new(),
            champion: None,
            champion_note: Some("the evaluation step did not run for this candidate".into()),
        }));
    };
    let candidate = shared.store.run_latest_metrics(&candidate_run).await?;
    let scored = tag(evaluation_tags::CHAMPION_VERSION).and_then(|v| v.parse::<i64>().ok());
    let (champion_metrics, champion_note) = match (
        champion,
        scored,
        tag(evaluation_tags::CHAMPION_RUN),
    ) {
        (Some(now), Some(version), Some(champion_run)) if now.version == version => (
            Some(shared.store.run_latest_metrics(&champion_run).await?),
            None,
        ),
        (Some(now), Some(version), _) => (
            None,
            Some(format!(
                "champion version {} was not scored on the evaluation data (version {version} was)",
                now.version
            )),
        ),
        (Some(now), None, _) => (
            None,
            Some(format!(
                "champion version {} became champion after the candidate was evaluated",
                now.version
            )),
        ),
        (None, _, _) => (None, None),
    };
    Ok(Some(SameData {
        snapshot,
        candidate,
        champion: champion_metrics,
        champion_note,
    }))
}

async fn evaluate(shared: &Shared, run: &PipelineRun) -> Result<()> {
    let (model, logged_model, run_id) = match engine::begin_evaluation(run) {
        Evaluation::Decided(m) => return apply(shared, Step::Move(*m)).await,
        Evaluation::FindCandidate {
            model,
            logged_model,
            run_id,
        } => (model, logged_model, run_id),
    };
    let Some(version) =
        candidate_version(shared, &model, &logged_model, &run_id, &run.pipeline).await?
    else {
        return apply(shared, Step::Move(engine::no_candidate(run, &run_id))).await;
    };
    let champion = current_champion(shared, &model, &run.spec.promotion.champion_alias).await?;
    let same_data = same_data(shared, run, &run_id, champion.as_ref()).await?;
    let inputs = GateInputs {
        version,
        metrics: shared.store.run_latest_metrics(&run_id).await?,
        run_id,
        champion,
        same_data,
    };
    let steps = engine::judge(run, &inputs, &shared.config.user, now_ms());
    apply_all(shared, steps).await
}

/// Acts on a person's answer to a waiting run, or on its approval deadline.
async fn answer(shared: &Shared, run: &PipelineRun, now: i64) -> Result<()> {
    let champion = match engine::answer_needs_champion(run) {
        Some((model, alias)) => champion_of(shared, model, alias).await.map(|(v, _)| v),
        None => None,
    };
    match engine::answer(run, champion, &shared.config.user, now) {
        Some(m) => apply(shared, Step::Move(m)).await,
        None => Ok(()),
    }
}

/// Judges a shadowing run on the numbers the serving replicas recorded on it.
async fn shadow(shared: &Shared, run: &PipelineRun, now: i64) -> Result<()> {
    let champion = match &run.spec.model {
        Some(model) => champion_of(shared, &model.name, &run.spec.promotion.champion_alias)
            .await
            .map(|(v, _)| v),
        None => None,
    };
    let live = live_comparisons(shared, run, now).await?;
    let steps = engine::shadow(run, champion, &live, &shared.config.user, now);
    apply_all(shared, steps).await
}

/// The shadow gate's live metrics: both models scored on the mirrored rows that have a
/// label (sent since the shadow began). Read only once they can decide something: the
/// rows and labels are the largest reads of a pass.
async fn live_comparisons(
    shared: &Shared,
    run: &PipelineRun,
    now: i64,
) -> Result<Vec<LiveComparison>> {
    let (Some(gate), Some(model), Some(progress)) =
        (&run.spec.gates.cd.shadow, &run.spec.model, &run.shadow)
    else {
        return Ok(Vec::new());
    };
    if !live_metrics_needed(gate, progress, now) {
        return Ok(Vec::new());
    }
    let predictions = shared.store.shadow_predictions(&run.id).await?;
    let since = progress.started;
    let mut labels = HashMap::new();
    let mut after = 0;
    loop {
        let page = shared
            .store
            .list_feedback(&model.name, since, after, 10_000)
            .await?;
        let Some(last) = page.last().map(|l| l.seq) else {
            break;
        };
        for label in page {
            labels.insert(
                (label.request_id, label.row),
                Outcome::from_json(&label.label),
            );
        }
        after = last;
    }
    Ok(gate
        .metrics
        .iter()
        .filter_map(|m| LiveMetric::parse(&m.metric).ok())
        .map(|metric| compare_live(metric, &predictions, &labels))
        .collect())
}

/// Resumes unfinished pipeline runs after a start. The processes of a job whose
/// in-process worker died are the worker pool's to stop (`ctflow_worker::reap_orphans`).
pub(crate) async fn recover(shared: &Shared) -> Result<()> {
    let mut runs = shared
        .store
        .list_pipeline_runs(None, &[Phase::Queued, Phase::Running], 100_000)
        .await?;
    runs.reverse();
    let now = now_ms();
    for run in runs {
        let steps = engine::recover(&run, shared.config.workers_in_process, now);
        apply_all(shared, steps).await?;
    }
    Ok(())
}
