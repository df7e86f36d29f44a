//! Connection set-up, SQLite tuning, and the embedded migrations.

use std::sync::Arc;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};
use tracing::info;

use crate::direct_read::DirectReader;
use crate::error::{Error, Result};
use crate::group_commit::{DirectWriter, GroupCommitter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite:///path/to/file.db`, `sqlite:///:memory:` or `postgresql://...`.
    pub backend_store_uri: String,
    /// Root under which new experiments get their artifact location, e.g.
    /// `mlflow-artifacts:/` or an absolute directory.
    pub default_artifact_root: String,
    /// Connections in the read pool.
    pub max_connections: u32,
    /// When a committed write reaches the disk (SQLite; PostgreSQL commits durably).
    pub durability: Durability,
}

macro_rules! file_pragmas {
    ($synchronous:literal) => {
        concat!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = ",
            $synchronous,
            "; PRAGMA busy_timeout = 30000; PRAGMA case_sensitive_like = ON; \
             PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; \
             PRAGMA journal_size_limit = 67108864;"
        )
    };
}

/// When SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: every commit is fsynced before it is acknowledged, so a
    /// write that got its answer survives a power cut or an OS crash.
    #[default]
    Full,
    /// `synchronous = NORMAL`: commits are fsynced at WAL checkpoints only. A process
    /// crash loses nothing; a power cut or an OS crash can lose the last commits.
    Relaxed,
}

impl Durability {
    fn file_pragmas(self) -> &'static str {
        match self {
            Durability::Full => file_pragmas!("FULL"),
            Durability::Relaxed => file_pragmas!("NORMAL"),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "full" => Ok(Durability::Full),
            "relaxed" => Ok(Durability::Relaxed),
            other => Err(format!(
                "unknown durability '{other}': use full (every commit fsynced) or relaxed"
            )),
        }
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_tracking.sql")),
    (2, include_str!("../migrations/sqlite/0002_registry.sql")),
    (3, include_str!("../migrations/sqlite/0003_pipelines.sql")),
    (4, include_str!("../migrations/sqlite/0004_leases.sql")),
    (5, include_str!("../migrations/sqlite/0005_auth.sql")),
    (6, include_str!("../migrations/sqlite/0006_write_probe.sql")),
    (
        7,
        include_str!("../migrations/sqlite/0007_data_snapshots.sql"),
    ),
    (8, include_str!("../migrations/sqlite/0008_feedback.sql")),
    (9, include_str!("../migrations/sqlite/0009_shadow.sql")),
    (10, include_str!("../migrations/sqlite/0010_traces.sql")),
    (11, include_str!("../migrations/sqlite/0011_issues.sql")),
    (12, include_str!("../migrations/sqlite/0012_scorers.sql")),
    (
        13,
        include_str!("../migrations/sqlite/0013_evaluation_datasets.sql"),
    ),
    (
        14,
        include_str!("../migrations/sqlite/0014_gateway_secrets.sql"),
    ),
    (
        15,
        include_str!("../migrations/sqlite/0015_gateway_endpoints.sql"),
    ),
    (
        16,
        include_str!("../migrations/sqlite/0016_metric_points.sql"),
    ),
    (
        17,
        include_str!("../migrations/sqlite/0017_online_scoring.sql"),
    ),
    (
        18,
        include_str!("../migrations/sqlite/0018_metric_value_index.sql"),
    ),
    (
        19,
        include_str!("../migrations/sqlite/0019_metric_blocks.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_tracking.sql")),
    (2, include_str!("../migrations/postgres/0002_registry.sql")),
    (3, include_str!("../migrations/postgres/0003_pipelines.sql")),
    (4, include_str!("../migrations/postgres/0004_leases.sql")),
    (5, include_str!("../migrations/postgres/0005_auth.sql")),
    (
        6,
        include_str!("../migrations/postgres/0006_write_probe.sql"),
    ),
    (
        7,
        include_str!("../migrations/postgres/0007_data_snapshots.sql"),
    ),
    (8, include_str!("../migrations/postgres/0008_feedback.sql")),
    (9, include_str!("../migrations/postgres/0009_shadow.sql")),
    (10, include_str!("../migrations/postgres/0010_traces.sql")),
    (11, include_str!("../migrations/postgres/0011_issues.sql")),
    (12, include_str!("../migrations/postgres/0012_scorers.sql")),
    (
        13,
        include_str!("../migrations/postgres/0013_evaluation_datasets.sql"),
    ),
    (
        14,
        include_str!("../migrations/postgres/0014_gateway_secrets.sql"),
    ),
    (
        15,
        include_str!("../migrations/postgres/0015_gateway_endpoints.sql"),
    ),
    (
        16,
        include_str!("../migrations/postgres/0016_metric_points.sql"),
    ),
    (
        17,
        include_str!("../migrations/postgres/0017_online_scoring.sql"),
    ),
    (
        18,
        include_str!("../migrations/postgres/0018_metric_value_index.sql"),
    ),
    (
        19,
        include_str!("../migrations/postgres/0019_metric_blocks.sql"),
    ),
];

