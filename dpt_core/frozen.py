"""The base of the small frozen value classes every recording process builds.

Events, settings and file facts are defined in every process that records, and a
``@dataclass`` costs that process about 0.6 ms per class to generate and compile its
methods (15 classes were 10 ms of the ~70 ms a fresh process paid to record one
invocation; see docs/performance.md). :class:`Frozen` gives them the same behaviour
from one base class instead: the fields are the class's ``__slots__``, each set once
by the class's own ``__init__`` (with :data:`set_field`); equality, hash, ``repr``,
:meth:`Frozen.replace` and :meth:`Frozen.to_dict` come from the fields, and
assigning to a field raises :class:`FrozenInstanceError`.

Classes off the recording path (query results, the server's, ``dpt reproduce``'s) stay
dataclasses.
"""

from __future__ import annotations

from typing import Any, NoReturn, Self

#: Sets a field of a :class:`Frozen` in its ``__init__`` (``set_field(self, "name", value)``).
set_field = object.__setattr__


class FrozenInstanceError(AttributeError):
    """A field of a frozen value was assigned or deleted."""


class Frozen:
    """A value whose fields are its class's ``__slots__``, set once by its ``__init__``."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Frozen)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of a frozen value")

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenInstanceError(f"cannot delete field {name!r} of a frozen value")

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle go through __init__
        return (_rebuild, (type(self), self.to_dict(recurse=False)))

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (field name -> value); an unknown name raises TypeError."""
        return type(self)(**{**self.to_dict(recurse=False), **changes})

    def to_dict(self, *, recurse: bool = True) -> dict[str, Any]:
        """``{field: value}``; with ``recurse``, nested values and those in lists, tuples and
        dicts as dicts too (as ``dataclasses.asdict`` does)."""
        if not recurse:
            return {name: getattr(self, name) for name in self.__slots__}
        return {name: _as_data(getattr(self, name)) for name in self.__slots__}


def _as_data(value: Any) -> Any:
    if isinstance(value, Frozen):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return type(value)(_as_data(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_data(v) for k, v in value.items()}
    return value


def _rebuild(cls: type[Frozen], fields: dict[str, Any]) -> Frozen:
    return cls(**fields)
