//! Artifact path safety: every path that arrives in a request is checked here before it
//! touches a file system. The rules close the MLflow path-traversal CVE family
//! (CVE-2023-1177, CVE-2023-6909, CVE-2024-1483, CVE-2024-3848, ...): no `..` component, no
//! absolute path, no drive letters or backslashes, no NUL, and no percent-encoded form of
//! any of those (a path is checked after every layer of decoding the server applies).

use crate::{MlflowError, Result};

/// The longest file or folder name an artifact path may hold.
pub const MAX_NAME_BYTES: usize = 255;

fn invalid_path() -> MlflowError {
    MlflowError::invalid("Invalid path")
}

/// Validates a relative artifact path (already percent-decoded once by the HTTP layer) and
/// returns its normalised components. An empty path means the root.
pub fn safe_relative_path(path: &str) -> Result<Vec<String>> {
    if path.contains('\0') || path.contains('\\') {
        return Err(invalid_path());
    }
    // A second layer of encoding (`%2e%2e`) is refused outright: nothing legitimate
    // double-encodes a traversal, and decoding again could turn it into one.
    let decoded_again = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if decoded_again != path && unsafe_components(&decoded_again) {
        return Err(invalid_path());
    }
    if path.starts_with('/') || unsafe_components(path) {
        return Err(invalid_path());
    }
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    // NB: found by the rest_json fuzz target: a longer name reached the file system and
    // came back as an I/O error (500). 255 bytes is a name's limit on Linux file systems.
    if parts.iter().any(|part| part.len() > MAX_NAME_BYTES) {
        return Err(MlflowError::invalid(format!(
            "Invalid path: a name in it is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if let Some(first) = parts.first()
        && first.len() >= 2
        && first.as_bytes()[1] == b':'
        && first.as_bytes()[0].is_ascii_alphabetic()
    {
        // `C:` drive prefixes would be absolute on Windows hosts.
        return Err(invalid_path());
    }
    Ok(parts)
}

fn unsafe_components(path: &str) -> bool {
    path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|p| p == "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_longer_than_a_file_system_allows_are_refused() {
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(safe_relative_path(&format!("a/{long}/b")).is_err());
        let longest = "n".repeat(MAX_NAME_BYTES);
        assert_eq!(
            safe_relative_path(&format!("a/{longest}")).unwrap(),
            vec!["a".to_string(), longest]
        );
    }

    #[test]
    fn accepts_normal_paths() {
        assert_eq!(safe_relative_path("a/b.txt").unwrap(), vec!["a", "b.txt"]);
        assert_eq!(safe_relative_path("").unwrap(), Vec::<String>::new());
        assert_eq!(safe_relative_path("./a//b").unwrap(), vec!["a", "b"]);
        assert_eq!(
            safe_relative_path("percent%.txt").unwrap(),
            vec!["percent%.txt"]
        );
        assert_eq!(safe_relative_path("a+b c.txt").unwrap(), vec!["a+b c.txt"]);
    }

    #[test]
    fn rejects_traversal_in_every_spelling() {
        for path in [
            "..",
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a\\..\\b",
            "%2e%2e/etc",
            "a/%2E%2E/%2e%2e/x",
            "%2fetc%2fpasswd",
            "C:/Windows",
            "a\0b",
        ] {
            assert!(safe_relative_path(path).is_err(), "{path:?} was accepted");
        }
    }

    proptest! {
        #[test]
        fn accepted_paths_never_climb(path in "[a-z./%2eE]{0,24}") {
            if let Ok(parts) = safe_relative_path(&path) {
                prop_assert!(parts.iter().all(|p| p != ".." && !p.is_empty()));
            }
        }
    }
}
