//! MLflow 3's evaluation datasets, pure part: record identity (inputs hash), merging an
//! upserted record into a stored one, the schema MLflow infers from records, the digest,
//! and the search grammar.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::MlflowError;
use crate::filter::{
    Comparator, NUMERIC_COMPARATORS, STRING_COMPARATORS, Value as FilterValue, check_comparator,
    numeric_value, parse_order_clause, parse_raw, string_value,
};

/// The tag that names who made a dataset or record.
pub const USER_TAG: &str = "mlflow.user";

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A record's identity in its dataset: the SHA-256 of its inputs with sorted keys.
pub fn inputs_hash(inputs: &Value) -> String {
    hex::encode(Sha256::digest(canonical(inputs).to_string().as_bytes()))
}

/// A dataset's digest: it changes with every change of the dataset (MLflow's rule).
pub fn digest(name: &str, last_update_time: i64) -> String {
    let hash = hex::encode(Sha256::digest(
        format!("{name}:{last_update_time}").as_bytes(),
    ));
    hash[..8].to_string()
}

/// One record of an upsert, checked: `inputs` an object (required), `expectations` and
/// `tags` objects when present.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUpsert {
    /// The record's inputs.
    pub inputs: Value,
    /// Its outputs, when given (any JSON).
    pub outputs: Option<Value>,
    /// Expected values by name.
    pub expectations: Option<Map<String, Value>>,
    /// Tags.
    pub tags: Option<Map<String, Value>>,
    /// Where it came from (MLflow's record source), as sent.
    pub source: Option<Value>,
}

fn object_field(
    record: &Map<String, Value>,
    key: &str,
    i: usize,
) -> Result<Option<Map<String, Value>>, MlflowError> {
    match record.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(other) => Err(MlflowError::invalid(format!(
            "Invalid records[{i}].{key}: expected an object, got {other}"
        ))),
    }
}

/// Reads an upsert's `records` (a JSON list as text).
pub fn parse_records(text: &str) -> Result<Vec<RecordUpsert>, MlflowError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| MlflowError::invalid(format!("Invalid 'records': not JSON ({e})")))?;
    let Value::Array(items) = value else {
        return Err(MlflowError::invalid(
            "Invalid 'records': expected a JSON list",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(record) = item else {
                return Err(MlflowError::invalid(format!(
                    "Invalid records[{i}]: expected an object"
                )));
            };
            let inputs = match record.get("inputs") {
                Some(Value::Object(map)) => Value::Object(map.clone()),
                _ => {
                    return Err(MlflowError::invalid(format!(
                        "Invalid records[{i}]: 'inputs' must be an object"
                    )));
                }
            };
            Ok(RecordUpsert {
                inputs,
                outputs: record.get("outputs").filter(|v| !v.is_null()).cloned(),
                expectations: object_field(record, "expectations", i)?,
                tags: object_field(record, "tags", i)?,
                source: record.get("source").filter(|v| !v.is_null()).cloned(),
            })
        })
        .collect()
}

/// Merges an upsert into a stored record's fields (MLflow's rule): outputs replaced when
/// given, expectations and tags updated key by key.
pub fn merge_record(
    outputs: &mut Option<Value>,
    expectations: &mut Option<Map<String, Value>>,
    tags: &mut Option<Map<String, Value>>,
    update: &RecordUpsert,
) {
    if let Some(new) = &update.outputs {
        *outputs = Some(new.clone());
    }
    if let Some(new) = &update.expectations {
        expectations
            .get_or_insert_with(Map::new)
            .extend(new.clone());
    }
    if let Some(new) = &update.tags {
        tags.get_or_insert_with(Map::new).extend(new.clone());
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The dataset schema with the fields of new records added (the first type seen wins).
pub fn update_schema(existing: Option<&str>, records: &[RecordUpsert]) -> Option<Value> {
    if records.is_empty() && existing.is_none() {
        return None;
    }
    let mut schema = existing
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .unwrap_or_else(
            || json!({"inputs": {}, "outputs": {}, "expectations": {}, "version": "1.0"}),
        );
    let add = |schema: &mut Value, section: &str, fields: &Map<String, Value>| {
        if let Some(Value::Object(known)) = schema.get_mut(section) {
            for (key, value) in fields {
                known
                    .entry(key.clone())
                    .or_insert_with(|| Value::String(type_name(value).into()));
            }
        }
    };
    for record in records {
        if let Value::Object(inputs) = &record.inputs {
            add(&mut schema, "inputs", inputs);
        }
        match &record.outputs {
            Some(Value::Object(outputs)) => add(&mut schema, "outputs", outputs),
            Some(other)
                if schema
                    .get("outputs")
                    .is_some_and(|o| o.as_object().is_some_and(Map::is_empty)) =>
            {
                schema["outputs"] = Value::String(type_name(other).into());
            }
            _ => {}
        }
        if let Some(expectations) = &record.expectations {
            add(&mut schema, "expectations", expectations);
        }
    }
    Some(schema)
}

/// What a dataset search compares.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetKey {
    /// `name`, `created_by`, `last_updated_by`.
    Text(&'static str),
    /// `created_time`, `last_update_time`.
    Time(&'static str),
    /// `tags.<key>`.
    Tag(String),
}

/// One clause of a dataset search.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetClause {
    /// What it compares.
    pub key: DatasetKey,
    /// How.
    pub comparator: Comparator,
    /// With what: a number for times, else a string.
    pub value: FilterValue,
}

const DATASET_KEYS: &str =
    "{'last_updated_by', 'created_by', 'created_time', 'last_update_time', 'name'}";

fn dataset_attribute(key: &str) -> Result<DatasetKey, MlflowError> {
    Ok(match key {
        "name" => DatasetKey::Text("name"),
        "created_by" => DatasetKey::Text("created_by"),
        "last_updated_by" => DatasetKey::Text("last_updated_by"),
        "created_time" => DatasetKey::Time("created_time"),
        "last_update_time" => DatasetKey::Time("last_update_time"),
        other => {
            return Err(MlflowError::invalid(format!(
                "Invalid attribute key '{other}' specified. Valid keys are: {DATASET_KEYS}"
            )));
        }
    })
}

/// Parses a `datasets/search` filter: `name`, `created_by`, `last_updated_by`,
/// `created_time`, `last_update_time` and `tags.<key>`.
pub fn parse_dataset_filter(filter: &str) -> Result<Vec<DatasetClause>, MlflowError> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let key = match raw.identifier.prefix.as_deref() {
                Some("tags" | "tag") => DatasetKey::Tag(raw.identifier.key.clone()),
                None | Some("attributes" | "attribute") => dataset_attribute(&raw.identifier.key)?,
                Some(other) => {
                    return Err(MlflowError::invalid(format!(
                        "Invalid entity type '{other}'. Valid values are ['attributes', 'tags']"
                    )));
                }
            };
            let cmp = raw.comparator;
            let value = if matches!(key, DatasetKey::Time(_)) {
                check_comparator(cmp, NUMERIC_COMPARATORS, "numeric attributes")?;
                numeric_value(&raw.value, "numeric attribute")?
            } else {
                check_comparator(cmp, STRING_COMPARATORS, "dataset fields")?;
                string_value(&raw.value, cmp, "dataset field")?
            };
            Ok(DatasetClause {
                key,
                comparator: cmp,
                value,
            })
        })
        .collect()
}

