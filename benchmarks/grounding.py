"""Grounding check: is a reply supported by its knowledge? BEGIN dev sets (held-out half), two baselines.

    python -m benchmarks.grounding [--json PATH] [--embedder minilm] [--seed 7]
    python -m benchmarks.grounding --fit      # refit the shipped models on the fitting half (writes the JSON)

Data: the three BEGIN dev sets in ../shared/data/begin/ (WoW, TopicalChat, CMU-DoG; knowledge, message,
response, label). "Fully attributable" is supported; "Not fully attributable" is not. "Generic" replies (81)
make no claim and are left out of the scores (cxstack passes a reply without a claim), counted apart.

Split: each (dataset, label) group is cut in two with a fixed seed. The models that ship
(`src/cxstack/knowledge/grounding_model.json`), their thresholds, and the baselines' thresholds are all fitted
or chosen on the first half ("fit"); every figure is on the second ("held-out"). Thresholds maximise balanced
accuracy on the fitting half, the same rule for every system.

Baselines, in the same run: lexical overlap (share of the reply's words found in the knowledge) and embedding
cosine (reply vs knowledge, the same embedder). "Hard negatives": unsupported replies whose lexical overlap is
at least 0.8, where overlap alone is fooled.

HaluEval's general_data.json has answers and hallucination labels but no knowledge to check them against, so
a grounding check has nothing to compare with there; it is not scored.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from cxstack.knowledge.grounding import (
    EMBEDDING_FEATURES,
    LEXICAL_FEATURES,
    MODEL_FILE,
    GroundingChecker,
    GroundingModel,
    knowledge_index,
    sentences,
    signals,
    worst_values,
)
from cxstack.knowledge.retrieval import tokenize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "begin"
FILES = {
    "wow": "wow_begin_dev_wow.tsv",
    "topicalchat": "topicalchat_begin_dev_tc.tsv",
    "cmu_dog": "cmu-dog_begin_dev_cmu.tsv",
}
console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass
class Example:
    dataset: str
    knowledge: str
    response: str
    label: str

    @property
    def supported(self) -> int:
        return int(self.label == "Fully attributable")


def load(data: Path = DATA) -> list[Example]:
    examples: list[Example] = []
    for dataset, name in FILES.items():
        with (data / name).open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                examples.append(Example(dataset, row["knowledge"], row["response"], row["begin_label"]))
    return examples


def split(examples: Sequence[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """Half of each (dataset, label) group to fit on, the other half held out."""
    rng = random.Random(seed)
    fit: list[Example] = []
    held: list[Example] = []
    groups: dict[tuple[str, str], list[Example]] = {}
    for example in examples:
        groups.setdefault((example.dataset, example.label), []).append(example)
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        half = len(group) // 2
        fit.extend(group[:half])
        held.extend(group[half:])
    return fit, held


def features(example: Example, names: Sequence[str], embedder: Any) -> list[float] | None:
    known = knowledge_index([example.knowledge])
    rows = [values for part in sentences(example.response) if (values := signals(part, known, embedder)[0])]
    if not rows:
        return None  # no claim
    worst = worst_values(rows)
    return [worst[n] for n in names]


def lexical_overlap(example: Example) -> float:
    reply = tokenize(example.response)
    known = set(tokenize(example.knowledge))
    return sum(t in known for t in reply) / len(reply) if reply else 1.0


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold (supported when score ≥ it) with the best balanced accuracy."""
    best, best_value = 0.5, -1.0
    for candidate in sorted(set(scores)):
        predicted = [int(s >= candidate) for s in scores]
        tpr = sum(p and y for p, y in zip(predicted, labels, strict=True)) / max(1, sum(labels))
        tnr = sum((not p) and (not y) for p, y in zip(predicted, labels, strict=True)) / max(
            1, len(labels) - sum(labels)
        )
        value = (tpr + tnr) / 2
        if value > best_value:
            best, best_value = candidate, value
    return best


def fit_model(
    rows: list[list[float]], labels: list[int], names: Sequence[str], embedder: str | None, note: str
) -> GroundingModel:
    x = np.array(rows, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    classifier.fit((x - mean) / scale, labels)
    model = GroundingModel(
        features=tuple(names),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in classifier.coef_[0]),
        intercept=float(classifier.intercept_[0]),
        threshold=0.5,
        embedder=embedder,
        fitted_on=note,
    )
    scores = [model.probability(r) for r in rows]
    threshold = best_threshold(scores, labels)
    return dataclasses.replace(model, threshold=round(threshold, 4))


