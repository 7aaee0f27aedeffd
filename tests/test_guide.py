"""docs/first-workspace.md is followed literally: every file it shows is written, every command it shows is
run, and every output line it shows must appear in the real output. The other tests hold the guide's actions
to the back-office contract the guide describes, against a real local HTTP server."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from cxstack.app import CxApp, Settings, build
from cxstack.cli.main import app
from cxstack.strategy.customers import parse_customers_csv
from cxstack.testing.http_standin import RecordedRequest, Reply, ScriptedBackend
from cxstack.workspace.loader import load_workspace

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "first-workspace.md"
# Commands that train a router: the fast embedder keeps the test quick (the guide uses the default).
EMBEDDER_COMMANDS = {"chat", "replay", "router"}
runner = CliRunner()


@dataclass
class FileBlock:
    path: str
    text: str
    line: int


@dataclass
class Command:
    argv: list[str]
    line: int
    typed: list[str] = field(default_factory=list)  # `you>` lines: what is typed into chat
    shown: list[str] = field(default_factory=list)  # output lines the guide shows


@dataclass
class Export:
    name: str
    value: str


Step = FileBlock | Command | Export


def guide_steps(markdown: str) -> list[Step]:
    """The guide's file blocks (```lang title="path"```) and console blocks, in reading order."""
    steps: list[Step] = []
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type != "fence":
            continue
        line = (token.map or [0])[0] + 1
        title = re.search(r'title="([^"]+)"', token.info)
        if title:
            steps.append(FileBlock(title.group(1), token.content, line))
            continue
        if token.info.split(" ", 1)[0] != "console":
            continue
        current: Command | None = None
        for offset, text in enumerate(token.content.splitlines(), start=line + 1):
            if text.startswith("$ export "):
                name, _, value = text.removeprefix("$ export ").partition("=")
                steps.append(Export(name, value))
                current = None
            elif text.startswith("$ "):
                current = Command(shlex.split(text[2:]), offset)
                steps.append(current)
            elif current is None:
                raise AssertionError(f"first-workspace.md:{offset}: output before any command: {text!r}")
            elif text.startswith("you> "):
                current.typed.append(text.removeprefix("you> "))
            else:
                current.shown.append(text)
    return steps


def _normal(text: str) -> str:
    return " ".join(text.split())


def missing_lines(shown: list[str], output: str) -> list[str]:
    """Shown lines not found in `output`: whitespace is not compared, and `…` stands for anything."""
    actual = _normal(output)
    missing = []
    for line in shown:
        parts = [_normal(p) for p in line.split("…") if _normal(p)]
        position = 0
        for part in parts:
            found = actual.find(part, position)
            if found < 0:
                missing.append(line)
                break
            position = found + len(part)
    return missing


@pytest.fixture
def in_a_fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXSTACK_HOME", str(tmp_path / "state"))
    for name in ("WREN_API_TOKEN", "CXSTACK_EMBEDDER", "CXSTACK_DRY_RUN_ACTIONS", "CXSTACK_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


def test_the_guide_runs_as_written(in_a_fresh_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = guide_steps(GUIDE.read_text(encoding="utf-8"))
    commands = [s for s in steps if isinstance(s, Command)]
    assert {c.argv[1] for c in commands} >= {"init", "validate", "customers", "chat", "replay"}
    assert len([s for s in steps if isinstance(s, FileBlock)]) >= 8
    for step in steps:
        if isinstance(step, FileBlock):
            assert step.path.startswith("wren/"), f"first-workspace.md:{step.line}: {step.path}"
            target = in_a_fresh_folder / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.text, encoding="utf-8")
            continue
        if isinstance(step, Export):
            monkeypatch.setenv(step.name, step.value)
            continue
        assert step.argv[0] == "cxstack", f"first-workspace.md:{step.line}: only cxstack commands run here"
        args = step.argv[1:]
        if args[0] in EMBEDDER_COMMANDS:
            args += ["--embedder", "hashing"]
        typed = "".join(f"{line}\n" for line in step.typed) if step.typed else None
        result = runner.invoke(app, args, input=typed)
        where = f"first-workspace.md:{step.line}: `{shlex.join(step.argv)}`"
        assert result.exit_code == 0, f"{where} exited {result.exit_code}:\n{result.output}"
        missing = missing_lines(step.shown, result.output)
        assert missing == [], f"{where}: lines the guide shows but the command did not print: {missing}\n" + (
            result.output
        )


def test_output_lines_are_matched_in_order_with_ellipses() -> None:
    output = "valid Wren Energy version ws_1: 10 intents\n│ all │    13 │  7 │"
    assert missing_lines(["valid Wren Energy version …: 10 intents", "… all │ 13 │ 7 │…"], output) == []
    assert missing_lines(["… all │ 14 │…"], output) == ["… all │ 14 │…"]
    assert missing_lines(["10 intents … valid"], output) == ["10 intents … valid"]


# --- the back office the guide describes (section 6) --------------------------------------------------------

BILLS = {
    "BL-100234": {
        "bill_number": "BL-100234",
        "customer_id": "C-1001",
        "amount_due": "£84.20",
        "due_date": "3 March",
    },
    "BL-100377": {
        "bill_number": "BL-100377",
        "customer_id": "C-1003",
        "amount_due": "£61.75",
        "due_date": "9 March",
    },
}
ACCOUNTS = {("priya.shah@example.com", "BS14DJ"): "C-1001"}
TOKEN = "guide-test-token"


def _bill(request: RecordedRequest) -> Reply:
    bill = BILLS.get(request.path_params["bill_number"].upper())
    return Reply(200, bill) if bill else Reply(404, {"detail": "no such bill"})


def _verify(request: RecordedRequest) -> Reply:
    body = request.json or {}
    key = (str(body.get("email", "")).lower(), str(body.get("postcode", "")).replace(" ", "").upper())
    customer = ACCOUNTS.get(key)
    return Reply(200, {"customer_id": customer}) if customer else Reply(404, {"detail": "no match"})


@pytest.fixture
def billing_api() -> Iterator[tuple[str, ScriptedBackend]]:
    backend = ScriptedBackend()
    backend.on("GET", "/bills/{bill_number}", handler=_bill)
    backend.on("POST", "/bills/{bill_number}/refunds", Reply(201, {"refund_id": "RF-2291"}))
    backend.on("POST", "/verify", handler=_verify)
    with backend.serve() as base_url:
        yield base_url, backend


@pytest.fixture
async def wren(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, billing_api: tuple[str, ScriptedBackend]
) -> Any:
    """The guide's workspace, its connector pointed at the stand-in billing API, customers imported."""
    monkeypatch.setenv("WREN_API_TOKEN", TOKEN)
    root = tmp_path / "guide"
    for step in guide_steps(GUIDE.read_text(encoding="utf-8")):
        if isinstance(step, FileBlock):
            target = root / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.text, encoding="utf-8")
    settings_file = root / "wren" / "cxstack.yaml"
    text = settings_file.read_text(encoding="utf-8")
    real_url = re.search(r"base_url: (\S+)", text)
    assert real_url is not None
    settings_file.write_text(text.replace(real_url.group(1), billing_api[0]), encoding="utf-8")
    workspace = load_workspace(root / "wren")
    cx = build(Settings(home=tmp_path / "state", embedder="hashing"), workspace=workspace)
    customers = parse_customers_csv(
        root / "wren" / "samples" / "customers.csv", attribute_types=workspace.strategy.attributes
    )
    cx.store.upsert_customers(customers)
    await cx.start()
    yield cx
    await cx.stop()


