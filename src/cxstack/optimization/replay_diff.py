"""What a candidate workspace changes, turn by turn, on the same conversations: replay before shipping.

The same scripts (scripted, or recorded conversations read from the store) run through the baseline and the
candidate version; `compare_replays` pairs their turns and says what changed in each layer:

    routing        intent, confidence bucket
    strategy       policy rules fired, tier
    resolution     mechanism
    knowledge      facts cited; a cited fact whose text or fields changed between the versions
    actions        action called, its arguments, its status
    orchestration  decision (answered / asked / clarified / escalated), reason, queue
    reply          the text the customer was sent

with counts per kind of change and per intent, up to K examples of each, the conversation outcomes that moved
(automated -> escalated, ...) and the headline rates of both runs side by side. A turn whose intent changed
usually changes everything after it: each changed turn also names its *origin*, the first layer (in the
order a turn runs) that differs, so a report can tell causes from consequences. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cxstack.monitoring.metrics import agreement, overall
from cxstack.optimization.replay import ReplayedConversation, ReplayedTurn
from cxstack.workspace.diff import CollectionDiff, WorkspaceDiff

# The order a turn runs in: a change's origin is the first of these that differs.
LAYERS = ("routing", "strategy", "resolution", "knowledge", "actions", "orchestration", "reply")
KINDS: dict[str, tuple[str, ...]] = {
    "routing": ("intent", "confidence"),
    "strategy": ("rules", "tier"),
    "resolution": ("mechanism",),
    "knowledge": ("facts", "fact_content"),
    "actions": ("action", "arguments", "status"),
    "orchestration": ("decision", "reason", "queue"),
    "reply": ("reply",),
}
CONFIDENCE_STEP = 0.2  # a router's confidence moving within one fifth of [0, 1] is not a change
DEFAULT_EXAMPLES = 3
NO_INTENT = "(none)"


@dataclass(frozen=True, slots=True)
class TurnSnapshot:
    """What one turn did, in the terms the comparison uses (values are JSON-ready)."""

    intent: str | None
    confidence: str | None  # bucket, e.g. "0.6-0.8"
    rules: tuple[str, ...]
    tier: str | None
    mechanism: str | None
    facts: tuple[str, ...]
    actions: tuple[str, ...]
    arguments: tuple[tuple[str, dict[str, Any]], ...]
    statuses: tuple[tuple[str, str], ...]
    decision: str
    reason: str | None
    queue: str | None
    reply: str | None


def confidence_bucket(confidence: float | None) -> str | None:
    if confidence is None:
        return None
    steps = round(1 / CONFIDENCE_STEP)
    low = min(int(max(confidence, 0.0) * steps), steps - 1)
    return f"{low / steps:.1f}-{(low + 1) / steps:.1f}"


def decision_of(turn: ReplayedTurn) -> str:
    """answered | asked (a slot or a confirmation) | clarified | escalated | handled_by_human | no_turn."""
    trace = turn.trace
    if trace is None:
        return "no_turn"
    if trace.outcome == "escalated":
        return "escalated"
    if trace.outcome == "handled_by_human":
        return "handled_by_human"
    if trace.outcome == "clarified" or trace.decision.value == "clarify":
        return "clarified"
    resolved = [s.output for s in trace.steps if s.name.startswith("resolve:")]
    if resolved and (resolved[-1] or {}).get("kind") == "ask":
        return "asked"
    return "answered"


def snapshot(turn: ReplayedTurn) -> TurnSnapshot:
    trace = turn.trace
    assessed: dict[str, Any] = {}
    if trace is not None:
        assessed = next((s.output or {} for s in trace.steps if s.name == "assess"), {})
    return TurnSnapshot(
        intent=turn.intent,
        confidence=confidence_bucket(trace.intent_confidence if trace else None),
        rules=tuple(str(r) for r in assessed.get("fired_rules") or ()),
        tier=str(assessed["tier"]) if assessed.get("tier") else None,
        mechanism=trace.mechanism if trace else None,
        facts=turn.facts,
        actions=tuple(a.name for a in turn.actions),
        arguments=tuple((a.name, a.arguments) for a in turn.actions),
        statuses=tuple((a.name, a.status) for a in turn.actions),
        decision=decision_of(turn),
        reason=turn.reason(),
        queue=turn.queue,
        reply=turn.reply,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One kind of change on one turn: `before` on the baseline, `after` on the candidate."""

    layer: str
    kind: str
    conversation: str  # the script's id (a recorded conversation's id)
    turn: int  # 1-based, in the conversation's customer messages
    text: str  # what the customer wrote
    intent: str  # the turn's intent on the baseline (else the candidate's), NO_INTENT for none
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "conversation": self.conversation,
            "turn": self.turn,
            "text": self.text,
            "intent": self.intent,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class KindSummary:
    layer: str
    kind: str
    count: int
    by_intent: dict[str, int]  # most changes first
    examples: tuple[Change, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "count": self.count,
            "by_intent": self.by_intent,
            "examples": [e.as_dict() for e in self.examples],
        }


