"""Ask the record from Python: the data of ``dpt runs|show|stale|impact|env diff --json``,
as typed, frozen objects.

Every result has ``to_dict()``, equal to what the command prints with ``--json``
(times are ISO-8601 text there and here). They read the database the process
records into (``DPT_DATABASE_URL``, the config file, or the default SQLite file).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dpt_core.tags import Tags
    from dpt_core.tracker import AsyncInvocationHandle, InvocationHandle

__all__ = [
    "EnvironmentChange",
    "EnvironmentDiff",
    "EnvironmentSummary",
    "ImpactedProduct",
    "MappingDiff",
    "ParentVersion",
    "Product",
    "ProductVersion",
    "Run",
    "RunEnvironment",
    "StaleProduct",
    "StaleReason",
    "Tagged",
    "env_diff",
    "impact",
    "runs",
    "show",
    "stale",
    "tag",
]

#: A product named by its path or URI.
Target = str | os.PathLike[str]

Status = Literal["running", "success", "failed", "crashed", "cancelled", "skipped"]


def _plain(value: Any) -> Any:
    """A result as JSON-able data: the shape ``--json`` prints."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omitted_when_none"):
                continue
            out[f.name] = _plain(item)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Result:
    def to_dict(self) -> dict[str, Any]:
        """This result as the command's ``--json`` prints it."""
        data: dict[str, Any] = _plain(self)
        return data


# =========================================================================== runs


@dataclass(frozen=True)
class Run(_Result):
    """One recorded run (``dpt runs --json``, ``dpt show RUN --json``).

    ``job`` is the DAG id, flow name, Dagster job or script; ``task`` the task id, task
    name or asset key. ``started_at`` and ``ended_at`` are ISO-8601 text. ``tags`` are
    its ``key: value`` labels, values in their text form (docs/tags.md).
    """

    id: int
    uuid: str
    orchestrator: str
    job: str
    task: str | None
    status: Status
    parent_id: int | None
    started_at: str
    ended_at: str | None
    environment_id: int | None
    parameters: Mapping[str, Any] | None
    error: str | None
    external_id: str | None
    host: str | None
    user: str | None
    command: str | None
    code_version: str | None
    variables: Mapping[str, str] | None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def _from(cls, data: Mapping[str, Any]) -> Run:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        values["tags"] = dict(data.get("tags") or {})
        return cls(**values)


