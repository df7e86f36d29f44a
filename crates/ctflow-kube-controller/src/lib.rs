//! ctflow's Kubernetes controller: keeps the pipelines of `TrainingPipeline` objects in
//! the CT engine's store and reports their state back (Events, status), and elects one
//! active replica on a `coordination.k8s.io` Lease. The CT engine itself
//! (`ctflow-controller`) runs in the same process while this replica leads.
#![forbid(unsafe_code)]

pub mod lease;
pub mod plan;
pub mod reconcile;

use std::sync::Arc;

use ctflow_bus::Bus;
use ctflow_controller::{Controller as CtEngine, ControllerConfig, Leadership, run_while_leading};
use ctflow_metrics::Metrics;
use ctflow_store::Store;
use tokio_util::sync::CancellationToken;

pub use ctflow_kube::{TrainingPipeline, TrainingPipelineStatus, crd_yaml};
pub use lease::{Elector, LeaseConfig};
pub use reconcile::{Context, Settings};

/// Runs the CT engine and the TrainingPipeline controller whenever `leadership` says this
/// replica leads, and stops both when it no longer does; until `shutdown`.
pub async fn run_when_leading(
    context: Arc<Context>,
    store: Store,
    bus: Arc<dyn Bus>,
    engine: ControllerConfig,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    run_while_leading(leadership, shutdown, move |term| {
        let engine = CtEngine::new(store.clone(), bus.clone(), engine.clone(), metrics.clone());
        let context = context.clone();
        async move {
            let engine_task = tokio::spawn(engine.run(term.clone()));
            let kube_task = tokio::spawn(reconcile::run(context, term.clone()));
            match engine_task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "the CT engine stopped"),
                Err(join) => tracing::error!(%join, "the CT engine panicked"),
            }
            // The two act together: one stopped is both stopped (and started again).
            term.cancel();
            if let Err(join) = kube_task.await {
                tracing::error!(%join, "the TrainingPipeline controller panicked");
            }
        }
    })
    .await;
}
