"""Quality rate per slice, and the metric row that never shows automation without it.

The quality estimate is design-based: conversations are drawn for review by the sampler with a known
probability π each (stratified, oversampling what matters), so the human-only rate is the Hájek estimator
Σ ξh/π ÷ Σ ξ/π. With a judge labelling every conversation, the prediction-powered estimate is

    θ̂ = λ · (judge's pass rate on all units) + Hájek mean of the residual h − λ·j on the reviewed units,

the difference estimator of survey sampling (Särndal et al. 1992, ch. 6), which is prediction-powered
inference (Angelopoulos et al. 2023) under the sampler's own design; λ = 1 is PPI, λ tuned to minimise the
variance (clipped to [0, 1], λ = 0 giving back the human-only estimate) is PPI++. Variances are the usual
linearised Poisson-sampling ones, Σ ξ (1 − π)/π² (r − r̄)² ÷ (Σ ξ/π)², so a slice reviewed in full has no
sampling error. Everything comes from the sums the store returns (`QualitySums`), never from rows.

Reviews lag draws. The queue serves drawn conversations in random order (never the oversampled first), so
those reviewed so far are a random share f of those drawn: a second sampling phase. Each reviewed conversation
then had probability f·π of being reviewed; the point estimates do not change (f cancels in the ratios) and
the variance becomes Σ ξ (1 − f·π)/π² (r − r̄)² ÷ (Σ ξ/π)² — wider while reviews are pending, the
single-phase one once everything drawn is reviewed.

A judge is *trusted* for a slice when it has been compared with people on at least `min_pairs` reviewed
conversations there and agreed on at least `trust_threshold` of them; elsewhere the estimate is the human-only
one. Fewer than `min_reviews` reviews: the quality rate is insufficient, never a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from scipy.stats import norm

from cxstack.domain.llm import COST_MICROS
from cxstack.domain.quality import MonitoringStore, OutcomeRules, QualitySums, Slice, SliceCounts
from cxstack.workspace.models import MonitoringSettings


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    confidence: float = 0.95
    min_reviews: int = 10
    min_pairs: int = 20
    trust_threshold: float = 0.80


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": round(self.estimate, 4), "ci": [round(self.low, 4), round(self.high, 4)]}


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """The quality rate of a slice: the headline (`value`, None when insufficient), how it was made, and the
    human-only interval beside it so the judge's gain is visible."""

    value: Interval | None
    method: str  # "ppi++" (a trusted judge corrects by the reviews) | "human" | "insufficient"
    human_only: Interval | None
    reviewed: int
    units: int
    pending: int
    judged: int
    judge_rate: float | None  # the judge's raw pass rate on its units: uncalibrated, for reference only
    agreement: float | None  # judge vs people on the reviewed pairs of this slice
    pairs: int
    trusted: bool
    lam: float | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": None if self.value is None else self.value.as_dict(),
            "method": self.method,
            "human_only": None if self.human_only is None else self.human_only.as_dict(),
            "reviewed": self.reviewed,
            "units": self.units,
            "pending_reviews": self.pending,
            "judged": self.judged,
            "judge_rate_uncalibrated": None if self.judge_rate is None else round(self.judge_rate, 4),
            "judge_agreement": None if self.agreement is None else round(self.agreement, 4),
            "judge_pairs": self.pairs,
            "judge_trusted": self.trusted,
            "lambda": None if self.lam is None else round(self.lam, 4),
            "note": self.note,
        }


def _z(confidence: float) -> float:
    return float(norm.ppf(1 - (1 - confidence) / 2))


def _interval(estimate: float, variance: float, z: float) -> Interval:
    half = z * math.sqrt(max(variance, 0.0))
    return Interval(estimate, max(0.0, estimate - half), min(1.0, estimate + half))


@dataclass(frozen=True, slots=True)
class _Weights:
    """Σ ξ (1 − f·π)/π² · x for x in the moments the estimators need (f: the share of draws reviewed)."""

    w: float
    wh: float
    whh: float
    jw: float
    jwh: float
    jwj: float
    jwhh: float
    jwhj: float
    jwjj: float


def _weights(s: QualitySums) -> _Weights:
    f = s.reviewed / (s.reviewed + s.pending) if s.reviewed else 1.0

    def eff(u: float, v: float) -> float:
        # Σ ξ (1 − fπ)/(fπ)² x over (Σ ξ/(fπ))²: the f² cancel, leaving Σ ξ (1 − fπ)/π² x over (Σ ξ/π)²
        return u - f * v

    return _Weights(
        w=eff(s.u, s.c),
        wh=eff(s.uh, s.a),
        whh=eff(s.uhh, s.vhh),
        jw=eff(s.judged_u, s.judged_c),
        jwh=eff(s.judged_uh, s.judged_a),
        jwj=eff(s.judged_uj, s.judged_b),
        jwhh=eff(s.judged_uhh, s.judged_vhh),
        jwhj=eff(s.judged_uhj, s.judged_vhj),
        jwjj=eff(s.judged_ujj, s.judged_vjj),
    )


