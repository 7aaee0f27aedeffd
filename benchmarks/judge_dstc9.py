"""The offline judge against people: DSTC9 track 1 (knowledge-grounded task-oriented dialogue).

    python -m benchmarks.judge_dstc9 [--json PATH]

Data: ../shared/data/dstc9_track1/: a baseline system's replies (results_baseline_entry0.json), the gold
knowledge snippets of each turn (eval_test_labels.json), and three crowd ratings of each reply's accuracy and
appropriateness (1-5, results_baseline_entry0.human_eval.json). The judge checks each reply against the gold
snippets — the knowledge the reply should rest on, as a workspace's facts are in production — not against the
snippet the system picked (a reply faithful to a wrong snippet is still wrong: those average 3.0 of 5 in
accuracy, against 4.4 for replies from the right one). The dialogue history is not in the folder, so the
context is empty (`cxstack judge score` with `"context": []`).

What is scored: the judge's `correctness` score (1-5) against the mean human accuracy rating (Spearman), and
its pass/fail (score >= 4) against the three raters' binarised majority (rating >= 4; Cohen's kappa) — beside
people: each rater against the mean of the other two (Spearman) and each pair of raters (kappa), from the same
file. Also the judge's overall score against appropriateness.

Split: replies alternate into a calibration half and a held-out half. Version 1 of the judge is set by hand
(never fitted on this data); version 2 is what the calibration loop makes of version 1 — weights and pass
threshold refitted on the calibration half's ratings as if they were reviews (`monitoring.judges.refit`).
Every figure is on the held-out half.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table
from scipy.stats import spearmanr

from cxstack.monitoring.judges import Exchange, OfflineJudge, OfflineParams, refit
from cxstack.monitoring.statistics import cohen_kappa
from cxstack.workspace.models import Rubric

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dstc9_track1"
RUBRIC = Rubric()  # cxstack's default rubric: correctness, groundedness, policy, resolution, tone
PASS_AT = 4


def load(data: Path = DATA, limit: int | None = None) -> list[dict[str, Any]]:
    knowledge = json.loads((data / "eval_knowledge.json").read_text())
    replies = json.loads((data / "results_baseline_entry0.json").read_text())
    ratings = json.loads((data / "results_baseline_entry0.human_eval.json").read_text())
    gold = json.loads((data / "eval_test_labels.json").read_text())
    rows = []
    for index, (reply, rated, label) in enumerate(zip(replies, ratings, gold, strict=True)):
        if not reply.get("target") or not rated or len(rated.get("accuracy", [])) != 3:
            continue
        snippets = []
        for ref in label.get("knowledge", []):
            entity = knowledge[ref["domain"]][str(ref["entity_id"])]
            doc = entity["docs"][str(ref["doc_id"])]
            name = entity.get("name") or ref["domain"]
            snippets.append(f"{name}: {doc['title']} {doc['body']}")
        rows.append(
            {
                "id": f"dstc9-{index}",
                "reply": reply["response"],
                "knowledge": snippets,
                "accuracy": [int(v) for v in rated["accuracy"]],
                "appropriateness": [int(v) for v in rated["appropriateness"]],
            }
        )
        if limit is not None and len(rows) >= limit:
            break
    return rows


def majority_pass(ratings: list[int]) -> int:
    return int(sum(r >= PASS_AT for r in ratings) * 2 > len(ratings))


def human_agreement(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Each rater position against the mean of the other two (Spearman); each pair of raters (kappa)."""
    spearman, kappas = [], []
    for i in range(3):
        own = [r[key][i] for r in rows]
        others = [mean(v for j, v in enumerate(r[key]) if j != i) for r in rows]
        spearman.append(float(spearmanr(own, others).statistic))
        for j in range(i + 1, 3):
            first = [int(r[key][i] >= PASS_AT) for r in rows]
            kappas.append(cohen_kappa(first, [int(r[key][j] >= PASS_AT) for r in rows]))
    return {
        "spearman_min": min(spearman),
        "spearman_max": max(spearman),
        "spearman_mean": float(np.mean(spearman)),
        "kappa_mean": float(np.mean(kappas)),
    }


