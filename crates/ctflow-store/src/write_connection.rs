//! The statements of a run write (metrics, params, tags), run either through sqlx (an
//! in-memory SQLite store, PostgreSQL) or on SQLite's own C interface (a SQLite file, see
//! `direct_write`). The write's logic is written once against [`WriteConnection`], so the
//! two paths cannot drift apart: only how a statement is bound and stepped differs.

use std::future::Future;

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::error::Result;
use crate::sql::{Arg, bind_all};

/// Where a run write's statements go: a transaction (or savepoint) already begun.
pub(crate) trait WriteConnection: Send {
    /// Runs `sql` with `args` bound in order; answers the rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg]) -> impl Future<Output = Result<u64>> + Send;

    /// The rows `sql` answers, each read as an `R`.
    fn fetch<R: WriteRow>(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> impl Future<Output = Result<Vec<R>>> + Send;
}

/// A row a run write reads back: a tuple of columns both drivers decode.
pub(crate) trait WriteRow: Sized + Send {
    fn from_sqlx(row: &AnyRow) -> Result<Self>;
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

/// A column type both drivers decode.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql + Send
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql + Send
{
}

macro_rules! tuple_rows {
    ($(($($column:ident $index:tt),+)),+ $(,)?) => {$(
        impl<$($column: Column),+> WriteRow for ($($column,)+) {
            fn from_sqlx(row: &AnyRow) -> Result<Self> {
                Ok(($(row.try_get::<$column, _>($index)?,)+))
            }
            fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($(row.get::<_, $column>($index)?,)+))
            }
        }
    )+};
}

tuple_rows!(
    (A 0),
    (A 0, B 1),
    (A 0, B 1, C 2, D 3, E 4),
);

impl WriteConnection for Transaction<'_, Any> {
    async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        let done = bind_all(sqlx::query(AssertSqlSafe(sql)), args)
            .execute(&mut **self)
            .await?;
        Ok(done.rows_affected())
    }

    async fn fetch<R: WriteRow>(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<R>> {
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), args)
            .fetch_all(&mut **self)
            .await?;
        rows.iter().map(R::from_sqlx).collect()
    }
}

/// NB: statements are prepared once and kept (a log-batch's 1000-row insert included):
/// parsing and planning them again would cost as much as binding.
impl WriteConnection for rusqlite::Connection {
    async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        let mut statement = self.prepare_cached(sql)?;
        let changed = statement.execute(rusqlite::params_from_iter(args))?;
        Ok(changed as u64)
    }

    async fn fetch<R: WriteRow>(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<R>> {
        let mut statement = self.prepare_cached(sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(args), R::from_sqlite)?;
        Ok(rows.collect::<rusqlite::Result<Vec<R>>>()?)
    }
}
