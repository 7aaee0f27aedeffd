"""Log output: the human format by default; `CXSTACK_LOG_FORMAT=json` prints one JSON object per line (time,
level, logger, message, process (host:pid), and `conversation_id` when the call passes it in `extra` or the
work carries it, see `cxstack.domain.log_context`), for a log collector to index without parsing prose."""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any, Literal

from cxstack.domain.log_context import conversation_id

LOG_FORMAT_ENV = "CXSTACK_LOG_FORMAT"
LOG_FORMATS = ("human", "json")
# LogRecord's own attributes; anything else on a record came from `extra=` and is passed through.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
_HOST = socket.gethostname()


def log_format(value: str | None = None) -> Literal["human", "json"]:
    chosen = (value or os.environ.get(LOG_FORMAT_ENV) or "human").strip().lower()
    if chosen == "json":
        return "json"
    if chosen == "human":
        return "human"
    raise ValueError(f"{LOG_FORMAT_ENV}={chosen!r} is not a log format; use one of {', '.join(LOG_FORMATS)}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # the same host:pid as the `process` label of /metrics: which of a deployment's processes said it
            "process": f"{_HOST}:{record.process}",
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if entry.get("conversation_id") is None:
            bound = conversation_id.get()
            if bound is not None:
                entry["conversation_id"] = bound
            else:
                entry.pop("conversation_id", None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_log_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for JSON lines on stderr: cxstack's loggers and uvicorn's alike (give it
    to uvicorn as `log_config`, or it installs its own human handlers on its loggers)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(value: str | None = None, level: str = "INFO") -> dict[str, Any] | None:
    """JSON lines when asked for (returns the config to hand to uvicorn too); the human format otherwise,
    which changes nothing (None: uvicorn keeps its own)."""
    if log_format(value) != "json":
        return None
    import logging.config

    config = json_log_config(level)
    logging.config.dictConfig(config)
    return config


def process_log_config(level: str = "INFO") -> dict[str, Any]:
    """The logging config of one of several processes writing to the same output (`serve --processes N`):
    JSON lines (which carry the process) when asked for, else uvicorn's human format with the pid on every
    line, cxstack's own warnings included."""
    if log_format() == "json":
        return json_log_config(level)
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"].replace("%(levelprefix)s ", "%(levelprefix)s [%(process)d] ")
    # cxstack's and the libraries' warnings, as one process prints them (a library may lower its own level)
    config["handlers"]["warnings"] = {**config["handlers"]["default"], "level": "WARNING"}
    config["root"] = {"handlers": ["warnings"], "level": "WARNING"}
    return config


__all__ = ["JsonFormatter", "configure_logging", "json_log_config", "log_format", "process_log_config"]
