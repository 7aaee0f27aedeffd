"""The scale benchmark's path, tiny: one API process and one `cxstack worker` on PostgreSQL (real processes,
the real HTTP API, the demo back office), then the check by id. Keeps the benchmark from rotting; the embedded
row differs only in how the deployment starts (`serve --runtime process`, as benchmarks/faults.py runs it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from benchmarks import scale
from tests.store_fixtures import PG_URL

pytest.importorskip("procrastinate")


@pytest.mark.postgres
def test_the_scale_benchmark_runs_small_and_loses_nothing(tmp_path: Path) -> None:
    if os.environ.get("CXSTACK_SKIP_PG") == "1":
        pytest.skip("CXSTACK_SKIP_PG=1")
    out = tmp_path / "scale.json"
    tiny = ["--messages", "12", "--conversations", "3", "--workers", "1", "--no-embedded"]
    tiny += ["--embedder", "hashing", "--pg-url", PG_URL, "--router-cache", str(tmp_path / "cache")]
    scale.main([*tiny, "--json", str(out)])
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert row["deployment"] == "procrastinate, 1 worker(s)"
    assert (row["lost"], row["doubled"]) == (0, 0), row["problems"]
    assert row["answered_in_time"] == row["acknowledged"] == 12
    assert row["counts"]["answered_once"] == 12, "every message answered by exactly one turn"
    assert row["counts"]["replies_sent"] == row["counts"]["replies"] > 0
    assert row["drained"] and row["turns_per_s"] > 0 and row["ratio_to_ideal"] == 1.0
    assert row["ingest_ms"]["n"] == 12 and row["e2e_ms"]["p50"] >= row["ingest_ms"]["p50"]
