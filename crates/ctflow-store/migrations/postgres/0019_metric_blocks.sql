-- Metric points in blocks (issue 25): see the SQLite migration of the same number. A
-- log-batch's points of one series are one row; points: per point, big-endian, step (8),
-- timestamp (8), value_key (8), is_nan (1); read by series and step range, sorted and
-- freed of exact duplicates by the store.
CREATE TABLE metric_blocks (
    block_id BIGSERIAL PRIMARY KEY,
    series_id BIGINT NOT NULL,
    first_step BIGINT NOT NULL,
    last_step BIGINT NOT NULL,
    points BYTEA NOT NULL
);
CREATE INDEX metric_blocks_by_steps ON metric_blocks (series_id, first_step, last_step, block_id);
INSERT INTO metric_blocks (series_id, first_step, last_step, points)
    SELECT series_id, min(step), max(step),
           string_agg(int8send(step) || int8send(timestamp) || int8send(value_key)
                          || CASE WHEN is_nan <> 0 THEN '\x01'::bytea ELSE '\x00'::bytea END,
                      ''::bytea ORDER BY step, timestamp, value_key, is_nan)
    FROM metric_points
    GROUP BY series_id, step >> 10;
DROP TABLE metric_points;
