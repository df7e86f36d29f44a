//! The inference log's rows: what one scored request becomes (one row per scored input
//! row, with the request's id, time, model version, latency and that row's prediction),
//! and the layout of a log file. The serving crate writes them as Parquet; readers (the
//! drift watcher, feedback joins) find the columns by these names.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::scoring::Payload;

/// The request id column (also the `x-request-id` response header).
pub const REQUEST_ID: &str = "ctflow_request_id";
/// When the request arrived, epoch ms (a UTC timestamp column).
pub const TIMESTAMP: &str = "ctflow_timestamp";
/// The registered model's name.
pub const MODEL: &str = "ctflow_model";
/// The registered model version that answered (empty when not served from the registry).
pub const VERSION: &str = "ctflow_version";
/// The request's time from arrival to answer, in milliseconds.
pub const LATENCY_MS: &str = "ctflow_latency_ms";
/// The row's prediction: a number, a string or a bool as itself, anything else as JSON.
pub const PREDICTION: &str = "ctflow_prediction";
/// The column holding a whole input row when the model takes a tensor, as JSON.
pub const TENSOR_INPUT: &str = "input";

/// Every column the log adds beside the model's inputs.
pub const LOG_COLUMNS: [&str; 6] = [
    REQUEST_ID, TIMESTAMP, MODEL, VERSION, LATENCY_MS, PREDICTION,
];

/// The header a client may send its own request id in, and the server answers with.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Whether a client-sent request id is usable: 1 to 128 visible ASCII characters.
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks where an inference log goes: a folder (anything without a scheme), or an
/// object-store prefix `s3://bucket/prefix` without wildcards.
pub fn check_log_destination(destination: &str) -> Result<(), String> {
    if !destination.contains("://") {
        return Ok(());
    }
    let bucket = destination
        .strip_prefix("s3://")
        .map(|rest| rest.split('/').next().unwrap_or(""));
    if bucket.is_none_or(str::is_empty) || destination.contains(['*', '?', '[']) {
        return Err(format!(
            "'{destination}' is neither a folder nor an object-store prefix (s3://bucket/prefix)"
        ));
    }
    Ok(())
}

/// How a log column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnKind {
    /// 64-bit floats.
    Double,
    /// 64-bit integers.
    Long,
    /// Booleans.
    Bool,
    /// UTF-8 text (and anything else, as JSON).
    Text,
}

impl ColumnKind {
    /// The kind for a pandas dtype the signature enforced; `None` for one that says
    /// nothing (`object`).
    pub fn of_dtype(dtype: &str) -> Option<ColumnKind> {
        let dtype = dtype.to_ascii_lowercase();
        if dtype.starts_with("float") {
            Some(ColumnKind::Double)
        } else if dtype.starts_with("int") || dtype.starts_with("uint") {
            Some(ColumnKind::Long)
        } else if dtype == "bool" || dtype == "boolean" {
            Some(ColumnKind::Bool)
        } else if dtype == "str" || dtype == "string" || dtype.starts_with("datetime") {
            Some(ColumnKind::Text)
        } else {
            None
        }
    }

    /// The narrowest kind holding every value (nulls fit anything).
    pub fn of_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> ColumnKind {
        let mut kind: Option<ColumnKind> = None;
        for value in values {
            let this = match value {
                Value::Null => continue,
                Value::Bool(_) => ColumnKind::Bool,
                Value::Number(n) if n.is_i64() || n.is_u64() => ColumnKind::Long,
                Value::Number(_) => ColumnKind::Double,
                _ => ColumnKind::Text,
            };
            kind = Some(match (kind, this) {
                (None, this) => this,
                (Some(a), b) if a == b => a,
                (Some(ColumnKind::Long), ColumnKind::Double)
                | (Some(ColumnKind::Double), ColumnKind::Long) => ColumnKind::Double,
                _ => ColumnKind::Text,
            });
        }
        kind.unwrap_or(ColumnKind::Text)
    }
}

/// A file's layout: the input columns and the prediction's kind. A request with another
/// layout starts a new file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogLayout {
    /// The model's input columns, in request order.
    pub inputs: Vec<(String, ColumnKind)>,
    /// How the predictions are stored.
    pub prediction: ColumnKind,
}

/// One scored request, ready for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredRequest {
    /// The request's id (the client's, or one the server made).
    pub request_id: String,
    /// When it arrived, epoch ms.
    pub timestamp_ms: i64,
    /// The registered model's name.
    pub model: String,
    /// The version that answered, when served from the registry.
    pub version: Option<String>,
    /// Arrival to answer, ms.
    pub latency_ms: f64,
    /// The columns its rows fill.
    pub layout: LogLayout,
    /// The input rows, each as long as `layout.inputs`.
    pub rows: Vec<Vec<Value>>,
    /// One prediction per row.
    pub predictions: Vec<Value>,
}

