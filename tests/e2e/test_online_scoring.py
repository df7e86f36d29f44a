"""Online scoring with the real client: a judge made with `mlflow.genai.make_judge` on a
`gateway:/` model, registered and started with a sampling rate, scores the experiment's new
traces on the server. ctflow's server runs MLflow's own scoring processors (a Python
process per pass) and opens the provider key for the judge's calls through its AI gateway.

Under `--auth` every pass signs in as the installation's service user with a token made
for the pass. No LLM provider can be reached from here: a loopback server speaking OpenAI's chat API
stands in for one, and the test checks what reached it (the opened key, the model
definition's model name, the judge's prompt with the trace's inputs and outputs)."""
import json
import os
import sys
import time

import pytest
import requests

from support import CtflowServer, JsonPostServer, backend_uri, wait_for

PASSPHRASE = "online scoring passphrase, thirty-two characters or more"


def _judge_answer(path, body):
    """A provider's chat completion whose judge finds every answer polite."""
    verdict = json.dumps({"result": "yes", "rationale": "The answer thanks the user."})
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": verdict}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


ADMIN = ("judge-admin", "judge-admin-password-0123")


class Backend:
    """`backend_uri`'s view of a parameter: the `auth` case is SQLite with `--auth`."""

    def __init__(self, request):
        self.param = "sqlite" if request.param == "auth" else request.param
        self.getfixturevalue = request.getfixturevalue


@pytest.fixture(scope="module", params=["sqlite", "postgres", "auth"])
def scoring_server(request, ctflow_bin, tmp_path_factory):
    """A server passing every second, with this test's Python as the judges' Python; the
    `auth` case runs with `--auth` (each pass then signs in with a token of its own)."""
    workdir = str(tmp_path_factory.mktemp(f"online-scoring-{request.param}"))
    auth = request.param == "auth"
    srv = CtflowServer(ctflow_bin, backend_uri(Backend(request), workdir), workdir,
                       extra=["--auth"] if auth else [], env={
        "CTFLOW_ADMIN_USERNAME": ADMIN[0], "CTFLOW_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": PASSPHRASE,
        "CTFLOW_ONLINE_SCORING_INTERVAL": "1s",
        "CTFLOW_JUDGE_PYTHON": sys.executable,
        "MLFLOW_ONLINE_SCORING_DEFAULT_TRACE_COMPLETION_BUFFER_SECONDS": "0",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true",
    })
    srv.auth = ADMIN if auth else None
    yield srv
    srv.stop()


def _gateway_endpoint(store, provider_url, name):
    secret = store.create_gateway_secret(secret_name=f"{name}-key", secret_value={"api_key": "sk-judge-0123456789"},
                                         provider="openai", auth_config={"api_base": provider_url})
    model = store.create_gateway_model_definition(name=f"{name}-model", secret_id=secret.secret_id,
                                                  provider="openai", model_name="gpt-4o-mini")
    from mlflow.entities.gateway_endpoint import GatewayEndpointModelConfig, GatewayModelLinkageType

    store.create_gateway_endpoint(name=name, model_configs=[GatewayEndpointModelConfig(
        model_definition_id=model.model_definition_id, linkage_type=GatewayModelLinkageType.PRIMARY)])
    return secret


def _feedback(trace_id, name):
    import mlflow

    return [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == name]


