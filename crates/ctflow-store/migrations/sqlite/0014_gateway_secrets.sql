-- The AI gateway's secrets, sealed (ctflow_core::secrets): the wrapped data key and the
-- encrypted value, never the value itself; its masked form for display.
CREATE TABLE gateway_secrets (
    secret_id TEXT PRIMARY KEY,
    secret_name TEXT NOT NULL UNIQUE,
    provider TEXT,
    auth_config TEXT,
    masked_values TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    kek_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_updated_at BIGINT NOT NULL,
    created_by TEXT,
    last_updated_by TEXT
);
