//! runs/search: the filter grammar and order-by keys turned into one SQL statement that
//! picks the page of run ids; the runs themselves are then loaded in bulk.

use ctflow_core::entities::Run;
use ctflow_core::filter::{Clause, Comparator, Entity, OrderBy, Value};
use ctflow_core::page_token;
use sqlx::Row;

use crate::error::Result;
use crate::experiments::{numeric_op, string_condition};
use crate::runs::RunSearch;
use crate::sql::{Arg, Sql, cut_page};
use crate::{Backend, Store};

fn attribute_column(key: &str) -> &'static str {
    match key {
        "run_id" => "r.run_uuid",
        "run_name" => "r.name",
        "status" => "r.status",
        "user_id" => "r.user_id",
        "artifact_uri" => "r.artifact_uri",
        "lifecycle_stage" => "r.lifecycle_stage",
        "start_time" => "r.start_time",
        _ => "r.end_time",
    }
}

/// How one filter clause narrows the runs: an inner join on the clause's (run, key) row,
/// or a WHERE condition.
enum Narrowing {
    Join(String),
    Where(String),
}

/// NB: a comparison on a metric, param or tag becomes an INNER JOIN on its unique
/// (run_uuid, key) row rather than an IN or EXISTS subquery: with statistics, both engines
/// then start from the most selective index (e.g. params (key, value)) instead of probing
/// every run of the experiment.
fn run_narrowing(sql: &mut Sql, index: usize, clause: &Clause) -> Narrowing {
    let alias = format!("f{index}");
    let table = match clause.entity {
        Entity::Metric => "latest_metrics",
        Entity::Param => "params",
        Entity::Tag => "tags",
        Entity::Attribute => {
            return Narrowing::Where(string_condition(
                sql,
                attribute_column(&clause.key),
                clause.comparator,
                &clause.value,
            ));
        }
        Entity::Dataset => return Narrowing::Where(dataset_condition(sql, clause)),
    };
    let key = sql.text_arg(clause.key.clone());
    let on = format!("{alias}.run_uuid = r.run_uuid AND {alias}.key = {key}");
    match (clause.entity, clause.comparator) {
        (Entity::Metric, cmp) => {
            let Value::Number(n) = clause.value else {
                return Narrowing::Where("1 = 0".into());
            };
            let v = sql.arg(Arg::Float(n));
            // NaN is stored as 0 with is_nan set; as in IEEE (and MLflow's SQL store) a NaN
            // satisfies `!=` and no other comparison.
            let compared = format!("{alias}.value {} {v}", numeric_op(cmp));
            let condition = if cmp == Comparator::Ne {
                format!("({alias}.is_nan = 1 OR {compared})")
            } else {
                format!("{alias}.is_nan = 0 AND {compared}")
            };
            Narrowing::Join(format!(" JOIN {table} {alias} ON {on} AND {condition}"))
        }
        (_, Comparator::IsNull) => Narrowing::Where(format!(
            "NOT EXISTS (SELECT 1 FROM {table} {alias} WHERE {on})"
        )),
        (_, Comparator::IsNotNull) => Narrowing::Join(format!(" JOIN {table} {alias} ON {on}")),
        (_, cmp) => {
            let cond = string_condition(sql, &format!("{alias}.value"), cmp, &clause.value);
            Narrowing::Join(format!(" JOIN {table} {alias} ON {on} AND {cond}"))
        }
    }
}

fn dataset_condition(sql: &mut Sql, clause: &Clause) -> String {
    if clause.key == "context" {
        let cond = string_condition(sql, "it.value", clause.comparator, &clause.value);
        format!(
            "EXISTS (SELECT 1 FROM run_inputs ri JOIN run_input_tags it ON it.input_uuid = ri.input_uuid \
             WHERE ri.run_uuid = r.run_uuid AND it.key = 'mlflow.data.context' AND {cond})"
        )
    } else {
        let column = if clause.key == "name" {
            "d.name"
        } else {
            "d.digest"
        };
        let cond = string_condition(sql, column, clause.comparator, &clause.value);
        format!(
            "EXISTS (SELECT 1 FROM run_inputs ri JOIN datasets d ON d.dataset_uuid = ri.dataset_uuid \
             WHERE ri.run_uuid = r.run_uuid AND {cond})"
        )
    }
}

