//! `ctflow server --auth`: who is calling (HTTP Basic with an argon2-checked password, or
//! a bearer API token), whether they may (MLflow's permissions per experiment and per
//! registered model, a default permission, admins), and MLflow's user and permission API.
//!
//! The guard runs on every matched route. Each route's rule comes from
//! `ctflow_core::auth::route_access`; a route without one is refused.

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

use crate::AppState;
use crate::connections::ClientAddress;
use crate::error::{ApiError, ApiResult, found};
use crate::limits::{Limits, read_body};
use crate::params::{Params, parse_query};

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
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The signed-in user of a request, put there by the guard.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

/// An argon2id hash (PHC string) of `password` with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, MlflowError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| internal(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| internal(format!("cannot hash the password: {e}")))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs argon2 checks, at most one per core at a time, each in working memory that is
/// allocated once and reused. NB: argon2 needs 19 MiB per check; unbounded, a flood of
/// wrong passwords ran hundreds at once and the allocator kept the gigabytes after.
struct PasswordChecker {
    permits: Semaphore,
    memory: Mutex<Vec<Vec<argon2::Block>>>,
}

/// No checker was free in time.
struct CheckerBusy;

impl PasswordChecker {
    fn new(concurrency: usize) -> PasswordChecker {
        PasswordChecker {
            permits: Semaphore::new(concurrency.max(1)),
            memory: Mutex::new(Vec::new()),
        }
    }

    async fn verify(&self, hash: String, password: String) -> Result<bool, CheckerBusy> {
        let permit = tokio::time::timeout(CHECK_QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| CheckerBusy)?
            .map_err(|_| CheckerBusy)?;
        let mut memory = lock(&self.memory).pop().unwrap_or_default();
        let checked = tokio::task::spawn_blocking(move || {
            let ok = verify_password_in(&hash, &password, &mut memory);
            (ok, memory)
        })
        .await;
        drop(permit);
        match checked {
            Ok((ok, memory)) => {
                lock(&self.memory).push(memory);
                Ok(ok)
            }
            Err(_) => Ok(false),
        }
    }

    /// Hashes a new password under the same bound.
    async fn hash(&self, password: String) -> ApiResult<String> {
        let _permit = tokio::time::timeout(CHECK_QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::from(internal(format!("password hashing stopped: {e}"))))?
            .map_err(ApiError::from)
    }
}

/// Checks `password` against an argon2 PHC string, computing in `memory` (grown to the
/// hash's memory cost if smaller). The comparison is constant-time.
fn verify_password_in(hash: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        argon2::Params::try_from(&parsed),
        argon2::Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map(argon2::Version::try_from).transpose() else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut computed = vec![0u8; expected.len()];
    let hasher = argon2::Argon2::new(algorithm, version.unwrap_or_default(), params);
    hasher
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            &mut memory[..blocks],
        )
        .is_ok()
        && Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// 503 with `Retry-After`: every password checker was busy.
fn busy() -> ApiError {
    ApiError::from(MlflowError::new(
        ErrorCode::TemporarilyUnavailable,
        "Too many sign-ins are being checked at once; try again shortly (API tokens are not affected)",
    ))
}

/// An error answered with a `Retry-After` of `wait` (rounded up to whole seconds).
fn with_retry_after(error: ApiError, wait: Duration) -> Response {
    let mut response = error.into_response();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The hash checked for names that have no user. It only has to cost what checking a
/// real one does: a match signs nobody in, as there is no user to sign in.
fn unknown_user_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut secret = [0u8; 32];
        let _ = getrandom::fill(&mut secret);
        hash_password(&hex::encode(secret)).unwrap_or_default()
    })
}

/// A new API token and the SHA-256 the store keeps of it.
pub fn new_token() -> Result<(String, String), MlflowError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| internal(format!("no randomness: {e}")))?;
    let token = format!("ctf_{}", hex::encode(secret));
    let hash = token_hash(&token);
    Ok((token, hash))
}

fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

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

/// The dashboard's session cookie: an API token, HttpOnly and SameSite=Strict.
const SESSION_COOKIE: &str = "ctflow_session";
/// How long a dashboard sign-in lasts.
const SESSION_HOURS: i64 = 12;
/// The header the dashboard sends with every call. Its 401s come without the Basic
/// challenge (the dashboard shows its own sign-in page, not the browser's prompt), and a
/// write signed by the session cookie needs it: a cross-site form cannot set a header.
const DASHBOARD_HEADER: &str = "x-ctflow-dashboard";

