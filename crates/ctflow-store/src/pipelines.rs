//! The CT engine's state: pipelines, pipeline runs with their history, and the trigger
//! cursors. Every change of a pipeline run is a compare-and-set on its phase inside one
//! transaction, so two actors (the controller, an approval through the API) never both
//! move the same run.

use std::collections::{BTreeSet, HashSet};

use ctflow_core::data::DataSnapshot;
use ctflow_core::engine::Move;
use ctflow_core::pipeline::{PipelineDocument, PipelineRecord, TrainingPipelineSpec};
use ctflow_core::pipeline_run::{Approval, Phase, PipelineRun, PipelineRunEvent, PromotionStep};
use ctflow_core::registry::validate_alias;
use ctflow_core::shadow::{ShadowPrediction, ShadowProgress, ShadowTally};
use ctflow_core::trigger::TriggerEvent;
use ctflow_core::{ErrorCode, MlflowError, now_ms};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::Store;
use crate::db::Backend;

/// What the metrics endpoint reads from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtCounts {
    /// (pipeline, phase, pipeline runs)
    pub runs: Vec<(String, String, i64)>,
    /// (pipeline, gate, result, decisions)
    pub gates: Vec<(String, String, String, i64)>,
    /// (model, alias, version)
    pub aliases: Vec<(String, String, i64)>,
}
use crate::error::{Error, Result};
use crate::registry::{tx_set_alias, tx_transition_stage};

/// What recording a trigger event did.
#[derive(Debug, Clone)]
pub enum Recorded {
    /// A new pipeline run, in `Pending`.
    Created(Box<PipelineRun>),
    /// The dedupe key was seen before: the id of the run it started.
    Duplicate(String),
}

/// An approval as stored in its column: `approved:<user>` or `rejected:<user>`.
fn encode_approval(approval: &Approval) -> String {
    let verb = if approval.approved {
        "approved"
    } else {
        "rejected"
    };
    format!("{verb}:{}", approval.user)
}

fn decode_approval(text: &str) -> Option<Approval> {
    let (verb, user) = text.split_once(':')?;
    let approved = match verb {
        "approved" => true,
        "rejected" => false,
        _ => return None,
    };
    Some(Approval {
        approved,
        user: user.to_string(),
    })
}

const RUN_COLUMNS: &str = "id, pipeline, trigger_event, spec, base_dir, phase, attempt, not_before, run_id, \
     model_version, decision, worker_pid, approval_deadline, creation_time, start_time, end_time, last_updated_time, approval, snapshot_id, shadow";

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

fn run_from_row(row: &AnyRow) -> Result<PipelineRun> {
    let trigger: String = row.try_get(2)?;
    let spec: String = row.try_get(3)?;
    let phase: String = row.try_get(5)?;
    Ok(PipelineRun {
        id: row.try_get(0)?,
        pipeline: row.try_get(1)?,
        trigger: serde_json::from_str(&trigger).map_err(|e| corrupt("trigger event", e))?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("pipeline run spec", e))?,
        base_dir: row.try_get(4)?,
        phase: phase.parse().map_err(|e| corrupt("phase", e))?,
        attempt: row.try_get(6)?,
        not_before: row.try_get(7)?,
        run_id: row.try_get(8)?,
        model_version: row.try_get(9)?,
        decision: row.try_get(10)?,
        worker_pid: row.try_get(11)?,
        approval_deadline: row.try_get(12)?,
        creation_time: row.try_get(13)?,
        start_time: row.try_get(14)?,
        end_time: row.try_get(15)?,
        last_updated_time: row.try_get(16)?,
        approval: row
            .try_get::<Option<String>, _>(17)?
            .as_deref()
            .and_then(decode_approval),
        snapshot_id: row.try_get(18)?,
        shadow: row
            .try_get::<Option<String>, _>(19)?
            .map(|text| serde_json::from_str(&text).map_err(|e| corrupt("shadow", e)))
            .transpose()?,
    })
}

