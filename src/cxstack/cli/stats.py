"""`cxstack stats …`: one statistic per command, a JSON object on standard input, a JSON object out.

Input that does not fit the schema exits 2 with the field named; too little data for the statistic to mean
anything prints the statistic as null with `insufficient` saying why (never a number that looks solid)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Literal, TypeVar

import typer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cxstack.monitoring import statistics
from cxstack.optimization import statistics as experiments

stats_app = typer.Typer(
    help="Statistics: a JSON object on standard input, a JSON object on standard output.",
    no_args_is_help=True,
)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KappaInput(_Input):
    a: list[str | int | float] = Field(description="First rater's labels.")
    b: list[str | int | float] = Field(description="Second rater's labels, same items in the same order.")
    weights: Literal["linear", "quadratic"] | None = None

    @model_validator(mode="after")
    def _same_length(self) -> KappaInput:
        if len(self.a) != len(self.b):
            raise ValueError(f"a and b must have the same length ({len(self.a)} vs {len(self.b)})")
        return self


class AlphaInput(_Input):
    data: list[list[float | None]] = Field(description="One row per coder; null where one did not rate.")
    level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal"


class PPIMeanInput(_Input):
    y: list[float]
    yhat: list[float]
    yhat_unlabeled: list[float]
    alpha: float = Field(0.05, gt=0, lt=1)
    tuned: bool = False


class ReviewSizeInput(_Input):
    p: float = Field(ge=0, le=1)
    margin: float = Field(gt=0, lt=1)
    confidence: float = Field(0.95, gt=0, lt=1)


class SampleSizeInput(_Input):
    baseline: float = Field(gt=0, lt=1, description="Control's rate.")
    target: float = Field(gt=0, lt=1, description="The rate worth detecting.")
    alpha: float = Field(0.05, gt=0, lt=1)
    power: float = Field(0.8, gt=0, lt=1)
    ratio: float = Field(1.0, gt=0, description="Treatment units per control unit.")
    alternative: Literal["two-sided", "larger", "smaller"] = "two-sided"

    @field_validator("target")
    @classmethod
    def _an_effect(cls, target: float, info: ValidationInfo) -> float:
        if target == info.data.get("baseline"):
            raise ValueError("must differ from baseline")
        return target


class SRMInput(_Input):
    counts: list[int] = Field(min_length=2, description="Units assigned to each arm.")
    weights: list[float] = Field(min_length=2, description="Configured allocation, summing to 1.")
    threshold: float = Field(0.001, gt=0, lt=1)

    @field_validator("counts")
    @classmethod
    def _whole(cls, counts: list[int]) -> list[int]:
        if any(c < 0 for c in counts):
            raise ValueError("counts cannot be negative")
        return counts

    @field_validator("weights")
    @classmethod
    def _allocation(cls, weights: list[float], info: ValidationInfo) -> list[float]:
        counts = info.data.get("counts")
        if counts is not None and len(weights) != len(counts):
            raise ValueError(f"{len(weights)} weights for {len(counts)} counts")
        if any(w <= 0 for w in weights):
            raise ValueError("every allocation must be positive")
        if abs(sum(weights) - 1) > 1e-6:
            raise ValueError(f"allocations must sum to 1 (got {sum(weights):g})")
        return weights


class SumsInput(_Input):
    n: int = Field(ge=0)
    sum: float
    sum_squares: float = Field(ge=0)


class ABInput(_Input):
    control: SumsInput
    treatment: SumsInput
    alpha: float = Field(0.05, gt=0, lt=1)
    kind: Literal["proportion", "mean"] | None = Field(
        None, description="Default: proportion when every unit is 0 or 1 (sum_squares == sum ≤ n)."
    )


_T = TypeVar("_T", bound=BaseModel)


def _read(model: type[_T]) -> _T:
    raw = sys.stdin.read()
    try:
        return model.model_validate(json.loads(raw))
    except json.JSONDecodeError as error:
        typer.echo(f"error: standard input is not JSON: {error}", err=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        typer.echo(f"error: {where}: {first['msg']}", err=True)
    raise typer.Exit(2)


def _write(result: dict[str, Any]) -> None:
    typer.echo(json.dumps(result))


@stats_app.command("kappa")
def kappa() -> None:
    """Cohen's κ: {"a": [...], "b": [...], "weights": null|"linear"|"quadratic"} → {"kappa"}."""
    given = _read(KappaInput)
    try:
        _write({"kappa": statistics.cohen_kappa(given.a, given.b, given.weights), "n": len(given.a)})
    except statistics.InsufficientDataError as error:
        _write({"kappa": None, "n": len(given.a), "insufficient": str(error)})


