//! Request arguments the way MLflow's server reads them: a GET carries them in the query
//! string (form-encoded, repeated keys for lists), every other method in a JSON body.
//! Protobuf JSON rules apply: int64 may come as a number or a decimal string, doubles may
//! be the strings "NaN" / "Infinity" / "-Infinity", strings must be strings.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{Method, header};
use ctflow_core::entities::KeyValue;
use ctflow_core::{ErrorCode, MlflowError};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::limits::{Limits, read_body};

#[derive(Debug, Default, Clone)]
pub struct Params(pub Map<String, Value>);

fn bad_value(name: &str, value: &Value) -> MlflowError {
    MlflowError::invalid(format!(
        "Invalid value {value} for parameter '{name}' supplied. Hint: Value was of type '{}'.",
        match value {
            Value::String(_) => "str",
            Value::Number(_) => "number",
            Value::Bool(_) => "bool",
            Value::Array(_) => "list",
            Value::Object(_) => "dict",
            Value::Null => "null",
        }
    ))
}

/// A whole number written as a float (`1e3`, `5.0`) that int64 holds exactly; anything
/// else (a fraction, `1e30`, 2^63 and beyond) is refused, never clamped.
fn whole_f64_as_i64(value: Option<f64>) -> Option<i64> {
    // NB: -2^63 is exact as an f64; 2^63 is the first value past the range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    value
        .filter(|f| f.fract() == 0.0 && *f >= -LIMIT && *f < LIMIT)
        .map(|f| f as i64)
}

/// An int64 field's value that is not one. NB: MLflow's own server answers 200 here and
/// stores the metric as 0 at time 0 (protobuf's parse stops at the field); ctflow refuses.
fn int64_error(name: &str, value: &Value) -> MlflowError {
    let mut error = bad_value(name, value);
    error.message = format!(
        "{} It must be a whole number from -9223372036854775808 to 9223372036854775807 (int64).",
        error.message
    );
    error
}

/// Decodes a form-encoded query string: `+` is a space, repeated keys become lists.
pub fn parse_query(raw: &str) -> Map<String, Value> {
    let mut map = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let (k, v) = (decode(k), Value::String(decode(v)));
        match map.get_mut(&k) {
            Some(Value::Array(items)) => items.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                map.insert(k, v);
            }
        }
    }
    map
}

impl<S: Send + Sync> FromRequest<S> for Params
where
    Arc<Limits>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Ok(Params(parse_query(req.uri().query().unwrap_or(""))));
        }
        match json_body(req, state).await? {
            Some(bytes) => params_from_json(&bytes),
            None => Ok(Params::default()),
        }
    }
}

/// A POST-like request's JSON body, within the size limits; `None` when it is blank.
async fn json_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<Option<axum::body::Bytes>, ApiError>
where
    Arc<Limits>: FromRef<S>,
{
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let limits = Arc::<Limits>::from_ref(state);
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, &limits).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(ct) = content_type
        && !ct.starts_with("application/json")
    {
        return Err(ApiError::from(MlflowError::invalid(format!(
            "Bad Request. Content-Type must be 'application/json', got '{ct}'."
        ))));
    }
    Ok(Some(bytes))
}

