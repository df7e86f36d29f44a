//! MLflow 3 traces: trace records with their tags and metadata, spans (logged over OTLP),
//! assessments, links to runs, and trace search.
//!
//! A trace's record can arrive before or after its spans: the client reports the finished
//! trace (`StartTraceV3`) and exports spans independently, in either order. Whichever comes
//! first creates the record; the report then overwrites what spans implied (its times,
//! state and metadata are the client's own), and spans arriving after the report only fill
//! in what the report left unset.

use std::collections::{BTreeMap, HashMap};

use ctflow_core::MlflowError;
use ctflow_core::filter::{Comparator, TraceClause, TraceKey, Value as FilterValue};
use ctflow_core::page_token;
use ctflow_core::traces::{
    ARTIFACT_LOCATION_TAG, INFO_FINALIZED_METADATA, SOURCE_RUN_METADATA, SPANS_IN_TRACKING_STORE,
    SPANS_LOCATION_TAG, SpanRecord, TRACE_NAME_TAG, TraceInfo, TraceState, apply_assessment_update,
    assessment_json, preview, state_from_root_span,
};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::Store;
use crate::error::Result;
use crate::experiments::{numeric_op, string_condition};
use crate::sql::{Arg, Sql, bind_all, cut_page, values_groups};

/// A `traces/search` request, validated.
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    /// The experiments to search.
    pub experiment_ids: Vec<i64>,
    /// Clauses, all of which must hold.
    pub filter: Vec<TraceClause>,
    /// Order keys with their direction (newest first when empty).
    pub order_by: Vec<(TraceKey, bool)>,
    /// Page size.
    pub max_results: i64,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

/// What `DeleteTraces` deletes: the named traces, or the oldest ones up to a time.
#[derive(Debug, Clone)]
pub enum TraceDeletion {
    /// These traces (of the experiment).
    Ids(Vec<String>),
    /// Traces that started at or before `max_timestamp_ms`, oldest first, at most `max_traces`.
    Before {
        /// Epoch ms.
        max_timestamp_ms: i64,
        /// A limit on how many.
        max_traces: Option<i64>,
    },
}

fn trace_not_found(trace_id: &str) -> MlflowError {
    MlflowError::not_found(format!("Trace with ID '{trace_id}' not found."))
}

/// NB: MLflow moves a trace to the experiment a later report or span names; ctflow keeps
/// it where it was first recorded, so that writing to one experiment cannot take a trace
/// out of another.
fn other_experiment(trace_id: &str, owner: i64) -> MlflowError {
    MlflowError::invalid(format!(
        "Trace '{trace_id}' belongs to experiment {owner}; its spans and report must name that experiment"
    ))
}

fn assessment_not_found(trace_id: &str, assessment_id: &str) -> MlflowError {
    MlflowError::not_found(format!(
        "Assessment with ID '{assessment_id}' not found for trace '{trace_id}'."
    ))
}

/// Trace tags a client may not set or delete: the server decides where a trace's files
/// and spans are (a moved artifact location would let a reader of the trace read
/// elsewhere).
pub const SERVER_OWNED_TRACE_TAGS: &[&str] = &[ARTIFACT_LOCATION_TAG, SPANS_LOCATION_TAG];

fn attribute_column(key: &TraceKey) -> &'static str {
    match key {
        TraceKey::RequestTime => "t.request_time",
        TraceKey::ExecutionTime => "t.execution_duration",
        TraceKey::EndTime => "(t.request_time + COALESCE(t.execution_duration, 0))",
        TraceKey::TraceId => "t.trace_id",
        TraceKey::ClientRequestId => "t.client_request_id",
        _ => "t.state",
    }
}

fn key_value_condition(sql: &mut Sql, table: &str, key: &str, clause: &TraceClause) -> String {
    let k = sql.text_arg(key);
    let on = format!("x.trace_id = t.trace_id AND x.key = {k}");
    match clause.comparator {
        Comparator::IsNull => format!("NOT EXISTS (SELECT 1 FROM {table} x WHERE {on})"),
        Comparator::IsNotNull => format!("EXISTS (SELECT 1 FROM {table} x WHERE {on})"),
        cmp => {
            let cond = string_condition(sql, "x.value", cmp, &clause.value);
            format!("EXISTS (SELECT 1 FROM {table} x WHERE {on} AND {cond})")
        }
    }
}

