//! OTLP trace export requests (`POST /v1/traces`), in protobuf or JSON, decoded into
//! [`IncomingSpan`]s. Only the fields MLflow keeps are read; unknown fields are skipped.

use prost::Message;
use serde::Deserialize;
use serde_json::Value;

use super::value::AttrValue;
use crate::MlflowError;

// The OTLP messages (opentelemetry/proto/{collector/trace,trace,common}/v1), as far as
// MLflow reads them. Field numbers are OTLP's.

#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<ProtoSpan>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    events: Vec<ProtoEvent>,
    #[prost(message, repeated, tag = "13")]
    links: Vec<ProtoLink>,
    #[prost(message, optional, tag = "15")]
    status: Option<ProtoStatus>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoEvent {
    #[prost(fixed64, tag = "1")]
    time_unix_nano: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoLink {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoStatus {
    #[prost(string, tag = "2")]
    message: String,
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(oneof = "any_value::Kind", tags = "1, 2, 3, 4, 5, 6, 7")]
    kind: Option<any_value::Kind>,
}

mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(string, tag = "1")]
        Str(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(super::ArrayValue),
        #[prost(message, tag = "6")]
        Kvlist(super::KeyValueList),
        #[prost(bytes = "vec", tag = "7")]
        Bytes(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, Message)]
struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    values: Vec<KeyValue>,
}

/// A span's status code, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// 0.
    Unset,
    /// 1.
    Ok,
    /// 2.
    Error,
}

impl StatusCode {
    fn from_number(code: i64) -> StatusCode {
        match code {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// `STATUS_CODE_OK`, ... (the enum's protobuf name).
    pub fn proto_name(self) -> &'static str {
        match self {
            StatusCode::Unset => "STATUS_CODE_UNSET",
            StatusCode::Ok => "STATUS_CODE_OK",
            StatusCode::Error => "STATUS_CODE_ERROR",
        }
    }

    /// Reads a protobuf name back; anything else is unset.
    pub fn from_proto_name(name: &str) -> StatusCode {
        match name {
            "STATUS_CODE_OK" | "OK" => StatusCode::Ok,
            "STATUS_CODE_ERROR" | "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

/// A span event.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    /// The event's name.
    pub name: String,
    /// When, epoch ns.
    pub time_unix_nano: u64,
    /// Its attributes, in order.
    pub attributes: Vec<(String, AttrValue)>,
}

/// A link to another span.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingLink {
    /// The linked span's trace id (16 bytes).
    pub trace_id: Vec<u8>,
    /// The linked span's id (8 bytes).
    pub span_id: Vec<u8>,
    /// Its attributes.
    pub attributes: Vec<(String, AttrValue)>,
}

/// One span as an OTLP exporter sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingSpan {
    /// 16 bytes.
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    pub span_id: Vec<u8>,
    /// 8 bytes, or empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// The span's name.
    pub name: String,
    /// Start, epoch ns.
    pub start_time_unix_nano: u64,
    /// End, epoch ns (0 when it has not ended).
    pub end_time_unix_nano: u64,
    /// Attributes, in order.
    pub attributes: Vec<(String, AttrValue)>,
    /// Events.
    pub events: Vec<IncomingEvent>,
    /// Links.
    pub links: Vec<IncomingLink>,
    /// Status code.
    pub status: StatusCode,
    /// Status message.
    pub status_message: String,
}

fn bad(message: impl std::fmt::Display) -> MlflowError {
    MlflowError::invalid(format!("Invalid OTLP trace export request: {message}"))
}

fn any_value(value: Option<AnyValue>) -> AttrValue {
    use any_value::Kind;
    match value.and_then(|v| v.kind) {
        None => AttrValue::Null,
        Some(Kind::Str(s)) => AttrValue::Str(s),
        Some(Kind::Bool(b)) => AttrValue::Bool(b),
        Some(Kind::Int(i)) => AttrValue::Int(i),
        Some(Kind::Double(f)) => AttrValue::Double(f),
        Some(Kind::Bytes(b)) => AttrValue::Bytes(b),
        Some(Kind::Array(a)) => {
            AttrValue::Array(a.values.into_iter().map(|v| any_value(Some(v))).collect())
        }
        Some(Kind::Kvlist(kv)) => AttrValue::Map(key_values(kv.values)),
    }
}

fn key_values(values: Vec<KeyValue>) -> Vec<(String, AttrValue)> {
    values
        .into_iter()
        .map(|kv| (kv.key, any_value(kv.value)))
        .collect()
}

/// Decodes a protobuf `ExportTraceServiceRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<IncomingSpan>, MlflowError> {
    let request = ExportTraceServiceRequest::decode(body).map_err(bad)?;
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let status = span.status.unwrap_or_default();
                spans.push(IncomingSpan {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    name: span.name,
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    attributes: key_values(span.attributes),
                    events: span
                        .events
                        .into_iter()
                        .map(|e| IncomingEvent {
                            name: e.name,
                            time_unix_nano: e.time_unix_nano,
                            attributes: key_values(e.attributes),
                        })
                        .collect(),
                    links: span
                        .links
                        .into_iter()
                        .map(|l| IncomingLink {
                            trace_id: l.trace_id,
                            span_id: l.span_id,
                            attributes: key_values(l.attributes),
                        })
                        .collect(),
                    status: StatusCode::from_number(i64::from(status.code)),
                    status_message: status.message,
                });
            }
        }
    }
    check(spans)
}

