"""The workspace reference (docs/reference.md), generated from the models so that it cannot drift.

Every key of every workspace file is listed with its dotted path (`actions[].slots[].name`), type, default,
allowed values and description, all read from the pydantic models in `workspace/models.py`: a new field, a
changed default or bound appears in the reference the next time it is generated, and a test fails until the
committed file is regenerated. The words around the keys (what each file is for, the built-in intents, the
mechanisms and connector types) are kept here, next to the code that renders them.

This module is pure and imports nothing above `workspace/`: what is registered through entry points
(resolvers, connectors, embedders) and the formats other layers own (replay scripts, customer CSVs) are passed
in by the caller as a `ReferenceInputs` (see `cxstack.cli.services.reference_inputs`).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from types import UnionType
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cxstack.workspace.builtin import BUILTIN_INTENTS
from cxstack.workspace.models import (
    ActionCatalogue,
    AgentFile,
    Experiments,
    FactConfig,
    IntentCatalogue,
    KnowledgeFile,
    Rubric,
    StrategyConfig,
    WorkspaceSettings,
)

REGENERATE = "cxstack docs reference --output docs/reference.md"
# Text that YAML reads back as the same text without quotes.
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_./:+-]*")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})


class ReferenceIncomplete(ValueError):
    """Something the reference must describe has no description (a field, a built-in mechanism...)."""


@dataclass(frozen=True, slots=True)
class WorkspaceFile:
    path: str
    title: str
    model: type[BaseModel]
    intro: str
    required: bool


WORKSPACE_FILES: tuple[WorkspaceFile, ...] = (
    WorkspaceFile(
        "cxstack.yaml",
        "workspace settings",
        WorkspaceSettings,
        "Who the assistant is, what it says in everyday situations, how sure it must be before it answers or "
        "hands off, the teams it hands off to, the back-office APIs it may call, and how anonymous visitors "
        "prove who they are.",
        required=True,
    ),
    WorkspaceFile(
        "strategy.yaml",
        "customers and business rules",
        StrategyConfig,
        "Who the customer is (tiers by ARR, plan and segment; typed custom attributes) and the business "
        "rules that apply to a request: send it to a person, ask for a confirmation, cap an amount, pick a "
        "queue and a priority. Every rule is checked on every message and the trace says which fired and "
        "why the others did not.",
        required=True,
    ),
    WorkspaceFile(
        "intents.yaml",
        "what customers ask for",
        IntentCatalogue,
        "Each intent is one thing customers ask for, with example messages the router learns from, and the "
        "mechanism that resolves it: an answer from facts, a back-office action, or a person.",
        required=True,
    ),
    WorkspaceFile(
        "knowledge/*.yaml",
        "facts",
        KnowledgeFile,
        "Atomic facts that content answers are made of, each with an owner and a review date. Any number of "
        "files under `knowledge/` (sub-folders too); a fact's file does not matter, its id must be unique. "
        "`knowledge/articles/` is not read: long articles are turned into facts by a separate step.",
        required=False,
    ),
    WorkspaceFile(
        "actions.yaml",
        "back-office actions",
        ActionCatalogue,
        "Calls to your back office over HTTP: what they need (slots, asked for one at a time), who may run "
        "them (verified customers, the object's owner), how much money they may move, and what the customer "
        "is told.",
        required=False,
    ),
    WorkspaceFile(
        "agents/*.yaml",
        "micro-agents",
        AgentFile,
        "Micro-agents for intents with `mechanism: agent`: instructions for a model, the actions and fact "
        "tags they may use, JSON-schema rules for slot values, when their work is done, and how many turns "
        "they may take. Any number of files under `agents/`.",
        required=False,
    ),
    WorkspaceFile(
        "rubric.yaml",
        "quality rubric",
        Rubric,
        "What people reviewing conversations score them on.",
        required=False,
    ),
    WorkspaceFile(
        "experiments.yaml",
        "experiments",
        Experiments,
        "Variants of the workspace to compare on live traffic.",
        required=False,
    ),
)

# Placeholders for the keys of a mapping whose keys the workspace author chooses.
_MAPPING_KEY_NAMES: Mapping[str, str] = {
    "connectors": "<connector>",
    "variants": "<variant>",
    "allocation": "<variant>",
    "language_queues": "<language>",
    "burst_window_ms": "<channel>",
    "attributes": "<attribute>",
    "headers": "<header>",
    "body": "<field>",
}

MECHANISMS: Mapping[str, str] = {
    "content": "Answers from the workspace's facts, composed without an LLM: the best fact above "
    "`thresholds.knowledge_min_score`, plus a second one when it adds something. No fact above it: a "
    "person (reason `no_grounded_answer`). Before it is sent, every sentence of the answer must be supported "
    "by the facts it cites (the grounding check); otherwise a person (reason `unsupported_answer`). The "
    "intent's `fact_tags` rank matching facts higher.",
    "action": "Runs the intent's `action`: fills its slots over several turns, checks identity, ownership "
    "and money caps in code, asks for a confirmation when required, calls the back office once "
    "(idempotently) and reports the result with `success_reply`.",
    "human": "Hands the conversation to a person in the intent's queue with an escalation packet "
    "(transcript, customer, rules fired, facts and actions tried). The customer is told with "
    "`replies.handoff`.",
    "conversational": "Answers greetings, thanks, goodbyes and small talk with the workspace's `replies`; "
    "never escalates. Used by the built-in intents (above).",
    "agent": "Runs the intent's micro-agent (`agent:`, a file in `agents/`). It emits typed commands — ask "
    "for a slot, call an action, answer from facts, hand off, escalate — that cxstack executes. Without an "
    "LLM it runs its actions in the declared order; with one, the model picks the command and code enforces "
    "which actions it may call, which slot values it may propose and everything the action mechanism checks.",
    "multi_agent": "Runs the intent's specialist agents (`agents:`) one after another in the same turn, "
    "with one shared context — facts used, action results, confidence so far — passed whole at every "
    "handoff. Each step's output is checked by the verifier before the next starts; a step that fails, "
    "or confidence across the steps below `thresholds.chain_min_confidence`, ends with a person and "
    "everything done so far in the packet. A step that waits for the customer resumes on the next turn.",
}
RESERVED_MECHANISMS: Mapping[str, str] = {}
CONNECTOR_TYPES: Mapping[str, str] = {
    "http": "Calls `base_url` + the action's `path` with the action's method. Sends the `headers` (with "
    "`${ENV}` references resolved at start), an `Idempotency-Key` header (the same on every retry) and the "
    "verified customer's id in `identity_header`. Retries timeouts, connection errors and 5xx answers "
    "`retries` times; a 4xx is an answer. The JSON answer's top-level fields can be used in "
    "`success_reply`. In `cxstack replay` (without `--live-actions`) a dry run: nothing is sent and the "
    "call counts as a success with an empty answer (so a `success_reply` that uses the answer's fields "
    "becomes 'Done: <action>.').",
}
EMBEDDERS: Mapping[str, str] = {
    "minilm": "all-MiniLM-L6-v2 (int8, ONNX), shipped in a registry package: the best routing, a few "
    "milliseconds per message. The default.",
    "wordllama": "Static word embeddings: faster, weaker on paraphrases.",
    "hashing": "Hashed words and character n-grams: instant and dependency-free, but it only sees shared "
    "words. For tests and quick checks of a workspace's wiring, not for judging routing quality.",
}
# The replay script format is owned by the optimization layer, whose model has no descriptions of its own.
REPLAY_DESCRIPTIONS: Mapping[str, str] = {
    "id": "A unique name for the conversation; reports and `--json` results refer to it.",
    "customer": "Who writes: the profile rules and slots see. Omitted: a customer without a profile.",
    "customer.id": "The customer's id; rules and `from_customer` slots see this profile.",
    "customer.name": "The customer's name.",
    "customer.email": "The customer's email address (a `from_customer: email` slot reads it).",
    "customer.plan": "The plan, for tiers and `plan_in` rules.",
    "customer.arr": "Annual revenue from the customer, for tiers and `arr_gte`/`arr_lt` rules.",
    "customer.segment": "The segment, for tiers and `segment_in` rules.",
    "channel": "The channel the messages arrive on (for `channel_in` rules and burst windows).",
    "messages": "What the customer writes, one turn per message, in order. At least one.",
    "expected": "What should happen, to measure routing accuracy and outcome agreement. Optional.",
    "expected.intent": "The intent the conversation is about (the first one routed to).",
    "expected.outcome": "`automated` (the assistant resolved it) or `escalated` (a person has it).",
    "verified": "Whether the channel vouches for the customer. Default: true when `customer` is given.",
    "note": "Why the case is there; ignored by replay.",
}
REPLAY_EXTRA_KEYS = {
    "customer": 'Any other key of `customer` is a custom attribute (`"vulnerable": true`), compared by the '
    "type declared in strategy.yaml `attributes`."
}
CUSTOMER_COLUMN_DESCRIPTIONS: Mapping[str, str] = {
    "id": "The customer's id, as your channel or integration sends it. Required, unique.",
    "name": "Full name.",
    "email": "Email address (ownership checks and `from_customer: email` slots may use it).",
    "plan": "The plan or product they are on.",
    "arr": "Annual revenue from the customer: `12000`, `12,000`, `£12,000` or `12k`; empty is 0.",
    "segment": "Segment (consumer, smb, enterprise...).",
}

REPLAY_EXAMPLE: Mapping[str, Any] = {
    "id": "c1",
    "customer": {"id": "C-1001", "plan": "fixed", "vulnerable": True},
    "channel": "webchat",
    "messages": ["how do I send a meter reading?", "thanks"],
    "expected": {"intent": "meter_reading", "outcome": "automated"},
}

MARKDOWN_FACT_EXAMPLE = """\
---
id: moving-home-notice
owner: support@example.com
review_by: 2027-01-31
tags: [moving]
intents: [moving_home]
---
Tell us your moving date and a meter reading from the day you move, at least two days before you move.
"""


@dataclass(frozen=True, slots=True)
class ReferenceInputs:
    """What other layers and installed plug-ins contribute. Names map to their entry point (module:attr)."""

    mechanisms: Mapping[str, str] = field(default_factory=dict)
    connector_types: Mapping[str, str] = field(default_factory=dict)
    embedders: Mapping[str, str] = field(default_factory=dict)
    replay_line: type[BaseModel] | None = None
    customer_columns: Sequence[str] = ()


# --- one key --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    path: str
    kind: str  # type in words
    default: str  # "required", "optional" or "default `x`"
    description: str
    nested: bool  # a mapping (or list of mappings) whose keys follow


def _members(annotation: Any) -> tuple[list[Any], bool]:
    """The types of a union, without None, and whether None was one of them."""
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        args = typing.get_args(annotation)
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model a field holds, and how: "" (directly), "[]" (a list of it) or "{}" (a mapping to it)."""
    members, _ = _members(annotation)
    if len(members) != 1:
        return None, ""
    inner = members[0]
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner, ""
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], "{}"
    return None, ""


