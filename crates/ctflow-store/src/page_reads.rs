//! Search pages read whole on SQLite's own interface (`direct_read`): runs (for a search
//! page or a get), model versions and registered models.
//!
//! A page of 100 runs is a few thousand rows over seven tables. Through sqlx each table is
//! a trip to a pooled connection's worker thread and back (packed as one JSON row, see
//! `sql::json_rows_sql`), and the seven trips cost more than SQLite's reading. Here one
//! blocking thread reads them all inside one read transaction, so the page is also one
//! snapshot, and builds the runs as it steps the rows.
//!
//! The runs' ids travel as one JSON array (`json_each`): one cached statement per table,
//! whatever the page's size, and the array's index says which run a row belongs to.

use std::collections::{HashMap, HashSet};

use ctflow_core::entities::{
    Dataset, DatasetInput, KeyValue, MetricPoint, ModelInput, ModelOutput, Run, RunData, RunInfo,
    RunInputs, RunOutputs,
};
use ctflow_core::registry::{ModelVersion, RegisteredModel, RegisteredModelAlias};
use rusqlite::{Connection, Row};

use crate::direct_read::query_rows;
use crate::sql::{Arg, Sql};

const INFOS: &str = "SELECT j.key, r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, \
     r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage \
     FROM json_each(?1) j CROSS JOIN runs r ON r.run_uuid = j.value";
const METRICS: &str = "SELECT j.key, m.key, m.timestamp, m.step, m.value_bits \
     FROM json_each(?1) j CROSS JOIN latest_metrics m ON m.run_uuid = j.value";
const PARAMS: &str = "SELECT j.key, p.key, p.value \
     FROM json_each(?1) j CROSS JOIN params p ON p.run_uuid = j.value";
const TAGS: &str = "SELECT j.key, t.key, t.value \
     FROM json_each(?1) j CROSS JOIN tags t ON t.run_uuid = j.value";
const DATASET_INPUTS: &str = "SELECT j.key, ri.input_uuid, d.name, d.digest, d.source_type, \
     d.source, d.schema, d.profile \
     FROM json_each(?1) j CROSS JOIN run_inputs ri ON ri.run_uuid = j.value \
     JOIN datasets d ON d.dataset_uuid = ri.dataset_uuid ORDER BY j.key, d.name";
const INPUT_TAGS: &str = "SELECT key, value FROM run_input_tags WHERE input_uuid = ?1 ORDER BY key";
const MODEL_OUTPUTS: &str = "SELECT j.key, o.model_id, o.step \
     FROM json_each(?1) j CROSS JOIN run_outputs o ON o.run_uuid = j.value ORDER BY j.key, o.model_id";
const MODEL_INPUTS: &str = "SELECT j.key, i.model_id \
     FROM json_each(?1) j CROSS JOIN run_model_inputs i ON i.run_uuid = j.value \
     ORDER BY j.key, i.model_id";

