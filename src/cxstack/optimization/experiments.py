"""Experiments on any layer: variants as overrides of the workspace, sticky assignment, exposure in the trace.

A variant is a set of overrides of the workspace's content, by dotted path
(`settings.thresholds.route_min_confidence: 0.5`, `strategy.rules.refund-cap.then.cap_amount: 150`,
`intents.order_status.mechanism: human`, `facts.return-window.text: …`, `agents.refunds.instructions: …`);
inside a list the path names the item by its `id` or `name`. Applying a variant's overrides gives a workspace
of its own, with its own version hash, checked by the same validator as the files (`variant_problems`): one
that fails is refused before it starts.

A unit (conversation or customer, per experiment) is assigned by hashing unit id + the experiment's salt into
[0, 1) and walking the allocation: the same unit always gets the same variant, and two experiments with
different salts assign independently. Only conversations that start inside the experiment's window are
enrolled, so nobody changes variant mid-conversation when an experiment starts.

`ExperimentingOrchestrator` wraps the orchestrator: each turn runs on its variant's workspace (and, when the
variant changes facts, on a knowledge index of its own), and the trace records the exposure: `variant` is
`experiment:variant` (joined with `;` when a unit is in several experiments) and its first step says which
experiment, variant, unit and bucket.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cxstack.domain.models import Conversation, Layer, Trace, TraceStep
from cxstack.orchestration.orchestrator import Orchestrator, TurnResult
from cxstack.resolution.models import TurnContext
from cxstack.workspace.models import ExperimentConfig
from cxstack.workspace.variants import apply_overrides
from cxstack.workspace.workspace import Workspace

# ---- assignment --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    variant: str
    unit: str
    bucket: float  # where the unit's hash fell in [0, 1)

    @property
    def label(self) -> str:
        return f"{self.experiment}:{self.variant}"


def bucket_of(unit: str, salt: str) -> float:
    """The unit's place in [0, 1), the same for the same unit and salt on every machine and every run."""
    digest = hashlib.sha256(f"{salt}\x1f{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose(allocation: Mapping[str, float], bucket: float) -> str:
    """The variant whose slice of [0, 1) holds `bucket`, slices in the allocation's order."""
    edge = 0.0
    names = list(allocation)
    for name in names:
        edge += allocation[name]
        if bucket < edge:
            return name
    return names[-1]  # rounding: the last slice reaches 1


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def enrolled(experiment: ExperimentConfig, conversation: Conversation, now: datetime) -> bool:
    if experiment.status != "running" or not experiment.allocation:
        return False
    started = _aware(conversation.created_at)
    if experiment.start is not None and started < _aware(experiment.start):
        return False
    return experiment.stop is None or _aware(now) < _aware(experiment.stop)


def assign(
    experiments: Iterable[ExperimentConfig], conversation: Conversation, customer_id: str, now: datetime
) -> list[Assignment]:
    chosen = []
    for experiment in experiments:
        if not enrolled(experiment, conversation, now):
            continue
        unit = customer_id if experiment.unit == "customer" else str(conversation.id)
        bucket = bucket_of(unit, experiment.salt or experiment.id)
        chosen.append(Assignment(experiment.id, choose(experiment.allocation, bucket), unit, bucket))
    return chosen


# ---- history: an experiment may not change under its own feet ---------------------------------------------

FIXED_AT_START = ("allocation", "salt", "unit", "variants")


def edited_after_start(
    current: Sequence[ExperimentConfig], earlier: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Problems with running experiments whose allocation, salt, unit or variants differ from a version of the
    workspace in which the same experiment was already running: its data would mix two experiments."""
    seen: dict[str, Mapping[str, Any]] = {}
    for content in earlier:
        for experiment in (content.get("experiments") or {}).get("experiments") or []:
            if experiment.get("status") == "running":
                seen.setdefault(str(experiment.get("id")), experiment)
    problems = []
    for experiment in current:
        before = seen.get(experiment.id)
        if experiment.status != "running" or before is None:
            continue
        now = experiment.model_dump(mode="json")
        try:  # an older version of the file format: compared with its defaults filled in
            then = ExperimentConfig.model_validate(before).model_dump(mode="json")
        except ValidationError:
            then = dict(before)
        changed = [field for field in FIXED_AT_START if now.get(field) != then.get(field)]
        if changed:
            problems.append(
                f"experiment `{experiment.id}` changed its {', '.join(changed)} after it started: its data "
                "would mix two experiments; stop it and start a new one under a new id"
            )
    return problems


class ExperimentEditedError(ValueError):
    """A running experiment changed what is fixed at its start since an earlier version of the workspace."""


def check_history(store: Any, workspace: Workspace, *, versions: int = 500) -> None:
    """Raises ExperimentEditedError when a running experiment's allocation, salt, unit or variants differ
    from a stored version of the workspace in which it was already running."""
    if not any(e.status == "running" for e in workspace.experiments.experiments):
        return
    earlier = (
        store.get_workspace_version(info.id)
        for info in store.list_workspace_versions(limit=versions)
        if info.id != workspace.version
    )
    problems = edited_after_start(workspace.experiments.experiments, (c for c in earlier if c))
    if problems:
        raise ExperimentEditedError("; ".join(problems))


# ---- the orchestrator that runs each turn on its variant ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arm:
    assignments: tuple[Assignment, ...]
    workspace: Workspace

    @property
    def label(self) -> str | None:
        return ";".join(a.label for a in self.assignments) or None


class ExperimentingOrchestrator(Orchestrator):
    """The orchestrator, running each turn on the workspace of the variants its conversation is assigned to.

    `orchestrator_for_facts` builds an orchestrator over other facts (a knowledge index of its own) for a
    variant that changes them; variants that leave the facts alone run on this one."""

    def __init__(
        self,
        base: Orchestrator,
        orchestrator_for_facts: Callable[[Workspace], Orchestrator] | None = None,
        *,
        cache_size: int = 64,
    ) -> None:
        super().__init__(base._router, base._resolvers, clock=base._clock, llm=base.llm)
        self._orchestrator_for_facts = orchestrator_for_facts
        self._arms: dict[tuple[str, tuple[str, ...]], Workspace] = {}
        self._by_facts: dict[str, Orchestrator] = {}
        self._cache_size = cache_size

    def arm(self, ctx: TurnContext) -> Arm:
        base = ctx.workspace
        assignments = tuple(
            assign(base.experiments.experiments, ctx.conversation, str(ctx.customer.id), ctx.now)
        )
        if not assignments:
            return Arm((), base)
        key = (str(base.version), tuple(a.label for a in assignments))
        workspace = self._arms.get(key)
        if workspace is None:
            by_id = {e.id: e for e in base.experiments.experiments}
            overrides: dict[str, Any] = {}
            for a in assignments:
                overrides.update(by_id[a.experiment].variants.get(a.variant) or {})
            workspace = apply_overrides(base, overrides)
            if len(self._arms) >= self._cache_size:
                self._arms.clear()
            self._arms[key] = workspace
        return Arm(assignments, workspace)

    async def _run(self, base: Workspace, ctx: TurnContext) -> TurnResult:
        if ctx.workspace.facts == base.facts or self._orchestrator_for_facts is None:
            return await super().handle_turn(ctx)
        version = str(ctx.workspace.version)
        other = self._by_facts.get(version)
        if other is None:
            other = self._by_facts[version] = self._orchestrator_for_facts(ctx.workspace)
        return await other.handle_turn(ctx)

    async def handle_turn(self, ctx: TurnContext) -> TurnResult:
        arm = self.arm(ctx)
        if not arm.assignments:
            return await super().handle_turn(ctx)
        result = await self._run(ctx.workspace, dataclasses.replace(ctx, workspace=arm.workspace))
        exposure = TraceStep(
            layer=Layer.OPTIMIZATION,
            name="experiment",
            input={"base_version": str(ctx.workspace.version)},
            output={
                "variant_version": str(arm.workspace.version),
                "assignments": [
                    {
                        "experiment": a.experiment,
                        "variant": a.variant,
                        "unit": a.unit,
                        "bucket": round(a.bucket, 6),
                    }
                    for a in arm.assignments
                ],
            },
        )
        trace: Trace = result.trace
        stamped = dataclasses.replace(trace, variant=arm.label, steps=[exposure, *trace.steps])
        return dataclasses.replace(result, trace=stamped)


def variant_workspaces(workspace: Workspace) -> dict[str, Workspace]:
    """`experiment:variant` → that variant's workspace, for every running experiment (stored with the base so
    a trace's variant version can be read back)."""
    built = {}
    for experiment in workspace.experiments.experiments:
        if experiment.status != "running":
            continue
        for name, overrides in experiment.variants.items():
            built[f"{experiment.id}:{name}"] = apply_overrides(workspace, overrides or {})
    return built
