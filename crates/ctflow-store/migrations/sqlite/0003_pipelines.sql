-- CT engine (sqlite): pipelines, their runs, trigger cursors and the run history.
CREATE TABLE pipelines (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    source TEXT NOT NULL,
    base_dir TEXT NOT NULL,
    generation BIGINT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL
);
-- One row per recorded trigger event; (pipeline, dedupe_key) makes one event start at most
-- one run. Ids are UUIDv7, so ordering by id is ordering by recording time.
CREATE TABLE pipeline_runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    trigger_event TEXT NOT NULL,
    spec TEXT NOT NULL,
    base_dir TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    not_before BIGINT,
    run_id TEXT,
    model_version BIGINT,
    decision TEXT,
    worker_pid BIGINT,
    approval_deadline BIGINT,
    -- A person's answer not yet acted on: `approved:<user>` or `rejected:<user>`.
    approval TEXT,
    creation_time BIGINT NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    last_updated_time BIGINT NOT NULL,
    UNIQUE (pipeline, dedupe_key)
);
CREATE INDEX pipeline_runs_by_pipeline ON pipeline_runs (pipeline, id);
CREATE INDEX pipeline_runs_by_phase ON pipeline_runs (phase, id);
-- The history of a pipeline run: phase changes, attempts, gate decisions with numbers.
CREATE TABLE pipeline_run_events (
    id INTEGER PRIMARY KEY,
    pipeline_run TEXT NOT NULL,
    timestamp BIGINT NOT NULL,
    kind TEXT NOT NULL,
    gate TEXT,
    result TEXT,
    message TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX pipeline_run_events_by_run ON pipeline_run_events (pipeline_run, id);
-- Where each schedule trigger stands (the newest tick considered).
CREATE TABLE schedule_cursors (
    pipeline TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    PRIMARY KEY (pipeline, trigger_key)
);
-- Every file a data trigger has seen: each triggers once.
CREATE TABLE data_trigger_files (
    pipeline TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    path TEXT NOT NULL,
    seen_time BIGINT NOT NULL,
    pipeline_run TEXT,
    PRIMARY KEY (pipeline, trigger_key, path)
);
