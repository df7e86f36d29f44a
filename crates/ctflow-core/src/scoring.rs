//! MLflow's model scoring protocol, the pure part: a model's signature as its `MLmodel`
//! file states it, a request body in any of the protocol's shapes (`dataframe_split`,
//! `dataframe_records`, `instances`, `inputs`, CSV), and the check of one against the
//! other before anything reaches Python. The outcome is a `Payload` the model's Python
//! worker turns into exactly the pandas DataFrame or numpy array MLflow would build.
//!
//! The rules and messages follow `mlflow models serve` 3.17 as observed (see
//! `docs/serving.md`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The keys of a JSON request, exactly one of which carries the data.
pub const INPUT_KEYS: [&str; 4] = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
];

/// A model's input signature.
#[derive(Debug, Clone, PartialEq)]
pub enum Signature {
    /// No signature: the data goes to the model as given.
    None,
    /// Named, typed columns (a DataFrame).
    Columns(Vec<ColumnSpec>),
    /// One unnamed n-dimensional array.
    Tensor(TensorSpec),
}

/// One column of a column-based signature.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ColumnSpec {
    /// MLflow's type name (`double`, `long`, `string`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// The column's name; unnamed columns are matched by position.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether a request must carry it.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// A tensor-based signature: one array of this dtype and shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorSpec {
    /// numpy's dtype name (`float64`).
    pub dtype: String,
    /// The shape, -1 for a free dimension.
    pub shape: Vec<i64>,
}

/// What a served model's `MLmodel` file says.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The input signature (`Signature::None` when the model has none).
    pub signature: Signature,
    /// `python_function` flavor present: the model can be served.
    pub pyfunc: bool,
    /// The mlflow version that saved it.
    pub mlflow_version: Option<String>,
    /// Its logged-model id, when it has one.
    pub model_id: Option<String>,
    /// The run that logged it.
    pub run_id: Option<String>,
}

/// Reads an `MLmodel` file's text.
pub fn parse_mlmodel(text: &str) -> Result<ModelInfo, String> {
    let doc: Value = serde_saphyr::from_str(text)
        .map_err(|e| format!("the MLmodel file does not parse: {e}"))?;
    let inputs = doc["signature"]["inputs"].as_str();
    let signature = match inputs {
        None => Signature::None,
        Some(inputs) => {
            let specs: Vec<Value> = serde_json::from_str(inputs)
                .map_err(|e| format!("the MLmodel signature's inputs do not parse: {e}"))?;
            match specs.first() {
                None => Signature::None,
                Some(first) if first["type"] == "tensor" => {
                    if specs.len() > 1 {
                        return Err(
                            "models with several named tensor inputs are not served yet".into()
                        );
                    }
                    let spec: TensorSpec = serde_json::from_value(first["tensor-spec"].clone())
                        .map_err(|e| format!("the MLmodel tensor spec does not parse: {e}"))?;
                    Signature::Tensor(spec)
                }
                Some(_) => Signature::Columns(
                    specs
                        .into_iter()
                        .map(serde_json::from_value)
                        .collect::<Result<Vec<ColumnSpec>, _>>()
                        .map_err(|e| format!("the MLmodel column specs do not parse: {e}"))?,
                ),
            }
        }
    };
    let text_of = |key: &str| doc[key].as_str().map(str::to_string);
    Ok(ModelInfo {
        signature,
        pyfunc: doc["flavors"]["python_function"].is_object(),
        mlflow_version: text_of("mlflow_version"),
        model_id: text_of("model_id"),
        run_id: text_of("run_id"),
    })
}

/// A request the protocol refuses, with MLflow's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoringError {
    /// `BAD_REQUEST` (the body cannot be read) or `INVALID_PARAMETER_VALUE` (it does not fit
    /// the signature).
    pub code: &'static str,
    /// What is wrong with the request.
    pub message: String,
}

