"""The SQL schema, as SQLAlchemy 2 typed declarative models.

Identity columns that can be arbitrarily long (URIs, environment variable
values) are made unique through a fixed-size digest column, so no database's
index-size limit can be hit by a real path or a tens-of-kB variable.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: BIGINT on servers, INTEGER on SQLite (so it stays the rowid alias and autoincrements).
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (MySQL/SQLite store them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class LongText(TypeDecorator[str]):
    """TEXT everywhere, LONGTEXT on MySQL/MariaDB (plain TEXT stops at 64 KiB there)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import LONGTEXT

            return dialect.type_descriptor(LONGTEXT())
        return dialect.type_descriptor(Text())


intpk = Annotated[int, mapped_column(BigIntId, primary_key=True, autoincrement=True)]
digest64 = Annotated[str, mapped_column(String(64), nullable=False)]
uuid_str = Annotated[str, mapped_column(String(36), nullable=False, unique=True)]
created_ts = Annotated[dt.datetime, mapped_column(UTCDateTime(), nullable=False)]
uri_str = Annotated[str, mapped_column(LongText(), nullable=False)]
json_doc = Annotated[Any, mapped_column(JSON(), nullable=True)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Environment(Base):
    """Where code ran; identified by its fingerprint."""

    __tablename__ = "environments"

    id: Mapped[intpk]
    fingerprint: Mapped[digest64] = mapped_column(unique=True)
    python_version: Mapped[str] = mapped_column(String(64))
    implementation: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    user: Mapped[str] = mapped_column(String(255))
    facets: Mapped[json_doc]
    created_at: Mapped[created_ts]


class Distribution(Base):
    """An installed Python distribution, ``name`` normalised per PEP 503."""

    __tablename__ = "distributions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(255))


class EnvVariable(Base):
    """One (name, value) pair; redacted values keep only a keyed digest."""

    __tablename__ = "env_variables"

    id: Mapped[intpk]
    #: sha256 of key, value-or-digest: the identity, so huge values never hit an index limit.
    digest: Mapped[digest64] = mapped_column(unique=True)
    key: Mapped[str] = mapped_column(LongText())
    value: Mapped[str | None] = mapped_column(LongText())
    redacted_digest: Mapped[str | None] = mapped_column(String(128))


class EnvironmentDistribution(Base):
    __tablename__ = "environment_distributions"

    environment_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    distribution_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("distributions.id"), primary_key=True, index=True
    )


class EnvironmentVariable(Base):
    __tablename__ = "environment_variables"

    environment_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    variable_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("env_variables.id"), primary_key=True, index=True
    )


class Invocation(Base):
    """One execution of one unit of work."""

    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_started_at", "started_at"),
        Index("ix_invocations_orchestrator_job", "orchestrator", "job"),
        Index("ix_invocations_status", "status"),
    )

    id: Mapped[intpk]
    uuid: Mapped[uuid_str]
    orchestrator: Mapped[str] = mapped_column(String(64))
    job: Mapped[str] = mapped_column(String(512))
    task: Mapped[str | None] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(512))
    parent_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("invocations.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[created_ts]
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(LongText())
    user: Mapped[str | None] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    #: The process that recorded the start (:func:`dpt_core.process.process_token`).
    process: Mapped[str | None] = mapped_column(String(160))
    command: Mapped[str | None] = mapped_column(LongText())
    parameters: Mapped[json_doc]
    variables: Mapped[json_doc]
    code_version: Mapped[str | None] = mapped_column(String(255))
    environment_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("environments.id"), index=True
    )

    environment: Mapped[Environment | None] = relationship(lazy="raise")


class DataProduct(Base):
    """A thing with an identity: a normalised URI."""

    __tablename__ = "data_products"

    id: Mapped[intpk]
    uri_digest: Mapped[digest64] = mapped_column(unique=True)
    uri: Mapped[uri_str]
    created_at: Mapped[created_ts]


class DataProductVersion(Base):
    """One observed state of a product."""

    __tablename__ = "data_product_versions"
    __table_args__ = (
        Index("ix_data_product_versions_product_id_id", "product_id", "id"),
        Index("ix_data_product_versions_product_id_content_hash", "product_id", "content_hash"),
        Index("ix_data_product_versions_recorded_at", "recorded_at"),
    )

    id: Mapped[intpk]
    uuid: Mapped[uuid_str]
    product_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("data_products.id"))
    content_hash: Mapped[str | None] = mapped_column(String(160))
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime: Mapped[float | None] = mapped_column(Double)
    produced_by_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("invocations.id", ondelete="SET NULL"), index=True
    )
    #: False when the writer named no parents: it then derives from every input of its run.
    explicit_parents: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[json_doc] = mapped_column("metadata", JSON(), nullable=True)
    recorded_at: Mapped[created_ts]


class InvocationInput(Base):
    """An invocation read this exact version."""

    __tablename__ = "invocation_inputs"

    invocation_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("invocations.id", ondelete="CASCADE"), primary_key=True
    )
    version_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("data_product_versions.id"), primary_key=True, index=True
    )


class LineageEdge(Base):
    """``child`` version was derived from ``parent`` version by ``invocation``."""

    __tablename__ = "lineage_edges"
    __table_args__ = (
        UniqueConstraint("parent_version_id", "child_version_id"),
        Index("ix_lineage_edges_child_parent", "child_version_id", "parent_version_id"),
    )

    id: Mapped[intpk]
    parent_version_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("data_product_versions.id"))
    child_version_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("data_product_versions.id"))
    invocation_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("invocations.id", ondelete="SET NULL"), index=True
    )


#: Longest tag key and value (characters); ``dpt_core.tags`` validates against them.
TAG_KEY_LENGTH = 128
TAG_VALUE_LENGTH = 512


def tag_text(length: int) -> Any:
    """VARCHAR compared byte for byte on every backend (MySQL/MariaDB's default collation
    would make ``TESS`` equal ``tess``)."""
    from sqlalchemy.dialects import mysql

    return String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


class InvocationTag(Base):
    """A ``key=value`` label on a run; one value per key, the value in its text form."""

    __tablename__ = "invocation_tags"
    __table_args__ = (Index("ix_invocation_tags_key_value", "key", "value"),)

    invocation_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("invocations.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(tag_text(TAG_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(tag_text(TAG_VALUE_LENGTH))


class VersionTag(Base):
    """A ``key=value`` label on one product version."""

    __tablename__ = "version_tags"
    __table_args__ = (Index("ix_version_tags_key_value", "key", "value"),)

    version_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("data_product_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(tag_text(TAG_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(tag_text(TAG_VALUE_LENGTH))
