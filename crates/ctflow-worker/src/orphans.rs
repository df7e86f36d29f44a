//! Job processes whose worker died.
//!
//! A job's command runs in its own process group, so a worker killed with SIGKILL leaves
//! it running: it would go on logging to a run that another worker now repeats, and could
//! even mark that run finished. Every job's environment names its worker as
//! `CTFLOW_WORKER=<pid>:<start time>` (the start time in clock ticks since boot, so a
//! reused pid is not mistaken for the worker); any worker on the machine stops the
//! processes whose worker is gone.

use std::path::Path;

pub const WORKER_VAR: &str = "CTFLOW_WORKER";

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

/// The processes under `proc_root` whose worker is gone.
fn orphans_in(proc_root: &Path) -> Vec<u32> {
    let prefix = format!("{WORKER_VAR}=");
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            let Ok(environ) = std::fs::read(proc_root.join(pid.to_string()).join("environ")) else {
                return false;
            };
            environ
                .split(|b| *b == 0)
                .filter_map(|var| var.strip_prefix(prefix.as_bytes()))
                .filter_map(|value| std::str::from_utf8(value).ok())
                .any(|identity| !alive(proc_root, identity))
        })
        .collect()
}

/// Stops (SIGKILL) every process on this machine whose worker died; returns their pids.
pub fn reap_orphans() -> Vec<u32> {
    let orphans = orphans_in(Path::new("/proc"));
    for pid in &orphans {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
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

    #[test]
    fn a_job_whose_worker_is_gone_or_was_replaced_is_an_orphan() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        fake_process(root, 100, 5000, &["PATH=/bin"]); // a live worker
        fake_process(root, 201, 6000, &["A=1", "CTFLOW_WORKER=100:5000"]); // its job
        fake_process(root, 202, 6001, &["CTFLOW_WORKER=150:4000"]); // worker 150 is gone
        fake_process(root, 203, 6002, &["CTFLOW_WORKER=100:4999"]); // pid 100 was reused
        fake_process(root, 204, 6003, &["HOME=/root"]); // not a job
        let mut orphans = orphans_in(root);
        orphans.sort();
        assert_eq!(orphans, vec![202, 203]);
    }

    #[test]
    fn this_process_is_alive_by_its_own_identity() {
        let identity = worker_identity();
        assert!(alive(Path::new("/proc"), &identity), "{identity}");
        assert!(!alive(Path::new("/proc"), "not-an-identity"));
    }
}
