"""The experiment statistics pinned to the libraries they stand for (statsmodels, scipy, GrowthBook's
gbstats), the always-valid test's guarantees checked by simulation, the decision line on the four situations
that matter, and `cxstack stats sample-size|srm|ab` as a script calls them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.optimization.report import power_curve_svg, render_analysis_html
from cxstack.optimization.statistics import (
    ArmData,
    CovariateSums,
    Guardrail,
    InsufficientDataError,
    MetricSums,
    Snapshot,
    ab_test,
    adjust_pvalues,
    always_valid_p,
    analyze,
    chance_to_beat_control,
    cohen_h,
    cuped_adjust,
    duration_days,
    msprt_p,
    plan_experiment,
    power_curve,
    sample_size_means,
    sample_size_proportions,
    srm,
)

runner = CliRunner()


def sums(values: np.ndarray) -> MetricSums:
    return MetricSums(int(values.size), float(values.sum()), float(np.square(values).sum()))


def rate(n: int, successes: int) -> MetricSums:
    return MetricSums(n, successes, successes)


# ---- planning ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "target", "alpha", "power", "ratio", "alternative"),
    [
        (0.20, 0.22, 0.05, 0.8, 1.0, "two-sided"),
        (0.50, 0.45, 0.01, 0.9, 2.0, "two-sided"),
        (0.05, 0.06, 0.05, 0.8, 0.5, "larger"),
        (0.80, 0.75, 0.10, 0.95, 1.0, "smaller"),
    ],
)
def test_sample_size_is_statsmodels_normal_ind_power_on_cohens_h_rounded_up(
    baseline: float, target: float, alpha: float, power: float, ratio: float, alternative: str
) -> None:
    h = proportion_effectsize(target, baseline)
    exact = NormalIndPower().solve_power(
        effect_size=h, alpha=alpha, power=power, ratio=ratio, alternative=alternative
    )
    n = sample_size_proportions(baseline, target, alpha, power, ratio, alternative)  # type: ignore[arg-type]
    assert n == math.ceil(float(exact))
    achieved = NormalIndPower().power(
        effect_size=h, nobs1=n, alpha=alpha, ratio=ratio, alternative=alternative
    )
    assert achieved >= power - 1e-9


def test_the_issues_example_and_means_and_the_power_curve() -> None:
    assert sample_size_proportions(0.20, 0.22) == 6508
    d = 0.5 / 4.0
    assert sample_size_means(10.0, 4.0, 0.5) == math.ceil(
        float(NormalIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8))
    )
    curve = power_curve(d, [50, 500, 1005, 5000])
    for point in curve:
        expected = NormalIndPower().power(effect_size=d, nobs1=point.n_per_arm, alpha=0.05)
        assert point.power == pytest.approx(expected, abs=1e-6)
    assert [p.power for p in curve] == sorted(p.power for p in curve)
    auto = power_curve(d)
    assert auto[0].power < 0.8 < auto[-1].power
    # 6508 per arm, two arms, 1,000 units a day split 50/50
    assert duration_days(6508, 2, [0.5, 0.5], 1000) == pytest.approx(13.016)
    assert duration_days(900, 2, [0.9, 0.1], 1000) == pytest.approx(9.0)  # the small arm sets the pace
    for bad in ({"baseline": 0.2, "target": 0.2}, {"baseline": 0.0, "target": 0.1}):
        with pytest.raises(ValueError):
            sample_size_proportions(**bad)


def test_a_plan_gives_every_arm_its_units_the_days_and_the_curve() -> None:
    even = plan_experiment(0.20, 0.02, daily_units=1000)
    assert even.n_per_arm == (6508, 6508) and even.total == 13016
    assert even.days == pytest.approx(13.016)
    assert even.curve[0].power < 0.8 < even.curve[-1].power
    relative = plan_experiment(0.20, 0.10, relative_mde=True)
    assert relative.n_per_arm == even.n_per_arm
    uneven = plan_experiment(0.20, 0.02, allocation=(0.6, 0.4))
    n_control = sample_size_proportions(0.20, 0.22, ratio=0.4 / 0.6)
    assert uneven.n_per_arm == (n_control, math.ceil(n_control * 0.4 / 0.6 - 1e-9))
    means = plan_experiment(10.0, 0.5, sd=4.0, allocation=(1 / 3, 1 / 3, 1 / 3))
    assert means.kind == "mean" and len(set(means.n_per_arm)) == 1
    assert means.n_per_arm[0] == sample_size_means(10.0, 4.0, 0.5)
    with pytest.raises(ValueError, match="allocation"):
        plan_experiment(0.2, 0.02, allocation=(0.5, 0.6))
    with pytest.raises(ValueError, match="baseline"):
        plan_experiment(0.99, 0.02)


# ---- SRM ---------------------------------------------------------------------------------------------------


def test_srm_is_scipys_chisquare_against_the_normalised_allocation() -> None:
    result = srm([5000, 5200], [0.5, 0.5])
    chi2, p = st.chisquare([5000, 5200], [5100, 5100])
    assert (result.chi2, result.p) == (pytest.approx(chi2, abs=1e-9), pytest.approx(p, abs=1e-12))
    assert not result.mismatch
    skewed = srm([5000, 5600, 10100], [1, 1, 2])  # weights normalised: 25/25/50
    chi2, p = st.chisquare([5000, 5600, 10100], [5175, 5175, 10350])
    assert skewed.p == pytest.approx(p, abs=1e-12) and skewed.mismatch
    for counts, weights in (([1, 2], [1.0]), ([1, -2], [0.5, 0.5]), ([1, 2], [0.5, 0.0])):
        with pytest.raises(ValueError):
            srm(counts, weights)
    with pytest.raises(InsufficientDataError):
        srm([0, 0], [0.5, 0.5])


# ---- two-sample tests --------------------------------------------------------------------------------------


def test_two_proportion_z_is_statsmodels_ztest_and_wald_interval() -> None:
    result = ab_test(rate(5000, 1000), rate(5100, 1122), 0.05, "proportion")
    z, p = proportions_ztest([1122, 1000], [5100, 5000])
    low, high = confint_proportions_2indep(1122, 5100, 1000, 5000, method="wald", compare="diff")
    assert result.statistic == pytest.approx(z, abs=1e-9)
    assert result.absolute.p == pytest.approx(p, abs=1e-9)
    assert result.absolute.ci == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


@settings(max_examples=40, deadline=None)
@given(
    hs.integers(2, 5000),
    hs.integers(2, 5000),
    hs.floats(-50, 50),
    hs.floats(0.1, 20),
    hs.floats(0.1, 20),
    hs.integers(0, 2**31),
)
def test_welch_t_is_scipys_on_any_sample(
    n_a: int, n_b: int, shift: float, sd_a: float, sd_b: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, sd_a, n_a), rng.normal(shift, sd_b, n_b)
    result = ab_test(sums(a), sums(b), 0.05, "mean")
    t, p = st.ttest_ind(b, a, equal_var=False)
    assert result.statistic == pytest.approx(t, rel=1e-6, abs=1e-6)
    assert result.absolute.p == pytest.approx(p, abs=1e-6)
    assert result.absolute.effect == pytest.approx(b.mean() - a.mean(), abs=1e-6)


# gbstats 0.8.0 (GrowthBook's engine) cannot be installed beside numpy 2 / pandas 3 (it requires numpy < 2,
# pandas < 2), so these are the values it printed in a separate environment on the same sums:
# TwoSidedTTest and SequentialTwoSidedTTest (sequential_tuning_parameter=5000), alpha 0.05, with
# ProportionStatistic(n, sum) and SampleMeanStatistic(n, sum, sum_squares).
GBSTATS_SUMS = {
    "proportion": (rate(5000, 1000), rate(5100, 1122)),
    "mean": (MetricSums(4000, 8123.5, 21050.25), MetricSums(4100, 8610.0, 22400.5)),
}
GBSTATS: dict[str, dict[str, tuple[float, tuple[float, float], float]]] = {
    "proportion": {
        "relative": (0.09999999999999995, (0.016624082364262605, 0.1833759176357373), 0.01874027613743645),
        "sequential_relative": (0.1, (-0.030249033899047456, 0.23024903389904736), 0.3060838651394701),
        "sequential_absolute": (0.02, (-0.004810852213700041, 0.04481085221370002), 0.23452537224553352),
    },
    "mean": {
        "relative": (0.03403705299439902, (0.011168579044509411, 0.05690552694428863), 0.0035369282409016822),
        "absolute": (0.0691250000000001, (0.023504385520954504, 0.1147456144790457), 0.0029847212752764918),
        "sequential_relative": (0.034037053, (-0.001521862303793059, 0.0695959682925911), 0.0717407844280039),
        "sequential_absolute": (0.069125, (-0.0018119400715820855, 0.1400619400715823), 0.06214044214462748),
    },
}


@pytest.mark.parametrize("kind", ["proportion", "mean"])
def test_relative_lift_and_sequential_interval_equal_gbstats_on_the_same_sums(kind: str) -> None:
    control, treatment = GBSTATS_SUMS[kind]
    case = GBSTATS[kind]
    result = ab_test(control, treatment, 0.05, kind)  # type: ignore[arg-type]
    got = {
        "relative": result.relative,
        "absolute": result.absolute,
        "sequential_relative": result.sequential_relative,
        "sequential_absolute": result.sequential,
    }
    for name, (effect, ci, p) in case.items():
        estimate = got[name]
        assert estimate is not None
        assert estimate.effect == pytest.approx(effect, abs=1e-6), name
        assert estimate.ci == (pytest.approx(ci[0], abs=1e-6), pytest.approx(ci[1], abs=1e-6)), name
        assert estimate.p == pytest.approx(p, abs=1e-6), name


def test_bad_sums_name_the_field_and_too_little_data_is_not_a_number() -> None:
    with pytest.raises(ValueError, match=r"control\.sum_squares"):
        ab_test(MetricSums(10, 5, 7), rate(10, 5), 0.05, "proportion")
    with pytest.raises(ValueError, match=r"treatment\.sum"):
        ab_test(rate(10, 5), MetricSums(10, 11, 11), 0.05, "proportion")
    with pytest.raises(ValueError, match=r"control\.sum_squares"):
        ab_test(MetricSums(10, 100, 50), MetricSums(10, 1, 1), 0.05, "mean")  # Σx² < (Σx)²/n
    with pytest.raises(ValueError, match=r"control\.n"):
        ab_test(MetricSums(-1, 0, 0), MetricSums(10, 1, 1), 0.05, "mean")
    with pytest.raises(InsufficientDataError):
        ab_test(rate(1, 1), rate(10, 5), 0.05, "proportion")
    with pytest.raises(InsufficientDataError):
        ab_test(rate(100, 0), rate(100, 0), 0.05, "proportion")


# ---- the always-valid test ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(hs.integers(50, 20000), hs.integers(50, 20000), hs.floats(0.05, 0.6), hs.floats(-0.05, 0.05))
def test_the_always_valid_p_and_interval_are_never_bolder_than_the_fixed_horizon_ones(
    n_a: int, n_b: int, p_a: float, lift: float
) -> None:
    p_b = min(0.95, max(0.01, p_a + lift))
    control, treatment = rate(n_a, round(n_a * p_a)), rate(n_b, round(n_b * p_b))
    try:
        result = ab_test(control, treatment, 0.05, "proportion")
    except InsufficientDataError:
        return
    se = math.sqrt(control.variance("proportion") / n_a + treatment.variance("proportion") / n_b)
    fixed_p = 2 * st.norm.sf(abs(result.sequential.effect) / se)
    assert result.sequential.p >= fixed_p - 1e-12
    seq_low, seq_high = result.sequential.ci
    assert seq_high - seq_low >= 2 * st.norm.ppf(0.975) * se - 1e-12


def test_under_the_null_daily_looks_rarely_cross_alpha_with_the_sequential_test_but_often_without() -> None:
    rng = np.random.default_rng(7)
    experiments, days, per_day, base = 400, 30, 200, 0.2
    a = rng.binomial(per_day, base, (experiments, days)).cumsum(axis=1)
    b = rng.binomial(per_day, base, (experiments, days)).cumsum(axis=1)
    n = per_day * np.arange(1, days + 1)
    pa, pb = a / n, b / n
    variance = (pa * (1 - pa) + pb * (1 - pb)) / n
    sequential = always_valid_p(pb - pa, variance, 2 * n, 5000)
    fixed = 2 * st.norm.sf(np.abs(pb - pa) / np.sqrt(variance))
    sequential_fpr = float((sequential.min(axis=1) < 0.05).mean())
    peeking_fpr = float((fixed.min(axis=1) < 0.05).mean())
    assert sequential_fpr <= 0.05
    assert peeking_fpr > 0.12  # the reason the sequential test exists


@settings(max_examples=50, deadline=None)
@given(hs.floats(-0.2, 0.2), hs.floats(1e-6, 1e-2), hs.integers(100, 100_000), hs.integers(500, 50_000))
def test_the_confidence_sequence_is_the_mixture_sprt_with_tau_from_rho(
    effect: float, variance: float, n_total: int, n_star: int
) -> None:
    rho2 = (-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / n_star  # Waudby-Smith eq. 161
    sigma2 = variance * n_total  # one unit's variance
    assert always_valid_p(effect, variance, n_total, n_star) == pytest.approx(
        msprt_p(effect, variance, rho2 * sigma2), rel=1e-9, abs=1e-12
    )


# ---- Bayesian, CUPED, multiple comparisons -----------------------------------------------------------------


def test_chance_to_beat_control_agrees_with_the_normal_approximation_and_is_seeded() -> None:
    control, treatment = rate(5000, 1000), rate(5100, 1122)
    chance = chance_to_beat_control(control, treatment, "proportion")
    assert chance == chance_to_beat_control(control, treatment, "proportion")
    se = math.sqrt(0.2 * 0.8 / 5000 + 0.22 * 0.78 / 5100)
    assert chance == pytest.approx(st.norm.cdf(0.02 / se), abs=0.005)
    means = chance_to_beat_control(MetricSums(100, 100, 200), MetricSums(100, 100, 200), "mean")
    assert means == pytest.approx(0.5)


def test_cuped_theta_and_variance_reduction_and_the_sums_path_agrees() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(10, 3, 4000)
    y = 0.8 * x + rng.normal(0, 1, 4000)
    result = cuped_adjust(y, x)
    assert result.theta == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1))
    assert result.variance_reduction == pytest.approx(np.corrcoef(y, x)[0, 1] ** 2, abs=1e-9)
    assert result.adjusted.mean() == pytest.approx(y.mean())

    def with_covariate(ys: np.ndarray, xs: np.ndarray) -> MetricSums:
        return MetricSums(
            ys.size,
            float(ys.sum()),
            float((ys**2).sum()),
            CovariateSums(float(xs.sum()), float((xs**2).sum()), float((xs * ys).sum())),
        )

    half = 2000
    plain = ab_test(sums(y[:half]), sums(y[half:] + 0.1), 0.05, "mean")
    adjusted = ab_test(with_covariate(y[:half], x[:half]), with_covariate(y[half:] + 0.1, x[half:]), 0.05)
    assert adjusted.cuped is not None and adjusted.cuped > 0.8
    assert adjusted.absolute.ci[1] - adjusted.absolute.ci[0] < 0.5 * (
        plain.absolute.ci[1] - plain.absolute.ci[0]
    )
    pooled = cuped_adjust(np.concatenate([y[:half], y[half:] + 0.1]), x).adjusted
    direct = st.ttest_ind(pooled[half:], pooled[:half], equal_var=False)
    assert adjusted.absolute.effect == pytest.approx(pooled[half:].mean() - pooled[:half].mean(), abs=1e-9)
    assert adjusted.statistic == pytest.approx(direct.statistic, rel=1e-2)
    with pytest.raises(ValueError, match="x"):
        cuped_adjust([1.0, 2.0, 3.0], [1.0, 2.0])


def test_holm_and_benjamini_hochberg_are_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.20]
    assert adjust_pvalues(p, "holm") == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert adjust_pvalues(p, "fdr_bh") == pytest.approx(list(multipletests(p, method="fdr_bh")[1]))
    assert adjust_pvalues([]) == []


# ---- the analysis and its decision -------------------------------------------------------------------------


def arm(name: str, units: int, resolved: int, quality: int, weight: float = 0.5) -> ArmData:
    return ArmData(name, units, {"resolved": rate(units, resolved), "quality": rate(units, quality)}, weight)


QUALITY = Guardrail("quality", max_drop=0.02)


def test_a_clear_win_with_a_safe_guardrail_ships() -> None:
    arms = [arm("control", 20000, 4000, 17000), arm("new", 20000, 4700, 17050)]
    analysis = analyze(arms, control="control", primary="resolved", guardrails=[QUALITY], mde=0.02)
    assert analysis.decision.action == "ship" and analysis.decision.arm == "new"
    assert analysis.decision.line.startswith("ship new")
    assert [g.verdict for g in analysis.guardrails] == ["ok"]
    primary = analysis.comparison("resolved", "new")
    assert primary.result is not None and primary.adjusted_p is not None and primary.adjusted_p < 0.05
    assert primary.chance_to_beat is not None and primary.chance_to_beat > 0.99
    assert json.loads(json.dumps(analysis.as_dict()))["decision"]["action"] == "ship"
    lines = analysis.summary()
    assert lines[0] == analysis.decision.line and any(line.startswith("resolved · new") for line in lines)


def test_a_broken_guardrail_stops_even_when_the_primary_wins() -> None:
    arms = [arm("control", 20000, 4000, 17000), arm("new", 20000, 4700, 16000)]
    analysis = analyze(arms, control="control", primary="resolved", guardrails=[QUALITY], mde=0.02)
    assert analysis.decision.action == "stop"
    assert "guardrail broken" in analysis.decision.line and "quality" in analysis.decision.line
    assert analysis.guardrails[0].verdict == "broken"


def test_guardrails_lower_is_better_and_relative() -> None:
    def arms(escalated: int) -> list[ArmData]:
        return [
            ArmData("control", 20000, {"resolved": rate(20000, 4000), "escalated": rate(20000, 2000)}, 0.5),
            ArmData("new", 20000, {"resolved": rate(20000, 4700), "escalated": rate(20000, escalated)}, 0.5),
        ]

    rising = Guardrail("escalated", max_drop=0.1, relative=True, lower_is_better=True)
    broken = analyze(arms(2600), control="control", primary="resolved", guardrails=[rising], mde=0.02)
    assert broken.guardrails[0].verdict == "broken" and broken.decision.action == "stop"
    fine = analyze(arms(1950), control="control", primary="resolved", guardrails=[rising], mde=0.02)
    assert fine.guardrails[0].verdict == "ok" and fine.decision.action == "ship"


def test_a_lower_is_better_primary_wins_by_falling() -> None:
    def arms(escalated: int) -> list[ArmData]:
        return [
            ArmData("control", 20000, {"escalation_rate": rate(20000, 4000)}, 0.5),
            ArmData("new", 20000, {"escalation_rate": rate(20000, escalated)}, 0.5),
        ]

    kwargs: dict[str, object] = {"primary": "escalation_rate", "lower_is_better": {"escalation_rate"}}
    falls = analyze(arms(3400), control="control", mde=0.02, **kwargs)  # type: ignore[arg-type]
    assert falls.decision.action == "ship" and falls.decision.arm == "new"
    chance = falls.comparisons[0].chance_to_beat
    assert chance is not None and chance > 0.99
    rises = analyze(arms(4600), control="control", mde=0.02, **kwargs)  # type: ignore[arg-type]
    assert rises.decision.action == "stop" and "worse" in rises.decision.line
    chance = rises.comparisons[0].chance_to_beat
    assert chance is not None and chance < 0.01


@settings(max_examples=40, deadline=None)
@given(
    hs.lists(hs.floats(-1e4, 1e4, allow_nan=False), min_size=0, max_size=50),
    hs.lists(hs.integers(0, 1), min_size=0, max_size=50),
)
def test_sums_of_real_values_are_always_accepted(values: list[float], flags: list[int]) -> None:
    sums(np.asarray(values, dtype=float)).check("mean")
    sums(np.asarray(flags, dtype=float)).check("proportion")


@settings(max_examples=40, deadline=None)
@given(hs.integers(0, 400), hs.integers(0, 400), hs.floats(0.05, 0.95), hs.floats(0.05, 0.95))
def test_an_analysis_never_shows_a_p_value_below_the_minimum_sample(
    n_a: int, n_b: int, p_a: float, p_b: float
) -> None:
    arms = [
        ArmData("control", n_a, {"resolved": rate(n_a, round(n_a * p_a))}, 0.5),
        ArmData("new", n_b, {"resolved": rate(n_b, round(n_b * p_b))}, 0.5),
    ]
    analysis = analyze(arms, control="control", primary="resolved", mde=0.05)
    (comparison,) = analysis.comparisons
    if min(n_a, n_b) < 100:
        assert comparison.result is None and comparison.adjusted_p is None
        assert analysis.decision.action in ("keep running", "stop")
    if comparison.result is None and analysis.decision.action == "keep running":
        assert "too little data" in analysis.decision.line


def test_a_sample_ratio_mismatch_stops_because_the_data_cannot_be_trusted() -> None:
    arms = [arm("control", 20000, 4000, 17000), arm("new", 21000, 4900, 17900)]
    analysis = analyze(arms, control="control", primary="resolved", guardrails=[QUALITY], mde=0.02)
    assert analysis.srm is not None and analysis.srm.mismatch
    assert analysis.decision.action == "stop"
    assert "sample ratio mismatch" in analysis.decision.line


def test_too_little_data_says_so_with_the_required_sample_and_no_p_value() -> None:
    arms = [arm("control", 40, 8, 35), arm("new", 40, 12, 34)]
    analysis = analyze(
        arms, control="control", primary="resolved", guardrails=[QUALITY], mde=0.02, daily_units=500
    )
    assert analysis.decision.action == "keep running"
    assert "too little data" in analysis.decision.line
    required = sample_size_proportions(0.2, 0.22)
    assert analysis.required_per_arm == required
    assert analysis.decision.more_units_per_arm == required - 40
    assert analysis.decision.more_days == pytest.approx((required - 40) / 250)
    assert f"{required:,}" in analysis.decision.line
    assert all(c.result is None and c.adjusted_p is None for c in analysis.comparisons)
    shown = analysis.as_dict()["comparisons"][0]
    assert "absolute" not in shown and shown["adjusted_p"] is None and "units" in shown["insufficient"]
    assert analysis.guardrails[0].verdict == "insufficient"


def test_no_difference_yet_keeps_running_with_how_long_and_after_the_plan_stops() -> None:
    running = analyze(
        [arm("control", 3000, 600, 2550), arm("new", 3000, 610, 2560)],
        control="control",
        primary="resolved",
        mde=0.02,
        daily_units=500,
    )
    assert running.decision.action == "keep running" and running.decision.more_days is not None
    assert "more units per arm" in running.decision.line
    done = analyze(
        [arm("control", 9000, 1800, 7650), arm("new", 9000, 1810, 7660)],
        control="control",
        primary="resolved",
        mde=0.02,
    )
    assert done.decision.action == "stop" and "no effect as large as the MDE" in done.decision.line


def test_bad_analysis_input_is_refused_naming_what() -> None:
    arms = [arm("control", 100, 20, 80, 0.5), arm("new", 100, 20, 80, 0.6)]
    with pytest.raises(ValueError, match="sum to 1"):
        analyze(arms, control="control", primary="resolved")
    with pytest.raises(ValueError, match="control"):
        analyze([arm("a", 100, 20, 80), arm("b", 100, 20, 80)], control="control", primary="resolved")
    with pytest.raises(ValueError, match=r"metrics\.missing"):
        analyze([arm("control", 100, 20, 80), arm("b", 100, 20, 80)], control="control", primary="missing")


def test_daily_snapshots_give_the_sequential_interval_over_time() -> None:
    days = [
        Snapshot(
            f"2026-11-{d:02d}",
            [arm("control", 1000 * d, 200 * d, 850 * d), arm("new", 1000 * d, 230 * d, 850 * d)],
        )
        for d in range(1, 6)
    ]
    analysis = analyze(days[-1].arms, control="control", primary="resolved", history=days, mde=0.02)
    assert [p.day for p in analysis.history] == [s.day for s in days]
    widths = [p.ci[1] - p.ci[0] for p in analysis.history]
    assert widths == sorted(widths, reverse=True)


# ---- the command line --------------------------------------------------------------------------------------


def stats(command: str, payload: object) -> tuple[int, dict[str, object] | str]:
    result = runner.invoke(app, ["stats", command], input=json.dumps(payload))
    if result.exit_code:
        return result.exit_code, result.stderr
    return 0, json.loads(result.stdout)


def test_stats_sample_size_srm_and_ab_on_the_command_line() -> None:
    code, out = stats(
        "sample-size", {"baseline": 0.20, "target": 0.22, "alpha": 0.05, "power": 0.8, "ratio": 1}
    )
    assert code == 0 and isinstance(out, dict) and out["n_per_arm"] == 6508
    code, out = stats("srm", {"counts": [5000, 5200], "weights": [0.5, 0.5]})
    assert code == 0 and isinstance(out, dict)
    assert out["mismatch"] is False and out["p"] == pytest.approx(st.chisquare([5000, 5200]).pvalue)
    payload = {
        "control": {"n": 5000, "sum": 1000, "sum_squares": 1000},
        "treatment": {"n": 5100, "sum": 1122, "sum_squares": 1122},
        "alpha": 0.05,
    }
    code, out = stats("ab", payload)
    assert code == 0 and isinstance(out, dict)
    relative = out["relative"]
    assert isinstance(relative, dict) and relative["p"] == pytest.approx(0.01874027613743645, abs=1e-9)
    assert set(out["absolute"]) == {"effect", "ci", "p"}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "payload", "field"),
    [
        ("sample-size", {"baseline": 1.2, "target": 0.22}, "baseline"),
        ("sample-size", {"baseline": 0.2, "target": 0.2}, "target"),
        ("srm", {"counts": [5000, 5200], "weights": [0.5, 0.6]}, "weights"),
        ("srm", {"counts": [5000, -5200], "weights": [0.5, 0.5]}, "counts"),
        ("srm", {"counts": [5000, 5200, 10], "weights": [0.5, 0.5]}, "weights"),
        (
            "ab",
            {
                "control": {"n": -1, "sum": 0, "sum_squares": 0},
                "treatment": {"n": 5, "sum": 1, "sum_squares": 1},
            },
            "control.n",
        ),
        (
            "ab",
            {
                "control": {"n": 10, "sum": 100, "sum_squares": 50},
                "treatment": {"n": 5, "sum": 1, "sum_squares": 1},
            },
            "control.sum_squares",
        ),
        (
            "ab",
            {"control": {"n": 10, "sum": 5, "sum_squares": 5}, "treatment": {"n": 5, "sum": 1}},
            "treatment.sum_squares",
        ),
    ],
)
def test_stats_bad_input_exits_2_naming_the_field(command: str, payload: object, field: str) -> None:
    code, message = stats(command, payload)
    assert code == 2 and isinstance(message, str) and f"{field}:" in message


def test_stats_ab_with_too_little_data_prints_insufficient_not_numbers() -> None:
    code, out = stats(
        "ab",
        {"control": {"n": 1, "sum": 1, "sum_squares": 1}, "treatment": {"n": 5, "sum": 1, "sum_squares": 1}},
    )
    assert code == 0 and isinstance(out, dict) and out["absolute"] is None and "insufficient" in out


# ---- the HTML report ------------------------------------------------------------------------------------


def test_the_html_report_is_self_contained_with_the_decision_charts_and_plan() -> None:
    days = [
        Snapshot(
            f"2026-11-{d:02d}",
            [arm("control", 4000 * d, 800 * d, 3400 * d), arm("new", 4000 * d, 940 * d, 3410 * d)],
        )
        for d in range(1, 8)
    ]
    analysis = analyze(
        days[-1].arms, control="control", primary="resolved", guardrails=[QUALITY], mde=0.02, history=days
    )
    plan = power_curve(cohen_h(0.2, 0.22))
    html = render_analysis_html(analysis, title="Faster refunds", plan=plan)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "Faster refunds" in html and analysis.decision.line.split(":")[0] in html
    assert html.count("<svg") == 3  # lift with intervals, interval over time, power curve
    assert "always-valid" in html and "no mismatch" in html and ">ok<" in html
    svg = power_curve_svg(plan, required=6508)
    assert svg.startswith("<svg") and "n = 6,508" in svg


def test_the_html_report_on_too_little_data_shows_the_required_sample_and_no_p() -> None:
    analysis = analyze(
        [arm("control", 40, 8, 35), arm("new", 40, 12, 34)], control="control", primary="resolved", mde=0.02
    )
    html = render_analysis_html(analysis)
    assert "insufficient" in html and "6,508" in html
    assert html.count("<svg") == 0