/// The runs with these ids, in the ids' order; an id with no run is left out, and a
/// repeated id is read once.
pub(crate) fn read_runs(connection: &Connection, run_ids: &[String]) -> rusqlite::Result<Vec<Run>> {
    let mut seen = HashSet::with_capacity(run_ids.len());
    let ids: Vec<&str> = run_ids
        .iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect();
    let ids_json = json_array(&ids)?;
    // One snapshot for all the tables (a deferred transaction reads, never writes).
    let snapshot = connection.unchecked_transaction()?;
    let mut runs: Vec<Option<Run>> = vec![None; ids.len()];

    each_row(&snapshot, INFOS, &ids_json, |position, row| {
        let Some(slot) = runs.get_mut(position) else {
            return Ok(());
        };
        let run_id: String = row.get(1)?;
        *slot = Some(Run {
            info: RunInfo {
                run_uuid: run_id.clone(),
                run_name: row.get(2)?,
                experiment_id: row.get::<_, i64>(3)?.to_string(),
                user_id: row.get(4)?,
                status: row.get(5)?,
                start_time: row.get(6)?,
                end_time: row.get(7)?,
                artifact_uri: row.get(8)?,
                lifecycle_stage: row.get(9)?,
                run_id,
            },
            data: RunData::default(),
            inputs: RunInputs::default(),
            outputs: Some(RunOutputs::default()),
        });
        Ok(())
    })?;
    each_row(&snapshot, METRICS, &ids_json, |position, row| {
        if let Some(run) = filled_at(&mut runs, position) {
            run.data.metrics.push(MetricPoint {
                key: row.get(1)?,
                timestamp: row.get(2)?,
                step: row.get(3)?,
                value: f64::from_bits(row.get::<_, i64>(4)? as u64),
            });
        }
        Ok(())
    })?;
    each_row(&snapshot, PARAMS, &ids_json, |position, row| {
        if let Some(run) = filled_at(&mut runs, position) {
            run.data.params.push(key_value(row)?);
        }
        Ok(())
    })?;
    each_row(&snapshot, TAGS, &ids_json, |position, row| {
        if let Some(run) = filled_at(&mut runs, position) {
            run.data.tags.push(key_value(row)?);
        }
        Ok(())
    })?;
    let mut input_tags = snapshot.prepare_cached(INPUT_TAGS)?;
    each_row(&snapshot, DATASET_INPUTS, &ids_json, |position, row| {
        if let Some(run) = filled_at(&mut runs, position) {
            let input_id: String = row.get(1)?;
            let tags = input_tags
                .query_map([&input_id], |tag| {
                    Ok(KeyValue::new(
                        tag.get::<_, String>(0)?,
                        tag.get::<_, String>(1)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            run.inputs.dataset_inputs.push(DatasetInput {
                tags,
                dataset: Dataset {
                    name: row.get(2)?,
                    digest: row.get(3)?,
                    source_type: row.get(4)?,
                    source: row.get(5)?,
                    schema: row.get(6)?,
                    profile: row.get(7)?,
                },
            });
        }
        Ok(())
    })?;
    drop(input_tags);
    each_row(&snapshot, MODEL_OUTPUTS, &ids_json, |position, row| {
        if let Some(run) = filled_at(&mut runs, position) {
            run.outputs
                .get_or_insert_with(RunOutputs::default)
                .model_outputs
                .push(ModelOutput {
                    model_id: row.get(1)?,
                    step: row.get(2)?,
                });
        }
        Ok(())
    })?;
    each_row(&snapshot, MODEL_INPUTS, &ids_json, |position, row| {
        if let Some(run) = filled_at(&mut runs, position) {
            run.inputs.model_inputs.push(ModelInput {
                model_id: row.get(1)?,
            });
        }
        Ok(())
    })?;
    snapshot.commit()?;

    Ok(runs
        .into_iter()
        .flatten()
        .map(|mut run| {
            // Keyed tables come in key order already; the sort only makes it a promise.
            run.data.metrics.sort_by(|a, b| a.key.cmp(&b.key));
            run.data.params.sort_by(|a, b| a.key.cmp(&b.key));
            run.data.tags.sort_by(|a, b| a.key.cmp(&b.key));
            run
        })
        .collect())
}

const VERSION_TAGS: &str = "SELECT t.name, t.version, t.key, t.value \
     FROM json_each(?1) j CROSS JOIN model_version_tags t ON t.name = j.value";

/// The versions `page` selects (the registry's version columns, in its order: name,
/// version, created, updated, stage, description, source, run, status, run link, user),
/// in the page's order, each with its tags read in the same snapshot.
pub(crate) fn read_versions(
    connection: &Connection,
    page: &Sql,
) -> rusqlite::Result<Vec<ModelVersion>> {
    let snapshot = connection.unchecked_transaction()?;
    let versions = versions_with_tags(&snapshot, page)?;
    snapshot.commit()?;
    Ok(versions)
}

const MODELS: &str = "SELECT j.key, m.name, m.creation_time, m.last_updated_time, m.description \
     FROM json_each(?1) j CROSS JOIN registered_models m ON m.name = j.value";
const MODEL_TAGS: &str = "SELECT j.key, t.key, t.value \
     FROM json_each(?1) j CROSS JOIN registered_model_tags t ON t.name = j.value \
     ORDER BY j.key, t.key";
const MODEL_ALIASES: &str = "SELECT j.key, a.alias, a.version \
     FROM json_each(?1) j CROSS JOIN registered_model_aliases a ON a.name = j.value \
     ORDER BY j.key, a.alias";

/// The registered models with these names, in the names' order (a missing one left out),
/// with their tags, aliases and latest versions: `latest` selects the version columns (see
/// [`read_versions`]) of the models whose names are in the JSON array `$1`.
pub(crate) fn read_registered_models(
    connection: &Connection,
    names: &[String],
    latest: &str,
) -> rusqlite::Result<Vec<RegisteredModel>> {
    let names_json = json_array(names)?;
    let snapshot = connection.unchecked_transaction()?;
    let mut models: Vec<Option<RegisteredModel>> = vec![None; names.len()];
    each_row(&snapshot, MODELS, &names_json, |position, row| {
        if let Some(slot) = models.get_mut(position) {
            *slot = Some(RegisteredModel {
                name: row.get(1)?,
                creation_timestamp: row.get(2)?,
                last_updated_timestamp: row.get(3)?,
                description: row.get(4)?,
                latest_versions: Vec::new(),
                tags: Vec::new(),
                aliases: Vec::new(),
            });
        }
        Ok(())
    })?;
    each_row(&snapshot, MODEL_TAGS, &names_json, |position, row| {
        if let Some(model) = filled_at(&mut models, position) {
            model.tags.push(key_value(row)?);
        }
        Ok(())
    })?;
    each_row(&snapshot, MODEL_ALIASES, &names_json, |position, row| {
        if let Some(model) = filled_at(&mut models, position) {
            model.aliases.push(RegisteredModelAlias {
                alias: row.get(1)?,
                version: row.get::<_, i64>(2)?.to_string(),
            });
        }
        Ok(())
    })?;
    let mut latest = Sql::new(latest);
    latest.args.push(Arg::Text(names_json));
    let latest = versions_with_tags(&snapshot, &latest)?;
    snapshot.commit()?;
    let mut models: Vec<RegisteredModel> = models.into_iter().flatten().collect();
    for version in latest {
        if let Some(model) = models.iter_mut().find(|m| m.name == version.name) {
            model.latest_versions.push(version);
        }
    }
    Ok(models)
}

/// [`read_versions`] inside the caller's snapshot.
fn versions_with_tags(snapshot: &Connection, page: &Sql) -> rusqlite::Result<Vec<ModelVersion>> {
    let mut versions = query_rows(snapshot, page, |row| {
        Ok(ModelVersion {
            name: row.get(0)?,
            version: row.get::<_, i64>(1)?.to_string(),
            creation_timestamp: row.get(2)?,
            last_updated_timestamp: row.get(3)?,
            current_stage: row.get(4)?,
            description: row.get(5)?,
            source: row.get(6)?,
            run_id: row.get(7)?,
            status: row.get(8)?,
            run_link: row.get(9)?,
            user_id: row.get(10)?,
            tags: Vec::new(),
            aliases: Vec::new(),
        })
    })?;
    // A page holds many versions of few models: each model's tags are read once.
    let names: HashSet<&str> = versions.iter().map(|v| v.name.as_str()).collect();
    let names_json = json_array(&names)?;
    let mut tags: HashMap<(String, String), Vec<KeyValue>> = HashMap::new();
    let mut statement = snapshot.prepare_cached(VERSION_TAGS)?;
    let mut rows = statement.query([names_json])?;
    while let Some(row) = rows.next()? {
        tags.entry((row.get(0)?, row.get::<_, i64>(1)?.to_string()))
            .or_default()
            .push(key_value_at(row, 2)?);
    }
    drop(rows);
    drop(statement);
    for version in &mut versions {
        if let Some(mut found) = tags.remove(&(version.name.clone(), version.version.clone())) {
            found.sort_by(|a, b| a.key.cmp(&b.key));
            version.tags = found;
        }
    }
    Ok(versions)
}

/// Steps `sql` with the ids' JSON array bound, handing each row and its run's position on.
fn each_row(
    connection: &Connection,
    sql: &str,
    ids_json: &str,
    mut visit: impl FnMut(usize, &Row<'_>) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query([ids_json])?;
    while let Some(row) = rows.next()? {
        let position = usize::try_from(row.get::<_, i64>(0)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })?;
        visit(position, row)?;
    }
    Ok(())
}

/// Values as one JSON array, the one argument `json_each` reads them from.
fn json_array<T: serde::Serialize + ?Sized>(values: &T) -> rusqlite::Result<String> {
    serde_json::to_string(values).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The item read for the id at `position`, if its row was found.
fn filled_at<T>(items: &mut [Option<T>], position: usize) -> Option<&mut T> {
    items.get_mut(position).and_then(Option::as_mut)
}

fn key_value(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    key_value_at(row, 1)
}

fn key_value_at(row: &Row<'_>, first: usize) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue::new(
        row.get::<_, String>(first)?,
        row.get::<_, String>(first + 1)?,
    ))
}
