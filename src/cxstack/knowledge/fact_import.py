"""Bulk import of facts from other systems: JSONL or CSV, one fact per line or row, into a new knowledge file.

Every record is checked before anything is written (the whole file or nothing): required fields, the fact
model, ids unique in the file and new to the workspace. Records: `{"id", "text", "subject"?, "tags"?,
"owner"?, "source"?}`; in CSV, tags are separated by `;` or `,`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cxstack.workspace.models import FactConfig

MAX_BYTES = 50 * 1024 * 1024
FIELDS = ("id", "text", "subject", "tags", "owner", "source")


@dataclass(frozen=True, slots=True)
class ImportProblem:
    line: int
    message: str

    def format(self, path: Path) -> str:
        return f"{path}:{self.line}: {self.message}"


class FactImportError(Exception):
    def __init__(self, problems: Sequence[ImportProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s); nothing was imported")
        self.problems = list(problems)


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for each line (JSONL) or row (CSV, by extension)."""
    if path.stat().st_size > MAX_BYTES:
        raise FactImportError([ImportProblem(0, f"file over {MAX_BYTES // (1024 * 1024)} MB; split it")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FactImportError(
            [ImportProblem(0, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from exc
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        unknown = [f for f in reader.fieldnames or [] if f not in FIELDS]
        if unknown or "id" not in (reader.fieldnames or []) or "text" not in (reader.fieldnames or []):
            raise FactImportError(
                [ImportProblem(1, f"CSV header must name id and text (and may name {', '.join(FIELDS[2:])})")]
            )
        return [(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}) for row in reader]
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[ImportProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(ImportProblem(number, f"not JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict):
            problems.append(ImportProblem(number, "a line must be a JSON object"))
            continue
        records.append((number, record))
    if problems:
        raise FactImportError(problems)
    return records


def to_facts(
    records: Iterable[tuple[int, dict[str, Any]]],
    *,
    existing_ids: set[str],
    default_owner: str | None,
    status: str = "published",
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda items: items,
) -> list[FactConfig]:
    facts: list[FactConfig] = []
    problems: list[ImportProblem] = []
    seen: dict[str, int] = {}
    for number, record in progress(list(records)):
        unknown = sorted(set(record) - set(FIELDS))
        if unknown:
            problems.append(ImportProblem(number, f"unknown field(s) {', '.join(unknown)}"))
            continue
        tags = record.get("tags", [])
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.replace(";", ",").split(",") if t.strip()]
        owner = record.get("owner") or default_owner
        if not owner:
            problems.append(ImportProblem(number, "no owner: add an owner field, or pass --owner"))
            continue
        try:
            fact = FactConfig(
                id=str(record.get("id", "")).strip(),
                text=str(record.get("text", "")).strip(),
                owner=owner,
                subject=record.get("subject"),
                tags=tags,
                sources=[record["source"]] if record.get("source") else [],
                status=status,
            )
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append(ImportProblem(number, detail))
            continue
        if not fact.id or not fact.text:
            problems.append(ImportProblem(number, "id and text are required"))
            continue
        if fact.id in existing_ids:
            problems.append(ImportProblem(number, f"fact id `{fact.id}` is already in the workspace"))
            continue
        if fact.id in seen:
            problems.append(ImportProblem(number, f"fact id `{fact.id}` repeats line {seen[fact.id]}"))
            continue
        seen[fact.id] = number
        facts.append(fact)
    if problems:
        raise FactImportError(problems)
    return facts


def knowledge_yaml(facts: Sequence[FactConfig], source: str) -> str:
    items = [fact.model_dump(mode="json", exclude_defaults=True) for fact in facts]
    body = yaml.safe_dump({"version": 1, "facts": items}, sort_keys=False, allow_unicode=True, width=110)
    return f"# Imported from {source} by `cxstack kb import`.\n{body}"
