"""Environment capture, redaction and fingerprint (dpt_core.environment)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import re
import shlex
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpt_core.config import Settings, redaction_key_id
from dpt_core.environment import (
    capture_environment,
    clear_environment_cache,
    fingerprint,
    git_facet,
    installed_distributions,
    is_secret_name,
    is_volatile_name,
    mask_url_credentials,
    redact,
    secret_value_shape,
    volatile_variables,
)
from dpt_core.events import EnvironmentSnapshot

KEY = b"test-redaction-key"
SETTINGS = Settings(redaction_key=KEY, cache_dir=Path("/nonexistent-dpt-cache"))


def expected_digest(key: str, value: str, secret: bytes = KEY) -> str:
    mac = hmac.new(secret, f"{key}\0{value}".encode("utf-8", "surrogateescape"), hashlib.sha256)
    return "hmac-sha256:" + mac.hexdigest()[:32]


def dumped(snapshot: EnvironmentSnapshot) -> str:
    """Everything a store or a spool could write: the JSON and the repr."""
    return json.dumps(snapshot.to_dict(), ensure_ascii=False) + repr(snapshot)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_environment_cache()
    yield
    clear_environment_cache()


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "pgpassword",
        "MYSQL_PWD",
        "HTPASSWD_FILE",
        "SMTP_PASS",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "API_KEY",
        "KEY",
        "SSH_KEY_PATH",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "HTTP_AUTHORIZATION",
        "PRIVATE_THING",
        "SESSION_ID",
        "COOKIE_JAR",
        "URL_SIGNATURE",
        "SENTRY_DSN",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name, SETTINGS)
    assert redact(name, "hunter2", SETTINGS) == (None, expected_digest(name, "hunter2"))


@pytest.mark.parametrize(
    "name", ["HOME", "LANG", "PATH", "PYTHONPATH", "SHELL", "EDITOR", "CONDA_PREFIX"]
)
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name, SETTINGS)
    assert redact(name, "plain value", SETTINGS) == ("plain value", None)


def test_extra_redact_names_from_settings() -> None:
    custom = SETTINGS.replace(redact_names=("SURVEY_*",))
    assert is_secret_name("survey_archive", custom)
    assert not is_secret_name("survey_archive", SETTINGS)
    assert redact("SURVEY_ARCHIVE", "x", custom) == (None, expected_digest("SURVEY_ARCHIVE", "x"))


@pytest.mark.parametrize(
    "name",
    [
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "TERM_PROGRAM",
        "ssh_connection",
        "XDG_SESSION_ID",
        "AIRFLOW_CTX_DAG_RUN_ID",
        "PREFECT__FLOW_RUN_ID",
        "DAGSTER_RUN_JOB_NAME",
        "DPT_RUN_INVOCATION",
        "GITHUB_RUN_ID",
        "PYTEST_CURRENT_TEST",
        "INVOCATION_ID",
        "TMUX_PANE",
        "LS_COLORS",
    ],
)
def test_volatile_names(name: str) -> None:
    assert is_volatile_name(name, SETTINGS)


def test_extra_volatile_names_from_settings() -> None:
    assert not is_volatile_name("BUILD_NUMBER", SETTINGS)
    assert is_volatile_name("BUILD_NUMBER", SETTINGS.replace(volatile_names=("build_*",)))


# --------------------------------------------------------------------------- values

URL_CASES = [
    ("postgresql://u:pw@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:p@ss@db.example.org:5432/x", "postgresql://u:***@db.example.org:5432/x"),
    ("mysql://root:@localhost/test", "mysql://root:@localhost/test"),
    ("a=https://x-access-token:abc@github.com/o/r, b=redis://:pw2@cache:6379/0", None),
    (
        "https://s3.example/b/k?X-Amz-Signature=abc123&part=1",
        "https://s3.example/b/k?X-Amz-Signature=***&part=1",
    ),
    ("https://api.example/v1?api_key=zzz", "https://api.example/v1?api_key=***"),
]


@pytest.mark.parametrize(("value", "masked"), URL_CASES)
def test_url_credentials_keep_host_and_database(value: str, masked: str | None) -> None:
    clear, digest = redact("DATABASE_URL_INNOCENT", value, SETTINGS)
    if masked == value:
        assert (clear, digest) == (value, None)
        return
    assert digest == expected_digest("DATABASE_URL_INNOCENT", value)
    if masked is not None:
        assert clear == masked
    else:
        assert clear == "a=https://x-access-token:***@github.com/o/r, b=redis://:***@cache:6379/0"
    assert secret_value_shape(value)


def test_token_used_as_url_user_name_is_masked() -> None:
    token = "Zx9" + "kQ2mW7pL4vB8nR3tY6hJ1cF5dG0sA"
    assert (
        mask_url_credentials(f"https://{token}@github.com/o/r.git")
        == "https://***@github.com/o/r.git"
    )
    assert (
        mask_url_credentials("https://alice@github.com/o/r.git")
        == "https://alice@github.com/o/r.git"
    )


def test_url_without_credentials_is_clear() -> None:
    value = "https://pypi.org/simple"
    assert redact("PIP_INDEX_URL", value, SETTINGS) == (value, None)
    assert not secret_value_shape(value)


def test_digest_depends_on_key_name_value_and_redaction_key() -> None:
    base = redact("TOKEN", "v", SETTINGS)[1]
    assert base == expected_digest("TOKEN", "v")
    assert redact("TOKEN", "w", SETTINGS)[1] != base
    assert redact("API_TOKEN", "v", SETTINGS)[1] != base
    assert redact("TOKEN", "v", SETTINGS.replace(redaction_key=b"other"))[1] != base


def test_plugin_redact_is_asked_first_and_counts_as_redacted() -> None:
    def plugin(key: str, value: str) -> str | None:
        return "<survey-secret>" if key == "SURVEY_LOGIN" else None

    assert redact("SURVEY_LOGIN", "alice", SETTINGS, plugin) == (
        "<survey-secret>",
        expected_digest("SURVEY_LOGIN", "alice"),
    )
    assert redact("HOME", "/root", SETTINGS, plugin) == ("/root", None)
    assert redact("DB_PASSWORD", "x", SETTINGS, plugin) == (
        None,
        expected_digest("DB_PASSWORD", "x"),
    )


def test_hex_identifiers_stay_clear_under_identifier_names() -> None:
    sha = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    assert redact("GITHUB_SHA", sha, SETTINGS) == (sha, None)
    assert redact("CI_COMMIT_SHA", sha, SETTINGS) == (sha, None)
    assert redact("SOMETHING", sha, SETTINGS) == (None, expected_digest("SOMETHING", sha))


@pytest.mark.parametrize(
    "value",
    [
        "x86_64-conda_cos6-linux-gnu",
        "my_long_environment_name_2024",
        "release-candidate-2024-10-01-build3",
        "en_US.UTF-8",
        "--max-workers=16 --log-level=debug --config=/etc/pipeline/config.yaml",
        "org.apache.spark.deploy.SparkSubmitArgumentsParser",
    ],
)
def test_ordinary_values_are_clear(value: str) -> None:
    assert redact("SETTING", value, SETTINGS) == (value, None)


# Absolute paths whose components include random-looking store hashes (nix, conda, pip caches);
# well-known token prefixes are left out: a GitHub token is redacted even inside a path.
KNOWN_PREFIXES = re.compile(
    r"gh[pousr]_|github_pat_|glpat-|xox[abpr]-|AKIA|ASIA|AIza|[sr]k_live_|eyJ"
)
path_component = st.one_of(
    st.text(string.ascii_lowercase + string.digits + "_-.", min_size=1, max_size=40),
    st.text(string.ascii_letters + string.digits, min_size=24, max_size=48),
).filter(lambda c: not KNOWN_PREFIXES.search(c))
absolute_path = st.lists(path_component, min_size=1, max_size=6).map(
    lambda parts: "/" + "/".join(parts)
)


@given(
    paths=st.lists(
        st.one_of(absolute_path, absolute_path.map(lambda p: "~" + p)), min_size=1, max_size=8
    )
)
def test_path_lists_are_not_redacted(paths: list[str]) -> None:
    value = os.pathsep.join(paths)
    for name in ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "SURVEY_DATA"):
        assert redact(name, value, SETTINGS) == (value, None)


# --------------------------------------------------------------------------- secrets never leak

alnum = string.ascii_letters + string.digits
# "Q!" marks every generated secret, so a match in the output can only be a leak, not a coincidence.
secret_text = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ",
    min_size=6,
    max_size=40,
).map(lambda s: "Q!" + s)


def fixed(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=size)


known_tokens = st.one_of(
    fixed(string.ascii_uppercase + string.digits, 16).map(lambda s: "AKIA" + s),
    fixed(alnum, 36).map(lambda s: "ghp_" + s),
    fixed(alnum, 36).map(lambda s: "gho_" + s),
    fixed(alnum + "_", 82).map(lambda s: "github_pat_" + s),
    fixed(alnum, 24).map(lambda s: "xoxb-1234-5678-" + s),
    st.tuples(fixed(alnum + "-_", 20), fixed(alnum + "-_", 30), fixed(alnum + "-_", 43)).map(
        lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"
    ),
    fixed(alnum + "+/", 64).map(
        lambda s: f"-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----"
    ),
    fixed(alnum + "-_", 35).map(lambda s: "AIza" + s),
    fixed(alnum, 24).map(lambda s: "sk_live_" + s),
)
innocent_name = st.from_regex(r"[A-Z][A-Z0-9]{2,12}(_[A-Z0-9]{2,8})?", fullmatch=True).filter(
    lambda n: (
        not is_secret_name(n, SETTINGS)
        and not is_volatile_name(n, SETTINGS)
        and not re.search("SHA|COMMIT|REV|DIGEST|CHECKSUM|HASH", n)
    )
)
secret_name = st.tuples(
    st.from_regex(r"[A-Z]{0,6}_?", fullmatch=True),
    st.sampled_from(
        ["PASSWORD", "SECRET", "TOKEN", "API_KEY", "CREDENTIALS", "AUTH", "PRIVATE", "DSN"]
    ),
    st.from_regex(r"(_[A-Z]{1,6})?", fullmatch=True),
).map("".join)


def capture(environ: dict[str, str]) -> EnvironmentSnapshot:
    return capture_environment(SETTINGS, {"note": "test"}, environ=environ)


@given(name=secret_name, secret=secret_text)
def test_secret_under_secret_name_never_appears(name: str, secret: str) -> None:
    snapshot = capture({name: secret, "HOME": "/home/u"})
    assert secret not in dumped(snapshot)
    assert (name, None, expected_digest(name, secret)) in snapshot.variables


@given(
    name=innocent_name,
    token=known_tokens,
    before=st.text(alnum + " ", max_size=10),
    after=st.text(alnum + " ", max_size=10),
)
def test_well_known_tokens_under_innocent_names_never_appear(
    name: str, token: str, before: str, after: str
) -> None:
    value = f"{before} {token} {after}"
    snapshot = capture({name: value})
    assert token not in dumped(snapshot)
    assert dict((k, (v, d)) for k, v, d in snapshot.variables)[name] == (
        None,
        expected_digest(name, value),
    )


@settings(derandomize=True, max_examples=200)
@given(
    name=innocent_name,
    seed=st.integers(),
    size=st.integers(32, 64),
    alphabet=st.sampled_from([alnum, alnum + "-_", alnum + "+/"]),
)
def test_random_tokens_under_innocent_names_never_appear(
    name: str, seed: int, size: int, alphabet: str
) -> None:
    generator = random.Random(seed)
    token = "".join(generator.choice(alphabet) for _ in range(size))
    hypothesis.assume(any(c.isdigit() for c in token) and any(c.isalpha() for c in token))
    hypothesis.assume(not token.startswith("/"))  # a word starting with "/" is a path, by design
    snapshot = capture({name: f"--auth {token}"})
    assert token not in dumped(snapshot)


@given(
    name=innocent_name,
    scheme=st.sampled_from(["postgresql", "mysql+pymysql", "redis", "https", "amqp"]),
    user=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
    password=secret_text,
    host=st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z]{2,5})?", fullmatch=True),
    raw=st.booleans(),
)
def test_url_passwords_never_appear(
    name: str, scheme: str, user: str, password: str, host: str, raw: bool
) -> None:
    hypothesis.assume(not any(c.isspace() for c in password) and not set(password) & set(",;"))
    secret = password if raw else quote(password, safe="")
    value = f"{scheme}://{user}:{secret}@{host}/db"
    snapshot = capture({name: value})
    assert secret not in dumped(snapshot)
    clear, digest = dict((k, (v, d)) for k, v, d in snapshot.variables)[name]
    assert digest == expected_digest(name, value)
    assert clear is None or clear == f"{scheme}://{user}:***@{host}/db"


# --------------------------------------------------------------------------- volatile variables


def test_volatile_variables_are_redacted_and_ignored_names_dropped() -> None:
    environ = {
        "PWD": "/work",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__2024",
        "SSH_AUTH_TOKEN": "abc",
        "TERM": "xterm",
        "HOME": "/root",
        "DPT_RUN_SECRET": "s",
    }
    custom = SETTINGS.replace(ignore_names=("term",))
    assert volatile_variables(custom, environ=environ) == {
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__2024",
        "DPT_RUN_SECRET": f"<redacted:{expected_digest('DPT_RUN_SECRET', 's')}>",
        "PWD": "/work",
        "SSH_AUTH_TOKEN": f"<redacted:{expected_digest('SSH_AUTH_TOKEN', 'abc')}>",
    }


def test_the_process_s_volatile_variables_follow_its_environment_as_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read from os.environ (memoised per name and value: every invocation start asks),
    the answer is the one the same variables give passed in to a memo made afresh, after
    every change: the memo kept from before the change, and one kept for other settings,
    must not answer."""
    import dpt_core.environment as environment

    def afresh(settings: Settings) -> dict[str, str]:
        kept, environment._volatile_memo = environment._volatile_memo, None
        try:
            return volatile_variables(settings, environ=dict(os.environ))
        finally:
            environment._volatile_memo = kept

    custom = SETTINGS.replace(ignore_names=("term",))
    steps = [
        ("AIRFLOW_CTX_TASK_ID", "first"),
        ("AIRFLOW_CTX_TASK_ID", "second"),
        ("MY_RUN_ID", "postgresql://u:hunter2@db/x"),
        ("DPT_RUN_SECRET", "s3cr3t"),
        ("AIRFLOW_CTX_TASK_ID", None),
        ("TERM", "xterm-256color"),
        ("NOT_VOLATILE", "anything"),
        ("MY_RUN_ID", "plain"),
    ]
    for name, value in steps:
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
        for chosen in (SETTINGS, custom, SETTINGS):  # (each asked right after another's)
            assert volatile_variables(chosen) == afresh(chosen)
    found = volatile_variables(SETTINGS)
    assert "AIRFLOW_CTX_TASK_ID" not in found and found["MY_RUN_ID"] == "plain"
    assert found["DPT_RUN_SECRET"] == f"<redacted:{expected_digest('DPT_RUN_SECRET', 's3cr3t')}>"
    assert "TERM" in found and "TERM" not in volatile_variables(custom)


