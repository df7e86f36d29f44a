//! The `ctflow` command: the server, and client commands that speak MLflow's REST API to
//! any compatible tracking server (ctflow's or MLflow's own).

mod client;
mod commands;
mod config;
mod diff;
mod drift;
mod feedback;
mod lineage;
mod models;
mod pipelines;
mod run;
mod services;
mod up;
mod users;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ctflow",
    version,
    about = "Continuous training with an MLflow-compatible tracking server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs are written to standard error: text (coloured only on a terminal, never
    /// with NO_COLOR) or json (one object per line, for log collectors).
    #[arg(long, global = true, env = "CTFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Options shared by every command that talks to a tracking server.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Tracking server URL (as MLflow's MLFLOW_TRACKING_URI).
    #[arg(
        long,
        env = "MLFLOW_TRACKING_URI",
        default_value = "http://127.0.0.1:5000",
        global = true
    )]
    pub tracking_uri: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tracking and model-registry server.
    Server {
        #[command(flatten)]
        server: ServerArgs,
        /// With a bus, triggers and approvals recorded here wake the controller at once,
        /// and `/api/ctflow/v1/events` streams the watcher's events.
        #[command(flatten)]
        bus: services::BusArgs,
        #[command(flatten)]
        auth: AuthArgs,
        /// A YAML file of settings, keyed by flag name; flags and environment win.
        #[arg(long, env = "CTFLOW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create and list experiments.
    Experiments {
        #[command(subcommand)]
        command: commands::ExperimentsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List and describe runs.
    Runs {
        #[command(subcommand)]
        command: commands::RunsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run an MLflow project's entry point as a tracked run (like `mlflow run`).
    Run {
        #[command(flatten)]
        run: run::RunArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Server, controller and workers in one process: the whole continuous-training loop.
    Up(up::UpArgs),
    /// The CT controller as its own service (one of several elects itself active).
    Controller(services::ControllerArgs),
    /// A worker service: runs CT jobs taken from the bus.
    Worker(services::WorkerArgs),
    /// The data and drift watcher as its own service.
    Watcher(services::WatcherArgs),
    /// Print the TrainingPipeline CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    Crd,
    /// CT pipelines: list, apply, trigger, runs, describe, approve, reject.
    Pipelines {
        #[command(subcommand)]
        command: pipelines::PipelinesCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare current data with a reference, column by column; exits 3 on dataset drift.
    Drift(drift::DriftArgs),
    /// Ground-truth labels for served predictions (live metrics, performance triggers).
    Feedback {
        #[command(subcommand)]
        command: feedback::FeedbackCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Users of a server started with --auth: the first admin, API tokens.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// The model registry: models, versions, aliases, stages, history, rollback, downloads.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// Database: sqlite:///path/to/file.db or postgresql://user@host/db.
    #[arg(
        long,
        env = "CTFLOW_BACKEND_STORE_URI",
        default_value = "sqlite:///ctflow-data/ctflow.db"
    )]
    pub(crate) backend_store_uri: String,
    /// Root of new experiments' artifact locations (default: mlflow-artifacts:/ when
    /// artifacts are served, else the artifacts destination folder).
    #[arg(long)]
    pub(crate) default_artifact_root: Option<String>,
    /// Where served artifacts are stored: a folder, s3://bucket/prefix (credentials and
    /// endpoint from AWS_* and MLFLOW_S3_ENDPOINT_URL), or az://container/prefix or
    /// wasbs://container@account.blob.core.windows.net/prefix (from AZURE_STORAGE_*).
    #[arg(
        long,
        env = "CTFLOW_ARTIFACTS_DESTINATION",
        default_value = "ctflow-data/artifacts"
    )]
    pub(crate) artifacts_destination: String,
    /// Proxy artifact uploads and downloads through this server (the default).
    #[arg(long, overrides_with = "no_serve_artifacts")]
    pub(crate) serve_artifacts: bool,
    /// Clients read and write artifacts themselves; the server does not proxy them.
    #[arg(long)]
    pub(crate) no_serve_artifacts: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: IpAddr,
    #[arg(long, short, default_value_t = 5000)]
    pub(crate) port: u16,
    /// When a SQLite commit is answered: full (fsynced first, so a 200 survives a power
    /// cut) or relaxed (fsynced at checkpoints: faster, and a power cut or OS crash can
    /// lose the last acknowledged writes; a crash of ctflow alone loses nothing).
    #[arg(long, env = "CTFLOW_DURABILITY", default_value = "full")]
    pub(crate) durability: ctflow_store::Durability,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
    #[command(flatten)]
    pub(crate) online_scoring: OnlineScoringArgs,
}

/// Online scoring: registered gateway judges scoring new traces (MLflow's online scorers).
#[derive(Args, Debug)]
pub(crate) struct OnlineScoringArgs {
    /// Time between online scoring passes, in which judges set to sample an experiment's
    /// traces score the new ones. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false turns them off,
    /// as it does MLflow's.
    #[arg(long, env = "CTFLOW_ONLINE_SCORING_INTERVAL", default_value = "60s", value_parser = services::parse_duration)]
    pub(crate) online_scoring_interval: std::time::Duration,
    /// Turn online scoring off.
    #[arg(long, env = "CTFLOW_NO_ONLINE_SCORING")]
    pub(crate) no_online_scoring: bool,
    /// The Python (with `mlflow` installed) that runs the judges.
    #[arg(long, env = "CTFLOW_JUDGE_PYTHON", default_value = "python3")]
    pub(crate) judge_python: PathBuf,
}

impl OnlineScoringArgs {
    /// Starts the online scorer beside a server reachable at `tracking_uri`, unless off.
    /// Under `--auth` (`with_auth`) its passes act as the installation's service user.
    pub(crate) async fn start(
        &self,
        store: &ctflow_store::Store,
        tracking_uri: &str,
        with_auth: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>> {
        if self.no_online_scoring || !ctflow_server::online_scoring::job_execution_enabled() {
            tracing::info!("online scoring is off");
            return Ok(None);
        }
        let signer = if with_auth {
            Some(users::service_user(store).await?)
        } else {
            None
        };
        let scorer = ctflow_server::online_scoring::OnlineScoring {
            store: store.clone(),
            tracking_uri: tracking_uri.to_string(),
            signer,
            holder: ctflow_core::process_name(),
            python: self.judge_python.clone(),
            interval: self.online_scoring_interval,
            pass_timeout: std::time::Duration::from_secs(30 * 60),
        };
        Ok(Some(tokio::spawn(async move {
            scorer.run(async move { shutdown.cancelled().await }).await
        })))
    }
}

/// How this process's own services reach a server listening on `addr`.
pub(crate) fn local_uri(addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

/// What one client may ask of the server; each refusal names its flag.
#[derive(Args, Debug)]
pub(crate) struct LimitArgs {
    /// Largest JSON request body (every API call but artifact uploads): 64MiB, 1GB...
    #[arg(long, env = "CTFLOW_MAX_REQUEST_BODY", default_value = "64MiB", value_parser = parse_size)]
    pub(crate) max_request_body: u64,
    /// Largest single artifact upload through the artifact proxy.
    #[arg(long, env = "CTFLOW_MAX_ARTIFACT_UPLOAD", default_value = "10GiB", value_parser = parse_size)]
    pub(crate) max_artifact_upload: u64,
    /// Most rows in one page of a search or metric history; a request for more gets
    /// this many and a next_page_token.
    #[arg(long, env = "CTFLOW_MAX_PAGE_SIZE", default_value_t = 25_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) max_page_size: i64,
    /// Open client connections; more are answered 503 and closed.
    #[arg(long, env = "CTFLOW_MAX_HTTP_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_http_connections: u32,
    /// Open connections from one client address (default: half of
    /// --max-http-connections), so one client cannot take them all.
    #[arg(long, env = "CTFLOW_MAX_CONNECTIONS_PER_ADDRESS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections_per_address: Option<u32>,
    /// How long a connection may stay open with no request under way (a new one that
    /// sends nothing, a keep-alive one between requests).
    #[arg(long, env = "CTFLOW_IDLE_CONNECTION_TIMEOUT", default_value = "5s", value_parser = services::parse_duration)]
    pub(crate) idle_connection_timeout: std::time::Duration,
    /// How long a client may take to send a request's head once it has begun (answered
    /// 408 after).
    #[arg(long, env = "CTFLOW_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = services::parse_duration)]
    pub(crate) header_read_timeout: std::time::Duration,
    /// How long a request body may go without a byte arriving (answered 408 after).
    #[arg(long, env = "CTFLOW_BODY_READ_TIMEOUT", default_value = "60s", value_parser = services::parse_duration)]
    pub(crate) body_read_timeout: std::time::Duration,
}

fn parse_size(text: &str) -> Result<u64, String> {
    ctflow_core::byte_size::parse_byte_size(text)
}

impl LimitArgs {
    pub(crate) fn limits(&self) -> ctflow_server::Limits {
        ctflow_server::Limits {
            max_request_body: usize::try_from(self.max_request_body).unwrap_or(usize::MAX),
            max_artifact_upload: self.max_artifact_upload,
            max_page_size: self.max_page_size,
            max_connections: self.max_http_connections as usize,
            max_connections_per_address: self
                .max_connections_per_address
                .map_or((self.max_http_connections as usize).div_ceil(2), |n| {
                    n as usize
                }),
            idle_connection_timeout: self.idle_connection_timeout,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
        }
    }
}

/// Access control of `ctflow server`.
#[derive(Args, Debug)]
pub(crate) struct AuthArgs {
    /// Users must sign in (HTTP Basic or a bearer token) and act within their
    /// permissions. The first admin: `ctflow users create-admin`, or CTFLOW_ADMIN_USERNAME
    /// and CTFLOW_ADMIN_PASSWORD (e.g. from a Secret) at start.
    #[arg(long, env = "CTFLOW_AUTH")]
    pub(crate) auth: bool,
    /// What a user holds on an experiment or registered model no grant names:
    /// READ, EDIT, MANAGE or NO_PERMISSIONS.
    #[arg(long, env = "CTFLOW_AUTH_DEFAULT_PERMISSION", default_value = "READ")]
    pub(crate) auth_default_permission: String,
}

impl AuthArgs {
    /// The default permission when `--auth` is on.
    pub(crate) fn permission(&self) -> Result<Option<ctflow_core::auth::Permission>> {
        if !self.auth {
            return Ok(None);
        }
        ctflow_core::auth::Permission::parse(&self.auth_default_permission)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--auth-default-permission: {}", e.message))
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("CTFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => {
            // Colour codes are for people at a terminal, not for files and collectors.
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logs.with_ansi(colour).init()
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

/// What to tell the operator when the server is reachable from the network.
pub(crate) fn exposure_warning(host: IpAddr) -> Option<String> {
    (!host.is_loopback()).then(|| {
        format!(
            "listening on {host}, a non-loopback address: anyone who can reach this port can read and write experiments, runs and artifacts (ctflow server --auth makes users sign in)"
        )
    })
}

pub(crate) fn server_config(args: &ServerArgs) -> ctflow_server::ServerConfig {
    ctflow_server::ServerConfig {
        backend_store_uri: args.backend_store_uri.clone(),
        default_artifact_root: args.default_artifact_root.clone(),
        artifacts_destination: args.artifacts_destination.clone(),
        serve_artifacts: !args.no_serve_artifacts || args.serve_artifacts,
        max_connections: 8,
        durability: args.durability,
        auth: None,
        limits: args.limits.limits(),
    }
}

/// With `--auth`: creates the admin named by CTFLOW_ADMIN_USERNAME/CTFLOW_ADMIN_PASSWORD
/// (a Kubernetes Secret's way in) unless that user exists; warns when no user can sign in.
pub(crate) async fn bootstrap_admin(store: &ctflow_store::Store) -> Result<()> {
    let username = std::env::var("CTFLOW_ADMIN_USERNAME")
        .ok()
        .filter(|u| !u.is_empty());
    let password = std::env::var("CTFLOW_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    match (username, password) {
        (Some(username), Some(password)) => {
            if store.user_with_hash(&username).await?.is_none() {
                users::create_admin(store, &username, &password).await?;
                tracing::info!(username, "created the admin from CTFLOW_ADMIN_USERNAME");
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            anyhow::bail!("set both CTFLOW_ADMIN_USERNAME and CTFLOW_ADMIN_PASSWORD, or neither")
        }
        (None, None) => {}
    }
    if store.count_users().await? == 0 {
        tracing::warn!(
            "authentication is on and there are no users: create an admin with `ctflow users create-admin`"
        );
        eprintln!(
            "WARNING: authentication is on and there are no users yet; create an admin with `ctflow users create-admin --username NAME --password-stdin`"
        );
    }
    Ok(())
}

async fn run_server(args: ServerArgs, bus: services::BusArgs, auth: AuthArgs) -> Result<()> {
    let mut config = server_config(&args);
    config.auth = auth.permission()?;
    if !auth.auth
        && let Some(warning) = exposure_warning(args.host)
    {
        tracing::warn!(host = %args.host, "{warning}");
        eprintln!("WARNING: {warning}");
    }
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let mut state = ctflow_server::AppState::open(&config)
        .await
        .context("cannot open the tracking store")?;
    state.bus = bus.connect().await?;
    if state.auth.is_some() {
        bootstrap_admin(&state.store).await?;
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = ?state.store.backend(), serve_artifacts = config.serve_artifacts, "ctflow server listening");
    println!("ctflow server listening on http://{addr}");
    let bus = state.bus.clone();
    let stop_scoring = tokio_util::sync::CancellationToken::new();
    let scoring = args
        .online_scoring
        .start(
            &state.store,
            &local_uri(addr),
            state.auth.is_some(),
            stop_scoring.clone(),
        )
        .await?;
    ctflow_server::serve(listener, state, shutdown_signal()).await?;
    stop_scoring.cancel();
    if let Some(scoring) = scoring {
        let _ = scoring.await;
    }
    if let Some(bus) = bus {
        bus.close();
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    use clap::CommandFactory;
    let args = match config::with_config_file(&Cli::command(), std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("Error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The whole chain on one line, and never a backtrace: RUST_BACKTRACE in a
            // user's environment is for panics, not for a refused request.
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server {
                server, bus, auth, ..
            } => run_server(server, bus, auth).await,
            Command::Controller(args) => services::controller(args).await,
            Command::Worker(args) => services::worker(args).await,
            Command::Watcher(args) => services::watcher(args).await,
            Command::Crd => {
                print!(
                    "{}",
                    ctflow_kube::crd_yaml()
                        .map_err(|e| anyhow::anyhow!("cannot write the CRD: {e}"))?
                );
                Ok(())
            }
            Command::Experiments { command, client } => {
                commands::experiments(command, &client).await
            }
            Command::Runs { command, client } => commands::runs(command, &client).await,
            Command::Models { command, client } => models::run(command, &client).await,
            Command::Feedback { command, client } => feedback::run(command, &client).await,
            Command::Users { command } => users::run(command).await,
            Command::Run { run, client } => run::run(run, &client).await,
            Command::Up(args) => up::run(args).await,
            Command::Drift(args) => {
                if drift::run(args).await? {
                    std::process::exit(drift::DRIFT_EXIT_CODE);
                }
                Ok(())
            }
            Command::Pipelines { command, client } => pipelines::run(command, &client).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_loopback_addresses_warn() {
        assert!(exposure_warning("127.0.0.1".parse().unwrap()).is_none());
        assert!(exposure_warning("::1".parse().unwrap()).is_none());
        let warning = exposure_warning("0.0.0.0".parse().unwrap()).unwrap();
        assert!(warning.contains("anyone who can reach this port can read and write"));
        assert!(exposure_warning("192.0.2.7".parse().unwrap()).is_some());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["ctflow", "server", "--no-serve-artifacts", "--port", "0"])
            .unwrap();
        let Command::Server { server: args, .. } = cli.command else {
            panic!("not the server command")
        };
        assert!(args.no_serve_artifacts);
        assert_eq!(args.backend_store_uri, "sqlite:///ctflow-data/ctflow.db");
    }
}
