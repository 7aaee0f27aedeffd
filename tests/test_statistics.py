"""Agreement and estimation statistics: checked against published worked examples and reference
implementations, and through `cxstack stats` as a script would call it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.monitoring.statistics import (
    InsufficientDataError,
    cohen_kappa,
    krippendorff_alpha,
    ppi_mean,
    review_size,
)

runner = CliRunner()


def test_kappa_matches_the_textbook_example_and_a_direct_weighted_computation() -> None:
    # 50 items: both yes 20, yes/no 5, no/yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)

    rng = np.random.default_rng(5)
    x = rng.integers(1, 6, 200)
    y = np.clip(x + rng.integers(-1, 2, 200), 1, 5)
    k = 5
    observed = np.zeros((k, k))
    for i, j in zip(x - 1, y - 1, strict=True):
        observed[i, j] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    grid = np.subtract.outer(np.arange(k), np.arange(k))
    for name, weights in (("linear", np.abs(grid)), ("quadratic", grid**2)):
        direct = 1 - (weights * observed).sum() / (weights * expected).sum()
        assert cohen_kappa(x.tolist(), y.tolist(), name) == pytest.approx(direct, abs=1e-9)  # type: ignore[arg-type]


def test_alpha_matches_krippendorffs_published_example_with_missing_ratings() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders x 12 units.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)
    with pytest.raises(InsufficientDataError):
        krippendorff_alpha([[1, None], [None, 1]])


# Reference values: ppi_py 0.2.3 (Angelopoulos et al.), `ppi_mean_ci(y, yhat, unlabeled, alpha=0.05, lam=…)`
# on the data below: lam=1 (PPI), lam=None (PPI++, tuned), lam=0 (the classical interval). The package is
# not a dependency: its wheel installs a top-level `tests` package that shadows any project's own.
Y = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1]
YHAT = [1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1]
UNLABELED = [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
PPI_CI = (0.6290508221792748, 1.0709491778207254)
PPI_PLUS_PLUS_CI = (0.5983757129696561, 0.9345660749721318)
CLASSICAL_CI = (0.49916345547364066, 0.9008365445263593)


def test_ppi_mean_equals_the_reference_implementation() -> None:
    ppi = ppi_mean(Y, YHAT, UNLABELED, alpha=0.05)
    assert ppi.estimate == pytest.approx(0.85, abs=1e-9) and ppi.lam == 1.0
    assert ppi.ci == pytest.approx(PPI_CI, abs=1e-9)
    assert ppi.human_only_ci == pytest.approx(CLASSICAL_CI, abs=1e-9)
    tuned = ppi_mean(Y, YHAT, UNLABELED, alpha=0.05, tuned=True)
    assert tuned.ci == pytest.approx(PPI_PLUS_PLUS_CI, abs=1e-9) and 0 < tuned.lam < 1
    # PPI++ never does worse than the humans alone; here the judge narrows the interval.
    assert tuned.ci[1] - tuned.ci[0] < tuned.human_only_ci[1] - tuned.human_only_ci[0]


def test_a_good_judge_narrows_the_interval_on_a_large_sample() -> None:
    rng = np.random.default_rng(7)
    truth = rng.random(5_100) < 0.7
    judge = np.where(rng.random(5_100) < 0.9, truth, ~truth).astype(float)  # right 90 % of the time
    result = ppi_mean(truth[:100].astype(float), judge[:100], judge[100:], tuned=True)
    assert result.ci[1] - result.ci[0] < 0.8 * (result.human_only_ci[1] - result.human_only_ci[0])
    assert result.ci[0] <= truth.mean() <= result.ci[1]


def test_review_size_for_a_margin_at_a_confidence() -> None:
    assert review_size(0.8, 0.05, 0.95) == 246  # 1.96^2 x 0.16 / 0.0025 = 245.9
    assert review_size(0.5, 0.03, 0.95) == 1068
    assert review_size(0.5, 0.05, 0.99) == 664


def stats(command: str, payload: object) -> tuple[int, str]:
    result = runner.invoke(app, ["stats", command], input=json.dumps(payload))
    return result.exit_code, result.output


def test_the_command_line_reads_and_writes_json() -> None:
    code, out = stats("kappa", {"a": [1, 1, 0, 0, 1], "b": [1, 0, 0, 0, 1], "weights": None})
    assert code == 0 and json.loads(out)["kappa"] == pytest.approx(0.6153846153846154)
    code, out = stats("review-size", {"p": 0.8, "margin": 0.05, "confidence": 0.95})
    assert code == 0 and json.loads(out) == {"n": 246}
    code, out = stats(
        "ppi-mean",
        {"y": [1, 0, 1, 1], "yhat": [1, 0, 1, 0], "yhat_unlabeled": [1, 1, 0, 1, 1], "tuned": True},
    )
    result = json.loads(out)
    assert code == 0 and set(result) == {"estimate", "ci", "human_only_ci", "lambda"}
    code, out = stats("alpha", {"data": [[1, 2, 3, None], [1, 2, 3, 3]], "level": "nominal"})
    assert code == 0 and json.loads(out)["alpha"] == pytest.approx(1.0)


def test_bad_input_names_the_field_and_too_little_data_is_reported_as_such() -> None:
    code, out = stats("review-size", {"p": 1.5, "margin": 0.05})
    assert code == 2 and "p:" in out
    code, out = stats("kappa", {"a": [1, 0], "b": [1]})
    assert code == 2 and "same length" in out
    code, out = stats("alpha", {"data": [[1, 2]], "level": "nominal"})
    assert code == 2 and "2 coders" in out
    result = runner.invoke(app, ["stats", "kappa"], input="not json")
    assert result.exit_code == 2 and "not JSON" in result.output
    code, out = stats("kappa", {"a": [1], "b": [1]})
    assert code == 0 and json.loads(out)["kappa"] is None and "at least 2" in json.loads(out)["insufficient"]
    code, out = stats("ppi-mean", {"y": [1], "yhat": [1], "yhat_unlabeled": [1, 0]})
    assert code == 0 and json.loads(out)["estimate"] is None
