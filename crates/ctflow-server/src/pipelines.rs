//! ctflow's own API for the CT engine, under `/api/ctflow/v1/`: pipelines, triggers
//! (manual, CI webhooks, drift events), pipeline runs with their history, approvals and
//! rollback. Triggers and answers are recorded here and the controller is woken to act.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use ctflow_core::engine::ClaimRefused;
use ctflow_core::inference::valid_request_id;
use ctflow_core::monitoring::PerformanceEvent;
use ctflow_core::pipeline::{PipelineDocument, Trigger, next_scheduled_run};
use ctflow_core::pipeline_run::Phase;
use ctflow_core::shadow::{ShadowPrediction, ShadowTally};
use ctflow_core::trigger::{DriftEvent, TriggerEvent, verify_signature, webhook_parameters};
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_store::{Approval, PipelineRunEvent, Recorded};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::JsonResult;
use crate::auth::Visibility;
use crate::error::{ApiResult, found};
use crate::params::Params;
use crate::registry::Actor;

const DEFAULT_RUNS: i64 = 50;
const MAX_RUNS: i64 = 1000;

fn invalid(message: impl Into<String>) -> MlflowError {
    MlflowError::invalid(message)
}

fn wake(state: &AppState) {
    if let Some(bus) = &state.bus {
        bus.wake_controller();
    }
}

