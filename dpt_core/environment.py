"""Where code ran: capture, redaction and fingerprint of the environment.

:func:`capture_environment` returns an :class:`~dpt_core.events.EnvironmentSnapshot`:
interpreter, platform, host, user, installed distributions and environment
variables, once per process (it is cached). Variables fall in four groups, by
name (case-insensitive globs):

- *ignored* (``settings.ignore_names``): dropped entirely;
- *volatile* (:data:`VOLATILE_NAMES` + ``settings.volatile_names``): change on every
  run, so they stay out of the snapshot and its fingerprint; the invocation
  carries them (:func:`volatile_variables`);
- *secret* (:data:`SECRET_NAMES` + ``settings.redact_names``), or any variable whose
  value looks secret (:func:`secret_value_shape`): stored as a keyed digest;
- everything else: stored in clear.

Redaction (:func:`redact`) returns ``(clear, digest)``:

- ``(value, None)``: not secret, kept as it is;
- ``(None, digest)``: withheld; only the keyed digest is kept;
- ``(masked, digest)``: kept with its secret parts replaced by ``***`` (a password
  or token inside a URL, a secret query parameter) or by a plugin's replacement.

``digest`` is ``"hmac-sha256:" + 32 hex`` of the *original* value under
``settings.redaction_key``, so a changed secret still changes the fingerprint and
shows in an environment diff, while the digest alone reveals nothing. A value is
redacted exactly when ``digest`` is not None.
"""

from __future__ import annotations

import collections
import fnmatch
import functools
import getpass
import hashlib
import hmac
import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from dpt_core import contracts
from dpt_core.config import Settings, get_settings
from dpt_core.events import EnvironmentSnapshot, clean_text

__all__ = [
    "SECRET_NAMES",
    "VOLATILE_NAMES",
    "PluginRedact",
    "capture_environment",
    "clear_environment_cache",
    "fingerprint",
    "git_facet",
    "installed_distributions",
    "is_secret_name",
    "is_volatile_name",
    "mask_url_credentials",
    "redact",
    "secret_value_shape",
    "volatile_variables",
]

#: ``plugin_redact(key, value)``: a replacement for the value, or None to let dpt decide.
PluginRedact = Callable[[str, str], str | None]
Variable = tuple[str, str | None, str | None]

VOLATILE_NAMES: Final = (
    "PWD", "OLDPWD", "SHLVL", "_", "RANDOM", "TERM*", "COLORTERM", "SSH_*", "DISPLAY",
    "XDG_SESSION*", "XDG_RUNTIME_DIR", "WINDOWID", "*_RUN_ID", "AIRFLOW_CTX_*", "PREFECT__*",
    "DAGSTER_RUN*", "DPT_RUN*", "PYTEST_*", "COLUMNS", "LINES", "HISTFILE", "TMUX*", "KITTY*",
    "INVOCATION_ID", "JOURNAL_STREAM", "LS_COLORS", "PS1", "_AIRFLOW_PARSING_CONTEXT_*",
)  # fmt: skip
SECRET_NAMES: Final = (
    "*PASSWORD*", "*PASSWD*", "*PASS", "*_PWD", "*SECRET*", "*TOKEN*", "*KEY", "*KEY_*", "*_KEY*",
    "KEY*", "*CREDENTIAL*", "*AUTH*", "*PRIVATE*", "*SESSION*", "*COOKIE*", "*SIGNATURE*", "*DSN*",
)  # fmt: skip
#: Names whose long hex values are identifiers (commits, digests), not secrets.
_IDENTIFIER_NAMES: Final = (
    "*SHA", "*SHA1", "*SHA256", "*COMMIT*", "*REVISION*", "*_REV", "*DIGEST*", "*CHECKSUM*", "*_HASH",
)  # fmt: skip

_MASK: Final = "***"
_DIGEST_PREFIX: Final = "hmac-sha256:"

# --------------------------------------------------------------------------- name globs


@functools.lru_cache(maxsize=64)
def _glob_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), re.IGNORECASE)


@functools.lru_cache(maxsize=16384)
def _matches(name: str, *pattern_groups: tuple[str, ...]) -> bool:
    # Memoised: volatile variables are re-read at every invocation start, and the same
    # few hundred names are classified against the same patterns each time.
    regex = _glob_regex(tuple(p for group in pattern_groups for p in group))
    return regex is not None and regex.match(name) is not None


