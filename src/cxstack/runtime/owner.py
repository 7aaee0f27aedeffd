"""Who runs turns on a PostgreSQL database: one embedded `serve`, or any number of scale-out processes.

The embedded runtime (`serve`, its turn worker in a child process) runs the outbox, the help desk exports and
the turn worker of its own: a second such `serve` on the same database would answer and act twice, since the
outbox is not claimed item by item. So it holds an exclusive PostgreSQL advisory lock for its lifetime, and
the processes of a scale-out deployment (`serve --runtime procrastinate`, `cxstack worker`) hold the same
lock shared: many of those may run together, but never beside an embedded one. The lock is per schema
(tests and some deployments keep several cxstack schemas in one database). It belongs to a session:
PostgreSQL releases it when the process dies, and `keep()` takes it again after the server restarted.

On SQLite (one machine, the embedded runtime only) the same holds with an exclusive `flock` on a file beside
the database, released by the kernel when the process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from cxstack.store.db import create_engine_for, database_error_line, normalize_url

log = logging.getLogger(__name__)

RUNTIME_LOCK = 872364502  # the first key of the two-key advisory lock; the second is the schema's hash
KEEP_EVERY_S = 5.0

Mode = Literal["embedded", "scale-out"]


class RuntimeTakenError(RuntimeError):
    """Another kind of runtime already runs turns on this database."""


def _refusal(mode: Mode, schema: str) -> str:
    if mode == "embedded":
        return (
            f"another cxstack process already runs turns on this database (schema {schema}): a second "
            "`serve` would answer and act twice; on several processes run `serve --runtime procrastinate` "
            "and `cxstack worker`"
        )
    return (
        f"a `cxstack serve` with its own turn worker runs on this database (schema {schema}): stop it, then "
        "run every API process with `serve --runtime procrastinate` beside `cxstack worker`"
    )


class RuntimeClaim:
    """The advisory lock of one process's runtime: exclusive for the embedded one, shared for scale-out; on
    SQLite, a file lock (none for an in-memory database)."""

    def __init__(self, database_url: str, mode: Mode) -> None:
        normalized = normalize_url(database_url)
        url = make_url(normalized)
        self.mode = mode
        self.enabled = url.get_backend_name() == "postgresql"  # the lock must be kept across restarts
        self._engine = create_engine_for(normalized, poolclass=NullPool) if self.enabled else None
        self._connection: Connection | None = None
        self._lock_path: Path | None = None
        database = url.database or ""
        if url.get_backend_name() == "sqlite" and database and "memory" not in database:
            path = Path(database).expanduser()
            self._lock_path = path.with_name(path.name + ".runtime-lock")
        self._lock_file: int | None = None
        self.schema = ""

    @property
    def held(self) -> bool:
        return self._connection is not None or self._lock_file is not None

    def acquire(self) -> None:
        """Takes the lock (idempotent); raises RuntimeTakenError, in one line, when another holds it."""
        if self._lock_path is not None:
            self._acquire_file(self._lock_path)
        if self._engine is None or self._connection is not None:
            return
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            self.schema = str(connection.execute(text("SELECT current_schema()")).scalar())
            function = "pg_try_advisory_lock" if self.mode == "embedded" else "pg_try_advisory_lock_shared"
            taken = connection.execute(
                text(f"SELECT {function}(:key, hashtext(current_schema()))"), {"key": RUNTIME_LOCK}
            ).scalar()
        except BaseException:
            connection.close()
            raise
        if not taken:
            connection.close()
            raise RuntimeTakenError(_refusal(self.mode, self.schema))
        self._connection = connection

    def _acquire_file(self, path: Path) -> None:
        if self._lock_file is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise RuntimeTakenError(
                f"another `cxstack serve` already runs turns on {path.with_suffix('')}: a second one would "
                "answer and act twice; for several processes use PostgreSQL and "
                "`serve --runtime procrastinate`"
            ) from None
        self._lock_file = handle

    def release(self) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            os.close(handle)  # and the lock with it
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()  # the session ends, and the lock with it
            except Exception:
                log.debug("closing the runtime lock's connection failed", exc_info=True)
        if self._engine is not None:
            self._engine.dispose()

    def _verify(self) -> None:
        """Takes the lock again when its session is gone (PostgreSQL restarted, the connection was cut)."""
        connection = self._connection
        if connection is not None:
            try:
                connection.execute(text("SELECT 1"))
                return
            except Exception:
                log.warning("the runtime lock's database session is gone; taking the lock again")
                self._connection = None
                try:
                    connection.close()
                except Exception:
                    log.debug("closing a broken connection failed", exc_info=True)
        self.acquire()

    async def keep(self, every_s: float = KEEP_EVERY_S) -> None:
        """Runs until cancelled: holds on to the lock across database restarts. A lock another process took
        meanwhile is logged as an error each time (two runtimes of different kinds now share the database)."""
        failing = False  # an outage is logged when it starts and when it ends, not at every attempt
        while True:
            await asyncio.sleep(every_s)
            try:
                await asyncio.to_thread(self._verify)
            except RuntimeTakenError as exc:
                log.error("runtime lock lost after a database restart: %s", exc)
            except Exception as exc:
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "cannot take the runtime lock again yet (%s); trying every %.0f s",
                    database_error_line(exc),
                    every_s,
                )
                failing = True
            else:
                if failing:
                    log.warning("the runtime lock is held again")
                failing = False
