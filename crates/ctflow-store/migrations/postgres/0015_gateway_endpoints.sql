-- The AI gateway's model definitions (a provider's model with the secret to call it),
-- endpoints (a name clients call, routing to one or more model definitions), the
-- endpoint-model mappings, and what is bound to an endpoint (a scorer job, ...).
CREATE TABLE gateway_model_definitions (
    model_definition_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret_id TEXT,
    provider TEXT NOT NULL,
    model_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_updated_at BIGINT NOT NULL,
    created_by TEXT,
    last_updated_by TEXT
);
CREATE TABLE gateway_endpoints (
    endpoint_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    routing_strategy TEXT,
    fallback_config TEXT,
    usage_tracking BIGINT NOT NULL,
    experiment_id BIGINT,
    created_at BIGINT NOT NULL,
    last_updated_at BIGINT NOT NULL,
    created_by TEXT,
    last_updated_by TEXT
);
CREATE TABLE gateway_endpoint_models (
    mapping_id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    model_definition_id TEXT NOT NULL,
    linkage_type TEXT NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    fallback_order BIGINT,
    position BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (endpoint_id, model_definition_id)
);
CREATE TABLE gateway_endpoint_bindings (
    endpoint_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_updated_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, resource_type, resource_id)
);
