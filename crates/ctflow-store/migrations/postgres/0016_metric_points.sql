-- Narrow metric points (issue 25): see the SQLite migration of the same number. A series
-- is one run's one metric key, its id on the series' latest_metrics row; a point is five
-- integers keyed in step order. value_key: the stored value's IEEE-754 bits, a negative
-- value's lower 63 bits flipped, so integer order is value order. steps_ascend: distinct
-- steps whose timestamps never fall, so step order is history order.
ALTER TABLE latest_metrics ADD COLUMN series_id BIGINT;
UPDATE latest_metrics SET series_id = numbered.id
    FROM (SELECT run_uuid, key, row_number() OVER (ORDER BY run_uuid, key) AS id FROM latest_metrics) numbered
    WHERE latest_metrics.run_uuid = numbered.run_uuid AND latest_metrics.key = numbered.key;
ALTER TABLE latest_metrics ALTER COLUMN series_id SET NOT NULL;
ALTER TABLE latest_metrics ADD COLUMN steps_ascend BIGINT NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX latest_metrics_by_series ON latest_metrics (series_id);
-- Concurrent writers take new series ids from a sequence (SQLite's single writer takes
-- the maximum plus one under its write lock).
CREATE SEQUENCE metric_series_ids;
SELECT setval('metric_series_ids', (SELECT coalesce(max(series_id), 0) + 1 FROM latest_metrics), false);

CREATE TABLE metric_points (
    series_id BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    value_key BIGINT NOT NULL,
    is_nan BIGINT NOT NULL,
    PRIMARY KEY (series_id, step, timestamp, value_key, is_nan)
);
INSERT INTO metric_points
    SELECT l.series_id, m.timestamp, m.step,
           CASE WHEN m.is_nan <> 0 THEN 0
                WHEN m.value_bits < 0 THEN m.value_bits # 9223372036854775807
                ELSE m.value_bits END,
           m.is_nan
    FROM metrics m JOIN latest_metrics l ON l.run_uuid = m.run_uuid AND l.key = m.key;

CREATE TABLE metric_point_context (
    series_id BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    value_key BIGINT NOT NULL,
    is_nan BIGINT NOT NULL,
    model_id TEXT,
    dataset_name TEXT,
    dataset_digest TEXT,
    PRIMARY KEY (series_id, step, timestamp, value_key, is_nan)
);
INSERT INTO metric_point_context
    SELECT l.series_id, m.timestamp, m.step,
           CASE WHEN m.is_nan <> 0 THEN 0
                WHEN m.value_bits < 0 THEN m.value_bits # 9223372036854775807
                ELSE m.value_bits END,
           m.is_nan, m.model_id, m.dataset_name, m.dataset_digest
    FROM metrics m JOIN latest_metrics l ON l.run_uuid = m.run_uuid AND l.key = m.key
    WHERE m.model_id IS NOT NULL OR m.dataset_name IS NOT NULL OR m.dataset_digest IS NOT NULL;
DROP TABLE metrics;

-- A series whose steps repeat, or whose timestamps fall as its steps rise, keeps its
-- history sorted at read time.
UPDATE latest_metrics SET steps_ascend = 0 WHERE series_id IN (
    SELECT series_id FROM (
        SELECT series_id, step, timestamp,
               lag(step) OVER (PARTITION BY series_id ORDER BY step, timestamp, value_key, is_nan) AS previous_step,
               lag(timestamp) OVER (PARTITION BY series_id ORDER BY step, timestamp, value_key, is_nan) AS previous_timestamp
        FROM metric_points) ordered
    WHERE step = previous_step OR timestamp < previous_timestamp);
