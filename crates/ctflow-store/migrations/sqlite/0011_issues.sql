-- MLflow 3's issues: quality problems found in an experiment's traces, with a status
-- (pending, rejected, resolved) and an optional severity.
CREATE TABLE issues (
    issue_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT,
    root_causes TEXT,
    categories TEXT,
    source_run_id TEXT,
    created_by TEXT,
    created_timestamp BIGINT NOT NULL,
    last_updated_timestamp BIGINT NOT NULL
);
CREATE INDEX issues_by_experiment ON issues (experiment_id, created_timestamp);
