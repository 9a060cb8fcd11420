"""The kit every orchestrator adapter is built from (public for adapter authors).

An adapter translates its orchestrator's events into :class:`~dpt_core.Tracker`
calls. What is the same in every orchestrator lives here, once:

- :class:`HostGuard` (made by :func:`host_guard`): "log and swallow unless strict
  mode" around every callback the orchestrator calls, on :class:`dpt_core.guard.Guard`.
- :func:`as_utc`: any timestamp an orchestrator hands out (naive, aware, a
  ``datetime`` subclass, epoch seconds, ISO text) as a plain UTC ``datetime``.
- :class:`RunRegistry`: a bounded, thread-safe registry of the runs a process has open
  (least recently used forgotten first), on ``cachetools.LRUCache``.
- :class:`Translator`: the base of every adapter's translator. A user's override of a
  descriptive ``get_*`` method that raises costs only that field: logged once, the
  adapter's default answers instead (raised after the hook recorded the rest, in strict
  mode); an identity method that raises costs the record it names.
- :class:`TranslatorRegistry` and :func:`load_translator`: the process's active
  translator, and a translator class named in configuration (``pkgutil.resolve_name``).
- :class:`BackgroundWork` and :func:`poll_until`: read-backs that run after the
  orchestrator's callback returned (``concurrent.futures``), and a bounded poll of an
  API that catches up with events a moment late.
- :func:`ends_without_exit_handlers`: for a task process the orchestrator ends with
  ``os._exit``, so that dpt writes there as events come.

This module imports no orchestrator, and nothing heavier than ``cachetools``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import cachetools

from dpt_core.guard import Guard, strict_mode

if TYPE_CHECKING:  # imported where used: every dpt process loads the adapters' dpt plugins
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = [
    "BackgroundWork",
    "HostGuard",
    "RunRegistry",
    "Translator",
    "TranslatorRegistry",
    "as_utc",
    "ends_without_exit_handlers",
    "host_guard",
    "load_translator",
    "poll_until",
    "variables_starting_with",
]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
P = ParamSpec("P")

# ---------------------------------------------------------------------------------------------
# The guard factory
# ---------------------------------------------------------------------------------------------


class HostGuard:
    """Runs host-glue callbacks so that a tracking failure never fails the pipeline.

    A failure is logged once per kind (``"dpt: <what> failed, <consequence>: ..."``) and
    swallowed; in strict mode (``DPT_STRICT=1``) it is raised as a
    :class:`~dpt_core.TrackingError` (a :class:`~dpt_core.DptError` as it is). Use it
    as a call wrapper or as a decorator::

        guard = host_guard("the flow goes on without it", log)
        guard("the flow run start", record_start, flow_run)   # -> result, or None

        @guard.callback("the task start")
        def on_task_start(task): ...

    :param consequence: what happens instead, for the log line.
    :param logger: where the line goes (default: the ``dpt`` logger).
    :param prefix: put before ``what`` in messages (``"recording "``).
    """

    def __init__(self, consequence: str, logger: Any = None, *, prefix: str = "") -> None:
        self.failures = Guard(consequence, logger)
        self.prefix = prefix

    def __call__(
        self,
        what: str,
        call: Callable[..., T],
        *args: Any,
        default: T | None = None,
        strict: bool | None = None,
        key: str | None = None,
        logger: Any = None,
    ) -> T | None:
        """``call(*args)``, or ``default`` when it raises (raised in strict mode).

        A translator failure :class:`Translator` held back during the call (strict mode)
        is raised here once the call has recorded the rest.
        """
        token = _held_back.set([])
        try:
            result = call(*args)
            _raise_held_back()
            return result
        except Exception as exc:
            self.failed(what, exc, strict=strict, key=key, logger=logger)
            return default
        finally:
            _held_back.reset(token)

    def failed(
        self,
        what: str,
        exc: BaseException,
        *,
        strict: bool | None = None,
        key: str | None = None,
        logger: Any = None,
    ) -> None:
        """Report a failure the caller caught itself: raise in strict mode, else log once."""
        self.failures.failed(
            f"{self.prefix}{what}",
            exc,
            strict=strict,
            key=None if key is None else f"{self.prefix}{key}",
            logger=logger,
        )

    def callback(
        self, what: str, default: Any = None
    ) -> Callable[[Callable[P, T]], Callable[P, T | None]]:
        """Decorator form: the decorated callback runs under this guard."""

        def decorate(func: Callable[P, T]) -> Callable[P, T | None]:
            @functools.wraps(func)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> T | None:
                token = _held_back.set([])
                try:
                    value = func(*args, **kwargs)
                    _raise_held_back()
                    return value
                except Exception as exc:
                    self.failed(what, exc)
                    result: T | None = default
                    return result
                finally:
                    _held_back.reset(token)

            return guarded

        return decorate

    def reset(self) -> None:
        """Log every kind of failure again (tests)."""
        self.failures.reset()


def host_guard(consequence: str, logger: Any = None, *, prefix: str = "") -> HostGuard:
    """A :class:`HostGuard`: the one wrapper an adapter puts around its host callbacks."""
    return HostGuard(consequence, logger, prefix=prefix)


# ---------------------------------------------------------------------------------------------
# Translators: a user's override that raises costs only its own field
# ---------------------------------------------------------------------------------------------

#: Translator failures held back (strict mode) until the host guard's call has recorded
#: the rest; None outside a guarded call.
_held_back: contextvars.ContextVar[list[tuple[str, BaseException]] | None] = contextvars.ContextVar(
    "dpt_translator_failures", default=None
)


class TranslatorFailed(RuntimeError):
    """A user's translator method raised; dpt recorded the rest (strict mode raises this)."""


