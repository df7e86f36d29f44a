//! Access control's pure parts: MLflow's permission names and what each allows, the
//! `Authorization` header, user names, and the access rule of every API route.

use crate::{ErrorCode, MlflowError};

/// MLflow's permissions, from none to all. `READ` reads, `EDIT` also writes, `MANAGE`
/// also deletes and grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Nothing, not even reading (a grant that takes a default away).
    NoPermissions,
    /// Read.
    Read,
    /// Read and write.
    Edit,
    /// Read, write, delete and grant.
    Manage,
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reads it.
    Read,
    /// Changes it.
    Update,
    /// Deletes it.
    Delete,
    /// Grants on it, or other owner-only changes.
    Manage,
}

impl Permission {
    /// Every permission, in the order MLflow lists them in its error message.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Edit,
        Permission::Manage,
        Permission::NoPermissions,
    ];

    /// MLflow's name for it (`READ`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::NoPermissions => "NO_PERMISSIONS",
            Permission::Read => "READ",
            Permission::Edit => "EDIT",
            Permission::Manage => "MANAGE",
        }
    }

    /// A permission from MLflow's name for it; MLflow's error for any other name.
    pub fn parse(name: &str) -> Result<Permission, MlflowError> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| {
                MlflowError::invalid(format!(
                    "Invalid permission '{name}'. Valid permissions are: ('READ', 'EDIT', 'MANAGE', 'NO_PERMISSIONS')"
                ))
            })
    }

    /// Whether holding this permission allows what a request needs.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => self >= Permission::Read,
            Need::Update => self >= Permission::Edit,
            Need::Delete | Need::Manage => self == Permission::Manage,
        }
    }
}

/// What a client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (the mlflow client's `MLFLOW_TRACKING_USERNAME/PASSWORD`).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An API token (`MLFLOW_TRACKING_TOKEN`).
    Bearer(String),
}

/// Reads an `Authorization` header: `Basic <base64 user:password>` (what the mlflow
/// client sends for MLFLOW_TRACKING_USERNAME/PASSWORD) or `Bearer <token>`
/// (MLFLOW_TRACKING_TOKEN).
pub fn parse_authorization(header: &str) -> Result<Credentials, String> {
    use base64::Engine;
    let (scheme, value) = header
        .trim()
        .split_once(' ')
        .ok_or("the Authorization header has no scheme")?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| "the Basic credentials are not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
        let (username, password) = text
            .split_once(':')
            .ok_or("the Basic credentials have no ':' between user and password")?;
        Ok(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if value.is_empty() {
            return Err("the Bearer token is empty".into());
        }
        Ok(Credentials::Bearer(value.to_string()))
    } else {
        Err(format!(
            "unsupported authorization scheme '{scheme}': use Basic or Bearer"
        ))
    }
}

