"""Entity-aware retrieval: subjects from the whole conversation, bm25s scores, the ANN path, needs knowledge,
and `cxstack kb search`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.integrations.embedders.hashing import HashingEmbedder
from cxstack.knowledge.needs import KnowledgeModel, LabelledTurn, fit_model, load_model
from cxstack.knowledge.retrieval import KnowledgeIndex, _Lexical, tokenize
from cxstack.knowledge.search import search_conversation
from cxstack.knowledge.subjects import SubjectResolver
from cxstack.workspace.models import FactConfig

DSTC11 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dstc11_track5" / "knowledge.json"

HOTELS = [
    ("HOBSONS HOUSE", "Free WiFi is available in every room at the Hobsons House."),
    ("HOBSONS HOUSE", "The bathroom was spotless and the towels fresh."),
    ("ACORN GUEST HOUSE", "Parking at the Acorn Guest House is free of charge."),
    ("ACORN GUEST HOUSE", "Our bathroom had mould in the corners."),
    ("THE GOLDEN CURRY", "The lamb curry was rich and spicy."),
    (None, "All our partners accept cards."),
]


def facts_of(pairs: list[tuple[str | None, str]]) -> list[FactConfig]:
    return [FactConfig(id=f"f{i}", text=text, owner="cx", subject=s) for i, (s, text) in enumerate(pairs)]


@pytest.fixture(scope="module")
def resolver() -> SubjectResolver:
    return SubjectResolver((s, t) for s, t in HOTELS)


def test_a_misspelled_name_is_found(resolver: SubjectResolver) -> None:
    found = resolver.resolve(["Is the bathroom clean at Hobsens Huose?"])
    assert found.subject == "HOBSONS HOUSE"
    assert found.via == "named"


def test_aliases_without_generic_words_and_the(resolver: SubjectResolver) -> None:
    assert resolver.resolve(["what about acorn guesthouse"]).subject == "ACORN GUEST HOUSE"
    assert resolver.resolve(["I'd like to stay at Acorn."]).subject == "ACORN GUEST HOUSE"
    assert resolver.resolve(["Book Golden Curry for two"]).subject == "THE GOLDEN CURRY"
    assert resolver.resolve(["Is it any good?"]).subject is None


def test_there_refers_back_to_the_last_named_subject(resolver: SubjectResolver) -> None:
    conversation = [
        "I need a guest house in the north.",
        "Hobsons House is a nice one; Acorn Guest House is another.",
        "I'll take the Acorn Guest House.",
        "Booked!",
        "Can I park there?",
    ]
    found = resolver.resolve(conversation)
    assert found.subject == "ACORN GUEST HOUSE"
    assert found.subjects == ("ACORN GUEST HOUSE",)
    assert found.via == "referred back"


def test_facts_about_another_subject_are_excluded_and_facts_without_one_stay() -> None:
    index = KnowledgeIndex(facts_of(HOTELS), HashingEmbedder())
    found = search_conversation(index, ["Tell me about Acorn Guest House", "Sure.", "Is the bathroom clean?"])
    subjects = {f.fact.subject for f in found.facts}
    assert found.subject.subject == "ACORN GUEST HOUSE"
    assert subjects <= {"ACORN GUEST HOUSE", None}
    assert found.facts[0].fact.id == "f3"  # Acorn's bathroom, not Hobsons'
    assert None in subjects  # the fact without a subject is still eligible


def test_a_comparison_keeps_both_subjects(resolver: SubjectResolver) -> None:
    found = resolver.resolve(["Which has the cleaner bathroom, Hobsons House or Acorn?"])
    assert set(found.subjects) == {"HOBSONS HOUSE", "ACORN GUEST HOUSE"}


def test_demo_subjects_match_singular_and_plural() -> None:
    resolver = SubjectResolver([("boots", "Our boots are waterproof."), ("jackets", "Jackets are warm.")])
    assert resolver.resolve(["Is this boot waterproof?"]).subject == "boots"
    assert resolver.resolve(["My jacket tore", "Sorry!", "can I return it?"]).subject == "jackets"


def test_bm25s_scores_keep_their_absolute_meaning() -> None:
    documents = [
        tokenize(t) for t in ("refund within thirty days", "shipping to canada", "password reset link")
    ]
    lexical = _Lexical(documents)
    every_word = lexical.normalised_scores(tokenize("refund thirty days"))
    assert every_word[0] == pytest.approx(
        1.0, abs=0.15
    )  # every informative word, in a fact of about avg length
    assert every_word[1] == 0.0 and every_word[2] == 0.0
    half = lexical.normalised_scores(tokenize("refund banana"))  # an unseen word halves the score
    assert 0.3 < half[0] < 0.7
    assert lexical.normalised_scores(tokenize("nothing matches here")).max() == 0.0
    assert np.all(lexical.normalised_scores(tokenize("refund days canada")) <= 1.0)


def test_the_ann_path_finds_the_same_top_facts_as_the_exact_product() -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    facts = [
        FactConfig(id=f"f{i}", text=" ".join(rng.choice(words) for _ in range(8)), owner="cx")
        for i in range(3000)
    ]
    embedder = HashingEmbedder(dim=256)
    exact = KnowledgeIndex(facts, embedder, ann_min_facts=10**9)
    ann = KnowledgeIndex(facts, embedder, ann_min_facts=1000)
    assert ann.uses_ann and not exact.uses_ann
    agree = 0
    queries = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(30)]
    for query in queries:
        a = [f.fact.id for f in exact.search(query, k=5)]
        b = [f.fact.id for f in ann.search(query, k=5)]
        assert a[0] == b[0]
        agree += len(set(a) & set(b))
    assert agree >= 0.95 * 5 * len(queries)


def test_needs_knowledge_model_separates_obvious_cases(tmp_path: Path) -> None:
    facts = facts_of(HOTELS)
    index = KnowledgeIndex(facts, HashingEmbedder())
    questions = [
        ("Is the wifi free at Hobsons House?", {"f0"}),
        ("Is the bathroom at Hobsons House clean?", {"f1"}),
        ("Is parking free at Acorn Guest House?", {"f2"}),
        ("Was the bathroom at Acorn clean?", {"f3"}),
        ("Is the curry at the Golden Curry spicy?", {"f4"}),
    ]
    tasks = [
        "Book me a table for two at 7pm please",
        "I need a taxi to the station",
        "Reserve a room for three nights from Friday",
        "Thanks, that is all",
        "Can you book it for 4 people on Sunday?",
    ]
    examples = [LabelledTurn((q,), True, frozenset(ids)) for q, ids in questions] * 4
    examples += [LabelledTurn((t,), False) for t in tasks] * 4
    model = fit_model(index, examples, embedder_name="hashing", note="test")
    model.save(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, KnowledgeModel) and loaded.select_threshold == model.select_threshold
    question = search_conversation(index, ["Is the wifi at Hobsons House free?"], model=loaded)
    task = search_conversation(index, ["Book me a table for two at 8pm"], model=loaded)
    assert question.needs_knowledge and not task.needs_knowledge
    assert question.needs_score > 0.5 > task.needs_score
    assert question.facts[0].fact.id == "f0" and question.selected[0]


def test_kb_search_batch_answers_every_line_and_reports_a_bad_one(tmp_path: Path) -> None:
    runner = CliRunner()
    demo = tmp_path / "demo"
    assert runner.invoke(app, ["init", "--demo", str(demo)]).exit_code == 0
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "messages": ["Are your boots waterproof?"]}),
                json.dumps({"id": "b", "text": "no messages here"}),
                "{not json",
                json.dumps({"id": "c", "messages": ["I bought a jacket", "Nice!", "how do I wash it?"]}),
            ]
        )
        + "\n"
    )
    result = runner.invoke(
        app, ["kb", "search", str(demo), "--batch", str(batch), "--json", "--embedder", "hashing"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["id"] for line in lines] == ["a", "b", "line 3", "c"]
    assert "messages" in lines[1]["error"] and "error" in lines[2]
    assert lines[0]["subject"] == "boots" and lines[3]["subject"] == "jackets"
    for answered in (lines[0], lines[3]):
        assert set(answered) >= {"id", "needs_knowledge", "subject", "facts"}
        assert 0 < len(answered["facts"]) <= 10
        scores = [f["score"] for f in answered["facts"]]
        assert scores == sorted(scores, reverse=True)
    assert lines[0]["facts"][0]["id"].startswith("boots")
    plain = runner.invoke(
        app, ["kb", "search", str(demo), "Are your boots waterproof?", "--embedder", "hashing"]
    )
    assert plain.exit_code == 0 and "boots" in plain.stdout


@pytest.mark.skipif(not DSTC11.exists(), reason="DSTC11 track 5 data not present")
def test_dstc11_names_are_resolved_from_the_real_knowledge() -> None:
    knowledge = json.loads(DSTC11.read_text(encoding="utf-8"))
    pairs: list[tuple[str | None, str]] = []
    for entities in knowledge.values():
        for body in list(entities.values())[:40]:
            for review in body["reviews"].values():
                pairs.extend((body["name"], text) for text in review["sentences"].values())
    resolver = SubjectResolver(pairs)
    conversation = [
        "I'm looking for a guesthouse in the north.",
        "I have the Acorn Guest House and the Arbury Lodge Guesthouse.",
        "I'd like the arbury lodge please.",
        "Done.",
        "Do they have a nice breakfast there?",
    ]
    found = resolver.resolve(conversation)
    assert found.subject == "ARBURY LODGE GUESTHOUSE" and found.via == "referred back"
    assert (
        resolver.resolve(["Is the Alexandar Bed and Breakfast quiet?"]).subject
        == "ALEXANDER BED AND BREAKFAST"
    )


def test_a_name_ending_in_s_is_not_taken_for_a_plural() -> None:
    from cxstack.knowledge.subjects import SubjectResolver

    resolver = SubjectResolver([("Plus plan", "a"), ("Business plan", "b"), ("boots", "c")])
    assert resolver.resolve(["what does the Plus fee cover?"]).subject == "Plus plan"
    assert resolver.resolve(["return window for plus members?"]).subject == "Plus plan"
    assert resolver.resolve(["are my boots waterproof?"]).subject == "boots"


def test_learned_associations_link_question_words_to_the_words_facts_use() -> None:
    from cxstack.knowledge.needs import Associations

    turns = [
        ({"sanit", "bathroom"}, [({"bathroom", "clean"}, True), ({"breakfast", "tasty"}, False)]),
        ({"sanit", "room"}, [({"room", "spotless", "clean"}, True), ({"staff", "rude"}, False)]),
        ({"wifi"}, [({"internet", "fast"}, True), ({"clean", "room"}, False)]),
    ]
    learned = Associations.count(turns)
    assert learned.prior == pytest.approx(0.5)
    strongest, lift, _ = learned.features({"sanit"}, {"clean", "towel"})
    assert strongest > learned.prior and lift > 0
    assert learned.features({"sanit"}, {"breakfast"}) == (learned.prior, 0.0, learned.prior)
    assert "breakfast" not in learned.pairs.get("sanit", {})  # never seen relevant: not kept
    assert Associations.from_json(json.loads(json.dumps(learned.to_json()))) == learned


def test_a_fitted_model_reranks_more_candidates_and_returns_at_most_k() -> None:
    pairs = [("HOBSONS HOUSE", f"Sentence {i} about the garden and the view.") for i in range(30)]
    pairs += [("HOBSONS HOUSE", "The room was spotless and clean.")]
    pairs += [("HOBSONS HOUSE", "Very clean bathroom.")]
    index = KnowledgeIndex(facts_of(pairs), HashingEmbedder())
    examples = [
        LabelledTurn(("Is Hobsons House clean?",), True, frozenset({"f30", "f31"})),
        LabelledTurn(("Is the bathroom at Hobsons House sanitary?",), True, frozenset({"f31"})),
        LabelledTurn(("Book Hobsons House for two nights",), False),
        LabelledTurn(("A taxi to the station please",), False),
    ] * 3
    model = fit_model(index, examples, embedder_name="hashing", k=40)
    assert model.candidates == 40 and model.associations is not None
    found = search_conversation(index, ["Is Hobsons House clean?"], model=model, k=5)
    assert len(found.facts) == 5
    assert list(found.relevance) == sorted(found.relevance, reverse=True)
    assert found.needs_knowledge and any(found.selected)
    assert found.facts[0].fact.id in {"f30", "f31"} and found.selected[0]


def test_kb_fit_writes_the_model_kb_search_uses_and_refuses_a_bad_file(tmp_path: Path) -> None:
    import shutil

    from cxstack.demo import demo_workspace_path

    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), ws)
    labelled = [
        (["are the Trailblazer boots waterproof?"], True, ["boots-waterproof"]),
        (["how do I get paint off my boots"], True, ["boots-paint-stain"]),
        (["how long is the return window on the Plus plan?"], True, ["return-window-plus"]),
        (["what's the return window for enterprise?"], True, ["return-window-enterprise"]),
        (["thanks, bye"], False, []),
        (["hello"], False, []),
        (["please cancel my order ORD-10001"], False, []),
        (["where is my order ORD-10002"], False, []),
    ]
    good = tmp_path / "labelled.jsonl"
    good.write_text(
        "".join(json.dumps({"messages": m, "needs_knowledge": n, "facts": f}) + "\n" for m, n, f in labelled)
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": ["x"], "needs_knowledge": "yes"}\n{"messages": ["a"], "needs_knowledge": true, '
        '"facts": ["no-such-fact"]}\n'
    )
    runner = CliRunner()
    refused = runner.invoke(app, ["kb", "fit", str(ws), str(bad), "--embedder", "hashing"])
    assert refused.exit_code == 1 and "line 1" in refused.output and "no-such-fact" in refused.output
    assert load_model(ws) is None

    fitted = runner.invoke(app, ["kb", "fit", str(ws), str(good), "--embedder", "hashing"])
    assert fitted.exit_code == 0, fitted.output
    model = load_model(ws)
    assert model is not None and model.embedder == "hashing"
    found = runner.invoke(
        app, ["kb", "search", str(ws), "are the boots waterproof?", "--json", "--embedder", "hashing"]
    )
    result = json.loads(found.stdout)
    assert result["needs_knowledge"] and result["facts"][0] == {
        **result["facts"][0],
        "id": "boots-waterproof",
    }
    assert result["facts"][0]["selected"] is True
