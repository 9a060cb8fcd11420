"""No secret reaches the database, the spool, the logs, the exports or ``--json`` output.

Hypothesis generates environments full of secrets -- by name (``*PASSWORD*``,
``*TOKEN*``, ...) and by value shape (credentials inside URLs, secret query
parameters, well-known token formats, random high-entropy tokens), under stable
and volatile names -- runs real invocations with them (one recorded, one
spooled because the database is down), then runs every read and export command,
and searches every byte that came out for every secret.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import shutil
import string
import subprocess
import uuid

import pytest
from conftest import cli, dpt, one_line_error
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

import dpt_core
from dpt_core.environment import clear_environment_cache
from dpt_core.testing import POSTGRES_URL

#: Each example runs a dozen commands: shrinking a failure would take minutes, and the
#: generated example is printed whole anyway.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
DEAD_URL = "postgresql://postgres@127.0.0.1:9/unreachable"
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "-_"


def random_text(alphabet: str, size: int) -> st.SearchStrategy[str]:
    """Really random text (hypothesis draws the seed), as secrets are."""
    return st.randoms(use_true_random=True).map(
        lambda r: "".join(r.choice(alphabet) for _ in range(size))
    )


def distinctive(min_size: int = 12, max_size: int = 40) -> st.SearchStrategy[str]:
    """Text that cannot turn up anywhere by chance: random, with every character class."""
    return st.integers(min_size - 3, max_size - 3).flatmap(
        lambda n: random_text(ALNUM, n).map(lambda s: s + "Qz7")
    )


name_part = st.from_regex(r"\A[A-Z][A-Z0-9]{0,6}\Z")
SECRET_WORDS = ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY",
                "CREDENTIALS", "AUTH", "SESSION_ID", "DSN", "ACCESS_KEY"]  # fmt: skip
NEUTRAL = ["SETTING", "CONFIG", "VALUE", "OPTION", "ENDPOINT", "URL", "TARGET"]
WORDS = ["warehouse", "analytics", "survey", "archive", "catalog", "pipeline", "ingest"]


@st.composite
def by_name(draw):
    name = f"{draw(name_part)}_{draw(st.sampled_from(SECRET_WORDS))}"
    value = draw(distinctive())
    return name, value, [value], None


@st.composite
def url_with_password(draw):
    name = draw(st.sampled_from(["DATABASE_URL", "WAREHOUSE_URL", "BROKER", "UPSTREAM", "CACHE"]))
    scheme = draw(
        st.sampled_from(["postgresql", "postgresql+psycopg", "mysql", "redis", "amqp", "https"])
    )
    user, host, db = (draw(st.sampled_from(WORDS)) for _ in range(3))
    password = draw(distinctive(10, 30))
    port = draw(st.integers(1, 65535))
    value = f"{scheme}://{user}:{password}@{host}-db.example.org:{port}/{db}"
    return f"{draw(name_part)}_{name}", value, [password], (f"{host}-db.example.org", db)


@st.composite
def query_secret(draw):
    param = draw(
        st.sampled_from(["token", "access_token", "api_key", "X-Amz-Signature", "password"])
    )
    secret = draw(distinctive())
    value = (
        f"https://{draw(st.sampled_from(WORDS))}.example.org/v1/data?page=2&{param}={secret}&x=1"
    )
    return f"{draw(name_part)}_{draw(st.sampled_from(NEUTRAL))}", value, [secret], None


@st.composite
def known_token(draw):
    kind = draw(
        st.sampled_from(["aws", "github", "gitlab", "slack", "jwt", "stripe", "google", "pem"])
    )
    upper_digits = string.ascii_uppercase + string.digits
    if kind == "aws":
        token = "AKIA" + draw(random_text(upper_digits, 16))
    elif kind == "github":
        token = "ghp_" + draw(random_text(ALNUM, 36))
    elif kind == "gitlab":
        token = "glpat-" + draw(random_text(B64, 20))
    elif kind == "slack":
        token = "xoxb-" + draw(random_text(string.digits, 12)) + "-" + draw(random_text(ALNUM, 24))
    elif kind == "jwt":
        token = (
            "eyJ"
            + draw(random_text(B64, 30))
            + ".eyJ"
            + draw(random_text(B64, 40))
            + "."
            + draw(random_text(B64, 43))
        )
    elif kind == "stripe":
        token = "sk_live_" + draw(random_text(ALNUM, 24))
    elif kind == "google":
        token = "AIza" + draw(random_text(B64, 35))
    else:
        body = draw(random_text(ALNUM + "+/", 64))
        token = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
        return f"{draw(name_part)}_{draw(st.sampled_from(NEUTRAL))}", token, [body], None
    return f"{draw(name_part)}_{draw(st.sampled_from(NEUTRAL))}", token, [token], None


@st.composite
def entropy_token(draw):
    token = draw(random_text(B64, draw(st.integers(32, 64))))
    value = draw(st.sampled_from(["{}", "--auth={}", "Bearer {}", "{}:tail"])).format(token)
    return f"{draw(name_part)}_{draw(st.sampled_from(NEUTRAL))}", value, [token], None


@st.composite
def volatile_secret(draw):
    """Secrets under names that change per run (they ride on the invocation, not the environment)."""
    secret = draw(distinctive())
    if draw(st.booleans()):
        host = draw(st.sampled_from(WORDS))
        return (
            "PREFECT__API_URL",
            f"https://prefect:{secret}@{host}.example.org/api",
            [secret],
            None,
        )
    name = draw(st.sampled_from(["AIRFLOW_CTX_SECRET", "DPT_RUN_TOKEN", "PREFECT__API_KEY"]))
    return name, secret, [secret], None


secret = st.one_of(
    by_name(),
    url_with_password(),
    query_secret(),
    known_token(),
    entropy_token(),
    volatile_secret(),
)
secret_sets = st.lists(secret, min_size=3, max_size=10, unique_by=lambda s: s[0])


def database_bytes(env) -> bytes:
    if env.backend == "sqlite":
        path = make_url(env.url).database
        return b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
    dbname = make_url(env.url).database
    base = make_url(POSTGRES_URL)
    return subprocess.run(
        ["pg_dump", "--data-only", "-h", base.host or "127.0.0.1", "-p", str(base.port or 5432),
         "-U", base.username or "postgres", dbname],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip


def read_tree(path) -> bytes:
    if not path.exists():
        return b""
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def record_and_collect(env, tmp_path, variables: dict[str, str]) -> dict[str, str]:
    """Run with ``variables`` set; return every sink's content as text."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    saved = {k: os.environ.get(k) for k in [*variables, "DPT_DATABASE_URL"]}
    spool_dir = env.path / "spool"
    shutil.rmtree(spool_dir, ignore_errors=True)
    (tmp_path / "input.dat").write_text("input")
    try:
        os.environ.update(variables)
        dpt_core.plugin_api.reset()
        clear_environment_cache()
        with dpt_core.invocation("with-secrets", parameters={"plain": 1}) as inv:
            inv.read(tmp_path / "input.dat")
            inv.write("s3://bucket/out")
        first = inv.uuid
        os.environ["DPT_DATABASE_URL"] = DEAD_URL  # the next one spools
        dpt_core.plugin_api.reset()
        with dpt_core.invocation("spooled-with-secrets"):
            pass
        # the writer has tried the dead database and left the events in the spool (it
        # renames the file it claims: a listing taken meanwhile names a file then gone)
        dpt_core.flush()
        spooled = read_tree(spool_dir)
        assert spooled, "nothing was spooled: the spool sink was not exercised"
        os.environ["DPT_DATABASE_URL"] = env.url
        dpt_core.plugin_api.reset()
        with dpt_core.invocation("second"):
            pass  # replays the spool into the database
        sinks = {"spool": spooled.decode("utf-8", "replace")}
        commands = [
            ("runs", "--json"), ("show", first, "--json"), ("show", "s3://bucket/out", "--json"),
            ("env", "show", first, "--json"), ("env", "show", first),
            ("env", "diff", first, "1", "--json"), ("export", "--format", "openlineage"),
            ("export", "--format", "prov"), ("lineage", "s3://bucket/out", "--json"),
            ("doctor", "--json"), ("-v", "stats", "--json"),
        ]  # fmt: skip
        for args in commands:
            result = cli(*args, check=0)
            sinks["dpt " + " ".join(args[:2])] = result.stdout + result.stderr
        sinks["database"] = database_bytes(env).decode("utf-8", "replace")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        root.removeHandler(handler)
        root.setLevel(old_level)
        dpt_core.plugin_api.reset()
        clear_environment_cache()
    sinks["logs"] = log.getvalue()
    sinks["run uuid"] = first
    return sinks


