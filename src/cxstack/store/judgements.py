"""Judge versions and judgements on the SQL store. A judgement also sets its conversation's judge label on
the outcome row (in the same transaction), so quality by slice stays one grouped query."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, or_, select

from cxstack.domain.models import new_id
from cxstack.domain.quality import Judgement, JudgeVersion, OutcomeRules
from cxstack.store.codec import as_utc, clean_text
from cxstack.store.orm import JudgementRow, JudgeVersionRow
from cxstack.store.outcomes import OUTCOMES, settled

JUDGEMENTS: Table = JudgementRow.__table__  # type: ignore[assignment]
VERSIONS: Table = JudgeVersionRow.__table__  # type: ignore[assignment]


def unjudged(
    connection: Connection, judge_version: str, rules: OutcomeRules, now: datetime, limit: int
) -> list[str]:
    """Settled conversations without a judgement by this version (never judged, judged by another version,
    or judged before their last turn), oldest first."""
    c = OUTCOMES.c
    rows = connection.execute(
        select(c.conversation_id)
        .where(settled(rules, now), or_(c.judge_version.is_(None), c.judge_version != judge_version))
        .order_by(c.started_at, c.conversation_id)
        .limit(limit)
    )
    return [r[0] for r in rows]


def record(connection: Connection, judgement: Judgement, now: datetime) -> None:
    at = as_utc(judgement.created_at or now)
    connection.execute(
        JUDGEMENTS.insert().values(
            id=new_id("jdg"),
            conversation_id=judgement.conversation_id,
            judge_version=judgement.judge_version,
            rubric_version=judgement.rubric_version,
            scores=judgement.scores,
            overall=judgement.overall,
            passed=judgement.passed,
            error=None if judgement.error is None else clean_text(judgement.error)[:2000],
            created_at=at,
        )
    )
    connection.execute(
        OUTCOMES.update()
        .where(OUTCOMES.c.conversation_id == judgement.conversation_id)
        .values(
            judge_version=judgement.judge_version,
            judge_passed=None if judgement.passed is None else float(judgement.passed),
            judge_overall=judgement.overall,
            judge_error=judgement.error,
        )
    )


def latest(connection: Connection, conversation_ids: list[str], judge_version: str) -> dict[str, Judgement]:
    if not conversation_ids:
        return {}
    rows = connection.execute(
        select(JUDGEMENTS)
        .where(
            JUDGEMENTS.c.conversation_id.in_(conversation_ids), JUDGEMENTS.c.judge_version == judge_version
        )
        .order_by(JUDGEMENTS.c.created_at)
    )
    found: dict[str, Judgement] = {}
    for r in rows:
        m = r._mapping
        found[m["conversation_id"]] = Judgement(
            conversation_id=m["conversation_id"],
            judge_version=m["judge_version"],
            rubric_version=m["rubric_version"],
            scores={k: float(v) for k, v in (m["scores"] or {}).items()},
            overall=m["overall"],
            passed=m["passed"],
            error=m["error"],
            created_at=as_utc(m["created_at"]),
        )
    return found


def add_version(connection: Connection, version: JudgeVersion, now: datetime) -> None:
    connection.execute(
        VERSIONS.insert().values(
            id=version.id,
            kind=version.kind,
            rubric_version=version.rubric_version,
            params=version.params,
            parent=version.parent,
            fit_fold=version.fit_fold,
            agreement=version.agreement,
            created_at=as_utc(version.created_at or now),
        )
    )


def versions(connection: Connection) -> list[JudgeVersion]:
    rows = connection.execute(select(VERSIONS).order_by(VERSIONS.c.created_at, VERSIONS.c.id))
    return [_version(r._mapping) for r in rows]


def set_agreement(connection: Connection, version_id: str, agreement: dict[str, Any]) -> None:
    connection.execute(VERSIONS.update().where(VERSIONS.c.id == version_id).values(agreement=agreement))


def _version(m: Any) -> JudgeVersion:
    return JudgeVersion(
        id=m["id"],
        kind=m["kind"],
        rubric_version=m["rubric_version"],
        params=dict(m["params"] or {}),
        parent=m["parent"],
        fit_fold=m["fit_fold"],
        created_at=as_utc(m["created_at"]),
        agreement=dict(m["agreement"] or {}),
    )
