"""Alembic environment: runs on the engine handed over by dpt (never from alembic.ini)."""

from __future__ import annotations

from alembic import context

from dpt_core.store.env_options import COMPARE_OPTIONS
from dpt_core.store.models import Base

engine = context.config.attributes.get("engine")
if engine is None:  # pragma: no cover - only reached when someone runs the alembic CLI by hand
    raise RuntimeError("run migrations through 'dpt db upgrade', which supplies the engine")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, **COMPARE_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