def check_no_secret(sinks: dict[str, str], secrets) -> None:
    for name, _value, needles, _ in secrets:
        for needle in needles:
            for sink, text in sinks.items():
                assert needle not in text, f"{name}'s secret reached {sink}"


def check_url_style_keeps_host_and_database(run_uuid: str, secrets) -> None:
    shown = json.loads(cli("env", "show", run_uuid, "--json", check=0).stdout)
    variables = shown["environment"]["variables"]
    for name, _value, _needles, keep in secrets:
        if keep is None:
            continue
        host, database = keep
        stored = variables[name]
        assert stored is not None, f"{name} was withheld whole: host and database lost"
        assert host in stored and database in stored and "***" in stored, stored


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
@given(secrets=secret_sets)
def test_no_generated_secret_reaches_any_sink_on_sqlite(dpt_env, tmp_path, secrets):
    sinks = record_and_collect(dpt_env, tmp_path, {n: v for n, v, _, _ in secrets})
    check_no_secret(sinks, secrets)
    check_url_style_keeps_host_and_database(sinks["run uuid"], secrets)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
@given(secrets=secret_sets)
def test_no_generated_secret_reaches_any_sink_on_postgresql(pg_env, tmp_path, secrets):
    sinks = record_and_collect(pg_env, tmp_path, {n: v for n, v, _, _ in secrets})
    check_no_secret(sinks, secrets)
    check_url_style_keeps_host_and_database(sinks["run uuid"], secrets)


