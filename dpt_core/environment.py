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
redacted exactly when ``digest`` is not None. An environment with digests carries
the id of the key that made them (facet :data:`REDACTION_KEY_FACET`), so digests
made under different keys are known not to be comparable.

Free text (a command line, an error message, a string parameter) goes through
:func:`redact_text`: secrets are replaced in place and the rest stays readable.
Identifiers (exception names, CamelCase and snake_case words, dotted module paths,
file paths, UUIDs) are not secrets.
"""

from __future__ import annotations

import collections
import fnmatch
import functools
import hashlib
import hmac
import json
import math
import os
import re
import string
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

from dpt_core import contracts
from dpt_core.config import (
    Settings,
    get_settings,
    read_keyed_cache,
    redaction_key_id,
    write_keyed_cache,
)
from dpt_core.errors import ConfigError
from dpt_core.events import EnvironmentSnapshot, clean_text
from dpt_core.process import hostname

__all__ = [
    "MIN_KNOWN_SECRET_LENGTH",
    "REDACTION_KEY_FACET",
    "SECRET_NAMES",
    "VOLATILE_NAMES",
    "PluginRedact",
    "capture_environment",
    "clear_environment_cache",
    "fingerprint",
    "git_facet",
    "installed_distributions",
    "is_secret_field",
    "is_secret_name",
    "is_volatile_name",
    "mask_url_credentials",
    "redact",
    "redact_parameters",
    "redact_text",
    "register_secret",
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
_REDACTED: Final = "<redacted>"
_DIGEST_PREFIX: Final = "hmac-sha256:"
#: Facet of an environment with redacted variables: the id of the key of their digests.
REDACTION_KEY_FACET: Final = "dpt/redaction_key"


class _LazyPattern:
    """A regular expression compiled when first used.

    This module has some thirty patterns for redaction, ~5 ms to compile, and a process
    that records uses a few of them (see docs/performance.md, "A fresh process").
    After the first use each method is found on the instance directly.
    """

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._source = (pattern, flags)

    def __getattr__(self, name: str) -> Any:
        value = getattr(re.compile(*self._source), name)
        self.__dict__[name] = value
        return value


def _lazy_pattern(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return cast("re.Pattern[str]", _LazyPattern(pattern, flags))


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
    return _glob_matcher(tuple(p for group in pattern_groups for p in group))(name)


@functools.lru_cache(maxsize=64)
def _glob_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """``name -> bool``: does ``name`` match one of ``patterns`` (as :func:`_glob_regex` does).

    The usual shapes (``NAME``, ``PREFIX*``, ``*SUFFIX``, ``*PART*``) are tested with string
    methods on an ASCII name; other patterns and non-ASCII names use the regular
    expression. Compiling the expressions of the default name lists cost a process that
    records ~2 ms, more than all its matching.
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    parts: list[str] = []
    others: list[str] = []
    for pattern in patterns:
        lowered = pattern.lower()
        body = lowered.strip("*")
        if not pattern.isascii() or "?" in pattern or "[" in pattern or "*" in body:
            others.append(pattern)
        elif lowered == body:
            exact.add(body)
        elif lowered.startswith("*") and lowered.endswith("*"):
            parts.append(body)
        elif lowered.endswith("*"):
            prefixes.append(body)
        else:
            suffixes.append(body)
    starts, ends = tuple(prefixes), tuple(suffixes)
    rest = tuple(others)

    def matches(name: str) -> bool:
        if not name.isascii():
            regex = _glob_regex(patterns)
            return regex is not None and regex.match(name) is not None
        lowered = name.lower()
        if (
            lowered in exact
            or lowered.startswith(starts)
            or lowered.endswith(ends)
            or any(part in lowered for part in parts)
        ):
            return True
        regex = _glob_regex(rest)
        return regex is not None and regex.match(name) is not None

    return matches


def is_secret_name(key: str, settings: Settings | None = None) -> bool:
    """True when the variable ``key`` holds a secret by its name alone."""
    return _matches(key, SECRET_NAMES, (settings or get_settings()).redact_names)


def is_volatile_name(key: str, settings: Settings | None = None) -> bool:
    """True when ``key`` changes from run to run (kept out of the fingerprint)."""
    return _matches(key, VOLATILE_NAMES, (settings or get_settings()).volatile_names)


def _is_ignored(key: str, settings: Settings) -> bool:
    return _matches(key, settings.ignore_names)


# --------------------------------------------------------------------------- value shapes

