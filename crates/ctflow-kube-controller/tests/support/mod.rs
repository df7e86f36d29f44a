//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use ctflow_store::{Store, StoreOptions};

/// A SQLite store in `dir`.
pub async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::open(StoreOptions {
        backend_store_uri: format!("sqlite:///{}", dir.path().join("ctflow.db").display()),
        default_artifact_root: dir.path().join("artifacts").display().to_string(),
        max_connections: 4,
        durability: Default::default(),
    })
    .await
    .expect("the store opens")
}

/// Polls `check` until it answers, for up to `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