/// Parses `datasets/search` order_by: `name`, `created_time`, `last_update_time`, with
/// ASC/DESC; returns `(column, ascending)`.
pub fn parse_dataset_order_by(
    order_by: &[String],
) -> Result<Vec<(&'static str, bool)>, MlflowError> {
    order_by
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| {
            let (identifier, ascending) = parse_order_clause(raw)?;
            let column = match (identifier.prefix.as_deref(), identifier.key.as_str()) {
                (None | Some("attributes" | "attribute"), "name") => "name",
                (None | Some("attributes" | "attribute"), "created_time") => "created_time",
                (None | Some("attributes" | "attribute"), "last_update_time") => "last_update_time",
                _ => {
                    return Err(MlflowError::invalid(format!(
                        "Invalid order_by clause '{raw}': use name, created_time or last_update_time"
                    )));
                }
            };
            Ok((column, ascending))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_identified_by_their_inputs_in_any_key_order() {
        assert_eq!(
            inputs_hash(&json!({"a": 1, "b": {"y": 2, "x": 1}})),
            inputs_hash(&json!({"b": {"x": 1, "y": 2}, "a": 1}))
        );
        assert_ne!(inputs_hash(&json!({"a": 1})), inputs_hash(&json!({"a": 2})));
    }

    #[test]
    fn upserts_merge_expectations_and_tags_and_grow_the_schema() {
        let records = parse_records(
            r#"[{"inputs": {"q": "a"}, "expectations": {"x": 1}, "tags": {"t": "1"}},
                {"inputs": {"q": "b"}, "outputs": "text"}]"#,
        )
        .expect("valid");
        let (mut outputs, mut expectations, mut tags) = (
            None,
            records[0].expectations.clone(),
            records[0].tags.clone(),
        );
        let update = parse_records(
            r#"[{"inputs": {"q": "a"}, "expectations": {"y": 2.5}, "tags": {"u": "2"}}]"#,
        )
        .expect("valid")
        .remove(0);
        merge_record(&mut outputs, &mut expectations, &mut tags, &update);
        assert_eq!(
            Value::Object(expectations.expect("merged")),
            json!({"x": 1, "y": 2.5})
        );
        assert_eq!(
            Value::Object(tags.expect("merged")),
            json!({"t": "1", "u": "2"})
        );
        let schema = update_schema(None, &records).expect("a schema");
        assert_eq!(
            schema,
            json!({"inputs": {"q": "string"}, "outputs": "string", "expectations": {"x": "integer"}, "version": "1.0"})
        );
        assert!(parse_records("not json").is_err());
        assert!(parse_records(r#"[{"expectations": {}}]"#).is_err());
    }

    #[test]
    fn dataset_filters_and_order() {
        let clauses =
            parse_dataset_filter("tags.team = 'ml' and created_time > 5 and name LIKE 'a%'")
                .expect("valid");
        assert_eq!(clauses[0].key, DatasetKey::Tag("team".into()));
        assert_eq!(clauses[1].value, FilterValue::Number(5.0));
        assert!(
            parse_dataset_filter("bogus = 'x'")
                .expect_err("bogus")
                .message
                .contains("Valid keys")
        );
        assert_eq!(
            parse_dataset_order_by(&["name ASC".into(), "created_time DESC".into()])
                .expect("valid"),
            vec![("name", true), ("created_time", false)]
        );
        assert!(parse_dataset_order_by(&["digest".into()]).is_err());
        assert_eq!(digest("d", 1).len(), 8);
    }
}
