//! Which `source` a new model version may have: MLflow 3.17's accept/refuse boundary
//! (`mlflow.server.handlers._validate_source_run` and friends), as pure rules. What needs
//! the database (a run's or logged model's artifact location, a registered version) comes
//! back as a [`SourceCheck`] for the store to finish.
//!
//! Where ctflow stays stricter than MLflow (see docs/compatibility.md): local paths are
//! compared after lexical normalisation, without following symlinks on the server, and a
//! relative local path is never inside anything; host-addressed schemes (`http`, `ftp`,
//! `hdfs`, ...) are refused whatever host they name, since ctflow has no list of trusted
//! hosts; and a `file://` URI naming another host is a 400, not MLflow's 500.

use percent_encoding::percent_decode_str;

use crate::registry::{ModelUri, parse_model_uri};
use crate::{MlflowError, Result};

/// The sources MLflow's clients send for prompt versions, which have no files.
pub const PROMPT_SOURCE_PLACEHOLDERS: [&str; 2] = ["dummy-source", "prompt-template"];

/// Schemes whose artifact repositories connect to the host the URI names.
const HOST_ADDRESSED_SCHEMES: [&str; 10] = [
    "ftp",
    "sftp",
    "hdfs",
    "viewfs",
    "http",
    "https",
    "mlflow-artifacts",
    "r2",
    "b2",
    "abfss",
];

/// What is left to check once the rules that need no lookup have passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCheck {
    /// Nothing more: the source is accepted as it is.
    Accepted,
    /// A local path (already normalised) that must lie inside the local artifact directory
    /// of the run named by the request.
    LocalInRun {
        /// The run named by `run_id`.
        run_id: String,
        /// The absolute, normalised path.
        path: String,
    },
    /// A local path that must lie inside the logged model's local artifact directory.
    LocalInModel {
        /// The logged model named by `model_id`.
        model_id: String,
        /// The absolute, normalised path.
        path: String,
    },
    /// An `mlflow-artifacts` location that must lie under the run's artifact URI.
    ArtifactsInRun {
        /// The run named by `run_id`.
        run_id: String,
    },
    /// An `mlflow-artifacts` location that must lie under the logged model's artifact URI.
    ArtifactsInModel {
        /// The logged model named by `model_id`.
        model_id: String,
    },
    /// `models:/<name>/<version|stage|latest>` or `models:/<name>@<alias>`: a copy of a
    /// registered version, whose run and logged model the new version inherits.
    RegisteredVersion(ModelUri),
}

impl SourceCheck {
    /// For a check that waits on a run's or logged model's artifact location: the source
    /// must lie inside `root_uri`, or MLflow's error. Every other check passes.
    pub fn require_within(&self, source: &str, root_uri: &str) -> Result<()> {
        match self {
            SourceCheck::LocalInRun { path, .. } if !local_path_within(path, root_uri) => {
                Err(local_not_contained(source, "run_id"))
            }
            SourceCheck::LocalInModel { path, .. } if !local_path_within(path, root_uri) => {
                Err(local_not_contained(source, "model_id"))
            }
            SourceCheck::ArtifactsInRun { .. } if !uri_within(source, root_uri) => {
                Err(not_identified(source, "run_id"))
            }
            SourceCheck::ArtifactsInModel { .. } if !uri_within(source, root_uri) => {
                Err(not_identified(source, "model_id"))
            }
            _ => Ok(()),
        }
    }
}

/// The request fields that decide which rules apply.
#[derive(Debug, Clone, Copy)]
pub struct SourceRequest<'a> {
    /// The `source` field.
    pub source: &'a str,
    /// `run_id`, when sent and not empty.
    pub run_id: Option<&'a str>,
    /// `model_id`, when sent and not empty.
    pub model_id: Option<&'a str>,
    /// The version is a prompt's (its tags say so).
    pub prompt: bool,
}

/// MLflow's error for a source the named run or model does not contain.
pub fn not_identified(source: &str, id_field: &str) -> MlflowError {
    MlflowError::invalid(format!(
        "Invalid model version source: '{source}'. The {id_field} request parameter must identify the resource that contains the source."
    ))
}

/// MLflow's error for a local path outside the named run's or model's artifacts.
fn local_not_contained(source: &str, id_field: &str) -> MlflowError {
    let owner = if id_field == "model_id" {
        "the artifact directory of the run specified by the model_id"
    } else {
        "the artifact directory of the run specified by the run_id"
    };
    MlflowError::invalid(format!(
        "Invalid model version source: '{source}'. To use a local path as a model version source, the {id_field} request parameter has to be specified and the local path has to be contained within {owner}."
    ))
}

