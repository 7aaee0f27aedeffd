"""Which settled conversations people review, and how many reviews a stratum needs.

The sampler sees every settled conversation once. It gives each a probability π of being drawn — the base
`review_sampling.rate`, times `oversample` for an escalated or low-confidence conversation, times 2 while the
conversation's workspace version has had fewer than `new_version_reviews` draws — and draws it with a
deterministic hash of its id (so a re-run draws the same ones). π is stored with the draw: the quality
estimate weights every review by 1/π, so oversampling what matters never biases the rate. A share `double`
of the draws is reviewed by two people, which measures how much people agree.

The planner says how many reviews each stratum (intent × mechanism × escalated/low-confidence) needs for a
quality rate within ±margin: z²·p(1−p)/m² from reviews alone, and z²·e/m² where a judge that disagrees with
people on a share e of conversations is trusted (the reviews then only correct the judge's errors).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm

from cxstack.domain.quality import Offer, OfferCandidate
from cxstack.workspace.models import ReviewSampling

SALT = "cxstack-review-sample"


def uniform(conversation_id: str, purpose: str = "draw") -> float:
    """A fixed number in [0, 1) per conversation and purpose: the sampler's coin."""
    digest = hashlib.sha256(f"{SALT}:{purpose}:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stratum_of(candidate: OfferCandidate, settings: ReviewSampling) -> str:
    if candidate.escalated:
        flag = "escalated"
    elif candidate.min_confidence is not None and candidate.min_confidence < settings.low_confidence:
        flag = "low_confidence"
    else:
        flag = "normal"
    return f"{candidate.intent or '(none)'}|{candidate.mechanism or '(none)'}|{flag}"


def decide(
    candidates: Sequence[OfferCandidate],
    settings: ReviewSampling,
    drawn_per_version: dict[str, int],
) -> list[Offer]:
    """One offer per candidate, in order; `drawn_per_version` is updated as draws are made."""
    offers = []
    for candidate in candidates:
        stratum = stratum_of(candidate, settings)
        pi = settings.rate
        reasons = []
        if not stratum.endswith("|normal"):
            pi *= settings.oversample
            reasons.append(stratum.rsplit("|", 1)[1])
        if drawn_per_version.get(candidate.workspace_version, 0) < settings.new_version_reviews:
            pi *= 2
            reasons.append("new_version")
        pi = min(1.0, pi)
        sampled = pi > 0 and uniform(candidate.conversation_id) < pi
        if sampled:
            version = candidate.workspace_version
            drawn_per_version[version] = drawn_per_version.get(version, 0) + 1
        double = sampled and uniform(candidate.conversation_id, "double") < settings.double
        offers.append(
            Offer(
                conversation_id=candidate.conversation_id,
                pi=pi,
                sampled=sampled,
                stratum=stratum,
                wanted=2 if double else 1,
                # all draws alike: the queue serves them in random order, so the reviews done at any time
                # are a random share of the draws (the estimate relies on it); oversampling drew more of them
                priority=0,
                detail={"oversampled": reasons} if reasons else {},
            )
        )
    return offers


@dataclass(frozen=True, slots=True)
class StratumPlan:
    stratum: str
    population: int
    drawn: int
    reviewed: int
    quality: float | None
    needed_human_only: int
    needed_with_judge: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stratum": self.stratum,
            "population": self.population,
            "drawn": self.drawn,
            "reviewed": self.reviewed,
            "quality": None if self.quality is None else round(self.quality, 4),
            "needed_human_only": self.needed_human_only,
            "needed_with_judge": self.needed_with_judge,
            # a judge helps only where it errs less often than the rate itself varies
            "remaining": max(0, min(self.needed_human_only, self.needed_with_judge or 10**9) - self.reviewed),
        }


def reviews_needed(
    p: float,
    margin: float,
    confidence: float,
    judge_error: float | None = None,
    population: int | None = None,
) -> int:
    """Reviews for ±margin at `confidence`: on the rate itself (p), or on a trusted judge's errors; with the
    finite-population correction when the stratum holds only `population` conversations."""
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    # the residual h − j is −1, 0 or 1: its variance is at most the share e of disagreements
    variance = p * (1 - p) if judge_error is None else judge_error
    n0 = z * z * variance / (margin * margin)
    if population:
        n0 = n0 / (1 + (n0 - 1) / population) if n0 > 1 else n0
        return max(min(2, population), min(population, math.ceil(n0)))
    return max(2, math.ceil(n0))


def plan(
    strata: Sequence[dict[str, Any]],
    *,
    margin: float,
    confidence: float,
    judge_agreement: float | None,
) -> list[StratumPlan]:
    """Per stratum: reviews needed for ±margin (p from its reviews so far, 0.5 before ten: the most
    cautious), with reviews alone and with a judge of the given agreement, never more than it holds."""
    out = []
    for s in strata:
        p = s["quality"] if s["reviewed"] >= 10 and s["quality"] is not None else 0.5
        size = s.get("population")
        out.append(
            StratumPlan(
                stratum=s["stratum"],
                population=size or 0,
                drawn=s["drawn"],
                reviewed=s["reviewed"],
                quality=s["quality"],
                needed_human_only=reviews_needed(p, margin, confidence, population=size),
                needed_with_judge=None
                if judge_agreement is None
                else reviews_needed(p, margin, confidence, 1 - judge_agreement, population=size),
            )
        )
    return out
