//! Every route the server answers has an access rule: the test reads the router's
//! `.route("...")` calls from the source and fails on a path `route_access` does not map,
//! under both API prefixes and for reads and writes alike.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use ctflow_core::auth::{Access, route_access};

/// The routes on which any signed-in user acts without a per-item rule, each because it
/// answers with the caller's own things or creates something new. Any other route that
/// answers with many items must be a `Listing`, whose items are filtered one by one.
const OWN_OR_NEW: &[&str] = &[
    "/3.0/mlflow/server-info",
    // Whether this server can keep secrets: a fact about the server, like server-info.
    "/3.0/mlflow/gateway/secrets/config",
    // The provider catalog: the same for everyone.
    "/3.0/mlflow/gateway/supported-providers",
    "/3.0/mlflow/gateway/provider-config",
    // The UI's calls to the operator's deployments server: no resource of this server.
    "/2.0/mlflow/gateway-proxy",
    // Chat calls through the AI gateway: what an endpoint is for (the provider key stays
    // on the server); admins decide which endpoints exist.
    "/gateway/mlflow/v1/chat/completions",
    "/gateway/{endpoint_name}/mlflow/invocations",
    "/2.0/mlflow/experiments/create",
    "/2.0/mlflow/registered-models/create",
    "/2.0/mlflow/users/current",
    "/ctflow/v1/tokens",
    "/ctflow/v1/tokens/{id}",
];

fn routes() -> Vec<String> {
    let source = include_str!("../src/lib.rs");
    let mut paths = Vec::new();
    for piece in source.split(".route(").skip(1) {
        let literal = piece
            .trim_start()
            .strip_prefix('"')
            .and_then(|rest| rest.split_once('"'))
            .map(|(path, _)| path.to_string());
        if let Some(path) = literal {
            paths.push(path);
        }
    }
    paths
}

#[test]
fn every_route_has_an_access_rule() {
    let paths = routes();
    assert!(
        paths.len() > 80,
        "the router was read: {} routes",
        paths.len()
    );
    let mut unmapped = Vec::new();
    for path in &paths {
        let mounted: Vec<String> = if path.starts_with("/2.0/")
            || path.starts_with("/3.0/")
            || path.starts_with("/ctflow/")
        {
            vec![format!("/api{path}"), format!("/ajax-api{path}")]
        } else {
            vec![path.clone()]
        };
        for route in mounted {
            for method in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
                if route_access(method, &route).is_none() {
                    unmapped.push(format!("{method} {route}"));
                }
            }
        }
    }
    assert!(
        unmapped.is_empty(),
        "routes without an access rule: {unmapped:#?}"
    );
}

#[test]
fn only_own_or_new_routes_skip_a_per_item_rule() {
    let mut unfiltered = Vec::new();
    for path in routes() {
        for method in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            let route = format!("/api{path}");
            if route_access(method, &route) == Some(Access::SignedIn)
                && !OWN_OR_NEW.contains(&path.as_str())
            {
                unfiltered.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        unfiltered.is_empty(),
        "routes any signed-in user reaches without a filter: {unfiltered:#?}"
    );
    for listing in [
        "/2.0/mlflow/experiments/search",
        "/2.0/mlflow/registered-models/search",
        "/2.0/mlflow/model-versions/search",
        "/ctflow/v1/pipelines",
        "/ctflow/v1/pipeline-runs",
        "/ctflow/v1/events",
        "/ctflow/v1/experiments/run-counts",
    ] {
        assert!(
            matches!(
                route_access("GET", &format!("/api{listing}")),
                Some(Access::Listing(_))
            ),
            "{listing}"
        );
    }
}
