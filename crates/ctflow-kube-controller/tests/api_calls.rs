//! The exact Kubernetes API calls of the paths where their order and shape matter
//! (finalizer added before anything is stored, status by server-side apply with our
//! field manager, Events, finalizer removed only after the cleanup), asserted one by one
//! against kube's mock service (tower-test).

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;

use ctflow_bus::{Bus, MemoryBus};
use ctflow_kube::TrainingPipeline;
use ctflow_kube_controller::plan::Refresh;
use ctflow_kube_controller::reconcile::{self, Context, Settings};
use ctflow_store::Store;
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

mod support;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

async fn context(dir: &tempfile::TempDir) -> (Arc<Context>, ApiHandle, Store) {
    let store = support::sqlite_store(dir).await;
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let settings = Settings {
        namespace: None,
        refresh: Refresh::default(),
        base_dir: "/".into(),
        reporter: "ctflow-controller".into(),
        instance: "pod-0".into(),
    };
    (
        Arc::new(Context::new(client, store.clone(), bus, settings)),
        handle,
        store,
    )
}

fn object(finalizers: &[&str], deleting: bool) -> Value {
    let mut metadata = json!({
        "name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1, "resourceVersion": "7",
        "finalizers": finalizers,
    });
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-11-26T10:00:00Z");
    }
    json!({
        "apiVersion": "ctflow.dev/v1alpha1",
        "kind": "TrainingPipeline",
        "metadata": metadata,
        "spec": {"project": {"uri": "/srv/iris"}},
    })
}

fn typed(value: &Value) -> Arc<TrainingPipeline> {
    Arc::new(serde_json::from_value(value.clone()).expect("a TrainingPipeline"))
}

/// The next request: method, path and query, content type, JSON body.
async fn next(
    handle: &mut ApiHandle,
) -> (String, String, String, Value, SendResponse<Response<Body>>) {
    let (request, respond) = handle.next_request().await.expect("a request");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = request
        .into_body()
        .collect()
        .await
        .expect("the body reads")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (method, uri, content_type, body, respond)
}

fn reply(respond: SendResponse<Response<Body>>, body: &Value) {
    let bytes = serde_json::to_vec(body).expect("serialises");
    respond.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(bytes))
            .expect("a response"),
    );
}

#[tokio::test]
async fn a_new_object_gets_the_finalizer_first_and_nothing_else() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (context, mut handle, store) = context(&dir).await;
    let task = tokio::spawn(reconcile::reconcile(typed(&object(&[], false)), context));

    let (method, uri, content_type, body, respond) = next(&mut handle).await;
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/apis/ctflow.dev/v1alpha1/namespaces/ml/trainingpipelines/iris?"
    );
    assert_eq!(content_type, "application/json-patch+json");
    assert_eq!(
        body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["ctflow.dev/pipeline"]},
        ])
    );
    reply(respond, &object(&["ctflow.dev/pipeline"], false));
    task.await.expect("no panic").expect("reconciled");
    assert!(
        store.list_pipelines().await.expect("listed").is_empty(),
        "nothing stored before the finalizer is in place"
    );
}

#[tokio::test]
async fn a_finalized_object_is_stored_announced_and_its_status_applied() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (context, mut handle, store) = context(&dir).await;
    let task = tokio::spawn(reconcile::reconcile(
        typed(&object(&["ctflow.dev/pipeline"], false)),
        context,
    ));

    let (method, uri, _, event, respond) = next(&mut handle).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("POST", "/apis/events.k8s.io/v1/namespaces/ml/events?")
    );
    assert_eq!(event["reason"], "Stored");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["kind"], "TrainingPipeline");
    assert_eq!(event["regarding"]["uid"], "u-1");
    assert_eq!(event["reportingController"], "ctflow-controller");
    assert_eq!(event["reportingInstance"], "pod-0");
    assert!(event["eventTime"].is_string());
    // The store was written before the Event announced it.
    assert_eq!(
        store.get_pipeline("ml-iris").await.expect("stored").source,
        "kubernetes:ml/iris"
    );
    reply(respond, &event);

    let (method, uri, content_type, patch, respond) = next(&mut handle).await;
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/apis/ctflow.dev/v1alpha1/namespaces/ml/trainingpipelines/iris/status?&force=true&fieldManager=ctflow-controller"
    );
    assert_eq!(content_type, "application/apply-patch+yaml");
    assert_eq!(patch["apiVersion"], "ctflow.dev/v1alpha1");
    assert_eq!(patch["kind"], "TrainingPipeline");
    assert_eq!(patch["status"]["phase"], "Ready");
    assert_eq!(patch["status"]["observedGeneration"], 1);
    assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
    assert!(
        patch.get("spec").is_none(),
        "the status patch carries no spec"
    );
    let mut updated = object(&["ctflow.dev/pipeline"], false);
    updated["status"] = patch["status"].clone();
    reply(respond, &updated);

    task.await.expect("no panic").expect("reconciled");
}

