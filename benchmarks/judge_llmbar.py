"""The LLM judge's pairwise accuracy on LLMBar (Zeng et al., ICLR 2024), when a model is configured.

    python -m benchmarks.judge_llmbar                                  # no model: says so, measures nothing
    python -m benchmarks.judge_llmbar --llm local [--limit 40]         # SmolLM2-135M served in this process
    python -m benchmarks.judge_llmbar --llm http://host:port/v1 --model NAME   # any OpenAI-compatible server
                                                                       # (key in CXSTACK_JUDGE_API_KEY)

Data: ../shared/data/llmbar/: the Natural set (100 pairs) and the four Adversarial sets (Neighbor, GPTInst,
GPTOut, Manual; 319 pairs): an instruction, two outputs, and which one follows the instruction (`label`).

The judge is the shipped `LLMJudge.prefer`: it asks in both orders and keeps only a preference that survives
the swap; a flip is a tie and counts as half right (as the LLMBar paper counts a tie). Also reported: how
often the order decided (the flips). `--limit N` takes the first N pairs of each set.

Published figures to compare with (same data): expert human agreement 94 %; GPT-4, the best evaluator in the
paper, about 83 % on the adversarial sets with its best prompt (Zeng et al. 2023, arXiv:2310.07641, §4 and
Table 3). Without a model this benchmark measures nothing and says so: the offline judge does not do
pairwise instruction following.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llmbar"
SETS = {
    "Natural": "LLMBar_Natural.json",
    "Neighbor": "LLMBar_Adversarial_Neighbor.json",
    "GPTInst": "LLMBar_Adversarial_GPTInst.json",
    "GPTOut": "LLMBar_Adversarial_GPTOut.json",
    "Manual": "LLMBar_Adversarial_Manual.json",
}
PUBLISHED = {"expert humans": 0.94, "GPT-4, best prompt (adversarial)": 0.83}


def load(limit: int | None) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, file in SETS.items():
        rows = json.loads((DATA / file).read_text())
        out[name] = rows[:limit] if limit else rows
    return out


async def evaluate(client: Any, sets: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from cxstack.monitoring.judges import LLMJudge

    judge = LLMJudge(client)
    result: dict[str, Any] = {}
    for name, rows in sets.items():
        right = ties = errors = 0.0
        for row in rows:
            try:
                picked = await judge.prefer(row["input"], row["output_1"], row["output_2"])
            except Exception:
                errors += 1
                ties += 1  # an unanswered pair cannot be counted as right
                continue
            if picked is None:
                ties += 1
            elif picked == row["label"]:
                right += 1
        n = len(rows)
        result[name] = {"pairs": n, "accuracy": (right + 0.5 * ties) / n, "ties": ties / n, "errors": errors}
    adversarial = [result[k] for k in SETS if k != "Natural"]
    total = sum(r["pairs"] for r in adversarial)
    result["Adversarial"] = {
        "pairs": total,
        "accuracy": sum(r["accuracy"] * r["pairs"] for r in adversarial) / total,
        "ties": sum(r["ties"] * r["pairs"] for r in adversarial) / total,
        "errors": sum(r["errors"] for r in adversarial),
    }
    return result


def run(llm: str, model: str | None, limit: int | None) -> dict[str, Any]:
    from cxstack.integrations.llm.registry import llm_client
    from cxstack.workspace.models import LLMSettings

    sets = load(limit)
    with contextlib.ExitStack() as stack:
        if llm == "local":
            from cxstack.integrations.llm.local_server import SMOLLM2_MODEL, LocalModelServer

            base_url = stack.enter_context(LocalModelServer(threads=1, verbosity=0))
            model = SMOLLM2_MODEL
        else:
            base_url = llm
            if not model:
                raise SystemExit("--model: name the model the server at --llm serves")
        settings = LLMSettings(
            provider="openai", model=model, api_key="${CXSTACK_JUDGE_API_KEY}" if os.environ.get(
                "CXSTACK_JUDGE_API_KEY") else None, turn_seconds=120, timeout_s=60,
        )  # fmt: skip
        client = llm_client(settings, base_url=base_url)

        async def go() -> dict[str, Any]:
            try:
                return await evaluate(client, sets)
            finally:
                await client.aclose()

        figures = asyncio.run(go())
    return {"model": model, "limit": limit, "sets": figures, "published": PUBLISHED}


def table(result: dict[str, Any]) -> Table:
    out = Table(
        title=f"LLMBar pairwise accuracy, judge model {result['model']}",
        caption="accuracy: ties (the preference flipped with the order) count half; published figures from "
        "Zeng et al. 2023 (arXiv:2310.07641)",
    )
    for column in ("set", "pairs", "accuracy", "order decided"):
        out.add_column(column, justify="left" if column == "set" else "right")
    for name, figures in result["sets"].items():
        out.add_row(name, str(figures["pairs"]), f"{figures['accuracy']:.1%}", f"{figures['ties']:.0%}")
    for name, value in result["published"].items():
        out.add_row(f"published: {name}", "419" if "humans" in name else "319", f"{value:.0%}", "")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llm", help="'local' (SmolLM2 in this process) or an OpenAI-compatible base URL")
    parser.add_argument("--model", help="the model name, with --llm URL")
    parser.add_argument("--limit", type=int, help="the first N pairs of each set")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if not args.llm:
        message = (
            "judge_llmbar: skipped — no LLM provider configured (--llm local or --llm URL --model NAME). "
            "Nothing was measured; the offline judge does not judge pairwise instruction following."
        )
        print(message)
        if args.json:
            args.json.write_text(json.dumps({"skipped": message, "published": PUBLISHED}, indent=2))
        return 0
    if not DATA.exists():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    result = run(args.llm, args.model, args.limit)
    Console().print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
