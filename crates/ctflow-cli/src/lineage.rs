//! `ctflow models lineage NAME[/VERSION|@ALIAS]`: where a model version came from. The
//! chain is read from the registry, the version's MLflow run (parameters, code tags,
//! dataset inputs) and, for a pipeline's run, the pipeline run (its trigger and the
//! training data snapshot it recorded).

use anyhow::{Context, Result, bail};
use ctflow_core::data::DataSnapshot;
use ctflow_core::registry::ModelVersion;
use serde_json::{Value, json};

use crate::OutputFormat;
use crate::client::TrackingClient;
use crate::commands::print_json;

/// Which version of a model: a number, or what an alias points at.
#[derive(Debug, PartialEq)]
enum Which {
    Version(String),
    Alias(String),
}

/// `name@alias`, `name/version`, or `name` (its `champion`).
fn parse_target(target: &str) -> Result<(String, Which)> {
    let (name, which) = match (target.split_once('@'), target.rsplit_once('/')) {
        (Some((name, alias)), _) => (name, Which::Alias(alias.to_string())),
        (None, Some((name, version))) => (name, Which::Version(version.to_string())),
        (None, None) => (target, Which::Alias("champion".to_string())),
    };
    if name.trim().is_empty() {
        bail!("give a model as NAME, NAME/VERSION or NAME@ALIAS (got '{target}')");
    }
    Ok((name.to_string(), which))
}

/// The lineage of one model version, as JSON (the `--output json` form).
pub(crate) async fn lineage(client: &TrackingClient, target: &str) -> Result<Value> {
    let (name, which) = parse_target(target)?;
    let version = match which {
        Which::Version(version) => version,
        Which::Alias(alias) => client
            .alias_version(&name, &alias)
            .await
            .with_context(|| format!("model '{name}' has no alias '{alias}'"))?,
    };
    let found = client
        .get(
            "model-versions/get",
            &[("name", name.clone()), ("version", version.clone())],
        )
        .await?;
    let model_version: ModelVersion = serde_json::from_value(found["model_version"].clone())
        .context("the server answered with an unexpected model version")?;
    let uris: Vec<String> = std::iter::once(format!("models:/{name}/{version}"))
        .chain(
            model_version
                .aliases
                .iter()
                .map(|a| format!("models:/{name}@{a}")),
        )
        .collect();
    let mut out = json!({
        "model": {
            "name": name,
            "version": model_version.version,
            "aliases": model_version.aliases,
            "stage": model_version.current_stage,
            "source": model_version.source,
            "uris": uris,
        },
    });
    if model_version.run_id.is_empty() {
        return Ok(out);
    }
    let run = client.get_run(&model_version.run_id).await?;
    let params: serde_json::Map<String, Value> = run
        .data
        .params
        .iter()
        .map(|p| (p.key.clone(), Value::String(p.value.clone())))
        .collect();
    let metrics: serde_json::Map<String, Value> = run
        .data
        .metrics
        .iter()
        .map(|m| (m.key.clone(), json!(m.value)))
        .collect();
    out["run"] = json!({
        "run_id": run.info.run_uuid,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "params": params,
        "metrics": metrics,
    });
    out["code"] = json!({
        "source": run.tag("mlflow.source.name"),
        "entry_point": run.tag("mlflow.project.entryPoint"),
        "git_commit": run.tag("mlflow.source.git.commit"),
        "git_repo": run.tag("mlflow.source.git.repoURL"),
    });
    out["datasets"] = json!(run.inputs.dataset_inputs);
    if let Some(pipeline_run) = run.tag("ctflow.pipeline_run") {
        let described = client.describe_run(pipeline_run).await?;
        let run = &described.pipeline_run;
        out["pipeline_run"] = json!({
            "id": run.id,
            "pipeline": run.pipeline,
            "phase": run.phase,
            "decision": run.decision,
            "project": run.spec.project,
        });
        out["trigger"] = json!(run.trigger);
        if let Some(snapshot) = &described.data_snapshot {
            out["data"] = json!(snapshot);
        }
    }
    Ok(out)
}

