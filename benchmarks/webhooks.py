"""WhatsApp webhook ingest: acknowledgement latency and rate, duplicates and forgeries, beside the REST
channel and a FastAPI echo in the same run.

    python -m benchmarks.webhooks [--messages 1000] [--repeat 10] [--concurrency 16] [--json PATH]

`cxstack serve` runs the demo workspace with `whatsapp` in its channels, configured for a local stand-in of
the Graph API (the replies are really sent, to it). An async keep-alive client posts signed webhook bodies as
the Cloud API does: each of N distinct messages (real texts: the demo's scripts and CLINC150 test utterances)
delivered `--repeat` times (Meta delivers at least once), interleaved, plus forged deliveries (a wrong
signature) of yet other messages. Measured: p50/p99 time to the 200, deliveries acknowledged per second. Then
the service is given time to answer everything and every message is checked in the database by its wamid:
stored once, answered by exactly one turn (duplicate turns: aim 0); every forged message absent (aim 0).
Beside it, in the same run: the REST channel (`POST /v1/conversations/{id}/messages`, an integration key) with
the same N messages once each, and a FastAPI echo endpoint under the same uvicorn and client (the ceiling).
360dialog asks a webhook to answer within 250 ms; the issue's aim is a median of 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.turn_latency import (
    echo_ceiling,
    failures,
    free_port,
    ingest_texts,
    percentile,
    post_many,
    wait_answered,
    wait_up,
)
from cxstack.channels.whatsapp import signature_of

SECRET = "benchmark-app-secret"
PHONE_ID = "106540352242922"
SENDERS = 400


def sender_of(i: int) -> str:
    return f"1555{i % SENDERS:07d}"


def webhook_body(i: int, text: str) -> bytes:
    message = {
        "from": sender_of(i),
        "id": f"wamid.bench{i}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "B"}, "wa_id": sender_of(i)}],
        "messages": [message],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "W", "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(body).encode()


async def _deliver(
    port: int, jobs: list[tuple[bytes, str]], latencies: list[float], statuses: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body, signature in jobs:
            head = (
                f"POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-Hub-Signature-256: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(int(status_line.split()[1]))
    finally:
        writer.close()


def deliveries(texts: list[str], repeat: int, forged: int) -> list[tuple[bytes, str, bool]]:
    """Every message `repeat` times and `forged` other ones with a wrong signature, interleaved."""
    jobs = []
    for _ in range(repeat):
        for i, text in enumerate(texts):
            body = webhook_body(i, text)
            jobs.append((body, signature_of(SECRET, body), False))
    for k in range(forged):
        body = webhook_body(len(texts) + k, "refund my order ORD-10001 now")
        jobs.append((body, signature_of("not-the-secret", body), True))
    order = sorted(range(len(jobs)), key=lambda j: hash((j * 2654435761) % 1_000_003))
    return [jobs[j] for j in order]


def check(home: Path, n: int, forged: int) -> dict[str, Any]:
    from sqlalchemy import select

    from cxstack.app import Settings, open_store
    from cxstack.store.orm import MessageRow, TraceRow

    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'cxstack.db'}"))
    with store.engine.connect() as connection:  # type: ignore[attr-defined]
        stored = Counter(
            r[0]
            for r in connection.execute(
                select(MessageRow.external_id).where(MessageRow.channel == "whatsapp")
            )
        )
        ids = {
            r[0]: r[1]
            for r in connection.execute(
                select(MessageRow.external_id, MessageRow.id).where(MessageRow.channel == "whatsapp")
            )
        }
        turns = Counter(r[0] for r in connection.execute(select(TraceRow.message_id)))
    wanted = [f"wamid.bench{i}" for i in range(n)]
    forged_ids = [f"wamid.bench{n + k}" for k in range(forged)]
    return {
        "stored_once": sum(stored[w] == 1 for w in wanted),
        "lost": sum(stored[w] == 0 for w in wanted),
        "duplicate_turns": sum(max(0, turns[ids[w]] - 1) for w in wanted if w in ids),
        "unanswered": sum(turns[ids[w]] == 0 for w in wanted if w in ids),
        "forged_accepted": sum(stored[f] > 0 for f in forged_ids),
    }


def run(messages: int, repeat: int, concurrency: int, embedder: str) -> dict[str, Any]:
    from cxstack.api.keys import ApiKeys
    from cxstack.app import Settings, open_store
    from cxstack.testing.http_standin import Reply, ScriptedBackend

    texts = ingest_texts(messages)
    forged = max(10, messages // 10)
    results: dict[str, Any] = {
        "messages": messages,
        "repeat": repeat,
        "forged": forged,
        "concurrency": concurrency,
    }
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    graph = ScriptedBackend()
    graph.on(
        "POST",
        f"/v21.0/{PHONE_ID}/messages",
        handler=lambda _: Reply(200, {"messages": [{"id": "wamid.out"}]}),
    )
    with tempfile.TemporaryDirectory() as tmp, graph.serve() as graph_url:
        results["echo"] = echo_ceiling(texts, concurrency, Path(tmp), env)

        workspace = Path(tmp) / "ws"
        subprocess.run(
            [sys.executable, "-m", "cxstack.cli.main", "init", "--demo", str(workspace)],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        settings_file = workspace / "cxstack.yaml"
        settings_file.write_text(
            settings_file.read_text().replace(
                "channels: [api, webchat]", "channels: [api, webchat, whatsapp]"
            )
        )
        home = Path(tmp) / "home"
        store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'cxstack.db'}"))
        key = ApiKeys(store).create("webhook benchmark", "integration").secret
        port = free_port()
        serve_env = {
            **env,
            "CXSTACK_HOME": str(home),
            "CXSTACK_WHATSAPP_VERIFY_TOKEN": "v",
            "CXSTACK_WHATSAPP_APP_SECRET": SECRET,
            "CXSTACK_WHATSAPP_ACCESS_TOKEN": "token",
            "CXSTACK_WHATSAPP_PHONE_NUMBER_ID": PHONE_ID,
            "CXSTACK_WHATSAPP_API_BASE": f"{graph_url}/v21.0",
        }
        serve_env.pop("CXSTACK_DATABASE_URL", None)
        cmd = [
            sys.executable,
            "-m",
            "cxstack.cli.main",
            "serve",
            str(workspace),
            "--port",
            str(port),
            "--no-backoffice",
            "--home",
            str(home),
            "--embedder",
            embedder,
        ]
        proc = subprocess.Popen(cmd, env=serve_env, stdout=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}/health", timeout=600)
            lat, statuses, wall = asyncio.run(post_many(port, texts, concurrency, key))
            results["rest"] = {
                "per_s": round(messages / wall, 1),
                "p50_ms": round(percentile(lat, 50), 2),
                "p99_ms": round(percentile(lat, 99), 2),
                "failed": failures(statuses, messages),
            }
            jobs = deliveries(texts, repeat, forged)
            shards = [jobs[c::concurrency] for c in range(concurrency)]
            latencies: list[float] = []
            codes: list[int] = []

            async def load() -> float:
                started = time.perf_counter()
                await asyncio.gather(
                    *(_deliver(port, [(b, s) for b, s, _ in shard], latencies, codes) for shard in shards)
                )
                return time.perf_counter() - started

            wall = asyncio.run(load())
            drained = wait_answered(home, 900)
        finally:
            proc.terminate()
            proc.wait()
        results["whatsapp"] = {
            "deliveries": len(jobs),
            "per_s": round(len(jobs) / wall, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "statuses": dict(Counter(codes)),
            "answered_within_s": round(drained, 1),
            **check(home, messages, forged),
        }
    return results


def table(result: dict[str, Any]) -> Table:
    out = Table(
        title=f"ingest on SQLite: {result['messages']} messages (WhatsApp: each delivered "
        f"{result['repeat']}x, plus {result['forged']} forged), {result['concurrency']} connections",
        caption="p50/p99: time to the HTTP answer; WhatsApp rows count every delivery. Aim: median ≤ 50 ms "
        "(360dialog asks ≤ 250 ms), 0 duplicate turns, 0 forged accepted",
    )
    for column in ("endpoint", "per s", "p50 ms", "p99 ms", "lost", "dup. turns", "forged in"):
        out.add_column(column, justify="left" if column == "endpoint" else "right")
    echo, rest, wa = result["echo"], result["rest"], result["whatsapp"]
    out.add_row(
        "FastAPI echo (ceiling)",
        f"{echo['msgs_per_s']:.0f}",
        f"{echo['p50_ms']:.1f}",
        f"{echo['p99_ms']:.1f}",
        "—",
        "—",
        "—",
    )
    out.add_row(
        "cxstack REST channel",
        f"{rest['per_s']:.0f}",
        f"{rest['p50_ms']:.1f}",
        f"{rest['p99_ms']:.1f}",
        str(rest["failed"]),
        "—",
        "—",
    )
    out.add_row(
        "cxstack WhatsApp webhook",
        f"{wa['per_s']:.0f}",
        f"{wa['p50_ms']:.1f}",
        f"{wa['p99_ms']:.1f}",
        str(wa["lost"]),
        str(wa["duplicate_turns"]),
        str(wa["forged_accepted"]),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000, help="distinct messages (default 1000)")
    parser.add_argument(
        "--repeat", type=int, default=10, help="deliveries of each WhatsApp message (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--embedder", default="minilm", help="the router's embedder (default minilm)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args.messages, args.repeat, args.concurrency, args.embedder)
    Console(width=max(Console().width, 120)).print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
