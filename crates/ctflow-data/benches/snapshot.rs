//! What a training data snapshot costs: 10,000 CSV files of 1 MiB (10 GiB), the size the
//! lineage issue asks about. Measures, in one run, a plain read of every file (the least
//! any training on this data pays), the first snapshot (every file digested), a snapshot
//! after one new file arrived (the cache keyed by size, time and inode re-reads only that
//! one), the stat-only check and the full verification a job makes before training.
//! Prints JSON. `cargo bench -p ctflow-data --bench snapshot`; `SNAPSHOT_FILES`,
//! `SNAPSHOT_FILE_MIB` and `SNAPSHOT_DIR` (kept between runs when set) change the setup.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ctflow_core::data::TrainingData;
use ctflow_data::{DigestCache, ObjectStores, check_recorded_facts, take, verify};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One CSV file of about `bytes`, different for every `seed`.
fn write_file(path: &Path, seed: usize, bytes: usize) {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    out.write_all(b"f0,f1,f2,f3,label\n").unwrap();
    let mut written = 0;
    let mut x = seed as u64 * 2_654_435_761 + 1;
    while written < bytes {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let line = format!(
            "{}.{:06},{}.{:06},{}.{:06},{}.{:06},{}\n",
            x % 10,
            (x >> 8) % 1_000_000,
            (x >> 12) % 10,
            (x >> 16) % 1_000_000,
            (x >> 20) % 10,
            (x >> 24) % 1_000_000,
            (x >> 28) % 10,
            (x >> 32) % 1_000_000,
            (x >> 40) % 3
        );
        out.write_all(line.as_bytes()).unwrap();
        written += line.len();
    }
    out.flush().unwrap();
}

/// Empties the page cache where the process may (root on Linux), so "cold" means read
/// from disk; says whether it could.
fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn seconds(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn read_everything(dir: &Path) -> u64 {
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let mut file = std::fs::File::open(path).unwrap();
        loop {
            let n = file.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    total
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stores = ObjectStores::default();
    let files = env_number("SNAPSHOT_FILES", 10_000);
    let mib = env_number("SNAPSHOT_FILE_MIB", 1);
    let (root, _keep) = match std::env::var("SNAPSHOT_DIR") {
        Ok(dir) => (PathBuf::from(dir), None),
        Err(_) => {
            let temp = tempfile::tempdir().unwrap();
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let data_dir = root.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let started = Instant::now();
    for i in 0..files {
        let path = data_dir.join(format!("part-{i:05}.csv"));
        if !path.exists() {
            write_file(&path, i, mib << 20);
        }
    }
    let generated = seconds(started);
    let spec = TrainingData {
        paths: vec![format!("{}/*.csv", data_dir.display())],
        window: None,
        parameter: None,
    };

    let cold = drop_page_cache();
    let started = Instant::now();
    let bytes = read_everything(&data_dir);
    let plain_read = seconds(started);

    drop_page_cache();
    let cache = DigestCache::new();
    let started = Instant::now();
    let first = runtime
        .block_on(take("bench", &root, &spec, &cache, 1))
        .unwrap();
    let first_snapshot = seconds(started);
    assert_eq!(first.files.len(), files);

    let started = Instant::now();
    let unchanged = runtime
        .block_on(take("bench", &root, &spec, &cache, 2))
        .unwrap();
    let unchanged_snapshot = seconds(started);
    assert_eq!(unchanged.id, first.id);

    let arrived = data_dir.join(format!("part-{files:05}.csv"));
    write_file(&arrived, files, mib << 20);
    let started = Instant::now();
    let next = runtime
        .block_on(take("bench", &root, &spec, &cache, 3))
        .unwrap();
    let one_new_file = seconds(started);
    assert_eq!(next.files.len(), files + 1);
    std::fs::remove_file(&arrived).unwrap();

    let started = Instant::now();
    runtime
        .block_on(check_recorded_facts(&first, &stores))
        .unwrap();
    let stat_check = seconds(started);

    drop_page_cache();
    let started = Instant::now();
    runtime.block_on(verify(&first, &stores)).unwrap();
    let full_verify = seconds(started);

    let report = serde_json::json!({
        "files": files,
        "bytes": bytes,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "page_cache_dropped": cold,
        "generate_s": generated,
        "plain_read_s": plain_read,
        "first_snapshot_s": first_snapshot,
        "unchanged_snapshot_s": unchanged_snapshot,
        "one_new_file_snapshot_s": one_new_file,
        "stat_check_s": stat_check,
        "full_verify_s": full_verify,
        "manifest_json_bytes": serde_json::to_vec(&first).unwrap().len(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
