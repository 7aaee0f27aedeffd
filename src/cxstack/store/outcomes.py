"""The per-conversation outcome row (table conversation_outcomes): folded from each turn at its commit, in the
same transaction, and rebuilt from the traces when needed (the migration that added it, `cxstack monitor
rebuild`). The rules that turn its timestamps into an outcome are in `outcome_case` (applied when read)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, case, literal, or_, select

from cxstack.domain.models import Decision, Layer, Trace
from cxstack.domain.quality import (
    COURTESY_MECHANISM,
    RETURN_GAP,
    SLICES,
    TRACE_ESCALATED,
    TRACE_WAITS,
    WAITING_STATE_KEYS,
    OutcomeRules,
    QualitySums,
    ResolutionOutcome,
    Slice,
    SliceCounts,
    UnknownConversationError,
)
from cxstack.store.codec import as_utc, llm_usage_fields
from cxstack.store.orm import ConversationOutcomeRow, TraceRow

OUTCOMES: Table = ConversationOutcomeRow.__table__  # type: ignore[assignment]
_TRACES: Table = TraceRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class TurnFacts:
    """What one turn contributes to its conversation's outcome row."""

    at: datetime
    channel: str
    intent: str | None
    mechanism: str | None
    confidence: float | None
    outcome: str
    reason_code: str | None
    workspace_version: str
    variant: str | None
    tier: str | None
    language: str | None
    cost_micros: int | None
    waiting: bool

    @classmethod
    def of(cls, trace: Trace, channel: str, state: dict[str, Any] | None) -> TurnFacts:
        tier = language = None
        for step in trace.steps:
            if step.layer == Layer.STRATEGY and step.name == "assess":
                tier = step.output.get("tier") or tier
            elif step.layer == Layer.ORCHESTRATION and step.name == "language":
                language = language or step.output.get("detected")
        # A clarifying question or a "not understood" waits on the customer's next words, as a slot does.
        waits = (
            trace.outcome == TRACE_WAITS
            or trace.decision == Decision.CLARIFY
            or (state is not None and any(state.get(key) for key in WAITING_STATE_KEYS))
        )
        return cls(
            at=as_utc(trace.turn_at or trace.created_at),
            channel=channel,
            intent=trace.intent,
            mechanism=trace.mechanism,
            confidence=trace.intent_confidence,
            outcome=trace.outcome,
            reason_code=trace.reason_code,
            workspace_version=str(trace.workspace_version),
            variant=trace.variant,
            tier=str(tier) if tier else None,
            language=str(language) if language else None,
            cost_micros=llm_usage_fields(trace.steps)["llm_cost_micros"],
            waiting=waits,
        )


def fold(row: dict[str, Any] | None, turn: TurnFacts, conversation_id: str) -> dict[str, Any]:
    """The conversation's row after `turn` (a new dict; `row` is the one before, None for the first turn)."""
    if row is None:
        row = {
            "conversation_id": conversation_id,
            "channel": turn.channel,
            "tier": None,
            "language": None,
            "intent": None,
            "mechanism": None,
            "turns": 0,
            "min_confidence": None,
            "started_at": turn.at,
            "escalated_at": None,
            "escalation_reason": None,
            "resolved_at": None,
            "return_gap_s": None,
            "cost_micros": 0,
            "priced": False,
        }
    new = dict(row)
    courtesy = turn.mechanism == COURTESY_MECHANISM
    escalated = new["escalated_at"] is not None
    # A request after the bot resolved the conversation, once the customer had gone quiet: a return.
    if new["resolved_at"] is not None and not escalated and not courtesy and turn.intent is not None:
        since_last = (turn.at - as_utc(new["last_turn_at"])).total_seconds()
        gap = (turn.at - as_utc(new["resolved_at"])).total_seconds()
        if since_last >= RETURN_GAP.total_seconds() and (
            new["return_gap_s"] is None or gap < new["return_gap_s"]
        ):
            new["return_gap_s"] = gap
    new["turns"] += 1
    new["last_turn_at"] = turn.at
    new["workspace_version"] = turn.workspace_version
    new["variant"] = turn.variant or new.get("variant")
    new["tier"] = turn.tier or new["tier"]
    new["language"] = new["language"] or turn.language
    # The main intent is the first request; a greeting holds the place only until one comes.
    first_request = new["intent"] is None or (new["mechanism"] == COURTESY_MECHANISM and not courtesy)
    if turn.intent is not None and first_request:
        new["intent"], new["mechanism"] = turn.intent, turn.mechanism
    if turn.confidence is not None:
        current = new["min_confidence"]
        new["min_confidence"] = turn.confidence if current is None else min(current, turn.confidence)
    if turn.cost_micros is not None:
        new["cost_micros"] += turn.cost_micros
        new["priced"] = True
    if turn.outcome in TRACE_ESCALATED and not escalated:
        new["escalated_at"], new["escalation_reason"] = turn.at, turn.reason_code
    new["waiting"] = turn.waiting
    answered = turn.outcome == "automated" and turn.intent is not None and not turn.waiting
    if answered and new["escalated_at"] is None and not courtesy:
        new["resolved_at"] = turn.at
    return new


