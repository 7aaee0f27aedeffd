"""Experiments on any layer: variants as overrides of the workspace, validated like the files; sticky
assignment by hashing; each turn on its variant's workspace, with the exposure in its trace."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.conftest import SHOP, start_shop, write_workspace

from cxstack.domain.models import Conversation, ConversationId, CustomerId
from cxstack.optimization.experiments import assign, bucket_of, choose, edited_after_start
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.models import ExperimentConfig
from cxstack.workspace.validate import validate_workspace
from cxstack.workspace.variants import OverrideError, apply_overrides

SHOP_SETTINGS = SHOP["cxstack.yaml"]

CAP_TEST = """\
version: 1
experiments:
  - id: refund-cap
    status: running
    unit: conversation
    variants:
      control: {}
      cap_200:
        strategy.rules.refund-cap.then.cap_amount: 200
        strategy.rules.big-refunds-to-people.when.amount_gt: 200
    allocation: {control: 0.5, cap_200: 0.5}
    primary_metric: automation_rate
    guardrails: [{metric: quality_rate, max_drop: 0.03}]
"""


def conversation(cid: str, created: datetime | None = None) -> Conversation:
    return Conversation(
        id=ConversationId(cid),
        customer_id=CustomerId(f"cus_{cid}"),
        channel="api",
        created_at=created or datetime.now(UTC),
    )


def test_assignment_is_sticky_uniform_and_independent_across_salts() -> None:
    assert bucket_of("conv-1", "exp") == bucket_of("conv-1", "exp")
    buckets = [bucket_of(f"conv-{i}", "exp") for i in range(4000)]
    assert all(0 <= b < 1 for b in buckets) and abs(statistics.mean(buckets) - 0.5) < 0.02
    shares = [choose({"a": 0.2, "b": 0.3, "c": 0.5}, b) for b in buckets]
    assert abs(shares.count("a") / 4000 - 0.2) < 0.03 and abs(shares.count("c") / 4000 - 0.5) < 0.03
    other = [bucket_of(f"conv-{i}", "another-salt") for i in range(4000)]
    assert abs(statistics.correlation(buckets, other)) < 0.05  # a second experiment splits independently


def test_only_running_experiments_enrol_conversations_that_start_in_their_window() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    base = {"id": "e", "variants": {"control": {}, "b": {}}, "allocation": {"control": 0.5, "b": 0.5}}
    running = ExperimentConfig.model_validate({**base, "status": "running", "start": start})
    draft = ExperimentConfig.model_validate({**base, "id": "d", "status": "draft"})
    later = start + timedelta(days=1)
    assert [a.experiment for a in assign([running, draft], conversation("c", later), "cus", later)] == ["e"]
    assert assign([running], conversation("c", start - timedelta(hours=1)), "cus", later) == []
    stopped = running.model_copy(update={"stop": later})
    assert assign([stopped], conversation("c", start), "cus", later + timedelta(seconds=1)) == []
    by_customer = running.model_copy(update={"unit": "customer"})
    first = assign([by_customer], conversation("c1", later), "cus_same", later)[0]
    second = assign([by_customer], conversation("c2", later), "cus_same", later)[0]
    assert first.variant == second.variant and first.unit == "cus_same"


def test_overrides_reach_any_layer_and_give_a_version_of_their_own(shop_path: Path) -> None:
    ws = load_workspace(shop_path)
    variant = apply_overrides(
        ws,
        {
            "settings.thresholds.route_min_confidence": 0.5,
            "strategy.rules.refund-cap.then.cap_amount": 200,
            "intents.order_status.mechanism": "human",
            "facts.return-window.text": "You can return any item within 60 days of delivery.",
        },
    )
    assert variant.settings.thresholds.route_min_confidence == 0.5
    cap = next(r for r in variant.strategy.rules if r.id == "refund-cap")
    assert cap.then.cap_amount == 200
    assert variant.intent("order_status").mechanism == "human"  # type: ignore[union-attr]
    assert "60 days" in variant.fact("return-window").text  # type: ignore[union-attr]
    assert variant.version != ws.version and apply_overrides(ws, {}).version == ws.version
    assert ws.settings.thresholds.route_min_confidence != 0.5  # the base is untouched
    for bad, said in [
        ("strategy.rules.no-such-rule.then.cap_amount", "no item `no-such-rule`"),
        ("knowledge.return-window.text", "a path starts with one of"),
        ("intents.order_status.examples", "router is trained once"),
    ]:
        with pytest.raises(OverrideError, match=said):
            apply_overrides(ws, {bad: 1})
    with pytest.raises(ValidationError):
        apply_overrides(ws, {"settings.thresholds.route_min_confidence": "very"})


def experiments_file(text: str) -> dict[str, str]:
    return {"experiments.yaml": text}


def errors(root: Path) -> list[str]:
    return [p.format() for p in validate_workspace(root) if p.severity == "error"]


def test_validation_refuses_what_cannot_run(tmp_path: Path) -> None:
    assert errors(write_workspace(tmp_path / "ok", **experiments_file(CAP_TEST))) == []
    uneven = CAP_TEST.replace("cap_200: 0.5}", "cap_200: 0.6}")
    assert any(
        "allocation sums to 1.1, not 1" in e
        for e in errors(write_workspace(tmp_path / "a", **experiments_file(uneven)))
    )
    broken = CAP_TEST.replace("then.cap_amount: 200", "then.cap_amonut: 200")
    [problem] = errors(write_workspace(tmp_path / "b", **experiments_file(broken)))
    assert "variant `cap_200` would not validate" in problem and "cap_amonut" in problem
    overlapping = CAP_TEST + CAP_TEST.split("experiments:\n", 1)[1].replace("id: refund-cap", "id: cap-again")
    clashes = errors(write_workspace(tmp_path / "c", **experiments_file(overlapping)))
    assert len(clashes) == 2
    assert all("running experiments `refund-cap` and `cap-again` both change" in c for c in clashes)
    no_control = CAP_TEST.replace("unit: conversation", "unit: conversation\n    control: baseline")
    assert any(
        "control `baseline` is not a variant" in e
        for e in errors(write_workspace(tmp_path / "d", **experiments_file(no_control)))
    )


def test_an_experiment_edited_after_it_started_is_refused() -> None:
    running = {"id": "e", "status": "running", "variants": {"control": {}, "b": {}}, "salt": ""}
    earlier = [{"experiments": {"experiments": [{**running, "allocation": {"control": 0.5, "b": 0.5}}]}}]
    same = ExperimentConfig.model_validate({**running, "allocation": {"control": 0.5, "b": 0.5}})
    assert edited_after_start([same], earlier) == []
    moved = ExperimentConfig.model_validate({**running, "allocation": {"control": 0.2, "b": 0.8}})
    [problem] = edited_after_start([moved], earlier)
    assert "changed its allocation after it started" in problem
    new_id = ExperimentConfig.model_validate(
        {**running, "id": "e2", "allocation": {"control": 0.2, "b": 0.8}}
    )
    assert edited_after_start([new_id], earlier) == []  # a new experiment, not an edit


async def test_each_turn_runs_on_its_variants_workspace_and_the_trace_records_the_exposure(
    tmp_path: Path, backoffice: tuple[str, Any], running: list[Any]
) -> None:
    variant_fact = CAP_TEST.replace(
        "        strategy.rules.big-refunds-to-people.when.amount_gt: 200\n",
        "        strategy.rules.big-refunds-to-people.when.amount_gt: 200\n"
        '        facts.return-window.text: "Our return policy: you can return any item within 60 days of '
        'delivery for a full refund."\n',
    )
    cx = await start_shop(tmp_path, backoffice[0], running, **experiments_file(variant_fact))
    arms: dict[str, list[Any]] = {"refund-cap:control": [], "refund-cap:cap_200": []}
    for i in range(24):
        cid = f"exp-{i}"
        text = "please refund $150 for ORD-10006" if i % 2 else "what is your return policy"
        await cx.post_message(cid, text, customer_id="cus_sam", verified=True)
        await cx.wait_idle(cid)
        await cx.post_message(cid, "thanks", customer_id="cus_sam", verified=True)
        await cx.wait_idle(cid)
        traces = cx.conversation_view(cid).traces
        assert len({t.variant for t in traces}) == 1  # sticky within the conversation
        arms[traces[0].variant].append(traces[0])
    assert all({t.intent for t in a} == {"refund_request", "return_policy"} for a in arms.values()), arms
    for trace in arms["refund-cap:control"]:
        assert trace.workspace_version == cx.workspace.version
        if trace.intent == "refund_request":
            assert trace.outcome == "escalated"  # over the $100 cap: a person
        else:
            assert "30 days" in (trace.reply or "")
    for trace in arms["refund-cap:cap_200"]:
        assert trace.workspace_version != cx.workspace.version  # the variant's own version
        assert cx.store.get_workspace_version(trace.workspace_version) is not None  # readable back
        [exposure] = [s for s in trace.steps if s.name == "experiment"]
        [assigned] = exposure.output["assignments"]
        assert assigned["experiment"] == "refund-cap" and assigned["variant"] == "cap_200"
        if trace.intent == "refund_request":
            assert trace.outcome != "escalated"  # under the variant's $200 cap
        else:
            assert "60 days" in (trace.reply or "")  # the variant's fact, from its own index


def test_the_demo_experiment_validates_when_started(tmp_path: Path) -> None:
    import shutil

    from cxstack.demo import demo_workspace_path

    text = (
        (demo_workspace_path() / "experiments.yaml").read_text().replace("status: draft", "status: running")
    )
    root = tmp_path / "demo"
    shutil.copytree(demo_workspace_path(), root)
    (root / "experiments.yaml").write_text(text)
    assert errors(root) == []


async def test_a_service_refuses_to_start_an_experiment_edited_after_it_started(
    tmp_path: Path, backoffice: tuple[str, Any], running: list[Any]
) -> None:
    from cxstack.app import Settings, build
    from cxstack.optimization.experiments import ExperimentEditedError

    cx = await start_shop(tmp_path, backoffice[0], running, **experiments_file(CAP_TEST))
    await cx.stop()
    running.clear()
    edited = CAP_TEST.replace("{control: 0.5, cap_200: 0.5}", "{control: 0.1, cap_200: 0.9}")
    root = write_workspace(tmp_path / "edited", **experiments_file(edited))
    settings = Settings(home=tmp_path / "home", embedder="hashing", backoffice_url=backoffice[0])
    with pytest.raises(ExperimentEditedError, match="`refund-cap` changed its allocation after it started"):
        build(settings, workspace=load_workspace(root))
    renamed = write_workspace(
        tmp_path / "renamed", **experiments_file(edited.replace("refund-cap\n", "cap-b\n"))
    )
    build(settings, workspace=load_workspace(renamed))  # a new experiment under a new id starts


async def test_an_experiment_runs_and_is_analysed_end_to_end_with_a_decision(
    tmp_path: Path, backoffice: tuple[str, Any], running: list[Any]
) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from cxstack.cli.main import app as cli

    settle_fast = SHOP_SETTINGS + "monitoring:\n  settle_hours: 0.0001\n"
    cx = await start_shop(
        tmp_path, backoffice[0], running, **experiments_file(CAP_TEST), **{"cxstack.yaml": settle_fast}
    )
    for i in range(30):
        text = "please refund $150 for ORD-10006" if i % 3 == 0 else "what is your return policy"
        await cx.post_message(f"e2e-{i}", text, customer_id="cus_sam", verified=True)
        await cx.wait_idle(f"e2e-{i}")
    await asyncio.sleep(0.5)  # past the settle time: every conversation has its outcome
    runner = CliRunner()
    home = str(tmp_path / "home")
    ws = str(tmp_path / "shop")
    listed = json.loads(runner.invoke(cli, ["experiment", "list", ws, "--home", home, "--json"]).stdout)
    units = {name: v["units"] for name, v in listed[0]["variants"].items()}
    assert sum(units.values()) == 30 and min(units.values()) > 0
    answer = runner.invoke(
        cli,
        [
            "experiment",
            "analyze",
            "refund-cap",
            "-w",
            ws,
            "--home",
            home,
            "--json",
            "--html",
            f"{tmp_path}/a.html",
        ],
    )
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.stdout)
    assert result["decision"]["action"] == "keep running"  # 30 conversations settle nothing
    assert result["required_per_arm"] and "insufficient" in json.dumps(result["comparisons"])
    assert {a["name"]: a["units"] for a in result["arms"]} == units
    assert result["srm"] is not None  # the split is checked even on little data
    assert (
        "<svg" in (tmp_path / "a.html").read_text()
        or "Experiment refund-cap" in (tmp_path / "a.html").read_text()
    )
    planned = runner.invoke(
        cli,
        [
            "experiment",
            "plan",
            ws,
            "refund-cap",
            "--home",
            home,
            "--baseline",
            "0.2",
            "--mde",
            "0.02",
            "--json",
        ],
    )
    assert planned.exit_code == 0, planned.output
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    expected = NormalIndPower().solve_power(proportion_effectsize(0.22, 0.2), alpha=0.05, power=0.8, ratio=1)
    assert json.loads(planned.stdout)["units_per_arm"]["control"] == int(-(-expected // 1))
    unknown = runner.invoke(cli, ["experiment", "analyze", "nope", "-w", ws, "--home", home])
    assert unknown.exit_code == 1 and "no experiment `nope`" in unknown.output
