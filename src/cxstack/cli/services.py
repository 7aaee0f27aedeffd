"""Helpers the CLI commands share: the demo back office, customer imports, new workspaces."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.progress import track

from cxstack.domain.ports import Store
from cxstack.optimization.replay import ReplayedConversation, ScriptedConversation, replay_scripts
from cxstack.strategy.customers import parse_customers_csv
from cxstack.workspace.reference import ReferenceInputs, render_reference
from cxstack.workspace.workspace import Workspace

if TYPE_CHECKING:
    from cxstack.app import Engine, Settings
    from cxstack.knowledge.needs import KnowledgeModel
    from cxstack.knowledge.ports import Embedder
    from cxstack.knowledge.retrieval import KnowledgeIndex

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


BACKOFFICE_SERVICE = "northwind-backoffice"  # what the demo back office's /health names itself


class BackofficePortTakenError(RuntimeError):
    """Something that is not the demo back office answers at its address."""


def _answers(url: str) -> bool:
    """Does the demo back office answer at `url`? Something else answering there is an error: its 404s would
    read as "no such order" to every customer."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=0.5)
    except httpx.HTTPError:
        return False
    try:
        service = response.json().get("service") if response.status_code == 200 else None
    except (ValueError, AttributeError):
        service = None
    if service != BACKOFFICE_SERVICE:
        raise BackofficePortTakenError(
            f"{url} answers, but it is not the demo back office: stop what runs there, or point the "
            "backoffice connector elsewhere (CXSTACK_BACKOFFICE_URL)"
        )
    return True


DEMO_NAME = "Northwind Outfitters"
DEMO_BACKOFFICE_URL = "http://127.0.0.1:8765"


def is_demo(workspace: Workspace) -> bool:
    """The demo workspace (or a copy of it): its name and its back office's address."""
    connector = workspace.settings.connectors.get("backoffice")
    return (
        workspace.settings.name == DEMO_NAME
        and connector is not None
        and (connector.base_url.rstrip("/") == DEMO_BACKOFFICE_URL)
    )


def ensure_backoffice(
    workspace: Workspace,
    home: Path,
    console: Console,
    *,
    force: bool = False,
    url: str | None = None,
) -> str | None:
    """Starts the demo back office in this process when the workspace is the demo (or `force`) and its local
    back office is not up. Another workspace's `backoffice` connector is its own system: never replaced.
    `url` overrides the connector's address (CXSTACK_BACKOFFICE_URL)."""
    connector = workspace.settings.connectors.get("backoffice")
    if connector is None or not (force or is_demo(workspace)):
        return None
    base_url = url or connector.base_url
    parts = urlsplit(base_url)
    if parts.hostname not in _LOCAL_HOSTS or _answers(base_url):
        return base_url
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
    while time.monotonic() < deadline and not _answers(base_url):
        time.sleep(0.05)
    console.print(f"[dim]demo back office running at {base_url} (data in {home / 'backoffice.db'})[/]")
    return base_url


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


_GUIDES = """\
# Every key of every file: docs/reference.md in the cxstack repository, or `cxstack docs reference`.
# A guide that builds a support assistant from this skeleton: docs/first-workspace.md.
"""
_REFERENCE = "# Every key of this file: docs/reference.md, or `cxstack docs reference`.\n"

# Examples shown commented out in the skeleton. `skeleton_files(with_examples=True)` writes them live, so a
# test can prove that what the comments teach is a valid workspace.
_EXAMPLE_CONNECTOR = """\
connectors:
  backoffice:
    base_url: https://backoffice.example.com/api
    timeout_s: 5
    headers:
      Authorization: "Bearer ${BACKOFFICE_TOKEN}"
"""
_EXAMPLE_ATTRIBUTES = """\
attributes:
  vulnerable: boolean
"""
_EXAMPLE_ATTRIBUTE_RULE = """\
- id: vulnerable-customers-to-people
  description: Customers in a vulnerable situation talk to a person about money
  when: {attributes: {vulnerable: true}, intent_in: [billing_question, invoice_refund]}
  then: {force_human: true, priority: high}
"""
_EXAMPLE_INTENT = """\
- name: invoice_refund
  description: ask for a refund of an invoice paid twice
  mechanism: action
  action: refund_invoice
  owner: billing@example.com
  examples:
    - I paid invoice INV-20931 twice
    - please refund my double payment
    - I want my money back for an invoice I paid twice
    - refund the $40 I overpaid
    - can I get a refund on my last invoice
"""
_EXAMPLE_ACTIONS = """\
- name: get_invoice
  description: Look up one invoice; also checks whose it is before a refund.
  method: GET
  path: /invoices/{invoice_number}
  scope: invoices:read
  # Another customer's invoice is "not found" to them, exactly like one that does not exist.
  owner: {field: customer_id}
  slots:
    - name: invoice_number
      # Read from the customer's message: the first group of the pattern is the value.
      pattern: '(?i)\\b(INV-\\d{5})\\b'
      prompt: Which invoice is it? The number starts with INV- (e.g. INV-20931).
  success_reply: Invoice {invoice_number} is for {amount_due}, due on {due_date}.

- name: refund_invoice
  description: Refund money paid twice on an invoice.
  method: POST
  path: /invoices/{invoice_number}/refunds
  scope: refunds:write
  # A change is checked before it happens, with a read that takes the same slot.
  owner: {field: customer_id, check_with: get_invoice}
  amount_slot: amount
  max_amount: 100           # above this (in the workspace currency) a person decides
  requires_confirmation: true
  slots:
    - name: invoice_number
      pattern: '(?i)\\b(INV-\\d{5})\\b'
      prompt: Which invoice did you pay twice? (e.g. INV-20931)
    - name: amount
      type: money           # only ever an amount the customer wrote, in the workspace currency
      prompt: How much should I refund?
    - name: customer
      from_customer: id     # from the verified profile, never from what the customer types
  success_reply: Done, {amount} is on its way back (refund {refund_id}).
"""


