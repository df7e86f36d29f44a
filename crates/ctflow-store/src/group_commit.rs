//! Group commit for what clients log to runs (metrics, params, tags): the requests that
//! queue while a transaction is being written share the next transaction and its one
//! fsync, so concurrent writers cost one commit per group, not one per request.
//!
//! Each request runs inside its own savepoint, so one request's refusal (a deleted run, a
//! changed parameter) rolls back that request alone. Nobody is answered before the
//! group's commit returns: a success still means committed. When the group transaction
//! itself fails (its BEGIN, a savepoint, its COMMIT), every request is written again in a
//! transaction of its own, so each gets its own true answer.
//!
//! On a SQLite file the groups are written on SQLite's own C interface, on a blocking
//! thread, with the statements prepared once (see `write_connection`): sqlx's driver binds
//! every value through its `Any` arguments and hands each statement to a worker thread,
//! which cost a log-batch about as much as SQLite's own work. The group writer then holds
//! the store's one sqlx write connection for the length of each group, so its other
//! writes wait in-process as before instead of meeting SQLite's lock.

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::Backend;
use crate::error::{Error, Result};
use crate::runs::{RunWrite, apply_run_write};
use crate::write_connection::WriteConnection;

/// The most requests one transaction takes (a log-batch holds up to 1,000 metrics).
const MAX_GROUP: usize = 64;
/// Requests waiting for a writer before submitters wait for room.
const QUEUE_DEPTH: usize = 1024;

struct Queued {
    write: RunWrite,
    reply: oneshot::Sender<Result<()>>,
}

/// The queue in front of the group writers. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommitter {
    queue: mpsc::Sender<Queued>,
    /// The direct writer's stop: it answers once its connection is closed.
    stop: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

impl GroupCommitter {
    /// Starts `writers` writer tasks on `pool` (one on SQLite: it has one writer).
    pub(crate) fn start(pool: AnyPool, backend: Backend, writers: usize) -> GroupCommitter {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_groups(receiver.clone(), pool.clone(), backend));
        }
        GroupCommitter { queue, stop: None }
    }

    /// Starts the one writer of a SQLite file, writing on SQLite's C interface; `pool` is
    /// the store's single-connection write pool, held while a group is written.
    pub(crate) fn start_direct(pool: AnyPool, writer: DirectWriter) -> GroupCommitter {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let (stop, stopped) = mpsc::channel(1);
        tokio::spawn(write_groups_directly(receiver, stopped, pool, writer));
        GroupCommitter {
            queue,
            stop: Some(stop),
        }
    }

    /// Stops a direct writer and closes its connection (the store is closing: the last
    /// connection to close checkpoints the WAL). Later writes are refused.
    pub(crate) async fn close(&self) {
        if let Some(stop) = &self.stop {
            let (done, closed) = oneshot::channel();
            if stop.send(done).await.is_ok() {
                let _ = closed.await;
            }
        }
    }

    /// Writes `write` and answers once it is committed (or refused).
    pub(crate) async fn submit(&self, write: RunWrite) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> crate::Error {
    crate::Error::Database(sqlx::Error::PoolClosed)
}

/// An error for each request of a group from one that is not `Clone`, kept to the kind
/// that decides the answer (a closed store, a writer busy past the pool's timeout).
fn like(failed: &sqlx::Error) -> Error {
    match failed {
        sqlx::Error::PoolClosed => stopped(),
        sqlx::Error::PoolTimedOut => Error::Database(sqlx::Error::PoolTimedOut),
        other => Error::Io(std::io::Error::other(format!(
            "the store's write connection failed: {other}"
        ))),
    }
}

/// Answers every request of `group` with an error of its own.
fn refuse(group: Vec<Queued>, error: impl Fn() -> Error) {
    for queued in group {
        let _ = queued.reply.send(Err(error()));
    }
}

/// The next group: the first request to arrive and whatever queued behind it. None once
/// the store is gone.
async fn next_group(receiver: &mut mpsc::Receiver<Queued>) -> Option<Vec<Queued>> {
    let mut group = vec![receiver.recv().await?];
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn write_groups(
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    pool: AnyPool,
    backend: Backend,
) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            match next_group(&mut receiver).await {
                Some(group) => group,
                None => return,
            }
        };
        write_group(
            &mut PoolTarget {
                pool: &pool,
                backend,
            },
            group,
        )
        .await;
    }
}

/// The run writer of a SQLite file: where it is and its connection, opened with the
/// store's pragmas (its durability among them).
pub(crate) struct DirectWriter {
    file: PathBuf,
    pragmas: &'static str,
    /// None while a group has it, or after a group's thread was lost with it.
    connection: Option<rusqlite::Connection>,
}

