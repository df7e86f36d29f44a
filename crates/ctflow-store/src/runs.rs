//! Runs and what is logged to them: metrics, params, tags, dataset inputs, model outputs.

use std::collections::{HashMap, HashSet};

use ctflow_core::entities::{
    Dataset, DatasetInput, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, MetricPoint, ModelInput,
    ModelOutput, Run, RunData, RunInfo, RunInputs, RunOutputs, ViewType,
};
use ctflow_core::filter::{Clause, OrderBy};
use ctflow_core::validation::{
    self, KeyKind, MAX_BATCH_METRICS, MAX_BATCH_PARAMS_TAGS, MAX_BATCH_TOTAL,
    MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, truncate_chars, validate_key,
    validate_max_length, validate_run_status,
};
use ctflow_core::{MlflowError, ids, now_ms, page_token};
use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result};
use crate::point_blocks::{self, Point, key_order};
use crate::sql::{Arg, Sql, fetch_json_rows, json_rows_sql, values_groups};
use crate::write_connection::WriteConnection;
use crate::{Backend, Store};

pub const RUN_NAME_TAG: &str = "mlflow.runName";

/// A runs/create request.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub experiment_id: i64,
    pub user_id: String,
    pub start_time: Option<i64>,
    pub run_name: Option<String>,
    pub tags: Vec<KeyValue>,
}

/// A runs/update request.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    pub status: Option<String>,
    pub end_time: Option<i64>,
    pub run_name: Option<String>,
}

/// One metric of a log-batch or log-metric request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMetric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

/// A dataset used in an experiment and the context a run gave it (`mlflow.data.context`),
/// as MLflow's UI lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatasetSummary {
    pub experiment_id: String,
    pub name: String,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// One dataset of a log-inputs request.
#[derive(Debug, Clone)]
pub struct DatasetInputRequest {
    pub dataset: Dataset,
    pub tags: Vec<KeyValue>,
}

/// A validated runs/search request.
#[derive(Debug, Clone)]
pub struct RunSearch {
    pub experiment_ids: Vec<i64>,
    pub filter: Vec<Clause>,
    pub view: ViewType,
    pub max_results: i64,
    pub order_by: Vec<OrderBy>,
    pub page_token: Option<String>,
}

/// How a stored metric value maps to the columns: NaN is a flag (SQLite cannot store it)
/// and infinities are clamped, as MLflow's SQL store does.
pub(crate) fn encode_value(value: f64) -> (f64, i64) {
    if value.is_nan() {
        (0.0, 1)
    } else if value.is_infinite() {
        (if value > 0.0 { f64::MAX } else { f64::MIN }, 0)
    } else {
        (value, 0)
    }
}

/// The bits kept beside the value: those of the stored (clamped) value, or NaN's.
fn stored_bits(value: f64) -> i64 {
    let (stored, is_nan) = encode_value(value);
    if is_nan != 0 {
        f64::NAN.to_bits() as i64
    } else {
        stored.to_bits() as i64
    }
}

pub(crate) fn decode_value(value: f64, is_nan: i64) -> f64 {
    if is_nan != 0 { f64::NAN } else { value }
}

fn run_not_found(run_id: &str) -> Error {
    MlflowError::not_found(format!("Run with id={run_id} not found")).into()
}

const RUN_COLUMNS: &str = "r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage";

pub(crate) fn run_info_from_row(row: &AnyRow) -> Result<RunInfo> {
    let run_id: String = row.try_get(0)?;
    Ok(RunInfo {
        run_uuid: run_id.clone(),
        run_name: row.try_get(1)?,
        experiment_id: row.try_get::<i64, _>(2)?.to_string(),
        user_id: row.try_get(3)?,
        status: row.try_get(4)?,
        start_time: row.try_get(5)?,
        end_time: row.try_get(6)?,
        artifact_uri: row.try_get(7)?,
        lifecycle_stage: row.try_get(8)?,
        run_id,
    })
}

/// Checks a write target inside the write transaction.
async fn require_active_run(tx: &mut impl WriteConnection, run_id: &str) -> Result<i64> {
    let (stage, experiment_id): (String, i64) = tx
        .fetch(
            "SELECT lifecycle_stage, experiment_id FROM runs WHERE run_uuid = $1",
            &[Arg::Text(run_id.to_string())],
        )
        .await?
        .pop()
        .ok_or_else(|| run_not_found(run_id))?;
    if stage != LIFECYCLE_ACTIVE {
        return Err(MlflowError::invalid(format!(
            "The run {run_id} must be in the 'active' state. Current state is {stage}."
        ))
        .into());
    }
    Ok(experiment_id)
}

fn validate_tag(tag: &KeyValue) -> Result<()> {
    validate_key(&tag.key, KeyKind::Tag)?;
    Ok(())
}

/// Rows per multi-row INSERT: one statement for a full log-batch (five integers a point,
/// well under either engine's limit on bound parameters), reused while it is cached.
const METRIC_CHUNK: usize = 1000;
/// Blocks per insert statement: a write of more series than this takes several.
const BLOCK_CHUNK: usize = 200;
/// Blocks per read of a history page (a thousand-point batch of ten keys makes blocks of
/// a hundred points): a 25,000-point page is about one read.
const BLOCKS_PER_READ: usize = 256;
/// Where a block sorts among its series' blocks: first step, last step, id.
type BlockPlace = (i64, i64, i64);

/// One point of a metric's history, its key left to the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryPoint {
    /// Its value (NaN and the infinities allowed).
    pub value: f64,
    /// When it was measured (epoch ms).
    pub timestamp: i64,
    /// The step it belongs to.
    pub step: i64,
}

impl HistoryPoint {
    /// The point as the API's `MetricPoint`, its key filled in.
    pub fn with_key(self, key: &str) -> MetricPoint {
        MetricPoint {
            key: key.to_string(),
            value: self.value,
            timestamp: self.timestamp,
            step: self.step,
        }
    }
}

/// What one request logs to one run, validated; written by the group committer.
pub(crate) struct RunWrite {
    pub(crate) run_id: String,
    pub(crate) metrics: Vec<BatchMetric>,
    pub(crate) params: Vec<KeyValue>,
    pub(crate) tags: Vec<KeyValue>,
    pub(crate) param_style: ParamStyle,
}