/// The session token in the request's cookies, if any.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

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
            check_password(state, auth, &username, password, address).await?
        }
    };
    found.ok_or_else(|| challenge("Incorrect username, password or token"))
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
    let cached = auth
        .verified
        .lock()
        .unwrap_or_else(|e| e.into_inner())
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
    let mut verified = auth.verified.lock().unwrap_or_else(|e| e.into_inner());
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
    let params = if parts.method == Method::GET || parts.method == Method::HEAD {
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
            for run_id in params.str_list("run_ids").unwrap_or_default() {
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

// ------------------------------------------------------------ users and grants (MLflow's auth API)

fn auth_of(state: &AppState) -> ApiResult<Arc<Auth>> {
    state.auth.clone().ok_or_else(|| {
        MlflowError::new(
            ErrorCode::EndpointNotFound,
            "Users and permissions need authentication: start the server with --auth",
        )
        .into()
    })
}

fn current(user: Option<Extension<CurrentUser>>) -> ApiResult<User> {
    user.map(|Extension(CurrentUser(user))| user)
        .ok_or_else(|| unauthenticated("You are not authenticated").into())
}

fn user_json(user: &User) -> Value {
    json!({"id": user.id, "username": user.username, "is_admin": user.is_admin})
}

fn empty() -> Response {
    axum::Json(json!({})).into_response()
}

pub async fn create_user(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let username = p.req_str("username")?;
    let password = p.req_str("password")?;
    validate_username(&username)?;
    validate_password(&password)?;
    let hash = auth.passwords.hash(password).await?;
    let user = state.store.create_user(&username, &hash, false).await?;
    Ok(axum::Json(json!({"user": user_json(&user)})).into_response())
}

pub async fn get_user(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    Ok(axum::Json(json!({"user": user_json(&user)})).into_response())
}

pub async fn current_user(
    State(state): State<AppState>,
    user: Option<Extension<CurrentUser>>,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = current(user)?;
    Ok(axum::Json(json!({"user": user_json(&user)})).into_response())
}

pub async fn list_users(State(state): State<AppState>) -> ApiResult<Response> {
    auth_of(&state)?;
    let users: Vec<Value> = state
        .store
        .list_users()
        .await?
        .iter()
        .map(user_json)
        .collect();
    Ok(axum::Json(json!({"users": users})).into_response())
}

/// An admin sets anyone's password; a user changing their own gives the current one.
pub async fn update_password(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
    p: Params,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let caller = current(caller)?;
    let username = p.req_str("username")?;
    let password = p.req_str("password")?;
    validate_password(&password)?;
    if !caller.is_admin {
        let given = p.str("current_password")?.unwrap_or_default();
        let (_, hash) = state
            .store
            .user_with_hash(&username)
            .await?
            .ok_or_else(|| ApiError::from(permission_denied()))?;
        let ok = auth
            .passwords
            .verify(hash, given)
            .await
            .map_err(|CheckerBusy| busy())?;
        if !ok {
            return Err(MlflowError::invalid("The current password is incorrect").into());
        }
    }
    let hash = auth.passwords.hash(password).await?;
    state.store.set_password_hash(&username, &hash).await?;
    auth.forget_verified();
    Ok(empty())
}

pub async fn update_admin(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let username = p.req_str("username")?;
    let is_admin = p
        .bool("is_admin")?
        .ok_or_else(|| ApiError::from(MlflowError::missing_param("is_admin")))?;
    state.store.set_admin(&username, is_admin).await?;
    auth.forget_verified();
    Ok(empty())
}

pub async fn delete_user(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    state.store.delete_user(&p.req_str("username")?).await?;
    auth.forget_verified();
    Ok(empty())
}

pub async fn grant_permission(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    let kind = resource_type(&p.req_str("resource_type")?)?;
    let id = resource_key(kind, &p.req_str("resource_id")?);
    let permission = Permission::parse(&p.req_str("permission")?)?;
    state.store.grant(kind, &id, user.id, permission).await?;
    Ok(empty())
}

pub async fn revoke_permission(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    let kind = resource_type(&p.req_str("resource_type")?)?;
    let id = resource_key(kind, &p.req_str("resource_id")?);
    state.store.revoke(kind, &id, user.id).await?;
    Ok(empty())
}

/// What a user may do on a resource, resolved as a request would be.
pub async fn get_permission(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let user = state.store.get_user(&p.req_str("username")?).await?;
    let kind = resource_type(&p.req_str("resource_type")?)?;
    let permission = permission_of(&state, &auth, &user, kind, &p.req_str("resource_id")?).await?;
    Ok(axum::Json(json!({
        "allowed": permission.allows(Need::Read),
        "permission": permission.as_str(),
    }))
    .into_response())
}

// ------------------------------------------------------------ API tokens

fn token_json(token: &ctflow_store::auth::TokenInfo) -> Value {
    json!({
        "id": token.id.to_string(),
        "name": token.name,
        "creation_time": token.creation_time,
        "expiry_time": token.expiry_time,
    })
}

/// `POST /api/ctflow/v1/tokens {name, expires_in_days?}`: a token for the caller,
/// shown once.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
    p: Params,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let caller = current(caller)?;
    let name = p.str("name")?.unwrap_or_else(|| "token".into());
    if name.len() > 256 {
        return Err(MlflowError::invalid("Token names may have at most 256 bytes").into());
    }
    let expiry = match p.i64("expires_in_days")? {
        Some(days) if (1..=3650).contains(&days) => Some(ctflow_core::now_ms() + days * 86_400_000),
        Some(days) => {
            return Err(MlflowError::invalid(format!(
                "expires_in_days must be between 1 and 3650, got {days}"
            ))
            .into());
        }
        None => None,
    };
    let (token, hash) = new_token()?;
    let info = state
        .store
        .create_token(caller.id, &name, &hash, expiry)
        .await?;
    Ok(axum::Json(json!({"token": token, "token_info": token_json(&info)})).into_response())
}

pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let caller = current(caller)?;
    let tokens: Vec<Value> = state
        .store
        .list_tokens(caller.id)
        .await?
        .iter()
        .map(token_json)
        .collect();
    Ok(axum::Json(json!({"tokens": tokens})).into_response())
}

