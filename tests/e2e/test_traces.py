"""MLflow 3 tracing with the real `mlflow` client against ctflow on SQLite and PostgreSQL:
`@mlflow.trace` and `mlflow.start_span` (spans over OTLP `/v1/traces`, the record over
`StartTraceV3`), `get_trace`, `search_traces`, tags, links to runs, `log_feedback` and
`log_expectation`, deletes, and OTLP exports from a plain OpenTelemetry producer (JSON,
gzip)."""
import gzip
import json
import os

import mlflow
import pytest
import requests
from mlflow.entities import AssessmentSource, SpanType
from mlflow.exceptions import MlflowException


def traced_pipeline():
    @mlflow.trace(span_type=SpanType.CHAIN)
    def answer(question: str) -> str:
        with mlflow.start_span("retrieve", span_type=SpanType.RETRIEVER) as span:
            span.set_inputs({"query": question})
            span.set_outputs(["doc-1", "doc-2"])
            span.set_attribute("score", 0.75)
        mlflow.update_current_trace(tags={"env": "test"}, metadata={"caller": "e2e"})
        return question.upper()

    return answer


def test_traces_from_the_real_client(client, unique):
    exp_id = mlflow.set_experiment(unique).experiment_id
    answer = traced_pipeline()
    assert answer("what is ctflow?") == "WHAT IS CTFLOW?"
    mlflow.flush_trace_async_logging()
    trace_id = mlflow.get_last_active_trace_id()

    trace = client.get_trace(trace_id)
    assert trace.info.experiment_id == exp_id
    assert trace.info.state == "OK"
    assert trace.info.tags["env"] == "test"
    assert trace.info.tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"
    assert trace.info.trace_metadata["caller"] == "e2e"
    assert trace.info.request_preview == '{"question": "what is ctflow?"}'
    spans = {s.name: s for s in trace.data.spans}
    assert set(spans) == {"answer", "retrieve"}
    assert spans["retrieve"].parent_id == spans["answer"].span_id
    assert spans["retrieve"].span_type == SpanType.RETRIEVER
    assert spans["retrieve"].inputs == {"query": "what is ctflow?"}
    assert spans["retrieve"].outputs == ["doc-1", "doc-2"]
    assert spans["retrieve"].get_attribute("score") == 0.75

    # A second trace inside a run, one that fails, and a search over all of them.
    with mlflow.start_run() as run:
        answer("second")
    with pytest.raises(ZeroDivisionError):
        with mlflow.start_span("broken"):
            1 / 0
    mlflow.flush_trace_async_logging()
    traces = client.search_traces(locations=[exp_id])
    assert len(traces) == 3
    failed = client.search_traces(locations=[exp_id], filter_string="trace.status = 'ERROR'")
    assert [t.data.spans[0].name for t in failed] == ["broken"]
    in_run = client.search_traces(
        locations=[exp_id], filter_string=f"attribute.run_id = '{run.info.run_id}'"
    )
    assert len(in_run) == 1 and in_run[0].info.request_preview == '{"question": "second"}'
    by_text = client.search_traces(locations=[exp_id], filter_string="trace.text LIKE '%doc-2%'")
    assert len(by_text) == 2
    page = client.search_traces(locations=[exp_id], max_results=2, order_by=["timestamp ASC"])
    assert [t.info.trace_id for t in page][0] == trace_id and page.token
    rest = client.search_traces(locations=[exp_id], max_results=2, page_token=page.token)
    assert len(rest) == 1 and rest.token is None

    # The fluent search answers a DataFrame, as in MLflow's tracing quickstart.
    frame = mlflow.search_traces(locations=[exp_id], filter_string="tags.env = 'test'")
    assert len(frame) == 2

    # Tags, links, assessments.
    client.set_trace_tag(trace_id, "reviewed", "yes")
    assert client.get_trace(trace_id).info.tags["reviewed"] == "yes"
    client.delete_trace_tag(trace_id, "reviewed")
    assert "reviewed" not in client.get_trace(trace_id).info.tags
    # The client refuses this itself; the server does too, for other callers: the artifact
    # location decides where the trace's files are read from.
    moved = requests.patch(
        f"{client.tracking_uri}/api/2.0/mlflow/traces/{trace_id}/tags",
        json={"key": "mlflow.artifactLocation", "value": "/etc"},
    )
    assert moved.status_code == 400 and "immutable" in moved.json()["message"]

    other_run = client.create_run(exp_id)
    client.link_traces_to_run([trace_id], other_run.info.run_id)
    linked = client.search_traces(
        locations=[exp_id], filter_string=f"run_id = '{other_run.info.run_id}'"
    )
    assert [t.info.trace_id for t in linked] == [trace_id]

    feedback = mlflow.log_feedback(
        trace_id=trace_id,
        name="helpful",
        value=True,
        rationale="answered the question",
        source=AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com"),
    )
    mlflow.log_expectation(trace_id=trace_id, name="expected", value={"answer": "WHAT IS CTFLOW?"})
    assessments = {a.name: a for a in client.get_trace(trace_id).info.assessments}
    assert assessments["helpful"].value is True
    assert assessments["helpful"].rationale == "answered the question"
    assert assessments["expected"].value == {"answer": "WHAT IS CTFLOW?"}
    mlflow.override_feedback(trace_id=trace_id, assessment_id=feedback.assessment_id, value=False)
    after = [a for a in client.get_trace(trace_id).info.assessments if a.name == "helpful"]
    assert sorted((a.value, a.valid) for a in after) == [(False, True), (True, False)]

    # The UI's download of the spans (traces.json) has MLflow's span dicts.
    response = requests.get(
        f"{client.tracking_uri}/ajax-api/2.0/mlflow/get-trace-artifact",
        params={"request_id": trace_id},
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == "attachment; filename=traces.json"
    names = {s["name"] for s in response.json()["spans"]}
    assert names == {"answer", "retrieve"}

    assert client.delete_traces(exp_id, trace_ids=[trace_id]) == 1
    with pytest.raises(MlflowException, match="not found"):
        client.get_trace(trace_id)
    assert client.delete_traces(exp_id, max_timestamp_millis=int(1e15)) == 2
    assert len(client.search_traces(locations=[exp_id])) == 0


def otlp_json_span(trace_hex, span_hex, name, parent=None, attributes=()):
    span = {
        "traceId": trace_hex,
        "spanId": span_hex,
        "name": name,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": [{"key": k, "value": v} for k, v in attributes],
        "status": {"code": 1},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def test_otlp_json_and_gzip_exports_from_any_producer(server, unique):
    """What an OpenTelemetry SDK or collector sends: OTLP/JSON, hex ids, gzip bodies."""
    exp_id = mlflow.MlflowClient(server.url).create_experiment(unique)
    trace_hex = os.urandom(16).hex()
    root_hex, child_hex = os.urandom(8).hex(), os.urandom(8).hex()
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        otlp_json_span(trace_hex, root_hex, "request", attributes=[
            ("mlflow.spanInputs", {"stringValue": '{"q": 1}'}),
            ("http.status_code", {"intValue": "200"}),
        ]),
        otlp_json_span(trace_hex, child_hex, "db", parent=root_hex, attributes=[
            ("rows", {"arrayValue": {"values": [{"intValue": 1}, {"doubleValue": 2.5}]}}),
        ]),
    ]}]}]}
    response = requests.post(
        f"{server.url}/v1/traces",
        data=gzip.compress(json.dumps(body).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                 "x-mlflow-experiment-id": exp_id},
    )
    assert response.status_code == 200, response.text
    trace_id = f"tr-{trace_hex}"
    trace = mlflow.MlflowClient(server.url).get_trace(trace_id)
    assert trace.info.experiment_id == exp_id
    assert trace.info.request_time == 1_700_000_000_000
    assert trace.info.execution_duration == 500
    spans = {s.name: s for s in trace.data.spans}
    assert spans["request"].get_attribute("http.status_code") == 200
    assert spans["db"].get_attribute("rows") == [1, 2.5]

    # Bad exports are refused with MLflow's error JSON and store nothing.
    for data, headers in [
        (b"\xff\xff", {"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": exp_id}),
        (json.dumps(body).encode(), {"Content-Type": "application/json"}),
        (json.dumps(body).encode(), {"Content-Type": "application/json",
                                     "x-mlflow-experiment-id": "999999"}),
        (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip",
                       "x-mlflow-experiment-id": exp_id}),
    ]:
        refused = requests.post(f"{server.url}/v1/traces", data=data, headers=headers)
        assert refused.status_code in (400, 404), refused.text
        assert refused.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
