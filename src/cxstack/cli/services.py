"""Helpers the CLI commands share: the demo back office, customer imports, new workspaces."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console

from cxstack.domain.ports import Store
from cxstack.strategy.customers import parse_customers_csv
from cxstack.workspace.reference import ReferenceInputs, render_reference
from cxstack.workspace.workspace import Workspace

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_backoffice(workspace: Workspace, home: Path, console: Console) -> str | None:
    """Starts the demo back office in this process when the workspace points at a local one that isn't up."""
    connector = workspace.settings.connectors.get("backoffice")
    if connector is None:
        return None
    parts = urlsplit(connector.base_url)
    if parts.hostname not in _LOCAL_HOSTS or _answers(connector.base_url):
        return connector.base_url
    import uvicorn

    from cxstack.demo.backoffice import create_backoffice_app

    home.mkdir(parents=True, exist_ok=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_backoffice_app(home / "backoffice.db"),
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 80,
            log_level="warning",
        )
    )
    threading.Thread(target=server.run, name="demo-backoffice", daemon=True).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _answers(connector.base_url):
        time.sleep(0.05)
    console.print(
        f"[dim]demo back office running at {connector.base_url} (data in {home / 'backoffice.db'})[/]"
    )
    return connector.base_url


def import_customers_file(store: Store, path: Path, workspace: Workspace | None = None) -> int:
    """Imports the CSV; with a workspace, declared attributes are coerced to their types (or refused)."""
    types = workspace.strategy.attributes if workspace is not None else None
    return store.upsert_customers(parse_customers_csv(path, attribute_types=types))


def copy_demo_samples(directory: Path) -> None:
    from cxstack.demo import demo_conversations_path, demo_customers_csv

    samples = directory / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo_customers_csv(), samples / "customers.csv")
    shutil.copy(demo_conversations_path(), samples / "conversations.jsonl")


_SKELETON = {
    "cxstack.yaml": """\
version: 1
name: My support workspace
language: en
channels: [api, webchat]
embedder: minilm
thresholds:
  route_min_confidence: 0.40
  clarify_margin: 0.10
  knowledge_min_score: 0.35
  answer_min_confidence: 0.45
escalation:
  default_queue: general
  queues:
    - name: general
      description: Everything a person should look at
""",
    "strategy.yaml": """\
version: 1
timezone: UTC
objectives:
  - Resolve simple questions instantly; never automate what needs judgement
tiers:
  - name: key_account
    min_arr: 20000
    priority: high
  - name: standard
default_tier: standard
rules:
  - id: key-accounts-to-people
    description: Key accounts always reach a person for billing questions
    when: {tier_in: [key_account], intent_in: [billing_question]}
    then: {force_human: true, priority: high}
""",
    "intents.yaml": """\
version: 1
intents:
  - name: opening_hours
    description: ask when support is open
    mechanism: content
    owner: support@example.com
    examples:
      - when are you open
      - what are your opening hours
      - are you open on weekends
      - what time does support close
      - can I reach you on sunday
  - name: billing_question
    description: ask a question about an invoice or a charge
    mechanism: human
    owner: billing@example.com
    examples:
      - I have a question about my invoice
      - why was I charged twice
      - my bill looks wrong
      - can you explain this charge
      - I need a copy of my invoice
""",
    "knowledge/support.yaml": """\
version: 1
facts:
  - id: support-hours
    text: Our support team answers Monday to Friday, 9:00 to 18:00 CET.
    owner: support@example.com
    review_by: 2027-06-30
    tags: [support]
    intents: [opening_hours]
""",
    "actions.yaml": "version: 1\nactions: []\n",
}


def new_workspace_skeleton(directory: Path) -> None:
    for name, text in _SKELETON.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def reference_inputs() -> ReferenceInputs:
    """What the workspace reference needs from outside `workspace/`: the resolvers, connector types and
    embedders registered through entry points, the customer CSV columns and the replay script model."""
    from importlib.metadata import entry_points

    from cxstack.optimization.replay import _ScriptLine
    from cxstack.strategy.customers import KNOWN_COLUMNS

    def registered(group: str) -> dict[str, str]:
        return {e.name: e.value for e in entry_points(group=group)}

    return ReferenceInputs(
        mechanisms=registered("cxstack.resolvers"),
        connector_types=registered("cxstack.action_connectors"),
        embedders=registered("cxstack.embedders"),
        replay_line=_ScriptLine,
        customer_columns=KNOWN_COLUMNS,
    )


def reference_markdown() -> str:
    """docs/reference.md as `cxstack docs reference` writes it."""
    return render_reference(reference_inputs())
