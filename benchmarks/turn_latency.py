"""Turn latency in-process and HTTP ingest throughput, each beside a ceiling measured in the same run.

    python -m benchmarks.turn_latency [--turns 2000] [--ingest 3000] [--embedder minilm] [--json PATH]

1. In-process: the demo workspace, no LLM, back-office actions on the dry-run connector. A turn is measured
   end to end through the runtime: the message is ingested into SQLite, the worker runs the orchestrator
   (strategy, routing, plan, resolver, policy) and commits trace + reply + outbox in one transaction.
   Beside it: the orchestrator alone (no store) on the same messages.
2. HTTP ingest: `cxstack serve` under uvicorn (worker processing turns at the same time), N messages posted by
   an async client with bounded concurrency. The messages are real and all different: the demo's scripted
   conversations and CLINC150 test utterances read from the shared data folder (never copied into the repo),
   so no turn is a repeat the engine could shortcut. After the load, the worker is given time to answer
   everything, the service is stopped, and every message is checked in the database by id: each acknowledged
   external id is stored, and each stored message was answered by exactly one committed turn (at most one
   reply per turn). Ceiling: a trivial FastAPI echo endpoint under the same uvicorn and client.
   `http_ingest(..., during_load=...)` runs a disruption (e.g. kill -9 of the worker) in the middle of the
   load; the checks above are what it must survive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

console = Console(width=max(Console().width, 150))
ECHO_APP = """
from fastapi import FastAPI
from pydantic import BaseModel

class Body(BaseModel):
    text: str
    external_id: str | None = None

app = FastAPI()

@app.post("/v1/conversations/{conversation_id}/messages", status_code=202)
async def echo(conversation_id: str, body: Body) -> dict[str, str | None]:
    return {"conversation_id": conversation_id, "external_id": body.external_id}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def clinc_test_texts() -> list[str]:
    """CLINC150 test utterances (in scope and out of scope), read from the shared data folder."""
    from benchmarks.routing_clinc150 import shared_data_dir

    path = shared_data_dir() / "clinc150" / "data_full.json"
    if not path.is_file():
        console.print(f"[yellow]CLINC150 not found at {path}: ingest uses the demo messages only[/yellow]")
        return []
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [text for split in ("test", "oos_test") for text, _ in raw[split]]


def ingest_texts(n: int) -> list[str]:
    """n different customer messages: the demo's, then CLINC150's, in a fixed shuffled order."""
    texts = list(dict.fromkeys([text for _, text in demo_messages()] + clinc_test_texts()))
    random.Random(20261126).shuffle(texts)
    if n > len(texts):
        console.print(f"[yellow]{n} messages but {len(texts)} different texts: some repeat[/yellow]")
    return [texts[i % len(texts)] for i in range(n)]


def demo_messages() -> list[tuple[str, str]]:
    """(customer id, text) pairs from the demo's scripted conversations, first messages and follow-ups."""
    from cxstack.demo import SAMPLE_SETS, demo_conversations_path

    pairs: list[tuple[str, str]] = []
    lines = [line for s in SAMPLE_SETS for line in demo_conversations_path(s).read_text("utf-8").splitlines()]
    for line in lines:
        if line.strip():
            item = json.loads(line)
            customer = (item.get("customer") or {}).get("id", "cus_1001")
            pairs.extend((customer, text) for text in item["messages"])
    return pairs


