"""The recipe of a product version or a run, read from the store.

The walk starts from the target's version (or the versions a run and its child
runs wrote), takes the upstream lineage closure (one recursive query), adds the
producers of every version read by a step (a step needs all of its inputs, not
only the lineage parents of the target), and repeats until nothing new is read:
usually once or twice. Steps are then put in dependency order.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select

from dpt_core.config import Settings, get_settings
from dpt_core.errors import NotFound
from dpt_core.reproduce import commands
from dpt_core.reproduce.model import (
    CodeVersion,
    EnvironmentSpec,
    Problem,
    ProductVersion,
    Recipe,
    RunRef,
    Step,
    Target,
)
from dpt_core.store.lineage import I, P, V, closure, resolve_versions, version_on_disk
from dpt_core.store.models import InvocationInput, LineageEdge

II = InvocationInput.__table__
E = LineageEdge.__table__

#: Ids per ``IN (...)`` list (inlined integers; well under every database's limits).
_CHUNK = 2000
#: How far up ``parent_id`` a step's re-run unit (its ``dpt run`` or flow run) is looked for.
_MAX_PARENT_DEPTH = 8
#: How far down a run's children are taken as the run's own steps.
_MAX_CHILD_DEPTH = 4


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    items = sorted(set(ids))
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _in(column: Any, ids: list[int]) -> Any:
    return column.in_(bindparam("ids", ids, expanding=True, literal_execute=True))


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return str(value.astimezone(dt.UTC).isoformat())
    return None if value is None else str(value)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass
class _Version:
    id: int
    uri: str
    product_id: int
    uuid: str
    content_hash: str | None
    size: int | None
    produced_by_id: int | None


@dataclass
class _Walk:
    """What the store says about the recipe, before it is put in order."""

    versions: dict[int, _Version] = field(default_factory=dict)
    runs: dict[int, Any] = field(default_factory=dict)
    steps: set[int] = field(default_factory=set)
    #: step id -> version ids it read (its inputs and the lineage parents of its outputs)
    reads: dict[int, set[int]] = field(default_factory=dict)
    #: step id -> version ids it wrote (newest per product)
    writes: dict[int, list[int]] = field(default_factory=dict)


# --------------------------------------------------------------------------- the target


def _resolve_target(
    conn: Connection, target: Any, version: str | None, settings: Settings
) -> tuple[Target, list[int], int | None]:
    """(target, seed version ids, run id for a run target)."""
    from dpt_core.store.queries import get_run
    from dpt_core.tracker import get_tracker

    uri: str | None
    try:
        uri = get_tracker().resolve(target)
    except Exception:  # not a path or URI: perhaps a run id
        uri = None
    if uri is not None:
        try:
            if version is not None:
                ids = resolve_versions(conn, uri, version)
                vid = max(ids)
                note = (
                    f"{len(ids)} versions have content {version}: the newest is used"
                    if len(ids) > 1
                    else None
                )
                selection = "version"
            else:
                start = version_on_disk(conn, uri, settings)
                if not start.ids:
                    raise NotFound(f"{uri} has no recorded version: see 'dpt show {uri}'")
                vid, selection, note = start.ids[0], start.selection, start.note
            row = conn.execute(select(V.c.uuid, V.c.content_hash).where(V.c.id == vid)).one()
            return (
                Target(
                    kind="product",
                    uri=uri,
                    version=row.uuid,
                    content_hash=row.content_hash,
                    selection=selection,
                    note=note,
                ),
                [vid],
                None,
            )
        except NotFound:
            if version is not None:
                raise
    try:
        run = get_run(conn.engine, target)
    except NotFound:
        raise NotFound(
            f"{target!r} is neither a recorded product nor a run id: see 'dpt runs'"
        ) from None
    if version is not None:
        raise NotFound(f"--version applies to a product; {target!r} is run {run['id']}")
    return Target(kind="run", run=run["uuid"], selection="run"), [], int(run["id"])


def _run_family(conn: Connection, run_id: int) -> list[int]:
    """The run and its child runs (task tries of a DAG run, task runs of a flow run, ...)."""
    family, frontier = [run_id], [run_id]
    for _ in range(_MAX_CHILD_DEPTH):
        children: list[int] = []
        for part in _chunks(frontier):
            children += [r.id for r in conn.execute(select(I.c.id).where(_in(I.c.parent_id, part)))]
        children = [c for c in children if c not in family]
        if not children:
            break
        family += children
        frontier = children
    return family


# --------------------------------------------------------------------------- the walk


def _load_runs(conn: Connection, walk: _Walk, ids: Iterable[int]) -> None:
    wanted = [i for i in set(ids) if i not in walk.runs]
    for part in _chunks(wanted):
        for row in conn.execute(select(I).where(_in(I.c.id, part))):
            walk.runs[row.id] = row


def _load_versions(conn: Connection, walk: _Walk, ids: Iterable[int]) -> None:
    wanted = [i for i in set(ids) if i not in walk.versions]
    for part in _chunks(wanted):
        rows = conn.execute(
            select(
                V.c.id,
                P.c.uri,
                V.c.product_id,
                V.c.uuid,
                V.c.content_hash,
                V.c.size,
                V.c.produced_by_id,
            )
            .join(P, P.c.id == V.c.product_id)
            .where(_in(V.c.id, part))
        )
        for r in rows:
            walk.versions[r.id] = _Version(
                r.id, r.uri, r.product_id, r.uuid, r.content_hash, r.size, r.produced_by_id
            )


def _walk(conn: Connection, seeds: list[int], forced_steps: Sequence[int]) -> _Walk:
    walk = _Walk()
    walk.steps.update(forced_steps)
    wanted = set(seeds)
    for step in forced_steps:
        walk.writes.setdefault(step, [])
    # Outputs of forced steps (a run target) are seeds too.
    if forced_steps:
        for part in _chunks(forced_steps):
            wanted.update(
                r.id for r in conn.execute(select(V.c.id).where(_in(V.c.produced_by_id, part)))
            )
    done_steps: set[int] = set()
    while True:
        found = closure(conn, sorted(wanted), "upstream")
        for vid, d in found.details.items():
            if vid not in walk.versions:
                walk.versions[vid] = _Version(
                    vid, d.uri, d.product_id, d.uuid, d.content_hash, d.size, d.produced_by_id
                )
            if d.produced_by_id is not None:
                walk.steps.add(d.produced_by_id)
        # Lineage parents of a version are inputs of the step that made it.
        for child, parent, _invocation in found.steps:
            producer = walk.versions[child].produced_by_id
            if producer is not None and parent != child:
                walk.reads.setdefault(producer, set()).add(parent)
        new_steps = sorted(walk.steps - done_steps)
        done_steps.update(new_steps)
        more: set[int] = set()
        for part in _chunks(new_steps):
            for read in conn.execute(
                select(II.c.invocation_id, II.c.version_id).where(_in(II.c.invocation_id, part))
            ):
                walk.reads.setdefault(read.invocation_id, set()).add(read.version_id)
                more.add(read.version_id)
            for written in conn.execute(
                select(V.c.id, V.c.produced_by_id).where(_in(V.c.produced_by_id, part))
            ):
                walk.writes.setdefault(written.produced_by_id, []).append(written.id)
        more -= set(found.details)
        more -= wanted
        if not more:
            break
        wanted |= more
    all_written = {v for ids in walk.writes.values() for v in ids}
    _load_versions(conn, walk, all_written | {v for ids in walk.reads.values() for v in ids})
    # A step that wrote one product several times: its newest version is what it left.
    for step, ids in walk.writes.items():
        newest: dict[int, int] = {}
        for vid in sorted(ids):
            newest[walk.versions[vid].product_id] = vid
        walk.writes[step] = sorted(newest.values())
    _load_runs(conn, walk, walk.steps)
    # Ancestors: a step's re-run unit may be its dpt run or flow run.
    frontier = {r.parent_id for r in walk.runs.values() if r.parent_id is not None}
    for _ in range(_MAX_PARENT_DEPTH):
        frontier -= set(walk.runs)
        if not frontier:
            break
        _load_runs(conn, walk, frontier)
        frontier = {walk.runs[i].parent_id for i in frontier if i in walk.runs}
        frontier.discard(None)
    return walk


# --------------------------------------------------------------------------- ordering


def _order(walk: _Walk, made_by: Mapping[int, int]) -> tuple[list[int], list[int]]:
    """Steps in dependency order (ties: started first), and the steps left in a cycle."""
    deps: dict[int, set[int]] = {s: set() for s in walk.steps}
    for step in walk.steps:
        for vid in walk.reads.get(step, ()):
            maker = made_by.get(vid)
            if maker is not None and maker != step:
                deps[step].add(maker)

    def key(step: int) -> tuple[str, int]:
        row = walk.runs[step]
        return (_iso(row.started_at) or "", step)

    ordered: list[int] = []
    left = set(walk.steps)
    while left:
        ready = sorted((s for s in left if not (deps[s] & left)), key=key)
        if not ready:
            break
        ordered.append(ready[0])
        left.discard(ready[0])
    return ordered, sorted(left, key=key)


# --------------------------------------------------------------------------- environments


def _environments(conn: Connection, ids: Iterable[int]) -> dict[int, EnvironmentSpec]:
    from dpt_core.store.analysis import _environment

    found: dict[int, EnvironmentSpec] = {}
    for env_id in sorted(set(ids)):
        data = _environment(conn, env_id)
        redacted = set(data["redacted"])
        found[env_id] = EnvironmentSpec(
            id=env_id,
            fingerprint=data["fingerprint"],
            python=data["python"],
            implementation=data["implementation"],
            platform=data["platform"],
            host=data["host"],
            user=data["user"],
            distributions=tuple(sorted(data["packages"].items())),
            variables=tuple(
                (k, str(v))
                for k, v in sorted(data["variables"].items())
                if not (k in redacted and v is None)
            ),
            redacted=tuple(sorted(k for k in redacted if data["variables"].get(k) is None)),
            facets=data["facets"],
        )
    return found


def _code(env: EnvironmentSpec | None, declared: str | None) -> CodeVersion:
    git = env.facets.get("git") if env is not None else None
    if not isinstance(git, Mapping):
        return CodeVersion(declared=declared)
    return CodeVersion(
        commit=git.get("commit"),
        dirty=git.get("dirty"),
        remote=git.get("remote"),
        branch=git.get("branch"),
        repo=git.get("repo"),
        declared=declared,
    )


# --------------------------------------------------------------------------- the recipe


def _product(v: _Version, made_by: int | None) -> ProductVersion:
    from dpt_core.uri import uri_to_path

    return ProductVersion(
        uri=v.uri,
        version=v.uuid,
        content_hash=v.content_hash,
        size=v.size,
        path=uri_to_path(v.uri),
        made_by=made_by,
    )


def _run_ref(row: Any, runs: Mapping[int, Any]) -> RunRef:
    parent = runs.get(row.parent_id) if row.parent_id is not None else None
    return RunRef(
        id=int(row.id),
        uuid=str(row.uuid),
        orchestrator=str(row.orchestrator),
        job=str(row.job),
        task=row.task,
        status=str(row.status),
        external_id=row.external_id,
        started_at=_iso(row.started_at),
        ended_at=_iso(row.ended_at),
        parent=str(parent.uuid) if parent is not None else None,
    )


def _root(paths: Iterable[str | None]) -> str | None:
    found = sorted({os.path.normpath(p) for p in paths if p})
    if not found:
        return None
    try:
        return os.path.commonpath(found)
    except ValueError:
        return None


def build_recipe(
    target: Any,
    version: str | None = None,
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> Recipe:
    """The recipe of ``target``'s version (a product) or of a run's outputs.

    :raises NotFound: the target (or version) is not recorded.
    """
    from dpt_core.store.analysis import _engine

    settings = settings or get_settings()
    eng = _engine(engine, settings)
    with eng.connect() as conn:
        tgt, seeds, run_id = _resolve_target(conn, target, version, settings)
        forced: list[int] = []
        if run_id is not None:
            family = _run_family(conn, run_id)
            with_products = set()
            for part in _chunks(family):
                with_products |= {
                    r.produced_by_id
                    for r in conn.execute(
                        select(V.c.produced_by_id).where(_in(V.c.produced_by_id, part)).distinct()
                    )
                }
                with_products |= {
                    r.invocation_id
                    for r in conn.execute(
                        select(II.c.invocation_id).where(_in(II.c.invocation_id, part)).distinct()
                    )
                }
            forced = sorted(with_products) or [run_id]
        walk = _walk(conn, seeds, forced)
        env_ids = {r.environment_id for r in walk.runs.values() if r.environment_id is not None}
        environments = _environments(conn, env_ids)
    return _assemble(tgt, walk, environments, seeds)


def _assemble(
    tgt: Target, walk: _Walk, environments: dict[int, EnvironmentSpec], seeds: Sequence[int] = ()
) -> Recipe:
    made_by_id = {vid: step for step, ids in walk.writes.items() for vid in ids}
    # A version a step read may have been written by it (or recorded by it) only.
    for vid, v in walk.versions.items():
        if v.produced_by_id is not None and v.produced_by_id in walk.steps:
            made_by_id.setdefault(vid, v.produced_by_id)
    ordered, cyclic = _order(walk, made_by_id)
    problems: list[Problem] = []
    notes: list[str] = []
    index = {step: n for n, step in enumerate([*ordered, *cyclic], start=1)}
    if cyclic:
        names = ", ".join(f"{index[s]} (run {walk.runs[s].id})" for s in cyclic)
        problems.append(
            Problem(
                "step_cycle",
                f"steps {names} read each other's outputs: no order re-runs them as recorded",
                "rebuild the products one at a time ('dpt reproduce PRODUCT --version V' for a "
                "version upstream of the cycle), or fix the record with 'dpt track --parent'",
            )
        )
    sources: dict[int, ProductVersion] = {}
    steps: list[Step] = []
    unit_paths: dict[str, set[str]] = {}
    # The products each re-run unit touches (a unit may run several steps).
    units = {s: commands.unit_of(walk.runs[s], walk.runs) for s in walk.steps}
    for step in walk.steps:
        unit = units[step]
        paths = unit_paths.setdefault(str(unit.uuid), set())
        for vid in (*walk.reads.get(step, ()), *walk.writes.get(step, ())):
            path = _product(walk.versions[vid], None).path
            if path:
                paths.add(path)
    for step in [*ordered, *cyclic]:
        row = walk.runs[step]
        unit = units[step]
        env_id = row.environment_id
        if env_id is None and unit.environment_id is not None:
            env_id = unit.environment_id
        env = environments.get(env_id) if env_id is not None else None
        inputs = []
        for vid in sorted(walk.reads.get(step, ())):
            maker = made_by_id.get(vid)
            product = _product(walk.versions[vid], index.get(maker) if maker else None)
            if maker is None or maker not in walk.steps:
                sources.setdefault(vid, product)
            inputs.append(product)
        outputs = [_product(walk.versions[vid], index[step]) for vid in walk.writes.get(step, ())]
        plan = commands.plan(
            row,
            unit,
            walk.runs,
            env,
            environments.get(unit.environment_id) if unit.environment_id is not None else None,
            sorted(unit_paths.get(str(unit.uuid), set())),
            _own_io(walk, unit.id),
        )
        steps.append(
            Step(
                index=index[step],
                run=_run_ref(row, walk.runs),
                what=plan.what,
                rerun=plan.rerun,
                command=row.command,
                cwd=plan.cwd,
                cwd_source=plan.cwd_source,
                details=plan.details,
                parameters=_json(row.parameters) or {},
                run_variables=tuple(sorted((_json(row.variables) or {}).items())),
                code=_code(env, row.code_version),
                environment=env_id,
                inputs=tuple(sorted(inputs, key=lambda p: p.uri)),
                outputs=tuple(sorted(outputs, key=lambda p: p.uri)),
            )
        )
        problems += [
            Problem(p.kind, p.message, p.remedy, index[step], p.subject, p.blocks_run)
            for p in plan.problems
        ]
        notes += [f"step {index[step]}: {n}" for n in plan.notes]
    problems += _step_problems(steps, environments)
    for vid in seeds:
        seed = walk.versions[vid]
        producer = seed.produced_by_id
        if producer is None or producer not in walk.steps:
            sources.setdefault(vid, _product(seed, None))
            notes.append(
                f"{seed.uri} (version {seed.content_hash or seed.uuid}) was not written by a "
                "recorded run (it was only read or observed): it is a source, nothing here makes it"
            )
        elif vid not in walk.writes.get(producer, ()):
            notes.append(
                f"run {walk.runs[producer].id} wrote {seed.uri} again after this version: "
                "a rebuild leaves (and compares) the last one it wrote"
            )
    source_list = sorted(sources.values(), key=lambda p: (p.uri, p.version))
    cycles = _version_cycles(steps, source_list)
    problems += cycles
    root = _root(
        [
            *(p.path for p in source_list),
            *(o.path for s in steps for o in s.outputs),
            *(s.rerun.cwd for s in steps if s.rerun.kind == "dpt-run"),
            *(s.code.repo for s in steps if s.rerun.kind == "dpt-run"),
        ]
    )
    return Recipe(
        target=tgt,
        steps=tuple(steps),
        sources=tuple(source_list),
        environments=tuple(environments[i] for i in sorted(environments)),
        problems=tuple(problems),
        root=root,
        notes=tuple(notes),
    )


def _own_io(walk: _Walk, unit_id: int) -> tuple[list[str], list[str]]:
    """The ``-i`` / ``-o`` products of a ``dpt run`` (paths, or URIs when not local)."""
    from dpt_core.uri import uri_to_path

    def named(ids: Iterable[int]) -> list[str]:
        return sorted({uri_to_path(walk.versions[v].uri) or walk.versions[v].uri for v in ids})

    if unit_id not in walk.steps:
        return [], []
    written = set(walk.writes.get(unit_id, ()))
    read = [v for v in walk.reads.get(unit_id, ()) if v not in written]
    return named(read), named(written)


def _step_problems(
    steps: Sequence[Step], environments: Mapping[int, EnvironmentSpec]
) -> list[Problem]:
    found: list[Problem] = []
    for step in steps:
        code = step.code
        if code.dirty and step.rerun.kind == "dpt-run":
            found.append(
                Problem(
                    "dirty_tree",
                    f"step {step.index} ran from a work tree with uncommitted changes "
                    f"({code.repo}, commit {(code.commit or '?')[:12]}): the code that ran "
                    "was not recorded",
                    "commit the changes and run the step again to make it reproducible; "
                    "'--run --allow-dirty' rebuilds with the committed code and compares",
                    step.index,
                    code.repo,
                )
            )
        elif code.dirty:
            found.append(
                Problem(
                    "dirty_tree",
                    f"step {step.index}'s process ran in a work tree with uncommitted changes "
                    f"({code.repo}, commit {(code.commit or '?')[:12]}): if its code lives "
                    "there, that code was not recorded",
                    "keep the orchestrator's code in a committed tree (or a versioned "
                    "bundle), so the recorded commit or code version names it",
                    step.index,
                    code.repo,
                    blocks_run=False,
                )
            )
        if step.run.status != "success":
            found.append(
                Problem(
                    "step_failed",
                    f"step {step.index} (run {step.run.id}) ended {step.run.status}: its outputs "
                    "are what it left behind",
                    "expect a rebuild to fail the same way, or rebuild from a successful run",
                    step.index,
                    blocks_run=False,
                )
            )
        if step.environment is None and step.rerun.kind == "dpt-run":
            found.append(
                Problem(
                    "no_environment",
                    f"step {step.index} has no recorded environment (it was recorded on "
                    "behalf of another process): its Python and packages are unknown",
                    "'--run' then uses this environment's packages; compare with 'dpt env show'",
                    step.index,
                    blocks_run=False,
                )
            )
    return found


def _version_cycles(steps: Sequence[Step], sources: Sequence[ProductVersion]) -> list[Problem]:
    """Products the recipe passes through more than once (read at one version, rewritten)."""
    written: dict[str, list[tuple[int, ProductVersion]]] = {}
    for step in steps:
        for out in step.outputs:
            written.setdefault(out.uri, []).append((step.index, out))
    found = []
    for source in sources:
        rewrites = [(i, o) for i, o in written.get(source.uri, []) if o.version != source.version]
        if not rewrites:
            continue
        later = ", ".join(f"step {i} (version {o.content_hash or o.version})" for i, o in rewrites)
        found.append(
            Problem(
                "version_cycle",
                f"{source.uri} is read at version {source.content_hash or source.version} and "
                f"rewritten by {later}: the recipe passes through several versions of it, so "
                "the version it starts from is usually no longer on disk",
                "restore that version (its hash is above) before rebuilding; a rebuild "
                "re-runs the steps in order and compares each version right after its step",
                None,
                source.uri,
                blocks_run=False,
            )
        )
    return found
