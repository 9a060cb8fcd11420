"""How each kind of step is run again: ``dpt run`` commands and the orchestrators' own.

What each adapter records, and what the re-run command is made of:

* ``dpt run`` (orchestrator ``cli``): the command line (``shlex.join`` of its argv,
  redacted), ``-p`` parameters, ``-i``/``-o`` products; the working directory is not
  a column: the run's ``PWD`` variable is taken when it agrees with the command's
  relative paths and the recorded files, else the directory those paths imply.
* Python API blocks (``python``): no command unless one was given
  (``dpt_core.invocation(..., command=sys.argv)``); a block inside ``dpt run`` is
  re-run by re-running that command, which runs every block of the script again.
* Airflow (``airflow``): job = DAG id, task = task id; parameters ``run_id``,
  ``map_index``, ``try_number``, ``logical_date``, ``params``; variables
  ``AIRFLOW_CTX_*``. Re-run: ``airflow tasks test DAG TASK RUN_ID [--map-index N]
  [-t PARAMS]`` (Airflow 3.3: the third argument is a logical date or a run id).
* Dagster (``dagster``): job = Dagster job, task = asset key; parameters ``asset_key``,
  ``partition``, ``tags``, ``code_version``; external id = run id; the run's ops config
  on the parent run. Re-run: ``dagster asset materialize --select KEY [--partition P]
  [--config-json C]`` plus the code location, which dpt does not record.
* Prefect (``prefect``): job = flow name, task = task name; a flow run records
  ``sys.argv`` as its command and its parameters. Re-run: the flow run's command (a
  task run is re-run with its whole flow run).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dpt_core.reproduce.model import EnvironmentSpec, Problem, ProblemKind, Rerun

#: The parameter a rebuild's ``dpt run`` records, naming the run it repeats.
REPRODUCES = "dpt.reproduces"
#: Text dpt puts where it removed a secret from a command line.
_REDACTION_MARKERS = ("<redacted",)
_PYTHON = re.compile(r"python(\d+(\.\d+)*)?(\.exe)?$")
#: The placeholder a Dagster command carries for the code location.
CODE_LOCATION = "{code_location}"


@dataclass(frozen=True)
class Plan:
    """What a step is and how it is run again (before it gets its place in the recipe)."""

    what: str
    rerun: Rerun
    cwd: str | None = None
    cwd_source: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _params(row: Any) -> dict[str, Any]:
    value = _json(row.parameters)
    return dict(value) if isinstance(value, Mapping) else {}


def _variables(row: Any) -> dict[str, str]:
    value = _json(row.variables)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def unit_of(row: Any, runs: Mapping[int, Any]) -> Any:
    """The run to re-run for step ``row``: itself, its ``dpt run``, its flow run, or (for
    Python blocks of one script) the first block of its process, so the script runs once."""
    if row.orchestrator == "python":
        seen = 0
        parent = runs.get(row.parent_id) if row.parent_id is not None else None
        while parent is not None and seen < 16:
            if parent.orchestrator == "cli":
                return parent
            parent = runs.get(parent.parent_id) if parent.parent_id is not None else None
            seen += 1
        process = getattr(row, "process", None)
        if process and row.command:
            siblings = [
                r
                for r in runs.values()
                if r.orchestrator == "python"
                and getattr(r, "process", None) == process
                and r.command == row.command
            ]
            return min(siblings, key=lambda r: r.id, default=row)
        return row
    if row.orchestrator == "prefect" and row.task is not None:
        parent = runs.get(row.parent_id) if row.parent_id is not None else None
        seen = 0
        while parent is not None and seen < 16:
            if parent.orchestrator == "prefect" and parent.task is None:
                return parent
            parent = runs.get(parent.parent_id) if parent.parent_id is not None else None
            seen += 1
    return row


def is_python(program: str) -> bool:
    """``python``, ``python3.11``, ``/venv/bin/python3``: a Python interpreter's name."""
    return _PYTHON.match(os.path.basename(program)) is not None


def split_command(command: str) -> list[str]:
    """The argv of a recorded command line (``shlex.join`` form). Raises ValueError."""
    return shlex.split(command)


