"""The web dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright):
the runs table sorts and filters through the search grammar, a run shows its metric charts
and previews artifacts, two runs compare, and a manual CD gate is approved from the
pipelines page, after which the champion has moved. Screenshots go to
`target/ui-screenshots/`."""
import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from support import REPO, TERMINAL, CtflowServer, CtflowUp, install, iris_pipeline, trigger, wait_phase

SHOTS = REPO / "target" / "ui-screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# A 1x1 PNG, to check image previews.
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360f8cfc000000301010018dd8db00000000049454e44ae426082")


@pytest.fixture(scope="module")
def up(ctflow_bin, tmp_path_factory):
    instance = CtflowUp(ctflow_bin, tmp_path_factory.mktemp("ctflow-up-ui")).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; scripts/setup installs Debian's chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == [], f"script errors in the page: {errors}"


def expect(locator):
    # NB: Playwright's locator assertions poll without evaluating strings, which the
    # page's Content-Security-Policy (no eval) would refuse.
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def visit(page, url, hash_path):
    page.goto(f"{url}/#{hash_path}")
    page.wait_for_selector(f'body[data-ready="{hash_path}"]')


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def experiment(up, tmp_path_factory):
    """30 runs with a parameter, metric histories and artifacts."""
    mlflow.set_tracking_uri(up.url)
    experiment_id = mlflow.create_experiment("ui-demo")
    files = tmp_path_factory.mktemp("ui-artifacts")
    (files / "notes.txt").write_text("trained on the 2026-11 snapshot\n")
    (files / "summary.json").write_text(json.dumps({"rows": 150, "classes": 3}))
    (files / "pixel.png").write_bytes(PIXEL)
    accuracy = {}
    for i in range(30):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"run-{i:02d}") as run:
            mlflow.log_param("C", str(0.1 * (i + 1)))
            final = 0.5 + (i * 7 % 30) / 60
            for step in range(5):
                mlflow.log_metric("accuracy", final - 0.05 * (4 - step), step=step)
                mlflow.log_metric("loss", 1.0 - final + 0.1 * (4 - step), step=step)
            accuracy[run.info.run_id] = final
            if i == 0:
                for f in files.iterdir():
                    mlflow.log_artifact(str(f))
                from sklearn.linear_model import LogisticRegression

                fitted = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
                mlflow.sklearn.log_model(fitted, name="model")
    mlflow.set_tracking_uri(None)
    return experiment_id, accuracy


def column(page, key):
    """The values of a runs-table column, top to bottom."""
    header = page.locator("#runs thead tr:last-child th")
    names = [header.nth(i).get_attribute("data-column") for i in range(header.count())]
    index = names.index(key) + 1
    return page.locator(f"#runs tbody tr td:nth-child({index})").all_inner_texts()


def test_runs_table_sorts_filters_and_opens_a_run(up, experiment, page):
    experiment_id, accuracy = experiment
    visit(page, up.url, "/experiments")
    expect(page.locator(f'#experiments td.runs[data-experiment="{experiment_id}"]')).to_have_text("30")
    shot(page, "experiments")
    page.click("#experiments a >> text=ui-demo")
    page.wait_for_selector(f'body[data-ready="/experiments/{experiment_id}"]')
    assert page.locator("#runs tbody tr").count() == 30
    shot(page, "runs-table")

    page.click('th[data-column="metrics:accuracy"]')
    page.wait_for_selector('th.sorted-desc[data-column="metrics:accuracy"]')
    values = [float(v) for v in column(page, "metrics:accuracy")]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(max(accuracy.values()))

    page.fill('input[aria-label="Filter runs"]', "metrics.accuracy > 0.8")
    page.press('input[aria-label="Filter runs"]', "Enter")
    expected = sum(1 for v in accuracy.values() if v > 0.8)
    expect(page.locator("#runs tbody tr")).to_have_count(expected)
    assert all(float(v) > 0.8 for v in column(page, "metrics:accuracy"))
    shot(page, "runs-filtered")
    page.fill('input[aria-label="Filter runs"]', "metrics.accuracy >>> 1")
    page.press('input[aria-label="Filter runs"]', "Enter")
    expect(page.locator('[role="alert"]')).to_contain_text("nvalid")

    # The link the mlflow client prints for a run opens its page, with a chart per metric.
    run_id = next(iter(accuracy))
    visit(page, up.url, f"/experiments/{experiment_id}/runs/{run_id}")
    page.wait_for_selector('#metric-charts [data-chart^="accuracy"] canvas')
    assert page.locator("#metric-charts canvas").count() >= 2
    assert "C" in page.locator("#params").inner_text()
    page.click('li[data-path="notes.txt"]')
    page.wait_for_selector("pre.preview")
    assert "2026-11 snapshot" in page.locator("pre.preview").inner_text()
    page.click('li[data-path="summary.json"]')
    expect(page.locator("pre.preview")).to_contain_text('"classes": 3')
    page.click('li[data-path="pixel.png"]')
    page.wait_for_selector('#artifact-preview img[alt="pixel.png"]')
    shot(page, "run-page")
    # The run's logged model opens on its own page, linked back to the run.
    page.click("#logged-models a")
    page.wait_for_selector("#logged-model")
    expect(page.locator("#logged-model")).to_contain_text(run_id)
    shot(page, "logged-model")