// OTLP/JSON: lowerCamelCase names (snake_case accepted, as protobuf JSON parsers do), ids
// in hex, 64-bit integers as strings or numbers, enums as numbers or names.

#[derive(Deserialize)]
struct JsonRequest {
    #[serde(default, alias = "resource_spans", rename = "resourceSpans")]
    resource_spans: Vec<JsonResourceSpans>,
}

#[derive(Deserialize)]
struct JsonResourceSpans {
    #[serde(default, alias = "scope_spans", rename = "scopeSpans")]
    scope_spans: Vec<JsonScopeSpans>,
}

#[derive(Deserialize)]
struct JsonScopeSpans {
    #[serde(default)]
    spans: Vec<JsonSpan>,
}

#[derive(Deserialize)]
struct JsonSpan {
    #[serde(default, alias = "trace_id", rename = "traceId")]
    trace_id: String,
    #[serde(default, alias = "span_id", rename = "spanId")]
    span_id: String,
    #[serde(default, alias = "parent_span_id", rename = "parentSpanId")]
    parent_span_id: String,
    #[serde(default)]
    name: String,
    #[serde(default, alias = "start_time_unix_nano", rename = "startTimeUnixNano")]
    start_time_unix_nano: Value,
    #[serde(default, alias = "end_time_unix_nano", rename = "endTimeUnixNano")]
    end_time_unix_nano: Value,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default)]
    events: Vec<JsonEvent>,
    #[serde(default)]
    links: Vec<JsonLink>,
    #[serde(default)]
    status: Option<JsonStatus>,
}

#[derive(Deserialize)]
struct JsonEvent {
    #[serde(default, alias = "time_unix_nano", rename = "timeUnixNano")]
    time_unix_nano: Value,
    #[serde(default)]
    name: String,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
}

#[derive(Deserialize)]
struct JsonLink {
    #[serde(default, alias = "trace_id", rename = "traceId")]
    trace_id: String,
    #[serde(default, alias = "span_id", rename = "spanId")]
    span_id: String,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
}

#[derive(Deserialize)]
struct JsonStatus {
    #[serde(default)]
    code: Value,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct JsonKeyValue {
    key: String,
    #[serde(default)]
    value: Value,
}

fn json_u64(value: &Value, field: &str) -> Result<u64, MlflowError> {
    match value {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| bad(format!("{field} must be a non-negative integer"))),
        Value::String(s) => s
            .parse()
            .map_err(|_| bad(format!("{field} must be a non-negative integer"))),
        _ => Err(bad(format!("{field} must be a non-negative integer"))),
    }
}

fn json_id(hex_id: &str, field: &str) -> Result<Vec<u8>, MlflowError> {
    hex::decode(hex_id).map_err(|_| bad(format!("{field} must be hex")))
}

fn json_any_value(value: &Value) -> Result<AttrValue, MlflowError> {
    let Value::Object(map) = value else {
        return Ok(AttrValue::Null);
    };
    let Some((kind, inner)) = map.iter().next() else {
        return Ok(AttrValue::Null);
    };
    Ok(match kind.as_str() {
        "stringValue" | "string_value" => AttrValue::Str(inner.as_str().unwrap_or("").into()),
        "boolValue" | "bool_value" => AttrValue::Bool(inner.as_bool().unwrap_or(false)),
        "intValue" | "int_value" => AttrValue::Int(match inner {
            Value::String(s) => s.parse().map_err(|_| bad("intValue must be an integer"))?,
            other => other
                .as_i64()
                .ok_or_else(|| bad("intValue must be an integer"))?,
        }),
        "doubleValue" | "double_value" => AttrValue::Double(match inner {
            Value::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .map_err(|_| bad("doubleValue must be a number"))?,
            },
            other => other
                .as_f64()
                .ok_or_else(|| bad("doubleValue must be a number"))?,
        }),
        "bytesValue" | "bytes_value" => {
            use base64::Engine;
            AttrValue::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(inner.as_str().unwrap_or(""))
                    .map_err(|_| bad("bytesValue must be base64"))?,
            )
        }
        "arrayValue" | "array_value" => AttrValue::Array(
            inner
                .get("values")
                .and_then(Value::as_array)
                .map(|values| values.iter().map(json_any_value).collect())
                .transpose()?
                .unwrap_or_default(),
        ),
        "kvlistValue" | "kvlist_value" => {
            let values: Vec<JsonKeyValue> = match inner.get("values") {
                Some(values) => serde_json::from_value(values.clone()).map_err(bad)?,
                None => Vec::new(),
            };
            AttrValue::Map(json_key_values(&values)?)
        }
        other => return Err(bad(format!("unknown AnyValue kind '{other}'"))),
    })
}

