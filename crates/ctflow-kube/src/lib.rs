//! ctflow on Kubernetes, the parts a worker links: the `TrainingPipeline` custom
//! resource (its spec is the CT engine's pipeline spec) and the job executor that runs a
//! CT job as a `batch/v1` Job. The controller side (the reconciler, the Lease elector)
//! is `ctflow-kube-controller`; this crate links neither the CT engine nor the store.
#![forbid(unsafe_code)]

pub mod crd;
pub mod executor;
pub mod job;

pub use crd::{TrainingPipeline, TrainingPipelineStatus, crd_yaml};
pub use executor::KubeJobRunner;
pub use job::JobSettings;
