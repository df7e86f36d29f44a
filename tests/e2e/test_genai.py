"""MLflow 3's GenAI records with the real `mlflow` client against ctflow on SQLite and
PostgreSQL: issues, the scorer registry, evaluation datasets (`mlflow.genai.datasets`) and
the AI gateway's secrets (sealed at rest), through the client's own REST store calls."""
import os

import pytest
import requests
from mlflow.entities.issue import IssueSeverity, IssueStatus
from mlflow.exceptions import MlflowException


def test_issues_from_the_real_client(client, unique):
    store = client._tracking_client.store
    exp_id = client.create_experiment(unique)
    run = client.create_run(exp_id)
    first = store.create_issue(
        experiment_id=exp_id,
        name="Slow answers",
        description="p99 latency above 2 s",
        severity=IssueSeverity.HIGH,
        root_causes=["cold cache"],
        source_run_id=run.info.run_id,
        categories=["latency"],
        created_by="oncall",
    )
    assert first.issue_id.startswith("iss-")
    assert first.status == IssueStatus.PENDING
    assert first.severity == IssueSeverity.HIGH
    assert first.root_causes == ["cold cache"]
    assert first.categories == ["latency"]
    second = store.create_issue(experiment_id=exp_id, name="Wrong units", description="km vs mi")

    fetched = store.get_issue(first.issue_id)
    assert fetched.source_run_id == run.info.run_id and fetched.created_by == "oncall"
    updated = store.update_issue(first.issue_id, status=IssueStatus.RESOLVED, name="Slow answers (fixed)")
    assert updated.status == IssueStatus.RESOLVED and updated.name == "Slow answers (fixed)"
    assert updated.description == "p99 latency above 2 s"
    assert updated.last_updated_timestamp >= updated.created_timestamp

    everything = store.search_issues(experiment_id=exp_id)
    assert [i.issue_id for i in everything] == [second.issue_id, first.issue_id]
    resolved = store.search_issues(experiment_id=exp_id, filter_string="status = 'resolved'")
    assert [i.issue_id for i in resolved] == [first.issue_id]
    page = store.search_issues(experiment_id=exp_id, max_results=1)
    assert len(page) == 1 and page.token
    rest = store.search_issues(experiment_id=exp_id, max_results=1, page_token=page.token)
    assert [i.issue_id for i in rest] == [first.issue_id]

    with pytest.raises(MlflowException, match="not found"):
        store.get_issue("iss-missing")
    with pytest.raises(MlflowException, match="Invalid filter field"):
        store.search_issues(experiment_id=exp_id, filter_string="name = 'x'")
    # MLflow's own server answers 500 for an unknown status; ctflow names the valid ones.
    bad = requests.post(
        f"{client.tracking_uri}/api/3.0/mlflow/issues",
        json={"experiment_id": exp_id, "name": "x", "description": "y", "status": "open"},
    )
    assert bad.status_code == 400 and "pending" in bad.json()["message"]


def test_scorer_registry_from_the_real_client(client, unique):
    """Registered judges: versions per name, the latest listed, deletes by version or all."""
    import json

    store = client._tracking_client.store
    exp_id = client.create_experiment(unique)
    first = store.register_scorer(exp_id, "relevance", json.dumps({"name": "relevance", "v": 1}))
    assert first.scorer_version == 1
    second = store.register_scorer(exp_id, "relevance", json.dumps({"name": "relevance", "v": 2}))
    assert second.scorer_version == 2 and second.scorer_id == first.scorer_id
    store.register_scorer(exp_id, "safety", json.dumps({"name": "safety"}))

    latest = {s.scorer_name: s.scorer_version for s in store.list_scorers(exp_id)}
    assert latest == {"relevance": 2, "safety": 1}
    assert [s.scorer_version for s in store.list_scorer_versions(exp_id, "relevance")] == [1, 2]
    assert json.loads(store.get_scorer(exp_id, "relevance", version=1)._serialized_scorer)["v"] == 1

    store.delete_scorer(exp_id, "relevance", version=1)
    assert [s.scorer_version for s in store.list_scorer_versions(exp_id, "relevance")] == [2]
    assert store.register_scorer(exp_id, "relevance", "{}").scorer_version == 3
    store.delete_scorer(exp_id, "relevance")
    assert [s.scorer_name for s in store.list_scorers(exp_id)] == ["safety"]
    with pytest.raises(MlflowException, match="not found"):
        store.get_scorer(exp_id, "relevance")


