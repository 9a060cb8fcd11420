"""Tags: free-form ``key=value`` labels on runs and on product versions.

A tag value is given as a JSON scalar (``str``, ``int``, ``float``, ``bool``) and kept
in its text form, which is what filters compare: ``{"sector": 42}`` and
``dpt runs --tag sector=42`` name the same tag. The rules (docs/tags.md):

* a key is 1 to 128 characters, a letter, digit or ``_`` and then letters, digits and
  ``_ . - : /`` (``survey``, ``tess.sector``, ``team/owner``); keys are case-sensitive;
* a value is at most 512 characters once in text form, without surrounding
  whitespace; ``True``/``False`` become ``true``/``false``, numbers their Python
  text (``42``, ``0.5``); None, lists and dicts are refused;
* one value per key and target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from dpt_core.errors import DptError

__all__ = ["InvalidTag", "TagValue", "Tags", "normalize_tags", "parse_tag", "tag_text"]

#: What a tag's value may be given as; it is stored and returned as text.
TagValue = str | int | float | bool
#: Tags as given to ``tags=``.
Tags = Mapping[str, TagValue]

KEY_LENGTH = 128
VALUE_LENGTH = 512
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")
KEY_RULE = (
    "a tag key is 1 to 128 characters: a letter, digit or '_', then letters, digits "
    "and '_ . - : /' (e.g. 'survey', 'tess.sector')"
)


class InvalidTag(DptError, ValueError):
    """A tag key or value that cannot be recorded (the message names it and the fix)."""


def check_key(key: object) -> str:
    """``key`` if it is a valid tag key, else :class:`InvalidTag` naming it."""
    if not isinstance(key, str):
        raise InvalidTag(f"tag key {key!r} is not a string: {KEY_RULE}")
    if len(key) > KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidTag(f"tag key {key!r} is not valid: {KEY_RULE}")
    return key


def tag_text(key: str, value: object) -> str:
    """The text form of tag ``key``'s ``value`` (what is stored and compared)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidTag(f"tag {key!r}: {value!r} is not a finite number: give a string")
        text = repr(value)
    elif isinstance(value, str):
        from dpt_core.events import clean_text

        text = clean_text(value).strip()
    elif value is None:
        raise InvalidTag(
            f"tag {key!r} has no value (None): give a string, number or boolean; to remove "
            f"a tag use tag(target, remove=[{key!r}]) or 'dpt tag TARGET --remove {key}'"
        )
    else:
        raise InvalidTag(
            f"tag {key!r}: a value is a string, number or boolean, not "
            f"{type(value).__name__}: give its text (e.g. json.dumps(value))"
        )
    if len(text) > VALUE_LENGTH:
        raise InvalidTag(
            f"tag {key!r}: the value is {len(text)} characters, more than {VALUE_LENGTH}: "
            "keep long text in metadata= or parameters= instead"
        )
    return text


def normalize_tags(tags: Tags | None) -> dict[str, str]:
    """``tags`` validated, as ``{key: text}`` sorted by key ({} for None)."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidTag(
            f"tags must be a mapping of key to value, like {{'survey': 'tess'}}, not "
            f"{type(tags).__name__}"
        )
    return {check_key(k): tag_text(k, v) for k, v in sorted(tags.items(), key=_key_order)}


def _key_order(item: tuple[object, object]) -> str:
    return str(item[0])


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (from the command line) as ``(key, text)``."""
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidTag(f"tag {text!r} has no '=': write KEY=VALUE, e.g. survey=tess")
    key = key.strip()
    return check_key(key), tag_text(key, value)


def parse_tag_filter(texts: Iterable[str], given_as: str) -> dict[str, str]:
    """Tag filters (``KEY=VALUE``, several: runs with all of them) as ``{key: value}``.

    The one parser of ``dpt runs --tag``, ``/api/runs?tag=`` and the explorer's runs page:
    they take and refuse the same filters. A key given twice with two values can match no
    run (a run has one value per key) and is refused like a malformed tag.

    :param given_as: how the caller names the input in messages (``--tag``,
        ``query parameter 'tag'``).
    :raises InvalidTag: naming the input and the tag.
    """
    found: dict[str, str] = {}
    for text in texts:
        try:
            key, value = parse_tag(text)
        except InvalidTag as exc:
            raise InvalidTag(f"{given_as}: {exc}") from None
        if found.get(key, value) != value:
            raise InvalidTag(
                f"{given_as} gives {key!r} twice ({found[key]!r} and {value!r}): a run has "
                "one value per key, give one"
            )
        found[key] = value
    return found


def parse_tags(texts: Iterable[str]) -> dict[str, str]:
    """Several ``KEY=VALUE``; the last value of a repeated key wins."""
    return dict(parse_tag(t) for t in texts)