/// User names: 1 to 64 characters, letters, digits and `._@-`; no `:` (Basic separates
/// the password with it).
pub fn validate_username(name: &str) -> Result<(), MlflowError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if fine {
        Ok(())
    } else {
        Err(MlflowError::invalid(format!(
            "Invalid username '{name}': use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )))
    }
}

/// The shortest password accepted.
pub const MIN_PASSWORD_LENGTH: usize = 12;

/// Refuses a password shorter than [`MIN_PASSWORD_LENGTH`].
pub fn validate_password(password: &str) -> Result<(), MlflowError> {
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(MlflowError::invalid(format!(
            "Passwords must have at least {MIN_PASSWORD_LENGTH} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(MlflowError::invalid(
            "Passwords may have at most 1024 bytes",
        ));
    }
    Ok(())
}

/// Where a route finds the resource it acts on, and what it needs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not: health, version, metrics, the dashboard's files.
    Public,
    /// Any signed-in user: the caller's own things, or something the caller creates.
    /// NB: a route that answers with other users' resources is a `Listing`, never this.
    SignedIn,
    /// Any signed-in user, who sees only the items they may read one by one.
    Listing(Listing),
    /// Admins only.
    Admin,
    /// The experiment named by the `experiment_id` parameter.
    Experiment(Need),
    /// The experiment named by the `experiment_name` parameter.
    ExperimentByName(Need),
    /// Every experiment in the `experiment_ids` parameter.
    Experiments(Need),
    /// The experiment of the run in the `run_id` (or `run_uuid`) parameter.
    Run(Need),
    /// The experiments of every run in the `run_ids` parameter.
    Runs(Need),
    /// The experiment of the logged model in the `{model_id}` path segment.
    LoggedModel(Need),
    /// The experiment of the trace in the `{trace_id}` / `{request_id}` path segment, else
    /// the `trace_id` or `request_id` parameter.
    Trace(Need),
    /// The experiments of every trace in the `trace_ids` parameter; with a `run_id`
    /// parameter, also EDIT on that run's experiment (linking traces to it).
    Traces(Need),
    /// Every experiment in `locations[].mlflow_experiment.experiment_id`.
    TraceLocations(Need),
    /// The evaluation dataset in the `{dataset_id}` path segment: the need on every
    /// experiment it is linked to (admins only for one linked to none), and EDIT on each
    /// experiment in the `experiment_ids` parameter (linking it there).
    Dataset(Need),
    /// The experiment of the issue in the `{issue_id}` path segment.
    Issue(Need),
    /// A trace's report (`StartTraceV3`): the experiment in
    /// `trace.trace_info.trace_location.mlflow_experiment.experiment_id`.
    NewTrace,
    /// The registered model named by the `name` parameter (or `{name}` in the path).
    RegisteredModel(Need),
    /// The experiment whose id is the first segment of a proxied artifact path.
    Artifact(Need),
    /// The registered model a pipeline promotes (`{name}` in the path); admins only for
    /// a pipeline without one.
    Pipeline(Need),
    /// A new version of the registered model `name` (EDIT there) from sources the caller
    /// may read: the `run_id` and `model_id` parameters, and the run, logged model or
    /// registered model its `source` names.
    NewModelVersion,
    /// The pipeline of the pipeline run `{id}` in the path.
    PipelineRun(Need),
    /// The caller's own user (`username` parameter), or admins for anyone's.
    SelfOrAdmin,
    /// A grant on the resource named by `resource_type`/`resource_id`: its MANAGE
    /// holders, or admins; a user may also look up their own permission.
    Grant,
}

/// What a listing holds, and so the rule each item is filtered by: the same rule as
/// the item's own read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// READ on each experiment.
    Experiments,
    /// READ on each registered model.
    RegisteredModels,
    /// READ on each version's registered model.
    ModelVersions,
    /// READ on each pipeline's registered model (admins for one without a model).
    Pipelines,
    /// As `Pipelines`, for each run's pipeline (admins for a deleted pipeline's runs).
    PipelineRuns,
    /// As `Pipelines`, for the pipeline each watch event names.
    WatchEvents,
    /// READ on each counted experiment.
    RunCounts,
    /// READ on each issue's experiment.
    Issues,
    /// READ on every experiment of each dataset (admins for a dataset in none).
    Datasets,
    /// READ on each online scoring configuration's experiment.
    OnlineScoringConfigs,
}

