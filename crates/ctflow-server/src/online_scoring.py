"""ctflow's online scoring runner: one pass over one experiment's new traces.

ctflow's server starts it with MLFLOW_TRACKING_URI pointing at itself and writes the
experiment's active online scorers to stdin as JSON:

    {"experiment_id": "1", "online_scorers": [{"name", "serialized_scorer",
     "scorer_version", "online_config": {...}}]}

It runs MLflow's own trace- and session-scoring processors (the same code MLflow's
server runs as jobs): traces since the experiment's checkpoint tag are sampled, judged
through the server's AI gateway, and the judges' feedback is logged to the traces; the
checkpoint moves on. The last line on stdout is a JSON summary for the server's log.
"""

import json
import logging
import sys


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    job = json.load(sys.stdin)

    from mlflow.genai.scorers.base import Scorer
    from mlflow.genai.scorers.online.entities import OnlineScorer, OnlineScoringConfig
    from mlflow.genai.scorers.online.session_processor import OnlineSessionScoringProcessor
    from mlflow.genai.scorers.online.trace_processor import OnlineTraceScoringProcessor
    from mlflow.tracking._tracking_service.utils import _get_store

    experiment_id = job["experiment_id"]
    trace_level, session_level, skipped = [], [], []
    for entry in job["online_scorers"]:
        scorer = OnlineScorer(
            name=entry["name"],
            serialized_scorer=entry["serialized_scorer"],
            scorer_version=entry.get("scorer_version"),
            online_config=OnlineScoringConfig(**entry["online_config"]),
        )
        try:
            loaded = Scorer.model_validate_json(scorer.serialized_scorer)
        except Exception as error:  # a scorer this MLflow cannot load is skipped, not fatal
            skipped.append({"name": scorer.name, "error": str(error)})
            continue
        (session_level if loaded.is_session_level_scorer else trace_level).append(scorer)

    store = _get_store()
    if trace_level:
        OnlineTraceScoringProcessor.create(experiment_id, trace_level, store).process_traces()
    if session_level:
        OnlineSessionScoringProcessor.create(
            experiment_id, session_level, store
        ).process_sessions()
    print(
        json.dumps({
            "experiment_id": experiment_id,
            "trace_scorers": [s.name for s in trace_level],
            "session_scorers": [s.name for s in session_level],
            "skipped": skipped,
        })
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
