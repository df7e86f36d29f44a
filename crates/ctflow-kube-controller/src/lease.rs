//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it: read
//! the lease; take it when it is free or its holder stopped renewing; write it back with
//! the `resourceVersion` that was read, so of two replicas racing for it the API server
//! lets exactly one win (the other gets 409 Conflict).
//!
//! Expiry is judged by this process's own clock: a lease counts as expired when its
//! record has not changed for `leaseDurationSeconds` since this process last saw it
//! change, so clock skew between nodes does not matter.

use std::time::Duration;

use ctflow_controller::Claim;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    /// The Lease object's name; replicas that share it elect one among them.
    pub name: String,
    /// This replica (the pod name in a cluster).
    pub identity: String,
    /// How long a lease lasts without renewal: the bound on a takeover.
    pub duration: Duration,
}

impl LeaseConfig {
    /// Renewals and standby polls happen every third of the lease.
    fn retry_every(&self) -> Duration {
        self.duration / 3
    }

    /// A leader that could not renew for this long stops acting, before the others
    /// may take over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What this replica last read of the lease, and when (its own clock).
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Holding,
    HeldByOther,
    /// The API server could not be asked (a network or server error).
    Unknown,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Competes for the lease until `shutdown`, recording in `leading` whether this replica
    /// holds it. A clean stop hands the lease back at once.
    pub async fn run(mut self, leading: Claim, shutdown: CancellationToken) {
        let mut renewed = Instant::now();
        loop {
            let attempt = self.try_acquire_or_renew().await;
            let is_leader = leading.holds();
            match attempt {
                Attempt::Holding => {
                    renewed = Instant::now();
                    if !is_leader {
                        tracing::info!(
                            lease = self.config.name,
                            identity = self.config.identity,
                            "this replica leads"
                        );
                        leading.set(true);
                    }
                }
                Attempt::HeldByOther if is_leader => {
                    tracing::warn!(
                        lease = self.config.name,
                        "another replica holds the lease; standing by"
                    );
                    leading.set(false);
                }
                Attempt::Unknown
                    if is_leader && renewed.elapsed() >= self.config.renew_deadline() =>
                {
                    tracing::warn!(
                        lease = self.config.name,
                        "cannot renew the lease in time; standing by"
                    );
                    leading.set(false);
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_every()) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if leading.holds() {
            leading.set(false);
            self.release().await;
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Attempt {
        let now = Timestamp::now();
        let lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return self.create(now).await,
            Err(error) => {
                tracing::warn!(%error, lease = self.config.name, "cannot read the lease");
                return Attempt::Unknown;
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|seen| seen.spec != spec) {
            self.observed = Some(Observed {
                spec: spec.clone(),
                at: Instant::now(),
            });
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        if !mine && !holder.is_empty() && !self.expired(&spec) {
            return Attempt::HeldByOther;
        }
        let mut next = spec.clone();
        next.holder_identity = Some(self.config.identity.clone());
        next.lease_duration_seconds = Some(self.config.duration.as_secs().max(1) as i32);
        next.renew_time = Some(MicroTime(now));
        if !mine {
            next.acquire_time = Some(MicroTime(now));
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        let mut updated = lease;
        updated.spec = Some(next.clone());
        // NB: `replace` sends the resourceVersion that was read: a concurrent writer makes
        // this a 409 instead of two holders.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {
                self.observed = Some(Observed {
                    spec: next,
                    at: Instant::now(),
                });
                Attempt::Holding
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Attempt::HeldByOther,
            Err(error) => {
                tracing::warn!(%error, lease = self.config.name, "cannot write the lease");
                Attempt::Unknown
            }
        }
    }

    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .map_or(self.config.duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        self.observed
            .as_ref()
            .is_none_or(|seen| seen.at.elapsed() >= duration)
    }

    async fn create(&mut self, now: Timestamp) -> Attempt {
        let spec = LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = Some(Observed {
                    spec,
                    at: Instant::now(),
                });
                Attempt::Holding
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Attempt::HeldByOther,
            Err(error) => {
                tracing::warn!(%error, lease = self.config.name, "cannot create the lease");
                Attempt::Unknown
            }
        }
    }

    /// Ends this replica's lease so a standby takes over without waiting it out.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(error) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, lease = self.config.name, "cannot hand the lease back");
        }
    }
}
