"""What a new adopter ran into while building a workspace from scratch (the first-workspace guide), each
fixed: an unset secret, a mechanism nothing can resolve, a typo in a reply, the demo back office started for
another workspace, wrapped Markdown facts, fixed sentences the workspace could not change, no words of its own
for an intent that goes to a person, and CXSTACK_EMBEDDER ignored by some commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from tests.conftest import SHOP, write_workspace
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.cli.services import ensure_backoffice, is_demo
from cxstack.demo import demo_workspace_path
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.validate import DEFAULT_MECHANISMS, validate_workspace

runner = CliRunner()
SECRET_HEADER = SHOP["cxstack.yaml"].replace(
    'backoffice: {base_url: "http://127.0.0.1:9", timeout_s: 2, retries: 1, backoff_s: 0.01}',
    'backoffice: {base_url: "http://127.0.0.1:9", headers: {Authorization: "Bearer ${WREN_TOKEN}"}}',
)


def test_an_unset_secret_is_one_clear_line_and_a_dry_run_needs_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WREN_TOKEN", raising=False)
    root = write_workspace(tmp_path / "ws", **{"cxstack.yaml": SECRET_HEADER})
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"id": "a", "messages": ["what is your return policy?"]}) + "\n")
    replayed = runner.invoke(app, ["replay", str(root), str(script), "--embedder", "hashing"])
    assert replayed.exit_code == 0, replayed.output  # the dry-run connector sends nothing: no secret needed
    live = runner.invoke(
        app,
        [
            "replay",
            str(root),
            str(script),
            "--embedder",
            "hashing",
            "--live-actions",
            "--home",
            str(tmp_path),
        ],
    )
    assert live.exit_code == 1
    assert (
        "cannot start: connector 'backoffice', header 'Authorization' references ${WREN_TOKEN}" in live.output
    )
    assert "export WREN_TOKEN=" in live.output and "Traceback" not in live.output


def test_a_mechanism_nothing_can_resolve_is_an_error(tmp_path: Path) -> None:
    intents = SHOP["intents.yaml"].replace("mechanism: content", "mechanism: multi_agent", 1)
    without = [m for m in DEFAULT_MECHANISMS if m != "multi_agent"]  # as if its plug-in were uninstalled
    workspace = write_workspace(tmp_path / "ws", **{"intents.yaml": intents})
    [problem] = [
        p
        for p in validate_workspace(workspace, without)
        if "no resolver for mechanism `multi_agent`" in p.message
    ]
    assert problem.is_error and problem.file == "intents.yaml" and "content" in problem.fix
    assert not [p for p in validate_workspace(workspace) if "no resolver" in p.message]


def test_a_typo_in_a_reply_is_an_error(tmp_path: Path) -> None:
    settings = SHOP["cxstack.yaml"] + "replies:\n  handoff: I've passed this to {teem}.\n"
    [problem] = [
        p
        for p in validate_workspace(write_workspace(tmp_path / "ws", **{"cxstack.yaml": settings}))
        if "unknown placeholder" in p.message
    ]
    assert problem.is_error and "{teem}" in problem.message and "team" in problem.fix


def test_the_demo_back_office_starts_only_for_the_demo(tmp_path: Path) -> None:
    mine = load_workspace(
        write_workspace(
            tmp_path / "ws",
            **{"cxstack.yaml": SHOP["cxstack.yaml"].replace("http://127.0.0.1:9", "http://127.0.0.1:8765")},
        )
    )
    assert not is_demo(mine)
    assert ensure_backoffice(mine, tmp_path, Console(quiet=True)) is None
    assert is_demo(load_workspace(demo_workspace_path()))


def test_a_wrapped_markdown_fact_is_one_sentence(tmp_path: Path) -> None:
    fact = (
        "---\nid: wrapped\nowner: cx@shop.test\n---\n"
        "Returns are free within 30 days\nof delivery, and\n\n  always by mail.\n"
    )
    ws = load_workspace(write_workspace(tmp_path / "ws", **{"knowledge/wrapped.md": fact}))
    fact_config = ws.fact("wrapped")
    assert fact_config is not None
    assert fact_config.text == "Returns are free within 30 days of delivery, and always by mail."


def test_cxstack_embedder_is_honoured_by_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_workspace(
        tmp_path / "ws",
        **{"cxstack.yaml": SHOP["cxstack.yaml"].replace("embedder: hashing", "embedder: no-such-embedder")},
    )
    monkeypatch.setenv("CXSTACK_EMBEDDER", "hashing")
    result = runner.invoke(app, ["router", str(root)])
    assert result.exit_code == 0, result.output


def test_customer_facing_words_come_from_the_workspace(tmp_path: Path) -> None:
    """The over-cap handoff names the team as the workspace does; an intent brings its own handoff words."""
    import asyncio

    from cxstack.app import Settings, build
    from cxstack.domain.models import Customer, CustomerId

    settings = SHOP["cxstack.yaml"].replace(
        "    - {name: billing}", "    - {name: billing, customer_label: the billing desk}"
    )
    settings += "replies:\n  urgent_note: A duty manager is on it now.\n"
    intents = SHOP["intents.yaml"].replace(
        "    never_automate: true\n",
        "    never_automate: true\n"
        "    handoff_reply: Please keep every letter you received; {team} will call you.\n",
    )
    strategy = SHOP["strategy.yaml"].replace("{force_human: true, queue: billing}", "{cap_amount: 100}")
    actions = SHOP["actions.yaml"].replace("max_amount: 500", "max_amount: 50")
    root = write_workspace(
        tmp_path / "ws",
        **{
            "cxstack.yaml": settings,
            "intents.yaml": intents,
            "strategy.yaml": strategy,
            "actions.yaml": actions,
        },
    )
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(root))
    cx.store.upsert_customers([Customer(CustomerId("cus_1"), name="Sam", arr=100)])

    async def run() -> list[str]:
        await cx.start()
        try:
            replies = []
            for conversation, text in [
                ("c1", "I want a refund of $80 for ORD-10001"),
                ("c2", "I will sue you"),
            ]:
                await cx.post_message(conversation, text, customer_id="cus_1", verified=True)
                await cx.wait_idle(conversation)
                view = cx.conversation_view(conversation)
                assert view is not None
                replies.append(view.traces[-1].reply or "")
            return replies
        finally:
            await cx.stop()

    over_cap, legal = asyncio.run(run())
    assert "the billing desk" in over_cap and "approval" in over_cap
    assert legal == "Please keep every letter you received; a colleague will call you."


def test_serve_refuses_a_back_office_address_where_another_service_answers(tmp_path: Path) -> None:
    """Another program on the demo back office's port (another cxstack, say) would answer every order
    lookup with 404, which customers read as "no such order": serve says so and does not start."""
    from fastapi import FastAPI

    from cxstack.testing.http_standin import LocalHttpServer

    other = FastAPI()

    @other.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    with LocalHttpServer(other) as url:
        result = CliRunner().invoke(
            app,
            ["serve", str(demo_workspace_path()), "--home", str(tmp_path / "home"), "--embedder", "hashing"],
            env={"CXSTACK_BACKOFFICE_URL": url},
        )
    assert result.exit_code == 1
    assert "is not the demo back office" in result.output
