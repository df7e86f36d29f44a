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
    filter: &[Clause],
    joins: &mut String,
    terms: &mut Vec<String>,
) {
    let dir = if order.ascending { "ASC" } else { "DESC" };
    if let Some(narrowed) = ordered_by_its_range(order, filter) {
        // Every matching run has this metric, and not as NaN: the filter's own row is
        // the order's, so the engines can read the (key, is_nan, value) index in order and stop
        // at the page's end instead of sorting every match (1M runs: see benchmarks.md).
        terms.push(format!("f{narrowed}.value {dir}"));
        return;
    }
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

/// The filter clause (its index) that compares the order's metric with a number, other
/// than `!=`: it joins exactly the row the order reads, present and never NaN.
fn ordered_by_its_range(order: &OrderBy, filter: &[Clause]) -> Option<usize> {
    if order.entity != Entity::Metric {
        return None;
    }
    filter.iter().position(|clause| {
        clause.entity == Entity::Metric
            && clause.key == order.key
            && matches!(clause.value, Value::Number(_))
            && matches!(
                clause.comparator,
                Comparator::Gt | Comparator::Ge | Comparator::Lt | Comparator::Le | Comparator::Eq
            )
    })
}

/// How many entries of the order's index an ordered walk reads per row it must find.
const WALK_ENTRIES_PER_ROW: i64 = 20;
/// The longest walk tried.
const MAX_WALK: i64 = 100_000;

/// A first try at a page: the best `budget` values of the order's metric, read from its
/// (key, is_nan, value) index in order, joined to the rest of the filter. When the page fills
/// from them and its last value beats the last value read, it is the page (see
/// `Store::search_runs`); otherwise the search runs as planned.
struct Walk {
    /// The filter clause whose metric the search is ordered by.
    clause: usize,
    /// Index entries read.
    budget: i64,
    /// How the walk joins the runs and the rest of the filter. NB: on SQLite, CROSS JOIN,
    /// which SQLite never reorders: its planner cannot tell that the walk's few entries
    /// make the cheapest outer loop, and would start from a parameter's index and sort
    /// every match, the cost the walk avoids.
    join: &'static str,
}

impl Walk {
    /// A walk for searches whose first order is a metric the filter compares with a
    /// number, when something else narrows them too (alone, the planned query already
    /// reads the index in order and stops).
    fn for_search(search: &RunSearch, offset: i64, backend: Backend) -> Option<Walk> {
        let first = search.order_by.first()?;
        let clause = ordered_by_its_range(first, &search.filter)?;
        let budget = offset
            .saturating_add(search.max_results)
            .saturating_add(1)
            .saturating_mul(WALK_ENTRIES_PER_ROW)
            .max(1000);
        // Deep pages are left to the planned search: a walk that long costs more than it
        // can save.
        let join = match backend {
            Backend::Sqlite => " CROSS JOIN ",
            Backend::Postgres => " JOIN ",
        };
        (search.filter.len() > 1 && budget <= MAX_WALK).then_some(Walk {
            clause,
            budget,
            join,
        })
    }

    /// The walked index entries: `FROM latest_metrics ...` without the SELECT.
    fn entries(&self, sql: &mut Sql, search: &RunSearch) -> String {
        let clause = &search.filter[self.clause];
        let n = match clause.value {
            Value::Number(n) => n,
            _ => f64::NAN,
        };
        let key = sql.text_arg(clause.key.clone());
        let bound = sql.arg(Arg::Float(n));
        let dir = match search.order_by.first() {
            Some(order) if order.ascending => "ASC",
            _ => "DESC",
        };
        format!(
            "FROM latest_metrics w WHERE w.key = {key} AND w.is_nan = 0 AND w.value {} {bound} \
             ORDER BY w.value {dir}",
            numeric_op(clause.comparator)
        )
    }
}

/// The joins and WHERE conditions that pick the runs a search matches (its experiments,
/// view and filter), for both the page and the count.
fn matching_runs(sql: &mut Sql, search: &RunSearch) -> (String, Vec<String>) {
    let (_, joins, conditions) = matching_runs_walked(sql, search, None);
    (joins, conditions)
}

/// As `matching_runs`, with the FROM clause: `runs r`, or the walk's entries joined to
/// the runs (and the other narrowings joined the walk's way).
fn matching_runs_walked(
    sql: &mut Sql,
    search: &RunSearch,
    walk: Option<&Walk>,
) -> (String, String, Vec<String>) {
    let join = walk.map_or(" JOIN ", |w| w.join);
    let mut from = "runs r".to_string();
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
        if let Some(walk) = walk.filter(|w| w.clause == i) {
            let entries = walk.entries(sql, search);
            let budget = sql.int_arg(walk.budget);
            from = format!(
                "(SELECT w.run_uuid, w.value {entries} LIMIT {budget}) f{i}{join}runs r \
                 ON r.run_uuid = f{i}.run_uuid"
            );
            continue;
        }
        match run_narrowing(sql, i, clause) {
            Narrowing::Join(narrowing) => {
                filter_joins.push_str(&narrowing.replacen(" JOIN ", join, 1))
            }
            Narrowing::Where(condition) => conditions.push(condition),
        }
    }
    (from, filter_joins, conditions)
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
        let walked = match Walk::for_search(search, offset, self.backend) {
            Some(walk) => self.walked_page(search, offset, &walk).await?,
            None => None,
        };
        let mut ids = match walked {
            Some(ids) => ids,
            None => {
                let sql = page_query(search, offset, None);
                sql.query()
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<Vec<String>, _>>()?
            }
        };
        let next = cut_page(&mut ids, search.max_results, offset);
        Ok((self.fetch_runs(&ids).await?, next))
    }

    /// The page from an ordered walk, when the walk proves it complete: either it read
    /// every entry in the range, or the page filled and its last value is strictly better
    /// than the last entry read (so every run with a value up to the page's last one was
    /// among those read, ties included).
    async fn walked_page(
        &self,
        search: &RunSearch,
        offset: i64,
        walk: &Walk,
    ) -> Result<Option<Vec<String>>> {
        let rows = page_query(search, offset, Some(walk))
            .query()
            .fetch_all(&self.read)
            .await?;
        let mut edge_sql = Sql::new("");
        let entries = walk.entries(&mut edge_sql, search);
        let last_read = edge_sql.int_arg(walk.budget - 1);
        edge_sql.text = format!("SELECT w.value {entries} LIMIT 1 OFFSET {last_read}");
        let edge: Option<f64> = edge_sql
            .query()
            .fetch_optional(&self.read)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let complete = match edge {
            None => true,
            Some(edge) => {
                let page_filled = rows.len() as i64 > search.max_results;
                let ascending = search.order_by.first().is_some_and(|o| o.ascending);
                let last: Option<f64> = rows.last().map(|row| row.try_get(1)).transpose()?;
                page_filled
                    && last.is_some_and(|last| if ascending { last < edge } else { last > edge })
            }
        };
        if !complete {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<String>, _>>()?,
        ))
    }

    /// The engine's plan for a search's page query (the ordered walk's, when it is tried first), one line per step (SQLite's `EXPLAIN
    /// QUERY PLAN` details, PostgreSQL's `EXPLAIN`): what the plan tests read, so a
    /// change that makes a common search scan every run fails a test.
    pub async fn explain_run_search(&self, search: &RunSearch) -> Result<Vec<String>> {
        let offset = page_token::decode(search.page_token.as_deref())?;
        let walk = Walk::for_search(search, offset, self.backend);
        let mut sql = page_query(search, offset, walk.as_ref());
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
fn page_query(search: &RunSearch, offset: i64, walk: Option<&Walk>) -> Sql {
    let mut sql = Sql::new("");
    let mut joins = String::new();
    let mut terms = Vec::new();
    for (i, order) in search.order_by.iter().enumerate() {
        order_terms(&mut sql, i, order, &search.filter, &mut joins, &mut terms);
    }
    if !search
        .order_by
        .iter()
        .any(|o| o.entity == Entity::Attribute && o.key == "start_time")
    {
        terms.push("r.start_time DESC".into());
    }
    terms.push("r.run_uuid ASC".into());

    let (from, filter_joins, conditions) = matching_runs_walked(&mut sql, search, walk);
    let limit = sql.int_arg(search.max_results.saturating_add(1));
    let off = sql.int_arg(offset);
    // A walk also answers each row's order value, to check the page against the walk's edge.
    let order_value = walk.map_or(String::new(), |w| format!(", f{}.value", w.clause));
    sql.text = format!(
        "SELECT r.run_uuid{order_value} FROM {from}{filter_joins}{joins} WHERE {} ORDER BY {} LIMIT {limit} OFFSET {off}",
        conditions.join(" AND "),
        terms.join(", ")
    );
    sql
}
