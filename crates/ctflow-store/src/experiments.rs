//! Experiments: create, read, search, rename, soft delete and restore, tags.

use ctflow_core::entities::{Experiment, KeyValue, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED, ViewType};
use ctflow_core::filter::{Clause, Comparator, OrderBy, Value};
use ctflow_core::validation::{
    KeyKind, MAX_EXPERIMENT_TAG_VALUE_LENGTH, validate_experiment_name, validate_key,
    validate_max_length,
};
use ctflow_core::{MlflowError, now_ms, page_token};
use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{Error, Result, is_unique_violation};
use crate::sql::{Arg, Sql, cut_page};

/// A validated experiments/search request.
#[derive(Debug, Clone)]
pub struct ExperimentSearch {
    pub view: ViewType,
    pub filter: Vec<Clause>,
    pub order_by: Vec<OrderBy>,
    pub max_results: i64,
    pub page_token: Option<String>,
}

const EXPERIMENT_COLUMNS: &str =
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time";

fn experiment_from_row(row: &AnyRow) -> Result<Experiment> {
    Ok(Experiment {
        experiment_id: row.try_get::<i64, _>(0)?.to_string(),
        name: row.try_get(1)?,
        artifact_location: row.try_get(2)?,
        lifecycle_stage: row.try_get(3)?,
        creation_time: row.try_get(4)?,
        last_update_time: row.try_get(5)?,
        tags: Vec::new(),
    })
}

fn not_found(id: i64) -> Error {
    MlflowError::not_found(format!("No Experiment with id={id} exists")).into()
}

pub(crate) fn validate_experiment_tag(key: &str, value: &str) -> Result<()> {
    validate_key(key, KeyKind::Tag)?;
    validate_max_length("value", value, MAX_EXPERIMENT_TAG_VALUE_LENGTH)?;
    Ok(())
}

