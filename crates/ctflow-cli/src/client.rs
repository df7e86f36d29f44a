//! The CLI's connection to a tracking server.

use anyhow::Result;
pub use ctflow_worker::client::TrackingClient;

/// Who the CLI says it is. A server without `--auth` records this name in the registry
/// ledger; one with `--auth` records the signed-in user instead.
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn connect(tracking_uri: &str) -> Result<TrackingClient> {
    Ok(TrackingClient::new(tracking_uri, &current_user())?)
}

/// A client signed in with `token` when there is one, else from the environment.
pub fn connect_as(tracking_uri: &str, token: Option<&str>) -> Result<TrackingClient> {
    Ok(match token {
        Some(token) => TrackingClient::with_token(tracking_uri, &current_user(), token)?,
        None => TrackingClient::new(tracking_uri, &current_user())?,
    })
}
