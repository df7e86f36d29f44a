//! `ctflow server --auth`: who is calling (HTTP Basic with an argon2-checked password, or
//! a bearer API token), whether they may (MLflow's permissions per experiment and per
//! registered model, a default permission, admins), and MLflow's user and permission API.
//!
//! The guard runs on every matched route. Each route's rule comes from
//! `ctflow_core::auth::route_access`; a route without one is refused. Here: the guard,
//! sign-in and the access checks; `passwords` (argon2 and tokens), `users` (MLflow's user
//! and permission API, API tokens) and `session` (the dashboard's sign-in).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ctflow_core::auth::{
    Access, Credentials, Need, Permission, parse_authorization, permission_denied, route_access,
    unauthenticated, validate_password, validate_username,
};
use ctflow_core::throttle::{Throttle, ThrottlePolicy};
use ctflow_core::{ErrorCode, MlflowError};
use ctflow_store::auth::{EXPERIMENT, REGISTERED_MODEL, User};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::Semaphore;

use crate::connections::ClientAddress;
use crate::error::{ApiError, ApiResult, found};
use crate::limits::{Limits, read_body};
use crate::params::{Params, parse_query};
use crate::{AppState, lock};

mod passwords;
mod session;
mod users;

use passwords::*;
pub use passwords::{TOKEN_PREFIX, hash_password, new_token};
use session::*;
pub use session::{session, sign_in, sign_out};
use users::*;
pub use users::{
    create_token, create_user, current_user, delete_token, delete_user, get_permission, get_user,
    grant_permission, list_tokens, list_users, revoke_permission, update_admin, update_password,
};

/// How long a checked password is trusted before argon2 checks it again. The mlflow
/// client sends Basic credentials with every request; argon2 is slow on purpose.
const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// How long a password check waits for a free checker before the request gets 503.
const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Access control's state in a server started with `--auth`.
pub struct Auth {
    /// What a user holds on a resource no grant names.
    pub default_permission: Permission,
    /// Recently checked Basic credentials: SHA-256 of user and password -> user.
    verified: Mutex<HashMap<[u8; 32], (User, Instant)>>,
    passwords: PasswordChecker,
    /// Failed sign-ins by user name, and by client address.
    failed_names: Mutex<Throttle<String>>,
    failed_addresses: Mutex<Throttle<IpAddr>>,
}

impl Auth {
    pub fn new(default_permission: Permission) -> Auth {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Auth {
            default_permission,
            verified: Mutex::new(HashMap::new()),
            passwords: PasswordChecker::new(cores),
            failed_names: Mutex::new(Throttle::new(ThrottlePolicy::default())),
            failed_addresses: Mutex::new(Throttle::new(ThrottlePolicy::default())),
        }
    }

    /// How long a sign-in as `username` from `address` must still wait, if it must.
    fn locked_for(&self, username: &str, address: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let by_name = lock(&self.failed_names).locked_for(&username.to_string(), now);
        let by_address =
            address.and_then(|address| lock(&self.failed_addresses).locked_for(&address, now));
        by_name.max(by_address)
    }

    fn sign_in_failed(&self, username: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let by_name = lock(&self.failed_names).failed(&username.to_string(), now);
        let by_address = address.and_then(|a| lock(&self.failed_addresses).failed(&a, now));
        if let Some(lock) = by_name.max(by_address) {
            tracing::warn!(
                username,
                ?address,
                ?lock,
                "repeated failed sign-ins: throttled"
            );
        }
    }

    fn signed_in(&self, username: &str) {
        lock(&self.failed_names).succeeded(&username.to_string());
    }

    fn forget_verified(&self) {
        lock(&self.verified).clear();
    }
}

/// The signed-in user of a request, put there by the guard.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

fn internal(message: String) -> MlflowError {
    MlflowError::new(ErrorCode::InternalError, message)
}

