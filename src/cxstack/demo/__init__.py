"""The Northwind Outfitters demo: a realistic workspace, its customers, scripted conversations, a back office.

The workspace turns the public ABCD customer-service policy (Chen et al., 2021) into cxstack's six layers.

The scripted conversations come in two sets, so that thresholds are chosen on one and reported on the other:
`conversations_tuning.jsonl` (choose settings here: `python -m benchmarks.demo_heldout --tune`) and
`conversations_heldout.jsonl` (report here: `python -m benchmarks.demo_heldout`). The original 119 were split
stratified by expected intent: within each intent, sorted by id and shuffled with `random.Random(5)` (one
generator, intents in sorted order), each conversation joins whichever set is smaller (tuning on a tie).
Each set then got about 20 everyday and adversarial cases of its own (ids `ev-1xx` tuning, `ev-2xx` held out).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

_DEMO_DIR = Path(__file__).resolve().parent


def demo_workspace_path() -> Path:
    return _DEMO_DIR / "workspace"


def demo_customers_csv() -> Path:
    return _DEMO_DIR / "customers.csv"


SampleSet = Literal["tuning", "heldout"]
SAMPLE_SETS: tuple[SampleSet, ...] = ("tuning", "heldout")


def demo_conversations_path(sample_set: SampleSet) -> Path:
    """The scripted conversations of one set: "tuning" (choose settings on it) or "heldout" (report on it)."""
    return _DEMO_DIR / f"conversations_{sample_set}.jsonl"


def copy_demo_workspace(dest: Path) -> None:
    """Copy the demo workspace to `dest`, which must not exist or be an empty directory."""
    if dest.exists():
        if not dest.is_dir():
            raise FileExistsError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty; choose an empty or new directory")
    shutil.copytree(
        demo_workspace_path(), dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
