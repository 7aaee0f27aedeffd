"""The SQLite default with its disk full: a post is refused with a clear 507 (and a log line), nothing
acknowledged is lost, the file stays sound, and once there is room again every message is answered.

SQLite's `max_page_count` makes it return SQLITE_FULL ("database or disk is full") for real when a write
would grow the file past it: the same error a full disk gives, without filling one."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from tests.conftest import SAM_ID

from cxstack.api.app import create_api
from cxstack.api.keys import ApiKeys
from cxstack.app import Settings, build
from cxstack.domain.auth import ApiRole
from cxstack.domain.models import ConversationId, Role
from cxstack.store.db import storage_full
from cxstack.workspace.loader import load_workspace

LONG = "where is my order? " + "I have been waiting a long time for it. " * 60  # ~2.5 kB: new pages


def _cap_pages(engine: Any) -> Any:
    """Every new connection may not grow the file past its size now; returns the listener."""
    with engine.connect() as connection:
        pages = connection.execute(text("PRAGMA page_count")).scalar()

    def cap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(engine, "connect", cap)
    engine.dispose()  # pooled connections would not have the cap
    return cap


def test_a_full_disk_is_a_507_that_loses_nothing(
    tmp_path: Path, shop_path: Path, backoffice: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        embedder="hashing",
        backoffice_url=backoffice[0],
        burst_window_ms=0,
        runtime="thread",
    )
    cx = build(settings, workspace=load_workspace(shop_path))
    key = ApiKeys(cx.store).create("test", ApiRole.ADMIN).secret
    engine = cx.store.engine  # type: ignore[attr-defined]

    def post(client: TestClient, n: int) -> Any:
        return client.post(
            "/v1/conversations/full/messages",
            json={"text": f"{LONG} ({n})", "external_id": f"m{n}", "customer_id": SAM_ID},
        )

    with TestClient(create_api(cx), headers={"Authorization": f"Bearer {key}"}) as client:
        assert post(client, 0).status_code == 202
        cap = _cap_pages(engine)
        answers = {n: post(client, n) for n in range(1, 40)}
        refused = [n for n, r in answers.items() if r.status_code == 507]
        assert refused, {n: r.status_code for n, r in answers.items()}
        assert {r.status_code for r in answers.values()} <= {202, 507}, "never a 500"
        assert "disk is full" in answers[refused[0]].json()["detail"]
        assert answers[refused[0]].headers["Retry-After"] == "1"
        assert "the database's disk is full" in caplog.text
        assert any(
            r.levelno == logging.ERROR and "/v1/conversations/full/messages" in r.message
            for r in caplog.records
        )

        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"

        event.remove(engine, "connect", cap)  # space freed
        engine.dispose()
        for n in refused:  # the client retries what was refused, with the same external id
            assert post(client, n).status_code == 202
        deadline = time.monotonic() + 30
        while cx.store.conversations_with_pending() and time.monotonic() < deadline:
            time.sleep(0.1)

    messages = cx.store.list_messages(ConversationId("full"))
    inbound = [m.external_id for m in messages if m.role == Role.CUSTOMER]
    assert sorted(inbound) == sorted(f"m{n}" for n in range(40)), "every message stored, once"
    traces = cx.store.list_traces(ConversationId("full"), limit=1000)
    assert sorted(t.message_id for t in traces) == sorted(m.id for m in messages if m.role == Role.CUSTOMER)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_storage_full_tells_a_full_disk_from_other_errors() -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (x)")
    connection.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as full:
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    assert storage_full(OperationalError("INSERT", {}, full.value))
    with pytest.raises(sqlite3.OperationalError) as other:
        connection.execute("SELECT * FROM missing")
    assert not storage_full(OperationalError("SELECT", {}, other.value))
