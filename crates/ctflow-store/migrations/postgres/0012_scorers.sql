-- MLflow 3's registered scorers: a named judge per experiment, its versions each holding
-- the client's serialized scorer (JSON text, kept as sent).
CREATE TABLE scorers (
    scorer_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (experiment_id, name)
);
CREATE TABLE scorer_versions (
    scorer_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    serialized_scorer TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    PRIMARY KEY (scorer_id, version)
);