def _path_tokens(tokens: Sequence[str]) -> list[str]:
    """Arguments that may be paths: not options, or the value of ``--opt=value``."""
    found = []
    for token in tokens:
        if token.startswith("-"):
            name, sep, value = token.partition("=")
            if sep and value:
                found.append(value)
            continue
        found.append(token)
    return found


def _relative_paths(tokens: Sequence[str]) -> list[str]:
    return [
        t
        for t in _path_tokens(tokens)
        if t and not os.path.isabs(t) and "://" not in t and "\n" not in t and " " not in t
    ]


def program_and_arguments(tokens: Sequence[str]) -> list[str]:
    """The arguments that may name files: every argument, and the program itself when it is
    given as a path (``./run.sh``, ``bin/step``) rather than looked up on PATH."""
    if not tokens:
        return []
    first = [tokens[0]] if "/" in tokens[0] else []
    return [*first, *_path_tokens(tokens[1:])]


def _looks_like_file(token: str) -> bool:
    return "/" in token or bool(re.search(r"\.[A-Za-z0-9]{1,8}$", token))


def infer_cwd(
    tokens: Sequence[str], paths: Sequence[str], pwd: str | None, repo: str | None
) -> tuple[str | None, str | None, str | None]:
    """(working directory, how it was found, a note) for a command with ``tokens``.

    ``paths`` are the local files the run read and wrote (absolute); a relative
    argument that names one of them says where the command ran. ``PWD`` is kept when it
    agrees (a shell sets it; a process started by another one inherits a stale value),
    only if it lies inside the recorded git work tree, when there is one (git's facet is
    taken from the real working directory), and only if a file the command names
    relatively is there.
    """
    candidates: dict[str, int] = {}
    for token in _relative_paths(tokens[1:]):
        rel = posixpath.normpath(token)
        if rel in (".", "") or rel.startswith(".."):
            continue
        for path in paths:
            if path.endswith("/" + rel):
                base = path[: len(path) - len(rel) - 1] or "/"
                candidates[base] = candidates.get(base, 0) + 1
    pwd_ok = bool(pwd) and os.path.isabs(str(pwd))
    why_not = ""
    if pwd_ok and repo:
        inside = os.path.normpath(str(pwd)) + "/"
        pwd_ok = inside.startswith(os.path.normpath(repo).rstrip("/") + "/")
        why_not = f"it lies outside its git work tree ({repo})"
    files = [t for t in _relative_paths(program_and_arguments(tokens)) if _looks_like_file(t)]
    if pwd_ok and files and not any(os.path.exists(os.path.join(str(pwd), f)) for f in files):
        pwd_ok = False
        why_not = f"it holds none of {', '.join(files)}"
    if candidates:
        if pwd_ok and pwd in candidates:
            return pwd, "PWD", None
        best = max(sorted(candidates), key=lambda c: candidates[c])
        note = None
        if pwd:
            note = (
                f"its PWD variable ({pwd}) is not where it ran (inherited from the process "
                f"that started it): the command's paths say {best}"
            )
        return best, "paths", note
    if pwd_ok:
        return pwd, "PWD", None
    if pwd and not pwd_ok:
        return None, None, f"its PWD variable ({pwd}) is not where it ran: {why_not}"
    return None, None, None


def _rel(path: str, cwd: str | None) -> str:
    if cwd and (path == cwd or path.startswith(cwd.rstrip("/") + "/")):
        return os.path.relpath(path, cwd)
    return path


def _problem(kind: ProblemKind, message: str, remedy: str, **kw: Any) -> Problem:
    return Problem(kind, message, remedy, **kw)


def _script_argv(tokens: list[str]) -> list[str]:
    """``sys.argv`` recorded by Python (``script.py a b``) as a command (``python script.py a b``)."""
    if tokens and tokens[0].endswith(".py") and not is_python(tokens[0]):
        return ["python", *tokens]
    return tokens


