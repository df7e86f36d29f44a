//! The model registry: registered models, versions, tags, aliases, stages, and the
//! promotion ledger. Every alias move and stage transition is written to the ledger in
//! the same transaction as the change itself.

use std::collections::HashMap;

use ctflow_core::entities::KeyValue;
use ctflow_core::filter::{Clause, Comparator, Entity, OrderBy, PROMPT_TAG, Value};
use ctflow_core::model_source::{SourceCheck, SourceRequest, check_source, not_identified};
use ctflow_core::registry::{
    LedgerEntry, MAX_REGISTERED_MODEL_TAG_VALUE_LENGTH, ModelUri, ModelVersion, RegisteredModel,
    RegisteredModelAlias, canonical_stage, parse_model_uri, validate_alias, validate_model_name,
};
use ctflow_core::validation::{KeyKind, validate_key, validate_max_length};
use ctflow_core::{MlflowError, now_ms, page_token};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::Store;
use crate::error::{Error, Result, is_unique_violation};
use crate::experiments::{numeric_op, string_condition};
use crate::sql::{Arg, Sql, cut_page, fetch_json_rows, json_rows_sql};

/// A model-versions/create request.
#[derive(Debug, Clone, Default)]
pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    pub run_id: Option<String>,
    pub model_id: Option<String>,
    pub tags: Vec<KeyValue>,
    pub description: Option<String>,
    pub run_link: Option<String>,
    pub user: String,
}

/// A version's source once checked: what is stored and the lineage it carries.
struct ResolvedSource {
    source: String,
    storage_location: String,
    run_id: String,
    model_id: Option<String>,
}

/// A registry search request (registered models or versions).
#[derive(Debug, Clone)]
pub struct RegistrySearch {
    pub filter: Vec<Clause>,
    pub order_by: Vec<OrderBy>,
    pub max_results: i64,
    pub page_token: Option<String>,
}

fn model_not_found(name: &str) -> Error {
    MlflowError::not_found(format!("Registered Model with name={name} not found")).into()
}

fn version_not_found(name: &str, version: i64) -> Error {
    MlflowError::not_found(format!(
        "Model Version (name={name}, version={version}) not found"
    ))
    .into()
}

const VERSION_COLUMNS: &str = "v.name, v.version, v.creation_time, v.last_updated_time, v.current_stage, v.description, v.source, v.run_id, v.status, v.run_link, v.user_id";

/// `model_versions v` narrowed to the highest live version in each stage of the versions
/// `narrowing` picks (a condition on `name` and `current_stage`). NB: grouped once, not a
/// correlated MAX per version: that reads a model's versions once for each of them.
fn latest_in_each_stage(narrowing: &str) -> String {
    format!(
        "(SELECT name, MAX(version) AS version FROM model_versions WHERE deleted = 0 AND {narrowing} \
         GROUP BY name, current_stage) latest JOIN model_versions v ON v.name = latest.name AND v.version = latest.version"
    )
}

fn version_from_row(row: &AnyRow) -> Result<ModelVersion> {
    Ok(ModelVersion {
        name: row.try_get(0)?,
        version: row.try_get::<i64, _>(1)?.to_string(),
        creation_timestamp: row.try_get(2)?,
        last_updated_timestamp: row.try_get(3)?,
        current_stage: row.try_get(4)?,
        description: row.try_get(5)?,
        source: row.try_get(6)?,
        run_id: row.try_get(7)?,
        status: row.try_get(8)?,
        run_link: row.try_get(9)?,
        user_id: row.try_get(10)?,
        tags: Vec::new(),
        aliases: Vec::new(),
    })
}

/// A version from one row of [`crate::sql::json_rows_sql`] over [`VERSION_COLUMNS`] and the
/// page position (the same columns, in the same order).
fn version_from_json(row: &[serde_json::Value]) -> Result<ModelVersion> {
    let corrupt = || Error::Corrupt("unexpected model version row shape".into());
    let [
        name,
        version,
        created,
        updated,
        stage,
        description,
        source,
        run_id,
        status,
        run_link,
        user,
        _position,
    ] = row
    else {
        return Err(corrupt());
    };
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).ok_or_else(corrupt);
    let int = |v: &serde_json::Value| v.as_i64().ok_or_else(corrupt);
    Ok(ModelVersion {
        name: text(name)?,
        version: int(version)?.to_string(),
        creation_timestamp: int(created)?,
        last_updated_timestamp: int(updated)?,
        current_stage: text(stage)?,
        description: text(description)?,
        source: text(source)?,
        run_id: text(run_id)?,
        status: text(status)?,
        run_link: text(run_link)?,
        user_id: text(user)?,
        tags: Vec::new(),
        aliases: Vec::new(),
    })
}