def _raise_held_back() -> None:
    held = _held_back.get()
    if held:
        method, exc = held[0]
        held.clear()
        raise TranslatorFailed(f"the translator's {method} failed: {exc}") from exc


class Translator:
    """The base of an adapter's translator: overrides that raise cost only their field.

    An adapter declares its translator with the methods whose answer *names* what is
    recorded (a run's uuid or job, a product's URI): those are left as they are, so an
    override that raises there costs the record it would have named (a default name
    would name another run or product). Every other ``get_*`` method a subclass
    overrides is wrapped: when it raises, the failure is logged once per method
    (``dpt: the translator's get_parameters failed, dpt records the rest of the run:
    ...``) and the adapter's own implementation answers instead (or ``fallbacks[name]()``,
    e.g. no outputs rather than outputs the override meant to replace). In strict mode
    (``DPT_STRICT=1``) the failure is held back until the host guard's call has recorded
    the rest, then raised through it; outside a guarded call it is raised at once::

        class AirflowTranslator(
            Translator, identity={"get_invocation_uuid", "get_job"}, logger=log
        ): ...

    :param identity: the adapter's methods an override of which is never replaced.
    :param fallbacks: method name -> a factory of the value used instead of the
        adapter's implementation.
    :param logger: where failures are logged (the adapter's logger).
    """

    _dpt_defaults: type[Translator] | None = None
    _dpt_identity: frozenset[str] = frozenset()
    _dpt_fallbacks: dict[str, Callable[[], Any]] = {}
    _dpt_failures: HostGuard | None = None
    _dpt_logger: Any = None

    def __init_subclass__(
        cls,
        *,
        identity: Iterable[str] | None = None,
        fallbacks: dict[str, Callable[[], Any]] | None = None,
        logger: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if identity is not None or fallbacks is not None or logger is not None:
            # The adapter's own translator: its methods are the defaults.
            unknown = sorted(
                name
                for name in {*(identity or ()), *(fallbacks or {})}
                if not callable(getattr(cls, name, None))
            )
            if unknown:
                raise TypeError(f"{cls.__name__} has no method(s) {unknown} to declare")
            cls._dpt_defaults = cls
            cls._dpt_identity = frozenset(identity or ())
            cls._dpt_fallbacks = dict(fallbacks or {})
            cls._dpt_logger = logger
            cls._dpt_failures = None
            return
        defaults = cls._dpt_defaults
        if defaults is None:
            return
        for name, value in list(vars(cls).items()):
            if (
                name.startswith("get_")
                and name not in defaults._dpt_identity
                and isinstance(value, types.FunctionType)
                and callable(getattr(defaults, name, None))
            ):
                setattr(cls, name, _tolerant(defaults, name, value))


def _tolerant(defaults: type[Translator], name: str, method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: Translator, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            held = _held_back.get()
            if strict_mode():
                if held is None:
                    raise
                held.append((name, exc))
            else:
                if defaults._dpt_failures is None:
                    defaults._dpt_failures = host_guard(
                        "dpt records the rest of the run", defaults._dpt_logger
                    )
                defaults._dpt_failures.failed(f"the translator's {name}", exc, strict=False)
            fallback = defaults._dpt_fallbacks.get(name)
            if fallback is not None:
                result: T = fallback()
                return result
            answer: T = getattr(defaults, name)(self, *args, **kwargs)
            return answer

    call.__dpt_tolerant__ = True  # type: ignore[attr-defined]
    return call


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------


def as_utc(value: Any) -> dt.datetime | None:
    """A plain ``datetime`` in UTC, from what orchestrators hand out; None stays None.

    Takes a ``datetime`` (naive ones are read as UTC; subclasses such as pendulum's
    become a plain ``datetime``), epoch seconds (``int``/``float``) or ISO 8601 text.

    :raises TypeError: for anything else, naming the value.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"timestamp {value!r} is not ISO 8601: give e.g. '2026-01-31T12:00:00+00:00'"
            ) from None
        return as_utc(parsed)
    raise TypeError(
        f"cannot read {value!r} ({type(value).__name__}) as a timestamp: "
        "give a datetime, epoch seconds or ISO 8601 text"
    )


# ---------------------------------------------------------------------------------------------
# Runs open in this process
# ---------------------------------------------------------------------------------------------


class RunRegistry(Generic[K, V]):
    """What a process knows about the runs it saw, bounded: the least recently used entry
    is forgotten first once ``maxsize`` are held. Thread-safe.

    :param maxsize: most entries kept.
    """

    def __init__(self, maxsize: int = 20_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize={maxsize!r}: a registry must hold at least one run")
        self._entries: cachetools.LRUCache[K, V] = cachetools.LRUCache(maxsize=maxsize)
        self.lock = threading.RLock()

    @property
    def maxsize(self) -> int:
        return int(self._entries.maxsize)

    def get(self, key: K) -> V | None:
        with self.lock:
            return self._entries.get(key)

    def __getitem__(self, key: K) -> V:
        with self.lock:
            return self._entries[key]

    def __contains__(self, key: object) -> bool:
        with self.lock:
            return key in self._entries

    def __len__(self) -> int:
        with self.lock:
            return len(self._entries)

    def set(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key`` (replacing what was there)."""
        with self.lock:
            self._entries[key] = value

    def add(self, key: K, value: V) -> V:
        """Remember ``value`` unless ``key`` is known; the value kept (the first one wins)."""
        with self.lock:
            existing = self._entries.get(key)
            if existing is not None:
                return existing
            self._entries[key] = value
            return value

    def pop(self, key: K) -> V | None:
        with self.lock:
            return self._entries.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the entries, least recently used first."""
        with self.lock:
            return list(self._entries.items())

    def pop_where(self, predicate: Callable[[K, V], bool]) -> list[tuple[K, V]]:
        """Forget every entry ``predicate(key, value)`` holds for; those entries."""
        with self.lock:
            gone = [(k, v) for k, v in self._entries.items() if predicate(k, v)]
            for k, _ in gone:
                del self._entries[k]
            return gone

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()

    def __iter__(self) -> Iterator[K]:
        return iter([k for k, _ in self.items()])


# ---------------------------------------------------------------------------------------------
# Translators
# ---------------------------------------------------------------------------------------------


def load_translator(name: str, base: type[T], *, setting: str = "translator") -> type[T]:
    """The translator class ``name`` names (``package.module.Class`` or ``package.module:Class``).

    :param base: the adapter's translator class; the class named must be it or a subclass.
    :param setting: how the user set ``name``, for error messages (``"[dpt] translator"``).
    :raises ValueError: naming the setting, when ``name`` is not importable or names
        something else.
    """
    import pkgutil

    try:
        found = pkgutil.resolve_name(name.strip())
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"{setting} = {name!r} cannot be imported ({type(exc).__name__}: {exc}): "
            f"use 'package.module.ClassName' naming a subclass of "
            f"{base.__module__.split('.')[0]}.{base.__name__}"
        ) from exc
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(
            f"{setting} = {name!r} does not name a subclass of "
            f"{base.__module__.split('.')[0]}.{base.__name__}"
        )
    return found


class TranslatorRegistry(Generic[T]):
    """The translator an adapter uses in this process, outside its host glue too (the
    ``dpt_resolve_uri`` and ``dpt_current_context`` hooks ask it).

    :param base: the adapter's translator class (what :meth:`register` accepts).
    :param factory: makes the default translator, on first use (default: ``base()``).
    """

    def __init__(self, base: type[T], factory: Callable[[], T] | None = None) -> None:
        self.base = base
        self._factory: Callable[[], T] = factory or base
        self._active: T | None = None
        self._lock = threading.Lock()

    def register(self, translator: T) -> None:
        """Make ``translator`` the active one (the last registered wins)."""
        if not isinstance(translator, self.base):
            module = self.base.__module__.split(".")[0]
            raise TypeError(
                f"translator must be a {module}.{self.base.__name__} (or a subclass), "
                f"got {type(translator).__name__}"
            )
        with self._lock:
            self._active = translator

    def active(self) -> T:
        """The registered translator, else the default one (made once)."""
        with self._lock:
            if self._active is None:
                self._active = self._factory()
            return self._active

    def clear(self) -> None:
        with self._lock:
            self._active = None


# ---------------------------------------------------------------------------------------------
# Read-backs
# ---------------------------------------------------------------------------------------------


class BackgroundWork:
    """Work an adapter does after the orchestrator's callback returned (reading runs back
    from the orchestrator's API), on a ``ThreadPoolExecutor``.

    Each piece runs in a copy of the submitter's ``contextvars`` (orchestrators keep
    settings such as their API URL there). Like every executor's, its threads are joined
    at interpreter exit, after the queued work ran: a short-lived process does not end
    before what it saw is recorded (each piece must bound its own time).

    :param name: thread-name prefix.
    :param workers: most pieces running at once.
    """

    def __init__(self, name: str, workers: int = 4) -> None:
        self.name = name
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> Future[None]:
        context = contextvars.copy_context()
        with self._lock:
            self._collect_done()
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            future = self._executor.submit(context.run, work)
            self._pending.add(future)
        return future

    def _collect_done(self) -> None:
        """Drop finished work, keeping its errors (strict mode) for :meth:`flush` to raise."""
        for future in [f for f in self._pending if f.done()]:
            self._pending.discard(future)
            exc = None if future.cancelled() else future.exception()
            if exc is not None:
                self._errors.append(exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the pending work; True when none is left.

        The first error a piece raised (strict mode) is raised here.
        """
        from concurrent.futures import wait

        with self._lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout)
        with self._lock:
            self._collect_done()
            errors, self._errors = self._errors, []
            left = bool(self._pending)
        if errors:
            raise errors[0]
        return not left