def test_evaluation_datasets_from_the_real_client(client, unique):
    """`mlflow.genai.datasets`: a dataset in two experiments, records merged by their inputs,
    read back as a DataFrame, searched, unlinked and deleted."""
    import mlflow
    from mlflow.genai.datasets import create_dataset, delete_dataset, get_dataset, search_datasets

    first = client.create_experiment(unique)
    second = client.create_experiment(f"{unique}-b")
    dataset = create_dataset(name=f"qa-{unique}", experiment_id=[first, second], tags={"team": "ml"})
    assert sorted(dataset.experiment_ids) == sorted([first, second])
    dataset.merge_records([
        {"inputs": {"question": "What is ctflow?"}, "expectations": {"answer": "CT for MLflow"}},
        {"inputs": {"question": "What is MLflow?"}, "expectations": {"answer": "a platform"},
         "tags": {"difficulty": "easy"}},
    ])
    # The same inputs again: merged into the stored record, not added.
    dataset.merge_records([
        {"inputs": {"question": "What is MLflow?"}, "expectations": {"answer": "an ML platform"}},
    ])
    loaded = get_dataset(dataset_id=dataset.dataset_id)
    frame = loaded.to_df()
    assert len(frame) == 2
    by_question = {row["inputs"]["question"]: row for _, row in frame.iterrows()}
    assert by_question["What is MLflow?"]["expectations"] == {"answer": "an ML platform"}
    assert by_question["What is MLflow?"]["tags"]["difficulty"] == "easy"
    assert loaded.profile and '"num_records": 2' in loaded.profile
    assert '"question": "string"' in loaded.schema

    found = search_datasets(experiment_ids=[second], filter_string="tags.team = 'ml'")
    assert [d.dataset_id for d in found] == [dataset.dataset_id]
    assert list(search_datasets(experiment_ids=[second], filter_string="tags.team = 'web'")) == []

    client.remove_dataset_from_experiments(dataset.dataset_id, [second])
    assert list(search_datasets(experiment_ids=[second])) == []
    delete_dataset(dataset_id=dataset.dataset_id)
    with pytest.raises(MlflowException, match="not found"):
        client.get_dataset(dataset.dataset_id)
    mlflow.set_tracking_uri(client.tracking_uri)


def test_gateway_secrets_are_sealed_at_rest(client, server):
    """Provider keys through the real client: only masked forms come back, and the database
    holds no value in the clear (SQLite and PostgreSQL)."""
    import subprocess

    from support.processes import _pg_tool

    store = client._tracking_client.store
    value = "sk-live-e2e-0123456789abcdef"
    secret = store.create_gateway_secret(
        secret_name=f"openai-{id(client)}", secret_value={"api_key": value}, provider="openai"
    )
    assert secret.masked_values == {"api_key": "sk-...cdef"}
    assert store.get_secret_info(secret.secret_id).masked_values == {"api_key": "sk-...cdef"}
    rotated = store.update_gateway_secret(
        secret_id=secret.secret_id, secret_value={"api_key": "sk-rotated-99998888"}
    )
    assert rotated.masked_values == {"api_key": "sk-...8888"}
    assert any(s.secret_id == secret.secret_id for s in store.list_secret_infos(provider="openai"))
    with pytest.raises(MlflowException, match="already exists"):
        store.create_gateway_secret(secret_name=secret.secret_name, secret_value={"api_key": "x" * 10})

    # At rest: no trace of either value in the database.
    if server.backend_uri.startswith("sqlite"):
        db = server.backend_uri.removeprefix("sqlite:///")
        files = [f for f in (db, db + "-wal") if os.path.exists(f)]
        dump = "".join(open(f, "rb").read().decode("latin-1") for f in files)
    else:
        dump = subprocess.run(
            [_pg_tool("pg_dump"), "--data-only", "--table=gateway_secrets", server.backend_uri],
            capture_output=True, text=True, check=True,
        ).stdout
    assert "sk-...8888" in dump
    assert value not in dump and "sk-rotated-99998888" not in dump
    store.delete_gateway_secret(secret.secret_id)
    with pytest.raises(MlflowException, match="not found"):
        store.get_secret_info(secret.secret_id)


def test_a_server_without_a_passphrase_keeps_no_secrets(sqlite_server):
    from mlflow import MlflowClient

    store = MlflowClient(sqlite_server.url)._tracking_client.store
    config = requests.get(f"{sqlite_server.url}/ajax-api/3.0/mlflow/gateway/secrets/config").json()
    assert config == {"secrets_available": False, "using_default_passphrase": False}
    with pytest.raises(MlflowException, match="MLFLOW_CRYPTO_KEK_PASSPHRASE"):
        store.create_gateway_secret(secret_name="k", secret_value={"api_key": "sk-0123456789"})