_PEM_HEADER: Final = _lazy_pattern(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
#: Well-known token formats; each is 15+ characters of :data:`_KNOWN_TOKEN_RUN`.
_KNOWN_TOKENS: Final = _lazy_pattern(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"
    r"|\bxox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)?"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\b[sr]k_live_[0-9A-Za-z]{16,}"
    r"|\bhf_[A-Za-z0-9]{30,}"
    r"|\bnpm_[A-Za-z0-9]{36}"
    r"|\bpypi-AgE[A-Za-z0-9_\-]{50,}"
)
KNOWN_TOKEN_MIN_LENGTH: Final = 15
#: Runs of the characters well-known tokens are made of, long enough to hold one: the
#: token patterns are tried there only (over a whole text they cost ~10 times more).
_KNOWN_TOKEN_RUN: Final = _lazy_pattern(rf"[A-Za-z0-9_.\-]{{{KNOWN_TOKEN_MIN_LENGTH},}}")
#: A PEM private key block, whole (free text); an unterminated one runs to the end.
_PEM_BLOCK: Final = _lazy_pattern(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)",
    re.DOTALL,
)
#: A canonical UUID (8-4-4-4-12 hex): an identifier, not a secret.
_UUID: Final = _lazy_pattern(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: ``scheme://user:password@host``; the password may hold '@' (the last one before the host wins).
_URL_USERINFO: Final = _lazy_pattern(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/@,;]*)(?::(?P<password>[^\s,;]*))?@(?P<host>[^\s@/?#,;]*)"
)
_URL_QUERY_PARAM: Final = _lazy_pattern(
    r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&#\s,;]*)"
)
_TOKEN_SPLIT: Final = _lazy_pattern(r"[\s,;:=\"'@?&()\[\]{}<>|\\]+")
_URL_PART_SPLIT: Final = _lazy_pattern(r"[/.]+")
_BASE64_CHARS: Final = re.compile(r"[A-Za-z0-9+/_\-]+")
_HEX_CHARS: Final = _lazy_pattern(r"[0-9a-fA-F\-]+")
_RUN_SPLIT: Final = _lazy_pattern(r"[+/_\-]+")
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


#: How far each letter pair sits from chance in English and identifier words, in half bits:
#: ``2 * log2(P(next | previous) / (1/27))``, clamped to -12..+5 and written as one
#: letter, ``a`` = -12 .. ``r`` = +5. Rows: the previous letter (``^`` = word start,
#: then ``a``..``z``); columns: the next one (``a``..``z``, then ``$`` = word end).
#: Counted over the ~43 000 distinct words (2+ letters, seen 3+ times; each counted
#: once) of the identifiers, comments and docstrings of CPython 3.11's standard library.
_LETTER_PAIR_TABLE: Final = (
    "nmonnnmlnijmnnloinpnlkkihha",
    "jmomhilfldjpnpdmdpoqkiijken",
    "plmlpkhgpkgqjiojennjngffldp",
    "phlkpjgpmbnnihridmlplgedibp",
    "okjmrlifqffkiinielmllhfgidr",
    "mjnokljfjbfmlphljqpngkjmidq",
    "ojlloojfqeenijpjdnmmnfggjdq",
    "nhkiqiknndfmjmmjeonjlggfger",
    "qhijrhfgpcgjjjpidllnkgfeleq",
    "mkommlmdffgnnroldlooflcibll",
    "pjjkpkgimklikkpkgkojpjjghfr",
    "njjkrjjkphhmilmjfkoklhkgjdr",
    "phjlrigeqdgohhpjcgmmmieemcp",
    "rlijrhfeocgkmhopeimjmgfekcp",
    "oinoplpgnfjjhknjdhoplkfdgeq",
    "jknnhjlfjekonrmnbqnnnkmhfcm",
    "pgjkqjglnbgohhpmfpmnlggemcp",
    "lijkkjhiifgnjkhjlnnkrjighgr",
    "phllrilepbjjmkpjdlnnkifcjaq",
    "lgmhpigmocjkihmmhhnqmggdkcr",
    "ohkiqifnqbekiinjconllghfmgq",
    "mnmknkkembgpoqjnbpopegbhdel",
    "rijkrhhgqefiihmjejljgfhhgfp",
    "qhkkpjhmqfilinokfnokgigigfq",
    "njnlnlhjnefkljkpfjlqiihmkgr",
    "ljlkmjigledmnmkpejonhiighir",
    "piijrjijogikijnkfjkkigiijkq",
)
_LETTER_PAIR_BITS: Final = {
    previous + following: (ord(code) - ord("a") - 12) / 2
    for previous, row in zip("^abcdefghijklmnopqrstuvwxyz", _LETTER_PAIR_TABLE, strict=True)
    for following, code in zip("abcdefghijklmnopqrstuvwxyz$", row, strict=True)
}
_IDENTIFIER_WORD: Final = _lazy_pattern(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_IDENTIFIER_SEPARATOR: Final = _lazy_pattern(r"[_\-.+/]+")
_VOWELS: Final = frozenset("aeiouy")
#: Mean bits per letter pair over the token from which it reads as words (random: about -0.9)...
MIN_WORD_BITS: Final = 0.1
#: ... with no word of three or more letters below this mean (one random word gives it away).
MIN_BITS_OF_EACH_WORD: Final = -0.5
#: Identifiers hold few numbers (``S3Bucket``, ``Http2Connection``); random tokens many.
MAX_IDENTIFIER_NUMBERS: Final = 2
#: ... few letters in words of one or two letters (``In``, ``Or``, ``X``): random tokens many.
MAX_SHORT_WORD_SHARE: Final = 0.2
#: ... and at most one word of three or more letters without a vowel (``Sql``, ``Http``).
MAX_WORDS_WITHOUT_VOWEL: Final = 1


def _reads_as_words(token: str) -> bool:
    """True when ``token`` is an identifier made of words (``AirflowInactiveAssetException``,
    ``partition_key_range``, ``getUserName``), however random its case changes look.

    Splits it into words at separators and case changes, scores each letter pair against
    :data:`_LETTER_PAIR_TABLE`, and looks at how many words are very short or have no
    vowel. Measured over 680 000 tokens of 24-64 random characters from five alphabets
    that :func:`_base64_random` flags: about 1 in 60 000 reads as words (and so is not
    redacted by shape); about 1 in 1 500 long identifiers of the Airflow, Prefect and
    Dagster sources does not.
    """
    numbers = pairs = letters = short = without_vowel = 0
    bits = 0.0
    for part in _IDENTIFIER_SEPARATOR.split(token):
        for word in _IDENTIFIER_WORD.findall(part):
            if word[0].isdigit():
                numbers += 1
                continue
            lower = word.lower()
            marked = f"^{lower}$"
            word_bits = sum(
                _LETTER_PAIR_BITS[previous + following]
                for previous, following in zip(marked, marked[1:], strict=False)
            )
            letters += len(word)
            bits += word_bits
            pairs += len(word) + 1
            if len(word) <= 2:
                short += len(word)
                continue
            if word_bits < MIN_BITS_OF_EACH_WORD * (len(word) + 1):
                return False
            without_vowel += _VOWELS.isdisjoint(lower)
    return (
        pairs > 0
        and bits >= MIN_WORD_BITS * pairs
        and numbers <= MAX_IDENTIFIER_NUMBERS
        and short <= MAX_SHORT_WORD_SHARE * letters
        and without_vowel <= MAX_WORDS_WITHOUT_VOWEL
    )


def _looks_random(token: str, hex_is_identifier: bool = False) -> bool:
    """A long token from the base64/hex alphabets that looks machine-generated.

    Canonical UUIDs inside it are identifiers and do not count; neither does a token
    that reads as words (:func:`_reads_as_words`).

    :param hex_is_identifier: hex tokens are commit ids or digests, not secrets.
    """
    core = token.rstrip("=")
    if len(core) < MIN_TOKEN_LENGTH or not _BASE64_CHARS.fullmatch(core):
        return False
    if "-" in core and _UUID.search(core):
        core = _UUID.sub("-", core).strip("-")
        if len(core) < MIN_TOKEN_LENGTH:
            return False
    if _HEX_CHARS.fullmatch(core):
        return not hex_is_identifier and _hex_random(core)
    return _base64_random(core) and not _reads_as_words(core)


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
    if "PRIVATE KEY" in value and _PEM_HEADER.search(value):
        return True
    return len(value) >= KNOWN_TOKEN_MIN_LENGTH and any(
        _KNOWN_TOKENS.search(run) for run in _KNOWN_TOKEN_RUN.findall(value)
    )


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

    A value that holds secret flags, assignments or auth headers (``JAVA_OPTS`` with
    ``-Dx.password=...``) is kept with those values masked, like a URL with a password.

    :param plugin_redact: asked first (the ``dpt_redact`` hook); a non-None answer
        replaces the value, and the variable counts as redacted.
    """
    settings = settings or get_settings()
    replacement = plugin_redact(key, value) if plugin_redact is not None else None
    if replacement is not None:
        return replacement, _digest(key, value, settings)
    masked = _url_masked_unless_withheld(key, value, settings)
    if masked is None:
        return None, _digest(key, value, settings)
    masked = _mask_named_secrets(masked)
    if masked != value:
        return masked, _digest(key, value, settings)
    return value, None


def _url_masked_unless_withheld(key: str, value: str, settings: Settings) -> str | None:
    """None when the variable is kept as a digest only (secret by name or by value shape),
    else its value with URL credentials masked."""
    if is_secret_name(key, settings) or _has_known_token(value):
        return None
    masked = mask_url_credentials(value)
    if _has_random_token(masked, hex_is_identifier=_matches(key, _IDENTIFIER_NAMES)):
        return None
    return masked


# --------------------------------------------------------------------------- free text


def redact_text(text: str) -> str:
    """Free text (a command line, an error message, a string parameter), secrets masked.

    In place, keeping the rest readable:

    - values of this process's secret variables and of :func:`register_secret` calls
      (known-secret masking, :data:`MIN_KNOWN_SECRET_LENGTH`) -> ``<redacted>``;
    - PEM private key blocks -> ``<redacted>``;
    - URL passwords, tokens used as URL user names, secret query parameters -> ``***``;
    - values of secret-named flags (``--token X``, ``--api-key=X``, ``-token X``),
      assignments (``PGPASSWORD=X``, ``-Dx.password=X``, ``password = X``), quoted keys
      (``{'password': 'X'}``, ``"api_key": "X"``), auth headers (``Authorization: Bearer X``,
      ``X-Api-Key: X``, ``Cookie: ...``), ``curl -u user:X`` and ``mysql -pX`` -> ``<redacted>``,
      also inside ``shlex`` quoting (``'--token=a b'``);
    - well-known token shapes and long random tokens -> ``<redacted>``.

    Identifiers are not secrets: exception names, CamelCase / snake_case words, dotted
    module paths, file paths, UUIDs, hex commit ids, numbers and dates stay as they are.
    """
    if len(text) <= 256:  # parameters and tags repeat from run to run: memoised
        return _redact_short_text(text)
    return _redact_text(text)


@functools.lru_cache(maxsize=8192)
def _redact_short_text(text: str) -> str:
    return _redact_text(text)


def _redact_text(text: str) -> str:
    known = _known_secrets()
    if known is not None:
        text = known.sub(_REDACTED, text)
    if "-----BEGIN" in text:
        text = _PEM_BLOCK.sub(_REDACTED, text)
    text = _mask_named_secrets(mask_url_credentials(text))
    text = _KNOWN_TOKEN_RUN.sub(_mask_known_tokens, text)
    return _TOKEN_CANDIDATE.sub(_mask_random_token, text)


def _mask_known_tokens(match: re.Match[str]) -> str:
    return _KNOWN_TOKENS.sub(_REDACTED, match.group())


#: Runs of characters that may form a token (:data:`_TOKEN_SPLIT` is the complement).
_TOKEN_CANDIDATE: Final = _lazy_pattern(rf"[^\s,;:=\"'@?&()\[\]{{}}<>|\\]{{{MIN_TOKEN_LENGTH},}}")


def _mask_random_token(match: re.Match[str]) -> str:
    token = match.group()
    if token.startswith("//"):  # host and path of a URL: each part on its own
        return _URL_PART.sub(_mask_random_token, token)
    if token[0] in "/~.":  # a path, never a token (see _candidate_tokens)
        return token
    return _REDACTED if _looks_random(token, hex_is_identifier=True) else token


_URL_PART: Final = _lazy_pattern(rf"[^/.]{{{MIN_TOKEN_LENGTH},}}")


# --------------------------------------------------------------------------- named secrets

#: Field, flag, parameter, header and assignment names (normalised: lower case, ``_``
#: between words) whose values are secret. Narrower than the variable-name rules: a
#: ``partition_key`` or an ``asset_key`` is an identifier, an ``author`` no credential.
_SECRET_FIELD: Final = _lazy_pattern(
    r"passw(?:or)?d|passwd|passphrase|(?:^|_|store|key|trust)pass(?:in|out)?(?:$|_)"
    r"|(?:^|_)pwd(?:$|_)|secret|token|credential|api_?key|private_?key|access_?key"
    r"|(?:signing|encryption|master|account|shared|storage|license|hmac)_?key"
    r"|(?:^|_)auth(?:$|_)|authorization|cookie|session_?id|signature"
)
#: ... unless the name says the value is where the secret is, or how it is used.
_NOT_SECRET_FIELD: Final = _lazy_pattern(
    r"^no_|_(?:file|path|dir|env|var|type|method|mode|url|uri|host|port|user|username|name"
    r"|length|len|ttl|expiry|expires|timeout|header|backend|provider|endpoint|command|cmd)$"
)


@functools.lru_cache(maxsize=4096)
def is_secret_field(name: str) -> bool:
    """True when a flag, parameter, header or key called ``name`` holds a secret.

    ``--api-key``, ``client_secret``, ``PGPASSWORD``, ``X-Auth-Token``, ``keyStorePassword``,
    ``-storepass``: yes. ``--token-file``, ``--no-password``, ``auth_type``,
    ``partition_key``: no (the value is a path, a switch, a kind, an identifier).
    """
    normal = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return bool(_SECRET_FIELD.search(normal)) and not _NOT_SECRET_FIELD.search(normal)


#: Words one of which is in every secret name: where to look before :func:`is_secret_field`.
_HINTS: Final = (
    "pass",
    "pwd",
    "secret",
    "token",
    "cred",
    "key",
    "auth",
    "cookie",
    "session",
    "sign",
)
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_NAME_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")
#: The rest of a shell word: unquoted characters, escapes, quoted strings (an unclosed
#: quote runs to the end: a secret is never cut short).
_WORD_PIECES: Final = r"""(?:[^\s'"\\]|\\.|'[^']*(?:'|\Z)|"(?:[^"\\]|\\.)*(?:"|\Z))"""
_SHELL_WORD: Final = _lazy_pattern(_WORD_PIECES + "+", re.DOTALL)
_SHELL_WORD_REST: Final = _lazy_pattern(_WORD_PIECES + "*", re.DOTALL)
#: At a name: ``--name=value``, ``--name value``, ``-name value``, ``NAME=value``,
#: ``name = value``, ``-Dname=value``.
_OPTION: Final = _lazy_pattern(
    r"(?P<dashes>-{1,2})?(?P<name>[A-Za-z_][\w.\-]*)(?P<sep>[ \t]*=(?!=)[ \t]*|[ \t]+)"
)
#: At a quote: ``'password': value`` / ``"api_key": value`` (a mapping's repr, JSON).
_QUOTED_KEY: Final = _lazy_pattern(
    r"(?P<quote>['\"])(?P<name>[\w.\-]+)(?P=quote)[ \t]*[:=][ \t]*"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,}\]]+)"
)
#: At a name: ``Authorization: Bearer x`` (the scheme stays).
_HEADER: Final = _lazy_pattern(
    r"(?P<name>[A-Za-z][\w\-]*)[ \t]*:[ \t]*"
    r"(?:(?P<scheme>(?i:bearer|basic|digest|token|negotiate|ntlm|bot|apikey|aws4-hmac-sha256"
    r"|oauth|jwt|ssws|hmac|key))[ \t]+)?"
)
_HEADER_NAMES: Final = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie"))
_HEADER_VALUE: Final = _lazy_pattern(r"[^\s'\"]+")
#: ``curl -u user:password`` (also ``--user``, ``--proxy-user``, ``-U``).
_USER_PASSWORD: Final = _lazy_pattern(
    r"(?<![\w\-])(?:-u|-U|--user|--proxy-user)(?:=|[ \t]+)['\"]?[^\s:'\"]*:(?P<password>[^\s'\"]+)"
)
#: ``mysql -pSECRET`` (MySQL and MariaDB clients only: elsewhere ``-p`` is a port or a parameter).
_MYSQL_CLIENT: Final = _lazy_pattern(r"\b(?:mysql|mariadb)[\w\-]*\b")
_MYSQL_PASSWORD: Final = _lazy_pattern(r"(?<![\w\-])-p(?P<password>\S+)")
#: Values that are placeholders, not secrets (compared lower-case).
_NOT_SECRET_VALUES: Final = frozenset(("none", "null", "nil", "true", "false", "***", "''", '""'))
#: ``$TOKEN``, ``${token}``, ``$1``, ``$(cat file)``: a reference to a secret, not the secret
#: (``$lowercase`` may be a password starting with "$": redacted).
_REFERENCE: Final = _lazy_pattern(
    r"\$(?:[A-Z_][A-Z0-9_]*$|\{[A-Za-z_][A-Za-z0-9_]*\}$|[0-9@*]$|\()"
)
#: Characters before a name that make it part of something else (a URL, a variable).
_NOT_BEFORE_NAME: Final = frozenset("/$@%+?&:\\")
_QUOTES: Final = "'\""
#: A name is followed by its value after one of these.
_SEPARATORS: Final = frozenset("= :\t")

