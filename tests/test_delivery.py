"""Reply delivery: the outbox dispatcher against real stores, the outbox migration, /v1/outbox and /health."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from tests.store_fixtures import fresh_pg_schema

from cxstack.api.app import create_api
from cxstack.app import Settings, build
from cxstack.channels.outbox import OutboxDispatcher
from cxstack.domain.ports import OutboxItem, OutboxStatus, SendRetryPolicy, Store
from cxstack.store.db import alembic_config, create_engine_for, migrate, sqlite_synchronous
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.authz import make_role_keys, send_as
from cxstack.testing.memory_store import InMemoryStore
from cxstack.testing.store_contract import inbound, make_commit
from cxstack.workspace.loader import load_workspace


class RecordingChannel:
    """A real channel object: confirms a send unless the conversation is in `failing`."""

    name = "webchat"

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = failing or set()
        self.sent: list[str] = []
        self.calls = 0

    async def send(self, item: OutboxItem) -> str | None:
        self.calls += 1
        if item.conversation_id in self.failing:
            raise ConnectionError("provider answered 503")
        self.sent.append(item.text)
        return None


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_store(kind: str, tmp_path: Path, policy: SendRetryPolicy | None = None) -> Store:
    if kind == "memory":
        return InMemoryStore(send_retry=policy)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'cx.db'}")
    migrate(engine)
    return SqlAlchemyStore(engine, send_retry=policy)


def reply_in(store: Store, conversation: str, text: str, n: int = 0) -> None:
    message = store.ingest(inbound(f"{conversation}-{n}", conversation=conversation)).message
    store.commit_turn(make_commit(conversation, message.id, reply=text))


# ---- the dispatcher ----------------------------------------------------------------------------------------


async def test_150_stuck_replies_never_delay_a_new_one(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    stuck = {f"stuck-{i}" for i in range(150)}
    for conversation in sorted(stuck):
        reply_in(store, conversation, f"reply to {conversation}")
    channel = RecordingChannel(failing=stuck)
    dispatcher = OutboxDispatcher(store, {"webchat": channel})

    assert await dispatcher.flush() == 0
    assert channel.calls == 150  # every stuck reply was tried once, then waits for its own retry

    reply_in(store, "fresh", "your order ships today")
    assert await dispatcher.flush() == 1
    assert channel.sent == ["your order ships today"]
    assert store.count_outbox(OutboxStatus.PENDING) == 150


async def test_the_dispatcher_follows_the_stores_attempt_limit(store_kind: str, tmp_path: Path) -> None:
    # No wait between attempts, so each flush retries at once; the store alone decides when to give up.
    policy = SendRetryPolicy(max_attempts=3, first_delay_s=0.0, max_delay_s=0.0)
    store = make_store(store_kind, tmp_path, policy)
    reply_in(store, "broken", "this never arrives")
    reply_in(store, "fine", "this arrives")
    channel = RecordingChannel(failing={"broken"})
    dispatcher = OutboxDispatcher(store, {"webchat": channel})

    for _ in range(6):
        await dispatcher.flush()

    assert channel.calls == 3 + 1  # three tries for the broken one, one for the good one
    assert channel.sent == ["this arrives"]
    [dead] = store.list_outbox(OutboxStatus.DEAD)
    assert (dead.conversation_id, dead.attempts) == ("broken", 3)
    assert dead.last_error == "ConnectionError: provider answered 503"
    assert store.pending_outbox() == []

    store.requeue_outbox(dead.id)
    channel.failing.clear()
    assert await dispatcher.flush() == 1
    assert channel.sent == ["this arrives", "this never arrives"]
    assert store.count_outbox(OutboxStatus.DEAD) == 0


async def test_an_unknown_channel_counts_as_a_failed_send(tmp_path: Path) -> None:
    store = make_store("memory", tmp_path)
    reply_in(store, "c1", "hello")
    dispatcher = OutboxDispatcher(store, {})
    await dispatcher.flush()
    [item] = store.pending_outbox(now=datetime.now(UTC) + timedelta(hours=1))
    assert item.attempts == 1 and item.last_error == "no channel named 'webchat'"


# ---- the migration -----------------------------------------------------------------------------------------


def _rows_before_0002(connection: object, created: datetime) -> None:
    execute = connection.execute  # type: ignore[attr-defined]
    execute(
        text(
            "INSERT INTO customers (id, name, email, plan, arr, segment, attributes, updated_at) "
            "VALUES ('cus-1', '', '', '', 0, '', '{}', :t)"
        ),
        {"t": created},
    )
    execute(
        text(
            "INSERT INTO conversations (id, customer_id, channel, status, state, created_at, updated_at, "
            "last_seq, pending_count) VALUES ('conv-1', 'cus-1', 'webchat', 'open', '{}', :t, :t, 3, 0)"
        ),
        {"t": created},
    )
    for seq, (status, attempts) in enumerate([("pending", 2), ("failed", 10), ("sent", 0)], start=1):
        execute(
            text(
                "INSERT INTO messages (id, conversation_id, seq, role, text, channel, external_id, author, "
                "created_at, processed) VALUES (:id, 'conv-1', :seq, 'assistant', 'hi', 'webchat', NULL, "
                "NULL, :t, TRUE)"
            ),
            {"id": f"msg-{seq}", "seq": seq, "t": created + timedelta(seconds=seq)},
        )
        execute(
            text(
                "INSERT INTO outbox (id, conversation_id, message_id, channel, text, status, attempts, "
                "last_error, created_at, sent_at) VALUES (:id, 'conv-1', :message, 'webchat', :text, "
                ":status, :attempts, NULL, :t, NULL)"
            ),
            {
                "id": f"out-{status}",
                "message": f"msg-{seq}",
                "text": f"{status} reply",
                "status": status,
                "attempts": attempts,
                "t": created + timedelta(seconds=seq),
            },
        )


def _check_upgrade_from_0001(engine: Engine) -> None:
    config = alembic_config()
    created = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        _rows_before_0002(
            connection, created if engine.dialect.name == "postgresql" else created.replace(tzinfo=None)
        )
    migrate(engine)

    store = SqlAlchemyStore(engine)
    [pending] = store.pending_outbox()
    assert (pending.id, pending.attempts) == ("out-pending", 2)
    assert pending.next_attempt_at == pending.created_at == created + timedelta(seconds=1)
    [dead] = store.list_outbox(OutboxStatus.DEAD)
    assert (dead.id, dead.attempts, dead.next_attempt_at) == (
        "out-failed",
        10,
        created + timedelta(seconds=2),
    )
    assert [item.id for item in store.list_outbox(OutboxStatus.SENT)] == ["out-sent"]

    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002_conversation_state")  # to just before the outbox revision
        statuses = dict(connection.execute(text("SELECT id, status FROM outbox")).all())
    assert statuses == {"out-pending": "pending", "out-failed": "failed", "out-sent": "sent"}


def test_the_outbox_migration_keeps_existing_rows_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        _check_upgrade_from_0001(engine)
    finally:
        engine.dispose()


@pytest.fixture
def pg_fresh_schema() -> Iterator[Engine]:
    with fresh_pg_schema("cxstack_mig") as (url, _):
        engine = create_engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_the_outbox_migration_keeps_existing_rows_on_postgresql(pg_fresh_schema: Engine) -> None:
    _check_upgrade_from_0001(pg_fresh_schema)


# ---- SQLite durability -------------------------------------------------------------------------------------


def test_sqlite_commits_are_synced_in_full_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CXSTACK_SQLITE_SYNCHRONOUS", raising=False)
    levels = {}
    for setting in (None, "normal", "FULL"):
        if setting is None:
            monkeypatch.delenv("CXSTACK_SQLITE_SYNCHRONOUS", raising=False)
        else:
            monkeypatch.setenv("CXSTACK_SQLITE_SYNCHRONOUS", setting)
        engine = create_engine_for(f"sqlite:///{tmp_path / f'{setting}.db'}")
        with engine.connect() as connection:
            levels[setting] = connection.exec_driver_sql("PRAGMA synchronous").scalar()
        engine.dispose()
    assert levels == {None: 2, "normal": 1, "FULL": 2}  # 2 is FULL, 1 is NORMAL

    monkeypatch.setenv("CXSTACK_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(ValueError, match="CXSTACK_SQLITE_SYNCHRONOUS='OFF'"):
        sqlite_synchronous()


# ---- the API -----------------------------------------------------------------------------------------------


def test_dead_replies_are_listed_and_counted_in_health(tmp_path: Path, shop_path: Path) -> None:
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    viewer = make_role_keys(cx.store)["viewer"]
    with TestClient(create_api(cx), headers={"Authorization": f"Bearer {viewer}"}) as client:
        assert send_as(client, "GET", "/v1/outbox", None).status_code == 401
        reply_in(cx.store, "c-dead", "this never arrived")
        reply_in(cx.store, "c-ok", "this is still queued")
        [dead, _] = cx.store.pending_outbox(now=datetime.now(UTC) + timedelta(seconds=5))
        for _ in range(cx.store.send_retry.max_attempts):
            cx.store.mark_send_failed(dead.id, "HTTP 502 from the provider")

        listed = client.get("/v1/outbox", params={"status": "dead"})
        assert listed.status_code == 200
        [item] = listed.json()
        assert item["id"] == dead.id and item["conversation_id"] == "c-dead"
        assert item["status"] == "dead" and item["attempts"] == cx.store.send_retry.max_attempts
        assert item["last_error"] == "HTTP 502 from the provider" and item["text"] == "this never arrived"
        assert client.get("/v1/outbox").json() == listed.json()  # dead is the default
        assert client.get("/v1/outbox", params={"status": "failed"}).status_code == 422

        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["outbox_dead"] == 1
        assert health.json()["status"] == "ok"  # a dead reply needs a person, the service itself is fine


def test_health_stays_live_and_ready_is_503_when_the_database_is_gone(
    tmp_path: Path, shop_path: Path
) -> None:
    cx = build(Settings(home=tmp_path / "home", embedder="hashing"), workspace=load_workspace(shop_path))
    with TestClient(create_api(cx)) as client:
        shutil.rmtree(tmp_path / "home")
        engine = cx.store.engine  # type: ignore[attr-defined]
        engine.dispose()
        (tmp_path / "home").write_text("not a directory")  # the database file cannot be opened again
        health = client.get("/health")
        ready = client.get("/ready")
        (tmp_path / "home").unlink()
    assert health.status_code == 200  # liveness: restarting the process would not bring the database back
    assert ready.status_code == 503 and ready.json()["failing"] == ["store", "schema"]
    body = health.json()
    assert body["status"] == "degraded" and body["db_ok"] is False
    assert body["reasons"] and body["reasons"][0].startswith("database unreachable")