fn relative_reference(source: &str) -> MlflowError {
    MlflowError::invalid(format!(
        "Invalid model version source: '{source}'. If supplying a source as an http, https, local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided without relative path references present. Please provide an absolute path."
    ))
}

/// The parts of a URI this module looks at, split as Python's `urllib.parse.urlsplit` does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UriParts<'a> {
    scheme: String,
    netloc: &'a str,
    path: &'a str,
}

fn split_uri(uri: &str) -> UriParts<'_> {
    let (scheme, rest) = match uri.split_once(':') {
        Some((scheme, rest))
            if scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ => (String::new(), uri),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            UriParts {
                scheme,
                netloc: &after[..end],
                path: &after[end..],
            }
        }
        None => UriParts {
            scheme,
            netloc: "",
            path: rest,
        },
    }
}

fn host_of(netloc: &str) -> &str {
    let host = netloc.rsplit('@').next().unwrap_or_default();
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    host.split(':').next().unwrap_or_default()
}

fn decode_fully(value: &str, plus_is_space: bool) -> String {
    let mut current = value.to_string();
    loop {
        let spaced = if plus_is_space {
            current.replace('+', " ")
        } else {
            current.clone()
        };
        let decoded = percent_decode_str(&spaced).decode_utf8_lossy().into_owned();
        if decoded == current {
            return current;
        }
        current = decoded;
    }
}

/// True when `source` is a local path (`/x`, `x`, `file:/x`); MLflow's error when it is a
/// `file://` URI naming another host.
fn is_local(source: &str) -> Result<bool> {
    let parts = split_uri(source);
    if parts.scheme.is_empty() {
        return Ok(true);
    }
    let host = host_of(parts.netloc).to_ascii_lowercase();
    let remote = !host.is_empty()
        && host != "."
        && !host.starts_with("localhost")
        && !host.starts_with("127.0.0.1");
    if parts.scheme == "file" {
        if remote {
            return Err(MlflowError::invalid(format!(
                "{source} is not a valid remote uri. For remote access on windows, please consider using a different scheme such as SMB (e.g. smb://<hostname>/<path>)."
            )));
        }
        return Ok(true);
    }
    Ok(false)
}

/// A local source as an absolute, lexically normalised path; `None` for a relative one.
fn local_path(source: &str) -> Option<String> {
    let parts = split_uri(source);
    let raw = if parts.scheme == "file" {
        decode_fully(parts.path, false)
    } else {
        source.to_string()
    };
    normalise_absolute(&raw)
}

fn normalise_absolute(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut kept: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    Some(format!("/{}", kept.join("/")))
}

/// True when the local `path` (normalised) is `root_uri`'s directory or inside it;
/// false when the root is not local.
fn local_path_within(path: &str, root_uri: &str) -> bool {
    if !matches!(is_local(root_uri), Ok(true)) {
        return false;
    }
    let Some(root) = local_path(root_uri) else {
        return false;
    };
    path == root
        || root == "/"
        || path
            .strip_prefix(root.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
}

fn uri_path_parts(uri: &str) -> (String, String, Vec<String>) {
    let parts = split_uri(uri);
    let segments = parts
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode_fully(s, false))
        .collect();
    (parts.scheme, parts.netloc.to_ascii_lowercase(), segments)
}

/// True when `source` lies under `root`: same scheme and authority, and `root`'s path
/// segments (decoded) begin `source`'s.
fn uri_within(source: &str, root: &str) -> bool {
    let (source_scheme, source_authority, source_parts) = uri_path_parts(source);
    let (root_scheme, root_authority, root_parts) = uri_path_parts(root);
    source_scheme == root_scheme
        && source_authority == root_authority
        && !root_parts.is_empty()
        && source_parts.starts_with(&root_parts)
}

fn is_mlflow_artifacts(source: &str) -> bool {
    let (scheme, _, parts) = uri_path_parts(source);
    if scheme == "mlflow-artifacts" {
        return true;
    }
    const ROUTE: [&str; 4] = ["api", "2.0", "mlflow-artifacts", "artifacts"];
    (scheme == "http" || scheme == "https")
        && parts
            .windows(ROUTE.len())
            .any(|window| window.iter().map(String::as_str).eq(ROUTE))
}

