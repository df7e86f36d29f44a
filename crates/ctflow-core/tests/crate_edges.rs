//! The workspace's layering, read from `cargo metadata`: a crate that gains a dependency
//! its layer forbids fails this test. Normal (non-dev) dependencies count, transitively.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// (crate, what it may never depend on, why).
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "ctflow-core",
        &["tokio", "sqlx", "reqwest", "hyper", "axum"],
        "core is pure logic: no async runtime, no I/O",
    ),
    (
        "ctflow-worker",
        &["ctflow-store"],
        "workers reach the store through the REST API",
    ),
    (
        "ctflow-watcher",
        &["ctflow-store", "sqlx"],
        "the watcher records through the REST API and the bus: no database credentials",
    ),
    (
        "ctflow-client",
        &["ctflow-store", "ctflow-server", "ctflow-controller"],
        "the client is the REST API's other end, over core's entities",
    ),
    (
        "ctflow-serving",
        &["ctflow-store"],
        "serving reads models through the REST API",
    ),
    (
        "ctflow-kube",
        &["ctflow-controller", "ctflow-store"],
        "the worker's Kubernetes executor links neither the CT engine nor the store",
    ),
    (
        "ctflow-data",
        &["ctflow-store", "sqlx", "ctflow-client", "ctflow-bus"],
        "snapshots read data files and objects over core's rules; what they record is the caller's to store",
    ),
    (
        "ctflow-server",
        &["ctflow-controller"],
        "the server and the controller meet in the store and on the bus",
    ),
];

/// Each package's normal dependencies, by package name, from the resolved graph.
fn normal_dependencies() -> HashMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    metadata["resolve"]["nodes"]
        .as_array()
        .expect("a resolved graph")
        .iter()
        .map(|node| {
            let normal = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|kind| kind["kind"].is_null())
                })
                .map(|dep| names[dep["pkg"].as_str().unwrap()].to_string())
                .collect();
            (names[node["id"].as_str().unwrap()].to_string(), normal)
        })
        .collect()
}

/// Everything `root` depends on, directly or not.
fn closure(graph: &HashMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(name) = todo.pop() {
        for dep in graph.get(&name).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn no_crate_depends_on_what_its_layer_forbids() {
    let graph = normal_dependencies();
    let mut broken = Vec::new();
    for (krate, forbidden, why) in FORBIDDEN {
        assert!(graph.contains_key(*krate), "{krate} is in the workspace");
        let reached = closure(&graph, krate);
        for name in *forbidden {
            if reached.contains(*name) {
                broken.push(format!("{krate} depends on {name}: {why}"));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}
