//! `ctflow models diff NAME A B`: what changed between two versions of a model — the
//! training data (file by file, from their snapshots), the parameters, the code and the
//! metrics — read from the same chain as `ctflow models lineage`.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use ctflow_core::data::{DataSnapshot, SnapshotFile, diff_snapshots};
use serde_json::{Map, Value, json};

use crate::OutputFormat;
use crate::client::TrackingClient;
use crate::commands::print_json;

/// `3` is version 3, `@champion` what the alias points at.
fn target(name: &str, which: &str) -> String {
    if which.starts_with('@') {
        format!("{name}{which}")
    } else {
        format!("{name}/{which}")
    }
}

fn file_json(file: &SnapshotFile) -> Value {
    json!({ "path": file.path, "sha256": file.sha256, "rows": file.kept_rows() })
}

fn snapshot_of(lineage: &Value) -> Result<Option<DataSnapshot>> {
    match lineage.get("data") {
        Some(data) => serde_json::from_value(data.clone())
            .map(Some)
            .context("the server answered with an unexpected data snapshot"),
        None => Ok(None),
    }
}

/// The keys of two JSON objects whose values differ, each with both values.
fn changed_keys(a: &Value, b: &Value) -> Vec<Value> {
    let empty = Map::new();
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| json!({ "name": k, "a": a.get(k), "b": b.get(k) }))
        .collect()
}

/// Every metric of either version, with both values and the change.
fn metrics(a: &Value, b: &Value) -> Vec<Value> {
    let empty = Map::new();
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let (x, y) = (
                a.get(k).and_then(Value::as_f64),
                b.get(k).and_then(Value::as_f64),
            );
            let change = x.zip(y).map(|(x, y)| y - x);
            json!({ "name": k, "a": x, "b": y, "change": change })
        })
        .collect()
}

fn side(lineage: &Value, snapshot: Option<&DataSnapshot>) -> Value {
    json!({
        "version": lineage["model"]["version"],
        "run_id": lineage["run"]["run_id"],
        "pipeline_run": lineage["pipeline_run"]["id"],
        "trigger": lineage["trigger"]["kind"],
        "snapshot": snapshot.map(|s| json!({ "id": s.id, "files": s.files.len(), "rows": s.rows })),
    })
}

