//! Long reads of a SQLite database file on SQLite's own C interface, for the reads that
//! return many rows (a metric's history).
//!
//! sqlx's SQLite driver runs each connection on a worker thread and hands every row across
//! to the caller's task; at a microsecond or so per row that is most of a 100k-point
//! history's cost. Here a read runs whole on a blocking thread, stepping the statement
//! itself (SQLite's own per-row cost, ~0.2 µs), and only the finished result crosses
//! over. The connections are read-only and share the database file (WAL: a read sees
//! every commit made before it began, as the pooled readers do), and they link the one
//! SQLite that sqlx bundles.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::sql::{Arg, Sql};

/// Idle connections kept for the next read; more readers at once (up to the store's read
/// pool size) open more, then drop them.
const KEEP_IDLE: usize = 4;

/// How long a read waits for a lock (only a WAL recovery or reset takes one from readers).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Read-only connections to one SQLite database file. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DirectReader {
    shared: Arc<Shared>,
}

struct Shared {
    file: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per read at once; closed with the store.
    permits: Semaphore,
}

impl DirectReader {
    /// At most `readers` reads at once (and so connections open).
    pub(crate) fn new(file: PathBuf, readers: usize) -> DirectReader {
        DirectReader {
            shared: Arc::new(Shared {
                file,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(readers.max(1)),
            }),
        }
    }

    /// Runs `read` on a blocking thread with a connection of its own.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        // NB: a closed store refuses as its sqlx pools do.
        let permit = self
            .shared
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Database(sqlx::Error::PoolClosed))?;
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            let connection = match shared.take_idle() {
                Some(connection) => connection,
                None => shared.open()?,
            };
            let result = read(&connection)?;
            shared.put_back(connection);
            Ok(result)
        })
        .await
        .map_err(|failed| Error::Io(std::io::Error::other(format!("a read stopped: {failed}"))))?;
        drop(permit);
        result
    }

    /// The rows of `sql` (built `Sql::in_order` for SQLite: `?` placeholders in argument
    /// order), each made into a `T` by `row`.
    pub(crate) async fn rows<T, F>(&self, sql: Sql, mut row: F) -> Result<Vec<T>>
    where
        T: Send + 'static,
        F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read(move |connection| query_rows(connection, &sql, &mut row))
            .await
    }

    /// Refuses further reads and drops the idle connections (the store is closing).
    pub(crate) fn close(&self) {
        self.shared.permits.close();
        if let Ok(mut idle) = self.shared.idle.lock() {
            idle.clear();
        }
    }
}

/// The rows of `sql` on `connection` (inside a read of [`DirectReader::read`]), each made
/// into a `T` by `row`.
pub(crate) fn query_rows<T>(
    connection: &Connection,
    sql: &Sql,
    mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = connection.prepare(&sql.text)?;
    bind(&mut statement, &sql.args)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(next) = rows.next()? {
        out.push(row(next)?);
    }
    Ok(out)
}

/// Binds a builder's arguments to its statement: `$N` to the Nth argument wherever it
/// appears (SQLite numbers named parameters by first appearance, not by their names), and
/// anonymous `?` in order.
fn bind(statement: &mut rusqlite::Statement<'_>, args: &[Arg]) -> rusqlite::Result<()> {
    for index in 1..=statement.parameter_count() {
        let argument = match statement.parameter_name(index) {
            Some(name) => name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| args.get(n.checked_sub(1)?)),
            None => args.get(index - 1),
        };
        let argument = argument.ok_or(rusqlite::Error::InvalidParameterCount(
            statement.parameter_count(),
            args.len(),
        ))?;
        statement.raw_bind_parameter(index, argument)?;
    }
    Ok(())
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Int(value) => ValueRef::Integer(*value),
            Arg::Float(value) => ValueRef::Real(*value),
            Arg::Text(value) => ValueRef::Text(value.as_bytes()),
            Arg::Blob(value) => ValueRef::Blob(value),
            Arg::NullText | Arg::NullInt => ValueRef::Null,
        }))
    }
}

