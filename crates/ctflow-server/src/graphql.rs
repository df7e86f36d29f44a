//! `/graphql`: the GraphQL API MLflow's UI queries (runs with their experiment and model
//! versions, run searches, metric histories, artifact listings, dataset summaries), as
//! MLflow 3.17 declares it (`mlflow/server/graphql`), on async-graphql's dynamic schema.
//!
//! Each root field answers through the same handler as its REST endpoint, so validation,
//! errors and results are the REST API's; what GraphQL adds is field selection. Objects
//! are the REST answer's JSON; a field reads its snake_case key, and a field the answer
//! leaves out reads as protobuf's default (`""`, `"0"`, `false`, `[]`), as in MLflow,
//! whose resolvers read protobuf messages. Under `--auth` each resolver's REST call passes
//! the same access rule the guard applies to that route, and searches are filtered alike.

use std::sync::LazyLock;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar,
    Schema, TypeRef,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, Value as GqlValue, Variables};
use axum::Extension;
use axum::body::to_bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ctflow_core::auth::{Access, route_access};
use ctflow_core::{ErrorCode, MlflowError};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{CurrentUser, Visibility, check_call, filter_listing};
use crate::error::ApiResult;
use crate::params::Params;

/// MLflow's limits on one query (`graphql_no_batching.py`): nesting, selections in all,
/// fields at the root and aliases in one selection set. The last two follow MLflow's
/// environment variables of the same names.
const MAX_DEPTH: usize = 10;
const MAX_SELECTIONS: usize = 1000;

fn limit_from_env(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10)
}

/// `POST /graphql` (also GET): `{query, variables, operationName}` in, MLflow's
/// `{"data": ..., "errors": [messages] | null}` out, always 200.
pub async fn handle(
    State(state): State<AppState>,
    visibility: Option<Extension<Visibility>>,
    user: Option<Extension<CurrentUser>>,
    p: Params,
) -> ApiResult<Response> {
    let query = p.req_str("query")?;
    let operation = p.str("operationName")?;
    let variables = p.get("variables").cloned().unwrap_or(Value::Null);
    let caller = Caller {
        user: user.map(|Extension(CurrentUser(user))| user),
        visibility: Visibility::of_request(&state, visibility)?,
    };
    let mut request = async_graphql::Request::new(query)
        .variables(Variables::from_json(variables))
        .data(state)
        .data(caller);
    if let Some(operation) = operation {
        request = request.operation_name(operation);
    }
    let document = match request.parsed_query() {
        Ok(document) => document,
        Err(error) => return Ok(answer(Value::Null, vec![error.message])),
    };
    if let Err(message) = check_query_safety(document) {
        return Ok(answer(Value::Null, vec![message]));
    }
    let mut document = document.clone();
    drop_component_directives(&mut document);
    request.set_parsed_query(document);
    let schema = SCHEMA.as_ref().map_err(|error| {
        MlflowError::new(
            ErrorCode::InternalError,
            format!("the GraphQL schema does not build: {error}"),
        )
    })?;
    let response = schema.execute(request).await;
    let errors = response.errors.into_iter().map(|e| e.message).collect();
    Ok(answer(
        response.data.into_json().unwrap_or(Value::Null),
        errors,
    ))
}

fn answer(data: Value, errors: Vec<String>) -> Response {
    let errors = if errors.is_empty() {
        Value::Null
    } else {
        json!(errors)
    };
    axum::Json(json!({ "data": data, "errors": errors })).into_response()
}

/// `@component(name: ...)` on an operation names the UI component that sent it (kept for
/// Databricks' servers); MLflow declares and ignores it.
fn drop_component_directives(document: &mut ExecutableDocument) {
    let keep = |directives: &mut Vec<Positioned<async_graphql::parser::types::Directive>>| {
        directives.retain(|d| d.node.name.node.as_str() != "component");
    };
    match &mut document.operations {
        DocumentOperations::Single(operation) => keep(&mut operation.node.directives),
        DocumentOperations::Multiple(operations) => {
            for operation in operations.values_mut() {
                keep(&mut operation.node.directives);
            }
        }
    }
}

