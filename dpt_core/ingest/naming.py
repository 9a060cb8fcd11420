"""OpenLineage dataset names <-> dpt product URIs (the OpenLineage naming spec).

OpenLineage names a dataset by a ``namespace`` (the datasource: ``scheme://authority``)
and a ``name`` (the dataset inside it). dpt names a product by one normalised URI.
:func:`product_uri` is the way in, :func:`dataset_identifier` the way out; for the
forms in :data:`NAMING_TABLE` each is the inverse of the other.

=====================  ==========================================  ==========================  ==========================================
system                 namespace                                   name                        dpt product URI
=====================  ==========================================  ==========================  ==========================================
local file             ``file``                                    ``/abs/path``               ``file:///abs/path`` (percent-encoded)
file on a host         ``file://host``                             ``/abs/path``               ``file://host/abs/path`` (``file:///...``
                                                                                               when host is this machine or localhost)
S3 / GCS / ABFSS ...   ``s3://bucket``                             ``key``                     ``s3://bucket/key``
HDFS / DBFS            ``hdfs://nn:8020``                          ``/path``                   ``hdfs://nn:8020/path``
PostgreSQL             ``postgres://host:5432``                    ``db.schema.table``         ``postgres://host:5432/db/schema.table``
MySQL, Redshift,       ``mysql://host:3306``, ...                  ``db.table``, ...           ``mysql://host:3306/db/table``, ...
Trino
Snowflake, Oracle,     ``snowflake://org-account``, ...            ``db.schema.table``         ``snowflake://org-account/db.schema.table``
other warehouses
Kafka                  ``kafka://broker:9092``                     ``topic``                   ``kafka://broker:9092/topic``
BigQuery, Pub/Sub      ``bigquery``                                ``project.dataset.table``   ``bigquery://project.dataset.table``
AWS Glue               ``arn:aws:glue:region:account``             ``table/db/t``              ``arn://aws:glue:region:account/table/db/t``
=====================  ==========================================  ==========================  ==========================================

Rules behind the table: a namespace with ``://`` is the URI's beginning and the
name its path (one ``/`` between them, however many the name starts with); the
SQL databases whose dpt URI is ``scheme://host/database/...``
(:data:`SQL_SCHEMES`) turn the name's first ``.`` into ``/`` (dpt's own export
turns every ``/`` of such a URI into ``.``); a namespace without ``://`` is a
scheme (``bigquery``) or ``scheme:rest`` (an ARN). File paths are normalised
lexically (``a/../b`` -> ``b``), never through this machine's symlinks: the path
names a file on the producer's machine.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from typing import Final
from urllib.parse import quote, unquote

from dpt_core.errors import InvalidTarget
from dpt_core.uri import _encode_path, is_local, normalize_uri, uri_to_path

__all__ = ["NAMING_TABLE", "SQL_SCHEMES", "dataset_identifier", "product_uri"]

#: Databases whose dpt URI is ``scheme://host:port/database/schema.table`` and whose
#: OpenLineage name is ``database.schema.table`` (see ``dpt_core.export.openlineage``).
SQL_SCHEMES: Final = frozenset({"postgres", "postgresql", "mysql", "mariadb", "redshift", "trino"})
#: Namespaces that are a bare scheme (no authority): the whole name follows ``://``.
BARE_SCHEMES: Final = frozenset({"bigquery", "pubsub"})
#: Namespaces of the form ``scheme:rest`` (no ``//``): ``scheme://rest/name``.
COLON_SCHEMES: Final = frozenset({"arn"})
#: File systems whose dataset names are absolute paths (``/user/x``), not keys.
PATH_SCHEMES: Final = frozenset({"hdfs", "dbfs"})

_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
#: Path characters kept as they are besides the unreserved ones (as dpt_core.uri does).
_PATH_SAFE: Final = "/!$&'()*+,;=:@"

#: ``(system, namespace, name, product URI)``: the forms the naming spec defines and the
#: dpt URI each becomes (the tests run every row both ways).
NAMING_TABLE: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("local file", "file", "/data/raw file.fits", "file:///data/raw%20file.fits"),
    ("file on another host", "file://incoming", "/team_a.csv", "file://incoming/team_a.csv"),
    ("S3", "s3://survey-bucket", "flats/flat.fits", "s3://survey-bucket/flats/flat.fits"),
    ("GCS", "gs://bucket", "dir/x.parquet", "gs://bucket/dir/x.parquet"),
    (
        "ABFSS (Azure Data Lake Gen2)",
        "abfss://container@service.dfs.core.windows.net",
        "dir/x.parquet",
        "abfss://container@service.dfs.core.windows.net/dir/x.parquet",
    ),
    (
        "WASBS (Azure Blob Storage)",
        "wasbs://container@service.dfs.core.windows.net",
        "x.csv",
        "wasbs://container@service.dfs.core.windows.net/x.csv",
    ),
    ("DBFS", "dbfs://workspace", "/mnt/x.delta", "dbfs://workspace/mnt/x.delta"),
    ("HDFS", "hdfs://namenode:8020", "/user/survey/x", "hdfs://namenode:8020/user/survey/x"),
    (
        "PostgreSQL",
        "postgres://db.example:5432",
        "survey.public.detections",
        "postgres://db.example:5432/survey/public.detections",
    ),
    (
        "MySQL",
        "mysql://db.example:3306",
        "survey.detections",
        "mysql://db.example:3306/survey/detections",
    ),
    (
        "Redshift",
        "redshift://cluster.us-east-1:5439",
        "dev.public.sales",
        "redshift://cluster.us-east-1:5439/dev/public.sales",
    ),
    (
        "Trino",
        "trino://trino.example:8080",
        "hive.web.clicks",
        "trino://trino.example:8080/hive/web.clicks",
    ),
    (
        "Snowflake",
        "snowflake://myorg-account1",
        "SALES.PUBLIC.ORDERS",
        "snowflake://myorg-account1/SALES.PUBLIC.ORDERS",
    ),
    (
        "Oracle",
        "oracle://db.example:1521",
        "ORCL.HR.EMPLOYEES",
        "oracle://db.example:1521/ORCL.HR.EMPLOYEES",
    ),
    ("DB2", "db2://db.example:50000", "SAMPLE.ADMIN.T", "db2://db.example:50000/SAMPLE.ADMIN.T"),
    ("Teradata", "teradata://td.example:1025", "sales.t", "teradata://td.example:1025/sales.t"),
    ("Hive", "hive://metastore:9083", "default.t", "hive://metastore:9083/default.t"),
    ("Cassandra", "cassandra://node:9042", "ks.t", "cassandra://node:9042/ks.t"),
    (
        "Azure Synapse",
        "sqlserver://synapse.example:1433",
        "dbo.t",
        "sqlserver://synapse.example:1433/dbo.t",
    ),
    (
        "Athena",
        "awsathena://athena.us-east-1.amazonaws.com",
        "AwsDataCatalog.db.t",
        "awsathena://athena.us-east-1.amazonaws.com/AwsDataCatalog.db.t",
    ),
    (
        "Kafka",
        "kafka://broker.example:9092",
        "detections",
        "kafka://broker.example:9092/detections",
    ),
    (
        "BigQuery",
        "bigquery",
        "my-project.survey.detections",
        "bigquery://my-project.survey.detections",
    ),
    ("Pub/Sub", "pubsub", "topic:my-project:alerts", "pubsub://topic:my-project:alerts"),
    (
        "AWS Glue",
        "arn:aws:glue:us-east-1:123456789012",
        "table/survey/detections",
        "arn://aws:glue:us-east-1:123456789012/table/survey/detections",
    ),
)


def _no_product(namespace: str, name: str, why: str) -> InvalidTarget:
    return InvalidTarget(f"dataset {namespace!r} + {name!r} names no product: {why}")


def _local_file_uri(path: str) -> str:
    """``file:///path`` of an absolute POSIX path, normalised lexically (no symlinks)."""
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # normpath keeps a leading "//"
        normal = "/" + normal.lstrip("/")
    return _encode_path(os.fsencode(normal))


