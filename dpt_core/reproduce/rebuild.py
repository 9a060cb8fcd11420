"""``dpt reproduce --run WORKDIR``: rebuild a recipe of ``dpt run`` and Python API steps.

Layout of WORKDIR::

    tree/     a mirror of the recipe's root: the code (``git archive`` of the recorded
              commit, or the files the commands name), the sources (copied after
              their hash check), and everything the steps write
    venvs/    one virtual environment per recorded environment
    logs/     each re-run's output

Nothing starts before everything that would stop the rebuild is known (a step
only an orchestrator can run, a changed input, a dirty tree, a distribution that
cannot be installed...): the rebuild runs completely or not at all, except when a
step itself fails, which stops it there and says so.

The virtual environments (see docs/reproduce.md, "What --run installs"):

* ``overlay`` (the default): a venv made with this interpreter (the recorded
  Python must have the same major.minor), into which only the recorded
  distributions this interpreter lacks or has at another version are installed
  (exact pins, ``--no-deps``); the rest is shared from this interpreter's
  site-packages through a ``.pth`` file, behind the venv's own. The recorded
  environment of a ``dpt run`` step is the whole environment of the dpt process
  (dozens of packages): an overlay installs only the differences.
* ``fresh``: every recorded distribution installed (exact pins, ``--no-deps``) in
  a venv of the recorded Python (uv finds or installs it); dpt itself comes from
  this installation.

Either way the venv is checked afterwards: every recorded pin must be what its
Python sees, or nothing runs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dpt_core.config import Settings, get_settings
from dpt_core.reproduce import commands
from dpt_core.reproduce.check import _input_problems, check_files
from dpt_core.reproduce.model import (
    EnvironmentSpec,
    Outcome,
    Problem,
    ProductOutcome,
    ProductVersion,
    RebuildResult,
    RebuiltRun,
    Recipe,
    Step,
)

Progress = Callable[[str], None]
#: Variables of this process a re-run does not inherit: they would point it at this
#: interpreter's packages or at a run that is not the rebuild's.
_DROPPED_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "DPT_RUN_INVOCATION",
    "PYTHONSTARTUP",
)
#: This project's distribution: a rebuild uses the installed dpt, never an index's.
_DPT = "data-product-tracker"
_INSTALL_TIMEOUT = 3600.0


@dataclass(frozen=True)
class RebuildOptions:
    """How ``--run`` builds its environments.

    :param venv: ``overlay`` or ``fresh`` (see the module docstring).
    :param installer: ``uv``, ``pip``, or ``auto`` (uv when on PATH).
    :param exclude: distribution names not to install (their recorded pins are named in
        the result; under ``overlay`` this interpreter's version, if any, is visible).
    :param allow_dirty: rebuild steps whose work tree was dirty with the committed code.
    """

    venv: Literal["overlay", "fresh"] = "overlay"
    installer: Literal["auto", "uv", "pip"] = "auto"
    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    exclude: tuple[str, ...] = ()
    allow_dirty: bool = False


@dataclass
class _State:
    workdir: Path
    tree: Path
    root: str | None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def mapped(self, path: str) -> str:
        """Where ``path`` (a recorded absolute path) is in the rebuild tree."""
        if self.root is None:
            return path
        if path == self.root or path.startswith(self.root.rstrip("/") + "/"):
            rel = os.path.relpath(path, self.root)
            return str(self.tree) if rel == "." else str(self.tree / rel)
        return path


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# --------------------------------------------------------------------------- preflight


def _units(recipe: Recipe) -> list[tuple[str, list[Step]]]:
    """Re-run units in the order of their first step: ``(unit uuid, steps)``."""
    order: list[str] = []
    steps: dict[str, list[Step]] = {}
    for step in recipe.steps:
        unit = step.rerun.unit
        if unit not in steps:
            order.append(unit)
            steps[unit] = []
        steps[unit].append(step)
    return [(u, steps[u]) for u in order]


def _interleaved(units: Sequence[tuple[str, list[Step]]]) -> list[Problem]:
    """A unit whose steps need a later unit's outputs cannot run as one command."""
    first = {u: min(s.index for s in steps) for u, steps in units}
    unit_of = {s.index: u for u, steps in units for s in steps}
    found = []
    for unit, steps in units:
        for step in steps:
            for product in step.inputs:
                maker = product.made_by
                if maker is None or unit_of.get(maker) == unit:
                    continue
                if first[unit_of[maker]] > first[unit]:
                    found.append(
                        Problem(
                            "interleaved",
                            f"step {step.index} needs step {maker}'s output {product.uri}, but "
                            f"its command (which also runs step {first[unit]}) comes first",
                            "rebuild the products one at a time with 'dpt reproduce PRODUCT'",
                            step.index,
                            product.uri,
                        )
                    )
    return found


def _preflight(recipe: Recipe, options: RebuildOptions, settings: Settings) -> list[Problem]:
    blocking = []
    for problem in recipe.problems:
        if not problem.blocks_run:
            continue
        if problem.kind == "dirty_tree" and options.allow_dirty:
            continue
        blocking.append(problem)
    checks = check_files(recipe.sources, settings)
    causes, _ = _input_problems(checks, recipe)
    blocking += causes
    blocking += _interleaved(_units(recipe))
    return blocking


# --------------------------------------------------------------------------- code and inputs


def _extract_commit(repo: str, commit: str, dest: Path) -> str | None:
    """``git archive`` of ``commit`` into ``dest``; None, or what went wrong."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.Popen(
            ["git", "-C", repo, "archive", "--format=tar", commit],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        return f"git cannot run: {exc.strerror}"
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            archive.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        proc.kill()
        proc.wait()
        return f"cannot unpack commit {commit} of {repo}: {exc}"
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        return err.strip().splitlines()[-1] if err.strip() else f"git archive {commit} failed"
    return None


def _command_files(step: Step) -> list[str]:
    """Existing files a re-run's command names (relative to its directory, or absolute)."""
    argv = list(step.rerun.argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    found = []
    for token in commands.program_and_arguments(command):
        if "://" in token or "\n" in token:
            continue
        path = token if os.path.isabs(token) else os.path.join(step.rerun.cwd or "", token)
        if step.rerun.cwd is None and not os.path.isabs(token):
            continue
        path = os.path.normpath(path)
        if os.path.isfile(path):
            found.append(path)
    return found


def _place_code(
    state: _State, units: Sequence[tuple[str, list[Step]]], products: set[str], allow_dirty: bool
) -> None:
    extracted: dict[str, str] = {}
    for _unit, steps in units:
        step = steps[0]
        code = step.code
        copied: list[str] = []
        if code.repo and code.commit:
            previous = extracted.get(code.repo)
            if previous is not None and previous != code.commit:
                state.problems.append(
                    Problem(
                        "code_unavailable",
                        f"steps ran two commits of {code.repo} ({previous[:12]}, "
                        f"{code.commit[:12]}): one rebuild tree holds one",
                        "rebuild each product on its own with 'dpt reproduce PRODUCT'",
                        step.index,
                        code.repo,
                    )
                )
                return
            if previous is None:
                error = _extract_commit(code.repo, code.commit, Path(state.mapped(code.repo)))
                if error is not None:
                    state.problems.append(
                        Problem(
                            "code_unavailable",
                            f"the code of step {step.index} (commit {code.commit} of "
                            f"{code.repo}) cannot be taken: {error}",
                            f"fetch commit {code.commit}"
                            + (f" from {code.remote}" if code.remote else ""),
                            step.index,
                            code.repo,
                        )
                    )
                    return
                extracted[code.repo] = code.commit
                note = f"code of {code.repo}: commit {code.commit[:12]} (git archive)"
                if code.dirty and allow_dirty:
                    note += ", without the uncommitted changes the step ran with (--allow-dirty)"
                state.notes.append(note)
        for path in _command_files(step):
            if path in products:
                continue
            target = Path(state.mapped(path))
            if target.exists() or str(target) == path:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(path)
        if copied:
            why = "not in the recorded commit" if code.commit else "the code is not under git"
            state.notes.append(
                f"step {step.index}: copied {', '.join(copied)} as they are now ({why}: "
                "dpt cannot tell whether they are what ran)"
            )


def _place_sources(state: _State, recipe: Recipe) -> None:
    for source in recipe.sources:
        if source.path is None:
            state.notes.append(f"input {source.uri} is read where it is (not a local file)")
            continue
        target = Path(state.mapped(source.path))
        if str(target) == source.path:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(source.path):
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source.path, target, symlinks=True)
        else:
            shutil.copy2(source.path, target)


# --------------------------------------------------------------------------- environments


def _installer(options: RebuildOptions) -> str:
    if options.installer != "auto":
        return options.installer
    return "uv" if shutil.which("uv") else "pip"


def _index_args(options: RebuildOptions) -> list[str]:
    args: list[str] = []
    if options.index_url:
        args += ["--index-url", options.index_url]
    for link in options.find_links:
        args += ["--find-links", link]
    if options.no_index:
        args.append("--no-index")
    return args


def _run(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, check=False, timeout=_INSTALL_TIMEOUT, **kw
    )


def _last_lines(text: str, count: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-count:])


