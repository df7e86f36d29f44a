//! Serving models: `ctflow models serve` (one model, by URI) and the CD hand-off of
//! `ctflow up` (one scoring server per pipeline whose promotion names a serving target,
//! following that pipeline's champion alias).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::serve::ListenerExt;
use ctflow_core::pipeline::ServingTarget;
use ctflow_store::Store;
use tokio_util::sync::CancellationToken;

use crate::client::TrackingClient;
use crate::commands::text;
use crate::models::{download, resolve_artifact_uri};

pub struct ServeOptions {
    pub workers: usize,
    pub env_manager: String,
    pub follow_interval: Duration,
    pub batching: ctflow_serving::Batching,
    pub metrics: Arc<ctflow_serving::ServingMetrics>,
}

/// Answers MLflow's scoring protocol on `listener` until `shutdown`. Served by alias, it
/// follows the alias to each new version; with `wait`, an alias that points nowhere yet
/// is waited for (503 until then) instead of being an error.
pub async fn serve(
    client: TrackingClient,
    uri: &str,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    wait: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if options.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let alias = match ctflow_core::registry::parse_model_uri(uri) {
        Ok(ctflow_core::registry::ModelUri::Alias { name, alias }) => Some((name, alias)),
        _ => None,
    };
    if wait && alias.is_none() {
        bail!("--wait follows an alias: serve models:/<name>@<alias>");
    }
    let version = match &alias {
        Some((name, alias)) => match alias_version(&client, name, alias).await {
            Ok(version) => Some(version),
            Err(error) if wait => {
                eprintln!("Waiting for {name}@{alias} to point at a version ({error:#})");
                None
            }
            Err(error) => return Err(error),
        },
        None => None,
    };
    let source = match (&alias, &version) {
        (Some((name, _)), Some(version)) => format!("models:/{name}/{version}"),
        _ => uri.to_string(),
    };
    let loaded = match (&alias, &version) {
        (Some(_), None) => None,
        _ => {
            eprintln!("Loading {uri} in {} worker(s)...", options.workers);
            match load_generation(&client, &source, version.clone(), &options).await {
                Ok(generation) => Some(generation),
                // NB: waiting, a version that cannot serve is reported and the next
                // one the alias points at is tried.
                Err(error) if wait => {
                    options.metrics.swapped(false);
                    eprintln!("{source} cannot serve ({error:#}); waiting for the next version");
                    None
                }
                Err(error) => return Err(error),
            }
        }
    };
    let (served, serving, refused) = match loaded {
        Some(generation) => (
            ctflow_serving::ServedModel::new(generation, options.metrics.clone()),
            version,
            None,
        ),
        None => (
            ctflow_serving::ServedModel::waiting(
                format!("{uri} points at no version that serves yet"),
                options.metrics.clone(),
            ),
            None,
            version,
        ),
    };
    let served = Arc::new(served);
    let follower = alias.map(|(name, alias)| {
        tokio::spawn(follow(
            client,
            Followed { name, alias },
            serving,
            refused,
            options,
            served.clone(),
        ))
    });
    // NB: as the tracking server does: no response waits on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, ctflow_serving::router(served))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the scoring server stopped");
    if let Some(follower) = follower {
        follower.abort();
    }
    result
}

async fn alias_version(client: &TrackingClient, name: &str, alias: &str) -> Result<String> {
    let found = client
        .get(
            "registered-models/alias",
            &[("name", name.to_string()), ("alias", alias.to_string())],
        )
        .await?;
    Ok(text(&found["model_version"], "version"))
}

/// Fetches a model (a local folder is used as it is), starts its workers and checks them
/// with one warm-up prediction.
async fn load_generation(
    client: &TrackingClient,
    uri: &str,
    version: Option<String>,
    options: &ServeOptions,
) -> Result<ctflow_serving::Generation> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let local = Path::new(uri);
    let (dir, scratch) = if local.join("MLmodel").is_file() {
        (local.to_path_buf(), None)
    } else {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = std::env::temp_dir().join(format!("ctflow-serve-{}-{n}", std::process::id()));
        let guard = ctflow_serving::Scratch(scratch.clone());
        let artifact_uri = resolve_artifact_uri(client, uri).await?;
        download(client, &artifact_uri, &scratch).await?;
        (scratch, Some(guard))
    };
    let info = ctflow_serving::load_model_info(&dir)?;
    let cache = ctflow_worker::execute::default_env_cache();
    let python = {
        let (dir, env_manager) = (dir.clone(), options.env_manager.clone());
        tokio::task::spawn_blocking(move || {
            ctflow_serving::model_python(&dir, &env_manager, &cache)
        })
        .await
        .context("the environment builder stopped")??
    };
    let pool = ctflow_serving::PythonPool::start(
        &python,
        &dir,
        options.workers,
        options.batching,
        options.metrics.clone(),
    )
    .await?;
    let generation = ctflow_serving::Generation {
        info,
        pool,
        version,
        scratch,
    };
    ctflow_serving::warm_up(&generation, &dir)
        .await
        .map_err(|e| anyhow!("{uri} failed its warm-up prediction: {e}"))?;
    Ok(generation)
}

/// The registered model and alias a server follows.
struct Followed {
    name: String,
    alias: String,
}

