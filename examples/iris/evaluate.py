"""Scores a model on the test part of the run's data: the same files (the manifest named
by CTFLOW_DATA_MANIFEST) and the same split as train.py. ctflow's CT gate runs this for
the candidate and for the current champion, so both are measured on today's data rather
than each on the data it was trained on."""
import argparse

import mlflow
from sklearn.metrics import accuracy_score

from train import load, split, training_files


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-uri", required=True)
    args = parser.parse_args()

    X, y = load(training_files())
    _, X_test, _, y_test = split(X, y)
    model = mlflow.pyfunc.load_model(args.model_uri)
    accuracy = accuracy_score(y_test, model.predict(X_test))
    # Attaches to the run ctflow created for this evaluation (MLFLOW_RUN_ID).
    with mlflow.start_run():
        mlflow.log_metric("accuracy", accuracy)
        mlflow.log_metric("evaluation_rows", len(y_test))
    print(f"{args.model_uri}: accuracy={accuracy:.4f} on {len(y_test)} rows")


if __name__ == "__main__":
    main()