impl ScoredRequest {
    /// The request's log rows from what the model was given and what it answered.
    pub fn new(
        request_id: String,
        timestamp_ms: i64,
        model: String,
        version: Option<String>,
        latency_ms: f64,
        payload: Payload,
        predictions: &Value,
    ) -> ScoredRequest {
        let (inputs, rows) = match payload {
            Payload::Frame {
                columns,
                rows,
                dtypes,
            } => {
                let inputs = columns
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let kind = dtypes
                            .get(name)
                            .and_then(|d| ColumnKind::of_dtype(d))
                            .unwrap_or_else(|| {
                                ColumnKind::of_values(rows.iter().filter_map(|r| r.get(i)))
                            });
                        (name.clone(), kind)
                    })
                    .collect();
                (inputs, rows)
            }
            Payload::Array { data, .. } => {
                let rows = match data {
                    Value::Array(items) => items
                        .into_iter()
                        .map(|item| vec![Value::String(item.to_string())])
                        .collect(),
                    other => vec![vec![Value::String(other.to_string())]],
                };
                (vec![(TENSOR_INPUT.to_string(), ColumnKind::Text)], rows)
            }
        };
        let predictions = predictions_per_row(predictions, rows.len());
        let prediction = ColumnKind::of_values(&predictions);
        ScoredRequest {
            request_id,
            timestamp_ms,
            model,
            version,
            latency_ms,
            layout: LogLayout { inputs, prediction },
            rows,
            predictions,
        }
    }
}

/// Splits a model's answer into one prediction per input row: a list as long as the rows
/// is one per row, a dict of such lists (several outputs) is a dict per row, and any other
/// answer (a model that returns one value for the whole request) is logged on every row.
pub fn predictions_per_row(predictions: &Value, rows: usize) -> Vec<Value> {
    match predictions {
        Value::Array(items) if items.len() == rows => items.clone(),
        Value::Object(outputs)
            if !outputs.is_empty()
                && outputs
                    .values()
                    .all(|v| v.as_array().is_some_and(|a| a.len() == rows)) =>
        {
            (0..rows)
                .map(|i| {
                    let row: BTreeMap<&String, &Value> = outputs
                        .iter()
                        .filter_map(|(name, values)| Some((name, values.as_array()?.get(i)?)))
                        .collect();
                    serde_json::to_value(row).unwrap_or(Value::Null)
                })
                .collect()
        }
        other => vec![other.clone(); rows],
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn frame(columns: &[&str], rows: Vec<Vec<Value>>, dtypes: &[(&str, &str)]) -> Payload {
        Payload::Frame {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            dtypes: dtypes
                .iter()
                .map(|(c, d)| (c.to_string(), d.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_frame_request_becomes_one_row_per_input_row() {
        let payload = frame(
            &["x", "kind", "n"],
            vec![
                vec![json!(1.5), json!("a"), json!(3)],
                vec![json!(2), json!("b"), json!(null)],
            ],
            &[("x", "float64"), ("kind", "object")],
        );
        let scored = ScoredRequest::new(
            "r1".into(),
            10,
            "iris".into(),
            Some("3".into()),
            1.25,
            payload,
            &json!([0, 1]),
        );
        assert_eq!(
            scored.layout.inputs,
            vec![
                ("x".to_string(), ColumnKind::Double),
                ("kind".to_string(), ColumnKind::Text),
                ("n".to_string(), ColumnKind::Long),
            ]
        );
        assert_eq!(scored.layout.prediction, ColumnKind::Long);
        assert_eq!(scored.rows.len(), 2);
        assert_eq!(scored.predictions, vec![json!(0), json!(1)]);
    }

    #[test]
    fn tensors_are_logged_as_json_rows() {
        let payload = Payload::Array {
            data: json!([[1, 2], [3, 4]]),
            dtype: Some("float32".into()),
        };
        let scored = ScoredRequest::new(
            "r".into(),
            0,
            "m".into(),
            None,
            0.0,
            payload,
            &json!([[0.1, 0.9], [0.8, 0.2]]),
        );
        assert_eq!(
            scored.layout.inputs,
            vec![(TENSOR_INPUT.to_string(), ColumnKind::Text)]
        );
        assert_eq!(
            scored.rows,
            vec![vec![json!("[1,2]")], vec![json!("[3,4]")]]
        );
        assert_eq!(scored.layout.prediction, ColumnKind::Text);
    }

    #[test]
    fn several_outputs_split_into_a_dict_per_row() {
        let split = predictions_per_row(&json!({"label": [0, 1], "score": [0.2, 0.9]}), 2);
        assert_eq!(
            split,
            vec![
                json!({"label": 0, "score": 0.2}),
                json!({"label": 1, "score": 0.9})
            ]
        );
        assert_eq!(predictions_per_row(&json!("one"), 3), vec![json!("one"); 3]);
    }

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(valid_request_id("abc-123_X.y"));
        for bad in ["", "a b", "é", "tab\there", &"x".repeat(129)] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn every_row_gets_exactly_one_prediction(rows in 0usize..20, answer in 0usize..25) {
            let predictions = Value::Array((0..answer).map(|i| json!(i)).collect());
            let split = predictions_per_row(&predictions, rows);
            prop_assert_eq!(split.len(), rows);
            if answer == rows {
                prop_assert_eq!(Value::Array(split), predictions);
            }
        }

        #[test]
        fn a_kind_holds_all_its_values(values in proptest::collection::vec(
            prop_oneof![
                Just(json!(null)), Just(json!(true)), any::<i32>().prop_map(|i| json!(i)),
                (-1e6f64..1e6).prop_map(|f| json!(f)), "[a-z]{0,4}".prop_map(|s| json!(s)),
            ], 0..12)) {
            let kind = ColumnKind::of_values(&values);
            for value in values.iter().filter(|v| !v.is_null()) {
                let fits = match kind {
                    ColumnKind::Text => true,
                    ColumnKind::Double => value.is_number(),
                    ColumnKind::Long => value.is_i64() || value.is_u64(),
                    ColumnKind::Bool => value.is_boolean(),
                };
                prop_assert!(fits, "{:?} does not hold {}", kind, value);
            }
        }
    }
}