fn bad_request(message: impl Into<String>) -> ScoringError {
    ScoringError {
        code: "BAD_REQUEST",
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> ScoringError {
    ScoringError {
        code: "INVALID_PARAMETER_VALUE",
        message: message.into(),
    }
}

/// Request data before it meets the signature.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Rows under column names (`dataframe_split`, `dataframe_records`, records in
    /// `instances`/`inputs`, a dict of columns, CSV).
    Frame {
        /// The column names.
        columns: Vec<String>,
        /// The rows, each as long as `columns`.
        rows: Vec<Vec<Value>>,
    },
    /// A (nested) list: `instances`/`inputs` of values or lists.
    Array(Value),
}

/// A scoring request as read, before it meets the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The input data.
    pub data: Data,
    /// The inference `params`, when given.
    pub params: Option<Map<String, Value>>,
}

/// Reads a JSON request body.
pub fn parse_json(body: &[u8]) -> Result<Request, ScoringError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("Invalid input. The body is not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(bad_request(protocol_message(&[])));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(params)) => Some(params),
        Some(_) => {
            return Err(bad_request(
                "Invalid input. 'params' must be a JSON object.",
            ));
        }
    };
    let present: Vec<&str> = INPUT_KEYS
        .iter()
        .copied()
        .filter(|k| object.contains_key(*k))
        .collect();
    if present.len() != 1 || object.len() != 1 {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        return Err(bad_request(protocol_message(&keys)));
    }
    let key = present[0];
    let payload = object.remove(key).unwrap_or(Value::Null);
    let data = match key {
        "dataframe_split" => split_frame(payload)?,
        "dataframe_records" => match payload {
            Value::Array(records) => records_frame(records)?,
            _ => {
                return Err(bad_request(
                    "Invalid input. 'dataframe_records' must be a list of records.",
                ));
            }
        },
        _ => match payload {
            Value::Object(columns) => columns_frame(columns)?,
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                records_frame(items)?
            }
            other => Data::Array(other),
        },
    };
    Ok(Request { data, params })
}

fn protocol_message(keys: &[&str]) -> String {
    format!(
        "The input must be a JSON dictionary with exactly one of the input fields {{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}}. Received dictionary with input fields: {}. IMPORTANT: The MLflow Model scoring protocol has changed in MLflow version 2.0.",
        python_list(keys)
    )
}

fn split_frame(payload: Value) -> Result<Data, ScoringError> {
    let Value::Object(mut split) = payload else {
        return Err(bad_request(
            "Invalid input. 'dataframe_split' must be an object with 'columns' and 'data'.",
        ));
    };
    let rows = match split.remove("data") {
        Some(Value::Array(rows)) => rows,
        _ => {
            return Err(bad_request(
                "Invalid input. 'dataframe_split' needs a 'data' list of rows.",
            ));
        }
    };
    let rows: Vec<Vec<Value>> = rows
        .into_iter()
        .map(|row| match row {
            Value::Array(values) => values,
            scalar => vec![scalar],
        })
        .collect();
    let width = rows.first().map_or(0, Vec::len);
    let columns: Vec<String> = match split.remove("columns") {
        Some(Value::Array(names)) => names.iter().map(column_name).collect(),
        None => (0..width).map(|i| i.to_string()).collect(),
        Some(_) => return Err(bad_request("Invalid input. 'columns' must be a list.")),
    };
    check_widths(&columns, &rows)?;
    Ok(Data::Frame { columns, rows })
}

