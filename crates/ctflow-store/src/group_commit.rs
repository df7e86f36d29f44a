//! Group commit for what clients log to runs (metrics, params, tags): the requests that
//! queue while a transaction is being written share the next transaction and its one
//! fsync, so concurrent writers cost one commit per group, not one per request.
//!
//! Each request runs inside its own savepoint, so one request's refusal (a deleted run, a
//! changed parameter) rolls back that request alone. Nobody is answered before the
//! group's commit returns: a success still means committed. When the group transaction
//! itself fails (its BEGIN, a savepoint, its COMMIT), every request is written again in a
//! transaction of its own, so each gets its own true answer.

use std::sync::Arc;

use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::Backend;
use crate::error::Result;
use crate::runs::{RunWrite, apply_run_write};

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
}

impl GroupCommitter {
    /// Starts `writers` writer tasks on `pool` (one on SQLite: it has one writer).
    pub(crate) fn start(pool: AnyPool, backend: Backend, writers: usize) -> GroupCommitter {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_groups(receiver.clone(), pool.clone(), backend));
        }
        GroupCommitter { queue }
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

async fn write_groups(
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    pool: AnyPool,
    backend: Backend,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        write_group(&pool, backend, group).await;
    }
}

async fn begin(pool: &AnyPool, backend: Backend) -> Result<Transaction<'static, Any>> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    })
}

async fn write_group(pool: &AnyPool, backend: Backend, group: Vec<Queued>) {
    if group.len() == 1 {
        for queued in group {
            let result = write_alone(pool, backend, &queued.write).await;
            let _ = queued.reply.send(result);
        }
        return;
    }
    match write_together(pool, backend, &group).await {
        Ok(results) => {
            tracing::trace!(requests = group.len(), "group committed");
            for (queued, result) in group.into_iter().zip(results) {
                let _ = queued.reply.send(result);
            }
        }
        Err(error) => {
            tracing::debug!(%error, requests = group.len(), "group commit failed; writing its requests one by one");
            for queued in group {
                let result = write_alone(pool, backend, &queued.write).await;
                let _ = queued.reply.send(result);
            }
        }
    }
}

/// One transaction, one savepoint per request. The outer error means nothing committed.
async fn write_together(
    pool: &AnyPool,
    backend: Backend,
    group: &[Queued],
) -> Result<Vec<Result<()>>> {
    let mut tx = begin(pool, backend).await?;
    let mut results = Vec::with_capacity(group.len());
    for queued in group {
        tx.execute("SAVEPOINT run_write").await?;
        match apply_run_write(&mut tx, backend, &queued.write).await {
            Ok(()) => {
                tx.execute("RELEASE SAVEPOINT run_write").await?;
                results.push(Ok(()));
            }
            Err(refused) => {
                tx.execute("ROLLBACK TO SAVEPOINT run_write").await?;
                tx.execute("RELEASE SAVEPOINT run_write").await?;
                results.push(Err(refused));
            }
        }
    }
    tx.commit().await?;
    Ok(results)
}

async fn write_alone(pool: &AnyPool, backend: Backend, write: &RunWrite) -> Result<()> {
    let mut tx = begin(pool, backend).await?;
    apply_run_write(&mut tx, backend, write).await?;
    tx.commit().await?;
    Ok(())
}