@dataclass(frozen=True, slots=True)
class RateComparison:
    name: str
    baseline: float | None
    candidate: float | None
    sample: int  # conversations (or labelled ones, for quality rates) behind each side

    @property
    def difference(self) -> float | None:
        if self.baseline is None or self.candidate is None:
            return None
        return self.candidate - self.baseline

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "name": self.name,
            "baseline": rounded(self.baseline),
            "candidate": rounded(self.candidate),
            "difference": rounded(self.difference),
            "n": self.sample,
        }


@dataclass(frozen=True, slots=True)
class ReplayDiff:
    baseline_version: str
    candidate_version: str
    conversations: int
    turns: int
    changed_turns: int
    changed_conversations: int
    kinds: tuple[KindSummary, ...]  # in LAYERS then KINDS order; only kinds that changed
    origins: dict[str, int]  # changed turns by the first layer that differs
    outcomes: dict[tuple[str, str], int]  # conversation outcome before -> after, only those that moved
    rates: tuple[RateComparison, ...]
    changes: tuple[Change, ...]  # every change, in conversation and turn order
    workspace: WorkspaceDiff | None = None

    @property
    def empty(self) -> bool:
        return not self.changes

    def layer(self, name: str) -> list[KindSummary]:
        return [k for k in self.kinds if k.layer == name]

    def count(self, layer: str, kind: str) -> int:
        return next((k.count for k in self.kinds if (k.layer, k.kind) == (layer, kind)), 0)

    def as_dict(self) -> dict[str, Any]:
        layers: dict[str, dict[str, Any]] = {}
        for summary in self.kinds:
            layers.setdefault(summary.layer, {})[summary.kind] = summary.as_dict()
        return {
            "baseline_version": self.baseline_version,
            "candidate_version": self.candidate_version,
            "workspace_diff": workspace_diff_dict(self.workspace) if self.workspace else None,
            "conversations": self.conversations,
            "turns": self.turns,
            "changed_turns": self.changed_turns,
            "changed_conversations": self.changed_conversations,
            "rates": [r.as_dict() for r in self.rates],
            "outcomes": [
                {"before": before, "after": after, "count": n} for (before, after), n in self.outcomes.items()
            ],
            "origins": self.origins,
            "layers": layers,
            "changes": [c.as_dict() for c in self.changes],
        }


def _collection_dict(diff: CollectionDiff) -> dict[str, Any]:
    return {
        "added": list(diff.added),
        "removed": list(diff.removed),
        "changed": {
            name: [{"path": c.path, "old": c.old, "new": c.new} for c in changes]
            for name, changes in diff.changed.items()
        },
        "reordered": diff.reordered,
    }


def workspace_diff_dict(diff: WorkspaceDiff) -> dict[str, Any]:
    return {
        "old_version": diff.old_version,
        "new_version": diff.new_version,
        "empty": diff.empty,
        "intents": _collection_dict(diff.intents),
        "facts": _collection_dict(diff.facts),
        "actions": _collection_dict(diff.actions),
        "rules": _collection_dict(diff.rules),
        "tiers": _collection_dict(diff.tiers),
        "settings": [{"path": c.path, "old": c.old, "new": c.new} for c in diff.settings],
        "summary": diff.summary(),
    }


def _turn_changes(
    before: TurnSnapshot, after: TurnSnapshot, edited_facts: frozenset[str]
) -> list[tuple[str, str, Any, Any]]:
    """(layer, kind, before, after) for each kind that differs, in LAYERS order."""
    found: list[tuple[str, str, Any, Any]] = []

    def compare(layer: str, kind: str, old: Any, new: Any) -> None:
        if old != new:
            found.append((layer, kind, old, new))

    compare("routing", "intent", before.intent, after.intent)
    compare("routing", "confidence", before.confidence, after.confidence)
    compare("strategy", "rules", list(before.rules), list(after.rules))
    compare("strategy", "tier", before.tier, after.tier)
    compare("resolution", "mechanism", before.mechanism, after.mechanism)
    compare("knowledge", "facts", list(before.facts), list(after.facts))
    edited = sorted(edited_facts.intersection(before.facts).intersection(after.facts))
    if edited:
        # Cited by both runs under the same id, but the candidate's fact says something else.
        found.append(("knowledge", "fact_content", edited, edited))
    compare("actions", "action", list(before.actions), list(after.actions))
    if before.actions == after.actions:
        # Arguments and status only mean something for the same calls; other calls are an "action" change.
        compare("actions", "arguments", dict(before.arguments), dict(after.arguments))
        compare("actions", "status", dict(before.statuses), dict(after.statuses))
    compare("orchestration", "decision", before.decision, after.decision)
    compare("orchestration", "reason", before.reason, after.reason)
    compare("orchestration", "queue", before.queue, after.queue)
    compare("reply", "reply", before.reply, after.reply)
    return found


