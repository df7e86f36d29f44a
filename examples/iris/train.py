"""The MLflow tutorial's iris classifier as an MLflow project: `-C` sets the inverse
regularisation strength; the run logs its parameters, the test accuracy and the model."""
import argparse

import mlflow
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-C", type=float, default=1.0)
    parser.add_argument("--max-iter", type=int, default=1000)
    args = parser.parse_args()

    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
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
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X_train, model.predict(X_train)),
            input_example=X_train[:5],
        )
    print(f"accuracy={accuracy:.4f}")


if __name__ == "__main__":
    main()
