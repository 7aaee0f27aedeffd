"""Composition root: wires adapters into the layers. Used by the API, the CLI, the runtime, benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from filelock import FileLock
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cxstack import __version__
from cxstack.channels import email as email_channel
from cxstack.channels import gate
from cxstack.channels.base import Channel
from cxstack.channels.outbox import OutboxDispatcher
from cxstack.channels.rest import ReplyBroker, RestChannel
from cxstack.channels.whatsapp import CHANNEL as WHATSAPP
from cxstack.channels.whatsapp import UnconfiguredChannel, WhatsAppChannel, WhatsAppSettings
from cxstack.domain.handoff import Export, ExportStatus
from cxstack.domain.llm import LLMSessions
from cxstack.domain.models import (
    Conversation,
    ConversationId,
    Customer,
    CustomerId,
    EscalationPacket,
    InboundMessage,
    Message,
    Trace,
)
from cxstack.domain.ports import IngestResult, OutboxItem, OutboxStatus, Store
from cxstack.integrations.actions.registry import load_connector
from cxstack.integrations.embedders.registry import CachedEmbedder, load_embedder
from cxstack.integrations.helpdesks.service import HandoffService, build_helpdesk
from cxstack.integrations.llm.registry import llm_client
from cxstack.knowledge.ports import Embedder
from cxstack.knowledge.retrieval import KnowledgeIndex
from cxstack.knowledge.versions import read_facts, record_file_versions
from cxstack.logs import configure_logging
from cxstack.optimization.experiments import ExperimentingOrchestrator, check_history, variant_workspaces
from cxstack.orchestration.orchestrator import Orchestrator
from cxstack.orchestration.router import IntentRouter, RouterFitReport
from cxstack.resolution.ports import ActionConnector
from cxstack.resolution.registry import ResolverDeps, ResolverRegistry
from cxstack.runtime.embedded import EmbeddedRuntime
from cxstack.runtime.ingest import IngestBatcher
from cxstack.runtime.owner import Mode, RuntimeClaim
from cxstack.runtime.process import ProcessRuntime

if TYPE_CHECKING:
    from cxstack.runtime.jobs import ProcrastinateRuntime
from cxstack.store.db import create_engine_for, cxstack_home, database_url, migrate
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content
from cxstack.workspace.validate import WorkspaceInvalid
from cxstack.workspace.workspace import Workspace

log = logging.getLogger(__name__)
_Requeued = TypeVar("_Requeued")


class Settings(BaseSettings):
    """Read from CXSTACK_* environment variables; the CLI passes its options on top."""

    model_config = SettingsConfigDict(env_prefix="CXSTACK_", extra="ignore")

    home: Path = Field(default_factory=cxstack_home)
    database_url: str | None = None
    workspace: Path | None = None
    embedder: str | None = None  # overrides the workspace's choice (e.g. "hashing" in tests)
    backoffice_url: str | None = None  # overrides connectors.backoffice.base_url
    dry_run_actions: bool = False
    # Overrides the workspace's llm.base_url (a local model server started for this run, say).
    llm_base_url: str | None = None
    # False: run without the workspace's LLM even when one is configured (the offline path).
    llm: bool = True
    # One way each: "process" is the embedded default `serve` runs on one machine (turns in a child process
    # with a core of its own, so acknowledging webhooks never waits for them; periodic work on this event
    # loop; one such process per database). "procrastinate": everything beyond one process, PostgreSQL only;
    # this process runs no turns nor periodic work, `cxstack worker` processes do. "thread": turns on a
    # thread of this process, for the library, `chat`, replays and tests (no database lock: not for serving).
    runtime: Literal["thread", "process", "procrastinate"] = "thread"
    # Overrides the workspace's per-channel burst windows (0: every message is its own turn; tests, tools).
    burst_window_ms: int | None = None
    # How often a running service looks at the knowledge files for edits (API, kb rollback, a git pull) and
    # answers with them from the next turn; 0: never (the facts stay as they were at start).
    knowledge_reload_seconds: float = 2.0
    # How often the service draws settled conversations for review (and judges them); 0: never (run
    # `cxstack review sample` or POST /v1/reviews/sample instead).
    monitoring_seconds: float = 300.0

    def burst_windows(self, workspace: Workspace) -> dict[str, int]:
        windows = dict(workspace.settings.burst_window_ms)
        if self.burst_window_ms is None:
            return windows
        return {channel: self.burst_window_ms for channel in {*windows, *workspace.settings.channels}}

    def cache_dir(self) -> Path:
        """Trained routers, by workspace version and embedder (safe to delete)."""
        return self.home / "cache"

    # Signs web-chat session tokens; every API process of a deployment needs the same one. Unset: a secret is
    # created once in `home` (file `secret_key`, mode 0600).
    secret_key: SecretStr | None = None
    session_minutes: float = 30.0  # a web-chat session token's lifetime; the page refreshes it while open
    max_body_bytes: int = 64 * 1024  # larger request bodies get 413, never read further
    # A verified API key is remembered this long: a key revoked in another process works here until then.
    api_key_cache_seconds: float = 30.0

    def resolved_database_url(self) -> str:
        return self.database_url or database_url(self.home)


@dataclass
class Engine:
    """Everything that depends on one workspace version: trained router, knowledge index, resolvers."""

    workspace: Workspace
    orchestrator: Orchestrator
    router: IntentRouter
    router_report: RouterFitReport
    knowledge: KnowledgeIndex
    connectors: Mapping[str, ActionConnector]
    embedder: Embedder
    load_seconds: float
    llm: LLMSessions | None = None

    def with_connectors(self, connectors: Mapping[str, ActionConnector]) -> Engine:
        """The same trained router and knowledge index, wired to other connectors (e.g. a dry run)."""
        orchestrator = _orchestrator(self.router, self.knowledge, connectors, self.llm)
        return replace(self, orchestrator=orchestrator, connectors=connectors)

    async def aclose(self) -> None:
        if self.llm is not None:
            await self.llm.aclose()
        for connector in self.connectors.values():
            close = getattr(connector, "aclose", None)
            if close is not None:
                await close()


def build_engine(
    workspace: Workspace,
    *,
    embedder: Embedder | None = None,
    embedder_name: str | None = None,
    backoffice_url: str | None = None,
    dry_run_actions: bool = False,
    connectors: Mapping[str, ActionConnector] | None = None,
    cache_dir: Path | None = None,
    llm: LLMSessions | Literal["workspace"] | None = "workspace",
    llm_base_url: str | None = None,
) -> Engine:
    """Trains the router and indexes knowledge for `workspace`. With `cache_dir`, a router trained before for
    the same workspace version and embedder is loaded instead (serve's worker process, a restarted worker
    and a restarted serve then start in seconds, not minutes). `llm`: the workspace's configured model
    (default; `llm_base_url` overrides its endpoint), another client, or None for none."""
    started = time.perf_counter()
    name = embedder_name or workspace.settings.embedder
    if embedder is None:
        embedder = CachedEmbedder(load_embedder(name))
    router, report = _trained_router(workspace, embedder, name, cache_dir)
    knowledge = KnowledgeIndex(workspace.facts, embedder)
    if connectors is None:
        connectors = http_connectors(workspace, backoffice_url=backoffice_url, dry_run=dry_run_actions)
    if llm == "workspace":
        config = workspace.settings.llm
        llm = llm_client(config, base_url=llm_base_url) if config is not None else None
    return Engine(
        workspace=workspace,
        orchestrator=_orchestrator(router, knowledge, connectors, llm),
        llm=llm,
        router=router,
        router_report=report,
        knowledge=knowledge,
        connectors=connectors,
        embedder=embedder,
        load_seconds=time.perf_counter() - started,
    )


def _trained_router(
    workspace: Workspace, embedder: Embedder, embedder_name: str, cache_dir: Path | None
) -> tuple[IntentRouter, RouterFitReport]:
    if cache_dir is None:
        return _train_router(workspace, embedder)
    key = hashlib.sha256(f"{workspace.version}|{embedder_name}|{__version__}".encode()).hexdigest()[:20]
    path = cache_dir / f"router-{key}.pickle"
    cached = _cached_router(path, embedder)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Processes starting together on one state folder (a deployment's API processes and workers) train
    # once: the others wait here and load what the first one wrote. The kernel drops the lock of a process
    # that dies, so a kill never leaves the others waiting.
    with FileLock(str(path.with_suffix(".lock"))):
        cached = _cached_router(path, embedder)
        if cached is not None:
            return cached
        router, report = _train_router(workspace, embedder)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with partial.open("wb") as handle:
            pickle.dump((router, report), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return router, report


def _cached_router(path: Path, embedder: Embedder) -> tuple[IntentRouter, RouterFitReport] | None:
    try:
        with path.open("rb") as handle:
            cached_router, cached_report = pickle.load(handle)  # our own file, in our own state folder
        return cached_router.with_embedder(embedder), cached_report
    except FileNotFoundError:
        return None
    except Exception:  # a stale or broken cache is rebuilt, never trusted
        log.warning("router cache %s unreadable; training again", path, exc_info=True)
        return None


def _train_router(workspace: Workspace, embedder: Embedder) -> tuple[IntentRouter, RouterFitReport]:
    examples = [(example, intent.name) for intent in workspace.active_intents for example in intent.examples]
    router = IntentRouter(embedder)
    report = router.fit([text for text, _ in examples], [label for _, label in examples])
    return router, report


def _orchestrator(
    router: IntentRouter,
    knowledge: KnowledgeIndex,
    connectors: Mapping[str, ActionConnector],
    llm: LLMSessions | None = None,
) -> Orchestrator:
    """Runs each turn on its experiment variant's workspace (the base workspace outside experiments); a
    variant that changes facts gets a knowledge index of its own (unchanged texts keep their vectors)."""

    def plain(index: KnowledgeIndex) -> Orchestrator:
        registry = ResolverRegistry.from_entry_points(ResolverDeps(knowledge=index, connectors=connectors))
        return Orchestrator(router, registry, llm=llm)

    def over_facts(variant: Workspace) -> Orchestrator:
        return plain(KnowledgeIndex(variant.facts, knowledge.embedder))

    return ExperimentingOrchestrator(plain(knowledge), over_facts)


def http_connectors(
    workspace: Workspace, *, backoffice_url: str | None = None, dry_run: bool = False
) -> dict[str, ActionConnector]:
    """The workspace's connectors, each built by the plug-in its `type` names (entry point group
    `cxstack.action_connectors`); raises for an unknown type or a ${SECRET} that is not set."""
    built: dict[str, ActionConnector] = {}
    for name, config in workspace.settings.connectors.items():
        if name == "backoffice" and backoffice_url:
            config = config.model_copy(update={"base_url": backoffice_url})
        built[name] = load_connector(name, config, dry_run=dry_run)
    return built


class KnowledgeReloader:
    """Keeps a running engine's facts in step with its workspace's knowledge files.

    Asked for the workspace before each turn, it looks at the files at most every `interval_seconds` (their
    sizes and times only); when they changed and still validate, the knowledge index is rebuilt in place
    (the vectors of unchanged texts are kept) and a workspace with the new facts, so a new version, is
    returned: the next traces record it. Intents, rules and settings are read at start only (the router is
    not retrained). Files that do not validate are logged and ignored: the service keeps the facts it had.
    """

    def __init__(
        self,
        engine: Engine,
        store: Store | None,
        *,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.store = store
        self.interval = interval_seconds
        self.clock = clock
        root = engine.workspace.root
        self._signature = self._files(root) if root is not None else ()
        self._checked = clock()

    @staticmethod
    def _files(root: Path) -> tuple[tuple[str, int, int], ...]:
        base = root / "knowledge"
        if not base.is_dir():
            return ()
        found = []
        for path in base.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    stat = path.stat()
                    found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(found))

    def current(self) -> Workspace:
        workspace = self.engine.workspace
        root = workspace.root
        if root is None or self.interval <= 0 or self.clock() - self._checked < self.interval:
            return workspace
        self._checked = self.clock()
        signature = self._files(root)
        if signature == self._signature:
            return workspace
        self._signature = signature
        try:
            facts = read_facts(root)
        except (WorkspaceInvalid, OSError) as exc:
            log.warning(
                "knowledge files changed but do not validate; still answering with %s: %s",
                workspace.version,
                exc,
            )
            return workspace
        content = canonical_content(workspace)
        dumped = sorted((f.model_dump(mode="json") for f in facts), key=lambda f: str(f["id"]))
        if dumped == content["facts"]:
            return workspace
        updated = workspace_from_content({**content, "facts": dumped}, root=root)
        self.engine.knowledge.replace_facts(updated.facts)
        self.engine.workspace = updated
        if self.store is not None:
            self.store.save_workspace_version(
                updated.version, updated.settings.name, canonical_content(updated)
            )
            record_file_versions(self.store, facts, root=root)
        log.info("knowledge reloaded: %d facts, workspace %s", len(facts), updated.version)
        return updated


def open_store(settings: Settings) -> Store:
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(url)
    migrate(engine)
    return SqlAlchemyStore(engine)


class ExternalIdConflictError(ValueError):
    """The message's (channel, external id) is already stored in another conversation; nothing was stored."""

    def __init__(self, channel: str, external_id: str) -> None:
        self.channel = channel
        self.external_id = external_id
        super().__init__("external_id already used in another conversation")


