//! A small builder for dynamic SQL with `$N` placeholders, valid on SQLite and PostgreSQL.

use sqlx::Any;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use crate::Backend;

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
    NullText,
    NullInt,
}

#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    /// Emit `?` instead of `$N`. Only valid when placeholders appear in the text in the
    /// order their arguments were added.
    anonymous: bool,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Sql {
            text: text.into(),
            args: Vec::new(),
            anonymous: false,
        }
    }

    /// A builder for statements whose placeholders appear in argument order (IN lists,
    /// bulk VALUES). NB: on SQLite these use `?`, because looking up `$N` names costs
    /// SQLite a scan of all parameters per bind, which is quadratic in a 2000-value insert.
    pub fn in_order(backend: Backend) -> Self {
        Sql {
            text: String::new(),
            args: Vec::new(),
            anonymous: backend == Backend::Sqlite,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Adds an argument and returns its placeholder.
    pub fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        if self.anonymous {
            "?".to_string()
        } else {
            format!("${}", self.args.len())
        }
    }

    pub fn text_arg(&mut self, value: impl Into<String>) -> String {
        self.arg(Arg::Text(value.into()))
    }

    pub fn int_arg(&mut self, value: i64) -> String {
        self.arg(Arg::Int(value))
    }

    /// `(p1, p2, ...)` for a list of text values.
    pub fn text_list<I, S>(&mut self, values: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let placeholders: Vec<String> = values.into_iter().map(|v| self.text_arg(v)).collect();
        format!("({})", placeholders.join(", "))
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments> {
        bind_all(sqlx::query(AssertSqlSafe(self.text.clone())), &self.args)
    }
}

pub(crate) fn bind_all<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    args: &'q [Arg],
) -> Query<'q, Any, AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(*v),
            Arg::Float(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::Blob(v) => query.bind(v.as_slice()),
            Arg::NullText => query.bind(Option::<String>::None),
            Arg::NullInt => query.bind(Option::<i64>::None),
        };
    }
    query
}

/// Comma-separated `($a, $b, ...)` groups for a multi-row VALUES clause starting at `first`
/// (`(?, ?, ...)` on SQLite, see [`Sql::in_order`]).
pub(crate) fn values_groups(backend: Backend, rows: usize, columns: usize, first: usize) -> String {
    let anonymous = backend == Backend::Sqlite;
    let mut out = String::with_capacity(rows * columns * 5);
    let mut n = first;
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for col in 0..columns {
            if col > 0 {
                out.push_str(", ");
            }
            if anonymous {
                out.push('?');
            } else {
                out.push('$');
                out.push_str(&n.to_string());
            }
            n += 1;
        }
        out.push(')');
    }
    out
}

/// Wraps a selection so that it comes back as one JSON text row: `[[col, col, ...], ...]`.
///
/// NB: sqlx's SQLite driver passes each result row from its worker thread over a channel,
/// several microseconds a row; a page of 1000 runs has tens of thousands of rows across
/// its tables. One aggregated row avoids that, and PostgreSQL gets the same shape so the
/// decoding is shared. Doubles must travel as their bits (BIGINT): SQLite's float-to-text
/// conversion is not exact.
///
/// The rows come back in no particular order (an ORDER BY inside the aggregate makes SQLite
/// sort through a temporary b-tree); callers sort what they need sorted.
pub(crate) fn json_rows_sql(backend: Backend, columns: &str, from_where: &str) -> String {
    match backend {
        Backend::Sqlite => {
            format!("SELECT json_group_array(json_array({columns})) FROM {from_where}")
        }
        Backend::Postgres => {
            format!(
                "SELECT COALESCE(json_agg(json_build_array({columns})), '[]')::text FROM {from_where}"
            )
        }
    }
}

/// Runs a query built with [`json_rows_sql`] and decodes its rows.
pub(crate) async fn fetch_json_rows(
    pool: &sqlx::AnyPool,
    sql: &Sql,
) -> crate::error::Result<Vec<Vec<serde_json::Value>>> {
    use sqlx::Row;
    let packed: Option<String> = sql.query().fetch_one(pool).await?.try_get(0)?;
    let Some(packed) = packed else {
        return Ok(Vec::new());
    };
    serde_json::from_str(&packed)
        .map_err(|e| crate::error::Error::Corrupt(format!("aggregated rows: {e}")))
}

/// Cuts a page fetched with `LIMIT max_results + 1` to `max_results` and returns the token
/// of the next page when there is one (MLflow omits the token after the last page).
pub(crate) fn cut_page<T>(items: &mut Vec<T>, max_results: i64, offset: i64) -> Option<String> {
    if items.len() as i64 > max_results {
        items.truncate(max_results as usize);
        Some(ctflow_core::page_token::encode(
            offset.saturating_add(max_results),
        ))
    } else {
        None
    }
}
