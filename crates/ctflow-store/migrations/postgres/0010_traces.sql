-- MLflow 3 traces: one row per trace, its tags and metadata, its spans (MLflow's span dict
-- as JSON text, with the columns searches need), its assessments, and the runs it was
-- linked to. Deleting a trace deletes its rows in all of them (in one transaction).
CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    request_time BIGINT NOT NULL,
    execution_duration BIGINT,
    state TEXT NOT NULL,
    client_request_id TEXT,
    request_preview TEXT,
    response_preview TEXT
);
CREATE INDEX traces_by_experiment ON traces (experiment_id, request_time);
CREATE TABLE trace_tags (
    trace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
);
CREATE TABLE trace_metadata (
    trace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
);
CREATE TABLE spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    span_type TEXT,
    status TEXT NOT NULL,
    start_time_ns BIGINT NOT NULL,
    end_time_ns BIGINT,
    content TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE TABLE assessments (
    assessment_id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    valid BIGINT NOT NULL,
    overrides TEXT,
    create_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX assessments_by_trace ON assessments (trace_id);
CREATE TABLE trace_runs (
    trace_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (trace_id, run_id)
);
CREATE INDEX trace_runs_by_run ON trace_runs (run_id);
