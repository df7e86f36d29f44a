# A ctflow model worker: loads one MLflow model with mlflow.pyfunc and answers one JSON
# line per request on stdout. ctflow has already checked each request against the model's
# signature; this builds the DataFrame or array MLflow would and predicts.
import json
import os
import sys

# A shadowing challenger runs behind the champion: it gets only the CPU left over
# (Linux's idle scheduling class; elsewhere the lowest nice level).
if os.environ.get("CTFLOW_WORKER_PRIORITY") == "background":
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)

import numpy as np
import pandas as pd
import mlflow
import mlflow.pyfunc

protocol = sys.stdout
sys.stdout = sys.stderr  # the model's own prints must not break the protocol


def to_json(predictions):
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    if isinstance(predictions, (pd.Series, np.ndarray)):
        return predictions.tolist()
    if isinstance(predictions, np.generic):
        return predictions.item()
    return predictions


def model_input(request):
    if request["kind"] == "array":
        return np.array(request["data"], dtype=request.get("dtype"))
    frame = pd.DataFrame(request["rows"], columns=request["columns"])
    for column, dtype in request.get("dtypes", {}).items():
        if dtype != "object":
            frame[column] = frame[column].astype(dtype)
    return frame


def predict(model, request):
    try:
        data = model_input(request)
        params = request.get("params")
        predictions = model.predict(data, params=params) if params else model.predict(data)
        return {"predictions": to_json(predictions)}
    except Exception as error:  # a failed prediction is the request's error, not the worker's
        return {"error": f"{type(error).__name__}: {error}"}


def predict_batch(model, requests):
    """Requests ctflow found compatible (same columns and dtypes, or same array shape)
    go to the model as one call; a result that does not split back row for row, or a
    failure, falls back to one call each so every request gets its own answer."""
    try:
        inputs = [model_input(r) for r in requests]
        sizes = [len(x) for x in inputs]
        if isinstance(inputs[0], pd.DataFrame):
            combined = pd.concat(inputs, ignore_index=True)
        else:
            combined = np.concatenate(inputs)
        predictions = to_json(model.predict(combined))
        if isinstance(predictions, list) and len(predictions) == sum(sizes):
            answers, start = [], 0
            for size in sizes:
                answers.append({"predictions": predictions[start:start + size]})
                start += size
            return answers
    except Exception:
        pass
    return [predict(model, r) for r in requests]


def answer(message):
    protocol.write(json.dumps(message, default=str) + "\n")
    protocol.flush()


def main():
    model = mlflow.pyfunc.load_model(sys.argv[1])
    answer({"ready": True, "mlflow_version": mlflow.__version__})
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError as error:
            answer({"error": f"unreadable request: {error}"})
            continue
        if "batch" in request:
            answer({"answers": predict_batch(model, request["batch"])})
        else:
            answer(predict(model, request))


if __name__ == "__main__":
    main()
