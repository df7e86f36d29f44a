//! Defects found by an operator's probes (a full disk, out-of-range numbers, half-written
//! uploads, idle connections), each reproduced over real loopback sockets and real files.

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
