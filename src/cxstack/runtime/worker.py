"""The embedded runtime: one asyncio task per conversation drains its pending messages in order.

Crash safety comes from the store, not from this process: a message is pending until its turn commits, so a
restart resumes exactly what was not finished, and a duplicate webhook never creates a second pending message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from cxstack.domain.conversation_state import escalate_from
from cxstack.domain.models import (
    ConversationId,
    Customer,
    Decision,
    Layer,
    Message,
    MessageId,
    Priority,
    Role,
    Trace,
    TraceId,
    TraceStep,
    new_id,
    utcnow,
)
from cxstack.domain.ports import LeaseLostError, StaleStateError, Store, TurnCommit
from cxstack.orchestration.handoff import build_packet
from cxstack.orchestration.orchestrator import Orchestrator, TurnResult
from cxstack.resolution.models import TurnContext
from cxstack.workspace.workspace import Workspace

log = logging.getLogger(__name__)

MAX_BURST_MESSAGES = 10
STALE_RETRIES = 3
MAX_BACKOFF = timedelta(minutes=10)


def _backoff(failures: int) -> timedelta:
    """1 s, 4 s, 16 s, … up to ten minutes: a failing turn is retried, never in a tight loop."""
    return min(timedelta(seconds=4 ** max(failures - 1, 0)), MAX_BACKOFF)


def burst_of(pending: list[Message], window_ms: int) -> list[Message]:
    """The leading messages that arrived within `window_ms` of each other: answered as one turn."""
    if not pending:
        return []
    burst = [pending[0]]
    for message in pending[1:]:
        gap_ms = (message.created_at - burst[-1].created_at).total_seconds() * 1000
        if window_ms <= 0 or gap_ms > window_ms or len(burst) >= MAX_BURST_MESSAGES:
            break
        burst.append(message)
    return burst


def merged(burst: list[Message]) -> Message:
    """One message standing for a burst: the last one's id and time, every text in arrival order."""
    last = burst[-1]
    if len(burst) == 1:
        return last
    return replace(last, text="\n".join(m.text for m in burst))


def count_interrupted_turn(store: Store, conversation_id: ConversationId, cause: str) -> bool:
    """A worker died inside the conversation's turn (a native crash, memory exhausted, `kill -9`): a turn
    always starts with the oldest pending message, so that message's turn is counted as failed. A message that
    kills its worker every time is then set aside for a person after `max_turn_attempts`, instead of taking
    every worker down in turn. False when nothing was pending (the turn had committed)."""
    pending = store.pending_messages(conversation_id)
    if not pending:
        return False
    error = f"the turn worker died during this turn ({cause})"
    store.record_turn_failure(conversation_id, [pending[0].id], error, utcnow())
    return True


