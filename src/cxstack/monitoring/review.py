"""Human review: the sampler run, what a reviewer sees, and a review checked against the rubric.

Shared by the API (reviews page, /v1/reviews), the CLI (`cxstack review …`) and the service's periodic
sampling, so all three apply the same rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cxstack.domain.models import Message, Trace, new_id, utcnow
from cxstack.domain.quality import (
    Offer,
    OfferCandidate,
    OutcomeRules,
    QueueItem,
    Review,
    ReviewReason,
)
from cxstack.monitoring.quality import rules_of
from cxstack.monitoring.rubric import check_scores, effective_rubric, rubric_version
from cxstack.monitoring.sampling import decide
from cxstack.workspace.workspace import Workspace


class ReviewStore(Protocol):
    def unoffered(
        self, rules: OutcomeRules, now: datetime | None = None, limit: int = 500
    ) -> list[OfferCandidate]: ...
    def drawn_per_version(self, versions: set[str]) -> dict[str, int]: ...
    def record_offers(self, offers: list[Offer], now: datetime | None = None) -> int: ...
    def next_review_item(self, reviewer: str) -> QueueItem | None: ...
    def add_review(self, review: Review) -> Review: ...
    def list_messages(self, conversation_id: Any) -> list[Message]: ...
    def list_traces(self, conversation_id: Any = None, limit: int = 1000) -> list[Trace]: ...
    def review_queue_sizes(self) -> dict[str, int]: ...
    def list_reviews(
        self, *, conversation_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[Review]: ...


def as_review_store(store: object) -> ReviewStore:
    if not all(hasattr(store, name) for name in ("record_offers", "next_review_item", "add_review")):
        raise TypeError(f"{type(store).__name__} keeps no reviews: use the SQL store")
    return store  # type: ignore[return-value]


def sample(store: ReviewStore, workspace: Workspace, now: datetime | None = None, limit: int = 500) -> int:
    """Offers every settled conversation the sampler has not seen (up to `limit`); returns how many it
    drew for review."""
    now = now or utcnow()
    total = 0
    while True:
        candidates = store.unoffered(rules_of(workspace.settings.monitoring), now, limit)
        if not candidates:
            return total
        drawn = store.drawn_per_version({c.workspace_version for c in candidates})
        total += store.record_offers(decide(candidates, workspace.settings.review_sampling, drawn), now)
        if len(candidates) < limit:
            return total


def submit(
    store: ReviewStore,
    workspace: Workspace,
    *,
    conversation_id: str,
    reviewer: str,
    scores: Mapping[str, object],
    comment: str = "",
    reason: ReviewReason = ReviewReason.MANUAL,
    judge_version: str | None = None,
) -> Review:
    """Checks the scores against the workspace's rubric (ScoresInvalidError names the field) and stores the
    review with the rubric's version; UnknownConversationError, DuplicateReviewError from the store."""
    scored = check_scores(workspace.rubric, scores)
    return store.add_review(
        Review(
            id=new_id("rev"),
            conversation_id=conversation_id,
            reviewer=reviewer,
            rubric_version=rubric_version(workspace.rubric),
            scores=scored.scores,
            passed=scored.passed,
            reason=reason,
            comment=comment,
            judge_version=judge_version,
        )
    )


@dataclass(frozen=True, slots=True)
class ReviewPacket:
    """What a reviewer needs: the transcript, what the bot decided each turn, and the rubric."""

    item: QueueItem | None
    conversation_id: str
    transcript: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    rubric: dict[str, Any]
    rubric_version: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": None
            if self.item is None
            else {
                "id": self.item.id,
                "reason": self.item.reason.value,
                "stratum": self.item.stratum,
                "wanted": self.item.wanted,
                "done": self.item.done,
                "detail": self.item.detail,
            },
            "conversation_id": self.conversation_id,
            "transcript": self.transcript,
            "turns": self.turns,
            "rubric": self.rubric,
            "rubric_version": self.rubric_version,
        }


def packet(
    store: ReviewStore, workspace: Workspace, conversation_id: str, item: QueueItem | None = None
) -> ReviewPacket:
    messages = store.list_messages(conversation_id)
    traces = sorted(store.list_traces(conversation_id), key=lambda t: t.created_at)
    turns = []
    for trace in traces:
        resolved = [s.output for s in trace.steps if s.name.startswith("resolve:")]
        facts = [f.get("id") for out in resolved for f in out.get("facts") or [] if isinstance(f, dict)]
        actions = [
            {"action": a.get("action"), "ok": a.get("ok")}
            for out in resolved
            for a in out.get("actions") or []
            if isinstance(a, dict)
        ]
        turns.append(
            {
                "at": trace.created_at.isoformat(),
                "intent": trace.intent,
                "confidence": trace.intent_confidence,
                "mechanism": trace.mechanism,
                "decision": str(trace.decision),
                "outcome": trace.outcome,
                "reason": trace.reason_code,
                "facts": [f for f in facts if f],
                "actions": actions,
                "reply": trace.reply,
            }
        )
    return ReviewPacket(
        item=item,
        conversation_id=conversation_id,
        transcript=[
            {"role": str(m.role), "text": m.text, "at": m.created_at.isoformat(), "author": m.author}
            for m in messages
        ],
        turns=turns,
        rubric=packet_rubric(workspace),
        rubric_version=rubric_version(workspace.rubric),
    )


def next_packet(store: ReviewStore, workspace: Workspace, reviewer: str) -> ReviewPacket | None:
    item = store.next_review_item(reviewer)
    if item is None:
        return None
    return packet(store, workspace, item.conversation_id, item)


def packet_rubric(workspace: Workspace) -> dict[str, Any]:
    rubric = effective_rubric(workspace.rubric)
    return {
        "version": rubric_version(workspace.rubric),
        "criteria": [
            {
                "id": c.id,
                "description": c.description,
                "kind": c.kind,
                "scale": list(c.bounds),
                "pass_at": c.threshold,
                "gate": c.gate,
            }
            for c in rubric.criteria
        ],
    }