impl DirectWriter {
    /// Opens the writer's connection now, so a store that cannot write fails to open.
    pub(crate) fn open(file: PathBuf, pragmas: &'static str) -> Result<DirectWriter> {
        let connection = open_writer(&file, pragmas)?;
        Ok(DirectWriter {
            file,
            pragmas,
            connection: Some(connection),
        })
    }
}

fn open_writer(file: &std::path::Path, pragmas: &str) -> rusqlite::Result<rusqlite::Connection> {
    // NB: no mutex of SQLite's own: the connection is used by one thread at a time.
    let connection = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.execute_batch(pragmas)?;
    // A group's statements, the 1000-row inserts of each width among them.
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

async fn write_groups_directly(
    mut receiver: mpsc::Receiver<Queued>,
    mut stop: mpsc::Receiver<oneshot::Sender<()>>,
    pool: AnyPool,
    mut writer: DirectWriter,
) {
    loop {
        let group = tokio::select! {
            group = next_group(&mut receiver) => match group {
                Some(group) => group,
                None => return,
            },
            Some(done) = stop.recv() => {
                drop(writer.connection.take());
                let _ = done.send(());
                return;
            }
        };
        // NB: while this is held, the store's other SQLite writes wait for it in-process.
        let lock = match pool.acquire().await {
            Ok(lock) => lock,
            Err(failed) => {
                refuse(group, || like(&failed));
                continue;
            }
        };
        let connection = writer.connection.take();
        let (file, pragmas) = (writer.file.clone(), writer.pragmas);
        let runtime = tokio::runtime::Handle::current();
        let written = tokio::task::spawn_blocking(move || {
            let opened = connection.map_or_else(|| open_writer(&file, pragmas), Ok);
            let mut connection = match opened {
                Ok(connection) => connection,
                Err(error) => {
                    let message = error.to_string();
                    refuse(group, || {
                        Error::Io(std::io::Error::other(format!(
                            "cannot open the database to write: {message}"
                        )))
                    });
                    return None;
                }
            };
            // NB: the connection's futures never wait; block_on only drives them.
            runtime.block_on(write_group(&mut connection, group));
            Some(connection)
        })
        .await;
        drop(lock);
        writer.connection = written.ok().flatten();
    }
}

/// Where a writer task writes: the pool's transactions (sqlx) or the direct writer's
/// connection. `write_group` decides, for either, when requests share a transaction.
trait GroupTarget {
    /// One transaction, one savepoint per request. The outer error means nothing committed.
    async fn together(&mut self, group: &[Queued]) -> Result<Vec<Result<()>>>;
    /// One request in a transaction of its own.
    async fn alone(&mut self, write: &RunWrite) -> Result<()>;
}

struct PoolTarget<'p> {
    pool: &'p AnyPool,
    backend: Backend,
}

impl GroupTarget for PoolTarget<'_> {
    async fn together(&mut self, group: &[Queued]) -> Result<Vec<Result<()>>> {
        let mut tx = begin(self.pool, self.backend).await?;
        let results = write_each(&mut tx, self.backend, group).await?;
        tx.commit().await?;
        Ok(results)
    }

    async fn alone(&mut self, write: &RunWrite) -> Result<()> {
        let mut tx = begin(self.pool, self.backend).await?;
        apply_run_write(&mut tx, self.backend, write).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl GroupTarget for rusqlite::Connection {
    async fn together(&mut self, group: &[Queued]) -> Result<Vec<Result<()>>> {
        in_transaction(self, async |connection| {
            write_each(connection, Backend::Sqlite, group).await
        })
        .await
    }

    async fn alone(&mut self, write: &RunWrite) -> Result<()> {
        in_transaction(self, async |connection| {
            apply_run_write(connection, Backend::Sqlite, write).await
        })
        .await
    }
}

/// `work` between `BEGIN IMMEDIATE` and `COMMIT`, rolled back when any of it fails (as a
/// dropped sqlx transaction is).
async fn in_transaction<T>(
    connection: &mut rusqlite::Connection,
    work: impl AsyncFnOnce(&mut rusqlite::Connection) -> Result<T>,
) -> Result<T> {
    let result = async {
        connection.execute("BEGIN IMMEDIATE", &[]).await?;
        let value = work(connection).await?;
        connection.execute("COMMIT", &[]).await?;
        Ok(value)
    }
    .await;
    if result.is_err() {
        roll_back(connection);
    }
    result
}

/// Ends a transaction that failed part way (sqlx's transactions do this when dropped).
fn roll_back(connection: &rusqlite::Connection) {
    if !connection.is_autocommit()
        && let Err(error) = connection.execute_batch("ROLLBACK")
    {
        tracing::warn!(%error, "could not roll back a failed run write");
    }
}

async fn begin(pool: &AnyPool, backend: Backend) -> Result<Transaction<'static, Any>> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    })
}