fn trace_condition(sql: &mut Sql, clause: &TraceClause) -> String {
    match &clause.key {
        TraceKey::Tag(key) => key_value_condition(sql, "trace_tags", key, clause),
        TraceKey::Metadata(key) => key_value_condition(sql, "trace_metadata", key, clause),
        TraceKey::Name => key_value_condition(sql, "trace_tags", TRACE_NAME_TAG, clause),
        TraceKey::RunId => {
            let linked = string_condition(sql, "x.run_id", clause.comparator, &clause.value);
            let source = key_value_condition(sql, "trace_metadata", SOURCE_RUN_METADATA, clause);
            format!(
                "(EXISTS (SELECT 1 FROM trace_runs x WHERE x.trace_id = t.trace_id AND {linked}) OR {source})"
            )
        }
        TraceKey::Text => {
            let cond = string_condition(sql, "s.content", clause.comparator, &clause.value);
            format!("EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND {cond})")
        }
        TraceKey::SpanName | TraceKey::SpanType => {
            let column = if clause.key == TraceKey::SpanName {
                "s.name"
            } else {
                "s.span_type"
            };
            let cond = string_condition(sql, column, clause.comparator, &clause.value);
            format!("EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND {cond})")
        }
        key if key.is_numeric() => match clause.value {
            FilterValue::Number(n) => {
                let p = sql.arg(Arg::Float(n));
                format!(
                    "{} {} {p}",
                    attribute_column(key),
                    numeric_op(clause.comparator)
                )
            }
            _ => "1 = 0".into(),
        },
        key => string_condition(sql, attribute_column(key), clause.comparator, &clause.value),
    }
}

fn order_term(key: &TraceKey, ascending: bool) -> String {
    let dir = if ascending { "ASC" } else { "DESC" };
    match key {
        TraceKey::Name => format!(
            "(SELECT x.value FROM trace_tags x WHERE x.trace_id = t.trace_id AND x.key = '{TRACE_NAME_TAG}') {dir}"
        ),
        key => format!("{} {dir}", attribute_column(key)),
    }
}

/// Spans per INSERT: 9 parameters each, well under SQLite's 32,766.
const SPANS_PER_STATEMENT: usize = 200;

/// Rows of `(trace_id, key, value)` grouped by trace.
type KeyValues = HashMap<String, BTreeMap<String, String>>;

impl Store {
    fn trace_artifact_location(experiment_location: &str, trace_id: &str) -> String {
        format!(
            "{}/traces/{trace_id}/artifacts",
            experiment_location.trim_end_matches('/')
        )
    }

