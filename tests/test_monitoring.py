"""Monitoring: conversation outcomes from turns, CSAT, metrics by slice with quality always beside automation,
and the design-based quality estimate (human-only and prediction-powered) from the store's sums."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, update

from cxstack.domain.models import (
    ConversationId,
    Decision,
    Layer,
    MessageId,
    Trace,
    TraceId,
    TraceStep,
    WorkspaceVersionId,
    new_id,
)
from cxstack.domain.ports import TurnCommit
from cxstack.domain.quality import OutcomeRules, QualitySums, UnknownConversationError
from cxstack.monitoring.quality import (
    QualityPolicy,
    estimate_quality,
    human_only,
    metrics,
    prediction_powered,
    sums_of_units,
)
from cxstack.store.outcomes import OUTCOMES
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.store_contract import inbound
from cxstack.workspace.models import MonitoringSettings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> SqlAlchemyStore:
    engine: Engine = request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    return SqlAlchemyStore(engine)


def turn(
    store: SqlAlchemyStore,
    conversation: str,
    at: datetime,
    *,
    intent: str | None = "order_status",
    mechanism: str | None = "action",
    outcome: str = "automated",
    confidence: float = 0.9,
    state: dict[str, Any] | None = None,
    tier: str = "standard",
    language: str | None = "en",
    reason: str | None = None,
    channel: str = "webchat",
    version: str = "wsv-1",
    text: str = "where is my order?",
) -> None:
    message = store.ingest(
        inbound(new_id("ext"), conversation, text, channel=channel, received_at=at)
    ).message
    steps = [
        TraceStep(Layer.ORCHESTRATION, "language", {}, {"detected": language}),
        TraceStep(Layer.STRATEGY, "assess", {}, {"tier": tier}),
    ]
    trace = Trace(
        id=TraceId(new_id("trc")),
        conversation_id=ConversationId(conversation),
        message_id=MessageId(message.id),
        workspace_version=WorkspaceVersionId(version),
        steps=steps,
        intent=intent,
        intent_confidence=confidence,
        mechanism=mechanism,
        decision=Decision.ESCALATE if outcome == "escalated" else Decision.CONTINUE,
        outcome=outcome,
        reply="ok",
        reason_code=reason,
        created_at=at,
        turn_at=at,
    )
    store.commit_turn(TurnCommit(ConversationId(conversation), message.id, trace, None, state or {}))


def story(store: SqlAlchemyStore) -> None:
    """Six conversations, one of each kind of ending."""
    day = timedelta(days=1)
    # greeted, then the bot resolved the request: the greeting is not the main intent
    turn(store, "resolved", NOW - 3 * day, intent="greeting", mechanism="conversational")
    turn(store, "resolved", NOW - 3 * day + timedelta(minutes=1), tier="vip")
    # a thank-you hours later is not a return
    turn(
        store,
        "resolved",
        NOW - 3 * day + timedelta(hours=3),
        intent="thanks",
        mechanism="conversational",
        tier="vip",
    )
    turn(store, "escalated", NOW - 2 * day, intent="refund", outcome="escalated", reason="policy:vip")
    turn(store, "abandoned", NOW - 2 * day, outcome="automated", state={"pending_action": {"slot": "order"}})
    turn(store, "talking", NOW - timedelta(hours=1), outcome="clarified", intent=None, mechanism=None)
    turn(store, "reopened", NOW - 4 * day)
    turn(store, "reopened", NOW - 2 * day, intent="refund")
    turn(store, "quick_followup", NOW - 3 * day)
    turn(store, "quick_followup", NOW - 3 * day + timedelta(minutes=2), intent="refund", channel="webchat")


def outcomes_of(store: SqlAlchemyStore, rules: OutcomeRules = OutcomeRules()) -> dict[str, str]:
    with store.engine.connect() as connection:
        from cxstack.store.outcomes import outcome_case

        rows = connection.execute(
            OUTCOMES.select().with_only_columns(OUTCOMES.c.conversation_id, outcome_case(rules, NOW))
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_each_conversation_gets_its_outcome_from_its_turns(store: SqlAlchemyStore) -> None:
    story(store)
    assert outcomes_of(store) == {
        "resolved": "automated_resolved",
        "escalated": "escalated",
        "abandoned": "abandoned",
        "talking": "in_progress",
        "reopened": "reopened",
        "quick_followup": "automated_resolved",
    }
    # the same timestamps under a 1-day reopening window: coming back after 2 days is a new request
    assert outcomes_of(store, OutcomeRules(reopen_days=1))["reopened"] == "automated_resolved"
    with store.engine.connect() as connection:
        row = connection.execute(OUTCOMES.select().where(OUTCOMES.c.conversation_id == "resolved")).one()
    assert (row.intent, row.mechanism, row.tier, row.language, row.turns) == (
        "order_status",
        "action",
        "vip",
        "en",
        3,
    )


def test_slices_count_outcomes_and_weeks_add_up_days(store: SqlAlchemyStore) -> None:
    story(store)
    rules = OutcomeRules()
    by_intent = {r.key: r for r in store.slice_counts("intent", rules=rules, now=NOW)}
    assert by_intent["order_status"].conversations == 4
    assert by_intent["order_status"].automated_resolved == 2
    assert by_intent["refund"].escalated == 1
    assert by_intent["(none)"].in_progress == 1
    everything = store.slice_counts("all", rules=rules, now=NOW)[0]
    assert everything.conversations == 6
    days = store.slice_counts("day", rules=rules, now=NOW)
    weeks = store.slice_counts("week", rules=rules, now=NOW)
    assert sum(d.conversations for d in days) == sum(w.conversations for w in weeks) == 6
    assert [d.key for d in days] == sorted(d.key for d in days)
    assert all(datetime.fromisoformat(w.key).weekday() == 0 for w in weeks)
    only_vip = store.slice_counts("all", rules=rules, now=NOW, where={"tier": "vip"})[0]
    assert only_vip.conversations == 1
    since = store.slice_counts("all", rules=rules, now=NOW, since=NOW - timedelta(days=2, hours=1))[0]
    assert since.conversations == 3  # escalated, abandoned, talking (reopened started 4 days ago)
    with pytest.raises(ValueError, match="unknown filter"):
        store.slice_counts("all", rules=rules, now=NOW, where={"customer_id": "x"})


def test_csat_is_recorded_replaced_and_refused_for_unknown_conversations(store: SqlAlchemyStore) -> None:
    story(store)
    store.record_csat("resolved", 2)
    store.record_csat("resolved", 5, "quick and right")  # the later answer replaces the first
    store.record_csat("escalated", 3)
    with pytest.raises(UnknownConversationError):
        store.record_csat("nobody", 4)
    with pytest.raises(ValueError, match="between 1 and 5"):
        store.record_csat("resolved", 6)
    row = metrics(store, MonitoringSettings(), "all", now=NOW).overall
    assert row.csat == 4.0
    assert row.counts.csat_count == 2 and row.counts.csat_satisfied == 1


def test_rebuilding_from_traces_gives_the_rows_the_commits_kept(store: SqlAlchemyStore) -> None:
    story(store)
    store.record_csat("resolved", 4)
    with store.engine.connect() as connection:
        before = {r.conversation_id: dict(r._mapping) for r in connection.execute(OUTCOMES.select())}
    assert store.rebuild_outcomes() == 6
    with store.engine.connect() as connection:
        after = {r.conversation_id: dict(r._mapping) for r in connection.execute(OUTCOMES.select())}
    assert after == before


def test_automation_is_never_reported_without_quality(store: SqlAlchemyStore) -> None:
    story(store)
    report = metrics(store, MonitoringSettings(), "intent", now=NOW)
    for row in [*report.rows, report.overall]:
        shown = row.as_dict()
        assert "automation_rate" in shown and "quality" in shown
        assert shown["quality"]["method"] == "insufficient"
        assert shown["quality"]["rate"] is None  # no reviews: no number that looks solid
    overall = report.overall.as_dict()
    assert overall["settled"] == 5
    assert overall["automation_rate"]["estimate"] == pytest.approx(2 / 5)
    low, high = overall["automation_rate"]["ci"]
    assert low < 0.4 < high


# ---- the estimator ----------------------------------------------------------------------------------------


def population(
    n: int, rate: float, accuracy: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    human = (rng.random(n) < rate).astype(float)
    judge = np.where(rng.random(n) < accuracy, human, 1 - human)
    return human, judge


def sums_of(h: np.ndarray, j: np.ndarray | None, pi: np.ndarray, drawn: np.ndarray) -> QualitySums:
    return sums_of_units(h, j, pi, drawn)


def test_human_only_is_the_hajek_estimator_with_its_linearised_variance() -> None:
    rng = np.random.default_rng(3)
    h, _ = population(400, 0.7, 1.0, rng)
    pi = rng.uniform(0.1, 0.6, 400)
    drawn = rng.random(400) < pi
    got = human_only(sums_of(h, None, pi, drawn), 1.959963984540054)
    assert got is not None
    xi = drawn
    theta = (h[xi] / pi[xi]).sum() / (1 / pi[xi]).sum()
    variance = ((1 - pi[xi]) / pi[xi] ** 2 * (h[xi] - theta) ** 2).sum() / (1 / pi[xi]).sum() ** 2
    assert got.estimate == pytest.approx(theta, abs=1e-12)
    assert got.high - got.estimate == pytest.approx(1.959963984540054 * math.sqrt(variance), abs=1e-12)


def test_ppi_from_sums_equals_the_difference_estimator_on_the_units() -> None:
    rng = np.random.default_rng(5)
    h, j = population(600, 0.8, 0.9, rng)
    pi = np.full(600, 0.2)
    drawn = rng.random(600) < pi
    got = prediction_powered(sums_of(h, j, pi, drawn), 1.959963984540054, lam=1.0)
    assert got is not None
    interval, lam = got
    r = (h - j)[drawn]
    r_bar = (r / 0.2).sum() / (1 / pi[drawn]).sum()
    theta = j.mean() + r_bar
    variance = ((1 - 0.2) / 0.04 * (r - r_bar) ** 2).sum() / (1 / pi[drawn]).sum() ** 2
    assert lam == 1.0
    assert interval.estimate == pytest.approx(theta, abs=1e-12)
    assert interval.high - interval.estimate == pytest.approx(
        1.959963984540054 * math.sqrt(variance), abs=1e-12
    )


def test_a_slice_reviewed_in_full_has_no_sampling_error() -> None:
    rng = np.random.default_rng(1)
    h, j = population(50, 0.6, 0.8, rng)
    pi = np.ones(50)
    got = estimate_quality(sums_of(h, j, pi, np.ones(50, dtype=bool)), QualityPolicy(min_pairs=10))
    assert got.value is not None
    assert got.value.estimate == pytest.approx(h.mean())
    assert got.value.low == pytest.approx(got.value.high)


@pytest.mark.parametrize("accuracy", [0.7, 0.9])
def test_the_interval_covers_the_true_rate_about_95_times_in_100(accuracy: float) -> None:
    """Repeated draws from one population (as the sampler draws): coverage near 95 %, and a trusted judge
    narrows the interval. 400 repetitions: a 95 % interval's coverage lies in [0.92, 0.98] by chance."""
    rng = np.random.default_rng(11)
    h, j = population(3000, 0.75, accuracy, rng)
    truth = h.mean()
    pi = np.where(rng.random(3000) < 0.3, 0.15, 0.05)  # oversampled stratum
    policy = QualityPolicy(trust_threshold=0.0, min_pairs=2)
    covered = {"ppi": 0, "human": 0}
    widths: dict[str, list[float]] = {"ppi": [], "human": []}
    for _ in range(400):
        drawn = rng.random(3000) < pi
        estimate = estimate_quality(sums_of(h, j, pi, drawn), policy)
        assert estimate.value is not None and estimate.human_only is not None
        for name, interval in (("ppi", estimate.value), ("human", estimate.human_only)):
            covered[name] += interval.low <= truth <= interval.high
            widths[name].append(interval.high - interval.low)
    assert 0.92 <= covered["ppi"] / 400 <= 0.98
    assert 0.92 <= covered["human"] / 400 <= 0.98
    ratio = float(np.mean(widths["ppi"]) / np.mean(widths["human"]))
    assert ratio < (0.75 if accuracy == 0.9 else 1.0001)


