"""Design-by-contract decorators for the pure core functions, checked only under test.

With ``DPT_CONTRACTS=1`` (the test suite sets it) these are ``deal``'s ``pre``,
``post`` and ``ensure``, and hypothesis-driven tests exercise them. Otherwise they
are identity decorators: production pays neither the ~30 us per call of a checked
contract nor the ~0.2 s it takes to import ``deal``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENABLED = os.environ.get("DPT_CONTRACTS", "").lower() in ("1", "true", "yes")


def _unchecked(*_args: Any, **_kwargs: Any) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return func

    return decorate


if ENABLED:
    import deal

    pre: Callable[..., Callable[[F], F]] = deal.pre
    post: Callable[..., Callable[[F], F]] = deal.post
    ensure: Callable[..., Callable[[F], F]] = deal.ensure
else:
    pre = post = ensure = _unchecked
