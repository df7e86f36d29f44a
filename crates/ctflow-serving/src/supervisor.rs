//! Serving a model by URI, following an alias to each new version, and the CD hand-off:
//! one scoring server per pipeline whose promotion names a serving target, serving that
//! pipeline's champion. Models and pipelines are read through the tracking server's REST
//! API (`ctflow-client`), as any client reads them.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use ctflow_client::{ClientError, TrackingClient};
use ctflow_core::pipeline::{ServingLog, ServingTarget};
use ctflow_core::registry::{ModelUri, parse_model_uri};
use tokio_util::sync::CancellationToken;

use crate::{
    Batching, Generation, InferenceLog, LogOptions, Priority, PythonPool, Scratch, ServedModel,
    ServingMetrics, load_model_info, model_python, warm_up,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Model(#[from] crate::Error),
    #[error("{uri} failed its warm-up prediction: {message}")]
    WarmUp { uri: String, message: String },
    /// The cause is in the message (and not in the error chain, so it is said once).
    #[error("cannot listen on {address}: {cause}")]
    Listen {
        address: String,
        cause: std::io::Error,
    },
    #[error("the scoring server stopped: {0}")]
    Stopped(#[source] std::io::Error),
    #[error(transparent)]
    Log(#[from] crate::LogError),
}

#[derive(Clone)]
pub struct ServeOptions {
    pub workers: usize,
    pub env_manager: String,
    /// Where model environments are built and cached.
    pub env_cache: PathBuf,
    pub follow_interval: Duration,
    pub batching: Batching,
    pub metrics: Arc<ServingMetrics>,
    /// Where every scored row is logged, when anywhere.
    pub log: Option<LogOptions>,
    /// The CPU priority of the model's workers.
    pub priority: Priority,
}

/// The inference log options of a pipeline's serving target, its folder resolved against
/// the pipeline's folder.
fn log_options(log: &ServingLog, base_dir: &Path) -> LogOptions {
    let mut options = if log.path.contains("://") {
        LogOptions::for_destination(&log.path)
    } else {
        LogOptions::new(base_dir.join(&log.path))
    };
    options.roll_rows = log.roll_rows as usize;
    options.roll_interval = log.roll_interval.0;
    options.retention = log.retention.map(|r| r.0);
    options
}

/// The name a served model's rows are logged under: the registered model's, else the URI.
fn logged_model_name(uri: &str) -> String {
    match parse_model_uri(uri) {
        Ok(ModelUri::Alias { name, .. } | ModelUri::Version { name, .. }) => name,
        _ => uri.to_string(),
    }
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
) -> Result<(), ServeError> {
    if options.workers == 0 {
        return Err(ServeError::Config("--workers must be at least 1".into()));
    }
    let alias = match parse_model_uri(uri) {
        Ok(ModelUri::Alias { name, alias }) => Some((name, alias)),
        _ => None,
    };
    if wait && alias.is_none() {
        return Err(ServeError::Config(
            "--wait follows an alias: serve models:/<name>@<alias>".into(),
        ));
    }
    let version = match &alias {
        Some((name, alias)) => match client.alias_version(name, alias).await {
            Ok(version) => Some(version),
            Err(error) if wait => {
                tracing::info!(%error, model = name, alias, "waiting for the alias to point at a version");
                None
            }
            Err(error) => return Err(error.into()),
        },
        // A version named outright is the version that answers (its header, its log rows).
        None => match parse_model_uri(uri) {
            Ok(ModelUri::Version { version, .. }) => Some(version.to_string()),
            _ => None,
        },
    };
    let source = match (&alias, &version) {
        (Some((name, _)), Some(version)) => format!("models:/{name}/{version}"),
        _ => uri.to_string(),
    };
    let loaded = match (&alias, &version) {
        (Some(_), None) => None,
        _ => {
            tracing::info!(uri, workers = options.workers, "loading the model");
            match load_generation(&client, &source, version.clone(), &options).await {
                Ok(generation) => Some(generation),
                // NB: waiting, a version that cannot serve is reported and the next
                // one the alias points at is tried.
                Err(error) if wait => {
                    options.metrics.swapped(false);
                    tracing::warn!(%error, model = source, "cannot serve; waiting for the next version");
                    None
                }
                Err(error) => return Err(error),
            }
        }
    };
    let (served, serving, refused) = match loaded {
        Some(generation) => (
            ServedModel::new(generation, options.metrics.clone()),
            version,
            None,
        ),
        None => (
            ServedModel::waiting(
                format!("{uri} points at no version that serves yet"),
                options.metrics.clone(),
            ),
            None,
            version,
        ),
    };
    let log = match &options.log {
        Some(log_options) => Some(Arc::new(InferenceLog::start(
            log_options.clone(),
            options.metrics.clone(),
        )?)),
        None => None,
    };
    let uploader = match &options.log {
        Some(LogOptions {
            dir,
            upload: Some(destination),
            retention,
            roll_interval,
            ..
        }) => Some(
            crate::log_upload::Uploader::start(
                dir,
                destination,
                *retention,
                *roll_interval,
                options.metrics.clone(),
            )
            .map_err(ServeError::Config)?,
        ),
        _ => None,
    };
    let served = match &log {
        Some(log) => served.with_log(Arc::clone(log), logged_model_name(uri)),
        None => served,
    };
    let served = Arc::new(served);
    let shadow = alias.as_ref().map(|(name, alias)| {
        tokio::spawn(crate::shadow::keep_shadowing(
            client.clone(),
            name.clone(),
            alias.clone(),
            options.clone(),
            served.clone(),
        ))
    });
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
    let result = axum::serve(listener, crate::router(served))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Stopped);
    if let Some(follower) = follower {
        follower.abort();
    }
    if let Some(shadow) = shadow {
        shadow.abort();
    }
    if let Some(log) = log {
        // Finishes the open file: the rows of a clean stop are all kept.
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| ServeError::Config(format!("the inference log did not close: {e}")))?;
    }
    if let Some(uploader) = uploader {
        uploader.finish().await;
    }
    result
}

/// Fetches a model (a local folder is used as it is), starts its workers and checks them
/// with one warm-up prediction.
pub(crate) async fn load_generation(
    client: &TrackingClient,
    uri: &str,
    version: Option<String>,
    options: &ServeOptions,
) -> Result<Generation, ServeError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let local = Path::new(uri);
    let (dir, scratch) = if local.join("MLmodel").is_file() {
        (local.to_path_buf(), None)
    } else {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let scratch = std::env::temp_dir().join(format!("ctflow-serve-{}-{n}", std::process::id()));
        let guard = Scratch(scratch.clone());
        let artifact_uri = client.resolve_artifact_uri(uri).await?;
        client.download_artifacts(&artifact_uri, &scratch).await?;
        (scratch, Some(guard))
    };
    let info = load_model_info(&dir)?;
    let python = {
        let (dir, env_manager, cache) = (
            dir.clone(),
            options.env_manager.clone(),
            options.env_cache.clone(),
        );
        tokio::task::spawn_blocking(move || model_python(&dir, &env_manager, &cache))
            .await
            .map_err(|e| {
                crate::Error::Environment(format!("the environment builder stopped: {e}"))
            })??
    };
    let pool = PythonPool::start(
        &python,
        &dir,
        options.workers,
        options.batching,
        options.priority,
        options.metrics.clone(),
    )
    .await?;
    let generation = Generation {
        info,
        pool,
        version,
        scratch,
    };
    warm_up(&generation, &dir)
        .await
        .map_err(|message| ServeError::WarmUp {
            uri: uri.to_string(),
            message,
        })?;
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
    served: Arc<ServedModel>,
) {
    let Followed { name, alias } = followed;
    loop {
        tokio::time::sleep(options.follow_interval).await;
        let version = match client.alias_version(&name, &alias).await {
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
        tracing::info!(
            model = name,
            alias,
            version,
            "the alias moved: loading the new version"
        );
        match load_generation(&client, &uri, Some(version.clone()), &options).await {
            Ok(generation) => {
                served.swap(generation);
                served.metrics.swapped(true);
                tracing::info!(model = name, alias, version, "now serving the new version");
                serving = Some(version);
                refused = None;
            }
            Err(error) => {
                served.metrics.swapped(false);
                tracing::error!(
                    %error,
                    model = name,
                    version,
                    serving = serving.as_deref().unwrap_or("-"),
                    "the new version cannot serve; the old one keeps serving"
                );
                refused = Some(version);
            }
        }
    }
}

/// One running scoring server of the supervisor.
struct Running {
    model_uri: String,
    target: ServingTarget,
    stop: CancellationToken,
}

/// The CD hand-off: every `interval` it reads the pipelines and keeps one scoring server
/// per pipeline whose `promotion.serving` names a target, serving
/// `models:/<model>@<champion alias>` (503 until the first champion). A pipeline whose
/// target changed gets a new server; one that stopped naming a target, or was deleted,
/// loses its server. Environments are built under `env_cache`.
pub async fn supervise(
    client: TrackingClient,
    env_cache: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut servers = tokio::task::JoinSet::new();
    loop {
        while servers.try_join_next().is_some() {}
        match client.pipelines().await {
            Ok(pipelines) => {
                let wanted: HashMap<String, (String, ServingTarget, PathBuf)> = pipelines
                    .into_iter()
                    .filter_map(|record| {
                        let spec = record.document.spec;
                        let target = spec.promotion.serving?;
                        let model = spec.model?.name;
                        let uri = format!("models:/{model}@{}", spec.promotion.champion_alias);
                        Some((record.name, (uri, target, PathBuf::from(record.base_dir))))
                    })
                    .collect();
                running.retain(|pipeline, server| {
                    let keep = wanted.get(pipeline).is_some_and(|(uri, target, _)| {
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
                for (pipeline, (model_uri, target, base_dir)) in wanted {
                    if running.contains_key(&pipeline) {
                        continue;
                    }
                    let stop = shutdown.child_token();
                    servers.spawn(run_target(
                        client.clone(),
                        Target {
                            pipeline: pipeline.clone(),
                            model_uri: model_uri.clone(),
                            serving: target.clone(),
                            base_dir,
                        },
                        env_cache.clone(),
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

/// What one pipeline serves, and where.
struct Target {
    pipeline: String,
    model_uri: String,
    serving: ServingTarget,
    /// The pipeline's folder, which a relative log path resolves against.
    base_dir: PathBuf,
}

/// One pipeline's scoring server, until `stop`. A failure (the port is taken, the model
/// cannot load) is logged and the server stays down until the pipeline's target changes.
async fn run_target(
    client: TrackingClient,
    target: Target,
    env_cache: PathBuf,
    follow_interval: Duration,
    stop: CancellationToken,
) {
    let Target {
        pipeline,
        model_uri,
        serving,
        base_dir,
    } = target;
    let served = async {
        let host: std::net::IpAddr = serving
            .host
            .parse()
            .map_err(|_| ServeError::Config(format!("'{}' is not an IP address", serving.host)))?;
        let address = format!("{host}:{}", serving.port);
        let listener = tokio::net::TcpListener::bind((host, serving.port))
            .await
            .map_err(|cause| ServeError::Listen {
                address: address.clone(),
                cause,
            })?;
        tracing::info!(pipeline, model = model_uri, %address, "serving the pipeline's champion");
        let options = ServeOptions {
            workers: serving.workers as usize,
            env_manager: serving.env_manager.clone(),
            env_cache,
            follow_interval,
            batching: Batching {
                max_batch: serving.max_batch.max(1) as usize,
                wait: Duration::ZERO,
            },
            metrics: Arc::new(ServingMetrics::new()),
            log: serving.log.as_ref().map(|log| log_options(log, &base_dir)),
            priority: Priority::Normal,
        };
        let stopped = stop.clone();
        serve(client, &model_uri, listener, options, true, async move {
            stopped.cancelled().await
        })
        .await
    };
    if let Err(error) = served.await {
        tracing::error!(
            %error,
            pipeline,
            model = model_uri,
            "the pipeline's scoring server stopped"
        );
    }
}
