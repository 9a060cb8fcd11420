"""The typed objects of a recipe, a check and a rebuild (frozen dataclasses).

Every object has ``to_dict()``, the JSON shape ``dpt reproduce --json`` prints
(documented in docs/reproduce.md); :meth:`Recipe.from_dict` reads it back (an
exported ``manifest.json`` holds one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: The ``format`` of a recipe document (``recipe.json``, ``manifest.json``).
RECIPE_FORMAT = "dpt-recipe/1"

ProblemKind = Literal[
    "input_missing",
    "input_changed",
    "input_unreadable",
    "input_unverifiable",
    "version_cycle",
    "step_cycle",
    "dirty_tree",
    "code_unavailable",
    "orchestrator_only",
    "no_command",
    "command_redacted",
    "command_unparsable",
    "cwd_unknown",
    "no_environment",
    "python_differs",
    "package_differs",
    "environment_differs",
    "package_missing",
    "not_installable",
    "environment_mismatch",
    "python_unavailable",
    "step_failed",
    "original_touched",
    "interleaved",
    "workdir_not_empty",
    "cannot_write",
]

RerunKind = Literal["dpt-run", "airflow", "dagster", "prefect", "none"]
Outcome = Literal["identical", "differs", "missing", "not_compared"]
InputState = Literal["same", "changed", "missing", "unreadable", "not_local", "unhashed"]


def _pairs(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(items)


@dataclass(frozen=True)
class Problem:
    """Something that would make a rebuild differ or fail, with what can still be done.

    :param kind: what went wrong (see :data:`ProblemKind`).
    :param message: one sentence naming the subject (the input, package, step...).
    :param remedy: what the user can still do.
    :param step: the step it concerns (its ``index``), if one.
    :param subject: the URI, package or path it names, if one.
    :param blocks_run: True when ``--run`` refuses to start because of it.
    """

    kind: ProblemKind
    message: str
    remedy: str
    step: int | None = None
    subject: str | None = None
    blocks_run: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "step": self.step,
            "subject": self.subject,
            "message": self.message,
            "remedy": self.remedy,
            "blocks_run": self.blocks_run,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        return cls(
            kind=data["kind"],
            message=str(data["message"]),
            remedy=str(data["remedy"]),
            step=data.get("step"),
            subject=data.get("subject"),
            blocks_run=bool(data.get("blocks_run", True)),
        )


@dataclass(frozen=True)
class ProductVersion:
    """One version of a product a step read or wrote.

    :param made_by: the index of the step of this recipe that wrote it; None for a
        source (nothing in the recipe makes it: it must be present to rebuild).
    :param path: the local file, when the URI names one on this host.
    """

    uri: str
    version: str
    content_hash: str | None
    size: int | None = None
    path: str | None = None
    made_by: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "version": self.version,
            "content_hash": self.content_hash,
            "size": self.size,
            "path": self.path,
            "made_by": self.made_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProductVersion:
        return cls(
            uri=str(data["uri"]),
            version=str(data["version"]),
            content_hash=data.get("content_hash"),
            size=data.get("size"),
            path=data.get("path"),
            made_by=data.get("made_by"),
        )


@dataclass(frozen=True)
class CodeVersion:
    """The code a step ran: the git facet of its environment and the declared code version.

    :param repo: the work tree's top directory (where the process ran).
    :param declared: the invocation's own ``code_version`` (a DAG bundle version, a
        Dagster asset's code version, a Prefect flow version...).
    """

    commit: str | None = None
    dirty: bool | None = None
    remote: str | None = None
    branch: str | None = None
    repo: str | None = None
    declared: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "dirty": self.dirty,
            "remote": self.remote,
            "branch": self.branch,
            "repo": self.repo,
            "declared": self.declared,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodeVersion:
        return cls(
            commit=data.get("commit"),
            dirty=data.get("dirty"),
            remote=data.get("remote"),
            branch=data.get("branch"),
            repo=data.get("repo"),
            declared=data.get("declared"),
        )


@dataclass(frozen=True)
class EnvironmentSpec:
    """A recorded environment: what a rebuild needs to recreate it.

    :param distributions: ``(name, version)`` pairs, sorted (PEP 503 names).
    :param variables: the kept variables with their recorded values (secret-looking
        values inside them are already masked).
    :param redacted: names of variables whose values were withheld (never shown).
    """

    id: int
    fingerprint: str
    python: str
    implementation: str
    platform: str
    host: str
    user: str
    distributions: tuple[tuple[str, str], ...] = ()
    variables: tuple[tuple[str, str], ...] = ()
    redacted: tuple[str, ...] = ()
    facets: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pins(self) -> tuple[str, ...]:
        """``name==version`` per distribution."""
        return tuple(f"{name}=={version}" for name, version in self.distributions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "python": self.python,
            "implementation": self.implementation,
            "platform": self.platform,
            "host": self.host,
            "user": self.user,
            "requirements": list(self.pins),
            "variables": _pairs(self.variables),
            "redacted": list(self.redacted),
            "facets": dict(self.facets),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvironmentSpec:
        pins = [str(p).partition("==") for p in data.get("requirements", [])]
        return cls(
            id=int(data["id"]),
            fingerprint=str(data["fingerprint"]),
            python=str(data["python"]),
            implementation=str(data["implementation"]),
            platform=str(data["platform"]),
            host=str(data["host"]),
            user=str(data["user"]),
            distributions=tuple((name, version) for name, _, version in pins),
            variables=tuple(sorted((str(k), str(v)) for k, v in data.get("variables", {}).items())),
            redacted=tuple(data.get("redacted", [])),
            facets=dict(data.get("facets", {})),
        )


@dataclass(frozen=True)
class Rerun:
    """How to run a step again.

    :param kind: ``dpt-run`` (a command ``dpt reproduce --run`` can re-run under
        ``dpt run``), ``airflow`` / ``dagster`` / ``prefect`` (the orchestrator's own
        command; only the orchestrator can run it), or ``none`` (nothing recorded says how).
    :param argv: the command, one argument per item (empty for ``none``). A
        ``{placeholder}`` argument stands for something dpt does not know (see ``needs``).
    :param cwd: the directory to run it from, when it matters and is known.
    :param env: variables to set for it (``AIRFLOW_HOME``...), as recorded.
    :param unit: the UUID of the run that is re-run: the step itself, or the
        ``dpt run`` / flow run that ran it (several steps may share one).
    :param needs: ``{placeholder: what to put there}`` for arguments dpt does not know.
    :param note: what the command does and does not do.
    """

    kind: RerunKind
    unit: str
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    needs: tuple[tuple[str, str], ...] = ()
    note: str | None = None

    @property
    def shell(self) -> str:
        """The command as one shell line (variables first); empty for ``none``."""
        import shlex

        if not self.argv:
            return ""
        parts = [f"{k}={shlex.quote(v)}" for k, v in self.env]
        parts += [a if a.startswith("{") and a.endswith("}") else shlex.quote(a) for a in self.argv]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "unit": self.unit,
            "argv": list(self.argv),
            "shell": self.shell,
            "cwd": self.cwd,
            "env": _pairs(self.env),
            "needs": _pairs(self.needs),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rerun:
        return cls(
            kind=data["kind"],
            unit=str(data["unit"]),
            argv=tuple(data.get("argv", [])),
            cwd=data.get("cwd"),
            env=tuple((str(k), str(v)) for k, v in data.get("env", {}).items()),
            needs=tuple((str(k), str(v)) for k, v in data.get("needs", {}).items()),
            note=data.get("note"),
        )


@dataclass(frozen=True)
class RunRef:
    """The recorded run a step is."""

    id: int
    uuid: str
    orchestrator: str
    job: str
    task: str | None
    status: str
    external_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "orchestrator": self.orchestrator,
            "job": self.job,
            "task": self.task,
            "status": self.status,
            "external_id": self.external_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRef:
        return cls(
            id=int(data["id"]),
            uuid=str(data["uuid"]),
            orchestrator=str(data["orchestrator"]),
            job=str(data["job"]),
            task=data.get("task"),
            status=str(data["status"]),
            external_id=data.get("external_id"),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            parent=data.get("parent"),
        )


@dataclass(frozen=True)
class Step:
    """One run on the path from the sources to the target, in dependency order.

    :param index: 1-based position in the recipe.
    :param what: one line saying what ran.
    :param command: the recorded command line (redacted), if any.
    :param cwd: the working directory the command ran in, if known.
    :param cwd_source: how ``cwd`` was found: ``PWD`` (recorded and consistent with
        the paths), ``paths`` (from the command's relative paths and the recorded
        files), ``parent`` (the ``dpt run`` that ran this step), or None.
    :param details: what the orchestrator knows of the step: Airflow ``dag_id``,
        ``task_id``, ``run_id``, ``map_index``, ``logical_date``, ``try_number``; Prefect
        ``flow``, ``task``, ``flow_run``; Dagster ``asset_key``, ``partition``, ``run_id``.
    :param parameters: the recorded parameters.
    :param run_variables: the run's own variables (``AIRFLOW_CTX_*``, PWD...).
    :param environment: the id of its :class:`EnvironmentSpec`, None when not recorded.
    """

    index: int
    run: RunRef
    what: str
    rerun: Rerun
    command: str | None = None
    cwd: str | None = None
    cwd_source: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    run_variables: tuple[tuple[str, str], ...] = ()
    code: CodeVersion = field(default_factory=CodeVersion)
    environment: int | None = None
    inputs: tuple[ProductVersion, ...] = ()
    outputs: tuple[ProductVersion, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "run": self.run.to_dict(),
            "what": self.what,
            "command": self.command,
            "cwd": self.cwd,
            "cwd_source": self.cwd_source,
            "details": dict(self.details),
            "parameters": dict(self.parameters),
            "run_variables": _pairs(self.run_variables),
            "code": self.code.to_dict(),
            "environment": self.environment,
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "rerun": self.rerun.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            index=int(data["index"]),
            run=RunRef.from_dict(data["run"]),
            what=str(data["what"]),
            rerun=Rerun.from_dict(data["rerun"]),
            command=data.get("command"),
            cwd=data.get("cwd"),
            cwd_source=data.get("cwd_source"),
            details=dict(data.get("details", {})),
            parameters=dict(data.get("parameters", {})),
            run_variables=tuple((str(k), str(v)) for k, v in data.get("run_variables", {}).items()),
            code=CodeVersion.from_dict(data.get("code", {})),
            environment=data.get("environment"),
            inputs=tuple(ProductVersion.from_dict(i) for i in data.get("inputs", [])),
            outputs=tuple(ProductVersion.from_dict(o) for o in data.get("outputs", [])),
        )


@dataclass(frozen=True)
class Target:
    """What the recipe rebuilds: a product version, or a run's outputs.

    :param kind: ``product`` or ``run``.
    :param selection: how the version was chosen: ``on_disk``, ``newest``, ``version``
        (asked for), or ``run``.
    """

    kind: Literal["product", "run"]
    uri: str | None = None
    version: str | None = None
    content_hash: str | None = None
    run: str | None = None
    selection: str = "version"
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "uri": self.uri,
            "version": self.version,
            "content_hash": self.content_hash,
            "run": self.run,
            "selection": self.selection,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(
            kind=data["kind"],
            uri=data.get("uri"),
            version=data.get("version"),
            content_hash=data.get("content_hash"),
            run=data.get("run"),
            selection=str(data.get("selection", "version")),
            note=data.get("note"),
        )


@dataclass(frozen=True)
class Recipe:
    """Everything recorded about how to make the target again (:func:`dpt_core.recipe`).

    :param steps: in dependency order (a step comes after every step that made its inputs).
    :param sources: the input versions nothing in the recipe makes.
    :param root: the deepest directory holding every working directory, local file and
        git work tree of the recipe (a rebuild mirrors it); None without local files.
    :param problems: what would make a rebuild differ or fail, found in the record
        alone (``check()`` adds what the disk and this environment say).
    """

    target: Target
    steps: tuple[Step, ...]
    sources: tuple[ProductVersion, ...]
    environments: tuple[EnvironmentSpec, ...]
    problems: tuple[Problem, ...] = ()
    root: str | None = None
    notes: tuple[str, ...] = ()

    def environment(self, environment_id: int | None) -> EnvironmentSpec | None:
        return next((e for e in self.environments if e.id == environment_id), None)

    @property
    def outputs(self) -> tuple[ProductVersion, ...]:
        """Every version a step of the recipe writes, in step order."""
        return tuple(o for s in self.steps for o in s.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "target": self.target.to_dict(),
            "root": self.root,
            "steps": [s.to_dict() for s in self.steps],
            "sources": [s.to_dict() for s in self.sources],
            "environments": [e.to_dict() for e in self.environments],
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        return cls(
            target=Target.from_dict(data["target"]),
            steps=tuple(Step.from_dict(s) for s in data.get("steps", [])),
            sources=tuple(ProductVersion.from_dict(s) for s in data.get("sources", [])),
            environments=tuple(EnvironmentSpec.from_dict(e) for e in data.get("environments", [])),
            problems=tuple(Problem.from_dict(p) for p in data.get("problems", [])),
            root=data.get("root"),
            notes=tuple(data.get("notes", [])),
        )


@dataclass(frozen=True)
class InputCheck:
    """What the disk says now about one source of the recipe."""

    uri: str
    version: str
    recorded_hash: str | None
    state: InputState
    current_hash: str | None = None
    path: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "version": self.version,
            "path": self.path,
            "state": self.state,
            "recorded_hash": self.recorded_hash,
            "current_hash": self.current_hash,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class EnvironmentCheck:
    """A recorded environment against the current one (the shape of ``dpt env diff``).

    :param diff: ``{"fields", "packages", "variables", "facets"}``, each section with
        ``added`` / ``removed`` / ``changed`` as ``dpt env diff --json`` has them
        (``a`` the recorded environment, ``b`` the current one).
    """

    environment: int
    same: bool
    diff: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "same": self.same, "diff": dict(self.diff)}


@dataclass(frozen=True)
class CheckResult:
    """``dpt reproduce --check``: would a rebuild here give the recorded results?

    :param causes: each thing that would make it differ or fail (exit 1 when any).
    :param notes: differences that are reported but not expected to change results
        (host, user, extra packages, variables).
    """

    target: Target
    inputs: tuple[InputCheck, ...]
    environments: tuple[EnvironmentCheck, ...]
    causes: tuple[Problem, ...]
    notes: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.causes

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "ok": self.ok,
            "causes": [c.to_dict() for c in self.causes],
            "notes": [n.to_dict() for n in self.notes],
            "inputs": [i.to_dict() for i in self.inputs],
            "environments": [e.to_dict() for e in self.environments],
        }


@dataclass(frozen=True)
class ProductOutcome:
    """One recorded output version against its rebuilt file."""

    uri: str
    version: str
    step: int
    outcome: Outcome
    recorded_hash: str | None
    rebuilt_path: str | None = None
    rebuilt_hash: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "version": self.version,
            "step": self.step,
            "outcome": self.outcome,
            "recorded_hash": self.recorded_hash,
            "rebuilt_path": self.rebuilt_path,
            "rebuilt_hash": self.rebuilt_hash,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class RebuiltRun:
    """A run of the rebuild: the original run it repeats and the new run's exit code."""

    original: str
    steps: tuple[int, ...]
    argv: tuple[str, ...]
    cwd: str
    returncode: int
    run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "steps": list(self.steps),
            "argv": list(self.argv),
            "cwd": self.cwd,
            "returncode": self.returncode,
            "run": self.run,
        }


@dataclass(frozen=True)
class RebuildResult:
    """``dpt reproduce --run``: what was rebuilt and how it compares.

    :param completed: every step ran (False: ``problems`` say why it stopped, and
        nothing after that point ran).
    :param venvs: environment id -> the virtual environment made for it.
    """

    target: Target
    workdir: str
    completed: bool
    outcomes: tuple[ProductOutcome, ...] = ()
    runs: tuple[RebuiltRun, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    venvs: tuple[tuple[int, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Every step ran and every output is identical."""
        return (
            self.completed
            and not any(p.blocks_run for p in self.problems)
            and all(o.outcome == "identical" for o in self.outcomes)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "workdir": self.workdir,
            "ok": self.ok,
            "completed": self.completed,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "runs": [r.to_dict() for r in self.runs],
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
            "venvs": {str(k): v for k, v in self.venvs},
        }
