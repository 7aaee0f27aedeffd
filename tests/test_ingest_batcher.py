"""The ingest batcher: messages posted at once are committed together, each caller gets its own answer only
after the commit, one bad batch fails its callers loudly, and stopping stores what was queued."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from cxstack.domain.models import ConversationId, CustomerId, InboundMessage
from cxstack.domain.ports import IngestResult
from cxstack.runtime.ingest import IngestBatcher
from cxstack.store import sqlalchemy_store
from cxstack.store.db import create_engine_for, migrate
from cxstack.store.sqlalchemy_store import SqlAlchemyStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cx.db'}")
    migrate(engine)
    yield SqlAlchemyStore(engine)
    engine.dispose()


def message(external_id: str, conversation: str = "c1", text: str = "hello") -> InboundMessage:
    return InboundMessage(
        channel="api",
        external_id=external_id,
        conversation_id=ConversationId(conversation),
        customer_id=CustomerId("cus_1"),
        text=text,
    )


async def test_messages_posted_together_share_commits_and_keep_their_order(store: SqlAlchemyStore) -> None:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _connection: commits.append(1))
    notified: list[str] = []
    batcher = IngestBatcher(store, lambda result: notified.append(result.message.conversation_id))
    batcher.start()
    try:
        posted = [message(f"e{i}", conversation=f"c{i % 3}", text=f"text {i}") for i in range(60)]
        results = await asyncio.gather(*(batcher.submit(m) for m in posted))
        again = await batcher.submit(message("e5", conversation="c2"))  # a redelivery
    finally:
        batcher.stop()

    assert all(r.created for r in results) and not again.created
    assert again.message.id == results[5].message.id
    assert batcher.messages == 61 and batcher.batches < 61 and len(commits) < 61
    for c in range(3):
        stored = [m.text for m in store.list_messages(ConversationId(f"c{c}"))]
        assert stored == [f"text {i}" for i in range(60) if i % 3 == c]
    assert sorted(set(notified)) == ["c0", "c1", "c2"]
    assert len(notified) <= batcher.batches * 3  # one notice per conversation per batch, not per message


class BrokenDisk(SqlAlchemyStore):
    def ingest_many(self, inbounds: Sequence[InboundMessage]) -> list[IngestResult | Exception]:
        raise OSError("disk I/O error")


async def test_a_batch_that_cannot_be_committed_fails_every_caller_in_it(store: SqlAlchemyStore) -> None:
    batcher = IngestBatcher(BrokenDisk(store.engine), lambda _result: None)
    batcher.start()
    try:
        outcomes = await asyncio.gather(
            *(batcher.submit(message(f"e{i}")) for i in range(5)), return_exceptions=True
        )
    finally:
        batcher.stop()
    assert all(isinstance(o, OSError) for o in outcomes)
    assert store.list_messages(ConversationId("c1")) == []


async def test_stopping_stores_what_is_queued_first(store: SqlAlchemyStore) -> None:
    batcher = IngestBatcher(store, lambda _result: None)
    batcher.start()
    waiting = [asyncio.ensure_future(batcher.submit(message(f"e{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # every submit has queued its message
    await asyncio.to_thread(batcher.stop)
    results = await asyncio.gather(*waiting)
    assert len({r.message.id for r in results}) == 20
    assert len(store.list_messages(ConversationId("c1"))) == 20
    assert not batcher.running


def test_one_message_that_cannot_be_stored_fails_alone_in_its_batch(
    store: SqlAlchemyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlalchemy_store._ingest_core

    def fails_on_poison(connection: Any, inbound: InboundMessage) -> Any:
        stored = real(connection, inbound)  # written, then rolled back to its savepoint
        if inbound.text == "poison":
            raise RuntimeError("constraint the store did not expect")
        return stored

    monkeypatch.setattr(sqlalchemy_store, "_ingest_core", fails_on_poison)
    outcomes = store.ingest_many([message("a", text="first"), message("b", text="poison"), message("c")])
    assert isinstance(outcomes[1], RuntimeError)
    assert [isinstance(o, IngestResult) and o.created for o in (outcomes[0], outcomes[2])] == [True, True]
    assert [m.text for m in store.list_messages(ConversationId("c1"))] == ["first", "hello"]
    conversation = store.get_conversation(ConversationId("c1"))
    assert conversation is not None
    assert len(store.pending_messages(ConversationId("c1"))) == 2
