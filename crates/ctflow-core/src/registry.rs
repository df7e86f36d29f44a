//! The model registry's entities and rules: registered models, versions, stages, aliases,
//! and the promotion ledger that records every alias move and stage transition.

use serde::{Deserialize, Serialize};

use crate::entities::KeyValue;
use crate::{MlflowError, Result};

/// The stages a model version can be in (MLflow's legacy stages).
pub const STAGES: &[&str] = &["None", "Staging", "Production", "Archived"];
/// MLflow's limit on a registered model's or version's tag value.
pub const MAX_REGISTERED_MODEL_TAG_VALUE_LENGTH: usize = 100_000;
/// MLflow's limit on an alias name.
pub const MAX_ALIAS_LENGTH: usize = 255;
/// The largest page a registered-model search returns.
pub const MAX_REGISTERED_MODELS_SEARCH_RESULTS: i64 = 1000;
/// The largest page a model-version search returns.
pub const MAX_MODEL_VERSIONS_SEARCH_RESULTS: i64 = 200_000;

/// An alias of a registered model and the version it points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModelAlias {
    /// The alias (`champion`).
    pub alias: String,
    /// The version number, as a string (MLflow's wire form).
    pub version: String,
}

/// Read back tolerantly: a field the server leaves out is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// The version number, as a string (MLflow's wire form).
    pub version: String,
    /// When it was created (epoch ms).
    pub creation_timestamp: i64,
    /// When it last changed (epoch ms).
    pub last_updated_timestamp: i64,
    /// Its stage (`None`, `Staging`, `Production`, `Archived`).
    pub current_stage: String,
    /// Its description (empty when none).
    pub description: String,
    /// Where its files are (`models:/m-...`, `runs:/...`, an artifact URI).
    pub source: String,
    /// The run that produced it, when there is one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// `READY` once created.
    pub status: String,
    /// Its tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
    /// A link to the run on another server, when given.
    pub run_link: String,
    /// The aliases that point at it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Who created it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_id: String,
}

/// Read back tolerantly: a field the server leaves out is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegisteredModel {
    /// Its name.
    pub name: String,
    /// When it was created (epoch ms).
    pub creation_timestamp: i64,
    /// When it last changed (epoch ms).
    pub last_updated_timestamp: i64,
    /// Its description, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The latest version in each stage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latest_versions: Vec<ModelVersion>,
    /// Its tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
    /// Its aliases.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<RegisteredModelAlias>,
}

/// One entry of the promotion ledger: an alias move, an alias removal or a stage change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Its place in the ledger (grows with every entry).
    pub id: i64,
    /// The registered model.
    pub name: String,
    /// `alias_set`, `alias_deleted`, `stage_transition` or `version_created`.
    pub action: String,
    /// The alias moved or deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The version the alias pointed at before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// The version the alias points at now, or the version whose stage changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// The stage before a transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_stage: Option<String>,
    /// The stage after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_stage: Option<String>,
    /// Who made the change.
    pub user: String,
    /// When (epoch ms).
    pub timestamp: i64,
    /// Why, when given (a pipeline run's promotion says which run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Canonical spelling of a stage given in any case (`production` -> `Production`).
pub fn canonical_stage(stage: &str) -> Result<&'static str> {
    STAGES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(stage))
        .copied()
        .ok_or_else(|| {
            MlflowError::invalid(format!(
                "Invalid Model Version stage: {stage}. Value must be one of None, Staging, Production, Archived."
            ))
        })
}

/// Refuses an empty registered-model name.
pub fn validate_model_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(MlflowError::missing_param("name"));
    }
    if name.contains('/') || name.contains(':') {
        return Err(MlflowError::invalid(format!(
            "Invalid name: '{name}'. Registered model name cannot contain '/' or ':'"
        )));
    }
    if name.chars().count() > 500 {
        return Err(MlflowError::invalid(
            "'name' exceeds the maximum length of 500 characters",
        ));
    }
    Ok(())
}

/// A version number from its wire form; MLflow's error when it is not one.
pub fn parse_version(raw: &str) -> Result<i64> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            MlflowError::invalid(format!(
                "Parameter 'version' must be an integer, got '{raw}'."
            ))
        })
}

/// Refuses an alias MLflow refuses (empty, too long, `latest`, `v<digits>`, bad characters).
pub fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() {
        return Err(MlflowError::missing_param("alias"));
    }
    if alias.len() > MAX_ALIAS_LENGTH {
        return Err(MlflowError::invalid(format!(
            "'alias' exceeds the maximum length of {MAX_ALIAS_LENGTH} characters"
        )));
    }
    if !alias
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(MlflowError::invalid(format!(
            "Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores (_), and dashes (-)."
        )));
    }
    if alias.eq_ignore_ascii_case("latest") {
        return Err(MlflowError::invalid(
            "'latest' alias name (case insensitive) is reserved.",
        ));
    }
    let bytes = alias.as_bytes();
    if bytes.len() > 1
        && (bytes[0] == b'v' || bytes[0] == b'V')
        && bytes[1..].iter().all(u8::is_ascii_digit)
    {
        return Err(MlflowError::invalid(format!(
            "Version alias name '{alias}' is reserved."
        )));
    }
    Ok(())
}

