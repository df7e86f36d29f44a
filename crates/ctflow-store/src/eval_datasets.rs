//! MLflow 3's evaluation datasets: the datasets, their experiment links and their records
//! (upserted by inputs).

use ctflow_core::MlflowError;
use ctflow_core::eval_datasets::{
    DatasetClause, DatasetKey, RecordUpsert, USER_TAG, digest, inputs_hash, merge_record,
    update_schema,
};
use ctflow_core::page_token;
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::Store;
use crate::error::Result;
use crate::experiments::string_condition;
use crate::sql::{Sql, cut_page};

/// An evaluation dataset with MLflow's JSON shape.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationDataset {
    /// `d-<32 hex>`.
    pub dataset_id: String,
    /// Its name.
    pub name: String,
    /// Tags (a JSON map).
    pub tags: Map<String, Value>,
    /// The schema inferred from its records (JSON text).
    pub schema: Option<String>,
    /// `{"num_records": n}` (JSON text).
    pub profile: Option<String>,
    /// Changes with every change.
    pub digest: String,
    /// Epoch ms.
    pub created_time: i64,
    /// Epoch ms.
    pub last_update_time: i64,
    /// Who made it (its `mlflow.user` tag).
    pub created_by: Option<String>,
    /// Who changed it last.
    pub last_updated_by: Option<String>,
}

impl EvaluationDataset {
    /// MLflow's JSON form (tags as JSON text); `experiment_ids` added when given.
    pub fn to_json(&self, experiment_ids: Option<&[i64]>) -> Value {
        let mut map = Map::new();
        map.insert("dataset_id".into(), json!(self.dataset_id));
        map.insert("name".into(), json!(self.name));
        map.insert(
            "tags".into(),
            json!(ctflow_core::pyjson::dumps(&Value::Object(
                self.tags.clone()
            ))),
        );
        if let Some(schema) = &self.schema {
            map.insert("schema".into(), json!(schema));
        }
        if let Some(profile) = &self.profile {
            map.insert("profile".into(), json!(profile));
        }
        map.insert("digest".into(), json!(self.digest));
        map.insert("created_time".into(), json!(self.created_time));
        map.insert("last_update_time".into(), json!(self.last_update_time));
        if let Some(by) = &self.created_by {
            map.insert("created_by".into(), json!(by));
        }
        if let Some(by) = &self.last_updated_by {
            map.insert("last_updated_by".into(), json!(by));
        }
        if let Some(ids) = experiment_ids.filter(|ids| !ids.is_empty()) {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            map.insert("experiment_ids".into(), json!(ids));
        }
        Value::Object(map)
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpsertCounts {
    /// New records.
    pub inserted: u64,
    /// Records merged into.
    pub updated: u64,
}

fn dataset_not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!("Evaluation dataset with id '{id}' not found"))
}

fn json_map(text: Option<String>) -> Option<Map<String, Value>> {
    text.and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok())
}

const DATASET_COLUMNS: &str = "dataset_id, name, tags, dataset_schema, profile, digest, \
     created_time, last_update_time, created_by, last_updated_by";

fn dataset_from_row(row: &sqlx::any::AnyRow) -> Result<EvaluationDataset> {
    let tags: String = row.try_get(2)?;
    Ok(EvaluationDataset {
        dataset_id: row.try_get(0)?,
        name: row.try_get(1)?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| crate::Error::Corrupt(format!("dataset tags: {e}")))?,
        schema: row.try_get(3)?,
        profile: row.try_get(4)?,
        digest: row.try_get(5)?,
        created_time: row.try_get(6)?,
        last_update_time: row.try_get(7)?,
        created_by: row.try_get(8)?,
        last_updated_by: row.try_get(9)?,
    })
}

fn dataset_condition(sql: &mut Sql, clause: &DatasetClause) -> String {
    match &clause.key {
        DatasetKey::Text(column) | DatasetKey::Time(column) => string_condition(
            sql,
            &format!("d.{column}"),
            clause.comparator,
            &clause.value,
        ),
        DatasetKey::Tag(key) => {
            // Tags are one JSON map per dataset; their index table has a row per tag.
            let k = sql.text_arg(key.clone());
            let cond = string_condition(sql, "t.value", clause.comparator, &clause.value);
            format!(
                "EXISTS (SELECT 1 FROM evaluation_dataset_tag_index t WHERE t.dataset_id = d.dataset_id AND t.key = {k} AND {cond})"
            )
        }
    }
}

