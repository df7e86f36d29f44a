//! Cron triggers. Each schedule keeps a cursor (the newest tick considered) in the store,
//! moved in the same transaction that records the ticks, so a tick is recorded once
//! whatever happens to the process; ticks missed while ctflow was down follow the
//! trigger's catch-up policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctflow_core::now_ms;
use ctflow_core::pipeline::{ScheduleTrigger, Trigger};
use ctflow_core::schedule::Schedule;
use ctflow_core::trigger::TriggerEvent;
use tokio_util::sync::CancellationToken;

use crate::{Result, Shared};

/// The longest the loop sleeps, so new pipelines are picked up promptly.
const MAX_SLEEP: Duration = Duration::from_secs(1);

struct Entry {
    pipeline: String,
    index: usize,
    key: String,
    schedule: Schedule,
    trigger: ScheduleTrigger,
    cursor: i64,
    next_due: Option<i64>,
}

/// The cursor key names the pattern and zone, so editing either starts afresh.
fn cursor_key(index: usize, trigger: &ScheduleTrigger) -> String {
    format!("schedule/{index}/{}@{}", trigger.cron, trigger.timezone)
}

async fn rebuild(shared: &Shared, entries: &mut HashMap<String, Entry>) -> Result<()> {
    let pipelines = shared.store.list_pipelines().await?;
    let cursors: HashMap<(String, String), i64> = shared
        .store
        .schedule_cursors()
        .await?
        .into_iter()
        .map(|(p, k, c)| ((p, k), c))
        .collect();
    let mut fresh = HashMap::new();
    for record in pipelines {
        let spec = &record.document.spec;
        if spec.suspend {
            continue;
        }
        for (index, trigger) in spec.triggers.iter().enumerate() {
            let Trigger::Schedule(trigger) = trigger else {
                continue;
            };
            let key = cursor_key(index, trigger);
            let id = format!("{}\n{key}", record.name);
            if let Some(entry) = entries.remove(&id) {
                fresh.insert(id, entry);
                continue;
            }
            let schedule = match Schedule::new(&trigger.cron, &trigger.timezone) {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(pipeline = record.name, error, "schedule skipped");
                    continue;
                }
            };
            let cursor = match cursors.get(&(record.name.clone(), key.clone())) {
                Some(c) => *c,
                None => {
                    // A new schedule starts now: no catch-up for ticks before it existed.
                    let now = now_ms();
                    shared
                        .store
                        .record_schedule_ticks(&record.name, &key, &[], now)
                        .await?;
                    now
                }
            };
            let next_due = schedule.next_after(cursor);
            fresh.insert(
                id,
                Entry {
                    pipeline: record.name.clone(),
                    index,
                    key,
                    schedule,
                    trigger: trigger.clone(),
                    cursor,
                    next_due,
                },
            );
        }
    }
    *entries = fresh;
    Ok(())
}

async fn fire_due(shared: &Shared, entry: &mut Entry, now: i64) -> Result<usize> {
    let plan = entry.schedule.plan(
        entry.cursor,
        now,
        entry.trigger.catch_up,
        entry.trigger.max_runs,
        entry.trigger.starting_deadline.map(|d| d.0),
    );
    if plan.cursor == entry.cursor {
        entry.next_due = entry.schedule.next_after(entry.cursor);
        return Ok(0);
    }
    if plan.missed > 0 {
        tracing::warn!(pipeline = entry.pipeline, missed = plan.missed, policy = ?entry.trigger.catch_up,
            "schedule ticks were missed and will not run");
    }
    let events: Vec<TriggerEvent> = plan
        .fire
        .iter()
        .map(|tick| {
            let mut event = TriggerEvent::new(
                &entry.pipeline,
                "schedule",
                format!("schedule:{}:{tick}", entry.index),
            );
            event.logical_time = Some(*tick);
            event
        })
        .collect();
    let created = shared
        .store
        .record_schedule_ticks(&entry.pipeline, &entry.key, &events, plan.cursor)
        .await?;
    entry.cursor = plan.cursor;
    entry.next_due = entry.schedule.next_after(plan.cursor);
    Ok(created.len())
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    let mut entries = HashMap::new();
    let mut last_rebuild: Option<Instant> = None;
    loop {
        if last_rebuild.is_none_or(|t| t.elapsed() >= shared.config.reload_interval) {
            if let Err(error) = rebuild(&shared, &mut entries).await {
                tracing::warn!(%error, "cannot read the schedules");
            }
            last_rebuild = Some(Instant::now());
        }
        let now = now_ms();
        let mut recorded = 0;
        for entry in entries.values_mut() {
            if entry.next_due.is_some_and(|due| due <= now) {
                match fire_due(&shared, entry, now).await {
                    Ok(n) => recorded += n,
                    Err(error) => {
                        tracing::warn!(%error, pipeline = entry.pipeline, "cannot record schedule ticks");
                    }
                }
            }
        }
        if recorded > 0 {
            shared.reconcile.notify_one();
        }
        let next = entries.values().filter_map(|e| e.next_due).min();
        let sleep = next
            .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(5) as u64))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        if !crate::pause(sleep, &shutdown).await {
            return Ok(());
        }
    }
}
