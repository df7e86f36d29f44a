use ctflow_core::MlflowError;

/// Errors from the store: a user-facing MLflow error, or an infrastructure failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
}

impl Error {
    /// A short, low-cardinality name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Mlflow(e) => e.code.as_str(),
            Error::Database(_) => "database",
            Error::Io(_) => "io",
            Error::Config(_) => "config",
            Error::Corrupt(_) => "corrupt",
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
