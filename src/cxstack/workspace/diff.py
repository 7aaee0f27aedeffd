"""What changed between two workspace versions: the answer to "which change caused this quality shift?"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from cxstack.workspace.workspace import Workspace

ItemT = TypeVar("ItemT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str  # e.g. "thresholds.route_min_confidence" or "examples"
    old: Any
    new: Any

    def describe(self) -> str:
        if isinstance(self.old, list) and isinstance(self.new, list):
            added = [x for x in self.new if x not in self.old]
            removed = [x for x in self.old if x not in self.new]
            if added or removed:
                parts = [f"+{_short(x, 40)}" for x in added[:3]] + [f"-{_short(x, 40)}" for x in removed[:3]]
                more = len(added) + len(removed) - len(parts)
                return f"{self.path}: " + " ".join(parts) + (f" (+{more} more)" if more > 0 else "")
        return f"{self.path}: {_short(self.old)} -> {_short(self.new)}"


@dataclass(frozen=True, slots=True)
class CollectionDiff:
    """Items of one kind (intents, facts, ...) keyed by name or id."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: dict[str, tuple[FieldChange, ...]] = field(default_factory=dict)
    reordered: bool = False  # same items, different order (matters for tiers and rules: first match wins)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.reordered)


@dataclass(frozen=True, slots=True)
class WorkspaceDiff:
    old_version: str
    new_version: str
    intents: CollectionDiff
    facts: CollectionDiff
    actions: CollectionDiff
    rules: CollectionDiff
    tiers: CollectionDiff
    settings: tuple[
        FieldChange, ...
    ]  # cxstack.yaml and the scalar parts of strategy.yaml, rubric, experiments

    @property
    def empty(self) -> bool:
        collections = (self.intents, self.facts, self.actions, self.rules, self.tiers)
        return all(c.empty for c in collections) and not self.settings

    def summary(self) -> str:
        if self.empty:
            return f"{self.old_version} -> {self.new_version}: no changes"
        lines = [f"{self.old_version} -> {self.new_version}"]
        sections = (
            ("intents", self.intents),
            ("facts", self.facts),
            ("actions", self.actions),
            ("policy rules", self.rules),
            ("tiers", self.tiers),
        )
        for title, diff in sections:
            if diff.empty:
                continue
            lines.append(f"{title}:")
            lines.extend(f"  + {name}" for name in diff.added)
            lines.extend(f"  - {name}" for name in diff.removed)
            for name, changes in diff.changed.items():
                lines.append(f"  ~ {name}: " + ", ".join(c.describe() for c in changes))
            if diff.reordered:
                lines.append("  order changed")
        if self.settings:
            lines.append("settings:")
            lines.extend(f"  ~ {change.describe()}" for change in self.settings)
        return "\n".join(lines)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened to dotted paths; lists stay whole (a list is one setting)."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _field_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> tuple[FieldChange, ...]:
    flat_old, flat_new = _flatten(old, prefix), _flatten(new, prefix)
    changes = []
    for path in list(flat_old) + [p for p in flat_new if p not in flat_old]:
        before, after = flat_old.get(path), flat_new.get(path)
        if before != after:
            changes.append(FieldChange(path, before, after))
    return tuple(changes)


def _diff_items(old: Sequence[ItemT], new: Sequence[ItemT], key: Callable[[ItemT], str]) -> CollectionDiff:
    old_by_key = {key(item): item for item in old}
    new_by_key = {key(item): item for item in new}
    changed = {}
    for name, before in old_by_key.items():
        after = new_by_key.get(name)
        if after is not None and after != before:
            changed[name] = _field_changes(before.model_dump(mode="json"), after.model_dump(mode="json"))
    common_old = [k for k in old_by_key if k in new_by_key]
    common_new = [k for k in new_by_key if k in old_by_key]
    return CollectionDiff(
        added=tuple(k for k in new_by_key if k not in old_by_key),
        removed=tuple(k for k in old_by_key if k not in new_by_key),
        changed=changed,
        reordered=common_old != common_new,
    )


def diff_workspaces(a: Workspace, b: Workspace) -> WorkspaceDiff:
    """Changes from `a` (older) to `b` (newer). Intent order and fact order are not behaviour; rule and tier
    order are (first match wins), so only those report `reordered`."""
    strategy_scalars_a = a.strategy.model_dump(mode="json", exclude={"tiers", "rules"})
    strategy_scalars_b = b.strategy.model_dump(mode="json", exclude={"tiers", "rules"})
    settings = (
        _field_changes(a.settings.model_dump(mode="json"), b.settings.model_dump(mode="json"))
        + _field_changes(strategy_scalars_a, strategy_scalars_b, "strategy")
        + _field_changes(a.rubric.model_dump(mode="json"), b.rubric.model_dump(mode="json"), "rubric")
        + _field_changes(
            a.experiments.model_dump(mode="json"), b.experiments.model_dump(mode="json"), "experiments"
        )
    )
    intents = _diff_items(a.intents, b.intents, lambda i: i.name)
    facts = _diff_items(a.facts, b.facts, lambda f: f.id)
    actions = _diff_items(a.actions, b.actions, lambda x: x.name)
    return WorkspaceDiff(
        old_version=a.version,
        new_version=b.version,
        intents=CollectionDiff(intents.added, intents.removed, intents.changed),
        facts=CollectionDiff(facts.added, facts.removed, facts.changed),
        actions=CollectionDiff(actions.added, actions.removed, actions.changed),
        rules=_diff_items(a.strategy.rules, b.strategy.rules, lambda r: r.id),
        tiers=_diff_items(a.strategy.tiers, b.strategy.tiers, lambda t: t.name),
        settings=settings,
    )
