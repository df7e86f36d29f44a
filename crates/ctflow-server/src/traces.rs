//! MLflow 3's tracing API: trace records (v3 and the deprecated v2 routes), spans over
//! OTLP (`POST /v1/traces`, protobuf or JSON), trace search and statistics, tags, links to
//! runs and assessments.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use ctflow_core::filter::{TraceKey, parse_trace_filter, parse_trace_order_by};
use ctflow_core::ids::parse_experiment_id;
use ctflow_core::traces::value::float_json;
use ctflow_core::traces::{
    SPANS_IN_TRACKING_STORE, SPANS_LOCATION_TAG, SpanRecord, TraceInfo, TraceState, npmi, otlp,
    parse_duration, parse_timestamp, span_proto_json, validate_new_assessment, validate_trace_id,
};
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_store::{TraceDeletion, TraceSearch};
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use crate::AppState;
use crate::api::{JsonResult, empty, page, to_json};
use crate::auth::EXPERIMENT_ID_HEADER;
use crate::error::ApiResult;
use crate::params::Params;

/// The most traces one search page holds (MLflow's limit).
const MAX_TRACES_PER_PAGE: i64 = 500;
/// The page size when a search names none.
const DEFAULT_TRACES_PER_PAGE: i64 = 100;

fn string_map(p: &Params, name: &str) -> ApiResult<BTreeMap<String, String>> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(MlflowError::invalid(format!(
                    "Invalid value {other} for '{name}.{k}': expected a string"
                ))
                .into()),
            })
            .collect(),
        Some(other) => Err(MlflowError::invalid(format!(
            "Invalid value {other} for '{name}': expected a map of strings"
        ))
        .into()),
    }
}

fn pairs(p: &Params, name: &str) -> ApiResult<Vec<(String, String)>> {
    Ok(p.key_values(name)?
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect())
}

/// A trace with its spans in the protobuf-JSON form of `GetTrace`.
fn trace_json(info: &TraceInfo, spans: &[String]) -> Value {
    let mut trace = Map::new();
    trace.insert("trace_info".into(), info.to_v3_json());
    if !spans.is_empty() {
        trace.insert(
            "spans".into(),
            Value::Array(spans.iter().map(|s| span_proto_json(s)).collect()),
        );
    }
    Value::Object(trace)
}

// ---------------------------------------------------------------- v3 records

/// `POST /api/3.0/mlflow/traces` (`StartTraceV3`): the client's report of a finished trace.
pub async fn start_trace(State(state): State<AppState>, p: Params) -> JsonResult {
    let trace = p
        .object("trace")?
        .ok_or_else(|| MlflowError::missing_param("trace"))?;
    let info = trace
        .object("trace_info")?
        .ok_or_else(|| MlflowError::missing_param("trace.trace_info"))?;
    let trace_id = info.req_str("trace_id")?;
    validate_trace_id(&trace_id)?;
    let experiment_id = info
        .object("trace_location")?
        .and_then(|l| l.object("mlflow_experiment").ok().flatten())
        .and_then(|e| e.str("experiment_id").ok().flatten())
        .ok_or_else(|| {
            MlflowError::missing_param(
                "trace.trace_info.trace_location.mlflow_experiment.experiment_id",
            )
        })?;
    let request_time = match info.str("request_time")? {
        Some(text) => parse_timestamp(&text, "request_time")?,
        None => ctflow_core::now_ms(),
    };
    let execution_duration = info
        .str("execution_duration")?
        .map(|text| parse_duration(&text, "execution_duration"))
        .transpose()?;
    let state_name = info.str("state")?.unwrap_or_else(|| "OK".into());
    let assessments = info
        .objects("assessments")?
        .into_iter()
        .map(|a| Ok(Value::Object(validate_new_assessment(&Value::Object(a.0))?)))
        .collect::<ApiResult<Vec<Value>>>()?;
    let record = TraceInfo {
        trace_id,
        experiment_id: parse_experiment_id(&experiment_id)?,
        request_time,
        execution_duration,
        state: TraceState::parse(&state_name)?,
        client_request_id: info.str("client_request_id")?,
        request_preview: info.str("request_preview")?,
        response_preview: info.str("response_preview")?,
        metadata: string_map(&info, "trace_metadata")?,
        tags: string_map(&info, "tags")?,
        assessments,
    };
    let stored = state.store.start_trace(&record).await?;
    to_json(&json!({"trace": {"trace_info": stored.to_v3_json()}}))
}

