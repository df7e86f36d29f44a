//! Online scoring, the pure part: which registered scorers may judge an experiment's new
//! traces as they arrive, and the checks MLflow 3.17 makes when a scorer is configured
//! for it (`PUT /api/3.0/mlflow/scorers/online-config`).
//!
//! A scorer qualifies when its latest version's judge model is an AI-gateway endpoint
//! (`gateway:/<endpoint>`): the server holds that endpoint's provider key, so it can run
//! the judge without the user's credentials. A judge that needs expectations (ground
//! truth) cannot score a live trace, which has none.

use serde_json::Value;

use crate::error::MlflowError;
use crate::filter::parse_trace_filter;

/// The key MLflow's serialized instructions judge (`make_judge`) keeps its data under.
const INSTRUCTIONS_JUDGE_DATA: &str = "instructions_judge_pydantic_data";
/// The key of MLflow's built-in scorers (`Safety`, `RelevanceToQuery`, ...).
const BUILTIN_SCORER_DATA: &str = "builtin_scorer_pydantic_data";
/// The model URI scheme of the AI gateway's endpoints.
const GATEWAY_PROVIDER: &str = "gateway";

/// The judge model a serialized scorer names, where MLflow 3.17 looks for it: an
/// instructions judge's or built-in scorer's `model`, a memory-augmented judge's base
/// judge, a third-party scorer's `model`.
pub fn scorer_model(serialized: &Value) -> Option<&str> {
    let data = |key: &str| serialized.get(key).filter(|v| is_truthy(v));
    if let Some(judge) = data(INSTRUCTIONS_JUDGE_DATA) {
        return judge.get("model").and_then(Value::as_str);
    }
    if let Some(builtin) = data(BUILTIN_SCORER_DATA) {
        return builtin.get("model").and_then(Value::as_str);
    }
    if let Some(memory) = data("memory_augmented_judge_data") {
        return memory.get("base_judge").and_then(scorer_model);
    }
    if let Some(third_party) = data("third_party_scorer_data") {
        return third_party.get("model").and_then(Value::as_str);
    }
    None
}

/// Python's truthiness of a JSON value, as MLflow's `if data := serialized.get(key)` reads it.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
    }
}

/// `<provider>:/<name>` split as MLflow splits a judge's model URI.
fn split_model_uri(model: &str) -> Option<(&str, &str)> {
    let (provider, path) = model.split_once(":/")?;
    let path = path.trim_start_matches('/');
    (!provider.is_empty() && !path.is_empty()).then_some((provider, path))
}

/// The gateway endpoint a judge model names (`gateway:/chat` -> `chat`), if it names one.
pub fn gateway_endpoint(model: &str) -> Option<&str> {
    split_model_uri(model)
        .filter(|(provider, _)| *provider == GATEWAY_PROVIDER)
        .map(|(_, endpoint)| endpoint)
}

/// The `{{ name }}` variables of a judge's instructions, as MLflow's prompt template reads them.
fn template_variables(instructions: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = instructions;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let name = after[..close].trim();
        let valid = !name.is_empty()
            && name.split('.').all(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if valid {
            names.push(name);
            rest = &after[close + 2..];
        } else {
            rest = after;
        }
    }
    names
}

/// Whether an instructions judge's template asks for `{{ expectations }}`.
pub fn requires_expectations(serialized: &Value) -> bool {
    serialized
        .get(INSTRUCTIONS_JUDGE_DATA)
        .and_then(|judge| judge.get("instructions"))
        .and_then(Value::as_str)
        .is_some_and(|instructions| template_variables(instructions).contains(&"expectations"))
}

/// Checks a sampling rate and trace filter before they are stored.
pub fn validate_config(sample_rate: f64, filter_string: Option<&str>) -> Result<(), MlflowError> {
    if !(0.0..=1.0).contains(&sample_rate) {
        return Err(MlflowError::invalid(format!(
            "sample_rate must be between 0.0 and 1.0, got {}",
            crate::pyjson::python_float(sample_rate)
        )));
    }
    if let Some(filter) = filter_string.filter(|f| !f.is_empty()) {
        parse_trace_filter(filter)?;
    }
    Ok(())
}

