"""The embedded runtime: one asyncio task per conversation drains its pending messages in order.

Crash safety comes from the store, not from this process: a message is pending until its turn commits, so a
restart resumes exactly what was not finished, and a duplicate webhook never creates a second pending message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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
from cxstack.domain.ports import Store, TurnCommit
from cxstack.orchestration.handoff import build_packet
from cxstack.orchestration.orchestrator import Orchestrator, TurnResult
from cxstack.resolution.models import TurnContext
from cxstack.workspace.workspace import Workspace

log = logging.getLogger(__name__)


class TurnWorker:
    def __init__(
        self,
        store: Store,
        orchestrator: Orchestrator,
        workspace: Workspace,
        *,
        on_commit: Callable[[ConversationId], Awaitable[None]] | None = None,
        commit_retries: int = 5,
    ) -> None:
        self._store = store
        self._orchestrator = orchestrator
        self._workspace = workspace
        self._on_commit = on_commit
        self._commit_retries = commit_retries
        self._tasks: dict[ConversationId, asyncio.Task[None]] = {}
        self._again: set[ConversationId] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def recover(self) -> int:
        """Schedules every conversation that still has unprocessed messages (after a crash or restart)."""
        pending = self._store.conversations_with_pending()
        for conversation_id in pending:
            self.notify(conversation_id)
        return len(pending)

    def notify(self, conversation_id: ConversationId) -> None:
        """New input for a conversation. At most one task per conversation runs; a second notice re-checks."""
        task = self._tasks.get(conversation_id)
        if task is not None and not task.done():
            self._again.add(conversation_id)
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

    async def _drain(self, conversation_id: ConversationId) -> None:
        try:
            while True:
                self._again.discard(conversation_id)
                for message in self._store.pending_messages(conversation_id):
                    await self.process(conversation_id, message)
                if conversation_id not in self._again:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:  # the messages stay pending; a restart or the next notice picks them up
            log.exception("conversation %s: turn processing failed; messages stay pending", conversation_id)
        finally:
            self._tasks.pop(conversation_id, None)
            if not any(not t.done() for t in self._tasks.values()):
                self._idle.set()

    async def process(self, conversation_id: ConversationId, message: Message) -> TurnResult:
        ctx = self._context(conversation_id, message)
        try:
            result = await self._orchestrator.handle_turn(ctx)
        except (
            Exception
        ) as exc:  # orchestration itself failed: the customer still gets a person, with context
            log.exception("turn failed for conversation %s", conversation_id)
            result = self._internal_error(ctx, exc)
        reply = None
        if result.reply:
            reply = Message(
                id=MessageId(new_id("msg")),
                conversation_id=conversation_id,
                role=Role.ASSISTANT,
                text=result.reply,
                created_at=utcnow(),
                channel=message.channel,
            )
        commit = TurnCommit(
            conversation_id=conversation_id,
            message_id=message.id,
            trace=result.trace,
            reply=reply,
            state=result.state,
            transitions=result.transitions,
            escalation=result.escalation,
            attach_to_escalation=result.attach_to_escalation,
            cause=result.trace.reason_code or "",
        )
        await self._commit(commit)
        if self._on_commit is not None:
            await self._on_commit(conversation_id)
        return result

    async def _commit(self, commit: TurnCommit) -> None:
        delay = 0.05
        for attempt in range(self._commit_retries + 1):
            try:
                self._store.commit_turn(commit)
                return
            except Exception:
                if attempt == self._commit_retries:
                    raise
                log.warning("commit of turn for %s failed; retrying", commit.conversation_id, exc_info=True)
                await asyncio.sleep(delay)
                delay *= 2

    def _context(self, conversation_id: ConversationId, message: Message) -> TurnContext:
        conversation = self._store.get_conversation(conversation_id)
        if conversation is None:
            raise LookupError(f"conversation {conversation_id} has a pending message but no row")
        customer = self._store.get_customer(conversation.customer_id) or Customer(id=conversation.customer_id)
        history = [
            m for m in self._store.list_messages(conversation_id) if m.created_at <= message.created_at
        ]
        history = [m for m in history if m.id != message.id]
        return TurnContext(
            workspace=self._workspace,
            conversation=conversation,
            customer=customer,
            message=message,
            history=history,
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