def _block(text: str, *, indent: str = "", live: bool = False) -> str:
    """`text` indented, and commented out unless `live`."""
    prefix = indent if live else f"{indent}# "
    return "".join(f"{prefix}{line}".rstrip() + "\n" for line in text.splitlines())


def skeleton_files(*, with_examples: bool = False) -> dict[str, str]:
    """The files `cxstack init` writes. With `with_examples`, the commented examples are live instead (a test
    validates that version too; it needs BACKOFFICE_TOKEN set)."""
    live = with_examples
    return {
        "cxstack.yaml": _GUIDES
        + """\
version: 1
name: Example Co
# What the assistant helps with, in your customers' words: said after a greeting and when a message is not
# understood.
scope: our opening hours and questions about your invoices
language: en
currency: USD     # amounts customers write are read in this currency (ISO 4217: USD, EUR, GBP, ...)
locale: en_US     # how they write numbers and money: en_US reads 1,500 as fifteen hundred, de_DE as 1.5
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
      customer_label: our support team
# The back-office APIs that actions (actions.yaml) call. A secret is never written here: ${BACKOFFICE_TOKEN}
# is read from the environment when cxstack starts (export BACKOFFICE_TOKEN=...).
"""
        + _block(_EXAMPLE_CONNECTOR, live=live),
        "strategy.yaml": _REFERENCE
        + """\
version: 1
timezone: UTC
objectives:
  - Resolve simple questions instantly; never automate what needs judgement
# Custom customer attributes (extra columns of a customer CSV) and their types: string, number, boolean or
# date. Once typed, a CSV's "yes" is true, and validate checks every rule that tests the attribute.
"""
        + _block(_EXAMPLE_ATTRIBUTES, live=live)
        + """\
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
  # A rule on a custom attribute (declare it under `attributes:` above):
"""
        + _block(_EXAMPLE_ATTRIBUTE_RULE, indent="  ", live=live),
        "intents.yaml": _REFERENCE
        + """\
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
  # An intent resolved by a back-office action (actions.yaml):
"""
        + _block(_EXAMPLE_INTENT, indent="  ", live=live),
        "knowledge/support.yaml": """\
version: 1
facts:
  - id: support-hours
    text: Our support team is open Monday to Friday, 9:00 to 18:00 CET, and closed at weekends.
    owner: support@example.com
    review_by: 2027-06-30
    tags: [support]
    intents: [opening_hours]
""",
        "actions.yaml": _REFERENCE
        + """\
# Back-office actions, called through a connector of cxstack.yaml. To add some, replace `[]` below with a
# list like the example (and uncomment the connector in cxstack.yaml and the intent in intents.yaml).
version: 1
"""
        + ("actions:\n" if live else "actions: []\n")
        + _block(_EXAMPLE_ACTIONS, indent="  ", live=live),
        "samples/conversations.jsonl": "".join(
            json.dumps(line, ensure_ascii=False) + "\n" for line in _SAMPLE_CONVERSATIONS
        ),
    }


