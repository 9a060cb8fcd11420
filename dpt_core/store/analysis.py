"""The questions users ask of the record: what is stale, what is impacted, what changed.

* :func:`stale` — products whose recorded inputs changed after they were made,
  with the reasons naming the changed input, propagated downstream.
* :func:`impact_of_product` / :func:`impact_of_package` — everything downstream
  of a product, or of every run made in an environment with a distribution.
* :func:`environment_of_run` / :func:`diff_environments` — ``dpt env show`` and
  ``dpt env diff``.

Staleness reads the database in at most three statements (the latest version of
every product with the versions it was made from; one downstream closure; for
targets, one upstream closure) and touches the disk as little as possible: every
local input file is ``stat``-ed once; only a file whose size or mtime differs
from the version that was used is looked up in the stat cache, and only a cache
miss is read and hashed. Over unchanged inputs nothing is hashed.
"""

from __future__ import annotations

import os
import re
import stat as statmod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, func, select

from dpt_core.config import HASH_ALGORITHMS, Settings, get_settings
from dpt_core.environment import REDACTION_KEY_FACET
from dpt_core.errors import NotFound
from dpt_core.store.lineage import (
    Closure,
    P,
    Resolve,
    V,
    closure,
    downstream_products,
    resolve_target,
    resolve_versions,
)
from dpt_core.store.models import (
    Distribution,
    Environment,
    EnvironmentDistribution,
    EnvironmentVariable,
    EnvVariable,
    Invocation,
    LineageEdge,
)
from dpt_core.store.queries import get_run
from dpt_core.store.recorder import uri_digest

__all__ = [
    "diff_environments",
    "environment_of_run",
    "impact_of_package",
    "impact_of_product",
    "parse_package",
    "stale",
]

E = LineageEdge.__table__
I = Invocation.__table__  # noqa: E741
ENV = Environment.__table__
D = Distribution.__table__
ED = EnvironmentDistribution.__table__
EV = EnvironmentVariable.__table__
VAR = EnvVariable.__table__

#: ``progress(done, total)`` while files are hashed.
Progress = Callable[[int, int], None]


def _engine(engine: Engine | None, settings: Settings | None = None) -> Engine:
    if engine is not None:
        return engine
    from dpt_core.config import get_settings
    from dpt_core.store.plugin import current_store

    return current_store(settings or get_settings()).engine


# =========================================================================== staleness


@dataclass(slots=True)
class _Input:
    """A version some current product was made from, and the latest version of its product."""

    vid: int
    uuid: str
    content_hash: str | None
    size: int | None
    mtime: float | None
    uri: str
    latest_vid: int
    latest_uuid: str
    latest_hash: str | None
    path: str | None = None


@dataclass
class _Made:
    """What the current products were made from (the result of the staleness query)."""

    inputs: dict[int, _Input] = field(default_factory=dict)
    #: ``(child version id, input version id)`` pairs.
    uses: list[tuple[int, int]] = field(default_factory=list)
    #: child version id -> (uri, version uuid)
    children: dict[int, tuple[str, str]] = field(default_factory=dict)


@dataclass
class _FileCheck:
    """What the disk says about one local input file (stat once, hash at most once)."""

    path: str
    info: os.stat_result | None = None
    error: str | None = None
    hashes: dict[str, str | None] = field(default_factory=dict)


def _algorithm(content_hash: str | None) -> str | None:
    if not content_hash or ":" not in content_hash:
        return None
    name = content_hash.split(":", 1)[0]
    return name if name in HASH_ALGORITHMS and name != "none" else None


def _same_stat(used: _Input, info: os.stat_result) -> bool:
    if statmod.S_ISDIR(info.st_mode):
        return False  # a directory's mtime says nothing about its files: compare tree hashes
    return (
        used.size is not None
        and used.mtime is not None
        and used.size == info.st_size
        and abs(used.mtime - info.st_mtime) < 1e-6
    )


