"""Secrets referenced from the environment: `${NAME}` in a workspace file, resolved when an adapter starts.

The workspace (and so every stored workspace version) holds only the reference. The resolved value lives in a
`Secret`, which refuses to be printed, logged, pickled or compared by value: a trace, a log line, an API
response or a process boundary shows `Secret(${NAME})`, never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, NoReturn

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Header names that carry credentials: their values must be references, never literals in the workspace.
SENSITIVE = re.compile(r"authorization|token|secret|password|passwd|api[-_]?key|cookie|credential", re.I)


class MissingSecretError(ValueError):
    def __init__(self, where: str, names: list[str]) -> None:
        self.names = names
        listed = ", ".join(f"${{{n}}}" for n in names)
        super().__init__(f"{where} references {listed}, which {'is' if len(names) == 1 else 'are'} not set")


class Secret:
    __slots__ = ("_names", "_value")

    def __init__(self, value: str, names: tuple[str, ...]) -> None:
        self._value = value
        self._names = names

    def reveal(self) -> str:
        """The value, for the one place that sends it (an HTTP header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(" + ", ".join(f"${{{n}}}" for n in self._names) + ")"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled: resolve it again where it is used")

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def references(value: str) -> list[str]:
    return REFERENCE.findall(value)


def resolve(value: str, *, where: str, environ: Mapping[str, str] | None = None) -> str | Secret:
    """A literal stays a str; a value with ${NAME} references becomes a Secret (raises if one is unset)."""
    names = references(value)
    if not names:
        return value
    env = os.environ if environ is None else environ
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise MissingSecretError(where, missing)
    return Secret(REFERENCE.sub(lambda m: env[m.group(1)], value), tuple(names))


def reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def is_sensitive(header: str) -> bool:
    return bool(SENSITIVE.search(header))


def redacted(headers: Mapping[str, Any]) -> dict[str, str]:
    """Headers as they may be shown or logged."""
    return {k: ("***" if isinstance(v, Secret) or is_sensitive(k) else str(v)) for k, v in headers.items()}
