//! The MLflow tracking REST API: experiments, runs, metrics, logged models.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ctflow_core::MlflowError;
use ctflow_core::entities::{Dataset, Metric, ModelOutput, ViewType};
use ctflow_core::filter::{
    parse_experiment_filter, parse_experiment_order_by, parse_logged_model_filter,
    parse_run_filter, parse_run_order_by,
};
use ctflow_core::ids::parse_experiment_id;
use ctflow_core::validation::{
    MAX_EXPERIMENTS_SEARCH_RESULTS, MAX_RUNS_SEARCH_RESULTS, validate_max_results,
};
use ctflow_store::{
    BatchMetric, DatasetInputRequest, ExperimentSearch, LoggedModelSearch, NewLoggedModel, NewRun,
    RunSearch, RunUpdate,
};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{LogBatchRequest, Params};

pub(crate) type JsonResult = ApiResult<Response>;

/// `{}`.
pub(crate) fn empty() -> JsonResult {
    Ok(json_bytes(b"{}".to_vec()))
}

/// A JSON body already serialised; handlers build it straight from the entities, without
/// an intermediate `serde_json::Value` tree (a 100k-point history would allocate one map
/// per point).
pub(crate) fn json_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> JsonResult {
    serde_json::to_vec(value).map(json_bytes).map_err(internal)
}

/// `{"<key>": [...], "next_page_token": ...}`, omitting what is empty as protobuf does.
struct Page<'a, T> {
    key: &'a str,
    items: &'a [T],
    next: Option<&'a str>,
}

impl<T: Serialize> Serialize for Page<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if !self.items.is_empty() {
            map.serialize_entry(self.key, self.items)?;
        }
        if let Some(token) = self.next {
            map.serialize_entry("next_page_token", token)?;
        }
        map.end()
    }
}

pub(crate) fn page<T: Serialize>(key: &str, items: Vec<T>, next: Option<String>) -> JsonResult {
    // NB: sized for a page of small items up front: a bulk history's 25,000 points would
    // otherwise be copied over a dozen times as the buffer grows.
    let mut body = Vec::with_capacity(128 + 64 * items.len());
    let page = Page {
        key,
        items: &items,
        next: next.as_deref(),
    };
    serde_json::to_writer(&mut body, &page).map_err(internal)?;
    Ok(json_bytes(body))
}

pub(crate) fn internal(e: serde_json::Error) -> crate::error::ApiError {
    MlflowError::new(ctflow_core::ErrorCode::InternalError, e.to_string()).into()
}

/// `{"<key>": value}`.
pub(crate) fn wrap<T: Serialize>(key: &str, value: T) -> JsonResult {
    let mut body = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut body);
    let mut map = serde::Serializer::serialize_map(&mut serializer, Some(1)).map_err(internal)?;
    map.serialize_entry(key, &value).map_err(internal)?;
    map.end().map_err(internal)?;
    Ok(json_bytes(body))
}

fn experiment_id(p: &Params, name: &str) -> ApiResult<i64> {
    Ok(parse_experiment_id(&p.req_str(name)?)?)
}

// ---------------------------------------------------------------- experiments

pub async fn create_experiment(State(state): State<AppState>, p: Params) -> JsonResult {
    let name = p.req_str("name")?;
    let location = p
        .str("artifact_location")?
        .filter(|l| !l.is_empty())
        .map(|l| state.check_artifact_location(&l))
        .transpose()?;
    let tags = p.key_values("tags")?;
    let id = state
        .store
        .create_experiment(&name, location.as_deref(), &tags)
        .await?;
    Ok(Json(json!({ "experiment_id": id })).into_response())
}

pub async fn get_experiment(State(state): State<AppState>, p: Params) -> JsonResult {
    let id = experiment_id(&p, "experiment_id")?;
    wrap("experiment", state.store.get_experiment(id).await?)
}