def test_secrets_in_parameters_commands_and_errors_are_redacted_too(dpt_env, tmp_path):
    result = dpt(
        "run", "-p", "db_password=Hunter2Hunter2xyz", "-p", "dsn=postgresql://u:ParamPw9876@h/db",
        "--", "sh", "-c", "exit 3", "psql", "postgresql://u:CmdPw5432x@h/db",
    )  # fmt: skip
    assert result.returncode == 3
    with pytest.raises(RuntimeError), dpt_core.invocation("fails"):
        raise RuntimeError("cannot reach postgresql://u:ErrorPw1234@h/db")
    dumped = database_bytes(dpt_env).decode("utf-8", "replace")
    shown = cli("runs", "--json", check=0).stdout
    for needle in ("Hunter2Hunter2xyz", "ParamPw9876", "CmdPw5432x", "ErrorPw1234"):
        assert needle not in dumped and needle not in shown, f"{needle} stored in clear"


# --------------------------------------------------------------------------- the database URL


def test_database_url_password_never_appears_in_output_logs_or_spool(dpt_env, tmp_path, caplog):
    password = "DbUrlPw-7f3c9a"
    server = make_url(POSTGRES_URL)
    dead = f"postgresql://pipeline:{password}@127.0.0.1:9/warehouse"
    missing = f"postgresql://postgres:{password}@{server.host}:{server.port or 5432}/no_such_dpt_db"
    caplog.set_level(logging.DEBUG)
    outputs = []
    for url in (dead, missing):
        settings_env = {"DPT_DATABASE_URL": url, "DPT_CONNECT_TIMEOUT": "1"}
        for args in (("runs",), ("stats", "--json"), ("doctor", "--json"), ("track", "s3://b/k"),
                     ("run", "--", "true"), ("spool", "replay"), ("spool", "status"),
                     ("db", "current"), ("lineage", "s3://b/k"), ("export", "--format", "prov")):  # fmt: skip
            result = cli(*args, env=settings_env)
            outputs.append(result.stdout + result.stderr)
        for args in (("runs",), ("-v", "track", "s3://b/k")):  # real processes, real stderr
            result = dpt(*args, env=settings_env)
            outputs.append(result.stdout + result.stderr)
        line = one_line_error(result)
        assert ":***@" in line and "spool" in line  # the URL is named, masked
    outputs.append(caplog.text)
    assert "events kept in the spool" in caplog.text
    for output in outputs:
        assert password not in output
    assert read_tree(tmp_path / "spool"), "nothing spooled: the spool sink was not exercised"
    assert password not in read_tree(tmp_path / "spool").decode("utf-8", "replace")


