"""Review sampling, the review queue and reviews, on the SQL store (see domain/quality.py).

A review updates its conversation's human label (the mean of its reviewers' passes) on the outcome row in the
same transaction, so quality by slice stays one grouped query."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, case, exists, func, literal, or_, select

from cxstack.domain.models import new_id
from cxstack.domain.quality import (
    DuplicateReviewError,
    Offer,
    OfferCandidate,
    OutcomeRules,
    QueueItem,
    Review,
    ReviewReason,
    UnknownConversationError,
)
from cxstack.store.codec import as_utc, clean_text
from cxstack.store.orm import ReviewQueueRow, ReviewRow
from cxstack.store.outcomes import OUTCOMES, settled

QUEUE: Table = ReviewQueueRow.__table__  # type: ignore[assignment]
REVIEWS: Table = ReviewRow.__table__  # type: ignore[assignment]


def unoffered(connection: Connection, rules: OutcomeRules, now: datetime, limit: int) -> list[OfferCandidate]:
    c = OUTCOMES.c
    rows = connection.execute(
        select(
            c.conversation_id, c.intent, c.mechanism, c.min_confidence, c.escalated_at, c.workspace_version
        )
        .where(c.offered_at.is_(None), settled(rules, now))
        .order_by(c.started_at, c.conversation_id)
        .limit(limit)
    )
    return [
        OfferCandidate(
            conversation_id=r.conversation_id,
            intent=r.intent,
            mechanism=r.mechanism,
            min_confidence=r.min_confidence,
            escalated=r.escalated_at is not None,
            workspace_version=r.workspace_version,
        )
        for r in rows
    ]


def drawn_per_version(connection: Connection, versions: set[str]) -> dict[str, int]:
    if not versions:
        return {}
    c = OUTCOMES.c
    rows = connection.execute(
        select(c.workspace_version, func.count())
        .where(c.workspace_version.in_(sorted(versions)), c.sampled.is_(True))
        .group_by(c.workspace_version)
    )
    return {r[0]: int(r[1]) for r in rows}


def record_offers(connection: Connection, offers: list[Offer], now: datetime) -> int:
    """Marks each conversation as seen by the sampler (its π, whether drawn); queues the drawn ones."""
    queued = 0
    for offer in offers:
        updated = connection.execute(
            OUTCOMES.update()
            .where(OUTCOMES.c.conversation_id == offer.conversation_id, OUTCOMES.c.offered_at.is_(None))
            .values(
                offered_at=as_utc(now),
                sample_pi=offer.pi,
                sampled=offer.sampled,
                sample_stratum=offer.stratum,
            )
        )
        if updated.rowcount and offer.sampled:
            queued += enqueue(
                connection,
                offer.conversation_id,
                ReviewReason.SAMPLE,
                stratum=offer.stratum,
                priority=offer.priority,
                wanted=offer.wanted,
                detail={"pi": round(offer.pi, 6), **offer.detail},
                now=now,
            )
    return queued


def enqueue(
    connection: Connection,
    conversation_id: str,
    reason: ReviewReason,
    *,
    stratum: str,
    priority: int = 0,
    wanted: int = 1,
    detail: dict[str, Any] | None = None,
    now: datetime,
) -> int:
    """1 if queued, 0 if the conversation is already queued for this reason."""
    present = connection.execute(
        select(QUEUE.c.id).where(QUEUE.c.conversation_id == conversation_id, QUEUE.c.reason == reason.value)
    ).first()
    if present is not None:
        return 0
    connection.execute(
        QUEUE.insert().values(
            id=new_id("rvq"),
            conversation_id=conversation_id,
            reason=reason.value,
            stratum=stratum,
            priority=priority,
            wanted=wanted,
            done=0,
            status="open",
            detail=detail or {},
            claimed_by=None,
            claimed_until=None,
            created_at=as_utc(now),
        )
    )
    return 1


def next_item(connection: Connection, reviewer: str, now: datetime, lease: timedelta) -> QueueItem | None:
    """The most urgent open item this reviewer has not reviewed and nobody else holds; claimed for `lease`."""
    q = QUEUE.c
    now = as_utc(now)
    reviewed_by_them = exists().where(
        REVIEWS.c.conversation_id == q.conversation_id,
        REVIEWS.c.reviewer == reviewer,
        REVIEWS.c.reason == q.reason,
    )
    row = connection.execute(
        select(QUEUE)
        .where(
            q.status == "open",
            or_(q.claimed_until.is_(None), q.claimed_until < now, q.claimed_by == reviewer),
            ~reviewed_by_them,
        )
        # within a priority, in the order of the random ids: the sample's reviews stay a random share of it
        .order_by(q.priority.desc(), q.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    connection.execute(
        QUEUE.update().where(q.id == row.id).values(claimed_by=reviewer, claimed_until=now + lease)
    )
    return _item(row._mapping)


def queue_sizes(connection: Connection) -> dict[str, int]:
    rows = connection.execute(
        select(QUEUE.c.reason, func.count()).where(QUEUE.c.status == "open").group_by(QUEUE.c.reason)
    )
    return {r[0]: int(r[1]) for r in rows}


def add_review(connection: Connection, review: Review, now: datetime) -> Review:
    found = connection.execute(
        select(OUTCOMES.c.conversation_id).where(OUTCOMES.c.conversation_id == review.conversation_id)
    ).first()
    if found is None:
        raise UnknownConversationError(review.conversation_id)
    duplicate = connection.execute(
        select(REVIEWS.c.id).where(
            REVIEWS.c.conversation_id == review.conversation_id,
            REVIEWS.c.reviewer == review.reviewer,
            REVIEWS.c.reason == review.reason.value,
        )
    ).first()
    if duplicate is not None:
        raise DuplicateReviewError(
            f"{review.reviewer} already reviewed {review.conversation_id} ({review.reason.value})"
        )
    at = as_utc(review.created_at or now)
    connection.execute(
        REVIEWS.insert().values(
            id=review.id,
            conversation_id=review.conversation_id,
            reviewer=clean_text(review.reviewer),
            rubric_version=review.rubric_version,
            scores=review.scores,
            passed=review.passed,
            reason=review.reason.value,
            comment=clean_text(review.comment),
            judge_version=review.judge_version,
            created_at=at,
        )
    )
    count, mean = connection.execute(
        select(func.count(), func.avg(case((REVIEWS.c.passed.is_(True), 1.0), else_=0.0))).where(
            REVIEWS.c.conversation_id == review.conversation_id
        )
    ).one()
    connection.execute(
        OUTCOMES.update()
        .where(OUTCOMES.c.conversation_id == review.conversation_id)
        .values(reviews=int(count), human_quality=float(mean))
    )
    q = QUEUE.c
    connection.execute(
        QUEUE.update()
        .where(q.conversation_id == review.conversation_id, q.reason == review.reason.value)
        .values(
            done=q.done + 1,
            status=_status_after(),
            claimed_by=None,
            claimed_until=None,
        )
    )
    return Review(**{**_review_fields(review), "created_at": at})


def _status_after() -> Any:
    q = QUEUE.c
    return case((q.done + 1 >= q.wanted, literal("done")), else_=literal("open"))


def _review_fields(review: Review) -> dict[str, Any]:
    return {name: getattr(review, name) for name in review.__dataclass_fields__}


def list_reviews(
    connection: Connection,
    *,
    conversation_id: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[Review]:
    query = select(REVIEWS).order_by(REVIEWS.c.created_at, REVIEWS.c.id).limit(limit)
    if conversation_id is not None:
        query = query.where(REVIEWS.c.conversation_id == conversation_id)
    if since is not None:
        query = query.where(REVIEWS.c.created_at >= as_utc(since))
    return [_review(r._mapping) for r in connection.execute(query)]


def strata(connection: Connection, since: datetime | None) -> list[dict[str, Any]]:
    """Per sampling stratum: conversations the sampler saw, drew and had reviewed, and their mean label."""
    c = OUTCOMES.c
    drawn = c.sampled.is_(True)
    query = (
        select(
            c.sample_stratum.label("stratum"),
            func.count().label("population"),
            func.sum(case((drawn, 1), else_=0)).label("drawn"),
            func.sum(case((and_(drawn, c.reviews > 0), 1), else_=0)).label("reviewed"),
            func.avg(case((drawn, c.human_quality), else_=None)).label("quality"),
        )
        .where(c.offered_at.is_not(None))
        .group_by(c.sample_stratum)
        .order_by(c.sample_stratum)
    )
    if since is not None:
        query = query.where(c.started_at >= as_utc(since))
    return [
        {
            "stratum": r.stratum or "(none)",
            "population": int(r.population),
            "drawn": int(r.drawn or 0),
            "reviewed": int(r.reviewed or 0),
            "quality": None if r.quality is None else float(r.quality),
        }
        for r in connection.execute(query)
    ]


def _item(m: Any) -> QueueItem:
    return QueueItem(
        id=m["id"],
        conversation_id=m["conversation_id"],
        reason=ReviewReason(m["reason"]),
        stratum=m["stratum"],
        priority=int(m["priority"]),
        wanted=int(m["wanted"]),
        done=int(m["done"]),
        created_at=as_utc(m["created_at"]),
        detail=dict(m["detail"] or {}),
    )


def _review(m: Any) -> Review:
    return Review(
        id=m["id"],
        conversation_id=m["conversation_id"],
        reviewer=m["reviewer"],
        rubric_version=m["rubric_version"],
        scores=dict(m["scores"]),
        passed=bool(m["passed"]),
        reason=ReviewReason(m["reason"]),
        comment=m["comment"],
        created_at=as_utc(m["created_at"]),
        judge_version=m["judge_version"],
    )
