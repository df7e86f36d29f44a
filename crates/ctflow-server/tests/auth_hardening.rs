//! `--auth` under attack, over real sockets. With `--auth-default-permission
//! NO_PERMISSIONS`, every listing and stream shows a user only what the user may read one
//! by one; a model version cannot be made from a run, logged model or registered model its
//! creator cannot read; repeated wrong passwords are throttled without locking out token
//! users.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::time::Duration;

use ctflow_core::auth::Permission;
use ctflow_server::{AppState, Limits};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::*;

const PASSWORD: &str = "a-long-password-1";

struct Site {
    server: Running,
    bus: Arc<ctflow_bus::MemoryBus>,
}

async fn site() -> Site {
    let artifacts = tempfile::tempdir().unwrap();
    let mut config = config("sqlite:///:memory:".into(), &artifacts, Limits::default());
    config.auth = Some(Permission::NoPermissions);
    let mut state = AppState::open(&config).await.unwrap();
    let hash = ctflow_server::auth::hash_password(PASSWORD).unwrap();
    for (name, admin) in [("root", true), ("alice", false), ("bob", false)] {
        state.store.create_user(name, &hash, admin).await.unwrap();
    }
    let bus = Arc::new(ctflow_bus::MemoryBus::new());
    state.bus = Some(bus.clone());
    Site {
        server: serve_state(state, artifacts).await,
        bus,
    }
}

impl Site {
    async fn call(&self, user: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        exchange(
            self.server.address,
            &signed(method, path, body.as_deref(), user, PASSWORD),
        )
        .await
    }

