//! MLflow 3 logged models: the model objects `log_model` creates, with params, tags, linked
//! metrics, and an artifact location of their own.

use std::collections::HashMap;

use ctflow_core::entities::{
    KeyValue, LIFECYCLE_ACTIVE, LOGGED_MODEL_STATUSES, LoggedModel, LoggedModelData,
    LoggedModelInfo, Metric,
};
use ctflow_core::filter::{Clause, Comparator, Entity, Value};
use ctflow_core::validation::{KeyKind, MAX_PARAM_VALUE_LENGTH, validate_key};
use ctflow_core::{MlflowError, ids, now_ms, page_token};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{Error, Result};
use crate::experiments::{numeric_op, string_condition};
use crate::runs::decode_value;
use crate::sql::{Arg, Sql, cut_page};

#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub experiment_id: i64,
    pub name: Option<String>,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

/// One `order_by` entry of logged-models/search.
#[derive(Debug, Clone)]
pub struct LoggedModelOrder {
    pub field_name: String,
    pub ascending: bool,
}

#[derive(Debug, Clone)]
pub struct LoggedModelSearch {
    pub experiment_ids: Vec<i64>,
    pub filter: Vec<Clause>,
    /// Only models with metrics on one of these datasets (name, and digest when given);
    /// a metric clause then counts only those datasets' metrics.
    pub datasets: Vec<(String, Option<String>)>,
    pub order_by: Vec<LoggedModelOrder>,
    pub max_results: i64,
    pub page_token: Option<String>,
}

const MODEL_COLUMNS: &str = "m.model_id, m.experiment_id, m.name, m.artifact_location, m.creation_timestamp, m.last_updated_timestamp, m.status, m.model_type, m.source_run_id";

fn info_from_row(row: &AnyRow) -> Result<LoggedModelInfo> {
    Ok(LoggedModelInfo {
        model_id: row.try_get(0)?,
        experiment_id: row.try_get::<i64, _>(1)?.to_string(),
        name: row.try_get(2)?,
        artifact_uri: row.try_get(3)?,
        creation_timestamp_ms: row.try_get(4)?,
        last_updated_timestamp_ms: row.try_get(5)?,
        status: row.try_get(6)?,
        model_type: row.try_get(7)?,
        source_run_id: row.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
        tags: Vec::new(),
    })
}

fn model_not_found(id: &str) -> Error {
    MlflowError::not_found(format!("Logged model with ID '{id}' not found.")).into()
}

