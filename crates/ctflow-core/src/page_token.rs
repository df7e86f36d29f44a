//! Page tokens as MLflow's SQL store writes them: base64 of `{"offset": N}`. They are opaque
//! to clients, but keeping MLflow's format lets a token from one server work on the other.
//! A listing read in key order may add `"after": [..]`, the key of the page's last row, so
//! the next page seeks to it instead of counting off `offset` rows again; MLflow reads only
//! the offset, which stays right.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{MlflowError, Result};

/// The token of the page that starts at `offset`.
pub fn encode(offset: i64) -> String {
    STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

/// The token of the page that starts at `offset`, right after the row keyed `after`.
pub fn encode_after(offset: i64, after: &[i64]) -> String {
    let after: Vec<String> = after.iter().map(i64::to_string).collect();
    STANDARD.encode(format!(
        "{{\"offset\": {offset}, \"after\": [{}]}}",
        after.join(", ")
    ))
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageStart {
    /// How many rows come before it.
    pub offset: i64,
    /// The key of the row right before it, when the token carries one.
    pub after: Option<Vec<i64>>,
}

/// Decodes a token; an absent or empty token means offset 0.
pub fn decode(token: Option<&str>) -> Result<i64> {
    Ok(decode_start(token)?.offset)
}

/// Decodes a token with the key it may carry; an absent or empty token is the first page.
pub fn decode_start(token: Option<&str>) -> Result<PageStart> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(PageStart::default());
    };
    let bytes = STANDARD
        .decode(token.trim())
        .map_err(|_| MlflowError::invalid("Invalid page token, could not base64-decode"))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| MlflowError::invalid("Invalid page token, decoded value not JSON"))?;
    let offset = match value.get("offset").and_then(|v| v.as_i64()) {
        Some(offset) if offset >= 0 => offset,
        _ => {
            return Err(MlflowError::invalid(
                "Invalid page token, missing or negative offset",
            ));
        }
    };
    let after = match value.get("after") {
        None => None,
        Some(key) => Some(
            key.as_array()
                .and_then(|parts| parts.iter().map(|p| p.as_i64()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    MlflowError::invalid("Invalid page token, \"after\" is not a list of integers")
                })?,
        ),
    };
    Ok(PageStart { offset, after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_mlflow_token_format() {
        assert_eq!(encode(2), "eyJvZmZzZXQiOiAyfQ==");
        assert_eq!(decode(Some("eyJvZmZzZXQiOiAyfQ==")).unwrap(), 2);
        assert_eq!(decode(None).unwrap(), 0);
        assert_eq!(decode(Some("")).unwrap(), 0);
    }

    #[test]
    fn rejects_garbage() {
        let err = decode(Some("!!!")).unwrap_err();
        assert_eq!(err.message, "Invalid page token, could not base64-decode");
        assert!(decode(Some(&STANDARD.encode("[1]"))).is_err());
        assert!(decode(Some(&STANDARD.encode("{\"offset\": -3}"))).is_err());
    }

    #[test]
    fn a_key_rides_along_with_the_offset() {
        let token = encode_after(25_000, &[7, -3, i64::MIN, 1]);
        assert_eq!(
            decode_start(Some(&token)).unwrap(),
            PageStart {
                offset: 25_000,
                after: Some(vec![7, -3, i64::MIN, 1])
            }
        );
        // A server that reads only the offset (MLflow's) still finds the page.
        assert_eq!(decode(Some(&token)).unwrap(), 25_000);
        assert_eq!(decode_start(Some(&encode(4))).unwrap().after, None);
        let bad = STANDARD.encode("{\"offset\": 1, \"after\": [\"x\"]}");
        assert_eq!(
            decode_start(Some(&bad)).unwrap_err().message,
            "Invalid page token, \"after\" is not a list of integers"
        );
        assert!(decode_start(Some(&STANDARD.encode("{\"offset\": 1, \"after\": 3}"))).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(offset in 0i64..i64::MAX) {
            prop_assert_eq!(decode(Some(&encode(offset))).unwrap(), offset);
        }

        #[test]
        fn keys_round_trip(offset in 0i64..i64::MAX, after in proptest::collection::vec(any::<i64>(), 0..6)) {
            let start = decode_start(Some(&encode_after(offset, &after))).unwrap();
            prop_assert_eq!(start, PageStart { offset, after: Some(after) });
        }
    }
}
