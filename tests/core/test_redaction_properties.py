"""Properties of free-text redaction (``redact_text``: commands, errors, string parameters).

Two directions, over generated error texts and command lines:

- every planted secret is gone from the output: tokens of well-known shapes, random
  tokens, passwords in URLs, values of secret-named flags, assignments and auth
  headers (in free text and in ``shlex``-quoted commands), values of this process's
  secret variables and values registered with ``register_secret``;
- text without secrets comes out unchanged: exception names, CamelCase and snake_case
  identifiers, dotted module paths, file paths, UUIDs, numbers, ISO dates, English words.
"""

from __future__ import annotations

import os
import random
import shlex
import string
import uuid
from collections.abc import Iterator
from itertools import count

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpt_core import environment
from dpt_core.config import Settings
from dpt_core.environment import clear_environment_cache, redact, redact_text

SETTINGS = Settings(redaction_key=b"property-key", cache_dir=os.devnull)  # type: ignore[arg-type]
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "-_"

#: Ordinary words of pipelines and their errors; none of them names a secret.
WORDS = tuple(
    [
        "task",
        "asset",
        "inlet",
        "outlet",
        "inactive",
        "active",
        "schedule",
        "partition",
        "mapping",
        "window",
        "offset",
        "start",
        "end",
        "flow",
        "run",
        "deployment",
        "worker",
        "process",
        "queue",
        "batch",
        "upstream",
        "downstream",
        "product",
        "version",
        "lineage",
        "record",
        "table",
        "column",
        "schema",
        "database",
        "connection",
        "timeout",
        "retry",
        "failed",
        "success",
        "skipped",
        "cancelled",
        "crashed",
        "invalid",
        "missing",
        "unknown",
        "value",
        "error",
        "warning",
        "exception",
        "operator",
        "sensor",
        "trigger",
        "event",
        "materialization",
        "observation",
        "catalog",
        "survey",
        "archive",
        "calibrate",
        "reduce",
        "image",
        "frame",
        "exposure",
        "detector",
        "filter",
        "magnitude",
        "source",
        "target",
        "output",
        "input",
        "file",
        "directory",
        "path",
        "bucket",
        "object",
        "storage",
        "transfer",
        "download",
        "upload",
        "parse",
        "load",
        "dump",
        "convert",
        "validate",
        "check",
        "report",
        "summary",
        "daily",
        "hourly",
        "weekly",
        "monthly",
        "first",
        "last",
        "next",
        "previous",
    ]
)
SUFFIXES = ("Error", "Exception", "Warning", "Failure", "")


def camel(words: list[str]) -> str:
    return "".join(word.capitalize() for word in words)


word = st.sampled_from(WORDS)
exception_name = st.tuples(st.lists(word, min_size=2, max_size=8), st.sampled_from(SUFFIXES)).map(
    lambda parts: camel(parts[0]) + parts[1]
)
lower_camel = st.lists(word, min_size=3, max_size=8).map(lambda ws: ws[0] + camel(ws[1:]))
snake_case = st.lists(word, min_size=2, max_size=8).map("_".join)
upper_snake = snake_case.map(str.upper)
dotted_path = st.tuples(st.lists(word, min_size=1, max_size=4), exception_name).map(
    lambda parts: ".".join([*parts[0], parts[1]])
)
file_path = st.tuples(
    st.sampled_from(["/", "~/", "./", "", "s3://bucket/"]),
    st.lists(st.one_of(word, snake_case, exception_name), min_size=1, max_size=5),
    st.sampled_from(["", ".csv", ".fits", ".parquet", ".json"]),
).map(lambda parts: parts[0] + "/".join(parts[1]) + parts[2])
uuids = st.uuids().map(str)
numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
iso_dates = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "+00:00"),
)
airflow_run_id = iso_dates.map(lambda d: f"scheduled__{d}")
innocent_piece = st.one_of(
    word,
    exception_name,
    lower_camel,
    snake_case,
    upper_snake,
    dotted_path,
    file_path,
    uuids,
    numbers,
    iso_dates,
    airflow_run_id,
)
SEPARATORS = (" ", ": ", ", ", " (", ") ", "\n", " -> ", " '", "' ", '"')
innocent_text = st.lists(
    st.tuples(innocent_piece, st.sampled_from(SEPARATORS)), min_size=1, max_size=12
).map(lambda parts: "".join(piece + sep for piece, sep in parts).strip())


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_environment_cache()
    yield
    clear_environment_cache()


# --------------------------------------------------------------------------- nothing to hide


@given(text=innocent_text)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


@given(name=exception_name, message=innocent_text)
def test_exception_messages_keep_the_exception_name(name: str, message: str) -> None:
    error = f"{name}: {message}"
    assert redact_text(error) == error