def _site_dirs() -> list[str]:
    """This interpreter's site-packages directories (what an overlay shares)."""
    import site

    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _dpt_lib(workdir: Path) -> Path:
    """A directory holding only dpt (links to this installation's package and metadata)."""
    import importlib.metadata

    import dpt_core

    lib = workdir / "venvs" / "dpt-lib"
    lib.mkdir(parents=True, exist_ok=True)
    package = Path(dpt_core.__file__).resolve().parent
    link = lib / "dpt_core"
    if not link.exists():
        link.symlink_to(package, target_is_directory=True)
    try:
        dist = importlib.metadata.distribution(_DPT)
    except importlib.metadata.PackageNotFoundError:
        return lib
    meta = getattr(dist, "_path", None)
    if meta is not None and Path(meta).is_dir():
        target = lib / Path(meta).name
        if not target.exists():
            target.symlink_to(Path(meta).resolve(), target_is_directory=True)
    return lib


def _find_python(version: str) -> str | None:
    """An interpreter of exactly ``version`` (this one, or ``pythonX.Y`` on PATH)."""
    if platform.python_version() == version:
        return sys.executable
    major_minor = ".".join(version.split(".")[:2])
    found = shutil.which(f"python{major_minor}")
    if found is None:
        return None
    done = _run([found, "-c", "import platform; print(platform.python_version())"])
    return found if done.returncode == 0 and done.stdout.strip() == version else None