Span = tuple[int, int, str]


def _mask_named_secrets(text: str) -> str:
    """``text`` with the values of secret-named flags, assignments, keys and headers masked.

    Looks only where a secret word occurs (``str.find`` over the text), then reads the
    name around it and what follows: cheap for texts without any.
    """
    if not _SEPARATORS.intersection(text):
        return text  # no name is followed by a value
    spans: list[Span] = []
    for start in _name_starts(text):
        spans += _spans_at(text, start)
    if "-u" in text or "-U" in text or "--user" in text or "--proxy-user" in text:
        spans += [
            (m.start("password"), m.end("password"), _REDACTED)
            for m in _USER_PASSWORD.finditer(text)
            if not m.group("password").isdigit()  # uid:gid
        ]
    if "-p" in text and _MYSQL_CLIENT.search(text):
        spans += [
            (m.start("password"), m.end("password"), _REDACTED)
            for m in _MYSQL_PASSWORD.finditer(text)
        ]
    return _replace_spans(text, spans) if spans else text


def _name_starts(text: str) -> list[int]:
    """Where the names holding a secret word start (the word may sit anywhere in them)."""
    lowered = text.translate(_ASCII_LOWER)  # same length as text, unlike str.lower()
    starts: set[int] = set()
    for hint in _HINTS:
        index = lowered.find(hint)
        while index >= 0:
            start = index
            while start > 0 and text[start - 1] in _NAME_CHARS:
                start -= 1
            starts.add(start)
            index = lowered.find(hint, index + len(hint))
    return sorted(starts)