/// The access rule of a route, by method and route pattern as the router matched it
/// (`/api/2.0/mlflow/runs/get`; `/ajax-api/...` is the same route). `None` means the
/// route is not mapped, which the server refuses and a test forbids.
pub fn route_access(method: &str, route: &str) -> Option<Access> {
    use Access::*;
    let route = route
        .strip_prefix("/api")
        .or_else(|| route.strip_prefix("/ajax-api"))
        .map_or(route, |rest| rest);
    let write = method != "GET";
    let rule = match route {
        "/health"
        | "/ready"
        | "/version"
        | "/metrics"
        | "/"
        | "/static/app.js"
        | "/static/app.css"
        | "/static/uplot.min.js"
        | "/static/uplot.min.css" => Public,
        "/3.0/mlflow/server-info" => SignedIn,
        // Experiments.
        "/2.0/mlflow/experiments/create" => SignedIn,
        "/2.0/mlflow/experiments/get" => Experiment(Need::Read),
        "/2.0/mlflow/experiments/get-by-name" => ExperimentByName(Need::Read),
        "/2.0/mlflow/experiments/search" => Listing(self::Listing::Experiments),
        "/2.0/mlflow/experiments/update"
        | "/2.0/mlflow/experiments/set-experiment-tag"
        | "/2.0/mlflow/experiments/delete-experiment-tag" => Experiment(Need::Update),
        "/2.0/mlflow/experiments/delete" | "/2.0/mlflow/experiments/restore" => {
            Experiment(Need::Delete)
        }
        // Runs.
        "/2.0/mlflow/runs/create" | "/2.0/mlflow/runs/create-promptlab-run" => {
            Experiment(Need::Update)
        }
        "/2.0/mlflow/runs/get" | "/2.0/mlflow/metrics/get-history" => Run(Need::Read),
        "/2.0/mlflow/artifacts/list" => Run(Need::Read),
        "/2.0/mlflow/runs/update"
        | "/2.0/mlflow/runs/log-metric"
        | "/2.0/mlflow/runs/log-parameter"
        | "/2.0/mlflow/runs/set-tag"
        | "/2.0/mlflow/runs/delete-tag"
        | "/2.0/mlflow/runs/log-batch"
        | "/2.0/mlflow/runs/log-inputs"
        | "/2.0/mlflow/runs/outputs" => Run(Need::Update),
        "/2.0/mlflow/runs/delete" | "/2.0/mlflow/runs/restore" => Run(Need::Delete),
        "/2.0/mlflow/runs/search" => Experiments(Need::Read),
        "/2.0/mlflow/metrics/get-history-bulk-interval"
        | "/2.0/mlflow/metrics/get-history-bulk" => Runs(Need::Read),
        "/get-artifact" => Run(Need::Read),
        // The AI gateway's secrets: server-wide credentials, for admins.
        "/3.0/mlflow/gateway/secrets/create"
        | "/3.0/mlflow/gateway/secrets/get"
        | "/3.0/mlflow/gateway/secrets/update"
        | "/3.0/mlflow/gateway/secrets/delete"
        | "/3.0/mlflow/gateway/secrets/list" => Admin,
        "/3.0/mlflow/gateway/secrets/config"
        | "/3.0/mlflow/gateway/supported-providers"
        | "/3.0/mlflow/gateway/provider-config"
        | "/2.0/mlflow/gateway-proxy" => SignedIn,
        // Calls through the gateway: the provider key stays on the server.
        "/gateway/mlflow/v1/chat/completions" | "/gateway/{endpoint_name}/mlflow/invocations" => {
            SignedIn
        }
        // Gateway endpoints and model definitions: server-wide, for admins.
        route
            if route.starts_with("/3.0/mlflow/gateway/model-definitions/")
                || route.starts_with("/3.0/mlflow/gateway/endpoints/") =>
        {
            Admin
        }
        // Evaluation datasets.
        "/3.0/mlflow/datasets/create" => Experiments(Need::Update),
        "/3.0/mlflow/datasets/search" => Listing(self::Listing::Datasets),
        "/3.0/mlflow/datasets/{dataset_id}" => Dataset(match method {
            "GET" => Need::Read,
            "DELETE" => Need::Delete,
            _ => Need::Update,
        }),
        "/3.0/mlflow/datasets/{dataset_id}/records"
        | "/3.0/mlflow/datasets/{dataset_id}/experiment-ids" => {
            Dataset(if write { Need::Update } else { Need::Read })
        }
        "/3.0/mlflow/datasets/{dataset_id}/tags"
        | "/3.0/mlflow/datasets/{dataset_id}/tags/{key}"
        | "/3.0/mlflow/datasets/{dataset_id}/add-experiments"
        | "/3.0/mlflow/datasets/{dataset_id}/remove-experiments" => Dataset(Need::Update),
        // Scorers.
        "/3.0/mlflow/scorers/register" => Experiment(Need::Update),
        "/3.0/mlflow/scorers/delete" => Experiment(Need::Delete),
        "/3.0/mlflow/scorers/list" | "/3.0/mlflow/scorers/versions" | "/3.0/mlflow/scorers/get" => {
            Experiment(Need::Read)
        }
        "/3.0/mlflow/scorers/online-config" => Experiment(Need::Update),
        "/3.0/mlflow/scorers/online-configs" => Listing(self::Listing::OnlineScoringConfigs),
        // Issues.
        "/3.0/mlflow/issues" => Experiment(Need::Update),
        "/3.0/mlflow/issues/search" => Listing(self::Listing::Issues),
        "/3.0/mlflow/issues/{issue_id}" => Issue(if write { Need::Update } else { Need::Read }),
        // Traces. OTLP's experiment travels in the `x-mlflow-experiment-id` header, which
        // the guard reads as `experiment_id`.
        "/v1/traces" => Experiment(Need::Update),
        "/3.0/mlflow/traces" => NewTrace,
        "/2.0/mlflow/traces" if write => Experiment(Need::Update),
        "/2.0/mlflow/traces" => Experiments(Need::Read),
        "/3.0/mlflow/traces/search" => TraceLocations(Need::Read),
        "/3.0/mlflow/traces/metrics" | "/3.0/mlflow/traces/calculate-filter-correlation" => {
            Experiments(Need::Read)
        }
        "/3.0/mlflow/traces/batchGet" | "/3.0/mlflow/traces/batchGetInfos" => Traces(Need::Read),
        "/2.0/mlflow/traces/link-to-run" => Traces(Need::Read),
        "/2.0/mlflow/traces/delete-traces" | "/3.0/mlflow/traces/delete-traces" => {
            Experiment(Need::Delete)
        }
        "/3.0/mlflow/traces/{trace_id}"
        | "/3.0/mlflow/traces/get"
        | "/2.0/mlflow/traces/{request_id}/info"
        | "/2.0/mlflow/get-trace-artifact"
        | "/3.0/mlflow/get-trace-artifact" => Trace(Need::Read),
        "/2.0/mlflow/traces/{request_id}"
        | "/2.0/mlflow/traces/{request_id}/tags"
        | "/3.0/mlflow/traces/{trace_id}/tags"
        | "/3.0/mlflow/traces/{trace_id}/assessments" => Trace(Need::Update),
        "/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}" => {
            Trace(if write { Need::Update } else { Need::Read })
        }
        // Each GraphQL resolver checks what it reads against the user's readable set.
        "/graphql" => Listing(self::Listing::Experiments),
        "/2.0/mlflow/upload-artifact" => Run(Need::Update),
        "/2.0/mlflow/experiments/search-datasets" => Experiments(Need::Read),
        // Logged models.
        "/2.0/mlflow/logged-models" => Experiment(Need::Update),
        "/2.0/mlflow/logged-models/search" => Experiments(Need::Read),
        "/2.0/mlflow/logged-models/{model_id}" => LoggedModel(match method {
            "GET" => Need::Read,
            "DELETE" => Need::Delete,
            _ => Need::Update,
        }),
        "/2.0/mlflow/logged-models/{model_id}/tags"
        | "/2.0/mlflow/logged-models/{model_id}/tags/{key}"
        | "/2.0/mlflow/logged-models/{model_id}/params" => LoggedModel(Need::Update),
        "/2.0/mlflow/logged-models/{model_id}/artifacts/files"
        | "/2.0/mlflow/logged-models/{model_id}/artifacts/directories" => LoggedModel(Need::Read),
        // The registry.
        "/2.0/mlflow/registered-models/create" => SignedIn,
        "/2.0/mlflow/registered-models/search" => Listing(self::Listing::RegisteredModels),
        "/2.0/mlflow/model-versions/search" => Listing(self::Listing::ModelVersions),
        "/2.0/mlflow/registered-models/get"
        | "/2.0/mlflow/registered-models/get-latest-versions"
        | "/2.0/mlflow/model-versions/get"
        | "/2.0/mlflow/model-versions/get-download-uri"
        | "/model-versions/get-artifact"
        | "//model-versions/get-artifact" => RegisteredModel(Need::Read),
        "/2.0/mlflow/registered-models/alias" => RegisteredModel(match method {
            "GET" => Need::Read,
            _ => Need::Update,
        }),
        "/2.0/mlflow/registered-models/rename"
        | "/2.0/mlflow/registered-models/update"
        | "/2.0/mlflow/registered-models/set-tag"
        | "/2.0/mlflow/registered-models/delete-tag"
        | "/2.0/mlflow/model-versions/update"
        | "/2.0/mlflow/model-versions/set-tag"
        | "/2.0/mlflow/model-versions/delete-tag"
        | "/2.0/mlflow/model-versions/transition-stage" => RegisteredModel(Need::Update),
        "/2.0/mlflow/model-versions/create" => NewModelVersion,
        "/2.0/mlflow/registered-models/delete" | "/2.0/mlflow/model-versions/delete" => {
            RegisteredModel(Need::Delete)
        }
        // Proxied artifacts.
        "/2.0/mlflow-artifacts/artifacts" => Artifact(Need::Read),
        "/2.0/mlflow-artifacts/artifacts/{*path}" => Artifact(match method {
            "GET" => Need::Read,
            "DELETE" => Need::Delete,
            _ => Need::Update,
        }),
        // Users and grants (MLflow's auth API).
        "/2.0/mlflow/users/create"
        | "/2.0/mlflow/users/update-admin"
        | "/2.0/mlflow/users/delete"
        | "/2.0/mlflow/users/list" => Admin,
        "/2.0/mlflow/users/get" | "/2.0/mlflow/users/update-password" => SelfOrAdmin,
        "/2.0/mlflow/users/current" => SignedIn,
        "/3.0/mlflow/users/permissions/grant"
        | "/3.0/mlflow/users/permissions/revoke"
        | "/3.0/mlflow/users/permissions/get" => Grant,
        // ctflow's API.
        "/ctflow/v1/tokens" | "/ctflow/v1/tokens/{id}" => SignedIn,
        // The dashboard's sign-in, whoami and sign-out check credentials themselves.
        "/ctflow/v1/session" => Public,
        "/ctflow/v1/experiments/run-counts" => Listing(self::Listing::RunCounts),
        "/ctflow/v1/runs/count" => Experiments(Need::Read),
        "/ctflow/v1/models/{name}/history" => RegisteredModel(Need::Read),
        "/ctflow/v1/models/{name}/feedback" => {
            RegisteredModel(if write { Need::Update } else { Need::Read })
        }
        "/ctflow/v1/models/{name}/rollback" => RegisteredModel(Need::Manage),
        "/ctflow/v1/pipelines" => Listing(self::Listing::Pipelines),
        "/ctflow/v1/pipeline-runs" => Listing(self::Listing::PipelineRuns),
        "/ctflow/v1/events" => Listing(self::Listing::WatchEvents),
        "/ctflow/v1/pipelines/{name}" => Pipeline(if write { Need::Manage } else { Need::Read }),
        "/ctflow/v1/pipelines/{name}/runs" | "/ctflow/v1/pipelines/{name}/champion-snapshot" => {
            Pipeline(Need::Read)
        }
        "/ctflow/v1/pipelines/{name}/trigger"
        | "/ctflow/v1/pipelines/{name}/drift-events"
        | "/ctflow/v1/pipelines/{name}/performance-events"
        | "/ctflow/v1/pipelines/{name}/data-events" => Pipeline(Need::Update),
        "/ctflow/v1/pipelines/{name}/triggers/{index}/seen-files" => {
            Pipeline(if write { Need::Update } else { Need::Read })
        }
        // Signed by the pipeline's webhook secret instead.
        "/ctflow/v1/pipelines/{name}/webhook" => Public,
        "/ctflow/v1/pipeline-runs/{id}" => PipelineRun(Need::Read),
        "/ctflow/v1/pipeline-runs/{id}/rerun"
        | "/ctflow/v1/pipeline-runs/{id}/shadow"
        | "/ctflow/v1/pipeline-runs/{id}/claim" => PipelineRun(Need::Update),
        "/ctflow/v1/pipeline-runs/{id}/approve" | "/ctflow/v1/pipeline-runs/{id}/reject" => {
            PipelineRun(Need::Manage)
        }
        _ => return None,
    };
    Some(rule)
}