@given(value=st.one_of(exception_name, dotted_path, snake_case, lower_camel, uuids, file_path))
def test_identifiers_in_variables_stay_clear(value: str) -> None:
    assert redact("PIPELINE_SETTING", value, SETTINGS) == (value, None)


@given(argv=st.lists(innocent_piece, min_size=1, max_size=10))
def test_commands_without_secrets_are_unchanged(argv: list[str]) -> None:
    command = shlex.join(["tool", *argv])
    assert redact_text(command) == command


# --------------------------------------------------------------------------- planted secrets


def distinctive(min_size: int = 8, max_size: int = 30) -> st.SearchStrategy[str]:
    """A secret that cannot occur in the surrounding text by chance ("Qz7" + letters, digits)."""
    return st.text(ALNUM, min_size=min_size - 3, max_size=max_size - 3).map(lambda s: "Qz7" + s)


SECRET_FLAGS = (
    "token", "password", "passwd", "secret", "api-key", "apikey", "api_key", "access-key",
    "private-key", "auth", "auth-token", "client-secret", "secret-key", "access-token",
    "db-password", "passphrase", "storepass",
)  # fmt: skip
SECRET_ASSIGNMENTS = (
    "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "password", "db_password", "MYSQL_PWD",
    "GITHUB_TOKEN", "api_key", "client_secret", "SLACK_BOT_TOKEN", "javax.net.ssl.keyStorePassword",
)  # fmt: skip


@st.composite
def flag_in_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    flag = draw(st.sampled_from(SECRET_FLAGS))
    dashes = draw(st.sampled_from(["--", "-"])) if len(flag) > 1 else "-"
    value = draw(distinctive())
    form = draw(st.sampled_from(["{d}{f} {v}", "{d}{f}={v}", "{d}{f}='{v}'", '{d}{f}="{v}"']))
    return form.format(d=dashes, f=flag, v=value), [value]


@st.composite
def assignment_in_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    name = draw(st.sampled_from(SECRET_ASSIGNMENTS))
    value = draw(distinctive())
    form = draw(
        st.sampled_from(["{n}={v}", "{n}='{v}'", '{n}="{v}"', "export {n}={v}", "-D{n}={v}"])
    )
    return form.format(n=name, v=value), [value]


@st.composite
def header_in_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    value = draw(distinctive())
    form = draw(
        st.sampled_from(
            [
                '"Authorization: Bearer {v}"',
                "'Authorization: Basic {v}'",
                "Authorization: Bearer {v}",
                "authorization: token {v}",
                "Authorization: {v}",
                "Proxy-Authorization: Basic {v}",
                "-H 'X-Api-Key: {v}'",
                '--header "X-Auth-Token: {v}"',
                "-H 'Private-Token: {v}'",
                "-H 'Cookie: theme=dark; session={v}'",
                "{{'password': '{v}'}}",
                '{{"api_key": "{v}", "page": 2}}',
            ]
        )
    )
    return form.format(v=value), [value]


@st.composite
def url_password(draw: st.DrawFn) -> tuple[str, list[str]]:
    password = draw(distinctive())
    scheme = draw(st.sampled_from(["postgresql", "mysql+pymysql", "redis", "https", "amqp"]))
    user = draw(st.sampled_from(["app", "pipeline", "postgres"]))
    return f"{scheme}://{user}:{password}@db.example.org:5432/warehouse", [password]


@st.composite
def known_shape(draw: st.DrawFn) -> tuple[str, list[str]]:
    def fixed(alphabet: str, size: int) -> str:
        return draw(st.text(alphabet, min_size=size, max_size=size))

    token = draw(
        st.sampled_from(["aws", "github", "gitlab", "slack", "jwt", "stripe", "google"]).map(
            lambda kind: {
                "aws": lambda: "AKIA" + fixed(string.ascii_uppercase + string.digits, 16),
                "github": lambda: "ghp_" + fixed(ALNUM, 36),
                "gitlab": lambda: "glpat-" + fixed(B64, 20),
                "slack": lambda: "xoxb-1234-5678-" + fixed(ALNUM, 24),
                "jwt": lambda: f"eyJ{fixed(B64, 20)}.eyJ{fixed(B64, 30)}.{fixed(B64, 43)}",
                "stripe": lambda: "sk_live_" + fixed(ALNUM, 24),
                "google": lambda: "AIza" + fixed(B64, 35),
            }[kind]()
        )
    )
    return token, [token]


planted = st.one_of(
    flag_in_text(), assignment_in_text(), header_in_text(), url_password(), known_shape()
)