def runs(
    *,
    orchestrator: str | None = None,
    status: Status | None = None,
    job: str | None = None,
    limit: int = 50,
    tags: Tags | None = None,
) -> list[Run]:
    """Recorded runs, newest first (``dpt runs``).

    :param orchestrator: only runs from this orchestrator (airflow, prefect, dagster, cli,
        python).
    :param status: only runs with this status.
    :param job: only runs of this job.
    :param limit: at most this many (1 to 100 000).
    :param tags: only runs carrying every one of these tags (``{"survey": "tess"}``;
        values compare in their text form, so ``42`` matches ``"42"``).
    """
    from dpt_core.events import STATUSES
    from dpt_core.store.queries import list_runs
    from dpt_core.tags import normalize_tags

    if status is not None and status not in STATUSES:
        raise ValueError(f"status {status!r} is unknown: use one of {', '.join(STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise ValueError(f"limit must be a whole number from 1 to 100000, not {limit!r}")
    wanted = normalize_tags(tags)
    rows = list_runs(
        _engine(), orchestrator=orchestrator, status=status, job=job, limit=limit, tags=wanted
    )
    return [Run._from(r) for r in rows]


# =========================================================================== show


@dataclass(frozen=True)
class EnvironmentSummary(_Result):
    """Where a version was made: Python version, host and the environment's fingerprint."""

    python: str
    host: str
    fingerprint: str


@dataclass(frozen=True)
class ParentVersion(_Result):
    """A version a product version was made from."""

    uri: str
    version: str
    content_hash: str | None


@dataclass(frozen=True)
class ProductVersion(_Result):
    """One recorded version of a product, with the run that made it (None: observed only)."""

    version: str
    content_hash: str | None
    size: int | None
    mtime: float | None
    recorded_at: str
    metadata: Mapping[str, Any] | None
    tags: Mapping[str, str]
    produced_by: Run | None
    environment: EnvironmentSummary | None
    parents: tuple[ParentVersion, ...]

    @classmethod
    def _from(cls, data: Mapping[str, Any]) -> ProductVersion:
        producer, env = data["produced_by"], data["environment"]
        return cls(
            version=data["version"],
            content_hash=data["content_hash"],
            size=data["size"],
            mtime=data["mtime"],
            recorded_at=data["recorded_at"],
            metadata=data["metadata"],
            tags=dict(data.get("tags") or {}),
            produced_by=Run._from(producer) if producer is not None else None,
            environment=EnvironmentSummary(**env) if env is not None else None,
            parents=tuple(ParentVersion(**p) for p in data["parents"]),
        )


@dataclass(frozen=True)
class Product(_Result):
    """A product and its versions, newest first (``dpt show TARGET --json``)."""

    uri: str
    versions: tuple[ProductVersion, ...]


def show(target: Target | int) -> Product | Run:
    """A product (its versions, the run that made each, parents, environment), or a run.

    :param target: a path or URI of a recorded product, or a run's id, UUID or UUID prefix.
    :raises NotFound: it is neither.
    """
    kind, data = show_data(_engine(), target)
    if kind == "run":
        return Run._from(data)
    return Product(
        uri=data["uri"], versions=tuple(ProductVersion._from(v) for v in data["versions"])
    )


def show_data(
    engine: Engine, target: Target | int
) -> tuple[Literal["product", "run"], dict[str, Any]]:
    """``("product" | "run", the JSON of dpt show)`` for ``target``: a recorded product
    first, else a run. Shared by :func:`show` and ``dpt show``."""
    from dpt_core.errors import InvalidTarget, NotFound
    from dpt_core.store.queries import get_run, show_product
    from dpt_core.uri import normalize_uri

    try:
        if not isinstance(target, int):
            return "product", show_product(engine, normalize_uri(target))
    except (NotFound, InvalidTarget):
        pass
    try:
        return "run", get_run(engine, str(target))
    except NotFound:
        raise NotFound(
            f"{target!r} is neither a recorded product nor a run id: see 'dpt runs'"
        ) from None


# =========================================================================== tag


@dataclass(frozen=True)
class Tagged(_Result):
    """A run or product version after :func:`tag` (``dpt tag --json`` prints a list).

    :param kind: ``run`` or ``version``.
    :param uuid: the run's or the version's UUID.
    :param uri: the product, for a version.
    :param tags: all its tags now.
    """

    kind: Literal["run", "version"]
    uuid: str
    uri: str | None
    tags: Mapping[str, str]


def tag(
    target: Target | int | Run | InvocationHandle | AsyncInvocationHandle,
    tags: Tags | None = None,
    /,
    *,
    remove: Sequence[str] = (),
    version: str | None = None,
) -> list[Tagged]:
    """Add, change or remove tags of a recorded run or product version, afterwards
    (``dpt tag``). A key given replaces its value; keys in ``remove`` go.

    ::

        dpt_core.tag("cal.fits", {"quality": "good"})     # the newest version of cal.fits
        dpt_core.tag(run, {"reviewed": True}, remove=["draft"])

    :param target: a product's path or URI (its newest version, or ``version``), else a
        run: its id, UUID or UUID prefix, a :class:`Run` or an invocation handle.
    :param tags: ``{key: value}`` to set (values kept as text: see docs/tags.md).
    :param remove: keys to remove (a key that is not there is no error).
    :param version: with a product: the version UUID, UUID prefix or content hash
        (every version with that content).
    :returns: what was tagged, with all its tags now.
    :raises InvalidTag: a bad key or value (nothing is changed).
    :raises NotFound: the target, or the version, is not recorded.
    """
    from dpt_core.store.queries import set_tags, tag_target
    from dpt_core.store.upsert import in_transaction
    from dpt_core.tags import InvalidTag, check_key, normalize_tags

    wanted = normalize_tags(tags)
    if isinstance(remove, str):
        remove = [remove]
    dropped = [check_key(k) for k in remove]
    both = sorted(set(wanted) & set(dropped))
    if both:
        raise InvalidTag(f"tag {both[0]!r} is both set and removed: give it in one of the two")
    uri: str | None = None
    text: str
    if isinstance(target, Run):
        text = target.uuid
    elif isinstance(target, int) and not isinstance(target, bool):
        text = str(target)
    elif isinstance(target, str | os.PathLike):
        text = os.fspath(target)
        uri = _product_uri(text)
    elif hasattr(target, "uuid") and isinstance(target.uuid, str):
        text = target.uuid  # an invocation handle
    else:
        raise TypeError(
            f"tag() takes a product path or URI, a run id or UUID, a Run or an invocation "
            f"handle, not {type(target).__name__}"
        )

    def work(conn: Any) -> list[Tagged]:
        kind, found = tag_target(conn, text, version=version, uri=uri)
        after = set_tags(conn, kind, [i for i, _, _ in found], wanted, dropped)
        return [
            Tagged(kind=kind, uuid=uuid, uri=where, tags=after[i])  # type: ignore[arg-type]
            for i, uuid, where in found
        ]

    return in_transaction(_engine(), work)


def _product_uri(text: str) -> str | None:
    """``text`` as a product URI, or None when it cannot name one (then it is a run)."""
    from dpt_core.errors import InvalidTarget
    from dpt_core.uri import normalize_uri

    try:
        return normalize_uri(text)
    except InvalidTarget:
        return None


# =========================================================================== stale


class StaleReason(TypedDict):
    """Why a product is stale.

    ``kind`` is ``changed`` (the input file differs from the version used),
    ``missing``, ``newer_version`` (a newer version of the input was recorded),
    ``unreadable``, or ``upstream`` (an input further up changed: ``cause`` is its
    kind, ``via`` the stale product it came through).
    """

    kind: str
    input: str
    message: str
    used_version: NotRequired[str]
    used_hash: NotRequired[str | None]
    current_hash: NotRequired[str | None]
    latest_version: NotRequired[str]
    latest_hash: NotRequired[str | None]
    cause: NotRequired[str]
    via: NotRequired[str]


@dataclass(frozen=True)
class StaleProduct(_Result):
    """A product whose latest version was made from inputs that changed since."""

    uri: str
    version: str
    reasons: tuple[StaleReason, ...]


def stale(*targets: Target, stats: dict[str, int] | None = None) -> list[StaleProduct]:
    """Products whose inputs changed after they were made (``dpt stale``), sorted by URI.

    Files are re-hashed only when their size or mtime moved. Everything downstream of
    a stale product is stale too.

    :param targets: paths or URIs to judge (with everything upstream of them); none:
        every product.
    :param stats: if given, filled with the counts of ``products`` judged, their
        ``inputs``, ``files_checked`` (stat-ed), ``files_hashed`` and ``stale``.
    :raises NotFound: a target is not a recorded product.
    """
    from dpt_core.store.analysis import stale as _stale
    from dpt_core.uri import normalize_uri

    uris = [normalize_uri(t) for t in targets] if targets else None
    found = _stale(uris, _engine(), stats=stats)
    return [
        StaleProduct(uri=item["uri"], version=item["version"], reasons=tuple(item["reasons"]))
        for item in found
    ]


# =========================================================================== impact


@dataclass(frozen=True)
class ImpactedProduct(_Result):
    """A product affected by a bad product or package.

    :param depth: steps from what was asked about (0: made with the package itself).
    :param versions: UUIDs of its affected versions.
    :param runs: UUIDs of the runs that made them.
    :param direct: for a package, whether a run in such an environment made it (None
        for a product's impact, where ``--json`` has no such key).
    """

    uri: str
    depth: int
    versions: tuple[str, ...]
    runs: tuple[str, ...]
    direct: bool | None = field(default=None, metadata={"omitted_when_none": True})


def impact(
    product: Target | None = None, *, package: str | None = None, version: str | None = None
) -> list[ImpactedProduct]:
    """What a bad product or a bad package affects (``dpt impact``), nearest first.

    :param product: everything downstream of this product (path or URI).
    :param package: ``NAME`` or ``NAME==VERSION``: everything made in an environment
        with that distribution, and downstream of it.
    :param version: with ``product``, start from this version only (UUID, UUID prefix
        or content hash).
    :raises NotFound: the product (or version) is not recorded.
    """
    from dpt_core.store.analysis import impact_of_package, impact_of_product, parse_package
    from dpt_core.uri import normalize_uri

    if (product is None) == (package is None):
        raise ValueError("impact() takes a product or package=NAME[==VERSION], one of the two")
    if package is not None:
        if version is not None:
            raise ValueError("version= goes with a product; for a package write NAME==VERSION")
        name, pinned = parse_package(package)
        items = impact_of_package(name, pinned, engine=_engine())
    else:
        assert product is not None
        items = impact_of_product(normalize_uri(product), version=version, engine=_engine())
    return [
        ImpactedProduct(
            uri=item["uri"],
            depth=item["depth"],
            versions=tuple(item["versions"]),
            runs=tuple(item["runs"]),
            direct=item.get("direct"),
        )
        for item in items
    ]


# =========================================================================== env diff


@dataclass(frozen=True)
class RunEnvironment(_Result):
    """One side of an environment diff: the run, its environment and redaction key id."""

    run: int
    uuid: str
    environment: int
    fingerprint: str
    redaction_key: str | None


class EnvironmentChange(TypedDict):
    """A value that differs: ``a`` and ``b``; for a secret variable only ``redacted``
    (and ``comparable: False`` with a ``reason`` when the runs used different keys)."""

    a: NotRequired[Any]
    b: NotRequired[Any]
    redacted: NotRequired[bool]
    comparable: NotRequired[bool]
    reason: NotRequired[str]


@dataclass(frozen=True)
class MappingDiff(_Result):
    """Names only in b (``added``), only in a (``removed``), and in both with another value.

    A redacted variable's value is None."""

    added: Mapping[str, Any]
    removed: Mapping[str, Any]
    changed: Mapping[str, EnvironmentChange]

    @classmethod
    def _from(cls, data: Mapping[str, Any]) -> MappingDiff:
        return cls(added=data["added"], removed=data["removed"], changed=data["changed"])


@dataclass(frozen=True)
class EnvironmentDiff(_Result):
    """What differs between the environments of two runs (``dpt env diff A B --json``).

    :param same: one environment (same fingerprint).
    :param fields: python, implementation, platform, host, user that differ.
    :param facets: plugin facets (git commit, ...) flattened to dotted names.
    """

    a: RunEnvironment
    b: RunEnvironment
    same: bool
    fields: Mapping[str, EnvironmentChange]
    packages: MappingDiff
    variables: MappingDiff
    facets: MappingDiff


def env_diff(
    a: Run | InvocationHandle | int | str, b: Run | InvocationHandle | int | str
) -> EnvironmentDiff:
    """What differs between the environments two runs ran in (``dpt env diff``).

    :param a: a run: a :class:`Run`, an invocation handle, a run id, UUID or UUID prefix.
    :param b: the other run.
    :raises NotFound: a run is unknown or has no recorded environment.
    """
    from dpt_core.store.analysis import diff_environments

    data = diff_environments(_run_ref(a), _run_ref(b), engine=_engine())
    return EnvironmentDiff(
        a=RunEnvironment(**data["a"]),
        b=RunEnvironment(**data["b"]),
        same=data["same"],
        fields=data["fields"],
        packages=MappingDiff._from(data["packages"]),
        variables=MappingDiff._from(data["variables"]),
        facets=MappingDiff._from(data["facets"]),
    )


def _run_ref(run: Run | InvocationHandle | int | str) -> int | str:
    if isinstance(run, Run):
        return run.id
    if isinstance(run, int | str):
        return run
    return str(run.uuid)


def _engine() -> Engine:
    """The engine of the database this process records into (as the CLI reads it)."""
    from dpt_core.config import get_settings
    from dpt_core.store.plugin import current_store

    return current_store(get_settings()).engine