# --------------------------------------------------------------------------- capture


def test_capture_records_host_interpreter_and_sorted_variables() -> None:
    environ = {"PWD": "/somewhere", "ZED": "z", "HOME": "/root", "API_TOKEN": "t0k", "NOISE": "n"}
    snapshot = capture_environment(
        SETTINGS.replace(ignore_names=("NOISE",)), {"git": None}, environ=environ
    )
    assert snapshot.python_version == ".".join(map(str, sys.version_info[:3]))
    assert snapshot.implementation == "CPython"
    assert snapshot.hostname == os.uname().nodename
    assert snapshot.user
    assert snapshot.facets == {"git": None, "dpt/redaction_key": redaction_key_id(KEY)}
    assert snapshot.variables == (
        ("API_TOKEN", None, expected_digest("API_TOKEN", "t0k")),
        ("HOME", "/root", None),
        ("ZED", "z", None),
    )
    fields = {
        name: value
        for name, value in snapshot.to_dict(recurse=False).items()
        if name != "fingerprint"
    }
    assert snapshot.fingerprint == fingerprint(**fields)


def test_capture_lists_installed_distributions() -> None:
    distributions = dict(capture({}).distributions)
    assert distributions["pytest"] == pytest.__version__
    assert distributions["hypothesis"] == hypothesis.__version__
    assert list(distributions) == sorted(distributions)


