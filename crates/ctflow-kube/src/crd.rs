//! The `TrainingPipeline` custom resource (`trainingpipelines.ctflow.dev/v1alpha1`).
//!
//! Its `spec` is `ctflow_core::pipeline::TrainingPipelineSpec`, the same type a local
//! pipeline file holds, so the CRD schema is derived from the one definition and cannot
//! drift from what the CT engine reads.

use std::collections::BTreeMap;

use ctflow_core::pipeline::{Metadata, PipelineDocument, TrainingPipelineSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The group/version/kind, for messages and the manifests.
pub const GROUP: &str = "ctflow.dev";
pub const VERSION: &str = "v1alpha1";

/// What a `TrainingPipeline` asks for: the pipeline spec of `ctflow up` files, unchanged.
// NB: each printcolumn repeats `type_ = ...`, which clippy reads as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ctflow.dev",
    version = "v1alpha1",
    kind = "TrainingPipeline",
    plural = "trainingpipelines",
    shortname = "tp",
    category = "ctflow",
    namespaced,
    status = "TrainingPipelineStatus",
    doc = "A continuous-training pipeline: what to train (an MLflow project), when (triggers), how to judge the candidate (gates) and where to promote it.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Champion", type_ = "string", json_path = ".status.champion"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun.time"),
    printcolumn(name = "Next Run", type_ = "date", json_path = ".status.nextRun"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct PipelineResourceSpec {
    #[serde(flatten)]
    pub pipeline: TrainingPipelineSpec,
}

/// What the controller observed, written by server-side apply on the status subresource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingPipelineStatus {
    /// `Ready` (waiting for a trigger), `Running` (a pipeline run is in progress),
    /// `WaitingApproval`, `Shadowing`, `Suspended`, `Invalid` (the spec was refused) or `Terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The name of the pipeline in ctflow's store (`<namespace>-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The newest pipeline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// When the next scheduled run is due (RFC 3339), if a schedule trigger exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// The registered model version that holds the champion alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// The pipeline run's id (`ctflow pipelines runs` shows it).
    pub id: String,
    pub phase: String,
    /// What started it: `schedule`, `data`, `drift`, `webhook` or `manual`.
    pub trigger: String,
    /// When it was triggered (RFC 3339).
    pub time: String,
    /// The MLflow run of its training job, once one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
}

/// The pipeline's name in the store: `<namespace>-<name>` (a pipeline name is one DNS
/// label). Two objects that map to the same name are told apart by the stored source,
/// and the second is refused.
pub fn store_name(namespace: &str, name: &str) -> String {
    format!("{namespace}-{name}")
}

/// The store's `source` of a pipeline that a `TrainingPipeline` defines.
pub fn store_source(namespace: &str, name: &str) -> String {
    format!("{SOURCE_PREFIX}{namespace}/{name}")
}

pub const SOURCE_PREFIX: &str = "kubernetes:";

impl TrainingPipeline {
    /// The object as the pipeline document the CT engine stores.
    pub fn to_document(&self) -> PipelineDocument {
        let namespace = self.namespace().unwrap_or_default();
        PipelineDocument {
            api_version: ctflow_core::pipeline::API_VERSION.into(),
            kind: ctflow_core::pipeline::KIND.into(),
            metadata: Metadata {
                name: store_name(&namespace, &self.name_any()),
                labels: self
                    .labels()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
            },
            spec: self.spec.pipeline.clone(),
        }
    }
}

/// The CRD as YAML, as `ctflow crd` prints it and `manifests/` holds it.
pub fn crd_yaml() -> Result<String, String> {
    serde_saphyr::to_string(&TrainingPipeline::crd()).map_err(|e| e.to_string())
}
