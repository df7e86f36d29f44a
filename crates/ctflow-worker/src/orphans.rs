//! Job processes whose worker died.
//!
//! A job's command runs in its own process group, so a worker killed with SIGKILL leaves
//! it running: it would go on logging to a run that another worker now repeats, and could
//! even mark that run finished. Every job's environment names its worker as
//! `CTFLOW_WORKER=<pid>:<start time>` (the start time in clock ticks since boot, so a
//! reused pid is not mistaken for the worker) and its installation as
//! `CTFLOW_INSTALLATION=<tracking URI>`; any worker of the same installation on the
//! machine stops the processes whose worker is gone. Another installation's jobs (another
//! `ctflow up` on the same host, say) are never touched.

use std::path::Path;

pub const WORKER_VAR: &str = "CTFLOW_WORKER";
pub const INSTALLATION_VAR: &str = "CTFLOW_INSTALLATION";

/// The installation a worker belongs to: the tracking server it reports to, written
/// one way whatever way it was given (`HTTP://Host:5000/` is `http://host:5000`).
pub fn installation_id(tracking_uri: &str) -> String {
    let uri = tracking_uri.trim().trim_end_matches('/');
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let mut id = format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase()
            );
            if !path.is_empty() {
                id.push('/');
                id.push_str(path);
            }
            id
        }
        None => uri.to_string(),
    }
}

/// A job process whose worker is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: u32,
    /// The dead worker's identity.
    pub worker: String,
    /// Its command line, for the log.
    pub command: String,
}

/// The start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // NB: the command name (field 2) may hold spaces and parentheses; fields after it
    // start after its last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name, so field 22 is the 20th from there.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process's identity as written into its jobs' environments.
pub fn worker_identity() -> String {
    let pid = std::process::id();
    let started = start_time(Path::new("/proc"), pid).unwrap_or(0);
    format!("{pid}:{started}")
}

/// Whether the worker named by an identity still runs.
fn alive(proc_root: &Path, identity: &str) -> bool {
    let Some((pid, started)) = identity.split_once(':') else {
        return false;
    };
    let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
        return false;
    };
    start_time(proc_root, pid) == Some(started)
}

/// The value of `name` in a process's environment block.
fn variable<'a>(environ: &'a [u8], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok())
}

/// The processes under `proc_root` of `installation` whose worker is gone.
fn orphans_in(proc_root: &Path, installation: &str) -> Vec<Orphan> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let dir = proc_root.join(pid.to_string());
            let environ = std::fs::read(dir.join("environ")).ok()?;
            let worker = variable(&environ, WORKER_VAR)?;
            if variable(&environ, INSTALLATION_VAR) != Some(installation)
                || alive(proc_root, worker)
            {
                return None;
            }
            let command = std::fs::read(dir.join("cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            Some(Orphan {
                pid,
                worker: worker.to_string(),
                command,
            })
        })
        .collect()
}

/// Stops (SIGKILL) every process on this machine of `installation` whose worker died,
/// logging each; returns them.
pub fn reap_orphans(installation: &str) -> Vec<Orphan> {
    let orphans = orphans_in(Path::new("/proc"), installation);
    for orphan in &orphans {
        tracing::warn!(
            pid = orphan.pid,
            command = %orphan.command,
            dead_worker = %orphan.worker,
            installation,
            "stopping a job process whose worker died"
        );
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &orphan.pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
    orphans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_process(root: &Path, pid: u32, started: u64, environ: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        // A name with spaces and a ')' as the kernel allows.
        let mut stat = format!("{pid} (odd) name) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ");
        stat.push_str(&format!("{started} 0 0"));
        std::fs::write(dir.join("stat"), stat).expect("stat");
        std::fs::write(dir.join("environ"), environ.join("\0")).expect("environ");
    }

    const OURS: &str = "CTFLOW_INSTALLATION=http://127.0.0.1:5000";

    #[test]
    fn a_job_whose_worker_is_gone_or_was_replaced_is_an_orphan() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        fake_process(root, 100, 5000, &["PATH=/bin"]); // a live worker
        fake_process(root, 201, 6000, &["A=1", "CTFLOW_WORKER=100:5000", OURS]); // its job
        fake_process(root, 202, 6001, &["CTFLOW_WORKER=150:4000", OURS]); // worker 150 is gone
        fake_process(root, 203, 6002, &[OURS, "CTFLOW_WORKER=100:4999"]); // pid 100 was reused
        fake_process(root, 204, 6003, &["HOME=/root"]); // not a job
        let mut orphans: Vec<u32> = orphans_in(root, "http://127.0.0.1:5000")
            .into_iter()
            .map(|o| o.pid)
            .collect();
        orphans.sort();
        assert_eq!(orphans, vec![202, 203]);
    }

    #[test]
    fn another_installations_jobs_are_never_orphans_of_this_one() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        // Both workers are gone; only this installation's job is stopped.
        fake_process(root, 301, 7000, &["CTFLOW_WORKER=150:4000", OURS]);
        fake_process(
            root,
            302,
            7001,
            &[
                "CTFLOW_WORKER=151:4000",
                "CTFLOW_INSTALLATION=http://127.0.0.1:6000",
            ],
        );
        fake_process(root, 303, 7002, &["CTFLOW_WORKER=152:4000"]); // an older ctflow's job
        let orphans = orphans_in(root, &installation_id("HTTP://127.0.0.1:5000/"));
        assert_eq!(orphans.iter().map(|o| o.pid).collect::<Vec<_>>(), [301]);
        assert_eq!(orphans[0].worker, "150:4000");
    }

    #[test]
    fn a_real_orphan_is_stopped_by_its_installation_only() {
        let installation = format!("http://127.0.0.1:1/orphan-test-{}", std::process::id());
        let mut job = std::process::Command::new("sleep")
            .arg("30")
            .env(WORKER_VAR, "4000000000:1")
            .env(INSTALLATION_VAR, &installation)
            .spawn()
            .expect("sleep runs");
        let pid = job.id();
        // NB: until the child has exec'd, its environment is still this process's.
        let environ = format!("/proc/{pid}/environ");
        let started = std::time::Instant::now();
        while !std::fs::read(&environ)
            .is_ok_and(|env| variable(&env, INSTALLATION_VAR) == Some(installation.as_str()))
        {
            assert!(started.elapsed().as_secs() < 10, "sleep never started");
            std::thread::yield_now();
        }
        // Another installation's reaper leaves it alone.
        let other = reap_orphans("http://127.0.0.1:2");
        assert!(other.iter().all(|o| o.pid != pid), "{other:?}");
        assert!(job.try_wait().expect("status").is_none(), "still running");
        let reaped = reap_orphans(&installation);
        assert_eq!(reaped.iter().map(|o| o.pid).collect::<Vec<_>>(), [pid]);
        assert!(reaped[0].command.starts_with("sleep 30"), "{reaped:?}");
        let status = job.wait().expect("status");
        assert!(!status.success(), "killed: {status:?}");
    }

    #[test]
    fn installations_are_named_one_way() {
        assert_eq!(
            installation_id("HTTP://LocalHost:5000/"),
            "http://localhost:5000"
        );
        assert_eq!(
            installation_id("https://ctflow.example.com/mlflow/"),
            "https://ctflow.example.com/mlflow"
        );
        assert_eq!(installation_id("http://a:1/Path"), "http://a:1/Path");
    }

    #[test]
    fn this_process_is_alive_by_its_own_identity() {
        let identity = worker_identity();
        assert!(alive(Path::new("/proc"), &identity), "{identity}");
        assert!(!alive(Path::new("/proc"), "not-an-identity"));
    }
}
