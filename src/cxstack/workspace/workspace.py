"""The effective workspace for a turn: one immutable object the orchestrator receives, never global state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cxstack.domain.models import WorkspaceVersionId
from cxstack.workspace.models import (
    ActionConfig,
    AgentConfig,
    Experiments,
    FactConfig,
    IntentConfig,
    Rubric,
    StrategyConfig,
    WorkspaceSettings,
)


@dataclass(frozen=True)
class Workspace:
    settings: WorkspaceSettings
    strategy: StrategyConfig
    intents: tuple[IntentConfig, ...]
    facts: tuple[FactConfig, ...]
    actions: tuple[ActionConfig, ...]
    rubric: Rubric = field(default_factory=Rubric)
    experiments: Experiments = field(default_factory=Experiments)
    agents: tuple[AgentConfig, ...] = ()
    # sha256 over the canonical content of every file: the workspace version every trace records.
    version: WorkspaceVersionId = field(default_factory=lambda: WorkspaceVersionId(""))
    root: Path | None = None

    def intent(self, name: str) -> IntentConfig | None:
        return next((i for i in self.intents if i.name == name), None)

    def action(self, name: str) -> ActionConfig | None:
        return next((a for a in self.actions if a.name == name), None)

    def agent(self, name: str) -> AgentConfig | None:
        return next((a for a in self.agents if a.name == name), None)

    def fact(self, fact_id: str) -> FactConfig | None:
        return next((f for f in self.facts if f.id == fact_id), None)

    @property
    def active_intents(self) -> tuple[IntentConfig, ...]:
        return tuple(i for i in self.intents if i.status == "active")

    @property
    def languages(self) -> list[str]:
        return list(self.settings.languages) or [self.settings.language]

    def team_label(self, queue: str) -> str:
        """How a queue is named to customers: its customer_label, else 'a colleague'."""
        configured = next((q for q in self.settings.escalation.queues if q.name == queue), None)
        return configured.customer_label if configured and configured.customer_label else "a colleague"

    def reply(self, name: str, **values: str) -> str:
        """One of the workspace's `replies`, with {scope}, {name}, {team} and {team_cap} filled in."""
        return self.render(getattr(self.settings.replies, name), **values)

    def render(self, template: str, **values: str) -> str:
        """A customer-facing template with the workspace's placeholders filled in."""
        team = values.get("team", "a colleague")
        fields = {
            "scope": self.settings.scope or "your questions",
            "name": self.settings.name,
            "team": team,
            "team_cap": team[:1].upper() + team[1:],
            **values,
        }
        try:
            return template.format_map(fields)
        except (KeyError, IndexError, ValueError):
            return template  # validate reports unknown placeholders; never fail a turn over one