def _visible_distributions(python: str) -> dict[str, str] | None:
    code = (
        "import json; from dpt_core.environment import installed_distributions as d; "
        "print(json.dumps(dict(d())))"
    )
    done = _run([python, "-c", code], env=_child_env(None, None))
    if done.returncode != 0:
        return None
    value = json.loads(done.stdout.strip().splitlines()[-1])
    return {str(k): str(v) for k, v in value.items()}


def _make_venv(
    spec: EnvironmentSpec | None,
    path: Path,
    options: RebuildOptions,
    state: _State,
    progress: Progress | None,
) -> str | None:
    """Create the venv for ``spec``; its Python, or None after a problem was recorded."""
    installer = _installer(options)
    label = f"environment {spec.id}" if spec is not None else "this environment"
    recorded = dict(spec.distributions) if spec is not None else {}
    excluded = {_normalise(n) for n in options.exclude}
    mode = options.venv
    here = platform.python_version()
    if spec is not None and spec.implementation != platform.python_implementation():
        state.problems.append(
            Problem(
                "python_unavailable",
                f"{label} ran {spec.implementation}, this is {platform.python_implementation()}",
                f"run dpt reproduce with a {spec.implementation} {spec.python} interpreter",
                subject=spec.implementation,
            )
        )
        return None
    python: str | None = sys.executable
    if spec is not None and mode == "overlay":
        if spec.python.split(".")[:2] != here.split(".")[:2]:
            state.problems.append(
                Problem(
                    "python_unavailable",
                    f"{label} ran Python {spec.python}; an overlay shares this interpreter's "
                    f"packages, which is Python {here}",
                    "use '--venv fresh' (with uv, which finds or installs Python "
                    f"{spec.python}), or run dpt reproduce under Python {spec.python}",
                    subject=spec.python,
                )
            )
            return None
        if spec.python != here:
            state.notes.append(f"{label} ran Python {spec.python}; the rebuild runs {here}")
    if spec is not None and mode == "fresh":
        python = _find_python(spec.python)
        if python is None and installer != "uv":
            state.problems.append(
                Problem(
                    "python_unavailable",
                    f"{label} ran Python {spec.python}, which is not on this machine "
                    f"(python{'.'.join(spec.python.split('.')[:2])} on PATH, or this one)",
                    f"install Python {spec.python}, or put uv on PATH (it can install it)",
                    subject=spec.python,
                )
            )
            return None
    _say(progress, f"creating {path} ({mode}, {installer})")
    if installer == "uv":
        wanted_python = python or (spec.python if spec is not None else sys.executable)
        made = _run(["uv", "venv", "--quiet", "--python", wanted_python, str(path)])
    else:
        made = _run([python or sys.executable, "-m", "venv", str(path)])
    if made.returncode != 0:
        state.problems.append(
            Problem(
                "python_unavailable",
                f"cannot create a virtual environment for {label}: "
                f"{_last_lines(made.stderr or made.stdout)}",
                f"install Python {spec.python if spec else here}, then try again",
                subject=spec.python if spec else here,
            )
        )
        return None
    venv_python = str(path / "bin" / "python")
    site_dir = _run(
        [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    shared: dict[str, str] = {}
    if mode == "overlay":
        from dpt_core.environment import installed_distributions

        shared = dict(installed_distributions(_site_dirs()))
    wanted = {
        name: version
        for name, version in recorded.items()
        if name != _DPT and name not in excluded and shared.get(name) != version
    }
    if excluded & set(recorded):
        state.notes.append(
            f"{label}: not installed (--exclude): "
            + ", ".join(f"{n}=={recorded[n]}" for n in sorted(excluded & set(recorded)))
        )
    if _DPT in recorded:
        import importlib.metadata

        try:
            mine = importlib.metadata.version(_DPT)
        except importlib.metadata.PackageNotFoundError:
            mine = "unknown"
        if mine != recorded[_DPT]:
            state.notes.append(
                f"{label} recorded {_DPT} {recorded[_DPT]}; the rebuild records with {mine}"
            )
    if wanted:
        pins = [f"{n}=={v}" for n, v in sorted(wanted.items())]
        _say(progress, f"installing {len(pins)} distribution(s) into {path}")
        if not _install(venv_python, pins, installer, options, state, label):
            return None
    pth = Path(site_dir) / "_dpt_reproduce.pth"
    if mode == "overlay":
        lines = [f"import site; site.addsitedir({d!r})" for d in _site_dirs()]
        state.notes.append(
            f"{label}: {len(wanted)} distribution(s) installed, the rest shared from "
            f"{', '.join(_site_dirs())} (overlay)"
        )
    else:
        lines = [str(_dpt_lib(state.workdir))]
        state.notes.append(f"{label}: {len(wanted)} distribution(s) installed (fresh)")
    pth.write_text("\n".join(lines) + "\n")
    seen = _visible_distributions(venv_python)
    if seen is None:
        state.problems.append(
            Problem(
                "environment_mismatch",
                f"the virtual environment for {label} cannot import dpt",
                "use '--venv overlay', or install data-product-tracker into it",
            )
        )
        return None
    wrong = {
        n: v for n, v in recorded.items() if n != _DPT and n not in excluded and seen.get(n) != v
    }
    for name, version in sorted(wrong.items()):
        state.problems.append(
            Problem(
                "environment_mismatch",
                f"{name}=={version} was installed for {label}, but its Python sees "
                f"{seen.get(name, 'no ' + name)}",
                "use '--venv fresh', or --exclude it",
                subject=name,
            )
        )
    if wrong:
        return None
    extra = sorted(set(seen) - set(recorded) - {_DPT})
    if extra:
        state.notes.append(
            f"{label}: {len(extra)} distribution(s) visible that it did not have "
            f"({', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''})"
        )
    return venv_python


def _install(
    python: str,
    pins: Sequence[str],
    installer: str,
    options: RebuildOptions,
    state: _State,
    label: str,
) -> bool:
    index = _index_args(options)
    if installer == "uv":
        base = ["uv", "pip", "install", "--quiet", "--python", python, "--no-deps", *index]
    else:
        base = [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            *index,
        ]
    done = _run([*base, *pins])
    if done.returncode == 0:
        return True
    output = f"{done.stdout}\n{done.stderr}"
    named = [p for p in pins if _mentions(output, p)]
    if not named:  # find which ones, one at a time
        named = [p for p in pins if _run([*base, p]).returncode != 0]
    where = " ".join(index) or "the default index"
    for pin in named or pins:
        name = pin.partition("==")[0]
        state.problems.append(
            Problem(
                "not_installable",
                f"{pin} (recorded for {label}) cannot be installed from {where}: "
                f"{_last_lines(output, 2)}",
                f"give an index or a directory that has it (--index-url, --find-links), or "
                f"--exclude {name} to rebuild without it (the result may then differ)",
                subject=pin,
            )
        )
    return False


def _mentions(output: str, pin: str) -> bool:
    name, _, version = pin.partition("==")
    pattern = re.escape(name).replace(r"\-", "[-_.]")
    return re.search(rf"(?i)\b{pattern}\b[^\n]*{re.escape(version)}", output) is not None


# --------------------------------------------------------------------------- running


def _child_env(venv_python: str | None, cwd: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_VARIABLES}
    if venv_python is not None:
        bin_dir = str(Path(venv_python).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = str(Path(bin_dir).parent)
    if cwd is not None:
        env["PWD"] = cwd
    return env


def _map_token(token: str, state: _State) -> str:
    if os.path.isabs(token):
        return state.mapped(token)
    if token.startswith("-"):
        name, sep, value = token.partition("=")
        if sep and os.path.isabs(value):
            return f"{name}={state.mapped(value)}"
    return token


def _argv(step: Step, venv_python: str, state: _State) -> list[str]:
    """The recipe's ``dpt run`` command, moved into the tree and onto the venv's Python."""
    argv = list(step.rerun.argv)
    split = argv.index("--")
    options, command = argv[2:split], argv[split + 1 :]
    mapped_options = []
    for index, token in enumerate(options):
        previous = options[index - 1] if index else ""
        mapped_options.append(_map_token(token, state) if previous in ("-i", "-o") else token)
    if command and commands.is_python(command[0]):
        if os.path.isabs(command[0]) or command[0] != "python":
            state.notes.append(
                f"step {step.index}: {command[0]} replaced by the rebuild's {venv_python}"
            )
        command[0] = venv_python
    command = [command[0], *(_map_token(t, state) for t in command[1:])] if command else []
    return [venv_python, "-m", "dpt_core.cli", "run", *mapped_options, "--", *command]


def _file_state(path: str | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def _new_run(original: str, job: str) -> str | None:
    """The UUID of the run the rebuild's ``dpt run`` recorded for ``original``."""
    from dpt_core.store.queries import list_runs

    try:
        from dpt_core.store.plugin import current_store

        engine = current_store(get_settings()).engine
        for run in list_runs(engine, orchestrator="cli", job=job, limit=20):
            if (run.get("parameters") or {}).get(commands.REPRODUCES) == original:
                return str(run["uuid"])
    except Exception:  # the comparison does not depend on it
        return None
    return None


def _compare(
    step: Step, state: _State, algorithm_of: Callable[[str | None], str | None]
) -> list[ProductOutcome]:
    from dpt_core.errors import DptError
    from dpt_core.hashing import hash_file

    outcomes = []
    for out in step.outputs:

        def result(
            outcome: Outcome,
            path: str | None = None,
            now: str | None = None,
            detail: str | None = None,
            out: ProductVersion = out,
        ) -> ProductOutcome:
            return ProductOutcome(
                out.uri, out.version, step.index, outcome, out.content_hash, path, now, detail
            )

        if out.path is None:
            outcomes.append(result("not_compared", detail="not a local file"))
            continue
        rebuilt = state.mapped(out.path)
        if not os.path.lexists(rebuilt):
            outcomes.append(result("missing", rebuilt))
            continue
        algorithm = algorithm_of(out.content_hash)
        if algorithm is None:
            outcomes.append(result("not_compared", rebuilt, detail="no content hash was recorded"))
            continue
        try:
            now = hash_file(rebuilt, algorithm)
        except DptError as exc:
            outcomes.append(result("not_compared", rebuilt, detail=str(exc)))
            continue
        same = now == out.content_hash
        outcomes.append(result("identical" if same else "differs", rebuilt, now))
    return outcomes


def rebuild_recipe(
    recipe: Recipe,
    workdir: str | os.PathLike[str],
    options: RebuildOptions | None = None,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> RebuildResult:
    """Rebuild ``recipe`` in ``workdir`` (which must be empty or absent).

    Never raises for what the disk does: a directory that cannot be written, a file
    that cannot be copied... ends the rebuild with a ``cannot_write`` problem.
    """
    try:
        return _rebuild(recipe, workdir, options, settings=settings, progress=progress)
    except OSError as exc:
        where = exc.filename or workdir
        return RebuildResult(
            recipe.target,
            str(workdir),
            False,
            problems=(
                Problem(
                    "cannot_write",
                    f"the rebuild stopped: {where}: {exc.strerror or exc}",
                    "give a WORKDIR you can write, with room for the code, the sources and the "
                    "virtual environments",
                    subject=str(where),
                ),
            ),
        )


def _rebuild(
    recipe: Recipe,
    workdir: str | os.PathLike[str],
    options: RebuildOptions | None,
    *,
    settings: Settings | None,
    progress: Progress | None,
) -> RebuildResult:
    from dpt_core.reproduce.check import _algorithm

    options = options or RebuildOptions()
    settings = settings or get_settings()
    work = Path(workdir).absolute()
    state = _State(work, work / "tree", recipe.root)
    if work.exists() and any(work.iterdir()):
        return RebuildResult(
            recipe.target,
            str(work),
            False,
            problems=(
                Problem(
                    "workdir_not_empty",
                    f"{work} is not empty: a rebuild starts from nothing",
                    "give a new or empty directory",
                    subject=str(work),
                ),
            ),
        )
    if not recipe.steps:
        return RebuildResult(
            recipe.target,
            str(work),
            True,
            notes=(
                "the recipe has no step: nothing recorded makes the target, nothing to rebuild",
            ),
        )
    blocking = _preflight(recipe, options, settings)
    if blocking:
        return RebuildResult(recipe.target, str(work), False, problems=tuple(blocking))
    units = _units(recipe)
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir()
    state.tree.mkdir()
    products = {p.path for p in (*recipe.sources, *recipe.outputs) if p.path}
    _place_code(state, units, products, options.allow_dirty)
    if not state.problems:
        _place_sources(state, recipe)
    venvs: dict[int, str] = {}
    pythons: dict[int | None, str] = {}
    for _unit, steps in units:
        env_id = steps[0].environment
        if env_id in pythons or state.problems:
            continue
        spec = recipe.environment(env_id)
        if spec is None:
            state.notes.append(
                f"step {steps[0].index} has no recorded environment: the rebuild uses this "
                "interpreter's packages"
            )
        path = work / "venvs" / (f"env-{env_id}" if env_id is not None else "current")
        python = _make_venv(spec, path, options, state, progress)
        if python is None:
            break
        pythons[env_id] = python
        if env_id is not None:
            venvs[env_id] = str(path)
    if state.problems:
        return RebuildResult(
            recipe.target,
            str(work),
            False,
            problems=tuple(state.problems),
            notes=tuple(state.notes),
            venvs=tuple(sorted(venvs.items())),
        )
    originals = {p: _file_state(p) for p in products}
    outcomes: list[ProductOutcome] = []
    runs: list[RebuiltRun] = []
    completed = True
    for number, (unit, steps) in enumerate(units, start=1):
        first = steps[0]
        python = pythons[first.environment]
        argv = _argv(first, python, state)
        cwd = (
            state.mapped(first.rerun.cwd)
            if first.rerun.cwd
            else str(state.mapped(recipe.root or str(state.tree)))
        )
        Path(cwd).mkdir(parents=True, exist_ok=True)
        log = work / "logs" / f"step-{first.index}.log"
        _say(progress, f"step {first.index}: {' '.join(argv[4:])}")
        with log.open("w") as handle:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env=_child_env(python, cwd),
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
            )
        new_run = _new_run(unit, argv[argv.index("--name") + 1])
        runs.append(
            RebuiltRun(
                unit, tuple(s.index for s in steps), tuple(argv), cwd, done.returncode, new_run
            )
        )
        if done.returncode != 0:
            tail = _last_lines(log.read_text(errors="replace"), 1)
            state.problems.append(
                Problem(
                    "step_failed",
                    f"step {first.index} failed in the rebuild (exit code {done.returncode}): "
                    f"{tail} (full output: {log})",
                    "read the log; the steps after it did not run"
                    + (
                        f" (steps {', '.join(str(s.index) for u, ss in units[number:] for s in ss)})"
                        if number < len(units)
                        else ""
                    ),
                    first.index,
                )
            )
            completed = False
            break
        for step in steps:
            outcomes += _compare(step, state, _algorithm)
    for original, before in originals.items():
        if _file_state(original) != before:
            state.problems.append(
                Problem(
                    "original_touched",
                    f"the rebuild changed the original {original}: a step wrote outside the "
                    "rebuild tree (a path built inside the code, or a variable, not on its "
                    "command line)",
                    f"restore {original} if it mattered; make the step take its paths as arguments",
                    subject=original,
                    blocks_run=False,
                )
            )
    return RebuildResult(
        recipe.target,
        str(work),
        completed,
        outcomes=tuple(outcomes),
        runs=tuple(runs),
        problems=tuple(state.problems),
        notes=tuple(state.notes),
        venvs=tuple(sorted(venvs.items())),
    )