impl Store {
    pub async fn create_logged_model(&self, new: NewLoggedModel) -> Result<LoggedModel> {
        let experiment = self.get_experiment(new.experiment_id).await?;
        if experiment.lifecycle_stage != LIFECYCLE_ACTIVE {
            return Err(MlflowError::invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is {}.",
                new.experiment_id, experiment.lifecycle_stage
            ))
            .into());
        }
        for p in &new.params {
            validate_key(&p.key, KeyKind::Param)?;
        }
        for t in &new.tags {
            validate_key(&t.key, KeyKind::Tag)?;
        }
        let model_id = ids::new_logged_model_id();
        let name = new
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(ids::new_run_name);
        let artifact_uri = format!(
            "{}/models/{model_id}/artifacts",
            experiment.artifact_location.trim_end_matches('/')
        );
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, creation_timestamp, \
             last_updated_timestamp, status, model_type, source_run_id, lifecycle_stage) \
             VALUES ($1, $2, $3, $4, $5, $5, 'LOGGED_MODEL_PENDING', $6, $7, 'active')",
        )
        .bind(model_id.as_str())
        .bind(new.experiment_id)
        .bind(name.as_str())
        .bind(artifact_uri.as_str())
        .bind(now)
        .bind(new.model_type.unwrap_or_default())
        .bind(new.source_run_id.filter(|r| !r.is_empty()))
        .execute(&mut *tx)
        .await?;
        for p in &new.params {
            let value = ctflow_core::validation::truncate_chars(&p.value, MAX_PARAM_VALUE_LENGTH);
            sqlx::query(
                "INSERT INTO logged_model_params (model_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(model_id.as_str())
            .bind(p.key.as_str())
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        for t in &new.tags {
            upsert_model_tag(&mut tx, &model_id, t).await?;
        }
        tx.commit().await?;
        self.get_logged_model(&model_id).await
    }

    pub async fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel> {
        self.fetch_logged_models(&[model_id.to_string()])
            .await?
            .pop()
            .ok_or_else(|| model_not_found(model_id))
    }

    async fn fetch_logged_models(&self, model_ids: &[String]) -> Result<Vec<LoggedModel>> {
        if model_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(model_ids.iter().cloned());
        sql.push(&format!("SELECT {MODEL_COLUMNS} FROM logged_models m WHERE m.lifecycle_stage = 'active' AND m.model_id IN {list}"));
        let mut models: HashMap<String, LoggedModel> = HashMap::new();
        for row in sql.query().fetch_all(&self.read).await? {
            let info = info_from_row(&row)?;
            models.insert(
                info.model_id.clone(),
                LoggedModel {
                    info,
                    data: LoggedModelData::default(),
                },
            );
        }
        if models.is_empty() {
            return Ok(Vec::new());
        }
        for table in ["logged_model_tags", "logged_model_params"] {
            let mut sql = Sql::in_order(self.backend);
            let list = sql.text_list(model_ids.iter().cloned());
            sql.push(&format!(
                "SELECT model_id, key, value FROM {table} WHERE model_id IN {list} ORDER BY key"
            ));
            for row in sql.query().fetch_all(&self.read).await? {
                let id: String = row.try_get(0)?;
                if let Some(model) = models.get_mut(&id) {
                    let kv =
                        KeyValue::new(row.try_get::<String, _>(1)?, row.try_get::<String, _>(2)?);
                    if table == "logged_model_tags" {
                        model.info.tags.push(kv);
                    } else {
                        model.data.params.push(kv);
                    }
                }
            }
        }
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(model_ids.iter().cloned());
        sql.push(&format!(
            "SELECT model_id, key, value, is_nan, timestamp, step, run_uuid, dataset_name, dataset_digest \
             FROM logged_model_metrics WHERE model_id IN {list} ORDER BY key, timestamp, step"
        ));
        for row in sql.query().fetch_all(&self.read).await? {
            let id: String = row.try_get(0)?;
            if let Some(model) = models.get_mut(&id) {
                let dataset_name: String = row.try_get(7)?;
                let dataset_digest: String = row.try_get(8)?;
                model.data.metrics.push(Metric {
                    key: row.try_get(1)?,
                    value: decode_value(row.try_get(2)?, row.try_get(3)?),
                    timestamp: row.try_get(4)?,
                    step: row.try_get(5)?,
                    run_id: Some(row.try_get(6)?),
                    model_id: Some(id.clone()),
                    dataset_name: (!dataset_name.is_empty()).then_some(dataset_name),
                    dataset_digest: (!dataset_digest.is_empty()).then_some(dataset_digest),
                });
            }
        }
        Ok(model_ids
            .iter()
            .filter_map(|id| models.remove(id))
            .collect())
    }

    async fn require_logged_model(&self, model_id: &str) -> Result<()> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT model_id FROM logged_models WHERE model_id = $1 AND lifecycle_stage = 'active'",
        )
        .bind(model_id)
        .fetch_optional(&self.read)
        .await?;
        found.map(|_| ()).ok_or_else(|| model_not_found(model_id))
    }

    /// Finalises a logged model: its status moves to READY or UPLOAD_FAILED.
    pub async fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<LoggedModel> {
        if !LOGGED_MODEL_STATUSES.contains(&status) {
            return Err(
                MlflowError::invalid(format!("Invalid logged model status '{status}'")).into(),
            );
        }
        self.require_logged_model(model_id).await?;
        sqlx::query(
            "UPDATE logged_models SET status = $1, last_updated_timestamp = $2 WHERE model_id = $3",
        )
        .bind(status)
        .bind(now_ms())
        .bind(model_id)
        .execute(&self.write)
        .await?;
        self.get_logged_model(model_id).await
    }

    pub async fn set_logged_model_tags(&self, model_id: &str, tags: &[KeyValue]) -> Result<()> {
        for t in tags {
            validate_key(&t.key, KeyKind::Tag)?;
        }
        self.require_logged_model(model_id).await?;
        let mut tx = self.begin_write().await?;
        for t in tags {
            upsert_model_tag(&mut tx, model_id, t).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<()> {
        self.require_logged_model(model_id).await?;
        let done = sqlx::query("DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2")
            .bind(model_id)
            .bind(key)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No tag with key '{key}' found for logged model '{model_id}'."
            ))
            .into());
        }
        Ok(())
    }

    pub async fn log_logged_model_params(&self, model_id: &str, params: &[KeyValue]) -> Result<()> {
        for p in params {
            validate_key(&p.key, KeyKind::Param)?;
        }
        self.require_logged_model(model_id).await?;
        let mut tx = self.begin_write().await?;
        for p in params {
            let value = ctflow_core::validation::truncate_chars(&p.value, MAX_PARAM_VALUE_LENGTH);
            sqlx::query(
                "INSERT INTO logged_model_params (model_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(model_id)
            .bind(p.key.as_str())
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_logged_model(&self, model_id: &str) -> Result<()> {
        self.require_logged_model(model_id).await?;
        sqlx::query("UPDATE logged_models SET lifecycle_stage = 'deleted', last_updated_timestamp = $1 WHERE model_id = $2")
            .bind(now_ms())
            .bind(model_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn search_logged_models(
        &self,
        search: &LoggedModelSearch,
    ) -> Result<(Vec<LoggedModel>, Option<String>)> {
        let offset = page_token::decode(search.page_token.as_deref())?;
        if search.experiment_ids.is_empty() {
            return Err(MlflowError::missing_param("experiment_ids").into());
        }
        let mut sql = Sql::new("");
        let mut joins = String::new();
        let mut terms = Vec::new();
        for (i, order) in search.order_by.iter().enumerate() {
            let dir = if order.ascending { "ASC" } else { "DESC" };
            let column = match order.field_name.as_str() {
                "name" => "m.name".to_string(),
                "model_id" => "m.model_id".to_string(),
                "creation_timestamp" | "creation_time" => "m.creation_timestamp".to_string(),
                "last_updated_timestamp" | "last_updated_time" => {
                    "m.last_updated_timestamp".to_string()
                }
                "status" => "m.status".to_string(),
                field => match field.strip_prefix("metrics.") {
                    Some(metric) => {
                        let key = sql.text_arg(metric);
                        let alias = format!("o{i}");
                        joins.push_str(&format!(
                            " LEFT JOIN (SELECT model_id, MAX(value) AS value FROM logged_model_metrics WHERE key = {key} GROUP BY model_id) {alias} ON {alias}.model_id = m.model_id"
                        ));
                        format!("{alias}.value")
                    }
                    None => {
                        return Err(MlflowError::invalid(format!(
                            "Invalid order by field name: {field}"
                        ))
                        .into());
                    }
                },
            };
            terms.push(format!("({column} IS NULL) ASC"));
            terms.push(format!("{column} {dir}"));
        }
        terms.push("m.creation_timestamp DESC".into());
        terms.push("m.model_id ASC".into());
        let experiments: Vec<String> = search
            .experiment_ids
            .iter()
            .map(|id| sql.int_arg(*id))
            .collect();
        let mut conditions = vec![
            format!("m.experiment_id IN ({})", experiments.join(", ")),
            "m.lifecycle_stage = 'active'".to_string(),
        ];
        let datasets = dataset_condition(&mut sql, &search.datasets);
        for clause in &search.filter {
            conditions.push(model_condition(&mut sql, clause, datasets.as_deref()));
        }
        if let Some(datasets) = &datasets
            && !search.filter.iter().any(|c| c.entity == Entity::Metric)
        {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM logged_model_metrics x WHERE x.model_id = m.model_id AND ({datasets}))"
            ));
        }
        let limit = sql.int_arg(search.max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        sql.text = format!(
            "SELECT m.model_id FROM logged_models m{joins} WHERE {} ORDER BY {} LIMIT {limit} OFFSET {off}",
            conditions.join(" AND "),
            terms.join(", ")
        );
        let mut ids: Vec<String> = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let next = cut_page(&mut ids, search.max_results, offset);
        Ok((self.fetch_logged_models(&ids).await?, next))
    }
}

async fn upsert_model_tag(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    model_id: &str,
    tag: &KeyValue,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO logged_model_tags (model_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(model_id)
    .bind(tag.key.as_str())
    .bind(tag.value.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `(x.dataset_name = .. AND x.dataset_digest = ..) OR ...` over `logged_model_metrics x`.
fn dataset_condition(sql: &mut Sql, datasets: &[(String, Option<String>)]) -> Option<String> {
    if datasets.is_empty() {
        return None;
    }
    let terms: Vec<String> = datasets
        .iter()
        .map(|(name, digest)| {
            let name = sql.text_arg(name.clone());
            match digest {
                Some(digest) => {
                    let digest = sql.text_arg(digest.clone());
                    format!("(x.dataset_name = {name} AND x.dataset_digest = {digest})")
                }
                None => format!("x.dataset_name = {name}"),
            }
        })
        .collect();
    Some(terms.join(" OR "))
}

fn model_condition(sql: &mut Sql, clause: &Clause, datasets: Option<&str>) -> String {
    match clause.entity {
        Entity::Metric => {
            let key = sql.text_arg(clause.key.clone());
            let Value::Number(n) = clause.value else {
                return "1 = 0".into();
            };
            let v = sql.arg(Arg::Float(n));
            let on_datasets = datasets.map(|d| format!(" AND ({d})")).unwrap_or_default();
            format!(
                "EXISTS (SELECT 1 FROM logged_model_metrics x WHERE x.model_id = m.model_id AND x.key = {key} AND x.is_nan = 0 AND x.value {} {v}{on_datasets})",
                numeric_op(clause.comparator)
            )
        }
        Entity::Param | Entity::Tag => {
            let table = if clause.entity == Entity::Param {
                "logged_model_params"
            } else {
                "logged_model_tags"
            };
            let key = sql.text_arg(clause.key.clone());
            let cond = string_condition(sql, "x.value", clause.comparator, &clause.value);
            format!(
                "EXISTS (SELECT 1 FROM {table} x WHERE x.model_id = m.model_id AND x.key = {key} AND {cond})"
            )
        }
        _ => {
            let column = format!("m.{}", clause.key);
            match (clause.comparator, &clause.value) {
                (Comparator::IsNull, _) => format!("{column} IS NULL"),
                (Comparator::IsNotNull, _) => format!("{column} IS NOT NULL"),
                _ => string_condition(sql, &column, clause.comparator, &clause.value),
            }
        }
    }
}
