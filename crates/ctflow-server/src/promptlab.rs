//! The MLflow UI's prompt lab: `POST /ajax-api/2.0/mlflow/runs/create-promptlab-run` records
//! one prompt-engineering attempt as a finished run: the model route, prompt template and
//! model parameters as params, the attempt's inputs and output as the run's
//! `eval_results_table.json`, tagged as MLflow tags it. (MLflow also saves a prompt-lab
//! model under `model/`, servable through its AI gateway; ctflow does not.) A run whose
//! params or table could not be written is answered FAILED, as MLflow answers it.

use axum::extract::State;
use ctflow_core::MlflowError;
use ctflow_core::entities::KeyValue;
use ctflow_core::ids::parse_experiment_id;
use ctflow_store::{NewRun, RunUpdate};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{JsonResult, wrap};
use crate::params::Params;

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a Value, MlflowError> {
    let missing =
        || MlflowError::invalid(format!("CreatePromptlabRun request must specify {name}."));
    match p.get(name) {
        None | Some(Value::Null) => Err(missing()),
        Some(Value::String(s)) if s.is_empty() => Err(missing()),
        Some(Value::Array(items)) if items.is_empty() => Err(missing()),
        Some(value) => Ok(value),
    }
}

/// `[{"key", "value"}]` with any JSON value read as text (as MLflow's `str()` does).
fn pairs(p: &Params, name: &str) -> Result<Vec<KeyValue>, MlflowError> {
    let Some(value) = p.get(name).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(MlflowError::invalid(format!(
            "Invalid value for '{name}': expected a list of {{\"key\", \"value\"}}"
        )));
    };
    items
        .iter()
        .map(|item| {
            let key = item.get("key").and_then(Value::as_str).ok_or_else(|| {
                MlflowError::invalid(format!(
                    "Invalid value for '{name}': each item needs a 'key'"
                ))
            })?;
            let value = match item.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Ok(KeyValue::new(key, value))
        })
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `POST /ajax-api/2.0/mlflow/runs/create-promptlab-run`.
pub async fn create_promptlab_run(State(state): State<AppState>, p: Params) -> JsonResult {
    let experiment_id = parse_experiment_id(&text(required(&p, "experiment_id")?))?;
    let prompt_template = text(required(&p, "prompt_template")?);
    required(&p, "prompt_parameters")?;
    let prompt_parameters = pairs(&p, "prompt_parameters")?;
    let model_route = text(required(&p, "model_route")?);
    let model_parameters = pairs(&p, "model_parameters")?;
    let model_input = text(required(&p, "model_input")?);
    let model_output = p.get("model_output").filter(|v| !v.is_null()).map(text);
    let output_parameters = pairs(&p, "model_output_parameters")?;
    required(&p, "mlflow_version")?;

    let run = state
        .store
        .create_run(NewRun {
            experiment_id,
            user_id: p.str("user_id")?.unwrap_or_else(|| "unknown".into()),
            start_time: p.i64("start_time")?,
            run_name: p.str("run_name")?,
            tags: p.key_values("tags")?,
        })
        .await?;
    let run_id = run.info.run_id.clone();
    let mut params = model_parameters;
    params.push(KeyValue::new("model_route", model_route));
    params.push(KeyValue::new("prompt_template", prompt_template));
    let table = json!({
        "columns": prompt_parameters.iter().map(|kv| kv.key.clone())
            .chain(["prompt".to_string(), "output".to_string()])
            .chain(output_parameters.iter().map(|kv| kv.key.clone()))
            .collect::<Vec<_>>(),
        "data": [prompt_parameters.iter().map(|kv| Value::String(kv.value.clone()))
            .chain([Value::String(model_input), model_output.map_or(Value::Null, Value::String)])
            .chain(output_parameters.iter().map(|kv| Value::String(kv.value.clone())))
            .collect::<Vec<_>>()],
    });
    let recorded = async {
        state
            .store
            .log_batch(
                &run_id,
                Vec::new(),
                params,
                vec![
                    KeyValue::new(
                        "mlflow.loggedArtifacts",
                        r#"[{"path": "eval_results_table.json", "type": "table"}]"#,
                    ),
                    KeyValue::new("mlflow.runSourceType", "PROMPT_ENGINEERING"),
                ],
            )
            .await?;
        let (repository, path) = crate::artifacts::located(
            &state,
            &run.info.artifact_uri,
            &["eval_results_table.json".to_string()],
        )?;
        let bytes = ctflow_core::pyjson::dumps(&table).into_bytes();
        repository
            .put(&path, Box::pin(std::io::Cursor::new(bytes)))
            .await?;
        Ok::<(), crate::error::ApiError>(())
    }
    .await;
    let status = if recorded.is_ok() {
        "FINISHED"
    } else {
        "FAILED"
    };
    state
        .store
        .update_run(
            &run_id,
            RunUpdate {
                status: Some(status.into()),
                end_time: Some(ctflow_core::now_ms()),
                run_name: None,
            },
        )
        .await?;
    // As MLflow: the run is answered either way; a failed one says so in its status.
    if let Err(error) = recorded {
        tracing::warn!(run_id, error = ?error, "a prompt-lab run could not be recorded whole");
    }
    wrap("run", state.store.get_run(&run_id).await?)
}