def record_turn(connection: Connection, conversation_id: str, turn: TurnFacts) -> None:
    found = connection.execute(select(OUTCOMES).where(OUTCOMES.c.conversation_id == conversation_id)).first()
    row = fold(dict(found._mapping) if found is not None else None, turn, conversation_id)
    if found is None:
        connection.execute(OUTCOMES.insert().values(**row))
    else:
        # a judgement was of the conversation as it was: the next judge run judges it again
        row.update(judge_version=None, judge_passed=None, judge_overall=None, judge_error=None)
        connection.execute(
            OUTCOMES.update().where(OUTCOMES.c.conversation_id == conversation_id).values(**row)
        )


def rebuild_outcomes(connection: Connection) -> int:
    """Every conversation's row again from its traces, streamed in order; CSAT, sampling, reviews and judge
    labels stay as they are. Returns the number of conversations."""
    from cxstack.store.codec import trace_from_fields
    from cxstack.store.orm import ConversationRow

    conversations: Table = ConversationRow.__table__  # type: ignore[assignment]
    known = {r.conversation_id for r in connection.execute(select(OUTCOMES.c.conversation_id))}
    query = (
        select(_TRACES, conversations.c.channel, conversations.c.state.label("conversation_state"))
        .join(conversations, conversations.c.id == _TRACES.c.conversation_id)
        .order_by(_TRACES.c.conversation_id, _TRACES.c.created_at, _TRACES.c.id)
    )
    count = 0
    current: str | None = None
    traces: list[Trace] = []
    channel: str = "api"
    state: dict[str, Any] = {}

    def flush() -> None:
        row: dict[str, Any] | None = None
        for index, trace in enumerate(traces):
            last = index == len(traces) - 1
            row = fold(row, TurnFacts.of(trace, channel, state if last else None), trace.conversation_id)
        if row is None:
            return
        if row["conversation_id"] in known:
            connection.execute(
                OUTCOMES.update().where(OUTCOMES.c.conversation_id == row["conversation_id"]).values(**row)
            )
        else:
            connection.execute(OUTCOMES.insert().values(**row))

    for r in connection.execute(query, execution_options={"yield_per": 1000}):
        fields = dict(r._mapping)
        if fields["conversation_id"] != current:
            flush()
            count += current is not None
            current, traces = fields["conversation_id"], []
            channel, state = fields.pop("channel"), fields.pop("conversation_state") or {}
        fields.pop("channel", None)
        fields.pop("conversation_state", None)
        traces.append(trace_from_fields(fields))
    flush()
    return count + (current is not None)


def outcome_case(rules: OutcomeRules, now: datetime) -> Any:
    """The outcome of each row as a SQL expression (see domain/quality.py for the rules)."""
    c = OUTCOMES.c
    settled_before = as_utc(now) - timedelta(hours=rules.settle_hours)
    return case(
        (c.escalated_at.is_not(None), literal(ResolutionOutcome.ESCALATED.value)),
        (
            and_(c.resolved_at.is_not(None), c.return_gap_s <= rules.reopen_days * 86400.0),
            literal(ResolutionOutcome.REOPENED.value),
        ),
        (
            and_(c.resolved_at.is_not(None), c.waiting.is_(False)),
            literal(ResolutionOutcome.AUTOMATED_RESOLVED.value),
        ),
        (c.last_turn_at < settled_before, literal(ResolutionOutcome.ABANDONED.value)),
        else_=literal(ResolutionOutcome.IN_PROGRESS.value),
    )


def settled(rules: OutcomeRules, now: datetime) -> Any:
    """Rows whose outcome can no longer be in progress."""
    c = OUTCOMES.c
    return or_(
        c.escalated_at.is_not(None),
        and_(c.resolved_at.is_not(None), c.waiting.is_(False)),
        c.last_turn_at < as_utc(now) - timedelta(hours=rules.settle_hours),
    )


_DIMENSIONS = ("intent", "mechanism", "tier", "channel", "language", "workspace_version", "variant")


def _day(dialect: str) -> Any:
    from sqlalchemy import func

    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", OUTCOMES.c.started_at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", OUTCOMES.c.started_at)


