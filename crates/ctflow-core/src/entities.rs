//! MLflow's tracking entities with the exact JSON shape the real server emits: proto field
//! names, unset fields omitted, empty lists omitted, ids as strings, int64 as numbers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serialises a double as protobuf JSON does: finite numbers as numbers, NaN and the
/// infinities as the strings the client parses.
pub fn serialize_double<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        serializer.serialize_str("NaN")
    } else if value.is_infinite() {
        serializer.serialize_str(if *value > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        })
    } else {
        serializer.serialize_f64(*value)
    }
}

/// Reads a double as protobuf JSON writes it: a number, or "NaN", "Infinity",
/// "-Infinity" as strings.
pub fn deserialize_double<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Number(f64),
        Text(String),
    }
    match Wire::deserialize(deserializer)? {
        Wire::Number(value) => Ok(value),
        Wire::Text(text) => match text.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("'{other}' is not a number"))),
        },
    }
}

/// A key and its value: a param, a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KeyValue {
    /// A key and value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Read back tolerantly: a field the server leaves out is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Experiment {
    /// Its id (a number, as a string).
    pub experiment_id: String,
    /// Its unique name.
    pub name: String,
    /// Where its runs' artifacts go.
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// When it last changed (epoch ms).
    pub last_update_time: i64,
    /// When it was created (epoch ms).
    pub creation_time: i64,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

/// Read back tolerantly: a field the server leaves out is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// The run id again (MLflow's deprecated name).
    pub run_uuid: String,
    /// The experiment it belongs to.
    pub experiment_id: String,
    /// Its name.
    pub run_name: String,
    /// Who started it.
    pub user_id: String,
    /// `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED` or `KILLED`.
    pub status: String,
    /// When it started (epoch ms).
    pub start_time: i64,
    /// When it ended (epoch ms), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// Where its artifacts are.
    pub artifact_uri: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// Its id (32 hex digits).
    pub run_id: String,
}

/// One metric point with everything MLflow 3 attaches to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// The metric's name.
    pub key: String,
    /// Its value (NaN and the infinities allowed).
    #[serde(serialize_with = "serialize_double")]
    pub value: f64,
    /// When it was measured (epoch ms).
    pub timestamp: i64,
    /// The step it belongs to.
    pub step: i64,
    /// The dataset it was measured on, when logged with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    /// That dataset's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// The logged model it measures, when logged with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// The run that logged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// One point of a metric history: only the four fields the history endpoint returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The metric's name.
    pub key: String,
    #[serde(
        serialize_with = "serialize_double",
        deserialize_with = "deserialize_double"
    )]
    /// Its value (NaN and the infinities allowed).
    pub value: f64,
    /// When it was measured (epoch ms).
    pub timestamp: i64,
    /// The step it belongs to.
    pub step: i64,
}

/// A run's latest metrics, params and tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// The latest point of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricPoint>,
    /// The params.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<KeyValue>,
    /// The tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

/// A dataset as MLflow records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Its name.
    pub name: String,
    /// A hash of its content.
    pub digest: String,
    /// What kind of source (`local`, `s3`, `http`, ...).
    pub source_type: String,
    /// Where it came from (JSON, as the client wrote it).
    pub source: String,
    /// Its schema (JSON), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Its profile (JSON: row counts and the like), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A dataset a run used, with its tags (`mlflow.data.context`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInput {
    /// Its tags (`mlflow.data.context`: `training`, `evaluation`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
    /// The dataset.
    pub dataset: Dataset,
}

/// A logged model a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInput {
    /// The logged model's id.
    pub model_id: String,
}

/// What a run used: datasets and logged models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInputs {
    /// The datasets it used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset_inputs: Vec<DatasetInput>,
    /// The logged models it used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_inputs: Vec<ModelInput>,
}

/// A logged model a run produced, at a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    /// The logged model's id.
    pub model_id: String,
    /// The step at which it was logged.
    pub step: i64,
}

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOutputs {
    /// The logged models it produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_outputs: Vec<ModelOutput>,
}

