//! A series' points as stored since migration 19: the points one write adds to a series
//! are one row, its `points` blob holding each point in 25 big-endian bytes (step,
//! timestamp, value key, NaN flag). Inserting ten rows for a thousand-point batch instead
//! of a thousand was most of what logging a point cost the server (docs/benchmarks.md).
//!
//! Blocks may overlap and may repeat a point (a retried batch): a read decodes the blocks
//! that meet its step range, then sorts into key order and drops exact duplicates, which
//! is what the per-point primary key did on insert before.

/// A stored point: timestamp, step, value key, NaN flag.
pub(crate) type Point = (i64, i64, i64, i64);

const POINT_BYTES: usize = 25;

/// A point's place in key order: step, timestamp, value key, NaN flag.
pub(crate) fn key_order(point: &Point) -> (i64, i64, i64, i64) {
    let &(timestamp, step, value_key, is_nan) = point;
    (step, timestamp, value_key, is_nan)
}

/// `points` packed as one block's blob.
pub(crate) fn encode<'p>(points: impl ExactSizeIterator<Item = &'p Point>) -> Vec<u8> {
    let mut blob = Vec::with_capacity(points.len() * POINT_BYTES);
    for &(timestamp, step, value_key, is_nan) in points {
        blob.extend_from_slice(&step.to_be_bytes());
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&value_key.to_be_bytes());
        blob.push(u8::from(is_nan != 0));
    }
    blob
}

/// Appends the points of `blob` whose steps lie in `[first, last]` to `out`; `None` when
/// the blob is not a whole number of points.
pub(crate) fn decode_into(blob: &[u8], first: i64, last: i64, out: &mut Vec<Point>) -> Option<()> {
    if !blob.len().is_multiple_of(POINT_BYTES) {
        return None;
    }
    let word = |bytes: &[u8], at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    out.reserve(blob.len() / POINT_BYTES);
    for point in blob.chunks_exact(POINT_BYTES) {
        let step = word(point, 0)?;
        if step < first || step > last {
            continue;
        }
        let timestamp = word(point, 8)?;
        let value_key = word(point, 16)?;
        let is_nan = i64::from(*point.get(24)? != 0);
        out.push((timestamp, step, value_key, is_nan));
    }
    Some(())
}

/// Puts decoded points in key order without repeats. Blocks written in step order decode
/// already sorted, which the sort notices in one pass.
pub(crate) fn into_key_order(points: &mut Vec<Point>) {
    points.sort_unstable_by_key(key_order);
    points.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn blocks_give_back_their_points(
            points in proptest::collection::vec(
                (any::<i64>(), any::<i64>(), any::<i64>(), 0i64..2), 0..50),
        ) {
            let blob = encode(points.iter());
            let mut out = Vec::new();
            prop_assert_eq!(decode_into(&blob, i64::MIN, i64::MAX, &mut out), Some(()));
            prop_assert_eq!(out, points);
        }

        #[test]
        fn a_step_range_keeps_only_its_points(
            points in proptest::collection::vec(
                (any::<i64>(), -20i64..20, any::<i64>(), 0i64..2), 0..50),
            first in -25i64..25,
            width in 0i64..30,
        ) {
            let last = first + width;
            let mut out = Vec::new();
            decode_into(&encode(points.iter()), first, last, &mut out);
            let wanted: Vec<Point> = points
                .iter()
                .copied()
                .filter(|p| p.1 >= first && p.1 <= last)
                .collect();
            prop_assert_eq!(out, wanted);
        }
    }

    #[test]
    fn a_torn_blob_is_refused() {
        let blob = encode([(1, 2, 3, 0)].iter());
        let mut out = Vec::new();
        assert_eq!(decode_into(&blob[..24], 0, 10, &mut out), None);
        assert_eq!(decode_into(&[], 0, 10, &mut out), Some(()));
        assert!(out.is_empty());
    }

    #[test]
    fn key_order_drops_exact_repeats_only() {
        let mut points = vec![
            (5, 2, 7, 0),
            (4, 1, 9, 0),
            (5, 2, 7, 0),
            (5, 2, 7, 1),
            (3, 2, 7, 0),
        ];
        into_key_order(&mut points);
        assert_eq!(
            points,
            [(4, 1, 9, 0), (3, 2, 7, 0), (5, 2, 7, 0), (5, 2, 7, 1)]
        );
    }
}
