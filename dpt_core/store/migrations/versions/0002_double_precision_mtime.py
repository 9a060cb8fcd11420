"""double precision mtime

MariaDB/MySQL FLOAT is single precision: a file's mtime (~1.8e9 s) lost its
sub-second part, and with it the cheap "unchanged since recorded" check.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 23:27:50
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("data_product_versions", schema=None) as batch_op:
        batch_op.alter_column(
            "mtime", existing_type=sa.Float(), type_=sa.Double(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("data_product_versions", schema=None) as batch_op:
        batch_op.alter_column(
            "mtime", existing_type=sa.Double(), type_=sa.Float(), existing_nullable=True
        )