impl Shared {
    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().ok()?.pop()
    }

    fn put_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < KEEP_IDLE
        {
            idle.push(connection);
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // NB: no mutex of SQLite's own: a connection is used by one thread at a time.
        let connection = Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        // NB: the pool's pragmas that change what a query answers must be set here too
        // (MLflow's LIKE is case-sensitive).
        connection.execute_batch(
            "PRAGMA case_sensitive_like = ON; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
        )?;
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_see_commits_made_elsewhere_and_cannot_write() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("direct.db");
        let writer = Connection::open(&file).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
            )
            .unwrap();
        let reader = DirectReader::new(file.clone(), 2);
        let count = |reader: DirectReader| async move {
            reader
                .read(|c| c.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0)))
                .await
        };
        assert_eq!(count(reader.clone()).await.unwrap(), 1);
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
        // The same (pooled) connection sees the new commit.
        assert_eq!(count(reader.clone()).await.unwrap(), 2);
        let refused = reader
            .read(|c| c.execute("INSERT INTO t VALUES (3)", []))
            .await;
        assert!(matches!(refused, Err(Error::Sqlite(_))), "{refused:?}");
        assert_eq!(count(reader.clone()).await.unwrap(), 2);
        reader.close();
        let closed = count(reader.clone()).await;
        assert!(
            matches!(closed, Err(Error::Database(sqlx::Error::PoolClosed))),
            "{closed:?}"
        );
    }

    #[tokio::test]
    async fn rows_bind_the_builders_arguments_in_order() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("rows.db");
        Connection::open(&file)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t (n INTEGER, s TEXT, f REAL); \
                 INSERT INTO t VALUES (1, 'a', 0.5), (2, 'b', NULL), (3, 'b', 1.5);",
            )
            .unwrap();
        let reader = DirectReader::new(file, 1);
        let mut sql = Sql::in_order(crate::Backend::Sqlite);
        let (text, low) = (sql.text_arg("b"), sql.int_arg(2));
        let null = sql.arg(Arg::NullInt);
        sql.push(&format!(
            "SELECT n, f FROM t WHERE s = {text} AND n >= {low} AND {null} IS NULL ORDER BY n"
        ));
        let rows = reader
            .rows(sql, |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<f64>>(1)?))
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![(2, None), (3, Some(1.5))]);
    }

    #[tokio::test]
    async fn numbered_placeholders_bind_by_their_numbers() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("numbered.db");
        Connection::open(&file)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t (n INTEGER, s TEXT); \
                 INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'b'), (4, 'c');",
            )
            .unwrap();
        let reader = DirectReader::new(file, 1);
        // The text names $2 first and $1 twice: SQLite alone would number them 1 and 2.
        let mut sql = Sql::new("");
        let (low, text) = (sql.int_arg(3), sql.text_arg("b"));
        sql.push(&format!(
            "SELECT n FROM t WHERE (s = {text} OR n >= {low}) AND n <= {low} + 1 ORDER BY n"
        ));
        let rows = reader.rows(sql, |row| row.get::<_, i64>(0)).await.unwrap();
        assert_eq!(rows, vec![2, 3, 4]);
        // A placeholder with no argument is an error, not a NULL.
        let mut short = Sql::new("SELECT n FROM t WHERE n = $2");
        short.int_arg(1);
        let refused = reader.rows(short, |row| row.get::<_, i64>(0)).await;
        assert!(matches!(refused, Err(Error::Sqlite(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_not_a_new_database() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("absent.db");
        let reader = DirectReader::new(file.clone(), 1);
        let result = reader
            .read(|c| c.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)))
            .await;
        assert!(matches!(result, Err(Error::Sqlite(_))), "{result:?}");
        assert!(!file.exists());
    }
}
