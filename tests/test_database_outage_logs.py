"""What cxstack asks of every PostgreSQL connection (a name per process, TCP timeouts that notice a dead
network) and what its processes log while the database is away: one line per event, not a traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys

import procrastinate.exceptions
import psycopg
import psycopg_pool
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from tests.store_fixtures import PG_URL

from cxstack.runtime import jobs
from cxstack.store.db import create_engine_for, database_error_line, postgres_session_defaults


def test_every_connection_names_its_host_and_process_and_sets_tcp_timeouts() -> None:
    defaults = postgres_session_defaults(make_url("postgresql+psycopg://u@db.internal/cx"))
    assert defaults["application_name"] == f"cxstack@{socket.gethostname()}:{os.getpid()}"[:63]
    assert defaults["tcp_user_timeout"] == "30000" and defaults["keepalives"] == "1"
    assert int(defaults["connect_timeout"]) > 0
    chosen = postgres_session_defaults(make_url("postgresql://u@db/cx?application_name=mine&keepalives=0"))
    assert "application_name" not in chosen and "keepalives" not in chosen, "the URL's own settings win"
    info = jobs.conninfo("postgresql+psycopg://u@db/cx?options=-csearch_path%3Dtenant")
    parameters = psycopg.conninfo.conninfo_to_dict(info)
    assert parameters["options"] == "-csearch_path=tenant" and parameters["tcp_user_timeout"] == "30000"
    assert parameters["application_name"].startswith("cxstack@"), "procrastinate's connections too"


@pytest.mark.postgres
def test_the_server_sees_the_process_name() -> None:
    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    engine = create_engine_for(PG_URL)
    try:
        with engine.connect() as connection:
            name = connection.execute(text("SELECT current_setting('application_name')")).scalar()
        assert name == f"cxstack@{socket.gethostname()}:{os.getpid()}"[:63]
    finally:
        engine.dispose()


def _wrapped(cause: BaseException) -> procrastinate.exceptions.ConnectorException:
    """As procrastinate raises it: its own exception, the driver's as the cause."""
    try:
        try:
            raise cause
        except BaseException as error:
            raise procrastinate.exceptions.ConnectorException() from error
    except procrastinate.exceptions.ConnectorException as wrapped:
        return wrapped


def _record(error: BaseException | None) -> logging.LogRecord:
    info = (type(error), error, error.__traceback__) if error is not None else None
    return logging.LogRecord(
        "procrastinate.worker.w", logging.ERROR, __file__, 1, "%s error", ("poll",), info
    )


def test_a_connection_error_is_logged_in_one_line_and_anything_else_keeps_its_traceback() -> None:
    outage = psycopg.OperationalError('connection failed: server at "db" refused\n\tIs the server running?')
    record = _record(_wrapped(outage))
    assert jobs.OneLineDatabaseErrors().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == 'poll error (connection failed: server at "db" refused)'

    timeout = _record(_wrapped(psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec")))
    jobs.OneLineDatabaseErrors().filter(timeout)
    assert timeout.exc_info is None and "couldn't get a connection" in timeout.getMessage()

    bug = _record(_wrapped(ValueError("a bug, not an outage")))
    assert jobs.OneLineDatabaseErrors().filter(bug)
    assert bug.exc_info is not None and bug.getMessage() == "poll error", "a real error keeps its traceback"


def test_the_worker_loggers_get_the_filter_before_procrastinate_makes_them() -> None:
    """procrastinate imports its worker module, and names the worker's logger, only when a worker starts."""
    check = (
        "import sys; from cxstack.runtime import jobs; assert 'procrastinate.worker' not in sys.modules; "
        "jobs.quiet_database_tracebacks('host-a:42'); import procrastinate.worker as w; "
        "assert [type(f).__name__ for f in w.logger.filters] == ['OneLineDatabaseErrors']; "
        "child = w.logger.getChild('host-a:42'); "  # how procrastinate names the worker's logger
        "assert [type(f).__name__ for f in child.filters] == ['OneLineDatabaseErrors']"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_a_sqlalchemy_connection_error_is_shown_as_its_first_line() -> None:
    from sqlalchemy.exc import OperationalError

    error = OperationalError("SELECT 1", {}, psycopg.OperationalError("connection failed: refused\n\thint"))
    assert database_error_line(error) == "connection failed: refused"
    assert database_error_line(_wrapped(psycopg.OperationalError("gone\nmore"))) == "gone"


def test_a_job_released_while_its_worker_was_away_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    released = psycopg.errors.RaiseException(
        'Job was not found or not in "doing" or "todo" status (job id: 54)'
    )
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(asyncio.sleep(0), name="process job cxstack:run_turns[54]")
        loop.run_until_complete(task)
        with caplog.at_level(logging.WARNING, logger="cxstack.runtime.jobs"):
            jobs._released_job_handler(
                loop,
                {
                    "message": "Task exception was never retrieved",
                    "exception": _wrapped(released),
                    "future": task,
                },
            )
        assert [r.getMessage() for r in caplog.records] == [
            "process job cxstack:run_turns[54]: released while this worker was away from the database; "
            "it ran elsewhere"
        ]
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            jobs._released_job_handler(loop, {"message": "boom", "exception": RuntimeError("other")})
        assert any("boom" in r.getMessage() for r in caplog.records), (
            "anything else goes to asyncio's handler"
        )
    finally:
        loop.close()
