//! MLflow 3 traces: trace infos, spans as MLflow stores them, assessments, and the
//! statistics the trace APIs answer with. Wire formats follow MLflow 3.17's REST API
//! (`/api/3.0/mlflow/traces*`, the v2 `/api/2.0/mlflow/traces*` and OTLP `/v1/traces`).

pub mod otlp;
pub mod value;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::MlflowError;
use otlp::{IncomingSpan, StatusCode};
use value::AttrValue;

/// The prefix of MLflow trace ids made from an OpenTelemetry trace id.
pub const TRACE_ID_PREFIX: &str = "tr-";
/// Tag: where the trace's spans live (`TRACKING_STORE` once spans were logged here).
pub const SPANS_LOCATION_TAG: &str = "mlflow.trace.spansLocation";
/// The value of [`SPANS_LOCATION_TAG`] for spans in the database.
pub const SPANS_IN_TRACKING_STORE: &str = "TRACKING_STORE";
/// Tag: the trace's artifact directory (`traces.json` when spans are uploaded there).
pub const ARTIFACT_LOCATION_TAG: &str = "mlflow.artifactLocation";
/// Tag: the trace's name.
pub const TRACE_NAME_TAG: &str = "mlflow.traceName";
/// Metadata: set once a client reported the finished trace (`StartTraceV3`).
pub const INFO_FINALIZED_METADATA: &str = "mlflow.trace.infoFinalized";
/// Metadata: the run the trace was made in.
pub const SOURCE_RUN_METADATA: &str = "mlflow.sourceRun";
/// Metadata: `{"num_spans": n, ...}` as the client measured the trace.
pub const SIZE_STATS_METADATA: &str = "mlflow.trace.sizeStats";
/// Span attribute: the MLflow trace id (JSON text).
pub const REQUEST_ID_ATTRIBUTE: &str = "mlflow.traceRequestId";
/// Span attribute: the span's type (JSON text).
pub const SPAN_TYPE_ATTRIBUTE: &str = "mlflow.spanType";
/// Span attribute: the span's inputs (JSON text).
pub const SPAN_INPUTS_ATTRIBUTE: &str = "mlflow.spanInputs";
/// Span attribute: the span's outputs (JSON text).
pub const SPAN_OUTPUTS_ATTRIBUTE: &str = "mlflow.spanOutputs";
/// Root-span attributes with this prefix are trace tags.
pub const TRACE_TAG_ATTRIBUTE_PREFIX: &str = "mlflow.traceTag.";
/// How many characters of the root span's inputs and outputs a preview keeps.
pub const PREVIEW_LENGTH: usize = 1000;

/// A trace's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceState {
    /// Not set.
    Unspecified,
    /// Finished without error.
    Ok,
    /// Finished with an error.
    Error,
    /// Still running.
    InProgress,
}

impl TraceState {
    /// The v3 name (`OK`, `STATE_UNSPECIFIED`, ...), also what the database stores.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceState::Unspecified => "STATE_UNSPECIFIED",
            TraceState::Ok => "OK",
            TraceState::Error => "ERROR",
            TraceState::InProgress => "IN_PROGRESS",
        }
    }

    /// The v2 status name.
    pub fn v2_name(self) -> &'static str {
        match self {
            TraceState::Unspecified => "TRACE_STATUS_UNSPECIFIED",
            other => other.as_str(),
        }
    }

    /// Reads a v3 state or v2 status name.
    pub fn parse(name: &str) -> Result<TraceState, MlflowError> {
        match name {
            "OK" => Ok(TraceState::Ok),
            "ERROR" => Ok(TraceState::Error),
            "IN_PROGRESS" => Ok(TraceState::InProgress),
            "STATE_UNSPECIFIED" | "TRACE_STATUS_UNSPECIFIED" => Ok(TraceState::Unspecified),
            other => Err(MlflowError::invalid(format!(
                "Invalid trace state '{other}': expected one of OK, ERROR, IN_PROGRESS, STATE_UNSPECIFIED"
            ))),
        }
    }
}

