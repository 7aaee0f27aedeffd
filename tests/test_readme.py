"""Every example in the README, executed: the demo's command block, the replay line format, the keys block and
the REST call. A command line added to a README code block without a run here fails `test_every_example_runs`.

`make run` and `make test` are what CI and the `serve --bootstrap-admin` test run: the only lines left out.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cxstack.api.app import create_api
from cxstack.app import Settings, build
from cxstack.cli.main import app
from cxstack.demo.backoffice import create_backoffice_app
from cxstack.optimization.replay import parse_scripts
from cxstack.testing.http_standin import LocalHttpServer
from cxstack.workspace.loader import load_workspace

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN_HERE = {"make run", "make test"}  # CI runs `make test`; serve --bootstrap-admin has its own test
runner = CliRunner()


def code_blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def command_lines() -> list[str]:
    """Every command in the README's bash blocks, without its comment."""
    lines = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"\s+#.*$", "", line).split())
            if command:
                lines.append(command)
    return lines


@pytest.fixture(scope="module")
def demo_backoffice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalHttpServer(create_backoffice_app(tmp_path_factory.mktemp("bo") / "northwind.db")) as base_url:
        yield base_url


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_backoffice: str) -> Path:
    """A project folder as after `make run`: commands run inside it, state in ./.cxstack."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXSTACK_HOME", str(tmp_path / ".cxstack"))
    monkeypatch.setenv("CXSTACK_EMBEDDER", "hashing")  # the README's default model, swapped for speed
    monkeypatch.setenv("CXSTACK_BACKOFFICE_URL", demo_backoffice)
    monkeypatch.delenv("CXSTACK_DATABASE_URL", raising=False)
    return tmp_path


def cxstack(line: str, input: str | None = None) -> Any:
    args = shlex.split(line)
    assert args[0] == ".venv/bin/cxstack", line
    result = runner.invoke(app, args[1:], input=input)
    assert result.exit_code == 0, f"{line}\n{result.output}"
    return result


def test_every_example_runs() -> None:
    """The commands the tests below run are exactly the README's (a new one must get a run here)."""
    covered = {*DEMO_BLOCK, *KEYS_BLOCK, COSTS_LINE, *NOT_RUN_HERE}
    assert set(command_lines()) == covered


DEMO_BLOCK = [
    ".venv/bin/cxstack init --demo d",
    ".venv/bin/cxstack validate d",
    ".venv/bin/cxstack chat d --customer cus_1001",
    ".venv/bin/cxstack replay d d/samples/heldout.jsonl",
    ".venv/bin/cxstack intents -w d",
    ".venv/bin/cxstack router d",
    ".venv/bin/cxstack intents import labelled.csv -w d",
    ".venv/bin/cxstack customers import d/samples/customers.csv",
    ".venv/bin/cxstack trace CONVERSATION_ID",
]
COSTS_LINE = ".venv/bin/cxstack report costs d --days 30"
KEYS_BLOCK = [
    '.venv/bin/cxstack keys create --role integration --name "crm sync"',
    ".venv/bin/cxstack keys list",
    ".venv/bin/cxstack keys revoke cxk_ab12cd34",
    'KEY=$(.venv/bin/cxstack keys create --role integration --name "shop backend" --home .cxstack)',
    "curl -s -X POST 'http://127.0.0.1:8000/v1/conversations/ticket-42/messages?wait=true' "
    "-H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' "
    '-d \'{"text": "where is my order ORD-10001?", "external_id": "ticket-42-1", "customer": "cus_1001"}\'',
]


def test_the_demo_block(project: Path) -> None:
    lines = {line.split("#")[0].strip(): line for line in DEMO_BLOCK}
    cxstack(".venv/bin/cxstack init --demo d")
    assert "valid" in cxstack(".venv/bin/cxstack validate d").output
    chatted = cxstack(
        ".venv/bin/cxstack chat d --customer cus_1001",
        input="what is your return policy?\nwhere is my order ORD-10001?\n/quit\n",
    )
    assert "bot>" in chatted.output and "ORD-10001" in chatted.output
    conversation = re.search(r"cxstack trace (\S+)", chatted.output)
    assert conversation is not None
    replayed = cxstack(".venv/bin/cxstack replay d d/samples/heldout.jsonl")
    assert "automated" in replayed.output and "escalated" in replayed.output
    assert "order_status" in cxstack(".venv/bin/cxstack intents -w d").output
    assert "held-out accuracy" in cxstack(".venv/bin/cxstack router d").output
    (project / "labelled.csv").write_text("text,intent\nwhere is my parcel?,order_status\n", encoding="utf-8")
    cxstack(".venv/bin/cxstack intents import labelled.csv -w d")
    assert "imported" in cxstack(".venv/bin/cxstack customers import d/samples/customers.csv").output
    traced = cxstack(
        lines[".venv/bin/cxstack trace CONVERSATION_ID"].replace("CONVERSATION_ID", conversation[1])
    )
    assert "return policy" in traced.output
    costs = cxstack(COSTS_LINE).output  # the chat's turns, without a model: no calls, no cost
    assert "return_policy" in costs and "order_status" in costs


def test_the_replay_line_format() -> None:
    [example] = code_blocks("json")
    [script] = parse_scripts([example])
    assert script.expected_intent == "order_status" and script.messages[-1] == "thanks, bye"


def test_the_keys_block_and_the_rest_call(project: Path, demo_backoffice: str) -> None:
    created = cxstack(KEYS_BLOCK[0])
    key = created.output.strip().splitlines()[-1]
    assert re.fullmatch(r"cxk_\w{8}_\S+", key)
    assert "crm sync" in cxstack(KEYS_BLOCK[1]).output
    cxstack(KEYS_BLOCK[2].replace("cxk_ab12cd34", key[: len("cxk_") + 8]))
    assert "revoked" in cxstack(KEYS_BLOCK[1]).output.lower()

    # KEY=$(cxstack keys create ... --home .cxstack): make run's store, then the curl call against the API
    command = KEYS_BLOCK[3][len("KEY=$(") : -1]
    shop_key = cxstack(command).output.strip().splitlines()[-1]
    curl = shlex.split(KEYS_BLOCK[4])
    url = curl[curl.index("POST") + 1]
    body = json.loads(curl[curl.index("-d") + 1])
    headers = dict(h.split(": ", 1) for h in (curl[i + 1] for i, a in enumerate(curl) if a == "-H"))
    headers["Authorization"] = headers["Authorization"].replace("$KEY", shop_key)
    cx = build(Settings(home=project / ".cxstack"), workspace=load_workspace(project / "demo-ws"))
    with TestClient(create_api(cx), base_url="http://127.0.0.1:8000") as client:
        answer = client.post(url.removeprefix("http://127.0.0.1:8000"), json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["completed"] and "ORD-10001" in (answer.json()["reply"] or "")


@pytest.fixture(autouse=True)
def demo_workspace(request: pytest.FixtureRequest) -> None:
    """The REST call runs against the demo workspace, as after `make run`."""
    if "project" in request.fixturenames:
        project: Path = request.getfixturevalue("project")
        if not (project / "demo-ws").exists():
            result = runner.invoke(app, ["init", "--demo", str(project / "demo-ws")])
            assert result.exit_code == 0, result.output
