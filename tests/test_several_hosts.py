"""A scale-out deployment across simulated hosts: an API host and two worker hosts, each a network namespace
with its own address and hostname, reach one PostgreSQL and the back office only over the network (a bridge;
the test process is the database host). Messages posted to the API host are spread across both worker hosts,
each answered once and in order; and a worker host cut off from the network in the middle of a turn loses
nothing and doubles nothing: the other host takes its conversations, and it rejoins when the link is back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from tests.conftest import SAM_ID
from tests.netns import Network
from tests.processes import FAST_RECOVERY, free_port, slow_order_lookup, turn_env

from cxstack.api.keys import ApiKeys
from cxstack.app import Settings, open_store
from cxstack.domain.auth import ApiRole
from cxstack.domain.models import ConversationId, Role
from cxstack.domain.ports import OutboxStatus
from cxstack.testing import pg_server

pytest.importorskip("procrastinate")

CONVERSATIONS = 8
PER_CONVERSATION = 4
DEADLINE_S = 240.0  # a safety net against a hang: three processes train the router at once on 2 busy cores
WORKER_HOSTS = ("worker-a", "worker-b")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(Network.skip_reason() is not None, reason=str(Network.skip_reason())),
    pytest.mark.skipif(not pg_server.available(), reason="needs the PostgreSQL server binaries (initdb)"),
]


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network()
    try:
        net.create(["api", *WORKER_HOSTS])
    except RuntimeError as exc:  # a sandbox that forbids namespaces: say so rather than fail
        net.remove()
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        yield net
    finally:
        net.remove()


@pytest.fixture
def database(network: Network, tmp_path: Path) -> Iterator[tuple[pg_server.PgServer, str]]:
    """A PostgreSQL of the test's own on the database host, listening on loopback (for the test's checks)
    and on the bridge (for the other hosts)."""
    pg = pg_server.PgServer(tmp_path / "pg", listen=("127.0.0.1", network.gateway), trust=network.cidr)
    try:
        pg.start()
        pg.create_database("cxstack")
        yield pg, pg.url("cxstack", host=network.gateway)
    finally:
        pg.remove()


def _reaches(network: Network, host: str, address: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=3)"
    done = subprocess.run(network.on(host, [sys.executable, "-c", probe]), capture_output=True)
    return done.returncode == 0


def _scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def _start(network: Network, host: str, command: list[str], env: dict[str, str], log: Path) -> Any:
    with log.open("wb") as out:
        return subprocess.Popen(network.on(host, command), env=env, stdout=out, stderr=subprocess.STDOUT)


class Deployment:
    """`serve --runtime procrastinate` on the api host and `cxstack worker` on each worker host; the test
    process checks the shared database over loopback and posts to the API host over the bridge."""

    def __init__(
        self,
        network: Network,
        pg: pg_server.PgServer,
        database_url: str,
        backoffice_url: str,
        tmp: Path,
        workspace: Path,
        extra_env: dict[str, str],
    ) -> None:
        self.network = network
        cxstack = str(Path(sys.executable).with_name("cxstack"))
        # each host its own state folder (set per process below)
        heartbeat = {"CXSTACK_SCALE_HEARTBEAT_SECONDS": "1"}
        env = turn_env(database_url, tmp / "home", backoffice_url, **{**heartbeat, **extra_env})
        port = free_port()
        listen = ["--host", "0.0.0.0", "--port", str(port)]
        self.logs = {name: tmp / f"{name}.log" for name in ("api", *WORKER_HOSTS)}
        serve = [cxstack, "serve", str(workspace), "--runtime", "procrastinate", "--no-backoffice", *listen]
        self.processes = {
            "api": _start(
                network, "api", serve, {**env, "CXSTACK_HOME": str(tmp / "home-api")}, self.logs["api"]
            )
        }
        for host in WORKER_HOSTS:
            worker = [cxstack, "worker", str(workspace), "--concurrency", "2"]
            home = {**env, "CXSTACK_HOME": str(tmp / f"home-{host}")}
            self.processes[host] = _start(network, host, worker, home, self.logs[host])
        self.api = f"http://{network.hosts['api']}:{port}"
        self.deadline = time.monotonic() + DEADLINE_S
        self.store = open_store(Settings(home=tmp / "home-test", database_url=pg.url("cxstack")))
        self.engine = self.store.engine
        self.posted = 0

    def tails(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text()[-3000:]}" for name, path in self.logs.items())

    def wait_for(self, check: Callable[[], Any], what: str | Callable[[], str]) -> Any:
        while True:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited\n{self.tails()}"
            try:
                found = check()
            except (httpx.HTTPError, OSError):
                found = None
            if found:
                return found
            shown = what() if callable(what) else what
            assert time.monotonic() < self.deadline, f"timed out waiting for {shown}\n{self.tails()}"
            time.sleep(0.05)

    def connected_from(self) -> dict[str, set[str]]:
        """The addresses of cxstack connections in pg_stat_activity, by the hostname they name."""
        sql = (
            "SELECT application_name, host(client_addr) FROM pg_stat_activity "
            # not the test's own, which come over loopback
            "WHERE application_name LIKE 'cxstack@%' AND client_addr <> '127.0.0.1'"
        )
        seen: dict[str, set[str]] = {}
        with self.engine.connect() as connection:
            for name, address in connection.execute(text(sql)).all():
                seen.setdefault(name.removeprefix("cxstack@").split(":")[0], set()).add(address)
        return seen

    def ready(self) -> None:
        """The API host ready (it sees live workers), every host connected from its own address under its own
        hostname, and both workers registered."""
        self.wait_for(
            lambda: httpx.get(f"{self.api}/ready", timeout=5).status_code == 200, "the API host ready"
        )
        expected = {host: {self.network.hosts[host]} for host in ("api", *WORKER_HOSTS)}
        seen: list[dict[str, set[str]]] = [{}]
        self.wait_for(
            lambda: seen.append(self.connected_from()) or seen[-1] == expected,
            lambda: f"connections {expected}, seen {seen[-1]}",
        )
        count = "SELECT count(*) FROM procrastinate_workers"
        self.wait_for(lambda: _scalar(self.engine, count) == 2, "2 registered workers")
        self.key = ApiKeys(self.store).create("several-hosts", ApiRole.INTEGRATION).secret

    def post(self, rounds: range) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.api, headers=headers, timeout=10) as client:
            for i in rounds:
                for k in range(CONVERSATIONS):
                    posted = client.post(
                        f"/v1/conversations/hosts{k}/messages",
                        json={
                            "text": f"where is my order ORD-{k + 1:02d}{i:03d}?",
                            "customer_id": SAM_ID,
                            "external_id": f"m{k}-{i}",
                        },
                    )
                    assert posted.status_code == 202, posted.text
                    self.posted += 1

    def answered(self) -> bool:
        return (
            len(self.store.list_traces(limit=10_000)) >= self.posted
            and not self.store.conversations_with_pending()
            and self.store.count_outbox(OutboxStatus.PENDING) == 0
        )

    def stop(self) -> dict[str, int | None]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        return {name: p.returncode for name, p in self.processes.items()}

    def check_once_in_order(self, per_conversation: int) -> None:
        per_message = Counter(t.message_id for t in self.store.list_traces(limit=10_000))
        for k in range(CONVERSATIONS):
            cid = ConversationId(f"hosts{k}")
            messages = self.store.list_messages(cid)
            inbound = [m for m in messages if m.role == Role.CUSTOMER]
            replies = sorted((m for m in messages if m.role == Role.ASSISTANT), key=lambda m: m.created_at)
            assert [m.external_id for m in inbound] == [f"m{k}-{i}" for i in range(per_conversation)]
            assert all(per_message[m.id] == 1 for m in inbound), "every message answered exactly once"
            shown = [(m.text[:60], m.created_at.isoformat()) for m in replies]
            assert len(replies) == per_conversation, f"one reply per message, no double: {cid} {shown}"
            ordered = sorted(self.store.list_traces(cid), key=lambda t: t.created_at)
            assert [t.message_id for t in ordered] == [m.id for m in inbound], "turns ran in arrival order"
            for i, reply in enumerate(replies):
                assert f"ORD-{k + 1:02d}{i:03d}" in reply.text, "reply i answers message i"
            sent = self.store.outbox_for(cid)
            assert len(sent) == per_conversation and all(item.status == OutboxStatus.SENT for item in sent)


STOPPED = {"api": -signal.SIGTERM, "worker-a": 0, "worker-b": 0}  # uvicorn re-raises the signal it handled


def test_api_and_workers_on_separate_hosts_share_the_turns_and_keep_order(
    network: Network,
    database: tuple[pg_server.PgServer, str],
    tmp_path: Path,
    shop_path: Path,
    backoffice: Any,
) -> None:
    pg, database_url = database
    _, backend = backoffice
    with backend.serve(host=network.gateway) as backoffice_url:
        # the hosts share nothing but the wire: no host reaches the database host's loopback services
        assert not _reaches(network, "worker-a", "127.0.0.1", pg.port)
        assert _reaches(network, "worker-a", network.gateway, pg.port)
        assert _reaches(network, "api", network.gateway, int(backoffice_url.rsplit(":", 1)[1]))
        deployment = Deployment(network, pg, database_url, backoffice_url, tmp_path, shop_path, {})
        try:
            deployment.ready()
            deployment.post(range(PER_CONVERSATION))
            deployment.wait_for(deployment.answered, "every message answered")
            ran_by = _scalar(
                deployment.engine,
                "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs "
                "WHERE task_name = 'cxstack:run_turns' AND status = 'succeeded'",
            )
            assert ran_by == 2, "turn jobs ran on both worker hosts"
        finally:
            codes = deployment.stop()
    assert codes == STOPPED, f"{codes}\n{deployment.tails()}"
    assert "Application shutdown complete" in deployment.logs["api"].read_text()
    deployment.check_once_in_order(PER_CONVERSATION)
    looked_up = {r.path for r in backend.requests if r.method == "GET" and r.path.startswith("/orders/")}
    assert len(looked_up) == deployment.posted, (
        "every order looked up on the back office host, over the network"
    )


def test_a_worker_host_cut_off_mid_turn_loses_and_doubles_nothing(
    network: Network,
    database: tuple[pg_server.PgServer, str],
    tmp_path: Path,
    shop_path: Path,
    backoffice: Any,
) -> None:
    """Worker host a's link goes down while it holds a conversation (its turn waits on a slow back office):
    host b answers everything posted meanwhile; a's stranded turn never commits a second reply; a notices
    the dead connections within the TCP user timeout cxstack sets (not the kernel's quarter of an hour) and
    keeps trying; when the link is back, it rejoins on its own and takes turns again."""
    pg, database_url = database
    _, backend = backoffice
    backend.on("GET", "/orders/{order_id}", handler=slow_order_lookup(0.3))  # the cut lands in a turn
    rounds = (range(0, 2), range(2, 4))
    with backend.serve(host=network.gateway) as backoffice_url:
        deployment = Deployment(network, pg, database_url, backoffice_url, tmp_path, shop_path, FAST_RECOVERY)
        try:
            deployment.ready()
            deployment.post(rounds[0])
            deployment.wait_for(deployment.answered, "the first rounds answered")

            deployment.post(rounds[1])
            leased = "SELECT count(*) FROM conversations WHERE lease_owner LIKE 'worker-a:%'"
            deployment.wait_for(lambda: _scalar(deployment.engine, leased) > 0, "a turn on worker host a")
            network.cut("worker-a")
            deployment.wait_for(deployment.answered, "host b answering everything while a is cut off")
            assert _scalar(deployment.engine, leased) == 0, "a's conversations were taken over"
            # a's connections hang: no reset comes. The TCP user timeout and keepalives end them in about
            # half a minute (the runtime lock's check is one of them), and a keeps trying to reconnect ...
            gone = "the runtime lock's database session is gone"
            deployment.wait_for(lambda: gone in deployment.logs["worker-a"].read_text(), "a to notice")

            network.mend("worker-a")  # ... until the link is back
            posted_rounds = rounds[-1].stop
            rejoined = "SELECT count(*) FROM procrastinate_workers"
            deployment.wait_for(
                lambda: (
                    "worker-a" in deployment.connected_from() and _scalar(deployment.engine, rejoined) == 2
                ),
                "worker host a back",
            )
            # a takes turns again: its procrastinate worker restarts once its old loop has given up (which
            # takes up to a pool timeout), so rounds are posted until a turn job runs on both hosts
            before = _scalar(deployment.engine, "SELECT max(id) FROM procrastinate_jobs")
            ran_after = 0
            while ran_after < 2:
                assert time.monotonic() < deployment.deadline, (
                    f"a never took turns again\n{deployment.tails()}"
                )
                deployment.post(range(posted_rounds, posted_rounds + 1))
                posted_rounds += 1
                deployment.wait_for(deployment.answered, "the last rounds answered")
                ran_after = _scalar(
                    deployment.engine,
                    "SELECT count(DISTINCT worker_id) FROM procrastinate_jobs WHERE task_name = "
                    f"'cxstack:run_turns' AND status = 'succeeded' AND id > {before}",
                )
        finally:
            codes = deployment.stop()
    assert codes == STOPPED, f"{codes}\n{deployment.tails()}"
    deployment.check_once_in_order(posted_rounds)