/// A trace's record: what `GetTraceInfoV3` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceInfo {
    /// `tr-<32 hex>` for traces from OpenTelemetry ids; v2 traces have a bare uuid.
    pub trace_id: String,
    /// The experiment it belongs to.
    pub experiment_id: i64,
    /// When the request arrived, epoch ms.
    pub request_time: i64,
    /// How long it ran, ms (unknown while in progress).
    pub execution_duration: Option<i64>,
    /// Its state.
    pub state: TraceState,
    /// The caller's own id for the request.
    pub client_request_id: Option<String>,
    /// The start of the root span's inputs.
    pub request_preview: Option<String>,
    /// The start of the root span's outputs.
    pub response_preview: Option<String>,
    /// Metadata (immutable once written, except by the trace's own reports).
    pub metadata: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Assessments, as [`assessment_json`] writes them.
    pub assessments: Vec<Value>,
}

impl TraceInfo {
    /// The v3 JSON form.
    pub fn to_v3_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("trace_id".into(), json!(self.trace_id));
        if let Some(id) = &self.client_request_id {
            map.insert("client_request_id".into(), json!(id));
        }
        map.insert(
            "trace_location".into(),
            json!({"type": "MLFLOW_EXPERIMENT",
                   "mlflow_experiment": {"experiment_id": self.experiment_id.to_string()}}),
        );
        map.insert(
            "request_time".into(),
            json!(format_timestamp(self.request_time)),
        );
        if let Some(ms) = self.execution_duration {
            map.insert("execution_duration".into(), json!(format_duration(ms)));
        }
        map.insert("state".into(), json!(self.state.as_str()));
        if !self.metadata.is_empty() {
            map.insert("trace_metadata".into(), json!(self.metadata));
        }
        if !self.assessments.is_empty() {
            map.insert("assessments".into(), Value::Array(self.assessments.clone()));
        }
        if !self.tags.is_empty() {
            map.insert("tags".into(), json!(self.tags));
        }
        if let Some(p) = &self.request_preview {
            map.insert("request_preview".into(), json!(p));
        }
        if let Some(p) = &self.response_preview {
            map.insert("response_preview".into(), json!(p));
        }
        Value::Object(map)
    }

    /// The v2 JSON form (`request_id`, `timestamp_ms`, key/value lists).
    pub fn to_v2_json(&self) -> Value {
        let pairs = |m: &BTreeMap<String, String>| -> Vec<Value> {
            m.iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
        };
        let mut map = Map::new();
        map.insert("request_id".into(), json!(self.trace_id));
        map.insert(
            "experiment_id".into(),
            json!(self.experiment_id.to_string()),
        );
        map.insert("timestamp_ms".into(), json!(self.request_time));
        map.insert(
            "execution_time_ms".into(),
            json!(self.execution_duration.unwrap_or(0)),
        );
        map.insert("status".into(), json!(self.state.v2_name()));
        if !self.metadata.is_empty() {
            map.insert(
                "request_metadata".into(),
                Value::Array(pairs(&self.metadata)),
            );
        }
        if !self.tags.is_empty() {
            map.insert("tags".into(), Value::Array(pairs(&self.tags)));
        }
        Value::Object(map)
    }

    /// How many spans the client said the trace has (its size stats), if it said.
    pub fn expected_span_count(&self) -> Option<u64> {
        let stats: Value = serde_json::from_str(self.metadata.get(SIZE_STATS_METADATA)?).ok()?;
        stats.get("num_spans")?.as_u64()
    }
}

/// Epoch ms as a protobuf JSON timestamp (`2026-12-03T02:51:58.541Z`).
pub fn format_timestamp(ms: i64) -> String {
    let Some(time) = chrono::DateTime::from_timestamp_millis(ms) else {
        return "1970-01-01T00:00:00Z".into();
    };
    if ms.rem_euclid(1000) == 0 {
        time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// Reads a protobuf JSON timestamp (RFC 3339) to epoch ms.
pub fn parse_timestamp(text: &str, field: &str) -> Result<i64, MlflowError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            MlflowError::invalid(format!(
                "Invalid value '{text}' for {field}: expected an RFC 3339 timestamp"
            ))
        })
}

