"""Load a workspace folder into one immutable `Workspace`, or raise `WorkspaceInvalid` with every problem.

The version is a hash of the *parsed* content, not of the bytes on disk: reformatting a file, adding a
comment, spelling out a default (`status: active`) or moving a fact to another knowledge file does not make a
new version, while any change that can alter behaviour does. Every trace records this version, so a quality
change is tied to a behaviour change, never to a whitespace edit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cxstack.domain.models import WorkspaceVersionId
from cxstack.workspace.builtin import with_builtin_intents
from cxstack.workspace.models import (
    SCHEMA_VERSION,
    ActionConfig,
    AgentConfig,
    Experiments,
    FactConfig,
    IntentConfig,
    Rubric,
    StrategyConfig,
    WorkspaceSettings,
)
from cxstack.workspace.validate import (
    DEFAULT_MECHANISMS,
    Problem,
    WorkspaceInvalid,
    check_workspace,
)
from cxstack.workspace.workspace import Workspace

__all__ = [
    "DEFAULT_MECHANISMS",
    "Problem",
    "WorkspaceInvalid",
    "canonical_content",
    "load_workspace",
    "workspace_from_content",
    "workspace_version",
]


def load_workspace(path: Path, *, known_mechanisms: Collection[str] = DEFAULT_MECHANISMS) -> Workspace:
    """Read and validate the workspace at `path`. Warnings do not block loading; any error raises."""
    check = check_workspace(Path(path), known_mechanisms=known_mechanisms)
    if not check.ok or check.settings is None or check.strategy is None:
        raise WorkspaceInvalid(check.problems)
    workspace = Workspace(
        settings=check.settings,
        strategy=check.strategy,
        intents=with_builtin_intents(tuple(s.item for s in check.intents)),
        facts=tuple(s.item for s in check.facts),
        actions=tuple(s.item for s in check.actions),
        rubric=check.rubric,
        experiments=check.experiments,
        agents=tuple(s.item for s in check.agents),
        root=Path(path).resolve(),
    )
    return _with_version(workspace)


def canonical_content(workspace: Workspace) -> dict[str, Any]:
    """The JSON-ready content a version hash is computed over; also what a store keeps for each version.

    Facts are ordered by id, so which knowledge file holds a fact is not part of the content. Intents, tiers,
    rules and actions keep file order, because tiers and rules match first-in-file-order.
    """
    return {
        "schema": SCHEMA_VERSION,
        "settings": workspace.settings.model_dump(mode="json"),
        "strategy": workspace.strategy.model_dump(mode="json"),
        "intents": [i.model_dump(mode="json") for i in workspace.intents],
        "facts": [f.model_dump(mode="json") for f in sorted(workspace.facts, key=lambda f: f.id)],
        "actions": [a.model_dump(mode="json") for a in workspace.actions],
        "rubric": workspace.rubric.model_dump(mode="json"),
        "experiments": workspace.experiments.model_dump(mode="json"),
        **({"agents": [a.model_dump(mode="json") for a in workspace.agents]} if workspace.agents else {}),
    }


def workspace_version(content: dict[str, Any]) -> WorkspaceVersionId:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return WorkspaceVersionId("ws_" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16])


def workspace_from_content(content: dict[str, Any], root: Path | None = None) -> Workspace:
    """Rebuild a workspace from `canonical_content` (e.g. a stored version, for replay)."""
    workspace = Workspace(
        settings=WorkspaceSettings.model_validate(content["settings"]),
        strategy=StrategyConfig.model_validate(content["strategy"]),
        intents=tuple(IntentConfig.model_validate(i) for i in content["intents"]),
        facts=tuple(FactConfig.model_validate(f) for f in content["facts"]),
        actions=tuple(ActionConfig.model_validate(a) for a in content["actions"]),
        rubric=Rubric.model_validate(content.get("rubric", {})),
        experiments=Experiments.model_validate(content.get("experiments", {})),
        agents=tuple(AgentConfig.model_validate(a) for a in content.get("agents", [])),
        root=root,
    )
    return _with_version(workspace)


def _with_version(workspace: Workspace) -> Workspace:
    return dataclasses.replace(workspace, version=workspace_version(canonical_content(workspace)))


def problems_text(problems: Collection[Problem]) -> str:
    return "\n".join(p.format() for p in problems)
