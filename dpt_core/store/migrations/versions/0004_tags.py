"""tags on runs and product versions

Free-form ``key=value`` labels (``docs/tags.md``): one row per (run, key) and per
(product version, key), the value in its text form, with a ``(key, value)`` index
for ``dpt runs --tag key=value``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 18:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text(length: int) -> sa.types.TypeEngine[str]:
    # byte-for-byte comparison on MySQL/MariaDB too (their default collation ignores case)
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def upgrade() -> None:
    op.create_table(
        "invocation_tags",
        sa.Column("invocation_id", BigIntId, nullable=False),
        sa.Column("key", _text(128), nullable=False),
        sa.Column("value", _text(512), nullable=False),
        sa.ForeignKeyConstraint(
            ["invocation_id"],
            ["invocations.id"],
            name=op.f("fk_invocation_tags_invocation_id_invocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invocation_id", "key", name=op.f("pk_invocation_tags")),
    )
    op.create_index("ix_invocation_tags_key_value", "invocation_tags", ["key", "value"])
    op.create_table(
        "version_tags",
        sa.Column("version_id", BigIntId, nullable=False),
        sa.Column("key", _text(128), nullable=False),
        sa.Column("value", _text(512), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["data_product_versions.id"],
            name=op.f("fk_version_tags_version_id_data_product_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "key", name=op.f("pk_version_tags")),
    )
    op.create_index("ix_version_tags_key_value", "version_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_version_tags_key_value", table_name="version_tags")
    op.drop_table("version_tags")
    op.drop_index("ix_invocation_tags_key_value", table_name="invocation_tags")
    op.drop_table("invocation_tags")
