"""The output of a one-machine deployment under circus (deploy/circus.ini, `make run-pg`): every line of every
process on circusd's stdout, prefixed with its watcher and pid ("worker 4242 | …"), so one terminal or log
file says which process said what. Circus hands a stream chunks of at most 1 KiB as the pipes deliver them, so
a line cut between two chunks waits for its end instead of being printed as two."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO


class LabelledStream:
    """A circus stream class (`stdout_stream.class = cxstack.runtime.output.LabelledStream`,
    `stdout_stream.label = api`): whole lines, each prefixed with the label and the process id."""

    width = 6  # "worker": the labels line up

    def __init__(self, label: str = "", out: TextIO | None = None, **_: Any) -> None:
        self.label = label
        self.out = out if out is not None else sys.stdout
        self._partial: dict[tuple[int, str], str] = {}
        _quiet_stop_conflicts()

    def __call__(self, data: dict[str, Any]) -> None:
        chunk = data["data"]
        text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
        key = (int(data.get("pid") or 0), str(data.get("name", "")))
        lines = (self._partial.pop(key, "") + text).split("\n")
        if lines[-1]:
            self._partial[key] = lines[-1]
        for line in lines[:-1]:
            self._write(key[0], line)
        self.out.flush()

    def _write(self, pid: int, line: str) -> None:
        self.out.write(f"{self.label:<{self.width}} {pid:>7} | {line.rstrip(chr(13))}\n")

    def close(self) -> None:
        for (pid, _), line in self._partial.items():
            self._write(pid, line)
        self._partial.clear()
        self.out.flush()


class _StopConflicts(logging.Filter):
    """circus 0.19 checks its processes every `check_delay` seconds even while it stops them, and each check
    refuses ("arbiter is already running arbiter_stop command") with a traceback at ERROR: noise on every
    Ctrl-C that lasts longer than a second, and nothing else. Only that refusal is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (type(error).__name__ == "ConflictError" and "arbiter_stop" in str(error))


def _quiet_stop_conflicts() -> None:
    # circusd builds its streams (this class) in its own process: the filter lands on circusd's logger only
    logger = logging.getLogger("tornado.application")
    if not any(isinstance(f, _StopConflicts) for f in logger.filters):
        logger.addFilter(_StopConflicts())