/// 401, with the challenge that makes browsers and `requests` offer Basic credentials.
fn challenge(message: &str) -> Response {
    let mut response = ApiError::from(unauthenticated(message)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ctflow\""),
    );
    response
}

/// The header the dashboard sends with every call. Its 401s come without the Basic
/// challenge (the dashboard shows its own sign-in page, not the browser's prompt), and a
/// write signed by the session cookie needs it: a cross-site form cannot set a header.
const DASHBOARD_HEADER: &str = "x-ctflow-dashboard";

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Who sent a request: its user, signed in by a bearer token, the dashboard's session
/// cookie or HTTP Basic (the only way that runs argon2, throttled by `address`).
async fn authenticate(
    state: &AppState,
    auth: &Auth,
    method: &Method,
    headers: &HeaderMap,
    address: Option<IpAddr>,
) -> Result<User, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        if let Some(token) = session_token(headers) {
            if !is_safe(method) && !headers.contains_key(DASHBOARD_HEADER) {
                return Err(ApiError::from(MlflowError::new(
                    ErrorCode::PermissionDenied,
                    "A browser session may only change things through the dashboard",
                ))
                .into_response());
            }
            let found = state
                .store
                .user_by_token(&token_hash(&token))
                .await
                .map_err(|e| ApiError::from(e).into_response())?;
            return found.ok_or_else(|| challenge("Your session has ended: sign in again"));
        }
        return Err(challenge(
            "You are not authenticated. Please see https://mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow on how to authenticate.",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| challenge("The Authorization header is not text"))?;
    let credentials = parse_authorization(text).map_err(|e| challenge(&e))?;
    let found = match credentials {
        Credentials::Bearer(token) => state
            .store
            .user_by_token(&token_hash(&token))
            .await
            .map_err(|e| ApiError::from(e).into_response())?,
        Credentials::Basic { username, password } => {
            match token_as_password(state, &username, &password).await? {
                Some(user) => Some(user),
                None => check_password(state, auth, &username, password, address).await?,
            }
        }
    };
    found.ok_or_else(|| challenge("Incorrect username, password or token"))
}

/// An API token sent as the password of HTTP Basic (as GitHub and GitLab accept them):
/// MLflow's clients send only Basic from MLFLOW_TRACKING_USERNAME/PASSWORD in some places
/// (the AI gateway's judge calls). It counts only when it is `username`'s own token;
/// anything else goes on to the password check.
async fn token_as_password(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<Option<User>, Response> {
    if !password.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let user = state
        .store
        .user_by_token(&token_hash(password))
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    Ok(user.filter(|u| u.username == username))
}

/// The user whose password this is: remembered for `VERIFIED_FOR` after an argon2 check.
/// Repeated failures for a name or from an address are answered 429 with `Retry-After`
/// before any check runs; when every checker is busy, 503.
async fn check_password(
    state: &AppState,
    auth: &Auth,
    username: &str,
    password: String,
    address: Option<IpAddr>,
) -> Result<Option<User>, Response> {
    let key: [u8; 32] = sha2::Sha256::digest(format!("{username}\0{password}")).into();
    let cached = lock(&auth.verified)
        .get(&key)
        .filter(|(_, at)| at.elapsed() < VERIFIED_FOR)
        .map(|(user, _)| user.clone());
    if cached.is_some() {
        return Ok(cached);
    }
    if let Some(wait) = auth.locked_for(username, address) {
        let error = MlflowError::new(
            ErrorCode::RequestLimitExceeded,
            format!(
                "Too many failed sign-ins for this user or from this address; try again in {}s (API tokens are not affected)",
                wait.as_secs().max(1)
            ),
        );
        return Err(with_retry_after(error.into(), wait));
    }
    let (user, hash) = match state.store.user_with_hash(username).await {
        Ok(Some((user, hash))) => (Some(user), hash),
        Ok(None) => (None, unknown_user_hash().to_string()),
        Err(error) => return Err(ApiError::from(error).into_response()),
    };
    // NB: an unknown name costs one argon2 check too, so the answer's timing does not
    // tell which names exist.
    let ok = match auth.passwords.verify(hash, password).await {
        Ok(ok) => ok,
        Err(CheckerBusy) => return Err(with_retry_after(busy(), Duration::from_secs(1))),
    };
    let Some(user) = user.filter(|_| ok) else {
        auth.sign_in_failed(username, address);
        return Ok(None);
    };
    auth.signed_in(username);
    let mut verified = lock(&auth.verified);
    verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_FOR);
    verified.insert(key, (user.clone(), Instant::now()));
    Ok(Some(user))
}

