"""The grounding check: a reply goes out only if each of its claims is supported by the knowledge it cites."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.integrations.embedders.registry import load_embedder
from cxstack.knowledge.grounding import (
    EMBEDDING_FEATURES,
    LEXICAL_FEATURES,
    GroundingChecker,
    shipped_models,
)

RETURNS = [
    "Items can be returned within 30 days of delivery for a full refund.",
    "Gift cards cannot be returned.",
]


@pytest.fixture(scope="module")
def checker() -> GroundingChecker:
    return GroundingChecker()


def test_a_reply_made_of_its_facts_is_supported(checker: GroundingChecker) -> None:
    result = checker.check(" ".join(RETURNS), RETURNS)
    assert result.supported and result.unsupported == []
    assert result.score >= checker.model.threshold


def test_a_paraphrase_that_keeps_the_facts_is_supported(checker: GroundingChecker) -> None:
    result = checker.check("You can return items within 30 days of delivery for a full refund.", RETURNS)
    assert result.supported


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            "Items can be returned within 90 days of delivery for a full refund.",
            "number not in the knowledge: 90",
        ),
        ("Gift cards can be returned.", "negation differs"),
        ("Items bought in our Paris store can be returned within 30 days of delivery.", "names a thing"),
    ],
)
def test_a_changed_number_negation_or_name_is_not_supported_and_is_named(
    checker: GroundingChecker, reply: str, reason: str
) -> None:
    result = checker.check(reply, RETURNS)
    assert not result.supported
    assert result.unsupported == [reply]
    [bad] = [s for s in result.sentences if not s.supported]
    assert any(reason in r for r in bad.reasons)


def test_only_the_unsupported_sentence_is_named(checker: GroundingChecker) -> None:
    reply = "Items can be returned within 30 days of delivery. Shipping back is always free of charge."
    result = checker.check(reply, RETURNS)
    assert not result.supported
    assert result.unsupported == ["Shipping back is always free of charge."]


def test_courtesy_makes_no_claim_and_a_claim_without_knowledge_is_unsupported(
    checker: GroundingChecker,
) -> None:
    courtesy = checker.check("Happy to help! Is there anything else I can help with?", [])
    assert courtesy.supported and courtesy.score == 1.0
    assert all(not s.claim for s in courtesy.sentences)
    claim = checker.check("Our stores open at 9am on Sundays.", [])
    assert not claim.supported


def test_the_shipped_models_load_and_an_unfitted_embedder_falls_back_to_the_lexical_model() -> None:
    models = shipped_models()
    assert models["lexical"].features == LEXICAL_FEATURES
    assert models["minilm"].features == EMBEDDING_FEATURES
    assert all(0 < m.threshold < 1 and "BEGIN" in m.fitted_on for m in models.values())
    assert GroundingChecker(load_embedder("hashing")).model == models["lexical"]


def test_kb_ground_answers_each_line_and_reports_a_bad_line_in_place(tmp_path: Path) -> None:
    lines = [
        {"id": "ok", "reply": RETURNS[0], "knowledge": RETURNS},
        {
            "id": "bad-number",
            "reply": "Items can be returned within 60 days of delivery.",
            "knowledge": RETURNS,
        },
        "this is not json",
        {"id": "no-reply", "knowledge": RETURNS},
        {"id": "no-knowledge", "reply": "Gift cards never expire."},
    ]
    path = tmp_path / "replies.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    result = CliRunner().invoke(app, ["kb", "ground", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == ["ok", "bad-number", "line 3", "no-reply", "no-knowledge"]
    assert out[0]["supported"] is True and out[0]["unsupported"] == []
    assert out[1]["supported"] is False and out[1]["unsupported"] == [lines[1]["reply"]]  # type: ignore[index]
    assert "error" in out[2] and "error" in out[3]
    assert out[4]["supported"] is False and 0 <= out[4]["score"] < 1


def test_every_demo_fact_supports_itself_alone_and_beside_another(checker: GroundingChecker) -> None:
    from cxstack.demo import demo_workspace_path
    from cxstack.workspace.loader import load_workspace

    facts = [f.text for f in load_workspace(demo_workspace_path()).facts]
    assert len(facts) > 100
    failing = [f for f in facts if not checker.check(f, [f]).supported]
    assert failing == []
    pairs = list(itertools.pairwise(facts))
    failing_pairs = [(a, b) for a, b in pairs if not checker.check(f"{a} {b}", [a, b]).supported]
    assert failing_pairs == []