# Scripted conversations for `cxstack replay` (format: docs/reference.md, "Replay scripts").
_SAMPLE_CONVERSATIONS: list[dict[str, Any]] = [
    {
        "id": "hours-1",
        "messages": ["hi, when are you open?"],
        "expected": {"intent": "opening_hours", "outcome": "automated"},
    },
    {
        "id": "billing-key-account",
        "customer": {"id": "cus_1", "plan": "pro", "arr": 30000},
        "messages": ["why was I charged twice this month?"],
        "expected": {"intent": "billing_question", "outcome": "escalated"},
    },
    {
        "id": "small-talk-1",
        "messages": ["what's the weather like tomorrow?"],
        "expected": {"intent": "small_talk", "outcome": "automated"},
    },
]


def skeleton_next_steps(directory: Path) -> str:
    """What `cxstack init` suggests after writing a skeleton."""
    folder = directory.as_posix()
    steps = [
        (f"cxstack validate {folder}", "check it: every problem with its file:line and a fix"),
        (f"cxstack chat {folder}", "talk to it in the terminal, with each layer's decision"),
        (
            f"cxstack replay {folder} {folder}/samples/conversations.jsonl",
            "replay the sample conversations: automation and escalation rates",
        ),
    ]
    width = max(len(command) for command, _ in steps) + 2
    return "\n".join(
        [
            "Next steps:",
            *(f"  {command:<{width}}{why}" for command, why in steps),
            "Make it yours: the guide docs/first-workspace.md builds a support assistant from this",
            "skeleton step by step; every key of every file is in docs/reference.md (or run",
            "`cxstack docs reference`).",
        ]
    )


def new_workspace_skeleton(directory: Path, *, with_examples: bool = False) -> None:
    for name, text in skeleton_files(with_examples=with_examples).items():
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
    at: datetime | None = None,
) -> list[ReplayedConversation]:
    """Scripted conversations through a `CxApp` on `engine`, the path `serve` takes (store, turn worker,
    orchestrator) on the thread runtime. `settings` None: a throwaway SQLite store in a temporary folder
    (under `scratch_dir` if given, e.g. a RAM disk for many runs). `at`: every turn runs at this moment, so
    rules on hours and weekdays (and fact validity) give the same result whenever the replay runs."""
    if settings is None:
        with tempfile.TemporaryDirectory(prefix="cxstack-replay-", dir=scratch_dir) as folder:
            return await replay_in_service(
                engine,
                scripts,
                throwaway_settings(Path(folder)),
                conversation_prefix=conversation_prefix,
                concurrency=concurrency,
                on_done=on_done,
                at=at,
            )
    from cxstack.app import build

    clock = (lambda: at) if at is not None else None
    cx = build(settings.model_copy(update={"runtime": "thread"}), engine=engine, clock=clock)
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


def ground_lines(
    lines: Sequence[str], embedder_name: str | None, *, progress: Console
) -> list[dict[str, Any]]:
    """`cxstack kb ground`: one result per non-empty line, in order; a bad line gets its own error."""
    from cxstack.integrations.embedders.registry import load_embedder
    from cxstack.knowledge.grounding import GroundingChecker

    checker = GroundingChecker(load_embedder(embedder_name) if embedder_name else None)
    results: list[dict[str, Any]] = []
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    for number, line in track(numbered, description="grounding", console=progress, transient=True):
        identifier: Any = f"line {number}"
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ValueError("a line must be a JSON object")
            identifier = item.get("id", identifier)
            reply, knowledge = item.get("reply"), item.get("knowledge", [])
            if not isinstance(reply, str):
                raise ValueError('"reply" must be a string')
            if not isinstance(knowledge, list) or not all(isinstance(k, str) for k in knowledge):
                raise ValueError('"knowledge" must be a list of strings')
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            results.append({"id": identifier, "error": str(exc)})
            continue
        result = checker.check(reply, knowledge)
        results.append(
            {
                "id": identifier,
                "score": result.score,
                "supported": result.supported,
                "unsupported": result.unsupported,
            }
        )
    return results


@dataclass(frozen=True)
class KnowledgeSearch:
    """What `kb search` needs from a workspace: its index, its fitted model (if any), its threshold."""

    index: KnowledgeIndex
    model: KnowledgeModel | None
    min_score: float


def open_knowledge(workspace: Workspace, embedder_name: str | None = None) -> KnowledgeSearch:
    from cxstack.integrations.embedders.registry import CachedEmbedder, load_embedder
    from cxstack.knowledge.needs import load_model
    from cxstack.knowledge.retrieval import KnowledgeIndex

    embedder = CachedEmbedder(load_embedder(embedder_name or workspace.settings.embedder))
    return KnowledgeSearch(
        KnowledgeIndex(workspace.facts, embedder),
        load_model(workspace.root),
        workspace.settings.thresholds.knowledge_min_score,
    )