/// What `user` holds on a resource: everything for admins, else the grant, else the
/// server's default.
async fn permission_of(
    state: &AppState,
    auth: &Auth,
    user: &User,
    resource_type: &str,
    resource_id: &str,
) -> ApiResult<Permission> {
    if user.is_admin {
        return Ok(Permission::Manage);
    }
    let resource_id = resource_key(resource_type, resource_id);
    Ok(state
        .store
        .granted(resource_type, &resource_id, user.id)
        .await?
        .unwrap_or(auth.default_permission))
}

/// How a resource is named in grants: experiment ids as the handlers parse them (`01`
/// and ` 1` are experiment 1), registered models by name.
fn resource_key(resource_type: &str, resource_id: &str) -> String {
    match ctflow_core::ids::parse_experiment_id(resource_id) {
        Ok(id) if resource_type == EXPERIMENT => id.to_string(),
        _ => resource_id.to_string(),
    }
}

async fn require(
    state: &AppState,
    auth: &Auth,
    user: &User,
    resource_type: &str,
    resource_id: &str,
    need: Need,
) -> ApiResult<()> {
    if permission_of(state, auth, user, resource_type, resource_id)
        .await?
        .allows(need)
    {
        Ok(())
    } else {
        Err(permission_denied().into())
    }
}

fn denied() -> ApiError {
    permission_denied().into()
}

/// The path segment after `marker` (`/logged-models/`, `/pipelines/`, ...), decoded.
fn segment_after(path: &str, marker: &str) -> Option<String> {
    let rest = &path[path.find(marker)? + marker.len()..];
    let raw = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The experiment a proxied artifact path lives under (`<experiment id>/<run>/...`).
fn artifact_experiment(path: &str) -> Option<String> {
    let first = path.trim_start_matches('/').split('/').next()?;
    (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit())).then(|| first.to_string())
}

/// Whether a rule reads the request's parameters (which are then buffered).
fn reads_params(rule: Access) -> bool {
    !matches!(
        rule,
        Access::Public
            | Access::SignedIn
            | Access::Listing(_)
            | Access::Admin
            | Access::LoggedModel(_)
            | Access::PipelineRun(_)
    )
}

/// Reads the parameters as the handler will (query for GET, JSON body otherwise) and
/// gives the request back whole. A body that is not a JSON object gives no parameters:
/// the handler refuses it without acting.
async fn split_params(request: Request, limits: &Limits) -> Result<(Request, Params), Response> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, limits)
        .await
        .map_err(IntoResponse::into_response)?;
    // NB: exactly what `Params` gives the handler, so both see the same resource.
    // NB: `upload-artifact` names its run in the query and sends the file as the body; every
    // other write reads its body only, so only there may the query name the resource.
    let query_names_resource = parts.method == Method::GET
        || parts.method == Method::HEAD
        || parts.uri.path().ends_with("/2.0/mlflow/upload-artifact");
    let params = if query_names_resource {
        parse_query(parts.uri.query().unwrap_or(""))
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(body)) => body,
            _ => serde_json::Map::new(),
        }
    };
    Ok((
        Request::from_parts(parts, Body::from(bytes)),
        Params(params),
    ))
}