pub async fn get_experiment_by_name(State(state): State<AppState>, p: Params) -> JsonResult {
    let name = p.req_str("experiment_name")?;
    wrap(
        "experiment",
        state.store.get_experiment_by_name(&name).await?,
    )
}

pub async fn search_experiments(State(state): State<AppState>, p: Params) -> JsonResult {
    let max_results = p.i64("max_results")?.unwrap_or(1000);
    validate_max_results(max_results, MAX_EXPERIMENTS_SEARCH_RESULTS)?;
    let search = ExperimentSearch {
        view: ViewType::parse(p.str("view_type")?.as_deref())?,
        filter: parse_experiment_filter(&p.str("filter")?.unwrap_or_default())?,
        order_by: parse_experiment_order_by(&p.str_list("order_by")?)?,
        max_results: state.limits.page(max_results),
        page_token: p.str("page_token")?,
    };
    let (experiments, next) = state.store.search_experiments(&search).await?;
    page("experiments", experiments, next)
}

pub async fn update_experiment(State(state): State<AppState>, p: Params) -> JsonResult {
    let id = experiment_id(&p, "experiment_id")?;
    if let Some(new_name) = p.str("new_name")? {
        state.store.rename_experiment(id, &new_name).await?;
    }
    empty()
}

pub async fn delete_experiment(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_experiment(experiment_id(&p, "experiment_id")?)
        .await?;
    empty()
}

pub async fn restore_experiment(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .restore_experiment(experiment_id(&p, "experiment_id")?)
        .await?;
    empty()
}

pub async fn set_experiment_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    let id = experiment_id(&p, "experiment_id")?;
    let key = p.req_str("key")?;
    let value = p.str("value")?.unwrap_or_default();
    state.store.set_experiment_tag(id, &key, &value).await?;
    empty()
}

pub async fn delete_experiment_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    let id = experiment_id(&p, "experiment_id")?;
    state
        .store
        .delete_experiment_tag(id, &p.req_str("key")?)
        .await?;
    empty()
}

// ----------------------------------------------------------------------- runs

/// The run's owner: on a server with `--auth` the signed-in user, whatever the client put
/// in `user_id` or the `mlflow.user` tag.
pub async fn create_run(
    State(state): State<AppState>,
    signed_in: Option<axum::Extension<crate::auth::CurrentUser>>,
    p: Params,
) -> JsonResult {
    let experiment_id = match p.str("experiment_id")?.filter(|s| !s.is_empty()) {
        Some(raw) => parse_experiment_id(&raw)?,
        None => 0,
    };
    let mut user_id = p.str("user_id")?.unwrap_or_default();
    let mut tags = p.key_values("tags")?;
    if let Some(axum::Extension(crate::auth::CurrentUser(user))) = signed_in {
        user_id = user.username.clone();
        tags.retain(|tag| tag.key != "mlflow.user");
        tags.push(ctflow_core::entities::KeyValue {
            key: "mlflow.user".into(),
            value: user.username,
        });
    }
    let run = state
        .store
        .create_run(NewRun {
            experiment_id,
            user_id,
            start_time: p.i64("start_time")?,
            run_name: p.str("run_name")?,
            tags,
        })
        .await?;
    wrap("run", run)
}

pub async fn get_run(State(state): State<AppState>, p: Params) -> JsonResult {
    wrap("run", state.store.get_run(&p.run_id()?).await?)
}

pub async fn update_run(State(state): State<AppState>, p: Params) -> JsonResult {
    let info = state
        .store
        .update_run(
            &p.run_id()?,
            RunUpdate {
                status: p.str("status")?,
                end_time: p.i64("end_time")?,
                run_name: p.str("run_name")?,
            },
        )
        .await?;
    wrap("run_info", info)
}

pub async fn delete_run(State(state): State<AppState>, p: Params) -> JsonResult {
    state.store.delete_run(&p.run_id()?).await?;
    empty()
}

