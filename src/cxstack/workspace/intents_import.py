"""Grow intents.yaml from a labelled help-desk export (`text,intent` CSV).

intents.yaml is a file people edit, so it is rewritten with ruamel.yaml's round-trip mode: comments, key
order and quoting survive; only new examples and new draft intents are appended. New intents are drafts with
the `human` mechanism: importing data never switches automation on, a person decides that.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from cxstack.workspace.roundtrip import detect_indent, roundtrip_yaml, yaml_scalar
from cxstack.workspace.validate import INTENTS_FILE

REQUIRED_COLUMNS = ("text", "intent")


class ImportFailed(ValueError):
    """The CSV or intents.yaml cannot be used; the message says what to change."""


@dataclass(slots=True)
class ImportReport:
    csv_file: str
    rows_read: int = 0
    added: dict[str, int] = field(default_factory=dict)  # intent -> new examples
    duplicates_skipped: int = 0  # already an example of that intent (or repeated in the CSV)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (text, existing intent, csv intent)
    intents_created: list[str] = field(default_factory=list)
    rows_skipped: int = 0  # blank text or blank intent

    @property
    def total_added(self) -> int:
        return sum(self.added.values())

    def summary(self) -> str:
        lines = [
            f"Imported {self.total_added} new example(s) from {self.csv_file} ({self.rows_read} rows read)."
        ]
        lines.extend(f"  {intent}: +{count}" for intent, count in self.added.items() if count)
        if self.intents_created:
            lines.append(
                f"Created {len(self.intents_created)} draft intent(s): {', '.join(self.intents_created)} "
                "(mechanism: human; decide a mechanism before activating them)"
            )
        if self.duplicates_skipped:
            lines.append(f"Skipped {self.duplicates_skipped} duplicate example(s).")
        if self.conflicts:
            lines.append(f"Skipped {len(self.conflicts)} example(s) already listed under another intent:")
            lines.extend(
                f"  {text!r}: in {existing}, labelled {label}" for text, existing, label in self.conflicts
            )
        if self.rows_skipped:
            lines.append(f"Skipped {self.rows_skipped} row(s) with an empty text or intent.")
        return "\n".join(lines)


def normalise_example(text: str) -> str:
    return " ".join(text.casefold().split())


def read_labelled_csv(csv_path: Path) -> tuple[list[tuple[str, str]], int]:
    """(text, intent) pairs in file order, and the number of rows skipped for a blank text or intent."""
    try:
        raw = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{csv_path.name} is not UTF-8 text ({exc.reason}); export it as UTF-8") from None
    rows = [row for row in csv.reader(io.StringIO(raw)) if any(cell.strip() for cell in row)]
    if not rows:
        raise ImportFailed(f"{csv_path.name} is empty; expected a header row with columns text,intent")
    header = [cell.strip().lower() for cell in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImportFailed(
            f"{csv_path.name} has no {' or '.join(repr(c) for c in missing)} column "
            f"(found: {', '.join(header) or 'nothing'}); the export needs columns text and intent"
        )
    text_at, intent_at = header.index("text"), header.index("intent")
    pairs: list[tuple[str, str]] = []
    skipped = 0
    for row in rows[1:]:
        text = row[text_at].strip() if text_at < len(row) else ""
        intent = row[intent_at].strip() if intent_at < len(row) else ""
        if not text or not intent:
            skipped += 1
            continue
        pairs.append((" ".join(text.split()), intent))
    return pairs, skipped


def _last_chain(node: Any) -> list[tuple[dict[Any, Any], Any, int]]:
    """The comment slots of the last element, the last element of that, and so on, outermost first.

    ruamel attaches the comment lines that follow a block to its deepest last element; appending after that
    element would otherwise put the new item below comments that introduce whatever comes next.
    """
    chain: list[tuple[dict[Any, Any], Any, int]] = []
    while isinstance(node, CommentedSeq | CommentedMap) and len(node) and not node.fa.flow_style():
        if isinstance(node, CommentedSeq):
            chain.append((node.ca.items, len(node) - 1, 0))
            node = node[-1]
        else:
            key = list(node)[-1]
            chain.append((node.ca.items, key, 2))
            node = node[key]
    return chain


def _detach_trailing_comment(container: Any) -> str | None:
    """Remove and return the full comment lines below the last element (its end-of-line comment stays)."""
    for items, key, slot in reversed(_last_chain(container)):
        entry = items.get(key)
        token = entry[slot] if entry is not None and len(entry) > slot else None
        if not isinstance(token, CommentToken) or "\n" not in token.value:
            continue
        head, tail = token.value.split("\n", 1)
        if not tail.strip():
            continue
        if head.strip():
            token.value = head + "\n"
        else:
            entry[slot] = None
        return tail
    return None


def _attach_trailing_comment(container: Any, tail: str) -> None:
    chain = _last_chain(container)
    if not chain:
        return
    items, key, slot = chain[-1]
    entry = items.setdefault(key, [None, None, None, None])
    token = entry[slot]
    if isinstance(token, CommentToken):
        token.value = token.value.rstrip("\n") + "\n" + tail
    else:
        entry[slot] = CommentToken("\n" + tail, CommentMark(0))


def import_examples(workspace_path: Path, csv_path: Path) -> ImportReport:
    """Add the CSV's examples to intents.yaml: new ones only, new intents as drafts. Returns what it did."""
    workspace_path, csv_path = Path(workspace_path), Path(csv_path)
    pairs, skipped = read_labelled_csv(csv_path)
    report = ImportReport(csv_file=csv_path.name, rows_read=len(pairs) + skipped, rows_skipped=skipped)

    intents_path = workspace_path / INTENTS_FILE
    yaml = roundtrip_yaml()
    original = intents_path.read_text(encoding="utf-8") if intents_path.exists() else ""
    sequence_indent, offset = detect_indent(original)
    yaml.indent(mapping=2, sequence=sequence_indent, offset=offset)
    try:
        document: Any = yaml.load(original) if original.strip() else None
    except Exception as exc:  # ruamel raises several unrelated error types for bad YAML
        raise ImportFailed(
            f"{INTENTS_FILE} is not valid YAML; run `cxstack validate` first ({exc})"
        ) from None
    if document is None:
        document = CommentedMap([("version", 1), ("intents", CommentedSeq())])
    if not isinstance(document, CommentedMap):
        raise ImportFailed(f"{INTENTS_FILE} must be a mapping with an `intents:` list")
    if document.get("intents") is None:
        document["intents"] = CommentedSeq()
    intents = document["intents"]
    if not isinstance(intents, list) or not all(isinstance(i, dict) and "name" in i for i in intents):
        raise ImportFailed(f"{INTENTS_FILE}: `intents` must be a list of intents with a `name`")

    by_name: dict[str, Any] = {str(i["name"]): i for i in intents}
    owner_of: dict[str, str] = {}
    for name, intent in by_name.items():
        for example in intent.get("examples") or []:
            owner_of.setdefault(normalise_example(str(example)), name)

    moved_comments: list[tuple[Any, str]] = []

    def before_append(container: Any) -> None:
        if any(c is container for c, _ in moved_comments):
            return
        tail = _detach_trailing_comment(container)
        moved_comments.append((container, tail or ""))

    for text, label in pairs:
        key = normalise_example(text)
        existing = owner_of.get(key)
        if existing == label:
            report.duplicates_skipped += 1
            continue
        if existing is not None:
            report.conflicts.append((text, existing, label))
            continue
        intent = by_name.get(label)
        if intent is None:
            intent = CommentedMap(
                [
                    ("name", yaml_scalar(label)),
                    ("description", f"Imported from {csv_path.name}; decide a mechanism"),
                    ("mechanism", "human"),
                    ("owner", ""),
                    ("status", "draft"),
                    ("examples", CommentedSeq()),
                ]
            )
            before_append(intents)
            intents.append(intent)
            by_name[label] = intent
            report.intents_created.append(label)
        if intent.get("examples") is None:
            intent["examples"] = CommentedSeq()
        before_append(intent["examples"])
        intent["examples"].append(yaml_scalar(text))
        owner_of[key] = label
        report.added[label] = report.added.get(label, 0) + 1

    for container, tail in reversed(moved_comments):
        if tail:
            _attach_trailing_comment(container, tail)
    if report.total_added or report.intents_created:
        buffer = io.StringIO()
        yaml.dump(document, buffer)
        intents_path.write_text(buffer.getvalue(), encoding="utf-8")
    return report