/// A `models:/...` URI, as the client resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelUri {
    /// `models:/m-<id>` (any single segment without `@`).
    LoggedModel(String),
    /// `models:/<name>/<version>`
    Version {
        /// The registered model.
        name: String,
        /// The version number.
        version: i64,
    },
    /// `models:/<name>@<alias>`
    Alias {
        /// The registered model.
        name: String,
        /// The alias.
        alias: String,
    },
    /// `models:/<name>/<stage>`
    Stage {
        /// The registered model.
        name: String,
        /// The stage.
        stage: String,
    },
    /// `models:/<name>/latest`
    Latest {
        /// The registered model.
        name: String,
    },
}

/// Reads a `models:/` URI; MLflow's error for anything else.
pub fn parse_model_uri(uri: &str) -> Result<ModelUri> {
    let bad = || MlflowError::invalid(format!("Not a valid models:/ URI: '{uri}'"));
    let rest = uri.strip_prefix("models:/").ok_or_else(bad)?;
    let rest = rest.trim_start_matches('/').trim_end_matches('/');
    if rest.is_empty() || rest.contains('#') || rest.contains('?') {
        return Err(bad());
    }
    if let Some((name, alias)) = rest.split_once('@') {
        if name.is_empty() || alias.is_empty() || name.contains('/') {
            return Err(bad());
        }
        return Ok(ModelUri::Alias {
            name: name.into(),
            alias: alias.into(),
        });
    }
    match rest.split_once('/') {
        None => Ok(ModelUri::LoggedModel(rest.into())),
        Some((name, suffix)) if !name.is_empty() && !suffix.contains('/') && !suffix.is_empty() => {
            if suffix.chars().all(|c| c.is_ascii_digit()) {
                Ok(ModelUri::Version {
                    name: name.into(),
                    version: parse_version(suffix)?,
                })
            } else if suffix.eq_ignore_ascii_case("latest") {
                Ok(ModelUri::Latest { name: name.into() })
            } else {
                Ok(ModelUri::Stage {
                    name: name.into(),
                    stage: canonical_stage(suffix)?.into(),
                })
            }
        }
        _ => Err(bad()),
    }
}

/// What a model version's `source` names by id, whose read access its creator needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceNames {
    /// `runs:/<run_id>/...`
    pub run: Option<String>,
    /// `models:/m-<id>` (an MLflow 3 logged model).
    pub logged_model: Option<String>,
    /// `models:/<name>/<version>` (a version copied from another registered model).
    pub registered_model: Option<String>,
}

/// Reads the ids out of a model version source. Other sources (artifact URIs and paths)
/// name nothing here: the store accepts them only inside the artifacts of the run or
/// logged model the request names, which the caller must be able to read.
pub fn source_names(source: &str) -> SourceNames {
    let mut names = SourceNames::default();
    if let Some(rest) = source.strip_prefix("runs:/") {
        names.run = rest
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|id| !id.is_empty())
            .map(str::to_string);
    } else if source.starts_with("models:/") {
        match parse_model_uri(source) {
            Ok(ModelUri::LoggedModel(id)) => names.logged_model = Some(id),
            Ok(
                ModelUri::Version { name, .. }
                | ModelUri::Alias { name, .. }
                | ModelUri::Stage { name, .. }
                | ModelUri::Latest { name },
            ) => names.registered_model = Some(name),
            Err(_) => {}
        }
    }
    names
}

/// The logged-model tag that lists the registered versions made from it.
pub const MODEL_VERSIONS_TAG: &str = "mlflow.modelVersions";

