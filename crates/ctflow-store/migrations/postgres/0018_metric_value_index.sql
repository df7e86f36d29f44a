-- Metric ranges read (key, is_nan, value): a comparison other than `!=` matches only
-- real values (is_nan = 0), so with the flag in the index a range, and an ordered walk
-- of one for a search's first page, reads index entries alone (the run id rides along
-- as the table's key) instead of visiting each row for its NaN flag.
DROP INDEX latest_metrics_by_key;
CREATE INDEX latest_metrics_by_key ON latest_metrics (key, is_nan, value);