/// The error a signed-out request gets.
pub fn unauthenticated(message: impl Into<String>) -> MlflowError {
    MlflowError::new(ErrorCode::Unauthenticated, message)
}

/// The error a request beyond the caller's permission gets.
pub fn permission_denied() -> MlflowError {
    MlflowError::new(ErrorCode::PermissionDenied, "Permission denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_allow_what_mlflow_says() {
        let table = [
            (Permission::NoPermissions, [false, false, false, false]),
            (Permission::Read, [true, false, false, false]),
            (Permission::Edit, [true, true, false, false]),
            (Permission::Manage, [true, true, true, true]),
        ];
        for (permission, expected) in table {
            let got = [Need::Read, Need::Update, Need::Delete, Need::Manage]
                .map(|need| permission.allows(need));
            assert_eq!(got, expected, "{permission:?}");
            assert_eq!(Permission::parse(permission.as_str()), Ok(permission));
        }
        let error = Permission::parse("OWNER").expect_err("not a permission");
        assert_eq!(error.code, ErrorCode::InvalidParameterValue);
    }

    #[test]
    fn authorization_headers_parse() {
        // base64("alice:s3cret:with:colons")
        assert_eq!(
            parse_authorization("Basic YWxpY2U6czNjcmV0OndpdGg6Y29sb25z"),
            Ok(Credentials::Basic {
                username: "alice".into(),
                password: "s3cret:with:colons".into()
            })
        );
        assert_eq!(
            parse_authorization("bearer ctf_abc"),
            Ok(Credentials::Bearer("ctf_abc".into()))
        );
        for bad in [
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=",
            "Digest x",
            "Bearer  ",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_names_and_passwords_are_checked() {
        assert!(validate_username("alice.smith@example.com").is_ok());
        for bad in ["", "a:b", "a b", &"x".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough password").is_ok());
    }

    #[test]
    fn both_prefixes_map_alike_and_unknown_routes_are_unmapped() {
        assert_eq!(
            route_access("POST", "/api/2.0/mlflow/runs/log-batch"),
            Some(Access::Run(Need::Update))
        );
        assert_eq!(
            route_access("POST", "/ajax-api/2.0/mlflow/runs/log-batch"),
            Some(Access::Run(Need::Update))
        );
        assert_eq!(
            route_access("DELETE", "/api/2.0/mlflow/logged-models/{model_id}"),
            Some(Access::LoggedModel(Need::Delete))
        );
        assert_eq!(route_access("GET", "/api/2.0/mlflow/no-such"), None);
    }
}
