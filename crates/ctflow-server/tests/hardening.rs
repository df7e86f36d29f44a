//! Defects found by an operator's probes (a full disk, out-of-range numbers, half-written
//! uploads, idle connections), each reproduced over real loopback sockets and real files.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::{Path, PathBuf};
use std::time::Duration;

use ctflow_server::Limits;
use serde_json::Value;

mod support;
use support::*;

/// A tmpfs of `size` mounted for one test, unmounted when dropped. Mounting needs root
/// (CI runs as root); elsewhere the test says why it did not run.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match mounted {
            Ok(status) if status.success() => Some(SmallDisk { path, _dir: dir }),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here ({other:?}); run as root to test a full disk"
                );
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system of `folder` to the last byte with one file, returned.
fn fill(folder: &Path) -> PathBuf {
    use std::io::Write;
    let path = folder.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn create_run(address: std::net::SocketAddr, experiment_id: &str) -> String {
    let answer = exchange(
        address,
        &post(
            "/api/2.0/mlflow/runs/create",
            &format!(r#"{{"experiment_id":"{experiment_id}","start_time":1}}"#),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A log-batch of `count` metrics named `key` at steps from `first`.
fn metrics_batch(run_id: &str, key: &str, first: usize, count: usize) -> Vec<u8> {
    let metrics: Vec<Value> = (first..first + count)
        .map(|step| serde_json::json!({"key": key, "value": step as f64, "timestamp": 1, "step": step}))
        .collect();
    post(
        "/api/2.0/mlflow/runs/log-batch",
        &serde_json::json!({"run_id": run_id, "metrics": metrics}).to_string(),
    )
}

async fn history_len(address: std::net::SocketAddr, run_id: &str, key: &str) -> usize {
    let answer = exchange(
        address,
        &get(&format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}"
        )),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["metrics"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_full_disk_is_503_and_writes_resume_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let artifacts = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", disk.path.join("ctflow.db").display());
    let server = start_with(config(uri, &artifacts, Limits::default()), artifacts).await;
    let experiment = create_experiment(server.address, "disk").await;
    let run_id = create_run(server.address, &experiment).await;
    let ready = exchange(server.address, &get("/ready")).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    let filler = fill(&disk.path);
    let mut refused = None;
    let mut acknowledged = 0;
    for batch in 0..200 {
        let answer = exchange(
            server.address,
            &metrics_batch(&run_id, "full", batch * 1000, 1000),
        )
        .await;
        if answer.status != 200 {
            refused = Some(answer);
            break;
        }
        acknowledged += 1000;
    }
    let refused = refused.expect("the disk filled up");
    assert_refused(
        &refused,
        503,
        "TEMPORARILY_UNAVAILABLE",
        "no space left for the database",
    );
    let ready = exchange(server.address, &get("/ready")).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body["checks"]["store"]
            .as_str()
            .is_some_and(|why| why.contains("no space left for the database")),
        "{}",
        ready.body
    );
    // Every acknowledged point is there; nothing of the refused batch is.
    assert_eq!(
        history_len(server.address, &run_id, "full").await,
        acknowledged
    );

    std::fs::remove_file(filler).unwrap();
    // The writer is usable again at once: no restart, no stuck transaction.
    for key in ["after-a", "after-b"] {
        let answer = exchange(server.address, &metrics_batch(&run_id, key, 0, 100)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(history_len(server.address, &run_id, key).await, 100);
    }
    let ready = exchange(server.address, &get("/ready")).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    server.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server.served).await;
}

#[tokio::test]
async fn out_of_range_integers_are_refused_and_nothing_is_stored() {
    let server = start(Limits::default()).await;
    let run_id = create_run(server.address, "0").await;
    // (timestamp, step) as the JSON carries them.
    for (timestamp, step) in [
        ("1e30", "0"),
        ("18446744073709551616", "0"),
        ("9223372036854775808", "0"),
        ("1", "-1e19"),
        (r#""99999999999999999999""#, "0"),
    ] {
        let metric = format!(r#""key":"m","value":1,"timestamp":{timestamp},"step":{step}"#);
        let single = format!(r#"{{"run_id":"{run_id}",{metric}}}"#);
        let batch = format!(r#"{{"run_id":"{run_id}","metrics":[{{{metric}}}]}}"#);
        for (path, body) in [
            ("/api/2.0/mlflow/runs/log-metric", single),
            ("/api/2.0/mlflow/runs/log-batch", batch),
        ] {
            let answer = exchange(server.address, &post(path, &body)).await;
            assert_refused(&answer, 400, "INVALID_PARAMETER_VALUE", "(int64)");
        }
    }
    assert_eq!(history_len(server.address, &run_id, "m").await, 0);
    // The largest int64 is a value like any other.
    let answer = exchange(
        server.address,
        &post(
            "/api/2.0/mlflow/runs/log-metric",
            &format!(
                r#"{{"run_id":"{run_id}","key":"m","value":1,"timestamp":9223372036854775807}}"#
            ),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// A connection from `source` (any 127.0.0.0/8 address is this machine).
async fn connect_from(source: &str, server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Waits for the server to close `stream`; how long that took.
async fn closed_after(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

fn connection_limits() -> Limits {
    Limits {
        max_connections: 8,
        max_connections_per_address: 4,
        idle_connection_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_secs(20),
        body_read_timeout: Duration::from_secs(20),
        ..Limits::default()
    }
}

#[tokio::test]
async fn idle_connections_close_long_before_slow_requests_do() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(connection_limits()).await;
    // A connection that sends nothing goes after the idle timeout, not the header one.
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let waited = closed_after(&mut silent, Duration::from_secs(5)).await;
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // So does a keep-alive connection once its answer is sent.
    let mut kept = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let waited = closed_after(&mut kept, Duration::from_secs(5)).await;
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // A request whose head and body trickle in for longer than the idle timeout is a
    // request under way, not an idle connection: it is answered.
    let body = r#"{"name":"trickled"}"#;
    let request = format!(
        "POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut slow = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    for piece in request.as_bytes().chunks(request.len() / 6 + 1) {
        slow.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = parse_answer(&answer);
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    use tokio::io::AsyncWriteExt;
    let mut limits = connection_limits();
    limits.idle_connection_timeout = Duration::from_secs(20);
    let server = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.2", server.address).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let search = get("/api/2.0/mlflow/experiments/search?max_results=1");
    let mut fifth = connect_from("127.0.0.2", server.address).await;
    fifth.write_all(&search).await.unwrap();
    let answer = parse_answer(&read_all(&mut fifth).await);
    assert_refused(
        &answer,
        503,
        "TEMPORARILY_UNAVAILABLE",
        "--max-connections-per-address",
    );
    let mut other = connect_from("127.0.0.1", server.address).await;
    other.write_all(&search).await.unwrap();
    let answer = parse_answer(&read_all(&mut other).await);
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn probes_are_answered_when_every_connection_is_taken() {
    use tokio::io::AsyncWriteExt;
    let mut limits = connection_limits();
    limits.idle_connection_timeout = Duration::from_secs(20);
    let server = start(limits).await;
    let mut held = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..4 {
            held.push(connect_from(source, server.address).await);
        }
    }
    // More silent connections than the room kept for probes at the limit: the same
    // addresses cannot take it all.
    for source in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..40 {
            held.push(connect_from(source, server.address).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (path, status) in [
        ("/health", 200),
        ("/ready", 200),
        ("/api/2.0/mlflow/experiments/search?max_results=1", 503),
    ] {
        let mut probe = connect_from("127.0.0.4", server.address).await;
        probe.write_all(&get(path)).await.unwrap();
        let answer = parse_answer(&read_all(&mut probe).await);
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
    }
}
