"""Probes for an orchestrator or a load balancer: `/health` says the process answers (liveness), `/ready` says
it can do its work now (readiness: store, schema, engine, turn worker).

A liveness probe that fails kills the process, so `/health` never fails on something a restart cannot fix: a
database that blinked answers 200 with `db_ok: false`. A readiness probe that fails only takes the process out
of rotation until it passes again, so every dependency is checked there, with its name when it fails.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Response, status
from pydantic import BaseModel, ConfigDict, Field

from cxstack.api import views
from cxstack.api.deps import Cx
from cxstack.api.schemas import HealthOut
from cxstack.app import CxApp
from cxstack.domain.ports import OutboxStatus
from cxstack.store.db import schema_status

# A probe has its own timeout (Kubernetes: 1 s by default); answering late is answering "dead".
HEALTH_DB_SECONDS = 0.8
READY_CHECK_SECONDS = 5.0
_health_checks: weakref.WeakKeyDictionary[
    CxApp, tuple[asyncio.AbstractEventLoop, asyncio.Future[HealthOut]]
] = weakref.WeakKeyDictionary()


class ReadyCheck(BaseModel):
    name: Literal["store", "schema", "engine", "worker"]
    state: Literal["ok", "failing", "not_applicable"]
    detail: str


class ReadyOut(BaseModel):
    """`ready` (HTTP 200) or `not_ready` (HTTP 503) with the failing checks named."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "status": "not_ready",
                "failing": ["schema"],
                "checks": [
                    {"name": "store", "state": "ok", "detail": "postgresql answered"},
                    {
                        "name": "schema",
                        "state": "failing",
                        "detail": "database schema is at 0011_outbox_content, this cxstack is at "
                        "0012_handoff_exports: run the migrations",
                    },
                    {"name": "engine", "state": "ok", "detail": "workspace Shop 3f2a…"},
                    {"name": "worker", "state": "ok", "detail": "running"},
                ],
            }
        }
    )

    status: Literal["ready", "not_ready"]
    failing: list[str] = Field(default_factory=list)
    checks: list[ReadyCheck]


T = TypeVar("T")


async def _bounded(call: Callable[[], T], seconds: float) -> T:
    return await asyncio.wait_for(asyncio.to_thread(call), seconds)


