-- The shadow comparison of a pipeline run's challenger with the champion: when it began,
-- against which champion, and each serving replica's latest numbers (JSON).
ALTER TABLE pipeline_runs ADD COLUMN shadow TEXT;