def _spans_at(text: str, start: int) -> list[Span]:
    before = text[start - 1] if start else " "
    if before in _NOT_BEFORE_NAME:
        return []
    if before in _QUOTES:
        quoted = _QUOTED_KEY.match(text, start - 1)
        if quoted is not None:
            return _quoted_key_span(quoted)
    header = _HEADER.match(text, start)
    if header is not None:
        return _header_span(text, header, before if before in _QUOTES else "")
    option = _OPTION.match(text, start)
    if option is not None:
        opened = before if before in _QUOTES and _opens_word(text, start - 1) else ""
        return _option_span(text, option, opened)
    return []


def _opens_word(text: str, quote_at: int) -> bool:
    return quote_at == 0 or text[quote_at - 1] in " \t\n([{,=;"


def _replace_spans(text: str, spans: list[Span]) -> str:
    """Replace non-overlapping spans (the one starting first wins an overlap)."""
    pieces: list[str] = []
    position = 0
    for start, end, replacement in sorted(spans):
        if start < position:
            continue
        pieces += [text[position:start], replacement]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _is_placeholder(value: str) -> bool:
    return (
        not value
        or value.lower() in _NOT_SECRET_VALUES
        or value.startswith((_REDACTED, _MASK))
        or _REFERENCE.match(value) is not None
    )