def test_capture_is_cached_per_settings_facets_and_environment() -> None:
    environ = {"A": "1"}
    first = capture_environment(SETTINGS, {"x": 1}, environ=environ)
    assert capture_environment(SETTINGS, {"x": 1}, environ=dict(environ)) is first
    assert capture_environment(SETTINGS, {"x": 2}, environ=environ).fingerprint != first.fingerprint
    assert (
        capture_environment(SETTINGS, {"x": 1}, environ={"A": "2"}).fingerprint != first.fingerprint
    )
    other_key = SETTINGS.replace(redact_names=("A",))
    assert capture_environment(other_key, {"x": 1}, environ=environ).variables[0][1] is None


def test_volatile_variables_do_not_change_the_fingerprint() -> None:
    one = capture({"HOME": "/root", "PWD": "/a", "AIRFLOW_CTX_TRY_NUMBER": "1"})
    two = capture({"HOME": "/root", "PWD": "/b", "AIRFLOW_CTX_TRY_NUMBER": "2"})
    assert one.fingerprint == two.fingerprint
    assert one.variables == (("HOME", "/root", None),)


def test_changed_secret_changes_fingerprint_without_revealing_it() -> None:
    one = capture({"DB_PASSWORD": "first-secret"})
    two = capture({"DB_PASSWORD": "second-secret"})
    assert one.fingerprint != two.fingerprint
    assert "first-secret" not in dumped(one) and "second-secret" not in dumped(two)


