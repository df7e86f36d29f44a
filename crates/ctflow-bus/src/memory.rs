//! The in-process bus of `ctflow up`: unbounded channels and a cancellation registry.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cancels::Cancels;
use crate::{Bus, Delivery, Error, Job, JobEvent, Lease, Result, WatchEvent};

/// Watch events kept for a subscriber that has not read them yet.
const WATCH_EVENT_BACKLOG: usize = 1024;

/// A job or a report, and how often it was handed out.
type Queued<T> = (T, u64);

pub struct MemoryBus {
    jobs_tx: mpsc::UnboundedSender<Queued<Job>>,
    jobs_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued<Job>>>,
    events_tx: mpsc::UnboundedSender<Queued<JobEvent>>,
    events_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued<JobEvent>>>,
    cancels: Cancels,
    wake: Notify,
    watch_events: broadcast::Sender<WatchEvent>,
    closed: CancellationToken,
}

/// Something taken from an in-process channel: handing it back sends it again.
struct Requeue<T> {
    item: T,
    delivered: u64,
    tx: mpsc::UnboundedSender<Queued<T>>,
}

impl<T: Clone + Send + Sync + 'static> Lease for Requeue<T> {
    fn keep_alive(&self) -> BoxFuture<'_, Result<()>> {
        // An in-process lease lasts as long as the process.
        Box::pin(async { Ok(()) })
    }

    fn done(&self) -> BoxFuture<'_, Result<()>> {
        // Taking it from the channel already removed it.
        Box::pin(async { Ok(()) })
    }

    fn hand_back(&self, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.tx
                .send((self.item.clone(), self.delivered))
                .map_err(|_| Error::Closed)
        })
    }
}

/// Takes the next item from a channel as a delivery, unless the bus closes first.
async fn take<T: Clone + Send + Sync + 'static>(
    rx: &tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued<T>>>,
    tx: &mpsc::UnboundedSender<Queued<T>>,
    closed: &CancellationToken,
) -> Option<Delivery<T>> {
    let mut rx = tokio::select! {
        rx = rx.lock() => rx,
        _ = closed.cancelled() => return None,
    };
    let (item, handed_out) = tokio::select! {
        next = rx.recv() => next?,
        _ = closed.cancelled() => return None,
    };
    let delivered = handed_out + 1;
    Some(Delivery {
        item: item.clone(),
        delivered,
        exhausted: false,
        lease: Box::new(Requeue {
            item,
            delivered,
            tx: tx.clone(),
        }),
    })
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
            cancels: Cancels::default(),
            wake: Notify::new(),
            watch_events: broadcast::channel(WATCH_EVENT_BACKLOG).0,
            closed: CancellationToken::new(),
        }
    }
}

impl Bus for MemoryBus {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<()>> {
        let sent = self.jobs_tx.send((job, 0)).map_err(|_| Error::Closed);
        Box::pin(async move { sent })
    }

    fn keep_alive_interval(&self) -> Option<Duration> {
        None
    }

    fn next_job(&self) -> BoxFuture<'_, Option<Delivery<Job>>> {
        Box::pin(take(&self.jobs_rx, &self.jobs_tx, &self.closed))
    }

    fn report(&self, event: JobEvent) -> BoxFuture<'_, Result<()>> {
        let sent = self.events_tx.send((event, 0)).map_err(|_| Error::Closed);
        Box::pin(async move { sent })
    }

    fn next_event(&self) -> BoxFuture<'_, Option<Delivery<JobEvent>>> {
        Box::pin(take(&self.events_rx, &self.events_tx, &self.closed))
    }

    fn cancel(&self, pipeline_run: &str) -> BoxFuture<'_, Result<()>> {
        self.cancels.cancel(pipeline_run);
        Box::pin(async { Ok(()) })
    }

    fn cancellation(&self, pipeline_run: &str) -> CancellationToken {
        self.cancels.token(pipeline_run)
    }

    fn forget(&self, pipeline_run: &str) {
        self.cancels.forget(pipeline_run);
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

    fn connected(&self) -> bool {
        !self.closed.is_cancelled()
    }

    fn close(&self) {
        self.closed.cancel();
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        // Jobs not taken stay in the channel; nothing is on its way to this process.
        Box::pin(async {})
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
            snapshot_id: None,
            snapshot: None,
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
            got.push(bus.next_job().await.expect("a job").item.pipeline_run);
        }
        assert_eq!(got, vec!["a", "b", "c"]);
        bus.close();
        assert!(bus.next_job().await.is_none());
    }

    #[tokio::test]
    async fn a_handed_back_job_comes_again_with_its_delivery_count() {
        let bus = MemoryBus::new();
        bus.enqueue(job("a")).await.expect("open");
        let first = bus.next_job().await.expect("a job");
        assert_eq!(first.delivered, 1);
        first.lease.hand_back(Duration::ZERO).await.expect("open");
        let second = bus.next_job().await.expect("the job again");
        assert_eq!(
            (second.item.pipeline_run.as_str(), second.delivered),
            ("a", 2)
        );
    }

    #[tokio::test]
    async fn a_report_handed_back_comes_again() {
        let bus = MemoryBus::new();
        let event = JobEvent::Process {
            pipeline_run: "a".into(),
            attempt: 1,
            pid: 7,
        };
        bus.report(event.clone()).await.expect("open");
        let first = bus.next_event().await.expect("a report");
        first.lease.hand_back(Duration::ZERO).await.expect("open");
        let again = bus.next_event().await.expect("the report again");
        assert_eq!(again.item, event);
        again.lease.done().await.expect("settled");
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