/// A run as `runs/get` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its identity and state.
    pub info: RunInfo,
    /// Its metrics, params and tags.
    #[serde(default)]
    pub data: RunData,
    /// What it used.
    #[serde(default)]
    pub inputs: RunInputs,
    /// What it produced, when anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<RunOutputs>,
}

impl Run {
    /// The value of tag `key`, when the run has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.data
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// A logged model's identity and state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModelInfo {
    /// Its id (`m-` and 32 hex digits).
    pub model_id: String,
    /// The experiment it belongs to.
    pub experiment_id: String,
    /// Its name.
    pub name: String,
    /// When it was created (epoch ms).
    pub creation_timestamp_ms: i64,
    /// When it last changed (epoch ms).
    pub last_updated_timestamp_ms: i64,
    /// Where its files are.
    pub artifact_uri: String,
    /// One of `LOGGED_MODEL_STATUSES`.
    pub status: String,
    /// Its type, when the client set one.
    pub model_type: String,
    /// The run that logged it, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_run_id: String,
    /// Its tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

/// A logged model's params and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoggedModelData {
    /// Its params.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<KeyValue>,
    /// Its metrics.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

/// A logged model (MLflow 3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModel {
    /// Its identity and state.
    pub info: LoggedModelInfo,
    /// Its params and metrics.
    pub data: LoggedModelData,
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileInfo {
    /// The path relative to the artifact root.
    pub path: String,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Its size in bytes, for a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<i64>,
}

/// Statuses of a logged model.
pub const LOGGED_MODEL_STATUSES: &[&str] = &[
    "LOGGED_MODEL_STATUS_UNSPECIFIED",
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];

/// The lifecycle stage of an entity that is not deleted.
pub const LIFECYCLE_ACTIVE: &str = "active";
/// The lifecycle stage of a deleted entity (restorable until garbage-collected).
pub const LIFECYCLE_DELETED: &str = "deleted";

/// Which rows a search sees, by lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewType {
    /// Only active ones (the default).
    ActiveOnly,
    /// Only deleted ones.
    DeletedOnly,
    /// Both.
    All,
}

impl ViewType {
    /// A view from MLflow's name or number for it; active only when absent.
    pub fn parse(raw: Option<&str>) -> crate::Result<ViewType> {
        match raw.map(|s| s.to_ascii_uppercase()).as_deref() {
            None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(ViewType::ActiveOnly),
            Some("DELETED_ONLY") | Some("2") => Ok(ViewType::DeletedOnly),
            Some("ALL") | Some("3") => Ok(ViewType::All),
            Some(other) => Err(crate::MlflowError::invalid(format!(
                "Invalid view type '{other}'. Must be one of ACTIVE_ONLY, DELETED_ONLY, ALL"
            ))),
        }
    }

    /// The lifecycle stages this view includes.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &[LIFECYCLE_ACTIVE],
            ViewType::DeletedOnly => &[LIFECYCLE_DELETED],
            ViewType::All => &[LIFECYCLE_ACTIVE, LIFECYCLE_DELETED],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_doubles_serialise_as_strings() {
        let p = MetricPoint {
            key: "k".into(),
            value: f64::NAN,
            timestamp: 1,
            step: 0,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"key":"k","value":"NaN","timestamp":1,"step":0}"#
        );
        let p = MetricPoint { value: 7.0, ..p };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"key":"k","value":7.0,"timestamp":1,"step":0}"#
        );
    }

    #[test]
    fn empty_lists_are_omitted() {
        let data = RunData::default();
        assert_eq!(serde_json::to_string(&data).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&RunInputs::default()).unwrap(), "{}");
    }

    #[test]
    fn view_types_parse() {
        assert_eq!(ViewType::parse(None).unwrap(), ViewType::ActiveOnly);
        assert_eq!(ViewType::parse(Some("ALL")).unwrap(), ViewType::All);
        assert!(ViewType::parse(Some("bogus")).is_err());
    }
}
