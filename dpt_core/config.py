"""Settings, from explicit arguments, ``DPT_*`` variables, a TOML file and defaults.

Precedence, highest first: explicit keyword arguments to :func:`load_settings` >
``DPT_*`` environment variables > the config file (``$DPT_CONFIG``, else
``<user config dir>/dpt/config.toml``) > defaults. The file holds the same keys
as the variables, lower-case and without the prefix, at top level or under a
``[dpt]`` table::

    database_url = "postgresql+psycopg://pipeline@db/dpt"
    hash = "blake3"
    redact_names = ["*_DSN"]
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from dpt_core.errors import ConfigError

HASH_ALGORITHMS = ("xxh3_128", "blake3", "sha256", "none")
APP = "dpt"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'dpt.sqlite3'}"


@dataclass(frozen=True)
class Settings:
    """Every knob dpt has. Build it with :func:`load_settings`."""

    database_url: str = field(default_factory=default_database_url)
    spool_dir: Path = field(default_factory=lambda: state_dir() / "spool")
    cache_dir: Path = field(default_factory=cache_dir)
    hash_algorithm: str = "xxh3_128"
    disabled: bool = False
    strict: bool = False
    #: Comma-separated plugin names to load from the ``dpt`` entry-point group (None: all).
    load_plugins: tuple[str, ...] | None = None
    #: Extra glob patterns (case-insensitive) of variable names whose values are secret.
    redact_names: tuple[str, ...] = ()
    #: Extra glob patterns of variable names that change per run (kept out of the fingerprint).
    volatile_names: tuple[str, ...] = ()
    #: Glob patterns of variable names not recorded at all.
    ignore_names: tuple[str, ...] = ()
    #: Key for the keyed digest of redacted values; from DPT_REDACTION_KEY or a local key file.
    redaction_key: bytes = b""
    connect_timeout: float = 10.0
    statement_timeout: float = 10.0
    config_file: Path | None = None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


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
    from dpt_core.store.engine import validate_url

    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r} must be a string")
    validate_url(value, source=name)
    return value


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
    "redaction_key": ("redaction_key", lambda n, v: str(v).encode()),
    "connect_timeout": ("connect_timeout", _as_float),
    "statement_timeout": ("statement_timeout", _as_float),
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


def _local_redaction_key() -> bytes:
    """A per-user random key, created once (mode 0600) beside the default database."""
    path = data_dir() / "redaction.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError:
        return b"dpt-unkeyed"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError:
        return b"dpt-unkeyed"


def load_settings(
    environ: dict[str, str] | os._Environ[str] | None = None, **explicit: Any
) -> Settings:
    """Build :class:`Settings`; raises :class:`ConfigError` naming the bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file_path(environ)
    if path is not None:
        for key, value in _read_file(path).items():
            attr, convert = _KEYS[key]
            values[attr] = convert(f"{path}: {key}", value)
        values["config_file"] = path
    for key, (attr, convert) in _KEYS.items():
        name = f"DPT_{key.upper()}"
        if name in environ:
            values[attr] = convert(name, environ[name])
    for attr, value in explicit.items():
        if value is not None:
            values[attr] = value
    settings = Settings(**values)
    if not settings.redaction_key and not settings.disabled:
        settings = settings.replace(redaction_key=_local_redaction_key())
    return settings


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once (call :func:`reset_settings` after changing env)."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def reset_settings(settings: Settings | None = None) -> None:
    global _cached
    _cached = settings


def unconfigured_settings() -> Settings:
    """Settings for a process whose configuration is broken: every write goes to the spool.

    Tracking code must not fail the user's pipeline over a bad ``DPT_*`` value or
    config file (unless strict): it keeps the events in the spool (``DPT_SPOOL_DIR``
    if that one is usable) until the configuration is fixed and they are replayed.
    """
    fallback = Settings(database_url="", redaction_key=b"dpt-unconfigured")
    spool = os.environ.get("DPT_SPOOL_DIR")
    return fallback.replace(spool_dir=Path(spool).expanduser()) if spool else fallback


def settings_for_recording() -> Settings:
    """:func:`get_settings`, or :func:`unconfigured_settings` when the configuration is broken."""
    try:
        return get_settings()
    except ConfigError:
        return unconfigured_settings()
