"""Path and URI normalisation (dpt_core.uri), on real files in tmp_path."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpt_core.errors import InvalidTarget
from dpt_core.uri import file_uri_host, is_local, local_path, normalize_uri, uri_to_path

# A path segment: any bytes but NUL and "/" (those are the only two a POSIX name cannot hold).
segment = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b and b"/" not in b)
segments = st.lists(segment, min_size=1, max_size=4)
tmp_settings = settings(
    max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real = Path(os.path.realpath(tmp_path))
    monkeypatch.chdir(real)
    return real


def test_relative_path_becomes_absolute_file_uri(in_tmp: Path) -> None:
    assert normalize_uri("raw.fits") == f"file://{in_tmp}/raw.fits"


def test_str_bytes_and_pathlike_agree(in_tmp: Path) -> None:
    expected = f"file://{in_tmp}/a/b.fits"
    assert normalize_uri("a/b.fits") == expected
    assert normalize_uri(b"a/b.fits") == expected
    assert normalize_uri(Path("a/b.fits")) == expected
    assert normalize_uri(in_tmp / "a" / "b.fits") == expected


def test_symlinks_are_resolved(in_tmp: Path) -> None:
    (in_tmp / "data").mkdir()
    (in_tmp / "data" / "x.fits").write_bytes(b"x")
    (in_tmp / "link").symlink_to(in_tmp / "data")
    assert normalize_uri("link/x.fits") == f"file://{in_tmp}/data/x.fits"


def test_missing_file_still_normalises(in_tmp: Path) -> None:
    assert normalize_uri("nowhere/../later.fits") == f"file://{in_tmp}/later.fits"
    assert not (in_tmp / "later.fits").exists()


def test_reserved_characters_are_percent_encoded(in_tmp: Path) -> None:
    uri = normalize_uri("a b%c?d#e.fits")
    assert uri == f"file://{in_tmp}/a%20b%25c%3Fd%23e.fits"
    assert uri_to_path(uri) == f"{in_tmp}/a b%c?d#e.fits"


def test_non_utf8_name_round_trips(in_tmp: Path) -> None:
    name = b"caf\xe9-\xff.fits"
    (in_tmp / os.fsdecode(name)).write_bytes(b"1")
    uri = normalize_uri(name)
    assert uri == f"file://{in_tmp}/caf%E9-%FF.fits"
    path = uri_to_path(uri)
    assert path is not None
    assert os.fsencode(path) == os.fsencode(in_tmp) + b"/" + name
    assert Path(path).read_bytes() == b"1"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("s3://bucket/key.fits", "s3://bucket/key.fits"),
        ("S3://bucket/Key.fits", "s3://bucket/Key.fits"),
        ("gs://b/k", "gs://b/k"),
        ("postgres://host/db/schema.table", "postgres://host/db/schema.table"),
        ("dagster://asset/key/path", "dagster://asset/key/path"),
        ("HTTPS://example.org/a?b=1#c", "https://example.org/a?b=1#c"),
        ("postgres://alice:s3cret@db:5432/x/s.t", "postgres://alice@db:5432/x/s.t"),
        ("postgres://alice:p@ss@db/x", "postgres://alice@db/x"),
        ("file:///a/../b", "file:///b"),
        ("file://localhost/tmp/%41", "file:///tmp/A"),
        ("FILE:////srv//x/./y", "file:///srv/x/y"),
        ("file:///", "file:///"),
    ],
)
def test_uris_are_kept_with_scheme_lowercased(target: str, expected: str) -> None:
    assert normalize_uri(target) == expected


@pytest.mark.parametrize("target", ["C:", "a:b", "x:/y", "s3:bucket"])
def test_colon_without_double_slash_is_a_relative_path(in_tmp: Path, target: str) -> None:
    assert normalize_uri(target) == f"file://{in_tmp}/{target}"
    assert is_local(target)


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("", "empty"),
        (b"", "empty"),
        ("a\0b", "NUL"),
        (b"a\0b", "NUL"),
        ("file:///a%00b", "NUL"),
        (3, "int"),
        (None, "NoneType"),
        (["a"], "list"),
        ("file://", "no path"),
        ("file:///a?b", "query or fragment"),
        ("s3://", "nothing after"),
    ],
)
def test_bad_targets_raise_invalid_target_naming_input_and_fix(
    target: object, fragment: str
) -> None:
    with pytest.raises(InvalidTarget) as info:
        normalize_uri(target)  # type: ignore[arg-type]
    message = str(info.value)
    assert fragment in message
    assert ":" in message  # "<what is wrong>: <what to do>"


def test_uri_to_path_is_none_for_remote_uris() -> None:
    assert uri_to_path("s3://bucket/key") is None
    assert uri_to_path("dagster://asset/a") is None
    assert uri_to_path("file:///x/y%20z") == "/x/y z"


def test_local_path_never_raises() -> None:
    """What an adapter can stat here: a path, a file of this host, else None."""
    host = socket.gethostname()
    assert local_path("/data/x.fits") == "/data/x.fits"
    assert local_path("relative/x.fits") == "relative/x.fits"
    assert local_path("file:///data/x%20y.fits") == "/data/x y.fits"
    assert local_path(f"file://{host}/data/x.fits") == "/data/x.fits"
    assert local_path("file://elsewhere.example/data/x.fits") is None
    assert local_path("s3://bucket/key") is None
    assert local_path("dagster://asset/a") is None
    assert local_path("file://") is None  # no path: not a file dpt can read
    assert local_path("file:///data/x?version=2") is None


def test_is_local() -> None:
    assert is_local("file:///x")
    assert is_local("relative/path")
    assert not is_local("s3://b/k")
    assert not is_local("https://h/p")


@tmp_settings
@given(parts=segments)
def test_normalisation_is_idempotent_for_any_bytes(in_tmp: Path, parts: list[bytes]) -> None:
    path = os.fsencode(in_tmp) + b"/" + b"/".join(parts)
    once = normalize_uri(path)
    assert once.startswith("file:///")
    assert normalize_uri(once) == once
    assert normalize_uri(os.fsdecode(path)) == once


@tmp_settings
@given(parts=segments)
def test_any_name_round_trips_through_uri_to_path(in_tmp: Path, parts: list[bytes]) -> None:
    path = os.fsencode(in_tmp) + b"/" + b"/".join(parts)
    uri = normalize_uri(path)
    back = uri_to_path(uri)
    assert back is not None
    assert os.fsencode(back) == os.path.realpath(path)
    assert is_local(uri)


@tmp_settings
@given(name=segment.filter(lambda b: b not in (b".", b"..")))
def test_real_file_with_any_name_is_found_again(in_tmp: Path, name: bytes) -> None:
    target = os.fsencode(in_tmp) + b"/" + name
    with open(target, "wb") as handle:
        handle.write(name)
    back = uri_to_path(normalize_uri(target))
    assert back is not None
    assert Path(back).read_bytes() == name
    os.unlink(target)


@settings(max_examples=200)
@given(
    scheme=st.from_regex(r"[a-z][a-z0-9+.\-]{0,8}", fullmatch=True).filter(lambda s: s != "file"),
    rest=st.text(min_size=1, max_size=30).filter(lambda t: "\0" not in t),
)
def test_remote_uri_normalisation_is_idempotent(scheme: str, rest: str) -> None:
    uri = normalize_uri(f"{scheme.upper()}://{rest}")
    assert uri.startswith(f"{scheme}://")
    assert normalize_uri(uri) == uri
    assert not is_local(uri)
    assert uri_to_path(uri) is None


# --------------------------------------------------------------------------- file://host/path


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # Airflow's example_asset_partition.py and Prefect's assets guide
        ("file://incoming/player-stats/team_a.csv", "file://incoming/player-stats/team_a.csv"),
        ("file://my-local-directory/raw-data.csv", "file://my-local-directory/raw-data.csv"),
        ("FILE://Server/share/../x//y.fits", "file://server/x/y.fits"),
        ("file://nas/a%20b/%41", "file://nas/a%20b/A"),
        ("file://nas", "file://nas/"),
        ("file://alice:pw@nas/x", "file://nas/x"),
    ],
)
def test_file_uri_of_another_host_is_kept_as_declared(target: str, expected: str) -> None:
    uri = normalize_uri(target)
    assert uri == expected
    assert normalize_uri(uri) == uri
    assert uri_to_path(uri) is None  # not readable here: never hashed as a local file
    assert not is_local(uri)
    assert file_uri_host(uri) == expected[len("file://") :].partition("/")[0]


@pytest.mark.parametrize("host", ["", "localhost", "LOCALHOST", socket.gethostname()])
def test_file_uri_of_this_machine_is_a_local_path(in_tmp: Path, host: str) -> None:
    (in_tmp / "x.csv").write_text("1")
    uri = normalize_uri(f"file://{host}{in_tmp}/x.csv")
    assert uri == f"file://{in_tmp}/x.csv"
    assert uri_to_path(uri) == f"{in_tmp}/x.csv"
    assert is_local(uri)
    assert file_uri_host(uri) is None


host_label = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200)
@given(
    host=st.lists(host_label, min_size=1, max_size=3).map(".".join),
    upper=st.booleans(),
    parts=st.lists(st.text(min_size=1, max_size=8).filter(lambda t: "\0" not in t), max_size=4),
)
def test_any_foreign_host_file_uri_is_kept_and_idempotent(
    host: str, upper: bool, parts: list[str]
) -> None:
    if host in ("localhost",) or host == socket.gethostname().lower().split(".")[0]:
        return
    from urllib.parse import quote

    path = "/" + "/".join(quote(p, safe="") for p in parts)
    uri = normalize_uri(f"file://{host.upper() if upper else host}{path}")
    assert uri.startswith(f"file://{host}/")
    assert normalize_uri(uri) == uri
    assert uri_to_path(uri) is None
    assert file_uri_host(uri) == host


@settings(max_examples=300)
@given(
    uri=st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda scheme, sep, rest: f"{scheme}{sep}{rest}",
            st.sampled_from(["file", "FILE", "s3", "gs", "postgres", "https", "dagster", "x-y.z"]),
            st.sampled_from(["://", ":///", ":", "://localhost/", "://h:1/"]),
            st.text(max_size=30),
        ),
    )
)
def test_any_string_either_normalises_idempotently_or_raises_invalid_target(uri: str) -> None:
    """Every scheme and shape: a normalised URI or a clear InvalidTarget, nothing else."""
    try:
        once = normalize_uri(uri)
    except InvalidTarget as exc:
        assert ":" in str(exc)
        return
    assert normalize_uri(once) == once
    if once.startswith("file:///"):
        back = uri_to_path(once)
        assert back is not None and os.path.isabs(back)


# -- realpath through the kernel (dpt_core.uri._realpath) ---------------------------------------


@pytest.fixture
def tree(in_tmp: Path) -> Path:
    """Files, directories and symlinks of every kind realpath meets, under ``in_tmp``."""
    deep = in_tmp.joinpath("survey", "dr3", "2026", "12", "06", "field", "ccd07")
    deep.mkdir(parents=True)
    (deep / "calexp.fits").write_bytes(b"x")
    (in_tmp / "f.bin").write_bytes(b"f")
    (in_tmp / b"caf\xe9".decode("utf-8", "surrogateescape")).write_bytes(b"latin-1 name")
    (in_tmp / "dirlink").symlink_to(in_tmp / "survey" / "dr3")
    (in_tmp / "filelink").symlink_to("f.bin")
    (in_tmp / "dangling").symlink_to(in_tmp / "nowhere")
    (in_tmp / "loop").symlink_to("loop")
    return in_tmp


REALPATH_CASES = [
    b"f.bin",
    b"./f.bin",
    b"survey/dr3/2026/12/06/field/ccd07/calexp.fits",
    b"survey/dr3/../dr3/2026/12/06/field/ccd07/calexp.fits",
    b"survey//dr3/2026/",
    b"survey/dr3/2026/12/06/field/ccd07/",
    b"caf\xe9",
    b"dirlink/2026/12/06/field/ccd07/calexp.fits",
    b"dirlink/../f.bin",
    b"filelink",
    b"dangling",
    b"loop",
    b"missing/file",
    b"f.bin/under-a-file",
    b".",
    b"/",
]


@pytest.mark.parametrize("relative", REALPATH_CASES, ids=lambda p: p.decode("latin-1"))
def test_realpath_through_the_kernel_is_os_path_realpath(tree: Path, relative: bytes) -> None:
    from dpt_core.uri import _realpath

    for path in (relative, os.path.join(os.fsencode(tree), relative)):
        assert _realpath(path) == os.path.realpath(path)


def test_a_path_without_symlinks_is_resolved_without_a_walk(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two system calls where realpath would lstat every component: realpath is only
    asked where a symlink (or a missing file) is on the way."""
    from dpt_core import uri

    walked: list[bytes] = []
    asked: list[bytes] = []
    real, readlink = os.path.realpath, os.readlink

    def counting(path: bytes) -> bytes:
        walked.append(path)
        return real(path)

    def named(path: bytes) -> bytes:
        if path.startswith(b"/proc/self/fd/"):  # (realpath reads the symlinks it meets)
            asked.append(path)
        return readlink(path)

    monkeypatch.setattr(uri.os.path, "realpath", counting)
    monkeypatch.setattr(uri.os, "readlink", named)
    root = os.fsencode(tree)
    deep = root + b"/survey/dr3/2026/12/06/field/ccd07/calexp.fits"
    assert uri._realpath(deep) == deep and walked == [] and len(asked) == 1
    assert uri._realpath(b"dirlink/2026") == root + b"/survey/dr3/2026"
    assert uri._realpath(b"missing") == root + b"/missing"
    assert walked == [b"dirlink/2026", b"missing"] and len(asked) == 2
    # under the symlink found, realpath straight away (the kernel is not asked again)
    assert uri._realpath(b"dirlink/2026/12") == root + b"/survey/dr3/2026/12"
    assert walked[-1] == b"dirlink/2026/12" and len(asked) == 2
    monkeypatch.setattr(uri, "_proc_fd", False)  # (no /proc: realpath alone)
    assert uri._realpath(deep) == deep and walked[-1] == deep and len(asked) == 2


def test_the_part_up_to_a_symlink_is_where_the_path_and_its_resolution_part() -> None:
    from dpt_core.uri import _up_to_the_difference

    assert _up_to_the_difference(b"/a/link/x/y", b"/a/real/dir/x/y") == b"/a/link"
    assert _up_to_the_difference(b"/a/filelink", b"/a/f.bin") == b"/a/filelink"
    # a link named as its target, at the root: nothing left to say (not recorded)
    assert _up_to_the_difference(b"/x.fits", b"/archive/x.fits") == b""