/// `GET /api/3.0/mlflow/traces/{trace_id}` (`GetTraceInfoV3`).
pub async fn get_trace_info(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
) -> JsonResult {
    let info = state.store.get_trace_info(&trace_id).await?;
    to_json(&json!({"trace": {"trace_info": info.to_v3_json()}}))
}

/// `GET /api/3.0/mlflow/traces/get` (`GetTrace`): a trace with its spans. Without
/// `allow_partial`, a trace whose spans have not all arrived (the client's size stats say
/// how many) is not-found for now.
pub async fn get_trace(State(state): State<AppState>, p: Params) -> JsonResult {
    let trace_id = p.req_str("trace_id")?;
    let allow_partial = p.bool("allow_partial")?.unwrap_or(false);
    // NB: a trace's last spans may still be on their way when a client reads it right after
    // its report; as MLflow's server, wait for them a little (1 s, then 2 s) before saying so.
    let mut waits = [1, 2].into_iter();
    loop {
        let info = state.store.get_trace_info(&trace_id).await?;
        let spans = state
            .store
            .trace_spans(std::slice::from_ref(&trace_id))
            .await?
            .remove(&trace_id)
            .unwrap_or_default();
        let complete = allow_partial
            || match info.expected_span_count() {
                Some(expected) => spans.len() as u64 >= expected,
                None => !spans.is_empty() || !in_tracking_store(&info),
            };
        if complete {
            return to_json(&json!({"trace": trace_json(&info, &spans)}));
        }
        match waits.next() {
            Some(seconds) => tokio::time::sleep(std::time::Duration::from_secs(seconds)).await,
            None => {
                return Err(MlflowError::not_found(format!(
                    "Trace with ID {trace_id} is not fully exported yet, please try again later."
                ))
                .into());
            }
        }
    }
}

fn in_tracking_store(info: &TraceInfo) -> bool {
    info.tags.get(SPANS_LOCATION_TAG).map(String::as_str) == Some(SPANS_IN_TRACKING_STORE)
}

/// `GET /api/3.0/mlflow/traces/batchGet` (`BatchGetTraces`): traces with their spans;
/// ids without a trace are left out.
pub async fn batch_get_traces(State(state): State<AppState>, p: Params) -> JsonResult {
    let ids = p.str_list("trace_ids")?;
    let mut infos = state.store.trace_infos(&ids).await?;
    if p.get("experiment_ids").is_some() {
        let allowed = p.experiment_ids("experiment_ids")?;
        infos.retain(|info| allowed.contains(&info.experiment_id));
    }
    let mut spans = state.store.trace_spans(&ids).await?;
    let traces: Vec<Value> = infos
        .iter()
        .map(|info| trace_json(info, &spans.remove(&info.trace_id).unwrap_or_default()))
        .collect();
    page("traces", traces, None)
}

/// `POST /api/3.0/mlflow/traces/batchGetInfos` (`BatchGetTraceInfos`).
pub async fn batch_get_trace_infos(State(state): State<AppState>, p: Params) -> JsonResult {
    let ids = p.str_list("trace_ids")?;
    let mut infos = state.store.trace_infos(&ids).await?;
    if p.get("experiment_ids").is_some() {
        let allowed = p.experiment_ids("experiment_ids")?;
        infos.retain(|info| allowed.contains(&info.experiment_id));
    }
    let infos: Vec<Value> = infos.iter().map(TraceInfo::to_v3_json).collect();
    page("trace_infos", infos, None)
}

