//! The shadow part of the CD gate, on the serving side: while a pipeline run of the served
//! model is `Shadowing`, its challenger is loaded beside the champion and gets a copy of
//! every request the champion answered. The champion alone answers; a copy goes through a
//! bounded queue that never waits (a full queue drops the copy and counts it), so the
//! shadow can neither slow nor fail a request. The two answers are compared row by row
//! (`ctflow_core::shadow::compare_predictions`) and both models are timed on the same
//! requests; the running totals go to the tracking server every second, where the
//! controller judges them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use ctflow_client::TrackingClient;
use ctflow_core::monitoring::percentile;
use ctflow_core::pipeline_run::Phase;
use ctflow_core::scoring;
use ctflow_core::shadow::{ShadowPrediction, ShadowTally, compare_predictions, prediction_rows};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::supervisor::{ServeError, ServeOptions, load_generation};
use crate::{Generation, Prediction, Priority, ServedModel, ServingMetrics};

/// Copies waiting for the challenger; more are dropped.
const QUEUE: usize = 1024;
/// Latencies kept per model for the percentiles (the latest ones).
const LATENCIES: usize = 20_000;
/// How often the running totals are reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Mirrored rows kept for live metrics per shadow (the rest are compared, not kept).
const MAX_KEPT_ROWS: u64 = 100_000;
/// Kept rows sent with one report.
const ROWS_PER_REPORT: usize = 10_000;

/// A request the champion answered, copied for the challenger.
struct Mirrored {
    request_id: String,
    body: Bytes,
    content_type: String,
    champion: Value,
    champion_ms: f64,
}

/// The running totals of one shadow.
#[derive(Default)]
struct Counts {
    requests: u64,
    rows: u64,
    agreed_rows: u64,
    errors: u64,
    dropped: u64,
    champion_ms: VecDeque<f64>,
    challenger_ms: VecDeque<f64>,
    /// Bumped on every change, so an unchanged tally is not sent again.
    changes: u64,
    /// Rows kept for live metrics and not reported yet.
    unsent: Vec<ShadowPrediction>,
    /// Rows kept so far.
    kept: u64,
}

fn keep_latest(values: &mut VecDeque<f64>, value: f64) {
    if values.len() == LATENCIES {
        values.pop_front();
    }
    values.push_back(value);
}

impl Counts {
    fn tally(&self, champion_version: Option<String>) -> ShadowTally {
        let champion: Vec<f64> = self.champion_ms.iter().copied().collect();
        let challenger: Vec<f64> = self.challenger_ms.iter().copied().collect();
        ShadowTally {
            requests: self.requests,
            rows: self.rows,
            agreed_rows: self.agreed_rows,
            errors: self.errors,
            dropped: self.dropped,
            champion_p50_ms: percentile(&champion, 50.0),
            champion_p99_ms: percentile(&champion, 99.0),
            challenger_p50_ms: percentile(&challenger, 50.0),
            challenger_p99_ms: percentile(&challenger, 99.0),
            champion_version,
            load_error: None,
            updated: 0,
        }
    }
}

/// The challenger of one shadowing pipeline run, and the queue of copies it answers.
pub struct Shadow {
    /// The pipeline run that shadows.
    run: String,
    queue: mpsc::Sender<Mirrored>,
    counts: Arc<Mutex<Counts>>,
    metrics: Arc<ServingMetrics>,
    worker: tokio::task::JoinHandle<()>,
}

impl Drop for Shadow {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl Shadow {
    /// Offers a copy of an answered request; never waits. A full queue drops it.
    pub(crate) fn offer(
        &self,
        request_id: &str,
        body: Bytes,
        content_type: &str,
        champion: &Value,
        champion_took: Duration,
    ) {
        let copy = Mirrored {
            request_id: request_id.to_string(),
            body,
            content_type: content_type.to_string(),
            champion: champion.clone(),
            champion_ms: champion_took.as_secs_f64() * 1000.0,
        };
        if self.queue.try_send(copy).is_err() {
            self.metrics.shadow_dropped();
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            counts.dropped += 1;
            counts.changes += 1;
        }
    }