async fn write_group(target: &mut impl GroupTarget, group: Vec<Queued>) {
    if group.len() == 1 {
        for queued in group {
            let result = target.alone(&queued.write).await;
            let _ = queued.reply.send(result);
        }
        return;
    }
    match target.together(&group).await {
        Ok(results) => {
            tracing::trace!(requests = group.len(), "group committed");
            for (queued, result) in group.into_iter().zip(results) {
                let _ = queued.reply.send(result);
            }
        }
        Err(error) => {
            tracing::debug!(%error, requests = group.len(), "group commit failed; writing its requests one by one");
            for queued in group {
                let result = target.alone(&queued.write).await;
                let _ = queued.reply.send(result);
            }
        }
    }
}

/// Each request of a group in its own savepoint of the transaction begun on `tx`.
async fn write_each(
    tx: &mut impl WriteConnection,
    backend: Backend,
    group: &[Queued],
) -> Result<Vec<Result<()>>> {
    let mut results = Vec::with_capacity(group.len());
    for queued in group {
        tx.execute("SAVEPOINT run_write", &[]).await?;
        match apply_run_write(tx, backend, &queued.write).await {
            Ok(()) => {
                tx.execute("RELEASE SAVEPOINT run_write", &[]).await?;
                results.push(Ok(()));
            }
            Err(refused) => {
                tx.execute("ROLLBACK TO SAVEPOINT run_write", &[]).await?;
                tx.execute("RELEASE SAVEPOINT run_write", &[]).await?;
                results.push(Err(refused));
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use ctflow_core::entities::KeyValue;

    use crate::runs::NewRun;
    use crate::{BatchMetric, Store, StoreOptions};

    fn point(step: i64) -> BatchMetric {
        BatchMetric {
            key: "loss".into(),
            value: step as f64,
            timestamp: 1000 + step,
            step,
            model_id: None,
            dataset_name: None,
            dataset_digest: None,
        }
    }

    /// Eight writers at once share groups on the direct writer; each answer is its own,
    /// and what was answered is there after the store is closed and opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_groups_commit_and_close_ends_the_writer() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("groups.db");
        let options = StoreOptions {
            backend_store_uri: format!("sqlite:///{}", file.display()),
            default_artifact_root: "mlflow-artifacts:/".into(),
            max_connections: 4,
            durability: Default::default(),
        };
        let store = Store::open(options.clone()).await.unwrap();
        let run_id = store
            .create_run(NewRun {
                experiment_id: 0,
                user_id: "tester".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .info
            .run_id;
        store.log_param(&run_id, "lr", "0.1").await.unwrap();
        let mut writers = Vec::new();
        for writer in 0..8i64 {
            let (store, run_id) = (store.clone(), run_id.clone());
            writers.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for batch in 0..10 {
                    let first = (writer * 10 + batch) * 100;
                    let points = (first..first + 100).map(point).collect();
                    // Writer 3 changes a logged parameter: only its own requests are
                    // refused, whichever group they share.
                    let param = KeyValue::new("lr", if writer == 3 { "0.2" } else { "0.1" });
                    let answer = store.log_batch(&run_id, points, vec![param], vec![]).await;
                    answers.push(answer.is_ok());
                }
                answers
            }));
        }
        let mut accepted = 0;
        for (writer, handle) in writers.into_iter().enumerate() {
            let answers = handle.await.unwrap();
            let expected = writer != 3;
            assert!(
                answers.iter().all(|ok| *ok == expected),
                "writer {writer}: {answers:?}"
            );
            accepted += answers.iter().filter(|ok| **ok).count();
        }
        store.close().await;
        assert!(
            !folder.path().join("groups.db-wal").exists(),
            "the last connection closed checkpoints the WAL away"
        );
        let refused = store
            .log_batch(&run_id, vec![point(0)], vec![], vec![])
            .await;
        assert!(refused.is_err(), "{refused:?}");

        let reopened = Store::open(options).await.unwrap();
        let (points, _) = reopened
            .get_metric_history_points(&run_id, "loss", None, None)
            .await
            .unwrap();
        assert_eq!(accepted, 70);
        assert_eq!(points.len(), accepted * 100);
        reopened.close().await;
    }
}