/// The fields of one selection set, with those of its inline fragments and fragment spreads
/// merged in (each fragment once), and how many of them carry an alias.
fn collect_fields<'a>(
    set: &'a SelectionSet,
    fragments: &'a std::collections::HashMap<Name, Positioned<FragmentDefinition>>,
) -> (Vec<&'a async_graphql::parser::types::Field>, usize) {
    let mut fields = Vec::new();
    let mut aliases = 0;
    let mut seen_fragments = std::collections::HashSet::new();
    let mut pending: std::collections::VecDeque<&Selection> =
        set.items.iter().map(|s| &s.node).collect();
    while let Some(selection) = pending.pop_front() {
        match selection {
            Selection::Field(field) => {
                aliases += usize::from(field.node.alias.is_some());
                fields.push(&field.node);
            }
            Selection::InlineFragment(inline) => {
                pending.extend(inline.node.selection_set.node.items.iter().map(|s| &s.node));
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if seen_fragments.insert(name.clone())
                    && let Some(fragment) = fragments.get(name)
                {
                    pending.extend(
                        fragment
                            .node
                            .selection_set
                            .node
                            .items
                            .iter()
                            .map(|s| &s.node),
                    );
                }
            }
        }
    }
    (fields, aliases)
}

/// MLflow's guard against batching and deep or wide queries, with its messages.
fn check_query_safety(document: &ExecutableDocument) -> Result<(), String> {
    let max_root_fields = limit_from_env("MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS");
    let max_aliases = limit_from_env("MLFLOW_SERVER_GRAPHQL_MAX_ALIASES");
    let (mut root_fields, mut most_aliases, mut selections) = (0, 0, 0);
    for (_, operation) in document.operations.iter() {
        let mut stack = vec![(&operation.node.selection_set.node, 1usize)];
        while let Some((set, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(format!("Query exceeds maximum depth of {MAX_DEPTH}"));
            }
            let (fields, aliases) = collect_fields(set, &document.fragments);
            for field in fields {
                if depth == 1 {
                    root_fields += 1;
                }
                if !field.selection_set.node.items.is_empty() {
                    stack.push((&field.selection_set.node, depth + 1));
                }
                selections += 1;
                if selections > MAX_SELECTIONS {
                    return Err(format!(
                        "Query exceeds maximum total selections of {MAX_SELECTIONS}"
                    ));
                }
            }
            most_aliases = most_aliases.max(aliases);
        }
    }
    let over = |what: &str, limit: usize, got: usize, variable: &str| {
        format!(
            "GraphQL queries should have at most {limit} {what}, got {got} {what}. To increase the limit, set the {variable} environment variable."
        )
    };
    if root_fields > max_root_fields {
        return Err(over(
            "root fields",
            max_root_fields,
            root_fields,
            "MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS",
        ));
    }
    if most_aliases > max_aliases {
        return Err(over(
            "aliases",
            max_aliases,
            most_aliases,
            "MLFLOW_SERVER_GRAPHQL_MAX_ALIASES",
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ the schema

/// What a field holds, as MLflow's schema types it.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// 64-bit integers travel as strings (`LongString`), so JavaScript keeps every digit.
    Long,
    Float,
    Bool,
    Choice(&'static str),
    One(&'static str),
    /// A list of non-null objects.
    Many(&'static str),
    /// A list of (nullable) strings.
    Strings,
}

impl Kind {
    fn type_ref(self) -> TypeRef {
        match self {
            Kind::Str => TypeRef::named(TypeRef::STRING),
            Kind::Long => TypeRef::named("LongString"),
            Kind::Float => TypeRef::named(TypeRef::FLOAT),
            Kind::Bool => TypeRef::named(TypeRef::BOOLEAN),
            Kind::Choice(name) | Kind::One(name) => TypeRef::named(name),
            Kind::Many(name) => TypeRef::named_nn_list(name),
            Kind::Strings => TypeRef::named_list(TypeRef::STRING),
        }
    }
}

/// `run_uuid` -> `runUuid`, as graphene names fields.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON answer's value as a field of `kind`, protobuf defaults for what is missing.
fn field_value(value: Option<&Value>, kind: Kind) -> FieldValue<'static> {
    let value = value.filter(|v| !v.is_null());
    match kind {
        Kind::Str => FieldValue::value(match value {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }),
        Kind::Long => FieldValue::value(match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "0".to_string(),
        }),
        // NB: NaN (and the infinities) are not GraphQL floats: null, as MLflow answers NaN.
        Kind::Float => match value {
            Some(Value::Number(n)) => n
                .as_f64()
                .map_or(FieldValue::NULL, |f| FieldValue::value(GqlValue::from(f))),
            Some(_) => FieldValue::NULL,
            None => FieldValue::value(GqlValue::from(0.0)),
        },
        Kind::Bool => FieldValue::value(value.and_then(Value::as_bool).unwrap_or(false)),
        Kind::Choice(_) => match value.and_then(Value::as_str) {
            Some(name) => FieldValue::value(GqlValue::Enum(Name::new(name))),
            None => FieldValue::NULL,
        },
        Kind::One(_) => FieldValue::owned_any(value.cloned().unwrap_or_else(|| json!({}))),
        Kind::Many(_) => FieldValue::list(
            value
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|item| FieldValue::owned_any(item.clone())),
        ),
        Kind::Strings => FieldValue::list(
            value
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|item| match item.as_str() {
                    Some(s) => FieldValue::value(s.to_string()),
                    None => FieldValue::NULL,
                }),
        ),
    }
}

fn parent_json<'a>(ctx: &ResolverContext<'a>) -> async_graphql::Result<&'a Value> {
    ctx.parent_value.try_downcast_ref::<Value>()
}

