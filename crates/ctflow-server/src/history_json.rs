//! A metric history page's JSON, written point by point.
//!
//! The answer is what serde writes for `{"metrics": [MetricPoint...], "next_page_token"}`,
//! byte for byte (a test holds it to that), but the key's JSON is made once for the page
//! instead of a `String` allocated and escaped for each of up to 25,000 points.

use std::io;

use ctflow_core::entities::serialize_double;
use ctflow_store::HistoryPoint;
use serde_json::ser::{CompactFormatter, Formatter};

/// The body of a `get-history` answer: `metrics` left out when there are none and
/// `next_page_token` when there is no next page, as protobuf's JSON does.
pub(crate) fn history_page_body(
    key: &str,
    points: &[HistoryPoint],
    next_page_token: Option<&str>,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(64 + (56 + key.len()) * points.len());
    body.push(b'{');
    if !points.is_empty() {
        let mut point_start = br#"{"key":"#.to_vec();
        serde_json::to_writer(&mut point_start, key)?;
        point_start.extend_from_slice(br#","value":"#);
        body.extend_from_slice(br#""metrics":["#);
        for (index, point) in points.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&point_start);
            // The one definition of how a double goes on the wire (NaN and the
            // infinities as protobuf's strings).
            serialize_double(&point.value, &mut serde_json::Serializer::new(&mut body))?;
            body.extend_from_slice(br#","timestamp":"#);
            CompactFormatter.write_i64(&mut body, point.timestamp)?;
            body.extend_from_slice(br#","step":"#);
            CompactFormatter.write_i64(&mut body, point.step)?;
            body.push(b'}');
        }
        body.push(b']');
    }
    if let Some(token) = next_page_token {
        if !points.is_empty() {
            body.push(b',');
        }
        body.extend_from_slice(br#""next_page_token":"#);
        serde_json::to_writer(&mut body, token)?;
    }
    body.push(b'}');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use ctflow_core::entities::MetricPoint;
    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;

    /// The page as serde writes it from whole `MetricPoint`s.
    #[derive(Serialize)]
    struct SerdePage {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        metrics: Vec<MetricPoint>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }

    fn serde_body(key: &str, points: &[HistoryPoint], token: Option<&str>) -> Vec<u8> {
        let metrics: Vec<MetricPoint> = points.iter().map(|p| p.with_key(key)).collect();
        serde_json::to_vec(&SerdePage {
            metrics,
            next_page_token: token.map(str::to_string),
        })
        .unwrap()
    }

    fn point(value: f64, timestamp: i64, step: i64) -> HistoryPoint {
        HistoryPoint {
            value,
            timestamp,
            step,
        }
    }

    #[test]
    fn matches_serde_on_the_edges() {
        let points = [
            point(f64::NAN, 0, 0),
            point(f64::INFINITY, -1, i64::MIN),
            point(f64::NEG_INFINITY, i64::MAX, 3),
            point(-0.0, 1_700_000_000_000, -7),
            point(5e-324, 1, 1),
            point(1e300, 2, 2),
            point(1.0, 3, 3),
            point(0.1 + 0.2, 4, 4),
        ];
        for key in [
            "loss",
            "",
            "quote\" back\\slash",
            "tab\tnew\nline\u{1}",
            "ünï/cødé 😀",
        ] {
            for token in [None, Some("eyJvZmZzZXQiOiAyfQ=="), Some("odd \"token\"")] {
                for len in [0, 1, points.len()] {
                    let got = history_page_body(key, &points[..len], token).unwrap();
                    let want = serde_body(key, &points[..len], token);
                    assert_eq!(
                        String::from_utf8(got).unwrap(),
                        String::from_utf8(want).unwrap(),
                        "key {key:?}, token {token:?}, {len} points"
                    );
                }
            }
        }
        assert_eq!(history_page_body("k", &[], None).unwrap(), b"{}");
    }

    proptest! {
        #[test]
        fn matches_serde(
            key in ".{0,12}",
            raw in prop::collection::vec((any::<f64>(), any::<i64>(), any::<i64>()), 0..20),
            token in prop::option::of(".{0,12}"),
        ) {
            let points: Vec<HistoryPoint> =
                raw.iter().map(|&(value, timestamp, step)| point(value, timestamp, step)).collect();
            prop_assert_eq!(
                history_page_body(&key, &points, token.as_deref()).unwrap(),
                serde_body(&key, &points, token.as_deref())
            );
        }
    }
}