def test_database_url_password_hidden_when_the_url_works(pg_env, monkeypatch, caplog):
    password = "WorkingPw-4d2e8b"  # trust authentication accepts any password
    url = make_url(pg_env.url).set(password=password).render_as_string(hide_password=False)
    monkeypatch.setenv("DPT_DATABASE_URL", url)
    caplog.set_level(logging.DEBUG)
    for args in (("-v", "db", "upgrade"), ("db", "current", "--json"), ("doctor", "--json"),
                 ("-v", "track", "s3://bucket/x"), ("stats", "--json")):  # fmt: skip
        result = cli(*args, check=0)
        assert password not in result.stdout + result.stderr
    assert "***" in cli("doctor", "--json", check=0).stdout
    assert password not in caplog.text
    assert password not in database_bytes(pg_env).decode("utf-8", "replace")


# --------------------------------------------------------------------------- issue 15, item 5


def stored_run(env, run_uuid: str) -> dict[str, object]:
    row = env.rows(
        "SELECT command, error, parameters, variables FROM invocations WHERE uuid = :u", u=run_uuid
    )[0]
    decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
    return {
        "command": row.command,
        "error": row.error,
        "parameters": decode(row.parameters),
        "variables": decode(row.variables),
    }


def newest_run_uuid(env) -> str:
    return env.scalar("SELECT uuid FROM invocations ORDER BY id DESC LIMIT 1")


