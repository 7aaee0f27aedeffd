from __future__ import annotations

from datetime import date

from cxstack.integrations.embedders.hashing import HashingEmbedder
from cxstack.knowledge.compose import PartAnswer, compose_answer, compose_parts
from cxstack.knowledge.models import ScoredFact
from cxstack.knowledge.retrieval import KnowledgeIndex
from cxstack.workspace.models import FactConfig


def scored(fact_id: str, text: str, score: float) -> ScoredFact:
    return ScoredFact(
        fact=FactConfig(id=fact_id, text=text, owner="cx"), score=score, lexical=score, semantic=score
    )


def no_similarity(a: str, b: str) -> float:
    return 0.0


def test_none_when_no_fact_clears_the_threshold() -> None:
    assert compose_answer([scored("a", "A fact.", 0.3)], min_score=0.35) is None
    assert compose_answer([], min_score=0.35) is None


def test_best_fact_alone_when_the_second_is_much_weaker() -> None:
    answer = compose_answer(
        [scored("a", "Refunds take 5 days", 0.8), scored("b", "Shipping is free.", 0.4)],
        min_score=0.35,
        similarity=no_similarity,
    )
    assert answer is not None
    assert answer.text == "Refunds take 5 days."
    assert answer.fact_ids == ("a",)
    assert answer.score == 0.8


def test_second_fact_added_when_relevant_and_not_redundant() -> None:
    answer = compose_answer(
        [scored("b", "Shipping is free over 50 euros.", 0.7), scored("a", "Shipping takes 3 days.", 0.75)],
        min_score=0.35,
        similarity=no_similarity,
    )
    assert answer is not None
    assert answer.fact_ids == ("a", "b")
    assert answer.text == "Shipping takes 3 days. Shipping is free over 50 euros."
    assert [c.fact_id for c in answer.citations()] == ["a", "b"]


def test_redundant_second_fact_is_dropped_using_fact_embeddings() -> None:
    facts = [
        FactConfig(id="a", text="Shipping to Canada takes 5 to 7 business days.", owner="cx"),
        FactConfig(id="a-copy", text="Shipping to Canada takes 5 to 7 business days!", owner="cx"),
        FactConfig(id="c", text="Shipping is free on orders over 50 euros.", owner="cx"),
    ]
    index = KnowledgeIndex(facts, HashingEmbedder(), today=date(2025, 1, 1))
    results = [
        ScoredFact(fact=facts[0], score=0.8, lexical=0.8, semantic=0.8),
        ScoredFact(fact=facts[1], score=0.79, lexical=0.79, semantic=0.79),
        ScoredFact(fact=facts[2], score=0.7, lexical=0.7, semantic=0.7),
    ]
    answer = compose_answer(results, min_score=0.35, similarity=index.fact_similarity)
    assert answer is not None
    assert answer.fact_ids == ("a", "c")


def test_tone_prefix() -> None:
    results = [scored("a", "Our office opens at 9.", 0.9)]
    formal = compose_answer(results, min_score=0.35, tone="formal")
    warm = compose_answer(results, min_score=0.35, tone="Warm")
    unknown = compose_answer(results, min_score=0.35, tone="pirate")
    assert formal is not None and formal.text == "Thank you for your question. Our office opens at 9."
    assert warm is not None and warm.text.startswith("Happy to help! ")
    assert unknown is not None and unknown.text == "Our office opens at 9."


def test_parts_are_answered_in_order_with_the_weakest_as_confidence() -> None:
    first = compose_answer([scored("a", "Returns take 30 days", 0.9)], min_score=0.3)
    second = compose_answer([scored("b", "Shipping is free", 0.5)], min_score=0.3)
    answer = compose_parts(
        [PartAnswer("returns?", first), PartAnswer("gift wrap?", None), PartAnswer("shipping?", second)],
        tone="warm",
        unanswered=lambda q: f"No answer for {q}.",
    )
    assert answer is not None
    assert answer.text == "Happy to help! Returns take 30 days. Shipping is free. No answer for gift wrap."
    assert answer.fact_ids == ("a", "b") and answer.score == 0.5
    assert answer.unanswered == ("No answer for gift wrap.",)
    assert compose_parts([PartAnswer("x?", None)], unanswered=str) is None


def test_a_fact_that_adds_to_another_never_leads() -> None:
    answer = compose_answer(
        [
            scored("exception", "On the Plus plan you can also return an item outside your window", 0.8),
            scored("window", "The Plus plan has a return window of 90 days", 0.75),
        ],
        min_score=0.3,
        similarity=no_similarity,
    )
    assert answer is not None
    assert answer.fact_ids == ("window", "exception")
    assert answer.text.startswith("The Plus plan has a return window of 90 days.")
    assert answer.score == 0.8  # the confidence is still the best fact's
