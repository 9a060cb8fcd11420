"""The explorer's tests: a package, so that its ``conftest`` is ``explorer.conftest`` and
never shadows ``tests/server/conftest.py``, which the server's tests import as ``conftest``."""
