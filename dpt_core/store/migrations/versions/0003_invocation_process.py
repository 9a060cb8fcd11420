"""invocation process token

Which process recorded a run's start (``dpt_core.process``), so a run whose
process died without a word can be closed as ``crashed``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("process", sa.String(length=160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_column("process")
