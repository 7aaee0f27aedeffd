"""`cxstack stats …`: one statistic per command, a JSON object on standard input, a JSON object out.

Input that does not fit the schema exits 2 with the field named; too little data for the statistic to mean
anything prints the statistic as null with `insufficient` saying why (never a number that looks solid)."""

from __future__ import annotations

import json
import sys
from typing import Any, Literal, TypeVar

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxstack.monitoring import statistics

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