def _join(namespace: str, path: str) -> str:
    tail = path.lstrip("/")
    if not tail:
        return namespace
    return f"{namespace}{'' if namespace.endswith('/') else '/'}{tail}"


def product_uri(namespace: str, name: str) -> str:
    """The dpt product URI of the OpenLineage dataset ``namespace`` + ``name``.

    :raises InvalidTarget: the pair names no product (a relative path in the ``file``
        namespace, a namespace that is no scheme, a NUL character, ...).
    """
    return _product_uri(namespace, name)


# A pure function of its arguments in a process (this machine's host names are read
# once): the datasets a receiver sees repeat from event to event (a run's START and
# COMPLETE, shared inputs), so the recent ones are remembered. Errors are not cached.
@functools.lru_cache(maxsize=4096)
def _product_uri(namespace: str, name: str) -> str:
    if not namespace or not name:
        raise _no_product(namespace, name, "namespace and name must both be non-empty")
    if "\0" in namespace or "\0" in name:
        raise _no_product(namespace, name, "it contains a NUL character")
    if namespace == "file":
        if not name.startswith("/"):
            raise _no_product(
                namespace,
                name,
                "a dataset in namespace 'file' is an absolute path (OpenLineage naming: "
                "'file' + '/path/to/file')",
            )
        return _local_file_uri(name)
    scheme, sep, authority = namespace.partition("://")
    if sep:
        if not _SCHEME.match(scheme):
            raise _no_product(namespace, name, f"{scheme!r} is not a URI scheme")
        scheme = scheme.lower()
        if scheme == "file":
            path = name if name.startswith("/") else "/" + name
            candidate = f"file://{authority}/"
            if is_local(candidate):
                return _local_file_uri(path)
            return normalize_uri(f"file://{authority}{quote(path, safe=_PATH_SAFE)}")
        if scheme in SQL_SCHEMES and "/" not in name:
            database, dot, rest = name.partition(".")
            name = f"{database}/{rest}" if dot and database and rest else name
        return normalize_uri(_join(f"{scheme}://{authority}", name))
    scheme, colon, rest = namespace.partition(":")
    if not _SCHEME.match(scheme):
        raise _no_product(
            namespace,
            name,
            "the namespace is neither 'scheme://authority', 'file', nor a bare scheme "
            "such as 'bigquery' (see the OpenLineage naming spec)",
        )
    scheme = scheme.lower()
    if colon:
        return normalize_uri(_join(f"{scheme}://{rest}", name))
    return normalize_uri(f"{scheme}://{name}")


def dataset_identifier(uri: str) -> tuple[str, str]:
    """The OpenLineage ``(namespace, name)`` of a dpt product URI: the inverse of
    :func:`product_uri` for the forms of :data:`NAMING_TABLE`."""
    path = uri_to_path(uri) if uri.startswith("file://") else None
    if path is not None:
        return "file", path
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "file", uri
    if scheme in BARE_SCHEMES:
        return scheme, rest
    authority, slash, tail = rest.partition("/")
    if scheme in COLON_SCHEMES:
        return f"{scheme}:{authority}", tail or "/"
    if scheme == "file":  # another host's file
        return f"file://{authority}", unquote("/" + tail)
    name = tail if slash else ""
    if scheme in PATH_SCHEMES:
        return f"{scheme}://{authority}", "/" + name
    if scheme in SQL_SCHEMES:
        name = name.replace("/", ".")
    return f"{scheme}://{authority}", name or "/"