/// Whether the latest version of a scorer (its serialized JSON) may be scored online at
/// `sample_rate`; a rate of zero switches scoring off and is always allowed.
pub fn check_scorer(name: &str, serialized: &str, sample_rate: f64) -> Result<(), MlflowError> {
    if sample_rate <= 0.0 {
        return Ok(());
    }
    let data: Value = serde_json::from_str(serialized).unwrap_or(Value::Null);
    if scorer_model(&data).and_then(gateway_endpoint).is_none() {
        return Err(MlflowError::invalid(format!(
            "Scorer '{name}' does not use a gateway model. Automatic evaluation is only \
             supported for scorers that use gateway models."
        )));
    }
    if requires_expectations(&data) {
        return Err(MlflowError::invalid(format!(
            "Scorer '{name}' requires expectations, but scorers with expectations are not \
             currently supported for automatic evaluation."
        )));
    }
    Ok(())
}

/// Whether a stored scorer version is one the online scorer runs (its model is a gateway
/// endpoint); configurations of scorers whose latest version is not are left idle.
pub fn runs_online(serialized: &str) -> bool {
    serde_json::from_str::<Value>(serialized)
        .ok()
        .as_ref()
        .and_then(scorer_model)
        .and_then(gateway_endpoint)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_model_is_found_where_mlflow_looks() {
        let judge = json!({"instructions_judge_pydantic_data": {"model": "gateway:/chat"}});
        assert_eq!(scorer_model(&judge), Some("gateway:/chat"));
        let builtin = json!({"builtin_scorer_pydantic_data": {"model": "openai:/gpt-4"}});
        assert_eq!(scorer_model(&builtin), Some("openai:/gpt-4"));
        let memory = json!({"memory_augmented_judge_data": {"base_judge": judge}});
        assert_eq!(scorer_model(&memory), Some("gateway:/chat"));
        let empty = json!({"instructions_judge_pydantic_data": {}, "builtin_scorer_pydantic_data": {"model": "gateway:/x"}});
        assert_eq!(scorer_model(&empty), Some("gateway:/x"));
        assert_eq!(scorer_model(&json!({"call_source": "def f(): ..."})), None);
    }

    #[test]
    fn only_gateway_endpoints_qualify() {
        assert_eq!(gateway_endpoint("gateway:/chat"), Some("chat"));
        assert_eq!(gateway_endpoint("gateway:///chat"), Some("chat"));
        assert_eq!(gateway_endpoint("openai:/gpt-4"), None);
        assert_eq!(gateway_endpoint("gateway:/"), None);
        assert_eq!(gateway_endpoint("chat"), None);
        assert!(runs_online(
            r#"{"instructions_judge_pydantic_data": {"model": "gateway:/e"}}"#
        ));
        assert!(!runs_online(r#"{"builtin_scorer_pydantic_data": {}}"#));
        assert!(!runs_online("not json"));
    }

    #[test]
    fn expectations_are_read_from_the_template() {
        let judge = |instructions: &str| {
            json!({"instructions_judge_pydantic_data": {
                "model": "gateway:/e", "instructions": instructions}})
        };
        assert!(requires_expectations(&judge(
            "Is {{ outputs }} what {{expectations}} says?"
        )));
        assert!(!requires_expectations(&judge(
            "Is {{ outputs }} polite to {{ inputs }}?"
        )));
        assert!(!requires_expectations(&judge(
            "{{ not a var }} expectations"
        )));
        assert_eq!(
            template_variables("{{ a }} {{b.c}} {{ 1x }} {{"),
            vec!["a", "b.c"]
        );
    }

    #[test]
    fn configs_are_checked_as_mlflow_checks_them() {
        assert!(validate_config(0.0, None).is_ok());
        assert!(validate_config(1.0, Some("status = 'OK'")).is_ok());
        let err = validate_config(1.5, None).unwrap_err();
        assert_eq!(
            err.message,
            "sample_rate must be between 0.0 and 1.0, got 1.5"
        );
        assert!(validate_config(-0.1, None).is_err());
        assert!(validate_config(f64::NAN, None).is_err());
        assert!(validate_config(0.5, Some("status = ")).is_err());

        let plain = r#"{"call_source": "..."}"#;
        assert!(check_scorer("s", plain, 0.0).is_ok());
        let err = check_scorer("s", plain, 0.5).unwrap_err();
        assert!(
            err.message
                .starts_with("Scorer 's' does not use a gateway model.")
        );
        let needs_truth = r#"{"instructions_judge_pydantic_data": {"model": "gateway:/e",
            "instructions": "Compare {{ outputs }} with {{ expectations }}"}}"#;
        let err = check_scorer("s", needs_truth, 0.5).unwrap_err();
        assert!(err.message.contains("requires expectations"));
        assert!(
            check_scorer(
                "s",
                r#"{"instructions_judge_pydantic_data": {"model": "gateway:/e"}}"#,
                1.0
            )
            .is_ok()
        );
    }
}