/// Follows `name@alias`: a new version is loaded and warmed up beside the serving one and
/// then takes the traffic; one that cannot load is reported and the old one keeps serving.
async fn follow(
    client: TrackingClient,
    followed: Followed,
    mut serving: Option<String>,
    mut refused: Option<String>,
    options: ServeOptions,
    served: Arc<ctflow_serving::ServedModel>,
) {
    let Followed { name, alias } = followed;
    loop {
        tokio::time::sleep(options.follow_interval).await;
        let version = match alias_version(&client, &name, &alias).await {
            Ok(version) => version,
            Err(error) => {
                if serving.is_some() {
                    tracing::warn!(%error, model = name, alias, "cannot look up the alias");
                }
                continue;
            }
        };
        if Some(&version) == serving.as_ref() || Some(&version) == refused.as_ref() {
            continue;
        }
        let uri = format!("models:/{name}/{version}");
        eprintln!("{name}@{alias} moved to version {version}: loading it");
        match load_generation(&client, &uri, Some(version.clone()), &options).await {
            Ok(generation) => {
                served.swap(generation);
                served.metrics.swapped(true);
                eprintln!("Now serving {name} version {version} ({name}@{alias})");
                serving = Some(version);
                refused = None;
            }
            Err(error) => {
                served.metrics.swapped(false);
                tracing::error!(%error, model = name, version, "the new version cannot serve; the old one keeps serving");
                eprintln!(
                    "Version {version} of {name} cannot serve ({error:#}); version {} keeps serving",
                    serving.as_deref().unwrap_or("-")
                );
                refused = Some(version);
            }
        }
    }
}

/// One running scoring server of `ctflow up`.
struct Running {
    model_uri: String,
    target: ServingTarget,
    stop: CancellationToken,
}

/// The CD hand-off of `ctflow up`: every `interval` it reads the pipelines and keeps one
/// scoring server per pipeline whose `promotion.serving` names a target, serving
/// `models:/<model>@<champion alias>` (503 until the first champion). A pipeline whose
/// target changed gets a new server; one that stopped naming a target, or was deleted,
/// loses its server.
pub async fn supervise(
    store: Store,
    tracking_uri: String,
    tracking_token: Option<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let client = match crate::client::connect_as(&tracking_uri, tracking_token.as_deref()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "the serving supervisor cannot reach the tracking server");
            return;
        }
    };
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut servers = tokio::task::JoinSet::new();
    loop {
        while servers.try_join_next().is_some() {}
        match store.list_pipelines().await {
            Ok(pipelines) => {
                let wanted: HashMap<String, (String, ServingTarget)> = pipelines
                    .into_iter()
                    .filter_map(|record| {
                        let spec = record.document.spec;
                        let target = spec.promotion.serving?;
                        let model = spec.model?.name;
                        let uri = format!("models:/{model}@{}", spec.promotion.champion_alias);
                        Some((record.name, (uri, target)))
                    })
                    .collect();
                running.retain(|pipeline, server| {
                    let keep = wanted.get(pipeline).is_some_and(|(uri, target)| {
                        *uri == server.model_uri && *target == server.target
                    });
                    if !keep {
                        tracing::info!(
                            pipeline,
                            model = server.model_uri,
                            "stopping its scoring server"
                        );
                        server.stop.cancel();
                    }
                    keep
                });
                for (pipeline, (model_uri, target)) in wanted {
                    if running.contains_key(&pipeline) {
                        continue;
                    }
                    let stop = shutdown.child_token();
                    servers.spawn(run_target(
                        client.clone(),
                        pipeline.clone(),
                        model_uri.clone(),
                        target.clone(),
                        interval,
                        stop.clone(),
                    ));
                    running.insert(
                        pipeline,
                        Running {
                            model_uri,
                            target,
                            stop,
                        },
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the pipelines' serving targets"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    // Each server stops on the shutdown it shares; in-flight requests are answered.
    while servers.join_next().await.is_some() {}
}

/// One pipeline's scoring server, until `stop`. A failure (the port is taken, the model
/// cannot load) is logged and the server stays down until the pipeline's target changes.
async fn run_target(
    client: TrackingClient,
    pipeline: String,
    model_uri: String,
    target: ServingTarget,
    follow_interval: Duration,
    stop: CancellationToken,
) {
    let served = async {
        let host: std::net::IpAddr = target
            .host
            .parse()
            .with_context(|| format!("'{}' is not an IP address", target.host))?;
        let listener = tokio::net::TcpListener::bind((host, target.port))
            .await
            .with_context(|| format!("cannot listen on {host}:{}", target.port))?;
        println!(
            "Serving {model_uri} (pipeline {pipeline}) on http://{}",
            listener.local_addr()?
        );
        let options = ServeOptions {
            workers: target.workers as usize,
            env_manager: target.env_manager.clone(),
            follow_interval,
            batching: ctflow_serving::Batching {
                max_batch: target.max_batch.max(1) as usize,
                wait: Duration::ZERO,
            },
            metrics: Arc::new(ctflow_serving::ServingMetrics::new()),
        };
        let stopped = stop.clone();
        serve(client, &model_uri, listener, options, true, async move {
            stopped.cancelled().await
        })
        .await
    };
    if let Err(error) = served.await {
        tracing::error!(
            error = format!("{error:#}"),
            pipeline,
            model = model_uri,
            "the pipeline's scoring server stopped"
        );
        eprintln!("The scoring server of pipeline {pipeline} stopped: {error:#}");
    }
}
