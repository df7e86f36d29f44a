//! MLflow 3's registered scorers: versions of a named judge per experiment. A scorer keeps
//! its id across versions; deleting its last version deletes it.

use ctflow_core::MlflowError;
use serde::Serialize;
use sqlx::Row;

use crate::Store;
use crate::error::Result;

/// One version of a scorer, as `scorers/list`, `versions` and `get` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScorerVersion {
    /// Its experiment (a number on the wire, as MLflow writes it here).
    pub experiment_id: i64,
    /// The scorer's name.
    pub scorer_name: String,
    /// 1, 2, ...
    pub scorer_version: i64,
    /// The client's serialized scorer, as sent.
    pub serialized_scorer: String,
    /// Epoch ms.
    pub creation_time: i64,
    /// The scorer's id (the same for all its versions).
    pub scorer_id: String,
}

fn scorer_not_found(experiment_id: i64, name: &str, version: Option<i64>) -> MlflowError {
    MlflowError::not_found(match version {
        Some(v) => format!(
            "Scorer with name '{name}' and version {v} not found for experiment {experiment_id}."
        ),
        None => format!("Scorer with name '{name}' not found for experiment {experiment_id}."),
    })
}

const VERSION_COLUMNS: &str =
    "s.experiment_id, s.name, v.version, v.serialized_scorer, v.creation_time, s.scorer_id";

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<ScorerVersion> {
    Ok(ScorerVersion {
        experiment_id: row.try_get(0)?,
        scorer_name: row.try_get(1)?,
        scorer_version: row.try_get(2)?,
        serialized_scorer: row.try_get(3)?,
        creation_time: row.try_get(4)?,
        scorer_id: row.try_get(5)?,
    })
}

impl Store {
    /// Registers a new version of a scorer (the first creates it).
    pub async fn register_scorer(
        &self,
        experiment_id: i64,
        name: &str,
        serialized_scorer: &str,
    ) -> Result<ScorerVersion> {
        self.require_active_experiment(experiment_id).await?;
        if name.trim().is_empty() {
            return Err(MlflowError::invalid("A scorer's name cannot be empty").into());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO scorers (scorer_id, experiment_id, name) VALUES ($1, $2, $3) \
             ON CONFLICT (experiment_id, name) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(experiment_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let scorer_id: String = sqlx::query_scalar(
            "SELECT scorer_id FROM scorers WHERE experiment_id = $1 AND name = $2",
        )
        .bind(experiment_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM scorer_versions WHERE scorer_id = $1",
        )
        .bind(scorer_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let now = ctflow_core::now_ms();
        sqlx::query(
            "INSERT INTO scorer_versions (scorer_id, version, serialized_scorer, creation_time) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(scorer_id.as_str())
        .bind(next)
        .bind(serialized_scorer)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ScorerVersion {
            experiment_id,
            scorer_name: name.to_string(),
            scorer_version: next,
            serialized_scorer: serialized_scorer.to_string(),
            creation_time: now,
            scorer_id,
        })
    }

    /// The latest version of each scorer of an experiment, by name.
    pub async fn list_scorers(&self, experiment_id: i64) -> Result<Vec<ScorerVersion>> {
        self.experiment_stage(experiment_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM scorers s JOIN scorer_versions v ON v.scorer_id = s.scorer_id \
             WHERE s.experiment_id = $1 AND v.version = \
             (SELECT MAX(l.version) FROM scorer_versions l WHERE l.scorer_id = s.scorer_id) \
             ORDER BY s.name"
        )))
        .bind(experiment_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Every version of a scorer, oldest first.
    pub async fn list_scorer_versions(
        &self,
        experiment_id: i64,
        name: &str,
    ) -> Result<Vec<ScorerVersion>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM scorers s JOIN scorer_versions v ON v.scorer_id = s.scorer_id \
             WHERE s.experiment_id = $1 AND s.name = $2 ORDER BY v.version"
        )))
        .bind(experiment_id)
        .bind(name)
        .fetch_all(&self.read)
        .await?;
        if rows.is_empty() {
            return Err(scorer_not_found(experiment_id, name, None).into());
        }
        rows.iter().map(version_from_row).collect()
    }

    /// One version of a scorer, the latest when `version` is none.
    pub async fn get_scorer(
        &self,
        experiment_id: i64,
        name: &str,
        version: Option<i64>,
    ) -> Result<ScorerVersion> {
        let versions = self
            .list_scorer_versions(experiment_id, name)
            .await
            .map_err(|_| scorer_not_found(experiment_id, name, version))?;
        let found = match version {
            Some(v) => versions.into_iter().find(|s| s.scorer_version == v),
            None => versions.into_iter().last(),
        };
        found.ok_or_else(|| scorer_not_found(experiment_id, name, version).into())
    }

    /// Deletes one version of a scorer, or all of them (and the scorer) when `version` is
    /// none.
    pub async fn delete_scorer(
        &self,
        experiment_id: i64,
        name: &str,
        version: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let scorer_id: Option<String> = sqlx::query_scalar(
            "SELECT scorer_id FROM scorers WHERE experiment_id = $1 AND name = $2",
        )
        .bind(experiment_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let scorer_id = scorer_id.ok_or_else(|| scorer_not_found(experiment_id, name, None))?;
        let deleted = match version {
            Some(v) => {
                sqlx::query("DELETE FROM scorer_versions WHERE scorer_id = $1 AND version = $2")
                    .bind(scorer_id.as_str())
                    .bind(v)
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM scorer_versions WHERE scorer_id = $1")
                    .bind(scorer_id.as_str())
                    .execute(&mut *tx)
                    .await?
            }
        };
        if deleted.rows_affected() == 0 {
            return Err(scorer_not_found(experiment_id, name, version).into());
        }
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM scorer_versions WHERE scorer_id = $1")
                .bind(scorer_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
        if left == 0 {
            sqlx::query("DELETE FROM scorers WHERE scorer_id = $1")
                .bind(scorer_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
