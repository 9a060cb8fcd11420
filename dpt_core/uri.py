"""Path and URI normalisation: one spelling per data product.

Every product is identified by a normalised URI string:

- a local path (``str``, ``bytes`` or :class:`os.PathLike`, relative or absolute)
  becomes ``file:///abs/path`` with symlinks resolved (the file need not exist)
  and every byte outside the RFC 3986 path characters percent-encoded, so names
  that are not valid UTF-8 survive the trip to the database and back;
- a ``str`` that starts with ``scheme://`` is a URI: the scheme is lower-cased,
  a password in it is dropped (``postgres://u:pw@h/db`` -> ``postgres://u@h/db``:
  secrets never become product names), the rest is kept as written;
- ``file://`` URIs are re-normalised as paths, so ``file:///a/../b`` and
  ``file:///b`` name the same product;
- a ``file://HOST/path`` URI is local when ``HOST`` is empty, ``localhost`` or this
  machine's own host name (``socket.gethostname()``, with or without its domain):
  it becomes ``file:///path``. Any other host is kept as the pipeline declared it
  (``file://incoming/team_a.csv`` stays ``file://incoming/team_a.csv``, the host
  lower-cased and the path normalised lexically): it names a file this machine
  cannot read, so :func:`uri_to_path` returns None for it and it is recorded
  without a content hash. (Airflow's and Prefect's own examples write relative
  paths this way; dpt records what the pipeline says rather than guess a mount.)

``bytes`` and path objects are always paths; only a ``str`` can be a URI. A
string such as ``C:`` or ``a:b`` (no ``//``) is a relative path.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from dpt_core import contracts
from dpt_core.errors import DptError, InvalidTarget
from dpt_core.process import hostname

__all__ = ["file_uri_host", "is_local", "local_path", "normalize_uri", "uri_to_path"]

#: RFC 3986 ``scheme "://"``; a scheme needs at least one letter, so ``C:`` is a path.
_SCHEME_RE: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_NORMALISED_RE: Final = re.compile(r"^[a-z][a-z0-9+.\-]*://")
#: Path characters kept as they are besides the unreserved ones (RFC 3986 ``pchar`` and "/").
_PATH_SAFE: Final = "/!$&'()*+,;=:@"


def _describe(target: object) -> str:
    text = repr(target)
    return text if len(text) <= 120 else text[:117] + "..."


def _has_nul(value: str | bytes) -> bool:
    return b"\0" in value if isinstance(value, bytes) else "\0" in value


def _as_text_or_bytes(target: object) -> str | bytes:
    """The str or bytes behind ``target``; raises :class:`InvalidTarget` for anything else."""
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str | bytes):
        raise InvalidTarget(
            f"cannot track {_describe(target)} of type {type(target).__name__}: "
            "pass a path (str, bytes or os.PathLike) or a URI string such as 's3://bucket/key'"
        )
    if not target:
        raise InvalidTarget(
            "cannot track an empty path or URI: pass a file path or a URI such as 's3://bucket/key'"
        )
    if _has_nul(target):
        raise InvalidTarget(
            f"cannot track {_describe(target)}: it contains a NUL character; remove it"
        )
    return target


def _encode_path(raw: bytes) -> str:
    return "file://" + quote(raw, safe=_PATH_SAFE)


def _path_uri(path: str | bytes) -> str:
    return _encode_path(_realpath(os.fsencode(path)))


#: ``/proc/self/fd`` names the file an open descriptor refers to, resolved by the kernel
#: (Linux); False where it cannot be read.
_proc_fd = hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd")
#: Absolute paths (as written) that end at a symlink: paths under them go to ``realpath``
#: straight away. Only a choice of method: a stale entry costs time, never a wrong answer.
_walked: tuple[bytes, ...] = ()
_WALKED_MAX = 256


def _realpath(path: bytes) -> bytes:
    """``os.path.realpath(path)``, in two system calls where the path has no symlink.

    ``realpath`` runs an ``lstat`` (and a Python loop) for every component of the path:
    ~28 us for a path ten directories deep, as survey data trees are. The kernel
    resolves an ``O_PATH`` open of an existing file in one call and names it in
    ``/proc/self/fd``; when that name is the path as written, made absolute and
    normalised (no component was a symlink), it is what ``realpath`` returns. Anything
    else takes ``realpath`` itself: a symlink on the way (and from then on every path
    under it), a file that does not exist, a case-insensitive file system spelling a
    name its own way (the name as written is kept, as ever), no ``/proc``.
    """
    global _proc_fd, _walked
    if not _proc_fd:
        return os.path.realpath(path)
    # (".." is taken after the symlink before it, as realpath and the kernel do: the path
    # as written is what is resolved; its lexical form only says what to compare with)
    written = os.path.abspath(path)
    if written.startswith(_walked):
        return os.path.realpath(path)
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)  # missing, a dangling link, not allowed, too long
    try:
        resolved = os.readlink(b"/proc/self/fd/%d" % fd)
    except OSError:
        _proc_fd = False
        return os.path.realpath(path)
    finally:
        os.close(fd)
    if resolved == written:
        return resolved
    symlink = _up_to_the_difference(written, resolved) + b"/"
    if symlink != b"/" and symlink not in _walked:  # ("/": a link named as its target)
        _walked = (*(_walked if len(_walked) < _WALKED_MAX else ()), symlink)
    return os.path.realpath(path)


def _up_to_the_difference(written: bytes, resolved: bytes) -> bytes:
    """``written`` without the trailing components it shares with ``resolved``: the
    part that ends at the symlink (or the name spelled otherwise)."""
    a, b = written.split(b"/"), resolved.split(b"/")
    same = 0
    while same < min(len(a), len(b)) - 1 and a[-1 - same] == b[-1 - same]:
        same += 1
    return b"/".join(a[: len(a) - same])


def _split_file_uri(uri: str) -> tuple[str, str]:
    """(authority, path) of a ``file://`` URI; raises :class:`InvalidTarget` for query or fragment."""
    rest = uri[len("file://") :]
    if "?" in rest or "#" in rest:
        raise InvalidTarget(
            f"file URI {_describe(uri)} has a query or fragment: percent-encode '?' as %3F and "
            "'#' as %23, or pass the path itself"
        )
    authority, slash, path = rest.partition("/")
    return authority, slash + path