/// Milliseconds as a protobuf JSON duration (`0.050s`, `2s`).
pub fn format_duration(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    if abs.is_multiple_of(1000) {
        format!("{sign}{}s", abs / 1000)
    } else {
        format!("{sign}{}.{:03}s", abs / 1000, abs % 1000)
    }
}

/// Reads a protobuf JSON duration (`1.5s`) to milliseconds, rounding to the nearest.
pub fn parse_duration(text: &str, field: &str) -> Result<i64, MlflowError> {
    let bad = || {
        MlflowError::invalid(format!(
            "Invalid value '{text}' for {field}: expected a duration such as '1.5s'"
        ))
    };
    let seconds: f64 = text
        .strip_suffix('s')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if !seconds.is_finite() {
        return Err(bad());
    }
    Ok((seconds * 1000.0).round() as i64)
}

/// Checks a client-chosen trace id: it names a directory under the experiment's artifact
/// location, so it must be one plain path segment.
pub fn validate_trace_id(id: &str) -> Result<(), MlflowError> {
    let plain = !id.is_empty()
        && id.len() <= 256
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if plain {
        Ok(())
    } else {
        Err(MlflowError::invalid(format!(
            "Invalid trace id '{id}': letters, digits, '-', '_', '.' and ':' only"
        )))
    }
}

/// The MLflow trace id of an OpenTelemetry trace id.
pub fn trace_id_from_otel(trace_id: &[u8]) -> String {
    format!("{TRACE_ID_PREFIX}{}", hex::encode(trace_id))
}

/// One span as the store keeps it: indexed columns and MLflow's span dict (`content`),
/// which is what `traces.json` and the get-trace-artifact route hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The MLflow trace id.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's id, for all but the root span.
    pub parent_span_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// `mlflow.spanType`, decoded.
    pub span_type: Option<String>,
    /// The status code.
    pub status: StatusCode,
    /// Start, epoch ns.
    pub start_time_ns: i64,
    /// End, epoch ns (none while it runs).
    pub end_time_ns: Option<i64>,
    /// The span dict, as JSON text.
    pub content: String,
    /// Decoded root-span facts the trace's record takes over.
    pub inputs: Option<String>,
    /// The span's outputs (JSON text), for the response preview.
    pub outputs: Option<String>,
    /// `mlflow.traceTag.<key>` attributes (root spans only).
    pub trace_tags: Vec<(String, String)>,
}

fn attributes_map(attributes: &[(String, AttrValue)]) -> Map<String, Value> {
    attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect()
}