/// Checks that `user` may make the REST call `method route` with `params`: the rule the
/// guard applies to that route. GraphQL's resolvers answer through REST handlers and ask
/// here, so both APIs grant exactly the same. Without `--auth` everything is allowed.
pub async fn check_call(
    state: &AppState,
    user: Option<&User>,
    method: &str,
    route: &str,
    params: &Params,
) -> ApiResult<()> {
    let Some(auth) = state.auth.as_deref() else {
        return Ok(());
    };
    let (Some(user), Some(rule)) = (user, route_access(method, route)) else {
        return Err(denied());
    };
    check(state, auth, user, rule, route, route, params).await
}

/// Keeps the items of a search answer (`route`'s) that the caller may read, as the guard
/// does for the REST listings.
pub fn filter_listing(visibility: &Visibility, route: &str, answer: &mut Value) {
    filter_search(visibility, route, answer);
}

/// Checks `rule` for `user`. A resource that does not exist passes: the handler answers
/// 404 without acting.
async fn check(
    state: &AppState,
    auth: &Auth,
    user: &User,
    rule: Access,
    route: &str,
    path: &str,
    params: &Params,
) -> ApiResult<()> {
    let text = |name: &str| params.str(name).ok().flatten().filter(|s| !s.is_empty());
    match rule {
        // NB: a listing's items are filtered by `Visibility`, each by its own read rule.
        Access::Public | Access::SignedIn | Access::Listing(_) => Ok(()),
        Access::NewModelVersion => {
            if let Some(name) = text("name") {
                require(state, auth, user, REGISTERED_MODEL, &name, Need::Update).await?;
            }
            let named = ctflow_core::registry::source_names(&text("source").unwrap_or_default());
            for run_id in [text("run_id"), named.run].into_iter().flatten() {
                if let Some(run) = found(state.store.get_run_info(&run_id).await)? {
                    require(
                        state,
                        auth,
                        user,
                        EXPERIMENT,
                        &run.experiment_id,
                        Need::Read,
                    )
                    .await?;
                }
            }
            for model_id in [text("model_id"), named.logged_model].into_iter().flatten() {
                if let Some(model) = found(state.store.get_logged_model(&model_id).await)? {
                    let experiment = &model.info.experiment_id;
                    require(state, auth, user, EXPERIMENT, experiment, Need::Read).await?;
                }
            }
            if let Some(name) = named.registered_model {
                require(state, auth, user, REGISTERED_MODEL, &name, Need::Read).await?;
            }
            Ok(())
        }
        Access::Admin if user.is_admin => Ok(()),
        Access::Admin => Err(denied()),
        Access::Experiment(need) => {
            // Runs and logged models without an experiment go to the default one.
            let id = text("experiment_id").unwrap_or_else(|| "0".into());
            require(state, auth, user, EXPERIMENT, &id, need).await
        }
        Access::ExperimentByName(need) => {
            let Some(name) = text("experiment_name") else {
                return Ok(());
            };
            match found(state.store.get_experiment_by_name(&name).await)? {
                Some(experiment) => {
                    require(
                        state,
                        auth,
                        user,
                        EXPERIMENT,
                        &experiment.experiment_id,
                        need,
                    )
                    .await
                }
                None => Ok(()),
            }
        }
        Access::Experiments(need) => {
            for id in params.str_list("experiment_ids").unwrap_or_default() {
                require(state, auth, user, EXPERIMENT, &id, need).await?;
            }
            Ok(())
        }
        Access::Run(need) => {
            let Ok(run_id) = params.run_id() else {
                return Ok(());
            };
            match found(state.store.get_run(&run_id).await)? {
                Some(run) => {
                    require(state, auth, user, EXPERIMENT, &run.info.experiment_id, need).await
                }
                None => Ok(()),
            }
        }
        Access::Runs(need) => {
            // NB: `get-history-bulk` names its runs `run_id`, repeated.
            let mut run_ids = params.str_list("run_ids").unwrap_or_default();
            run_ids.extend(params.str_list("run_id").unwrap_or_default());
            for run_id in run_ids {
                if let Some(run) = found(state.store.get_run(&run_id).await)? {
                    require(state, auth, user, EXPERIMENT, &run.info.experiment_id, need).await?;
                }
            }
            Ok(())
        }
        Access::LoggedModel(need) => {
            let Some(model_id) = segment_after(path, "/logged-models/") else {
                return Ok(());
            };
            match found(state.store.get_logged_model(&model_id).await)? {
                Some(model) => {
                    require(
                        state,
                        auth,
                        user,
                        EXPERIMENT,
                        &model.info.experiment_id,
                        need,
                    )
                    .await
                }
                None => Ok(()),
            }
        }
        Access::Trace(need) => {
            let trace_id = if route.contains("{trace_id}") || route.contains("{request_id}") {
                segment_after(path, "/mlflow/traces/")
            } else {
                text("trace_id").or_else(|| text("request_id"))
            };
            match trace_id {
                Some(id) => require_trace(state, auth, user, &id, need).await,
                None => Ok(()),
            }
        }
        Access::Dataset(need) => {
            let Some(dataset_id) = segment_after(path, "/mlflow/datasets/") else {
                return Ok(());
            };
            if let Some(linked) = found(state.store.dataset_experiment_ids(&dataset_id).await)? {
                if linked.is_empty() && !user.is_admin {
                    return Err(denied());
                }
                for id in linked {
                    require(state, auth, user, EXPERIMENT, &id.to_string(), need).await?;
                }
            }
            for id in params.str_list("experiment_ids").unwrap_or_default() {
                require(state, auth, user, EXPERIMENT, &id, Need::Update).await?;
            }
            Ok(())
        }
        Access::Issue(need) => {
            let Some(issue_id) = segment_after(path, "/mlflow/issues/") else {
                return Ok(());
            };
            match found(state.store.get_issue(&issue_id).await)? {
                Some(issue) => {
                    require(state, auth, user, EXPERIMENT, &issue.experiment_id, need).await
                }
                None => Ok(()),
            }
        }
        Access::Traces(need) => {
            for id in params.str_list("trace_ids").unwrap_or_default() {
                require_trace(state, auth, user, &id, need).await?;
            }
            if let Some(run_id) = text("run_id")
                && let Some(run) = found(state.store.get_run(&run_id).await)?
            {
                let experiment = &run.info.experiment_id;
                require(state, auth, user, EXPERIMENT, experiment, Need::Update).await?;
            }
            Ok(())
        }
        Access::TraceLocations(need) => {
            let locations = params.objects("locations").unwrap_or_default();
            for location in locations {
                let id = location
                    .object("mlflow_experiment")
                    .ok()
                    .flatten()
                    .and_then(|e| e.str("experiment_id").ok().flatten());
                if let Some(id) = id {
                    require(state, auth, user, EXPERIMENT, &id, need).await?;
                }
            }
            Ok(())
        }
        Access::NewTrace => {
            let experiment = params
                .object("trace")
                .ok()
                .flatten()
                .and_then(|t| t.object("trace_info").ok().flatten())
                .and_then(|i| i.object("trace_location").ok().flatten())
                .and_then(|l| l.object("mlflow_experiment").ok().flatten())
                .and_then(|e| e.str("experiment_id").ok().flatten());
            match experiment {
                Some(id) => require(state, auth, user, EXPERIMENT, &id, Need::Update).await,
                None => Ok(()),
            }
        }
        Access::RegisteredModel(need) => {
            let name = if route.contains("/ctflow/v1/models/") {
                segment_after(path, "/ctflow/v1/models/")
            } else {
                text("name")
            };
            match name {
                Some(name) => require(state, auth, user, REGISTERED_MODEL, &name, need).await,
                None => Ok(()),
            }
        }
        Access::Artifact(need) => {
            // A download, upload or delete names the path after the route; a listing
            // gives it as `path`.
            let artifact_path = match path.split_once("/mlflow-artifacts/artifacts/") {
                Some((_, rest)) => percent_encoding::percent_decode_str(rest)
                    .decode_utf8_lossy()
                    .into_owned(),
                None => text("path").unwrap_or_default(),
            };
            match artifact_experiment(&artifact_path) {
                Some(id) => require(state, auth, user, EXPERIMENT, &id, need).await,
                // NB: artifacts outside an experiment's folder: admins only.
                None if user.is_admin => Ok(()),
                None => Err(denied()),
            }
        }
        Access::Pipeline(need) => {
            let Some(name) = segment_after(path, "/pipelines/") else {
                return Ok(());
            };
            check_pipeline(state, auth, user, &name, need, params).await
        }
        Access::PipelineRun(need) => {
            let Some(id) = segment_after(path, "/pipeline-runs/") else {
                return Ok(());
            };
            match found(state.store.get_pipeline_run(&id).await)? {
                Some(run) => check_pipeline(state, auth, user, &run.pipeline, need, params).await,
                None => Ok(()),
            }
        }
        Access::SelfOrAdmin => {
            if user.is_admin || text("username").as_deref() == Some(user.username.as_str()) {
                Ok(())
            } else {
                Err(denied())
            }
        }
        Access::Grant => {
            let own_lookup = route.ends_with("/permissions/get")
                && text("username").as_deref() == Some(user.username.as_str());
            if user.is_admin || own_lookup {
                return Ok(());
            }
            let (Some(kind), Some(id)) = (text("resource_type"), text("resource_id")) else {
                return Err(denied());
            };
            let kind = resource_type(&kind)?;
            require(state, auth, user, kind, &id, Need::Manage).await
        }
    }
}