@functools.cache
def _own_host_names() -> frozenset[str]:
    """Host names under which a ``file://`` URI names a file on this machine."""
    names = {"", "localhost"}
    try:
        own = hostname().lower()
    except OSError:  # pragma: no cover
        own = ""
    if own:
        names.update((own, own.split(".", 1)[0]))
    return frozenset(names)


def _host_of(authority: str) -> str:
    """The host of a file URI's authority, lower-cased, without user info."""
    return authority.rpartition("@")[2].lower()


def _is_own_host(authority: str) -> bool:
    return _host_of(authority) in _own_host_names()


def _unquoted_path(uri: str, path: str) -> bytes:
    raw = unquote_to_bytes(path)
    if b"\0" in raw:
        raise InvalidTarget(f"file URI {_describe(uri)} encodes a NUL byte (%00); remove it")
    return raw


def _file_uri_bytes(uri: str) -> bytes:
    """The raw path bytes of a local ``file://`` URI."""
    authority, path = _split_file_uri(uri)
    if not _is_own_host(authority):
        raise InvalidTarget(
            f"file URI {_describe(uri)} names host {authority!r}, not this machine: "
            "pass the path where it is mounted here"
        )
    if not path:
        raise InvalidTarget(
            f"file URI {_describe(uri)} has no path: write it as file:///absolute/path"
        )
    return _unquoted_path(uri, path)


def _remote_file_uri(uri: str, authority: str, path: str) -> str:
    """``file://host/path`` of another host: host lower-cased, path normalised lexically."""
    raw = _unquoted_path(uri, path or "/")
    normal = posixpath.normpath(raw) if raw != b"/" else raw
    if normal.startswith(b"//"):  # normpath keeps a leading "//" (POSIX allows it to mean more)
        normal = b"/" + normal.lstrip(b"/")
    return f"file://{_host_of(authority)}" + _encode_path(normal)[len("file://") :]


def file_uri_host(uri: str) -> str | None:
    """The host a normalised ``file://`` URI names when it is not this machine, else None."""
    if not uri.startswith("file://") or uri.startswith("file:///"):
        return None
    return uri[len("file://") :].partition("/")[0]