impl Store {
    pub async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<String> {
        validate_experiment_name(name)?;
        for tag in tags {
            validate_experiment_tag(&tag.key, &tag.value)?;
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
             VALUES ($1, $2, 'active', $3, $3) RETURNING experiment_id",
        )
        .bind(name)
        .bind(artifact_location.unwrap_or(""))
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get(0)?,
            Err(e) if is_unique_violation(&e) => {
                return Err(MlflowError::exists(format!(
                    "Experiment(name={name}) already exists."
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        if artifact_location.is_none_or(str::is_empty) {
            sqlx::query("UPDATE experiments SET artifact_location = $1 WHERE experiment_id = $2")
                .bind(self.artifact_location_for(id))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for tag in tags {
            sqlx::query(
                "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(id)
            .bind(tag.key.as_str())
            .bind(tag.value.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id.to_string())
    }

    async fn experiment_tags(&self, ids: &[i64]) -> Result<Vec<(i64, KeyValue)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(
            "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN (",
        );
        let placeholders: Vec<String> = ids.iter().map(|id| sql.int_arg(*id)).collect();
        sql.push(&placeholders.join(", "))
            .push(") ORDER BY experiment_id, key");
        let rows = sql.query().fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    KeyValue::new(r.try_get::<String, _>(1)?, r.try_get::<String, _>(2)?),
                ))
            })
            .collect()
    }

    async fn attach_tags(&self, mut experiments: Vec<Experiment>) -> Result<Vec<Experiment>> {
        let ids: Vec<i64> = experiments
            .iter()
            .filter_map(|e| e.experiment_id.parse().ok())
            .collect();
        for (id, tag) in self.experiment_tags(&ids).await? {
            let id = id.to_string();
            if let Some(exp) = experiments.iter_mut().find(|e| e.experiment_id == id) {
                exp.tags.push(tag);
            }
        }
        Ok(experiments)
    }

    /// Active runs per experiment (experiments without runs are absent).
    pub async fn run_counts(&self) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT experiment_id, COUNT(*) FROM runs WHERE lifecycle_stage = 'active' \
             GROUP BY experiment_id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    pub async fn get_experiment(&self, id: i64) -> Result<Experiment> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| not_found(id))?;
        let exp = experiment_from_row(&row)?;
        Ok(self.attach_tags(vec![exp]).await?.remove(0))
    }

    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            Error::from(MlflowError::not_found(format!(
                "Could not find experiment with name '{name}'"
            )))
        })?;
        let exp = experiment_from_row(&row)?;
        Ok(self.attach_tags(vec![exp]).await?.remove(0))
    }

    /// The lifecycle stage of an experiment, or not-found.
    pub(crate) async fn experiment_stage(&self, id: i64) -> Result<String> {
        sqlx::query_scalar("SELECT lifecycle_stage FROM experiments WHERE experiment_id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Checks that an experiment exists and is active; returns its artifact location.
    pub(crate) async fn require_active_experiment(&self, id: i64) -> Result<String> {
        let row = sqlx::query(
            "SELECT lifecycle_stage, artifact_location FROM experiments WHERE experiment_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| not_found(id))?;
        let stage: String = row.try_get(0)?;
        if stage != LIFECYCLE_ACTIVE {
            return Err(MlflowError::invalid(format!(
                "The experiment {id} must be in the 'active' state. Current state is {stage}."
            ))
            .into());
        }
        Ok(row.try_get(1)?)
    }

    pub async fn search_experiments(
        &self,
        search: &ExperimentSearch,
    ) -> Result<(Vec<Experiment>, Option<String>)> {
        let _timer = self.timer("search_experiments");
        let offset = page_token::decode(search.page_token.as_deref())?;
        let mut sql = Sql::new(format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE lifecycle_stage IN "
        ));
        let stages = sql.text_list(search.view.stages().iter().copied());
        sql.push(&stages);
        for clause in &search.filter {
            let condition = experiment_condition(&mut sql, clause);
            sql.push(" AND ").push(&condition);
        }
        let mut order: Vec<String> = search
            .order_by
            .iter()
            .map(|o| format!("e.{} {}", o.key, if o.ascending { "ASC" } else { "DESC" }))
            .collect();
        if search.order_by.is_empty() {
            order.push("e.creation_time DESC".into());
        }
        if !search.order_by.iter().any(|o| o.key == "experiment_id") {
            order.push("e.experiment_id ASC".into());
        }
        let limit = sql.int_arg(search.max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        sql.push(&format!(
            " ORDER BY {} LIMIT {limit} OFFSET {off}",
            order.join(", ")
        ));
        let rows = sql.query().fetch_all(&self.read).await?;
        let mut experiments = rows
            .iter()
            .map(experiment_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = cut_page(&mut experiments, search.max_results, offset);
        Ok((self.attach_tags(experiments).await?, next))
    }

    pub async fn rename_experiment(&self, id: i64, new_name: &str) -> Result<()> {
        validate_experiment_name(new_name)?;
        self.require_active_experiment(id).await?;
        let result = sqlx::query(
            "UPDATE experiments SET name = $1, last_update_time = $2 WHERE experiment_id = $3",
        )
        .bind(new_name)
        .bind(now_ms())
        .bind(id)
        .execute(&self.write)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(MlflowError::exists(format!(
                "Experiment(name={new_name}) already exists."
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Soft-deletes an experiment and its runs, as MLflow does.
    pub async fn delete_experiment(&self, id: i64) -> Result<()> {
        if id == 0 {
            return Err(MlflowError::invalid("Cannot delete the default experiment '0'. This is an internally reserved experiment.").into());
        }
        self.set_experiment_stage(id, LIFECYCLE_DELETED, LIFECYCLE_ACTIVE)
            .await
    }

    pub async fn restore_experiment(&self, id: i64) -> Result<()> {
        self.set_experiment_stage(id, LIFECYCLE_ACTIVE, LIFECYCLE_DELETED)
            .await
    }

    async fn set_experiment_stage(&self, id: i64, to: &str, from: &str) -> Result<()> {
        let stage = self.experiment_stage(id).await?;
        if stage != from {
            return Err(MlflowError::invalid(format!(
                "Cannot {} experiment {id}: it is {stage}.",
                if to == LIFECYCLE_DELETED {
                    "delete"
                } else {
                    "restore"
                }
            ))
            .into());
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE experiments SET lifecycle_stage = $1, last_update_time = $2 WHERE experiment_id = $3")
            .bind(to)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let runs_update = if to == LIFECYCLE_DELETED {
            sqlx::query("UPDATE runs SET lifecycle_stage = $1, deleted_time = $2 WHERE experiment_id = $3 AND lifecycle_stage = $4")
                .bind(to)
                .bind(now)
        } else {
            sqlx::query("UPDATE runs SET lifecycle_stage = $1, deleted_time = NULL WHERE experiment_id = $2 AND lifecycle_stage = $3")
                .bind(to)
        };
        runs_update.bind(id).bind(from).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_experiment_tag(&self, id: i64, key: &str, value: &str) -> Result<()> {
        validate_experiment_tag(key, value)?;
        self.require_active_experiment(id).await?;
        sqlx::query(
            "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(id)
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn delete_experiment_tag(&self, id: i64, key: &str) -> Result<()> {
        self.require_active_experiment(id).await?;
        let done = sqlx::query("DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2")
            .bind(id)
            .bind(key)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No tag with name: {key} in experiment with id {id}"
            ))
            .into());
        }
        Ok(())
    }
}

/// SQL for a string comparison on `column`, shared by every search.
pub(crate) fn string_condition(
    sql: &mut Sql,
    column: &str,
    cmp: Comparator,
    value: &Value,
) -> String {
    match (cmp, value) {
        (Comparator::In | Comparator::NotIn, Value::List(items)) => {
            let list = sql.text_list(items.iter().cloned());
            let op = if cmp == Comparator::In {
                "IN"
            } else {
                "NOT IN"
            };
            format!("{column} {op} {list}")
        }
        (Comparator::ILike, Value::Str(s)) => {
            let p = sql.text_arg(s.clone());
            format!("LOWER({column}) LIKE LOWER({p})")
        }
        (_, Value::Str(s)) => {
            let p = sql.text_arg(s.clone());
            let op = match cmp {
                Comparator::Ne => "!=",
                Comparator::Like => "LIKE",
                _ => "=",
            };
            format!("{column} {op} {p}")
        }
        (_, Value::Number(n)) => {
            let p = sql.arg(Arg::Float(*n));
            format!("{column} {} {p}", numeric_op(cmp))
        }
        _ => "1 = 0".to_string(),
    }
}

pub(crate) fn numeric_op(cmp: Comparator) -> &'static str {
    match cmp {
        Comparator::Eq => "=",
        Comparator::Ne => "!=",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
        Comparator::Lt => "<",
        _ => "<=",
    }
}

fn experiment_condition(sql: &mut Sql, clause: &Clause) -> String {
    match clause.entity {
        ctflow_core::filter::Entity::Tag => match clause.comparator {
            Comparator::IsNull | Comparator::IsNotNull => {
                let k = sql.text_arg(clause.key.clone());
                let not = if clause.comparator == Comparator::IsNull {
                    "NOT "
                } else {
                    ""
                };
                format!(
                    "{not}EXISTS (SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = {k})"
                )
            }
            cmp => {
                let k = sql.text_arg(clause.key.clone());
                let cond = string_condition(sql, "t.value", cmp, &clause.value);
                format!(
                    "EXISTS (SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = {k} AND {cond})"
                )
            }
        },
        _ => match clause.key.as_str() {
            "experiment_id" => {
                let cast = match &clause.value {
                    Value::List(items) => Value::List(items.clone()),
                    other => other.clone(),
                };
                string_condition(
                    sql,
                    "CAST(e.experiment_id AS TEXT)",
                    clause.comparator,
                    &cast,
                )
            }
            "creation_time" | "last_update_time" => {
                let column = format!("e.{}", clause.key);
                string_condition(sql, &column, clause.comparator, &clause.value)
            }
            _ => string_condition(sql, "e.name", clause.comparator, &clause.value),
        },
    }
}
