//! MLflow's tracking entities with the exact JSON shape the real server emits: proto field
//! names, unset fields omitted, empty lists omitted, ids as strings, int64 as numbers.

use serde::{Serialize, Serializer};

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub last_update_time: i64,
    pub creation_time: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub run_uuid: String,
    pub experiment_id: String,
    pub run_name: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
    pub run_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub key: String,
    #[serde(serialize_with = "serialize_double")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// One point of a metric history: only the four fields the history endpoint returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricPoint {
    pub key: String,
    #[serde(serialize_with = "serialize_double")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricPoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    pub name: String,
    pub digest: String,
    pub source_type: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetInput {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
    pub dataset: Dataset,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInput {
    pub model_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunInputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dataset_inputs: Vec<DatasetInput>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_inputs: Vec<ModelInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunOutputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_outputs: Vec<ModelOutput>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<RunOutputs>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModelInfo {
    pub model_id: String,
    pub experiment_id: String,
    pub name: String,
    pub creation_timestamp_ms: i64,
    pub last_updated_timestamp_ms: i64,
    pub artifact_uri: String,
    pub status: String,
    pub model_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_run_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoggedModelData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModel {
    pub info: LoggedModelInfo,
    pub data: LoggedModelData,
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
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

pub const LIFECYCLE_ACTIVE: &str = "active";
pub const LIFECYCLE_DELETED: &str = "deleted";

/// Which rows a search sees, by lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewType {
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
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