def test_a_started_judge_scores_new_traces(scoring_server):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.genai.judges import make_judge
    from mlflow.genai.scorers import ScorerSamplingConfig

    if scoring_server.auth:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = scoring_server.auth
    provider = JsonPostServer(_judge_answer)
    mlflow.set_tracking_uri(scoring_server.url)
    client = MlflowClient(scoring_server.url)
    store = client._tracking_client.store
    experiment_id = client.create_experiment("online-scoring")
    mlflow.set_experiment(experiment_id=experiment_id)
    judge_secret = _gateway_endpoint(store, f"{provider.url}/v1", "judge")

    # The gateway route the judge will use, called directly: the key is opened on the
    # server, the model definition's model replaces the endpoint's name.
    direct = requests.post(f"{scoring_server.url}/gateway/mlflow/v1/chat/completions", auth=scoring_server.auth,
                           json={"model": "judge", "messages": [{"role": "user", "content": "hi"}]})
    assert direct.status_code == 200, direct.text
    assert direct.json()["choices"][0]["message"]["role"] == "assistant"
    assert provider.calls[-1]["path"] == "/v1/chat/completions"
    assert provider.calls[-1]["authorization"] == "Bearer sk-judge-0123456789"
    assert provider.calls[-1]["body"]["model"] == "gpt-4o-mini"
    # An endpoint whose primary provider is down answers from its fallback.
    dead = store.create_gateway_secret(secret_name="dead-key", secret_value={"api_key": "sk-dead-0123456789"},
                                       provider="openai", auth_config={"api_base": "http://127.0.0.1:1/v1"})
    dead_model = store.create_gateway_model_definition(name="dead-model", secret_id=dead.secret_id,
                                                       provider="openai", model_name="gpt-dead")
    live_model = store.create_gateway_model_definition(name="live-model", secret_id=judge_secret.secret_id,
                                                       provider="openai", model_name="gpt-live")
    from mlflow.entities.gateway_endpoint import GatewayEndpointModelConfig, GatewayModelLinkageType

    store.create_gateway_endpoint(name="with-fallback", model_configs=[
        GatewayEndpointModelConfig(model_definition_id=dead_model.model_definition_id,
                                   linkage_type=GatewayModelLinkageType.PRIMARY),
        GatewayEndpointModelConfig(model_definition_id=live_model.model_definition_id,
                                   linkage_type=GatewayModelLinkageType.FALLBACK, fallback_order=1),
    ])
    fell_back = requests.post(f"{scoring_server.url}/gateway/with-fallback/mlflow/invocations",
                              auth=scoring_server.auth, json={"messages": [{"role": "user", "content": "hi"}]})
    assert fell_back.status_code == 200, fell_back.text
    assert provider.calls[-1]["body"]["model"] == "gpt-live"
    missing = requests.post(f"{scoring_server.url}/gateway/nope/mlflow/invocations", auth=scoring_server.auth,
                            json={"messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    polite = make_judge(name="politeness", model="gateway:/judge", feedback_value_type=str,
                        instructions="Is the answer in {{ outputs }} a polite reply to {{ inputs }}? "
                                     "Answer yes or no.")
    registered = polite.register(experiment_id=experiment_id)
    # Registered but never started: it judges nothing.
    make_judge(name="never", model="gateway:/judge", feedback_value_type=str,
               instructions="Is {{ outputs }} short?").register(experiment_id=experiment_id)
    started = registered.start(experiment_id=experiment_id,
                               sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    try:
        assert started.sample_rate == 1.0

        @mlflow.trace
        def answer(question):
            return f"Thank you for asking about {question}!"

        answer("refunds")
        trace_id = mlflow.get_last_active_trace_id()
        mlflow.flush_trace_async_logging()

        feedback = wait_for("the judge's feedback", lambda: _feedback(trace_id, "politeness"), timeout=90,
                            interval=0.5)
        assert len(feedback) == 1, [c["body"] for c in provider.calls]
        assert feedback[0].value == "yes"
        assert feedback[0].rationale == "The answer thanks the user."
        assert feedback[0].source.source_type == "LLM_JUDGE"
        judged = [c for c in provider.calls if "refunds" in json.dumps(c["body"])]
        assert judged, "the judge's prompt carries the trace's inputs"
        assert "Thank you for asking about refunds!" in json.dumps(judged[0]["body"])
        # The checkpoint moved past the trace: it is not judged again.
        tag = client.get_experiment(experiment_id).tags["mlflow.latestOnlineScoring.trace.checkpoint"]
        assert json.loads(tag)["trace_id"] == trace_id
        time.sleep(3)  # a few more passes (one a second); nothing to wait for but time
        assert len(_feedback(trace_id, "politeness")) == 1
        assert _feedback(trace_id, "never") == []
    finally:
        registered.stop(experiment_id=experiment_id)
        provider.stop()