impl SpanRecord {
    /// The stored form of an OTLP span, as MLflow's server stores it: every attribute as
    /// the JSON text of its value, and `mlflow.traceRequestId` set from the OTLP trace id
    /// (a client cannot file a span under another trace).
    pub fn from_otlp(span: &IncomingSpan) -> SpanRecord {
        let trace_id = trace_id_from_otel(&span.trace_id);
        let mut attributes: Vec<(String, String)> = span
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.to_python_json()))
            .collect();
        let request_id = AttrValue::Str(trace_id.clone()).to_python_json();
        match attributes
            .iter_mut()
            .find(|(k, _)| k == REQUEST_ID_ATTRIBUTE)
        {
            Some(entry) => entry.1 = request_id,
            None => attributes.push((REQUEST_ID_ATTRIBUTE.to_string(), request_id)),
        }
        let decoded = |key: &str| -> Option<&AttrValue> {
            span.attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        };
        let span_type = match decoded(SPAN_TYPE_ATTRIBUTE) {
            Some(AttrValue::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let is_root = span.parent_span_id.is_empty();
        let trace_tags = if is_root {
            span.attributes
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix(TRACE_TAG_ATTRIBUTE_PREFIX)?;
                    let value = match v {
                        AttrValue::Str(s) => s.clone(),
                        other => other.to_python_json(),
                    };
                    Some((key.to_string(), value))
                })
                .collect()
        } else {
            Vec::new()
        };
        let stored = |key: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let message = if span.status == StatusCode::Error {
            span.status_message.clone()
        } else {
            String::new()
        };
        let parent =
            (!span.parent_span_id.is_empty()).then(|| STANDARD.encode(&span.parent_span_id));
        let content = json!({
            "trace_id": STANDARD.encode(&span.trace_id),
            "span_id": STANDARD.encode(&span.span_id),
            "parent_span_id": parent,
            "name": span.name,
            "start_time_unix_nano": span.start_time_unix_nano,
            "end_time_unix_nano": span.end_time_unix_nano,
            "events": span.events.iter().map(|e| json!({
                "name": e.name,
                "time_unix_nano": e.time_unix_nano,
                "attributes": attributes_map(&e.attributes),
            })).collect::<Vec<_>>(),
            "status": {"code": span.status.proto_name(), "message": message},
            "attributes": attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>(),
            "links": span.links.iter().map(|l| json!({
                "trace_id": trace_id_from_otel(&l.trace_id),
                "span_id": hex::encode(&l.span_id),
                "attributes": if l.attributes.is_empty() { Value::Null } else { Value::Object(attributes_map(&l.attributes)) },
            })).collect::<Vec<_>>(),
        });
        SpanRecord {
            trace_id,
            span_id: hex::encode(&span.span_id),
            parent_span_id: (!span.parent_span_id.is_empty())
                .then(|| hex::encode(&span.parent_span_id)),
            name: span.name.clone(),
            span_type,
            status: span.status,
            start_time_ns: i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX),
            end_time_ns: (span.end_time_unix_nano > 0)
                .then(|| i64::try_from(span.end_time_unix_nano).unwrap_or(i64::MAX)),
            content: content.to_string(),
            inputs: stored(SPAN_INPUTS_ATTRIBUTE),
            outputs: stored(SPAN_OUTPUTS_ATTRIBUTE),
            trace_tags,
        }
    }
}

fn key_values_proto(map: Option<&Value>, stored_as_json_text: bool) -> Vec<Value> {
    let Some(Value::Object(map)) = map else {
        return Vec::new();
    };
    map.iter()
        .map(|(k, v)| {
            let value = match (stored_as_json_text, v) {
                (true, Value::String(text)) => AttrValue::from_stored_json(text),
                _ => AttrValue::from_json(v),
            };
            json!({"key": k, "value": value.to_proto_json()})
        })
        .collect()
}

fn id_bytes_b64(hex_id: &str) -> Option<String> {
    let hex_id = hex_id.strip_prefix(TRACE_ID_PREFIX).unwrap_or(hex_id);
    hex::decode(hex_id).ok().map(|b| STANDARD.encode(b))
}

