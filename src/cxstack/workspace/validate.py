"""Check a workspace folder and report every problem with its file, line and a suggested fix.

Validation never stops at the first problem: each file is parsed on its own, schema errors are collected from
pydantic and mapped back to the line of the offending YAML key (through the composed YAML node tree), and the
cross-reference checks run on every item that did parse, so one typo does not hide ten other problems.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import typing
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import UnionType
from typing import Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ValidationError

from cxstack.workspace.models import (
    EXPERIMENT_METRICS,
    ActionCatalogue,
    ActionConfig,
    AgentConfig,
    AgentFile,
    Condition,
    Experiments,
    FactConfig,
    IntentCatalogue,
    IntentConfig,
    KnowledgeFile,
    PolicyRule,
    Rubric,
    StrategyConfig,
    TierConfig,
    WorkspaceSettings,
)


def registered_mechanisms() -> tuple[str, ...]:
    """Mechanisms with a resolver installed (entry point group `cxstack.resolvers`); `human` always."""
    from importlib.metadata import entry_points

    return tuple(sorted({e.name for e in entry_points(group="cxstack.resolvers")} | {"human"}))


# What validate accepts by default: only mechanisms that something can actually resolve. `agent` and
# `multi_agent` are reserved for LLM-backed resolvers and are refused until one is installed.
DEFAULT_MECHANISMS: tuple[str, ...] = registered_mechanisms()
_RESERVED_MECHANISMS = {"agent", "multi_agent"}
MIN_EXAMPLES_FOR_AUTOMATION = 5

SETTINGS_FILE = "cxstack.yaml"
STRATEGY_FILE = "strategy.yaml"
INTENTS_FILE = "intents.yaml"
ACTIONS_FILE = "actions.yaml"
RUBRIC_FILE = "rubric.yaml"
EXPERIMENTS_FILE = "experiments.yaml"
KNOWLEDGE_DIR = "knowledge"
AGENTS_DIR = "agents"
# Long human-written articles are ingested into facts by a separate step; the loader does not read them.
ARTICLES_DIR = "articles"
KNOWN_TOP_LEVEL_FILES = (
    SETTINGS_FILE,
    STRATEGY_FILE,
    INTENTS_FILE,
    ACTIONS_FILE,
    RUBRIC_FILE,
    EXPERIMENTS_FILE,
)

Severity = Literal["error", "warning"]
Loc = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str  # relative to the workspace root, with forward slashes
    line: int | None
    column: int | None
    message: str
    fix: str = ""
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        label = "warning: " if self.severity == "warning" else ""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}: {label}{self.message}{fix}"

    def __str__(self) -> str:
        return self.format()


class WorkspaceInvalid(Exception):
    """The workspace has errors; `problems` holds all of them (and the warnings found on the way)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        errors = [p for p in self.problems if p.is_error]
        lines = [p.format() for p in errors] or [p.format() for p in self.problems]
        super().__init__(f"workspace has {len(errors)} error(s):\n" + "\n".join(lines))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]


# --- YAML documents that remember where every value came from -----------------------------------------------


@dataclass(slots=True)
class _Doc:
    rel: str
    node: yaml.Node | None
    data: Any
    line_offset: int = 0  # Markdown front matter starts below the opening `---`

    def locate(self, loc: Loc) -> tuple[int | None, int | None, int]:
        """Line and column (1-based) of the deepest node on `loc`, and how many parts of `loc` were found.

        A mapping key is reported at the key itself; a sequence item at the item. A part that is not found
        is a missing or unknown key (reported at its parent) or a pydantic union tag such as `str`.
        """
        if self.node is None:
            return None, None, 0
        current: yaml.Node = self.node
        mark = current.start_mark
        found = 0
        for part in loc:
            if isinstance(current, yaml.MappingNode) and isinstance(part, str):
                for key_node, value_node in current.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                        mark = key_node.start_mark
                        current = value_node
                        break
                else:
                    break
            elif (
                isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value)
            ):
                current = current.value[part]
                mark = current.start_mark
            else:
                break
            found += 1
        return mark.line + 1 + self.line_offset, mark.column + 1, found


def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Parsed(typing.NamedTuple):
    node: yaml.Node | None
    data: Any


def _parse_yaml(text: str) -> _Parsed:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return _Parsed(node, data)