def type_words(annotation: Any) -> str:
    """A type as a workspace author reads it: "number", "list of text", "one of `a`, `b`"."""
    members, _ = _members(annotation)
    if len(members) > 1:
        return " or ".join(type_words(m) for m in members)
    kind = members[0]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        if len(args) == 1:
            return f"`{_scalar(args[0])}`"
        return "one of " + ", ".join(f"`{_scalar(a)}`" for a in args)
    if origin is list:
        return f"list of {_plural(args[0])}"
    if origin is dict:
        return f"mapping of text to {type_words(args[1])}" if args else "mapping"
    if origin is tuple:
        return "[" + ", ".join(type_words(a) for a in args) + "]"
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return "mapping"
    simple: dict[Any, str] = {
        str: "text",
        int: "whole number",
        float: "number",
        Decimal: "number",
        bool: "true or false",
        date: "date (YYYY-MM-DD)",
        datetime: "date and time (ISO 8601, e.g. 2026-12-01T09:00Z)",
        Any: "any value",
    }
    if kind in simple:
        return simple[kind]
    raise ReferenceIncomplete(f"no words for the type {kind!r}")


def _plural(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mappings"
    if typing.get_origin(annotation) is Literal:
        return type_words(annotation)
    words = type_words(annotation)
    return {"text": "text", "whole number": "whole numbers", "number": "numbers"}.get(words, words)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        bare = _BARE.fullmatch(value) and value.lower() not in _YAML_WORDS
        return value if bare else json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _default_words(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        value = typing.cast(Callable[[], Any], info.default_factory)()
    else:
        value = info.default
    if value is None or value is PydanticUndefined:
        return "optional"
    if isinstance(value, BaseModel):
        return "optional"
    if isinstance(value, list | dict | tuple):
        if not value:
            return "default `[]`" if isinstance(value, list) else "default `{}`"
        plain = list(value) if isinstance(value, tuple) else value
        flow = yaml.safe_dump(plain, default_flow_style=True, allow_unicode=True, width=10_000).strip()
        return f"default `{flow}`"
    return f"default `{_scalar(value)}`"


def _bounds(info: FieldInfo) -> str:
    low = high = ""
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"at least {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            low = f"above {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = f"at most {item.le}"
        elif isinstance(item, annotated_types.Lt):
            high = f"below {item.lt}"
    if low.startswith("at least") and high.startswith("at most"):
        return f"{low.removeprefix('at least ')} to {high.removeprefix('at most ')}"
    return ", ".join(part for part in (low, high) if part)


def model_keys(
    model: type[BaseModel],
    prefix: str = "",
    *,
    descriptions: Mapping[str, str] | None = None,
    skip: frozenset[str] = frozenset(),
) -> list[Key]:
    """Every key of `model`, depth first, with dotted paths under `prefix`. A field without a description
    (in the model or in `descriptions`, by dotted path without prefix) raises ReferenceIncomplete."""
    keys: list[Key] = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{name}"
        description = info.description or (descriptions or {}).get(path.replace("[]", ""), "")
        if not description:
            raise ReferenceIncomplete(f"{model.__name__}.{name} ({path}) has no description")
        nested, how = _model_of(info.annotation)
        kind = type_words(info.annotation)
        if _members(info.annotation)[1] and info.default is not None and nested is None:
            kind = f"{kind} or null"
        bounds = _bounds(info)
        if bounds:
            kind = f"{kind}, {bounds}"
        if nested is not None and how == "{}":
            kind = f"mapping of {_MAPPING_KEY_NAMES.get(name, '<name>')} to a mapping"
        keys.append(Key(path, kind, _default_words(info), description, nested is not None))
        if nested is not None:
            child_prefix = {
                "": f"{path}.",
                "[]": f"{path}[].",
                "{}": f"{path}.{_MAPPING_KEY_NAMES.get(name, '<name>')}.",
            }[how]
            keys.extend(model_keys(nested, child_prefix, descriptions=descriptions))
    return keys


def reachable_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    """`root` and every model its fields hold, however deep."""
    found = {root}
    for info in root.model_fields.values():
        nested, _ = _model_of(info.annotation)
        if nested is not None and nested not in found:
            found |= reachable_models(nested)
    return found


# --- rendering ------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _anchor_heading(path: str) -> str:
    return f"### `{path}`"


def _render_keys(keys: Sequence[Key], lines: list[str]) -> None:
    """Scalar keys as a bullet list; each mapping (or list of mappings) gets a heading of its own, with its
    own keys under it, so every section can be linked to."""
    lines.extend(_bullet(key) for key in keys if not key.nested and _parent(key.path) == "")
    for key in keys:
        if not key.nested:
            continue
        children = [k for k in keys if _parent(k.path) == _own_prefix(key) and not k.nested]
        lines += ["", _anchor_heading(_own_prefix(key).rstrip(".")), ""]
        lines.append(f"{key.kind.capitalize()}; {key.default}. {_cell(key.description)}")
        if children:
            lines.append("")
            lines.extend(_bullet(child) for child in children)


def _own_prefix(key: Key) -> str:
    """The prefix of the keys inside a nested key: `a.` for a mapping, `a[].` for a list, `a.<name>.`."""
    if key.kind.startswith("list of mappings"):
        return f"{key.path}[]."
    if key.kind.startswith("mapping of <"):
        name = key.kind.removeprefix("mapping of ").split(" ", 1)[0]
        return f"{key.path}.{name}."
    return f"{key.path}."


def _parent(path: str) -> str:
    """`a[].b.` for `a[].b.c`; "" for a top-level key."""
    if "." not in path:
        return ""
    return path.rsplit(".", 1)[0] + "."


def _bullet(key: Key) -> str:
    return f"- **`{key.path}`** ({key.kind}; {key.default}): {_cell(key.description)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _described(
    registered: Mapping[str, str], descriptions: Mapping[str, str], what: str
) -> list[tuple[str, str]]:
    rows = []
    for name in sorted(registered):
        description = descriptions.get(name)
        if description is None:
            target = registered[name]
            if target.startswith("cxstack."):
                raise ReferenceIncomplete(f"built-in {what} `{name}` ({target}) has no description")
            description = f"A plug-in ({target}); see its own documentation."
        rows.append((name, description))
    return rows


def render_reference(inputs: ReferenceInputs) -> str:
    """docs/reference.md: the whole reference as Markdown."""
    lines = [
        "# Workspace reference",
        "",
        f"<!-- Generated from src/cxstack/workspace/models.py: do not edit. Regenerate: `{REGENERATE}` -->",
        "",
        "A workspace is a folder of YAML (and Markdown) files that says everything your assistant knows and "
        "may do. `cxstack validate FOLDER` checks it and lists every problem with its file, line and a fix. "
        "New to cxstack? Start with [the first-workspace guide](first-workspace.md), which builds one from "
        "`cxstack init`.",
        "",
        "Every key is listed with its type, its default and what it does. Keys are written as dotted paths: "
        "`thresholds.route_min_confidence` is `route_min_confidence:` indented under `thresholds:`; `[]` "
        "marks a list of mappings (`actions[].slots[].name` is the `name:` of each slot of each action); "
        "`<connector>` stands for a name you choose. A key that is not listed here is an error, never "
        "silently ignored. **required** keys have no default; optional ones can be left out.",
        "",
        "```",
        "my-workspace/",
    ]
    for spec in WORKSPACE_FILES:
        marker = "" if spec.required else "   (optional)"
        lines.append(f"  {spec.path:<22}{spec.title}{marker}")
    lines += [
        "  samples/              customers.csv and replay scripts (not read by validate; by convention)",
        "```",
        "",
        "Contents: " + ", ".join(f"[{s.path}](#{_slug(s)})" for s in WORKSPACE_FILES) + ", "
        "[Markdown facts](#knowledgemd-facts-in-markdown), [built-in intents](#built-in-intents), "
        "[mechanisms](#mechanisms), [connector types](#connector-types), [embedders](#embedders), "
        "[customer CSV](#customer-csv), [replay scripts](#replay-scripts-jsonl).",
    ]
    for spec in WORKSPACE_FILES:
        lines += ["", f"## {spec.path}: {spec.title}", "", spec.intro, ""]
        if not spec.required:
            lines += ["This file is optional.", ""]
        _render_keys(model_keys(spec.model), lines)
        if spec.model is KnowledgeFile:
            _render_markdown_facts(lines)
    _render_builtin_intents(lines)
    _render_registered(lines, inputs)
    _render_customer_csv(lines, inputs)
    _render_replay(lines, inputs)
    return "\n".join(lines).rstrip() + "\n"


def _slug(spec: WorkspaceFile) -> str:
    """GitHub's anchor for the file's heading: lower case, punctuation dropped, spaces as hyphens."""
    heading = f"{spec.path}: {spec.title}".lower()
    kept = "".join(c for c in heading if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _render_markdown_facts(lines: list[str]) -> None:
    fields = [k for k in model_keys(FactConfig) if k.path != "text"]
    lines += [
        "",
        "## knowledge/*.md: facts in Markdown",
        "",
        "A fact can also be a Markdown file of its own under `knowledge/`, which reads better for a longer "
        "text: YAML front matter between two `---` lines holds the keys of a fact, and the body after it is "
        "the fact's `text`. One fact per file.",
        "",
        "```markdown",
        MARKDOWN_FACT_EXAMPLE.rstrip(),
        "```",
        "",
        "Front matter keys: " + ", ".join(f"`{k.path}`" for k in fields) + " (as in "
        "`facts[]` above); `text` comes from the body.",
    ]


def _render_builtin_intents(lines: list[str]) -> None:
    lines += [
        "",
        "## Built-in intents",
        "",
        "Every workspace has these conversational intents, so that 'hi', 'thanks, bye' or 'what's the "
        "weather?' are answered politely with `replies` instead of being forced into a business intent. "
        "They are never escalated. To change one, declare an intent of the same name in intents.yaml "
        "(your examples replace the built-in ones); to switch one off, declare it with `status: draft`.",
        "",
    ]
    rows = [
        (
            f"`{intent.name}`",
            intent.description,
            f"`replies.{'small_talk' if intent.name == 'small_talk' else intent.name}`",
            ", ".join(f"“{e}”" for e in intent.examples[:5]) + f" ({len(intent.examples)} in all)",
        )
        for intent in BUILTIN_INTENTS
    ]
    lines += _table(("intent", "the customer wants to", "answered with", "examples"), rows)


def _render_registered(lines: list[str], inputs: ReferenceInputs) -> None:
    mechanisms = _described(inputs.mechanisms, MECHANISMS, "mechanism")
    reserved = [(n, d) for n, d in RESERVED_MECHANISMS.items() if n not in inputs.mechanisms]
    lines += [
        "",
        "## Mechanisms",
        "",
        "What an intent's `mechanism:` (and `fallback:`) can name. Built-ins and plug-ins register under the "
        "entry point group `cxstack.resolvers`.",
        "",
    ]
    lines += _table(("mechanism", "what it does"), [(f"`{n}`", d) for n, d in mechanisms + reserved])
    lines += [
        "",
        "## Connector types",
        "",
        "What a connector's `type:` can name (entry point group `cxstack.action_connectors`).",
        "",
    ]
    connectors = _described(inputs.connector_types, CONNECTOR_TYPES, "connector type")
    lines += _table(("type", "what it does"), [(f"`{n}`", d) for n, d in connectors])
    lines += [
        "",
        "## Embedders",
        "",
        "What `embedder:` and the `--embedder` option can name (entry point group `cxstack.embedders`). All "
        "run offline.",
        "",
    ]
    embedders = _described(inputs.embedders, EMBEDDERS, "embedder")
    lines += _table(("embedder", "what it is"), [(f"`{n}`", d) for n, d in embedders])


def _render_customer_csv(lines: list[str], inputs: ReferenceInputs) -> None:
    lines += [
        "",
        "## Customer CSV",
        "",
        "`cxstack customers import FILE -w WORKSPACE` reads customer profiles from a CSV export (UTF-8, a "
        "header row; header case does not matter). Known columns:",
        "",
    ]
    rows = []
    for column in inputs.customer_columns:
        description = CUSTOMER_COLUMN_DESCRIPTIONS.get(column)
        if description is None:
            raise ReferenceIncomplete(f"customer CSV column `{column}` has no description")
        rows.append((f"`{column}`", description))
    lines += _table(("column", "what it holds"), rows)
    lines += [
        "",
        "Every other column is a custom attribute that rules can test (`when.attributes`). Declare its type "
        "in strategy.yaml `attributes` and the import converts it (`yes`/`no`, `true`/`false`, `1`/`0` for "
        "a boolean) or refuses the file, listing every bad row and column; an empty cell means unknown. "
        "Without `-w`, attributes are imported as text.",
    ]


def _render_replay(lines: list[str], inputs: ReferenceInputs) -> None:
    lines += [
        "",
        "## Replay scripts (JSONL)",
        "",
        "`cxstack replay WORKSPACE FILE` runs scripted conversations through the assistant and prints the "
        "automation and escalation rates together, by intent and mechanism, and how often routing and "
        "outcomes match `expected`. Back-office actions go to a dry-run connector unless `--live-actions` "
        "is given. The file has one JSON object per line (blank lines are skipped); every bad line is "
        "reported with its number and nothing runs. For example:",
        "",
        "```json",
        json.dumps(REPLAY_EXAMPLE, ensure_ascii=False),
        "```",
        "",
    ]
    if inputs.replay_line is None:
        return
    keys = model_keys(inputs.replay_line, descriptions=REPLAY_DESCRIPTIONS)
    for key in keys:
        extra = REPLAY_EXTRA_KEYS.get(key.path, "")
        lines.append(_bullet(key) + (f" {extra}" if extra else ""))
