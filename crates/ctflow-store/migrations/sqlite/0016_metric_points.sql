-- Narrow metric points (issue 25). A series is one run's one metric key: its integer id
-- lives on the series' latest_metrics row, and each point is five integers keyed in step
-- order, instead of a row carrying the 32-character run id and the key text. The MLflow
-- API keeps its string ids at the edge.
--
-- value_key is the stored value's IEEE-754 bits made order-preserving as a signed integer
-- (a negative value's lower 63 bits flipped; a NaN is stored as 0.0's key with is_nan = 1),
-- so key order within a step is value order and the value is exact.
--
-- steps_ascend: every step of the series is distinct and timestamps never fall as steps
-- rise. Then step order is MLflow's history order (timestamp, step, value) and history is
-- read from the key without a sort; a series that breaks it is sorted when read.
CREATE TABLE latest_metrics_with_series (
    run_uuid TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    is_nan BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    value_bits BIGINT NOT NULL,
    series_id BIGINT NOT NULL,
    steps_ascend BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;
INSERT INTO latest_metrics_with_series
    SELECT run_uuid, key, value, is_nan, timestamp, step, value_bits,
           row_number() OVER (ORDER BY run_uuid, key), 1
    FROM latest_metrics;
DROP TABLE latest_metrics;
ALTER TABLE latest_metrics_with_series RENAME TO latest_metrics;
CREATE INDEX latest_metrics_by_key ON latest_metrics (key, value);
CREATE UNIQUE INDEX latest_metrics_by_series ON latest_metrics (series_id);

CREATE TABLE metric_points (
    series_id BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    value_key BIGINT NOT NULL,
    is_nan BIGINT NOT NULL,
    PRIMARY KEY (series_id, step, timestamp, value_key, is_nan)
) WITHOUT ROWID;
INSERT INTO metric_points
    SELECT l.series_id, m.timestamp, m.step,
           CASE WHEN m.is_nan <> 0 THEN 0
                WHEN m.value_bits < 0 THEN (~m.value_bits) | (-9223372036854775807 - 1)
                ELSE m.value_bits END,
           m.is_nan
    FROM metrics m JOIN latest_metrics l ON l.run_uuid = m.run_uuid AND l.key = m.key;

-- What MLflow 3 attaches to some points (the logged model, the evaluation dataset): kept
-- beside the hot table, only for the points that carry it.
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
) WITHOUT ROWID;
INSERT INTO metric_point_context
    SELECT l.series_id, m.timestamp, m.step,
           CASE WHEN m.is_nan <> 0 THEN 0
                WHEN m.value_bits < 0 THEN (~m.value_bits) | (-9223372036854775807 - 1)
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
