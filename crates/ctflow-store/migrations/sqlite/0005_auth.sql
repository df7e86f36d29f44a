-- Access control (ctflow server --auth): users with argon2 password hashes, API tokens
-- (only their SHA-256 is kept), and per-user grants on experiments and registered models
-- with MLflow's permission names.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL,
    creation_time BIGINT NOT NULL
);
CREATE TABLE user_tokens (
    id INTEGER PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    creation_time BIGINT NOT NULL,
    expiry_time BIGINT
);
CREATE TABLE user_permissions (
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, user_id)
);
CREATE INDEX user_permissions_by_user ON user_permissions (user_id, resource_type);