    async fn upsert_key_values(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        table: &str,
        trace_id: &str,
        pairs: &[(String, String)],
    ) -> Result<()> {
        for (key, value) in pairs {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (trace_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (trace_id, key) DO UPDATE SET value = excluded.value"
            )))
            .bind(trace_id)
            .bind(key.as_str())
            .bind(value.as_str())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn trace_exists_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        trace_id: &str,
    ) -> Result<Option<(i64, i64, Option<i64>, String)>> {
        let row = sqlx::query(
            "SELECT experiment_id, request_time, execution_duration, state FROM traces WHERE trace_id = $1",
        )
        .bind(trace_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .transpose()
    }

    /// Records a finished trace as the client reports it (`StartTraceV3`): creates the
    /// record, or overwrites the one its spans created. The server sets the artifact
    /// location and marks the record final.
    pub async fn start_trace(&self, info: &TraceInfo) -> Result<TraceInfo> {
        let experiment_location = self.require_active_experiment(info.experiment_id).await?;
        let mut tags: Vec<(String, String)> = info
            .tags
            .iter()
            .filter(|(k, _)| !SERVER_OWNED_TRACE_TAGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tags.push((
            ARTIFACT_LOCATION_TAG.to_string(),
            Self::trace_artifact_location(&experiment_location, &info.trace_id),
        ));
        let mut metadata: Vec<(String, String)> = info
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.push((INFO_FINALIZED_METADATA.to_string(), "true".to_string()));

        let mut tx = self.begin_write().await?;
        if let Some((owner, ..)) = Self::trace_exists_in(&mut tx, &info.trace_id).await?
            && owner != info.experiment_id
        {
            return Err(other_experiment(&info.trace_id, owner).into());
        }
        sqlx::query(
            "INSERT INTO traces (trace_id, experiment_id, request_time, execution_duration, state, \
             client_request_id, request_preview, response_preview) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (trace_id) DO UPDATE SET experiment_id = excluded.experiment_id, \
             request_time = excluded.request_time, execution_duration = excluded.execution_duration, \
             state = excluded.state, client_request_id = excluded.client_request_id, \
             request_preview = COALESCE(excluded.request_preview, traces.request_preview), \
             response_preview = COALESCE(excluded.response_preview, traces.response_preview)",
        )
        .bind(info.trace_id.as_str())
        .bind(info.experiment_id)
        .bind(info.request_time)
        .bind(info.execution_duration)
        .bind(info.state.as_str())
        .bind(info.client_request_id.as_deref())
        .bind(info.request_preview.as_deref())
        .bind(info.response_preview.as_deref())
        .execute(&mut *tx)
        .await?;
        Self::upsert_key_values(&mut tx, "trace_tags", &info.trace_id, &tags).await?;
        Self::upsert_key_values(&mut tx, "trace_metadata", &info.trace_id, &metadata).await?;
        let now = ctflow_core::now_ms();
        for assessment in &info.assessments {
            if let Value::Object(fields) = assessment {
                Self::insert_assessment(&mut tx, &info.trace_id, fields.clone(), now).await?;
            }
        }
        tx.commit().await?;
        self.get_trace_info(&info.trace_id).await
    }

    /// `StartTrace` (v2): a new in-progress trace with a server-made id.
    pub async fn start_trace_v2(
        &self,
        experiment_id: i64,
        timestamp_ms: i64,
        metadata: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<TraceInfo> {
        let experiment_location = self.require_active_experiment(experiment_id).await?;
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let mut tags: Vec<(String, String)> = tags
            .iter()
            .filter(|(k, _)| !SERVER_OWNED_TRACE_TAGS.contains(&k.as_str()))
            .cloned()
            .collect();
        tags.push((
            ARTIFACT_LOCATION_TAG.to_string(),
            Self::trace_artifact_location(&experiment_location, &trace_id),
        ));
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO traces (trace_id, experiment_id, request_time, execution_duration, state) \
             VALUES ($1, $2, $3, NULL, $4)",
        )
        .bind(trace_id.as_str())
        .bind(experiment_id)
        .bind(timestamp_ms)
        .bind(TraceState::InProgress.as_str())
        .execute(&mut *tx)
        .await?;
        Self::upsert_key_values(&mut tx, "trace_tags", &trace_id, &tags).await?;
        Self::upsert_key_values(&mut tx, "trace_metadata", &trace_id, metadata).await?;
        tx.commit().await?;
        self.get_trace_info(&trace_id).await
    }

    /// `EndTrace` (v2): finishes a trace, merging metadata and tags into what it has.
    pub async fn end_trace_v2(
        &self,
        trace_id: &str,
        timestamp_ms: i64,
        state: TraceState,
        metadata: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<TraceInfo> {
        let tags: Vec<(String, String)> = tags
            .iter()
            .filter(|(k, _)| !SERVER_OWNED_TRACE_TAGS.contains(&k.as_str()))
            .cloned()
            .collect();
        let mut tx = self.begin_write().await?;
        let (_, request_time, _, _) = Self::trace_exists_in(&mut tx, trace_id)
            .await?
            .ok_or_else(|| trace_not_found(trace_id))?;
        sqlx::query("UPDATE traces SET execution_duration = $1, state = $2 WHERE trace_id = $3")
            .bind(timestamp_ms.saturating_sub(request_time))
            .bind(state.as_str())
            .bind(trace_id)
            .execute(&mut *tx)
            .await?;
        Self::upsert_key_values(&mut tx, "trace_tags", trace_id, &tags).await?;
        Self::upsert_key_values(&mut tx, "trace_metadata", trace_id, metadata).await?;
        tx.commit().await?;
        self.get_trace_info(trace_id).await
    }

    /// Stores spans exported over OTLP to `experiment_id` (a trace that already has a
    /// record keeps its experiment). Creates the records of traces not seen yet; marks
    /// every touched trace's spans as in the tracking store.
    pub async fn log_spans(&self, experiment_id: i64, spans: &[SpanRecord]) -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        let _timer = self.timer("log_spans");
        let experiment_location = self.require_active_experiment(experiment_id).await?;
        let mut by_trace: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
        for span in spans {
            by_trace
                .entry(span.trace_id.as_str())
                .or_default()
                .push(span);
        }
        let mut tx = self.begin_write().await?;
        for (trace_id, trace_spans) in by_trace {
            let start_ms = trace_spans
                .iter()
                .map(|s| s.start_time_ns / 1_000_000)
                .min()
                .unwrap_or(0);
            let end_ms = trace_spans
                .iter()
                .filter_map(|s| s.end_time_ns)
                .max()
                .map(|ns| ns / 1_000_000);
            let root = trace_spans.iter().find(|s| s.parent_span_id.is_none());
            let root_state = root.map(|r| state_from_root_span(r.status));
            let finalized: bool = sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM trace_metadata WHERE trace_id = $1 AND key = $2",
            )
            .bind(trace_id)
            .bind(INFO_FINALIZED_METADATA)
            .fetch_one(&mut *tx)
            .await?
                > 0;
            match Self::trace_exists_in(&mut tx, trace_id).await? {
                None => {
                    sqlx::query(
                        "INSERT INTO traces (trace_id, experiment_id, request_time, execution_duration, state) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(trace_id)
                    .bind(experiment_id)
                    .bind(start_ms)
                    .bind(end_ms.map(|end| end - start_ms))
                    .bind(root_state.unwrap_or(TraceState::InProgress).as_str())
                    .execute(&mut *tx)
                    .await?;
                    let location = Self::trace_artifact_location(&experiment_location, trace_id);
                    Self::upsert_key_values(
                        &mut tx,
                        "trace_tags",
                        trace_id,
                        &[(ARTIFACT_LOCATION_TAG.to_string(), location)],
                    )
                    .await?;
                }
                Some((owner, request_time, duration, state)) => {
                    if owner != experiment_id {
                        return Err(other_experiment(trace_id, owner).into());
                    }
                    if !finalized {
                        let new_start = request_time.min(start_ms);
                        let old_end = duration.map(|d| request_time + d);
                        let new_end = match (old_end, end_ms) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                        sqlx::query(
                            "UPDATE traces SET request_time = $1, execution_duration = $2 WHERE trace_id = $3",
                        )
                        .bind(new_start)
                        .bind(new_end.map(|end| end - new_start))
                        .bind(trace_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let unsettled = state == TraceState::InProgress.as_str()
                        || state == TraceState::Unspecified.as_str();
                    if let (true, Some(root_state)) = (unsettled, root_state) {
                        sqlx::query("UPDATE traces SET state = $1 WHERE trace_id = $2")
                            .bind(root_state.as_str())
                            .bind(trace_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            if let Some(root) = root {
                sqlx::query(
                    "UPDATE traces SET request_preview = COALESCE(request_preview, $1), \
                     response_preview = COALESCE(response_preview, $2) WHERE trace_id = $3",
                )
                .bind(root.inputs.as_deref().map(preview))
                .bind(root.outputs.as_deref().map(preview))
                .bind(trace_id)
                .execute(&mut *tx)
                .await?;
                let tags: Vec<(String, String)> = root
                    .trace_tags
                    .iter()
                    .filter(|(k, _)| !SERVER_OWNED_TRACE_TAGS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                Self::upsert_key_values(&mut tx, "trace_tags", trace_id, &tags).await?;
            }
            Self::upsert_key_values(
                &mut tx,
                "trace_tags",
                trace_id,
                &[(
                    SPANS_LOCATION_TAG.to_string(),
                    SPANS_IN_TRACKING_STORE.to_string(),
                )],
            )
            .await?;
            Self::upsert_spans(&mut tx, self.backend(), &trace_spans).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes spans in multi-row statements (a span sent again replaces its row).
    async fn upsert_spans(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        backend: crate::Backend,
        spans: &[&SpanRecord],
    ) -> Result<()> {
        // NB: one statement may not name a row twice (PostgreSQL refuses): the last copy of
        // a span in the batch wins.
        let mut unique: Vec<&SpanRecord> = Vec::with_capacity(spans.len());
        for span in spans.iter().rev() {
            if !unique.iter().any(|s| s.span_id == span.span_id) {
                unique.push(span);
            }
        }
        unique.reverse();
        for chunk in unique.chunks(SPANS_PER_STATEMENT) {
            let text = format!(
                "INSERT INTO spans (trace_id, span_id, parent_span_id, name, span_type, status, \
                 start_time_ns, end_time_ns, content) VALUES {} \
                 ON CONFLICT (trace_id, span_id) DO UPDATE SET parent_span_id = excluded.parent_span_id, \
                 name = excluded.name, span_type = excluded.span_type, status = excluded.status, \
                 start_time_ns = excluded.start_time_ns, end_time_ns = excluded.end_time_ns, \
                 content = excluded.content",
                values_groups(backend, chunk.len(), 9, 1)
            );
            let mut args = Vec::with_capacity(chunk.len() * 9);
            for span in chunk {
                args.push(Arg::Text(span.trace_id.clone()));
                args.push(Arg::Text(span.span_id.clone()));
                args.push(span.parent_span_id.clone().map_or(Arg::NullText, Arg::Text));
                args.push(Arg::Text(span.name.clone()));
                args.push(span.span_type.clone().map_or(Arg::NullText, Arg::Text));
                args.push(Arg::Text(span.status.proto_name().to_string()));
                args.push(Arg::Int(span.start_time_ns));
                args.push(span.end_time_ns.map_or(Arg::NullInt, Arg::Int));
                args.push(Arg::Text(span.content.clone()));
            }
            bind_all(sqlx::query(sqlx::AssertSqlSafe(text)), &args)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn key_values_of(&self, table: &str, ids: &[String]) -> Result<KeyValues> {
        let mut sql = Sql::in_order(self.backend());
        let list = sql.text_list(ids.iter().cloned());
        sql.text = format!("SELECT trace_id, key, value FROM {table} WHERE trace_id IN {list}");
        let mut out: KeyValues = HashMap::new();
        for row in sql.query().fetch_all(&self.read).await? {
            out.entry(row.try_get(0)?)
                .or_default()
                .insert(row.try_get(1)?, row.try_get(2)?);
        }
        Ok(out)
    }

    async fn assessments_of(&self, ids: &[String]) -> Result<HashMap<String, Vec<Value>>> {
        let mut sql = Sql::in_order(self.backend());
        let list = sql.text_list(ids.iter().cloned());
        sql.text = format!(
            "SELECT assessment_id, trace_id, valid, create_time, last_update_time, fields \
             FROM assessments WHERE trace_id IN {list} ORDER BY create_time, assessment_id"
        );
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for row in sql.query().fetch_all(&self.read).await? {
            let trace_id: String = row.try_get(1)?;
            let value = assessment_from_row(&row)?;
            out.entry(trace_id).or_default().push(value);
        }
        Ok(out)
    }

    /// The records of these traces with their tags, metadata and assessments, in the
    /// order asked for; ids without a trace are left out.
    pub async fn trace_infos(&self, ids: &[String]) -> Result<Vec<TraceInfo>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::in_order(self.backend());
        let list = sql.text_list(ids.iter().cloned());
        sql.text = format!(
            "SELECT trace_id, experiment_id, request_time, execution_duration, state, \
             client_request_id, request_preview, response_preview FROM traces WHERE trace_id IN {list}"
        );
        let rows = sql.query().fetch_all(&self.read).await?;
        let mut tags = self.key_values_of("trace_tags", ids).await?;
        let mut metadata = self.key_values_of("trace_metadata", ids).await?;
        let mut assessments = self.assessments_of(ids).await?;
        let mut found: HashMap<String, TraceInfo> = HashMap::with_capacity(rows.len());
        for row in rows {
            let trace_id: String = row.try_get(0)?;
            let state: String = row.try_get(4)?;
            found.insert(
                trace_id.clone(),
                TraceInfo {
                    experiment_id: row.try_get(1)?,
                    request_time: row.try_get(2)?,
                    execution_duration: row.try_get(3)?,
                    state: TraceState::parse(&state).unwrap_or(TraceState::Unspecified),
                    client_request_id: row.try_get(5)?,
                    request_preview: row.try_get(6)?,
                    response_preview: row.try_get(7)?,
                    tags: tags.remove(&trace_id).unwrap_or_default(),
                    metadata: metadata.remove(&trace_id).unwrap_or_default(),
                    assessments: assessments.remove(&trace_id).unwrap_or_default(),
                    trace_id,
                },
            );
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// One trace's record, or not-found.
    pub async fn get_trace_info(&self, trace_id: &str) -> Result<TraceInfo> {
        self.trace_infos(&[trace_id.to_string()])
            .await?
            .pop()
            .ok_or_else(|| trace_not_found(trace_id).into())
    }

    /// The stored span dicts (JSON text) of these traces: the root first, then by start.
    pub async fn trace_spans(&self, ids: &[String]) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut sql = Sql::in_order(self.backend());
        let list = sql.text_list(ids.iter().cloned());
        sql.text = format!(
            "SELECT trace_id, content FROM spans WHERE trace_id IN {list} \
             ORDER BY trace_id, CASE WHEN parent_span_id IS NULL THEN 0 ELSE 1 END, start_time_ns, span_id"
        );
        for row in sql.query().fetch_all(&self.read).await? {
            out.entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        Ok(out)
    }

    fn trace_where(&self, sql: &mut Sql, experiment_ids: &[i64], filter: &[TraceClause]) -> String {
        let experiments: Vec<String> = experiment_ids.iter().map(|id| sql.int_arg(*id)).collect();
        let mut conditions = vec![format!("t.experiment_id IN ({})", experiments.join(", "))];
        for clause in filter {
            conditions.push(trace_condition(sql, clause));
        }
        conditions.join(" AND ")
    }

    /// A page of trace records matching a search, newest first unless ordered otherwise.
    pub async fn search_traces(
        &self,
        search: &TraceSearch,
    ) -> Result<(Vec<TraceInfo>, Option<String>)> {
        let _timer = self.timer("search_traces");
        let offset = page_token::decode(search.page_token.as_deref())?;
        if search.experiment_ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut sql = Sql::new("");
        let condition = self.trace_where(&mut sql, &search.experiment_ids, &search.filter);
        let mut terms: Vec<String> = search
            .order_by
            .iter()
            .map(|(key, ascending)| order_term(key, *ascending))
            .collect();
        if !search
            .order_by
            .iter()
            .any(|(key, _)| *key == TraceKey::RequestTime)
        {
            terms.push("t.request_time DESC".into());
        }
        terms.push("t.trace_id ASC".into());
        let limit = sql.int_arg(search.max_results.saturating_add(1));
        let off = sql.int_arg(offset);
        sql.text = format!(
            "SELECT t.trace_id FROM traces t WHERE {condition} ORDER BY {} LIMIT {limit} OFFSET {off}",
            terms.join(", ")
        );
        let mut ids: Vec<String> = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let next = cut_page(&mut ids, search.max_results, offset);
        Ok((self.trace_infos(&ids).await?, next))
    }

    /// How many traces of these experiments match a filter.
    pub async fn count_traces(
        &self,
        experiment_ids: &[i64],
        filter: &[TraceClause],
    ) -> Result<u64> {
        if experiment_ids.is_empty() {
            return Ok(0);
        }
        let mut sql = Sql::new("");
        let condition = self.trace_where(&mut sql, experiment_ids, filter);
        sql.text = format!("SELECT COUNT(*) FROM traces t WHERE {condition}");
        let count: i64 = sql.query().fetch_one(&self.read).await?.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// `(state, count, total execution ms, min, max)` of the matching traces grouped by
    /// `group` (`state` or the trace name; one group when `None`).
    pub async fn trace_groups(
        &self,
        experiment_ids: &[i64],
        filter: &[TraceClause],
        group: Option<TraceKey>,
        time_range: (Option<i64>, Option<i64>),
    ) -> Result<Vec<TraceGroup>> {
        if experiment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new("");
        let mut condition = self.trace_where(&mut sql, experiment_ids, filter);
        if let Some(start) = time_range.0 {
            let p = sql.int_arg(start);
            condition.push_str(&format!(" AND t.request_time >= {p}"));
        }
        if let Some(end) = time_range.1 {
            let p = sql.int_arg(end);
            condition.push_str(&format!(" AND t.request_time < {p}"));
        }
        let dimension = match group {
            Some(TraceKey::Name) => format!(
                "(SELECT x.value FROM trace_tags x WHERE x.trace_id = t.trace_id AND x.key = '{TRACE_NAME_TAG}')"
            ),
            Some(_) => "t.state".into(),
            None => "''".into(),
        };
        sql.text = format!(
            "SELECT {dimension} AS dim, COUNT(*), SUM(t.execution_duration), MIN(t.execution_duration), \
             MAX(t.execution_duration) FROM traces t WHERE {condition} GROUP BY dim ORDER BY dim"
        );
        let mut groups = Vec::new();
        for row in sql.query().fetch_all(&self.read).await? {
            groups.push(TraceGroup {
                dimension: row.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                count: row.try_get(1)?,
                total_ms: row.try_get::<Option<i64>, _>(2)?,
                min_ms: row.try_get(3)?,
                max_ms: row.try_get(4)?,
            });
        }
        Ok(groups)
    }

    /// Deletes traces of an experiment with their spans, tags, metadata, assessments and
    /// run links; returns how many traces went.
    pub async fn delete_traces(&self, experiment_id: i64, which: &TraceDeletion) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<String> = match which {
            TraceDeletion::Ids(ids) if ids.is_empty() => Vec::new(),
            TraceDeletion::Ids(ids) => {
                let mut sql = Sql::in_order(self.backend());
                let e = sql.int_arg(experiment_id);
                let list = sql.text_list(ids.iter().cloned());
                sql.text = format!(
                    "SELECT trace_id FROM traces WHERE experiment_id = {e} AND trace_id IN {list}"
                );
                sql.query()
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<std::result::Result<_, _>>()?
            }
            TraceDeletion::Before {
                max_timestamp_ms,
                max_traces,
            } => sqlx::query(
                "SELECT trace_id FROM traces WHERE experiment_id = $1 AND request_time <= $2 \
                 ORDER BY request_time ASC, trace_id ASC LIMIT $3",
            )
            .bind(experiment_id)
            .bind(*max_timestamp_ms)
            .bind(max_traces.unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?,
        };
        for chunk in ids.chunks(500) {
            for table in [
                "spans",
                "trace_tags",
                "trace_metadata",
                "assessments",
                "trace_runs",
                "traces",
            ] {
                let mut sql = Sql::in_order(self.backend());
                let list = sql.text_list(chunk.iter().cloned());
                sql.text = format!("DELETE FROM {table} WHERE trace_id IN {list}");
                sql.query().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn require_trace(&self, trace_id: &str) -> Result<()> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT experiment_id FROM traces WHERE trace_id = $1")
                .bind(trace_id)
                .fetch_optional(&self.read)
                .await?;
        found
            .map(|_| ())
            .ok_or_else(|| trace_not_found(trace_id).into())
    }

    /// Sets a tag on a trace.
    pub async fn set_trace_tag(&self, trace_id: &str, key: &str, value: &str) -> Result<()> {
        check_tag_mutation(key, "set")?;
        let mut tx = self.begin_write().await?;
        Self::trace_exists_in(&mut tx, trace_id)
            .await?
            .ok_or_else(|| trace_not_found(trace_id))?;
        Self::upsert_key_values(
            &mut tx,
            "trace_tags",
            trace_id,
            &[(key.to_string(), value.to_string())],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a tag of a trace; a tag it does not have is not-found.
    pub async fn delete_trace_tag(&self, trace_id: &str, key: &str) -> Result<()> {
        check_tag_mutation(key, "deleted")?;
        self.require_trace(trace_id).await?;
        let deleted = sqlx::query("DELETE FROM trace_tags WHERE trace_id = $1 AND key = $2")
            .bind(trace_id)
            .bind(key)
            .execute(&self.write)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(MlflowError::not_found(format!(
                "No trace tag with key '{key}' for trace with ID '{trace_id}'"
            ))
            .into());
        }
        Ok(())
    }

    /// Links traces to a run (linking twice is one link). As in MLflow, the traces need
    /// not be recorded yet: a client links a trace right after it ends, while its export
    /// may still be on the way.
    pub async fn link_traces_to_run(&self, trace_ids: &[String], run_id: &str) -> Result<()> {
        self.get_run(run_id).await?;
        for trace_id in trace_ids {
            ctflow_core::traces::validate_trace_id(trace_id)?;
        }
        let mut tx = self.begin_write().await?;
        for trace_id in trace_ids {
            sqlx::query(
                "INSERT INTO trace_runs (trace_id, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(trace_id.as_str())
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_assessment(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        trace_id: &str,
        mut fields: Map<String, Value>,
        now: i64,
    ) -> Result<Value> {
        let assessment_id = format!("a-{}", uuid::Uuid::new_v4().simple());
        let create_time = timestamp_field(&fields, "create_time")?.unwrap_or(now);
        let update_time = timestamp_field(&fields, "last_update_time")?.unwrap_or(create_time);
        fields.remove("create_time");
        fields.remove("last_update_time");
        let name = fields
            .get("assessment_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let overrides = fields
            .get("overrides")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .map(str::to_string);
        if let Some(overridden) = &overrides {
            let updated = sqlx::query(
                "UPDATE assessments SET valid = 0 WHERE assessment_id = $1 AND trace_id = $2",
            )
            .bind(overridden.as_str())
            .bind(trace_id)
            .execute(&mut **tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(assessment_not_found(trace_id, overridden).into());
            }
        }
        let text = serde_json::to_string(&fields)
            .map_err(|e| MlflowError::invalid(format!("Invalid assessment: {e}")))?;
        sqlx::query(
            "INSERT INTO assessments (assessment_id, trace_id, name, valid, overrides, create_time, \
             last_update_time, fields) VALUES ($1, $2, $3, 1, $4, $5, $6, $7)",
        )
        .bind(assessment_id.as_str())
        .bind(trace_id)
        .bind(name.as_str())
        .bind(overrides.as_deref())
        .bind(create_time)
        .bind(update_time)
        .bind(text.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(assessment_json(
            &assessment_id,
            trace_id,
            true,
            create_time,
            update_time,
            &fields,
        ))
    }

    /// Adds an assessment to a trace. One that overrides another makes that one invalid.
    pub async fn create_assessment(
        &self,
        trace_id: &str,
        fields: Map<String, Value>,
    ) -> Result<Value> {
        let mut tx = self.begin_write().await?;
        Self::trace_exists_in(&mut tx, trace_id)
            .await?
            .ok_or_else(|| trace_not_found(trace_id))?;
        let created =
            Self::insert_assessment(&mut tx, trace_id, fields, ctflow_core::now_ms()).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// One assessment of a trace.
    pub async fn get_assessment(&self, trace_id: &str, assessment_id: &str) -> Result<Value> {
        let row = sqlx::query(
            "SELECT assessment_id, trace_id, valid, create_time, last_update_time, fields \
             FROM assessments WHERE assessment_id = $1 AND trace_id = $2",
        )
        .bind(assessment_id)
        .bind(trace_id)
        .fetch_optional(&self.read)
        .await?;
        match row {
            Some(row) => assessment_from_row(&row),
            None => {
                self.require_trace(trace_id).await?;
                Err(assessment_not_found(trace_id, assessment_id).into())
            }
        }
    }

    /// Updates the fields of an assessment the mask names.
    pub async fn update_assessment(
        &self,
        trace_id: &str,
        assessment_id: &str,
        update: &Value,
        update_mask: &str,
    ) -> Result<Value> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT valid, fields FROM assessments WHERE assessment_id = $1 AND trace_id = $2",
        )
        .bind(assessment_id)
        .bind(trace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| assessment_not_found(trace_id, assessment_id))?;
        let mut valid = row.try_get::<i64, _>(0)? != 0;
        let text: String = row.try_get(1)?;
        let mut fields: Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| crate::Error::Corrupt(format!("assessment {assessment_id}: {e}")))?;
        apply_assessment_update(&mut fields, update, update_mask)?;
        if let Some(flag) = fields.remove("valid") {
            valid = flag.as_bool().unwrap_or(valid);
        }
        let name = fields
            .get("assessment_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let text = serde_json::to_string(&fields)
            .map_err(|e| MlflowError::invalid(format!("Invalid assessment: {e}")))?;
        sqlx::query(
            "UPDATE assessments SET name = $1, valid = $2, fields = $3, last_update_time = $4 \
             WHERE assessment_id = $5",
        )
        .bind(name.as_str())
        .bind(i64::from(valid))
        .bind(text.as_str())
        .bind(ctflow_core::now_ms())
        .bind(assessment_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_assessment(trace_id, assessment_id).await
    }

    /// Deletes an assessment; the one it overrode, if any, is valid again.
    pub async fn delete_assessment(&self, trace_id: &str, assessment_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let overrides: Option<Option<String>> = sqlx::query_scalar(
            "SELECT overrides FROM assessments WHERE assessment_id = $1 AND trace_id = $2",
        )
        .bind(assessment_id)
        .bind(trace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(overrides) = overrides else {
            return Err(assessment_not_found(trace_id, assessment_id).into());
        };
        sqlx::query("DELETE FROM assessments WHERE assessment_id = $1")
            .bind(assessment_id)
            .execute(&mut *tx)
            .await?;
        if let Some(overridden) = overrides {
            sqlx::query(
                "UPDATE assessments SET valid = 1 WHERE assessment_id = $1 AND trace_id = $2",
            )
            .bind(overridden.as_str())
            .bind(trace_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// One group of [`Store::trace_groups`].
#[derive(Debug, Clone, PartialEq)]
pub struct TraceGroup {
    /// The group's value (a state or a trace name; empty when ungrouped).
    pub dimension: String,
    /// How many traces.
    pub count: i64,
    /// Their summed execution time, ms.
    pub total_ms: Option<i64>,
    /// The shortest.
    pub min_ms: Option<i64>,
    /// The longest.
    pub max_ms: Option<i64>,
}

fn check_tag_mutation(key: &str, operation: &str) -> Result<()> {
    if SERVER_OWNED_TRACE_TAGS.contains(&key) {
        return Err(MlflowError::invalid(format!(
            "Tag '{key}' is immutable and cannot be {operation} on a trace."
        ))
        .into());
    }
    Ok(())
}

fn timestamp_field(fields: &Map<String, Value>, key: &str) -> Result<Option<i64>> {
    match fields.get(key) {
        Some(Value::String(text)) => Ok(Some(ctflow_core::traces::parse_timestamp(
            text,
            &format!("assessment.{key}"),
        )?)),
        Some(Value::Number(n)) => Ok(n.as_i64()),
        _ => Ok(None),
    }
}

fn assessment_from_row(row: &sqlx::any::AnyRow) -> Result<Value> {
    let id: String = row.try_get(0)?;
    let trace_id: String = row.try_get(1)?;
    let valid: i64 = row.try_get(2)?;
    let text: String = row.try_get(5)?;
    let fields: Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| crate::Error::Corrupt(format!("assessment {id}: {e}")))?;
    Ok(assessment_json(
        &id,
        &trace_id,
        valid != 0,
        row.try_get(3)?,
        row.try_get(4)?,
        &fields,
    ))
}
