"""The CLI as a person uses it: init, validate, replay, intents, customers, trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxstack.cli.main import app

runner = CliRunner()


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    target = tmp_path / "demo"
    result = runner.invoke(app, ["init", "--demo", str(target)])
    assert result.exit_code == 0, result.output
    return target


def test_init_demo_writes_a_valid_workspace(demo_dir: Path) -> None:
    assert (demo_dir / "cxstack.yaml").exists() and (demo_dir / "samples" / "customers.csv").exists()
    assert {p.name for p in (demo_dir / "samples").glob("*.jsonl")} == {"tuning.jsonl", "heldout.jsonl"}
    result = runner.invoke(app, ["validate", str(demo_dir)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_init_refuses_a_non_empty_folder(demo_dir: Path) -> None:
    result = runner.invoke(app, ["init", "--demo", str(demo_dir)])
    assert result.exit_code == 1


def test_init_skeleton_is_valid(tmp_path: Path) -> None:
    target = tmp_path / "new"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    result = runner.invoke(app, ["validate", str(target)])
    assert result.exit_code == 0, result.output


def test_init_skeleton_points_to_the_guide_and_replays_at_once(tmp_path: Path) -> None:
    target = tmp_path / "new"
    result = runner.invoke(app, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert "docs/first-workspace.md" in result.output and "docs/reference.md" in result.output
    samples = target / "samples" / "conversations.jsonl"
    assert f"cxstack replay {target.as_posix()} {samples.as_posix()}" in result.output
    replayed = runner.invoke(app, ["replay", str(target), str(samples), "--embedder", "hashing", "--json"])
    assert replayed.exit_code == 0, replayed.output
    payload = json.loads(replayed.stdout)
    assert payload["conversations"] == 3
    assert payload["overall"]["automated"] == 2 and payload["overall"]["escalated"] == 1
    assert payload["outcome_agreement"] == 1.0


def test_the_skeletons_commented_examples_are_a_valid_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the skeleton's comments teach (an action with slots, a connector with a ${ENV} header, an
    attribute rule) validates once uncommented, and every example line is in the comments as written."""
    from cxstack.cli.services import new_workspace_skeleton, skeleton_files

    plain, live = skeleton_files(), skeleton_files(with_examples=True)
    for name, text in live.items():
        commented = {line.replace("# ", "", 1) for line in plain[name].splitlines() if "# " in line}
        added = [line for line in text.splitlines() if line not in plain[name].splitlines()]
        missing = [line for line in added if line.strip() and line not in commented and line != "actions:"]
        assert missing == [], f"{name}: example lines not shown in the skeleton's comments: {missing}"
    monkeypatch.setenv("BACKOFFICE_TOKEN", "token-for-the-test")
    target = tmp_path / "examples"
    new_workspace_skeleton(target, with_examples=True)
    result = runner.invoke(app, ["validate", str(target)])
    assert result.exit_code == 0, result.output
    assert "2 actions" in result.output and "2 rules" in result.output


def test_validate_lists_every_error_with_file_and_line(shop_path: Path) -> None:
    intents = (shop_path / "intents.yaml").read_text()
    broken = intents.replace("mechanism: content", "mechanism: contnet").replace(
        "action: get_order_status", "action: get_order_statuz"
    )
    (shop_path / "intents.yaml").write_text(broken)
    result = runner.invoke(app, ["validate", str(shop_path)], terminal_width=200)
    assert result.exit_code == 1
    assert "intents.yaml:" in result.output
    assert "contnet" in result.output and "get_order_statuz" in result.output