def _dpt_run_plan(
    row: Any,
    unit: Any,
    runs: Mapping[int, Any],
    env: EnvironmentSpec | None,
    unit_env: EnvironmentSpec | None,
    paths: Sequence[str],
    io: tuple[Sequence[str], Sequence[str]],
) -> Plan:
    under_dpt_run = unit.orchestrator == "cli" and unit.id != row.id
    # Python blocks of one script run (one process, one command): the script runs once for
    # all of them, and each block records its own inputs and outputs again.
    script_blocks = (
        sorted(
            r.id for r in runs.values() if r.orchestrator == "python" and unit_of(r, runs) is unit
        )
        if unit.orchestrator == "python"
        else []
    )
    if row.orchestrator == "cli":
        what = f"dpt run {row.job!r}: {row.command or '(no command)'}"
    else:
        what = f"Python block {row.job!r}" + (f"/{row.task}" if row.task else "")
        if under_dpt_run:
            what += f" inside dpt run {unit.id} ({unit.command})"
        elif len(script_blocks) > 1:
            what += f" of the script run {unit.command}"
    details: dict[str, Any] = {"job": row.job, "task": row.task}
    if unit.id != row.id:
        details["unit"] = {"id": unit.id, "uuid": unit.uuid, "job": unit.job}
    command = unit.command
    if not command:
        if row.task == "track":
            message = (
                f"the versions were declared with 'dpt track' or dpt_core.track() outside any "
                f"run ({row.job!r}): what made them is not recorded"
            )
        else:
            message = (
                f"Python block {row.job!r} recorded no command (it ran from 'python -c', a "
                "notebook or the interactive interpreter, or an older dpt recorded it): dpt cannot "
                "tell what to run again"
            )
        return Plan(
            what=what,
            rerun=Rerun("none", str(unit.uuid), note="no command is recorded"),
            details=details,
            problems=(
                _problem(
                    "no_command",
                    message,
                    "run the code as a script ('python script.py ...': its command and "
                    "directory are recorded) or under 'dpt run', or give "
                    "dpt_core.invocation(..., command=[...]); meanwhile run it by hand and "
                    "compare with 'dpt reproduce --check'",
                ),
            ),
        )
    if any(marker in command for marker in _REDACTION_MARKERS):
        return Plan(
            what=what,
            rerun=Rerun("none", str(unit.uuid), note="the recorded command holds a masked secret"),
            details=details,
            problems=(
                _problem(
                    "command_redacted",
                    f"the command of run {unit.id} held a secret that dpt masked ({command}): "
                    "it cannot be re-run as recorded",
                    "run it by hand with the secret; pass secrets through the environment "
                    "(recorded redacted) rather than the command line",
                ),
            ),
        )
    try:
        tokens = split_command(command)
    except ValueError as exc:
        return Plan(
            what=what,
            rerun=Rerun("none", str(unit.uuid), note=f"unparsable command: {exc}"),
            details=details,
            problems=(
                _problem(
                    "command_unparsable",
                    f"the command of run {unit.id} cannot be split into arguments ({exc})",
                    "run it by hand",
                ),
            ),
        )
    if unit.orchestrator != "cli":
        tokens = _script_argv(tokens)
    variables = _variables(unit)
    repo = None
    known = unit_env or env
    git = known.facets.get("git") if known is not None else None
    if isinstance(git, Mapping) and git.get("repo"):
        repo = str(git["repo"])
    cwd, source, note = infer_cwd(tokens, paths, variables.get("PWD"), repo)
    problems: list[Problem] = []
    notes = [note] if note else []
    if cwd is None:
        relative = [
            t for t in _relative_paths(program_and_arguments(tokens)) if _looks_like_file(t)
        ]
        if relative:
            problems.append(
                _problem(
                    "cwd_unknown",
                    f"the command of run {unit.id} uses relative paths ({', '.join(relative)}) "
                    "and the directory it ran in is not recorded",
                    "run it from the directory that holds those files (see the recorded "
                    "paths of its inputs and outputs)",
                )
            )
    name = str(unit.job)
    inputs, outputs = io
    if len(script_blocks) > 1:
        name = os.path.basename(program_and_arguments(tokens)[0]) if tokens else name
        inputs, outputs = (), ()
    argv = ["dpt", "run", "--name", name]
    for path in inputs:
        argv += ["-i", _rel(path, cwd)]
    for path in outputs:
        argv += ["-o", _rel(path, cwd)]
    if unit.orchestrator == "cli":
        for key, value in sorted(_params(unit).items()):
            if key != REPRODUCES and isinstance(value, str):
                argv += ["-p", f"{key}={value}"]
    argv += ["-p", f"{REPRODUCES}={unit.uuid}", "--", *tokens]
    rerun_note = "re-runs the command under 'dpt run', so the rebuild is recorded"
    if under_dpt_run:
        rerun_note += f"; it runs every block of run {unit.id}'s script again"
    elif len(script_blocks) > 1:
        rerun_note += f"; it runs every block of the script again ({len(script_blocks)} here)"
    return Plan(
        what=what,
        rerun=Rerun("dpt-run", str(unit.uuid), tuple(argv), cwd=cwd, note=rerun_note),
        cwd=cwd,
        cwd_source=source if cwd else None,
        details=details,
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _env_value(env: EnvironmentSpec | None, name: str) -> str | None:
    if env is None:
        return None
    return dict(env.variables).get(name)


def _orchestrator_only(kind: str, what: str, shell: str) -> Problem:
    how = f"run '{shell}' where {kind} runs" if shell else f"re-run it from {kind}"
    return _problem(
        "orchestrator_only",
        f"{what}: only {kind} can run it again ('dpt reproduce --run' re-runs 'dpt run' and "
        "Python API steps)",
        f"{how}; '--export DIR' writes the command into steps.sh",
    )


def _airflow_plan(row: Any, env: EnvironmentSpec | None) -> Plan:
    params = _params(row)
    dag_id, task_id = str(row.job), str(row.task or "")
    run_id = params.get("run_id")
    map_index = params.get("map_index", -1)
    logical_date = params.get("logical_date")
    details = {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": map_index,
        "logical_date": logical_date,
        "try_number": params.get("try_number"),
    }
    what = f"Airflow task {dag_id}.{task_id}"
    if isinstance(map_index, int) and map_index >= 0:
        what += f"[{map_index}]"
    what += f" of DAG run {run_id}"
    if logical_date:
        what += f" (logical date {logical_date})"
    if params.get("try_number") is not None:
        what += f", try {params['try_number']}"
    argv = ["airflow", "tasks", "test", dag_id, task_id]
    when = run_id or logical_date
    if when:
        argv.append(str(when))
    if isinstance(map_index, int) and map_index >= 0:
        argv += ["--map-index", str(map_index)]
    task_params = params.get("params")
    if isinstance(task_params, Mapping) and task_params:
        text = json.dumps(task_params, sort_keys=True)
        if not any(marker in text for marker in _REDACTION_MARKERS):
            argv += ["-t", text]
    home = _env_value(env, "AIRFLOW_HOME")
    note = (
        "Airflow runs the task again in this process, without checking dependencies or "
        "recording state; the DAG must still define the task. With a run id, the recorded "
        f"DAG run (and its conf) is reused; if Airflow no longer has it, give the logical "
        f"date ({logical_date}) instead"
    )
    if row.code_version:
        note += f"; the DAG bundle version was {row.code_version}"
    rerun = Rerun(
        "airflow",
        str(row.uuid),
        tuple(argv),
        env=(("AIRFLOW_HOME", home),) if home else (),
        note=note,
    )
    return Plan(
        what=what,
        rerun=rerun,
        details=details,
        problems=(_orchestrator_only("Airflow", f"{what}", rerun.shell),),
    )


def _dagster_plan(row: Any, runs: Mapping[int, Any], env: EnvironmentSpec | None) -> Plan:
    params = _params(row)
    asset_key = str(params.get("asset_key") or row.task or "")
    partition = params.get("partition")
    run = runs.get(row.parent_id) if row.parent_id is not None else None
    config = _params(run).get("config") if run is not None else None
    details = {
        "asset_key": asset_key,
        "partition": partition,
        "run_id": row.external_id,
        "job": row.job,
        "code_version": params.get("code_version"),
    }
    what = f"Dagster asset {asset_key}"
    if partition is not None:
        what += f" partition {partition}"
    what += f" in run {row.external_id} (job {row.job})"
    argv = ["dagster", "asset", "materialize", "--select", asset_key]
    if partition is not None:
        argv += ["--partition", str(partition)]
    if isinstance(config, Mapping) and config:
        argv += ["--config-json", json.dumps({"ops": config}, sort_keys=True)]
    argv.append(CODE_LOCATION)
    home = _env_value(env, "DAGSTER_HOME")
    rerun = Rerun(
        "dagster",
        str(row.uuid),
        tuple(argv),
        env=(("DAGSTER_HOME", home),) if home else (),
        needs=(
            (
                CODE_LOCATION,
                "the code location: '-f FILE' or '-m MODULE' naming the Definitions "
                "(dpt records the asset key, partition, run tags and config, not where the "
                "Definitions live)",
            ),
        ),
        note=(
            "Dagster materialises the asset again as a new run in the instance of "
            "DAGSTER_HOME; the dpt sensor records it when it next ticks"
        ),
    )
    return Plan(
        what=what,
        rerun=rerun,
        details=details,
        problems=(_orchestrator_only("Dagster", what, rerun.shell),),
    )


def _prefect_plan(row: Any, unit: Any) -> Plan:
    flow_params = _params(unit)
    details: dict[str, Any] = {
        "flow": row.job,
        "task": row.task,
        "flow_run": unit.external_id,
        "task_run": row.external_id if row.task is not None else None,
        "flow_parameters": flow_params,
    }
    if row.task is not None:
        what = f"Prefect task {row.task!r} of flow {row.job!r} (flow run {unit.external_id})"
    else:
        what = f"Prefect flow {row.job!r} (flow run {row.external_id})"
    if flow_params:
        what += f" with parameters {json.dumps(flow_params, sort_keys=True)}"
    argv: list[str] = []
    cwd = _variables(unit).get("PWD")
    if unit.command and not any(m in unit.command for m in _REDACTION_MARKERS):
        try:
            argv = _script_argv(split_command(unit.command))
        except ValueError:
            argv = []
    note = (
        f"calls flow {row.job!r} again (the whole flow run: Prefect cannot run one task of a "
        f"past flow run alone) with the parameters its script passes; recorded parameters: "
        f"{json.dumps(flow_params, sort_keys=True)}. In Python: call the @flow function "
        "with those parameters"
    )
    if row.code_version or unit.code_version:
        note += f"; flow version {unit.code_version or row.code_version}"
    rerun = Rerun("prefect", str(unit.uuid), tuple(argv), cwd=cwd if argv else None, note=note)
    return Plan(
        what=what,
        rerun=rerun,
        cwd=rerun.cwd,
        cwd_source="PWD" if rerun.cwd else None,
        details=details,
        problems=(_orchestrator_only("Prefect", what, rerun.shell),),
    )


def plan(
    row: Any,
    unit: Any,
    runs: Mapping[int, Any],
    env: EnvironmentSpec | None,
    unit_env: EnvironmentSpec | None,
    paths: Sequence[str],
    io: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> Plan:
    """What ``row`` is and how it runs again.

    :param unit: the run to re-run (:func:`unit_of`).
    :param paths: local files the unit's steps read and wrote (to place relative paths).
    :param io: the unit's own ``-i`` / ``-o`` products (paths or URIs) for ``dpt run``.
    """
    if row.orchestrator in ("cli", "python"):
        return _dpt_run_plan(row, unit, runs, env, unit_env, paths, io)
    if row.orchestrator == "airflow":
        return _airflow_plan(row, env)
    if row.orchestrator == "dagster":
        return _dagster_plan(row, runs, env)
    if row.orchestrator == "prefect":
        return _prefect_plan(row, unit)
    what = f"{row.orchestrator} run {row.job!r}" + (f"/{row.task}" if row.task else "")
    return Plan(
        what=what,
        rerun=Rerun(
            "none", str(row.uuid), note=f"dpt knows no re-run command for {row.orchestrator}"
        ),
        details={"job": row.job, "task": row.task, "external_id": row.external_id},
        problems=(_orchestrator_only(str(row.orchestrator), what, ""),),
    )