/// A pipeline is governed by the registered model it promotes: reading it needs READ
/// there, triggering EDIT, changing it or approving its promotions MANAGE. A pipeline
/// without a model is admins' to change. A new pipeline's model is read from the body.
async fn check_pipeline(
    state: &AppState,
    auth: &Auth,
    user: &User,
    name: &str,
    need: Need,
    params: &Params,
) -> ApiResult<()> {
    let mut models = Vec::new();
    match found(state.store.get_pipeline(name).await)? {
        Some(record) => models.push(record.document.spec.model.map(|m| m.name)),
        // NB: a deleted pipeline's runs stay readable, by admins, as in its listings.
        None if need == Need::Read => models.push(None),
        None => {}
    }
    // `PUT /pipelines/{name}` carries the document itself.
    if need == Need::Manage
        && let Some(spec) = params.get("spec")
    {
        let model = spec
            .get("model")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        models.push(model);
    }
    for model in models {
        match model {
            Some(model) => require(state, auth, user, REGISTERED_MODEL, &model, need).await?,
            None if user.is_admin => {}
            None => return Err(denied()),
        }
    }
    Ok(())
}

/// `need` on the experiment of trace `trace_id`; a trace that does not exist passes (the
/// handler answers 404 without acting).
async fn require_trace(
    state: &AppState,
    auth: &Auth,
    user: &User,
    trace_id: &str,
    need: Need,
) -> ApiResult<()> {
    match found(state.store.get_trace_info(trace_id).await)? {
        Some(info) => {
            let experiment = info.experiment_id.to_string();
            require(state, auth, user, EXPERIMENT, &experiment, need).await
        }
        None => Ok(()),
    }
}