def fake_site(root: Path, names: list[str]) -> str:
    root.mkdir(parents=True)
    for name in names:
        (root / name).mkdir()
    return str(root)


def test_distributions_from_directory_names(tmp_path: Path) -> None:
    first = fake_site(
        tmp_path / "first",
        [
            "Foo_Bar-1.0.dist-info",
            "baz-2.0-py3.11.egg-info",
            "~ip-1.0.dist-info",
            "zope.interface-6.1.dist-info",
        ],
    )
    second = fake_site(
        tmp_path / "second", ["foo_bar-9.9.dist-info", "Legacy.egg-info", "qux-0.1.dist-info"]
    )
    (Path(second) / "Legacy.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 1.1\nName: Legacy.Pkg\nVersion: 3.2.1\n"
    )
    assert installed_distributions([first, "", str(tmp_path / "missing"), second]) == (
        ("baz", "2.0"),
        ("foo-bar", "1.0"),
        ("legacy-pkg", "3.2.1"),
        ("qux", "0.1"),
        ("zope-interface", "6.1"),
    )


# --------------------------------------------------------------------------- fingerprint

dists = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=6)),
    max_size=8,
    unique_by=lambda d: d[0],
)
variables = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=8),
        st.one_of(st.none(), st.text(max_size=8)),
        st.one_of(st.none(), st.text(max_size=8)),
    ).filter(lambda v: v[1] is not None or v[2] is not None),
    max_size=8,
    unique_by=lambda v: v[0],
)


def env_fields(
    distributions: list[tuple[str, str]], variables: list[tuple[str, str | None, str | None]]
) -> dict[str, object]:
    return {
        "python_version": "3.11.7",
        "implementation": "CPython",
        "platform": "Linux",
        "hostname": "h",
        "user": "u",
        "distributions": distributions,
        "variables": variables,
        "facets": {"git": {"commit": "abc"}},
    }


@given(distributions=dists, variables=variables, data=st.data())
def test_fingerprint_is_stable_under_permutation(
    distributions: list[tuple[str, str]],
    variables: list[tuple[str, str | None, str | None]],
    data: st.DataObject,
) -> None:
    shuffled_d = data.draw(st.permutations(distributions))
    shuffled_v = data.draw(st.permutations(variables))
    one = fingerprint(**env_fields(distributions, variables))  # type: ignore[arg-type]
    assert len(one) == 64 and int(one, 16) >= 0
    assert one == fingerprint(**env_fields(shuffled_d, shuffled_v))  # type: ignore[arg-type]