pub async fn delete_token(
    State(state): State<AppState>,
    caller: Option<Extension<CurrentUser>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    auth_of(&state)?;
    let caller = current(caller)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::from(MlflowError::invalid(format!("Invalid token id '{id}'"))))?;
    state.store.delete_token(caller.id, id).await?;
    Ok(StatusCode::OK.into_response())
}

fn session_cookie(value: &str, max_age_secs: i64, headers: &HeaderMap) -> ApiResult<HeaderValue> {
    // NB: Secure only where the client reached us over TLS (a proxy says so); a cookie
    // marked Secure is never sent back over the plain HTTP of a laptop install.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    ))
    .map_err(|e| internal(e.to_string()).into())
}

/// `POST /api/ctflow/v1/session`: the dashboard's sign-in. A right password gets a
/// session token (an API token named "dashboard session" that expires) in an HttpOnly
/// cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddress>>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let username = p.req_str("username")?;
    let password = p.req_str("password")?;
    let address = client.map(|Extension(client)| client.0.ip());
    let user = match check_password(&state, &auth, &username, password, address).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(unauthenticated("Incorrect username or password").into()),
        Err(refused) => return Ok(refused),
    };
    let (token, hash) = new_token()?;
    let expiry = ctflow_core::now_ms() + SESSION_HOURS * 3_600_000;
    state
        .store
        .create_token(user.id, "dashboard session", &hash, Some(expiry))
        .await?;
    let cookie = session_cookie(&token, SESSION_HOURS * 3600, &headers)?;
    tracing::info!(user = %user.username, "signed in to the dashboard");
    Ok((
        [(header::SET_COOKIE, cookie)],
        axum::Json(json!({"user": user_json(&user)})),
    )
        .into_response())
}

/// `GET /api/ctflow/v1/session`: whether the server has users, and who this browser is.
pub async fn session(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let Some(auth) = state.auth.clone() else {
        return Ok(axum::Json(json!({"auth": false})).into_response());
    };
    let user = authenticate(&state, &auth, &Method::GET, &headers, None)
        .await
        .ok();
    Ok(axum::Json(json!({"auth": true, "user": user.as_ref().map(user_json)})).into_response())
}

/// `DELETE /api/ctflow/v1/session`: signs out (the session token is deleted).
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    auth_of(&state)?;
    if !headers.contains_key(DASHBOARD_HEADER) {
        return Err(
            MlflowError::new(ErrorCode::PermissionDenied, "Sign out from the dashboard").into(),
        );
    }
    if let Some(token) = session_token(&headers) {
        state
            .store
            .delete_token_by_hash(&token_hash(&token))
            .await?;
    }
    let cookie = session_cookie("", 0, &headers)?;
    Ok(([(header::SET_COOKIE, cookie)], empty()).into_response())
}
