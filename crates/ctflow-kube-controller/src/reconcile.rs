//! The Kubernetes side of the controller: a kube-runtime `Controller` over
//! `TrainingPipeline`s that keeps each object's pipeline in the CT engine's store (with a
//! finalizer, so a deleted object cancels its runs and leaves no pipeline behind), and
//! reports the pipeline's state back: the status subresource by server-side apply, and
//! Kubernetes Events for triggers, gate decisions, run endings and promotions.
//!
//! Deciding is `plan`'s; this module reads the inputs and carries the actions out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use ctflow_bus::Bus;
use ctflow_core::error::ErrorCode;
use ctflow_core::pipeline_run::{Phase, UNFINISHED_PHASES};
use ctflow_store::Store;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{Event as Finalizing, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::plan::{self, Action, HistoryEntry, Note, Observed, Refresh, RunView};
use ctflow_kube::crd::{
    SOURCE_PREFIX, TrainingPipeline, TrainingPipelineStatus, store_name, store_source,
};

/// Added to every object the controller stores, removed once its cleanup is done.
pub const FINALIZER: &str = "ctflow.dev/pipeline";
/// The one field manager of the status this controller applies.
pub const FIELD_MANAGER: &str = "ctflow-controller";
/// The first retry after an error; doubled per consecutive failure up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How many of a pipeline's newest runs are looked at for new history.
const RECENT_RUNS: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Store(#[from] ctflow_store::Error),
    #[error(transparent)]
    Bus(#[from] ctflow_bus::Error),
    #[error("the object has no namespace")]
    NoNamespace,
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short, low-cardinality name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Store(_) => "store",
            Error::Bus(_) => "bus",
            Error::NoNamespace => "no_namespace",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    pub refresh: Refresh,
    /// The folder relative paths of a spec resolve against inside the controller's
    /// and workers' containers.
    pub base_dir: String,
    /// Who publishes the Events (`reportingController` / `reportingInstance`).
    pub reporter: String,
    pub instance: String,
}

/// What one reconcile needs; shared by all of them.
pub struct Context {
    client: Client,
    store: Store,
    bus: Arc<dyn Bus>,
    settings: Settings,
    history: Mutex<HistoryCursor>,
    failures: Mutex<HashMap<ObjectRef<TrainingPipeline>, u32>>,
}

/// How much of each pipeline run's history has become Events. A pipeline seen for the
/// first time since this process started is primed with what exists, so a restart does
/// not repeat old Events.
#[derive(Default)]
struct HistoryCursor {
    primed: HashSet<String>,
    /// pipeline run -> (entries published, the run's last update seen)
    runs: HashMap<String, (usize, i64)>,
}

impl Context {
    pub fn new(client: Client, store: Store, bus: Arc<dyn Bus>, settings: Settings) -> Context {
        Context {
            client,
            store,
            bus,
            settings,
            history: Mutex::new(HistoryCursor::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn api(&self) -> Api<TrainingPipeline> {
        match &self.settings.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(context: Arc<Context>, shutdown: CancellationToken) {
    if let Err(error) = remove_orphans(&context).await {
        tracing::warn!(%error, "cannot check for pipelines whose TrainingPipeline is gone");
    }
    // The Jobs the Kubernetes executor creates are owned by their TrainingPipeline: a
    // Job that starts or ends refreshes its owner's status at once.
    let jobs: Api<Job> = match &context.settings.namespace {
        Some(namespace) => Api::namespaced(context.client.clone(), namespace),
        None => Api::all(context.client.clone()),
    };
    Controller::new(context.api(), watcher::Config::default())
        .owns(
            jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=ctflow"),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            match outcome {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
}

/// One reconcile of one object (the finalizer wrapper, then apply or cleanup).
pub async fn reconcile(object: Arc<TrainingPipeline>, context: Arc<Context>) -> Result<Requeue> {
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<TrainingPipeline> = Api::namespaced(context.client.clone(), &namespace);
    let key = ObjectRef::from_obj(&*object);
    let outcome = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Finalizing::Apply(object) => apply(&object, &context).await,
            Finalizing::Cleanup(object) => cleanup(&object, &context).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if outcome.is_ok() {
        lock(&context.failures).remove(&key);
    }
    outcome
}

fn error_policy(object: Arc<TrainingPipeline>, error: &Error, context: Arc<Context>) -> Requeue {
    let mut failures = lock(&context.failures);
    let count = failures.entry(ObjectRef::from_obj(&*object)).or_insert(0);
    *count = count.saturating_add(1);
    let delay = backoff(*count);
    tracing::warn!(
        object = object.name_any(),
        namespace = object.namespace().unwrap_or_default(),
        kind = error.kind(),
        %error,
        retry_in_s = delay.as_secs_f64(),
        "cannot reconcile a TrainingPipeline"
    );
    Requeue::requeue(delay)
}

/// The wait before the `failures`-th retry: 1 s, 2 s, 4 s, ... up to five minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

async fn apply(object: &TrainingPipeline, context: &Context) -> Result<Requeue> {
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let name = store_name(&namespace, &object.name_any());
    let observed = observe(object, &name, context).await?;
    let plan = plan::plan(object, &observed, Utc::now(), context.settings.refresh);
    let source = store_source(&namespace, &object.name_any());
    for action in plan.actions {
        match action {
            Action::Store(document) => {
                context
                    .store
                    .put_pipeline(&document, &source, &context.settings.base_dir)
                    .await?;
                context.bus.wake_controller();
            }
            Action::Publish(note) => publish(context, object, note).await,
            Action::ApplyStatus(status) => {
                // NB: the Events are out; a failed status write must not repeat them.
                commit_history(context, &observed.new_history);
                apply_status(context, object, &status).await?
            }
        }
    }
    commit_history(context, &observed.new_history);
    Ok(Requeue::requeue(plan.requeue_after))
}

async fn cleanup(object: &TrainingPipeline, context: &Context) -> Result<Requeue> {
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let name = store_name(&namespace, &object.name_any());
    let stored_source = stored(context, &name).await?.map(|(_, source)| source);
    let unfinished: Vec<String> = context
        .store
        .list_pipeline_runs(Some(&name), UNFINISHED_PHASES, 10_000)
        .await?
        .into_iter()
        .map(|run| run.id)
        .collect();
    let cleanup = plan::plan_cleanup(object, stored_source.as_deref(), &unfinished);
    remove_pipeline(context, &cleanup.cancel, cleanup.delete_pipeline.as_deref()).await?;
    publish(context, object, cleanup.note).await;
    Ok(Requeue::await_change())
}

async fn remove_pipeline(
    context: &Context,
    cancel: &[String],
    pipeline: Option<&str>,
) -> Result<()> {
    // NB: the pipeline goes first, so no new trigger is recorded for it meanwhile.
    if let Some(pipeline) = pipeline {
        match context.store.delete_pipeline(pipeline).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    for id in cancel {
        let changed = context
            .store
            .modify_pipeline_run(
                id,
                UNFINISHED_PHASES,
                |run| {
                    run.phase = Phase::Canceled;
                    run.decision = Some("its TrainingPipeline was deleted".into());
                },
                None,
            )
            .await?;
        if changed.is_some() {
            context.bus.cancel(id).await?;
        }
    }
    context.bus.wake_controller();
    Ok(())
}

/// Pipelines stored for objects that no longer exist (deleted while no controller ran,
/// or their finalizer removed by hand) are cleaned up when this controller starts.
async fn remove_orphans(context: &Context) -> Result<()> {
    for record in context.store.list_pipelines().await? {
        let Some((namespace, name)) = record
            .source
            .strip_prefix(SOURCE_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        if context
            .settings
            .namespace
            .as_deref()
            .is_some_and(|watched| watched != namespace)
        {
            continue;
        }
        let api: Api<TrainingPipeline> = Api::namespaced(context.client.clone(), namespace);
        if api.get_opt(name).await?.is_some() {
            continue;
        }
        let unfinished: Vec<String> = context
            .store
            .list_pipeline_runs(Some(&record.name), UNFINISHED_PHASES, 10_000)
            .await?
            .into_iter()
            .map(|run| run.id)
            .collect();
        tracing::info!(
            pipeline = record.name,
            namespace,
            object = name,
            "its TrainingPipeline is gone; removing the pipeline"
        );
        remove_pipeline(context, &unfinished, Some(&record.name)).await?;
    }
    Ok(())
}

async fn stored(
    context: &Context,
    name: &str,
) -> Result<Option<(ctflow_core::pipeline::PipelineDocument, String)>> {
    match context.store.get_pipeline(name).await {
        Ok(record) => Ok(Some((record.document, record.source))),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn is_not_found(error: &ctflow_store::Error) -> bool {
    matches!(error, ctflow_store::Error::Mlflow(e) if e.code == ErrorCode::ResourceDoesNotExist)
}

async fn observe(object: &TrainingPipeline, name: &str, context: &Context) -> Result<Observed> {
    let stored = stored(context, name).await?;
    let runs = context
        .store
        .list_pipeline_runs(Some(name), &[], RECENT_RUNS)
        .await?;
    let champion = match &object.spec.pipeline.model {
        Some(model) => {
            let alias = &object.spec.pipeline.promotion.champion_alias;
            match context
                .store
                .get_model_version_by_alias(&model.name, alias)
                .await
            {
                Ok(version) => version.version.parse().ok(),
                // No such model or alias yet.
                Err(ctflow_store::Error::Mlflow(_)) => None,
                Err(error) => return Err(error.into()),
            }
        }
        None => None,
    };
    let latest_run = runs.first().map(|run| RunView {
        id: run.id.clone(),
        phase: run.phase,
        trigger: run.trigger.kind.clone(),
        created_ms: run.creation_time,
        mlflow_run_id: run.run_id.clone(),
    });
    let new_history = new_history(context, name, &runs).await?;
    Ok(Observed {
        stored,
        latest_run,
        champion,
        new_history,
    })
}

/// History entries of the pipeline's recent runs that have not become Events yet.
async fn new_history(
    context: &Context,
    pipeline: &str,
    runs: &[ctflow_store::PipelineRun],
) -> Result<Vec<HistoryEntry>> {
    let primed = lock(&context.history).primed.contains(pipeline);
    let mut entries = Vec::new();
    // Oldest first, so Events come in the order things happened.
    for run in runs.iter().rev() {
        let seen = lock(&context.history).runs.get(&run.id).copied();
        if seen.is_some_and(|(_, updated)| updated == run.last_updated_time) {
            continue;
        }
        let history = context.store.pipeline_run_events(&run.id).await?;
        let from = match seen {
            Some((count, _)) => count,
            None if primed => 0,
            None => history.len(),
        };
        for (index, event) in history.iter().enumerate().skip(from) {
            entries.push(HistoryEntry {
                pipeline_run: run.id.clone(),
                index,
                kind: event.kind.clone(),
                gate: event.gate.clone(),
                result: event.result.clone(),
                message: event.message.clone(),
            });
        }
        let mut cursor = lock(&context.history);
        let entry = cursor.runs.entry(run.id.clone()).or_insert((from, 0));
        entry.1 = run.last_updated_time;
    }
    lock(&context.history).primed.insert(pipeline.to_string());
    Ok(entries)
}

fn commit_history(context: &Context, published: &[HistoryEntry]) {
    let mut cursor = lock(&context.history);
    for entry in published {
        let seen = cursor
            .runs
            .entry(entry.pipeline_run.clone())
            .or_insert((0, 0));
        seen.0 = seen.0.max(entry.index + 1);
    }
}

async fn apply_status(
    context: &Context,
    object: &TrainingPipeline,
    status: &TrainingPipelineStatus,
) -> Result<()> {
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<TrainingPipeline> = Api::namespaced(context.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": TrainingPipeline::api_version(&()),
        "kind": TrainingPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Events are best effort, as in Kubernetes itself: a failure is logged, not retried.
///
/// NB: not kube's `Recorder`, which folds every Event with the same reason on an object
/// into a series of the first one (keeping its note) for six minutes; each of ours is a
/// distinct occurrence (a pipeline run's trigger, a gate's decision), so each is its own.
async fn publish(context: &Context, object: &TrainingPipeline, note: Note) {
    let namespace = object.namespace().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = KubeEvent {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", object.name_any(), now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(note.reason.clone()),
        note: Some(truncate(&note.message, 1000)),
        action: Some("Reconcile".into()),
        regarding: Some(object.object_ref(&())),
        reporting_controller: Some(context.settings.reporter.clone()),
        reporting_instance: Some(context.settings.instance.clone()),
        ..KubeEvent::default()
    };
    let events: Api<KubeEvent> = Api::namespaced(context.client.clone(), &namespace);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, reason = note.reason, "cannot publish a Kubernetes Event");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