fn resource_type(name: &str) -> ApiResult<&'static str> {
    match name {
        EXPERIMENT => Ok(EXPERIMENT),
        REGISTERED_MODEL => Ok(REGISTERED_MODEL),
        other => Err(MlflowError::invalid(format!(
            "Unsupported resource_type '{other}': use '{EXPERIMENT}' or '{REGISTERED_MODEL}'"
        ))
        .into()),
    }
}

/// The route OTLP exporters send spans to.
const OTLP_TRACES_ROUTE: &str = "/v1/traces";
/// The header that names the experiment of an OTLP export.
pub const EXPERIMENT_ID_HEADER: &str = "x-mlflow-experiment-id";

/// The guard: authenticates, checks the route's rule, and afterwards grants MANAGE on
/// what the user created and filters search results to what the user may read.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(auth) = state.auth.clone() else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = request.method().as_str().to_string();
    let Some(rule) = route_access(&method, &route) else {
        tracing::error!(route, method, "a route without an access rule was refused");
        return ApiError::from(permission_denied()).into_response();
    };
    if rule == Access::Public {
        return next.run(request).await;
    }
    let mut request = request;
    let address = request
        .extensions()
        .get::<ClientAddress>()
        .map(|client| client.0.ip());
    let user = match authenticate(&state, &auth, request.method(), request.headers(), address).await
    {
        Ok(user) => user,
        Err(mut response) => {
            if request.headers().contains_key(DASHBOARD_HEADER) {
                response.headers_mut().remove(header::WWW_AUTHENTICATE);
            }
            return response;
        }
    };
    request.extensions_mut().insert(CurrentUser(user.clone()));
    let (request, params) = if reads_params(rule) || is_followed_up(&route) {
        match split_params(request, &state.limits).await {
            Ok(split) => split,
            Err(response) => return response,
        }
    } else {
        (request, Params::default())
    };
    // NB: an OTLP export names its experiment in a header; its body is protobuf.
    let params = if route == OTLP_TRACES_ROUTE {
        let mut only = serde_json::Map::new();
        if let Some(id) = request
            .headers()
            .get(EXPERIMENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            only.insert("experiment_id".into(), Value::String(id.to_string()));
        }
        Params(only)
    } else {
        params
    };
    let path = request.uri().path().to_string();
    if let Err(error) = check(&state, &auth, &user, rule, &route, &path, &params).await {
        return error.into_response();
    }
    let mut request = request;
    if let Access::Listing(_) = rule {
        match Visibility::of(&state, &auth, &user).await {
            Ok(visibility) => {
                request.extensions_mut().insert(visibility);
            }
            Err(error) => return error.into_response(),
        }
    }
    let visibility = request.extensions().get::<Visibility>().cloned();
    let response = next.run(request).await;
    if !response.status().is_success() || !is_followed_up(&route) {
        return response;
    }
    follow_up(&state, &user, &route, &params, visibility, response).await
}

