//! The distributed services: `ctflow controller`, `ctflow worker` and `ctflow watcher`,
//! each a separate process meeting the others on a NATS JetStream bus (and, for the
//! controller and the watcher, in the store). Each answers `/health`, `/ready` and
//! `/metrics` on its own port.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ctflow_bus::{Bus, NatsBus, NatsConfig};
use ctflow_controller::{ControllerConfig, StoreElection, leadership};
use ctflow_metrics::Metrics;
use ctflow_server::service::{ReadinessCheck, serve_service, service_router};
use ctflow_server::{bus_check, store_check};
use ctflow_worker::execute::default_env_cache;
use ctflow_worker::{PoolConfig, WorkerPool, discover_gpus};
use tokio_util::sync::CancellationToken;

use crate::client::{TrackingClient, current_user};
use crate::shutdown_signal;

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    ctflow_core::pipeline::DurationSpec::parse(text).map(|d| d.0)
}

/// How a service reaches the bus.
#[derive(Args, Debug, Clone)]
pub(crate) struct BusArgs {
    /// The NATS server (with JetStream) that carries jobs and events: nats://host:4222.
    #[arg(long = "bus", env = "CTFLOW_BUS")]
    pub(crate) bus: Option<String>,
    /// Prefix of the bus's streams and subjects; installations sharing a NATS server
    /// need different ones.
    #[arg(long, env = "CTFLOW_BUS_NAMESPACE", default_value = "ctflow")]
    pub(crate) bus_namespace: String,
    /// A job whose worker shows no sign of life for this long goes to another worker.
    #[arg(long, env = "CTFLOW_JOB_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub(crate) job_lease: Duration,
    /// JetStream's delivery limit per job, the backstop against a job that brings down
    /// every worker that takes it (its last delivery is recorded as failed).
    #[arg(long, env = "CTFLOW_JOB_MAX_DELIVER", default_value_t = 20)]
    pub(crate) job_max_deliver: i64,
}

impl BusArgs {
    /// The NATS bus, when `--bus` names one.
    pub(crate) async fn connect(&self) -> Result<Option<Arc<dyn Bus>>> {
        let Some(url) = &self.bus else {
            return Ok(None);
        };
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            bail!("--bus must be a nats:// URL, not '{url}'");
        }
        let mut config = NatsConfig::new(url.clone());
        config.namespace = self.bus_namespace.clone();
        config.ack_wait = self.job_lease;
        config.max_deliver = self.job_max_deliver;
        let bus = NatsBus::connect(config)
            .await
            .with_context(|| format!("cannot use the bus at {url}"))?;
        Ok(Some(Arc::new(bus)))
    }

    async fn required(&self, service: &str) -> Result<Arc<dyn Bus>> {
        match self.connect().await? {
            Some(bus) => Ok(bus),
            None => bail!(
                "ctflow {service} needs a bus: pass --bus nats://HOST:4222 (or set CTFLOW_BUS)"
            ),
        }
    }
}

/// Where a service answers `/health`, `/ready` and `/metrics`.
#[derive(Args, Debug, Clone)]
pub(crate) struct OpsArgs {
    /// Address of the health, readiness and metrics endpoints.
    #[arg(long, env = "CTFLOW_OPS_HOST", default_value = "127.0.0.1")]
    pub(crate) ops_host: IpAddr,
    /// Port of those endpoints (0 picks a free one, printed at start).
    #[arg(long, env = "CTFLOW_OPS_PORT", default_value_t = 0)]
    pub(crate) ops_port: u16,
    /// A YAML file of settings, keyed by flag name (`bus: nats://...`); flags and
    /// environment variables win over it.
    #[arg(long, env = "CTFLOW_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

/// Starts the ops endpoints; returns the task.
async fn serve_ops(
    service: &'static str,
    ops: &OpsArgs,
    checks: Vec<(&'static str, ReadinessCheck)>,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind((ops.ops_host, ops.ops_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", ops.ops_host, ops.ops_port))?;
    let addr = listener.local_addr()?;
    println!("ctflow {service}: health, readiness and metrics on http://{addr}");
    tracing::info!(%addr, service, "ops endpoints");
    let router = service_router(service, checks, metrics);
    let shutdown = shutdown.clone();
    Ok(tokio::spawn(async move {
        if let Err(error) =
            serve_service(listener, router, async move { shutdown.cancelled().await }).await
        {
            tracing::error!(%error, "the ops endpoints stopped");
        }
    }))
}

/// A token cancelled on SIGTERM or Ctrl-C.
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        fired.cancel();
    });
    token
}

/// The database of the services that read and write the store directly.
#[derive(Args, Debug, Clone)]
pub(crate) struct StoreArgs {
    /// Database: sqlite:///path/to/file.db or postgresql://user@host/db.
    #[arg(
        long,
        env = "CTFLOW_BACKEND_STORE_URI",
        default_value = "sqlite:///ctflow-data/ctflow.db"
    )]
    backend_store_uri: String,
}