def test_secret_flags_assignments_and_headers_of_a_command_never_stored(dpt_env):
    """The command line of the issue, through a real ``dpt run``."""
    result = dpt(
        "run", "--", "true", "--token", "hunter3", "--api-key=hunter4", "PGPASSWORD=hunter5",
        "Authorization: Bearer hunter6abcdef", "-H", "X-Api-Key: hunter7key",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stored = stored_run(dpt_env, newest_run_uuid(dpt_env))
    assert stored["command"] == (
        "true --token <redacted> --api-key=<redacted> PGPASSWORD=<redacted> "
        "'Authorization: Bearer <redacted>' -H 'X-Api-Key: <redacted>'"
    )
    dumped = database_bytes(dpt_env).decode("utf-8", "replace")
    shown = cli("runs", "--json", check=0).stdout + cli("export", "--format", "prov").stdout
    for needle in ("hunter3", "hunter4", "hunter5", "hunter6abcdef", "hunter7key"):
        assert needle not in dumped and needle not in shown, f"{needle} stored in clear"


def test_values_of_secret_variables_never_stored_in_commands_errors_or_parameters(
    dpt_env, monkeypatch
):
    """Known-secret masking: the value of a secret variable wherever free text is stored."""
    secret = "QzEnvSecret-4417"
    result = dpt(
        "run", "-p", f"note=uses {secret}", "--",
        "sh", "-c", f"echo {secret} >/dev/null; exit 3",
        env={"SURVEY_ARCHIVE_TOKEN": secret},
    )  # fmt: skip
    assert result.returncode == 3
    stored = stored_run(dpt_env, newest_run_uuid(dpt_env))
    assert stored["command"] == "sh -c 'echo <redacted> >/dev/null; exit 3'"
    assert stored["parameters"]["note"] == "uses <redacted>"
    monkeypatch.setenv("SURVEY_ARCHIVE_TOKEN", secret)
    dpt_core.plugin_api.reset()
    clear_environment_cache()
    try:
        with pytest.raises(PermissionError), dpt_core.invocation("upload") as inv:
            raise PermissionError(f"archive refused token {secret} (expired)")
    finally:
        clear_environment_cache()
    assert stored_run(dpt_env, inv.uuid)["error"] == (
        "PermissionError: archive refused token <redacted> (expired)"
    )
    assert secret not in database_bytes(dpt_env).decode("utf-8", "replace")


class AirflowInactiveAssetInInletOrOutletException(Exception):
    """The exception of the issue (Airflow's own, recreated: no Airflow in this suite)."""


def test_errors_keep_exception_names_and_runs_keep_their_run_ids(dpt_env, monkeypatch):
    flow_run, flow, deployment = (str(uuid.uuid4()) for _ in range(3))
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", flow_run)
    monkeypatch.setenv("PREFECT__FLOW_ID", flow)
    monkeypatch.setenv("PREFECT__DEPLOYMENT_ID", deployment)
    dpt_core.plugin_api.reset()
    clear_environment_cache()
    message = "Task has the following inactive assets: [Asset(name='raw', uri='s3://b/raw')]"
    with (
        pytest.raises(AirflowInactiveAssetInInletOrOutletException),
        dpt_core.invocation("asset-task") as inv,
    ):
        raise AirflowInactiveAssetInInletOrOutletException(message)
    stored = stored_run(dpt_env, inv.uuid)
    assert stored["error"] == f"AirflowInactiveAssetInInletOrOutletException: {message}"
    variables = stored["variables"]
    assert variables["PREFECT__FLOW_RUN_ID"] == flow_run
    assert variables["PREFECT__FLOW_ID"] == flow
    assert variables["PREFECT__DEPLOYMENT_ID"] == deployment
    shown = json.loads(cli("env", "show", inv.uuid, "--json", check=0).stdout)
    assert shown["run_variables"]["PREFECT__FLOW_RUN_ID"] == flow_run


# --------------------------------------------------------------------------- issue 15, item 8


def record_as_host(monkeypatch, tmp_path, host: str, variables, *, key_file=None) -> str:
    """One invocation as a process on ``host`` would record it: that host's own data
    directory (so its own per-host redaction key), unless a team key file is given."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "hosts" / host))
    monkeypatch.setenv("DPT_IGNORE_NAMES", "XDG_DATA_HOME")  # the host's, not a difference
    monkeypatch.delenv("DPT_REDACTION_KEY", raising=False)
    if key_file is None:
        monkeypatch.delenv("DPT_REDACTION_KEY_FILE", raising=False)
    else:
        monkeypatch.setenv("DPT_REDACTION_KEY_FILE", str(key_file))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    dpt_core.plugin_api.reset()
    clear_environment_cache()
    try:
        with dpt_core.invocation("nightly") as inv:
            pass
    finally:
        clear_environment_cache()
    return inv.uuid


def stored_digest(env, run_uuid: str, name: str) -> str:
    return env.scalar(
        "SELECT v.redacted_digest FROM invocations i"
        " JOIN environment_variables ev ON ev.environment_id = i.environment_id"
        " JOIN env_variables v ON v.id = ev.variable_id"
        " WHERE i.uuid = :u AND v.key = :k",
        u=run_uuid,
        k=name,
    )


def test_env_diff_across_hosts_compares_secrets_only_under_one_key(
    dpt_backend, dpt_env, monkeypatch, tmp_path
):
    secret = {"WAREHOUSE_PASSWORD": "same-secret-on-every-host"}
    a = record_as_host(monkeypatch, tmp_path, "host-a", secret)
    b = record_as_host(monkeypatch, tmp_path, "host-b", secret)
    assert stored_digest(dpt_env, a, "WAREHOUSE_PASSWORD") != stored_digest(
        dpt_env, b, "WAREHOUSE_PASSWORD"
    )  # per-host keys: the same secret, two digests
    diff = json.loads(cli("env", "diff", a, b, "--json", check=0).stdout)
    assert diff["variables"]["changed"] == {
        "WAREHOUSE_PASSWORD": {
            "redacted": True,
            "comparable": False,
            "reason": "different redaction keys",
        }
    }
    keys = (diff["a"]["redaction_key"], diff["b"]["redaction_key"])
    assert None not in keys and keys[0] != keys[1]
    assert diff["facets"]["changed"] == {"dpt/redaction_key": {"a": keys[0], "b": keys[1]}}
    text = cli("env", "diff", a, b, check=0).stdout
    assert "not comparable: different redaction keys" in text
    assert "DPT_REDACTION_KEY" in text and "redacted, changed" not in text

    team_key = tmp_path / "team.key"
    team_key.write_text(secrets.token_hex(32) + "\n")
    team_key.chmod(0o600)
    c = record_as_host(monkeypatch, tmp_path, "host-a", secret, key_file=team_key)
    d = record_as_host(monkeypatch, tmp_path, "host-b", secret, key_file=team_key)
    assert stored_digest(dpt_env, c, "WAREHOUSE_PASSWORD") == stored_digest(
        dpt_env, d, "WAREHOUSE_PASSWORD"
    )
    same = json.loads(cli("env", "diff", c, d, "--json", check=0).stdout)
    assert same["same"] is True and same["variables"]["changed"] == {}
    rotated = {"WAREHOUSE_PASSWORD": "rotated-secret"}
    e = record_as_host(monkeypatch, tmp_path, "host-b", rotated, key_file=team_key)
    changed = json.loads(cli("env", "diff", c, e, "--json", check=0).stdout)
    assert changed["variables"]["changed"] == {"WAREHOUSE_PASSWORD": {"redacted": True}}
    assert "redacted, changed" in cli("env", "diff", c, e, check=0).stdout
    if dpt_env.backend != "mysql":  # database_bytes reads SQLite files and pg_dump
        assert team_key.read_text().strip().encode() not in database_bytes(dpt_env)


def test_team_key_from_the_config_file_across_processes(dpt_env, tmp_path):
    """Two hosts (two processes, two data directories) sharing ``redaction_key`` in their
    config file record one digest for one secret."""
    config = tmp_path / "team.toml"
    config.write_text(f'redaction_key = "{secrets.token_hex(32)}"\n')
    uuids = []
    for host in ("host-a", "host-b"):
        env = {
            "DPT_CONFIG": str(config),
            "DPT_REDACTION_KEY": "",
            "XDG_DATA_HOME": str(tmp_path / host),
            "DPT_IGNORE_NAMES": "XDG_DATA_HOME",
            "WAREHOUSE_PASSWORD": "same-secret-on-every-host",
        }
        result = dpt("run", "--", "true", env=env)
        assert result.returncode == 0, result.stderr
        uuids.append(newest_run_uuid(dpt_env))
    digests = {stored_digest(dpt_env, u, "WAREHOUSE_PASSWORD") for u in uuids}
    assert len(digests) == 1 and None not in digests
    diff = json.loads(cli("env", "diff", *uuids, "--json", check=0).stdout)
    assert diff["same"] is True