/// A WAL file past this size is checkpointed with RESTART (see `keep_the_wal_short`).
const WAL_RESTART_BYTES: u64 = 256 << 20;

/// The WAL file beside a SQLite database file.
fn wal_file(database: &Path) -> std::path::PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    std::path::PathBuf::from(name)
}

/// ANALYZE of the tables run search plans over, in full. NB: `analysis_limit` reads only
/// the first entries of each index, and the first entries of `latest_metrics (key,
/// value)` are one key's smallest values: the planner then took `m > 0.5` for a rare
/// condition and started a search from it instead of from a parameter equality (2-3x the
/// time at 10k runs). The metric points, the largest table by far, are not analysed: no
/// search reads them.
const ANALYZE_SEARCH_TABLES: &str = "PRAGMA analysis_limit = 0; ANALYZE runs; ANALYZE latest_metrics; ANALYZE params; ANALYZE tags;";

/// PostgreSQL's ANALYZE of the same tables (it samples, so it stays cheap as they grow).
const ANALYZE_SEARCH_TABLES_PG: &str = "ANALYZE runs, latest_metrics, params, tags";

/// The statement that analyses the search tables on `backend`.
fn analyze_search_tables(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => ANALYZE_SEARCH_TABLES,
        Backend::Postgres => ANALYZE_SEARCH_TABLES_PG,
    }
}

/// Statistics are refreshed each time the runs double, up to this many runs; past it the
/// proportions they describe no longer change enough to move a plan, and a full analysis
/// would hold the writer for longer.
const ANALYZE_UNTIL_RUNS: i64 = 250_000;

const MEMORY_PRAGMAS: &str = "PRAGMA busy_timeout = 30000; PRAGMA case_sensitive_like = ON;";

/// Below this much room on a SQLite database's file system, the store is not ready.
const MIN_FREE_SPACE: u64 = 1 << 20;

/// SQLite SQLITE_FULL, PostgreSQL disk_full.
pub(crate) const OUT_OF_SPACE_CODES: [&str; 2] = ["13", "53100"];

/// Runs `pragmas` on every new connection.
fn run_on_connect(
    pragmas: &'static str,
) -> impl for<'c> Fn(
    &'c mut AnyConnection,
    PoolConnectionMetadata,
) -> BoxFuture<'c, Result<(), sqlx::Error>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |conn, _meta| {
        Box::pin(async move {
            conn.execute(pragmas).await?;
            Ok(())
        })
    }
}

/// A connection handed back to the write pool is reused only outside a transaction.
/// NB: when SQLite rolls a transaction back on its own (a full disk does), sqlx's
/// ROLLBACK fails and its transaction depth stays at one, so every later `BEGIN` on that
/// connection would fail; such a connection is closed and the pool opens a fresh one.
fn outside_transaction(
    conn: &mut AnyConnection,
    _meta: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        // NB: the ping runs after the rollback a dropped transaction queued.
        conn.ping().await?;
        let usable = !conn.is_in_transaction();
        if !usable {
            tracing::warn!("closing a database connection left inside a transaction");
        }
        Ok(usable)
    })
}

