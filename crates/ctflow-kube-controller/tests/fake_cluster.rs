//! The TrainingPipeline controller and the Lease elector, end to end against
//! `ctflow-kube-fake`, an in-process FAKE API server (no real API server can run on our
//! CI machines; see the fake's crate docs for what it does and does not emulate), with a
//! real SQLite store and the in-process bus.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::time::Duration;

use ctflow_bus::Bus;
use ctflow_bus::MemoryBus;
use ctflow_core::pipeline_run::Phase;
use ctflow_core::trigger::TriggerEvent;
use ctflow_kube_controller::plan::Refresh;
use ctflow_kube_controller::reconcile::{self, Context, Settings};
use ctflow_kube_controller::{Elector, LeaseConfig};
use ctflow_kube_fake::FakeApiServer;
use ctflow_store::{Recorded, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;

const NS: &str = "ml";

struct Harness {
    fake: FakeApiServer,
    store: Store,
    bus: Arc<MemoryBus>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = support::sqlite_store(&dir).await;
    Harness {
        fake: FakeApiServer::new(),
        store,
        bus: Arc::new(MemoryBus::new()),
        _dir: dir,
    }
}

fn settings(instance: &str) -> Settings {
    Settings {
        namespace: None,
        refresh: Refresh {
            active: Duration::from_millis(100),
            idle: Duration::from_millis(300),
        },
        base_dir: "/".into(),
        reporter: "ctflow-controller".into(),
        instance: instance.into(),
    }
}

impl Harness {
    fn context(&self, instance: &str) -> Arc<Context> {
        let bus: Arc<dyn Bus> = self.bus.clone();
        Arc::new(Context::new(
            self.fake.client(),
            self.store.clone(),
            bus,
            settings(instance),
        ))
    }

    /// Starts the TrainingPipeline controller (without an elector: it always acts).
    fn start(&self) -> CancellationToken {
        let token = CancellationToken::new();
        tokio::spawn(reconcile::run(self.context("test"), token.clone()));
        token
    }

    /// Ends a pending pipeline run as failed, as a failed job would.
    async fn fail_pending_run(&self, id: &str) {
        self.store
            .modify_pipeline_run(
                id,
                &[Phase::Pending],
                |r| {
                    r.phase = Phase::Failed;
                    r.decision = Some("the job failed".into());
                },
                None,
            )
            .await
            .expect("moved");
    }

    fn pipeline(&self, name: &str) -> Option<Value> {
        self.fake.object("trainingpipelines", NS, name)
    }

    fn apply(&self, object: Value) {
        self.fake
            .apply("trainingpipelines", NS, object)
            .expect("applied");
    }

    /// Waits until the object's status shows `phase`.
    async fn wait_phase(&self, phase: &str) {
        eventually(&format!("phase {phase}"), async || {
            (self.pipeline("iris")?["status"]["phase"] == phase).then_some(())
        })
        .await;
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        self.fake
            .objects("events", NS)
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
}

fn iris(cron: &str, c: &str) -> Value {
    json!({
        "apiVersion": "ctflow.dev/v1alpha1",
        "kind": "TrainingPipeline",
        "metadata": {"name": "iris", "namespace": NS},
        "spec": {
            "project": {"uri": "https://example.com/acme/iris.git", "parameters": {"C": c}, "image": "acme/iris:1"},
            "model": {"name": "iris-classifier"},
            "triggers": [{"schedule": {"cron": cron, "timezone": "UTC"}}],
        }
    })
}

async fn eventually<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    support::eventually(what, Duration::from_secs(10), check).await
}

#[tokio::test]
async fn an_applied_pipeline_is_stored_finalized_and_reported() {
    let h = harness().await;
    let stop = h.start();
    h.apply(iris("0 3 * * *", "0.5"));

    let status = eventually("the Ready status", async || {
        let object = h.pipeline("iris")?;
        (object["status"]["phase"] == "Ready").then(|| object["status"].clone())
    })
    .await;
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["pipeline"], "ml-iris");
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert!(
        status["nextRun"]
            .as_str()
            .is_some_and(|t| t.ends_with("T03:00:00Z")),
        "{status}"
    );
    let object = h.pipeline("iris").expect("the object");
    assert_eq!(
        object["metadata"]["finalizers"],
        json!(["ctflow.dev/pipeline"])
    );

    let record = h.store.get_pipeline("ml-iris").await.expect("stored");
    assert_eq!(record.source, "kubernetes:ml/iris");
    assert_eq!(record.document.spec.project.parameters["C"], "0.5");
    assert_eq!(h.events("Stored").len(), 1);

    // The status is written by server-side apply on the status subresource, by one manager.
    let applies: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/iris/status"))
        .collect();
    assert!(!applies.is_empty());
    for request in &applies {
        assert_eq!(request.content_type, "application/apply-patch+yaml");
        assert!(
            request.query.contains("fieldManager=ctflow-controller"),
            "{}",
            request.query
        );
    }

    // A spec change: the store's generation moves, and so does observedGeneration.
    h.apply(iris("0 3 * * *", "0.1"));
    eventually("observedGeneration 2", async || {
        let object = h.pipeline("iris")?;
        (object["status"]["observedGeneration"] == 2).then_some(())
    })
    .await;
    let record = h.store.get_pipeline("ml-iris").await.expect("stored");
    assert_eq!(record.document.spec.project.parameters["C"], "0.1");
    assert_eq!(record.generation, 2);
    stop.cancel();
}

