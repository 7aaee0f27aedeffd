"""Write one fact back into the workspace file that holds it, the way a person would have edited it.

The workspace files stay the source of truth (teams keep knowledge in git), so an edit made through the API or
a rollback must land in the same file, in the same place, with the other facts, the comments and the unchanged
fields exactly as they were. YAML files are rewritten with ruamel.yaml's round-trip mode; a Markdown fact gets
its front matter updated the same way and its body replaced. Fields at their default are left out, as people
write them; the file still reads back as the very same fact (`FactConfig` equality), which the caller checks.
"""

from __future__ import annotations

import io
import re
import textwrap
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml as pyyaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from cxstack.workspace.models import FactConfig
from cxstack.workspace.roundtrip import detect_indent, roundtrip_yaml, yaml_scalar
from cxstack.workspace.validate import KNOWLEDGE_DIR, check_workspace

# Key order for a fact written from scratch: what a reader needs first.
_KEY_ORDER = (
    "id",
    "subject",
    "text",
    "owner",
    "status",
    "review_by",
    "valid_from",
    "valid_to",
    "tags",
    "intents",
    "audience",
    "sources",
)
_FRONT_MATTER = re.compile(r"\A(---[ \t]*\r?\n)(.*?)(^---[ \t]*\r?$\n?)(.*)\Z", re.DOTALL | re.MULTILINE)


class FactFileError(ValueError):
    """The fact's file cannot be rewritten (not found, not a mapping with `facts:`, not valid YAML)."""


@dataclass(frozen=True, slots=True)
class FactFileEdit:
    path: Path
    text: str  # the file's whole new content
    created: bool  # the file did not exist before


def fact_files(root: Path) -> dict[str, tuple[Path, FactConfig]]:
    """Which file holds each fact, and the fact as that file says it."""
    check = check_workspace(root)
    return {sourced.item.id: (root / sourced.doc.rel, sourced.item) for sourced in check.facts}


def file_fields(fact: FactConfig) -> dict[str, Any]:
    """The fact as a file holds it: non-default fields, dates as dates, in the usual key order."""
    dumped = fact.model_dump(mode="python", exclude_defaults=True)
    dumped.setdefault("owner", fact.owner)
    ordered = {key: dumped[key] for key in _KEY_ORDER if key in dumped}
    ordered.update({key: value for key, value in dumped.items() if key not in ordered})
    return ordered


def rewrite_fact(root: Path, fact: FactConfig, *, new_file: str = "knowledge/restored.yaml") -> FactFileEdit:
    """The new content of the file that holds `fact` (by id) with `fact` in place of the old one; a fact found
    in no file is appended to `new_file` (created when missing). Nothing is written here."""
    root = Path(root)
    found = fact_files(root).get(fact.id)
    if found is None:
        path = root / new_file
        if not path.resolve().is_relative_to((root / KNOWLEDGE_DIR).resolve()):
            raise FactFileError(f"{new_file} is not inside the workspace's {KNOWLEDGE_DIR}/ folder")
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        return FactFileEdit(
            path, _yaml_with_fact(existing, fact, path, append=True), created=not path.exists()
        )
    path, current = found
    original = path.read_text(encoding="utf-8-sig")
    if current == fact:
        return FactFileEdit(path, original, created=False)
    if path.suffix.lower() == ".md":
        return FactFileEdit(path, _markdown_with_fact(original, fact, path), created=False)
    return FactFileEdit(path, _yaml_with_fact(original, fact, path, append=False), created=False)


def _load(yaml: Any, text: str, path: Path) -> Any:
    try:
        return yaml.load(text) if text.strip() else None
    except Exception as exc:  # ruamel raises several unrelated error types for bad YAML
        raise FactFileError(f"{path.name} is not valid YAML; run `cxstack validate` first ({exc})") from None


def _yaml_with_fact(original: str, fact: FactConfig, path: Path, *, append: bool) -> str:
    """Only the fact's own lines change: the rest of the file stays byte for byte as it was (ruamel would
    re-flow every wrapped line of the file, which makes a one-fact edit a whole-file diff)."""
    try:
        node = pyyaml.compose(original) if original.strip() else None
    except pyyaml.YAMLError as exc:
        raise FactFileError(f"{path.name} is not valid YAML; run `cxstack validate` first ({exc})") from None
    if node is None:
        original = "version: 1\nfacts:\n"
    facts = _facts_node(node, path) if node is not None else None
    sequence_indent, offset = detect_indent(original)
    yaml = roundtrip_yaml()
    yaml.width = 110
    yaml.indent(mapping=2, sequence=sequence_indent, offset=offset)
    item = next((i for i in facts.value if _node_id(i) == fact.id), None) if facts else None
    if item is None:
        if not append:
            raise FactFileError(f"fact {fact.id} is no longer in {path.name}")
        column = facts.value[0].start_mark.column - 2 if facts and facts.value else offset
        text = original if original.endswith("\n") or not original else original + "\n"
        if facts is None or not facts.value:  # `facts: []` or `facts:` with nothing under it
            text = re.sub(r"^facts:.*$", "facts:", text, count=1, flags=re.MULTILINE)
        return text + _dump_item(yaml, CommentedMap(), fact, column)
    start = original.rfind("\n", 0, item.start_mark.index) + 1
    end = _end_of_line(original, _last_value_end(item))
    existing = _load(yaml, original[start:end], path)[0]
    column = item.start_mark.column - 2
    return original[:start] + _dump_item(yaml, existing, fact, column) + original[end:]