def test_a_drift_report_is_charted_per_column(up, ctflow_bin, page, tmp_path):
    """The report `ctflow drift` writes, logged as a run's artifact, shows as a chart of each
    column's score against its threshold and a table of the numbers."""
    import subprocess

    import numpy as np

    rng = np.random.default_rng(4)
    write = lambda path, cols: path.write_text(
        ",".join(cols) + "\n" + "\n".join(",".join(str(v) for v in row) for row in zip(*cols.values())) + "\n")
    write(tmp_path / "ref.csv", {"x": rng.normal(0, 1, 500).round(5), "y": rng.normal(0, 1, 500).round(5)})
    write(tmp_path / "cur.csv", {"x": rng.normal(1, 1, 500).round(5), "y": rng.normal(0, 1, 500).round(5)})
    out = subprocess.run([ctflow_bin, "drift", "--reference", tmp_path / "ref.csv", "--current", tmp_path / "cur.csv",
                          "--output", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    (tmp_path / "drift_report.json").write_text(out.stdout)
    mlflow.set_tracking_uri(up.url)
    experiment_id = mlflow.create_experiment("ui-drift")
    with mlflow.start_run(experiment_id=experiment_id, run_name="drift-check") as run:
        mlflow.log_artifact(str(tmp_path / "drift_report.json"))
    mlflow.set_tracking_uri(None)
    visit(page, up.url, f"/experiments/{experiment_id}/runs/{run.info.run_id}")
    page.wait_for_selector('#drift [data-chart="drift-columns"] canvas')
    expect(page.locator('#drift-columns tr[data-column="x"] .badge')).to_have_text("drift")
    expect(page.locator('#drift-columns tr[data-column="y"] .badge')).to_have_text("ok")
    # The report comes first on its run, above the metrics.
    assert page.locator("#drift").bounding_box()["y"] < page.locator("#metric-values").bounding_box()["y"]
    shot(page, "drift-report")


def test_two_runs_compare(up, experiment, page):
    experiment_id, _ = experiment
    visit(page, up.url, f"/experiments/{experiment_id}")
    boxes = page.locator("#runs tbody input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("#compare")
    page.wait_for_selector("#compare-charts canvas")
    assert page.locator('#diff tr.differs td:first-child', has_text="param: C").count() == 1
    assert page.locator("#compare-charts [data-chart]").count() == 2
    page.wait_for_selector('[data-chart="scatter"] canvas')
    page.wait_for_selector('[data-chart="parallel"] canvas')
    shot(page, "compare")


def test_approving_a_manual_gate_from_the_pipelines_page_moves_the_champion(up, page):
    install(up, "ui-iris", iris_pipeline("ui-iris", "ui-iris-model", gates="""
  gates:
    ct:
      metrics: [ { metric: accuracy, threshold: 0.5 } ]
    cd: { approval: manual, timeout: 1h }
"""))
    run_id = trigger(up, "ui-iris")["pipeline_run"]["id"]
    waiting = wait_phase(up, run_id, {"WaitingApproval"} | TERMINAL)
    assert waiting["phase"] == "WaitingApproval", waiting

    install(up, "ui-nightly", iris_pipeline("ui-nightly", "ui-nightly-model", extra_spec="""
  triggers:
    - schedule: { cron: "0 3 * * *", timezone: UTC }
"""))
    visit(page, up.url, "/pipelines")
    # ctflow up runs its controller: no hint that none runs.
    expect(page.locator("#no-controller")).to_have_count(0)
    nightly = page.locator('#pipelines tr[data-pipeline="ui-nightly"] td.next-run').inner_text()
    assert nightly.endswith("03:00:00 UTC"), nightly
    row = page.locator('#pipelines tr[data-pipeline="ui-iris"]')
    assert "WaitingApproval" in row.inner_text()
    shot(page, "pipelines")
    row.locator("a", has_text="ui-iris").first.click()
    page.wait_for_selector(f'#pipeline-runs tr[data-pipeline-run="{run_id}"]')
    page.click(f'#pipeline-runs tr[data-pipeline-run="{run_id}"] a')
    page.wait_for_selector("#approve")
    gates = page.locator("#gates").inner_text()
    assert "pass" in gates
    # The CD gate's wait in words, its deadline as a time, not JSON with epoch milliseconds.
    assert "approval manual" in gates and "rejected without an answer at" in gates, gates
    assert '"deadline"' not in gates and "{" not in gates, gates
    shot(page, "pipeline-run-waiting")
    page.fill('input[aria-label="comment"]', "looks good")
    page.click("#approve")
    page.wait_for_selector("h1 .badge.Succeeded", timeout=60_000)
    # Parts of a page that do not apply are left out, not printed as "null".
    assert "null" not in [line.strip() for line in page.locator("#app").inner_text().splitlines()]
    shot(page, "pipeline-run-approved")

    champion = MlflowClient(up.url).get_model_version_by_alias("ui-iris-model", "champion")
    visit(page, up.url, "/models/ui-iris-model")
    assert page.locator('[data-alias="champion"]').inner_text() == f"champion: v{champion.version}"
    assert "champion" in page.locator("#ledger").inner_text()
    shot(page, "model")


def test_a_model_version_page_shows_its_lineage_signature_and_uris(up, page, tmp_path):
    """MLflow's own link (#/models/NAME/versions/N) opens the version: its models:/ URIs,
    the chain version <- run <- data snapshot <- trigger <- code as `ctflow models lineage`
    prints it, the signature's input schema, the input example and the MLmodel file."""
    from support import IRIS
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IRIS / "data" / "iris.csv", data / "iris.csv")
    install(up, "ui-lineage", iris_pipeline("ui-lineage", "ui-lineage-model", f"""
  data:
    paths: [{data}/*.csv]
""", gates="  gates: { ct: { metrics: [ { metric: accuracy, threshold: 0.5 } ] } }"))
    run_id = trigger(up, "ui-lineage")["pipeline_run"]["id"]
    run = wait_phase(up, run_id, TERMINAL)
    assert run["phase"] == "Succeeded", run
    client = MlflowClient(up.url)
    client.update_model_version("ui-lineage-model", "1", description="the first iris model")
    client.set_registered_model_tag("ui-lineage-model", "owner", "ml-team")
    client.set_model_version_tag("ui-lineage-model", "1", "validated", "yes")
    snapshot = client.get_run(run["run_id"]).data.tags["ctflow.data.snapshot"]

    visit(page, up.url, "/models/ui-lineage-model")
    expect(page.locator("#model-tags")).to_contain_text("ml-team")
    expect(page.locator("#versions tbody tr").first).to_contain_text("the first iris model")
    expect(page.locator("#versions tbody tr").first).to_contain_text("validated=yes")
    page.click('#versions a[href="#/models/ui-lineage-model/versions/1"]')
    page.wait_for_selector('body[data-ready="/models/ui-lineage-model/versions/1"]')
    uris = page.locator("#model-uris").inner_text()
    assert "models:/ui-lineage-model/1" in uris and "models:/ui-lineage-model@champion" in uris, uris
    source = client.get_model_version("ui-lineage-model", "1").source
    assert f"models:/{source.split('/')[-1]}" in uris  # the logged model, by its id
    assert page.locator("#version-info a[href^='#/logged-models/m-']").count() == 1
    assert page.locator("#version-description").inner_text() == "the first iris model"
    expect(page.locator("#version-tags")).to_contain_text("validated")
    assert page.locator('h1 [data-alias="champion"]').count() == 1
    data_step = page.locator("#lineage-data").inner_text()
    assert f"snapshot {snapshot} (1 files, 150 rows)" in data_step and "iris.csv" in data_step, data_step
    assert "manual" in page.locator("#lineage-trigger").inner_text()
    assert run_id[:12] in page.locator("#lineage-trigger").inner_text()
    code = page.locator("#lineage-code").inner_text()
    assert "entry point main" in code and "C=0.5" in code, code
    # The example logs its features as a float64 matrix: a tensor signature.
    inputs = page.locator("#signature-inputs tbody tr").all_inner_texts()
    assert inputs == ["(unnamed)\ttensor float64 [-1,4]\tyes"], inputs
    assert page.locator("#signature-outputs tbody tr").count() == 1
    example = json.loads(page.locator("#input-example").inner_text())
    assert len(example) == 5 and len(example[0]) == 4, example
    assert "flavors:" in page.locator("#mlmodel").inner_text()
    shot(page, "model-version")

    # A version registered by hand, from a run with no data snapshot and no pipeline.
    import mlflow
    from sklearn.linear_model import LogisticRegression
    mlflow.set_tracking_uri(up.url)
    try:
        # NB: an experiment of its own; another module may have left mlflow's active one set.
        with mlflow.start_run(experiment_id=client.create_experiment("ui-plain")) as plain:
            fitted = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
            mlflow.sklearn.log_model(fitted, name="model", registered_model_name="ui-plain-model")
    finally:
        mlflow.set_tracking_uri(None)
    visit(page, up.url, "/models/ui-plain-model/versions/1")
    assert page.locator("#lineage li").count() == 3  # run, data (not recorded), code
    assert "not recorded" in page.locator("#lineage-data").inner_text()
    assert plain.info.run_id in page.locator("#version-info").inner_text()


@pytest.fixture(scope="module")
def auth_server(ctflow_bin, tmp_path_factory):
    """A server with --auth: the admin, alice, and an experiment alice may not see."""
    import subprocess

    from mlflow.server.auth.client import AuthServiceClient

    from support import CtflowServer

    workdir = str(tmp_path_factory.mktemp("ui-auth"))
    uri = f"sqlite:///{workdir}/ctflow.db"
    created = subprocess.run([ctflow_bin, "users", "create-admin", "--username", "admin", "--password-stdin",
                              "--backend-store-uri", uri], input="admin-password-1\n", capture_output=True,
                             text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    srv = CtflowServer(ctflow_bin, uri, workdir, extra=["--auth"])
    admin_env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "admin-password-1"}
    saved = {k: os.environ.get(k) for k in admin_env}
    os.environ.update(admin_env)
    try:
        AuthServiceClient(srv.url).create_user("alice", "alice-password-1")
        client = MlflowClient(srv.url)
        client.create_experiment("open-to-alice")
        hidden = client.create_experiment("hidden-from-alice")
        AuthServiceClient(srv.url).grant_user_permission("alice", "experiment", hidden, "NO_PERMISSIONS")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield srv
    srv.stop()


def test_signing_in_to_the_dashboard_shows_what_the_user_may_read(auth_server, page):
    visit(page, auth_server.url, "/experiments")
    form = page.locator("form.signin")
    expect(form).to_be_visible()
    # A wrong password is refused on the page, with the server's reason.
    form.locator("input[name=username]").fill("alice")
    form.locator("input[name=password]").fill("not-her-password")
    form.locator("button[type=submit]").click()
    expect(form.locator("[role=alert]")).to_have_text("Incorrect username or password")

    form.locator("input[name=password]").fill("alice-password-1")
    form.locator("button[type=submit]").click()
    expect(page.locator("header .session .user")).to_have_text("alice")
    table = page.locator("table")
    expect(table.get_by_text("open-to-alice")).to_be_visible()
    expect(table.get_by_text("hidden-from-alice")).to_have_count(0)
    shot(page, "signed-in")

    # The session is an HttpOnly, SameSite=Strict cookie ...
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["ctflow_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    # ... that signs reads, and writes only with the dashboard's header (a cross-site form
    # cannot send one).
    reads = page.request.get(f"{auth_server.url}/api/2.0/mlflow/experiments/search?max_results=10")
    assert reads.status == 200
    names = [e["name"] for e in reads.json()["experiments"]]
    assert "open-to-alice" in names and "hidden-from-alice" not in names
    forged = page.request.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create",
                               data={"name": "forged"})
    assert forged.status == 403 and forged.json()["error_code"] == "PERMISSION_DENIED"
    created = page.request.post(f"{auth_server.url}/api/2.0/mlflow/experiments/create",
                                data={"name": "alice-from-the-dashboard"},
                                headers={"X-Ctflow-Dashboard": "1"})
    assert created.status == 200, created.text()
    # Without a session a dashboard call gets 401 without the Basic challenge, so the
    # browser shows this page's form instead of its own prompt.
    anonymous = page.context.browser.new_context()
    try:
        bare = anonymous.request.get(f"{auth_server.url}/api/2.0/mlflow/experiments/search",
                                     headers={"X-Ctflow-Dashboard": "1"})
        assert bare.status == 401 and "www-authenticate" not in bare.headers
    finally:
        anonymous.close()

    page.locator("header .session button").click()
    expect(form).to_be_visible()
    expect(form).to_contain_text("You are signed out.")
    # The browser drops the cookie (Max-Age=0) or keeps it empty.
    assert not any(c["name"] == "ctflow_session" and c["value"] for c in page.context.cookies())
    # The signed-out token no longer works, even if a copy was kept.
    stale = page.request.get(f"{auth_server.url}/api/2.0/mlflow/experiments/search",
                             headers={"Cookie": f"ctflow_session={session['value']}"})
    assert stale.status == 401
    visit(page, auth_server.url, "/experiments")
    expect(page.locator("form.signin")).to_be_visible()


def test_the_live_view_shows_what_the_served_model_sees(up, page, tmp_path):
    """A served pipeline's live view: the monitor's numbers per version (live metrics,
    traffic, latency, labels), charted over time, the drift checks of its served inputs and
    the retrains live quality started. The numbers here are recorded through MLflow's API
    as the monitor records them (the monitor itself is tested in test_monitoring.py)."""
    import time

    from support import api, free_port, sleeper_pipeline, sleeper_project

    log = tmp_path / "served"
    install(up, "live-ui", sleeper_pipeline("live-ui", sleeper_project(tmp_path), seconds=0.1, extra_spec=f"""
  model: {{ name: live-ui-model }}
  triggers:
    - performance: {{ metric: accuracy, below: 0.9, window: 1h, minLabels: 10 }}
    - drift: {{ reference: ref.csv, current: {{ served: live-ui }} }}
  monitoring: {{ metrics: [accuracy, f1], window: 1h, interval: 1m }}
  promotion:
    serving: {{ port: {free_port()}, log: {{ path: {log} }} }}
"""))
    client = MlflowClient(up.url)
    now = int(time.time() * 1000)
    monitoring = client.create_experiment("live-ui-monitoring")
    for version, accuracy in [("1", [0.97, 0.95, 0.6]), ("2", [0.93, 0.94, 0.96])]:
        run = client.create_run(monitoring, run_name=f"live-live-ui-model-v{version}", tags={
            "ctflow.pipeline": "live-ui", "ctflow.monitoring.model": "live-ui-model",
            "ctflow.monitoring.version": version})
        for i, value in enumerate(accuracy):
            t = now - (len(accuracy) - i) * 60_000
            for key, v in [("live_accuracy", value), ("live_f1", value - 0.01), ("live_requests", 100 + i),
                           ("live_labelled", 40 + i), ("live_latency_p50_ms", 3.5), ("live_latency_p99_ms", 12.25),
                           ("feedback_unmatched", 2)]:
                client.log_metric(run.info.run_id, key, v, timestamp=t, step=t // 1000)
    drift = client.create_experiment("live-ui-drift")
    for shifted in (False, True):
        run = client.create_run(drift, tags={"ctflow.drift.dataset_drift": "true" if shifted else "false"})
        client.log_metric(run.info.run_id, "drift.share", 0.75 if shifted else 0.0)
        client.set_terminated(run.info.run_id)
    status, recorded = api(up.url, "/api/ctflow/v1/pipelines/live-ui/performance-events", {
        "triggerIndex": 0, "metric": "accuracy", "value": 0.6, "below": 0.9, "version": "1", "labels": 42,
        "windowMs": 3_600_000, "detectedAt": now})
    assert status == 200, recorded

    visit(page, up.url, "/pipelines/live-ui")
    page.click("#live-link")
    page.wait_for_selector('body[data-ready="/pipelines/live-ui/live"]')
    expect(page.locator('#live-versions tr[data-version="1"] td[data-metric="accuracy"]')).to_have_text("0.6")
    expect(page.locator('#live-versions tr[data-version="2"] td[data-metric="f1"]')).to_have_text("0.95")
    assert "12.25" in page.locator('#live-versions tr[data-version="2"]').inner_text()
    page.wait_for_selector('#live-charts [data-chart="live_accuracy"] canvas')
    page.wait_for_selector('#live-charts [data-chart="live_latency_p99_ms"] canvas')
    page.wait_for_selector('#live-charts [data-chart="drift share of served inputs"] canvas')
    assert page.locator("#live-drift .badge.drift").count() == 1
    assert "accuracy = 0.6 on v1 (42 labels)" in page.locator("#live-retrains").inner_text()
    assert "performance: accuracy below 0.9 over 1h (min 10 labels)" in page.locator("#live-serving").inner_text()
    shot(page, "live-view")


# A report whose script would mark the dashboard (and itself) if it ever ran.
HOSTILE_REPORT = """<!doctype html><html><body>
<p id="visible">report body</p><p id="ran"></p>
<script>
document.getElementById("ran").textContent = "script ran";
try { parent.document.body.dataset.pwned = "1"; } catch (e) {}
</script></body></html>"""


@pytest.fixture(scope="module")
def family(up, tmp_path_factory):
    """A parent run with a nested child that has a description, a dataset, a one-value
    metric, a series, an HTML report and a model folder registered as a version; and a
    failed run beside them."""
    import pandas as pd

    files = tmp_path_factory.mktemp("family")
    (files / "report.html").write_text(HOSTILE_REPORT)
    model = files / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "weights.bin").write_bytes(bytes(range(256)) * 4)
    mlflow.set_tracking_uri(up.url)
    client = MlflowClient(up.url)
    experiment_id = client.create_experiment("ui-family")
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name="sweep") as parent:
            mlflow.set_tag("team", "vision")
            with mlflow.start_run(experiment_id=experiment_id, run_name="trial-1", nested=True) as child:
                mlflow.set_tag("mlflow.note.content", "Trained on the November snapshot.")
                mlflow.set_tag("team", "vision")
                frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
                mlflow.log_input(mlflow.data.from_pandas(frame, name="iris-train"), context="training")
                mlflow.log_metric("test_auc", 0.91)
                for step in range(6):
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                mlflow.log_artifact(str(files / "report.html"))
                mlflow.log_artifacts(str(model), artifact_path="model")
        with mlflow.start_run(experiment_id=experiment_id, run_name="broken") as failed:
            mlflow.log_metric("test_auc", 0.4)
        client.set_terminated(failed.info.run_id, status="FAILED")
    finally:
        mlflow.set_tracking_uri(None)
    client.create_registered_model("ui-family-model")
    client.create_model_version("ui-family-model", f"runs:/{child.info.run_id}/model", run_id=child.info.run_id)
    return {"experiment": experiment_id, "parent": parent.info.run_id, "child": child.info.run_id,
            "failed": failed.info.run_id, "model": model}


def test_a_run_page_tables_values_charts_series_and_shows_where_the_run_came_from(up, family, page, tmp_path):
    visit(page, up.url, f"/experiments/{family['experiment']}/runs/{family['child']}")
    # A metric logged once is a row of the values table, not a one-dot chart.
    expect(page.locator('#metric-table tr[data-metric="test_auc"] td:nth-child(2)')).to_have_text("0.91")
    assert page.locator('#metric-charts [data-chart="test_auc"]').count() == 0
    page.wait_for_selector('#metric-charts [data-chart="loss"] canvas')
    expect(page.locator("#run-description")).to_have_text("Trained on the November snapshot.")
    expect(page.locator("#parent-run a")).to_have_text("sweep")
    expect(page.locator("#run-datasets")).to_contain_text("iris-train")
    expect(page.locator("#run-datasets")).to_contain_text("training")
    expect(page.locator("#run-versions a")).to_have_text("ui-family-model v1")
    assert page.locator("#run-info").inner_text().count("UTC") >= 1
    # Smoothing, the x axis and the log scale redraw the charts; the legend stays in its card.
    page.fill('input[aria-label="smoothing"]', "0.6")
    page.dispatch_event('input[aria-label="smoothing"]', "change")
    expect(page.locator('#metric-charts [data-chart="loss"] .u-legend')).to_contain_text("smoothed 0.6")
    page.select_option('select[aria-label="x axis"]', "relative")
    expect(page.locator('#metric-charts [data-chart="loss"] .u-axis').first).to_be_visible()
    expect(page.locator('#metric-charts [data-chart="loss"] .u-legend')).to_contain_text("seconds")
    page.check('input[aria-label="log scale"]')
    page.wait_for_selector('#metric-charts [data-chart="loss"] canvas')
    card = page.locator('#metric-charts [data-chart="loss"]').bounding_box()
    legend = page.locator('#metric-charts [data-chart="loss"] .u-legend').bounding_box()
    assert legend["x"] + legend["width"] <= card["x"] + card["width"] + 1, (legend, card)
    shot(page, "run-page-values-and-series")

    # The HTML report renders in a sandboxed frame, and its script runs neither there nor
    # against the dashboard.
    page.click('li[data-path="report.html"] .name')
    frame = page.locator("iframe.report")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.report").locator("#visible")).to_have_text("report body")
    expect(page.frame_locator("iframe.report").locator("#ran")).to_have_text("")
    assert page.locator("body").get_attribute("data-pwned") is None
    expect(page.locator('li[data-path="report.html"]')).to_have_class("file selected")
    shot(page, "run-page-html-report")

    # Folders open and close; a file and a whole folder download.
    page.click('li[data-path="model"] .name')
    expect(page.locator('li[data-path="model/weights.bin"]')).to_be_visible()
    page.click('li[data-path="model"] .name')
    expect(page.locator('li[data-path="model/weights.bin"]')).to_have_count(0)
    with page.expect_download() as download:
        page.click('a[aria-label="download report.html"]')
    saved = tmp_path / "report.html"
    download.value.save_as(saved)
    assert saved.read_text() == HOSTILE_REPORT
    with page.expect_download() as download:
        page.click('button[aria-label="download model"]')
    assert download.value.suggested_filename == "model.zip"
    archive = tmp_path / "model.zip"
    download.value.save_as(archive)
    import zipfile

    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None  # every member's CRC checks out
        assert sorted(z.namelist()) == ["model/MLmodel", "model/weights.bin"]
        assert z.read("model/weights.bin") == (family["model"] / "weights.bin").read_bytes()


def test_the_runs_table_shows_status_groups_nesting_and_keeps_its_view_in_the_address(up, family, page):
    experiment_id = family["experiment"]
    visit(page, up.url, f"/experiments/{experiment_id}")
    expect(page.locator(f'#runs tr[data-run="{family["failed"]}"] .badge')).to_have_text("FAILED")
    assert page.locator('#runs th[data-group="Metrics"]').count() == 1
    assert page.locator('#runs th[data-group="Tags"]').count() == 1
    # The child is folded under its parent until opened.
    expect(page.locator(f'#runs tr[data-run="{family["child"]}"]')).to_have_count(0)
    page.click('#runs button.expander')
    child = page.locator(f'#runs tr[data-run="{family["child"]}"]')
    expect(child).to_have_attribute("data-depth", "1")
    # Registered versions by name, datasets by name.
    expect(child).to_contain_text("ui-family-model v1")
    expect(child).to_contain_text("iris-train")
    expect(page.locator("#runs-count")).to_have_text("runs 1-3 of 3")
    # Any tag can be a column; the choice, the filter and the order go into the address.
    page.click("details.columns summary")
    page.check('details.columns input[data-column="tags:team"]')
    expect(page.locator('#runs th[data-column="tags:team"]')).to_have_count(1)
    page.click('th[data-column="metrics:test_auc"]')
    page.wait_for_selector('th.sorted-desc[data-column="metrics:test_auc"]')
    page.fill('input[aria-label="Filter runs"]', "metrics.test_auc > 0.5")
    page.press('input[aria-label="Filter runs"]', "Enter")
    expect(page.locator("#runs-count")).to_have_text("runs 1-1 of 1 matching the filter")
    page.select_option("#chart-metric", "test_auc")
    page.wait_for_selector('[data-chart="runs:test_auc"] canvas')
    address = page.url
    assert "filter=metrics.test_auc" in address and "order=metrics%3Adesc%3Atest_auc" in address, address
    assert "tags%3Ateam" in address and "chart=test_auc" in address, address
    shot(page, "runs-table-view")

    # The same address in a new page shows the same view.
    page.goto("about:blank")
    page.goto(address)
    expect(page.locator("#runs-count")).to_have_text("runs 1-1 of 1 matching the filter")
    expect(page.locator('input[aria-label="Filter runs"]')).to_have_value("metrics.test_auc > 0.5")
    expect(page.locator('#runs th[data-column="tags:team"]')).to_have_count(1)
    expect(page.locator('th.sorted-desc[data-column="metrics:test_auc"]')).to_have_count(1)
    page.wait_for_selector('[data-chart="runs:test_auc"] canvas')


def test_mlflows_compare_link_opens_the_comparison(up, experiment, page):
    from urllib.parse import quote

    experiment_id, accuracy = experiment
    ids = list(accuracy)[:6]
    link = f"/compare-runs?runs={quote(json.dumps(ids))}&experiments={quote(json.dumps([experiment_id]))}"
    page.goto(f"{up.url}/#{link}")
    page.wait_for_selector("#compare-charts canvas")
    expect(page.locator("h1")).to_have_text("Comparing 6 runs")
    # Only the rows that differ, on request.
    same = page.locator("#diff tbody tr.same")
    page.check("#only-differences")
    for i in range(same.count()):
        expect(same.nth(i)).to_be_hidden()
    expect(page.locator("#diff tbody tr.differs").first).to_be_visible()
    # Each scatter point is its run, by colour and name.
    page.wait_for_selector('[data-chart="scatter"] canvas')
    legend = page.locator('[data-chart="scatter"] .u-legend').inner_text()
    assert all(name in legend for name in [f"run-{i:02d}" for i in range(6)]), legend
    # Parallel coordinates fit the page.
    box = page.locator('[data-chart="parallel"]').bounding_box()
    assert box["x"] + box["width"] <= 1400, box
    shot(page, "compare-mlflow-link")


def test_the_dashboard_follows_the_systems_dark_mode(up, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="dark")
    page = context.new_page()
    try:
        visit(page, up.url, "/experiments")
        expect(page.locator("body")).to_have_css("background-color", "rgb(15, 20, 32)")
        expect(page.locator("#loading")).to_be_hidden()
        shot(page, "experiments-dark")
    finally:
        context.close()


def test_a_bare_server_says_no_controller_runs_and_pipelines_show_their_spec_and_trigger(ctflow_bin, tmp_path, page):
    """`ctflow server` alone runs no controller: the pipelines pages say so (a triggered run
    would otherwise sit in Pending without a word). Each pipeline has a Trigger button and its
    spec as YAML, which reads back as the stored document."""
    import yaml

    from support.ct import api

    server = CtflowServer(ctflow_bin, f"sqlite:///{tmp_path}/ctflow.db", str(tmp_path))
    try:
        document = {"apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": "bare"},
                    "spec": {"project": {"uri": "/nowhere", "parameters": {"C": "0.5", "note": "yes: no"}},
                             "triggers": [{"schedule": {"cron": "*/5 * * * *", "timezone": "Europe/Paris"}}],
                             "model": {"name": "bare-model"}}}
        status, body = api(server.url, "/api/ctflow/v1/pipelines/bare", document, method="PUT")
        assert status == 200, body
        stored = api(server.url, "/api/ctflow/v1/pipelines/bare")[1]["pipeline"]["document"]

        visit(page, server.url, "/pipelines")
        expect(page.locator("#no-controller")).to_contain_text("No controller is running")
        expect(page.locator('#pipelines tr[data-pipeline="bare"]')).to_contain_text("Europe/Paris")
        page.on("dialog", lambda dialog: dialog.accept())
        page.click('#pipelines button[aria-label="trigger bare"]')
        page.wait_for_selector('body[data-ready^="/pipeline-runs/"]')
        expect(page.locator("h1 .badge")).to_have_text("Pending")
        expect(page.locator("#no-controller")).to_contain_text("ctflow up")
        shot(page, "pipeline-run-no-controller")
        runs = api(server.url, "/api/ctflow/v1/pipelines/bare/runs")[1]["pipeline_runs"]
        assert [r["trigger"]["kind"] for r in runs] == ["manual"], runs

        visit(page, server.url, "/pipelines/bare")
        page.click("#pipeline-spec summary")
        spec_text = page.locator("#pipeline-spec pre").inner_text()
        assert yaml.safe_load(spec_text) == stored, spec_text
        expect(page.locator("#pipeline-triggers")).to_contain_text("schedule */5 * * * * (Europe/Paris)")
        shot(page, "pipeline-spec")
    finally:
        server.stop()
