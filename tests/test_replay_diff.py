"""Replay before shipping: the same conversations through a baseline and a candidate version, and what the
candidate changes, by layer. Each candidate is the test shop with one change (a threshold, a policy rule, a
fact's text); the comparison must report that change in its layer, its consequences after it, and nothing
else."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SHOP, write_workspace
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.cli.replay_compare import example_line, replay_both
from cxstack.optimization.replay import ReplayedConversation, parse_scripts
from cxstack.optimization.replay_diff import ReplayDiff, compare_replays, confidence_bucket
from cxstack.workspace.diff import diff_workspaces
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.workspace import Workspace

runner = CliRunner()
AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday morning: no rule on hours differs between runs

SCRIPTS: list[dict[str, Any]] = [
    {"id": "policy", "messages": ["what is your return policy?"]},
    {
        "id": "status-vip",
        "customer": {"id": "cus_big", "plan": "enterprise", "arr": 50000},
        "messages": ["where is my order ORD-10001?"],
    },
    {
        "id": "status",
        "customer": {"id": "cus_1", "plan": "basic", "arr": 100},
        "messages": ["where is my order", "ORD-10002"],
    },
    {"id": "lawyer", "messages": ["I will sue you"]},
]
CHANGES = {
    "threshold": {
        "cxstack.yaml": SHOP["cxstack.yaml"].replace("knowledge_min_score: 0.30", "knowledge_min_score: 0.95")
    },
    # The VIP rule now also sends an enterprise customer's order question to a person.
    "rule": {
        "strategy.yaml": SHOP["strategy.yaml"].replace(
            "when: {intent_in: [refund_request], tier_in: [enterprise]}",
            "when: {intent_in: [refund_request, order_status], tier_in: [enterprise]}",
        )
    },
    "fact": {
        "knowledge/returns.yaml": SHOP["knowledge/returns.yaml"].replace("within 30 days", "within 60 days")
    },
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("versions")
    made = {"base": write_workspace(root / "base")}
    for name, files in CHANGES.items():
        made[name] = write_workspace(root / name, **files)
    return made


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("router-cache")


def run_pair(
    baseline: Workspace, candidate: Workspace, cache: Path
) -> tuple[list[ReplayedConversation], list[ReplayedConversation]]:
    scripts = parse_scripts(json.dumps(line) for line in SCRIPTS)
    return replay_both(
        baseline,
        candidate,
        scripts,
        embedder_name="hashing",
        dry_run_actions=True,
        cache_dir=cache,
        concurrency=4,
        at=AT,
    )


def compare(folders: dict[str, Path], cache: Path, name: str, examples: int = 3) -> ReplayDiff:
    baseline, candidate = load_workspace(folders["base"]), load_workspace(folders[name])
    before, after = run_pair(baseline, candidate, cache)
    return compare_replays(before, after, workspace=diff_workspaces(baseline, candidate), examples=examples)


def kinds(diff: ReplayDiff) -> dict[tuple[str, str], int]:
    return {(k.layer, k.kind): k.count for k in diff.kinds}


def test_a_knowledge_threshold_change_shows_in_knowledge_then_its_consequences(
    folders: dict[str, Path], cache: Path
) -> None:
    diff = compare(folders, cache, "threshold")

    assert [c.path for c in diff.workspace.settings] == ["thresholds.knowledge_min_score"]  # type: ignore[union-attr]
    # The policy question finds no fact above the new bar: a knowledge change, and what follows from it.
    assert kinds(diff) == {
        ("knowledge", "facts"): 1,
        ("orchestration", "decision"): 1,
        ("orchestration", "reason"): 1,
        ("orchestration", "queue"): 1,
        ("reply", "reply"): 1,
    }
    assert diff.origins == {"knowledge": 1}
    assert (diff.changed_turns, diff.changed_conversations, diff.turns, diff.conversations) == (1, 1, 5, 4)
    (facts,) = diff.layer("knowledge")
    (example,) = facts.examples
    assert (example.conversation, example.turn, example.intent) == ("policy", 1, "return_policy")
    assert (example.before, example.after) == (["return-window"], [])
    assert facts.by_intent == {"return_policy": 1}
    decision = next(k for k in diff.kinds if k.kind == "decision").examples[0]
    assert (decision.before, decision.after) == ("answered", "escalated")
    assert diff.outcomes == {("automated", "escalated"): 1}
    rates = {r.name: r for r in diff.rates}
    assert rates["escalation"].difference == pytest.approx(0.25)
    assert rates["automation"].difference == pytest.approx(-0.25)


def test_a_rule_change_shows_in_strategy_first(folders: dict[str, Path], cache: Path) -> None:
    diff = compare(folders, cache, "rule")

    assert list(diff.workspace.rules.changed) == ["vip-refunds-to-people"]  # type: ignore[union-attr]
    assert diff.origins == {"strategy": 1}
    assert {c.conversation for c in diff.changes} == {"status-vip"}  # the basic customer is untouched
    rules = diff.layer("strategy")[0].examples[0]
    assert (rules.kind, rules.before, rules.after) == ("rules", [], ["vip-refunds-to-people"])
    assert kinds(diff)[("resolution", "mechanism")] == 1
    assert kinds(diff)[("actions", "action")] == 1
    queue = next(k for k in diff.kinds if k.kind == "queue").examples[0]
    assert (queue.before, queue.after) == (None, "vip")
    assert ("routing", "intent") not in kinds(diff)


def test_a_fact_text_change_shows_as_that_fact_and_the_reply(folders: dict[str, Path], cache: Path) -> None:
    diff = compare(folders, cache, "fact")

    assert kinds(diff) == {("knowledge", "fact_content"): 1, ("reply", "reply"): 1}
    (edited,) = diff.layer("knowledge")[0].examples
    assert edited.before == edited.after == ["return-window"]
    (reply,) = diff.layer("reply")[0].examples
    assert "30 days" in reply.before and "60 days" in reply.after
    assert "30 days" in example_line(reply) and "60 days" in example_line(reply)
    assert all(r.difference == 0 for r in diff.rates)
    assert diff.outcomes == {}
    json.dumps(diff.as_dict())  # everything in it is JSON


def test_the_same_version_twice_changes_nothing(folders: dict[str, Path], cache: Path) -> None:
    base = load_workspace(folders["base"])
    before, after = run_pair(base, base, cache)
    diff = compare_replays(before, after, workspace=diff_workspaces(base, base))
    assert diff.empty and diff.workspace is not None and diff.workspace.empty
    assert diff.kinds == () and diff.origins == {} and diff.outcomes == {}


def test_examples_are_capped_and_runs_must_replay_the_same_conversations(
    folders: dict[str, Path], cache: Path
) -> None:
    diff = compare(folders, cache, "rule", examples=0)
    assert diff.kinds and all(k.examples == () for k in diff.kinds)
    assert len(diff.changes) == sum(k.count for k in diff.kinds)  # JSON keeps every change
    base = load_workspace(folders["base"])
    before, after = run_pair(base, base, cache)
    with pytest.raises(ValueError, match="different conversations"):
        compare_replays(before, after[:-1])


def test_the_candidate_reuses_the_baseline_router_only_when_it_trains_on_the_same_examples(
    folders: dict[str, Path], cache: Path
) -> None:
    from cxstack.cli.replay_compare import _engine_for

    base, rule = load_workspace(folders["base"]), load_workspace(folders["rule"])
    more = SHOP["intents.yaml"].replace(
        "      - see you in court\n", "      - see you in court\n      - my solicitor\n"
    )
    retrained = load_workspace(
        write_workspace(folders["base"].parent / "more-examples", **{"intents.yaml": more})
    )
    embedders: dict[str, Any] = {}
    first = _engine_for(base, None, embedders, "hashing", True, cache)
    same = _engine_for(rule, first, embedders, "hashing", True, cache)
    other = _engine_for(retrained, first, embedders, "hashing", True, cache)
    assert same.router is first.router and same.workspace is rule
    assert same.knowledge is not first.knowledge and same.connectors is not first.connectors
    assert other.router is not first.router and other.embedder is first.embedder  # one embedding cache
    for engine in (first, same, other):
        asyncio.run(engine.aclose())


def test_confidence_buckets() -> None:
    assert confidence_bucket(None) is None
    assert confidence_bucket(0.0) == "0.0-0.2"
    assert confidence_bucket(0.39) == "0.2-0.4"
    assert confidence_bucket(1.0) == "0.8-1.0"


# ---- the command ------------------------------------------------------------------------------------------


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "configured-home"
    monkeypatch.setenv("CXSTACK_HOME", str(home))
    monkeypatch.setenv("CXSTACK_EMBEDDER", "hashing")
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    return home


def scripts_file(tmp_path: Path) -> Path:
    path = tmp_path / "scripts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in SCRIPTS), encoding="utf-8")
    return path


def test_recorded_conversations_replay_against_a_stored_version(
    folders: dict[str, Path], tmp_path: Path, isolated_home: Path
) -> None:
    """Traffic recorded on the base version (a replay kept in a store), replayed on the rule change with the
    base read back from that store by a prefix of its hash."""
    home = tmp_path / "recorded"
    started = datetime.now(UTC) - timedelta(seconds=1)
    kept = runner.invoke(
        app, ["replay", str(folders["base"]), str(scripts_file(tmp_path)), "--home", str(home)]
    )
    assert kept.exit_code == 0, kept.output
    version = load_workspace(folders["base"]).version

    args = ["replay", str(folders["rule"]), "--from-store", "--since", started.strftime("%Y-%m-%dT%H:%M:%S")]
    result = runner.invoke(app, [*args, "--baseline", version[:10], "--home", str(home), "--json"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["baseline_version"] == version
    assert payload["baseline_source"] == "stored version"
    assert payload["conversations"] == 4 and payload["turns"] == 5
    assert payload["origins"] == {"strategy": 1}
    (change,) = payload["layers"]["strategy"]["rules"]["examples"]
    assert change["conversation"].endswith("status-vip")  # recorded conversations keep their ids
    assert change["text"] == "where is my order ORD-10001?"
    assert change["after"] == ["vip-refunds-to-people"]
    assert [r["id"] for r in payload["results"]["candidate"]] == [
        r["id"] for r in payload["results"]["baseline"]
    ]
    assert payload["workspace_diff"]["rules"]["changed"]

    # Without a baseline, recorded traffic replays like a file, in a throwaway store: the source is untouched.
    plain = runner.invoke(app, [*args, "--home", str(home), "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["conversations"] == 4
    from cxstack.app import Settings, open_store

    assert len(open_store(Settings(home=home)).list_conversations(limit=100)) == 4


def test_a_folder_baseline_prints_the_layers_and_writes_html(
    folders: dict[str, Path], tmp_path: Path, isolated_home: Path
) -> None:
    page = tmp_path / "report.html"
    result = runner.invoke(
        app,
        [
            "replay",
            str(folders["fact"]),
            str(scripts_file(tmp_path)),
            "--baseline",
            str(folders["base"]),
            "--html",
            str(page),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "return-window" in result.stdout  # the workspace diff, at the top
    assert "fact_content" in result.stdout and "knowledge" in result.stdout
    assert "60 days" in result.stdout
    assert "60 days" in page.read_text(encoding="utf-8")


def test_an_unknown_version_is_named_with_the_recent_ones(
    folders: dict[str, Path], tmp_path: Path, isolated_home: Path
) -> None:
    from cxstack.app import Settings, open_store
    from cxstack.domain.models import WorkspaceVersionId
    from cxstack.workspace.loader import canonical_content

    base = load_workspace(folders["base"])
    open_store(Settings()).save_workspace_version(base.version, "Test Shop", canonical_content(base))

    result = runner.invoke(
        app, ["replay", str(folders["fact"]), str(scripts_file(tmp_path)), "--baseline", "ws_0000dead"]
    )
    assert result.exit_code == 1
    assert "ws_0000dead" in result.stderr and "recent versions" in result.stderr
    assert base.version in result.stderr

    bad = {**canonical_content(base), "settings": {"thresholds": {"route_min_confidence": "high"}}}
    open_store(Settings()).save_workspace_version(WorkspaceVersionId("ws_badbadbad"), "broken", bad)
    ambiguous = runner.invoke(
        app, ["replay", str(folders["fact"]), str(scripts_file(tmp_path)), "--baseline", "ws_"]
    )
    assert ambiguous.exit_code == 1 and "matches several versions" in ambiguous.stderr
    invalid = runner.invoke(
        app, ["replay", str(folders["fact"]), str(scripts_file(tmp_path)), "--baseline", "badbad"]
    )
    assert invalid.exit_code == 1
    assert "ws_badbadbad fails validation" in invalid.stderr and "route_min_confidence" in invalid.stderr


def test_an_invalid_baseline_is_refused_with_its_problems(
    folders: dict[str, Path], tmp_path: Path, isolated_home: Path
) -> None:
    broken = write_workspace(
        tmp_path / "broken", **{"intents.yaml": SHOP["intents.yaml"].replace("content", "nope")}
    )
    result = runner.invoke(
        app, ["replay", str(folders["base"]), str(scripts_file(tmp_path)), "--baseline", str(broken)]
    )
    assert result.exit_code == 1
    assert "is invalid" in result.stderr and "nope" in result.stderr


def test_an_empty_window_says_so(folders: dict[str, Path], isolated_home: Path) -> None:
    result = runner.invoke(
        app,
        ["replay", str(folders["base"]), "--from-store", "--since", "2026-01-01", "--until", "2026-01-02"],
    )
    assert result.exit_code == 1
    assert "no recorded conversations" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give a FILE of scripts or --from-store"),
        (["--from-store"], "--since"),
        (["SCRIPTS", "--store", "--baseline", "BASE"], "--store keeps one run"),
    ],
)
def test_bad_combinations_are_refused(
    extra: list[str], message: str, folders: dict[str, Path], tmp_path: Path, isolated_home: Path
) -> None:
    path = scripts_file(tmp_path)
    args = [str(path) if a == "SCRIPTS" else str(folders["base"]) if a == "BASE" else a for a in extra]
    result = runner.invoke(app, ["replay", str(folders["base"]), *args])
    assert result.exit_code == 1
    assert message in result.stderr