@given(distributions=dists, variables=variables.filter(bool), data=st.data())
def test_strict_subset_of_variables_changes_fingerprint(
    distributions: list[tuple[str, str]],
    variables: list[tuple[str, str | None, str | None]],
    data: st.DataObject,
) -> None:
    dropped = data.draw(st.integers(0, len(variables) - 1))
    subset = variables[:dropped] + variables[dropped + 1 :]
    assert fingerprint(**env_fields(distributions, variables)) != fingerprint(
        **env_fields(distributions, subset)
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"python_version": "3.12.0"},
        {"implementation": "PyPy"},
        {"platform": "Darwin"},
        {"hostname": "other"},
        {"user": "root"},
        {"distributions": [("numpy", "2.1.0")]},
        {"facets": {}},
        {"variables": [("A", None, "hmac-sha256:1")]},
        {"variables": [("A", "hmac-sha256:1", None)]},
    ],
)
def test_every_field_counts(change: dict[str, object]) -> None:
    base = env_fields([("numpy", "2.0.0")], [("A", "1", None)])
    assert fingerprint(**base) != fingerprint(**{**base, **change})  # type: ignore[arg-type]


def test_masked_value_counts_by_its_digest() -> None:
    base = env_fields([], [("DB", "postgresql://u:***@h/x", "hmac-sha256:aa")])
    changed = env_fields([], [("DB", "postgresql://u:***@h/x", "hmac-sha256:bb")])
    assert fingerprint(**base) != fingerprint(**changed)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- git


def git(cwd: Path, *args: str) -> str:
    command = [
        "git",
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.org",
        "-c",
        "init.defaultBranch=main",
        *args,
    ]
    return subprocess.run(
        command, cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "pipeline.py").write_text("print('v1')\n")
    (root / "sub").mkdir()
    git(root, "add", "pipeline.py")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_git_facet_in_a_clean_repository(repo: Path) -> None:
    facet = git_facet(str(repo / "sub"))
    assert facet == {
        "repo": str(repo.resolve()),
        "commit": git(repo, "rev-parse", "HEAD"),
        "branch": "main",
        "dirty": False,
        "remote": None,
    }


def test_git_facet_sees_dirty_tree_detached_head_and_cleaned_remote(repo: Path) -> None:
    git(
        repo,
        "remote",
        "add",
        "origin",
        "https://ci-bot:ghp_secretsecret@github.com/survey/pipeline.git",
    )
    (repo / "pipeline.py").write_text("print('v2')\n")
    facet = git_facet(str(repo))
    assert facet is not None
    assert facet["dirty"] is True
    assert facet["remote"] == "https://github.com/survey/pipeline.git"
    git(repo, "stash", "-q")
    git(repo, "checkout", "-q", "--detach")
    facet = git_facet(str(repo))
    assert facet is not None
    assert (facet["branch"], facet["dirty"]) == (None, False)


def test_git_facet_ssh_remote_keeps_user(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "ssh://git@example.org/survey/pipeline.git")
    facet = git_facet(str(repo))
    assert facet is not None and facet["remote"] == "ssh://git@example.org/survey/pipeline.git"


def test_git_facet_before_first_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    facet = git_facet(str(tmp_path))
    assert facet is not None
    assert (facet["commit"], facet["branch"], facet["dirty"]) == (None, "main", False)


def test_git_facet_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_facet(str(outside)) is None
    assert git_facet(str(tmp_path / "missing")) is None