async def in_process(turns: int, embedder: str) -> dict[str, Any]:
    from cxstack.app import CxApp, Settings, build_engine, open_store
    from cxstack.demo import demo_customers_csv, demo_workspace_path
    from cxstack.domain.models import (
        Conversation,
        ConversationId,
        CustomerId,
        Message,
        MessageId,
        Role,
        utcnow,
    )
    from cxstack.resolution.models import TurnContext
    from cxstack.strategy.customers import parse_customers_csv
    from cxstack.workspace.loader import load_workspace

    workspace = load_workspace(demo_workspace_path())
    started = time.perf_counter()
    engine = build_engine(workspace, embedder_name=embedder, dry_run_actions=True)
    load_s = time.perf_counter() - started
    customers = {c.id: c for c in parse_customers_csv(demo_customers_csv())}
    # Repeated messages would be served from the embedding cache: measure every turn cold.
    clear_cache = getattr(engine.embedder, "clear", lambda: None)
    messages = demo_messages()

    # Orchestrator alone: one fresh conversation per message, so every turn routes from scratch. Turn -1 is
    # a warm-up, not timed: it pays for what loads on first use (e.g. the language detector's model).
    alone: list[float] = []
    for i in range(-1, turns):
        customer_id, text = messages[i % len(messages)]
        cid = ConversationId(f"bench_{i}")
        ctx = TurnContext(
            workspace=workspace,
            conversation=Conversation(id=cid, customer_id=CustomerId(customer_id), channel="api"),
            customer=customers.get(CustomerId(customer_id)) or next(iter(customers.values())),
            message=Message(MessageId(f"m{i}"), cid, Role.CUSTOMER, text, utcnow()),
            history=[],
        )
        clear_cache()
        t0 = time.perf_counter()
        await engine.orchestrator.handle_turn(ctx)
        if i >= 0:
            alone.append((time.perf_counter() - t0) * 1000)

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), database_url=f"sqlite:///{Path(home) / 'cxstack.db'}")
        app = CxApp(settings, open_store(settings), engine)
        app.store.upsert_customers(list(customers.values()))
        await app.start()
        full: list[float] = []
        wall0 = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("turns through the runtime", total=turns)
            for i in range(turns):
                customer_id, text = messages[i % len(messages)]
                clear_cache()
                t0 = time.perf_counter()
                await app.post_message(
                    f"conv_{i}", text, external_id=f"x{i}", customer_id=customer_id, verified=True
                )
                await app.wait_idle(f"conv_{i}")
                full.append((time.perf_counter() - t0) * 1000)
                progress.advance(task)
        wall = time.perf_counter() - wall0
        stored = len(app.store.list_traces(None, limit=turns * 2))
        await app.stop()
    return {
        "embedder": embedder,
        "turns": turns,
        "engine_load_s": round(load_s, 2),
        "orchestrator_p50_ms": round(percentile(alone, 50), 3),
        "orchestrator_p99_ms": round(percentile(alone, 99), 3),
        "turn_p50_ms": round(percentile(full, 50), 3),
        "turn_p99_ms": round(percentile(full, 99), 3),
        "turn_mean_ms": round(statistics.fmean(full), 3),
        "turns_per_s": round(turns / wall, 1),
        "traces_stored": stored,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


CONVERSATIONS = 500


def conversation_of(i: int) -> str:
    return f"ingest_{i % CONVERSATIONS}"


async def _one_connection(
    host: str,
    port: int,
    ids: list[int],
    texts: list[str],
    latencies: list[float],
    statuses: dict[int, int],
    key: str,
) -> None:
    """A minimal keep-alive HTTP/1.1 client: httpx costs ~2 ms of client CPU per request on this machine,
    which would measure the client, not the server."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in ids:
            body = json.dumps({"text": texts[i], "external_id": f"e{i}"}).encode()
            head = (
                f"POST /v1/conversations/{conversation_of(i)}/messages HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[i] = int(status_line.split()[1])
    finally:
        writer.close()


@dataclass
class IngestRun:
    """What a disruption during the load may act on: the serve process and its state folder."""

    process: subprocess.Popen[bytes]
    home: Path
    port: int


Disruption = Callable[[IngestRun], None]


async def post_many(
    port: int,
    texts: list[str],
    concurrency: int,
    key: str,
    *,
    run: IngestRun | None = None,
    during_load: Disruption | None = None,
) -> tuple[list[float], dict[int, int], float]:
    """Posts texts[i] as external id e{i}; returns latencies, the HTTP status of each i, and the wall time.
    `during_load` runs (in a thread) once half the messages are acknowledged."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    n = len(texts)
    shards = [list(range(c, n, concurrency)) for c in range(concurrency)]

    async def disrupt() -> None:
        if during_load is None or run is None:
            return
        while len(statuses) < n // 2:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(during_load, run)

    t0 = time.perf_counter()
    await asyncio.gather(
        disrupt(),
        *(_one_connection("127.0.0.1", port, ids, texts, latencies, statuses, key) for ids in shards),
    )
    wall = time.perf_counter() - t0
    return latencies, statuses, wall


def failures(statuses: dict[int, int], n: int) -> int:
    return sum(1 for s in statuses.values() if s not in (200, 202)) + (n - len(statuses))


def wait_answered(home: Path, timeout_s: float) -> float:
    """Waits until the store has no unanswered message (or the timeout); returns the seconds it took."""
    from cxstack.app import Settings, open_store

    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'cxstack.db'}"))
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not store.conversations_with_pending():
            break
        time.sleep(0.25)
    return time.monotonic() - started