fn params_from_json(bytes: &[u8]) -> Result<Params, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Params(map)),
        Ok(_) => Err(ApiError::from(MlflowError::new(
            ErrorCode::BadRequest,
            "The request body must be a JSON object.",
        ))),
        Err(e) => Err(ApiError::from(MlflowError::invalid(format!(
            "Malformed JSON in the request body: {e}"
        )))),
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// An optional string; a non-string value is an error.
    pub fn str(&self, name: &str) -> Result<Option<String>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(items)) if items.len() == 1 => match &items[0] {
                Value::String(s) => Ok(Some(s.clone())),
                other => Err(bad_value(name, other)),
            },
            Some(other) => Err(bad_value(name, other)),
        }
    }

    /// A required, non-empty string.
    pub fn req_str(&self, name: &str) -> Result<String, MlflowError> {
        self.str(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MlflowError::missing_param(name))
    }

    /// The run id, accepting MLflow's legacy `run_uuid` alias.
    pub fn run_id(&self) -> Result<String, MlflowError> {
        match self.str("run_id")?.filter(|s| !s.is_empty()) {
            Some(id) => Ok(id),
            None => self
                .str("run_uuid")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| MlflowError::missing_param("run_id")),
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => whole_f64_as_i64(n.as_f64())
                    .map(Some)
                    .ok_or_else(|| int64_error(name, &Value::Number(n.clone()))),
            },
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| int64_error(name, &Value::String(s.clone()))),
            Some(other) => Err(bad_value(name, other)),
        }
    }

    pub fn req_i64(&self, name: &str) -> Result<i64, MlflowError> {
        self.i64(name)?
            .ok_or_else(|| MlflowError::missing_param(name))
    }

    pub fn f64(&self, name: &str) -> Result<Option<f64>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_double(v).map(Some).ok_or_else(|| bad_value(name, v)),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(bad_value(name, other)),
        }
    }

    /// A repeated string field; a single string counts as a list of one.
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, MlflowError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad_value(name, other)),
                })
                .collect(),
            Some(other) => Err(bad_value(name, other)),
        }
    }

    /// A repeated experiment id field (`experiment_ids`), each parsed.
    pub fn experiment_ids(&self, name: &str) -> Result<Vec<i64>, MlflowError> {
        self.str_list(name)?
            .iter()
            .map(|id| ctflow_core::ids::parse_experiment_id(id))
            .collect()
    }

    /// A repeated message field, as a list of nested parameter maps.
    pub fn objects(&self, name: &str) -> Result<Vec<Params>, MlflowError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(Params(m.clone())),
                    other => Err(bad_value(name, other)),
                })
                .collect(),
            Some(other) => Err(bad_value(name, other)),
        }
    }

    /// `objects`, moving the list out of the request instead of copying it (a log-batch
    /// holds a thousand metrics).
    pub fn take_objects(&mut self, name: &str) -> Result<Vec<Params>, MlflowError> {
        match self.0.remove(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(Params(m)),
                    other => Err(bad_value(name, &other)),
                })
                .collect(),
            Some(other) => Err(bad_value(name, &other)),
        }
    }

    pub fn object(&self, name: &str) -> Result<Option<Params>, MlflowError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Params(m.clone()))),
            Some(other) => Err(bad_value(name, other)),
        }
    }

    /// `[{"key", "value"}]` lists (tags, params).
    pub fn key_values(&self, name: &str) -> Result<Vec<KeyValue>, MlflowError> {
        self.objects(name)?
            .into_iter()
            .map(|p| {
                Ok(KeyValue::new(
                    p.req_str("key")?,
                    p.str("value")?.unwrap_or_default(),
                ))
            })
            .collect()
    }
}

/// A double in protobuf JSON: a number, or a string naming one (including non-finite).
pub fn parse_double(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries_decode_plus_and_repeats() {
        let map = parse_query("filter=name%3D%27a+b%27&order_by=x&order_by=y&max_results=5");
        assert_eq!(map["filter"], json!("name='a b'"));
        assert_eq!(map["order_by"], json!(["x", "y"]));
        let p = Params(map);
        assert_eq!(p.i64("max_results").unwrap(), Some(5));
        assert_eq!(p.str_list("order_by").unwrap(), vec!["x", "y"]);
    }

    #[test]
    fn protobuf_json_numbers() {
        let p = Params(
            json!({"a": "12", "b": 7, "c": "NaN", "d": "-Infinity", "e": "abc", "f": 5})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(p.i64("a").unwrap(), Some(12));
        assert_eq!(p.f64("b").unwrap(), Some(7.0));
        assert!(p.f64("c").unwrap().unwrap().is_nan());
        assert_eq!(p.f64("d").unwrap(), Some(f64::NEG_INFINITY));
        assert!(p.f64("e").is_err());
        let err = p.str("f").unwrap_err();
        assert!(err.message.starts_with("Invalid value 5 for parameter 'f'"));
    }

    #[test]
    fn int64_values_out_of_range_are_refused_not_clamped() {
        let p = Params(
            serde_json::from_str(
                r#"{"big": 1e30, "two64": 18446744073709551616, "two63": 9223372036854775808,
                    "max": 9223372036854775807, "min": -9223372036854775808, "float_min": -9.223372036854775808e18,
                    "text": "9223372036854775808", "whole": 5.0, "half": 1.5, "low": -1e19}"#,
            )
            .unwrap(),
        );
        for name in ["big", "two64", "two63", "text", "half", "low"] {
            let error = p.i64(name).expect_err(name);
            assert_eq!(error.code, ErrorCode::InvalidParameterValue, "{name}");
            assert!(
                error.message.contains("(int64)"),
                "{name}: {}",
                error.message
            );
        }
        assert_eq!(p.i64("max").unwrap(), Some(i64::MAX));
        assert_eq!(p.i64("min").unwrap(), Some(i64::MIN));
        assert_eq!(p.i64("float_min").unwrap(), Some(i64::MIN));
        assert_eq!(p.i64("whole").unwrap(), Some(5));
    }

    #[test]
    fn run_id_accepts_the_legacy_alias() {
        let p = Params(json!({"run_uuid": "abc"}).as_object().unwrap().clone());
        assert_eq!(p.run_id().unwrap(), "abc");
        assert!(Params::default().run_id().is_err());
    }
}

