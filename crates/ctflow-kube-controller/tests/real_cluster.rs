//! Against a REAL cluster, opt-in: `CTFLOW_E2E_KUBECONFIG=~/.kube/config cargo test -p
//! ctflow-kube-controller --test real_cluster -- --ignored`. Our CI machines have no cluster, so this
//! is ignored there; asked for without the variable, or with an unreachable cluster, it
//! fails instead of passing quietly.
//!
//! It installs the generated CRD (server-side apply), runs the controller in process
//! (temporary SQLite store, in-process bus) in a throw-away namespace, and checks what
//! the fake cannot prove: that the API server accepts our CRD's schema and our status
//! apply, finalizer patches, Events and Lease writes. Jobs are not started (that needs
//! an image with ctflow in it).

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::time::Duration;

use ctflow_bus::{Bus, MemoryBus};
use ctflow_kube::TrainingPipeline;
use ctflow_kube_controller::plan::Refresh;
use ctflow_kube_controller::reconcile::{self, Context, Settings};
use ctflow_kube_controller::{Elector, LeaseConfig};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, CustomResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod support;

async fn client() -> Client {
    let path = std::env::var("CTFLOW_E2E_KUBECONFIG")
        .expect("set CTFLOW_E2E_KUBECONFIG to the kubeconfig of a cluster to test against");
    let kubeconfig = Kubeconfig::read_from(&path).expect("the kubeconfig reads");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is usable");
    let client = Client::try_from(config).expect("a client");
    client.apiserver_version().await.expect(
        "the cluster answers (CTFLOW_E2E_KUBECONFIG is set, so an unreachable cluster fails)",
    );
    client
}

async fn eventually<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    support::eventually(what, Duration::from_secs(60), check).await
}

#[tokio::test]
#[ignore = "needs a real cluster: set CTFLOW_E2E_KUBECONFIG and pass --ignored"]
async fn the_controller_against_a_real_api_server() {
    let client = client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "trainingpipelines.ctflow.dev",
        &PatchParams::apply("ctflow-e2e").force(),
        &Patch::Apply(&TrainingPipeline::crd()),
    )
    .await
    .expect("the API server accepts the generated CRD");
    eventually("the CRD established", async || {
        let crd = crds.get("trainingpipelines.ctflow.dev").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    let namespace = format!("ctflow-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace"),
        )
        .await
        .expect("a namespace");

    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = support::sqlite_store(&dir).await;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let stop = CancellationToken::new();
    let (tx, mut leading) = ctflow_controller::leadership();
    tokio::spawn(
        Elector::new(
            client.clone(),
            LeaseConfig {
                namespace: namespace.clone(),
                name: "ctflow-controller".into(),
                identity: "e2e".into(),
                duration: Duration::from_secs(5),
            },
        )
        .run(tx, stop.clone()),
    );
    leading.wait_until(true).await.expect("this replica leads");
    let context = Arc::new(Context::new(
        client.clone(),
        store.clone(),
        bus,
        Settings {
            namespace: Some(namespace.clone()),
            refresh: Refresh {
                active: Duration::from_secs(1),
                idle: Duration::from_secs(2),
            },
            base_dir: "/".into(),
            reporter: "ctflow-controller".into(),
            instance: "e2e".into(),
        },
    ));
    tokio::spawn(reconcile::run(context, stop.clone()));

    let pipelines: Api<TrainingPipeline> = Api::namespaced(client.clone(), &namespace);
    let object: TrainingPipeline = serde_json::from_value(json!({
        "apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline",
        "metadata": {"name": "iris"},
        "spec": {"project": {"uri": "/opt/iris"}, "triggers": [{"schedule": {"cron": "0 3 * * *"}}]},
    }))
    .expect("a TrainingPipeline");
    pipelines
        .create(&PostParams::default(), &object)
        .await
        .expect("the API server accepts a TrainingPipeline");
    let status = eventually("the Ready status", async || {
        let object = pipelines.get("iris").await.ok()?;
        let status = object.status?;
        (status.phase.as_deref() == Some("Ready")).then_some(status)
    })
    .await;
    assert_eq!(status.observed_generation, Some(1));
    let name = format!("{namespace}-iris");
    assert!(
        store.get_pipeline(&name).await.is_ok(),
        "the pipeline is stored"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let listed = events
        .list(&ListParams::default())
        .await
        .expect("events list");
    assert!(
        listed
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Stored"))
    );

    pipelines
        .delete("iris", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("the object gone", async || {
        pipelines
            .get_opt("iris")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    stop.cancel();
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
}
