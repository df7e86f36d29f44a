//! MLflow 3's issues: a quality problem found in an experiment (by a person or a judge),
//! with a status and a severity, searched by experiment, status and source run.

use ctflow_core::MlflowError;
use ctflow_core::filter::Clause;
use ctflow_core::page_token;
use serde::Serialize;
use sqlx::Row;

use crate::Store;
use crate::error::Result;
use crate::experiments::string_condition;
use crate::sql::{Sql, cut_page};

/// The statuses an issue can have.
pub const ISSUE_STATUSES: &[&str] = &["pending", "rejected", "resolved"];
/// The severities an issue can have.
pub const ISSUE_SEVERITIES: &[&str] = &["not_an_issue", "low", "medium", "high"];

/// An issue with MLflow's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// `iss-<32 hex>`.
    pub issue_id: String,
    /// Its experiment.
    pub experiment_id: String,
    /// A short name.
    pub name: String,
    /// What is wrong.
    pub description: String,
    /// `pending`, `rejected` or `resolved`.
    pub status: String,
    /// `not_an_issue`, `low`, `medium` or `high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// What causes it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub root_causes: Vec<String>,
    /// The run that found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_run_id: Option<String>,
    /// Categories it falls under.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Epoch ms.
    pub created_timestamp: i64,
    /// Epoch ms.
    pub last_updated_timestamp: i64,
    /// Who reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// A new issue.
#[derive(Debug, Clone, Default)]
pub struct NewIssue {
    /// Its experiment.
    pub experiment_id: i64,
    /// A short name.
    pub name: String,
    /// What is wrong.
    pub description: String,
    /// The status (`pending` when none).
    pub status: Option<String>,
    /// The severity.
    pub severity: Option<String>,
    /// Root causes.
    pub root_causes: Vec<String>,
    /// The run that found it.
    pub source_run_id: Option<String>,
    /// Categories it falls under.
    pub categories: Vec<String>,
    /// Who reported it.
    pub created_by: Option<String>,
}

/// The fields an update may change.
#[derive(Debug, Clone, Default)]
pub struct IssueUpdate {
    /// A new name.
    pub name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// A new status.
    pub status: Option<String>,
    /// A new severity.
    pub severity: Option<String>,
}

fn check_one_of(value: Option<&str>, allowed: &[&str], field: &str) -> Result<()> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(MlflowError::invalid(format!(
            "Invalid {field} '{v}': expected one of {allowed:?}"
        ))
        .into()),
        _ => Ok(()),
    }
}

const ISSUE_COLUMNS: &str = "issue_id, experiment_id, name, description, status, severity, \
     root_causes, source_run_id, created_timestamp, last_updated_timestamp, created_by, categories";

fn string_list(text: Option<String>, what: &str) -> Result<Vec<String>> {
    match text {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| crate::Error::Corrupt(format!("issue {what}: {e}"))),
        None => Ok(Vec::new()),
    }
}

fn json_list(items: &[String]) -> Option<String> {
    // NB: a list of strings always serialises.
    (!items.is_empty()).then(|| serde_json::to_string(items).unwrap_or_default())
}

fn issue_from_row(row: &sqlx::any::AnyRow) -> Result<Issue> {
    let experiment_id: i64 = row.try_get(1)?;
    Ok(Issue {
        issue_id: row.try_get(0)?,
        experiment_id: experiment_id.to_string(),
        name: row.try_get(2)?,
        description: row.try_get(3)?,
        status: row.try_get(4)?,
        severity: row.try_get(5)?,
        root_causes: string_list(row.try_get(6)?, "root causes")?,
        source_run_id: row.try_get(7)?,
        categories: string_list(row.try_get(11)?, "categories")?,
        created_timestamp: row.try_get(8)?,
        last_updated_timestamp: row.try_get(9)?,
        created_by: row.try_get(10)?,
    })
}

impl Store {
    /// Records an issue in an (active) experiment.
    pub async fn create_issue(&self, new: &NewIssue) -> Result<Issue> {
        self.require_active_experiment(new.experiment_id).await?;
        check_one_of(new.status.as_deref(), ISSUE_STATUSES, "status")?;
        check_one_of(new.severity.as_deref(), ISSUE_SEVERITIES, "severity")?;
        if let Some(run_id) = &new.source_run_id {
            self.get_run(run_id).await?;
        }
        let issue_id = format!("iss-{}", uuid::Uuid::new_v4().simple());
        let now = ctflow_core::now_ms();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO issues ({ISSUE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)"
        )))
        .bind(issue_id.as_str())
        .bind(new.experiment_id)
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(new.status.as_deref().unwrap_or("pending"))
        .bind(new.severity.as_deref())
        .bind(json_list(&new.root_causes))
        .bind(new.source_run_id.as_deref())
        .bind(now)
        .bind(new.created_by.as_deref())
        .bind(json_list(&new.categories))
        .execute(&self.write)
        .await?;
        self.get_issue(&issue_id).await
    }

    /// One issue, or not-found.
    pub async fn get_issue(&self, issue_id: &str) -> Result<Issue> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ISSUE_COLUMNS} FROM issues WHERE issue_id = $1"
        )))
        .bind(issue_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("Issue with ID '{issue_id}' not found")))?;
        issue_from_row(&row)
    }

    /// Changes the fields an update names.
    pub async fn update_issue(&self, issue_id: &str, update: &IssueUpdate) -> Result<Issue> {
        check_one_of(update.status.as_deref(), ISSUE_STATUSES, "status")?;
        check_one_of(update.severity.as_deref(), ISSUE_SEVERITIES, "severity")?;
        let updated = sqlx::query(
            "UPDATE issues SET name = COALESCE($1, name), description = COALESCE($2, description), \
             status = COALESCE($3, status), severity = COALESCE($4, severity), \
             last_updated_timestamp = $5 WHERE issue_id = $6",
        )
        .bind(update.name.as_deref())
        .bind(update.description.as_deref())
        .bind(update.status.as_deref())
        .bind(update.severity.as_deref())
        .bind(ctflow_core::now_ms())
        .bind(issue_id)
        .execute(&self.write)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(
                MlflowError::not_found(format!("Issue with ID '{issue_id}' not found")).into(),
            );
        }
        self.get_issue(issue_id).await
    }

    /// A page of issues, newest first, of one experiment or all.
    pub async fn search_issues(
        &self,
        experiment_id: Option<i64>,
        filter: &[Clause],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<(Vec<Issue>, Option<String>)> {
        let offset = page_token::decode(page_token)?;
        let mut sql = Sql::new("");
        let mut conditions = vec!["1 = 1".to_string()];
        if let Some(id) = experiment_id {
            let p = sql.int_arg(id);
            conditions.push(format!("experiment_id = {p}"));
        }
        for clause in filter {
            conditions.push(string_condition(
                &mut sql,
                &clause.key,
                clause.comparator,
                &clause.value,
            ));
        }
        let limit = sql.int_arg(max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        sql.text = format!(
            "SELECT {ISSUE_COLUMNS} FROM issues WHERE {} \
             ORDER BY created_timestamp DESC, issue_id ASC LIMIT {limit} OFFSET {off}",
            conditions.join(" AND ")
        );
        let mut issues = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(issue_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = cut_page(&mut issues, max_results, offset);
        Ok((issues, next))
    }
}
