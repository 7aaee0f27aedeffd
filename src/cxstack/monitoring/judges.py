"""Judges: score a conversation (or one exchange) against the rubric, so quality can be estimated on every
conversation, not only the reviewed few.

A judge is versioned; every score records the version. Two adapters:

- `OfflineJudge` (no LLM): signals computed from the exchange and, for stored conversations, the trace —
  grounding of each reply sentence by the knowledge it had (the knowledge layer's grounding check), relevance
  to what the customer asked, the customer's reaction, failed actions, the verifier's objections, policy
  violations, abandonment — combined by one logistic model per criterion and one for the overall pass. Version
  1's weights are set by hand from what each signal means; `refit` fits the next version's weights and pass
  threshold on human reviews (scikit-learn), so every disagreement a person settles moves the judge.
- `LLMJudge`: the rubric as a prompt through the LLM-provider port, JSON out; the reply is shown with a
  reminder that length is not quality, and pairwise comparisons ask in both orders and count only a
  preference that survives the swap (position bias). Corrections become few-shot examples in its next version.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cxstack.knowledge.grounding import GroundingChecker, sentences
from cxstack.knowledge.retrieval import tokenize
from cxstack.monitoring.rubric import effective_rubric
from cxstack.workspace.models import Rubric, RubricCriterion

FEATURES = (
    "support_min",  # the weakest claim's probability of being supported by the knowledge (1: no claim)
    "support_mean",
    "relevance",  # share of the customer's content words the reply takes up (0.5 without a question)
    "asks_back",  # the reply ends with a question
    "length",  # log(1 + words) / 5
    "negative_reaction",  # the customer's next words object ("that's wrong", "not what I asked")
    "positive_reaction",  # … or thank
    "escalated",
    "action_failed",
    "verifier_failed",
    "policy_violation",  # a never-automate or forced-human case answered by the bot
    "abandoned",  # left waiting on the customer, who went silent
)

_NEGATIVE = re.compile(
    r"\b(wrong|incorrect|not what i (asked|meant|said)|doesn'?t (help|answer)|useless|that'?s not|"
    r"you (didn'?t|did not) (understand|answer)|still (waiting|not)|makes no sense|real person|human|"
    r"agent please|stupid|ridiculous|terrible|awful|frustrat\w*|angry|again\?)\b",
    re.I,
)
_POSITIVE = re.compile(
    r"\b(thanks?|thank you|thx|great|perfect|awesome|helpful|that helps|got it|cheers)\b", re.I
)


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a judge sees: earlier texts (oldest first), the reply, the knowledge it had; for a stored
    conversation also the trace signals and the customer's next words."""

    id: str
    context: list[str]
    reply: str
    knowledge: list[str] = field(default_factory=list)
    next_customer: str | None = None
    signals: dict[str, float] = field(default_factory=dict)  # escalated, action_failed, … as 0/1


@dataclass(frozen=True, slots=True)
class JudgeScore:
    scores: dict[str, float]  # criterion -> a value on its scale
    overall: float  # 0 to 1: the probability a person would pass it
    passed: bool
    features: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "overall": round(self.overall, 4),
            "passed": self.passed,
        }


class Judge(Protocol):
    version: str
    kind: str

    async def score(self, exchange: Exchange, rubric: Rubric) -> JudgeScore: ...


JUDGE_GROUP = "cxstack.judges"


class UnknownJudgeError(LookupError):
    pass


def available_judges() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=JUDGE_GROUP))


def judge_plugin(name: str) -> Any:
    """The judge class registered under `name` in the `cxstack.judges` entry point group (built in: offline,
    llm). A plug-in is made as `cls(version=f"{name}-1")` and must offer `kind` and `score`."""
    from importlib.metadata import entry_points

    matches = [ep for ep in entry_points(group=JUDGE_GROUP) if ep.name == name]
    if not matches:
        raise UnknownJudgeError(
            f"no judge named {name!r}; available: {', '.join(available_judges()) or 'none'} "
            f"(plug-ins register under the entry point group {JUDGE_GROUP!r})"
        )
    return matches[0].load()