async def _say(cx: CxApp, conversation: str, text: str, customer: str | None) -> Any:
    if customer is None:  # an anonymous web-chat visitor: the channel vouches for nobody
        await cx.post_message(conversation, text, customer_id=f"anon_{conversation}", channel="webchat")
    else:
        await cx.post_message(conversation, text, customer_id=customer, channel="webchat", verified=True)
    await cx.wait_idle(conversation)
    view = cx.conversation_view(conversation)
    assert view is not None
    return view.traces[-1]


async def test_a_customer_sees_their_own_bill_and_not_someone_elses(
    wren: CxApp, billing_api: tuple[str, ScriptedBackend]
) -> None:
    own = await _say(wren, "own", "how much is bill BL-100234?", "C-1001")
    assert own.reply == "Bill BL-100234 is for £84.20 and is due on 3 March."
    other = await _say(wren, "other", "what do I owe on BL-100377?", "C-1001")
    assert "couldn't find BL-100377" in other.reply and "61.75" not in other.reply
    [request, *_] = billing_api[1].requests_to("GET", "/bills/BL-100234")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-customer-id"] == "C-1001" and request.headers["idempotency-key"]


async def test_a_refund_is_confirmed_then_sent_once_with_the_profiles_account(
    wren: CxApp, billing_api: tuple[str, ScriptedBackend]
) -> None:
    asked = await _say(wren, "refund", "I paid bill BL-100234 twice, please refund the £42.50", "C-1001")
    assert asked.reply == (
        "Just to confirm, shall I refund £42.50 paid on bill BL-100234 to your bank account? (yes/no)"
    )
    assert billing_api[1].requests_to("POST", "/bills/BL-100234/refunds") == []
    done = await _say(wren, "refund", "yes", "C-1001")
    assert "(reference RF-2291)" in done.reply and done.outcome == "automated"
    [refund] = billing_api[1].requests_to("POST", "/bills/BL-100234/refunds")
    assert refund.json == {"amount": 42.5, "customer_id": "C-1001"}


async def test_over_the_limit_and_priority_services_refunds_go_to_people(
    wren: CxApp, billing_api: tuple[str, ScriptedBackend]
) -> None:
    over = await _say(wren, "over", "I overpaid £180 on BL-100377, can I have it back?", "C-1003")
    assert (over.outcome, over.reason_code) == ("escalated", "amount_over_cap")
    # Tom's CSV row says `yes`: declared boolean, it is true, and the rule fires.
    tom = await _say(wren, "tom", "I paid my bill twice by mistake, can I get £30 back?", "C-1002")
    assert (tom.outcome, tom.reason_code) == ("escalated", "policy_rule:priority-services-to-care")
    assert "our customer care team" in tom.reply
    assert not [r for r in billing_api[1].requests if r.path.endswith("/refunds")]


async def test_an_anonymous_visitor_is_verified_before_their_bill_is_shown(wren: CxApp) -> None:
    first = await _say(wren, "anon", "how much is bill BL-100234?", None)
    assert first.reply.startswith("Before I look at your account, I need to check who I'm talking to.")
    assert "What email address" in first.reply
    second = await _say(wren, "anon", "priya.shah@example.com", None)
    assert second.reply == "And the postcode of the property we supply?"
    third = await _say(wren, "anon", "BS1 4DJ", None)
    assert (
        third.reply == "Thanks, that matches our records. Bill BL-100234 is for £84.20 and is due on 3 March."
    )


async def test_a_visitor_who_cannot_be_verified_reaches_a_person(wren: CxApp) -> None:
    last = None
    for _ in range(3):
        await _say(wren, "stranger", "how much is my bill?", None)
        await _say(wren, "stranger", "someone@example.org", None)
        last = await _say(wren, "stranger", "AB1 2CD", None)
        if last.outcome == "escalated":
            break
    assert last is not None and (last.outcome, last.reason_code) == ("escalated", "identity_required")
