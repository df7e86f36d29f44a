"""MLflow 3's GenAI records with the real `mlflow` client against ctflow on SQLite and
PostgreSQL: issues (the client's REST store calls, as `mlflow.genai` makes them)."""
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