/// A log-batch request, read the fast way when it can be: a well-formed body (plain JSON
/// numbers and strings, every required field there) is deserialised straight into its
/// typed form, without the generic JSON tree a thousand metrics cost. Anything else (a
/// protobuf-JSON string for a number, a missing field, a wrong type) goes the generic way,
/// which gives MLflow's exact errors and lenience.
pub enum LogBatchRequest {
    Typed(LogBatchParts),
    Generic(Params),
}

#[derive(serde::Deserialize)]
struct TypedLogBatch {
    run_id: Option<String>,
    run_uuid: Option<String>,
    metrics: Option<Vec<TypedMetric>>,
    params: Option<Vec<TypedKeyValue>>,
    tags: Option<Vec<TypedKeyValue>>,
}

#[derive(serde::Deserialize)]
struct TypedMetric {
    key: Option<String>,
    value: Option<f64>,
    timestamp: Option<i64>,
    step: Option<i64>,
    model_id: Option<String>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

#[derive(serde::Deserialize)]
struct TypedKeyValue {
    key: Option<String>,
    value: Option<String>,
}

/// What a log-batch asks for: run id, metrics, params and tags.
pub type LogBatchParts = (
    String,
    Vec<ctflow_store::BatchMetric>,
    Vec<KeyValue>,
    Vec<KeyValue>,
);

impl TypedLogBatch {
    /// The request's parts, or `None` when a required field is missing or empty (the
    /// generic way then words the error).
    fn into_parts(self) -> Option<LogBatchParts> {
        let run_id = [self.run_id, self.run_uuid]
            .into_iter()
            .flatten()
            .find(|id| !id.is_empty())?;
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let metrics = self
            .metrics
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                Some(ctflow_store::BatchMetric {
                    key: non_empty(m.key)?,
                    value: m.value?,
                    timestamp: m.timestamp?,
                    step: m.step.unwrap_or(0),
                    model_id: non_empty(m.model_id),
                    dataset_name: non_empty(m.dataset_name),
                    dataset_digest: non_empty(m.dataset_digest),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let key_values = |list: Option<Vec<TypedKeyValue>>| {
            list.unwrap_or_default()
                .into_iter()
                .map(|kv| {
                    Some(KeyValue::new(
                        non_empty(kv.key)?,
                        kv.value.unwrap_or_default(),
                    ))
                })
                .collect::<Option<Vec<_>>>()
        };
        Some((
            run_id,
            metrics,
            key_values(self.params)?,
            key_values(self.tags)?,
        ))
    }
}

impl<S: Send + Sync> FromRequest<S> for LogBatchRequest
where
    Arc<Limits>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Params::from_request(req, state)
                .await
                .map(LogBatchRequest::Generic);
        }
        let Some(bytes) = json_body(req, state).await? else {
            return Ok(LogBatchRequest::Generic(Params::default()));
        };
        match serde_json::from_slice::<TypedLogBatch>(&bytes)
            .ok()
            .and_then(TypedLogBatch::into_parts)
        {
            Some(parts) => Ok(LogBatchRequest::Typed(parts)),
            None => params_from_json(&bytes).map(LogBatchRequest::Generic),
        }
    }
}