# ---- the offline judge -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logistic:
    weights: dict[str, float]
    bias: float

    def probability(self, features: Mapping[str, float]) -> float:
        z = self.bias + sum(w * features.get(name, 0.0) for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def to_json(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "bias": self.bias}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Logistic:
        return cls({str(k): float(v) for k, v in data["weights"].items()}, float(data["bias"]))


# Version 1, by hand: a claim the knowledge does not support, a failed action, a verifier objection or a
# policy violation make a reply fail; relevance and a thankful customer make it pass.
_OVERALL = Logistic(
    {
        "support_min": 3.0, "support_mean": 1.0, "relevance": 1.0, "negative_reaction": -2.0,
        "positive_reaction": 0.8, "action_failed": -2.0, "verifier_failed": -2.5, "policy_violation": -4.0,
        "abandoned": -1.0,
    },
    -2.2,
)  # fmt: skip
DEFAULT_CRITERIA: dict[str, Logistic] = {
    "correctness": _OVERALL,
    "groundedness": Logistic({"support_min": 4.0, "support_mean": 1.5}, -2.8),
    "policy_compliance": Logistic({"policy_violation": -5.0, "verifier_failed": -2.0}, 3.0),
    "resolution": Logistic(
        {
            "relevance": 1.5,
            "action_failed": -2.0,
            "negative_reaction": -1.5,
            "abandoned": -1.5,
            "positive_reaction": 1.0,
            "support_min": 1.0,
        },
        -0.8,
    ),
    "tone": Logistic({"length": -1.0, "negative_reaction": -0.7}, 2.5),
}


@dataclass(frozen=True, slots=True)
class OfflineParams:
    overall: Logistic = _OVERALL
    threshold: float = 0.5
    criteria: dict[str, Logistic] = field(default_factory=lambda: dict(DEFAULT_CRITERIA))

    def to_json(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_json(),
            "threshold": self.threshold,
            "criteria": {k: v.to_json() for k, v in self.criteria.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OfflineParams:
        return cls(
            overall=Logistic.from_json(data["overall"]),
            threshold=float(data["threshold"]),
            criteria={k: Logistic.from_json(v) for k, v in data.get("criteria", {}).items()},
        )


def _content(text: str) -> set[str]:
    return set(tokenize(text))


def features_of(exchange: Exchange, checker: GroundingChecker) -> dict[str, float]:
    result = checker.check(exchange.reply, exchange.knowledge) if exchange.knowledge else None
    claims = [s for s in result.sentences if s.claim] if result is not None else []
    if claims:
        probabilities = [s.score for s in claims]
        support_min, support_mean = min(probabilities), sum(probabilities) / len(probabilities)
    elif any(_content(s) for s in sentences(exchange.reply)) and not exchange.knowledge:
        support_min = support_mean = 0.3  # claims with no knowledge to check them against
    else:
        support_min = support_mean = 1.0
    question = _content(exchange.context[-1]) if exchange.context else set()
    reply_words = _content(exchange.reply)
    relevance = len(question & reply_words) / len(question) if question else 0.5
    words = len(exchange.reply.split())
    reaction = exchange.next_customer or ""
    values = {
        "support_min": support_min,
        "support_mean": support_mean,
        "relevance": relevance,
        "asks_back": float(exchange.reply.rstrip().endswith("?")),
        "length": math.log1p(words) / 5,
        "negative_reaction": float(bool(_NEGATIVE.search(reaction))),
        "positive_reaction": float(bool(_POSITIVE.search(reaction)) and not _NEGATIVE.search(reaction)),
    }
    for name in FEATURES:
        values.setdefault(name, float(exchange.signals.get(name, 0.0)))
    return values


def _on_scale(criterion: RubricCriterion, probability: float) -> float:
    low, high = criterion.bounds
    if criterion.kind == "pass_fail":
        return float(probability >= 0.5)
    return low + (high - low) * probability


class OfflineJudge:
    kind = "offline"

    def __init__(self, version: str = "offline-1", params: OfflineParams | None = None) -> None:
        self.version = version
        self.params = params or OfflineParams()
        self._checker = GroundingChecker()

    def features(self, exchange: Exchange) -> dict[str, float]:
        return features_of(exchange, self._checker)

    def score_now(self, exchange: Exchange, rubric: Rubric) -> JudgeScore:
        values = self.features(exchange)
        overall = self.params.overall.probability(values)
        scores = {
            c.id: _on_scale(c, self.params.criteria.get(c.id, self.params.overall).probability(values))
            for c in effective_rubric(rubric).criteria
        }
        return JudgeScore(scores, overall, overall >= self.params.threshold, values)

    async def score(self, exchange: Exchange, rubric: Rubric) -> JudgeScore:
        return self.score_now(exchange, rubric)


def refit(
    parent: OfflineParams,
    rows: Sequence[tuple[Mapping[str, float], float, Mapping[str, int]]],
    rubric: Rubric,
    *,
    min_rows: int = 20,
) -> OfflineParams:
    """The next version's parameters from reviewed conversations: (features, human pass 0–1, human scores).
    The overall model and each criterion's are refitted where there are at least `min_rows` reviews with
    both outcomes (else the parent's is kept); the pass threshold is the one that agrees most with people
    on these rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def fit(xs: list[list[float]], ys: list[int], keep: Logistic) -> Logistic:
        if len(ys) < min_rows or len(set(ys)) < 2:
            return keep
        model = LogisticRegression(C=1.0, max_iter=1000)
        model.fit(np.array(xs), np.array(ys))
        return Logistic(
            dict(zip(FEATURES, map(float, model.coef_[0]), strict=True)), float(model.intercept_[0])
        )

    xs = [[float(f.get(name, 0.0)) for name in FEATURES] for f, _, _ in rows]
    passes = [int(h >= 0.5) for _, h, _ in rows]
    overall = fit(xs, passes, parent.overall)
    probabilities = [overall.probability(f) for f, _, _ in rows]
    threshold = parent.threshold
    if len(rows) >= min_rows:
        candidates = sorted({0.5, *(round(p, 4) for p in probabilities)})
        threshold = max(
            candidates,
            key=lambda t: (
                sum((p >= t) == bool(y) for p, y in zip(probabilities, passes, strict=True)),
                -abs(t - 0.5),
            ),
        )
    criteria = dict(parent.criteria)
    for criterion in effective_rubric(rubric).criteria:
        labelled = [
            (x, int(s[criterion.id] >= criterion.threshold))
            for x, (_, _, s) in zip(xs, rows, strict=True)
            if criterion.id in s
        ]
        criteria[criterion.id] = fit(
            [x for x, _ in labelled],
            [y for _, y in labelled],
            parent.criteria.get(criterion.id, parent.overall),
        )
    return OfflineParams(overall=overall, threshold=threshold, criteria=criteria)


# ---- the LLM judge -----------------------------------------------------------------------------------------


class LLMJudge:
    """The rubric as a prompt; the answer a JSON object of scores. Needs an LLM client (`LLMSessions`)."""

    kind = "llm"

    def __init__(self, llm: Any, version: str = "llm-1", examples: Sequence[Mapping[str, Any]] = ()) -> None:
        self.llm = llm
        self.version = version
        self.examples = list(examples)  # corrections: {"context", "reply", "knowledge", "scores", "passed"}

    def _prompt(self, exchange: Exchange, rubric: Rubric) -> list[Any]:
        from cxstack.domain.llm import ChatMessage

        criteria = effective_rubric(rubric).criteria
        lines = [
            "You grade one reply of a customer-support assistant against a rubric. Judge only what the "
            "reply says and whether the knowledge supports it. A longer reply is not a better one: do not "
            "reward length or politeness for their own sake. Answer with the JSON object only.",
            "Rubric:",
        ]
        for c in criteria:
            low, high = c.bounds
            scale = "1 (pass) or 0 (fail)" if c.kind == "pass_fail" else f"{low} (poor) to {high} (excellent)"
            lines.append(f"- {c.id}: {c.description} Score {scale}.")
        for example in self.examples[:4]:
            lines.append(
                "Example graded by a person: "
                + json.dumps({k: example.get(k) for k in ("context", "reply", "knowledge", "scores")})
            )
        shown = {
            "conversation_so_far": exchange.context[-6:],
            "knowledge": exchange.knowledge[:8],
            "reply": exchange.reply,
        }
        return [
            ChatMessage("system", "\n".join(lines)),
            ChatMessage("user", json.dumps(shown, ensure_ascii=False)),
        ]

    def _schema(self, rubric: Rubric) -> dict[str, Any]:
        criteria = effective_rubric(rubric).criteria
        return {
            "type": "object",
            "properties": {
                c.id: {"type": "integer", "minimum": c.bounds[0], "maximum": c.bounds[1]} for c in criteria
            },
            "required": [c.id for c in criteria],
            "additionalProperties": False,
        }

    async def score(self, exchange: Exchange, rubric: Rubric) -> JudgeScore:
        from cxstack.domain.llm import LLMBadResponseError, LLMRequest

        request = LLMRequest(
            messages=tuple(self._prompt(exchange, rubric)),
            output_schema=self._schema(rubric),
            schema_name="rubric_scores",
            max_tokens=200,
            temperature=0.0,
        )
        response = await self.llm.session().complete(request, purpose="judge")
        data = response.output if response.output is not None else _json_object(response.text)
        criteria = effective_rubric(rubric).criteria
        scores: dict[str, float] = {}
        for c in criteria:
            value = data.get(c.id) if isinstance(data, dict) else None
            low, high = c.bounds
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise LLMBadResponseError(f"the judge's answer has no valid {c.id} ({value!r})")
            scores[c.id] = float(value)
        gates = [c for c in criteria if c.gate]
        passed = all(scores[c.id] >= c.threshold for c in gates)
        normalised = [(scores[c.id] - c.bounds[0]) / (c.bounds[1] - c.bounds[0]) for c in gates or criteria]
        overall = sum(normalised) / len(normalised)
        return JudgeScore(scores, overall if passed else min(overall, 0.49), passed)

    async def prefer(self, instruction: str, first: str, second: str) -> int | None:
        """Pairwise: 1 or 2 for the better output, None when the preference flips with the order (a tie)."""
        a = await self._prefer_once(instruction, first, second)
        b = await self._prefer_once(instruction, second, first)
        if a == 1 and b == 2:
            return 1
        if a == 2 and b == 1:
            return 2
        return None

    async def _prefer_once(self, instruction: str, first: str, second: str) -> int:
        from cxstack.domain.llm import ChatMessage, LLMBadResponseError, LLMRequest

        system = (
            "You compare two outputs for an instruction. Pick the one that follows the instruction more "
            "precisely and helpfully; honesty and correctness first. Do not let the order of the outputs, "
            "their length or their style decide. Answer with the JSON object only."
        )
        user = json.dumps(
            {"instruction": instruction, "output_1": first, "output_2": second}, ensure_ascii=False
        )
        schema = {
            "type": "object",
            "properties": {"better": {"type": "integer", "enum": [1, 2]}},
            "required": ["better"],
            "additionalProperties": False,
        }
        request = LLMRequest(
            messages=(ChatMessage("system", system), ChatMessage("user", user)),
            output_schema=schema,
            schema_name="preference",
            max_tokens=20,
        )
        response = await self.llm.session().complete(request, purpose="judge")
        data = response.output if response.output is not None else _json_object(response.text)
        better = data.get("better") if isinstance(data, dict) else None
        if better not in (1, 2):
            raise LLMBadResponseError(f"the judge named no output ({better!r})")
        return int(better)


def _json_object(text: str) -> dict[str, Any]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        found = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}
