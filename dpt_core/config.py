"""Settings, from explicit arguments, ``DPT_*`` variables, a TOML file and defaults.

Precedence, highest first: explicit keyword arguments to :func:`load_settings` >
``DPT_*`` environment variables > the config file (``$DPT_CONFIG``, else
``<user config dir>/dpt/config.toml``) > defaults. The file holds the same keys
as the variables, lower-case and without the prefix, at top level or under a
``[dpt]`` table::

    database_url = "postgresql+psycopg://pipeline@db/dpt"
    hash = "blake3"
    redact_names = ["*_DSN"]

The redaction key (the key of the digests kept for redacted values) comes from
``DPT_REDACTION_KEY`` or ``DPT_REDACTION_KEY_FILE`` (a file holding it; a team
shares one key so that digests compare across hosts), else from the file's
``redaction_key`` / ``redaction_key_file``, else from a random per-user key file in
the data directory. It is never a constant: when no key can be read or stored, the
process gets a random key of its own and says so once.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpt_core.errors import ConfigError
from dpt_core.frozen import Frozen, set_field
from dpt_core.log import log

# platformdirs, tomllib, hmac and secrets are imported where they are used: a process
# whose DPT_* variables name every directory and the key (an orchestrator's worker, a
# batch job) then never pays for them (see docs/performance.md, "A fresh process").

HASH_ALGORITHMS = ("xxh3_128", "blake3", "sha256", "none")
APP = "dpt"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


_user_cache_dir = cache_dir  # (Settings' cache_dir parameter hides the function)


#: How many keys a keyed cache file keeps, the most recently written first: processes
#: that share a cache directory but differ in a key (scripts in different directories
#: put a different first entry on the import path; several interpreters) each find
#: theirs, instead of each replacing the other's.
KEYED_CACHE_ENTRIES = 16


def read_keyed_cache(path: Path, key: Any) -> Any:
    """The value a :func:`write_keyed_cache` call kept in ``path`` under ``key``; None when
    there is none (never kept, or one of more than :data:`KEYED_CACHE_ENTRIES` other keys
    kept since), or the file cannot be read."""
    import json

    key = json.loads(json.dumps(key))  # as it was kept (tuples are lists)
    for kept, value in _keyed_entries(path):
        if kept == key:
            return value
    return None


def write_keyed_cache(path: Path, key: Any, value: Any) -> None:
    """Keep the JSON-able ``value`` in ``path`` under ``key`` (with the most recent other
    keys), atomically (a temporary file renamed over it); a cache directory that cannot
    be written means no cache, silently. Two processes writing at once may each drop the
    other's new key: the next process writes it again."""
    import json

    key = json.loads(json.dumps(key))  # compared as it reads back (tuples become lists)
    entries = [{"key": key, "value": value}]
    entries += [{"key": k, "value": v} for k, v in _keyed_entries(path) if k != key]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        text = json.dumps({"entries": entries[:KEYED_CACHE_ENTRIES]})
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass


def _keyed_entries(path: Path) -> list[tuple[Any, Any]]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [(entry["key"], entry["value"]) for entry in data["entries"]]
    except (OSError, ValueError, KeyError, TypeError):  # none yet, unreadable, or another shape
        return []


def config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'dpt.sqlite3'}"


