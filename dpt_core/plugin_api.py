"""What dpt plugins and orchestrator adapters import (not needed in pipeline code).

- :data:`hookimpl` marks a plugin's hook implementations (see :mod:`dpt_core.hookspecs`;
  also importable as ``dpt_core.hookimpl``).
- :class:`CurrentContext` is what a ``dpt_current_context`` implementation returns.
- :class:`Guard` and :func:`strict_mode` apply dpt's one rule, "tracking never fails the
  user's pipeline" (log once and go on; raise only under ``DPT_STRICT=1``).
- :func:`jsonable` turns any value into JSON-able data (what is stored as parameters
  or metadata).
- :func:`reset` forgets the cached settings, store, environment and tracker (after
  changing ``DPT_*`` variables in the same process, as tests do).

These names were importable from ``dpt_core`` itself until 0.1; they still are, with a
``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from dpt_core.events import CurrentContext
from dpt_core.guard import Guard, strict_mode
from dpt_core.hookspecs import hookimpl
from dpt_core.tracker import jsonable, reset

__all__ = ["CurrentContext", "Guard", "hookimpl", "jsonable", "reset", "strict_mode"]
