"""Dependencies every route module shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cxstack.app import CxApp


# `async` though it does no I/O: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
async def _cx(request: Request) -> CxApp:
    cx: CxApp = request.app.state.cx
    return cx


Cx = Annotated[CxApp, Depends(_cx)]
