//! One active controller among several replicas.
//!
//! Whether this process leads is one value, a [`Leadership`]: an elector feeds it through
//! its [`Claim`] (the store's `controller` lease here, [`StoreElection`]; a Kubernetes
//! Lease in `ctflow-kube`), and everything that depends on leading reads it: the engine
//! runs only while it is true ([`run_while_leading`]) and the readiness check reports it.

use std::future::Future;
use std::time::{Duration, Instant};

use ctflow_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pause;

/// Whether this process leads now, and the changes to come.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Term>);

/// The elector's side of a [`Leadership`].
#[derive(Debug)]
pub struct Claim(watch::Sender<Term>);

/// Leading or not, and which stretch of leading: a claim lost and taken again between two
/// looks is a new term, so work begun in the old one is still stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Term {
    leads: bool,
    number: u64,
}

/// The elector went away: no change will ever come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the elector stopped")]
pub struct ElectorGone;

/// A claim not held yet, and the leadership it decides.
pub fn leadership() -> (Claim, Leadership) {
    let (tx, rx) = watch::channel(Term::default());
    (Claim(tx), Leadership(rx))
}

impl Leadership {
    pub fn leads(&self) -> bool {
        self.0.borrow().leads
    }

    /// Waits until leading is `leads`.
    pub async fn wait_until(&mut self, leads: bool) -> Result<(), ElectorGone> {
        self.0
            .wait_for(|now| now.leads == leads)
            .await
            .map(|_| ())
            .map_err(|_| ElectorGone)
    }

    /// Waits for a term to lead in; its number.
    async fn next_term(&mut self) -> Result<u64, ElectorGone> {
        self.0
            .wait_for(|now| now.leads)
            .await
            .map(|term| term.number)
            .map_err(|_| ElectorGone)
    }

    /// Waits until term `number` is over (a later term is another one).
    async fn term_over(&mut self, number: u64) {
        let _ = self
            .0
            .wait_for(|now| !now.leads || now.number != number)
            .await;
    }
}

impl Claim {
    pub fn holds(&self) -> bool {
        self.0.borrow().leads
    }

    /// Records whether this process holds the claim now.
    pub fn set(&self, holds: bool) {
        self.0.send_if_modified(|now| {
            if now.leads == holds {
                return false;
            }
            if holds {
                now.number += 1;
            }
            now.leads = holds;
            true
        });
    }
}

/// Runs `start(term)` whenever `leadership` says this process leads; cancels `term` and
/// waits for it when leadership is lost, and starts it again (after a second) if it ends
/// on its own while still leading. Returns on `shutdown` or when the elector is gone.
pub async fn run_while_leading<F, Fut>(
    mut leadership: Leadership,
    shutdown: CancellationToken,
    mut start: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let number = tokio::select! {
            waited = leadership.next_term() => match waited {
                Ok(number) => number,
                Err(ElectorGone) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let term = shutdown.child_token();
        let mut task = tokio::spawn(start(term.clone()));
        let ended = tokio::select! {
            _ = leadership.term_over(number) => None,
            _ = term.cancelled() => None,
            done = &mut task => Some(done),
        };
        term.cancel();
        let ended_by_itself = ended.is_some();
        let done = match ended {
            Some(done) => done,
            None => task.await,
        };
        if let Err(join) = done {
            tracing::error!(%join, "the leader's work panicked");
        }
        if shutdown.is_cancelled() {
            return;
        }
        if ended_by_itself && !pause(Duration::from_secs(1), &shutdown).await {
            return;
        }
    }
}

/// Election on the store's lease table, for controllers without Kubernetes.
#[derive(Debug, Clone)]
pub struct StoreElection {
    /// The lease's name; controllers that share it elect one among them.
    pub lease: String,
    /// Who this process is (recorded as the holder).
    pub holder: String,
    /// How long a lease lasts without renewal: the bound on a takeover.
    pub ttl: Duration,
}

impl StoreElection {
    pub fn new(holder: String, ttl: Duration) -> StoreElection {
        StoreElection {
            lease: "controller".into(),
            holder,
            ttl,
        }
    }

    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Takes and renews the lease, recording in `claim` whether this process holds it,
    /// until `shutdown`; then hands the lease back (a standby takes over at once).
    pub async fn run(self, store: Store, claim: Claim, shutdown: CancellationToken) {
        let mut held: Option<(i64, Instant)> = None;
        loop {
            match store
                .acquire_lease(&self.lease, &self.holder, self.ttl)
                .await
            {
                Ok(Some(generation)) => {
                    if held.is_none_or(|(was, _)| was != generation) {
                        tracing::info!(holder = self.holder, generation, "this controller leads");
                    }
                    held = Some((generation, Instant::now()));
                }
                Ok(None) => {
                    if held.take().is_some() {
                        tracing::warn!(
                            holder = self.holder,
                            "another controller took the lease; standing by"
                        );
                    }
                }
                // NB: stop acting before the lease can have run out for the others.
                Err(error) => match held {
                    Some((_, renewed)) if renewed.elapsed() >= self.ttl * 2 / 3 => {
                        tracing::warn!(%error, "cannot renew the controller lease in time; standing by");
                        held = None;
                    }
                    Some(_) => {
                        tracing::warn!(%error, "cannot renew the controller lease; retrying")
                    }
                    None => tracing::warn!(%error, "cannot read the controller lease"),
                },
            }
            claim.set(held.is_some());
            let wait = if held.is_some() {
                self.renew_every()
            } else {
                self.renew_every().min(Duration::from_secs(1))
            };
            if !pause(wait, &shutdown).await {
                break;
            }
        }
        claim.set(false);
        if held.is_some()
            && let Err(error) = store.release_lease(&self.lease, &self.holder).await
        {
            tracing::warn!(%error, "cannot end the controller lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_work_runs_only_while_leading_and_restarts_when_it_ends() {
        let (claim, leadership) = leadership();
        let shutdown = CancellationToken::new();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let runner = tokio::spawn(run_while_leading(
            leadership.clone(),
            shutdown.clone(),
            move |term: CancellationToken| {
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(());
                    term.cancelled().await;
                }
            },
        ));
        tokio::task::yield_now().await;
        assert!(started.try_recv().is_err(), "nothing runs before leading");
        claim.set(true);
        started.recv().await.expect("started when leading");
        // Lost and taken again before the runner looked: still a new term.
        claim.set(false);
        claim.set(true);
        started.recv().await.expect("started again in the new term");
        shutdown.cancel();
        runner.await.expect("the runner ends on shutdown");
    }

    #[tokio::test]
    async fn a_claim_changes_only_on_a_change() {
        let (claim, mut leadership) = leadership();
        assert!(!leadership.leads() && !claim.holds());
        claim.set(true);
        leadership.wait_until(true).await.expect("leads");
        assert!(claim.holds());
        drop(claim);
        assert_eq!(leadership.wait_until(false).await, Err(ElectorGone));
    }
}
