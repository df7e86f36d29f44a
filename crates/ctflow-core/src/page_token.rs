//! Page tokens as MLflow's SQL store writes them: base64 of `{"offset": N}`. They are opaque
//! to clients, but keeping MLflow's format lets a token from one server work on the other.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{MlflowError, Result};

/// The token of the page that starts at `offset`.
pub fn encode(offset: i64) -> String {
    STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

/// Decodes a token; an absent or empty token means offset 0.
pub fn decode(token: Option<&str>) -> Result<i64> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let bytes = STANDARD
        .decode(token.trim())
        .map_err(|_| MlflowError::invalid("Invalid page token, could not base64-decode"))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| MlflowError::invalid("Invalid page token, decoded value not JSON"))?;
    match value.get("offset").and_then(|v| v.as_i64()) {
        Some(offset) if offset >= 0 => Ok(offset),
        _ => Err(MlflowError::invalid(
            "Invalid page token, missing or negative offset",
        )),
    }
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

    proptest! {
        #[test]
        fn round_trips(offset in 0i64..i64::MAX) {
            prop_assert_eq!(decode(Some(&encode(offset))).unwrap(), offset);
        }
    }
}
