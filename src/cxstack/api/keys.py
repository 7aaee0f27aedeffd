"""API keys: a random secret shown once at creation, stored only as its argon2id hash, found by a prefix.

A key reads `cxk_<id>_<secret>`: `id` (8 characters) is not secret and finds the stored row; `secret` (256
random bits) is checked against the hash. Checking costs tens of milliseconds by design, so a successful check
is remembered in memory for a short time (`cache_seconds`, default 30 s). Revoking a key through this object
forgets it at once; a key revoked by another process (the CLI, another API process) keeps working here until
its cache entry expires, i.e. for at most `cache_seconds`.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cxstack.domain.auth import ApiKey, ApiRole
from cxstack.domain.models import utcnow
from cxstack.domain.ports import Store

KEY_PREFIX = "cxk_"
ID_LENGTH = 8
_ID_ALPHABET = string.ascii_lowercase + string.digits
# OWASP's argon2id floor (19 MiB, 2 passes, 1 lane). The secret has 256 random bits, so the hash only has to
# make a copied database useless; it does not have to slow down guessing of a weak password. About 40 ms on a
# busy 2-core machine (argon2-cffi's default profile, 64 MiB and 4 lanes, costs ~200 ms there).
DEFAULT_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
DEFAULT_CACHE_SECONDS = 30.0
DEFAULT_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the whole key to hand over (`cxk_<id>_<secret>`): shown once, stored nowhere

    def __repr__(self) -> str:  # never print the secret by accident
        return f"CreatedKey(key={self.key!r}, secret='{KEY_PREFIX}{self.key.id}_…')"


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    if not token.startswith(KEY_PREFIX):
        return None
    body = token[len(KEY_PREFIX) :]
    key_id, separator, secret = body[:ID_LENGTH], body[ID_LENGTH : ID_LENGTH + 1], body[ID_LENGTH + 1 :]
    if separator != "_" or len(secret) < 16 or any(c not in _ID_ALPHABET for c in key_id):
        return None
    return key_id, secret


def key_id_of(reference: str) -> str:
    """The id named by `reference`: the id itself, `cxk_<id>` as `keys list` shows it, or a whole key."""
    reference = reference.strip()
    parsed = parse_key(reference)
    if parsed is not None:
        return parsed[0]
    return reference.removeprefix(KEY_PREFIX)


class ApiKeys:
    """Creates, lists, revokes and verifies API keys over a Store. Thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        hasher: PasswordHasher = DEFAULT_HASHER,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._lock = threading.Lock()
        # sha256(key) -> (key, valid until): the raw key is not kept in memory longer than the request.
        self._cache: OrderedDict[bytes, tuple[ApiKey, float]] = OrderedDict()
        self._revocations = 0  # a check that raced a revoke in this process is not cached
        # One hash per key at a time: 32 connections opening with the same new key must not each spend
        # ~40 ms of CPU on it (the first check fills the cache, the others wait for it).
        self._checking: dict[bytes, threading.Lock] = {}

    def create(self, name: str, role: ApiRole | str, *, channel: str | None = None) -> CreatedKey:
        name = name.strip()
        if not name:
            raise ValueError("an API key needs a name (who or what uses it)")
        role = ApiRole(role)
        if channel is not None and role is not ApiRole.INTEGRATION:
            raise ValueError("only integration keys are bound to a channel")
        secret = secrets.token_urlsafe(32)
        for _ in range(5):
            key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
            key = ApiKey(
                id=key_id,
                name=name,
                role=role,
                secret_hash=self._hasher.hash(secret),
                created_at=utcnow(),
                channel=channel,
            )
            try:
                self._store.add_api_key(key)
            except ValueError:
                continue  # 36^8 ids: a collision is rare, and a retry draws another
            return CreatedKey(key, f"{KEY_PREFIX}{key_id}_{secret}")
        raise RuntimeError("could not draw an unused API key id")

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        return self._store.list_api_keys()

    def revoke(self, reference: str) -> ApiKey:
        """Revokes the key named by its id, `cxk_<id>` or the whole key. KeyError if there is none."""
        key = self._store.revoke_api_key(key_id_of(reference), utcnow())
        with self._lock:
            self._revocations += 1
            for digest in [d for d, (cached, _) in self._cache.items() if cached.id == key.id]:
                del self._cache[digest]
        return key

    def replace_named(self, name: str, role: ApiRole | str) -> tuple[CreatedKey, list[ApiKey]]:
        """A fresh key named `name`; every active key of that name is revoked (returned second)."""
        revoked = [self.revoke(k.id) for k in self.all() if k.name == name.strip() and k.active]
        return self.create(name, role), revoked

    def cached(self, token: str) -> ApiKey | None:
        """The key if it was verified recently (no I/O, no hashing: safe on the event loop), else None."""
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None:
                return None
            if entry[1] < self._clock():
                del self._cache[digest]
                return None
            self._cache.move_to_end(digest)
            return entry[0]

    def verify(self, token: str) -> ApiKey | None:
        """The active key `token` is, or None. Reads the store and hashes: run it off the event loop."""
        found = self.cached(token)
        if found is not None:
            return found
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            checking = self._checking.setdefault(digest, threading.Lock())
        try:
            with checking:
                found = self.cached(token)
                return found if found is not None else self._check(token, digest)
        finally:
            with self._lock:
                if self._checking.get(digest) is checking:
                    del self._checking[digest]

    def _check(self, token: str, digest: bytes) -> ApiKey | None:
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self._lock:
            revocations = self._revocations
        stored = self._store.get_api_key(key_id)
        if stored is None or not stored.active:
            return None
        try:
            self._hasher.verify(stored.secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return None
        with self._lock:
            if revocations != self._revocations:
                return stored  # valid when read; not remembered, so a revoke that raced it holds
            self._cache[digest] = (stored, self._clock() + self._cache_seconds)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return stored
