"""Helpers the CLI commands share: the demo back office, customer imports, new workspaces."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from rich.console import Console

from cxstack.domain.ports import Store
from cxstack.optimization.replay import ReplayedConversation, ScriptedConversation, replay_scripts
from cxstack.strategy.customers import parse_customers_csv
from cxstack.workspace.workspace import Workspace

if TYPE_CHECKING:
    from cxstack.app import Engine, Settings

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
    """samples/customers.csv, and the scripted conversations as tuning.jsonl and heldout.jsonl: choose
    settings on the first, report on the second."""
    from cxstack.demo import SAMPLE_SETS, demo_conversations_path, demo_customers_csv

    samples = directory / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo_customers_csv(), samples / "customers.csv")
    for sample_set in SAMPLE_SETS:
        shutil.copy(demo_conversations_path(sample_set), samples / f"{sample_set}.jsonl")


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


async def replay_in_service(
    engine: Engine,
    scripts: Sequence[ScriptedConversation],
    settings: Settings | None,
    *,
    conversation_prefix: str = "replay_",
    concurrency: int = 1,
    scratch_dir: Path | None = None,
    on_done: Callable[[ReplayedConversation], None] | None = None,
) -> list[ReplayedConversation]:
    """Scripted conversations through a `CxApp` on `engine`, the path `serve` takes (store, turn worker,
    orchestrator) on the thread runtime. `settings` None: a throwaway SQLite store in a temporary folder
    (under `scratch_dir` if given, e.g. a RAM disk for many runs)."""
    if settings is None:
        with tempfile.TemporaryDirectory(prefix="cxstack-replay-", dir=scratch_dir) as folder:
            return await replay_in_service(
                engine,
                scripts,
                throwaway_settings(Path(folder)),
                conversation_prefix=conversation_prefix,
                concurrency=concurrency,
                on_done=on_done,
            )
    from cxstack.app import build

    cx = build(settings.model_copy(update={"runtime": "thread"}), engine=engine)
    waiting = cx.store.conversations_with_pending()
    if waiting:
        # Starting a worker here would answer them with this replay's engine (and its dry-run connector).
        raise StoreBusy(
            f"{len(waiting)} conversation(s) in {settings.resolved_database_url()} have unanswered messages "
            f"(e.g. {waiting[0]}); replay into a store no live service is using, or let `serve` answer them"
        )
    await cx.start()
    try:
        return await replay_scripts(
            cx, scripts, conversation_prefix=conversation_prefix, concurrency=concurrency, on_done=on_done
        )
    finally:
        await cx.stop()


class StoreBusy(RuntimeError):
    pass


def throwaway_settings(folder: Path) -> Settings:
    """A store of its own: CXSTACK_DATABASE_URL and CXSTACK_HOME are deliberately not consulted."""
    from cxstack.app import Settings

    return Settings(home=folder, database_url=f"sqlite:///{folder / 'replay.db'}", runtime="thread")
