//! The server's limits over real loopback sockets: body and upload sizes, stalled request
//! heads and bodies, the connection limit and the page cap, each refused with MLflow's
//! error JSON and the status HTTP has for it.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Duration;

use ctflow_server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::*;

fn small_limits() -> Limits {
    Limits {
        max_request_body: 1024,
        max_artifact_upload: 4096,
        max_page_size: 2,
        max_connections: 2,
        max_connections_per_address: 2,
        idle_connection_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_millis(400),
        body_read_timeout: Duration::from_millis(400),
    }
}

#[tokio::test]
async fn oversized_request_bodies_are_refused_with_413() {
    let server = start(small_limits()).await;
    let name = "n".repeat(2000);
    let declared = exchange(
        server.address,
        &post(
            "/api/2.0/mlflow/experiments/create",
            &format!(r#"{{"name":"{name}"}}"#),
        ),
    )
    .await;
    assert_refused(
        &declared,
        413,
        "INVALID_PARAMETER_VALUE",
        "--max-request-body",
    );
    assert!(declared.body["message"].as_str().unwrap().contains("1KiB"));

    // Without a Content-Length the limit still holds while the body streams in.
    let streamed = exchange(
        server.address,
        &chunked(
            "POST",
            "/api/2.0/mlflow/experiments/create",
            &[
                b"{\"name\":\"".to_vec(),
                vec![b'n'; 900],
                vec![b'n'; 900],
                b"\"}".to_vec(),
            ],
        ),
    )
    .await;
    assert_refused(
        &streamed,
        413,
        "INVALID_PARAMETER_VALUE",
        "--max-request-body",
    );

    // Nothing was created, and a body within the limit works.
    let search = exchange(
        server.address,
        &get("/api/2.0/mlflow/experiments/search?max_results=2"),
    )
    .await;
    assert_eq!(search.body["experiments"].as_array().unwrap().len(), 1);
    create_experiment(server.address, "small").await;
}

#[tokio::test]
async fn oversized_artifact_uploads_are_refused_and_leave_the_old_file() {
    let server = start(small_limits()).await;
    let path = "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model.bin";
    let first = exchange(
        server.address,
        &format!(
            "PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfirst"
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);

    let declared = exchange(
        server.address,
        &format!(
            "PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    assert_refused(
        &declared,
        413,
        "INVALID_PARAMETER_VALUE",
        "--max-artifact-upload",
    );

    let streamed = exchange(
        server.address,
        &chunked("PUT", path, &[vec![b'x'; 3000], vec![b'x'; 3000]]),
    )
    .await;
    assert_refused(
        &streamed,
        413,
        "INVALID_PARAMETER_VALUE",
        "--max-artifact-upload",
    );

    let stored = server
        .artifacts
        .path()
        .join("root/1/run/artifacts/model.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), b"first");
    let leftovers: Vec<_> = std::fs::read_dir(stored.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("model.bin")]);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let server = start(small_limits()).await;
    let answer = exchange(server.address, b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":").await;
    assert_refused(&answer, 408, "BAD_REQUEST", "--body-read-timeout");

    let answer = exchange(server.address, b"PUT /api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc").await;
    assert_refused(&answer, 408, "BAD_REQUEST", "--body-read-timeout");
    assert!(
        !server
            .artifacts
            .path()
            .join("root/1/r/artifacts/f")
            .exists()
    );
}

#[tokio::test]
async fn a_stalled_request_head_is_answered_408_and_an_idle_connection_closed() {
    let server = start(small_limits()).await;
    let answer = exchange(
        server.address,
        b"GET /api/2.0/mlflow/experiments/search HTTP/1.1\r\nhost: x\r\n",
    )
    .await;
    assert_refused(&answer, 408, "BAD_REQUEST", "--header-read-timeout");

    // A keep-alive connection that sends nothing after its answer is closed silently.
    let raw = raw_exchange(server.address, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
}

#[tokio::test]
async fn connections_over_the_limit_are_answered_503_but_probes_are_answered() {
    let mut limits = small_limits();
    limits.header_read_timeout = Duration::from_secs(30);
    limits.idle_connection_timeout = Duration::from_secs(30);
    limits.max_connections_per_address = 10;
    let server = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        // A full exchange proves the server took the connection before the next opens.
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 256];
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let search = "/api/2.0/mlflow/experiments/search?max_results=1";
    let refused = exchange(server.address, &get(search)).await;
    assert_refused(
        &refused,
        503,
        "TEMPORARILY_UNAVAILABLE",
        "--max-http-connections",
    );
    // A liveness or readiness probe is answered by the server even now.
    for probe in ["/health", "/ready"] {
        let answer = exchange(server.address, &get(probe)).await;
        assert_eq!(answer.status, 200, "{probe}: {}", answer.body);
    }

    // A closed connection frees its place.
    drop(held.pop());
    let mut answered = None;
    for _ in 0..100 {
        let answer = exchange(server.address, &get(search)).await;
        if answer.status == 200 {
            answered = Some(answer.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, Some(200));
}

#[tokio::test]
async fn pages_are_capped_and_followed_by_tokens() {
    let server = start(small_limits()).await;
    for name in ["a", "b", "c"] {
        create_experiment(server.address, name).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let answer = exchange(
            server.address,
            &post(
                "/api/2.0/mlflow/experiments/search",
                &format!(r#"{{"max_results":1000,"page_token":"{token}"}}"#),
            ),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let page = answer.body["experiments"].as_array().unwrap();
        assert!(page.len() <= 2);
        names.extend(page.iter().map(|e| e["name"].as_str().unwrap().to_string()));
        match answer.body["next_page_token"].as_str() {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    names.sort();
    assert_eq!(names, ["Default", "a", "b", "c"]);

    // A metric history asked for whole comes in capped pages.
    let run = exchange(
        server.address,
        &post("/api/2.0/mlflow/runs/create", r#"{"experiment_id":"0"}"#),
    )
    .await;
    let run_id = run.body["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    for step in 0..5 {
        let answer = exchange(
            server.address,
            &post(
                "/api/2.0/mlflow/runs/log-metric",
                &format!(
                    r#"{{"run_id":"{run_id}","key":"loss","value":{step},"timestamp":1,"step":{step}}}"#
                ),
            ),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let mut steps = Vec::new();
    let mut token = String::new();
    loop {
        let answer = exchange(
            server.address,
            &get(&format!(
                "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss&page_token={token}"
            )),
        )
        .await;
        let page = answer.body["metrics"].as_array().unwrap();
        assert!(page.len() <= 2, "{}", answer.body);
        steps.extend(page.iter().map(|m| m["step"].as_i64().unwrap()));
        match answer.body["next_page_token"].as_str() {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    steps.sort();
    assert_eq!(steps, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let mut limits = small_limits();
    limits.header_read_timeout = Duration::from_secs(30);
    let server = start(limits).await;
    let mut idle = TcpStream::connect(server.address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 256];
    let read = idle.read(&mut buffer).await.unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    server.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server.served)
        .await
        .expect("the server stopped within 5s")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.address).await.is_err());
}
