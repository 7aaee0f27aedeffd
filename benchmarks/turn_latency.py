"""Turn latency in-process and HTTP ingest throughput, each beside a ceiling measured in the same run.

    python -m benchmarks.turn_latency [--turns 2000] [--ingest 3000] [--embedder minilm] [--json PATH]

1. In-process: the demo workspace, no LLM, back-office actions on the dry-run connector. A turn is measured
   end to end through the runtime: the message is ingested into SQLite, the worker runs the orchestrator
   (strategy, routing, plan, resolver, policy) and commits trace + reply + outbox in one transaction.
   Beside it: the orchestrator alone (no store) on the same messages.
2. HTTP ingest: `cxstack serve` under uvicorn (worker processing turns at the same time), N messages posted by
   an async client with bounded concurrency; then every message is checked in the database (lost = posted and
   acknowledged but not stored). Ceiling: a trivial FastAPI echo endpoint under the same uvicorn and client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

console = Console()
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


def demo_messages() -> list[tuple[str, str]]:
    """(customer id, text) pairs from the demo's scripted conversations, first messages and follow-ups."""
    from cxstack.demo import demo_conversations_path

    pairs: list[tuple[str, str]] = []
    for line in demo_conversations_path().read_text(encoding="utf-8").splitlines():
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

    # Orchestrator alone: one fresh conversation per message, so every turn routes from scratch.
    alone: list[float] = []
    for i in range(turns):
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
        alone.append((time.perf_counter() - t0) * 1000)

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
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


async def _one_connection(
    host: str, port: int, ids: list[int], latencies: list[float], statuses: list[int], key: str
) -> None:
    """A minimal keep-alive HTTP/1.1 client: httpx costs ~2 ms of client CPU per request on this machine,
    which would measure the client, not the server."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in ids:
            body = json.dumps({"text": "where is my order ORD-10001?", "external_id": f"e{i}"}).encode()
            head = (
                f"POST /v1/conversations/ingest_{i % 500}/messages HTTP/1.1\r\nHost: {host}\r\n"
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
            statuses.append(int(status_line.split()[1]))
    finally:
        writer.close()


async def post_many(port: int, n: int, concurrency: int, key: str) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    statuses: list[int] = []
    shards = [list(range(c, n, concurrency)) for c in range(concurrency)]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_one_connection("127.0.0.1", port, ids, latencies, statuses, key) for ids in shards)
    )
    wall = time.perf_counter() - t0
    failures = sum(1 for s in statuses if s not in (200, 202)) + (n - len(statuses))
    return latencies, failures, wall


def http_ingest(n: int, concurrency: int, embedder: str) -> dict[str, Any]:
    from cxstack.api.keys import ApiKeys
    from cxstack.app import Settings, open_store
    from cxstack.demo import demo_workspace_path
    from cxstack.domain.models import ConversationId

    results: dict[str, Any] = {"messages": n, "concurrency": concurrency}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        echo = Path(tmp) / "echo_app.py"
        echo.write_text(ECHO_APP)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(port), "--log-level", "warning"],
            cwd=tmp,
            env=env,
        )
        try:
            wait_up(f"http://127.0.0.1:{port}/docs")
            lat, failed, wall = asyncio.run(post_many(port, n, concurrency, "cxk_echo_ignores_it"))
        finally:
            proc.terminate()
            proc.wait()
        results["echo"] = {
            "msgs_per_s": round(n / wall, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "failed": failed,
        }

        home = Path(tmp) / "home"
        # The REST channel needs an integration key; it is verified once (argon2id) and then cached.
        key = ApiKeys(open_store(Settings(home=home))).create("ingest benchmark", "integration").secret
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
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}/health")
            lat, failed, wall = asyncio.run(post_many(port, n, concurrency, key))
        finally:
            proc.terminate()
            proc.wait()
        store = open_store(Settings(home=home))
        stored = sum(
            sum(1 for m in store.list_messages(ConversationId(f"ingest_{c}")) if m.role.value == "customer")
            for c in range(min(n, 500))
        )
        results["cxstack"] = {
            "msgs_per_s": round(n / wall, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "failed": failed,
            "stored": stored,
            "lost": n - failed - stored,
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
    for column in ("endpoint", "msgs/s", "p50 ms", "p99 ms", "failed", "lost", "aim"):
        table.add_column(column)
    e, c = ingest["echo"], ingest["cxstack"]
    table.add_row(
        "FastAPI echo (ceiling)",
        str(e["msgs_per_s"]),
        str(e["p50_ms"]),
        str(e["p99_ms"]),
        str(e["failed"]),
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
        "≥ 1000/s, 0 lost",
    )
    console.print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"turn": turns, "ingest": ingest}, indent=2))
        console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
