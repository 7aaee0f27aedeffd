"""`cxstack migrate`: the first step of an upgrade. Brings the database to this release's schema (or, with
`--check`, only says where it stands) and names the oldest release whose processes may still run on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cxstack.store.db import SchemaStatus, SchemaTooNewError, create_engine_for, migrate, schema_status

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _status(engine: Any) -> SchemaStatus:
    with engine.connect() as connection:
        return schema_status(connection)


def _older_code(status: SchemaStatus) -> str:
    if status.oldest_compatible is None or status.oldest_compatible == status.database:
        return "processes of an older release refuse it"
    return f"processes at {status.oldest_compatible} or newer may run on it"


def migrate_command(
    home: Annotated[Path | None, typer.Option("--home", help="State folder (default: CXSTACK_HOME).")] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing: say where the database stands; exit 1 if it needs migrating or is too new.",
        ),
    ] = False,
) -> None:
    """Migrate the database (CXSTACK_DATABASE_URL, else SQLite in the state folder) to this release's schema:
    run it once before replacing the API and worker processes of a rolling upgrade."""
    from cxstack.app import Settings

    settings = Settings(home=home) if home is not None else Settings()
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(url)
    try:
        before = _status(engine)
        if check:
            after = before
        else:
            try:
                migrate(engine)
            except SchemaTooNewError as exc:
                err.print(f"[bold red]cannot migrate:[/] {exc}")
                raise typer.Exit(1) from None
            after = _status(engine)
    finally:
        engine.dispose()
    if after.state == "compatible":
        console.print(
            f"database schema is at {after.database}, newer than this cxstack ({after.code}) and compatible "
            f"with it; nothing to do: upgrade this cxstack"
        )
    elif after.state == "too_new":
        err.print(f"[bold red]database schema too new:[/] {after.error()}")
    elif after.state == "current":
        moved = "" if before.database == after.database else f" (was {before.database or 'empty'})"
        console.print(f"database schema at {after.database}{moved}; {_older_code(after)}")
    else:
        console.print(
            f"database schema at {after.database or 'nothing (empty)'}, this cxstack is at {after.code}: "
            "run `cxstack migrate`"
        )
    if check and after.state not in ("current", "compatible"):
        raise typer.Exit(1)