def _made_from(conn: Connection, product_ids: Sequence[int] | None) -> _Made:
    """The latest version of each product joined to the versions it derives from (one query)."""
    latest = (
        select(V.c.product_id, func.max(V.c.id).label("vid")).group_by(V.c.product_id).cte("latest")
    )
    child, parent, newest = V.alias("child"), V.alias("parent"), V.alias("newest")
    cp, pp = P.alias("cp"), P.alias("pp")
    plat = latest.alias("plat")
    query = (
        select(
            latest.c.vid,
            cp.c.uri,
            child.c.uuid,
            parent.c.id,
            parent.c.uuid,
            parent.c.content_hash,
            parent.c.size,
            parent.c.mtime,
            pp.c.uri,
            newest.c.id,
            newest.c.uuid,
            newest.c.content_hash,
        )
        .select_from(latest)
        .join(child, child.c.id == latest.c.vid)
        .join(cp, cp.c.id == latest.c.product_id)
        .join(E, E.c.child_version_id == latest.c.vid)
        .join(parent, parent.c.id == E.c.parent_version_id)
        .join(pp, pp.c.id == parent.c.product_id)
        .join(plat, plat.c.product_id == parent.c.product_id)
        .join(newest, newest.c.id == plat.c.vid)
        # Re-writing a file from its own previous version is not a stale input.
        .where(parent.c.product_id != latest.c.product_id)
    )
    if product_ids is not None:
        query = query.where(
            latest.c.product_id.in_(
                bindparam(
                    "products", sorted(set(product_ids)), expanding=True, literal_execute=True
                )
            )
        )
    made = _Made()
    for (
        child_vid,
        child_uri,
        child_uuid,
        vid,
        uuid,
        content_hash,
        size,
        mtime,
        uri,
        latest_vid,
        latest_uuid,
        latest_hash,
    ) in conn.execute(query).all():
        made.children[child_vid] = (child_uri, child_uuid)
        made.uses.append((child_vid, vid))
        if vid not in made.inputs:
            made.inputs[vid] = _Input(
                vid, uuid, content_hash, size, mtime, uri, latest_vid, latest_uuid, latest_hash
            )
    return made


#: Files hashed per stat-cache transaction by ``stale()`` (a transaction per file
#: cost ~45 µs more per small file).
_HASH_BATCH = 256


