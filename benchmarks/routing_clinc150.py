"""CLINC150 intent routing: the router exactly as shipped, in-scope accuracy and out-of-scope recall.

    python -m benchmarks.routing_clinc150 [--json PATH] [--embedder minilm,wordllama] [--quick]

The shipped path is what `cxstack.app.build_engine` builds from a workspace: `IntentRouter(embedder)` with its
default arguments over a cached embedder, trained on the in-scope training examples only (a workspace has no
out-of-scope examples); a message is out of scope when its calibrated confidence is below the threshold or it
is unlike every training example (the similarity gate), as `IntentRouter.predict_many(..., oos_threshold=t)`
decides. Nothing is chosen on test:
  - the threshold is the smallest whose out-of-scope recall on val + oos_val reaches the target (default
    52.3%, the recall of Larson et al.'s BERT oos-threshold row), then test + oos_test are scored at it;
  - a second row scores test at route_min_confidence 0.40, the workspace default (not tuned at all).
Beside it, measured in the same run and tuned the same way or more (C by a grid on val, threshold on val):
  - TF-IDF (word 1-2 grams, sublinear) + logistic regression, in-scope training only, threshold on its top
    probability: the baseline for the shipped row;
  - the router trained with out-of-scope as a class of its own ("oos-train", NOT the shipped path: a
    workspace has no such examples), beside the oos-train rows of Larson et al. 2019, Table 2 (and, with
    --oos-train-baseline, TF-IDF + LR trained that way too: three more fits of ~1-2 min each).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from cxstack.integrations.embedders.registry import CachedEmbedder, load_embedder
from cxstack.orchestration.calibration import expected_calibration_error
from cxstack.orchestration.router import OUT_OF_SCOPE_LABEL, IntentRouter, RouterFitReport
from cxstack.workspace.models import Thresholds

SPLITS = ("train", "oos_train", "val", "oos_val", "test", "oos_test")
TFIDF_C_GRID = (10.0, 30.0, 100.0, 300.0)  # val accuracy still rose at 30 and at 100 (2026-11-29)
DEFAULT_ROUTE_MIN_CONFIDENCE = float(Thresholds().route_min_confidence)
# Larson et al. 2019, Table 2, data_full: (in-scope accuracy, out-of-scope recall)
PUBLISHED = {
    "BERT (oos-train)": (96.9, 40.3),
    "MLP(USE) (oos-train)": (93.5, 47.4),
    "SVM (oos-train)": (91.0, 14.5),
    "FastText (oos-train)": (89.0, 9.7),
    "DialogFlow (oos-train)": (91.7, 14.0),
    "Rasa (oos-train)": (91.5, 45.3),
    "BERT (oos-threshold)": (96.2, 52.3),
}
SOURCE = (
    "Larson et al. 2019, An Evaluation Dataset for Intent Classification and Out-of-Scope Prediction, Table 2"
)


def shared_data_dir() -> Path:
    override = os.environ.get("CXSTACK_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class Split:
    texts: list[str]
    labels: list[str]


@dataclass
class Scored:
    """One system's per-message view of a split: best in-scope intent, its confidence, the gate's verdict."""

    best: list[str]
    confidence: NDArray[np.float64]
    gated: NDArray[np.bool_]  # out of scope whatever the threshold (similarity gate, or the oos class won)
    gold: list[str]

    def flagged(self, threshold: float) -> NDArray[np.bool_]:
        return np.asarray(self.gated | (self.confidence < threshold), dtype=bool)


@dataclass
class SystemResult:
    name: str
    trained_on: str
    comparable_with: str
    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    val_in_scope_accuracy: float
    val_oos_recall: float
    test_ece_in_scope: float
    fit_seconds: float
    cv_ece: float | None = None
    cv_accuracy: float | None = None
    temperature: float | None = None
    similarity_floor: float | None = None
    predict_ms: float | None = None
    embed_seconds: float | None = None
    tuning: dict[str, Any] = field(default_factory=dict)


def load_clinc(path: Path, quick: bool) -> dict[str, Split]:
    raw = json.loads(path.read_text())
    keep: set[str] | None = None
    if quick:
        keep = set(sorted({label for _, label in raw["train"]})[:40]) | {OUT_OF_SCOPE_LABEL}
    data: dict[str, Split] = {}
    for name in SPLITS:
        rows = [(text, label) for text, label in raw[name] if keep is None or label in keep]
        if quick and name.startswith("oos"):
            rows = rows[: max(len(rows) // 4, 25)]
        data[name] = Split([t for t, _ in rows], [label for _, label in rows])
    return data


def joined(data: dict[str, Split], *names: str) -> Split:
    return Split([t for n in names for t in data[n].texts], [lab for n in names for lab in data[n].labels])


# ---- metrics ----------------------------------------------------------------------------------------------


def accuracy_and_recall(
    flagged: NDArray[np.bool_], best: Sequence[str], gold: Sequence[str]
) -> tuple[float, float]:
    """(in-scope accuracy, out-of-scope recall): an in-scope message flagged out of scope counts as wrong."""
    gold_arr = np.asarray(gold)
    in_scope = gold_arr != OUT_OF_SCOPE_LABEL
    correct = (np.asarray(best) == gold_arr) & ~flagged
    accuracy = float(correct[in_scope].mean()) if in_scope.any() else 0.0
    recall = float(flagged[~in_scope].mean()) if (~in_scope).any() else 0.0
    return accuracy, recall


def threshold_for_recall(scored: Scored, recall: float) -> float:
    """The smallest threshold whose out-of-scope recall on `scored` reaches `recall` (0 if the gate does)."""
    oos = np.asarray(scored.gold) == OUT_OF_SCOPE_LABEL
    needed = int(np.ceil(recall * oos.sum())) - int(scored.gated[oos].sum())
    if needed <= 0:
        # Above zero: `predict_many` treats "the out-of-scope class won" as confidence 0.0 < threshold.
        return float(np.nextafter(0.0, 1.0))
    candidates = np.sort(scored.confidence[oos & ~scored.gated])
    return float(np.nextafter(candidates[min(needed, len(candidates)) - 1], np.inf))


def in_scope_ece(scored: Scored) -> float:
    in_scope = np.asarray(scored.gold) != OUT_OF_SCOPE_LABEL
    correct = np.asarray(scored.best)[in_scope] == np.asarray(scored.gold)[in_scope]
    return expected_calibration_error(scored.confidence[in_scope], correct)


# ---- the shipped router ---------------------------------------------------------------------------------


def router_scored(router: IntentRouter, report: RouterFitReport, split: Split) -> Scored:
    """Vectorised `predict_many`: the same probabilities, in-scope confidence and similarity gate."""
    dense = router.embedder.embed(split.texts)
    proba, classes = router.predict_proba(split.texts, embeddings=dense)
    best, confidence = router.in_scope_confidence(proba)
    similarity = router.nearest_example_similarity(dense)
    gated = np.zeros(len(split.texts), dtype=bool)
    if similarity is not None and report.similarity_floor is not None:
        gated = similarity < report.similarity_floor
    if OUT_OF_SCOPE_LABEL in classes:  # in_scope_confidence gives 0.0 where the out-of-scope class won
        gated = gated | (confidence <= 0.0)
    return Scored([classes[i] for i in best], confidence, gated, split.labels)


def shipped_call(router: IntentRouter, split: Split, threshold: float) -> tuple[float, float]:
    """The figure from the very call the orchestrator makes."""
    predictions = router.predict_many(split.texts, oos_threshold=threshold)
    flagged = np.array([p.intent is None for p in predictions])
    best = [p.intent or "" for p in predictions]
    return accuracy_and_recall(flagged, best, split.labels)


def warm(embedder: CachedEmbedder, texts: Sequence[str], console: Console) -> float:
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"embedding with {embedder.name}", total=len(texts))
        for start in range(0, len(texts), 512):
            chunk = texts[start : start + 512]
            embedder.embed(chunk)
            progress.advance(task, len(chunk))
    return time.perf_counter() - started


def run_router(
    name: str, data: dict[str, Split], console: Console, target_recall: float, jobs: int
) -> list[SystemResult]:
    everything = list(dict.fromkeys(t for split in SPLITS for t in data[split].texts))
    # build_engine wraps the embedder the same way; big enough here to hold every CLINC text.
    embedder = CachedEmbedder(load_embedder(name), maxsize=len(everything) + 1)
    embed_seconds = warm(embedder, everything, console)
    val, test = joined(data, "val", "oos_val"), joined(data, "test", "oos_test")
    results: list[SystemResult] = []

    # The shipped path: default arguments (n_jobs only parallelises cross-validation), in-scope examples.
    router = IntentRouter(embedder) if jobs == 1 else IntentRouter(embedder, n_jobs=jobs)
    console.print(
        f"[dim]{name}: fitting the shipped router on {len(data['train'].texts)} in-scope examples…[/dim]"
    )
    report = router.fit(data["train"].texts, data["train"].labels)
    on_val = router_scored(router, report, val)
    threshold = threshold_for_recall(on_val, target_recall)
    val_acc, val_rec = accuracy_and_recall(on_val.flagged(threshold), on_val.best, on_val.gold)
    on_test = router_scored(router, report, test)
    accuracy, recall = shipped_call(router, test, threshold)
    expected = accuracy_and_recall(on_test.flagged(threshold), on_test.best, on_test.gold)
    if not np.allclose((accuracy, recall), expected):
        console.print(f"[red]{name}: predict_many {accuracy, recall} differs from the sweep {expected}[/red]")
    ms = predict_ms(router, embedder, data["test"].texts[:200], threshold)
    common = {
        "fit_seconds": report.fit_seconds,
        "cv_ece": report.expected_calibration_error,
        "cv_accuracy": report.cv_accuracy,
        "temperature": report.temperature,
        "similarity_floor": report.similarity_floor,
        "embed_seconds": embed_seconds,
        "test_ece_in_scope": in_scope_ece(on_test),
    }
    results.append(
        SystemResult(
            name=f"cxstack router as shipped ({name}, {report.classifier})",
            trained_on="in-scope train",
            comparable_with="TF-IDF + LR in-scope; BERT (oos-threshold)",
            threshold=threshold,
            in_scope_accuracy=accuracy,
            oos_recall=recall,
            val_in_scope_accuracy=val_acc,
            val_oos_recall=val_rec,
            predict_ms=ms,
            tuning={"threshold": f"smallest reaching OOS recall {target_recall:.3f} on val+oos_val"},
            **common,
        )
    )
    default_acc, default_rec = shipped_call(router, test, DEFAULT_ROUTE_MIN_CONFIDENCE)
    val_default = accuracy_and_recall(on_val.flagged(DEFAULT_ROUTE_MIN_CONFIDENCE), on_val.best, on_val.gold)
    results.append(
        SystemResult(
            name=f"  same, route_min_confidence {DEFAULT_ROUTE_MIN_CONFIDENCE:g} (the default, untuned)",
            trained_on="in-scope train",
            comparable_with="",
            threshold=DEFAULT_ROUTE_MIN_CONFIDENCE,
            in_scope_accuracy=default_acc,
            oos_recall=default_rec,
            val_in_scope_accuracy=val_default[0],
            val_oos_recall=val_default[1],
            predict_ms=ms,
            tuning={"threshold": "none: the default of Thresholds.route_min_confidence"},
            **common,
        )
    )

    # Not the shipped path: out-of-scope examples as a class of their own (the paper's oos-train setting).
    train = joined(data, "train", "oos_train")
    with_oos = IntentRouter(embedder) if jobs == 1 else IntentRouter(embedder, n_jobs=jobs)
    console.print(f"[dim]{name}: fitting the oos-train variant on {len(train.texts)} examples…[/dim]")
    oos_report = with_oos.fit(train.texts, train.labels)
    oos_val = router_scored(with_oos, oos_report, val)
    oos_threshold = threshold_for_recall(oos_val, target_recall)
    oos_on_test = router_scored(with_oos, oos_report, test)
    acc, rec = shipped_call(with_oos, test, oos_threshold)
    oos_val_acc, oos_val_rec = accuracy_and_recall(oos_val.flagged(oos_threshold), oos_val.best, oos_val.gold)
    results.append(
        SystemResult(
            name=f"cxstack router, oos-train — not the shipped path ({name})",
            trained_on="train + oos_train",
            comparable_with="BERT, Rasa (oos-train); TF-IDF + LR oos-train with --oos-train-baseline",
            threshold=oos_threshold,
            in_scope_accuracy=acc,
            oos_recall=rec,
            val_in_scope_accuracy=oos_val_acc,
            val_oos_recall=oos_val_rec,
            test_ece_in_scope=in_scope_ece(oos_on_test),
            fit_seconds=oos_report.fit_seconds,
            cv_ece=oos_report.expected_calibration_error,
            cv_accuracy=oos_report.cv_accuracy,
            temperature=oos_report.temperature,
            embed_seconds=embed_seconds,
            tuning={"threshold": f"smallest reaching OOS recall {target_recall:.3f} on val+oos_val"},
        )
    )
    return results


def predict_ms(
    router: IntentRouter, embedder: CachedEmbedder, texts: Sequence[str], threshold: float
) -> float:
    """One message at a time, embedding included (cache emptied first), as a turn routes."""
    embedder.clear()
    router.predict(texts[0], oos_threshold=threshold)
    started = time.perf_counter()
    for text in texts:
        router.predict(text, oos_threshold=threshold)
    return (time.perf_counter() - started) / len(texts) * 1000


# ---- the baseline ---------------------------------------------------------------------------------------


def tfidf_scored(model: LogisticRegression, words: TfidfVectorizer, split: Split) -> Scored:
    proba = np.asarray(model.predict_proba(words.transform(split.texts)), dtype=np.float64)
    classes = [str(c) for c in model.classes_]
    gated = np.zeros(len(split.texts), dtype=bool)
    if OUT_OF_SCOPE_LABEL in classes:
        oos_index = classes.index(OUT_OF_SCOPE_LABEL)
        gated = proba.argmax(axis=1) == oos_index
        proba = proba.copy()
        proba[:, oos_index] = -1.0
    best = proba.argmax(axis=1)
    return Scored([classes[i] for i in best], proba[np.arange(len(best)), best], gated, split.labels)


def run_tfidf(data: dict[str, Split], console: Console, target_recall: float, with_oos: bool) -> SystemResult:
    """C chosen on val (in-scope accuracy at the threshold reaching the target recall), threshold on val."""
    train = joined(data, "train", "oos_train") if with_oos else data["train"]
    val, test = joined(data, "val", "oos_val"), joined(data, "test", "oos_test")
    by_c: dict[str, float] = {}
    fitted: dict[float, tuple[TfidfVectorizer, LogisticRegression, float]] = {}
    for c in TFIDF_C_GRID:
        started = time.perf_counter()
        words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(train.texts)
        model = LogisticRegression(C=c, max_iter=300, solver="newton-cg").fit(
            words.transform(train.texts), train.labels
        )
        fit_seconds = time.perf_counter() - started
        on_val = tfidf_scored(model, words, val)
        threshold = threshold_for_recall(on_val, target_recall)
        by_c[f"{c:g}"] = accuracy_and_recall(on_val.flagged(threshold), on_val.best, on_val.gold)[0]
        fitted[c] = (words, model, fit_seconds)
        variant = " oos-train" if with_oos else ""
        console.print(f"[dim]TF-IDF{variant}: C={c:g} val in-scope acc {by_c[f'{c:g}'] * 100:.2f}[/dim]")
    chosen = max(TFIDF_C_GRID, key=lambda c: by_c[f"{c:g}"])
    words, model, fit_seconds = fitted[chosen]
    on_val = tfidf_scored(model, words, val)
    threshold = threshold_for_recall(on_val, target_recall)
    val_acc, val_rec = accuracy_and_recall(on_val.flagged(threshold), on_val.best, on_val.gold)
    on_test = tfidf_scored(model, words, test)
    accuracy, recall = accuracy_and_recall(on_test.flagged(threshold), on_test.best, on_test.gold)
    return SystemResult(
        name=f"TF-IDF + logistic regression{', oos-train' if with_oos else ''} (C={chosen:g}, this run)",
        trained_on="train + oos_train" if with_oos else "in-scope train",
        comparable_with="",
        threshold=threshold,
        in_scope_accuracy=accuracy,
        oos_recall=recall,
        val_in_scope_accuracy=val_acc,
        val_oos_recall=val_rec,
        test_ece_in_scope=in_scope_ece(on_test),
        fit_seconds=fit_seconds,
        tuning={"val_in_scope_accuracy_by_c": by_c, "chosen_c": chosen, "threshold": "val, as the router"},
    )


# ---- report ---------------------------------------------------------------------------------------------


def render(results: list[SystemResult], console: Console, quick: bool, target_recall: float) -> None:
    table = Table(
        title="CLINC150 (data_full): test in-scope accuracy / out-of-scope recall, %, threshold chosen on val"
        + (" [QUICK: 40 intents]" if quick else "")
    )
    table.add_column("system")
    table.add_column("trained on")
    for column in (
        "threshold",
        "in-scope acc",
        "OOS recall",
        "val acc / rec",
        "ECE test in-scope / cv",
        "fit s",
    ):
        table.add_column(column, justify="right")
    table.add_column("ms/msg", justify="right")
    for r in results:
        table.add_row(
            r.name,
            r.trained_on,
            f"{r.threshold:.3f}",
            f"{r.in_scope_accuracy * 100:.1f}",
            f"{r.oos_recall * 100:.1f}",
            f"{r.val_in_scope_accuracy * 100:.1f} / {r.val_oos_recall * 100:.1f}",
            f"{r.test_ece_in_scope:.3f} / " + ("-" if r.cv_ece is None else f"{r.cv_ece:.3f}"),
            f"{r.fit_seconds:.1f}",
            "-" if r.predict_ms is None else f"{r.predict_ms:.2f}",
        )
    for name, (accuracy, recall) in PUBLISHED.items():
        table.add_row(
            f"[dim]{name}, published[/dim]", "", "", f"{accuracy:.1f}", f"{recall:.1f}", "", "", "", ""
        )
    console.print(table)
    console.print(
        f"[dim]threshold: the smallest reaching {target_recall * 100:.1f}% OOS recall on val+oos_val (except "
        "the untuned default row); test is never used to choose anything. Published rows: "
        f"{SOURCE}. ms/msg: one message at a time, embedding included, CPU.[/dim]"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--embedder", default="minilm,wordllama", help="comma-separated embedder names")
    parser.add_argument("--quick", action="store_true", help="40 intents and a quarter of out-of-scope")
    parser.add_argument(
        "--target-oos-recall",
        type=float,
        default=0.523,
        help="the threshold: the smallest reaching this OOS recall on val+oos_val (BERT oos-threshold 52.3)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="parallel cross-validation fits (1 = as shipped; same results)"
    )
    parser.add_argument(
        "--oos-train-baseline", action="store_true", help="also tune and score TF-IDF + LR with an oos class"
    )
    args = parser.parse_args(argv)

    console = Console(width=max(Console().width, 170))
    path = shared_data_dir() / "clinc150" / "data_full.json"
    if not path.is_file():
        raise SystemExit(f"CLINC150 not found at {path}; set CXSTACK_SHARED_DATA to the shared data folder")
    data = load_clinc(path, args.quick)
    started = time.perf_counter()
    results: list[SystemResult] = [run_tfidf(data, console, args.target_oos_recall, with_oos=False)]
    if args.oos_train_baseline:
        results.append(run_tfidf(data, console, args.target_oos_recall, with_oos=True))
    embedders = [n.strip() for n in args.embedder.split(",") if n.strip()]
    for name in embedders:
        results.extend(run_router(name, data, console, args.target_oos_recall, args.jobs))
        render(results, console, args.quick, args.target_oos_recall)
    if not embedders:  # --embedder "": the baselines alone
        render(results, console, args.quick, args.target_oos_recall)
    payload: dict[str, Any] = {
        "dataset": "clinc150/data_full.json",
        "quick": args.quick,
        "target_oos_recall": args.target_oos_recall,
        "sizes": {split: len(data[split].texts) for split in SPLITS},
        "seconds": round(time.perf_counter() - started, 1),
        "results": [vars(r) for r in results],
        "published": {
            "source": SOURCE,
            "rows": {name: {"in_scope_accuracy": a, "oos_recall": r} for name, (a, r) in PUBLISHED.items()},
        },
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    return payload


if __name__ == "__main__":
    main()
