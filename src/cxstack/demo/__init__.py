"""The Northwind Outfitters demo: a realistic workspace, its customers, scripted conversations, a back office.

The workspace turns the public ABCD customer-service policy (Chen et al., 2021) into cxstack's six layers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

_DEMO_DIR = Path(__file__).resolve().parent


def demo_workspace_path() -> Path:
    return _DEMO_DIR / "workspace"


def demo_customers_csv() -> Path:
    return _DEMO_DIR / "customers.csv"


def demo_conversations_path() -> Path:
    return _DEMO_DIR / "conversations.jsonl"


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
