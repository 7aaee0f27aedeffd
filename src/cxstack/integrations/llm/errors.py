"""SDK errors of both official clients (openai, anthropic: the same Stainless-generated shape) as the port's
`LLMError`s, so that the guard retries what a retry can fix and nothing else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from cxstack.domain.llm import LLMBadResponseError, LLMError, LLMRejectedError, LLMUnavailableError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or an HTTP date); None if absent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def from_sdk_error(error: Exception, *, provider: str) -> LLMError:
    """The port's error for an exception raised by an official SDK client (or by its HTTP layer)."""
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    name = type(error).__name__
    if isinstance(status, int):
        headers = dict(response.headers) if response is not None else {}
        detail = _short(getattr(error, "message", "") or str(error))
        message = f"{provider} answered HTTP {status}: {detail}"
        if status in RETRYABLE_STATUS or status >= 500:
            return LLMUnavailableError(message, status=status, retry_after_s=parse_retry_after(headers))
        return LLMRejectedError(message, status=status)
    if "Timeout" in name:
        return LLMUnavailableError(f"{provider} did not answer in time")
    if "Connection" in name:
        return LLMUnavailableError(f"{provider} could not be reached: {_short(str(error))}")
    if isinstance(error, json.JSONDecodeError | ValueError | KeyError | TypeError) or "Validation" in name:
        return LLMBadResponseError(
            f"{provider} sent a reply that is not its wire format: {_short(str(error))}"
        )
    return LLMBadResponseError(f"{provider}: {name}: {_short(str(error))}")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
