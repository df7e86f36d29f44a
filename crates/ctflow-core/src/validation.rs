//! MLflow's server-side validation rules and limits (SPEC section 8).

use crate::{MlflowError, Result};

/// MLflow's limit: the longest metric, param or tag key.
pub const MAX_ENTITY_KEY_LENGTH: usize = 250;
/// MLflow's limit: the longest param value.
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// MLflow's limit: the longest run tag value.
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
/// MLflow's limit: the longest experiment name.
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;
/// MLflow's limit: the longest experiment tag value.
pub const MAX_EXPERIMENT_TAG_VALUE_LENGTH: usize = 20000;
/// MLflow's limit: the most metrics one log-batch request takes.
pub const MAX_BATCH_METRICS: usize = 1000;
/// MLflow's limit: the most params, and the most tags, one log-batch request takes.
pub const MAX_BATCH_PARAMS_TAGS: usize = 100;
/// MLflow's limit: the most metrics, params and tags together one log-batch request takes.
pub const MAX_BATCH_TOTAL: usize = 1000;
/// MLflow's limit: the largest page a run search returns.
pub const MAX_RUNS_SEARCH_RESULTS: i64 = 50000;
/// MLflow's limit: the largest page an experiment search returns.
pub const MAX_EXPERIMENTS_SEARCH_RESULTS: i64 = 50000;
/// MLflow's limit: the longest dataset name.
pub const MAX_DATASET_NAME_LENGTH: usize = 500;
/// MLflow's limit: the longest dataset digest.
pub const MAX_DATASET_DIGEST_LENGTH: usize = 36;
/// MLflow's limit: the longest dataset source.
pub const MAX_DATASET_SOURCE_LENGTH: usize = 65535;
/// MLflow's limit: the longest dataset schema.
pub const MAX_DATASET_SCHEMA_LENGTH: usize = 1_048_575;
/// MLflow's limit: the longest dataset profile.
pub const MAX_DATASET_PROFILE_LENGTH: usize = 16_777_215;
/// MLflow's limit: the longest input tag key.
pub const MAX_INPUT_TAG_KEY_LENGTH: usize = 255;
/// MLflow's limit: the longest input tag value.
pub const MAX_INPUT_TAG_VALUE_LENGTH: usize = 500;

/// What a key names, for the wording of errors.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// A metric key.
    Metric,
    /// A param key.
    Param,
    /// A tag key.
    Tag,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            KeyKind::Metric => "Metric name",
            KeyKind::Param => "Param key",
            KeyKind::Tag => "Tag key",
        }
    }
}

fn allowed_key_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | ':' | '/')
}

/// Normalises a relative path the way Python's `posixpath.normpath` does.
pub fn normpath(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Validates a metric, param or tag key.
pub fn validate_key(key: &str, kind: KeyKind) -> Result<()> {
    if key.is_empty() {
        return Err(MlflowError::invalid(format!(
            "Invalid value \"\" for parameter 'key' supplied: {} must not be empty.",
            kind.label()
        )));
    }
    if !key.chars().all(allowed_key_char) {
        return Err(MlflowError::invalid(format!(
            "Invalid value \"{key}\" for parameter 'name' supplied: Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/)."
        )));
    }
    let normalized = normpath(key);
    if normalized != key || key == "." || key.starts_with("..") || key.starts_with('/') {
        return Err(MlflowError::invalid(format!(
            "Invalid value \"{key}\" for parameter 'name' supplied: Names may be treated as files in certain cases, and must not resolve to other names when treated as such. This name would resolve to '{normalized}'"
        )));
    }
    if key.chars().count() > MAX_ENTITY_KEY_LENGTH {
        return Err(MlflowError::invalid(format!(
            "'{}' exceeds the maximum length of {MAX_ENTITY_KEY_LENGTH} characters",
            kind.label()
        )));
    }
    Ok(())
}

/// Truncates to at most `max` characters (MLflow's `MLFLOW_TRUNCATE_LONG_VALUES` default).
pub fn truncate_chars(value: &str, max: usize) -> &str {
    match value.char_indices().nth(max) {
        Some((byte_index, _)) => &value[..byte_index],
        None => value,
    }
}

/// Refuses a value longer than `max` characters, naming the field.
pub fn validate_max_length(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(MlflowError::invalid(format!(
            "'{field}' exceeds the maximum length of {max} characters"
        )));
    }
    Ok(())
}

/// Refuses an empty or too long experiment name.
pub fn validate_experiment_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(MlflowError::missing_param("name"));
    }
    validate_max_length("name", name, MAX_EXPERIMENT_NAME_LENGTH)
}

/// Run statuses accepted by runs/update.
pub const RUN_STATUSES: &[&str] = &["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// Refuses a status runs/update does not take.
pub fn validate_run_status(status: &str) -> Result<()> {
    if RUN_STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(MlflowError::invalid(format!(
            "Invalid value '{status}' for parameter 'status': must be one of {}",
            RUN_STATUSES.join(", ")
        )))
    }
}

/// Refuses a page size that is not between 1 and `max`.
pub fn validate_max_results(value: i64, max: i64) -> Result<()> {
    if value <= 0 || value > max {
        return Err(MlflowError::invalid(format!(
            "Invalid value {value} for parameter 'max_results' supplied. It must be at most {max}, and greater than 0"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in ["accuracy", "a.b", "loss/train", "x y:z", "ключ", "a-b_c"] {
            validate_key(key, KeyKind::Metric).unwrap();
        }
    }

    #[test]
    fn rejects_bad_characters() {
        let err = validate_key("bad key!", KeyKind::Param).unwrap_err();
        assert!(err.message.contains("Names may only contain"));
    }

    #[test]
    fn rejects_keys_that_resolve_elsewhere() {
        for key in ["../x", "/abs", "a//b", ".", "a/", "a/./b", "a/../b"] {
            let err = validate_key(key, KeyKind::Tag).unwrap_err();
            assert!(
                err.message.contains("would resolve to"),
                "{key}: {}",
                err.message
            );
        }
    }

    #[test]
    fn rejects_long_keys() {
        let err = validate_key(&"k".repeat(251), KeyKind::Param).unwrap_err();
        assert_eq!(
            err.message,
            "'Param key' exceeds the maximum length of 250 characters"
        );
        validate_key(&"k".repeat(250), KeyKind::Param).unwrap();
    }

    #[test]
    fn normpath_matches_python() {
        assert_eq!(normpath("a//b"), "a/b");
        assert_eq!(normpath("../x"), "../x");
        assert_eq!(normpath("/abs/../x"), "/x");
        assert_eq!(normpath("a/./b/"), "a/b");
        assert_eq!(normpath(""), ".");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
    }

    proptest! {
        #[test]
        fn valid_keys_are_their_own_normpath(key in "[a-z0-9_][a-z0-9_.-]{0,20}(/[a-z0-9_][a-z0-9_-]{0,10}){0,3}") {
            prop_assume!(!key.split('/').any(|p| p == "." || p == ".."));
            validate_key(&key, KeyKind::Metric).unwrap();
        }

        #[test]
        fn truncate_never_exceeds(s in ".{0,50}", max in 0usize..60) {
            prop_assert!(truncate_chars(&s, max).chars().count() <= max);
        }
    }
}