def _facts_node(node: pyyaml.Node, path: Path) -> pyyaml.SequenceNode | None:
    if not isinstance(node, pyyaml.MappingNode):
        raise FactFileError(f"{path.name} must be a mapping with a `facts:` list")
    for key, value in node.value:
        if isinstance(key, pyyaml.ScalarNode) and key.value == "facts":
            if isinstance(value, pyyaml.SequenceNode):
                return value
            if isinstance(value, pyyaml.ScalarNode) and value.value in ("", "null", "~"):
                return None
            raise FactFileError(f"{path.name}: `facts:` must be a list")
    raise FactFileError(f"{path.name} must be a mapping with a `facts:` list")


def _node_id(item: pyyaml.Node) -> str | None:
    if isinstance(item, pyyaml.MappingNode):
        for key, value in item.value:
            if (
                isinstance(key, pyyaml.ScalarNode)
                and key.value == "id"
                and isinstance(value, pyyaml.ScalarNode)
            ):
                return str(value.value)
    return None


def _last_value_end(item: pyyaml.Node) -> int:
    while isinstance(item, pyyaml.MappingNode | pyyaml.SequenceNode) and item.value and not item.flow_style:
        last = item.value[-1]
        item = last[1] if isinstance(last, tuple) else last
    return int(item.end_mark.index)


def _end_of_line(text: str, index: int) -> int:
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _dump_item(yaml: Any, existing: Any, fact: FactConfig, column: int) -> str:
    entry = existing if isinstance(existing, CommentedMap) else CommentedMap()
    _update_mapping(entry, file_fields(fact))
    out = io.StringIO()
    yaml.dump(CommentedSeq([entry]), out)
    lines = out.getvalue().splitlines()
    while lines and lines[-1].lstrip().startswith("#"):  # comments that belong below the fact stay there
        lines.pop()
    pad = " " * max(column, 0)
    # ruamel leaves a space where it folds a long line; the folded value reads back the same without it.
    return "".join(pad + line[yaml.sequence_dash_offset :].rstrip() + "\n" for line in lines)


def _markdown_with_fact(original: str, fact: FactConfig, path: Path) -> str:
    match = _FRONT_MATTER.match(original)
    if match is None:
        raise FactFileError(f"{path.name} has no YAML front matter")
    opening, front, closing, _body = match.groups()
    yaml = roundtrip_yaml()
    document = _load(yaml, front, path)
    if not isinstance(document, CommentedMap):
        raise FactFileError(f"{path.name}: front matter must be a mapping")
    fields = file_fields(fact)
    text = fields.pop("text")
    document.pop("text", None)
    _update_mapping(document, fields)
    out = io.StringIO()
    yaml.dump(document, out)
    # The loader joins the body's lines with spaces, so wrapping is lossless.
    body = textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)
    return f"{opening}{out.getvalue()}{closing}\n{body}\n"


def _update_mapping(entry: CommentedMap, wanted: dict[str, Any]) -> None:
    """Set `entry` to `wanted`, keeping each unchanged value's node (quoting, flow style, comments)."""
    for key in [k for k in entry if k not in wanted]:
        del entry[key]
    position = 0
    for key, value in wanted.items():
        if key in entry:
            if not _same(entry[key], value):
                entry[key] = _node(value)
        else:
            entry.insert(min(position, len(entry)), key, _node(value))
        position = list(entry).index(key) + 1


def _same(current: Any, value: Any) -> bool:
    if isinstance(current, dict) and isinstance(value, dict):
        return current.keys() == value.keys() and all(_same(current[k], value[k]) for k in value)
    if isinstance(current, list) and isinstance(value, list):
        return len(current) == len(value) and all(_same(a, b) for a, b in zip(current, value, strict=True))
    if isinstance(value, date) and isinstance(current, str):
        return current == value.isoformat()
    return bool(current == value)


def _node(value: Any) -> Any:
    if isinstance(value, str):
        return yaml_scalar(value)
    if isinstance(value, dict):
        return CommentedMap((k, _node(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_node(v) for v in value)
        if all(isinstance(v, str) and len(v) < 40 for v in value):
            seq.fa.set_flow_style()  # tags: [a, b], as people write short lists
        return seq
    return value