/// An object type whose fields read the parent's JSON.
fn object(name: &str, fields: &[(&'static str, Kind)]) -> Object {
    fields
        .iter()
        .fold(Object::new(name), |object, &(key, kind)| {
            object.field(Field::new(camel(key), kind.type_ref(), move |ctx| {
                FieldFuture::new(async move {
                    let parent = parent_json(&ctx)?;
                    Ok(Some(field_value(parent.get(key), kind)))
                })
            }))
        })
}

fn input(name: &str, fields: &[(&'static str, TypeRef)]) -> InputObject {
    fields
        .iter()
        .fold(InputObject::new(name), |object, (key, ty)| {
            object.field(InputValue::new(camel(key), ty.clone()))
        })
}

fn enumeration(name: &str, items: &[&str]) -> Enum {
    items.iter().fold(Enum::new(name), |e, item| e.item(*item))
}

/// The GraphQL `input` argument as the REST handler's parameters (snake_case keys).
fn input_params(ctx: &ResolverContext<'_>) -> Params {
    let mut params = Map::new();
    if let Some(input) = ctx.args.get("input")
        && let Ok(Value::Object(fields)) = input.as_value().clone().into_json()
    {
        for (key, value) in fields {
            let mut snake = String::with_capacity(key.len() + 4);
            for c in key.chars() {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            params.insert(snake, value);
        }
    }
    Params(params)
}

/// A REST handler's answer as JSON, or its error message as the field's error.
async fn rest(response: ApiResult<Response>) -> async_graphql::Result<Value> {
    let response = response.map_err(api_error)?;
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| async_graphql::Error::new(e.to_string()))
}

/// Who asks: the signed-in user (under `--auth`) and what the user may read.
struct Caller {
    user: Option<ctflow_store::auth::User>,
    visibility: Visibility,
}

fn api_error(error: crate::error::ApiError) -> async_graphql::Error {
    async_graphql::Error::new(error.error().message.clone())
}

/// One REST call on the caller's behalf: the access rule of `method route` (the guard's
/// own, [`check_call`]), then the route's handler, its answer as JSON. A search answer
/// keeps only what the caller may read, as the guard's listings do.
async fn call<F, Fut>(
    ctx: &ResolverContext<'_>,
    method: &str,
    route: &str,
    params: Params,
    handler: F,
) -> async_graphql::Result<Value>
where
    F: FnOnce(State<AppState>, Params) -> Fut,
    Fut: std::future::Future<Output = ApiResult<Response>>,
{
    let state = ctx.data::<AppState>()?;
    let caller = ctx.data::<Caller>()?;
    check_call(state, caller.user.as_ref(), method, route, &params)
        .await
        .map_err(api_error)?;
    let mut answer = rest(handler(State(state.clone()), params).await).await?;
    if let Some(Access::Listing(_)) = route_access(method, route) {
        filter_listing(&caller.visibility, route, &mut answer);
    }
    Ok(answer)
}

/// A root field: its answer type and input type, and the REST route that answers it.
fn root(
    name: &'static str,
    answer_type: &'static str,
    input_type: &'static str,
    resolve: for<'a> fn(ResolverContext<'a>) -> FieldFuture<'a>,
) -> Field {
    Field::new(name, TypeRef::named(answer_type), resolve)
        .argument(InputValue::new("input", TypeRef::named(input_type)))
}

/// A root field's resolver: its `input` as the REST call's parameters.
fn through<'a, F, Fut>(
    ctx: ResolverContext<'a>,
    method: &'static str,
    route: &'static str,
    handler: F,
) -> FieldFuture<'a>
where
    F: FnOnce(State<AppState>, Params) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = ApiResult<Response>> + Send + 'a,
{
    FieldFuture::new(async move {
        let params = input_params(&ctx);
        let answer = call(&ctx, method, route, params, handler).await?;
        Ok(Some(FieldValue::owned_any(answer)))
    })
}

fn get_experiment(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(
        ctx,
        "GET",
        "/api/2.0/mlflow/experiments/get",
        crate::api::get_experiment,
    )
}

fn get_run(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(ctx, "GET", "/api/2.0/mlflow/runs/get", crate::api::get_run)
}

fn search_runs(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(
        ctx,
        "POST",
        "/api/2.0/mlflow/runs/search",
        crate::api::search_runs,
    )
}

fn search_datasets(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(
        ctx,
        "POST",
        "/api/2.0/mlflow/experiments/search-datasets",
        crate::api::search_datasets,
    )
}

fn metric_history(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(
        ctx,
        "GET",
        "/api/2.0/mlflow/metrics/get-history-bulk-interval",
        crate::api::get_metric_history_bulk_interval,
    )
}

fn list_artifacts(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(
        ctx,
        "GET",
        "/api/2.0/mlflow/artifacts/list",
        |state, params| async move {
            crate::artifacts::list_run_artifacts(state, params)
                .await
                .map(IntoResponse::into_response)
        },
    )
}

fn search_model_versions(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    through(
        ctx,
        "GET",
        "/api/2.0/mlflow/model-versions/search",
        crate::registry::search_model_versions,
    )
}

/// `MlflowRunExtension.experiment`: the run's experiment.
fn run_experiment(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let id = parent_json(&ctx)?["info"]["experiment_id"].clone();
        let params = Params(Map::from_iter([("experiment_id".to_string(), id)]));
        let answer = call(
            &ctx,
            "GET",
            "/api/2.0/mlflow/experiments/get",
            params,
            crate::api::get_experiment,
        )
        .await?;
        Ok(Some(field_value(
            answer.get("experiment"),
            Kind::One("MlflowExperiment"),
        )))
    })
}