def _failure(exc: BaseException, seconds: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {seconds:g} s"
    return f"{type(exc).__name__}: {exc}"


async def liveness(cx: CxApp) -> HealthOut:
    """The process answers. The database figures are a courtesy for the staff pages: bounded in time and
    never a reason to fail the probe."""
    loop = asyncio.get_running_loop()
    running = _health_checks.get(cx)
    if running is None or running[1].done() or running[0] is not loop:
        # One database check at a time per process: probes that keep coming while the database hangs
        # wait on the same one instead of each leaving a thread stuck on it.
        running = (loop, asyncio.ensure_future(asyncio.to_thread(views.health, cx)))
        _health_checks[cx] = running
    try:
        return await asyncio.wait_for(asyncio.shield(running[1]), HEALTH_DB_SECONDS)
    except TimeoutError:
        worker = cx.runtime.health()
        reason = f"database unreachable: no answer within {HEALTH_DB_SECONDS:g} s"
        return HealthOut(
            status="degraded",
            reasons=[reason] + ([] if worker.ok else [worker.reason or f"turn worker {worker.state}"]),
            workspace=cx.workspace.settings.name,
            workspace_version=str(cx.workspace.version),
            db_ok=False,
            pending=None,
            db_error=reason,
            worker=views.worker_out(worker),
        )


def _store_check(cx: CxApp) -> str:
    engine = getattr(cx.store, "engine", None)
    if engine is None:
        cx.store.count_outbox(OutboxStatus.DEAD)
        return "answered"
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1").scalar_one()
    return f"{engine.dialect.name} answered"


def _schema_check(cx: CxApp) -> tuple[bool, str]:
    engine = getattr(cx.store, "engine", None)
    if engine is None:
        return True, "no migrations (in-memory store)"
    with engine.connect() as connection:
        status = schema_status(connection)
    if status.state == "current":
        return True, f"at {status.code}"
    if status.state == "compatible":
        # A rolling upgrade: a newer release migrated the database and declared this code fit to run on it.
        return True, (
            f"database schema is at {status.database}, newer than this cxstack ({status.code}) and "
            f"compatible with it from {status.oldest_compatible}"
        )
    if status.state == "too_new":
        return False, str(status.error())
    return (
        False,
        f"database schema is at {status.database}, this cxstack is at {status.code}: run the migrations",
    )


async def readiness(cx: CxApp) -> ReadyOut:
    checks: list[ReadyCheck] = []
    try:
        detail = await _bounded(lambda: _store_check(cx), READY_CHECK_SECONDS)
        checks.append(ReadyCheck(name="store", state="ok", detail=detail))
        ok, detail = await _bounded(lambda: _schema_check(cx), READY_CHECK_SECONDS)
        checks.append(ReadyCheck(name="schema", state="ok" if ok else "failing", detail=detail))
    except Exception as exc:  # readiness must answer, naming what failed
        checks.append(ReadyCheck(name="store", state="failing", detail=_failure(exc, READY_CHECK_SECONDS)))
        checks.append(ReadyCheck(name="schema", state="failing", detail="unknown: the store did not answer"))
    engine = getattr(cx, "engine", None)
    if engine is None or getattr(engine, "orchestrator", None) is None:
        checks.append(ReadyCheck(name="engine", state="failing", detail="the engine is not loaded"))
    else:
        workspace = engine.workspace
        detail = f"workspace {workspace.settings.name} {str(workspace.version)[:12]}"
        checks.append(ReadyCheck(name="engine", state="ok", detail=detail))
    checks.append(await _worker_check(cx))
    failing = [check.name for check in checks if check.state == "failing"]
    return ReadyOut(status="not_ready" if failing else "ready", failing=failing, checks=checks)


async def _worker_check(cx: CxApp) -> ReadyCheck:
    runtime: Any = cx.runtime
    # A runtime whose turns run elsewhere, with no way to count its workers, sets runs_turns = False.
    if not getattr(runtime, "runs_turns", True):
        return ReadyCheck(name="worker", state="not_applicable", detail="this process runs no turns")
    worker = runtime.health()
    if not worker.ok:
        return ReadyCheck(
            name="worker", state="failing", detail=worker.reason or f"turn worker {worker.state}"
        )
    live_workers = getattr(runtime, "live_workers", None)
    if live_workers is not None:
        # Scale-out: this process only defers turns; they need at least one worker with a fresh heartbeat.
        try:
            live = await asyncio.wait_for(live_workers(), READY_CHECK_SECONDS)
        except Exception as exc:  # readiness must answer, naming what failed
            return ReadyCheck(name="worker", state="failing", detail=_failure(exc, READY_CHECK_SECONDS))
        if live == 0:
            detail = "this process runs no turns and no turn worker has a fresh heartbeat: messages wait"
            return ReadyCheck(name="worker", state="failing", detail=detail)
        return ReadyCheck(
            name="worker", state="ok", detail=f"this process runs no turns; {live} live workers"
        )
    return ReadyCheck(name="worker", state="ok", detail=worker.state)


def add_ops_routes(api: FastAPI) -> None:
    @api.get(
        "/ready",
        response_model=ReadyOut,
        tags=["service"],
        responses={503: {"model": ReadyOut, "description": "not ready: the failing checks are named"}},
    )
    async def ready(cx: Cx, response: Response) -> ReadyOut:
        """Readiness: the store answers a trivial query, its schema is at this code's revision, the engine
        is loaded and the turn worker runs (or this process runs no turns). 503 names the failing checks."""
        report = await readiness(cx)
        if report.failing:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report