async fn ledger_write(tx: &mut Transaction<'_, Any>, entry: &LedgerEntry) -> Result<()> {
    let parse = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<i64>().ok());
    sqlx::query(
        "INSERT INTO registry_ledger (name, action, alias, from_version, to_version, from_stage, to_stage, user_id, timestamp, comment) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(entry.name.as_str())
    .bind(entry.action.as_str())
    .bind(entry.alias.clone())
    .bind(parse(&entry.from_version))
    .bind(parse(&entry.to_version))
    .bind(entry.from_stage.clone())
    .bind(entry.to_stage.clone())
    .bind(entry.user.as_str())
    .bind(entry.timestamp)
    .bind(entry.comment.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn entry(name: &str, action: &str, user: &str) -> LedgerEntry {
    LedgerEntry {
        id: 0,
        name: name.to_string(),
        action: action.to_string(),
        alias: None,
        from_version: None,
        to_version: None,
        from_stage: None,
        to_stage: None,
        user: user.to_string(),
        timestamp: now_ms(),
        comment: None,
    }
}

impl Store {
    pub async fn create_registered_model(
        &self,
        name: &str,
        tags: &[KeyValue],
        description: Option<&str>,
    ) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        for tag in tags {
            validate_key(&tag.key, KeyKind::Tag)?;
            validate_max_length("value", &tag.value, MAX_REGISTERED_MODEL_TAG_VALUE_LENGTH)?;
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO registered_models (name, creation_time, last_updated_time, description, next_version) VALUES ($1, $2, $2, $3, 1)",
        )
        .bind(name)
        .bind(now)
        .bind(description.map(str::to_string))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(MlflowError::exists(format!(
                    "Registered Model (name={name}) already exists."
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        }
        for tag in tags {
            upsert_model_tag(&mut tx, name, tag).await?;
        }
        tx.commit().await?;
        self.get_registered_model(name).await
    }

    pub(crate) async fn require_registered_model(&self, name: &str) -> Result<()> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT name FROM registered_models WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.read)
                .await?;
        found.map(|_| ()).ok_or_else(|| model_not_found(name))
    }

    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        self.fetch_registered_models(&[name.to_string()])
            .await?
            .pop()
            .ok_or_else(|| model_not_found(name))
    }

    async fn fetch_registered_models(&self, names: &[String]) -> Result<Vec<RegisteredModel>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(direct) = &self.direct {
            let latest = format!(
                "SELECT {VERSION_COLUMNS} FROM {} ORDER BY v.version",
                latest_in_each_stage("name IN (SELECT value FROM json_each($1))")
            );
            let names = names.to_vec();
            return direct
                .read(move |connection| {
                    crate::page_reads::read_registered_models(connection, &names, &latest)
                })
                .await;
        }
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(names.iter().cloned());
        sql.push(&format!(
            "SELECT name, creation_time, last_updated_time, description FROM registered_models WHERE name IN {list}"
        ));
        let mut models: HashMap<String, RegisteredModel> = HashMap::new();
        for row in sql.query().fetch_all(&self.read).await? {
            let name: String = row.try_get(0)?;
            models.insert(
                name.clone(),
                RegisteredModel {
                    name,
                    creation_timestamp: row.try_get(1)?,
                    last_updated_timestamp: row.try_get(2)?,
                    description: row.try_get(3)?,
                    latest_versions: Vec::new(),
                    tags: Vec::new(),
                    aliases: Vec::new(),
                },
            );
        }
        if models.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(names.iter().cloned());
        sql.push(&format!(
            "SELECT name, key, value FROM registered_model_tags WHERE name IN {list} ORDER BY key"
        ));
        for row in sql.query().fetch_all(&self.read).await? {
            let name: String = row.try_get(0)?;
            if let Some(m) = models.get_mut(&name) {
                m.tags.push(KeyValue::new(
                    row.try_get::<String, _>(1)?,
                    row.try_get::<String, _>(2)?,
                ));
            }
        }
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(names.iter().cloned());
        sql.push(&format!("SELECT name, alias, version FROM registered_model_aliases WHERE name IN {list} ORDER BY alias"));
        for row in sql.query().fetch_all(&self.read).await? {
            let name: String = row.try_get(0)?;
            if let Some(m) = models.get_mut(&name) {
                m.aliases.push(RegisteredModelAlias {
                    alias: row.try_get(1)?,
                    version: row.try_get::<i64, _>(2)?.to_string(),
                });
            }
        }
        // latest_versions: the highest live version in each stage.
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(names.iter().cloned());
        sql.push(&format!(
            "SELECT {VERSION_COLUMNS} FROM {} ORDER BY v.version",
            latest_in_each_stage(&format!("name IN {list}"))
        ));
        let mut latest = Vec::new();
        for row in sql.query().fetch_all(&self.read).await? {
            latest.push(version_from_row(&row)?);
        }
        let latest = self.attach_version_tags(latest).await?;
        for version in latest {
            if let Some(m) = models.get_mut(&version.name) {
                m.latest_versions.push(version);
            }
        }
        Ok(names.iter().filter_map(|n| models.remove(n)).collect())
    }

    pub async fn update_registered_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel> {
        let done = sqlx::query(
            "UPDATE registered_models SET description = $1, last_updated_time = $2 WHERE name = $3",
        )
        .bind(description)
        .bind(now_ms())
        .bind(name)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(model_not_found(name));
        }
        self.get_registered_model(name).await
    }

    pub async fn rename_registered_model(
        &self,
        name: &str,
        new_name: &str,
    ) -> Result<RegisteredModel> {
        validate_model_name(new_name)?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let renamed = sqlx::query(
            "UPDATE registered_models SET name = $1, last_updated_time = $2 WHERE name = $3",
        )
        .bind(new_name)
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await;
        match renamed {
            Ok(done) if done.rows_affected() == 0 => return Err(model_not_found(name)),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(MlflowError::exists(format!(
                    "Registered Model (name={new_name}) already exists."
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query("UPDATE model_versions SET name = $1, last_updated_time = $2 WHERE name = $3")
            .bind(new_name)
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for table in [
            "registered_model_tags",
            "model_version_tags",
            "registered_model_aliases",
            "registry_ledger",
            "feedback_labels",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET name = $1 WHERE name = $2"
            )))
            .bind(new_name)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.get_registered_model(new_name).await
    }

    /// Deletes a registered model with its versions, tags and aliases. The ledger keeps
    /// its history.
    pub async fn delete_registered_model(&self, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM registered_models WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(model_not_found(name));
        }
        for table in [
            "registered_model_tags",
            "model_versions",
            "model_version_tags",
            "registered_model_aliases",
            "feedback_labels",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE name = $1"
            )))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_registered_model_tag(&self, name: &str, tag: &KeyValue) -> Result<()> {
        validate_key(&tag.key, KeyKind::Tag)?;
        validate_max_length("value", &tag.value, MAX_REGISTERED_MODEL_TAG_VALUE_LENGTH)?;
        self.require_registered_model(name).await?;
        let mut tx = self.begin_write().await?;
        upsert_model_tag(&mut tx, name, tag).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_registered_model_tag(&self, name: &str, key: &str) -> Result<()> {
        self.require_registered_model(name).await?;
        let done = sqlx::query("DELETE FROM registered_model_tags WHERE name = $1 AND key = $2")
            .bind(name)
            .bind(key)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No tag with key '{key}' for registered model '{name}'"
            ))
            .into());
        }
        Ok(())
    }

    pub async fn search_registered_models(
        &self,
        search: &RegistrySearch,
    ) -> Result<(Vec<RegisteredModel>, Option<String>)> {
        let offset = page_token::decode(search.page_token.as_deref())?;
        let mut sql = Sql::new("");
        let mut conditions = vec!["1 = 1".to_string()];
        for clause in &search.filter {
            conditions.push(registry_condition(
                &mut sql,
                clause,
                "m.name",
                "registered_model_tags",
                "t.name = m.name",
            ));
        }
        let mut terms: Vec<String> = search
            .order_by
            .iter()
            .map(|o| {
                let column = match o.key.as_str() {
                    "name" => "m.name",
                    "creation_timestamp" => "m.creation_time",
                    _ => "m.last_updated_time",
                };
                format!("{column} {}", if o.ascending { "ASC" } else { "DESC" })
            })
            .collect();
        if !search.order_by.iter().any(|o| o.key == "name") {
            terms.push("m.name ASC".into());
        }
        let limit = sql.int_arg(search.max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        sql.text = format!(
            "SELECT m.name FROM registered_models m WHERE {} ORDER BY {} LIMIT {limit} OFFSET {off}",
            conditions.join(" AND "),
            terms.join(", ")
        );
        let mut names: Vec<String> = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let next = cut_page(&mut names, search.max_results, offset);
        Ok((self.fetch_registered_models(&names).await?, next))
    }

    // ------------------------------------------------------------- versions

    /// Checks a version's source against MLflow's rules (`ctflow_core::model_source`) and
    /// finishes the checks that need the database.
    async fn resolve_source(&self, new: &NewModelVersion) -> Result<ResolvedSource> {
        let source = new.source.as_str();
        let run_id = new.run_id.as_deref().filter(|r| !r.is_empty());
        let model_id = new.model_id.as_deref().filter(|m| !m.is_empty());
        let prompt = new
            .tags
            .iter()
            .rev()
            .find(|t| t.key == PROMPT_TAG)
            .is_some_and(|t| t.value.eq_ignore_ascii_case("true"));
        let check = check_source(SourceRequest {
            source,
            run_id,
            model_id,
            prompt,
        })?;
        // The run defaults to the logged model's, when the source comes from one.
        let resolved = |storage: String, model_run: Option<String>| ResolvedSource {
            source: source.to_string(),
            storage_location: storage,
            run_id: run_id.map(str::to_string).or(model_run).unwrap_or_default(),
            model_id: model_id.map(str::to_string),
        };
        match &check {
            SourceCheck::Accepted => match (model_id, parse_model_uri(source)) {
                (Some(id), Ok(ModelUri::LoggedModel(_))) => {
                    let model = self
                        .get_logged_model(id)
                        .await
                        .map_err(|_| not_identified(source, "model_id"))?;
                    Ok(resolved(
                        model.info.artifact_uri,
                        Some(model.info.source_run_id),
                    ))
                }
                _ => Ok(resolved(source.to_string(), None)),
            },
            SourceCheck::LocalInRun { run_id: run, .. }
            | SourceCheck::ArtifactsInRun { run_id: run } => {
                let info = self
                    .get_run_info(run)
                    .await
                    .map_err(|_| not_identified(source, "run_id"))?;
                check.require_within(source, &info.artifact_uri)?;
                Ok(resolved(source.to_string(), None))
            }
            SourceCheck::LocalInModel { model_id: id, .. }
            | SourceCheck::ArtifactsInModel { model_id: id } => {
                let model = self
                    .get_logged_model(id)
                    .await
                    .map_err(|_| not_identified(source, "model_id"))?;
                check.require_within(source, &model.info.artifact_uri)?;
                Ok(resolved(source.to_string(), Some(model.info.source_run_id)))
            }
            SourceCheck::RegisteredVersion(uri) => {
                self.resolve_registered_source(new, source, uri).await
            }
        }
    }

    /// `models:/<name>/<version|stage|latest>` and `models:/<name>@<alias>`: the new version
    /// copies that one; its run and logged model carry over unless the request names
    /// them, and then they must match.
    async fn resolve_registered_source(
        &self,
        new: &NewModelVersion,
        source: &str,
        uri: &ModelUri,
    ) -> Result<ResolvedSource> {
        let name = match uri {
            ModelUri::Version { name, .. }
            | ModelUri::Alias { name, .. }
            | ModelUri::Stage { name, .. }
            | ModelUri::Latest { name } => name.as_str(),
            ModelUri::LoggedModel(_) => return Err(not_identified(source, "model_id").into()),
        };
        let model = self.get_registered_model(name).await?;
        if model
            .tags
            .iter()
            .any(|t| t.key == PROMPT_TAG && t.value.eq_ignore_ascii_case("true"))
        {
            return Err(MlflowError::invalid(format!(
                "Invalid model version source: '{source}'. Prompt versions cannot be used as model version sources."
            ))
            .into());
        }
        let version = match uri {
            ModelUri::Version { version, .. } => *version,
            ModelUri::Alias { alias, .. } => ctflow_core::registry::parse_version(
                &self.get_model_version_by_alias(name, alias).await?.version,
            )?,
            ModelUri::Stage { stage, .. } => {
                let latest = self
                    .get_latest_versions(name, std::slice::from_ref(stage))
                    .await?;
                let found = latest.first().ok_or_else(|| {
                    MlflowError::not_found(format!(
                        "No versions of model with name '{name}' and stage '{stage}' found"
                    ))
                })?;
                ctflow_core::registry::parse_version(&found.version)?
            }
            _ => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(version) FROM model_versions WHERE name = $1 AND deleted = 0",
            )
            .bind(name)
            .fetch_one(&self.read)
            .await?
            .ok_or_else(|| {
                MlflowError::not_found(format!("No versions of model with name '{name}' found"))
            })?,
        };
        let row = sqlx::query(
            "SELECT storage_location, run_id, model_id FROM model_versions WHERE name = $1 AND version = $2 AND deleted = 0",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| version_not_found(name, version))?;
        let storage_location: String = row.try_get(0)?;
        let source_run: Option<String> = row.try_get(1)?;
        let source_model: Option<String> = row.try_get(2)?;
        let source_run = source_run.unwrap_or_default();
        let source_model = source_model.filter(|m| !m.is_empty());
        let mismatch = new.run_id.as_deref().is_some_and(|r| r != source_run)
            || new
                .model_id
                .as_deref()
                .is_some_and(|m| m != source_model.as_deref().unwrap_or_default());
        if mismatch {
            return Err(MlflowError::invalid(format!(
                "Invalid model version source: '{source}'. The run_id and model_id request parameters must match the referenced model version."
            ))
            .into());
        }
        Ok(ResolvedSource {
            source: format!("models:/{name}/{version}"),
            storage_location,
            run_id: new.run_id.clone().unwrap_or(source_run),
            model_id: new
                .model_id
                .clone()
                .filter(|m| !m.is_empty())
                .or(source_model),
        })
    }

    pub async fn create_model_version(&self, new: NewModelVersion) -> Result<ModelVersion> {
        validate_model_name(&new.name)?;
        for tag in &new.tags {
            validate_key(&tag.key, KeyKind::Tag)?;
            validate_max_length("value", &tag.value, MAX_REGISTERED_MODEL_TAG_VALUE_LENGTH)?;
        }
        self.require_registered_model(&new.name).await?;
        let ResolvedSource {
            source,
            storage_location,
            run_id,
            model_id,
        } = self.resolve_source(&new).await?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // NB: the UPDATE takes the registered model's row lock on PostgreSQL, so concurrent
        // creations are serialised and each gets its own number.
        let version: i64 = sqlx::query_scalar(
            "UPDATE registered_models SET next_version = next_version + 1, last_updated_time = $1 WHERE name = $2 RETURNING next_version - 1",
        )
        .bind(now)
        .bind(new.name.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| model_not_found(&new.name))?;
        sqlx::query(
            "INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, user_id, current_stage, \
             source, storage_location, run_id, run_link, model_id, status, deleted) \
             VALUES ($1, $2, $3, $3, $4, $5, 'None', $6, $7, $8, $9, $10, 'READY', 0)",
        )
        .bind(new.name.as_str())
        .bind(version)
        .bind(now)
        .bind(new.description.clone().unwrap_or_default())
        .bind(new.user.as_str())
        .bind(source.as_str())
        .bind(storage_location.as_str())
        .bind(run_id.as_str())
        .bind(new.run_link.clone().unwrap_or_default())
        .bind(model_id.clone())
        .execute(&mut *tx)
        .await?;
        for tag in &new.tags {
            upsert_version_tag(&mut tx, &new.name, version, tag).await?;
        }
        let mut record = entry(&new.name, "version_created", &new.user);
        record.to_version = Some(version.to_string());
        record.comment = Some(source.clone());
        ledger_write(&mut tx, &record).await?;
        if let Some(model_id) = &model_id {
            link_version_to_logged_model(&mut tx, model_id, &new.name, version).await?;
        }
        tx.commit().await?;
        self.get_model_version(&new.name, version).await
    }

    async fn attach_version_tags(
        &self,
        mut versions: Vec<ModelVersion>,
    ) -> Result<Vec<ModelVersion>> {
        if versions.is_empty() {
            return Ok(versions);
        }
        // A search page holds many versions of few models: each name once in the list.
        let names: std::collections::BTreeSet<&str> =
            versions.iter().map(|v| v.name.as_str()).collect();
        let mut sql = Sql::in_order(self.backend);
        let list = sql.text_list(names.into_iter().map(str::to_owned));
        sql.text = json_rows_sql(
            self.backend,
            "name, version, key, value",
            &format!("model_version_tags WHERE name IN {list}"),
        );
        let mut tags: HashMap<(String, String), Vec<KeyValue>> = HashMap::new();
        let corrupt = || Error::Corrupt("unexpected model version tag row shape".into());
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).ok_or_else(corrupt);
        for row in fetch_json_rows(&self.read, &sql).await? {
            let [name, version, key, value] = row.as_slice() else {
                return Err(corrupt());
            };
            let version = version.as_i64().ok_or_else(corrupt)?;
            tags.entry((text(name)?, version.to_string()))
                .or_default()
                .push(KeyValue::new(text(key)?, text(value)?));
        }
        for list in tags.values_mut() {
            list.sort_by(|a, b| a.key.cmp(&b.key));
        }
        for v in &mut versions {
            v.tags = tags
                .remove(&(v.name.clone(), v.version.clone()))
                .unwrap_or_default();
        }
        Ok(versions)
    }

    /// One live version, with its tags and aliases.
    pub async fn get_model_version(&self, name: &str, version: i64) -> Result<ModelVersion> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v WHERE v.name = $1 AND v.version = $2 AND v.deleted = 0"
        )))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| version_not_found(name, version))?;
        let mut v = self
            .attach_version_tags(vec![version_from_row(&row)?])
            .await?
            .remove(0);
        v.aliases = sqlx::query_scalar("SELECT alias FROM registered_model_aliases WHERE name = $1 AND version = $2 ORDER BY alias")
            .bind(name)
            .bind(version)
            .fetch_all(&self.read)
            .await?;
        Ok(v)
    }

    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        description: &str,
    ) -> Result<ModelVersion> {
        let done = sqlx::query(
            "UPDATE model_versions SET description = $1, last_updated_time = $2 WHERE name = $3 AND version = $4 AND deleted = 0",
        )
        .bind(description)
        .bind(now_ms())
        .bind(name)
        .bind(version)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(version_not_found(name, version));
        }
        self.get_model_version(name, version).await
    }

    /// Soft-deletes a version (its number is never reused) and drops its aliases.
    pub async fn delete_model_version(&self, name: &str, version: i64, user: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE model_versions SET deleted = 1, last_updated_time = $1, current_stage = 'Deleted_Internal' WHERE name = $2 AND version = $3 AND deleted = 0",
        )
        .bind(now)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(version_not_found(name, version));
        }
        let aliases: Vec<String> = sqlx::query_scalar(
            "SELECT alias FROM registered_model_aliases WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_all(&mut *tx)
        .await?;
        for alias in aliases {
            let mut record = entry(name, "alias_deleted", user);
            record.alias = Some(alias);
            record.from_version = Some(version.to_string());
            record.comment = Some("version deleted".into());
            ledger_write(&mut tx, &record).await?;
        }
        sqlx::query("DELETE FROM registered_model_aliases WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM model_version_tags WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE registered_models SET last_updated_time = $1 WHERE name = $2")
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn require_version(&self, name: &str, version: i64) -> Result<()> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM model_versions WHERE name = $1 AND version = $2 AND deleted = 0",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.read)
        .await?;
        found
            .map(|_| ())
            .ok_or_else(|| version_not_found(name, version))
    }

    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: i64,
        tag: &KeyValue,
    ) -> Result<()> {
        validate_key(&tag.key, KeyKind::Tag)?;
        validate_max_length("value", &tag.value, MAX_REGISTERED_MODEL_TAG_VALUE_LENGTH)?;
        self.require_version(name, version).await?;
        let mut tx = self.begin_write().await?;
        upsert_version_tag(&mut tx, name, version, tag).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_model_version_tag(
        &self,
        name: &str,
        version: i64,
        key: &str,
    ) -> Result<()> {
        self.require_version(name, version).await?;
        let done = sqlx::query(
            "DELETE FROM model_version_tags WHERE name = $1 AND version = $2 AND key = $3",
        )
        .bind(name)
        .bind(version)
        .bind(key)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No tag with key '{key}' for model version (name={name}, version={version})"
            ))
            .into());
        }
        Ok(())
    }

    pub async fn get_model_version_download_uri(&self, name: &str, version: i64) -> Result<String> {
        sqlx::query_scalar("SELECT storage_location FROM model_versions WHERE name = $1 AND version = $2 AND deleted = 0")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| version_not_found(name, version))
    }

    pub async fn search_model_versions(
        &self,
        search: &RegistrySearch,
    ) -> Result<(Vec<ModelVersion>, Option<String>)> {
        let _timer = self.timer("search_model_versions");
        let offset = page_token::decode(search.page_token.as_deref())?;
        let mut sql = Sql::new("");
        let mut conditions = vec!["v.deleted = 0".to_string()];
        for clause in &search.filter {
            let condition = match (clause.entity, clause.key.as_str()) {
                (Entity::Attribute, "version_number") => {
                    let Value::Number(n) = clause.value else {
                        continue;
                    };
                    let p = sql.arg(Arg::Float(n));
                    format!("v.version {} {p}", numeric_op(clause.comparator))
                }
                (Entity::Attribute, key) => {
                    let column = match key {
                        "run_id" => "v.run_id",
                        "source_path" => "v.source",
                        _ => "v.name",
                    };
                    string_condition(&mut sql, column, clause.comparator, &clause.value)
                }
                _ => registry_condition(
                    &mut sql,
                    clause,
                    "v.name",
                    "model_version_tags",
                    "t.name = v.name AND t.version = v.version",
                ),
            };
            conditions.push(condition);
        }
        let mut terms: Vec<String> = search
            .order_by
            .iter()
            .map(|o| {
                let column = match o.key.as_str() {
                    "name" => "v.name",
                    "version" => "v.version",
                    "creation_timestamp" => "v.creation_time",
                    _ => "v.last_updated_time",
                };
                format!("{column} {}", if o.ascending { "ASC" } else { "DESC" })
            })
            .collect();
        if search.order_by.is_empty() {
            terms.push("v.last_updated_time DESC".into());
        }
        terms.push("v.name ASC".into());
        terms.push("v.version DESC".into());
        let limit = sql.int_arg(search.max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        let order = terms.join(", ");
        let conditions = conditions.join(" AND ");
        if let Some(direct) = &self.direct {
            sql.text = format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions v WHERE {conditions} \
                 ORDER BY {order} LIMIT {limit} OFFSET {off}"
            );
            let mut versions = direct
                .read(move |connection| crate::page_reads::read_versions(connection, &sql))
                .await?;
            let next = cut_page(&mut versions, search.max_results, offset);
            return Ok((versions, next));
        }
        // One aggregated row instead of a row per version (see json_rows_sql); the position
        // column carries the page's order, which the aggregate does not keep.
        let page = format!(
            "(SELECT {VERSION_COLUMNS}, ROW_NUMBER() OVER (ORDER BY {order}) AS position \
             FROM model_versions v WHERE {conditions} ORDER BY {order} LIMIT {limit} OFFSET {off}) page",
        );
        let columns = format!("{}, position", VERSION_COLUMNS.replace("v.", ""));
        sql.text = json_rows_sql(self.backend, &columns, &page);
        let mut rows = fetch_json_rows(&self.read, &sql).await?;
        rows.sort_by_key(|row| row.get(11).and_then(serde_json::Value::as_i64));
        let mut versions = rows
            .iter()
            .map(|row| version_from_json(row))
            .collect::<Result<Vec<_>>>()?;
        let next = cut_page(&mut versions, search.max_results, offset);
        Ok((self.attach_version_tags(versions).await?, next))
    }

    /// For each requested stage (all stages when none), the highest live version in it.
    pub async fn get_latest_versions(
        &self,
        name: &str,
        stages: &[String],
    ) -> Result<Vec<ModelVersion>> {
        self.require_registered_model(name).await?;
        let stages: Vec<&'static str> = if stages.is_empty() {
            ctflow_core::registry::STAGES.to_vec()
        } else {
            stages
                .iter()
                .map(|s| canonical_stage(s))
                .collect::<ctflow_core::Result<_>>()?
        };
        let mut sql = Sql::new("");
        let n = sql.text_arg(name);
        let list = sql.text_list(stages.iter().map(|s| s.to_string()));
        sql.push(&format!(
            "SELECT {VERSION_COLUMNS} FROM {} ORDER BY v.version",
            latest_in_each_stage(&format!("name = {n} AND current_stage IN {list}"))
        ));
        let versions = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(version_from_row)
            .collect::<Result<Vec<_>>>()?;
        self.attach_version_tags(versions).await
    }

    pub async fn transition_model_version_stage(
        &self,
        name: &str,
        version: i64,
        stage: &str,
        archive_existing_versions: bool,
        user: &str,
    ) -> Result<ModelVersion> {
        let stage = canonical_stage(stage)?;
        let mut tx = self.begin_write().await?;
        tx_transition_stage(
            &mut tx,
            name,
            version,
            stage,
            archive_existing_versions,
            user,
            None,
        )
        .await?;
        tx.commit().await?;
        self.get_model_version(name, version).await
    }

    // -------------------------------------------------------------- aliases

    pub async fn set_registered_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: i64,
        user: &str,
    ) -> Result<()> {
        validate_alias(alias)?;
        self.require_registered_model(name).await?;
        let mut tx = self.begin_write().await?;
        tx_set_alias(&mut tx, name, alias, version, user, None).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_registered_model_alias(
        &self,
        name: &str,
        alias: &str,
        user: &str,
    ) -> Result<()> {
        validate_alias(alias)?;
        self.require_registered_model(name).await?;
        let mut tx = self.begin_write().await?;
        let previous: Option<i64> = alias_version(&mut *tx, name, alias).await?;
        let Some(previous) = previous else {
            return Err(MlflowError::not_found(format!(
                "Registered model alias {alias} not found."
            ))
            .into());
        };
        sqlx::query("DELETE FROM registered_model_aliases WHERE name = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        let mut record = entry(name, "alias_deleted", user);
        record.alias = Some(alias.to_string());
        record.from_version = Some(previous.to_string());
        ledger_write(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The version an alias points at. NB: a missing alias is 400 INVALID_PARAMETER_VALUE
    /// in MLflow, not 404.
    pub async fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion> {
        self.require_registered_model(name).await?;
        let version: Option<i64> = alias_version(&self.read, name, alias).await?;
        let version = version.ok_or_else(|| {
            Error::from(MlflowError::invalid(format!(
                "Registered model alias {alias} not found."
            )))
        })?;
        self.get_model_version(name, version).await
    }

    /// The promotion ledger of a model, oldest first.
    pub async fn registry_ledger(&self, name: &str) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT id, name, action, alias, from_version, to_version, from_stage, to_stage, user_id, timestamp, comment \
             FROM registry_ledger WHERE name = $1 ORDER BY id",
        )
        .bind(name)
        .fetch_all(&self.read)
        .await?;
        if rows.is_empty() {
            self.require_registered_model(name).await?;
        }
        rows.iter()
            .map(|r| {
                Ok(LedgerEntry {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    action: r.try_get(2)?,
                    alias: r.try_get(3)?,
                    from_version: r.try_get::<Option<i64>, _>(4)?.map(|v| v.to_string()),
                    to_version: r.try_get::<Option<i64>, _>(5)?.map(|v| v.to_string()),
                    from_stage: r.try_get(6)?,
                    to_stage: r.try_get(7)?,
                    user: r.try_get(8)?,
                    timestamp: r.try_get(9)?,
                    comment: r.try_get(10)?,
                })
            })
            .collect()
    }
}

/// Moves a version to `stage` inside `tx`, archiving the others in that stage when asked;
/// every change goes to the ledger.
pub(crate) async fn tx_transition_stage(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    version: i64,
    stage: &str,
    archive_existing_versions: bool,
    user: &str,
    comment: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    let from: Option<String> = sqlx::query_scalar(
        "SELECT current_stage FROM model_versions WHERE name = $1 AND version = $2 AND deleted = 0",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await?;
    let from = from.ok_or_else(|| version_not_found(name, version))?;
    if archive_existing_versions && matches!(stage, "Staging" | "Production") {
        let others: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM model_versions WHERE name = $1 AND current_stage = $2 AND version != $3 AND deleted = 0",
        )
        .bind(name)
        .bind(stage)
        .bind(version)
        .fetch_all(&mut **tx)
        .await?;
        for other in others {
            sqlx::query("UPDATE model_versions SET current_stage = 'Archived', last_updated_time = $1 WHERE name = $2 AND version = $3")
                .bind(now)
                .bind(name)
                .bind(other)
                .execute(&mut **tx)
                .await?;
            let mut record = entry(name, "stage_transition", user);
            record.to_version = Some(other.to_string());
            record.from_stage = Some(stage.to_string());
            record.to_stage = Some("Archived".into());
            record.comment = Some(format!("archived by the transition of version {version}"));
            ledger_write(tx, &record).await?;
        }
    }
    sqlx::query("UPDATE model_versions SET current_stage = $1, last_updated_time = $2 WHERE name = $3 AND version = $4")
        .bind(stage)
        .bind(now)
        .bind(name)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE registered_models SET last_updated_time = $1 WHERE name = $2")
        .bind(now)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    let mut record = entry(name, "stage_transition", user);
    record.to_version = Some(version.to_string());
    record.from_stage = Some(from);
    record.to_stage = Some(stage.to_string());
    record.comment = comment.map(str::to_string);
    ledger_write(tx, &record).await
}

/// Points `alias` at `version` inside `tx` and records the move; returns the version it
/// pointed at before.
pub(crate) async fn tx_set_alias(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    alias: &str,
    version: i64,
    user: &str,
    comment: Option<&str>,
) -> Result<Option<i64>> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM model_versions WHERE name = $1 AND version = $2 AND deleted = 0",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await?;
    exists.ok_or_else(|| version_not_found(name, version))?;
    let previous: Option<i64> = alias_version(&mut **tx, name, alias).await?;
    sqlx::query(
        "INSERT INTO registered_model_aliases (name, alias, version) VALUES ($1, $2, $3) \
         ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
    )
    .bind(name)
    .bind(alias)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    let mut record = entry(name, "alias_set", user);
    record.alias = Some(alias.to_string());
    record.from_version = previous.map(|v| v.to_string());
    record.to_version = Some(version.to_string());
    record.comment = comment.map(str::to_string);
    ledger_write(tx, &record).await?;
    Ok(previous)
}