/// `MlflowRunExtension.modelVersions`: the versions registered from the run.
fn run_model_versions(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let run_id = parent_json(&ctx)?["info"]["run_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let params = Params(Map::from_iter([(
            "filter".to_string(),
            json!(format!("run_id='{run_id}'")),
        )]));
        let answer = call(
            &ctx,
            "GET",
            "/api/2.0/mlflow/model-versions/search",
            params,
            crate::registry::search_model_versions,
        )
        .await?;
        Ok(Some(field_value(
            answer.get("model_versions"),
            Kind::Many("MlflowModelVersion"),
        )))
    })
}

fn echo(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let text = ctx
            .args
            .get("inputString")
            .and_then(|v| v.string().ok().map(str::to_string));
        Ok(Some(FieldValue::owned_any(json!({ "output": text }))))
    })
}

fn build_schema() -> Result<Schema, async_graphql::dynamic::SchemaError> {
    use Kind::*;
    let api_error = object(
        "ApiError",
        &[
            ("code", Str),
            ("message", Str),
            ("help_url", Str),
            ("trace_id", Str),
            ("error_details", Many("ErrorDetail")),
        ],
    );
    let error_detail = object("ErrorDetail", &[("field", Str), ("message", Str)]);
    // NB: `apiError` is Databricks'; MLflow's own resolvers never set it (always null).
    let with_api_error = |object: Object| {
        object.field(Field::new("apiError", TypeRef::named("ApiError"), |_| {
            FieldFuture::new(async { Ok(None::<FieldValue>) })
        }))
    };
    let key_value = |name: &str| object(name, &[("key", Str), ("value", Str)]);
    let metric_fields: &[(&'static str, Kind)] = &[
        ("key", Str),
        ("value", Float),
        ("timestamp", Long),
        ("step", Long),
        ("dataset_name", Str),
        ("dataset_digest", Str),
        ("model_id", Str),
        ("run_id", Str),
    ];
    let run = object(
        "MlflowRunExtension",
        &[
            ("info", One("MlflowRunInfo")),
            ("data", One("MlflowRunData")),
            ("inputs", One("MlflowRunInputs")),
            ("outputs", One("MlflowRunOutputs")),
        ],
    )
    .field(Field::new(
        "experiment",
        TypeRef::named("MlflowExperiment"),
        run_experiment,
    ))
    .field(Field::new(
        "modelVersions",
        TypeRef::named_nn_list("MlflowModelVersion"),
        run_model_versions,
    ));
    let query = Object::new("QueryType")
        .field(root(
            "mlflowGetExperiment",
            "MlflowGetExperimentResponse",
            "MlflowGetExperimentInput",
            get_experiment,
        ))
        .field(root(
            "mlflowGetMetricHistoryBulkInterval",
            "MlflowGetMetricHistoryBulkIntervalResponse",
            "MlflowGetMetricHistoryBulkIntervalInput",
            metric_history,
        ))
        .field(root(
            "mlflowGetRun",
            "MlflowGetRunResponse",
            "MlflowGetRunInput",
            get_run,
        ))
        .field(root(
            "mlflowListArtifacts",
            "MlflowListArtifactsResponse",
            "MlflowListArtifactsInput",
            list_artifacts,
        ))
        .field(root(
            "mlflowSearchModelVersions",
            "MlflowSearchModelVersionsResponse",
            "MlflowSearchModelVersionsInput",
            search_model_versions,
        ))
        .field(root(
            "mlflowSearchRuns",
            "MlflowSearchRunsResponse",
            "MlflowSearchRunsInput",
            search_runs,
        ))
        .field(
            Field::new("test", TypeRef::named("Test"), echo).argument(InputValue::new(
                "inputString",
                TypeRef::named(TypeRef::STRING),
            )),
        );
    let mutation = Object::new("MutationType")
        .field(root(
            "mlflowSearchDatasets",
            "MlflowSearchDatasetsResponse",
            "MlflowSearchDatasetsInput",
            search_datasets,
        ))
        .field(root(
            "mlflowSearchRuns",
            "MlflowSearchRunsResponse",
            "MlflowSearchRunsInput",
            search_runs,
        ))
        .field(
            Field::new("testMutation", TypeRef::named("TestMutation"), echo).argument(
                InputValue::new("inputString", TypeRef::named(TypeRef::STRING)),
            ),
        );
    let string = || TypeRef::named(TypeRef::STRING);
    let strings = || TypeRef::named_list(TypeRef::STRING);
    let int = || TypeRef::named(TypeRef::INT);
    Schema::build("QueryType", Some("MutationType"), None)
        .register(query)
        .register(mutation)
        .register(Scalar::new("LongString"))
        .register(enumeration(
            "MlflowRunStatus",
            &["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"],
        ))
        .register(enumeration(
            "MlflowModelVersionStatus",
            &["PENDING_REGISTRATION", "FAILED_REGISTRATION", "READY"],
        ))
        .register(enumeration(
            "MlflowViewType",
            &["ACTIVE_ONLY", "DELETED_ONLY", "ALL"],
        ))
        .register(api_error)
        .register(error_detail)
        .register(object("Test", &[("output", Str)]))
        .register(object("TestMutation", &[("output", Str)]))
        .register(run)
        .register(object(
            "MlflowRunInfo",
            &[
                ("run_id", Str),
                ("run_uuid", Str),
                ("run_name", Str),
                ("experiment_id", Str),
                ("user_id", Str),
                ("status", Choice("MlflowRunStatus")),
                ("start_time", Long),
                ("end_time", Long),
                ("artifact_uri", Str),
                ("lifecycle_stage", Str),
            ],
        ))
        .register(object(
            "MlflowRunData",
            &[
                ("metrics", Many("MlflowMetricExtension")),
                ("params", Many("MlflowParam")),
                ("tags", Many("MlflowRunTag")),
            ],
        ))
        .register(object("MlflowMetricExtension", metric_fields))
        .register(object("MlflowMetric", metric_fields))
        .register(key_value("MlflowParam"))
        .register(key_value("MlflowRunTag"))
        .register(key_value("MlflowExperimentTag"))
        .register(key_value("MlflowModelVersionTag"))
        .register(key_value("MlflowInputTag"))
        .register(object(
            "MlflowRunInputs",
            &[
                ("dataset_inputs", Many("MlflowDatasetInput")),
                ("model_inputs", Many("MlflowModelInput")),
            ],
        ))
        .register(object(
            "MlflowDatasetInput",
            &[
                ("tags", Many("MlflowInputTag")),
                ("dataset", One("MlflowDataset")),
            ],
        ))
        .register(object(
            "MlflowDataset",
            &[
                ("name", Str),
                ("digest", Str),
                ("source_type", Str),
                ("source", Str),
                ("schema", Str),
                ("profile", Str),
            ],
        ))
        .register(object("MlflowModelInput", &[("model_id", Str)]))
        .register(object(
            "MlflowRunOutputs",
            &[("model_outputs", Many("MlflowModelOutput"))],
        ))
        .register(object(
            "MlflowModelOutput",
            &[("model_id", Str), ("step", Long)],
        ))
        .register(object(
            "MlflowExperiment",
            &[
                ("experiment_id", Str),
                ("name", Str),
                ("artifact_location", Str),
                ("lifecycle_stage", Str),
                ("last_update_time", Long),
                ("creation_time", Long),
                ("tags", Many("MlflowExperimentTag")),
                ("effective_trace_archival_retention", Str),
                ("workspace", Str),
            ],
        ))
        .register(object(
            "MlflowModelVersion",
            &[
                ("name", Str),
                ("version", Str),
                ("creation_timestamp", Long),
                ("last_updated_timestamp", Long),
                ("user_id", Str),
                ("current_stage", Str),
                ("description", Str),
                ("source", Str),
                ("run_id", Str),
                ("status", Choice("MlflowModelVersionStatus")),
                ("status_message", Str),
                ("tags", Many("MlflowModelVersionTag")),
                ("run_link", Str),
                ("aliases", Strings),
                ("model_id", Str),
            ],
        ))
        .register(object(
            "MlflowDatasetSummary",
            &[
                ("experiment_id", Str),
                ("name", Str),
                ("digest", Str),
                ("context", Str),
            ],
        ))
        .register(object(
            "MlflowMetricWithRunId",
            &[
                ("key", Str),
                ("value", Float),
                ("timestamp", Long),
                ("step", Long),
                ("run_id", Str),
            ],
        ))
        .register(object(
            "MlflowFileInfo",
            &[("path", Str), ("is_dir", Bool), ("file_size", Long)],
        ))
        .register(with_api_error(object(
            "MlflowGetExperimentResponse",
            &[("experiment", One("MlflowExperiment"))],
        )))
        .register(with_api_error(object(
            "MlflowGetRunResponse",
            &[("run", One("MlflowRunExtension"))],
        )))
        .register(with_api_error(object(
            "MlflowSearchRunsResponse",
            &[
                ("runs", Many("MlflowRunExtension")),
                ("next_page_token", Str),
            ],
        )))
        .register(with_api_error(object(
            "MlflowSearchModelVersionsResponse",
            &[
                ("model_versions", Many("MlflowModelVersion")),
                ("next_page_token", Str),
            ],
        )))
        .register(with_api_error(object(
            "MlflowSearchDatasetsResponse",
            &[("dataset_summaries", Many("MlflowDatasetSummary"))],
        )))
        .register(with_api_error(object(
            "MlflowGetMetricHistoryBulkIntervalResponse",
            &[("metrics", Many("MlflowMetricWithRunId"))],
        )))
        .register(with_api_error(object(
            "MlflowListArtifactsResponse",
            &[
                ("root_uri", Str),
                ("files", Many("MlflowFileInfo")),
                ("next_page_token", Str),
            ],
        )))
        .register(input(
            "MlflowGetExperimentInput",
            &[("experiment_id", string())],
        ))
        .register(input(
            "MlflowGetRunInput",
            &[("run_id", string()), ("run_uuid", string())],
        ))
        .register(input(
            "MlflowSearchRunsInput",
            &[
                ("experiment_ids", strings()),
                ("filter", string()),
                ("run_view_type", TypeRef::named("MlflowViewType")),
                ("max_results", int()),
                ("order_by", strings()),
                ("page_token", string()),
            ],
        ))
        .register(input(
            "MlflowSearchModelVersionsInput",
            &[
                ("filter", string()),
                ("max_results", TypeRef::named("LongString")),
                ("order_by", strings()),
                ("page_token", string()),
            ],
        ))
        .register(input(
            "MlflowSearchDatasetsInput",
            &[("experiment_ids", strings())],
        ))
        .register(input(
            "MlflowGetMetricHistoryBulkIntervalInput",
            &[
                ("run_ids", strings()),
                ("metric_key", string()),
                ("start_step", int()),
                ("end_step", int()),
                ("max_results", int()),
            ],
        ))
        .register(input(
            "MlflowListArtifactsInput",
            &[
                ("run_id", string()),
                ("run_uuid", string()),
                ("path", string()),
                ("page_token", string()),
            ],
        ))
        .finish()
}

/// Built once: the schema is fixed.
/// Built once: the schema is fixed. NB: it is a constant of this file, and the unit test
/// below builds it, so a mistake in it fails the tests rather than a user's request.
static SCHEMA: LazyLock<Result<Schema, String>> =
    LazyLock::new(|| build_schema().map_err(|e| e.to_string()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_builds() {
        assert!(build_schema().is_ok());
    }

    #[test]
    fn field_names_are_graphenes() {
        assert_eq!(camel("run_uuid"), "runUuid");
        assert_eq!(
            camel("effective_trace_archival_retention"),
            "effectiveTraceArchivalRetention"
        );
        assert_eq!(camel("key"), "key");
    }

    fn safety(query: &str) -> Result<(), String> {
        let document = async_graphql::parser::parse_query(query).map_err(|e| e.to_string())?;
        check_query_safety(&document)
    }

    #[test]
    fn batching_and_deep_queries_are_refused_with_mlflows_messages() {
        let batch: Vec<String> = (0..12)
            .map(|i| format!("k{i}: test(inputString: \"a\") {{ output }}"))
            .collect();
        let refused = safety(&format!("query q {{ {} }}", batch.join(" "))).unwrap_err();
        assert!(refused.starts_with(
            "GraphQL queries should have at most 10 root fields, got 12 root fields."
        ));
        let aliases: Vec<String> = (0..11)
            .map(|i| format!("e{i}: experiment {{ name }}"))
            .collect();
        let refused = safety(&format!(
            "query q {{ mlflowGetExperiment(input: {{experimentId: \"1\"}}) {{ {} }} }}",
            aliases.join(" ")
        ))
        .unwrap_err();
        assert!(refused.contains("at most 10 aliases, got 11 aliases"));
        let mut inner = "name".to_string();
        for _ in 0..12 {
            inner = format!("name {{ {inner} }}");
        }
        assert_eq!(
            safety(&format!("query q {{ a {{ {inner} }} }}")).unwrap_err(),
            "Query exceeds maximum depth of 10"
        );
        // Aliases spread over sibling fragments count together.
        let spread = safety(
            "query q { a { ...F ...G } } fragment F on T { a1: x a2: x a3: x a4: x a5: x a6: x } \
             fragment G on T { b1: x b2: x b3: x b4: x b5: x }",
        )
        .unwrap_err();
        assert!(spread.contains("got 11 aliases"));
        assert!(safety("query q { test(inputString: \"a\") { output } }").is_ok());
    }
}