@given(before=innocent_text, secret=planted, after=innocent_text)
def test_planted_secrets_never_survive(
    before: str, secret: tuple[str, list[str]], after: str
) -> None:
    construct, needles = secret
    text = f"{before} {construct} {after}"
    out = redact_text(text)
    for needle in needles:
        assert needle not in out, (text, out)
    assert "<redacted>" in out or "***" in out
    assert out.startswith(before) and out.endswith(after), (text, out)


@given(
    argv_before=st.lists(innocent_piece, max_size=4),
    flag=st.sampled_from(SECRET_FLAGS),
    first=distinctive(),
    glue=st.sampled_from(["", " ", "'", '"', " '", '" ', "\\", "$(", "; "]),
    second=distinctive(),
    equals=st.booleans(),
    argv_after=st.lists(innocent_piece, max_size=4),
)
def test_secret_flag_values_in_shlex_quoted_commands_never_survive(
    argv_before: list[str],
    flag: str,
    first: str,
    glue: str,
    second: str,
    equals: bool,
    argv_after: list[str],
) -> None:
    value = first + glue + second if glue else first
    option = [f"--{flag}={value}"] if equals else [f"--{flag}", value]
    argv = ["tool", *argv_before, *option, *argv_after]
    command = shlex.join(argv)
    out = redact_text(command)
    assert first not in out and second not in out, (command, out)
    assert f"--{flag}" in out
    if not equals:
        assert out.endswith(shlex.join(argv_after)), (command, out)


@given(
    name=st.sampled_from(["PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD"]),
    first=distinctive(),
    glue=st.sampled_from(["", " ", "'", '"', "=", ";"]),
    second=distinctive(),
)
def test_secret_assignments_in_shlex_quoted_commands_never_survive(
    name: str, first: str, glue: str, second: str
) -> None:
    value = first + glue + second if glue else first
    command = shlex.join(["env", f"{name}={value}", "psql", "-h", "db", "warehouse"])
    out = redact_text(command)
    assert first not in out and second not in out, (command, out)
    assert out.startswith(f"env {name}=") or out.startswith(f"env '{name}=")
    assert out.endswith("psql -h db warehouse")


@settings(derandomize=True, max_examples=300)
@given(
    seed=st.integers(),
    size=st.integers(24, 64),
    alphabet=st.sampled_from([ALNUM, B64, ALNUM + "+/"]),
    before=innocent_text,
)
def test_random_tokens_never_survive(seed: int, size: int, alphabet: str, before: str) -> None:
    generator = random.Random(seed)
    token = "".join(generator.choice(alphabet) for _ in range(size))
    assume(any(c.isdigit() for c in token) and any(c.isalpha() for c in token))
    assume(token[0] not in "/-+")  # a word starting with "/" is a path; "-" starts a flag
    out = redact_text(f"{before} {token}")
    assert token not in out
    assert out.startswith(before)


# --------------------------------------------------------------------------- known secrets


@given(
    name=st.sampled_from(["SURVEY_ARCHIVE_TOKEN", "WAREHOUSE_PASSWORD", "MY_API_KEY"]),
    secret=distinctive(),
    before=innocent_text,
    after=innocent_text,
)
def test_values_of_secret_variables_are_masked_in_text(
    name: str, secret: str, before: str, after: str
) -> None:
    saved = os.environ.get(name)
    os.environ[name] = secret
    clear_environment_cache()
    try:
        text = f"{before} {secret} {after}"
        out = redact_text(text)
        assert secret not in out
        assert out == f"{before} <redacted> {after}"
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved
        clear_environment_cache()


UNIQUE = count(1000)


@given(secret=distinctive(8, 16), before=innocent_text, after=innocent_text, glued=st.booleans())
def test_registered_secrets_are_masked_in_text(
    secret: str, before: str, after: str, glued: bool
) -> None:
    """Whole words for short values; anywhere, even glued to other text, from 16 characters."""
    secret = f"{secret[:16]}{next(UNIQUE)}"  # registered values stay: a new one each time
    if glued:
        secret = secret.ljust(16, "x")
        text = f"{before} /data/{secret}v2.csv {after}"
    else:
        text = f"{before} {secret} {after}"
    assert redact_text(text) == text
    environment.register_secret(secret)
    out = redact_text(text)
    assert secret not in out
    assert out == text.replace(secret, "<redacted>")


def test_fixed_examples_hold_without_hypothesis() -> None:
    """The examples from the issue, so a failure reads as a sentence."""
    assert uuid.UUID(str(uuid.uuid4()))  # the strategies above rely on canonical UUIDs
    error = "AirflowInactiveAssetInInletOrOutletException: Task has the following inactive assets"
    assert redact_text(error) == error
