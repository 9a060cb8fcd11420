"""Alembic migrations shipped inside dpt and run from code (``dpt db ...``).

``HEAD`` is the revision this code expects; a test keeps it equal to the
Alembic head so the fast schema gate never needs to load the script directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

HEAD = "0004"
KNOWN_REVISIONS = frozenset({"0001", "0002", "0003", "0004"})

_HERE = Path(__file__).parent


def alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("path_separator", "os")
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def heads() -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


def diff(engine: Engine) -> list[Any]:
    """Differences between the models and the database (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from dpt_core.store.env_options import COMPARE_OPTIONS
    from dpt_core.store.models import Base

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=COMPARE_OPTIONS)
        return list(compare_metadata(context, Base.metadata))