def _quoted_value(value: str) -> str:
    """The replacement for a whole shell word or quoted string holding a secret."""
    if _is_placeholder(value):
        return value
    body = value.rstrip(",;)]}")  # punctuation of the sentence around an unquoted value
    tail = value[len(body) :]
    quote = body[:1]
    if len(body) >= 2 and quote in _QUOTES and body.endswith(quote) and quote not in body[1:-1]:
        inner = body[1:-1]
    else:
        quote, inner = "", body
    if _is_placeholder(inner):
        return value
    return f"{quote}{_REDACTED}{quote}{tail}"


def _option_span(text: str, match: re.Match[str], opened: str) -> list[Span]:
    name, spaced = match.group("name"), "=" not in match.group("sep")
    if spaced and not match.group("dashes") or not is_secret_field(name):
        return []
    start = match.end()
    if opened:  # '--token=a b' or "PGPASSWORD=x y": up to the closing quote
        close = _closing_quote(text, start, opened)
        if _is_placeholder(text[start:close]):
            return []
        rest = _SHELL_WORD_REST.match(text, min(close + 1, len(text)))
        return [(start, rest.end() if rest else len(text), _REDACTED + opened)]
    if spaced and text.startswith("-", start):
        return []  # --password -h db: a switch followed by another flag
    word = _SHELL_WORD.match(text, start)
    if word is None:
        return []
    replacement = _quoted_value(word.group())
    return [(start, word.end(), replacement)] if replacement != word.group() else []


