"""Human review: the sampler (probabilities, determinism, oversampling), the queue (claims, double reviews),
reviews checked against the rubric, the CLI and the API, and the quality rate they make possible."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from tests.conftest import write_workspace
from tests.test_monitoring import NOW, turn
from typer.testing import CliRunner

from cxstack.api.keys import ApiKeys
from cxstack.cli.main import app
from cxstack.domain.auth import ApiRole
from cxstack.domain.quality import (
    DuplicateReviewError,
    OfferCandidate,
    OutcomeRules,
    ReviewReason,
    UnknownConversationError,
)
from cxstack.monitoring.quality import metrics
from cxstack.monitoring.review import sample, submit
from cxstack.monitoring.rubric import ScoresInvalidError, check_scores, rubric_version
from cxstack.monitoring.sampling import decide, plan, reviews_needed
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.authz import TEST_HASHER
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.models import ReviewSampling, Rubric, RubricCriterion
from cxstack.workspace.workspace import Workspace

GOOD = {"correctness": 5, "groundedness": 4, "policy_compliance": 1, "resolution": 4, "tone": 3}
BAD = {**GOOD, "correctness": 2}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> SqlAlchemyStore:
    return SqlAlchemyStore(
        request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return load_workspace(write_workspace(tmp_path / "ws"))


def candidate(
    index: int, *, escalated: bool = False, confidence: float = 0.9, version: str = "v1"
) -> OfferCandidate:
    return OfferCandidate(f"c{index}", "order_status", "action", confidence, escalated, version)


# ---- the sampler ------------------------------------------------------------------------------------------


def test_each_conversation_gets_its_probability_and_the_draw_matches_it() -> None:
    settings = ReviewSampling(rate=0.1, new_version_reviews=0)
    offers = decide([candidate(i) for i in range(4000)], settings, {})
    assert {o.pi for o in offers} == {0.1}
    drawn = sum(o.sampled for o in offers)
    assert 330 <= drawn <= 470  # 400 expected; ±3.5 standard deviations
    assert decide([candidate(i) for i in range(4000)], settings, {}) == offers  # deterministic


def test_escalations_low_confidence_and_new_versions_are_oversampled() -> None:
    settings = ReviewSampling(rate=0.1, oversample=3, new_version_reviews=2)
    drawn = {"old": 5}
    offers = decide(
        [candidate(1, escalated=True, version="old"), candidate(2, confidence=0.3, version="old"),
         candidate(3, version="old"), candidate(4, version="new")],
        settings,
        drawn,
    )  # fmt: skip
    assert [round(o.pi, 6) for o in offers] == [0.3, 0.3, 0.1, 0.2]
    assert [o.stratum.rsplit("|", 1)[1] for o in offers] == [
        "escalated",
        "low_confidence",
        "normal",
        "normal",
    ]
    assert offers[3].detail == {"oversampled": ["new_version"]}
    capped = decide([candidate(5, escalated=True, version="x")], ReviewSampling(rate=0.5, oversample=3), {})
    assert capped[0].pi == 1.0 and capped[0].sampled


def test_a_share_of_draws_is_reviewed_twice() -> None:
    offers = decide([candidate(i) for i in range(3000)], ReviewSampling(rate=1.0, double=0.2), {})
    doubles = sum(o.wanted == 2 for o in offers)
    assert 480 <= doubles <= 720


def test_the_planner_needs_fewer_reviews_with_a_trusted_judge_and_never_more_than_a_stratum_holds() -> None:
    assert reviews_needed(0.5, 0.05, 0.95) == 385  # the textbook 1.96² · 0.25 / 0.05²
    assert reviews_needed(0.5, 0.05, 0.95, judge_error=0.1) == 154  # 1.96² · 0.1 / 0.05²
    assert reviews_needed(0.5, 0.05, 0.95, judge_error=0.03) == 47
    assert reviews_needed(0.5, 0.05, 0.95, population=40) == 37  # finite-population correction
    rows = plan(
        [{"stratum": "a", "population": 5000, "drawn": 80, "reviewed": 60, "quality": 0.9}],
        margin=0.05,
        confidence=0.95,
        judge_agreement=0.9,
    )
    # at p = 0.9 a judge wrong one time in ten does not help: the plan keeps the smaller number
    assert (rows[0].needed_human_only, rows[0].needed_with_judge) == (135, 150)
    assert rows[0].as_dict()["remaining"] == 75


# ---- the queue and reviews in the store ------------------------------------------------------------------


def settled_conversations(store: SqlAlchemyStore, count: int) -> None:
    for index in range(count):
        turn(store, f"c{index}", NOW - timedelta(days=2), intent="order_status" if index % 2 else "refund")


def test_sampling_is_done_once_per_conversation(store: SqlAlchemyStore, workspace: Workspace) -> None:
    settled_conversations(store, 30)
    turn(store, "live", NOW - timedelta(minutes=5), outcome="clarified")  # not settled: not offered yet
    everyone = replace(workspace, settings=workspace.settings.model_copy(
        update={"review_sampling": ReviewSampling(rate=1.0, double=0.0)}
    ))  # fmt: skip
    assert sample(store, everyone, now=NOW) == 30
    assert sample(store, everyone, now=NOW) == 0
    assert store.review_queue_sizes() == {"sample": 30}
    counts = store.slice_counts("all", rules=OutcomeRules(), now=NOW)[0].quality
    assert counts.units == 0 and counts.pending == 30  # drawn, not reviewed: left out of the estimate


def test_two_reviewers_never_hold_the_same_item_and_a_double_review_goes_to_a_second_person(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    settled_conversations(store, 2)
    double = replace(workspace, settings=workspace.settings.model_copy(
        update={"review_sampling": ReviewSampling(rate=1.0, double=1.0)}
    ))  # fmt: skip
    sample(store, double, now=NOW)
    first = store.next_review_item("ana")
    second = store.next_review_item("ben")
    assert first is not None and second is not None and first.conversation_id != second.conversation_id
    assert store.next_review_item("cy") is None  # both held
    submit(store, workspace, conversation_id=first.conversation_id, reviewer="ana", scores=GOOD,
           reason=ReviewReason.SAMPLE)  # fmt: skip
    again = store.next_review_item("cy")
    assert again is not None and again.conversation_id == first.conversation_id and again.wanted == 2
    assert store.next_review_item("ana") is None or store.next_review_item("ana").conversation_id != (  # type: ignore[union-attr]
        first.conversation_id
    )
    submit(store, workspace, conversation_id=first.conversation_id, reviewer="cy", scores=BAD,
           reason=ReviewReason.SAMPLE)  # fmt: skip
    with pytest.raises(DuplicateReviewError):
        submit(store, workspace, conversation_id=first.conversation_id, reviewer="cy", scores=GOOD,
               reason=ReviewReason.SAMPLE)  # fmt: skip
    by_conversation = store.list_reviews(conversation_id=first.conversation_id)
    assert [r.passed for r in by_conversation] == [True, False]
    quality = store.slice_counts("all", rules=OutcomeRules(), now=NOW)[0].quality
    assert quality.reviewed == 1 and quality.a == pytest.approx(0.5)  # the mean of the two people


def test_a_review_of_an_unknown_conversation_is_refused(store: SqlAlchemyStore, workspace: Workspace) -> None:
    with pytest.raises(UnknownConversationError):
        submit(store, workspace, conversation_id="nobody", reviewer="ana", scores=GOOD)


def test_scores_must_fit_the_rubric_and_name_the_field() -> None:
    rubric = Rubric()
    assert check_scores(rubric, GOOD).passed
    assert check_scores(rubric, {**GOOD, "tone": 1}).passed  # tone is tracked, not a gate
    assert check_scores(rubric, BAD).failed == ("correctness",)
    assert check_scores(rubric, {**GOOD, "policy_compliance": True}).scores["policy_compliance"] == 1
    for scores, field in [
        ({**GOOD, "correctness": 6}, "scores.correctness"),
        ({**GOOD, "politeness": 3}, "scores.politeness"),
        ({k: v for k, v in GOOD.items() if k != "resolution"}, "scores.resolution"),
        ({**GOOD, "groundedness": "4"}, "scores.groundedness"),
        ({**GOOD, "policy_compliance": 3}, "scores.policy_compliance"),
    ]:
        with pytest.raises(ScoresInvalidError) as caught:
            check_scores(rubric, scores)
        assert caught.value.field == field


def test_a_rubric_change_leaves_earlier_reviews_with_their_version(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    settled_conversations(store, 1)
    before = submit(store, workspace, conversation_id="c0", reviewer="ana", scores=GOOD)
    changed = replace(workspace, rubric=Rubric(criteria=[RubricCriterion(id="helpful", description="x")]))
    after = submit(store, changed, conversation_id="c0", reviewer="ben", scores={"helpful": 5})
    assert before.rubric_version == rubric_version(Rubric()) != after.rubric_version
    assert [r.rubric_version for r in store.list_reviews(conversation_id="c0")] == [
        before.rubric_version,
        after.rubric_version,
    ]


def test_enough_reviews_turn_quality_into_a_number_with_an_interval(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    settled_conversations(store, 24)
    everyone = replace(workspace, settings=workspace.settings.model_copy(
        update={"review_sampling": ReviewSampling(rate=0.5, new_version_reviews=0, double=0.0)}
    ))  # fmt: skip
    drawn = sample(store, everyone, now=NOW)
    assert drawn >= 10
    for index in range(drawn):
        item = store.next_review_item("ana")
        assert item is not None
        scores = GOOD if index % 4 else BAD
        submit(store, workspace, conversation_id=item.conversation_id, reviewer="ana", scores=scores,
               reason=item.reason)  # fmt: skip
    report = metrics(store, workspace.settings.monitoring, "all", now=NOW)
    quality = report.overall.quality
    assert quality.method == "human" and quality.reviewed == drawn
    assert quality.value is not None
    passes = sum(1 for i in range(drawn) if i % 4)
    assert quality.value.estimate == pytest.approx(passes / drawn)
    assert quality.value.low < quality.value.estimate < quality.value.high


# ---- the CLI ----------------------------------------------------------------------------------------------


def test_review_next_in_the_terminal_takes_the_reviewer_from_the_key(tmp_path: Path) -> None:
    from cxstack.app import Settings, open_store

    home = tmp_path / "home"
    root = write_workspace(tmp_path / "ws")
    with (root / "cxstack.yaml").open("a") as settings:
        settings.write("review_sampling:\n  rate: 1.0\n  double: 0\n")  # every settled conversation
    store = open_store(Settings(home=home))
    assert isinstance(store, SqlAlchemyStore)
    settled_conversations(store, 3)
    keys = ApiKeys(store, hasher=TEST_HASHER)
    agent = keys.create("Ana", ApiRole.AGENT).secret
    viewer = keys.create("Vic", ApiRole.VIEWER).secret
    runner = CliRunner()
    base = ["--home", str(home)]
    assert runner.invoke(app, ["review", "sample", str(root), *base]).exit_code == 0
    refused = runner.invoke(app, ["review", "next", str(root), "--key", viewer, *base])
    assert refused.exit_code == 2 and "may not review" in refused.output
    refused = runner.invoke(app, ["review", "next", str(root), "--key", "cxk_nope_nope", *base])
    assert refused.exit_code == 2 and "invalid" in refused.output
    assert store.review_queue_sizes() == {"sample": 3}
    typed = "5\n4\n1\n4\n3\nlooks right\n"  # every criterion, then the comment
    result = runner.invoke(app, ["review", "next", str(root), "--key", agent, *base], input=typed)
    assert result.exit_code == 0, result.output
    assert "passes" in result.output
    reviews = store.list_reviews()
    assert (
        len(reviews) == 1 and reviews[0].reviewer.startswith("Ana (") and reviews[0].comment == "looks right"
    )
    listed = runner.invoke(app, ["review", "list", str(root), "--json", *base])
    assert '"reviewer": "Ana (' in listed.output
