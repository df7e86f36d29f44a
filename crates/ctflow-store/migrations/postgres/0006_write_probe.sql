-- One row that readiness probes rewrite: proof that a write commits now.
CREATE TABLE ctflow_write_probe (
    id BIGINT PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