def _closing_quote(text: str, start: int, quote: str) -> int:
    index = start
    while True:
        index = text.find(quote, index)
        if index < 0:
            return len(text)
        if quote == "'" or text[index - 1] != "\\":
            return index
        index += 1


def _quoted_key_span(match: re.Match[str]) -> list[Span]:
    if not is_secret_field(match.group("name")):
        return []
    value = match.group("value")
    replacement = _quoted_value(value)
    return [(match.start("value"), match.end("value"), replacement)] if replacement != value else []


def _header_span(text: str, match: re.Match[str], opened: str) -> list[Span]:
    name = match.group("name").lower()
    if name not in _HEADER_NAMES and ("-" not in name or not is_secret_field(name)):
        return []
    start = match.end()
    if opened:  # -H 'Cookie: a=1; session=x': the whole quoted header
        end = _closing_quote(text, start, opened)
        newline = text.find("\n", start, end)
        end = newline if newline >= 0 else end
    elif "cookie" in name:  # cookies hold spaces: to the end of the line
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
    else:
        word = _HEADER_VALUE.match(text, start)
        end = word.end() if word else start
    value = text[start:end].rstrip()
    return [] if _is_placeholder(value) else [(start, start + len(value), _REDACTED)]


# --------------------------------------------------------------------------- known secrets

#: Shorter values are not masked in free text: "1", "true", "admin" would mask ordinary words.
MIN_KNOWN_SECRET_LENGTH: Final = 6
#: From this length a known secret is masked anywhere; shorter ones only as whole words
#: (not inside a longer run of letters and digits: "postgres" stays in "postgresql").
ANYWHERE_SECRET_LENGTH: Final = 16
#: Variables whose names match the secret rules but whose values describe, not authenticate.
_DESCRIPTOR_NAMES: Final = ("XDG_*", "DESKTOP_SESSION", "*_SOCK", "XAUTHORITY", "*AUTHOR*")

_known_lock = threading.Lock()
_registered: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_known_ready = False


def register_secret(value: str) -> None:
    """Mask ``value`` wherever dpt stores free text from now on (commands, errors, parameters).

    For adapters and plugins that learn secrets the environment does not show (an
    orchestrator's connection passwords, a token fetched at run time). Values shorter
    than :data:`MIN_KNOWN_SECRET_LENGTH` are ignored; shorter than
    :data:`ANYWHERE_SECRET_LENGTH`, they are masked as whole words only.
    """
    if not isinstance(value, str):
        raise TypeError(f"register_secret() takes a str, not {type(value).__name__}")
    candidates = {v for v in (value, value.strip()) if _maskable(v)}
    with _known_lock:
        if candidates - _registered:
            _registered.update(candidates)
            _forget_known_secrets()


def _forget_known_secrets() -> None:
    global _known_pattern, _known_ready
    _known_pattern, _known_ready = None, False
    _redact_short_text.cache_clear()


def _known_secrets() -> re.Pattern[str] | None:
    """One pattern for every known secret: this process's secret variables (read once,
    again after :func:`clear_environment_cache`) and the registered values."""
    global _known_pattern, _known_ready
    if _known_ready:
        return _known_pattern
    with _known_lock:
        if not _known_ready:
            values = _environment_secrets(os.environ, _settings_or_default()) | _registered
            _known_pattern = _known_secret_pattern(values)
            _known_ready = True
    return _known_pattern


