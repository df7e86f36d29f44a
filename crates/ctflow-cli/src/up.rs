//! `ctflow up`: the whole loop in one process: the tracking and registry server, the
//! controller (triggers, gates, promotion), the drift watcher and a local worker pool,
//! over the in-process bus, and a scoring server for each pipeline that names a serving
//! target. `--example iris` installs the iris pipeline and runs it once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ctflow_bus::{Bus, MemoryBus};
use ctflow_controller::{Controller, ControllerConfig, load_pipeline_file};
use ctflow_core::pipeline_run::Phase;
use ctflow_core::trigger::TriggerEvent;
use ctflow_store::{PipelineRun, Recorded, Store};
use ctflow_worker::execute::default_env_cache;
use ctflow_worker::{PoolConfig, WorkerPool, discover_gpus};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::client::{TrackingClient, current_user};
use crate::{
    AuthArgs, ServerArgs, bootstrap_admin, exposure_warning, server_config, shutdown_signal,
};

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A folder of pipeline files (*.yaml), re-read when they change.
    #[arg(long)]
    pipelines: Option<PathBuf>,
    /// Jobs that run at the same time.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Install an example pipeline (`iris`) and run it once.
    #[arg(long)]
    example: Option<String>,
    /// Where job logs go.
    #[arg(long, default_value = "ctflow-data/logs")]
    logs_dir: PathBuf,
    /// How often pipelines' serving targets and their champion aliases are looked up
    /// (the CD hand-off: `promotion.serving`).
    #[arg(long, default_value = "5s", value_parser = crate::services::parse_duration)]
    serving_interval: std::time::Duration,
    #[command(flatten)]
    auth: AuthArgs,
}

/// Finds `examples/<name>/pipeline.yaml` from the working directory, else from the
/// source tree this binary was built from.
fn example_file(name: &str) -> Result<PathBuf> {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("'{name}' is not an example name");
    }
    let relative = Path::new("examples").join(name).join("pipeline.yaml");
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(&relative);
    [relative, built_from]
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .ok_or_else(|| {
            anyhow!("there is no example '{name}' (looked for examples/{name}/pipeline.yaml)")
        })
}

pub async fn run(args: UpArgs) -> Result<()> {
    let mut config = server_config(&args.server);
    config.auth = args.auth.permission()?;
    if config.auth.is_none()
        && let Some(warning) = exposure_warning(args.server.host)
    {
        tracing::warn!(host = %args.server.host, "{warning}");
        eprintln!("WARNING: {warning}");
    }
    let listener = tokio::net::TcpListener::bind((args.server.host, args.server.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.server.host, args.server.port))?;
    let addr = listener.local_addr()?;
    let mut state = ctflow_server::AppState::open(&config)
        .await
        .context("cannot open the tracking store")?;
    // With --auth the embedded workers and serving sign in like any client would.
    let service_token = match state.auth {
        Some(_) => {
            bootstrap_admin(&state.store).await?;
            Some(crate::users::service_token(&state.store).await?)
        }
        None => None,
    };
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    state.bus = Some(bus.clone());
    let store = state.store.clone();
    let metrics = state.metrics.clone();
    let tracking_uri = crate::local_uri(addr);

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            ctflow_server::serve(listener, state, async move { shutdown.cancelled().await })
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(scoring) = args
        .server
        .online_scoring
        .start(
            &store,
            &tracking_uri,
            service_token.is_some(),
            shutdown.clone(),
        )
        .await?
    {
        tasks.spawn(async move {
            let _ = scoring.await;
            Ok(())
        });
    }
    if let Some(dir) = &args.pipelines {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the pipelines folder {}", dir.display()))?;
    }
    let controller = Controller::new(
        store.clone(),
        bus.clone(),
        ControllerConfig {
            pipelines_dir: args.pipelines.clone(),
            user: "ctflow".into(),
            ..ControllerConfig::default()
        },
        metrics.clone(),
    );
    controller.load_pipelines().await?;
    let example = match &args.example {
        Some(name) => Some(install_example(&store, name).await?),
        None => None,
    };
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { controller.run(shutdown).await.map_err(anyhow::Error::from) });
    }
    // The watcher talks to the server as the separate `ctflow watcher` service does.
    let watcher_client = crate::services::watcher_client(&tracking_uri, service_token.as_deref())?;
    spawn_watchers(&mut tasks, watcher_client, &bus, &metrics, &shutdown);
    let gpus = discover_gpus();
    let pool = WorkerPool::new(
        bus.clone(),
        PoolConfig {
            workers: args.workers,
            tracking_uri: tracking_uri.clone(),
            logs_dir: args.logs_dir.clone(),
            env_cache: default_env_cache(),
            gpus: gpus.clone(),
            user: current_user(),
            // NB: one process: a job stopped with it is retried at the next start.
            shutdown_grace: std::time::Duration::ZERO,
            max_starts: 3,
            tracking_token: service_token.clone(),
        },
    )?
    .with_metrics(metrics.clone());
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            pool.run(shutdown).await;
            Ok(())
        });
    }
    tasks.spawn(
        ctflow_serving::supervise(
            crate::client::connect_as(&tracking_uri, service_token.as_deref())?,
            default_env_cache(),
            args.serving_interval,
            shutdown.clone(),
        )
        .map(Ok),
    );
    tracing::info!(%addr, workers = args.workers, gpus = gpus.len(), "ctflow up");
    println!("ctflow is up at {tracking_uri}");
    println!("  MLflow clients: export MLFLOW_TRACKING_URI={tracking_uri}");
    println!("  pipelines:      ctflow pipelines list --tracking-uri {tracking_uri}");

    if let Some(example) = example {
        run_example_once(&store, &bus, &tracking_uri, example, &shutdown).await?;
    }
    serve_until_stopped(tasks, &bus, &shutdown).await
}

