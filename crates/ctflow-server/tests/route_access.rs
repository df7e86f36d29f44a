//! Every route the server answers has an access rule: the test reads the router's
//! `.route("...")` calls from the source and fails on a path `route_access` does not map,
//! under both API prefixes and for reads and writes alike.

use ctflow_core::auth::route_access;

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
