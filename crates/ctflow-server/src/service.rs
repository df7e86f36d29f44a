//! The operations endpoints every ctflow service answers: `/health` (the process runs),
//! `/ready` (its dependencies answer: store, bus, leadership), `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use ctflow_metrics::{Metrics, Snapshot};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// One readiness condition: `Ok` or why not.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
struct ServiceState {
    service: &'static str,
    checks: Arc<Vec<(&'static str, ReadinessCheck)>>,
    metrics: Arc<Metrics>,
}

/// Runs every check; the JSON names each one's answer.
pub async fn readiness(service: &str, checks: &[(&'static str, ReadinessCheck)]) -> (bool, Value) {
    let mut answers = Map::new();
    let mut ready = true;
    for (name, check) in checks {
        let answer = match check().await {
            Ok(()) => Value::from("ok"),
            Err(why) => {
                ready = false;
                Value::from(why)
            }
        };
        answers.insert((*name).to_string(), answer);
    }
    (
        ready,
        json!({ "service": service, "ready": ready, "checks": answers }),
    )
}

pub fn readiness_response(ready: bool, body: Value) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn ready(State(state): State<ServiceState>) -> Response {
    let (ready, body) = readiness(state.service, &state.checks).await;
    readiness_response(ready, body)
}

async fn export_metrics(State(state): State<ServiceState>) -> Response {
    // NB: counts read from the store are the tracking server's to export; a service
    // exports its own instruments only, so sums across services stay right.
    (
        [(
            axum::http::header::CONTENT_TYPE,
            ctflow_metrics::CONTENT_TYPE,
        )],
        state.metrics.encode(&Snapshot::default()),
    )
        .into_response()
}

/// The operations router of a service other than the tracking server.
pub fn service_router(
    service: &'static str,
    checks: Vec<(&'static str, ReadinessCheck)>,
    metrics: Arc<Metrics>,
) -> Router {
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .route("/metrics", get(export_metrics))
        .with_state(ServiceState {
            service,
            checks: Arc::new(checks),
            metrics,
        })
}

/// Serves a service's operations router until `shutdown`.
pub async fn serve_service(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn check(answer: Result<(), String>) -> ReadinessCheck {
        Arc::new(move || {
            let answer = answer.clone();
            Box::pin(async move { answer })
        })
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_only_when_every_check_passes() {
        let metrics = Arc::new(Metrics::new());
        let healthy = service_router("worker", vec![("bus", check(Ok(())))], metrics.clone());
        let (status, body) = get(healthy.clone(), "/ready").await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            body,
            json!({"service": "worker", "ready": true, "checks": {"bus": "ok"}})
        );
        assert_eq!(
            get(healthy.clone(), "/health").await,
            (StatusCode::OK, "OK".into())
        );
        let (status, text) = get(healthy, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("ctflow_workers"), "{text}");

        let sick = service_router(
            "controller",
            vec![
                ("store", check(Ok(()))),
                ("bus", check(Err("not connected to NATS".into()))),
            ],
            metrics,
        );
        let (status, body) = get(sick.clone(), "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["checks"]["bus"], "not connected to NATS");
        assert_eq!(body["ready"], false);
        // Liveness does not depend on readiness.
        assert_eq!(get(sick, "/health").await.0, StatusCode::OK);
    }
}
