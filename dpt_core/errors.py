"""The dpt error hierarchy.

Library code raises these; only the CLI turns them into one line on stderr and
exit code 2 (bad input) or 1 (a command that failed). Every message names the
input that was wrong and what to do about it.
"""

from __future__ import annotations


class DptError(Exception):
    """Root of every error dpt raises on purpose."""

    exit_code = 2


class ConfigError(DptError):
    """A setting, the config file or the database URL is malformed."""


class InvalidTarget(DptError):
    """A path or URI cannot be turned into a data product."""


class HashError(DptError):
    """A file could not be read to be hashed."""


class MigrationRequired(DptError):
    """The database schema is behind (or ahead of) this version of dpt."""


class DatabaseUnavailable(DptError):
    """The database cannot be reached; events went to the spool."""

    exit_code = 1


class NotFound(DptError):
    """A product, run or version named on the command line is not recorded."""


class TrackingError(DptError):
    """Recording failed; raised only in strict mode (``DPT_STRICT=1``)."""

    exit_code = 1