#[tokio::test]
async fn a_deleted_object_is_cleaned_up_before_its_finalizer_goes() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (context, mut handle, store) = context(&dir).await;
    let document = typed(&object(&[], false)).to_document();
    store
        .put_pipeline(&document, "kubernetes:ml/iris", "/")
        .await
        .expect("stored");
    let task = tokio::spawn(reconcile::reconcile(
        typed(&object(&["ctflow.dev/pipeline"], true)),
        context,
    ));

    let (method, _, _, event, respond) = next(&mut handle).await;
    assert_eq!(method, "POST");
    assert_eq!(event["reason"], "Deleted");
    assert!(
        store.get_pipeline("ml-iris").await.is_err(),
        "the pipeline is gone before the Event"
    );
    reply(respond, &event);

    let (method, uri, content_type, body, respond) = next(&mut handle).await;
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/apis/ctflow.dev/v1alpha1/namespaces/ml/trainingpipelines/iris?"
    );
    assert_eq!(content_type, "application/json-patch+json");
    assert_eq!(
        body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "ctflow.dev/pipeline"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    reply(respond, &object(&[], true));
    task.await.expect("no panic").expect("reconciled");
}

fn job_object(run_id: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "ctflow-0196f1c2-1", "namespace": "ml",
            "annotations": {"ctflow.dev/mlflow-run-id": run_id},
            "ownerReferences": [{"apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline", "name": "iris",
                                 "uid": "u-1", "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "job", "image": "acme/iris:1"}]}}},
    })
}

fn conflict(respond: SendResponse<Response<Body>>) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                      "message": "jobs.batch \"ctflow-0196f1c2-1\" already exists", "code": 409});
    respond.send_response(
        Response::builder()
            .status(409)
            .body(Body::from(serde_json::to_vec(&body).expect("serialises")))
            .expect("a response"),
    );
}

/// `create_job` for `run_id`'s Job, against the mock service.
fn start_create(run_id: &'static str) -> (tokio::task::JoinHandle<Result<(), String>>, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let jobs = kube::Api::namespaced(client, "ml");
    let manifest = serde_json::from_value(job_object(run_id)).expect("a Job");
    let task = tokio::spawn(async move {
        ctflow_kube::executor::create_job(
            &jobs,
            &manifest,
            run_id,
            std::time::Duration::from_millis(1),
        )
        .await
    });
    (task, handle)
}

#[tokio::test]
async fn a_job_is_created_with_its_owner_reference() {
    let (task, mut handle) = start_create("run-1");
    let (method, uri, _, body, respond) = next(&mut handle).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("POST", "/apis/batch/v1/namespaces/ml/jobs?")
    );
    assert_eq!(
        body["metadata"]["ownerReferences"][0]["kind"],
        "TrainingPipeline"
    );
    assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(body["spec"]["backoffLimit"], 0);
    reply(respond, &body);
    task.await.expect("no panic").expect("created");
}

#[tokio::test]
async fn a_job_already_there_for_this_run_is_kept() {
    let (task, mut handle) = start_create("run-1");
    let (method, _, _, _, respond) = next(&mut handle).await;
    assert_eq!(method, "POST");
    conflict(respond);
    let (method, uri, _, _, respond) = next(&mut handle).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("GET", "/apis/batch/v1/namespaces/ml/jobs/ctflow-0196f1c2-1")
    );
    reply(respond, &job_object("run-1"));
    task.await.expect("no panic").expect("kept, no second Job");
}

#[tokio::test]
async fn a_lost_runs_job_is_deleted_before_the_new_one_is_created() {
    let (task, mut handle) = start_create("run-2");
    let (method, _, _, _, respond) = next(&mut handle).await;
    assert_eq!(method, "POST");
    conflict(respond);
    let (method, _, _, _, respond) = next(&mut handle).await;
    assert_eq!(method, "GET");
    reply(respond, &job_object("run-1"));
    let (method, uri, _, body, respond) = next(&mut handle).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/ml/jobs/ctflow-0196f1c2-1?"
        )
    );
    assert_eq!(body["propagationPolicy"], "Background", "its pods go too");
    let mut deleting = job_object("run-1");
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-26T10:00:00Z");
    reply(respond, &deleting);
    // Still there while it is being deleted: wait, then create.
    let (method, _, _, _, respond) = next(&mut handle).await;
    assert_eq!(method, "POST");
    conflict(respond);
    let (method, _, _, _, respond) = next(&mut handle).await;
    assert_eq!(method, "GET");
    reply(respond, &deleting);
    let (method, _, _, body, respond) = next(&mut handle).await;
    assert_eq!(
        method, "POST",
        "no second DELETE while the first is under way"
    );
    assert_eq!(
        body["metadata"]["annotations"]["ctflow.dev/mlflow-run-id"],
        "run-2"
    );
    reply(respond, &body);
    task.await
        .expect("no panic")
        .expect("created after the old one went");
}