def human_only(s: QualitySums, z: float) -> Interval | None:
    if s.reviewed == 0 or s.c <= 0:
        return None
    k = _weights(s)
    theta = s.a / s.c
    variance = (k.whh - 2 * theta * k.wh + theta * theta * k.w) / (s.c * s.c)
    return _interval(theta, variance, z)


def prediction_powered(s: QualitySums, z: float, lam: float | None = None) -> tuple[Interval, float] | None:
    """PPI++ (λ tuned) or, given `lam`, PPI with that weight; None without judged and reviewed units."""
    if s.judged_units == 0 or s.judged_reviewed == 0 or s.judged_c <= 0:
        return None
    k = _weights(s)
    if lam is None:
        var_j = k.jwjj - k.jwj**2 / k.jw if k.jw > 0 else 0.0
        cov = k.jwhj - k.jwh * k.jwj / k.jw if k.jw > 0 else 0.0
        lam = min(1.0, max(0.0, cov / var_j)) if var_j > 1e-12 else 1.0
    residual = (s.judged_a - lam * s.judged_b) / s.judged_c
    theta = lam * s.judged_pass / s.judged_units + residual
    # Σ w (h − λj − r̄)², expanded into the stored sums
    spread = (
        k.jwhh
        - 2 * lam * k.jwhj
        + lam * lam * k.jwjj
        - 2 * residual * (k.jwh - lam * k.jwj)
        + residual * residual * k.jw
    )
    return _interval(theta, spread / (s.judged_c**2), z), lam


def estimate_quality(s: QualitySums, policy: QualityPolicy) -> QualityEstimate:
    z = _z(policy.confidence)
    human = human_only(s, z) if s.reviewed >= policy.min_reviews else None
    agreement = s.judged_agree / s.judged_reviewed if s.judged_reviewed else None
    trusted = (
        agreement is not None
        and s.judged_reviewed >= policy.min_pairs
        and agreement >= policy.trust_threshold
    )
    judge_rate = s.judged_pass / s.judged_units if s.judged_units else None
    ppi = prediction_powered(s, z) if trusted and s.reviewed >= policy.min_reviews else None
    if ppi is not None:
        value, lam, method = ppi[0], ppi[1], "ppi++"
        note = f"judge trusted here ({agreement:.0%} agreement on {s.judged_reviewed} reviews)"
    elif human is not None:
        value, lam, method = human, None, "human"
        if agreement is None or s.judged_reviewed < policy.min_pairs:
            note = f"from {s.reviewed} reviews; the judge has too few reviewed pairs here to be trusted"
        else:
            note = (
                f"from {s.reviewed} reviews; the judge agreed on {agreement:.0%} here, "
                f"below the {policy.trust_threshold:.0%} needed to trust it"
            )
    else:
        value, lam, method = None, None, "insufficient"
        note = f"insufficient: {s.reviewed} of the {policy.min_reviews} reviews needed"
    return QualityEstimate(
        value=value,
        method=method,
        human_only=human,
        reviewed=s.reviewed,
        units=s.units,
        pending=s.pending,
        judged=s.judged_units,
        judge_rate=judge_rate,
        agreement=agreement,
        pairs=s.judged_reviewed,
        trusted=trusted,
        lam=lam,
        note=note,
    )


def wilson(successes: int, trials: int, confidence: float) -> Interval | None:
    if trials <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / trials, float(ci.low), float(ci.high))


@dataclass(frozen=True, slots=True)
class MetricRow:
    """A slice's automation with its quality, always together: the only way cxstack shows a rate."""

    key: str
    counts: SliceCounts
    automation: Interval | None  # automated_resolved ÷ settled conversations
    escalation: Interval | None
    quality: QualityEstimate
    csat: float | None
    csat_satisfied: Interval | None
    cost_per_resolution: float | None  # model cost ÷ automated resolutions, workspace currency

    @property
    def settled(self) -> int:
        return self.counts.conversations - self.counts.in_progress

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "key": self.key,
            "conversations": c.conversations,
            "settled": self.settled,
            "outcomes": {
                "automated_resolved": c.automated_resolved,
                "escalated": c.escalated,
                "abandoned": c.abandoned,
                "reopened": c.reopened,
                "in_progress": c.in_progress,
            },
            "automation_rate": None if self.automation is None else self.automation.as_dict(),
            "quality": self.quality.as_dict(),
            "escalation_rate": None if self.escalation is None else self.escalation.as_dict(),
            "csat": {
                "responses": c.csat_count,
                "mean": None if self.csat is None else round(self.csat, 3),
                "satisfied": None if self.csat_satisfied is None else self.csat_satisfied.as_dict(),
            },
            "cost_per_resolution": None
            if self.cost_per_resolution is None
            else round(self.cost_per_resolution, 6),
            "unjudged": c.unjudged,
        }