/// What a signed-in user may read, for the listings that answer item by item: the same
/// rules as each item's own read (`check`).
#[derive(Clone)]
pub struct Visibility(Option<Arc<Readable>>);

struct Readable {
    default: Permission,
    experiments: HashMap<String, Permission>,
    registered_models: HashMap<String, Permission>,
}

impl Readable {
    fn reads(&self, grants: &HashMap<String, Permission>, id: &str) -> bool {
        grants
            .get(id)
            .copied()
            .unwrap_or(self.default)
            .allows(Need::Read)
    }
}

impl Visibility {
    /// A server without `--auth`, or an admin.
    pub fn everything() -> Visibility {
        Visibility(None)
    }

    async fn of(state: &AppState, auth: &Auth, user: &User) -> ApiResult<Visibility> {
        if user.is_admin {
            return Ok(Visibility::everything());
        }
        Ok(Visibility(Some(Arc::new(Readable {
            default: auth.default_permission,
            experiments: state.store.grants_of(user.id, EXPERIMENT).await?,
            registered_models: state.store.grants_of(user.id, REGISTERED_MODEL).await?,
        }))))
    }

    /// The listing's filter in a handler: everything without `--auth`; with it, what
    /// the guard found (never everything by omission).
    pub fn of_request(
        state: &AppState,
        found: Option<Extension<Visibility>>,
    ) -> ApiResult<Visibility> {
        match (&state.auth, found) {
            (None, _) => Ok(Visibility::everything()),
            (Some(_), Some(Extension(visibility))) => Ok(visibility),
            (Some(_), None) => {
                Err(internal("a listing was reached without its access filter".into()).into())
            }
        }
    }

