"""Design-by-contract decorators for the pure core functions, checked only under test.

With ``DPT_CONTRACTS=1`` (the test suite sets it) these are ``deal``'s ``pre``,
``post`` and ``ensure``, and hypothesis-driven tests exercise them. Otherwise they
are identity decorators: production pays neither the ~30 us per call of a checked
contract nor the ~0.2 s it takes to import ``deal``.

``deal`` comes with the ``dev`` extra only: with ``DPT_CONTRACTS=1`` and no ``deal``
installed, dpt warns once and runs unchecked.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENABLED = os.environ.get("DPT_CONTRACTS", "").lower() in ("1", "true", "yes")


def _unchecked(*_args: Any, **_kwargs: Any) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return func

    return decorate


pre: Callable[..., Callable[[F], F]] = _unchecked
post: Callable[..., Callable[[F], F]] = _unchecked
ensure: Callable[..., Callable[[F], F]] = _unchecked

if ENABLED:
    try:
        import deal
    except ImportError:
        ENABLED = False
        warnings.warn(
            "DPT_CONTRACTS=1 but 'deal' is not installed: contracts are not checked "
            "(install data-product-tracker[dev], or unset DPT_CONTRACTS)",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        pre, post, ensure = deal.pre, deal.post, deal.ensure