/// A stored span dict in the OpenTelemetry protobuf-JSON form `GetTrace` and
/// `BatchGetTraces` answer with (attributes decoded to typed `AnyValue`s).
pub fn span_proto_json(content: &str) -> Value {
    let Ok(span) = serde_json::from_str::<Value>(content) else {
        return json!({});
    };
    let mut map = Map::new();
    for key in ["trace_id", "span_id"] {
        if let Some(v) = span.get(key) {
            map.insert(key.into(), v.clone());
        }
    }
    if let Some(parent) = span.get("parent_span_id").filter(|v| !v.is_null()) {
        map.insert("parent_span_id".into(), parent.clone());
    }
    map.insert(
        "name".into(),
        span.get("name").cloned().unwrap_or(json!("")),
    );
    map.insert(
        "start_time_unix_nano".into(),
        span.get("start_time_unix_nano")
            .cloned()
            .unwrap_or(json!(0)),
    );
    if let Some(end) = span
        .get("end_time_unix_nano")
        .filter(|v| v.as_u64().is_some_and(|n| n > 0))
    {
        map.insert("end_time_unix_nano".into(), end.clone());
    }
    let attributes = key_values_proto(span.get("attributes"), true);
    if !attributes.is_empty() {
        map.insert("attributes".into(), Value::Array(attributes));
    }
    let events: Vec<Value> = span
        .get("events")
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let mut event = Map::new();
                    event.insert(
                        "time_unix_nano".into(),
                        e.get("time_unix_nano").cloned().unwrap_or(json!(0)),
                    );
                    event.insert("name".into(), e.get("name").cloned().unwrap_or(json!("")));
                    let attributes = key_values_proto(e.get("attributes"), false);
                    if !attributes.is_empty() {
                        event.insert("attributes".into(), Value::Array(attributes));
                    }
                    Value::Object(event)
                })
                .collect()
        })
        .unwrap_or_default();
    if !events.is_empty() {
        map.insert("events".into(), Value::Array(events));
    }
    let links: Vec<Value> = span
        .get("links")
        .and_then(Value::as_array)
        .map(|links| {
            links
                .iter()
                .filter_map(|l| {
                    let mut link = Map::new();
                    link.insert(
                        "trace_id".into(),
                        json!(id_bytes_b64(l.get("trace_id")?.as_str()?)?),
                    );
                    link.insert(
                        "span_id".into(),
                        json!(id_bytes_b64(l.get("span_id")?.as_str()?)?),
                    );
                    let attributes = key_values_proto(l.get("attributes"), false);
                    if !attributes.is_empty() {
                        link.insert("attributes".into(), Value::Array(attributes));
                    }
                    Some(Value::Object(link))
                })
                .collect()
        })
        .unwrap_or_default();
    if !links.is_empty() {
        map.insert("links".into(), Value::Array(links));
    }
    let mut status = Map::new();
    let code = span
        .pointer("/status/code")
        .and_then(Value::as_str)
        .map(StatusCode::from_proto_name)
        .unwrap_or(StatusCode::Unset);
    if code != StatusCode::Unset {
        status.insert("code".into(), json!(code.proto_name()));
    }
    if let Some(message) = span
        .pointer("/status/message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        status.insert("message".into(), json!(message));
    }
    map.insert("status".into(), Value::Object(status));
    Value::Object(map)
}

/// A preview of a root span's inputs or outputs (stored JSON text), cut to
/// [`PREVIEW_LENGTH`] characters as MLflow's previews are.
pub fn preview(json_text: &str) -> String {
    if json_text.chars().count() <= PREVIEW_LENGTH {
        return json_text.to_owned();
    }
    let cut: String = json_text.chars().take(PREVIEW_LENGTH - 3).collect();
    format!("{cut}...")
}

/// The trace state a root span's status implies: an error span is an `ERROR` trace, any
/// other finished root span an `OK` one (as MLflow decides it).
pub fn state_from_root_span(status: StatusCode) -> TraceState {
    match status {
        StatusCode::Error => TraceState::Error,
        _ => TraceState::Ok,
    }
}

// ---------------------------------------------------------------- assessments

/// The fields of an assessment a client may set (the rest the server owns).
const ASSESSMENT_FIELDS: &[&str] = &[
    "assessment_name",
    "source",
    "create_time",
    "last_update_time",
    "feedback",
    "expectation",
    "rationale",
    "metadata",
    "span_id",
    "overrides",
    "error",
];

/// An assessment as a client sent it, checked: a name, and exactly one of `feedback` or
/// `expectation`. Returns the client-settable fields.
pub fn validate_new_assessment(assessment: &Value) -> Result<Map<String, Value>, MlflowError> {
    let Value::Object(fields) = assessment else {
        return Err(MlflowError::invalid(
            "Invalid value for 'assessment': expected an object",
        ));
    };
    let name = fields
        .get("assessment_name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.trim().is_empty() {
        return Err(MlflowError::missing_param("assessment.assessment_name"));
    }
    match (fields.get("feedback"), fields.get("expectation")) {
        (Some(_), Some(_)) => {
            return Err(MlflowError::invalid(
                "An assessment is either feedback or an expectation, not both",
            ));
        }
        (None, None) => {
            return Err(MlflowError::invalid(
                "An assessment needs a 'feedback' or an 'expectation' value",
            ));
        }
        _ => {}
    }
    let mut kept: Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| ASSESSMENT_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(expectation) = kept.get_mut("expectation") {
        serialize_expectation(expectation);
    }
    Ok(kept)
}