pub async fn restore_run(State(state): State<AppState>, p: Params) -> JsonResult {
    state.store.restore_run(&p.run_id()?).await?;
    empty()
}

fn batch_metric(p: &Params) -> ApiResult<BatchMetric> {
    let key = p.req_str("key")?;
    let value = p
        .f64("value")?
        .ok_or_else(|| MlflowError::missing_param("value"))?;
    let timestamp = p.req_i64("timestamp")?;
    Ok(BatchMetric {
        key,
        value,
        timestamp,
        step: p.i64("step")?.unwrap_or(0),
        model_id: p.str("model_id")?.filter(|s| !s.is_empty()),
        dataset_name: p.str("dataset_name")?.filter(|s| !s.is_empty()),
        dataset_digest: p.str("dataset_digest")?.filter(|s| !s.is_empty()),
    })
}

pub async fn log_metric(State(state): State<AppState>, p: Params) -> JsonResult {
    let run_id = p.run_id()?;
    let metric = batch_metric(&p)?;
    state.store.log_metric(&run_id, metric).await?;
    empty()
}

pub async fn log_param(State(state): State<AppState>, p: Params) -> JsonResult {
    let run_id = p.run_id()?;
    let key = p.req_str("key")?;
    let value = p.str("value")?.unwrap_or_default();
    state.store.log_param(&run_id, &key, &value).await?;
    empty()
}

pub async fn set_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    let run_id = p.run_id()?;
    let key = p.req_str("key")?;
    let value = p.str("value")?.unwrap_or_default();
    state.store.set_tag(&run_id, &key, &value).await?;
    empty()
}

pub async fn delete_tag(State(state): State<AppState>, p: Params) -> JsonResult {
    state
        .store
        .delete_tag(&p.run_id()?, &p.req_str("key")?)
        .await?;
    empty()
}

pub async fn log_batch(State(state): State<AppState>, request: LogBatchRequest) -> JsonResult {
    let (run_id, metrics, params, tags) = match request {
        LogBatchRequest::Typed(parts) => parts,
        LogBatchRequest::Generic(p) => log_batch_parts(p)?,
    };
    state
        .store
        .log_batch(&run_id, metrics, params, tags)
        .await?;
    empty()
}

