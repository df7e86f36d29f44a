//! The bus of the distributed services, on NATS JetStream.
//!
//! - Jobs: a work-queue stream with one durable pull consumer that every worker pulls
//!   from, one message at a time, acknowledged only when the job's report is on the bus.
//!   A worker keeps a running job's lease with in-progress acks; a worker that dies stops
//!   doing so, and after `ack_wait` the job is delivered to another. A job is published
//!   with `Nats-Msg-Id: <pipeline run>/<attempt>`, so the controller may queue it again
//!   after a restart without doubling it.
//! - Reports (worker -> controller) and watch events: one stream with limits retention.
//!   The controller reads reports through its durable consumer and acknowledges each once
//!   recorded; watch events carry their trigger's dedupe key as `Nats-Msg-Id` and reach
//!   subscribers through ordered consumers.
//! - Cancellations: a key-value bucket (key = pipeline run), watched by every process, so
//!   a cancel made before the worker took the job still stops it.
//! - Controller wake-ups: a plain subject; a missed one costs at most the controller's
//!   polling interval, because every trigger is in the store first.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, kv, message::PublishMessage, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cancels::Cancels;
use crate::{Bus, Delivery, Error, Job, JobEvent, Lease, Result, WatchEvent};

/// How long one pull request waits on the server for a message.
const PULL_EXPIRY: Duration = Duration::from_secs(2);
/// Pause before trying again while the server cannot be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Cancellations are kept this long (a job older than this is long settled).
const CANCEL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Reports and watch events are kept this long.
const EVENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` (several comma-separated for a cluster).
    pub url: String,
    /// Names the streams, consumers and subjects, so several installations (or tests) can
    /// share one NATS server: letters, digits, `-` and `_`.
    pub namespace: String,
    /// A job whose worker sent no sign of life for this long is delivered to another.
    pub ack_wait: Duration,
    /// JetStream's delivery limit per job: the backstop against a job that kills every
    /// worker that takes it. Its last delivery is marked `exhausted`, so that worker
    /// records the job as failed instead of running it. (How often a dead worker's
    /// attempt is started again is the workers' own, lower, limit.)
    pub max_deliver: i64,
    /// How long the servers remember a message id to drop a duplicate publish.
    pub duplicate_window: Duration,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            namespace: "ctflow".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            duplicate_window: Duration::from_secs(24 * 3600),
        }
    }

    fn validate(&self) -> Result<()> {
        let ns = &self.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Config(format!(
                "the NATS namespace '{ns}' may only hold letters, digits, '-' and '_'"
            )));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(Error::Config("ack_wait must be at least 1s".into()));
        }
        if self.max_deliver < 2 {
            return Err(Error::Config("max_deliver must be at least 2".into()));
        }
        Ok(())
    }
}

fn nats_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Nats(format!("{context}: {error}"))
}

struct Subjects {
    jobs: String,
    reports: String,
    watch: String,
    wake: String,
}

impl Subjects {
    fn new(ns: &str) -> Subjects {
        Subjects {
            jobs: format!("{ns}.jobs"),
            reports: format!("{ns}.reports"),
            watch: format!("{ns}.watch"),
            wake: format!("{ns}.wake"),
        }
    }
}

/// A pull consumer with at most one pull request of this process outstanding.
///
/// A pull request abandoned while the connection lives may still be handed a message,
/// which then waits out `ack_wait` before anyone else gets it. So a caller that stops
/// waiting leaves the request here for the next caller instead of dropping it.
struct Puller {
    consumer: consumer::PullConsumer,
    pending: tokio::sync::Mutex<Option<consumer::pull::Batch>>,
}

impl Puller {
    fn new(consumer: consumer::PullConsumer) -> Puller {
        Puller {
            consumer,
            pending: tokio::sync::Mutex::new(None),
        }
    }
}

pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: NatsConfig,
    subjects: Subjects,
    jobs: Puller,
    reports: Puller,
    events_stream: String,
    cancels_kv: kv::Store,
    cancels: Arc<Cancels>,
    wake: Arc<Notify>,
    closed: CancellationToken,
}

/// One JetStream delivery.
struct NatsLease {
    message: jetstream::Message,
}

impl Lease for NatsLease {
    fn keep_alive(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.message
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| nats_error("in-progress ack", e))
        })
    }

    fn done(&self) -> BoxFuture<'_, Result<()>> {
        // The server confirms the ack, so a job is not delivered again after its report.
        Box::pin(async move {
            self.message
                .double_ack()
                .await
                .map_err(|e| nats_error("ack", e))
        })
    }

    fn hand_back(&self, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let delay = (!delay.is_zero()).then_some(delay);
            self.message
                .ack_with(AckKind::Nak(delay))
                .await
                .map_err(|e| nats_error("nak", e))
        })
    }
}

impl NatsBus {
    /// Connects (waiting for the server if it is not up yet) and creates the streams,
    /// consumers and bucket this configuration needs, or finds them.
    pub async fn connect(config: NatsConfig) -> Result<NatsBus> {
        config.validate()?;
        let client = async_nats::ConnectOptions::new()
            .name("ctflow")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts.min(10) as u64)
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| nats_error(&format!("cannot connect to {}", config.url), e))?;
        let js = jetstream::new(client.clone());
        let ns = config.namespace.clone();
        let subjects = Subjects::new(&ns);

        // NB: created or updated, so changed settings (a new --job-lease) take effect on
        // streams and durable consumers that already exist.
        js.create_or_update_stream(stream::Config {
            name: format!("{ns}_jobs"),
            subjects: vec![subjects.jobs.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("cannot create the jobs stream", e))?;
        let jobs = js
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some("workers".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliver,
                    ..Default::default()
                },
                format!("{ns}_jobs"),
            )
            .await
            .map_err(|e| nats_error("cannot create the workers' consumer", e))?;

        let events_stream = format!("{ns}_events");
        js.create_or_update_stream(stream::Config {
            name: events_stream.clone(),
            subjects: vec![
                format!("{}.>", subjects.reports),
                format!("{}.>", subjects.watch),
            ],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: EVENT_TTL,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("cannot create the events stream", e))?;
        let reports = js
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some("controller".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    filter_subject: format!("{}.>", subjects.reports),
                    ..Default::default()
                },
                events_stream.clone(),
            )
            .await
            .map_err(|e| nats_error("cannot create the controller's consumer", e))?;

        let bucket = format!("{ns}-cancels");
        let cancels_kv = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    max_age: CANCEL_TTL,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| nats_error("cannot create the cancellations bucket", e))?,
        };

        let bus = NatsBus {
            client,
            js,
            config,
            subjects,
            jobs: Puller::new(jobs),
            reports: Puller::new(reports),
            events_stream,
            cancels_kv,
            cancels: Arc::new(Cancels::default()),
            wake: Arc::new(Notify::new()),
            closed: CancellationToken::new(),
        };
        bus.watch_cancellations();
        bus.listen_for_wakeups().await?;
        Ok(bus)
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// Follows the cancellations bucket (its current keys first) for as long as the bus is
    /// open, watching again after a lost connection.
    fn watch_cancellations(&self) {
        let (kv, cancels, closed) = (
            self.cancels_kv.clone(),
            self.cancels.clone(),
            self.closed.clone(),
        );
        tokio::spawn(async move {
            while !closed.is_cancelled() {
                let mut watch = match kv.watch_with_history(">").await {
                    Ok(watch) => watch,
                    Err(error) => {
                        tracing::debug!(%error, "cannot watch cancellations yet");
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                            _ = closed.cancelled() => return,
                        }
                    }
                };
                loop {
                    let entry = tokio::select! {
                        entry = watch.next() => entry,
                        _ = closed.cancelled() => return,
                    };
                    match entry {
                        Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                            cancels.cancel(&entry.key);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => {
                            tracing::debug!(%error, "the cancellations watch broke");
                            break;
                        }
                        None => break,
                    }
                }
            }
        });
    }

    async fn listen_for_wakeups(&self) -> Result<()> {
        let mut subscription = self
            .client
            .subscribe(self.subjects.wake.clone())
            .await
            .map_err(|e| nats_error("cannot subscribe to wake-ups", e))?;
        let (wake, closed) = (self.wake.clone(), self.closed.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = subscription.next() => {
                        if message.is_none() { return; }
                        wake.notify_one();
                    }
                    _ = closed.cancelled() => return,
                }
            }
        });
        Ok(())
    }

    async fn publish_json(
        &self,
        subject: String,
        payload: Vec<u8>,
        message_id: Option<String>,
    ) -> Result<()> {
        let mut message = PublishMessage::build().payload(Bytes::from(payload));
        if let Some(id) = message_id {
            message = message.message_id(id);
        }
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| nats_error("publish", e))?;
        // The server stored it (or had it already, for a duplicate id) once this answers.
        ack.await.map_err(|e| nats_error("publish not stored", e))?;
        Ok(())
    }

    /// Takes the next message from a pull consumer, retrying while the server is away.
    async fn pull(&self, puller: &Puller) -> Option<jetstream::Message> {
        let mut pending = tokio::select! {
            pending = puller.pending.lock() => pending,
            _ = self.closed.cancelled() => return None,
        };
        loop {
            if self.closed.is_cancelled() {
                return None;
            }
            let Some(batch) = pending.as_mut() else {
                let request = puller
                    .consumer
                    .batch()
                    .max_messages(1)
                    .expires(PULL_EXPIRY)
                    .messages();
                let requested = tokio::select! {
                    requested = request => requested,
                    _ = self.closed.cancelled() => return None,
                };
                match requested {
                    Ok(batch) => *pending = Some(batch),
                    Err(error) => {
                        tracing::debug!(%error, "cannot pull yet");
                        self.pause().await;
                    }
                }
                continue;
            };
            let next = tokio::select! {
                next = batch.next() => next,
                _ = self.closed.cancelled() => return None,
            };
            match next {
                Some(Ok(message)) => return Some(message),
                Some(Err(error)) => {
                    tracing::debug!(%error, "pull failed");
                    *pending = None;
                    self.pause().await;
                }
                // The request expired (or was filled): ask again.
                None => *pending = None,
            }
        }
    }

    async fn pause(&self) {
        tokio::select! {
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
            _ = self.closed.cancelled() => {}
        }
    }

    async fn next<T: serde::de::DeserializeOwned>(&self, puller: &Puller) -> Option<Delivery<T>> {
        loop {
            let message = self.pull(puller).await?;
            let delivered = message
                .info()
                .map(|i| i.delivered.max(1) as u64)
                .unwrap_or(1);
            match serde_json::from_slice::<T>(&message.payload) {
                Ok(item) => {
                    return Some(Delivery {
                        item,
                        delivered,
                        exhausted: delivered >= self.config.max_deliver.max(1) as u64,
                        lease: Box::new(NatsLease { message }),
                    });
                }
                Err(error) => {
                    // Not something this version can read: keep it out of the way, loudly.
                    tracing::error!(subject = %message.subject, %error, "unreadable message on the bus; terminated");
                    if let Err(error) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(%error, "cannot terminate an unreadable message");
                    }
                }
            }
        }
    }
}

fn report_kind(event: &JobEvent) -> (&'static str, String) {
    match event {
        JobEvent::Started {
            pipeline_run,
            attempt,
            run_id,
        } => (
            "started",
            format!("{pipeline_run}/{attempt}/started/{run_id}"),
        ),
        JobEvent::Process {
            pipeline_run,
            attempt,
            pid,
        } => ("process", format!("{pipeline_run}/{attempt}/process/{pid}")),
        JobEvent::Finished {
            pipeline_run,
            attempt,
            ..
        } => ("finished", format!("{pipeline_run}/{attempt}/finished")),
    }
}

impl Bus for NatsBus {
    fn enqueue(&self, job: Job) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let id = format!("{}/{}", job.pipeline_run, job.attempt);
            let payload = serde_json::to_vec(&job).map_err(|e| nats_error("encode job", e))?;
            self.publish_json(self.subjects.jobs.clone(), payload, Some(id))
                .await
        })
    }

    fn next_job(&self) -> BoxFuture<'_, Option<Delivery<Job>>> {
        Box::pin(self.next(&self.jobs))
    }

    fn keep_alive_interval(&self) -> Option<Duration> {
        Some(self.config.ack_wait / 3)
    }

    fn report(&self, event: JobEvent) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let (kind, id) = report_kind(&event);
            let payload = serde_json::to_vec(&event).map_err(|e| nats_error("encode report", e))?;
            let subject = format!("{}.{kind}", self.subjects.reports);
            // A report must not be lost to a server restart: try until it is stored.
            let mut tries = 0u32;
            loop {
                match self
                    .publish_json(subject.clone(), payload.clone(), Some(id.clone()))
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(error) if tries < 40 && !self.closed.is_cancelled() => {
                        tries += 1;
                        tracing::debug!(%error, tries, "report not stored yet; retrying");
                        self.pause().await;
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }

    fn next_event(&self) -> BoxFuture<'_, Option<Delivery<JobEvent>>> {
        Box::pin(self.next(&self.reports))
    }

    fn cancel(&self, pipeline_run: &str) -> BoxFuture<'_, Result<()>> {
        self.cancels.cancel(pipeline_run);
        let key = pipeline_run.to_string();
        Box::pin(async move {
            self.cancels_kv
                .put(&key, Bytes::from_static(b"canceled"))
                .await
                .map_err(|e| nats_error("record a cancellation", e))?;
            Ok(())
        })
    }

    fn cancellation(&self, pipeline_run: &str) -> CancellationToken {
        self.cancels.token(pipeline_run)
    }

    fn forget(&self, pipeline_run: &str) {
        self.cancels.forget(pipeline_run);
    }

    fn wake_controller(&self) {
        self.wake.notify_one();
        let (client, subject) = (self.client.clone(), self.subjects.wake.clone());
        tokio::spawn(async move {
            if let Err(error) = client.publish(subject, Bytes::new()).await {
                tracing::debug!(%error, "cannot send a wake-up; the controller polls");
            }
        });
    }

    fn controller_woken(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wake.notified())
    }

    fn publish(&self, event: WatchEvent) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.closed.is_cancelled() {
                return Err(Error::Closed);
            }
            let kind = match &event {
                WatchEvent::DataArrived { .. } => "data_arrived",
                WatchEvent::DriftDetected { .. } => "drift_detected",
            };
            let payload = serde_json::to_vec(&event).map_err(|e| nats_error("encode event", e))?;
            self.publish_json(
                format!("{}.{kind}", self.subjects.watch),
                payload,
                Some(event.dedupe_key()),
            )
            .await?;
            self.wake_controller();
            Ok(())
        })
    }

    fn subscribe(&self) -> BoxStream<'static, WatchEvent> {
        let js = self.js.clone();
        let stream_name = self.events_stream.clone();
        let filter = format!("{}.>", self.subjects.watch);
        let closed = self.closed.clone();
        // NB: the consumer is made when the stream is first polled; starting from the
        // time of this call keeps the events published in between.
        let since = async_nats::datetime::now();
        let start = async move {
            loop {
                let created = async {
                    let stream = js
                        .get_stream(&stream_name)
                        .await
                        .map_err(|e| e.to_string())?;
                    let consumer = stream
                        .create_consumer(consumer::pull::OrderedConfig {
                            filter_subject: filter.clone(),
                            deliver_policy: consumer::DeliverPolicy::ByStartTime {
                                start_time: since,
                            },
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    consumer.messages().await.map_err(|e| e.to_string())
                };
                match created.await {
                    Ok(messages) => return Some((messages, closed)),
                    Err(error) => {
                        tracing::debug!(%error, "cannot subscribe to watch events yet");
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_PAUSE) => {}
                            _ = closed.cancelled() => return None,
                        }
                    }
                }
            }
        };
        let events = futures::stream::once(start)
            .filter_map(|started| async move { started })
            .flat_map(|(messages, closed)| {
                messages
                    .take_until(async move { closed.cancelled().await })
                    .filter_map(|message| async move {
                        match message {
                            Ok(message) => serde_json::from_slice(&message.payload).ok(),
                            Err(error) => {
                                tracing::debug!(%error, "a watch-event subscription skipped");
                                None
                            }
                        }
                    })
            });
        Box::pin(events)
    }

    fn connected(&self) -> bool {
        !self.closed.is_cancelled()
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn close(&self) {
        self.closed.cancel();
    }

    fn drain(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // NB: `pull` lets go of the request once the bus is closed.
            let Some(mut batch) = self.jobs.pending.lock().await.take() else {
                return;
            };
            let expired = tokio::time::sleep(PULL_EXPIRY + Duration::from_millis(500));
            tokio::pin!(expired);
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    _ = &mut expired => return,
                };
                match next {
                    Some(Ok(message)) => {
                        if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                            tracing::warn!(%error, "cannot hand back a job that arrived at shutdown");
                        }
                    }
                    Some(Err(_)) | None => return,
                }
            }
        })
    }
}