@stats_app.command("alpha")
def alpha() -> None:
    """Krippendorff's α: {"data": [[coder 1's values, null if missing], …], "level"} → {"alpha"}."""
    given = _read(AlphaInput)
    try:
        _write({"alpha": statistics.krippendorff_alpha(given.data, given.level)})
    except statistics.InsufficientDataError as error:
        _write({"alpha": None, "insufficient": str(error)})
    except ValueError as error:
        typer.echo(f"error: data: {error}", err=True)
        raise typer.Exit(2) from None


@stats_app.command("ppi-mean")
def ppi_mean() -> None:
    """Prediction-powered mean: {"y", "yhat", "yhat_unlabeled", "alpha", "tuned"} → {"estimate", "ci",
    "human_only_ci"} (tuned: PPI++, with the weight it chose as "lambda")."""
    given = _read(PPIMeanInput)
    try:
        result = statistics.ppi_mean(
            given.y, given.yhat, given.yhat_unlabeled, alpha=given.alpha, tuned=given.tuned
        )
    except statistics.InsufficientDataError as error:
        _write({"estimate": None, "ci": None, "human_only_ci": None, "insufficient": str(error)})
        return
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    _write(
        {
            "estimate": result.estimate,
            "ci": list(result.ci),
            "human_only_ci": list(result.human_only_ci),
            "lambda": result.lam,
        }
    )


@stats_app.command("review-size")
def review_size() -> None:
    """Reviews for a proportion: {"p": 0.8, "margin": 0.05, "confidence": 0.95} → {"n"}."""
    given = _read(ReviewSizeInput)
    _write({"n": statistics.review_size(given.p, given.margin, given.confidence)})


@stats_app.command("sample-size")
def sample_size() -> None:
    """Units per arm for a proportion: {"baseline": 0.20, "target": 0.22, "alpha", "power", "ratio"} →
    {"n_per_arm"} (Cohen's h, statsmodels' NormalIndPower; the treatment needs n_per_arm × ratio)."""
    given = _read(SampleSizeInput)
    n = experiments.sample_size_proportions(
        given.baseline, given.target, given.alpha, given.power, given.ratio, given.alternative
    )
    _write(
        {
            "n_per_arm": n,
            "n_treatment": math.ceil(n * given.ratio - 1e-9),
            "effect_size": experiments.cohen_h(given.baseline, given.target),
        }
    )


@stats_app.command("srm")
def srm() -> None:
    """Sample-ratio mismatch: {"counts": [5000, 5200], "weights": [0.5, 0.5]} → {"chi2", "p", "mismatch"}
    (χ² against the allocation; mismatch when p < threshold, default 0.001)."""
    given = _read(SRMInput)
    try:
        result = experiments.srm(given.counts, given.weights, given.threshold)
    except experiments.InsufficientDataError as error:
        _write({"chi2": None, "p": None, "mismatch": None, "insufficient": str(error)})
        return
    _write(
        {"chi2": result.chi2, "p": result.p, "mismatch": result.mismatch, "expected": list(result.expected)}
    )


@stats_app.command("ab")
def ab() -> None:
    """Treatment against control on sums: {"control": {"n", "sum", "sum_squares"}, "treatment": {…},
    "alpha"} → {"absolute": {"effect", "ci", "p"}, "relative": {…}, "sequential": {…}}."""
    given = _read(ABInput)
    control, treatment = (
        experiments.MetricSums(s.n, s.sum, s.sum_squares) for s in (given.control, given.treatment)
    )
    binary = all(
        math.isclose(s.sum_squares, s.sum, abs_tol=1e-9) and 0 <= s.sum <= s.n for s in (control, treatment)
    )
    kind = given.kind or ("proportion" if binary else "mean")
    try:
        control.check(kind, "control")
        treatment.check(kind, "treatment")
        result = experiments.ab_test(control, treatment, given.alpha, kind)
    except experiments.InsufficientDataError as error:
        _write({"absolute": None, "relative": None, "kind": kind, "insufficient": str(error)})
        return
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    _write({**result.as_dict(), "kind": kind})