def _duplicate_keys(node: yaml.Node | None) -> Iterable[tuple[yaml.Node, str]]:
    """PyYAML silently keeps the last of two equal keys; a person almost never means that."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    yield key_node, key_node.value
                seen.add(key_node.value)
            yield from _duplicate_keys(value_node)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


# --- schema errors ------------------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The type inside `X | None`, `list[X]`, `dict[str, X]`, `tuple[X, ...]`, or the annotation itself."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else annotation
    return annotation


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """Which pydantic model a `loc` path ends in, to suggest the keys it allows."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str) or part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin is list and isinstance(part, int):
            current = args[0]
        elif origin is dict and isinstance(part, str):
            current = args[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


# How to fix the common type errors, by pydantic error type.
_TYPE_FIXES = {
    "int_parsing": "write a whole number, e.g. 3",
    "int_type": "write a whole number, e.g. 3",
    "int_from_float": "write a whole number, e.g. 3",
    "float_parsing": "write a number, e.g. 0.5",
    "float_type": "write a number, e.g. 0.5",
    "decimal_parsing": "write a number, e.g. 500",
    "decimal_type": "write a number, e.g. 500",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write text; quote it if YAML reads it as a number, date or boolean ('yes', '2024-01-01')",
    "list_type": "write a list: [a, b] or one `- item` per line",
    "dict_type": "write a mapping: `key: value` lines indented under the key",
    "model_type": "write a mapping of the keys this section takes",
    "date_from_datetime_parsing": "write a date as YYYY-MM-DD",
    "date_parsing": "write a date as YYYY-MM-DD",
    "date_type": "write a date as YYYY-MM-DD",
    "tuple_type": "write a list of two items, e.g. [9, 17]",
    "too_short": "add at least one item",
    "string_too_short": "write a non-empty value",
}
_BOUND_WORDS = {
    "greater_than_equal": "at least",
    "less_than_equal": "at most",
    "greater_than": "above",
    "less_than": "below",
}


def _schema_problems(doc: _Doc, model: type[BaseModel], error: ValidationError) -> list[Problem]:
    merged: dict[Loc, tuple[int | None, int | None, list[str], str]] = {}
    for detail in error.errors(include_url=False):
        loc: Loc = tuple(detail["loc"])
        line, column, found = doc.locate(loc)
        kind = detail["type"]
        # Past the deepest node, only a missing or unknown key is a real key; anything else is a union tag.
        shown = loc if kind in ("missing", "extra_forbidden") else loc[:found]
        fix = ""
        if kind == "extra_forbidden":
            key = str(loc[-1])
            parent = _model_at(model, loc[:-1])
            allowed = sorted(parent.model_fields) if parent is not None else []
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            message = f"unknown key `{key}`" + (f" in {format_loc(loc[:-1])}" if loc[:-1] else "")
            if close:
                fix = f"did you mean `{close[0]}`?"
            elif allowed:
                fix = f"remove it; allowed keys: {', '.join(allowed)}"
        elif kind == "missing":
            message = f"{format_loc(shown)}: required key is missing"
            fix = f"add `{loc[-1]}:`"
        else:
            message = f"{format_loc(shown)}: {detail['msg']}" if shown else str(detail["msg"])
            context = detail.get("ctx") or {}
            expected = context.get("expected")
            if kind == "literal_error" and expected:
                fix = f"use one of {expected}"
            elif isinstance(context.get("fix"), str):
                fix = context["fix"]  # a model's own validator says how to fix it
            else:
                fix = _TYPE_FIXES.get(kind, "")
                if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
                    bound = next(iter(context.values()), None)
                    fix = f"use a number {_BOUND_WORDS[kind]} {bound}"
        if shown in merged and kind != "extra_forbidden":
            merged[shown][2].append(str(detail["msg"]))
            continue
        merged[shown if kind != "extra_forbidden" else loc] = (line, column, [message], fix)
    problems = []
    for _, (line, column, messages, fix) in merged.items():
        message = (
            messages[0] if len(messages) == 1 else messages[0] + " (or: " + "; ".join(messages[1:]) + ")"
        )
        problems.append(Problem(doc.rel, line, column, message, fix))
    return problems


# --- the result of checking a workspace ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sourced(Generic[T]):
    """A parsed item and where it came from, so later checks can point at its line."""

    item: T
    doc: _Doc
    loc: Loc  # path of the item inside its document


@dataclass(slots=True)
class WorkspaceCheck:
    """Everything validation parsed and every problem it found. Parsed parts are None when a file failed."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    settings: WorkspaceSettings | None = None
    strategy: StrategyConfig | None = None
    intents: list[Sourced[IntentConfig]] = field(default_factory=list)
    # Names declared in a file even by items with schema errors, so a reference to them is not reported
    # as unknown on top of the schema error; None when the file could not be read at all.
    declared_intents: set[str] | None = None
    facts: list[Sourced[FactConfig]] = field(default_factory=list)
    facts_ok: bool = True
    actions: list[Sourced[ActionConfig]] = field(default_factory=list)
    declared_actions: set[str] | None = field(default_factory=set)
    rubric: Rubric = field(default_factory=Rubric)
    experiments: Experiments = field(default_factory=Experiments)
    agents: list[Sourced[AgentConfig]] = field(default_factory=list)
    docs: dict[str, _Doc] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(
        self,
        doc: _Doc | str,
        loc: Loc,
        message: str,
        fix: str = "",
        severity: Severity = "error",
    ) -> None:
        if isinstance(doc, str):
            self.problems.append(Problem(doc, None, None, message, fix, severity))
            return
        line, column, _ = doc.locate(loc)
        self.problems.append(Problem(doc.rel, line, column, message, fix, severity))


def _read_doc(
    check: WorkspaceCheck, path: Path, rel: str, text: str | None = None, line_offset: int = 0
) -> _Doc | None:
    if text is None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            check.add(rel, (), f"not UTF-8 text: {exc.reason}", "save the file as UTF-8")
            return None
    try:
        node, data = _parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 + line_offset if mark else None
        column = mark.column + 1 if mark else None
        what = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        check.problems.append(
            Problem(rel, line, column, f"YAML syntax error: {what}", "fix the indentation or quoting")
        )
        return None
    except yaml.YAMLError as exc:
        check.add(rel, (), f"YAML syntax error: {exc}", "fix the YAML syntax")
        return None
    doc = _Doc(rel, node, data, line_offset)
    for key_node, key in _duplicate_keys(node):
        check.problems.append(
            Problem(
                rel,
                key_node.start_mark.line + 1 + line_offset,
                key_node.start_mark.column + 1,
                f"key `{key}` appears twice in the same mapping; only the last one would count",
                "remove or merge one of them",
            )
        )
    check.docs[rel] = doc
    return doc


def _validate_model(check: WorkspaceCheck, doc: _Doc, model: type[ModelT], data: Any) -> ModelT | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        check.problems.extend(_schema_problems(doc, model, exc))
        return None


def _quiet(model: type[ModelT], data: Any) -> ModelT | None:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _mapping_doc(check: WorkspaceCheck, root: Path, name: str, *, required: bool, hint: str) -> _Doc | None:
    path = root / name
    if not path.is_file():
        if required:
            check.add(name, (), f"{name} is missing", hint)
        return None
    doc = _read_doc(check, path, name)
    if doc is None:
        return None
    if doc.data is None:
        check.add(doc, (), f"{name} is empty", hint)
        return None
    if not isinstance(doc.data, dict):
        check.add(doc, (), f"{name} must be a mapping of keys to values", hint)
        return None
    return doc


def _raw_names(doc: _Doc, key: str, name_field: str) -> set[str]:
    raw = doc.data.get(key) if isinstance(doc.data, dict) else None
    items = raw if isinstance(raw, list) else []
    return {str(item[name_field]) for item in items if isinstance(item, dict) and name_field in item}


def _salvage_items(check: WorkspaceCheck, doc: _Doc, key: str, model: type[ModelT]) -> list[Sourced[ModelT]]:
    """The items of a list that are valid on their own, so cross-references are checked even for a file
    with a schema error somewhere else."""
    raw = doc.data.get(key) if isinstance(doc.data, dict) else None
    if not isinstance(raw, list):
        return []
    found = []
    for index, item in enumerate(raw):
        parsed = _quiet(model, item)
        if parsed is not None:
            found.append(Sourced(parsed, doc, (key, index)))
    return found


# --- reading each file --------------------------------------------------------------------------------------


def _load_files(check: WorkspaceCheck) -> None:
    root = check.root
    doc = _mapping_doc(
        check, root, SETTINGS_FILE, required=True, hint="create it with at least `name: my-team`"
    )
    if doc is not None:
        check.settings = _validate_model(check, doc, WorkspaceSettings, doc.data)

    doc = _mapping_doc(check, root, STRATEGY_FILE, required=True, hint="create it with at least `version: 1`")
    if doc is not None:
        check.strategy = _validate_model(check, doc, StrategyConfig, doc.data)

    doc = _mapping_doc(
        check, root, INTENTS_FILE, required=True, hint="create it with `intents:` and a list of intents"
    )
    if doc is not None:
        catalogue = _validate_model(check, doc, IntentCatalogue, doc.data)
        if catalogue is not None or isinstance(doc.data.get("intents"), list):
            check.declared_intents = _raw_names(doc, "intents", "name")
        check.intents = _salvage_items(check, doc, "intents", IntentConfig)

    doc = _mapping_doc(
        check, root, ACTIONS_FILE, required=False, hint="add `actions:` with a list of actions"
    )
    if doc is not None:
        _validate_model(check, doc, ActionCatalogue, doc.data)
        check.declared_actions = (
            _raw_names(doc, "actions", "name") if isinstance(doc.data.get("actions"), list) else None
        )
        check.actions = _salvage_items(check, doc, "actions", ActionConfig)
    elif (root / ACTIONS_FILE).exists():
        check.declared_actions = None

    doc = _mapping_doc(check, root, RUBRIC_FILE, required=False, hint="add `criteria:`")
    if doc is not None:
        check.rubric = _validate_model(check, doc, Rubric, doc.data) or Rubric()

    doc = _mapping_doc(check, root, EXPERIMENTS_FILE, required=False, hint="add `experiments:`")
    if doc is not None:
        check.experiments = _validate_model(check, doc, Experiments, doc.data) or Experiments()

    _load_knowledge(check)
    _load_agents(check)

    for path in sorted(root.glob("*.y*ml")):
        if path.name not in KNOWN_TOP_LEVEL_FILES and path.suffix in (".yaml", ".yml"):
            close = difflib.get_close_matches(path.name, KNOWN_TOP_LEVEL_FILES, n=1, cutoff=0.6)
            check.add(
                path.name,
                (),
                "cxstack does not read this file",
                f"rename it to {close[0]}" if close else "move it out of the workspace root",
                "warning",
            )


def _knowledge_files(root: Path) -> list[Path]:
    base = root / KNOWLEDGE_DIR
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.rglob("*")):
        parts = path.relative_to(base).parts
        if parts[0] == ARTICLES_DIR or any(p.startswith(".") for p in parts) or not path.is_file():
            continue
        if path.suffix.lower() in (".yaml", ".yml", ".md"):
            found.append(path)
    return found


_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?$\n?(.*)\Z", re.DOTALL | re.MULTILINE)


def _load_knowledge(check: WorkspaceCheck) -> None:
    for path in _knowledge_files(check.root):
        rel = path.relative_to(check.root).as_posix()
        if path.suffix.lower() == ".md":
            _load_markdown_fact(check, path, rel)
            continue
        doc = _read_doc(check, path, rel)
        if doc is None:
            check.facts_ok = False
            continue
        if doc.data is None:
            check.add(
                doc,
                (),
                "knowledge file is empty",
                "add `facts:` with a list of facts, or delete it",
                "warning",
            )
            continue
        if not isinstance(doc.data, dict):
            check.add(
                doc, (), "a knowledge file must be a mapping with `facts:`", "put the facts under `facts:`"
            )
            check.facts_ok = False
            continue
        if _validate_model(check, doc, KnowledgeFile, doc.data) is None:
            check.facts_ok = False
        check.facts.extend(_salvage_items(check, doc, "facts", FactConfig))


def _load_markdown_fact(check: WorkspaceCheck, path: Path, rel: str) -> None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        check.add(rel, (), f"not UTF-8 text: {exc.reason}", "save the file as UTF-8")
        check.facts_ok = False
        return
    match = _FRONT_MATTER.match(text)
    if match is None:
        check.add(
            rel,
            (),
            "a Markdown fact needs YAML front matter between two `---` lines",
            "start the file with `---`, then `id:` and `owner:`, then `---` and the fact text; "
            "long articles belong in knowledge/articles/",
        )
        check.facts_ok = False
        return
    front, body = match.group(1), match.group(2).strip()
    doc = _read_doc(check, path, rel, text=front, line_offset=1)
    if doc is None:
        check.facts_ok = False
        return
    if not isinstance(doc.data, dict):
        check.add(doc, (), "front matter must be a mapping (id, owner, tags, ...)", "add `id:` and `owner:`")
        check.facts_ok = False
        return
    data = dict(doc.data)
    if "text" in data and body:
        check.add(
            doc, ("text",), "fact text is given twice: in front matter and in the body", "keep one of them"
        )
        check.facts_ok = False
        return
    if body:
        # A fact is one statement: the line breaks an editor wraps a long body with are not part of it.
        data["text"] = " ".join(body.split())
    fact = _validate_model(check, doc, FactConfig, data)
    if fact is None:
        check.facts_ok = False
        return
    check.facts.append(Sourced(fact, doc, ()))


# --- cross-reference and quality checks ---------------------------------------------------------------------


def _normalise_example(text: str) -> str:
    return " ".join(text.casefold().split())


def _suggest(name: str, candidates: Iterable[str], otherwise: str) -> str:
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return otherwise + (f" (known: {', '.join(pool)})" if pool and len(pool) <= 12 else "")


def _duplicates(
    check: WorkspaceCheck,
    items: Sequence[Sourced[T]],
    key: str,
    what: str,
    name_of: typing.Callable[[T], str],
) -> None:
    first_seen: dict[str, Sourced[T]] = {}
    for sourced in items:
        name = name_of(sourced.item)
        if name in first_seen:
            earlier = first_seen[name]
            line, _, _ = earlier.doc.locate(earlier.loc)
            where = f"{earlier.doc.rel}:{line}" if line else earlier.doc.rel
            check.add(
                sourced.doc,
                (*sourced.loc, key),
                f"duplicate {what} `{name}` (first defined at {where})",
                f"rename or remove one of the two {what}s",
            )
        else:
            first_seen[name] = sourced


def _known_queues(settings: WorkspaceSettings) -> set[str]:
    return {q.name for q in settings.escalation.queues} | {settings.escalation.default_queue}


def _check_settings(check: WorkspaceCheck) -> None:
    settings, doc = check.settings, check.docs.get(SETTINGS_FILE)
    if settings is None or doc is None:
        return
    from importlib.metadata import entry_points

    judges = sorted(ep.name for ep in entry_points(group="cxstack.judges"))
    if settings.monitoring.judge not in judges:
        check.add(
            doc,
            ("monitoring", "judge"),
            f"no judge named `{settings.monitoring.judge}`",
            f"use one of {', '.join(judges)} (plug-ins register in the `cxstack.judges` entry point group)",
        )
    if settings.monitoring.judge == "llm" and settings.llm is None:
        fix = "add an `llm:` block, or use the offline judge"
        check.add(doc, ("monitoring", "judge"), "the llm judge needs a model", fix, "warning")
    queues = settings.escalation.queues
    counts = Counter(q.name for q in queues)
    for index, queue in enumerate(queues):
        if counts[queue.name] > 1 and [q.name for q in queues].index(queue.name) != index:
            check.add(
                doc, ("escalation", "queues", index, "name"), f"duplicate queue `{queue.name}`", "remove one"
            )
    if queues and settings.escalation.default_queue not in counts:
        check.add(
            doc,
            ("escalation", "default_queue"),
            f"default queue `{settings.escalation.default_queue}` is not one of escalation.queues",
            "add it to escalation.queues or pick one of them",
            "warning",
        )
    queue_names = _known_queues(settings)
    for index, name in enumerate(settings.helpdesk.queues or []):
        if name not in queue_names:
            fix = _suggest(name, queue_names, "add the queue to escalation.queues, or remove it here")
            check.add(doc, ("helpdesk", "queues", index), f"helpdesk exports unknown queue `{name}`", fix)
    allowed = {"scope", "name", "team", "team_cap", "value", "prompt", "question"}
    for reply_name, template in settings.replies.model_dump().items():
        try:
            fields = {p[1] for p in string.Formatter().parse(str(template)) if p[1] is not None}
        except ValueError as exc:
            check.add(
                doc,
                ("replies", reply_name),
                f"replies.{reply_name}: {exc}",
                "balance the braces; write {{ and }} for literal braces",
            )
            continue
        unknown = sorted(fields - allowed)
        if unknown:
            named = ", ".join("{" + u + "}" for u in unknown)
            known = ", ".join("{" + a + "}" for a in sorted(allowed))
            check.add(
                doc,
                ("replies", reply_name),
                f"replies.{reply_name} uses unknown placeholder(s) {named}; the customer would see them as "
                "written",
                _suggest(unknown[0], allowed, f"use {known}"),
            )
    thresholds = settings.thresholds
    if thresholds.answer_min_confidence <= thresholds.knowledge_min_score:
        check.add(
            doc,
            ("thresholds", "answer_min_confidence"),
            f"answer_min_confidence ({thresholds.answer_min_confidence:g}) is not above "
            f"knowledge_min_score ({thresholds.knowledge_min_score:g}): every grounded answer clears it, so "
            "an unsure content answer is never held back",
            "set answer_min_confidence above knowledge_min_score",
            "warning",
        )
    if thresholds.human_min_confidence < thresholds.route_min_confidence:
        check.add(
            doc,
            ("thresholds", "human_min_confidence"),
            "human_min_confidence is below route_min_confidence, so it never asks before calling a person",
            "raise it (0.6 is the default)",
            "warning",
        )
    if thresholds.clarify_margin >= 1 - thresholds.route_min_confidence:
        check.add(
            doc,
            ("thresholds", "clarify_margin"),
            "clarify_margin is so wide that every confident prediction would ask a clarifying question",
            "lower clarify_margin (0.1 is typical)",
            "warning",
        )


def _check_strategy(check: WorkspaceCheck, intent_names: set[str] | None) -> None:
    doc = check.docs.get(STRATEGY_FILE)
    if doc is None:
        return
    strategy = check.strategy
    if strategy is not None:
        tiers = [Sourced(t, doc, ("tiers", i)) for i, t in enumerate(strategy.tiers)]
        rules = [Sourced(r, doc, ("rules", i)) for i, r in enumerate(strategy.rules)]
    else:
        tiers = _salvage_items(check, doc, "tiers", TierConfig)
        rules = _salvage_items(check, doc, "rules", PolicyRule)
    timezone = doc.data.get("timezone") if isinstance(doc.data, dict) else None
    if isinstance(timezone, str):
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            check.add(
                doc,
                ("timezone",),
                f"unknown time zone `{timezone}`",
                "use an IANA name such as Europe/Paris or America/New_York",
            )
    _duplicates(check, tiers, "name", "tier", lambda t: t.name)
    _duplicates(check, rules, "id", "rule", lambda r: r.id)
    for sourced in tiers:
        tier = sourced.item
        if tier.min_arr is not None and tier.max_arr is not None and tier.min_arr >= tier.max_arr:
            check.add(
                doc,
                (*sourced.loc, "min_arr"),
                f"tier `{tier.name}`: min_arr {tier.min_arr:g} is not below max_arr {tier.max_arr:g}; "
                "no customer can match",
                "swap or correct the bounds",
            )
    tier_names = {t.item.name for t in tiers}
    data = doc.data if isinstance(doc.data, dict) else {}
    default_tier = (
        strategy.default_tier if strategy is not None else str(data.get("default_tier", "standard"))
    )
    tier_names_with_default = tier_names | {default_tier}
    queues = _known_queues(check.settings) if check.settings is not None else None
    for sourced_rule in rules:
        _check_rule(check, doc, sourced_rule, intent_names, tier_names_with_default, queues)


def _check_names(
    check: WorkspaceCheck,
    doc: _Doc,
    loc: Loc,
    names: Sequence[str] | None,
    known: set[str] | None,
    what: str,
    rule_id: str,
) -> None:
    if names is None or known is None:
        return
    for index, name in enumerate(names):
        if name not in known:
            check.add(
                doc,
                (*loc, index),
                f"rule `{rule_id}` names unknown {what} `{name}`",
                _suggest(name, known, f"use a {what} that exists"),
            )


def _check_rule(
    check: WorkspaceCheck,
    doc: _Doc,
    sourced: Sourced[PolicyRule],
    intent_names: set[str] | None,
    tier_names: set[str],
    queues: set[str] | None,
) -> None:
    rule, loc = sourced.item, sourced.loc
    when: Condition = rule.when
    _check_names(check, doc, (*loc, "when", "intent_in"), when.intent_in, intent_names, "intent", rule.id)
    _check_names(
        check, doc, (*loc, "when", "intent_not_in"), when.intent_not_in, intent_names, "intent", rule.id
    )
    _check_names(check, doc, (*loc, "when", "tier_in"), when.tier_in, tier_names, "tier", rule.id)
    if queues is not None and rule.then.queue is not None and rule.then.queue not in queues:
        check.add(
            doc,
            (*loc, "then", "queue"),
            f"rule `{rule.id}` sends to unknown queue `{rule.then.queue}`",
            _suggest(rule.then.queue, queues, "add the queue to escalation.queues in cxstack.yaml"),
        )
    if when.arr_gte is not None and when.arr_lt is not None and when.arr_gte >= when.arr_lt:
        check.add(
            doc,
            (*loc, "when", "arr_gte"),
            f"rule `{rule.id}` can never fire: arr_gte >= arr_lt",
            "fix the bounds",
            "warning",
        )
    if when.amount_gt is not None and when.amount_lte is not None and when.amount_gt >= when.amount_lte:
        check.add(
            doc,
            (*loc, "when", "amount_gt"),
            f"rule `{rule.id}` can never fire: amount_gt >= amount_lte",
            "fix the bounds",
            "warning",
        )
    if when.hours_between is not None:
        start, end = when.hours_between
        if not (0 <= start <= 23 and 0 <= end <= 24):
            check.add(
                doc,
                (*loc, "when", "hours_between"),
                f"rule `{rule.id}`: hours_between must be [start 0-23, end 0-24], got [{start}, {end}]",
                "use local hours, e.g. [18, 8] for 18:00 to 08:00",
            )
        elif start == end:
            check.add(
                doc,
                (*loc, "when", "hours_between"),
                f"rule `{rule.id}` can never fire: hours_between is an empty window [{start}, {end}]",
                "drop hours_between to match all day",
                "warning",
            )
    if rule.then == rule.then.__class__():
        check.add(
            doc,
            (*loc, "then"),
            f"rule `{rule.id}` has no effect",
            "set force_human, priority, queue, ...",
            "warning",
        )


def _check_intents(check: WorkspaceCheck, known_mechanisms: Collection[str]) -> None:
    doc = check.docs.get(INTENTS_FILE)
    if doc is None:
        return
    intents = check.intents
    _duplicates(check, intents, "name", "intent", lambda i: i.name)
    action_names = {a.item.name for a in check.actions}
    queues = _known_queues(check.settings) if check.settings is not None else None
    mechanisms = set(known_mechanisms) | {"human"}
    fact_tags = {tag for f in check.facts for tag in f.item.tags}
    example_owner: dict[str, tuple[str, Sourced[IntentConfig], int]] = {}
    for sourced in intents:
        intent, loc = sourced.item, sourced.loc
        if intent.mechanism in _RESERVED_MECHANISMS and intent.mechanism not in mechanisms:
            check.add(
                doc,
                (*loc, "mechanism"),
                f"intent `{intent.name}`: no resolver for mechanism `{intent.mechanism}` is installed; every "
                "message for it would be escalated as an internal error",
                f"use one of {', '.join(sorted(mechanisms))}",
            )
        elif intent.mechanism not in mechanisms:
            check.add(
                doc,
                (*loc, "mechanism"),
                f"intent `{intent.name}`: unknown mechanism `{intent.mechanism}`",
                _suggest(intent.mechanism, mechanisms, "use a registered mechanism"),
            )
        if intent.fallback is not None:
            if intent.fallback not in mechanisms:
                check.add(
                    doc,
                    (*loc, "fallback"),
                    f"intent `{intent.name}`: fallback names unknown mechanism `{intent.fallback}`",
                    _suggest(intent.fallback, mechanisms, "use a registered mechanism"),
                )
            elif intent.fallback == intent.mechanism:
                check.add(
                    doc,
                    (*loc, "fallback"),
                    f"intent `{intent.name}`: fallback is the same mechanism as the first attempt",
                    "use `human`, or remove fallback",
                    "warning",
                )
        if intent.never_automate and intent.mechanism != "human":
            check.add(
                doc,
                (*loc, "mechanism"),
                f"intent `{intent.name}` is never_automate but its mechanism is `{intent.mechanism}`",
                "set mechanism: human",
            )
        if intent.never_automate and intent.fallback not in (None, "human"):
            check.add(
                doc,
                (*loc, "fallback"),
                f"intent `{intent.name}` is never_automate but falls back to `{intent.fallback}`",
                "set fallback: human or remove it",
            )
        if intent.mechanism == "action" and intent.action is None:
            check.add(
                doc,
                (*loc, "mechanism"),
                f"intent `{intent.name}` uses mechanism action but names no `action`",
                "add `action:` with the name of an action in actions.yaml",
            )
        declared_actions = check.declared_actions
        if (
            intent.action is not None
            and declared_actions is not None
            and intent.action not in declared_actions
        ):
            check.add(
                doc,
                (*loc, "action"),
                f"intent `{intent.name}` names unknown action `{intent.action}`",
                _suggest(intent.action, action_names, "define it in actions.yaml"),
            )
        if intent.action is not None and intent.mechanism not in ("action", "agent", "multi_agent"):
            check.add(
                doc,
                (*loc, "action"),
                f"intent `{intent.name}` names action `{intent.action}` but its mechanism is "
                f"`{intent.mechanism}`, which does not call actions",
                "set mechanism: action, or remove `action`",
                "warning",
            )
        if queues is not None and intent.queue is not None and intent.queue not in queues:
            check.add(
                doc,
                (*loc, "queue"),
                f"intent `{intent.name}` names unknown queue `{intent.queue}`",
                _suggest(intent.queue, queues, "add the queue to escalation.queues in cxstack.yaml"),
            )
        if check.facts_ok:
            for index, tag in enumerate(intent.fact_tags):
                if tag not in fact_tags:
                    check.add(
                        doc,
                        (*loc, "fact_tags", index),
                        f"intent `{intent.name}`: no fact carries tag `{tag}`",
                        _suggest(tag, fact_tags, "tag some facts with it, or remove it"),
                        "warning",
                    )
        automated = intent.status == "active" and intent.mechanism != "human" and not intent.never_automate
        if automated and len(intent.examples) < MIN_EXAMPLES_FOR_AUTOMATION:
            check.add(
                doc,
                (*loc, "examples"),
                f"intent `{intent.name}` is automated with only {len(intent.examples)} example(s); "
                "the router will rarely recognise it",
                f"add at least {MIN_EXAMPLES_FOR_AUTOMATION} varied examples",
                "warning",
            )
        _check_examples(check, doc, sourced, example_owner)


def _check_examples(
    check: WorkspaceCheck,
    doc: _Doc,
    sourced: Sourced[IntentConfig],
    example_owner: dict[str, tuple[str, Sourced[IntentConfig], int]],
) -> None:
    intent = sourced.item
    for index, example in enumerate(intent.examples):
        key = _normalise_example(example)
        if not key:
            check.add(doc, (*sourced.loc, "examples", index), "empty example", "remove it")
            continue
        if key not in example_owner:
            example_owner[key] = (intent.name, sourced, index)
            continue
        owner, owner_sourced, owner_index = example_owner[key]
        if owner == intent.name:
            check.add(
                doc,
                (*sourced.loc, "examples", index),
                f"intent `{intent.name}` lists the example {example!r} twice",
                "remove the repeat",
                "warning",
            )
        else:
            line, _, _ = doc.locate((*owner_sourced.loc, "examples", owner_index))
            check.add(
                doc,
                (*sourced.loc, "examples", index),
                f"example {example!r} is under both `{owner}` (line {line}) and `{intent.name}`",
                "keep it under the one intent it belongs to",
            )


def _check_facts(check: WorkspaceCheck, today: date) -> None:
    _duplicates(check, check.facts, "id", "fact id", lambda f: f.id)
    intent_names = check.declared_intents
    for sourced in check.facts:
        fact, doc, loc = sourced.item, sourced.doc, sourced.loc
        if intent_names is not None:
            for index, name in enumerate(fact.intents):
                if name not in intent_names:
                    check.add(
                        doc,
                        (*loc, "intents", index),
                        f"fact `{fact.id}` names unknown intent `{name}`",
                        _suggest(name, intent_names, "use an intent from intents.yaml"),
                    )
        if not fact.text.strip():
            check.add(doc, (*loc, "text"), f"fact `{fact.id}` has empty text", "write the fact, or remove it")
        tier_names = {t.name for t in check.strategy.tiers} if check.strategy is not None else None
        for index, tier in enumerate(fact.audience.tiers):
            if tier_names is not None and tier not in tier_names:
                check.add(
                    doc,
                    (*loc, "audience", "tiers", index),
                    f"fact `{fact.id}` is for unknown tier `{tier}`: no customer would ever see it",
                    _suggest(tier, tier_names, "use a tier from strategy.yaml"),
                )
        languages = set(check.settings.languages or [check.settings.language]) if check.settings else None
        for index, locale in enumerate(fact.audience.locales):
            if languages is not None and locale.lower().split("-")[0] not in languages:
                check.add(
                    doc,
                    (*loc, "audience", "locales", index),
                    f"fact `{fact.id}` is for locale `{locale}`, a language the workspace does not answer in",
                    f"add it to cxstack.yaml's languages, or use one of: {', '.join(sorted(languages))}",
                    "warning",
                )
        if fact.valid_from and fact.valid_to and fact.valid_from > fact.valid_to:
            check.add(
                doc,
                (*loc, "valid_from"),
                f"fact `{fact.id}`: valid_from {fact.valid_from} is after valid_to {fact.valid_to}",
                "swap or correct the dates",
            )
        if fact.valid_to is not None and fact.valid_to < today:
            check.add(
                doc,
                (*loc, "valid_to"),
                f"fact `{fact.id}` expired on {fact.valid_to} and will not be used",
                "remove the fact, or extend valid_to",
                "warning",
            )
        if fact.review_by is not None and fact.review_by < today:
            check.add(
                doc,
                (*loc, "review_by"),
                f"fact `{fact.id}` was due for review on {fact.review_by}",
                f"ask {fact.owner or 'its owner'} to review it and move review_by forward",
                "warning",
            )


def _check_actions(check: WorkspaceCheck) -> None:
    _duplicates(check, check.actions, "name", "action", lambda a: a.name)
    connectors = set(check.settings.connectors) if check.settings is not None else None
    for sourced in check.actions:
        action, doc, loc = sourced.item, sourced.doc, sourced.loc
        slot_names = [s.name for s in action.slots]
        for index, name in enumerate(slot_names):
            if name in slot_names[:index]:
                check.add(
                    doc,
                    (*loc, "slots", index, "name"),
                    f"action `{action.name}`: duplicate slot `{name}`",
                    "rename or remove one",
                )
        try:
            placeholders = [p[1] for p in string.Formatter().parse(action.path) if p[1] is not None]
        except ValueError as exc:
            check.add(
                doc, (*loc, "path"), f"action `{action.name}`: bad path template: {exc}", "balance the braces"
            )
            placeholders = []
        for placeholder in placeholders:
            if placeholder not in slot_names:
                check.add(
                    doc,
                    (*loc, "path"),
                    f"action `{action.name}`: path placeholder `{{{placeholder}}}` is not a slot",
                    _suggest(placeholder, slot_names, f"add a slot named `{placeholder}`"),
                )
        for body_field, slot in (action.body or {}).items():
            if slot not in slot_names:
                check.add(
                    doc,
                    (*loc, "body", body_field),
                    f"action `{action.name}`: body field `{body_field}` maps to unknown slot `{slot}`",
                    _suggest(slot, slot_names, "use one of the action's slots"),
                )
        if action.amount_slot is not None and action.amount_slot not in slot_names:
            check.add(
                doc,
                (*loc, "amount_slot"),
                f"action `{action.name}`: amount_slot `{action.amount_slot}` is not a slot",
                _suggest(action.amount_slot, slot_names, "name one of the action's slots"),
            )
        if connectors is not None and action.connector not in connectors:
            check.add(
                doc,
                (*loc, "connector"),
                f"action `{action.name}` uses connector `{action.connector}`, not defined in cxstack.yaml",
                _suggest(
                    action.connector,
                    connectors,
                    f"add `connectors: {{{action.connector}: {{base_url: ...}}}}`",
                ),
            )
        for index, slot_config in enumerate(action.slots):
            if slot_config.pattern is None:
                continue
            try:
                compiled = re.compile(slot_config.pattern)
            except re.error as exc:
                check.add(
                    doc,
                    (*loc, "slots", index, "pattern"),
                    f"action `{action.name}`: slot `{slot_config.name}` pattern does not compile: {exc}",
                    "fix the regular expression (in YAML, single quotes keep backslashes as written)",
                )
                continue
            if compiled.groups > 1:
                check.add(
                    doc,
                    (*loc, "slots", index, "pattern"),
                    f"action `{action.name}`: slot `{slot_config.name}` pattern has {compiled.groups} "
                    "groups; only the first is used",
                    "make the other groups non-capturing: (?:...)",
                    "warning",
                )


def _check_money_actions(check: WorkspaceCheck) -> None:
    """A money action declares its cap, and its amount comes only from the customer's words."""
    workspace_currency = check.settings.currency if check.settings is not None else None
    for sourced in check.actions:
        action, doc, loc = sourced.item, sourced.doc, sourced.loc
        money_slots = [(i, s) for i, s in enumerate(action.slots) if s.type == "money"]
        amount_slot = next((s for s in action.slots if s.name == action.amount_slot), None)
        if amount_slot is not None and amount_slot.type != "money":
            index = action.slots.index(amount_slot)
            check.add(
                doc,
                (*loc, "slots", index, "type"),
                f"action `{action.name}`: amount_slot `{amount_slot.name}` is a {amount_slot.type} slot, "
                "so its amount would not be read as money",
                "set `type: money` on it (and drop its pattern)",
            )
        for index, slot in money_slots:
            if action.amount_slot is not None and slot.name != action.amount_slot:
                check.add(
                    doc,
                    (*loc, "slots", index, "type"),
                    f"action `{action.name}`: money slot `{slot.name}` is not the action's amount_slot, "
                    "so no cap would apply to it",
                    "make it the amount_slot, or give it another type",
                )
            for key, value, why in (
                ("default", slot.default, "a default is an amount the customer never wrote"),
                ("from_customer", slot.from_customer, "an amount is never taken from the profile"),
                ("pattern", slot.pattern, "money is read by cxstack's one money parser"),
            ):
                if value is not None:
                    check.add(
                        doc,
                        (*loc, "slots", index, key),
                        f"action `{action.name}`: money slot `{slot.name}` has `{key}`; {why}",
                        f"remove `{key}`",
                    )
        if len(money_slots) > 1 and action.amount_slot is None:
            check.add(
                doc,
                (*loc, "slots"),
                f"action `{action.name}` has {len(money_slots)} money slots and no amount_slot",
                "keep one money slot and name it in `amount_slot:`",
            )
        if action.moves_money and action.max_amount is None:
            check.add(
                doc,
                (*loc, "amount_slot") if action.amount_slot else (*loc, "name"),
                f"action `{action.name}` moves money but declares no max_amount; it would never run "
                "without a person",
                "add `max_amount:` with the most it may move without a person (e.g. `max_amount: 100`)",
            )
        if action.max_amount is not None and not action.moves_money:
            check.add(
                doc,
                (*loc, "max_amount"),
                f"action `{action.name}` has max_amount but no money slot, so there is nothing to cap",
                "add a `type: money` slot and name it in `amount_slot:`, or remove max_amount",
                "warning",
            )
        if action.currency and workspace_currency and action.currency != workspace_currency:
            check.add(
                doc,
                (*loc, "currency"),
                f"action `{action.name}` takes {action.currency} but the workspace is in "
                f"{workspace_currency}; rule caps (cap_amount) are in the workspace currency, so a rule "
                "cap on it hands off instead",
                "use the workspace currency, or rely on max_amount alone",
                "warning",
            )


def _check_unreachable_caps(check: WorkspaceCheck) -> None:
    """A rule's cap_amount only limits money actions; a cap no money action can meet protects nothing."""
    doc = check.docs.get(STRATEGY_FILE)
    if doc is None or check.declared_intents is None or check.declared_actions is None:
        return
    if check.strategy is not None:
        rules = [Sourced(r, doc, ("rules", i)) for i, r in enumerate(check.strategy.rules)]
    else:
        rules = _salvage_items(check, doc, "rules", PolicyRule)
    money_actions = {a.item.name for a in check.actions if a.item.moves_money}
    agent_actions = {a.item.name: set(a.item.actions) for a in check.agents}
    intent_actions = {
        i.item.name: {i.item.action, *agent_actions.get(i.item.agent or "", set())} for i in check.intents
    }
    money_intents = {name for name, actions in intent_actions.items() if actions & money_actions}
    for sourced in rules:
        rule = sourced.item
        if rule.then.cap_amount is None:
            continue
        when = rule.when
        if when.intent_in is not None:
            reachable = money_intents & set(when.intent_in)
            where = f"none of its intents ({', '.join(when.intent_in)}) runs a money action"
        else:
            reachable = money_intents - set(when.intent_not_in or ())
            where = "no intent it can match runs a money action"
        if not reachable:
            check.add(
                doc,
                (*sourced.loc, "then", "cap_amount"),
                f"rule `{rule.id}` caps amounts but {where}, so the cap never limits anything",
                "list an intent whose action has an amount_slot in `when.intent_in`, or set `max_amount` "
                "on the action itself and remove this rule",
            )


def _load_agents(check: WorkspaceCheck) -> None:
    base = check.root / AGENTS_DIR
    if not base.is_dir():
        return
    for path in sorted([*base.glob("*.yaml"), *base.glob("*.yml")]):
        rel = path.relative_to(check.root).as_posix()
        doc = _read_doc(check, path, rel)
        if doc is None or doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            check.add(
                doc, (), "an agents file must be a mapping with `agents:`", "put the agents under `agents:`"
            )
            continue
        _validate_model(check, doc, AgentFile, doc.data)
        check.agents.extend(_salvage_items(check, doc, "agents", AgentConfig))


def _check_agents(check: WorkspaceCheck) -> None:
    """Every name an agent or an intent uses resolves; slot schemas are valid JSON schemas."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    agents = {a.item.name for a in check.agents}
    actions = {a.item.name: a.item for a in check.actions}
    _duplicates(check, check.agents, "name", "agent", lambda a: a.name)
    for sourced in check.agents:
        agent, doc, loc = sourced.item, sourced.doc, sourced.loc
        for index, name in enumerate(agent.actions):
            action = actions.get(name)
            if action is None and check.declared_actions is not None:
                check.add(
                    doc,
                    (*loc, "actions", index),
                    f"agent `{agent.name}` names unknown action `{name}`",
                    _suggest(name, actions, "define it in actions.yaml"),
                )
            elif action is not None and action.agents is not None and agent.name not in action.agents:
                check.add(
                    doc,
                    (*loc, "actions", index),
                    f"agent `{agent.name}` lists action `{name}`, whose `agents` do not include it",
                    f"add {agent.name} to the action's agents, or remove the action here",
                )
        if agent.exit.after_action is not None and agent.exit.after_action not in agent.actions:
            check.add(
                doc,
                (*loc, "exit", "after_action"),
                f"agent `{agent.name}` exits after `{agent.exit.after_action}`, which it may not call",
                "name one of its `actions`",
            )
        for index, other in enumerate(agent.handoff_to):
            if other not in agents:
                check.add(
                    doc,
                    (*loc, "handoff_to", index),
                    f"agent `{agent.name}` hands off to unknown agent `{other}`",
                    _suggest(other, agents, "define it in agents/"),
                )
        for slot, schema in agent.slots.items():
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as error:
                check.add(
                    doc,
                    (*loc, "slots", slot),
                    f"slot `{slot}` of agent `{agent.name}` has an invalid JSON schema: {error.message}",
                    "write a JSON schema such as {type: number, exclusiveMinimum: 0}",
                )
    for sourced_intent in check.intents:
        intent, doc = sourced_intent.item, sourced_intent.doc
        if intent.mechanism == "agent" and intent.agent is None and not intent.never_automate:
            check.add(
                doc,
                (*sourced_intent.loc, "mechanism"),
                f"intent `{intent.name}` uses mechanism agent but names no `agent`",
                "add `agent:` with the name of an agent in agents/",
            )
        if intent.mechanism == "multi_agent" and len(intent.agents) < 2 and not intent.never_automate:
            check.add(
                doc,
                (*sourced_intent.loc, "agents"),
                f"intent `{intent.name}` uses mechanism multi_agent but names "
                f"{'one agent' if intent.agents else 'no agents'}",
                "list two or more agents under `agents:` (for one, use mechanism agent)",
            )
        if intent.agents and intent.mechanism != "multi_agent":
            check.add(
                doc,
                (*sourced_intent.loc, "agents"),
                f"intent `{intent.name}` lists `agents` but its mechanism is `{intent.mechanism}`",
                "set mechanism: multi_agent, or remove `agents`",
                "warning",
            )
        for index, name in enumerate(intent.agents):
            if name not in agents:
                check.add(
                    doc,
                    (*sourced_intent.loc, "agents", index),
                    f"intent `{intent.name}` names unknown agent `{name}`",
                    _suggest(name, agents, "define it in a file in agents/"),
                )
        if intent.agent is not None and intent.agent not in agents:
            check.add(
                doc,
                (*sourced_intent.loc, "agent"),
                f"intent `{intent.name}` names unknown agent `{intent.agent}`",
                _suggest(intent.agent, agents, "define it in a file in agents/"),
            )


def _check_rubric_and_experiments(check: WorkspaceCheck) -> None:
    doc = check.docs.get(RUBRIC_FILE)
    if doc is not None:
        criteria = [Sourced(c, doc, ("criteria", i)) for i, c in enumerate(check.rubric.criteria)]
        _duplicates(check, criteria, "id", "criterion", lambda c: c.id)
        for sourced in criteria:
            low, high = sourced.item.scale
            if low >= high:
                check.add(
                    doc, (*sourced.loc, "scale"), f"criterion `{sourced.item.id}`: empty scale", "use [1, 5]"
                )
    doc = check.docs.get(EXPERIMENTS_FILE)
    if doc is not None:
        experiments = [
            Sourced(e, doc, ("experiments", i)) for i, e in enumerate(check.experiments.experiments)
        ]
        _duplicates(check, experiments, "id", "experiment", lambda e: e.id)
        for sourced_experiment in experiments:
            experiment = sourced_experiment.item
            for variant in experiment.allocation:
                if variant not in experiment.variants:
                    check.add(
                        doc,
                        (*sourced_experiment.loc, "allocation", variant),
                        f"experiment `{experiment.id}` allocates traffic to unknown variant `{variant}`",
                        _suggest(variant, experiment.variants, "define it under variants"),
                    )
            total = sum(experiment.allocation.values())
            if experiment.allocation and abs(total - 1.0) > 1e-6:
                check.add(
                    doc,
                    (*sourced_experiment.loc, "allocation"),
                    f"experiment `{experiment.id}`: allocation sums to {total:g}, not 1",
                    "make the shares add up to 1",
                )
            if any(share < 0 for share in experiment.allocation.values()):
                check.add(
                    doc,
                    (*sourced_experiment.loc, "allocation"),
                    f"experiment `{experiment.id}`: a share is negative",
                    "give each variant a share between 0 and 1",
                )
            if experiment.status == "running" and not experiment.allocation:
                check.add(
                    doc,
                    (*sourced_experiment.loc, "allocation"),
                    f"experiment `{experiment.id}` is running but allocates no traffic",
                    "give each variant its share",
                )
            if experiment.variants and experiment.control not in experiment.variants:
                check.add(
                    doc,
                    (*sourced_experiment.loc, "control"),
                    f"experiment `{experiment.id}`: its control `{experiment.control}` is not a variant",
                    _suggest(experiment.control, experiment.variants, "name the variant to compare against"),
                )
            for index, metric in enumerate(experiment.metrics):
                if metric not in EXPERIMENT_METRICS:
                    check.add(
                        doc,
                        (*sourced_experiment.loc, "metrics", index),
                        f"experiment `{experiment.id}`: cxstack does not measure `{metric}`",
                        f"use one of {', '.join(EXPERIMENT_METRICS)}",
                        "warning",
                    )
        from cxstack.workspace.variants import overlapping_keys

        for first, second, path in overlapping_keys(check.experiments.experiments):
            at = next(e for e in experiments if e.item.id == second)
            check.add(
                doc,
                (*at.loc, "variants"),
                f"running experiments `{first}` and `{second}` both change `{path}`: a conversation in both "
                "could not tell which change it saw",
                "stop one of them, or change different settings",
            )


def _check_variants(check: WorkspaceCheck) -> None:
    """Each variant of an experiment that is not a draft, applied to the workspace, must pass this same
    validation: a variant that would fail is refused before it starts."""
    doc = check.docs.get(EXPERIMENTS_FILE)
    live = [e for e in check.experiments.experiments if e.status != "draft" and e.variants]
    if doc is None or not live or check.settings is None or check.strategy is None:
        return
    from cxstack.workspace.builtin import with_builtin_intents
    from cxstack.workspace.variants import variant_problems
    from cxstack.workspace.workspace import Workspace

    workspace = Workspace(
        settings=check.settings,
        strategy=check.strategy,
        intents=with_builtin_intents(tuple(s.item for s in check.intents)),
        facts=tuple(s.item for s in check.facts),
        actions=tuple(s.item for s in check.actions),
        rubric=check.rubric,
        agents=tuple(s.item for s in check.agents),
    )
    for index, experiment in enumerate(check.experiments.experiments):
        if experiment not in live:
            continue
        for name, overrides in experiment.variants.items():
            for problem in variant_problems(workspace, overrides or {}):
                check.add(
                    doc,
                    ("experiments", index, "variants", name),
                    f"experiment `{experiment.id}`, variant `{name}` would not validate: {problem}",
                )


def _check_identity(check: WorkspaceCheck) -> None:
    """Who may run an action on what (resolution/identity.py): checks that cannot work are errors."""
    actions = {a.item.name: a for a in check.actions}
    for sourced in check.actions:
        action, doc, loc = sourced.item, sourced.doc, sourced.loc
        from_profile = [i for i, s in enumerate(action.slots) if s.from_customer]
        if action.public and from_profile:
            check.add(
                doc,
                (*loc, "slots", from_profile[0], "from_customer"),
                f"action `{action.name}` is public but fills a slot from the customer profile; an anonymous "
                "customer has no profile, so it could never run for them",
                "make it not public, or take the value from the message instead",
            )
        owner = action.owner
        if owner is None:
            in_path = {p[1] for p in string.Formatter().parse(action.path) if p[1]}
            asks_for_object = any(
                s.type == "string" and not s.from_customer and s.name in in_path for s in action.slots
            )
            if asks_for_object and not action.public:
                check.add(
                    doc,
                    (*loc, "path"),
                    f"action `{action.name}` takes an object id from the customer but has no owner check: "
                    "any verified customer could reach any object by typing its id",
                    "add `owner: {field: <owner field of the response>}` (and check_with for a write)",
                    "warning",
                )
            continue
        if owner.check_with is None and action.method != "GET":
            check.add(
                doc,
                (*loc, "owner"),
                f"action `{action.name}` changes something ({action.method}) and checks ownership on its own "
                "answer, which comes after the change",
                "add `check_with: <a GET action taking the same id>` to check before the change",
            )
        if owner.check_with is not None:
            checker = actions.get(owner.check_with)
            if checker is None:
                check.add(
                    doc,
                    (*loc, "owner", "check_with"),
                    f"action `{action.name}` checks ownership with unknown action `{owner.check_with}`",
                    _suggest(owner.check_with, actions, "name a GET action of actions.yaml"),
                )
            else:
                if checker.item.method != "GET":
                    check.add(
                        doc,
                        (*loc, "owner", "check_with"),
                        f"action `{action.name}` checks ownership with `{checker.item.name}`, which is a "
                        f"{checker.item.method}: the check must not change anything",
                        "use a GET action",
                    )
                own_slots = {s.name for s in action.slots}
                needed = [s.name for s in checker.item.slots if s.required and s.name not in own_slots]
                if needed:
                    check.add(
                        doc,
                        (*loc, "owner", "check_with"),
                        f"action `{action.name}` checks ownership with `{checker.item.name}`, which needs "
                        f"slot(s) {', '.join(needed)} that `{action.name}` does not have",
                        "check with an action that takes the same id",
                    )
    settings = check.settings
    verification = settings.identity.verification if settings is not None else None
    settings_doc = check.docs.get(SETTINGS_FILE)
    if verification is not None and settings_doc is not None:
        doc = settings_doc
        checker = actions.get(verification.action)
        if checker is None:
            check.add(
                doc,
                ("identity", "verification", "action"),
                f"identity.verification names unknown action `{verification.action}`",
                _suggest(verification.action, actions, "declare it in actions.yaml"),
            )
        elif not checker.item.public:
            check.add(
                doc,
                ("identity", "verification", "action"),
                f"verification action `{verification.action}` is not public, so an anonymous customer "
                "could never run it",
                "add `public: true` to it in actions.yaml",
            )


def _check_connectors(check: WorkspaceCheck) -> None:
    """Connector secrets are ${ENV} references; a literal credential in a workspace file is an error."""
    from cxstack.domain.secrets import is_sensitive, references

    settings, doc = check.settings, check.docs.get(SETTINGS_FILE)
    if settings is None or doc is None:
        return
    registered = _connector_types()
    for name, connector in settings.connectors.items():
        if registered and connector.type not in registered:
            check.add(
                doc,
                ("connectors", name, "type"),
                f"connector `{name}` has type `{connector.type}`, which no installed plug-in provides",
                _suggest(connector.type, registered, "install the plug-in or use type: http"),
            )
        for header, value in connector.headers.items():
            names = references(value)
            if is_sensitive(header) and not names:
                check.add(
                    doc,
                    ("connectors", name, "headers", header),
                    f"connector `{name}`: header `{header}` holds a literal credential; workspace files are "
                    "versioned and stored, so a secret written here leaks",
                    f"write it as ${{{name.upper()}_{_env_name(header)}}} and set that environment variable",
                )
            unset = [n for n in names if not os.environ.get(n)]
            if unset:
                check.add(
                    doc,
                    ("connectors", name, "headers", header),
                    f"connector `{name}`: header `{header}` references {', '.join(unset)}, not set in this "
                    "environment; serve refuses to start without it",
                    f"export {unset[0]}=...",
                    "warning",
                )


def _env_name(header: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", header).upper().strip("_")


def _connector_types() -> set[str]:
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="cxstack.action_connectors")}


def _check_attribute_rules(check: WorkspaceCheck) -> None:
    """A rule on a customer attribute must be able to match the attribute's declared type."""
    from cxstack.domain.attributes import AttributeTypeError, coerce_attribute

    strategy, doc = check.strategy, check.docs.get(STRATEGY_FILE)
    if strategy is None or doc is None:
        return
    declared = strategy.attributes
    for index, rule in enumerate(strategy.rules):
        for key, expected in (rule.when.attributes or {}).items():
            loc = ("rules", index, "when", "attributes", key)
            kind = declared.get(key)
            if kind is None:
                check.add(
                    doc,
                    loc,
                    f"rule `{rule.id}` tests attribute `{key}`, which strategy.yaml does not declare; "
                    "imported values are then compared as text",
                    f"declare it: `attributes: {{{key}: boolean}}` (or string, number, date)",
                    "warning",
                )
                continue
            try:
                coerce_attribute(expected, kind)
            except AttributeTypeError as exc:
                check.add(
                    doc,
                    loc,
                    f"rule `{rule.id}` can never fire: attribute `{key}` is a {kind}, and {exc}",
                    f"use a {kind} value" + (" (true or false)" if kind == "boolean" else ""),
                )


def check_workspace(
    path: Path, *, known_mechanisms: Collection[str] = DEFAULT_MECHANISMS, today: date | None = None
) -> WorkspaceCheck:
    """Parse and check every file of a workspace. Never raises for a problem in the workspace itself."""
    root = Path(path)
    check = WorkspaceCheck(root=root)
    if not root.is_dir():
        check.add(str(root), (), "workspace folder not found", "pass the folder that holds cxstack.yaml")
        return check
    _load_files(check)
    intent_names = check.declared_intents
    _check_settings(check)
    _check_strategy(check, intent_names)
    _check_intents(check, known_mechanisms)
    _check_facts(check, today or date.today())
    _check_actions(check)
    _check_money_actions(check)
    _check_unreachable_caps(check)
    _check_identity(check)
    _check_connectors(check)
    _check_attribute_rules(check)
    _check_rubric_and_experiments(check)
    _check_agents(check)
    if check.ok:
        _check_variants(check)
    order = {name: i for i, name in enumerate(KNOWN_TOP_LEVEL_FILES)}
    check.problems.sort(key=lambda p: (order.get(p.file, len(order)), p.file, p.line or 0, p.column or 0))
    return check


def validate_workspace(
    path: Path, known_mechanisms: Collection[str] = DEFAULT_MECHANISMS, *, today: date | None = None
) -> list[Problem]:
    """Every problem in the workspace at `path`, errors and warnings, sorted by file and line."""
    return check_workspace(path, known_mechanisms=known_mechanisms, today=today).problems