fn check_host_addressed(source: &str) -> Result<()> {
    let parts = split_uri(source);
    if !HOST_ADDRESSED_SCHEMES.contains(&parts.scheme.as_str()) {
        return Ok(());
    }
    // `mlflow-artifacts:/path` resolves against this server; only a named host is refused.
    if parts.scheme == "mlflow-artifacts" && parts.netloc.is_empty() {
        return Ok(());
    }
    Err(MlflowError::invalid(format!(
        "'source' cannot use the '{}' scheme: the '{}' scheme addresses a host other than the tracking server's configured artifact storage, so the server would connect to the host named in the URI.",
        parts.scheme, parts.scheme
    )))
}

/// Refuses a non-local source whose path is relative or climbs (`..`, `.`, NUL, also
/// percent-encoded), as MLflow's `_validate_non_local_source_contains_relative_paths`.
fn check_no_relative_references(source: &str) -> Result<()> {
    let decoded = decode_fully(source, true);
    let path = split_uri(&decoded).path.to_string();
    if decoded.contains('\0') || decoded.split('/').any(|part| part == "..") {
        return Err(relative_reference(source));
    }
    let trimmed = path.trim_end_matches('/');
    let mut collapsed = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if normalise_absolute(&collapsed).as_deref() != Some(collapsed.as_str()) {
        return Err(relative_reference(source));
    }
    Ok(())
}

/// Applies every rule that needs no lookup and says what the store must still check.
pub fn check_source(request: SourceRequest<'_>) -> Result<SourceCheck> {
    let source = request.source;
    if source.is_empty() {
        return Err(MlflowError::missing_param("source"));
    }
    if request.prompt {
        if !PROMPT_SOURCE_PLACEHOLDERS.contains(&source) {
            return Err(MlflowError::invalid(format!(
                "Invalid prompt source: '{source}'. Prompt sources must use an MLflow placeholder."
            )));
        }
        return Ok(SourceCheck::Accepted);
    }
    check_host_addressed(source)?;
    let parts = split_uri(source);
    // NB: MLflow drops a URI's query or fragment when it compares locations; a source that
    // carries one is refused rather than stored with a part nothing reads.
    if !parts.scheme.is_empty() && source.contains(['?', '#']) {
        return Err(MlflowError::invalid(format!(
            "Invalid model version source: '{source}'. A source URI cannot carry a query or a fragment."
        )));
    }
    if parts.scheme == "models" {
        if !parts.netloc.is_empty() {
            return Err(MlflowError::invalid(format!(
                "Invalid model version source: '{source}'. Registered model sources must use the active model registry."
            )));
        }
        let uri = parse_model_uri(source).map_err(|_| not_identified(source, "model_id"))?;
        if !matches!(uri, ModelUri::LoggedModel(_)) {
            check_no_relative_references(source)?;
            return Ok(SourceCheck::RegisteredVersion(uri));
        }
    }
    match request.model_id {
        Some(model_id) => check_model_source(source, model_id),
        None => check_run_source(source, request.run_id),
    }
}

fn check_run_source(source: &str, run_id: Option<&str>) -> Result<SourceCheck> {
    if is_local(source)? {
        return match (run_id, local_path(source)) {
            (Some(run_id), Some(path)) => Ok(SourceCheck::LocalInRun {
                run_id: run_id.to_string(),
                path,
            }),
            _ => Err(local_not_contained(source, "run_id")),
        };
    }
    check_no_relative_references(source)?;
    let parts = split_uri(source);
    match parts.scheme.as_str() {
        "runs" => {
            let named_run = parts.path.trim_start_matches('/').split('/').next();
            if parts.netloc.is_empty()
                && let (Some(run_id), Some(named)) = (run_id, named_run)
                && run_id == named
            {
                return Ok(SourceCheck::Accepted);
            }
            Err(not_identified(source, "run_id"))
        }
        "models" => Err(not_identified(source, "model_id")),
        _ if is_mlflow_artifacts(source) => match run_id {
            Some(run_id) => Ok(SourceCheck::ArtifactsInRun {
                run_id: run_id.to_string(),
            }),
            None => Err(not_identified(source, "run_id")),
        },
        _ => Ok(SourceCheck::Accepted),
    }
}

