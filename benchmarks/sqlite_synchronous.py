"""What `PRAGMA synchronous = FULL` costs against NORMAL for cxstack's SQLite store (WAL mode, this disk).

Each run ingests messages through the real store (one transaction and one commit per message, as a webhook
does), from 1 thread and from several, on a fresh database file beside the repository (not /tmp, which may be
memory). FULL syncs the write-ahead log on every commit; NORMAL only at checkpoints.

    python -m benchmarks.sqlite_synchronous [--messages 1500] [--threads 4] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cxstack.domain.models import ConversationId, CustomerId, InboundMessage
from cxstack.store.db import create_engine_for, migrate
from cxstack.store.sqlalchemy_store import SqlAlchemyStore

TEXTS = (
    "where is my order ORD-10015?",
    "I want a refund of $40 for ORD-10005",
    "how long do I have to return an item?",
    "can you change the address on ORD-10068 to 12 Elm Street, Springfield 10001",
    "thanks!",
)


def ingest_rate(directory: Path, level: str, messages: int, threads: int) -> float:
    """Messages ingested (committed) per second."""
    path = directory / f"sync-{level.lower()}-{threads}-{time.monotonic_ns()}.db"
    engine = create_engine_for(f"sqlite:///{path}", sqlite_synchronous_level=level)
    migrate(engine)
    store = SqlAlchemyStore(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == {"NORMAL": 1, "FULL": 2}[level]
    per_thread = messages // threads

    def work(worker: int) -> None:
        for i in range(per_thread):
            store.ingest(
                InboundMessage(
                    channel="api",
                    external_id=f"{worker}-{i}",
                    conversation_id=ConversationId(f"c{worker}-{i % 50}"),
                    customer_id=CustomerId(f"cus_{worker}"),
                    text=TEXTS[i % len(TEXTS)],
                )
            )

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return per_thread * threads / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the database files go")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    results: dict[str, Any] = {}
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".sqlite-sync-") as tmp:
        for threads in (1, args.threads):
            rates: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
            for _ in range(args.rounds):  # interleaved, so that a busy moment hurts both levels alike
                for level in rates:
                    rates[level].append(ingest_rate(Path(tmp), level, args.messages, threads))
            for level, values in rates.items():
                results[f"{level.lower()}_{threads}t"] = {
                    "median_msgs_per_s": round(statistics.median(values), 1),
                    "runs": [round(v, 1) for v in values],
                }
    print(f"{'level':<8}{'threads':>8}{'median msg/s':>14}  runs")
    for key, value in results.items():
        level, threads_label = key.split("_")
        runs = ", ".join(f"{v:.0f}" for v in value["runs"])
        print(f"{level.upper():<8}{threads_label[:-1]:>8}{value['median_msgs_per_s']:>14.0f}  {runs}")
    for threads in (1, args.threads):
        full, normal = results[f"full_{threads}t"], results[f"normal_{threads}t"]
        ratio = full["median_msgs_per_s"] / normal["median_msgs_per_s"]
        print(f"FULL / NORMAL with {threads} thread(s): {ratio:.0%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
