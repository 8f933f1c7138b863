"""The CLI end to end on a real SQLite store: init, principals, keys, policy, decide."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from authgate.cli import main
from authgate.cli.common import parse_duration
from authgate.identity.keys import parse_key

FAST = {
    "AUTHGATE_PASSWORDS__ARGON2_MEMORY_KIB": "8",
    "AUTHGATE_PASSWORDS__ARGON2_TIME_COST": "1",
    "AUTHGATE_PASSWORDS__ARGON2_PARALLELISM": "1",
}


class Cli:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, stdin: str | None = None) -> Result:
        config = self.folder / ".authgate" / "authgate.toml"
        argv = ["--config", str(config), *args] if args[0] != "init" else list(args)
        result = self.runner.invoke(main, argv, input=stdin, env=FAST, catch_exceptions=False)
        assert code == result.exit_code, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    runner = Cli(tmp_path)
    runner("init", str(tmp_path / ".authgate"))
    return runner


def test_init_prints_the_system_key_once_and_never_overwrites(tmp_path: Path) -> None:
    runner = Cli(tmp_path)
    first = runner("init", str(tmp_path / "inst"))
    keys = [w for w in first.stdout.split() if w.startswith("agk_")]
    assert len(keys) == 1
    assert parse_key(keys[0]) is not None
    pepper = tmp_path / "inst" / "data" / "pepper"
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o600
    before = pepper.read_bytes(), (tmp_path / "inst" / "authgate.toml").read_bytes()

    second = runner("init", str(tmp_path / "inst"))
    assert "agk_" not in second.stdout
    assert "exists" in second.stdout
    assert "never overwritten" in second.stdout
    after = pepper.read_bytes(), (tmp_path / "inst" / "authgate.toml").read_bytes()
    assert before == after

    config = str(tmp_path / "inst" / "authgate.toml")
    decided = runner("--config", config, "decide", "--path", "/v1/models", "--key", keys[0])
    assert "allow" in decided.stdout


def test_principal_and_key_lifecycle(cli: Cli) -> None:
    alice = cli.json("principal", "add", "alice", "--tier", "2", "--scope", "chat")
    assert alice["id"].startswith("usr_")
    agent = cli.json("principal", "add", "planner", "--kind", "agt", "--tier", "3")
    names = {p["name"] for p in cli.json("principal", "list")}
    assert {"system", "alice", "planner"} == names

    issued = cli.json("key", "issue", "alice", "--name", "laptop", "--ttl", "1d")
    assert issued["principal_id"] == alice["id"]
    key = issued["key"]
    listed = cli.json("key", "list", "--principal", "alice")
    assert [issued["key_id"]] == [k["key_id"] for k in listed]
    assert key not in json.dumps(listed)

    decision = json.loads(cli("decide", "--path", "/v1/models", "--key", key, "--json").stdout)
    assert ("allow", alice["id"]) == (decision["outcome"], decision["principal"])

    rotated = cli.json("key", "rotate", issued["key_id"], "--overlap", "0")
    denied = cli("decide", "--path", "/v1/models", "--key", key, "--json", code=1)
    assert json.loads(denied.stdout)["reason"] == "expired_key"
    cli("decide", "--path", "/v1/models", "--key", rotated["key"])

    cli("key", "revoke", rotated["key_id"])
    denied = cli("decide", "--path", "/v1/models", "--key", rotated["key"], "--json", code=1)
    assert json.loads(denied.stdout)["reason"] == "revoked_key"

    cli("principal", "elevate", agent["id"], "--tier", "5", "--for", "30m")
    shown = cli.json("principal", "show", "planner")
    assert (shown["tier"], shown["effective_tier"]) == (3, 5)
    cli("principal", "disable", "planner")
    assert cli.json("principal", "show", "planner")["disabled"]
    cli("principal", "enable", "planner")


def test_tables_show_whole_ids(cli: Cli) -> None:
    added = cli.json("principal", "add", "bob")
    assert added["id"] in cli("principal", "list").stdout


def test_password_prompt(cli: Cli) -> None:
    result = cli("principal", "add", "carol", "--password", "--json", stdin="s3cret\ns3cret\n")
    assert json.loads(result.stdout[result.stdout.index("{") :])["has_password"]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("principal", "show", "nobody"), 2, "[not_found]"),
        (("principal", "add", "system"), 2, "[conflict]"),
        (("principal", "add", "x y"), 2, "[invalid_request]"),
        (("key", "revoke", "zzzzzzzzzzzz"), 2, "[not_found]"),
        (("key", "issue", "system", "--ttl", "soon"), 2, "invalid duration"),
        (("principal", "add", "x", "--tier", "9"), 2, "0<=x<=5"),
    ],
)
def test_errors_are_one_line_with_a_code(
    cli: Cli, args: tuple[str, ...], code: int, text: str
) -> None:
    result = cli(*args, code=code)
    assert text in result.output
    assert "Traceback" not in result.output


def test_bad_config_is_reported_by_key(tmp_path: Path) -> None:
    config = tmp_path / "authgate.toml"
    config.write_text("[passwords]\nmax_failures = -1\n")
    result = CliRunner().invoke(main, ["--config", str(config), "policy", "check"])
    assert result.exit_code == 2
    assert "passwords.max_failures" in result.output


def test_policy_check_prints_routes_and_flags_unreachable_rules(tmp_path: Path) -> None:
    config = tmp_path / "authgate.toml"
    config.write_text(
        '[[routes]]\nname = "all"\npath = "/*"\n[[routes]]\nname = "dead"\npath = "/v1/x"\n'
    )
    runner = CliRunner()
    ok = runner.invoke(main, ["--config", str(config), "policy", "check", "--json"])
    assert ok.exit_code == 0
    report = json.loads(ok.stdout)
    assert [r["name"] for r in report["routes"]] == ["all", "dead"]
    assert len(report["warnings"]) == 1
    strict = runner.invoke(main, ["--config", str(config), "policy", "check", "--strict"])
    assert strict.exit_code == 1
    assert "unreachable" in strict.output


def test_missing_pepper_says_to_run_init(tmp_path: Path) -> None:
    config = tmp_path / "authgate.toml"
    config.write_text("")
    result = CliRunner().invoke(main, ["--config", str(config), "principal", "list"])
    assert result.exit_code == 2
    assert "authgate init" in result.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["", "m", "-1s", "1w", "1 h h", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@given(st.text(max_size=12))
def test_parse_duration_accepts_or_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0


def test_cli_admin_changes_are_audited_in_the_cli_log(cli: Cli) -> None:
    cli("principal", "add", "audited", "--kind", "agt")
    issued = cli.json("key", "issue", "audited")
    cli("key", "revoke", issued["key_id"])
    log = cli.folder / ".authgate" / "data" / "audit" / "cli"
    tail = cli("audit", "tail", str(log), "-n", "10")
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["action"] for e in events] == ["principal.add", "key.issue", "key.revoke"]
    assert {e["type"] for e in events} == {"admin"}
    assert events[2]["details"] == {"target": issued["key_id"], "via": "cli"}
    assert issued["key"] not in tail.stdout
    assert cli("audit", "verify", str(log)).stdout.startswith("OK    3 records")


def test_a_user_gets_a_second_factor_and_loses_it(cli: Cli) -> None:
    cli("principal", "add", "ada", "--kind", "usr", "--tier", "3")
    enrolled = cli.json("principal", "totp", "ada")
    assert enrolled["has_totp"] is True
    assert len(enrolled["totp_secret"]) == 32
    assert enrolled["otpauth_uri"].startswith("otpauth://totp/")
    printed = cli("principal", "totp", "ada").stdout  # a new seed, shown once
    assert enrolled["totp_secret"] not in printed
    assert cli.json("principal", "show", "ada")["has_totp"] is True
    assert "totp_secret" not in cli.json("principal", "show", "ada")
    cli("principal", "totp", "ada", "--remove")
    assert cli.json("principal", "show", "ada")["has_totp"] is False
    cli("principal", "add", "bot", "--kind", "agt")
    assert "only usr_ principals" in cli("principal", "totp", "bot", code=2).output