/// An expectation whose value is a list or a map is stored as JSON text
/// (`serialized_value`), as MLflow stores it; plain values stay as they are.
fn serialize_expectation(expectation: &mut Value) {
    let Some(value) = expectation.get("value") else {
        return;
    };
    if value.is_object() || value.is_array() {
        let text = crate::pyjson::dumps(value);
        *expectation = json!({
            "serialized_value": {"serialization_format": "JSON_FORMAT", "value": text}
        });
    }
}

/// Applies an `UpdateAssessment` to the stored fields: each path of the update mask (in
/// protobuf's camelCase or snake_case) copies that field from `update`.
pub fn apply_assessment_update(
    stored: &mut Map<String, Value>,
    update: &Value,
    update_mask: &str,
) -> Result<(), MlflowError> {
    for path in update_mask
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let field = match path {
            "assessmentName" | "assessment_name" => "assessment_name",
            "feedback" => "feedback",
            "expectation" => "expectation",
            "rationale" => "rationale",
            "metadata" => "metadata",
            "valid" => "valid",
            other => {
                return Err(MlflowError::invalid(format!(
                    "Invalid update_mask path '{other}': an assessment's assessmentName, feedback, expectation, rationale, metadata or valid can be updated"
                )));
            }
        };
        let kind_clash = (field == "feedback" && stored.contains_key("expectation"))
            || (field == "expectation" && stored.contains_key("feedback"));
        if kind_clash {
            return Err(MlflowError::invalid(format!(
                "Cannot update the {field} of an assessment of the other kind"
            )));
        }
        match update.get(field) {
            Some(value) if !value.is_null() => {
                let mut value = value.clone();
                if field == "expectation" {
                    serialize_expectation(&mut value);
                }
                stored.insert(field.to_string(), value);
            }
            _ => {
                stored.remove(field);
            }
        }
    }
    if stored
        .get("assessment_name")
        .and_then(Value::as_str)
        .is_none_or(|n| n.trim().is_empty())
    {
        return Err(MlflowError::invalid("An assessment's name cannot be empty"));
    }
    Ok(())
}

/// An assessment's JSON form from its stored fields and the server-owned ones.
pub fn assessment_json(
    id: &str,
    trace_id: &str,
    valid: bool,
    create_time: i64,
    last_update_time: i64,
    fields: &Map<String, Value>,
) -> Value {
    let mut map = Map::new();
    map.insert("assessment_id".into(), json!(id));
    if let Some(name) = fields.get("assessment_name") {
        map.insert("assessment_name".into(), name.clone());
    }
    map.insert("trace_id".into(), json!(trace_id));
    for key in ["span_id", "source"] {
        if let Some(v) = fields.get(key) {
            map.insert(key.into(), v.clone());
        }
    }
    map.insert("create_time".into(), json!(format_timestamp(create_time)));
    map.insert(
        "last_update_time".into(),
        json!(format_timestamp(last_update_time)),
    );
    for key in [
        "feedback",
        "expectation",
        "rationale",
        "error",
        "metadata",
        "overrides",
    ] {
        if let Some(v) = fields.get(key) {
            map.insert(key.into(), v.clone());
        }
    }
    map.insert("valid".into(), json!(valid));
    Value::Object(map)
}

// ---------------------------------------------------------------- correlation

/// Normalized pointwise mutual information of two trace filters, as MLflow computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Npmi {
    /// Unsmoothed; -1 when both filters match but never together, NaN when undefined.
    pub npmi: f64,
    /// With Jeffreys-prior smoothing (0.5 added to each cell).
    pub smoothed: f64,
}

/// NPMI from the four counts (`joint` of `total` traces match both filters).
pub fn npmi(joint: u64, first: u64, second: u64, total: u64) -> Npmi {
    let undefined = Npmi {
        npmi: f64::NAN,
        smoothed: f64::NAN,
    };
    if total == 0 || first == 0 || second == 0 {
        return undefined;
    }
    let (j, a, b, n) = (joint as f64, first as f64, second as f64, total as f64);
    let (n11, n10, n01, n00) = (j, a - j, b - j, n - a - b + j);
    if n11 < 0.0 || n10 < 0.0 || n01 < 0.0 || n00 < 0.0 {
        return undefined;
    }
    let npmi = if joint == 0 {
        -1.0
    } else {
        npmi_core(n11, n10, n01, n00, 0.0)
    };
    Npmi {
        npmi,
        smoothed: npmi_core(n11, n10, n01, n00, 0.5),
    }
}

