//! ctflow on Kubernetes: the `TrainingPipeline` custom resource, the controller that
//! keeps those objects' pipelines in the CT engine's store and reports their state back,
//! and leader election on a `coordination.k8s.io` Lease.
//!
//! The Kubernetes side is another home for the same pipeline spec, not a second engine:
//! schedules, data and drift triggers, gates and promotion stay the CT engine's
//! (`ctflow-controller`), which runs in the same process while it leads.
#![forbid(unsafe_code)]

pub mod crd;
pub mod executor;
pub mod job;
pub mod lease;
pub mod plan;
pub mod reconcile;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ctflow_bus::Bus;
use ctflow_controller::{Controller as CtEngine, ControllerConfig};
use ctflow_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use crd::{TrainingPipeline, TrainingPipelineStatus, crd_yaml};
pub use executor::KubeJobRunner;
pub use job::JobSettings;
pub use lease::{Elector, LeaseConfig};
pub use reconcile::{Context, Settings};

/// Runs the CT engine and the TrainingPipeline controller whenever `leading` says this
/// replica leads, and stops both when it no longer does; until `shutdown`.
pub async fn run_when_leading(
    context: Arc<Context>,
    store: Store,
    bus: Arc<dyn Bus>,
    engine: ControllerConfig,
    mut leading: watch::Receiver<bool>,
    leading_flag: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        // Wait to lead.
        loop {
            if *leading.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
        leading_flag.store(true, Ordering::SeqCst);
        let term = shutdown.child_token();
        let engine_task = tokio::spawn(
            CtEngine::new(store.clone(), bus.clone(), engine.clone()).run(term.clone()),
        );
        let kube_task = tokio::spawn(reconcile::run(context.clone(), term.clone()));
        // Lead until told otherwise.
        loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        break;
                    }
                }
                _ = term.cancelled() => break,
            }
        }
        leading_flag.store(false, Ordering::SeqCst);
        term.cancel();
        match engine_task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the CT engine stopped"),
            Err(join) => tracing::error!(%join, "the CT engine panicked"),
        }
        if let Err(join) = kube_task.await {
            tracing::error!(%join, "the TrainingPipeline controller panicked");
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