def test_replay_reports_automation_with_escalation(shop_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "convs.jsonl"
    lines = [
        {
            "id": "a",
            "messages": ["what is your return policy?"],
            "expected": {"intent": "return_policy", "outcome": "automated"},
        },
        {
            "id": "b",
            "customer": {"id": "x", "plan": "enterprise", "arr": 50000},
            "messages": ["I want a refund for ORD-10001 of $20"],
            "expected": {"intent": "refund_request", "outcome": "escalated"},
        },
        {
            "id": "c",
            "messages": ["I will sue you"],
            "expected": {"intent": "legal_threat", "outcome": "escalated"},
        },
    ]
    script.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = runner.invoke(app, ["replay", str(shop_path), str(script), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["conversations"] == 3
    assert payload["overall"]["automated"] == 1 and payload["overall"]["escalated"] == 2
    assert payload["routing_accuracy"] == 1.0 and payload["outcome_agreement"] == 1.0
    by_intent = {row["key"]: row for row in payload["by_intent"]}
    assert by_intent["legal_threat"]["escalation_rate"] == 1.0
    assert {row["key"] for row in payload["by_mechanism"]} >= {"content", "human"}


def test_replay_rejects_bad_lines_with_numbers(shop_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "bad.jsonl"
    script.write_text('{"id": "a", "messages": ["hi"]}\n{not json}\n{"id": "c"}\n')
    result = runner.invoke(app, ["replay", str(shop_path), str(script)], terminal_width=200)
    assert result.exit_code == 1
    assert "bad.jsonl:2" in result.output and "bad.jsonl:3" in result.output


def test_customers_import_and_intents_registry(shop_path: Path, tmp_path: Path) -> None:
    csv = tmp_path / "customers.csv"
    csv.write_text('id,name,email,plan,arr,segment,country\ncus_1,Ann,ann@x.test,pro,"12,000",smb,DE\n')
    home = tmp_path / "home"
    result = runner.invoke(app, ["customers", "import", str(csv), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "imported 1" in result.output
    result = runner.invoke(app, ["intents", "-w", str(shop_path), "--home", str(home)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("return_policy", "order_status", "refund_request", "legal_threat"):
        assert name in result.output


def test_serve_refuses_an_invalid_workspace_with_the_same_list(shop_path: Path, tmp_path: Path) -> None:
    intents = (shop_path / "intents.yaml").read_text()
    (shop_path / "intents.yaml").write_text(intents.replace("mechanism: content", "mechanism: contnet"))
    validate = runner.invoke(app, ["validate", str(shop_path)])
    serve = runner.invoke(app, ["serve", str(shop_path), "--home", str(tmp_path / "h"), "--no-backoffice"])
    assert validate.exit_code == 1 and serve.exit_code == 1
    assert "contnet" in serve.output and "intents.yaml:" in serve.output


def test_router_command_shows_calibration(shop_path: Path) -> None:
    result = runner.invoke(app, ["router", str(shop_path), "--embedder", "hashing"])
    assert result.exit_code == 0, result.output
    assert "expected calibration error" in result.output and "reliability diagram" in result.output


async def test_intents_registry_shows_traffic_once_there_is_some(shop_path: Path, tmp_path: Path) -> None:
    from cxstack.app import Settings, build
    from cxstack.workspace.loader import load_workspace

    home = tmp_path / "home"
    cx = build(Settings(home=home, embedder="hashing"), workspace=load_workspace(shop_path))
    await cx.start()
    for conversation, text in [("a", "what is your return policy"), ("b", "I will sue you")]:
        await cx.post_message(conversation, text, customer_id="cus_x", verified=True)
        await cx.wait_idle(conversation)
    await cx.stop()
    result = runner.invoke(app, ["intents", "-w", str(shop_path), "--home", str(home)])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    cells = {name: [c.strip() for c in line.split("│")] for name, line in rows.items()}
    # convs, automation with its interval, quality beside it (no reviews yet: no number)
    assert cells["return_policy"][-4:-1] == ["1", "100% 21–100", "— 0 rev."]
    assert cells["legal_threat"][-4:-1] == ["1", "0% 0–79", "— 0 rev."]  # escalated
    assert cells["order_status"][-4:-1] == ["0", "—", "—"]  # no traffic yet


def test_validate_output_piped_is_never_cut(tmp_path: Path) -> None:
    from tests.conftest import write_workspace

    root = write_workspace(tmp_path / "ws")
    settings = (root / "cxstack.yaml").read_text()
    long_name = "a-queue-name-long-enough-to-be-cut-by-an-eighty-column-terminal-if-anyone-cut-it"
    (root / "cxstack.yaml").write_text(
        settings.replace("default_queue: general", f"default_queue: {long_name}")
    )
    result = runner.invoke(app, ["validate", str(root)])  # CliRunner output is not a terminal
    assert long_name in result.output
    assert all(len(line) <= 400 for line in result.output.splitlines())


def test_a_type_error_comes_with_a_fix(tmp_path: Path) -> None:
    from tests.conftest import write_workspace

    root = write_workspace(tmp_path / "ws")
    text = (root / "cxstack.yaml").read_text().replace("max_clarifications", "x")
    (root / "cxstack.yaml").write_text(
        text.replace("route_min_confidence: 0.30", "route_min_confidence: high")
    )
    result = runner.invoke(app, ["validate", str(root)])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if "route_min_confidence" in line)
    assert "cxstack.yaml:" in line and "(fix: write a number, e.g. 0.5)" in line


def test_serve_summary_survives_an_intent_with_one_example(tmp_path: Path) -> None:
    from tests.conftest import SHOP, write_workspace

    from cxstack.app import build_engine
    from cxstack.cli.render import router_summary
    from cxstack.workspace.loader import load_workspace

    one = SHOP["intents.yaml"] + (
        "  - name: gift_cards\n    mechanism: human\n    owner: me\n    examples: [do you sell gift cards]\n"
    )
    root = write_workspace(tmp_path / "ws", **{"intents.yaml": one})
    assert runner.invoke(app, ["validate", str(root)]).exit_code == 0
    engine = build_engine(load_workspace(root), embedder_name="hashing")
    assert "not measured" in router_summary(engine.router_report)
    result = runner.invoke(app, ["router", str(root), "--embedder", "hashing"])
    assert result.exit_code == 0, result.output


def test_trace_finds_the_projects_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cxstack.app import Settings, open_store
    from cxstack.domain.models import ConversationId, CustomerId, InboundMessage

    state = tmp_path / "project" / ".cxstack"
    store = open_store(Settings(home=state))
    store.ingest(InboundMessage("api", "e1", ConversationId("made-by-make-run"), CustomerId("c1"), "hello"))
    (tmp_path / "project" / "docs").mkdir()
    monkeypatch.delenv("CXSTACK_HOME", raising=False)
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path / "project" / "docs")
    result = runner.invoke(app, ["trace", "made-by-make-run"])
    assert result.exit_code == 0, result.output
    assert "made-by-make-run" in result.output and "hello" in result.output


def test_any_command_refuses_a_newer_database_schema_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import sqlalchemy as sa

    from cxstack.demo import demo_workspace_path
    from cxstack.store.db import create_engine_for, migrate

    engine = create_engine_for(f"sqlite:///{tmp_path / 'cxstack.db'}")
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("update alembic_version set version_num = '0099_future'"))
    engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "cxstack.cli.main", "experiment", "list", str(demo_workspace_path())],
        capture_output=True,
        text=True,
        env={**os.environ, "CXSTACK_HOME": str(tmp_path), "CXSTACK_DATABASE_URL": ""},
        timeout=120,
    )
    assert done.returncode == 1
    assert "database schema is at 0099_future" in done.stderr and "Traceback" not in done.stderr
