//! MLflow 3's registered scorers: versions of a named judge per experiment. A scorer keeps
//! its id across versions; deleting its last version deletes it.

use ctflow_core::MlflowError;
use serde::Serialize;
use sqlx::Row;

use crate::Store;
use crate::error::Result;
use crate::sql::Sql;

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

/// The id of an experiment's scorer by name, read inside a write transaction.
async fn existing_scorer_id(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    experiment_id: i64,
    name: &str,
) -> Result<String> {
    let scorer_id: Option<String> =
        sqlx::query_scalar("SELECT scorer_id FROM scorers WHERE experiment_id = $1 AND name = $2")
            .bind(experiment_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(scorer_id.ok_or_else(|| scorer_not_found(experiment_id, name, None))?)
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
        let scorer_id = existing_scorer_id(&mut tx, experiment_id, name).await?;
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
            sqlx::query("DELETE FROM online_scoring_configs WHERE scorer_id = $1")
                .bind(scorer_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A scorer's online scoring configuration, as `scorers/online-config(s)` answer it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineScoringConfig {
    /// The configuration's id (a new one each time it is set).
    pub online_scoring_config_id: String,
    /// The scorer it configures.
    pub scorer_id: String,
    /// The share of new traces judged, 0.0 to 1.0.
    pub sample_rate: f64,
    /// The experiment whose traces are judged (text on the wire).
    pub experiment_id: String,
    /// Which traces qualify (MLflow's trace search grammar); absent for all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_string: Option<String>,
}

/// A scorer the online scorer runs: its latest version and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineScorer {
    /// The scorer's name.
    pub name: String,
    /// Its latest version's serialized scorer.
    pub serialized_scorer: String,
    /// Its latest version.
    pub scorer_version: i64,
    /// How it samples and filters.
    pub online_config: OnlineScoringConfig,
}

const CONFIG_COLUMNS: &str =
    "c.online_scoring_config_id, c.scorer_id, c.sample_rate, c.experiment_id, c.filter_string";

fn config_from_row(row: &sqlx::any::AnyRow) -> Result<OnlineScoringConfig> {
    Ok(OnlineScoringConfig {
        online_scoring_config_id: row.try_get(0)?,
        scorer_id: row.try_get(1)?,
        sample_rate: row.try_get(2)?,
        experiment_id: row.try_get::<i64, _>(3)?.to_string(),
        filter_string: row.try_get(4)?,
    })
}

impl Store {
    /// Sets (replaces) the online scoring configuration of an experiment's scorer, after
    /// MLflow's checks: the rate and filter, an active experiment, an existing scorer
    /// whose latest version a server can run (a gateway judge without expectations).
    pub async fn upsert_online_scoring_config(
        &self,
        experiment_id: i64,
        name: &str,
        sample_rate: f64,
        filter_string: Option<&str>,
    ) -> Result<OnlineScoringConfig> {
        ctflow_core::online_scoring::validate_config(sample_rate, filter_string)?;
        self.require_active_experiment(experiment_id).await?;
        let mut tx = self.begin_write().await?;
        let scorer_id = existing_scorer_id(&mut tx, experiment_id, name).await?;
        let latest: Option<String> = sqlx::query_scalar(
            "SELECT serialized_scorer FROM scorer_versions WHERE scorer_id = $1 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(scorer_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(serialized) = latest {
            ctflow_core::online_scoring::check_scorer(name, &serialized, sample_rate)?;
        }
        sqlx::query("DELETE FROM online_scoring_configs WHERE scorer_id = $1")
            .bind(scorer_id.as_str())
            .execute(&mut *tx)
            .await?;
        let config = OnlineScoringConfig {
            online_scoring_config_id: uuid::Uuid::new_v4().simple().to_string(),
            scorer_id,
            sample_rate,
            experiment_id: experiment_id.to_string(),
            filter_string: filter_string.map(str::to_string),
        };
        sqlx::query(
            "INSERT INTO online_scoring_configs \
             (online_scoring_config_id, scorer_id, experiment_id, sample_rate, filter_string) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(config.online_scoring_config_id.as_str())
        .bind(config.scorer_id.as_str())
        .bind(experiment_id)
        .bind(sample_rate)
        .bind(config.filter_string.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(config)
    }

    /// The configurations of these scorers (scorers without one are left out).
    pub async fn online_scoring_configs(
        &self,
        scorer_ids: &[String],
    ) -> Result<Vec<OnlineScoringConfig>> {
        if scorer_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::in_order(self.backend);
        let ids = sql.text_list(scorer_ids.iter().cloned());
        sql.text = format!(
            "SELECT {CONFIG_COLUMNS} FROM online_scoring_configs c WHERE c.scorer_id IN {ids} \
             ORDER BY c.scorer_id"
        );
        sql.query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(config_from_row)
            .collect()
    }

    /// Every scorer with a sampling rate above zero in an active experiment, at its latest
    /// version, whose judge the server can run (a gateway model), by experiment and name.
    pub async fn active_online_scorers(&self) -> Result<Vec<OnlineScorer>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFIG_COLUMNS}, s.name, v.version, v.serialized_scorer \
             FROM online_scoring_configs c \
             JOIN scorers s ON s.scorer_id = c.scorer_id \
             JOIN experiments e ON e.experiment_id = c.experiment_id \
             JOIN scorer_versions v ON v.scorer_id = s.scorer_id AND v.version = \
               (SELECT MAX(l.version) FROM scorer_versions l WHERE l.scorer_id = s.scorer_id) \
             WHERE c.sample_rate > 0 AND e.lifecycle_stage = 'active' \
             ORDER BY c.experiment_id, s.name"
        )))
        .fetch_all(&self.read)
        .await?;
        let mut scorers = Vec::with_capacity(rows.len());
        for row in &rows {
            let serialized: String = row.try_get(7)?;
            if !ctflow_core::online_scoring::runs_online(&serialized) {
                continue;
            }
            scorers.push(OnlineScorer {
                name: row.try_get(5)?,
                serialized_scorer: serialized,
                scorer_version: row.try_get(6)?,
                online_config: config_from_row(row)?,
            });
        }
        Ok(scorers)
    }
}