class Settings(Frozen):
    """Every knob dpt has. Build it with :func:`load_settings`.

    ``database_url``, ``spool_dir`` and ``cache_dir`` left None are the user's defaults
    (:func:`default_database_url`, the state and cache directories); the rest are
    described where they are read (``DPT_*`` in docs/configuration.md).
    """

    __slots__ = (
        "database_url",
        "spool_dir",
        "cache_dir",
        "hash_algorithm",
        "disabled",
        "strict",
        "load_plugins",
        "redact_names",
        "volatile_names",
        "ignore_names",
        "redaction_key",
        "redaction_key_file",
        "connect_timeout",
        "statement_timeout",
        "retry_after",
        "retry_after_max",
        "write",
        "flush_timeout",
        "write_delay",
        "config_file",
    )
    database_url: str
    spool_dir: Path
    cache_dir: Path
    hash_algorithm: str
    disabled: bool
    strict: bool
    #: Comma-separated plugin names to load from the ``dpt`` entry-point group (None: all).
    load_plugins: tuple[str, ...] | None
    #: Extra glob patterns (case-insensitive) of variable names whose values are secret.
    redact_names: tuple[str, ...]
    #: Extra glob patterns of variable names that change per run (kept out of the fingerprint).
    volatile_names: tuple[str, ...]
    #: Glob patterns of variable names not recorded at all.
    ignore_names: tuple[str, ...]
    #: Key for the keyed digest of redacted values (see the module docstring for its sources).
    redaction_key: bytes
    #: A file holding the redaction key (read into ``redaction_key`` by :func:`load_settings`).
    redaction_key_file: Path | None
    connect_timeout: float
    statement_timeout: float
    #: Seconds a process writes straight to the spool after the database was found away,
    #: before one background probe tries it again (doubling after each failed probe);
    #: 0: no breaker, every write tries the database.
    retry_after: float
    #: The cap of that doubling wait.
    retry_after_max: float
    #: How events reach the database. ``background`` (default): appended to the spool,
    #: then written by a writer thread of the process, flushed at exit; ``sync``: written
    #: on the caller's thread (the spool only when the database is away; strict mode
    #: always writes this way); ``deferred``: only spooled, written by the next dpt
    #: process, ``dpt spool drain`` or ``dpt serve``.
    write: str
    #: Seconds a process waits at exit (and a read waits) for the background writer.
    flush_timeout: float
    #: Seconds the background writer waits after an event for more to write with it (one
    #: spool file, one transaction); a read, a flush or the exit does not wait. 0: at once.
    write_delay: float
    config_file: Path | None

    def __init__(
        self,
        database_url: str | None = None,
        spool_dir: Path | None = None,
        cache_dir: Path | None = None,
        hash_algorithm: str = "xxh3_128",
        disabled: bool = False,
        strict: bool = False,
        load_plugins: tuple[str, ...] | None = None,
        redact_names: tuple[str, ...] = (),
        volatile_names: tuple[str, ...] = (),
        ignore_names: tuple[str, ...] = (),
        redaction_key: bytes = b"",
        redaction_key_file: Path | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float = 10.0,
        retry_after: float = 5.0,
        retry_after_max: float = 120.0,
        write: str = "background",
        flush_timeout: float = 10.0,
        write_delay: float = 1.0,
        config_file: Path | None = None,
    ) -> None:
        if database_url is None:
            database_url = default_database_url()
        set_field(self, "database_url", database_url)
        set_field(self, "spool_dir", state_dir() / "spool" if spool_dir is None else spool_dir)
        set_field(self, "cache_dir", _user_cache_dir() if cache_dir is None else cache_dir)
        set_field(self, "hash_algorithm", hash_algorithm)
        set_field(self, "disabled", disabled)
        set_field(self, "strict", strict)
        set_field(self, "load_plugins", load_plugins)
        set_field(self, "redact_names", redact_names)
        set_field(self, "volatile_names", volatile_names)
        set_field(self, "ignore_names", ignore_names)
        set_field(self, "redaction_key", redaction_key)
        set_field(self, "redaction_key_file", redaction_key_file)
        set_field(self, "connect_timeout", connect_timeout)
        set_field(self, "statement_timeout", statement_timeout)
        set_field(self, "retry_after", retry_after)
        set_field(self, "retry_after_max", retry_after_max)
        set_field(self, "write", write)
        set_field(self, "flush_timeout", flush_timeout)
        set_field(self, "write_delay", write_delay)
        set_field(self, "config_file", config_file)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def _as_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if number <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
    return number


