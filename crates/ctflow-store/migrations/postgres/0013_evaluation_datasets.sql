-- MLflow 3's evaluation datasets: named sets of records (inputs, expected answers, tags),
-- each linked to any number of experiments. A record is identified by its inputs (their
-- canonical JSON's SHA-256): upserting the same inputs merges into the record.
CREATE TABLE evaluation_datasets (
    dataset_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,
    dataset_schema TEXT,
    profile TEXT,
    digest TEXT NOT NULL,
    created_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    created_by TEXT,
    last_updated_by TEXT
);
CREATE TABLE evaluation_dataset_experiments (
    dataset_id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    PRIMARY KEY (dataset_id, experiment_id)
);
CREATE INDEX evaluation_dataset_experiments_by_experiment
    ON evaluation_dataset_experiments (experiment_id);
CREATE TABLE evaluation_dataset_records (
    dataset_record_id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT,
    expectations TEXT,
    tags TEXT,
    source TEXT,
    created_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    created_by TEXT,
    last_updated_by TEXT,
    UNIQUE (dataset_id, input_hash)
);
-- The tags of each dataset one per row, for searches (the dataset's row keeps the map).
CREATE TABLE evaluation_dataset_tag_index (
    dataset_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (dataset_id, key)
);