def _without_password(rest: str) -> str:
    """``rest`` (the text after ``scheme://``) with any password in its authority dropped."""
    if "@" not in rest:  # no userinfo at all: the common case, without splitting
        return rest
    authority, delimiter, tail = _split_authority(rest)
    userinfo, at, host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return rest
    return f"{user}@{host}{delimiter}{tail}"


_AUTHORITY_END: Final = re.compile(r"[/?#]")


def _split_authority(rest: str) -> tuple[str, str, str]:
    """(authority, delimiter, remainder) of the text after ``scheme://``."""
    match = _AUTHORITY_END.search(rest)
    if match is None:
        return rest, "", ""
    return rest[: match.start()], match.group(), rest[match.end() :]


def _normalise_uri_text(scheme: str, uri: str) -> str:
    rest = uri[len(scheme) + 3 :]
    if scheme == "file":
        authority, path = _split_file_uri(uri)
        if not _is_own_host(authority):
            return _remote_file_uri(uri, authority, path)
        return _path_uri(_file_uri_bytes(uri))
    if not rest:
        raise InvalidTarget(
            f"URI {_describe(uri)} has nothing after '{scheme}://': name the object, e.g. '{scheme}://bucket/key'"
        )
    return f"{scheme}://{_without_password(rest)}"


def _is_file_uri_roundtrip(uri: str) -> bool:
    """A normalised file URI re-encodes to itself (the encoding is canonical)."""
    if not uri.startswith("file://"):
        return True
    authority, _, path = uri[len("file://") :].partition("/")
    return _encode_path(unquote_to_bytes("/" + path)) == "file:///" + path and (
        authority == "" or authority == authority.lower()
    )


@contracts.post(
    lambda result: _NORMALISED_RE.match(result) is not None,
    message="result must start with scheme://",
)
@contracts.post(_is_file_uri_roundtrip, message="file URIs must use the canonical percent-encoding")
def normalize_uri(target: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """The normalised URI of a path or URI (see the module docstring).

    :raises InvalidTarget: ``target`` is empty, contains NUL, is not a str, bytes or
        path object, or is a ``file://`` URI with a query, a fragment or no path.
    """
    value = _as_text_or_bytes(target)
    if isinstance(value, str):
        match = _SCHEME_RE.match(value)
        if match is not None:
            return _normalise_uri_text(match.group("scheme").lower(), value)
    return _path_uri(value)


@contracts.pre(lambda uri: isinstance(uri, str), message="uri must be a str")
@contracts.post(
    lambda result: result is None or os.path.isabs(result), message="a local path is absolute"
)
def uri_to_path(uri: str) -> str | None:
    """The local path a ``file://`` URI names (decoded with :func:`os.fsdecode`), else None.

    None also for a ``file://`` URI of another host (see the module docstring).
    Non-UTF-8 names come back as the same ``str`` :func:`os.fsdecode` gives for the
    original bytes, so ``os.fsencode(uri_to_path(normalize_uri(b)))`` is ``b`` resolved.

    :raises InvalidTarget: a local ``file://`` URI has no path, a query or a fragment.
    """
    match = _SCHEME_RE.match(uri)
    if match is None or match.group("scheme").lower() != "file":
        return None
    local = "file://" + uri[match.end() :]
    if not _is_own_host(_split_file_uri(local)[0]):
        return None
    return os.fsdecode(_file_uri_bytes(local))


def local_path(target: str) -> str | None:
    """The local path ``target`` names, else None: a plain path is itself, a ``file://``
    URI of this host its path; another host's file, another scheme, or a ``file://`` URI
    dpt cannot read is None (never raises: for adapters asking "can I stat this here?")."""
    match = _SCHEME_RE.match(target)
    if match is None:
        return target
    if match.group("scheme").lower() != "file":
        return None
    try:
        return uri_to_path(normalize_uri(target))
    except (DptError, ValueError):
        return None


def is_local(uri: str) -> bool:
    """True when ``uri`` names a file on this machine: a plain path (no scheme) or a
    ``file://`` URI of no host, ``localhost`` or this machine's host name."""
    match = _SCHEME_RE.match(uri)
    if match is None:
        return True
    if match.group("scheme").lower() != "file":
        return False
    authority = uri[match.end() :].partition("/")[0]
    return _is_own_host(authority)