def test_gateway_endpoints_from_the_real_client(client, unique):
    """Model definitions and endpoints through the client's store calls: models in their
    order, fallbacks, usage tracking into a `gateway/<name>` experiment, bindings, and a
    deleted secret leaving its model definitions without one."""
    from mlflow.entities import (
        FallbackConfig,
        FallbackStrategy,
        GatewayEndpointModelConfig,
        GatewayModelLinkageType,
        GatewayResourceType,
        RoutingStrategy,
    )

    store = client._tracking_client.store
    secret = store.create_gateway_secret(
        secret_name=f"gw-{unique}", secret_value={"api_key": "sk-gateway-0000"}, provider="openai"
    )
    primary = store.create_gateway_model_definition(
        name=f"primary-{unique}", secret_id=secret.secret_id, provider="openai", model_name="gpt-4o"
    )
    fallback = store.create_gateway_model_definition(
        name=f"fallback-{unique}", secret_id=secret.secret_id, provider="openai", model_name="gpt-4o-mini"
    )
    endpoint = store.create_gateway_endpoint(
        name=f"chat-{unique}",
        model_configs=[
            GatewayEndpointModelConfig(model_definition_id=primary.model_definition_id,
                                       linkage_type=GatewayModelLinkageType.PRIMARY, weight=1.0),
            GatewayEndpointModelConfig(model_definition_id=fallback.model_definition_id,
                                       linkage_type=GatewayModelLinkageType.FALLBACK, weight=1.0,
                                       fallback_order=0),
        ],
        routing_strategy=RoutingStrategy.REQUEST_BASED_TRAFFIC_SPLIT,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.SEQUENTIAL, max_attempts=2),
        usage_tracking=True,
    )
    assert [m.model_definition.model_name for m in endpoint.model_mappings] == ["gpt-4o", "gpt-4o-mini"]
    assert client.get_experiment(endpoint.experiment_id).name == f"gateway/chat-{unique}"
    fetched = store.get_gateway_endpoint(endpoint.endpoint_id)
    assert fetched.fallback_config.max_attempts == 2

    binding = store.create_endpoint_binding(
        endpoint_id=endpoint.endpoint_id, resource_type=GatewayResourceType.SCORER, resource_id="job-1"
    )
    assert [b.resource_id for b in store.list_endpoint_bindings(endpoint_id=endpoint.endpoint_id)] == ["job-1"]
    store.delete_endpoint_binding(endpoint_id=binding.endpoint_id,
                                  resource_type=binding.resource_type.value, resource_id="job-1")

    with pytest.raises(MlflowException, match="in use by endpoints"):
        store.delete_gateway_model_definition(primary.model_definition_id)
    store.detach_model_from_endpoint(endpoint_id=endpoint.endpoint_id,
                                     model_definition_id=fallback.model_definition_id)
    store.delete_gateway_model_definition(fallback.model_definition_id)
    store.delete_gateway_secret(secret.secret_id)
    orphan = store.get_gateway_endpoint(endpoint.endpoint_id).model_mappings[0].model_definition
    assert orphan.secret_id is None and orphan.secret_name is None
    store.delete_gateway_endpoint(endpoint.endpoint_id)
    assert all(e.endpoint_id != endpoint.endpoint_id for e in store.list_gateway_endpoints())


def test_prompt_lab_runs_and_the_deployments_proxy(client, unique, ctflow_bin, tmp_path):
    """The UI's prompt lab records a finished run with its table; the gateway proxy forwards
    to the deployments server in MLFLOW_DEPLOYMENTS_TARGET. No MLflow deployments server
    with an LLM behind it can run here: a loopback HTTP server stands in for it."""
    import json

    from support import CtflowServer, JsonPostServer

    exp_id = client.create_experiment(unique)
    response = requests.post(
        f"{client.tracking_uri}/ajax-api/2.0/mlflow/runs/create-promptlab-run",
        json={"experiment_id": exp_id, "run_name": "attempt-1", "prompt_template": "Hi {{ name }}",
              "prompt_parameters": [{"key": "name", "value": "Ada"}], "model_route": "chat",
              "model_parameters": [{"key": "temperature", "value": 0.2}], "model_input": "Hi Ada",
              "model_output": "Hello!", "mlflow_version": "3.17.2"},
    )
    assert response.status_code == 200, response.text
    run = client.get_run(response.json()["run"]["info"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "attempt-1"
    assert run.data.params == {"temperature": "0.2", "model_route": "chat", "prompt_template": "Hi {{ name }}"}
    assert run.data.tags["mlflow.runSourceType"] == "PROMPT_ENGINEERING"
    table = json.loads(client.download_artifacts(run.info.run_id, "eval_results_table.json", str(tmp_path))
                       and open(tmp_path / "eval_results_table.json").read())
    assert table == {"columns": ["name", "prompt", "output"], "data": [["Ada", "Hi Ada", "Hello!"]]}

    target = JsonPostServer(lambda path, body: {"choices": [{"message": {"content": "pong"}}]})
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    proxied = CtflowServer(ctflow_bin, f"sqlite:///{workdir}/ctflow.db", str(workdir),
                           env={"MLFLOW_DEPLOYMENTS_TARGET": target.url})
    try:
        answer = requests.post(f"{proxied.url}/ajax-api/2.0/mlflow/gateway-proxy",
                               json={"gateway_path": "gateway/chat/invocations",
                                     "json_data": {"messages": [{"role": "user", "content": "ping"}]}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "pong"
        assert [(c["path"], c["body"]) for c in target.calls] == [
            ("/gateway/chat/invocations", {"messages": [{"role": "user", "content": "ping"}]})]
        refused = requests.post(f"{proxied.url}/ajax-api/2.0/mlflow/gateway-proxy",
                                json={"gateway_path": "gateway/../invocations"})
        assert refused.status_code == 400
    finally:
        proxied.stop()
        target.stop()