def _as_float_or_off(name: str, value: Any) -> float:
    """Seconds, where 0 turns the feature off."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if number < 0:
        raise ConfigError(f"{name}={value!r} must be 0 (off) or a positive number of seconds")
    return number


def _as_list(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{name}={value!r} must be a comma-separated string or a list of strings")


def _as_hash(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in HASH_ALGORITHMS:
        raise ConfigError(
            f"{name}={value!r} is not a hash algorithm: use one of {', '.join(HASH_ALGORITHMS)}"
        )
    return text


def _as_path(name: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ConfigError(f"{name}={value!r} must be a path")
    return Path(value).expanduser()


def _as_url(name: str, value: Any) -> str:
    """``value`` when it is a database URL dpt can use; a :class:`ConfigError` naming it if not.

    A URL of the usual shapes is checked here without SQLAlchemy (:func:`_plainly_valid_url`:
    loading settings must not import the database stack, ~1 s in a busy orchestrator
    worker). Anything else gets the full check of :func:`dpt_core.store.engine.validate_url`,
    which gives the error: the same message either way. Making the engine checks it fully
    again (a driver that is installed but cannot be imported, say).
    """
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r} must be a string")
    if _plainly_valid_url(value):
        return value
    from dpt_core.store.engine import validate_url

    validate_url(value, source=name)
    return value


#: The grammar of SQLAlchemy's URL parser (``sqlalchemy.engine.url``), same structure and
#: order of alternatives, so that a match splits a URL where SQLAlchemy splits it.
_URL_SHAPE = (
    r"(?P<name>[\w+]+)://"
    r"(?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?"
    r"(?:/(?P<database>[^?]*))?"
    r"(?:\?(?P<query>.*))?"
)
#: ``dialect+driver`` (after dpt's choice of driver for a bare dialect) -> the module its
#: DBAPI is imported from. Other drivers get the full check.
_DBAPI_MODULES = {
    "sqlite": "_sqlite3",
    "sqlite+pysqlite": "_sqlite3",
    "postgresql": "psycopg",
    "postgresql+psycopg": "psycopg",
    "postgresql+psycopg2": "psycopg2",
    "mysql": "pymysql",
    "mysql+pymysql": "pymysql",
    "mariadb": "pymysql",
    "mariadb+pymysql": "pymysql",
}


def _plainly_valid_url(url: str) -> bool:
    """True when :func:`~dpt_core.store.engine.validate_url` surely accepts ``url``: a
    supported dialect and driver whose module is installed, a SQLite file named (no
    ``%``-escapes to decode). False means "ask the full check", not "invalid"."""
    text = url.strip()
    if "\n" in text or "\r" in text:
        return False
    match = re.match(_URL_SHAPE, text)
    if match is None or match.end() != len(text):
        return False
    port = match["port"]
    if port is not None and not (port.isascii() and port.isdigit()):
        return False
    module = _DBAPI_MODULES.get(match["name"])
    if module is None:
        return False
    database = match["database"]
    if match["name"].startswith("sqlite") and (
        not database or database == ":memory:" or "%" in database
    ):
        return False
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _as_url_unchecked(name: str, value: Any) -> str:
    """For ``DPT_WRITE=deferred``: the URL only names the spool its events wait in, and the
    drainer checks it (a process that only spools never imports the database stack)."""
    if not isinstance(value, str) or not value.strip():
        return _as_url(name, value)  # the full check, for its message
    return value


WRITE_MODES = ("background", "sync", "deferred")


def _as_write(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in WRITE_MODES:
        raise ConfigError(
            f"{name}={value!r} is not a write mode: use one of {', '.join(WRITE_MODES)}"
        )
    return text


def _as_key(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(
            f"{name} must be a string (a random key, e.g. from 'openssl rand -hex 32')"
        )
    return value.encode("utf-8", "surrogateescape")


_KEYS: dict[str, tuple[str, Any]] = {
    "database_url": ("database_url", _as_url),
    "spool_dir": ("spool_dir", _as_path),
    "cache_dir": ("cache_dir", _as_path),
    "hash": ("hash_algorithm", _as_hash),
    "disabled": ("disabled", _as_bool),
    "strict": ("strict", _as_bool),
    "load_plugins": ("load_plugins", _as_list),
    "redact_names": ("redact_names", _as_list),
    "volatile_names": ("volatile_names", _as_list),
    "ignore_names": ("ignore_names", _as_list),
    "redaction_key": ("redaction_key", _as_key),
    "redaction_key_file": ("redaction_key_file", lambda n, v: _as_path(n, v) if v else None),
    "connect_timeout": ("connect_timeout", _as_float),
    "statement_timeout": ("statement_timeout", _as_float),
    "retry_after": ("retry_after", _as_float_or_off),
    "retry_after_max": ("retry_after_max", _as_float),
    "write": ("write", _as_write),
    "flush_timeout": ("flush_timeout", _as_float),
    "write_delay": ("write_delay", _as_float_or_off),
}


def config_file_path(environ: dict[str, str] | os._Environ[str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    explicit = environ.get("DPT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    default = config_dir() / "config.toml"
    return default if default.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} (DPT_CONFIG) does not exist: create it or unset DPT_CONFIG"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if not raw.strip():
        return {}  # an empty file (DPT_CONFIG=/dev/null, say): nothing to parse
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML ({exc}): fix or remove it"
        ) from None
    if isinstance(data.get("dpt"), dict):
        data = data["dpt"]
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown key(s) {', '.join(unknown)}: known keys are {', '.join(sorted(_KEYS))}"
        )
    return data


def redaction_key_id(key: bytes) -> str:
    """A short id of ``key`` (12 hex of an HMAC under it), recorded beside its digests.

    Two environments whose ids differ had their secrets digested under different keys:
    their digests cannot be compared. The id tells keys apart; it is not the key.
    """
    import hashlib
    import hmac

    return hmac.new(key, b"dpt redaction key id", hashlib.sha256).hexdigest()[:12]


_process_key: bytes | None = None
_process_key_lock = threading.Lock()


def _random_process_key(reason: str) -> bytes:
    """A random key for this process only, with one warning naming ``reason``.

    Never a constant: a key anyone can know would let a guess list be checked against
    the digests. Digests made under it compare only within this process; environments
    record the key's id, so ``dpt env diff`` says so instead of reporting a change.
    """
    global _process_key
    with _process_key_lock:
        if _process_key is None:
            import secrets

            _process_key = secrets.token_hex(32).encode()
            log.warning(
                "dpt: %s; redacted values are digested under a random key for this process "
                "only, not comparable with other runs: set DPT_REDACTION_KEY or "
                "DPT_REDACTION_KEY_FILE (see docs/security.md)",
                reason,
            )
        return _process_key


def _read_key_file(path: Path) -> bytes:
    """The key in ``path`` (surrounding whitespace stripped); OSError or ValueError if none."""
    key = path.read_bytes().strip()
    if not key:
        raise ValueError("it is empty")
    return key


def _local_redaction_key() -> bytes:
    """A per-user random key, created once (mode 0600) beside the default database.

    The file is written under a temporary name and linked into place, so a process that
    races another one reads the winner's complete key. When the data directory cannot
    hold or give the key: a random key for this process (:func:`_random_process_key`).
    """
    path = data_dir() / "redaction.key"
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        return _random_process_key(f"the redaction key file {path} cannot be used ({_why(exc)})")
    try:
        return _create_key_file(path)
    except (OSError, ValueError) as exc:
        return _random_process_key(f"the redaction key file {path} cannot be created ({_why(exc)})")


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _create_key_file(path: Path) -> bytes:
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return _read_key_file(path)  # another process was first: its key is everyone's
    finally:
        temporary.unlink(missing_ok=True)
    return key


def _resolve_redaction_key(settings: Settings) -> Settings:
    """``settings`` with ``redaction_key`` read from its key file or the local key file."""
    if settings.redaction_key or settings.disabled:
        return settings
    path = settings.redaction_key_file
    if path is None:
        return settings.replace(redaction_key=_local_redaction_key())
    try:
        return settings.replace(redaction_key=_read_key_file(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"redaction key file {path} (redaction_key_file) cannot be read ({_why(exc)}): "
            "fix the path or its permissions, or set DPT_REDACTION_KEY"
        ) from None


def _apply_layer(values: dict[str, Any], layer: dict[str, Any], source: str) -> None:
    """Merge one source of settings; its key or key file replaces a lower source's.

    An empty ``DPT_REDACTION_KEY`` (or ``DPT_REDACTION_KEY_FILE``) means "not set here".
    """
    unset = [k for k in ("redaction_key", "redaction_key_file") if k in layer and not layer[k]]
    layer = {k: v for k, v in layer.items() if k not in unset}
    if layer.get("redaction_key") and layer.get("redaction_key_file") is not None:
        raise ConfigError(
            f"{source} sets both redaction_key and redaction_key_file: keep one of them"
        )
    if layer.get("redaction_key"):
        values.pop("redaction_key_file", None)
    if layer.get("redaction_key_file") is not None:
        values.pop("redaction_key", None)
    values.update(layer)


def load_settings(
    environ: dict[str, str] | os._Environ[str] | None = None, **explicit: Any
) -> Settings:
    """Build :class:`Settings`; raises :class:`ConfigError` naming the bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file_path(environ)
    data = _read_file(path) if path is not None else {}
    keys = _KEYS
    write = explicit.get("write") or environ.get("DPT_WRITE") or data.get("write")
    if isinstance(write, str) and write.strip().lower() == "deferred":
        keys = {**_KEYS, "database_url": ("database_url", _as_url_unchecked)}
    if path is not None:
        from_file: dict[str, Any] = {}
        for key, value in data.items():
            attr, convert = keys[key]
            from_file[attr] = convert(f"{path}: {key}", value)
        _apply_layer(values, from_file, f"config file {path}")
        values["config_file"] = path
    from_environ: dict[str, Any] = {}
    for key, (attr, convert) in keys.items():
        name = f"DPT_{key.upper()}"
        if name in environ:
            from_environ[attr] = convert(name, environ[name])
    _apply_layer(
        values, from_environ, "the environment (DPT_REDACTION_KEY, DPT_REDACTION_KEY_FILE)"
    )
    _apply_layer(
        values, {k: v for k, v in explicit.items() if v is not None}, "the explicit arguments"
    )
    return _resolve_redaction_key(Settings(**values))


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once (call :func:`reset_settings` after changing env)."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def reset_settings(settings: Settings | None = None) -> None:
    global _cached, _unconfigured_key
    _cached = settings
    _unconfigured_key = None