def judge_agreement(scored: list[tuple[dict[str, Any], Any]]) -> dict[str, float]:
    rows = [r for r, _ in scored]
    correctness = [s.scores["correctness"] for _, s in scored]
    overall = [s.overall for _, s in scored]
    judge_pass = [int(s.scores["correctness"] >= PASS_AT) for _, s in scored]
    per_rater = [cohen_kappa(judge_pass, [int(r["accuracy"][i] >= PASS_AT) for r in rows]) for i in range(3)]
    return {
        "spearman_accuracy": float(spearmanr(correctness, [mean(r["accuracy"]) for r in rows]).statistic),
        "spearman_appropriateness": float(
            spearmanr(overall, [mean(r["appropriateness"]) for r in rows]).statistic
        ),
        "kappa_majority": cohen_kappa(judge_pass, [majority_pass(r["accuracy"]) for r in rows]),
        "kappa_per_rater_mean": float(np.mean(per_rater)),
        "pass_rate": float(np.mean(judge_pass)),
    }


def run(limit: int | None = None) -> dict[str, Any]:
    rows = load(limit=limit)
    calibration, held_out = rows[0::2], rows[1::2]
    v1 = OfflineJudge("offline-1")

    def exchange(row: dict[str, Any]) -> Exchange:
        return Exchange(row["id"], [], row["reply"], row["knowledge"])

    fit_rows = []
    for row in track(calibration, description="features (calibration half)", transient=True):
        features = v1.features(exchange(row))
        scores = {"correctness": round(mean(row["accuracy"]))}
        fit_rows.append((features, float(majority_pass(row["accuracy"])), scores))
    v2 = OfflineJudge("offline-2", refit(OfflineParams(), fit_rows, RUBRIC))
    scored_v1, scored_v2 = [], []
    for row in track(held_out, description="judging (held-out half)", transient=True):
        scored_v1.append((row, v1.score_now(exchange(row), RUBRIC)))
        scored_v2.append((row, v2.score_now(exchange(row), RUBRIC)))
    return {
        "replies": len(rows),
        "held_out": len(held_out),
        "human_accuracy": human_agreement(held_out, "accuracy"),
        "human_appropriateness": human_agreement(held_out, "appropriateness"),
        "human_pass_rate": float(np.mean([majority_pass(r["accuracy"]) for r in held_out])),
        "judge_v1": judge_agreement(scored_v1),
        "judge_v2": judge_agreement(scored_v2),
    }


def table(result: dict[str, Any]) -> Table:
    h, ha = result["human_accuracy"], result["human_appropriateness"]
    out = Table(
        title=f"DSTC9 track 1, held-out half ({result['held_out']} of {result['replies']} rated replies)",
        caption="Spearman: with the mean rating (humans: one rater vs the mean of the other two, range over "
        "the three positions). Kappa: pass = rating >= 4 (judge: correctness >= 4) vs the raters' majority "
        "(humans: each pair of raters). v1 hand-set; v2 refitted on the calibration half.",
    )
    for column in ("", "Spearman accuracy", "kappa accuracy", "Spearman appropr.", "pass rate"):
        out.add_column(column, justify="left" if not column else "right")
    out.add_row(
        "one human (same file)",
        f"{h['spearman_min']:.2f}–{h['spearman_max']:.2f}",
        f"{h['kappa_mean']:.2f}",
        f"{ha['spearman_min']:.2f}–{ha['spearman_max']:.2f}",
        f"{result['human_pass_rate']:.0%}",
    )
    for name in ("judge_v1", "judge_v2"):
        j = result[name]
        out.add_row(
            f"cxstack offline judge {name[-2:]}",
            f"{j['spearman_accuracy']:.2f}",
            f"{j['kappa_majority']:.2f} (per rater {j['kappa_per_rater_mean']:.2f})",
            f"{j['spearman_appropriateness']:.2f}",
            f"{j['pass_rate']:.0%}",
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--limit", type=int, help="only the first N rated replies (a quick look)")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    result = run(args.limit)
    Console().print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
