-- Training data snapshots: the files a pipeline run trains on, with their digests, as the
-- manifest its job reads. Content-addressed: the same data is one row, whoever recorded it.
CREATE TABLE data_snapshots (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    manifest TEXT NOT NULL,
    creation_time BIGINT NOT NULL
);
ALTER TABLE pipeline_runs ADD COLUMN snapshot_id TEXT;
