"""CLINC150 intent routing benchmark: in-scope accuracy and out-of-scope recall (Larson et al. 2019).

    python -m benchmarks.routing_clinc150 [--json PATH] [--embedder minilm,wordllama] [--quick]

Trains `IntentRouter` on "train" + "oos_train" (out-of-scope as its own class), picks the out-of-scope
threshold on "val" + "oos_val", and reports on "test" + "oos_test" beside a TF-IDF + logistic regression
baseline trained in the same run and the published rows of Larson et al. 2019, Table 2 (full).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from cxstack.integrations.embedders.registry import load_embedder
from cxstack.knowledge.ports import Embedder
from cxstack.orchestration.calibration import expected_calibration_error
from cxstack.orchestration.router import OUT_OF_SCOPE_LABEL, ClassifierKind, IntentRouter

SPLITS = ("train", "oos_train", "val", "oos_val", "test", "oos_test")
PAPER_OPERATING_RECALLS = (0.403, 0.523)
C_CANDIDATES = (5.0, 10.0, 20.0)  # logistic C; the SVM uses C / 20
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
class SystemResult:
    name: str
    fit_seconds: float
    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    argmax_in_scope_accuracy: float
    argmax_oos_recall: float
    test_ece: float
    test_ece_in_scope: float
    cv_ece: float | None = None
    cv_accuracy: float | None = None
    temperature: float | None = None
    predict_ms: float | None = None
    embed_seconds: float | None = None
    operating_points: dict[str, dict[str, float]] = field(default_factory=dict)
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


def embed_with_progress(embedder: Embedder, texts: Sequence[str], progress: Progress) -> NDArray[np.float32]:
    task = progress.add_task(f"embedding with {embedder.name}", total=len(texts))
    chunks = []
    for start in range(0, len(texts), 512):
        chunk = texts[start : start + 512]
        chunks.append(embedder.embed(chunk))
        progress.advance(task, len(chunk))
    return np.vstack(chunks)


# ---- metrics on (best in-scope intent, in-scope confidence) ---------------------------------------------


def evaluate_at(
    threshold: float, best: Sequence[str], confidence: NDArray[np.float64], gold: Sequence[str]
) -> tuple[float, float]:
    """(in-scope accuracy, out-of-scope recall) when messages with confidence < threshold are out of scope."""
    gold_arr = np.asarray(gold)
    in_scope = gold_arr != OUT_OF_SCOPE_LABEL
    flagged = confidence < threshold
    correct_in = (np.asarray(best) == gold_arr) & ~flagged
    accuracy = float(correct_in[in_scope].mean()) if in_scope.any() else 0.0
    recall = float(flagged[~in_scope].mean()) if (~in_scope).any() else 0.0
    return accuracy, recall


def threshold_for_recall(confidence: NDArray[np.float64], gold: Sequence[str], recall: float) -> float:
    """The smallest threshold whose out-of-scope recall reaches `recall`."""
    oos_conf = np.sort(confidence[np.asarray(gold) == OUT_OF_SCOPE_LABEL])
    k = int(np.ceil(recall * len(oos_conf)))
    if k <= 0:
        return 0.0
    return float(np.nextafter(oos_conf[k - 1], np.inf))


def summarise(
    name: str,
    fit_seconds: float,
    val: tuple[list[str], NDArray[np.float64], list[str]],
    test: tuple[list[str], NDArray[np.float64], list[str]],
    test_top: tuple[list[str], NDArray[np.float64]],
    target_recall: float,
) -> SystemResult:
    _, val_confidence, val_gold = val
    threshold = threshold_for_recall(val_confidence, val_gold, target_recall)
    best, confidence, gold = test
    accuracy, recall = evaluate_at(threshold, best, confidence, gold)
    argmax_accuracy, argmax_recall = evaluate_at(1e-12, best, confidence, gold)
    top_label, top_probability = test_top
    top_correct = np.asarray(top_label) == np.asarray(gold)
    ece = expected_calibration_error(top_probability, top_correct)
    in_scope = np.asarray(gold) != OUT_OF_SCOPE_LABEL
    ece_in_scope = expected_calibration_error(top_probability[in_scope], top_correct[in_scope])
    points: dict[str, dict[str, float]] = {}
    for target in PAPER_OPERATING_RECALLS:
        t = threshold_for_recall(confidence, gold, target)
        acc, rec = evaluate_at(t, best, confidence, gold)
        points[f"{target * 100:.1f}"] = {"threshold": t, "in_scope_accuracy": acc, "oos_recall": rec}
    return SystemResult(
        name=name,
        fit_seconds=fit_seconds,
        threshold=threshold,
        in_scope_accuracy=accuracy,
        oos_recall=recall,
        argmax_in_scope_accuracy=argmax_accuracy,
        argmax_oos_recall=argmax_recall,
        test_ece=ece,
        test_ece_in_scope=ece_in_scope,
        operating_points=points,
    )


def router_outputs(
    router: IntentRouter, texts: list[str], embeddings: NDArray[np.float32]
) -> tuple[list[str], NDArray[np.float64], list[str], NDArray[np.float64]]:
    proba, classes = router.predict_proba(texts, embeddings=embeddings)
    best, confidence = router.in_scope_confidence(proba)
    return (
        [classes[i] for i in best],
        confidence,
        [classes[i] for i in proba.argmax(axis=1)],
        proba.max(axis=1),
    )


def run_router(
    name: str,
    data: dict[str, Split],
    console: Console,
    n_jobs: int,
    classifier: ClassifierKind | Literal["auto"],
    target_recall: float,
) -> SystemResult:
    embedder = load_embedder(name)
    everything = [t for split in SPLITS for t in data[split].texts]
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        vectors = embed_with_progress(embedder, everything, progress)
    embed_seconds = time.perf_counter() - started
    offsets: dict[str, NDArray[np.float32]] = {}
    position = 0
    for split in SPLITS:
        offsets[split] = vectors[position : position + len(data[split].texts)]
        position += len(data[split].texts)

    train = joined(data, "train", "oos_train")
    train_vectors = np.vstack([offsets["train"], offsets["oos_train"]])
    val = joined(data, "val", "oos_val")
    val_vectors = np.vstack([offsets["val"], offsets["oos_val"]])
    tuning: dict[str, float] = {}
    for c in C_CANDIDATES:
        candidate = IntentRouter(embedder, seed=0, regularization_c=c, cv_folds=0, classifier=classifier)
        candidate.fit(train.texts, train.labels, embeddings=train_vectors)
        best, confidence, _, _ = router_outputs(candidate, val.texts, val_vectors)
        threshold = threshold_for_recall(confidence, val.labels, target_recall)
        tuning[str(c)] = evaluate_at(threshold, best, confidence, val.labels)[0]
        console.print(
            f"[dim]{name}: C={c} val in-scope acc at target OOS recall {tuning[str(c)] * 100:.2f}[/dim]"
        )
    chosen_c = float(max(tuning, key=lambda k: tuning[k]))
    router = IntentRouter(
        embedder, seed=0, regularization_c=chosen_c, cv_folds=3, n_jobs=n_jobs, classifier=classifier
    )
    console.print(f"[dim]fitting router on {name} ({len(train.texts)} examples, C={chosen_c})…[/dim]")
    report = router.fit(train.texts, train.labels, embeddings=train_vectors)
    val = joined(data, "val", "oos_val")
    v_best, v_conf, _, _ = router_outputs(router, val.texts, val_vectors)
    test = joined(data, "test", "oos_test")
    t_best, t_conf, t_top, t_prob = router_outputs(
        router, test.texts, np.vstack([offsets["test"], offsets["oos_test"]])
    )
    result = summarise(
        f"cxstack router ({name}, {report.classifier}, C={chosen_c:g})",
        report.fit_seconds,
        (v_best, v_conf, val.labels),
        (t_best, t_conf, test.labels),
        (t_top, t_prob),
        target_recall,
    )
    result.cv_ece = report.expected_calibration_error
    result.cv_accuracy = report.cv_accuracy
    result.temperature = report.temperature
    result.embed_seconds = embed_seconds
    result.tuning = {"val_in_scope_accuracy_by_c": tuning, "chosen_c": chosen_c}
    sample = data["test"].texts[:200]
    router.predict(sample[0], oos_threshold=result.threshold)
    timer = time.perf_counter()
    for text in sample:
        router.predict(text, oos_threshold=result.threshold)
    result.predict_ms = (time.perf_counter() - timer) / len(sample) * 1000
    return result


def run_tfidf_baseline(data: dict[str, Split], target_recall: float) -> SystemResult:
    """Word + character TF-IDF, multinomial logistic regression, out-of-scope as a class; no embedding."""
    train = joined(data, "train", "oos_train")
    started = time.perf_counter()
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(train.texts)
    model = LogisticRegression(C=10.0, max_iter=300, solver="newton-cg").fit(
        words.transform(train.texts), train.labels
    )
    fit_seconds = time.perf_counter() - started
    classes = [str(c) for c in model.classes_]
    oos_index = classes.index(OUT_OF_SCOPE_LABEL)

    def outputs(split: Split) -> tuple[list[str], NDArray[np.float64], list[str], NDArray[np.float64]]:
        proba = np.asarray(model.predict_proba(words.transform(split.texts)), dtype=np.float64)
        masked = proba.copy()
        masked[:, oos_index] = -1.0
        best = masked.argmax(axis=1)
        confidence = np.where(proba.argmax(axis=1) == oos_index, 0.0, proba[np.arange(len(best)), best])
        return (
            [classes[i] for i in best],
            confidence,
            [classes[i] for i in proba.argmax(axis=1)],
            proba.max(axis=1),
        )

    val = joined(data, "val", "oos_val")
    test = joined(data, "test", "oos_test")
    v_best, v_conf, _, _ = outputs(val)
    t_best, t_conf, t_top, t_prob = outputs(test)
    return summarise(
        "TF-IDF + logistic regression (this run)",
        fit_seconds,
        (v_best, v_conf, val.labels),
        (t_best, t_conf, test.labels),
        (t_top, t_prob),
        target_recall,
    )


def render(results: list[SystemResult], console: Console, quick: bool) -> None:
    table = Table(
        title="CLINC150 (data_full) — test in-scope accuracy / out-of-scope recall, %"
        + (" [QUICK]" if quick else "")
    )
    table.add_column("system", no_wrap=True)
    table.add_column("in-scope acc", justify="right")
    table.add_column("OOS recall", justify="right")
    table.add_column("acc @ OOS rec 40.3", justify="right")
    table.add_column("acc @ OOS rec 52.3", justify="right")
    table.add_column("argmax acc / rec", justify="right")
    table.add_column("ECE test / test in-scope / cv", justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("ms/msg", justify="right")
    for r in results:
        points = r.operating_points
        table.add_row(
            r.name,
            f"{r.in_scope_accuracy * 100:.1f}",
            f"{r.oos_recall * 100:.1f}",
            f"{points['40.3']['in_scope_accuracy'] * 100:.1f}",
            f"{points['52.3']['in_scope_accuracy'] * 100:.1f}",
            f"{r.argmax_in_scope_accuracy * 100:.1f} / {r.argmax_oos_recall * 100:.1f}",
            f"{r.test_ece:.3f} / {r.test_ece_in_scope:.3f} / "
            + ("-" if r.cv_ece is None else f"{r.cv_ece:.3f}"),
            f"{r.fit_seconds:.1f}",
            "-" if r.predict_ms is None else f"{r.predict_ms:.2f}",
        )
    for name, (accuracy, recall) in PUBLISHED.items():
        table.add_row(
            f"[dim]{name}, Larson et al. 2019[/dim]",
            f"{accuracy:.1f}",
            f"{recall:.1f}",
            "",
            "",
            "",
            "",
            "",
            "",
        )
    console.print(table)
    console.print(
        "[dim]in-scope acc / OOS recall: the threshold is the smallest reaching the target OOS recall "
        "(default 52.3) on val+oos_val. "
        "'acc @ OOS rec': threshold set on test so OOS recall reaches the paper's figure (comparison only). "
        "ms/msg: one message at a time, embedding included, CPU.[/dim]"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--embedder", default="minilm,wordllama", help="comma-separated embedder names")
    parser.add_argument("--quick", action="store_true", help="40 intents and a quarter of out-of-scope")
    parser.add_argument("--classifier", choices=("auto", "logistic", "svm"), default="auto")
    parser.add_argument(
        "--target-oos-recall",
        type=float,
        default=0.523,
        help="the threshold is the smallest reaching this OOS recall on val+oos_val (paper: 52.3)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel cross-validation fits")
    args = parser.parse_args(argv)

    console = Console(width=max(Console().width, 170))
    path = shared_data_dir() / "clinc150" / "data_full.json"
    if not path.is_file():
        raise SystemExit(f"CLINC150 not found at {path}; set CXSTACK_SHARED_DATA to the shared data folder")
    data = load_clinc(path, args.quick)
    results: list[SystemResult] = []
    console.print("[dim]fitting TF-IDF baseline…[/dim]")
    results.append(run_tfidf_baseline(data, args.target_oos_recall))
    for name in [n.strip() for n in args.embedder.split(",") if n.strip()]:
        results.append(run_router(name, data, console, args.jobs, args.classifier, args.target_oos_recall))
        render(results, console, args.quick)
    payload: dict[str, Any] = {
        "dataset": "clinc150/data_full.json",
        "quick": args.quick,
        "sizes": {split: len(data[split].texts) for split in SPLITS},
        "results": [vars(r) for r in results],
        "published": {name: {"in_scope_accuracy": a, "oos_recall": r} for name, (a, r) in PUBLISHED.items()},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    return payload


if __name__ == "__main__":
    main()