def slice_counts(
    connection: Connection,
    by: Slice,
    *,
    rules: OutcomeRules,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    where: dict[str, str] | None,
) -> list[SliceCounts]:
    """Conversations started in [since, until) by outcome, with CSAT, cost and the quality sums, one row per
    value of `by` (weeks are summed from days: every figure here adds up)."""
    from sqlalchemy import Float, cast, func

    c = OUTCOMES.c
    if by == "all":
        key: Any = literal("all")
    elif by in ("day", "week"):
        key = _day(connection.dialect.name)
    elif by in _DIMENSIONS:
        key = func.coalesce(c[by], literal("(none)"))
    else:
        raise ValueError(f"unknown slice {by!r}: use one of {', '.join(SLICES)}")
    outcome = outcome_case(rules, now)
    is_settled = settled(rules, now)

    def count_if(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    def sum_if(condition: Any, value: Any) -> Any:
        return func.coalesce(func.sum(case((condition, value), else_=0.0)), 0.0)

    pi = cast(c.sample_pi, Float)
    h = c.human_quality
    j = c.judge_passed
    reviewed = and_(c.sampled.is_(True), c.reviews > 0, c.sample_pi > 0)
    unit = and_(c.offered_at.is_not(None), or_(c.sampled.is_(False), c.reviews > 0))
    labelled = and_(unit, reviewed)
    judged = and_(unit, j.is_not(None))
    both = and_(labelled, j.is_not(None))
    columns = [
        key.label("key"),
        func.count().label("conversations"),
        *(count_if(outcome == o.value).label(o.value) for o in ResolutionOutcome),
        count_if(and_(is_settled, j.is_(None))).label("unjudged"),
        func.count(c.csat).label("csat_count"),
        func.coalesce(func.sum(c.csat), 0).label("csat_sum"),
        count_if(c.csat >= 4).label("csat_satisfied"),
        func.coalesce(func.sum(c.cost_micros), 0).label("cost_micros"),
        count_if(c.priced.is_(True)).label("priced_conversations"),
        count_if(unit).label("q_units"),
        count_if(labelled).label("q_reviewed"),
        count_if(and_(c.offered_at.is_not(None), c.sampled.is_(True), c.reviews == 0)).label("q_pending"),
        sum_if(labelled, 1.0 / pi).label("q_c"),
        sum_if(labelled, h / pi).label("q_a"),
        sum_if(labelled, h * h / pi).label("q_vhh"),
        sum_if(labelled, 1.0 / (pi * pi)).label("q_u"),
        sum_if(labelled, h / (pi * pi)).label("q_uh"),
        sum_if(labelled, h * h / (pi * pi)).label("q_uhh"),
        count_if(judged).label("q_judged_units"),
        sum_if(judged, j).label("q_judged_pass"),
        count_if(both).label("q_judged_reviewed"),
        sum_if(both, 1.0 - func.abs(h - j)).label("q_judged_agree"),
        sum_if(both, 1.0 / pi).label("q_judged_c"),
        sum_if(both, h / pi).label("q_judged_a"),
        sum_if(both, j / pi).label("q_judged_b"),
        sum_if(both, h * h / pi).label("q_judged_vhh"),
        sum_if(both, h * j / pi).label("q_judged_vhj"),
        sum_if(both, j * j / pi).label("q_judged_vjj"),
        sum_if(both, 1.0 / (pi * pi)).label("q_judged_u"),
        sum_if(both, h / (pi * pi)).label("q_judged_uh"),
        sum_if(both, j / (pi * pi)).label("q_judged_uj"),
        sum_if(both, h * h / (pi * pi)).label("q_judged_uhh"),
        sum_if(both, h * j / (pi * pi)).label("q_judged_uhj"),
        sum_if(both, j * j / (pi * pi)).label("q_judged_ujj"),
    ]
    query = select(*columns).group_by(key)
    if since is not None:
        query = query.where(c.started_at >= as_utc(since))
    if until is not None:
        query = query.where(c.started_at < as_utc(until))
    for name, value in (where or {}).items():
        if name not in _DIMENSIONS:
            raise ValueError(f"unknown filter {name!r}: use one of {', '.join(_DIMENSIONS)}")
        query = query.where(c[name].is_(None) if value == "(none)" else c[name] == value)
    rows = [_slice(r._mapping) for r in connection.execute(query)]
    if by == "week":
        weeks: dict[str, SliceCounts] = {}
        for row in rows:
            day = date.fromisoformat(row.key)
            monday = (day - timedelta(days=day.weekday())).isoformat()
            weeks[monday] = weeks[monday] + row if monday in weeks else replace(row, key=monday)
        rows = list(weeks.values())
    if by in ("day", "week"):
        return sorted(rows, key=lambda r: r.key)
    return sorted(rows, key=lambda r: (-r.conversations, r.key))


def _slice(m: Any) -> SliceCounts:
    sums: dict[str, Any] = {
        name: (int if isinstance(getattr(QualitySums(), name), int) else float)(m[f"q_{name}"] or 0)
        for name in QualitySums.__dataclass_fields__
    }
    return SliceCounts(
        key=str(m["key"]),
        conversations=int(m["conversations"]),
        **{o.value: int(m[o.value] or 0) for o in ResolutionOutcome},
        unjudged=int(m["unjudged"] or 0),
        csat_count=int(m["csat_count"] or 0),
        csat_sum=float(m["csat_sum"] or 0),
        csat_satisfied=int(m["csat_satisfied"] or 0),
        cost_micros=int(m["cost_micros"] or 0),
        priced_conversations=int(m["priced_conversations"] or 0),
        quality=QualitySums(**sums),
    )


def record_csat(connection: Connection, conversation_id: str, score: int, comment: str, at: datetime) -> None:
    updated = connection.execute(
        OUTCOMES.update()
        .where(OUTCOMES.c.conversation_id == conversation_id)
        .values(csat=score, csat_comment=comment or None, csat_at=as_utc(at))
    )
    if updated.rowcount == 0:
        raise UnknownConversationError(conversation_id)
