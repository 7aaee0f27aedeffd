"""Faults: kill -9 of the turn worker, back-office 500s and timeouts under load; checked message by message.

    python -m benchmarks.faults [--json PATH] [--messages 2000] [--conversations 100] [--kills 20]
                                [--embedder hashing] [--seed 7] [--keep DIR]

1. Starts the demo back office (cxstack.demo.backoffice, its own SQLite file) as a child process on a free
   port, with a recorder around it that logs every write request it gets (method, path, Idempotency-Key,
   status).
2. Starts the service the way `cxstack serve --runtime process` does (a child process, its own CXSTACK_HOME,
   the demo workspace and customers, the back office above) and waits for /health.
3. Posts the load: `--conversations` conversations of `--messages` messages in all, built from the demo's
   sample conversations that are meant to be automated (order status, refunds with their "yes", returns,
   account changes, policy questions), each conversation one customer's, its messages posted in order with a
   pause between them, on the `api` channel (no burst merging there, so every message is its own turn).
4. Meanwhile `--kills` rounds of SIGKILL of the worker process (its pid from /health), spread over the load:
   posting waits for the next kill once a round's share of messages is posted, so every round falls inside
   the load. Each round times how long /health takes to say the worker runs again.
5. For a while the back office answers 500s, then times out (through its `/_demo/faults`).
6. When everything is answered and sent (or after a timeout), stops both and checks by id, from the
   databases: every posted message stored once and processed by exactly one committed turn; every turn's
   reply stored once and sent; back-office writes executed exactly once per Idempotency-Key (refunds from the
   back office's `refunds` table, other writes from the recorder).

Replies a person's ownership of the conversation holds back on purpose are counted apart ("no reply by
design"), with the reason the turn recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 120)

CHANNEL = "api"  # no burst window: one message, one turn
# Account actions a customer can ask for again and again (the others refuse a second time: an order is
# cancelled once), so any conversation may carry them for its own customer.
REPEATABLE_ACTIONS = frozenset(
    {
        "send_password_reset",
        "send_username_reminder",
        "reset_two_factor",
        "update_phone",
        "validate_promo_code",
    }
)
REFUND_PATH_SUFFIX = "/refunds"
READ_ONLY_POSTS = ("/promo-codes/validate",)  # POST, but changes nothing: not a write


# ---- the load ----------------------------------------------------------------------------------------------


@dataclass
class PlannedConversation:
    id: str
    customer_id: str
    messages: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def external_id(self, index: int) -> str:
        return f"{self.id}-{index:02d}"


def plan_load(messages: int, conversations: int, seed: int) -> list[PlannedConversation]:
    """Conversations of real sample messages. A customer's own order and subscription requests appear in one
    of their conversations only (a second cancel of one order is refused, which is not what we measure);
    policy questions and repeatable account requests fill the rest."""
    from cxstack.demo import SAMPLE_SETS, demo_conversations_path, demo_workspace_path
    from cxstack.workspace.loader import load_workspace

    workspace = load_workspace(demo_workspace_path())
    actions = {action.name: action for action in workspace.actions}
    lines = [line for s in SAMPLE_SETS for line in demo_conversations_path(s).read_text("utf-8").splitlines()]
    samples = [json.loads(line) for line in lines if line.strip()]
    samples = [s for s in samples if s["expected"].get("outcome") == "automated"]

    own: dict[str, list[dict[str, Any]]] = defaultdict(list)  # customer -> their order/account requests
    own_reads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    shared: list[dict[str, Any]] = []
    for sample in samples:
        intent = workspace.intent(sample["expected"]["intent"])
        action = actions.get(intent.action) if intent is not None and intent.action else None
        customer = sample["customer"]["id"]
        if action is None or action.name in REPEATABLE_ACTIONS:
            shared.append(sample)
        elif action.method == "GET":
            own_reads[customer].append(sample)
        else:
            own[customer].append(sample)
    customers = sorted(set(own) | set(own_reads) | {s["customer"]["id"] for s in samples})
    rng = random.Random(seed)
    per_conversation = [
        messages // conversations + (1 if i < messages % conversations else 0) for i in range(conversations)
    ]
    planned: list[PlannedConversation] = []
    first_of: set[str] = set()
    for index, size in enumerate(per_conversation):
        customer = customers[index % len(customers)]
        conversation = PlannedConversation(id=f"faults-{index:03d}", customer_id=customer)
        blocks = list(own_reads[customer])
        if customer not in first_of:
            first_of.add(customer)
            blocks += own[customer]
        rng.shuffle(blocks)
        for block in blocks:
            if len(conversation.messages) + len(block["messages"]) <= size:
                conversation.messages += block["messages"]
                conversation.samples.append(block["id"])
        while len(conversation.messages) < size:
            room = size - len(conversation.messages)
            fitting = [s for s in shared if len(s["messages"]) <= room]
            block = rng.choice(fitting)
            conversation.messages += block["messages"]
            conversation.samples.append(block["id"])
        planned.append(conversation)
    return planned


# ---- processes ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")


def serve_backoffice(port: int, db: Path, log: Path) -> None:
    """The demo back office with a recorder of write requests around it (the child process's main)."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response

    from cxstack.demo.backoffice import create_backoffice_app

    app = create_backoffice_app(db)
    sink = log.open("a", buffering=1, encoding="utf-8")

    @app.middleware("http")  # outermost: sees injected faults and late answers too
    async def record(request: Request, call_next: Any) -> Response:
        started = time.time()
        response: Response = await call_next(request)
        path = request.url.path
        if request.method != "GET" and not path.startswith("/_demo") and path not in READ_ONLY_POSTS:
            entry = {
                "method": request.method,
                "path": path,
                "key": request.headers.get("idempotency-key"),
                "status": response.status_code,
                "replayed": response.headers.get("idempotent-replayed") == "true",
                "started": started,
                "seconds": round(time.time() - started, 3),
            }
            sink.write(json.dumps(entry) + "\n")
        return response

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# ---- the run -----------------------------------------------------------------------------------------------


@dataclass
class KillRound:
    round: int
    pid: int
    posted_before: int
    degraded_seen: bool = False
    reason: str | None = None
    recovered_s: float | None = None


@dataclass
class LoadResult:
    posted: dict[str, str] = field(default_factory=dict)  # external id -> message id (acknowledged)
    post_retries: int = 0
    duplicate_acks: int = 0
    kills: list[KillRound] = field(default_factory=list)
    faults_armed: list[dict[str, Any]] = field(default_factory=list)
    load_seconds: float = 0.0
    drain_seconds: float = 0.0
    drained: bool = False
    final_health: dict[str, Any] = field(default_factory=dict)
    hand_backs: int = 0
    desk_errors: list[str] = field(default_factory=list)  # answers the desk did not expect, kept to report


async def post_until_acknowledged(
    client: httpx.AsyncClient, conversation: PlannedConversation, index: int, result: LoadResult
) -> None:
    body = {
        "text": conversation.messages[index],
        "external_id": conversation.external_id(index),
        "channel": CHANNEL,
        "customer_id": conversation.customer_id,
    }
    delay = 0.2
    for _ in range(120):
        try:
            response = await client.post(f"/v1/conversations/{conversation.id}/messages", json=body)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code in (200, 202):
            if response.status_code == 200:
                result.duplicate_acks += 1  # a retry of a post whose answer was lost: stored once anyway
            result.posted[conversation.external_id(index)] = response.json()["message_id"]
            return
        result.post_retries += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    raise RuntimeError(f"{conversation.external_id(index)} was never acknowledged")


async def run_load(
    base_url: str,
    backoffice_url: str,
    plan: list[PlannedConversation],
    *,
    kills: int,
    think_s: tuple[float, float],
    seed: int,
    headers: dict[str, str],
    staff_headers: dict[str, str],
    drain_timeout_s: float,
    settle_s: float,
    desk_every_s: float,
) -> LoadResult:
    result = LoadResult()
    total = sum(len(c.messages) for c in plan)
    per_round = math.ceil(total / (kills + 1))
    kills_done = 0
    gate = asyncio.Condition()
    rng = random.Random(seed + 1)
    # Late in the load, so that the conversations a failed action hands to a person (who then owns them and
    # the bot stays silent) are few: 500s from 60% of the rounds, then answers slower than the connector's
    # 3 s timeout. Each fault hits the next request to the back office, whatever it is.
    fault_rounds = {
        max(1, kills * 3 // 5): {"mode": "500", "count": 24, "path_prefix": "/"},
        max(2, kills * 4 // 5): {"mode": "timeout", "count": 8, "path_prefix": "/", "delay_s": 4.0},
    }

    limits = httpx.Limits(max_connections=len(plan) + 10, max_keepalive_connections=len(plan) + 10)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits, headers=headers) as client,
        httpx.AsyncClient(base_url=backoffice_url, timeout=10) as backoffice,
    ):

        async def health() -> dict[str, Any]:
            response = await client.get("/health", timeout=5)
            body: dict[str, Any] = response.json()
            return body

        async def customer(conversation: PlannedConversation) -> None:
            await asyncio.sleep(rng.uniform(0, think_s[1]))
            for index in range(len(conversation.messages)):
                async with gate:
                    await gate.wait_for(
                        lambda: kills_done >= kills or len(result.posted) < per_round * (kills_done + 1)
                    )
                await post_until_acknowledged(client, conversation, index, result)
                await asyncio.sleep(rng.uniform(*think_s))

        async def killer() -> None:
            nonlocal kills_done
            for number in range(1, kills + 1):
                while len(result.posted) < per_round * number and len(result.posted) < total:
                    await asyncio.sleep(0.05)
                # The worker is back and has worked off the backlog (or had `settle_s` to): a kill right
                # after a restart would test nothing but the restart.
                up_since: float | None = None
                while True:
                    state = await health()
                    if state["status"] == "ok" and state["worker"]["pid"]:
                        up_since = up_since or time.monotonic()
                        if state["pending"] == 0 or time.monotonic() - up_since >= settle_s:
                            break
                    else:
                        up_since = None
                    await asyncio.sleep(0.1)
                if number in fault_rounds:
                    armed = fault_rounds[number]
                    await backoffice.post("/_demo/faults", json=armed)
                    result.faults_armed.append({"round": number, **armed})
                round_ = KillRound(number, int(state["worker"]["pid"]), len(result.posted))
                killed_at = time.monotonic()
                os.kill(round_.pid, signal.SIGKILL)
                async with gate:  # the next round's messages are posted while the worker is down
                    kills_done = number
                    gate.notify_all()
                while True:
                    state = await health()
                    if state["status"] != "ok":
                        round_.degraded_seen = True
                        round_.reason = round_.reason or (state["reasons"] or [None])[0]
                    elif state["worker"]["pid"] not in (None, round_.pid):
                        round_.recovered_s = round(time.monotonic() - killed_at, 2)
                        break
                    await asyncio.sleep(0.05)
                result.kills.append(round_)

        def handed_back() -> None:
            result.hand_backs += 1

        async def desk() -> None:
            await desk_loop(client, staff_headers, desk_every_s, handed_back, result.desk_errors)

        started = time.monotonic()
        desk_task = asyncio.create_task(desk()) if desk_every_s > 0 else None
        await asyncio.gather(killer(), *(customer(c) for c in plan))
        result.load_seconds = round(time.monotonic() - started, 1)

        # Drain: every message processed and every reply sent.
        started = time.monotonic()
        while time.monotonic() - started < drain_timeout_s:
            state = await health()
            queued = (
                await client.get(
                    "/v1/outbox", params={"status": "pending", "limit": 1}, headers=staff_headers
                )
            ).json()
            if state["status"] == "ok" and state["pending"] == 0 and not queued:
                result.drained = True
                break
            await asyncio.sleep(0.5)
        result.drain_seconds = round(time.monotonic() - started, 1)
        result.final_health = await health()
        if desk_task is not None:
            if desk_task.done() and desk_task.exception() is not None:  # it stopped handing back early
                result.desk_errors.append(f"desk stopped: {desk_task.exception()!r}")
            desk_task.cancel()
            await asyncio.gather(desk_task, return_exceptions=True)
    return result


async def desk_loop(
    client: httpx.AsyncClient,
    staff_headers: dict[str, str],
    every_s: float,
    handed_back: Callable[[], None],
    errors: list[str],
    prefix: str = "faults-",
) -> None:
    """A person on the escalation desk: answers each escalated conversation and hands it back, so that the bot
    answers the customer's next messages again (the API does this without the worker). Runs until cancelled;
    answers the desk did not expect go to `errors`."""
    while True:
        packets: list[dict[str, Any]] = []
        try:
            response = await client.get("/v1/escalations", params={"status": "open"}, headers=staff_headers)
            if response.status_code == 200:
                packets = response.json()
            else:
                errors.append(f"GET /v1/escalations {response.status_code}")
        except httpx.HTTPError as error:
            errors.append(f"GET /v1/escalations {type(error).__name__}")
        for packet in packets:  # a hand-back resolves the packet; one reopened later is open again
            if not packet["conversation_id"].startswith(prefix):
                continue
            reply = {"text": "A colleague here: sorted, thanks for waiting.", "author": "desk"}
            try:
                response = await client.post(
                    f"/v1/conversations/{packet['conversation_id']}/human-replies",
                    json={**reply, "hand_back": True},
                    headers=staff_headers,
                )
            except httpx.HTTPError as error:
                errors.append(f"POST human-replies {type(error).__name__}")
                continue
            if response.status_code < 300:
                handed_back()
            else:
                errors.append(f"POST human-replies {response.status_code}")
        await asyncio.sleep(every_s)


# ---- the checks --------------------------------------------------------------------------------------------


def check_service(
    database_url: str, plan: list[PlannedConversation], posted: dict[str, str]
) -> dict[str, Any]:
    """Every planned message by external id against the store at `database_url`; `posted` holds the
    acknowledged ones (external id -> message id)."""
    from cxstack.app import Settings, open_store
    from cxstack.domain.models import ConversationId, Role
    from cxstack.domain.ports import OutboxStatus

    store = open_store(Settings(database_url=database_url))
    outbox_status: dict[str, str] = {}
    for status in OutboxStatus:
        for item in store.list_outbox(status, limit=1_000_000):
            outbox_status[item.message_id] = status.value

    counts: Counter[str] = Counter()
    no_reply_reasons: Counter[str] = Counter()
    problems: list[str] = []
    delays: list[float] = []
    for conversation in plan:
        cid = ConversationId(conversation.id)
        messages = store.list_messages(cid)
        traces = store.list_traces(cid, limit=100_000)
        by_external = defaultdict(list)
        for message in messages:
            if message.role == Role.CUSTOMER and message.external_id:
                by_external[message.external_id].append(message)
        traces_of = defaultdict(list)
        for trace in traces:
            traces_of[trace.message_id].append(trace)
        for index in range(len(conversation.messages)):
            external = conversation.external_id(index)
            counts["planned"] += 1
            if external in posted:
                counts["posted"] += 1
            stored = by_external.get(external, [])
            if len(stored) > 1:
                counts["stored_twice"] += 1
                problems.append(f"{external} stored {len(stored)} times")
            if not stored:
                if external in posted:
                    counts["lost"] += 1
                    problems.append(f"{external} acknowledged but not stored")
                continue
            counts["stored"] += 1
            message = stored[0]
            if external in posted and posted[external] != message.id:
                problems.append(f"{external}: acknowledged as {posted[external]}, stored as {message.id}")
            turns = traces_of.get(message.id, [])
            if not turns:
                counts["unprocessed"] += 1
                problems.append(f"{external} stored but never processed")
                continue
            counts["processed"] += 1
            if len(turns) > 1:
                counts["processed_twice"] += 1
                problems.append(f"{external} processed by {len(turns)} turns")
            turn = turns[0]
            delays.append((turn.created_at - message.created_at).total_seconds())
            if turn.outcome == "escalated":
                counts["escalated"] += 1
            if turn.reply is None:
                counts["no_reply_by_design"] += 1
                no_reply_reasons[f"{turn.outcome}/{turn.reason_code or '-'}"] += 1
            else:
                counts["turns_with_reply"] += 1
        # Replies, matched to turns in order: the k-th assistant message is the k-th turn with a reply.
        for human in (m for m in messages if m.role == Role.HUMAN_AGENT):
            counts["human_replies"] += 1
            if outbox_status.get(human.id) == OutboxStatus.SENT.value:
                counts["human_replies_sent"] += 1
        replies = [m for m in messages if m.role == Role.ASSISTANT]
        replying = [t for t in traces if t.reply is not None]
        counts["replies"] += len(replies)
        if len(replies) != len(replying):
            problems.append(
                f"{conversation.id}: {len(replies)} replies for {len(replying)} turns with a reply"
            )
        for reply, trace in zip(replies, replying, strict=False):
            if reply.text != trace.reply:
                counts["reply_mismatch"] += 1
                problems.append(f"{conversation.id}: reply {reply.id} is not the text of turn {trace.id}")
            delivered = outbox_status.get(reply.id)
            if delivered == OutboxStatus.SENT.value:
                counts["replies_sent"] += 1
            else:
                counts[f"replies_{delivered or 'missing_from_outbox'}"] += 1
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()
    counts["duplicates"] = counts["stored_twice"] + counts["processed_twice"]
    counts["losses"] = counts["lost"] + counts["unprocessed"]
    return {
        "counts": dict(counts),
        "no_reply_reasons": dict(no_reply_reasons.most_common()),
        "answer_delay_s": _spread(delays),
        "problems": problems[:50],
    }


def check_backoffice(db: Path, log: Path) -> dict[str, Any]:
    entries = (
        [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    )
    with sqlite3.connect(db) as connection:
        refund_rows = Counter(
            key
            for (key,) in connection.execute(
                "SELECT idempotency_key FROM refunds WHERE idempotency_key IS NOT NULL"
            )
        )
        events = dict(connection.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    attempts_by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unkeyed = 0
    for entry in entries:
        if entry["key"]:
            attempts_by_key[entry["key"]].append(entry)
        else:
            unkeyed += 1
    executed: dict[str, int] = {}
    refused: list[str] = []
    failed: list[str] = []
    duplicate_refunds = duplicate_other = 0
    for key, attempts in attempts_by_key.items():
        is_refund = attempts[0]["path"].endswith(REFUND_PATH_SUFFIX)
        # Refunds: the back office's own record; others: every 2xx answer that was not a replay of the first.
        runs = (
            refund_rows.get(key, 0)
            if is_refund
            else sum(1 for a in attempts if 200 <= a["status"] < 300 and not a.get("replayed"))
        )
        executed[key] = runs
        if runs > 1:
            if is_refund:
                duplicate_refunds += runs - 1
            else:
                duplicate_other += runs - 1
        if runs == 0:
            statuses = {a["status"] for a in attempts}
            (refused if statuses and max(statuses) < 500 and min(statuses) >= 400 else failed).append(key)
    return {
        "write_requests": len(entries),
        "write_requests_without_key": unkeyed,
        "writes_intended": len(attempts_by_key),
        "writes_executed_once": sum(1 for runs in executed.values() if runs == 1),
        "writes_refused_4xx": len(refused),
        "writes_failed_5xx_or_timeout": len(failed),
        "duplicate_writes_refunds": duplicate_refunds,
        "duplicate_writes_other": duplicate_other,
        "retried_keys": sum(1 for attempts in attempts_by_key.values() if len(attempts) > 1),
        "refunds_by_key": sum(refund_rows.values()),
        "writes_executed": sum(executed.values()),
        # The back office records an event for every write it executes: an independent count.
        "events_recorded": sum(events.values()),
        "faulted_write_requests": sum(1 for e in entries if e["status"] >= 500 or e["seconds"] >= 3),
        "events_by_kind": events,
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


# ---- report ------------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    counts = results["service"]["counts"]
    office = results["backoffice"]
    kills = results["kills"]
    recovered = [k["recovered_s"] for k in kills if k["recovered_s"] is not None]
    no_reply = counts.get("no_reply_by_design", 0)
    posted = counts.get("posted", 0)
    rows = [
        ("messages posted (acknowledged)", posted, results["messages"]),
        ("stored (by external id)", counts.get("stored", 0), posted),
        ("processed (one committed turn each)", counts.get("processed", 0), posted),
        (
            "bot replies (one per turn that answers)",
            counts.get("replies", 0),
            counts.get("processed", 0) - no_reply,
        ),
        ("  turns with no reply by design (a person owns it)", no_reply, "-"),
        ("  bot replies sent by the outbox", counts.get("replies_sent", 0), counts.get("replies", 0)),
        (
            "human replies with hand-back (desk), sent",
            counts.get("human_replies_sent", 0),
            results["hand_backs"],
        ),
        ("duplicates (stored or processed twice)", counts.get("duplicates", 0), 0),
        ("losses (acknowledged, not stored or never processed)", counts.get("losses", 0), 0),
        ("back-office writes intended (Idempotency-Keys)", office["writes_intended"], "-"),
        (
            "  executed exactly once",
            office["writes_executed_once"],
            office["writes_intended"] - office["writes_refused_4xx"] - office["writes_failed_5xx_or_timeout"],
        ),
        ("  refused by the back office (4xx)", office["writes_refused_4xx"], "-"),
        ("  failed on faults (5xx / timeout), escalated", office["writes_failed_5xx_or_timeout"], "-"),
        (
            "  executions counted / events the back office recorded",
            office["writes_executed"],
            office["events_recorded"],
        ),
        ("duplicate writes: refunds (key honoured)", office["duplicate_writes_refunds"], 0),
        ("duplicate writes: other endpoints (key honoured)", office["duplicate_writes_other"], 0),
        ("kill -9 rounds", len(kills), results["kill_rounds"]),
        ("  seen degraded in /health", sum(1 for k in kills if k["degraded_seen"]), len(kills)),
        ("worker restarts (/health)", results["final_health"].get("worker", {}).get("restarts"), len(kills)),
        (
            "time to recover, median / max (s)",
            f"{statistics.median(recovered):.1f} / {max(recovered):.1f}" if recovered else "-",
            "restart cost",
        ),
        (
            "answer delay p50 / p99 / max (s)",
            "{p50} / {p99} / {max}".format(**results["service"]["answer_delay_s"]),
            "-",
        ),
        ("dead outbox items", results["final_health"].get("outbox_dead"), 0),
    ]
    table = Table(
        title=f"faults: {results['messages']} messages, {results['conversations']} conversations, "
        f"{len(kills)} x kill -9, back-office 500s and timeouts"
    )
    table.add_column("measure")
    table.add_column("observed", justify="right")
    table.add_column("expected", justify="right")
    for name, observed, expected in rows:
        table.add_row(name, str(observed), str(expected))
    console.print(table)
    console.print(
        f"load {results['load_seconds']} s, drain {results['drain_seconds']} s "
        f"(drained: {results['drained']}), "
        f"total {results['total_seconds']} s; post retries {results['post_retries']}, "
        f"duplicate acknowledgements {results['duplicate_acks']}; "
        f"desk errors {results['desk_errors']['count']} {results['desk_errors']['first']}; "
        "no reply by design: "
        f"{results['service']['no_reply_reasons'] or 'none'}; faults armed: "
        + "; ".join(f"round {f['round']}: {f['mode']} x{f['count']}" for f in results["faults_armed"])
    )
    if results["service"]["problems"]:
        console.print("[red]problems (first 50):[/]")
        for problem in results["service"]["problems"]:
            console.print(f"  {problem}")


def new_key(home: Path, role: str) -> str:
    """A fresh key in the service's own store (hashed there, like `cxstack keys create`)."""
    from cxstack.api.keys import ApiKeys
    from cxstack.app import Settings, open_store

    store = open_store(Settings(home=home, database_url=f"sqlite:///{home / 'cxstack.db'}"))
    return ApiKeys(store).create(f"faults benchmark ({role})", role).secret


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cxstack.demo import demo_customers_csv, demo_workspace_path

    started = time.monotonic()
    plan = plan_load(args.messages, args.conversations, args.seed)
    keep = args.keep
    tmp = tempfile.TemporaryDirectory(prefix="cxstack-faults-") if keep is None else None
    root = Path(tmp.name) if tmp is not None else keep
    root.mkdir(parents=True, exist_ok=True)
    home, office_db, office_log = root / "home", root / "backoffice.db", root / "backoffice-writes.jsonl"
    office_port, api_port = free_port(), free_port()
    office_url, api_url = f"http://127.0.0.1:{office_port}", f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "CXSTACK_HOME": str(home),
        "CXSTACK_BACKOFFICE_URL": office_url,
    }
    env.pop("CXSTACK_DATABASE_URL", None)  # this run's own SQLite under its home
    office = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.faults",
            "--serve-backoffice",
            str(office_port),
            "--office-db",
            str(office_db),
            "--office-log",
            str(office_log),
        ],
        env=env,
    )
    service_log = (root / "serve.log").open("wb")
    service: subprocess.Popen[bytes] | None = None
    try:
        wait_until(
            lambda: httpx.get(f"{office_url}/health", timeout=1).status_code == 200, 60, "the back office"
        )
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cxstack.cli.main",
                "serve",
                str(demo_workspace_path()),
                "--port",
                str(api_port),
                "--runtime",
                "process",
                "--no-backoffice",
                "--home",
                str(home),
                "--embedder",
                args.embedder,
                "--customers",
                str(demo_customers_csv()),
            ],
            env=env,
            stdout=service_log,
            stderr=subprocess.STDOUT,
        )
        console.print(f"[dim]service starting ({args.embedder}); logs in {root / 'serve.log'}[/]")
        wait_until(
            lambda: httpx.get(f"{api_url}/health", timeout=2).json().get("status") == "ok", 600, "the service"
        )
        headers = dict(h.split(":", 1) for h in args.header)
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        if "Authorization" not in headers:  # the load posts as the channel's integration would
            headers["Authorization"] = f"Bearer {new_key(home, 'integration')}"
        staff_headers = {"Authorization": f"Bearer {new_key(home, 'agent')}"}  # the desk and the drain check
        load = asyncio.run(
            run_load(
                api_url,
                office_url,
                plan,
                kills=args.kills,
                think_s=(args.think_min, args.think_max),
                seed=args.seed,
                headers=headers,
                staff_headers=staff_headers,
                drain_timeout_s=args.drain_timeout,
                settle_s=args.settle,
                desk_every_s=args.desk_every,
            )
        )
    finally:
        if service is not None:
            stop_process(service)
        stop_process(office)
        service_log.close()
    results: dict[str, Any] = {
        "messages": sum(len(c.messages) for c in plan),
        "conversations": len(plan),
        "kill_rounds": args.kills,
        "embedder": args.embedder,
        "seed": args.seed,
        "load_seconds": load.load_seconds,
        "drain_seconds": load.drain_seconds,
        "drained": load.drained,
        "post_retries": load.post_retries,
        "duplicate_acks": load.duplicate_acks,
        "hand_backs": load.hand_backs,
        "desk_errors": {"count": len(load.desk_errors), "first": load.desk_errors[:5]},
        "faults_armed": load.faults_armed,
        "kills": [vars(k) for k in load.kills],
        "final_health": load.final_health,
        "service": check_service(f"sqlite:///{home / 'cxstack.db'}", plan, load.posted),
        "backoffice": check_backoffice(office_db, office_log),
    }
    results["total_seconds"] = round(time.monotonic() - started, 1)
    if tmp is not None:
        tmp.cleanup()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--embedder", default="hashing", help="hashing (fast) or wordllama")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--think-min", type=float, default=0.5, help="pause between a customer's messages")
    parser.add_argument("--think-max", type=float, default=2.5)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="after a restart, longest wait for the backlog before a kill",
    )
    parser.add_argument(
        "--desk-every", type=float, default=1.0, help="seconds between desk rounds (0: nobody hands back)"
    )
    parser.add_argument("--header", action="append", default=[], help="'Name: value' sent on every API call")
    parser.add_argument("--keep", type=Path, help="keep databases and logs in this folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-backoffice", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--office-db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--office-log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_backoffice:
        serve_backoffice(args.serve_backoffice, args.office_db, args.office_log)
        return
    results = run(args)
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