/// Writes `write` inside `tx`: all of it, or an error and (with the transaction or
/// savepoint rolled back by the caller) none of it.
pub(crate) async fn apply_run_write(
    tx: &mut impl WriteConnection,
    backend: Backend,
    write: &RunWrite,
) -> Result<()> {
    let run_id = write.run_id.as_str();
    require_active_run(tx, run_id).await?;
    if !write.params.is_empty() {
        insert_params(tx, backend, run_id, &write.params, write.param_style).await?;
    }
    if !write.metrics.is_empty() {
        insert_metrics(tx, backend, run_id, &write.metrics).await?;
    }
    if !write.tags.is_empty() {
        upsert_tags(tx, backend, run_id, &write.tags).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ParamStyle {
    Single,
    Batch,
}

impl Store {
    pub async fn create_run(&self, new: NewRun) -> Result<Run> {
        let _timer = self.timer("create_run");
        let experiment = self.get_experiment(new.experiment_id).await?;
        if experiment.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(MlflowError::invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is {}.",
                new.experiment_id, experiment.lifecycle_stage
            ))
            .into());
        }
        let mut tags = Vec::with_capacity(new.tags.len() + 1);
        for tag in &new.tags {
            validate_tag(tag)?;
            tags.push(KeyValue::new(
                tag.key.clone(),
                truncate_chars(&tag.value, MAX_TAG_VALUE_LENGTH),
            ));
        }
        let tag_name = tags
            .iter()
            .find(|t| t.key == RUN_NAME_TAG)
            .map(|t| t.value.clone());
        let run_name = match (new.run_name.filter(|n| !n.is_empty()), tag_name) {
            (Some(name), Some(tag)) if name != tag => {
                return Err(MlflowError::invalid(format!(
                    "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values (run_name='{name}', mlflow.runName='{tag}')."
                ))
                .into());
            }
            (Some(name), _) => name,
            (None, Some(tag)) if !tag.is_empty() => tag,
            _ => ids::new_run_name(),
        };
        tags.retain(|t| t.key != RUN_NAME_TAG);
        tags.push(KeyValue::new(RUN_NAME_TAG, run_name.clone()));
        let run_id = ids::new_run_id();
        let artifact_uri = format!(
            "{}/{run_id}/artifacts",
            experiment.artifact_location.trim_end_matches('/')
        );
        let start_time = new.start_time.unwrap_or_else(now_ms);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, artifact_uri, lifecycle_stage) \
             VALUES ($1, $2, $3, $4, 'RUNNING', $5, $6, 'active')",
        )
        .bind(run_id.as_str())
        .bind(run_name.as_str())
        .bind(new.experiment_id)
        .bind(new.user_id.as_str())
        .bind(start_time)
        .bind(artifact_uri.as_str())
        .execute(&mut *tx)
        .await?;
        upsert_tags(&mut tx, self.backend, &run_id, &tags).await?;
        tx.commit().await?;
        Ok(Run {
            info: RunInfo {
                run_uuid: run_id.clone(),
                experiment_id: new.experiment_id.to_string(),
                run_name,
                user_id: new.user_id,
                status: "RUNNING".into(),
                start_time,
                end_time: None,
                artifact_uri,
                lifecycle_stage: LIFECYCLE_ACTIVE.into(),
                run_id,
            },
            data: RunData {
                tags,
                ..RunData::default()
            },
            inputs: RunInputs::default(),
            outputs: None,
        })
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let _timer = self.timer("get_run");
        self.fetch_runs(&[run_id.to_string()])
            .await?
            .pop()
            .ok_or_else(|| run_not_found(run_id))
    }

    pub async fn get_run_info(&self, run_id: &str) -> Result<RunInfo> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_uuid = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| run_not_found(run_id))?;
        run_info_from_row(&row)
    }

    /// Loads whole runs, in the order of `run_ids`; unknown ids are skipped.
    pub(crate) async fn fetch_runs(&self, run_ids: &[String]) -> Result<Vec<Run>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(direct) = &self.direct {
            let run_ids = run_ids.to_vec();
            return direct
                .read(move |connection| crate::page_reads::read_runs(connection, &run_ids))
                .await;
        }
        let in_list = |sql: &mut Sql| sql.text_list(run_ids.iter().cloned());

        let corrupt = |what: &str| Error::Corrupt(format!("unexpected {what} row shape"));
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let int = |v: &serde_json::Value| v.as_i64();

        // NB: the page's tables are read at once, each on its own pooled connection (and
        // sqlx worker thread), instead of one after the other.
        let mut inputs_sql = Sql::in_order(self.backend);
        let list = in_list(&mut inputs_sql);
        inputs_sql.push(&format!(
            "SELECT ri.run_uuid, ri.input_uuid, d.name, d.digest, d.source_type, d.source, d.schema, d.profile \
             FROM run_inputs ri JOIN datasets d ON d.dataset_uuid = ri.dataset_uuid WHERE ri.run_uuid IN {list} ORDER BY d.name"
        ));
        let mut outputs_sql = Sql::in_order(self.backend);
        let list = in_list(&mut outputs_sql);
        let second_list = in_list(&mut outputs_sql);
        outputs_sql.push(&format!("SELECT run_uuid, model_id, step, 0 FROM run_outputs WHERE run_uuid IN {list} UNION ALL SELECT run_uuid, model_id, 0, 1 FROM run_model_inputs WHERE run_uuid IN {second_list} ORDER BY 2"));
        let (infos, latest, params, tags, input_rows, output_rows) = futures::try_join!(
            self.json_rows(
                "r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage",
                "runs r WHERE r.run_uuid IN",
                run_ids,
            ),
            self.json_rows(
                "run_uuid, key, timestamp, step, value_bits",
                "latest_metrics WHERE run_uuid IN",
                run_ids,
            ),
            self.json_rows("run_uuid, key, value", "params WHERE run_uuid IN", run_ids),
            self.json_rows("run_uuid, key, value", "tags WHERE run_uuid IN", run_ids),
            async { Ok::<_, Error>(inputs_sql.query().fetch_all(&self.read).await?) },
            async { Ok::<_, Error>(outputs_sql.query().fetch_all(&self.read).await?) },
        )?;
        let mut runs: HashMap<String, Run> = HashMap::with_capacity(infos.len());
        for row in infos {
            let [id, name, exp, user, status, start, end, uri, stage] = row.as_slice() else {
                return Err(corrupt("run"));
            };
            let run_id = text(id).ok_or_else(|| corrupt("run"))?;
            let info = RunInfo {
                run_uuid: run_id.clone(),
                run_name: text(name).unwrap_or_default(),
                experiment_id: int(exp).ok_or_else(|| corrupt("run"))?.to_string(),
                user_id: text(user).unwrap_or_default(),
                status: text(status).unwrap_or_default(),
                start_time: int(start).unwrap_or_default(),
                end_time: int(end),
                artifact_uri: text(uri).unwrap_or_default(),
                lifecycle_stage: text(stage).unwrap_or_default(),
                run_id: run_id.clone(),
            };
            runs.insert(
                run_id,
                Run {
                    info,
                    data: RunData::default(),
                    inputs: RunInputs::default(),
                    outputs: Some(RunOutputs::default()),
                },
            );
        }
        if runs.is_empty() {
            return Ok(Vec::new());
        }

        for row in latest {
            let [id, key, timestamp, step, bits] = row.as_slice() else {
                return Err(corrupt("metric"));
            };
            if let Some(run) = text(id).and_then(|id| runs.get_mut(&id)) {
                run.data.metrics.push(MetricPoint {
                    key: text(key).unwrap_or_default(),
                    value: f64::from_bits(int(bits).ok_or_else(|| corrupt("metric"))? as u64),
                    timestamp: int(timestamp).unwrap_or_default(),
                    step: int(step).unwrap_or_default(),
                });
            }
        }
        for (rows, is_params) in [(params, true), (tags, false)] {
            for row in rows {
                let [id, key, value] = row.as_slice() else {
                    return Err(corrupt("param or tag"));
                };
                if let Some(run) = text(id).and_then(|id| runs.get_mut(&id)) {
                    let kv = KeyValue::new(
                        text(key).unwrap_or_default(),
                        text(value).unwrap_or_default(),
                    );
                    if is_params {
                        run.data.params.push(kv);
                    } else {
                        run.data.tags.push(kv);
                    }
                }
            }
        }

        let mut input_ids: Vec<(String, String)> = Vec::new();
        for row in input_rows {
            let id: String = row.try_get(0)?;
            if let Some(run) = runs.get_mut(&id) {
                input_ids.push((id.clone(), row.try_get(1)?));
                run.inputs.dataset_inputs.push(DatasetInput {
                    tags: Vec::new(),
                    dataset: Dataset {
                        name: row.try_get(2)?,
                        digest: row.try_get(3)?,
                        source_type: row.try_get(4)?,
                        source: row.try_get(5)?,
                        schema: row.try_get(6)?,
                        profile: row.try_get(7)?,
                    },
                });
            }
        }
        if !input_ids.is_empty() {
            let mut sql = Sql::in_order(self.backend);
            let list = sql.text_list(input_ids.iter().map(|(_, i)| i.clone()));
            sql.push(&format!("SELECT input_uuid, key, value FROM run_input_tags WHERE input_uuid IN {list} ORDER BY key"));
            let mut tags_by_input: HashMap<String, Vec<KeyValue>> = HashMap::new();
            for row in sql.query().fetch_all(&self.read).await? {
                tags_by_input
                    .entry(row.try_get(0)?)
                    .or_default()
                    .push(KeyValue::new(
                        row.try_get::<String, _>(1)?,
                        row.try_get::<String, _>(2)?,
                    ));
            }
            let mut per_run: HashMap<&str, usize> = HashMap::new();
            for (run_id, input_id) in &input_ids {
                let index = per_run.entry(run_id.as_str()).or_insert(0);
                if let Some(run) = runs.get_mut(run_id)
                    && let Some(input) = run.inputs.dataset_inputs.get_mut(*index)
                {
                    input.tags = tags_by_input.remove(input_id).unwrap_or_default();
                }
                *index += 1;
            }
        }

        for row in output_rows {
            let id: String = row.try_get(0)?;
            if let Some(run) = runs.get_mut(&id) {
                let model_id: String = row.try_get(1)?;
                if row.try_get::<i64, _>(3)? == 0 {
                    let step = row.try_get(2)?;
                    run.outputs
                        .get_or_insert_with(RunOutputs::default)
                        .model_outputs
                        .push(ModelOutput { model_id, step });
                } else {
                    run.inputs.model_inputs.push(ModelInput { model_id });
                }
            }
        }
        for run in runs.values_mut() {
            run.data.metrics.sort_by(|a, b| a.key.cmp(&b.key));
            run.data.params.sort_by(|a, b| a.key.cmp(&b.key));
            run.data.tags.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(run_ids.iter().filter_map(|id| runs.remove(id)).collect())
    }

    /// Runs `SELECT columns FROM from_where (ids...)` as one aggregated JSON row; see
    /// [`crate::sql::json_rows_sql`].
    pub(crate) async fn json_rows(
        &self,
        columns: &str,
        from_where: &str,
        ids: &[String],
    ) -> Result<Vec<Vec<serde_json::Value>>> {
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(ids.iter().cloned());
        sql.text = json_rows_sql(self.backend, columns, &format!("{from_where} {list}"));
        fetch_json_rows(&self.read, &sql).await
    }

    pub async fn update_run(&self, run_id: &str, update: RunUpdate) -> Result<RunInfo> {
        let _timer = self.timer("update_run");
        if let Some(status) = &update.status {
            validate_run_status(status)?;
        }
        let mut tx = self.begin_write().await?;
        require_active_run(&mut tx, run_id).await?;
        if let Some(status) = &update.status {
            sqlx::query("UPDATE runs SET status = $1 WHERE run_uuid = $2")
                .bind(status.as_str())
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(end_time) = update.end_time {
            sqlx::query("UPDATE runs SET end_time = $1 WHERE run_uuid = $2")
                .bind(end_time)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(name) = update.run_name.filter(|n| !n.is_empty()) {
            upsert_tags(
                &mut tx,
                self.backend,
                run_id,
                &[KeyValue::new(RUN_NAME_TAG, name)],
            )
            .await?;
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_uuid = $1"
        )))
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        run_info_from_row(&row)
    }

    pub async fn delete_run(&self, run_id: &str) -> Result<()> {
        self.set_run_stage(run_id, LIFECYCLE_DELETED).await
    }

    pub async fn restore_run(&self, run_id: &str) -> Result<()> {
        self.set_run_stage(run_id, LIFECYCLE_ACTIVE).await
    }

    async fn set_run_stage(&self, run_id: &str, stage: &str) -> Result<()> {
        let deleted_time = (stage == LIFECYCLE_DELETED).then(now_ms);
        let done = sqlx::query(
            "UPDATE runs SET lifecycle_stage = $1, deleted_time = $2 WHERE run_uuid = $3",
        )
        .bind(stage)
        .bind(deleted_time)
        .bind(run_id)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(run_not_found(run_id));
        }
        Ok(())
    }

    pub async fn log_metric(&self, run_id: &str, metric: BatchMetric) -> Result<()> {
        let _timer = self.timer("log_metric");
        self.log_batch(run_id, vec![metric], Vec::new(), Vec::new())
            .await
    }

    pub async fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        validate_key(key, KeyKind::Param)?;
        let param = KeyValue::new(key, truncate_chars(value, MAX_PARAM_VALUE_LENGTH));
        self.run_writes
            .submit(RunWrite {
                run_id: run_id.to_string(),
                metrics: Vec::new(),
                params: vec![param],
                tags: Vec::new(),
                param_style: ParamStyle::Single,
            })
            .await
    }

    pub async fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.log_batch(
            run_id,
            Vec::new(),
            Vec::new(),
            vec![KeyValue::new(key, value)],
        )
        .await
    }

    pub async fn delete_tag(&self, run_id: &str, key: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        require_active_run(&mut tx, run_id).await?;
        let done = sqlx::query("DELETE FROM tags WHERE run_uuid = $1 AND key = $2")
            .bind(run_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No tag with name: {key} in run with id {run_id}"
            ))
            .into());
        }
        tx.commit().await?;
        Ok(())
    }

    /// log-batch: all of it commits or none of it does.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: Vec<BatchMetric>,
        params: Vec<KeyValue>,
        tags: Vec<KeyValue>,
    ) -> Result<()> {
        let _timer = self.timer("log_batch");
        if metrics.len() > MAX_BATCH_METRICS {
            return Err(MlflowError::invalid(format!(
                "A batch logging request can contain at most {MAX_BATCH_METRICS} metrics. Got {} metrics. Please split up metrics across multiple requests and try again.",
                metrics.len()
            ))
            .into());
        }
        for (what, n) in [("params", params.len()), ("tags", tags.len())] {
            if n > MAX_BATCH_PARAMS_TAGS {
                return Err(MlflowError::invalid(format!(
                    "A batch logging request can contain at most {MAX_BATCH_PARAMS_TAGS} {what}. Got {n} {what}. Please split up {what} across multiple requests and try again."
                ))
                .into());
            }
        }
        let total = metrics.len() + params.len() + tags.len();
        if total > MAX_BATCH_TOTAL {
            return Err(MlflowError::invalid(format!(
                "A batch logging request can contain at most {MAX_BATCH_TOTAL} metrics, params, and tags in total. Got {total} in total. Please split up across multiple requests and try again."
            ))
            .into());
        }
        // NB: a batch repeats a few keys many times; each is checked once.
        let mut checked: HashSet<&str> = HashSet::new();
        for m in &metrics {
            if checked.insert(m.key.as_str()) {
                validate_key(&m.key, KeyKind::Metric)?;
            }
        }
        let mut seen = HashSet::new();
        let mut duplicates = Vec::new();
        for p in &params {
            validate_key(&p.key, KeyKind::Param)?;
            if !seen.insert(p.key.as_str()) && !duplicates.contains(&p.key) {
                duplicates.push(p.key.clone());
            }
        }
        if !duplicates.is_empty() {
            return Err(MlflowError::invalid(format!(
                "Duplicate parameter keys have been submitted: {duplicates:?}. Please ensure the request contains only one param value per param key."
            ))
            .into());
        }
        for t in &tags {
            validate_tag(t)?;
        }
        let params: Vec<KeyValue> = params
            .into_iter()
            .map(|p| KeyValue::new(p.key, truncate_chars(&p.value, MAX_PARAM_VALUE_LENGTH)))
            .collect();
        let tags: Vec<KeyValue> = tags
            .into_iter()
            .map(|t| KeyValue::new(t.key, truncate_chars(&t.value, MAX_TAG_VALUE_LENGTH)))
            .collect();

        self.run_writes
            .submit(RunWrite {
                run_id: run_id.to_string(),
                metrics,
                params,
                tags,
                param_style: ParamStyle::Batch,
            })
            .await
    }

    /// The distinct (experiment, dataset, context) triples of the experiments' runs' inputs,
    /// at most 1,000 (MLflow's cap).
    pub async fn search_dataset_summaries(
        &self,
        experiment_ids: &[i64],
    ) -> Result<Vec<DatasetSummary>> {
        if experiment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::in_order(self.backend);
        let ids: Vec<String> = experiment_ids.iter().map(|id| sql.int_arg(*id)).collect();
        sql.push(&format!(
            "SELECT DISTINCT d.experiment_id, d.name, d.digest, t.value FROM datasets d \
             JOIN run_inputs i ON i.dataset_uuid = d.dataset_uuid \
             LEFT JOIN run_input_tags t ON t.input_uuid = i.input_uuid AND t.key = 'mlflow.data.context' \
             WHERE d.experiment_id IN ({}) ORDER BY d.experiment_id, d.name, d.digest, t.value LIMIT 1000",
            ids.join(", ")
        ));
        sql.query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| {
                Ok(DatasetSummary {
                    experiment_id: row.try_get::<i64, _>(0)?.to_string(),
                    name: row.try_get(1)?,
                    digest: row.try_get(2)?,
                    context: row.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn log_inputs(
        &self,
        run_id: &str,
        datasets: Vec<DatasetInputRequest>,
        model_ids: Vec<String>,
    ) -> Result<()> {
        for input in &datasets {
            let d = &input.dataset;
            validate_max_length("dataset.name", &d.name, validation::MAX_DATASET_NAME_LENGTH)?;
            validate_max_length(
                "dataset.digest",
                &d.digest,
                validation::MAX_DATASET_DIGEST_LENGTH,
            )?;
            validate_max_length(
                "dataset.source",
                &d.source,
                validation::MAX_DATASET_SOURCE_LENGTH,
            )?;
            if let Some(schema) = &d.schema {
                validate_max_length(
                    "dataset.schema",
                    schema,
                    validation::MAX_DATASET_SCHEMA_LENGTH,
                )?;
            }
            if let Some(profile) = &d.profile {
                validate_max_length(
                    "dataset.profile",
                    profile,
                    validation::MAX_DATASET_PROFILE_LENGTH,
                )?;
            }
            if d.name.is_empty() || d.digest.is_empty() {
                return Err(MlflowError::missing_param(if d.name.is_empty() {
                    "dataset.name"
                } else {
                    "dataset.digest"
                })
                .into());
            }
            for tag in &input.tags {
                if tag.key.is_empty() {
                    return Err(MlflowError::missing_param("input_tag.key").into());
                }
                validate_max_length(
                    "input_tag.key",
                    &tag.key,
                    validation::MAX_INPUT_TAG_KEY_LENGTH,
                )?;
                validate_max_length(
                    "input_tag.value",
                    &tag.value,
                    validation::MAX_INPUT_TAG_VALUE_LENGTH,
                )?;
            }
        }
        let mut tx = self.begin_write().await?;
        let experiment_id = require_active_run(&mut tx, run_id).await?;
        for input in &datasets {
            let d = &input.dataset;
            sqlx::query(
                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, source_type, source, schema, profile) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (experiment_id, name, digest) DO NOTHING",
            )
            .bind(ids::new_dataset_id())
            .bind(experiment_id)
            .bind(d.name.as_str())
            .bind(d.digest.as_str())
            .bind(d.source_type.as_str())
            .bind(d.source.as_str())
            .bind(d.schema.clone())
            .bind(d.profile.clone())
            .execute(&mut *tx)
            .await?;
            let dataset_uuid: String = sqlx::query_scalar(
                "SELECT dataset_uuid FROM datasets WHERE experiment_id = $1 AND name = $2 AND digest = $3",
            )
            .bind(experiment_id)
            .bind(d.name.as_str())
            .bind(d.digest.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT input_uuid FROM run_inputs WHERE run_uuid = $1 AND dataset_uuid = $2",
            )
            .bind(run_id)
            .bind(dataset_uuid.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let input_uuid = match existing {
                Some(id) => id,
                None => {
                    let id = ids::new_dataset_id();
                    sqlx::query("INSERT INTO run_inputs (input_uuid, run_uuid, dataset_uuid) VALUES ($1, $2, $3)")
                        .bind(id.as_str())
                        .bind(run_id)
                        .bind(dataset_uuid.as_str())
                        .execute(&mut *tx)
                        .await?;
                    id
                }
            };
            for tag in &input.tags {
                sqlx::query(
                    "INSERT INTO run_input_tags (input_uuid, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (input_uuid, key) DO UPDATE SET value = excluded.value",
                )
                .bind(input_uuid.as_str())
                .bind(tag.key.as_str())
                .bind(tag.value.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        for model_id in &model_ids {
            sqlx::query("INSERT INTO run_model_inputs (run_uuid, model_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(run_id)
                .bind(model_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn log_outputs(&self, run_id: &str, outputs: Vec<ModelOutput>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        require_active_run(&mut tx, run_id).await?;
        for output in &outputs {
            if output.model_id.is_empty() {
                return Err(MlflowError::missing_param("models.model_id").into());
            }
            sqlx::query(
                "INSERT INTO run_outputs (run_uuid, model_id, step) VALUES ($1, $2, $3) \
                 ON CONFLICT (run_uuid, model_id) DO UPDATE SET step = excluded.step",
            )
            .bind(run_id)
            .bind(output.model_id.as_str())
            .bind(output.step)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A metric's full history, oldest first; `max_results` pages it.
    pub async fn get_metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        token: Option<&str>,
    ) -> Result<(Vec<MetricPoint>, Option<String>)> {
        let (points, next) = self
            .get_metric_history_points(run_id, key, max_results, token)
            .await?;
        let points = points
            .into_iter()
            .map(|point| point.with_key(key))
            .collect();
        Ok((points, next))
    }

    /// [`Store::get_metric_history`] without the key repeated in every point, for an
    /// answer that writes the key itself (a long history's page would otherwise allocate
    /// it once a point).
    pub async fn get_metric_history_points(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        token: Option<&str>,
    ) -> Result<(Vec<HistoryPoint>, Option<String>)> {
        let _timer = self.timer("get_metric_history");
        let start = page_token::decode_start(token)?;
        self.get_run_info(run_id).await?;
        let Some((series_id, steps_ascend)) = self.series_of(run_id, key).await? else {
            return Ok((Vec::new(), None));
        };
        let limit = max_results.map(|m| m.saturating_add(1)).unwrap_or(i64::MAX);
        // A series whose steps ascend is read in key order, which is then history order,
        // without a sort; its pages seek to the key that ended the previous one (the
        // token's `after`), so a long history costs each page its own rows, not every row
        // before it again. A token without a key (MLflow's, or a series whose steps no
        // longer ascend) counts off its offset.
        let (order, steps, offset) = match start.after.as_deref() {
            Some(&[step, timestamp, value_key, is_nan]) if steps_ascend => (
                PointOrder::Key,
                Steps::AfterKey((timestamp, step, value_key, is_nan)),
                0,
            ),
            _ if steps_ascend => (PointOrder::Key, Steps::All, start.offset),
            _ => (PointOrder::History, Steps::All, start.offset),
        };
        let mut points = self
            .series_points(series_id, order, steps, limit, offset)
            .await?;
        let next = match max_results {
            Some(max) if points.len() as i64 > max => {
                points.truncate(max as usize);
                let offset = start.offset.saturating_add(max);
                Some(match (order, points.last()) {
                    (PointOrder::Key, Some(&(timestamp, step, value_key, is_nan))) => {
                        page_token::encode_after(offset, &[step, timestamp, value_key, is_nan])
                    }
                    _ => page_token::encode(offset),
                })
            }
            _ => None,
        };
        let points = points
            .into_iter()
            .map(|(timestamp, step, value_key, is_nan)| HistoryPoint {
                value: value_from_key(value_key, is_nan),
                timestamp,
                step,
            })
            .collect();
        Ok((points, next))
    }

    /// A run's metric series: its id and whether its steps ascend.
    async fn series_of(&self, run_id: &str, key: &str) -> Result<Option<(i64, bool)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT series_id, steps_ascend FROM latest_metrics WHERE run_uuid = $1 AND key = $2",
        )
        .bind(run_id)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(id, ascend)| (id, ascend != 0)))
    }

    /// One series' points at `steps`, in `order`, as (timestamp, step, value key, NaN flag).
    async fn series_points(
        &self,
        series_id: i64,
        order: PointOrder,
        steps: Steps,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Point>> {
        let (first, after) = match steps {
            Steps::All => (i64::MIN, None),
            Steps::AfterKey(after) => (after.1, Some(after)),
        };
        // In key order, a page needs only its own points and those it skips.
        let enough = match order {
            PointOrder::Key if limit != i64::MAX => {
                Some(usize::try_from(limit.saturating_add(offset.max(0))).unwrap_or(usize::MAX))
            }
            _ => None,
        };
        let mut points = self
            .series_points_between(series_id, first, i64::MAX, after, enough)
            .await?;
        if let PointOrder::History = order {
            // A `Point` tuple's own order (timestamp, step, value key, NaN flag) is the
            // order MLflow returns a history in.
            points.sort_unstable();
        }
        let offset = usize::try_from(offset).unwrap_or(0).min(points.len());
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        points.drain(..offset);
        points.truncate(limit);
        Ok(points)
    }

    /// One series' points with steps in `[first, last]`, in key order without repeats: the
    /// blocks that meet the range, decoded (see `point_blocks`). With `enough`, at least
    /// the first `enough` of them: the blocks are read in step order a slice at a time,
    /// and reading stops once no unread block can hold a point before the `enough`th, so
    /// a page of a long history reads about its own blocks, not every block after it.
    async fn series_points_between(
        &self,
        series_id: i64,
        first: i64,
        last: i64,
        after: Option<Point>,
        enough: Option<usize>,
    ) -> Result<Vec<Point>> {
        let after = after.as_ref().map(key_order);
        let mut points = Vec::new();
        let mut read_to: Option<BlockPlace> = None;
        loop {
            let blocks = self
                .series_blocks(
                    series_id,
                    (first, last),
                    read_to,
                    enough.map(|_| BLOCKS_PER_READ),
                )
                .await?;
            for (.., blob) in &blocks {
                point_blocks::decode_into(blob, first, last, &mut points).ok_or_else(|| {
                    Error::Corrupt(format!("a metric block of series {series_id}"))
                })?;
            }
            if let Some(after) = after {
                points.retain(|point| key_order(point) > after);
            }
            let (Some(enough), Some(&(first_step, last_step, block_id, _))) =
                (enough, blocks.last())
            else {
                break;
            };
            if blocks.len() < BLOCKS_PER_READ {
                break;
            }
            // Every unread block starts at `first_step` or later.
            if points.iter().filter(|point| point.1 < first_step).count() >= enough {
                break;
            }
            read_to = Some((first_step, last_step, block_id));
        }
        point_blocks::into_key_order(&mut points);
        Ok(points)
    }

    /// A series' blocks that meet `steps`, in (first step, last step, id) order, from
    /// after `after`, at most `limit` of them.
    async fn series_blocks(
        &self,
        series_id: i64,
        (first, last): (i64, i64),
        after: Option<BlockPlace>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, i64, i64, Vec<u8>)>> {
        let mut sql = Sql::in_order(self.backend);
        let series = sql.int_arg(series_id);
        let (last, first) = (sql.int_arg(last), sql.int_arg(first));
        sql.push(&format!(
            "SELECT first_step, last_step, block_id, points FROM metric_blocks \
             WHERE series_id = {series} AND first_step <= {last} AND last_step >= {first}"
        ));
        if let Some((first_step, last_step, block_id)) = after {
            let place = [first_step, last_step, block_id].map(|part| sql.int_arg(part));
            sql.push(&format!(
                " AND (first_step, last_step, block_id) > ({})",
                place.join(", ")
            ));
        }
        sql.push(" ORDER BY first_step, last_step, block_id");
        if let Some(limit) = limit {
            let limit = sql.int_arg(limit as i64);
            sql.push(&format!(" LIMIT {limit}"));
        }
        if let Some(direct) = &self.direct {
            return direct
                .rows(sql, |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .await;
        }
        sql.query()
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
            .collect()
    }

    /// Metric values of several runs at up to `max_results` evenly spread steps each.
    pub async fn get_metric_history_bulk_interval(
        &self,
        run_ids: &[String],
        key: &str,
        start_step: Option<i64>,
        end_step: Option<i64>,
        max_results: i64,
    ) -> Result<Vec<(String, MetricPoint)>> {
        let _timer = self.timer("get_metric_history_bulk_interval");
        let mut out = Vec::new();
        for run_id in run_ids {
            self.get_run_info(run_id).await?;
            let sampled = self
                .sampled_points(
                    run_id,
                    key,
                    start_step.unwrap_or(i64::MIN),
                    end_step.unwrap_or(i64::MAX),
                    max_results.max(1),
                )
                .await?;
            out.extend(
                sampled
                    .into_iter()
                    .map(|(timestamp, step, value_key, is_nan)| {
                        (
                            run_id.clone(),
                            MetricPoint {
                                key: key.to_string(),
                                value: value_from_key(value_key, is_nan),
                                timestamp,
                                step,
                            },
                        )
                    }),
            );
        }
        Ok(out)
    }

    /// One series' points in a step range, sampled as MLflow 3.17 samples them (see
    /// `sample_positions`, over the rows in step order).
    async fn sampled_points(
        &self,
        run_id: &str,
        key: &str,
        start_step: i64,
        end_step: i64,
        buckets: i64,
    ) -> Result<Vec<Point>> {
        let Some((series_id, _)) = self.series_of(run_id, key).await? else {
            return Ok(Vec::new());
        };
        let points = self
            .series_points_between(series_id, start_step, end_step, None, None)
            .await?;
        let picked = sample_positions(points.len(), buckets.max(1) as usize);
        Ok(picked
            .into_iter()
            .filter_map(|position| points.get(position).copied())
            .collect())
    }
}

/// How a series' points are ordered when read.
#[derive(Debug, Clone, Copy)]
enum PointOrder {
    /// The table's key: step, timestamp, value.
    Key,
    /// MLflow's history order: timestamp, step, value.
    History,
}

/// Which of a series' points to read, by step.
#[derive(Debug, Clone, Copy)]
enum Steps {
    All,
    /// The points after this one in key order (a history page's start).
    AfterKey(Point),
}

/// MLflow 3.17's sampling of a long history, as the positions (in step order) of the rows
/// kept out of `len`: the rows cut into `n` buckets as SQL's `NTILE(n)` cuts them (the
/// first `len % n` buckets one row longer), the first row of each bucket kept, and the very
/// last row kept too, in place of the last pick when that would make more than `n`.
pub(crate) fn sample_positions(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let (base, longer) = (len / n, len % n);
    let mut picked = Vec::with_capacity(n);
    let mut start = 0;
    for bucket in 0..n {
        picked.push(start);
        start += base + usize::from(bucket < longer);
    }
    let last = len - 1;
    if picked.last() != Some(&last) {
        if picked.len() >= n {
            picked.pop();
        }
        picked.push(last);
    }
    picked
}

async fn upsert_tags(
    tx: &mut impl WriteConnection,
    backend: Backend,
    run_id: &str,
    tags: &[KeyValue],
) -> Result<()> {
    // Last value wins when a key repeats within one request.
    let mut latest: Vec<&KeyValue> = Vec::with_capacity(tags.len());
    for tag in tags {
        if let Some(slot) = latest.iter_mut().find(|t| t.key == tag.key) {
            *slot = tag;
        } else {
            latest.push(tag);
        }
    }
    let sql = format!(
        "INSERT INTO tags (run_uuid, key, value) VALUES {} ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value",
        values_groups(backend, latest.len(), 3, 1)
    );
    let mut args = Vec::with_capacity(latest.len() * 3);
    for tag in &latest {
        args.push(Arg::Text(run_id.to_string()));
        args.push(Arg::Text(tag.key.clone()));
        args.push(Arg::Text(tag.value.clone()));
    }
    tx.execute(&sql, &args).await?;
    if let Some(name) = latest.iter().rev().find(|t| t.key == RUN_NAME_TAG) {
        tx.execute(
            "UPDATE runs SET name = $1 WHERE run_uuid = $2",
            &[Arg::Text(name.value.clone()), Arg::Text(run_id.to_string())],
        )
        .await?;
    }
    Ok(())
}

async fn insert_params(
    tx: &mut impl WriteConnection,
    backend: Backend,
    run_id: &str,
    params: &[KeyValue],
    style: ParamStyle,
) -> Result<()> {
    let mut sql = Sql::in_order(backend);
    let run = sql.text_arg(run_id);
    let list = sql.text_list(params.iter().map(|p| p.key.clone()));
    sql.text = format!("SELECT key, value FROM params WHERE run_uuid = {run} AND key IN {list}");
    let existing: HashMap<String, String> = tx
        .fetch::<(String, String)>(&sql.text, &sql.args)
        .await?
        .into_iter()
        .collect();
    let conflicts: Vec<(&KeyValue, &String)> = params
        .iter()
        .filter_map(|p| {
            existing
                .get(&p.key)
                .filter(|old| **old != p.value)
                .map(|old| (p, old))
        })
        .collect();
    if let Some((first, old)) = conflicts.first() {
        let message = match style {
            ParamStyle::Single => format!(
                "Changing param values is not allowed. Param with key='{}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{}'.",
                first.key, first.value
            ),
            ParamStyle::Batch => {
                let listed: Vec<String> = conflicts
                    .iter()
                    .map(|(p, old)| {
                        format!(
                            "{{'key': '{}', 'old_value': '{old}', 'new_value': '{}'}}",
                            p.key, p.value
                        )
                    })
                    .collect();
                format!(
                    "Changing param values is not allowed. Params were already logged='[{}]' for run ID='{run_id}'.",
                    listed.join(", ")
                )
            }
        };
        return Err(MlflowError::invalid(message).into());
    }
    let fresh: Vec<&KeyValue> = params
        .iter()
        .filter(|p| !existing.contains_key(&p.key))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO params (run_uuid, key, value) VALUES {} ON CONFLICT DO NOTHING",
        values_groups(backend, fresh.len(), 3, 1)
    );
    let mut args = Vec::with_capacity(fresh.len() * 3);
    for p in fresh {
        args.push(Arg::Text(run_id.to_string()));
        args.push(Arg::Text(p.key.clone()));
        args.push(Arg::Text(p.value.clone()));
    }
    tx.execute(&sql, &args).await?;
    Ok(())
}

fn opt_text(value: &Option<String>) -> Arg {
    match value {
        Some(v) => Arg::Text(v.clone()),
        None => Arg::NullText,
    }
}

/// A stored value as its order-preserving integer key and NaN flag: the IEEE-754 bits of
/// the stored (clamped) value with a negative value's lower 63 bits flipped, so that
/// integer order is numeric order; NaN is 0.0's key with the flag set, as MLflow stores it.
pub(crate) fn value_key(value: f64) -> (i64, i64) {
    let (stored, is_nan) = encode_value(value);
    if is_nan != 0 {
        return (0, 1);
    }
    (flip_negative(stored.to_bits() as i64), 0)
}

/// The value a `value_key` stands for.
pub(crate) fn value_from_key(key: i64, is_nan: i64) -> f64 {
    if is_nan != 0 {
        f64::NAN
    } else {
        f64::from_bits(flip_negative(key) as u64)
    }
}

/// Its own inverse: a negative bit pattern has its lower 63 bits flipped.
fn flip_negative(bits: i64) -> i64 {
    if bits < 0 { !bits | i64::MIN } else { bits }
}

/// What the insert needs to know of a series that exists.
#[derive(Debug, Clone, Copy)]
struct Series {
    id: i64,
    /// The step and timestamp of its latest point (its greatest step).
    last: (i64, i64),
    /// Distinct steps whose timestamps never fall: step order is history order.
    steps_ascend: bool,
}

/// Whether a series whose greatest point so far is `last` (none for a new series) keeps
/// distinct steps with timestamps that never fall, given its new `points` (step, timestamp).
fn keeps_steps_ascending(last: Option<(i64, i64)>, points: &mut [(i64, i64)]) -> bool {
    points.sort_unstable();
    let mut previous = last;
    for &(step, timestamp) in points.iter() {
        if let Some((previous_step, previous_timestamp)) = previous
            && (step <= previous_step || timestamp < previous_timestamp)
        {
            return false;
        }
        previous = Some((step, timestamp));
    }
    true
}

/// The series of `run_id`'s metric keys in `by_key`, creating the ones that do not exist
/// yet (with the key's latest point of the batch as their latest value) and clearing
/// `steps_ascend` on the ones this batch breaks it for.
async fn prepare_series(
    tx: &mut impl WriteConnection,
    backend: Backend,
    run_id: &str,
    by_key: &mut [KeyPoints<'_>],
) -> Result<HashMap<String, i64>> {
    let existing = existing_series(
        tx,
        backend,
        run_id,
        by_key.iter().map(|k| k.latest.key.as_str()),
    )
    .await?;
    let mut ids: HashMap<String, i64> = existing.iter().map(|(k, s)| (k.clone(), s.id)).collect();
    let mut broken = Vec::new();
    let mut missing = Vec::new();
    for key in by_key.iter_mut() {
        match existing.get(&key.latest.key) {
            Some(series) => {
                if series.steps_ascend && !keeps_steps_ascending(Some(series.last), &mut key.points)
                {
                    broken.push(series.id);
                }
            }
            None => {
                let ascending = keeps_steps_ascending(None, &mut key.points);
                missing.push((key.latest, ascending));
            }
        }
    }
    if !broken.is_empty() {
        let mut sql = Sql::in_order(backend);
        sql.push("UPDATE latest_metrics SET steps_ascend = 0 WHERE series_id IN (");
        let list: Vec<String> = broken.iter().map(|&id| sql.int_arg(id)).collect();
        sql.push(&list.join(", "));
        sql.push(")");
        tx.execute(&sql.text, &sql.args).await?;
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    let new_ids: Vec<i64> = match backend {
        // NB: the write lock is held from BEGIN IMMEDIATE, so the maximum cannot move.
        Backend::Sqlite => {
            let max: Vec<(Option<i64>,)> = tx
                .fetch("SELECT max(series_id) FROM latest_metrics", &[])
                .await?;
            let first = max.first().and_then(|(max,)| *max).unwrap_or(0) + 1;
            (first..first + missing.len() as i64).collect()
        }
        Backend::Postgres => tx
            .fetch::<(i64,)>(
                "SELECT nextval('metric_series_ids') FROM generate_series(1, $1)",
                &[Arg::Int(missing.len() as i64)],
            )
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect(),
    };
    let sql = format!(
        "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits, series_id, steps_ascend) \
         VALUES {} ON CONFLICT (run_uuid, key) DO NOTHING",
        values_groups(backend, missing.len(), 9, 1)
    );
    let mut args = Vec::with_capacity(missing.len() * 9);
    for ((m, ascending), id) in missing.iter().zip(&new_ids) {
        push_latest_row(&mut args, run_id, m, *id);
        args.push(Arg::Int(i64::from(*ascending)));
    }
    tx.execute(&sql, &args).await?;
    if backend == Backend::Sqlite {
        // The single writer made every one of them: the ids are ours.
        ids.extend(missing.iter().map(|(m, _)| m.key.clone()).zip(new_ids));
        return Ok(ids);
    }
    // NB: on PostgreSQL a concurrent writer may have created one of these series first;
    // its id, not ours, is the one the points must carry, and its flag must be checked.
    let created = existing_series(
        tx,
        backend,
        run_id,
        missing.iter().map(|(m, _)| m.key.as_str()),
    )
    .await?;
    for ((m, ascending), id) in missing.iter().zip(&new_ids) {
        if let Some(series) = created.get(&m.key)
            && series.id != *id
            && series.steps_ascend
        {
            let mut points: Vec<(i64, i64)> = by_key
                .iter()
                .find(|k| k.latest.key == m.key)
                .map(|k| k.points.clone())
                .unwrap_or_default();
            // Their first points and ours interleave: only a check against theirs is safe.
            if !*ascending || !keeps_steps_ascending(Some(series.last), &mut points) {
                tx.execute(
                    "UPDATE latest_metrics SET steps_ascend = 0 WHERE series_id = $1",
                    &[Arg::Int(series.id)],
                )
                .await?;
            }
        }
    }
    ids.extend(created.into_iter().map(|(k, s)| (k, s.id)));
    Ok(ids)
}

async fn existing_series<'k>(
    tx: &mut impl WriteConnection,
    backend: Backend,
    run_id: &str,
    keys: impl Iterator<Item = &'k str>,
) -> Result<HashMap<String, Series>> {
    let mut sql = Sql::in_order(backend);
    let run = sql.text_arg(run_id);
    sql.push(&format!(
        "SELECT key, series_id, step, timestamp, steps_ascend FROM latest_metrics WHERE run_uuid = {run} AND key IN "
    ));
    let list = sql.text_list(keys);
    sql.push(&list);
    if backend == Backend::Postgres {
        // Concurrent writers to one series take turns: each checks its points against
        // the last ones written.
        sql.push(" FOR UPDATE");
    }
    let rows: Vec<(String, i64, i64, i64, i64)> = tx.fetch(&sql.text, &sql.args).await?;
    Ok(rows
        .into_iter()
        .map(|(key, id, step, timestamp, steps_ascend)| {
            (
                key,
                Series {
                    id,
                    last: (step, timestamp),
                    steps_ascend: steps_ascend != 0,
                },
            )
        })
        .collect())
}

/// A point's key columns: series, timestamp, step, value key, NaN flag.
fn push_point_key(args: &mut Vec<Arg>, series_id: i64, m: &BatchMetric) {
    let (key, is_nan) = value_key(m.value);
    args.extend([
        Arg::Int(series_id),
        Arg::Int(m.timestamp),
        Arg::Int(m.step),
        Arg::Int(key),
        Arg::Int(is_nan),
    ]);
}

/// A `latest_metrics` row's columns up to its series id.
fn push_latest_row(args: &mut Vec<Arg>, run_id: &str, m: &BatchMetric, series_id: i64) {
    let (value, is_nan) = encode_value(m.value);
    args.extend([
        Arg::Text(run_id.to_string()),
        Arg::Text(m.key.clone()),
        Arg::Float(value),
        Arg::Int(is_nan),
        Arg::Int(m.timestamp),
        Arg::Int(m.step),
        Arg::Int(stored_bits(m.value)),
        Arg::Int(series_id),
    ]);
}

/// One metric key's points in a batch: its latest point and every (step, timestamp).
struct KeyPoints<'m> {
    latest: &'m BatchMetric,
    points: Vec<(i64, i64)>,
}

async fn insert_metrics(
    tx: &mut impl WriteConnection,
    backend: Backend,
    run_id: &str,
    metrics: &[BatchMetric],
) -> Result<()> {
    // The latest value per key: greatest (step, timestamp, value), NaN counting as lowest.
    let rank = |m: &BatchMetric| {
        (
            m.step,
            m.timestamp,
            if m.value.is_nan() {
                f64::NEG_INFINITY
            } else {
                m.value
            },
        )
    };
    let mut by_key: Vec<KeyPoints<'_>> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    for m in metrics {
        match slot_of.get(m.key.as_str()) {
            Some(&slot) => {
                let key = &mut by_key[slot];
                key.points.push((m.step, m.timestamp));
                if rank(m)
                    .partial_cmp(&rank(key.latest))
                    .is_some_and(|o| o.is_gt())
                {
                    key.latest = m;
                }
            }
            None => {
                slot_of.insert(m.key.as_str(), by_key.len());
                by_key.push(KeyPoints {
                    latest: m,
                    points: vec![(m.step, m.timestamp)],
                });
            }
        }
    }
    let series = prepare_series(tx, backend, run_id, &mut by_key).await?;
    let latest: Vec<&BatchMetric> = by_key.iter().map(|k| k.latest).collect();
    let series_of = |m: &BatchMetric| {
        series.get(&m.key).copied().ok_or_else(|| {
            Error::Corrupt(format!("no series for metric {} of run {run_id}", m.key))
        })
    };

    // A series' points of this write are one block (see `point_blocks`), in key order.
    let mut points: Vec<(i64, Point)> = Vec::with_capacity(metrics.len());
    for m in metrics {
        let (value_key, is_nan) = value_key(m.value);
        points.push((series_of(m)?, (m.timestamp, m.step, value_key, is_nan)));
    }
    points.sort_unstable_by_key(|(series, point)| (*series, key_order(point)));
    points.dedup();
    let blocks: Vec<[Arg; 4]> = points
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|block| {
            let (first, last) = (block.first()?, block.last()?);
            Some([
                Arg::Int(first.0),
                Arg::Int(first.1.1),
                Arg::Int(last.1.1),
                Arg::Blob(point_blocks::encode(block.iter().map(|(_, point)| point))),
            ])
        })
        .collect();
    for chunk in blocks.chunks(BLOCK_CHUNK) {
        let sql = format!(
            "INSERT INTO metric_blocks (series_id, first_step, last_step, points) VALUES {}",
            values_groups(backend, chunk.len(), 4, 1)
        );
        let args: Vec<Arg> = chunk.iter().flatten().cloned().collect();
        tx.execute(&sql, &args).await?;
    }

    let sql = format!(
        "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step, value_bits, series_id) VALUES {} \
         ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, \
         timestamp = excluded.timestamp, step = excluded.step, value_bits = excluded.value_bits \
         WHERE (excluded.step, excluded.timestamp, excluded.value) > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
        values_groups(backend, latest.len(), 8, 1)
    );
    let mut args = Vec::with_capacity(latest.len() * 8);
    for m in &latest {
        push_latest_row(&mut args, run_id, m, series_of(m)?);
    }
    tx.execute(&sql, &args).await?;

    let with_context: Vec<&BatchMetric> = metrics
        .iter()
        .filter(|m| m.model_id.is_some() || m.dataset_name.is_some() || m.dataset_digest.is_some())
        .collect();
    for chunk in with_context.chunks(METRIC_CHUNK) {
        let sql = format!(
            "INSERT INTO metric_point_context (series_id, timestamp, step, value_key, is_nan, model_id, dataset_name, dataset_digest) \
             VALUES {} ON CONFLICT DO NOTHING",
            values_groups(backend, chunk.len(), 8, 1)
        );
        let mut args = Vec::with_capacity(chunk.len() * 8);
        for m in chunk {
            push_point_key(&mut args, series_of(m)?, m);
            args.push(opt_text(&m.model_id));
            args.push(opt_text(&m.dataset_name));
            args.push(opt_text(&m.dataset_digest));
        }
        tx.execute(&sql, &args).await?;
    }

    let linked: Vec<&BatchMetric> = metrics.iter().filter(|m| m.model_id.is_some()).collect();
    for chunk in linked.chunks(METRIC_CHUNK) {
        let sql = format!(
            "INSERT INTO logged_model_metrics (model_id, key, timestamp, step, value, is_nan, run_uuid, dataset_name, dataset_digest) \
             VALUES {} ON CONFLICT DO NOTHING",
            values_groups(backend, chunk.len(), 9, 1)
        );
        let mut args = Vec::with_capacity(chunk.len() * 9);
        for m in chunk {
            let (value, is_nan) = encode_value(m.value);
            args.push(opt_text(&m.model_id));
            args.push(Arg::Text(m.key.clone()));
            args.push(Arg::Int(m.timestamp));
            args.push(Arg::Int(m.step));
            args.push(Arg::Float(value));
            args.push(Arg::Int(is_nan));
            args.push(Arg::Text(run_id.to_string()));
            args.push(Arg::Text(m.dataset_name.clone().unwrap_or_default()));
            args.push(Arg::Text(m.dataset_digest.clone().unwrap_or_default()));
        }
        tx.execute(&sql, &args).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Integer order of value keys is the order of the stored values, and the value
        /// comes back bit for bit (infinities clamped, as stored).
        #[test]
        fn value_keys_keep_order_and_bits(a in any::<f64>(), b in any::<f64>()) {
            let (key_a, nan_a) = value_key(a);
            let (key_b, nan_b) = value_key(b);
            let (stored_a, _) = encode_value(a);
            let (stored_b, _) = encode_value(b);
            if nan_a == 0 && nan_b == 0 {
                prop_assert_eq!(value_from_key(key_a, 0).to_bits(), stored_a.to_bits());
                if stored_a < stored_b {
                    prop_assert!(key_a < key_b);
                }
                if stored_a.to_bits() == stored_b.to_bits() {
                    prop_assert_eq!(key_a, key_b);
                }
            } else if nan_a != 0 {
                prop_assert!(value_from_key(key_a, nan_a).is_nan());
                prop_assert_eq!(key_a, value_key(0.0).0);
            }
        }

        /// The flag's rule is sound (it never keeps the flag on a series that breaks the
        /// definition) and exact for appends: points after the series' last one. It may
        /// clear the flag for a late point that would still fit (the history is then only
        /// sorted when read).
        #[test]
        fn steps_ascend_matches_its_definition(
            old in proptest::collection::vec((0i64..20, 0i64..20), 0..6),
            new in proptest::collection::vec((0i64..20, 0i64..20), 1..6),
        ) {
            let ascends = |points: &[(i64, i64)]| {
                let mut sorted = points.to_vec();
                sorted.sort_unstable();
                sorted.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            };
            prop_assume!(ascends(&old));
            let last = old.iter().max().copied();
            let mut batch = new.clone();
            let all: Vec<(i64, i64)> = old.iter().chain(new.iter()).copied().collect();
            let kept = keeps_steps_ascending(last, &mut batch);
            if kept {
                prop_assert!(ascends(&all));
            }
            let appended = last.is_none_or(|(step, _)| new.iter().all(|p| p.0 > step));
            if appended {
                prop_assert_eq!(kept, ascends(&all));
            }
        }
    }

    #[test]
    fn values_encode_like_mlflow() {
        assert_eq!(encode_value(1.5), (1.5, 0));
        assert_eq!(encode_value(f64::INFINITY), (f64::MAX, 0));
        assert_eq!(encode_value(f64::NEG_INFINITY), (f64::MIN, 0));
        let (v, nan) = encode_value(f64::NAN);
        assert_eq!((v, nan), (0.0, 1));
        assert!(decode_value(v, nan).is_nan());
    }

    #[test]
    fn sampling_cuts_rows_as_ntile_and_keeps_the_last() {
        // MLflow 3.17 on ten rows, five results: buckets of two, the last replaces row 8.
        assert_eq!(sample_positions(10, 5), vec![0, 2, 4, 6, 9]);
        assert_eq!(sample_positions(20, 5), vec![0, 4, 8, 12, 19]);
        assert_eq!(sample_positions(7, 3), vec![0, 3, 6]);
        assert_eq!(sample_positions(2, 5), vec![0, 1]);
        assert_eq!(sample_positions(3, 1), vec![2]);
        assert_eq!(sample_positions(0, 5), Vec::<usize>::new());
    }
}