def metric_row(counts: SliceCounts, policy: QualityPolicy) -> MetricRow:
    settled = counts.conversations - counts.in_progress
    return MetricRow(
        key=counts.key,
        counts=counts,
        automation=wilson(counts.automated_resolved, settled, policy.confidence),
        escalation=wilson(counts.escalated, settled, policy.confidence),
        quality=estimate_quality(counts.quality, policy),
        csat=counts.csat_sum / counts.csat_count if counts.csat_count else None,
        csat_satisfied=wilson(counts.csat_satisfied, counts.csat_count, policy.confidence),
        cost_per_resolution=(
            counts.cost_micros / int(COST_MICROS) / counts.automated_resolved
            if counts.priced_conversations and counts.automated_resolved
            else None
        ),
    )


def policy_of(settings: MonitoringSettings) -> QualityPolicy:
    return QualityPolicy(
        confidence=settings.confidence,
        min_reviews=settings.min_reviews,
        min_pairs=settings.judge_min_pairs,
        trust_threshold=settings.judge_trust_threshold,
    )


def rules_of(settings: MonitoringSettings) -> OutcomeRules:
    return OutcomeRules(settle_hours=settings.settle_hours, reopen_days=settings.reopen_days)


@dataclass(frozen=True, slots=True)
class MetricsReport:
    by: str
    rows: list[MetricRow]
    overall: MetricRow
    since: datetime | None
    until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "overall": self.overall.as_dict(),
            "rows": [r.as_dict() for r in self.rows],
        }


def as_monitoring_store(store: object) -> MonitoringStore:
    if not all(hasattr(store, name) for name in ("slice_counts", "record_csat", "rebuild_outcomes")):
        raise TypeError(f"{type(store).__name__} keeps no monitoring data: use the SQL store")
    return store  # type: ignore[return-value]


def metrics(
    store: object,
    settings: MonitoringSettings,
    by: Slice = "intent",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    where: dict[str, str] | None = None,
    now: datetime | None = None,
) -> MetricsReport:
    """Automation, escalation, quality, CSAT and cost per resolution by `by`, and overall, from two grouped
    queries (the overall row is its own query: the quality of the whole is not the sum of the slices')."""
    monitoring = as_monitoring_store(store)
    rules, policy = rules_of(settings), policy_of(settings)
    args: dict[str, Any] = {"rules": rules, "since": since, "until": until, "where": where, "now": now}
    rows = monitoring.slice_counts(by, **args)
    whole = monitoring.slice_counts("all", **args) if by != "all" else rows
    overall = whole[0] if whole else SliceCounts(key="all")
    return MetricsReport(
        by=by,
        rows=[metric_row(r, policy) for r in rows],
        overall=metric_row(overall, policy),
        since=since,
        until=until,
    )


def sums_of_units(human: Any, judge: Any, pi: Any, reviewed: Any, pending: int = 0) -> QualitySums:
    """QualitySums from unit arrays (numpy): the store computes the same sums in SQL; simulations and
    tests use this. `judge` may be None (no judge labels); `pending`: drawn units not reviewed yet (not in
    the arrays)."""
    import numpy as np

    h = np.asarray(human, dtype=float)
    p = np.asarray(pi, dtype=float)
    xi = np.asarray(reviewed, dtype=bool)
    h = np.where(xi, h, 0.0)
    v = np.where(xi, 1 / p, 0.0)
    u = np.where(xi, 1 / p**2, 0.0)
    sums = QualitySums(
        units=int(h.size),
        reviewed=int(xi.sum()),
        pending=pending,
        c=float(v.sum()),
        a=float((v * h).sum()),
        vhh=float((v * h * h).sum()),
        u=float(u.sum()),
        uh=float((u * h).sum()),
        uhh=float((u * h * h).sum()),
    )
    if judge is None:
        return sums
    j = np.asarray(judge, dtype=float)
    return replace(
        sums,
        judged_units=int(j.size),
        judged_pass=float(j.sum()),
        judged_reviewed=sums.reviewed,
        judged_agree=float(np.where(xi, 1 - np.abs(h - j), 0.0).sum()),
        judged_c=sums.c,
        judged_a=sums.a,
        judged_b=float((v * j).sum()),
        judged_vhh=sums.vhh,
        judged_vhj=float((v * h * j).sum()),
        judged_vjj=float((v * j * j).sum()),
        judged_u=sums.u,
        judged_uh=sums.uh,
        judged_uj=float((u * j).sum()),
        judged_uhh=sums.uhh,
        judged_uhj=float((u * h * j).sum()),
        judged_ujj=float((u * j * j).sum()),
    )
