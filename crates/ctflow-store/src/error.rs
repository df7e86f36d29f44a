use ctflow_core::MlflowError;

/// Errors from the store: a user-facing MLflow error, or an infrastructure failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From SQLite's own interface: a long read (`direct_read`) or a run write
    /// (`group_commit`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("no space left for the database: {0}")]
    OutOfSpace(String),
}

impl Error {
    /// The database or the disk under it has no room left (SQLite's SQLITE_FULL,
    /// PostgreSQL's disk_full, ENOSPC and EDQUOT from the file system).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| crate::db::OUT_OF_SPACE_CODES.contains(&code.as_ref())),
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                failure.code == rusqlite::ErrorCode::DiskFull
            }
            Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            Error::OutOfSpace(_) => true,
            _ => false,
        }
    }

    /// The database cannot be reached for now (its connection broke, it is restarting,
    /// no connection came in time): the same request can succeed later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => true,
            // PostgreSQL's connection exceptions (class 08) and shutdowns (57P01-57P03).
            Error::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&code.as_ref())
            }),
            _ => false,
        }
    }

    /// A short, low-cardinality name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Mlflow(e) => e.code.as_str(),
            Error::Database(_) | Error::Sqlite(_) => "database",
            Error::Io(_) => "io",
            Error::Config(_) => "config",
            Error::Corrupt(_) => "corrupt",
            Error::OutOfSpace(_) => "out_of_space",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db
                    .code()
                    .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}
