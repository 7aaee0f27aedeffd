"""What a runtime says about its turn worker, for /health: running, or why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WorkerState = Literal["starting", "running", "restarting", "stopped"]


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    state: WorkerState
    restarts: int = 0  # since the service started
    pid: int | None = None  # the worker process (None: the worker is a thread of the API process)
    last_exit: int | None = None  # the last exit code; negative: killed by that signal (-9: SIGKILL)
    reason: str | None = None  # why it is not running, in words

    @property
    def ok(self) -> bool:
        return self.state == "running"