    pub fn is_everything(&self) -> bool {
        self.0.is_none()
    }

    pub fn experiment(&self, id: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|r| r.reads(&r.experiments, &resource_key(EXPERIMENT, id)))
    }

    pub fn registered_model(&self, name: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|r| r.reads(&r.registered_models, name))
    }

    /// A pipeline by the registered model it promotes; one without a model (or a deleted
    /// one, whose model is unknown) is admins'.
    pub fn pipeline(&self, model: Option<&str>) -> bool {
        match (&self.0, model) {
            (None, _) => true,
            (Some(_), Some(model)) => self.registered_model(model),
            (Some(_), None) => false,
        }
    }
}

/// Routes whose successful answer the guard acts on.
fn is_followed_up(route: &str) -> bool {
    [
        "/2.0/mlflow/experiments/create",
        "/2.0/mlflow/registered-models/create",
        "/2.0/mlflow/registered-models/rename",
        "/2.0/mlflow/registered-models/delete",
        "/2.0/mlflow/experiments/search",
        "/2.0/mlflow/registered-models/search",
        "/2.0/mlflow/model-versions/search",
        "/3.0/mlflow/issues/search",
    ]
    .iter()
    .any(|r| route.ends_with(r))
}

async fn follow_up(
    state: &AppState,
    user: &User,
    route: &str,
    params: &Params,
    visibility: Option<Visibility>,
    response: Response,
) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::from(internal("cannot read the response".into())).into_response();
    };
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let text = |name: &str| params.str(name).ok().flatten();
    let done: ApiResult<()> = async {
        if route.ends_with("/experiments/create") {
            if let Some(id) = answer.get("experiment_id").and_then(Value::as_str) {
                state
                    .store
                    .grant(EXPERIMENT, id, user.id, Permission::Manage)
                    .await?;
            }
        } else if route.ends_with("/registered-models/create") {
            if let Some(name) = text("name") {
                state
                    .store
                    .grant(REGISTERED_MODEL, &name, user.id, Permission::Manage)
                    .await?;
            }
        } else if route.ends_with("/registered-models/rename") {
            if let (Some(from), Some(to)) = (text("name"), text("new_name")) {
                state
                    .store
                    .rename_grants(REGISTERED_MODEL, &from, &to)
                    .await?;
            }
        } else if route.ends_with("/registered-models/delete") {
            if let Some(name) = text("name") {
                state.store.drop_grants(REGISTERED_MODEL, &name).await?;
            }
        } else {
            let visibility = visibility
                .ok_or_else(|| internal("a search was reached without its access filter".into()))?;
            filter_search(&visibility, route, &mut answer);
        }
        Ok(())
    }
    .await;
    if let Err(error) = done {
        return error.into_response();
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(answer.to_string()))
}

/// Keeps the search results the caller may read. NB: a page may come back shorter than
/// `max_results`; its `next_page_token` still leads on.
fn filter_search(visibility: &Visibility, route: &str, answer: &mut Value) {
    let (list, key, readable): (&str, &str, fn(&Visibility, &str) -> bool) =
        if route.ends_with("/experiments/search") {
            ("experiments", "experiment_id", Visibility::experiment)
        } else if route.ends_with("/issues/search") {
            ("issues", "experiment_id", Visibility::experiment)
        } else if route.ends_with("/registered-models/search") {
            ("registered_models", "name", Visibility::registered_model)
        } else {
            ("model_versions", "name", Visibility::registered_model)
        };
    if let Some(Value::Array(items)) = answer.get_mut(list) {
        items.retain(|item| {
            item.get(key)
                .and_then(Value::as_str)
                .is_some_and(|id| readable(visibility, id))
        });
    }
}