impl StoreArgs {
    /// Opens the store directly (migrating it when new).
    pub(crate) async fn open(&self) -> Result<ctflow_store::Store> {
        ctflow_store::Store::open(ctflow_store::StoreOptions {
            backend_store_uri: self.backend_store_uri.clone(),
            default_artifact_root: "mlflow-artifacts:/".into(),
            max_connections: 2,
            durability: Default::default(),
        })
        .await
        .with_context(|| format!("cannot open the store {}", self.backend_store_uri))
    }
}

#[derive(Args, Debug)]
pub(crate) struct ControllerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A folder of pipeline files (*.yaml), re-read when they change.
    #[arg(long, env = "CTFLOW_PIPELINES", conflicts_with = "kubernetes")]
    pipelines: Option<PathBuf>,
    #[command(flatten)]
    kube: KubernetesArgs,
    /// How long the active controller's lease lasts without renewal: a standby takes
    /// over within about this long after the leader dies.
    #[arg(long, env = "CTFLOW_LEADER_LEASE", default_value = "15s", value_parser = parse_duration)]
    leader_lease: Duration,
    /// This controller's name in the lease (default: host name and process id).
    #[arg(long, env = "CTFLOW_CONTROLLER_ID")]
    id: Option<String>,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    ops: OpsArgs,
}

/// Where the pipelines live on Kubernetes, and the Lease replicas elect on.
#[derive(Args, Debug, Clone)]
pub(crate) struct KubernetesArgs {
    /// Pipelines come from TrainingPipeline objects and replicas elect one active
    /// controller on a coordination.k8s.io Lease (in-cluster config, or KUBECONFIG).
    #[arg(long, env = "CTFLOW_KUBERNETES")]
    kubernetes: bool,
    /// Watch TrainingPipelines in this namespace only (default: all namespaces).
    #[arg(long, env = "CTFLOW_WATCH_NAMESPACE", requires = "kubernetes")]
    watch_namespace: Option<String>,
    /// The namespace of the Lease (default: the client's namespace, i.e. the pod's).
    #[arg(long, env = "POD_NAMESPACE", requires = "kubernetes")]
    lease_namespace: Option<String>,
    /// The Lease's name; replicas that share it elect one among them.
    #[arg(long, env = "CTFLOW_LEASE_NAME", default_value = "ctflow-controller")]
    lease_name: String,
    /// How often a TrainingPipeline's status is refreshed from the store while none of
    /// its runs is active (every 5 s while one is, or this if shorter).
    #[arg(long, env = "CTFLOW_STATUS_REFRESH", default_value = "15s", value_parser = parse_duration)]
    status_refresh: Duration,
}