    fn start(
        run: String,
        keep_rows: bool,
        generation: Generation,
        concurrency: usize,
        metrics: Arc<ServingMetrics>,
    ) -> Shadow {
        let (queue, copies) = mpsc::channel(QUEUE);
        let counts = Arc::new(Mutex::new(Counts::default()));
        let worker = tokio::spawn(answer_copies(
            Arc::new(generation),
            copies,
            Tallies {
                counts: counts.clone(),
                metrics: metrics.clone(),
                keep_rows,
            },
            concurrency.max(1),
        ));
        Shadow {
            run,
            queue,
            counts,
            metrics,
            worker,
        }
    }
}

/// Where the shadow's outcomes are counted: its totals and the server's `/metrics`.
#[derive(Clone)]
struct Tallies {
    counts: Arc<Mutex<Counts>>,
    metrics: Arc<ServingMetrics>,
    keep_rows: bool,
}

/// The challenger answers the copies, at most `concurrency` at a time.
async fn answer_copies(
    generation: Arc<Generation>,
    mut copies: mpsc::Receiver<Mirrored>,
    tallies: Tallies,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    while let Some(copy) = copies.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (generation, tallies) = (generation.clone(), tallies.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let answer = challenger_answer(&generation, &copy).await;
            let took_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut counts = tallies.counts.lock().unwrap_or_else(|e| e.into_inner());
            counts.changes += 1;
            let Some(predictions) = answer else {
                tallies.metrics.shadow_failed();
                counts.errors += 1;
                return;
            };
            let (rows, agreed) = compare_predictions(&copy.champion, &predictions);
            tallies.metrics.shadow_compared(rows, agreed);
            counts.requests += 1;
            counts.rows += rows;
            counts.agreed_rows += agreed;
            keep_latest(&mut counts.champion_ms, copy.champion_ms);
            keep_latest(&mut counts.challenger_ms, took_ms);
            if tallies.keep_rows && counts.kept < MAX_KEPT_ROWS {
                let kept = prediction_rows(&copy.request_id, &copy.champion, &predictions);
                counts.kept += kept.len() as u64;
                counts.unsent.extend(kept);
            }
        });
    }
}

/// The challenger's predictions for a copy, read and checked against its own signature as
/// a request to it would be; `None` when it refused the input, raised or did not answer.
async fn challenger_answer(generation: &Generation, copy: &Mirrored) -> Option<Value> {
    let request = if copy.content_type == "text/csv" {
        scoring::parse_csv(&copy.body)
    } else {
        scoring::parse_json(&copy.body)
    }
    .ok()?;
    let payload = scoring::enforce(request.data, &generation.info.signature).ok()?;
    let key = request.params.is_none().then(|| payload.batch_key());
    match generation
        .pool
        .predict(payload.to_json(request.params.as_ref()), key)
        .await
    {
        Ok(Prediction::Predictions(predictions)) => Some(predictions),
        Ok(Prediction::Failed(_)) | Err(_) => None,
    }
}

/// The name this replica reports under: the host (a pod's name) and the process.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "serving".into());
    format!("{host}:{}", std::process::id())
}

/// A shadowing run of the served model, when there is one.
struct Wanted {
    run: String,
    version: i64,
    keep_rows: bool,
}

/// The newest shadowing run that challenges the champion this server follows.
async fn shadowing_run(
    client: &TrackingClient,
    model: &str,
    alias: &str,
) -> Result<Option<Wanted>, ctflow_client::ClientError> {
    let runs = client
        .pipeline_runs(None, Some(Phase::Shadowing.as_str()), 100)
        .await?;
    Ok(runs
        .into_iter()
        .filter(|run| {
            run.spec.model.as_ref().is_some_and(|m| m.name == model)
                && run.spec.promotion.champion_alias == alias
        })
        .find_map(|run| {
            Some(Wanted {
                version: run.model_version?,
                keep_rows: run
                    .spec
                    .gates
                    .cd
                    .shadow
                    .as_ref()
                    .is_some_and(|g| !g.metrics.is_empty()),
                run: run.id,
            })
        }))
}

