-- The shadow comparison of a pipeline run's challenger with the champion: when it began,
-- against which champion, and each serving replica's latest numbers (JSON).
ALTER TABLE pipeline_runs ADD COLUMN shadow TEXT;
-- Both models' answers for the mirrored rows of a shadow whose gate judges live metrics:
-- labels that arrive for them score the two on the same rows.
CREATE TABLE shadow_predictions (
    pipeline_run TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    champion TEXT NOT NULL,
    challenger TEXT NOT NULL,
    PRIMARY KEY (pipeline_run, request_id, row_index)
);