def is_secret_name(key: str, settings: Settings | None = None) -> bool:
    """True when the variable ``key`` holds a secret by its name alone."""
    return _matches(key, SECRET_NAMES, (settings or get_settings()).redact_names)


def is_volatile_name(key: str, settings: Settings | None = None) -> bool:
    """True when ``key`` changes from run to run (kept out of the fingerprint)."""
    return _matches(key, VOLATILE_NAMES, (settings or get_settings()).volatile_names)


def _is_ignored(key: str, settings: Settings) -> bool:
    return _matches(key, settings.ignore_names)


# --------------------------------------------------------------------------- value shapes

_KNOWN_TOKENS: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"
    r"|\bxox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\b[sr]k_live_[0-9A-Za-z]{16,}"
)
#: ``scheme://user:password@host``; the password may hold '@' (the last one before the host wins).
_URL_USERINFO: Final = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/@,;]*)(?::(?P<password>[^\s,;]*))?@(?P<host>[^\s@/?#,;]*)"
)
_URL_QUERY_PARAM: Final = re.compile(
    r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&#\s,;]*)"
)
_TOKEN_SPLIT: Final = re.compile(r"[\s,;:=\"'@?&()\[\]{}<>|\\]+")
_URL_PART_SPLIT: Final = re.compile(r"[/.]+")
_BASE64_CHARS: Final = re.compile(r"[A-Za-z0-9+/_\-]+")
_HEX_CHARS: Final = re.compile(r"[0-9a-fA-F\-]+")
_RUN_SPLIT: Final = re.compile(r"[+/_\-]+")
MIN_TOKEN_LENGTH: Final = 24
MIN_CLASS_CHANGE_RATE: Final = 0.3
LOW_CLASS_CHANGE_RATE: Final = 0.15
NEAR_MAX_ENTROPY_GAP: Final = 0.9
MIN_HEX_ENTROPY: Final = 2.5


def _entropy(text: str) -> float:
    counts = collections.Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _char_class(char: str) -> int:
    return 0 if char.isdigit() else 1 if char.isupper() else 2


def _class_change_rate(token: str) -> float:
    """How often neighbouring characters switch between digit, upper and lower case.

    About 0.6 for random base62 text; near 0 for words, numbers and snake_case.
    """
    pairs = changes = 0
    for run in _RUN_SPLIT.split(token):
        for left, right in zip(run, run[1:], strict=False):
            pairs += 1
            changes += _char_class(left) != _char_class(right)
    return changes / pairs if pairs else 0.0


def _hex_random(token: str) -> bool:
    digits = token.replace("-", "")
    has_both = any(c.isdigit() for c in digits) and any(c.isalpha() for c in digits)
    return has_both and _entropy(digits) >= MIN_HEX_ENTROPY


def _base64_random(token: str) -> bool:
    """Random base64/base62 text: mixed character classes, high entropy, and either
    frequent class changes or near-maximal entropy with some class changes.

    Missed for about 1 in 10^5 random tokens of 24+ characters; snake_case,
    kebab-case and most CamelCase identifiers pass as not random.
    """
    classes = {_char_class(c) for c in token if c.isalnum()}
    entropy = _entropy(token)
    if len(classes) < 2 or entropy < min(4.2, math.log2(len(token)) - 1.6):
        return False
    rate = _class_change_rate(token)
    near_maximal = entropy >= math.log2(len(token)) - NEAR_MAX_ENTROPY_GAP
    return rate >= MIN_CLASS_CHANGE_RATE or (rate >= LOW_CLASS_CHANGE_RATE and near_maximal)


def _looks_random(token: str, hex_is_identifier: bool = False) -> bool:
    """A long token from the base64/hex alphabets that looks machine-generated.

    :param hex_is_identifier: hex tokens are commit ids or digests, not secrets.
    """
    core = token.rstrip("=")
    if len(core) < MIN_TOKEN_LENGTH or not _BASE64_CHARS.fullmatch(core):
        return False
    if _HEX_CHARS.fullmatch(core):
        return not hex_is_identifier and _hex_random(core)
    return _base64_random(core)


def _candidate_tokens(value: str) -> Iterator[str]:
    """Words of ``value`` that could be tokens.

    Words starting with ``/``, ``~`` or ``.`` are paths and never tokens, so path
    lists (``PATH``, ``PYTHONPATH``) stay clear even when they hold store hashes;
    the price is that a base64 token starting with "/" is not recognised by shape.
    """
    for token in _TOKEN_SPLIT.split(value):
        if token.startswith("//"):
            yield from _URL_PART_SPLIT.split(token)
        elif token and token[0] not in "/~.":
            yield token


def _has_random_token(value: str, hex_is_identifier: bool = False) -> bool:
    return any(_looks_random(token, hex_is_identifier) for token in _candidate_tokens(value))


def _has_known_token(value: str) -> bool:
    return _KNOWN_TOKENS.search(value) is not None


def secret_value_shape(value: str) -> bool:
    """True when ``value`` looks secret whatever its name.

    Looks for credentials inside URLs, well-known token formats (AWS, GitHub,
    GitLab, Slack, Google, Stripe keys, JWTs, PEM private keys) and long
    high-entropy base64/hex tokens. Paths (``/usr/lib:/opt/x``) are not tokens.
    """
    return (
        mask_url_credentials(value) != value or _has_known_token(value) or _has_random_token(value)
    )


def _mask_userinfo(match: re.Match[str]) -> str:
    user, password = match.group("user"), match.group("password")
    if password:
        user_part = f"{user}:{_MASK}"
    elif user and (_has_known_token(user) or _looks_random(user)):
        user_part = _MASK
    else:
        user_part = user if password is None else f"{user}:"
    return f"{match.group('scheme')}{user_part}@{match.group('host')}"


def _mask_query_param(match: re.Match[str]) -> str:
    if match.group("value") and _matches(match.group("name"), SECRET_NAMES):
        return match.group("lead") + _MASK
    return match.group(0)


def mask_url_credentials(value: str) -> str:
    """``value`` with URL passwords, tokens used as URL user names and secret query
    parameters (``?token=...``, ``&X-Amz-Signature=...``) replaced by ``***``.

    ``postgresql://u:pw@db/x`` -> ``postgresql://u:***@db/x``.
    """
    if "://" not in value:
        return value
    masked = _URL_USERINFO.sub(_mask_userinfo, value)
    return _URL_QUERY_PARAM.sub(_mask_query_param, masked)


# --------------------------------------------------------------------------- redaction


def _digest(key: str, value: str, settings: Settings) -> str:
    message = f"{key}\0{value}".encode("utf-8", "surrogateescape")
    return (
        _DIGEST_PREFIX + hmac.new(settings.redaction_key, message, hashlib.sha256).hexdigest()[:32]
    )


@contracts.post(lambda result: result[1] is None or result[1].startswith(_DIGEST_PREFIX))
@contracts.post(lambda result: result[0] is not None or result[1] is not None)
def redact(
    key: str,
    value: str,
    settings: Settings | None = None,
    plugin_redact: PluginRedact | None = None,
) -> tuple[str | None, str | None]:
    """``(clear, digest)`` for the variable ``key=value`` (see the module docstring).

    :param plugin_redact: asked first (the ``dpt_redact`` hook); a non-None answer
        replaces the value, and the variable counts as redacted.
    """
    settings = settings or get_settings()
    replacement = plugin_redact(key, value) if plugin_redact is not None else None
    if replacement is not None:
        return replacement, _digest(key, value, settings)
    if is_secret_name(key, settings) or _has_known_token(value):
        return None, _digest(key, value, settings)
    masked = mask_url_credentials(value)
    if _has_random_token(masked, hex_is_identifier=_matches(key, _IDENTIFIER_NAMES)):
        return None, _digest(key, value, settings)
    if masked != value:
        return masked, _digest(key, value, settings)
    return value, None


def redact_text(text: str) -> str:
    """Free text (a command line, an error message) with secrets masked in place.

    URL passwords and secret query parameters become ``***``; words that look like
    well-known tokens or long random secrets become ``<redacted>``.
    """
    if len(text) <= 256:  # parameters and tags repeat from run to run: memoised
        return _redact_short_text(text)
    return _redact_text(text)


@functools.lru_cache(maxsize=8192)
def _redact_short_text(text: str) -> str:
    return _redact_text(text)


def _redact_text(text: str) -> str:
    masked = mask_url_credentials(text)
    words = masked.split(" ")
    for index, word in enumerate(words):
        _, _, value = word.rpartition("=")  # --password=..., TOKEN=...
        if value and (_has_known_token(value) or _has_random_token(value, hex_is_identifier=True)):
            words[index] = word[: len(word) - len(value)] + "<redacted>"
    return " ".join(words)


#: Parameter names whose values are secret. Narrower than the variable-name rules: a
#: parameter called ``asset_key`` or ``partition_key`` is an identifier, not a secret.
_SECRET_PARAMETER: Final = re.compile(
    r"(passw(or)?d|passwd|_pwd$|^pwd$|secret|token|credential|api_?key|private_?key|access_?key"
    r"|secret_?key|(^|_)auth($|_)|authorization|cookie|session_?id|signature)",
    re.IGNORECASE,
)


def _is_secret_parameter(key: str, settings: Settings) -> bool:
    return bool(_SECRET_PARAMETER.search(key)) or _matches(key, settings.redact_names)


def redact_parameters(parameters: Any, settings: Settings | None = None, *, _key: str = "") -> Any:
    """JSON-able ``parameters`` with secrets redacted, by key name and by value shape.

    A value under a secret-looking key (``password``, ``api_token``, ...) becomes
    ``"<redacted:hmac-sha256:...>"`` (so a change still shows); strings elsewhere get
    :func:`redact_text`.
    """
    settings = settings or get_settings()
    if isinstance(parameters, dict):
        return {k: redact_parameters(v, settings, _key=str(k)) for k, v in parameters.items()}
    if isinstance(parameters, list):
        return [redact_parameters(v, settings, _key=_key) for v in parameters]
    if _key and parameters is not None and _is_secret_parameter(_key, settings):
        return _render(None, _digest(_key, json.dumps(parameters, sort_keys=True), settings))
    if isinstance(parameters, str):
        return redact_text(parameters)
    return parameters


def _render(clear: str | None, digest: str | None) -> str:
    if clear is not None:
        return clear
    return f"<redacted:{digest}>"


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    source = os.environ if environ is None else environ
    return {clean_text(key): clean_text(value) for key, value in source.items()}


def volatile_variables(
    settings: Settings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    plugin_redact: PluginRedact | None = None,
) -> dict[str, str]:
    """The volatile variables of this process (run ids, PWD, ...), redacted.

    A withheld value is rendered ``"<redacted:hmac-sha256:...>"``; a masked one
    (``postgresql://u:***@db/x``) as the masked text.
    """
    settings = settings or get_settings()
    source = os.environ if environ is None else environ
    # Names first (memoised per name), then clean only the few values that are kept:
    # this runs at every invocation start.
    chosen = {}
    for raw_key, raw_value in source.items():
        key = _clean_name(raw_key)
        if not _is_ignored(key, settings) and is_volatile_name(key, settings):
            chosen[key] = clean_text(raw_value)
    return {
        key: _render(*redact(key, value, settings, plugin_redact))
        for key, value in sorted(chosen.items())
    }


@functools.lru_cache(maxsize=16384)
def _clean_name(key: str) -> str:
    return clean_text(key)


def _stable_variables(
    environ: Mapping[str, str], settings: Settings, plugin_redact: PluginRedact | None
) -> tuple[Variable, ...]:
    return tuple(
        (key, *redact(key, value, settings, plugin_redact))
        for key, value in sorted(environ.items())
        if not _is_ignored(key, settings) and not is_volatile_name(key, settings)
    )


# --------------------------------------------------------------------------- distributions

_DIST_SUFFIXES: Final = (".dist-info", ".egg-info")


def _normalise_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_dist_dir(name: str) -> tuple[str, str | None] | None:
    """(project, version or None) from ``name-1.0.dist-info`` / ``name-1.0-py3.11.egg-info``."""
    stem = next((name[: -len(s)] for s in _DIST_SUFFIXES if name.endswith(s)), None)
    if not stem or stem.startswith("~"):
        return None
    parts = stem.split("-")
    for index in range(1, len(parts)):
        if parts[index][:1].isdigit():
            return "-".join(parts[:index]), parts[index]
    return stem, None


def _from_metadata(path: str) -> tuple[str, str] | None:
    """(name, version) read from the metadata file; the slow path for odd directory names."""
    try:
        metadata = importlib.metadata.Distribution.at(path).metadata
    except (OSError, TypeError, ValueError):
        return None
    name, version = metadata["Name"], metadata["Version"]
    return (name, version) if name and version else None


def _dists_in(directory: str) -> Iterator[tuple[str, str]]:
    try:
        with os.scandir(directory) as scan:
            names = [entry.name for entry in scan if entry.name.endswith(_DIST_SUFFIXES)]
    except OSError:
        return
    for name in names:
        parsed = _parse_dist_dir(name)
        if parsed is None:
            continue
        project, version = parsed
        if version is None:
            found = _from_metadata(os.path.join(directory, name))
            if found is None:
                continue
            project, version = found
        yield _normalise_name(project), version


def _search_path(paths: Sequence[str] | None) -> list[str]:
    """``sys.path`` minus the current directory (a data directory can hold millions of files)."""
    entries = sys.path if paths is None else paths
    return [entry for entry in entries if entry and entry != "."]


def installed_distributions(paths: Sequence[str] | None = None) -> tuple[tuple[str, str], ...]:
    """Sorted ``(normalised name, version)`` of the distributions importable from ``paths``.

    Read from ``*.dist-info`` / ``*.egg-info`` directory names (one directory
    listing per path entry), falling back to the metadata file only when the
    name carries no version. Like the import system, the first entry wins.
    """
    found: dict[str, str] = {}
    for directory in _search_path(paths):
        for name, version in _dists_in(directory):
            found.setdefault(name, version)
    return tuple(sorted(found.items()))


# --------------------------------------------------------------------------- fingerprint


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def _is_sha256_hex(result: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", result) is not None


@contracts.post(_is_sha256_hex, message="a fingerprint is 64 lower-case hex digits")
def fingerprint(
    *,
    python_version: str,
    implementation: str,
    platform: str,
    hostname: str,
    user: str,
    distributions: Iterable[tuple[str, str]],
    variables: Iterable[Variable],
    facets: Mapping[str, Any] | None = None,
) -> str:
    """sha256 hex of the canonical JSON of an environment; independent of ordering.

    A variable counts by its digest when it has one (so a changed secret changes
    the fingerprint), else by its clear value. Facets that are not JSON values are
    rendered with ``str()``.
    """
    document = {
        "python_version": python_version,
        "implementation": implementation,
        "platform": platform,
        "hostname": hostname,
        "user": user,
        "distributions": sorted([name, version] for name, version in distributions),
        "variables": sorted(
            [key, "digest", digest] if digest is not None else [key, "value", clear]
            for key, clear, digest in variables
        ),
        "facets": dict(facets or {}),
    }
    return hashlib.sha256(_canonical_json(document).encode("ascii")).hexdigest()


# --------------------------------------------------------------------------- capture


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


@functools.cache
def _host_facts() -> tuple[str, str, str]:
    """(python version, implementation, platform): fixed for the life of the process."""
    return platform.python_version(), platform.python_implementation(), platform.platform()


@functools.cache
def _distributions() -> tuple[tuple[str, str], ...]:
    return installed_distributions()


_snapshots: dict[tuple[Any, ...], EnvironmentSnapshot] = {}


def clear_environment_cache() -> None:
    """Forget cached snapshots and distributions (after installing packages, say)."""
    _snapshots.clear()
    _distributions.cache_clear()


def _cache_key(
    settings: Settings,
    facets_json: str,
    environ: Mapping[str, str],
    plugin_redact: PluginRedact | None,
) -> tuple[Any, ...]:
    names = (settings.redact_names, settings.volatile_names, settings.ignore_names)
    return (
        names,
        settings.redaction_key,
        facets_json,
        frozenset(environ.items()),
        _identity(plugin_redact),
    )


def _identity(function: PluginRedact | None) -> object:
    """A cache key for ``function``: bound methods compare equal across accesses, ids do not."""
    try:
        hash(function)
    except TypeError:
        return id(function)
    return function


def capture_environment(
    settings: Settings | None = None,
    facets: dict[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    plugin_redact: PluginRedact | None = None,
) -> EnvironmentSnapshot:
    """The redacted environment of this process, computed once and cached.

    :param facets: extra JSON facts (git commit, conda env, ...); they are part of
        the fingerprint. Values that are not JSON are stored as ``str()``.
    :param environ: the variables to record (default: ``os.environ``).
    :param plugin_redact: see :func:`redact`.
    """
    settings = settings or get_settings()
    environ = _environ(environ)
    facets_json = _canonical_json(facets or {})
    key = _cache_key(settings, facets_json, environ, plugin_redact)
    snapshot = _snapshots.get(key)
    if snapshot is None:
        snapshot = _build_snapshot(settings, json.loads(facets_json), environ, plugin_redact)
        _snapshots[key] = snapshot
    return snapshot


def _build_snapshot(
    settings: Settings,
    facets: dict[str, Any],
    environ: Mapping[str, str],
    plugin_redact: PluginRedact | None,
) -> EnvironmentSnapshot:
    python_version, implementation, platform_name = _host_facts()
    fields: dict[str, Any] = {
        "python_version": python_version,
        "implementation": implementation,
        "platform": platform_name,
        "hostname": socket.gethostname(),
        "user": _user(),
        "distributions": _distributions(),
        "variables": _stable_variables(environ, settings, plugin_redact),
        "facets": facets,
    }
    return EnvironmentSnapshot(fingerprint=fingerprint(**fields), **fields)


# --------------------------------------------------------------------------- git

GIT_TIMEOUT: Final = 3.0


def _git(cwd: str, *args: str) -> str | None:
    """stdout of ``git args`` in ``cwd``, or None when git is missing, fails or hangs."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return os.fsdecode(done.stdout)


def _parse_status(text: str) -> tuple[str | None, str | None, bool]:
    """(commit, branch, dirty) from ``git status --porcelain=v2 --branch``."""
    commit = branch = None
    dirty = False
    for line in text.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2]
            commit = None if oid == "(initial)" else oid
        elif line.startswith("# branch.head "):
            head = line.split(" ", 2)[2]
            branch = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            dirty = True
    return commit, branch, dirty


def _origin_url(git_dir: Path) -> str | None:
    """``remote.origin.url`` read from the repository's config file."""
    try:
        text = (git_dir / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section.replace(" ", "").lower() == '[remote"origin"]' and re.match(r"url\s*=", line):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _strip_credentials(url: str) -> str:
    """``url`` without user:password (http[s]: without any user name, which may be a token)."""
    match = re.match(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@]*)@", url)
    if match is None:
        return url
    scheme, userinfo = match.group("scheme"), match.group("userinfo")
    user = userinfo.partition(":")[0]
    keep = "" if scheme.lower().startswith("http") or not user else f"{user}@"
    return scheme + keep + url[match.end() :]


def git_facet(cwd: str | None = None) -> dict[str, Any] | None:
    """The git state of the work tree holding ``cwd`` (default: the current directory).

    ``{"repo", "commit", "branch", "dirty", "remote"}``; ``commit`` is None before
    the first commit, ``branch`` None on a detached HEAD, ``dirty`` ignores
    untracked files (like ``git describe --dirty``), ``remote`` is the origin URL
    without credentials (None when there is no origin). None outside a work tree
    or without git. Two ``git`` calls, each with a :data:`GIT_TIMEOUT`.
    """
    where = os.getcwd() if cwd is None else cwd
    located = _git(where, "rev-parse", "--show-toplevel", "--git-common-dir")
    if located is None:
        return None
    lines = located.splitlines()
    if len(lines) != 2:
        return None
    toplevel, common_dir = lines
    status = _git(where, "status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return None
    commit, branch, dirty = _parse_status(status)
    origin = _origin_url(Path(where, common_dir))
    return {
        "repo": toplevel,
        "commit": commit,
        "branch": branch,
        "dirty": dirty,
        "remote": None if origin is None else _strip_credentials(origin),
    }