def compare_replays(
    baseline: Sequence[ReplayedConversation],
    candidate: Sequence[ReplayedConversation],
    *,
    workspace: WorkspaceDiff | None = None,
    examples: int = DEFAULT_EXAMPLES,
) -> ReplayDiff:
    """Pairs the two runs by script id and turn; `workspace` (the version diff) is shown at the top and tells
    which cited facts were edited. Scripts only one run has are a programming error (ValueError)."""
    candidate_by_id = {c.script.id: c for c in candidate}
    if [c.script.id for c in baseline] != [c.script.id for c in candidate]:
        missing = sorted({c.script.id for c in baseline} ^ set(candidate_by_id))
        raise ValueError(f"the two runs replayed different conversations: {missing or 'order differs'}")
    edited = frozenset(workspace.facts.changed) if workspace is not None else frozenset()
    changes: list[Change] = []
    origins: Counter[str] = Counter()
    changed_conversations: set[str] = set()
    turns = 0
    for old in baseline:
        new = candidate_by_id[old.script.id]
        pairs = max(len(old.turns), len(new.turns))
        for index in range(pairs):
            turns += 1
            before = old.turns[index] if index < len(old.turns) else None
            after = new.turns[index] if index < len(new.turns) else None
            reference = before or after
            assert reference is not None
            a = snapshot(before) if before else _NO_TURN
            b = snapshot(after) if after else _NO_TURN
            found = _turn_changes(a, b, edited)
            if not found:
                continue
            origins[found[0][0]] += 1
            changed_conversations.add(old.script.id)
            intent = a.intent or b.intent or NO_INTENT
            changes.extend(
                Change(layer, kind, old.script.id, index + 1, reference.text, intent, x, y)
                for layer, kind, x, y in found
            )
    return ReplayDiff(
        baseline_version=_version(baseline, workspace.old_version if workspace else ""),
        candidate_version=_version(candidate, workspace.new_version if workspace else ""),
        conversations=len(baseline),
        turns=turns,
        changed_turns=sum(origins.values()),
        changed_conversations=len(changed_conversations),
        kinds=_summaries(changes, examples),
        origins={layer: origins[layer] for layer in LAYERS if origins[layer]},
        outcomes=_moved_outcomes(baseline, candidate_by_id),
        rates=headline_rates(baseline, candidate),
        changes=tuple(changes),
        workspace=workspace,
    )


# A turn one run has and the other does not (a message merged into a burst on one side only).
_NO_TURN = TurnSnapshot(None, None, (), None, None, (), (), (), (), "no_turn", None, None, None)


def _version(run: Sequence[ReplayedConversation], fallback: str) -> str:
    versions = {str(t.workspace_version) for c in run for t in c.traces}
    return fallback or (versions.pop() if len(versions) == 1 else "")


def _summaries(changes: Sequence[Change], examples: int) -> tuple[KindSummary, ...]:
    grouped: dict[tuple[str, str], list[Change]] = defaultdict(list)
    for change in changes:
        grouped[(change.layer, change.kind)].append(change)
    summaries = []
    for layer in LAYERS:
        for kind in KINDS[layer]:
            group = grouped.get((layer, kind))
            if not group:
                continue
            by_intent = Counter(c.intent for c in group)
            summaries.append(
                KindSummary(
                    layer=layer,
                    kind=kind,
                    count=len(group),
                    by_intent=dict(sorted(by_intent.items(), key=lambda item: (-item[1], item[0]))),
                    examples=tuple(group[: max(0, examples)]),
                )
            )
    return tuple(summaries)


def _moved_outcomes(
    baseline: Sequence[ReplayedConversation], candidate_by_id: dict[str, ReplayedConversation]
) -> dict[tuple[str, str], int]:
    moved: Counter[tuple[str, str]] = Counter()
    for old in baseline:
        before, after = old.outcome().outcome, candidate_by_id[old.script.id].outcome().outcome
        if before != after:
            moved[(before, after)] += 1
    return dict(moved.most_common())


def headline_rates(
    baseline: Sequence[ReplayedConversation], candidate: Sequence[ReplayedConversation]
) -> tuple[RateComparison, ...]:
    """Automation and escalation rates of both runs; routing accuracy and outcome agreement (the replay's
    quality measures) when the scripts say what they expect."""
    old = [c.outcome() for c in baseline]
    new = [c.outcome() for c in candidate]
    total_old, total_new = overall(old), overall(new)
    agree_old, agree_new = agreement(old), agreement(new)
    rates = [
        RateComparison("automation", total_old.automation_rate, total_new.automation_rate, len(old)),
        RateComparison("escalation", total_old.escalation_rate, total_new.escalation_rate, len(old)),
    ]
    if agree_old.labelled_intents:
        rates.append(
            RateComparison(
                "routing_accuracy",
                agree_old.routing_accuracy,
                agree_new.routing_accuracy,
                agree_old.labelled_intents,
            )
        )
    if agree_old.labelled_outcomes:
        rates.append(
            RateComparison(
                "outcome_agreement",
                agree_old.outcome_agreement,
                agree_new.outcome_agreement,
                agree_old.labelled_outcomes,
            )
        )
    return tuple(rates)