#[tokio::test]
async fn pipeline_runs_show_in_the_status_and_as_events() {
    let h = harness().await;
    let stop = h.start();
    h.apply(iris("0 3 * * *", "0.5"));
    eventually("the pipeline in the store", async || {
        h.store.get_pipeline("ml-iris").await.ok()
    })
    .await;

    let mut trigger = TriggerEvent::new("ml-iris", "manual", "by-hand-1".into());
    trigger.user = Some("ada".into());
    let Recorded::Created(run) = h.store.record_trigger(&trigger).await.expect("recorded") else {
        panic!("a new pipeline run");
    };
    let last = eventually("the last run in the status", async || {
        let object = h.pipeline("iris")?;
        (object["status"]["lastRun"]["id"] == run.id.as_str()).then(|| object["status"].clone())
    })
    .await;
    assert_eq!(
        last["phase"], "Running",
        "a pending run counts as running: {last}"
    );
    assert_eq!(last["lastRun"]["trigger"], "manual");
    let triggered = eventually("a Triggered event", async || {
        h.events("Triggered").into_iter().next()
    })
    .await;
    assert!(
        triggered["note"]
            .as_str()
            .is_some_and(|n| n.contains("manual trigger by ada recorded")),
        "{triggered}"
    );
    assert_eq!(triggered["regarding"]["name"], "iris");
    assert_eq!(triggered["reportingController"], "ctflow-controller");

    // The run ends: the phase comes back to Ready and the ending is an Event.
    h.fail_pending_run(&run.id).await;
    eventually("Ready again", async || {
        let object = h.pipeline("iris")?;
        (object["status"]["phase"] == "Ready" && object["status"]["lastRun"]["phase"] == "Failed")
            .then_some(())
    })
    .await;
    let failed = eventually("a RunFailed event", async || {
        h.events("RunFailed").into_iter().next()
    })
    .await;
    assert_eq!(failed["type"], "Warning");
    assert_eq!(
        h.events("Triggered").len(),
        1,
        "each history entry becomes one Event"
    );
    stop.cancel();
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_not_stored() {
    let h = harness().await;
    let stop = h.start();
    h.apply(iris("every day", "0.5"));
    let status = eventually("the Invalid status", async || {
        let object = h.pipeline("iris")?;
        (object["status"]["phase"] == "Invalid").then(|| object["status"].clone())
    })
    .await;
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.triggers[0].schedule.cron")),
        "{status}"
    );
    let warning = eventually("a Warning", async || {
        h.events("InvalidSpec").into_iter().next()
    })
    .await;
    assert_eq!(warning["type"], "Warning");
    assert!(
        h.store.get_pipeline("ml-iris").await.is_err(),
        "an invalid spec is not stored"
    );

    // Fixing it stores it.
    h.apply(iris("0 3 * * *", "0.5"));
    h.wait_phase("Ready").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.events("InvalidSpec").len(),
        1,
        "one Warning per generation, not one per refresh"
    );
    stop.cancel();
}

