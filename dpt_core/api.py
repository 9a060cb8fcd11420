"""``@dpt_core.tracked``: each call of a function is one invocation."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast, overload

from dpt_core.tags import Tags, normalize_tags
from dpt_core.tracker import get_tracker

P = ParamSpec("P")
R = TypeVar("R")

#: What ``inputs=`` / ``outputs=`` take: one entry or a sequence of entries, each an
#: argument name of the decorated function or a literal path.
PathSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@overload
def tracked(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def tracked(
    *,
    inputs: PathSpec = (),
    outputs: PathSpec = (),
    name: str | None = None,
    tags: Tags | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tracked(
    func: Callable[P, R] | None = None,
    /,
    *,
    inputs: PathSpec = (),
    outputs: PathSpec = (),
    name: str | None = None,
    tags: Tags | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every call of the decorated function as one invocation.

    The invocation's job is ``name``, else the function's qualified name. The call's
    return value is passed through; an exception is recorded (status ``failed`` with
    the error) and raised again. Called inside another invocation (an orchestrator
    task, a ``with dpt_core.invocation()`` block, another tracked function), the new
    invocation is its child.

    ::

        @dpt_core.tracked(inputs=["raw"], outputs="out")
        def calibrate(raw: Path, out: Path, gain: float = 1.5) -> None: ...

        @dpt_core.tracked(inputs="sources", outputs=Path("summary.csv"))
        async def summarise(sources: list[Path]) -> None: ...

    :param inputs: what the call reads, recorded before the function runs.
    :param outputs: what the call writes, recorded after it returns (each output
        derives from every input), not when it raises.

        Each entry of ``inputs`` and ``outputs`` is the name of one of the function's
        parameters, whose value at the call is a path or URI, a list of them, or None
        (nothing to record); or a literal path (any string that is not a parameter
        name, or a :class:`os.PathLike`). A bare word that is no parameter is refused
        as a likely typo: write ``Path("word")`` for a file of that name.
    :param name: the job name (default: the function's ``__qualname__``).
    :param tags: ``{key: value}`` labels of every call's run (see docs/tags.md);
        checked at decoration.

    ``async def`` functions are awaited in ``async with dpt_core.invocation(...)``:
    the recording runs in a worker thread, never blocking the event loop.
    Generator functions are refused (their work runs after the call returns): wrap the
    code that consumes them in ``with dpt_core.invocation(...)`` instead.
    """

    def decorate(target: Callable[P, R]) -> Callable[P, R]:
        return cast("Callable[P, R]", _Tracked(target, inputs, outputs, name, tags).wrapper())

    if func is not None:
        return decorate(func)
    return decorate


class _Tracked:
    def __init__(
        self,
        func: Callable[..., Any],
        inputs: PathSpec,
        outputs: PathSpec,
        name: str | None,
        tags: Tags | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"@dpt_core.tracked decorates a function, not {func!r}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"@dpt_core.tracked cannot decorate the generator function "
                f"{_qualname(func)}: its work runs after the call returns. Wrap the code "
                "that consumes it in 'with dpt_core.invocation(...)' instead."
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"@dpt_core.tracked(name=...) must be a non-empty string, not {name!r}")
        self.func = func
        self.job = name or _qualname(func)
        self.tags = normalize_tags(tags) or None
        self.signature = inspect.signature(func)
        self.var_keyword = next(
            (
                p.name
                for p in self.signature.parameters.values()
                if p.kind is inspect.Parameter.VAR_KEYWORD
            ),
            None,
        )
        self.inputs = self._entries("inputs", inputs)
        self.outputs = self._entries("outputs", outputs)

    def _entries(self, what: str, spec: PathSpec) -> list[tuple[bool, Any]]:
        """``[(is_argument, argument name or literal path)]``, checked against the signature."""
        items: Sequence[Any] = [spec] if isinstance(spec, str | os.PathLike) else spec
        if not isinstance(items, Sequence):
            raise TypeError(
                f"@dpt_core.tracked({what}=...) takes a name or path, or a list of them, "
                f"not {type(items).__name__}"
            )
        entries: list[tuple[bool, Any]] = []
        for item in items:
            if isinstance(item, os.PathLike):
                entries.append((False, item))
            elif not isinstance(item, str) or not item:
                raise TypeError(
                    f"@dpt_core.tracked({what}=...): {item!r} is neither a parameter name "
                    "nor a path"
                )
            elif item in self.signature.parameters:
                kind = self.signature.parameters[item].kind
                if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    raise TypeError(
                        f"@dpt_core.tracked({what}=...): {item!r} is *{item} or **{item} "
                        f"of {_qualname(self.func)}: name a single parameter"
                    )
                entries.append((True, item))
            elif item.isidentifier() and self.var_keyword is not None:
                entries.append((True, item))  # passed through **kwargs, if at all
            elif item.isidentifier():
                raise TypeError(
                    f"@dpt_core.tracked({what}=...): {item!r} is not a parameter of "
                    f"{_qualname(self.func)} ({', '.join(self.signature.parameters) or 'none'}): "
                    f"name one of its parameters, or give a literal path as Path({item!r})"
                )
            else:
                entries.append((False, item))
        return entries

    def _targets(self, entries: list[tuple[bool, Any]], arguments: dict[str, Any]) -> list[Any]:
        targets: list[Any] = []
        extra = arguments.get(self.var_keyword, {}) if self.var_keyword else {}
        for is_argument, entry in entries:
            if not is_argument:
                targets.append(entry)
                continue
            value = arguments[entry] if entry in arguments else extra.get(entry)
            if isinstance(value, list | tuple | set | frozenset):
                targets.extend(v for v in value if v is not None)
            elif value is not None:
                targets.append(value)
        return targets

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The call's arguments by name (defaults applied); None when they do not fit the
        signature (the call then raises Python's own TypeError, with nothing recorded)."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return dict(bound.arguments)

    def wrapper(self) -> Any:
        func = self.func
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                arguments = self._bind(args, kwargs)
                if arguments is None:
                    return await func(*args, **kwargs)
                async with get_tracker().invocation(self.job, tags=self.tags) as inv:
                    inputs = self._targets(self.inputs, arguments)
                    if inputs:
                        await inv.read(*inputs)
                    result = await func(*args, **kwargs)
                    outputs = self._targets(self.outputs, arguments)
                    if outputs:
                        await inv.write(*outputs)
                return result

            return run_async

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            arguments = self._bind(args, kwargs)
            if arguments is None:
                return func(*args, **kwargs)
            with get_tracker().invocation(self.job, tags=self.tags) as inv:
                inputs = self._targets(self.inputs, arguments)
                if inputs:
                    inv.read(*inputs)
                result = func(*args, **kwargs)
                outputs = self._targets(self.outputs, arguments)
                if outputs:
                    inv.write(*outputs)
            return result

        return run


def _qualname(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or func)