/// Keeps the served model's shadow in step with the pipeline runs: a run of this model
/// that starts shadowing gets its challenger loaded and mirrored to; the totals are
/// reported every second; when the run stops shadowing, the challenger is dropped.
pub(crate) async fn keep_shadowing(
    client: TrackingClient,
    model: String,
    alias: String,
    options: ServeOptions,
    served: Arc<ServedModel>,
) {
    // NB: the challenger's workers count their batches apart from the champion's.
    let options = ServeOptions {
        metrics: Arc::new(ServingMetrics::new()),
        log: None,
        priority: Priority::Background,
        ..options
    };
    let replica = replica_name();
    // The run whose challenger would not load: not tried again.
    let mut refused: Option<String> = None;
    let mut reported = u64::MAX;
    let mut lookup = tokio::time::interval(options.follow_interval);
    let mut report = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            _ = lookup.tick() => {}
            _ = report.tick() => {
                if let Some(shadow) = served.shadow() {
                    reported = send_report(&client, &shadow, &served, &replica, reported).await;
                }
                continue;
            }
        }
        let wanted = match shadowing_run(&client, &model, &alias).await {
            Ok(wanted) => wanted,
            Err(error) => {
                tracing::debug!(%error, model, "cannot look up shadowing pipeline runs");
                continue;
            }
        };
        let current = served.shadow().map(|s| s.run.clone());
        match wanted {
            None => {
                if current.is_some() {
                    served.set_shadow(None);
                }
            }
            Some(wanted) if Some(&wanted.run) == current.as_ref() => {}
            Some(wanted) if Some(&wanted.run) == refused.as_ref() => {}
            Some(Wanted {
                run,
                version,
                keep_rows,
            }) => {
                let uri = format!("models:/{model}/{version}");
                tracing::info!(
                    pipeline_run = run,
                    challenger = uri,
                    "loading the challenger to shadow the champion"
                );
                match load_generation(&client, &uri, Some(version.to_string()), &options).await {
                    Ok(generation) => {
                        served.set_shadow(Some(Arc::new(Shadow::start(
                            run,
                            keep_rows,
                            generation,
                            options.workers * 2,
                            served.metrics.clone(),
                        ))));
                        reported = u64::MAX;
                    }
                    Err(error) => {
                        tracing::error!(%error, pipeline_run = run, challenger = uri, "the challenger cannot load; the shadow reports it as an error");
                        report_load_error(&client, &run, &replica, &error).await;
                        refused = Some(run);
                    }
                }
            }
        }
    }
}

/// Sends a shadow's totals and the rows it kept since the last report, unless nothing
/// changed since `reported`; returns what is reported now. Rows that could not be sent
/// are kept for the next report.
async fn send_report(
    client: &TrackingClient,
    shadow: &Shadow,
    served: &ServedModel,
    replica: &str,
    reported: u64,
) -> u64 {
    let (tally, changes, rows) = {
        let mut counts = shadow.counts.lock().unwrap_or_else(|e| e.into_inner());
        let take = counts.unsent.len().min(ROWS_PER_REPORT);
        let rows: Vec<ShadowPrediction> = counts.unsent.drain(..take).collect();
        (counts.tally(served.serving_version()), counts.changes, rows)
    };
    if changes == reported && rows.is_empty() {
        return reported;
    }
    match client
        .record_shadow(&shadow.run, replica, &tally, &rows)
        .await
    {
        Ok(true) => changes,
        Ok(false) => {
            tracing::info!(
                pipeline_run = shadow.run,
                "the shadow ended; the challenger stops"
            );
            served.set_shadow(None);
            changes
        }
        Err(error) => {
            tracing::warn!(%error, pipeline_run = shadow.run, "cannot report the shadow's numbers");
            let mut counts = shadow.counts.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::take(&mut counts.unsent);
            counts.unsent = rows;
            counts.unsent.extend(newer);
            reported
        }
    }
}

/// A challenger that cannot load fails every copy: reported as one error, with the reason.
async fn report_load_error(client: &TrackingClient, run: &str, replica: &str, error: &ServeError) {
    let tally = ShadowTally {
        errors: 1,
        load_error: Some(error.to_string()),
        ..ShadowTally::default()
    };
    if let Err(error) = client.record_shadow(run, replica, &tally, &[]).await {
        tracing::warn!(%error, pipeline_run = run, "cannot report the challenger's load error");
    }
}