#[tokio::test]
async fn deleting_an_object_cancels_its_runs_and_removes_the_pipeline() {
    let h = harness().await;
    let stop = h.start();
    h.apply(iris("0 3 * * *", "0.5"));
    eventually("the finalizer", async || {
        let object = h.pipeline("iris")?;
        object["metadata"]["finalizers"]
            .as_array()
            .filter(|f| !f.is_empty())
            .map(|_| ())
    })
    .await;
    eventually("the pipeline in the store", async || {
        h.store.get_pipeline("ml-iris").await.ok()
    })
    .await;
    let Recorded::Created(run) = h
        .store
        .record_trigger(&TriggerEvent::new("ml-iris", "manual", "k".into()))
        .await
        .expect("recorded")
    else {
        panic!("a new pipeline run");
    };
    let cancellation = h.bus.cancellation(&run.id);

    let deleting = h
        .fake
        .delete("trainingpipelines", NS, "iris")
        .expect("deleted");
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "the finalizer holds the object"
    );
    eventually("the object gone", async || {
        h.pipeline("iris").is_none().then_some(())
    })
    .await;

    assert!(
        h.store.get_pipeline("ml-iris").await.is_err(),
        "the pipeline is deleted"
    );
    let run = h
        .store
        .get_pipeline_run(&run.id)
        .await
        .expect("the run stays as history");
    assert_eq!(run.phase, Phase::Canceled);
    assert_eq!(
        run.decision.as_deref(),
        Some("its TrainingPipeline was deleted")
    );
    assert!(
        cancellation.is_cancelled(),
        "a worker running it is told to stop"
    );
    let deleted = eventually("a Deleted event", async || {
        h.events("Deleted").into_iter().next()
    })
    .await;
    assert!(
        deleted["note"]
            .as_str()
            .is_some_and(|n| n.contains("1 unfinished run(s) canceled")),
        "{deleted}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_dropped_watch_and_a_410_neither_lose_nor_repeat_work() {
    let h = harness().await;
    let stop = h.start();
    h.apply(iris("0 3 * * *", "0.5"));
    h.wait_phase("Ready").await;
    // The connection drops (the watcher watches again), then the history is compacted
    // under the open watch (410 Gone: the watcher must list again), and the object changes.
    h.fake.drop_watches();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.fake.forget_history();
    h.apply(iris("0 4 * * *", "0.5"));
    eventually("the change seen after the re-list", async || {
        let record = h.store.get_pipeline("ml-iris").await.ok()?;
        (record.generation == 2).then_some(())
    })
    .await;
    assert!(
        h.fake.expired_watches() >= 1,
        "the watcher was told its version is gone"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.events("Stored").len(),
        2,
        "one Stored per generation: {:?}",
        h.events("Stored")
    );
    assert_eq!(h.store.list_pipelines().await.expect("listed").len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn errors_are_retried_with_backoff() {
    let h = harness().await;
    h.fake.fail_next("PATCH", "trainingpipelines", 500, 2);
    let stop = h.start();
    h.apply(iris("0 3 * * *", "0.5"));
    eventually("Ready after two failed writes", async || {
        (h.pipeline("iris")?["status"]["phase"] == "Ready").then_some(())
    })
    .await;
    let failed = h.fake.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(failed, 2);
    stop.cancel();
}

#[tokio::test]
async fn a_pipeline_whose_object_is_gone_is_removed_at_start() {
    let h = harness().await;
    let mut document = ctflow_core::pipeline::PipelineDocument::from_yaml(
        "apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: {name: ml-gone}\nspec: {project: {uri: /srv/gone}}\n",
    )
    .expect("parses");
    h.store
        .put_pipeline(&document, "kubernetes:ml/gone", "/")
        .await
        .expect("stored");
    document.metadata.name = "by-api".into();
    h.store
        .put_pipeline(&document, "api", "/")
        .await
        .expect("stored");
    let stop = h.start();
    eventually("the orphan removed", async || {
        h.store.get_pipeline("ml-gone").await.is_err().then_some(())
    })
    .await;
    assert!(
        h.store.get_pipeline("by-api").await.is_ok(),
        "pipelines from elsewhere stay"
    );
    stop.cancel();
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: NS.into(),
        name: "ctflow-controller".into(),
        identity: identity.into(),
        duration: Duration::from_millis(900),
    }
}

#[tokio::test]
async fn one_replica_leads_and_a_standby_takes_over() {
    let fake = FakeApiServer::new();
    let (a_tx, mut a_rx) = ctflow_controller::leadership();
    let (b_tx, mut b_rx) = ctflow_controller::leadership();
    let a_stop = CancellationToken::new();
    let b_stop = CancellationToken::new();
    let a = tokio::spawn(Elector::new(fake.client(), lease("a")).run(a_tx, a_stop.clone()));
    a_rx.wait_until(true).await.expect("a leads");
    tokio::spawn(Elector::new(fake.client(), lease("b")).run(b_tx, b_stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!b_rx.leads(), "b stands by while a renews");
    let held = fake
        .object("leases", NS, "ctflow-controller")
        .expect("the lease");
    assert_eq!(held["spec"]["holderIdentity"], "a");

    // a dies without handing the lease back: b takes over once it has expired.
    a.abort();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), b_rx.wait_until(true))
        .await
        .expect("b leads in time")
        .expect("b leads");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "not before the lease ran out"
    );
    let held = fake
        .object("leases", NS, "ctflow-controller")
        .expect("the lease");
    assert_eq!(held["spec"]["holderIdentity"], "b");
    assert_eq!(held["spec"]["leaseTransitions"], 1);

    // A clean stop hands the lease back at once.
    let (c_tx, mut c_rx) = ctflow_controller::leadership();
    let c_stop = CancellationToken::new();
    tokio::spawn(Elector::new(fake.client(), lease("c")).run(c_tx, c_stop.clone()));
    b_stop.cancel();
    b_rx.wait_until(false).await.expect("b stops leading");
    tokio::time::timeout(Duration::from_millis(800), c_rx.wait_until(true))
        .await
        .expect("c leads sooner than a lease period")
        .expect("c leads");
    c_stop.cancel();
    a_stop.cancel();
}