def unconfigured_settings() -> Settings:
    """Settings for a process whose configuration is broken: every write goes to the spool.

    Tracking code must not fail the user's pipeline over a bad ``DPT_*`` value or
    config file (unless strict): it keeps the events in the spool (``DPT_SPOOL_DIR``
    if that one is usable) until the configuration is fixed and they are replayed.
    The redaction key is the best one still readable (:func:`_unconfigured_redaction_key`).
    """
    fallback = Settings(database_url="", redaction_key=_unconfigured_redaction_key())
    spool = os.environ.get("DPT_SPOOL_DIR")
    return fallback.replace(spool_dir=Path(spool).expanduser()) if spool else fallback


_unconfigured_key: bytes | None = None


def _unconfigured_redaction_key() -> bytes:
    """The key a broken configuration would most likely have given, read once per process.

    ``DPT_REDACTION_KEY``, then ``DPT_REDACTION_KEY_FILE``, then the config file's
    ``redaction_key`` / ``redaction_key_file`` (read leniently: the file may be what is
    broken), then the per-user key file; and if none can be read, a random key for the
    process (:func:`_random_process_key`). Never a constant.
    """
    global _unconfigured_key
    if _unconfigured_key is None:
        _unconfigured_key = (
            next((key for key in _candidate_keys() if key), None) or _local_redaction_key()
        )
    return _unconfigured_key


def _candidate_keys() -> Iterator[bytes | None]:
    key = os.environ.get("DPT_REDACTION_KEY")
    yield key.encode("utf-8", "surrogateescape") if key else None
    yield _key_from_file(os.environ.get("DPT_REDACTION_KEY_FILE"))
    import tomllib

    try:
        path = config_file_path()
        data = tomllib.loads(path.read_text("utf-8")) if path is not None else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        data = {}
    if isinstance(data.get("dpt"), dict):
        data = data["dpt"]
    key = data.get("redaction_key")
    yield key.encode("utf-8", "surrogateescape") if isinstance(key, str) and key else None
    yield _key_from_file(data.get("redaction_key_file"))


def _key_from_file(path: Any) -> bytes | None:
    if not isinstance(path, str) or not path:
        return None
    try:
        return _read_key_file(Path(path).expanduser())
    except (OSError, ValueError):
        return None


def settings_for_recording() -> Settings:
    """:func:`get_settings`, or :func:`unconfigured_settings` when the configuration is broken."""
    try:
        return get_settings()
    except ConfigError:
        return unconfigured_settings()