/// Joins and ORDER BY terms for one order key. Rows without the key sort last in both
/// directions; NaN metrics sort after real values and before missing ones.
fn order_terms(
    sql: &mut Sql,
    index: usize,
    order: &OrderBy,
    joins: &mut String,
    terms: &mut Vec<String>,
) {
    let dir = if order.ascending { "ASC" } else { "DESC" };
    match order.entity {
        Entity::Metric | Entity::Param | Entity::Tag => {
            let table = match order.entity {
                Entity::Metric => "latest_metrics",
                Entity::Param => "params",
                _ => "tags",
            };
            let alias = format!("o{index}");
            let key = sql.text_arg(order.key.clone());
            joins.push_str(&format!(
                " LEFT JOIN {table} {alias} ON {alias}.run_uuid = r.run_uuid AND {alias}.key = {key}"
            ));
            terms.push(format!("({alias}.run_uuid IS NULL) ASC"));
            if order.entity == Entity::Metric {
                terms.push(format!("{alias}.is_nan ASC"));
            }
            terms.push(format!("{alias}.value {dir}"));
        }
        _ => {
            let column = attribute_column(&order.key);
            // Only end_time can be missing. NB: an IS NULL term on a NOT NULL column
            // would stop the engines from reading the runs_by_experiment index in order
            // (SQLite sorted all 100k runs of an experiment for the first page).
            if column == "r.end_time" {
                terms.push(format!("({column} IS NULL) ASC"));
            }
            terms.push(format!("{column} {dir}"));
        }
    }
}

/// The joins and WHERE conditions that pick the runs a search matches (its experiments,
/// view and filter), for both the page and the count.
fn matching_runs(sql: &mut Sql, search: &RunSearch) -> (String, Vec<String>) {
    let experiment_list: Vec<String> = search
        .experiment_ids
        .iter()
        .map(|id| sql.int_arg(*id))
        .collect();
    let stages = sql.text_list(search.view.stages().iter().copied());
    let mut conditions = vec![
        format!("r.experiment_id IN ({})", experiment_list.join(", ")),
        format!("r.lifecycle_stage IN {stages}"),
    ];
    let mut filter_joins = String::new();
    for (i, clause) in search.filter.iter().enumerate() {
        match run_narrowing(sql, i, clause) {
            Narrowing::Join(join) => filter_joins.push_str(&join),
            Narrowing::Where(condition) => conditions.push(condition),
        }
    }
    (filter_joins, conditions)
}

impl Store {
    /// How many runs a search matches in all (its order, page and size aside): what the
    /// dashboard's pager counts.
    pub async fn count_runs(&self, search: &RunSearch) -> Result<i64> {
        let _timer = self.timer("count_runs");
        if search.experiment_ids.is_empty() {
            return Ok(0);
        }
        let mut sql = Sql::new("");
        let (filter_joins, conditions) = matching_runs(&mut sql, search);
        sql.text = format!(
            "SELECT COUNT(*) FROM runs r{filter_joins} WHERE {}",
            conditions.join(" AND ")
        );
        let row = sql.query().fetch_one(&self.read).await?;
        Ok(row.try_get(0)?)
    }

    pub async fn search_runs(&self, search: &RunSearch) -> Result<(Vec<Run>, Option<String>)> {
        let _timer = self.timer("search_runs");
        let offset = page_token::decode(search.page_token.as_deref())?;
        if search.experiment_ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        let sql = page_query(search, offset);
        let mut ids: Vec<String> = sql
            .query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let next = cut_page(&mut ids, search.max_results, offset);
        Ok((self.fetch_runs(&ids).await?, next))
    }

    /// The engine's plan for a search's page query, one line per step (SQLite's `EXPLAIN
    /// QUERY PLAN` details, PostgreSQL's `EXPLAIN`): what the plan tests read, so a
    /// change that makes a common search scan every run fails a test.
    pub async fn explain_run_search(&self, search: &RunSearch) -> Result<Vec<String>> {
        let offset = page_token::decode(search.page_token.as_deref())?;
        let mut sql = page_query(search, offset);
        let (prefix, column) = match self.backend {
            Backend::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
            Backend::Postgres => ("EXPLAIN ", 0),
        };
        sql.text.insert_str(0, prefix);
        sql.query()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|row| Ok(row.try_get::<String, _>(column)?))
            .collect()
    }
}

/// The statement that picks one page of run ids (one more than the page, to know whether
/// another follows).
fn page_query(search: &RunSearch, offset: i64) -> Sql {
    let mut sql = Sql::new("");
    let mut joins = String::new();
    let mut terms = Vec::new();
    for (i, order) in search.order_by.iter().enumerate() {
        order_terms(&mut sql, i, order, &mut joins, &mut terms);
    }
    if !search
        .order_by
        .iter()
        .any(|o| o.entity == Entity::Attribute && o.key == "start_time")
    {
        terms.push("r.start_time DESC".into());
    }
    terms.push("r.run_uuid ASC".into());

    let (filter_joins, conditions) = matching_runs(&mut sql, search);
    let limit = sql.int_arg(search.max_results.saturating_add(1));
    let off = sql.int_arg(offset);
    sql.text = format!(
        "SELECT r.run_uuid FROM runs r{filter_joins}{joins} WHERE {} ORDER BY {} LIMIT {limit} OFFSET {off}",
        conditions.join(" AND "),
        terms.join(", ")
    );
    sql
}
