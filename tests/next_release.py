"""The release to come, simulated: this code plus migrations written to an extra Alembic version folder.

In this process `next_release_config(folder)` is the Alembic configuration with those migrations; a `cxstack`
subprocess gets them through `next_release_env(folder, shim)`, which puts a `sitecustomize` on its
PYTHONPATH that extends `cxstack.store.db.alembic_config` before anything imports it. That stays a test
shim: a deployment never runs migrations that are not in the package."""

from __future__ import annotations

import os
from pathlib import Path

from alembic.config import Config

from cxstack.store.db import MIGRATIONS_DIR, alembic_config, head_revision

EXTRA_MIGRATIONS_ENV = "CXSTACK_TEST_EXTRA_MIGRATIONS"

# An expand step: a nullable column, a column with a server default, a new table pointing at conversations,
# a non-unique index. The current code neither reads nor writes any of it.
ADDITIVE_UPGRADE = """
    op.add_column("messages", sa.Column("language_hint", sa.String(), nullable=True))
    op.add_column("traces", sa.Column("reviewed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "conversation_tags",
        sa.Column("conversation_id", sa.String(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "tag"),
    )
    op.create_index("ix_outbox_channel_next", "outbox", ["channel"])
"""
ADDITIVE_DOWNGRADE = """
    op.drop_index("ix_outbox_channel_next", table_name="outbox")
    op.drop_table("conversation_tags")
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("reviewed")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("language_hint")
"""
# A contract step the current code cannot live with: every message must now name its language, which the
# current code does not write.
BREAKING_UPGRADE = """
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("language", sa.String(), nullable=False, server_default="en"))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("language", existing_type=sa.String(), server_default=None)
"""
BREAKING_DOWNGRADE = """
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("language")
"""

_TEMPLATE = '''"""{doc}"""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None
compatibility = {kind!r}
{extra}

def upgrade():
{upgrade}

def downgrade():
{downgrade}
'''

_SHIM = f'''"""Test shim: adds the migrations in ${EXTRA_MIGRATIONS_ENV} to cxstack's Alembic config."""

import os

_extra = os.environ.get({EXTRA_MIGRATIONS_ENV!r})
if _extra:
    import cxstack.store.db as _db

    _original = _db.alembic_config

    def _with_next_release():
        config = _original()
        config.set_main_option("path_separator", "os")
        config.set_main_option(
            "version_locations", os.pathsep.join([str(_db.MIGRATIONS_DIR / "versions"), _extra])
        )
        return config

    _db.alembic_config = _with_next_release
'''


def write_migration(
    folder: Path,
    revision: str,
    *,
    kind: str,
    upgrade: str,
    downgrade: str,
    down: str | None = None,
    compatible_since: str | None = None,
) -> str:
    """Writes a migration after `down` (this code's head unless given); returns its revision."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = "" if compatible_since is None else f"compatible_since = {compatible_since!r}\n"
    source = _TEMPLATE.format(
        doc=f"The next release's {kind} step.",
        revision=revision,
        down=down or head_revision(),
        kind=kind,
        extra=extra,
        upgrade=upgrade.rstrip() + "\n",
        downgrade=downgrade.rstrip() + "\n",
    )
    (folder / f"{revision}.py").write_text(source)
    return revision


def next_release_config(folder: Path) -> Config:
    config = alembic_config()
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", os.pathsep.join([str(MIGRATIONS_DIR / "versions"), str(folder)])
    )
    return config


def next_release_env(folder: Path, shim: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` for a `cxstack` subprocess of the next release: the shim first on its PYTHONPATH."""
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "sitecustomize.py").write_text(_SHIM)
    path = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, EXTRA_MIGRATIONS_ENV: str(folder)}
