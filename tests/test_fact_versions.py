"""Fact versions: file changes recorded, edits and rollbacks written back to the files, optimistic locking,
retired facts refused; the same through `cxstack kb history|diff|rollback` and the /v1/knowledge API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import write_workspace
from typer.testing import CliRunner

from cxstack.api.app import create_api
from cxstack.app import CxApp, Settings, build
from cxstack.cli.main import app as cli
from cxstack.domain.ports import FactVersionConflictError
from cxstack.knowledge.versions import (
    FactEditError,
    KnowledgeEditor,
    UnknownFactError,
    diff_versions,
    word_diff,
)
from cxstack.testing.authz import make_role_keys
from cxstack.testing.memory_store import InMemoryStore
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.validate import WorkspaceInvalid

RETURNS = "knowledge/returns.yaml"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return write_workspace(tmp_path / "ws")


@pytest.fixture
def editor(ws: Path) -> KnowledgeEditor:
    return KnowledgeEditor(ws, InMemoryStore())


def test_the_files_first_seen_are_version_1_and_a_file_edit_is_the_next_version(
    ws: Path, editor: KnowledgeEditor
) -> None:
    first = editor.history("shipping-speed")
    assert [(v.number, v.origin, v.author) for v in first] == [(1, "files", "workspace files")]
    assert first[0].reason == f"first recorded from {RETURNS}"

    path = ws / RETURNS
    path.write_text(path.read_text().replace("3 to 5 business days", "2 to 4 business days"))
    history = editor.history("shipping-speed")
    assert [v.number for v in history] == [1, 2]
    assert history[1].reason == f"changed in {RETURNS}"
    assert [c.field for c in diff_versions(history[0], history[1])] == ["text"]
    assert word_diff(str(history[0].content["text"]), str(history[1].content["text"])) == (  # type: ignore[index]
        "Standard shipping takes [-3-] {+2+} to [-5-] {+4+} business days."
    )
    assert len(editor.history("return-window")) == 1  # untouched facts get no new version


def test_a_fact_removed_from_the_files_gets_a_version_without_content(
    ws: Path, editor: KnowledgeEditor
) -> None:
    editor.history("shipping-speed")
    path = ws / RETURNS
    text = path.read_text()
    path.write_text(text[: text.index("  - id: shipping-speed")])
    history = editor.history("shipping-speed")
    assert [v.content is None for v in history] == [False, True]
    assert history[1].reason == "removed from the workspace files"


def test_an_edit_changes_only_that_facts_lines_and_records_author_and_reason(
    ws: Path, editor: KnowledgeEditor
) -> None:
    path = ws / RETURNS
    before = path.read_text().splitlines()
    version = editor.edit(
        "return-condition",
        {"text": "Returned items must be unworn, with their tags still attached."},
        expected_version=1,
        author="ana@shop.test",
        reason="tags policy from 1 Dec",
    )
    assert (version.number, version.author, version.origin) == (2, "ana@shop.test", "api")
    after = path.read_text().splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert [after[i] for i in changed] == [
        "    text: Returned items must be unworn, with their tags still attached."
    ]
    loaded = load_workspace(ws).fact("return-condition")
    assert loaded is not None and loaded.text.endswith("tags still attached.")
    assert editor.history("return-condition")[-1] == version  # the file now agrees: no extra version


def test_the_second_of_two_edits_based_on_the_same_version_gets_a_conflict_naming_the_newer(
    ws: Path, editor: KnowledgeEditor
) -> None:
    editor.history("shipping-speed")
    editor.edit(
        "shipping-speed",
        {"text": "Standard shipping takes 2 days."},
        expected_version=1,
        author="ana",
        reason="a",
    )
    with pytest.raises(FactVersionConflictError) as conflict:
        editor.edit("shipping-speed", {"owner": "bo@shop.test"}, expected_version=1, author="bo", reason="b")
    assert conflict.value.latest is not None and conflict.value.latest.number == 2
    assert "version 2 by ana" in str(conflict.value)
    fact = load_workspace(ws).fact("shipping-speed")
    assert fact is not None and (fact.text, fact.owner) == (
        "Standard shipping takes 2 days.",
        "ops@shop.test",
    )


def test_concurrent_edits_of_one_version_let_exactly_one_through(ws: Path, editor: KnowledgeEditor) -> None:
    editor.history("shipping-speed")
    outcomes: list[str] = []

    def edit(days: int) -> None:
        try:
            editor.edit(
                "shipping-speed",
                {"text": f"Standard shipping takes {days} days."},
                expected_version=1,
                author=f"writer {days}",
                reason="race",
            )
            outcomes.append(f"won {days}")
        except FactVersionConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(days,)) for days in (2, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.split()[0] for o in outcomes) == ["conflict", "won"]
    winner = int(next(o for o in outcomes if o.startswith("won")).split()[1])
    fact = load_workspace(ws).fact("shipping-speed")
    assert fact is not None and fact.text == f"Standard shipping takes {winner} days."
    assert [v.number for v in editor.history("shipping-speed")] == [1, 2]


def test_a_retired_fact_is_not_edited_but_a_rollback_brings_it_back(
    ws: Path, editor: KnowledgeEditor
) -> None:
    editor.edit("return-window", {"status": "retired"}, expected_version=1, author="ana", reason="old policy")
    with pytest.raises(FactEditError, match=r"retired .*roll back"):
        editor.edit("return-window", {"text": "60 days"}, expected_version=2, author="bo", reason="new")
    restored = editor.rollback("return-window", 1, author="bo", reason="still valid", expected_version=2)
    assert (restored.number, restored.origin) == (3, "rollback")
    assert restored.reason == "rollback to version 1: still valid"
    fact = load_workspace(ws).fact("return-window")
    assert fact is not None and fact.status == "published"


def test_an_edit_that_would_break_the_workspace_changes_nothing(ws: Path, editor: KnowledgeEditor) -> None:
    original = (ws / RETURNS).read_text()
    with pytest.raises(WorkspaceInvalid, match="no_such_intent"):
        editor.edit(
            "return-window", {"intents": ["no_such_intent"]}, expected_version=1, author="a", reason="r"
        )
    with pytest.raises(FactEditError, match="invalid fact: review_by"):
        editor.edit("return-window", {"review_by": "soon"}, expected_version=1, author="a", reason="r")
    with pytest.raises(FactEditError, match="id cannot change"):
        editor.edit("return-window", {"id": "other"}, expected_version=1, author="a", reason="r")
    with pytest.raises(FactEditError, match="author and a reason"):
        editor.edit("return-window", {"text": "x"}, expected_version=1, author="a", reason=" ")
    assert (ws / RETURNS).read_text() == original
    assert [v.number for v in editor.history("return-window")] == [1]


def test_unknown_facts_and_versions_are_named(editor: KnowledgeEditor) -> None:
    with pytest.raises(UnknownFactError, match="did you mean return-window"):
        editor.history("retrun-window")
    editor.history("return-window")
    with pytest.raises(UnknownFactError, match="no version 7"):
        editor.rollback("return-window", 7, author="a", reason="r")


def test_rolling_back_a_removed_fact_restores_it_in_a_file(ws: Path, editor: KnowledgeEditor) -> None:
    editor.history("shipping-speed")
    path = ws / RETURNS
    text = path.read_text()
    path.write_text(text[: text.index("  - id: shipping-speed")])
    editor.history("shipping-speed")
    editor.rollback("shipping-speed", 1, author="ana", reason="removed by mistake")
    fact = load_workspace(ws).fact("shipping-speed")
    assert fact is not None and fact.text == "Standard shipping takes 3 to 5 business days."
    assert "shipping-speed" in (ws / "knowledge" / "restored.yaml").read_text()


def test_a_markdown_fact_is_edited_in_its_front_matter_and_body(ws: Path, editor: KnowledgeEditor) -> None:
    (ws / "knowledge" / "gift-cards.md").write_text(
        "---\nid: gift-cards\nowner: cx@shop.test  # the CX team\ntags: [payments]\n---\n"
        "Gift cards never expire\nand can be used online.\n"
    )
    editor.edit(
        "gift-cards", {"text": "Gift cards expire after 5 years."}, expected_version=1, author="a", reason="r"
    )
    text = (ws / "knowledge" / "gift-cards.md").read_text()
    assert "# the CX team" in text and text.rstrip().endswith("Gift cards expire after 5 years.")
    fact = load_workspace(ws).fact("gift-cards")
    assert fact is not None and fact.text == "Gift cards expire after 5 years." and fact.tags == ["payments"]


def test_creating_a_fact_appends_it_and_refuses_a_taken_id(ws: Path, editor: KnowledgeEditor) -> None:
    fields = {
        "id": "gift-wrap",
        "text": "Gift wrapping costs $4.",
        "owner": "cx@shop.test",
        "status": "draft",
    }
    version = editor.create(fields, author="ana", reason="new service", into="knowledge/services.yaml")
    assert version.number == 1
    fact = load_workspace(ws).fact("gift-wrap")
    assert fact is not None and fact.status == "draft"
    with pytest.raises(FactEditError, match="in use"):
        editor.create({**fields, "id": "return-window"}, author="ana", reason="dup", into=RETURNS)


# ---- CLI -------------------------------------------------------------------------------------------------


def test_cli_history_diff_and_rollback(ws: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    assert runner.invoke(cli, ["kb", "history", str(ws), "shipping-speed", *home]).exit_code == 0
    path = ws / RETURNS
    path.write_text(path.read_text().replace("3 to 5", "1 to 2"))

    shown = runner.invoke(cli, ["kb", "history", str(ws), "shipping-speed", "--json", *home])
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(v["version"], v["origin"]) for v in lines] == [(1, "files"), (2, "files")]

    diff = runner.invoke(cli, ["kb", "diff", str(ws), "shipping-speed", "--json", *home])
    assert json.loads(diff.stdout)["changes"] == [
        {
            "field": "text",
            "before": "Standard shipping takes 3 to 5 business days.",
            "after": "Standard shipping takes 1 to 2 business days.",
        }
    ]
    stale = runner.invoke(
        cli,
        ["kb", "rollback", str(ws), "shipping-speed", "--to", "1", "--reason", "x", "--expect", "1", *home],
    )
    assert stale.exit_code == 1 and "conflict" in stale.output and "version 2" in stale.output
    done = runner.invoke(
        cli,
        [
            "kb",
            "rollback",
            str(ws),
            "shipping-speed",
            "--to",
            "1",
            "--reason",
            "typo",
            "--author",
            "ana",
            *home,
        ],
    )
    assert done.exit_code == 0, done.output
    assert "3 to 5 business days" in path.read_text()
    unknown = runner.invoke(cli, ["kb", "history", str(ws), "shiping-speed", *home])
    assert unknown.exit_code == 1 and "did you mean shipping-speed" in unknown.output


# ---- API -------------------------------------------------------------------------------------------------


@pytest.fixture
def client_and_keys(ws: Path, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    cx = build(Settings(home=tmp_path / "home", workspace=ws, embedder="hashing"))
    keys = make_role_keys(cx.store)
    with TestClient(create_api(cx)) as client:
        yield client, keys


def test_api_edit_with_optimistic_locking_and_roles(
    ws: Path, client_and_keys: tuple[TestClient, dict[str, str]]
) -> None:
    client, keys = client_and_keys
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    viewer = {"Authorization": f"Bearer {keys['viewer']}"}
    current = client.get("/v1/knowledge/facts/return-window", headers=viewer).json()
    assert current["version"] == 1 and current["content"]["owner"] == "cx@shop.test"  # recorded at start

    edit = {
        "changes": {"text": "You can return any item within 45 days."},
        "expected_version": 1,
        "reason": "r",
    }
    assert client.patch("/v1/knowledge/facts/return-window", json=edit, headers=viewer).status_code == 403
    made = client.patch("/v1/knowledge/facts/return-window", json=edit, headers=admin)
    assert made.status_code == 200 and made.json()["version"] == 2
    assert made.json()["author"].startswith("key cxk_") and "admin" in made.json()["author"]

    late = client.patch("/v1/knowledge/facts/return-window", json={**edit, "reason": "mine"}, headers=admin)
    assert late.status_code == 409
    assert late.json()["detail"]["latest"]["version"] == 2
    assert "45 days" in (ws / RETURNS).read_text()

    diff = client.get("/v1/knowledge/facts/return-window/diff", headers=viewer).json()
    assert [c["field"] for c in diff["changes"]] == ["text"] and diff["from_version"] == 1

    bad = {"changes": {"audience": {"tiers": ["platinum"]}}, "expected_version": 2, "reason": "r"}
    refused = client.patch("/v1/knowledge/facts/return-window", json=bad, headers=admin)
    assert refused.status_code == 422 and "platinum" in json.dumps(refused.json())

    back = {"to_version": 1, "expected_version": 2, "reason": "legal said no"}
    rolled = client.post("/v1/knowledge/facts/return-window/rollback", json=back, headers=admin)
    assert rolled.status_code == 200 and rolled.json()["version"] == 3
    versions = client.get("/v1/knowledge/facts/return-window/versions", headers=viewer).json()
    assert [v["origin"] for v in versions] == ["files", "api", "rollback"]
    assert client.get("/v1/knowledge/facts/nope", headers=viewer).status_code == 404


def test_cli_publishes_drafts_and_retires_facts(ws: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    path = ws / "knowledge" / "drafts.yaml"
    path.write_text(
        "version: 1\nfacts:\n  - id: gift-wrap\n    text: Gift wrapping costs $4.\n    owner: cx@shop.test\n"
        "    status: draft\n"
    )
    published = runner.invoke(cli, ["kb", "publish", str(ws), "gift-wrap", *home])
    assert published.exit_code == 0 and "published (version 2)" in published.output
    assert "status: draft" not in path.read_text()
    retired = runner.invoke(cli, ["kb", "retire", str(ws), "gift-wrap", "nope", "--reason", "gone", *home])
    assert retired.exit_code == 1 and "unknown fact nope" in retired.output
    fact = load_workspace(ws).fact("gift-wrap")
    assert fact is not None and fact.status == "retired"
    history = runner.invoke(cli, ["kb", "history", str(ws), "gift-wrap", "--json", *home])
    assert [json.loads(line)["origin"] for line in history.stdout.splitlines()] == ["files", "cli", "cli"]


def test_kb_impact_replay_shows_the_answers_a_fact_change_alters(ws: Path, tmp_path: Path) -> None:
    import asyncio

    home = tmp_path / "home"

    async def converse() -> None:
        cx = build(Settings(home=home, workspace=ws, embedder="hashing", burst_window_ms=0))
        await cx.start()
        try:
            for conversation, text in (("c-ret", "what is your return policy"), ("c-ship", "shipping time?")):
                await cx.post_message(conversation, text, customer_id="cus_1", verified=True)
                await cx.wait_idle(conversation)
        finally:
            await cx.stop()

    asyncio.run(converse())
    path = ws / RETURNS
    path.write_text(path.read_text().replace("within 30 days of delivery", "within 45 days of delivery"))

    runner = CliRunner()
    impact = runner.invoke(
        cli,
        ["kb", "impact", str(ws), "return-window", "--replay", "--json", "--home", str(home)],
        env={"CXSTACK_EMBEDDER": "hashing"},
    )
    assert impact.exit_code == 0, impact.output
    replay = json.loads(impact.stdout)["replay"]
    assert [r["conversation_id"] for r in replay] == ["c-ret"]  # only the conversation that cited it
    (turn,) = replay
    assert turn["changed"] and "30 days" in turn["before"] and "45 days" in turn["after"]
    assert turn["facts_before"] == turn["facts_after"] and "return-window" in turn["facts_after"]

    unchanged = runner.invoke(
        cli, ["kb", "impact", str(ws), "shipping-speed", "--replay", "--home", str(home)]
    )
    assert unchanged.exit_code == 1 and "nothing earlier to compare with" in unchanged.output


def test_a_running_service_answers_with_an_edited_fact_from_the_next_turn(ws: Path, tmp_path: Path) -> None:
    import asyncio
    import time

    async def ask(cx: CxApp, conversation: str) -> tuple[str, str]:
        await cx.post_message(conversation, "what is your return policy", customer_id="cus_1", verified=True)
        await cx.wait_idle(conversation)
        view = cx.conversation_view(conversation)
        assert view is not None
        return view.messages[-1].text, str(view.traces[-1].workspace_version)

    async def scenario() -> None:
        settings = Settings(
            home=tmp_path / "home",
            workspace=ws,
            embedder="hashing",
            burst_window_ms=0,
            knowledge_reload_seconds=0.01,
        )
        cx = build(settings)
        await cx.start()
        try:
            before, first_version = await ask(cx, "c1")
            assert "30 days" in before
            editor = KnowledgeEditor(ws, cx.store)
            latest = editor.history("return-window")[-1].number
            text = "Our return policy: you can return any item within 45 days of delivery for a full refund."
            editor.edit("return-window", {"text": text}, expected_version=latest, author="ana", reason="x")
            time.sleep(0.05)
            after, second_version = await ask(cx, "c2")
            assert "45 days" in after and second_version != first_version
            assert cx.store.get_workspace_version(second_version) is not None  # stored for replay and audit

            # A broken knowledge file is ignored: the service keeps answering with what it had.
            broken = "version: 1\nfacts:\n  - id: x\n    text: [unclosed\n"
            (ws / "knowledge" / "broken.yaml").write_text(broken)
            time.sleep(0.05)
            kept, third_version = await ask(cx, "c3")
            assert "45 days" in kept and third_version == second_version
        finally:
            await cx.stop()

    asyncio.run(scenario())


def test_a_committed_file_change_takes_its_author_and_reason_from_git(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=ws, check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=Ana", "-c", "user.email=ana@shop.test", "commit", "-qm", "first knowledge")
    monkeypatch.chdir(ws.parent)  # the workspace given as a relative path, as people type it
    (version,) = KnowledgeEditor(Path(ws.name), InMemoryStore()).history("return-window")
    assert (version.author, version.reason) == (
        "Ana <ana@shop.test>",
        f"first recorded from {RETURNS} (first knowledge)",
    )