class _Disk:
    """Checks local input files: one stat each, the stat cache, then hashing what changed."""

    def __init__(self, settings: Settings, progress: Progress | None) -> None:
        self.settings = settings
        self.progress = progress
        self.files: dict[str, _FileCheck] = {}
        self.hashed = 0

    def check(self, inputs: Iterable[_Input]) -> None:
        from dpt_core.uri import uri_to_path

        paths: dict[str, str | None] = {}
        wanted: set[tuple[str, str]] = set()
        for u in inputs:
            if u.uri not in paths:
                paths[u.uri] = uri_to_path(u.uri)
            path = u.path = paths[u.uri]
            if path is None:
                continue
            check = self.files.get(path)
            if check is None:
                check = self.files[path] = self._stat(path)
            algorithm = _algorithm(u.content_hash)
            if check.info is None or algorithm is None or _same_stat(u, check.info):
                continue
            wanted.add((path, algorithm))
        by_algorithm: dict[str, list[str]] = {}
        for path, algorithm in sorted(wanted):
            by_algorithm.setdefault(algorithm, []).append(path)
        for algorithm, found in by_algorithm.items():
            self._hash(found, algorithm)

    @staticmethod
    def _stat(path: str) -> _FileCheck:
        try:
            return _FileCheck(path, info=os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            return _FileCheck(path)
        except OSError as exc:
            return _FileCheck(path, error=exc.strerror or str(exc))

    def _hash(self, paths: list[str], algorithm: str) -> None:
        from dpt_core.errors import HashError
        from dpt_core.hashing import StatCache, observe, observe_many

        cache = StatCache(self.settings.cache_dir / "statcache.sqlite3")
        try:
            infos = [self.files[p].info for p in paths]
            hits = cache.lookup_many(
                [(p, i) for p, i in zip(paths, infos, strict=True) if i is not None], algorithm
            )
            misses = []
            for path, hit in zip(paths, hits, strict=True):
                if hit is not None:
                    self.files[path].hashes[algorithm] = hit
                else:
                    misses.append(path)
            for start in range(0, len(misses), _HASH_BATCH):
                if self.progress is not None:
                    self.progress(start, len(misses))
                part = misses[start : start + _HASH_BATCH]
                try:  # one cache read and one cache write per batch
                    batch = observe_many(part, algorithm, cache=cache)
                except HashError:  # one file could not be hashed: find which, one by one
                    batch = None
                for index, path in enumerate(part):
                    try:
                        facts = (
                            batch[index]
                            if batch is not None
                            else observe(path, algorithm, cache=cache)
                        )
                    except HashError as exc:
                        self.files[path].error = str(exc)
                        continue
                    self.hashed += 1
                    self.files[path].hashes[algorithm] = facts.content_hash
            if self.progress is not None and misses:
                self.progress(len(misses), len(misses))
        finally:
            cache.close()

    def current_hash(self, path: str, algorithm: str) -> str | None:
        return self.files[path].hashes.get(algorithm)


def _reason(kind: str, used: _Input, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "input": used.uri,
        "used_version": used.uuid,
        "used_hash": used.content_hash,
        **extra,
        "message": message,
    }


def _direct_reasons(used: _Input, disk: _Disk) -> list[dict[str, Any]]:
    """Why the version ``used`` no longer matches its input (empty: still current)."""
    reasons = []
    newer = used.latest_vid != used.vid and not (
        used.latest_hash is not None and used.latest_hash == used.content_hash
    )
    if newer:
        reasons.append(
            _reason(
                "newer_version",
                used,
                f"input {used.uri} has a newer recorded version "
                f"({used.latest_hash or used.latest_uuid}) than the one used "
                f"({used.content_hash or used.uuid})",
                latest_version=used.latest_uuid,
                latest_hash=used.latest_hash,
            )
        )
    if used.path is None:
        return reasons
    check = disk.files[used.path]
    if check.error is not None:
        reasons.append(
            _reason("unreadable", used, f"input {used.uri} cannot be checked: {check.error}")
        )
        return reasons
    if check.info is None:
        reasons.append(_reason("missing", used, f"input {used.uri} no longer exists"))
        return reasons
    if _same_stat(used, check.info):
        return reasons
    algorithm = _algorithm(used.content_hash)
    if algorithm is None:
        reasons.append(
            _reason(
                "changed",
                used,
                f"input {used.uri} changed on disk (size or mtime; no content hash was recorded)",
                current_hash=None,
            )
        )
        return reasons
    current = disk.current_hash(used.path, algorithm)
    if current == used.content_hash or (newer and current == used.latest_hash):
        return reasons  # touched but identical, or already reported as a newer version
    reasons.append(
        _reason(
            "changed",
            used,
            f"input {used.uri} changed on disk since it was used ({current})",
            current_hash=current,
        )
    )
    return reasons


def _target_products(conn: Connection, uris: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``uri -> (product id, latest version id)``; raises NotFound for an unknown target."""
    digests = {uri_digest(u): u for u in uris}
    rows = conn.execute(
        select(P.c.uri_digest, P.c.id, func.max(V.c.id).label("vid"))
        .join(V, V.c.product_id == P.c.id)
        .where(P.c.uri_digest.in_(list(digests)))
        .group_by(P.c.uri_digest, P.c.id)
    ).all()
    found = {digests[r.uri_digest]: (r.id, r.vid) for r in rows}
    for uri in uris:
        if uri not in found:
            raise NotFound(f"no product {uri} is recorded: check the path, or see 'dpt runs'")
    return found


def _propagate(
    seeds: dict[int, list[dict[str, Any]]],
    uri_of: dict[int, str],
    edges: Iterable[tuple[int, int]],
) -> dict[int, set[tuple[str, str, str]]]:
    """Root causes ``(input, kind, via product)`` carried from each seed down ``edges``."""
    children: dict[int, list[int]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    causes: dict[int, set[tuple[str, str, str]]] = {}
    work = []
    for vid, reasons in seeds.items():
        causes[vid] = {(r["input"], r["kind"], uri_of[vid]) for r in reasons}
        work.append(vid)
    while work:
        here = work.pop()
        for child in children.get(here, ()):
            known = causes.setdefault(child, set())
            new = causes[here] - known
            if new:
                known |= new
                work.append(child)
    return causes


_UPSTREAM_WORDS = {
    "changed": "changed on disk",
    "missing": "no longer exists",
    "newer_version": "has a newer version",
    "unreadable": "cannot be checked",
}


def stale(
    targets: Sequence[Any] | None = None,
    engine: Engine | None = None,
    settings: Settings | None = None,
    *,
    stats: dict[str, int] | None = None,
    progress: Progress | None = None,
    resolve: Resolve | None = None,
) -> list[dict[str, Any]]:
    """Products whose recorded inputs changed after they were made.

    Only the latest version of each product is judged. Its inputs are the
    versions it was derived from (its lineage parents). An input makes it stale
    when the input file now differs from the version used (``changed``), the
    file is gone (``missing``), or a newer recorded version of the input exists
    (``newer_version``). Every product downstream of a stale one is stale too,
    with an ``upstream`` reason naming the input that changed and the stale
    product it came through (``via``).

    :param targets: paths or URIs to judge (with everything upstream of them);
        None judges every product.
    :param stats: if given, filled with ``products``, ``inputs``, ``files_checked``,
        ``files_hashed`` and ``stale`` counts.
    :param progress: called as ``progress(done, total)`` while files are hashed.
    :param resolve: turns each target into a URI (default: paths and URI strings only;
        see :func:`dpt_core.store.lineage.resolve_target`).
    :returns: ``[{"uri", "version", "reasons": [{"kind", "input", "message", ...}]}]``
        sorted by URI.
    :raises NotFound: a target is not a recorded product.
    """
    settings = settings or get_settings()
    eng = _engine(engine, settings)
    target_vids: dict[str, int] | None = None
    scope: Closure | None = None
    # Phase 1 (database): what each current product was made from.
    with eng.connect() as conn:
        if targets is not None:
            found = _target_products(conn, [resolve_target(t, resolve) for t in targets])
            target_vids = {uri: vid for uri, (_, vid) in found.items()}
            scope = closure(conn, list(target_vids.values()), "upstream")
        made = _made_from(
            conn, sorted({d.product_id for d in scope.details.values()}) if scope else None
        )
    # Phase 2 (disk, no connection held: hashing must not block writers).
    disk = _Disk(settings, progress)
    disk.check(made.inputs.values())
    reasons_of = {vid: _direct_reasons(u, disk) for vid, u in made.inputs.items()}
    direct: dict[int, list[dict[str, Any]]] = {}
    for child_vid, input_vid in made.uses:
        if reasons_of[input_vid]:
            direct.setdefault(child_vid, []).extend(reasons_of[input_vid])
    for reasons in direct.values():
        reasons.sort(key=lambda r: (r["input"], r["kind"]))
    uri_of = {vid: uri for vid, (uri, _) in made.children.items()}
    version_of = {vid: version for vid, (_, version) in made.children.items()}
    # Phase 3 (database): carry the causes downstream.
    latest: dict[int, tuple[str, str]] = {}
    if direct:
        with eng.connect() as conn:
            if scope is None:
                scope = closure(conn, sorted(direct), "downstream")
            latest = _latest_among(conn, scope.details)
    causes = _propagate(direct, uri_of, [(p, c) for p, c, *_ in scope.edges] if scope else [])

    results: dict[int, dict[str, Any]] = {}
    for vid, reasons in direct.items():
        results[vid] = {"uri": uri_of[vid], "version": version_of[vid], "reasons": list(reasons)}
    for vid, found_causes in causes.items():
        if vid not in latest and vid not in direct:
            continue
        uri, version = latest.get(vid) or (uri_of[vid], version_of[vid])
        upstream_reasons = [
            {
                "kind": "upstream",
                "input": source,
                "cause": kind,
                "via": via,
                "message": f"upstream input {source} {_UPSTREAM_WORDS.get(kind, kind)} (via {via})",
            }
            for source, kind, via in sorted(found_causes)
            if via != uri and source != uri  # in a cycle, never stale because of itself
        ]
        if upstream_reasons:
            entry = results.setdefault(vid, {"uri": uri, "version": version, "reasons": []})
            entry["reasons"].extend(upstream_reasons)
    if target_vids is not None:
        wanted = set(target_vids.values())
        results = {vid: r for vid, r in results.items() if vid in wanted}
    if stats is not None:
        stats.update(
            products=len(made.children),
            inputs=len(made.inputs),
            files_checked=len(disk.files),
            files_hashed=disk.hashed,
            stale=len(results),
        )
    return sorted(results.values(), key=lambda r: r["uri"])


def _latest_among(conn: Connection, details: dict[int, Any]) -> dict[int, tuple[str, str]]:
    """Of the versions in ``details``, those that are their product's latest: ``vid -> (uri, uuid)``."""
    products = sorted({d.product_id for d in details.values()})
    if not products:
        return {}
    rows = conn.execute(
        select(V.c.product_id, func.max(V.c.id).label("vid"))
        .where(
            V.c.product_id.in_(
                bindparam("products", products, expanding=True, literal_execute=True)
            )
        )
        .group_by(V.c.product_id)
    ).all()
    newest = {r.vid for r in rows}
    return {vid: (d.uri, d.uuid) for vid, d in details.items() if vid in newest}


# =========================================================================== impact


def impact_of_product(
    target: Any,
    *,
    version: str | None = None,
    engine: Engine | None = None,
    resolve: Resolve | None = None,
) -> list[dict[str, Any]]:
    """Every product downstream of ``target`` (any of its versions, or ``version``).

    ``target`` is a path or URI, or anything ``resolve`` turns into one (see
    :func:`dpt_core.store.lineage.resolve_target`).

    :returns: ``[{"uri", "depth", "versions", "runs"}]``, nearest first; the target
        itself is not listed (unless a cycle leads back to it).
    :raises NotFound: the product or version is not recorded.
    """
    uri = resolve_target(target, resolve)
    with _engine(engine).connect() as conn:
        seeds = resolve_versions(conn, uri, version)
        items = downstream_products(conn, seeds)
    return [item for item in items if item["depth"] > 0]


def parse_package(spec: str) -> tuple[str, str | None]:
    """``"NumPy==2.1.0"`` -> ``("numpy", "2.1.0")`` (PEP 503 name); ``"numpy"`` -> ``("numpy", None)``."""
    name, sep, version = spec.partition("==")
    name = name.strip()
    if (
        not name
        or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name)
        or (sep and not version.strip())
    ):
        raise ValueError(
            f"{spec!r} is not a package: write NAME or NAME==VERSION, e.g. numpy==2.1.0"
        )
    return re.sub(r"[-_.]+", "-", name).lower(), (version.strip() or None)


def impact_of_package(
    name: str, version: str | None = None, *, engine: Engine | None = None
) -> list[dict[str, Any]]:
    """Every product made in an environment with distribution ``name`` (at ``version``),
    plus everything downstream of those.

    :returns: ``[{"uri", "depth", "direct", "versions", "runs"}]``, nearest first;
        ``direct`` (depth 0) marks products a run in such an environment wrote.
    """
    name, parsed_version = parse_package(name if version is None else f"{name}=={version}")
    dists = select(D.c.id).where(D.c.name == name)
    if parsed_version is not None:
        dists = dists.where(D.c.version == parsed_version)
    environments = select(ED.c.environment_id).where(ED.c.distribution_id.in_(dists))
    runs = select(I.c.id).where(I.c.environment_id.in_(environments))
    seeds: Select[Any] = select(V.c.id).where(V.c.produced_by_id.in_(runs))
    with _engine(engine).connect() as conn:
        items = downstream_products(conn, seeds)
    for item in items:
        item["direct"] = item["depth"] == 0
    return items


def known_distribution(
    name: str, version: str | None = None, *, engine: Engine | None = None
) -> bool:
    """True when some recorded environment has distribution ``name`` (at ``version``)."""
    name, parsed_version = parse_package(name if version is None else f"{name}=={version}")
    query = select(D.c.id).where(D.c.name == name)
    if parsed_version is not None:
        query = query.where(D.c.version == parsed_version)
    with _engine(engine).connect() as conn:
        return conn.execute(query.limit(1)).first() is not None


# =========================================================================== environments


def _environment(conn: Connection, environment_id: int) -> dict[str, Any]:
    env = conn.execute(select(ENV).where(ENV.c.id == environment_id)).one()
    packages = {
        r.name: r.version
        for r in conn.execute(
            select(D.c.name, D.c.version)
            .join(ED, ED.c.distribution_id == D.c.id)
            .where(ED.c.environment_id == environment_id)
            .order_by(D.c.name)
        )
    }
    variables: dict[str, str | None] = {}
    redacted: list[str] = []
    digests: dict[str, str] = {}
    for r in conn.execute(
        select(VAR.c.key, VAR.c.value, VAR.c.redacted_digest)
        .join(EV, EV.c.variable_id == VAR.c.id)
        .where(EV.c.environment_id == environment_id)
        .order_by(VAR.c.key)
    ):
        variables[r.key] = r.value
        if r.redacted_digest is not None:
            redacted.append(r.key)
            digests[r.key] = r.redacted_digest
    return {
        "id": env.id,
        "fingerprint": env.fingerprint,
        "python": env.python_version,
        "implementation": env.implementation,
        "platform": env.platform,
        "host": env.hostname,
        "user": env.user,
        "facets": env.facets or {},
        "packages": packages,
        "variables": variables,
        "redacted": redacted,
        "_digests": digests,
    }


def _run_with_environment(engine: Engine, run: str | int) -> dict[str, Any]:
    info = get_run(engine, run)
    if info["environment_id"] is None:
        raise NotFound(
            f"run {run} ({info['uuid']}) has no recorded environment "
            "(it was recorded on behalf of another process): pick a run from 'dpt runs'"
        )
    return info


def environment_of_run(run: str | int, *, engine: Engine | None = None) -> dict[str, Any]:
    """``dpt env show``: the run and its environment (redacted variables have value None).

    :raises NotFound: no such run, or it has no recorded environment.
    """
    eng = _engine(engine)
    info = _run_with_environment(eng, run)
    with eng.connect() as conn:
        env = _environment(conn, info["environment_id"])
    env.pop("_digests")
    return {
        "run": {
            k: info[k]
            for k in ("id", "uuid", "orchestrator", "job", "task", "status", "started_at")
        },
        "run_variables": info.get("variables") or {},
        "environment": env,
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


def _diff_maps(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "added": {k: b[k] for k in sorted(b.keys() - a.keys())},
        "removed": {k: a[k] for k in sorted(a.keys() - b.keys())},
        "changed": {k: {"a": a[k], "b": b[k]} for k in sorted(a.keys() & b.keys()) if a[k] != b[k]},
    }


def diff_environments(
    run_a: str | int, run_b: str | int, *, engine: Engine | None = None
) -> dict[str, Any]:
    """``dpt env diff``: what differs between the environments of two runs.

    Redacted variables never show a value: added or removed ones have value None,
    changed ones (their keyed digests differ) are ``{"redacted": true}``. When the two
    environments were recorded under different redaction keys (another host without
    the team's shared key, say), differing digests say nothing: such a variable is
    ``{"redacted": true, "comparable": false, "reason": "different redaction keys"}``.

    :returns: ``{"a", "b", "same", "fields", "packages", "variables", "facets"}``, where
        ``packages``, ``variables`` and ``facets`` each hold ``added``, ``removed``, ``changed``;
        ``a`` and ``b`` name the run, its environment and the id of its redaction key.
    :raises NotFound: a run is unknown or has no recorded environment.
    """
    eng = _engine(engine)
    info_a = _run_with_environment(eng, run_a)
    info_b = _run_with_environment(eng, run_b)
    with eng.connect() as conn:
        env_a = _environment(conn, info_a["environment_id"])
        env_b = _environment(conn, info_b["environment_id"])
    fields = {
        name: {"a": env_a[name], "b": env_b[name]}
        for name in ("python", "implementation", "platform", "host", "user")
        if env_a[name] != env_b[name]
    }
    variables = _diff_variables(env_a, env_b)
    result = {
        "a": {
            "run": info_a["id"],
            "uuid": info_a["uuid"],
            "environment": env_a["id"],
            "fingerprint": env_a["fingerprint"],
            "redaction_key": _redaction_key(env_a),
        },
        "b": {
            "run": info_b["id"],
            "uuid": info_b["uuid"],
            "environment": env_b["id"],
            "fingerprint": env_b["fingerprint"],
            "redaction_key": _redaction_key(env_b),
        },
        "same": env_a["fingerprint"] == env_b["fingerprint"],
        "fields": fields,
        "packages": _diff_maps(env_a["packages"], env_b["packages"]),
        "variables": variables,
        "facets": _diff_maps(_flatten(env_a["facets"]), _flatten(env_b["facets"])),
    }
    return result


def _redaction_key(env: dict[str, Any]) -> str | None:
    """The id of the key the environment's digests were made with (None: no digests, or
    recorded before key ids were)."""
    key = env["facets"].get(REDACTION_KEY_FACET)
    return key if isinstance(key, str) else None


NOT_COMPARABLE = "different redaction keys"


def _diff_variables(env_a: dict[str, Any], env_b: dict[str, Any]) -> dict[str, Any]:
    a_vals, b_vals = env_a["variables"], env_b["variables"]
    a_dig, b_dig = env_a["_digests"], env_b["_digests"]
    key_a, key_b = _redaction_key(env_a), _redaction_key(env_b)
    other_keys = key_a is not None and key_b is not None and key_a != key_b

    def shown(key: str, values: dict[str, Any], digests: dict[str, str]) -> Any:
        return None if key in digests else values[key]

    changed: dict[str, Any] = {}
    for key in sorted(a_vals.keys() & b_vals.keys()):
        secret = key in a_dig or key in b_dig
        if secret:
            if (a_dig.get(key), a_vals[key]) == (b_dig.get(key), b_vals[key]):
                continue
            if other_keys and key in a_dig and key in b_dig and a_vals[key] == b_vals[key]:
                changed[key] = {"redacted": True, "comparable": False, "reason": NOT_COMPARABLE}
            else:
                changed[key] = {"redacted": True}
        elif a_vals[key] != b_vals[key]:
            changed[key] = {"a": a_vals[key], "b": b_vals[key]}
    return {
        "added": {k: shown(k, b_vals, b_dig) for k in sorted(b_vals.keys() - a_vals.keys())},
        "removed": {k: shown(k, a_vals, a_dig) for k in sorted(a_vals.keys() - b_vals.keys())},
        "changed": changed,
    }
