-- Online scoring: a registered scorer set to judge an experiment's new traces as they
-- arrive, at a sampling rate and with an optional trace filter. One configuration per
-- scorer (an update replaces it); deleting the scorer deletes it.
CREATE TABLE online_scoring_configs (
    online_scoring_config_id TEXT PRIMARY KEY,
    scorer_id TEXT NOT NULL UNIQUE,
    experiment_id BIGINT NOT NULL,
    sample_rate DOUBLE PRECISION NOT NULL,
    filter_string TEXT
);