fn search_request(
    experiment_ids: Vec<i64>,
    p: &Params,
    state: &AppState,
) -> ApiResult<TraceSearch> {
    let max_results = p.i64("max_results")?.unwrap_or(DEFAULT_TRACES_PER_PAGE);
    if !(1..=MAX_TRACES_PER_PAGE).contains(&max_results) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max_results} for parameter 'max_results' supplied. It must be between 1 and {MAX_TRACES_PER_PAGE}."
        ))
        .into());
    }
    Ok(TraceSearch {
        experiment_ids,
        filter: parse_trace_filter(&p.str("filter")?.unwrap_or_default())?,
        order_by: parse_trace_order_by(&p.str_list("order_by")?)?,
        max_results: state.limits.page(max_results),
        page_token: p.str("page_token")?.filter(|t| !t.is_empty()),
    })
}

/// `POST /api/3.0/mlflow/traces/search` (`SearchTracesV3`).
pub async fn search_traces(State(state): State<AppState>, p: Params) -> JsonResult {
    let mut ids = Vec::new();
    for location in p.objects("locations")? {
        if let Some(experiment) = location.object("mlflow_experiment")? {
            ids.push(parse_experiment_id(&experiment.req_str("experiment_id")?)?);
        }
    }
    let search = search_request(ids, &p, &state)?;
    let (infos, next) = state.store.search_traces(&search).await?;
    let infos: Vec<Value> = infos.iter().map(TraceInfo::to_v3_json).collect();
    page("traces", infos, next)
}

/// `POST /api/{2,3}.0/mlflow/traces/delete-traces`: the named traces, or the oldest up to
/// a time (at most `max_traces`).
pub async fn delete_traces(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_id = parse_experiment_id(&p.req_str("experiment_id")?)?;
    let ids = p.str_list("request_ids")?;
    let max_timestamp = p.i64("max_timestamp_millis")?;
    let which = match (max_timestamp, ids.is_empty()) {
        (Some(max_timestamp_ms), true) => TraceDeletion::Before {
            max_timestamp_ms,
            max_traces: p.i64("max_traces")?,
        },
        (None, false) => {
            if p.get("max_traces").is_some() {
                return Err(MlflowError::invalid(
                    "'max_traces' can only be given with 'max_timestamp_millis', not with 'request_ids'",
                )
                .into());
            }
            TraceDeletion::Ids(ids)
        }
        (Some(_), false) => {
            return Err(MlflowError::invalid(
                "Only one of 'max_timestamp_millis' and 'request_ids' can be specified",
            )
            .into());
        }
        (None, true) => {
            return Err(MlflowError::invalid(
                "Either 'max_timestamp_millis' or 'request_ids' must be specified",
            )
            .into());
        }
    };
    let deleted = state.store.delete_traces(experiment_id, &which).await?;
    to_json(&json!({ "traces_deleted": deleted }))
}

/// `PATCH /api/{2,3}.0/mlflow/traces/{trace_id}/tags`.
pub async fn set_trace_tag(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    p: Params,
) -> JsonResult {
    let key = p.req_str("key")?;
    let value = p.str("value")?.unwrap_or_default();
    state.store.set_trace_tag(&trace_id, &key, &value).await?;
    empty()
}

/// `DELETE /api/{2,3}.0/mlflow/traces/{trace_id}/tags`.
pub async fn delete_trace_tag(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    p: Params,
) -> JsonResult {
    let key = p.req_str("key")?;
    state.store.delete_trace_tag(&trace_id, &key).await?;
    empty()
}

/// `POST /api/2.0/mlflow/traces/link-to-run` (at most 100 traces at a time, as MLflow).
pub async fn link_traces_to_run(State(state): State<AppState>, p: Params) -> JsonResult {
    let ids = p.str_list("trace_ids")?;
    if ids.len() > 100 {
        return Err(MlflowError::invalid(format!(
            "Cannot link more than 100 traces to a run in a single request. Provided {} traces.",
            ids.len()
        ))
        .into());
    }
    let run_id = p.req_str("run_id")?;
    state.store.link_traces_to_run(&ids, &run_id).await?;
    empty()
}