fn npmi_core(n11: f64, n10: f64, n01: f64, n00: f64, smoothing: f64) -> f64 {
    let (a, b, c, d) = (
        n11 + smoothing,
        n10 + smoothing,
        n01 + smoothing,
        n00 + smoothing,
    );
    let total = a + b + c + d;
    let (first, second) = (a + b, a + c);
    if first <= 0.0 || second <= 0.0 || a <= 0.0 {
        return f64::NAN;
    }
    if n10 == 0.0 && n01 == 0.0 && n00 == 0.0 {
        return 1.0;
    }
    let pmi = (a.ln() + total.ln()) - (first.ln() + second.ln());
    let denominator = -(a.ln() - total.ln());
    (pmi / denominator).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations_use_protobuf_json_forms() {
        assert_eq!(
            format_timestamp(1_796_266_318_541),
            "2026-12-03T02:51:58.541Z"
        );
        assert_eq!(format_timestamp(1000), "1970-01-01T00:00:01Z");
        assert_eq!(
            parse_timestamp("2026-12-03T02:51:58.541Z", "t").expect("valid"),
            1_796_266_318_541
        );
        assert_eq!(format_duration(50), "0.050s");
        assert_eq!(format_duration(2000), "2s");
        assert_eq!(parse_duration("0.049s", "d").expect("valid"), 49);
        assert_eq!(parse_duration("2s", "d").expect("valid"), 2000);
        assert!(parse_duration("2", "d").is_err());
    }

    #[test]
    fn npmi_matches_mlflows_numbers() {
        // The peer suite's case: 10 traces, 6 prod, 7 tool, 6 both.
        let r = npmi(6, 6, 7, 10);
        assert!(r.npmi > 0.6 && r.npmi < 0.8, "{}", r.npmi);
        assert!(npmi(3, 4, 3, 10).npmi > 0.5);
        assert!(npmi(0, 0, 7, 10).npmi.is_nan());
        assert_eq!(npmi(0, 3, 7, 10).npmi, -1.0);
        assert_eq!(npmi(4, 4, 4, 4).npmi, 1.0);
        // MLflow: filter1 1 of 3, filter2 3 of 3, joint 1 -> 0.0 and -0.0536...
        let r = npmi(1, 1, 3, 3);
        assert!(r.npmi.abs() < 1e-12);
        assert!((r.smoothed - -0.053_604_633_680_828_066).abs() < 1e-12);
    }

    #[test]
    fn trace_ids_are_single_path_segments() {
        assert!(validate_trace_id("tr-0123abcd").is_ok());
        for bad in ["", "..", "a/b", "tr 1", "x\\y"] {
            assert!(validate_trace_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn assessment_updates_follow_the_mask() {
        let mut stored = validate_new_assessment(&json!({
            "assessment_name": "q", "feedback": {"value": 1}, "rationale": "r", "bogus": 1
        }))
        .expect("valid");
        assert!(!stored.contains_key("bogus"));
        apply_assessment_update(
            &mut stored,
            &json!({"assessment_name": "q2", "feedback": {"value": 2}}),
            "assessmentName,feedback,rationale",
        )
        .expect("valid");
        assert_eq!(stored["assessment_name"], json!("q2"));
        assert_eq!(stored["feedback"], json!({"value": 2}));
        assert!(!stored.contains_key("rationale"));
        assert!(apply_assessment_update(&mut stored, &json!({}), "expectation").is_err());
        assert!(validate_new_assessment(&json!({"assessment_name": "x"})).is_err());
        let expectation = validate_new_assessment(&json!({
            "assessment_name": "e", "expectation": {"value": {"b": 1, "a": [true]}}
        }))
        .expect("valid");
        assert_eq!(
            expectation["expectation"],
            json!({"serialized_value": {"serialization_format": "JSON_FORMAT", "value": "{\"b\": 1, \"a\": [true]}"}})
        );
    }
}
