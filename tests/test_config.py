"""Settings: defaults, the shipped config, overrides, and errors that name the key."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from authgate.bootstrap import default_config_text
from authgate.config import Settings, load_settings
from authgate.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authgate.toml"
    path.write_text(text)
    return path


def test_shipped_default_config_equals_the_built_in_defaults(tmp_path: Path) -> None:
    loaded = load_settings(write(tmp_path, default_config_text()), {})
    assert msgspec.structs.replace(Settings(), base_dir=str(tmp_path)) == loaded


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings() == load_settings(None, {})


def test_config_is_found_through_the_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[passwords]\nmax_failures = 7\n")
    assert load_settings(None, {"AUTHGATE_CONFIG": str(path)}).passwords.max_failures == 7


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})
    assert tmp_path / "data" / "pepper" == settings.path(settings.identity.pepper_file)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().allow_anonymous = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[passwords]\nmax_failure = 3\n", "unknown setting 'passwords.max_failure'"),
        ("colour = 1\n", "unknown setting 'colour'"),
        ('[passwords]\nmax_failures = "3"\n', "invalid setting 'passwords.max_failures'"),
        ("[passwords]\nmax_failures = 0\n", "invalid setting 'passwords.max_failures'"),
        (
            '[[routes]]\nname = "a"\npath = "/a"\nmin_tier = 9\n',
            "invalid setting 'routes[0].min_tier'",
        ),
        (
            '[[routes]]\nname = "a"\npath = "/a"\nmethods = ["get"]\n',
            "invalid setting 'routes[0].methods[0]'",
        ),
        (
            '[[routes]]\nname = "a"\npath = "/a"\n[[routes]]\nname = "a"\npath = "/b"\n',
            "invalid setting 'routes[1].name'",
        ),
        ('[[tiers]]\nlevel = 0\nname = "x"\nrequests_per_minute = 1\nburst = 1\n', "'tiers'"),
        ("[passwords\n", "invalid TOML"),
        ('base_dir = "/"\n', "base_dir"),
    ],
)
def test_bad_files_fail_with_a_message_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write(tmp_path, text), {})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml", {})


def test_environment_overrides_nested_and_indexed_keys(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, ""),
        {
            "AUTHGATE_PASSWORDS__MAX_FAILURES": "3",
            "AUTHGATE_TIERS__5__BURST": "2000",
            "AUTHGATE_ALLOW_ANONYMOUS": "true",
            "AUTHGATE_ROUTES__0__SCOPES": '["read", "write"]',
            "AUTHGATE_IDENTITY__SQLITE_PATH": "/var/lib/authgate/id.db",
            "UNRELATED": "x",
        },
    )
    assert settings.passwords.max_failures == 3
    assert settings.tiers[5].burst == 2000
    assert settings.allow_anonymous
    assert settings.routes[0].scopes == ("read", "write")
    assert settings.identity.sqlite_path == "/var/lib/authgate/id.db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTHGATE_PASSWORDS__MAX_FAILURES": "many"}, "set by AUTHGATE_PASSWORDS__MAX_FAILURES"),
        ({"AUTHGATE_TIERS__9__BURST": "1"}, "unknown setting 'tiers[9]'"),
        ({"AUTHGATE_NOPE": "1"}, "unknown setting 'nope'"),
        ({"AUTHGATE_PASSWORDS__": "1"}, "empty key segment"),
        ({"AUTHGATE_ROUTES__0__METHODS": '["get"]'}, "set by AUTHGATE_ROUTES__0__METHODS"),
    ],
)
def test_bad_overrides_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, {"AUTHGATE_CONFIG": os.devnull, **env})


@given(st.text(max_size=20))
def test_any_override_value_loads_or_fails_cleanly(value: str) -> None:
    env = {"AUTHGATE_CONFIG": os.devnull, "AUTHGATE_PASSWORDS__MAX_FAILURES": value}
    try:
        settings = load_settings(None, env)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert 1 <= settings.passwords.max_failures <= 1000
        return
    assert "passwords.max_failures" in message


sections = st.sampled_from(["", "[passwords]", "[identity]", "[[routes]]", "[[tiers]]", "[x]"])
keys = st.sampled_from(
    ["max_failures", "name", "path", "level", "burst", "methods", "min_tier", "store", "zz"]
)
values = st.sampled_from(
    ['"a"', '"/v1/*"', "0", "-1", "5", "99999999999", "true", "1.5", '["GET"]', "[1]", "{}", "x"]
)
lines = st.lists(st.tuples(sections, keys, values), max_size=12)


@given(lines)
def test_arbitrary_documents_load_or_raise_config_error(
    document: list[tuple[str, str, str]],
) -> None:
    text = "\n".join(f"{section}\n{key} = {value}" for section, key, value in document)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "authgate.toml"
        path.write_text(text)
        with contextlib.suppress(ConfigError):  # the only exception a bad document may raise
            load_settings(path, {})


def test_upstreams_load_from_the_file_and_routes_must_name_one(tmp_path: Path) -> None:
    text = (
        '[upstreams.models]\nurls = ["http://127.0.0.1:9000/base", "https://b.example"]\n'
        "first_byte_timeout_s = 5\n"
        '[[routes]]\nname = "all"\npath = "/*"\nupstream = "models"\ncache = "tier"\n'
    )
    settings = load_settings(write(tmp_path, text), {})
    assert settings.upstreams["models"].urls == ("http://127.0.0.1:9000/base", "https://b.example")
    assert settings.upstreams["models"].first_byte_timeout_s == 5
    assert settings.routes[0].cache == "tier"
    bad = text.replace('upstream = "models"', 'upstream = "nowhere"')
    with pytest.raises(ConfigError, match=r"routes\[0\]\.upstream.*nowhere"):
        load_settings(write(tmp_path, bad), {})


@pytest.mark.parametrize(
    "url", ["ftp://x", "http://", "http://user@host", "http://h/p?q=1", "127.0.0.1:80"]
)
def test_upstream_urls_are_checked(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="upstreams"):
        load_settings(write(tmp_path, f'[upstreams.a]\nurls = ["{url}"]\n'), {})


def test_an_upstream_can_be_defined_by_variables_alone(tmp_path: Path) -> None:
    env = {
        "AUTHGATE_UPSTREAMS__DEFAULT__URLS": '["http://127.0.0.1:9000"]',
        "AUTHGATE_UPSTREAMS__DEFAULT__MAX_FAILS": "7",
    }
    settings = load_settings(write(tmp_path, ""), env)
    assert settings.upstreams["default"].urls == ("http://127.0.0.1:9000",)
    assert settings.upstreams["default"].max_fails == 7
    with pytest.raises(ConfigError, match="urls"):
        load_settings(write(tmp_path, ""), {"AUTHGATE_UPSTREAMS__DEFAULT__MAX_FAILS": "7"})
    with pytest.raises(ConfigError, match="AUTHGATE_UPSTREAMS__A__B__C"):
        load_settings(write(tmp_path, ""), {"AUTHGATE_UPSTREAMS__A__B__C": "1"})