pub(crate) async fn controller(args: ControllerArgs) -> Result<()> {
    if args.leader_lease < Duration::from_secs(1) {
        bail!("--leader-lease must be at least 1s");
    }
    let shutdown = on_signal();
    let metrics = Arc::new(Metrics::new());
    let store = ctflow_server::open_store(
        ctflow_store::StoreOptions {
            backend_store_uri: args.store.backend_store_uri.clone(),
            default_artifact_root: "mlflow-artifacts:/".into(),
            max_connections: 8,
            durability: Default::default(),
        },
        &metrics,
    )
    .await
    .context("cannot open the store")?;
    let bus = args.bus.required("controller").await?;
    let identity = args.id.clone().unwrap_or_else(ctflow_core::process_name);
    // Whether this process leads, by either election: the engine and the readiness check
    // read this one value.
    let (claim, leading) = leadership();
    let kube_client = if args.kube.kubernetes {
        Some(
            kube::Client::try_default()
                .await
                .context("cannot set up the Kubernetes client (in-cluster config or KUBECONFIG)")?,
        )
    } else {
        None
    };
    let checks: Vec<(&'static str, ReadinessCheck)> = vec![
        ("store", store_check(store.clone())),
        ("bus", bus_check(bus.clone())),
        (
            "leader",
            Arc::new({
                let leading = leading.clone();
                move || {
                    let leads = leading.leads();
                    Box::pin(async move {
                        if leads {
                            Ok(())
                        } else {
                            Err("standing by: another controller holds the lease".to_string())
                        }
                    })
                }
            }),
        ),
    ];
    let ops = serve_ops("controller", &args.ops, checks, metrics.clone(), &shutdown).await?;
    if let Some(dir) = &args.pipelines {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the pipelines folder {}", dir.display()))?;
    }
    let config = ControllerConfig {
        pipelines_dir: args.pipelines.clone(),
        user: "ctflow".into(),
        workers_in_process: false,
        ..ControllerConfig::default()
    };
    let result = match kube_client {
        Some(client) => {
            let lease = ctflow_kube_controller::LeaseConfig {
                namespace: args
                    .kube
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_string()),
                name: args.kube.lease_name.clone(),
                identity: identity.clone(),
                duration: args.leader_lease,
            };
            tracing::info!(
                identity,
                lease = lease.name,
                namespace = lease.namespace,
                "controller started on Kubernetes; electing"
            );
            let elector = tokio::spawn(
                ctflow_kube_controller::Elector::new(client.clone(), lease)
                    .run(claim, shutdown.clone()),
            );
            let base_dir = std::env::current_dir()
                .context("cannot read the working directory")?
                .display()
                .to_string();
            let context = Arc::new(ctflow_kube_controller::Context::new(
                client,
                store.clone(),
                bus.clone(),
                ctflow_kube_controller::Settings {
                    namespace: args.kube.watch_namespace.clone(),
                    refresh: {
                        let default = ctflow_kube_controller::plan::Refresh::default();
                        let idle = args.kube.status_refresh.max(Duration::from_millis(100));
                        ctflow_kube_controller::plan::Refresh {
                            active: default.active.min(idle),
                            idle,
                        }
                    },
                    base_dir,
                    reporter: "ctflow-controller".into(),
                    instance: identity,
                },
            ));
            ctflow_kube_controller::run_when_leading(
                context,
                store.clone(),
                bus.clone(),
                config,
                metrics,
                leading,
                shutdown.clone(),
            )
            .await;
            // NB: the elector hands the Lease back on shutdown; wait for it.
            let _ = elector.await;
            Ok(())
        }
        None => {
            let election = StoreElection::new(identity, args.leader_lease);
            tracing::info!(holder = election.holder, "controller started; electing");
            let elector = tokio::spawn(election.run(store.clone(), claim, shutdown.clone()));
            ctflow_controller::run_when_leading(
                store.clone(),
                bus.clone(),
                config,
                metrics,
                leading,
                shutdown.clone(),
            )
            .await;
            // NB: the elector hands the lease back on shutdown; wait for it.
            let _ = elector.await;
            Ok(())
        }
    };
    shutdown.cancel();
    bus.close();
    let _ = ops.await;
    store.close().await;
    result
}

#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// The tracking server the jobs log to and that the worker asks about them.
    #[arg(
        long,
        env = "MLFLOW_TRACKING_URI",
        default_value = "http://127.0.0.1:5000"
    )]
    tracking_uri: String,
    /// Jobs this worker runs at the same time.
    #[arg(long, env = "CTFLOW_WORKER_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// On SIGTERM, running jobs get this long to finish; then they are stopped and
    /// handed back to the bus for another worker.
    #[arg(long, env = "CTFLOW_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Where job logs go.
    #[arg(long, env = "CTFLOW_LOGS_DIR", default_value = "ctflow-data/logs")]
    logs_dir: PathBuf,
    /// How often one attempt may be started by workers that die before it ends; the
    /// delivery after that records the attempt as failed.
    #[arg(long, env = "CTFLOW_JOB_MAX_STARTS", default_value_t = 3)]
    max_starts: u32,
    #[command(flatten)]
    jobs: JobArgs,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    ops: OpsArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Executor {
    /// A process on this machine, in the project's environment.
    Local,
    /// A Kubernetes Job per CT job (in-cluster config, or KUBECONFIG).
    Kubernetes,
}

/// Where a worker runs its jobs' commands.
#[derive(Args, Debug, Clone)]
pub(crate) struct JobArgs {
    #[arg(long, env = "CTFLOW_EXECUTOR", value_enum, default_value = "local")]
    executor: Executor,
    /// The namespace of the Jobs (default: the namespace of each job's TrainingPipeline).
    #[arg(long, env = "CTFLOW_JOB_NAMESPACE")]
    job_namespace: Option<String>,
    /// The image of a pipeline that names none in spec.project.image.
    #[arg(long, env = "CTFLOW_JOB_IMAGE")]
    job_image: Option<String>,
    /// The Jobs' service account unless the pipeline names one.
    #[arg(long, env = "CTFLOW_JOB_SERVICE_ACCOUNT")]
    job_service_account: Option<String>,
    /// How long a finished Job stays for inspection unless the pipeline says otherwise.
    #[arg(long, env = "CTFLOW_JOB_TTL", default_value = "1h", value_parser = parse_duration)]
    job_ttl: Duration,
    /// How often a running Job and its pods are looked at.
    #[arg(long, env = "CTFLOW_JOB_POLL", default_value = "2s", value_parser = parse_duration)]
    job_poll: Duration,
}

