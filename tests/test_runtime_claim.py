"""One kind of runtime per database: an embedded `serve` (its own turn worker, outbox and exports) holds the
database alone; scale-out processes (`serve --runtime procrastinate`, `cxstack worker`) share it. A second
embedded `serve` on the same PostgreSQL refuses at start, in one line naming `--runtime procrastinate`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from tests.processes import free_port
from tests.store_fixtures import fresh_pg_schema

from cxstack.runtime.owner import RuntimeClaim, RuntimeTakenError


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, Engine]]:
    with fresh_pg_schema("cxstack_claim") as found:
        yield found


def test_two_embedded_runtimes_on_one_sqlite_file_refuse_the_second(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cxstack.db'}"
    first, second = RuntimeClaim(url, "embedded"), RuntimeClaim(url, "embedded")
    first.acquire()
    try:
        with pytest.raises(RuntimeTakenError, match="runtime procrastinate"):
            second.acquire()
        assert not second.held
    finally:
        first.release()
    second.acquire()  # released with the first
    second.release()
    other = RuntimeClaim(f"sqlite:///{tmp_path / 'other.db'}", "embedded")
    other.acquire()  # another database is another lock
    other.release()


@pytest.mark.postgres
def test_embedded_and_scale_out_runtimes_exclude_each_other_per_schema(pg_schema: tuple[str, Engine]) -> None:
    url, _ = pg_schema
    workers = [RuntimeClaim(url, "scale-out") for _ in range(2)]
    embedded = RuntimeClaim(url, "embedded")
    try:
        for claim in workers:
            claim.acquire()  # any number of scale-out processes together
        with pytest.raises(RuntimeTakenError, match="a second `serve` would answer and act twice"):
            embedded.acquire()
        with fresh_pg_schema("cxstack_claim_other") as (other_url, _):
            elsewhere = RuntimeClaim(other_url, "embedded")
            elsewhere.acquire()  # another schema of the same database is another deployment
            elsewhere.release()
        for claim in workers:
            claim.release()
        embedded.acquire()
        late = RuntimeClaim(url, "scale-out")
        with pytest.raises(RuntimeTakenError, match="stop it, then run every API process with"):
            late.acquire()
    finally:
        for claim in [*workers, embedded]:
            claim.release()


@pytest.mark.postgres
def test_the_lock_is_taken_again_when_its_session_is_cut(pg_schema: tuple[str, Engine]) -> None:
    url, admin = pg_schema
    claim = RuntimeClaim(url, "embedded")
    claim.acquire()
    rival = RuntimeClaim(url, "embedded")
    assert claim._connection is not None
    pid = claim._connection.execute(text("SELECT pg_backend_pid()")).scalar()
    try:
        with admin.begin() as connection:  # what a PostgreSQL restart does to the session, and its lock
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        for _ in range(50):  # the backend ends asynchronously
            with admin.connect() as connection:
                alive = connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
            if alive == 0:
                break
            time.sleep(0.1)
        assert alive == 0
        claim._verify()  # what keep() runs every few seconds
        assert claim.held
        with pytest.raises(RuntimeTakenError):
            rival.acquire()
    finally:
        claim.release()
        rival.release()


def _serve(shop_path: Path, database_url: str, home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CXSTACK_DATABASE_URL": database_url,
        "CXSTACK_MONITORING_SECONDS": "0",
        "CXSTACK_KNOWLEDGE_RELOAD_SECONDS": "0",
        "COLUMNS": "300",
    }
    command = [
        *(sys.executable, "-m", "cxstack.cli.main", "serve", str(shop_path), "--port", str(port)),
        *("--no-backoffice", "--runtime", "process", "--home", str(home), "--embedder", "hashing"),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.postgres
def test_a_second_embedded_serve_on_one_postgresql_refuses_to_start_in_one_line(
    pg_schema: tuple[str, Engine], tmp_path: Path, shop_path: Path
) -> None:
    url, _ = pg_schema
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _serve(shop_path, url, tmp_path / "home-1", free_port(), first_log)
    try:
        deadline = time.monotonic() + 120
        while "web chat:" not in first_log.read_text():
            assert first.poll() is None, first_log.read_text()
            assert time.monotonic() < deadline, first_log.read_text()
            time.sleep(0.2)
        second = _serve(shop_path, url, tmp_path / "home-2", free_port(), second_log)
        assert second.wait(120) == 1, second_log.read_text()
        output = second_log.read_text()
        [refusal] = [line for line in output.splitlines() if "cannot start" in line]
        assert "already runs turns on this database" in refusal
        assert "`serve --runtime procrastinate`" in refusal and "Traceback" not in output
        assert first.poll() is None, "the first one keeps running"

        pytest.importorskip("procrastinate")
        cxstack = Path(sys.executable).with_name("cxstack")
        worker = subprocess.run(
            [str(cxstack), "worker", str(shop_path), "--home", str(tmp_path / "home-3")],
            env={**os.environ, "CXSTACK_DATABASE_URL": url, "CXSTACK_EMBEDDER": "hashing", "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert worker.returncode == 1, worker.stdout + worker.stderr
        assert "a `cxstack serve` with its own turn worker runs on this database" in worker.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    embedded = RuntimeClaim(url, "embedded")
    embedded.acquire()  # the first one's lock ended with it
    embedded.release()


def test_serve_offers_the_embedded_and_the_scale_out_runtime_only(tmp_path: Path, shop_path: Path) -> None:
    from typer.testing import CliRunner

    from cxstack.cli.main import app

    result = CliRunner().invoke(
        app, ["serve", str(shop_path), "--runtime", "thread", "--home", str(tmp_path), "--no-backoffice"]
    )
    assert result.exit_code == 2
    assert "--runtime is process or procrastinate" in result.output
