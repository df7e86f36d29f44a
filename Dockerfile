# The image the Kubernetes manifests and the Helm chart run (server, controller, workers,
# watcher) and a base for CT job images: ctflow on PATH plus Python for MLflow projects.
# CI here has no container runtime and does not build it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist -p ctflow-cli

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# The Python side of CT jobs that run in this image (the iris example's needs).
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir mlflow==3.17.2 scikit-learn
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /src/target/dist/ctflow /usr/local/bin/ctflow
COPY examples /opt/ctflow/examples
WORKDIR /var/lib/ctflow
ENTRYPOINT ["ctflow"]