fn column_name(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_widths(columns: &[String], rows: &[Vec<Value>]) -> Result<(), ScoringError> {
    match rows.iter().position(|r| r.len() != columns.len()) {
        Some(i) => Err(bad_request(format!(
            "Invalid input. Row {i} has {} values for {} columns.",
            rows[i].len(),
            columns.len()
        ))),
        None => Ok(()),
    }
}

fn records_frame(records: Vec<Value>) -> Result<Data, ScoringError> {
    let mut columns: Vec<String> = Vec::new();
    for record in &records {
        let Value::Object(fields) = record else {
            return Err(bad_request(
                "Invalid input. Every record must be a JSON object.",
            ));
        };
        for key in fields.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let rows = records
        .into_iter()
        .map(|record| {
            columns
                .iter()
                .map(|c| record.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok(Data::Frame { columns, rows })
}

fn columns_frame(columns: Map<String, Value>) -> Result<Data, ScoringError> {
    let names: Vec<String> = columns.keys().cloned().collect();
    let lists: Vec<Vec<Value>> = columns
        .into_values()
        .map(|v| match v {
            Value::Array(values) => values,
            scalar => vec![scalar],
        })
        .collect();
    let height = lists.first().map_or(0, Vec::len);
    if lists.iter().any(|l| l.len() != height) {
        return Err(bad_request(
            "Invalid input. The columns have different lengths.",
        ));
    }
    let rows = (0..height)
        .map(|i| lists.iter().map(|l| l[i].clone()).collect())
        .collect();
    Ok(Data::Frame {
        columns: names,
        rows,
    })
}

/// Reads a CSV body with a header row (what `DataFrame.to_csv(index=False)` writes).
/// Values are numbers where they parse as numbers, as pandas reads them.
pub fn parse_csv(body: &[u8]) -> Result<Request, ScoringError> {
    let fail = |e: String| {
        bad_request(format!(
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` method. Error: {e}"
        ))
    };
    let text = std::str::from_utf8(body).map_err(|e| fail(e.to_string()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| fail("no header row".into()))?;
    let columns: Vec<String> = split_csv_line(header);
    let mut rows = Vec::new();
    for line in lines {
        let values = split_csv_line(line);
        rows.push(
            values
                .into_iter()
                .map(|v| {
                    if v.is_empty() {
                        Value::Null
                    } else if let Ok(i) = v.parse::<i64>() {
                        json!(i)
                    } else if let Ok(f) = v.parse::<f64>() {
                        json!(f)
                    } else {
                        Value::String(v)
                    }
                })
                .collect(),
        );
    }
    check_widths(&columns, &rows).map_err(|e| fail(e.message))?;
    Ok(Request {
        data: Data::Frame { columns, rows },
        params: None,
    })
}

/// One CSV line, with double-quoted fields.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// What the Python worker builds the model input from.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `pandas.DataFrame(rows, columns=columns)`, each column cast to its pandas dtype.
    Frame {
        /// The column names.
        columns: Vec<String>,
        /// The rows, each as long as `columns`.
        rows: Vec<Vec<Value>>,
        /// Each column's pandas dtype.
        dtypes: BTreeMap<String, String>,
    },
    /// `numpy.array(data, dtype=dtype)`.
    Array {
        /// The (nested) list of values.
        data: Value,
        /// numpy's dtype, when the signature names one.
        dtype: Option<String>,
    },
}

impl Payload {
    /// Requests with the same key can go to the model as one call (their rows
    /// concatenated): same kind, same columns and dtypes, or same dtype and inner shape.
    pub fn batch_key(&self) -> String {
        match self {
            Payload::Frame {
                columns, dtypes, ..
            } => json!(["frame", columns, dtypes]).to_string(),
            Payload::Array { data, dtype } => {
                let mut inner = Vec::new();
                let mut cursor = data.as_array().and_then(|rows| rows.first());
                while let Some(Value::Array(items)) = cursor {
                    inner.push(items.len());
                    cursor = items.first();
                }
                let rows = data.is_array();
                json!(["array", dtype, rows, inner]).to_string()
            }
        }
    }

    /// The line sent to the worker.
    pub fn to_json(&self, params: Option<&Map<String, Value>>) -> Value {
        let mut value = match self {
            Payload::Frame {
                columns,
                rows,
                dtypes,
            } => json!({"kind": "frame", "columns": columns, "rows": rows, "dtypes": dtypes}),
            Payload::Array { data, dtype } => {
                json!({"kind": "array", "data": data, "dtype": dtype})
            }
        };
        if let Some(params) = params {
            value["params"] = Value::Object(params.clone());
        }
        value
    }
}

/// One row of harmless values shaped by the signature (zeros, empty strings, false), for a
/// warm-up prediction; `None` without a signature.
pub fn example_data(signature: &Signature) -> Option<Data> {
    match signature {
        Signature::None => None,
        Signature::Columns(specs) => {
            let columns = specs
                .iter()
                .enumerate()
                .map(|(i, s)| s.name.clone().unwrap_or_else(|| i.to_string()))
                .collect();
            let row = specs
                .iter()
                .map(|s| match s.type_.as_str() {
                    "double" | "float" => json!(0.0),
                    "long" | "integer" => json!(0),
                    "boolean" => json!(false),
                    "string" => json!(""),
                    _ => Value::Null,
                })
                .collect();
            Some(Data::Frame {
                columns,
                rows: vec![row],
            })
        }
        Signature::Tensor(spec) => {
            let leaf = if spec.dtype.starts_with("float") {
                json!(0.0)
            } else if spec.dtype == "bool" {
                json!(false)
            } else if spec.dtype.starts_with("int") || spec.dtype.starts_with("uint") {
                json!(0)
            } else {
                json!("")
            };
            let data = spec.shape.iter().rev().fold(leaf, |inner, dim| {
                let len = usize::try_from(*dim).unwrap_or(1).max(1);
                Value::Array(vec![inner; len])
            });
            Some(Data::Array(data))
        }
    }
}

/// Checks a request against the signature and shapes what the model gets.
pub fn enforce(data: Data, signature: &Signature) -> Result<Payload, ScoringError> {
    match signature {
        Signature::None => Ok(match data {
            Data::Frame { columns, rows } => Payload::Frame {
                columns,
                rows,
                dtypes: BTreeMap::new(),
            },
            Data::Array(data) => Payload::Array { data, dtype: None },
        }),
        Signature::Columns(specs) => enforce_columns(data, specs),
        Signature::Tensor(spec) => enforce_tensor(data, spec),
    }
}

fn schema_text(specs: &[ColumnSpec]) -> String {
    let parts: Vec<String> = specs
        .iter()
        .map(|s| {
            let required = if s.required { "required" } else { "optional" };
            match &s.name {
                Some(name) => format!("'{name}': {} ({required})", s.type_),
                None => format!("{} ({required})", s.type_),
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn enforce_columns(data: Data, specs: &[ColumnSpec]) -> Result<Payload, ScoringError> {
    let (columns, rows) = match data {
        Data::Frame { columns, rows } => (columns, rows),
        // A list of rows gets positional column names, as pandas gives them.
        Data::Array(Value::Array(items)) => {
            let rows: Vec<Vec<Value>> = items
                .into_iter()
                .map(|item| match item {
                    Value::Array(values) => values,
                    scalar => vec![scalar],
                })
                .collect();
            let width = rows.first().map_or(0, Vec::len);
            ((0..width).map(|i| i.to_string()).collect(), rows)
        }
        Data::Array(scalar) => (vec!["0".to_string()], vec![vec![scalar]]),
    };
    let fail = |error: String| {
        invalid(format!(
            "Failed to enforce schema of data with schema '{}'. Error: {error}",
            schema_text(specs)
        ))
    };
    let named = specs.iter().all(|s| s.name.is_some());
    if !named {
        // Unnamed columns are matched by position.
        if columns.len() < specs.iter().filter(|s| s.required).count() {
            return Err(fail(format!(
                "The model expects {} columns, got {}.",
                specs.len(),
                columns.len()
            )));
        }
    }
    let missing: Vec<&str> = specs
        .iter()
        .filter(|s| s.required)
        .filter_map(|s| s.name.as_deref())
        .filter(|name| !columns.iter().any(|c| c == name))
        .collect();
    if named && !missing.is_empty() {
        let extra: Vec<&str> = columns
            .iter()
            .map(String::as_str)
            .filter(|c| !specs.iter().any(|s| s.name.as_deref() == Some(*c)))
            .collect();
        let mut message = format!("Model is missing inputs {}.", python_list(&missing));
        if !extra.is_empty() {
            message.push_str(&format!(
                " Note that there were extra inputs: {}.",
                python_list(&extra)
            ));
        }
        return Err(fail(message));
    }
    // The signature's columns, in its order; extra columns are dropped as MLflow does.
    let mut picked: Vec<(String, Option<usize>, &ColumnSpec)> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let index = match &spec.name {
            Some(name) if named => columns.iter().position(|c| c == name),
            _ => (i < columns.len()).then_some(i),
        };
        if index.is_none() && spec.required {
            continue;
        }
        let name = spec.name.clone().unwrap_or_else(|| i.to_string());
        picked.push((name, index, spec));
    }
    let mut out_rows = vec![Vec::with_capacity(picked.len()); rows.len()];
    let mut dtypes = BTreeMap::new();
    for (name, index, spec) in &picked {
        let Some(index) = index else { continue };
        let dtype = pandas_dtype(&spec.type_);
        dtypes.insert(name.clone(), dtype.to_string());
        for (row, out) in rows.iter().zip(out_rows.iter_mut()) {
            let value = row.get(*index).cloned().unwrap_or(Value::Null);
            out.push(convert(&value, &spec.type_).map_err(|why| {
                fail(format!("Incompatible input types for column {name}. {why}"))
            })?);
        }
    }
    let names = picked
        .iter()
        .filter(|(_, index, _)| index.is_some())
        .map(|(name, _, _)| name.clone())
        .collect();
    Ok(Payload::Frame {
        columns: names,
        rows: out_rows,
        dtypes,
    })
}

/// A list of names as Python prints it (MLflow's messages do).
fn python_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("'{}'", n.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The pandas dtype of an MLflow column type.
fn pandas_dtype(type_: &str) -> &'static str {
    match type_ {
        "double" => "float64",
        "float" => "float32",
        "long" => "int64",
        "integer" => "int32",
        "boolean" => "bool",
        "datetime" => "datetime64[ns]",
        _ => "object",
    }
}

/// A value as a column of this type takes it, or why not.
fn convert(value: &Value, type_: &str) -> Result<Value, String> {
    let refuse = |target: &str| {
        Err(format!(
            "Can not safely convert {} to {target}.",
            kind_of(value)
        ))
    };
    match (type_, value) {
        (_, Value::Null) => Ok(Value::Null),
        ("double" | "float", Value::Number(_)) => Ok(value.clone()),
        ("double" | "float", Value::String(s)) if is_special_float(s) => Ok(value.clone()),
        ("double", _) => refuse("float64"),
        ("float", _) => refuse("float32"),
        ("long" | "integer", Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        ("long", _) => refuse("int64"),
        ("integer", _) => refuse("int32"),
        ("boolean", Value::Bool(_)) => Ok(value.clone()),
        ("boolean", _) => refuse("bool"),
        ("string" | "binary" | "datetime", Value::String(_)) => Ok(value.clone()),
        ("string" | "binary" | "datetime", _) => refuse(type_),
        // Types this check does not know go to the model as they are.
        _ => Ok(value.clone()),
    }
}

fn is_special_float(text: &str) -> bool {
    matches!(text, "NaN" | "Infinity" | "-Infinity")
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn enforce_tensor(data: Data, spec: &TensorSpec) -> Result<Payload, ScoringError> {
    let array = match data {
        Data::Array(array) => array,
        Data::Frame { columns, rows } => {
            if columns.iter().any(|c| c.parse::<usize>().is_err()) && spec.shape.len() != 2 {
                return Err(bad_request(
                    "Invalid input. Failed to parse input data. This model contains an un-named model signature which expects a single n-dimensional array or a single value as input, however, named columns were found.",
                ));
            }
            Value::Array(rows.into_iter().map(Value::Array).collect())
        }
    };
    let numeric = spec.dtype.starts_with("float")
        || spec.dtype.starts_with("int")
        || spec.dtype.starts_with("uint");
    let mut shape = Vec::new();
    measure(&array, 0, &mut shape).map_err(|why| bad_request(format!("Invalid input. {why}")))?;
    if numeric && let Some(text) = first_string(&array) {
        return Err(bad_request(format!(
            "Invalid input. could not convert string to float: '{text}'"
        )));
    }
    let fits = shape.len() == spec.shape.len()
        && shape
            .iter()
            .zip(&spec.shape)
            .all(|(got, want)| *want < 0 || *got as i64 == *want);
    if !fits {
        let got: Vec<String> = shape.iter().map(usize::to_string).collect();
        let want: Vec<String> = spec.shape.iter().map(i64::to_string).collect();
        return Err(invalid(format!(
            "Failed to enforce schema of data with schema '[Tensor('{}', ({}))]'. Error: Shape of input ({}) does not match expected shape ({}).",
            spec.dtype,
            want.join(", "),
            got.join(", "),
            want.join(", ")
        )));
    }
    Ok(Payload::Array {
        data: array,
        dtype: Some(spec.dtype.clone()),
    })
}

/// The shape of a regular nested list; an error for a ragged one.
fn measure(value: &Value, depth: usize, shape: &mut Vec<usize>) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            match shape.get(depth) {
                Some(len) if *len != items.len() => {
                    return Err("the nested lists have different lengths".into());
                }
                Some(_) => {}
                None => shape.push(items.len()),
            }
            for item in items {
                measure(item, depth + 1, shape)?;
            }
            Ok(())
        }
        _ if depth < shape.len() => Err("the nested lists have different depths".into()),
        _ => Ok(()),
    }
}

fn first_string(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) if !is_special_float(s) => Some(s),
        Value::Array(items) => items.iter().find_map(first_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRIS_COLUMNS: &str = r#"
flavors:
  python_function: {loader_module: mlflow.sklearn}
mlflow_version: 3.17.2
signature:
  inputs: '[{"type": "double", "name": "sepal length (cm)", "required": true}, {"type": "double", "name": "sepal width (cm)", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"#;
    const IRIS_TENSOR: &str = r#"
flavors:
  python_function: {loader_module: mlflow.sklearn}
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]'
"#;

    fn sig(text: &str) -> Signature {
        parse_mlmodel(text).expect("parses").signature
    }

    fn request(body: Value) -> Result<Payload, ScoringError> {
        let request = parse_json(body.to_string().as_bytes())?;
        enforce(request.data, &sig(IRIS_COLUMNS))
    }

    #[test]
    fn mlmodel_files_give_their_signature() {
        let info = parse_mlmodel(IRIS_COLUMNS).expect("parses");
        assert!(info.pyfunc);
        assert_eq!(info.mlflow_version.as_deref(), Some("3.17.2"));
        let Signature::Columns(specs) = info.signature else {
            panic!("columns")
        };
        assert_eq!(specs[0].name.as_deref(), Some("sepal length (cm)"));
        assert_eq!(
            sig(IRIS_TENSOR),
            Signature::Tensor(TensorSpec {
                dtype: "float64".into(),
                shape: vec![-1, 2]
            })
        );
        assert_eq!(sig("flavors: {}\n"), Signature::None);
    }

    #[test]
    fn every_input_shape_becomes_the_same_frame() {
        let expected = Payload::Frame {
            columns: vec!["sepal length (cm)".into(), "sepal width (cm)".into()],
            rows: vec![vec![json!(5.1), json!(3.5)], vec![json!(4.9), json!(3)]],
            dtypes: [
                ("sepal length (cm)".to_string(), "float64".to_string()),
                ("sepal width (cm)".to_string(), "float64".to_string()),
            ]
            .into(),
        };
        let split = json!({"dataframe_split": {"columns": ["sepal width (cm)", "sepal length (cm)", "extra"], "data": [[3.5, 5.1, "x"], [3, 4.9, "y"]]}});
        assert_eq!(
            request(split),
            Ok(expected.clone()),
            "reordered, extra dropped, ints kept for float64"
        );
        let records = json!({"dataframe_records": [{"sepal length (cm)": 5.1, "sepal width (cm)": 3.5}, {"sepal length (cm)": 4.9, "sepal width (cm)": 3}]});
        assert_eq!(request(records), Ok(expected.clone()));
        let instances = json!({"instances": [{"sepal length (cm)": 5.1, "sepal width (cm)": 3.5}, {"sepal length (cm)": 4.9, "sepal width (cm)": 3}]});
        assert_eq!(request(instances), Ok(expected.clone()));
        let columns =
            json!({"inputs": {"sepal length (cm)": [5.1, 4.9], "sepal width (cm)": [3.5, 3]}});
        assert_eq!(request(columns), Ok(expected.clone()));
        let csv =
            parse_csv(b"sepal length (cm),sepal width (cm)\n5.1,3.5\n4.9,3\n").expect("parses");
        assert_eq!(enforce(csv.data, &sig(IRIS_COLUMNS)), Ok(expected));
    }

    #[test]
    fn requests_that_do_not_fit_are_refused_with_the_reason() {
        let missing = request(json!({"dataframe_split": {"columns": ["a"], "data": [[1]]}}))
            .expect_err("missing");
        assert_eq!(missing.code, "INVALID_PARAMETER_VALUE");
        assert!(missing.message.contains("Model is missing inputs ['sepal length (cm)', 'sepal width (cm)']. Note that there were extra inputs: ['a']."), "{}", missing.message);
        let lists = request(json!({"inputs": [[1, 2]]})).expect_err("unnamed");
        assert!(
            lists.message.contains("extra inputs: ['0', '1']"),
            "{}",
            lists.message
        );
        let typed = request(
            json!({"dataframe_records": [{"sepal length (cm)": "tall", "sepal width (cm)": 1}]}),
        )
        .expect_err("a string");
        assert!(typed.message.contains("Incompatible input types for column sepal length (cm). Can not safely convert string to float64."), "{}", typed.message);
        let none = parse_json(br#"{"foo": 1}"#).expect_err("no input key");
        assert_eq!(none.code, "BAD_REQUEST");
        assert!(none.message.contains("exactly one of the input fields"));
        let two = parse_json(br#"{"inputs": [1], "instances": [1]}"#).expect_err("two keys");
        assert_eq!(two.code, "BAD_REQUEST");
        assert_eq!(
            parse_json(b"[1, 2]").expect_err("not an object").code,
            "BAD_REQUEST"
        );
        assert_eq!(parse_json(b"{").expect_err("not JSON").code, "BAD_REQUEST");
        let ragged = parse_json(br#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}"#)
            .expect_err("ragged");
        assert!(ragged.message.contains("Row 0 has 1 values for 2 columns"));
    }

    #[test]
    fn tensors_are_checked_for_shape_and_numbers() {
        let tensor = sig(IRIS_TENSOR);
        let ok = enforce(
            parse_json(br#"{"inputs": [[1, 2], [3.5, 4]]}"#)
                .expect("parses")
                .data,
            &tensor,
        );
        assert_eq!(
            ok,
            Ok(Payload::Array {
                data: json!([[1, 2], [3.5, 4]]),
                dtype: Some("float64".into())
            })
        );
        let split = enforce(
            parse_json(br#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}"#)
                .expect("parses")
                .data,
            &tensor,
        );
        assert!(
            matches!(split, Ok(Payload::Array { .. })),
            "a 2-d frame fits a 2-d tensor"
        );
        let shape = enforce(
            parse_json(br#"{"inputs": [[1, 2, 3]]}"#)
                .expect("parses")
                .data,
            &tensor,
        )
        .expect_err("shape");
        assert!(
            shape
                .message
                .contains("Shape of input (1, 3) does not match expected shape (-1, 2)."),
            "{}",
            shape.message
        );
        let text = enforce(
            parse_json(br#"{"inputs": [["x", "y"]]}"#)
                .expect("parses")
                .data,
            &tensor,
        )
        .expect_err("strings");
        assert_eq!(text.code, "BAD_REQUEST");
        assert!(
            text.message
                .contains("could not convert string to float: 'x'")
        );
        let ragged = enforce(
            parse_json(br#"{"inputs": [[1, 2], [3]]}"#)
                .expect("parses")
                .data,
            &tensor,
        )
        .expect_err("ragged");
        assert_eq!(ragged.code, "BAD_REQUEST");
    }

    #[test]
    fn example_rows_fit_their_signature() {
        for text in [IRIS_COLUMNS, IRIS_TENSOR] {
            let signature = sig(text);
            let data = example_data(&signature).expect("an example");
            assert!(enforce(data, &signature).is_ok(), "{text}");
        }
        assert_eq!(example_data(&Signature::None), None);
        let Some(Data::Array(array)) = example_data(&sig(IRIS_TENSOR)) else {
            panic!("an array")
        };
        assert_eq!(array, json!([[0.0, 0.0]]));
    }

    #[test]
    fn params_and_csv_quoting() {
        let request = parse_json(br#"{"inputs": [[1, 2]], "params": {"k": 3}}"#).expect("parses");
        assert_eq!(request.params.expect("params")["k"], 3);
        assert_eq!(
            parse_json(br#"{"inputs": [1], "params": 3}"#)
                .expect_err("params")
                .code,
            "BAD_REQUEST"
        );
        let csv = parse_csv(b"name,note\n\"a, b\",\"say \"\"hi\"\"\"\n").expect("parses");
        assert_eq!(
            csv.data,
            Data::Frame {
                columns: vec!["name".into(), "note".into()],
                rows: vec![vec![json!("a, b"), json!("say \"hi\"")]]
            }
        );
    }
}