/// The version an alias points at, if the alias exists.
async fn alias_version<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    name: &str,
    alias: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT version FROM registered_model_aliases WHERE name = $1 AND alias = $2",
    )
    .bind(name)
    .bind(alias)
    .fetch_optional(executor)
    .await?)
}

async fn upsert_model_tag(tx: &mut Transaction<'_, Any>, name: &str, tag: &KeyValue) -> Result<()> {
    sqlx::query(
        "INSERT INTO registered_model_tags (name, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(tag.key.as_str())
    .bind(tag.value.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_version_tag(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    version: i64,
    tag: &KeyValue,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO model_version_tags (name, version, key, value) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(version)
    .bind(tag.key.as_str())
    .bind(tag.value.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the registration on the logged model, in the tag MLflow uses for it.
async fn link_version_to_logged_model(
    tx: &mut Transaction<'_, Any>,
    model_id: &str,
    name: &str,
    version: i64,
) -> Result<()> {
    let current: Option<String> = sqlx::query_scalar(
        "SELECT value FROM logged_model_tags WHERE model_id = $1 AND key = 'mlflow.modelVersions'",
    )
    .bind(model_id)
    .fetch_optional(&mut **tx)
    .await?;
    let value = ctflow_core::registry::model_versions_tag(current.as_deref(), name, version);
    sqlx::query(
        "INSERT INTO logged_model_tags (model_id, key, value) VALUES ($1, 'mlflow.modelVersions', $2) \
         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(model_id)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A registry clause. NB: the prompt pseudo tag counts as `'false'` when absent, since the
/// client appends `tag.mlflow.prompt.is_prompt != 'true'` to every search.
fn registry_condition(
    sql: &mut Sql,
    clause: &Clause,
    name_column: &str,
    tag_table: &str,
    join: &str,
) -> String {
    match clause.entity {
        Entity::Tag => {
            let key = sql.text_arg(clause.key.clone());
            let cond = string_condition(sql, "t.value", clause.comparator, &clause.value);
            let exists = format!(
                "EXISTS (SELECT 1 FROM {tag_table} t WHERE {join} AND t.key = {key} AND {cond})"
            );
            if clause.key == PROMPT_TAG {
                let absent_matches = match (&clause.comparator, &clause.value) {
                    (Comparator::Ne, Value::Str(v)) => v != "false",
                    (Comparator::Eq, Value::Str(v)) => v == "false",
                    _ => false,
                };
                if absent_matches {
                    let key2 = sql.text_arg(clause.key.clone());
                    return format!(
                        "({exists} OR NOT EXISTS (SELECT 1 FROM {tag_table} t WHERE {join} AND t.key = {key2}))"
                    );
                }
            }
            exists
        }
        _ => string_condition(sql, name_column, clause.comparator, &clause.value),
    }
}