/// Stores the example pipeline `name` (its file under `examples/`); its name and model.
async fn install_example(store: &Store, name: &str) -> Result<(String, Option<String>)> {
    let file = example_file(name)?;
    let document = load_pipeline_file(&file)?;
    let base_dir = file
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    store
        .put_pipeline(&document, &format!("file:{}", file.display()), &base_dir)
        .await?;
    let model = document.spec.model.as_ref().map(|m| m.name.clone());
    Ok((document.metadata.name, model))
}

/// The drift and data watchers, over the embedded server's REST API.
fn spawn_watchers(
    tasks: &mut tokio::task::JoinSet<Result<()>>,
    client: TrackingClient,
    bus: &Arc<dyn Bus>,
    metrics: &Arc<ctflow_metrics::Metrics>,
    shutdown: &CancellationToken,
) {
    let drift = ctflow_watcher::Watcher::new(
        client.clone(),
        bus.clone(),
        ctflow_watcher::WatcherConfig::default(),
    )
    .with_metrics(metrics.clone());
    let stop = shutdown.clone();
    tasks.spawn(async move {
        drift.run(stop).await;
        Ok(())
    });
    let monitor = ctflow_watcher::Monitor::new(client.clone(), metrics.clone());
    let stop = shutdown.clone();
    tasks.spawn(async move {
        monitor.run(stop).await;
        Ok(())
    });
    let data = ctflow_watcher::DataWatcher::new(
        client,
        bus.clone(),
        ControllerConfig::default().reload_interval,
    )
    .with_metrics(metrics.clone());
    let stop = shutdown.clone();
    tasks.spawn(async move { data.run(stop).await.map_err(anyhow::Error::from) });
}

/// Triggers the example pipeline once and follows the run to its end (Ctrl-C stops).
async fn run_example_once(
    store: &Store,
    bus: &Arc<dyn Bus>,
    tracking_uri: &str,
    (pipeline, model): (String, Option<String>),
    shutdown: &CancellationToken,
) -> Result<()> {
    let client = crate::client::connect(tracking_uri)?;
    // NB: files already in the pipeline's data folder start a data run when the controller
    // rescans it at start-up; that run is the one to watch, whichever was recorded first.
    let mut id = match active_run(store, &pipeline, None).await? {
        Some(run) => {
            println!("{}", already_under_way(&pipeline, &run));
            run.id
        }
        None => {
            let mut event =
                TriggerEvent::new(&pipeline, "manual", format!("manual:{}", uuid_key()));
            event.user = Some(current_user());
            let id = match store.record_trigger(&event).await? {
                Recorded::Created(run) => run.id,
                Recorded::Duplicate(id) => id,
            };
            bus.wake_controller();
            println!(
                "Running the {pipeline} pipeline once (pipeline run {id}); the first run builds its environment."
            );
            id
        }
    };
    let described = loop {
        let follow = crate::pipelines::follow(&client, &id, true);
        let described = tokio::select! {
            described = follow => Some(described?),
            _ = shutdown_signal() => None,
        };
        let Some(described) = described else {
            break None;
        };
        if described.pipeline_run.phase == Phase::Skipped
            && let Some(run) = active_run(store, &pipeline, Some(&id)).await?
        {
            println!("{}", already_under_way(&pipeline, &run));
            id = run.id;
            continue;
        }
        break Some(described);
    };
    match described {
        Some(described) => {
            let run = &described.pipeline_run;
            println!(
                "Pipeline run {id}: {} - {}",
                run.phase,
                run.decision.as_deref().unwrap_or_default()
            );
            println!("  details: ctflow pipelines describe {id} --tracking-uri {tracking_uri}");
            if let Some(model) = model {
                println!("  ledger:  ctflow models history {model} --tracking-uri {tracking_uri}");
            }
        }
        None => {
            shutdown.cancel();
        }
    }

    Ok(())
}

/// Serves until Ctrl-C (or a task stopped everything); then stops every task and returns
/// the first error one of them ended with.
async fn serve_until_stopped(
    mut tasks: tokio::task::JoinSet<Result<()>>,
    bus: &Arc<dyn Bus>,
    shutdown: &CancellationToken,
) -> Result<()> {
    if !shutdown.is_cancelled() {
        println!("Serving; Ctrl-C stops.");
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = shutdown.cancelled() => {}
        }
    }
    shutdown.cancel();
    bus.close();
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(error)) = done {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The newest run of `pipeline` still under way, other than `except`.
async fn active_run(
    store: &Store,
    pipeline: &str,
    except: Option<&str>,
) -> Result<Option<PipelineRun>> {
    let runs = store.list_pipeline_runs(Some(pipeline), &[], 20).await?;
    Ok(runs
        .into_iter()
        .find(|run| !run.phase.is_terminal() && Some(run.id.as_str()) != except))
}

fn already_under_way(pipeline: &str, run: &PipelineRun) -> String {
    let cause = match run.trigger.kind.as_str() {
        "data" => format!(
            "started by the {} file(s) already in its data folder",
            run.trigger.files.len()
        ),
        kind => format!("a {kind} run"),
    };
    format!(
        "Pipeline run {} ({cause}) is already under way for {pipeline}: following it rather than starting another.",
        run.id
    )
}

fn uuid_key() -> String {
    format!("up-{}-{}", std::process::id(), ctflow_core::now_ms())
}
