//! Where a project comes from: a local folder, or a git repository (with an optional
//! `#subdirectory` and a version to check out).

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(String),
    Git {
        repo: String,
        subdirectory: Option<String>,
    },
}

/// Reads a project URI the way `mlflow run` does: `https://`, `ssh://`, `git@`, `file://`
/// and `git+...` URIs are git repositories, anything else a local folder.
pub fn parse_source(uri: &str) -> Result<Source> {
    let is_git = [
        "https://", "http://", "ssh://", "git@", "file://", "git+", "git://",
    ]
    .iter()
    .any(|prefix| uri.starts_with(prefix));
    if !is_git {
        return Ok(Source::Local(uri.to_string()));
    }
    let uri = uri.strip_prefix("git+").unwrap_or(uri);
    let (repo, subdirectory) = match uri.split_once('#') {
        Some((repo, sub)) => (repo, Some(sub.trim_matches('/'))),
        None => (uri, None),
    };
    if let Some(sub) = subdirectory
        && (sub.is_empty() || sub.split('/').any(|part| part == ".." || part.is_empty()))
    {
        return Err(Error::Spec(format!(
            "invalid #subdirectory '{sub}' in '{uri}'"
        )));
    }
    if repo.is_empty() {
        return Err(Error::Spec(format!("no repository in '{uri}'")));
    }
    Ok(Source::Git {
        repo: repo.to_string(),
        subdirectory: subdirectory.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_git_sources() {
        assert_eq!(
            parse_source("examples/iris").unwrap(),
            Source::Local("examples/iris".into())
        );
        assert_eq!(
            parse_source("https://example.com/org/repo.git#projects/iris").unwrap(),
            Source::Git {
                repo: "https://example.com/org/repo.git".into(),
                subdirectory: Some("projects/iris".into())
            }
        );
        assert_eq!(
            parse_source("git+file:///srv/repo.git").unwrap(),
            Source::Git {
                repo: "file:///srv/repo.git".into(),
                subdirectory: None
            }
        );
        for bad in ["file:///r.git#../x", "file:///r.git#a//b", "file:///r.git#"] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }
}