def check_by_id(home: Path, statuses: dict[int, int], n: int) -> dict[str, Any]:
    """Message by message: every acknowledged external id is stored, and answered by exactly one turn."""
    from cxstack.app import Settings, open_store
    from cxstack.domain.models import ConversationId, Role

    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'cxstack.db'}"))
    acknowledged = {i for i, status in statuses.items() if status in (200, 202)}
    stored: dict[str, str] = {}  # external id -> message id
    missing: list[str] = []
    unanswered: list[str] = []
    answered_twice: list[str] = []
    extra_replies: list[str] = []
    for c in range(min(n, CONVERSATIONS)):
        cid = ConversationId(f"ingest_{c}")
        messages = store.list_messages(cid)
        turns = Counter(t.message_id for t in store.list_traces(cid, limit=100_000))
        with_reply = sum(1 for t in store.list_traces(cid, limit=100_000) if t.reply)
        replies = sum(1 for m in messages if m.role == Role.ASSISTANT)
        if replies > with_reply:
            extra_replies.append(cid)
        for m in messages:
            if m.role == Role.CUSTOMER and m.external_id:
                stored[m.external_id] = m.id
                if turns[m.id] == 0:
                    unanswered.append(m.external_id)
                elif turns[m.id] > 1:
                    answered_twice.append(m.external_id)
    for i in sorted(acknowledged):
        if f"e{i}" not in stored:
            missing.append(f"e{i}")
    return {
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "lost": len(missing),
        "unanswered": len(unanswered),
        "answered_twice": len(answered_twice),
        "conversations_with_extra_replies": len(extra_replies),
        "examples": {
            "lost": missing[:5],
            "unanswered": unanswered[:5],
            "answered_twice": answered_twice[:5],
            "extra_replies": extra_replies[:5],
        },
    }


