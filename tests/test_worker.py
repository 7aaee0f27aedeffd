"""The turn worker against a real SQLite store: bursts, leases, state races, failing turns set aside."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cxstack.app import build_engine
from cxstack.domain.conversation_state import Transition
from cxstack.domain.models import (
    ConversationId,
    ConversationStatus,
    CustomerId,
    InboundMessage,
    Role,
    utcnow,
)
from cxstack.domain.ports import TurnCommit
from cxstack.orchestration.orchestrator import Orchestrator, TurnResult
from cxstack.resolution.models import TurnContext
from cxstack.runtime.worker import TurnWorker, burst_of
from cxstack.store.db import create_engine_for, migrate
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.workspace.loader import load_workspace


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cx.db'}")
    migrate(engine)
    yield SqlAlchemyStore(engine)
    engine.dispose()


@pytest.fixture
def orchestrator(shop_path: Path, backoffice: tuple[str, Any]) -> Orchestrator:
    return build_engine(
        load_workspace(shop_path), embedder_name="hashing", backoffice_url=backoffice[0]
    ).orchestrator


def post(
    store: SqlAlchemyStore, conversation: str, text: str, external_id: str, channel: str = "webchat"
) -> Any:
    return store.ingest(
        InboundMessage(
            channel=channel,
            external_id=external_id,
            conversation_id=ConversationId(conversation),
            customer_id=CustomerId("cus_1"),
            text=text,
            verified=True,
        )
    ).message


def worker(store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path, **options: Any) -> TurnWorker:
    options.setdefault("burst_window_ms", {})
    return TurnWorker(store, orchestrator, load_workspace(shop_path), **options)


async def test_a_burst_is_answered_as_one_turn(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    turns = worker(store, orchestrator, shop_path, burst_window_ms={"webchat": 400})
    for i, text in enumerate(["hi", "I have a question", "how long do I have to return an item?"]):
        post(store, "c1", text, f"e{i}")
        turns.notify(ConversationId("c1"))
        await asyncio.sleep(0.05)
    await turns.wait_idle()

    traces = store.list_traces(ConversationId("c1"))
    assert len(traces) == 1
    assert traces[0].intent == "return_policy"
    replies = [m for m in store.list_messages(ConversationId("c1")) if m.role == Role.ASSISTANT]
    assert len(replies) == 1 and "30 days" in replies[0].text
    assert store.pending_messages(ConversationId("c1")) == []


async def test_without_a_window_every_message_is_its_own_turn(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    turns = worker(store, orchestrator, shop_path)
    for i in range(3):
        post(store, "c1", "how long do I have to return an item?", f"e{i}")
    turns.notify(ConversationId("c1"))
    await turns.wait_idle()
    assert len(store.list_traces(ConversationId("c1"))) == 3


def test_burst_grouping_stops_at_a_gap() -> None:
    store_messages = []
    t0 = utcnow()
    from cxstack.domain.models import Message, MessageId

    for i, gap in enumerate([0, 300, 300, 5000, 100]):
        t0 = t0 + timedelta(milliseconds=gap)
        store_messages.append(
            Message(MessageId(f"m{i}"), ConversationId("c"), Role.CUSTOMER, f"t{i}", t0, channel="webchat")
        )
    assert [m.id for m in burst_of(store_messages, 1000)] == ["m0", "m1", "m2"]
    assert [m.id for m in burst_of(store_messages, 0)] == ["m0"]


async def test_a_hand_back_racing_a_turn_is_not_lost(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    first = post(store, "c1", "I will sue you", "e1")
    turns = worker(store, orchestrator, shop_path)
    await turns.process(ConversationId("c1"), first)
    assert store.get_conversation(ConversationId("c1")).status == ConversationStatus.WAITING  # type: ignore[union-attr]

    class HandBackDuringTurn(Orchestrator):
        calls = 0

        async def handle_turn(self, ctx: TurnContext) -> TurnResult:
            HandBackDuringTurn.calls += 1
            if HandBackDuringTurn.calls == 1:  # a person hands back while this turn is running
                store.add_human_reply(ConversationId("c1"), "Sorted, back to the assistant.", "ann", True)
            return await orchestrator.handle_turn(ctx)

    racing = HandBackDuringTurn(orchestrator._router, orchestrator._resolvers)
    second = post(store, "c1", "how long do I have to return an item?", "e2")
    turns = worker(store, racing, shop_path)
    await turns.process(ConversationId("c1"), second)

    assert HandBackDuringTurn.calls == 2  # the first run read the old state and was re-run
    conversation = store.get_conversation(ConversationId("c1"))
    assert conversation is not None and conversation.status == ConversationStatus.BOT
    last = store.list_traces(ConversationId("c1"))[-1]
    assert last.intent == "return_policy" and "30 days" in (last.reply or "")
    assert [c.transition for c in store.list_status_changes(ConversationId("c1"))] == [
        Transition.ESCALATE,
        Transition.PERSON_REPLIED,
        Transition.HAND_BACK,
    ]


class CommitFails(SqlAlchemyStore):
    """The real store, except that committing a turn fails (a bug, a full disk, a broken database)."""

    def __init__(self, inner: SqlAlchemyStore) -> None:
        super().__init__(inner.engine)
        self.commit_attempts = 0

    def commit_turn(self, commit: TurnCommit) -> None:
        self.commit_attempts += 1
        if commit.escalation is None or commit.escalation.reason_code != "internal_error":
            raise RuntimeError("disk I/O error")
        super().commit_turn(commit)


async def test_a_turn_that_keeps_failing_is_set_aside_for_a_person(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    failing = CommitFails(store)
    post(store, "c1", "how long do I have to return an item?", "e1")
    turns = worker(failing, orchestrator, shop_path, retry_backoff=lambda n: timedelta(0), commit_retries=0)
    for _ in range(5):
        await turns.recover()
        await turns.wait_idle()

    assert store.pending_messages(ConversationId("c1")) == []
    [packet] = store.list_escalations()
    assert packet.reason_code == "internal_error"
    assert (
        "disk I/O error"
        in next(s for s in store.list_traces()[-1].steps if s.name == "error").output["error"]
    )
    conversation = store.get_conversation(ConversationId("c1"))
    assert conversation is not None and conversation.status == ConversationStatus.WAITING
    assert failing.commit_attempts == 4  # three failed turns, then the set-aside commit
    assert store.conversations_with_pending() == []


class MustNotRun:
    async def handle_turn(self, ctx: TurnContext) -> TurnResult:
        raise AssertionError("a message set aside is not run again")


async def test_a_message_whose_turns_keep_dying_with_the_worker_is_set_aside(
    store: SqlAlchemyStore, shop_path: Path
) -> None:
    # What the process supervisor records each time the worker process dies during the message's turn.
    message = post(store, "c1", "where is my order ORD-10001?", "e1")
    for _ in range(3):
        store.record_turn_failure(ConversationId("c1"), [message.id], "the turn worker died", utcnow())
    turns = worker(store, MustNotRun(), shop_path)  # type: ignore[arg-type]
    await turns.recover()
    await turns.wait_idle()

    assert store.pending_messages(ConversationId("c1")) == []
    [packet] = store.list_escalations()
    assert packet.reason_code == "internal_error"
    [trace] = store.list_traces()
    error = next(s for s in trace.steps if s.name == "error").output["error"]
    assert "3 turns on it failed or died with the worker process" in error
    replies = [m for m in store.list_messages(ConversationId("c1")) if m.role == Role.ASSISTANT]
    assert len(replies) == 1  # the customer is told a person will follow up


async def test_a_failed_turn_backs_off_instead_of_spinning(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    failing = CommitFails(store)
    post(store, "c1", "how long do I have to return an item?", "e1")
    # A back-off no busy machine can outlast between the failure and the checks below (the default starts
    # at 1 s; `_backoff` is checked on its own).
    backoff = lambda failures: timedelta(minutes=5) * failures  # noqa: E731
    turns = worker(failing, orchestrator, shop_path, commit_retries=0, retry_backoff=backoff)
    await turns.recover()
    await turns.wait_idle()
    assert failing.commit_attempts == 1
    assert store.conversations_with_pending() == []  # not due again before its back-off
    for _ in range(3):
        await turns.recover()
        await turns.wait_idle()
    assert failing.commit_attempts == 1


async def test_a_conversation_leased_by_another_worker_is_left_alone(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    post(store, "c1", "how long do I have to return an item?", "e1")
    assert store.claim_conversation(ConversationId("c1"), "other-worker", ttl_seconds=60)
    turns = worker(store, orchestrator, shop_path)
    await turns.recover()
    await turns.wait_idle()
    assert store.list_traces() == []
    store.release_conversation(ConversationId("c1"), "other-worker")
    await turns.recover()
    await turns.wait_idle()
    assert len(store.list_traces()) == 1


async def test_two_workers_never_answer_one_message_twice(
    store: SqlAlchemyStore, orchestrator: Orchestrator, shop_path: Path
) -> None:
    for c in range(6):
        for i in range(3):
            post(store, f"c{c}", "how long do I have to return an item?", f"e{c}-{i}")
    a, b = worker(store, orchestrator, shop_path), worker(store, orchestrator, shop_path)
    for _ in range(4):
        await asyncio.gather(a.recover(), b.recover())
        await asyncio.gather(a.wait_idle(), b.wait_idle())
    traces = store.list_traces()
    assert len(traces) == 18
    assert len({t.message_id for t in traces}) == 18
    for c in range(6):
        replies = [m for m in store.list_messages(ConversationId(f"c{c}")) if m.role == Role.ASSISTANT]
        assert len(replies) == 3


def test_commit_refuses_a_turn_from_a_worker_without_the_lease(store: SqlAlchemyStore) -> None:
    from cxstack.testing.store_contract import make_commit

    message = post(store, "c1", "hello", "e1")
    store.claim_conversation(ConversationId("c1"), "w1", ttl_seconds=60)
    from cxstack.domain.ports import LeaseLostError

    with pytest.raises(LeaseLostError):
        store.commit_turn(replace(make_commit("c1", message.id), lease_owner="w2"))


def test_the_default_back_off_grows_fourfold_up_to_ten_minutes() -> None:
    from cxstack.runtime.worker import _backoff

    assert [_backoff(n).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [1, 4, 16, 64, 256, 600]