/// `POST /api/3.0/mlflow/traces/calculate-filter-correlation`: NPMI of two filters.
pub async fn calculate_filter_correlation(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiments = p.experiment_ids("experiment_ids")?;
    let base = p.str("base_filter")?.filter(|b| !b.trim().is_empty());
    let combined = |filter: String| match &base {
        Some(base) => format!("{base} and {filter}"),
        None => filter,
    };
    let first = parse_trace_filter(&combined(p.req_str("filter_string1")?))?;
    let second = parse_trace_filter(&combined(p.req_str("filter_string2")?))?;
    let base_clauses = parse_trace_filter(base.as_deref().unwrap_or(""))?;
    let mut both = first.clone();
    both.extend(second.iter().cloned());
    let store = &state.store;
    let total = store.count_traces(&experiments, &base_clauses).await?;
    let first_count = store.count_traces(&experiments, &first).await?;
    let second_count = store.count_traces(&experiments, &second).await?;
    let joint = store.count_traces(&experiments, &both).await?;
    let result = npmi(joint, first_count, second_count, total);
    to_json(&json!({
        "npmi": float_json(result.npmi),
        "npmi_smoothed": float_json(result.smoothed),
        "filter1_count": first_count,
        "filter2_count": second_count,
        "joint_count": joint,
        "total_count": total,
    }))
}

/// `POST /api/3.0/mlflow/traces/metrics` (`QueryTraceMetrics`) for the traces view:
/// `trace_count` (COUNT) and `latency` (COUNT, SUM, AVG, MIN, MAX, in ms), by
/// `trace_status` or `trace_name`, over an optional time range.
pub async fn query_trace_metrics(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiments = p.experiment_ids("experiment_ids")?;
    let view = p.str("view_type")?.unwrap_or_else(|| "TRACES".into());
    if view != "TRACES" {
        return Err(MlflowError::invalid(format!(
            "Unsupported view_type '{view}': ctflow answers trace metrics for the TRACES view"
        ))
        .into());
    }
    let metric = p.req_str("metric_name")?;
    if metric != "trace_count" && metric != "latency" {
        return Err(MlflowError::invalid(format!(
            "Unsupported metric_name '{metric}' for the TRACES view: use 'trace_count' or 'latency'"
        ))
        .into());
    }
    let dimensions = p.str_list("dimensions")?;
    let group = match dimensions.as_slice() {
        [] => None,
        [d] if d == "trace_status" => Some(TraceKey::Status),
        [d] if d == "trace_name" => Some(TraceKey::Name),
        other => {
            return Err(MlflowError::invalid(format!(
                "Unsupported dimensions {other:?}: use one of 'trace_status', 'trace_name'"
            ))
            .into());
        }
    };
    if p.i64("time_interval_seconds")?.is_some() {
        return Err(MlflowError::invalid(
            "time_interval_seconds is not supported by this server's trace metrics",
        )
        .into());
    }
    let mut filter = Vec::new();
    for f in p.str_list("filters")? {
        filter.extend(parse_trace_filter(&f)?);
    }
    let aggregations: Vec<String> = p
        .objects("aggregations")?
        .iter()
        .map(|a| a.req_str("aggregation_type"))
        .collect::<Result<_, _>>()?;
    let groups = state
        .store
        .trace_groups(
            &experiments,
            &filter,
            group.clone(),
            (p.i64("start_time_ms")?, p.i64("end_time_ms")?),
        )
        .await?;
    let mut points = Vec::new();
    for g in groups {
        let mut values = Map::new();
        for aggregation in &aggregations {
            let value = match (metric.as_str(), aggregation.as_str()) {
                (_, "COUNT") => g.count as f64,
                ("latency", "SUM") => g.total_ms.unwrap_or(0) as f64,
                ("latency", "AVG") if g.count > 0 => {
                    g.total_ms.unwrap_or(0) as f64 / g.count as f64
                }
                ("latency", "MIN") => g.min_ms.unwrap_or(0) as f64,
                ("latency", "MAX") => g.max_ms.unwrap_or(0) as f64,
                (m, a) => {
                    return Err(MlflowError::invalid(format!(
                        "Unsupported aggregation '{a}' for metric '{m}'"
                    ))
                    .into());
                }
            };
            values.insert(aggregation.clone(), float_json(value));
        }
        let mut point = Map::new();
        point.insert("metric_name".into(), json!(metric));
        let mut dims = Map::new();
        if let [d] = dimensions.as_slice() {
            dims.insert(d.clone(), json!(g.dimension));
        }
        if !dims.is_empty() {
            point.insert("dimensions".into(), Value::Object(dims));
        }
        point.insert("values".into(), Value::Object(values));
        points.push(Value::Object(point));
    }
    page("data_points", points, None)
}