/// A log-batch read the generic way, with MLflow's wording for every refusal.
fn log_batch_parts(mut p: Params) -> ApiResult<crate::params::LogBatchParts> {
    let run_id = p.run_id()?;
    let metrics = p
        .take_objects("metrics")?
        .iter()
        .enumerate()
        .map(|(index, metric)| {
            // MLflow names a field of a list item by its place: `metrics[0].timestamp`.
            batch_metric(metric).map_err(|e| {
                let inner = e.error();
                ApiError::from(MlflowError::new(
                    inner.code,
                    inner.message.replacen(
                        "parameter '",
                        &format!("parameter 'metrics[{index}]."),
                        1,
                    ),
                ))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let params = p.key_values("params")?;
    let tags = p.key_values("tags")?;
    Ok((run_id, metrics, params, tags))
}

pub async fn log_inputs(State(state): State<AppState>, p: Params) -> JsonResult {
    let run_id = p.run_id()?;
    let mut datasets = Vec::new();
    for input in p.objects("datasets")? {
        let d = input
            .object("dataset")?
            .ok_or_else(|| MlflowError::missing_param("dataset"))?;
        datasets.push(DatasetInputRequest {
            dataset: Dataset {
                name: d.req_str("name")?,
                digest: d.req_str("digest")?,
                source_type: d.str("source_type")?.unwrap_or_default(),
                source: d.str("source")?.unwrap_or_default(),
                schema: d.str("schema")?,
                profile: d.str("profile")?,
            },
            tags: input.key_values("tags")?,
        });
    }
    let models = p
        .objects("models")?
        .iter()
        .map(|m| m.req_str("model_id"))
        .collect::<Result<Vec<_>, _>>()?;
    state.store.log_inputs(&run_id, datasets, models).await?;
    empty()
}

pub async fn log_outputs(State(state): State<AppState>, p: Params) -> JsonResult {
    let run_id = p.run_id()?;
    let outputs = p
        .objects("models")?
        .iter()
        .map(|m| {
            Ok(ModelOutput {
                model_id: m.req_str("model_id")?,
                step: m.i64("step")?.unwrap_or(0),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    state.store.log_outputs(&run_id, outputs).await?;
    empty()
}

pub async fn search_runs(State(state): State<AppState>, p: Params) -> JsonResult {
    let max_results = p.i64("max_results")?.unwrap_or(1000);
    if max_results > MAX_RUNS_SEARCH_RESULTS || max_results <= 0 {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max_results} for parameter 'max_results' supplied. It must be at most {MAX_RUNS_SEARCH_RESULTS}, and greater than 0"
        ))
        .into());
    }
    let search = RunSearch {
        max_results: state.limits.page(max_results),
        order_by: parse_run_order_by(&p.str_list("order_by")?)?,
        page_token: p.str("page_token")?,
        ..matching_runs(&p)?
    };
    let (runs, next) = state.store.search_runs(&search).await?;
    page("runs", runs, next)
}

/// The runs a runs/search request asks for: its experiments, filter and view.
fn matching_runs(p: &Params) -> ApiResult<RunSearch> {
    let experiment_ids = p
        .str_list("experiment_ids")?
        .iter()
        .map(|id| parse_experiment_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunSearch {
        experiment_ids,
        filter: parse_run_filter(&p.str("filter")?.unwrap_or_default())?,
        view: ViewType::parse(p.str("run_view_type")?.as_deref())?,
        max_results: 0,
        order_by: Vec::new(),
        page_token: None,
    })
}

/// `POST /api/ctflow/v1/runs/count`: how many runs a runs/search request (`experiment_ids`,
/// `filter`, `run_view_type`) matches in all, for the dashboard's pager. MLflow's search
/// has no total.
pub async fn count_runs(State(state): State<AppState>, p: Params) -> JsonResult {
    let count = state.store.count_runs(&matching_runs(&p)?).await?;
    Ok(Json(json!({ "count": count })).into_response())
}

pub async fn get_metric_history(State(state): State<AppState>, p: Params) -> JsonResult {
    let run_id = p.run_id()?;
    let key = p.req_str("metric_key")?;
    let max_results = p.i64("max_results")?;
    if let Some(max) = max_results {
        validate_max_results(max, i64::MAX)?;
    }
    // NB: MLflow answers a history without max_results in one page; the client follows
    // next_page_token, so a page cap keeps a long history from being built whole.
    let max_results = Some(state.limits.page(max_results.unwrap_or(i64::MAX)));
    let (points, next) = state
        .store
        .get_metric_history_points(&run_id, &key, max_results, p.str("page_token")?.as_deref())
        .await?;
    crate::history_json::history_page_body(&key, &points, next.as_deref())
        .map(json_bytes)
        .map_err(|e| internal(serde_json::Error::io(e)))
}

/// A history point as MLflow's `MetricWithRunId`.
fn metric_of_run(run_id: String, point: ctflow_core::entities::MetricPoint) -> Metric {
    Metric {
        key: point.key,
        value: point.value,
        timestamp: point.timestamp,
        step: point.step,
        dataset_name: None,
        dataset_digest: None,
        model_id: None,
        run_id: Some(run_id),
    }
}

/// `GET /ajax-api/2.0/mlflow/metrics/get-history-bulk` (MLflow's UI): one metric's whole
/// history for up to 100 runs, ordered by run id, then timestamp, step and value; runs
/// that do not exist contribute nothing.
pub async fn get_metric_history_bulk(State(state): State<AppState>, p: Params) -> JsonResult {
    const MAX_HISTORY_RESULTS: i64 = 25_000;
    const MAX_RUN_IDS: usize = 100;
    let mut run_ids = p.str_list("run_id")?;
    if run_ids.is_empty() {
        return Err(MlflowError::invalid(
            "GetMetricHistoryBulk request must specify at least one run_id.",
        )
        .into());
    }
    if run_ids.len() > MAX_RUN_IDS {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than {MAX_RUN_IDS} run_ids. Received {} run_ids.",
            run_ids.len()
        ))
        .into());
    }
    let Some(key) = p.str("metric_key")? else {
        return Err(MlflowError::invalid(
            "GetMetricHistoryBulk request must specify a metric_key.",
        )
        .into());
    };
    let max_results = p
        .i64("max_results")?
        .unwrap_or(MAX_HISTORY_RESULTS)
        .clamp(0, MAX_HISTORY_RESULTS);
    run_ids.sort_unstable();
    run_ids.dedup();
    let mut metrics: Vec<Metric> = Vec::new();
    for run_id in run_ids {
        let remaining = max_results - metrics.len() as i64;
        if remaining <= 0 {
            break;
        }
        // NB: the store answers in MLflow's order (timestamp, step, value) and stops at the
        // limit, so a long history is not read whole for a capped answer.
        let points = match state
            .store
            .get_metric_history(&run_id, &key, Some(remaining), None)
            .await
        {
            Ok((points, _)) => points,
            Err(ctflow_store::Error::Mlflow(e))
                if e.code == ctflow_core::ErrorCode::ResourceDoesNotExist =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        metrics.extend(
            points
                .into_iter()
                .map(|point| metric_of_run(run_id.clone(), point)),
        );
    }
    page("metrics", metrics, None)
}

pub async fn get_metric_history_bulk_interval(
    State(state): State<AppState>,
    p: Params,
) -> JsonResult {
    let run_ids = p.str_list("run_ids")?;
    if run_ids.is_empty() {
        return Err(MlflowError::missing_param("run_ids").into());
    }
    if run_ids.len() > 100 {
        return Err(MlflowError::invalid(
            "GetMetricHistoryBulkInterval request must specify at most 100 run_ids.",
        )
        .into());
    }
    let key = p.req_str("metric_key")?;
    let max_results = p.i64("max_results")?.unwrap_or(320);
    if !(1..=2500).contains(&max_results) {
        return Err(MlflowError::invalid("max_results must be between 1 and 2500.").into());
    }
    let (start_step, end_step) = (p.i64("start_step")?, p.i64("end_step")?);
    match (start_step, end_step) {
        (Some(start), Some(end)) if start > end => {
            return Err(MlflowError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={start} and end_step={end}."
            ))
            .into());
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(MlflowError::invalid(
                "If either start step or end step are specified, both must be specified.",
            )
            .into());
        }
        _ => {}
    }
    let points = state
        .store
        .get_metric_history_bulk_interval(&run_ids, &key, start_step, end_step, max_results)
        .await?;
    let metrics: Vec<Metric> = points
        .into_iter()
        .map(|(run_id, point)| metric_of_run(run_id, point))
        .collect();
    page("metrics", metrics, None)
}

