"""`cxstack judge …`: score exchanges from a file, judge stored conversations, and run the calibration loop
(agreement with people, disagreements to the review queue, the next judge version)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import track
from rich.table import Table

judge_app = typer.Typer(
    help="Judges: score exchanges, judge stored conversations, calibrate against reviews.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")]
WorkspaceArg = Annotated[Path, typer.Argument(help="Workspace folder.", show_default=False)]


class ExchangeLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | int
    context: list[str] = Field(default_factory=list, description="earlier texts, oldest first")
    reply: str
    knowledge: list[str] = Field(default_factory=list)


def read_exchanges(path: Path) -> list[ExchangeLine]:
    """Every line of the JSONL file, or SystemExit(2) naming the first bad line and field (nothing scored)."""
    if not path.exists():
        err.print(f"[bold red]{path}: no such file[/]")
        raise typer.Exit(2)
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            lines.append(ExchangeLine.model_validate(json.loads(raw)))
        except json.JSONDecodeError as exc:
            err.print(f"[bold red]{path}:{number}: not JSON ({exc.msg})[/]")
            raise typer.Exit(2) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(line)"
            err.print(f"[bold red]{path}:{number}: {field}: {first['msg']}[/]")
            raise typer.Exit(2) from None
    return lines


def _workspace(path: Path | None) -> Any:
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    if path is None:
        return None
    try:
        return load_workspace(path)
    except (WorkspaceInvalid, FileNotFoundError) as exc:
        err.print(f"[bold red]workspace {path}: {exc}[/]")
        raise typer.Exit(1) from None


@judge_app.command("score")
def judge_score(
    file: Annotated[
        Path, typer.Argument(help='JSONL: {"id", "context": [...], "reply", "knowledge": [...]}')
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per input: id, scores, overall.")
    ] = False,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="Use this workspace's rubric (default: cxstack's)."),
    ] = None,
) -> None:
    """Score exchanges from outside the store with the offline judge (version 1, no LLM)."""
    from cxstack.monitoring.judges import Exchange, OfflineJudge
    from cxstack.workspace.models import Rubric

    lines = read_exchanges(file)
    ws = _workspace(workspace)
    rubric = ws.rubric if ws is not None else Rubric()
    judge = OfflineJudge()
    results = []
    for line in track(lines, description="judging", console=err, disable=not sys.stderr.isatty()):
        score = judge.score_now(Exchange(str(line.id), line.context, line.reply, line.knowledge), rubric)
        results.append((line, score))
    if as_json:
        for line, score in results:
            out = {"id": line.id, **score.as_dict(), "judge_version": judge.version}
            sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{len(results)} exchanges, judge {judge.version}")
    table.add_column("id")
    names = list(results[0][1].scores) if results else []
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("overall", justify="right")
    table.add_column("passes")
    for line, score in results:
        table.add_row(
            str(line.id), *(f"{score.scores[n]:.1f}" for n in names), f"{score.overall:.2f}",
            "yes" if score.passed else "no",
        )  # fmt: skip
    console.print(table)


def _open(workspace: Path, home: Path | None) -> tuple[Any, Any]:
    from cxstack.app import Settings, open_store
    from cxstack.monitoring.judging import as_judging_store

    ws = _workspace(workspace)
    settings = Settings(home=home) if home is not None else Settings()
    return ws, as_judging_store(open_store(settings))


@judge_app.command("run")
def judge_run(workspace: WorkspaceArg, home: HomeOpt = None) -> None:
    """Judge every settled conversation the current judge version has not judged (the service does too)."""
    from cxstack.monitoring.judging import current_judge, judge_pending

    ws, store = _open(workspace, home)
    judge = current_judge(store, ws)
    total = judged = failed = 0
    while True:
        run = judge_pending(store, ws, judge, limit=500)
        judged, failed, total = judged + run.judged, failed + run.failed, total + run.judged + run.failed
        if run.judged + run.failed < 500 or run.failed == run.judged + run.failed:
            break
    console.print(f"judge {judge.version}: {judged} conversations judged, {failed} failed (left unjudged)")


def _agreement_table(report: dict[str, Any], title: str) -> Table:
    caption = (
        "raw: share agreeing; κ: Cohen's kappa (weighted κ: quadratic, ordinal criteria); α: Krippendorff's "
        "alpha; below the minimum pairs: insufficient"
    )
    table = Table(title=title, caption=caption)
    for column in ("", "pairs", "raw", "κ", "weighted κ", "α"):
        table.add_column(column, justify="left" if not column else "right")

    def row(name: str, a: dict[str, Any]) -> None:
        if "insufficient" in a:
            table.add_row(name, str(a["pairs"]), "insufficient", "", "", "")
            return
        shown = [a.get(k) for k in ("raw", "kappa", "weighted_kappa", "alpha")]
        table.add_row(name, str(a["pairs"]), *("—" if v is None else f"{v:.2f}" for v in shown))

    row("pass/fail overall", report["overall"])
    for name, a in report["criteria"].items():
        row(f"  {name}", a)
    thin = [name for name, a in report["intents"].items() if "insufficient" in a]
    for name, a in report["intents"].items():
        if name not in thin:
            row(f"  intent {name}", a)
    if thin:
        pairs = sum(report["intents"][name]["pairs"] for name in thin)
        table.add_row(f"  {len(thin)} intents with too few pairs", str(pairs), "insufficient", "", "", "")
    row("two people (double reviews)", report["human_human"])
    return table


@judge_app.command("agreement")
def judge_agreement(
    workspace: WorkspaceArg,
    version: Annotated[
        str | None, typer.Option("--version", help="A judge version (default: current).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, with the confusion matrices.")] = False,
    home: HomeOpt = None,
) -> None:
    """How far a judge version agrees with people: overall, per criterion, per intent, and people with each
    other."""
    from cxstack.monitoring.judging import agreement_report, current_judge

    ws, store = _open(workspace, home)
    chosen = version or current_judge(store, ws).version
    report = agreement_report(store, ws, chosen, intents=store.conversation_intents())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console.print(_agreement_table(report, f"judge {chosen} against people"))


@judge_app.command("disagreements")
def judge_disagreements(workspace: WorkspaceArg, home: HomeOpt = None) -> None:
    """Queue every reviewed conversation where the judge and people disagree, for a person to decide."""
    from cxstack.monitoring.judging import current_judge, queue_disagreements

    ws, store = _open(workspace, home)
    judge = current_judge(store, ws)
    queued = queue_disagreements(store, judge.version)
    console.print(
        f"{queued} disagreements with judge {judge.version} queued for review (cxstack review next)"
    )


@judge_app.command("refit")
def judge_refit(
    workspace: WorkspaceArg,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm", help="The LLM judge's next version (corrections as examples), not the offline one."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    home: HomeOpt = None,
) -> None:
    """Make the next judge version from the reviews and corrections of one half of the conversations; report
    its agreement and its parent's on the other half."""
    from cxstack.monitoring.judging import next_llm_version, next_version

    ws, store = _open(workspace, home)
    if llm:
        from cxstack.integrations.llm.registry import llm_client

        if ws.settings.llm is None:
            err.print("[bold red]the workspace has no `llm:` settings: the LLM judge needs a model[/]")
            raise typer.Exit(2)
        client = llm_client(ws.settings.llm)
        made = next_llm_version(store, ws, client, close=client.aclose)
    else:
        made = next_version(store, ws)
    if as_json:
        payload = {"version": made.version.id, "parent": made.version.parent, "fitted_on": made.fitted_on,
                   "held_out_before": made.before, "held_out_after": made.after}  # fmt: skip
        typer.echo(json.dumps(payload, indent=2))
        return
    console.print(f"judge {made.version.id} made from {made.fitted_on} reviewed conversations (fold 0)")
    console.print(_agreement_table(made.before, f"{made.version.parent} on the held-out fold"))
    console.print(_agreement_table(made.after, f"{made.version.id} on the held-out fold"))
    console.print("`cxstack judge run` judges every conversation with the new version.")


@judge_app.command("versions")
def judge_versions(workspace: WorkspaceArg, home: HomeOpt = None) -> None:
    """Every judge version, newest last, with its held-out agreement."""
    _, store = _open(workspace, home)
    table = Table(title="judge versions")
    for column in ("version", "kind", "parent", "rubric", "held-out pairs", "held-out raw", "held-out κ"):
        table.add_column(column)
    for v in store.judge_versions():
        held = v.agreement.get("held_out", {}).get("overall", {})
        table.add_row(
            v.id, v.kind, v.parent or "—", v.rubric_version, str(held.get("pairs", "—")),
            "—" if held.get("raw") is None else f"{held['raw']:.2f}",
            "—" if held.get("kappa") is None else f"{held['kappa']:.2f}",
        )  # fmt: skip
    console.print(table)