def _settings_or_default() -> Settings:
    try:
        return get_settings()
    except ConfigError:
        return Settings()


def _environment_secrets(environ: Mapping[str, str], settings: Settings) -> set[str]:
    """The values redaction withholds or masks in ``environ``, as they would appear in text."""
    found: set[str] = set()
    for key, value in environ.items():
        if not value or _matches(key, _DESCRIPTOR_NAMES):
            continue
        if _url_masked_unless_withheld(key, value, settings) is None:
            found.update((value, value.strip()))
        elif "://" in value:
            found.update(_url_secrets(value))
    return {value for value in found if _maskable(value)}


def _url_secrets(value: str) -> Iterator[str]:
    """The parts of ``value`` that URL masking hides: passwords, token user names, signatures."""
    for match in _URL_USERINFO.finditer(value):
        user, password = match.group("user"), match.group("password")
        if password:
            yield password
        elif user and (_has_known_token(user) or _looks_random(user)):
            yield user
    for match in _URL_QUERY_PARAM.finditer(value):
        if match.group("value") and _matches(match.group("name"), SECRET_NAMES):
            yield match.group("value")


def _maskable(value: str) -> bool:
    return (
        len(value) >= MIN_KNOWN_SECRET_LENGTH
        and value[0] not in "/~"  # a path says where a secret is, it is not one
        and value.lower() not in _NOT_SECRET_VALUES
    )


def _known_secret_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = []
    for value in sorted(values, key=lambda v: (-len(v), v)):
        escaped = re.escape(value)
        if len(value) < ANYWHERE_SECRET_LENGTH:
            if value[0].isalnum():
                escaped = r"(?<![A-Za-z0-9])" + escaped
            if value[-1].isalnum():
                escaped += r"(?![A-Za-z0-9])"
        alternatives.append(escaped)
    return re.compile("|".join(alternatives)) if alternatives else None


# --------------------------------------------------------------------------- parameters


def _is_secret_parameter(key: str, settings: Settings) -> bool:
    return is_secret_field(key) or _matches(key, settings.redact_names)


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


def _raw_environ() -> tuple[list[tuple[Any, Any]], Callable[[Any], str], Callable[[Any], str]]:
    """os.environ's undecoded ``(name, value)`` pairs (bytes on POSIX) and its decoders:
    iterating os.environ itself decodes every name and value (~20 us a scan)."""
    raw = getattr(os.environ, "_data", None)
    if isinstance(raw, dict):  # (a copy: another thread may set one meanwhile)
        return list(raw.items()), os.environ.decodekey, os.environ.decodevalue
    return list(os.environ.items()), str, str


def variables_starting_with(prefix: str) -> dict[str, str]:
    """This process's variables whose names start with ``prefix``, decoding no other."""
    pairs, decode_key, decode_value = _raw_environ()
    encoded: Any = os.environ.encodekey(prefix) if decode_key is not str else prefix
    return {decode_key(k): decode_value(v) for k, v in pairs if k.startswith(encoded)}


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
    if environ is None:
        pairs, decode_key, decode_value = _raw_environ()
    else:
        pairs, decode_key, decode_value = list(environ.items()), str, str
    # Memoised per name, and per name and value unless a plugin redacts (it may answer
    # differently): this runs at every invocation start (every task try of a
    # dag.test(), every flow run of a worker).
    memo = _memo_for(settings)
    names = memo.names
    values = memo.values if plugin_redact is None else {}
    chosen: dict[str, str] = {}
    for raw_key, raw_value in pairs:
        try:
            key = names[raw_key]
        except KeyError:
            key = _clean_name(decode_key(raw_key))
            if _is_ignored(key, settings) or not is_volatile_name(key, settings):
                key = None
            names[raw_key] = key
        if key is None:
            continue
        pair = (raw_key, raw_value)
        value = values.get(pair)
        if value is None:
            value = values[pair] = _render(
                *redact(key, clean_text(decode_value(raw_value)), settings, plugin_redact)
            )
        chosen[key] = value
    return dict(sorted(chosen.items()))


class _VolatileMemo:
    """What :func:`volatile_variables` made of the variables it read, for one settings:
    their names and values are looked up here instead of being decoded, matched and
    redacted again. Bounded: each starts over past :data:`_VOLATILE_MEMO_LIMIT` entries."""

    __slots__ = ("settings", "names", "values")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: name as read (bytes from os.environ on POSIX) -> its clean name when volatile
        #: and not ignored, else None
        self.names: dict[Any, str | None] = {}
        #: (name, value) as read, or as given to :func:`rendered_variable` -> the
        #: recorded (redacted) value
        self.values: dict[tuple[Any, Any], str] = {}


_VOLATILE_MEMO_LIMIT: Final = 4096
_volatile_memo: _VolatileMemo | None = None


def _memo_for(settings: Settings) -> _VolatileMemo:
    global _volatile_memo
    memo = _volatile_memo
    if memo is None or memo.settings is not settings:
        memo = _volatile_memo = _VolatileMemo(settings)
    if len(memo.values) > _VOLATILE_MEMO_LIMIT:
        memo.values = {}
    if len(memo.names) > _VOLATILE_MEMO_LIMIT:
        memo.names = {}
    return memo