/// `POST /ajax-api/2.0/mlflow/experiments/search-datasets` (MLflow's UI): the datasets the
/// experiments' runs used, with the context each was used in.
pub async fn search_datasets(State(state): State<AppState>, p: Params) -> JsonResult {
    const MAX_EXPERIMENT_IDS: usize = 20;
    let raw = p.str_list("experiment_ids")?;
    if raw.is_empty() {
        return Err(MlflowError::invalid(
            "SearchDatasets request must specify at least one experiment_id.",
        )
        .into());
    }
    if raw.len() > MAX_EXPERIMENT_IDS {
        return Err(MlflowError::invalid(format!(
            "SearchDatasets request cannot specify more than {MAX_EXPERIMENT_IDS} experiment_ids. Received {} experiment_ids.",
            raw.len()
        ))
        .into());
    }
    let ids = raw
        .iter()
        .map(|id| parse_experiment_id(id))
        .collect::<ctflow_core::Result<Vec<i64>>>()?;
    let summaries = state.store.search_dataset_summaries(&ids).await?;
    if summaries.is_empty() {
        return empty();
    }
    Ok(Json(json!({ "dataset_summaries": summaries })).into_response())
}

// -------------------------------------------------------------- logged models

pub async fn create_logged_model(State(state): State<AppState>, p: Params) -> JsonResult {
    let model = state
        .store
        .create_logged_model(NewLoggedModel {
            experiment_id: experiment_id(&p, "experiment_id")?,
            name: p.str("name")?,
            model_type: p.str("model_type")?,
            source_run_id: p.str("source_run_id")?,
            params: p.key_values("params")?,
            tags: p.key_values("tags")?,
        })
        .await?;
    wrap("model", model)
}

