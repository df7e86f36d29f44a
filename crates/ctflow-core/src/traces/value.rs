//! Span attribute values: OpenTelemetry's `AnyValue`, the JSON text MLflow stores for each
//! attribute (Python's `json.dumps` of the decoded value), and the protobuf-JSON form
//! `GetTrace` answers with.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Number, Value};

/// One decoded `AnyValue`. Maps keep their order: MLflow's clients compare the stored
/// JSON text of an attribute with the one they dumped themselves.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// An unset value.
    Null,
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `string_value`.
    Str(String),
    /// `bytes_value`.
    Bytes(Vec<u8>),
    /// `array_value`.
    Array(Vec<AttrValue>),
    /// `kvlist_value`, in order.
    Map(Vec<(String, AttrValue)>),
}

impl AttrValue {
    /// The value as Python's `json.dumps(value, ensure_ascii=False)` writes it, which is
    /// how MLflow stores every span attribute.
    pub fn to_python_json(&self) -> String {
        let mut out = String::new();
        self.write_python_json(&mut out);
        out
    }

    fn write_python_json(&self, out: &mut String) {
        match self {
            AttrValue::Null => out.push_str("null"),
            AttrValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            AttrValue::Int(i) => out.push_str(&i.to_string()),
            AttrValue::Double(f) => out.push_str(&crate::pyjson::python_float(*f)),
            AttrValue::Str(s) => push_json_string(out, s),
            AttrValue::Bytes(b) => push_json_string(out, &STANDARD.encode(b)),
            AttrValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_python_json(out);
                }
                out.push(']');
            }
            AttrValue::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    push_json_string(out, key);
                    out.push_str(": ");
                    value.write_python_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Reads back a stored attribute's JSON text (Python's dialect: `NaN`, `Infinity`
    /// allowed at the top). Text that is not JSON is a string, as MLflow reads it.
    pub fn from_stored_json(text: &str) -> AttrValue {
        match text {
            "NaN" => return AttrValue::Double(f64::NAN),
            "Infinity" => return AttrValue::Double(f64::INFINITY),
            "-Infinity" => return AttrValue::Double(f64::NEG_INFINITY),
            _ => {}
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => AttrValue::from_json(&value),
            Err(_) => AttrValue::Str(text.to_owned()),
        }
    }

    /// A plain JSON value as an attribute value.
    pub fn from_json(value: &Value) -> AttrValue {
        match value {
            Value::Null => AttrValue::Null,
            Value::Bool(b) => AttrValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Int(i),
                None => AttrValue::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => AttrValue::Str(s.clone()),
            Value::Array(items) => {
                AttrValue::Array(items.iter().map(AttrValue::from_json).collect())
            }
            Value::Object(map) => AttrValue::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), AttrValue::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The value as plain JSON (what an event attribute holds in MLflow's span dict).
    /// JSON has no NaN or infinities: those become Python's names for them, as strings.
    pub fn to_json(&self) -> Value {
        match self {
            AttrValue::Null => Value::Null,
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Int(i) => Value::from(*i),
            AttrValue::Double(f) => float_json(*f),
            AttrValue::Str(s) => Value::String(s.clone()),
            AttrValue::Bytes(b) => Value::String(STANDARD.encode(b)),
            AttrValue::Array(items) => Value::Array(items.iter().map(AttrValue::to_json).collect()),
            AttrValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The protobuf-JSON form of the `AnyValue` (`{"string_value": ...}`, ...), with
    /// int64 as a number, as MLflow's `GetTrace` writes it.
    pub fn to_proto_json(&self) -> Value {
        let mut map = Map::new();
        match self {
            AttrValue::Null => {}
            AttrValue::Bool(b) => {
                map.insert("bool_value".into(), Value::Bool(*b));
            }
            AttrValue::Int(i) => {
                map.insert("int_value".into(), Value::from(*i));
            }
            AttrValue::Double(f) => {
                map.insert("double_value".into(), float_json(*f));
            }
            AttrValue::Str(s) => {
                map.insert("string_value".into(), Value::String(s.clone()));
            }
            AttrValue::Bytes(b) => {
                map.insert("bytes_value".into(), Value::String(STANDARD.encode(b)));
            }
            AttrValue::Array(items) => {
                let values: Vec<Value> = items.iter().map(AttrValue::to_proto_json).collect();
                map.insert(
                    "array_value".into(),
                    serde_json::json!({ "values": values }),
                );
            }
            AttrValue::Map(entries) => {
                let values: Vec<Value> = entries
                    .iter()
                    .map(|(k, v)| serde_json::json!({ "key": k, "value": v.to_proto_json() }))
                    .collect();
                map.insert(
                    "kvlist_value".into(),
                    serde_json::json!({ "values": values }),
                );
            }
        }
        Value::Object(map)
    }
}

/// A float as JSON: a number when finite, else `"NaN"`, `"Infinity"` or `"-Infinity"` (the
/// strings protobuf's JSON mapping uses).
pub fn float_json(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly what Python's json.dumps(ensure_ascii=False) escapes.
    match serde_json::to_string(s) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_dump_in_order_with_python_separators() {
        let value = AttrValue::Map(vec![
            ("b".into(), AttrValue::Int(2)),
            (
                "a".into(),
                AttrValue::Array(vec![AttrValue::Double(1.0), AttrValue::Null]),
            ),
            ("s".into(), AttrValue::Str("é\"\n".into())),
        ]);
        assert_eq!(
            value.to_python_json(),
            r#"{"b": 2, "a": [1.0, null], "s": "é\"\n"}"#
        );
        assert_eq!(AttrValue::from_stored_json(&value.to_python_json()), value);
    }

    #[test]
    fn stored_text_that_is_not_json_is_a_string() {
        assert_eq!(
            AttrValue::from_stored_json("plain"),
            AttrValue::Str("plain".into())
        );
        assert!(matches!(AttrValue::from_stored_json("NaN"), AttrValue::Double(f) if f.is_nan()));
    }

    #[test]
    fn proto_json_names_each_kind() {
        let value = AttrValue::Map(vec![("x".into(), AttrValue::Int(1))]);
        assert_eq!(
            value.to_proto_json(),
            serde_json::json!({"kvlist_value": {"values": [{"key": "x", "value": {"int_value": 1}}]}})
        );
        assert_eq!(
            AttrValue::Double(f64::NAN).to_proto_json(),
            serde_json::json!({"double_value": "NaN"})
        );
    }
}
