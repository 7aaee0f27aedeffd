"""API keys and web-chat session tokens on their own: hashing, the verification cache, expiry, the secret."""

from __future__ import annotations

import stat
import time
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher

from cxstack.api.keys import DEFAULT_HASHER, ApiKeys, key_id_of, parse_key
from cxstack.api.sessions import (
    SessionExpiredError,
    SessionInvalidError,
    WebchatSessions,
    signing_secret,
)
from cxstack.domain.auth import ApiRole
from cxstack.domain.models import utcnow
from cxstack.testing.authz import TEST_HASHER
from cxstack.testing.memory_store import InMemoryStore
from cxstack.testing.store_contract import run_in_threads

SECRET = "s" * 48


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_shown_once_and_stored_only_as_an_argon2id_hash() -> None:
    store = InMemoryStore()
    created = ApiKeys(store).create("ops laptop", ApiRole.ADMIN)
    key_id, secret = parse_key(created.secret) or ("", "")
    assert created.secret.startswith(f"cxk_{created.key.id}_") and key_id == created.key.id
    (stored,) = store.list_api_keys()
    assert stored.secret_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert secret not in stored.secret_hash and secret not in repr(created)
    assert DEFAULT_HASHER.verify(stored.secret_hash, secret)
    assert ApiKeys(store).verify(created.secret) == stored


def test_verification_refuses_wrong_revoked_and_malformed_keys() -> None:
    store = InMemoryStore()
    keys = ApiKeys(store, hasher=TEST_HASHER)
    created = keys.create("bot", "viewer")
    assert keys.verify(created.secret[:-1] + ("x" if created.secret[-1] != "x" else "y")) is None
    assert keys.verify("cxk_short") is None and keys.verify("Bearer nonsense") is None
    assert keys.verify(f"cxk_{'0' * 8}_{'a' * 43}") is None  # unknown id: no hashing at all
    keys.revoke(created.key.id)
    assert keys.verify(created.secret) is None


def test_a_verified_key_is_cached_and_a_revoke_elsewhere_lands_when_the_entry_expires() -> None:
    store = InMemoryStore()
    clock = Clock()
    api_process = ApiKeys(store, hasher=TEST_HASHER, cache_seconds=30, clock=clock)
    cli = ApiKeys(store, hasher=TEST_HASHER)
    created = cli.create("widget", "integration")
    assert api_process.verify(created.secret) is not None
    assert api_process.cached(created.secret) is not None

    cli.revoke(created.key.id)  # another process: this one's cache does not know yet
    clock.now += 29
    assert api_process.cached(created.secret) is not None
    clock.now += 2
    assert api_process.cached(created.secret) is None
    assert api_process.verify(created.secret) is None


def test_a_revoke_in_this_process_drops_the_cached_entry_at_once() -> None:
    keys = ApiKeys(InMemoryStore(), hasher=TEST_HASHER, cache_seconds=3600)
    created = keys.create("desk", "agent")
    assert keys.verify(created.secret) is not None
    keys.revoke(f"cxk_{created.key.id}")
    assert keys.cached(created.secret) is None and keys.verify(created.secret) is None


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        time.sleep(0.05)  # long enough for every thread to arrive while the first one hashes
        return super().verify(hash, password)


def test_concurrent_first_uses_of_a_key_hash_it_once() -> None:
    hasher = CountingHasher()
    keys = ApiKeys(InMemoryStore(), hasher=hasher)
    created = keys.create("ingest", "integration")
    results = run_in_threads(16, lambda _: keys.verify(created.secret))
    assert all(r is not None and r.id == created.key.id for r in results)
    assert hasher.verified == 1


def test_the_cache_is_bounded() -> None:
    keys = ApiKeys(InMemoryStore(), hasher=TEST_HASHER, cache_size=2)
    made = [keys.create(f"k{i}", "viewer").secret for i in range(3)]
    for secret in made:
        assert keys.verify(secret) is not None
    assert keys.cached(made[0]) is None
    assert keys.cached(made[1]) is not None and keys.cached(made[2]) is not None


def test_replacing_a_named_key_revokes_the_previous_one() -> None:
    keys = ApiKeys(InMemoryStore(), hasher=TEST_HASHER)
    first, _ = keys.replace_named("make run demo", "admin")
    other = keys.create("someone else", "admin")
    second, revoked = keys.replace_named("make run demo", "admin")
    assert [k.id for k in revoked] == [first.key.id]
    assert keys.verify(first.secret) is None and keys.verify(second.secret) is not None
    assert keys.verify(other.secret) is not None


def test_key_creation_checks_its_input() -> None:
    keys = ApiKeys(InMemoryStore(), hasher=TEST_HASHER)
    with pytest.raises(ValueError, match="name"):
        keys.create("  ", "admin")
    with pytest.raises(ValueError):
        keys.create("x", "superuser")
    with pytest.raises(ValueError, match="integration"):
        keys.create("x", "viewer", channel="api")
    with pytest.raises(KeyError):
        keys.revoke("nope0000")


def test_key_references() -> None:
    assert key_id_of("ab12cd34") == "ab12cd34"
    assert key_id_of("cxk_ab12cd34") == "ab12cd34"
    assert key_id_of("cxk_ab12cd34_" + "s" * 43) == "ab12cd34"


def test_a_session_token_carries_its_claims_and_expires() -> None:
    sessions = WebchatSessions(SECRET, ttl=timedelta(minutes=10))
    token, issued = sessions.issue("web_1", "cus_1", verified=True)
    read = sessions.read(token)
    assert read == issued and read.verified is True and read.conversation_id == "web_1"

    old, _ = sessions.issue("web_1", "cus_1", verified=True, now=utcnow() - timedelta(minutes=11))
    with pytest.raises(SessionExpiredError, match="expired"):
        sessions.read(old)
    with pytest.raises(SessionInvalidError):
        WebchatSessions("t" * 48).read(token)  # signed with another secret
    with pytest.raises(SessionInvalidError):
        sessions.read("not.a.token")


def test_refresh_extends_a_session_but_not_past_its_maximum_age() -> None:
    now = utcnow()
    started = now - timedelta(minutes=50)
    sessions = WebchatSessions(SECRET, ttl=timedelta(minutes=30), max_age=timedelta(hours=2))
    token, first = sessions.issue(
        "web_2", "anon_2", verified=False, now=now - timedelta(minutes=10), started_at=started
    )
    _, second = sessions.refresh(token)
    assert second.expires_at > first.expires_at and second.started_at == first.started_at

    capped = WebchatSessions(SECRET, ttl=timedelta(minutes=30), max_age=timedelta(hours=1))
    _, third = capped.refresh(token)
    assert third.expires_at == first.started_at + timedelta(hours=1)


def test_a_short_signing_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        WebchatSessions("short")


def test_the_signing_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = signing_secret(None, home)
    path = home / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    assert signing_secret(None, home) == first
    assert signing_secret("e" * 40, home) == "e" * 40