def test_reviews_still_pending_widen_the_interval_and_keep_its_coverage() -> None:
    """Half the draws reviewed (a random half, as the queue serves them): still about 95 % coverage, with a
    wider interval than when every draw is reviewed."""
    rng = np.random.default_rng(21)
    h, j = population(3000, 0.8, 0.85, rng)
    truth = h.mean()
    pi = np.where(rng.random(3000) < 0.3, 0.3, 0.1)
    policy = QualityPolicy(trust_threshold=0.0, min_pairs=2)
    covered, widths, full_widths = 0, [], []
    for _ in range(400):
        drawn = rng.random(3000) < pi
        reviewed = drawn & (rng.random(3000) < 0.5)
        partial = estimate_quality(
            sums_of_units(h, j, pi, reviewed, pending=int((drawn & ~reviewed).sum())), policy
        )
        full = estimate_quality(sums_of_units(h, j, pi, drawn), policy)
        assert partial.human_only is not None and full.human_only is not None
        covered += partial.human_only.low <= truth <= partial.human_only.high
        widths.append(partial.human_only.high - partial.human_only.low)
        full_widths.append(full.human_only.high - full.human_only.low)
    assert 0.92 <= covered / 400 <= 0.98
    assert np.mean(widths) > 1.3 * np.mean(full_widths)


