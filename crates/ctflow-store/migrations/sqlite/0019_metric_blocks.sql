-- Metric points in blocks (issue 25). A log-batch's points of one series become one row:
-- a thousand-point batch of ten keys costs SQLite ten inserts instead of a thousand, which
-- was most of what a point cost the server (docs/benchmarks.md). Points are read by
-- series and step range and decoded by the store, which sorts and drops exact duplicates
-- (what the per-point key used to refuse), so a retried batch reads as it did before.
--
-- points: per point, big-endian, 25 bytes: step (8), timestamp (8), value_key (8, the
-- order-preserving value bits of migration 16), is_nan (1). first_step and last_step
-- bound the block's steps, so a step range reads only the blocks it meets; the index's
-- entries end with the rowid (block_id), so a page of a long history walks the blocks in
-- (first_step, last_step, block_id) order from where the last page stopped.
CREATE TABLE metric_blocks (
    block_id INTEGER PRIMARY KEY,
    series_id BIGINT NOT NULL,
    first_step BIGINT NOT NULL,
    last_step BIGINT NOT NULL,
    points BLOB NOT NULL
);
CREATE INDEX metric_blocks_by_steps ON metric_blocks (series_id, first_step, last_step);
-- The points so far, in blocks of up to 1024 steps of one series.
INSERT INTO metric_blocks (series_id, first_step, last_step, points)
    SELECT series_id, min(step), max(step),
           unhex(group_concat(printf('%016x%016x%016x%02x', step, timestamp, value_key, is_nan), ''
                              ORDER BY step, timestamp, value_key, is_nan))
    FROM metric_points
    GROUP BY series_id, step >> 10;
DROP TABLE metric_points;