def at_threshold(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, float]:
    """Precision and recall of *unsupported* detection (the check's job), and AUC of the score."""
    flagged = [int(s < threshold) for s in scores]
    unsupported = [1 - y for y in labels]
    precision, recall, f1, _ = precision_recall_fscore_support(
        unsupported, flagged, average="binary", zero_division=0
    )
    return {
        "auc": round(float(roc_auc_score(labels, scores)), 4),
        "unsupported_precision": round(float(precision), 4),
        "unsupported_recall": round(float(recall), 4),
        "unsupported_f1": round(float(f1), 4),
        "threshold": round(threshold, 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--fit", action="store_true", help="refit the shipped models on the fitting half")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from cxstack.integrations.embedders.registry import load_embedder

    started = time.perf_counter()
    embedder = load_embedder(args.embedder)
    examples = load(args.data)
    fit, held = split(examples, args.seed)
    generic = [e for e in examples if e.label == "Generic"]
    fit = [e for e in fit if e.label != "Generic"]
    held = [e for e in held if e.label != "Generic"]

    def table_of(rows: Sequence[Example], names: Sequence[str], with_embedder: bool) -> list[list[float]]:
        values = []
        for example in track(rows, description=f"signals ({len(names)})", console=console, transient=True):
            row = features(example, names, embedder if with_embedder else None)
            values.append(row if row is not None else [1.0] * len(names))
        return values

    if args.fit:
        labels = [e.supported for e in fit]
        note = f"BEGIN dev (WoW, TopicalChat, CMU-DoG), fitting half, seed {args.seed}, n={len(fit)}"
        models = {
            "lexical": fit_model(
                table_of(fit, LEXICAL_FEATURES, False), labels, LEXICAL_FEATURES, None, note
            ),
            embedder.name: fit_model(
                table_of(fit, EMBEDDING_FEATURES, True), labels, EMBEDDING_FEATURES, embedder.name, note
            ),
        }
        MODEL_FILE.write_text(
            json.dumps({"models": {k: m.to_json() for k, m in models.items()}}, indent=2) + "\n", "utf-8"
        )
        console.print(f"wrote {MODEL_FILE} ({', '.join(models)})")
        return

    labels_fit = [e.supported for e in fit]
    labels_held = [e.supported for e in held]
    results: dict[str, Any] = {"n_fit": len(fit), "n_heldout": len(held), "generic_left_out": len(generic)}
    systems: dict[str, dict[str, float]] = {}

    for name, with_embedder in (
        ("cxstack (lexical model)", False),
        (f"cxstack ({embedder.name} model)", True),
    ):
        checker = GroundingChecker(embedder if with_embedder else None)
        if with_embedder and checker.model.embedder != embedder.name:
            continue
        scores = [
            checker.check(e.response, [e.knowledge]).score
            for e in track(held, description=name, console=console, transient=True)
        ]
        systems[name] = at_threshold(scores, labels_held, checker.model.threshold)
        systems[name]["_scores"] = scores  # type: ignore[assignment]

    overlap_fit = [lexical_overlap(e) for e in fit]
    overlap_held = [lexical_overlap(e) for e in held]
    systems["lexical overlap (baseline)"] = at_threshold(
        overlap_held, labels_held, best_threshold(overlap_fit, labels_fit)
    )
    systems["lexical overlap (baseline)"]["_scores"] = overlap_held  # type: ignore[assignment]

    def cosine(example: Example) -> float:
        vectors = embedder.embed([example.response, example.knowledge])
        return float(vectors[0] @ vectors[1])

    cos_fit = [cosine(e) for e in track(fit, description="cosine", console=console, transient=True)]
    cos_held = [cosine(e) for e in track(held, description="cosine", console=console, transient=True)]
    systems[f"embedding cosine, {embedder.name} (baseline)"] = at_threshold(
        cos_held, labels_held, best_threshold(cos_fit, labels_fit)
    )
    systems[f"embedding cosine, {embedder.name} (baseline)"]["_scores"] = cos_held  # type: ignore[assignment]

    hard = [i for i, e in enumerate(held) if not e.supported and overlap_held[i] >= 0.8]
    for figures in systems.values():
        scores = figures.pop("_scores")  # type: ignore[arg-type]
        figures["hard_negatives_caught"] = round(
            sum(scores[i] < figures["threshold"] for i in hard) / max(1, len(hard)),
            4,  # type: ignore[index]
        )
    results["hard_negatives"] = len(hard)
    results["systems"] = systems
    results["seconds"] = round(time.perf_counter() - started, 1)

    table = Table(
        title=f"Grounding on BEGIN dev, held-out half (n={len(held)}: {sum(labels_held)} supported, "
        f"{len(held) - sum(labels_held)} not); thresholds chosen on the fitting half (n={len(fit)})"
    )
    for column in (
        "system",
        "ROC-AUC",
        "unsupported P",
        "unsupported R",
        "F1",
        f"hard negatives ({len(hard)})",
    ):
        table.add_column(column, justify="left" if column == "system" else "right")
    for name, f in systems.items():
        table.add_row(
            name,
            f"{f['auc']:.3f}",
            f"{f['unsupported_precision']:.3f}",
            f"{f['unsupported_recall']:.3f}",
            f"{f['unsupported_f1']:.3f}",
            f"{f['hard_negatives_caught']:.0%}",
        )
    console.print(table)
    console.print(
        "P/R: of the replies flagged unsupported, how many are; of the unsupported, how many are flagged. "
        "Hard negatives: unsupported with lexical overlap ≥ 0.8, share caught. "
        f"{len(generic)} generic replies (no claim) left out. "
        "HaluEval general_data has no knowledge to ground against: not scored."
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
        console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
