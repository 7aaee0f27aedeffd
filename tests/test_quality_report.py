"""Drift checks (test, p-value, alert only past both thresholds), the HTML report and its page, `/metrics` in
Prometheus format, and the report and drift commands."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.conftest import write_workspace
from tests.test_monitoring import NOW, turn
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.monitoring.drift import drift_between_periods, drift_between_versions, two_proportions
from cxstack.monitoring.report import build_report, report_html
from cxstack.store.outcomes import OUTCOMES
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.models import MonitoringSettings
from cxstack.workspace.workspace import Workspace


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> SqlAlchemyStore:
    return SqlAlchemyStore(
        request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return load_workspace(write_workspace(tmp_path / "ws"))


def week(store: SqlAlchemyStore, start_days_ago: float, count: int, escalate_every: int, intents: list[str],
         version: str = "wsv-1") -> None:  # fmt: skip
    for index in range(count):
        at = NOW - timedelta(days=start_days_ago - (index % 6) * 0.9)
        escalated = escalate_every and index % escalate_every == 0
        turn(
            store, f"w{start_days_ago}-{index}", at, intent=intents[index % len(intents)],
            outcome="escalated" if escalated else "automated", version=version,
        )  # fmt: skip


def test_the_two_proportion_test_equals_the_uncorrected_chi_square() -> None:
    from scipy.stats import chi2_contingency

    z, p = two_proportions(40, 200, 70, 200)
    statistic, chi2_p, _, _ = chi2_contingency([[40, 160], [70, 130]], correction=False)
    assert z * z == pytest.approx(statistic, abs=1e-9)
    assert p == pytest.approx(chi2_p, abs=1e-9)


def test_a_real_shift_alerts_and_noise_does_not(store: SqlAlchemyStore) -> None:
    week(store, 13.5, 200, escalate_every=10, intents=["order_status", "refund"])  # 10 % escalated
    week(store, 6.5, 200, escalate_every=3, intents=["order_status", "refund", "cancel"])  # 34 %, new intent
    report = drift_between_periods(store, MonitoringSettings(), days=7, now=NOW)
    checks = {c.metric: c for c in report.checks}
    escalation = checks["escalation_rate"]
    assert escalation.alert and escalation.p is not None and escalation.p < 1e-6
    assert escalation.test == "z, two proportions"
    assert escalation.change == pytest.approx(0.34 - 0.10, abs=0.01)
    assert checks["intent_mix"].alert and checks["intent_mix"].test.startswith("chi-square")
    assert not checks["quality"].alert and checks["quality"].note.startswith("insufficient")
    assert {c.metric for c in report.alerts} == {"escalation_rate", "intent_mix"}


def test_the_same_behaviour_twice_does_not_alert(store: SqlAlchemyStore) -> None:
    week(store, 13.5, 150, escalate_every=5, intents=["order_status", "refund"], version="a")
    week(store, 6.5, 150, escalate_every=5, intents=["order_status", "refund"], version="b")
    assert drift_between_periods(store, MonitoringSettings(), days=7, now=NOW).alerts == []
    by_version = drift_between_versions(store, MonitoringSettings(), "a", "b", now=NOW)
    assert by_version.alerts == [] and by_version.before == "version a"


def test_too_little_data_is_insufficient_never_an_alert(store: SqlAlchemyStore) -> None:
    week(store, 13.5, 5, escalate_every=0, intents=["order_status"])
    week(store, 6.5, 5, escalate_every=1, intents=["refund"])
    checks = drift_between_periods(store, MonitoringSettings(), days=7, now=NOW).checks
    assert all(not c.alert and c.note.startswith("insufficient") for c in checks)


def test_the_report_pairs_automation_with_quality_and_fetches_nothing(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    week(store, 6.5, 60, escalate_every=4, intents=["order_status", "refund"])
    with store.engine.begin() as connection:  # half the conversations reviewed (π = 0.5), most passed
        connection.execute(
            update(OUTCOMES).values(offered_at=NOW, sample_pi=0.5, sampled=True, reviews=1, human_quality=1.0)
        )
    report = build_report(store, workspace, days=14, now=NOW)
    page = report_html(report)
    assert "<svg" in page and "polyline" in page and "polygon" in page  # lines and interval bands
    assert not re.search(r"(src|href)=\"https?://", page) and "<script" not in page
    for row in report.by_intent.rows:
        assert row.quality.value is not None or "insufficient" in page
    assert "automation" in report.summary()[1] and "quality" in report.summary()[1]
    assert report.overall.overall.quality.method == "human"


def test_the_report_and_drift_commands(tmp_path: Path) -> None:
    from cxstack.app import Settings, open_store

    home = tmp_path / "home"
    root = write_workspace(tmp_path / "ws")
    store = open_store(Settings(home=home))
    assert isinstance(store, SqlAlchemyStore)
    week(store, 13.5, 200, escalate_every=10, intents=["order_status", "refund"])
    week(store, 6.5, 200, escalate_every=3, intents=["order_status", "refund"])
    out = tmp_path / "report.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", "-w", str(root), "--html", str(out), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html>") and "automation" in result.output
    drift = runner.invoke(app, ["drift", str(root), "--home", str(home), "--json"])
    # the last week is measured up to now, not NOW: the stored weeks lie further back, so nothing to compare
    assert drift.exit_code in (0, 1) and '"checks"' in drift.output
    costs = runner.invoke(app, ["report", "costs", str(root), "--home", str(home)])
    assert costs.exit_code == 0, costs.output


# ---- the web app -------------------------------------------------------------------------------------------


def test_metrics_endpoint_speaks_prometheus_and_needs_a_key(api_client: Any) -> None:
    client, keys, say = api_client
    say("p1", "where is my order ORD-1?")
    say("p2", "I will sue you")
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    viewer = {"Authorization": f"Bearer {keys['viewer']}"}
    response = client.get("/metrics", headers=viewer)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    turns = sum(float(v) for v in re.findall(r"^cxstack_turns_total\{[^}]*\} (\S+)$", text, re.M))
    assert turns >= 2
    assert re.search(r'^cxstack_escalations_total\{reason="[^"]+"\} 1\.0$', text, re.M)
    assert 'cxstack_layer_seconds_bucket{layer="orchestration"' in text
    assert "cxstack_outbox_items" in text and "cxstack_review_queue" in text
    assert 'cxstack_rate_7d{bound="estimate",method="wilson",metric="automation"}' in text
    # no reviews: the quality gauge is there, as NaN, beside automation
    assert 'cxstack_rate_7d{bound="estimate",method="insufficient",metric="quality"} NaN' in text
    assert "cxstack_drift_alert" in text
    again = client.get("/metrics", headers=viewer).text  # counted once, not again at the next scrape
    assert sum(float(v) for v in re.findall(r"^cxstack_turns_total\{[^}]*\} (\S+)$", again, re.M)) == turns


def test_the_quality_page_shows_the_report(api_client: Any) -> None:
    client, keys, say = api_client
    say("q1", "where is my order ORD-1?")
    page = client.get("/quality", headers={"Authorization": ""})
    assert page.status_code == 200 and "/static/quality.js" in page.text and 'sandbox=""' in page.text
    report = client.get("/v1/report", headers={"Authorization": f"Bearer {keys['viewer']}"})
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in report.headers["content-security-policy"]
    assert "Quality report" in report.text
    assert (
        client.get("/v1/report", headers={"Authorization": f"Bearer {keys['integration']}"}).status_code
        == 403
    )


@pytest.fixture
def api_client(tmp_path: Path, backoffice: tuple[str, Any]) -> Any:
    from cxstack.api.app import create_api
    from cxstack.app import Settings, build
    from cxstack.testing.authz import make_role_keys

    settings = Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0])
    cx = build(settings, workspace=load_workspace(write_workspace(tmp_path / "ws")))
    api = create_api(cx)
    keys = make_role_keys(cx.store)
    with TestClient(api, headers={"Authorization": f"Bearer {keys['admin']}"}) as client:

        def say(conversation: str, text: str) -> None:
            body = {"text": text, "customer": {"id": "cus_1", "plan": "basic", "arr": 10}}
            response = client.post(f"/v1/conversations/{conversation}/messages?wait=true", json=body)
            assert response.status_code == 202, response.text

        yield client, keys, say