#[tokio::test]
async fn two_controller_replicas_act_only_while_leading() {
    let h = harness().await;
    let engine = ctflow_controller::ControllerConfig {
        workers_in_process: false,
        ..Default::default()
    };
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let (tx, rx) = ctflow_controller::leadership();
        let stop = CancellationToken::new();
        tokio::spawn(Elector::new(h.fake.client(), lease(name)).run(tx, stop.clone()));
        let bus: Arc<dyn Bus> = h.bus.clone();
        tokio::spawn(ctflow_kube_controller::run_when_leading(
            h.context(name),
            h.store.clone(),
            bus,
            engine.clone(),
            Arc::new(ctflow_metrics::Metrics::new()),
            rx.clone(),
            stop.clone(),
        ));
        replicas.push((name, rx, stop));
        if name == "replica-a" {
            replicas[0].1.wait_until(true).await.expect("a leads");
        }
    }
    h.apply(iris("0 3 * * *", "0.5"));
    h.wait_phase("Ready").await;
    let reporters: Vec<Value> = h
        .fake
        .objects("events", NS)
        .iter()
        .map(|e| e["reportingInstance"].clone())
        .collect();
    assert!(!reporters.is_empty());
    assert!(
        reporters.iter().all(|r| r == "replica-a"),
        "only the leader acts: {reporters:?}"
    );
    assert!(replicas[0].1.leads());
    assert!(!replicas[1].1.leads());

    // The leader stops; the standby takes over and acts on the next change.
    replicas[0].2.cancel();
    replicas[1].1.wait_until(true).await.expect("b leads");
    h.apply(iris("0 3 * * *", "0.2"));
    eventually("the change stored by the new leader", async || {
        let record = h.store.get_pipeline("ml-iris").await.ok()?;
        (record.document.spec.project.parameters["C"] == "0.2").then_some(())
    })
    .await;
    let stored_by: Vec<Value> = h
        .events("Stored")
        .iter()
        .map(|e| e["reportingInstance"].clone())
        .collect();
    assert_eq!(stored_by, vec![json!("replica-a"), json!("replica-b")]);
    replicas[1].2.cancel();
}

#[tokio::test]
async fn a_failed_status_write_does_not_repeat_the_events() {
    let h = harness().await;
    let stop = h.start();
    h.apply(iris("0 3 * * *", "0.5"));
    h.wait_phase("Ready").await;
    // The status write after the trigger's Event fails once and is retried.
    h.fake.fail_next("PATCH", "trainingpipelines", 500, 1);
    let Recorded::Created(run) = h
        .store
        .record_trigger(&TriggerEvent::new("ml-iris", "manual", "once".into()))
        .await
        .expect("recorded")
    else {
        panic!("a new pipeline run");
    };
    eventually("Running after the retried write", async || {
        (h.pipeline("iris")?["status"]["phase"] == "Running").then_some(())
    })
    .await;
    assert_eq!(
        h.fake.requests().iter().filter(|r| r.status == 500).count(),
        1,
        "the fault hit"
    );
    // The run moves on: only its new history becomes Events, not the trigger again.
    h.fail_pending_run(&run.id).await;
    eventually("the ending seen", async || {
        (h.pipeline("iris")?["status"]["lastRun"]["phase"] == "Failed").then_some(())
    })
    .await;
    eventually("a RunFailed event", async || {
        h.events("RunFailed").into_iter().next()
    })
    .await;
    assert_eq!(h.events("Triggered").len(), 1);
    assert_eq!(h.events("RunFailed").len(), 1);
    stop.cancel();
}