// ---------------------------------------------------------------- assessments

/// `POST /api/3.0/mlflow/traces/{trace_id}/assessments`.
pub async fn create_assessment(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    p: Params,
) -> JsonResult {
    let assessment = p
        .get("assessment")
        .ok_or_else(|| MlflowError::missing_param("assessment"))?;
    let fields = validate_new_assessment(assessment)?;
    let created = state.store.create_assessment(&trace_id, fields).await?;
    to_json(&json!({ "assessment": created }))
}

/// `GET /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`.
pub async fn get_assessment(
    State(state): State<AppState>,
    Path((trace_id, assessment_id)): Path<(String, String)>,
) -> JsonResult {
    let assessment = state
        .store
        .get_assessment(&trace_id, &assessment_id)
        .await?;
    to_json(&json!({ "assessment": assessment }))
}

/// `PATCH /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`: the fields the
/// `update_mask` names.
pub async fn update_assessment(
    State(state): State<AppState>,
    Path((trace_id, assessment_id)): Path<(String, String)>,
    p: Params,
) -> JsonResult {
    let update = p
        .get("assessment")
        .ok_or_else(|| MlflowError::missing_param("assessment"))?;
    let mask = p.req_str("update_mask")?;
    let updated = state
        .store
        .update_assessment(&trace_id, &assessment_id, update, &mask)
        .await?;
    to_json(&json!({ "assessment": updated }))
}

/// `DELETE /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`.
pub async fn delete_assessment(
    State(state): State<AppState>,
    Path((trace_id, assessment_id)): Path<(String, String)>,
) -> JsonResult {
    state
        .store
        .delete_assessment(&trace_id, &assessment_id)
        .await?;
    empty()
}

// ---------------------------------------------------------------- v2

/// `POST /api/2.0/mlflow/traces` (`StartTrace`, v2).
pub async fn start_trace_v2(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_id = parse_experiment_id(&p.req_str("experiment_id")?)?;
    let timestamp = p.i64("timestamp_ms")?.unwrap_or_else(ctflow_core::now_ms);
    let info = state
        .store
        .start_trace_v2(
            experiment_id,
            timestamp,
            &pairs(&p, "request_metadata")?,
            &pairs(&p, "tags")?,
        )
        .await?;
    to_json(&json!({ "trace_info": info.to_v2_json() }))
}

/// `PATCH /api/2.0/mlflow/traces/{request_id}` (`EndTrace`, v2).
pub async fn end_trace_v2(
    State(state): State<AppState>,
    Path(request_id): Path<String>,
    p: Params,
) -> JsonResult {
    let timestamp = p.i64("timestamp_ms")?.unwrap_or_else(ctflow_core::now_ms);
    let status = TraceState::parse(&p.str("status")?.unwrap_or_else(|| "OK".into()))?;
    let info = state
        .store
        .end_trace_v2(
            &request_id,
            timestamp,
            status,
            &pairs(&p, "request_metadata")?,
            &pairs(&p, "tags")?,
        )
        .await?;
    to_json(&json!({ "trace_info": info.to_v2_json() }))
}

/// `GET /api/2.0/mlflow/traces/{request_id}/info` (`GetTraceInfo`, v2).
pub async fn get_trace_info_v2(
    State(state): State<AppState>,
    Path(request_id): Path<String>,
) -> JsonResult {
    let info = state.store.get_trace_info(&request_id).await?;
    to_json(&json!({ "trace_info": info.to_v2_json() }))
}