fn pipeline_from_row(row: &AnyRow) -> Result<PipelineRecord> {
    let document: String = row.try_get(1)?;
    Ok(PipelineRecord {
        name: row.try_get(0)?,
        document: serde_json::from_str(&document).map_err(|e| corrupt("pipeline document", e))?,
        source: row.try_get(2)?,
        base_dir: row.try_get(3)?,
        generation: row.try_get(4)?,
        creation_time: row.try_get(5)?,
        last_updated_time: row.try_get(6)?,
    })
}

fn pipeline_not_found(name: &str) -> Error {
    MlflowError::not_found(format!("Pipeline '{name}' does not exist.")).into()
}

fn run_not_found(id: &str) -> Error {
    MlflowError::not_found(format!("Pipeline run '{id}' does not exist.")).into()
}

fn json_text<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(format!("cannot encode: {e}")))
}

async fn insert_event(
    tx: &mut Transaction<'_, Any>,
    run: &str,
    event: &PipelineRunEvent,
) -> Result<()> {
    let detail = if event.detail.is_null() {
        None
    } else {
        Some(event.detail.to_string())
    };
    sqlx::query(
        "INSERT INTO pipeline_run_events (pipeline_run, timestamp, kind, gate, result, message, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(run)
    .bind(event.timestamp)
    .bind(event.kind.as_str())
    .bind(event.gate.clone())
    .bind(event.result.clone())
    .bind(event.message.as_str())
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_run(
    tx: &mut Transaction<'_, Any>,
    event: &TriggerEvent,
    spec: &str,
    base_dir: &str,
) -> Result<Option<PipelineRun>> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let now = now_ms();
    let trigger = json_text(event)?;
    let inserted = sqlx::query(
        "INSERT INTO pipeline_runs (id, pipeline, trigger_kind, dedupe_key, trigger_event, spec, base_dir, phase, attempt, \
         creation_time, last_updated_time) VALUES ($1, $2, $3, $4, $5, $6, $7, 'Pending', 0, $8, $8) \
         ON CONFLICT (pipeline, dedupe_key) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(event.pipeline.as_str())
    .bind(event.kind.as_str())
    .bind(event.dedupe_key.as_str())
    .bind(trigger.as_str())
    .bind(spec)
    .bind(base_dir)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    let message = match (&event.user, event.kind.as_str()) {
        (Some(user), kind) => format!("{kind} trigger by {user} recorded"),
        (None, kind) => format!("{kind} trigger recorded"),
    };
    insert_event(tx, &id, &PipelineRunEvent::new("phase", message)).await?;
    Ok(Some(PipelineRun {
        id,
        pipeline: event.pipeline.clone(),
        trigger: event.clone(),
        phase: Phase::Pending,
        attempt: 0,
        not_before: None,
        run_id: None,
        model_version: None,
        decision: None,
        worker_pid: None,
        approval_deadline: None,
        shadow: None,
        approval: None,
        creation_time: now,
        start_time: None,
        end_time: None,
        last_updated_time: now,
        spec: serde_json::from_str(spec).map_err(|e| corrupt("pipeline spec", e))?,
        base_dir: base_dir.to_string(),
        snapshot_id: None,
    }))
}

impl Store {
    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    // ----------------------------------------------------------------- pipelines

    /// Creates or replaces a pipeline. The generation grows only when the document changes.
    pub async fn put_pipeline(
        &self,
        document: &PipelineDocument,
        source: &str,
        base_dir: &str,
    ) -> Result<PipelineRecord> {
        document.validate().map_err(|errors| {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            MlflowError::invalid(format!("Invalid pipeline: {}", text.join("; ")))
        })?;
        let name = document.metadata.name.as_str();
        let text = json_text(document)?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let current: Option<(String, String, String)> =
            sqlx::query_as("SELECT document, source, base_dir FROM pipelines WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        match current {
            None => {
                sqlx::query(
                    "INSERT INTO pipelines (name, document, source, base_dir, generation, creation_time, last_updated_time) \
                     VALUES ($1, $2, $3, $4, 1, $5, $5)",
                )
                .bind(name)
                .bind(text.as_str())
                .bind(source)
                .bind(base_dir)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Some((old, old_source, old_base))
                if old != text || old_source != source || old_base != base_dir =>
            {
                sqlx::query(
                    "UPDATE pipelines SET document = $1, source = $2, base_dir = $3, generation = generation + 1, \
                     last_updated_time = $4 WHERE name = $5",
                )
                .bind(text.as_str())
                .bind(source)
                .bind(base_dir)
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
            Some(_) => {}
        }
        tx.commit().await?;
        self.get_pipeline(name).await
    }

    pub async fn get_pipeline(&self, name: &str) -> Result<PipelineRecord> {
        let row = sqlx::query(
            "SELECT name, document, source, base_dir, generation, creation_time, last_updated_time FROM pipelines WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| pipeline_not_found(name))?;
        pipeline_from_row(&row)
    }

    pub async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let rows = sqlx::query(
            "SELECT name, document, source, base_dir, generation, creation_time, last_updated_time FROM pipelines ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(pipeline_from_row).collect()
    }

    /// Deletes a pipeline and its trigger cursors; its runs stay as history.
    pub async fn delete_pipeline(&self, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM pipelines WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(pipeline_not_found(name));
        }
        for table in ["schedule_cursors", "data_trigger_files"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE pipeline = $1"
            )))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------ triggers

    async fn pipeline_for_trigger(
        &self,
        tx: &mut Transaction<'_, Any>,
        name: &str,
    ) -> Result<(String, String)> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT document, base_dir FROM pipelines WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?;
        let (document, base_dir) = row.ok_or_else(|| pipeline_not_found(name))?;
        let document: PipelineDocument =
            serde_json::from_str(&document).map_err(|e| corrupt("pipeline document", e))?;
        if document.spec.suspend {
            return Err(MlflowError::invalid(format!(
                "Pipeline '{name}' is suspended: it records no trigger events."
            ))
            .into());
        }
        Ok((json_text(&document.spec)?, base_dir))
    }

    /// Records a trigger event as a pending pipeline run, unless its dedupe key was seen.
    pub async fn record_trigger(&self, event: &TriggerEvent) -> Result<Recorded> {
        let _timer = self.timer("record_trigger");
        let mut tx = self.begin_write().await?;
        let (spec, base_dir) = self.pipeline_for_trigger(&mut tx, &event.pipeline).await?;
        let created = insert_run(&mut tx, event, &spec, &base_dir).await?;
        let outcome = match created {
            Some(run) => Recorded::Created(Box::new(run)),
            None => Recorded::Duplicate(self.run_id_for_key(&mut tx, event).await?),
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn run_id_for_key(
        &self,
        tx: &mut Transaction<'_, Any>,
        event: &TriggerEvent,
    ) -> Result<String> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM pipeline_runs WHERE pipeline = $1 AND dedupe_key = $2",
        )
        .bind(event.pipeline.as_str())
        .bind(event.dedupe_key.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        Ok(id.unwrap_or_default())
    }

    /// Records a rerun of `original`: a pending run with `spec` (the original's, its code
    /// version pinned where it can be) and the original's training snapshot, in one
    /// transaction. The controller verifies the snapshot's files before the first attempt.
    pub async fn record_rerun(
        &self,
        original: &PipelineRun,
        event: &TriggerEvent,
        spec: &TrainingPipelineSpec,
    ) -> Result<PipelineRun> {
        let _timer = self.timer("record_rerun");
        let spec = json_text(spec)?;
        let mut tx = self.begin_write().await?;
        let Some(mut run) = insert_run(&mut tx, event, &spec, &original.base_dir).await? else {
            return Err(MlflowError::invalid(format!(
                "A rerun of pipeline run '{}' was recorded with the same key already.",
                original.id
            ))
            .into());
        };
        if let Some(snapshot) = &original.snapshot_id {
            sqlx::query("UPDATE pipeline_runs SET snapshot_id = $1 WHERE id = $2")
                .bind(snapshot.as_str())
                .bind(run.id.as_str())
                .execute(&mut *tx)
                .await?;
            run.snapshot_id = Some(snapshot.clone());
        }
        tx.commit().await?;
        Ok(run)
    }

    /// Records schedule ticks and moves the trigger's cursor, in one transaction.
    pub async fn record_schedule_ticks(
        &self,
        pipeline: &str,
        trigger_key: &str,
        events: &[TriggerEvent],
        cursor: i64,
    ) -> Result<Vec<PipelineRun>> {
        let mut tx = self.begin_write().await?;
        let mut created = Vec::new();
        if !events.is_empty() {
            let (spec, base_dir) = self.pipeline_for_trigger(&mut tx, pipeline).await?;
            for event in events {
                if let Some(run) = insert_run(&mut tx, event, &spec, &base_dir).await? {
                    created.push(run);
                }
            }
        }
        sqlx::query(
            "INSERT INTO schedule_cursors (pipeline, trigger_key, cursor) VALUES ($1, $2, $3) \
             ON CONFLICT (pipeline, trigger_key) DO UPDATE SET cursor = excluded.cursor",
        )
        .bind(pipeline)
        .bind(trigger_key)
        .bind(cursor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn schedule_cursor(&self, pipeline: &str, trigger_key: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT cursor FROM schedule_cursors WHERE pipeline = $1 AND trigger_key = $2",
        )
        .bind(pipeline)
        .bind(trigger_key)
        .fetch_optional(&self.read)
        .await?)
    }

    /// Every schedule cursor, keyed by (pipeline, trigger key).
    pub async fn schedule_cursors(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(
            sqlx::query_as("SELECT pipeline, trigger_key, cursor FROM schedule_cursors")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// The files a data trigger has already seen.
    pub async fn seen_files(&self, pipeline: &str, trigger_key: &str) -> Result<HashSet<String>> {
        let paths: Vec<String> = sqlx::query_scalar(
            "SELECT path FROM data_trigger_files WHERE pipeline = $1 AND trigger_key = $2",
        )
        .bind(pipeline)
        .bind(trigger_key)
        .fetch_all(&self.read)
        .await?;
        Ok(paths.into_iter().collect())
    }

    /// Records a data trigger for the files in `event.files` that this trigger has not
    /// seen; files seen before are dropped from the event, and an event left with no
    /// file records nothing (`None`).
    pub async fn record_data_trigger(
        &self,
        event: &TriggerEvent,
        trigger_key: &str,
    ) -> Result<Option<Recorded>> {
        let mut tx = self.begin_write().await?;
        let (spec, base_dir) = self.pipeline_for_trigger(&mut tx, &event.pipeline).await?;
        let mut fresh = BTreeSet::new();
        for path in &event.files {
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM data_trigger_files WHERE pipeline = $1 AND trigger_key = $2 AND path = $3",
            )
            .bind(event.pipeline.as_str())
            .bind(trigger_key)
            .bind(path.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if seen.is_none() {
                fresh.insert(path.clone());
            }
        }
        if fresh.is_empty() {
            return Ok(None);
        }
        let mut event = event.clone();
        event.files = fresh.into_iter().collect();
        let outcome = match insert_run(&mut tx, &event, &spec, &base_dir).await? {
            Some(run) => {
                for path in &event.files {
                    sqlx::query(
                        "INSERT INTO data_trigger_files (pipeline, trigger_key, path, seen_time, pipeline_run) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(event.pipeline.as_str())
                    .bind(trigger_key)
                    .bind(path.as_str())
                    .bind(now_ms())
                    .bind(run.id.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                Recorded::Created(Box::new(run))
            }
            None => Recorded::Duplicate(self.run_id_for_key(&mut tx, &event).await?),
        };
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Records files a trigger has looked at without starting a run (a drift check that
    /// found no drift, or data it could not read): they are not looked at again.
    pub async fn mark_files_seen(
        &self,
        pipeline: &str,
        trigger_key: &str,
        files: &[String],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for path in files {
            sqlx::query(
                "INSERT INTO data_trigger_files (pipeline, trigger_key, path, seen_time) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (pipeline, trigger_key, path) DO NOTHING",
            )
            .bind(pipeline)
            .bind(trigger_key)
            .bind(path.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------- pipeline runs

    pub async fn get_pipeline_run(&self, id: &str) -> Result<PipelineRun> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| run_not_found(id))?;
        run_from_row(&row)
    }

    pub async fn pipeline_run_events(&self, id: &str) -> Result<Vec<PipelineRunEvent>> {
        let rows = sqlx::query(
            "SELECT timestamp, kind, gate, result, message, detail FROM pipeline_run_events WHERE pipeline_run = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: Option<String> = r.try_get(5)?;
                Ok(PipelineRunEvent {
                    timestamp: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    gate: r.try_get(2)?,
                    result: r.try_get(3)?,
                    message: r.try_get(4)?,
                    detail: match detail {
                        Some(text) => {
                            serde_json::from_str(&text).map_err(|e| corrupt("event detail", e))?
                        }
                        None => Value::Null,
                    },
                })
            })
            .collect()
    }

    /// Counts for the metrics endpoint, read at scrape time.
    pub async fn ct_counts(&self) -> Result<CtCounts> {
        let runs = sqlx::query(
            "SELECT pipeline, phase, COUNT(*) FROM pipeline_runs GROUP BY pipeline, phase",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<Vec<_>>>()?;
        let gates = sqlx::query(
            "SELECT r.pipeline, e.gate, e.result, COUNT(*) FROM pipeline_run_events e \
             JOIN pipeline_runs r ON r.id = e.pipeline_run \
             WHERE e.kind = 'gate' AND e.gate IS NOT NULL AND e.result IS NOT NULL \
             GROUP BY r.pipeline, e.gate, e.result",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
        let aliases = sqlx::query("SELECT name, alias, version FROM registered_model_aliases")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(CtCounts {
            runs,
            gates,
            aliases,
        })
    }

    /// Pipeline runs, newest first: of one pipeline or all, in the given phases or any.
    pub async fn list_pipeline_runs(
        &self,
        pipeline: Option<&str>,
        phases: &[Phase],
        limit: i64,
    ) -> Result<Vec<PipelineRun>> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE 1 = 1");
        if pipeline.is_some() {
            sql.push_str(" AND pipeline = $1");
        }
        if !phases.is_empty() {
            let list: Vec<String> = phases.iter().map(|p| format!("'{}'", p.as_str())).collect();
            sql.push_str(&format!(" AND phase IN ({})", list.join(", ")));
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            limit.clamp(1, 100_000)
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(pipeline) = pipeline {
            query = query.bind(pipeline);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Records a serving replica's shadow numbers on a shadowing run (its latest report
    /// replaces its earlier one) and the mirrored rows it kept for live metrics (a row
    /// already kept is kept as it was), in one transaction. `None` when the run no longer
    /// shadows (the gate decided, or it was canceled), which tells the replica to stop.
    pub async fn record_shadow(
        &self,
        id: &str,
        replica: &str,
        mut tally: ShadowTally,
        predictions: &[ShadowPrediction],
    ) -> Result<Option<PipelineRun>> {
        /// Replicas kept per run; a restarted pod reports under a new name, so the ones
        /// that went quiet longest make room.
        const MAX_REPLICAS: usize = 256;
        let _timer = self.timer("record_shadow");
        tally.updated = now_ms();
        let mut tx = self.begin_write().await?;
        let changed = self
            .tx_modify_run(
                &mut tx,
                id,
                &[Phase::Shadowing],
                |run| {
                    let started = run.last_updated_time;
                    let progress = run.shadow.get_or_insert_with(|| ShadowProgress {
                        started,
                        ..ShadowProgress::default()
                    });
                    if !progress.replicas.contains_key(replica)
                        && progress.replicas.len() >= MAX_REPLICAS
                        && let Some(quietest) = progress
                            .replicas
                            .iter()
                            .min_by_key(|(_, t)| t.updated)
                            .map(|(name, _)| name.clone())
                    {
                        progress.replicas.remove(&quietest);
                    }
                    progress.replicas.insert(replica.to_string(), tally);
                },
                None,
            )
            .await?;
        if changed.is_none() {
            return Ok(None);
        }
        for p in predictions {
            sqlx::query(
                "INSERT INTO shadow_predictions (pipeline_run, request_id, row_index, champion, challenger) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (pipeline_run, request_id, row_index) DO NOTHING",
            )
            .bind(id)
            .bind(p.request_id.as_str())
            .bind(i64::from(p.row))
            .bind(json_text(&p.champion)?)
            .bind(json_text(&p.challenger)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The mirrored rows a run's shadow kept, both models' answers each.
    pub async fn shadow_predictions(&self, id: &str) -> Result<Vec<ShadowPrediction>> {
        let rows = sqlx::query(
            "SELECT request_id, row_index, champion, challenger FROM shadow_predictions \
             WHERE pipeline_run = $1 ORDER BY request_id, row_index",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let champion: String = row.try_get(2)?;
                let challenger: String = row.try_get(3)?;
                Ok(ShadowPrediction {
                    request_id: row.try_get(0)?,
                    row: u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
                    champion: serde_json::from_str(&champion)
                        .map_err(|e| corrupt("shadow prediction", e))?,
                    challenger: serde_json::from_str(&challenger)
                        .map_err(|e| corrupt("shadow prediction", e))?,
                })
            })
            .collect()
    }

    /// Changes a pipeline run if it is in one of `from`: `change` edits the row, `event`
    /// goes to its history, both in one transaction. Returns the run as changed, or
    /// `None` when the run had moved on (another actor won).
    pub async fn modify_pipeline_run(
        &self,
        id: &str,
        from: &[Phase],
        change: impl FnOnce(&mut PipelineRun),
        event: Option<PipelineRunEvent>,
    ) -> Result<Option<PipelineRun>> {
        let _timer = self.timer("modify_pipeline_run");
        let mut tx = self.begin_write().await?;
        let changed = self.tx_modify_run(&mut tx, id, from, change, event).await?;
        if changed.is_some() {
            tx.commit().await?;
        }
        Ok(changed)
    }

    /// Moves a pipeline run as `decide` says, deciding on the run as read inside the
    /// move's transaction, so no other actor moves it in between: a move it returns is
    /// made (with its history entry), a refusal leaves the run as it was and is handed
    /// back. For moves without promotions (those go through `promote_pipeline_run`).
    pub async fn decide_pipeline_run<E>(
        &self,
        id: &str,
        decide: impl FnOnce(&PipelineRun) -> std::result::Result<Move, E>,
    ) -> Result<std::result::Result<PipelineRun, E>> {
        let _timer = self.timer("decide_pipeline_run");
        let mut tx = self.begin_write().await?;
        let run = self.tx_read_run(&mut tx, id).await?;
        let decided = match decide(&run) {
            Ok(decided) => decided,
            Err(refused) => return Ok(Err(refused)),
        };
        if !decided.promotions.is_empty() {
            return Err(MlflowError::new(
                ErrorCode::InternalError,
                "a decided move cannot promote a model version",
            )
            .into());
        }
        let moved = self
            .tx_write_run(
                &mut tx,
                run,
                &decided.from,
                |r| decided.apply(r),
                decided.event.clone(),
            )
            .await?;
        let Some(moved) = moved else {
            return Err(MlflowError::new(
                ErrorCode::InternalError,
                format!("a move decided on pipeline run '{id}' does not start from its phase"),
            )
            .into());
        };
        tx.commit().await?;
        Ok(Ok(moved))
    }

    async fn tx_modify_run(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: &str,
        from: &[Phase],
        change: impl FnOnce(&mut PipelineRun),
        event: Option<PipelineRunEvent>,
    ) -> Result<Option<PipelineRun>> {
        let run = self.tx_read_run(tx, id).await?;
        self.tx_write_run(tx, run, from, change, event).await
    }

    /// The run, locked for the rest of the transaction where the engine can lock a row.
    async fn tx_read_run(&self, tx: &mut Transaction<'_, Any>, id: &str) -> Result<PipelineRun> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = $1{}",
            self.for_update()
        )))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| run_not_found(id))?;
        run_from_row(&row)
    }

    async fn tx_write_run(
        &self,
        tx: &mut Transaction<'_, Any>,
        mut run: PipelineRun,
        from: &[Phase],
        change: impl FnOnce(&mut PipelineRun),
        event: Option<PipelineRunEvent>,
    ) -> Result<Option<PipelineRun>> {
        if !from.contains(&run.phase) {
            return Ok(None);
        }
        let id = run.id.clone();
        let id = id.as_str();
        let before = run.phase;
        change(&mut run);
        run.last_updated_time = now_ms();
        if run.phase.is_terminal() && run.end_time.is_none() {
            run.end_time = Some(run.last_updated_time);
        }
        sqlx::query(
            "UPDATE pipeline_runs SET phase = $1, attempt = $2, not_before = $3, run_id = $4, model_version = $5, \
             decision = $6, worker_pid = $7, approval_deadline = $8, start_time = $9, end_time = $10, \
             last_updated_time = $11, approval = $12, shadow = $13 WHERE id = $14",
        )
        .bind(run.phase.as_str())
        .bind(run.attempt)
        .bind(run.not_before)
        .bind(run.run_id.clone())
        .bind(run.model_version)
        .bind(run.decision.clone())
        .bind(run.worker_pid)
        .bind(run.approval_deadline)
        .bind(run.start_time)
        .bind(run.end_time)
        .bind(run.last_updated_time)
        .bind(run.approval.as_ref().map(encode_approval))
        .bind(run.shadow.as_ref().map(json_text).transpose()?)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        // The caller's event (a gate decision, say) comes before the phase change it causes.
        if let Some(event) = event {
            insert_event(tx, id, &event).await?;
        }
        if before != run.phase {
            let mut message = format!("{before} -> {}", run.phase);
            if let (true, Some(decision)) = (run.phase.is_terminal(), &run.decision) {
                message = format!("{message}: {decision}");
            }
            insert_event(tx, id, &PipelineRunEvent::new("phase", message)).await?;
        }
        Ok(Some(run))
    }

    /// Records the training data snapshot of a pending run that has none yet (the snapshot
    /// itself once, whoever recorded the same data first). Returns whether the run took it.
    pub async fn record_data_snapshot(&self, run: &str, snapshot: &DataSnapshot) -> Result<bool> {
        let _timer = self.timer("record_data_snapshot");
        let manifest = json_text(snapshot)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO data_snapshots (id, pipeline, manifest, creation_time) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(snapshot.id.as_str())
        .bind(snapshot.pipeline.as_str())
        .bind(manifest.as_str())
        .bind(snapshot.created)
        .execute(&mut *tx)
        .await?;
        let taken = sqlx::query(
            "UPDATE pipeline_runs SET snapshot_id = $1, last_updated_time = $2 \
             WHERE id = $3 AND snapshot_id IS NULL AND phase = 'Pending'",
        )
        .bind(snapshot.id.as_str())
        .bind(now_ms())
        .bind(run)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken > 0 {
            let message = format!(
                "training data snapshot {}: {} files, {} rows",
                &snapshot.id[..snapshot.id.len().min(12)],
                snapshot.files.len(),
                snapshot.rows
            );
            insert_event(&mut tx, run, &PipelineRunEvent::new("data", message)).await?;
        }
        tx.commit().await?;
        Ok(taken > 0)
    }

    /// A recorded training data snapshot.
    pub async fn get_data_snapshot(&self, id: &str) -> Result<DataSnapshot> {
        let row = sqlx::query("SELECT manifest FROM data_snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| {
                Error::from(MlflowError::not_found(format!(
                    "Data snapshot '{id}' does not exist."
                )))
            })?;
        let manifest: String = row.try_get(0)?;
        serde_json::from_str(&manifest).map_err(|e| corrupt("data snapshot", e))
    }

    /// Appends to a pipeline run's history.
    pub async fn add_pipeline_run_event(&self, id: &str, event: &PipelineRunEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_event(&mut tx, id, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves aliases and stages for a pipeline run and changes the run, all in one
    /// transaction: either everything happens (alias, stages, ledger, run phase, history)
    /// or nothing does. Returns `None` when the run had left `from`.
    pub async fn promote_pipeline_run(
        &self,
        id: &str,
        from: &[Phase],
        steps: &[PromotionStep],
        change: impl FnOnce(&mut PipelineRun),
        event: Option<PipelineRunEvent>,
    ) -> Result<Option<PipelineRun>> {
        let mut tx = self.begin_write().await?;
        for step in steps {
            validate_alias(&step.alias)?;
            tx_set_alias(
                &mut tx,
                &step.model,
                &step.alias,
                step.version,
                &step.user,
                Some(&step.comment),
            )
            .await?;
            if let Some(stage) = &step.stage {
                tx_transition_stage(
                    &mut tx,
                    &step.model,
                    step.version,
                    stage,
                    true,
                    &step.user,
                    Some(&step.comment),
                )
                .await?;
            }
        }
        let changed = self.tx_modify_run(&mut tx, id, from, change, event).await?;
        if changed.is_some() {
            tx.commit().await?;
        }
        Ok(changed)
    }

    /// Moves `alias` back to the version it pointed at before its current one, following
    /// the ledger (earlier rollbacks are undone steps, so rolling back twice goes two
    /// versions back). With `stages`, the restored version becomes `Production` and the
    /// one rolled back from `Archived`. Returns (from, to).
    pub async fn rollback_alias(
        &self,
        name: &str,
        alias: &str,
        stages: bool,
        user: &str,
    ) -> Result<(i64, i64)> {
        validate_alias(alias)?;
        let ledger = self.registry_ledger(name).await?;
        let mut chain: Vec<i64> = Vec::new();
        for entry in ledger.iter().filter(|e| e.alias.as_deref() == Some(alias)) {
            match entry.action.as_str() {
                "alias_set" => {
                    let to = entry.to_version.as_deref().and_then(|v| v.parse().ok());
                    let is_rollback = entry
                        .comment
                        .as_deref()
                        .is_some_and(|c| c.starts_with("rollback"));
                    if is_rollback {
                        chain.pop();
                    } else if let Some(to) = to {
                        chain.push(to);
                    }
                }
                "alias_deleted" => chain.clear(),
                _ => {}
            }
        }
        let current = self.get_model_version_by_alias(name, alias).await?;
        let current: i64 = current.version.parse().unwrap_or_default();
        let mut tx = self.begin_write().await?;
        // The newest earlier version that still exists.
        let mut target = None;
        for candidate in chain.iter().rev().skip(1) {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM model_versions WHERE name = $1 AND version = $2 AND deleted = 0",
            )
            .bind(name)
            .bind(*candidate)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() && *candidate != current {
                target = Some(*candidate);
                break;
            }
        }
        let target = target.ok_or_else(|| {
            Error::from(MlflowError::invalid(format!(
                "Registered model '{name}' has no earlier '{alias}' version to roll back to."
            )))
        })?;
        let comment = format!("rollback of {alias} from version {current}");
        tx_set_alias(&mut tx, name, alias, target, user, Some(&comment)).await?;
        if stages {
            tx_transition_stage(
                &mut tx,
                name,
                target,
                "Production",
                false,
                user,
                Some(&comment),
            )
            .await?;
            tx_transition_stage(
                &mut tx,
                name,
                current,
                "Archived",
                false,
                user,
                Some(&comment),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((current, target))
    }
}

impl Store {
    /// A run's latest metric values (NaN where the run logged NaN).
    pub async fn run_latest_metrics(
        &self,
        run_id: &str,
    ) -> Result<std::collections::HashMap<String, f64>> {
        let rows: Vec<(String, f64, i64)> =
            sqlx::query_as("SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = $1")
                .bind(run_id)
                .fetch_all(&self.read)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(k, v, nan)| (k, if nan != 0 { f64::NAN } else { v }))
            .collect())
    }

    /// The newest live version of `model` registered from `run_id`.
    pub async fn version_of_run(&self, model: &str, run_id: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(version) FROM model_versions WHERE name = $1 AND run_id = $2 AND deleted = 0",
        )
        .bind(model)
        .bind(run_id)
        .fetch_one(&self.read)
        .await?)
    }

    /// The newest live logged model named `name` that `run_id` produced.
    pub async fn logged_model_of_run(&self, run_id: &str, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT model_id FROM logged_models WHERE source_run_id = $1 AND name = $2 AND lifecycle_stage = 'active' \
             ORDER BY creation_timestamp DESC LIMIT 1",
        )
        .bind(run_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?)
    }
}