/// The difference between two lineages, as JSON (the `--output json` form).
fn difference(name: &str, a: &Value, b: &Value) -> Result<Value> {
    let (snap_a, snap_b) = (snapshot_of(a)?, snapshot_of(b)?);
    let data = match (&snap_a, &snap_b) {
        (Some(x), Some(y)) => {
            let diff = diff_snapshots(x, y);
            json!({
                "same": diff.is_empty(),
                "added": diff.added.iter().map(file_json).collect::<Vec<_>>(),
                "removed": diff.removed.iter().map(file_json).collect::<Vec<_>>(),
                "changed": diff.changed.iter().map(|(old, new)| json!({
                    "path": new.path, "a": file_json(old), "b": file_json(new),
                })).collect::<Vec<_>>(),
                "unchanged": diff.unchanged,
            })
        }
        _ => json!({ "same": Value::Null, "note": "a version has no recorded data snapshot" }),
    };
    Ok(json!({
        "model": name,
        "a": side(a, snap_a.as_ref()),
        "b": side(b, snap_b.as_ref()),
        "data": data,
        "params": changed_keys(&a["run"]["params"], &b["run"]["params"]),
        "code": changed_keys(&a["code"], &b["code"]),
        "metrics": metrics(&a["run"]["metrics"], &b["run"]["metrics"]),
    }))
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(digest: &Value) -> String {
    text(digest).chars().take(16).collect()
}

fn print_text(diff: &Value) {
    let (a, b) = (&diff["a"], &diff["b"]);
    println!(
        "{}: version {} -> version {}",
        text(&diff["model"]),
        text(&a["version"]),
        text(&b["version"])
    );
    let snapshot = |s: &Value| match s {
        Value::Null => "no snapshot".to_string(),
        s => format!(
            "snapshot {} ({} files, {} rows)",
            short(&s["id"]),
            s["files"],
            s["rows"]
        ),
    };
    let data = &diff["data"];
    let same = match data["same"].as_bool() {
        Some(true) => " (the same data)",
        _ => "",
    };
    println!(
        "data     {} -> {}{same}",
        snapshot(&a["snapshot"]),
        snapshot(&b["snapshot"])
    );
    let file_line = |mark: &str, f: &Value| {
        println!(
            "  {mark} {}  sha256 {}  {} rows",
            text(&f["path"]),
            short(&f["sha256"]),
            text(&f["rows"])
        );
    };
    for f in data["added"].as_array().into_iter().flatten() {
        file_line("+", f);
    }
    for f in data["removed"].as_array().into_iter().flatten() {
        file_line("-", f);
    }
    for c in data["changed"].as_array().into_iter().flatten() {
        println!(
            "  ~ {}  sha256 {} -> {}  rows {} -> {}",
            text(&c["path"]),
            short(&c["a"]["sha256"]),
            short(&c["b"]["sha256"]),
            text(&c["a"]["rows"]),
            text(&c["b"]["rows"])
        );
    }
    for (section, label) in [("params", "params "), ("code", "code   ")] {
        let changes = diff[section].as_array().cloned().unwrap_or_default();
        if changes.is_empty() {
            println!("{label}  no differences");
        }
        for c in changes {
            println!(
                "{label}  {}: {} -> {}",
                text(&c["name"]),
                text(&c["a"]),
                text(&c["b"])
            );
        }
    }
    for m in diff["metrics"].as_array().into_iter().flatten() {
        let change = m["change"]
            .as_f64()
            .map(|c| format!("  ({c:+.4})"))
            .unwrap_or_default();
        println!(
            "metric   {}: {} -> {}{change}",
            text(&m["name"]),
            text(&m["a"]),
            text(&m["b"])
        );
    }
}

/// Prints what changed from version `a` to version `b` of model `name`.
pub async fn run(
    client: &TrackingClient,
    name: &str,
    a: &str,
    b: &str,
    output: OutputFormat,
) -> Result<()> {
    let first = crate::lineage::lineage(client, &target(name, a)).await?;
    let second = crate::lineage::lineage(client, &target(name, b)).await?;
    let diff = difference(name, &first, &second)?;
    match output {
        OutputFormat::Json => print_json(&diff),
        OutputFormat::Table => {
            print_text(&diff);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_code_and_metrics_are_compared_key_by_key() {
        let a = json!({"run": {"params": {"C": "0.5", "k": "1"}, "metrics": {"accuracy": 0.9}},
                       "code": {"git_commit": "abc"}, "model": {"version": "1"}});
        let b = json!({"run": {"params": {"C": "1.0", "k": "1"}, "metrics": {"accuracy": 0.95, "f1": 0.9}},
                       "code": {"git_commit": "abc"}, "model": {"version": "2"}});
        let diff = difference("m", &a, &b).expect("a difference");
        assert_eq!(
            diff["params"],
            json!([{"name": "C", "a": "0.5", "b": "1.0"}])
        );
        assert_eq!(diff["code"], json!([]));
        assert_eq!(diff["metrics"][0]["name"], "accuracy");
        assert!((diff["metrics"][0]["change"].as_f64().unwrap_or(0.0) - 0.05).abs() < 1e-9);
        assert_eq!(
            diff["metrics"][1],
            json!({"name": "f1", "a": null, "b": 0.9, "change": null})
        );
        assert_eq!(diff["data"]["same"], Value::Null);
        assert_eq!(target("m", "@champion"), "m@champion");
        assert_eq!(target("m", "3"), "m/3");
    }
}
