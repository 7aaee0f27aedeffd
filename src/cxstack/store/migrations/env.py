"""Alembic environment. `cxstack.store.db.migrate(engine)` passes its connection in `config.attributes`;
the `alembic` command line (with store/alembic.ini) connects to `CXSTACK_DATABASE_URL` or the default home."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cxstack.store.db import create_engine_for, database_url, record_compatibility
from cxstack.store.orm import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
        # In the same transaction: code of an older release reads it to know whether it may run here.
        record_compatibility(connection, context.script, context.get_context().get_current_revision())


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for(context.config.get_main_option("sqlalchemy.url") or database_url())
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "cxstack migrations run online only: set CXSTACK_DATABASE_URL and run `alembic upgrade head`"
    )
run_migrations_online()
