"""A workspace with some of its content overridden: what an experiment's variant runs on.

Paths are dotted (`settings.thresholds.route_min_confidence`, `strategy.rules.refund-cap.then.cap_amount`,
`intents.order_status.mechanism`, `facts.return-window.text`); inside a list a path names the item by its `id`
or `name`. The result has its own version hash, and `variant_problems` runs the files' own validator on it.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cxstack.workspace.loader import canonical_content, workspace_from_content
from cxstack.workspace.models import ExperimentConfig
from cxstack.workspace.workspace import Workspace

ROOTS = ("settings", "strategy", "intents", "facts", "actions", "agents", "rubric")
# The router is trained once for the workspace: no variant may change what it learns from.
FROZEN_FIELDS = {("intents", "examples"), ("intents", "status")}


class OverrideError(ValueError):
    """An override path that names nothing in the workspace, or one a variant may not change."""


def _key_of(item: Any) -> str | None:
    if isinstance(item, dict):
        for key in ("id", "name"):
            if isinstance(item.get(key), str):
                return str(item[key])
    return None


def _set_path(content: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if parts[0] == "cxstack":
        parts[0] = "settings"
    if parts[0] not in ROOTS:
        raise OverrideError(
            f"`{path}`: starts with `{parts[0]}`; a path starts with one of {', '.join(ROOTS)}"
        )
    if len(parts) >= 3 and (parts[0], parts[2]) in FROZEN_FIELDS:
        raise OverrideError(
            f"`{path}`: the router is trained once, so a variant cannot change an intent's {parts[2]}"
        )
    node: Any = content
    walked: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        walked.append(part)
        if isinstance(node, list):
            found = [i for i, item in enumerate(node) if _key_of(item) == part]
            if not found:
                known = ", ".join(k for k in (_key_of(item) for item in node) if k)
                raise OverrideError(f"`{path}`: no item `{part}` in {'.'.join(walked[:-1])} (has: {known})")
            if last:
                node[found[0]] = value
                return
            node = node[found[0]]
        elif isinstance(node, dict):
            if part not in node and not last:
                raise OverrideError(f"`{path}`: {'.'.join(walked)} does not exist")
            if last:
                node[part] = value  # a key the model does not take is refused by its validation, named
                return
            node = node[part]
        else:
            raise OverrideError(f"`{path}`: {'.'.join(walked[:-1])} is a value, not a section")


def overridden_content(workspace: Workspace, overrides: Mapping[str, Any]) -> dict[str, Any]:
    content = copy.deepcopy(canonical_content(workspace))
    for path, value in overrides.items():
        _set_path(content, path, value)
    return content


def apply_overrides(workspace: Workspace, overrides: Mapping[str, Any]) -> Workspace:
    """The workspace with `overrides` applied (its own version hash). Raises OverrideError, or pydantic's
    ValidationError for a value its field does not take."""
    if not overrides:
        return workspace
    return workspace_from_content(overridden_content(workspace, overrides), root=workspace.root)


def write_workspace_files(content: Mapping[str, Any], folder: Path) -> None:
    """The content as workspace files, as a person would have written them (what `cxstack validate` reads)."""

    def dump(name: str, data: Any) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")

    dump("cxstack.yaml", content["settings"])
    dump("strategy.yaml", content["strategy"])
    dump("intents.yaml", {"version": 1, "intents": content["intents"]})
    dump("knowledge/facts.yaml", {"version": 1, "facts": content["facts"]})
    dump("actions.yaml", {"version": 1, "actions": content["actions"]})
    dump("rubric.yaml", content.get("rubric", {}))
    if content.get("agents"):
        dump("agents/agents.yaml", {"version": 1, "agents": content["agents"]})


def variant_problems(workspace: Workspace, overrides: Mapping[str, Any]) -> list[str]:
    """Why the variant's workspace would be refused: a bad path, or each error the validator finds in it."""
    from cxstack.workspace.validate import check_workspace

    try:
        content = overridden_content(workspace, overrides)
    except OverrideError as exc:
        return [str(exc)]
    content.pop("experiments", None)  # the variant's own copy is not an experiment of its own
    with tempfile.TemporaryDirectory(prefix="cxstack-variant-") as folder:
        write_workspace_files(content, Path(folder))
        check = check_workspace(Path(folder))
    # the files are ours, written for the check: their names and lines would mean nothing to the reader
    return [f"{p.message} ({p.fix})" if p.fix else p.message for p in check.problems if p.severity == "error"]


def overlapping_keys(experiments: Sequence[ExperimentConfig]) -> list[tuple[str, str, str]]:
    """(experiment, other experiment, path) for running experiments that override the same config key (or
    one inside the other): a conversation in both could not say which change it saw."""
    paths: list[tuple[str, str]] = []
    for experiment in experiments:
        if experiment.status != "running":
            continue
        for overrides in experiment.variants.values():
            paths += [(experiment.id, path) for path in overrides]
    clashes: set[tuple[str, str, str]] = set()
    for i, (first, a) in enumerate(paths):
        for second, b in paths[i + 1 :]:
            if first != second and (a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")):
                clashes.add((first, second, min(a, b)))
    return sorted(clashes)
