//! One active controller among several: the one holding the `controller` lease in the
//! store. The others stand by and take over once the lease runs out (a holder that
//! stops cleanly ends it at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ctflow_bus::Bus;
use ctflow_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{Controller, ControllerConfig, Result, pause};

#[derive(Debug, Clone)]
pub struct Election {
    /// The lease's name; controllers that share it elect one among them.
    pub lease: String,
    /// Who this process is (recorded as the holder).
    pub holder: String,
    /// How long a lease lasts without renewal: the bound on a takeover.
    pub ttl: Duration,
    /// True while this process leads (for its readiness endpoint).
    pub leading: Arc<AtomicBool>,
}

impl Election {
    pub fn new(holder: String, ttl: Duration) -> Election {
        Election {
            lease: "controller".into(),
            holder,
            ttl,
            leading: Arc::new(AtomicBool::new(false)),
        }
    }

    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// Runs a controller whenever this process holds the lease, until `shutdown`.
pub async fn run_elected(
    store: Store,
    bus: Arc<dyn Bus>,
    config: ControllerConfig,
    election: Election,
    shutdown: CancellationToken,
) -> Result<()> {
    loop {
        let generation = loop {
            match store
                .acquire_lease(&election.lease, &election.holder, election.ttl)
                .await
            {
                Ok(Some(generation)) => break generation,
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot read the controller lease"),
            }
            if !pause(
                election.renew_every().min(Duration::from_secs(1)),
                &shutdown,
            )
            .await
            {
                return Ok(());
            }
        };
        tracing::info!(
            holder = election.holder,
            generation,
            "this controller leads"
        );
        election.leading.store(true, Ordering::SeqCst);
        let term = shutdown.child_token();
        let controller = Controller::new(store.clone(), bus.clone(), config.clone());
        if let Err(error) = controller.load_pipelines().await {
            tracing::warn!(%error, "cannot load the pipeline folder");
        }
        let mut task = tokio::spawn(controller.run(term.clone()));
        let mut renewed = Instant::now();
        let outcome = loop {
            tokio::select! {
                _ = tokio::time::sleep(election.renew_every()) => {}
                _ = shutdown.cancelled() => break None,
                done = &mut task => break Some(done),
            }
            match store
                .acquire_lease(&election.lease, &election.holder, election.ttl)
                .await
            {
                Ok(Some(now)) if now == generation => renewed = Instant::now(),
                Ok(_) => {
                    tracing::warn!(
                        holder = election.holder,
                        "another controller took the lease; standing by"
                    );
                    break None;
                }
                // NB: stop acting before the lease can have run out for the others.
                Err(error) if renewed.elapsed() >= election.ttl * 2 / 3 => {
                    tracing::warn!(%error, "cannot renew the controller lease in time; standing by");
                    break None;
                }
                Err(error) => tracing::warn!(%error, "cannot renew the controller lease; retrying"),
            }
        };
        election.leading.store(false, Ordering::SeqCst);
        term.cancel();
        let finished = match outcome {
            Some(done) => done,
            None => task.await,
        };
        match finished {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the controller stopped"),
            Err(join) => tracing::error!(%join, "the controller panicked"),
        }
        // A controller that stopped on an error starts again after a pause.
        if shutdown.is_cancelled() || !pause(Duration::from_secs(1), &shutdown).await {
            break;
        }
    }
    if let Err(error) = store.release_lease(&election.lease, &election.holder).await {
        tracing::warn!(%error, "cannot end the controller lease");
    }
    Ok(())
}