fn check_model_source(source: &str, model_id: &str) -> Result<SourceCheck> {
    if is_local(source)? {
        return match local_path(source) {
            Some(path) => Ok(SourceCheck::LocalInModel {
                model_id: model_id.to_string(),
                path,
            }),
            None => Err(local_not_contained(source, "model_id")),
        };
    }
    check_no_relative_references(source)?;
    let parts = split_uri(source);
    match parts.scheme.as_str() {
        "models" => match parse_model_uri(source) {
            Ok(ModelUri::LoggedModel(named)) if parts.netloc.is_empty() && named == model_id => {
                Ok(SourceCheck::Accepted)
            }
            _ => Err(not_identified(source, "model_id")),
        },
        "runs" => Err(not_identified(source, "model_id")),
        _ if is_mlflow_artifacts(source) => Ok(SourceCheck::ArtifactsInModel {
            model_id: model_id.to_string(),
        }),
        _ => Ok(SourceCheck::Accepted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str, run_id: Option<&str>, model_id: Option<&str>) -> Result<SourceCheck> {
        check_source(SourceRequest {
            source,
            run_id,
            model_id,
            prompt: false,
        })
    }

    fn refused(result: Result<SourceCheck>) -> String {
        match result {
            Err(e) => e.message,
            Ok(other) => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn runs_sources_must_name_the_request_run_but_need_not_exist() {
        assert_eq!(
            check("runs:/abc/model", Some("abc"), None).ok(),
            Some(SourceCheck::Accepted)
        );
        assert!(refused(check("runs:/abc/model", Some("abd"), None)).contains("run_id"));
        assert!(refused(check("runs:/abc/model", None, None)).contains("run_id"));
        assert!(refused(check("runs://host/abc/model", Some("abc"), None)).contains("run_id"));
        assert!(refused(check("runs:/abc/model", None, Some("m-1"))).contains("model_id"));
    }

    #[test]
    fn local_paths_are_normalised_and_left_to_the_run() {
        assert_eq!(
            check("file:///a/b/model/..", Some("r"), None).ok(),
            Some(SourceCheck::LocalInRun {
                run_id: "r".into(),
                path: "/a/b".into()
            })
        );
        assert_eq!(
            check("/a/b/./c", Some("r"), None).ok(),
            Some(SourceCheck::LocalInRun {
                run_id: "r".into(),
                path: "/a/b/c".into()
            })
        );
        assert!(
            refused(check("/a/b", None, None)).contains("To use a local path as a model version")
        );
        assert!(refused(check("relative/dir", Some("r"), None)).contains("To use a local path"));
        assert!(
            refused(check("file://123.456.789.123/path", Some("r"), None))
                .contains("is not a valid remote uri")
        );
        assert!(matches!(
            check("file://localhost/a", Some("r"), None),
            Ok(SourceCheck::LocalInRun { .. })
        ));
    }

    #[test]
    fn containment_is_by_whole_segments() {
        assert!(local_path_within("/art/1/abc", "file:///art/1/abc"));
        assert!(local_path_within("/art/1/abc/model", "file:///art/1/abc"));
        assert!(!local_path_within("/art/1/abcd", "file:///art/1/abc"));
        assert!(!local_path_within("/art/1", "file:///art/1/abc"));
        assert!(!local_path_within(
            "/art/1/abc",
            "mlflow-artifacts:/art/1/abc"
        ));
        assert!(local_path_within("/art/1/abc", "/art/1/abc/"));
        assert!(uri_within(
            "mlflow-artifacts:/1/abc/artifacts/model",
            "mlflow-artifacts:/1/abc/artifacts"
        ));
        assert!(uri_within(
            "mlflow-artifacts:/1/abc/artifacts%2Fmodel",
            "mlflow-artifacts:/1/abc"
        ));
        assert!(!uri_within(
            "mlflow-artifacts:/1/abcd",
            "mlflow-artifacts:/1/abc"
        ));
        assert!(uri_within(
            "mlflow-artifacts:/1/r/artifacts",
            "mlflow-artifacts:/1/r/artifacts/"
        ));
        assert!(!uri_within("mlflow-artifacts:/1/abc", "file:///1/abc"));
    }

    #[test]
    fn climbing_or_relative_remote_paths_are_refused() {
        for source in [
            "s3://bucket/models/../../other",
            "s3://bucket/models/%2e%2e/x",
            "s3://bucket/models/%252e%252e/x",
            "s3://bucket/./x",
            "s3://bucket",
            "mlflow-artifacts:/models/..%2f..%2fx",
            "mlflow-artifacts:/models%00",
        ] {
            assert!(
                refused(check(source, Some("r"), None)).contains("absolute path"),
                "{source}"
            );
        }
        assert_eq!(
            check("s3://bucket/models/", None, None).ok(),
            Some(SourceCheck::Accepted)
        );
        assert_eq!(
            check("gs://bucket//a//b", None, None).ok(),
            Some(SourceCheck::Accepted)
        );
    }

    #[test]
    fn mlflow_artifacts_sources_belong_to_the_run() {
        assert_eq!(
            check("mlflow-artifacts:/1/r/artifacts/model", Some("r"), None).ok(),
            Some(SourceCheck::ArtifactsInRun { run_id: "r".into() })
        );
        assert!(
            refused(check("mlflow-artifacts:/1/r/artifacts/model", None, None)).contains("run_id")
        );
        assert!(
            refused(check(
                "http://example.com/api/2.0/mlflow-artifacts/artifacts/x",
                Some("r"),
                None
            ))
            .contains("'http' scheme")
        );
        assert!(refused(check("mlflow-artifacts://evil/x", Some("r"), None)).contains("scheme"));
        assert_eq!(
            check("mlflow-artifacts:/m/artifacts", None, Some("m-1")).ok(),
            Some(SourceCheck::ArtifactsInModel {
                model_id: "m-1".into()
            })
        );
    }

    #[test]
    fn models_sources() {
        assert_eq!(
            check("models:/m-1", None, Some("m-1")).ok(),
            Some(SourceCheck::Accepted)
        );
        assert!(refused(check("models:/m-1", None, Some("m-2"))).contains("model_id"));
        assert!(refused(check("models:/m-1", Some("r"), None)).contains("model_id"));
        assert_eq!(
            check("models:/name/3", Some("r"), None).ok(),
            Some(SourceCheck::RegisteredVersion(ModelUri::Version {
                name: "name".into(),
                version: 3
            }))
        );
        assert!(matches!(
            check("models:/name@champion", None, None),
            Ok(SourceCheck::RegisteredVersion(ModelUri::Alias { .. }))
        ));
        assert!(refused(check("models://other/name/1", None, None)).contains("active model"));
    }

    #[test]
    fn waiting_checks_require_the_owners_location() {
        let local = check("/art/1/r/model", Some("r"), None).unwrap();
        assert!(
            local
                .require_within("/art/1/r/model", "file:///art/1/r")
                .is_ok()
        );
        assert!(
            local
                .require_within("/art/1/r/model", "file:///art/1/other")
                .unwrap_err()
                .message
                .contains("To use a local path")
        );
        let proxied = check("mlflow-artifacts:/1/r/artifacts/m", None, Some("m-1")).unwrap();
        assert!(
            proxied
                .require_within("mlflow-artifacts:/1/r/artifacts/m", "mlflow-artifacts:/1/x")
                .unwrap_err()
                .message
                .contains("model_id request parameter")
        );
        assert!(
            SourceCheck::Accepted
                .require_within("s3://b/x", "file:///elsewhere")
                .is_ok()
        );
    }

    #[test]
    fn queries_and_fragments_are_refused_in_uris() {
        for source in [
            "mlflow-artifacts:/1/r/artifacts/model#frag",
            "file:///a/b?x=1",
            "s3://bucket/x?versionId=1",
        ] {
            assert!(
                refused(check(source, Some("r"), None)).contains("query or a fragment"),
                "{source}"
            );
        }
        assert!(matches!(
            check("/a/b/model#1", Some("r"), None),
            Ok(SourceCheck::LocalInRun { .. })
        ));
    }

    #[test]
    fn prompts_use_placeholders() {
        let prompt = |source| {
            check_source(SourceRequest {
                source,
                run_id: None,
                model_id: None,
                prompt: true,
            })
        };
        assert_eq!(prompt("dummy-source").ok(), Some(SourceCheck::Accepted));
        assert_eq!(prompt("prompt-template").ok(), Some(SourceCheck::Accepted));
        assert!(refused(prompt("s3://bucket/x")).contains("Invalid prompt source"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A local source accepted for a run, once normalised, never names a place
            /// outside the run's directory.
            #[test]
            fn normalised_local_paths_never_climb(parts in prop::collection::vec(
                prop::sample::select(vec!["a", "b", "..", ".", "", "%2e%2e"]), 0..8)) {
                let source = format!("/root/run/{}", parts.join("/"));
                if let Ok(SourceCheck::LocalInRun { path, .. }) = check(&source, Some("r"), None) {
                    prop_assert!(!path.split('/').any(|p| p == ".." || p == "."));
                    if local_path_within(&path, "file:///root/run") {
                        prop_assert!(path == "/root/run" || path.starts_with("/root/run/"));
                    }
                }
            }

            /// No accepted remote source has a `..` segment, however often it is encoded.
            #[test]
            fn accepted_remote_sources_do_not_climb(parts in prop::collection::vec(
                prop::sample::select(vec!["x", "..", "%2e%2e", "%252e%252e", "%2f", "."]), 1..6)) {
                let source = format!("s3://bucket/{}", parts.join("/"));
                if check(&source, None, None).is_ok() {
                    let decoded = decode_fully(&source, true);
                    prop_assert!(!decoded.split('/').any(|p| p == ".." || p == "."));
                }
            }
        }
    }
}
