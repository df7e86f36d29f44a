//! The controller's presence in the store: while it runs, a short lease of its own says so
//! (`Store::report_presence`), so that the server can tell a pipeline run that waits for a
//! controller from one that waits for nothing (a bare `ctflow server`).

use std::time::Duration;

use ctflow_store::{CONTROLLER_ROLE, Store};
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::pause;

/// How long one report lasts; renewed three times as often, so that a controller is seen as
/// gone at most this long after it died.
const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Reports this controller present until `shutdown`, then ends the report. A failed report is
/// logged and retried: presence is advice for people, never a reason to stop the engine.
pub(crate) async fn run(store: Store, shutdown: CancellationToken) -> Result<()> {
    let holder = ctflow_core::process_name();
    loop {
        if let Err(error) = store
            .report_presence(CONTROLLER_ROLE, &holder, PRESENCE_TTL)
            .await
        {
            tracing::warn!(%error, "cannot record this controller's presence");
        }
        if !pause(PRESENCE_TTL / 3, &shutdown).await {
            break;
        }
    }
    if let Err(error) = store.end_presence(CONTROLLER_ROLE, &holder).await {
        tracing::warn!(%error, "cannot end this controller's presence");
    }
    Ok(())
}