/// The `mlflow.modelVersions` value after registering `name`/`version`: the list so far
/// with the new entry appended, written as MLflow's server writes it (Python's
/// `json.dumps`: `", "` and `": "` separators, non-ASCII escaped). NB: MLflow's client
/// then appends the same version once more, as a string; MLflow's own server keeps both,
/// and so does ctflow.
pub fn model_versions_tag(current: Option<&str>, name: &str, version: i64) -> String {
    let mut list: Vec<serde_json::Value> = current
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    list.push(serde_json::json!({ "name": name, "version": version }));
    crate::pyjson::dumps(&serde_json::Value::Array(list))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_model_versions_tag_is_written_as_mlflows_server_writes_it() {
        // The value MLflow 3.17's server wrote in the recorded quickstart session.
        assert_eq!(
            model_versions_tag(None, "tracking-quickstart", 1),
            r#"[{"name": "tracking-quickstart", "version": 1}]"#
        );
        let after_client = r#"[{"name": "m", "version": 1}, {"name": "m", "version": "1"}]"#;
        assert_eq!(
            model_versions_tag(Some(after_client), "m", 2),
            r#"[{"name": "m", "version": 1}, {"name": "m", "version": "1"}, {"name": "m", "version": 2}]"#
        );
        assert_eq!(
            model_versions_tag(Some("not json"), "café 🚀", 3),
            r#"[{"name": "caf\u00e9 \ud83d\ude80", "version": 3}]"#
        );
    }
    use super::*;

    #[test]
    fn sources_name_the_run_logged_model_or_registered_model_they_come_from() {
        let run = |id: &str| SourceNames {
            run: Some(id.into()),
            ..SourceNames::default()
        };
        assert_eq!(source_names("runs:/abc/model"), run("abc"));
        assert_eq!(source_names("runs:///abc"), run("abc"));
        assert_eq!(
            source_names("models:/m-123"),
            SourceNames {
                logged_model: Some("m-123".into()),
                ..SourceNames::default()
            }
        );
        // Every form that copies a registered version names its model, aliases included.
        for copy in [
            "models:/other-model/3",
            "models:/other-model@champion",
            "models:/other-model/Production",
            "models:/other-model/latest",
        ] {
            assert_eq!(
                source_names(copy),
                SourceNames {
                    registered_model: Some("other-model".into()),
                    ..SourceNames::default()
                },
                "{copy}"
            );
        }
        for nothing in [
            "runs:/",
            "models:/",
            "mlflow-artifacts:/1/abc/artifacts/model",
            "/tmp/x",
        ] {
            assert_eq!(source_names(nothing), SourceNames::default(), "{nothing}");
        }
    }

    #[test]
    fn stages_are_case_insensitive_on_input() {
        assert_eq!(canonical_stage("production").unwrap(), "Production");
        assert_eq!(canonical_stage("NONE").unwrap(), "None");
        let err = canonical_stage("Bogus").unwrap_err();
        assert!(err.message.contains("Invalid Model Version stage: Bogus"));
    }

    #[test]
    fn reserved_and_malformed_aliases() {
        validate_alias("champion").unwrap();
        validate_alias("a-b_c1").unwrap();
        assert!(
            validate_alias("LaTeSt")
                .unwrap_err()
                .message
                .contains("reserved")
        );
        assert!(
            validate_alias("v3")
                .unwrap_err()
                .message
                .contains("Version alias name 'v3' is reserved")
        );
        assert!(validate_alias("V12").is_err());
        validate_alias("v").unwrap();
        validate_alias("v1x").unwrap();
        assert!(validate_alias("bad alias").is_err());
        assert!(validate_alias(&"a".repeat(256)).is_err());
    }

    #[test]
    fn model_names() {
        validate_model_name("iris-classifier").unwrap();
        assert!(validate_model_name("a/b").is_err());
        assert!(validate_model_name("a:b").is_err());
        assert!(validate_model_name(" ").is_err());
    }

    #[test]
    fn versions_must_be_positive_integers() {
        assert_eq!(parse_version("3").unwrap(), 3);
        assert!(
            parse_version("abc")
                .unwrap_err()
                .message
                .contains("must be an integer, got 'abc'")
        );
        assert!(parse_version("0").is_err());
    }

    #[test]
    fn model_uris() {
        assert_eq!(
            parse_model_uri("models:/m-abc").unwrap(),
            ModelUri::LoggedModel("m-abc".into())
        );
        assert_eq!(
            parse_model_uri("models:/iris/3").unwrap(),
            ModelUri::Version {
                name: "iris".into(),
                version: 3
            }
        );
        assert_eq!(
            parse_model_uri("models:/iris@champion").unwrap(),
            ModelUri::Alias {
                name: "iris".into(),
                alias: "champion".into()
            }
        );
        assert_eq!(
            parse_model_uri("models:/iris/production").unwrap(),
            ModelUri::Stage {
                name: "iris".into(),
                stage: "Production".into()
            }
        );
        assert_eq!(
            parse_model_uri("models:/iris/latest").unwrap(),
            ModelUri::Latest {
                name: "iris".into()
            }
        );
        for bad in [
            "runs:/x/y",
            "models:/",
            "models:/a/b/c",
            "models:/a/1#x",
            "models:/iris/Bogus",
        ] {
            assert!(parse_model_uri(bad).is_err(), "{bad}");
        }
    }
}