def poll_until(
    read: Callable[[], T],
    settled: Callable[[T], bool],
    *,
    timeout: float,
    pause: float = 0.05,
    max_pause: float = 0.25,
    growth: float = 1.5,
) -> tuple[T, bool]:
    """Read until ``settled(value)`` or ``timeout`` seconds passed, pausing between reads
    (``pause``, growing by ``growth`` up to ``max_pause``).

    :returns: the last value read, and whether it settled.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if settled(value):
            return value, True
        now = time.monotonic()
        if now >= deadline:
            return value, False
        time.sleep(min(pause, deadline - now))
        pause = min(pause * growth, max_pause)


def ends_without_exit_handlers(*, flushed_by_caller: bool = False) -> None:
    """Tell dpt this process ends without running exit handlers (``os._exit``): an
    orchestrator's task process, perhaps forked from a parent that never loaded dpt,
    where dpt cannot see the fork. Nothing may be left to a background writer that the
    exit cuts short (what it had not written would wait in the spool for a later process,
    and none may come: a Kubernetes pod's spool goes with the pod). So dpt writes each
    event before the call that made it returns, as in every child it saw forked; or, with
    ``flushed_by_caller=True``, keeps its background writer (in a fork too), the caller
    promising to call :func:`dpt_core.flush` in the orchestrator's last hook before the
    exit. Call it before the process's first event, and only where the process does end
    that way."""
    from dpt_core.store.plugin import ends_without_exit_handlers as declare

    declare(flushed_by_caller=flushed_by_caller)


def variables_starting_with(prefix: str) -> dict[str, str]:
    """The process's environment variables whose names start with ``prefix`` (an
    orchestrator's ``AIRFLOW_CTX_*``, say), read without decoding every other variable:
    a hook that scans ``os.environ`` at every task try pays ~20 us for it."""
    from dpt_core.environment import variables_starting_with as found

    return found(prefix)