class TurnWorker:
    """Runs the turns of the conversations it is notified about, one conversation at a time per lease.

    Guarantees, from the store rather than from this process: a conversation's turns run one at a time
    across every worker (a lease, renewed per turn); a turn whose conversation changed meanwhile (a person
    handed it back) is re-run on the new state instead of overwriting it; a turn that keeps failing is set
    aside after `max_turn_attempts` and escalated with reason `internal_error`, so a person sees it and the
    worker does not retry it forever.
    """

    def __init__(
        self,
        store: Store,
        orchestrator: Orchestrator,
        workspace: Workspace | Callable[[], Workspace],
        *,
        on_commit: Callable[[ConversationId], Awaitable[None]] | None = None,
        commit_retries: int = 5,
        max_turn_attempts: int = 3,
        lease_seconds: float = 60.0,
        burst_window_ms: Mapping[str, int] | None = None,
        worker_id: str | None = None,
        retry_backoff: Callable[[int], timedelta] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._orchestrator = orchestrator
        # A callable: the workspace as of now (a running service picks up knowledge edits between turns).
        self._workspace_source = workspace if callable(workspace) else None
        self._workspace = workspace() if callable(workspace) else workspace
        self._on_commit = on_commit
        self._commit_retries = commit_retries
        self._max_turn_attempts = max_turn_attempts
        self._lease_seconds = lease_seconds
        self._burst_window_ms = dict(
            self._workspace.settings.burst_window_ms if burst_window_ms is None else burst_window_ms
        )
        self._backoff = retry_backoff or _backoff
        self._clock = clock or utcnow  # the turn's time: rules on hours, fact validity, acknowledgements
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: dict[ConversationId, asyncio.Task[None]] = {}
        self._again: set[ConversationId] = set()
        self._wakeups: dict[ConversationId, asyncio.Event] = {}
        self._held_since: dict[ConversationId, float] = {}  # when this worker last took or renewed a lease
        self._idle = asyncio.Event()
        self._idle.set()

    async def recover(self) -> int:
        """Schedules every conversation that still has unprocessed messages (after a crash or restart)."""
        pending = self._store.conversations_with_pending()
        for conversation_id in pending:
            self.notify(conversation_id)
        return len(pending)

    async def keep_resuming(
        self, every_s: float, stopped: asyncio.Event, beat: Callable[[], None] | None = None
    ) -> None:
        """Until `stopped`: every `every_s`, resumes each conversation with pending messages: what no notice
        announced (a failed turn's back-off ended, a lease expired, a notice lost in a crash). `beat` runs
        after each round (the process runtime's heartbeat: a loop stuck in a turn sends none)."""
        while not stopped.is_set():
            try:
                async with asyncio.timeout(every_s):
                    await stopped.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.recover()
            except Exception:  # the database is away for a moment: try again next round, alive all the same
                log.exception("recovering pending conversations failed")
            if beat is not None:
                beat()

    def notify(self, conversation_id: ConversationId) -> None:
        """New input for a conversation. At most one task per conversation runs; a second notice re-checks."""
        task = self._tasks.get(conversation_id)
        if task is not None and not task.done():
            self._again.add(conversation_id)
            wakeup = self._wakeups.get(conversation_id)
            if wakeup is not None:
                wakeup.set()  # a burst that is still gathering looks again
            return
        self._idle.clear()
        self._tasks[conversation_id] = asyncio.create_task(self._drain(conversation_id))

    async def wait_idle(self, conversation_id: ConversationId | None = None) -> None:
        if conversation_id is None:
            await self._idle.wait()
            return
        while (task := self._tasks.get(conversation_id)) is not None and not task.done():
            await asyncio.shield(task)

    async def stop(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def window_ms(self, channel: str) -> int:
        return max(0, int(self._burst_window_ms.get(channel, 0)))

    async def _drain(self, conversation_id: ConversationId) -> None:
        claimed = False
        try:
            while True:
                self._again.discard(conversation_id)
                claimed = self._hold(conversation_id)
                if not claimed:
                    log.info("conversation %s is leased to another worker", conversation_id)
                    return
                pending = self._store.pending_messages(conversation_id)
                if not pending:
                    if conversation_id not in self._again:
                        break
                    continue
                window = self.window_ms(pending[0].channel)
                burst = burst_of(pending, window)
                if len(burst) == len(pending) and await self._gathering(conversation_id, burst, window):
                    continue  # more of the burst may come: wait, then look again
                if await self.process_burst(conversation_id, burst) is None:
                    return  # failed: it waits out its back-off and is picked up by a later recover()
        except asyncio.CancelledError:
            raise
        except LeaseLostError:
            log.warning("conversation %s: lease taken over by another worker", conversation_id)
        except Exception:  # the messages stay pending; a restart or the next notice picks them up
            log.exception("conversation %s: turn processing failed; messages stay pending", conversation_id)
        finally:
            if claimed:
                with contextlib.suppress(Exception):
                    self._release(conversation_id)
            self._tasks.pop(conversation_id, None)
            self._wakeups.pop(conversation_id, None)
            if not any(not t.done() for t in self._tasks.values()):
                self._idle.set()

    def _hold(self, conversation_id: ConversationId) -> bool:
        """Takes or renews the conversation's lease; a lease taken less than a third of its time ago is still
        this worker's (no one else can take it before it expires), so it is not written again. The turn's
        commit checks the lease in its own transaction either way."""
        since = self._held_since.get(conversation_id)
        if since is not None and time.monotonic() - since < self._lease_seconds / 3:
            return True
        taken_at = time.monotonic()
        if self._store.claim_conversation(conversation_id, self.worker_id, self._lease_seconds):
            self._held_since[conversation_id] = taken_at
            return True
        self._held_since.pop(conversation_id, None)
        return False

    def _release(self, conversation_id: ConversationId) -> None:
        self._held_since.pop(conversation_id, None)
        self._store.release_conversation(conversation_id, self.worker_id)

    async def _gathering(self, conversation_id: ConversationId, burst: list[Message], window_ms: int) -> bool:
        """Waits while the burst may still grow; True when it woke up early (a new message arrived)."""
        if window_ms <= 0:
            return False
        due = burst[-1].created_at + timedelta(milliseconds=window_ms)
        remaining = min((due - utcnow()).total_seconds(), window_ms / 1000)
        if remaining <= 0:
            return False
        wakeup = self._wakeups.setdefault(conversation_id, asyncio.Event())
        wakeup.clear()
        try:
            async with asyncio.timeout(remaining):
                await wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def process(self, conversation_id: ConversationId, message: Message) -> TurnResult | None:
        """One message as its own turn, leased for its duration (tests and tools); `serve` drains bursts."""
        try:
            return await self.process_burst(conversation_id, [message])
        finally:
            self._release(conversation_id)

    async def process_burst(self, conversation_id: ConversationId, burst: list[Message]) -> TurnResult | None:
        """Runs and commits one turn for `burst`; None when it failed and was left for a retry. Raises
        LeaseLostError when another worker holds the conversation."""
        ids = tuple(m.id for m in burst)
        if not self._hold(conversation_id):
            raise LeaseLostError(f"conversation {conversation_id} is leased to another worker")
        attempts = max(m.turn_failures for m in burst)
        if attempts >= self._max_turn_attempts:
            # Its turns keep dying with the worker process (a crash no exception handler sees): a person
            # gets it instead of the next worker incarnation.
            return await self._set_aside(
                conversation_id, burst, f"{attempts} turns on it failed or died with the worker process"
            )
        for _ in range(STALE_RETRIES):
            try:
                ctx = self._context(conversation_id, burst)
                result = await self._run(ctx)
                await self._commit(self._turn_commit(ctx, result, ids))
            except StaleStateError:
                log.info("conversation %s changed during its turn; running it again", conversation_id)
                continue
            except LeaseLostError:
                raise
            except Exception as exc:
                return await self._failed(conversation_id, burst, exc)
            if self._on_commit is not None:
                await self._on_commit(conversation_id)
            return result
        return await self._failed(conversation_id, burst, StaleStateError("the conversation kept changing"))

    async def _run(self, ctx: TurnContext) -> TurnResult:
        try:
            return await self._orchestrator.handle_turn(ctx)
        except (
            Exception
        ) as exc:  # orchestration itself failed: the customer still gets a person, with context
            log.exception("turn failed for conversation %s", ctx.conversation.id)
            return self._internal_error(ctx, exc)

    def _turn_commit(self, ctx: TurnContext, result: TurnResult, ids: tuple[MessageId, ...]) -> TurnCommit:
        reply = None
        if result.reply:
            reply = Message(
                id=MessageId(new_id("msg")),
                conversation_id=ctx.conversation.id,
                role=Role.ASSISTANT,
                text=result.reply,
                created_at=utcnow(),
                channel=ctx.message.channel,
            )
        return TurnCommit(
            conversation_id=ctx.conversation.id,
            message_id=ctx.message.id,
            trace=result.trace,
            reply=reply,
            state=result.state,
            transitions=result.transitions,
            escalation=result.escalation,
            message_ids=ids,
            expected_version=ctx.conversation.version,
            lease_owner=self.worker_id,
            attach_to_escalation=result.attach_to_escalation,
            reopen_escalation=result.reopen_escalation,
            verified_customer=result.verified_customer,
            cause=result.trace.reason_code or "",
            reply_content={"choices": list(result.choices)} if result.choices and reply else None,
        )

    async def _failed(
        self, conversation_id: ConversationId, burst: list[Message], exc: Exception
    ) -> TurnResult | None:
        """Counts the failure and backs off (None); after `max_turn_attempts` the burst is set aside for a
        person (the escalation's result)."""
        error = f"{type(exc).__name__}: {exc}"
        log.error("conversation %s: turn failed: %s", conversation_id, error, exc_info=exc)
        ids = [m.id for m in burst]
        try:
            failures = self._store.record_turn_failure(
                conversation_id, ids, error, utcnow() + self._backoff(1)
            )
            if failures < self._max_turn_attempts:
                if failures > 1:  # the back-off grows with each failure of the same messages
                    retry_at = utcnow() + self._backoff(failures)
                    self._store.record_turn_failure(conversation_id, [], error, retry_at)
                return None
        except Exception:
            log.exception("conversation %s: could not record the failure", conversation_id)
            return None
        try:
            return await self._set_aside(conversation_id, burst, error)
        except Exception:
            log.exception("conversation %s: could not set the failing turn aside", conversation_id)
            with contextlib.suppress(Exception):
                self._store.record_turn_failure(conversation_id, [], error, utcnow() + MAX_BACKOFF)
            return None

    async def _set_aside(
        self, conversation_id: ConversationId, burst: list[Message], error: str
    ) -> TurnResult:
        """Escalates the burst with reason internal_error without running the layers again."""
        conversation = self._store.get_conversation(conversation_id)
        if conversation is None:
            raise LookupError(f"conversation {conversation_id} vanished")
        message = merged(burst)
        ctx = TurnContext(
            workspace=self._workspace,
            conversation=conversation,
            customer=self._store.get_customer(conversation.customer_id)
            or Customer(id=conversation.customer_id),
            message=message,
            history=[
                m for m in self._store.list_messages(conversation_id) if m.id not in {b.id for b in burst}
            ],
        )
        result = self._internal_error(
            ctx, RuntimeError(f"set aside after {self._max_turn_attempts} attempts: {error}")
        )
        commit = self._turn_commit(ctx, result, tuple(m.id for m in burst))
        self._store.commit_turn(replace(commit, expected_version=None, lease_owner=None))
        if self._on_commit is not None:
            await self._on_commit(conversation_id)
        return result

    async def _commit(self, commit: TurnCommit) -> None:
        delay = 0.05
        for attempt in range(self._commit_retries + 1):
            try:
                self._store.commit_turn(commit)
                return
            except (StaleStateError, LeaseLostError, KeyError, ValueError):
                raise  # not transient: retrying the same commit cannot succeed
            except Exception:
                if attempt == self._commit_retries:
                    raise
                log.warning("commit of turn for %s failed; retrying", commit.conversation_id, exc_info=True)
                await asyncio.sleep(delay)
                delay *= 2

    def _context(self, conversation_id: ConversationId, burst: list[Message]) -> TurnContext:
        conversation = self._store.get_conversation(conversation_id)
        if conversation is None:
            raise LookupError(f"conversation {conversation_id} has a pending message but no row")
        customer = self._store.get_customer(conversation.customer_id) or Customer(id=conversation.customer_id)
        message = merged(burst)
        in_burst = {m.id for m in burst}
        history = [
            m
            for m in self._store.list_messages(conversation_id)
            if m.created_at <= message.created_at and m.id not in in_burst
        ]
        if self._workspace_source is not None:
            self._workspace = self._workspace_source()
        return TurnContext(
            workspace=self._workspace,
            conversation=conversation,
            customer=customer,
            message=message,
            history=history,
            burst=tuple(burst),
            customers=self._store,
            now=self._clock(),
        )

    def _internal_error(self, ctx: TurnContext, exc: Exception) -> TurnResult:
        queue = ctx.workspace.settings.escalation.default_queue
        packet = build_packet(
            ctx,
            queue=queue,
            priority=Priority.HIGH,
            reason_code="internal_error",
            prediction=ctx.prediction,
            business=ctx.business,
            facts=[],
            actions=[],
        )
        step = TraceStep(
            layer=Layer.ORCHESTRATION,
            name="error",
            input={"text": ctx.message.text},
            output={"error": f"{type(exc).__name__}: {exc}", "queue": queue},
        )
        trace = Trace(
            id=TraceId(new_id("trc")),
            conversation_id=ctx.conversation.id,
            message_id=ctx.message.id,
            workspace_version=ctx.workspace.version,
            steps=[step],
            intent=ctx.prediction.intent if ctx.prediction else None,
            intent_confidence=ctx.prediction.confidence if ctx.prediction else None,
            mechanism=None,
            decision=Decision.ESCALATE,
            outcome="escalated",
            reply="Something went wrong on our side, so I'm passing you to a colleague who sees this chat.",
            reason_code="internal_error",
        )
        return TurnResult(
            trace=trace,
            reply=trace.reply,
            state=dict(ctx.conversation.state),
            transitions=escalate_from(ctx.conversation.status),
            escalation=packet,
        )