def test_an_untrusted_or_unproven_judge_leaves_the_estimate_to_people() -> None:
    rng = np.random.default_rng(2)
    h, j = population(500, 0.8, 0.6, rng)  # a poor judge
    pi = np.full(500, 0.3)
    drawn = rng.random(500) < pi
    got = estimate_quality(sums_of(h, j, pi, drawn), QualityPolicy())
    assert not got.trusted and got.method == "human"
    assert got.value == got.human_only
    assert "below the 80%" in got.note
    few = estimate_quality(sums_of(h[:20], j[:20], pi[:20], drawn[:20]), QualityPolicy())
    assert few.method == "insufficient" and few.value is None


def test_the_store_sums_equal_the_sums_of_the_units(store: SqlAlchemyStore) -> None:
    rng = random.Random(4)
    units: list[tuple[str, float, bool, float | None, float | None]] = []
    for index in range(40):
        conversation = f"c{index}"
        turn(store, conversation, NOW - timedelta(days=2), intent="order_status" if index % 2 else "refund")
        pi = rng.choice([0.1, 0.5, 1.0])
        sampled = rng.random() < 0.6
        reviewed = sampled and index % 7 != 0  # a few drawn but not reviewed yet: left out
        h = float(rng.random() < 0.7) if reviewed else None
        j = float(rng.random() < 0.7) if index % 5 else None  # some unjudged
        units.append((conversation, pi, sampled, h, j))
        with store.engine.begin() as connection:
            connection.execute(
                update(OUTCOMES)
                .where(OUTCOMES.c.conversation_id == conversation)
                .values(
                    offered_at=NOW,
                    sample_pi=pi,
                    sampled=sampled,
                    reviews=1 if h is not None else 0,
                    human_quality=h,
                    judge_passed=j,
                )
            )
    got = store.slice_counts("all", rules=OutcomeRules(), now=NOW)[0].quality
    kept = [u for u in units if not (u[2] and u[3] is None)]
    assert got.pending == sum(1 for u in units if u[2] and u[3] is None)
    assert got.units == len(kept)
    xi = [u for u in kept if u[2]]
    assert got.reviewed == len(xi)
    assert got.c == pytest.approx(sum(1 / u[1] for u in xi))
    assert got.a == pytest.approx(sum(u[3] / u[1] for u in xi))  # type: ignore[operator]
    assert got.uhh == pytest.approx(sum(u[3] ** 2 / u[1] ** 2 for u in xi))  # type: ignore[operator]
    assert got.vhh == pytest.approx(sum(u[3] ** 2 / u[1] for u in xi))  # type: ignore[operator]
    both = [u for u in xi if u[4] is not None]
    assert got.judged_units == sum(1 for u in kept if u[4] is not None)
    assert got.judged_reviewed == len(both)
    assert got.judged_uhj == pytest.approx(
        sum(u[3] * u[4] / u[1] ** 2 for u in both)  # type: ignore[operator]
    )
    assert got.judged_agree == pytest.approx(sum(1 - abs(u[3] - u[4]) for u in both))  # type: ignore[operator]