def echo_ceiling(texts: list[str], concurrency: int, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """The same client against a trivial FastAPI echo under the same uvicorn: the ceiling beside a figure."""
    (folder / "echo_app.py").write_text(ECHO_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(port), "--log-level", "warning"],
        cwd=folder,
        env=env,
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/docs")
        lat, statuses, wall = asyncio.run(post_many(port, texts, concurrency, "cxk_echo_ignores_it"))
    finally:
        proc.terminate()
        proc.wait()
    return {
        "msgs_per_s": round(len(texts) / wall, 1),
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "failed": failures(statuses, len(texts)),
    }


def http_ingest(
    n: int,
    concurrency: int,
    embedder: str,
    *,
    during_load: Disruption | None = None,
    answer_timeout_s: float = 600.0,
) -> dict[str, Any]:
    from cxstack.api.keys import ApiKeys
    from cxstack.app import Settings, open_store
    from cxstack.demo import demo_workspace_path

    texts = ingest_texts(n)
    results: dict[str, Any] = {
        "messages": n,
        "concurrency": concurrency,
        "different_texts": len(set(texts)),
        "disruption": getattr(during_load, "__name__", None),
    }
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        results["echo"] = echo_ceiling(texts, concurrency, Path(tmp), env)

        home = Path(tmp) / "home"
        # The REST channel needs an integration key; it is verified once (argon2id) and then cached.
        key = (
            ApiKeys(open_store(Settings(home=home, database_url=f"sqlite:///{home / 'cxstack.db'}")))
            .create("ingest benchmark", "integration")
            .secret
        )
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "cxstack.cli.main",
            "serve",
            str(demo_workspace_path()),
            "--port",
            str(port),
            "--no-backoffice",
            "--home",
            str(home),
            "--embedder",
            embedder,
        ]
        env_serve = {**env, "CXSTACK_HOME": str(home)}
        env_serve.pop("CXSTACK_DATABASE_URL", None)  # this run's own SQLite file, whatever the shell says
        proc = subprocess.Popen(cmd, env=env_serve, stdout=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}/health", timeout=600)  # two engine builds on a busy machine
            run = IngestRun(proc, home, port)
            lat, statuses, wall = asyncio.run(
                post_many(port, texts, concurrency, key, run=run, during_load=during_load)
            )
            drained_s = wait_answered(home, answer_timeout_s)
        finally:
            proc.terminate()
            proc.wait()
        results["cxstack"] = {
            "msgs_per_s": round(n / wall, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "failed": failures(statuses, n),
            "answered_within_s": round(drained_s, 1),
            **check_by_id(home, statuses, n),
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--ingest", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--embedder", default="minilm,wordllama", help="comma-separated; HTTP uses the first")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    embedders = [e.strip() for e in args.embedder.split(",") if e.strip()]
    turns = [asyncio.run(in_process(args.turns, name)) for name in embedders]
    table = Table(
        title=f"In-process turn latency, demo workspace, no LLM ({args.turns} turns each, cold cache)"
    )
    for column in ("embedder", "measure", "p50 ms", "p99 ms", "turns/s", "aim"):
        table.add_column(column)
    for turn in turns:
        table.add_row(
            turn["embedder"],
            "orchestrator only (ceiling: no store)",
            str(turn["orchestrator_p50_ms"]),
            str(turn["orchestrator_p99_ms"]),
            "",
            "",
        )
        table.add_row(
            turn["embedder"],
            "full turn: ingest + worker thread + commit (SQLite)",
            str(turn["turn_p50_ms"]),
            str(turn["turn_p99_ms"]),
            str(turn["turns_per_s"]),
            "p50 ≤ 5, p99 ≤ 25",
        )
    console.print(table)

    ingest = http_ingest(args.ingest, args.concurrency, embedders[0])
    table = Table(
        title=f"HTTP ingest through uvicorn ({args.ingest} messages, concurrency {args.concurrency})"
    )
    for column in (
        "endpoint",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "lost (by id)",
        "unanswered",
        "answered twice",
        "aim",
    ):
        table.add_column(column)
    e, c = ingest["echo"], ingest["cxstack"]
    table.add_row(
        "FastAPI echo (ceiling)",
        str(e["msgs_per_s"]),
        str(e["p50_ms"]),
        str(e["p99_ms"]),
        str(e["failed"]),
        "—",
        "—",
        "—",
        "",
    )
    table.add_row(
        "cxstack POST /v1/conversations/{id}/messages",
        str(c["msgs_per_s"]),
        str(c["p50_ms"]),
        str(c["p99_ms"]),
        str(c["failed"]),
        str(c["lost"]),
        str(c["unanswered"]),
        str(c["answered_twice"]),
        "≥ 1000/s; 0 lost, 0 unanswered, 0 twice",
    )
    console.print(table)
    console.print(
        f"[dim]{ingest['different_texts']} different texts (demo conversations + CLINC150 test) over "
        f"{CONVERSATIONS} conversations; checked by external id after every message was answered "
        f"({c['answered_within_s']} s after the load) and the service stopped. "
        f"{c['conversations_with_extra_replies']} conversation(s) had more replies than turns.[/dim]"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"turn": turns, "ingest": ingest}, indent=2))
        console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
