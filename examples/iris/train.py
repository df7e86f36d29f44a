"""The MLflow tutorial's iris classifier as an MLflow project: `-C` sets the inverse
regularisation strength; the run logs its parameters, the test accuracy and the model.

It trains on the data ctflow recorded for the pipeline run: the manifest named by
CTFLOW_DATA_MANIFEST lists every file (with its digest, rows and the leading rows a window
leaves out). Run by hand, without a manifest, it trains on the shipped data/iris.csv.
Files on S3-compatible object storage (`s3://` URIs) are read with boto3, configured as
MLflow configures it (AWS_* variables, MLFLOW_S3_ENDPOINT_URL)."""
import argparse
import csv
import io
import json
import os
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABEL = "species"
HERE = Path(__file__).resolve().parent


def training_files():
    """(path, rows to skip) for each file to train on, in the order ctflow recorded."""
    manifest = os.environ.get("CTFLOW_DATA_MANIFEST")
    if not manifest:
        return [(HERE / "data" / "iris.csv", 0)]
    with open(manifest) as f:
        snapshot = json.load(f)
    return [(file["uri"], file.get("skip_rows", 0)) for file in snapshot["files"]]


def open_text(uri):
    if not str(uri).startswith("s3://"):
        return open(uri, newline="")
    import boto3  # only needed for data on object storage

    bucket, _, key = str(uri)[len("s3://"):].partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return io.StringIO(body.decode("utf-8"), newline="")


def load(files):
    X, y = [], []
    for uri, skip in files:
        with open_text(uri) as f:
            for i, row in enumerate(csv.DictReader(f)):
                if i < skip:
                    continue
                X.append([float(row[name]) for name in FEATURES])
                y.append(int(float(row[LABEL])))
    return np.array(X), np.array(y)


def split(X, y):
    """The train/test split evaluate.py repeats, so it scores models on this test part."""
    return train_test_split(X, y, test_size=0.2, random_state=42)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-C", type=float, default=1.0)
    parser.add_argument("--max-iter", type=int, default=1000)
    args = parser.parse_args()

    files = training_files()
    X, y = load(files)
    X_train, X_test, y_train, y_test = split(X, y)
    model = LogisticRegression(C=args.C, max_iter=args.max_iter, random_state=8888)
    model.fit(X_train, y_train)
    accuracy = accuracy_score(y_test, model.predict(X_test))

    # Attaches to the run the project runner created (MLFLOW_RUN_ID), or starts one.
    with mlflow.start_run() as run:
        # A project runner has already logged the parameters it was given, as given
        # ("1" stays "1"); log only the ones it did not, so the values never conflict.
        logged = mlflow.get_run(run.info.run_id).data.params
        params = {"C": args.C, "max_iter": args.max_iter}
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.log_metric("accuracy", accuracy)
        mlflow.log_metric("training_rows", len(y))
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X_train, model.predict(X_train)),
            input_example=X_train[:5],
        )
    print(f"trained on {len(y)} rows from {len(files)} file(s); accuracy={accuracy:.4f}")


if __name__ == "__main__":
    main()
