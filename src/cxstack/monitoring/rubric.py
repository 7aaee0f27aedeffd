"""The rubric reviews and judges score against: the workspace's rubric.yaml, or cxstack's default, identified
by a hash of its content so every review and judgement keeps the rubric it was made against."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cxstack.workspace.models import Rubric, RubricCriterion

DEFAULT_RUBRIC = Rubric(
    criteria=[
        RubricCriterion(
            id="correctness",
            description="The reply is right for this customer: facts, amounts, dates and policy match the "
            "knowledge base and the back office.",
        ),
        RubricCriterion(
            id="groundedness",
            description="Every claim is supported by a cited fact or an action result; nothing invented.",
        ),
        RubricCriterion(
            id="policy_compliance",
            kind="pass_fail",
            description="Business rules were followed (caps, confirmations, identity, never-automate topics "
            "went to a person).",
        ),
        RubricCriterion(
            id="resolution",
            description="The need was met, or the handoff gave the person everything needed.",
        ),
        RubricCriterion(
            id="tone",
            gate=False,
            description="Friendly, concise, respectful; matches the tier's tone.",
        ),
    ]
)


def effective_rubric(rubric: Rubric) -> Rubric:
    return rubric if rubric.criteria else DEFAULT_RUBRIC


def rubric_version(rubric: Rubric) -> str:
    content = json.dumps(effective_rubric(rubric).model_dump(mode="json"), sort_keys=True)
    return "rub-" + hashlib.sha256(content.encode()).hexdigest()[:12]


class ScoresInvalidError(ValueError):
    """A review's scores do not fit the rubric; `field` names the offending one (scores.<criterion>)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class ScoredReview:
    scores: dict[str, int]
    passed: bool
    failed: tuple[str, ...]  # the gate criteria that did not pass


def check_scores(rubric: Rubric, scores: Mapping[str, object]) -> ScoredReview:
    """Every criterion scored, each within its scale, nothing else; whether the conversation passes."""
    criteria = {c.id: c for c in effective_rubric(rubric).criteria}
    unknown = sorted(set(scores) - set(criteria))
    if unknown:
        raise ScoresInvalidError(
            f"scores.{unknown[0]}", f"not a criterion of the rubric (criteria: {', '.join(criteria)})"
        )
    checked: dict[str, int] = {}
    for name, criterion in criteria.items():
        if name not in scores:
            raise ScoresInvalidError(f"scores.{name}", "missing: every criterion of the rubric is scored")
        value = scores[name]
        if isinstance(value, bool) and criterion.kind == "pass_fail":
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScoresInvalidError(f"scores.{name}", f"must be a whole number, not {value!r}")
        low, high = criterion.bounds
        if not low <= value <= high:
            raise ScoresInvalidError(f"scores.{name}", f"{value} is outside the scale {low}-{high}")
        checked[name] = value
    failed = tuple(name for name, c in criteria.items() if c.gate and checked[name] < c.threshold)
    return ScoredReview(scores=checked, passed=not failed, failed=failed)