pub async fn get_logged_model(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
) -> JsonResult {
    wrap("model", state.store.get_logged_model(&model_id).await?)
}

pub async fn finalize_logged_model(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    p: Params,
) -> JsonResult {
    let status = p.req_str("status")?;
    wrap(
        "model",
        state
            .store
            .finalize_logged_model(&model_id, &status)
            .await?,
    )
}

pub async fn delete_logged_model(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
) -> JsonResult {
    state.store.delete_logged_model(&model_id).await?;
    empty()
}

pub async fn set_logged_model_tags(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    p: Params,
) -> JsonResult {
    state
        .store
        .set_logged_model_tags(&model_id, &p.key_values("tags")?)
        .await?;
    empty()
}

pub async fn delete_logged_model_tag(
    State(state): State<AppState>,
    Path((model_id, key)): Path<(String, String)>,
) -> JsonResult {
    state.store.delete_logged_model_tag(&model_id, &key).await?;
    empty()
}

pub async fn log_logged_model_params(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    p: Params,
) -> JsonResult {
    state
        .store
        .log_logged_model_params(&model_id, &p.key_values("params")?)
        .await?;
    empty()
}

pub async fn search_logged_models(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_ids = p
        .str_list("experiment_ids")?
        .iter()
        .map(|id| parse_experiment_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let max_results = p.i64("max_results")?.unwrap_or(100);
    validate_max_results(max_results, MAX_RUNS_SEARCH_RESULTS)?;
    let order_by = p
        .objects("order_by")?
        .iter()
        .map(|o| {
            Ok(ctflow_store_order(
                o.req_str("field_name")?,
                o.bool("ascending")?.unwrap_or(true),
            ))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let datasets = p
        .objects("datasets")?
        .iter()
        .map(|d| {
            let name = d
                .str("dataset_name")?
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    MlflowError::invalid(
                        "`dataset_name` in the `datasets` clause must be specified.",
                    )
                })?;
            Ok((name, d.str("dataset_digest")?))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let search = LoggedModelSearch {
        experiment_ids,
        filter: parse_logged_model_filter(&p.str("filter")?.unwrap_or_default())?,
        datasets,
        order_by,
        max_results: state.limits.page(max_results),
        page_token: p.str("page_token")?,
    };
    let (models, next) = state.store.search_logged_models(&search).await?;
    page("models", models, next)
}

fn ctflow_store_order(field_name: String, ascending: bool) -> ctflow_store::LoggedModelOrder {
    ctflow_store::LoggedModelOrder {
        field_name,
        ascending,
    }
}

pub async fn server_info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "artifact_serving_enabled": state.serve_artifacts,
        "artifacts_presigned_only": false,
        "tracking_auth": "",
        "mlflow_version": crate::MLFLOW_API_LEVEL,
        "ctflow_version": env!("CARGO_PKG_VERSION"),
    }))
}
