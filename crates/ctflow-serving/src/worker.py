# A ctflow model worker: loads one MLflow model with mlflow.pyfunc and answers one JSON
# line per request on stdout. ctflow has already checked each request against the model's
# signature; this builds the DataFrame or array MLflow would and predicts.
import json
import sys

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


def answer(message):
    protocol.write(json.dumps(message, default=str) + "\n")
    protocol.flush()


def main():
    model = mlflow.pyfunc.load_model(sys.argv[1])
    answer({"ready": True, "mlflow_version": mlflow.__version__})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            data = model_input(request)
            params = request.get("params")
            predictions = model.predict(data, params=params) if params else model.predict(data)
            answer({"predictions": to_json(predictions)})
        except Exception as error:  # a failed prediction is the request's error, not the worker's
            answer({"error": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":
    main()
