-- Model registry (PostgreSQL).
CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    description TEXT,
    next_version BIGINT NOT NULL
);
CREATE TABLE registered_model_tags (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE TABLE model_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    current_stage TEXT NOT NULL,
    source TEXT NOT NULL,
    storage_location TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_link TEXT NOT NULL,
    model_id TEXT,
    status TEXT NOT NULL,
    deleted BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX model_versions_by_run ON model_versions (run_id);
CREATE INDEX model_versions_by_stage ON model_versions (name, current_stage, version);
CREATE TABLE model_version_tags (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key)
);
CREATE TABLE registered_model_aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);
-- The promotion ledger: every alias move and stage transition, never updated or deleted.
CREATE TABLE registry_ledger (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    alias TEXT,
    from_version BIGINT,
    to_version BIGINT,
    from_stage TEXT,
    to_stage TEXT,
    user_id TEXT NOT NULL,
    timestamp BIGINT NOT NULL,
    comment TEXT
);
CREATE INDEX registry_ledger_by_name ON registry_ledger (name, id);