/// The tracking store. Cheap to clone: pools are reference-counted.
#[derive(Clone)]
pub struct Store {
    pub(crate) read: AnyPool,
    /// NB: on SQLite every write goes through this single-connection pool, so writers
    /// queue in-process instead of failing with "database is locked".
    pub(crate) write: AnyPool,
    /// Run logging (metrics, params, tags) goes through here: see `group_commit`.
    pub(crate) run_writes: GroupCommitter,
    pub(crate) backend: Backend,
    /// The SQLite database file (none in memory and on PostgreSQL).
    database_file: Option<std::path::PathBuf>,
    /// Long reads of that file (see `direct_read`).
    pub(crate) direct: Option<DirectReader>,
    pub(crate) default_artifact_root: String,
    /// Told how long each timed operation took (the server's metrics).
    observer: Option<OperationObserver>,
}

/// Receives `(operation, duration)` for the store's hot operations.
pub type OperationObserver = Arc<dyn Fn(&'static str, std::time::Duration) + Send + Sync>;

/// Reports an operation's duration when dropped, so early returns are timed too.
pub(crate) struct OperationTimer<'a> {
    observer: Option<&'a OperationObserver>,
    operation: &'static str,
    started: std::time::Instant,
}

impl Drop for OperationTimer<'_> {
    fn drop(&mut self) {
        if let Some(observer) = self.observer {
            observer(self.operation, self.started.elapsed());
        }
    }
}

/// Turns MLflow's `sqlite:///relative` / `sqlite:////absolute` URIs into a file path.
fn sqlite_path(uri: &str) -> Result<String> {
    let rest = uri
        .strip_prefix("sqlite:///")
        .or_else(|| uri.strip_prefix("sqlite://"))
        .or_else(|| uri.strip_prefix("sqlite:"))
        .ok_or_else(|| Error::Config(format!("not a sqlite URI: {uri}")))?;
    let rest = rest.split('?').next().unwrap_or_default();
    if rest.is_empty() || rest == ":memory:" {
        return Ok(":memory:".into());
    }
    Ok(rest.to_string())
}

impl Store {
    /// Reports the durations of the hot operations (run search and writes, metric
    /// history, experiment search, triggers, pipeline-run changes) to `observer`.
    pub fn with_observer(mut self, observer: OperationObserver) -> Store {
        self.observer = Some(observer);
        self
    }

