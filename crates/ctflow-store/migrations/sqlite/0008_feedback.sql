-- Ground-truth labels sent for a registered model's served predictions, one per scored
-- row (request id + the row's place in the request). A label sent again replaces the
-- earlier one; seq orders them for readers that page through what arrived.
CREATE TABLE feedback_labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    label TEXT NOT NULL,
    received_time BIGINT NOT NULL,
    UNIQUE (name, request_id, row_index)
);
CREATE INDEX feedback_labels_received ON feedback_labels (name, received_time);