def test_git_facet_without_git_executable(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_facet(str(repo)) is not None
    monkeypatch.setenv("PATH", str(repo / "sub"))  # a directory with no git in it
    assert git_facet(str(repo)) is None


# --------------------------------------------------------------------------- identifiers (issue 15, item 5)

IDENTIFIER_TEXTS = [
    "AirflowInactiveAssetInInletOrOutletException: Task has the following inactive assets",
    "airflow.exceptions.AirflowInactiveAssetInInletOrOutletException",
    "DagsterInvalidDefinitionError: @asset 'daily_partitioned_events' has no partitions",
    "prefect.exceptions.PrefectHTTPStatusError: Client error '404 Not Found'",
    "KeyError: 'partition_key_range_for_time_window_partitions_definition'",
    "File /opt/airflow/dags/ExampleAssetPartitionDagProcessor.py, line 42, in execute",
    "run 0f6b3c1e-4d2a-4b8e-9f3a-2c1d5e6f7a8b of flow 1c9e7a52-0b6d-4f3e-8a21-7d5c3b9e4f10",
    "manual__2024-05-01T12:00:00.123456+00:00 scheduled__2024-05-02T00:00:00+00:00",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 broke getUserAccountSettingsFromCache",
    "SparkSubmitArgumentsParserConfiguration failed after 3 retries (exit 137)",
]


@pytest.mark.parametrize("text", IDENTIFIER_TEXTS)
def test_identifiers_are_not_secrets_in_text(text: str) -> None:
    from dpt_core.environment import redact_text

    assert redact_text(text) == text


@pytest.mark.parametrize(
    "value",
    [
        "AirflowInactiveAssetInInletOrOutletException",
        "org.apache.spark.deploy.SparkSubmitArgumentsParser",
        "DagsterUserCodeUnreachableErrorHandler",
        "0f6b3c1e-4d2a-4b8e-9f3a-2c1d5e6f7a8b",
        "flow-run-0f6b3c1e-4d2a-4b8e-9f3a-2c1d5e6f7a8b",
    ],
)
def test_identifiers_are_not_secrets_in_variables(value: str) -> None:
    assert redact("PIPELINE_SETTING", value, SETTINGS) == (value, None)


def test_run_ids_are_context_not_secrets() -> None:
    """Prefect worker runs: the run ids are what a user looks for (issue 15, item 5)."""
    run, flow, deployment = (
        "0f6b3c1e-4d2a-4b8e-9f3a-2c1d5e6f7a8b",
        "1c9e7a52-0b6d-4f3e-8a21-7d5c3b9e4f10",
        "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    )
    environ = {
        "PREFECT__FLOW_RUN_ID": run,
        "PREFECT__FLOW_ID": flow,
        "PREFECT__DEPLOYMENT_ID": deployment,
        "PREFECT__API_KEY": run,  # a UUID under a secret name stays a secret
    }
    assert volatile_variables(SETTINGS, environ=environ) == {
        "PREFECT__API_KEY": f"<redacted:{expected_digest('PREFECT__API_KEY', run)}>",
        "PREFECT__DEPLOYMENT_ID": deployment,
        "PREFECT__FLOW_ID": flow,
        "PREFECT__FLOW_RUN_ID": run,
    }


# --------------------------------------------------------------------------- commands (item 5)


def test_the_command_line_of_the_issue() -> None:
    from dpt_core.environment import redact_text

    command = shlex.join(
        ["tool", "--token", "hunter3", "--api-key=hunter4", "PGPASSWORD=hunter5",
         "Authorization: Bearer hunter6abcdef"]
    )  # fmt: skip
    assert redact_text(command) == (
        "tool --token <redacted> --api-key=<redacted> PGPASSWORD=<redacted> "
        "'Authorization: Bearer <redacted>'"
    )


TEXT_CASES = [
    # flags, both forms, long and single-dash, quoted by shlex
    ("tool --password s3cr3t -v", "tool --password <redacted> -v"),
    ("tool --client-secret=abc123 --page 2", "tool --client-secret=<redacted> --page 2"),
    (
        "keytool -storepass changeit1 -keypass changeit2",
        "keytool -storepass <redacted> -keypass <redacted>",
    ),
    ("vault -token hvs.abcdef login", "vault -token <redacted> login"),
    ("tool '--token=two words' --x", "tool '--token=<redacted>' --x"),
    ("tool --token 'two words' --x", "tool --token '<redacted>' --x"),
    ("tool --secret 'it'\"'\"'s' --x", "tool --secret <redacted> --x"),
    # assignments and key = value text
    ("env PGPASSWORD=hunter5 psql", "env PGPASSWORD=<redacted> psql"),
    (
        "java -Djavax.net.ssl.keyStorePassword=changeit -jar x.jar",
        "java -Djavax.net.ssl.keyStorePassword=<redacted> -jar x.jar",
    ),
    (
        "connect(user='app', password='pw1234', host='db')",
        "connect(user='app', password='<redacted>', host='db')",
    ),
    (
        "login failed: password = hunter2, user = app",
        "login failed: password = <redacted>, user = app",
    ),
    ("{'user': 'app', 'password': 'pw1234'}", "{'user': 'app', 'password': '<redacted>'}"),
    ('{"api_key": "k-123456", "page": 2}', '{"api_key": "<redacted>", "page": 2}'),
    # headers
    (
        "curl -H 'Authorization: Bearer abc.def' https://x",
        "curl -H 'Authorization: Bearer <redacted>' https://x",
    ),
    ('curl -H "X-Api-Key: k123456" https://x', 'curl -H "X-Api-Key: <redacted>" https://x'),
    ("curl -H 'Cookie: theme=dark; session=zzz' x", "curl -H 'Cookie: <redacted>' x"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic <redacted>"),
    ("curl -u alice:wonderland https://x", "curl -u alice:<redacted> https://x"),
    ("mysql -u root -phunter2 warehouse", "mysql -u root -p<redacted> warehouse"),
    # not secrets: the value is a path, a switch, a reference, a port, a parameter, an id
    ("tool --token-file /run/secrets/token --password-env DB_PW", None),
    ("psql --no-password --password -h db warehouse", None),
    ('tool --token "$GITHUB_TOKEN" --api-key ${API_KEY}', None),
    ("psql -p 5432 -U app warehouse", None),
    ("dpt run -p gain=1.5 -p partition_key=2024-01-01 -- calibrate", None),
    ("docker run -u 1000:1000 image", None),
    ("sort_key=name asset_key=raw/events auth_type=basic", None),
    ("token expired: refresh the session and retry", None),
    ("KeyError: 'token'", None),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_secret_flags_assignments_and_headers_in_text(text: str, expected: str | None) -> None:
    from dpt_core.environment import redact_text

    assert redact_text(text) == (text if expected is None else expected)


def test_variable_values_holding_secret_flags_are_masked() -> None:
    value = "-Xmx2g -Djavax.net.ssl.trustStorePassword=changeit1 -Dfile.encoding=UTF-8"
    assert redact("JAVA_OPTS", value, SETTINGS) == (
        "-Xmx2g -Djavax.net.ssl.trustStorePassword=<redacted> -Dfile.encoding=UTF-8",
        expected_digest("JAVA_OPTS", value),
    )


def test_secret_fields_by_name() -> None:
    from dpt_core.environment import is_secret_field

    for name in ("--api-key", "client_secret", "PGPASSWORD", "X-Auth-Token", "keyStorePassword",
                 "storepass", "auth", "db_pwd", "sessionId", "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        assert is_secret_field(name), name
    for name in ("--token-file", "no_password", "auth_type", "partition_key", "asset_key",
                 "author", "keyboard", "password_env", "monkey"):  # fmt: skip
        assert not is_secret_field(name), name


# --------------------------------------------------------------------------- known secrets (item 5)


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """``monkeypatch`` whose environment changes the known secrets see."""
    yield monkeypatch
    monkeypatch.undo()
    clear_environment_cache()


def test_values_of_secret_variables_are_masked_wherever_text_is_stored(
    environ: pytest.MonkeyPatch,
) -> None:
    from dpt_core.environment import redact_parameters, redact_text

    environ.setenv("WAREHOUSE_PASSWORD", "hunter5x")
    environ.setenv("SURVEY_UPLOAD_TOKEN", "c0ffee-Upload-Token-Value")
    environ.setenv("MIRROR", "https://mirror:MirrorPw99@mirror.example.org/simple")
    clear_environment_cache()
    assert redact_text("psql -W hunter5x warehouse") == "psql -W <redacted> warehouse"
    assert (
        redact_text("upload failed for token c0ffee-Upload-Token-Value/part-2")
        == "upload failed for token <redacted>/part-2"
    )
    assert redact_text("retry with MirrorPw99 later") == "retry with <redacted> later"
    assert redact_parameters({"note": "pw hunter5x"}, SETTINGS) == {"note": "pw <redacted>"}
    # whole words only below 16 characters: other words containing it stay
    assert redact_text("hunter5xyz and xhunter5x") == "hunter5xyz and xhunter5x"


def test_short_values_paths_and_descriptors_are_not_known_secrets(
    environ: pytest.MonkeyPatch,
) -> None:
    from dpt_core.environment import redact_text

    environ.setenv("DB_PASSWORD", "12345")  # shorter than MIN_KNOWN_SECRET_LENGTH
    environ.setenv("XDG_SESSION_TYPE", "wayland")
    environ.setenv("DESKTOP_SESSION", "ubuntu")
    environ.setenv("SSH_AUTH_SOCK", "/tmp/ssh-XXXX/agent.42")
    environ.setenv("GIT_AUTHOR_NAME", "Vera Rubin")
    clear_environment_cache()
    text = "docker run ubuntu on wayland as Vera Rubin: 12345 rows, /tmp/ssh-XXXX/agent.42"
    assert redact_text(text) == text


def test_known_secrets_follow_the_environment_after_clearing_the_cache(
    environ: pytest.MonkeyPatch,
) -> None:
    from dpt_core.environment import redact_text

    assert redact_text("login with Late-Secret-1234") == "login with Late-Secret-1234"
    environ.setenv("LATE_TOKEN", "Late-Secret-1234")
    clear_environment_cache()
    assert redact_text("login with Late-Secret-1234") == "login with <redacted>"


def test_register_secret() -> None:
    from dpt_core.environment import redact_text, register_secret

    assert redact_text("conn pw Reg1stered-Pw") == "conn pw Reg1stered-Pw"
    register_secret("Reg1stered-Pw")
    register_secret("abc")  # too short to mask in text: ignored
    assert redact_text("conn pw Reg1stered-Pw") == "conn pw <redacted>"
    assert redact_text("abc") == "abc"
    clear_environment_cache()  # registered secrets survive it
    assert redact_text("conn pw Reg1stered-Pw") == "conn pw <redacted>"
    with pytest.raises(TypeError):
        register_secret(b"bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- redaction key (item 8)


def test_environments_with_digests_record_the_key_id() -> None:
    from dpt_core.config import redaction_key_id
    from dpt_core.environment import REDACTION_KEY_FACET

    with_secret = capture({"API_TOKEN": "t0k", "HOME": "/root"})
    assert with_secret.facets == {"note": "test", REDACTION_KEY_FACET: redaction_key_id(KEY)}
    assert redaction_key_id(KEY) not in dumped(capture({"HOME": "/root"}))
    assert KEY.decode() not in dumped(with_secret)
    other = capture_environment(SETTINGS.replace(redaction_key=b"other"), {"note": "test"},
                                environ={"API_TOKEN": "t0k", "HOME": "/root"})  # fmt: skip
    assert other.facets[REDACTION_KEY_FACET] != with_secret.facets[REDACTION_KEY_FACET]
    assert len(redaction_key_id(KEY)) == 12


def data_home_that_cannot_hold_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))


@pytest.fixture
def fresh_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from dpt_core import config

    monkeypatch.setattr(config, "_process_key", None)
    config.reset_settings()
    yield
    config.reset_settings()


def test_unusable_data_dir_gives_a_random_process_key_with_one_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_keys: None,
) -> None:
    from dpt_core import config

    data_home_that_cannot_hold_a_key(tmp_path, monkeypatch)
    first = config._local_redaction_key()
    second = config._local_redaction_key()
    assert first == second and len(first) == 64
    assert first not in (b"dpt-unkeyed", b"dpt-unconfigured")
    warnings = [r for r in caplog.records if "random key for this process" in r.getMessage()]
    assert len(warnings) == 1
    assert "DPT_REDACTION_KEY" in warnings[0].getMessage()
    assert "not-a-directory" in warnings[0].getMessage()


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return done.stdout.strip()


KEY_ID = "from dpt_core.config import load_settings, redaction_key_id; print(redaction_key_id(load_settings().redaction_key))"
UNCONFIGURED_KEY_ID = "from dpt_core.config import unconfigured_settings, redaction_key_id; print(redaction_key_id(unconfigured_settings().redaction_key))"


def key_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DPT_") or k.startswith("DPT_TEST")
    }
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), DPT_CONFIG=str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    return {**env, **extra}


def test_processes_without_a_usable_key_file_never_share_a_constant(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env = key_env(tmp_path, XDG_DATA_HOME=str(blocker))
    ids = {run_python(KEY_ID, env) for _ in range(2)}
    ids |= {run_python(UNCONFIGURED_KEY_ID, {**env, "DPT_HASH": "bogus"}) for _ in range(2)}
    assert len(ids) == 4  # every process its own random key
    from dpt_core.config import redaction_key_id

    assert not ids & {redaction_key_id(b"dpt-unkeyed"), redaction_key_id(b"dpt-unconfigured")}


def test_broken_configuration_keeps_the_key_it_can_still_read(tmp_path: Path) -> None:
    from dpt_core.config import redaction_key_id

    broken = {"DPT_HASH": "bogus"}
    env = key_env(tmp_path, **broken)
    local = run_python(UNCONFIGURED_KEY_ID, env)
    assert local == run_python(KEY_ID, key_env(tmp_path))  # the per-user key file
    assert run_python(
        UNCONFIGURED_KEY_ID, {**env, "DPT_REDACTION_KEY": "team"}
    ) == redaction_key_id(b"team")
    (tmp_path / "team.key").write_text("team-from-file\n")
    assert run_python(
        UNCONFIGURED_KEY_ID, {**env, "DPT_REDACTION_KEY_FILE": str(tmp_path / "team.key")}
    ) == redaction_key_id(b"team-from-file")
    (tmp_path / "broken.toml").write_text('redaction_key = "from-config"\nunknown_key = 1\n')
    assert run_python(
        UNCONFIGURED_KEY_ID, {**env, "DPT_CONFIG": str(tmp_path / "broken.toml")}
    ) == redaction_key_id(b"from-config")


def test_processes_racing_to_create_the_key_file_agree(tmp_path: Path) -> None:
    env = key_env(tmp_path)
    processes = [
        subprocess.Popen([sys.executable, "-c", KEY_ID], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    ids = {p.communicate()[0].strip() for p in processes}
    assert len(ids) == 1 and "" not in ids
    key_file = tmp_path / "data" / "dpt" / "redaction.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["redaction.key"]


def test_team_key_from_a_file_from_the_environment_or_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_keys: None
) -> None:
    from dpt_core.config import load_settings
    from dpt_core.errors import ConfigError

    key_file = tmp_path / "team.key"
    key_file.write_text("  team-secret-key\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'redaction_key_file = "{key_file}"\n')
    base = {"DPT_CONFIG": str(config_file), "XDG_DATA_HOME": str(tmp_path / "data")}
    assert load_settings(base).redaction_key == b"team-secret-key"
    assert load_settings({**base, "DPT_REDACTION_KEY": "env-key"}).redaction_key == b"env-key"
    config_file.write_text('redaction_key = "config-key"\n')
    assert load_settings(base).redaction_key == b"config-key"
    assert (
        load_settings({**base, "DPT_REDACTION_KEY_FILE": str(key_file)}).redaction_key
        == b"team-secret-key"
    )
    with pytest.raises(ConfigError, match="both redaction_key and redaction_key_file"):
        load_settings({**base, "DPT_REDACTION_KEY": "a", "DPT_REDACTION_KEY_FILE": str(key_file)})
    with pytest.raises(ConfigError, match=r"redaction key file .*missing\.key.*cannot be read"):
        load_settings({**base, "DPT_REDACTION_KEY_FILE": str(tmp_path / "missing.key")})
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_settings({**base, "DPT_REDACTION_KEY_FILE": str(tmp_path / "empty.key")})
