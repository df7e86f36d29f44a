//! The checked-in copies of generated manifests are current, and the sample
//! TrainingPipelines are valid pipelines. Regenerate the CRD copies with
//! `CTFLOW_UPDATE_MANIFESTS=1 cargo test -p ctflow-kube --test manifests`
//! (or `ctflow crd > manifests/crd/trainingpipelines.ctflow.dev.yaml`).

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::{Path, PathBuf};

use ctflow_kube::{TrainingPipeline, crd_yaml};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const CRD_COPIES: &[&str] = &[
    "manifests/crd/trainingpipelines.ctflow.dev.yaml",
    "charts/ctflow/crds/trainingpipelines.ctflow.dev.yaml",
];

#[test]
fn the_checked_in_crds_are_current() {
    let fresh = crd_yaml().expect("the CRD serialises");
    for copy in CRD_COPIES {
        let path = repo().join(copy);
        if std::env::var_os("CTFLOW_UPDATE_MANIFESTS").is_some() {
            std::fs::write(&path, &fresh).expect("the copy is written");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "{copy} is stale: the TrainingPipeline types changed. Regenerate it with \
             `CTFLOW_UPDATE_MANIFESTS=1 cargo test -p ctflow-kube --test manifests`"
        );
    }
}

#[test]
fn the_crd_has_what_kubectl_users_rely_on() {
    let crd: serde_json::Value =
        serde_saphyr::from_str(&crd_yaml().expect("the CRD serialises")).expect("the CRD is YAML");
    assert_eq!(crd["metadata"]["name"], "trainingpipelines.ctflow.dev");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "tp");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(
        version["subresources"]["status"].is_object(),
        "the status subresource"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Champion", "Last Run", "Next Run", "Age"]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["project"]));
    assert!(spec["properties"]["triggers"]["items"]["properties"]["drift"].is_object());
}

#[test]
fn the_sample_pipelines_are_valid() {
    let dir = repo().join("manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the examples folder") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        // NB: the spec types refuse unknown fields, so a typo fails here.
        let mut object: TrainingPipeline = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        object.metadata.namespace = Some("ml".into());
        if let Err(errors) = object.to_document().validate() {
            panic!("{} is invalid: {errors:?}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 2, "the samples were read");
}