impl JobArgs {
    async fn runner(&self) -> Result<Option<Arc<dyn ctflow_worker::JobRunner>>> {
        if self.executor == Executor::Local {
            return Ok(None);
        }
        let client = kube::Client::try_default()
            .await
            .context("cannot set up the Kubernetes client (in-cluster config or KUBECONFIG)")?;
        let settings = ctflow_kube::JobSettings {
            namespace: self.job_namespace.clone(),
            default_image: self.job_image.clone(),
            service_account: self.job_service_account.clone(),
            ttl_after_finished: self.job_ttl,
            poll: self.job_poll.max(Duration::from_millis(100)),
        };
        Ok(Some(Arc::new(ctflow_kube::KubeJobRunner::new(
            client, settings,
        ))))
    }
}

pub(crate) async fn worker(args: WorkerArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let shutdown = on_signal();
    let bus = args.bus.required("worker").await?;
    let metrics = Arc::new(Metrics::new());
    let server = args.tracking_uri.trim_end_matches('/').to_string();
    let http = crate::client::connect(&server)?;
    let checks: Vec<(&'static str, ReadinessCheck)> = vec![
        ("bus", bus_check(bus.clone())),
        (
            "tracking_server",
            Arc::new(move || {
                let http = http.clone();
                Box::pin(async move {
                    http.get_path("/health", &[])
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            }),
        ),
    ];
    let ops = serve_ops("worker", &args.ops, checks, metrics.clone(), &shutdown).await?;
    let runner = args.jobs.runner().await?;
    let gpus = if runner.is_some() {
        Vec::new()
    } else {
        discover_gpus()
    };
    let pool = WorkerPool::new(
        bus.clone(),
        PoolConfig {
            workers: args.concurrency,
            tracking_uri: server,
            logs_dir: args.logs_dir.clone(),
            env_cache: default_env_cache(),
            gpus: gpus.clone(),
            user: current_user(),
            shutdown_grace: args.shutdown_grace,
            max_starts: args.max_starts,
            tracking_token: None,
        },
    )?
    .with_metrics(metrics);
    let pool = match runner {
        Some(runner) => pool.with_runner(runner),
        None => pool,
    };
    tracing::info!(
        concurrency = args.concurrency,
        gpus = gpus.len(),
        executor = ?args.jobs.executor,
        "worker started"
    );
    pool.run(shutdown.clone()).await;
    shutdown.cancel();
    bus.close();
    bus.drain().await;
    let _ = ops.await;
    Ok(())
}

/// Ready while the tracking server answers its health check.
fn tracking_check(client: TrackingClient) -> ReadinessCheck {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            client
                .get_path("/health", &[])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

/// The watcher's client of the tracking server: its own user name in the runs it records,
/// signed in with `token`, else with the environment's credentials as any MLflow client.
pub(crate) fn watcher_client(tracking_uri: &str, token: Option<&str>) -> Result<TrackingClient> {
    let user = ctflow_watcher::WatcherConfig::default().user;
    let client = match token {
        Some(token) => TrackingClient::with_token(tracking_uri, &user, token)?,
        None => TrackingClient::new(tracking_uri, &user)?,
    };
    Ok(client)
}

#[derive(Args, Debug)]
pub(crate) struct WatcherArgs {
    /// The tracking server the watcher records triggers, seen files and drift checks
    /// with (its REST API: the watcher needs no database credentials). Credentials come
    /// from MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD, as for any client.
    #[arg(
        long,
        env = "MLFLOW_TRACKING_URI",
        default_value = "http://127.0.0.1:5000"
    )]
    tracking_uri: String,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    ops: OpsArgs,
}

pub(crate) async fn watcher(args: WatcherArgs) -> Result<()> {
    let shutdown = on_signal();
    let client = watcher_client(&args.tracking_uri, None)?;
    let bus = args.bus.required("watcher").await?;
    let metrics = Arc::new(Metrics::new());
    let checks: Vec<(&'static str, ReadinessCheck)> = vec![
        ("tracking server", tracking_check(client.clone())),
        ("bus", bus_check(bus.clone())),
    ];
    let ops = serve_ops("watcher", &args.ops, checks, metrics.clone(), &shutdown).await?;
    let drift = ctflow_watcher::Watcher::new(
        client.clone(),
        bus.clone(),
        ctflow_watcher::WatcherConfig::default(),
    )
    .with_metrics(metrics.clone());
    let monitor = ctflow_watcher::Monitor::new(client.clone(), metrics.clone());
    let data = ctflow_watcher::DataWatcher::new(
        client,
        bus.clone(),
        ControllerConfig::default().reload_interval,
    )
    .with_metrics(metrics);
    tracing::info!(tracking_uri = args.tracking_uri, "watcher started");
    let drift_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { drift.run(shutdown).await })
    };
    let monitor_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { monitor.run(shutdown).await })
    };
    let result = data.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = drift_task.await;
    let _ = monitor_task.await;
    bus.close();
    let _ = ops.await;
    result.map_err(anyhow::Error::from)
}