impl Store {
    async fn dataset_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        dataset_id: &str,
    ) -> Result<EvaluationDataset> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DATASET_COLUMNS} FROM evaluation_datasets WHERE dataset_id = $1"
        )))
        .bind(dataset_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| dataset_not_found(dataset_id))?;
        dataset_from_row(&row)
    }

    async fn write_dataset_tags(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        dataset_id: &str,
        tags: &Map<String, Value>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM evaluation_dataset_tag_index WHERE dataset_id = $1")
            .bind(dataset_id)
            .execute(&mut **tx)
            .await?;
        for (key, value) in tags {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            sqlx::query(
                "INSERT INTO evaluation_dataset_tag_index (dataset_id, key, value) VALUES ($1, $2, $3)",
            )
            .bind(dataset_id)
            .bind(key.as_str())
            .bind(text)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("UPDATE evaluation_datasets SET tags = $1 WHERE dataset_id = $2")
            .bind(Value::Object(tags.clone()).to_string())
            .bind(dataset_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Creates a dataset, linked to these (existing) experiments.
    pub async fn create_dataset(
        &self,
        name: &str,
        tags: Map<String, Value>,
        experiment_ids: &[i64],
    ) -> Result<EvaluationDataset> {
        if name.trim().is_empty() {
            return Err(MlflowError::invalid("A dataset's name cannot be empty").into());
        }
        for id in experiment_ids {
            self.experiment_stage(*id).await?;
        }
        let dataset_id = format!("d-{}", uuid::Uuid::new_v4().simple());
        let now = ctflow_core::now_ms();
        let user = tags
            .get(USER_TAG)
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut tx = self.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO evaluation_datasets ({DATASET_COLUMNS}) VALUES ($1, $2, '{{}}', NULL, NULL, $3, $4, $4, $5, $5)"
        )))
        .bind(dataset_id.as_str())
        .bind(name)
        .bind(digest(name, now))
        .bind(now)
        .bind(user.as_deref())
        .execute(&mut *tx)
        .await?;
        Self::write_dataset_tags(&mut tx, &dataset_id, &tags).await?;
        for id in experiment_ids {
            sqlx::query(
                "INSERT INTO evaluation_dataset_experiments (dataset_id, experiment_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(dataset_id.as_str())
            .bind(*id)
            .execute(&mut *tx)
            .await?;
        }
        let dataset = Self::dataset_in(&mut tx, &dataset_id).await?;
        tx.commit().await?;
        Ok(dataset)
    }

    /// One dataset.
    pub async fn get_dataset(&self, dataset_id: &str) -> Result<EvaluationDataset> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DATASET_COLUMNS} FROM evaluation_datasets WHERE dataset_id = $1"
        )))
        .bind(dataset_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| dataset_not_found(dataset_id))?;
        dataset_from_row(&row)
    }

    /// The experiments a dataset is linked to.
    pub async fn dataset_experiment_ids(&self, dataset_id: &str) -> Result<Vec<i64>> {
        self.get_dataset(dataset_id).await?;
        Ok(sqlx::query_scalar(
            "SELECT experiment_id FROM evaluation_dataset_experiments WHERE dataset_id = $1 ORDER BY experiment_id",
        )
        .bind(dataset_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// The experiments each of these datasets is linked to (datasets in none are absent).
    pub async fn datasets_experiments(
        &self,
        dataset_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        let mut links: std::collections::HashMap<String, Vec<i64>> = Default::default();
        if dataset_ids.is_empty() {
            return Ok(links);
        }
        let mut sql = Sql::in_order(self.backend());
        let list = sql.text_list(dataset_ids.iter().cloned());
        sql.text = format!(
            "SELECT dataset_id, experiment_id FROM evaluation_dataset_experiments WHERE dataset_id IN {list}"
        );
        for row in sql.query().fetch_all(&self.read).await? {
            links
                .entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        Ok(links)
    }

    /// Deletes a dataset with its records and links.
    pub async fn delete_dataset(&self, dataset_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        Self::dataset_in(&mut tx, dataset_id).await?;
        for table in [
            "evaluation_dataset_records",
            "evaluation_dataset_experiments",
            "evaluation_dataset_tag_index",
            "evaluation_datasets",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE dataset_id = $1"
            )))
            .bind(dataset_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A page of datasets: of these experiments (any when empty), matching the filter.
    pub async fn search_datasets(
        &self,
        experiment_ids: &[i64],
        filter: &[DatasetClause],
        order_by: &[(&'static str, bool)],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<(Vec<EvaluationDataset>, Option<String>)> {
        let offset = page_token::decode(page_token)?;
        let mut sql = Sql::new("");
        let mut conditions = vec!["1 = 1".to_string()];
        if !experiment_ids.is_empty() {
            let ids: Vec<String> = experiment_ids.iter().map(|id| sql.int_arg(*id)).collect();
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM evaluation_dataset_experiments e WHERE e.dataset_id = d.dataset_id AND e.experiment_id IN ({}))",
                ids.join(", ")
            ));
        }
        for clause in filter {
            conditions.push(dataset_condition(&mut sql, clause));
        }
        let mut terms: Vec<String> = order_by
            .iter()
            .map(|(column, asc)| format!("d.{column} {}", if *asc { "ASC" } else { "DESC" }))
            .collect();
        terms.push("d.created_time DESC".into());
        terms.push("d.dataset_id ASC".into());
        let limit = sql.int_arg(max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        let columns: Vec<String> = DATASET_COLUMNS
            .split(", ")
            .map(|c| format!("d.{}", c.trim()))
            .collect();
        sql.text = format!(
            "SELECT {} FROM evaluation_datasets d WHERE {} ORDER BY {} LIMIT {limit} OFFSET {off}",
            columns.join(", "),
            conditions.join(" AND "),
            terms.join(", ")
        );
        let mut datasets = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(dataset_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = cut_page(&mut datasets, max_results, offset);
        Ok((datasets, next))
    }

    /// Merges tags into a dataset's.
    pub async fn set_dataset_tags(&self, dataset_id: &str, tags: Map<String, Value>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let mut dataset = Self::dataset_in(&mut tx, dataset_id).await?;
        dataset.tags.extend(tags);
        Self::write_dataset_tags(&mut tx, dataset_id, &dataset.tags).await?;
        Self::touch_dataset(&mut tx, &dataset, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes one tag of a dataset.
    pub async fn delete_dataset_tag(&self, dataset_id: &str, key: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let mut dataset = Self::dataset_in(&mut tx, dataset_id).await?;
        dataset.tags.remove(key);
        Self::write_dataset_tags(&mut tx, dataset_id, &dataset.tags).await?;
        Self::touch_dataset(&mut tx, &dataset, None).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_dataset(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        dataset: &EvaluationDataset,
        updated_by: Option<&str>,
    ) -> Result<()> {
        let now = ctflow_core::now_ms().max(dataset.last_update_time);
        sqlx::query(
            "UPDATE evaluation_datasets SET last_update_time = $1, digest = $2, \
             last_updated_by = COALESCE($3, last_updated_by) WHERE dataset_id = $4",
        )
        .bind(now)
        .bind(digest(&dataset.name, now))
        .bind(updated_by)
        .bind(dataset.dataset_id.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Links a dataset to more experiments (linking twice is one link), or unlinks it.
    pub async fn link_dataset_experiments(
        &self,
        dataset_id: &str,
        experiment_ids: &[i64],
        link: bool,
    ) -> Result<EvaluationDataset> {
        let mut tx = self.begin_write().await?;
        let dataset = Self::dataset_in(&mut tx, dataset_id)
            .await
            .map_err(|_| MlflowError::not_found(format!("Dataset '{dataset_id}' not found")))?;
        for id in experiment_ids {
            if link {
                self.experiment_stage(*id).await?;
                sqlx::query(
                    "INSERT INTO evaluation_dataset_experiments (dataset_id, experiment_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(dataset_id)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(
                    "DELETE FROM evaluation_dataset_experiments WHERE dataset_id = $1 AND experiment_id = $2",
                )
                .bind(dataset_id)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
            }
        }
        Self::touch_dataset(&mut tx, &dataset, None).await?;
        let dataset = Self::dataset_in(&mut tx, dataset_id).await?;
        tx.commit().await?;
        Ok(dataset)
    }

    /// Upserts records: a record with the same inputs as a stored one merges into it.
    pub async fn upsert_dataset_records(
        &self,
        dataset_id: &str,
        records: &[RecordUpsert],
    ) -> Result<UpsertCounts> {
        let mut tx = self.begin_write().await?;
        let dataset = Self::dataset_in(&mut tx, dataset_id).await?;
        let now = ctflow_core::now_ms();
        let mut counts = UpsertCounts::default();
        let mut last_user = None;
        for record in records {
            let hash = inputs_hash(&record.inputs);
            let user = record
                .tags
                .as_ref()
                .and_then(|t| t.get(USER_TAG))
                .and_then(Value::as_str)
                .map(str::to_string);
            if user.is_some() {
                last_user.clone_from(&user);
            }
            let existing = sqlx::query(
                "SELECT dataset_record_id, outputs, expectations, tags FROM evaluation_dataset_records \
                 WHERE dataset_id = $1 AND input_hash = $2",
            )
            .bind(dataset_id)
            .bind(hash.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                Some(row) => {
                    let id: String = row.try_get(0)?;
                    let mut outputs = row
                        .try_get::<Option<String>, _>(1)?
                        .and_then(|t| serde_json::from_str(&t).ok());
                    let mut expectations = json_map(row.try_get(2)?);
                    let mut tags = json_map(row.try_get(3)?);
                    merge_record(&mut outputs, &mut expectations, &mut tags, record);
                    sqlx::query(
                        "UPDATE evaluation_dataset_records SET outputs = $1, expectations = $2, tags = $3, \
                         last_update_time = $4, last_updated_by = COALESCE($5, last_updated_by) \
                         WHERE dataset_record_id = $6",
                    )
                    .bind(outputs.map(|v: Value| v.to_string()))
                    .bind(expectations.map(|m| Value::Object(m).to_string()))
                    .bind(tags.map(|m| Value::Object(m).to_string()))
                    .bind(now)
                    .bind(user.as_deref())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    counts.updated += 1;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO evaluation_dataset_records (dataset_record_id, dataset_id, input_hash, \
                         inputs, outputs, expectations, tags, source, created_time, last_update_time, \
                         created_by, last_updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $10)",
                    )
                    .bind(format!("dr-{}", uuid::Uuid::new_v4().simple()))
                    .bind(dataset_id)
                    .bind(hash.as_str())
                    .bind(record.inputs.to_string())
                    .bind(record.outputs.as_ref().map(Value::to_string))
                    .bind(record.expectations.clone().map(|m| Value::Object(m).to_string()))
                    .bind(record.tags.clone().map(|m| Value::Object(m).to_string()))
                    .bind(record.source.as_ref().map(Value::to_string))
                    .bind(now)
                    .bind(user.as_deref())
                    .execute(&mut *tx)
                    .await?;
                    counts.inserted += 1;
                }
            }
        }
        let schema = update_schema(dataset.schema.as_deref(), records)
            .map(|s| ctflow_core::pyjson::dumps(&s));
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM evaluation_dataset_records WHERE dataset_id = $1",
        )
        .bind(dataset_id)
        .fetch_one(&mut *tx)
        .await?;
        let profile =
            (total > 0).then(|| ctflow_core::pyjson::dumps(&json!({"num_records": total})));
        sqlx::query(
            "UPDATE evaluation_datasets SET dataset_schema = COALESCE($1, dataset_schema), profile = $2 \
             WHERE dataset_id = $3",
        )
        .bind(schema)
        .bind(profile)
        .bind(dataset_id)
        .execute(&mut *tx)
        .await?;
        Self::touch_dataset(&mut tx, &dataset, last_user.as_deref()).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// A page of a dataset's records, oldest first, in MLflow's record JSON form.
    pub async fn dataset_records(
        &self,
        dataset_id: &str,
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>)> {
        self.get_dataset(dataset_id).await?;
        let offset = page_token::decode(page_token)?;
        let rows = sqlx::query(
            "SELECT dataset_record_id, inputs, outputs, expectations, tags, source, created_time, \
             last_update_time, created_by, last_updated_by FROM evaluation_dataset_records \
             WHERE dataset_id = $1 ORDER BY created_time, dataset_record_id LIMIT $2 OFFSET $3",
        )
        .bind(dataset_id)
        .bind(max_results.saturating_add(1))
        .bind(offset)
        .fetch_all(&self.read)
        .await?;
        let parse = |text: Option<String>| -> Value {
            text.and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_else(|| json!({}))
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut map = Map::new();
            map.insert(
                "dataset_record_id".into(),
                json!(row.try_get::<String, _>(0)?),
            );
            map.insert("dataset_id".into(), json!(dataset_id));
            map.insert("inputs".into(), parse(row.try_get(1)?));
            map.insert("expectations".into(), parse(row.try_get(3)?));
            map.insert("tags".into(), parse(row.try_get(4)?));
            if let Some(source) = row.try_get::<Option<String>, _>(5)? {
                map.insert("source".into(), parse(Some(source)));
            }
            map.insert("created_time".into(), json!(row.try_get::<i64, _>(6)?));
            map.insert("last_update_time".into(), json!(row.try_get::<i64, _>(7)?));
            if let Some(by) = row.try_get::<Option<String>, _>(8)? {
                map.insert("created_by".into(), json!(by));
            }
            if let Some(by) = row.try_get::<Option<String>, _>(9)? {
                map.insert("last_updated_by".into(), json!(by));
            }
            map.insert("outputs".into(), parse(row.try_get(2)?));
            records.push(Value::Object(map));
        }
        let next = cut_page(&mut records, max_results, offset);
        Ok((records, next))
    }

    /// Deletes records of a dataset; returns how many went.
    pub async fn delete_dataset_records(
        &self,
        dataset_id: &str,
        record_ids: &[String],
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let dataset = Self::dataset_in(&mut tx, dataset_id).await?;
        let mut deleted = 0;
        for id in record_ids {
            deleted += sqlx::query(
                "DELETE FROM evaluation_dataset_records WHERE dataset_id = $1 AND dataset_record_id = $2",
            )
            .bind(dataset_id)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        Self::touch_dataset(&mut tx, &dataset, None).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