@dataclass
class ConversationView:
    conversation: Conversation
    customer: Customer | None
    messages: list[Message]
    traces: list[Trace]
    escalations: list[EscalationPacket] = field(default_factory=list)
    deliveries: list[OutboxItem] = field(default_factory=list)


def _inbound(
    conversation_id: str,
    text: str,
    external_id: str | None,
    channel: str,
    customer: Customer | None,
    customer_id: str | None,
    verified: bool,
) -> InboundMessage:
    if customer is None and customer_id is None:
        customer_id = f"anon_{conversation_id}"  # only used if the conversation is new
    return InboundMessage(
        channel=channel,
        external_id=external_id or f"auto_{time.time_ns()}",
        conversation_id=ConversationId(conversation_id),
        customer_id=customer.id if customer else CustomerId(str(customer_id)),
        text=text,
        customer=customer,
        verified=verified,
    )


def _check_conversation(result: IngestResult, inbound: InboundMessage) -> None:
    if not result.created and result.message.conversation_id != inbound.conversation_id:
        raise ExternalIdConflictError(inbound.channel, inbound.external_id)


class CxApp:
    """The running service: store + engine + worker + outbox. One per process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: Engine,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.broker = ReplyBroker()
        channels: dict[str, Channel] = {
            name: RestChannel(name, self.broker)
            for name in {"api", "webchat", *engine.workspace.settings.channels}
        }
        # Configured by environment (its secrets never sit in the workspace); on when the workspace lists it.
        self.whatsapp = WhatsAppSettings.from_env()
        if WHATSAPP in engine.workspace.settings.channels:
            if self.whatsapp is not None:
                channels[WHATSAPP] = WhatsAppChannel(
                    self.whatsapp, store, templates=engine.workspace.settings.whatsapp
                )
            else:
                log.warning("the workspace lists whatsapp but CXSTACK_WHATSAPP_* are not set: it is off")
                channels[WHATSAPP] = UnconfiguredChannel(WHATSAPP, "CXSTACK_WHATSAPP_* are not set")
        self.email = email_channel.EmailSettings.from_env()
        if email_channel.CHANNEL in engine.workspace.settings.channels:
            channels[email_channel.CHANNEL] = email_channel.email_channel(self.email, store)
        self.imap: email_channel.ImapPoller | None = None
        self.outbox = OutboxDispatcher(store, channels, on_undelivered=self.undelivered)
        # Escalations go to the help desk the workspace names (its secrets from the environment), if any.
        helpdesk = engine.workspace.settings.helpdesk
        desk = build_helpdesk(helpdesk)
        self.handoff = None
        if desk is not None:
            self.handoff = HandoffService.for_store(
                desk, store, helpdesk, self._wake, outbound_check=self.outbound_refusal
            )
        self.reloader = KnowledgeReloader(engine, store, interval_seconds=settings.knowledge_reload_seconds)
        self.runtime: EmbeddedRuntime | ProcessRuntime | ProcrastinateRuntime
        if settings.runtime == "procrastinate":
            from cxstack.runtime.jobs import ProcrastinateRuntime  # optional extra [scale]

            self.runtime = ProcrastinateRuntime(settings.resolved_database_url(), store, self.broker)
        elif settings.runtime == "process":
            options = {
                "settings": settings.model_dump(),
                "workspace": engine.workspace,
                "burst_window_ms": settings.burst_windows(engine.workspace),
            }
            self.runtime = ProcessRuntime(store, worker_components, options, on_commit=self._committed)
        else:
            self.runtime = EmbeddedRuntime(
                store,
                engine.orchestrator,
                self.reloader.current,
                on_commit=self._committed,
                burst_window_ms=settings.burst_windows(engine.workspace),
                clock=clock,
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ingest = IngestBatcher(store, self._stored)
        self._monitoring: asyncio.Task[None] | None = None
        # Who runs turns on a PostgreSQL database: one embedded `serve`, or scale-out processes (owner.py).
        self.claim: RuntimeClaim | None = None
        if settings.runtime != "thread":  # the library and tests run their own turns, unlocked
            mode: Mode = "scale-out" if settings.runtime == "procrastinate" else "embedded"
            self.claim = RuntimeClaim(settings.resolved_database_url(), mode)
        self._keeping_claim: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def workspace(self) -> Workspace:
        if self.settings.runtime != "thread":
            return self.reloader.current()  # the turns run in the worker, which reloads on its own
        return self.engine.workspace  # the runtime's thread reloads it between turns

    def _stored(self, result: IngestResult) -> None:
        self.runtime.notify(result.message.conversation_id)

    async def start(self) -> int:
        """Records the workspace version, starts the outbox and resumes every pending conversation."""
        ws = self.engine.workspace
        self.store.save_workspace_version(ws.version, ws.settings.name, canonical_content(ws))
        # each running experiment's variants too: a trace names its variant's version, which must read back
        for variant in variant_workspaces(ws).values():
            self.store.save_workspace_version(variant.version, ws.settings.name, canonical_content(variant))
        if ws.root is not None:  # fact edits made in the files since the last start
            record_file_versions(self.store, ws.facts, root=ws.root)
        self._loop = asyncio.get_running_loop()
        if self.claim is not None:
            await asyncio.to_thread(self.claim.acquire)  # RuntimeTakenError: the other kind runs here
            if self.claim.enabled:
                self._keeping_claim = asyncio.create_task(self.claim.keep(), name="cxstack-runtime-lock")
        scaled_out = self.settings.runtime == "procrastinate"  # the workers' periodic jobs do this
        if not scaled_out:
            self.outbox.start()
        if self.handoff is not None and not scaled_out:
            self.handoff.start()
        resumed = await self.runtime.start()
        self.ingest.start()  # after the runtime: the turns of what it stores are scheduled at once
        if not scaled_out:
            self.imap = email_channel.start_imap(self)
        if self.settings.monitoring_seconds > 0 and hasattr(self.store, "record_offers") and not scaled_out:
            self._monitoring = asyncio.create_task(self._monitor(), name="cxstack-monitoring")
        return resumed

    async def _monitor(self) -> None:
        """Review sampling and judging in the background: a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(self.settings.monitoring_seconds)
            try:
                await asyncio.to_thread(self.monitor_once)
            except Exception:
                log.exception("monitoring failed; trying again in %ss", self.settings.monitoring_seconds)

    def monitor_once(self) -> None:
        """Draw settled conversations for review, then judge the ones the current judge has not judged."""
        from cxstack.monitoring.judging import as_judging_store, current_judge, judge_pending
        from cxstack.monitoring.review import as_review_store, sample

        workspace = self.workspace
        sample(as_review_store(self.store), workspace)
        store = as_judging_store(self.store)
        config = workspace.settings.llm
        name = workspace.settings.monitoring.judge
        if name == "llm":
            if config is None or not self.settings.llm:
                log.warning("monitoring.judge is llm but no model is configured: nothing judged")
                return
            # its own client: the answers' client lives on the turn worker's event loop
            client = llm_client(config, base_url=self.settings.llm_base_url)
            judge_pending(store, workspace, current_judge(store, workspace, client), close=client.aclose)
            return
        judge_pending(store, workspace, current_judge(store, workspace, name=name))

    async def stop(self) -> None:
        if self.imap is not None:
            await self.imap.stop()
        if self._monitoring is not None:
            self._monitoring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitoring
        await asyncio.to_thread(self.ingest.stop)  # what is queued is stored (and acknowledged) first
        await self.runtime.stop(on_runtime_loop=self.engine.aclose)  # connectors' clients live on that loop
        await self.outbox.stop()
        if self.handoff is not None:
            await self.handoff.stop()
        if self._keeping_claim is not None:
            self._keeping_claim.cancel()
            await asyncio.gather(self._keeping_claim, return_exceptions=True)
            self._keeping_claim = None
        if self.claim is not None:
            await asyncio.to_thread(self.claim.release)

    def _committed(self, conversation_id: ConversationId) -> None:
        """Called on the runtime thread after a turn committed: wake the outbox and waiting clients here."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, conversation_id)

    def _wake(self, conversation_id: ConversationId) -> None:
        if self.settings.runtime == "procrastinate":  # a help desk's reply: sent by a worker's job
            task = asyncio.get_running_loop().create_task(self._news(conversation_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        self.outbox.wake()
        if self.handoff is not None:  # the turn may have escalated
            self.handoff.wake()
        self.broker.publish(conversation_id)

    async def post_message(
        self,
        conversation_id: str,
        text: str,
        *,
        external_id: str | None = None,
        channel: str = "api",
        customer: Customer | None = None,
        customer_id: str | None = None,
        verified: bool = False,
    ) -> IngestResult:
        """Stores the message (idempotent on channel + external id) and schedules its turn. Once started, the
        message goes to the ingest batcher's writer thread (committed with the others arriving meanwhile);
        before that, to a worker thread of its own. Either way the event loop keeps serving.

        `verified`: the channel vouched for the customer (an integration's key, a signed session).
        Raises ExternalIdConflictError if the external id is already stored in another conversation."""
        inbound = _inbound(conversation_id, text, external_id, channel, customer, customer_id, verified)
        if not self.ingest.running:
            return await asyncio.to_thread(self._ingest, inbound)
        result = await self.ingest.submit(inbound)
        _check_conversation(result, inbound)
        return result

    def _ingest(self, inbound: InboundMessage) -> IngestResult:
        result = self.store.ingest(inbound)
        _check_conversation(result, inbound)
        if result.created:
            self.runtime.notify(inbound.conversation_id)
        return result

    async def wait_idle(self, conversation_id: str | None = None) -> None:
        await self.runtime.wait_idle(ConversationId(conversation_id) if conversation_id else None)

    def conversation_view(self, conversation_id: str) -> ConversationView | None:
        cid = ConversationId(conversation_id)
        conversation = self.store.get_conversation(cid)
        if conversation is None:
            return None
        escalations = [e for e in self.store.list_escalations(status=None) if e.conversation_id == cid]
        return ConversationView(
            conversation=conversation,
            customer=self.store.get_customer(conversation.customer_id),
            messages=self.store.list_messages(cid),
            traces=self.store.list_traces(cid),
            escalations=escalations,
            deliveries=self.store.outbox_for(cid),
        )

    def outbound_refusal(self, conversation_id: str) -> str | None:
        """Why a person's free-text reply would not reach the customer now (the outbound gate), or None."""
        conversation = self.store.get_conversation(ConversationId(conversation_id))
        if conversation is None:
            return None
        messages = self.store.list_messages(ConversationId(conversation_id))
        try:
            gate.check(conversation.channel, messages, None, self.workspace.settings.whatsapp)
        except gate.OutboundRefusedError as refused:
            return str(refused)
        return None

    async def undelivered(self, item: OutboxItem) -> None:
        """A reply that never reached the customer: a person takes the conversation (unless one has it)."""
        queue = self.workspace.settings.escalation.default_queue
        packet = await asyncio.to_thread(self.store.escalate_undelivered, item.id, queue=queue)
        if packet is not None:
            log.warning("reply %s on %s was not delivered; escalated as %s", item.id, item.channel, packet.id)
            self.broker.publish(item.conversation_id)

    async def human_reply(
        self,
        conversation_id: str,
        text: str,
        *,
        author: str,
        hand_back: bool,
        template: tuple[str, Sequence[str], str | None] | None = None,
    ) -> Message:
        """A person's (or a help desk's, a follow-up's) message to the customer, through the outbound gate:
        refused with OutboundRefusedError, before anything is stored, when the customer's channel would not
        deliver it. `template` is (name, parameters, language) of an approved WhatsApp template; its body,
        filled in, replaces `text`. Raises KeyError for an unknown conversation."""
        conversation = await asyncio.to_thread(self.store.get_conversation, ConversationId(conversation_id))
        if conversation is None:
            raise KeyError(f"unknown conversation {conversation_id}")
        content: dict[str, Any] | None = None
        if template is not None:
            name, parameters, language = template
            rendered = gate.render_template(self.workspace.settings.whatsapp, name, parameters, language)
            text, content = rendered.text, rendered.content
        messages = await asyncio.to_thread(self.store.list_messages, ConversationId(conversation_id))
        gate.check(conversation.channel, messages, content, self.workspace.settings.whatsapp)
        message = await asyncio.to_thread(
            self.store.add_human_reply,
            ConversationId(conversation_id),
            text,
            author,
            hand_back,
            content=content,
        )
        await self._news(ConversationId(conversation_id))
        return message

    async def requeue_outbox(self, ids: list[str] | None = None, limit: int = 500) -> list[OutboxItem]:
        """Replies sent again from their first attempt, now: the ones named, in order (KeyError at an unknown
        id, ValueError at one already sent; those before it stay requeued, which is safe to repeat), else
        every dead one. The channel's gate checks each again when it is sent (a WhatsApp window that shut
        meanwhile fails it again, with that reason)."""
        if ids is None:
            ids = [
                item.id for item in await asyncio.to_thread(self.store.list_outbox, OutboxStatus.DEAD, limit)
            ]

        async def wake(items: list[OutboxItem]) -> None:
            for conversation_id in dict.fromkeys(item.conversation_id for item in items):
                await self._news(conversation_id)

        return await _requeue_in_order("outbox item", ids, self.store.requeue_outbox, wake)

    async def requeue_exports(self, ids: list[str] | None = None, limit: int = 500) -> list[Export]:
        """Escalations exported to the help desk again from the first attempt, now: the ones named, in order
        (KeyError at an unknown id or when no help desk is configured, ValueError at one that already made
        its ticket; those before it stay requeued), else every dead one."""
        handoff = self.handoff
        if handoff is None:
            if ids:
                raise KeyError("no help desk is configured here")
            return []
        if ids is None:
            ids = [e.id for e in await asyncio.to_thread(handoff.store.exports, ExportStatus.DEAD, limit)]

        async def wake(exports: list[Export]) -> None:
            if self.settings.runtime == "procrastinate":  # a delivery job exports them all
                await self._news(ConversationId(exports[0].conversation_id))
            else:
                handoff.wake()

        return await _requeue_in_order("help-desk export", ids, handoff.store.requeue, wake)

    async def _news(self, conversation_id: ConversationId) -> None:
        """A message to send was stored here: wake the sender and whoever waits on the conversation (in a
        scale-out deployment, a delivery job and every API process)."""
        self.broker.publish(conversation_id)
        if self.settings.runtime != "procrastinate":
            self.outbox.wake()
            return
        runtime: Any = self.runtime
        try:
            await runtime.request_delivery()
            await runtime.announce(conversation_id)
        except Exception as exc:  # the delivery tick sends it and the waiters look again, a little later
            log.warning("could not hand %s's news to the workers now: %s", conversation_id, exc)


async def _requeue_in_order(
    what: str,
    ids: list[str],
    requeue: Callable[[str], _Requeued],
    wake: Callable[[list[_Requeued]], Awaitable[None]],
) -> list[_Requeued]:
    """`requeue` on each id in order; on an error, what was requeued before it is logged and woken too."""
    done: list[_Requeued] = []
    try:
        for item_id in ids:
            done.append(await asyncio.to_thread(requeue, item_id))
    finally:
        if done:
            log.warning("requeued %d %s(s): %s", len(done), what, ", ".join(ids[: len(done)]))
            await wake(done)
    return done


def worker_components(
    options: dict[str, Any],
) -> tuple[Store, Orchestrator, Callable[[], Workspace], Any]:
    """What the worker process builds for itself: its own store connection and engine."""
    settings = Settings(**options["settings"])
    configure_logging()
    workspace: Workspace = options["workspace"]
    engine = build_engine(
        workspace,
        embedder_name=settings.embedder,
        backoffice_url=settings.backoffice_url,
        dry_run_actions=settings.dry_run_actions,
        cache_dir=settings.cache_dir(),
        llm="workspace" if settings.llm else None,
        llm_base_url=settings.llm_base_url,
    )
    store = open_store(settings)
    reloader = KnowledgeReloader(engine, store, interval_seconds=settings.knowledge_reload_seconds)
    return store, engine.orchestrator, reloader.current, engine.aclose


def build(
    settings: Settings,
    *,
    workspace: Workspace | None = None,
    engine: Engine | None = None,
    clock: Callable[[], datetime] | None = None,
) -> CxApp:
    """The one way to assemble a running service from settings. `clock` (thread runtime only) fixes the
    turns' time: replays and benchmarks use it to be reproducible on any day."""
    configure_logging()  # CXSTACK_LOG_FORMAT=json in every process that builds the service
    if engine is None:
        if workspace is None:
            if settings.workspace is None:
                raise ValueError("no workspace: pass --workspace or set CXSTACK_WORKSPACE")
            workspace = load_workspace(settings.workspace)
        engine = build_engine(
            workspace,
            embedder_name=settings.embedder,
            backoffice_url=settings.backoffice_url,
            dry_run_actions=settings.dry_run_actions,
            cache_dir=settings.cache_dir(),
            llm="workspace" if settings.llm else None,
            llm_base_url=settings.llm_base_url,
        )
    store = open_store(settings)
    check_history(store, engine.workspace)  # an experiment edited after it started would mix two
    return CxApp(settings, store, engine, clock=clock)