fn print_text(lineage: &Value) -> Result<()> {
    let model = &lineage["model"];
    println!(
        "model    {} version {} ({}){}",
        model["name"].as_str().unwrap_or_default(),
        model["version"].as_str().unwrap_or_default(),
        model["stage"].as_str().unwrap_or_default(),
        match model["aliases"].as_array() {
            Some(a) if !a.is_empty() => format!(
                " @{}",
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" @")
            ),
            _ => String::new(),
        }
    );
    if let Some(uris) = model["uris"].as_array() {
        for uri in uris.iter().filter_map(Value::as_str) {
            println!("         {uri}");
        }
    }
    let Some(run) = lineage.get("run") else {
        println!(
            "<- no run: the version was registered from {}",
            model["source"]
        );
        return Ok(());
    };
    println!(
        "<- run   {} ({}) in experiment {}",
        run["run_id"].as_str().unwrap_or_default(),
        run["status"].as_str().unwrap_or_default(),
        run["experiment_id"].as_str().unwrap_or_default()
    );
    if let Some(metrics) = run["metrics"].as_object() {
        for (key, value) in metrics {
            println!("         metric {key} = {value}");
        }
    }
    match lineage.get("data") {
        Some(data) => {
            let snapshot: DataSnapshot = serde_json::from_value(data.clone())
                .context("the server answered with an unexpected data snapshot")?;
            println!(
                "<- data  snapshot {} ({} files, {} rows)",
                snapshot.id,
                snapshot.files.len(),
                snapshot.rows
            );
            for file in &snapshot.files {
                let rows = file
                    .kept_rows()
                    .map_or_else(|| "-".to_string(), |r| r.to_string());
                println!(
                    "         {}  sha256 {}  {} rows",
                    file.path,
                    &file.sha256[..file.sha256.len().min(16)],
                    rows
                );
            }
        }
        None => match lineage["datasets"].as_array() {
            Some(inputs) if !inputs.is_empty() => {
                for input in inputs {
                    println!(
                        "<- data  dataset {} digest {}",
                        input["dataset"]["name"].as_str().unwrap_or_default(),
                        input["dataset"]["digest"].as_str().unwrap_or_default()
                    );
                }
            }
            _ => println!("<- data  not recorded"),
        },
    }
    if let Some(trigger) = lineage.get("trigger") {
        let kind = trigger["kind"].as_str().unwrap_or_default();
        let files: Vec<&str> = trigger["files"]
            .as_array()
            .map(|f| f.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let detail = match kind {
            "data" => format!("new files: {}", files.join(", ")),
            "drift" => {
                let mut text = format!(
                    "{} statistic {} over threshold {} on {} rows",
                    trigger["detail"]["method"].as_str().unwrap_or_default(),
                    trigger["detail"]["statistic"],
                    trigger["detail"]["threshold"],
                    trigger["detail"]["rows"]
                );
                if let Some(reference) = trigger["detail"]["reference"].as_str() {
                    text.push_str(&format!(" against {reference}"));
                }
                text
            }
            "manual" => format!(
                "by {}",
                trigger["user"].as_str().unwrap_or("an unnamed user")
            ),
            _ => trigger["dedupe_key"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let pipeline_run = &lineage["pipeline_run"];
        println!(
            "<- trigger {kind} ({detail}); pipeline {} run {}",
            pipeline_run["pipeline"].as_str().unwrap_or_default(),
            pipeline_run["id"].as_str().unwrap_or_default()
        );
    }
    let code = &lineage["code"];
    println!(
        "<- code  {} entry point {}{}",
        code["source"].as_str().unwrap_or("-"),
        code["entry_point"].as_str().unwrap_or("-"),
        code["git_commit"]
            .as_str()
            .map(|c| format!(" at commit {c}"))
            .unwrap_or_default()
    );
    if let Some(params) = run["params"].as_object() {
        let shown: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!("         parameters {}", shown.join(" "));
    }
    Ok(())
}

/// Prints the lineage of `target`.
pub async fn run(client: &TrackingClient, target: &str, output: OutputFormat) -> Result<()> {
    let lineage = lineage(client, target).await?;
    match output {
        OutputFormat::Json => print_json(&lineage),
        OutputFormat::Table => print_text(&lineage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_version_an_alias_or_the_champion() {
        let parse = |t: &str| parse_target(t).ok();
        assert_eq!(
            parse("iris/3"),
            Some(("iris".into(), Which::Version("3".into())))
        );
        assert_eq!(
            parse("iris@challenger"),
            Some(("iris".into(), Which::Alias("challenger".into())))
        );
        assert_eq!(
            parse("iris"),
            Some(("iris".into(), Which::Alias("champion".into())))
        );
        assert!(parse_target("@champion").is_err());
    }
}
