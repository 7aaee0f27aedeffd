"""A throwaway PostgreSQL server of one's own, for tests and benchmarks that stop or restart the database
(never do that to a shared one): `initdb` in a folder, a free port, trust auth, run as the postgres user when
we are root (initdb refuses root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("CXSTACK_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    """Whether this machine has the server binaries (and, as root, a postgres user to run them)."""
    if not (PG_BIN / "initdb").exists():
        return False
    return os.geteuid() != 0 or shutil.which("runuser") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """`start()` creates and starts it; `stop`, `start_again` and `restart` fault it; `url(db)` reaches it."""

    def __init__(
        self, root: Path, *, listen: tuple[str, ...] = ("127.0.0.1",), trust: str | None = None
    ) -> None:
        """`listen`: the addresses it accepts TCP on; `trust`: a network (CIDR) whose clients it lets in, for
        hosts of a simulated network (trust auth, as for loopback)."""
        self.listen = listen
        self.trust = trust
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            # The postgres user must reach the folder: a private parent (pytest's tmp_path) would stop initdb.
            root.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="cxstack-pg-"))
            root.chmod(0o755)
        self.root = root
        self.data = root / "pgdata"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = _free_port()

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        # -l every time: without it the postmaster inherits our pipes, and waiting for their end never ends
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args, check=check)

    def _run(self, *command: str, check: bool = True) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True)
        if check and done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-500:]
            raise RuntimeError(f"{Path(command[0]).name} failed: {output}")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.port}\nunix_socket_directories = '{self.sockets}'\n"
                f"listen_addresses = '{','.join(self.listen)}'\nmax_connections = 300\n"
            )
        if self.trust is not None:
            with (self.data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
                hba.write(f"host all all {self.trust} trust\n")
        self.start_again()

    def start_again(self) -> None:
        self._pg_ctl("-w", "-t", "120", "start")

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self._pg_ctl("-m", mode, "-w", "-t", "120", "stop", check=check)

    def restart(self, mode: str) -> float:
        """`pg_ctl restart -m MODE`; the seconds until the server accepts connections again."""
        started = time.monotonic()
        self._pg_ctl("-m", mode, "-w", "-t", "120", "restart")
        return time.monotonic() - started

    def remove(self) -> None:
        """Stops the server if it runs and deletes its folder."""
        self.stop("immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
