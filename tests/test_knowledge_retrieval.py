from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pytest
from numpy.typing import NDArray

from cxstack.integrations.embedders.hashing import HashingEmbedder
from cxstack.knowledge.retrieval import KnowledgeIndex, is_valid_on, tokenize
from cxstack.workspace.models import FactConfig

THRESHOLD = 0.35  # the default thresholds.knowledge_min_score

FACTS = [
    FactConfig(
        id="refund-window",
        text="You can request a refund within 30 days of delivery.",
        owner="cx",
        intents=["refund_policy"],
        tags=["refunds"],
    ),
    FactConfig(
        id="shipping-canada",
        text="Shipping to Canada takes 5 to 7 business days.",
        owner="cx",
        tags=["shipping"],
    ),
    FactConfig(
        id="shipping-free", text="Shipping is free on orders over 50 euros.", owner="cx", tags=["shipping"]
    ),
    FactConfig(
        id="password-reset",
        text="To reset your password, click 'Forgot password' on the sign-in page.",
        owner="cx",
        tags=["account"],
    ),
    FactConfig(
        id="support-hours",
        text="Our support team is available Monday to Friday, 9:00 to 18:00 CET.",
        owner="cx",
        intents=["contact"],
    ),
]


class CountingEmbedder:
    """The real hashing embedder, counting how many texts it embeds per call."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.dim = self.inner.dim
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(len(texts))
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def index() -> KnowledgeIndex:
    return KnowledgeIndex(FACTS, HashingEmbedder(), today=date(2025, 6, 1))


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How long does shipping to Canada take?", "shipping-canada"),
        ("I forgot my password", "password-reset"),
        ("How many days do I have to ask for a refund?", "refund-window"),
        ("Do you ship for free?", "shipping-free"),
        ("What time is your support team available?", "support-hours"),
    ],
)
def test_answerable_questions_rank_their_fact_first_above_threshold(
    index: KnowledgeIndex, question: str, expected: str
) -> None:
    results = index.search(question, k=3)
    assert results[0].fact.id == expected
    assert results[0].score >= THRESHOLD
    assert all(0.0 <= r.score <= 1.0 for r in results)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


@pytest.mark.parametrize(
    "question", ["What's the weather in Paris tomorrow?", "Tell me a joke about penguins", "asdf qwerty"]
)
def test_unanswerable_questions_stay_below_threshold(index: KnowledgeIndex, question: str) -> None:
    results = index.search(question)
    assert results, "search returns candidates even when none is good"
    assert results[0].score < THRESHOLD


def test_score_is_absolute_not_relative_to_the_best_candidate(index: KnowledgeIndex) -> None:
    good = index.search("reset my password")[0]
    bad = index.search("penguins on the moon")[0]
    assert good.score > 2 * bad.score


def test_k_limits_results(index: KnowledgeIndex) -> None:
    assert len(index.search("shipping", k=2)) == 2
    assert len(index.search("shipping", k=50)) == len(FACTS)


def test_empty_query_and_empty_index_return_nothing(index: KnowledgeIndex) -> None:
    assert index.search("   ") == []
    assert KnowledgeIndex([], HashingEmbedder()).search("refund") == []


def test_intent_boost_promotes_without_filtering(index: KnowledgeIndex) -> None:
    plain = {r.fact.id: r for r in index.search("when can I contact you", k=5)}
    boosted = {r.fact.id: r for r in index.search("when can I contact you", k=5, intent="contact")}
    assert boosted["support-hours"].score > plain["support-hours"].score
    assert boosted["support-hours"].boost > 0
    # not a filter: facts without the intent are still candidates, with their scores unchanged
    assert set(boosted) == set(plain)
    assert boosted["shipping-free"].score == pytest.approx(plain["shipping-free"].score)


def test_boost_does_not_make_an_irrelevant_fact_answerable(index: KnowledgeIndex) -> None:
    results = index.search("penguins on the moon", intent="contact", tags=["shipping", "account", "refunds"])
    assert results[0].score < THRESHOLD


def test_tag_boost_breaks_a_tie_between_similar_facts(index: KnowledgeIndex) -> None:
    plain = {r.fact.id: r.score for r in index.search("shipping", k=5)}
    tagged = {r.fact.id: r.score for r in index.search("shipping", k=5, tags=["shipping"])}
    assert tagged["shipping-canada"] > plain["shipping-canada"]
    assert tagged["password-reset"] == pytest.approx(plain["password-reset"])


def test_facts_outside_their_validity_window_are_excluded() -> None:
    facts = [
        FactConfig(id="old", text="Summer sale: 20% off shoes.", owner="cx", valid_to=date(2025, 5, 31)),
        FactConfig(id="future", text="Winter sale: 30% off shoes.", owner="cx", valid_from=date(2025, 12, 1)),
        FactConfig(
            id="now",
            text="Spring sale: 10% off shoes.",
            owner="cx",
            valid_from=date(2025, 6, 1),
            valid_to=date(2025, 6, 1),
        ),
    ]
    index = KnowledgeIndex(facts, HashingEmbedder(), today=date(2025, 6, 1))
    assert {f.id for f in index.excluded()} == {"old", "future"}
    assert [r.fact.id for r in index.search("sale on shoes")] == ["now"]
    # validity is judged on the day asked about, not the day the index was built
    assert [r.fact.id for r in index.search("sale on shoes", on=date(2025, 12, 24))] == ["future"]
    assert [r.fact.id for r in index.search("sale on shoes", on=date(2025, 5, 1))] == ["old"]
    assert is_valid_on(facts[0], date(2025, 5, 31))


def test_embeds_facts_once_in_one_batch_and_the_query_once_per_search() -> None:
    embedder = CountingEmbedder()
    index = KnowledgeIndex(FACTS, embedder)
    assert embedder.calls == [len(FACTS)]
    index.search("refund")
    index.search("shipping")
    assert embedder.calls == [len(FACTS), 1, 1]


def test_fact_similarity_is_cosine_between_facts(index: KnowledgeIndex) -> None:
    assert index.fact_similarity("shipping-canada", "shipping-canada") == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < index.fact_similarity("shipping-canada", "shipping-free") < 0.9
    assert index.fact_similarity("shipping-free", "shipping-canada") == pytest.approx(
        index.fact_similarity("shipping-canada", "shipping-free")
    )
    assert index.fact_similarity("shipping-canada", "missing") == 0.0


def test_tokenize_drops_stop_words_and_strips_plural_and_ing() -> None:
    assert tokenize("How long does shipping take for my refunds?") == ["long", "ship", "refund"]
    assert tokenize("Why is my bill wrong? Please call me") == ["bill", "wrong", "call"]


def test_only_published_facts_answer_and_each_only_its_audience() -> None:
    facts = [
        FactConfig(id="draft", text="Refunds for VIP customers take 1 day.", owner="cx", status="draft"),
        FactConfig(id="retired", text="Refunds take 10 days for everyone.", owner="cx", status="retired"),
        FactConfig(
            id="vip-refunds",
            text="VIP customers get refunds within 2 days.",
            owner="cx",
            audience={"tiers": ["vip"]},  # type: ignore[arg-type]
        ),
        FactConfig(
            id="whatsapp-refunds",
            text="On WhatsApp, refunds are confirmed by message within a day.",
            owner="cx",
            audience={"channels": ["whatsapp"]},  # type: ignore[arg-type]
        ),
        FactConfig(id="refunds", text="Refunds reach your card within 5 to 10 days.", owner="cx"),
    ]
    index = KnowledgeIndex(facts, HashingEmbedder(), today=date(2025, 6, 1))
    assert index.get("draft") is None and index.get("retired") is None

    def found(**who: str) -> set[str]:
        return {r.fact.id for r in index.search("how long do refunds take", k=10, **who)}

    assert found(tier="vip", channel="webchat") == {"vip-refunds", "refunds"}
    assert found(tier="standard", channel="whatsapp") == {"whatsapp-refunds", "refunds"}
    assert found() == {"refunds"}  # unknown tier and channel: only facts meant for everyone


def test_a_fact_for_a_locale_is_used_only_in_that_language() -> None:
    facts = [
        FactConfig(
            id="quebec-returns",
            text="Au Québec, les retours sont gratuits pendant 30 jours.",
            owner="cx",
            audience={"locales": ["fr-CA"]},  # type: ignore[arg-type]
        ),
        FactConfig(
            id="returns-en",
            text="Returns are free for 30 days.",
            owner="cx",
            audience={"locales": ["en"]},  # type: ignore[arg-type]
        ),
        FactConfig(id="returns-any", text="Retours et returns: 30 jours / 30 days.", owner="cx"),
    ]
    index = KnowledgeIndex(facts, HashingEmbedder(), today=date(2025, 6, 1))

    def found(locale: str | None) -> set[str]:
        return {r.fact.id for r in index.search("retours returns 30 jours days", k=10, locale=locale)}

    assert found("fr") == {"quebec-returns", "returns-any"}  # `fr` is all a detector can tell
    assert found("en") == {"returns-en", "returns-any"}
    assert found("en-GB") == {"returns-en", "returns-any"}
    assert found(None) == {"returns-any"}  # unknown language: only facts meant for every language