/// `GET /api/ctflow/v1/events`: what the data watcher sees, as server-sent events
/// (`event: data_arrived` or `drift_detected`, the JSON in `data`). Only a server with the
/// CT engine (`ctflow up`) has them.
pub async fn events(
    State(state): State<AppState>,
    visibility: Option<Extension<Visibility>>,
) -> ApiResult<axum::response::Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let visibility = Visibility::of_request(&state, visibility)?;
    let Some(bus) = &state.bus else {
        return Err(MlflowError::new(
            ErrorCode::NotImplemented,
            "this server runs without the CT engine; start it with `ctflow up` for events",
        )
        .into());
    };
    let store = state.store.clone();
    let stream = bus
        .subscribe()
        .filter_map(move |event| {
            let (store, visibility) = (store.clone(), visibility.clone());
            async move {
                let pipeline = match &event {
                    ctflow_bus::WatchEvent::DataArrived { pipeline, .. } => pipeline,
                    ctflow_bus::WatchEvent::DriftDetected { event, .. } => &event.pipeline,
                };
                // NB: the pipeline is read at each event: its model may have changed.
                let model = match store.get_pipeline(pipeline).await {
                    Ok(record) => record.document.spec.model.map(|m| m.name),
                    Err(_) => None,
                };
                visibility.pipeline(model.as_deref()).then_some(event)
            }
        })
        .map(|event| {
            let name = match &event {
                ctflow_bus::WatchEvent::DataArrived { .. } => "data_arrived",
                ctflow_bus::WatchEvent::DriftDetected { .. } => "drift_detected",
            };
            Event::default().event(name).json_data(&event)
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /api/ctflow/v1/pipelines`: each with `next_run_time` when a schedule will fire.
pub async fn list(
    State(state): State<AppState>,
    visibility: Option<Extension<Visibility>>,
) -> JsonResult {
    let visibility = Visibility::of_request(&state, visibility)?;
    let now = ctflow_core::now_ms();
    let pipelines: Vec<Value> = state
        .store
        .list_pipelines()
        .await?
        .into_iter()
        .filter(|p| visibility.pipeline(model_of(p)))
        .map(|p| {
            let next = next_scheduled_run(&p.document.spec, now);
            let mut value = json!(p);
            if let (Value::Object(map), Some(next)) = (&mut value, next) {
                map.insert("next_run_time".into(), json!(next));
            }
            value
        })
        .collect();
    let controller_running = controller_running(&state).await?;
    Ok(
        Json(json!({ "pipelines": pipelines, "controller_running": controller_running }))
            .into_response(),
    )
}

/// Whether any CT engine (`ctflow up`, `ctflow controller`, the Kubernetes controller)
/// reports itself running against this store: a bare `ctflow server` has none, and its
/// triggered runs wait until one starts.
async fn controller_running(state: &AppState) -> ApiResult<bool> {
    Ok(!state
        .store
        .present(ctflow_store::CONTROLLER_ROLE)
        .await?
        .is_empty())
}

/// `GET /api/ctflow/v1/pipelines/{name}`: the pipeline and its latest runs.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> JsonResult {
    let pipeline = state.store.get_pipeline(&name).await?;
    let runs = state.store.list_pipeline_runs(Some(&name), &[], 10).await?;
    let controller_running = controller_running(&state).await?;
    Ok(Json(json!({
        "pipeline": pipeline,
        "pipeline_runs": runs,
        "controller_running": controller_running,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct PutQuery {
    /// The folder relative paths of the spec resolve against; default: the server's
    /// working directory.
    base_dir: Option<String>,
}

/// `PUT /api/ctflow/v1/pipelines/{name}`: creates or replaces a pipeline from its JSON
/// document.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PutQuery>,
    body: Bytes,
) -> JsonResult {
    let tree: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("Invalid pipeline document: {e}")))?;
    let document = PipelineDocument::typed(tree)
        .map_err(|e| invalid(format!("Invalid pipeline document: {e}")))?;
    if document.metadata.name != name {
        return Err(invalid(format!(
            "The document's metadata.name '{}' does not match the pipeline '{name}' in the path.",
            document.metadata.name
        ))
        .into());
    }
    let base_dir = match query.base_dir {
        Some(dir) if std::path::Path::new(&dir).is_absolute() => dir,
        Some(dir) => {
            return Err(invalid(format!("base_dir '{dir}' must be an absolute path")).into());
        }
        None => std::env::current_dir()
            .map(|d| d.display().to_string())
            .map_err(|e| MlflowError::new(ErrorCode::InternalError, e.to_string()))?,
    };
    let record = state
        .store
        .put_pipeline(&document, "api", &base_dir)
        .await?;
    wake(&state);
    Ok(Json(json!({ "pipeline": record })).into_response())
}

/// `DELETE /api/ctflow/v1/pipelines/{name}`: its runs stay as history.
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> JsonResult {
    state.store.delete_pipeline(&name).await?;
    Ok(Json(json!({})).into_response())
}

fn recorded(state: &AppState, outcome: Recorded) -> JsonResult {
    Ok(Json(recorded_body(state, outcome)).into_response())
}

fn recorded_body(state: &AppState, outcome: Recorded) -> Value {
    match outcome {
        Recorded::Created(run) => {
            wake(state);
            json!({ "pipeline_run": run, "duplicate": false })
        }
        Recorded::Duplicate(id) => json!({ "pipeline_run": { "id": id }, "duplicate": true }),
    }
}

fn string_map(p: &Params, name: &str) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match p.0.get(name) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    other => {
                        return Err(invalid(format!(
                            "Parameter '{k}' must be a string, number or boolean, got {other}"
                        ))
                        .into());
                    }
                };
                out.insert(k.clone(), text);
            }
        }
        Some(other) => {
            return Err(invalid(format!("'{name}' must be an object, got {other}")).into());
        }
    }
    Ok(out)
}

/// `POST /api/ctflow/v1/pipelines/{name}/trigger`: a manual trigger. `key` makes a
/// retried request idempotent; without it every call starts a run.
pub async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    actor: Actor,
    p: Params,
) -> JsonResult {
    let key = match p.str("key")? {
        Some(key) if !key.trim().is_empty() => key,
        _ => uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut event = TriggerEvent::new(&name, "manual", format!("manual:{key}"));
    event.parameters = string_map(&p, "parameters")?;
    event.user = Some(actor.0);
    let outcome = state.store.record_trigger(&event).await?;
    let mut body = recorded_body(&state, outcome);
    // The caller learns at once when nothing will pick the run up.
    body["controller_running"] = json!(controller_running(&state).await?);
    Ok(Json(body).into_response())
}

/// `POST /api/ctflow/v1/pipelines/{name}/webhook`: what a CI system sends after tests
/// pass, signed `X-Hub-Signature-256: sha256=<hmac>` (or `X-Ctflow-Signature-256`) with
/// the secret in the environment variable the pipeline's webhook trigger names.
pub async fn webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> JsonResult {
    let denied = || {
        MlflowError::new(
            ErrorCode::PermissionDenied,
            "The webhook signature does not match.",
        )
    };
    let signature = headers
        .get("x-ctflow-signature-256")
        .or_else(|| headers.get("x-hub-signature-256"))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            MlflowError::new(
                ErrorCode::Unauthenticated,
                "A webhook needs an X-Hub-Signature-256 (or X-Ctflow-Signature-256) header.",
            )
        })?
        .to_string();
    let pipeline = state.store.get_pipeline(&name).await?;
    let mut matched = None;
    let mut configured = false;
    for trigger in &pipeline.document.spec.triggers {
        let Trigger::Webhook(hook) = trigger else {
            continue;
        };
        configured = true;
        let Ok(secret) = std::env::var(&hook.secret_env) else {
            tracing::warn!(
                pipeline = name,
                variable = hook.secret_env,
                "the webhook secret variable is not set on the server"
            );
            continue;
        };
        if !secret.is_empty() && verify_signature(secret.as_bytes(), &body, &signature) {
            matched = Some(hook.clone());
            break;
        }
    }
    if !configured {
        return Err(invalid(format!("Pipeline '{name}' has no webhook trigger.")).into());
    }
    let hook = matched.ok_or_else(denied)?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("The webhook payload is not JSON: {e}")))?;
    let parameters = webhook_parameters(&payload, &hook.params).map_err(invalid)?;
    let tags = webhook_parameters(&payload, &hook.tags).map_err(invalid)?;
    let delivery = headers
        .get("x-ctflow-delivery")
        .or_else(|| headers.get("x-github-delivery"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| signature.trim_start_matches("sha256=").to_string());
    let mut event = TriggerEvent::new(&name, "webhook", format!("webhook:{delivery}"));
    event.parameters = parameters.clone();
    event.tags = tags
        .into_iter()
        .map(|(k, v)| (format!("webhook.{k}"), v))
        .collect();
    event.detail = json!({ "delivery": delivery, "parameters": parameters });
    let outcome = state.store.record_trigger(&event).await?;
    recorded(&state, outcome)
}

/// `POST /api/ctflow/v1/pipelines/{name}/drift-events`: a drift test crossed its
/// threshold (sent by the drift watcher).
pub async fn drift_event(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> JsonResult {
    // The drift event contract, plus what ctflow's own watcher adds: the files it judged
    // and the tracking run that recorded the check.
    let mut body: Value =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("Invalid drift event: {e}")))?;
    let (files, check_run) = match &mut body {
        Value::Object(map) => (map.remove("files"), map.remove("check_run")),
        _ => (None, None),
    };
    let files = file_list(files)?;
    let check_run = match check_run {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(other) => {
            return Err(invalid(format!("check_run must be a run id, got {other}")).into());
        }
    };
    let mut event: DriftEvent =
        serde_json::from_value(body).map_err(|e| invalid(format!("Invalid drift event: {e}")))?;
    event.pipeline = name.clone();
    event.validate().map_err(invalid)?;
    let pipeline = state.store.get_pipeline(&name).await?;
    match pipeline.document.spec.triggers.get(event.trigger_index) {
        Some(Trigger::Drift(_)) => {}
        _ => {
            return Err(invalid(format!(
                "Pipeline '{name}' has no drift trigger at index {}.",
                event.trigger_index
            ))
            .into());
        }
    }
    let mut trigger = event.into_trigger();
    trigger.files = files;
    if let Some(id) = check_run {
        trigger.tags.insert("drift.check_run".into(), id);
    }
    let outcome = state.store.record_trigger(&trigger).await?;
    recorded(&state, outcome)
}

/// `POST /api/ctflow/v1/pipelines/{name}/performance-events`: live quality of the served
/// champion crossed a performance trigger's threshold (sent by the monitor). One run per
/// trigger, version and window-long stretch of time (`PerformanceEvent::dedupe_key`).
pub async fn performance_event(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> JsonResult {
    let mut body: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("Invalid performance event: {e}")))?;
    let monitoring_run = match &mut body {
        Value::Object(map) => map.remove("monitoring_run"),
        _ => None,
    };
    let monitoring_run = match monitoring_run {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(other) => {
            return Err(invalid(format!("monitoring_run must be a run id, got {other}")).into());
        }
    };
    let mut event: PerformanceEvent = serde_json::from_value(body)
        .map_err(|e| invalid(format!("Invalid performance event: {e}")))?;
    event.pipeline = name.clone();
    event.validate().map_err(invalid)?;
    let pipeline = state.store.get_pipeline(&name).await?;
    match pipeline.document.spec.triggers.get(event.trigger_index) {
        Some(Trigger::Performance(_)) => {}
        _ => {
            return Err(invalid(format!(
                "Pipeline '{name}' has no performance trigger at index {}.",
                event.trigger_index
            ))
            .into());
        }
    }
    let trigger = event.into_trigger(monitoring_run);
    let outcome = state.store.record_trigger(&trigger).await?;
    recorded(&state, outcome)
}

/// The most files one data event or seen-files request may name.
const MAX_FILES: usize = 10_000;

fn file_list(value: Option<Value>) -> ApiResult<Vec<String>> {
    let files: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => serde_json::from_value(value)
            .map_err(|_| invalid("files must be a list of file names"))?,
    };
    if files.len() > MAX_FILES {
        return Err(invalid(format!("at most {MAX_FILES} files per request")).into());
    }
    if files.iter().any(|f| f.trim().is_empty()) {
        return Err(invalid("a file name must not be empty").into());
    }
    Ok(files)
}

fn trigger_index(text: &str) -> ApiResult<usize> {
    text.parse()
        .map_err(|_| invalid(format!("'{text}' is not a trigger index")).into())
}

/// A pipeline's trigger that watches files, and the name of its set of seen files.
async fn watched_trigger(
    state: &AppState,
    name: &str,
    index: usize,
    kind: Option<&str>,
) -> ApiResult<(Trigger, String)> {
    let pipeline = state.store.get_pipeline(name).await?;
    let trigger = pipeline.document.spec.triggers.get(index).cloned();
    match trigger {
        Some(trigger) if kind.is_none_or(|k| k == trigger.kind()) => {
            match trigger.cursor_key(index) {
                Some(key) => Ok((trigger, key)),
                None => Err(invalid(format!(
                    "Trigger {index} of pipeline '{name}' is a {} trigger, which watches no files.",
                    trigger.kind()
                ))
                .into()),
            }
        }
        _ => Err(invalid(format!(
            "Pipeline '{name}' has no {} trigger at index {index}.",
            kind.unwrap_or("data or drift")
        ))
        .into()),
    }
}

#[derive(Deserialize)]
pub struct DataEventRequest {
    trigger_index: usize,
    #[serde(default)]
    files: Value,
}

/// `POST /api/ctflow/v1/pipelines/{name}/data-events`: new files of a data trigger, one
/// pipeline run for the batch (the watcher's report). The files the trigger has seen
/// before are left out; when none is left, nothing is recorded.
pub async fn data_event(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> JsonResult {
    let request: DataEventRequest =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("Invalid data event: {e}")))?;
    let files = file_list(Some(request.files))?;
    if files.is_empty() {
        return Err(invalid("a data event names at least one file").into());
    }
    let index = request.trigger_index;
    let (_, key) = watched_trigger(&state, &name, index, Some("data")).await?;
    let event = ctflow_core::trigger::data_event(&name, index, files);
    match state.store.record_data_trigger(&event, &key).await? {
        Some(outcome) => recorded(&state, outcome),
        None => Ok(Json(json!({ "pipeline_run": null, "duplicate": false })).into_response()),
    }
}

/// `GET /api/ctflow/v1/pipelines/{name}/triggers/{index}/seen-files`: the files a data
/// or drift trigger has already seen.
pub async fn seen_files(
    State(state): State<AppState>,
    Path((name, index)): Path<(String, String)>,
) -> JsonResult {
    let (_, key) = watched_trigger(&state, &name, trigger_index(&index)?, None).await?;
    let mut files: Vec<String> = state
        .store
        .seen_files(&name, &key)
        .await?
        .into_iter()
        .collect();
    files.sort();
    Ok(Json(json!({ "files": files })).into_response())
}

#[derive(Deserialize)]
pub struct SeenFilesRequest {
    #[serde(default)]
    files: Value,
}

/// `POST /api/ctflow/v1/pipelines/{name}/triggers/{index}/seen-files`: records files as
/// seen (a drift check judged them, or gave up on them).
pub async fn mark_seen(
    State(state): State<AppState>,
    Path((name, index)): Path<(String, String)>,
    body: Bytes,
) -> JsonResult {
    let request: SeenFilesRequest =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("Invalid request: {e}")))?;
    let files = file_list(Some(request.files))?;
    let (_, key) = watched_trigger(&state, &name, trigger_index(&index)?, None).await?;
    state.store.mark_files_seen(&name, &key, &files).await?;
    Ok(Json(json!({})).into_response())
}

/// `GET /api/ctflow/v1/pipelines/{name}/champion-snapshot`: the training snapshot of the
/// pipeline model's current champion, the reference of `reference: champion` drift
/// triggers. 404 when the model has no champion, or its run recorded no snapshot.
pub async fn champion_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> JsonResult {
    let pipeline = state.store.get_pipeline(&name).await?;
    let spec = &pipeline.document.spec;
    let Some(model) = spec.model.as_ref().map(|m| m.name.clone()) else {
        return Err(invalid(format!("Pipeline '{name}' names no model (spec.model).")).into());
    };
    let alias = spec.promotion.champion_alias.clone();
    let Some(version) = found(state.store.get_model_version_by_alias(&model, &alias).await)? else {
        return Err(
            MlflowError::not_found(format!("Model '{model}' has no '{alias}' yet.")).into(),
        );
    };
    let tagged = if version.run_id.is_empty() {
        None
    } else {
        found(state.store.get_run(&version.run_id).await)?
            .and_then(|run| run.tag(ctflow_core::data::SNAPSHOT_TAG).map(str::to_string))
    };
    let Some(snapshot_id) = tagged else {
        return Err(MlflowError::not_found(format!(
            "Version {} of model '{model}' ('{alias}') was not trained on a recorded data snapshot.",
            version.version
        ))
        .into());
    };
    let snapshot = state.store.get_data_snapshot(&snapshot_id).await?;
    Ok(Json(json!({
        "model": model,
        "alias": alias,
        "version": version.version,
        "run_id": version.run_id,
        "snapshot": snapshot,
    }))
    .into_response())
}

fn phases(p: &Params) -> ApiResult<Vec<Phase>> {
    let mut out = Vec::new();
    for text in p.str_list("phase")? {
        for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(part.parse::<Phase>().map_err(invalid)?);
        }
    }
    Ok(out)
}

fn max_results(p: &Params) -> ApiResult<i64> {
    let max = p.i64("max_results")?.unwrap_or(DEFAULT_RUNS);
    if !(1..=MAX_RUNS).contains(&max) {
        return Err(invalid(format!(
            "max_results must be between 1 and {MAX_RUNS}, got {max}"
        ))
        .into());
    }
    Ok(max)
}

/// `GET /api/ctflow/v1/pipelines/{name}/runs`: newest first; `phase` filters.
pub async fn runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> JsonResult {
    let runs = state
        .store
        .list_pipeline_runs(Some(&name), &phases(&p)?, max_results(&p)?)
        .await?;
    if runs.is_empty() {
        // Runs of a deleted pipeline stay readable; a name with neither is unknown.
        state.store.get_pipeline(&name).await?;
    }
    Ok(Json(json!({ "pipeline_runs": runs })).into_response())
}

/// `GET /api/ctflow/v1/pipeline-runs`: every pipeline's runs, newest first. NB: with
/// `--auth` the runs the caller may not read are left out of the page, which can then
/// hold fewer than `max_results`.
pub async fn all_runs(
    State(state): State<AppState>,
    visibility: Option<Extension<Visibility>>,
    p: Params,
) -> JsonResult {
    let visibility = Visibility::of_request(&state, visibility)?;
    let mut runs = state
        .store
        .list_pipeline_runs(None, &phases(&p)?, max_results(&p)?)
        .await?;
    if !visibility.is_everything() {
        let models: HashMap<String, Option<String>> = state
            .store
            .list_pipelines()
            .await?
            .into_iter()
            .map(|p| (p.name.clone(), model_of(&p).map(str::to_string)))
            .collect();
        runs.retain(|run| {
            let model = models.get(&run.pipeline).and_then(Option::as_deref);
            visibility.pipeline(model)
        });
    }
    Ok(Json(json!({ "pipeline_runs": runs })).into_response())
}

/// The registered model a pipeline promotes.
fn model_of(pipeline: &ctflow_store::PipelineRecord) -> Option<&str> {
    pipeline
        .document
        .spec
        .model
        .as_ref()
        .map(|m| m.name.as_str())
}

/// `GET /api/ctflow/v1/pipeline-runs/{id}`: the run and its history.
pub async fn describe(State(state): State<AppState>, Path(id): Path<String>) -> JsonResult {
    let run = state.store.get_pipeline_run(&id).await?;
    let events = state.store.pipeline_run_events(&id).await?;
    let controller_running = controller_running(&state).await?;
    let mut body =
        json!({ "pipeline_run": run, "events": events, "controller_running": controller_running });
    if let Some(snapshot) = &run.snapshot_id {
        body["data_snapshot"] = json!(state.store.get_data_snapshot(snapshot).await?);
    }
    Ok(Json(body).into_response())
}

async fn answer(
    state: AppState,
    id: String,
    actor: Actor,
    signed_in: bool,
    p: Params,
    approved: bool,
) -> JsonResult {
    // NB: a signed-in user answers as themselves, whatever `user` says.
    let user = match p.str("user")? {
        Some(user) if !signed_in && !user.trim().is_empty() => user,
        _ => actor.0,
    };
    let run = state.store.get_pipeline_run(&id).await?;
    if let Some(pipeline) = found(state.store.get_pipeline(&run.pipeline).await)? {
        let approvers = &pipeline.document.spec.gates.cd.approvers;
        if !approvers.is_empty() && !approvers.contains(&user) {
            return Err(MlflowError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "Only {} may approve or reject promotions of pipeline '{}'.",
                    approvers.join(", "),
                    run.pipeline
                ),
            )
            .into());
        }
    }
    let comment = p.str("comment")?.filter(|c| !c.trim().is_empty());
    let verb = if approved { "approved" } else { "rejected" };
    let message = match &comment {
        Some(c) => format!("{verb} by {user}: {c}"),
        None => format!("{verb} by {user}"),
    };
    let event = PipelineRunEvent {
        result: Some(verb.to_string()),
        detail: json!({ "user": user, "comment": comment }),
        ..PipelineRunEvent::new("approval", message)
    };
    let approval = Approval { approved, user };
    let changed = state
        .store
        .modify_pipeline_run(
            &id,
            &[Phase::WaitingApproval, Phase::Paused],
            |r| r.approval = Some(approval),
            Some(event),
        )
        .await?;
    let Some(run) = changed else {
        let run = state.store.get_pipeline_run(&id).await?;
        return Err(invalid(format!(
            "Pipeline run '{id}' is {}, not waiting for an approval.",
            run.phase
        ))
        .into());
    };
    wake(&state);
    Ok(Json(json!({ "pipeline_run": run })).into_response())
}

/// The longest name a serving replica reports under, or a worker claims a job under.
const MAX_NAME: usize = 256;

/// `name` trimmed, if it is 1 to [`MAX_NAME`] characters with no control character;
/// else the error saying what `field` must name.
fn printable_name<'a>(field: &str, names: &str, name: &'a str) -> Result<&'a str, MlflowError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must name {names} in 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(name)
}

/// The most mirrored rows one shadow report may carry.
const MAX_SHADOW_PREDICTIONS: usize = 10_000;

/// `POST /api/ctflow/v1/pipeline-runs/{id}/shadow`: a serving replica's running totals of
/// the shadow comparison (`{"replica": name, "tally": {...}}`), kept on the run while it
/// shadows; the controller judges them. A run that no longer shadows keeps nothing and
/// says so (`recorded: false`, with its phase), which tells the replica to stop mirroring.
pub async fn shadow_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> JsonResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Report {
        replica: String,
        tally: ShadowTally,
        #[serde(default)]
        predictions: Vec<ShadowPrediction>,
    }
    let report: Report = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("Invalid shadow report: {e}")))?;
    let replica = printable_name("replica", "the serving replica", &report.replica)?;
    report.tally.validate().map_err(invalid)?;
    if report.predictions.len() > MAX_SHADOW_PREDICTIONS {
        return Err(invalid(format!(
            "at most {MAX_SHADOW_PREDICTIONS} predictions per shadow report"
        ))
        .into());
    }
    if let Some(bad) = report
        .predictions
        .iter()
        .find(|p| !valid_request_id(&p.request_id))
    {
        return Err(invalid(format!(
            "'{}' is not a request id: 1 to 128 visible ASCII characters",
            bad.request_id
        ))
        .into());
    }
    match state
        .store
        .record_shadow(&id, replica, report.tally, &report.predictions)
        .await?
    {
        Some(run) => {
            wake(&state);
            Ok(Json(json!({ "recorded": true, "phase": run.phase })).into_response())
        }
        None => {
            let run = state.store.get_pipeline_run(&id).await?;
            Ok(Json(json!({ "recorded": false, "phase": run.phase })).into_response())
        }
    }
}

/// `POST /api/ctflow/v1/pipeline-runs/{id}/claim` with `{"attempt", "delivered",
/// "worker"}`: a worker asks to start the job it was handed, before it starts anything.
/// Decided on the run inside one transaction (`engine::claim`), so of two workers handed
/// the same job exactly one gets `claimed: true` (with the run, now Running); the other
/// gets `claimed: false` with the reason and the run's phase, and `running_elsewhere:
/// true` when another worker runs this attempt (so the job is that worker's to settle).
pub async fn claim(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> JsonResult {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Claim {
        attempt: i64,
        delivered: u64,
        worker: String,
    }
    let claim: Claim =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("Invalid claim: {e}")))?;
    let worker = printable_name("worker", "the worker", &claim.worker)?;
    if claim.delivered == 0 {
        return Err(invalid("delivered counts deliveries from 1").into());
    }
    let now = ctflow_core::now_ms();
    let decided = state
        .store
        .decide_pipeline_run(&id, |run| {
            ctflow_core::engine::claim(run, claim.attempt, claim.delivered, worker, now)
                .map_err(|refused| (refused, run.phase))
        })
        .await?;
    match decided {
        Ok(run) => Ok(Json(json!({ "claimed": true, "pipeline_run": run })).into_response()),
        Err((refused, phase)) => Ok(Json(json!({
            "claimed": false,
            "running_elsewhere": matches!(refused, ClaimRefused::RunningElsewhere { .. }),
            "reason": refused.to_string(),
            "phase": phase,
        }))
        .into_response()),
    }
}

/// `POST /api/ctflow/v1/pipeline-runs/{id}/rerun`: a new run with the same spec,
/// parameters, training data snapshot and (for a git project) commit as run `id`. The
/// controller checks the snapshot's files before the first attempt: a file gone or
/// changed fails the rerun with the reason.
pub async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
    actor: Actor,
) -> JsonResult {
    let original = state.store.get_pipeline_run(&id).await?;
    // The pipeline must still exist: the controller admits runs per pipeline.
    state.store.get_pipeline(&original.pipeline).await?;
    if original.spec.data.is_some() && original.snapshot_id.is_none() {
        return Err(invalid(format!(
            "Pipeline run '{id}' has no recorded training data snapshot ({}): there is nothing to rerun it on.",
            original.decision.as_deref().unwrap_or("it ended before one was taken")
        ))
        .into());
    }
    let mut spec = original.spec.clone();
    let commit = match &original.run_id {
        Some(run_id) => found(state.store.get_run(run_id).await)?
            .and_then(|run| run.tag("mlflow.source.git.commit").map(str::to_string)),
        None => None,
    };
    // A remote project is fetched at a version: pin the commit the original trained with.
    // A local folder runs as it is now; the commit is kept for comparison.
    let remote = spec.project.uri.contains("://") || spec.project.uri.starts_with("git@");
    if remote && let Some(commit) = &commit {
        spec.project.version = Some(commit.clone());
    }
    let mut event = TriggerEvent::new(
        &original.pipeline,
        "rerun",
        format!("rerun:{id}:{}", uuid::Uuid::now_v7().simple()),
    );
    event.parameters = original.trigger.parameters.clone();
    event.user = Some(actor.0);
    event.detail = json!({
        "rerun_of": id,
        "snapshot": original.snapshot_id,
        "git_commit": commit,
        "version_pinned": remote && commit.is_some(),
    });
    let run = state.store.record_rerun(&original, &event, &spec).await?;
    wake(&state);
    Ok(Json(json!({ "pipeline_run": run, "duplicate": false })).into_response())
}

/// `POST /api/ctflow/v1/pipeline-runs/{id}/approve` with `user` and `comment`.
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    actor: Actor,
    signed_in: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    answer(state, id, actor, signed_in.is_some(), p, true).await
}

/// `POST /api/ctflow/v1/pipeline-runs/{id}/reject` with `user` and `comment`.
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    actor: Actor,
    signed_in: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    answer(state, id, actor, signed_in.is_some(), p, false).await
}

/// `POST /api/ctflow/v1/models/{name}/rollback`: moves `alias` (default `champion`) back
/// to its previous version, per the ledger.
pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    actor: Actor,
    p: Params,
) -> JsonResult {
    let alias = p.str("alias")?.unwrap_or_else(|| "champion".into());
    let stages = p.bool("stages")?.unwrap_or(true);
    let (from, to) = state
        .store
        .rollback_alias(&name, &alias, stages, &actor.0)
        .await?;
    Ok(Json(json!({
        "name": name, "alias": alias,
        "from_version": from.to_string(), "to_version": to.to_string(),
    }))
    .into_response())
}
