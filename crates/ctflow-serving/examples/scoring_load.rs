//! The serving benchmark's load generator: `clients` concurrent clients POST the same
//! body to `<url>/invocations` back to back for `--seconds` after `--warmup`, each on one
//! kept-alive connection (or a new connection per request with `--fresh`), and one JSON
//! line reports requests, errors, throughput and latency percentiles. In Rust, so the
//! generator takes little of the CPU the servers it compares share with it.
//!
//!     scoring_load --url http://127.0.0.1:5001 --body-file body.json --clients 32 --seconds 10

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::{Duration, Instant};

struct Options {
    url: String,
    body: Vec<u8>,
    clients: usize,
    seconds: f64,
    warmup: f64,
    fresh: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        url: String::new(),
        body: Vec::new(),
        clients: 1,
        seconds: 10.0,
        warmup: 2.0,
        fresh: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => options.url = value()?,
            "--body-file" => {
                let path = value()?;
                options.body = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            }
            "--clients" => options.clients = number(value()?)? as usize,
            "--seconds" => options.seconds = number(value()?)?,
            "--warmup" => options.warmup = number(value()?)?,
            "--fresh" => options.fresh = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.url.is_empty() || options.body.is_empty() || options.clients == 0 {
        return Err("usage: scoring_load --url URL --body-file FILE [--clients N] [--seconds S] [--warmup S] [--fresh]".into());
    }
    Ok(options)
}

/// One client's latencies (seconds) and failed requests within the measured period.
async fn client(
    options: &Options,
    start_at: Instant,
    stop_at: Instant,
) -> Result<(Vec<f64>, u64), String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if options.fresh {
        builder = builder.pool_max_idle_per_host(0);
    }
    let http = builder.build().map_err(|e| e.to_string())?;
    let url = format!("{}/invocations", options.url.trim_end_matches('/'));
    let (mut latencies, mut errors) = (Vec::new(), 0);
    loop {
        let sent = Instant::now();
        if sent >= stop_at {
            break;
        }
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(options.body.clone())
            .send()
            .await;
        let ok = match response {
            Ok(response) => {
                let status = response.status();
                response.bytes().await.is_ok() && status.is_success()
            }
            Err(_) => false,
        };
        if sent >= start_at {
            if ok {
                latencies.push(sent.elapsed().as_secs_f64());
            } else {
                errors += 1;
            }
        }
    }
    Ok((latencies, errors))
}

fn percentile_ms(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let index = ((q * sorted.len() as f64) as usize).min(last);
    Some(sorted[index] * 1000.0)
}

fn main() -> Result<(), String> {
    let options = parse_options()?;
    let (clients, seconds) = (options.clients, options.seconds);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (latencies, errors) = runtime.block_on(async {
        let start_at = Instant::now() + Duration::from_secs_f64(options.warmup);
        let stop_at = start_at + Duration::from_secs_f64(options.seconds);
        let options = std::sync::Arc::new(options);
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..options.clients {
            let options = options.clone();
            clients.spawn(async move { client(&options, start_at, stop_at).await });
        }
        let (mut latencies, mut errors) = (Vec::new(), 0);
        while let Some(done) = clients.join_next().await {
            let (mine, bad) = done.map_err(|e| e.to_string())??;
            latencies.extend(mine);
            errors += bad;
        }
        Ok::<_, String>((latencies, errors))
    })?;
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let mean_ms =
        (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64 * 1000.0);
    let report = serde_json::json!({
        "clients": clients,
        "requests": sorted.len(),
        "errors": errors,
        "rps": sorted.len() as f64 / seconds,
        "p50_ms": percentile_ms(&sorted, 0.50),
        "p99_ms": percentile_ms(&sorted, 0.99),
        "mean_ms": mean_ms,
    });
    println!("{report}");
    Ok(())
}
