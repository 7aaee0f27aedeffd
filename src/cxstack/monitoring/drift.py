"""Drift: did quality, judge–human agreement, the escalation rate or the intent mix move between two periods
(or two workspace versions) by more than chance and more than a threshold?

Each check names its test and p-value: quality by a z-test on the two estimates (each with its own standard
error, from the monitoring layer's estimate), escalation and agreement by a two-proportion z-test, the intent
mix by a chi-square test of homogeneity (scipy) with Cramér's V as its size. An alert needs both p below
`drift_alpha` and a change at least `drift_min_change` (points for rates, V for the mix), so a huge sample
does not alert on a trivial shift and a tiny one does not alert on noise. Too little data in either period:
the check is reported as insufficient, never as an alert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scipy.stats import chi2_contingency, norm

from cxstack.domain.quality import Slice
from cxstack.monitoring.quality import MetricsReport, metrics
from cxstack.workspace.models import MonitoringSettings

MIN_CONVERSATIONS = 30


@dataclass(frozen=True, slots=True)
class DriftCheck:
    metric: str  # quality | escalation_rate | judge_agreement | intent_mix
    test: str
    before: float | None
    after: float | None
    change: float | None
    statistic: float | None
    p: float | None
    alert: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 6)

        return {
            "metric": self.metric,
            "test": self.test,
            "before": r(self.before),
            "after": r(self.after),
            "change": r(self.change),
            "statistic": r(self.statistic),
            "p": r(self.p),
            "alert": self.alert,
            "note": self.note,
        }


def _two_sided(z: float) -> float:
    return float(2 * norm.sf(abs(z)))


def two_proportions(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, p) of the pooled two-proportion z-test."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k2 / n2 - k1 / n1) / se
    return z, _two_sided(z)


def _insufficient(metric: str, test: str, note: str) -> DriftCheck:
    return DriftCheck(
        metric, test, None, None, None, None, None, False, f"insufficient: {note} (in a period)"
    )


def compare(
    before: MetricsReport,
    after: MetricsReport,
    by_intent_before: MetricsReport,
    by_intent_after: MetricsReport,
    settings: MonitoringSettings,
) -> list[DriftCheck]:
    alpha, minimum = settings.drift_alpha, settings.drift_min_change
    checks = []
    # quality: the two estimates' difference over its standard error
    qb, qa = before.overall.quality, after.overall.quality
    if qb.value is None or qa.value is None:
        checks.append(_insufficient("quality", "z, two estimates", "too few reviews"))
    else:
        z_level = float(norm.ppf(1 - (1 - settings.confidence) / 2))
        se = math.hypot(
            (qb.value.high - qb.value.low) / (2 * z_level), (qa.value.high - qa.value.low) / (2 * z_level)
        )
        change = qa.value.estimate - qb.value.estimate
        z = change / se if se > 0 else 0.0
        p = _two_sided(z) if se > 0 else 1.0
        alert = p < alpha and abs(change) >= minimum
        test = "z, two estimates"
        checks.append(DriftCheck("quality", test, qb.value.estimate, qa.value.estimate, change, z, p, alert))
    # escalation rate among settled conversations
    sb, sa = before.overall.settled, after.overall.settled
    if min(sb, sa) < MIN_CONVERSATIONS:
        note = f"under {MIN_CONVERSATIONS} settled"
        checks.append(_insufficient("escalation_rate", "z, two proportions", note))
    else:
        eb, ea = before.overall.counts.escalated, after.overall.counts.escalated
        z, p = two_proportions(eb, sb, ea, sa)
        change = ea / sa - eb / sb
        alert = p < alpha and abs(change) >= minimum
        checks.append(
            DriftCheck("escalation_rate", "z, two proportions", eb / sb, ea / sa, change, z, p, alert)
        )
    # judge–human agreement on the reviewed pairs
    pb, pa = qb.pairs, qa.pairs
    if min(pb, pa) < settings.judge_min_pairs or qb.agreement is None or qa.agreement is None:
        note = f"under {settings.judge_min_pairs} judged reviews"
        checks.append(_insufficient("judge_agreement", "z, two proportions", note))
    else:
        kb, ka = round(qb.agreement * pb), round(qa.agreement * pa)
        z, p = two_proportions(kb, pb, ka, pa)
        change = qa.agreement - qb.agreement
        alert = p < alpha and abs(change) >= minimum
        test = "z, two proportions"
        checks.append(DriftCheck("judge_agreement", test, qb.agreement, qa.agreement, change, z, p, alert))
    checks.append(_intent_mix(by_intent_before, by_intent_after, alpha, minimum))
    return checks


def _intent_mix(before: MetricsReport, after: MetricsReport, alpha: float, minimum: float) -> DriftCheck:
    test = "chi-square, Cramér's V"
    counts_b = {r.key: r.counts.conversations for r in before.rows}
    counts_a = {r.key: r.counts.conversations for r in after.rows}
    nb, na = sum(counts_b.values()), sum(counts_a.values())
    if min(nb, na) < MIN_CONVERSATIONS:
        return _insufficient("intent_mix", test, f"under {MIN_CONVERSATIONS} conversations")
    # intents expected fewer than 5 times in either period are pooled, as the test needs
    keys = sorted(set(counts_b) | set(counts_a))
    big = [
        k
        for k in keys
        if min((counts_b.get(k, 0) + counts_a.get(k, 0)) * n / (nb + na) for n in (nb, na)) >= 5
    ]
    small = [k for k in keys if k not in big]
    rows = [[counts_b.get(k, 0) for k in big], [counts_a.get(k, 0) for k in big]]
    if small:
        rows[0].append(sum(counts_b.get(k, 0) for k in small))
        rows[1].append(sum(counts_a.get(k, 0) for k in small))
    if len(rows[0]) < 2:
        return _insufficient("intent_mix", test, "under two common intents")
    statistic, p, _, _ = chi2_contingency(rows)
    v = math.sqrt(float(statistic) / ((nb + na) * (len(rows[0]) - 1)))
    alert = bool(p < alpha and v >= minimum)
    return DriftCheck(
        "intent_mix", test, None, None, v, float(statistic), float(p), alert, "change: Cramér's V"
    )


@dataclass(frozen=True, slots=True)
class DriftReport:
    before: str
    after: str
    checks: list[DriftCheck]

    @property
    def alerts(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.alert]

    def as_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "checks": [c.as_dict() for c in self.checks]}


def drift_between_periods(
    store: object, settings: MonitoringSettings, *, days: float = 7, now: datetime | None = None
) -> DriftReport:
    """The last `days` against the `days` before them."""
    from cxstack.domain.models import utcnow

    now = now or utcnow()
    middle, start = now - timedelta(days=days), now - timedelta(days=2 * days)

    def period(since: datetime, until: datetime, by: Slice) -> MetricsReport:
        return metrics(store, settings, by, since=since, until=until, now=now)

    checks = compare(
        period(start, middle, "all"),
        period(middle, now, "all"),
        period(start, middle, "intent"),
        period(middle, now, "intent"),
        settings,
    )
    return DriftReport(f"{start:%Y-%m-%d}…{middle:%Y-%m-%d}", f"{middle:%Y-%m-%d}…{now:%Y-%m-%d}", checks)


def drift_between_versions(
    store: object, settings: MonitoringSettings, before: str, after: str, *, now: datetime | None = None
) -> DriftReport:
    def version(v: str, by: Slice) -> MetricsReport:
        return metrics(store, settings, by, where={"workspace_version": v}, now=now)

    checks = compare(
        version(before, "all"),
        version(after, "all"),
        version(before, "intent"),
        version(after, "intent"),
        settings,
    )
    return DriftReport(f"version {before}", f"version {after}", checks)