    /// A new API token of `user`'s.
    async fn token(&self, user: &str, name: &str) -> String {
        self.ok(
            user,
            "POST",
            "/api/ctflow/v1/tokens",
            Some(json!({ "name": name })),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn status_of(&self, user: &str, path: &str) -> u16 {
        self.call(user, "GET", path, None).await.status
    }

    async fn ok(&self, user: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(user, method, path, body).await;
        assert_eq!(
            answer.status, 200,
            "{user} {method} {path}: {}",
            answer.body
        );
        answer.body
    }

    /// A user's experiment with one run, a registered model with one version of it, and
    /// a pipeline promoting that model with one pipeline run.
    async fn estate(&self, user: &str) -> (String, String) {
        let experiment = self
            .ok(
                user,
                "POST",
                "/api/2.0/mlflow/experiments/create",
                Some(json!({"name": format!("{user}-exp")})),
            )
            .await["experiment_id"]
            .as_str()
            .unwrap()
            .to_string();
        let run = self
            .ok(
                user,
                "POST",
                "/api/2.0/mlflow/runs/create",
                Some(json!({"experiment_id": experiment})),
            )
            .await["run"]["info"]["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        let model = format!("{user}-model");
        self.ok(
            user,
            "POST",
            "/api/2.0/mlflow/registered-models/create",
            Some(json!({"name": model})),
        )
        .await;
        self.ok(
            user,
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            Some(json!({"name": model, "source": format!("runs:/{run}/model"), "run_id": run})),
        )
        .await;
        let pipeline = format!("{user}-pipeline");
        let document = json!({
            "apiVersion": "ctflow.dev/v1alpha1",
            "kind": "TrainingPipeline",
            "metadata": {"name": pipeline},
            "spec": {"project": {"uri": "."}, "model": {"name": model}},
        });
        self.ok(
            user,
            "PUT",
            &format!("/api/ctflow/v1/pipelines/{pipeline}"),
            Some(document),
        )
        .await;
        self.ok(
            user,
            "POST",
            &format!("/api/ctflow/v1/pipelines/{pipeline}/trigger"),
            Some(json!({})),
        )
        .await;
        (experiment, run)
    }
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    let mut names: Vec<String> = list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {list}"))
        .iter()
        .map(|item| item[field].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn listings_show_each_user_only_what_they_may_read() {
    let site = site().await;
    let (alice_experiment, _) = site.estate("alice").await;
    let (bob_experiment, _) = site.estate("bob").await;

    for (user, pipelines) in [
        ("alice", vec!["alice-pipeline"]),
        ("bob", vec!["bob-pipeline"]),
        ("root", vec!["alice-pipeline", "bob-pipeline"]),
    ] {
        let listed = site.ok(user, "GET", "/api/ctflow/v1/pipelines", None).await;
        assert_eq!(names(&listed, "pipelines", "name"), pipelines, "{user}");
        let runs = site
            .ok(user, "GET", "/api/ctflow/v1/pipeline-runs", None)
            .await;
        assert_eq!(
            names(&runs, "pipeline_runs", "pipeline"),
            pipelines,
            "{user}"
        );
        let models = site
            .ok(
                user,
                "GET",
                "/api/2.0/mlflow/registered-models/search",
                None,
            )
            .await;
        assert_eq!(
            names(&models, "registered_models", "name").len(),
            pipelines.len(),
            "{user}"
        );
    }
    let counts = site
        .ok("bob", "GET", "/api/ctflow/v1/experiments/run-counts", None)
        .await;
    let counted: Vec<&String> = counts["counts"].as_object().unwrap().keys().collect();
    assert_eq!(counted, [&bob_experiment], "{counts}");
    let counts = site
        .ok("root", "GET", "/api/ctflow/v1/experiments/run-counts", None)
        .await;
    assert!(
        counts["counts"].get(&alice_experiment).is_some(),
        "{counts}"
    );

    // The single reads agree with the listings.
    let single = site
        .call(
            "bob",
            "GET",
            "/api/ctflow/v1/pipelines/alice-pipeline",
            None,
        )
        .await;
    assert_refused(&single, 403, "PERMISSION_DENIED", "Permission denied");
    let runs = site
        .ok("alice", "GET", "/api/ctflow/v1/pipeline-runs", None)
        .await;
    let alice_run = runs["pipeline_runs"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/ctflow/v1/pipeline-runs/{alice_run}");
    assert_eq!(site.status_of("bob", &path).await, 403);

    // A deleted pipeline's runs are admins' to read, in the listing and one by one.
    site.ok(
        "alice",
        "DELETE",
        "/api/ctflow/v1/pipelines/alice-pipeline",
        None,
    )
    .await;
    let runs = site
        .ok("alice", "GET", "/api/ctflow/v1/pipeline-runs", None)
        .await;
    assert!(
        names(&runs, "pipeline_runs", "pipeline").is_empty(),
        "{runs}"
    );
    assert_eq!(site.status_of("alice", &path).await, 403);
    assert_eq!(site.status_of("root", &path).await, 200);
}

/// Reads server-sent events from `/api/ctflow/v1/events` as `user` until `until` shows up.
async fn events_seen(site: &Site, user: &str, publish: impl AsyncFnOnce()) -> String {
    let mut stream = tokio::net::TcpStream::connect(site.server.address)
        .await
        .unwrap();
    stream
        .write_all(&signed(
            "GET",
            "/api/ctflow/v1/events",
            None,
            user,
            PASSWORD,
        ))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    // The head comes once the stream is subscribed.
    let read = stream.read(&mut buffer).await.unwrap();
    seen.extend_from_slice(&buffer[..read]);
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    publish().await;
    while !String::from_utf8_lossy(&seen).contains("last-event") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => seen.extend_from_slice(&buffer[..read]),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn the_event_stream_shows_only_readable_pipelines() {
    use ctflow_bus::Bus;
    let site = site().await;
    site.estate("alice").await;
    site.estate("bob").await;
    let arrived = |pipeline: &str, file: &str| ctflow_bus::WatchEvent::DataArrived {
        pipeline: pipeline.into(),
        trigger_index: 0,
        files: vec![file.into()],
        pipeline_run: None,
    };
    let publish = async || {
        site.bus
            .publish(arrived("alice-pipeline", "alice-secret.csv"))
            .await
            .unwrap();
        site.bus
            .publish(arrived("bob-pipeline", "last-event.csv"))
            .await
            .unwrap();
    };
    let bob = events_seen(&site, "bob", publish).await;
    assert!(!bob.contains("alice-secret"), "{bob}");
    let root = events_seen(&site, "root", publish).await;
    assert!(root.contains("alice-secret"), "{root}");
}

#[tokio::test]
async fn a_model_version_needs_read_access_to_its_source() {
    let site = site().await;
    let (alice_experiment, alice_run) = site.estate("alice").await;
    let (_, bob_run) = site.estate("bob").await;
    let create = |source: String, run_id: Option<&str>| {
        let mut body = json!({"name": "bob-model", "source": source});
        if let Some(run_id) = run_id {
            body["run_id"] = json!(run_id);
        }
        body
    };
    for body in [
        create(format!("runs:/{alice_run}/model"), Some(&alice_run)),
        create(
            format!("mlflow-artifacts:/{alice_experiment}/{alice_run}/artifacts/model"),
            Some(&alice_run),
        ),
        create("models:/alice-model/1".into(), None),
        create("models:/alice-model@champion".into(), None),
        create("models:/alice-model/latest".into(), None),
    ] {
        let answer = site
            .call(
                "bob",
                "POST",
                "/api/2.0/mlflow/model-versions/create",
                Some(body.clone()),
            )
            .await;
        assert_refused(&answer, 403, "PERMISSION_DENIED", "Permission denied");
    }
    let versions = site
        .ok(
            "root",
            "GET",
            "/api/2.0/mlflow/model-versions/search?filter=name%3D%27bob-model%27",
            None,
        )
        .await;
    assert_eq!(
        versions["model_versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    // Bob's own run still makes versions, and alice may grant him READ.
    site.ok(
        "bob",
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        Some(create(format!("runs:/{bob_run}/model"), Some(&bob_run))),
    )
    .await;
    site.ok(
        "alice",
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        Some(json!({"username": "bob", "resource_type": "experiment", "resource_id": alice_experiment, "permission": "READ"})),
    )
    .await;
    site.ok(
        "bob",
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        Some(create(format!("runs:/{alice_run}/model"), Some(&alice_run))),
    )
    .await;
}

fn head_value<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.split("\r\n\r\n").next()?.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_and_tokens_still_work() {
    let site = site().await;
    let token = site.token("alice", "ci").await;
    let by_token = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n")
            .into_bytes()
    };
    let search = "/api/2.0/mlflow/experiments/search?max_results=5";
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..7 {
        let raw = raw_exchange(
            site.server.address,
            &signed("GET", search, None, "alice", "not-her-password"),
        )
        .await;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let answer = parse_answer(raw.as_bytes());
        statuses.push(answer.status);
        if answer.status == 429 {
            assert_eq!(
                answer.body["error_code"], "REQUEST_LIMIT_EXCEEDED",
                "{}",
                answer.body
            );
            retry_after = head_value(&raw, "retry-after").map(str::to_string);
        }
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 401, 429],
        "five free failures; the sixth locks"
    );
    let seconds: u64 = retry_after.expect("a Retry-After").parse().unwrap();
    assert!((1..=300).contains(&seconds), "{seconds}");
    // While locked, no password is checked from this address, for any name; alice, whose
    // password was checked a moment ago, is still recognised without a new check; the
    // token is not touched by any of it.
    let other = site.call("bob", "GET", search, None).await;
    assert_eq!(other.status, 429, "{}", other.body);
    let recent = site.call("alice", "GET", search, None).await;
    assert_eq!(recent.status, 200, "{}", recent.body);
    for _ in 0..3 {
        let answer = exchange(site.server.address, &by_token(search)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// A token works as the password of HTTP Basic (what MLflow's gateway calls send), for
/// its own user only; a token under another name is a wrong password.
#[tokio::test]
async fn a_token_is_a_basic_password_for_its_own_user() {
    let site = site().await;
    let token = site.token("alice", "judge").await;
    let who = "/api/2.0/mlflow/users/current";
    let as_alice = exchange(
        site.server.address,
        &signed("GET", who, None, "alice", &token),
    )
    .await;
    assert_eq!(as_alice.status, 200, "{}", as_alice.body);
    assert_eq!(
        as_alice.body["user"]["username"], "alice",
        "{}",
        as_alice.body
    );
    let as_bob = exchange(
        site.server.address,
        &signed("GET", who, None, "bob", &token),
    )
    .await;
    assert_eq!(as_bob.status, 401, "{}", as_bob.body);
    let made_up = exchange(
        site.server.address,
        &signed("GET", who, None, "alice", "ctf_0123456789abcdef"),
    )
    .await;
    assert_eq!(made_up.status, 401, "{}", made_up.body);
}

#[tokio::test]
async fn the_mlflow_ui_routes_check_the_run_they_name() {
    let site = site().await;
    let (alice_experiment, alice_run) = site.estate("alice").await;
    let upload = |user: &'static str, run: String| {
        let address = site.server.address;
        async move {
            exchange(
                address,
                &signed(
                    "POST",
                    &format!("/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run}&path=note.txt"),
                    Some("hello"),
                    user,
                    PASSWORD,
                ),
            )
            .await
        }
    };
    // The run is named in the query and the file is the body: the guard still finds it.
    assert_refused(
        &upload("bob", alice_run.clone()).await,
        403,
        "PERMISSION_DENIED",
        "Permission denied",
    );
    let answer = upload("alice", alice_run.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for path in [
        format!("/get-artifact?run_id={alice_run}&path=note.txt"),
        format!("/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id={alice_run}&metric_key=m"),
    ] {
        assert_eq!(site.status_of("bob", &path).await, 403, "{path}");
        assert_eq!(site.status_of("alice", &path).await, 200, "{path}");
    }
    let answer = site
        .call(
            "bob",
            "POST",
            "/ajax-api/2.0/mlflow/experiments/search-datasets",
            Some(json!({"experiment_ids": [alice_experiment]})),
        )
        .await;
    assert_refused(&answer, 403, "PERMISSION_DENIED", "Permission denied");
}

#[tokio::test]
async fn graphql_answers_only_what_the_user_may_read() {
    let site = site().await;
    let (alice_experiment, alice_run) = site.estate("alice").await;
    let (_, bob_run) = site.estate("bob").await;
    let query = |body: String| json!({ "query": body });
    let get_run = |run: &str| {
        query(format!(
            "query q {{ mlflowGetRun(input: {{runId: \"{run}\"}}) {{ run {{ info {{ runId }} modelVersions {{ name }} }} }} }}"
        ))
    };
    let answer = site
        .ok("bob", "POST", "/graphql", Some(get_run(&alice_run)))
        .await;
    assert!(answer["data"]["mlflowGetRun"].is_null(), "{answer}");
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{answer}"
    );
    let answer = site
        .ok("bob", "POST", "/graphql", Some(get_run(&bob_run)))
        .await;
    assert_eq!(answer["errors"], Value::Null, "{answer}");
    assert_eq!(
        answer["data"]["mlflowGetRun"]["run"]["info"]["runId"],
        bob_run.as_str()
    );
    assert_eq!(
        answer["data"]["mlflowGetRun"]["run"]["modelVersions"][0]["name"],
        "bob-model"
    );
    let search = query(format!(
        "mutation m {{ mlflowSearchRuns(input: {{experimentIds: [\"{alice_experiment}\"]}}) {{ runs {{ info {{ runId }} }} }} }}"
    ));
    let answer = site
        .ok("bob", "POST", "/graphql", Some(search.clone()))
        .await;
    assert!(answer["data"]["mlflowSearchRuns"].is_null(), "{answer}");
    let answer = site.ok("alice", "POST", "/graphql", Some(search)).await;
    assert_eq!(
        answer["data"]["mlflowSearchRuns"]["runs"][0]["info"]["runId"],
        alice_run.as_str()
    );
    let versions = query(
        "query q { mlflowSearchModelVersions(input: {filter: \"\"}) { modelVersions { name } } }"
            .into(),
    );
    let answer = site.ok("bob", "POST", "/graphql", Some(versions)).await;
    assert_eq!(
        names(
            &answer["data"]["mlflowSearchModelVersions"],
            "modelVersions",
            "name"
        ),
        ["bob-model"]
    );
}

/// An OTLP/JSON export of one root span of trace `trace_hex` to `experiment`, signed in.
fn span_export(experiment: &str, trace_hex: &str, user: &str) -> Vec<u8> {
    use base64::Engine;
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace_hex, "spanId": "0102030405060708", "name": "root",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
        "status": {"code": 1}
    }]}]}]})
    .to_string();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"));
    format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\nauthorization: Basic {credentials}\r\n\
         content-type: application/json\r\nx-mlflow-experiment-id: {experiment}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn traces_are_read_and_written_with_their_experiments_permissions() {
    let site = site().await;
    let (alice_experiment, _) = site.estate("alice").await;
    let (bob_experiment, _) = site.estate("bob").await;
    let trace_hex = "00112233445566778899aabbccddeeff";
    let trace = format!("tr-{trace_hex}");
    // Spans go to the experiment in the export's header: only its writers may send them.
    let refused = exchange(
        site.server.address,
        &span_export(&alice_experiment, trace_hex, "bob"),
    )
    .await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    let sent = exchange(
        site.server.address,
        &span_export(&alice_experiment, trace_hex, "alice"),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    // Nor may bob file spans of alice's trace under his own experiment.
    let moved = exchange(
        site.server.address,
        &span_export(&bob_experiment, trace_hex, "bob"),
    )
    .await;
    assert_eq!(moved.status, 400, "{}", moved.body);

    for path in [
        format!("/api/3.0/mlflow/traces/{trace}"),
        format!("/api/3.0/mlflow/traces/get?trace_id={trace}&allow_partial=true"),
        format!("/api/3.0/mlflow/traces/batchGet?trace_ids={trace}"),
        format!("/api/2.0/mlflow/traces/{trace}/info"),
        format!("/ajax-api/2.0/mlflow/get-trace-artifact?request_id={trace}"),
        format!("/api/2.0/mlflow/traces?experiment_ids={alice_experiment}"),
    ] {
        assert_eq!(site.status_of("bob", &path).await, 403, "{path}");
        assert_eq!(site.status_of("alice", &path).await, 200, "{path}");
    }
    let search = json!({"locations": [{"type": "MLFLOW_EXPERIMENT",
        "mlflow_experiment": {"experiment_id": alice_experiment}}]});
    for (method, path, body) in [
        (
            "POST",
            "/api/3.0/mlflow/traces/search".to_string(),
            search.clone(),
        ),
        (
            "PATCH",
            format!("/api/2.0/mlflow/traces/{trace}/tags"),
            json!({"key": "k", "value": "v"}),
        ),
        (
            "POST",
            format!("/api/3.0/mlflow/traces/{trace}/assessments"),
            json!({"assessment": {"assessment_name": "q", "feedback": {"value": 1}}}),
        ),
        (
            "POST",
            "/api/3.0/mlflow/traces".to_string(),
            json!({"trace": {"trace_info": {"trace_id": "tr-ffff",
                "trace_location": {"type": "MLFLOW_EXPERIMENT",
                    "mlflow_experiment": {"experiment_id": alice_experiment}},
                "request_time": "2026-01-01T00:00:00Z", "state": "OK"}}}),
        ),
        (
            "POST",
            "/api/2.0/mlflow/traces/delete-traces".to_string(),
            json!({"experiment_id": alice_experiment, "request_ids": [trace]}),
        ),
    ] {
        let answer = site.call("bob", method, &path, Some(body.clone())).await;
        assert_refused(&answer, 403, "PERMISSION_DENIED", "Permission denied");
        site.ok("alice", method, &path, Some(body)).await;
    }
    // The delete went through: the trace is gone for alice as well.
    assert_eq!(
        site.status_of("alice", &format!("/api/3.0/mlflow/traces/{trace}"))
            .await,
        404
    );
}

#[tokio::test]
async fn issues_follow_their_experiments_permissions() {
    let site = site().await;
    let (alice_experiment, _) = site.estate("alice").await;
    let (bob_experiment, _) = site.estate("bob").await;
    let new_issue = |experiment: &str| json!({"experiment_id": experiment, "name": "slow", "description": "p99 too high"});
    let refused = site
        .call(
            "bob",
            "POST",
            "/api/3.0/mlflow/issues",
            Some(new_issue(&alice_experiment)),
        )
        .await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    let alice_issue = site
        .ok(
            "alice",
            "POST",
            "/api/3.0/mlflow/issues",
            Some(new_issue(&alice_experiment)),
        )
        .await["issue"]["issue_id"]
        .as_str()
        .unwrap()
        .to_string();
    site.ok(
        "bob",
        "POST",
        "/api/3.0/mlflow/issues",
        Some(new_issue(&bob_experiment)),
    )
    .await;
    let path = format!("/api/3.0/mlflow/issues/{alice_issue}");
    assert_eq!(site.status_of("bob", &path).await, 403);
    assert_eq!(site.status_of("alice", &path).await, 200);
    let update = json!({"issue_id": alice_issue, "status": "resolved"});
    let refused = site.call("bob", "PATCH", &path, Some(update.clone())).await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    site.ok("alice", "PATCH", &path, Some(update)).await;
    // A search over every experiment shows each user their own issues only.
    for (user, experiment) in [("alice", &alice_experiment), ("bob", &bob_experiment)] {
        let found = site
            .ok(
                user,
                "POST",
                "/api/3.0/mlflow/issues/search",
                Some(json!({})),
            )
            .await;
        assert_eq!(
            names(&found, "issues", "experiment_id"),
            vec![experiment.clone()]
        );
    }
}

#[tokio::test]
async fn evaluation_datasets_follow_every_experiment_they_are_in() {
    let site = site().await;
    let (alice_experiment, _) = site.estate("alice").await;
    let (bob_experiment, _) = site.estate("bob").await;
    let create = |experiments: Vec<&String>| json!({"name": "qa", "experiment_ids": experiments, "tags": "{\"team\": \"ml\"}"});
    // A dataset goes only into experiments its creator may edit.
    let refused = site
        .call(
            "bob",
            "POST",
            "/api/3.0/mlflow/datasets/create",
            Some(create(vec![&alice_experiment])),
        )
        .await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    let alice_dataset = site
        .ok(
            "alice",
            "POST",
            "/api/3.0/mlflow/datasets/create",
            Some(create(vec![&alice_experiment])),
        )
        .await["dataset"]["dataset_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/3.0/mlflow/datasets/{alice_dataset}");
    assert_eq!(site.status_of("bob", &path).await, 403);
    assert_eq!(site.status_of("bob", &format!("{path}/records")).await, 403);
    assert_eq!(
        site.status_of("alice", &format!("{path}/records")).await,
        200
    );
    let records = json!({"records": "[{\"inputs\": {\"q\": 1}}]"});
    let refused = site
        .call(
            "bob",
            "POST",
            &format!("{path}/records"),
            Some(records.clone()),
        )
        .await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    site.ok("alice", "POST", &format!("{path}/records"), Some(records))
        .await;
    // Linking it into bob's experiment needs EDIT there as well.
    let link = json!({"experiment_ids": [bob_experiment]});
    let refused = site
        .call(
            "alice",
            "POST",
            &format!("{path}/add-experiments"),
            Some(link.clone()),
        )
        .await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    // Searches list what the caller may read in every experiment of the dataset.
    let bob_found = site
        .ok(
            "bob",
            "POST",
            "/api/3.0/mlflow/datasets/search",
            Some(json!({})),
        )
        .await;
    assert!(bob_found.get("datasets").is_none(), "{bob_found}");
    let alice_found = site
        .ok(
            "alice",
            "POST",
            "/api/3.0/mlflow/datasets/search",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        names(&alice_found, "datasets", "dataset_id"),
        vec![alice_dataset]
    );
}

#[tokio::test]
async fn gateway_secrets_are_for_admins() {
    let site = site().await;
    for path in [
        "/api/3.0/mlflow/gateway/secrets/list",
        "/api/3.0/mlflow/gateway/secrets/get?secret_id=s-1",
    ] {
        assert_eq!(site.status_of("alice", path).await, 403, "{path}");
    }
    let refused = site
        .call(
            "alice",
            "POST",
            "/api/3.0/mlflow/gateway/secrets/create",
            Some(json!({"secret_name": "k", "secret_value": {"api_key": "sk-0123456789"}})),
        )
        .await;
    assert_refused(&refused, 403, "PERMISSION_DENIED", "Permission denied");
    assert_eq!(
        site.status_of("root", "/api/3.0/mlflow/gateway/secrets/list")
            .await,
        200
    );
    // Whether the server keeps secrets is no secret.
    let config = site
        .ok(
            "alice",
            "GET",
            "/ajax-api/3.0/mlflow/gateway/secrets/config",
            None,
        )
        .await;
    assert_eq!(config["using_default_passphrase"], false);
}
