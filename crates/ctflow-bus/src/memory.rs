//! The in-process bus of `ctflow up`: unbounded channels and a cancellation registry.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{Bus, Error, Job, JobEvent, Result, WatchEvent};

/// Watch events kept for a subscriber that has not read them yet.
const WATCH_EVENT_BACKLOG: usize = 1024;

pub struct MemoryBus {
    jobs_tx: mpsc::UnboundedSender<Job>,
    jobs_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    events_tx: mpsc::UnboundedSender<JobEvent>,
    events_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<JobEvent>>,
    cancels: Mutex<Cancels>,
    wake: Notify,
    watch_events: broadcast::Sender<WatchEvent>,
    closed: CancellationToken,
}

#[derive(Default)]
struct Cancels {
    tokens: HashMap<String, CancellationToken>,
    canceled: HashSet<String>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new()
    }
}

impl MemoryBus {
    pub fn new() -> MemoryBus {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        MemoryBus {
            jobs_tx,
            jobs_rx: tokio::sync::Mutex::new(jobs_rx),
            events_tx,
            events_rx: tokio::sync::Mutex::new(events_rx),
            cancels: Mutex::new(Cancels::default()),
            wake: Notify::new(),
            watch_events: broadcast::channel(WATCH_EVENT_BACKLOG).0,
            closed: CancellationToken::new(),
        }
    }

    fn cancels(&self) -> std::sync::MutexGuard<'_, Cancels> {
        // NB: the lock guards plain maps; a panic while holding it cannot leave them
        // half-updated, so a poisoned lock is still usable.
        self.cancels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Bus for MemoryBus {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<()>> {
        let sent = self.jobs_tx.send(job).map_err(|_| Error::Closed);
        Box::pin(async move { sent })
    }

    fn next_job(&self) -> BoxFuture<'_, Option<Job>> {
        Box::pin(async move {
            let mut rx = tokio::select! {
                rx = self.jobs_rx.lock() => rx,
                _ = self.closed.cancelled() => return None,
            };
            tokio::select! {
                job = rx.recv() => job,
                _ = self.closed.cancelled() => None,
            }
        })
    }

    fn report(&self, event: JobEvent) -> BoxFuture<'_, Result<()>> {
        let sent = self.events_tx.send(event).map_err(|_| Error::Closed);
        Box::pin(async move { sent })
    }

    fn next_event(&self) -> BoxFuture<'_, Option<JobEvent>> {
        Box::pin(async move {
            let mut rx = self.events_rx.lock().await;
            tokio::select! {
                event = rx.recv() => event,
                _ = self.closed.cancelled() => None,
            }
        })
    }

    fn cancel(&self, pipeline_run: &str) -> BoxFuture<'_, Result<()>> {
        let mut cancels = self.cancels();
        cancels.canceled.insert(pipeline_run.to_string());
        if let Some(token) = cancels.tokens.get(pipeline_run) {
            token.cancel();
        }
        Box::pin(async { Ok(()) })
    }

    fn cancellation(&self, pipeline_run: &str) -> CancellationToken {
        let mut cancels = self.cancels();
        let token = cancels
            .tokens
            .entry(pipeline_run.to_string())
            .or_default()
            .clone();
        if cancels.canceled.contains(pipeline_run) {
            token.cancel();
        }
        token
    }

    fn forget(&self, pipeline_run: &str) {
        let mut cancels = self.cancels();
        cancels.tokens.remove(pipeline_run);
        cancels.canceled.remove(pipeline_run);
    }

    fn wake_controller(&self) {
        self.wake.notify_one();
    }

    fn controller_woken(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wake.notified())
    }

    fn publish(&self, event: WatchEvent) -> BoxFuture<'_, Result<()>> {
        if self.closed.is_cancelled() {
            return Box::pin(async { Err(Error::Closed) });
        }
        // No subscriber is not an error: the event's trigger is already in the store.
        let _ = self.watch_events.send(event);
        self.wake.notify_one();
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self) -> BoxStream<'static, WatchEvent> {
        let receiver = self.watch_events.subscribe();
        let closed = self.closed.clone();
        Box::pin(futures::stream::unfold(
            (receiver, closed),
            |(mut receiver, closed)| async move {
                loop {
                    let next = tokio::select! {
                        next = receiver.recv() => next,
                        _ = closed.cancelled() => return None,
                    };
                    match next {
                        Ok(event) => return Some((event, (receiver, closed))),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "a watch-event subscriber fell behind");
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }

    fn close(&self) {
        self.closed.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctflow_core::trigger::TriggerEvent;

    fn job(id: &str) -> Job {
        Job {
            pipeline_run: id.into(),
            pipeline: "p".into(),
            attempt: 1,
            spec: serde_json::from_value(serde_json::json!({"project": {"uri": "."}}))
                .expect("valid spec"),
            base_dir: ".".into(),
            trigger: TriggerEvent::new("p", "manual", "k".into()),
        }
    }

    #[tokio::test]
    async fn jobs_reach_one_worker_each_in_order() {
        let bus = std::sync::Arc::new(MemoryBus::new());
        for id in ["a", "b", "c"] {
            bus.enqueue(job(id)).await.expect("open");
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(bus.next_job().await.expect("a job").pipeline_run);
        }
        assert_eq!(got, vec!["a", "b", "c"]);
        bus.close();
        assert!(bus.next_job().await.is_none());
    }

    #[tokio::test]
    async fn a_cancel_before_the_worker_listens_still_lands() {
        let bus = MemoryBus::new();
        bus.cancel("x").await.expect("open");
        assert!(bus.cancellation("x").is_cancelled());
        let token = bus.cancellation("y");
        assert!(!token.is_cancelled());
        bus.cancel("y").await.expect("open");
        assert!(token.is_cancelled());
        bus.forget("x");
        assert!(!bus.cancellation("x").is_cancelled());
    }

    #[tokio::test]
    async fn watch_events_reach_every_subscriber_and_wake_the_controller() {
        use futures::StreamExt;
        let bus = MemoryBus::new();
        let (mut first, mut second) = (bus.subscribe(), bus.subscribe());
        let event = WatchEvent::DataArrived {
            pipeline: "p".into(),
            trigger_index: 0,
            files: vec!["/d/a.csv".into()],
            pipeline_run: Some("r1".into()),
        };
        bus.publish(event.clone()).await.expect("open bus");
        assert_eq!(first.next().await, Some(event.clone()));
        assert_eq!(second.next().await, Some(event));
        tokio::time::timeout(std::time::Duration::from_secs(1), bus.controller_woken())
            .await
            .expect("the controller was woken");
        bus.close();
        assert_eq!(first.next().await, None);
        assert!(
            bus.publish(WatchEvent::DataArrived {
                pipeline: "p".into(),
                trigger_index: 0,
                files: Vec::new(),
                pipeline_run: None,
            })
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn wakeups_are_not_lost() {
        let bus = MemoryBus::new();
        bus.wake_controller();
        // A wake-up sent before anyone waits is kept for the next waiter.
        tokio::time::timeout(std::time::Duration::from_secs(1), bus.controller_woken())
            .await
            .expect("woken");
    }
}
