"""The grounding check: is every sentence of a reply supported by the knowledge it cites? Offline, no LLM.

Each sentence of the reply that makes a claim (one with content words) is compared with the knowledge texts on
signals a hallucination tends to break: the share of its content words found in the knowledge (overall and in
the single best-matching knowledge sentence), the share of its word pairs found there, numbers and names that
the knowledge does not contain, a negation the best-matching knowledge sentence does not share (or the other
way round), and, with an embedder, its closest embedding similarity to a knowledge sentence. A logistic model
over those signals gives a probability that the sentence is supported; a reply is as supported as its weakest
claim. The model's coefficients and its threshold were fitted and chosen on one half of the BEGIN dev sets
(`python -m benchmarks.grounding --fit`); the other half is what the benchmark reports.

Sentences without a content word ("Happy to help!") make no claim and are always supported.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from cxstack.knowledge.ports import Embedder
from cxstack.knowledge.retrieval import tokenize

MODEL_FILE = Path(__file__).with_name("grounding_model.json")
LEXICAL_FEATURES = (
    "precision",
    "best_precision",
    "pairs",
    "novel_words",
    "novel_run",
    "novel_number",
    "negation",
    "novel_name",
    "length",
)
EMBEDDING_FEATURES = (*LEXICAL_FEATURES, "similarity")

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
_WORD = re.compile(r"[a-z0-9]+")  # "year's" is "year" and "s": names and runs compare the same words
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME = re.compile(r"\b[A-Z][a-zA-Z]+\b")
# Words of courtesy make no claim: "Happy to help!", "Is there anything else I can do?" need no support.
_COURTESY = frozenset(
    tokenize(
        "happy glad help helping sure welcome great sorry apologies hope nice good day ok okay course "
        "absolutely certainly assist question questions anything else thanks thank wonderful trouble "
        "understand inconvenience patience"
    )
)
_NEGATION = re.compile(r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot)\b|n't\b", re.I)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _numbers(text: str) -> set[str]:
    return {re.sub(r"[.,](?=\d{3}\b)", "", n).rstrip(".,") for n in _NUMBER.findall(text)}


def _pairs(text: str) -> set[tuple[str, str]]:
    words = _WORD.findall(text.lower())
    return set(itertools.pairwise(words))


@dataclass(frozen=True, slots=True)
class KnowledgeIndex:
    texts: tuple[str, ...]
    sentences: tuple[str, ...]
    sentence_tokens: tuple[frozenset[str], ...]
    tokens: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    numbers: frozenset[str]
    words: frozenset[str]


def knowledge_index(texts: Sequence[str]) -> KnowledgeIndex:
    parts = tuple(s for text in texts for s in sentences(text))
    sentence_tokens = tuple(frozenset(tokenize(s)) for s in parts)
    joined = "\n".join(texts)
    return KnowledgeIndex(
        texts=tuple(texts),
        sentences=parts,
        sentence_tokens=sentence_tokens,
        tokens=frozenset().union(*sentence_tokens) if sentence_tokens else frozenset(),
        pairs=frozenset(_pairs(joined)),
        numbers=frozenset(_numbers(joined)),
        words=frozenset(_WORD.findall(joined.lower())),
    )


@dataclass(frozen=True, slots=True)
class SentenceCheck:
    text: str
    score: float  # probability that the sentence is supported, 0-1
    supported: bool
    claim: bool  # False: no content word, nothing to support
    evidence: str | None  # the knowledge sentence that matches it best
    reasons: tuple[str, ...]  # what the knowledge does not back, in words


@dataclass(frozen=True, slots=True)
class GroundingResult:
    score: float  # the weakest claim's score; 1.0 when the reply makes no claim
    supported: bool
    sentences: tuple[SentenceCheck, ...]

    @property
    def unsupported(self) -> list[str]:
        return [s.text for s in self.sentences if s.claim and not s.supported]


@dataclass(frozen=True, slots=True)
class GroundingModel:
    """A logistic model over the signals above, with the threshold chosen on the fitting data."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    embedder: str | None
    fitted_on: str

    def probability(self, values: Sequence[float]) -> float:
        z = self.intercept + sum(
            c * (v - m) / s for c, v, m, s in zip(self.coef, values, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z))

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "embedder": self.embedder,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroundingModel:
        return cls(
            features=tuple(data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            coef=tuple(float(v) for v in data["coef"]),
            intercept=float(data["intercept"]),
            threshold=float(data["threshold"]),
            embedder=data.get("embedder"),
            fitted_on=str(data.get("fitted_on", "")),
        )


@cache
def shipped_models() -> dict[str, GroundingModel]:
    """The fitted models that ship with cxstack, by name ("lexical", and one per embedder)."""
    data = json.loads(MODEL_FILE.read_text("utf-8"))
    return {name: GroundingModel.from_json(model) for name, model in data["models"].items()}


class GroundingChecker:
    """Checks replies against knowledge texts. With an embedder whose model was fitted, its similarity is one
    of the signals; otherwise the lexical model is used."""

    def __init__(self, embedder: Embedder | None = None, *, model: GroundingModel | None = None) -> None:
        models = shipped_models()
        if model is None:
            model = models.get(embedder.name) if embedder is not None else None
            model = model or models["lexical"]
        self.model = model
        self.embedder = embedder if "similarity" in model.features else None
        if "similarity" in model.features and self.embedder is None:
            raise ValueError(f"the grounding model needs the {model.embedder} embedder")

    def check(self, reply: str, knowledge: Sequence[str]) -> GroundingResult:
        known = knowledge_index(knowledge)
        parts = sentences(reply)
        rows = [signals(part, known, self.embedder) for part in parts]
        checks: list[SentenceCheck] = []
        claim_rows: list[dict[str, float]] = []
        for part, (values, evidence) in zip(parts, rows, strict=True):
            if values is None:
                checks.append(SentenceCheck(part, 1.0, True, False, None, ()))
                continue
            claim_rows.append(values)
            score = self.model.probability([values[f] for f in self.model.features])
            if must_match_fails(values):
                # A number, a name or a negation the knowledge does not back is never supported, however
                # many words the sentence shares with it.
                score = min(score, self.model.threshold / 2)
            checks.append(
                SentenceCheck(
                    part,
                    round(score, 4),
                    score >= self.model.threshold,
                    True,
                    evidence,
                    _reasons(values, part, known),
                )
            )
        if not claim_rows:
            return GroundingResult(1.0, True, tuple(checks))
        worst = self.model.probability([worst_values(claim_rows)[f] for f in self.model.features])
        worst = min([worst, *(c.score for c in checks if c.claim)])
        supported = worst >= self.model.threshold and all(c.supported for c in checks)
        if not supported and all(c.supported for c in checks):
            # Supported one by one, not together: the weakest claim is the one to name.
            weakest = min((c for c in checks if c.claim), key=lambda c: c.score)
            weakest_fails = replace(weakest, supported=False, reasons=weakest.reasons or ("weakest claim",))
            checks = [weakest_fails if c is weakest else c for c in checks]
        return GroundingResult(round(worst, 4), supported, tuple(checks))


def signals(
    sentence: str, known: KnowledgeIndex, embedder: Embedder | None = None
) -> tuple[dict[str, float] | None, str | None]:
    """The signal values of one sentence (None when it makes no claim), and its best evidence."""
    tokens = set(tokenize(sentence))
    if not tokens - _COURTESY:
        return None, None
    overlaps = [len(tokens & k) / len(tokens) for k in known.sentence_tokens]
    best = int(np.argmax(overlaps)) if overlaps else -1
    evidence = known.sentences[best] if best >= 0 else None
    pairs = _pairs(sentence)
    names = {n.lower() for i, n in enumerate(_NAME.findall(sentence)) if i > 0 or not sentence.startswith(n)}
    values = {
        "precision": len(tokens & known.tokens) / len(tokens),
        "best_precision": overlaps[best] if best >= 0 else 0.0,
        "pairs": len(pairs & known.pairs) / len(pairs) if pairs else 1.0,
        # An inserted claim shows as content words the knowledge lacks, often in one run.
        "novel_words": min(len(tokens - known.tokens), 10) / 10,
        "novel_run": min(_longest_novel_run(sentence, known), 10) / 10,
        "novel_number": float(bool(_numbers(sentence) - known.numbers)),
        "negation": float(
            evidence is not None and bool(_NEGATION.search(sentence)) != bool(_NEGATION.search(evidence))
        ),
        "novel_name": min(len(names - known.words), 3) / 3,
        "length": min(len(tokens), 20) / 20,
    }
    if embedder is not None:
        values["similarity"] = _similarity(sentence, known, embedder)
    return values, evidence


def _longest_novel_run(sentence: str, known: KnowledgeIndex) -> int:
    """The longest run of consecutive words (stop words included) that the knowledge does not contain."""
    longest = current = 0
    for word in _WORD.findall(sentence.lower()):
        current = 0 if word in known.words else current + 1
        longest = max(longest, current)
    return longest


def _similarity(sentence: str, known: KnowledgeIndex, embedder: Embedder) -> float:
    if not known.sentences:
        return 0.0
    vectors = embedder.embed([sentence, *known.sentences])
    return float(max(0.0, float(np.max(vectors[1:] @ vectors[0]))))


def must_match_fails(values: dict[str, float]) -> bool:
    return bool(values["novel_number"] or values["negation"] or values["novel_name"])


def worst_values(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """A reply's signals: for each, the value of its least supported claim."""
    worse_when_higher = {"novel_words", "novel_run", "novel_number", "negation", "novel_name"}
    keys = rows[0].keys()
    return {k: (max if k in worse_when_higher else min)(r[k] for r in rows) for k in keys}


def _reasons(values: dict[str, float], sentence: str, known: KnowledgeIndex) -> tuple[str, ...]:
    reasons: list[str] = []
    missing_numbers = sorted(_numbers(sentence) - known.numbers)
    if missing_numbers:
        reasons.append(f"number not in the knowledge: {', '.join(missing_numbers)}")
    if values["negation"]:
        reasons.append("negation differs from the closest knowledge sentence")
    if values["novel_name"]:
        reasons.append("names a thing the knowledge does not mention")
    if values["precision"] < 0.5:
        reasons.append(f"only {values['precision']:.0%} of its content words are in the knowledge")
    return tuple(reasons)
