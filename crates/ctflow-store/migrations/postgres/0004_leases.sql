-- Leases: one holder at a time per name (the active controller), renewed before it ends.
-- generation grows at every change of holder, so a holder can tell it was replaced.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL
);
