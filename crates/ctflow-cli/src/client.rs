//! The CLI's connection to a tracking server.

use anyhow::Result;
pub use ctflow_worker::client::TrackingClient;

/// Who the CLI says it is, found as Python's `getpass.getuser()` (what MLflow credits
/// runs to) finds it: `USER` or `LOGNAME`, else the account of the process's user id.
/// A server without `--auth` records this name in the registry ledger and on triggers
/// and approvals; one with `--auth` records the signed-in user instead.
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(account_of_this_process)
        .unwrap_or_else(|| "unknown".into())
}

/// The name `/etc/passwd` gives the process's real user id (containers rarely set USER).
fn account_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    account_name(&status, &passwd)
}

/// The account named in `passwd` for the real uid in a `/proc/<pid>/status` text.
fn account_name(status: &str, passwd: &str) -> Option<String> {
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()? == uid && !name.is_empty()).then(|| name.to_string())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_comes_from_the_real_uid() {
        let status = "Name:\tctflow\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\n";
        let passwd = "root:x:0:0:root:/root:/bin/bash\nml:x:1000:1000::/home/ml:/bin/sh\n";
        assert_eq!(account_name(status, passwd), Some("ml".into()));
        assert_eq!(
            account_name("Uid:\t0\t0\t0\t0\n", passwd),
            Some("root".into())
        );
        assert_eq!(account_name("Uid:\t42\t42\t42\t42\n", passwd), None);
        assert_eq!(account_name("Name: x\n", passwd), None);
    }
}