fn json_key_values(values: &[JsonKeyValue]) -> Result<Vec<(String, AttrValue)>, MlflowError> {
    values
        .iter()
        .map(|kv| Ok((kv.key.clone(), json_any_value(&kv.value)?)))
        .collect()
}

fn json_status_code(code: &Value) -> StatusCode {
    match code {
        Value::Number(n) => StatusCode::from_number(n.as_i64().unwrap_or(0)),
        Value::String(s) => StatusCode::from_proto_name(s),
        _ => StatusCode::Unset,
    }
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_json(body: &[u8]) -> Result<Vec<IncomingSpan>, MlflowError> {
    let request: JsonRequest = serde_json::from_slice(body).map_err(bad)?;
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let (status, status_message) = match &span.status {
                    Some(s) => (json_status_code(&s.code), s.message.clone()),
                    None => (StatusCode::Unset, String::new()),
                };
                let mut events = Vec::with_capacity(span.events.len());
                for e in &span.events {
                    events.push(IncomingEvent {
                        name: e.name.clone(),
                        time_unix_nano: json_u64(&e.time_unix_nano, "timeUnixNano")?,
                        attributes: json_key_values(&e.attributes)?,
                    });
                }
                let mut links = Vec::with_capacity(span.links.len());
                for l in &span.links {
                    links.push(IncomingLink {
                        trace_id: json_id(&l.trace_id, "links.traceId")?,
                        span_id: json_id(&l.span_id, "links.spanId")?,
                        attributes: json_key_values(&l.attributes)?,
                    });
                }
                spans.push(IncomingSpan {
                    trace_id: json_id(&span.trace_id, "traceId")?,
                    span_id: json_id(&span.span_id, "spanId")?,
                    parent_span_id: json_id(&span.parent_span_id, "parentSpanId")?,
                    name: span.name,
                    start_time_unix_nano: json_u64(
                        &span.start_time_unix_nano,
                        "startTimeUnixNano",
                    )?,
                    end_time_unix_nano: json_u64(&span.end_time_unix_nano, "endTimeUnixNano")?,
                    attributes: json_key_values(&span.attributes)?,
                    events,
                    links,
                    status,
                    status_message,
                });
            }
        }
    }
    check(spans)
}

fn check(spans: Vec<IncomingSpan>) -> Result<Vec<IncomingSpan>, MlflowError> {
    for span in &spans {
        if span.trace_id.len() != 16 {
            return Err(bad(format!(
                "span '{}': trace_id must be 16 bytes, got {}",
                span.name,
                span.trace_id.len()
            )));
        }
        if span.span_id.len() != 8 {
            return Err(bad(format!(
                "span '{}': span_id must be 8 bytes, got {}",
                span.name,
                span.span_id.len()
            )));
        }
        if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
            return Err(bad(format!(
                "span '{}': parent_span_id must be 8 bytes",
                span.name
            )));
        }
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![ProtoSpan {
                        trace_id: vec![0xab; 16],
                        span_id: vec![1; 8],
                        parent_span_id: Vec::new(),
                        name: "root".into(),
                        start_time_unix_nano: 1_000_000_000,
                        end_time_unix_nano: 2_000_000_000,
                        attributes: vec![KeyValue {
                            key: "n".into(),
                            value: Some(AnyValue {
                                kind: Some(any_value::Kind::Int(7)),
                            }),
                        }],
                        events: Vec::new(),
                        links: Vec::new(),
                        status: Some(ProtoStatus {
                            message: String::new(),
                            code: 1,
                        }),
                    }],
                }],
            }],
        }
    }

    #[test]
    fn protobuf_and_json_forms_decode_to_the_same_span() {
        let from_proto = decode_protobuf(&sample().encode_to_vec()).expect("protobuf");
        let json = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "ab".repeat(16), "spanId": "0101010101010101", "name": "root",
            "startTimeUnixNano": "1000000000", "endTimeUnixNano": 2000000000u64,
            "attributes": [{"key": "n", "value": {"intValue": "7"}}],
            "status": {"code": 1}
        }]}]}]});
        let from_json = decode_json(json.to_string().as_bytes()).expect("json");
        assert_eq!(from_proto, from_json);
        assert_eq!(
            from_proto[0].attributes,
            vec![("n".into(), AttrValue::Int(7))]
        );
        assert_eq!(from_proto[0].status, StatusCode::Ok);
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(decode_protobuf(&[0xff, 0xff, 0xff]).is_err());
        let mut short = sample();
        short.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 3];
        assert!(decode_protobuf(&short.encode_to_vec()).is_err());
        assert!(decode_json(b"{\"resourceSpans\": 3}").is_err());
    }
}