    pub(crate) fn timer(&self, operation: &'static str) -> OperationTimer<'_> {
        OperationTimer {
            observer: self.observer.as_ref(),
            operation,
            started: std::time::Instant::now(),
        }
    }

    pub async fn open(options: StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let uri = options.backend_store_uri.trim();
        let mut database_file = None;
        let (backend, read, write) = if uri.starts_with("sqlite:") {
            let path = sqlite_path(uri)?;
            let memory = path == ":memory:";
            if !memory {
                database_file = Some(std::path::PathBuf::from(&path));
            }
            if !memory
                && let Some(parent) = Path::new(&path).parent()
                && !parent.as_os_str().is_empty()
                && !parent.exists()
            {
                // As MLflow does, a database is not made in a folder that is not there,
                // except below the working folder (the default `ctflow-data/`): a typo
                // in an absolute path must not create a tree of folders.
                if Path::new(&path).is_absolute() {
                    return Err(Error::Config(format!(
                        "the folder {} of the database {path} does not exist: create it first (a relative path's folder is created below the working folder)",
                        parent.display()
                    )));
                }
                std::fs::create_dir_all(parent)?;
            }
            // A named shared-cache database keeps every pooled connection on the same
            // in-memory data; files get WAL so readers never block the writer.
            let url = if memory {
                format!(
                    "sqlite:file:ctflow-mem-{}?mode=memory&cache=shared",
                    uuid::Uuid::new_v4().simple()
                )
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            let connect = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
            let pragmas = if memory {
                MEMORY_PRAGMAS
            } else {
                options.durability.file_pragmas()
            };
            let after_connect = run_on_connect(pragmas);
            let write = AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(after_connect.clone())
                .after_release(outside_transaction)
                .connect_with(connect.clone())
                .await?;
            let read = AnyPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .min_connections(if memory { 1 } else { 0 })
                .idle_timeout(if memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .max_lifetime(None)
                .after_connect(after_connect)
                .connect_with(connect)
                .await?;
            (Backend::Sqlite, read, write)
        } else if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
            let url = uri.replacen("postgresql+psycopg2://", "postgresql://", 1);
            let connect = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
            let pool = AnyPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .after_release(outside_transaction)
                .connect_with(connect)
                .await?;
            (Backend::Postgres, pool.clone(), pool)
        } else {
            return Err(Error::Config(format!(
                "unsupported backend store URI '{uri}': use sqlite:///path or postgresql://..."
            )));
        };
        // NB: SQLite has one writer; PostgreSQL takes as many as half the pool.
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => (options.max_connections / 2).max(1) as usize,
        };
        let run_writes = match &database_file {
            Some(file) => GroupCommitter::start_direct(
                write.clone(),
                DirectWriter::open(file.clone(), options.durability.file_pragmas())?,
            ),
            None => GroupCommitter::start(write.clone(), backend, writers),
        };
        let store = Store {
            read,
            write,
            run_writes,
            backend,
            direct: database_file
                .clone()
                .map(|file| DirectReader::new(file, options.max_connections.max(1) as usize)),
            database_file,
            default_artifact_root: options
                .default_artifact_root
                .trim_end_matches('/')
                .to_string(),
            observer: None,
        };
        store.migrate().await?;
        store.ensure_default_experiment().await?;
        store.keep_statistics_fresh();
        if store.backend == Backend::Sqlite
            && let Some(file) = &store.database_file
        {
            store.keep_the_wal_short(wal_file(file));
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<()> {
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Several processes may start against one database at once.
            tx.execute("SELECT pg_advisory_xact_lock(7324611)").await?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS ctflow_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM ctflow_migrations")
            .fetch_all(&mut *tx)
            .await?;
        for (version, sql) in migrations {
            if applied.contains(version) {
                continue;
            }
            info!(version, backend = ?self.backend, "applying migration");
            tx.execute(*sql).await?;
            sqlx::query("INSERT INTO ctflow_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(ctflow_core::now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Experiment `0`, "Default", exists from the first start, as in MLflow.
    async fn ensure_default_experiment(&self) -> Result<()> {
        let now = ctflow_core::now_ms();
        sqlx::query(
            "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
             VALUES (0, 'Default', $1, 'active', $2, $2) ON CONFLICT DO NOTHING",
        )
        .bind(self.artifact_location_for(0))
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// SQLite's planner needs `sqlite_stat1` to pick the selective index in a search (for
    /// `params.p = 'x' and metrics.m > 0.5` the params index first); only ANALYZE writes it.
    /// Every two seconds, when the number of runs has doubled since the last analysis
    /// (up to `ANALYZE_UNTIL_RUNS`), this re-analyses the search tables: a doubling
    /// schedule keeps the cost per run constant.
    ///
    /// PostgreSQL gets the same schedule. NB: its autovacuum analyses a table only at its
    /// next wake-up (a minute apart by default) once a tenth of it has changed, so a store
    /// filled in a burst is searched with the planner's defaults meanwhile: a filtered,
    /// ordered search over 10k fresh runs took 338 ms with them and 3.4 ms after ANALYZE
    /// (the default estimates of one row made it loop over the parameter's index once
    /// per metric entry). Its run count is the statistics collector's live-row count, an
    /// O(1) read where `COUNT(*)` would scan.
    fn keep_statistics_fresh(&self) {
        let pool = self.write.clone();
        let analyze = analyze_search_tables(self.backend);
        let count_runs = match self.backend {
            // NB: max(rowid) is a b-tree edge lookup, unlike COUNT(*).
            Backend::Sqlite => "SELECT max(rowid) FROM runs",
            Backend::Postgres => {
                "SELECT (SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = 'runs'::regclass)"
            }
        };
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(2));
            let mut analyzed_at: i64 = 0;
            loop {
                ticker.tick().await;
                if pool.is_closed() {
                    break;
                }
                let runs: i64 = match sqlx::query_scalar::<_, Option<i64>>(count_runs)
                    .fetch_one(&pool)
                    .await
                {
                    Ok(n) => n.unwrap_or(0),
                    Err(error) => {
                        tracing::warn!(%error, "cannot size the runs table");
                        continue;
                    }
                };
                if runs >= 100
                    && runs >= analyzed_at.saturating_mul(2)
                    && analyzed_at < ANALYZE_UNTIL_RUNS
                {
                    match pool.execute(analyze).await {
                        Ok(_) => {
                            tracing::debug!(runs, "refreshed the search tables' statistics");
                            analyzed_at = runs;
                        }
                        Err(error) => tracing::warn!(%error, "ANALYZE failed"),
                    }
                }
            }
        });
    }

    /// Re-analyses the search tables now, as the background refresh does when the runs
    /// table has doubled.
    pub async fn refresh_statistics(&self) -> Result<()> {
        self.write
            .execute(analyze_search_tables(self.backend))
            .await?;
        Ok(())
    }

    /// WAL checkpoint starvation: SQLite's automatic checkpoint (every 1000 pages, run by
    /// the committing writer) copies the WAL back into the database but can only start
    /// the WAL over when no reader still uses an older snapshot. ctflow's reads are single
    /// statements, so this nearly always happens on its own; should a steady stream of
    /// overlapping reads keep it from happening, the WAL would grow without end. Every
    /// ten seconds, a WAL grown past `WAL_RESTART_BYTES` is checkpointed with RESTART,
    /// which waits (busy timeout) for the readers of old snapshots to finish and starts
    /// the WAL over; `journal_size_limit` then truncates the file.
    fn keep_the_wal_short(&self, wal: std::path::PathBuf) {
        let pool = self.write.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                ticker.tick().await;
                if pool.is_closed() {
                    break;
                }
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                if size < WAL_RESTART_BYTES {
                    continue;
                }
                match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(RESTART)")
                    .fetch_one(&pool)
                    .await
                {
                    Ok((busy, frames, copied)) => {
                        tracing::info!(size, busy, frames, copied, "restarted a long WAL")
                    }
                    Err(error) => tracing::warn!(%error, size, "WAL checkpoint failed"),
                }
            }
        });
    }

    pub(crate) fn artifact_location_for(&self, experiment_id: i64) -> String {
        format!("{}/{experiment_id}", self.default_artifact_root)
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that read first cannot wait for
    /// another process's writer and fails with SQLITE_BUSY_SNAPSHOT instead, which
    /// happens whenever several ctflow processes share one database file.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    /// Answers once the database does (for readiness probes).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Whether a write commits now (for readiness probes): a SQLite file's file system
    /// has `MIN_FREE_SPACE` left, and one row of `ctflow_write_probe` is rewritten. A
    /// writer busy for longer than `patience` is taken as able: a store under load is
    /// not a broken one.
    pub async fn check_writable(&self, patience: Duration) -> Result<()> {
        if let Some(file) = &self.database_file {
            // NB: a small write can still fit in pages the WAL already holds while every
            // larger one fails, so the probe alone would call a full disk writable.
            let folder = match file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let stats = rustix::fs::statvfs(folder).map_err(std::io::Error::from)?;
            let free = stats.f_bavail.saturating_mul(stats.f_frsize);
            if free < MIN_FREE_SPACE {
                return Err(Error::OutOfSpace(format!(
                    "{free} bytes free on the file system of {} (ctflow needs {MIN_FREE_SPACE})",
                    file.display()
                )));
            }
        }
        let probe = async {
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO ctflow_write_probe (id, probed_at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
            )
            .bind(ctflow_core::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        };
        match tokio::time::timeout(patience, probe).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }

    /// Closes the pools; on SQLite this checkpoints the WAL.
    pub async fn close(&self) {
        self.run_writes.close().await;
        if let Some(direct) = &self.direct {
            direct.close();
        }
        self.read.close().await;
        self.write.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_uris_follow_mlflow() {
        assert_eq!(sqlite_path("sqlite:///data/x.db").unwrap(), "data/x.db");
        assert_eq!(sqlite_path("sqlite:////abs/x.db").unwrap(), "/abs/x.db");
        assert_eq!(sqlite_path("sqlite:///:memory:").unwrap(), ":memory:");
        assert!(sqlite_path("mysql://x").is_err());
    }
}