def _conversation(item: Any) -> list[str]:
    """The `messages` of a search line: texts oldest first (or objects with a "text")."""
    if not isinstance(item, dict):
        raise ValueError("a line must be a JSON object")
    messages = item.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list of texts, oldest first')
    texts: list[str] = []
    for message in messages:
        text = message.get("text") if isinstance(message, dict) else message
        if not isinstance(text, str):
            raise ValueError('each message must be a text (or an object with a "text")')
        texts.append(text)
    return texts


def search_lines(
    index: KnowledgeIndex,
    lines: Sequence[str],
    *,
    model: KnowledgeModel | None,
    min_score: float,
    k: int = 10,
    progress: Console | None = None,
) -> list[dict[str, Any]]:
    """`cxstack kb search --batch`: one result per non-empty line, in order; a bad line gets its own error."""
    from cxstack.knowledge.search import search_conversation

    results: list[dict[str, Any]] = []
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    steps = (
        track(numbered, description="searching", console=progress, transient=True)
        if progress is not None
        else numbered
    )
    for number, line in steps:
        identifier: Any = f"line {number}"
        try:
            item = json.loads(line)
            if isinstance(item, dict):
                identifier = item.get("id", identifier)
            messages = _conversation(item)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            results.append({"id": identifier, "error": str(exc)})
            continue
        found = search_conversation(index, messages, model=model, min_score=min_score, k=k)
        results.append({"id": identifier, **found.to_json()})
    return results


# ---- kb impact --replay ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayedChange:
    conversation_id: str
    text: str  # the customer's message
    before: str | None  # the reply with the fact's earlier version
    after: str | None  # the reply with its current version
    facts_before: tuple[str, ...]
    facts_after: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after or self.facts_before != self.facts_after


def stored_scripts(store: Store, conversation_ids: Sequence[str]) -> list[ScriptedConversation]:
    """The customer messages of stored conversations, as scripts to replay (same customer and channel)."""
    from cxstack.domain.models import ConversationId, Customer, Role

    scripts = []
    for conversation_id in conversation_ids:
        conversation = store.get_conversation(ConversationId(conversation_id))
        if conversation is None:
            continue
        texts = [m.text for m in store.list_messages(conversation.id) if m.role == Role.CUSTOMER]
        customer = store.get_customer(conversation.customer_id) or Customer(id=conversation.customer_id)
        if texts:
            scripts.append(
                ScriptedConversation(
                    id=conversation_id,
                    customer=customer,
                    channel=conversation.channel,
                    messages=tuple(texts),
                    verified=conversation.verified,
                )
            )
    return scripts


def replay_fact_change(
    workspace: Workspace,
    fact_id: str,
    earlier: dict[str, Any] | None,
    scripts: Sequence[ScriptedConversation],
    *,
    embedder_name: str | None = None,
) -> list[ReplayedChange]:
    """The scripts run twice through the service (throwaway stores, dry-run actions, the same moment): with
    the fact as it was (`earlier`; None: it did not exist) and as the workspace has it now. Only the fact
    differs between the two runs, so a changed reply is the fact change's doing."""
    import asyncio

    from cxstack.app import build_engine
    from cxstack.workspace.loader import canonical_content, workspace_from_content

    content = canonical_content(workspace)
    others = [f for f in content["facts"] if f["id"] != fact_id]
    before_content = {
        **content,
        "facts": sorted([*others, *([earlier] if earlier else [])], key=lambda f: f["id"]),
    }
    before_workspace = workspace_from_content(before_content, root=workspace.root)
    at = datetime.now().astimezone()
    runs = []
    for version in (before_workspace, workspace):
        engine = build_engine(version, embedder_name=embedder_name, dry_run_actions=True)
        try:
            runs.append(asyncio.run(replay_in_service(engine, scripts, None, at=at)))
        finally:
            asyncio.run(engine.aclose())
    changes = []
    for before, after in zip(runs[0], runs[1], strict=True):
        for old, new in zip(before.turns, after.turns, strict=True):
            changes.append(
                ReplayedChange(
                    conversation_id=before.script.id,
                    text=old.text,
                    before=old.reply,
                    after=new.reply,
                    facts_before=old.facts,
                    facts_after=new.facts,
                )
            )
    return changes


def paraphrase_embedder() -> Embedder | None:
    """The embedder the audit confirms rewordings with (`PARAPHRASE_EMBEDDER`), or None when it cannot load
    here (the audit then leaves rewordings out and still runs every other check)."""
    from cxstack.integrations.embedders.minilm_onnx import EmbedderUnavailableError
    from cxstack.integrations.embedders.registry import load_embedder
    from cxstack.knowledge.audit import PARAPHRASE_EMBEDDER

    try:
        return load_embedder(PARAPHRASE_EMBEDDER)
    except EmbedderUnavailableError:
        return None
