//! Leases: which process holds a role (the active controller) until when.
//!
//! A holder renews its lease well before it ends; another process takes it over once it
//! has ended. Times are the holders' clocks (kept in sync by NTP, as Kubernetes' Lease
//! objects assume too). Nothing in the CT engine depends on a single holder for safety:
//! every move of a pipeline run is a compare-and-set in the store. The lease keeps a
//! second controller from doing the same work twice.

use std::time::Duration;

use ctflow_core::now_ms;

use crate::Store;
use crate::error::Result;

/// The role every CT engine reports its presence under (`Store::report_presence`).
pub const CONTROLLER_ROLE: &str = "controller";

/// Who holds a lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    /// Epoch ms.
    pub expires_at: i64,
    /// Grows at every change of holder.
    pub generation: i64,
    pub acquired_at: i64,
}

impl Store {
    /// Takes the lease `name` for `holder` (when it is free, ended, or already theirs) and
    /// extends it to `ttl` from now. The generation when `holder` holds it afterwards.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let generation: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at, generation, acquired_at) \
             VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (name) DO UPDATE SET \
               expires_at = excluded.expires_at, \
               generation = CASE WHEN leases.holder = excluded.holder \
                 THEN leases.generation ELSE leases.generation + 1 END, \
               acquired_at = CASE WHEN leases.holder = excluded.holder \
                 THEN leases.acquired_at ELSE excluded.acquired_at END, \
               holder = excluded.holder \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 \
             RETURNING generation",
        )
        .bind(name)
        .bind(holder)
        .bind(expires)
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        Ok(generation)
    }

    /// Ends `holder`'s lease now, so another process need not wait for it to run out.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Records that `holder` is running as a `role` (a controller) until `ttl` from now: a
    /// lease of its own per holder, renewed while it runs and ended when it stops, so that
    /// the dashboard can say when nothing will pick a pipeline run up.
    pub async fn report_presence(&self, role: &str, holder: &str, ttl: Duration) -> Result<()> {
        self.acquire_lease(&presence_lease(role, holder), holder, ttl)
            .await?;
        Ok(())
    }

    /// Ends `holder`'s presence as a `role` now.
    pub async fn end_presence(&self, role: &str, holder: &str) -> Result<()> {
        self.release_lease(&presence_lease(role, holder), holder)
            .await
    }

    /// The holders present as a `role` now.
    pub async fn present(&self, role: &str) -> Result<Vec<String>> {
        let holders: Vec<String> = sqlx::query_scalar(
            "SELECT holder FROM leases WHERE name LIKE $1 AND expires_at > $2 ORDER BY holder",
        )
        .bind(format!("presence/{role}/%"))
        .bind(now_ms())
        .fetch_all(&self.read)
        .await?;
        Ok(holders)
    }

    pub async fn lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT holder, expires_at, generation, acquired_at FROM leases WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(
            |(holder, expires_at, generation, acquired_at)| LeaseRecord {
                holder,
                expires_at,
                generation,
                acquired_at,
            },
        ))
    }
}

fn presence_lease(role: &str, holder: &str) -> String {
    format!("presence/{role}/{holder}")
}