def rendered_variable(key: str, value: str, settings: Settings) -> str:
    """The recorded value of the volatile variable ``key=value``: the value, masked, or
    ``"<redacted:...>"`` (see :func:`redact`); memoised like :func:`volatile_variables`
    (an orchestrator hands the same run-context variables to every task try)."""
    values = _memo_for(settings).values
    pair = (key, value)
    rendered = values.get(pair)
    if rendered is None:
        rendered = values[pair] = _render(*redact(key, value, settings))
    return rendered


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
        import importlib.metadata  # only on a cache miss

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


def _login_name() -> str:
    """What :func:`getpass.getuser` answers, without importing :mod:`getpass` (which loads
    ``termios`` for its password prompt): the first of ``LOGNAME``, ``USER``, ``LNAME``
    and ``USERNAME`` set, else the password database's name for this user id."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if user := os.environ.get(name):
            return user
    import pwd

    return pwd.getpwuid(os.getuid())[0]


def _user() -> str:
    try:
        return _login_name()
    except (KeyError, OSError, ImportError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


@functools.cache
def _host_facts(cache_dir: Path | None = None) -> tuple[str, str, str]:
    """(python version, implementation, platform): fixed for the life of the process.

    Kept in ``cache_dir`` between processes: :func:`platform.platform` runs ``uname -p``
    and reads the interpreter's binary for its C library version on Linux, ~30 ms of a
    fresh process that records. What they depend on (the kernel as ``os.uname`` tells
    it, the interpreter file and version) keys the cached answer.
    """
    if cache_dir is None:
        return _compute_host_facts()
    try:
        stat = os.stat(sys.executable)
        key = [
            *os.uname(),
            sys.executable,
            sys.version,
            stat.st_ino,
            stat.st_size,
            stat.st_mtime_ns,
        ]
    except (OSError, AttributeError):  # no os.uname (Windows), no executable
        return _compute_host_facts()
    path = cache_dir / "host-facts.json"
    cached = read_keyed_cache(path, key)
    if isinstance(cached, list) and len(cached) == 3 and all(isinstance(f, str) for f in cached):
        return cached[0], cached[1], cached[2]
    facts = _compute_host_facts()
    write_keyed_cache(path, key, facts)
    return facts


def _compute_host_facts() -> tuple[str, str, str]:
    import platform

    return platform.python_version(), platform.python_implementation(), platform.platform()


@functools.cache
def _distributions() -> tuple[tuple[str, str], ...]:
    return installed_distributions()


_snapshots: dict[tuple[Any, ...], EnvironmentSnapshot] = {}


def clear_environment_cache() -> None:
    """Forget cached snapshots, distributions and this process's known secrets (after
    installing packages or changing ``os.environ``, say). Registered secrets stay."""
    _snapshots.clear()
    _distributions.cache_clear()
    with _known_lock:
        _forget_known_secrets()


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
    python_version, implementation, platform_name = _host_facts(settings.cache_dir)
    variables = _stable_variables(environ, settings, plugin_redact)
    if any(digest is not None for _, _, digest in variables):
        facets = {**facets, REDACTION_KEY_FACET: redaction_key_id(settings.redaction_key)}
    fields: dict[str, Any] = {
        "python_version": python_version,
        "implementation": implementation,
        "platform": platform_name,
        "hostname": hostname(),
        "user": _user(),
        "distributions": _distributions(),
        "variables": variables,
        "facets": facets,
    }
    return EnvironmentSnapshot(fingerprint=fingerprint(**fields), **fields)


# --------------------------------------------------------------------------- git

GIT_TIMEOUT: Final = 3.0


def _git(cwd: str, *args: str) -> str | None:
    """stdout of ``git args`` in ``cwd``, or None when git is missing, fails or hangs."""
    import subprocess

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


def _may_be_in_work_tree(where: str) -> bool:
    """False when git surely finds no work tree from ``where``: no ``.git`` there or above,
    and no ``GIT_DIR`` / ``GIT_WORK_TREE`` pointing elsewhere. Saves starting git (a
    process) in every fresh process that records outside a repository."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return True
    directory = os.path.realpath(where)  # git walks up the physical path
    while True:
        if os.path.lexists(os.path.join(directory, ".git")):
            return True
        parent = os.path.dirname(directory)
        if parent == directory:
            return False
        directory = parent


def git_facet(cwd: str | None = None) -> dict[str, Any] | None:
    """The git state of the work tree holding ``cwd`` (default: the current directory).

    ``{"repo", "commit", "branch", "dirty", "remote"}``; ``commit`` is None before
    the first commit, ``branch`` None on a detached HEAD, ``dirty`` ignores
    untracked files (like ``git describe --dirty``), ``remote`` is the origin URL
    without credentials (None when there is no origin). None outside a work tree
    or without git. Two ``git`` calls, each with a :data:`GIT_TIMEOUT`.
    """
    where = os.getcwd() if cwd is None else cwd
    if not _may_be_in_work_tree(where):
        return None
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