/// `GET /api/2.0/mlflow/traces` (`SearchTraces`, v2).
pub async fn search_traces_v2(State(state): State<AppState>, p: Params) -> JsonResult {
    let search = search_request(p.experiment_ids("experiment_ids")?, &p, &state)?;
    let (infos, next) = state.store.search_traces(&search).await?;
    let infos: Vec<Value> = infos.iter().map(TraceInfo::to_v2_json).collect();
    page("traces", infos, next)
}

// ---------------------------------------------------------------- spans

/// `POST /v1/traces`: an OTLP trace export (protobuf, or JSON with a JSON content type;
/// gzip or deflate content encoding), to the experiment in `x-mlflow-experiment-id`.
pub async fn export_spans(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let experiment = headers
        .get(EXPERIMENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            MlflowError::invalid(format!(
                "An OTLP trace export needs the '{EXPERIMENT_ID_HEADER}' header naming its experiment"
            ))
        })?;
    let experiment_id = parse_experiment_id(experiment)?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = decompress(&body, &encoding, state.limits.max_request_body)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let spans = if is_json {
        otlp::decode_json(&body)?
    } else {
        otlp::decode_protobuf(&body)?
    };
    let records: Vec<SpanRecord> = spans.iter().map(SpanRecord::from_otlp).collect();
    state.store.log_spans(experiment_id, &records).await?;
    // An empty ExportTraceServiceResponse: full success.
    Ok(if is_json {
        ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Bytes::new(),
        )
            .into_response()
    })
}

fn decompress(body: &Bytes, encoding: &str, limit: usize) -> ApiResult<Vec<u8>> {
    use std::io::Read;
    let bad = |e: std::io::Error| MlflowError::invalid(format!("Cannot decompress the body: {e}"));
    let mut out = Vec::new();
    match encoding {
        "" | "identity" => return Ok(body.to_vec()),
        "gzip" => {
            flate2::read::GzDecoder::new(body.as_ref())
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(bad)?;
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(body.as_ref())
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(bad)?;
        }
        other => {
            return Err(MlflowError::invalid(format!(
                "Unsupported Content-Encoding '{other}': use gzip, deflate or none"
            ))
            .into());
        }
    }
    if out.len() > limit {
        return Err(MlflowError::new(
            ErrorCode::InvalidParameterValue,
            format!("The decompressed body is larger than the server's limit of {limit} bytes"),
        )
        .into());
    }
    Ok(out)
}

/// `GET /ajax-api/{2,3}.0/mlflow/get-trace-artifact?request_id=`: the trace's spans as
/// `traces.json` (MLflow's span dicts): from the database when they were logged there,
/// else the file the client uploaded to the trace's artifact location.
pub async fn get_trace_artifact(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let trace_id = p
        .str("request_id")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            MlflowError::new(
                ErrorCode::BadRequest,
                "Request must include the \"request_id\" query parameter.",
            )
        })?;
    let info = state.store.get_trace_info(&trace_id).await?;
    let spans = state
        .store
        .trace_spans(std::slice::from_ref(&trace_id))
        .await?
        .remove(&trace_id)
        .unwrap_or_default();
    let body = if spans.is_empty() {
        read_uploaded_spans(&state, &info).await?
    } else {
        let mut body = String::from("{\"spans\": [");
        body.push_str(&spans.join(", "));
        body.push_str("]}");
        body.into_bytes()
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=traces.json",
            ),
        ],
        body,
    )
        .into_response())
}

async fn read_uploaded_spans(state: &AppState, info: &TraceInfo) -> ApiResult<Vec<u8>> {
    let location = info
        .tags
        .get(ctflow_core::traces::ARTIFACT_LOCATION_TAG)
        .ok_or_else(|| {
            MlflowError::not_found(format!(
                "Trace data for trace '{}' not found.",
                info.trace_id
            ))
        })?;
    let (repository, path) =
        crate::artifacts::located(state, location, &["traces.json".to_string()])?;
    let mut content = repository.get(&path).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(content.len).unwrap_or(0));
    content.reader.read_to_end(&mut bytes).await.map_err(|e| {
        MlflowError::new(
            ErrorCode::InternalError,
            format!("Cannot read traces.json: {e}"),
        )
    })?;
    Ok(bytes)
}
